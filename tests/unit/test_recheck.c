/*
 * mtls_conn_recheck(): a live connection's peer judged again under its endpoint's current
 * config, by the handshake's decision. Handshakes in one process over socketpairs, TLS 1.2
 * and 1.3, full and resumed; then the server (or client) endpoint is reconfigured the way a
 * reload does, and the connection made before is re-judged.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "testutil.h"

#define APP1	"spiffe://test.mtls/ns/prod/sa/app1"
#define REVOKED "spiffe://test.mtls/ns/prod/sa/revoked"

static const int versions[] = {MTLS_TLS1_2, MTLS_TLS1_3};

/* What a server's config holds; zero fields are the defaults. */
struct server_cfg {
	int tls;
	const char *allow; /* URI pattern; NULL: app1 and revoked */
	bool crl;	   /* the zoo's crl.pem (revokes revoked-client) */
	bool optional;	   /* client certificate optional */
	time_t verify_time;
};

static void configure_server(struct mtls *server, const struct server_cfg *sc)
{
	struct mtls_config *cfg = mtls_config_new();

	assert_int_equal(mtls_config_set_cert_file(cfg, cert_path("server-chain.pem")), 0);
	assert_int_equal(mtls_config_set_key_file(cfg, cert_path("server.key")), 0);
	assert_int_equal(mtls_config_set_ca_file(cfg, cert_path("ca.pem")), 0);
	assert_int_equal(mtls_config_set_protocols(cfg, sc->tls, sc->tls), 0);
	if (sc->allow != NULL) {
		assert_int_equal(mtls_config_allow_uri(cfg, sc->allow), 0);
	} else {
		assert_int_equal(mtls_config_allow_uri(cfg, APP1), 0);
		assert_int_equal(mtls_config_allow_uri(cfg, REVOKED), 0);
	}
	if (sc->crl)
		assert_int_equal(mtls_config_add_crl_file(cfg, cert_path("crl.pem")), 0);
	if (sc->optional)
		assert_int_equal(mtls_config_insecure_optional_client_cert(cfg), 0);
	if (sc->verify_time != 0)
		assert_int_equal(mtls_config_set_verify_time(cfg, sc->verify_time), 0);
	if (mtls_configure(server, cfg) != 0)
		fail_msg("server config: %s", mtls_error(server));
	mtls_config_free(cfg);
}

/* A client presenting the zoo's name-chain.pem (or nothing: name NULL). */
static void configure_client(struct mtls *client, const char *name, bool tickets,
			     time_t verify_time)
{
	struct mtls_config *cfg = mtls_config_new();
	char chain[64], key[64];

	if (name != NULL) {
		snprintf(chain, sizeof(chain), "%s-chain.pem", name);
		snprintf(key, sizeof(key), "%s.key", name);
		assert_int_equal(mtls_config_set_cert_file(cfg, cert_path(chain)), 0);
		assert_int_equal(mtls_config_set_key_file(cfg, cert_path(key)), 0);
	}
	assert_int_equal(mtls_config_set_ca_file(cfg, cert_path("ca.pem")), 0);
	assert_int_equal(mtls_config_set_session_tickets(cfg, tickets), 0);
	if (verify_time != 0)
		assert_int_equal(mtls_config_set_verify_time(cfg, verify_time), 0);
	if (mtls_configure(client, cfg) != 0)
		fail_msg("client config: %s", mtls_error(client));
	mtls_config_free(cfg);
}

struct pair {
	int fds[2];
	struct mtls *sc, *cc;
};

static void pair_open(struct pair *p, struct mtls *server, struct mtls *client)
{
	int srv_rc, cli_rc;

	test_socketpair(p->fds);
	p->sc = mtls_accept_fd(server, p->fds[0]);
	p->cc = mtls_connect_fd(client, p->fds[1], "server.test");
	assert_non_null(p->sc);
	assert_non_null(p->cc);
	test_handshake_pair(p->sc, p->cc, &srv_rc, &cli_rc);
	if (srv_rc != 0 || cli_rc != 0)
		fail_msg("handshake: server %s / client %s", mtls_error(p->sc), mtls_error(p->cc));
}

static void pair_close(struct pair *p)
{
	test_pair_free(p->sc, p->cc, p->fds);
}

/* The connections a case re-judges: a full handshake, and (with tickets) a resumed one,
 * whose peer chain comes from the session. */
static void connections(struct mtls *server, struct mtls *client, struct pair *full,
			struct pair *resumed)
{
	pair_open(full, server, client);
	/* TLS 1.3 sends its tickets after the handshake: a round trip delivers them */
	{
		char buf[4];

		assert_int_equal(mtls_write_all(full->sc, "ping", 4, 5000), 0);
		assert_int_equal(mtls_read_wait(full->cc, buf, sizeof(buf), 5000), 4);
	}
	pair_open(resumed, server, client);
	assert_int_equal(mtls_conn_resumed(resumed->sc), 1);
}

/* The server's config changes under live connections: each case's new config and what the
 * connections of revoked-client or client (app1) get. */
struct change {
	const char *name;
	const char *client; /* zoo name */
	struct server_cfg after;
	int rc;
	enum mtls_reason reason;
};

static void test_server_side(void **state)
{
	const long year = 400L * 86400;
	const struct change changes[] = {
		{"same config", "client", {0}, 0, MTLS_REASON_NONE},
		{"CRL revokes the peer", "revoked-client", {.crl = true}, -1, MTLS_REASON_REVOKED},
		{"CRL revokes another", "client", {.crl = true}, 0, MTLS_REASON_NONE},
		{"allow rules no longer match",
		 "client",
		 {.allow = "spiffe://test.mtls/ns/prod/sa/app2"},
		 -1,
		 MTLS_REASON_IDENTITY_NOT_ALLOWED},
		{"allow rules still match", "client", {.allow = APP1}, 0, MTLS_REASON_NONE},
		/* validity is the handshake's: a certificate that expired since (a renewed
		 * one) does not end the connection */
		{"expired at a later time", "client", {.verify_time = 1}, 0, MTLS_REASON_NONE},
		/* revocation is judged now, whatever the time */
		{"revoked, a year later",
		 "revoked-client",
		 {.crl = true, .verify_time = 1},
		 -1,
		 MTLS_REASON_REVOKED},
	};

	(void)state;
	for (size_t v = 0; v < 2; v++) {
		for (size_t i = 0; i < sizeof(changes) / sizeof(changes[0]); i++) {
			struct change ch = changes[i];
			struct server_cfg before = {.tls = versions[v]};
			struct mtls *server = mtls_server_new();
			struct mtls *client = mtls_client_new();
			struct pair full, resumed;

			ch.after.tls = versions[v];
			if (ch.after.verify_time == 1) /* a year later */
				ch.after.verify_time = time(NULL) + year;
			configure_server(server, &before);
			configure_client(client, ch.client, true, 0);
			connections(server, client, &full, &resumed);

			/* accepted before the change */
			assert_int_equal(mtls_conn_recheck(full.sc, server), 0);
			assert_int_equal(mtls_conn_recheck(resumed.sc, server), 0);

			configure_server(server, &ch.after);
			for (int k = 0; k < 2; k++) {
				struct mtls *sc = k == 0 ? full.sc : resumed.sc;
				int rc = mtls_conn_recheck(sc, server);

				if (rc != ch.rc || mtls_error_reason(sc) != ch.reason)
					fail_msg("%s (%s, TLS %d): rc %d reason %s: %s", ch.name,
						 k == 0 ? "full" : "resumed", versions[v], rc,
						 mtls_reason_name(mtls_error_reason(sc)),
						 mtls_error(sc));
				if (rc == 0)
					/* the handshake's peer stays */
					assert_string_equal(mtls_peer_identity(mtls_conn_peer(sc)),
							    APP1);
			}
			if (ch.reason == MTLS_REASON_REVOKED)
				assert_non_null(strstr(mtls_error(full.sc), "revoked"));
			pair_close(&full);
			pair_close(&resumed);
			mtls_free(server);
			mtls_free(client);
		}
	}
}

/* A client without a certificate stays in while the config still lets it in. */
static void test_no_certificate(void **state)
{
	struct mtls *server = mtls_server_new();
	struct mtls *client = mtls_client_new();
	struct server_cfg optional = {.tls = MTLS_TLS1_3, .optional = true};
	struct server_cfg required = {.tls = MTLS_TLS1_3};
	struct pair p;

	(void)state;
	configure_server(server, &optional);
	configure_client(client, NULL, false, 0);
	pair_open(&p, server, client);
	assert_null(mtls_conn_peer(p.sc));
	assert_int_equal(mtls_conn_recheck(p.sc, server), 0);
	configure_server(server, &optional);
	assert_int_equal(mtls_conn_recheck(p.sc, server), 0);
	configure_server(server, &required);
	assert_int_equal(mtls_conn_recheck(p.sc, server), -1);
	assert_int_equal(mtls_error_reason(p.sc), MTLS_REASON_NO_CERTIFICATE);
	pair_close(&p);
	mtls_free(server);
	mtls_free(client);
}

/* The connector's side: the server's certificate judged again under the client's config. */
static void test_client_side(void **state)
{
	struct mtls *server = mtls_server_new();
	struct mtls *client = mtls_client_new();
	struct server_cfg sc = {.tls = MTLS_TLS1_3};
	struct pair p;

	(void)state;
	configure_server(server, &sc);
	configure_client(client, "client", false, 0);
	pair_open(&p, server, client);
	assert_int_equal(mtls_conn_recheck(p.cc, client), 0);
	/* a year later the server's certificate has expired: judged at the handshake's time,
	 * the connection stays (a new one would be refused) */
	configure_client(client, "client", false, time(NULL) + 400L * 86400);
	assert_int_equal(mtls_conn_recheck(p.cc, client), 0);
	pair_close(&p);
	mtls_free(server);
	mtls_free(client);
}

/* Misuse: the other role's endpoint, an endpoint instead of a connection, a connection
 * before its handshake. */
static void test_usage(void **state)
{
	struct mtls *server = mtls_server_new();
	struct mtls *client = mtls_client_new();
	struct server_cfg sc = {.tls = MTLS_TLS1_3};
	struct pair p;
	int fds[2];
	struct mtls *early;

	(void)state;
	configure_server(server, &sc);
	configure_client(client, "client", false, 0);
	pair_open(&p, server, client);
	assert_int_equal(mtls_conn_recheck(p.sc, client), -1);
	assert_int_equal(mtls_error_reason(p.sc), MTLS_REASON_USAGE);
	assert_int_equal(mtls_conn_recheck(server, server), -1);
	assert_int_equal(mtls_conn_recheck(NULL, server), -1);
	test_socketpair(fds);
	early = mtls_accept_fd(server, fds[0]);
	assert_int_equal(mtls_conn_recheck(early, server), -1);
	assert_int_equal(mtls_error_reason(early), MTLS_REASON_USAGE);
	test_pair_free(early, NULL, fds);
	pair_close(&p);
	mtls_free(server);
	mtls_free(client);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_server_side),
		cmocka_unit_test(test_no_certificate),
		cmocka_unit_test(test_client_side),
		cmocka_unit_test(test_usage),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
