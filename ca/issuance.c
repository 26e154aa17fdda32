/*
 * Issuing a leaf certificate from a grant, inside the caller's store transaction
 * (issuance.h): the core of `mtls ca issue` and of the CA service's enroll and renew.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "certfields.h"
#include "issuance.h"
#include "service.h"

time_t issuance_issuer_end(const struct authority *ca)
{
	return certfields_time(X509_get0_notAfter(ca->issuer));
}

int issuance_window(const struct authority *ca, time_t now, long long seconds, time_t *not_before,
		    time_t *not_after, char *err, size_t err_len)
{
	time_t end = issuance_issuer_end(ca);
	long long back = seconds / 12 < ISSUANCE_BACKDATE ? seconds / 12 : ISSUANCE_BACKDATE;
	char when[32];
	struct tm tm;

	*not_before = now - (time_t)back;
	*not_after = *not_before + (time_t)seconds;
	if (*not_after > end)
		*not_after = end;
	/* a certificate cut to nothing (or to less than the backdating) is not worth issuing */
	if (*not_after <= now + (time_t)back) {
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&end, &tm));
		snprintf(err, err_len,
			 "the issuing CA expires at %s, too soon to issue anything; %s", when,
			 ISSUANCE_CA_END_HINT);
		return -1;
	}
	return 0;
}

int issuance_check_key(struct authority *ca, EVP_PKEY *key, const char *what, char *err,
		       size_t err_len)
{
	char spki[65], serial[64], why[160];
	int rc;

	if (!issue_key_acceptable(key, why, sizeof(why))) {
		snprintf(err, err_len,
			 "%s carries a weak or unsupported key: %s; use ECDSA P-256/P-384, "
			 "Ed25519 or RSA 2048+ with exponent 65537",
			 what, why);
		return 1;
	}
	issue_key_sha256(key, spki);
	rc = store_key_compromised(ca->store, spki, serial);
	if (rc < 0) {
		snprintf(err, err_len, "%s", store_error(ca->store));
		return -1;
	}
	if (rc == 0)
		return 0;
	snprintf(err, err_len,
		 "%s carries a key whose certificate (serial %s) was revoked for keyCompromise; "
		 "make a new key and CSR",
		 what, serial);
	return 2;
}

/* One attempt: sign, insert, audit. 0, 1 the serial is taken (try again), -1 store, -2
 * other. */
static int sign_once(struct authority *ca, const struct issuance *is, const struct issue_spec *spec,
		     X509 **out, char serial[64], char *err, size_t err_len)
{
	const struct grant *g = is->grant;
	const char *profile = issue_profile_name(g->kind);
	X509 *cert = issue_sign(spec, ca->issuer, ca->issuer_key, err, err_len);
	struct store_cert c = {0};
	char *subject = NULL, spki[65], *detail = NULL;
	unsigned char *der = NULL;
	int len, rc;

	if (cert == NULL)
		return -2;
	len = i2d_X509(cert, &der);
	issue_serial_hex(cert, c.serial, sizeof(c.serial));
	subject = issue_subject(cert);
	issue_spki_sha256(cert, spki);
	c.subject = subject;
	c.sans = g->names.text;
	c.spki_sha256 = spki;
	c.profile = profile;
	c.not_before = spec->not_before;
	c.not_after = spec->not_after;
	c.issued_at = is->issued_at;
	c.der = der;
	c.der_len = len > 0 ? (size_t)len : 0;
	/* every name: the entry is never cut short */
	if (subject == NULL || len <= 0 ||
	    asprintf(&detail, "serial %s, profile %s, %s%s%s", c.serial, profile, g->names.text,
		     is->note != NULL ? "; " : "", is->note != NULL ? is->note : "") < 0) {
		detail = NULL;
		snprintf(err, err_len, "out of memory");
		rc = -2;
	} else {
		rc = store_add_cert(ca->store, &c);
	}
	if (rc == 0)
		rc = store_audit(ca->store, is->actor, is->action, subject, detail);
	if (rc == -1)
		snprintf(err, err_len, "%s", store_error(ca->store));
	if (rc == 0) {
		snprintf(serial, 64, "%s", c.serial);
		*out = cert;
		cert = NULL;
	}
	OPENSSL_free(der);
	free(detail);
	free(subject);
	X509_free(cert);
	return rc;
}

int issuance_sign(struct authority *ca, const struct issuance *is, X509 **cert, char serial[64],
		  char *err, size_t err_len)
{
	const struct grant *g = is->grant;
	struct issue_spec spec = {.kind = g->kind,
				  .cn = grant_cn(g, is->req),
				  .subject_key = is->key,
				  .names = g->names.names,
				  .not_before = is->not_before,
				  .not_after = is->not_after,
				  .crl_url = ca->crl_url,
				  .ocsp_url = ca->ocsp_url[0] != '\0' ? ca->ocsp_url : NULL,
				  .must_staple = ca->must_staple};

	*cert = NULL;
	serial[0] = '\0';
	/* retried on the (astronomically unlikely) duplicate serial */
	for (int attempt = 0; attempt < 4; attempt++) {
		int rc = sign_once(ca, is, &spec, cert, serial, err, err_len);

		if (rc != 1)
			return rc;
	}
	snprintf(err, err_len, "could not pick an unused serial number");
	return -2;
}

int issuance_refused(struct authority *ca, const char *actor, const char *action,
		     const char *subject, const char *detail, char *err, size_t err_len)
{
	if (subject == NULL || subject[0] == '\0')
		subject = "(empty subject)";
	if (store_begin(ca->store) != 0 ||
	    store_audit(ca->store, actor, action, subject, detail) != 0 ||
	    store_commit(ca->store) != 0) {
		snprintf(err, err_len, "%s", store_error(ca->store));
		store_rollback(ca->store);
		return -1;
	}
	return 0;
}

char *issuance_chain_pem(const struct authority *ca, X509 *leaf, size_t *len)
{
	size_t leaf_len = 0, inter_len = 0;
	char *l = issue_cert_pem(leaf, &leaf_len);
	char *i = l != NULL ? issue_cert_pem(ca->issuer, &inter_len) : NULL;
	char *chain = i != NULL ? malloc(leaf_len + inter_len + 1) : NULL;

	if (chain != NULL) {
		memcpy(chain, l, leaf_len);
		memcpy(chain + leaf_len, i, inter_len);
		chain[leaf_len + inter_len] = '\0';
		*len = leaf_len + inter_len;
	}
	free(l);
	free(i);
	return chain;
}

int issuance_store_status(const struct store *st, const char **code)
{
	switch (store_error_kind(st)) {
	case STORE_FAIL_UNAVAILABLE: *code = "store_unavailable"; return 503;
	case STORE_FAIL_FULL: *code = "disk_full"; return 507;
	case STORE_FAIL_OTHER: break;
	}
	*code = "store_failed";
	return 500;
}

int issuance_result(const struct authority *ca, X509 *cert, const char *serial,
		    const struct grant *g, time_t not_before, time_t not_after,
		    struct svc_issued *out)
{
	memset(out, 0, sizeof(*out));
	snprintf(out->serial, sizeof(out->serial), "%s", serial);
	snprintf(out->profile, sizeof(out->profile), "%s", issue_profile_name(g->kind));
	out->not_before = not_before;
	out->not_after = not_after;
	out->renew_after = not_before + (not_after - not_before) * 2 / 3;
	out->chain_pem = issuance_chain_pem(ca, cert, &out->chain_len);
	out->names = strdup(g->names.text);
	if (out->chain_pem == NULL || out->names == NULL) {
		svc_issued_free(out);
		return -1;
	}
	return 0;
}
