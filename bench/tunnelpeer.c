/*
 * tunnelpeer: the peers of an mtls server that the fairness, descriptor and linger tests
 * need. Plain OpenSSL (not libmtls), like loadgen.
 *
 *   tunnelpeer upload --connect HOST:PORT TLS [--seconds S]
 *       one connection streaming 16 KiB writes to an echo target, the echo read back in
 *       the same poll loop; prints "upload sent=N received=N seconds=S mb_per_s=X".
 *   tunnelpeer probe --connect HOST:PORT TLS [--seconds S] [--size B] [--windows W]
 *       one connection, B-byte ping-pong with an echo target for S seconds (the handshake
 *       included); prints round trips, the longest time without a completed round trip
 *       (from the start, so a starved handshake counts), and p50/p99 per window.
 *   tunnelpeer fairness --connect HOST:PORT TLS [--seconds S] [--size B] [--windows W]
 *       both at once from one poll loop (so that the client's own scheduling is fair): the
 *       upload alone for 0.5 s, then the probe beside it for S seconds; per window, the
 *       probe's round trips and p99 and the MB the upload moved meanwhile.
 *   tunnelpeer idle --connect HOST:PORT --connections N [--seconds S]
 *       N TCP connections that send nothing; prints "held N" once they are all made and
 *       holds them S seconds (or until killed).
 *   tunnelpeer flood --connect HOST:PORT TLS [--bytes B] [--hold S] [--reset 1]
 *       sends up to B bytes (until the peer stops taking them for 0.5 s), prints
 *       "flood sent=N", holds the connection S seconds (default 0), then close_notify and
 *       close (with --reset 1, a reset: a FIN would wait behind the unsent bytes).
 *   tunnelpeer halfclose --connect HOST:PORT TLS [--bytes B] [--seconds S]
 *       sends up to B bytes (default 8 MiB; less if the peer stops taking them for 0.5 s:
 *       its socket's send buffer is small, so little waits in it), then ends its side while
 *       still reading: TLS close_notify and a TCP FIN (shutdown SHUT_WR), as an HTTP/1.0
 *       client or `nc -N` does; reads the answer until EOF and prints "halfclose sent=N" and
 *       "halfclose sent=N answer=TEXT" (answer=none, exit 1, if none came).
 *   tunnelpeer slow-backend [--listen 127.0.0.1:0|unix:PATH] [--hold S] [--bytes B]
 *       a plaintext target, slow but alive: for --hold seconds it reads B bytes (0: none)
 *       after each 3 seconds of pause, then everything until EOF, and answers "received=N" (or
 * prints "conn reset ..."); one connection at a time. tunnelpeer stall-backend [--listen
 * 127.0.0.1:0] a plaintext target that accepts and never reads; prints "listening on HOST:PORT",
 *       "conn open" per connection and "conn closed" when the other end has closed it.
 *
 * TLS: --cert FILE --key FILE --ca FILE --name SERVERNAME, or --plain 1 for plaintext (to an
 * mtls connector). Every loop is bounded by --seconds (default 5). Test and benchmark code,
 * not part of mtls.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "clock.h"

static struct {
	const char *mode, *addr, *cert, *key, *ca, *name;
	double seconds, hold;
	long long bytes;
	int size, windows, connections, plain, reset;
} o = {.addr = "127.0.0.1:0", .seconds = 5, .bytes = 8 << 20, .size = 64, .windows = 3};

static struct sockaddr_in target;
static bool small_sndbuf; /* little left unsent in our kernel when the peer stops reading */
static SSL_CTX *ctx;

static void die(const char *what)
{
	fprintf(stderr, "tunnelpeer: %s\n", what);
	ERR_print_errors_fp(stderr);
	exit(1);
}

static void parse_addr(const char *s)
{
	char host[64];
	const char *colon = strrchr(s, ':');

	if (colon == NULL || (size_t)(colon - s) >= sizeof(host))
		die("addresses are IPv4 HOST:PORT");
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	target.sin_family = AF_INET;
	target.sin_port = htons((uint16_t)atoi(colon + 1));
	if (inet_pton(AF_INET, host, &target.sin_addr) != 1)
		die("addresses are IPv4 HOST:PORT");
}

static int dial(bool nonblocking)
{
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);

	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (small_sndbuf) {
		int size = 16384;

		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
	}
	if (connect(fd, (struct sockaddr *)&target, sizeof(target)) != 0 &&
	    !(nonblocking && errno == EINPROGRESS)) {
		close(fd);
		return -1;
	}
	return fd;
}

/* A TLS connection, handshake done, its socket then switched to non-blocking (NULL with
 * --plain: plaintext on *fdp). */
static SSL *tls_open(int *fdp)
{
	int fd = dial(false);
	SSL *ssl;

	if (fd < 0)
		die("cannot connect");
	if (o.plain) {
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
		*fdp = fd;
		return NULL;
	}
	ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	/* SSL_set_tlsext_host_name() casts away const (clang: -Wcast-qual); OpenSSL copies it */
	SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
		 (void *)(uintptr_t)o.name);
	SSL_set1_host(ssl, o.name);
	if (SSL_connect(ssl) != 1)
		die("TLS handshake failed");
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	*fdp = fd;
	return ssl;
}

/* Non-blocking I/O on either: > 0 bytes; 0 would block (*want says for what); -1 failed or
 * ended. */
static int io(SSL *ssl, int fd, bool writing, void *buf, int len, short *want)
{
	int n, err;

	if (ssl == NULL) {
		n = writing ? (int)send(fd, buf, (size_t)len, MSG_NOSIGNAL)
			    : (int)recv(fd, buf, (size_t)len, 0);
		*want = writing ? POLLOUT : POLLIN;
		if (n > 0)
			return n;
		return n < 0 && (errno == EAGAIN || errno == EINTR) ? 0 : -1;
	}
	n = writing ? SSL_write(ssl, buf, len) : SSL_read(ssl, buf, len);
	if (n > 0)
		return n;
	err = SSL_get_error(ssl, n);
	*want = err == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN;
	return err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE ? 0 : -1;
}

static void wait_until(int fd, short want, double deadline)
{
	struct pollfd p = {.fd = fd, .events = want};
	double left = deadline - now();

	if (left > 0)
		poll(&p, 1, (int)(left * 1000) + 1);
}

static void setup_tls(void)
{
	if (o.plain)
		return;
	if (o.name == NULL || o.ca == NULL)
		die("give --name and --ca (and --cert/--key)");
	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL)
		die("SSL_CTX_new");
	if (o.cert != NULL && (SSL_CTX_use_certificate_chain_file(ctx, o.cert) != 1 ||
			       SSL_CTX_use_PrivateKey_file(ctx, o.key, SSL_FILETYPE_PEM) != 1))
		die("cannot load --cert/--key");
	if (SSL_CTX_load_verify_locations(ctx, o.ca, NULL) != 1)
		die("cannot load --ca");
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
}

static int upload(void)
{
	static char out[16384], in[65536];
	unsigned long long sent = 0, received = 0;
	int fd;
	SSL *ssl = tls_open(&fd);
	double t0 = now(), deadline = t0 + o.seconds;

	memset(out, 'u', sizeof(out));
	while (now() < deadline) {
		struct pollfd p = {.fd = fd, .events = POLLIN | POLLOUT};
		short want;
		int n;

		/* read everything the echo sent, then write one chunk */
		while ((n = io(ssl, fd, false, in, sizeof(in), &want)) > 0)
			received += (unsigned long long)n;
		if (n < 0)
			die("upload: read failed");
		n = io(ssl, fd, true, out, sizeof(out), &want);
		if (n > 0) {
			sent += (unsigned long long)n;
			continue;
		}
		if (n < 0)
			die("upload: write failed");
		poll(&p, 1, 100);
	}
	printf("upload sent=%llu received=%llu seconds=%.2f mb_per_s=%.1f\n", sent, received,
	       now() - t0, (double)sent / (now() - t0) / 1e6);
	SSL_free(ssl);
	close(fd);
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double q)
{
	if (n == 0)
		return 0;
	qsort(v, n, sizeof(*v), cmp_double);
	return v[(size_t)((double)(n - 1) * q)];
}

static int probe(void)
{
	double t0 = now(), deadline = t0 + o.seconds, last, max_gap, handshake;
	size_t cap = 1 << 16, n = 0;
	double *at = malloc(cap * sizeof(double)), *rtt = malloc(cap * sizeof(double));
	char *buf = calloc(1, (size_t)o.size);
	int fd;
	SSL *ssl = tls_open(&fd);

	if (at == NULL || rtt == NULL || buf == NULL)
		die("out of memory");
	last = now();
	handshake = last - t0;
	max_gap = handshake;
	while (now() < deadline && n < cap) {
		double start = now();
		int done = 0, rc;
		short want;

		while ((rc = io(ssl, fd, true, buf, o.size, &want)) == 0 && now() < deadline)
			wait_until(fd, want, deadline);
		while (rc > 0 && done < o.size && now() < deadline) {
			int r = io(ssl, fd, false, buf + done, o.size - done, &want);

			if (r < 0)
				die("probe: the connection failed");
			if (r > 0)
				done += r;
			else
				wait_until(fd, want, deadline);
		}
		if (rc < 0)
			die("probe: the connection failed");
		if (done < o.size)
			break;
		at[n] = now();
		rtt[n] = at[n] - start;
		if (at[n] - last > max_gap)
			max_gap = at[n] - last;
		last = at[n++];
	}
	if (deadline - last > max_gap && now() >= deadline)
		max_gap = deadline - last;
	printf("probe round_trips=%zu handshake_ms=%.1f max_gap_ms=%.1f", n, handshake * 1e3,
	       max_gap * 1e3);
	for (int w = 0; w < o.windows; w++) {
		double from = t0 + o.seconds * w / o.windows,
		       to = t0 + o.seconds * (w + 1) / o.windows;
		double *v = malloc((n + 1) * sizeof(double));
		size_t k = 0;

		for (size_t i = 0; i < n; i++)
			if (at[i] >= from && at[i] < to)
				v[k++] = rtt[i];
		printf(" w%d_n=%zu w%d_p50_ms=%.2f w%d_p99_ms=%.2f", w + 1, k, w + 1,
		       pct(v, k, 0.5) * 1e3, w + 1, pct(v, k, 0.99) * 1e3);
		free(v);
	}
	printf("\n");
	SSL_free(ssl);
	close(fd);
	free(at);
	free(rtt);
	free(buf);
	return 0;
}

/* One budget of the upload: take the echo that came back, send one chunk. Returns the bytes
 * sent; *events what to poll for when it moved nothing. */
static long long upload_step(SSL *ssl, int fd, short *events)
{
	static char out[16384], in[65536];
	short want = 0;
	int n;

	memset(out, 'u', sizeof(out));
	*events = 0;
	for (int i = 0; i < 4 && (n = io(ssl, fd, false, in, sizeof(in), &want)) > 0; i++)
		;
	if (n < 0)
		die("upload: read failed");
	*events |= want;
	n = io(ssl, fd, true, out, sizeof(out), &want);
	if (n < 0)
		die("upload: write failed");
	if (n == 0)
		*events |= want;
	return n;
}

static int fairness(void)
{
	enum { SEND, RECV } state = SEND;
	int ufd, pfd, done = 0, w;
	SSL *up = tls_open(&ufd), *pr;
	double t0, deadline, start = 0, *rtt[100] = {0};
	size_t n[100] = {0}, cap = 1 << 16;
	long long bytes[100] = {0}, total = 0;
	char *buf = calloc(1, (size_t)o.size);
	short uev = 0, pev = 0;

	t0 = now() + 0.5;
	while (now() < t0)
		if (upload_step(up, ufd, &uev) == 0)
			wait_until(ufd, uev, t0);
	pr = tls_open(&pfd);
	t0 = now();
	deadline = t0 + o.seconds;
	for (w = 0; w < o.windows; w++)
		if ((rtt[w] = malloc(cap * sizeof(double))) == NULL)
			die("out of memory");
	while ((w = (int)((now() - t0) / o.seconds * o.windows)) < o.windows) {
		long long sent = upload_step(up, ufd, &uev);
		short want;
		int r;

		bytes[w] += sent;
		total += sent;
		if (state == SEND) {
			r = io(pr, pfd, true, buf, o.size, &want);
			if (r > 0) {
				start = now();
				state = RECV;
				done = 0;
			}
		} else {
			r = io(pr, pfd, false, buf + done, o.size - done, &want);
			if (r > 0 && (done += r) == o.size) {
				if (n[w] < cap)
					rtt[w][n[w]++] = now() - start;
				state = SEND;
			}
		}
		if (r < 0)
			die("probe: the connection failed");
		pev = r == 0 ? want : 0;
		if (sent == 0 && r == 0) {
			struct pollfd p[2] = {{.fd = ufd, .events = uev},
					      {.fd = pfd, .events = pev}};

			poll(p, 2, (int)((deadline - now()) * 1000) + 1);
		}
	}
	printf("fairness upload_mb=%.1f", (double)total / 1e6);
	for (w = 0; w < o.windows; w++) {
		printf(" w%d_n=%zu w%d_mb=%.1f w%d_p99_ms=%.2f", w + 1, n[w], w + 1,
		       (double)bytes[w] / 1e6, w + 1, pct(rtt[w], n[w], 0.99) * 1e3);
		free(rtt[w]);
	}
	printf("\n");
	SSL_free(up);
	SSL_free(pr);
	close(ufd);
	close(pfd);
	free(buf);
	return 0;
}

static int idle(void)
{
	int held = 0;
	struct rlimit rl;

	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	for (int i = 0; i < o.connections; i++)
		if (dial(true) >= 0)
			held++;
	printf("held %d\n", held);
	fflush(stdout);
	struct timespec ts = {(time_t)o.seconds, 0};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
	return 0;
}

static int flood(void)
{
	static char out[16384];
	long long sent = 0;
	int fd;
	SSL *ssl = tls_open(&fd);
	double stuck_since = now(), deadline = now() + o.seconds;

	memset(out, 'f', sizeof(out));
	while (sent < o.bytes && now() - stuck_since < 0.5 && now() < deadline) {
		short want;
		int n = io(ssl, fd, true, out, (int)sizeof(out), &want);

		if (n < 0)
			die("flood: the connection failed");
		if (n > 0) {
			sent += n;
			stuck_since = now();
		} else {
			wait_until(fd, want, stuck_since + 0.5);
		}
	}
	printf("flood sent=%lld\n", sent);
	fflush(stdout);
	if (o.hold > 0) {
		struct timespec ts = {(time_t)o.hold,
				      (long)((o.hold - (double)(time_t)o.hold) * 1e9)};

		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
	}
	/* the close_notify may not fit either: the close that follows is what matters */
	if (ssl != NULL)
		SSL_shutdown(ssl);
	if (o.reset) {
		struct linger abort = {.l_onoff = 1, .l_linger = 0};

		setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort, sizeof(abort));
	}
	SSL_free(ssl);
	close(fd);
	return 0;
}

static int halfclose(void)
{
	static char out[16384];
	char answer[256];
	size_t got = 0;
	long long sent = 0;
	int fd;
	SSL *ssl;
	double deadline = now() + o.seconds, stuck_since = now();
	short want;
	int n = 0, len = 0;

	small_sndbuf = true;
	ssl = tls_open(&fd);
	memset(out, 'h', sizeof(out));
	while (sent < o.bytes && now() < deadline && now() - stuck_since < 0.5) {
		len = o.bytes - sent < (long long)sizeof(out) ? (int)(o.bytes - sent)
							      : (int)sizeof(out);
		if ((n = io(ssl, fd, true, out, len, &want)) < 0)
			die("halfclose: the connection failed while sending");
		if (n > 0) {
			sent += n;
			stuck_since = now();
		} else {
			wait_until(fd, want, stuck_since + 0.5);
		}
	}
	/* a record OpenSSL has begun to send is finished first (retried with the same bytes) */
	while (ssl != NULL && sent < o.bytes && now() < deadline &&
	       (n = io(ssl, fd, true, out, len, &want)) == 0)
		wait_until(fd, want, deadline);
	if (ssl != NULL && sent < o.bytes && n > 0)
		sent += n;
	printf("halfclose sent=%lld\n", sent);
	fflush(stdout);
	if (ssl != NULL) /* our close_notify; theirs is read below */
		while ((n = SSL_shutdown(ssl)) < 0 && now() < deadline) {
			if (SSL_get_error(ssl, n) != SSL_ERROR_WANT_WRITE)
				die("halfclose: close_notify failed");
			wait_until(fd, POLLOUT, deadline);
		}
	shutdown(fd, SHUT_WR);
	while (got < sizeof(answer) - 1 && now() < deadline) {
		if ((n = io(ssl, fd, false, answer + got, (int)(sizeof(answer) - 1 - got), &want)) <
		    0)
			break;
		if (n > 0)
			got += (size_t)n;
		else
			wait_until(fd, want, deadline);
	}
	answer[got] = '\0';
	answer[strcspn(answer, "\r\n")] = '\0';
	printf("halfclose sent=%lld answer=%s\n", sent, got > 0 ? answer : "none");
	SSL_free(ssl);
	close(fd);
	return got > 0 ? 0 : 1;
}

static int listen_on(void)
{
	socklen_t len = sizeof(target);
	int one = 1, fd;

	if (strncmp(o.addr, "unix:", 5) == 0) {
		struct sockaddr_un un = {.sun_family = AF_UNIX};

		if (strlen(o.addr + 5) >= sizeof(un.sun_path))
			die("unix socket path too long");
		strcpy(un.sun_path, o.addr + 5);
		unlink(un.sun_path);
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (bind(fd, (struct sockaddr *)&un, sizeof(un)) != 0 || listen(fd, 64) != 0)
			die("cannot listen");
		printf("listening on %s\n", o.addr);
		fflush(stdout);
		return fd;
	}
	parse_addr(o.addr);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&target, sizeof(target)) != 0 || listen(fd, 64) != 0 ||
	    getsockname(fd, (struct sockaddr *)&target, &len) != 0)
		die("cannot listen");
	printf("listening on %s:%u\n", inet_ntoa(target.sin_addr), ntohs(target.sin_port));
	fflush(stdout);
	return fd;
}

static int slow_backend(void)
{
	static char in[65536];
	int lfd = listen_on();
	double deadline = now() + o.seconds;

	while (now() < deadline) {
		struct pollfd p = {.fd = lfd, .events = POLLIN};
		long long received = 0;
		double fast_at;
		ssize_t n = 1;
		int fd;

		if (poll(&p, 1, 100) <= 0 || (fd = accept(lfd, NULL, NULL)) < 0)
			continue;
		printf("conn open\n");
		fflush(stdout);
		fast_at = now() + o.hold;
		/* B bytes (or for 0.5 s) at a time, with pauses longer than the tunnel's
		 * handshake timeout */
		while (n > 0 && now() < fast_at) {
			double burst_end;
			struct timespec ts = {3, 0};

			if (fast_at - now() < 3)
				ts = (struct timespec){0, (long)((fast_at - now()) * 1e9)};
			nanosleep(&ts, NULL);
			burst_end = now() + 0.5;

			for (long long left = o.bytes; left > 0 && now() < burst_end;) {
				struct pollfd r = {.fd = fd, .events = POLLIN};

				if (poll(&r, 1, 50) <= 0)
					continue;
				n = recv(fd, in,
					 left < (long long)sizeof(in) ? (size_t)left : sizeof(in),
					 MSG_DONTWAIT);
				if (n <= 0)
					break;
				received += n;
				left -= n;
			}
			if (n < 0 && errno == EAGAIN)
				n = 1;
		}
		while (n > 0 && (n = recv(fd, in, sizeof(in), 0)) > 0)
			received += n;
		if (n < 0) {
			printf("conn reset after %lld bytes\n", received);
		} else {
			n = snprintf(in, sizeof(in), "received=%lld\n", received);
			send(fd, in, (size_t)n, MSG_NOSIGNAL);
			printf("conn answered received=%lld\n", received);
		}
		fflush(stdout);
		close(fd);
	}
	return 0;
}

static int stall_backend(void)
{
	struct pollfd p[256];
	socklen_t len = sizeof(target);
	int one = 1, n = 1;
	double deadline = now() + o.seconds;

	parse_addr(o.addr);
	p[0].fd = socket(AF_INET, SOCK_STREAM, 0);
	p[0].events = POLLIN;
	setsockopt(p[0].fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(p[0].fd, (struct sockaddr *)&target, sizeof(target)) != 0 ||
	    listen(p[0].fd, 64) != 0 || getsockname(p[0].fd, (struct sockaddr *)&target, &len) != 0)
		die("cannot listen");
	printf("listening on %s:%u\n", inet_ntoa(target.sin_addr), ntohs(target.sin_port));
	fflush(stdout);
	while (now() < deadline) {
		if (poll(p, (nfds_t)n, 100) <= 0)
			continue;
		if ((p[0].revents & POLLIN) && n < 256) {
			p[n].fd = accept(p[0].fd, NULL, NULL);
			p[n].events = POLLRDHUP;
			p[n].revents =
				0; /* not polled yet: the loop below must not see stack bytes */
			if (p[n].fd >= 0) {
				n++;
				printf("conn open\n");
			}
		}
		for (int i = 1; i < n; i++)
			if (p[i].fd >= 0 && (p[i].revents & (POLLRDHUP | POLLHUP | POLLERR))) {
				printf("conn closed\n");
				close(p[i].fd);
				p[i].fd = -1; /* poll() skips it */
			}
		fflush(stdout);
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: tunnelpeer MODE ... (modes and options: the comment in "
		    "bench/tunnelpeer.c)");
	o.mode = argv[1];
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (v == NULL)
			die("every option takes a value");
		i++;
		if (strcmp(a, "--connect") == 0 || strcmp(a, "--listen") == 0)
			o.addr = v;
		else if (strcmp(a, "--cert") == 0)
			o.cert = v;
		else if (strcmp(a, "--key") == 0)
			o.key = v;
		else if (strcmp(a, "--ca") == 0)
			o.ca = v;
		else if (strcmp(a, "--name") == 0)
			o.name = v;
		else if (strcmp(a, "--seconds") == 0)
			o.seconds = atof(v);
		else if (strcmp(a, "--hold") == 0)
			o.hold = atof(v);
		else if (strcmp(a, "--bytes") == 0)
			o.bytes = atoll(v);
		else if (strcmp(a, "--size") == 0)
			o.size = atoi(v);
		else if (strcmp(a, "--windows") == 0)
			o.windows = atoi(v);
		else if (strcmp(a, "--connections") == 0)
			o.connections = atoi(v);
		else if (strcmp(a, "--reset") == 0)
			o.reset = atoi(v);
		else if (strcmp(a, "--plain") == 0)
			o.plain = atoi(v);
		else
			die("unknown option");
	}
	if (o.seconds <= 0 || o.seconds > 600 || o.size < 1 || o.size > 16384 || o.windows < 1 ||
	    o.windows > 100 || o.connections < 0 || o.connections > 100000 || o.bytes < 0)
		die("--seconds 0..600, --size 1..16384, --windows 1..100, --connections 0..100000");
	signal(SIGPIPE, SIG_IGN);
	if (strcmp(o.mode, "stall-backend") == 0)
		return stall_backend();
	if (strcmp(o.mode, "slow-backend") == 0)
		return slow_backend();
	parse_addr(o.addr);
	if (strcmp(o.mode, "idle") == 0)
		return idle();
	setup_tls();
	if (strcmp(o.mode, "upload") == 0)
		return upload();
	if (strcmp(o.mode, "probe") == 0)
		return probe();
	if (strcmp(o.mode, "fairness") == 0)
		return fairness();
	if (strcmp(o.mode, "flood") == 0)
		return flood();
	if (strcmp(o.mode, "halfclose") == 0)
		return halfclose();
	die("unknown mode");
}
