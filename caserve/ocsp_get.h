/*
 * The request of an OCSP GET (RFC 6960 appendix A.1, RFC 5019 section 5): the path after
 * "/ocsp/" is the DER OCSPRequest in standard base64 (not base64url), percent-encoded.
 * Some clients leave '/' or '+' unescaped, and libmicrohttpd may already have undone the
 * escapes: both are accepted.
 */
#ifndef MTLS_CASERVE_OCSP_GET_H
#define MTLS_CASERVE_OCSP_GET_H

#include <stddef.h>

/* The DER bytes (malloc'd; at most max), or NULL if text is not such a request. */
unsigned char *ocsp_get_decode(const char *text, size_t max, size_t *out_len);

#endif
