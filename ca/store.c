/*
 * The CA inventory: which implementation serves a location (store_backend.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "store.h"
#include "store_backend.h"

/* Exactly one of the two is set. */
struct store {
	struct store_sqlite *lite;
	struct store_pg *pg;
};

/* The same call on whichever implementation st has. */
#define CALL(fn, ...)                                                                              \
	(st->pg != NULL ? store_pg_##fn(st->pg, __VA_ARGS__)                                       \
			: store_sqlite_##fn(st->lite, __VA_ARGS__))
#define CALL0(fn) (st->pg != NULL ? store_pg_##fn(st->pg) : store_sqlite_##fn(st->lite))

bool store_is_url(const char *location)
{
	return strncmp(location, "postgresql://", 13) == 0 ||
	       strncmp(location, "postgres://", 11) == 0;
}

int store_url_check(const char *url, char *err, size_t err_len)
{
	char *why = NULL;
	PQconninfoOption *opts;
	bool password = false;

	if (!store_is_url(url)) {
		snprintf(
			err, err_len,
			"--store must be a postgresql:// URL (postgresql://user@host:5432/dbname)");
		return -1;
	}
	opts = PQconninfoParse(url, &why);
	if (opts == NULL) {
		/* libpq's message ends in a newline */
		snprintf(err, err_len, "--store: not a usable PostgreSQL URL: %.*s",
			 why != NULL ? (int)strcspn(why, "\n") : 13,
			 why != NULL ? why : "out of memory");
		PQfreemem(why);
		return -1;
	}
	for (const PQconninfoOption *o = opts; o->keyword != NULL; o++)
		if (strcmp(o->keyword, "password") == 0 && o->val != NULL)
			password = true;
	PQconninfoFree(opts);
	if (password) {
		/* the URL is written into the CA directory, which is copied to other nodes */
		snprintf(err, err_len,
			 "--store: the URL carries a password; leave it out and give the password "
			 "through PGPASSFILE (~/.pgpass) or PGPASSWORD");
		return -1;
	}
	return 0;
}

static struct store *wrap(struct store_sqlite *lite, struct store_pg *pg, char *err, size_t err_len)
{
	struct store *st;

	if (lite == NULL && pg == NULL)
		return NULL;
	st = calloc(1, sizeof(*st));
	if (st == NULL) {
		store_sqlite_close(lite);
		store_pg_close(pg);
		snprintf(err, err_len, "out of memory");
		return NULL;
	}
	st->lite = lite;
	st->pg = pg;
	return st;
}

struct store *store_open(const char *location, bool create, char *err, size_t err_len)
{
	if (store_is_url(location))
		return wrap(NULL, store_pg_open(location, create, err, err_len), err, err_len);
	return wrap(store_sqlite_open(location, create, err, err_len), NULL, err, err_len);
}

struct store *store_open_read(const char *location, char *err, size_t err_len)
{
	/* PostgreSQL has no local file to be short of room for: the same open */
	if (store_is_url(location))
		return wrap(NULL, store_pg_open(location, false, err, err_len), err, err_len);
	return wrap(store_sqlite_open_read(location, err, err_len), NULL, err, err_len);
}

void store_close(struct store *st)
{
	if (st == NULL)
		return;
	store_sqlite_close(st->lite);
	store_pg_close(st->pg);
	free(st);
}

const char *store_error(const struct store *st)
{
	return CALL0(error);
}

enum store_failure store_error_kind(const struct store *st)
{
	return CALL0(error_kind);
}

int store_begin(struct store *st)
{
	return CALL0(begin);
}

int store_begin_read(struct store *st)
{
	return CALL0(begin_read);
}

int store_commit(struct store *st)
{
	return CALL0(commit);
}

void store_rollback(struct store *st)
{
	CALL0(rollback);
}

int store_add_cert(struct store *st, const struct store_cert *cert)
{
	return CALL(add_cert, cert);
}

int store_revoke(struct store *st, const char *serial, const char *reason, time_t when)
{
	return CALL(revoke, serial, reason, when);
}

int store_revoke_audited(struct store *st, const char *serial, const char *reason, time_t when,
			 const char *actor)
{
	return CALL(revoke_audited, serial, reason, when, actor);
}

int store_get_cert(struct store *st, const char *serial, struct store_cert *out)
{
	return CALL(get_cert, serial, out);
}

int store_key_compromised(struct store *st, const char *spki_sha256, char serial[64])
{
	return CALL(key_compromised, spki_sha256, serial);
}

int store_each_cert(struct store *st, enum store_filter filter, time_t before,
		    int (*fn)(const struct store_cert *cert, void *arg), void *arg)
{
	return CALL(each_cert, filter, before, fn, arg);
}

int store_next_crl_number(struct store *st, time_t this_update, time_t next_update, int64_t *number)
{
	return CALL(next_crl_number, this_update, next_update, number);
}

int store_crl_next(struct store *st, int64_t floor, int64_t *number)
{
	return CALL(crl_next, floor, number);
}

int store_crl_add(struct store *st, int64_t number, time_t this_update, time_t next_update,
		  size_t revoked, const char *sha256, const char *actor)
{
	return CALL(crl_add, number, this_update, next_update, revoked, sha256, actor);
}

int store_crl_logged(struct store *st, int64_t number, char sha256[65])
{
	return CALL(crl_logged, number, sha256);
}

int store_crl_der_put(struct store *st, int64_t number, const unsigned char *der, size_t len)
{
	return CALL(crl_der_put, number, der, len);
}

int store_crl_der_latest(struct store *st, int64_t *number, unsigned char **der, size_t *len)
{
	return CALL(crl_der_latest, number, der, len);
}

int store_set_meta(struct store *st, const char *key, const char *value)
{
	return CALL(set_meta, key, value);
}

int store_get_meta(struct store *st, const char *key, char *buf, size_t len)
{
	return CALL(get_meta, key, buf, len);
}

int store_audit(struct store *st, const char *actor, const char *action, const char *subject,
		const char *detail)
{
	return CALL(audit, actor, action, subject, detail);
}

int store_audit_verify(struct store *st, int64_t *count, int64_t *bad_seq)
{
	return CALL(audit_verify, count, bad_seq);
}

int store_audit_hash(struct store *st, int64_t seq, char hash[65])
{
	return CALL(audit_hash, seq, hash);
}

int store_token_add(struct store *st, const struct store_token *t, const char *actor)
{
	return CALL(token_add, t, actor);
}

int store_token_take(struct store *st, const char *hash, time_t now, struct store_token *out)
{
	return CALL(token_take, hash, now, out);
}

int store_token_used_by(struct store *st, const char *hash, const char *serial)
{
	return CALL(token_used_by, hash, serial);
}

int store_check(struct store *st, struct store_check *out, char *what, size_t what_len)
{
	return CALL(check, out, what, what_len);
}
