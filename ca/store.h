/*
 * The CA's inventory: issued certificates, revocations, CRL numbers and an append-only,
 * hash-chained audit log.
 *
 * A small interface with two implementations (store.c picks one by the location):
 *   - SQLite (store_sqlite.c): one file, WAL, synchronous=FULL, mode 0600; the embedded
 *     default, for one CA node.
 *   - PostgreSQL (store_pg.c, libpq): a postgresql:// URL, for several CA nodes sharing one
 *     database. Writers that extend the audit chain or take CRL numbers hold one advisory
 *     lock until they commit, so that the chain stays linear and CRL numbers increase
 *     strictly whichever node signs.
 *
 * Every change happens inside store_begin() / store_commit(); the audit entry describing a
 * change is appended in the same transaction, so either both happen or neither.
 */
#ifndef MTLS_CA_STORE_H
#define MTLS_CA_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct store;

struct store_cert {
	char serial[64]; /* upper-case hex of whole bytes, as BN_bn2hex() and openssl print */
	const char *subject;
	const char *sans; /* "DNS:a, URI:b" */
	const char *spki_sha256;
	const char *profile;
	time_t not_before;
	time_t not_after;
	time_t issued_at;
	bool revoked;
	time_t revoked_at;
	const char *revocation_reason;
	const uint8_t *der;
	size_t der_len;
};

enum store_filter {
	STORE_ALL,
	STORE_VALID,   /* not revoked and not expired */
	STORE_REVOKED, /* revoked (for CRLs and `list --revoked`) */
	STORE_EXPIRING /* not revoked, notAfter before the given time */
};

/* Open the store at location: a SQLite file's path, or a postgresql:// (postgres://) URL. With
 * create, a new store is made (the file, or the database, must not hold one yet); without,
 * it must already be a CA inventory: an empty or foreign database is refused rather than
 * silently started afresh. NULL with a message in err. */
struct store *store_open(const char *location, bool create, char *err, size_t err_len);
/* The same for a command that only reads (an existing store): on a disk too full for
 * SQLite's shared WAL index (ca.db-shm, 32 KiB), it opens again holding the database file
 * locked, with the index in memory, so that the inventory can still be listed and audited.
 * Writers wait meanwhile (busy timeout). */
struct store *store_open_read(const char *location, char *err, size_t err_len);
/* Does location name a PostgreSQL database (postgresql:// or postgres://)? */
bool store_is_url(const char *location);
/* Is url a PostgreSQL URL fit to be written into a CA directory (DIR/store): parseable and
 * without a password (which belongs in PGPASSFILE or PGPASSWORD)? 0, or -1 with err. */
int store_url_check(const char *url, char *err, size_t err_len);
void store_close(struct store *st);
const char *store_error(const struct store *st);
/* What kind of failure the last error message describes, for a service that answers "try
 * again later" or "disk full" rather than "internal error". */
enum store_failure {
	STORE_FAIL_OTHER,	/* anything else (I/O, a damaged inventory, out of memory) */
	STORE_FAIL_UNAVAILABLE, /* busy or locked past the busy timeout, or read-only */
	STORE_FAIL_FULL,	/* the disk (or quota) is full */
};
enum store_failure store_error_kind(const struct store *st);

/* A write transaction. SQLite: BEGIN IMMEDIATE, one writer at a time; others wait (busy
 * timeout). PostgreSQL: READ COMMITTED; the first operation that reads or extends the audit
 * chain or the CRL numbers (store_audit() and everything that audits, store_crl_next(),
 * store_check(), ...) takes the store's advisory lock, held until commit or rollback:
 * others wait (statement_timeout). */
int store_begin(struct store *st);
/* BEGIN (deferred): a read transaction, so that several queries see one snapshot of the
 * inventory whatever commits meanwhile. End it with store_rollback(). */
int store_begin_read(struct store *st);
int store_commit(struct store *st);
void store_rollback(struct store *st);

/* Insert an issued certificate. Returns 1 if the serial already exists (pick another),
 * 0 on success, -1 on error. */
int store_add_cert(struct store *st, const struct store_cert *cert);
/* Mark as revoked. Returns 0, 1 if no such serial, 2 if already revoked, -1 on error.
 * Revocations made this way are not in the audit log, and store_check() reports them:
 * the CA revokes with store_revoke_audited(). */
int store_revoke(struct store *st, const char *serial, const char *reason, time_t when);
/* Mark as revoked and append the audit entry that records it ("revoke": serial, reason and
 * time, which the hash chain then covers), in the current transaction. Same returns as
 * store_revoke(). */
int store_revoke_audited(struct store *st, const char *serial, const char *reason, time_t when,
			 const char *actor);
/* Look up one certificate; the strings in *out are valid until the next store call.
 * 0 found, 1 not found, -1 error. */
int store_get_cert(struct store *st, const char *serial, struct store_cert *out);
/* Was a certificate for this key (the SHA-256 of its SPKI, hex) revoked for keyCompromise?
 * 1 yes (the serial of one in serial), 0 no, -1 error. */
int store_key_compromised(struct store *st, const char *spki_sha256, char serial[64]);
/* Call fn for each certificate matching filter (ordered by notAfter). before is the time
 * bound for STORE_EXPIRING. fn returns non-zero to stop. */
int store_each_cert(struct store *st, enum store_filter filter, time_t before,
		    int (*fn)(const struct store_cert *cert, void *arg), void *arg);
/* Allocate the next CRL number (starting at 1) and record the CRL's dates. Not in the audit
 * log: the CA publishes with store_crl_next() and store_crl_add(). */
int store_next_crl_number(struct store *st, time_t this_update, time_t next_update,
			  int64_t *number);
/* The number for the next CRL: above every number the inventory has allocated, every
 * number its audit log records, and floor (the number of the CRL found on disk). Call
 * inside the transaction that then calls store_crl_add(), before signing. */
int store_crl_next(struct store *st, int64_t floor, int64_t *number);
/* Record the CRL just signed with number: its dates, and an audit entry ("crl") with its
 * number, how many certificates it revokes and the SHA-256 (hex) of the file to publish. */
int store_crl_add(struct store *st, int64_t number, time_t this_update, time_t next_update,
		  size_t revoked, const char *sha256, const char *actor);
/* The SHA-256 (hex) the audit log records for CRL number: 0 found, 1 not recorded, -1
 * error. */
int store_crl_logged(struct store *st, int64_t number, char sha256[65]);
/* Keep the signed CRL (DER) number in the inventory, in the transaction that publishes it
 * (after store_crl_add()), so that every node can serve the newest CRL whichever node
 * signed it. Only the newest is kept. 0, or -1. */
int store_crl_der_put(struct store *st, int64_t number, const unsigned char *der, size_t len);
/* The newest CRL kept by store_crl_der_put(): its number and a copy of its DER in *der
 * (free() it). 0, 1 none kept yet, -1 error. */
int store_crl_der_latest(struct store *st, int64_t *number, unsigned char **der, size_t *len);

/* Settings of the CA (profile lifetimes, CRL distribution point, ...). */
int store_set_meta(struct store *st, const char *key, const char *value);
/* Copy of the value into buf; 1 if unset; -1 if it does not fit (never cut short). */
int store_get_meta(struct store *st, const char *key, char *buf, size_t len);

/* Append to the audit log: who did what to which subject. The entry's hash covers the
 * previous entry's hash, so editing or deleting a row breaks the chain. */
int store_audit(struct store *st, const char *actor, const char *action, const char *subject,
		const char *detail);
/* Walk the chain. 0 intact (entries counted in *count), 1 broken (the first bad sequence
 * number in *bad_seq), -1 error. */
int store_audit_verify(struct store *st, int64_t *count, int64_t *bad_seq);
/* The hash of audit entry seq, as stored (store_check() verified it if seq <= its
 * entries): 0, 1 no such entry, -1 error. */
int store_audit_hash(struct store *st, int64_t seq, char hash[65]);

/* One-time enrollment tokens (ca/token.h). The store keeps the SHA-256 of a token's secret,
 * never the secret, with what it grants. */
struct store_token {
	const char *hash;    /* hex SHA-256 of the secret (token_hash_hex()) */
	const char *profile; /* server | client | peer */
	const char *cn;	     /* "" for none */
	const char *names;   /* one grant name per line, "DNS:x\nURI:spiffe://..\nIP:10.0.0.1" */
	time_t created_at;
	time_t not_after;
	time_t used_at;		 /* 0: unused */
	const char *used_serial; /* "" until store_token_used_by() */
};
/* Record a new token and its audit entry ("token": hash prefix (16 hex), profile, names,
 * not_after), in the caller's transaction. 0, 1 hash exists, -1 error. */
int store_token_add(struct store *st, const struct store_token *t, const char *actor);
/* Take the token for one issuance, in the caller's transaction (store_begin()): marks it used
 * at now if it is unused and now < not_after, in one UPDATE, so that exactly one of two
 * concurrent takers wins. 0 taken (*out filled), 1 unknown, 2 expired, 3 already used (*out
 * filled: used_at, used_serial), -1 error. The strings in *out are valid until the next
 * token call on st. */
int store_token_take(struct store *st, const char *hash, time_t now, struct store_token *out);
/* Record the serial issued with a taken token (same transaction). 0, or -1 (also if the
 * token is unknown or was not taken). */
int store_token_used_by(struct store *st, const char *hash, const char *serial);

struct store_check {
	int64_t entries;	 /* audit entries verified (before the bad one, if broken) */
	int64_t bad_seq;	 /* the first bad entry, when the chain is broken */
	char head[65];		 /* the hash of entry `entries` (hex), "" for an empty log */
	int64_t crl_allocated;	 /* highest CRL number in the inventory (0: none) */
	int64_t crl_logged_min;	 /* lowest and highest CRL number the audit log records with */
	int64_t crl_logged_max;	 /* its SHA-256 (0: none, an inventory older than such entries) */
	char crl_logged_sha[65]; /* the SHA-256 (hex) logged for crl_logged_max */
};

/* Everything the inventory can check by itself: the audit chain is intact; its append-only
 * triggers are in place; the CRL numbers it logs go up and never repeat, and the CRL table
 * holds exactly those (from the first logged one on); the certificates table and the audit
 * log agree on every revocation (serial, reason, time): a revoked row without its "revoke"
 * entry, or a "revoke" entry whose row is valid, gone or different, means the table was
 * altered behind the CA's back. Returns 0 consistent, 1 the chain is broken
 * (out->bad_seq), 2 the inventory was altered (one line in what saying how and what to
 * do), -1 error. */
int store_check(struct store *st, struct store_check *out, char *what, size_t what_len);

#endif /* MTLS_CA_STORE_H */
