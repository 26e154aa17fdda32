/*
 * The CA's OCSP responder (RFC 6960, in the RFC 5019 lightweight profile), for the plain
 * port of `mtls ca serve`: POST /ocsp and GET /ocsp/<base64> hand the request's DER bytes to
 * ocsp_respond() and send back what it makes (application/ocsp-response).
 *
 * Responses are signed by a delegated responder (RFC 6960 4.2.2.2): a key made in memory
 * (P-256, never written anywhere) and a short-lived certificate the issuing CA signs for it
 * (profile "ocsp": EKU OCSPSigning only, id-pkix-ocsp-nocheck). The issuing CA's key itself
 * never signs a response. Each process holds its own responder key.
 *
 * One place decides: every answer's status comes from the inventory (store_get_cert()) at
 * the time of the request; the cache only saves re-signing an answer whose status the
 * inventory still confirms, so a revocation by another process (`mtls ca revoke`) is
 * answered "revoked" at the next request even without ocsp_responder_forget().
 *
 * Audit: the log records the delegation of OCSP signing, i.e. each responder certificate
 * the CA issues ("issue", profile "ocsp", with its serial and validity), in the transaction
 * that records the certificate. Single responses are not logged: they state what the
 * inventory and its log already say, and a line per request would flood the log.
 *
 * Threads: a responder is used by one thread at a time (the caller's mutex, the one that
 * serializes calls on the authority). It belongs to one authority: use it with no other.
 */
#ifndef MTLS_CA_OCSP_H
#define MTLS_CA_OCSP_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "authority.h"

/* Lifetime of a responder certificate (capped by the issuing CA's notAfter); it is renewed
 * when less than a third of it is left. */
#define OCSP_RESPONDER_SECONDS (7L * 24 * 3600)
/* Validity of an answer (nextUpdate - thisUpdate); re-signed when less than a third is left.
 * Short, so that a cache between the responder and its clients cannot serve a stale "good"
 * for long after a revocation. */
#define OCSP_ANSWER_SECONDS (3600L)
/* Requests longer than this are malformed (an RFC 5019 request is about 100 bytes). */
#define OCSP_REQUEST_MAX (64 * 1024)
/* Answers kept at most (about 1.5 KiB each); beyond, stale ones are dropped, then all. */
#define OCSP_CACHE_MAX 16384

struct ocsp_responder;

/* A responder without a certificate yet (ocsp_responder_refresh() makes one). NULL when out
 * of memory. ocsp_responder_free(NULL) does nothing; the key is freed (wiped) with it. */
struct ocsp_responder *ocsp_responder_new(void);
void ocsp_responder_free(struct ocsp_responder *r);

/* Make sure the responder holds a certificate of ca->issuer valid at now for at least a
 * third of its lifetime more (or until the issuer's own notAfter, which caps it); else make
 * a new key and have the CA issue a responder certificate (OCSP_RESPONDER_SECONDS, backdated
 * 5 minutes), recorded in the inventory (profile "ocsp") with its audit entry, in one store
 * transaction (store_begin(): the caller holds the authority's exclusive lock, e.g.
 * authority_lock()). Needs ca->issuer_key (authority_load_key()). Call it before answering
 * and then regularly (e.g. every few minutes): ocsp_respond() never changes the store. A
 * renewal drops the cached answers. 0, or -1 with a one-line message (the responder keeps
 * what it had). */
int ocsp_responder_refresh(struct ocsp_responder *r, struct authority *ca, time_t now, char *err,
			   size_t err_len);

/* When the responder's certificate expires (notAfter), 0 without one: for the caller's
 * schedule and health checks. */
time_t ocsp_responder_expiry(const struct ocsp_responder *r);

/* What an answer is, for the HTTP layer's caching headers (RFC 5019 6.2). */
struct ocsp_answer {
	int status;	    /* OCSP_RESPONSE_STATUS_* (0 successful) */
	int cert_status;    /* V_OCSP_CERTSTATUS_* when successful, else -1 */
	time_t this_update; /* Last-Modified (successful answers; else 0) */
	time_t next_update; /* Expires */
	time_t produced;    /* producedAt */
	char etag[67];	    /* "\"<hex SHA-256 of the DER response>\"" */
	bool cached;	    /* the same bytes as an earlier answer */
};

/* Answer the DER OCSPRequest in req[0..len) (untrusted bytes, any length) at now: always a
 * DER OCSPResponse in *resp (malloc'd, the caller frees it) and its description in *meta:
 *   malformedRequest  bytes that are not exactly one DER OCSPRequest (trailing bytes, longer
 *                     than OCSP_REQUEST_MAX) or whose requestList does not hold exactly one
 *                     Request (RFC 5019 2.1.1)
 *   unauthorized      a CertID of another issuer (name and key hash compared with ca->issuer's
 *                     for the request's hash: SHA-1, SHA-256, SHA-384 or SHA-512; any other
 *                     hash is unauthorized too)
 *   tryLater          no usable responder certificate (ocsp_responder_refresh() not called or
 *                     failed), or the inventory could not be read
 *   successful        good, revoked (time, reason unless unspecified) or unknown (a serial
 *                     the inventory does not hold as issued by ca->issuer), signed with
 *                     ECDSA SHA-256, responder ID by key, the responder certificate and
 *                     ca->issuer included; thisUpdate now, nextUpdate OCSP_ANSWER_SECONDS
 *                     later (not after the responder certificate's notAfter)
 * Answers are cached per (serial, hash) and reused while the inventory confirms their status
 * and more than a third of their validity is left. Nonces are ignored (RFC 5019 4). Reads
 * the store (one lookup) and never writes it. 0, or -1 (out of memory) with nothing in
 * *resp. */
int ocsp_respond(struct ocsp_responder *r, struct authority *ca, const unsigned char *req,
		 size_t len, time_t now, unsigned char **resp, size_t *resp_len,
		 struct ocsp_answer *meta);

/* Drop every cached answer (after a revocation: the next request re-reads and re-signs). */
void ocsp_responder_forget(struct ocsp_responder *r);

#endif /* MTLS_CA_OCSP_H */
