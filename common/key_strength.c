/*
 * Which public keys are strong enough (see key_strength.h).
 */
#include <stdio.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>

#include "key_strength.h"

/* RSA: a modulus of 2048 bits or more and an odd public exponent with 65537 <= e < 2^256
 * (NIST SP 800-56B 6.2.1; OpenSSL's own bounds). An exponent of 1 makes every "signature"
 * the message itself, 3 invites broadcast and padding attacks; OpenSSL signs and verifies
 * with either without a word. EVP_PKEY_public_check() would also test n for small factors
 * and primality, at the cost of a Miller-Rabin run on every peer chain: the exponent bounds
 * are what matters here and they are cheap. */
static bool rsa_ok(EVP_PKEY *key, char *why, size_t len)
{
	BIGNUM *e = NULL;
	char *dec;
	bool ok;

	if (EVP_PKEY_get_bits(key) < 2048) {
		snprintf(why, len, "an RSA key of %d bits, fewer than 2048",
			 EVP_PKEY_get_bits(key));
		return false;
	}
	if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_E, &e) != 1 || e == NULL) {
		snprintf(why, len, "an RSA key without a readable public exponent");
		return false;
	}
	ok = BN_is_odd(e) && BN_get_word(e) >= 65537 && BN_num_bits(e) <= 256;
	if (!ok) {
		dec = BN_num_bits(e) <= 64 ? BN_bn2dec(e) : NULL;
		snprintf(why, len,
			 "an RSA public exponent of %s, not an odd number from 65537 below 2^256",
			 dec != NULL ? dec : "more than 64 bits");
		OPENSSL_free(dec);
	}
	BN_free(e);
	return ok;
}

/* ECDSA: one of the named NIST curves, encoded by name. A key whose curve was given as
 * explicit parameters is refused even when those parameters are a named curve's (OpenSSL
 * then reports the curve's name): RFC 5480 2.1.1 allows only namedCurve, and explicit
 * parameters have let crafted curves through verifiers before (CVE-2020-0601). */
static bool ec_ok(EVP_PKEY *key, char *why, size_t len)
{
	char group[64] = "", encoding[32] = "";
	size_t n = 0;
	int explicit_params = 1;

	if (EVP_PKEY_get_int_param(key, OSSL_PKEY_PARAM_EC_DECODED_FROM_EXPLICIT_PARAMS,
				   &explicit_params) != 1 ||
	    explicit_params != 0 ||
	    EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_EC_ENCODING, encoding,
					   sizeof(encoding), &n) != 1 ||
	    strcmp(encoding, OSSL_PKEY_EC_ENCODING_GROUP) != 0) {
		snprintf(why, len, "EC curve parameters given explicitly, not as a named curve");
		return false;
	}
	if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
					   &n) == 1 &&
	    (strcmp(group, "prime256v1") == 0 || strcmp(group, "secp384r1") == 0 ||
	     strcmp(group, "secp521r1") == 0))
		return true;
	snprintf(why, len, "an EC key on curve %s, not P-256, P-384 or P-521",
		 group[0] != '\0' ? group : "(unknown)");
	return false;
}

bool key_strength_check(EVP_PKEY *key, char *why, size_t len)
{
	char ignored[1];

	if (why == NULL) {
		why = ignored;
		len = sizeof(ignored);
	}
	if (len > 0)
		why[0] = '\0';
	if (key == NULL) {
		snprintf(why, len, "no key");
		return false;
	}
	switch (EVP_PKEY_get_base_id(key)) {
	case EVP_PKEY_RSA:
	case EVP_PKEY_RSA_PSS: return rsa_ok(key, why, len);
	case EVP_PKEY_EC: return ec_ok(key, why, len);
	case EVP_PKEY_ED25519:
	case EVP_PKEY_ED448: return true;
	default:
		snprintf(why, len, "a key of type %s",
			 OBJ_nid2sn(EVP_PKEY_get_base_id(key)) != NULL
				 ? OBJ_nid2sn(EVP_PKEY_get_base_id(key))
				 : "(unknown)");
		return false;
	}
}

bool key_strength_ok(EVP_PKEY *key)
{
	char why[128]; /* not read: a buffer of its own, so that nothing writes through NULL */

	return key_strength_check(key, why, sizeof(why));
}
