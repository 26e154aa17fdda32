/*
 * The CA service's operations (mtls ca serve), independent of HTTP.
 *
 * The HTTP layer (ca/serve_*.c) parses requests, authenticates the peer (mutual TLS through
 * libmtls, or an enrollment token) and calls one function here per operation. Each function
 * does the whole operation in one store transaction (commit, then publish) and says how it
 * went in a struct svc_error that the HTTP layer turns into a status and a JSON body:
 *   {"error": code, "message": message}
 *
 * Threads: the caller serializes every call on one authority (a process mutex) and holds
 * the authority's exclusive lock (authority_lock()) around calls that change it, so that
 * local `mtls ca` commands on the same directory wait meanwhile. `now` is passed in so that
 * tests can move the clock.
 */
#ifndef MTLS_CA_SERVICE_H
#define MTLS_CA_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/x509.h>

#include "authority.h"

/* Why an operation failed, for the client. status is an HTTP status:
 *   400 malformed request (bad CSR, bad JSON field, unknown reason)
 *   401 no credential or a credential that is not valid (token unknown, expired, used;
 *       no client certificate where one is needed)
 *   403 authenticated but not allowed (CSR asks for more than granted, a revoked or
 *       unknown certificate renewing, not an admin)
 *   404 no such certificate (revoke)
 *   409 conflict (already revoked)
 *   413 too large, 415 wrong content type
 *   500 internal error, 503 the store is unavailable (down, locked, read-only),
 *   507 the disk is full
 * code is a stable snake_case name (token_used, csr_not_granted, ...), message one line
 * saying what is wrong and what to do. */
struct svc_error {
	int status;
	char code[40];
	char message[512];
};

/* Fill e (status, code, printf-style message); returns -1 for `return svc_fail(...)`. */
int svc_fail(struct svc_error *e, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* What the service issued. */
struct svc_issued {
	char serial[64]; /* upper-case hex, as the inventory */
	char *chain_pem; /* leaf then the issuing CA, PEM (allocated) */
	size_t chain_len;
	char profile[16]; /* "server", "client", "peer" */
	char *names;	  /* "DNS:a, URI:b" (allocated) */
	time_t not_before;
	time_t not_after;
	time_t renew_after; /* not_before + 2/3 of the lifetime */
};
void svc_issued_free(struct svc_issued *i);

/* The service's issuance policy. */
struct svc_policy {
	long long leaf_seconds; /* lifetime of what the service issues (SVC_LEAF_DEFAULT) */
};
#define SVC_LEAF_DEFAULT (24LL * 3600)
#define SVC_LEAF_MIN	 (60LL) /* minutes: short-lived setups, and renewal tests */
#define SVC_LEAF_MAX	 (7LL * 24 * 3600)

/* Enrollment: token is the whole token text as `mtls ca token` printed it, csr a PEM or DER
 * CSR. The token must be known, unexpired and unused; the CSR may ask for the token's names
 * or fewer, never more, and no CA:TRUE. In one transaction: the token is marked used, the
 * certificate signed with the token's profile and names, recorded with its audit entry.
 * Exactly one of two concurrent uses of one token wins. Refusals are audited. actor names
 * the client for the audit log ("enroll@203.0.113.7"). 0, or -1 with e. */
int svc_enroll(struct authority *ca, const struct svc_policy *p, const char *token, const void *csr,
	       size_t csr_len, time_t now, const char *actor, struct svc_issued *out,
	       struct svc_error *e);

/* Renewal by the holder of peer, a certificate that libmtls verified against this CA: it
 * must be in the inventory, unrevoked and unexpired at now. The new certificate carries the
 * same profile and names, re-checked against the current rules; the CSR's key must differ
 * from the old one unless same_key_ok. 0, or -1 with e. */
int svc_renew(struct authority *ca, const struct svc_policy *p, X509 *peer, const void *csr,
	      size_t csr_len, bool same_key_ok, time_t now, const char *actor,
	      struct svc_issued *out, struct svc_error *e);

struct svc_revoked {
	char serial[64];
	time_t revoked_at;
	int64_t crl_number; /* of the CRL published with it */
};
/* Revoke serial (hex, any case, colons allowed) with reason (crl_reason_code() names;
 * NULL: unspecified), then sign and publish a new CRL (crl.pem), committed before written.
 * 404 unknown serial, 409 already revoked. 0, or -1 with e. */
int svc_revoke(struct authority *ca, const char *serial, const char *reason, time_t now,
	       const char *actor, struct svc_revoked *out, struct svc_error *e);

/* Sign and publish a fresh CRL (the scheduled rebuild). 0 with its number, or -1 with e. */
int svc_crl_publish(struct authority *ca, time_t now, const char *actor, int64_t *number,
		    struct svc_error *e);

#endif /* MTLS_CA_SERVICE_H */
