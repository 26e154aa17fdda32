/*
 * The CA inventory in SQLite: one file, WAL journal, synchronous=FULL, mode 0600.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <sqlite3.h>

#include "store.h"

struct store {
	sqlite3 *db;
	char err[512];
	sqlite3_stmt *get; /* statement behind the strings of the last store_get_cert() */
};

static const char schema[] =
	"CREATE TABLE IF NOT EXISTS meta ("
	"  key TEXT PRIMARY KEY, value TEXT NOT NULL);"
	"CREATE TABLE IF NOT EXISTS certs ("
	"  serial TEXT PRIMARY KEY,"
	"  subject TEXT NOT NULL,"
	"  sans TEXT NOT NULL,"
	"  spki_sha256 TEXT NOT NULL,"
	"  profile TEXT NOT NULL,"
	"  not_before INTEGER NOT NULL,"
	"  not_after INTEGER NOT NULL,"
	"  issued_at INTEGER NOT NULL,"
	"  status TEXT NOT NULL DEFAULT 'valid' CHECK (status IN ('valid', 'revoked')),"
	"  revoked_at INTEGER,"
	"  revocation_reason TEXT,"
	"  der BLOB NOT NULL);"
	"CREATE INDEX IF NOT EXISTS certs_not_after ON certs (not_after);"
	"CREATE TABLE IF NOT EXISTS crls ("
	"  number INTEGER PRIMARY KEY, this_update INTEGER NOT NULL,"
	"  next_update INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS audit ("
	"  seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, actor TEXT NOT NULL,"
	"  action TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL,"
	"  prev_hash TEXT NOT NULL, hash TEXT NOT NULL);"
	/* append-only: the database itself refuses edits of the audit log */
	"CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit"
	"  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;"
	"CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit"
	"  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;";

/* A full disk (or quota) is not a damaged inventory: say so, and that nothing changed (every
 * caller rolls its transaction back). */
static bool disk_full(sqlite3 *db)
{
	int code = sqlite3_errcode(db);

	return code == SQLITE_FULL ||
	       ((code == SQLITE_IOERR || code == SQLITE_CANTOPEN) &&
		(sqlite3_system_errno(db) == ENOSPC || sqlite3_system_errno(db) == EDQUOT));
}

static int fail(struct store *st, const char *what)
{
	if (disk_full(st->db))
		snprintf(
			st->err, sizeof(st->err),
			"disk full while updating the CA inventory (%s): nothing was changed; free "
			"space and run the command again",
			what);
	else
		snprintf(st->err, sizeof(st->err), "CA inventory: %s: %s", what,
			 sqlite3_errmsg(st->db));
	return -1;
}

const char *store_error(const struct store *st)
{
	return st->err;
}

/* Does the database hold our tables? 1 yes, 0 no (or not a database), -1 it could not be
 * read for another reason (a full disk, I/O), which says nothing about its contents. */
static int is_inventory(struct store *st)
{
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(st->db,
				    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND "
				    "name IN ('meta', 'certs', 'crls', 'audit')",
				    -1, &s, NULL),
	    ok = 0;

	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		ok = sqlite3_column_int(s, 0) == 4;
	sqlite3_finalize(s);
	if (rc == SQLITE_ROW || rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT)
		return ok;
	return -1;
}

struct store *store_open(const char *path, bool create, char *err, size_t err_len)
{
	struct store *st = calloc(1, sizeof(*st));
	int fd, inventory = 1;
	bool pragmas;

	if (st == NULL) {
		snprintf(err, err_len, "out of memory");
		return NULL;
	}
	/* create the file 0600 ourselves: SQLite would honour the umask */
	fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT | O_EXCL : 0), 0600);
	if (fd < 0) {
		snprintf(err, err_len, "cannot open CA inventory %s: %s", path, strerror(errno));
		free(st);
		return NULL;
	}
	close(fd);
	if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW, NULL) !=
	    SQLITE_OK) {
		snprintf(err, err_len, "cannot open CA inventory %s: %s", path,
			 st->db != NULL ? sqlite3_errmsg(st->db) : "out of memory");
		store_close(st);
		return NULL;
	}
	sqlite3_busy_timeout(st->db, 30000);
	pragmas = sqlite3_exec(st->db,
			       "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; "
			       "PRAGMA foreign_keys=ON;",
			       NULL, NULL, NULL) == SQLITE_OK;
	if (!pragmas && !disk_full(st->db))
		inventory = 0;
	else if (!create)
		inventory = is_inventory(st);
	if (inventory < 0 || (!pragmas && disk_full(st->db))) {
		if (disk_full(st->db))
			snprintf(
				err, err_len,
				"disk full while opening the CA inventory %s: nothing was changed; "
				"free space and run the command again",
				path);
		else
			snprintf(err, err_len, "cannot read the CA inventory %s: %s", path,
				 sqlite3_errmsg(st->db));
		store_close(st);
		return NULL;
	}
	if ((create && (!pragmas || sqlite3_exec(st->db, schema, NULL, NULL, NULL) != SQLITE_OK)) ||
	    (!create && inventory == 0)) {
		snprintf(err, err_len,
			 "CA inventory %s is not a usable CA inventory (%s); restore it from a "
			 "backup",
			 path, create ? sqlite3_errmsg(st->db) : "tables missing or unreadable");
		store_close(st);
		return NULL;
	}
	return st;
}

void store_close(struct store *st)
{
	if (st == NULL)
		return;
	sqlite3_finalize(st->get);
	sqlite3_close(st->db);
	free(st);
}

int store_begin(struct store *st)
{
	return sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK
		       ? 0
		       : fail(st, "begin");
}

int store_commit(struct store *st)
{
	return sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK ? 0
									     : fail(st, "commit");
}

void store_rollback(struct store *st)
{
	sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
}

static sqlite3_stmt *prepare(struct store *st, const char *sql)
{
	sqlite3_stmt *stmt = NULL;

	if (sqlite3_prepare_v2(st->db, sql, -1, &stmt, NULL) != SQLITE_OK) {
		fail(st, "prepare");
		return NULL;
	}
	return stmt;
}

int store_add_cert(struct store *st, const struct store_cert *c)
{
	sqlite3_stmt *s = prepare(st, "INSERT INTO certs (serial, subject, sans, spki_sha256, "
				      "profile, not_before, not_after, issued_at, der) "
				      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
	int rc;

	if (s == NULL)
		return -1;
	sqlite3_bind_text(s, 1, c->serial, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, c->subject, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, c->sans, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 4, c->spki_sha256, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 5, c->profile, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 6, c->not_before);
	sqlite3_bind_int64(s, 7, c->not_after);
	sqlite3_bind_int64(s, 8, c->issued_at);
	sqlite3_bind_blob(s, 9, c->der, (int)c->der_len, SQLITE_STATIC);
	rc = sqlite3_step(s);
	sqlite3_finalize(s);
	if (rc == SQLITE_DONE)
		return 0;
	if (rc == SQLITE_CONSTRAINT)
		return 1;
	return fail(st, "add certificate");
}

int store_revoke(struct store *st, const char *serial, const char *reason, time_t when)
{
	sqlite3_stmt *s =
		prepare(st, "UPDATE certs SET status = 'revoked', revoked_at = ?, "
			    "revocation_reason = ? WHERE serial = ? AND status = 'valid'");
	struct store_cert c;
	int rc;

	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, when);
	sqlite3_bind_text(s, 2, reason, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, serial, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	sqlite3_finalize(s);
	if (rc != SQLITE_DONE)
		return fail(st, "revoke");
	if (sqlite3_changes(st->db) == 1)
		return 0;
	rc = store_get_cert(st, serial, &c);
	return rc == 0 ? 2 : rc;
}

static void row_to_cert(sqlite3_stmt *s, struct store_cert *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->serial, sizeof(c->serial), "%s", (const char *)sqlite3_column_text(s, 0));
	c->subject = (const char *)sqlite3_column_text(s, 1);
	c->sans = (const char *)sqlite3_column_text(s, 2);
	c->spki_sha256 = (const char *)sqlite3_column_text(s, 3);
	c->profile = (const char *)sqlite3_column_text(s, 4);
	c->not_before = (time_t)sqlite3_column_int64(s, 5);
	c->not_after = (time_t)sqlite3_column_int64(s, 6);
	c->issued_at = (time_t)sqlite3_column_int64(s, 7);
	c->revoked = strcmp((const char *)sqlite3_column_text(s, 8), "revoked") == 0;
	c->revoked_at = (time_t)sqlite3_column_int64(s, 9);
	c->revocation_reason = (const char *)sqlite3_column_text(s, 10);
	c->der = sqlite3_column_blob(s, 11);
	c->der_len = (size_t)sqlite3_column_bytes(s, 11);
}

#define CERT_COLUMNS                                                                               \
	"serial, subject, sans, spki_sha256, profile, not_before, not_after, issued_at, "          \
	"status, revoked_at, revocation_reason, der"

int store_get_cert(struct store *st, const char *serial, struct store_cert *out)
{
	int rc;

	sqlite3_finalize(st->get);
	st->get = prepare(st, "SELECT " CERT_COLUMNS " FROM certs WHERE serial = ?");
	if (st->get == NULL)
		return -1;
	sqlite3_bind_text(st->get, 1, serial, -1, SQLITE_TRANSIENT);
	rc = sqlite3_step(st->get);
	if (rc == SQLITE_ROW) {
		row_to_cert(st->get, out);
		return 0;
	}
	return rc == SQLITE_DONE ? 1 : fail(st, "look up certificate");
}

int store_each_cert(struct store *st, enum store_filter filter, time_t before,
		    int (*fn)(const struct store_cert *, void *), void *arg)
{
	static const char *const where[] = {
		[STORE_ALL] = "1",
		[STORE_VALID] = "status = 'valid' AND not_after > ?1",
		[STORE_REVOKED] = "status = 'revoked'",
		[STORE_EXPIRING] = "status = 'valid' AND not_after <= ?1",
	};
	char sql[256];
	sqlite3_stmt *s;
	struct store_cert c;
	int rc;

	snprintf(sql, sizeof(sql), "SELECT " CERT_COLUMNS " FROM certs WHERE %s ORDER BY not_after",
		 where[filter]);
	s = prepare(st, sql);
	if (s == NULL)
		return -1;
	if (filter == STORE_VALID || filter == STORE_EXPIRING)
		sqlite3_bind_int64(s, 1, filter == STORE_VALID ? time(NULL) : before);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		row_to_cert(s, &c);
		if (fn(&c, arg) != 0) {
			rc = SQLITE_DONE;
			break;
		}
	}
	sqlite3_finalize(s);
	return rc == SQLITE_DONE ? 0 : fail(st, "list certificates");
}

int store_next_crl_number(struct store *st, time_t this_update, time_t next_update, int64_t *number)
{
	sqlite3_stmt *s = prepare(st, "INSERT INTO crls (number, this_update, next_update) "
				      "SELECT COALESCE(MAX(number), 0) + 1, ?, ? FROM crls "
				      "RETURNING number");
	int rc;

	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, this_update);
	sqlite3_bind_int64(s, 2, next_update);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*number = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return rc == SQLITE_ROW ? 0 : fail(st, "allocate CRL number");
}

int store_set_meta(struct store *st, const char *key, const char *value)
{
	sqlite3_stmt *s = prepare(st, "INSERT INTO meta (key, value) VALUES (?, ?) "
				      "ON CONFLICT (key) DO UPDATE SET value = excluded.value");
	int rc;

	if (s == NULL)
		return -1;
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, value, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	sqlite3_finalize(s);
	return rc == SQLITE_DONE ? 0 : fail(st, "set setting");
}

int store_get_meta(struct store *st, const char *key, char *buf, size_t len)
{
	sqlite3_stmt *s = prepare(st, "SELECT value FROM meta WHERE key = ?");
	int rc;

	if (s == NULL)
		return -1;
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		snprintf(buf, len, "%s", (const char *)sqlite3_column_text(s, 0));
	sqlite3_finalize(s);
	if (rc == SQLITE_ROW)
		return 0;
	return rc == SQLITE_DONE ? 1 : fail(st, "get setting");
}

/* sha256(prev | seq | at | actor | action | subject | detail), hex. Fields are length-
 * prefixed so that no two different entries hash the same input. */
static void audit_hash(const char *prev, int64_t seq, int64_t at, const char *actor,
		       const char *action, const char *subject, const char *detail, char out[65])
{
	const char *fields[] = {prev, actor, action, subject, detail};
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char digest[32];
	unsigned int n = 0;
	char num[64];

	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	snprintf(num, sizeof(num), "%lld:%lld:", (long long)seq, (long long)at);
	EVP_DigestUpdate(md, num, strlen(num));
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		snprintf(num, sizeof(num), "%zu:", strlen(fields[i]));
		EVP_DigestUpdate(md, num, strlen(num));
		EVP_DigestUpdate(md, fields[i], strlen(fields[i]));
	}
	EVP_DigestFinal_ex(md, digest, &n);
	EVP_MD_CTX_free(md);
	for (unsigned i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", digest[i]);
}

static const char genesis[] = "0000000000000000000000000000000000000000000000000000000000000000";

int store_audit(struct store *st, const char *actor, const char *action, const char *subject,
		const char *detail)
{
	sqlite3_stmt *s = prepare(st, "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1");
	char prev[65], hash[65];
	int64_t seq = 1;
	time_t at = time(NULL);
	int rc;

	if (s == NULL)
		return -1;
	snprintf(prev, sizeof(prev), "%s", genesis);
	if (sqlite3_step(s) == SQLITE_ROW) {
		seq = sqlite3_column_int64(s, 0) + 1;
		snprintf(prev, sizeof(prev), "%s", (const char *)sqlite3_column_text(s, 1));
	}
	sqlite3_finalize(s);
	audit_hash(prev, seq, at, actor, action, subject, detail, hash);
	s = prepare(st, "INSERT INTO audit (seq, at, actor, action, subject, detail, prev_hash, "
			"hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, seq);
	sqlite3_bind_int64(s, 2, at);
	sqlite3_bind_text(s, 3, actor, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 4, action, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 5, subject, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 6, detail, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 7, prev, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 8, hash, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	sqlite3_finalize(s);
	return rc == SQLITE_DONE ? 0 : fail(st, "append to the audit log");
}

/* Walk the chain in order, calling fn (if not NULL) for each entry whose hash checks out.
 * 0 intact, 1 broken (*bad_seq), 2 fn said stop, -1 error. */
static int audit_walk(struct store *st, int64_t *count, int64_t *bad_seq,
		      int (*fn)(sqlite3_stmt *row, void *arg), void *arg)
{
	sqlite3_stmt *s = prepare(st, "SELECT seq, at, actor, action, subject, detail, prev_hash, "
				      "hash FROM audit ORDER BY seq");
	char prev[65], hash[65];
	int64_t expect_seq = 1;
	int rc;

	if (s == NULL)
		return -1;
	*count = 0;
	snprintf(prev, sizeof(prev), "%s", genesis);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		int64_t seq = sqlite3_column_int64(s, 0);
		const char *stored_prev = (const char *)sqlite3_column_text(s, 6);
		const char *stored_hash = (const char *)sqlite3_column_text(s, 7);

		audit_hash(prev, seq, sqlite3_column_int64(s, 1),
			   (const char *)sqlite3_column_text(s, 2),
			   (const char *)sqlite3_column_text(s, 3),
			   (const char *)sqlite3_column_text(s, 4),
			   (const char *)sqlite3_column_text(s, 5), hash);
		if (seq != expect_seq || strcmp(stored_prev, prev) != 0 ||
		    strcmp(stored_hash, hash) != 0) {
			*bad_seq = seq != expect_seq ? expect_seq : seq;
			sqlite3_finalize(s);
			return 1;
		}
		if (fn != NULL && fn(s, arg) != 0) {
			sqlite3_finalize(s);
			return 2;
		}
		snprintf(prev, sizeof(prev), "%s", hash);
		expect_seq++;
		(*count)++;
	}
	sqlite3_finalize(s);
	return rc == SQLITE_DONE ? 0 : fail(st, "read the audit log");
}

int store_audit_verify(struct store *st, int64_t *count, int64_t *bad_seq)
{
	return audit_walk(st, count, bad_seq, NULL, NULL);
}

/* ------------------------------------------------------------------------------------------
 * CRLs in the audit log: "CRL 12, 3 revoked, sha256 <64 hex digits>"
 */

static int64_t max_crl_number(struct store *st)
{
	sqlite3_stmt *s = prepare(st, "SELECT COALESCE(MAX(number), 0) FROM crls");
	int64_t n = -1;

	if (s != NULL && sqlite3_step(s) == SQLITE_ROW)
		n = sqlite3_column_int64(s, 0);
	else if (s != NULL)
		fail(st, "read the CRL numbers");
	sqlite3_finalize(s);
	return n;
}

int store_crl_next(struct store *st, int64_t floor, int64_t *number)
{
	int64_t max = max_crl_number(st);

	if (max < 0)
		return -1;
	*number = (max > floor ? max : floor) + 1;
	return 0;
}

int store_crl_add(struct store *st, int64_t number, time_t this_update, time_t next_update,
		  size_t revoked, const char *sha256, const char *actor)
{
	sqlite3_stmt *s = prepare(st, "INSERT INTO crls (number, this_update, next_update) "
				      "VALUES (?, ?, ?)");
	char detail[160];
	int rc;

	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, number);
	sqlite3_bind_int64(s, 2, this_update);
	sqlite3_bind_int64(s, 3, next_update);
	rc = sqlite3_step(s);
	sqlite3_finalize(s);
	if (rc != SQLITE_DONE)
		return fail(st, "record the CRL");
	snprintf(detail, sizeof(detail), "CRL %lld, %zu revoked, sha256 %s", (long long)number,
		 revoked, sha256);
	return store_audit(st, actor, "crl", "", detail);
}
