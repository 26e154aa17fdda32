/*
 * Endpoints and connections (lib/endpoint.c, lib/conn.c): struct mtls is one or the other,
 * and each public call given the other kind refuses it (usage, on the object given) or
 * answers "nothing" (NULL, 0), without reaching into fields that kind does not have. And
 * what building a state refuses (lib/state.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "mtls.h"
#include "testutil.h"

#define APP1 "spiffe://test.mtls/ns/prod/sa/app1"

static struct mtls_config *config_of(const char *cert, const char *key)
{
	struct mtls_config *cfg = mtls_config_new();

	assert_non_null(cfg);
	assert_int_equal(mtls_config_set_cert_file(cfg, cert_path(cert)), 0);
	assert_int_equal(mtls_config_set_key_file(cfg, cert_path(key)), 0);
	assert_int_equal(mtls_config_set_ca_file(cfg, cert_path("ca.pem")), 0);
	return cfg;
}

static struct mtls *server_new(void)
{
	struct mtls_config *cfg = config_of("server-chain.pem", "server.key");
	struct mtls *server = mtls_server_new();

	assert_int_equal(mtls_config_allow_uri(cfg, APP1), 0);
	assert_int_equal(mtls_configure(server, cfg), 0);
	mtls_config_free(cfg);
	return server;
}

static struct mtls *client_new(void)
{
	struct mtls_config *cfg = config_of("client-chain.pem", "client.key");
	struct mtls *client = mtls_client_new();

	assert_int_equal(mtls_configure(client, cfg), 0);
	mtls_config_free(cfg);
	return client;
}

/* The calls of a connection, on an endpoint: refused, and the endpoint's error untouched. */
static void conn_calls_refused(struct mtls *ep)
{
	char buf[16];
	unsigned long hits = 1, misses = 1;

	assert_int_equal(mtls_handshake(ep), -1);
	assert_int_equal(mtls_read(ep, buf, sizeof(buf)), -1);
	assert_int_equal(mtls_write(ep, "x", 1), -1);
	assert_int_equal(mtls_close(ep), -1);
	assert_int_equal(mtls_handshake_wait(ep, 10), -1);
	assert_int_equal(mtls_write_all(ep, "x", 1, 10), -1);
	assert_int_equal(mtls_read_wait(ep, buf, sizeof(buf), 10), -1);
	assert_int_equal(mtls_close_wait(ep, 10), -1);
	assert_int_equal(mtls_read_drained(ep), 0);
	mtls_keep_buffers(ep, 1);
	mtls_keep_buffers(ep, 0);
	assert_null(mtls_conn_peer(ep));
	assert_null(mtls_conn_version(ep));
	assert_null(mtls_conn_cipher(ep));
	assert_int_equal(mtls_conn_resumed(ep), 0);
	assert_null(mtls_conn_warning(ep));
	assert_int_equal(mtls_error_reason(ep), MTLS_REASON_NONE);
	assert_string_equal(mtls_error(ep), "");
	/* and the endpoint still works as one */
	assert_true(mtls_endpoint_cert_not_after(ep) > 0);
	assert_true(mtls_endpoint_ca_not_after(ep) > 0);
	mtls_endpoint_verify_cache_stats(ep, &hits, &misses);
	assert_int_equal(hits, 0);
	assert_int_equal(misses, 0);
}

static void test_conn_calls_on_endpoints(void **state)
{
	struct mtls *server = server_new(), *client = client_new();
	int fds[2];

	(void)state;
	conn_calls_refused(server);
	conn_calls_refused(client);
	/* each endpoint makes only its own kind of connection */
	test_socketpair(fds);
	assert_null(mtls_accept_fd(client, fds[0]));
	assert_int_equal(mtls_error_reason(client), MTLS_REASON_USAGE);
	assert_null(mtls_connect_fd(server, fds[1], "server.test"));
	assert_int_equal(mtls_error_reason(server), MTLS_REASON_USAGE);
	close(fds[0]);
	close(fds[1]);
	mtls_free(server);
	mtls_free(client);
}

/* The calls of an endpoint, on a connection: refused with usage on the connection, or
 * nothing; the connection is unharmed. */
static void endpoint_calls_refused(struct mtls *conn, struct mtls_config *cfg, int fd)
{
	unsigned long hits = 1, misses = 1;
	const char pem[] = "-----BEGIN CERTIFICATE-----\n";

	assert_int_equal(mtls_endpoint_cert_not_after(conn), 0);
	assert_int_equal(mtls_endpoint_ca_not_after(conn), 0);
	assert_int_equal(mtls_endpoint_crl_next_update(conn), 0);
	mtls_endpoint_verify_cache_stats(conn, &hits, &misses);
	assert_int_equal(hits, 0);
	assert_int_equal(misses, 0);
	assert_null(mtls_verified_peer(conn));
	assert_null(mtls_accept_fd(conn, fd));
	assert_int_equal(mtls_error_reason(conn), MTLS_REASON_USAGE);
	assert_null(mtls_connect_fd(conn, fd, "server.test"));
	assert_int_equal(mtls_error_reason(conn), MTLS_REASON_USAGE);
	assert_int_equal(
		mtls_verify_chain_pem(conn, (const uint8_t *)pem, sizeof(pem) - 1, NULL, NULL), -1);
	assert_int_equal(mtls_error_reason(conn), MTLS_REASON_USAGE);
	assert_int_equal(mtls_configure(conn, cfg), -1);
	assert_int_equal(mtls_error_reason(conn), MTLS_REASON_USAGE);
	assert_non_null(strstr(mtls_error(conn), "mtls_configure"));
	assert_null(mtls_verified_peer(conn));
}

static void test_endpoint_calls_on_conns(void **state)
{
	struct mtls *server = server_new(), *client = client_new();
	struct mtls_config *cfg = config_of("server-chain.pem", "server.key");
	struct mtls *sc, *cc;
	int fds[2], other[2], srv_rc, cli_rc;
	char buf[8];

	(void)state;
	test_socketpair(fds);
	test_socketpair(other);
	sc = mtls_accept_fd(server, fds[0]);
	cc = mtls_connect_fd(client, fds[1], "server.test");
	assert_non_null(sc);
	assert_non_null(cc);
	test_handshake_pair(sc, cc, &srv_rc, &cli_rc);
	assert_int_equal(srv_rc, 0);
	assert_int_equal(cli_rc, 0);
	endpoint_calls_refused(sc, cfg, other[0]);
	endpoint_calls_refused(cc, cfg, other[1]);
	/* still connected, with their peers and the endpoints' states */
	assert_string_equal(mtls_peer_identity(mtls_conn_peer(sc)), APP1);
	assert_non_null(mtls_conn_peer(cc));
	assert_non_null(mtls_conn_version(sc));
	assert_int_equal(mtls_write_all(cc, "ping", 4, 1000), 0);
	assert_int_equal(mtls_read_wait(sc, buf, sizeof(buf), 1000), 4);
	assert_memory_equal(buf, "ping", 4);
	/* the endpoints were not touched by the calls on their connections */
	assert_int_equal(mtls_error_reason(server), MTLS_REASON_NONE);
	assert_int_equal(mtls_error_reason(client), MTLS_REASON_NONE);
	close(other[0]);
	close(other[1]);
	mtls_config_free(cfg);
	test_pair_free(sc, cc, fds);
	mtls_free(server);
	mtls_free(client);
}

/* A server that would let in nobody is refused, and the message names every kind of rule
 * that would do (email too); one email rule is enough. */
static void test_server_without_allow_rule(void **state)
{
	struct mtls_config *cfg = config_of("server-chain.pem", "server.key");
	struct mtls *server = mtls_server_new();
	const char *kinds[] = {"URI", "DNS", "email", "CN", "pins", "allow any identity"};

	(void)state;
	assert_int_equal(mtls_configure(server, cfg), -1);
	assert_int_equal(mtls_error_reason(server), MTLS_REASON_CONFIG);
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (strstr(mtls_error(server), kinds[i]) == NULL)
			fail_msg("'%s' does not name %s", mtls_error(server), kinds[i]);
	assert_int_equal(mtls_config_allow_email(cfg, "*@example.org"), 0);
	assert_int_equal(mtls_configure(server, cfg), 0);
	assert_string_equal(mtls_error(server), "");
	mtls_config_free(cfg);
	mtls_free(server);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_conn_calls_on_endpoints),
		cmocka_unit_test(test_endpoint_calls_on_conns),
		cmocka_unit_test(test_server_without_allow_rule),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
