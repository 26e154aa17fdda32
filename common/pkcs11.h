/*
 * Private keys that stay on a PKCS#11 token (a hardware security module, a smart card,
 * SoftHSM), named by an RFC 7512 URI ("pkcs11:token=db;object=server-key;type=private") and
 * used through the PKCS#11 engine of libp11 (Debian's libengine-pkcs11-openssl), which OpenSSL
 * 3.0 loads at run time: nothing links against it. The EVP_PKEY it gives signs on the token;
 * the key never enters this process. Compiled into libmtls and the CA library.
 *
 * The PIN comes from the caller (a file or an environment variable, never a command line): a
 * URI holding pin-value or pin-source is refused. This file logs in with it itself (the
 * module's C_Login, one session kept open per token so that the login lasts) and never gives
 * it to the engine, which would keep a copy for the life of the process (libp11 remembers the
 * PIN to log in again after a fork): only the token's login state is left. The PIN is checked
 * at the first login of the process; later loads from that token reuse the login.
 */
#ifndef MTLS_PKCS11_H
#define MTLS_PKCS11_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/evp.h>

/* The module used when neither the caller nor the URI names one: p11-kit's proxy, which
 * offers every module registered with p11-kit (/usr/share/p11-kit/modules/). */
#define PKCS11_DEFAULT_MODULE "p11-kit-proxy.so"

/* What a failed load was about, for the callers' error categories. */
enum pkcs11_failure {
	PKCS11_OK,
	PKCS11_BAD_URI,	   /* not a pkcs11: URI we take, or it holds a PIN */
	PKCS11_NO_ENGINE,  /* the engine or the module cannot be loaded */
	PKCS11_BAD_PIN,	   /* the token refused the PIN, or none was given and one is needed */
	PKCS11_PIN_LOCKED, /* the token locked the PIN after too many wrong ones */
	PKCS11_NO_OBJECT,  /* no private key matches the URI: no such object, or no such token
			    * (absent, removed, another label): the engine tells them apart
			    * only on its standard error */
	PKCS11_NO_SIGN,	   /* the key was found but the token would not sign with it (removed,
			    * its session ended): the engine keeps its session and the key's
			    * handle for the process, so only a restart reaches the token again */
};

/* True if s names a key by PKCS#11 URI rather than a file ("pkcs11:", any case). */
bool pkcs11_is_uri(const char *s);

/* Checks the text of a URI without loading anything: the scheme, no PIN in it, and the
 * module it names (query attribute module-path, percent-decoded) written to module (may be
 * NULL; "" when it names none). Returns 0, or -1 with a one-line message in err. */
int pkcs11_uri_check(const char *uri, char *module, size_t module_len, char *err, size_t err_len);

/* Loads the private key uri names. module: the PKCS#11 module's path, or NULL for the URI's
 * module-path, else PKCS11_DEFAULT_MODULE. pin: the token's user PIN, or NULL for a key that
 * needs no login. Returns a key the caller frees with EVP_PKEY_free(), or NULL with *why set
 * (may be NULL) and a one-line message in err that names the URI without any PIN. The key
 * signs once before it is returned: the engine hands out a key it found before without
 * asking the token, so this is what finds a token that is gone. Safe to call
 * from several threads; loads are serialized. A process uses one module, the first one a key
 * was loaded through (OpenSSL has one instance of the engine, which takes its module once): a
 * key naming another module is refused (PKCS11_NO_ENGINE). */
EVP_PKEY *pkcs11_key_load(const char *uri, const char *module, const char *pin,
			  enum pkcs11_failure *why, char *err, size_t err_len);

#endif
