/*
 * libFuzzer target: the path of an OCSP GET (caserve/ocsp_get.c), which any client of the
 * CA service's plain-HTTP port chooses.
 *
 * Invariants: the input as a path (up to its first NUL) never decodes to more than the bound
 * and never to nothing; and the input as DER bytes (within the bound), base64-encoded and
 * percent-encoded as RFC 6960 asks, decodes back to exactly those bytes, with and without
 * the escapes undone beforehand (libmicrohttpd may or may not have done it).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "ocsp_get.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX	    4096
#define check(cond) ((cond) ? (void)0 : fail(#cond, __LINE__))

__attribute__((noreturn)) static void fail(const char *what, int line)
{
	fprintf(stderr, "fuzz_ocsp_get: invariant broken at line %d: %s\n", line, what);
	abort();
}

static void round_trip(const uint8_t *data, size_t size, int escape)
{
	unsigned char b64[4 * (MAX / 3 + 1) + 1];
	char esc[3 * sizeof(b64)];
	size_t j = 0, len = 0;
	unsigned char *out;
	int n = EVP_EncodeBlock(b64, data, (int)size);

	for (int i = 0; i < n; i++) {
		if (escape && (b64[i] == '+' || b64[i] == '/' || b64[i] == '='))
			j += (size_t)snprintf(esc + j, 4, "%%%02X", b64[i]);
		else
			esc[j++] = (char)b64[i];
	}
	esc[j] = '\0';
	out = ocsp_get_decode(esc, MAX, &len);
	check(out != NULL);
	check(len == size);
	check(memcmp(out, data, size) == 0);
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	size_t len = 0;
	unsigned char *out;

	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	out = ocsp_get_decode(text, MAX, &len);
	if (out != NULL)
		check(len > 0 && len <= MAX);
	free(out);
	free(text);
	if (size > 0 && size <= MAX) {
		round_trip(data, size, 1);
		round_trip(data, size, 0);
	}
	return 0;
}
