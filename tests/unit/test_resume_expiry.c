/*
 * Resumption across certificate renewal: a client never offers a session whose server
 * certificate has expired or expires within TICKETS_EXPIRY_MARGIN (10 s): it would be
 * refused, the resumed handshake judging the certificate the session holds; it makes a full
 * handshake and gets the server's current certificate. The case of every server that renews its
 * certificate while clients hold tickets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/pem.h>

#include "testutil.h"

#define APP1 "spiffe://test.mtls/ns/prod/sa/app1"

static EVP_PKEY *read_key(const char *name)
{
	FILE *f = fopen(cert_path(name), "r");
	EVP_PKEY *k = f != NULL ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;

	if (f != NULL)
		fclose(f);
	assert_non_null(k);
	return k;
}

/* The server's config with a certificate for server.test that expires valid_for seconds
 * from now, issued by the zoo's intermediate. */
static void configure_server(struct mtls *server, long valid_for)
{
	X509 *in = test_read_cert("int.pem");
	EVP_PKEY *in_key = read_key("int.key"), *key = NULL;
	const struct test_cert spec = {.subject = "CN=server.test",
				       .ku = "critical,digitalSignature",
				       .eku = "serverAuth",
				       .san = "DNS:server.test",
				       .not_before = -60,
				       .not_after = valid_for};
	X509 *leaf = test_cert_make(&spec, in, in_key, &key);
	X509 *chain[2] = {leaf, in};
	char *chain_pem = test_certs_pem(chain, 2), *key_pem = test_key_pem(key);
	struct mtls_config *cfg = mtls_config_new();

	assert_int_equal(
		mtls_config_set_cert_mem(cfg, (const uint8_t *)chain_pem, strlen(chain_pem)), 0);
	assert_int_equal(mtls_config_set_key_mem(cfg, (const uint8_t *)key_pem, strlen(key_pem)),
			 0);
	assert_int_equal(mtls_config_set_ca_file(cfg, cert_path("ca.pem")), 0);
	assert_int_equal(mtls_config_allow_uri(cfg, APP1), 0);
	if (mtls_configure(server, cfg) != 0)
		fail_msg("server config: %s", mtls_error(server));
	mtls_config_free(cfg);
	free(chain_pem);
	free(key_pem);
	X509_free(leaf);
	X509_free(in);
	EVP_PKEY_free(key);
	EVP_PKEY_free(in_key);
}

/* A handshake of client with server; its result and whether it resumed. With ping, one
 * round trip after it, which brings a TLS 1.3 client its tickets. */
static int connect_once(struct mtls *server, struct mtls *client, bool ping, int *resumed,
			char *why, size_t why_len)
{
	int fds[2], s_rc, c_rc;
	struct mtls *sc, *cc;

	test_socketpair(fds);
	sc = mtls_accept_fd(server, fds[0]);
	cc = mtls_connect_fd(client, fds[1], "server.test");
	assert_non_null(sc);
	assert_non_null(cc);
	test_handshake_pair(sc, cc, &s_rc, &c_rc);
	snprintf(why, why_len, "server: %s / client: %s", s_rc ? mtls_error(sc) : "ok",
		 c_rc ? mtls_error(cc) : "ok");
	*resumed = c_rc == 0 && mtls_conn_resumed(cc);
	if (ping && s_rc == 0 && c_rc == 0) {
		char buf[4];

		assert_int_equal(mtls_write_all(sc, "ping", 4, 5000), 0);
		assert_int_equal(mtls_read_wait(cc, buf, sizeof(buf), 5000), 4);
	}
	test_pair_free(sc, cc, fds);
	return s_rc == 0 && c_rc == 0 ? 0 : -1;
}

static void test_expired_server_session_not_offered(void **state)
{
	struct mtls *server = mtls_server_new();
	struct mtls *client = mtls_client_new();
	struct mtls_config *cfg = mtls_config_new();
	char why[1024];
	int resumed;

	(void)state;
	assert_int_equal(mtls_config_set_cert_file(cfg, cert_path("client-chain.pem")), 0);
	assert_int_equal(mtls_config_set_key_file(cfg, cert_path("client.key")), 0);
	assert_int_equal(mtls_config_set_ca_file(cfg, cert_path("ca.pem")), 0);
	assert_int_equal(mtls_config_set_session_tickets(cfg, 1), 0);
	assert_int_equal(mtls_configure(client, cfg), 0);
	mtls_config_free(cfg);

	/* a server certificate 13 s from its end; the client gets tickets with it */
	configure_server(server, 13);
	if (connect_once(server, client, true, &resumed, why, sizeof(why)) != 0)
		fail_msg("first handshake: %s", why);
	if (connect_once(server, client, true, &resumed, why, sizeof(why)) != 0 || !resumed)
		fail_msg("the client did not resume while the certificate was valid: %s", why);

	/* the server renews; the sessions the client holds name the old certificate */
	configure_server(server, 86400);
	sleep(4); /* the old certificate is within the margin of its end */
	if (connect_once(server, client, true, &resumed, why, sizeof(why)) != 0)
		fail_msg("after the server's certificate neared its end and was renewed: %s", why);
	assert_false(resumed); /* a full handshake, with the new certificate */
	/* and its ticket resumes again */
	if (connect_once(server, client, false, &resumed, why, sizeof(why)) != 0 || !resumed)
		fail_msg("the new session was not resumed: %s", why);

	mtls_free(server);
	mtls_free(client);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_expired_server_session_not_offered),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
