/*
 * The one rule for which public keys are strong enough, shared by libmtls (peer chains) and
 * the certificate authority (keys it issues for). Compiled into both libraries.
 */
#ifndef MTLS_KEY_STRENGTH_H
#define MTLS_KEY_STRENGTH_H

#include <stdbool.h>

#include <openssl/evp.h>

/* RSA (and RSA-PSS) of 2048 bits or more, ECDSA on P-256/P-384/P-521, Ed25519, Ed448. */
bool key_strength_ok(EVP_PKEY *key);

#endif
