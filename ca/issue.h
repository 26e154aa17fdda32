/*
 * Building and signing certificates: CA certificates for `mtls ca init`, leaves from
 * profiles or CSRs for `mtls ca issue`. Names are validated before anything is signed.
 */
#ifndef MTLS_CA_ISSUE_H
#define MTLS_CA_ISSUE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <openssl/x509v3.h>

/* Subject alternative names, validated (see issue_add_*). */
struct issue_names {
	GENERAL_NAMES *names;
	char text[1024]; /* "DNS:a, IP:b, URI:c" for the inventory and messages */
	int ndns, nip, nuri;
	char first[256]; /* the first name, for a default CN */
};

void issue_names_init(struct issue_names *n);
void issue_names_free(struct issue_names *n);
/* Validate and add. -1 with a message saying what is wrong with the name. */
int issue_add_dns(struct issue_names *n, const char *name, char *err, size_t err_len);
int issue_add_ip(struct issue_names *n, const char *ip, char *err, size_t err_len);
int issue_add_uri(struct issue_names *n, const char *uri, char *err, size_t err_len);

enum issue_kind { ISSUE_ROOT, ISSUE_INTERMEDIATE, ISSUE_SERVER, ISSUE_CLIENT, ISSUE_PEER };

struct issue_spec {
	enum issue_kind kind;
	const char *cn; /* may be NULL for leaves with SANs */
	const char *org;
	EVP_PKEY *subject_key; /* public key of the subject */
	const struct issue_names *names;
	time_t not_before;
	time_t not_after;
	const char *crl_url; /* CRL distribution point, or NULL */
};

/* Build and sign. issuer NULL means self-signed (root). NULL with a message. */
X509 *issue_sign(const struct issue_spec *spec, X509 *issuer, EVP_PKEY *issuer_key, char *err,
		 size_t err_len);

/* Profiles: "server", "client", "peer" (both). */
int issue_profile(const char *name, enum issue_kind *kind);
const char *issue_profile_name(enum issue_kind kind);

/* Take a CSR (PEM or DER): check its signature and key, copy its DNS/IP/URI SANs into
 * names, and describe in ignored what else it asked for and will not get. Returns the
 * CSR's public key (caller frees) or NULL with a message. */
EVP_PKEY *issue_from_csr(const char *path, struct issue_names *names, char *ignored,
			 size_t ignored_len, char *err, size_t err_len);
/* The same for a CSR in memory (no disk, no CA key: the fuzz target calls it); what names
 * the input in messages. check_signature false only for the fuzz target. */
EVP_PKEY *issue_csr_parse(const void *data, size_t len, const char *what, bool check_signature,
			  struct issue_names *names, char *ignored, size_t ignored_len, char *err,
			  size_t err_len);

/* Keys we sign for: RSA >= 2048, EC P-256/P-384/P-521, Ed25519, Ed448. */
bool issue_key_acceptable(EVP_PKEY *key);

/* Upper-case hex serial, the SHA-256 of the SPKI (hex), the subject (RFC 2253). */
void issue_serial_hex(X509 *cert, char *out, size_t len);
void issue_spki_sha256(X509 *cert, char out[65]);
void issue_subject(X509 *cert, char *out, size_t len);
time_t issue_time(const ASN1_TIME *t);
/* The certificate as PEM, NUL-terminated (caller frees); NULL on failure. */
char *issue_cert_pem(X509 *cert, size_t *len);

#endif
