/*
 * An endpoint's OCSP store and the decision on it, without handshakes: a server endpoint
 * verifies client chains (mtls_verify_chain_pem(), the handshake's decision) in each mode,
 * and the jobs it gives out are answered as a fetcher would (mtls_ocsp_job_done() with
 * answers made here, mtls_ocsp_job_failed()). What is checked: a certificate without an
 * answer asks for one (notify, a job with a request for it to its responder), soft-fail
 * accepts it meanwhile with a warning, hard-fail refuses it (ocsp_unavailable, naming the
 * responder and its failure), an answer decides (good, revoked, unknown by mode), answers
 * count until their nextUpdate and are asked for again at the middle, failures back off,
 * the table stays within its size, and a job is finished on its own endpoint only.
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

#define AIA_URL "http://ocsp.test:8080/ocsp"

struct pki {
	X509 *root, *ca, *server;
	EVP_PKEY *root_key, *ca_key, *server_key;
	char *root_pem, *server_pem, *server_key_pem;
};

static struct pki P;
static int notified;

static void on_notify(void *arg)
{
	(void)arg;
	notified++;
}

static int setup(void **state)
{
	X509 *chain[2];

	(void)state;
	P.root = test_cert_make(&(struct test_cert){.subject = "CN=root", .ca = true}, NULL, NULL,
				&P.root_key);
	P.ca = test_cert_make(&(struct test_cert){.subject = "CN=issuing", .ca = true}, P.root,
			      P.root_key, &P.ca_key);
	P.server = test_cert_make(&(struct test_cert){.subject = "CN=server",
						      .eku = "serverAuth",
						      .san = "DNS:server.test"},
				  P.ca, P.ca_key, &P.server_key);
	P.root_pem = test_certs_pem(&P.root, 1);
	chain[0] = P.server;
	chain[1] = P.ca;
	P.server_pem = test_certs_pem(chain, 2);
	P.server_key_pem = test_key_pem(P.server_key);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	X509_free(P.root);
	X509_free(P.ca);
	X509_free(P.server);
	EVP_PKEY_free(P.root_key);
	EVP_PKEY_free(P.ca_key);
	EVP_PKEY_free(P.server_key);
	free(P.root_pem);
	free(P.server_pem);
	free(P.server_key_pem);
	return 0;
}

/* A client certificate of the issuing CA (its responder in authorityInfoAccess unless
 * aia is ""), with its chain as PEM. */
struct client {
	X509 *cert;
	EVP_PKEY *key;
	char *pem;
};

static void client_make(struct client *c, const char *cn, const char *aia)
{
	char subject[64];
	X509 *chain[2];

	snprintf(subject, sizeof(subject), "CN=%s", cn);
	c->cert =
		test_cert_make(&(struct test_cert){.subject = subject,
						   .aia = aia != NULL ? aia : "OCSP;URI:" AIA_URL},
			       P.ca, P.ca_key, &c->key);
	chain[0] = c->cert;
	chain[1] = P.ca;
	c->pem = test_certs_pem(chain, 2);
}

static void client_free(struct client *c)
{
	X509_free(c->cert);
	EVP_PKEY_free(c->key);
	free(c->pem);
}

struct opts {
	enum mtls_ocsp_mode mode;
	const char *url;
	size_t cache; /* 0: the default */
	time_t verify_time;
};

static void configure(struct mtls *server, const struct opts *o)
{
	struct mtls_config *cfg = mtls_config_new();

	assert_int_equal(
		mtls_config_set_cert_mem(cfg, (const uint8_t *)P.server_pem, strlen(P.server_pem)),
		0);
	assert_int_equal(mtls_config_set_key_mem(cfg, (const uint8_t *)P.server_key_pem,
						 strlen(P.server_key_pem)),
			 0);
	assert_int_equal(
		mtls_config_set_ca_mem(cfg, (const uint8_t *)P.root_pem, strlen(P.root_pem)), 0);
	assert_int_equal(mtls_config_set_allow_any_identity(cfg, 1), 0);
	assert_int_equal(mtls_config_set_ocsp_mode(cfg, o->mode), 0);
	if (o->url != NULL)
		assert_int_equal(mtls_config_set_ocsp_url(cfg, o->url), 0);
	if (o->cache != 0)
		assert_int_equal(mtls_config_set_ocsp_cache(cfg, o->cache), 0);
	if (o->verify_time != 0)
		assert_int_equal(mtls_config_set_verify_time(cfg, o->verify_time), 0);
	if (mtls_configure(server, cfg) != 0)
		fail_msg("configure: %s", mtls_error(server));
	mtls_config_free(cfg);
}

static struct mtls *server_new(const struct opts *o)
{
	struct mtls *server = mtls_server_new();

	assert_non_null(server);
	mtls_endpoint_set_ocsp_notify(server, on_notify, NULL);
	configure(server, o);
	return server;
}

static int verify(struct mtls *server, const struct client *c)
{
	return mtls_verify_chain_pem(server, (const uint8_t *)c->pem, strlen(c->pem), NULL, NULL);
}

static void expect_refused(struct mtls *server, const struct client *c, enum mtls_reason reason,
			   const char *words)
{
	if (verify(server, c) == 0)
		fail_msg("accepted, expected %s", mtls_reason_name(reason));
	if (mtls_error_reason(server) != reason || strstr(mtls_error(server), words) == NULL)
		fail_msg("refused %s: %s; expected %s with \"%s\"",
			 mtls_reason_name(mtls_error_reason(server)), mtls_error(server),
			 mtls_reason_name(reason), words);
}

/* Answer job (about c) with spec's answer; the status the endpoint reports. */
static int answer(struct mtls *server, struct mtls_ocsp_job *job, const struct client *c,
		  struct test_ocsp spec, int *recheck)
{
	size_t n;
	unsigned char *der;
	int rc;

	spec.cert = c->cert;
	spec.issuer = P.ca;
	spec.issuer_key = P.ca_key;
	der = test_ocsp_response(&spec, &n);
	rc = mtls_ocsp_job_done(server, job, der, n, recheck);
	free(der);
	return rc;
}

/* The job is a request about c, to url. */
static void expect_job(struct mtls_ocsp_job *job, const struct client *c, const char *url)
{
	size_t len;
	const uint8_t *req = mtls_ocsp_job_request(job, &len);
	const unsigned char *p = req;
	OCSP_REQUEST *parsed = d2i_OCSP_REQUEST(NULL, &p, (long)len);
	OCSP_CERTID *want = OCSP_cert_to_id(NULL, c->cert, P.ca);

	assert_non_null(job);
	assert_false(mtls_ocsp_job_is_staple(job));
	assert_string_equal(mtls_ocsp_job_url(job), url);
	assert_non_null(strstr(mtls_ocsp_job_subject(job), "CN="));
	assert_non_null(parsed);
	assert_int_equal(OCSP_request_onereq_count(parsed), 1);
	assert_int_equal(
		OCSP_id_cmp(want, OCSP_onereq_get0_id(OCSP_request_onereq_get0(parsed, 0))), 0);
	OCSP_CERTID_free(want);
	OCSP_REQUEST_free(parsed);
}

static void test_soft_fail(void **state)
{
	struct opts o = {.mode = MTLS_OCSP_SOFT_FAIL};
	struct mtls *server = server_new(&o);
	struct client good, bad, unknown;
	struct mtls_ocsp_job *job;
	time_t due;
	int recheck = -1;

	(void)state;
	client_make(&good, "good", NULL);
	client_make(&bad, "bad", NULL);
	client_make(&unknown, "unknown", NULL);

	/* no answer yet: accepted, with a warning, and asked for */
	notified = 0;
	assert_int_equal(verify(server, &good), 0);
	assert_non_null(mtls_conn_warning(server));
	assert_non_null(strstr(mtls_conn_warning(server), "soft-fail"));
	assert_non_null(strstr(mtls_conn_warning(server), AIA_URL));
	assert_true(notified >= 1);
	assert_int_equal(mtls_endpoint_ocsp_cache_entries(server), 1);
	job = mtls_ocsp_job_next(server, &due);
	expect_job(job, &good, AIA_URL);
	/* in flight: not given out twice */
	assert_null(mtls_ocsp_job_next(server, &due));
	assert_int_equal(answer(server, job, &good, (struct test_ocsp){0}, &recheck),
			 MTLS_OCSP_STATUS_GOOD);
	assert_int_equal(recheck, 0);
	assert_int_equal(verify(server, &good), 0);
	assert_null(mtls_conn_warning(server));
	/* a fresh answer: nothing due until the middle of its validity (a look at the table
	 * a minute later at most) */
	assert_null(mtls_ocsp_job_next(server, &due));
	assert_true(due > time(NULL) && due < time(NULL) + 1900);

	/* revoked: accepted until the answer comes, refused after, and a re-check is due */
	assert_int_equal(verify(server, &bad), 0);
	job = mtls_ocsp_job_next(server, NULL);
	expect_job(job, &bad, AIA_URL);
	assert_int_equal(answer(server, job, &bad,
				(struct test_ocsp){.status = V_OCSP_CERTSTATUS_REVOKED}, &recheck),
			 MTLS_OCSP_STATUS_REVOKED);
	assert_int_equal(recheck, 1);
	expect_refused(server, &bad, MTLS_REASON_REVOKED, AIA_URL);
	assert_non_null(strstr(mtls_error(server), "keyCompromise"));
	/* a revocation is final: nothing more to ask */
	assert_null(mtls_ocsp_job_next(server, NULL));

	/* unknown: accepted in soft-fail, with a warning */
	assert_int_equal(verify(server, &unknown), 0);
	job = mtls_ocsp_job_next(server, NULL);
	assert_int_equal(answer(server, job, &unknown,
				(struct test_ocsp){.status = V_OCSP_CERTSTATUS_UNKNOWN}, &recheck),
			 MTLS_OCSP_STATUS_UNKNOWN);
	assert_int_equal(recheck, 1);
	assert_int_equal(verify(server, &unknown), 0);
	assert_non_null(strstr(mtls_conn_warning(server), "unknown"));

	client_free(&good);
	client_free(&bad);
	client_free(&unknown);
	mtls_free(server);
}

static void test_hard_fail(void **state)
{
	struct opts o = {.mode = MTLS_OCSP_HARD_FAIL};
	struct mtls *server = server_new(&o);
	struct client good, unknown, nourl;
	struct mtls_ocsp_job *job;
	time_t due, now;

	(void)state;
	client_make(&good, "good", NULL);
	client_make(&unknown, "unknown", NULL);
	client_make(&nourl, "nourl", "");

	/* the first handshake is refused, and asks */
	expect_refused(server, &good, MTLS_REASON_OCSP_UNAVAILABLE, "being fetched");
	assert_non_null(strstr(mtls_error(server), AIA_URL));
	job = mtls_ocsp_job_next(server, NULL);
	expect_job(job, &good, AIA_URL);
	/* the responder is down: named in the refusal; tried again after a pause */
	now = time(NULL);
	mtls_ocsp_job_failed(server, job, "Connection refused");
	expect_refused(server, &good, MTLS_REASON_OCSP_UNAVAILABLE, "Connection refused");
	assert_null(mtls_ocsp_job_next(server, &due));
	assert_true(due >= now + 1 && due <= time(NULL) + 2);
	/* a failed job is due again once the pause is over; its answer lets the peer in */
	while ((job = mtls_ocsp_job_next(server, NULL)) == NULL)
		usleep(50000);
	assert_int_equal(answer(server, job, &good, (struct test_ocsp){0}, NULL),
			 MTLS_OCSP_STATUS_GOOD);
	assert_int_equal(verify(server, &good), 0);
	assert_int_equal(mtls_error_reason(server), MTLS_REASON_NONE);

	expect_refused(server, &unknown, MTLS_REASON_OCSP_UNAVAILABLE, "");
	job = mtls_ocsp_job_next(server, NULL);
	assert_int_equal(answer(server, job, &unknown,
				(struct test_ocsp){.status = V_OCSP_CERTSTATUS_UNKNOWN}, NULL),
			 MTLS_OCSP_STATUS_UNKNOWN);
	expect_refused(server, &unknown, MTLS_REASON_OCSP_UNKNOWN, "does not know it");

	/* no responder known: said, and nothing to fetch */
	expect_refused(server, &nourl, MTLS_REASON_OCSP_UNAVAILABLE, "no OCSP responder is known");
	assert_null(mtls_ocsp_job_next(server, NULL));

	client_free(&good);
	client_free(&unknown);
	client_free(&nourl);
	mtls_free(server);
}

/* Off: nothing is asked for, but a known revocation still counts. */
static void test_off(void **state)
{
	struct opts soft = {.mode = MTLS_OCSP_SOFT_FAIL}, off = {.mode = MTLS_OCSP_OFF};
	struct mtls *server = server_new(&off);
	struct client c, bad;
	struct mtls_ocsp_job *job;

	(void)state;
	client_make(&c, "c", NULL);
	client_make(&bad, "bad", NULL);
	notified = 0;
	assert_int_equal(verify(server, &c), 0);
	assert_null(mtls_conn_warning(server));
	assert_int_equal(notified, 0);
	assert_int_equal(mtls_endpoint_ocsp_cache_entries(server), 0);
	assert_null(mtls_ocsp_job_next(server, NULL));

	configure(server, &soft);
	assert_int_equal(verify(server, &bad), 0);
	job = mtls_ocsp_job_next(server, NULL);
	assert_int_equal(answer(server, job, &bad,
				(struct test_ocsp){.status = V_OCSP_CERTSTATUS_REVOKED}, NULL),
			 MTLS_OCSP_STATUS_REVOKED);
	/* the answers survive a reload, here to mode off */
	configure(server, &off);
	expect_refused(server, &bad, MTLS_REASON_REVOKED, "revoked");
	client_free(&c);
	client_free(&bad);
	mtls_free(server);
}

/* An answer counts until its nextUpdate; it is asked for again from the middle on. */
static void test_next_update(void **state)
{
	struct opts o = {.mode = MTLS_OCSP_HARD_FAIL};
	struct mtls *server = server_new(&o);
	struct client c;
	struct mtls_ocsp_job *job;

	(void)state;
	client_make(&c, "c", NULL);
	expect_refused(server, &c, MTLS_REASON_OCSP_UNAVAILABLE, "");
	job = mtls_ocsp_job_next(server, NULL);
	/* valid for another 10 minutes, past the middle already */
	assert_int_equal(answer(server, job, &c,
				(struct test_ocsp){.this_off = -3000, .next_off = 600}, NULL),
			 MTLS_OCSP_STATUS_GOOD);
	assert_int_equal(verify(server, &c), 0);
	job = mtls_ocsp_job_next(server, NULL);
	expect_job(job, &c, AIA_URL);
	mtls_ocsp_job_free(job);
	/* after nextUpdate (verified at a later time), no answer counts */
	o.verify_time = time(NULL) + 700;
	configure(server, &o);
	expect_refused(server, &c, MTLS_REASON_OCSP_UNAVAILABLE, "");
	client_free(&c);
	mtls_free(server);
}

/* The configured responder is asked instead of the certificate's own. */
static void test_url_override(void **state)
{
	struct opts o = {.mode = MTLS_OCSP_SOFT_FAIL, .url = "http://127.0.0.1:9/override"};
	struct mtls *server = server_new(&o);
	struct client c, nourl;
	struct mtls_ocsp_job *job, *job2;

	(void)state;
	client_make(&c, "c", NULL);
	client_make(&nourl, "nourl", "");
	assert_int_equal(verify(server, &c), 0);
	job = mtls_ocsp_job_next(server, NULL);
	expect_job(job, &c, "http://127.0.0.1:9/override");
	assert_int_equal(verify(server, &nourl), 0);
	/* the first is in flight still: the next is the other one */
	job2 = mtls_ocsp_job_next(server, NULL);
	expect_job(job2, &nourl, "http://127.0.0.1:9/override");
	mtls_ocsp_job_free(job);
	mtls_ocsp_job_free(job2);
	/* dropped without an outcome: asked for again */
	job = mtls_ocsp_job_next(server, NULL);
	assert_non_null(job);
	mtls_ocsp_job_free(job);
	client_free(&c);
	client_free(&nourl);
	mtls_free(server);
}

/* At most the configured number of certificates; the least recently seen goes. */
static void test_bounded(void **state)
{
	struct opts o = {.mode = MTLS_OCSP_SOFT_FAIL, .cache = 3};
	struct mtls *server = server_new(&o);
	struct client c[6];

	(void)state;
	for (int i = 0; i < 6; i++) {
		char cn[16];

		snprintf(cn, sizeof(cn), "c%d", i);
		client_make(&c[i], cn, NULL);
		assert_int_equal(verify(server, &c[i]), 0);
		assert_true(mtls_endpoint_ocsp_cache_entries(server) <= 3);
	}
	assert_int_equal(mtls_endpoint_ocsp_cache_entries(server), 3);
	for (int i = 0; i < 6; i++)
		client_free(&c[i]);
	mtls_free(server);
}

/* Answers that do not verify are refused and count as a failed fetch. */
static void test_bad_answers(void **state)
{
	struct opts o = {.mode = MTLS_OCSP_HARD_FAIL};
	struct mtls *server = server_new(&o), *other = server_new(&o);
	struct client c, d;
	struct mtls_ocsp_job *job;
	unsigned char junk[] = {0x30, 0x03, 0x0a, 0x01, 0x00};

	(void)state;
	client_make(&c, "c", NULL);
	client_make(&d, "d", NULL);
	expect_refused(server, &c, MTLS_REASON_OCSP_UNAVAILABLE, "");
	job = mtls_ocsp_job_next(server, NULL);
	/* an answer about another certificate */
	assert_int_equal(answer(server, job, &d, (struct test_ocsp){0}, NULL), -1);
	assert_non_null(strstr(mtls_error(server), "another certificate"));
	expect_refused(server, &c, MTLS_REASON_OCSP_UNAVAILABLE, "another certificate");
	while ((job = mtls_ocsp_job_next(server, NULL)) == NULL)
		usleep(50000);
	assert_int_equal(mtls_ocsp_job_done(server, job, junk, sizeof(junk), NULL), -1);
	/* finished on another endpoint: refused */
	while ((job = mtls_ocsp_job_next(server, NULL)) == NULL)
		usleep(50000);
	assert_int_equal(answer(other, job, &c, (struct test_ocsp){0}, NULL), -1);
	assert_int_equal(mtls_error_reason(other), MTLS_REASON_USAGE);
	client_free(&c);
	client_free(&d);
	mtls_free(server);
	mtls_free(other);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_soft_fail),    cmocka_unit_test(test_hard_fail),
		cmocka_unit_test(test_off),	     cmocka_unit_test(test_next_update),
		cmocka_unit_test(test_url_override), cmocka_unit_test(test_bounded),
		cmocka_unit_test(test_bad_answers),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
