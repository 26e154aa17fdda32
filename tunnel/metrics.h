/*
 * Counters the daemons keep (atomics, updated from every worker) and their Prometheus text
 * exposition, served with /healthz on a separate plain-HTTP address by libmicrohttpd.
 */
#ifndef MTLS_TUNNEL_METRICS_H
#define MTLS_TUNNEL_METRICS_H

#include <pthread.h>
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

/* How a forwarded connection came in (a rollout mode, tunnel.h): the index of kinds. */
enum metrics_kind {
	METRICS_KIND_PLAINTEXT,	  /* no TLS (permissive) */
	METRICS_KIND_TLS_NO_CERT, /* TLS without a client certificate (permissive) */
	METRICS_KIND_MTLS,	  /* a client certificate: verified, or would_refuse */
	METRICS_KINDS
};

/* Per-identity counters: the first --metrics-identities identities seen get their own (at
 * most METRICS_IDENTITIES_MAX), every other one is counted as identity "other", and so is an
 * identity longer than METRICS_IDENTITY_LEN - 1 bytes: a scan with made-up certificates
 * cannot grow the exposition past that bound (and the pump counts certificates that do not
 * lead to the CA as one identity, "untrusted", so such a scan takes one slot at most). First
 * seen rather than most seen: a slot once given is kept, so each series only grows, as a
 * Prometheus counter must, and "other" never gives counts back. */
#define METRICS_IDENTITIES_MAX 1000
#define METRICS_IDENTITY_LEN   256
struct metrics_identity {
	char name[METRICS_IDENTITY_LEN];
	unsigned long long kinds[METRICS_KINDS];
	unsigned long long would[MTLS_REASON_COUNT];
};

/* An outbound target (--server, --target; resolver.h), in order of preference: its name is
 * set at start, before the HTTP server starts; the resolver keeps the rest. */
#define METRICS_TARGETS_MAX 16
struct metrics_target {
	char name[300];
	atomic_int up;			/* resolved, and an address not marked down */
	atomic_int addresses;		/* addresses it resolved to */
	atomic_ullong connect_failures; /* failed connects to its addresses */
	atomic_ullong resolve_failures; /* resolutions of its name that failed */
};

struct metrics {
	const char *role;   /* "server" or "connector" */
	const char *tunnel; /* the config file's [section], for /status; NULL: the only one */
	atomic_int mode;    /* enum tunnel_mode in force (a reload may change it) */
	atomic_ullong kinds[METRICS_KINDS];
	atomic_ullong would_refuse[MTLS_REASON_COUNT];
	/* ids_max slots, then "other" at ids[ids_max]; under ids_lock (workers add, the HTTP
	 * thread copies) */
	pthread_mutex_t ids_lock;
	struct metrics_identity *ids;
	size_t ids_n, ids_max;
	/* /status: the part the main thread knows (credentials, last reload), a JSON object
	 * text, replaced whole under status_lock */
	pthread_mutex_t status_lock;
	char *status;
	/* /healthz?target=1: can the target be connected to? 0, or -1 with why. Called from
	 * the HTTP server's prober thread (never the HTTP thread: it may take seconds); set
	 * before metrics_http_start() */
	int (*target_check)(void *arg, char *err, size_t len);
	void *target_arg;
	atomic_llong connections_open;
	atomic_llong connections_parked; /* mtls_park(): OpenSSL's state freed */
	atomic_ullong connections_parked_total;
	atomic_ullong connections_total;
	atomic_ullong connections_refused_limit;
	atomic_ullong connections_refused_proxy_header; /* PROXY v2 header not buildable */
	bool pg;		  /* --protocol postgresql: its counters exported */
	atomic_ullong pg_refused; /* a StartupMessage refused (role, bad message) */
	atomic_ullong pg_cancels; /* CancelRequests forwarded */
	atomic_ullong handshakes_ok;
	atomic_ullong handshakes_resumed;
	atomic_ullong handshakes_failed[MTLS_REASON_COUNT];
	atomic_ullong handshake_buckets[METRICS_BUCKETS]; /* cumulative on output only */
	atomic_ullong handshake_count;
	atomic_ullong handshake_micros;
	atomic_ullong bytes_to_target; /* from the TLS side to the plaintext side */
	atomic_ullong bytes_from_target;
	atomic_ullong target_connect_failures;
	size_t ntargets;
	struct metrics_target targets[METRICS_TARGETS_MAX];
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
/* The per-identity table for max identities (0..METRICS_IDENTITIES_MAX): 0, or -1 (no
 * memory). metrics_free() frees it and the status text. */
int metrics_identities_init(struct metrics *m, size_t max);
void metrics_free(struct metrics *m);
/* A connection forwarded, by kind, under identity ("none" for a client without one). */
void metrics_conn_kind(struct metrics *m, enum metrics_kind kind, const char *identity);
/* A client forwarded by a rollout mode that strict mode would refuse, and why. */
void metrics_would_refuse(struct metrics *m, enum mtls_reason reason, const char *identity);
/* /status: set the main thread's part (a JSON object text, taken over; NULL keeps none). */
void metrics_set_status(struct metrics *m, char *json);
/* The /status document (caller frees), or NULL if out of memory: the main thread's part
 * with the counters of now (connections, kinds, mode, CRL ages, next renewal). */
char *metrics_status(struct metrics *m, time_t now);
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
/* How many workers are stuck (their beat older than METRICS_STUCK_SECONDS at beat_now), as
 * /healthz decides it: the systemd watchdog is fed only while this is 0 (daemon.c). */
int metrics_stuck_workers(struct metrics *m, long long beat_now);
/* The clock of worker_beats and of beat_now above: seconds of CLOCK_MONOTONIC (+1, so that
 * a beat of 0 stays "not started"). A step of the wall clock (NTP, an operator) moves
 * neither, so it can neither make a working loop look stuck nor hide a stuck one. */
long long metrics_beat_clock(void);

struct metrics_http;
/* Serve /metrics, /healthz and /readyz on an already listening socket (taken over). At most
 * max_connections connections (1..METRICS_HTTP_CONNECTIONS: the daemon fits them into its
 * descriptor budget), a quarter of them from one address, each closed after
 * METRICS_HTTP_TIMEOUT seconds idle: stray or hostile connections cannot hold every slot
 * for long, and a probe finds room. NULL on error.
 *
 * ?target=1 (on /healthz and /readyz) runs m->target_check on a thread of its own, with the
 * request suspended meanwhile: the HTTP thread never waits on the target, so /metrics and
 * the other probes answer while a check hangs. Requests arriving together share one check;
 * each answer comes from a check started after its request arrived. metrics_http_stop()
 * answers the queued ones (after the check in progress) before it stops the server. */
#define METRICS_HTTP_CONNECTIONS 1024
#define METRICS_HTTP_TIMEOUT	 3
struct metrics_http *metrics_http_start(int listen_fd, struct metrics *m, unsigned max_connections);
void metrics_http_stop(struct metrics_http *h);

#endif
