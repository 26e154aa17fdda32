/*
 * OCSP responder: request parsing, the issuer check, status from the inventory, signing by
 * a delegated responder certificate, and a cache of signed answers.
 */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ocsp.h>

#include "certfields.h"
#include "issue.h"
#include "keys.h"
#include "issuance.h"
#include "ocsp.h"

/* notBefore is set this far back, as for every certificate the CA issues */
#define BACKDATE 300
#define BUCKETS	 4096
/* serials longer than the inventory's (which holds at most 20 octets) are not cached */
#define SERIAL_LEN 64

/* A signed answer for one (serial, hash), with the inventory's status it states. */
struct entry {
	struct entry *next;
	char serial[SERIAL_LEN];
	int md_nid;
	int reason;
	time_t revoked_at;
	unsigned char *der;
	size_t len;
	struct ocsp_answer meta;
};

struct ocsp_responder {
	EVP_PKEY *key; /* P-256, in memory only */
	X509 *cert;    /* issued for key by issuer */
	X509 *issuer;
	struct entry *buckets[BUCKETS];
	size_t count;
	/* the CertIDs of ids_of (ca->issuer) per hash of hash_nids[], made once: hashing the
	 * issuer's name and key for every request cost more than answering it */
	OCSP_CERTID *ids[4];
	X509 *ids_of;
};

/* The CertID hashes answered; a CertID with another one is unauthorized. */
static const int hash_nids[] = {NID_sha1, NID_sha256, NID_sha384, NID_sha512};

struct ocsp_responder *ocsp_responder_new(void)
{
	return calloc(1, sizeof(struct ocsp_responder));
}

static void entry_free(struct entry *e)
{
	if (e == NULL)
		return;
	free(e->der);
	free(e);
}

void ocsp_responder_forget(struct ocsp_responder *r)
{
	if (r == NULL)
		return;
	for (size_t i = 0; i < BUCKETS; i++) {
		while (r->buckets[i] != NULL) {
			struct entry *e = r->buckets[i];

			r->buckets[i] = e->next;
			entry_free(e);
		}
	}
	r->count = 0;
}

void ocsp_responder_free(struct ocsp_responder *r)
{
	if (r == NULL)
		return;
	ocsp_responder_forget(r);
	for (size_t i = 0; i < sizeof(r->ids) / sizeof(r->ids[0]); i++)
		OCSP_CERTID_free(r->ids[i]);
	X509_free(r->ids_of);
	EVP_PKEY_free(r->key); /* clears the private scalar */
	X509_free(r->cert);
	X509_free(r->issuer);
	free(r);
}

time_t ocsp_responder_expiry(const struct ocsp_responder *r)
{
	return r != NULL && r->cert != NULL ? certfields_time(X509_get0_notAfter(r->cert)) : 0;
}

static void format_time(time_t t, char *buf, size_t len)
{
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "%lld", (long long)t);
}

/* Is the responder's certificate (still) revoked in the inventory? 1 yes, 0 no, -1 error. */
static int responder_revoked(struct authority *ca, X509 *cert)
{
	struct store_cert c;
	char serial[64];
	int rc;

	issue_serial_hex(cert, serial, sizeof(serial));
	rc = store_get_cert(ca->store, serial, &c);
	return rc < 0 ? -1 : rc == 0 && c.revoked;
}

/* Does the current certificate do for now? */
static bool responder_current(struct ocsp_responder *r, struct authority *ca, time_t now)
{
	time_t nb, na, cap = certfields_time(X509_get0_notAfter(ca->issuer));

	if (r->cert == NULL || r->issuer == NULL || X509_cmp(r->issuer, ca->issuer) != 0)
		return false;
	nb = certfields_time(X509_get0_notBefore(r->cert));
	na = certfields_time(X509_get0_notAfter(r->cert));
	if (now < nb || now >= na)
		return false;
	/* a third of its life left, or as long as any new one would live (the issuer's end) */
	return (na - now) * 3 >= na - nb || na >= cap;
}

/* Record a responder certificate and its audit entry (the delegation) in the current
 * transaction. 0, 1 the serial exists already, -1 error. */
static int record(struct authority *ca, X509 *cert, time_t now)
{
	struct store_cert c = {0};
	char *subject = issue_subject(cert), spki[65], until[32], detail[200];
	unsigned char *der = NULL;
	int len = i2d_X509(cert, &der), rc = -1;

	if (len <= 0 || subject == NULL)
		goto out;
	issue_serial_hex(cert, c.serial, sizeof(c.serial));
	issue_spki_sha256(cert, spki);
	format_time(certfields_time(X509_get0_notAfter(cert)), until, sizeof(until));
	c.subject = subject;
	c.sans = "";
	c.spki_sha256 = spki;
	c.profile = issue_profile_name(ISSUE_OCSP);
	c.not_before = certfields_time(X509_get0_notBefore(cert));
	c.not_after = certfields_time(X509_get0_notAfter(cert));
	c.issued_at = now;
	c.der = der;
	c.der_len = (size_t)len;
	snprintf(detail, sizeof(detail),
		 "serial %s, profile ocsp, OCSP signing delegated until %s (key in memory only)",
		 c.serial, until);
	rc = store_add_cert(ca->store, &c);
	if (rc == 0 && store_audit(ca->store, authority_actor(), "issue", subject, detail) != 0)
		rc = -1;
out:
	OPENSSL_free(der);
	free(subject);
	return rc;
}

int ocsp_responder_refresh(struct ocsp_responder *r, struct authority *ca, time_t now, char *err,
			   size_t err_len)
{
	time_t cap = certfields_time(X509_get0_notAfter(ca->issuer));
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	char when[32];
	int rc = -1, revoked = 0;

	if (responder_current(r, ca, now)) {
		revoked = responder_revoked(ca, r->cert);
		if (revoked < 0) {
			snprintf(err, err_len, "cannot read the inventory: %s",
				 store_error(ca->store));
			return -1;
		}
		if (!revoked)
			return 0;
	}
	if (ca->issuer_key == NULL) {
		snprintf(err, err_len,
			 "the issuing CA's key is not loaded: it must sign the OCSP responder's "
			 "certificate");
		return -1;
	}
	if (cap <= now + BACKDATE) {
		format_time(cap, when, sizeof(when));
		snprintf(err, err_len,
			 "the issuing CA expires at %s: no OCSP responder certificate can be "
			 "issued; %s",
			 when, ISSUANCE_CA_END_HINT);
		return -1;
	}
	key = keys_generate("p256", err, err_len);
	if (key == NULL)
		return -1;
	if (store_begin(ca->store) != 0) {
		snprintf(err, err_len, "cannot issue the OCSP responder certificate: %s",
			 store_error(ca->store));
		goto out;
	}
	for (int attempt = 0; attempt < 4 && rc != 0; attempt++) {
		struct issue_spec spec = {
			.kind = ISSUE_OCSP,
			.cn = "OCSP responder",
			.subject_key = key,
			.not_before = now - BACKDATE,
			.not_after = now + OCSP_RESPONDER_SECONDS < cap
					     ? now + OCSP_RESPONDER_SECONDS
					     : cap,
		};

		X509_free(cert);
		cert = issue_sign(&spec, ca->issuer, ca->issuer_key, err, err_len);
		rc = cert != NULL ? record(ca, cert, now) : -2; /* 1: the serial exists */
		if (rc == -1)
			snprintf(err, err_len, "cannot record the OCSP responder certificate: %s",
				 store_error(ca->store));
		if (rc < 0)
			break;
	}
	if (rc == 1)
		snprintf(err, err_len, "could not pick an unused serial number");
	if (rc != 0 || store_commit(ca->store) != 0) {
		if (rc == 0)
			snprintf(err, err_len, "cannot record the OCSP responder certificate: %s",
				 store_error(ca->store));
		store_rollback(ca->store);
		rc = -1;
		goto out;
	}
	if (X509_up_ref(ca->issuer) != 1) {
		/* committed: an unused responder certificate is harmless, its key is gone */
		snprintf(err, err_len, "out of memory");
		rc = -1;
		goto out;
	}
	X509_free(r->issuer);
	r->issuer = ca->issuer;
	EVP_PKEY_free(r->key);
	r->key = key;
	key = NULL;
	X509_free(r->cert);
	r->cert = cert;
	cert = NULL;
	/* answers name the responder that signed them: none of the old one's */
	ocsp_responder_forget(r);
out:
	ERR_clear_error();
	EVP_PKEY_free(key);
	X509_free(cert);
	return rc;
}

/* An answer without a body (RFC 6960 2.3: not signed). */
static OCSP_RESPONSE *error_response(int status)
{
	return OCSP_response_create(status, NULL);
}

/* Status of serial (BN_bn2hex form) in the inventory as a certificate of ca->issuer.
 * 0 (V_OCSP_CERTSTATUS_* in *status), -1 the store failed. */
static int inventory_status(struct authority *ca, const char *serial, int *status, int *reason,
			    time_t *revoked_at)
{
	struct store_cert c;
	const unsigned char *p;
	X509 *x = NULL;
	bool issued = false;
	int rc = store_get_cert(ca->store, serial, &c);

	*status = V_OCSP_CERTSTATUS_UNKNOWN;
	*reason = -1;
	*revoked_at = 0;
	if (rc == 1)
		return 0;
	if (rc != 0)
		return -1;
	/* The inventory holds the CA certificates too (the root, the intermediate itself),
	 * which ca->issuer did not issue: they are unknown to this responder. A row of a leaf
	 * profile was issued by ca->issuer (the CA's only issuer); any other is checked on its
	 * certificate (parsing it for every request cost more than the rest of the answer). */
	if (c.profile != NULL &&
	    (strcmp(c.profile, "server") == 0 || strcmp(c.profile, "client") == 0 ||
	     strcmp(c.profile, "peer") == 0 || strcmp(c.profile, "ocsp") == 0)) {
		issued = true;
	} else if (c.profile == NULL ||
		   (strcmp(c.profile, "root") != 0 && strcmp(c.profile, "intermediate") != 0)) {
		p = c.der;
		if (c.der != NULL && c.der_len > 0 && c.der_len < LONG_MAX)
			x = d2i_X509(NULL, &p, (long)c.der_len);
		issued = x != NULL && X509_check_issued(ca->issuer, x) == X509_V_OK;
	}
	if (issued) {
		if (c.revoked) {
			int code = crl_reason_code(c.revocation_reason != NULL ? c.revocation_reason
									       : "");

			*status = V_OCSP_CERTSTATUS_REVOKED;
			/* RFC 5280 5.3.1, as in the CRL: unspecified is left out */
			*reason = code > OCSP_REVOKED_STATUS_UNSPECIFIED ? code : -1;
			*revoked_at = c.revoked_at;
		} else {
			*status = V_OCSP_CERTSTATUS_GOOD;
		}
	}
	X509_free(x);
	ERR_clear_error();
	return 0;
}

/* ca->issuer's CertID for hash md_nid (owned by r), and *md; *md NULL for a hash not
 * answered, NULL with *md set when out of memory. */
static const OCSP_CERTID *issuer_id(struct ocsp_responder *r, struct authority *ca, int md_nid,
				    const EVP_MD **md)
{
	*md = NULL;
	if (r->ids_of == NULL || X509_cmp(r->ids_of, ca->issuer) != 0) {
		for (size_t i = 0; i < sizeof(r->ids) / sizeof(r->ids[0]); i++) {
			OCSP_CERTID_free(r->ids[i]);
			r->ids[i] = NULL;
		}
		X509_free(r->ids_of);
		r->ids_of = X509_up_ref(ca->issuer) == 1 ? ca->issuer : NULL;
	}
	for (size_t i = 0; i < sizeof(hash_nids) / sizeof(hash_nids[0]); i++) {
		if (hash_nids[i] != md_nid)
			continue;
		*md = EVP_get_digestbynid(md_nid);
		if (*md != NULL && r->ids[i] == NULL && r->ids_of != NULL)
			r->ids[i] = OCSP_cert_to_id(*md, NULL, ca->issuer);
		return r->ids[i];
	}
	return NULL;
}

static unsigned bucket_of(const char *serial, int md_nid)
{
	uint32_t h = 2166136261u ^ (uint32_t)md_nid;

	for (const char *p = serial; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	return h % BUCKETS;
}

static struct entry *cache_find(struct ocsp_responder *r, const char *serial, int md_nid)
{
	for (struct entry *e = r->buckets[bucket_of(serial, md_nid)]; e != NULL; e = e->next)
		if (e->md_nid == md_nid && strcmp(e->serial, serial) == 0)
			return e;
	return NULL;
}

/* Is the answer good for reuse at now: more than a third of its validity left? */
static bool fresh(const struct ocsp_answer *a, time_t now)
{
	long long life = (long long)a->next_update - a->this_update;

	return now >= a->this_update && ((long long)now - a->this_update) * 3 < life * 2;
}

/* Make room for one more entry: drop stale answers, then all if that is not enough. */
static void cache_make_room(struct ocsp_responder *r, time_t now)
{
	if (r->count < OCSP_CACHE_MAX)
		return;
	for (size_t i = 0; i < BUCKETS; i++) {
		for (struct entry **pe = &r->buckets[i]; *pe != NULL;) {
			struct entry *e = *pe;

			if (fresh(&e->meta, now)) {
				pe = &e->next;
				continue;
			}
			*pe = e->next;
			entry_free(e);
			r->count--;
		}
	}
	if (r->count >= OCSP_CACHE_MAX)
		ocsp_responder_forget(r);
}

static void set_etag(struct ocsp_answer *meta, const unsigned char *der, size_t len)
{
	unsigned char md[32];
	unsigned int n = 0;

	meta->etag[0] = '\0';
	if (EVP_Digest(der, len, md, &n, EVP_sha256(), NULL) != 1 || n != 32)
		return;
	meta->etag[0] = '"';
	for (unsigned i = 0; i < 32; i++)
		snprintf(meta->etag + 1 + 2 * i, 3, "%02x", md[i]);
	meta->etag[65] = '"';
	meta->etag[66] = '\0';
}

/* Sign an answer for serial; NULL on failure. */
static OCSP_RESPONSE *sign_answer(struct ocsp_responder *r, struct authority *ca, const EVP_MD *md,
				  const ASN1_INTEGER *serial, int status, int reason,
				  time_t revoked_at, time_t now, struct ocsp_answer *meta)
{
	OCSP_BASICRESP *bs = OCSP_BASICRESP_new();
	OCSP_CERTID *id = NULL;
	OCSP_RESPONSE *resp = NULL;
	STACK_OF(X509) *certs = sk_X509_new_null();
	ASN1_TIME *this_upd = NULL, *next_upd = NULL, *rev = NULL;
	time_t next = now + OCSP_ANSWER_SECONDS, cert_end = ocsp_responder_expiry(r);
	ASN1_GENERALIZEDTIME *produced;

	if (next > cert_end)
		next = cert_end;
	/* our own CertID (the request's issuer hashes are equal to it): nothing of the
	 * request's encoding but the serial travels into the signed answer */
	id = OCSP_cert_id_new(md, X509_get_subject_name(ca->issuer),
			      X509_get0_pubkey_bitstr(ca->issuer), serial);
	this_upd = ASN1_GENERALIZEDTIME_set(NULL, now);
	next_upd = ASN1_GENERALIZEDTIME_set(NULL, next);
	if (status == V_OCSP_CERTSTATUS_REVOKED)
		rev = ASN1_GENERALIZEDTIME_set(NULL, revoked_at);
	if (bs == NULL || certs == NULL || id == NULL || this_upd == NULL || next_upd == NULL ||
	    (status == V_OCSP_CERTSTATUS_REVOKED && rev == NULL) ||
	    !sk_X509_push(certs, ca->issuer))
		goto out;
	if (OCSP_basic_add1_status(bs, id, status, reason, rev, this_upd, next_upd) == NULL)
		goto out;
	/* producedAt is the caller's clock too (OCSP_NOTIME: OpenSSL would read its own).
	 * OpenSSL 3 has no setter; the object is bs's own, allocated, so writing it is sound. */
	produced = (ASN1_GENERALIZEDTIME *)(uintptr_t)OCSP_resp_get0_produced_at(bs);
	if (produced == NULL || ASN1_GENERALIZEDTIME_set(produced, now) == NULL)
		goto out;
	/* the responder certificate is included (no OCSP_NOCERTS), then the issuing CA */
	if (OCSP_basic_sign(bs, r->cert, r->key, EVP_sha256(), certs,
			    OCSP_RESPID_KEY | OCSP_NOTIME) != 1)
		goto out;
	resp = OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, bs);
	if (resp != NULL) {
		meta->this_update = now;
		meta->next_update = next;
		meta->produced = now;
		meta->cert_status = status;
	}
out:
	ASN1_TIME_free(this_upd);
	ASN1_TIME_free(next_upd);
	ASN1_TIME_free(rev);
	sk_X509_free(certs);
	OCSP_CERTID_free(id);
	OCSP_BASICRESP_free(bs);
	return resp;
}

/* The DER of resp into a malloc'd buffer. */
static int to_der(OCSP_RESPONSE *resp, unsigned char **out, size_t *out_len)
{
	unsigned char *der = NULL;
	int len = resp != NULL ? i2d_OCSP_RESPONSE(resp, &der) : -1;

	*out = len > 0 ? malloc((size_t)len) : NULL;
	if (*out != NULL) {
		memcpy(*out, der, (size_t)len);
		*out_len = (size_t)len;
	}
	OPENSSL_free(der);
	return *out != NULL ? 0 : -1;
}

/* Keep a copy of a signed answer (best effort: without memory, it is not cached). */
static void cache_put(struct ocsp_responder *r, const char *serial, int md_nid, int reason,
		      time_t revoked_at, const unsigned char *der, size_t len,
		      const struct ocsp_answer *meta, time_t now)
{
	struct entry *e = cache_find(r, serial, md_nid);
	unsigned char *copy = malloc(len);

	if (copy == NULL)
		return;
	memcpy(copy, der, len);
	if (e == NULL) {
		unsigned b = bucket_of(serial, md_nid);

		cache_make_room(r, now);
		e = calloc(1, sizeof(*e));
		if (e == NULL) {
			free(copy);
			return;
		}
		snprintf(e->serial, sizeof(e->serial), "%s", serial);
		e->md_nid = md_nid;
		e->next = r->buckets[b];
		r->buckets[b] = e;
		r->count++;
	}
	free(e->der);
	e->der = copy;
	e->len = len;
	e->reason = reason;
	e->revoked_at = revoked_at;
	e->meta = *meta;
}

int ocsp_respond(struct ocsp_responder *r, struct authority *ca, const unsigned char *req,
		 size_t len, time_t now, unsigned char **resp, size_t *resp_len,
		 struct ocsp_answer *meta)
{
	const unsigned char *p = req;
	OCSP_REQUEST *rq = NULL;
	const OCSP_CERTID *ours = NULL;
	OCSP_CERTID *cid;
	OCSP_RESPONSE *answer = NULL;
	ASN1_OBJECT *md_obj = NULL;
	ASN1_INTEGER *serial = NULL;
	BIGNUM *bn = NULL;
	char *hex = NULL;
	const EVP_MD *md = NULL;
	struct entry *e;
	int md_nid, status = OCSP_RESPONSE_STATUS_MALFORMEDREQUEST, cert_status, reason, rc = -1;
	time_t revoked_at;

	*resp = NULL;
	*resp_len = 0;
	memset(meta, 0, sizeof(*meta));
	meta->cert_status = -1;
	if (len == 0 || len > OCSP_REQUEST_MAX)
		goto answer;
	rq = d2i_OCSP_REQUEST(NULL, &p, (long)len);
	/* exactly one OCSPRequest, and in it exactly one Request (RFC 5019 2.1.1) */
	if (rq == NULL || p != req + len || OCSP_request_onereq_count(rq) != 1)
		goto answer;
	cid = OCSP_onereq_get0_id(OCSP_request_onereq_get0(rq, 0));
	if (cid == NULL || OCSP_id_get0_info(NULL, &md_obj, NULL, &serial, cid) != 1 ||
	    md_obj == NULL || serial == NULL)
		goto answer;
	/* the issuer: the CertID's name and key hashes must be ca->issuer's */
	status = OCSP_RESPONSE_STATUS_UNAUTHORIZED;
	md_nid = OBJ_obj2nid(md_obj);
	ours = issuer_id(r, ca, md_nid, &md);
	if (md == NULL)
		goto answer;
	if (ours == NULL) {
		status = OCSP_RESPONSE_STATUS_INTERNALERROR;
		goto answer;
	}
	if (OCSP_id_issuer_cmp(ours, cid) != 0)
		goto answer;
	/* a responder that can sign for this issuer (ocsp_responder_refresh()) */
	status = OCSP_RESPONSE_STATUS_TRYLATER;
	if (r->cert == NULL || r->issuer == NULL || X509_cmp(r->issuer, ca->issuer) != 0 ||
	    now < certfields_time(X509_get0_notBefore(r->cert)) || now >= ocsp_responder_expiry(r))
		goto answer;
	bn = ASN1_INTEGER_to_BN(serial, NULL);
	hex = bn != NULL ? BN_bn2hex(bn) : NULL;
	if (hex == NULL) {
		status = OCSP_RESPONSE_STATUS_INTERNALERROR;
		goto answer;
	}
	/* the inventory decides, every time; the cache only saves the signature */
	if (inventory_status(ca, hex, &cert_status, &reason, &revoked_at) != 0)
		goto answer;
	e = strlen(hex) < SERIAL_LEN ? cache_find(r, hex, md_nid) : NULL;
	if (e != NULL && e->meta.cert_status == cert_status && e->reason == reason &&
	    e->revoked_at == revoked_at && fresh(&e->meta, now)) {
		*resp = malloc(e->len);
		if (*resp == NULL)
			goto out;
		memcpy(*resp, e->der, e->len);
		*resp_len = e->len;
		*meta = e->meta;
		meta->cached = true;
		rc = 0;
		goto out;
	}
	status = OCSP_RESPONSE_STATUS_SUCCESSFUL;
	answer = sign_answer(r, ca, md, serial, cert_status, reason, revoked_at, now, meta);
	if (answer == NULL) {
		status = OCSP_RESPONSE_STATUS_INTERNALERROR;
		memset(meta, 0, sizeof(*meta));
		meta->cert_status = -1;
		goto answer;
	}
	if (to_der(answer, resp, resp_len) != 0)
		goto out;
	meta->status = status;
	set_etag(meta, *resp, *resp_len);
	if (strlen(hex) < SERIAL_LEN)
		cache_put(r, hex, md_nid, reason, revoked_at, *resp, *resp_len, meta, now);
	rc = 0;
	goto out;
answer:
	answer = error_response(status);
	if (to_der(answer, resp, resp_len) != 0)
		goto out;
	meta->status = status;
	set_etag(meta, *resp, *resp_len);
	rc = 0;
out:
	ERR_clear_error();
	OCSP_RESPONSE_free(answer);
	OPENSSL_free(hex);
	BN_free(bn);
	OCSP_REQUEST_free(rq);
	return rc;
}
