/*
 * The CA's validation of names before anything is signed, table-driven.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "issue.h"

struct name_case {
	char kind; /* 'd' DNS, 'i' IP, 'u' URI */
	const char *value;
	bool ok;
};

static const struct name_case cases[] = {
	{'d', "localhost", true},
	{'d', "db.example.org", true},
	{'d', "*.example.org", true},
	{'d', "xn--bcher-kva.example", true},
	{'d', "a-b.c-d.e", true},
	{'d', "", false},
	{'d', "bad_name", false},
	{'d', "-lead.example", false},
	{'d', "trail-.example", false},
	{'d', "double..dot", false},
	{'d', "*", false},
	{'d', "a.*.example", false},
	{'d', "sp ace.example", false},
	{'d', "0123456789012345678901234567890123456789012345678901234567890123.x", false},
	{'i', "127.0.0.1", true},
	{'i', "::1", true},
	{'i', "fe80::1", true},
	{'i', "300.1.1.1", false},
	{'i', "1.2.3", false},
	{'i', "localhost", false},
	{'u', "spiffe://example.org/ns/prod/sa/api", true},
	{'u', "spiffe://example.org", true},
	{'u', "https://example.org/a?b=c", true},
	{'u', "urn://x", true},
	{'u', "spiffe://Example.org/x", false},
	{'u', "spiffe://example.org/", false},
	{'u', "spiffe://example.org/a//b", false},
	{'u', "spiffe://example.org/a?q", false},
	{'u', "spiffe:///path", false},
	{'u', "not a uri", false},
	{'u', "://x", false},
	{'u', "1http://x", false},
	{'u', "http://x/\"quote", false},
	{'u', "http://x/sp ace", false},
};

static void test_names(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct issue_names n;
		char err[512] = "";
		int rc;

		issue_names_init(&n);
		rc = cases[i].kind == 'd'   ? issue_add_dns(&n, cases[i].value, err, sizeof(err))
		     : cases[i].kind == 'i' ? issue_add_ip(&n, cases[i].value, err, sizeof(err))
					    : issue_add_uri(&n, cases[i].value, err, sizeof(err));
		if ((rc == 0) != cases[i].ok)
			fail_msg("%c '%s': expected %s (%s)", cases[i].kind, cases[i].value,
				 cases[i].ok ? "accepted" : "refused", err);
		if (rc != 0)
			assert_true(strlen(err) > 10);
		else
			assert_int_equal(sk_GENERAL_NAME_num(n.names), 1);
		issue_names_free(&n);
	}
}

static void test_names_text(void **state)
{
	struct issue_names n;
	char err[256];

	(void)state;
	issue_names_init(&n);
	assert_int_equal(issue_add_dns(&n, "DB.Example.org", err, sizeof(err)), 0);
	assert_int_equal(issue_add_ip(&n, "10.0.0.1", err, sizeof(err)), 0);
	assert_int_equal(issue_add_uri(&n, "spiffe://example.org/db", err, sizeof(err)), 0);
	assert_string_equal(n.text, "DNS:db.example.org, IP:10.0.0.1, URI:spiffe://example.org/db");
	assert_string_equal(n.first, "db.example.org");
	assert_int_equal(n.ndns + n.nip + n.nuri, 3);
	issue_names_free(&n);
}

static void test_profiles(void **state)
{
	enum issue_kind k;

	(void)state;
	assert_int_equal(issue_profile("server", &k), 0);
	assert_int_equal(k, ISSUE_SERVER);
	assert_int_equal(issue_profile("client", &k), 0);
	assert_int_equal(k, ISSUE_CLIENT);
	assert_int_equal(issue_profile("peer", &k), 0);
	assert_int_equal(k, ISSUE_PEER);
	assert_int_equal(issue_profile("ca", &k), -1);
	assert_string_equal(issue_profile_name(ISSUE_PEER), "peer");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_names_text),
		cmocka_unit_test(test_profiles),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
