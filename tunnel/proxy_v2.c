/*
 * Building PROXY v2 headers.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "proxy_v2.h"

static const uint8_t signature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
				      0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

#define PP2_TYPE_SSL		0x20
#define PP2_SUBTYPE_SSL_VERSION 0x21
#define PP2_SUBTYPE_SSL_CN	0x22
#define PP2_CLIENT_SSL		0x01
#define PP2_CLIENT_CERT_CONN	0x02
#define PP2_CLIENT_CERT_SESS	0x04

/* Append a TLV; returns the new position or 0 if it does not fit. */
static size_t tlv(uint8_t *buf, size_t pos, size_t cap, uint8_t type, const void *value, size_t len)
{
	if (pos == 0 || len > 0xffff || pos + 3 + len > cap)
		return 0;
	buf[pos] = type;
	buf[pos + 1] = (uint8_t)(len >> 8);
	buf[pos + 2] = (uint8_t)len;
	memcpy(buf + pos + 3, value, len);
	return pos + 3 + len;
}

/* ssl: 0 no SSL TLV (a plaintext client), 1 a verified client certificate, 2 TLS without a
 * verified one (verify result 1, no CN, no identity). */
static size_t build(uint8_t *buf, size_t cap, const struct sockaddr *src,
		    const struct sockaddr *dst, int ssl, const char *tls_version, const char *cn,
		    const char *identity, int resumed)
{
	size_t pos = 16, ssl_start, ssl_len;
	uint8_t fam = 0x00;

	if (cap < 16 + 36)
		return 0;
	memcpy(buf, signature, sizeof(signature));
	buf[12] = 0x21; /* version 2, PROXY */
	if (src->sa_family == AF_INET && dst->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)src;
		const struct sockaddr_in *d = (const struct sockaddr_in *)dst;

		fam = 0x11; /* TCP over IPv4 */
		memcpy(buf + pos, &s->sin_addr, 4);
		memcpy(buf + pos + 4, &d->sin_addr, 4);
		memcpy(buf + pos + 8, &s->sin_port, 2);
		memcpy(buf + pos + 10, &d->sin_port, 2);
		pos += 12;
	} else if (src->sa_family == AF_INET6 && dst->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)src;
		const struct sockaddr_in6 *d = (const struct sockaddr_in6 *)dst;

		fam = 0x21; /* TCP over IPv6 */
		memcpy(buf + pos, &s->sin6_addr, 16);
		memcpy(buf + pos + 16, &d->sin6_addr, 16);
		memcpy(buf + pos + 32, &s->sin6_port, 2);
		memcpy(buf + pos + 34, &d->sin6_port, 2);
		pos += 36;
	}
	buf[13] = fam;

	if (ssl == 0)
		goto done;
	/* PP2_TYPE_SSL: client flags, verify result (0 = verified), then sub-TLVs */
	ssl_start = pos;
	if (pos + 3 + 5 > cap)
		return 0;
	buf[pos] = PP2_TYPE_SSL;
	pos += 3;
	/* a verified client certificate, on this connection or (resumed) on its session */
	buf[pos] = PP2_CLIENT_SSL;
	memset(buf + pos + 1, 0, 4);
	if (ssl == 1)
		buf[pos] |= PP2_CLIENT_CERT_SESS | (resumed ? 0 : PP2_CLIENT_CERT_CONN);
	else
		buf[pos + 4] = 1; /* not verified: a backend must not take it for a client */
	pos += 5;
	if (tls_version != NULL)
		pos = tlv(buf, pos, cap, PP2_SUBTYPE_SSL_VERSION, tls_version, strlen(tls_version));
	if (cn != NULL)
		pos = tlv(buf, pos, cap, PP2_SUBTYPE_SSL_CN, cn, strlen(cn));
	if (pos == 0)
		return 0;
	/* the sub-TLVs must fit the SSL TLV's 16-bit length (the header's length check below
	 * implies it; said here, where the length is written) */
	ssl_len = pos - ssl_start - 3;
	if (ssl_len > 0xffff)
		return 0;
	buf[ssl_start + 1] = (uint8_t)(ssl_len >> 8);
	buf[ssl_start + 2] = (uint8_t)ssl_len;
	if (identity != NULL)
		pos = tlv(buf, pos, cap, PROXY_V2_TYPE_MTLS_IDENTITY, identity, strlen(identity));
done:
	if (pos == 0 || pos - 16 > 0xffff)
		return 0;
	buf[14] = (uint8_t)((pos - 16) >> 8);
	buf[15] = (uint8_t)(pos - 16);
	return pos;
}

size_t proxy_v2_header(uint8_t *buf, size_t cap, const struct sockaddr *src,
		       const struct sockaddr *dst, const char *tls_version, const char *cn,
		       const char *identity, int resumed)
{
	return build(buf, cap, src, dst, 1, tls_version, cn, identity, resumed);
}

size_t proxy_v2_header_unverified(uint8_t *buf, size_t cap, const struct sockaddr *src,
				  const struct sockaddr *dst, const char *tls_version)
{
	return build(buf, cap, src, dst, tls_version != NULL ? 2 : 0, tls_version, NULL, NULL, 0);
}
