/*
 * libFuzzer target: enrollment tokens (ca/token.c) on arbitrary bytes.
 *
 * The input, as text up to its first NUL (as the CA service passes a JSON string), is read
 * as a token, checked as a CA URL, and read as the names of a stored token (token_grant()).
 * A token comes from whoever enrolls: every byte is untrusted.
 *
 * Invariants: a refusal has a one-line message and leaves the token zeroed; an accepted
 * token encodes back to exactly the input without its surrounding ASCII whitespace (one
 * spelling per token), at most TOKEN_TEXT_MAX bytes, and its URL passes the URL rule; an
 * accepted URL is "https://" and at most TOKEN_URL_MAX bytes of host characters, brackets,
 * colons and digits (no path, query, fragment or userinfo).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "token.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond) ((cond) ? (void)0 : fail(#cond, __LINE__))

__attribute__((noreturn)) static void fail(const char *what, int line)
{
	fprintf(stderr, "fuzz_token.c:%d: invariant failed: %s\n", line, what);
	abort();
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static void one_token(const char *text)
{
	struct token t;
	char err[512] = "", again[TOKEN_TEXT_MAX + 1], why[512];
	const char *start = text;
	size_t n;
	int rc;

	memset(&t, 0xa5, sizeof(t));
	rc = token_decode(text, &t, err, sizeof(err));
	if (rc != 0) {
		check(rc == -1);
		check(err[0] != '\0' && strchr(err, '\n') == NULL);
		for (size_t i = 0; i < sizeof(t); i++)
			check(((const unsigned char *)&t)[i] == 0);
		return;
	}
	while (is_space(*start))
		start++;
	n = strlen(start);
	while (n > 0 && is_space(start[n - 1]))
		n--;
	check(n <= TOKEN_TEXT_MAX);
	check(token_encode(&t, again, sizeof(again)) == 0);
	check(strlen(again) == n && memcmp(again, start, n) == 0);
	check(strnlen(t.url, sizeof(t.url)) <= TOKEN_URL_MAX);
	check(token_check_url(t.url, why, sizeof(why)) == 0);
	token_wipe(&t);
}

static void one_url(const char *text)
{
	char err[512] = "";

	if (token_check_url(text, err, sizeof(err)) != 0) {
		check(err[0] != '\0' && strchr(err, '\n') == NULL);
		return;
	}
	check(strncmp(text, "https://", 8) == 0);
	check(strlen(text) <= TOKEN_URL_MAX);
	check(strspn(text + 8,
		     "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-[]:") ==
	      strlen(text + 8));
}

static void one_grant(const char *text)
{
	static const char *const profiles[] = {"server", "client", "peer"};
	struct store_token row = {.hash = "00000000000000000000", .cn = "", .names = text};
	char err[1024];

	for (size_t i = 0; i < 3; i++) {
		struct grant g;

		row.profile = profiles[i];
		err[0] = '\0';
		if (token_grant(&row, &g, err, sizeof(err)) != 0)
			check(err[0] != '\0');
		grant_free(&g);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);

	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	one_token(text);
	one_url(text);
	one_grant(text);
	free(text);
	return 0;
}
