/*
 * The CA inventory: certificates, revocation, CRL numbers, settings, and the audit chain
 * (including tampering done behind the store's back).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "store.h"

static char dbpath[256];

static int setup(void **state)
{
	char dir[] = "/tmp/mtls-store-XXXXXX";

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(dbpath, sizeof(dbpath), "%s/ca.db", dir);
	return 0;
}

static int teardown(void **state)
{
	char cmd[300];

	(void)state;
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
	struct store *st = store_open(dbpath, true, err, sizeof(err));
	struct store_cert c = cert("0A", time(NULL) + 100), got;
	struct stat sb;
	int64_t n = 0, entries = 0, bad = 0;
	int seen = 0;
	char buf[64];

	(void)state;
	assert_non_null(st);
	store_close(st);
	/* once made, a store is opened, not made again */
	assert_null(store_open(dbpath, true, err, sizeof(err)));
	st = store_open(dbpath, false, err, sizeof(err));
	assert_non_null(st);
	assert_int_equal(stat(dbpath, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
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
	sqlite3 *db;
	int64_t entries = 0, bad = 0;

	(void)state;
	st = store_open(dbpath, false, err, sizeof(err));
	assert_non_null(st);
	assert_int_equal(store_begin(st), 0);
	for (int i = 0; i < 5; i++)
		assert_int_equal(store_audit(st, "tester", "issue", "CN=y", "detail"), 0);
	assert_int_equal(store_commit(st), 0);
	store_close(st);

	assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
	/* the database refuses edits of the audit log... */
	assert_int_not_equal(
		sqlite3_exec(db, "UPDATE audit SET detail = 'forged' WHERE seq = 3", 0, 0, 0),
		SQLITE_OK);
	assert_int_not_equal(sqlite3_exec(db, "DELETE FROM audit WHERE seq = 3", 0, 0, 0),
			     SQLITE_OK);
	/* ...and someone who removes that guard is caught by the hash chain */
	assert_int_equal(sqlite3_exec(db,
				      "DROP TRIGGER audit_no_update; "
				      "UPDATE audit SET detail = 'forged' WHERE seq = 3",
				      0, 0, 0),
			 SQLITE_OK);
	sqlite3_close(db);

	st = store_open(dbpath, false, err, sizeof(err));
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
	char err[256], what[512], path[300], got[65];
	struct store_check chk;
	struct store_cert c;
	struct store *st;
	sqlite3 *db;
	int64_t n = 0;

	(void)state;
	snprintf(path, sizeof(path), "%s.check", dbpath);
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
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db,
				      "UPDATE certs SET status = 'valid', revoked_at = NULL, "
				      "revocation_reason = NULL WHERE serial IN ('0A', '0C')",
				      0, 0, 0),
			 SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(store_check(st, &chk, what, sizeof(what)), 2);
	assert_string_equal(what,
			    "inventory and audit log disagree on serial 0A (table: valid, log: "
			    "revoked keyCompromise at 1970-01-12T13:46:40Z); the inventory was "
			    "altered; restore it from a backup or investigate");

	/* its time changed */
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db,
				      "UPDATE certs SET status = 'revoked', revoked_at = 1000001, "
				      "revocation_reason = 'keyCompromise' WHERE serial = '0A'",
				      0, 0, 0),
			 SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(store_check(st, &chk, what, sizeof(what)), 2);
	assert_non_null(strstr(what, "(table: revoked keyCompromise at 1970-01-12T13:46:41Z, log: "
				     "revoked keyCompromise at 1970-01-12T13:46:40Z)"));

	/* a revoke entry in a form the store never writes */
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db,
				      "UPDATE certs SET revoked_at = 1000000 WHERE serial = '0A'",
				      0, 0, 0),
			 SQLITE_OK);
	sqlite3_close(db);
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
	char err[256], what[512], path[300];
	struct store_check chk;
	struct store *st;
	sqlite3 *db;
	int64_t n = 0;

	(void)state;
	snprintf(path, sizeof(path), "%s.crls", dbpath);
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
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "DELETE FROM crls WHERE number >= 2", 0, 0, 0),
			 SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(store_check(st, &chk, what, sizeof(what)), 2);
	assert_non_null(strstr(what, "the audit log records CRL #2 but the inventory's CRL table "
				     "does not"));
	assert_int_equal(store_crl_next(st, 0, &n), 0);
	assert_int_equal(n, 4);
	assert_int_equal(store_crl_next(st, 9, &n), 0); /* a crl.pem #9 on disk */
	assert_int_equal(n, 10);

	/* a row the log does not record */
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "INSERT INTO crls VALUES (2, 1, 2), (3, 1, 2), (4, 1, 2)",
				      0, 0, 0),
			 SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(store_check(st, &chk, what, sizeof(what)), 2);
	assert_non_null(strstr(what, "the inventory's CRL table holds CRL #4, which the audit log "
				     "does not record"));

	/* the same number logged again (as after an emptied table, before the fix) */
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "DELETE FROM crls WHERE number = 4", 0, 0, 0), SQLITE_OK);
	sqlite3_close(db);
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
	char err[256], what[512], path[300];
	struct store_check chk;
	struct store *st;
	sqlite3 *db;

	(void)state;
	snprintf(path, sizeof(path), "%s.triggers", dbpath);
	st = store_open(path, true, err, sizeof(err));
	assert_non_null(st);
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_audit(st, "tester", "issue", "CN=a", "a"), 0);
	assert_int_equal(store_audit(st, "tester", "issue", "CN=b", "b"), 0);
	assert_int_equal(store_commit(st), 0);
	assert_int_equal(store_check(st, &chk, what, sizeof(what)), 0);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(
		sqlite3_exec(db, "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq = 2", 0,
			     0, 0),
		SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(store_check(st, &chk, what, sizeof(what)), 2);
	assert_non_null(strstr(what, "append-only trigger audit_no_delete was dropped"));
	store_close(st);
}

static void test_not_a_database(void **state)
{
	char err[256] = "";
	char path[300];
	FILE *f;

	(void)state;
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
		cmocka_unit_test(test_store),	 cmocka_unit_test(test_audit_tamper),
		cmocka_unit_test(test_check),	 cmocka_unit_test(test_crl_numbers),
		cmocka_unit_test(test_triggers), cmocka_unit_test(test_not_a_database),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
