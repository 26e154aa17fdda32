/*
 * libFuzzer target: what the CA service sends the client (cli/caclient.c), on arbitrary
 * bytes.
 *
 * The first byte chooses what the rest is: 0 the issued JSON answer of /v1/enroll and
 * /v1/renew (caclient_issued_parse), 1 a root bundle searched for a pin
 * (caclient_pick_root), 2 a CA URL (caclient_base_url, which checks the token's URL and
 * --ca-url), 3 a root bundle read whole (caclient_certs: the daemons' /roots.pem refresh).
 * Everything comes from a server not yet trusted, or from a token.
 *
 * Invariants: a refusal has a one-line message; a parsed answer has a non-empty hex serial
 * and 1 to CACLIENT_MAX_CERTS certificates in its chain; a bundle never yields more than
 * CACLIENT_MAX_CERTS certificates, and the one picked has the pinned SHA-256; a bundle read
 * whole has no more certificates than BEGIN CERTIFICATE lines, at most CACLIENT_MAX_CERTS; an
 * accepted URL is "https://" and a host with at most a port, no '/', no control byte.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "caclient.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond) ((cond) ? (void)0 : fail(#cond, __LINE__))

__attribute__((noreturn)) static void fail(const char *what, int line)
{
	fprintf(stderr, "fuzz_caclient.c:%d: invariant failed: %s\n", line, what);
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[1024] = "", *text;

	if (size < 1 || size > CACLIENT_MAX_BODY)
		return 0;
	text = malloc(size);
	if (text == NULL)
		return 0;
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';
	switch (data[0] % 4) {
	case 0: {
		struct caclient_issued iss;

		if (caclient_issued_parse(text, size - 1, &iss, err, sizeof(err)) == 0) {
			check(iss.serial[0] != '\0');
			check(strspn(iss.serial, "0123456789abcdefABCDEF") == strlen(iss.serial));
			check(sk_X509_num(iss.chain) >= 1);
			check(sk_X509_num(iss.chain) <= CACLIENT_MAX_CERTS);
			check(iss.names != NULL && iss.chain_pem != NULL);
			caclient_issued_free(&iss);
		} else {
			check(err[0] != '\0' && strchr(err, '\n') == NULL);
		}
		break;
	}
	case 1: {
		/* the all-zero pin: no certificate has it, so nothing may be picked */
		unsigned char pin[32] = {0}, md[32];
		unsigned int mdlen = 0;
		int n = -1;
		X509 *x = caclient_pick_root(text, size - 1, pin, &n);

		check(n >= 0 && n <= CACLIENT_MAX_CERTS);
		if (x != NULL) {
			check(X509_digest(x, EVP_sha256(), md, &mdlen) == 1);
			check(memcmp(md, pin, 32) == 0);
			X509_free(x);
		}
		break;
	}
	case 3: {
		STACK_OF(X509) *sk = caclient_certs(text, size - 1, err, sizeof(err));

		if (sk != NULL) {
			static const char begin[] = "-----BEGIN CERTIFICATE-----";
			const char *p = text, *end = text + size - 1;
			int blocks = 0;

			while ((p = memmem(p, (size_t)(end - p), begin, sizeof(begin) - 1)) !=
			       NULL) {
				blocks++;
				p += sizeof(begin) - 1;
			}
			check(sk_X509_num(sk) <= blocks);
			check(sk_X509_num(sk) <= CACLIENT_MAX_CERTS);
			sk_X509_pop_free(sk, X509_free);
		} else {
			check(err[0] != '\0' && strchr(err, '\n') == NULL);
		}
		break;
	}
	default: {
		char out[600];

		if (caclient_base_url(text, out, sizeof(out), err, sizeof(err)) == 0) {
			check(strncmp(out, "https://", 8) == 0);
			check(strchr(out + 8, '/') == NULL);
			check(strchr(out + 8, '@') == NULL && strchr(out + 8, '?') == NULL);
			for (const char *p = out; *p != '\0'; p++)
				check((unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f);
		} else {
			check(err[0] != '\0' && strchr(err, '\n') == NULL);
		}
		break;
	}
	}
	free(text);
	return 0;
}
