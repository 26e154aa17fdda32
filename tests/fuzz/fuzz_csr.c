/*
 * libFuzzer target: reading a certificate signing request (ca/issue.c) as `mtls ca issue
 * --csr` does, from arbitrary bytes (PEM or DER).
 *
 * A CSR comes from whoever asks for a certificate: every byte of it is untrusted. The
 * signature is checked first in real use; here the names are also read without that check,
 * so that mutated inputs reach the name extraction.
 *
 * Invariants: a refusal has a message; an accepted CSR yields a key and only names that
 * pass the CA's own syntax checks (IP addresses of 4 or 16 bytes).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509v3.h>

#include "issue.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond) ((cond) ? (void)0 : fail(#cond, __LINE__))

__attribute__((noreturn)) static void fail(const char *what, int line)
{
	fprintf(stderr, "fuzz_csr.c:%d: invariant failed: %s\n", line, what);
	abort();
}

static void check_names(const struct issue_names *n)
{
	int count = sk_GENERAL_NAME_num(n->names);

	check(count == n->ndns + n->nip + n->nuri);
	for (int i = 0; i < count; i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(n->names, i);

		check(g->type == GEN_DNS || g->type == GEN_IPADD || g->type == GEN_URI);
		if (g->type == GEN_IPADD)
			check(ASN1_STRING_length(g->d.iPAddress) == 4 ||
			      ASN1_STRING_length(g->d.iPAddress) == 16);
		else
			check(ASN1_STRING_length(g->d.ia5) > 0);
	}
	check(strlen(n->text) < sizeof(n->text));
}

static void parse(const uint8_t *data, size_t size, bool check_signature)
{
	struct issue_names n;
	char err[512] = "", ignored[512];
	EVP_PKEY *key;

	issue_names_init(&n);
	key = issue_csr_parse(data, size, "fuzz.csr", check_signature, &n, ignored, sizeof(ignored),
			      err, sizeof(err));
	if (key == NULL) {
		check(err[0] != '\0');
	} else {
		check_names(&n);
		check(strlen(ignored) < sizeof(ignored));
	}
	EVP_PKEY_free(key);
	issue_names_free(&n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 64 * 1024)
		return 0;
	parse(data, size, false);
	parse(data, size, true);
	return 0;
}
