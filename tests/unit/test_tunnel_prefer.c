/*
 * prefer_wait(): the "wait" preference of RFC 7240 in a Prefer or Preference-Applied value,
 * the signal of the CRL's long poll (caserve/crlwait.h, tunnel/crlfetch.c). Table-driven.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "prefer.h"

static const struct {
	const char *value;
	long want;
} cases[] = {
	{"wait=55", 55},
	{"WAIT=55", 55},
	{"wait = 7", 7}, /* BWS around "=" */
	{"wait=\"30\"", 30},
	{"wait=0", 0},
	{"wait=999999999", 999999999},
	{"respond-async, wait=10", 10},
	{"return=minimal; foo=\"b,ar\", wait=3", 3}, /* a comma inside a quoted string */
	{"wait=5; x=1, wait=9", 5},		     /* the first wait counts */
	{",, wait=4 ,", 4},			     /* empty list elements */
	{"respond-async", -1},
	{"", -1},
	{"wait", -1},
	{"wait=", -1},
	{"wait=1234567890", -1}, /* ten digits */
	{"wait=-1", -1},
	{"wait=1.5", -1},
	{"wait=5x", -1},
	{"wait=\"5", -1},      /* unterminated */
	{"x=\"a, wait=3", -1}, /* the wait is inside an unterminated string */
	{"wait=5 junk", -1},   /* not a list */
	{"=5", -1},
	{"waiting=5", -1},
	{"wait=5, =", -1}, /* a malformed element refuses the whole value */
};

static void table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		long got = prefer_wait(cases[i].value);

		if (got != cases[i].want)
			fail_msg("prefer_wait(\"%s\") = %ld, want %ld", cases[i].value, got,
				 cases[i].want);
	}
	assert_int_equal(prefer_wait(NULL), -1);
}

/* a value as long as PREFER_MAX_LEN or longer is not read at all */
static void too_long(void **state)
{
	char *v = malloc(PREFER_MAX_LEN + 2);

	(void)state;
	assert_non_null(v);
	memset(v, ' ', PREFER_MAX_LEN + 1);
	memcpy(v, "wait=5", 6);
	v[PREFER_MAX_LEN - 1] = '\0';
	assert_int_equal(prefer_wait(v), 5);
	v[PREFER_MAX_LEN - 1] = ' ';
	v[PREFER_MAX_LEN + 1] = '\0';
	assert_int_equal(prefer_wait(v), -1);
	free(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(table),
		cmocka_unit_test(too_long),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
