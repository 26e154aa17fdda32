/*
 * common/service_notify.c: the messages sent to a NOTIFY_SOCKET (a datagram socket made
 * here stands for systemd), and nothing at all without one.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "service_notify.h"

struct manager {
	char dir[64];
	struct sockaddr_un sa;
	int fd;
};

static int setup(void **state)
{
	struct manager *m = calloc(1, sizeof(*m));

	assert_non_null(m);
	snprintf(m->dir, sizeof(m->dir), "/tmp/mtls-service-notify.XXXXXX");
	assert_non_null(mkdtemp(m->dir));
	m->sa.sun_family = AF_UNIX;
	snprintf(m->sa.sun_path, sizeof(m->sa.sun_path), "%s/notify", m->dir);
	m->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	assert_true(m->fd >= 0);
	assert_int_equal(bind(m->fd, (struct sockaddr *)&m->sa, sizeof(m->sa)), 0);
	setenv("NOTIFY_SOCKET", m->sa.sun_path, 1);
	*state = m;
	return 0;
}

static int teardown(void **state)
{
	struct manager *m = *state;

	unsetenv("NOTIFY_SOCKET");
	close(m->fd);
	unlink(m->sa.sun_path);
	rmdir(m->dir);
	free(m);
	return 0;
}

/* The next message (NUL-terminated in buf), or "" if none is waiting. */
static const char *next(struct manager *m, char *buf, size_t len)
{
	ssize_t n = recv(m->fd, buf, len - 1, 0);

	buf[n > 0 ? n : 0] = '\0';
	return buf;
}

static void test_ready(void **state)
{
	struct manager *m = *state;
	char buf[1024], want[128];

	assert_true(service_notify_enabled());
	assert_int_equal(service_notify_ready("listening on 127.0.0.1:1 → x"), 0);
	snprintf(want, sizeof(want), "READY=1\nMAINPID=%ld\nSTATUS=listening on 127.0.0.1:1 → x",
		 (long)getpid());
	assert_string_equal(next(m, buf, sizeof(buf)), want);
	assert_int_equal(service_notify_ready(NULL), 0);
	snprintf(want, sizeof(want), "READY=1\nMAINPID=%ld", (long)getpid());
	assert_string_equal(next(m, buf, sizeof(buf)), want);
}

/* STATUS= is one line (a newline would start another assignment), and bounded */
static void test_status_one_line(void **state)
{
	struct manager *m = *state;
	char buf[2048], long_status[1000];

	assert_int_equal(service_notify_status("failed: a\nWATCHDOG=1\r\nb"), 0);
	assert_string_equal(next(m, buf, sizeof(buf)), "STATUS=failed: a WATCHDOG=1  b");
	memset(long_status, 'x', sizeof(long_status) - 1);
	long_status[sizeof(long_status) - 1] = '\0';
	assert_int_equal(service_notify_stopping(long_status), 0);
	next(m, buf, sizeof(buf));
	assert_int_equal(strncmp(buf, "STOPPING=1\nSTATUS=x", 19), 0);
	assert_int_equal(strlen(buf), strlen("STOPPING=1\nSTATUS=") + SERVICE_NOTIFY_STATUS_MAX);
}

static void test_reloading_watchdog(void **state)
{
	struct manager *m = *state;
	char buf[256];
	unsigned long long usec;

	assert_int_equal(service_notify_reloading(), 0);
	next(m, buf, sizeof(buf));
	assert_int_equal(sscanf(buf, "RELOADING=1\nMONOTONIC_USEC=%llu", &usec), 1);
	assert_true(usec > 0);
	assert_int_equal(service_notify_watchdog(), 0);
	assert_string_equal(next(m, buf, sizeof(buf)), "WATCHDOG=1");
}

static void test_watchdog_every(void **state)
{
	char pid[32];

	(void)state;
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	assert_true(service_notify_watchdog_every() == 0);
	setenv("WATCHDOG_USEC", "4000000", 1);
	assert_true(service_notify_watchdog_every() == 2.0);
	snprintf(pid, sizeof(pid), "%ld", (long)getpid());
	setenv("WATCHDOG_PID", pid, 1);
	assert_true(service_notify_watchdog_every() == 2.0);
	/* meant for another process (the daemon's parent, a wrapper) */
	snprintf(pid, sizeof(pid), "%ld", (long)getpid() + 1);
	setenv("WATCHDOG_PID", pid, 1);
	assert_true(service_notify_watchdog_every() == 0);
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
}

/* without NOTIFY_SOCKET: nothing sent, no error */
static void test_no_manager(void **state)
{
	struct manager *m = *state;
	char buf[256];

	unsetenv("NOTIFY_SOCKET");
	assert_false(service_notify_enabled());
	assert_int_equal(service_notify_ready("x"), 0);
	assert_int_equal(service_notify_reloading(), 0);
	assert_int_equal(service_notify_status("x"), 0);
	assert_int_equal(service_notify_stopping("x"), 0);
	assert_int_equal(service_notify_watchdog(), 0);
	assert_string_equal(next(m, buf, sizeof(buf)), "");
	/* a socket nobody listens on any more: -1, for the caller to ignore */
	setenv("NOTIFY_SOCKET", "/nonexistent/notify", 1);
	assert_int_equal(service_notify_watchdog(), -1);
	setenv("NOTIFY_SOCKET", m->sa.sun_path, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_ready, setup, teardown),
		cmocka_unit_test_setup_teardown(test_status_one_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reloading_watchdog, setup, teardown),
		cmocka_unit_test_setup_teardown(test_watchdog_every, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_manager, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
