/*
 * The audit log's backend-independent part (ca/audit_log.h): the chain hash (a known answer:
 * it is what every inventory on disk holds), the walk over the chain, the entries' details
 * written and read back, and store_check()'s comparisons on an inventory held in memory.
 * Both backends' use of it is tested through store.h by test_ca_store.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "audit_log.h"

static const struct audit_log_entry root = {1, 1700000000, "mtls ca", "init", "CN=Root", "client"};

/* The input, length-prefixed, and its SHA-256, computed outside this code:
 * printf '1:1700000000:64:<genesis>7:mtls ca4:init7:CN=Root6:client' | sha256sum */
static void test_hash_known_answer(void **state)
{
	char hash[65];

	(void)state;
	audit_log_hash(audit_log_genesis, &root, hash);
	assert_string_equal(hash,
			    "5e5ee28807c621949f604915c924259cdf98e99bc0357d58354a4e7c0f6b31e5");
}

/* A log of three entries in memory, with the hashes a backend would have stored. */
struct row {
	struct audit_log_entry e;
	char prev[65], hash[65];
};

static void make_log(struct row rows[3])
{
	static const char *const details[] = {"one", "two", "three"};
	const char *prev = audit_log_genesis;

	for (int i = 0; i < 3; i++) {
		rows[i].e = (struct audit_log_entry){i + 1,   1700000000 + i, "tester",
						     "issue", "CN=x",	      details[i]};
		snprintf(rows[i].prev, sizeof(rows[i].prev), "%s", prev);
		audit_log_hash(prev, &rows[i].e, rows[i].hash);
		prev = rows[i].hash;
	}
}

static int walk_rows(const struct row *rows, int n, int64_t *count, int64_t *bad_seq, char head[65],
		     int (*fn)(const struct audit_log_entry *e, void *arg), void *arg)
{
	struct audit_log_walk w;
	int rc = 0;

	audit_log_walk_start(&w, count, bad_seq, fn, arg);
	for (int i = 0; i < n && rc == 0; i++)
		rc = audit_log_walk_next(&w, &rows[i].e, rows[i].prev, rows[i].hash);
	if (rc == 0)
		audit_log_walk_head(&w, head);
	return rc;
}

static int stop_at_two(const struct audit_log_entry *e, void *arg)
{
	(void)arg;
	return e->seq == 2;
}

static void test_walk(void **state)
{
	struct row rows[3];
	int64_t count = -1, bad = 0;
	char head[65];

	(void)state;
	make_log(rows);
	assert_int_equal(walk_rows(rows, 0, &count, &bad, head, NULL, NULL), 0);
	assert_int_equal(count, 0);
	assert_string_equal(head, "");
	assert_int_equal(walk_rows(rows, 3, &count, &bad, head, NULL, NULL), 0);
	assert_int_equal(count, 3);
	assert_string_equal(head, rows[2].hash);
	/* fn stops the walk: the entry it stopped at is not counted */
	assert_int_equal(walk_rows(rows, 3, &count, &bad, head, stop_at_two, NULL), 2);
	assert_int_equal(count, 1);
	/* an entry edited behind the chain's back */
	rows[1].e.detail = "TWO";
	assert_int_equal(walk_rows(rows, 3, &count, &bad, head, NULL, NULL), 1);
	assert_int_equal(bad, 2);
	assert_int_equal(count, 1);
	/* an entry deleted: the next sequence number is the bad one */
	make_log(rows);
	rows[1] = rows[2];
	assert_int_equal(walk_rows(rows, 2, &count, &bad, head, NULL, NULL), 1);
	assert_int_equal(bad, 2);
}

static void test_details(void **state)
{
	static const char *const bad_crl[] = {
		"published",
		"CRL 0, 1 revoked, sha256 "
		"5e5ee28807c621949f604915c924259cdf98e99bc0357d58354a4e7c0f6b31e5",
		"CRL 3, 1 revoked, sha256 "
		"5E5EE28807C621949F604915C924259CDF98E99BC0357D58354A4E7C0F6B31E5",
		"CRL 3, 1 revoked, sha256 5e5e",
		"CRL 3, 1 revoked, sha256 "
		"5e5ee28807c621949f604915c924259cdf98e99bc0357d58354a4e7c0f6b31e5 ",
		"CRL 99999999999999999999, 1 revoked, sha256 "
		"5e5ee28807c621949f604915c924259cdf98e99bc0357d58354a4e7c0f6b31e5",
		"",
	};
	const char *sha = "5e5ee28807c621949f604915c924259cdf98e99bc0357d58354a4e7c0f6b31e5";
	struct store_token t = {
		"00112233445566778899aabbccddeeff", "client", "", NULL, 0, 86400, 0, ""};
	char buf[200], got[65], *detail;
	int64_t n = 0;

	(void)state;
	audit_log_crl_detail(buf, sizeof(buf), 12, 3, sha);
	assert_string_equal(buf,
			    "CRL 12, 3 revoked, sha256 "
			    "5e5ee28807c621949f604915c924259cdf98e99bc0357d58354a4e7c0f6b31e5");
	assert_int_equal(audit_log_parse_crl(buf, &n, got), 0);
	assert_int_equal(n, 12);
	assert_string_equal(got, sha);
	for (size_t i = 0; i < sizeof(bad_crl) / sizeof(bad_crl[0]); i++)
		assert_int_equal(audit_log_parse_crl(bad_crl[i], &n, got), -1);
	audit_log_crl_like(buf, sizeof(buf), 12);
	assert_string_equal(buf, "CRL 12, %");
	audit_log_revoke_detail(buf, sizeof(buf), "0A1B", "keyCompromise", 1700000000);
	assert_string_equal(buf, "serial 0A1B, reason keyCompromise, at 2023-11-14T22:13:20Z");
	detail = audit_log_token_detail(&t);
	assert_string_equal(detail, "token 0011223344556677, profile client, names none, until "
				    "1970-01-02T00:00:00Z");
	free(detail);
	t.names = "DNS:a\nURI:spiffe://b/c";
	detail = audit_log_token_detail(&t);
	assert_string_equal(detail, "token 0011223344556677, profile client, names DNS:a, "
				    "URI:spiffe://b/c, until 1970-01-02T00:00:00Z");
	free(detail);
	assert_int_equal(audit_log_crl_next(0, 0, 0), 1);
	assert_int_equal(audit_log_crl_next(7, 3, 5), 8);
	assert_int_equal(audit_log_crl_next(2, 9, 5), 10);
	assert_int_equal(audit_log_crl_next(2, 3, 11), 12);
}

/* An inventory in memory behind struct audit_log_ops. */
struct cert_row {
	const char *serial, *reason; /* reason NULL: valid */
	time_t at;
};

struct memdb {
	struct row log[3];
	int nlog;
	const int64_t *crls; /* the CRL table, ascending, 0-terminated */
	const struct cert_row *certs;
	int ncerts;
};

static int mem_walk(void *db, int64_t *count, int64_t *bad_seq, char head[65],
		    int (*fn)(const struct audit_log_entry *e, void *arg), void *arg)
{
	struct memdb *m = db;

	return walk_rows(m->log, m->nlog, count, bad_seq, head, fn, arg);
}

static int mem_triggers(void *db, char *what, size_t what_len)
{
	(void)db;
	(void)what;
	(void)what_len;
	return 0;
}

static int64_t mem_max_crl(void *db)
{
	const struct memdb *m = db;
	int64_t max = 0;

	for (const int64_t *n = m->crls; *n != 0; n++)
		max = *n;
	return max;
}

static int mem_crl_numbers(void *db, int64_t from, int (*fn)(int64_t number, void *arg), void *arg)
{
	const struct memdb *m = db;
	int stop = 0;

	for (const int64_t *n = m->crls; *n != 0 && stop == 0; n++)
		if (*n >= from)
			stop = fn(*n, arg);
	return stop;
}

static int mem_get_cert(void *db, const char *serial, struct store_cert *out)
{
	const struct memdb *m = db;

	for (int i = 0; i < m->ncerts; i++) {
		if (strcmp(m->certs[i].serial, serial) != 0)
			continue;
		memset(out, 0, sizeof(*out));
		snprintf(out->serial, sizeof(out->serial), "%s", serial);
		out->revoked = m->certs[i].reason != NULL;
		out->revocation_reason = m->certs[i].reason;
		out->revoked_at = m->certs[i].at;
		return 0;
	}
	return 1;
}

static int mem_revoked(void *db,
		       int (*fn)(const char *serial, const char *reason, time_t at, void *arg),
		       void *arg)
{
	const struct memdb *m = db;
	int stop = 0;

	for (int i = 0; i < m->ncerts && stop == 0; i++)
		if (m->certs[i].reason != NULL)
			stop = fn(m->certs[i].serial, m->certs[i].reason, m->certs[i].at, arg);
	return stop;
}

static void mem_out_of_memory(void *db)
{
	(void)db;
	fail_msg("out of memory");
}

static const struct audit_log_ops mem_ops = {
	.walk = mem_walk,
	.triggers = mem_triggers,
	.max_crl_number = mem_max_crl,
	.crl_numbers = mem_crl_numbers,
	.get_cert = mem_get_cert,
	.revoked = mem_revoked,
	.out_of_memory = mem_out_of_memory,
};

/* A log: a revocation of 0A (with its time), one without its time (an old entry), CRL 2. */
static void make_inventory(struct memdb *m)
{
	static const char *const details[] = {
		"serial 0A, reason keyCompromise, at 2023-11-14T22:13:20Z",
		"serial 0B, reason superseded",
		("CRL 2, 2 revoked, sha256 "
		 "5e5ee28807c621949f604915c924259cdf98e99bc0357d58354a4e7c0f6b31e5"),
	};
	static const char *const actions[] = {"revoke", "revoke", "crl"};
	const char *prev = audit_log_genesis;

	memset(m, 0, sizeof(*m));
	for (int i = 0; i < 3; i++) {
		m->log[i].e = (struct audit_log_entry){
			i + 1, 1700000000 + 10 * i, "tester", actions[i], "CN=x", details[i]};
		snprintf(m->log[i].prev, sizeof(m->log[i].prev), "%s", prev);
		audit_log_hash(prev, &m->log[i].e, m->log[i].hash);
		prev = m->log[i].hash;
	}
	m->nlog = 3;
}

static void test_check(void **state)
{
	static const int64_t crls[] = {1, 2, 0}, crls_missing[] = {1, 0}, crls_extra[] = {2, 3, 0};
	/* 0B revoked within UNTIMED_SLACK before its entry (at 1700000010) */
	static const struct cert_row agree[] = {{"0A", "keyCompromise", 1700000000},
						{"0B", "superseded", 1700000000},
						{"0C", NULL, 0}};
	static const struct cert_row unlogged[] = {{"0A", "keyCompromise", 1700000000},
						   {"0B", "superseded", 1700000000},
						   {"0C", "unspecified", 1700000000}};
	static const struct cert_row valid[] = {{"0A", NULL, 0}, {"0B", "superseded", 1700000000}};
	struct store_check chk;
	struct memdb m;
	char what[512];

	(void)state;
	make_inventory(&m);
	m.crls = crls;
	m.certs = agree;
	m.ncerts = 3;
	assert_int_equal(audit_log_check(&mem_ops, &m, &chk, what, sizeof(what)), 0);
	assert_string_equal(what, "");
	assert_int_equal(chk.entries, 3);
	assert_string_equal(chk.head, m.log[2].hash);
	assert_int_equal(chk.crl_allocated, 2);
	assert_int_equal(chk.crl_logged_min, 2);
	assert_int_equal(chk.crl_logged_max, 2);

	m.certs = unlogged;
	assert_int_equal(audit_log_check(&mem_ops, &m, &chk, what, sizeof(what)), 2);
	assert_non_null(strstr(what, "disagree on serial 0C (table: revoked unspecified at "
				     "2023-11-14T22:13:20Z, log: not revoked)"));
	m.certs = valid;
	m.ncerts = 2;
	assert_int_equal(audit_log_check(&mem_ops, &m, &chk, what, sizeof(what)), 2);
	assert_non_null(strstr(what, "disagree on serial 0A (table: valid, log: revoked "
				     "keyCompromise at 2023-11-14T22:13:20Z)"));

	m.certs = agree;
	m.ncerts = 3;
	m.crls = crls_missing;
	assert_int_equal(audit_log_check(&mem_ops, &m, &chk, what, sizeof(what)), 2);
	assert_non_null(strstr(what, "the audit log records CRL #2 but the inventory's CRL table "
				     "does not"));
	m.crls = crls_extra;
	assert_int_equal(audit_log_check(&mem_ops, &m, &chk, what, sizeof(what)), 2);
	assert_non_null(strstr(what, "the inventory's CRL table holds CRL #3"));

	/* a broken chain is reported as such, before anything else */
	m.crls = crls;
	m.log[1].e.detail = "serial 0B, reason keyCompromise";
	assert_int_equal(audit_log_check(&mem_ops, &m, &chk, what, sizeof(what)), 1);
	assert_int_equal(chk.bad_seq, 2);
	assert_int_equal(chk.entries, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hash_known_answer),
		cmocka_unit_test(test_walk),
		cmocka_unit_test(test_details),
		cmocka_unit_test(test_check),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
