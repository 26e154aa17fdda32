/*
 * Parked connections (mtls_park()): a TLS 1.3 connection whose record keys went to libmtls's
 * own record layer (lib/record.c) and whose SSL was freed. Real handshakes in one process
 * over socketpairs; then one side, the other or both are parked and must go on exactly as
 * before: data both ways in every size (many records, partial non-blocking writes), the
 * peer's KeyUpdate answered, close_notify, alerts, and every bad record refused with the
 * reason an OpenSSL connection would give. The peer that is not parked is OpenSSL itself,
 * reached through internal.h where a case needs it to do what libmtls never does (a
 * KeyUpdate), and raw bytes are injected into the socket toward the parked side for the
 * refusals.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/ssl.h>

#include "internal.h"
#include "testutil.h"

#define APP1	"spiffe://test.mtls/ns/prod/sa/app1"
#define REVOKED "spiffe://test.mtls/ns/prod/sa/revoked"

#define REC_HEADER 5
#define REC_MAX	   (16384 + 256) /* the largest TLSCiphertext length RFC 8446 allows */

/* --- endpoints and connection pairs -------------------------------------------------- */

struct server_opts {
	int tls;	  /* 0: TLS 1.2 and 1.3 */
	const char *alpn; /* NULL: none */
	bool crl;	  /* the zoo's crl.pem (revokes revoked-client) */
};

static void configure_server(struct mtls *server, const struct server_opts *o)
{
	struct mtls_config *cfg = mtls_config_new();

	assert_int_equal(mtls_config_set_cert_file(cfg, cert_path("server-chain.pem")), 0);
	assert_int_equal(mtls_config_set_key_file(cfg, cert_path("server.key")), 0);
	assert_int_equal(mtls_config_set_ca_file(cfg, cert_path("ca.pem")), 0);
	assert_int_equal(mtls_config_allow_uri(cfg, APP1), 0);
	assert_int_equal(mtls_config_allow_uri(cfg, REVOKED), 0);
	if (o->tls != 0)
		assert_int_equal(mtls_config_set_protocols(cfg, o->tls, o->tls), 0);
	if (o->alpn != NULL)
		assert_int_equal(mtls_config_set_alpn(cfg, o->alpn), 0);
	if (o->crl)
		assert_int_equal(mtls_config_add_crl_file(cfg, cert_path("crl.pem")), 0);
	if (mtls_configure(server, cfg) != 0)
		fail_msg("server config: %s", mtls_error(server));
	mtls_config_free(cfg);
}

static struct mtls *server_new(const struct server_opts *o)
{
	struct mtls *server = mtls_server_new();

	configure_server(server, o);
	return server;
}

/* A client presenting the zoo's name-chain.pem ("client": app1). */
static struct mtls *client_new(const char *name, const char *alpn, bool tickets)
{
	struct mtls_config *cfg = mtls_config_new();
	struct mtls *client = mtls_client_new();
	char chain[64], key[64];

	snprintf(chain, sizeof(chain), "%s-chain.pem", name);
	snprintf(key, sizeof(key), "%s.key", name);
	assert_int_equal(mtls_config_set_cert_file(cfg, cert_path(chain)), 0);
	assert_int_equal(mtls_config_set_key_file(cfg, cert_path(key)), 0);
	assert_int_equal(mtls_config_set_ca_file(cfg, cert_path("ca.pem")), 0);
	assert_int_equal(mtls_config_set_session_tickets(cfg, tickets), 0);
	if (alpn != NULL)
		assert_int_equal(mtls_config_set_alpn(cfg, alpn), 0);
	if (mtls_configure(client, cfg) != 0)
		fail_msg("client config: %s", mtls_error(client));
	mtls_config_free(cfg);
	return client;
}

/* A connection pair: sc on fds[0], cc on fds[1]. */
struct link {
	int fds[2];
	struct mtls *sc, *cc;
};

static bool pending(ssize_t rc)
{
	return rc == MTLS_WANT_POLLIN || rc == MTLS_WANT_POLLOUT;
}

/* Both ends made; suites (NULL: the defaults) restricts the client's TLS 1.3 suites on its
 * SSL before the handshake. */
static void link_start(struct link *l, struct mtls *server, struct mtls *client, const char *suites)
{
	test_socketpair(l->fds);
	l->sc = mtls_accept_fd(server, l->fds[0]);
	l->cc = mtls_connect_fd(client, l->fds[1], "server.test");
	assert_non_null(l->sc);
	assert_non_null(l->cc);
	if (suites != NULL)
		assert_int_equal(SSL_set_ciphersuites(l->cc->conn.ssl, suites), 1);
}

/* Write all of buf from a to b and read it there (both driven, bounded). */
static void send_recv(struct mtls *a, struct mtls *b, const void *buf, size_t len);

/* The handshake (test_handshake_pair() has the server send one byte the client reads) and
 * one round trip started by the client, as a connection that has been used once. */
static void link_open_suites(struct link *l, struct mtls *server, struct mtls *client,
			     const char *suites)
{
	int srv_rc, cli_rc;

	link_start(l, server, client, suites);
	test_handshake_pair(l->sc, l->cc, &srv_rc, &cli_rc);
	if (srv_rc != 0 || cli_rc != 0)
		fail_msg("handshake: server %s; client %s", mtls_error(l->sc), mtls_error(l->cc));
	send_recv(l->cc, l->sc, "ping", 4);
	send_recv(l->sc, l->cc, "pong", 4);
}

static void link_open(struct link *l, struct mtls *server, struct mtls *client)
{
	link_open_suites(l, server, client, NULL);
}

static void link_close(struct link *l)
{
	test_pair_free(l->sc, l->cc, l->fds);
}

/* A case's whole setup: a TLS 1.3 server, the app1 client, one link. */
struct fixture {
	struct mtls *server, *client;
	struct link l;
};

static void fixture_open(struct fixture *f)
{
	struct server_opts o = {0};

	f->server = server_new(&o);
	f->client = client_new("client", NULL, false);
	link_open(&f->l, f->server, f->client);
}

static void fixture_close(struct fixture *f)
{
	link_close(&f->l);
	mtls_free(f->client);
	mtls_free(f->server);
}

static void park(struct mtls *c)
{
	int rc = mtls_park(c);

	if (rc != 1)
		fail_msg("mtls_park: %d (%s: %s)", rc, mtls_reason_name(mtls_error_reason(c)),
			 mtls_error(c));
	assert_int_equal(mtls_conn_parked(c), 1);
}

/* --- moving data ----------------------------------------------------------------------- */

/* Deterministic bytes, different per seed. */
static void fill(uint8_t *p, size_t len, uint32_t seed)
{
	uint32_t x = seed * 2654435761u + 12345;

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		p[i] = (uint8_t)x;
	}
}

/* One direction of a transfer: src from a, into dst at b. */
struct flow {
	struct mtls *from, *to;
	const uint8_t *src;
	uint8_t *dst;
	size_t len, put, got;
};

/* A step of a flow: a write, then reads of up to chunk bytes until the reader waits. Returns
 * whether anything moved. A failed call fails the test with its error. */
static bool flow_step(struct flow *f, size_t chunk)
{
	bool moved = false;

	if (f->put < f->len) {
		ssize_t n = mtls_write(f->from, f->src + f->put, f->len - f->put);

		if (n > 0) {
			f->put += (size_t)n;
			moved = true;
		} else if (!pending(n)) {
			fail_msg("write at %zu of %zu: %zd (%s: %s)", f->put, f->len, n,
				 mtls_reason_name(mtls_error_reason(f->from)), mtls_error(f->from));
		}
	}
	for (int reads = 0; reads < 64 && f->got < f->len; reads++) {
		size_t want = f->len - f->got < chunk ? f->len - f->got : chunk;
		ssize_t n = mtls_read(f->to, f->dst + f->got, want);

		if (pending(n))
			break;
		if (n <= 0)
			fail_msg("read at %zu of %zu: %zd (%s: %s)", f->got, f->len, n,
				 mtls_reason_name(mtls_error_reason(f->to)), mtls_error(f->to));
		f->got += (size_t)n;
		moved = true;
	}
	return moved;
}

/* Drive flows until all are done; each end is non-blocking, so a big write goes out in
 * pieces as the reader makes room. Fails if nothing moves for a long while. */
static void flows_run(struct flow *fl, size_t n)
{
	int idle = 0;
	/* odd read sizes: records are read in pieces and several at once */
	const size_t chunks[] = {7001, 3, 16384, 300};

	for (unsigned long round = 0;; round++) {
		bool moved = false, done = true;

		for (size_t i = 0; i < n; i++) {
			moved |= flow_step(&fl[i], chunks[(round + i) % 4]);
			done &= fl[i].got == fl[i].len;
		}
		if (done)
			break;
		if (moved) {
			idle = 0;
			continue;
		}
		if (++idle > 20000) /* 2 s and more */
			fail_msg("transfer stuck: flow 0 put %zu got %zu of %zu", fl[0].put,
				 fl[0].got, fl[0].len);
		usleep(100);
	}
	for (size_t i = 0; i < n; i++)
		if (memcmp(fl[i].src, fl[i].dst, fl[i].len) != 0)
			fail_msg("flow %zu: bytes differ (%zu bytes)", i, fl[i].len);
}

static void send_recv(struct mtls *a, struct mtls *b, const void *buf, size_t len)
{
	uint8_t *dst = malloc(len > 0 ? len : 1);
	struct flow f = {.from = a, .to = b, .src = buf, .dst = dst, .len = len};

	assert_non_null(dst);
	flows_run(&f, 1);
	free(dst);
}

/* len bytes each way at once, then each way alone. */
static void exchange(struct mtls *a, struct mtls *b, size_t len, uint32_t seed)
{
	uint8_t *ab = malloc(len), *ba = malloc(len), *ab_got = malloc(len), *ba_got = malloc(len);
	struct flow fl[2] = {
		{.from = a, .to = b, .src = ab, .dst = ab_got, .len = len},
		{.from = b, .to = a, .src = ba, .dst = ba_got, .len = len},
	};

	assert_true(ab != NULL && ba != NULL && ab_got != NULL && ba_got != NULL);
	fill(ab, len, seed);
	fill(ba, len, seed + 1);
	flows_run(fl, 2);
	send_recv(a, b, ab, len);
	send_recv(b, a, ba, len);
	free(ab);
	free(ba);
	free(ab_got);
	free(ba_got);
}

static const size_t sizes[] = {1, 100, 65536, 1 << 20};

static void exchange_all_sizes(struct mtls *a, struct mtls *b)
{
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		exchange(a, b, sizes[i], (uint32_t)i);
}

/* Read once (bounded wait for something other than WANT). */
static ssize_t read_settled(struct mtls *c, void *buf, size_t len)
{
	ssize_t n = MTLS_WANT_POLLIN;

	for (int i = 0; i < 2000 && pending(n); i++) {
		n = mtls_read(c, buf, len);
		if (pending(n))
			usleep(500);
	}
	return n;
}

/* --- raw bytes on the socket ------------------------------------------------------------ */

static void send_raw(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			struct pollfd pfd = {.fd = fd, .events = POLLOUT};

			poll(&pfd, 1, 1000);
			continue;
		}
		assert_true(n > 0);
		p += n;
		len -= (size_t)n;
	}
}

static void recv_exact(int fd, uint8_t *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = recv(fd, buf, len, 0);

		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			struct pollfd pfd = {.fd = fd, .events = POLLIN};

			assert_int_equal(poll(&pfd, 1, 5000), 1);
			continue;
		}
		if (n <= 0)
			fail_msg("recv: %zd (%s)", n, strerror(errno));
		buf += n;
		len -= (size_t)n;
	}
}

/* One whole record off fd (header and body, as sent): its length. */
static size_t take_record(int fd, uint8_t *buf, size_t cap)
{
	size_t body;

	assert_true(cap >= REC_HEADER);
	recv_exact(fd, buf, REC_HEADER);
	body = (size_t)buf[3] << 8 | buf[4];
	assert_true(REC_HEADER + body <= cap);
	recv_exact(fd, buf + REC_HEADER, body);
	return REC_HEADER + body;
}

/* The records waiting in fd's socket, without taking them: their count, each one's type and
 * body length (up to max). Returns -1 if the bytes do not end on a record boundary. */
static int peek_records(int fd, int *types, size_t *lens, int max)
{
	static uint8_t buf[1 << 21];
	ssize_t n = recv(fd, buf, sizeof(buf), MSG_PEEK);
	size_t at = 0;
	int count = 0;

	if (n < 0)
		return errno == EAGAIN ? 0 : -1;
	while (at + REC_HEADER <= (size_t)n) {
		size_t body = (size_t)buf[at + 3] << 8 | buf[at + 4];

		if (count < max) {
			types[count] = buf[at];
			lens[count] = body;
		}
		count++;
		at += REC_HEADER + body;
	}
	return at == (size_t)n ? count : -1;
}

/* A record the OpenSSL side (from) sends of len bytes of application data, taken off the
 * socket before the other side (whose socket is fd) reads it. */
static size_t record_from(struct mtls *from, int fd, size_t len, uint8_t *buf, size_t cap)
{
	uint8_t data[256];

	assert_true(len <= sizeof(data));
	memset(data, 'r', len);
	assert_int_equal(mtls_write(from, data, len), (ssize_t)len);
	return take_record(fd, buf, cap);
}

/* --- 1-3: data both ways, one side or both parked ------------------------------------ */

static void test_server_parked(void **state)
{
	struct fixture f;

	(void)state;
	fixture_open(&f);
	park(f.l.sc);
	assert_int_equal(mtls_conn_parked(f.l.cc), 0);
	exchange_all_sizes(f.l.sc, f.l.cc);
	assert_int_equal(mtls_conn_parked(f.l.sc), 1);
	fixture_close(&f);
}

static void test_client_parked(void **state)
{
	struct fixture f;

	(void)state;
	fixture_open(&f);
	park(f.l.cc);
	assert_int_equal(mtls_conn_parked(f.l.sc), 0);
	exchange_all_sizes(f.l.cc, f.l.sc);
	fixture_close(&f);
}

/* Both parked; then each side's close_notify ends the other's reading (0, and 0 again). */
static void test_both_parked_and_close(void **state)
{
	(void)state;
	for (int closer = 0; closer < 2; closer++) {
		struct fixture f;
		struct mtls *a, *b;
		uint8_t byte;
		int rc = MTLS_WANT_POLLOUT;

		fixture_open(&f);
		park(f.l.sc);
		park(f.l.cc);
		assert_int_equal(mtls_park(f.l.sc), 1); /* already */
		exchange_all_sizes(f.l.sc, f.l.cc);
		a = closer == 0 ? f.l.sc : f.l.cc;
		b = closer == 0 ? f.l.cc : f.l.sc;
		for (int i = 0; i < 100 && pending(rc); i++)
			rc = mtls_close(a);
		assert_int_equal(rc, 0);
		assert_int_equal(read_settled(b, &byte, 1), 0);
		assert_int_equal(mtls_read(b, &byte, 1), 0);
		fixture_close(&f);
	}
}

/* A parked side's close_notify reaches an OpenSSL peer as one, and the parked side reads the
 * OpenSSL peer's own close_notify (SSL_shutdown) as 0. */
static void test_close_to_and_from_openssl(void **state)
{
	struct fixture f;
	uint8_t byte;

	(void)state;
	fixture_open(&f);
	park(f.l.sc);
	assert_int_equal(mtls_close(f.l.sc), 0);
	assert_int_equal(read_settled(f.l.cc, &byte, 1), 0);
	fixture_close(&f);

	fixture_open(&f);
	park(f.l.sc);
	assert_int_equal(mtls_close(f.l.cc), 0); /* OpenSSL's SSL_shutdown */
	assert_int_equal(read_settled(f.l.sc, &byte, 1), 0);
	fixture_close(&f);
}

/* --- 4: the peer's KeyUpdate -------------------------------------------------------------- */

/* The OpenSSL side (ossl) asks for a key update of type, then sends a request; the parked
 * side (parked, whose peer's socket is peer_fd) reads it and answers: with update_requested
 * its answer starts with a KeyUpdate record (a handshake message of 5 bytes, its content
 * type and the tag: 22 bytes), and the OpenSSL side reads the answer under the new keys. */
static void key_update_round(struct mtls *ossl, struct mtls *parked, int peer_fd, int type,
			     int round)
{
	SSL *ssl = ossl->conn.ssl;
	char req[32], ans[32], got[32];
	int types[8];
	size_t lens[8];
	int n;

	snprintf(req, sizeof(req), "request %d", round);
	snprintf(ans, sizeof(ans), "answer %d", round);
	assert_int_equal(SSL_key_update(ssl, type), 1);
	assert_int_equal(SSL_get_key_update_type(ssl), type);
	send_recv(ossl, parked, req, strlen(req));
	assert_int_equal(SSL_get_key_update_type(ssl), SSL_KEY_UPDATE_NONE); /* it went out */

	assert_int_equal(mtls_write(parked, ans, strlen(ans)), (ssize_t)strlen(ans));
	n = peek_records(peer_fd, types, lens, 8);
	if (type == SSL_KEY_UPDATE_REQUESTED) {
		if (n != 2 || lens[0] != 22 || lens[1] != strlen(ans) + 17)
			fail_msg("round %d: the answer to update_requested is %d records (first "
				 "%zu bytes), not a KeyUpdate (22) and the data (%zu)",
				 round, n, n > 0 ? lens[0] : 0, strlen(ans) + 17);
	} else if (n != 1 || lens[0] != strlen(ans) + 17) {
		fail_msg("round %d: update_not_requested answered: %d records (first %zu bytes)",
			 round, n, n > 0 ? lens[0] : 0);
	}
	for (int i = 0; i < n && i < 8; i++)
		assert_int_equal(types[i], 23);
	memset(got, 0, sizeof(got));
	assert_int_equal(read_settled(ossl, got, sizeof(got)), (ssize_t)strlen(ans));
	assert_string_equal(got, ans);
	/* the parked side's KeyUpdate asked for none back (update_not_requested) */
	assert_int_equal(SSL_get_key_update_type(ssl), SSL_KEY_UPDATE_NONE);
}

static void test_peer_key_update(void **state)
{
	const int types[] = {SSL_KEY_UPDATE_REQUESTED, SSL_KEY_UPDATE_NOT_REQUESTED};

	(void)state;
	for (int side = 0; side < 2; side++) {
		for (size_t t = 0; t < 2; t++) {
			struct fixture f;
			struct mtls *parked, *ossl;
			int peer_fd;

			fixture_open(&f);
			parked = side == 0 ? f.l.sc : f.l.cc;
			ossl = side == 0 ? f.l.cc : f.l.sc;
			peer_fd = side == 0 ? f.l.fds[1] : f.l.fds[0];
			park(parked);
			for (int round = 0; round < 5; round++)
				key_update_round(ossl, parked, peer_fd, types[t], round);
			/* and a mix, with much data between */
			key_update_round(ossl, parked, peer_fd, types[1 - t], 5);
			exchange(parked, ossl, 200000, 7);
			key_update_round(ossl, parked, peer_fd, types[t], 6);
			exchange(parked, ossl, 1000, 8);
			fixture_close(&f);
		}
	}
}

/* Key updates from the OpenSSL side with no application data between: 32 are accepted, the
 * 33rd refused by a parked server (OpenSSL 3.0 itself takes hundreds in a row: parked false,
 * the control, only for what both accept). */
static void key_updates_in_a_row(int count, bool parked, bool refused)
{
	struct fixture f;
	SSL *ssl;
	char buf[8];
	ssize_t n;

	fixture_open(&f);
	if (parked)
		park(f.l.sc);
	ssl = f.l.cc->conn.ssl;
	for (int i = 0; i < count; i++) {
		assert_int_equal(SSL_key_update(ssl, SSL_KEY_UPDATE_NOT_REQUESTED), 1);
		assert_int_equal(SSL_do_handshake(ssl), 1); /* sends it */
	}
	assert_int_equal(mtls_write(f.l.cc, "after", 5), 5);
	n = read_settled(f.l.sc, buf, sizeof(buf));
	if (refused) {
		if (n != -1)
			fail_msg("%d KeyUpdates in a row (%s): read %zd, not refused", count,
				 parked ? "parked" : "OpenSSL", n);
	} else {
		if (n != 5)
			fail_msg("%d KeyUpdates in a row (%s): read %zd (%s: %s)", count,
				 parked ? "parked" : "OpenSSL", n,
				 mtls_reason_name(mtls_error_reason(f.l.sc)), mtls_error(f.l.sc));
		assert_memory_equal(buf, "after", 5);
		exchange(f.l.sc, f.l.cc, 100, 3);
	}
	fixture_close(&f);
}

static void test_key_update_flood(void **state)
{
	(void)state;
	key_updates_in_a_row(32, false, false);
	key_updates_in_a_row(32, true, false);
	key_updates_in_a_row(33, true, true);
}

/* 32 in a row, data, 32 again: the count starts over with application data. */
static void test_key_update_count_resets(void **state)
{
	struct fixture f;
	SSL *ssl;
	char buf[8];

	(void)state;
	fixture_open(&f);
	park(f.l.sc);
	ssl = f.l.cc->conn.ssl;
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < 32; i++) {
			assert_int_equal(SSL_key_update(ssl, SSL_KEY_UPDATE_NOT_REQUESTED), 1);
			assert_int_equal(SSL_do_handshake(ssl), 1);
		}
		assert_int_equal(mtls_write(f.l.cc, "data", 4), 4);
		assert_int_equal(read_settled(f.l.sc, buf, sizeof(buf)), 4);
	}
	fixture_close(&f);
}

/* Records that carry nothing for the caller, in a row, from a parked client (record_send():
 * what libmtls itself never sends) to a server: empty application data records and
 * user_canceled warning alerts. OpenSSL refuses more than 32 empty records in a row ("record
 * too small") and a 5th warning alert in a row ("too many warn alerts"): a peer must not keep
 * a reader busy with records that never end a read. parked false: OpenSSL is the reader
 * (the control); true: the parked record layer. */
static ssize_t idle_records(int kind, int count, bool parked)
{
	static const uint8_t user_canceled[2] = {1, 90};
	struct fixture f;
	struct error err;
	char buf[8];
	ssize_t n = MTLS_WANT_POLLIN;

	fixture_open(&f);
	park(f.l.cc);
	if (parked)
		park(f.l.sc);
	error_clear(&err);
	for (int i = 0; i < count && pending(n); i++) {
		int rc = kind == 0 ? record_send(f.l.cc->conn.rec, 23, NULL, 0, &err)
				   : record_send(f.l.cc->conn.rec, 21, user_canceled, 2, &err);

		assert_int_equal(rc, 0);
		if (i % 64 == 63) /* the reader keeps up (the socket holds a few thousand) */
			n = mtls_read(f.l.sc, buf, sizeof(buf));
	}
	if (pending(n)) {
		assert_int_equal(mtls_write(f.l.cc, "after", 5), 5);
		n = read_settled(f.l.sc, buf, sizeof(buf));
	}
	fixture_close(&f);
	return n;
}

static void test_empty_records_in_a_row(void **state)
{
	(void)state;
	assert_int_equal(idle_records(0, 32, false), 5);
	assert_int_equal(idle_records(0, 33, false), -1);
	assert_int_equal(idle_records(0, 32, true), 5);
	if (idle_records(0, 10000, true) != -1)
		fail_msg("a parked server read 10000 empty records in a row and went on (OpenSSL "
			 "refuses the 33rd)");
}

static void test_warning_alerts_in_a_row(void **state)
{
	(void)state;
	assert_int_equal(idle_records(1, 4, false), 5);
	assert_int_equal(idle_records(1, 5, false), -1);
	assert_int_equal(idle_records(1, 4, true), 5);
	if (idle_records(1, 10000, true) != -1)
		fail_msg("a parked server read 10000 user_canceled alerts in a row and went on "
			 "(OpenSSL refuses the 5th)");
}

/* --- 5: both parked, KeyUpdate both ways ------------------------------------------------ */

/* The peer parked too: one side's KeyUpdate(update_requested) through record_send() (which
 * seals it and leaves its own sending keys alone, so that side sends nothing after it); the
 * other side answers with its own KeyUpdate before its data, which the first reads under the
 * new keys. Then the same the other way round, on a new pair. */
static void test_both_parked_key_update(void **state)
{
	static const uint8_t ku_requested[5] = {24, 0, 0, 1, 1};

	(void)state;
	for (int asker = 0; asker < 2; asker++) {
		struct fixture f;
		struct mtls *a, *b;
		struct error err;
		char buf[16];
		int types[4];
		size_t lens[4];

		fixture_open(&f);
		park(f.l.sc);
		park(f.l.cc);
		exchange(f.l.sc, f.l.cc, 70000, 50);
		a = asker == 0 ? f.l.cc : f.l.sc;
		b = asker == 0 ? f.l.sc : f.l.cc;
		error_clear(&err);
		assert_int_equal(record_send(a->conn.rec, 22, ku_requested, 5, &err), 0);
		assert_int_equal(read_settled(b, buf, sizeof(buf)), MTLS_WANT_POLLIN);
		for (int round = 0; round < 3; round++) {
			assert_int_equal(mtls_write(b, "answer", 6), 6);
			assert_int_equal(
				peek_records(asker == 0 ? f.l.fds[1] : f.l.fds[0], types, lens, 4),
				round == 0 ? 2 : 1); /* the KeyUpdate only once */
			assert_int_equal(read_settled(a, buf, sizeof(buf)), 6);
			assert_memory_equal(buf, "answer", 6);
		}
		fixture_close(&f);
	}
}

/* --- more of the life of a parked connection -------------------------------------------- */

/* Parked right after the handshake, before any round trip: the server has sent its tickets
 * (its sequence numbers count them), the client has not read them (its parked layer reads
 * and ignores them before the data). */
static void test_parked_right_after_handshake(void **state)
{
	struct server_opts o = {0};
	struct mtls *server = server_new(&o), *client = client_new("client", NULL, true);

	(void)state;
	for (int which = 0; which < 3; which++) {
		struct link l;
		int s = MTLS_WANT_POLLIN, c = MTLS_WANT_POLLIN;

		link_start(&l, server, client, NULL);
		for (int i = 0; i < 1000 && (pending(s) || pending(c)); i++) {
			if (pending(c))
				c = mtls_handshake(l.cc);
			if (pending(s))
				s = mtls_handshake(l.sc);
		}
		assert_int_equal(s, 0);
		assert_int_equal(c, 0);
		if (which != 1)
			park(l.sc);
		if (which != 0)
			park(l.cc);
		exchange(l.sc, l.cc, 100000, (uint32_t)(60 + which));
		link_close(&l);
	}
	mtls_free(client);
	mtls_free(server);
}

/* A connection OpenSSL has ended (an error, the peer's close_notify, EOF) is never parked:
 * its record layer would go on where OpenSSL stopped. */
static void test_not_parkable_after_end(void **state)
{
	static const uint8_t noise[] = {23, 3,	3,  0,	20, 1,	2,  3,	4,  5,	6,  7,	8,  9,
					10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23};
	uint8_t buf[16];

	(void)state;
	for (int how = 0; how < 3; how++) {
		struct fixture f;
		ssize_t n;

		fixture_open(&f);
		if (how == 0)
			send_raw(f.l.fds[1], noise, sizeof(noise));
		else if (how == 1)
			assert_int_equal(mtls_close(f.l.cc), 0);
		else
			assert_int_equal(shutdown(f.l.fds[1], SHUT_WR), 0);
		n = read_settled(f.l.sc, buf, sizeof(buf));
		assert_int_equal(n, how == 1 ? 0 : -1);
		if (mtls_park(f.l.sc) != 0)
			fail_msg("parked after %s", how == 0   ? "a bad record"
						    : how == 1 ? "close_notify"
							       : "EOF");
		assert_int_equal(mtls_conn_parked(f.l.sc), 0);
		fixture_close(&f);
	}
}

/* The peer's close_notify still in the socket when parking: read after it, as 0. */
static void test_close_notify_waiting(void **state)
{
	struct fixture f;
	uint8_t buf[16];

	(void)state;
	fixture_open(&f);
	assert_int_equal(mtls_write(f.l.cc, "bye", 3), 3);
	assert_int_equal(mtls_close(f.l.cc), 0);
	park(f.l.sc);
	assert_int_equal(read_settled(f.l.sc, buf, sizeof(buf)), 3);
	assert_int_equal(read_settled(f.l.sc, buf, sizeof(buf)), 0);
	/* TLS 1.3 closes each direction alone: the parked side may still answer */
	assert_int_equal(mtls_write(f.l.sc, "ok", 2), 2);
	assert_int_equal(read_settled(f.l.cc, buf, sizeof(buf)), 2);
	assert_int_equal(mtls_close(f.l.sc), 0);
	assert_int_equal(read_settled(f.l.cc, buf, sizeof(buf)), 0);
	/* after its own close, a parked side writes no more */
	assert_int_equal(mtls_write(f.l.sc, "x", 1), -1);
	fixture_close(&f);
}

/* The blocking helpers poll the parked connection's socket. */
static void test_blocking_helpers(void **state)
{
	struct fixture f;
	uint8_t buf[16];

	(void)state;
	fixture_open(&f);
	park(f.l.sc);
	assert_int_equal(mtls_write_all(f.l.sc, "abc", 3, 5000), 0);
	assert_int_equal(mtls_read_wait(f.l.cc, buf, sizeof(buf), 5000), 3);
	assert_int_equal(mtls_write_all(f.l.cc, "defg", 4, 5000), 0);
	assert_int_equal(mtls_read_wait(f.l.sc, buf, sizeof(buf), 5000), 4);
	assert_memory_equal(buf, "defg", 4);
	assert_int_equal(mtls_read_wait(f.l.sc, buf, sizeof(buf), 20), -1);
	assert_int_equal(mtls_error_reason(f.l.sc), MTLS_REASON_TIMEOUT);
	assert_int_equal(mtls_close_wait(f.l.sc, 5000), 0);
	assert_int_equal(mtls_read_wait(f.l.cc, buf, sizeof(buf), 5000), 0);
	fixture_close(&f);
}

/* A write of more than a record: at most one record's worth a call is fine, and a call
 * retried after MTLS_WANT_POLLOUT with fewer bytes than before is refused (usage). */
static void test_write_retry_rules(void **state)
{
	struct fixture f;
	uint8_t *big = malloc(1 << 20);
	size_t put = 0;
	ssize_t n = 0;

	(void)state;
	assert_non_null(big);
	fill(big, 1 << 20, 70);
	fixture_open(&f);
	park(f.l.sc);
	while (put < (1u << 20) && (n = mtls_write(f.l.sc, big + put, (1u << 20) - put)) > 0) {
		assert_true(n <= 16384);
		put += (size_t)n;
	}
	assert_int_equal(n, MTLS_WANT_POLLOUT);
	assert_true(put < (1u << 20));
	/* retried with 1 byte: fewer than the record sealed */
	n = mtls_write(f.l.sc, big + put, 1);
	if (n != -1 && n != MTLS_WANT_POLLOUT)
		fail_msg("retry with fewer bytes: %zd", n);
	fixture_close(&f);
	free(big);
}

/* --- 6: what a parked side refuses ----------------------------------------------------- */

/* A parked server whose next read meets inject (bytes into its socket), then shut (the peer's
 * end shut for writing, when shut). Its read must fail with reason. */
static void expect_refusal(const char *what, const uint8_t *inject, size_t len, bool shut,
			   enum mtls_reason reason)
{
	struct fixture f;
	uint8_t buf[64];
	ssize_t n;

	fixture_open(&f);
	park(f.l.sc);
	if (len > 0)
		send_raw(f.l.fds[1], inject, len);
	if (shut)
		assert_int_equal(shutdown(f.l.fds[1], SHUT_WR), 0);
	n = read_settled(f.l.sc, buf, sizeof(buf));
	if (n != -1 || mtls_error_reason(f.l.sc) != reason)
		fail_msg("%s: read %zd, reason %s (%s); expected -1, %s", what, n,
			 mtls_reason_name(mtls_error_reason(f.l.sc)), mtls_error(f.l.sc),
			 mtls_reason_name(reason));
	/* and it stays failed */
	assert_true(mtls_read(f.l.sc, buf, sizeof(buf)) < 0);
	fixture_close(&f);
}

/* A real record from the OpenSSL client, one bit flipped (each part of it in turn: the
 * header's type, the encrypted body, the tag), injected toward the parked server. */
static void test_flipped_bit(void **state)
{
	const size_t where[] = {REC_HEADER, REC_HEADER + 1, REC_HEADER + 20, 0 /* last byte */};

	(void)state;
	for (size_t w = 0; w < sizeof(where) / sizeof(where[0]); w++) {
		struct fixture f;
		uint8_t rec[512], buf[64];
		size_t len, at;
		ssize_t n;

		fixture_open(&f);
		park(f.l.sc);
		len = record_from(f.l.cc, f.l.fds[0], 40, rec, sizeof(rec));
		at = where[w] != 0 ? where[w] : len - 1;
		rec[at] ^= 0x10;
		send_raw(f.l.fds[1], rec, len);
		n = read_settled(f.l.sc, buf, sizeof(buf));
		if (n != -1 || mtls_error_reason(f.l.sc) != MTLS_REASON_MALFORMED)
			fail_msg("bit flipped at %zu of %zu: read %zd, reason %s (%s)", at, len, n,
				 mtls_reason_name(mtls_error_reason(f.l.sc)), mtls_error(f.l.sc));
		fixture_close(&f);
	}
}

/* The same record twice (a replay: the sequence number moved on), or two records swapped. */
static void test_replay_and_reorder(void **state)
{
	(void)state;
	for (int kind = 0; kind < 2; kind++) {
		struct fixture f;
		uint8_t r1[512], r2[512], buf[64];
		size_t l1, l2;
		ssize_t n;

		fixture_open(&f);
		park(f.l.sc);
		l1 = record_from(f.l.cc, f.l.fds[0], 10, r1, sizeof(r1));
		l2 = record_from(f.l.cc, f.l.fds[0], 20, r2, sizeof(r2));
		if (kind == 0) { /* replay */
			send_raw(f.l.fds[1], r1, l1);
			send_raw(f.l.fds[1], r1, l1);
		} else { /* swapped */
			send_raw(f.l.fds[1], r2, l2);
			send_raw(f.l.fds[1], r1, l1);
		}
		n = read_settled(f.l.sc, buf, sizeof(buf));
		if (kind == 0) {
			assert_int_equal(n, 10);
			n = read_settled(f.l.sc, buf, sizeof(buf));
		}
		if (n != -1 || mtls_error_reason(f.l.sc) != MTLS_REASON_MALFORMED)
			fail_msg("%s: read %zd, reason %s (%s)", kind == 0 ? "replay" : "reorder",
				 n, mtls_reason_name(mtls_error_reason(f.l.sc)),
				 mtls_error(f.l.sc));
		fixture_close(&f);
	}
}

static void test_plaintext_records(void **state)
{
	/* a handshake message (a ClientHello's start), an alert (fatal, handshake_failure),
	 * change_cipher_spec, heartbeat, and application data too short for a tag */
	static const uint8_t hs[] = {22, 3, 3, 0, 8, 1, 0, 0, 4, 3, 3, 0, 0};
	static const uint8_t alert[] = {21, 3, 3, 0, 2, 2, 40};
	static const uint8_t ccs[] = {20, 3, 3, 0, 1, 1};
	static const uint8_t hb[] = {24, 3, 3, 0, 3, 1, 0, 0};
	static const uint8_t app[] = {23, 3, 3, 0, 3, 'a', 'b', 'c'};
	static const uint8_t empty[] = {23, 3, 3, 0, 0};

	(void)state;
	expect_refusal("handshake record in the clear", hs, sizeof(hs), false,
		       MTLS_REASON_MALFORMED);
	expect_refusal("alert in the clear", alert, sizeof(alert), false, MTLS_REASON_MALFORMED);
	expect_refusal("change_cipher_spec after the handshake", ccs, sizeof(ccs), false,
		       MTLS_REASON_MALFORMED);
	expect_refusal("heartbeat record", hb, sizeof(hb), false, MTLS_REASON_MALFORMED);
	expect_refusal("application data shorter than a tag", app, sizeof(app), false,
		       MTLS_REASON_MALFORMED);
	expect_refusal("empty application data record", empty, sizeof(empty), false,
		       MTLS_REASON_MALFORMED);
}

static void test_record_too_long(void **state)
{
	static uint8_t rec[REC_HEADER + REC_MAX + 1];

	(void)state;
	rec[0] = 23;
	rec[1] = 3;
	rec[2] = 3;
	rec[3] = (REC_MAX + 1) >> 8;
	rec[4] = (REC_MAX + 1) & 0xff;
	fill(rec + REC_HEADER, REC_MAX + 1, 9);
	/* refused from its header, whether the body follows or not */
	expect_refusal("length 16641", rec, REC_HEADER, false, MTLS_REASON_MALFORMED);
	expect_refusal("length 16641 with its body", rec, sizeof(rec), false,
		       MTLS_REASON_MALFORMED);
	rec[3] = 0xff;
	rec[4] = 0xff;
	expect_refusal("length 65535", rec, REC_HEADER, false, MTLS_REASON_MALFORMED);
	/* the longest allowed, but not sealed by the peer: a bad tag */
	rec[3] = REC_MAX >> 8;
	rec[4] = REC_MAX & 0xff;
	expect_refusal("length 16640 of noise", rec, REC_HEADER + REC_MAX, false,
		       MTLS_REASON_MALFORMED);
}

static void test_garbage(void **state)
{
	static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	uint8_t noise[300];

	(void)state;
	expect_refusal("an HTTP request", (const uint8_t *)http, strlen(http), false,
		       MTLS_REASON_MALFORMED);
	fill(noise, sizeof(noise), 77);
	noise[0] = 0x99; /* no content type */
	expect_refusal("noise", noise, sizeof(noise), false, MTLS_REASON_MALFORMED);
	noise[0] = 0; /* type 0 */
	expect_refusal("type 0", noise, sizeof(noise), true, MTLS_REASON_MALFORMED);
}

/* The peer goes away without close_notify: between records, in a header, in a body. */
static void test_truncated(void **state)
{
	(void)state;
	expect_refusal("EOF at a record boundary", NULL, 0, true, MTLS_REASON_TRUNCATED);
	for (int cut = 0; cut < 3; cut++) {
		struct fixture f;
		uint8_t rec[512], buf[64];
		size_t len, keep;
		ssize_t n;

		fixture_open(&f);
		park(f.l.sc);
		len = record_from(f.l.cc, f.l.fds[0], 100, rec, sizeof(rec));
		keep = cut == 0 ? 3 : cut == 1 ? REC_HEADER + 10 : len - 1;
		send_raw(f.l.fds[1], rec, keep);
		n = mtls_read(f.l.sc, buf, sizeof(buf));
		assert_int_equal(n, MTLS_WANT_POLLIN); /* half a record: wait for the rest */
		assert_int_equal(shutdown(f.l.fds[1], SHUT_WR), 0);
		n = read_settled(f.l.sc, buf, sizeof(buf));
		if (n != -1 || mtls_error_reason(f.l.sc) != MTLS_REASON_TRUNCATED)
			fail_msg("EOF after %zu of %zu bytes: read %zd, reason %s (%s)", keep, len,
				 n, mtls_reason_name(mtls_error_reason(f.l.sc)),
				 mtls_error(f.l.sc));
		fixture_close(&f);
	}
}

/* Data, then EOF without close_notify: the data is read, then truncated. */
static void test_data_then_eof(void **state)
{
	struct fixture f;
	uint8_t buf[64];

	(void)state;
	fixture_open(&f);
	park(f.l.sc);
	assert_int_equal(mtls_write(f.l.cc, "last words", 10), 10);
	assert_int_equal(shutdown(f.l.fds[1], SHUT_WR), 0);
	assert_int_equal(read_settled(f.l.sc, buf, sizeof(buf)), 10);
	assert_int_equal(read_settled(f.l.sc, buf, sizeof(buf)), -1);
	assert_int_equal(mtls_error_reason(f.l.sc), MTLS_REASON_TRUNCATED);
	fixture_close(&f);
}

/* The OpenSSL peer's fatal alert (it met a bad record from us: noise injected toward it) is
 * rejected_by_peer on the parked side. */
static void test_fatal_alert_from_peer(void **state)
{
	struct fixture f;
	uint8_t noise[60], buf[64];
	ssize_t n;

	(void)state;
	fixture_open(&f);
	park(f.l.sc);
	fill(noise, sizeof(noise), 5);
	noise[0] = 23;
	noise[1] = 3;
	noise[2] = 3;
	noise[3] = 0;
	noise[4] = sizeof(noise) - REC_HEADER;
	send_raw(f.l.fds[0], noise, sizeof(noise));
	assert_int_equal(read_settled(f.l.cc, buf, sizeof(buf)), -1); /* OpenSSL: bad MAC */
	n = read_settled(f.l.sc, buf, sizeof(buf));
	if (n != -1 || mtls_error_reason(f.l.sc) != MTLS_REASON_REJECTED_BY_PEER)
		fail_msg("peer's fatal alert: read %zd, reason %s (%s)", n,
			 mtls_reason_name(mtls_error_reason(f.l.sc)), mtls_error(f.l.sc));
	fixture_close(&f);
}

/* A parked side that refused a bad record tells the OpenSSL peer with an alert: the peer's
 * read fails (not waiting forever, not reading 0). */
static void test_refusal_reaches_peer(void **state)
{
	static const uint8_t hs[] = {22, 3, 3, 0, 4, 1, 0, 0, 0};
	struct fixture f;
	uint8_t buf[64];
	ssize_t n;

	(void)state;
	fixture_open(&f);
	park(f.l.sc);
	send_raw(f.l.fds[1], hs, sizeof(hs));
	assert_int_equal(read_settled(f.l.sc, buf, sizeof(buf)), -1);
	n = read_settled(f.l.cc, buf, sizeof(buf));
	if (n != -1 || mtls_error_reason(f.l.cc) != MTLS_REASON_REJECTED_BY_PEER)
		fail_msg("OpenSSL peer after our refusal: read %zd, reason %s (%s)", n,
			 mtls_reason_name(mtls_error_reason(f.l.cc)), mtls_error(f.l.cc));
	fixture_close(&f);
}

/* --- 7: when a connection cannot be parked ------------------------------------------------ */

static void test_not_parkable_tls12(void **state)
{
	struct server_opts o = {.tls = MTLS_TLS1_2};
	struct mtls *server = server_new(&o), *client = client_new("client", NULL, false);
	struct link l;

	(void)state;
	link_open(&l, server, client);
	assert_string_equal(mtls_conn_version(l.sc), "TLSv1.2");
	assert_int_equal(mtls_park(l.sc), 0);
	assert_int_equal(mtls_park(l.cc), 0);
	assert_int_equal(mtls_conn_parked(l.sc), 0);
	exchange(l.sc, l.cc, 1000, 1); /* untouched */
	link_close(&l);
	mtls_free(client);
	mtls_free(server);
}

static void test_not_parkable_before_handshake(void **state)
{
	struct server_opts o = {0};
	struct mtls *server = server_new(&o), *client = client_new("client", NULL, false);
	struct link l;
	int srv_rc, cli_rc;

	(void)state;
	link_start(&l, server, client, NULL);
	assert_int_equal(mtls_park(l.sc), 0);
	assert_int_equal(mtls_park(l.cc), 0);
	/* half way: the client sent its hello */
	assert_int_equal(mtls_handshake(l.cc), MTLS_WANT_POLLIN);
	assert_int_equal(mtls_park(l.cc), 0);
	assert_int_equal(mtls_handshake(l.sc), MTLS_WANT_POLLIN);
	assert_int_equal(mtls_park(l.sc), 0);
	test_handshake_pair(l.sc, l.cc, &srv_rc, &cli_rc);
	assert_int_equal(srv_rc, 0);
	assert_int_equal(cli_rc, 0);
	exchange(l.sc, l.cc, 1000, 2);
	park(l.sc);
	park(l.cc);
	exchange(l.sc, l.cc, 1000, 3);
	link_close(&l);
	mtls_free(client);
	mtls_free(server);
}

/* Application data OpenSSL already holds (read from the socket, not yet by the caller) keeps
 * it from parking; data still in the socket does not, and is read after parking. */
static void test_not_parkable_unread_data(void **state)
{
	struct fixture f;
	uint8_t data[300], buf[300];

	(void)state;
	fixture_open(&f);
	fill(data, sizeof(data), 4);
	/* in the socket only */
	assert_int_equal(mtls_write(f.l.cc, data, 100), 100);
	park(f.l.sc);
	assert_int_equal(read_settled(f.l.sc, buf, sizeof(buf)), 100);
	assert_memory_equal(buf, data, 100);
	fixture_close(&f);

	fixture_open(&f);
	/* a record read in part */
	assert_int_equal(mtls_write(f.l.cc, data, 100), 100);
	assert_int_equal(read_settled(f.l.sc, buf, 10), 10);
	assert_int_equal(mtls_park(f.l.sc), 0);
	assert_int_equal(mtls_conn_parked(f.l.sc), 0);
	assert_int_equal(read_settled(f.l.sc, buf + 10, 90), 90);
	assert_memory_equal(buf, data, 100);
	/* two records, the first read whole: the second is in OpenSSL's read-ahead buffer */
	assert_int_equal(mtls_write(f.l.cc, data, 50), 50);
	assert_int_equal(mtls_write(f.l.cc, data + 50, 50), 50);
	assert_int_equal(read_settled(f.l.sc, buf, sizeof(buf)), 50); /* one record a read */
	assert_int_equal(mtls_park(f.l.sc), 0);
	assert_int_equal(read_settled(f.l.sc, buf, sizeof(buf)), 50);
	assert_memory_equal(buf, data + 50, 50);
	/* all read now */
	assert_int_equal(mtls_read(f.l.sc, buf, sizeof(buf)), MTLS_WANT_POLLIN);
	park(f.l.sc);
	exchange(f.l.sc, f.l.cc, 65536, 5);
	fixture_close(&f);
}

/* Half a record read by OpenSSL (the rest not arrived): not parkable until it is whole. */
static void test_not_parkable_half_record(void **state)
{
	struct fixture f;
	uint8_t rec[512], buf[64];
	size_t len;

	(void)state;
	fixture_open(&f);
	len = record_from(f.l.cc, f.l.fds[0], 30, rec, sizeof(rec));
	send_raw(f.l.fds[1], rec, 20);
	assert_int_equal(mtls_read(f.l.sc, buf, sizeof(buf)), MTLS_WANT_POLLIN);
	assert_int_equal(mtls_park(f.l.sc), 0);
	send_raw(f.l.fds[1], rec + 20, len - 20);
	assert_int_equal(read_settled(f.l.sc, buf, sizeof(buf)), 30);
	assert_int_equal(mtls_read(f.l.sc, buf, sizeof(buf)), MTLS_WANT_POLLIN);
	park(f.l.sc);
	exchange(f.l.sc, f.l.cc, 100, 6);
	fixture_close(&f);
}

/* A write OpenSSL could not finish (the socket full) keeps the connection unparked. */
static void test_not_parkable_write_pending(void **state)
{
	struct fixture f;
	uint8_t *big = malloc(1 << 20), *sink = malloc(1 << 20);
	size_t put = 0;
	ssize_t n = 0;

	(void)state;
	assert_true(big != NULL && sink != NULL);
	fill(big, 1 << 20, 11);
	fixture_open(&f);
	while (put < (1u << 20) && (n = mtls_write(f.l.sc, big + put, (1u << 20) - put)) > 0)
		put += (size_t)n;
	assert_int_equal(n, MTLS_WANT_POLLOUT);
	assert_int_equal(mtls_park(f.l.sc), 0);
	/* finish the transfer (the write retried as it was), then it parks */
	{
		struct flow fl = {.from = f.l.sc,
				  .to = f.l.cc,
				  .src = big,
				  .dst = sink,
				  .len = 1 << 20,
				  .put = put};

		flows_run(&fl, 1);
	}
	assert_memory_equal(big, sink, 1 << 20);
	park(f.l.sc);
	exchange(f.l.sc, f.l.cc, 1000, 12);
	fixture_close(&f);
	free(big);
	free(sink);
}

/* After OpenSSL processed a KeyUpdate, on either side: the keys it holds are no longer the
 * ones the keylog gave, so no parking. */
static void test_not_parkable_after_key_update(void **state)
{
	const int types[] = {SSL_KEY_UPDATE_NOT_REQUESTED, SSL_KEY_UPDATE_REQUESTED};

	(void)state;
	for (size_t t = 0; t < 2; t++) {
		struct fixture f;

		fixture_open(&f);
		assert_int_equal(SSL_key_update(f.l.cc->conn.ssl, types[t]), 1);
		send_recv(f.l.cc, f.l.sc, "ku", 2);
		/* the client updated its sending keys, the server its receiving ones (and with
		 * update_requested its sending ones on its next write) */
		assert_int_equal(mtls_park(f.l.cc), 0);
		assert_int_equal(mtls_park(f.l.sc), 0);
		send_recv(f.l.sc, f.l.cc, "ok", 2);
		assert_int_equal(mtls_park(f.l.cc), 0);
		assert_int_equal(mtls_park(f.l.sc), 0);
		exchange(f.l.sc, f.l.cc, 70000, 13);
		fixture_close(&f);
	}
}

/* A suite the record layer does not carry (AES-CCM, on both ends' SSLs before the
 * handshake): the connection stays with OpenSSL. */
static void test_not_parkable_ccm(void **state)
{
	static const char *const ccm[] = {"TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256"};
	struct server_opts o = {0};
	struct mtls *server = server_new(&o), *client = client_new("client", NULL, false);

	(void)state;
	for (size_t i = 0; i < sizeof(ccm) / sizeof(ccm[0]); i++) {
		struct link l;
		int srv_rc, cli_rc;

		link_start(&l, server, client, ccm[i]);
		assert_int_equal(SSL_set_ciphersuites(l.sc->conn.ssl, ccm[i]), 1);
		test_handshake_pair(l.sc, l.cc, &srv_rc, &cli_rc);
		if (srv_rc != 0 || cli_rc != 0)
			fail_msg("%s: server %s; client %s", ccm[i], mtls_error(l.sc),
				 mtls_error(l.cc));
		assert_string_equal(mtls_conn_cipher(l.sc), ccm[i]);
		assert_int_equal(mtls_park(l.sc), 0);
		assert_int_equal(mtls_park(l.cc), 0);
		exchange(l.sc, l.cc, 20000, 80);
		link_close(&l);
	}
	mtls_free(client);
	mtls_free(server);
}

/* Not a connection, or none. */
static void test_park_usage(void **state)
{
	struct server_opts o = {0};
	struct mtls *server = server_new(&o);

	(void)state;
	assert_int_equal(mtls_park(server), -1);
	assert_int_equal(mtls_conn_parked(server), 0);
	assert_int_equal(mtls_park(NULL), -1);
	assert_int_equal(mtls_conn_parked(NULL), 0);
	mtls_free(server);
}

/* --- 8: what the connection says of itself after parking --------------------------------- */

struct facts {
	char version[32], cipher[64], alpn[32], peer[128];
	int resumed;
};

static void facts_of(struct mtls *c, struct facts *f)
{
	const char *alpn = mtls_conn_alpn(c);
	const struct mtls_peer *peer = mtls_conn_peer(c);

	assert_non_null(mtls_conn_version(c));
	assert_non_null(mtls_conn_cipher(c));
	snprintf(f->version, sizeof(f->version), "%s", mtls_conn_version(c));
	snprintf(f->cipher, sizeof(f->cipher), "%s", mtls_conn_cipher(c));
	snprintf(f->alpn, sizeof(f->alpn), "%s", alpn != NULL ? alpn : "(none)");
	snprintf(f->peer, sizeof(f->peer), "%s", peer != NULL ? mtls_peer_identity(peer) : "");
	f->resumed = mtls_conn_resumed(c);
}

static void facts_equal(const struct facts *a, const struct facts *b)
{
	assert_string_equal(a->version, b->version);
	assert_string_equal(a->cipher, b->cipher);
	assert_string_equal(a->alpn, b->alpn);
	assert_string_equal(a->peer, b->peer);
	assert_int_equal(a->resumed, b->resumed);
}

static void test_facts_after_parking(void **state)
{
	struct server_opts o = {.alpn = "postgresql"};
	struct mtls *server = server_new(&o), *client = client_new("client", "postgresql", true);
	struct link full, resumed;
	struct facts before[4], after[4];
	struct mtls *conns[4];

	(void)state;
	link_open(&full, server, client);
	link_open(&resumed, server, client);
	conns[0] = full.sc;
	conns[1] = full.cc;
	conns[2] = resumed.sc;
	conns[3] = resumed.cc;
	for (int i = 0; i < 4; i++) {
		facts_of(conns[i], &before[i]);
		park(conns[i]);
		facts_of(conns[i], &after[i]);
		facts_equal(&before[i], &after[i]);
	}
	assert_string_equal(after[0].version, "TLSv1.3");
	assert_string_equal(after[0].alpn, "postgresql");
	assert_string_equal(after[1].alpn, "postgresql");
	assert_string_equal(after[0].peer, APP1);
	assert_int_equal(after[0].resumed, 0);
	assert_int_equal(after[2].resumed, 1);
	assert_int_equal(after[3].resumed, 1);
	exchange(full.sc, full.cc, 1000, 14);
	exchange(resumed.sc, resumed.cc, 1000, 15);
	/* and still so after traffic */
	for (int i = 0; i < 4; i++) {
		facts_of(conns[i], &after[i]);
		facts_equal(&before[i], &after[i]);
	}
	link_close(&full);
	link_close(&resumed);
	mtls_free(client);
	mtls_free(server);
}

/* mtls_conn_recheck() on parked connections: the peer's chain survives the SSL. */
static void test_recheck_after_parking(void **state)
{
	struct server_opts plain = {0}, crl = {.crl = true};
	struct mtls *server = server_new(&plain);
	struct mtls *good = client_new("client", NULL, false);
	struct mtls *bad = client_new("revoked-client", NULL, false);
	struct link lg, lb;

	(void)state;
	link_open(&lg, server, good);
	link_open(&lb, server, bad);
	park(lg.sc);
	park(lg.cc);
	park(lb.sc);
	assert_int_equal(mtls_conn_recheck(lg.sc, server), 0);
	assert_int_equal(mtls_conn_recheck(lb.sc, server), 0);
	assert_int_equal(mtls_conn_recheck(lg.cc, good), 0);
	configure_server(server, &crl);
	assert_int_equal(mtls_conn_recheck(lg.sc, server), 0);
	assert_string_equal(mtls_peer_identity(mtls_conn_peer(lg.sc)), APP1);
	assert_int_equal(mtls_conn_recheck(lb.sc, server), -1);
	assert_int_equal(mtls_error_reason(lb.sc), MTLS_REASON_REVOKED);
	/* the client side: a CA bundle without the server's root */
	{
		struct mtls_config *cfg = mtls_config_new();

		assert_int_equal(mtls_config_set_cert_file(cfg, cert_path("client-chain.pem")), 0);
		assert_int_equal(mtls_config_set_key_file(cfg, cert_path("client.key")), 0);
		assert_int_equal(mtls_config_set_ca_file(cfg, cert_path("other-ca.pem")), 0);
		assert_int_equal(mtls_configure(good, cfg), 0);
		mtls_config_free(cfg);
		assert_int_equal(mtls_conn_recheck(lg.cc, good), -1);
		assert_int_equal(mtls_error_reason(lg.cc), MTLS_REASON_UNKNOWN_CA);
	}
	/* misuse stays misuse */
	assert_int_equal(mtls_conn_recheck(lg.sc, good), -1);
	assert_int_equal(mtls_error_reason(lg.sc), MTLS_REASON_USAGE);
	/* the connection itself is untouched by a refusal */
	exchange(lb.sc, lb.cc, 1000, 16);
	link_close(&lg);
	link_close(&lb);
	mtls_free(good);
	mtls_free(bad);
	mtls_free(server);
}

/* --- 9: each AEAD ------------------------------------------------------------------------- */

static void test_each_suite(void **state)
{
	static const char *const suites[] = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
					     "TLS_CHACHA20_POLY1305_SHA256"};
	struct server_opts o = {0};
	struct mtls *server = server_new(&o), *client = client_new("client", NULL, false);

	(void)state;
	for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++) {
		for (int which = 0; which < 3; which++) { /* server, client, both parked */
			struct link l;
			int peer_fd;

			link_open_suites(&l, server, client, suites[i]);
			peer_fd = which == 1 ? l.fds[0] : l.fds[1];
			assert_string_equal(mtls_conn_cipher(l.sc), suites[i]);
			if (which != 1)
				park(l.sc);
			if (which != 0)
				park(l.cc);
			assert_string_equal(mtls_conn_cipher(l.sc), suites[i]);
			assert_string_equal(mtls_conn_cipher(l.cc), suites[i]);
			exchange(l.sc, l.cc, 100, 20);
			exchange(l.sc, l.cc, 300000, 21);
			/* the peer's KeyUpdate: each suite derives its next keys with its hash */
			if (which != 2) {
				struct mtls *ossl = which == 0 ? l.cc : l.sc;
				struct mtls *parked = which == 0 ? l.sc : l.cc;

				key_update_round(ossl, parked, peer_fd, SSL_KEY_UPDATE_REQUESTED,
						 0);
				exchange(l.sc, l.cc, 20000, 22);
			}
			link_close(&l);
		}
	}
	mtls_free(client);
	mtls_free(server);
}

/* --- 10: mtls_read_drained() and buffers -------------------------------------------------- */

/* The same answers parked (parked true) as from OpenSSL (false, the control). */
static void read_drained_case(bool parked)
{
	struct fixture f;
	uint8_t data[1000], buf[1000];

	fixture_open(&f);
	if (parked)
		park(f.l.sc);
	assert_int_equal(mtls_read(f.l.sc, buf, sizeof(buf)), MTLS_WANT_POLLIN);
	/* a receive that failed with EAGAIN found the socket empty; OpenSSL's path (sockbio.c)
	 * says 0 after it all the same, the parked one 1 */
	if (parked)
		assert_int_equal(mtls_read_drained(f.l.sc), 1);
	fill(data, sizeof(data), 30);
	assert_int_equal(mtls_write(f.l.cc, data, 100), 100);
	assert_int_equal(mtls_write(f.l.cc, data + 100, 100), 100);
	/* a read that leaves data behind (in the record or the next one) is not drained */
	assert_int_equal(read_settled(f.l.sc, buf, 10), 10);
	assert_int_equal(mtls_read_drained(f.l.sc), 0);
	assert_int_equal(read_settled(f.l.sc, buf + 10, 90), 90);
	/* the second record waits whole, not yet opened */
	assert_int_equal(mtls_read_drained(f.l.sc), 0);
	assert_int_equal(read_settled(f.l.sc, buf + 100, 100), 100);
	assert_memory_equal(buf, data, 200);
	/* both came with one receive, which found the socket empty after them */
	assert_int_equal(mtls_read_drained(f.l.sc), 1);
	assert_int_equal(mtls_read(f.l.sc, buf, sizeof(buf)), MTLS_WANT_POLLIN);
	if (parked)
		assert_int_equal(mtls_read_drained(f.l.sc), 1);
	/* kept buffers, then given back: data goes on */
	mtls_keep_buffers(f.l.sc, 1);
	exchange(f.l.sc, f.l.cc, 65536, 31);
	mtls_keep_buffers(f.l.sc, 0);
	exchange(f.l.sc, f.l.cc, 65536, 32);
	assert_int_equal(mtls_read(f.l.sc, buf, sizeof(buf)), MTLS_WANT_POLLIN);
	if (parked)
		assert_int_equal(mtls_read_drained(f.l.sc), 1);
	fixture_close(&f);
}

static void test_read_drained(void **state)
{
	(void)state;
	read_drained_case(false);
	read_drained_case(true);
}

/* Many parked pairs at once, freed without close: nothing leaks (ASan), nothing mixes. */
static void test_many_parked(void **state)
{
	struct server_opts o = {0};
	struct mtls *server = server_new(&o), *client = client_new("client", NULL, true);
	struct link l[8];

	(void)state;
	for (int i = 0; i < 8; i++) {
		link_open(&l[i], server, client);
		if (i % 2 == 0)
			park(l[i].sc);
		if (i % 3 != 0)
			park(l[i].cc);
	}
	for (int i = 0; i < 8; i++)
		exchange(l[i].sc, l[i].cc, 5000, (uint32_t)(40 + i));
	for (int i = 0; i < 8; i++)
		link_close(&l[i]);
	mtls_free(client);
	mtls_free(server);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_server_parked),
		cmocka_unit_test(test_client_parked),
		cmocka_unit_test(test_both_parked_and_close),
		cmocka_unit_test(test_close_to_and_from_openssl),
		cmocka_unit_test(test_peer_key_update),
		cmocka_unit_test(test_key_update_flood),
		cmocka_unit_test(test_key_update_count_resets),
		cmocka_unit_test(test_both_parked_key_update),
		cmocka_unit_test(test_empty_records_in_a_row),
		cmocka_unit_test(test_warning_alerts_in_a_row),
		cmocka_unit_test(test_parked_right_after_handshake),
		cmocka_unit_test(test_not_parkable_after_end),
		cmocka_unit_test(test_close_notify_waiting),
		cmocka_unit_test(test_blocking_helpers),
		cmocka_unit_test(test_write_retry_rules),
		cmocka_unit_test(test_flipped_bit),
		cmocka_unit_test(test_replay_and_reorder),
		cmocka_unit_test(test_plaintext_records),
		cmocka_unit_test(test_record_too_long),
		cmocka_unit_test(test_garbage),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_data_then_eof),
		cmocka_unit_test(test_fatal_alert_from_peer),
		cmocka_unit_test(test_refusal_reaches_peer),
		cmocka_unit_test(test_not_parkable_tls12),
		cmocka_unit_test(test_not_parkable_before_handshake),
		cmocka_unit_test(test_not_parkable_unread_data),
		cmocka_unit_test(test_not_parkable_half_record),
		cmocka_unit_test(test_not_parkable_write_pending),
		cmocka_unit_test(test_not_parkable_after_key_update),
		cmocka_unit_test(test_not_parkable_ccm),
		cmocka_unit_test(test_park_usage),
		cmocka_unit_test(test_facts_after_parking),
		cmocka_unit_test(test_recheck_after_parking),
		cmocka_unit_test(test_each_suite),
		cmocka_unit_test(test_read_drained),
		cmocka_unit_test(test_many_parked),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
