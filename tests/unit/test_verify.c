/*
 * The verification path: mtls_verify_chain_pem() (the path without a handshake), and the
 * same decision on every other path a peer's chain takes: a full handshake, a hit of the
 * verification cache, a resumed session (verify_resumed()). CRL freshness policy (refuse, or
 * accept within a grace period with a warning) with CRLs signed here, at test time, by the
 * zoo's issuing CA; fixed verification times; expected URI; certificates made at test time
 * that no path may accept.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "internal.h"
#include "testutil.h"

#define APP1 "spiffe://test.mtls/ns/prod/sa/app1"

/* The zoo's issuing CA and its key. */
static X509 *zoo_int(EVP_PKEY **key)
{
	FILE *f = fopen(cert_path("int.key"), "r");

	assert_non_null(f);
	*key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(*key);
	return test_read_cert("int.pem");
}

/* A server endpoint that trusts ca (PEM; NULL: the zoo's root), allows app1 and checks CRLs
 * (PEM, may be NULL). Returns -1 with the endpoint's reason if it refuses the config. */
static int configure(struct mtls *server, const char *ca, const char *crl, bool crl_chain)
{
	struct mtls_config *cfg = mtls_config_new();
	int rc;

	assert_int_equal(mtls_config_set_cert_file(cfg, cert_path("server-chain.pem")), 0);
	assert_int_equal(mtls_config_set_key_file(cfg, cert_path("server.key")), 0);
	if (ca != NULL)
		assert_int_equal(mtls_config_set_ca_mem(cfg, (const uint8_t *)ca, strlen(ca)), 0);
	else
		assert_int_equal(mtls_config_set_ca_file(cfg, cert_path("ca.pem")), 0);
	if (crl != NULL)
		assert_int_equal(mtls_config_add_crl_mem(cfg, (const uint8_t *)crl, strlen(crl)),
				 0);
	assert_int_equal(mtls_config_set_crl_check_chain(cfg, crl_chain), 0);
	assert_int_equal(mtls_config_allow_uri(cfg, APP1), 0);
	rc = mtls_configure(server, cfg);
	mtls_config_free(cfg);
	return rc;
}

/* A client endpoint presenting chain (PEM) with key (PEM), trusting the zoo's root. */
static struct mtls *client_of(const char *chain, const char *key, bool tickets)
{
	struct mtls_config *cfg = mtls_config_new();
	struct mtls *client = mtls_client_new();

	assert_int_equal(mtls_config_set_cert_mem(cfg, (const uint8_t *)chain, strlen(chain)), 0);
	assert_int_equal(mtls_config_set_key_mem(cfg, (const uint8_t *)key, strlen(key)), 0);
	assert_int_equal(mtls_config_set_ca_file(cfg, cert_path("ca.pem")), 0);
	assert_int_equal(mtls_config_set_session_tickets(cfg, tickets), 0);
	if (mtls_configure(client, cfg) != 0)
		fail_msg("client config: %s", mtls_error(client));
	mtls_config_free(cfg);
	return client;
}

/* One handshake: the server's verdict (MTLS_REASON_NONE if accepted), its message in msg,
 * and whether the session was resumed. */
static enum mtls_reason handshake(struct mtls *server, struct mtls *client, bool *resumed,
				  char *msg, size_t msg_len)
{
	int fds[2], srv_rc, cli_rc;
	struct mtls *sc, *cc;
	enum mtls_reason r;

	test_socketpair(fds);
	sc = mtls_accept_fd(server, fds[0]);
	cc = mtls_connect_fd(client, fds[1], "server.test");
	assert_non_null(sc);
	assert_non_null(cc);
	test_handshake_pair(sc, cc, &srv_rc, &cli_rc);
	r = mtls_error_reason(sc);
	assert_int_equal(srv_rc == 0, r == MTLS_REASON_NONE);
	if (resumed != NULL)
		*resumed = mtls_conn_resumed(sc) == 1;
	if (msg != NULL)
		snprintf(msg, msg_len, "%s", mtls_error(sc));
	if (srv_rc == 0 && cli_rc == 0)
		assert_int_equal(mtls_close(cc), 0);
	test_pair_free(sc, cc, fds);
	return r;
}

/* The server's decision on a resumed session holding leaf and chain (the peer chain a
 * server keeps excludes the leaf), run on the endpoint's current state. */
static enum mtls_reason resumed_verdict(struct mtls *server, X509 *leaf, STACK_OF(X509) * chain,
					char *msg, size_t msg_len)
{
	struct verify_request rq = {.st = server->state, .peer_is_client = true};
	struct mtls_peer *peer = NULL;
	struct error err = {0};
	int rc = verify_resumed(&rq, leaf, chain, &peer, &err);

	assert_int_equal(rc == 0, peer != NULL);
	identity_free(peer);
	if (msg != NULL)
		snprintf(msg, msg_len, "%s", err.msg);
	return rc == 0 ? MTLS_REASON_NONE : err.reason;
}

/* Verify a zoo chain as a server would, with one CRL and a grace period. */
static int verify_with_crl(const char *chain, const char *crl, size_t crl_len, int64_t grace,
			   enum mtls_reason *reason, char *warning, size_t wlen)
{
	struct mtls_config *cfg = mtls_config_new();
	struct mtls *ep = mtls_server_new();
	size_t len;
	char *pem = test_slurp(cert_path(chain), &len);
	int rc;

	assert_int_equal(mtls_config_set_ca_file(cfg, cert_path("ca.pem")), 0);
	assert_int_equal(mtls_config_add_crl_mem(cfg, (const uint8_t *)crl, crl_len), 0);
	assert_int_equal(mtls_config_set_crl_grace(cfg, grace), 0);
	assert_int_equal(mtls_config_allow_uri(cfg, "spiffe://test.mtls/ns/prod/sa/*"), 0);
	assert_int_equal(mtls_configure(ep, cfg), 0);
	rc = mtls_verify_chain_pem(ep, (const uint8_t *)pem, len, NULL, NULL);
	*reason = mtls_error_reason(ep);
	snprintf(warning, wlen, "%s", mtls_conn_warning(ep) != NULL ? mtls_conn_warning(ep) : "");
	free(pem);
	mtls_config_free(cfg);
	mtls_free(ep);
	return rc;
}

static void test_crl_freshness(void **state)
{
	size_t len;
	char *fresh = test_make_crl(-3600, 3600, NULL, &len);
	char *stale = test_make_crl(-7200, -600, NULL, &len);
	char *stale_revoking = test_make_crl(-7200, -600, "revoked-client-chain.pem", &len);
	enum mtls_reason r;
	char warning[300];

	(void)state;
	assert_int_equal(verify_with_crl("client-chain.pem", fresh, strlen(fresh), 0, &r, warning,
					 sizeof(warning)),
			 0);
	assert_string_equal(warning, "");
	/* past nextUpdate: refused by default, never a silent pass */
	assert_int_equal(verify_with_crl("client-chain.pem", stale, strlen(stale), 0, &r, warning,
					 sizeof(warning)),
			 -1);
	assert_int_equal(r, MTLS_REASON_CRL_EXPIRED);
	/* within the grace period: accepted, with a warning */
	assert_int_equal(verify_with_crl("client-chain.pem", stale, strlen(stale), 3600, &r,
					 warning, sizeof(warning)),
			 0);
	assert_non_null(strstr(warning, "grace"));
	/* past the grace period */
	assert_int_equal(verify_with_crl("client-chain.pem", stale, strlen(stale), 300, &r, warning,
					 sizeof(warning)),
			 -1);
	assert_int_equal(r, MTLS_REASON_CRL_EXPIRED);
	/* a stale CRL still revokes what it lists */
	assert_int_equal(verify_with_crl("revoked-client-chain.pem", stale_revoking,
					 strlen(stale_revoking), 3600, &r, warning,
					 sizeof(warning)),
			 -1);
	assert_int_equal(r, MTLS_REASON_REVOKED);
	free(fresh);
	free(stale);
	free(stale_revoking);
}

static void test_verify_time_and_uri(void **state)
{
	struct mtls_config *cfg = mtls_config_new();
	struct mtls *ep = mtls_server_new();
	size_t len;
	char *expired = test_slurp(cert_path("expired-client-chain.pem"), &len);
	char *good = NULL;
	size_t glen;

	(void)state;
	assert_int_equal(mtls_config_set_ca_file(cfg, cert_path("ca.pem")), 0);
	assert_int_equal(mtls_config_set_allow_any_identity(cfg, 1), 0);
	assert_int_equal(mtls_configure(ep, cfg), 0);
	assert_int_equal(mtls_verify_chain_pem(ep, (uint8_t *)expired, len, NULL, NULL), -1);
	assert_int_equal(mtls_error_reason(ep), MTLS_REASON_EXPIRED);
	assert_non_null(strstr(mtls_error(ep), "2021-01-01T00:00:00Z"));
	assert_non_null(strstr(mtls_error(ep), "renew"));

	good = test_slurp(cert_path("client-chain.pem"), &glen);
	assert_int_equal(mtls_verify_chain_pem(ep, (uint8_t *)good, glen, NULL,
					       "spiffe://test.mtls/ns/prod/sa/app1"),
			 0);
	assert_string_equal(mtls_peer_matched_rule(mtls_verified_peer(ep)), "any:ca");
	assert_string_equal(mtls_peer_common_name(mtls_verified_peer(ep)), "app1");
	assert_int_equal(mtls_peer_uri_count(mtls_verified_peer(ep)), 1);
	assert_string_equal(mtls_peer_dns(mtls_verified_peer(ep), 0), "app1.test");
	assert_null(mtls_peer_dns(mtls_verified_peer(ep), 1));
	assert_int_equal(mtls_verify_chain_pem(ep, (uint8_t *)good, glen, NULL,
					       "spiffe://test.mtls/ns/prod/sa/other"),
			 -1);
	assert_int_equal(mtls_error_reason(ep), MTLS_REASON_NAME_MISMATCH);
	assert_null(mtls_verified_peer(ep));

	/* at a time when the expired certificate was valid, it verifies */
	mtls_config_free(cfg);
	cfg = mtls_config_new();
	assert_int_equal(mtls_config_set_ca_file(cfg, cert_path("ca.pem")), 0);
	assert_int_equal(mtls_config_set_allow_any_identity(cfg, 1), 0);
	/* the zoo's CAs are issued now, so "then" is refused for the CA, not the leaf */
	assert_int_equal(mtls_config_set_verify_time(cfg, 1593561600 /* 2020-07-01 */), 0);
	assert_int_equal(mtls_configure(ep, cfg), 0);
	assert_int_equal(mtls_verify_chain_pem(ep, (uint8_t *)expired, len, NULL, NULL), -1);
	assert_int_equal(mtls_error_reason(ep), MTLS_REASON_NOT_YET_VALID);
	assert_non_null(strstr(mtls_error(ep), "chain"));

	free(expired);
	free(good);
	mtls_config_free(cfg);
	mtls_free(ep);
}

/* A CA certificate presented as a client's own certificate (basicConstraints CA:TRUE, with
 * clientAuth and the right URI) is refused on every path: mtls verify, a full handshake,
 * the same chain again (the verification cache), and a resumed session. */
static void test_leaf_is_ca(void **state)
{
	EVP_PKEY *int_key, *key;
	X509 *issuer = zoo_int(&int_key);
	X509 *leaf = test_cert_make(&(struct test_cert){.subject = "CN=sneaky",
							.bc = "CA:TRUE",
							.ku = "digitalSignature,keyCertSign"},
				    issuer, int_key, &key);
	X509 *both[] = {leaf, issuer};
	char *chain = test_certs_pem(both, 2), *key_pem = test_key_pem(key);
	struct mtls *server = mtls_server_new(), *client;
	STACK_OF(X509) *sent = sk_X509_new_null();
	char msg[600];
	bool resumed;

	(void)state;
	assert_int_equal(configure(server, NULL, NULL, false), 0);
	assert_int_equal(
		mtls_verify_chain_pem(server, (const uint8_t *)chain, strlen(chain), NULL, APP1),
		-1);
	assert_int_equal(mtls_error_reason(server), MTLS_REASON_LEAF_IS_CA);
	assert_non_null(strstr(mtls_error(server), "client certificate rejected: it is a CA "
						   "certificate (basicConstraints CA:TRUE)"));
	assert_non_null(strstr(mtls_error(server), "CN=sneaky"));
	assert_non_null(strstr(mtls_error(server), "end-entity certificate"));

	client = client_of(chain, key_pem, true);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(handshake(server, client, &resumed, msg, sizeof(msg)),
				 MTLS_REASON_LEAF_IS_CA);
		assert_false(resumed);
		assert_non_null(strstr(msg, "CN=sneaky"));
	}
	/* a session holding it (as one from before this rule would) */
	assert_true(sk_X509_push(sent, issuer) > 0);
	assert_int_equal(resumed_verdict(server, leaf, sent, msg, sizeof(msg)),
			 MTLS_REASON_LEAF_IS_CA);
	assert_non_null(strstr(msg, "CN=sneaky"));

	sk_X509_free(sent);
	mtls_free(client);
	mtls_free(server);
	free(chain);
	free(key_pem);
	X509_free(leaf);
	X509_free(issuer);
	EVP_PKEY_free(key);
	EVP_PKEY_free(int_key);
}

/* A client that sends its leaf without the intermediate is told so (issuer_not_sent), by
 * mtls verify and in a handshake; with the intermediate it is accepted. */
static void test_issuer_not_sent(void **state)
{
	struct mtls *server = mtls_server_new(), *client;
	size_t len;
	char *leaf = test_slurp(cert_path("client.pem"), &len);
	char *key = test_slurp(cert_path("client.key"), NULL);
	char *chain = test_slurp(cert_path("client-chain.pem"), NULL);
	char msg[600];

	(void)state;
	assert_int_equal(configure(server, NULL, NULL, false), 0);
	assert_int_equal(mtls_verify_chain_pem(server, (const uint8_t *)leaf, len, NULL, NULL), -1);
	assert_int_equal(mtls_error_reason(server), MTLS_REASON_ISSUER_NOT_SENT);
	assert_non_null(strstr(mtls_error(server),
			       "client certificate rejected: its issuer CN=mtls "
			       "test issuing was not sent and is not in the "
			       "CA bundle"));
	assert_non_null(strstr(mtls_error(server), "chain file (leaf + intermediates)"));
	assert_non_null(strstr(mtls_error(server), "--untrusted/--ca"));

	client = client_of(leaf, key, false);
	assert_int_equal(handshake(server, client, NULL, msg, sizeof(msg)),
			 MTLS_REASON_ISSUER_NOT_SENT);
	assert_non_null(strstr(msg, "CN=mtls test issuing was not sent"));
	mtls_free(client);
	client = client_of(chain, key, false);
	assert_int_equal(handshake(server, client, NULL, NULL, 0), MTLS_REASON_NONE);

	mtls_free(client);
	mtls_free(server);
	free(leaf);
	free(key);
	free(chain);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_leaf_is_ca),
		cmocka_unit_test(test_issuer_not_sent),
		cmocka_unit_test(test_crl_freshness),
		cmocka_unit_test(test_verify_time_and_uri),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
