/*
 * ALPN (mtls_config_set_alpn(), mtls_conn_alpn()) in real handshakes over socketpairs, TLS
 * 1.2 and 1.3: the protocol selected both ways, a client offering others refused with
 * no_application_protocol and a message naming what it offered, a client offering none let
 * in without one, a reload changing the protocol, resumption; then raw OpenSSL peers (a
 * client offering several protocols, `openssl s_client -alpn` over TCP); and the table of
 * mtls_identity_match().
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "testutil.h"

#define APP1 "spiffe://test.mtls/ns/prod/sa/app1"

static const int versions[] = {MTLS_TLS1_2, MTLS_TLS1_3};

static struct mtls_config *side_config(bool server, int tls, const char *alpn)
{
	struct mtls_config *cfg = mtls_config_new();

	assert_non_null(cfg);
	assert_int_equal(mtls_config_set_cert_file(
				 cfg, cert_path(server ? "server-chain.pem" : "client-chain.pem")),
			 0);
	assert_int_equal(
		mtls_config_set_key_file(cfg, cert_path(server ? "server.key" : "client.key")), 0);
	assert_int_equal(mtls_config_set_ca_file(cfg, cert_path("ca.pem")), 0);
	assert_int_equal(mtls_config_set_protocols(cfg, tls, tls), 0);
	if (server)
		assert_int_equal(mtls_config_allow_uri(cfg, APP1), 0);
	assert_int_equal(mtls_config_set_alpn(cfg, alpn), 0);
	return cfg;
}

/* (Re)configure an endpoint; the config is freed at once, as a daemon's reload does. */
static void configure(struct mtls *e, bool server, int tls, const char *alpn)
{
	struct mtls_config *cfg = side_config(server, tls, alpn);

	if (mtls_configure(e, cfg) != 0)
		fail_msg("configure: %s", mtls_error(e));
	mtls_config_free(cfg);
}

static struct mtls *endpoint(bool server, int tls, const char *alpn)
{
	struct mtls *e = server ? mtls_server_new() : mtls_client_new();

	assert_non_null(e);
	configure(e, server, tls, alpn);
	return e;
}

struct outcome {
	int srv, cli; /* 0 or -1 */
	enum mtls_reason srv_reason, cli_reason;
	char srv_msg[600], cli_msg[600];
	char srv_alpn[260], cli_alpn[260]; /* "(null)" for NULL */
	bool resumed;
};

static void alpn_copy(char *to, size_t len, const char *alpn)
{
	snprintf(to, len, "%s", alpn != NULL ? alpn : "(null)");
}

/* One connection between the endpoints; what each side ended with. */
static struct outcome connect_once(struct mtls *server, struct mtls *client)
{
	struct outcome o = {0};
	struct mtls *sc, *cc;
	int fds[2];

	test_socketpair(fds);
	sc = mtls_accept_fd(server, fds[0]);
	cc = mtls_connect_fd(client, fds[1], "server.test");
	assert_non_null(sc);
	assert_non_null(cc);
	assert_null(mtls_conn_alpn(sc)); /* nothing before the handshake */
	assert_null(mtls_conn_alpn(cc));
	test_handshake_pair(sc, cc, &o.srv, &o.cli);
	o.srv_reason = mtls_error_reason(sc);
	o.cli_reason = mtls_error_reason(cc);
	snprintf(o.srv_msg, sizeof(o.srv_msg), "%s", mtls_error(sc));
	snprintf(o.cli_msg, sizeof(o.cli_msg), "%s", mtls_error(cc));
	alpn_copy(o.srv_alpn, sizeof(o.srv_alpn), mtls_conn_alpn(sc));
	alpn_copy(o.cli_alpn, sizeof(o.cli_alpn), mtls_conn_alpn(cc));
	o.resumed = mtls_conn_resumed(sc) == 1;
	if (o.srv == 0 && o.cli == 0) {
		assert_string_equal(mtls_peer_identity(mtls_conn_peer(sc)), APP1);
		assert_int_equal(mtls_conn_resumed(cc), mtls_conn_resumed(sc));
		assert_int_equal(mtls_close(cc), 0);
	}
	test_pair_free(sc, cc, fds);
	return o;
}

/* --- the setter ------------------------------------------------------------------------ */

static void test_set_alpn(void **state)
{
	struct mtls_config *cfg = mtls_config_new();
	char longest[257];

	(void)state;
	assert_int_equal(mtls_config_set_alpn(cfg, "postgresql"), 0);
	assert_int_equal(mtls_config_set_alpn(cfg, "http/1.1"), 0);
	assert_int_equal(mtls_config_set_alpn(cfg, NULL), 0); /* none again */
	memset(longest, 'a', 255);
	longest[255] = '\0';
	assert_int_equal(mtls_config_set_alpn(cfg, longest), 0);
	longest[255] = 'a';
	longest[256] = '\0';
	assert_int_equal(mtls_config_set_alpn(cfg, longest), -1);
	assert_int_equal(mtls_config_error_reason(cfg), MTLS_REASON_USAGE);
	assert_non_null(strstr(mtls_config_error(cfg), "1 to 255"));
	assert_int_equal(mtls_config_set_alpn(cfg, ""), -1);
	assert_int_equal(mtls_config_set_alpn(cfg, "post gresql"), -1);
	assert_int_equal(mtls_config_set_alpn(cfg, "pg\x01"), -1);
	assert_int_equal(mtls_config_set_alpn(cfg, "pg\xc3\xa9"), -1);
	mtls_config_free(cfg);
	assert_string_equal(mtls_reason_name(MTLS_REASON_NO_APPLICATION_PROTOCOL),
			    "no_application_protocol");
	assert_int_equal(mtls_reason_from_name("no_application_protocol"),
			 MTLS_REASON_NO_APPLICATION_PROTOCOL);
	assert_int_equal(mtls_reason_category(MTLS_REASON_NO_APPLICATION_PROTOCOL),
			 MTLS_CATEGORY_PROTOCOL);
	assert_null(mtls_conn_alpn(NULL));
}

/* The config's string is copied: the caller's buffer changed or freed after the setter or
 * after mtls_configure() reaches nothing. */
static void test_config_copied(void **state)
{
	char *proto = strdup("postgresql");
	struct mtls_config *cfg;
	struct mtls *server = mtls_server_new(), *client;
	struct outcome o;

	(void)state;
	cfg = side_config(true, MTLS_TLS1_3, proto);
	memcpy(proto, "h2\0", 3);
	free(proto);
	assert_int_equal(mtls_configure(server, cfg), 0);
	assert_int_equal(mtls_config_set_alpn(cfg, "h2"), 0); /* after configure: no effect */
	mtls_config_free(cfg);
	client = endpoint(false, MTLS_TLS1_3, "postgresql");
	o = connect_once(server, client);
	assert_int_equal(o.srv, 0);
	assert_string_equal(o.srv_alpn, "postgresql");
	assert_null(mtls_conn_alpn(server)); /* an endpoint is no connection */
	mtls_free(client);
	mtls_free(server);
}

/* --- handshakes ---------------------------------------------------------------------- */

/* The client offers the server's protocol: selected, both sides say so. */
static void test_selected(void **state)
{
	(void)state;
	for (size_t v = 0; v < 2; v++) {
		struct mtls *server = endpoint(true, versions[v], "postgresql");
		struct mtls *client = endpoint(false, versions[v], "postgresql");
		struct outcome o = connect_once(server, client);

		assert_int_equal(o.srv, 0);
		assert_int_equal(o.cli, 0);
		assert_string_equal(o.srv_alpn, "postgresql");
		assert_string_equal(o.cli_alpn, "postgresql");
		mtls_free(client);
		mtls_free(server);
	}
}

/* The client offers another protocol: the server refuses (no_application_protocol, the
 * offer named), the client hears why. */
static void test_other_refused(void **state)
{
	(void)state;
	for (size_t v = 0; v < 2; v++) {
		struct mtls *server = endpoint(true, versions[v], "postgresql");
		struct mtls *client = endpoint(false, versions[v], "h2");
		struct outcome o = connect_once(server, client);

		assert_int_equal(o.srv, -1);
		assert_int_equal(o.cli, -1);
		assert_int_equal(o.srv_reason, MTLS_REASON_NO_APPLICATION_PROTOCOL);
		assert_non_null(strstr(o.srv_msg, "offered ALPN protocols \"h2\""));
		assert_non_null(strstr(o.srv_msg, "\"postgresql\""));
		assert_int_equal(o.cli_reason, MTLS_REASON_REJECTED_BY_PEER);
		assert_non_null(strstr(o.cli_msg, "refused ALPN protocol \"h2\""));
		assert_non_null(strstr(o.cli_msg, "no_application_protocol"));
		mtls_free(client);
		mtls_free(server);
	}
}

/* A client that offers no ALPN is let in without a protocol: the caller decides. So is a
 * client offering one to a server that has none configured. */
static void test_none_offered(void **state)
{
	(void)state;
	for (size_t v = 0; v < 2; v++) {
		struct mtls *server = endpoint(true, versions[v], "postgresql");
		struct mtls *client = endpoint(false, versions[v], NULL);
		struct mtls *server_plain = endpoint(true, versions[v], NULL);
		struct mtls *client_pg = endpoint(false, versions[v], "postgresql");
		struct outcome o = connect_once(server, client);

		assert_int_equal(o.srv, 0);
		assert_int_equal(o.cli, 0);
		assert_string_equal(o.srv_alpn, "(null)");
		assert_string_equal(o.cli_alpn, "(null)");
		o = connect_once(server_plain, client_pg);
		assert_int_equal(o.srv, 0);
		assert_int_equal(o.cli, 0);
		assert_string_equal(o.srv_alpn, "(null)");
		assert_string_equal(o.cli_alpn, "(null)");
		mtls_free(client);
		mtls_free(server);
		mtls_free(client_pg);
		mtls_free(server_plain);
	}
}

/* mtls_configure() again with another protocol (or none) applies to new connections; a live
 * connection keeps the protocol its handshake selected. */
static void test_reload(void **state)
{
	struct mtls *server = endpoint(true, MTLS_TLS1_3, "postgresql");
	struct mtls *h2 = endpoint(false, MTLS_TLS1_3, "h2");
	struct mtls *pg = endpoint(false, MTLS_TLS1_3, "postgresql");
	struct mtls *sc, *cc;
	struct outcome o;
	int fds[2], srv_rc, cli_rc;

	(void)state;
	o = connect_once(server, h2);
	assert_int_equal(o.srv_reason, MTLS_REASON_NO_APPLICATION_PROTOCOL);

	/* a live connection on postgresql across the reload */
	test_socketpair(fds);
	sc = mtls_accept_fd(server, fds[0]);
	cc = mtls_connect_fd(pg, fds[1], "server.test");
	test_handshake_pair(sc, cc, &srv_rc, &cli_rc);
	assert_int_equal(srv_rc, 0);
	assert_int_equal(cli_rc, 0);

	configure(server, true, MTLS_TLS1_3, "h2");
	assert_string_equal(mtls_conn_alpn(sc), "postgresql");
	o = connect_once(server, h2);
	assert_int_equal(o.srv, 0);
	assert_string_equal(o.srv_alpn, "h2");
	assert_string_equal(o.cli_alpn, "h2");
	o = connect_once(server, pg);
	assert_int_equal(o.srv_reason, MTLS_REASON_NO_APPLICATION_PROTOCOL);
	assert_non_null(strstr(o.srv_msg, "\"postgresql\", not \"h2\""));

	configure(server, true, MTLS_TLS1_3, NULL);
	o = connect_once(server, pg);
	assert_int_equal(o.srv, 0);
	assert_string_equal(o.srv_alpn, "(null)");
	assert_string_equal(o.cli_alpn, "(null)");

	/* and the client side: a reload makes it offer another protocol */
	configure(server, true, MTLS_TLS1_3, "h2");
	configure(pg, false, MTLS_TLS1_3, "h2");
	o = connect_once(server, pg);
	assert_int_equal(o.srv, 0);
	assert_string_equal(o.cli_alpn, "h2");
	assert_string_equal(mtls_conn_alpn(sc), "postgresql");
	assert_string_equal(mtls_conn_alpn(cc), "postgresql");

	test_pair_free(sc, cc, fds);
	mtls_free(pg);
	mtls_free(h2);
	mtls_free(server);
}

/* A resumed session negotiates ALPN again: selected on resumption, and a resuming client
 * offering another protocol after a reload is refused like any other. */
static void test_resumed(void **state)
{
	(void)state;
	for (size_t v = 0; v < 2; v++) {
		struct mtls *server = endpoint(true, versions[v], "postgresql");
		struct mtls *client = endpoint(false, versions[v], "postgresql");
		struct outcome o = connect_once(server, client);

		assert_int_equal(o.srv, 0);
		assert_false(o.resumed);
		o = connect_once(server, client);
		assert_int_equal(o.srv, 0);
		assert_true(o.resumed);
		assert_string_equal(o.srv_alpn, "postgresql");
		assert_string_equal(o.cli_alpn, "postgresql");
		/* the server's session store survives this reload (same trust) */
		configure(server, true, versions[v], "h2");
		o = connect_once(server, client);
		assert_int_equal(o.srv, -1);
		assert_int_equal(o.srv_reason, MTLS_REASON_NO_APPLICATION_PROTOCOL);
		mtls_free(client);
		mtls_free(server);
	}
}

/* --- raw OpenSSL peers --------------------------------------------------------------- */

/* A plain OpenSSL client offering the protocols of wire (ALPN wire form), with the zoo's
 * client certificate, against server; the server's result and reason. */
static int raw_client(struct mtls *server, const unsigned char *wire, unsigned len,
		      enum mtls_reason *reason, char *alpn, size_t alpn_len, char *msg,
		      size_t msg_len)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	struct mtls *sc;
	SSL *ssl;
	int fds[2], rc = MTLS_WANT_POLLIN;

	assert_non_null(ctx);
	assert_int_equal(SSL_CTX_use_certificate_chain_file(ctx, cert_path("client-chain.pem")), 1);
	assert_int_equal(
		SSL_CTX_use_PrivateKey_file(ctx, cert_path("client.key"), SSL_FILETYPE_PEM), 1);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	assert_int_equal(SSL_CTX_set_alpn_protos(ctx, wire, len), 0);
	ssl = SSL_new(ctx);
	test_socketpair(fds);
	SSL_set_fd(ssl, fds[1]);
	sc = mtls_accept_fd(server, fds[0]);
	assert_non_null(sc);
	for (int i = 0; i < 200 && (rc == MTLS_WANT_POLLIN || rc == MTLS_WANT_POLLOUT); i++) {
		SSL_connect(ssl);
		rc = mtls_handshake(sc);
	}
	*reason = mtls_error_reason(sc);
	snprintf(msg, msg_len, "%s", mtls_error(sc));
	alpn_copy(alpn, alpn_len, mtls_conn_alpn(sc));
	mtls_free(sc);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	close(fds[0]);
	close(fds[1]);
	ERR_clear_error();
	return rc;
}

static void test_raw_offers(void **state)
{
	static const unsigned char h2_pg[] = "\x02h2\x0apostgresql";
	static const unsigned char h2_http[] = "\x02h2\x08http/1.1";
	static const unsigned char odd[] = "\x03\x01\x7f\"";
	/* one protocol of 11 bytes, "\npostgresql": its tail is no protocol of its own */
	static const unsigned char nested[] = "\x0b\x0apostgresql";
	struct mtls *server = endpoint(true, MTLS_TLS1_3, "postgresql");
	enum mtls_reason reason;
	char alpn[260], msg[600];

	(void)state;
	/* postgresql among others: selected */
	assert_int_equal(raw_client(server, h2_pg, sizeof(h2_pg) - 1, &reason, alpn, sizeof(alpn),
				    msg, sizeof(msg)),
			 0);
	assert_string_equal(alpn, "postgresql");
	/* others only: refused, every one named */
	assert_int_equal(raw_client(server, h2_http, sizeof(h2_http) - 1, &reason, alpn,
				    sizeof(alpn), msg, sizeof(msg)),
			 -1);
	assert_int_equal(reason, MTLS_REASON_NO_APPLICATION_PROTOCOL);
	assert_non_null(strstr(msg, "offered ALPN protocols \"h2\", \"http/1.1\", not"));
	/* bytes that would break a one-line message are shown escaped */
	assert_int_equal(raw_client(server, odd, sizeof(odd) - 1, &reason, alpn, sizeof(alpn), msg,
				    sizeof(msg)),
			 -1);
	assert_int_equal(reason, MTLS_REASON_NO_APPLICATION_PROTOCOL);
	assert_null(strchr(msg, '\x01'));
	assert_null(strchr(msg, '\x7f'));
	assert_int_equal(raw_client(server, nested, sizeof(nested) - 1, &reason, alpn, sizeof(alpn),
				    msg, sizeof(msg)),
			 -1);
	assert_int_equal(reason, MTLS_REASON_NO_APPLICATION_PROTOCOL);
	assert_non_null(strstr(msg, "offered ALPN protocols \"\\x0apostgresql\", not"));
	mtls_free(server);
}

/* Many long protocols: the message stays bounded and says it was cut. */
static void test_raw_long_offer(void **state)
{
	unsigned char wire[40 * 101];
	unsigned len = 0;
	struct mtls *server = endpoint(true, MTLS_TLS1_3, "postgresql");
	enum mtls_reason reason;
	char alpn[260], msg[600];

	(void)state;
	for (int i = 0; i < 40; i++) {
		wire[len++] = 100;
		memset(wire + len, 'a' + i % 26, 100);
		len += 100;
	}
	assert_int_equal(
		raw_client(server, wire, len, &reason, alpn, sizeof(alpn), msg, sizeof(msg)), -1);
	assert_int_equal(reason, MTLS_REASON_NO_APPLICATION_PROTOCOL);
	assert_non_null(strstr(msg, "...,"));
	assert_non_null(strstr(msg, "not \"postgresql\""));
	mtls_free(server);
}

/* `openssl s_client -alpn P` over TCP against a libmtls server configured for postgresql:
 * the server's result and the protocol it selected; what s_client printed into out. */
static int s_client(const char *protos, enum mtls_reason *reason, char *alpn, size_t alpn_len,
		    char *out, size_t out_len)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t salen = sizeof(sa);
	struct mtls *server = endpoint(true, MTLS_TLS1_3, "postgresql");
	struct mtls *sc;
	char connect_to[64];
	int lfd, fd, pipefd[2], status, rc;
	size_t got = 0;
	ssize_t n;
	pid_t pid;

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(lfd >= 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 1), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &salen), 0);
	snprintf(connect_to, sizeof(connect_to), "127.0.0.1:%u", ntohs(sa.sin_port));
	assert_int_equal(pipe2(pipefd, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);

		dup2(devnull, 0);
		dup2(pipefd[1], 1);
		dup2(pipefd[1], 2);
		execlp("openssl", "openssl", "s_client", "-connect", connect_to, "-alpn", protos,
		       "-cert", cert_path("client-chain.pem"), "-cert_chain",
		       cert_path("client-chain.pem"), "-key", cert_path("client.key"), "-CAfile",
		       cert_path("ca.pem"), "-servername", "server.test", (char *)NULL);
		_exit(127);
	}
	close(pipefd[1]);
	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	assert_true(fd >= 0);
	sc = mtls_accept_fd(server, fd);
	assert_non_null(sc);
	/* a bound against a hang only: s_client answers at once */
	rc = mtls_handshake_wait(sc, 60000);
	*reason = mtls_error_reason(sc);
	if (rc != 0)
		print_message("s_client -alpn %s: server refused (%s): %s\n", protos,
			      mtls_reason_name(*reason), mtls_error(sc));
	alpn_copy(alpn, alpn_len, mtls_conn_alpn(sc));
	if (rc == 0)
		mtls_close_wait(sc, 1000);
	mtls_free(sc);
	close(fd);
	while (got + 1 < out_len && (n = read(pipefd[0], out + got, out_len - 1 - got)) > 0)
		got += (size_t)n;
	out[got] = '\0';
	close(pipefd[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	close(lfd);
	mtls_free(server);
	return rc;
}

static void test_openssl_s_client(void **state)
{
	static char out[65536];
	enum mtls_reason reason;
	char alpn[260];

	(void)state;
	assert_int_equal(s_client("postgresql", &reason, alpn, sizeof(alpn), out, sizeof(out)), 0);
	assert_string_equal(alpn, "postgresql");
	assert_non_null(strstr(out, "ALPN protocol: postgresql"));

	assert_int_equal(s_client("h2", &reason, alpn, sizeof(alpn), out, sizeof(out)), -1);
	assert_int_equal(reason, MTLS_REASON_NO_APPLICATION_PROTOCOL);
	assert_non_null(strstr(out, "no application protocol"));
}

/* --- mtls_identity_match() ------------------------------------------------------------ */

struct match_case {
	const char *pattern;
	const char *identity;
	int want;
};

static const struct match_case match_cases[] = {
	/* URI patterns, as mtls_config_allow_uri() */
	{"spiffe://example.org/ns/prod/sa/billing", "spiffe://example.org/ns/prod/sa/billing", 1},
	{"spiffe://example.org/ns/prod/sa/*", "spiffe://example.org/ns/prod/sa/billing", 1},
	{"spiffe://example.org/ns/*/sa/billing", "spiffe://example.org/ns/dev/sa/billing", 1},
	{"SPIFFE://Example.ORG/ns/prod/sa/*", "spiffe://example.org/ns/prod/sa/x", 1},
	{"spiffe://example.org/ns/prod/sa/*", "spiffe://example.org/ns/prod/sa/a/b", 0},
	{"spiffe://example.org/ns/prod/sa/*", "spiffe://example.org/ns/prod/sa/", 0},
	{"spiffe://example.org/ns/prod/sa/*", "spiffe://example.org/ns/prod/sa/..", 0},
	{"spiffe://example.org/ns/prod/sa/*", "spiffe://example.org/ns/prod/sa/a%2fb", 0},
	{"spiffe://example.org/ns/prod/sa/*", "spiffe://evil.org/ns/prod/sa/billing", 0},
	{"spiffe://example.org/ns/prod/sa/Billing", "spiffe://example.org/ns/prod/sa/billing", 0},
	{"spiffe://example.org/ns/prod/sa/*", "example.org", 0},
	/* host names, as mtls_config_allow_dns() */
	{"db.example.org", "db.example.org", 1},
	{"db.example.org", "DB.Example.Org", 1},
	{"db.example.org", "db.example.org.", 1},
	{"db.example.org.", "db.example.org", 1},
	{"*.example.org", "db.example.org", 1},
	{"*.example.org", "a.b.example.org", 0},
	{"*.example.org", "example.org", 0},
	{"*.example.org", "db.example.org.evil", 0},
	{"db.example.org", "db.example.net", 0},
	/* an identity from a CN is no host name: a DNS pattern does not reach it */
	{"*.example.org", "evil one.example.org", 0},
	{"*.example.org", "spiffe://x.example.org", 0},
	{"*.example.org", "*.example.org", 0},
	/* anything else: exact */
	{"app1 service", "app1 service", 1},
	{"app1 service", "App1 Service", 0},
	{"sha256:00ff", "sha256:00ff", 1},
	{"sha256:00ff", "sha256:00FF", 0},
	{"*", "anything", 0},
	{"*", "*", 1},
	/* nothing matches nothing */
	{"", "", 0},
	{"", "x", 0},
	{"x", "", 0},
	{NULL, "x", 0},
	{"x", NULL, 0},
	{NULL, NULL, 0},
};

static void test_identity_match(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(match_cases) / sizeof(match_cases[0]); i++) {
		const struct match_case *m = &match_cases[i];
		int got = mtls_identity_match(m->pattern, m->identity);

		if (got != m->want)
			fail_msg("mtls_identity_match(\"%s\", \"%s\") = %d, want %d",
				 m->pattern != NULL ? m->pattern : "(null)",
				 m->identity != NULL ? m->identity : "(null)", got, m->want);
	}
}

/* A URI longer than any identity may be never matches, even exactly. */
static void test_identity_match_long(void **state)
{
	size_t n = 3000;
	char *uri = malloc(n + 1);

	(void)state;
	assert_non_null(uri);
	memcpy(uri, "spiffe://example.org/", 21);
	memset(uri + 21, 'a', n - 21);
	uri[n] = '\0';
	assert_int_equal(mtls_identity_match(uri, uri), 0);
	uri[2000] = '\0';
	assert_int_equal(mtls_identity_match(uri, uri), 1);
	free(uri);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_set_alpn),       cmocka_unit_test(test_config_copied),
		cmocka_unit_test(test_selected),       cmocka_unit_test(test_other_refused),
		cmocka_unit_test(test_none_offered),   cmocka_unit_test(test_reload),
		cmocka_unit_test(test_resumed),	       cmocka_unit_test(test_raw_offers),
		cmocka_unit_test(test_raw_long_offer), cmocka_unit_test(test_openssl_s_client),
		cmocka_unit_test(test_identity_match), cmocka_unit_test(test_identity_match_long),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
