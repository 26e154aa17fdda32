/*
 * libFuzzer target: the value of a Prefer or Preference-Applied header (common/prefer.c),
 * which any client of `mtls ca serve`'s plain port, or the server a --crl-url names, chooses.
 *
 * Invariants: the result is -1 or within 0..PREFER_WAIT_MAX; the input is read only up to its
 * NUL (ASan sees the rest); a value longer than PREFER_MAX_LEN is refused whole; when the
 * input is a well-formed list (", wait=7" appended to it parses), its own first wait wins
 * over the appended one, and "wait=N, " put before it yields exactly N (N from the input's
 * first bytes); "wait=N" alone yields N.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prefer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond) ((cond) ? (void)0 : fail(#cond, __LINE__))

__attribute__((noreturn)) static void fail(const char *what, int line)
{
	fprintf(stderr, "fuzz_prefer: invariant broken at line %d: %s\n", line, what);
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1), *list;
	long n, rest;
	size_t len;

	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	len = strlen(text);
	rest = prefer_wait(text);
	check(rest >= -1 && rest <= PREFER_WAIT_MAX);
	if (len >= PREFER_MAX_LEN)
		check(rest == -1);
	/* "wait=N, <input>": N from the first four bytes */
	n = size >= 4 ? (long)(((uint32_t)data[0] << 24 | (uint32_t)data[1] << 16 |
				(uint32_t)data[2] << 8 | data[3]) %
			       (PREFER_WAIT_MAX + 1))
		      : 7;
	list = malloc(len + 32);
	if (list != NULL) {
		/* the input is a well-formed list (with or without a wait) when a wait can be
		 * appended to it */
		snprintf(list, len + 32, "%s, wait=7", text);
		if (len + 16 < PREFER_MAX_LEN && prefer_wait(list) != -1) {
			check(rest == -1 || prefer_wait(list) == rest);
			snprintf(list, len + 32, "wait=%ld, %s", n, text);
			check(prefer_wait(list) == n);
		}
		snprintf(list, len + 32, "wait=%ld", n);
		check(prefer_wait(list) == n);
		free(list);
	}
	free(text);
	return 0;
}
