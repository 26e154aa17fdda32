/*
 * Allow-rule matching, table-driven: URI patterns with "*" segments, DNS wildcards, pins.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

struct match_case {
	const char *pattern;
	const char *value;
	bool match;
};

static const struct match_case uri_cases[] = {
	{"spiffe://example.org/ns/prod/sa/api", "spiffe://example.org/ns/prod/sa/api", true},
	{"spiffe://example.org/ns/*/sa/api", "spiffe://example.org/ns/prod/sa/api", true},
	{"spiffe://example.org/ns/*/sa/*", "spiffe://example.org/ns/dev/sa/web", true},
	{"SPIFFE://Example.org/ns/prod", "spiffe://example.org/ns/prod", true},
	{"spiffe://example.org/ns/prod", "spiffe://example.org/NS/prod", false},
	{"spiffe://example.org/ns/*/sa/api", "spiffe://example.org/ns//sa/api", false},
	{"spiffe://example.org/ns/*/sa/api", "spiffe://example.org/ns/a/b/sa/api", false},
	{"spiffe://example.org/ns/*", "spiffe://example.org/ns/prod/sa/api", false},
	{"spiffe://example.org/ns/*", "spiffe://example.org/ns", false},
	{"spiffe://example.org/ns/prod", "spiffe://example.org/ns/prod/", false},
	{"spiffe://example.org/ns/prod", "spiffe://example.org/ns/prodx", false},
	{"spiffe://example.org/ns/prod", "spiffe://example.org.evil/ns/prod", false},
	{"spiffe://example.org/ns/*", "spiffe://example.org/ns/a?x=1", false},
	{"spiffe://*/ns/prod", "spiffe://example.org/ns/prod", false},
	{"spiffe://example.org", "spiffe://example.org", true},
	{"spiffe://example.org", "spiffe://example.org/x", false},
	{"spiffe://example.org/a", "https://example.org/a", false},
	{"spiffe://example.org/a", "no scheme", false},
	{"spiffe://example.org/*x", "spiffe://example.org/ax", false},
	{"spiffe://example.org/*x", "spiffe://example.org/*x", true},
};

static const struct match_case dns_cases[] = {
	{"app1.test", "app1.test", true},
	{"APP1.test", "app1.TEST", true},
	{"app1.test.", "app1.test", true},
	{"app1.test", "app2.test", false},
	{"*.example.org", "api.example.org", true},
	{"*.example.org", "a.b.example.org", false},
	{"*.example.org", "example.org", false},
	{"*.example.org", ".example.org", false},
	{"*.example.org", "api.example.org.evil", false},
	{"*.example.org", "*.example.org", false},
	{"api.example.org", "*.example.org", false},
	{"", "x", false},
};

static void test_uri(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(uri_cases) / sizeof(uri_cases[0]); i++)
		if (policy_uri_match(uri_cases[i].pattern, uri_cases[i].value) !=
		    uri_cases[i].match)
			fail_msg("uri pattern %s vs %s: expected %s", uri_cases[i].pattern,
				 uri_cases[i].value, uri_cases[i].match ? "match" : "no match");
}

static void test_dns(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(dns_cases) / sizeof(dns_cases[0]); i++)
		if (policy_dns_match(dns_cases[i].pattern, dns_cases[i].value) !=
		    dns_cases[i].match)
			fail_msg("dns pattern %s vs %s: expected %s", dns_cases[i].pattern,
				 dns_cases[i].value, dns_cases[i].match ? "match" : "no match");
}

static void test_pins(void **state)
{
	uint8_t a[32], b[32];

	(void)state;
	assert_int_equal(
		policy_parse_pin("00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF",
				 a),
		0);
	assert_int_equal(a[0], 0x00);
	assert_int_equal(a[31], 0xff);
	assert_int_equal(policy_parse_pin("00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:"
					  "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff",
					  b),
			 0);
	assert_memory_equal(a, b, 32);
	/* base64 of the same 32 bytes */
	assert_int_equal(policy_parse_pin("ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v8=", b), 0);
	assert_memory_equal(a, b, 32);
	assert_int_equal(policy_parse_pin("", b), -1);
	assert_int_equal(policy_parse_pin("0011", b), -1);
	assert_int_equal(
		policy_parse_pin(
			"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff00", b),
		-1);
	assert_int_equal(
		policy_parse_pin("g0112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
				 b),
		-1);
	assert_int_equal(policy_parse_pin("ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v8", b), -1);
	/* typos that would configure a pin that never matches are refused */
	assert_int_equal(policy_parse_pin("============================================", b), -1);
	assert_int_equal(policy_parse_pin("ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v==", b), -1);
	assert_int_equal(policy_parse_pin("ABEiM0RVZneImaq7zN3u/wAR=jNEVWZ3iJmqu8zd7v8=", b), -1);
	assert_int_equal(policy_parse_pin("ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v9=", b), -1);
	assert_int_equal(policy_parse_pin("00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:"
					  "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:",
					  b),
			 -1);
	assert_int_equal(policy_parse_pin("00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:"
					  "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:eeff",
					  b),
			 -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_uri),
		cmocka_unit_test(test_dns),
		cmocka_unit_test(test_pins),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
