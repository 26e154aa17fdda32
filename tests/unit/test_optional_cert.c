/*
 * mtls_config_insecure_optional_client_cert(): a server that lets clients in without a
 * certificate (the CA service's enrollment) still verifies every certificate presented, and
 * a bad one is refused, never taken for no certificate. Handshakes in one process over
 * socketpairs, with TLS 1.2 and TLS 1.3, full and resumed.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testutil.h"

#define APP1 "spiffe://test.mtls/ns/prod/sa/app1"

static const int versions[] = {MTLS_TLS1_2, MTLS_TLS1_3};

/* A server with the zoo's server certificate that allows app1 (or allow_uri), with the
 * client certificate optional or not, a CRL file (zoo name) if crl is not NULL. */
static void configure_server(struct mtls *server, bool optional, int tls, const char *allow_uri,
			     const char *crl)
{
	struct mtls_config *cfg = mtls_config_new();

	assert_int_equal(mtls_config_set_cert_file(cfg, cert_path("server-chain.pem")), 0);
	assert_int_equal(mtls_config_set_key_file(cfg, cert_path("server.key")), 0);
	assert_int_equal(mtls_config_set_ca_file(cfg, cert_path("ca.pem")), 0);
	assert_int_equal(mtls_config_set_protocols(cfg, tls, tls), 0);
	assert_int_equal(mtls_config_allow_uri(cfg, allow_uri != NULL ? allow_uri : APP1), 0);
	if (crl != NULL)
		assert_int_equal(mtls_config_add_crl_file(cfg, cert_path(crl)), 0);
	if (optional)
		assert_int_equal(mtls_config_insecure_optional_client_cert(cfg), 0);
	if (mtls_configure(server, cfg) != 0)
		fail_msg("server config: %s", mtls_error(server));
	mtls_config_free(cfg);
}

static struct mtls *server_new(bool optional, int tls)
{
	struct mtls *server = mtls_server_new();

	configure_server(server, optional, tls, NULL, NULL);
	return server;
}

/* A client presenting the zoo's name-chain.pem / name.key, or no certificate (name NULL). */
static struct mtls *client_new(const char *name, bool tickets)
{
	struct mtls_config *cfg = mtls_config_new();
	struct mtls *client = mtls_client_new();
	char chain[64], key[64];

	if (name != NULL) {
		snprintf(chain, sizeof(chain), "%s-chain.pem", name);
		snprintf(key, sizeof(key), "%s.key", name);
		assert_int_equal(mtls_config_set_cert_file(cfg, cert_path(chain)), 0);
		assert_int_equal(mtls_config_set_key_file(cfg, cert_path(key)), 0);
	}
	assert_int_equal(mtls_config_set_ca_file(cfg, cert_path("ca.pem")), 0);
	assert_int_equal(mtls_config_set_session_tickets(cfg, tickets), 0);
	if (mtls_configure(client, cfg) != 0)
		fail_msg("client config: %s", mtls_error(client));
	mtls_config_free(cfg);
	return client;
}

struct outcome {
	int rc; /* 0 both sides finished, -1 not */
	enum mtls_reason reason;
	bool resumed;
	bool has_peer;
	char identity[128];
};

/* One connection; what the server saw. A server peer is checked against the getters. */
static struct outcome connect_once(struct mtls *server, struct mtls *client)
{
	struct outcome o = {0};
	int fds[2], srv_rc, cli_rc;
	struct mtls *sc, *cc;
	const struct mtls_peer *peer;

	test_socketpair(fds);
	sc = mtls_accept_fd(server, fds[0]);
	cc = mtls_connect_fd(client, fds[1], "server.test");
	assert_non_null(sc);
	assert_non_null(cc);
	test_handshake_pair(sc, cc, &srv_rc, &cli_rc);
	o.rc = srv_rc == 0 && cli_rc == 0 ? 0 : -1;
	o.reason = mtls_error_reason(sc);
	o.resumed = mtls_conn_resumed(sc) == 1;
	peer = mtls_conn_peer(sc);
	o.has_peer = peer != NULL;
	if (srv_rc != 0)
		assert_null(peer);
	if (peer != NULL)
		snprintf(o.identity, sizeof(o.identity), "%s", mtls_peer_identity(peer));
	if (o.rc == 0) {
		/* the connection works both ways */
		char buf[8];

		assert_int_equal(mtls_write_all(cc, "ping", 4, 5000), 0);
		assert_int_equal(mtls_read_wait(sc, buf, sizeof(buf), 5000), 4);
		assert_memory_equal(buf, "ping", 4);
		assert_int_equal(mtls_close(cc), 0);
	}
	test_pair_free(sc, cc, fds);
	return o;
}

/* No certificate: accepted with the option, without an identity, and every getter says
 * so; refused without it, as before (no_certificate). */
static void test_no_cert(void **state)
{
	(void)state;
	for (size_t v = 0; v < 2; v++) {
		struct mtls *optional = server_new(true, versions[v]);
		struct mtls *required = server_new(false, versions[v]);
		struct mtls *anon = client_new(NULL, false);
		struct outcome o = connect_once(optional, anon);

		assert_int_equal(o.rc, 0);
		assert_int_equal(o.reason, MTLS_REASON_NONE);
		assert_false(o.has_peer);

		o = connect_once(required, anon);
		assert_int_equal(o.rc, -1);
		assert_int_equal(o.reason, MTLS_REASON_NO_CERTIFICATE);
		assert_false(o.has_peer);
		mtls_free(optional);
		mtls_free(required);
		mtls_free(anon);
	}
	/* what a caller reading "no peer" gets */
	assert_null(mtls_peer_identity(NULL));
	assert_null(mtls_peer_subject(NULL));
	assert_null(mtls_peer_issuer(NULL));
	assert_null(mtls_peer_common_name(NULL));
	assert_null(mtls_peer_serial(NULL));
	assert_int_equal(mtls_peer_not_before(NULL), 0);
	assert_int_equal(mtls_peer_not_after(NULL), 0);
	assert_null(mtls_peer_cert_sha256(NULL));
	assert_null(mtls_peer_spki_sha256(NULL));
	assert_int_equal(mtls_peer_uri_count(NULL), 0);
	assert_null(mtls_peer_uri(NULL, 0));
	assert_int_equal(mtls_peer_dns_count(NULL), 0);
	assert_null(mtls_peer_dns(NULL, 0));
	assert_int_equal(mtls_peer_ip_count(NULL), 0);
	assert_null(mtls_peer_ip(NULL, 0));
	assert_int_equal(mtls_peer_email_count(NULL), 0);
	assert_null(mtls_peer_email(NULL, 0));
	assert_null(mtls_peer_matched_rule(NULL));
}

struct bad_case {
	const char *client; /* zoo name */
	const char *crl;    /* server CRL (zoo file) or NULL */
	enum mtls_reason expect;
};

static const struct bad_case bad_cases[] = {
	{"other-client", NULL, MTLS_REASON_UNKNOWN_CA},
	{"expired-client", NULL, MTLS_REASON_EXPIRED},
	{"client2", NULL, MTLS_REASON_IDENTITY_NOT_ALLOWED},
	{"revoked-client", "crl.pem", MTLS_REASON_REVOKED},
	{"noeku-client", NULL, MTLS_REASON_BAD_KEY_USAGE},
	{"server", NULL, MTLS_REASON_BAD_KEY_USAGE},
};

/* A certificate presented is judged as without the option: the same refusal, never a
 * connection without identity. A good one gives its identity. */
static void test_presented_still_verified(void **state)
{
	(void)state;
	for (size_t v = 0; v < 2; v++) {
		for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
			const struct bad_case *tc = &bad_cases[i];
			struct mtls *client = client_new(tc->client, false);

			for (int optional = 0; optional < 2; optional++) {
				struct mtls *server = mtls_server_new();
				struct outcome o;

				configure_server(server, optional, versions[v], NULL, tc->crl);
				o = connect_once(server, client);
				if (o.rc != -1 || o.reason != tc->expect)
					fail_msg("%s (TLS 0x%x, optional %d): %s, reason %s",
						 tc->client, versions[v], optional,
						 o.rc == 0 ? "accepted" : "refused",
						 mtls_reason_name(o.reason));
				mtls_free(server);
			}
			mtls_free(client);
		}
	}
}

/* A good certificate gives its identity; the verification cache (tickets off: every
 * handshake is full) and connections without a certificate in between change nothing. */
static void test_good_cert_identity(void **state)
{
	struct mtls *server = server_new(true, MTLS_TLS1_3);
	struct mtls *good = client_new("client", false), *anon = client_new(NULL, false);
	unsigned long hits, misses;

	(void)state;
	for (int round = 0; round < 3; round++) {
		struct outcome o = connect_once(server, good);

		assert_int_equal(o.rc, 0);
		assert_true(o.has_peer);
		assert_string_equal(o.identity, APP1);
		o = connect_once(server, anon);
		assert_int_equal(o.rc, 0);
		assert_false(o.has_peer);
	}
	mtls_endpoint_verify_cache_stats(server, &hits, &misses);
	assert_int_equal(misses, 1);
	assert_int_equal(hits, 2);
	mtls_free(server);
	mtls_free(good);
	mtls_free(anon);
}

/* Listed among the insecure options; a server setting only. */
static void test_listed_and_server_only(void **state)
{
	struct mtls_config *cfg = mtls_config_new();
	struct mtls *client = mtls_client_new();

	(void)state;
	assert_string_equal(mtls_config_insecure(cfg), "");
	assert_int_equal(mtls_config_insecure_optional_client_cert(cfg), 0);
	assert_string_equal(mtls_config_insecure(cfg), "insecure_optional_client_cert");
	assert_int_equal(mtls_config_insecure_optional_client_cert(cfg), 0); /* once */
	assert_int_equal(mtls_config_insecure_key_permissions(cfg), 0);
	assert_string_equal(mtls_config_insecure(cfg),
			    "insecure_optional_client_cert,insecure_key_permissions");
	assert_int_equal(mtls_config_set_ca_file(cfg, cert_path("ca.pem")), 0);
	assert_int_equal(mtls_configure(client, cfg), -1);
	assert_int_equal(mtls_error_reason(client), MTLS_REASON_CONFIG);
	assert_non_null(strstr(mtls_error(client), "server setting"));
	mtls_config_free(cfg);
	mtls_free(client);
}

/* Resumption keeps what the session was: one made without a certificate resumes without an
 * identity, one made with a certificate resumes with it; a resumed session whose certificate
 * the current rules refuse is refused, not let in as a client without one. */
static void test_resumption(void **state)
{
	(void)state;
	for (size_t v = 0; v < 2; v++) {
		struct mtls *server = server_new(true, versions[v]);
		struct mtls *anon = client_new(NULL, true), *good = client_new("client", true);
		struct outcome o;

		/* a TLS 1.2 session resumes once (the server takes it out of its store and an
		 * abbreviated handshake makes no new one), a TLS 1.3 one hands on a new ticket:
		 * full, resumed, then full (1.2) or resumed (1.3); each client ends up with a
		 * session to resume */
		for (int round = 0; round < 3; round++) {
			bool resumes = round == 1 || (round == 2 && versions[v] == MTLS_TLS1_3);

			o = connect_once(server, anon);
			assert_int_equal(o.rc, 0);
			assert_int_equal(o.resumed, resumes);
			assert_false(o.has_peer);

			o = connect_once(server, good);
			assert_int_equal(o.rc, 0);
			assert_int_equal(o.resumed, resumes);
			assert_true(o.has_peer);
			assert_string_equal(o.identity, APP1);
		}
		/* the allow rules change (same trust: the sessions stay): app1's session is
		 * refused on resumption, the session without a certificate still resumes */
		configure_server(server, true, versions[v], "spiffe://test.mtls/ns/prod/sa/other",
				 NULL);
		o = connect_once(server, good);
		assert_int_equal(o.rc, -1);
		assert_true(o.resumed);
		assert_int_equal(o.reason, MTLS_REASON_IDENTITY_NOT_ALLOWED);
		assert_false(o.has_peer);
		o = connect_once(server, anon);
		assert_int_equal(o.rc, 0);
		assert_true(o.resumed);
		assert_false(o.has_peer);

		/* without the option, no session lets a client without a certificate in */
		configure_server(server, false, versions[v], NULL, NULL);
		o = connect_once(server, anon);
		assert_int_equal(o.rc, -1);
		assert_int_equal(o.reason, MTLS_REASON_NO_CERTIFICATE);
		mtls_free(server);
		mtls_free(anon);
		mtls_free(good);
	}
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_cert),
		cmocka_unit_test(test_presented_still_verified),
		cmocka_unit_test(test_good_cert_identity),
		cmocka_unit_test(test_listed_and_server_only),
		cmocka_unit_test(test_resumption),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
