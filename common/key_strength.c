/*
 * Which public keys are strong enough (see key_strength.h).
 */
#include <string.h>

#include "key_strength.h"

bool key_strength_ok(EVP_PKEY *key)
{
	char group[64];
	size_t len = 0;

	switch (EVP_PKEY_get_base_id(key)) {
	case EVP_PKEY_RSA:
	case EVP_PKEY_RSA_PSS: return EVP_PKEY_get_bits(key) >= 2048;
	case EVP_PKEY_EC:
		if (EVP_PKEY_get_utf8_string_param(key, "group", group, sizeof(group), &len) != 1)
			return false;
		return strcmp(group, "prime256v1") == 0 || strcmp(group, "secp384r1") == 0 ||
		       strcmp(group, "secp521r1") == 0;
	case EVP_PKEY_ED25519:
	case EVP_PKEY_ED448: return true;
	default: return false;
	}
}
