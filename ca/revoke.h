/*
 * Revocation and CRL publication: the core that `mtls ca revoke`, `mtls ca crl` and the CA
 * service (svc_revoke(), svc_crl_publish()) share. Each change is one store transaction that
 * ends with the CRL it makes committed; the caller then writes that CRL with crl_write()
 * (commit, then publish) and says in its own words what a failed write means.
 *
 * The caller holds the authority's exclusive lock and has loaded the issuing key. Nothing is
 * kept between calls: each reads the inventory and crl.pem afresh, so local commands may
 * change the CA in between.
 */
#ifndef MTLS_CA_REVOKE_H
#define MTLS_CA_REVOKE_H

#include <stddef.h>
#include <time.h>

#include "authority.h"
#include "store.h"

/* A serial as the CA prints it (BN_bn2hex: upper-case, whole bytes), from any of the forms
 * people paste: with or without leading zeros, lower case, colons between bytes. 0, or -1
 * if in is not a positive hexadecimal number that fits in len. */
int revoke_serial(const char *in, char *out, size_t len);

struct revoke_request {
	const char *serial; /* as revoke_serial() made it */
	const char *reason; /* a crl_reason_code() name */
	/* if not NULL: the serial must belong to exactly this certificate (DER); a serial alone
	 * says nothing, anyone can make a certificate with a victim's serial */
	const unsigned char *der;
	size_t der_len;
	time_t now;
	const char *actor;
};

enum revoke_outcome {
	REVOKE_FAILED = -1, /* store or CRL failure: message in err, kind in *kind */
	REVOKE_DONE = 0,    /* revoked; crl holds the committed CRL to write */
	REVOKE_UNKNOWN,	    /* no such serial in the inventory */
	REVOKE_NOT_THIS,    /* the serial belongs to another certificate than rq->der */
	REVOKE_CA_CERT,	    /* the root or the intermediate: only leaves are revoked */
	REVOKE_ALREADY,	    /* already revoked, at *revoked_at */
};

/* In one transaction: look the serial up, revoke it with its audit entry
 * (store_revoke_audited()), sign a CRL that lists it (crl_prepare_at()) and commit. On
 * REVOKE_DONE *crl holds that CRL (caller frees with crl_pending_free()) and *revoked_at
 * rq->now. Anything but REVOKE_DONE leaves the inventory as it was. On REVOKE_FAILED, *kind
 * is store_error_kind() when a store call failed (busy, read-only, disk full) and
 * STORE_FAIL_OTHER when the CRL could not be made (the inventory, audit log and crl.pem
 * disagree, signing failed); err says which. */
enum revoke_outcome revoke_commit(struct authority *ca, const struct revoke_request *rq,
				  struct crl_pending *crl, time_t *revoked_at,
				  enum store_failure *kind, char *err, size_t err_len);

/* A fresh CRL with a new number, committed (the scheduled rebuild, `mtls ca crl`): 0 with
 * *crl to write, or -1 with err and *kind as revoke_commit(). */
int revoke_crl_commit(struct authority *ca, time_t now, const char *actor, struct crl_pending *crl,
		      enum store_failure *kind, char *err, size_t err_len);

#endif
