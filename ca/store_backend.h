/*
 * The two implementations of the CA inventory behind store.h: SQLite (store_sqlite.c, the
 * embedded default) and PostgreSQL (store_pg.c, for several CA nodes). store.c picks one by
 * the location given to store_open(). Each function here has the meaning store.h gives it.
 */
#ifndef MTLS_CA_STORE_BACKEND_H
#define MTLS_CA_STORE_BACKEND_H

#include "store.h"

struct store_sqlite;
struct store_sqlite *store_sqlite_open(const char *path, bool create, char *err, size_t err_len);
struct store_sqlite *store_sqlite_open_read(const char *path, char *err, size_t err_len);
const char *store_sqlite_error(const struct store_sqlite *st);
enum store_failure store_sqlite_error_kind(const struct store_sqlite *st);
void store_sqlite_close(struct store_sqlite *st);
int store_sqlite_begin(struct store_sqlite *st);
int store_sqlite_begin_read(struct store_sqlite *st);
int store_sqlite_commit(struct store_sqlite *st);
void store_sqlite_rollback(struct store_sqlite *st);
int store_sqlite_add_cert(struct store_sqlite *st, const struct store_cert *cert);
int store_sqlite_revoke(struct store_sqlite *st, const char *serial, const char *reason,
			time_t when);
int store_sqlite_revoke_audited(struct store_sqlite *st, const char *serial, const char *reason,
				time_t when, const char *actor);
int store_sqlite_get_cert(struct store_sqlite *st, const char *serial, struct store_cert *out);
int store_sqlite_key_compromised(struct store_sqlite *st, const char *spki_sha256, char serial[64]);
int store_sqlite_each_cert(struct store_sqlite *st, enum store_filter filter, time_t before,
			   int (*fn)(const struct store_cert *cert, void *arg), void *arg);
int store_sqlite_next_crl_number(struct store_sqlite *st, time_t this_update, time_t next_update,
				 int64_t *number);
int store_sqlite_crl_next(struct store_sqlite *st, int64_t floor, int64_t *number);
int store_sqlite_crl_add(struct store_sqlite *st, int64_t number, time_t this_update,
			 time_t next_update, size_t revoked, const char *sha256, const char *actor);
int store_sqlite_crl_logged(struct store_sqlite *st, int64_t number, char sha256[65]);
int store_sqlite_crl_der_put(struct store_sqlite *st, int64_t number, const unsigned char *der,
			     size_t len);
int store_sqlite_crl_der_latest(struct store_sqlite *st, int64_t *number, unsigned char **der,
				size_t *len);
int store_sqlite_set_meta(struct store_sqlite *st, const char *key, const char *value);
int store_sqlite_get_meta(struct store_sqlite *st, const char *key, char *buf, size_t len);
int store_sqlite_audit(struct store_sqlite *st, const char *actor, const char *action,
		       const char *subject, const char *detail);
int store_sqlite_audit_verify(struct store_sqlite *st, int64_t *count, int64_t *bad_seq);
int store_sqlite_audit_hash(struct store_sqlite *st, int64_t seq, char hash[65]);
int store_sqlite_token_add(struct store_sqlite *st, const struct store_token *t, const char *actor);
int store_sqlite_token_take(struct store_sqlite *st, const char *hash, time_t now,
			    struct store_token *out);
int store_sqlite_token_used_by(struct store_sqlite *st, const char *hash, const char *serial);
int store_sqlite_check(struct store_sqlite *st, struct store_check *out, char *what,
		       size_t what_len);

struct store_pg;
struct store_pg *store_pg_open(const char *url, bool create, char *err, size_t err_len);
const char *store_pg_error(const struct store_pg *st);
enum store_failure store_pg_error_kind(const struct store_pg *st);
void store_pg_close(struct store_pg *st);
int store_pg_begin(struct store_pg *st);
int store_pg_begin_read(struct store_pg *st);
int store_pg_commit(struct store_pg *st);
void store_pg_rollback(struct store_pg *st);
int store_pg_add_cert(struct store_pg *st, const struct store_cert *cert);
int store_pg_revoke(struct store_pg *st, const char *serial, const char *reason, time_t when);
int store_pg_revoke_audited(struct store_pg *st, const char *serial, const char *reason,
			    time_t when, const char *actor);
int store_pg_get_cert(struct store_pg *st, const char *serial, struct store_cert *out);
int store_pg_key_compromised(struct store_pg *st, const char *spki_sha256, char serial[64]);
int store_pg_each_cert(struct store_pg *st, enum store_filter filter, time_t before,
		       int (*fn)(const struct store_cert *cert, void *arg), void *arg);
int store_pg_next_crl_number(struct store_pg *st, time_t this_update, time_t next_update,
			     int64_t *number);
int store_pg_crl_next(struct store_pg *st, int64_t floor, int64_t *number);
int store_pg_crl_add(struct store_pg *st, int64_t number, time_t this_update, time_t next_update,
		     size_t revoked, const char *sha256, const char *actor);
int store_pg_crl_logged(struct store_pg *st, int64_t number, char sha256[65]);
int store_pg_crl_der_put(struct store_pg *st, int64_t number, const unsigned char *der, size_t len);
int store_pg_crl_der_latest(struct store_pg *st, int64_t *number, unsigned char **der, size_t *len);
int store_pg_set_meta(struct store_pg *st, const char *key, const char *value);
int store_pg_get_meta(struct store_pg *st, const char *key, char *buf, size_t len);
int store_pg_audit(struct store_pg *st, const char *actor, const char *action, const char *subject,
		   const char *detail);
int store_pg_audit_verify(struct store_pg *st, int64_t *count, int64_t *bad_seq);
int store_pg_audit_hash(struct store_pg *st, int64_t seq, char hash[65]);
int store_pg_token_add(struct store_pg *st, const struct store_token *t, const char *actor);
int store_pg_token_take(struct store_pg *st, const char *hash, time_t now, struct store_token *out);
int store_pg_token_used_by(struct store_pg *st, const char *hash, const char *serial);
int store_pg_check(struct store_pg *st, struct store_check *out, char *what, size_t what_len);
#endif /* MTLS_CA_STORE_BACKEND_H */
