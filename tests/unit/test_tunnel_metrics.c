/*
 * The metrics exposition (tunnel/metrics.c) when memory runs out: metrics_render() returns
 * the whole text or NULL, never a partial or garbled one, and /metrics answers 500.
 *
 * And the health decisions, table-driven over fabricated metrics: /healthz (liveness) and
 * /readyz (readiness) for stuck workers, draining, and expired certificates and CRLs.
 *
 * Allocation failures are injected with the linker: this test is linked with
 * -Wl,--wrap=realloc (tests/CMakeLists.txt), so the realloc calls of metrics.c come to
 * __wrap_realloc below, which fails the Nth one (or all) when asked.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "metrics.h"

void *__real_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n);

static atomic_int calls;     /* realloc calls since the last arm() */
static atomic_int fail_at;   /* fail call number fail_at (1-based); 0: none */
static atomic_bool fail_all; /* fail every call */

void *__wrap_realloc(void *p, size_t n)
{
	int k = atomic_fetch_add(&calls, 1) + 1;

	if (atomic_load(&fail_all) || k == atomic_load(&fail_at))
		return NULL;
	return __real_realloc(p, n);
}

static void arm(int at, bool all)
{
	atomic_store(&calls, 0);
	atomic_store(&fail_at, at);
	atomic_store(&fail_all, all);
}

static void sample(struct metrics *m)
{
	metrics_init(m, "server");
	atomic_store(&m->connections_total, 12345);
	metrics_handshake(m, MTLS_REASON_NONE, false, 700);
	metrics_handshake(m, MTLS_REASON_REVOKED, false, 0);
	metrics_handshake(m, MTLS_REASON_EXPIRED, false, 0);
}

static void test_render(void **state)
{
	struct metrics m;
	size_t len = 0;
	char *text;

	(void)state;
	sample(&m);
	arm(0, false);
	text = metrics_render(&m, &len);
	assert_non_null(text);
	assert_int_equal(len, strlen(text));
	assert_non_null(strstr(text, "\nmtls_connections_total{role=\"server\"} 12345\n"));
	assert_non_null(
		strstr(text, "\nmtls_handshakes_total{result=\"failed\",reason=\"revoked\"} 1\n"));
	/* no CRL: said as such, not as a nextUpdate of 0 (the epoch, read as long expired) */
	assert_non_null(strstr(text, "\nmtls_crl_configured 0\n"));
	assert_null(strstr(text, "mtls_crl_next_update_seconds"));
	assert_null(strstr(text, "mtls_crl_age_seconds"));
	assert_null(strstr(text, "mtls_crl_fetch_total"));
	assert_non_null(strstr(text, "\n# TYPE mtls_log_lines_dropped_total counter\n"
				     "mtls_log_lines_dropped_total{reason=\"full\"} 0\n"
				     "mtls_log_lines_dropped_total{reason=\"write_error\"} 0\n"));
	assert_non_null(strstr(text, "\nmtls_log_lines_suppressed_total 0\n"));
	free(text);
}

/* With CRLs (and --crl-url): nextUpdate, the age of the oldest CRL, the fetch counters. */
static void test_render_crl(void **state)
{
	struct metrics m;
	size_t len = 0;
	char *text, line[100];
	long long age = -1;
	const char *p;

	(void)state;
	sample(&m);
	m.crl_configured = true;
	m.crl_fetching = true;
	atomic_store(&m.crl_next_update, 1800000000LL);
	atomic_store(&m.crl_this_update, (long long)time(NULL) - 100);
	atomic_store(&m.crl_fetch[0], 3);
	atomic_store(&m.crl_fetch[1], 7);
	atomic_store(&m.crl_fetch[2], 2);
	arm(0, false);
	text = metrics_render(&m, &len);
	assert_non_null(text);
	assert_non_null(strstr(text, "\nmtls_crl_configured 1\n"));
	assert_non_null(strstr(text, "\nmtls_crl_next_update_seconds 1800000000\n"));
	assert_non_null(strstr(text, "\n# TYPE mtls_crl_age_seconds gauge\n"));
	p = strstr(text, "\nmtls_crl_age_seconds ");
	assert_non_null(p);
	assert_int_equal(sscanf(p, "\nmtls_crl_age_seconds %lld", &age), 1);
	assert_true(age >= 100 && age < 200);
	snprintf(line, sizeof(line), "\n# TYPE mtls_crl_fetch_total counter\n");
	assert_non_null(strstr(text, line));
	assert_non_null(strstr(text, "\nmtls_crl_fetch_total{result=\"ok\"} 3\n"
				     "mtls_crl_fetch_total{result=\"not_modified\"} 7\n"
				     "mtls_crl_fetch_total{result=\"error\"} 2\n"));
	free(text);
}

#define NOW 1800000000LL /* 2027-01-15T08:00:00Z */

struct health_case {
	const char *name;
	bool draining;
	int nworkers;
	long long beats[3];		/* seconds before NOW; 0: not started; < 0: in the future */
	long long cert, ca, crl, grace; /* not_after / nextUpdate relative to NOW; 0: none */
	unsigned healthz;
	const char *healthz_body; /* exactly */
	unsigned readyz;
	const char *readyz_body; /* exactly */
};

#define AGO(s) (-(long long)(s))

static const struct health_case health_cases[] = {
	{"fine", false, 2, {1, 0}, 86400, 86400 * 365, 3600, 0, 200, "ok\n", 200, "ready\n"},
	{"no workers, no credentials", false, 0, {0}, 0, 0, 0, 0, 200, "ok\n", 200, "ready\n"},
	{"a beat 5 s old is not stuck", false, 2, {1, 5}, 0, 0, 0, 0, 200, "ok\n", 200, "ready\n"},
	{"a beat 6 s old is stuck",
	 false,
	 3,
	 {1, 6, 1},
	 0,
	 0,
	 0,
	 0,
	 503,
	 "stuck: 1 of 3 workers\nworker 1 is stuck: no heartbeat from its loop for 6 s\n",
	 503,
	 "not ready: worker 1 is stuck: no heartbeat from its loop for 6 s\n"},
	{"two stuck",
	 false,
	 3,
	 {40, 1, 7},
	 0,
	 0,
	 0,
	 0,
	 503,
	 "stuck: 2 of 3 workers\nworker 0 is stuck: no heartbeat from its loop for 40 s\n"
	 "worker 2 is stuck: no heartbeat from its loop for 7 s\n",
	 503,
	 "not ready: worker 0 is stuck: no heartbeat from its loop for 40 s\n"
	 "not ready: worker 2 is stuck: no heartbeat from its loop for 7 s\n"},
	{"not started yet", false, 2, {0, 0}, 0, 0, 0, 0, 200, "ok\n", 200, "ready\n"},
	{"clock stepped back", false, 1, {-100}, 0, 0, 0, 0, 200, "ok\n", 200, "ready\n"},
	{"draining", true, 1, {1}, 0, 0, 0, 0, 503, "draining\n", 503, "not ready: draining\n"},
	{"own certificate expired",
	 false,
	 1,
	 {1},
	 AGO(10),
	 86400,
	 0,
	 0,
	 200,
	 "ok\nwarning: the own certificate expired at 2027-01-15T07:59:50Z: peers refuse it; "
	 "renew it\n",
	 503,
	 "not ready: the own certificate expired at 2027-01-15T07:59:50Z: peers refuse it; renew "
	 "it\n"},
	{"CA expired",
	 false,
	 1,
	 {1},
	 0,
	 AGO(3600),
	 0,
	 0,
	 200,
	 "ok\nwarning: the CA certificate expired at 2027-01-15T07:00:00Z: chains to it no longer "
	 "verify; replace it\n",
	 503,
	 "not ready: the CA certificate expired at 2027-01-15T07:00:00Z: chains to it no longer "
	 "verify; replace it\n"},
	{"CRL expired",
	 false,
	 1,
	 {1},
	 0,
	 0,
	 AGO(60),
	 0,
	 200,
	 "ok\nwarning: a CRL expired at 2027-01-15T07:59:00Z (nextUpdate): every client it covers "
	 "is refused crl_expired; publish a new CRL\n",
	 503,
	 "not ready: a CRL expired at 2027-01-15T07:59:00Z (nextUpdate): every client it covers "
	 "is refused crl_expired; publish a new CRL\n"},
	{"CRL within its grace period",
	 false,
	 1,
	 {1},
	 0,
	 0,
	 AGO(60),
	 3600,
	 200,
	 "ok\nwarning: a CRL is past its nextUpdate (2027-01-15T07:59:00Z), accepted within the "
	 "grace period until 2027-01-15T08:59:00Z; publish a new CRL\n",
	 200,
	 "ready\nwarning: a CRL is past its nextUpdate (2027-01-15T07:59:00Z), accepted within "
	 "the grace period until 2027-01-15T08:59:00Z; publish a new CRL\n"},
	{"CRL past its grace period",
	 false,
	 1,
	 {1},
	 0,
	 0,
	 AGO(7200),
	 3600,
	 200,
	 "ok\nwarning: a CRL expired at 2027-01-15T07:00:00Z (nextUpdate plus the grace period): "
	 "every client it covers is refused crl_expired; publish a new CRL\n",
	 503,
	 "not ready: a CRL expired at 2027-01-15T07:00:00Z (nextUpdate plus the grace period): "
	 "every client it covers is refused crl_expired; publish a new CRL\n"},
	{"stuck and expired",
	 false,
	 1,
	 {30},
	 AGO(10),
	 0,
	 0,
	 0,
	 503,
	 "stuck: 1 of 1 workers\nworker 0 is stuck: no heartbeat from its loop for 30 s\n"
	 "warning: the own certificate expired at 2027-01-15T07:59:50Z: peers refuse it; renew "
	 "it\n",
	 503,
	 "not ready: worker 0 is stuck: no heartbeat from its loop for 30 s\n"
	 "not ready: the own certificate expired at 2027-01-15T07:59:50Z: peers refuse it; renew "
	 "it\n"},
};

static void health_metrics(struct metrics *m, const struct health_case *c)
{
	metrics_init(m, "server");
	atomic_store(&m->draining, c->draining);
	m->nworkers = c->nworkers;
	for (int i = 0; i < c->nworkers; i++)
		atomic_store(&m->worker_beats[i], c->beats[i] == 0 ? 0 : NOW - c->beats[i]);
	/* relative times: 0 is "none"; AGO(0) + 0 is NOW itself, spelled as a nextUpdate of NOW */
	atomic_store(&m->cert_not_after, c->cert == 0 ? 0 : NOW + c->cert);
	atomic_store(&m->ca_not_after, c->ca == 0 ? 0 : NOW + c->ca);
	atomic_store(&m->crl_next_update,
		     c->crl == 0 && strstr(c->name, "nextUpdate second") == NULL ? 0
										 : NOW + c->crl);
	atomic_store(&m->crl_grace, c->grace);
}

/* The wall clock stepped an hour forward (NTP, an operator) while every loop beats: the
 * beats are on the monotonic clock, which did not move, so nothing is stuck; with beats
 * compared to the wall clock a liveness probe would restart a healthy daemon. */
static void test_health_wall_clock_step(void **state)
{
	struct metrics m;
	unsigned status;
	char *body;

	(void)state;
	metrics_init(&m, "server");
	m.nworkers = 2;
	atomic_store(&m.worker_beats[0], NOW - 1);
	atomic_store(&m.worker_beats[1], NOW);
	body = metrics_healthz(&m, (time_t)NOW + 3600, NOW, &status);
	assert_non_null(body);
	assert_int_equal(status, 200);
	assert_string_equal(body, "ok\n");
	free(body);
	body = metrics_readyz(&m, (time_t)NOW + 3600, NOW, &status);
	assert_non_null(body);
	assert_int_equal(status, 200);
	free(body);
}

static void test_health(void **state)
{
	(void)state;
	arm(0, false);
	for (size_t i = 0; i < sizeof(health_cases) / sizeof(health_cases[0]); i++) {
		const struct health_case *c = &health_cases[i];
		struct metrics m;
		unsigned status = 0;
		char *body;

		health_metrics(&m, c);
		body = metrics_healthz(&m, (time_t)NOW, NOW, &status);
		assert_non_null(body);
		if (status != c->healthz || strcmp(body, c->healthz_body) != 0)
			fail_msg("%s: /healthz %u '%s', want %u '%s'", c->name, status, body,
				 c->healthz, c->healthz_body);
		free(body);
		body = metrics_readyz(&m, (time_t)NOW, NOW, &status);
		assert_non_null(body);
		if (status != c->readyz || strcmp(body, c->readyz_body) != 0)
			fail_msg("%s: /readyz %u '%s', want %u '%s'", c->name, status, body,
				 c->readyz, c->readyz_body);
		free(body);
	}
}

/* The second of nextUpdate (or notAfter) itself is still valid, as lib/revocation.c has it. */
static void test_health_boundaries(void **state)
{
	struct metrics m;
	unsigned status;
	char *body;

	(void)state;
	arm(0, false);
	metrics_init(&m, "server");
	atomic_store(&m.crl_next_update, NOW);
	atomic_store(&m.cert_not_after, NOW);
	atomic_store(&m.ca_not_after, NOW);
	body = metrics_readyz(&m, (time_t)NOW, NOW, &status);
	assert_int_equal(status, 200);
	assert_string_equal(body, "ready\n");
	free(body);
	body = metrics_readyz(&m, (time_t)NOW + 1, NOW + 1, &status);
	assert_int_equal(status, 503);
	free(body);
}

/* Out of memory: no body at all (the endpoint then answers 500), never a partial one. */
static void test_health_out_of_memory(void **state)
{
	struct metrics m;
	unsigned status;
	int total;

	(void)state;
	health_metrics(&m, &health_cases[sizeof(health_cases) / sizeof(health_cases[0]) - 1]);
	arm(0, false);
	free(metrics_healthz(&m, (time_t)NOW, NOW, &status));
	free(metrics_readyz(&m, (time_t)NOW, NOW, &status));
	total = atomic_load(&calls);
	for (int at = 1; at <= total; at++) {
		char *h, *r;

		arm(at, false);
		h = metrics_healthz(&m, (time_t)NOW, NOW, &status);
		r = metrics_readyz(&m, (time_t)NOW, NOW, &status);
		if (h != NULL && r != NULL)
			fail_msg("realloc call %d of %d failed, yet both bodies came back", at,
				 total);
		free(h);
		free(r);
	}
	arm(0, false);
}

/* Whichever realloc fails, the result is NULL (and nothing leaks: ASan's leak check). */
static void test_render_out_of_memory(void **state)
{
	struct metrics m;
	int total;

	(void)state;
	sample(&m);
	arm(0, false);
	free(metrics_render(&m, &(size_t){0}));
	total = atomic_load(&calls);
	assert_true(total >= 2);
	for (int at = 1; at <= total; at++) {
		size_t len = 99;
		char *text;

		arm(at, false);
		text = metrics_render(&m, &len);
		if (text != NULL)
			fail_msg("realloc call %d of %d failed, yet a text of %zu bytes came back",
				 at, total, len);
		assert_int_equal(len, 0);
	}
	arm(0, false);
}

/* GET a path from the HTTP endpoint: the whole response (status line to end). */
static char *get_path(int port, const char *path)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	struct timeval tv = {.tv_sec = 10};
	char req[200];
	char *buf = calloc(1, 1 << 16);
	size_t got = 0;
	ssize_t n;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_non_null(buf);
	assert_true(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: x\r\n\r\n", path);
	assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	while (got < (1 << 16) - 1 && (n = read(fd, buf + got, (1 << 16) - 1 - got)) > 0)
		got += (size_t)n;
	close(fd);
	return buf;
}

static char *get_metrics(int port)
{
	return get_path(port, "/metrics");
}

static void test_http_500(void **state)
{
	struct metrics m;
	struct metrics_http *h;
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	char *resp;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	(void)state;
	sample(&m);
	assert_true(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 16), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	h = metrics_http_start(fd, &m, METRICS_HTTP_CONNECTIONS);
	assert_non_null(h);

	arm(0, true);
	resp = get_metrics(ntohs(sa.sin_port));
	arm(0, false);
	if (strncmp(resp, "HTTP/1.0 500 ", 13) != 0 && strncmp(resp, "HTTP/1.1 500 ", 13) != 0)
		fail_msg("out of memory, /metrics answered: '%.200s'", resp);
	assert_null(strstr(resp, "mtls_"));
	free(resp);

	resp = get_metrics(ntohs(sa.sin_port));
	assert_true(strncmp(resp, "HTTP/1.1 200 ", 13) == 0 ||
		    strncmp(resp, "HTTP/1.0 200 ", 13) == 0);
	assert_non_null(strstr(resp, "\nmtls_connections_total{role=\"server\"} 12345\n"));
	free(resp);

	/* a stuck worker: /healthz and /readyz say 503 and name it */
	m.nworkers = 2;
	atomic_store(&m.worker_beats[0], metrics_beat_clock());
	atomic_store(&m.worker_beats[1], metrics_beat_clock() - 60);
	resp = get_path(ntohs(sa.sin_port), "/healthz");
	if (strncmp(resp + 8, " 503 ", 5) != 0 ||
	    strstr(resp, "\r\n\r\nstuck: 1 of 2 workers\n") == NULL ||
	    strstr(resp, "\nworker 1 is stuck: no heartbeat from its loop for ") == NULL)
		fail_msg("/healthz with a stuck worker: '%.300s'", resp);
	free(resp);
	resp = get_path(ntohs(sa.sin_port), "/readyz");
	if (strncmp(resp + 8, " 503 ", 5) != 0 ||
	    strstr(resp, "\r\n\r\nnot ready: worker 1 is stuck") == NULL)
		fail_msg("/readyz with a stuck worker: '%.300s'", resp);
	free(resp);
	atomic_store(&m.worker_beats[1], metrics_beat_clock());
	resp = get_path(ntohs(sa.sin_port), "/readyz");
	if (strncmp(resp + 8, " 200 ", 5) != 0 || strstr(resp, "\r\n\r\nready\n") == NULL)
		fail_msg("/readyz when fine: '%.300s'", resp);
	free(resp);
	metrics_http_stop(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_render),
		cmocka_unit_test(test_render_crl),
		cmocka_unit_test(test_render_out_of_memory),
		cmocka_unit_test(test_http_500),
		cmocka_unit_test(test_health),
		cmocka_unit_test(test_health_wall_clock_step),
		cmocka_unit_test(test_health_boundaries),
		cmocka_unit_test(test_health_out_of_memory),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
