/*
 * For the CA service's unit tests (test_ca_enroll.c, test_ca_renew.c, test_ca_revoke_svc.c):
 * a real CA made in a temporary directory by authority_create(), CSRs, tokens, certificates
 * issued through issuance_sign(), the check of a refusal, and a look into the audit log.
 * Header-only: each test includes it once.
 */
#ifndef MTLS_SVC_TESTCA_H
#define MTLS_SVC_TESTCA_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sqlite3.h>

#include "authority.h"
#include "grant.h"
#include "issuance.h"
#include "service.h"
#include "store.h"

/* A CA in a new temporary directory: top (the mkdtemp directory, for removing) and dir
 * (top/ca). */
struct testca {
	char top[64];
	char dir[96];
};

static inline void testca_make(struct testca *t, const char *name)
{
	char err[1024] = "";
	struct authority_init in = {.name = name,
				    .key_alg = "p256",
				    .root_days = 3650,
				    .intermediate_days = 1825,
				    .server_days = 90,
				    .client_days = 90,
				    .crl_days = 7,
				    .crl_url = "http://crl.test/ca.crl"};

	snprintf(t->top, sizeof(t->top), "/tmp/mtls-svc-XXXXXX");
	assert_non_null(mkdtemp(t->top));
	snprintf(t->dir, sizeof(t->dir), "%s/ca", t->top);
	in.dir = t->dir;
	if (authority_create(&in, err, sizeof(err)) != 0)
		fail_msg("authority_create: %s", err);
}

static inline void testca_remove(struct testca *t)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->top);
	assert_int_equal(system(cmd), 0);
}

/* Opened as mtls ca serve does: exclusive open, then the flock only around changes (here:
 * never, as the tests serialize themselves), the key loaded. */
static inline struct authority *testca_open(const struct testca *t)
{
	char err[1024] = "";
	struct authority *ca = authority_open(t->dir, AUTHORITY_EXCLUSIVE, err, sizeof(err));

	if (ca == NULL || authority_load_key(ca, NULL, err, sizeof(err)) != 0)
		fail_msg("open CA: %s", err);
	authority_unlock(ca);
	return ca;
}

static inline EVP_PKEY *testca_key(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");

	assert_non_null(k);
	return k;
}

/* A CSR signed by key: CN cn (NULL: none), subjectAltName san (openssl.cnf syntax, NULL:
 * none), basicConstraints CA:TRUE if ca. PEM (caller frees), its length in *len. */
static inline char *testca_csr(EVP_PKEY *key, const char *cn, const char *san, bool ca, size_t *len)
{
	X509_REQ *req = X509_REQ_new();
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	X509_NAME *name = X509_NAME_new();
	BIO *bio = BIO_new(BIO_s_mem());
	char *data = NULL, *out;
	long n;

	assert_non_null(req);
	assert_non_null(exts);
	assert_non_null(bio);
	if (cn != NULL)
		assert_int_equal(X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
							    (const unsigned char *)cn, -1, -1, 0),
				 1);
	assert_int_equal(X509_REQ_set_subject_name(req, name), 1);
	assert_int_equal(X509_REQ_set_pubkey(req, key), 1);
	if (san != NULL) {
		X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);

		assert_non_null(ext);
		sk_X509_EXTENSION_push(exts, ext);
	}
	if (ca) {
		X509_EXTENSION *ext =
			X509V3_EXT_conf_nid(NULL, NULL, NID_basic_constraints, "critical,CA:TRUE");

		assert_non_null(ext);
		sk_X509_EXTENSION_push(exts, ext);
	}
	if (sk_X509_EXTENSION_num(exts) > 0)
		assert_int_equal(X509_REQ_add_extensions(req, exts), 1);
	assert_true(X509_REQ_sign(req, key, EVP_sha256()) > 0);
	assert_int_equal(PEM_write_bio_X509_REQ(bio, req), 1);
	n = BIO_get_mem_data(bio, &data);
	out = malloc((size_t)n + 1);
	assert_non_null(out);
	memcpy(out, data, (size_t)n);
	out[n] = '\0';
	*len = (size_t)n;
	BIO_free(bio);
	X509_NAME_free(name);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_REQ_free(req);
	return out;
}

/* Issue directly (as mtls ca issue does) a certificate of profile for key, with the names
 * of g already in it, valid from nb to na; committed. Returns it (caller frees). */
static inline X509 *testca_issue_grant(struct authority *ca, const struct grant *g, EVP_PKEY *key,
				       time_t nb, time_t na)
{
	struct issuance is = {.grant = g,
			      .key = key,
			      .not_before = nb,
			      .not_after = na,
			      .issued_at = nb,
			      .actor = "tester",
			      .action = "issue"};
	X509 *cert = NULL;
	char serial[64], err[1024] = "";

	assert_int_equal(store_begin(ca->store), 0);
	if (issuance_sign(ca, &is, &cert, serial, err, sizeof(err)) != 0)
		fail_msg("issuance_sign: %s", err);
	assert_int_equal(store_commit(ca->store), 0);
	return cert;
}

/* The same from a profile and names ("DNS:a", "URI:b", "IP:c"; NULL-terminated). */
static inline X509 *testca_issue(struct authority *ca, const char *profile,
				 const char *const *names, EVP_PKEY *key, time_t nb, time_t na)
{
	struct grant g;
	char err[1024] = "";
	X509 *cert;

	assert_int_equal(grant_init(&g, profile, GRANT_OPERATOR, err, sizeof(err)), 0);
	for (; *names != NULL; names++) {
		const char *n = *names;
		int rc = strncmp(n, "DNS:", 4) == 0
				 ? grant_add_dns(&g.names, n + 4, err, sizeof(err))
			 : strncmp(n, "IP:", 3) == 0
				 ? grant_add_ip(&g.names, n + 3, err, sizeof(err))
				 : grant_add_uri(&g.names, n + 4, err, sizeof(err));

		if (rc != 0)
			fail_msg("%s: %s", n, err);
	}
	cert = testca_issue_grant(ca, &g, key, nb, na);
	grant_free(&g);
	return cert;
}

/* A refusal: rc is -1 and e says status and code, with in_message (unless NULL) in its
 * message. */
static inline void testca_expect(int rc, const struct svc_error *e, int status, const char *code,
				 const char *in_message)
{
	assert_int_equal(rc, -1);
	if (e->status != status || strcmp(e->code, code) != 0 ||
	    (in_message != NULL && strstr(e->message, in_message) == NULL))
		fail_msg("expected %d %s (\"%s\"), got %d %s: %s", status, code,
			 in_message != NULL ? in_message : "", e->status, e->code, e->message);
}

/* How many audit entries have this action (read with SQLite directly). */
static inline int testca_audit_count(const struct testca *t, const char *action)
{
	char path[128];
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	int n = -1;

	snprintf(path, sizeof(path), "%s/ca.db", t->dir);
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(
		sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM audit WHERE action = ?", -1, &s, NULL),
		SQLITE_OK);
	sqlite3_bind_text(s, 1, action, -1, SQLITE_STATIC);
	if (sqlite3_step(s) == SQLITE_ROW)
		n = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	sqlite3_close(db);
	return n;
}

/* The detail of the last audit entry with this action (static buffer). */
static inline const char *testca_audit_last(const struct testca *t, const char *action)
{
	static char detail[2048];
	char path[128];
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;

	detail[0] = '\0';
	snprintf(path, sizeof(path), "%s/ca.db", t->dir);
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db,
					    "SELECT actor || ' | ' || subject || ' | ' || detail "
					    "FROM audit WHERE action = ? ORDER BY seq DESC LIMIT 1",
					    -1, &s, NULL),
			 SQLITE_OK);
	sqlite3_bind_text(s, 1, action, -1, SQLITE_STATIC);
	if (sqlite3_step(s) == SQLITE_ROW)
		snprintf(detail, sizeof(detail), "%s", (const char *)sqlite3_column_text(s, 0));
	sqlite3_finalize(s);
	sqlite3_close(db);
	return detail;
}

static inline int testca_count_one(const struct store_cert *c, void *arg)
{
	(void)c;
	(*(int *)arg)++;
	return 0;
}

/* Rows in the inventory. */
static inline int testca_certs(struct authority *ca)
{
	int n = 0;

	assert_int_equal(store_each_cert(ca->store, STORE_ALL, 0, testca_count_one, &n), 0);
	return n;
}

/* The audit chain and the inventory agree (store_check()). */
static inline void testca_check(struct authority *ca)
{
	struct store_check chk;
	char what[1024] = "";
	int rc = store_check(ca->store, &chk, what, sizeof(what));

	if (rc != 0)
		fail_msg("store_check %d: %s", rc, what);
}

/* The chain (leaf + issuing CA) verifies against the CA's root, for purpose (an X509
 * purpose id, e.g. X509_PURPOSE_SSL_CLIENT), at time at. Returns the leaf (caller frees). */
static inline X509 *testca_verify_chain(struct authority *ca, const char *pem, int purpose,
					time_t at)
{
	BIO *bio = BIO_new_mem_buf(pem, -1);
	X509 *leaf = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	X509 *inter = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	STACK_OF(X509) *untrusted = sk_X509_new_null();
	int ok;

	assert_non_null(leaf);
	assert_non_null(inter);
	assert_int_equal(X509_cmp(inter, ca->issuer), 0);
	assert_int_equal(X509_STORE_add_cert(store, ca->root), 1);
	sk_X509_push(untrusted, inter);
	assert_int_equal(X509_STORE_CTX_init(ctx, store, leaf, untrusted), 1);
	X509_STORE_CTX_set_purpose(ctx, purpose);
	X509_STORE_CTX_set_time(ctx, 0, at);
	ok = X509_verify_cert(ctx);
	if (ok != 1)
		fail_msg("chain does not verify: %s",
			 X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	sk_X509_pop_free(untrusted, X509_free);
	BIO_free(bio);
	return leaf;
}

/* The subjectAltName of cert as "DNS:a, URI:b" (static buffer), in order. */
static inline const char *testca_sans(X509 *cert)
{
	static char buf[2048];
	GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	size_t used = 0;

	buf[0] = '\0';
	for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		const ASN1_STRING *s = g->d.ia5;
		const char *label = g->type == GEN_DNS ? "DNS" : g->type == GEN_URI ? "URI" : "IP";
		char ip[64] = "";

		if (g->type == GEN_IPADD)
			snprintf(ip, sizeof(ip), "%d bytes", ASN1_STRING_length(s));
		used += (size_t)snprintf(
			buf + used, sizeof(buf) - used, "%s%s:%.*s", used > 0 ? ", " : "", label,
			g->type == GEN_IPADD ? (int)strlen(ip) : ASN1_STRING_length(s),
			g->type == GEN_IPADD ? ip : (const char *)ASN1_STRING_get0_data(s));
	}
	GENERAL_NAMES_free(gens);
	return buf;
}

/* The subject's CN (static buffer, "" for none). */
static inline const char *testca_cn(X509 *cert)
{
	static char buf[256];

	buf[0] = '\0';
	X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, sizeof(buf));
	return buf;
}

#endif
