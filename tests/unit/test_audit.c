/*
 * mtls_config_insecure_audit(): a server that runs the whole decision on every certificate
 * presented but lets a refused client in, recording why (mtls_conn_would_refuse()), on full
 * handshakes, resumptions and re-checks, with TLS 1.2 and 1.3. No certificate is still
 * refused; a client endpoint cannot audit.
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

#define APP1  "spiffe://test.mtls/ns/prod/sa/app1"
#define OTHER "spiffe://test.mtls/ns/dev/sa/other"

static const int versions[] = {MTLS_TLS1_2, MTLS_TLS1_3};

static void configure_server(struct mtls *server, bool audit, int tls, const char *allow_uri,
			     const char *crl, bool optional)
{
	struct mtls_config *cfg = mtls_config_new();

	assert_int_equal(mtls_config_set_cert_file(cfg, cert_path("server-chain.pem")), 0);
	assert_int_equal(mtls_config_set_key_file(cfg, cert_path("server.key")), 0);
	assert_int_equal(mtls_config_set_ca_file(cfg, cert_path("ca.pem")), 0);
	assert_int_equal(mtls_config_set_protocols(cfg, tls, tls), 0);
	assert_int_equal(mtls_config_allow_uri(cfg, allow_uri != NULL ? allow_uri : APP1), 0);
	if (crl != NULL)
		assert_int_equal(mtls_config_add_crl_file(cfg, cert_path(crl)), 0);
	if (audit)
		assert_int_equal(mtls_config_insecure_audit(cfg), 0);
	if (optional)
		assert_int_equal(mtls_config_insecure_optional_client_cert(cfg), 0);
	if (mtls_configure(server, cfg) != 0)
		fail_msg("server config: %s", mtls_error(server));
	mtls_config_free(cfg);
}

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
	int rc;
	enum mtls_reason reason; /* of a refusal */
	enum mtls_reason would;
	bool has_message, resumed, has_peer, has_rule;
	char identity[128];
};

/* One connection; what the server saw. keep: the server's connection is handed back
 * (with its fds) instead of freed. */
static struct outcome connect_once(struct mtls *server, struct mtls *client, struct mtls **keep,
				   int *keep_fds)
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
	o.would = mtls_conn_would_refuse(sc);
	o.has_message = mtls_conn_would_refuse_message(sc) != NULL;
	o.resumed = mtls_conn_resumed(sc) == 1;
	peer = mtls_conn_peer(sc);
	o.has_peer = peer != NULL;
	o.has_rule = mtls_peer_matched_rule(peer) != NULL;
	if (peer != NULL)
		snprintf(o.identity, sizeof(o.identity), "%s", mtls_peer_identity(peer));
	if (o.rc == 0) {
		char buf[8];

		assert_int_equal(mtls_write_all(cc, "ping", 4, 5000), 0);
		assert_int_equal(mtls_read_wait(sc, buf, sizeof(buf), 5000), 4);
		assert_memory_equal(buf, "ping", 4);
		assert_int_equal(mtls_close(cc), 0);
	}
	if (keep != NULL) {
		*keep = sc;
		keep_fds[0] = fds[0];
		keep_fds[1] = fds[1];
		mtls_free(cc);
		return o;
	}
	test_pair_free(sc, cc, fds);
	return o;
}

struct bad_case {
	const char *client;
	const char *crl;
	enum mtls_reason expect;
};

static const struct bad_case bad_cases[] = {
	{"other-client", NULL, MTLS_REASON_UNKNOWN_CA},
	{"expired-client", NULL, MTLS_REASON_EXPIRED},
	{"client2", NULL, MTLS_REASON_IDENTITY_NOT_ALLOWED},
	{"revoked-client", "crl.pem", MTLS_REASON_REVOKED},
	{"noeku-client", NULL, MTLS_REASON_BAD_KEY_USAGE},
};

/* Each refusal of strict mode becomes an acceptance with that reason recorded; the same
 * client against a server that does not audit is refused with the same reason. */
static void test_refused_let_in(void **state)
{
	(void)state;
	for (size_t v = 0; v < 2; v++)
		for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
			const struct bad_case *tc = &bad_cases[i];
			struct mtls *client = client_new(tc->client, false);
			struct mtls *audit = mtls_server_new(), *strict = mtls_server_new();
			struct outcome o;

			configure_server(audit, true, versions[v], NULL, tc->crl, false);
			configure_server(strict, false, versions[v], NULL, tc->crl, false);
			o = connect_once(audit, client, NULL, NULL);
			if (o.rc != 0 || o.would != tc->expect || !o.has_peer || !o.has_message ||
			    o.has_rule)
				fail_msg("%s (TLS 0x%x) audited: rc %d, would %s, peer %d, rule %d",
					 tc->client, versions[v], o.rc, mtls_reason_name(o.would),
					 o.has_peer, o.has_rule);
			o = connect_once(strict, client, NULL, NULL);
			if (o.rc != -1 || o.reason != tc->expect || o.would != MTLS_REASON_NONE)
				fail_msg("%s (TLS 0x%x) strict: rc %d, reason %s", tc->client,
					 versions[v], o.rc, mtls_reason_name(o.reason));
			mtls_free(audit);
			mtls_free(strict);
			mtls_free(client);
		}
}

/* A good client has no would-refuse reason and its matched rule; no certificate is still
 * refused; the option is listed and is a server's only. */
static void test_good_and_none(void **state)
{
	struct mtls_config *cfg = mtls_config_new();
	struct mtls *c = mtls_client_new();

	(void)state;
	for (size_t v = 0; v < 2; v++) {
		struct mtls *server = mtls_server_new();
		struct mtls *good = client_new("client", false), *anon = client_new(NULL, false);
		struct outcome o;

		configure_server(server, true, versions[v], NULL, NULL, false);
		o = connect_once(server, good, NULL, NULL);
		assert_int_equal(o.rc, 0);
		assert_int_equal(o.would, MTLS_REASON_NONE);
		assert_false(o.has_message);
		assert_true(o.has_rule);
		assert_string_equal(o.identity, APP1);
		o = connect_once(server, anon, NULL, NULL);
		assert_int_equal(o.rc, -1);
		assert_int_equal(o.reason, MTLS_REASON_NO_CERTIFICATE);
		mtls_free(server);
		mtls_free(good);
		mtls_free(anon);
	}
	assert_int_equal(mtls_config_insecure_audit(cfg), 0);
	assert_string_equal(mtls_config_insecure(cfg), "insecure_audit");
	assert_int_equal(mtls_config_set_ca_file(cfg, cert_path("ca.pem")), 0);
	assert_int_equal(mtls_configure(c, cfg), -1);
	assert_int_equal(mtls_error_reason(c), MTLS_REASON_CONFIG);
	assert_int_equal(mtls_conn_would_refuse(NULL), MTLS_REASON_NONE);
	assert_null(mtls_conn_would_refuse_message(NULL));
	mtls_config_free(cfg);
	mtls_free(c);
}

/* A resumed session of a refused client is judged again and audited again. */
static void test_resumed(void **state)
{
	struct mtls *server = mtls_server_new(), *client = client_new("client2", true);
	struct outcome o;
	bool resumed = false;

	(void)state;
	configure_server(server, true, MTLS_TLS1_3, NULL, NULL, false);
	for (int i = 0; i < 3; i++) {
		o = connect_once(server, client, NULL, NULL);
		assert_int_equal(o.rc, 0);
		assert_int_equal(o.would, MTLS_REASON_IDENTITY_NOT_ALLOWED);
		assert_string_equal(o.identity, OTHER);
		resumed |= o.resumed;
	}
	assert_true(resumed);
	mtls_free(server);
	mtls_free(client);
}

/* mtls_conn_recheck() of an audited connection: kept with its reason under an auditing
 * config, cleared once the rules allow it, refused under a strict one. */
static void test_recheck(void **state)
{
	struct mtls *server = mtls_server_new(), *client = client_new("client2", false), *sc;
	int fds[2];
	struct outcome o;

	(void)state;
	configure_server(server, true, MTLS_TLS1_3, NULL, NULL, false);
	o = connect_once(server, client, &sc, fds);
	assert_int_equal(o.rc, 0);
	assert_int_equal(o.would, MTLS_REASON_IDENTITY_NOT_ALLOWED);
	assert_int_equal(mtls_conn_recheck(sc, server), 0);
	assert_int_equal(mtls_conn_would_refuse(sc), MTLS_REASON_IDENTITY_NOT_ALLOWED);
	configure_server(server, true, MTLS_TLS1_3, OTHER, NULL, false);
	assert_int_equal(mtls_conn_recheck(sc, server), 0);
	assert_int_equal(mtls_conn_would_refuse(sc), MTLS_REASON_NONE);
	configure_server(server, false, MTLS_TLS1_3, NULL, NULL, false);
	assert_int_equal(mtls_conn_recheck(sc, server), -1);
	assert_int_equal(mtls_error_reason(sc), MTLS_REASON_IDENTITY_NOT_ALLOWED);
	test_pair_free(sc, NULL, fds);
	mtls_free(server);
	mtls_free(client);
}

/* Strict stays strict after audit: a session made while the server audited (a certificate it
 * let in with a would-refuse reason, or none at all with an optional client certificate) and
 * offered again once the server is strict is judged by the strict state, TLS 1.2 (session
 * IDs) and 1.3 (tickets) alike. (A change of insecure options also starts an empty session
 * store, trust_fingerprint() in lib/state.c: this guards the outcome either way.) */
struct resume_case {
	const char *client; /* NULL: no certificate */
	bool optional;	    /* the auditing server also takes clients without one */
	enum mtls_reason strict_reason;
};

static const struct resume_case resume_cases[] = {
	{"client2", false, MTLS_REASON_IDENTITY_NOT_ALLOWED},
	{"other-client", false, MTLS_REASON_UNKNOWN_CA},
	{NULL, true, MTLS_REASON_NO_CERTIFICATE},
};

/* A session let in by audit, offered to the same server made strict: refused, with the
 * reason strict mode gives on a full handshake. */
static void test_audit_session_then_strict(void **state)
{
	(void)state;
	for (size_t v = 0; v < 2; v++)
		for (size_t i = 0; i < sizeof(resume_cases) / sizeof(resume_cases[0]); i++) {
			const struct resume_case *tc = &resume_cases[i];
			struct mtls *server = mtls_server_new(),
				    *client = client_new(tc->client, true);
			struct outcome o;

			configure_server(server, true, versions[v], NULL, NULL, tc->optional);
			o = connect_once(server, client, NULL, NULL);
			if (o.rc != 0)
				fail_msg("%s (TLS 0x%x): not let in by audit",
					 tc->client != NULL ? tc->client : "no certificate",
					 versions[v]);
			configure_server(server, false, versions[v], NULL, NULL, false);
			o = connect_once(server, client, NULL, NULL);
			if (o.rc != -1 || o.reason != tc->strict_reason)
				fail_msg("%s (TLS 0x%x) resumed under strict: rc %d, reason %s",
					 tc->client != NULL ? tc->client : "no certificate",
					 versions[v], o.rc, mtls_reason_name(o.reason));
			mtls_free(server);
			mtls_free(client);
		}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_refused_let_in),
		cmocka_unit_test(test_good_and_none),
		cmocka_unit_test(test_resumed),
		cmocka_unit_test(test_recheck),
		cmocka_unit_test(test_audit_session_then_strict),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
