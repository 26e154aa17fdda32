/*
 * What an established server connection keeps: the certificates of the client's CAs are the
 * server's one shared copy (sessions.c), not a decoded copy per connection, in the session
 * and in the path the handshake verified; resumption still works and is judged again.
 */
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/ssl.h>

#include "internal.h"
#include "testutil.h"

#define APP1 "spiffe://test.mtls/ns/prod/sa/app1"
#define APP2 "spiffe://test.mtls/ns/prod/sa/app2"

/* A server keeping up to cache sessions (0: none, no resumption). */
static struct mtls *server_new_cache(size_t cache)
{
	struct mtls_config *cfg = mtls_config_new();
	struct mtls *server = mtls_server_new();

	assert_int_equal(mtls_config_set_cert_file(cfg, cert_path("server-chain.pem")), 0);
	assert_int_equal(mtls_config_set_key_file(cfg, cert_path("server.key")), 0);
	assert_int_equal(mtls_config_set_ca_file(cfg, cert_path("ca.pem")), 0);
	assert_int_equal(mtls_config_allow_uri(cfg, APP1), 0);
	assert_int_equal(mtls_config_allow_uri(cfg, APP2), 0);
	assert_int_equal(mtls_config_set_session_cache(cfg, cache), 0);
	if (mtls_configure(server, cfg) != 0)
		fail_msg("server config: %s", mtls_error(server));
	mtls_config_free(cfg);
	return server;
}

static struct mtls *server_new(void)
{
	return server_new_cache(MTLS_SESSION_CACHE_DEFAULT);
}

struct link {
	int fds[2];
	struct mtls *sc, *cc;
};

/* A handshake (and the round trip that makes the client read its ticket) between server and
 * client; the connections stay open, as an idle fleet's do. */
static void link_open(struct link *l, struct mtls *server, struct mtls *client)
{
	int srv_rc, cli_rc;

	test_socketpair(l->fds);
	l->sc = mtls_accept_fd(server, l->fds[0]);
	l->cc = mtls_connect_fd(client, l->fds[1], "server.test");
	assert_non_null(l->sc);
	assert_non_null(l->cc);
	test_handshake_pair(l->sc, l->cc, &srv_rc, &cli_rc);
	if (srv_rc != 0 || cli_rc != 0)
		fail_msg("handshake: server %s; client %s", mtls_error(l->sc), mtls_error(l->cc));
}

/* The certificate of the client's issuing CA as the server connection keeps it: in its
 * session (a server's peer chain holds no leaf) and in the verified path (leaf, CA, root). */
static X509 *session_issuer(const struct link *l)
{
	STACK_OF(X509) *chain = SSL_get_peer_cert_chain(l->sc->conn.ssl);

	assert_int_equal(sk_X509_num(chain), 1);
	return sk_X509_value(chain, 0);
}

static X509 *verified_issuer(const struct link *l)
{
	STACK_OF(X509) *chain = SSL_get0_verified_chain(l->sc->conn.ssl);

	assert_int_equal(sk_X509_num(chain), 3);
	return sk_X509_value(chain, 1);
}

/* Two clients with certificates of their own from the same CA: their server connections
 * share one object for that CA's certificate. */
static void test_issuer_shared_between_clients(void **state)
{
	struct mtls *server = server_new(), *a, *b;
	char *chain_a, *key_a, *chain_b, *key_b;
	struct link la, lb;

	(void)state;
	test_issue_client(3600, APP1, &chain_a, &key_a);
	test_issue_client(3600, APP2, &chain_b, &key_b);
	a = test_mem_client(chain_a, key_a, true);
	b = test_mem_client(chain_b, key_b, true);
	link_open(&la, server, a);
	link_open(&lb, server, b);

	assert_string_equal(mtls_peer_identity(mtls_conn_peer(la.sc)), APP1);
	assert_string_equal(mtls_peer_identity(mtls_conn_peer(lb.sc)), APP2);
	assert_ptr_not_equal(SSL_get0_peer_certificate(la.sc->conn.ssl),
			     SSL_get0_peer_certificate(lb.sc->conn.ssl));
	assert_int_equal(X509_cmp(session_issuer(&la), session_issuer(&lb)), 0);
	assert_ptr_equal(session_issuer(&la), session_issuer(&lb));
	assert_ptr_equal(verified_issuer(&la), verified_issuer(&lb));
	assert_ptr_equal(session_issuer(&la), verified_issuer(&la));

	test_pair_free(la.sc, la.cc, la.fds);
	test_pair_free(lb.sc, lb.cc, lb.fds);
	mtls_free(a);
	mtls_free(b);
	free(chain_a);
	free(key_a);
	free(chain_b);
	free(key_b);
	mtls_free(server);
}

/* A session whose CA certificate is the shared copy resumes, and the resumed connection is
 * judged again (its peer identity comes from the re-check), with the same shared copy. */
static void test_shared_issuer_resumes(void **state)
{
	struct mtls *server = server_new(), *client;
	char *chain, *key;
	struct link first, second;

	(void)state;
	test_issue_client(3600, APP1, &chain, &key);
	client = test_mem_client(chain, key, true);
	link_open(&first, server, client);
	assert_false(mtls_conn_resumed(first.sc));
	link_open(&second, server, client);
	assert_true(mtls_conn_resumed(second.sc));
	assert_string_equal(mtls_peer_identity(mtls_conn_peer(second.sc)), APP1);
	assert_ptr_equal(session_issuer(&second), session_issuer(&first));

	test_pair_free(first.sc, first.cc, first.fds);
	test_pair_free(second.sc, second.cc, second.fds);
	mtls_free(client);
	free(chain);
	free(key);
	mtls_free(server);
}

/* A server that keeps no sessions shares the CA certificate all the same: the idle
 * connections of a fleet must not cost more without a session cache (they did: some 5 KiB
 * each, a decoded copy per connection in its session and its verified path). */
static void test_issuer_shared_without_session_cache(void **state)
{
	struct mtls *server = server_new_cache(0), *a, *b;
	char *chain_a, *key_a, *chain_b, *key_b;
	struct link la, lb, again;

	(void)state;
	test_issue_client(3600, APP1, &chain_a, &key_a);
	test_issue_client(3600, APP2, &chain_b, &key_b);
	a = test_mem_client(chain_a, key_a, true);
	b = test_mem_client(chain_b, key_b, true);
	link_open(&la, server, a);
	link_open(&lb, server, b);

	assert_string_equal(mtls_peer_identity(mtls_conn_peer(la.sc)), APP1);
	assert_string_equal(mtls_peer_identity(mtls_conn_peer(lb.sc)), APP2);
	assert_ptr_equal(session_issuer(&la), session_issuer(&lb));
	assert_ptr_equal(verified_issuer(&la), verified_issuer(&lb));
	assert_ptr_equal(session_issuer(&la), verified_issuer(&la));
	/* and nothing to resume: a second connection makes a full handshake */
	link_open(&again, server, a);
	assert_false(mtls_conn_resumed(again.sc));
	assert_ptr_equal(session_issuer(&again), session_issuer(&la));

	test_pair_free(la.sc, la.cc, la.fds);
	test_pair_free(lb.sc, lb.cc, lb.fds);
	test_pair_free(again.sc, again.cc, again.fds);
	mtls_free(a);
	mtls_free(b);
	free(chain_a);
	free(key_a);
	free(chain_b);
	free(key_b);
	mtls_free(server);
}

/* What libmtls itself keeps per connection, beside OpenSSL's SSL: the rare texts (a
 * handshake's warning, what audit would have refused) are allocated only when there is
 * one, not held as two 600-byte error buffers and a 256-byte one by every idle connection
 * (1.5 KiB each before). Both still reach the caller: test_ocsp_handshake, test_audit. */
static void test_connection_struct_small(void **state)
{
	struct mtls *server = server_new(), *client;
	char *chain, *key;
	struct link l;

	(void)state;
	assert_true(sizeof(struct mtls) <= 768);
	test_issue_client(3600, APP1, &chain, &key);
	client = test_mem_client(chain, key, true);
	link_open(&l, server, client);
	assert_null(l.sc->conn.warning);
	assert_null(l.sc->conn.would);
	assert_null(mtls_conn_warning(l.sc));
	assert_int_equal(mtls_conn_would_refuse(l.sc), MTLS_REASON_NONE);

	test_pair_free(l.sc, l.cc, l.fds);
	mtls_free(client);
	free(chain);
	free(key);
	mtls_free(server);
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define HEAP_COUNTED 0 /* the sanitizers' allocators are not glibc's: mallinfo2() sees none */
#else
#define HEAP_COUNTED 1
#endif

static size_t heap_in_use(void)
{
	return mallinfo2().uordblks;
}

/* A parked connection (mtls_park()) gives OpenSSL's state back: the server side of an idle
 * connection held about 18 KiB of heap, parked it holds a small part of that (its own
 * state, the peer's identity, the peer's certificates as DER). Counted in bytes allocated,
 * the client sides freed first so that only the server's connections are in the count. */
static void test_parked_connection_small(void **state)
{
	enum { N = 32 };
	struct mtls *server, *client;
	struct link l[N];
	size_t with, parked, none;
	char *chain, *key;

	(void)state;
	if (!HEAP_COUNTED)
		skip(); /* before anything is made: skip() leaves the function */
	server = server_new_cache(0);
	test_issue_client(3600, APP1, &chain, &key);
	client = test_mem_client(chain, key, true);
	for (int i = 0; i < N; i++) {
		link_open(&l[i], server, client);
		mtls_free(l[i].cc);
		l[i].cc = NULL;
	}
	with = heap_in_use();
	for (int i = 0; i < N; i++)
		assert_int_equal(mtls_park(l[i].sc), 1);
	parked = heap_in_use();
	for (int i = 0; i < N; i++) {
		assert_true(mtls_conn_parked(l[i].sc));
		mtls_free(l[i].sc);
	}
	none = heap_in_use();
	print_message("heap per server connection: %zu bytes in OpenSSL, %zu parked\n",
		      (with - none) / N, (parked - none) / N);
	assert_true(with - parked >= (size_t)N * 12 * 1024); /* what parking gave back */
	assert_true(parked - none <= (size_t)N * 3 * 1024);

	for (int i = 0; i < N; i++)
		test_pair_free(NULL, NULL, l[i].fds);
	mtls_free(client);
	free(chain);
	free(key);
	mtls_free(server);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_issuer_shared_between_clients),
		cmocka_unit_test(test_shared_issuer_resumes),
		cmocka_unit_test(test_issuer_shared_without_session_cache),
		cmocka_unit_test(test_connection_struct_small),
		cmocka_unit_test(test_parked_connection_small),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
