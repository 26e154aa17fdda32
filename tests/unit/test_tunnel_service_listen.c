/*
 * common/service_listen.c: the sockets systemd passes (LISTEN_FDS, LISTEN_PID,
 * LISTEN_FDNAMES), set up here as systemd would (descriptors from 3 on), and the check of a
 * passed socket against the address the daemon was told to listen on.
 */
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
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

#include "service_listen.h"

static const char *const names[2] = {"listen", "metrics"};

/* A listening TCP socket on 127.0.0.1 (port 0: any); its port in *port. */
static int tcp_listener(unsigned *port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 4), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	*port = ntohs(sa.sin_port);
	return fd;
}

static struct sockaddr_in inet(const char *ip4, unsigned port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};

	assert_int_equal(inet_pton(AF_INET, ip4, &sa.sin_addr), 1);
	return sa;
}

/* Pass n listening sockets as systemd does: at descriptors 3.., with the variables set. */
static void pass(int n, const char *fdnames, pid_t pid)
{
	char buf[32];

	int parked[4];

	/* nothing of the test's own may sit at 3.. (main() moved what was there) */
	for (int i = 0; i < n; i++)
		assert_int_equal(fcntl(3 + i, F_GETFD), -1);
	/* made first, kept out of the way (a new socket takes the lowest free number) */
	for (int i = 0; i < n; i++) {
		unsigned port;
		int fd = tcp_listener(&port);

		parked[i] = fcntl(fd, F_DUPFD, 64);
		assert_true(parked[i] >= 64);
		close(fd);
	}
	for (int i = 0; i < n; i++) {
		assert_int_equal(dup2(parked[i], 3 + i), 3 + i);
		close(parked[i]);
	}
	snprintf(buf, sizeof(buf), "%d", n);
	setenv("LISTEN_FDS", buf, 1);
	snprintf(buf, sizeof(buf), "%ld", (long)pid);
	setenv("LISTEN_PID", buf, 1);
	if (fdnames != NULL)
		setenv("LISTEN_FDNAMES", fdnames, 1);
	else
		unsetenv("LISTEN_FDNAMES");
}

static void close_passed(int n)
{
	for (int i = 0; i < n; i++)
		close(3 + i);
}

static void test_none(void **state)
{
	int fds[2] = {7, 7};
	char err[300] = "";

	(void)state;
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_PID");
	assert_int_equal(service_listen_take(names, fds, 2, err, sizeof(err)), 0);
	assert_int_equal(fds[0], -1);
	assert_int_equal(fds[1], -1);
	assert_string_equal(err, "");
}

/* sockets meant for another process (LISTEN_PID): not taken */
static void test_other_pid(void **state)
{
	int fds[2];
	char err[300] = "";

	(void)state;
	pass(1, NULL, getpid() + 1);
	assert_int_equal(service_listen_take(names, fds, 2, err, sizeof(err)), 0);
	assert_int_equal(fds[0], -1);
	close_passed(1);
}

/* one socket, not named: the main one, non-blocking and close-on-exec, and the variables
 * gone (nothing started later takes it for its own) */
static void test_one_unnamed(void **state)
{
	int fds[2];
	char err[300] = "";

	(void)state;
	pass(1, NULL, getpid());
	assert_int_equal(fcntl(3, F_GETFL) & O_NONBLOCK, 0);
	assert_int_equal(service_listen_take(names, fds, 2, err, sizeof(err)), 1);
	assert_int_equal(fds[0], 3);
	assert_int_equal(fds[1], -1);
	assert_true(fcntl(3, F_GETFL) & O_NONBLOCK);
	assert_true(fcntl(3, F_GETFD) & FD_CLOEXEC);
	assert_null(getenv("LISTEN_FDS"));
	assert_null(getenv("LISTEN_PID"));
	close_passed(1);
}

/* two, named in another order than names */
static void test_two_named(void **state)
{
	int fds[2];
	char err[300] = "";

	(void)state;
	pass(2, "metrics:listen", getpid());
	assert_int_equal(service_listen_take(names, fds, 2, err, sizeof(err)), 2);
	assert_int_equal(fds[0], 4);
	assert_int_equal(fds[1], 3);
	close_passed(2);
}

/* a name nobody asked for, or one name twice: refused, and every passed socket closed */
static void test_refused(void **state)
{
	static const struct {
		const char *fdnames, *says;
	} t[] = {
		{"listen:other", "socket 2 is named 'other'"},
		{"listen:listen", "named 'listen' twice"},
		{"unknown:unknown", "socket 1 is named 'unknown'"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		int fds[2];
		char err[300] = "";

		pass(2, t[i].fdnames, getpid());
		assert_int_equal(service_listen_take(names, fds, 2, err, sizeof(err)), -1);
		if (strstr(err, t[i].says) == NULL || strstr(err, "FileDescriptorName=") == NULL)
			fail_msg("%s: '%s'", t[i].fdnames, err);
		assert_int_equal(fds[0], -1);
		assert_int_equal(fds[1], -1);
		assert_int_equal(fcntl(3, F_GETFD), -1);
		assert_int_equal(fcntl(4, F_GETFD), -1);
	}
}

static void test_matches_inet(void **state)
{
	unsigned port;
	int fd = tcp_listener(&port);
	struct sockaddr_in same = inet("127.0.0.1", port), any_port = inet("127.0.0.1", 0);
	struct sockaddr_in other_ip = inet("127.0.0.2", port),
			   other_port = inet("127.0.0.1", port + 1);
	struct sockaddr_in wild = inet("0.0.0.0", port), wild_other = inet("0.0.0.0", port + 1);
	struct sockaddr_un un = {.sun_family = AF_UNIX, .sun_path = "/run/x.sock"};
	int plain = socket(AF_INET, SOCK_STREAM, 0);

	(void)state;
	assert_int_equal(service_listen_matches(fd, (struct sockaddr *)&same, sizeof(same)), 1);
	assert_int_equal(service_listen_matches(fd, (struct sockaddr *)&any_port, sizeof(same)), 1);
	assert_int_equal(service_listen_matches(fd, (struct sockaddr *)&other_ip, sizeof(same)), 0);
	assert_int_equal(service_listen_matches(fd, (struct sockaddr *)&other_port, sizeof(same)),
			 0);
	/* a wildcard --listen compares by port: ListenStream=PORT is [::]:PORT */
	assert_int_equal(service_listen_matches(fd, (struct sockaddr *)&wild, sizeof(same)), 1);
	assert_int_equal(service_listen_matches(fd, (struct sockaddr *)&wild_other, sizeof(same)),
			 0);
	assert_int_equal(service_listen_matches(fd, (struct sockaddr *)&un, sizeof(un)), 0);
	/* not listening */
	assert_int_equal(service_listen_matches(plain, (struct sockaddr *)&any_port, sizeof(same)),
			 0);
	close(plain);
	close(fd);
}

static void test_matches_unix(void **state)
{
	char dir[] = "/tmp/mtls-service-listen.XXXXXX";
	struct sockaddr_un un = {.sun_family = AF_UNIX}, other = {.sun_family = AF_UNIX};
	struct sockaddr_in tcp = inet("127.0.0.1", 0);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(un.sun_path, sizeof(un.sun_path), "%s/a.sock", dir);
	snprintf(other.sun_path, sizeof(other.sun_path), "%s/b.sock", dir);
	assert_int_equal(bind(fd, (struct sockaddr *)&un, sizeof(un)), 0);
	assert_int_equal(listen(fd, 4), 0);
	assert_int_equal(service_listen_matches(fd, (struct sockaddr *)&un, sizeof(un)), 1);
	assert_int_equal(service_listen_matches(fd, (struct sockaddr *)&other, sizeof(other)), 0);
	assert_int_equal(service_listen_matches(fd, (struct sockaddr *)&tcp, sizeof(tcp)), 0);
	close(fd);
	unlink(un.sun_path);
	rmdir(dir);
}

int main(void)
{
	/* systemd's numbers (3..) free for the tests: what the runner left open there (ctest
	 * does) moves out of the way, still open */
	for (int fd = 3; fd < 3 + 4; fd++)
		if (fcntl(fd, F_GETFD) != -1 && fcntl(fd, F_DUPFD_CLOEXEC, 100) >= 0)
			close(fd);

	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_none),	     cmocka_unit_test(test_other_pid),
		cmocka_unit_test(test_one_unnamed),  cmocka_unit_test(test_two_named),
		cmocka_unit_test(test_refused),	     cmocka_unit_test(test_matches_inet),
		cmocka_unit_test(test_matches_unix),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
