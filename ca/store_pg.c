/*
 * The CA inventory in PostgreSQL (libpq), for several CA nodes sharing one database.
 *
 * The tables are those of store_sqlite.c, and the audit hash chain, the details of the audit
 * entries and the checks of store_check() are audit_log.c's, which both use, so that both say
 * the same about an inventory. What differs:
 *
 *   - Write transactions are READ COMMITTED. SQLite's BEGIN IMMEDIATE lets one writer in at a
 *     time; here the first operation of a transaction that reads or extends the audit chain or
 *     the CRL numbers takes the store's advisory lock (pg_advisory_xact_lock(WRITER_LOCK)),
 *     which PostgreSQL releases at commit or rollback, whatever happens to the node. Under it,
 *     each statement sees everything the lock's previous holders committed: the chain grows
 *     one entry after the other, CRL numbers increase strictly, and a CRL covers every
 *     revocation committed before it. Enrollment tokens need no lock: taking one is a single
 *     UPDATE whose row lock makes a second taker wait and then find it used.
 *   - Read transactions are REPEATABLE READ READ ONLY: one snapshot, like SQLite's.
 *   - PostgreSQL aborts a transaction at any error, so statements whose failure a caller
 *     survives (a duplicate serial or token) use ON CONFLICT DO NOTHING instead.
 *   - Values are always parameters (PQexecParams), DER as binary ones.
 *   - Every session has a statement timeout (waiting for the lock included) and an idle-in-
 *     transaction timeout (a node stopped while holding the lock frees it); a connection
 *     lost between transactions is opened again by the next one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "audit_log.h"
#include "store_backend.h"

/* the key of the store's advisory lock: "mtlsca\0\1"; the lock is per database */
#define WRITER_LOCK "7887048090276921345"
/* rows per query of a walk over a table, so that memory stays bounded */
#define PAGE "500"

struct store_pg {
	PGconn *conn;
	char name[600]; /* "PostgreSQL database ca (host /run/pg, port 5432)", for messages */
	char err[1600];
	enum store_failure failure;
	bool locked;		/* the writer lock is held, until the transaction ends */
	bool reading;		/* in store_pg_begin_read()'s snapshot */
	bool in_tx;		/* between a begin and its commit or rollback */
	bool reconnecting;	/* in reconnect(): no second one from its statements */
	PGresult *get;		/* behind the strings of the last store_pg_get_cert() */
	unsigned char *get_der; /* and its DER */
	PGresult *token;	/* behind the strings of the last store_pg_token_take() */
};

/* The append-only guard of the audit log (store_pg_check() compares it with this). */
#define GUARD_BODY "BEGIN RAISE EXCEPTION 'the audit log is append-only'; END"

static const char schema[] =
	"CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
	"CREATE TABLE certs ("
	"  serial TEXT PRIMARY KEY,"
	"  subject TEXT NOT NULL,"
	"  sans TEXT NOT NULL,"
	"  spki_sha256 TEXT NOT NULL,"
	"  profile TEXT NOT NULL,"
	"  not_before BIGINT NOT NULL,"
	"  not_after BIGINT NOT NULL,"
	"  issued_at BIGINT NOT NULL,"
	"  status TEXT NOT NULL DEFAULT 'valid' CHECK (status IN ('valid', 'revoked')),"
	"  revoked_at BIGINT,"
	"  revocation_reason TEXT,"
	"  der BYTEA NOT NULL);"
	"CREATE INDEX certs_not_after ON certs (not_after, serial);"
	"CREATE INDEX certs_spki ON certs (spki_sha256);"
	"CREATE TABLE crls ("
	"  number BIGINT PRIMARY KEY, this_update BIGINT NOT NULL, next_update BIGINT NOT NULL);"
	"CREATE TABLE audit ("
	"  seq BIGINT PRIMARY KEY, at BIGINT NOT NULL, actor TEXT NOT NULL,"
	"  action TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL,"
	"  prev_hash TEXT NOT NULL, hash TEXT NOT NULL);"
	/* append-only: the database itself refuses edits of the audit log */
	"CREATE OR REPLACE FUNCTION mtls_audit_append_only() RETURNS trigger LANGUAGE plpgsql "
	"  AS $$" GUARD_BODY "$$;"
	"CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
	"  FOR EACH ROW EXECUTE FUNCTION mtls_audit_append_only();"
	"CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit "
	"  FOR EACH ROW EXECUTE FUNCTION mtls_audit_append_only();"
	"CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit "
	"  FOR EACH STATEMENT EXECUTE FUNCTION mtls_audit_append_only();"
	"CREATE TABLE tokens ("
	"  hash TEXT PRIMARY KEY,"
	"  profile TEXT NOT NULL CHECK (profile IN ('server', 'client', 'peer')),"
	"  cn TEXT NOT NULL,"
	"  names TEXT NOT NULL,"
	"  created_at BIGINT NOT NULL,"
	"  not_after BIGINT NOT NULL,"
	"  used_at BIGINT,"
	"  used_serial TEXT NOT NULL DEFAULT '');"
	"CREATE TABLE crl_der (number BIGINT PRIMARY KEY, der BYTEA NOT NULL);";

/* Our tables: in a database that holds any of them, no new inventory is made. */
#define OUR_TABLES "'meta', 'certs', 'crls', 'audit', 'tokens', 'crl_der'"

/* ------------------------------------------------------------------------------------------
 * Errors: what kind of failure, said in one line.
 */

static bool state_is(const char *state, const char *code)
{
	return strncmp(state, code, strlen(code)) == 0;
}

/* The first line of msg without the trailing newline libpq leaves. */
static int line_len(const char *msg)
{
	return (int)strcspn(msg, "\n");
}

static int fail(struct store_pg *st, const char *what, const PGresult *r)
{
	const char *state = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = r != NULL ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	bool commit = strcmp(what, "commit") == 0;

	if (msg == NULL)
		msg = PQerrorMessage(st->conn);
	if (state == NULL)
		state = "";
	st->failure = STORE_FAIL_UNAVAILABLE;
	if (PQstatus(st->conn) != CONNECTION_OK || state_is(state, "08") ||
	    state_is(state, "57P")) {
		snprintf(st->err, sizeof(st->err),
			 "lost the connection to the CA inventory, %s (%s: %.*s); %s; check that "
			 "the database is running and reachable, and run the command again",
			 st->name, what, line_len(msg), msg,
			 commit ? "whether the change was committed is unknown ('mtls ca list' "
				  "shows it)"
				: "nothing was changed");
	} else if (state_is(state, "25006")) {
		snprintf(st->err, sizeof(st->err),
			 "the CA inventory, %s, is read-only (%s refused: %.*s): nothing was "
			 "changed; point the CA at the primary or make the database writable, and "
			 "run the command again",
			 st->name, what, line_len(msg), msg);
	} else if (state_is(state, "53100")) {
		st->failure = STORE_FAIL_FULL;
		snprintf(st->err, sizeof(st->err),
			 "disk full on the server of the CA inventory, %s (%s: %.*s): nothing was "
			 "changed; free space there and run the command again",
			 st->name, what, line_len(msg), msg);
	} else if (state_is(state, "53") || state_is(state, "57014") || state_is(state, "55P03") ||
		   state_is(state, "40001") || state_is(state, "40P01")) {
		/* out of connections or memory, a timeout (waiting for another node's lock
		 * included), a deadlock: the database cannot serve now */
		snprintf(st->err, sizeof(st->err),
			 "the CA inventory, %s, is busy or overloaded (%s: %.*s): nothing was "
			 "changed; run the command again",
			 st->name, what, line_len(msg), msg);
	} else {
		st->failure = STORE_FAIL_OTHER;
		snprintf(st->err, sizeof(st->err), "CA inventory, %s: %s: %.*s", st->name, what,
			 line_len(msg), msg);
	}
	return -1;
}

static int fail_memory(struct store_pg *st)
{
	st->failure = STORE_FAIL_OTHER;
	snprintf(st->err, sizeof(st->err), "out of memory");
	return -1;
}

const char *store_pg_error(const struct store_pg *st)
{
	return st->err;
}

enum store_failure store_pg_error_kind(const struct store_pg *st)
{
	return st->failure;
}

/* ------------------------------------------------------------------------------------------
 * Statements.
 */

/* Run sql with n text parameters. The result, or NULL with the error set (what failed). */
static int reconnect(struct store_pg *st);

static PGresult *run(struct store_pg *st, const char *what, const char *sql, int n,
		     const char *const *values)
{
	PGresult *r;
	ExecStatusType s;

	/* Outside a transaction a lost connection (a restarted database) is opened again;
	 * inside one, the transaction is lost: the statement fails, and so does the commit. */
	if (!st->in_tx && !st->reconnecting && PQstatus(st->conn) != CONNECTION_OK &&
	    reconnect(st) != 0)
		return NULL;
	r = PQexecParams(st->conn, sql, n, NULL, values, NULL, NULL, 0);
	s = PQresultStatus(r);
	/* libpq sees a connection the server ended only when it is used: a statement that
	 * changes nothing (a read, a BEGIN, a setting) is run again on a new one */
	if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK && !st->in_tx && !st->reconnecting &&
	    PQstatus(st->conn) != CONNECTION_OK &&
	    (strncmp(sql, "SELECT", 6) == 0 || strncmp(sql, "BEGIN", 5) == 0 ||
	     strncmp(sql, "SET", 3) == 0)) {
		PQclear(r);
		if (reconnect(st) != 0)
			return NULL;
		r = PQexecParams(st->conn, sql, n, NULL, values, NULL, NULL, 0);
		s = PQresultStatus(r);
	}

	if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK)
		return r;
	fail(st, what, r);
	PQclear(r);
	return NULL;
}

/* The same with one binary parameter (DER), the last of the n. */
static PGresult *run_blob(struct store_pg *st, const char *what, const char *sql, int n,
			  const char *const *values, const unsigned char *blob, size_t len)
{
	int lengths[16] = {0}, formats[16] = {0};
	const char *v[16];
	PGresult *r;
	ExecStatusType s;

	if (n > 16 || len > 0x7fffffff) {
		st->failure = STORE_FAIL_OTHER;
		snprintf(st->err, sizeof(st->err), "CA inventory: %s: %zu bytes is too large", what,
			 len);
		return NULL;
	}
	memcpy(v, values, sizeof(*v) * (size_t)(n - 1));
	v[n - 1] = (const char *)blob;
	lengths[n - 1] = (int)len;
	formats[n - 1] = 1;
	r = PQexecParams(st->conn, sql, n, NULL, v, lengths, formats, 0);
	s = PQresultStatus(r);
	if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK)
		return r;
	fail(st, what, r);
	PQclear(r);
	return NULL;
}

/* A number as a parameter. */
struct num {
	char s[24];
};

static struct num num(int64_t v)
{
	struct num n;

	snprintf(n.s, sizeof(n.s), "%lld", (long long)v);
	return n;
}

static int64_t get_i64(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static const char *get_text(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

/* ------------------------------------------------------------------------------------------
 * Connections and transactions.
 */

static void quiet(void *arg, const char *message)
{
	/* NOTICEs ("relation exists, skipping") are not for the CA's users */
	(void)arg;
	(void)message;
}

/* Settings of every session. */
static int session(struct store_pg *st)
{
	static const char *const settings[] = {
		"SET statement_timeout = '30s'",
		"SET idle_in_transaction_session_timeout = '60s'",
	};

	PQsetNoticeProcessor(st->conn, quiet, NULL);
	for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++) {
		PGresult *r = run(st, "set up the session", settings[i], 0, NULL);

		if (r == NULL)
			return -1;
		PQclear(r);
	}
	return 0;
}

static void describe(struct store_pg *st)
{
	const char *db = PQdb(st->conn), *host = PQhost(st->conn), *port = PQport(st->conn);

	snprintf(st->name, sizeof(st->name), "PostgreSQL database %s (host %s, port %s)",
		 db != NULL && db[0] != '\0' ? db : "?",
		 host != NULL && host[0] != '\0' ? host : "?",
		 port != NULL && port[0] != '\0' ? port : "?");
}

/* How many of our tables the database holds (in the schema first in its search path). */
static int64_t our_tables(struct store_pg *st, const char *names)
{
	char sql[256];
	PGresult *r;
	int64_t n;

	snprintf(sql, sizeof(sql),
		 "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema() "
		 "AND tablename IN (%s)",
		 names);
	r = run(st, "read the schema", sql, 0, NULL);
	if (r == NULL)
		return -1;
	n = get_i64(r, 0, 0);
	PQclear(r);
	return n;
}

static int exec_simple(struct store_pg *st, const char *what, const char *sql)
{
	PGresult *r = run(st, what, sql, 0, NULL);

	PQclear(r);
	return r != NULL ? 0 : -1;
}

/* Make the tables, under the lock, in a database that holds none of them. 0, 1 it holds some
 * (err says so), -1 error (in st->err). */
static int create_schema(struct store_pg *st, char *err, size_t err_len)
{
	const char *lock[] = {WRITER_LOCK};
	PGresult *r;
	int64_t n;
	bool empty = false;

	if (exec_simple(st, "begin", "BEGIN") != 0)
		return -1;
	st->in_tx = true;
	r = run(st, "lock the inventory", "SELECT pg_advisory_xact_lock($1)", 1, lock);
	if (r == NULL)
		goto fail;
	PQclear(r);
	n = our_tables(st, OUR_TABLES);
	if (n < 0)
		goto fail;
	/* the tables alone, without a row: what an init that failed after making them left
	 * (the schema is made in a transaction of its own, before the CA's first records) */
	if (n == 6) {
		r = run(st, "read the inventory",
			"SELECT (SELECT count(*) FROM meta) + (SELECT count(*) FROM certs) + "
			"(SELECT count(*) FROM crls) + (SELECT count(*) FROM audit) + "
			"(SELECT count(*) FROM tokens) + (SELECT count(*) FROM crl_der)",
			0, NULL);
		if (r == NULL)
			goto fail;
		empty = get_i64(r, 0, 0) == 0;
		PQclear(r);
	}
	if (n > 0) {
		if (empty)
			snprintf(err, err_len,
				 "%s already holds an empty CA inventory (left by an init that "
				 "failed?); give a new, empty database to --store, or drop the "
				 "inventory's tables (meta, certs, crls, audit, tokens, crl_der) "
				 "there",
				 st->name);
		else
			snprintf(err, err_len,
				 "%s already holds a CA inventory (or tables of its names: meta, "
				 "certs, crls, audit, tokens, crl_der); give a new, empty database "
				 "to "
				 "--store",
				 st->name);
		store_pg_rollback(st);
		return 1;
	}
	/* constant SQL, several statements: the simple protocol */
	r = PQexec(st->conn, schema);
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		fail(st, "create the tables", r);
		PQclear(r);
		goto fail;
	}
	PQclear(r);
	return store_pg_commit(st);
fail:
	store_pg_rollback(st);
	return -1;
}

struct store_pg *store_pg_open(const char *url, bool create, char *err, size_t err_len)
{
	struct store_pg *st = calloc(1, sizeof(*st));
	const char *keys[4], *values[4];
	PQconninfoOption *opts;
	char *why = NULL;
	bool timeout = getenv("PGCONNECT_TIMEOUT") != NULL;
	int n = 0, rc;
	int64_t tables;

	if (st == NULL) {
		snprintf(err, err_len, "out of memory");
		return NULL;
	}
	opts = PQconninfoParse(url, &why);
	if (opts == NULL) {
		snprintf(err, err_len, "not a usable PostgreSQL URL for the CA inventory: %.*s",
			 why != NULL ? line_len(why) : 13, why != NULL ? why : "out of memory");
		PQfreemem(why);
		free(st);
		return NULL;
	}
	for (const PQconninfoOption *o = opts; o->keyword != NULL; o++)
		if (strcmp(o->keyword, "connect_timeout") == 0 && o->val != NULL)
			timeout = true;
	PQconninfoFree(opts);
	/* a database that does not answer must not hang a command */
	if (!timeout) {
		keys[n] = "connect_timeout";
		values[n++] = "10";
	}
	keys[n] = "fallback_application_name";
	values[n++] = "mtls-ca";
	keys[n] = "dbname"; /* the URL, expanded: what it says wins over the above */
	values[n++] = url;
	keys[n] = values[n] = NULL;
	st->conn = PQconnectdbParams(keys, values, 1);
	if (st->conn == NULL) {
		snprintf(err, err_len, "out of memory");
		free(st);
		return NULL;
	}
	describe(st);
	if (PQstatus(st->conn) != CONNECTION_OK) {
		snprintf(err, err_len,
			 "cannot connect to the CA inventory, %s: %.*s; check that the database "
			 "is running and reachable (a password goes in PGPASSFILE or PGPASSWORD)",
			 st->name, line_len(PQerrorMessage(st->conn)), PQerrorMessage(st->conn));
		store_pg_close(st);
		return NULL;
	}
	if (session(st) != 0) {
		snprintf(err, err_len, "%s", st->err);
		store_pg_close(st);
		return NULL;
	}
	if (create) {
		rc = create_schema(st, err, err_len);
		if (rc < 0)
			snprintf(err, err_len, "cannot create the CA inventory: %s", st->err);
		if (rc != 0) {
			store_pg_close(st);
			return NULL;
		}
		return st;
	}
	tables = our_tables(st, "'meta', 'certs', 'crls', 'audit'");
	if (tables < 0)
		snprintf(err, err_len, "%s", st->err);
	else if (tables != 4)
		snprintf(err, err_len,
			 "%s is not a usable CA inventory (tables missing); give the database "
			 "'mtls ca init --store' made, or restore it from a backup",
			 st->name);
	if (tables != 4) {
		store_pg_close(st);
		return NULL;
	}
	return st;
}

void store_pg_close(struct store_pg *st)
{
	if (st == NULL)
		return;
	PQclear(st->get);
	PQfreemem(st->get_der);
	PQclear(st->token);
	PQfinish(st->conn);
	free(st);
}

/* A connection lost since the last transaction (a restarted database) is opened again. */
static int reconnect(struct store_pg *st)
{
	int rc;

	if (PQstatus(st->conn) == CONNECTION_OK)
		return 0;
	PQreset(st->conn);
	if (PQstatus(st->conn) != CONNECTION_OK) {
		st->failure = STORE_FAIL_UNAVAILABLE;
		snprintf(st->err, sizeof(st->err),
			 "cannot connect to the CA inventory, %s: %.*s; check that the database "
			 "is running and reachable, and run the command again: nothing was changed",
			 st->name, line_len(PQerrorMessage(st->conn)), PQerrorMessage(st->conn));
		return -1;
	}
	st->reconnecting = true;
	rc = session(st);
	st->reconnecting = false;
	return rc;
}

static int begin(struct store_pg *st, const char *sql, bool reading)
{
	st->locked = st->reading = st->in_tx = false;
	if (exec_simple(st, "begin", sql) != 0)
		return -1;
	st->reading = reading;
	st->in_tx = true;
	return 0;
}

int store_pg_begin(struct store_pg *st)
{
	return begin(st, "BEGIN ISOLATION LEVEL READ COMMITTED", false);
}

int store_pg_begin_read(struct store_pg *st)
{
	return begin(st, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", true);
}

int store_pg_commit(struct store_pg *st)
{
	PGresult *r = run(st, "commit", "COMMIT", 0, NULL);
	bool committed = r != NULL && strcmp(PQcmdStatus(r), "COMMIT") == 0;

	st->locked = st->reading = st->in_tx = false;
	if (r != NULL && !committed) {
		/* PostgreSQL answers COMMIT of a failed transaction with ROLLBACK */
		st->failure = STORE_FAIL_OTHER;
		snprintf(st->err, sizeof(st->err),
			 "CA inventory, %s: the transaction failed earlier and was rolled back: "
			 "nothing was changed",
			 st->name);
	}
	PQclear(r);
	return committed ? 0 : -1;
}

void store_pg_rollback(struct store_pg *st)
{
	st->locked = st->reading = st->in_tx = false;
	if (PQstatus(st->conn) == CONNECTION_OK)
		PQclear(PQexecParams(st->conn, "ROLLBACK", 0, NULL, NULL, NULL, NULL, 0));
}

/* Inside a write transaction, the first time: wait for the other writers (nodes) that
 * extend the audit chain or take CRL numbers. Read snapshots and statements outside a
 * transaction take no lock. */
static int writer_lock(struct store_pg *st)
{
	const char *key[] = {WRITER_LOCK};
	PGresult *r;

	if (st->locked || st->reading || PQtransactionStatus(st->conn) != PQTRANS_INTRANS)
		return 0;
	r = run(st, "wait for the other CA nodes' changes", "SELECT pg_advisory_xact_lock($1)", 1,
		key);
	if (r == NULL)
		return -1;
	PQclear(r);
	st->locked = true;
	return 0;
}

/* Outside a transaction, operations of several statements get one of their own. *own says
 * whether to end it. */
static int own_begin(struct store_pg *st, bool reading, bool *own)
{
	*own = PQtransactionStatus(st->conn) == PQTRANS_IDLE;
	if (!*own)
		return 0;
	return reading ? store_pg_begin_read(st) : store_pg_begin(st);
}

static int own_end(struct store_pg *st, bool own, int rc)
{
	if (!own)
		return rc;
	if (rc >= 0 && !st->reading)
		return store_pg_commit(st) == 0 ? rc : -1;
	store_pg_rollback(st);
	return rc;
}

/* ------------------------------------------------------------------------------------------
 * Certificates.
 */

#define CERT_COLUMNS                                                                               \
	"serial, subject, sans, spki_sha256, profile, not_before, not_after, issued_at, "          \
	"status, revoked_at, revocation_reason, der"

int store_pg_add_cert(struct store_pg *st, const struct store_cert *c)
{
	struct num nb = num(c->not_before), na = num(c->not_after), ia = num(c->issued_at);
	const char *v[] = {c->serial, c->subject, c->sans, c->spki_sha256, c->profile, nb.s,
			   na.s,      ia.s,	  NULL};
	PGresult *r = run_blob(st, "add certificate",
			       "INSERT INTO certs (serial, subject, sans, spki_sha256, profile, "
			       "not_before, not_after, issued_at, der) "
			       "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
			       "ON CONFLICT (serial) DO NOTHING",
			       9, v, c->der, c->der_len);
	int rc;

	if (r == NULL)
		return -1;
	rc = strcmp(PQcmdTuples(r), "1") == 0 ? 0 : 1; /* 0 rows: the serial exists */
	PQclear(r);
	return rc;
}

/* The row into *c: its strings point into r, its DER into *der (PQfreemem()). */
static int row_to_cert(struct store_pg *st, const PGresult *r, int row, struct store_cert *c,
		       unsigned char **der)
{
	size_t len = 0;

	memset(c, 0, sizeof(*c));
	*der = PQunescapeBytea((const unsigned char *)PQgetvalue(r, row, 11), &len);
	if (*der == NULL)
		return fail_memory(st);
	snprintf(c->serial, sizeof(c->serial), "%s", PQgetvalue(r, row, 0));
	c->subject = PQgetvalue(r, row, 1);
	c->sans = PQgetvalue(r, row, 2);
	c->spki_sha256 = PQgetvalue(r, row, 3);
	c->profile = PQgetvalue(r, row, 4);
	c->not_before = (time_t)get_i64(r, row, 5);
	c->not_after = (time_t)get_i64(r, row, 6);
	c->issued_at = (time_t)get_i64(r, row, 7);
	c->revoked = strcmp(PQgetvalue(r, row, 8), "revoked") == 0;
	c->revoked_at = (time_t)get_i64(r, row, 9);
	c->revocation_reason = get_text(r, row, 10);
	c->der = *der;
	c->der_len = len;
	return 0;
}

int store_pg_get_cert(struct store_pg *st, const char *serial, struct store_cert *out)
{
	const char *v[] = {serial};

	PQclear(st->get);
	PQfreemem(st->get_der);
	st->get_der = NULL;
	st->get = run(st, "look up certificate",
		      "SELECT " CERT_COLUMNS " FROM certs WHERE serial = $1", 1, v);
	if (st->get == NULL)
		return -1;
	if (PQntuples(st->get) == 0)
		return 1;
	return row_to_cert(st, st->get, 0, out, &st->get_der);
}

int store_pg_revoke(struct store_pg *st, const char *serial, const char *reason, time_t when)
{
	struct num w = num(when);
	const char *v[] = {w.s, reason, serial};
	PGresult *r = run(st, "revoke",
			  "UPDATE certs SET status = 'revoked', revoked_at = $1, "
			  "revocation_reason = $2 WHERE serial = $3 AND status = 'valid'",
			  3, v);
	bool changed;

	if (r == NULL)
		return -1;
	changed = strcmp(PQcmdTuples(r), "1") == 0;
	PQclear(r);
	if (changed)
		return 0;
	r = run(st, "revoke", "SELECT 1 FROM certs WHERE serial = $1", 1, v + 2);
	if (r == NULL)
		return -1;
	changed = PQntuples(r) == 1; /* there, so already revoked */
	PQclear(r);
	return changed ? 2 : 1;
}

int store_pg_key_compromised(struct store_pg *st, const char *spki_sha256, char serial[64])
{
	const char *v[] = {spki_sha256};
	PGresult *r = run(st, "look up the key",
			  "SELECT serial FROM certs WHERE spki_sha256 = $1 AND status = 'revoked' "
			  "AND revocation_reason = 'keyCompromise' ORDER BY revoked_at LIMIT 1",
			  1, v);
	int rc;

	if (r == NULL)
		return -1;
	rc = PQntuples(r) == 1;
	if (rc)
		snprintf(serial, 64, "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	return rc;
}

int store_pg_each_cert(struct store_pg *st, enum store_filter filter, time_t before,
		       int (*fn)(const struct store_cert *, void *), void *arg)
{
	static const char *const where[] = {
		[STORE_ALL] = "TRUE",
		[STORE_VALID] = "status = 'valid' AND not_after > $3",
		[STORE_REVOKED] = "status = 'revoked'",
		[STORE_EXPIRING] = "status = 'valid' AND not_after <= $3",
	};
	struct num after = num(INT64_MIN), bound = num(filter == STORE_VALID ? time(NULL) : before);
	char sql[512], last[64] = "";
	const char *v[] = {after.s, last, bound.s};
	int n = filter == STORE_VALID || filter == STORE_EXPIRING ? 3 : 2;

	/* page by page, each starting after the last row of the one before */
	snprintf(sql, sizeof(sql),
		 "SELECT " CERT_COLUMNS " FROM certs WHERE (not_after, serial) > ($1::bigint, $2) "
		 "AND %s ORDER BY not_after, serial LIMIT " PAGE,
		 where[filter]);
	for (;;) {
		PGresult *r = run(st, "list certificates", sql, n, v);
		int rows, stop = 0;

		if (r == NULL)
			return -1;
		rows = PQntuples(r);
		for (int i = 0; i < rows && stop == 0; i++) {
			struct store_cert c;
			unsigned char *der;

			if (row_to_cert(st, r, i, &c, &der) != 0) {
				PQclear(r);
				return -1;
			}
			stop = fn(&c, arg);
			PQfreemem(der);
		}
		if (rows > 0) {
			after = num(get_i64(r, rows - 1, 6));
			snprintf(last, sizeof(last), "%s", PQgetvalue(r, rows - 1, 0));
		}
		PQclear(r);
		if (stop != 0 || rows < atoi(PAGE))
			return 0;
	}
}

/* ------------------------------------------------------------------------------------------
 * Settings.
 */

int store_pg_set_meta(struct store_pg *st, const char *key, const char *value)
{
	const char *v[] = {key, value};
	PGresult *r = run(st, "set setting",
			  "INSERT INTO meta (key, value) VALUES ($1, $2) "
			  "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
			  2, v);

	PQclear(r);
	return r != NULL ? 0 : -1;
}

int store_pg_get_meta(struct store_pg *st, const char *key, char *buf, size_t len)
{
	const char *v[] = {key};
	PGresult *r = run(st, "get setting", "SELECT value FROM meta WHERE key = $1", 1, v);
	int rc = 1;

	if (r == NULL)
		return -1;
	if (PQntuples(r) == 1) {
		rc = 0;
		if (snprintf(buf, len, "%s", PQgetvalue(r, 0, 0)) >= (int)len) {
			/* never a setting cut short (a URL that means something else) */
			st->failure = STORE_FAIL_OTHER;
			snprintf(st->err, sizeof(st->err),
				 "CA inventory: the setting %s is longer than %zu bytes; "
				 "investigate",
				 key, len - 1);
			rc = -1;
		}
	}
	PQclear(r);
	return rc;
}

/* ------------------------------------------------------------------------------------------
 * The audit log: the chain of audit_log.h.
 */

static int append(struct store_pg *st, const char *actor, const char *action, const char *subject,
		  const char *detail)
{
	struct audit_log_entry e = {1, time(NULL), actor, action, subject, detail};
	char prev[65], hash[65];
	struct num s, a;
	PGresult *r;

	/* under the lock, this reads the entry the last writer committed */
	if (writer_lock(st) != 0)
		return -1;
	r = run(st, "read the audit log", "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
		0, NULL);
	if (r == NULL)
		return -1;
	snprintf(prev, sizeof(prev), "%s", audit_log_genesis);
	if (PQntuples(r) == 1) {
		e.seq = get_i64(r, 0, 0) + 1;
		snprintf(prev, sizeof(prev), "%s", PQgetvalue(r, 0, 1));
	}
	PQclear(r);
	audit_log_hash(prev, &e, hash);
	s = num(e.seq);
	a = num(e.at);
	{
		const char *v[] = {s.s, a.s, actor, action, subject, detail, prev, hash};

		r = run(st, "append to the audit log",
			"INSERT INTO audit (seq, at, actor, action, subject, detail, prev_hash, "
			"hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
			8, v);
	}
	PQclear(r);
	return r != NULL ? 0 : -1;
}

int store_pg_audit(struct store_pg *st, const char *actor, const char *action, const char *subject,
		   const char *detail)
{
	bool own;

	if (own_begin(st, false, &own) != 0)
		return -1;
	return own_end(st, own, append(st, actor, action, subject, detail));
}

/* Walk the chain in order, calling fn (if not NULL) for each entry whose hash checks out.
 * 0 intact (the last entry's hash in head, if not NULL; "" for an empty log), 1 broken
 * (*bad_seq), 2 fn said stop, -1 error. */
static int audit_walk(struct store_pg *st, int64_t *count, int64_t *bad_seq, char head[65],
		      int (*fn)(const struct audit_log_entry *e, void *arg), void *arg)
{
	struct audit_log_walk w;
	struct num after = num(0);
	const char *v[] = {after.s};

	audit_log_walk_start(&w, count, bad_seq, fn, arg);
	for (;;) {
		PGresult *r = run(st, "read the audit log",
				  "SELECT seq, at, actor, action, subject, detail, prev_hash, hash "
				  "FROM audit WHERE seq > $1 ORDER BY seq LIMIT " PAGE,
				  1, v);
		int rows, stop = 0;

		if (r == NULL)
			return -1;
		rows = PQntuples(r);
		for (int i = 0; i < rows && stop == 0; i++) {
			struct audit_log_entry e = {get_i64(r, i, 0),	 get_i64(r, i, 1),
						    PQgetvalue(r, i, 2), PQgetvalue(r, i, 3),
						    PQgetvalue(r, i, 4), PQgetvalue(r, i, 5)};

			stop = audit_log_walk_next(&w, &e, PQgetvalue(r, i, 6),
						   PQgetvalue(r, i, 7));
		}
		if (rows > 0)
			after = num(get_i64(r, rows - 1, 0));
		PQclear(r);
		if (stop != 0)
			return stop;
		if (rows < atoi(PAGE))
			break;
	}
	if (head != NULL)
		audit_log_walk_head(&w, head);
	return 0;
}

int store_pg_audit_verify(struct store_pg *st, int64_t *count, int64_t *bad_seq)
{
	bool own;

	if (own_begin(st, true, &own) != 0)
		return -1;
	return own_end(st, own, audit_walk(st, count, bad_seq, NULL, NULL, NULL));
}

int store_pg_audit_hash(struct store_pg *st, int64_t seq, char hash[65])
{
	struct num s = num(seq);
	const char *v[] = {s.s};
	PGresult *r = run(st, "read the audit log", "SELECT hash FROM audit WHERE seq = $1", 1, v);
	int rc;

	if (r == NULL)
		return -1;
	rc = PQntuples(r) == 1 ? 0 : 1;
	if (rc == 0)
		snprintf(hash, 65, "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	return rc;
}

/* ------------------------------------------------------------------------------------------
 * Revocations and CRLs in the audit log (their details: audit_log.h).
 */

int store_pg_revoke_audited(struct store_pg *st, const char *serial, const char *reason,
			    time_t when, const char *actor)
{
	struct store_cert c;
	char detail[200], *subject;
	int rc;

	/* the lock first: the revocation and its entry commit together, after every CRL
	 * being signed meanwhile */
	if (writer_lock(st) != 0)
		return -1;
	rc = store_pg_revoke(st, serial, reason, when);
	if (rc != 0)
		return rc;
	if ((rc = store_pg_get_cert(st, serial, &c)) != 0)
		return rc < 0 ? rc : -1;
	subject = strdup(c.subject);
	if (subject == NULL)
		return fail_memory(st);
	audit_log_revoke_detail(detail, sizeof(detail), serial, reason, when);
	rc = store_pg_audit(st, actor, "revoke", subject, detail);
	free(subject);
	return rc;
}

static int64_t max_crl_number(struct store_pg *st)
{
	PGresult *r = run(st, "read the CRL numbers", "SELECT COALESCE(MAX(number), 0) FROM crls",
			  0, NULL);
	int64_t n;

	if (r == NULL)
		return -1;
	n = get_i64(r, 0, 0);
	PQclear(r);
	return n;
}

/* The highest CRL number the audit log records (0: none), or -1. */
static int64_t max_logged_crl(struct store_pg *st)
{
	PGresult *r = run(st, "read the audit log", "SELECT detail FROM audit WHERE action = 'crl'",
			  0, NULL);
	char sha[65];
	int64_t max = 0, n;

	if (r == NULL)
		return -1;
	for (int i = 0; i < PQntuples(r); i++)
		if (audit_log_parse_crl(PQgetvalue(r, i, 0), &n, sha) == 0 && n > max)
			max = n;
	PQclear(r);
	return max;
}

int store_pg_next_crl_number(struct store_pg *st, time_t this_update, time_t next_update,
			     int64_t *number)
{
	struct num t = num(this_update), n = num(next_update);
	const char *v[] = {t.s, n.s};
	PGresult *r;

	if (writer_lock(st) != 0)
		return -1;
	r = run(st, "allocate CRL number",
		"INSERT INTO crls (number, this_update, next_update) "
		"SELECT COALESCE(MAX(number), 0) + 1, $1, $2 FROM crls RETURNING number",
		2, v);
	if (r == NULL)
		return -1;
	*number = get_i64(r, 0, 0);
	PQclear(r);
	return 0;
}

int store_pg_crl_next(struct store_pg *st, int64_t floor, int64_t *number)
{
	int64_t table, logged;

	/* held until the CRL is recorded and committed: no other node takes this number */
	if (writer_lock(st) != 0)
		return -1;
	table = max_crl_number(st);
	logged = table >= 0 ? max_logged_crl(st) : -1;
	if (table < 0 || logged < 0)
		return -1;
	*number = audit_log_crl_next(floor, table, logged);
	return 0;
}

int store_pg_crl_add(struct store_pg *st, int64_t number, time_t this_update, time_t next_update,
		     size_t revoked, const char *sha256, const char *actor)
{
	struct num n = num(number), t = num(this_update), u = num(next_update);
	const char *v[] = {n.s, t.s, u.s};
	char detail[160];
	PGresult *r;

	if (writer_lock(st) != 0)
		return -1;
	r = run(st, "record the CRL",
		"INSERT INTO crls (number, this_update, next_update) VALUES ($1, $2, $3)", 3, v);
	if (r == NULL)
		return -1;
	PQclear(r);
	audit_log_crl_detail(detail, sizeof(detail), number, revoked, sha256);
	return store_pg_audit(st, actor, "crl", "", detail);
}

int store_pg_crl_logged(struct store_pg *st, int64_t number, char sha256[65])
{
	char like[40];
	const char *v[] = {like};
	PGresult *r;
	int64_t n;
	int rc = 1;

	audit_log_crl_like(like, sizeof(like), number);
	r = run(st, "read the audit log",
		"SELECT detail FROM audit WHERE action = 'crl' AND detail LIKE $1 "
		"ORDER BY seq DESC",
		1, v);
	if (r == NULL)
		return -1;
	for (int i = 0; i < PQntuples(r) && rc == 1; i++)
		if (audit_log_parse_crl(PQgetvalue(r, i, 0), &n, sha256) == 0 && n == number)
			rc = 0;
	PQclear(r);
	return rc;
}

int store_pg_crl_der_put(struct store_pg *st, int64_t number, const unsigned char *der, size_t len)
{
	struct num n = num(number);
	const char *v[] = {n.s, NULL};
	PGresult *r;

	if (writer_lock(st) != 0)
		return -1;
	/* a number is signed once: a second CRL of the same number is refused */
	r = run_blob(st, "keep the CRL", "INSERT INTO crl_der (number, der) VALUES ($1, $2)", 2, v,
		     der, len);
	if (r == NULL)
		return -1;
	PQclear(r);
	/* only the newest is served: older ones go */
	r = run(st, "keep the CRL", "DELETE FROM crl_der WHERE number < $1", 1, v);
	PQclear(r);
	return r != NULL ? 0 : -1;
}

int store_pg_crl_der_latest(struct store_pg *st, int64_t *number, unsigned char **der, size_t *len)
{
	PGresult *r = run(st, "read the CRL",
			  "SELECT number, der FROM crl_der ORDER BY number DESC LIMIT 1", 0, NULL);
	unsigned char *raw;
	size_t n = 0;

	*der = NULL;
	*len = 0;
	if (r == NULL)
		return -1;
	if (PQntuples(r) == 0) {
		PQclear(r);
		return 1;
	}
	raw = PQunescapeBytea((const unsigned char *)PQgetvalue(r, 0, 1), &n);
	*der = raw != NULL ? malloc(n > 0 ? n : 1) : NULL;
	if (*der == NULL) {
		PQfreemem(raw);
		PQclear(r);
		return fail_memory(st);
	}
	memcpy(*der, raw, n);
	*len = n;
	*number = get_i64(r, 0, 0);
	PQfreemem(raw);
	PQclear(r);
	return 0;
}

/* ------------------------------------------------------------------------------------------
 * store_check() (audit_log_check()): what it reads of this database.
 */

static int check_walk(void *db, int64_t *count, int64_t *bad_seq, char head[65],
		      int (*fn)(const struct audit_log_entry *e, void *arg), void *arg)
{
	return audit_walk(db, count, bad_seq, head, fn, arg);
}

/* Are the append-only triggers in place, enabled, unconditional and calling the guard as the
 * schema made it? Dropping, disabling or rewriting them is the first step of cutting back
 * the log, which the chain alone cannot see. 0 yes, 2 no (what says which), -1 error. */
static int check_triggers(void *db, char *what, size_t what_len)
{
	/* tgtype: 1 row, 2 before, 8 delete, 16 update, 32 truncate */
	static const struct {
		const char *name;
		int64_t type;
	} want[] = {
		{"audit_no_update", 1 | 2 | 16},
		{"audit_no_delete", 1 | 2 | 8},
		{"audit_no_truncate", 2 | 32},
	};
	PGresult *r = run(db, "read the schema",
			  "SELECT t.tgname, t.tgtype, t.tgenabled IN ('O', 'A'), "
			  "t.tgattr::text = '' AND t.tgqual IS NULL, p.prosrc = $1 "
			  "FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_proc p "
			  "ON p.oid = t.tgfoid WHERE t.tgrelid = 'audit'::regclass "
			  "AND NOT t.tgisinternal",
			  1, (const char *const[]){GUARD_BODY});
	int rc = 0;

	if (r == NULL)
		return -1;
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]) && rc == 0; i++) {
		const char *how = "dropped";

		for (int j = 0; j < PQntuples(r); j++) {
			if (strcmp(PQgetvalue(r, j, 0), want[i].name) != 0)
				continue;
			if (strcmp(PQgetvalue(r, j, 2), "t") != 0)
				how = "disabled";
			else if (get_i64(r, j, 1) != want[i].type ||
				 strcmp(PQgetvalue(r, j, 3), "t") != 0 ||
				 strcmp(PQgetvalue(r, j, 4), "t") != 0)
				how = "changed";
			else
				how = NULL;
			break;
		}
		if (how == NULL)
			continue;
		audit_log_trigger_altered(what, what_len, want[i].name, how);
		rc = 2;
	}
	PQclear(r);
	return rc;
}

static int64_t check_max_crl(void *db)
{
	return max_crl_number(db);
}

static int check_crl_numbers(void *db, int64_t from, int (*fn)(int64_t number, void *arg),
			     void *arg)
{
	struct num f = num(from);
	const char *v[] = {f.s};
	PGresult *r = run(db, "read the CRL numbers",
			  "SELECT number FROM crls WHERE number >= $1 ORDER BY number", 1, v);
	int stop = 0;

	if (r == NULL)
		return -1;
	for (int j = 0; j < PQntuples(r) && stop == 0; j++)
		stop = fn(get_i64(r, j, 0), arg);
	PQclear(r);
	return stop;
}

static int check_get_cert(void *db, const char *serial, struct store_cert *out)
{
	return store_pg_get_cert(db, serial, out);
}

static int check_revoked(void *db,
			 int (*fn)(const char *serial, const char *reason, time_t at, void *arg),
			 void *arg)
{
	PGresult *r = run(db, "list revoked certificates",
			  "SELECT serial, revocation_reason, revoked_at FROM certs "
			  "WHERE status = 'revoked' ORDER BY serial",
			  0, NULL);
	int stop = 0;

	if (r == NULL)
		return -1;
	for (int j = 0; j < PQntuples(r) && stop == 0; j++)
		stop = fn(PQgetvalue(r, j, 0), get_text(r, j, 1), (time_t)get_i64(r, j, 2), arg);
	PQclear(r);
	return stop;
}

static void check_out_of_memory(void *db)
{
	fail_memory(db);
}

static int check(struct store_pg *st, struct store_check *out, char *what, size_t what_len)
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

	memset(out, 0, sizeof(*out));
	what[0] = '\0';
	/* in a write transaction (a CRL being signed), no other node changes what is checked */
	if (writer_lock(st) != 0)
		return -1;
	return audit_log_check(&ops, st, out, what, what_len);
}

int store_pg_check(struct store_pg *st, struct store_check *out, char *what, size_t what_len)
{
	bool own;

	/* outside a transaction, one snapshot of its own: the checks compare several tables */
	if (own_begin(st, true, &own) != 0)
		return -1;
	return own_end(st, own, check(st, out, what, what_len));
}

/* ------------------------------------------------------------------------------------------
 * Enrollment tokens, as store_sqlite.c keeps them (the detail of a new one's audit entry:
 * audit_log.h).
 */

int store_pg_token_add(struct store_pg *st, const struct store_token *t, const char *actor)
{
	struct num c = num(t->created_at), n = num(t->not_after);
	const char *lines = t->names != NULL ? t->names : ""; /* NULL: none */
	const char *v[] = {t->hash, t->profile, t->cn != NULL ? t->cn : "", lines, c.s, n.s};
	char *detail;
	PGresult *r = run(st, "add token",
			  "INSERT INTO tokens (hash, profile, cn, names, created_at, not_after) "
			  "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (hash) DO NOTHING",
			  6, v);
	bool added;
	int rc;

	if (r == NULL)
		return -1;
	added = strcmp(PQcmdTuples(r), "1") == 0;
	PQclear(r);
	if (!added)
		return 1;
	detail = audit_log_token_detail(t);
	if (detail == NULL)
		return fail_memory(st);
	rc = store_pg_audit(st, actor, "token", t->cn != NULL ? t->cn : "", detail);
	free(detail);
	return rc;
}

#define TOKEN_COLUMNS "hash, profile, cn, names, created_at, not_after, used_at, used_serial"

/* The row of st->token into *out (its strings point into st->token). */
static void row_to_token(const PGresult *r, struct store_token *out)
{
	memset(out, 0, sizeof(*out));
	out->hash = PQgetvalue(r, 0, 0);
	out->profile = PQgetvalue(r, 0, 1);
	out->cn = PQgetvalue(r, 0, 2);
	out->names = PQgetvalue(r, 0, 3);
	out->created_at = (time_t)get_i64(r, 0, 4);
	out->not_after = (time_t)get_i64(r, 0, 5);
	out->used_at = (time_t)get_i64(r, 0, 6); /* NULL reads as 0 */
	out->used_serial = PQgetvalue(r, 0, 7);
}

int store_pg_token_take(struct store_pg *st, const char *hash, time_t now, struct store_token *out)
{
	struct num n = num(now);
	const char *v[] = {hash, n.s};

	PQclear(st->token);
	/* One statement decides. Of two takers, the second waits for the first one's row lock;
	 * when that commits, PostgreSQL evaluates the WHERE again on the new row, which no
	 * longer matches. */
	st->token = run(st, "take token",
			"UPDATE tokens SET used_at = $2 WHERE hash = $1 AND used_at IS NULL AND "
			"not_after > $2 RETURNING " TOKEN_COLUMNS,
			2, v);
	if (st->token == NULL)
		return -1;
	if (PQntuples(st->token) == 1) {
		row_to_token(st->token, out);
		return 0;
	}
	PQclear(st->token);
	/* Why not: unknown, used or expired (used wins: it says more). */
	st->token = run(st, "look up token", "SELECT " TOKEN_COLUMNS " FROM tokens WHERE hash = $1",
			1, v);
	if (st->token == NULL)
		return -1;
	if (PQntuples(st->token) == 0)
		return 1;
	row_to_token(st->token, out);
	return PQgetisnull(st->token, 0, 6) ? 2 : 3;
}

int store_pg_token_used_by(struct store_pg *st, const char *hash, const char *serial)
{
	const char *v[] = {serial, hash};
	PGresult *r = run(
		st, "record the token's certificate",
		"UPDATE tokens SET used_serial = $1 WHERE hash = $2 AND used_at IS NOT NULL", 2, v);
	bool one;

	if (r == NULL)
		return -1;
	one = strcmp(PQcmdTuples(r), "1") == 0;
	PQclear(r);
	if (!one) {
		st->failure = STORE_FAIL_OTHER;
		snprintf(st->err, sizeof(st->err),
			 "CA inventory: token %.16s is unknown or was not taken; nothing recorded",
			 hash);
		return -1;
	}
	return 0;
}
