/*
 * The one rule for which public keys are strong enough, shared by libmtls (peer chains) and
 * the certificate authority (keys it issues for). Compiled into both libraries.
 */
#ifndef MTLS_KEY_STRENGTH_H
#define MTLS_KEY_STRENGTH_H

#include <stdbool.h>

#include <openssl/evp.h>

/* RSA (and RSA-PSS) of 2048 bits or more with an odd public exponent, 65537 <= e < 2^256;
 * ECDSA on P-256/P-384/P-521 given as a named curve (never explicit parameters); Ed25519,
 * Ed448. NULL is not strong. */
bool key_strength_ok(EVP_PKEY *key);
/* The same, and when the key is refused, what it is in why ("an RSA public exponent of 1
 * (an odd number from 65537 below 2^256)"); why may be NULL. */
bool key_strength_check(EVP_PKEY *key, char *why, size_t len);

#endif
