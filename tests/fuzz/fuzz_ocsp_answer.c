/*
 * libFuzzer target: an OCSP answer as libmtls receives it, from a server's staple or a
 * responder nobody vouches for (lib/ocsp.c, ocsp_check_response()): the bytes are checked
 * against the fuzz OCSP CA (fuzz_ocsp_answer_certs.h, gen-ocsp-answer-seeds.sh) for serial
 * 1001 (its leaf, which the seeds are about) and for serial 1002.
 *
 * Invariants of an accepted answer: a status that exists (good, revoked, unknown), a
 * thisUpdate not more than OCSP_SKEW ahead of the clock, still valid (unless a final
 * revocation) and no longer than its nextUpdate; and, recomputed here independently, its
 * signature verifies with the CA's key, or with the key of a certificate it carries that the
 * CA's key signed and whose extendedKeyUsage has OCSPSigning. A refusal says why.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "fuzz_ocsp_answer_certs.h"
#include "internal.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond) ((cond) ? (void)0 : fail(#cond, __LINE__))

__attribute__((noreturn)) static void fail(const char *what, int line)
{
	fprintf(stderr, "fuzz_ocsp_answer.c:%d: invariant failed: %s\n", line, what);
	abort();
}

static X509 *ca;
static ASN1_INTEGER *serials[2];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	BIO *b = BIO_new_mem_buf(fuzz_ocsp_ca_pem, -1);

	(void)argc;
	(void)argv;
	ca = PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	serials[0] = ASN1_INTEGER_new();
	serials[1] = ASN1_INTEGER_new();
	if (ca == NULL || serials[0] == NULL || serials[1] == NULL ||
	    ASN1_INTEGER_set(serials[0], 0x1001) != 1 || ASN1_INTEGER_set(serials[1], 0x1002) != 1)
		abort();
	return 0;
}

/* Does the answer's signature verify with the CA's key or a delegate's, as the CA allows? */
static bool signed_as_allowed(const uint8_t *data, size_t size)
{
	const unsigned char *p = data;
	OCSP_RESPONSE *resp = d2i_OCSP_RESPONSE(NULL, &p, (long)size);
	OCSP_BASICRESP *bs = resp != NULL ? OCSP_response_get1_basic(resp) : NULL;
	const STACK_OF(X509) * certs;
	bool ok = false;

	if (bs == NULL)
		goto out;
	ok = ASN1_item_verify(ASN1_ITEM_rptr(OCSP_RESPDATA), OCSP_resp_get0_tbs_sigalg(bs),
			      OCSP_resp_get0_signature(bs), OCSP_resp_get0_respdata(bs),
			      X509_get0_pubkey(ca)) == 1;
	certs = OCSP_resp_get0_certs(bs);
	for (int i = 0; !ok && i < sk_X509_num(certs); i++) {
		X509 *c = sk_X509_value(certs, i);

		ok = X509_verify(c, X509_get0_pubkey(ca)) == 1 &&
		     (X509_get_extension_flags(c) & EXFLAG_XKUSAGE) &&
		     (X509_get_extended_key_usage(c) & XKU_OCSP_SIGN) &&
		     ASN1_item_verify(ASN1_ITEM_rptr(OCSP_RESPDATA), OCSP_resp_get0_tbs_sigalg(bs),
				      OCSP_resp_get0_signature(bs), OCSP_resp_get0_respdata(bs),
				      X509_get0_pubkey(c)) == 1;
	}
out:
	OCSP_BASICRESP_free(bs);
	OCSP_RESPONSE_free(resp);
	ERR_clear_error();
	return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	for (int i = 0; i < 2; i++) {
		struct ocsp_result r;
		char why[300] = "";

		if (ocsp_check_response(data, size, ca, serials[i], FUZZ_OCSP_NOW, &r, why,
					sizeof(why)) != 0) {
			check(why[0] != '\0');
			continue;
		}
		check(r.status == V_OCSP_CERTSTATUS_GOOD || r.status == V_OCSP_CERTSTATUS_REVOKED ||
		      r.status == V_OCSP_CERTSTATUS_UNKNOWN);
		check(r.this_update != 0 && r.this_update <= FUZZ_OCSP_NOW + OCSP_SKEW);
		check(ocsp_result_final(&r) || FUZZ_OCSP_NOW <= r.valid_until);
		check(r.next_update == 0 || r.valid_until <= r.next_update);
		check(r.status == V_OCSP_CERTSTATUS_REVOKED || r.reason == -1);
		check(ocsp_result_usable(&r, FUZZ_OCSP_NOW));
		check(signed_as_allowed(data, size));
	}
	ERR_clear_error();
	return 0;
}
