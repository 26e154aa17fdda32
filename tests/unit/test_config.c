/*
 * Loading configuration: every way a certificate, key, CA or CRL can be wrong gets its own
 * reason code and a message that says what to fix; a failed configure changes nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"

struct load_case {
	const char *name;
	bool server;
	const char *cert;
	const char *key;
	const char *ca;
	const char *crl;
	const char *passphrase_file;
	const char *passphrase;
	bool insecure_key_permissions;
	bool no_rules; /* server without allow rules */
	enum mtls_reason expect;
	const char *message_has; /* part of the message that tells what to do */
};

static const struct load_case load_cases[] = {
	{"good client", false, "client-chain.pem", "client.key", "ca.pem",
	 .expect = MTLS_REASON_NONE},
	{"good server", true, "server-chain.pem", "server.key", "ca.pem",
	 .expect = MTLS_REASON_NONE},
	{"client without own certificate", false, NULL, NULL, "ca.pem", .expect = MTLS_REASON_NONE},
	{"key does not match certificate", false, "client-chain.pem", "mismatch.key", "ca.pem",
	 .expect = MTLS_REASON_KEY_MISMATCH, .message_has = "does not match"},
	{"world-readable key", false, "client-chain.pem", "client-world.key", "ca.pem",
	 .expect = MTLS_REASON_KEY_PERMISSIONS, .message_has = "chmod 600"},
	{"world-readable key, insecure option", false, "client-chain.pem", "client-world.key",
	 "ca.pem", .insecure_key_permissions = true, .expect = MTLS_REASON_NONE},
	{"malformed certificate", false, "malformed.pem", "client.key", "ca.pem",
	 .expect = MTLS_REASON_BAD_PEM, .message_has = "right file"},
	{"malformed CA", false, "client-chain.pem", "client.key", "malformed.pem",
	 .expect = MTLS_REASON_BAD_PEM, .message_has = "malformed.pem"},
	{"CA file holds a key", false, "client-chain.pem", "client.key", "client.key",
	 .expect = MTLS_REASON_BAD_PEM},
	{"key file holds a certificate", false, "client-chain.pem", "client.pem", "ca.pem",
	 .insecure_key_permissions = true, .expect = MTLS_REASON_BAD_PEM,
	 .message_has = "holds a certificate, not a private key; give the key file"},
	/* a certificate's mode 0644 is no reason to talk about chmod */
	{"key file holds a certificate, mode 0644", false, "client-chain.pem", "client.pem",
	 "ca.pem", .expect = MTLS_REASON_BAD_PEM,
	 .message_has = "client.pem holds a certificate, not a private key"},
	{"key file holds a chain", false, "client-chain.pem", "client-chain.pem", "ca.pem",
	 .expect = MTLS_REASON_BAD_PEM, .message_has = "holds a certificate"},
	{"CA file holds a leaf", false, "client-chain.pem", "client.key", "client.pem",
	 .expect = MTLS_REASON_CONFIG,
	 .message_has = "holds a certificate that is not a CA (subject CN=app1"},
	{"CA file holds a chain file, leaf first", true, "server-chain.pem", "server.key",
	 "client-chain.pem", .expect = MTLS_REASON_CONFIG,
	 .message_has = "give the CA bundle, not a leaf"},
	{"CA file holds a self-signed leaf", false, "client-chain.pem", "client.key",
	 "selfsigned-client.pem", .expect = MTLS_REASON_CONFIG, .message_has = "not a CA"},
	{"malformed CRL", false, "client-chain.pem", "client.key", "ca.pem", "malformed.pem",
	 .expect = MTLS_REASON_BAD_PEM, .message_has = "CRL"},
	{"encrypted key without passphrase", false, "client-chain.pem", "client-enc.key", "ca.pem",
	 .expect = MTLS_REASON_BAD_PASSPHRASE, .message_has = "passphrase"},
	{"encrypted key, wrong passphrase", false, "client-chain.pem", "client-enc.key", "ca.pem",
	 .passphrase = "wrong horse", .expect = MTLS_REASON_BAD_PASSPHRASE,
	 .message_has = "wrong passphrase"},
	{"encrypted key, passphrase file", false, "client-chain.pem", "client-enc.key", "ca.pem",
	 .passphrase_file = "client-enc.pass", .expect = MTLS_REASON_NONE},
	{"server without allow rules", true, "server-chain.pem", "server.key", "ca.pem",
	 .no_rules = true, .expect = MTLS_REASON_CONFIG, .message_has = "allow"},
	{"no CA", false, "client-chain.pem", "client.key", NULL, .expect = MTLS_REASON_CONFIG,
	 .message_has = "CA"},
};

static void test_load_matrix(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(load_cases) / sizeof(load_cases[0]); i++) {
		const struct load_case *tc = &load_cases[i];
		struct mtls_config *cfg = mtls_config_new();
		struct mtls *ep = tc->server ? mtls_server_new() : mtls_client_new();
		int rc;

		if (tc->cert != NULL)
			assert_int_equal(mtls_config_set_cert_file(cfg, cert_path(tc->cert)), 0);
		if (tc->key != NULL)
			assert_int_equal(mtls_config_set_key_file(cfg, cert_path(tc->key)), 0);
		if (tc->ca != NULL)
			assert_int_equal(mtls_config_set_ca_file(cfg, cert_path(tc->ca)), 0);
		if (tc->crl != NULL)
			assert_int_equal(mtls_config_add_crl_file(cfg, cert_path(tc->crl)), 0);
		if (tc->passphrase_file != NULL)
			assert_int_equal(mtls_config_set_key_passphrase_file(
						 cfg, cert_path(tc->passphrase_file)),
					 0);
		if (tc->passphrase != NULL)
			assert_int_equal(mtls_config_set_key_passphrase(cfg, tc->passphrase), 0);
		if (tc->insecure_key_permissions) {
			mtls_config_insecure_key_permissions(cfg);
			assert_string_equal(mtls_config_insecure(cfg), "insecure_key_permissions");
		}
		if (tc->server && !tc->no_rules)
			assert_int_equal(
				mtls_config_allow_uri(cfg, "spiffe://test.mtls/ns/prod/sa/app1"),
				0);
		rc = mtls_configure(ep, cfg);
		if ((int)mtls_error_reason(ep) != (int)tc->expect)
			fail_msg("%s: reason %s, expected %s (%s)", tc->name,
				 mtls_reason_name(mtls_error_reason(ep)),
				 mtls_reason_name(tc->expect), mtls_error(ep));
		assert_int_equal(rc, tc->expect == MTLS_REASON_NONE ? 0 : -1);
		if (tc->message_has != NULL && strstr(mtls_error(ep), tc->message_has) == NULL)
			fail_msg("%s: message '%s' lacks '%s'", tc->name, mtls_error(ep),
				 tc->message_has);
		/* a key's contents never appear in a message (a hint may name its PEM type) */
		assert_null(strstr(mtls_error(ep), "-----"));
		assert_null(strstr(mtls_error(ep), "MII"));
		assert_null(strstr(mtls_error(ep), "MHc"));
		assert_null(strstr(mtls_error(ep), "MIG"));
		mtls_config_free(cfg);
		mtls_free(ep);
	}
}

static void test_file_errors(void **state)
{
	struct mtls_config *cfg = mtls_config_new();

	(void)state;
	assert_int_equal(mtls_config_set_cert_file(cfg, "/nonexistent/cert.pem"), -1);
	assert_int_equal(mtls_config_error_reason(cfg), MTLS_REASON_FILE);
	assert_non_null(strstr(mtls_config_error(cfg), "/nonexistent/cert.pem"));
	assert_int_equal(mtls_config_set_ca_file(cfg, "/"), -1);
	assert_int_equal(mtls_config_error_reason(cfg), MTLS_REASON_FILE);
	assert_int_equal(mtls_config_set_key_passphrase_env(cfg, "MTLS_TEST_NO_SUCH_VARIABLE"), -1);
	assert_int_equal(mtls_config_error_reason(cfg), MTLS_REASON_CONFIG);
	assert_int_equal(mtls_config_allow_uri(cfg, "not-a-uri"), -1);
	assert_int_equal(mtls_config_error_reason(cfg), MTLS_REASON_USAGE);
	assert_int_equal(mtls_config_allow_spki_sha256(cfg, "abcd"), -1);
	assert_int_equal(mtls_config_set_protocols(cfg, 0x0302, MTLS_TLS1_3), -1);
	assert_int_equal(mtls_config_set_verify_depth(cfg, 100), -1);
	mtls_config_free(cfg);
	mtls_config_free(NULL);
	mtls_free(NULL);
}

static void test_passphrase_env(void **state)
{
	struct mtls_config *cfg = mtls_config_new();
	struct mtls *ep = mtls_client_new();
	char *pass = test_slurp(cert_path("client-enc.pass"), NULL);

	(void)state;
	setenv("MTLS_TEST_PASSPHRASE", pass, 1);
	free(pass);
	assert_int_equal(mtls_config_set_cert_file(cfg, cert_path("client-chain.pem")), 0);
	assert_int_equal(mtls_config_set_key_file(cfg, cert_path("client-enc.key")), 0);
	assert_int_equal(mtls_config_set_ca_file(cfg, cert_path("ca.pem")), 0);
	assert_int_equal(mtls_config_set_key_passphrase_env(cfg, "MTLS_TEST_PASSPHRASE"), 0);
	assert_int_equal(mtls_configure(ep, cfg), 0);
	assert_true(mtls_endpoint_cert_not_after(ep) > time(NULL));
	assert_true(mtls_endpoint_ca_not_after(ep) > mtls_endpoint_cert_not_after(ep));
	assert_int_equal(mtls_endpoint_crl_next_update(ep), 0);
	mtls_config_free(cfg);
	mtls_free(ep);
	unsetenv("MTLS_TEST_PASSPHRASE");
}

/* The same configuration from memory as from files. */
static void test_memory(void **state)
{
	size_t clen, klen, alen, rlen;
	char *cert = test_slurp(cert_path("server-chain.pem"), &clen);
	char *key = test_slurp(cert_path("server.key"), &klen);
	char *ca = test_slurp(cert_path("ca.pem"), &alen);
	char *crl = test_slurp(cert_path("crl.pem"), &rlen);
	struct mtls_config *cfg = mtls_config_new();
	struct mtls *ep = mtls_server_new();

	(void)state;
	assert_int_equal(mtls_config_set_cert_mem(cfg, (uint8_t *)cert, clen), 0);
	assert_int_equal(mtls_config_set_key_mem(cfg, (uint8_t *)key, klen), 0);
	assert_int_equal(mtls_config_set_ca_mem(cfg, (uint8_t *)ca, alen), 0);
	assert_int_equal(mtls_config_add_crl_mem(cfg, (uint8_t *)crl, rlen), 0);
	assert_int_equal(mtls_config_set_allow_any_identity(cfg, 1), 0);
	assert_int_equal(mtls_configure(ep, cfg), 0);
	assert_true(mtls_endpoint_crl_next_update(ep) > time(NULL));
	/* a verifier sees the revoked certificate as revoked */
	{
		char *chain = test_slurp(cert_path("revoked-client-chain.pem"), &clen);

		assert_int_equal(mtls_verify_chain_pem(ep, (uint8_t *)chain, clen, NULL, NULL), -1);
		assert_int_equal(mtls_error_reason(ep), MTLS_REASON_REVOKED);
		assert_int_equal(mtls_error_category(ep), MTLS_CATEGORY_REVOKED);
		free(chain);
	}
	free(cert);
	free(key);
	free(ca);
	free(crl);
	mtls_config_free(cfg);
	mtls_free(ep);
}

static void test_reason_names(void **state)
{
	(void)state;
	for (int r = 0; r < MTLS_REASON_COUNT; r++) {
		const char *name = mtls_reason_name((enum mtls_reason)r);

		assert_int_equal(mtls_reason_from_name(name), r);
		for (int q = 0; q < r; q++)
			assert_string_not_equal(name, mtls_reason_name((enum mtls_reason)q));
		assert_string_not_equal(
			mtls_category_name(mtls_reason_category((enum mtls_reason)r)), "unknown");
	}
	assert_string_equal(mtls_reason_name(MTLS_REASON_COUNT), "unknown");
	assert_string_equal(mtls_reason_name(MTLS_REASON_EXPIRED), "expired");
	assert_int_equal(mtls_reason_from_name("no_such_reason"), MTLS_REASON_NONE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_load_matrix),    cmocka_unit_test(test_file_errors),
		cmocka_unit_test(test_passphrase_env), cmocka_unit_test(test_memory),
		cmocka_unit_test(test_reason_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
