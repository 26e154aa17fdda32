/*
 * CRLs: v2, CRL number, AKI, reason codes, and an issuing distribution point that matches
 * the certificates' CRL distribution point (so OpenSSL sees no scope mismatch).
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/asn1t.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include "authority.h"
#include "files.h"
#include "keys.h"

static const struct {
	const char *name;
	int code;
} reasons[] = {
	{"unspecified", CRL_REASON_UNSPECIFIED},
	{"keyCompromise", CRL_REASON_KEY_COMPROMISE},
	{"affiliationChanged", CRL_REASON_AFFILIATION_CHANGED},
	{"superseded", CRL_REASON_SUPERSEDED},
	{"cessationOfOperation", CRL_REASON_CESSATION_OF_OPERATION},
	{"privilegeWithdrawn", CRL_REASON_PRIVILEGE_WITHDRAWN},
};

int crl_reason_code(const char *name)
{
	for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
		if (strcmp(reasons[i].name, name) == 0)
			return reasons[i].code;
	return -1;
}

const char *crl_reason_names(void)
{
	return "unspecified, keyCompromise, affiliationChanged, superseded, "
	       "cessationOfOperation, privilegeWithdrawn";
}

/* The audit checkpoint in every CRL: how many entries the audit log had when the CRL was
 * signed and the hash of the last of them (the chain head), in a non-critical private
 * extension. Whoever holds a CRL can then tell whether the log was cut back or rewritten
 * since (crl_check(), crl_check_file()): the chain alone cannot show that its newest entries
 * were removed. The OID is a UUID OID (ITU-T X.667: 2.25.<UUID as an integer>), which needs
 * no registration; peers ignore the extension (not critical). */
#define CHECKPOINT_OID "2.25.245698526239858469803183216994100437801"

typedef struct {
	ASN1_INTEGER *entries;
	ASN1_OCTET_STRING *head;
} CRL_CHECKPOINT;

ASN1_SEQUENCE(CRL_CHECKPOINT) =
	{
		ASN1_SIMPLE(CRL_CHECKPOINT, entries, ASN1_INTEGER),
		ASN1_SIMPLE(CRL_CHECKPOINT, head, ASN1_OCTET_STRING),
} static_ASN1_SEQUENCE_END(CRL_CHECKPOINT)

		IMPLEMENT_STATIC_ASN1_ALLOC_FUNCTIONS(CRL_CHECKPOINT)

	/* Add the checkpoint (entries, head as 64 hex digits). 0 or -1. */
	static int add_checkpoint(X509_CRL * crl, int64_t entries, const char *head)
{
	ASN1_OBJECT *oid = OBJ_txt2obj(CHECKPOINT_OID, 1);
	CRL_CHECKPOINT *cp = CRL_CHECKPOINT_new();
	ASN1_OCTET_STRING *value = ASN1_OCTET_STRING_new();
	X509_EXTENSION *ext = NULL;
	unsigned char hash[32], *der = NULL;
	size_t len = 0;
	int der_len, ok = 0;

	if (oid == NULL || cp == NULL || value == NULL ||
	    OPENSSL_hexstr2buf_ex(hash, sizeof(hash), &len, head, '\0') != 1 || len != 32 ||
	    ASN1_INTEGER_set_int64(cp->entries, entries) != 1 ||
	    ASN1_OCTET_STRING_set(cp->head, hash, 32) != 1)
		goto out;
	der_len = ASN1_item_i2d((ASN1_VALUE *)cp, &der, ASN1_ITEM_rptr(CRL_CHECKPOINT));
	if (der_len <= 0 || ASN1_OCTET_STRING_set(value, der, der_len) != 1)
		goto out;
	ext = X509_EXTENSION_create_by_OBJ(NULL, oid, 0, value);
	ok = ext != NULL && X509_CRL_add_ext(crl, ext, -1) == 1;
out:
	X509_EXTENSION_free(ext);
	OPENSSL_free(der);
	ASN1_OCTET_STRING_free(value);
	CRL_CHECKPOINT_free(cp);
	ASN1_OBJECT_free(oid);
	return ok ? 0 : -1;
}

/* The checkpoint of a CRL (already verified as this CA's): 1 found (*entries, head as hex),
 * 0 none (a CRL from before checkpoints), -1 present but malformed. */
static int read_checkpoint(X509_CRL *crl, int64_t *entries, char head[65])
{
	ASN1_OBJECT *oid = OBJ_txt2obj(CHECKPOINT_OID, 1);
	int at = oid != NULL ? X509_CRL_get_ext_by_OBJ(crl, oid, -1) : -2;
	CRL_CHECKPOINT *cp = NULL;
	const unsigned char *p, *end;
	ASN1_OCTET_STRING *value;
	int rc = -1;

	if (at == -1)
		rc = 0;
	if (at < 0 || X509_CRL_get_ext_by_OBJ(crl, oid, at) != -1)
		goto out;
	value = X509_EXTENSION_get_data(X509_CRL_get_ext(crl, at));
	p = ASN1_STRING_get0_data(value);
	end = p + ASN1_STRING_length(value);
	cp = (CRL_CHECKPOINT *)ASN1_item_d2i(NULL, &p, ASN1_STRING_length(value),
					     ASN1_ITEM_rptr(CRL_CHECKPOINT));
	if (cp == NULL || p != end || ASN1_INTEGER_get_int64(entries, cp->entries) != 1 ||
	    *entries <= 0 || ASN1_STRING_length(cp->head) != 32)
		goto out;
	for (int i = 0; i < 32; i++)
		snprintf(head + 2 * i, 3, "%02x", ASN1_STRING_get0_data(cp->head)[i]);
	rc = 1;
out:
	CRL_CHECKPOINT_free(cp);
	ASN1_OBJECT_free(oid);
	return rc;
}

struct build {
	X509_CRL *crl;
	int failed;
};

static int add_entry(const struct store_cert *c, void *arg)
{
	struct build *b = arg;
	X509_REVOKED *r = X509_REVOKED_new();
	ASN1_TIME *when = ASN1_TIME_set(NULL, c->revoked_at);
	ASN1_ENUMERATED *code = ASN1_ENUMERATED_new();
	BIGNUM *bn = NULL;
	ASN1_INTEGER *serial = NULL;
	int reason = crl_reason_code(c->revocation_reason != NULL ? c->revocation_reason : "");

	/* RFC 5280 5.3.1: the reasonCode unspecified SHOULD be absent, not stated */
	if (r == NULL || when == NULL || code == NULL || BN_hex2bn(&bn, c->serial) == 0 ||
	    (serial = BN_to_ASN1_INTEGER(bn, NULL)) == NULL ||
	    X509_REVOKED_set_serialNumber(r, serial) != 1 ||
	    X509_REVOKED_set_revocationDate(r, when) != 1 ||
	    (reason > CRL_REASON_UNSPECIFIED &&
	     (ASN1_ENUMERATED_set(code, reason) != 1 ||
	      X509_REVOKED_add1_ext_i2d(r, NID_crl_reason, code, 0, 0) != 1)) ||
	    X509_CRL_add0_revoked(b->crl, r) != 1) {
		X509_REVOKED_free(r);
		b->failed = 1;
	}
	ASN1_INTEGER_free(serial);
	BN_free(bn);
	ASN1_ENUMERATED_free(code);
	ASN1_TIME_free(when);
	return b->failed;
}

static int add_ext(X509_CRL *crl, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
	int ok = ext != NULL && X509_CRL_add_ext(crl, ext, -1) == 1;

	X509_EXTENSION_free(ext);
	return ok ? 0 : -1;
}

/* IDP with the same fullName URI as the certificates' CRL distribution point. */
static int add_idp(X509_CRL *crl, const char *url)
{
	ISSUING_DIST_POINT *idp = ISSUING_DIST_POINT_new();
	GENERAL_NAME *g = GENERAL_NAME_new();
	ASN1_IA5STRING *uri = ASN1_IA5STRING_new();
	int ok = 0;

	if (idp == NULL || g == NULL || uri == NULL ||
	    ASN1_STRING_set(uri, url, (int)strlen(url)) != 1)
		goto out;
	GENERAL_NAME_set0_value(g, GEN_URI, uri);
	uri = NULL;
	idp->distpoint = DIST_POINT_NAME_new();
	if (idp->distpoint == NULL)
		goto out;
	idp->distpoint->type = 0;
	idp->distpoint->name.fullname = GENERAL_NAMES_new();
	if (idp->distpoint->name.fullname == NULL ||
	    !sk_GENERAL_NAME_push(idp->distpoint->name.fullname, g))
		goto out;
	g = NULL;
	ok = X509_CRL_add1_ext_i2d(crl, NID_issuing_distribution_point, idp, 1, 0) == 1;
out:
	ASN1_IA5STRING_free(uri);
	GENERAL_NAME_free(g);
	ISSUING_DIST_POINT_free(idp);
	return ok ? 0 : -1;
}

static const char *reason_name(int code)
{
	for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
		if (reasons[i].code == code)
			return reasons[i].name;
	return "unknown";
}

static const char *format_time(time_t t, char buf[32])
{
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, 32, "@%lld", (long long)t);
	return buf;
}

static void sha256_hex(const void *data, size_t len, char out[65])
{
	unsigned char md[32];

	SHA256(data, len, md);
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* One entry of the published CRL against the inventory: 0 agree, 1 not (err), -1 error. */
static int check_entry(struct authority *ca, const char *name, int64_t number, X509_REVOKED *r,
		       char *err, size_t err_len)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_REVOKED_get0_serialNumber(r), NULL);
	ASN1_ENUMERATED *code = X509_REVOKED_get_ext_d2i(r, NID_crl_reason, NULL, NULL);
	char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;
	char inventory[160], when[32];
	struct store_cert c;
	struct tm tm;
	time_t at = 0;
	int reason = code != NULL ? (int)ASN1_ENUMERATED_get(code) : CRL_REASON_UNSPECIFIED;
	int rc = -1, table_reason;

	if (hex == NULL || ASN1_TIME_to_tm(X509_REVOKED_get0_revocationDate(r), &tm) != 1) {
		snprintf(err, err_len, "cannot read an entry of CRL #%lld", (long long)number);
		goto out;
	}
	at = timegm(&tm);
	switch (store_get_cert(ca->store, hex, &c)) {
	case 0: break;
	case 1: snprintf(inventory, sizeof(inventory), "missing"); goto disagree;
	default: snprintf(err, err_len, "%s", store_error(ca->store)); goto out;
	}
	table_reason = crl_reason_code(c.revocation_reason != NULL ? c.revocation_reason : "");
	if (table_reason < 0)
		table_reason = CRL_REASON_UNSPECIFIED;
	if (c.revoked && c.revoked_at == at && table_reason == reason) {
		rc = 0;
		goto out;
	}
	if (!c.revoked)
		snprintf(inventory, sizeof(inventory), "valid");
	else
		snprintf(inventory, sizeof(inventory), "revoked %s at %s",
			 reason_name(table_reason), format_time(c.revoked_at, when));
disagree:
	snprintf(err, err_len,
		 "%s (CRL #%lld) and the inventory disagree on serial %s (the CRL: revoked %s at "
		 "%s, inventory: %s); the inventory was altered; restore it from a backup or "
		 "investigate",
		 name, (long long)number, hex, reason_name(reason), format_time(at, when),
		 inventory);
	rc = 1;
out:
	OPENSSL_free(hex);
	BN_free(bn);
	ASN1_ENUMERATED_free(code);
	return rc;
}

/* The canonical PEM of a CRL read from another form (DER, or PEM with text around it): the
 * bytes `mtls ca crl` wrote, whose SHA-256 the audit log records. */
static void canonical_sha256(X509_CRL *crl, char out[65])
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data = NULL;
	long len = 0;

	out[0] = '\0';
	if (bio != NULL && PEM_write_bio_X509_CRL(bio, crl))
		len = BIO_get_mem_data(bio, &data);
	if (len > 0)
		sha256_hex(data, (size_t)len, out);
	BIO_free(bio);
}

/* One CRL that this CA published (crl.pem, or a copy from the distribution point) against
 * the inventory and its log: signed by the issuing CA; each entry revoked in the inventory
 * with the same reason and date; its number and SHA-256 those the log records (of the file
 * as it is with exact, else of its canonical PEM); the audit log still holds the entries it
 * was signed over, unchanged (its checkpoint). 0 agree (*number), 1 not (err), -1 error. */
static int check_one(struct authority *ca, const struct store_check *chk, const char *name,
		     const char *data, size_t len, bool exact, int64_t *number, char *err,
		     size_t err_len)
{
	char sha[65], logged[65], head[65], at[65];
	BIO *bio = BIO_new_mem_buf(data, (int)len);
	X509_CRL *crl = bio != NULL ? PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL) : NULL;
	ASN1_INTEGER *num = NULL;
	STACK_OF(X509_REVOKED) * entries;
	EVP_PKEY *key = X509_get0_pubkey(ca->issuer);
	int64_t n = 0, cp_entries = 0,
		newest = chk->crl_logged_max > chk->crl_allocated ? chk->crl_logged_max
								  : chk->crl_allocated;
	int rc = 1;

	if (crl == NULL && !exact) {
		const unsigned char *p = (const unsigned char *)data;

		crl = d2i_X509_CRL(NULL, &p, (long)len);
		if (crl != NULL && p != (const unsigned char *)data + len) {
			X509_CRL_free(crl);
			crl = NULL;
		}
	}
	if (crl == NULL || key == NULL || X509_CRL_verify(crl, key) != 1 ||
	    X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(ca->issuer)) != 0 ||
	    (num = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL)) == NULL ||
	    ASN1_INTEGER_get_int64(&n, num) != 1 || n <= 0) {
		snprintf(err, err_len,
			 exact ? "%s is not a CRL signed by this CA; put back the CRL this CA "
				 "published (from your distribution point or a backup)"
			       : "%s is not a CRL signed by this CA's issuing CA",
			 name);
		goto out;
	}
	*number = n;
	entries = X509_CRL_get_REVOKED(crl);
	for (int i = 0; i < sk_X509_REVOKED_num(entries); i++) {
		rc = check_entry(ca, name, n, sk_X509_REVOKED_value(entries, i), err, err_len);
		if (rc != 0)
			goto out;
	}
	rc = 1;
	if (exact)
		sha256_hex(data, len, sha);
	else
		canonical_sha256(crl, sha);
	switch (store_crl_logged(ca->store, n, logged)) {
	case 0:
		if (strcmp(sha, logged) == 0)
			break;
		snprintf(err, err_len,
			 "%s is not the CRL #%lld this CA published (its SHA-256 differs from the "
			 "audit log's); restore it from a backup or investigate",
			 name, (long long)n);
		goto out;
	case 1:
		/* CRLs published before they were logged with their hash: nothing to compare */
		if (chk->crl_logged_max == 0 && n <= chk->crl_allocated)
			break;
		if (chk->crl_logged_max != 0 && n < chk->crl_logged_min)
			break;
		if (n > newest)
			snprintf(
				err, err_len,
				"%s is CRL #%lld but the inventory and its audit log go only up to "
				"#%lld: their newest changes were removed, or the inventory was "
				"restored from an older backup; investigate",
				name, (long long)n, (long long)newest);
		else
			snprintf(err, err_len,
				 "%s is CRL #%lld, which the audit log does not record; restore it "
				 "from a backup or investigate",
				 name, (long long)n);
		goto out;
	default:
		snprintf(err, err_len, "%s", store_error(ca->store));
		rc = -1;
		goto out;
	}
	switch (read_checkpoint(crl, &cp_entries, head)) {
	case 0: break;
	case 1:
		if (cp_entries > chk->entries) {
			snprintf(err, err_len,
				 "%s (CRL #%lld) was signed when the audit log had %lld entries, "
				 "but "
				 "it has %lld: its newest entries were removed; restore the "
				 "inventory from a backup or investigate",
				 name, (long long)n, (long long)cp_entries,
				 (long long)chk->entries);
			goto out;
		}
		rc = store_audit_hash(ca->store, cp_entries, at);
		if (rc < 0) {
			snprintf(err, err_len, "%s", store_error(ca->store));
			goto out;
		}
		rc = 1;
		if (strcmp(at, head) != 0) {
			snprintf(err, err_len,
				 "%s (CRL #%lld) was signed over audit entries 1-%lld, and entry "
				 "%lld is not the one it saw: the audit log was rewritten; restore "
				 "the inventory from a backup or investigate",
				 name, (long long)n, (long long)cp_entries, (long long)cp_entries);
			goto out;
		}
		break;
	default:
		snprintf(err, err_len,
			 "%s (CRL #%lld) has a malformed audit checkpoint; investigate", name,
			 (long long)n);
		goto out;
	}
	rc = 0;
out:
	ERR_clear_error();
	ASN1_INTEGER_free(num);
	X509_CRL_free(crl);
	BIO_free(bio);
	return rc;
}

int crl_check(struct authority *ca, const struct store_check *chk, int64_t *number, bool *stale,
	      char *err, size_t err_len)
{
	char path[PATH_MAX], *pem;
	size_t len = 0;
	int64_t n = 0, newest = chk->crl_logged_max > chk->crl_allocated ? chk->crl_logged_max
									 : chk->crl_allocated;
	int rc;

	*number = 0;
	*stale = false;
	authority_path(ca, "crl.pem", path, sizeof(path));
	if (!files_exists(path)) {
		/* Nothing on disk after a logged CRL: deleted, or moved aside to get past a
		 * refusal. Publishing from the inventory alone could hand out a number that a
		 * CRL nobody here remembers already carries, so only with --replace-missing. */
		if (chk->crl_logged_max > 0 && !ca->crl_replace_missing) {
			snprintf(err, err_len,
				 "%s is missing but the audit log records CRL #%lld (SHA-256 "
				 "%.16s...); put that CRL (or a newer one this CA published) back "
				 "from your distribution point or a backup, or if no copy is left "
				 "run 'mtls ca crl --replace-missing'",
				 path, (long long)chk->crl_logged_max, chk->crl_logged_sha);
			return 1;
		}
		*stale = newest > 0;
		return 0;
	}
	pem = files_read(path, &len, err, err_len);
	if (pem == NULL)
		return -1;
	rc = check_one(ca, chk, path, pem, len, true, &n, err, err_len);
	free(pem);
	if (rc != 0)
		return rc;
	*number = n;
	*stale = n < newest;
	return 0;
}

int crl_check_file(struct authority *ca, const struct store_check *chk, const char *path,
		   int64_t *number, char *err, size_t err_len)
{
	size_t len = 0;
	char *data = files_read(path, &len, err, err_len);
	int rc;

	*number = 0;
	if (data == NULL)
		return -1;
	rc = check_one(ca, chk, path, data, len, false, number, err, err_len);
	free(data);
	return rc;
}

/* crl.pem was lost (crl_check() let it pass only with --replace-missing): CRLs newer than
 * the inventory's newest may be out there, and a number of theirs must never name another
 * CRL. Numbers grow by one per publication, far slower than one a second, so the current
 * UNIX time is above any of them; the audit log records the decision. */
static int replace_missing(struct authority *ca, const struct store_check *chk, int64_t *n,
			   time_t now, const char *actor)
{
	char detail[200];

	if ((int64_t)now > *n)
		*n = (int64_t)now;
	snprintf(detail, sizeof(detail),
		 "crl.pem was missing (the newest CRL logged is #%lld); published CRL %lld "
		 "instead",
		 (long long)chk->crl_logged_max, (long long)*n);
	return store_audit(ca->store, actor, "crl-replaced", "", detail);
}

int crl_prepare(struct authority *ca, struct crl_pending *out, char *err, size_t err_len)
{
	return crl_prepare_at(ca, time(NULL), authority_actor(), out, err, err_len);
}

int crl_prepare_at(struct authority *ca, time_t now, const char *actor, struct crl_pending *out,
		   char *err, size_t err_len)
{
	struct build b = {.crl = X509_CRL_new()};
	struct store_check chk;
	time_t next = now + (ca->crl_seconds > 0 ? ca->crl_seconds : ca->crl_days * 86400L);
	ASN1_TIME *t = NULL;
	ASN1_INTEGER *number = NULL;
	X509V3_CTX ctx;
	int64_t n = 0, on_disk = 0;
	bool stale = false;
	BIO *bio = NULL;
	char *data, sha[65];
	long len;
	int rc = -1, entries;

	memset(out, 0, sizeof(*out));
	err[0] = '\0';
	switch (store_check(ca->store, &chk, err, err_len)) {
	case 0: break;
	case 1:
		snprintf(err, err_len,
			 "the audit log is broken at entry %lld (edited, or an entry removed); "
			 "restore the inventory from a backup or investigate",
			 (long long)chk.bad_seq);
		goto out;
	case 2: goto out;
	default: snprintf(err, err_len, "%s", store_error(ca->store)); goto out;
	}
	if (crl_check(ca, &chk, &on_disk, &stale, err, err_len) != 0)
		goto out;
	if (b.crl == NULL || X509_CRL_set_version(b.crl, X509_CRL_VERSION_2) != 1 ||
	    X509_CRL_set_issuer_name(b.crl, X509_get_subject_name(ca->issuer)) != 1)
		goto fail;
	t = ASN1_TIME_set(NULL, now - 300);
	if (t == NULL || X509_CRL_set1_lastUpdate(b.crl, t) != 1 ||
	    ASN1_TIME_set(t, next) == NULL || X509_CRL_set1_nextUpdate(b.crl, t) != 1)
		goto fail;
	if (store_each_cert(ca->store, STORE_REVOKED, 0, add_entry, &b) != 0 || b.failed) {
		snprintf(err, err_len, "%s",
			 b.failed ? "cannot add a CRL entry" : store_error(ca->store));
		goto out;
	}
	if (store_crl_next(ca->store, on_disk, &n) != 0) {
		snprintf(err, err_len, "%s", store_error(ca->store));
		goto out;
	}
	if (on_disk == 0 && chk.crl_logged_max > 0 &&
	    replace_missing(ca, &chk, &n, now, actor) != 0) {
		snprintf(err, err_len, "%s", store_error(ca->store));
		goto out;
	}
	number = ASN1_INTEGER_new();
	X509V3_set_ctx(&ctx, ca->issuer, NULL, NULL, b.crl, 0);
	if (number == NULL || ASN1_INTEGER_set_int64(number, n) != 1 ||
	    X509_CRL_add1_ext_i2d(b.crl, NID_crl_number, number, 0, 0) != 1 ||
	    add_ext(b.crl, &ctx, NID_authority_key_identifier, "keyid:always") != 0 ||
	    (ca->crl_url[0] != '\0' && add_idp(b.crl, ca->crl_url) != 0) ||
	    (chk.entries > 0 && add_checkpoint(b.crl, chk.entries, chk.head) != 0))
		goto fail;
	X509_CRL_sort(b.crl);
	if (X509_CRL_sign(b.crl, ca->issuer_key, keys_sign_digest(ca->issuer_key)) <= 0)
		goto fail;
	bio = BIO_new(BIO_s_mem());
	if (bio == NULL || !PEM_write_bio_X509_CRL(bio, b.crl))
		goto fail;
	len = BIO_get_mem_data(bio, &data);
	out->pem = len > 0 ? malloc((size_t)len) : NULL;
	if (out->pem == NULL)
		goto fail;
	memcpy(out->pem, data, (size_t)len);
	out->len = (size_t)len;
	out->number = n;
	sha256_hex(out->pem, out->len, sha);
	entries = sk_X509_REVOKED_num(X509_CRL_get_REVOKED(b.crl)); /* -1 when there are none */
	if (store_crl_add(ca->store, n, now, next, entries > 0 ? (size_t)entries : 0, sha, actor) !=
	    0) {
		snprintf(err, err_len, "%s", store_error(ca->store));
		goto out;
	}
	/* the newest CRL travels with the inventory too, for the other CA nodes of a shared
	 * store to serve (mtls ca serve) */
	{
		unsigned char *der = NULL;
		int der_len = i2d_X509_CRL(b.crl, &der);
		int put = der_len > 0 ? store_crl_der_put(ca->store, n, der, (size_t)der_len) : -1;

		OPENSSL_free(der);
		if (put != 0) {
			snprintf(err, err_len, "%s",
				 der_len > 0 ? store_error(ca->store) : "cannot encode the CRL");
			goto out;
		}
	}
	rc = 0;
	goto out;
fail:
	snprintf(err, err_len, "cannot build the CRL: %s",
		 ERR_reason_error_string(ERR_peek_error()) != NULL
			 ? ERR_reason_error_string(ERR_peek_error())
			 : "internal error");
out:
	if (rc != 0)
		crl_pending_free(out);
	ERR_clear_error();
	BIO_free(bio);
	ASN1_INTEGER_free(number);
	ASN1_TIME_free(t);
	X509_CRL_free(b.crl);
	return rc;
}

int crl_write(struct authority *ca, const struct crl_pending *crl, char *err, size_t err_len)
{
	char path[PATH_MAX];

	return files_write(authority_path(ca, "crl.pem", path, sizeof(path)), crl->pem, crl->len,
			   0644, false, err, err_len);
}

void crl_pending_free(struct crl_pending *crl)
{
	if (crl == NULL)
		return;
	free(crl->pem);
	crl->pem = NULL;
	crl->len = 0;
}
