/*
 * crlfetch_verify(): what a CRL fetched from --crl-url must be before it replaces the one in
 * use (signed by a CA the daemon trusts, a crlNumber not going back, sane times), DER or PEM.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "crlfetch.h"
#include "testutil.h"

struct pki {
	X509 *root, *other;
	EVP_PKEY *root_key, *other_key;
	STACK_OF(X509) * cas;
};

static int setup(void **state)
{
	struct pki *p = calloc(1, sizeof(*p));
	struct test_cert ca = {.subject = "CN=crl root", .ca = true};
	struct test_cert other = {.subject = "CN=other root", .ca = true};

	p->root = test_cert_make(&ca, NULL, NULL, &p->root_key);
	p->other = test_cert_make(&other, NULL, NULL, &p->other_key);
	p->cas = sk_X509_new_null();
	X509_up_ref(p->root);
	sk_X509_push(p->cas, p->root);
	*state = p;
	return 0;
}

static int teardown(void **state)
{
	struct pki *p = *state;

	sk_X509_pop_free(p->cas, X509_free);
	X509_free(p->root);
	X509_free(p->other);
	EVP_PKEY_free(p->root_key);
	EVP_PKEY_free(p->other_key);
	free(p);
	return 0;
}

static X509_CRL *pem_crl(const char *pem)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	X509_CRL *c = PEM_read_bio_X509_CRL(b, NULL, NULL, NULL);

	BIO_free(b);
	assert_non_null(c);
	return c;
}

/* verify pem (as PEM, and again as DER) against cas and current: accepted, or refused with
 * a message containing why. */
static void check(const char *pem, STACK_OF(X509) * cas, const X509_CRL *current, const char *why)
{
	char err[300] = "";
	X509_CRL *c = crlfetch_verify((const uint8_t *)pem, strlen(pem), cas, current, time(NULL),
				      err, sizeof(err));
	X509_CRL *parsed = pem_crl(pem);
	unsigned char *der = NULL;
	int n = i2d_X509_CRL(parsed, &der);
	X509_CRL *d;

	assert_true(n > 0);
	if (why == NULL) {
		assert_non_null(c);
		assert_string_equal(err, "");
	} else {
		assert_null(c);
		if (strstr(err, why) == NULL)
			fail_msg("refused with '%s', expected '%s'", err, why);
	}
	X509_CRL_free(c);
	err[0] = '\0';
	d = crlfetch_verify(der, (size_t)n, cas, current, time(NULL), err, sizeof(err));
	assert_true((d != NULL) == (why == NULL));
	X509_CRL_free(d);
	OPENSSL_free(der);
	X509_CRL_free(parsed);
}

static void test_signature(void **state)
{
	struct pki *p = *state;
	char *good = test_crl_pem(p->root, p->root_key, NULL, 0, 5, NULL);
	char *forged = test_crl_pem(p->root, p->other_key, NULL, 0, 5, NULL);
	char *foreign = test_crl_pem(p->other, p->other_key, NULL, 0, 5, NULL);

	check(good, p->cas, NULL, NULL);
	check(forged, p->cas, NULL, "not signed by a CA");  /* the trusted name, another key */
	check(foreign, p->cas, NULL, "not signed by a CA"); /* another CA's own CRL */
	free(good);
	free(forged);
	free(foreign);
}

static void test_number(void **state)
{
	struct pki *p = *state;
	char *five = test_crl_pem(p->root, p->root_key, NULL, 0, 5, NULL);
	char *four = test_crl_pem(p->root, p->root_key, NULL, 0, 4, NULL);
	char *six = test_crl_pem(p->root, p->root_key, NULL, 0, 6, NULL);
	char *none = test_crl_pem(p->root, p->root_key, NULL, 0, -1, NULL);
	X509_CRL *current = pem_crl(five);

	check(six, p->cas, current, NULL);
	check(five, p->cas, current, NULL); /* the same one again: not older */
	check(four, p->cas, current, "crlNumber lower");
	check(none, p->cas, current, "crlNumber missing");
	check(none, p->cas, NULL, NULL); /* nothing to compare with */
	X509_CRL_free(current);
	free(five);
	free(four);
	free(six);
	free(none);
}

static void test_times(void **state)
{
	STACK_OF(X509) *cas = sk_X509_new_null();
	size_t len;
	char *now = test_make_crl(-60, 3600, NULL, &len);
	char *future = test_make_crl(3600, 7200, NULL, &len);
	char *skewed = test_make_crl(60, 7200, NULL, &len); /* within CRLFETCH_SKEW */

	(void)state;
	sk_X509_push(cas, test_read_cert("int.pem"));
	check(now, cas, NULL, NULL);
	check(future, cas, NULL, "in the future");
	check(skewed, cas, NULL, NULL);
	sk_X509_pop_free(cas, X509_free);
	free(now);
	free(future);
	free(skewed);
}

static void test_no_next_update(void **state)
{
	struct pki *p = *state;
	X509_CRL *c = X509_CRL_new();
	ASN1_TIME *t = ASN1_TIME_adj(NULL, time(NULL), 0, -60);
	BIO *b = BIO_new(BIO_s_mem());
	char *pem;
	long n;

	X509_CRL_set_version(c, X509_CRL_VERSION_2);
	X509_CRL_set_issuer_name(c, X509_get_subject_name(p->root));
	X509_CRL_set1_lastUpdate(c, t);
	assert_true(X509_CRL_sign(c, p->root_key, EVP_sha256()) > 0);
	PEM_write_bio_X509_CRL(b, c);
	n = BIO_get_mem_data(b, &pem);
	pem = strndup(pem, (size_t)n);
	check(pem, p->cas, NULL, "no nextUpdate");
	free(pem);
	BIO_free(b);
	ASN1_TIME_free(t);
	X509_CRL_free(c);
}

static void test_not_a_crl(void **state)
{
	struct pki *p = *state;
	char err[300];
	static const uint8_t junk[] = {0x30, 0x82, 0x7f, 0xff, 0x01, 0x02};
	char *good = test_crl_pem(p->root, p->root_key, NULL, 0, 5, NULL);
	X509_CRL *c = pem_crl(good);
	unsigned char *der = NULL;
	int n = i2d_X509_CRL(c, &der);
	uint8_t *longer = malloc((size_t)n + 1);

	assert_null(
		crlfetch_verify(junk, sizeof(junk), p->cas, NULL, time(NULL), err, sizeof(err)));
	assert_non_null(strstr(err, "not a CRL"));
	assert_null(crlfetch_verify((const uint8_t *)"", 0, p->cas, NULL, time(NULL), err,
				    sizeof(err)));
	assert_null(crlfetch_verify((const uint8_t *)"-----BEGIN X509 CRL-----\n", 25, p->cas, NULL,
				    time(NULL), err, sizeof(err)));
	/* a good DER CRL with a byte after it: not one CRL */
	memcpy(longer, der, (size_t)n);
	longer[n] = 0;
	assert_null(
		crlfetch_verify(longer, (size_t)n + 1, p->cas, NULL, time(NULL), err, sizeof(err)));
	free(longer);
	OPENSSL_free(der);
	X509_CRL_free(c);
	free(good);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_signature), cmocka_unit_test(test_number),
		cmocka_unit_test(test_times),	  cmocka_unit_test(test_no_next_update),
		cmocka_unit_test(test_not_a_crl),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
