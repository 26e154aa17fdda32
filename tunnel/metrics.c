/*
 * Metrics, health and their HTTP endpoint.
 */
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <jansson.h>
#include <microhttpd.h>

#include "log.h"
#include "metrics.h"
#include "tunnel.h"

static const char *const kind_names[METRICS_KINDS] = {"plaintext", "tls_no_cert", "mtls"};
static const char *const mode_names[] = {
	[TUNNEL_MODE_STRICT] = "strict",
	[TUNNEL_MODE_PERMISSIVE] = "permissive",
	[TUNNEL_MODE_AUDIT] = "audit",
};
#define MODES (sizeof(mode_names) / sizeof(mode_names[0]))

/* handshake duration buckets, seconds */
static const double bucket_bounds[METRICS_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
						      0.05,   0.1,   0.25,   0.5,   1.0,  2.5};

void metrics_init(struct metrics *m, const char *role)
{
	memset(m, 0, sizeof(*m));
	m->role = role;
	pthread_mutex_init(&m->ids_lock, NULL);
	pthread_mutex_init(&m->status_lock, NULL);
}

int metrics_identities_init(struct metrics *m, size_t max)
{
	if (max > METRICS_IDENTITIES_MAX)
		max = METRICS_IDENTITIES_MAX;
	m->ids = calloc(max + 1, sizeof(*m->ids));
	if (m->ids == NULL)
		return -1;
	m->ids_max = max;
	snprintf(m->ids[max].name, sizeof(m->ids[max].name), "other");
	return 0;
}

void metrics_free(struct metrics *m)
{
	free(m->ids);
	m->ids = NULL;
	free(m->status);
	m->status = NULL;
	pthread_mutex_destroy(&m->ids_lock);
	pthread_mutex_destroy(&m->status_lock);
}

/* The slot of identity (under ids_lock): its own, a new one while there is room, else
 * "other". NULL without a table. */
static struct metrics_identity *identity_slot(struct metrics *m, const char *identity)
{
	size_t len = identity != NULL ? strlen(identity) : 0;

	if (m->ids == NULL)
		return NULL;
	if (identity == NULL || len == 0)
		identity = "none";
	if (len >= METRICS_IDENTITY_LEN || strcmp(identity, "other") == 0)
		return &m->ids[m->ids_max];
	for (size_t i = 0; i < m->ids_n; i++)
		if (strcmp(m->ids[i].name, identity) == 0)
			return &m->ids[i];
	if (m->ids_n >= m->ids_max)
		return &m->ids[m->ids_max];
	snprintf(m->ids[m->ids_n].name, sizeof(m->ids[0].name), "%s", identity);
	return &m->ids[m->ids_n++];
}

void metrics_conn_kind(struct metrics *m, enum metrics_kind kind, const char *identity)
{
	struct metrics_identity *id;

	if ((unsigned)kind >= METRICS_KINDS)
		return;
	atomic_fetch_add(&m->kinds[kind], 1);
	pthread_mutex_lock(&m->ids_lock);
	if ((id = identity_slot(m, identity)) != NULL)
		id->kinds[kind]++;
	pthread_mutex_unlock(&m->ids_lock);
}

void metrics_would_refuse(struct metrics *m, enum mtls_reason reason, const char *identity)
{
	struct metrics_identity *id;

	if ((unsigned)reason >= MTLS_REASON_COUNT || reason == MTLS_REASON_NONE)
		return;
	atomic_fetch_add(&m->would_refuse[reason], 1);
	pthread_mutex_lock(&m->ids_lock);
	if ((id = identity_slot(m, identity)) != NULL)
		id->would[reason]++;
	pthread_mutex_unlock(&m->ids_lock);
}

void metrics_handshake(struct metrics *m, enum mtls_reason reason, bool resumed, uint64_t micros)
{
	if (reason == MTLS_REASON_NONE) {
		atomic_fetch_add(&m->handshakes_ok, 1);
		if (resumed)
			atomic_fetch_add(&m->handshakes_resumed, 1);
		for (int i = 0; i < METRICS_BUCKETS; i++)
			if ((double)micros / 1e6 <= bucket_bounds[i]) {
				atomic_fetch_add(&m->handshake_buckets[i], 1);
				break;
			}
		atomic_fetch_add(&m->handshake_count, 1);
		atomic_fetch_add(&m->handshake_micros, micros);
	} else if ((unsigned)reason < MTLS_REASON_COUNT) {
		atomic_fetch_add(&m->handshakes_failed[reason], 1);
	}
}

/* The exposition text, built in one growing buffer. Any failure (no memory, a format
 * error) marks it failed for good: a scrape then gets an error, never a partial or garbled
 * page that a monitor would read as counters gone back to zero. */
struct text {
	char *buf;
	size_t len, cap;
	bool failed;
};

static void put(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	while (!t->failed) {
		size_t need;
		char *grown;

		va_start(ap, fmt);
		n = vsnprintf(t->buf != NULL ? t->buf + t->len : NULL,
			      t->buf != NULL ? t->cap - t->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0)
			break;
		if (t->buf != NULL && (size_t)n < t->cap - t->len) {
			t->len += (size_t)n;
			return;
		}
		need = t->len + (size_t)n + 1;
		if (need < 2 * t->cap)
			need = 2 * t->cap;
		grown = realloc(t->buf, need);
		if (grown == NULL)
			break;
		t->buf = grown;
		t->cap = need;
	}
	t->failed = true;
}

#define U(x) ((unsigned long long)atomic_load(&(x)))

/* OCSP: fetches, soft-fail acceptances, answers kept, and a server's staple. */
static void render_ocsp(struct metrics *m, struct text *t)
{
	static const char *const kinds[] = {"peer", "staple"};
	static const char *const results[METRICS_OCSP_RESULTS] = {"good", "revoked", "unknown",
								  "invalid", "error"};
	time_t tu, nu;
	int staple;

	put(t, "# HELP mtls_ocsp_requests_total OCSP fetches by kind (a peer's certificate, the "
	       "own staple) and result: the answer's status, invalid (it did not verify) or error "
	       "(no answer).\n"
	       "# TYPE mtls_ocsp_requests_total counter\n");
	for (int k = 0; k < 2; k++)
		for (int r = 0; r < METRICS_OCSP_RESULTS; r++)
			put(t, "mtls_ocsp_requests_total{kind=\"%s\",result=\"%s\"} %llu\n",
			    kinds[k], results[r], U(m->ocsp_requests[k][r]));
	put(t,
	    "# HELP mtls_ocsp_soft_fail_total Handshakes accepted by OCSP soft-fail without a "
	    "good answer (none yet, the responder failing, or unknown).\n"
	    "# TYPE mtls_ocsp_soft_fail_total counter\n"
	    "mtls_ocsp_soft_fail_total %llu\n",
	    U(m->ocsp_soft_fail));
	if (m->endpoint == NULL)
		return;
	put(t,
	    "# HELP mtls_ocsp_cache_entries OCSP answers kept about peers' certificates.\n"
	    "# TYPE mtls_ocsp_cache_entries gauge\n"
	    "mtls_ocsp_cache_entries %zu\n",
	    mtls_endpoint_ocsp_cache_entries(m->endpoint));
	staple = mtls_endpoint_ocsp_staple_times(m->endpoint, &tu, &nu);
	if (staple < 0)
		return; /* not stapling */
	put(t,
	    "# HELP mtls_ocsp_staple_valid Whether a valid OCSP answer for the own certificate is "
	    "stapled (1) or not (0).\n"
	    "# TYPE mtls_ocsp_staple_valid gauge\n"
	    "mtls_ocsp_staple_valid %d\n",
	    staple == 1 && nu >= time(NULL) ? 1 : 0);
	if (staple == 1)
		put(t,
		    "# HELP mtls_ocsp_staple_next_update_seconds When the stapled answer expires "
		    "(UNIX time).\n"
		    "# TYPE mtls_ocsp_staple_next_update_seconds gauge\n"
		    "mtls_ocsp_staple_next_update_seconds %lld\n"
		    "# HELP mtls_ocsp_staple_age_seconds Seconds since the stapled answer's "
		    "thisUpdate.\n"
		    "# TYPE mtls_ocsp_staple_age_seconds gauge\n"
		    "mtls_ocsp_staple_age_seconds %lld\n",
		    (long long)nu, (long long)(time(NULL) - tu));
}

/* A label value as the exposition format wants it: backslash, double quote and newline
 * escaped; other control bytes and non-ASCII (an identity is the client's to choose) as
 * \\xNN, which is no escape of the format, so the text stays one valid line. */
static void put_label(struct text *t, const char *v)
{
	for (const unsigned char *p = (const unsigned char *)v; *p != '\0' && !t->failed; p++) {
		if (*p == '\\')
			put(t, "\\\\");
		else if (*p == '"')
			put(t, "\\\"");
		else if (*p == '\n')
			put(t, "\\n");
		else if (*p < 0x20 || *p >= 0x7f)
			put(t, "\\\\x%02x", *p);
		else
			put(t, "%c", *p);
	}
}

/* The rollout mode, connections by kind, would_refuse, and the same per identity. */
static void render_rollout(struct metrics *m, struct text *t)
{
	int mode = atomic_load(&m->mode);
	struct metrics_identity *copy = NULL;
	size_t n = 0;

	put(t, "# HELP mtls_mode The rollout mode in force (1): strict, or the insecure "
	       "permissive or audit (docs/rollout.md).\n"
	       "# TYPE mtls_mode gauge\n");
	for (size_t i = 0; i < MODES; i++)
		put(t, "mtls_mode{mode=\"%s\"} %d\n", mode_names[i], (size_t)mode == i ? 1 : 0);
	put(t, "# HELP mtls_connections_by_kind_total Connections forwarded to the target by "
	       "kind: plaintext and tls_no_cert (permissive mode only), mtls (a client "
	       "certificate, verified or would_refuse).\n"
	       "# TYPE mtls_connections_by_kind_total counter\n");
	for (int k = 0; k < METRICS_KINDS; k++)
		put(t, "mtls_connections_by_kind_total{kind=\"%s\"} %llu\n", kind_names[k],
		    U(m->kinds[k]));
	put(t, "# HELP mtls_would_refuse_total Clients forwarded by the permissive or audit mode "
	       "that strict mode would refuse, by reason (judged at the handshake and again after "
	       "each reload).\n"
	       "# TYPE mtls_would_refuse_total counter\n");
	for (int r = 1; r < MTLS_REASON_COUNT; r++) {
		unsigned long long v = U(m->would_refuse[r]);

		if (v > 0)
			put(t, "mtls_would_refuse_total{reason=\"%s\"} %llu\n",
			    mtls_reason_name((enum mtls_reason)r), v);
	}
	/* copied under the lock, formatted outside it: a scrape never holds up a worker */
	pthread_mutex_lock(&m->ids_lock);
	if (m->ids != NULL && (copy = malloc((m->ids_n + 1) * sizeof(*copy))) != NULL) {
		memcpy(copy, m->ids, m->ids_n * sizeof(*copy));
		copy[m->ids_n] = m->ids[m->ids_max];
		n = m->ids_n + 1;
	}
	pthread_mutex_unlock(&m->ids_lock);
	if (m->ids != NULL && copy == NULL) {
		t->failed = true;
		return;
	}
	put(t, "# HELP mtls_identity_connections_total Connections forwarded by client identity "
	       "(URI SAN, else DNS SAN, else CN; none without a certificate) and kind: the first "
	       "--metrics-identities identities seen, the rest as other.\n"
	       "# TYPE mtls_identity_connections_total counter\n");
	for (size_t i = 0; i < n; i++)
		for (int k = 0; k < METRICS_KINDS; k++)
			if (copy[i].kinds[k] > 0) {
				put(t, "mtls_identity_connections_total{identity=\"");
				put_label(t, copy[i].name);
				put(t, "\",kind=\"%s\"} %llu\n", kind_names[k], copy[i].kinds[k]);
			}
	put(t, "# HELP mtls_identity_would_refuse_total would_refuse by client identity and "
	       "reason (bounded as mtls_identity_connections_total).\n"
	       "# TYPE mtls_identity_would_refuse_total counter\n");
	for (size_t i = 0; i < n; i++)
		for (int r = 1; r < MTLS_REASON_COUNT; r++)
			if (copy[i].would[r] > 0) {
				put(t, "mtls_identity_would_refuse_total{identity=\"");
				put_label(t, copy[i].name);
				put(t, "\",reason=\"%s\"} %llu\n",
				    mtls_reason_name((enum mtls_reason)r), copy[i].would[r]);
			}
	free(copy);
}

char *metrics_render(struct metrics *m, size_t *len)
{
	struct text t = {0};
	unsigned long long cumulative = 0;

	put(&t,
	    "# HELP mtls_connections_open Connections open now.\n"
	    "# TYPE mtls_connections_open gauge\n"
	    "mtls_connections_open{role=\"%s\"} %lld\n",
	    m->role, (long long)atomic_load(&m->connections_open));
	put(&t,
	    "# HELP mtls_connections_parked Open connections parked: quiet TLS 1.3 connections "
	    "whose records move through mtls's own record layer, OpenSSL's state freed.\n"
	    "# TYPE mtls_connections_parked gauge\n"
	    "mtls_connections_parked{role=\"%s\"} %lld\n"
	    "# HELP mtls_connections_parked_total Connections parked.\n"
	    "# TYPE mtls_connections_parked_total counter\n"
	    "mtls_connections_parked_total{role=\"%s\"} %llu\n",
	    m->role, (long long)atomic_load(&m->connections_parked), m->role,
	    U(m->connections_parked_total));
	put(&t,
	    "# HELP mtls_connections_total Connections accepted.\n"
	    "# TYPE mtls_connections_total counter\n"
	    "mtls_connections_total{role=\"%s\"} %llu\n",
	    m->role, U(m->connections_total));
	put(&t,
	    "# HELP mtls_connections_refused_total Connections refused by the daemon, not by the "
	    "TLS handshake: past the connection limit, or no PROXY v2 header could be built.\n"
	    "# TYPE mtls_connections_refused_total counter\n"
	    "mtls_connections_refused_total{reason=\"max_connections\"} %llu\n"
	    "mtls_connections_refused_total{reason=\"proxy_header\"} %llu\n",
	    U(m->connections_refused_limit), U(m->connections_refused_proxy_header));
	put(&t,
	    "# HELP mtls_handshakes_total TLS handshakes by result and failure reason.\n"
	    "# TYPE mtls_handshakes_total counter\n"
	    "mtls_handshakes_total{result=\"ok\"} %llu\n"
	    "mtls_handshakes_total{result=\"resumed\"} %llu\n",
	    U(m->handshakes_ok), U(m->handshakes_resumed));
	for (int r = 1; r < MTLS_REASON_COUNT; r++) {
		unsigned long long v = U(m->handshakes_failed[r]);

		if (v > 0)
			put(&t, "mtls_handshakes_total{result=\"failed\",reason=\"%s\"} %llu\n",
			    mtls_reason_name((enum mtls_reason)r), v);
	}
	put(&t, "# HELP mtls_connections_closed_by_recheck_total Established connections closed "
		"because their peer was judged again after a trust change (reload) and refused.\n"
		"# TYPE mtls_connections_closed_by_recheck_total counter\n");
	for (int r = 1; r < MTLS_REASON_COUNT; r++) {
		unsigned long long v = U(m->closed_by_recheck[r]);

		if (v > 0)
			put(&t, "mtls_connections_closed_by_recheck_total{reason=\"%s\"} %llu\n",
			    mtls_reason_name((enum mtls_reason)r), v);
	}
	put(&t,
	    "# HELP mtls_connections_closed_max_lifetime_total Connections closed at "
	    "--max-connection-lifetime.\n"
	    "# TYPE mtls_connections_closed_max_lifetime_total counter\n"
	    "mtls_connections_closed_max_lifetime_total %llu\n",
	    U(m->closed_max_lifetime));
	put(&t, "# HELP mtls_handshake_duration_seconds Duration of successful handshakes.\n"
		"# TYPE mtls_handshake_duration_seconds histogram\n");
	for (int i = 0; i < METRICS_BUCKETS; i++) {
		cumulative += U(m->handshake_buckets[i]);
		put(&t, "mtls_handshake_duration_seconds_bucket{le=\"%g\"} %llu\n",
		    bucket_bounds[i], cumulative);
	}
	put(&t,
	    "mtls_handshake_duration_seconds_bucket{le=\"+Inf\"} %llu\n"
	    "mtls_handshake_duration_seconds_sum %.6f\n"
	    "mtls_handshake_duration_seconds_count %llu\n",
	    U(m->handshake_count), (double)U(m->handshake_micros) / 1e6, U(m->handshake_count));
	put(&t,
	    "# HELP mtls_bytes_total Bytes carried, by direction.\n"
	    "# TYPE mtls_bytes_total counter\n"
	    "mtls_bytes_total{direction=\"to_target\"} %llu\n"
	    "mtls_bytes_total{direction=\"from_target\"} %llu\n",
	    U(m->bytes_to_target), U(m->bytes_from_target));
	put(&t,
	    "# HELP mtls_target_connect_failures_total Failed connections to the target.\n"
	    "# TYPE mtls_target_connect_failures_total counter\n"
	    "mtls_target_connect_failures_total %llu\n",
	    U(m->target_connect_failures));
	if (m->ntargets > 0)
		put(&t, "# HELP mtls_target_up Whether the target resolved and an address of it is "
			"not marked down after a failed connect (1) or not (0).\n"
			"# TYPE mtls_target_up gauge\n");
	for (size_t i = 0; i < m->ntargets; i++) {
		put(&t, "mtls_target_up{target=\"");
		put_label(&t, m->targets[i].name);
		put(&t, "\"} %d\n", atomic_load(&m->targets[i].up));
	}
	if (m->ntargets > 0)
		put(&t, "# HELP mtls_target_addresses Addresses the target's name resolved to.\n"
			"# TYPE mtls_target_addresses gauge\n");
	for (size_t i = 0; i < m->ntargets; i++) {
		put(&t, "mtls_target_addresses{target=\"");
		put_label(&t, m->targets[i].name);
		put(&t, "\"} %d\n", atomic_load(&m->targets[i].addresses));
	}
	if (m->ntargets > 0)
		put(&t, "# HELP mtls_target_address_failures_total Failed connects to an address "
			"of the target (each moves the connection to the next address).\n"
			"# TYPE mtls_target_address_failures_total counter\n");
	for (size_t i = 0; i < m->ntargets; i++) {
		put(&t, "mtls_target_address_failures_total{target=\"");
		put_label(&t, m->targets[i].name);
		put(&t, "\"} %llu\n", U(m->targets[i].connect_failures));
	}
	if (m->ntargets > 0)
		put(&t, "# HELP mtls_target_resolve_failures_total Resolutions of the target's "
			"name that failed.\n"
			"# TYPE mtls_target_resolve_failures_total counter\n");
	for (size_t i = 0; i < m->ntargets; i++) {
		put(&t, "mtls_target_resolve_failures_total{target=\"");
		put_label(&t, m->targets[i].name);
		put(&t, "\"} %llu\n", U(m->targets[i].resolve_failures));
	}
	put(&t,
	    "# HELP mtls_reloads_total Reloads of certificates, keys, CAs, CRLs and rules.\n"
	    "# TYPE mtls_reloads_total counter\n"
	    "mtls_reloads_total{result=\"ok\"} %llu\n"
	    "mtls_reloads_total{result=\"failed\"} %llu\n",
	    U(m->reloads_ok), U(m->reloads_failed));
	if (m->pg)
		put(&t,
		    "# HELP mtls_pg_refused_total PostgreSQL startup messages refused after the "
		    "handshake (--pg-role, or not a startup message).\n"
		    "# TYPE mtls_pg_refused_total counter\n"
		    "mtls_pg_refused_total %llu\n"
		    "# HELP mtls_pg_cancels_total PostgreSQL cancel requests forwarded to the "
		    "target.\n"
		    "# TYPE mtls_pg_cancels_total counter\n"
		    "mtls_pg_cancels_total %llu\n",
		    U(m->pg_refused), U(m->pg_cancels));
	put(&t,
	    "# HELP mtls_cert_not_after_seconds When the own certificate expires (UNIX time).\n"
	    "# TYPE mtls_cert_not_after_seconds gauge\n"
	    "mtls_cert_not_after_seconds %lld\n"
	    "# HELP mtls_ca_not_after_seconds When the first CA certificate expires (UNIX time).\n"
	    "# TYPE mtls_ca_not_after_seconds gauge\n"
	    "mtls_ca_not_after_seconds %lld\n"
	    "# HELP mtls_crl_configured Whether CRLs are checked (1) or not (0); the other "
	    "mtls_crl_ gauges are exported only with CRLs.\n"
	    "# TYPE mtls_crl_configured gauge\n"
	    "mtls_crl_configured %d\n",
	    (long long)atomic_load(&m->cert_not_after), (long long)atomic_load(&m->ca_not_after),
	    m->crl_configured ? 1 : 0);
	if (m->crl_configured)
		put(&t,
		    "# HELP mtls_crl_next_update_seconds The earliest CRL nextUpdate (UNIX time).\n"
		    "# TYPE mtls_crl_next_update_seconds gauge\n"
		    "mtls_crl_next_update_seconds %lld\n"
		    "# HELP mtls_crl_age_seconds Seconds since the thisUpdate of the oldest CRL in "
		    "use.\n"
		    "# TYPE mtls_crl_age_seconds gauge\n"
		    "mtls_crl_age_seconds %lld\n",
		    (long long)atomic_load(&m->crl_next_update),
		    atomic_load(&m->crl_this_update) != 0
			    ? (long long)time(NULL) - (long long)atomic_load(&m->crl_this_update)
			    : 0);
	if (m->crl_fetching)
		put(&t,
		    "# HELP mtls_crl_fetch_total Fetches of --crl-url by result.\n"
		    "# TYPE mtls_crl_fetch_total counter\n"
		    "mtls_crl_fetch_total{result=\"ok\"} %llu\n"
		    "mtls_crl_fetch_total{result=\"not_modified\"} %llu\n"
		    "mtls_crl_fetch_total{result=\"error\"} %llu\n",
		    U(m->crl_fetch[0]), U(m->crl_fetch[1]), U(m->crl_fetch[2]));
	if (m->renewal_configured)
		put(&t,
		    "# HELP mtls_cert_renewal_configured Whether the own certificate renews itself "
		    "at the CA service (--ca-url).\n"
		    "# TYPE mtls_cert_renewal_configured gauge\n"
		    "mtls_cert_renewal_configured 1\n"
		    "# HELP mtls_cert_renewals_total Renewals of the own certificate by result.\n"
		    "# TYPE mtls_cert_renewals_total counter\n"
		    "mtls_cert_renewals_total{result=\"ok\"} %llu\n"
		    "mtls_cert_renewals_total{result=\"failed\"} %llu\n"
		    "# HELP mtls_cert_renewal_failures Failed renewal attempts in a row (0 after a "
		    "success).\n"
		    "# TYPE mtls_cert_renewal_failures gauge\n"
		    "mtls_cert_renewal_failures %lld\n"
		    "# HELP mtls_cert_renew_at_seconds When the next renewal attempt is due (UNIX "
		    "time).\n"
		    "# TYPE mtls_cert_renew_at_seconds gauge\n"
		    "mtls_cert_renew_at_seconds %lld\n"
		    "# HELP mtls_ca_roots_refresh_total Refreshes of the --ca bundle from the CA "
		    "service by result.\n"
		    "# TYPE mtls_ca_roots_refresh_total counter\n"
		    "mtls_ca_roots_refresh_total{result=\"same\"} %llu\n"
		    "mtls_ca_roots_refresh_total{result=\"replaced\"} %llu\n"
		    "mtls_ca_roots_refresh_total{result=\"left_alone\"} %llu\n"
		    "mtls_ca_roots_refresh_total{result=\"failed\"} %llu\n",
		    U(m->renewals[0]), U(m->renewals[1]),
		    (long long)atomic_load(&m->renewal_failures),
		    (long long)atomic_load(&m->renew_at), U(m->roots_refresh[1]),
		    U(m->roots_refresh[2]), U(m->roots_refresh[3]), U(m->roots_refresh[0]));
	if (m->crl_fetching)
		put(&t,
		    "# HELP mtls_crl_push_active How many --crl-url fetchers have a long poll held "
		    "by "
		    "the CRL server (push: a new CRL arrives as soon as it is published); the "
		    "others poll every --crl-refresh.\n"
		    "# TYPE mtls_crl_push_active gauge\n"
		    "mtls_crl_push_active %lld\n",
		    (long long)atomic_load(&m->crl_push_active));
	put(&t,
	    "# HELP mtls_log_lines_dropped_total Log lines lost: the log buffer was full because "
	    "the log's reader (a pipe, journald, a shipper) did not keep up (full), or writing the "
	    "log failed, e.g. a full disk (write_error).\n"
	    "# TYPE mtls_log_lines_dropped_total counter\n"
	    "mtls_log_lines_dropped_total{reason=\"full\"} %llu\n"
	    "mtls_log_lines_dropped_total{reason=\"write_error\"} %llu\n"
	    "# HELP mtls_log_lines_suppressed_total Warnings and errors held back by the log's "
	    "rate "
	    "limit (10 a second per event and reason), each second summed up in a log_suppressed "
	    "line.\n"
	    "# TYPE mtls_log_lines_suppressed_total counter\n"
	    "mtls_log_lines_suppressed_total %llu\n",
	    log_dropped(LOG_DROP_FULL), log_dropped(LOG_DROP_WRITE_ERROR), log_suppressed());
	render_ocsp(m, &t);
	render_rollout(m, &t);
	if (m->endpoint != NULL) {
		unsigned long hits, misses;

		mtls_endpoint_verify_cache_stats(m->endpoint, &hits, &misses);
		put(&t,
		    "# HELP mtls_verify_cache_lookups_total Peer chains answered from the "
		    "verification cache (hit) or verified in full (miss), since the last reload.\n"
		    "# TYPE mtls_verify_cache_lookups_total counter\n"
		    "mtls_verify_cache_lookups_total{result=\"hit\"} %lu\n"
		    "mtls_verify_cache_lookups_total{result=\"miss\"} %lu\n",
		    hits, misses);
	}
	if (t.failed) {
		free(t.buf);
		*len = 0;
		return NULL;
	}
	*len = t.len;
	return t.buf;
}

static char *text_done(struct text *t)
{
	if (t->failed) {
		free(t->buf);
		return NULL;
	}
	return t->buf;
}

static void iso_time(long long when, char *buf, size_t len)
{
	time_t tt = (time_t)when;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "%lld", when);
}

long long metrics_beat_clock(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec + 1;
}

/* A line per stuck worker, each starting with prefix; how many. now and the beats are on
 * metrics_beat_clock(). A beat of 0 is a worker not started yet. */
static int stuck_workers(struct metrics *m, long long now, struct text *t, const char *prefix)
{
	int stuck = 0;

	for (int i = 0; i < m->nworkers && i < METRICS_WORKERS_MAX; i++) {
		long long beat = atomic_load(&m->worker_beats[i]);

		if (beat > 0 && now - beat > METRICS_STUCK_SECONDS) {
			put(t, "%sworker %d is stuck: no heartbeat from its loop for %lld s\n",
			    prefix, i, now - beat);
			stuck++;
		}
	}
	return stuck;
}

/* The own certificate, the CA and the CRLs: a line in expired (each starting with prefix)
 * for what has run out, and in graced for a CRL accepted within its grace period; how many
 * have run out. */
static int credential_findings(struct metrics *m, time_t now, struct text *expired,
			       const char *prefix, struct text *graced)
{
	long long cert = atomic_load(&m->cert_not_after), ca = atomic_load(&m->ca_not_after);
	long long next = atomic_load(&m->crl_next_update), grace = atomic_load(&m->crl_grace);
	char when[40], until[40];
	int n = 0;

	if (cert != 0 && (long long)now > cert) {
		iso_time(cert, when, sizeof(when));
		put(expired, "%sthe own certificate expired at %s: peers refuse it; renew it\n",
		    prefix, when);
		n++;
	}
	if (ca != 0 && (long long)now > ca) {
		iso_time(ca, when, sizeof(when));
		put(expired,
		    "%sthe CA certificate expired at %s: chains to it no longer verify; replace "
		    "it\n",
		    prefix, when);
		n++;
	}
	if (next != 0 && (long long)now > next) {
		iso_time(next, when, sizeof(when));
		iso_time(next + grace, until, sizeof(until));
		if ((long long)now > next + grace) {
			put(expired,
			    "%sa CRL expired at %s (nextUpdate%s): every client it covers is "
			    "refused "
			    "crl_expired; publish a new CRL\n",
			    prefix, grace > 0 ? until : when,
			    grace > 0 ? " plus the grace period" : "");
			n++;
		} else {
			put(graced,
			    "warning: a CRL is past its nextUpdate (%s), accepted within the grace "
			    "period until %s; publish a new CRL\n",
			    when, until);
		}
	}
	return n;
}

int metrics_stuck_workers(struct metrics *m, long long beat_now)
{
	struct text t = {0};
	int n = stuck_workers(m, beat_now, &t, "");

	free(t.buf);
	return n;
}

char *metrics_healthz(struct metrics *m, time_t now, long long beat_now, unsigned *status)
{
	struct text head = {0}, stuck = {0}, notes = {0};
	int n;

	*status = MHD_HTTP_OK;
	n = stuck_workers(m, beat_now, &stuck, "");
	if (atomic_load(&m->draining)) {
		*status = MHD_HTTP_SERVICE_UNAVAILABLE;
		put(&head, "draining\n");
	} else if (n > 0) {
		*status = MHD_HTTP_SERVICE_UNAVAILABLE;
		put(&head, "stuck: %d of %d workers\n", n, m->nworkers);
	} else {
		put(&head, "ok\n");
	}
	credential_findings(m, now, &notes, "warning: ", &notes);
	if (stuck.buf != NULL && !atomic_load(&m->draining))
		put(&head, "%s", stuck.buf);
	if (notes.buf != NULL)
		put(&head, "%s", notes.buf);
	free(stuck.buf);
	free(notes.buf);
	head.failed |= stuck.failed || notes.failed;
	return text_done(&head);
}

char *metrics_readyz(struct metrics *m, time_t now, long long beat_now, unsigned *status)
{
	struct text head = {0}, why = {0}, notes = {0};
	int n = 0;

	if (atomic_load(&m->draining)) {
		put(&why, "not ready: draining\n");
		n++;
	}
	n += stuck_workers(m, beat_now, &why, "not ready: ");
	n += credential_findings(m, now, &why, "not ready: ", &notes);
	*status = n > 0 ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_OK;
	put(&head, "%s", n == 0 ? "ready\n" : why.buf != NULL ? why.buf : "");
	if (notes.buf != NULL)
		put(&head, "%s", notes.buf);
	free(why.buf);
	free(notes.buf);
	head.failed |= why.failed || notes.failed;
	return text_done(&head);
}

void metrics_set_status(struct metrics *m, char *json)
{
	char *old;

	pthread_mutex_lock(&m->status_lock);
	old = m->status;
	m->status = json;
	pthread_mutex_unlock(&m->status_lock);
	free(old);
}

static json_t *iso_json(long long when)
{
	char buf[40];

	if (when == 0)
		return json_null();
	iso_time(when, buf, sizeof(buf));
	return json_string(buf);
}

char *metrics_status(struct metrics *m, time_t now)
{
	json_t *doc = NULL, *conns, *kinds, *crls;
	char *text = NULL;
	unsigned long long would = 0;
	int mode = atomic_load(&m->mode);
	size_t i;
	json_t *crl;

	pthread_mutex_lock(&m->status_lock);
	if (m->status != NULL)
		doc = json_loads(m->status, 0, NULL);
	pthread_mutex_unlock(&m->status_lock);
	if (doc == NULL && (doc = json_object()) == NULL)
		return NULL;
	for (int r = 1; r < MTLS_REASON_COUNT; r++)
		would += U(m->would_refuse[r]);
	kinds = json_object();
	for (int k = 0; k < METRICS_KINDS && kinds != NULL; k++)
		json_object_set_new(kinds, kind_names[k], json_integer((json_int_t)U(m->kinds[k])));
	conns = json_pack("{s:I,s:I,s:I,s:o*,s:I}", "open",
			  (json_int_t)atomic_load(&m->connections_open), "parked",
			  (json_int_t)atomic_load(&m->connections_parked), "total",
			  (json_int_t)U(m->connections_total), "by_kind", kinds, "would_refuse",
			  (json_int_t)would);
	if (conns == NULL ||
	    json_object_set_new(doc, "mode",
				json_string((size_t)mode < MODES ? mode_names[mode] : "?")) != 0 ||
	    json_object_set_new(doc, "role", json_string(m->role)) != 0 ||
	    (m->tunnel != NULL &&
	     json_object_set_new(doc, "tunnel", json_string(m->tunnel)) != 0) ||
	    json_object_set_new(doc, "connections", conns) != 0 ||
	    json_object_set_new(doc, "draining", json_boolean(atomic_load(&m->draining))) != 0)
		goto out;
	/* the ages of now, from each CRL's thisUpdate */
	crls = json_object_get(doc, "crl");
	json_array_foreach(crls, i, crl)
	{
		json_t *tu = json_object_get(crl, "this_update_unix");

		if (json_is_integer(tu))
			json_object_set_new(crl, "age_seconds",
					    json_integer((json_int_t)now - json_integer_value(tu)));
	}
	if (m->renewal_configured) {
		json_t *cert = json_object_get(doc, "certificate");

		if (json_is_object(cert))
			json_object_set_new(cert, "next_renewal",
					    iso_json(atomic_load(&m->renew_at)));
	}
	text = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
out:
	json_decref(doc);
	return text;
}

/*
 * ?target=1 without blocking the HTTP thread: the request is suspended in libmicrohttpd and
 * queued for one prober thread, which runs a single connect to the target for every request
 * queued before that connect started (N requests at once cost one probe), stores the result
 * in each request's state and resumes them; the handler, called again, answers. Every
 * answer comes from a connect started after its request arrived: never a cached one. The
 * queue holds at most one request per connection, so the HTTP connection limit bounds it;
 * a queued request waits for the probe in progress and its own (each at most 2 s,
 * daemon.c's target_check).
 */
struct probe_req {
	struct MHD_Connection *conn;
	struct probe_req *next;
	bool listed; /* in h->queue (not yet taken by the prober) */
	bool queued; /* suspended, waiting for a probe (listed, or in the prober's batch) */
	bool done;   /* probed: ok and why hold the result */
	bool ok;
	char why[300];
};

struct metrics_http {
	struct MHD_Daemon *daemon;
	struct metrics *m;
	pthread_mutex_t mu; /* the queue, stopping, and each probe_req's fields */
	pthread_cond_t wake;
	struct probe_req *queue;
	bool stopping;
	bool prober_started;
	pthread_t prober;
};

/* Fill each request of batch with the result and resume it (under h->mu). A request is not
 * touched after its resume: the HTTP thread may answer and free it at once. */
static void probe_answer(struct probe_req *batch, bool ok, const char *why)
{
	struct probe_req *r, *next;

	for (r = batch; r != NULL; r = next) {
		next = r->next;
		r->next = NULL;
		r->ok = ok;
		snprintf(r->why, sizeof(r->why), "%s", why);
		r->done = true;
		r->queued = false;
		MHD_resume_connection(r->conn);
	}
}

static void *prober_main(void *arg)
{
	struct metrics_http *h = arg;
	struct metrics *m = h->m;

	pthread_mutex_lock(&h->mu);
	for (;;) {
		struct probe_req *batch;
		char why[300] = "";
		bool ok;

		while (h->queue == NULL && !h->stopping)
			pthread_cond_wait(&h->wake, &h->mu);
		if (h->queue == NULL)
			break; /* stopping, nothing left */
		batch = h->queue;
		h->queue = NULL;
		for (struct probe_req *r = batch; r != NULL; r = r->next)
			r->listed = false;
		if (h->stopping) {
			probe_answer(batch, false, "not checked: the daemon is stopping");
			continue;
		}
		pthread_mutex_unlock(&h->mu);
		ok = m->target_check(m->target_arg, why, sizeof(why)) == 0;
		pthread_mutex_lock(&h->mu);
		probe_answer(batch, ok, why);
	}
	pthread_mutex_unlock(&h->mu);
	return NULL;
}

/* Queue r for the prober and suspend its connection (from its handler): 0, or -1 when the
 * HTTP server stops (answer at once). Under the mutex, so that the prober, taking it next,
 * finds the connection suspended. */
static int probe_enqueue(struct metrics_http *h, struct probe_req *r, struct MHD_Connection *conn)
{
	pthread_mutex_lock(&h->mu);
	if (h->stopping || !h->prober_started) {
		pthread_mutex_unlock(&h->mu);
		return -1;
	}
	r->conn = conn;
	r->listed = r->queued = true;
	r->next = h->queue;
	h->queue = r;
	MHD_suspend_connection(conn);
	pthread_cond_signal(&h->wake);
	pthread_mutex_unlock(&h->mu);
	return 0;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **state,
			 enum MHD_RequestTerminationCode toe)
{
	struct metrics_http *h = cls;
	struct probe_req *r = *state;

	(void)conn;
	(void)toe;
	if (r == NULL)
		return;
	/* a suspended request ends only when the daemon stops, after the prober resumed
	 * every one; unlisted anyway, so that nothing could keep a freed request */
	pthread_mutex_lock(&h->mu);
	if (r->listed)
		for (struct probe_req **p = &h->queue; *p != NULL; p = &(*p)->next)
			if (*p == r) {
				*p = r->next;
				break;
			}
	pthread_mutex_unlock(&h->mu);
	free(r);
	*state = NULL;
}

static struct MHD_Response *text_response(const char *text)
{
	/* a copy: no cast from const, no lifetime question (0.9.75 has no _copy variant) */
	char *copy = strdup(text);

	return copy != NULL
		       ? MHD_create_response_from_buffer(strlen(copy), copy, MHD_RESPMEM_MUST_FREE)
		       : NULL;
}

/* ?target=1: the health text with a line on whether the target accepted a connection (as
 * ghostunnel's /_status does), r's probe; 503 if it did not. For a load balancer's check: a
 * liveness probe should not ask, since a restart does not bring the target back. Takes
 * text. */
static char *with_target(char *text, bool ok, const char *why, unsigned *status)
{
	struct text t = {0};

	put(&t, "%s%s%s\n", text, ok ? "target: ok" : "target: unreachable: ", ok ? "" : why);
	free(text);
	if (!ok)
		*status = MHD_HTTP_SERVICE_UNAVAILABLE;
	return text_done(&t);
}

/* Whether a /healthz or /readyz request asks for the target check. */
static bool wants_target(struct MHD_Connection *conn, const char *url)
{
	const char *target = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "target");

	return (strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0) && target != NULL &&
	       strcmp(target, "0") != 0;
}

static enum MHD_Result answer(void *cls, struct MHD_Connection *conn, const char *url,
			      const char *method, const char *version, const char *upload,
			      size_t *upload_len, void **state)
{
	struct metrics_http *h = cls;
	struct probe_req *r = *state;
	struct MHD_Response *resp;
	enum MHD_Result ret;
	unsigned status = MHD_HTTP_OK;
	const char *type = "text/plain; charset=utf-8";
	bool target = (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0) &&
		      wants_target(conn, url);

	if (target && h->m->target_check != NULL) {
		bool waiting;

		/* first call: the request's state; then queued for the prober and suspended;
		 * resumed with the result: answered below */
		if (r == NULL) {
			if ((r = calloc(1, sizeof(*r))) == NULL)
				return MHD_NO;
			*state = r;
			return MHD_YES;
		}
		pthread_mutex_lock(&h->mu);
		waiting = r->queued;
		pthread_mutex_unlock(&h->mu);
		if (waiting)
			return MHD_YES; /* not expected: a suspended request is not called */
		if (!r->done) {
			if (probe_enqueue(h, r, conn) == 0)
				return MHD_YES;
			snprintf(r->why, sizeof(r->why), "not checked: the daemon is stopping");
			r->done = true;
		}
	}

	(void)version;
	(void)upload;
	(void)upload_len;
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
		status = MHD_HTTP_METHOD_NOT_ALLOWED;
		resp = text_response("method not allowed\n");
	} else if (strcmp(url, "/metrics") == 0) {
		size_t len = 0;
		char *text = metrics_render(h->m, &len);

		if (text == NULL) {
			status = MHD_HTTP_INTERNAL_SERVER_ERROR;
			resp = text_response("metrics unavailable: out of memory\n");
		} else {
			type = "text/plain; version=0.0.4; charset=utf-8";
			resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
			if (resp == NULL)
				free(text);
		}
	} else if (strcmp(url, "/status") == 0) {
		char *text = metrics_status(h->m, time(NULL));

		if (text == NULL) {
			status = MHD_HTTP_INTERNAL_SERVER_ERROR;
			resp = text_response("status unavailable: out of memory\n");
		} else {
			type = "application/json";
			resp = MHD_create_response_from_buffer(strlen(text), text,
							       MHD_RESPMEM_MUST_FREE);
			if (resp == NULL)
				free(text);
		}
	} else if (strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0) {
		char *text =
			strcmp(url, "/healthz") == 0
				? metrics_healthz(h->m, time(NULL), metrics_beat_clock(), &status)
				: metrics_readyz(h->m, time(NULL), metrics_beat_clock(), &status);

		if (text != NULL && target) {
			pthread_mutex_lock(&h->mu);
			text = r != NULL ? with_target(text, r->ok, r->why, &status)
					 : with_target(text, false, "no target check", &status);
			pthread_mutex_unlock(&h->mu);
		}

		if (text == NULL) {
			status = MHD_HTTP_INTERNAL_SERVER_ERROR;
			resp = text_response("health unavailable: out of memory\n");
		} else {
			resp = MHD_create_response_from_buffer(strlen(text), text,
							       MHD_RESPMEM_MUST_FREE);
			if (resp == NULL)
				free(text);
		}
	} else {
		status = MHD_HTTP_NOT_FOUND;
		resp = text_response("not found\n");
	}
	if (resp == NULL)
		return MHD_NO;
	MHD_add_response_header(resp, "Content-Type", type);
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

struct metrics_http *metrics_http_start(int listen_fd, struct metrics *m, unsigned max_connections)
{
	struct metrics_http *h = calloc(1, sizeof(*h));
	sigset_t all, old;
	unsigned conns = max_connections < 1			      ? 1
			 : max_connections > METRICS_HTTP_CONNECTIONS ? METRICS_HTTP_CONNECTIONS
								      : max_connections;
	unsigned per_ip = conns / 4 > 0 ? conns / 4 : 1;

	if (h == NULL)
		return NULL;
	h->m = m;
	pthread_mutex_init(&h->mu, NULL);
	pthread_cond_init(&h->wake, NULL);
	/* its threads take no signal: the daemon's main loop handles them (libev's signalfd
	 * sees only signals that every thread blocks) */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	if (m->target_check != NULL)
		h->prober_started = pthread_create(&h->prober, NULL, prober_main, h) == 0;
	/* 16 KiB a connection is ample for a GET and the response headers (the default 32) */
	if (m->target_check == NULL || h->prober_started)
		h->daemon = MHD_start_daemon(
			MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME,
			0, NULL, NULL, answer, h, MHD_OPTION_LISTEN_SOCKET, listen_fd,
			MHD_OPTION_CONNECTION_LIMIT, conns, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
			per_ip, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)METRICS_HTTP_TIMEOUT,
			MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16384,
			MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_END);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (h->daemon == NULL) {
		metrics_http_stop(h);
		return NULL;
	}
	return h;
}

void metrics_http_stop(struct metrics_http *h)
{
	if (h == NULL)
		return;
	/* the prober first: it answers what is queued (after the probe in progress, at most
	 * 2 s) and resumes it, and no request is suspended after: libmicrohttpd refuses to
	 * stop with suspended connections */
	pthread_mutex_lock(&h->mu);
	h->stopping = true;
	pthread_cond_signal(&h->wake);
	pthread_mutex_unlock(&h->mu);
	if (h->prober_started)
		pthread_join(h->prober, NULL);
	if (h->daemon != NULL)
		MHD_stop_daemon(h->daemon);
	pthread_cond_destroy(&h->wake);
	pthread_mutex_destroy(&h->mu);
	free(h);
}
