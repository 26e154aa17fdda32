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
#include <openssl/rsa.h>
#include <openssl/x509v3.h>
#include <pthread.h>

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

/* A PKI made at test time: root -> intermediate -> client leaf (app1), the leaf with a CRL
 * distribution point. */
struct pki {
	X509 *root, *inter, *leaf;
	EVP_PKEY *root_key, *int_key, *leaf_key;
	char *root_pem, *both_pem;	      /* the root; the root and the intermediate */
	char *chain_pem, *leaf_pem, *key_pem; /* leaf + intermediate; the leaf alone */
};

static void pki_make(struct pki *p)
{
	X509 *two[2];

	p->root = test_cert_make(&(struct test_cert){.subject = "CN=verify root", .ca = true}, NULL,
				 NULL, &p->root_key);
	p->inter = test_cert_make(&(struct test_cert){.subject = "CN=verify issuing", .ca = true},
				  p->root, p->root_key, &p->int_key);
	p->leaf = test_cert_make(
		&(struct test_cert){.subject = "CN=app1", .crldp = "URI:http://crl.test/int.crl"},
		p->inter, p->int_key, &p->leaf_key);
	p->root_pem = test_certs_pem(&p->root, 1);
	two[0] = p->root;
	two[1] = p->inter;
	p->both_pem = test_certs_pem(two, 2);
	two[0] = p->leaf;
	two[1] = p->inter;
	p->chain_pem = test_certs_pem(two, 2);
	p->leaf_pem = test_certs_pem(&p->leaf, 1);
	p->key_pem = test_key_pem(p->leaf_key);
}

static void pki_free(struct pki *p)
{
	X509_free(p->root);
	X509_free(p->inter);
	X509_free(p->leaf);
	EVP_PKEY_free(p->root_key);
	EVP_PKEY_free(p->int_key);
	EVP_PKEY_free(p->leaf_key);
	free(p->root_pem);
	free(p->both_pem);
	free(p->chain_pem);
	free(p->leaf_pem);
	free(p->key_pem);
}

/* Two PEM texts as one (caller frees). */
static char *joined(const char *a, const char *b)
{
	size_t na = strlen(a), nb = strlen(b);
	char *out = malloc(na + nb + 1);

	assert_non_null(out);
	memcpy(out, a, na);
	memcpy(out + na, b, nb + 1);
	return out;
}

/* mtls_verify_chain_pem() of a PEM chain: its reason (MTLS_REASON_NONE if accepted). */
static enum mtls_reason verify_pem(struct mtls *ep, const char *chain)
{
	int rc = mtls_verify_chain_pem(ep, (const uint8_t *)chain, strlen(chain), NULL, NULL);

	assert_int_equal(rc == 0, mtls_error_reason(ep) == MTLS_REASON_NONE);
	return mtls_error_reason(ep);
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

	client = test_mem_client(chain, key_pem, true);
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

	client = test_mem_client(leaf, key, false);
	assert_int_equal(handshake(server, client, NULL, msg, sizeof(msg)),
			 MTLS_REASON_ISSUER_NOT_SENT);
	assert_non_null(strstr(msg, "CN=mtls test issuing was not sent"));
	mtls_free(client);
	client = test_mem_client(chain, key, false);
	assert_int_equal(handshake(server, client, NULL, NULL, 0), MTLS_REASON_NONE);

	mtls_free(client);
	mtls_free(server);
	free(leaf);
	free(key);
	free(chain);
}

/* A client sends its leaf alone; the server's CA bundle holds the root and the intermediate.
 * A reload with a CRL of the root revoking that intermediate (CRL checks on the chain, so
 * the session store survives) must refuse the resumed session as a full handshake would:
 * the session's chain does not hold the intermediate, the path is built again. */
static void test_resumed_unsent_intermediate_revoked(void **state)
{
	struct pki p;
	struct mtls *server = mtls_server_new(), *resuming, *full;
	char *crl_root, *crl_int, *crls, *revoking, *crls2, msg[600];
	bool resumed;

	(void)state;
	pki_make(&p);
	crl_root = test_crl_pem(p.root, p.root_key, NULL, 0, 1, NULL);
	crl_int = test_crl_pem(p.inter, p.int_key, NULL, 0, 1, NULL);
	revoking = test_crl_pem(p.root, p.root_key, &p.inter, 1, 2, NULL);
	crls = joined(crl_root, crl_int);
	crls2 = joined(revoking, crl_int);
	resuming = test_mem_client(p.leaf_pem, p.key_pem, true);
	full = test_mem_client(p.leaf_pem, p.key_pem, false);

	assert_int_equal(configure(server, p.both_pem, crls, true), 0);
	assert_int_equal(handshake(server, resuming, &resumed, msg, sizeof(msg)), MTLS_REASON_NONE);
	assert_false(resumed);
	assert_int_equal(handshake(server, resuming, &resumed, msg, sizeof(msg)), MTLS_REASON_NONE);
	assert_true(resumed);

	assert_int_equal(configure(server, p.both_pem, crls2, true), 0);
	assert_int_equal(handshake(server, resuming, &resumed, msg, sizeof(msg)),
			 MTLS_REASON_REVOKED);
	assert_true(resumed); /* refused by the decision, not merely forgotten */
	assert_non_null(strstr(msg, "certificate chain rejected: revoked"));
	assert_non_null(strstr(msg, "CN=verify issuing"));
	assert_int_equal(handshake(server, full, NULL, msg, sizeof(msg)), MTLS_REASON_REVOKED);

	mtls_free(resuming);
	mtls_free(full);
	mtls_free(server);
	free(crl_root);
	free(crl_int);
	free(revoking);
	free(crls);
	free(crls2);
	pki_free(&p);
}

/* A CRL in the intermediate's name signed by another key: refused when the state is built
 * if that CA is in the bundle; otherwise it is ignored on every path: it never revokes, never
 * un-revokes, and does not count as the issuer's CRL. */
static void test_forged_crl(void **state)
{
	struct pki p;
	EVP_PKEY *forger = EVP_EC_gen("P-256");
	struct mtls *server = mtls_server_new(), *full, *resuming;
	char *genuine = NULL, *genuine_revoking, *forged_revoking, *forged, *crls, msg[600];
	bool resumed;

	(void)state;
	pki_make(&p);
	genuine = test_crl_pem(p.inter, p.int_key, NULL, 0, 1, NULL);
	genuine_revoking = test_crl_pem(p.inter, p.int_key, &p.leaf, 1, 2, NULL);
	forged = test_crl_pem(p.inter, forger, NULL, 0, 7, NULL);
	forged_revoking = test_crl_pem(p.inter, forger, &p.leaf, 1, 7, NULL);
	full = test_mem_client(p.chain_pem, p.key_pem, false);
	resuming = test_mem_client(p.chain_pem, p.key_pem, true);

	/* the issuer is in the bundle: the state is not built */
	assert_int_equal(configure(server, p.both_pem, forged_revoking, false), -1);
	assert_int_equal(mtls_error_reason(server), MTLS_REASON_CRL_INVALID);
	assert_non_null(strstr(mtls_error(server), "does not verify with the CA certificate"));
	assert_non_null(strstr(mtls_error(server), "CN=verify issuing"));
	assert_non_null(strstr(mtls_error(server), "forged"));

	/* the issuer is sent by the peer: the forgery does not revoke... */
	crls = joined(genuine, forged_revoking);
	assert_int_equal(configure(server, p.root_pem, crls, false), 0);
	free(crls);
	assert_int_equal(verify_pem(server, p.chain_pem), MTLS_REASON_NONE);
	for (int i = 0; i < 2; i++) /* full, then from the verification cache */
		assert_int_equal(handshake(server, full, NULL, msg, sizeof(msg)), MTLS_REASON_NONE);
	/* ...does not un-revoke... */
	crls = joined(forged, genuine_revoking);
	assert_int_equal(configure(server, p.root_pem, crls, false), 0);
	free(crls);
	assert_int_equal(verify_pem(server, p.chain_pem), MTLS_REASON_REVOKED);
	for (int i = 0; i < 2; i++)
		assert_int_equal(handshake(server, full, NULL, msg, sizeof(msg)),
				 MTLS_REASON_REVOKED);
	/* ...and is no CRL of the issuer */
	assert_int_equal(configure(server, p.root_pem, forged, false), 0);
	assert_int_equal(verify_pem(server, p.chain_pem), MTLS_REASON_CRL_MISSING);
	assert_non_null(strstr(mtls_error(server), "does not verify with the issuer's key"));

	/* a session made before a reload that adds the forgery stays valid */
	assert_int_equal(configure(server, p.root_pem, genuine, false), 0);
	assert_int_equal(handshake(server, resuming, &resumed, NULL, 0), MTLS_REASON_NONE);
	crls = joined(genuine, forged_revoking);
	assert_int_equal(configure(server, p.root_pem, crls, false), 0);
	free(crls);
	assert_int_equal(handshake(server, resuming, &resumed, msg, sizeof(msg)), MTLS_REASON_NONE);
	assert_true(resumed);

	mtls_free(full);
	mtls_free(resuming);
	mtls_free(server);
	free(genuine);
	free(genuine_revoking);
	free(forged);
	free(forged_revoking);
	EVP_PKEY_free(forger);
	pki_free(&p);
}

/* A CRL counts for the certificates its issuingDistributionPoint covers, the same on every
 * path; scopes we cannot honour are refused when the state is built. */
static void test_crl_scope(void **state)
{
	static const struct {
		const char *idp;
		bool chain;
	} refused[] = {
		{"critical,onlyCA:TRUE", false},
		{"critical,indirectCRL:TRUE", false},
		{"critical,onlysomereasons:keyCompromise", false},
		{"critical,onlyAA:TRUE", true},
	};
	struct pki p;
	struct mtls *server = mtls_server_new(), *full, *resuming;
	char *other_dp, *own_dp, *plain, *crls, *root_users, *root_crl, msg[600];
	bool resumed;

	(void)state;
	pki_make(&p);
	other_dp = test_crl_pem(p.inter, p.int_key, &p.leaf, 1, 3,
				"critical,fullname:URI:http://crl.test/other.crl");
	own_dp = test_crl_pem(p.inter, p.int_key, &p.leaf, 1, 4,
			      "critical,fullname:URI:http://crl.test/int.crl");
	plain = test_crl_pem(p.inter, p.int_key, NULL, 0, 5, NULL);
	root_users = test_crl_pem(p.root, p.root_key, &p.inter, 1, 6, "critical,onlyuser:TRUE");
	root_crl = test_crl_pem(p.root, p.root_key, NULL, 0, 7, NULL);
	full = test_mem_client(p.chain_pem, p.key_pem, false);
	resuming = test_mem_client(p.chain_pem, p.key_pem, true);

	/* a CRL for another distribution point neither revokes the leaf nor covers it */
	assert_int_equal(configure(server, p.root_pem, other_dp, false), 0);
	assert_int_equal(verify_pem(server, p.chain_pem), MTLS_REASON_CRL_MISSING);
	assert_non_null(strstr(mtls_error(server), "issuingDistributionPoint"));
	/* the one for its own does */
	assert_int_equal(configure(server, p.root_pem, own_dp, false), 0);
	assert_int_equal(verify_pem(server, p.chain_pem), MTLS_REASON_REVOKED);
	/* beside a CRL that covers it, the other one revokes nothing, on a full handshake, from
	 * the verification cache, and on resumption */
	crls = joined(plain, other_dp);
	assert_int_equal(configure(server, p.root_pem, crls, false), 0);
	free(crls);
	assert_int_equal(verify_pem(server, p.chain_pem), MTLS_REASON_NONE);
	for (int i = 0; i < 2; i++)
		assert_int_equal(handshake(server, full, NULL, msg, sizeof(msg)), MTLS_REASON_NONE);
	assert_int_equal(handshake(server, resuming, &resumed, NULL, 0), MTLS_REASON_NONE);
	assert_int_equal(handshake(server, resuming, &resumed, msg, sizeof(msg)), MTLS_REASON_NONE);
	assert_true(resumed);
	/* a root CRL for end entities only does not cover the intermediate */
	crls = joined(root_users, plain);
	assert_int_equal(configure(server, p.root_pem, crls, true), 0);
	free(crls);
	assert_int_equal(verify_pem(server, p.chain_pem), MTLS_REASON_CRL_MISSING);
	assert_non_null(strstr(mtls_error(server), "CN=verify root"));
	crls = joined(root_crl, plain);
	assert_int_equal(configure(server, p.root_pem, crls, true), 0);
	free(crls);
	assert_int_equal(verify_pem(server, p.chain_pem), MTLS_REASON_NONE);

	/* scopes we do not honour, and a CRL without a number */
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		char *crl = test_crl_pem(p.inter, p.int_key, NULL, 0, 8, refused[i].idp);

		if (configure(server, p.root_pem, crl, refused[i].chain) != -1 ||
		    mtls_error_reason(server) != MTLS_REASON_CRL_INVALID)
			fail_msg("%s: %s", refused[i].idp, mtls_error(server));
		free(crl);
	}
	crls = test_crl_pem(p.inter, p.int_key, NULL, 0, -1, NULL);
	assert_int_equal(configure(server, p.root_pem, crls, false), -1);
	assert_int_equal(mtls_error_reason(server), MTLS_REASON_CRL_INVALID);
	assert_non_null(strstr(mtls_error(server), "no CRL number"));
	free(crls);

	mtls_free(full);
	mtls_free(resuming);
	mtls_free(server);
	free(other_dp);
	free(own_dp);
	free(plain);
	free(root_users);
	free(root_crl);
	pki_free(&p);
}

/* cert with one more extension, its value these bytes as they are, signed again by key. */
static void add_raw_ext(X509 *cert, int nid, const unsigned char *der, size_t len, EVP_PKEY *key)
{
	ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
	X509_EXTENSION *ext;

	assert_non_null(os);
	assert_int_equal(ASN1_OCTET_STRING_set(os, der, (int)len), 1);
	ext = X509_EXTENSION_create_by_NID(NULL, nid, 0, os);
	assert_non_null(ext);
	assert_int_equal(X509_add_ext(cert, ext, -1), 1);
	assert_true(X509_sign(cert, key, EVP_sha256()) > 0);
	X509_EXTENSION_free(ext);
	ASN1_OCTET_STRING_free(os);
}

/* A certificate that OpenSSL finds no issuer for although the peer sent it: one with an
 * extension that does not decode (its issuer, or itself), or one signed with a key of
 * another type than its issuer's. That is not an issuer "not sent" (issuer_not_sent):
 * bad_certificate for what does not decode, bad_signature for the other. */
static void test_malformed_chain(void **state)
{
	/* a subjectAltName whose SEQUENCE says 0x1d octets and holds 0x1d - 0x11 */
	static const unsigned char bad_san[] = {0x30, 0x1d, 0x81, 0x1b, 'a', '@',
						'b',  '.',  't',  'e',	's', 't'};
	struct pki p;
	struct mtls *server = mtls_server_new();
	EVP_PKEY *key, *bad_int_key, *rsa = EVP_RSA_gen(2048);
	X509 *leaf, *bad_int, *two[2];
	char *chain;

	(void)state;
	assert_non_null(rsa);
	pki_make(&p);
	assert_int_equal(configure(server, p.root_pem, NULL, false), 0);

	/* the leaf's SAN does not decode; sent with its intermediate, and alone */
	leaf = test_cert_make(&(struct test_cert){.subject = "CN=bad san", .san = ""}, p.inter,
			      p.int_key, &key);
	add_raw_ext(leaf, NID_subject_alt_name, bad_san, sizeof(bad_san), p.int_key);
	two[0] = leaf;
	two[1] = p.inter;
	for (int n = 2; n >= 1; n--) {
		chain = test_certs_pem(two, n);
		assert_int_equal(verify_pem(server, chain), MTLS_REASON_BAD_CERTIFICATE);
		assert_non_null(strstr(mtls_error(server),
				       "client certificate rejected: subject CN=bad san, serial "));
		assert_non_null(strstr(mtls_error(server), "an extension of it does not decode"));
		free(chain);
	}
	X509_free(leaf);
	EVP_PKEY_free(key);

	/* the intermediate's SAN does not decode */
	bad_int = test_cert_make(&(struct test_cert){.subject = "CN=verify issuing", .ca = true},
				 p.root, p.root_key, &bad_int_key);
	add_raw_ext(bad_int, NID_subject_alt_name, bad_san, sizeof(bad_san), p.root_key);
	leaf = test_cert_make(&(struct test_cert){.subject = "CN=app1"}, bad_int, bad_int_key,
			      &key);
	two[0] = leaf;
	two[1] = bad_int;
	chain = test_certs_pem(two, 2);
	assert_int_equal(verify_pem(server, chain), MTLS_REASON_BAD_CERTIFICATE);
	assert_non_null(strstr(mtls_error(server), "client certificate chain rejected: subject "
						   "CN=verify issuing"));
	assert_non_null(strstr(mtls_error(server), "an extension of it does not decode"));
	free(chain);
	X509_free(leaf);
	X509_free(bad_int);
	EVP_PKEY_free(key);
	EVP_PKEY_free(bad_int_key);

	/* the leaf names the intermediate (name and key identifier) and came with it, but is
	 * signed with an RSA key: OpenSSL takes no EC certificate for its issuer */
	leaf = test_cert_make(&(struct test_cert){.subject = "CN=app1"}, p.inter, rsa, &key);
	two[0] = leaf;
	two[1] = p.inter;
	chain = test_certs_pem(two, 2);
	assert_int_equal(verify_pem(server, chain), MTLS_REASON_BAD_SIGNATURE);
	assert_null(strstr(mtls_error(server), "not sent"));
	/* alone, it is what it was: its issuer was not sent */
	free(chain);
	chain = test_certs_pem(two, 1);
	assert_int_equal(verify_pem(server, chain), MTLS_REASON_ISSUER_NOT_SENT);
	free(chain);
	X509_free(leaf);
	EVP_PKEY_free(key);

	EVP_PKEY_free(rsa);
	mtls_free(server);
	pki_free(&p);
}

/* An intermediate without cRLSign, which peers send (not in the bundle), publishes a CRL
 * that verifies with its key: it counts for nothing, and the refusal says why, not that
 * the CRL does not verify. */
static void test_crl_of_ca_without_crl_sign(void **state)
{
	struct mtls *server = mtls_server_new();
	EVP_PKEY *root_key, *int_key, *leaf_key;
	X509 *root = test_cert_make(&(struct test_cert){.subject = "CN=verify root", .ca = true},
				    NULL, NULL, &root_key);
	X509 *inter = test_cert_make(&(struct test_cert){.subject = "CN=no crl sign",
							 .ca = true,
							 .ku = "critical,keyCertSign"},
				     root, root_key, &int_key);
	X509 *leaf = test_cert_make(&(struct test_cert){.subject = "CN=app1"}, inter, int_key,
				    &leaf_key);
	X509 *two[] = {leaf, inter};
	char *root_pem = test_certs_pem(&root, 1), *chain = test_certs_pem(two, 2);
	char *crl = test_crl_pem(inter, int_key, NULL, 0, 1, NULL);

	(void)state;
	assert_int_equal(configure(server, root_pem, crl, false), 0);
	assert_int_equal(verify_pem(server, chain), MTLS_REASON_CRL_MISSING);
	assert_non_null(strstr(mtls_error(server), "its issuer's keyUsage lacks cRLSign"));
	assert_null(strstr(mtls_error(server), "does not verify"));

	mtls_free(server);
	free(root_pem);
	free(chain);
	free(crl);
	X509_free(root);
	X509_free(inter);
	X509_free(leaf);
	EVP_PKEY_free(root_key);
	EVP_PKEY_free(int_key);
	EVP_PKEY_free(leaf_key);
}

/* cert_path() from several threads at once (as test_handshake's threads call it): each
 * thread's last 8 results stay its own. */
struct path_run {
	const char *name;
	int wrong;
};

static void *path_loop(void *arg)
{
	struct path_run *r = arg;
	size_t m = strlen(r->name);
	const char *held[8];

	for (int i = 0; i < 20000; i++) {
		held[i % 8] = cert_path(r->name);
		for (int j = 0; j < 8 && j <= i; j++) {
			size_t n = strlen(held[j]);

			r->wrong += n < m || strcmp(held[j] + n - m, r->name) != 0;
		}
	}
	return NULL;
}

static void test_cert_path_threads(void **state)
{
	struct path_run runs[4] = {{"a.pem", 0}, {"bb.pem", 0}, {"ccc.pem", 0}, {"dddd.pem", 0}};
	pthread_t t[4];

	(void)state;
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, path_loop, &runs[i]), 0);
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		if (runs[i].wrong != 0)
			fail_msg("%s: %d results were another thread's", runs[i].name,
				 runs[i].wrong);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_leaf_is_ca),
		cmocka_unit_test(test_issuer_not_sent),
		cmocka_unit_test(test_resumed_unsent_intermediate_revoked),
		cmocka_unit_test(test_forged_crl),
		cmocka_unit_test(test_crl_scope),
		cmocka_unit_test(test_crl_freshness),
		cmocka_unit_test(test_verify_time_and_uri),
		cmocka_unit_test(test_malformed_chain),
		cmocka_unit_test(test_crl_of_ca_without_crl_sign),
		cmocka_unit_test(test_cert_path_threads),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
