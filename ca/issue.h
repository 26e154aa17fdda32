/*
 * Building and signing certificates: CA certificates for `mtls ca init`, leaves for
 * `mtls ca issue`. What a leaf may carry (names, a CSR's requests) is decided before, by
 * grant.h; the profile (enum issue_kind) decides every extension.
 */
#ifndef MTLS_CA_ISSUE_H
#define MTLS_CA_ISSUE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <openssl/x509v3.h>

#include "certfields.h"

/* ISSUE_OCSP is internal: a delegated OCSP responder certificate (ca/ocsp.c), never offered
 * to operators (issue_profile() does not accept "ocsp"). */
enum issue_kind {
	ISSUE_ROOT,
	ISSUE_INTERMEDIATE,
	ISSUE_SERVER,
	ISSUE_CLIENT,
	ISSUE_PEER,
	ISSUE_OCSP
};

struct issue_spec {
	enum issue_kind kind;
	const char *cn; /* may be NULL for leaves with SANs */
	const char *org;
	EVP_PKEY *subject_key; /* public key of the subject */
	GENERAL_NAMES *names;  /* subjectAltNames (grant.h), or NULL; not changed */
	time_t not_before;
	time_t not_after;
	const char *crl_url;  /* CRL distribution point (issue_check_crl_url()), or NULL */
	const char *ocsp_url; /* OCSP responder (issue_check_ocsp_url()) for authorityInfoAccess,
			       * or NULL */
	bool must_staple; /* server and peer leaves: the TLS feature status_request (RFC 7633) */
};

/* Build and sign. issuer NULL means self-signed (root). NULL with a message.
 * Server, client and peer leaves carry crl_url and ocsp_url when set; CA certificates carry
 * neither. ISSUE_OCSP (RFC 6960 4.2.2.2): CA:FALSE, keyUsage digitalSignature, EKU
 * OCSPSigning only, id-pkix-ocsp-nocheck, and neither URL (a client does not check the
 * responder's own status). */
X509 *issue_sign(const struct issue_spec *spec, X509 *issuer, EVP_PKEY *issuer_key, char *err,
		 size_t err_len);

/* A CRL distribution point URL: an absolute http:// or https:// URL with a host, at most 2048
 * bytes of printable ASCII without spaces, ',', quotes, backslashes or <>^`{|}. 0, or -1
 * with a one-line message (the URL shown with anything unprintable as '?'). */
int issue_check_crl_url(const char *url, char *err, size_t err_len);
/* The same rules for an OCSP responder URL (authorityInfoAccess); the message names it. */
int issue_check_ocsp_url(const char *url, char *err, size_t err_len);

/* Profiles operators may ask for: "server", "client", "peer" (both). issue_profile_name()
 * also names the CA kinds ("root", "intermediate") and ISSUE_OCSP ("ocsp"). */
int issue_profile(const char *name, enum issue_kind *kind);
const char *issue_profile_name(enum issue_kind kind);

/* Keys we sign for: RSA >= 2048 (not RSA-PSS) with 65537 <= e < 2^256, EC P-256/P-384/P-521
 * by name, Ed25519, Ed448 (key_strength.h). If not, what the key is in why. */
bool issue_key_acceptable(EVP_PKEY *key, char *why, size_t len);

/* Upper-case hex serial, the SHA-256 of the SPKI (hex). */
void issue_serial_hex(X509 *cert, char *out, size_t len);
void issue_spki_sha256(X509 *cert, char out[65]);
/* The same for a public key (what the certificate for it would carry). */
void issue_key_sha256(EVP_PKEY *key, char out[65]);
/* The subject (RFC 2253, non-ASCII escaped), whole: the caller frees it; NULL if out of
 * memory. */
char *issue_subject(X509 *cert);
/* The certificate as PEM, NUL-terminated (caller frees); NULL on failure. */
char *issue_cert_pem(X509 *cert, size_t *len);

#endif
