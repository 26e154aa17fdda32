/*
 * The CA inventory's audit log, whichever database keeps it (store_sqlite.c, store_pg.c): the
 * hash chain, the details of its entries as they are written and read back, and what
 * store_check() compares between the log and the certificates and CRL tables. The database
 * access stays in each backend, which hands the rows in (struct audit_log_entry, and the
 * callbacks of struct audit_log_ops).
 *
 * The details of the entries this code reads back:
 *   revoke  "serial 0A1B, reason keyCompromise, at 2026-01-02T03:04:05Z"
 *           (before revocation times were logged: "serial 0A1B, reason keyCompromise")
 *   crl     "CRL 12, 3 revoked, sha256 <64 hex digits>"
 *           (before CRLs were logged with their hash: "published")
 * and of a new enrollment token:
 *   token   "token 0123456789abcdef, profile client, names URI:spiffe://a/b, until
 *           2026-01-02T03:04:05Z" (the first 16 hex digits of the hash; the names as a
 *           comma-separated list; the entry's subject is the granted common name, "" for none)
 */
#ifndef MTLS_CA_AUDIT_LOG_H
#define MTLS_CA_AUDIT_LOG_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "store.h"

/* One entry of the log (the columns the hash covers); the strings are the caller's. */
struct audit_log_entry {
	int64_t seq, at;
	const char *actor, *action, *subject, *detail;
};

/* The prev_hash of the first entry. */
extern const char audit_log_genesis[65];

/* sha256(prev | seq | at | actor | action | subject | detail), hex, into out. Fields are
 * length-prefixed so that no two different entries hash the same input. */
void audit_log_hash(const char *prev, const struct audit_log_entry *e, char out[65]);

/* A walk over the chain in order: the backend reads the rows (seq ascending) and hands each
 * to audit_log_walk_next(). Its fields are the walk's own. */
struct audit_log_walk {
	char prev[65];	  /* the hash of the last entry that checked out */
	int64_t next_seq; /* the sequence number the next entry must have */
	int64_t *count;
	int64_t *bad_seq;
	int (*fn)(const struct audit_log_entry *e, void *arg);
	void *arg;
};
/* Start a walk: *count = 0; fn (if not NULL) is called for each entry that checks out. */
void audit_log_walk_start(struct audit_log_walk *w, int64_t *count, int64_t *bad_seq,
			  int (*fn)(const struct audit_log_entry *e, void *arg), void *arg);
/* The next row, with the prev_hash and hash stored in it. 0 it checks out (counted in
 * *count), 1 the chain is broken there (the first bad sequence number in *bad_seq), 2 fn
 * returned non-zero: stop the walk there. */
int audit_log_walk_next(struct audit_log_walk *w, const struct audit_log_entry *e,
			const char *stored_prev, const char *stored_hash);
/* After the last row: the hash of the last entry into head, "" for an empty log. */
void audit_log_walk_head(const struct audit_log_walk *w, char head[65]);

/* The detail of a "revoke" entry, into buf (cut short if len is too small). */
void audit_log_revoke_detail(char *buf, size_t len, const char *serial, const char *reason,
			     time_t when);
/* The detail of a "crl" entry: the CRL's number, how many certificates it revokes and the
 * SHA-256 (hex) of its file. */
void audit_log_crl_detail(char *buf, size_t len, int64_t number, size_t revoked,
			  const char *sha256);
/* A LIKE pattern (SQL) that every "crl" entry of number matches ("CRL 12, %"), and a few
 * others: read them with audit_log_parse_crl(). */
void audit_log_crl_like(char *buf, size_t len, int64_t number);
/* A "crl" entry's detail: its number (> 0) and SHA-256 (64 lower-case hex digits). 0, or -1
 * not of that form. */
int audit_log_parse_crl(const char *detail, int64_t *number, char sha256[65]);
/* The number for the next CRL: above floor, the highest number of the CRL table (table) and
 * the highest the log records (logged), so that no number is published twice. */
int64_t audit_log_crl_next(int64_t floor, int64_t table, int64_t logged);
/* The detail of a "token" entry for t, which the caller free()s; NULL out of memory. */
char *audit_log_token_detail(const struct store_token *t);

/* What audit_log_check() needs of a backend. db is the backend's store; every function
 * returns -1 on error with the backend's error message set. */
struct audit_log_ops {
	/* Read the whole log through an audit_log_walk started with count, bad_seq, fn and
	 * arg: 0 intact (head set, as audit_log_walk_head()), 1 broken, 2 fn stopped it. */
	int (*walk)(void *db, int64_t *count, int64_t *bad_seq, char head[65],
		    int (*fn)(const struct audit_log_entry *e, void *arg), void *arg);
	/* Are the log's append-only triggers in place? 0 yes, 2 no (what says which, see
	 * audit_log_trigger_altered()). */
	int (*triggers)(void *db, char *what, size_t what_len);
	/* The highest number of the CRL table (0: none). */
	int64_t (*max_crl_number)(void *db);
	/* The numbers of the CRL table from `from` on, ascending, each to fn until fn returns
	 * non-zero: that value, or 0 after the last. */
	int (*crl_numbers)(void *db, int64_t from, int (*fn)(int64_t number, void *arg), void *arg);
	/* store_get_cert(). */
	int (*get_cert)(void *db, const char *serial, struct store_cert *out);
	/* The revoked rows of the certificates table (serial, reason or NULL, revoked_at), each
	 * to fn until fn returns non-zero: that value, or 0 after the last. */
	int (*revoked)(void *db,
		       int (*fn)(const char *serial, const char *reason, time_t at, void *arg),
		       void *arg);
	/* Set the backend's error to "out of memory". */
	void (*out_of_memory)(void *db);
};

/* store_check() on db, in the caller's transaction: the chain through ops->walk, then the
 * triggers, the CRL numbers and the revocations as store.h describes. The same returns. */
int audit_log_check(const struct audit_log_ops *ops, void *db, struct store_check *out, char *what,
		    size_t what_len);
/* The message of store_check() for an append-only trigger that was dropped, disabled or
 * changed (how), into what. */
void audit_log_trigger_altered(char *what, size_t what_len, const char *name, const char *how);

#endif /* MTLS_CA_AUDIT_LOG_H */
