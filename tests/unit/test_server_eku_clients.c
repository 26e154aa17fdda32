/*
 * mtls_config_insecure_server_eku_clients(): a server that takes a certificate whose
 * extendedKeyUsage names serverAuth (not clientAuth) as a client certificate, as the CA's
 * renewal API does so that a server's own certificate renews itself. Without it such a
 * client is refused (its EKU), with it accepted; everything else is still verified (a
 * certificate without either TLS EKU, another CA); a client endpoint refuses the option.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/pem.h>

#include "testutil.h"

static struct mtls *server_with(bool server_eku)
{
	struct mtls *server = mtls_server_new();
	struct mtls_config *cfg = mtls_config_new();

	assert_int_equal(mtls_config_set_cert_file(cfg, cert_path("server-chain.pem")), 0);
	assert_int_equal(mtls_config_set_key_file(cfg, cert_path("server.key")), 0);
	assert_int_equal(mtls_config_set_ca_file(cfg, cert_path("ca.pem")), 0);
	assert_int_equal(mtls_config_set_allow_any_identity(cfg, 1), 0);
	if (server_eku)
		assert_int_equal(mtls_config_insecure_server_eku_clients(cfg), 0);
	if (mtls_configure(server, cfg) != 0)
		fail_msg("server config: %s", mtls_error(server));
	if (server_eku)
		assert_non_null(strstr(mtls_config_insecure(cfg), "insecure_server_eku_clients"));
	mtls_config_free(cfg);
	return server;
}

/* A client presenting chain/key (PEM text), its handshake's outcome on the server. */
static int handshake(struct mtls *server, const char *chain, const char *key,
		     enum mtls_reason *reason, char *why, size_t why_len)
{
	struct mtls *client = test_mem_client(chain, key, false);
	int fds[2], s_rc, c_rc;
	struct mtls *sc, *cc;

	test_socketpair(fds);
	sc = mtls_accept_fd(server, fds[0]);
	cc = mtls_connect_fd(client, fds[1], "server.test");
	assert_non_null(sc);
	assert_non_null(cc);
	test_handshake_pair(sc, cc, &s_rc, &c_rc);
	*reason = mtls_error_reason(sc);
	snprintf(why, why_len, "%s", s_rc ? mtls_error(sc) : "ok");
	test_pair_free(sc, cc, fds);
	mtls_free(client);
	return s_rc;
}

/* A leaf of the zoo's intermediate with EKU eku (openssl.cnf syntax; "" none): chain and key
 * PEM (caller frees). */
static void leaf_with_eku(const char *eku, char **chain_pem, char **key_pem)
{
	X509 *in = test_read_cert("int.pem");
	FILE *f = fopen(cert_path("int.key"), "r");
	EVP_PKEY *in_key = f != NULL ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL, *key = NULL;
	const struct test_cert spec = {.subject = "CN=host.test",
				       .ku = "critical,digitalSignature",
				       .eku = eku,
				       .san = "DNS:host.test"};
	X509 *leaf, *chain[2];

	assert_non_null(in_key);
	fclose(f);
	leaf = test_cert_make(&spec, in, in_key, &key);
	chain[0] = leaf;
	chain[1] = in;
	*chain_pem = test_certs_pem(chain, 2);
	*key_pem = test_key_pem(key);
	X509_free(leaf);
	X509_free(in);
	EVP_PKEY_free(key);
	EVP_PKEY_free(in_key);
}

static void test_server_eku_client(void **state)
{
	struct mtls *strict = server_with(false), *lenient = server_with(true);
	char *chain, *key, why[512];
	enum mtls_reason reason;

	(void)state;
	leaf_with_eku("serverAuth", &chain, &key);
	if (handshake(strict, chain, key, &reason, why, sizeof(why)) == 0)
		fail_msg("a serverAuth-only client certificate was accepted by default");
	if (strstr(why, "clientAuth") == NULL && strstr(why, "client authentication") == NULL)
		fail_msg("the refusal does not say client authentication: %s", why);
	if (handshake(lenient, chain, key, &reason, why, sizeof(why)) != 0)
		fail_msg("a serverAuth client certificate was refused with the option: %s", why);
	free(chain);
	free(key);

	/* neither TLS EKU: refused even so */
	leaf_with_eku("codeSigning", &chain, &key);
	if (handshake(lenient, chain, key, &reason, why, sizeof(why)) == 0)
		fail_msg("a codeSigning client certificate was accepted");
	free(chain);
	free(key);

	/* a clientAuth one still is */
	leaf_with_eku("clientAuth", &chain, &key);
	if (handshake(lenient, chain, key, &reason, why, sizeof(why)) != 0)
		fail_msg("a clientAuth client certificate was refused: %s", why);
	free(chain);
	free(key);
	mtls_free(strict);
	mtls_free(lenient);
}

static void test_client_endpoint_refuses(void **state)
{
	struct mtls *client = mtls_client_new();
	struct mtls_config *cfg = mtls_config_new();

	(void)state;
	assert_int_equal(mtls_config_set_ca_file(cfg, cert_path("ca.pem")), 0);
	assert_int_equal(mtls_config_insecure_server_eku_clients(cfg), 0);
	assert_int_equal(mtls_configure(client, cfg), -1);
	assert_int_equal(mtls_error_reason(client), MTLS_REASON_CONFIG);
	mtls_config_free(cfg);
	mtls_free(client);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_server_eku_client),
		cmocka_unit_test(test_client_endpoint_refuses),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
