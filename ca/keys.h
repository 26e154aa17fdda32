/*
 * Key generation and private key files for the CA.
 */
#ifndef MTLS_CA_KEYS_H
#define MTLS_CA_KEYS_H

#include <stddef.h>

#include <openssl/evp.h>

/* "p256" (default for leaves), "p384" (default for CAs), "ed25519", "rsa3072", "rsa4096".
 * NULL with a message if the name is unknown. */
EVP_PKEY *keys_generate(const char *alg, char *err, size_t err_len);
/* Names accepted by keys_generate(), for messages. */
const char *keys_algorithms(void);

/* PEM of the private key: PKCS#8, encrypted with AES-256-CBC under a scrypt-derived key
 * (N=2^14, r=8, p=1: 16 MiB and far stronger than OpenSSL's PBKDF2 default of 2048
 * iterations; 2^15 would exceed OpenSSL's 32 MiB scrypt limit when reading the key back)
 * when passphrase is not NULL. Caller frees with keys_free_pem(). */
char *keys_to_pem(EVP_PKEY *key, const char *passphrase, size_t *len);
/* Wipes and frees a PEM buffer holding a private key. */
void keys_free_pem(char *pem, size_t len);

/* The digest the CA signs with when its key is key (certificates and CRLs alike): NULL for
 * EdDSA, which hashes by itself; SHA-384 for EC keys over 256 bits; SHA-256 otherwise. */
const EVP_MD *keys_sign_digest(EVP_PKEY *key);

/* Load a private key file; passphrase may be NULL. NULL with a message saying whether the
 * file was unreadable, not a key, or the passphrase wrong or missing. */
EVP_PKEY *keys_load(const char *path, const char *passphrase, char *err, size_t err_len);

/* Passphrase from a file (first line) or an environment variable; exactly one of the two
 * may be non-NULL. *out is NULL if both are. The variable is wiped and removed from the
 * environment once read. Caller frees with keys_free_passphrase(). */
int keys_passphrase(const char *file, const char *env, char **out, char *err, size_t err_len);
void keys_free_passphrase(char *pass);

#endif
