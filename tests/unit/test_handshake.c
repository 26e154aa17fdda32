/*
 * Handshakes between a libmtls server and client in one process, over socketpairs: the
 * refusal matrix (each case asserts the exact reason code), run once with TLS 1.2 and once
 * with TLS 1.3; then raw OpenSSL peers for the cases libmtls itself will not produce (TLS
 * 1.1, garbage, truncation); then resumption and reload.
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "testutil.h"

#define ANY (-1)

struct side {
	const char *cert; /* zoo file names; NULL: none */
	const char *key;
	const char *ca;
};

struct matrix_case {
	const char *name;
	struct side server;
	struct side client;
	const char *crl;	 /* server-side CRL */
	bool crl_chain;		 /* check the whole chain */
	const char *client_crl;	 /* client-side CRL */
	const char *allow_uri;	 /* server allow rule; default: all of ns/prod */
	bool pin_client_spki;	 /* server pins the client's real SPKI */
	const char *pin;	 /* a server pin that matches nothing */
	int depth;		 /* 0: default */
	bool raw_client;	 /* a raw OpenSSL client at security level 0 */
	const char *server_name; /* default server.test */
	int expect_server;	 /* mtls_reason or ANY */
	int expect_client;	 /* mtls_reason or ANY */
};

#define SERVER_OK                                                                                  \
	{                                                                                          \
		"server-chain.pem", "server.key", "ca.pem"                                         \
	}
#define CLIENT_OK                                                                                  \
	{                                                                                          \
		"client-chain.pem", "client.key", "ca.pem"                                         \
	}
#define CLIENT(n)                                                                                  \
	{                                                                                          \
		n "-chain.pem", n ".key", "ca.pem"                                                 \
	}

static const struct matrix_case cases[] = {
	{"accepted", SERVER_OK, CLIENT_OK, .expect_server = MTLS_REASON_NONE,
	 .expect_client = MTLS_REASON_NONE},
	{"accepted by IP", SERVER_OK, CLIENT_OK, .server_name = "127.0.0.1",
	 .expect_server = MTLS_REASON_NONE, .expect_client = MTLS_REASON_NONE},
	{"accepted with CRLs of the whole chain", SERVER_OK, CLIENT_OK, .crl = "crl-all.pem",
	 .crl_chain = true, .expect_server = MTLS_REASON_NONE, .expect_client = MTLS_REASON_NONE},
	{"accepted by SPKI pin", SERVER_OK, CLIENT_OK, .pin_client_spki = true,
	 .expect_server = MTLS_REASON_NONE, .expect_client = MTLS_REASON_NONE},
	{"client from another CA", SERVER_OK, CLIENT("other-client"),
	 .expect_server = MTLS_REASON_UNKNOWN_CA, .expect_client = ANY},
	{"self-signed client",
	 SERVER_OK,
	 {"selfsigned-client.pem", "selfsigned-client.key", "ca.pem"},
	 .expect_server = MTLS_REASON_SELF_SIGNED,
	 .expect_client = ANY},
	{"expired client", SERVER_OK, CLIENT("expired-client"),
	 .expect_server = MTLS_REASON_EXPIRED, .expect_client = ANY},
	{"not yet valid client", SERVER_OK, CLIENT("notyet-client"),
	 .expect_server = MTLS_REASON_NOT_YET_VALID, .expect_client = ANY},
	{"revoked client", SERVER_OK, CLIENT("revoked-client"), .crl = "crl.pem",
	 .expect_server = MTLS_REASON_REVOKED, .expect_client = ANY},
	{"expired CRL", SERVER_OK, CLIENT_OK, .crl = "crl-expired.pem",
	 .expect_server = MTLS_REASON_CRL_EXPIRED, .expect_client = ANY},
	{"no CRL for the root", SERVER_OK, CLIENT_OK, .crl = "crl.pem", .crl_chain = true,
	 .expect_server = MTLS_REASON_CRL_MISSING, .expect_client = ANY},
	{"no client certificate",
	 SERVER_OK,
	 {NULL, NULL, "ca.pem"},
	 .expect_server = MTLS_REASON_NO_CERTIFICATE,
	 .expect_client = ANY},
	{"server certificate used as client",
	 SERVER_OK,
	 {"server-chain.pem", "server.key", "ca.pem"},
	 .expect_server = MTLS_REASON_BAD_KEY_USAGE,
	 .expect_client = ANY},
	{"client without extendedKeyUsage", SERVER_OK, CLIENT("noeku-client"),
	 .expect_server = MTLS_REASON_BAD_KEY_USAGE, .expect_client = ANY},
	{"identity not allowed", SERVER_OK, CLIENT("client2"),
	 .expect_server = MTLS_REASON_IDENTITY_NOT_ALLOWED, .expect_client = ANY},
	{"SPKI pin mismatch", SERVER_OK, CLIENT_OK,
	 .pin = "0000000000000000000000000000000000000000000000000000000000000000",
	 .expect_server = MTLS_REASON_PIN_MISMATCH, .expect_client = ANY},
	{"chain too long",
	 {"server-chain.pem", "server.key", "longchain-ca.pem"},
	 CLIENT("longchain-client"),
	 .allow_uri = "spiffe://test.mtls/ns/prod/sa/deep",
	 .depth = 2,
	 .expect_server = MTLS_REASON_CHAIN_TOO_LONG,
	 .expect_client = ANY},
	{"intermediate is not a CA", SERVER_OK, CLIENT("noca-client"),
	 .expect_server = MTLS_REASON_INVALID_CA, .expect_client = ANY},
	{"RSA-1024 client key", SERVER_OK, CLIENT("rsa1024-client"), .raw_client = true,
	 .expect_server = MTLS_REASON_WEAK_KEY, .expect_client = ANY},
	{"SHA-1 signed client", SERVER_OK, CLIENT("sha1-client"), .raw_client = true,
	 .expect_server = MTLS_REASON_WEAK_SIGNATURE, .expect_client = ANY},
	{"corrupted client signature", SERVER_OK, CLIENT("badsig-client"),
	 .expect_server = MTLS_REASON_BAD_SIGNATURE, .expect_client = ANY},
	{"server from another CA",
	 {"other-server-chain.pem", "other-server.key", "ca.pem"},
	 CLIENT_OK,
	 .expect_server = ANY,
	 .expect_client = MTLS_REASON_UNKNOWN_CA},
	{"client certificate used as server",
	 {"client-chain.pem", "client.key", "ca.pem"},
	 CLIENT_OK,
	 .server_name = "app1.test",
	 .expect_server = ANY,
	 .expect_client = MTLS_REASON_BAD_KEY_USAGE},
	{"wrong server name", SERVER_OK, CLIENT_OK, .server_name = "wrong.test",
	 .expect_server = ANY, .expect_client = MTLS_REASON_NAME_MISMATCH},
	{"wrong server IP", SERVER_OK, CLIENT_OK, .server_name = "127.0.0.2", .expect_server = ANY,
	 .expect_client = MTLS_REASON_NAME_MISMATCH},
	{"name only in CN is not enough",
	 {"cnonly-server-chain.pem", "cnonly-server.key", "ca.pem"},
	 CLIENT_OK,
	 .server_name = "cnonly.test",
	 .expect_server = ANY,
	 .expect_client = MTLS_REASON_NAME_MISMATCH},
	{"expired server",
	 {"expired-server-chain.pem", "expired-server.key", "ca.pem"},
	 CLIENT_OK,
	 .expect_server = ANY,
	 .expect_client = MTLS_REASON_EXPIRED},
	{"revoked server",
	 {"revoked-server-chain.pem", "revoked-server.key", "ca.pem"},
	 CLIENT_OK,
	 .client_crl = "crl.pem",
	 .expect_server = ANY,
	 .expect_client = MTLS_REASON_REVOKED},
	{"client trusts another CA only",
	 SERVER_OK,
	 {"client-chain.pem", "client.key", "other-ca.pem"},
	 .expect_server = ANY,
	 .expect_client = MTLS_REASON_UNKNOWN_CA},
};

static void spki_of(const char *pem_file, char out[65])
{
	FILE *f = fopen(cert_path(pem_file), "r");
	X509 *x = f != NULL ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
	unsigned char *der = NULL, md[32];
	unsigned int n = 0;
	int len;

	assert_non_null(x);
	fclose(f);
	len = i2d_PUBKEY(X509_get0_pubkey(x), &der);
	assert_true(len > 0);
	assert_int_equal(EVP_Digest(der, (size_t)len, md, &n, EVP_sha256(), NULL), 1);
	for (unsigned i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	OPENSSL_free(der);
	X509_free(x);
}

static struct mtls_config *side_config(const struct side *s, int tls)
{
	struct mtls_config *cfg = mtls_config_new();

	assert_non_null(cfg);
	if (s->cert != NULL) {
		assert_int_equal(mtls_config_set_cert_file(cfg, cert_path(s->cert)), 0);
		assert_int_equal(mtls_config_set_key_file(cfg, cert_path(s->key)), 0);
	}
	assert_int_equal(mtls_config_set_ca_file(cfg, cert_path(s->ca)), 0);
	assert_int_equal(mtls_config_set_protocols(cfg, tls, tls), 0);
	return cfg;
}

/* A plain OpenSSL client that will present what libmtls would refuse to load. Driven by
 * hand until the server's verdict is in; returns the server's reason. */
static enum mtls_reason raw_client_case(struct mtls *server, const struct side *s, int tls)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	struct mtls *sc;
	enum mtls_reason reason;
	SSL *ssl;
	int fds[2], rc = MTLS_WANT_POLLIN;

	assert_non_null(ctx);
	SSL_CTX_set_security_level(ctx, 0);
	SSL_CTX_set_min_proto_version(ctx, tls);
	SSL_CTX_set_max_proto_version(ctx, tls);
	assert_int_equal(SSL_CTX_use_certificate_chain_file(ctx, cert_path(s->cert)), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey_file(ctx, cert_path(s->key), SSL_FILETYPE_PEM), 1);
	ssl = SSL_new(ctx);
	test_socketpair(fds);
	SSL_set_fd(ssl, fds[1]);
	sc = mtls_accept_fd(server, fds[0]);
	assert_non_null(sc);
	for (int i = 0; i < 200 && (rc == MTLS_WANT_POLLIN || rc == MTLS_WANT_POLLOUT); i++) {
		SSL_connect(ssl);
		rc = mtls_handshake(sc);
	}
	assert_int_equal(rc, -1);
	reason = mtls_error_reason(sc);
	mtls_free(sc);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	close(fds[0]);
	close(fds[1]);
	ERR_clear_error();
	return reason;
}

static void run_case(const struct matrix_case *tc, int tls)
{
	struct mtls_config *scfg = side_config(&tc->server, tls);
	struct mtls_config *ccfg = side_config(&tc->client, tls);
	struct mtls *server = mtls_server_new(), *client = mtls_client_new();
	struct mtls *sc, *cc;
	int fds[2], srv_rc, cli_rc;

	if (tc->crl != NULL)
		assert_int_equal(mtls_config_add_crl_file(scfg, cert_path(tc->crl)), 0);
	if (tc->client_crl != NULL)
		assert_int_equal(mtls_config_add_crl_file(ccfg, cert_path(tc->client_crl)), 0);
	mtls_config_set_crl_check_chain(scfg, tc->crl_chain);
	if (tc->pin_client_spki || tc->pin != NULL) {
		char pin[65];

		if (tc->pin_client_spki)
			spki_of(tc->client.cert, pin);
		assert_int_equal(
			mtls_config_allow_spki_sha256(scfg, tc->pin != NULL ? tc->pin : pin), 0);
	} else {
		assert_int_equal(
			mtls_config_allow_uri(scfg, tc->allow_uri != NULL
							    ? tc->allow_uri
							    : "spiffe://test.mtls/ns/prod/sa/*"),
			0);
	}
	if (tc->depth != 0)
		assert_int_equal(mtls_config_set_verify_depth(scfg, tc->depth), 0);
	if (mtls_configure(server, scfg) != 0)
		fail_msg("%s: server config: %s", tc->name, mtls_error(server));
	mtls_config_free(scfg);
	if (tc->raw_client) {
		enum mtls_reason r = raw_client_case(server, &tc->client, tls);

		if ((int)r != tc->expect_server)
			fail_msg("TLS %x, %s: server reason %s, expected %s", tls, tc->name,
				 mtls_reason_name(r),
				 mtls_reason_name((enum mtls_reason)tc->expect_server));
		/* and libmtls itself refuses to load such a certificate */
		assert_int_equal(mtls_configure(client, ccfg), -1);
		mtls_config_free(ccfg);
		mtls_free(server);
		mtls_free(client);
		return;
	}
	if (mtls_configure(client, ccfg) != 0)
		fail_msg("%s: client config: %s", tc->name, mtls_error(client));
	mtls_config_free(ccfg);

	test_socketpair(fds);
	sc = mtls_accept_fd(server, fds[0]);
	cc = mtls_connect_fd(client, fds[1],
			     tc->server_name != NULL ? tc->server_name : "server.test");
	assert_non_null(sc);
	assert_non_null(cc);
	test_handshake_pair(sc, cc, &srv_rc, &cli_rc);

	if (tc->expect_server != ANY) {
		if ((int)mtls_error_reason(sc) != tc->expect_server)
			fail_msg("TLS %x, %s: server reason %s, expected %s (%s)", tls, tc->name,
				 mtls_reason_name(mtls_error_reason(sc)),
				 mtls_reason_name((enum mtls_reason)tc->expect_server),
				 mtls_error(sc));
		assert_int_equal(srv_rc, tc->expect_server == MTLS_REASON_NONE ? 0 : -1);
		/* every refusal explains itself */
		if (srv_rc != 0)
			assert_true(strlen(mtls_error(sc)) > 20);
	}
	if (tc->expect_client != ANY) {
		if ((int)mtls_error_reason(cc) != tc->expect_client)
			fail_msg("TLS %x, %s: client reason %s, expected %s (%s)", tls, tc->name,
				 mtls_reason_name(mtls_error_reason(cc)),
				 mtls_reason_name((enum mtls_reason)tc->expect_client),
				 mtls_error(cc));
		assert_int_equal(cli_rc, tc->expect_client == MTLS_REASON_NONE ? 0 : -1);
	}
	/* whichever side refused, the handshake must not have succeeded on both */
	if (tc->expect_server != MTLS_REASON_NONE || tc->expect_client != MTLS_REASON_NONE)
		assert_true(srv_rc != 0 || cli_rc != 0);
	if (srv_rc == 0 && cli_rc == 0) {
		const struct mtls_peer *cp = mtls_conn_peer(sc);

		assert_non_null(cp);
		assert_string_equal(mtls_peer_identity(cp), "spiffe://test.mtls/ns/prod/sa/app1");
		assert_string_equal(mtls_peer_identity(mtls_conn_peer(cc)), "server.test");
		assert_string_equal(mtls_conn_version(sc),
				    tls == MTLS_TLS1_3 ? "TLSv1.3" : "TLSv1.2");
	}
	test_pair_free(sc, cc, fds);
	mtls_free(server);
	mtls_free(client);
}

static void test_matrix_tls13(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		run_case(&cases[i], MTLS_TLS1_3);
}

static void test_matrix_tls12(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		run_case(&cases[i], MTLS_TLS1_2);
}

/* --- a libmtls server against raw bytes and a raw OpenSSL client --------------------- */

static struct mtls *good_server(void)
{
	struct mtls_config *cfg = side_config(&(struct side)SERVER_OK, MTLS_TLS1_3);
	struct mtls *server = mtls_server_new();

	mtls_config_set_protocols(cfg, MTLS_TLS1_2, MTLS_TLS1_3);
	assert_int_equal(mtls_config_allow_uri(cfg, "spiffe://test.mtls/ns/prod/sa/app1"), 0);
	assert_int_equal(mtls_configure(server, cfg), 0);
	mtls_config_free(cfg);
	return server;
}

static char fed_message[600]; /* the message of the last feed_server() */

/* Feed bytes to a server connection, optionally close the other end, return its reason. */
static enum mtls_reason feed_server(const void *bytes, size_t len, bool close_after)
{
	struct mtls *server = good_server();
	struct mtls *sc;
	enum mtls_reason reason;
	int fds[2], rc = MTLS_WANT_POLLIN;

	test_socketpair(fds);
	sc = mtls_accept_fd(server, fds[0]);
	assert_non_null(sc);
	if (len > 0)
		assert_int_equal(write(fds[1], bytes, len), (ssize_t)len);
	if (close_after)
		close(fds[1]);
	for (int i = 0; i < 100 && (rc == MTLS_WANT_POLLIN || rc == MTLS_WANT_POLLOUT); i++)
		rc = mtls_handshake(sc);
	assert_int_equal(rc, -1);
	reason = mtls_error_reason(sc);
	snprintf(fed_message, sizeof(fed_message), "%s", mtls_error(sc));
	mtls_free(sc);
	close(fds[0]);
	if (!close_after)
		close(fds[1]);
	mtls_free(server);
	return reason;
}

static void test_garbage(void **state)
{
	static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	unsigned char junk[256];

	(void)state;
	assert_int_equal(feed_server(http, sizeof(http) - 1, false), MTLS_REASON_NOT_TLS);
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (unsigned char)(i * 37 + 11);
	assert_int_equal(feed_server(junk, sizeof(junk), false), MTLS_REASON_NOT_TLS);
	assert_int_equal(feed_server(NULL, 0, true), MTLS_REASON_TRUNCATED);
}

/* Capture the first flight of a client (its ClientHello) from a raw OpenSSL client. */
static size_t client_hello(unsigned char *buf, size_t cap, int max_version)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl;
	int fds[2];
	ssize_t n;

	assert_non_null(ctx);
	if (max_version != 0) {
		SSL_CTX_set_security_level(ctx, 0);
		SSL_CTX_set_cipher_list(ctx, "DEFAULT@SECLEVEL=0");
		SSL_CTX_set_min_proto_version(ctx, max_version);
		SSL_CTX_set_max_proto_version(ctx, max_version);
	}
	ssl = SSL_new(ctx);
	test_socketpair(fds);
	SSL_set_fd(ssl, fds[0]);
	assert_int_equal(SSL_connect(ssl), -1); /* would block: the hello is written */
	n = read(fds[1], buf, cap);
	assert_true(n > 50);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	close(fds[0]);
	close(fds[1]);
	ERR_clear_error();
	return (size_t)n;
}

static void test_truncated_hello(void **state)
{
	unsigned char hello[4096];
	size_t n = client_hello(hello, sizeof(hello), 0);

	(void)state;
	assert_int_equal(feed_server(hello, n / 2, true), MTLS_REASON_TRUNCATED);
}

static void test_tls11_client(void **state)
{
	unsigned char hello[4096];
	size_t n = client_hello(hello, sizeof(hello), TLS1_1_VERSION);

	(void)state;
	assert_int_equal(feed_server(hello, n, false), MTLS_REASON_PROTOCOL_VERSION);
}

/* What a server makes of bytes that are not a proper ClientHello: not TLS at all, or TLS
 * whose records or handshake messages do not parse (with OpenSSL's words for what). */
struct raw_case {
	const char *name;
	const unsigned char *bytes;
	size_t len;
	int corrupt_at; /* >= 0: a real ClientHello with this byte changed (bytes unused) */
	unsigned char corrupt_to;
	enum mtls_reason expect;
	const char *message_has;
};

static const unsigned char pg_ssl_request[] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
static const unsigned char rtsp[] = "OPTIONS * RTSP/1.0\r\n\r\n";
static const unsigned char v5_record[] = {0x16, 5, 1, 0, 4, 1, 0, 0, 0};
static const unsigned char short_hello[] = {0x16, 3, 1, 0, 8, 1, 0, 0, 4, 'g', 'a', 'r', 'b'};
static const unsigned char unknown_message[] = {0x16, 3, 1, 0, 4, 0x63, 0, 0, 0};
static const unsigned char huge_record[] = {0x16, 3, 1, 0xff, 0xff, 1, 0, 0, 4};
static const unsigned char app_data_first[] = {0x17, 3, 3, 0, 4, 1, 2, 3, 4};

#define RAW(b)	      b, sizeof(b), -1, 0
#define HELLO(at, to) NULL, 0, at, to
#define MALFORMED     MTLS_REASON_MALFORMED, "malformed TLS handshake from the client: "
#define NOT_TLS	      MTLS_REASON_NOT_TLS, "did not speak TLS"

static const struct raw_case raw_cases[] = {
	{"PostgreSQL SSLRequest", RAW(pg_ssl_request), NOT_TLS},
	{"RTSP request", rtsp, sizeof(rtsp) - 1, -1, 0, NOT_TLS},
	{"handshake record of version 5", RAW(v5_record), NOT_TLS},
	{"ClientHello of 4 garbage bytes", RAW(short_hello), MALFORMED},
	{"unknown handshake message", RAW(unknown_message), MALFORMED},
	{"record longer than TLS allows", RAW(huge_record), MALFORMED},
	{"application data before the handshake", RAW(app_data_first), MALFORMED},
	/* a real ClientHello: record header (5), message header (4), version (2), random (32),
	 * session id length at 43 */
	{"ClientHello length one short", HELLO(8, 0), MALFORMED},
	{"session id longer than the message", HELLO(43, 0xff), MALFORMED},
};

static void test_raw_bytes(void **state)
{
	unsigned char hello[4096], buf[4096];
	size_t n = client_hello(hello, sizeof(hello), 0);
	static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";

	(void)state;
	assert_true(n > 50 && hello[0] == 0x16 && hello[5] == 1 && hello[43] == 32);
	for (size_t i = 0; i < sizeof(raw_cases) / sizeof(raw_cases[0]); i++) {
		const struct raw_case *tc = &raw_cases[i];
		const unsigned char *bytes = tc->bytes;
		size_t len = tc->len;
		enum mtls_reason r;

		if (tc->corrupt_at >= 0) {
			memcpy(buf, hello, n);
			buf[tc->corrupt_at] = tc->corrupt_at == 8 ? (unsigned char)(hello[8] - 1)
								  : tc->corrupt_to;
			bytes = buf;
			len = n;
		}
		r = feed_server(bytes, len, false);
		if (r != tc->expect || strstr(fed_message, tc->message_has) == NULL)
			fail_msg("%s: %s (%s), expected %s with '%s'", tc->name,
				 mtls_reason_name(r), fed_message, mtls_reason_name(tc->expect),
				 tc->message_has);
		/* OpenSSL's own words say what did not parse */
		if (r == MTLS_REASON_MALFORMED)
			assert_true(strlen(fed_message) > strlen(tc->message_has) + 5);
	}
	assert_int_equal(feed_server(http, sizeof(http) - 1, false), MTLS_REASON_NOT_TLS);
}

/* --- resumption and reload ----------------------------------------------------------- */

static struct mtls *good_client(void)
{
	struct mtls_config *cfg = side_config(&(struct side)CLIENT_OK, MTLS_TLS1_3);
	struct mtls *client = mtls_client_new();

	mtls_config_set_protocols(cfg, MTLS_TLS1_2, MTLS_TLS1_3);
	assert_int_equal(mtls_configure(client, cfg), 0);
	mtls_config_free(cfg);
	return client;
}

/* One connection; returns whether both sides agreed it was resumed, -1 on failure. */
static int connect_once(struct mtls *server, struct mtls *client, enum mtls_reason *srv_reason)
{
	int fds[2], srv_rc, cli_rc, resumed;
	struct mtls *sc, *cc;

	test_socketpair(fds);
	sc = mtls_accept_fd(server, fds[0]);
	cc = mtls_connect_fd(client, fds[1], "server.test");
	assert_non_null(sc);
	assert_non_null(cc);
	test_handshake_pair(sc, cc, &srv_rc, &cli_rc);
	*srv_reason = mtls_error_reason(sc);
	if (srv_rc != 0 || cli_rc != 0)
		print_message("connect_once: server %s (%s), client %s (%s)\n",
			      mtls_reason_name(mtls_error_reason(sc)), mtls_error(sc),
			      mtls_reason_name(mtls_error_reason(cc)), mtls_error(cc));
	resumed = -1;
	if (srv_rc == 0 && cli_rc == 0) {
		assert_int_equal(mtls_conn_resumed(sc), mtls_conn_resumed(cc));
		assert_string_equal(mtls_peer_identity(mtls_conn_peer(sc)),
				    "spiffe://test.mtls/ns/prod/sa/app1");
		resumed = mtls_conn_resumed(sc);
		assert_int_equal(mtls_close(cc), 0);
	}
	test_pair_free(sc, cc, fds);
	return resumed;
}

/* --- reading ahead, and record buffers ------------------------------------------------ */

/* Read exactly len bytes, waiting up to a second. */
static void read_exact(struct mtls *c, char *buf, size_t len)
{
	size_t got = 0;

	for (int i = 0; i < 1000 && got < len; i++) {
		ssize_t n = mtls_read(c, buf + got, len - got);

		if (n > 0)
			got += (size_t)n;
		else if (n == MTLS_WANT_POLLIN || n == MTLS_WANT_POLLOUT)
			usleep(1000);
		else
			fail_msg("read failed: %s", mtls_error(c));
	}
	assert_int_equal(got, len);
}

/* Three records sent before the server reads arrive in one receive. The server says
 * "drained" only once all three were read, and then a read finds nothing; with buffers kept
 * or given back mid-stream, no byte is lost. */
static void test_read_ahead(void **state)
{
	struct mtls *server = good_server(), *client = good_client();
	struct mtls *sc, *cc;
	int fds[2], srv_rc, cli_rc;
	char buf[20000], big[20000];

	(void)state;
	test_socketpair(fds);
	sc = mtls_accept_fd(server, fds[0]);
	cc = mtls_connect_fd(client, fds[1], "server.test");
	assert_int_equal(mtls_read_drained(sc), 0); /* no handshake yet */
	test_handshake_pair(sc, cc, &srv_rc, &cli_rc);
	assert_int_equal(srv_rc, 0);
	assert_int_equal(cli_rc, 0);
	assert_int_equal(mtls_write(cc, "aaa", 3), 3);
	assert_int_equal(mtls_write(cc, "bbb", 3), 3);
	assert_int_equal(mtls_write(cc, "ccc", 3), 3);
	read_exact(sc, buf, 3);
	assert_memory_equal(buf, "aaa", 3);
	assert_int_equal(mtls_read_drained(sc), 0); /* two records are buffered */
	assert_int_equal(mtls_read(sc, buf, sizeof(buf)), 3);
	assert_memory_equal(buf, "bbb", 3);
	assert_int_equal(mtls_read_drained(sc), 0);
	assert_int_equal(mtls_read(sc, buf, sizeof(buf)), 3);
	assert_memory_equal(buf, "ccc", 3);
	assert_int_equal(mtls_read_drained(sc), 1);
	assert_int_equal(mtls_read(sc, buf, sizeof(buf)), MTLS_WANT_POLLIN);

	/* two records (16384 + 3616 bytes); buffers kept, then given back with one buffered */
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)('a' + i % 23);
	mtls_keep_buffers(sc, 1);
	assert_int_equal(mtls_write(cc, big, sizeof(big)), 16384);
	assert_int_equal(mtls_write(cc, big + 16384, sizeof(big) - 16384), sizeof(big) - 16384);
	read_exact(sc, buf, 100);
	mtls_keep_buffers(sc, 0);
	read_exact(sc, buf + 100, sizeof(buf) - 100);
	assert_memory_equal(buf, big, sizeof(big));
	assert_int_equal(mtls_write(sc, "ok", 2), 2);
	read_exact(cc, buf, 2);
	assert_memory_equal(buf, "ok", 2);

	test_pair_free(sc, cc, fds);
	mtls_free(server);
	mtls_free(client);
}

static void test_resumption(void **state)
{
	struct mtls *server = good_server(), *client = good_client();
	enum mtls_reason r;

	(void)state;
	assert_int_equal(connect_once(server, client, &r), 0);
	assert_int_equal(connect_once(server, client, &r), 1);
	assert_int_equal(connect_once(server, client, &r), 1);
	mtls_free(server);
	mtls_free(client);
}

/* Parallel connections from one client each resume with a ticket of their own: the server
 * takes a ticket out of its store when it is used, so a client offering one ticket on
 * two connections at once would resume only one of them. */
static void test_parallel_resumption(void **state)
{
	struct mtls *server = good_server(), *client = good_client();
	enum mtls_reason r;

	(void)state;
	assert_int_equal(connect_once(server, client, &r), 0); /* full: one ticket kept */
	for (int round = 0; round < 2; round++) {
		int fds[2][2], srv_rc, cli_rc;
		struct mtls *sc[2], *cc[2];

		/* both connections choose their ticket before either handshake runs */
		for (int i = 0; i < 2; i++) {
			test_socketpair(fds[i]);
			sc[i] = mtls_accept_fd(server, fds[i][0]);
			cc[i] = mtls_connect_fd(client, fds[i][1], "server.test");
		}
		for (int i = 0; i < 2; i++) {
			test_handshake_pair(sc[i], cc[i], &srv_rc, &cli_rc);
			assert_int_equal(srv_rc, 0);
			assert_int_equal(cli_rc, 0);
			/* round 0: one ticket for two connections; round 1: one each */
			if (round == 1)
				assert_int_equal(mtls_conn_resumed(sc[i]), 1);
		}
		if (round == 0)
			assert_int_equal(mtls_conn_resumed(sc[0]) + mtls_conn_resumed(sc[1]), 1);
		for (int i = 0; i < 2; i++) {
			test_pair_free(sc[i], cc[i], fds[i]);
		}
	}
	mtls_free(server);
	mtls_free(client);
}

static void test_reload(void **state)
{
	struct mtls *server = good_server(), *client = good_client();
	struct mtls_config *bad = mtls_config_new(), *revoking;
	struct mtls *sc, *cc;
	int fds[2], srv_rc, cli_rc;
	enum mtls_reason r;
	char buf[16];

	(void)state;
	/* an established connection */
	test_socketpair(fds);
	sc = mtls_accept_fd(server, fds[0]);
	cc = mtls_connect_fd(client, fds[1], "server.test");
	test_handshake_pair(sc, cc, &srv_rc, &cli_rc);
	assert_int_equal(srv_rc, 0);

	/* a broken config is refused and the old one stays in place */
	assert_int_equal(mtls_config_set_cert_file(bad, cert_path("client-chain.pem")), 0);
	assert_int_equal(mtls_config_set_key_file(bad, cert_path("mismatch.key")), 0);
	assert_int_equal(mtls_config_set_ca_file(bad, cert_path("ca.pem")), 0);
	mtls_config_set_allow_any_identity(bad, 1);
	assert_int_equal(mtls_configure(server, bad), -1);
	assert_int_equal(mtls_error_reason(server), MTLS_REASON_KEY_MISMATCH);
	mtls_config_free(bad);
	assert_true(connect_once(server, client, &r) >= 0);

	/* a new CRL revoking nobody we use, but with a different allow rule: new handshakes
	 * use it at once, and even a session ticket from before does not get around it */
	revoking = side_config(&(struct side)SERVER_OK, MTLS_TLS1_3);
	mtls_config_set_protocols(revoking, MTLS_TLS1_2, MTLS_TLS1_3);
	assert_int_equal(mtls_config_add_crl_file(revoking, cert_path("crl.pem")), 0);
	assert_int_equal(mtls_config_allow_uri(revoking, "spiffe://test.mtls/ns/dev/sa/*"), 0);
	assert_int_equal(mtls_configure(server, revoking), 0);
	mtls_config_free(revoking);
	assert_int_equal(connect_once(server, client, &r), -1);
	assert_int_equal(r, MTLS_REASON_IDENTITY_NOT_ALLOWED);

	/* the connection made before both reloads still works both ways */
	assert_int_equal(mtls_write_all(cc, "ping", 4, 1000), 0);
	assert_int_equal(mtls_read_wait(sc, buf, sizeof(buf), 1000), 4);
	assert_memory_equal(buf, "ping", 4);
	assert_int_equal(mtls_write_all(sc, "pong", 4, 1000), 0);
	assert_int_equal(mtls_read_wait(cc, buf, sizeof(buf), 1000), 4);
	/* orderly close: close_notify reads as end of stream */
	assert_int_equal(mtls_close(sc), 0);
	assert_int_equal(mtls_read_wait(cc, buf, sizeof(buf), 1000), 0);

	test_pair_free(sc, cc, fds);
	mtls_free(server);
	mtls_free(client);
}

/* --- verification cache and session store ------------------------------------------- */

#define APP1 "spiffe://test.mtls/ns/prod/sa/app1"

static struct mtls *zoo_client(bool tickets)
{
	size_t len;
	char *chain = test_slurp(cert_path("client-chain.pem"), &len);
	char *key = test_slurp(cert_path("client.key"), &len);
	struct mtls *client = test_mem_client(chain, key, tickets);

	free(chain);
	free(key);
	return client;
}

/* Configure a server that allows app1, with a CRL (PEM in memory) if crl is not NULL and a
 * CA bundle in memory if ca is not NULL. */
static void configure_server(struct mtls *server, const char *crl, const char *ca)
{
	struct mtls_config *cfg = side_config(&(struct side)SERVER_OK, MTLS_TLS1_3);

	assert_int_equal(mtls_config_allow_uri(cfg, APP1), 0);
	if (crl != NULL)
		assert_int_equal(mtls_config_add_crl_mem(cfg, (const uint8_t *)crl, strlen(crl)),
				 0);
	if (ca != NULL)
		assert_int_equal(mtls_config_set_ca_mem(cfg, (const uint8_t *)ca, strlen(ca)), 0);
	assert_int_equal(mtls_configure(server, cfg), 0);
	mtls_config_free(cfg);
}

/* One connection: the server's result (0 or -1), its reason, and whether it resumed. */
static int try_connect(struct mtls *server, struct mtls *client, enum mtls_reason *reason,
		       bool *resumed)
{
	int fds[2], srv_rc, cli_rc;
	struct mtls *sc, *cc;

	test_socketpair(fds);
	sc = mtls_accept_fd(server, fds[0]);
	cc = mtls_connect_fd(client, fds[1], "server.test");
	assert_non_null(sc);
	assert_non_null(cc);
	test_handshake_pair(sc, cc, &srv_rc, &cli_rc);
	*reason = mtls_error_reason(sc);
	*resumed = mtls_conn_resumed(sc) == 1;
	if (srv_rc == 0 && cli_rc == 0) {
		assert_string_equal(mtls_peer_identity(mtls_conn_peer(sc)), APP1);
		assert_int_equal(mtls_close(cc), 0);
	}
	test_pair_free(sc, cc, fds);
	return srv_rc == 0 && cli_rc == 0 ? 0 : -1;
}

static unsigned long cache_hits(struct mtls *server)
{
	unsigned long hits, misses;

	mtls_endpoint_verify_cache_stats(server, &hits, &misses);
	return hits;
}

/* A certificate that was verified and cached, and whose session can be resumed, is refused
 * once it is past its notAfter: on a full handshake (the cached verification is out of its
 * window) and on resumption. */
static void test_cached_then_expired(void **state)
{
	struct mtls *server = mtls_server_new(), *full, *resuming;
	enum mtls_reason r;
	char *chain, *key;
	bool resumed;

	(void)state;
	test_issue_client(2, APP1, &chain, &key);
	configure_server(server, NULL, NULL);
	full = test_mem_client(chain, key, false);
	resuming = test_mem_client(chain, key, true);

	assert_int_equal(try_connect(server, full, &r, &resumed), 0);
	assert_int_equal(cache_hits(server), 0);
	assert_int_equal(try_connect(server, resuming, &r, &resumed), 0);
	assert_false(resumed);
	assert_int_equal(cache_hits(server), 1); /* the same chain: verified from the cache */
	assert_int_equal(try_connect(server, resuming, &r, &resumed), 0);
	assert_true(resumed);
	assert_int_equal(cache_hits(server), 2); /* a resumption decides on the cached path */

	sleep(3); /* past notAfter */
	assert_int_equal(try_connect(server, full, &r, &resumed), -1);
	assert_int_equal(r, MTLS_REASON_EXPIRED);
	assert_int_equal(cache_hits(server), 2);
	assert_int_equal(try_connect(server, resuming, &r, &resumed), -1);
	assert_int_equal(r, MTLS_REASON_EXPIRED);

	free(chain);
	free(key);
	mtls_free(full);
	mtls_free(resuming);
	mtls_free(server);
}

/* A CRL reload that revokes a cached, resumable client refuses it at once, on full and on
 * resumed handshakes; the session store survives the reload (the CA did not change), so the
 * resumption is attempted and refused by the re-check, not merely forgotten. */
static void test_cached_then_revoked(void **state)
{
	struct mtls *server = mtls_server_new(), *full = zoo_client(false),
		    *resuming = zoo_client(true);
	enum mtls_reason r;
	size_t len;
	char *nobody = test_make_crl(-60, 3600, NULL, &len);
	char *revoking = test_make_crl(-60, 3600, "client-chain.pem", &len);
	bool resumed;

	(void)state;
	configure_server(server, nobody, NULL);
	assert_int_equal(try_connect(server, full, &r, &resumed), 0);
	assert_int_equal(try_connect(server, full, &r, &resumed), 0);
	assert_int_equal(cache_hits(server), 1);
	assert_int_equal(try_connect(server, resuming, &r, &resumed), 0);
	assert_int_equal(try_connect(server, resuming, &r, &resumed), 0);
	assert_true(resumed);

	/* a reload that changes nothing of the trust keeps the sessions */
	configure_server(server, nobody, NULL);
	assert_int_equal(try_connect(server, resuming, &r, &resumed), 0);
	assert_true(resumed);

	configure_server(server, revoking, NULL);
	assert_int_equal(try_connect(server, full, &r, &resumed), -1);
	assert_int_equal(r, MTLS_REASON_REVOKED);
	assert_int_equal(try_connect(server, resuming, &r, &resumed), -1);
	assert_int_equal(r, MTLS_REASON_REVOKED);
	assert_true(resumed);

	free(nobody);
	free(revoking);
	mtls_free(full);
	mtls_free(resuming);
	mtls_free(server);
}

/* --- the caller's config after mtls_configure() ------------------------------------- */

#define OTHER "spiffe://test.mtls/ns/dev/sa/other" /* client2's identity */

/* Verify a zoo chain on an endpoint: 0 accepted, else the reason. */
static enum mtls_reason verify_zoo(struct mtls *ep, const char *chain)
{
	size_t len;
	char *pem = test_slurp(cert_path(chain), &len);
	int rc = mtls_verify_chain_pem(ep, (const uint8_t *)pem, len, NULL, NULL);
	enum mtls_reason r = mtls_error_reason(ep);

	free(pem);
	assert_int_equal(rc == 0, r == MTLS_REASON_NONE);
	return r;
}

/* An allow rule added to a config after mtls_configure() lets nobody in until the config is
 * applied again: the endpoint compiled its own copy. */
static void test_config_changed_after_configure(void **state)
{
	struct mtls_config *cfg = side_config(&(struct side)SERVER_OK, MTLS_TLS1_3);
	struct mtls_config *ccfg = side_config(&(struct side)CLIENT("client2"), MTLS_TLS1_3);
	struct mtls *server = mtls_server_new(), *client2 = mtls_client_new();
	enum mtls_reason r;

	(void)state;
	assert_int_equal(mtls_config_set_session_tickets(ccfg, 0), 0);
	assert_int_equal(mtls_configure(client2, ccfg), 0);
	mtls_config_free(ccfg);
	assert_int_equal(mtls_config_allow_uri(cfg, APP1), 0);
	assert_int_equal(mtls_configure(server, cfg), 0);

	assert_int_equal(mtls_config_allow_uri(cfg, OTHER), 0);
	assert_int_equal(mtls_config_set_allow_any_identity(cfg, 1), 0);
	assert_int_equal(verify_zoo(server, "client2-chain.pem"), MTLS_REASON_IDENTITY_NOT_ALLOWED);
	assert_int_equal(connect_once(server, client2, &r), -1);
	assert_int_equal(r, MTLS_REASON_IDENTITY_NOT_ALLOWED);
	assert_int_equal(verify_zoo(server, "client-chain.pem"), MTLS_REASON_NONE);

	/* applied again: now it counts */
	assert_int_equal(mtls_configure(server, cfg), 0);
	assert_int_equal(verify_zoo(server, "client2-chain.pem"), MTLS_REASON_NONE);
	assert_string_equal(mtls_peer_matched_rule(mtls_verified_peer(server)), "uri:" OTHER);
	/* freeing the config changes nothing either */
	mtls_config_free(cfg);
	assert_int_equal(verify_zoo(server, "client2-chain.pem"), MTLS_REASON_NONE);
	assert_string_equal(mtls_peer_matched_rule(mtls_verified_peer(server)), "uri:" OTHER);

	mtls_free(client2);
	mtls_free(server);
}

struct rule_adder {
	struct mtls_config *cfg;
	atomic_int stop;
	int added;
};

static void *add_rules(void *arg)
{
	struct rule_adder *ra = arg;
	char rule[100];

	for (; ra->added < 100000 && !atomic_load(&ra->stop); ra->added++) {
		snprintf(rule, sizeof(rule), "spiffe://test.mtls/ns/n%d/sa/*", ra->added);
		if (mtls_config_allow_uri(ra->cfg, rule) != 0 ||
		    mtls_config_allow_dns(ra->cfg, "nobody.test") != 0 ||
		    mtls_config_allow_cn(ra->cfg, "nobody") != 0)
			break;
	}
	return NULL;
}

/* One thread piles rules onto a config while another verifies and handshakes against the
 * endpoint it was applied to. Before endpoints owned a copy, the matcher walked the rule
 * arrays while they were realloc'd (a use after free under ASan), and new rules counted. */
static void test_config_changed_while_running(void **state)
{
	struct mtls_config *cfg = side_config(&(struct side)SERVER_OK, MTLS_TLS1_3);
	struct mtls *server = mtls_server_new(), *client = good_client();
	struct rule_adder ra = {.cfg = cfg};
	enum mtls_reason r;
	pthread_t t;

	(void)state;
	assert_int_equal(mtls_config_allow_uri(cfg, APP1), 0);
	assert_int_equal(mtls_configure(server, cfg), 0);
	atomic_init(&ra.stop, 0);
	assert_int_equal(pthread_create(&t, NULL, add_rules, &ra), 0);
	for (int round = 0; round < 300; round++) {
		/* client2 matches no rule: every check walks all of them */
		assert_int_equal(verify_zoo(server, "client2-chain.pem"),
				 MTLS_REASON_IDENTITY_NOT_ALLOWED);
		if (round % 30 == 0) {
			assert_int_equal(verify_zoo(server, "client-chain.pem"), MTLS_REASON_NONE);
			assert_true(connect_once(server, client, &r) >= 0);
		}
	}
	atomic_store(&ra.stop, 1);
	pthread_join(t, NULL);
	assert_true(ra.added > 0);
	assert_int_equal(mtls_config_allow_uri(cfg, OTHER), 0);
	assert_int_equal(verify_zoo(server, "client2-chain.pem"), MTLS_REASON_IDENTITY_NOT_ALLOWED);
	mtls_config_free(cfg);
	mtls_free(client);
	mtls_free(server);
}

/* --- mtls_verify_chain_pem() from several threads --------------------------------- */

struct verifier {
	struct mtls *ep;
	const char *chain;
	enum mtls_reason expect;
	const char *identity; /* of the accepted peer, or a part of the refusal message */
	int wrong;	      /* results that were not this thread's own */
	char first_wrong[300];
};

static void *verify_loop(void *arg)
{
	struct verifier *v = arg;
	size_t len;
	char *pem = test_slurp(cert_path(v->chain), &len);

	for (int i = 0; i < 150; i++) {
		int rc = mtls_verify_chain_pem(v->ep, (const uint8_t *)pem, len, NULL, NULL);
		const struct mtls_peer *p = mtls_verified_peer(v->ep);
		bool ok = mtls_error_reason(v->ep) == v->expect && (rc == 0) == (p != NULL) &&
			  (rc == 0) == (v->expect == MTLS_REASON_NONE) &&
			  mtls_conn_warning(v->ep) == NULL;

		if (ok && p != NULL)
			ok = strcmp(mtls_peer_identity(p), v->identity) == 0;
		else if (ok)
			ok = strstr(mtls_error(v->ep), v->identity) != NULL;
		if (!ok && v->wrong++ == 0)
			snprintf(v->first_wrong, sizeof(v->first_wrong), "rc %d, %s: %s", rc,
				 mtls_reason_name(mtls_error_reason(v->ep)), mtls_error(v->ep));
	}
	free(pem);
	return NULL;
}

/* Two threads verify different chains on one endpoint at once (and a third handshakes):
 * each sees its own verdict, peer and message. The results once lived in the endpoint,
 * written without a lock: one thread freed the peer the other was reading. */
static void test_verify_from_threads(void **state)
{
	struct mtls *server = good_server(), *client = good_client();
	struct verifier v[2] = {
		{server, "client-chain.pem", MTLS_REASON_NONE, APP1, 0, ""},
		{server, "client2-chain.pem", MTLS_REASON_IDENTITY_NOT_ALLOWED, OTHER, 0, ""},
	};
	enum mtls_reason r;
	pthread_t t[2];

	(void)state;
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, verify_loop, &v[i]), 0);
	for (int i = 0; i < 5; i++)
		assert_true(connect_once(server, client, &r) >= 0);
	for (int i = 0; i < 2; i++) {
		pthread_join(t[i], NULL);
		if (v[i].wrong > 0)
			fail_msg("%s: %d results were not this thread's, first: %s", v[i].chain,
				 v[i].wrong, v[i].first_wrong);
	}
	/* this thread verified nothing on the endpoint */
	assert_null(mtls_verified_peer(server));
	assert_int_equal(mtls_error_reason(server), MTLS_REASON_NONE);
	mtls_free(client);
	mtls_free(server);
}

/* --- names with an embedded NUL ---------------------------------------------------- */

struct nul_case {
	int type; /* GEN_DNS or GEN_URI */
	const char *name;
	size_t len;	   /* including the NUL and what follows */
	const char *allow; /* a rule the name before the NUL would satisfy */
	bool allow_is_dns;
};

static const struct nul_case nul_cases[] = {
	{GEN_URI, APP1 "\0.evil", sizeof(APP1 "\0.evil") - 1, APP1, false},
	{GEN_DNS, "app1.test\0.evil.test", sizeof("app1.test\0.evil.test") - 1, "app1.test", true},
	{GEN_DNS, "\0app1.test", sizeof("\0app1.test") - 1, "*.test", true},
};

/* A client certificate from the zoo's issuing CA whose only SAN is the given bytes. */
static void issue_nul_san(const struct nul_case *tc, char **chain, char **key_pem)
{
	X509 *issuer = test_read_cert("int.pem");
	FILE *f = fopen(cert_path("int.key"), "r");
	EVP_PKEY *issuer_key = f != NULL ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
	struct test_cert spec = {.subject = "CN=nul", .san = ""};
	GENERAL_NAMES *gens = GENERAL_NAMES_new();
	GENERAL_NAME *g = GENERAL_NAME_new();
	ASN1_IA5STRING *v = ASN1_IA5STRING_new();
	EVP_PKEY *key;
	X509 *leaf, *both[2];

	assert_non_null(issuer_key);
	fclose(f);
	leaf = test_cert_make(&spec, issuer, issuer_key, &key);
	assert_int_equal(ASN1_STRING_set(v, tc->name, (int)tc->len), 1);
	GENERAL_NAME_set0_value(g, tc->type, v);
	assert_true(sk_GENERAL_NAME_push(gens, g) > 0);
	assert_int_equal(X509_add1_ext_i2d(leaf, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT),
			 1);
	assert_true(X509_sign(leaf, issuer_key, EVP_sha256()) > 0); /* again, with the SAN */
	both[0] = leaf;
	both[1] = issuer;
	*chain = test_certs_pem(both, 2);
	*key_pem = test_key_pem(key);
	GENERAL_NAMES_free(gens);
	EVP_PKEY_free(key);
	EVP_PKEY_free(issuer_key);
	X509_free(leaf);
	X509_free(issuer);
}

/* A SAN with a NUL byte is an attack on matchers that stop at the NUL ("app1.test\0.evil"
 * would pass for app1.test): the certificate is refused, whatever rule the name before the
 * NUL would satisfy, by mtls verify and in a handshake. */
static void test_nul_in_san(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(nul_cases) / sizeof(nul_cases[0]); i++) {
		const struct nul_case *tc = &nul_cases[i];
		struct mtls_config *cfg = side_config(&(struct side)SERVER_OK, MTLS_TLS1_3);
		struct mtls *server = mtls_server_new(), *client;
		char *chain, *key;
		enum mtls_reason r;
		bool resumed;

		issue_nul_san(tc, &chain, &key);
		assert_int_equal(tc->allow_is_dns ? mtls_config_allow_dns(cfg, tc->allow)
						  : mtls_config_allow_uri(cfg, tc->allow),
				 0);
		assert_int_equal(mtls_configure(server, cfg), 0);
		mtls_config_free(cfg);
		if (mtls_verify_chain_pem(server, (const uint8_t *)chain, strlen(chain), NULL,
					  NULL) == 0 ||
		    mtls_error_reason(server) != MTLS_REASON_BAD_CERTIFICATE ||
		    strstr(mtls_error(server), "NUL byte") == NULL)
			fail_msg("case %zu: %s: %s", i, mtls_reason_name(mtls_error_reason(server)),
				 mtls_error(server));
		assert_null(mtls_verified_peer(server));

		client = test_mem_client(chain, key, false);
		assert_int_equal(try_connect(server, client, &r, &resumed), -1);
		assert_int_equal(r, MTLS_REASON_BAD_CERTIFICATE);
		free(chain);
		free(key);
		mtls_free(client);
		mtls_free(server);
	}
}

/* --- email SANs ---------------------------------------------------------------------- */

/* A client certificate from the zoo's issuing CA with the SAN san (openssl.cnf syntax). */
static void issue_client_san(const char *subject, const char *san, char **chain, char **key_pem)
{
	X509 *issuer = test_read_cert("int.pem");
	FILE *f = fopen(cert_path("int.key"), "r");
	EVP_PKEY *issuer_key = f != NULL ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
	struct test_cert spec = {.subject = subject, .san = san};
	EVP_PKEY *key;
	X509 *both[2];

	assert_non_null(issuer_key);
	fclose(f);
	both[0] = test_cert_make(&spec, issuer, issuer_key, &key);
	both[1] = issuer;
	*chain = test_certs_pem(both, 2);
	*key_pem = test_key_pem(key);
	EVP_PKEY_free(key);
	EVP_PKEY_free(issuer_key);
	X509_free(both[0]);
	X509_free(issuer);
}

/* Email rules admit a client by its rfc822Name SAN: an address, or any of a domain (which
 * compares ignoring case); the peer lists its addresses. */
static void test_email_identity(void **state)
{
	static const struct {
		const char *rule;
		enum mtls_reason expect;
	} email_cases[] = {
		{"alice@example.org", MTLS_REASON_NONE},
		{"*@EXAMPLE.org", MTLS_REASON_NONE},
		{"bob@example.org", MTLS_REASON_IDENTITY_NOT_ALLOWED},
		{"Alice@example.org", MTLS_REASON_IDENTITY_NOT_ALLOWED},
		{"*@sub.example.org", MTLS_REASON_IDENTITY_NOT_ALLOWED},
	};
	char *chain, *key;

	(void)state;
	issue_client_san("CN=alice", "email:alice@example.org,email:alice@other.test", &chain,
			 &key);
	for (size_t i = 0; i < sizeof(email_cases) / sizeof(email_cases[0]); i++) {
		struct mtls_config *cfg = side_config(&(struct side)SERVER_OK, MTLS_TLS1_3);
		struct mtls *server = mtls_server_new(),
			    *client = test_mem_client(chain, key, false);
		struct mtls *sc, *cc;
		int fds[2], srv_rc, cli_rc;
		const struct mtls_peer *p;
		char rule[100];

		assert_int_equal(mtls_config_allow_email(cfg, email_cases[i].rule), 0);
		assert_int_equal(mtls_configure(server, cfg), 0);
		mtls_config_free(cfg);
		test_socketpair(fds);
		sc = mtls_accept_fd(server, fds[0]);
		cc = mtls_connect_fd(client, fds[1], "server.test");
		test_handshake_pair(sc, cc, &srv_rc, &cli_rc);
		if (mtls_error_reason(sc) != email_cases[i].expect)
			fail_msg("rule %s: %s (%s)", email_cases[i].rule,
				 mtls_reason_name(mtls_error_reason(sc)), mtls_error(sc));
		if (email_cases[i].expect == MTLS_REASON_NONE) {
			p = mtls_conn_peer(sc);
			assert_int_equal(mtls_peer_email_count(p), 2);
			assert_string_equal(mtls_peer_email(p, 0), "alice@example.org");
			assert_string_equal(mtls_peer_email(p, 1), "alice@other.test");
			assert_null(mtls_peer_email(p, 2));
			assert_string_equal(mtls_peer_identity(p), "alice");
			snprintf(rule, sizeof(rule), "email:%s", email_cases[i].rule);
			assert_string_equal(mtls_peer_matched_rule(p), rule);
		} else {
			/* the refusal lists the addresses it had */
			assert_non_null(strstr(mtls_error(sc), "email:alice@example.org"));
		}
		/* mtls_verify_chain_pem() decides the same */
		assert_int_equal(mtls_verify_chain_pem(server, (const uint8_t *)chain,
						       strlen(chain), NULL, NULL) == 0,
				 email_cases[i].expect == MTLS_REASON_NONE);
		test_pair_free(sc, cc, fds);
		mtls_free(client);
		mtls_free(server);
	}
	free(chain);
	free(key);
}

/* A new CA bundle drops the sessions: they were verified against trust anchors that may be
 * gone. */
static void test_sessions_dropped_on_ca_change(void **state)
{
	struct mtls *server = mtls_server_new(), *resuming = zoo_client(true);
	enum mtls_reason r;
	size_t n1, n2;
	char *ca = test_slurp(cert_path("ca.pem"), &n1);
	char *other = test_slurp(cert_path("other-ca.pem"), &n2);
	char *both = malloc(n1 + n2 + 1);
	bool resumed;

	(void)state;
	memcpy(both, ca, n1);
	memcpy(both + n1, other, n2 + 1);
	configure_server(server, NULL, NULL);
	assert_int_equal(try_connect(server, resuming, &r, &resumed), 0);
	assert_int_equal(try_connect(server, resuming, &r, &resumed), 0);
	assert_true(resumed);
	configure_server(server, NULL, both);
	assert_int_equal(try_connect(server, resuming, &r, &resumed), 0);
	assert_false(resumed);
	assert_int_equal(try_connect(server, resuming, &r, &resumed), 0);
	assert_true(resumed);

	free(ca);
	free(other);
	free(both);
	mtls_free(resuming);
	mtls_free(server);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN); /* as every program using sockets should */
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_matrix_tls13),
		cmocka_unit_test(test_matrix_tls12),
		cmocka_unit_test(test_garbage),
		cmocka_unit_test(test_truncated_hello),
		cmocka_unit_test(test_tls11_client),
		cmocka_unit_test(test_raw_bytes),
		cmocka_unit_test(test_read_ahead),
		cmocka_unit_test(test_resumption),
		cmocka_unit_test(test_parallel_resumption),
		cmocka_unit_test(test_reload),
		cmocka_unit_test(test_cached_then_expired),
		cmocka_unit_test(test_cached_then_revoked),
		cmocka_unit_test(test_sessions_dropped_on_ca_change),
		cmocka_unit_test(test_config_changed_after_configure),
		cmocka_unit_test(test_config_changed_while_running),
		cmocka_unit_test(test_verify_from_threads),
		cmocka_unit_test(test_nul_in_san),
		cmocka_unit_test(test_email_identity),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
