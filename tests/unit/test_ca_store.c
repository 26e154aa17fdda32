/*
 * The CA inventory: certificates, revocation, CRL numbers, settings, tokens, the served CRL,
 * and the audit chain (including tampering done behind the store's back).
 *
 * Every case runs on SQLite, and again on PostgreSQL when MTLS_TEST_PG_URL names a server
 * (a postgresql:// URL of a role that may create databases; its database is only used to
 * create one database per store the cases make, dropped at the end).
 * tests/integration/test_ca_store_pg.sh starts a server and runs this binary so.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>
#include <sqlite3.h>

#include "store.h"

static char dbpath[256];
static const char *pg_base; /* MTLS_TEST_PG_URL */
static bool on_pg;	    /* the cases run on PostgreSQL */

/* The databases made for the cases (PostgreSQL), dropped by teardown. */
static char made[32][64];
static size_t nmade;

static PGconn *pg_admin(void)
{
	PGconn *c = PQconnectdb(pg_base);

	if (PQstatus(c) != CONNECTION_OK)
		fail_msg("cannot connect to MTLS_TEST_PG_URL: %s", PQerrorMessage(c));
	return c;
}

static void pg_admin_exec(const char *sql)
{
	PGconn *c = pg_admin();
	PGresult *r = PQexec(c, sql);

	if (PQresultStatus(r) != PGRES_COMMAND_OK)
		fail_msg("%s: %s", sql, PQerrorMessage(c));
	PQclear(r);
	PQfinish(c);
}

/* pg_base with its database replaced by db. */
static void pg_url(const char *db, char *out, size_t len)
{
	const char *auth = strstr(pg_base, "://"), *path, *rest;

	assert_non_null(auth);
	path = auth + 3 + strcspn(auth + 3, "/?");
	rest = *path == '/' ? path + 1 + strcspn(path + 1, "?") : path;
	snprintf(out, len, "%.*s/%s%s", (int)(path - pg_base), pg_base, db, rest);
}

/* The location of the store named by suffix ("" is the main one) on the backend under test:
 * a file beside dbpath, or a database of its own (made at the first use). */
static const char *loc(const char *suffix)
{
	static char buf[4][512];
	static int next;
	char *out = buf[next++ % 4], db[64], sql[128];
	bool known = false;

	if (!on_pg) {
		snprintf(out, 512, "%s%s", dbpath, suffix);
		return out;
	}
	snprintf(db, sizeof(db), "mtls_test_%ld_%s", (long)getpid(),
		 suffix[0] == '.'    ? suffix + 1
		 : suffix[0] == '\0' ? "main"
				     : suffix);
	for (size_t i = 0; i < nmade; i++)
		known = known || strcmp(made[i], db) == 0;
	if (!known) {
		assert_true(nmade < sizeof(made) / sizeof(made[0]));
		snprintf(sql, sizeof(sql), "CREATE DATABASE %s", db);
		pg_admin_exec(sql);
		snprintf(made[nmade++], sizeof(made[0]), "%s", db);
	}
	pg_url(db, out, 512);
	return out;
}

/* Run SQL on the store behind its back (lite on SQLite, pg on PostgreSQL). 0 or -1. */
static int raw2(const char *suffix, const char *lite, const char *pg)
{
	int rc;

	if (!on_pg) {
		sqlite3 *db;

		if (sqlite3_open(loc(suffix), &db) != SQLITE_OK)
			return -1;
		rc = sqlite3_exec(db, lite, 0, 0, 0) == SQLITE_OK ? 0 : -1;
		sqlite3_close(db);
	} else {
		PGconn *c = PQconnectdb(loc(suffix));
		PGresult *r = PQexec(c, pg);

		rc = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK
			     ? 0
			     : -1;
		PQclear(r);
		PQfinish(c);
	}
	return rc;
}

static int raw(const char *suffix, const char *sql)
{
	return raw2(suffix, sql, sql);
}

static int setup(void **state)
{
	char dir[] = "/tmp/mtls-store-XXXXXX";

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(dbpath, sizeof(dbpath), "%s/ca.db", dir);
	return 0;
}

static int setup_pg(void **state)
{
	on_pg = true;
	return setup(state);
}

static int teardown(void **state)
{
	char cmd[400];

	(void)state;
	for (size_t i = 0; i < nmade; i++) {
		snprintf(cmd, sizeof(cmd), "DROP DATABASE IF EXISTS %.63s WITH (FORCE)", made[i]);
		pg_admin_exec(cmd);
	}
	nmade = 0;
	snprintf(cmd, sizeof(cmd), "rm -rf \"$(dirname '%s')\"", dbpath);
	return system(cmd) == 0 ? 0 : -1;
}

static struct store_cert cert(const char *serial, time_t not_after)
{
	static const uint8_t der[] = {0x30, 0x03, 0x02, 0x01, 0x01};
	struct store_cert c = {.subject = "CN=x",
			       .sans = "DNS:x",
			       .spki_sha256 = "00",
			       .profile = "server",
			       .not_before = 1,
			       .not_after = not_after,
			       .issued_at = 1,
			       .der = der,
			       .der_len = sizeof(der)};

	snprintf(c.serial, sizeof(c.serial), "%s", serial);
	return c;
}

static int count(const struct store_cert *c, void *arg)
{
	(void)c;
	(*(int *)arg)++;
	return 0;
}

static void test_store(void **state)
{
	char err[256];
	struct store *st = store_open(loc(""), true, err, sizeof(err));
	struct store_cert c = cert("0A", time(NULL) + 100), got;
	struct stat sb;
	int64_t n = 0, entries = 0, bad = 0;
	int seen = 0;
	char buf[64];

	(void)state;
	assert_non_null(st);
	store_close(st);
	/* once made, a store is opened, not made again */
	assert_null(store_open(loc(""), true, err, sizeof(err)));
	st = store_open(loc(""), false, err, sizeof(err));
	assert_non_null(st);
	if (!on_pg) {
		assert_int_equal(stat(dbpath, &sb), 0);
		assert_int_equal(sb.st_mode & 0777, 0600);
	}
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_add_cert(st, &c), 0);
	assert_int_equal(store_add_cert(st, &c), 1); /* duplicate serial */
	c = cert("0B", time(NULL) - 100);	     /* expired */
	assert_int_equal(store_add_cert(st, &c), 0);
	assert_int_equal(store_audit(st, "tester", "issue", "CN=x", "serial 0A"), 0);
	assert_int_equal(store_commit(st), 0);

	assert_int_equal(store_get_cert(st, "0A", &got), 0);
	assert_string_equal(got.sans, "DNS:x");
	assert_false(got.revoked);
	assert_int_equal(store_get_cert(st, "FF", &got), 1);

	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_revoke(st, "0A", "keyCompromise", 1234), 0);
	assert_int_equal(store_revoke(st, "0A", "keyCompromise", 1234), 2);
	assert_int_equal(store_revoke(st, "FF", "unspecified", 1234), 1);
	assert_int_equal(store_audit(st, "tester", "revoke", "CN=x", "serial 0A"), 0);
	assert_int_equal(store_next_crl_number(st, 1, 2, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(store_next_crl_number(st, 1, 2, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(store_set_meta(st, "crl_days", "7"), 0);
	assert_int_equal(store_set_meta(st, "crl_days", "9"), 0);
	assert_int_equal(store_commit(st), 0);
	assert_int_equal(store_get_meta(st, "crl_days", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "9");
	assert_int_equal(store_get_meta(st, "nothing", buf, sizeof(buf)), 1);

	assert_int_equal(store_each_cert(st, STORE_REVOKED, 0, count, &seen), 0);
	assert_int_equal(seen, 1);
	seen = 0;
	assert_int_equal(store_each_cert(st, STORE_VALID, 0, count, &seen), 0);
	assert_int_equal(seen, 0); /* 0A revoked, 0B expired */
	seen = 0;
	assert_int_equal(store_each_cert(st, STORE_ALL, 0, count, &seen), 0);
	assert_int_equal(seen, 2);

	/* a rolled-back change leaves nothing behind */
	assert_int_equal(store_begin(st), 0);
	c = cert("0C", time(NULL) + 100);
	assert_int_equal(store_add_cert(st, &c), 0);
	store_rollback(st);
	assert_int_equal(store_get_cert(st, "0C", &got), 1);

	assert_int_equal(store_audit_verify(st, &entries, &bad), 0);
	assert_int_equal(entries, 2);
	store_close(st);
}

static void test_audit_tamper(void **state)
{
	char err[256];
	struct store *st;
	int64_t entries = 0, bad = 0;

	(void)state;
	st = store_open(loc(""), false, err, sizeof(err));
	assert_non_null(st);
	assert_int_equal(store_begin(st), 0);
	for (int i = 0; i < 5; i++)
		assert_int_equal(store_audit(st, "tester", "issue", "CN=y", "detail"), 0);
	assert_int_equal(store_commit(st), 0);
	store_close(st);

	/* the database refuses edits of the audit log... */
	assert_int_equal(raw("", "UPDATE audit SET detail = 'forged' WHERE seq = 3"), -1);
	assert_int_equal(raw("", "DELETE FROM audit WHERE seq = 3"), -1);
	if (on_pg)
		assert_int_equal(raw("", "TRUNCATE audit"), -1);
	/* ...and someone who removes that guard is caught by the hash chain */
	assert_int_equal(raw2("",
			      "DROP TRIGGER audit_no_update; "
			      "UPDATE audit SET detail = 'forged' WHERE seq = 3",
			      "DROP TRIGGER audit_no_update ON audit; "
			      "UPDATE audit SET detail = 'forged' WHERE seq = 3"),
			 0);

	st = store_open(loc(""), false, err, sizeof(err));
	assert_non_null(st);
	assert_int_equal(store_audit_verify(st, &entries, &bad), 1);
	assert_int_equal(bad, 3);
	assert_int_equal(entries, 2);
	store_close(st);
}

/* Revocations are audit entries too, and the table must agree with them (store_check). */
static void test_check(void **state)
{
	static const char sha[] = "00112233445566778899aabbccddeeff"
				  "00112233445566778899aabbccddeeff";
	char err[256], what[512], got[65];
	const char *path;
	struct store_check chk;
	struct store_cert c;
	struct store *st;
	int64_t n = 0;

	(void)state;
	path = loc(".check");
	st = store_open(path, true, err, sizeof(err));
	assert_non_null(st);
	assert_int_equal(store_begin(st), 0);
	c = cert("0A", time(NULL) + 100);
	assert_int_equal(store_add_cert(st, &c), 0);
	c = cert("0B", time(NULL) + 100);
	assert_int_equal(store_add_cert(st, &c), 0);
	c = cert("0C", time(NULL) + 100);
	assert_int_equal(store_add_cert(st, &c), 0);
	assert_int_equal(store_revoke_audited(st, "0A", "keyCompromise", 1000000, "tester"), 0);
	assert_int_equal(store_revoke_audited(st, "0A", "keyCompromise", 1000000, "tester"), 2);
	assert_int_equal(store_revoke_audited(st, "FF", "unspecified", 1000000, "tester"), 1);
	/* as revocations were logged before they carried their time: accepted if the entry
	 * follows the revocation closely */
	assert_int_equal(store_revoke(st, "0B", "superseded", time(NULL)), 0);
	assert_int_equal(
		store_audit(st, "tester", "revoke", "CN=x", "serial 0B, reason superseded"), 0);
	assert_int_equal(store_crl_next(st, 0, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(store_crl_add(st, n, 1, 2, 2, sha, "tester"), 0);
	assert_int_equal(store_crl_next(st, 0, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(store_crl_next(st, 7, &n), 0); /* a crl.pem #7 on disk */
	assert_int_equal(n, 8);
	assert_int_equal(store_commit(st), 0);

	assert_int_equal(store_check(st, &chk, what, sizeof(what)), 0);
	assert_int_equal(chk.entries, 3);
	assert_int_equal(chk.crl_allocated, 1);
	assert_int_equal(chk.crl_logged_min, 1);
	assert_int_equal(chk.crl_logged_max, 1);
	assert_int_equal(store_crl_logged(st, 1, got), 0);
	assert_string_equal(got, sha);
	assert_int_equal(store_crl_logged(st, 2, got), 1);

	/* a revocation without its audit entry */
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_revoke(st, "0C", "unspecified", 1000000), 0);
	assert_int_equal(store_commit(st), 0);
	assert_int_equal(store_check(st, &chk, what, sizeof(what)), 2);
	assert_non_null(strstr(what, "disagree on serial 0C (table: revoked unspecified at "
				     "1970-01-12T13:46:40Z, log: not revoked)"));

	/* a logged revocation undone behind the store's back */
	assert_int_equal(raw(".check", "UPDATE certs SET status = 'valid', revoked_at = NULL, "
				       "revocation_reason = NULL WHERE serial IN ('0A', '0C')"),
			 0);
	assert_int_equal(store_check(st, &chk, what, sizeof(what)), 2);
	assert_string_equal(what,
			    "inventory and audit log disagree on serial 0A (table: valid, log: "
			    "revoked keyCompromise at 1970-01-12T13:46:40Z); the inventory was "
			    "altered; restore it from a backup or investigate");

	/* its time changed */
	assert_int_equal(raw(".check", "UPDATE certs SET status = 'revoked', revoked_at = 1000001, "
				       "revocation_reason = 'keyCompromise' WHERE serial = '0A'"),
			 0);
	assert_int_equal(store_check(st, &chk, what, sizeof(what)), 2);
	assert_non_null(strstr(what, "(table: revoked keyCompromise at 1970-01-12T13:46:41Z, log: "
				     "revoked keyCompromise at 1970-01-12T13:46:40Z)"));

	/* a revoke entry in a form the store never writes */
	assert_int_equal(raw(".check", "UPDATE certs SET revoked_at = 1000000 WHERE serial = '0A'"),
			 0);
	assert_int_equal(store_check(st, &chk, what, sizeof(what)), 0);
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_audit(st, "tester", "revoke", "CN=x", "serial 0D reason x"), 0);
	assert_int_equal(store_commit(st), 0);
	assert_int_equal(store_check(st, &chk, what, sizeof(what)), 2);
	assert_non_null(strstr(what, "audit entry 4 cannot be read"));
	store_close(st);
}

/* CRL numbers: the next one is above every number the CRL table holds and every number the
 * audit log records (an emptied table must not start them again at 1); the table holds
 * exactly the logged ones; the log never records a number twice or going back. */
static void test_crl_numbers(void **state)
{
	static const char sha[] = "00112233445566778899aabbccddeeff"
				  "00112233445566778899aabbccddeeff";
	char err[256], what[512];
	const char *path;
	struct store_check chk;
	struct store *st;
	int64_t n = 0;

	(void)state;
	path = loc(".crls");
	st = store_open(path, true, err, sizeof(err));
	assert_non_null(st);
	assert_int_equal(store_begin(st), 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(store_crl_next(st, 0, &n), 0);
		assert_int_equal(n, i + 1);
		assert_int_equal(store_crl_add(st, n, 1, 2, 0, sha, "tester"), 0);
	}
	assert_int_equal(store_commit(st), 0);
	assert_int_equal(store_check(st, &chk, what, sizeof(what)), 0);
	assert_int_equal(chk.crl_logged_max, 3);
	assert_string_equal(chk.crl_logged_sha, sha);
	assert_int_equal((int)strlen(chk.head), 64);
	assert_int_equal(chk.entries, 3);

	/* rows deleted behind the store's back: named, and no number is handed out again */
	assert_int_equal(raw(".crls", "DELETE FROM crls WHERE number >= 2"), 0);
	assert_int_equal(store_check(st, &chk, what, sizeof(what)), 2);
	assert_non_null(strstr(what, "the audit log records CRL #2 but the inventory's CRL table "
				     "does not"));
	assert_int_equal(store_crl_next(st, 0, &n), 0);
	assert_int_equal(n, 4);
	assert_int_equal(store_crl_next(st, 9, &n), 0); /* a crl.pem #9 on disk */
	assert_int_equal(n, 10);

	/* a row the log does not record */
	assert_int_equal(raw(".crls", "INSERT INTO crls VALUES (2, 1, 2), (3, 1, 2), (4, 1, 2)"),
			 0);
	assert_int_equal(store_check(st, &chk, what, sizeof(what)), 2);
	assert_non_null(strstr(what, "the inventory's CRL table holds CRL #4, which the audit log "
				     "does not record"));

	/* the same number logged again (as after an emptied table, before the fix) */
	assert_int_equal(raw(".crls", "DELETE FROM crls WHERE number = 4"), 0);
	assert_int_equal(store_check(st, &chk, what, sizeof(what)), 0);
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(
		store_audit(st, "tester", "crl", "",
			    "CRL 2, 0 revoked, sha256 "
			    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"),
		0);
	assert_int_equal(store_commit(st), 0);
	assert_int_equal(store_check(st, &chk, what, sizeof(what)), 2);
	assert_non_null(strstr(what, "audit entry 4 records CRL #2 after CRL #3: a CRL number was "
				     "published twice or went back"));
	store_close(st);
}

/* The append-only triggers are part of what store_check() checks: without them the newest
 * entries can be deleted and the chain stays intact. */
static void test_triggers(void **state)
{
	char err[256], what[512];
	const char *path;
	struct store_check chk;
	struct store *st;

	(void)state;
	path = loc(".triggers");
	st = store_open(path, true, err, sizeof(err));
	assert_non_null(st);
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_audit(st, "tester", "issue", "CN=a", "a"), 0);
	assert_int_equal(store_audit(st, "tester", "issue", "CN=b", "b"), 0);
	assert_int_equal(store_commit(st), 0);
	assert_int_equal(store_check(st, &chk, what, sizeof(what)), 0);
	assert_int_equal(
		raw2(".triggers", "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq = 2",
		     "DROP TRIGGER audit_no_delete ON audit; DELETE FROM audit WHERE seq = 2"),
		0);
	assert_int_equal(store_check(st, &chk, what, sizeof(what)), 2);
	assert_non_null(strstr(what, "append-only trigger audit_no_delete was dropped"));
	store_close(st);
}

/* PostgreSQL: a guard switched off or rewritten is as good as dropped. */
static void test_triggers_pg(void **state)
{
	static const struct {
		const char *suffix, *sql, *said;
	} cases[] = {
		{".trig_off", "ALTER TABLE audit DISABLE TRIGGER audit_no_delete",
		 "append-only trigger audit_no_delete was disabled"},
		{".trig_body",
		 "CREATE OR REPLACE FUNCTION mtls_audit_append_only() RETURNS trigger "
		 "LANGUAGE plpgsql AS $$BEGIN RETURN OLD; END$$",
		 "append-only trigger audit_no_update was changed"},
		{".trig_when",
		 "DROP TRIGGER audit_no_truncate ON audit; CREATE TRIGGER audit_no_truncate "
		 "BEFORE TRUNCATE ON audit FOR EACH STATEMENT WHEN (false) "
		 "EXECUTE FUNCTION mtls_audit_append_only()",
		 "append-only trigger audit_no_truncate was changed"},
	};
	char err[256], what[512];
	struct store_check chk;

	(void)state;
	if (!on_pg)
		skip();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct store *st = store_open(loc(cases[i].suffix), true, err, sizeof(err));

		assert_non_null(st);
		assert_int_equal(store_audit(st, "tester", "issue", "CN=a", "a"), 0);
		assert_int_equal(raw(cases[i].suffix, cases[i].sql),
				 cases[i].said != NULL ? 0 : -1);
		assert_int_equal(store_check(st, &chk, what, sizeof(what)),
				 cases[i].said != NULL ? 2 : 0);
		if (cases[i].said != NULL)
			assert_non_null(strstr(what, cases[i].said));
		store_close(st);
	}
}

static void add_token(struct store *st, const char *hash, time_t not_after, int want)
{
	struct store_token t = {.hash = hash,
				.profile = "client",
				.cn = "",
				.names = "URI:spiffe://example.org/a\nDNS:a.example",
				.created_at = time(NULL),
				.not_after = not_after};

	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_token_add(st, &t, "tester"), want);
	assert_int_equal(store_commit(st), 0);
}

#define HASH_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define HASH_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define HASH_C "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"

/* Tokens: taken once, then "used"; expired; unknown; the serial recorded; audited. */
static void test_tokens(void **state)
{
	char err[256], what[512];
	struct store_token t;
	struct store_check chk;
	struct store *st;
	time_t now = time(NULL);

	(void)state;
	st = store_open(loc(".tokens"), true, err, sizeof(err));
	assert_non_null(st);
	add_token(st, HASH_A, now + 3600, 0);
	add_token(st, HASH_A, now + 3600, 1); /* the hash exists */
	add_token(st, HASH_B, now - 1, 0);
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_token_take(st, HASH_A, now, &t), 0);
	assert_string_equal(t.profile, "client");
	assert_string_equal(t.names, "URI:spiffe://example.org/a\nDNS:a.example");
	assert_int_equal(t.used_at, now);
	assert_int_equal(store_token_used_by(st, HASH_A, "0A"), 0);
	assert_int_equal(store_token_take(st, HASH_A, now, &t), 3);
	assert_int_equal(store_token_take(st, HASH_B, now, &t), 2);
	assert_int_equal(store_token_take(st, HASH_C, now, &t), 1);
	assert_int_equal(store_commit(st), 0);
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_token_take(st, HASH_A, now, &t), 3);
	assert_int_equal(t.used_at, now);
	assert_string_equal(t.used_serial, "0A");
	assert_int_equal(store_token_used_by(st, HASH_B, "0B"), -1); /* never taken */
	store_rollback(st);
	assert_int_equal(store_check(st, &chk, what, sizeof(what)), 0);
	assert_int_equal(chk.entries, 2); /* the two tokens added */
	store_close(st);
}

/* The served CRL: none, then the newest put; a number is kept once. */
static void test_crl_der(void **state)
{
	static const unsigned char one[] = {0x30, 0x00, 0x01}, two[] = {0x30, 0x00, 0x00, 0x02};
	char err[256];
	struct store *st;
	unsigned char *der = NULL;
	size_t len = 0;
	int64_t n = 0;

	(void)state;
	st = store_open(loc(".crlder"), true, err, sizeof(err));
	assert_non_null(st);
	assert_int_equal(store_crl_der_latest(st, &n, &der, &len), 1);
	assert_null(der);
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_crl_der_put(st, 1, one, sizeof(one)), 0);
	assert_int_equal(store_commit(st), 0);
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_crl_der_put(st, 2, two, sizeof(two)), 0);
	assert_int_equal(store_commit(st), 0);
	assert_int_equal(store_crl_der_latest(st, &n, &der, &len), 0);
	assert_int_equal(n, 2);
	assert_int_equal(len, sizeof(two));
	assert_memory_equal(der, two, sizeof(two));
	free(der);
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_crl_der_put(st, 2, one, sizeof(one)), -1);
	store_rollback(st);
	assert_int_equal(store_crl_der_latest(st, &n, &der, &len), 0);
	assert_memory_equal(der, two, sizeof(two));
	free(der);
	store_close(st);
}

/* PostgreSQL: wait until another session of the database at location waits for a lock (the
 * row lock of a token, the writer lock), or until the other process has written its result
 * to done (it did not wait). Bounded, not timed: it fails the case after a long while only
 * if neither happens. */
static void wait_for_waiter(const char *location, int done)
{
	PGconn *c = PQconnectdb(location);
	struct pollfd p = {.fd = done, .events = POLLIN};
	bool waiting = false;

	assert_int_equal(PQstatus(c), CONNECTION_OK);
	for (int i = 0; i < 6000 && !waiting; i++) {
		PGresult *r =
			PQexec(c, "SELECT count(*) FROM pg_stat_activity WHERE "
				  "datname = current_database() AND wait_event_type = 'Lock'");

		waiting = PQresultStatus(r) == PGRES_TUPLES_OK && atoi(PQgetvalue(r, 0, 0)) > 0;
		PQclear(r);
		if (!waiting && poll(&p, 1, 0) == 1)
			break;
		if (!waiting)
			usleep(10000);
	}
	PQfinish(c);
}

/* Two processes take one token at once: exactly one wins. On PostgreSQL the second one's
 * UPDATE waits for the first one's row lock and then finds the token used. */
static void test_token_race(void **state)
{
	char err[256], go = 'g';
	struct store_token t;
	struct store *st;
	const char *path = loc(".race");
	int result[2], start[2], child_rc = -9, status;
	pid_t pid;

	(void)state;
	st = store_open(path, true, err, sizeof(err));
	assert_non_null(st);
	add_token(st, HASH_A, time(NULL) + 3600, 0);
	assert_int_equal(pipe(result), 0);
	assert_int_equal(pipe(start), 0);
	/* before the transaction: SQLite's locks of this process must not reach the child */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct store *other = NULL;
		int rc = -1;

		if (read(start[0], &go, 1) == 1)
			other = store_open(path, false, err, sizeof(err));
		if (other != NULL && store_begin(other) == 0) {
			rc = store_token_take(other, HASH_A, time(NULL), &t);
			if (rc == 0 && store_token_used_by(other, HASH_A, "0B") != 0)
				rc = -1;
			if (rc >= 0 && store_commit(other) != 0)
				rc = -1;
		}
		if (rc < 0)
			fprintf(stderr, "child: %s\n", other != NULL ? store_error(other) : err);
		store_close(other);
		if (write(result[1], &rc, sizeof(rc)) != sizeof(rc))
			_exit(2);
		_exit(0);
	}
	close(result[1]);
	close(start[0]);
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_token_take(st, HASH_A, time(NULL), &t), 0);
	assert_int_equal(write(start[1], &go, 1), 1);
	close(start[1]);
	/* PostgreSQL: the child's UPDATE waits for this transaction's row lock (SQLite: its
	 * BEGIN IMMEDIATE waits, whenever it comes) */
	if (on_pg)
		wait_for_waiter(path, result[0]);
	assert_int_equal(store_token_used_by(st, HASH_A, "0A"), 0);
	assert_int_equal(store_commit(st), 0);
	assert_int_equal(read(result[0], &child_rc, sizeof(child_rc)), sizeof(child_rc));
	close(result[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(child_rc, 3); /* used */
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_token_take(st, HASH_A, time(NULL), &t), 3);
	assert_string_equal(t.used_serial, "0A");
	store_rollback(st);
	store_close(st);
}

/* The CRL number is the store's from crl_next to commit: a second publisher (another node)
 * asking meanwhile waits, and then gets the next number. */
static void test_crl_number_wait(void **state)
{
	static const char sha[] = "00112233445566778899aabbccddeeff"
				  "00112233445566778899aabbccddeeff";
	char err[256], what[512], go = 'g';
	struct store_check chk;
	struct store *st;
	const char *path = loc(".crlwait");
	int result[2], start[2], status;
	int64_t n = 0, child_n = -9;
	pid_t pid;

	(void)state;
	st = store_open(path, true, err, sizeof(err));
	assert_non_null(st);
	assert_int_equal(pipe(result), 0);
	assert_int_equal(pipe(start), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct store *other = NULL;
		int64_t mine = -1;

		if (read(start[0], &go, 1) == 1)
			other = store_open(path, false, err, sizeof(err));
		if (other == NULL || store_begin(other) != 0 ||
		    store_crl_next(other, 0, &mine) != 0 ||
		    store_crl_add(other, mine, 1, 2, 0, sha, "node2") != 0 ||
		    store_commit(other) != 0) {
			fprintf(stderr, "node2: %s\n", other != NULL ? store_error(other) : err);
			mine = -1;
		}
		store_close(other);
		if (write(result[1], &mine, sizeof(mine)) != sizeof(mine))
			_exit(2);
		_exit(0);
	}
	close(result[1]);
	close(start[0]);
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_crl_next(st, 0, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(write(start[1], &go, 1), 1);
	close(start[1]);
	if (on_pg)
		wait_for_waiter(path, result[0]);
	assert_int_equal(store_crl_add(st, n, 1, 2, 0, sha, "node1"), 0);
	assert_int_equal(store_commit(st), 0);
	assert_int_equal(read(result[0], &child_n, sizeof(child_n)), sizeof(child_n));
	close(result[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(child_n, 2);
	assert_int_equal(store_check(st, &chk, what, sizeof(what)), 0);
	assert_int_equal(chk.crl_logged_max, 2);
	store_close(st);
}

#define RACERS	  4
#define PER_RACER 12

/* Four processes publish CRLs at once, twelve each: every publication succeeds, numbers
 * never repeat, and in the audit log they strictly increase (store_check()). */
static void test_crl_race(void **state)
{
	static const char sha[] = "00112233445566778899aabbccddeeff"
				  "00112233445566778899aabbccddeeff";
	char err[256], what[512];
	struct store_check chk;
	struct store *st;
	const char *path = loc(".crlrace");
	int64_t got[RACERS * PER_RACER], n;
	int fds[2], status;
	pid_t pids[RACERS];
	unsigned char *der;
	size_t len;

	(void)state;
	st = store_open(path, true, err, sizeof(err));
	assert_non_null(st);
	assert_int_equal(pipe(fds), 0);
	for (int p = 0; p < RACERS; p++) {
		pids[p] = fork();
		assert_true(pids[p] >= 0);
		if (pids[p] != 0)
			continue;
		struct store *me = store_open(path, false, err, sizeof(err));

		for (int k = 0; k < PER_RACER; k++) {
			unsigned char crl[12] = {0x30, 0x0a};
			int64_t mine = -1;

			memcpy(crl + 2, &k, sizeof(k));
			if (me == NULL || store_begin(me) != 0 ||
			    store_crl_next(me, 0, &mine) != 0 ||
			    store_crl_add(me, mine, 1, 2, 0, sha, "racer") != 0 ||
			    store_crl_der_put(me, mine, crl, sizeof(crl)) != 0 ||
			    store_commit(me) != 0) {
				fprintf(stderr, "racer: %s\n", me != NULL ? store_error(me) : err);
				if (me != NULL)
					store_rollback(me);
				mine = -1;
			}
			if (write(fds[1], &mine, sizeof(mine)) != sizeof(mine))
				_exit(2);
		}
		store_close(me);
		_exit(0);
	}
	close(fds[1]);
	for (int i = 0; i < RACERS * PER_RACER; i++)
		assert_int_equal(read(fds[0], &got[i], sizeof(got[i])), sizeof(got[i]));
	close(fds[0]);
	for (int p = 0; p < RACERS; p++)
		assert_int_equal(waitpid(pids[p], &status, 0), pids[p]);
	for (int i = 0; i < RACERS * PER_RACER; i++) {
		assert_true(got[i] > 0); /* every publication went through */
		for (int j = 0; j < i; j++)
			if (got[j] == got[i])
				fail_msg("CRL number %lld published twice", (long long)got[i]);
	}
	assert_int_equal(store_check(st, &chk, what, sizeof(what)), 0);
	assert_int_equal(chk.crl_logged_max, RACERS * PER_RACER);
	assert_int_equal(chk.entries, RACERS * PER_RACER);
	assert_int_equal(store_crl_der_latest(st, &n, &der, &len), 0);
	assert_int_equal(n, RACERS * PER_RACER);
	free(der);
	store_close(st);
}

/* The URL of a CA directory: no password in it; a database that is not there: one line
 * that names it. */
static void test_url(void **state)
{
	char err[512] = "";

	(void)state;
	assert_true(store_is_url("postgresql://ca@db.example/ca"));
	assert_true(store_is_url("postgres://ca@db.example/ca"));
	assert_false(store_is_url("/var/lib/mtls/ca/ca.db"));
	assert_int_equal(store_url_check("postgresql://ca@db.example:5432/ca", err, sizeof(err)),
			 0);
	assert_int_equal(store_url_check("postgresql://ca:s3cret@db.example/ca", err, sizeof(err)),
			 -1);
	assert_non_null(strstr(err, "PGPASSFILE"));
	assert_null(strstr(err, "s3cret"));
	assert_int_equal(store_url_check("postgresql://db.example/ca?password=x", err, sizeof(err)),
			 -1);
	assert_int_equal(
		store_url_check("postgresql://db.example:notaport:/x%zz", err, sizeof(err)), -1);
	assert_int_equal(store_url_check("/var/lib/ca.db", err, sizeof(err)), -1);
	assert_null(store_open("postgresql://nobody@/ca_gone?host=/nonexistent-mtls-dir&port=1",
			       false, err, sizeof(err)));
	assert_non_null(strstr(err, "cannot connect to the CA inventory, PostgreSQL database "
				    "ca_gone (host /nonexistent-mtls-dir, port 1)"));
	assert_null(strchr(err, '\n'));
}

/* PostgreSQL: end every other session of the database at location (a restarted server, as
 * the CA's sessions see it). */
static void kill_sessions(const char *location)
{
	PGconn *c = PQconnectdb(location);
	PGresult *r = PQexec(c, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
				"WHERE datname = current_database() AND pid <> pg_backend_pid()");

	assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
	assert_true(atoi(PQgetvalue(r, 0, 0)) > 0);
	PQclear(r);
	PQfinish(c);
}

/* PostgreSQL: a connection lost inside a transaction fails it, saying so (unavailable); one
 * lost between transactions is opened again by the next statement. */
static void test_reconnect_pg(void **state)
{
	char err[256], buf[16];
	struct store *st;

	(void)state;
	if (!on_pg)
		skip();
	st = store_open(loc(".reconnect"), true, err, sizeof(err));
	assert_non_null(st);
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_set_meta(st, "k", "1"), 0);
	kill_sessions(loc(".reconnect"));
	assert_int_equal(store_audit(st, "tester", "issue", "CN=a", "a"), -1);
	assert_non_null(strstr(store_error(st), "lost the connection to the CA inventory, "
						"PostgreSQL database mtls_test_"));
	assert_int_equal(store_error_kind(st), STORE_FAIL_UNAVAILABLE);
	assert_int_equal(store_commit(st), -1);
	store_rollback(st);
	/* nothing of it was kept; the next transaction and a read outside one work */
	assert_int_equal(store_get_meta(st, "k", buf, sizeof(buf)), 1);
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_set_meta(st, "k", "2"), 0);
	assert_int_equal(store_commit(st), 0);
	kill_sessions(loc(".reconnect"));
	assert_int_equal(store_get_meta(st, "k", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "2");
	kill_sessions(loc(".reconnect"));
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_audit(st, "tester", "issue", "CN=a", "a"), 0);
	assert_int_equal(store_commit(st), 0);
	store_close(st);
}

/* PostgreSQL: an empty database is not an inventory, a foreign one is not made one. */
static void test_not_an_inventory_pg(void **state)
{
	char err[512] = "";
	struct store *st;

	(void)state;
	if (!on_pg)
		skip();
	assert_null(store_open(loc(".empty"), false, err, sizeof(err)));
	assert_non_null(strstr(err, "is not a usable CA inventory"));
	assert_int_equal(raw(".foreign", "CREATE TABLE certs (id int)"), 0);
	assert_null(store_open(loc(".foreign"), true, err, sizeof(err)));
	assert_non_null(strstr(err, "already holds a CA inventory"));
	assert_null(store_open(loc(".foreign"), false, err, sizeof(err)));
	assert_non_null(strstr(err, "is not a usable CA inventory"));
	/* an inventory made and never written (an init that failed after making the tables)
	 * is told apart */
	st = store_open(loc(".unused"), true, err, sizeof(err));
	assert_non_null(st);
	store_close(st);
	assert_null(store_open(loc(".unused"), true, err, sizeof(err)));
	assert_non_null(strstr(err, "already holds an empty CA inventory"));
}

static void test_not_a_database(void **state)
{
	char err[256] = "";
	char path[300];
	FILE *f;

	(void)state;
	if (on_pg)
		skip();
	snprintf(path, sizeof(path), "%s.garbage", dbpath);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("this is not a database, and it is long enough to look like a header........\n", f);
	fclose(f);
	assert_null(store_open(path, false, err, sizeof(err)));
	assert_non_null(strstr(err, "not a usable"));
	/* an empty file is not an inventory either: it must not become a fresh, empty one */
	f = fopen(path, "w");
	assert_non_null(f);
	fclose(f);
	assert_null(store_open(path, false, err, sizeof(err)));
	assert_non_null(strstr(err, "not a usable"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_store),
		cmocka_unit_test(test_audit_tamper),
		cmocka_unit_test(test_check),
		cmocka_unit_test(test_crl_numbers),
		cmocka_unit_test(test_triggers),
		cmocka_unit_test(test_triggers_pg),
		cmocka_unit_test(test_tokens),
		cmocka_unit_test(test_crl_der),
		cmocka_unit_test(test_token_race),
		cmocka_unit_test(test_crl_number_wait),
		cmocka_unit_test(test_crl_race),
		cmocka_unit_test(test_url),
		cmocka_unit_test(test_reconnect_pg),
		cmocka_unit_test(test_not_a_database),
		cmocka_unit_test(test_not_an_inventory_pg),
	};
	int failed = cmocka_run_group_tests_name("sqlite", tests, setup, teardown);

	pg_base = getenv("MTLS_TEST_PG_URL");
	if (pg_base != NULL && pg_base[0] != '\0')
		failed += cmocka_run_group_tests_name("postgresql", tests, setup_pg, teardown);
	return failed;
}
