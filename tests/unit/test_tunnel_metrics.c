/*
 * The metrics exposition (tunnel/metrics.c) when memory runs out: metrics_render() returns
 * the whole text or NULL, never a partial or garbled one, and /metrics answers 500.
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
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
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
	assert_non_null(strstr(text, "\nmtls_crl_next_update_seconds 0\n"));
	free(text);
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

/* GET /metrics from the HTTP endpoint: the whole response (status line to end). */
static char *get_metrics(int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	struct timeval tv = {.tv_sec = 10};
	static const char req[] = "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n";
	char *buf = calloc(1, 1 << 16);
	size_t got = 0;
	ssize_t n;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_non_null(buf);
	assert_true(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(write(fd, req, sizeof(req) - 1), (ssize_t)sizeof(req) - 1);
	while (got < (1 << 16) - 1 && (n = read(fd, buf + got, (1 << 16) - 1 - got)) > 0)
		got += (size_t)n;
	close(fd);
	return buf;
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
	h = metrics_http_start(fd, &m);
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
	metrics_http_stop(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_render),
		cmocka_unit_test(test_render_out_of_memory),
		cmocka_unit_test(test_http_500),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
