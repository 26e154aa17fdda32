/*
 * OCSP in handshakes, in one process over socketpairs (TLS 1.2 and 1.3): a server staples
 * the answer its endpoint holds, a client judges it (good accepts without a responder even
 * in hard-fail, revoked refuses, must-staple without a staple is ocsp_missing), and OCSP is
 * decided on every path of a peer: full handshakes, verification cache hits, resumed
 * sessions and re-checks of live connections, on both sides.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/ocsp.h>

#include "internal.h"
#include "testutil.h"

#define URL "http://127.0.0.1:9/ocsp"

static const int versions[] = {MTLS_TLS1_2, MTLS_TLS1_3};

struct pki {
	X509 *root, *ca, *server, *must, *client;
	EVP_PKEY *root_key, *ca_key, *server_key, *must_key, *client_key;
	char *root_pem, *server_pem, *server_key_pem, *must_pem, *must_key_pem, *client_pem,
		*client_key_pem;
};

static struct pki P;

static char *chain_pem(X509 *leaf)
{
	X509 *chain[2] = {leaf, P.ca};

	return test_certs_pem(chain, 2);
}

static int setup(void **state)
{
	(void)state;
	P.root = test_cert_make(&(struct test_cert){.subject = "CN=root", .ca = true}, NULL, NULL,
				&P.root_key);
	P.ca = test_cert_make(&(struct test_cert){.subject = "CN=issuing", .ca = true}, P.root,
			      P.root_key, &P.ca_key);
	P.server = test_cert_make(&(struct test_cert){.subject = "CN=server",
						      .eku = "serverAuth",
						      .san = "DNS:server.test"},
				  P.ca, P.ca_key, &P.server_key);
	P.must = test_cert_make(&(struct test_cert){.subject = "CN=must",
						    .eku = "serverAuth",
						    .san = "DNS:server.test",
						    .aia = "OCSP;URI:" URL,
						    .tlsfeature = "status_request"},
				P.ca, P.ca_key, &P.must_key);
	P.client = test_cert_make(&(struct test_cert){.subject = "CN=client"}, P.ca, P.ca_key,
				  &P.client_key);
	P.root_pem = test_certs_pem(&P.root, 1);
	P.server_pem = chain_pem(P.server);
	P.server_key_pem = test_key_pem(P.server_key);
	P.must_pem = chain_pem(P.must);
	P.must_key_pem = test_key_pem(P.must_key);
	P.client_pem = chain_pem(P.client);
	P.client_key_pem = test_key_pem(P.client_key);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	X509_free(P.root);
	X509_free(P.ca);
	X509_free(P.server);
	X509_free(P.must);
	X509_free(P.client);
	EVP_PKEY_free(P.root_key);
	EVP_PKEY_free(P.ca_key);
	EVP_PKEY_free(P.server_key);
	EVP_PKEY_free(P.must_key);
	EVP_PKEY_free(P.client_key);
	free(P.root_pem);
	free(P.server_pem);
	free(P.server_key_pem);
	free(P.must_pem);
	free(P.must_key_pem);
	free(P.client_pem);
	free(P.client_key_pem);
	return 0;
}

struct side {
	int tls;
	enum mtls_ocsp_mode mode;
	bool staple;	/* server: staple (and its responder URL) */
	bool must;	/* server: the must-staple certificate */
	bool tickets;	/* client: resume */
	size_t vcache;	/* 0: the default */
	bool no_vcache; /* verify every chain */
};

static struct mtls *endpoint(bool server, const struct side *s)
{
	struct mtls_config *cfg = mtls_config_new();
	struct mtls *e = server ? mtls_server_new() : mtls_client_new();
	const char *cert = server ? (s->must ? P.must_pem : P.server_pem) : P.client_pem;
	const char *key = server ? (s->must ? P.must_key_pem : P.server_key_pem) : P.client_key_pem;

	assert_non_null(e);
	assert_int_equal(mtls_config_set_cert_mem(cfg, (const uint8_t *)cert, strlen(cert)), 0);
	assert_int_equal(mtls_config_set_key_mem(cfg, (const uint8_t *)key, strlen(key)), 0);
	assert_int_equal(
		mtls_config_set_ca_mem(cfg, (const uint8_t *)P.root_pem, strlen(P.root_pem)), 0);
	assert_int_equal(mtls_config_set_protocols(cfg, s->tls, s->tls), 0);
	assert_int_equal(mtls_config_set_ocsp_mode(cfg, s->mode), 0);
	assert_int_equal(mtls_config_set_ocsp_url(cfg, URL), 0);
	if (server) {
		assert_int_equal(mtls_config_set_allow_any_identity(cfg, 1), 0);
		assert_int_equal(mtls_config_set_ocsp_staple(cfg, s->staple), 0);
	} else {
		assert_int_equal(mtls_config_set_session_tickets(cfg, s->tickets), 0);
	}
	if (s->no_vcache)
		assert_int_equal(mtls_config_set_verify_cache(cfg, 0), 0);
	if (mtls_configure(e, cfg) != 0)
		fail_msg("configure: %s", mtls_error(e));
	mtls_config_free(cfg);
	return e;
}

struct pair {
	int fds[2];
	struct mtls *sc, *cc;
	int srv_rc, cli_rc;
};

static void pair_open(struct pair *p, struct mtls *server, struct mtls *client)
{
	test_socketpair(p->fds);
	p->sc = mtls_accept_fd(server, p->fds[0]);
	p->cc = mtls_connect_fd(client, p->fds[1], "server.test");
	assert_non_null(p->sc);
	assert_non_null(p->cc);
	test_handshake_pair(p->sc, p->cc, &p->srv_rc, &p->cli_rc);
}

static void pair_ok(struct pair *p, struct mtls *server, struct mtls *client)
{
	pair_open(p, server, client);
	if (p->srv_rc != 0 || p->cli_rc != 0)
		fail_msg("handshake: server %s / client %s", mtls_error(p->sc), mtls_error(p->cc));
}

static void pair_close(struct pair *p)
{
	test_pair_free(p->sc, p->cc, p->fds);
}

/* TLS 1.3 sends its tickets after the handshake: a round trip delivers them. */
static void round_trip(struct pair *p)
{
	char buf[4];

	assert_int_equal(mtls_write_all(p->sc, "ping", 4, 5000), 0);
	assert_int_equal(mtls_read_wait(p->cc, buf, sizeof(buf), 5000), 4);
}

static unsigned char *response(X509 *cert, int status, size_t *len)
{
	return test_ocsp_response(
		&(struct test_ocsp){
			.cert = cert, .issuer = P.ca, .issuer_key = P.ca_key, .status = status},
		len);
}

static void staple(struct mtls *server, X509 *cert, int status)
{
	size_t n;
	unsigned char *der = response(cert, status, &n);

	if (mtls_endpoint_set_ocsp_staple(server, der, n) != 0)
		fail_msg("staple: %s", mtls_error(server));
	free(der);
}

/* What the endpoint's store knows of cert, as the decision would put it. */
static void remember(struct mtls *e, X509 *cert, int status)
{
	size_t n;
	unsigned char *der = response(cert, status, &n);
	struct ocsp_result r;
	char why[200];

	assert_int_equal(ocsp_check_response(der, n, P.ca, X509_get0_serialNumber(cert), time(NULL),
					     &r, why, sizeof(why)),
			 0);
	ocsp_store_put(e->ep.ocsp, cert, P.ca, NULL, &r, 100, time(NULL));
	free(der);
}

/* The server's staple comes from a job, like any answer, and is served; the client (mode
 * off, hard-fail) takes a good one without asking a responder. */
static void test_staple_served(void **state)
{
	(void)state;
	for (size_t v = 0; v < 2; v++) {
		struct side ss = {.tls = versions[v], .staple = true},
			    cs = {.tls = versions[v], .mode = MTLS_OCSP_HARD_FAIL};
		struct mtls *server = endpoint(true, &ss), *client = endpoint(false, &cs);
		struct mtls_ocsp_job *job = mtls_ocsp_job_next(server, NULL);
		size_t n;
		unsigned char *der;
		time_t tu, nu;
		struct pair p;

		/* before the staple: the hard-fail client has no answer */
		pair_open(&p, server, client);
		assert_int_equal(p.cli_rc, -1);
		assert_int_equal(mtls_error_reason(p.cc), MTLS_REASON_OCSP_UNAVAILABLE);
		pair_close(&p);

		assert_non_null(job);
		assert_true(mtls_ocsp_job_is_staple(job));
		assert_string_equal(mtls_ocsp_job_url(job), URL);
		assert_non_null(strstr(mtls_ocsp_job_subject(job), "CN=server"));
		assert_int_equal(mtls_endpoint_ocsp_staple_times(server, &tu, &nu), 0);
		der = response(P.server, V_OCSP_CERTSTATUS_GOOD, &n);
		assert_int_equal(mtls_ocsp_job_done(server, job, der, n, NULL),
				 MTLS_OCSP_STATUS_GOOD);
		free(der);
		assert_int_equal(mtls_endpoint_ocsp_staple_times(server, &tu, &nu), 1);
		assert_true(nu > time(NULL) + 3500);
		/* not due again before the middle of its validity */
		assert_null(mtls_ocsp_job_next(server, NULL));

		pair_ok(&p, server, client);
		assert_int_equal(mtls_conn_ocsp(p.cc), MTLS_OCSP_RESULT_GOOD);
		pair_close(&p);
		mtls_free(server);
		mtls_free(client);
	}
}

static void test_staple_revoked(void **state)
{
	(void)state;
	for (size_t v = 0; v < 2; v++) {
		struct side ss = {.tls = versions[v], .staple = true},
			    cs = {.tls = versions[v], .mode = MTLS_OCSP_OFF};
		struct mtls *server = endpoint(true, &ss), *client = endpoint(false, &cs);
		struct pair p;

		staple(server, P.server, V_OCSP_CERTSTATUS_REVOKED);
		pair_open(&p, server, client);
		assert_int_equal(p.cli_rc, -1);
		if (mtls_error_reason(p.cc) != MTLS_REASON_REVOKED ||
		    strstr(mtls_error(p.cc), "stapled") == NULL)
			fail_msg("TLS %x: %s: %s", versions[v],
				 mtls_reason_name(mtls_error_reason(p.cc)), mtls_error(p.cc));
		pair_close(&p);
		mtls_free(server);
		mtls_free(client);
	}
}

/* Must-staple (RFC 7633): refused without a staple, in every mode; a staple lets it in,
 * and a resumption (which carries none) is judged by the answer remembered. */
static void test_must_staple(void **state)
{
	(void)state;
	for (size_t v = 0; v < 2; v++) {
		struct side ss = {.tls = versions[v], .must = true},
			    cs = {.tls = versions[v], .mode = MTLS_OCSP_OFF, .tickets = true};
		struct mtls *server = endpoint(true, &ss), *client = endpoint(false, &cs);
		struct pair p;

		/* the certificate demands it: the server staples without being told */
		struct mtls_ocsp_job *job = mtls_ocsp_job_next(server, NULL);

		assert_non_null(job);
		assert_true(mtls_ocsp_job_is_staple(job));
		mtls_ocsp_job_free(job);
		pair_open(&p, server, client);
		assert_int_equal(p.cli_rc, -1);
		if (mtls_error_reason(p.cc) != MTLS_REASON_OCSP_MISSING ||
		    strstr(mtls_error(p.cc), "must-staple") == NULL)
			fail_msg("TLS %x: %s: %s", versions[v],
				 mtls_reason_name(mtls_error_reason(p.cc)), mtls_error(p.cc));
		pair_close(&p);

		staple(server, P.must, V_OCSP_CERTSTATUS_GOOD);
		pair_ok(&p, server, client);
		assert_int_equal(mtls_conn_ocsp(p.cc), MTLS_OCSP_RESULT_GOOD);
		round_trip(&p);
		pair_close(&p);
		pair_ok(&p, server, client);
		assert_int_equal(mtls_conn_resumed(p.cc), 1);
		pair_close(&p);
		mtls_free(server);
		mtls_free(client);
	}
}

/* The server checking its clients: every path consults OCSP. */
static void test_client_paths(void **state)
{
	(void)state;
	for (size_t v = 0; v < 2; v++) {
		struct side ss = {.tls = versions[v], .mode = MTLS_OCSP_HARD_FAIL},
			    cs = {.tls = versions[v], .tickets = true};
		struct mtls *server = endpoint(true, &ss), *client = endpoint(false, &cs);
		struct mtls *fresh_client;
		struct pair live, p;
		unsigned long hits0, hits1, misses;

		/* hard-fail: refused until the answer comes */
		pair_open(&p, server, client);
		assert_int_equal(p.srv_rc, -1);
		assert_int_equal(mtls_error_reason(p.sc), MTLS_REASON_OCSP_UNAVAILABLE);
		pair_close(&p);
		remember(server, P.client, V_OCSP_CERTSTATUS_GOOD);
		pair_ok(&live, server, client);
		assert_int_equal(mtls_conn_ocsp(live.sc), MTLS_OCSP_RESULT_GOOD);
		round_trip(&live);
		assert_int_equal(mtls_conn_recheck(live.sc, server), 0);

		/* revoked now: the resumed session, a verification cache hit and the live
		 * connection are all refused */
		remember(server, P.client, V_OCSP_CERTSTATUS_REVOKED);
		pair_open(&p, server, client);
		assert_int_equal(mtls_conn_resumed(p.sc), 1);
		assert_int_equal(p.srv_rc, -1);
		assert_int_equal(mtls_error_reason(p.sc), MTLS_REASON_REVOKED);
		pair_close(&p);

		cs.tickets = false;
		fresh_client = endpoint(false, &cs);
		mtls_endpoint_verify_cache_stats(server, &hits0, &misses);
		pair_open(&p, server, fresh_client);
		mtls_endpoint_verify_cache_stats(server, &hits1, &misses);
		assert_int_equal(hits1, hits0 + 1);
		assert_int_equal(p.srv_rc, -1);
		assert_int_equal(mtls_error_reason(p.sc), MTLS_REASON_REVOKED);
		pair_close(&p);

		assert_int_equal(mtls_conn_recheck(live.sc, server), -1);
		assert_int_equal(mtls_error_reason(live.sc), MTLS_REASON_REVOKED);
		pair_close(&live);
		mtls_free(fresh_client);
		mtls_free(server);
		mtls_free(client);
	}
}

/* Soft-fail: no answer lets the client in, said by mtls_conn_ocsp() and the warning; the
 * answer that arrives later (revoked) refuses the live connection on its re-check. */
static void test_soft_fail_recheck(void **state)
{
	(void)state;
	for (size_t v = 0; v < 2; v++) {
		struct side ss = {.tls = versions[v], .mode = MTLS_OCSP_SOFT_FAIL},
			    cs = {.tls = versions[v]};
		struct mtls *server = endpoint(true, &ss), *client = endpoint(false, &cs);
		struct mtls_ocsp_job *job;
		struct pair p;
		size_t n;
		unsigned char *der;
		int recheck = 0;

		pair_ok(&p, server, client);
		assert_int_equal(mtls_conn_ocsp(p.sc), MTLS_OCSP_RESULT_SOFT_FAIL);
		assert_non_null(mtls_conn_warning(p.sc));
		assert_non_null(strstr(mtls_conn_warning(p.sc), "soft-fail"));
		job = mtls_ocsp_job_next(server, NULL);
		assert_non_null(job);
		der = response(P.client, V_OCSP_CERTSTATUS_REVOKED, &n);
		assert_int_equal(mtls_ocsp_job_done(server, job, der, n, &recheck),
				 MTLS_OCSP_STATUS_REVOKED);
		free(der);
		assert_int_equal(recheck, 1);
		assert_int_equal(mtls_conn_recheck(p.sc, server), -1);
		assert_int_equal(mtls_error_reason(p.sc), MTLS_REASON_REVOKED);
		pair_close(&p);
		mtls_free(server);
		mtls_free(client);
	}
}

/* A client with a staple seen: its resumption and re-check use the answer remembered; and
 * without a staple, hard-fail refuses the server. */
static void test_client_side(void **state)
{
	(void)state;
	for (size_t v = 0; v < 2; v++) {
		struct side ss = {.tls = versions[v], .staple = true},
			    cs = {.tls = versions[v], .mode = MTLS_OCSP_HARD_FAIL, .tickets = true};
		struct mtls *server = endpoint(true, &ss), *client = endpoint(false, &cs);
		struct pair p, live;

		/* a staple past the middle of its validity: the server refreshes it, the client
		 * does not fetch it itself */
		{
			size_t n;
			unsigned char *der =
				test_ocsp_response(&(struct test_ocsp){.cert = P.server,
								       .issuer = P.ca,
								       .issuer_key = P.ca_key,
								       .this_off = -3000,
								       .next_off = 600},
						   &n);

			assert_int_equal(mtls_endpoint_set_ocsp_staple(server, der, n), 0);
			free(der);
		}
		pair_ok(&live, server, client);
		round_trip(&live);
		assert_int_equal(mtls_conn_recheck(live.cc, client), 0);
		assert_null(mtls_ocsp_job_next(client, NULL));
		pair_ok(&p, server, client);
		assert_int_equal(mtls_conn_resumed(p.cc), 1);
		assert_int_equal(mtls_conn_ocsp(p.cc), MTLS_OCSP_RESULT_GOOD);
		pair_close(&p);

		/* the client learns of a revocation (here: put in its store) */
		remember(client, P.server, V_OCSP_CERTSTATUS_REVOKED);
		assert_int_equal(mtls_conn_recheck(live.cc, client), -1);
		assert_int_equal(mtls_error_reason(live.cc), MTLS_REASON_REVOKED);
		pair_close(&live);
		mtls_free(server);
		mtls_free(client);
	}
}

/* Stapling needs the issuer and a responder: refused at configure time, said why. */
static void test_staple_config(void **state)
{
	struct mtls_config *cfg = mtls_config_new();
	struct mtls *server = mtls_server_new(), *client = mtls_client_new();
	char *leaf_only = test_certs_pem(&P.server, 1);
	X509 *other_root;
	EVP_PKEY *other_key;
	char *other_pem;

	(void)state;
	/* the issuer is only in neither the chain nor the bundle: a foreign root as CA */
	other_root = test_cert_make(&(struct test_cert){.subject = "CN=x", .ca = true}, NULL, NULL,
				    &other_key);
	other_pem = test_certs_pem(&other_root, 1);
	assert_int_equal(
		mtls_config_set_cert_mem(cfg, (const uint8_t *)leaf_only, strlen(leaf_only)), 0);
	assert_int_equal(mtls_config_set_key_mem(cfg, (const uint8_t *)P.server_key_pem,
						 strlen(P.server_key_pem)),
			 0);
	assert_int_equal(mtls_config_set_ca_mem(cfg, (const uint8_t *)other_pem, strlen(other_pem)),
			 0);
	assert_int_equal(mtls_config_set_allow_any_identity(cfg, 1), 0);
	assert_int_equal(mtls_config_set_ocsp_staple(cfg, 1), 0);
	assert_int_equal(mtls_config_set_ocsp_url(cfg, URL), 0);
	assert_int_equal(mtls_configure(server, cfg), -1);
	assert_int_equal(mtls_error_reason(server), MTLS_REASON_CONFIG);
	assert_non_null(strstr(mtls_error(server), "issuer"));
	/* with the issuer in the chain but no responder */
	mtls_config_free(cfg);
	cfg = mtls_config_new();
	assert_int_equal(
		mtls_config_set_cert_mem(cfg, (const uint8_t *)P.server_pem, strlen(P.server_pem)),
		0);
	assert_int_equal(mtls_config_set_key_mem(cfg, (const uint8_t *)P.server_key_pem,
						 strlen(P.server_key_pem)),
			 0);
	assert_int_equal(
		mtls_config_set_ca_mem(cfg, (const uint8_t *)P.root_pem, strlen(P.root_pem)), 0);
	assert_int_equal(mtls_config_set_allow_any_identity(cfg, 1), 0);
	assert_int_equal(mtls_config_set_ocsp_staple(cfg, 1), 0);
	assert_int_equal(mtls_configure(server, cfg), -1);
	assert_non_null(strstr(mtls_error(server), "responder"));
	/* a client does not staple */
	assert_int_equal(mtls_config_set_ocsp_url(cfg, URL), 0);
	assert_int_equal(mtls_configure(client, cfg), -1);
	assert_int_equal(mtls_error_reason(client), MTLS_REASON_CONFIG);
	/* bad settings */
	assert_int_equal(mtls_config_set_ocsp_url(cfg, "ftp://x/"), -1);
	assert_int_equal(mtls_config_set_ocsp_url(cfg, "http://a b/"), -1);
	assert_int_equal(mtls_config_set_ocsp_mode(cfg, (enum mtls_ocsp_mode)7), -1);
	/* a staple for another certificate is refused */
	assert_int_equal(mtls_configure(server, cfg), 0);
	{
		size_t n;
		unsigned char *der = response(P.client, V_OCSP_CERTSTATUS_GOOD, &n);

		assert_int_equal(mtls_endpoint_set_ocsp_staple(server, der, n), -1);
		assert_non_null(strstr(mtls_error(server), "another certificate"));
		free(der);
	}
	mtls_config_free(cfg);
	mtls_free(server);
	mtls_free(client);
	free(leaf_only);
	free(other_pem);
	X509_free(other_root);
	EVP_PKEY_free(other_key);
}

/* A reload to another certificate: the staple of the old one is not served, and a job for
 * the new one is due. */
static void test_staple_after_reload(void **state)
{
	struct side ss = {.tls = MTLS_TLS1_3, .staple = true},
		    cs = {.tls = MTLS_TLS1_3, .mode = MTLS_OCSP_HARD_FAIL};
	struct mtls *server = endpoint(true, &ss), *client = endpoint(false, &cs), *reloaded;
	struct mtls_ocsp_job *job;
	struct pair p;
	time_t tu, nu;

	(void)state;
	assert_int_equal(mtls_endpoint_ocsp_staple_times(client, &tu, &nu), -1);
	staple(server, P.server, V_OCSP_CERTSTATUS_GOOD);
	assert_null(mtls_ocsp_job_next(server, NULL));
	/* the same endpoint, now with the must-staple certificate */
	ss.must = true;
	reloaded = endpoint(true, &ss);
	mtls_free(reloaded);
	{
		struct mtls_config *cfg = mtls_config_new();

		assert_int_equal(mtls_config_set_cert_mem(cfg, (const uint8_t *)P.must_pem,
							  strlen(P.must_pem)),
				 0);
		assert_int_equal(mtls_config_set_key_mem(cfg, (const uint8_t *)P.must_key_pem,
							 strlen(P.must_key_pem)),
				 0);
		assert_int_equal(mtls_config_set_ca_mem(cfg, (const uint8_t *)P.root_pem,
							strlen(P.root_pem)),
				 0);
		assert_int_equal(mtls_config_set_allow_any_identity(cfg, 1), 0);
		assert_int_equal(mtls_config_set_ocsp_url(cfg, URL), 0);
		assert_int_equal(mtls_configure(server, cfg), 0);
		mtls_config_free(cfg);
	}
	assert_int_equal(mtls_endpoint_ocsp_staple_times(server, &tu, &nu), 0);
	job = mtls_ocsp_job_next(server, NULL);
	assert_non_null(job);
	assert_true(mtls_ocsp_job_is_staple(job));
	assert_non_null(strstr(mtls_ocsp_job_subject(job), "CN=must"));
	mtls_ocsp_job_free(job);
	pair_open(&p, server, client);
	assert_int_equal(p.cli_rc, -1);
	assert_int_equal(mtls_error_reason(p.cc), MTLS_REASON_OCSP_MISSING);
	pair_close(&p);
	mtls_free(server);
	mtls_free(client);
}

/* A staple given with the config (a renewal: the new certificate's answer fetched before the
 * reload) is served from the first handshake on the new certificate, with no job due; a
 * handshake still on the old state keeps the old certificate's staple; an answer for another
 * certificate is dropped, not an error. */
static struct mtls_config *must_config(X509 *answer_for)
{
	struct mtls_config *cfg = mtls_config_new();
	size_t n;
	unsigned char *der = response(answer_for, V_OCSP_CERTSTATUS_GOOD, &n);

	assert_int_equal(
		mtls_config_set_cert_mem(cfg, (const uint8_t *)P.must_pem, strlen(P.must_pem)), 0);
	assert_int_equal(mtls_config_set_key_mem(cfg, (const uint8_t *)P.must_key_pem,
						 strlen(P.must_key_pem)),
			 0);
	assert_int_equal(
		mtls_config_set_ca_mem(cfg, (const uint8_t *)P.root_pem, strlen(P.root_pem)), 0);
	assert_int_equal(mtls_config_set_allow_any_identity(cfg, 1), 0);
	assert_int_equal(mtls_config_set_ocsp_url(cfg, URL), 0);
	assert_int_equal(mtls_config_set_protocols(cfg, MTLS_TLS1_3, MTLS_TLS1_3), 0);
	assert_int_equal(mtls_config_set_ocsp_staple_answer(cfg, der, n), 0);
	free(der);
	return cfg;
}

static void test_staple_with_config(void **state)
{
	struct side ss = {.tls = MTLS_TLS1_3, .staple = true},
		    cs = {.tls = MTLS_TLS1_3, .mode = MTLS_OCSP_HARD_FAIL};
	struct mtls *server = endpoint(true, &ss), *client = endpoint(false, &cs);
	struct mtls_config *cfg;
	struct pair p, old;

	(void)state;
	staple(server, P.server, V_OCSP_CERTSTATUS_GOOD);
	/* a connection accepted on the old certificate, its handshake after the reload */
	test_socketpair(old.fds);
	old.sc = mtls_accept_fd(server, old.fds[0]);
	assert_non_null(old.sc);
	cfg = must_config(P.must);
	assert_int_equal(mtls_configure(server, cfg), 0);
	mtls_config_free(cfg);
	assert_null(mtls_ocsp_job_next(server, NULL)); /* the staple is there: nothing due */
	pair_ok(&p, server, client);
	pair_close(&p);
	old.cc = mtls_connect_fd(client, old.fds[1], "server.test");
	assert_non_null(old.cc);
	test_handshake_pair(old.sc, old.cc, &old.srv_rc, &old.cli_rc);
	if (old.srv_rc != 0 || old.cli_rc != 0)
		fail_msg("a handshake on the old certificate after the reload: %s",
			 mtls_error(old.cc));
	pair_close(&old);
	/* an answer about another certificate: configured all the same, the staple asked for */
	cfg = must_config(P.server);
	assert_int_equal(mtls_configure(server, cfg), 0);
	mtls_config_free(cfg);
	mtls_free(server);
	server = endpoint(true, &ss);
	cfg = must_config(P.server);
	assert_int_equal(mtls_configure(server, cfg), 0);
	mtls_config_free(cfg);
	pair_open(&p, server, client);
	assert_int_equal(p.cli_rc, -1);
	assert_int_equal(mtls_error_reason(p.cc), MTLS_REASON_OCSP_MISSING);
	pair_close(&p);
	mtls_free(server);
	mtls_free(client);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_staple_served),
		cmocka_unit_test(test_staple_revoked),
		cmocka_unit_test(test_must_staple),
		cmocka_unit_test(test_client_paths),
		cmocka_unit_test(test_soft_fail_recheck),
		cmocka_unit_test(test_client_side),
		cmocka_unit_test(test_staple_config),
		cmocka_unit_test(test_staple_after_reload),
		cmocka_unit_test(test_staple_with_config),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
