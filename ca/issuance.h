/*
 * Issuing a leaf certificate from a grant: what `mtls ca issue` and the CA service
 * (svc_enroll, svc_renew) share once they have decided what may be issued.
 *
 * The caller holds the store transaction (store_begin()) around issuance_check_key() and
 * issuance_sign(), and commits or rolls back; nothing here begins or ends it, so that a
 * token taken, a renewal recorded and the certificate issued commit together. A refusal is
 * recorded in its own transaction (issuance_refused()), after the caller rolled back.
 */
#ifndef MTLS_CA_ISSUANCE_H
#define MTLS_CA_ISSUANCE_H

#include <stddef.h>
#include <time.h>

#include <openssl/x509.h>

#include "authority.h"
#include "grant.h"

/* How far notBefore is set back from the time of issue, for relying parties whose clocks
 * are a little behind: this, or a twelfth of a shorter lifetime (a certificate of minutes
 * is not backdated past most of its life). */
#define ISSUANCE_BACKDATE 300

/* What to do when the issuing CA's end is near, for the messages that meet it: renew it in
 * place (same key, new validity, under the same root: rollover_renew_issuer()), which needs
 * a root that outlives it, else a root rollover first. */
#define ISSUANCE_CA_END_HINT                                                                       \
	"renew the issuing CA with mtls ca renew-issuer (same key, new validity; if the root "     \
	"ends first, roll it over before: mtls ca rollover; docs/ca.md)"

/* The issuing CA's notAfter: no certificate it signs may outlive it. */
time_t issuance_issuer_end(const struct authority *ca);

/* A validity period starting now (backdated as said above) and lasting seconds,
 * cut at the issuing CA's notAfter (the CA service's rule; `mtls ca issue` refuses instead
 * of cutting). 0, or -1 with a message when the issuing CA is expired or about to. */
int issuance_window(const struct authority *ca, time_t now, long long seconds, time_t *not_before,
		    time_t *not_after, char *err, size_t err_len);

/* Inside the caller's transaction: may the CA sign for this key? what names it in
 * messages ("CSR x.csr"). It must be a key the CA signs for (issue_key_acceptable()) and
 * not one whose certificate was revoked for keyCompromise. 0 yes; 1 a weak or unsupported
 * key, 2 a compromised one (err says why and what to do); -1 the store failed
 * (store_error(), err a copy). */
int issuance_check_key(struct authority *ca, EVP_PKEY *key, const char *what, char *err,
		       size_t err_len);

/* What to issue. */
struct issuance {
	const struct grant *grant;	 /* profile, names, granted common name */
	const struct grant_request *req; /* the CSR after grant_match() (its CN), or NULL */
	EVP_PKEY *key;			 /* the subject's public key */
	time_t not_before;
	time_t not_after;
	time_t issued_at;
	const char *actor;  /* for the audit log */
	const char *action; /* its action: "issue", "renew", "enroll" */
	const char *note;   /* appended to the audit detail ("renews serial 0A"), or NULL */
};

/* Inside the caller's transaction: sign the certificate (the CA's CRL distribution point,
 * a fresh serial), insert its inventory row and the audit entry ("serial S, profile P,
 * NAMES[; note]"). Returns 0 with the certificate in *cert (caller frees) and its serial;
 * -1 the store failed (store_error(), err a copy); -2 anything else (signing, out of
 * memory; err). The caller rolls back on failure. */
int issuance_sign(struct authority *ca, const struct issuance *is, X509 **cert, char serial[64],
		  char *err, size_t err_len);

/* A refusal in the audit log, in a transaction of its own (the caller has none open): action
 * ("issue-refused", "renew-refused", ...), subject (NULL or "": "(empty subject)"), detail.
 * 0, or -1 with the store's message in err. */
int issuance_refused(struct authority *ca, const char *actor, const char *action,
		     const char *subject, const char *detail, char *err, size_t err_len);

/* The HTTP status for the store's last failure (store_error_kind()) and its code: 503
 * store_unavailable (busy, locked, read-only), 507 disk_full, 500 store_failed. */
int issuance_store_status(const struct store *st, const char **code);

struct svc_issued;
/* Fill out (service.h) for cert, issued from g with serial: the chain (leaf + issuing CA),
 * profile, names, validity and renew_after (2/3 of the lifetime). 0, or -1 out of memory
 * (out freed). */
int issuance_result(const struct authority *ca, X509 *cert, const char *serial,
		    const struct grant *g, time_t not_before, time_t not_after,
		    struct svc_issued *out);

/* The chain to hand out: the leaf then the issuing CA, PEM (caller frees; *len without the
 * NUL). NULL if out of memory. */
char *issuance_chain_pem(const struct authority *ca, X509 *leaf, size_t *len);

#endif
