#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"

const char *cert_path(const char *name)
{
	static char bufs[8][512];
	static int next;
	const char *dir = getenv("MTLS_TEST_CERTS");
	char *buf = bufs[next++ % 8];

	if (dir == NULL)
		fail_msg("MTLS_TEST_CERTS is not set; run through ctest");
	snprintf(buf, sizeof(bufs[0]), "%s/%s", dir, name);
	return buf;
}

void test_socketpair(int fds[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds),
			 0);
}

static bool pending(int rc)
{
	return rc == MTLS_WANT_POLLIN || rc == MTLS_WANT_POLLOUT;
}

void test_handshake_pair(struct mtls *srv, struct mtls *cli, int *srv_rc, int *cli_rc)
{
	int s = MTLS_WANT_POLLIN, c = MTLS_WANT_POLLIN;
	bool probed = false;

	for (int i = 0; i < 1000 && (pending(s) || pending(c)); i++) {
		if (pending(c))
			c = mtls_handshake(cli);
		if (pending(s))
			s = mtls_handshake(srv);
		/* a TLS 1.3 client is done before the server checked its certificate: read
		 * once so that the server's alert, if any, reaches the client */
		if (c == 0 && s == 0 && !probed) {
			char byte = 'x';
			ssize_t n;

			probed = true;
			if (mtls_write(srv, &byte, 1) != 1)
				fail_msg("server write after handshake failed: %s",
					 mtls_error(srv));
			for (int j = 0; j < 100; j++) {
				n = mtls_read(cli, &byte, 1);
				if (!pending((int)n))
					break;
				usleep(1000);
			}
			if (n != 1)
				c = -1;
		}
		if (c == 0 && s < 0 && !probed) {
			char byte;
			ssize_t n = MTLS_WANT_POLLIN;

			probed = true;
			for (int j = 0; j < 100 && pending((int)n); j++) {
				n = mtls_read(cli, &byte, 1);
				if (pending((int)n))
					usleep(1000);
			}
			c = n >= 0 ? 0 : -1;
		}
	}
	if (pending(s) || pending(c))
		fail_msg("handshake did not finish (server %d, client %d)", s, c);
	*srv_rc = s;
	*cli_rc = c;
}

char *test_slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	if (f == NULL)
		fail_msg("cannot open %s", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	buf[n] = '\0';
	if (len != NULL)
		*len = (size_t)n;
	return buf;
}
