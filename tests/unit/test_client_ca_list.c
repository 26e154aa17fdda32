/*
 * A server names the CAs of its bundle in its CertificateRequest (TLS 1.2 and 1.3), so that
 * a client holding several certificates can pick the one the server takes, and mtls doctor
 * can tell which CA a server asks for. After a reload onto another CA bundle, the new names
 * are sent. Handshakes in one process over socketpairs with a plain OpenSSL client.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "testutil.h"

static void configure(struct mtls *server, const char *ca, int tls)
{
	struct mtls_config *cfg = mtls_config_new();

	assert_non_null(cfg);
	assert_int_equal(mtls_config_set_cert_file(cfg, cert_path("server-chain.pem")), 0);
	assert_int_equal(mtls_config_set_key_file(cfg, cert_path("server.key")), 0);
	assert_int_equal(mtls_config_set_ca_file(cfg, cert_path(ca)), 0);
	assert_int_equal(mtls_config_set_protocols(cfg, tls, tls), 0);
	assert_int_equal(mtls_config_set_allow_any_identity(cfg, 1), 0);
	if (mtls_configure(server, cfg) != 0)
		fail_msg("server config: %s", mtls_error(server));
	mtls_config_free(cfg);
}

/* Does the CA list a raw client (without a certificate) receives from server hold the
 * subject of the zoo certificate ca? Also checks that the list has exactly one name. */
static bool asks_for(struct mtls *server, const char *ca, int tls)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	X509 *want = test_read_cert(ca);
	const STACK_OF(X509_NAME) * names;
	struct mtls *sc;
	bool found = false;
	SSL *ssl;
	int fds[2], rc = MTLS_WANT_POLLIN;

	assert_non_null(ctx);
	SSL_CTX_set_min_proto_version(ctx, tls);
	SSL_CTX_set_max_proto_version(ctx, tls);
	ssl = SSL_new(ctx);
	assert_non_null(ssl);
	test_socketpair(fds);
	SSL_set_fd(ssl, fds[1]);
	sc = mtls_accept_fd(server, fds[0]);
	assert_non_null(sc);
	/* until the server has its verdict (no certificate: refused); the client has seen the
	 * CertificateRequest by then */
	for (int i = 0; i < 200 && (rc == MTLS_WANT_POLLIN || rc == MTLS_WANT_POLLOUT); i++) {
		SSL_connect(ssl);
		rc = mtls_handshake(sc);
	}
	assert_int_equal(rc, -1);
	assert_int_equal(mtls_error_reason(sc), MTLS_REASON_NO_CERTIFICATE);
	names = SSL_get0_peer_CA_list(ssl);
	assert_non_null(names);
	assert_int_equal(sk_X509_NAME_num(names), 1);
	for (int i = 0; i < sk_X509_NAME_num(names); i++)
		found |= X509_NAME_cmp(sk_X509_NAME_value(names, i), X509_get_subject_name(want)) ==
			 0;
	X509_free(want);
	mtls_free(sc);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	close(fds[0]);
	close(fds[1]);
	ERR_clear_error();
	return found;
}

static void test_names_sent(void **state)
{
	static const int versions[] = {MTLS_TLS1_2, MTLS_TLS1_3};

	(void)state;
	for (size_t v = 0; v < sizeof(versions) / sizeof(versions[0]); v++) {
		struct mtls *server = mtls_server_new();

		assert_non_null(server);
		configure(server, "ca.pem", versions[v]);
		assert_true(asks_for(server, "ca.pem", versions[v]));
		/* a reload onto another CA bundle: its names, not the old ones */
		configure(server, "other-ca.pem", versions[v]);
		assert_true(asks_for(server, "other-ca.pem", versions[v]));
		mtls_free(server);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names_sent),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
