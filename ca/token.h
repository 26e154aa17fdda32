/*
 * One-time enrollment tokens: what `mtls ca token` prints and POST /v1/enroll takes.
 *
 *   mtls1.<secret>.<root sha256>.<url>.<crc32>
 *
 * Each part is unpadded base64url (RFC 4648 section 5): a 32-byte random secret, the SHA-256
 * of the root certificate's DER (so that the client can check the CA it talks to before
 * trusting it), the CA's API URL (https://host[:port]) and the CRC-32 (IEEE, big-endian) of
 * the text before it ("mtls1.<secret>.<root>.<url>"), which tells a token damaged in a copy
 * and paste from a wrong one. The CA keeps only the SHA-256 of the secret (token_hash_hex()),
 * with what the token grants (store_token_add()): a leaked inventory enrolls nobody.
 *
 * Nothing here reads files or needs a CA key, so that the CA service, the command and the
 * fuzz target (tests/fuzz/fuzz_token.c) call the same code.
 */
#ifndef MTLS_CA_TOKEN_H
#define MTLS_CA_TOKEN_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/x509.h>

#include "grant.h"
#include "store.h"

#define TOKEN_SECRET_LEN 32
#define TOKEN_TEXT_MAX	 512
#define TOKEN_URL_MAX	 256

struct token {
	unsigned char secret[TOKEN_SECRET_LEN];
	unsigned char root_sha256[32]; /* SHA-256 of the root certificate's DER */
	char url[TOKEN_URL_MAX + 1];   /* the CA's API URL: https://host[:port] (no path, query,
					* userinfo) */
};

/* A new token for root and url: a random secret (RAND_priv_bytes). 0, or -1 with a message
 * (url breaks token_check_url(), no randomness). */
int token_make(struct token *t, X509 *root, const char *url, char *err, size_t err_len);
/* "mtls1.<secret>.<root sha256>.<url>.<crc32>", parts unpadded base64url; out at least
 * TOKEN_TEXT_MAX+1 bytes. 0, or -1 (out too small, or t->url breaks the URL rule). The text
 * holds the secret: OPENSSL_cleanse() it after use. */
int token_encode(const struct token *t, char *out, size_t out_len);
/* Strict parse of untrusted text (surrounding ASCII whitespace trimmed, nothing else
 * tolerated): prefix, exactly 5 parts, exact lengths, canonical base64url (no padding, no
 * stray bits), the URL rule, the CRC. A text that decodes re-encodes to itself (trimmed).
 * Messages tell a truncated or mistyped token ("the token is damaged (checksum): copy it
 * again whole") from one of another format or version. 0, or -1 with a message (t wiped). */
int token_decode(const char *text, struct token *t, char *err, size_t err_len);
/* The hex SHA-256 of the secret (lower case): what the store keeps (never the secret). */
void token_hash_hex(const struct token *t, char hex[65]);
/* Does the token pin this root? (constant time: CRYPTO_memcmp) */
bool token_pins(const struct token *t, X509 *root);
/* OPENSSL_cleanse the whole token. */
void token_wipe(struct token *t);

/* The URL rule: "https://" (lower case), then a host (a DNS name of LDH labels, an IPv4
 * address, or an IPv6 address in brackets), then optionally ":port" (1-65535, no leading
 * zero); nothing else (no path, not even "/", no query, fragment or userinfo); at most
 * TOKEN_URL_MAX bytes. 0, or -1 with a message saying what to give. */
int token_check_url(const char *url, char *err, size_t err_len);

/* The names of a grant as store_token.names keeps them: one "DNS:x", "IP:a" or "URI:u" per
 * line, in the order added, without a final newline ("" for none). Allocated; NULL if out of
 * memory. */
char *token_names_text(const struct grant_names *names);
/* The grant a stored token gives (GRANT_TOKEN): its profile, names (token_names_text()
 * form) and common name, checked again with today's rules (grant_add_*, grant_check()).
 * 0, or -1 with a message; grant_free(g) in both cases. */
int token_grant(const struct store_token *t, struct grant *g, char *err, size_t err_len);

#endif /* MTLS_CA_TOKEN_H */
