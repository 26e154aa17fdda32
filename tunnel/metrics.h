/*
 * Counters the daemons keep (atomics, updated from every worker) and their Prometheus text
 * exposition, served with /healthz on a separate plain-HTTP address by libmicrohttpd.
 */
#ifndef MTLS_TUNNEL_METRICS_H
#define MTLS_TUNNEL_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "mtls.h"

#define METRICS_BUCKETS	    12
#define METRICS_WORKERS_MAX 256 /* --workers is at most this */

struct metrics {
	const char *role; /* "server" or "connector" */
	atomic_llong connections_open;
	atomic_ullong connections_total;
	atomic_ullong connections_refused_limit;
	atomic_ullong connections_refused_proxy_header; /* PROXY v2 header not buildable */
	atomic_ullong handshakes_ok;
	atomic_ullong handshakes_resumed;
	atomic_ullong handshakes_failed[MTLS_REASON_COUNT];
	atomic_ullong handshake_buckets[METRICS_BUCKETS]; /* cumulative on output only */
	atomic_ullong handshake_count;
	atomic_ullong handshake_micros;
	atomic_ullong bytes_to_target; /* from the TLS side to the plaintext side */
	atomic_ullong bytes_from_target;
	atomic_ullong target_connect_failures;
	atomic_ullong reloads_ok;
	atomic_ullong reloads_failed;
	atomic_llong cert_not_after;
	atomic_llong ca_not_after;
	atomic_llong crl_next_update;
	atomic_bool draining;
	/* liveness: each worker stores its loop's time (ev_now, seconds) here about once a
	 * second (worker.c); a worker whose beat is old is stuck */
	int nworkers;
	atomic_llong worker_beats[METRICS_WORKERS_MAX];
	const struct mtls *endpoint; /* for the verification cache counters; may be NULL */
};

void metrics_init(struct metrics *m, const char *role);
void metrics_handshake(struct metrics *m, enum mtls_reason reason, bool resumed, uint64_t micros);
/* The exposition text (caller frees), or NULL if it could not be built whole (out of
 * memory): never a partial text. */
char *metrics_render(struct metrics *m, size_t *len);

struct metrics_http;
/* Serve /metrics and /healthz on an already listening socket (taken over). NULL on error. */
struct metrics_http *metrics_http_start(int listen_fd, struct metrics *m);
void metrics_http_stop(struct metrics_http *h);

#endif
