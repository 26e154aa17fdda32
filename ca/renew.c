/*
 * svc_renew (service.h): a new certificate for the holder of a valid one.
 *
 * libmtls verified the peer's chain to this CA's root; the inventory decides the rest: the
 * certificate must be the one recorded under its serial (byte for byte), unrevoked and
 * unexpired. The renewal carries the same profile, names and common name, taken from the old
 * certificate and checked again against today's rules (a name the CA would no longer issue
 * refuses the renewal: enroll again). The CSR supplies the new key and may ask for those
 * names or fewer, never more. Everything happens in one store transaction with its audit
 * entry; refusals are audited in a transaction of their own.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "grant.h"
#include "issuance.h"
#include "issue.h"
#include "service.h"

/* What the refusals need besides the error. */
struct renewal {
	struct authority *ca;
	const char *actor;
	char serial[64];
	char *subject; /* of the old certificate, for the audit log */
};

static const char *when(time_t t, char buf[32])
{
	struct tm tm;

	strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
	return buf;
}

/* Refuse with e (already filled): roll the transaction back and record the refusal in the
 * audit log in one of its own. Returns -1. */
static int refused(const struct renewal *r, struct svc_error *e)
{
	char *detail = NULL, err[512];

	store_rollback(r->ca->store);
	if (asprintf(&detail, "serial %s: %s: %s", r->serial, e->code, e->message) < 0)
		return -1;
	/* the client is told why whatever happens to the entry; an unrecorded refusal changes
	 * nothing in the inventory */
	issuance_refused(r->ca, r->actor, "renew-refused", r->subject, detail, err, sizeof(err));
	free(detail);
	return -1;
}

/* The store failed inside the transaction: roll back and say so (not audited: the store is
 * what failed). */
static int store_failed(struct authority *ca, struct svc_error *e, const char *err)
{
	const char *code;
	int status = issuance_store_status(ca->store, &code);

	store_rollback(ca->store);
	return svc_fail(e, status, code, "%s", err != NULL ? err : store_error(ca->store));
}

/* One name of the old certificate, as text, into g (checked with today's rules). 0, or -1
 * with why. */
static int add_name(struct grant *g, const GENERAL_NAME *name, char *why, size_t why_len)
{
	const ASN1_STRING *s = name->d.ia5;
	const unsigned char *d = ASN1_STRING_get0_data(s);
	int len = ASN1_STRING_length(s), rc;
	char ip[INET6_ADDRSTRLEN], *text;

	if (name->type == GEN_IPADD) {
		if ((len != 4 && len != 16) ||
		    inet_ntop(len == 4 ? AF_INET : AF_INET6, d, ip, sizeof(ip)) == NULL) {
			snprintf(why, why_len, "a malformed IP address");
			return -1;
		}
		return grant_add_ip(&g->names, ip, why, why_len);
	}
	if (name->type != GEN_DNS && name->type != GEN_URI) {
		snprintf(why, why_len, "a name of a type the CA no longer issues");
		return -1;
	}
	if (len < 0 || memchr(d, 0, (size_t)len) != NULL) {
		snprintf(why, why_len, "a name with a NUL byte");
		return -1;
	}
	text = malloc((size_t)len + 1);
	if (text == NULL) {
		snprintf(why, why_len, "out of memory");
		return -1;
	}
	memcpy(text, d, (size_t)len);
	text[len] = '\0';
	rc = name->type == GEN_DNS ? grant_add_dns(&g->names, text, why, why_len)
				   : grant_add_uri(&g->names, text, why, why_len);
	free(text);
	return rc;
}

/* The grant of a renewal: the old certificate's profile, names and common name, each
 * checked again. 0, or -1 with why. */
static int renewal_grant(X509 *old, const char *profile, struct grant *g, char *why, size_t why_len)
{
	GENERAL_NAMES *names = NULL;
	X509_NAME *subject = X509_get_subject_name(old);
	unsigned char *cn = NULL;
	int crit = -1, at, len, rc = -1;

	if (grant_init(g, profile, GRANT_RENEWAL, why, why_len) != 0)
		return -1;
	names = X509_get_ext_d2i(old, NID_subject_alt_name, &crit, NULL);
	if (names == NULL && crit != -1) {
		snprintf(why, why_len, "its subjectAltName cannot be read");
		goto out;
	}
	for (int i = 0; i < sk_GENERAL_NAME_num(names); i++)
		if (add_name(g, sk_GENERAL_NAME_value(names, i), why, why_len) != 0)
			goto out;
	at = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
	if (at >= 0) {
		len = ASN1_STRING_to_UTF8(
			&cn, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, at)));
		if (len < 0 || memchr(cn, 0, (size_t)len) != NULL) {
			snprintf(why, why_len, "its common name is not text");
			goto out;
		}
		if (grant_set_cn(g, (const char *)cn, why, why_len) != 0)
			goto out;
	}
	rc = grant_check(g, why, why_len);
out:
	OPENSSL_free(cn);
	GENERAL_NAMES_free(names);
	ERR_clear_error();
	return rc;
}

/* The old certificate against the inventory, inside the transaction: 0 it may renew (its
 * profile in profile); -1 refused or failed (e filled, the transaction rolled back). */
static int check_inventory(struct renewal *r, X509 *peer, time_t now, char *profile,
			   size_t profile_len, struct svc_error *e)
{
	struct store_cert c;
	unsigned char *der = NULL;
	char t[32];
	int len, rc = store_get_cert(r->ca->store, r->serial, &c);

	if (rc < 0)
		return store_failed(r->ca, e, NULL);
	if (rc == 1) {
		svc_fail(e, 403, "cert_unknown",
			 "the client certificate (serial %s) is not in this CA's inventory; enroll "
			 "with a token instead",
			 r->serial);
		return refused(r, e);
	}
	len = i2d_X509(peer, &der);
	rc = len > 0 && (size_t)len == c.der_len && memcmp(der, c.der, c.der_len) == 0;
	OPENSSL_free(der);
	if (!rc) {
		svc_fail(e, 403, "cert_unknown",
			 "the client certificate is not the one this CA issued with serial %s; "
			 "enroll with a token instead",
			 r->serial);
		return refused(r, e);
	}
	if (c.revoked) {
		svc_fail(e, 403, "cert_revoked",
			 "the client certificate (serial %s) was revoked (%s) at %s and cannot be "
			 "renewed; enroll again with a new token",
			 r->serial,
			 c.revocation_reason != NULL ? c.revocation_reason : "unspecified",
			 when(c.revoked_at, t));
		return refused(r, e);
	}
	if (now >= c.not_after) {
		svc_fail(e, 403, "cert_expired",
			 "the client certificate (serial %s) expired at %s; an expired certificate "
			 "cannot be renewed: re-enroll with a token",
			 r->serial, when(c.not_after, t));
		return refused(r, e);
	}
	snprintf(profile, profile_len, "%s", c.profile);
	return 0;
}

int svc_renew(struct authority *ca, const struct svc_policy *p, X509 *peer, const void *csr,
	      size_t csr_len, bool same_key_ok, time_t now, const char *actor,
	      struct svc_issued *out, struct svc_error *e)
{
	static const char what[] = "of the renewal";
	struct renewal r = {.ca = ca, .actor = actor != NULL ? actor : "renew"};
	long long seconds = p != NULL && p->leaf_seconds > 0 ? p->leaf_seconds : SVC_LEAF_DEFAULT;
	struct grant g = {0};
	struct grant_request req = {0};
	char err[1024], profile[32], old_key[65], new_key[65], serial[64];
	time_t not_before, not_after;
	X509 *cert = NULL;
	int rc = -1, k;

	memset(out, 0, sizeof(*out));
	memset(e, 0, sizeof(*e));
	if (peer == NULL)
		return svc_fail(e, 401, "client_cert_required",
				"renewal needs the certificate being renewed as the TLS client "
				"certificate; connect with it");
	issue_serial_hex(peer, r.serial, sizeof(r.serial));
	r.subject = issue_subject(peer);
	if (r.subject == NULL) {
		svc_fail(e, 500, "internal", "out of memory");
		goto out;
	}
	/* one transaction (the write lock) from the inventory's word to the commit: a revocation
	 * of the old certificate meanwhile waits, then finds the renewal */
	if (store_begin(ca->store) != 0) {
		store_failed(ca, e, NULL);
		goto out;
	}
	if (check_inventory(&r, peer, now, profile, sizeof(profile), e) != 0)
		goto out;
	if (renewal_grant(peer, profile, &g, err, sizeof(err)) != 0) {
		svc_fail(e, 403, "policy_changed",
			 "the certificate (serial %s) can no longer be renewed as it is: %s; the "
			 "CA's rules changed, enroll again with a token",
			 r.serial, err);
		refused(&r, e);
		goto out;
	}
	if (grant_request_read(&req, csr, csr_len, what, err, sizeof(err)) != 0) {
		svc_fail(e, 400, "csr_malformed", "%s", err);
		refused(&r, e);
		goto out;
	}
	if (grant_request_verify(&req, what, err, sizeof(err)) != 0) {
		svc_fail(e, 400, "csr_invalid", "%s", err);
		refused(&r, e);
		goto out;
	}
	if (grant_match(&g, &req, what, err, sizeof(err)) != 0) {
		svc_fail(e, 403, "csr_not_granted", "%s", err);
		refused(&r, e);
		goto out;
	}
	issue_spki_sha256(peer, old_key);
	issue_key_sha256(req.key, new_key);
	if (!same_key_ok && strcmp(old_key, new_key) == 0) {
		svc_fail(e, 400, "same_key",
			 "the CSR carries the key of the certificate being renewed; make a new key "
			 "and CSR (or renew with same_key)");
		refused(&r, e);
		goto out;
	}
	if (issuance_window(ca, now, seconds, &not_before, &not_after, err, sizeof(err)) != 0) {
		svc_fail(e, 503, "ca_expired", "%s", err);
		refused(&r, e);
		goto out;
	}
	k = issuance_check_key(ca, req.key, "the CSR of the renewal", err, sizeof(err));
	if (k < 0) {
		store_failed(ca, e, err);
		goto out;
	}
	if (k > 0) {
		svc_fail(e, k == 1 ? 400 : 403, k == 1 ? "key_weak" : "key_compromised", "%s", err);
		refused(&r, e);
		goto out;
	}
	{
		char note[128];
		struct issuance is = {.grant = &g,
				      .req = NULL, /* the same common name: the old one's */
				      .key = req.key,
				      .not_before = not_before,
				      .not_after = not_after,
				      .issued_at = now,
				      .actor = r.actor,
				      .action = "renew",
				      .note = note};

		snprintf(note, sizeof(note), "renews serial %s", r.serial);
		k = issuance_sign(ca, &is, &cert, serial, err, sizeof(err));
	}
	if (k == -1) {
		store_failed(ca, e, err);
		goto out;
	}
	if (k != 0 || issuance_result(ca, cert, serial, &g, not_before, not_after, out) != 0) {
		store_rollback(ca->store);
		svc_fail(e, 500, "internal", "%s; nothing was issued",
			 k != 0 ? err : "out of memory");
		goto out;
	}
	if (store_commit(ca->store) != 0) {
		svc_issued_free(out);
		store_failed(ca, e, NULL);
		goto out;
	}
	rc = 0;
out:
	X509_free(cert);
	grant_free(&g);
	grant_request_free(&req);
	free(r.subject);
	return rc;
}
