/*
 * The hand-off from OpenSSL to the parked record layer (mtls_park()), at its edges: the
 * review's proofs made into tests. A connection is parked only when nothing of the peer's is
 * held inside OpenSSL and nothing it agreed to is lost in the move:
 *   1. a post-handshake message (a NewSessionTicket) split across records: not parked while
 *      OpenSSL holds a piece of it; the connection goes on, and parks once the message is
 *      whole;
 *   2. a max_fragment_length (RFC 6066) the client negotiated: not parked (the record layer
 *      seals records up to 2^14), and the data still reaches the client;
 *   3. mtls_read() with no room: a usage error on a parked and an unparked connection alike
 *      (0 would say the peer closed), and nothing lost or spoiled by it;
 *   4. a connection OpenSSL failed (a forged record): not parked back to life;
 *   5. regressions: a HelloRetryRequest handshake parks and carries data; a record that
 *      arrived in part is never parked over.
 * Real handshakes in one process over socketpairs; the pieces of handshake messages are sent
 * by a parked server's record layer (record_send()), the way a peer's TLS stack may send them.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/ssl.h>

#include "internal.h"
#include "testutil.h"

#define APP1 "spiffe://test.mtls/ns/prod/sa/app1"

#define REC_HEADER 5
#define WAIT_MS	   5000 /* for bytes on a socketpair: only a broken case waits that long */

/* --- endpoints and connection pairs -------------------------------------------------- */

static struct mtls *server_new(void)
{
	struct mtls_config *cfg = mtls_config_new();
	struct mtls *server = mtls_server_new();

	assert_int_equal(mtls_config_set_cert_file(cfg, cert_path("server-chain.pem")), 0);
	assert_int_equal(mtls_config_set_key_file(cfg, cert_path("server.key")), 0);
	assert_int_equal(mtls_config_set_ca_file(cfg, cert_path("ca.pem")), 0);
	assert_int_equal(mtls_config_allow_uri(cfg, APP1), 0);
	if (mtls_configure(server, cfg) != 0)
		fail_msg("server config: %s", mtls_error(server));
	mtls_config_free(cfg);
	return server;
}

/* The zoo's client (app1); with tickets off every handshake is a full one. */
static struct mtls *client_new(bool tickets)
{
	struct mtls_config *cfg = mtls_config_new();
	struct mtls *client = mtls_client_new();

	assert_int_equal(mtls_config_set_cert_file(cfg, cert_path("client-chain.pem")), 0);
	assert_int_equal(mtls_config_set_key_file(cfg, cert_path("client.key")), 0);
	assert_int_equal(mtls_config_set_ca_file(cfg, cert_path("ca.pem")), 0);
	assert_int_equal(mtls_config_set_session_tickets(cfg, tickets), 0);
	if (mtls_configure(client, cfg) != 0)
		fail_msg("client config: %s", mtls_error(client));
	mtls_config_free(cfg);
	return client;
}

/* A case's endpoints and one connection pair: sc on fds[0], cc on fds[1]. */
struct pair {
	struct mtls *server, *client;
	int fds[2];
	struct mtls *sc, *cc;
};

/* Both ends made, not yet shaken hands (a case may set the client's SSL first). */
static void pair_start(struct pair *p, bool tickets)
{
	p->server = server_new();
	p->client = client_new(tickets);
	test_socketpair(p->fds);
	p->sc = mtls_accept_fd(p->server, p->fds[0]);
	p->cc = mtls_connect_fd(p->client, p->fds[1], "server.test");
	assert_non_null(p->sc);
	assert_non_null(p->cc);
}

static void exchange(struct pair *p, size_t len, uint8_t seed);

/* The handshake, then a round trip: a connection that has been used (the server's tickets
 * read by the client). */
static void pair_finish(struct pair *p)
{
	int srv_rc, cli_rc;

	test_handshake_pair(p->sc, p->cc, &srv_rc, &cli_rc);
	if (srv_rc != 0 || cli_rc != 0)
		fail_msg("handshake: server %s; client %s", mtls_error(p->sc), mtls_error(p->cc));
	exchange(p, 10, 1);
}

static void pair_open(struct pair *p, bool tickets)
{
	pair_start(p, tickets);
	pair_finish(p);
}

static void pair_close(struct pair *p)
{
	test_pair_free(p->sc, p->cc, p->fds);
	mtls_free(p->client);
	mtls_free(p->server);
}

/* Parked now (1), or refused (0): failures name the case's line. */
static void park_expect(struct mtls *c, int want, int line)
{
	int rc = mtls_park(c);

	if (rc != want)
		fail_msg("line %d: mtls_park: %d, not %d (%s: %s)", line, rc, want,
			 mtls_reason_name(mtls_error_reason(c)), mtls_error(c));
	if (mtls_conn_parked(c) != want)
		fail_msg("line %d: mtls_conn_parked: %d, not %d", line, mtls_conn_parked(c), want);
}

#define park(c)		park_expect(c, 1, __LINE__)
#define not_parkable(c) park_expect(c, 0, __LINE__)

/* --- moving data ----------------------------------------------------------------------- */

static bool pending(ssize_t rc)
{
	return rc == MTLS_WANT_POLLIN || rc == MTLS_WANT_POLLOUT;
}

/* The socket of c, parked or not. */
static int fd_of(const struct mtls *c)
{
	return c->conn.rec != NULL ? record_fd(c->conn.rec) : SSL_get_fd(c->conn.ssl);
}

/* Wait for c's socket to be ready for what rc asked (bounded: a stuck case fails). */
static void wait_for(const struct mtls *c, ssize_t rc)
{
	struct pollfd pfd = {.fd = fd_of(c), .events = rc == MTLS_WANT_POLLOUT ? POLLOUT : POLLIN};

	if (poll(&pfd, 1, WAIT_MS) != 1)
		fail_msg("nothing on the socket for %d ms (waiting to %s)", WAIT_MS,
			 rc == MTLS_WANT_POLLOUT ? "write" : "read");
}

/* len bytes from a to b (both non-blocking, driven in turn until all arrived). */
static void transfer(struct mtls *a, struct mtls *b, const uint8_t *src, size_t len)
{
	uint8_t *dst = malloc(len);
	size_t put = 0, got = 0;

	assert_non_null(dst);
	while (got < len) {
		ssize_t w = 0, r;

		if (put < len) {
			w = mtls_write(a, src + put, len - put);
			if (w > 0)
				put += (size_t)w;
			else if (!pending(w))
				fail_msg("write at %zu of %zu: %zd (%s)", put, len, w,
					 mtls_error(a));
		}
		r = mtls_read(b, dst + got, len - got);
		if (r > 0) {
			got += (size_t)r;
			continue;
		}
		if (!pending(r))
			fail_msg("read at %zu of %zu: %zd (%s: %s)", got, len, r,
				 mtls_reason_name(mtls_error_reason(b)), mtls_error(b));
		if (w <= 0 && put < len) {
			/* neither moved: wait on both sockets at once */
			struct pollfd pfd[2] = {{.fd = fd_of(a), .events = POLLOUT},
						{.fd = fd_of(b), .events = POLLIN}};

			if (poll(pfd, 2, WAIT_MS) < 1)
				fail_msg("transfer stuck at %zu/%zu of %zu", put, got, len);
		} else if (w <= 0) {
			wait_for(b, r);
		}
	}
	assert_memory_equal(src, dst, len);
	free(dst);
}

/* len bytes each way, one way then the other. */
static void exchange(struct pair *p, size_t len, uint8_t seed)
{
	uint8_t *buf = malloc(len);

	assert_non_null(buf);
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(i * 7 + seed);
	transfer(p->cc, p->sc, buf, len);
	transfer(p->sc, p->cc, buf, len);
	free(buf);
}

/* Exactly len bytes read at c (waiting for them), which must be want's. */
static void read_expect(struct mtls *c, const void *want, size_t len)
{
	uint8_t buf[256];
	size_t got = 0;

	assert_true(len <= sizeof(buf));
	while (got < len) {
		ssize_t r = mtls_read(c, buf + got, len - got);

		if (pending(r)) {
			wait_for(c, r);
			continue;
		}
		if (r <= 0)
			fail_msg("read at %zu of %zu: %zd (%s: %s)", got, len, r,
				 mtls_reason_name(mtls_error_reason(c)), mtls_error(c));
		got += (size_t)r;
	}
	assert_memory_equal(buf, want, len);
}

/* Wait until bytes wait in c's socket (without taking them). */
static void wait_readable(const struct mtls *c)
{
	wait_for(c, MTLS_WANT_POLLIN);
}

/* c has taken in everything that arrived and has nothing for the application. */
static void read_nothing(struct mtls *c)
{
	uint8_t buf[16];

	assert_int_equal(mtls_read(c, buf, sizeof(buf)), MTLS_WANT_POLLIN);
}

/* --- raw bytes on the socket ------------------------------------------------------------ */

static void send_raw(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			struct pollfd pfd = {.fd = fd, .events = POLLOUT};

			assert_int_equal(poll(&pfd, 1, WAIT_MS), 1);
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

			assert_int_equal(poll(&pfd, 1, WAIT_MS), 1);
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

/* --- 1. a post-handshake message across records --------------------------------------- */

/* A NewSessionTicket (RFC 8446 4.6.1) of 26 bytes: its header (type 4, length 22), lifetime,
 * age_add, a nonce of 1 byte, a ticket of 8, no extensions. The ticket is not one the server
 * could open: a client only keeps it. */
static void make_ticket(uint8_t nst[26])
{
	/* header; lifetime; age_add; nonce<1>; ticket<8>; extensions<0> */
	static const uint8_t t[26] = {4,    0, 0, 22,  0,   0,	 0x0e, 0x10, 1,	  2,   3,   4, 1,
				      0x5a, 0, 8, 't', 'i', 'c', 'k',  'e',  't', '-', '1', 0, 0};

	memcpy(nst, t, sizeof(t));
}

/* The server (parked) sends a ticket to the client (OpenSSL) in two handshake records of cut
 * and 26 - cut bytes. While OpenSSL holds the first piece the client must not park; it takes
 * the rest and the data after it as OpenSSL would, then parks. */
static void ticket_in_two(size_t cut)
{
	struct pair p;
	struct error err;
	uint8_t nst[26];

	make_ticket(nst);
	pair_open(&p, true);
	park(p.sc);
	error_clear(&err);
	assert_int_equal(record_send(p.sc->conn.rec, SSL3_RT_HANDSHAKE, nst, cut, &err), 0);
	wait_readable(p.cc);
	read_nothing(p.cc);
	/* the whole first record was taken in: only OpenSSL's hold on the piece keeps it */
	assert_true(sockbio_at_record_end(SSL_get_rbio(p.cc->conn.ssl)));
	not_parkable(p.cc);
	assert_int_equal(mtls_error_reason(p.cc), MTLS_REASON_NONE);

	/* the rest, then data: read as OpenSSL reads it */
	assert_int_equal(
		record_send(p.sc->conn.rec, SSL3_RT_HANDSHAKE, nst + cut, sizeof(nst) - cut, &err),
		0);
	assert_int_equal(mtls_write(p.sc, "abc", 3), 3);
	read_expect(p.cc, "abc", 3);
	read_nothing(p.cc);

	/* the whole message processed: parked, and both parked carry data */
	park(p.cc);
	exchange(&p, 5000, 2);
	pair_close(&p);
}

/* A piece of the message's header (2 of its 4 bytes) in the first record: OpenSSL keeps it
 * and looks finished (no pending bytes, not in init). */
static void test_ticket_split_in_header(void **state)
{
	(void)state;
	ticket_in_two(2);
}

/* The header and part of the body (9 bytes) in the first record: OpenSSL reads the message. */
static void test_ticket_split_in_body(void **state)
{
	(void)state;
	ticket_in_two(9);
}

/* Three records (1 + 12 + 13 bytes): not parkable after each of the first two. */
static void test_ticket_in_three(void **state)
{
	static const size_t cuts[] = {0, 1, 13, 26};
	struct pair p;
	struct error err;
	uint8_t nst[26];

	(void)state;
	make_ticket(nst);
	pair_open(&p, true);
	park(p.sc);
	error_clear(&err);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(record_send(p.sc->conn.rec, SSL3_RT_HANDSHAKE, nst + cuts[i],
					     cuts[i + 1] - cuts[i], &err),
				 0);
		wait_readable(p.cc);
		read_nothing(p.cc);
		if (i < 2)
			not_parkable(p.cc);
	}
	park(p.cc);
	exchange(&p, 100, 3);
	pair_close(&p);
}

/* A ticket whole in one record and two tickets in one record: nothing held, so parkable. */
static void test_ticket_whole(void **state)
{
	struct pair p;
	struct error err;
	uint8_t two[52];

	(void)state;
	make_ticket(two);
	make_ticket(two + 26);
	pair_open(&p, true);
	park(p.sc);
	error_clear(&err);
	assert_int_equal(record_send(p.sc->conn.rec, SSL3_RT_HANDSHAKE, two, 26, &err), 0);
	wait_readable(p.cc);
	read_nothing(p.cc);
	park(p.cc);
	pair_close(&p);

	pair_open(&p, true);
	park(p.sc);
	assert_int_equal(record_send(p.sc->conn.rec, SSL3_RT_HANDSHAKE, two, sizeof(two), &err), 0);
	wait_readable(p.cc);
	read_nothing(p.cc);
	park(p.cc);
	exchange(&p, 100, 4);
	pair_close(&p);
}

/* --- 2. max_fragment_length ------------------------------------------------------------- */

/* The client asked for records of at most 512 bytes and the server agreed: a parked server
 * would seal larger ones, which the client refuses (record_overflow). Neither side parks; a
 * write bigger than the limit still reaches the client. */
static void test_max_fragment_length(void **state)
{
	struct pair p;
	uint8_t *data = malloc(4000);

	(void)state;
	assert_non_null(data);
	for (size_t i = 0; i < 4000; i++)
		data[i] = (uint8_t)(i * 13 + 5);
	pair_start(&p, false);
	assert_int_equal(
		SSL_set_tlsext_max_fragment_length(p.cc->conn.ssl, TLSEXT_max_fragment_length_512),
		1);
	pair_finish(&p);
	/* negotiated: else the case proves nothing */
	assert_int_equal(SSL_SESSION_get_max_fragment_length(SSL_get_session(p.sc->conn.ssl)),
			 TLSEXT_max_fragment_length_512);
	not_parkable(p.sc);
	not_parkable(p.cc);
	transfer(p.sc, p.cc, data, 4000);
	transfer(p.cc, p.sc, data, 4000);
	not_parkable(p.sc);
	pair_close(&p);
	free(data);
}

/* --- 3. mtls_read() with no room -------------------------------------------------------- */

/* With data waiting: -1 and a usage error, the data read after it, and c still parkable
 * (if it was not parked already). */
static void read_zero(struct mtls *c, struct mtls *peer)
{
	uint8_t buf[8];

	assert_int_equal(mtls_write(peer, "abcd", 4), 4);
	wait_readable(c);
	assert_int_equal(mtls_read(c, buf, 0), -1);
	assert_int_equal(mtls_error_reason(c), MTLS_REASON_USAGE);
	/* again: a usage error ends nothing */
	assert_int_equal(mtls_read(c, buf, 0), -1);
	assert_int_equal(mtls_error_reason(c), MTLS_REASON_USAGE);
	read_expect(c, "abcd", 4);
	read_nothing(c);
	park(c);
}

static void test_read_zero_parked(void **state)
{
	struct pair p;

	(void)state;
	pair_open(&p, false);
	park(p.sc);
	read_zero(p.sc, p.cc);
	exchange(&p, 100, 5);
	pair_close(&p);
}

static void test_read_zero_unparked(void **state)
{
	struct pair p;

	(void)state;
	pair_open(&p, false);
	read_zero(p.cc, p.sc);
	assert_int_equal(mtls_conn_parked(p.sc), 0);
	exchange(&p, 100, 6);
	pair_close(&p);
}

/* With nothing waiting, on both sides: still -1, not "wait" and not an end. */
static void test_read_zero_idle(void **state)
{
	struct pair p;
	uint8_t buf[1];

	(void)state;
	pair_open(&p, false);
	park(p.sc);
	assert_int_equal(mtls_read(p.sc, buf, 0), -1);
	assert_int_equal(mtls_error_reason(p.sc), MTLS_REASON_USAGE);
	assert_int_equal(mtls_read(p.cc, buf, 0), -1);
	assert_int_equal(mtls_error_reason(p.cc), MTLS_REASON_USAGE);
	park(p.cc);
	exchange(&p, 100, 7);
	pair_close(&p);
}

/* --- 4. a connection OpenSSL failed ----------------------------------------------------- */

/* A forged application-data record (its tag cannot open) reaches side 0 (server) or 1
 * (client): OpenSSL fails the connection, and it is not parked back to life. */
static void test_not_parkable_after_fatal(void **state)
{
	static const uint8_t forged[REC_HEADER + 32] = {SSL3_RT_APPLICATION_DATA, 3, 3, 0, 32};

	(void)state;
	for (int side = 0; side < 2; side++) {
		struct pair p;
		struct mtls *c;
		uint8_t buf[16];

		pair_open(&p, false);
		c = side == 0 ? p.sc : p.cc;
		send_raw(p.fds[1 - side], forged, sizeof(forged));
		wait_readable(c);
		assert_int_equal(mtls_read(c, buf, sizeof(buf)), -1);
		/* (OpenSSL's failure is named io, a parked connection's malformed) */
		assert_int_not_equal(mtls_error_reason(c), MTLS_REASON_NONE);
		not_parkable(c);
		assert_true(mtls_write(c, "zz", 2) < 0);
		not_parkable(c);
		pair_close(&p);
	}
}

/* --- 5. regressions --------------------------------------------------------------------- */

/* Counts the HelloRetryRequests a client receives, and passes every message on to the
 * callback parking needs. */
static int hrr_seen;

static void hrr_msg_cb(int write_p, int version, int content_type, const void *buf, size_t len,
		       SSL *ssl, void *arg)
{
	/* SHA-256("HelloRetryRequest"), the random of a HelloRetryRequest (RFC 8446 4.1.3) */
	static const uint8_t hrr_random[32] = {0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11,
					       0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
					       0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e,
					       0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c};
	const uint8_t *b = buf;

	/* a ServerHello: header (4), legacy_version (2), random (32) */
	if (!write_p && content_type == SSL3_RT_HANDSHAKE && len >= 38 &&
	    b[0] == SSL3_MT_SERVER_HELLO && memcmp(b + 6, hrr_random, sizeof(hrr_random)) == 0)
		hrr_seen++;
	park_msg_cb(write_p, version, content_type, buf, len, ssl, arg);
}

/* The client's first key share is of a group the server does not take (ffdhe2048): the
 * server asks again (HelloRetryRequest) for P-256. Both sides park and carry data. */
static void test_hrr_parks(void **state)
{
	struct pair p;

	(void)state;
	hrr_seen = 0;
	pair_start(&p, false);
	assert_int_equal(SSL_set1_groups_list(p.cc->conn.ssl, "ffdhe2048:P-256"), 1);
	SSL_set_msg_callback(p.cc->conn.ssl, hrr_msg_cb);
	pair_finish(&p);
	assert_int_equal(hrr_seen, 1);
	assert_int_equal(SSL_get_negotiated_group(p.sc->conn.ssl), NID_X9_62_prime256v1);
	park(p.sc);
	park(p.cc);
	exchange(&p, 5000, 8);
	exchange(&p, 100000, 9);
	pair_close(&p);
}

/* A record of the client's that reached the server only in part (cut bytes of it: within
 * the header, the header exactly, or into the body): the server does not park until the rest
 * came and was read, then parks and carries data. */
static void test_half_record_refused(void **state)
{
	static const size_t cuts[] = {1, 3, 4, 5, 6, 15};

	(void)state;
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		struct pair p;
		uint8_t rec[512];
		size_t len;

		pair_open(&p, false);
		/* the client's record, taken off the socket before the server sees it */
		assert_int_equal(mtls_write(p.cc, "0123456789abcdefghij", 20), 20);
		len = take_record(p.fds[0], rec, sizeof(rec));
		assert_true(len > cuts[i]);
		send_raw(p.fds[1], rec, cuts[i]);
		wait_readable(p.sc);
		read_nothing(p.sc);
		not_parkable(p.sc);
		send_raw(p.fds[1], rec + cuts[i], len - cuts[i]);
		read_expect(p.sc, "0123456789abcdefghij", 20);
		read_nothing(p.sc);
		park(p.sc);
		exchange(&p, 100, (uint8_t)(10 + i));
		pair_close(&p);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ticket_split_in_header),
		cmocka_unit_test(test_ticket_split_in_body),
		cmocka_unit_test(test_ticket_in_three),
		cmocka_unit_test(test_ticket_whole),
		cmocka_unit_test(test_max_fragment_length),
		cmocka_unit_test(test_read_zero_parked),
		cmocka_unit_test(test_read_zero_unparked),
		cmocka_unit_test(test_read_zero_idle),
		cmocka_unit_test(test_not_parkable_after_fatal),
		cmocka_unit_test(test_hrr_parks),
		cmocka_unit_test(test_half_record_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
