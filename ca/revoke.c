/*
 * Revocation and CRL publication (revoke.h), and the CA service's two operations on them:
 * svc_revoke() and svc_crl_publish() (service.h). Commit, then publish: the revocation,
 * its audit entry and the CRL that lists it are committed together, and crl.pem is written
 * after. A write that fails leaves the committed CRL unpublished; crl.pem is then older
 * than the newest CRL the inventory records (crl_check()'s "stale"), and the next
 * publication signs a newer one with everything revoked so far.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>

#include "revoke.h"
#include "service.h"

int revoke_serial(const char *in, char *out, size_t len)
{
	char digits[128];
	BIGNUM *bn = NULL;
	char *hex;
	size_t n = 0;

	for (; *in != '\0'; in++) {
		if (*in == ':')
			continue;
		if (!isxdigit((unsigned char)*in) || n + 1 >= sizeof(digits))
			return -1;
		digits[n++] = *in;
	}
	digits[n] = '\0';
	if (n == 0 || BN_hex2bn(&bn, digits) == 0 || BN_is_zero(bn)) {
		BN_free(bn);
		return -1;
	}
	hex = BN_bn2hex(bn);
	BN_free(bn);
	if (hex == NULL || strlen(hex) >= len) {
		OPENSSL_free(hex);
		return -1;
	}
	snprintf(out, len, "%s", hex);
	OPENSSL_free(hex);
	return 0;
}

/* The store failed: its message and kind. */
static void store_failed(struct authority *ca, enum store_failure *kind, char *err, size_t err_len)
{
	*kind = store_error_kind(ca->store);
	snprintf(err, err_len, "%s", store_error(ca->store));
}

/* crl_prepare_at() failed: a store call of its (its message is the store's) or a refusal
 * of its own (inventory, audit log and crl.pem disagree; signing). */
static void prepare_failed(struct authority *ca, enum store_failure *kind, const char *err)
{
	*kind = strcmp(err, store_error(ca->store)) == 0 ? store_error_kind(ca->store)
							 : STORE_FAIL_OTHER;
}

enum revoke_outcome revoke_commit(struct authority *ca, const struct revoke_request *rq,
				  struct crl_pending *crl, time_t *revoked_at,
				  enum store_failure *kind, char *err, size_t err_len)
{
	enum revoke_outcome outcome = REVOKE_FAILED;
	struct store_cert c;

	memset(crl, 0, sizeof(*crl));
	*kind = STORE_FAIL_OTHER;
	*revoked_at = 0;
	err[0] = '\0';
	if (store_begin(ca->store) != 0) {
		store_failed(ca, kind, err, err_len);
		return REVOKE_FAILED;
	}
	switch (store_get_cert(ca->store, rq->serial, &c)) {
	case 0: break;
	case 1: outcome = REVOKE_UNKNOWN; goto out;
	default: store_failed(ca, kind, err, err_len); goto out;
	}
	if (rq->der != NULL &&
	    (c.der_len != rq->der_len || memcmp(c.der, rq->der, c.der_len) != 0)) {
		outcome = REVOKE_NOT_THIS;
		goto out;
	}
	if (strcmp(c.profile, "root") == 0 || strcmp(c.profile, "intermediate") == 0) {
		outcome = REVOKE_CA_CERT;
		goto out;
	}
	if (c.revoked) {
		*revoked_at = c.revoked_at;
		outcome = REVOKE_ALREADY;
		goto out;
	}
	/* the revocation, its audit entry and the CRL that publishes it: one transaction */
	switch (store_revoke_audited(ca->store, rq->serial, rq->reason, rq->now, rq->actor)) {
	case 0: break;
	case 2: outcome = REVOKE_ALREADY; goto out;
	default: store_failed(ca, kind, err, err_len); goto out;
	}
	if (crl_prepare_at(ca, rq->now, rq->actor, crl, err, err_len) != 0) {
		prepare_failed(ca, kind, err);
		goto out;
	}
	if (store_commit(ca->store) != 0) {
		store_failed(ca, kind, err, err_len);
		goto out;
	}
	*revoked_at = rq->now;
	return REVOKE_DONE;
out:
	store_rollback(ca->store);
	crl_pending_free(crl);
	return outcome;
}

int revoke_crl_commit(struct authority *ca, time_t now, const char *actor, struct crl_pending *crl,
		      enum store_failure *kind, char *err, size_t err_len)
{
	memset(crl, 0, sizeof(*crl));
	*kind = STORE_FAIL_OTHER;
	err[0] = '\0';
	if (store_begin(ca->store) != 0) {
		store_failed(ca, kind, err, err_len);
		return -1;
	}
	if (crl_prepare_at(ca, now, actor, crl, err, err_len) != 0) {
		prepare_failed(ca, kind, err);
		goto fail;
	}
	if (store_commit(ca->store) != 0) {
		store_failed(ca, kind, err, err_len);
		goto fail;
	}
	return 0;
fail:
	store_rollback(ca->store);
	crl_pending_free(crl);
	return -1;
}

/* --- the CA service ------------------------------------------------------------------ */

static const char *iso_time(time_t t, char buf[32])
{
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, 32, "%lld", (long long)t);
	return buf;
}

/* A store or CRL failure before anything was committed. */
static int not_done(struct svc_error *e, enum store_failure kind, const char *err)
{
	switch (kind) {
	case STORE_FAIL_UNAVAILABLE:
		return svc_fail(e, 503, "store_unavailable",
				"%s; nothing was changed, try again later", err);
	case STORE_FAIL_FULL: return svc_fail(e, 507, "disk_full", "%s", err);
	default: return svc_fail(e, 500, "internal", "%s; nothing was changed", err);
	}
}

/* After the commit: write crl.pem. A failure leaves the change committed; the CRL is made
 * again, newer, by the next publication (svc_crl_publish(), `mtls ca crl`). */
static int publish(struct authority *ca, const struct crl_pending *crl, const char *committed,
		   struct svc_error *e)
{
	char err[1024] = "";
	int saved;

	if (crl_write(ca, crl, err, sizeof(err)) == 0)
		return 0;
	saved = errno;
	if (saved == ENOSPC || saved == EDQUOT)
		return svc_fail(e, 507, "disk_full",
				"%s while writing %s/crl.pem: %s; the CRL will be published by the "
				"next rebuild once there is room",
				saved == ENOSPC ? "disk full" : "disk quota exceeded", ca->dir,
				committed);
	return svc_fail(e, 500, "crl_not_published",
			"%s: %s; the CRL will be published by the next rebuild", err, committed);
}

int svc_revoke(struct authority *ca, const char *serial, const char *reason, time_t now,
	       const char *actor, struct svc_revoked *out, struct svc_error *e)
{
	struct revoke_request rq = {.now = now, .actor = actor};
	struct crl_pending crl = {0};
	enum store_failure kind;
	char hex[64], err[1024], when[32], committed[128];
	time_t at = 0;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	if (reason == NULL)
		reason = "unspecified";
	if (serial == NULL || revoke_serial(serial, hex, sizeof(hex)) != 0)
		return svc_fail(e, 400, "bad_serial",
				"serial must be a positive hexadecimal number (colons allowed), as "
				"the certificate's serial");
	if (crl_reason_code(reason) < 0)
		return svc_fail(e, 400, "bad_reason", "unknown reason; use one of %s",
				crl_reason_names());
	rq.serial = hex;
	rq.reason = reason;
	snprintf(out->serial, sizeof(out->serial), "%s", hex);
	switch (revoke_commit(ca, &rq, &crl, &at, &kind, err, sizeof(err))) {
	case REVOKE_DONE: break;
	case REVOKE_UNKNOWN:
		return svc_fail(e, 404, "not_found",
				"no certificate with serial %s in this CA's inventory", hex);
	case REVOKE_CA_CERT:
		return svc_fail(e, 403, "ca_certificate",
				"serial %s is a CA certificate; only leaves are revoked here", hex);
	case REVOKE_ALREADY:
		out->revoked_at = at;
		return svc_fail(e, 409, "already_revoked", "serial %s was already revoked at %s",
				hex, at != 0 ? iso_time(at, when) : "an earlier time");
	case REVOKE_NOT_THIS: /* no certificate given: cannot happen */
	case REVOKE_FAILED:
	default: return not_done(e, kind, err);
	}
	out->revoked_at = at;
	out->crl_number = crl.number;
	snprintf(committed, sizeof(committed), "the revocation of %s is committed (CRL #%lld)", hex,
		 (long long)crl.number);
	rc = publish(ca, &crl, committed, e);
	crl_pending_free(&crl);
	return rc;
}

int svc_crl_publish(struct authority *ca, time_t now, const char *actor, int64_t *number,
		    struct svc_error *e)
{
	struct crl_pending crl = {0};
	enum store_failure kind;
	char err[1024], committed[64];
	int rc;

	*number = 0;
	if (revoke_crl_commit(ca, now, actor, &crl, &kind, err, sizeof(err)) != 0)
		return not_done(e, kind, err);
	*number = crl.number;
	snprintf(committed, sizeof(committed), "CRL #%lld is committed", (long long)crl.number);
	rc = publish(ca, &crl, committed, e);
	crl_pending_free(&crl);
	return rc;
}
