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
/* A worker whose beat (once a second) is older than this is stuck: 5 times the beat period,
 * so that a loop made late by a burst of handshakes (more so under a sanitizer) is not called
 * stuck, while a blocked worker is reported well inside a liveness probe's usual period x
 * failure threshold (10 s x 3). */
#define METRICS_STUCK_SECONDS 5

/* Results of an OCSP fetch, the index of struct metrics's ocsp_requests. */
enum metrics_ocsp_result {
	METRICS_OCSP_GOOD,
	METRICS_OCSP_REVOKED,
	METRICS_OCSP_UNKNOWN,
	METRICS_OCSP_INVALID, /* an answer that does not verify */
	METRICS_OCSP_ERROR,   /* no answer: connect, timeout, HTTP status */
	METRICS_OCSP_RESULTS
};

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
	/* live connections closed because a re-check refused them, by reason; and those
	 * closed at --max-connection-lifetime */
	atomic_ullong closed_by_recheck[MTLS_REASON_COUNT];
	atomic_ullong closed_max_lifetime;
	atomic_llong cert_not_after;
	atomic_llong ca_not_after;
	atomic_llong crl_next_update;
	atomic_llong crl_this_update; /* the oldest thisUpdate of the CRLs in use */
	bool crl_configured;	      /* without CRLs the CRL gauges are not exported */
	bool crl_fetching;	      /* --crl-url: the fetch counters are exported */
	atomic_ullong crl_fetch[3];   /* ok, not_modified, error (crlfetch.c) */
	atomic_llong crl_push_active; /* --crl-url fetchers with a long poll held (crlfetch.c) */
	atomic_llong crl_grace;	      /* seconds a CRL is still accepted past its nextUpdate */
	/* --ca-url (renewer.c): exported only then */
	bool renewal_configured;
	atomic_ullong renewals[2];	/* ok, failed */
	atomic_llong renewal_failures;	/* failed attempts in a row, 0 after a success */
	atomic_llong renew_at;		/* the next attempt (UNIX time) */
	atomic_ullong roots_refresh[4]; /* failed, same, replaced, left_alone (renewal.h) */
	atomic_bool draining;
	/* liveness: each worker stores metrics_beat_clock() here about once a second
	 * (worker.c); a worker whose beat is old is stuck */
	int nworkers;
	atomic_llong worker_beats[METRICS_WORKERS_MAX];
	const struct mtls *endpoint; /* for the verification cache counters; may be NULL */
	/* OCSP (ocspfetch.c): fetches by kind (peer, staple) and result, and handshakes let
	 * in by soft-fail without a good answer */
	atomic_ullong ocsp_requests[2][METRICS_OCSP_RESULTS];
	atomic_ullong ocsp_soft_fail;
};

void metrics_init(struct metrics *m, const char *role);
void metrics_handshake(struct metrics *m, enum mtls_reason reason, bool resumed, uint64_t micros);
/* The exposition text (caller frees), or NULL if it could not be built whole (out of
 * memory): never a partial text. */
char *metrics_render(struct metrics *m, size_t *len);

/*
 * Health, decided here for both endpoints (the body is allocated, caller frees; NULL if out
 * of memory), at time now (UNIX seconds):
 *
 * /healthz is liveness (would a restart help?): 503 "draining" after SIGTERM; 503 "stuck"
 * naming each worker whose beat is older than METRICS_STUCK_SECONDS; else 200 "ok". A
 * certificate or CRL problem is not fixed by a restart, so it stays 200, with a "warning:"
 * line for each one.
 *
 * /readyz is readiness (should traffic come here?): 503 when draining, when a worker is
 * stuck, when the own certificate or the CA certificate has expired, or when a CRL is past
 * its nextUpdate and the grace period (every client it covers is refused crl_expired), with
 * a "not ready:" line for each reason; else 200 "ready" (with the "warning:" lines of a CRL
 * within its grace period).
 */
char *metrics_healthz(struct metrics *m, time_t now, long long beat_now, unsigned *status);
char *metrics_readyz(struct metrics *m, time_t now, long long beat_now, unsigned *status);
/* The clock of worker_beats and of beat_now above: seconds of CLOCK_MONOTONIC (+1, so that
 * a beat of 0 stays "not started"). A step of the wall clock (NTP, an operator) moves
 * neither, so it can neither make a working loop look stuck nor hide a stuck one. */
long long metrics_beat_clock(void);

struct metrics_http;
/* Serve /metrics, /healthz and /readyz on an already listening socket (taken over). At most
 * max_connections connections (1..METRICS_HTTP_CONNECTIONS: the daemon fits them into its
 * descriptor budget), a quarter of them from one address, each closed after
 * METRICS_HTTP_TIMEOUT seconds idle: stray or hostile connections cannot hold every slot
 * for long, and a probe finds room. NULL on error. */
#define METRICS_HTTP_CONNECTIONS 1024
#define METRICS_HTTP_TIMEOUT	 3
struct metrics_http *metrics_http_start(int listen_fd, struct metrics *m, unsigned max_connections);
void metrics_http_stop(struct metrics_http *h);

#endif
