/*
 * libFuzzer target: a client's ALPN offer as a server reads it (conn_alpn_select() in
 * lib/conn.c), and mtls_identity_match() (lib/policy.c).
 *
 * The offer is untrusted bytes in ALPN's wire form (a length byte, then the name, repeated);
 * OpenSSL checks its form before the callback runs, but the reader must not rely on it. The
 * whole input is the offer, looked at for "postgresql" and for "h2". Then the input split at
 * its first '\n' is "pattern\nidentity" for mtls_identity_match(), whose identity comes from
 * a peer's certificate.
 *
 * Besides memory safety, it checks:
 *   - ALPN: a selection points inside the offer at exactly the protocol wanted, preceded by
 *     its length byte, and is found by walking the list from its start (no offset read off a
 *     misaligned byte); without one, the description is one line of printable ASCII shorter
 *     than its buffer.
 *   - identity: the result is 0 or 1; with "://" in the pattern it is the URI rule's
 *     (policy_uri_match()); a match without "://" and without '*' in the pattern is the same
 *     string, ignoring case and one trailing dot; a "*." pattern matches only itself (no
 *     host name pattern: exact comparison) or host names (letters, digits, '-' and '.').
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond) ((cond) ? (void)0 : fail(#cond, __LINE__))

__attribute__((noreturn)) static void fail(const char *what, int line)
{
	fprintf(stderr, "fuzz_alpn.c:%d: invariant failed: %s\n", line, what);
	abort();
}

/* Where the list walked from its start has a protocol equal to want: its offset, or -1. */
static long ref_find(const uint8_t *in, size_t len, const char *want)
{
	size_t w = strlen(want);

	for (size_t i = 0; i < len;) {
		size_t n = in[i];

		if (n == 0 || n > len - i - 1)
			return -1;
		if (n == w && memcmp(in + i + 1, want, w) == 0)
			return (long)(i + 1);
		i += n + 1;
	}
	return -1;
}

static void one_offer(const uint8_t *data, size_t size, const char *want)
{
	const unsigned char *out = NULL;
	char offered[300];
	unsigned int n;
	long at = ref_find(data, size, want);

	memset(offered, 'Z', sizeof(offered));
	n = conn_alpn_select(want, data, (unsigned int)size, &out, offered, sizeof(offered));
	if (n > 0) {
		check(at >= 0);
		check(n == strlen(want));
		check(out == data + at);
		check(out[-1] == n);
		check(memcmp(out, want, n) == 0);
		return;
	}
	check(at < 0);
	check(memchr(offered, '\0', sizeof(offered)) != NULL);
	for (const char *p = offered; *p != '\0'; p++)
		check(*p >= 0x20 && *p < 0x7f);
}

static bool host_chars(const char *s)
{
	for (; *s != '\0'; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '.')
			return false;
	return true;
}

/* a and b equal ignoring case and one trailing dot each */
static bool same_name(const char *a, const char *b)
{
	size_t na = strlen(a), nb = strlen(b);

	if (na > 0 && a[na - 1] == '.')
		na--;
	if (nb > 0 && b[nb - 1] == '.')
		nb--;
	return na == nb && strncasecmp(a, b, na) == 0;
}

static void one_match(const char *pattern, const char *identity)
{
	int r = mtls_identity_match(pattern, identity);

	check(r == 0 || r == 1);
	if (strstr(pattern, "://") != NULL) {
		check(r == (policy_uri_match(pattern, identity) ? 1 : 0));
		return;
	}
	if (r == 1 && strchr(pattern, '*') == NULL)
		check(strcmp(pattern, identity) == 0 || same_name(pattern, identity));
	if (r == 1 && pattern[0] == '*' && pattern[1] == '.' && strcmp(pattern, identity) != 0)
		check(host_chars(identity) && identity[0] != '.');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl;
	char *pattern, *identity;
	size_t plen;

	if (size > 70000)
		return 0;
	one_offer(data, size, "postgresql");
	one_offer(data, size, "h2");

	nl = memchr(data, '\n', size);
	plen = nl != NULL ? (size_t)(nl - data) : size;
	pattern = strndup((const char *)data, plen);
	identity = nl != NULL ? strndup((const char *)nl + 1, size - plen - 1) : strdup("");
	if (pattern != NULL && identity != NULL) {
		one_match(pattern, identity);
		one_match(identity, pattern);
	}
	free(pattern);
	free(identity);
	return 0;
}
