/*
 * Decoding the path of an OCSP GET (ocsp_get.h). Untrusted bytes: bounded, and fuzzed
 * (tests/fuzz/fuzz_ocsp_get.c).
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "ocsp_get.h"

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool is_b64(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '+' || c == '/' || c == '=';
}

unsigned char *ocsp_get_decode(const char *text, size_t max, size_t *out_len)
{
	size_t n = strlen(text), j = 0, pad = 0;
	char *clean = NULL;
	unsigned char *der = NULL;
	int len;

	/* base64 takes 4 characters for 3 bytes; escapes triple that at most */
	if (n == 0 || n > 3 * (4 * (max / 3 + 1)))
		return NULL;
	clean = malloc(n + 1);
	if (clean == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		char c = text[i];

		if (c == '%') {
			int hi = i + 2 < n ? hexval(text[i + 1]) : -1;
			int lo = hi >= 0 ? hexval(text[i + 2]) : -1;

			if (hi < 0 || lo < 0)
				goto fail;
			c = (char)(hi << 4 | lo);
			i += 2;
		}
		if (!is_b64(c) || (pad > 0 && c != '='))
			goto fail;
		if (c == '=' && ++pad > 2)
			goto fail;
		clean[j++] = c;
	}
	if (j == 0 || j % 4 != 0)
		goto fail;
	der = malloc(j / 4 * 3 + 1);
	if (der == NULL)
		goto fail;
	len = EVP_DecodeBlock(der, (const unsigned char *)clean, (int)j);
	/* EVP_DecodeBlock counts the padding as zero bytes */
	if (len < 0 || (size_t)len < pad || (size_t)len - pad == 0 || (size_t)len - pad > max)
		goto fail;
	*out_len = (size_t)len - pad;
	free(clean);
	return der;
fail:
	free(clean);
	free(der);
	return NULL;
}
