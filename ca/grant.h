/*
 * Issuance policy: what a certificate may carry, and whether a CSR asks for more.
 *
 * A grant is what whoever authorizes an issuance allows: a profile, names and optionally a
 * common name. `mtls ca issue` builds one from the operator's options; the CA service will
 * build one from an enrollment token (grant_source says which, for the advice in refusals).
 * The certificate carries exactly the granted names.
 *
 * A CSR (grant_request) supplies the public key and nothing else: every name it asks for
 * must be granted, its common name must be the granted one or a granted name, and a CSR
 * asking to be a CA is refused. Anything else it asks for (key usages, extended key usages,
 * name constraints, ...) is never copied: the profile decides (issue_sign()). For a grant
 * from a token or a renewal (an automated client, which cannot read a note), a CSR asking
 * for an extended key usage the profile does not give, or for certificate or CRL signing,
 * is refused instead of noted.
 *
 * Nothing here reads files or needs a CA key, so that the CA service and the fuzz target
 * (tests/fuzz/fuzz_csr.c) can call all of it.
 */
#ifndef MTLS_CA_GRANT_H
#define MTLS_CA_GRANT_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/x509v3.h>

#include "issue.h"

/* Subject alternative names that passed the CA's syntax checks (grant_add_*). */
struct grant_names {
	GENERAL_NAMES *names; /* DNS (lower case), IP (4 or 16 bytes), URI; in the order added */
	char *text;	      /* "DNS:a, IP:b, URI:c" for the inventory and the audit log: every
			       * name, whatever the length (allocated; never truncated) */
	int ndns, nip, nuri;
	char first[256]; /* the first name, for a default CN */
};

/* names and text are NULL if out of memory (grant_add_* then fail). */
void grant_names_init(struct grant_names *n);
/* Frees what grant_names_init() allocated; a zeroed struct is fine too. */
void grant_names_free(struct grant_names *n);

/* Validate and add. -1 with a message saying what is wrong with the name and how to fix it.
 * DNS: a host name of LDH labels (1-63 characters, at most 253 in all), the last not all
 * digits, a wildcard only as the whole leftmost label above at least two more
 * ("*.example.org"); stored in lower case.
 * IP: an IPv4 or IPv6 literal.
 * URI: scheme://authority[/path], at most 2048 bytes of printable ASCII; no "." or ".."
 * path segments, percent-encoded '/', '.' or control bytes. A SPIFFE ID (spiffe://) follows
 * the SPIFFE ID rules: a trust domain of [a-z0-9._-], path segments of [a-zA-Z0-9._-] that
 * are neither "." nor "..", no empty segment, trailing '/', query, fragment or
 * percent-encoding. */
int grant_add_dns(struct grant_names *n, const char *name, char *err, size_t err_len);
int grant_add_ip(struct grant_names *n, const char *ip, char *err, size_t err_len);
int grant_add_uri(struct grant_names *n, const char *uri, char *err, size_t err_len);

/* A common name: 1 to 64 characters of UTF-8, no control or format (Cf) characters. */
int grant_check_cn(const char *cn, char *err, size_t err_len);
/* The same rule for other subject text, 1 to max characters; what names it in messages
 * ("the common name", "--name"). */
int grant_check_text(const char *text, size_t max, const char *what, char *err, size_t err_len);

enum grant_source {
	GRANT_OPERATOR, /* command-line options: refusals suggest --dns, --uri, --cn */
	GRANT_TOKEN,	/* an enrollment token: refusals say the token does not grant it */
	GRANT_RENEWAL,	/* a renewal: refusals say the certificate renewed does not carry it */
};

struct grant {
	enum issue_kind kind;
	enum grant_source source;
	char cn[257]; /* the granted common name (64 characters of UTF-8), "" for none */
	struct grant_names names;
};

/* An empty grant for profile "server", "client" or "peer". -1 with a message if unknown. */
int grant_init(struct grant *g, const char *profile, enum grant_source source, char *err,
	       size_t err_len);
void grant_free(struct grant *g);
/* Grant this common name (grant_check_cn()). */
int grant_set_cn(struct grant *g, const char *cn, char *err, size_t err_len);
/* The profile's needs: a server certificate a DNS or IP name (which clients check), a
 * client or peer certificate an identity; and names that fit in GRANT_NAMES_MAX bytes of
 * DER (about 3,000 short DNS names), so that the chain stays under the 100 KiB OpenSSL
 * accepts by default. -1 with a message. */
#define GRANT_NAMES_MAX (64 * 1024)
int grant_check(const struct grant *g, char *err, size_t err_len);

/* A certificate signing request, decoded. */
struct grant_request {
	X509_REQ *req;
	EVP_PKEY *key;	   /* its public key */
	char *subject;	   /* RFC 2253 with non-ASCII escaped, for messages and the log; whole
			    * (allocated, "" if it cannot be printed) */
	char cn[257];	   /* its common name once grant_match() accepted it, else "" */
	char ignored[512]; /* what it asks for that the profile decides instead */
};

/* Decode a CSR, PEM or DER, from memory; what names it in messages. The data must hold
 * exactly one CSR: a PEM file with two, or DER followed by other bytes, is refused. Checks
 * neither its signature (grant_request_verify()) nor what it asks for (grant_match()). 0,
 * or -1 with a message; grant_request_free() in both cases. */
int grant_request_read(struct grant_request *r, const void *data, size_t len, const char *what,
		       char *err, size_t err_len);
/* Is it signed by the key it carries, and is that a key the CA signs for? */
int grant_request_verify(const struct grant_request *r, const char *what, char *err,
			 size_t err_len);
/* Frees what the request holds; a zeroed struct is fine too. */
void grant_request_free(struct grant_request *r);

/* Does the request ask for nothing beyond g? 0 yes (r->cn and r->ignored filled in), -1
 * with a message naming the first name (or CA:TRUE) that is not granted and what to do. */
int grant_match(const struct grant *g, struct grant_request *r, const char *what, char *err,
		size_t err_len);

/* The common name of the certificate: the granted one, else the request's (r may be NULL),
 * else the first granted name if it fits in 64 characters, else NULL (an empty subject). */
const char *grant_cn(const struct grant *g, const struct grant_request *r);

#endif
