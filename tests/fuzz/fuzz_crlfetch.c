/*
 * libFuzzer target: a CRL fetched from --crl-url (tunnel/crlfetch.c, crlfetch_verify()),
 * as bytes from a server nobody vouches for: DER, PEM, or neither.
 *
 * The input is verified against the fuzz CA (fuzz_certs.h), once with no CRL in use and once
 * with the fuzz root CRL (crlNumber 1) in use.
 *
 * Invariants: a CRL accepted is signed by the fuzz CA's key and in its name, has a nextUpdate
 * after its thisUpdate, a thisUpdate not ahead of the clock by more than CRLFETCH_SKEW, and
 * (against the CRL in use) a crlNumber not lower than 1; a refusal has a message.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "crlfetch.h"
#include "fuzz_certs.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond) ((cond) ? (void)0 : fail(#cond, __LINE__))

__attribute__((noreturn)) static void fail(const char *what, int line)
{
	fprintf(stderr, "fuzz_crlfetch.c:%d: invariant failed: %s\n", line, what);
	abort();
}

static STACK_OF(X509) * cas;
static X509 *ca;
static X509_CRL *current;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	BIO *b = BIO_new_mem_buf(fuzz_ca_pem, -1);

	(void)argc;
	(void)argv;
	ca = PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	b = BIO_new_mem_buf(fuzz_root_crl_pem, -1);
	current = PEM_read_bio_X509_CRL(b, NULL, NULL, NULL);
	BIO_free(b);
	cas = sk_X509_new_null();
	if (ca == NULL || current == NULL || cas == NULL || sk_X509_push(cas, ca) == 0)
		abort();
	return 0;
}

static void accepted(X509_CRL *crl, const X509_CRL *cur)
{
	const ASN1_TIME *nu = X509_CRL_get0_nextUpdate(crl);
	int day, sec;

	check(X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(ca)) == 0);
	check(X509_CRL_verify(crl, X509_get0_pubkey(ca)) == 1);
	check(nu != NULL);
	check(ASN1_TIME_diff(&day, &sec, X509_CRL_get0_lastUpdate(crl), nu) == 1 &&
	      (day > 0 || (day == 0 && sec > 0)));
	check(X509_cmp_time(X509_CRL_get0_lastUpdate(crl),
			    &(time_t){FUZZ_VERIFY_TIME + CRLFETCH_SKEW + 1}) < 0);
	if (cur != NULL) {
		ASN1_INTEGER *n = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);

		check(n != NULL && ASN1_INTEGER_get(n) >= 1);
		ASN1_INTEGER_free(n);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	for (int i = 0; i < 2; i++) {
		const X509_CRL *cur = i == 0 ? NULL : current;
		char err[300] = "";
		X509_CRL *crl =
			crlfetch_verify(data, size, cas, cur, FUZZ_VERIFY_TIME, err, sizeof(err));

		if (crl != NULL)
			accepted(crl, cur);
		else
			check(err[0] != '\0');
		X509_CRL_free(crl);
	}
	ERR_clear_error();
	return 0;
}
