/*
 * The CA inventory in SQLite: one file, WAL journal, synchronous=FULL, mode 0600.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "audit_log.h"
#include "store_backend.h"

struct store_sqlite {
	sqlite3 *db;
	char path[PATH_MAX]; /* for messages: which disk is full */
	char err[PATH_MAX + 512];
	sqlite3_stmt *get; /* statement behind the strings of the last store_sqlite_get_cert() */
	char *token;	   /* the strings of the last store_sqlite_token_take() */
	/* what the last failure was (store_sqlite_error_kind()) */
	enum store_failure failure;
};

/* The append-only triggers, as SQLite records them (sqlite_master.sql drops "IF NOT
 * EXISTS"): store_sqlite_check() compares them with these. */
#define TRIGGER_NO_UPDATE                                                                          \
	"audit_no_update BEFORE UPDATE ON audit  BEGIN SELECT RAISE(ABORT, 'the audit log is "     \
	"append-only'); END"
#define TRIGGER_NO_DELETE                                                                          \
	"audit_no_delete BEFORE DELETE ON audit  BEGIN SELECT RAISE(ABORT, 'the audit log is "     \
	"append-only'); END"

/* Enrollment tokens (ca/token.h): the SHA-256 of the secret, never the secret. Newer than the
 * other tables: an inventory made before it gains it when opened for writing. */
#define TOKENS_SCHEMA                                                                              \
	"CREATE TABLE IF NOT EXISTS tokens ("                                                      \
	"  hash TEXT PRIMARY KEY,"                                                                 \
	"  profile TEXT NOT NULL CHECK (profile IN ('server', 'client', 'peer')),"                 \
	"  cn TEXT NOT NULL,"                                                                      \
	"  names TEXT NOT NULL,"                                                                   \
	"  created_at INTEGER NOT NULL,"                                                           \
	"  not_after INTEGER NOT NULL,"                                                            \
	"  used_at INTEGER,"                                                                       \
	"  used_serial TEXT NOT NULL DEFAULT '');"

/* The newest signed CRL (DER), which every node can serve (store_crl_der_put()). Newer than
 * the other tables too. */
#define CRL_DER_SCHEMA                                                                             \
	"CREATE TABLE IF NOT EXISTS crl_der (number INTEGER PRIMARY KEY, der BLOB NOT NULL);"

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
	"CREATE INDEX IF NOT EXISTS certs_spki ON certs (spki_sha256);"
	"CREATE TABLE IF NOT EXISTS crls ("
	"  number INTEGER PRIMARY KEY, this_update INTEGER NOT NULL,"
	"  next_update INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS audit ("
	"  seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, actor TEXT NOT NULL,"
	"  action TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL,"
	"  prev_hash TEXT NOT NULL, hash TEXT NOT NULL);"
	/* append-only: the database itself refuses edits of the audit log */
	"CREATE TRIGGER IF NOT EXISTS " TRIGGER_NO_UPDATE ";"
	"CREATE TRIGGER IF NOT EXISTS " TRIGGER_NO_DELETE ";" TOKENS_SCHEMA CRL_DER_SCHEMA;

/* A full disk (or quota) is not a damaged inventory: say so, and that nothing changed (every
 * caller rolls its transaction back). */
static bool disk_full(sqlite3 *db)
{
	int code = sqlite3_errcode(db);

	return code == SQLITE_FULL ||
	       ((code == SQLITE_IOERR || code == SQLITE_CANTOPEN) &&
		(sqlite3_system_errno(db) == ENOSPC || sqlite3_system_errno(db) == EDQUOT));
}

/* How to say it: a quota is not a full disk (df shows room there). */
static bool quota(sqlite3 *db)
{
	return sqlite3_system_errno(db) == EDQUOT;
}
#define FULL(db) (quota(db) ? "disk quota exceeded" : "disk full")
#define ROOM(db)                                                                                   \
	(quota(db) ? "free space within the quota or have it raised, and run the command again"    \
		   : "free space and run the command again")

static int fail(struct store_sqlite *st, const char *what)
{
	int code = sqlite3_errcode(st->db) & 0xff; /* the primary code */

	st->failure = disk_full(st->db) ? STORE_FAIL_FULL
		      : code == SQLITE_BUSY || code == SQLITE_LOCKED || code == SQLITE_READONLY
			      ? STORE_FAIL_UNAVAILABLE
			      : STORE_FAIL_OTHER;
	if (disk_full(st->db))
		snprintf(st->err, sizeof(st->err),
			 "%s while updating the CA inventory %s (%s): nothing was changed; %s",
			 FULL(st->db), st->path, what, ROOM(st->db));
	else
		snprintf(st->err, sizeof(st->err), "CA inventory: %s: %s", what,
			 sqlite3_errmsg(st->db));
	return -1;
}

const char *store_sqlite_error(const struct store_sqlite *st)
{
	return st->err;
}

enum store_failure store_sqlite_error_kind(const struct store_sqlite *st)
{
	return st->failure;
}

/* Does the database hold our tables? 1 yes, 0 no (or not a database), -1 it could not be
 * read for another reason (a full disk, I/O), which says nothing about its contents. */
static int is_inventory(struct store_sqlite *st)
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

/* store_sqlite_open(); with in_memory_index, the database file stays locked while open, so that
 * SQLite keeps the WAL index in memory instead of in the ca.db-shm file (32 KiB) that it
 * must otherwise create or grow. *full says that the disk is full. */
static struct store_sqlite *open_store(const char *path, bool create, bool in_memory_index,
				       bool *full, char *err, size_t err_len)
{
	struct store_sqlite *st = calloc(1, sizeof(*st));
	int fd, inventory = 1;
	bool pragmas;

	*full = false;
	if (st != NULL)
		snprintf(st->path, sizeof(st->path), "%s", path);
	if (st == NULL) {
		snprintf(err, err_len, "out of memory");
		return NULL;
	}
	/* create the file 0600 ourselves: SQLite would honour the umask */
	fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT | O_EXCL : 0), 0600);
	/* 0600 whatever the umask took away (0400 under umask 277: read-only for us) */
	if (fd >= 0 && create && fchmod(fd, 0600) != 0) {
		close(fd);
		fd = -1;
	}
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
		store_sqlite_close(st);
		return NULL;
	}
	sqlite3_busy_timeout(st->db, 30000);
	/* before the first read: SQLite picks the index's place when it opens the WAL */
	pragmas = (!in_memory_index || sqlite3_exec(st->db, "PRAGMA locking_mode=EXCLUSIVE", NULL,
						    NULL, NULL) == SQLITE_OK) &&
		  sqlite3_exec(st->db,
			       "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; "
			       "PRAGMA foreign_keys=ON;",
			       NULL, NULL, NULL) == SQLITE_OK;
	if (!pragmas && !disk_full(st->db))
		inventory = 0;
	else if (!create)
		inventory = is_inventory(st);
	if (inventory < 0 || (!pragmas && disk_full(st->db))) {
		*full = disk_full(st->db);
		if (*full)
			snprintf(err, err_len,
				 "%s while opening the CA inventory %s: nothing was changed; %s",
				 FULL(st->db), path, ROOM(st->db));
		else
			snprintf(err, err_len, "cannot read the CA inventory %s: %s", path,
				 sqlite3_errmsg(st->db));
		store_sqlite_close(st);
		return NULL;
	}
	if ((create && (!pragmas || sqlite3_exec(st->db, schema, NULL, NULL, NULL) != SQLITE_OK)) ||
	    (!create && inventory == 0)) {
		/* a new inventory that could not be written is not a damaged one: there is no
		 * backup of it to restore */
		if (create && disk_full(st->db)) {
			*full = true;
			snprintf(err, err_len, "%s while creating the CA inventory %s: %s",
				 FULL(st->db), path, ROOM(st->db));
		} else if (create) {
			snprintf(err, err_len, "cannot create the CA inventory %s: %s", path,
				 sqlite3_errmsg(st->db));
		} else {
			snprintf(err, err_len,
				 "CA inventory %s is not a usable CA inventory (tables missing or "
				 "unreadable); restore it from a backup",
				 path);
		}
		store_sqlite_close(st);
		return NULL;
	}
	return st;
}

struct store_sqlite *store_sqlite_open(const char *path, bool create, char *err, size_t err_len)
{
	bool full;
	struct store_sqlite *st = open_store(path, create, false, &full, err, err_len);

	/* An inventory older than the tokens table gains it here. Not a reason to refuse the
	 * open (a full disk): the token functions create it too, or say why they cannot. */
	if (st != NULL && !create)
		sqlite3_exec(st->db, TOKENS_SCHEMA CRL_DER_SCHEMA, NULL, NULL, NULL);
	return st;
}

struct store_sqlite *store_sqlite_open_read(const char *path, char *err, size_t err_len)
{
	bool full;
	struct store_sqlite *st = open_store(path, false, false, &full, err, err_len);

	/* A full disk cannot hold the shared WAL index: lock the file for the short while a
	 * read takes instead (writers wait; none could commit on this disk anyway). */
	if (st == NULL && full)
		st = open_store(path, false, true, &full, err, err_len);
	return st;
}

void store_sqlite_close(struct store_sqlite *st)
{
	if (st == NULL)
		return;
	sqlite3_finalize(st->get);
	sqlite3_close(st->db);
	free(st->token);
	free(st);
}

/* The last store_get_cert()'s statement, left on its row so that the strings it gave stay
 * valid, holds a read snapshot of the database: in a process that keeps the store open (mtls
 * ca serve), the next BEGIN IMMEDIATE after another process wrote (mtls ca issue) would then
 * fail at once with "database is locked" (a stale snapshot cannot become a writer). A
 * transaction's start and end are store calls, so the strings may end there. */
static void release_get(struct store_sqlite *st)
{
	if (st->get != NULL)
		sqlite3_reset(st->get);
}

int store_sqlite_begin(struct store_sqlite *st)
{
	release_get(st);
	return sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK
		       ? 0
		       : fail(st, "begin");
}

int store_sqlite_begin_read(struct store_sqlite *st)
{
	release_get(st);
	return sqlite3_exec(st->db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK ? 0 : fail(st, "begin");
}

int store_sqlite_commit(struct store_sqlite *st)
{
	release_get(st);
	return sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK ? 0
									     : fail(st, "commit");
}

void store_sqlite_rollback(struct store_sqlite *st)
{
	release_get(st);
	sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
}

static sqlite3_stmt *prepare(struct store_sqlite *st, const char *sql)
{
	sqlite3_stmt *stmt = NULL;

	if (sqlite3_prepare_v2(st->db, sql, -1, &stmt, NULL) != SQLITE_OK) {
		fail(st, "prepare");
		return NULL;
	}
	return stmt;
}

int store_sqlite_add_cert(struct store_sqlite *st, const struct store_cert *c)
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

int store_sqlite_revoke(struct store_sqlite *st, const char *serial, const char *reason,
			time_t when)
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
	rc = store_sqlite_get_cert(st, serial, &c);
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

int store_sqlite_get_cert(struct store_sqlite *st, const char *serial, struct store_cert *out)
{
	int rc;

	/* prepared once (an OCSP responder looks up every request): SQL parsing cost more than
	 * the look-up */
	if (st->get == NULL) {
		st->get = prepare(st, "SELECT " CERT_COLUMNS " FROM certs WHERE serial = ?");
		if (st->get == NULL)
			return -1;
	} else {
		sqlite3_reset(st->get);
		sqlite3_clear_bindings(st->get);
	}
	sqlite3_bind_text(st->get, 1, serial, -1, SQLITE_TRANSIENT);
	rc = sqlite3_step(st->get);
	if (rc == SQLITE_ROW) {
		row_to_cert(st->get, out);
		return 0;
	}
	return rc == SQLITE_DONE ? 1 : fail(st, "look up certificate");
}

int store_sqlite_key_compromised(struct store_sqlite *st, const char *spki_sha256, char serial[64])
{
	sqlite3_stmt *s = prepare(st, "SELECT serial FROM certs WHERE spki_sha256 = ? AND "
				      "status = 'revoked' AND revocation_reason = 'keyCompromise' "
				      "ORDER BY revoked_at LIMIT 1");
	int rc;

	if (s == NULL)
		return -1;
	sqlite3_bind_text(s, 1, spki_sha256, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		snprintf(serial, 64, "%s", (const char *)sqlite3_column_text(s, 0));
	sqlite3_finalize(s);
	if (rc == SQLITE_ROW)
		return 1;
	return rc == SQLITE_DONE ? 0 : fail(st, "look up the key");
}

int store_sqlite_each_cert(struct store_sqlite *st, enum store_filter filter, time_t before,
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

int store_sqlite_next_crl_number(struct store_sqlite *st, time_t this_update, time_t next_update,
				 int64_t *number)
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

int store_sqlite_set_meta(struct store_sqlite *st, const char *key, const char *value)
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

int store_sqlite_get_meta(struct store_sqlite *st, const char *key, char *buf, size_t len)
{
	sqlite3_stmt *s = prepare(st, "SELECT value FROM meta WHERE key = ?");
	int rc;

	if (s == NULL)
		return -1;
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW &&
	    snprintf(buf, len, "%s", (const char *)sqlite3_column_text(s, 0)) >= (int)len) {
		/* never a setting cut short (a URL that means something else) */
		st->failure = STORE_FAIL_OTHER;
		snprintf(st->err, sizeof(st->err),
			 "CA inventory: the setting %s is longer than %zu bytes; investigate", key,
			 len - 1);
		sqlite3_finalize(s);
		return -1;
	}
	sqlite3_finalize(s);
	if (rc == SQLITE_ROW)
		return 0;
	return rc == SQLITE_DONE ? 1 : fail(st, "get setting");
}

int store_sqlite_audit(struct store_sqlite *st, const char *actor, const char *action,
		       const char *subject, const char *detail)
{
	sqlite3_stmt *s = prepare(st, "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1");
	struct audit_log_entry e = {1, time(NULL), actor, action, subject, detail};
	char prev[65], hash[65];
	int rc;

	if (s == NULL)
		return -1;
	snprintf(prev, sizeof(prev), "%s", audit_log_genesis);
	if (sqlite3_step(s) == SQLITE_ROW) {
		e.seq = sqlite3_column_int64(s, 0) + 1;
		snprintf(prev, sizeof(prev), "%s", (const char *)sqlite3_column_text(s, 1));
	}
	sqlite3_finalize(s);
	audit_log_hash(prev, &e, hash);
	s = prepare(st, "INSERT INTO audit (seq, at, actor, action, subject, detail, prev_hash, "
			"hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, e.seq);
	sqlite3_bind_int64(s, 2, e.at);
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

#define TEXT(s, col) ((const char *)sqlite3_column_text(s, col))

/* Walk the chain in order, calling fn (if not NULL) for each entry whose hash checks out.
 * 0 intact (the last entry's hash in head, if not NULL; "" for an empty log), 1 broken
 * (*bad_seq), 2 fn said stop, -1 error. */
static int audit_walk(struct store_sqlite *st, int64_t *count, int64_t *bad_seq, char head[65],
		      int (*fn)(const struct audit_log_entry *e, void *arg), void *arg)
{
	sqlite3_stmt *s = prepare(st, "SELECT seq, at, actor, action, subject, detail, prev_hash, "
				      "hash FROM audit ORDER BY seq");
	struct audit_log_walk w;
	int rc, stop = 0;

	if (s == NULL)
		return -1;
	audit_log_walk_start(&w, count, bad_seq, fn, arg);
	while (stop == 0 && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct audit_log_entry e = {sqlite3_column_int64(s, 0),
					    sqlite3_column_int64(s, 1),
					    TEXT(s, 2),
					    TEXT(s, 3),
					    TEXT(s, 4),
					    TEXT(s, 5)};

		stop = audit_log_walk_next(&w, &e, TEXT(s, 6), TEXT(s, 7));
	}
	sqlite3_finalize(s);
	if (stop != 0)
		return stop;
	if (head != NULL)
		audit_log_walk_head(&w, head);
	return rc == SQLITE_DONE ? 0 : fail(st, "read the audit log");
}

int store_sqlite_audit_verify(struct store_sqlite *st, int64_t *count, int64_t *bad_seq)
{
	return audit_walk(st, count, bad_seq, NULL, NULL, NULL);
}

int store_sqlite_audit_hash(struct store_sqlite *st, int64_t seq, char hash[65])
{
	sqlite3_stmt *s = prepare(st, "SELECT hash FROM audit WHERE seq = ?");
	int rc;

	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, seq);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		snprintf(hash, 65, "%s", (const char *)sqlite3_column_text(s, 0));
	sqlite3_finalize(s);
	if (rc == SQLITE_ROW)
		return 0;
	return rc == SQLITE_DONE ? 1 : fail(st, "read the audit log");
}

/* ------------------------------------------------------------------------------------------
 * Revocations and CRLs in the audit log (their details: audit_log.h).
 */

int store_sqlite_revoke_audited(struct store_sqlite *st, const char *serial, const char *reason,
				time_t when, const char *actor)
{
	struct store_cert c;
	char detail[200], *subject;
	int rc = store_sqlite_revoke(st, serial, reason, when);

	if (rc != 0)
		return rc;
	if ((rc = store_sqlite_get_cert(st, serial, &c)) != 0)
		return rc < 0 ? rc : fail(st, "revoke");
	subject = strdup(c.subject);
	if (subject == NULL) {
		st->failure = STORE_FAIL_OTHER;
		snprintf(st->err, sizeof(st->err), "out of memory");
		return -1;
	}
	audit_log_revoke_detail(detail, sizeof(detail), serial, reason, when);
	rc = store_sqlite_audit(st, actor, "revoke", subject, detail);
	free(subject);
	return rc;
}

static int64_t max_crl_number(struct store_sqlite *st)
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

/* The highest CRL number the audit log records (0: none), or -1. */
static int64_t max_logged_crl(struct store_sqlite *st)
{
	sqlite3_stmt *s = prepare(st, "SELECT detail FROM audit WHERE action = 'crl'");
	char sha[65];
	int64_t max = 0, n;
	int rc;

	if (s == NULL)
		return -1;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW)
		if (audit_log_parse_crl(TEXT(s, 0), &n, sha) == 0 && n > max)
			max = n;
	sqlite3_finalize(s);
	return rc == SQLITE_DONE ? max : fail(st, "read the audit log");
}

int store_sqlite_crl_next(struct store_sqlite *st, int64_t floor, int64_t *number)
{
	int64_t table = max_crl_number(st), logged = table >= 0 ? max_logged_crl(st) : -1;

	if (table < 0 || logged < 0)
		return -1;
	*number = audit_log_crl_next(floor, table, logged);
	return 0;
}

int store_sqlite_crl_add(struct store_sqlite *st, int64_t number, time_t this_update,
			 time_t next_update, size_t revoked, const char *sha256, const char *actor)
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
	audit_log_crl_detail(detail, sizeof(detail), number, revoked, sha256);
	return store_sqlite_audit(st, actor, "crl", "", detail);
}

int store_sqlite_crl_logged(struct store_sqlite *st, int64_t number, char sha256[65])
{
	sqlite3_stmt *s = prepare(st, "SELECT detail FROM audit WHERE action = 'crl' AND "
				      "detail LIKE ? ORDER BY seq DESC");
	char like[40];
	int64_t n;
	int rc;

	if (s == NULL)
		return -1;
	audit_log_crl_like(like, sizeof(like), number);
	sqlite3_bind_text(s, 1, like, -1, SQLITE_TRANSIENT);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW)
		if (audit_log_parse_crl(TEXT(s, 0), &n, sha256) == 0 && n == number) {
			sqlite3_finalize(s);
			return 0;
		}
	sqlite3_finalize(s);
	return rc == SQLITE_DONE ? 1 : fail(st, "read the audit log");
}

/* ------------------------------------------------------------------------------------------
 * store_check() (audit_log_check()): what it reads of this database.
 */

static int check_walk(void *db, int64_t *count, int64_t *bad_seq, char head[65],
		      int (*fn)(const struct audit_log_entry *e, void *arg), void *arg)
{
	return audit_walk(db, count, bad_seq, head, fn, arg);
}

/* Are the append-only triggers in place, as the schema made them? Dropping them is the
 * first step of cutting back the log, which the chain alone cannot see. 0 yes, 2 no (what
 * says which), -1 error. */
static int check_triggers(void *db, char *what, size_t what_len)
{
	static const struct {
		const char *name, *sql;
	} want[] = {
		{"audit_no_update", "CREATE TRIGGER " TRIGGER_NO_UPDATE},
		{"audit_no_delete", "CREATE TRIGGER " TRIGGER_NO_DELETE},
	};
	struct store_sqlite *st = db;
	sqlite3_stmt *s = prepare(st, "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND "
				      "name = ? AND tbl_name = 'audit'");
	int rc = 0;

	if (s == NULL)
		return -1;
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]) && rc == 0; i++) {
		const char *sql;

		sqlite3_reset(s);
		sqlite3_bind_text(s, 1, want[i].name, -1, SQLITE_STATIC);
		rc = sqlite3_step(s);
		if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
			rc = fail(st, "read the schema");
			break;
		}
		sql = rc == SQLITE_ROW ? TEXT(s, 0) : NULL;
		rc = 0;
		if (sql != NULL && strcmp(sql, want[i].sql) == 0)
			continue;
		audit_log_trigger_altered(what, what_len, want[i].name,
					  sql == NULL ? "dropped" : "changed");
		rc = 2;
	}
	sqlite3_finalize(s);
	return rc;
}

static int64_t check_max_crl(void *db)
{
	return max_crl_number(db);
}

static int check_crl_numbers(void *db, int64_t from, int (*fn)(int64_t number, void *arg),
			     void *arg)
{
	struct store_sqlite *st = db;
	sqlite3_stmt *s = prepare(st, "SELECT number FROM crls WHERE number >= ? ORDER BY number");
	int rc, stop = 0;

	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, from);
	while (stop == 0 && (rc = sqlite3_step(s)) == SQLITE_ROW)
		stop = fn(sqlite3_column_int64(s, 0), arg);
	sqlite3_finalize(s);
	if (stop != 0)
		return stop;
	return rc == SQLITE_DONE ? 0 : fail(st, "read the CRL numbers");
}

static int check_get_cert(void *db, const char *serial, struct store_cert *out)
{
	return store_sqlite_get_cert(db, serial, out);
}

static int check_revoked(void *db,
			 int (*fn)(const char *serial, const char *reason, time_t at, void *arg),
			 void *arg)
{
	struct store_sqlite *st = db;
	sqlite3_stmt *s = prepare(st, "SELECT serial, revocation_reason, revoked_at FROM certs "
				      "WHERE status = 'revoked' ORDER BY serial");
	int rc, stop = 0;

	if (s == NULL)
		return -1;
	while (stop == 0 && (rc = sqlite3_step(s)) == SQLITE_ROW)
		stop = fn(TEXT(s, 0), TEXT(s, 1), (time_t)sqlite3_column_int64(s, 2), arg);
	rc = stop != 0 ? stop : rc == SQLITE_DONE ? 0 : fail(st, "list revoked certificates");
	sqlite3_finalize(s);
	return rc;
}

static void check_out_of_memory(void *db)
{
	struct store_sqlite *st = db;

	st->failure = STORE_FAIL_OTHER;
	snprintf(st->err, sizeof(st->err), "out of memory");
}

int store_sqlite_check(struct store_sqlite *st, struct store_check *out, char *what,
		       size_t what_len)
{
	static const struct audit_log_ops ops = {
		.walk = check_walk,
		.triggers = check_triggers,
		.max_crl_number = check_max_crl,
		.crl_numbers = check_crl_numbers,
		.get_cert = check_get_cert,
		.revoked = check_revoked,
		.out_of_memory = check_out_of_memory,
	};

	return audit_log_check(&ops, st, out, what, what_len);
}

/* ------------------------------------------------------------------------------------------
 * Enrollment tokens (the detail of a new one's audit entry: audit_log.h).
 */

/* In the caller's transaction: a no-op once the table exists. */
static int tokens_table(struct store_sqlite *st)
{
	return sqlite3_exec(st->db, TOKENS_SCHEMA, NULL, NULL, NULL) == SQLITE_OK
		       ? 0
		       : fail(st, "create the tokens table");
}

int store_sqlite_token_add(struct store_sqlite *st, const struct store_token *t, const char *actor)
{
	sqlite3_stmt *s;
	char *detail;
	int rc;

	if (tokens_table(st) != 0)
		return -1;
	s = prepare(st, "INSERT INTO tokens (hash, profile, cn, names, created_at, not_after) "
			"VALUES (?, ?, ?, ?, ?, ?)");
	if (s == NULL)
		return -1;
	sqlite3_bind_text(s, 1, t->hash, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, t->profile, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, t->cn != NULL ? t->cn : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 4, t->names != NULL ? t->names : "", -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 5, t->created_at);
	sqlite3_bind_int64(s, 6, t->not_after);
	rc = sqlite3_step(s);
	sqlite3_finalize(s);
	if (rc == SQLITE_CONSTRAINT &&
	    sqlite3_extended_errcode(st->db) == SQLITE_CONSTRAINT_PRIMARYKEY)
		return 1;
	if (rc != SQLITE_DONE)
		return fail(st, "add token");
	detail = audit_log_token_detail(t);
	if (detail == NULL) {
		st->failure = STORE_FAIL_OTHER;
		snprintf(st->err, sizeof(st->err), "out of memory");
		return -1;
	}
	rc = store_sqlite_audit(st, actor, "token", t->cn != NULL ? t->cn : "", detail);
	free(detail);
	return rc;
}

#define TOKEN_COLUMNS "hash, profile, cn, names, created_at, not_after, used_at, used_serial"

/* The row into *out, its strings copied into st->token. 0, or -1 out of memory. */
static int row_to_token(struct store_sqlite *st, sqlite3_stmt *s, struct store_token *out)
{
	const char *text[5];
	size_t len[5], total = 0;
	const int col[5] = {0, 1, 2, 3, 7};
	char *p;

	for (int i = 0; i < 5; i++) {
		text[i] = (const char *)sqlite3_column_text(s, col[i]);
		if (text[i] == NULL)
			text[i] = "";
		len[i] = strlen(text[i]);
		total += len[i] + 1;
	}
	free(st->token);
	st->token = p = malloc(total);
	if (p == NULL) {
		st->failure = STORE_FAIL_OTHER;
		snprintf(st->err, sizeof(st->err), "out of memory");
		return -1;
	}
	for (int i = 0; i < 5; i++) {
		memcpy(p, text[i], len[i] + 1);
		text[i] = p;
		p += len[i] + 1;
	}
	memset(out, 0, sizeof(*out));
	out->hash = text[0];
	out->profile = text[1];
	out->cn = text[2];
	out->names = text[3];
	out->used_serial = text[4];
	out->created_at = (time_t)sqlite3_column_int64(s, 4);
	out->not_after = (time_t)sqlite3_column_int64(s, 5);
	out->used_at = (time_t)sqlite3_column_int64(s, 6); /* NULL reads as 0 */
	return 0;
}

int store_sqlite_token_take(struct store_sqlite *st, const char *hash, time_t now,
			    struct store_token *out)
{
	sqlite3_stmt *s;
	int rc, taken;

	if (tokens_table(st) != 0)
		return -1;
	/* One statement decides: of two takers, the second finds used_at set. */
	s = prepare(st, "UPDATE tokens SET used_at = ?2 WHERE hash = ?1 AND used_at IS NULL AND "
			"not_after > ?2 RETURNING " TOKEN_COLUMNS);
	if (s == NULL)
		return -1;
	sqlite3_bind_text(s, 1, hash, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(s, 2, now);
	rc = sqlite3_step(s);
	taken = rc == SQLITE_ROW;
	if (taken && row_to_token(st, s, out) != 0) {
		sqlite3_finalize(s);
		return -1;
	}
	if (taken)
		rc = sqlite3_step(s);
	sqlite3_finalize(s);
	if (rc != SQLITE_DONE)
		return fail(st, "take token");
	if (taken)
		return 0;
	/* Why not: unknown, used or expired (used wins: it says more). */
	s = prepare(st, "SELECT " TOKEN_COLUMNS " FROM tokens WHERE hash = ?");
	if (s == NULL)
		return -1;
	sqlite3_bind_text(s, 1, hash, -1, SQLITE_TRANSIENT);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		bool used = sqlite3_column_type(s, 6) != SQLITE_NULL;

		rc = row_to_token(st, s, out) == 0 ? (used ? 3 : 2) : -1;
		sqlite3_finalize(s);
		return rc;
	}
	sqlite3_finalize(s);
	return rc == SQLITE_DONE ? 1 : fail(st, "look up token");
}

int store_sqlite_token_used_by(struct store_sqlite *st, const char *hash, const char *serial)
{
	sqlite3_stmt *s;
	int rc;

	if (tokens_table(st) != 0)
		return -1;
	s = prepare(st, "UPDATE tokens SET used_serial = ? WHERE hash = ? AND used_at IS NOT NULL");
	if (s == NULL)
		return -1;
	sqlite3_bind_text(s, 1, serial, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, hash, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	sqlite3_finalize(s);
	if (rc != SQLITE_DONE)
		return fail(st, "record the token's certificate");
	if (sqlite3_changes(st->db) != 1) {
		st->failure = STORE_FAIL_OTHER;
		snprintf(st->err, sizeof(st->err),
			 "CA inventory: token %.16s is unknown or was not taken; nothing recorded",
			 hash);
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------------------------------
 * The newest signed CRL, for every node to serve.
 */

int store_sqlite_crl_der_put(struct store_sqlite *st, int64_t number, const unsigned char *der,
			     size_t len)
{
	sqlite3_stmt *s;
	int rc;

	if (len > INT_MAX) {
		st->failure = STORE_FAIL_OTHER;
		snprintf(st->err, sizeof(st->err), "CA inventory: a CRL of %zu bytes is too large",
			 len);
		return -1;
	}
	if (sqlite3_exec(st->db, CRL_DER_SCHEMA, NULL, NULL, NULL) != SQLITE_OK)
		return fail(st, "create the CRL table");
	/* a number is signed once: a second CRL of the same number is refused */
	s = prepare(st, "INSERT INTO crl_der (number, der) VALUES (?, ?)");
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, number);
	sqlite3_bind_blob(s, 2, der, (int)len, SQLITE_STATIC);
	rc = sqlite3_step(s);
	sqlite3_finalize(s);
	if (rc != SQLITE_DONE)
		return fail(st, "keep the CRL");
	s = prepare(st, "DELETE FROM crl_der WHERE number < ?");
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, number);
	rc = sqlite3_step(s); /* only the newest is served: older ones go */
	sqlite3_finalize(s);
	return rc == SQLITE_DONE ? 0 : fail(st, "keep the CRL");
}

int store_sqlite_crl_der_latest(struct store_sqlite *st, int64_t *number, unsigned char **der,
				size_t *len)
{
	sqlite3_stmt *s;
	int rc, n;

	*der = NULL;
	*len = 0;
	/* an inventory opened only for reading may predate the table: then none is kept */
	s = prepare(st, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND "
			"name = 'crl_der'");
	if (s == NULL)
		return -1;
	rc = sqlite3_step(s);
	n = rc == SQLITE_ROW ? sqlite3_column_int(s, 0) : 0;
	sqlite3_finalize(s);
	if (rc != SQLITE_ROW)
		return fail(st, "read the schema");
	if (n == 0)
		return 1;
	s = prepare(st, "SELECT number, der FROM crl_der ORDER BY number DESC LIMIT 1");
	if (s == NULL)
		return -1;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		n = sqlite3_column_bytes(s, 1);
		*der = malloc(n > 0 ? (size_t)n : 1);
		if (*der == NULL) {
			sqlite3_finalize(s);
			st->failure = STORE_FAIL_OTHER;
			snprintf(st->err, sizeof(st->err), "out of memory");
			return -1;
		}
		if (n > 0)
			memcpy(*der, sqlite3_column_blob(s, 1), (size_t)n);
		*len = (size_t)n;
		*number = sqlite3_column_int64(s, 0);
	}
	sqlite3_finalize(s);
	if (rc == SQLITE_ROW)
		return 0;
	return rc == SQLITE_DONE ? 1 : fail(st, "read the CRL");
}
