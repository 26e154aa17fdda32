/*
 * The "wait" preference of RFC 7240: "Prefer: wait=55" asks a server to hold a request up to
 * 55 seconds for its answer (the CRL long poll of `mtls ca serve`, used by the daemons'
 * --crl-url), and "Preference-Applied: wait=55" says it did. Both headers have one grammar:
 *
 *   1#( token [ BWS "=" BWS word ] *( OWS ";" [ OWS parameter ] ) )
 *
 * where word is a token or a quoted-string. The text comes from the network: it is read up
 * to its NUL or PREFER_MAX_LEN bytes, whichever comes first, and never copied.
 */
#ifndef MTLS_COMMON_PREFER_H
#define MTLS_COMMON_PREFER_H

#define PREFER_MAX_LEN	8192
#define PREFER_WAIT_MAX 999999999L /* nine digits at most */

/* The seconds of the first "wait" preference in value (a header's value), 0 to
 * PREFER_WAIT_MAX; -1 if there is none or it is not a number of at most nine digits, or
 * value is not a list of preferences. */
long prefer_wait(const char *value);

#endif
