/*
 * Helpers for the unit tests: certificate paths, in-process handshakes over socketpairs.
 */
#ifndef MTLS_TESTUTIL_H
#define MTLS_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/x509.h>

#include "mtls.h"

/* $MTLS_TEST_CERTS/name (the zoo made by tests/certs/gen-certs.sh). Static buffer rotation:
 * up to 8 results may be used at once. */
const char *cert_path(const char *name);

/* A non-blocking, close-on-exec socketpair; aborts the test on failure. */
void test_socketpair(int fds[2]);
/* Free both ends of a connection pair and close its socketpair. */
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
void test_issue_client(long valid_for, const char *uri, char **chain_pem, char **key_pem);

#endif
