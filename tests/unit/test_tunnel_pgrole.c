/*
 * PostgreSQL role rules (tunnel/pgrole.c): --pg-role PATTERN=ROLE[@DATABASE] parsed and
 * refused as the daemon's check would, and judged as a StartupMessage would be.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "pgrole.h"

static struct pgrole *parse(const char **v, size_t n, char *err, size_t len)
{
	struct tunnel_list l = {.v = v, .n = n};

	return pgrole_parse(&l, err, len);
}

static void test_no_rules_allow_all(void **state)
{
	char err[300];
	struct pgrole *r = parse(NULL, 0, err, sizeof(err));
	const char *rule = NULL;

	(void)state;
	assert_non_null(r);
	assert_int_equal(pgrole_count(r), 0);
	assert_true(pgrole_allows(r, &(struct pgrole_peer){0}, "postgres", NULL, false, &rule));
	assert_string_equal(rule, "");
	pgrole_free(r);
}

static void test_rules(void **state)
{
	static const char *rules[] = {
		"spiffe://example.org/ns/prod/sa/billing=billing",
		"spiffe://example.org/ns/prod/sa/*=reader@reports",
		"*.ops.example.org=*",
		"admin cn=postgres@*",
	};
	static const struct {
		const char *identity, *user, *database;
		bool allowed;
		int rule; /* the index of the rule that allows it */
	} cases[] = {
		{"spiffe://example.org/ns/prod/sa/billing", "billing", NULL, true, 0},
		{"spiffe://example.org/ns/prod/sa/billing", "billing", "billing", true, 0},
		{"spiffe://example.org/ns/prod/sa/billing", "billing", "other", true, 0},
		{"spiffe://example.org/ns/prod/sa/billing", "postgres", NULL, false, -1},
		{"spiffe://example.org/ns/prod/sa/report", "reader", "reports", true, 1},
		/* no database given: PostgreSQL opens the one named as the user */
		{"spiffe://example.org/ns/prod/sa/report", "reader", NULL, false, -1},
		{"spiffe://example.org/ns/prod/sa/report", "reader", "billing", false, -1},
		/* "*" is one whole path segment */
		{"spiffe://example.org/ns/prod/sa/a/b", "reader", "reports", false, -1},
		{"spiffe://example.org/ns/dev/sa/billing", "billing", NULL, false, -1},
		{"db1.ops.example.org", "anyone", "anything", true, 2},
		{"ops.example.org", "anyone", NULL, false, -1},
		/* a host name compares as DNS names do, without regard to case */
		{"DB1.ops.example.org", "anyone", NULL, true, 2},
		/* a common name exactly */
		{"admin cn", "postgres", "x", true, 3},
		{"admin cn", "billing", NULL, false, -1},
		{"Admin cn", "postgres", NULL, false, -1},
		{"", "postgres", NULL, false, -1},
	};
	char err[300];
	struct pgrole *r = parse(rules, 4, err, sizeof(err));

	(void)state;
	if (r == NULL)
		fail_msg("refused: %s", err);
	assert_int_equal(pgrole_count(r), 4);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *rule = NULL;
		/* the identity as the certificate would carry it: a URI SAN, a DNS SAN (a host
		 * name), else the common name */
		const char *name = cases[i].identity;
		bool is_uri = strstr(name, "://") != NULL;
		bool is_host = !is_uri && strchr(name, ' ') == NULL && strchr(name, '.') != NULL;
		struct pgrole_peer peer = {.uri = &name,
					   .nuri = is_uri,
					   .dns = &name,
					   .ndns = is_host,
					   .cn = !is_uri && !is_host ? name : NULL};
		bool ok = pgrole_allows(r, &peer, cases[i].user, cases[i].database, false, &rule);

		if (ok != cases[i].allowed)
			fail_msg("case %zu (%s as %s to %s): %s", i, cases[i].identity,
				 cases[i].user, cases[i].database ? cases[i].database : "(default)",
				 ok ? "allowed" : "refused");
		if (ok && strcmp(rule, rules[cases[i].rule]) != 0)
			fail_msg("case %zu: allowed by '%s', expected '%s'", i, rule,
				 rules[cases[i].rule]);
		if (!ok && rule != NULL)
			fail_msg("case %zu: refused but names a rule", i);
	}
	pgrole_free(r);
}

/* A common name that reads like a URI is no URI SAN: a URI pattern never matches it. */
static void test_cn_is_no_uri(void **state)
{
	static const char *rules[] = {"spiffe://example.org/ns/prod/sa/*=billing"};
	static const char *uri = "spiffe://example.org/ns/prod/sa/billing";
	char err[300];
	struct pgrole *r = parse(rules, 1, err, sizeof(err));
	struct pgrole_peer by_cn = {.cn = uri}, by_san = {.uri = &uri, .nuri = 1};
	const char *rule;

	(void)state;
	assert_non_null(r);
	assert_false(pgrole_allows(r, &by_cn, "billing", NULL, false, &rule));
	assert_true(pgrole_allows(r, &by_san, "billing", NULL, false, &rule));
	pgrole_free(r);
}

/* Replication connections (which reach every database) need DATABASE "replication"
 * itself; a role may hold an '@' (the last one separates the database). */
static void test_replication_and_at(void **state)
{
	static const char *rules[] = {
		"spiffe://example.org/cdc=cdc@billingdb",
		"spiffe://example.org/any=*",
		"spiffe://example.org/rep=repl@replication",
		"spiffe://example.org/mail=alice@corp.com@*",
	};
	const char *cdc = "spiffe://example.org/cdc", *any = "spiffe://example.org/any",
		   *rep = "spiffe://example.org/rep", *mail = "spiffe://example.org/mail";
	struct pgrole_peer p_cdc = {.uri = &cdc, .nuri = 1}, p_any = {.uri = &any, .nuri = 1},
			   p_rep = {.uri = &rep, .nuri = 1}, p_mail = {.uri = &mail, .nuri = 1};
	char err[300];
	struct pgrole *r = parse(rules, 4, err, sizeof(err));
	const char *rule;

	(void)state;
	assert_non_null(r);
	assert_true(pgrole_allows(r, &p_cdc, "cdc", "billingdb", false, &rule));
	assert_false(pgrole_allows(r, &p_cdc, "cdc", "billingdb", true, &rule));
	assert_false(pgrole_allows(r, &p_any, "anyone", "x", true, &rule));
	assert_true(pgrole_allows(r, &p_any, "anyone", "x", false, &rule));
	assert_true(pgrole_allows(r, &p_rep, "repl", "whatever", true, &rule));
	assert_false(pgrole_allows(r, &p_rep, "repl", "replication", false, &rule) &&
		     strcmp(rule, rules[2]) != 0);
	assert_true(pgrole_allows(r, &p_mail, "alice@corp.com", "db", false, &rule));
	assert_false(pgrole_allows(r, &p_mail, "alice", "corp.com", false, &rule));
	pgrole_free(r);
}

static void test_bad_rules(void **state)
{
	static const struct {
		const char *rule, *says;
	} cases[] = {
		{"billing", "write PATTERN=ROLE"},
		{"=billing", "write PATTERN=ROLE"},
		{"spiffe://example.org/x=", "write PATTERN=ROLE"},
		{"spiffe://example.org/ns/../sa=billing", "not an identity pattern"},
		{"a.*.example.org=x", "not an identity pattern"},
		{"spiffe://example.org/x=billing@", "a role and a database are 1 to 63 bytes"},
		{"spiffe://example.org/"
		 "x=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		 "a role and a database are 1 to 63 bytes"},
		{"spiffe://example.org/x=bill\ting", "a role and a database"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *v[] = {"spiffe://example.org/ok=ok", cases[i].rule};
		char err[300] = "";
		struct pgrole *r = parse(v, 2, err, sizeof(err));

		if (r != NULL) {
			pgrole_free(r);
			fail_msg("'%s': accepted", cases[i].rule);
		}
		if (strstr(err, cases[i].says) == NULL)
			fail_msg("'%s': does not say '%s': %s", cases[i].rule, cases[i].says, err);
		if (strstr(err, "--pg-role") == NULL)
			fail_msg("'%s': does not name the option: %s", cases[i].rule, err);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_rules_allow_all),
		cmocka_unit_test(test_rules),
		cmocka_unit_test(test_cn_is_no_uri),
		cmocka_unit_test(test_replication_and_at),
		cmocka_unit_test(test_bad_rules),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
