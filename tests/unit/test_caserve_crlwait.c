/*
 * The bounds of held GET /crl requests (caserve/crlwait.c): what address a request counts
 * against (an IPv6 /64, an IPv4-mapped address as IPv4), and the per-address bound with real
 * suspended libmicrohttpd connections. The test's handler takes the address a request
 * counts against from an "X-Addr" header, since loopback gives every request the same one.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <microhttpd.h>

#include "crlwait.h"

/* crlwait_key() of an address given as text. */
static const char *key_of(const char *text)
{
	static char out[64];
	struct sockaddr_in6 a6 = {.sin6_family = AF_INET6};
	struct sockaddr_in a4 = {.sin_family = AF_INET};

	if (inet_pton(AF_INET6, text, &a6.sin6_addr) == 1)
		crlwait_key((const struct sockaddr *)&a6, out, sizeof(out));
	else if (inet_pton(AF_INET, text, &a4.sin_addr) == 1)
		crlwait_key((const struct sockaddr *)&a4, out, sizeof(out));
	else
		fail_msg("not an address: %s", text);
	return out;
}

static void test_key(void **state)
{
	static const struct {
		const char *addr, *key;
	} cases[] = {
		{"192.0.2.1", "192.0.2.1"},
		{"::ffff:192.0.2.1", "192.0.2.1"},
		{"2001:db8:1:2::1", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"},
		{"2001:db8:1:3::1", "2001:db8:1:3::/64"},
		{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff::/64"},
		{"::1", "::/64"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (strcmp(key_of(cases[i].addr), cases[i].key) != 0)
			fail_msg("%s counts against \"%s\", expected \"%s\"", cases[i].addr,
				 key_of(cases[i].addr), cases[i].key);
	{
		char out[64] = "x";

		crlwait_key(NULL, out, sizeof(out));
		assert_string_equal(out, "");
	}
}

/* ---- the per-address bound, with a real daemon ---- */

struct req {
	struct crlwait_entry e;
	bool held;
};

static struct crlwait *W;

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_len, void **req_cls)
{
	struct req *rq = *req_cls;
	const char *addr, *answer;
	struct MHD_Response *resp;
	enum MHD_Result ret;

	(void)cls, (void)url, (void)method, (void)version, (void)upload, (void)upload_len;
	if (rq == NULL) {
		if ((rq = calloc(1, sizeof(*rq))) == NULL)
			return MHD_NO;
		*req_cls = rq;
		return MHD_YES;
	}
	if (!rq->held) {
		addr = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Addr");
		snprintf(rq->e.ip, sizeof(rq->e.ip), "%s", addr != NULL ? key_of(addr) : "");
		rq->e.deadline_ms = crlwait_now_ms() + 600000;
		if (crlwait_hold(W, &rq->e, conn) == 0) {
			rq->held = true;
			return MHD_YES;
		}
		answer = "answered";
	} else {
		answer = "woken";
	}
	resp = MHD_create_response_from_buffer(strlen(answer), (void *)(uintptr_t)answer,
					       MHD_RESPMEM_PERSISTENT);
	ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
			 enum MHD_RequestTerminationCode toe)
{
	(void)cls, (void)conn, (void)toe;
	if (*req_cls != NULL) {
		crlwait_forget(W, &((struct req *)*req_cls)->e);
		free(*req_cls);
		*req_cls = NULL;
	}
}

/* Send a GET from (as the handler is told) addr on a new connection to port. */
static int send_get(unsigned port, const char *addr)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	char req[256];
	int n = snprintf(req, sizeof(req),
			 "GET /crl HTTP/1.1\r\nHost: t\r\nX-Addr: %s\r\nConnection: close\r\n\r\n",
			 addr);

	assert_true(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(write(fd, req, (size_t)n), n);
	return fd;
}

/* The whole answer on fd (the server closes after it). */
static void read_answer(int fd, char *out, size_t len)
{
	size_t got = 0;
	ssize_t n;

	while (got + 1 < len && (n = read(fd, out + got, len - 1 - got)) > 0)
		got += (size_t)n;
	out[got] = '\0';
}

/* Wait until n requests are held (the daemon's thread holds them one by one). */
static void wait_held(size_t n)
{
	struct timespec pause = {0, 5 * 1000 * 1000};

	for (int i = 0; i < 12000 && crlwait_held(W) != n; i++)
		nanosleep(&pause, NULL);
	assert_int_equal(crlwait_held(W), n);
}

/* Wait until fd has an answer to read; fail if the request is held instead. */
static void answered_or_held(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};

	while (poll(&p, 1, 10) == 0)
		if (crlwait_held(W) > CRLWAIT_PER_IP)
			fail_msg("held past CRLWAIT_PER_IP requests from one /64");
}

static void test_per_address_bound(void **state)
{
	struct MHD_Daemon *d;
	const union MHD_DaemonInfo *info;
	int fds[CRLWAIT_PER_IP + 3];
	char addr[64], answer[1024];
	unsigned port;

	(void)state;
	W = crlwait_new();
	assert_non_null(W);
	d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
				     MHD_ALLOW_SUSPEND_RESUME,
			     0, NULL, NULL, on_request, NULL, MHD_OPTION_CONNECTION_LIMIT,
			     (unsigned)(CRLWAIT_PER_IP + 16), MHD_OPTION_NOTIFY_COMPLETED,
			     on_completed, NULL, MHD_OPTION_END);
	assert_non_null(d);
	info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	assert_non_null(info);
	port = info->port;
	/* CRLWAIT_PER_IP hosts of one /64: held, every one */
	for (int i = 0; i < CRLWAIT_PER_IP; i++) {
		snprintf(addr, sizeof(addr), "2001:db8:1:2:%x::%x", i, i + 1);
		fds[i] = send_get(port, addr);
		wait_held((size_t)i + 1);
	}
	/* one more host of that /64: answered at once, not held */
	fds[CRLWAIT_PER_IP] = send_get(port, "2001:db8:1:2:ffff::1");
	answered_or_held(fds[CRLWAIT_PER_IP]);
	read_answer(fds[CRLWAIT_PER_IP], answer, sizeof(answer));
	assert_non_null(strstr(answer, "answered"));
	assert_int_equal(crlwait_held(W), CRLWAIT_PER_IP);
	/* the next /64 and an IPv4 address have their own room */
	fds[CRLWAIT_PER_IP + 1] = send_get(port, "2001:db8:1:3::1");
	wait_held(CRLWAIT_PER_IP + 1);
	fds[CRLWAIT_PER_IP + 2] = send_get(port, "::ffff:192.0.2.1");
	wait_held(CRLWAIT_PER_IP + 2);
	/* a change wakes them all */
	crlwait_wake(W);
	for (int i = 0; i < CRLWAIT_PER_IP + 3; i++) {
		if (i != CRLWAIT_PER_IP) {
			read_answer(fds[i], answer, sizeof(answer));
			assert_non_null(strstr(answer, "woken"));
		}
		close(fds[i]);
	}
	crlwait_stop(W);
	assert_true(crlwait_drained(W, 10000));
	MHD_stop_daemon(d);
	crlwait_free(W);
	W = NULL;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key),
		cmocka_unit_test(test_per_address_bound),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
