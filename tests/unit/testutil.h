/*
 * Helpers for the unit tests: certificate paths, in-process handshakes over socketpairs.
 */
#ifndef MTLS_TESTUTIL_H
#define MTLS_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/x509.h>

#include "mtls.h"

/* $MTLS_TEST_CERTS/name (the zoo made by tests/certs/gen-certs.sh). Buffers rotate per
 * thread: up to 8 results of one thread may be used at once. */
const char *cert_path(const char *name);

/* A non-blocking, close-on-exec socketpair; aborts the test on failure. */
void test_socketpair(int fds[2]);
/* Free both ends of a connection pair and close its socketpair. */
/* A client endpoint presenting chain with key (PEM in memory), trusting the zoo's root; with
 * tickets off, every handshake it makes is a full one. Fails the test if it cannot be
 * configured. */
struct mtls *test_mem_client(const char *chain, const char *key, bool tickets);
void test_pair_free(struct mtls *srv, struct mtls *cli, int fds[2]);

/* Drive both sides of a handshake until each finished or failed (bounded). Returns the final
 * results in *srv_rc and *cli_rc (0 or -1). After the client finished, one round trip of
 * application data is attempted, so that a TLS 1.3 client sees the server's refusal. */
void test_handshake_pair(struct mtls *srv, struct mtls *cli, int *srv_rc, int *cli_rc);

/* Read a whole file into a NUL-terminated buffer (caller frees); aborts on failure. */
char *test_slurp(const char *path, size_t *len);

/* A zoo certificate (PEM file name), parsed; aborts on failure. */
X509 *test_read_cert(const char *name);

/* A CRL from the zoo's issuing CA (int.pem), valid from last to next (offsets from now in
 * seconds), listing the leaf of the zoo chain revoked_chain if not NULL. Returns PEM (caller
 * frees) and its length. */
char *test_make_crl(long last, long next, const char *revoked_chain, size_t *len);

/* A client certificate issued now by the zoo's issuing CA, valid for valid_for seconds,
 * with the URI SAN uri: its chain (leaf, issuer) and its unencrypted key as PEM strings
 * (caller frees). */
/* Adds extension nid (OpenSSL config syntax value) to cert, issued by issuer. */
void test_add_ext(X509 *cert, X509 *issuer, int nid, const char *value);
void test_issue_client(long valid_for, const char *uri, char **chain_pem, char **key_pem);

/* --- certificates made at test time, with knobs ------------------------------------------
 * For the strict-profile and chain tests: a root, intermediates and leaves with any mix of
 * conforming and nonconforming properties. Zero-initialised fields take the conforming
 * default of the kind (CA or leaf); extension values use openssl.cnf syntax, "" leaves the
 * extension out. */
struct test_cert {
	const char *subject; /* "CN=a,O=b"; NULL: "CN=test"; "": empty subject */
	const char *serial;  /* hex, may start with '-'; NULL: random, positive, 16 bytes */
	bool ca;	     /* a CA: basicConstraints CA:TRUE, keyCertSign, no EKU or SAN */
	/* NULL: the kind's default. basicConstraints "critical,CA:TRUE" or "critical,CA:FALSE";
	 * keyUsage "critical,keyCertSign,cRLSign" or "critical,digitalSignature"; EKU none or
	 * "clientAuth"; subjectAltName none or "URI:spiffe://test.mtls/ns/prod/sa/app1" */
	const char *bc;
	const char *ku;
	const char *eku;
	const char *san;
	bool san_critical;
	const unsigned char *ip_raw; /* one more iPAddress SAN of ip_raw_len octets */
	size_t ip_raw_len;
	const char *raw_name; /* one more SAN of raw_type (GEN_EMAIL, ...): these bytes as is */
	int raw_type;
	const char *cn_raw; /* one more CN of cn_raw_len bytes (a NUL, ...), after subject's */
	size_t cn_raw_len;
	const char *nc;	   /* nameConstraints, e.g. "critical,permitted;DNS:good.test" */
	const char *crldp; /* crlDistributionPoints, e.g. "URI:http://crl.test/int.crl" */
	bool no_ski;
	bool no_aki;
	const char *aia;	/* authorityInfoAccess, e.g. "OCSP;URI:http://ocsp.test/" */
	const char *tlsfeature; /* TLS feature (RFC 7633), e.g. "status_request" */
	long not_before;	/* seconds from now; both 0: -60 and +86400 */
	long not_after;
};

/* Make a certificate with a new P-256 key (returned in *key; caller frees both). Self-signed
 * when issuer is NULL. Aborts the test on failure. */
X509 *test_cert_make(const struct test_cert *spec, X509 *issuer, EVP_PKEY *issuer_key,
		     EVP_PKEY **key);
/* PEM of n certificates, concatenated; and of a private key (caller frees). */
char *test_certs_pem(X509 *const *certs, int n);
char *test_key_pem(EVP_PKEY *key);
/* A v2 CRL in issuer's name signed by key (which may be another key: a forgery), valid from
 * a minute ago for an hour, listing the n certificates revoked. number < 0: no CRL number.
 * idp: an issuingDistributionPoint in openssl.cnf syntax, or NULL. PEM, caller frees. */
char *test_crl_pem(X509 *issuer, EVP_PKEY *key, X509 *const *revoked, int n, long number,
		   const char *idp);

/* An OCSP response about cert (issued by issuer), for the OCSP tests. Zero fields take the
 * defaults: status good, thisUpdate a minute ago, nextUpdate in an hour, SHA-1 CertID,
 * signed with SHA-256 by the issuer (key issuer_key) with its responder ID by name. */
struct test_ocsp {
	X509 *cert;
	X509 *issuer;
	EVP_PKEY *issuer_key;
	int status;    /* V_OCSP_CERTSTATUS_*; 0 is good */
	int reason;    /* revoked: OCSP_REVOKED_STATUS_*; 0: keyCompromise (1) */
	long this_off; /* seconds from now; 0: -60 */
	long next_off; /* seconds from now; 0: +3600 */
	bool no_next;  /* no nextUpdate */
	X509 *signer;  /* a delegated responder (its certificate included), or NULL */
	EVP_PKEY *signer_key;
	const EVP_MD *certid_md;    /* NULL: SHA-1 */
	const EVP_MD *sign_md;	    /* NULL: SHA-256 */
	const ASN1_INTEGER *serial; /* the certificate asked about instead of cert's */
	bool by_key;		    /* responder ID by key hash */
	int resp_status;	    /* OCSP_RESPONSE_STATUS_*; 0: successful */
	bool critical_ext;	    /* a critical extension in the single response */
};
/* DER, malloc'd (caller frees); aborts the test on failure. */
unsigned char *test_ocsp_response(const struct test_ocsp *spec, size_t *len);

#endif
