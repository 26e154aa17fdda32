/*
 * mtls_verify_chain_pem(): the verification path without a handshake. CRL freshness policy
 * (refuse, or accept within a grace period with a warning) with CRLs signed here, at test
 * time, by the zoo's issuing CA; fixed verification times; expected URI.
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

#include "testutil.h"

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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crl_freshness),
		cmocka_unit_test(test_verify_time_and_uri),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
