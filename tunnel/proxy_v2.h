/*
 * PROXY protocol v2 header (haproxy.org/download/2.0/doc/proxy-protocol.txt) sent to the
 * target before any byte of the client's, so that a backend knows who connected: the
 * client's address, and TLVs for the TLS version, the certificate CN and the authorized
 * identity.
 */
#ifndef MTLS_TUNNEL_PROXY_V2_H
#define MTLS_TUNNEL_PROXY_V2_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* TLV type of the authorized identity (URI SAN or other primary identity): in the range
 * PP2_TYPE_MIN_CUSTOM..PP2_TYPE_MAX_CUSTOM reserved for applications. */
#define PROXY_V2_TYPE_MTLS_IDENTITY 0xE0

/* Write the header into buf; returns its length, or 0 if it does not fit in cap or in the
 * protocol's 16-bit lengths (the header, the SSL TLV, each TLV). Nothing is ever shortened:
 * a truncated identity would be another identity, so a caller refuses the connection on 0.
 * src and dst of different families (or unix sockets) are sent as UNSPEC (LOCAL addresses).
 * resumed: the certificate was presented on an earlier connection of the TLS session
 * (PP2_CLIENT_CERT_SESS without PP2_CLIENT_CERT_CONN). */
size_t proxy_v2_header(uint8_t *buf, size_t cap, const struct sockaddr *src,
		       const struct sockaddr *dst, const char *tls_version, const char *cn,
		       const char *identity, int resumed);
/* The header of a client without a verified certificate (a rollout mode, tunnel.h): a
 * plaintext one (tls_version NULL: no SSL TLV), or a TLS one that presented none or one that
 * would be refused (the SSL TLV with the version, no certificate flags, a verify result of 1,
 * and neither CN nor identity): nothing in it may pass for an authorized identity. */
size_t proxy_v2_header_unverified(uint8_t *buf, size_t cap, const struct sockaddr *src,
				  const struct sockaddr *dst, const char *tls_version);

#endif
