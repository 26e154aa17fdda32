/*
 * The client side of the CA service (mtls ca serve): HTTPS requests through libcurl, the
 * JSON answers (jansson), and the checks a client makes of what the CA hands it. Used by
 * mtls enroll, mtls renew, mtls ca revoke --ca-url and the daemons' renewal (renewal.h).
 *
 * Every request: HTTPS only (no redirects followed, no other protocol), TLS 1.2 or later,
 * connect timeout 10 s, total 30 s, answers of at most CACLIENT_MAX_BODY bytes. The server
 * is verified against the roots given by the caller (never the system store) and the URL's
 * host name; the only unverified request is caclient_fetch_root(), whose answer is
 * trusted only if it holds the root a token pins.
 *
 * Errors: -1 with one line in err saying what failed and what to do; for an HTTP error the
 * server's {"error", "message"} as "the CA refused (CODE): MESSAGE".
 */
#ifndef MTLS_RENEW_CACLIENT_H
#define MTLS_RENEW_CACLIENT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <jansson.h>
#include <openssl/x509.h>

#define CACLIENT_MAX_BODY  (1024 * 1024)
#define CACLIENT_MAX_CERTS 64 /* in a root bundle or a chain */

/* How to meet the server: the roots it must verify against (PEM, one or more; required)
 * and optionally a client certificate chain and key (files). stop, if not NULL, aborts a
 * transfer under way when it becomes true (a daemon stopping). */
struct caclient_tls {
	const char *root_pem;
	size_t root_len;
	const char *cert_file;
	const char *key_file;
	const atomic_bool *stop;
};

/* libcurl's global state, made before any thread uses this module (a daemon calls it
 * before starting its renewal thread; the commands need not). */
void caclient_init(void);

/* Check that base is "https://HOST[:PORT]" with no path, query, user or control byte, and
 * copy it (without a trailing '/') into out. 0, or -1 with the message. */
int caclient_base_url(const char *base, char *out, size_t out_len, char *err, size_t err_len);

/* Fetch base/roots.pem without verifying the server and return the certificate in it whose
 * SHA-256 of DER is pin (the caller frees it), or NULL with the message. */
X509 *caclient_fetch_root(const char *base, const unsigned char pin[32], char *err, size_t err_len);
/* The certificate of a PEM bundle (at most CACLIENT_MAX_CERTS) whose SHA-256 of DER is pin,
 * or NULL (*count says how many certificates the bundle held). */
X509 *caclient_pick_root(const char *pem, size_t len, const unsigned char pin[32], int *count);

/* POST the JSON text body to base + path (path starts with '/'). On 200, 0 and the answer's
 * bytes in *reply (NUL-terminated, *reply_len bytes; the caller frees). Otherwise -1 with
 * the message (the server's error, or why the CA could not be reached). */
int caclient_post(const char *base, const char *path, const char *body,
		  const struct caclient_tls *tls, char **reply, size_t *reply_len, char *err,
		  size_t err_len);
/* GET base + path, as caclient_post() otherwise (the answer need not be JSON). */
int caclient_get(const char *base, const char *path, const struct caclient_tls *tls, char **reply,
		 size_t *reply_len, char *err, size_t err_len);

/* The certificates of a PEM bundle (untrusted: at most CACLIENT_MAX_CERTS, and every PEM
 * block must be one whole CERTIFICATE; text between blocks is skipped), or NULL with the
 * message; the caller frees with sk_X509_pop_free(). No block is an empty stack. */
STACK_OF(X509) * caclient_certs(const char *pem, size_t len, char *err, size_t err_len);

/* An "issued" answer of /v1/enroll and /v1/renew. */
struct caclient_issued {
	char serial[64];
	char profile[16];
	char *names;
	time_t not_before, not_after, renew_after;
	char *chain_pem; /* chain re-encoded (not the text received): leaf first, then the
			  * issuing CA; only CERTIFICATE blocks */
	size_t chain_len;
	STACK_OF(X509) * chain; /* parsed from chain_pem; the leaf is the first */
};
/* Parse the JSON answer (untrusted: bounded, every field checked). 0, or -1. */
int caclient_issued_parse(const char *json, size_t len, struct caclient_issued *out, char *err,
			  size_t err_len);
/* The leaf carries key, verifies to one of roots (and nothing else) now, with the chain as
 * intermediates, and carries at least one subjectAltName. Its names ("DNS:a, URI:b") are
 * written into names. 0, or -1 with the message. */
int caclient_issued_check(const struct caclient_issued *in, EVP_PKEY *key, STACK_OF(X509) * roots,
			  char *names, size_t names_len, char *err, size_t err_len);
void caclient_issued_free(struct caclient_issued *i);

/* A CSR for key with an empty subject and no extensions (the CA decides the names), PEM;
 * the caller frees. NULL with the message. */
char *caclient_csr(EVP_PKEY *key, char *err, size_t err_len);

/* A certificate for key from the CA (/v1/enroll, /v1/renew): a CSR for key is added to the
 * JSON object request as "csr", which is POSTed to base + path (caclient_post()); the answer
 * is parsed into out (caclient_issued_parse(), the caller frees it even on failure) and
 * checked (caclient_issued_check(): key, roots, names). The request's text is wiped after
 * use (an enrollment's carries the token). 0, or -1 with the message. */
int caclient_issue(const char *base, const char *path, json_t *request, EVP_PKEY *key,
		   const struct caclient_tls *tls, STACK_OF(X509) * roots,
		   struct caclient_issued *out, char *names, size_t names_len, char *err,
		   size_t err_len);

/* The subjectAltNames of cert as "DNS:a, URI:b, IP:1.2.3.4", control bytes as \xNN. */
void caclient_names(X509 *cert, char *out, size_t out_len);

/* Revoke serial at the CA at url, authenticating with an admin's client certificate
 * (cert_file, key_file) and verifying the server against ca_file. 0 with one line in out
 * ("revoked SERIAL at TIME, CRL number N"), or -1 with the message in out. */
int caclient_revoke(const char *url, const char *cert_file, const char *key_file,
		    const char *ca_file, const char *serial, const char *reason, char *out,
		    size_t out_len);

#endif /* MTLS_RENEW_CACLIENT_H */
