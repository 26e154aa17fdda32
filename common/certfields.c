/*
 * Fields of X.509 objects as plain C values (see certfields.h).
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>

#include "certfields.h"

time_t certfields_time(const ASN1_TIME *t)
{
	struct tm tm;

	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
		return 0;
	return timegm(&tm);
}

char *certfields_serial_hex(const X509 *cert)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
	char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;
	char *out = hex != NULL ? strdup(hex) : NULL;

	OPENSSL_free(hex);
	BN_free(bn);
	return out;
}
