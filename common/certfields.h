/*
 * Fields of X.509 objects turned into plain C values, the same way for libmtls, the
 * certificate authority and the daemons. Compiled into libmtls and the CA library.
 */
#ifndef MTLS_CERTFIELDS_H
#define MTLS_CERTFIELDS_H

#include <time.h>

#include <openssl/x509.h>

/* An ASN.1 time as a UNIX time; 0 if t is NULL or does not parse. */
time_t certfields_time(const ASN1_TIME *t);
/* The serial number of cert in upper-case hex, whole bytes (BN_bn2hex), as a string the
 * caller frees with free(); NULL if out of memory. */
char *certfields_serial_hex(const X509 *cert);

#endif
