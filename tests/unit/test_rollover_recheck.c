/*
 * A root rollover under live connections (verify.c's second path): the CA has an old root, a
 * new root, and one intermediate key certified by both (the same subject, a new issuer). A
 * client connected with leaf + the old intermediate certificate while the server trusted
 * both roots; the server then trusts only the new root, its own chain going through the new
 * intermediate certificate. Re-judged (full and resumed), the connection stays; a new
 * handshake with the old chain is let in; a peer of a foreign CA with the same names is
 * still refused; a revoked leaf is still closed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "testutil.h"

#define APP1   "spiffe://test.mtls/ns/prod/sa/app1"
#define EARLY  (-7200L) /* the old certificates, and the handshakes, are from two hours ago */
#define ROOT   "CN=Rollover Test Root CA,O=mtls test"
#define ROOT2  "CN=Rollover Test Root CA G2,O=mtls test"
#define INTER  "CN=Rollover Test Intermediate,O=mtls test"
#define SERVER "server.test"

struct ca {
	X509 *root, *root2, *inter, *inter2; /* inter2: inter's key under root2 */
	EVP_PKEY *root_key, *root2_key, *inter_key;
};

/* Another certificate of cert's subject and key, issued by issuer now: what `mtls ca
 * rollover switch` makes of the intermediate. */
static X509 *recertify(X509 *cert, X509 *issuer, EVP_PKEY *issuer_key)
{
	X509 *c = X509_dup(cert), *out;
	X509V3_CTX v3;
	X509_EXTENSION *aki;
	unsigned char serial[16], *der = NULL;
	const unsigned char *p;
	BIGNUM *bn;
	int i, len;

	assert_non_null(c);
	assert_int_equal(X509_set_issuer_name(c, X509_get_subject_name(issuer)), 1);
	assert_int_equal(RAND_bytes(serial, sizeof(serial)), 1);
	serial[0] &= 0x7f;
	bn = BN_bin2bn(serial, sizeof(serial), NULL);
	assert_non_null(BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(c)));
	BN_free(bn);
	X509_gmtime_adj(X509_getm_notBefore(c), -60);
	i = X509_get_ext_by_NID(c, NID_authority_key_identifier, -1);
	if (i >= 0)
		X509_EXTENSION_free(X509_delete_ext(c, i));
	X509V3_set_ctx(&v3, issuer, c, NULL, NULL, 0);
	aki = X509V3_EXT_conf_nid(NULL, &v3, NID_authority_key_identifier, "keyid:always");
	assert_non_null(aki);
	assert_int_equal(X509_add_ext(c, aki, -1), 1);
	X509_EXTENSION_free(aki);
	assert_true(X509_sign(c, issuer_key, EVP_sha256()) > 0);
	/* parsed again: nothing cached from the copy */
	len = i2d_X509(c, &der);
	assert_true(len > 0);
	p = der;
	out = d2i_X509(NULL, &p, len);
	assert_non_null(out);
	OPENSSL_free(der);
	X509_free(c);
	return out;
}

static void ca_make(struct ca *ca, const char *root_name)
{
	ca->root = test_cert_make(
		&(struct test_cert){
			.subject = root_name, .ca = true, .not_before = EARLY, .not_after = 86400},
		NULL, NULL, &ca->root_key);
	ca->inter = test_cert_make(
		&(struct test_cert){
			.subject = INTER, .ca = true, .not_before = EARLY, .not_after = 86400},
		ca->root, ca->root_key, &ca->inter_key);
	ca->root2 = test_cert_make(&(struct test_cert){.subject = ROOT2, .ca = true}, NULL, NULL,
				   &ca->root2_key);
	ca->inter2 = recertify(ca->inter, ca->root2, ca->root2_key);
}

static void ca_free(struct ca *ca)
{
	X509_free(ca->root);
	X509_free(ca->root2);
	X509_free(ca->inter);
	X509_free(ca->inter2);
	EVP_PKEY_free(ca->root_key);
	EVP_PKEY_free(ca->root2_key);
	EVP_PKEY_free(ca->inter_key);
}

/* A leaf of the CA's intermediate key (client or server), valid until (from now). */
static X509 *leaf_until(const struct ca *ca, bool server, long until, EVP_PKEY **key)
{
	struct test_cert spec = {.subject = server ? "CN=" SERVER : "CN=app1",
				 .not_before = EARLY,
				 .not_after = until};
	if (server) {
		spec.eku = "serverAuth";
		spec.san = "DNS:" SERVER;
	}
	return test_cert_make(&spec, ca->inter, ca->inter_key, key);
}

/* A leaf of the CA's intermediate key (client or server). */
static X509 *leaf_make(const struct ca *ca, bool server, EVP_PKEY **key)
{
	return leaf_until(ca, server, 86400, key);
}

static void set_pem(struct mtls_config *cfg,
		    int (*set)(struct mtls_config *, const uint8_t *, size_t), char *pem)
{
	assert_int_equal(set(cfg, (const uint8_t *)pem, strlen(pem)), 0);
	free(pem);
}

/* An endpoint presenting leaf + issuer (key), trusting the n roots; crl (PEM) or NULL. */
static void configure(struct mtls *ep, bool server, X509 *leaf, X509 *issuer, EVP_PKEY *key,
		      X509 *const *roots, int n, const char *crl, time_t verify_time)
{
	struct mtls_config *cfg = mtls_config_new();
	X509 *chain[2] = {leaf, issuer};

	set_pem(cfg, mtls_config_set_cert_mem, test_certs_pem(chain, 2));
	set_pem(cfg, mtls_config_set_key_mem, test_key_pem(key));
	set_pem(cfg, mtls_config_set_ca_mem, test_certs_pem(roots, n));
	if (crl != NULL)
		assert_int_equal(mtls_config_add_crl_mem(cfg, (const uint8_t *)crl, strlen(crl)),
				 0);
	if (server)
		assert_int_equal(mtls_config_allow_uri(cfg, APP1), 0);
	assert_int_equal(mtls_config_set_protocols(cfg, MTLS_TLS1_3, MTLS_TLS1_3), 0);
	if (verify_time != 0)
		assert_int_equal(mtls_config_set_verify_time(cfg, verify_time), 0);
	if (mtls_configure(ep, cfg) != 0)
		fail_msg("config: %s", mtls_error(ep));
	mtls_config_free(cfg);
}

struct pair {
	int fds[2];
	struct mtls *sc, *cc;
};

static int pair_open(struct pair *p, struct mtls *server, struct mtls *client)
{
	int srv_rc, cli_rc;

	test_socketpair(p->fds);
	p->sc = mtls_accept_fd(server, p->fds[0]);
	p->cc = mtls_connect_fd(client, p->fds[1], SERVER);
	assert_non_null(p->sc);
	assert_non_null(p->cc);
	test_handshake_pair(p->sc, p->cc, &srv_rc, &cli_rc);
	return srv_rc == 0 && cli_rc == 0 ? 0 : -1;
}

struct world {
	struct ca ca, foreign;			  /* foreign: the same names, other keys */
	X509 *srv, *cli, *alien, *revoked, *gone; /* gone: expired since the handshakes */
	EVP_PKEY *srv_key, *cli_key, *alien_key, *revoked_key, *gone_key;
	char *crl; /* of the intermediate key, listing revoked */
};

static int world_setup(void **state)
{
	struct world *w = calloc(1, sizeof(*w));

	assert_non_null(w);
	ca_make(&w->ca, ROOT);
	ca_make(&w->foreign, ROOT);
	w->srv = leaf_make(&w->ca, true, &w->srv_key);
	w->cli = leaf_make(&w->ca, false, &w->cli_key);
	w->revoked = leaf_make(&w->ca, false, &w->revoked_key);
	w->alien = leaf_make(&w->foreign, false, &w->alien_key);
	w->gone = leaf_until(&w->ca, false, -60, &w->gone_key);
	/* the CRL is the intermediate key's, in its name: it covers both certificates */
	w->crl = test_crl_pem(w->ca.inter2, w->ca.inter_key, &w->revoked, 1, 1, NULL);
	*state = w;
	return 0;
}

static int world_teardown(void **state)
{
	struct world *w = *state;

	ca_free(&w->ca);
	ca_free(&w->foreign);
	X509_free(w->srv);
	X509_free(w->cli);
	X509_free(w->alien);
	X509_free(w->revoked);
	X509_free(w->gone);
	EVP_PKEY_free(w->gone_key);
	EVP_PKEY_free(w->srv_key);
	EVP_PKEY_free(w->cli_key);
	EVP_PKEY_free(w->alien_key);
	EVP_PKEY_free(w->revoked_key);
	free(w->crl);
	free(w);
	return 0;
}

/* The server before the switch (both roots, and the foreign one so that its client gets in;
 * its own chain through the old intermediate certificate), at the handshakes' time; and
 * after the finish (the new root only, its own chain renewed: through the new one), now. */
static void server_before(struct world *w, struct mtls *server)
{
	X509 *roots[] = {w->ca.root, w->ca.root2, w->foreign.root};

	configure(server, true, w->srv, w->ca.inter, w->srv_key, roots, 3, NULL,
		  time(NULL) + EARLY);
}

static void server_after(struct world *w, struct mtls *server, const char *crl)
{
	configure(server, true, w->srv, w->ca.inter2, w->srv_key, &w->ca.root2, 1, crl, 0);
}

/* A client presenting leaf + the old intermediate certificate of its CA. */
static struct mtls *old_client(const struct world *w, const struct ca *ca, X509 *leaf,
			       EVP_PKEY *key)
{
	struct mtls *client = mtls_client_new();
	X509 *roots[] = {w->ca.root, w->ca.root2};

	configure(client, false, leaf, ca->inter, key, roots, 2, NULL, time(NULL) + EARLY);
	return client;
}

/* Connected before, re-judged after the finish: full and resumed connections. */
static void rejudge(struct world *w, const struct ca *ca, X509 *leaf, EVP_PKEY *key,
		    const char *crl, int want, enum mtls_reason reason)
{
	struct mtls *server = mtls_server_new();
	struct mtls *client = old_client(w, ca, leaf, key);
	struct pair full, resumed;
	char buf[4];

	server_before(w, server);
	if (pair_open(&full, server, client) != 0)
		fail_msg("handshake before: %s / %s", mtls_error(full.sc), mtls_error(full.cc));
	/* TLS 1.3 sends its tickets after the handshake: a round trip delivers them */
	assert_int_equal(mtls_write_all(full.sc, "ping", 4, 5000), 0);
	assert_int_equal(mtls_read_wait(full.cc, buf, sizeof(buf), 5000), 4);
	if (pair_open(&resumed, server, client) != 0)
		fail_msg("resumption before: %s", mtls_error(resumed.sc));
	assert_int_equal(mtls_conn_resumed(resumed.sc), 1);
	assert_int_equal(mtls_conn_recheck(full.sc, server), 0);

	server_after(w, server, crl);
	for (int k = 0; k < 2; k++) {
		struct mtls *sc = k == 0 ? full.sc : resumed.sc;
		int rc = mtls_conn_recheck(sc, server);

		if (rc != want || mtls_error_reason(sc) != reason)
			fail_msg("%s: rc %d reason %s: %s", k == 0 ? "full" : "resumed", rc,
				 mtls_reason_name(mtls_error_reason(sc)), mtls_error(sc));
	}
	test_pair_free(full.sc, full.cc, full.fds);
	test_pair_free(resumed.sc, resumed.cc, resumed.fds);
	mtls_free(server);
	mtls_free(client);
}

/* The connection from before the switch stays after the finish, though the new
 * intermediate certificate is younger than its handshake, and its leaf may have expired
 * since. */
static void test_kept(void **state)
{
	struct world *w = *state;

	rejudge(w, &w->ca, w->cli, w->cli_key, NULL, 0, MTLS_REASON_NONE);
	rejudge(w, &w->ca, w->cli, w->cli_key, w->crl, 0, MTLS_REASON_NONE);
	/* what the peer sent is judged at the handshake, as on the path it sent: a leaf
	 * that expired since (renewed meanwhile) does not end the connection */
	rejudge(w, &w->ca, w->gone, w->gone_key, w->crl, 0, MTLS_REASON_NONE);
}

/* The same names under another CA: refused, though the server's own intermediate has the
 * peer's issuer's name. */
static void test_foreign(void **state)
{
	struct world *w = *state;

	rejudge(w, &w->foreign, w->alien, w->alien_key, NULL, -1, MTLS_REASON_UNKNOWN_CA);
}

/* Revocation still applies on the path through the new intermediate certificate. */
static void test_revoked(void **state)
{
	struct world *w = *state;

	rejudge(w, &w->ca, w->revoked, w->revoked_key, w->crl, -1, MTLS_REASON_REVOKED);
}

/* A new handshake after the finish with leaf + old intermediate: let in, through the
 * server's own intermediate; a foreign client is not. */
static void test_handshake_after(void **state)
{
	struct world *w = *state;
	struct mtls *server = mtls_server_new();
	struct mtls *client = old_client(w, &w->ca, w->cli, w->cli_key);
	struct mtls *alien = old_client(w, &w->foreign, w->alien, w->alien_key);
	struct pair p;

	server_after(w, server, w->crl);
	/* the client judges the server at the handshakes' time: the server's new intermediate
	 * certificate is younger; the client is configured now for this one */
	{
		X509 *roots[] = {w->ca.root, w->ca.root2};

		configure(client, false, w->cli, w->ca.inter, w->cli_key, roots, 2, NULL, 0);
		configure(alien, false, w->alien, w->foreign.inter, w->alien_key, roots, 2, NULL,
			  0);
	}
	if (pair_open(&p, server, client) != 0)
		fail_msg("old chain after the finish: %s / %s", mtls_error(p.sc), mtls_error(p.cc));
	assert_string_equal(mtls_peer_identity(mtls_conn_peer(p.sc)), APP1);
	test_pair_free(p.sc, p.cc, p.fds);
	assert_int_equal(pair_open(&p, server, alien), -1);
	assert_int_equal(mtls_error_reason(p.sc), MTLS_REASON_UNKNOWN_CA);
	test_pair_free(p.sc, p.cc, p.fds);
	mtls_free(server);
	mtls_free(client);
	mtls_free(alien);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kept),
		cmocka_unit_test(test_foreign),
		cmocka_unit_test(test_revoked),
		cmocka_unit_test(test_handshake_after),
	};

	return cmocka_run_group_tests(tests, world_setup, world_teardown);
}
