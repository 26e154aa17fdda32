/*
 * One-time enrollment tokens: making, printing and strictly reading them (token.h).
 *
 * The text comes from whoever asks for a certificate: every byte is untrusted, read through
 * bounds checked here, and only one spelling of a token is accepted (a text that decodes
 * encodes back to itself), so that two texts never name one token.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "token.h"

#define PREFIX	   "mtls1."
#define PREFIX_LEN (sizeof(PREFIX) - 1)
/* base64url lengths, unpadded: 32 bytes, 4 bytes, and at most TOKEN_URL_MAX bytes */
#define B64_32	   43
#define B64_CRC	   6
#define B64_URLMAX ((TOKEN_URL_MAX / 3) * 4 + (TOKEN_URL_MAX % 3 != 0 ? TOKEN_URL_MAX % 3 + 1 : 0))

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Unpadded base64url of n bytes into out (4n/3 rounded up, plus the NUL); its length. */
static size_t b64_encode(const unsigned char *in, size_t n, char *out)
{
	size_t o = 0, i = 0;

	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

		out[o++] = b64url[v >> 18];
		out[o++] = b64url[(v >> 12) & 63];
		out[o++] = b64url[(v >> 6) & 63];
		out[o++] = b64url[v & 63];
	}
	if (n - i == 1) {
		out[o++] = b64url[in[i] >> 2];
		out[o++] = b64url[(in[i] & 3) << 4];
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)in[i] << 8 | in[i + 1];

		out[o++] = b64url[v >> 10];
		out[o++] = b64url[(v >> 4) & 63];
		out[o++] = b64url[(v & 15) << 2];
	}
	out[o] = '\0';
	return o;
}

static int b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/* Canonical unpadded base64url of n characters into at most cap bytes: no padding, no other
 * alphabet, no bits set beyond the last byte (which another text of the same bytes would
 * have clear). 0 with *len, or -1. */
static int b64_decode(const char *in, size_t n, unsigned char *out, size_t cap, size_t *len)
{
	size_t o = 0, i = 0;
	uint32_t v = 0;
	int bits = 0;

	if (n % 4 == 1 || (n / 4) * 3 + (n % 4 != 0 ? n % 4 - 1 : 0) > cap)
		return -1;
	for (; i < n; i++) {
		int x = b64_value(in[i]);

		if (x < 0)
			return -1;
		v = (v << 6 | (uint32_t)x) & 0xffffff;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(v >> bits);
		}
	}
	if ((v & ((1u << bits) - 1)) != 0) /* stray bits */
		return -1;
	*len = o;
	return 0;
}

/* CRC-32 (IEEE 802.3, as zlib's crc32()). */
static uint32_t crc32_of(const char *p, size_t n)
{
	uint32_t crc = 0xffffffffu;

	for (size_t i = 0; i < n; i++) {
		crc ^= (unsigned char)p[i];
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1)));
	}
	return ~crc;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_alnum(char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* A DNS name of LDH labels (1-63 characters, not starting or ending with a hyphen), at most
 * 253 characters, the last label not all digits; n characters of p. */
static bool valid_host(const char *p, size_t n)
{
	size_t label = 0;
	bool digits = true;

	if (n == 0 || n > 253)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '.') {
			if (label == 0 || p[i - 1] == '-')
				return false;
			label = 0;
			digits = true;
			continue;
		}
		if (!is_alnum(p[i]) && !(p[i] == '-' && label > 0))
			return false;
		if (!is_digit(p[i]))
			digits = false;
		if (++label > 63)
			return false;
	}
	return label > 0 && p[n - 1] != '-' && !digits;
}

static int bad_url(char *err, size_t err_len, const char *why, const char *url)
{
	char shown[80];
	size_t o = 0;

	/* a short, printable excerpt: the URL may be anything */
	for (const unsigned char *p = (const unsigned char *)url; *p != '\0' && o < 60; p++)
		shown[o++] = *p >= 0x20 && *p < 0x7f ? (char)*p : '?';
	shown[o] = '\0';
	snprintf(err, err_len, "%s ('%s%s'); give https://HOST[:PORT] with nothing after the port",
		 why, shown, url[o] != '\0' ? "..." : "");
	return -1;
}

int token_check_url(const char *url, char *err, size_t err_len)
{
	const char *p, *host;
	size_t n;

	if (strnlen(url, TOKEN_URL_MAX + 1) > TOKEN_URL_MAX)
		return bad_url(err, err_len, "the CA URL is longer than 256 bytes", url);
	if (strncmp(url, "https://", 8) != 0)
		return bad_url(err, err_len, "the CA URL must start with https://", url);
	host = url + 8;
	if (strpbrk(host, "@") != NULL)
		return bad_url(err, err_len, "the CA URL must not hold a user name", url);
	if (host[0] == '[') {
		char addr[INET6_ADDRSTRLEN];
		unsigned char buf[16];
		const char *close = strchr(host, ']');

		n = close != NULL ? (size_t)(close - host - 1) : 0;
		if (close == NULL || n == 0 || n >= sizeof(addr))
			return bad_url(err, err_len, "the CA URL has a malformed IPv6 address",
				       url);
		memcpy(addr, host + 1, n);
		addr[n] = '\0';
		if (inet_pton(AF_INET6, addr, buf) != 1)
			return bad_url(err, err_len, "the CA URL has a malformed IPv6 address",
				       url);
		p = close + 1;
	} else {
		char addr[16];
		unsigned char buf[4];

		n = strspn(host,
			   "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-");
		p = host + n;
		if (n > 0 && strspn(host, "0123456789.") == n) {
			/* all digits and dots: an IPv4 address, written the usual way */
			if (n >= sizeof(addr))
				return bad_url(err, err_len,
					       "the CA URL has a malformed IPv4 address", url);
			memcpy(addr, host, n);
			addr[n] = '\0';
			if (inet_pton(AF_INET, addr, buf) != 1)
				return bad_url(err, err_len,
					       "the CA URL has a malformed IPv4 address", url);
		} else if (!valid_host(host, n)) {
			return bad_url(err, err_len,
				       n == 0 ? "the CA URL has no host"
					      : "the CA URL's host is not a "
						"valid DNS name",
				       url);
		}
	}
	if (*p == ':') {
		size_t d = strspn(p + 1, "0123456789");
		long port = d > 0 && d <= 5 ? strtol(p + 1, NULL, 10) : 0;

		if (d == 0 || d > 5 || p[1] == '0' || port < 1 || port > 65535)
			return bad_url(err, err_len, "the CA URL's port must be 1 to 65535", url);
		p += 1 + d;
	}
	if (*p == '\0')
		return 0;
	if (*p == '/')
		return bad_url(err, err_len, "the CA URL must not have a path (not even '/')", url);
	if (*p == '?' || *p == '#')
		return bad_url(err, err_len, "the CA URL must not have a query or fragment", url);
	return bad_url(err, err_len, "the CA URL is not https://HOST[:PORT]", url);
}

static int root_digest(X509 *root, unsigned char out[32])
{
	unsigned char *der = NULL;
	unsigned int n = 0;
	int len = i2d_X509(root, &der);
	int ok = len > 0 && EVP_Digest(der, (size_t)len, out, &n, EVP_sha256(), NULL) == 1 &&
		 n == 32;

	OPENSSL_free(der);
	return ok ? 0 : -1;
}

int token_make(struct token *t, X509 *root, const char *url, char *err, size_t err_len)
{
	memset(t, 0, sizeof(*t));
	if (token_check_url(url, err, err_len) != 0)
		return -1;
	if (root == NULL || root_digest(root, t->root_sha256) != 0) {
		snprintf(err, err_len, "cannot encode the root certificate");
		goto err;
	}
	if (RAND_priv_bytes(t->secret, sizeof(t->secret)) != 1) {
		snprintf(err, err_len,
			 "no random bytes for the token's secret (OpenSSL's RNG "
			 "failed); try again");
		goto err;
	}
	memcpy(t->url, url, strlen(url) + 1);
	ERR_clear_error();
	return 0;
err:
	ERR_clear_error();
	token_wipe(t);
	return -1;
}

int token_encode(const struct token *t, char *out, size_t out_len)
{
	char text[TOKEN_TEXT_MAX + 1], why[256];
	unsigned char crc[4];
	size_t n = PREFIX_LEN, url_len = strnlen(t->url, sizeof(t->url));
	uint32_t c;

	if (url_len > TOKEN_URL_MAX || token_check_url(t->url, why, sizeof(why)) != 0)
		return -1;
	memcpy(text, PREFIX, PREFIX_LEN);
	n += b64_encode(t->secret, sizeof(t->secret), text + n);
	text[n++] = '.';
	n += b64_encode(t->root_sha256, sizeof(t->root_sha256), text + n);
	text[n++] = '.';
	n += b64_encode((const unsigned char *)t->url, url_len, text + n);
	c = crc32_of(text, n);
	crc[0] = (unsigned char)(c >> 24);
	crc[1] = (unsigned char)(c >> 16);
	crc[2] = (unsigned char)(c >> 8);
	crc[3] = (unsigned char)c;
	text[n++] = '.';
	n += b64_encode(crc, sizeof(crc), text + n);
	if (n + 1 > out_len) {
		OPENSSL_cleanse(text, sizeof(text));
		return -1;
	}
	memcpy(out, text, n + 1);
	OPENSSL_cleanse(text, sizeof(text));
	return 0;
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

#define AGAIN "copy it again whole"

/* Why a text that is not our prefix is not a token. */
static int bad_prefix(const char *p, size_t n, char *err, size_t err_len)
{
	size_t d = 0;

	if (n < PREFIX_LEN && memcmp(p, PREFIX, n) == 0) {
		snprintf(err, err_len, "the token is damaged (cut short): " AGAIN);
		return -1;
	}
	if (n > 4 && memcmp(p, "mtls", 4) == 0) {
		while (4 + d < n && d < 9 && is_digit(p[4 + d]))
			d++;
		if (d > 0 && 4 + d < n && p[4 + d] == '.') {
			snprintf(err, err_len,
				 "this is an mtls%.*s token, of another version than this mtls "
				 "reads "
				 "(mtls1): use the mtls that goes with the CA, or ask for a new "
				 "token",
				 (int)d, p + 4);
			return -1;
		}
	}
	snprintf(err, err_len,
		 "not an mtls enrollment token (one starts with 'mtls1.'): give the token that "
		 "'mtls ca token' printed");
	return -1;
}

/* A character that cannot be in a token, at offset i. */
static int bad_char(const char *p, size_t i, char *err, size_t err_len)
{
	unsigned char c = (unsigned char)p[i];

	if (is_space((char)c))
		snprintf(err, err_len,
			 "the token is damaged (whitespace at character %zu: a line break or "
			 "space split it): " AGAIN " as one piece",
			 i + 1);
	else if (c == '=')
		snprintf(err, err_len,
			 "the token is damaged (base64 padding '=' at character %zu, which a token "
			 "never has): " AGAIN,
			 i + 1);
	else if (c == '+' || c == '/')
		snprintf(err, err_len,
			 "the token is damaged ('%c' at character %zu: standard base64, which a "
			 "token never uses): " AGAIN,
			 c, i + 1);
	else
		snprintf(err, err_len,
			 "the token is damaged (character %zu cannot be in a token): " AGAIN,
			 i + 1);
	return -1;
}

int token_decode(const char *text, struct token *t, char *err, size_t err_len)
{
	struct token got;
	const char *p = text, *part[5];
	size_t n, len[5], nparts, got_len;
	unsigned char crc[4];
	uint32_t want;
	char why[256];

	memset(&got, 0, sizeof(got));
	memset(t, 0, sizeof(*t));
	if (text == NULL)
		text = "";
	p = text;
	while (is_space(*p))
		p++;
	n = strlen(p);
	while (n > 0 && is_space(p[n - 1]))
		n--;
	if (n == 0) {
		snprintf(err, err_len,
			 "no token given: paste the whole token that 'mtls ca token' printed");
		return -1;
	}
	if (n < PREFIX_LEN || memcmp(p, PREFIX, PREFIX_LEN) != 0)
		return bad_prefix(p, n, err, err_len);
	for (size_t i = PREFIX_LEN; i < n; i++)
		if (b64_value(p[i]) < 0 && p[i] != '.')
			return bad_char(p, i, err, err_len);
	if (n > TOKEN_TEXT_MAX) {
		snprintf(err, err_len,
			 "the token is damaged (%zu characters, more than a token's %d: something "
			 "was added to it): " AGAIN,
			 n, TOKEN_TEXT_MAX);
		return -1;
	}
	/* the parts: "mtls1", then secret, root, url, crc */
	part[0] = p;
	len[0] = PREFIX_LEN - 1;
	part[1] = p + PREFIX_LEN;
	nparts = 2; /* "mtls1" and the one being read */
	for (size_t i = PREFIX_LEN; i < n; i++) {
		if (p[i] != '.')
			continue;
		if (nparts < 5) {
			len[nparts - 1] = (size_t)(p + i - part[nparts - 1]);
			part[nparts] = p + i + 1;
		}
		nparts++;
	}
	if (nparts != 5) {
		snprintf(err, err_len, "the token is damaged (%zu parts, not 5%s): " AGAIN, nparts,
			 nparts < 5 ? ": cut short?" : "");
		return -1;
	}
	len[4] = (size_t)(p + n - part[4]);
	if (len[1] != B64_32 || len[2] != B64_32 || len[3] == 0 || len[3] > B64_URLMAX ||
	    len[4] != B64_CRC) {
		snprintf(err, err_len,
			 "the token is damaged (a part has the wrong length): " AGAIN);
		return -1;
	}
	/* the checksum covers everything before the dot that precedes it */
	if (b64_decode(part[4], len[4], crc, sizeof(crc), &got_len) != 0 || got_len != 4)
		goto damaged;
	want = (uint32_t)crc[0] << 24 | (uint32_t)crc[1] << 16 | (uint32_t)crc[2] << 8 | crc[3];
	if (crc32_of(p, (size_t)(part[4] - 1 - p)) != want)
		goto damaged;
	/* The checksum holds: whatever is wrong now was written so, not damaged in a copy. */
	if (b64_decode(part[1], len[1], got.secret, sizeof(got.secret), &got_len) != 0 ||
	    got_len != sizeof(got.secret) ||
	    b64_decode(part[2], len[2], got.root_sha256, sizeof(got.root_sha256), &got_len) != 0 ||
	    got_len != sizeof(got.root_sha256) ||
	    b64_decode(part[3], len[3], (unsigned char *)got.url, TOKEN_URL_MAX, &got_len) != 0) {
		snprintf(err, err_len,
			 "not a token 'mtls ca token' made (its base64url is not in the one form "
			 "mtls writes): ask the CA's operator for a new token");
		goto err;
	}
	got.url[got_len] = '\0';
	if (strlen(got.url) != got_len || token_check_url(got.url, why, sizeof(why)) != 0) {
		snprintf(err, err_len, "the token's CA URL is unusable (%s); ask for a new token",
			 strlen(got.url) != got_len ? "a NUL byte in it" : why);
		goto err;
	}
	*t = got;
	OPENSSL_cleanse(&got, sizeof(got));
	return 0;
damaged:
	snprintf(err, err_len, "the token is damaged (checksum): " AGAIN);
err:
	OPENSSL_cleanse(&got, sizeof(got));
	return -1;
}

void token_hash_hex(const struct token *t, char hex[65])
{
	unsigned char d[32];
	unsigned int n = 0;

	if (EVP_Digest(t->secret, sizeof(t->secret), d, &n, EVP_sha256(), NULL) != 1 || n != 32) {
		/* never a hash that some other secret could share: no match for anything */
		memset(hex, 'x', 64);
		hex[64] = '\0';
		ERR_clear_error();
		return;
	}
	for (unsigned i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", d[i]);
	OPENSSL_cleanse(d, sizeof(d));
}

bool token_pins(const struct token *t, X509 *root)
{
	unsigned char d[32];

	if (root == NULL || root_digest(root, d) != 0) {
		ERR_clear_error();
		return false;
	}
	return CRYPTO_memcmp(d, t->root_sha256, sizeof(d)) == 0;
}

void token_wipe(struct token *t)
{
	OPENSSL_cleanse(t, sizeof(*t));
}

char *token_names_text(const struct grant_names *names)
{
	size_t cap = 1, used = 0;
	char *out;
	int count = names->names != NULL ? sk_GENERAL_NAME_num(names->names) : 0;

	for (int i = 0; i < count; i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(names->names, i);
		const ASN1_STRING *s = g->type == GEN_IPADD ? g->d.iPAddress : g->d.ia5;

		cap += 4 + (size_t)ASN1_STRING_length(s) + INET6_ADDRSTRLEN + 1;
	}
	out = malloc(cap);
	if (out == NULL)
		return NULL;
	out[0] = '\0';
	for (int i = 0; i < count; i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(names->names, i);
		const char *sep = used > 0 ? "\n" : "";
		char ip[INET6_ADDRSTRLEN];

		if (g->type == GEN_IPADD) {
			const ASN1_OCTET_STRING *a = g->d.iPAddress;
			int len = ASN1_STRING_length(a);

			if ((len != 4 && len != 16) ||
			    inet_ntop(len == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(a), ip,
				      sizeof(ip)) == NULL)
				goto err;
			used += (size_t)snprintf(out + used, cap - used, "%sIP:%s", sep, ip);
		} else if (g->type == GEN_DNS || g->type == GEN_URI) {
			const ASN1_IA5STRING *s = g->d.ia5;

			used += (size_t)snprintf(out + used, cap - used, "%s%s:%.*s", sep,
						 g->type == GEN_DNS ? "DNS" : "URI",
						 ASN1_STRING_length(s),
						 (const char *)ASN1_STRING_get0_data(s));
		} else {
			goto err;
		}
	}
	return out;
err:
	free(out);
	return NULL;
}

int token_grant(const struct store_token *t, struct grant *g, char *err, size_t err_len)
{
	const char *p = t->names;
	char why[512];
	int rc = -1;

	memset(g, 0, sizeof(*g));
	if (grant_init(g, t->profile, GRANT_TOKEN, why, sizeof(why)) != 0)
		goto bad;
	while (*p != '\0') {
		size_t n = strcspn(p, "\n");
		char *line = strndup(p, n);
		int added;

		if (line == NULL) {
			snprintf(err, err_len, "out of memory");
			return -1;
		}
		if (strncmp(line, "DNS:", 4) == 0)
			added = grant_add_dns(&g->names, line + 4, why, sizeof(why));
		else if (strncmp(line, "IP:", 3) == 0)
			added = grant_add_ip(&g->names, line + 3, why, sizeof(why));
		else if (strncmp(line, "URI:", 4) == 0)
			added = grant_add_uri(&g->names, line + 4, why, sizeof(why));
		else
			added = (snprintf(why, sizeof(why), "a name of no known type"), -1);
		free(line);
		if (added != 0)
			goto bad;
		p += n;
		if (*p == '\n' && *++p == '\0') {
			snprintf(why, sizeof(why), "an empty name");
			goto bad;
		}
	}
	if (t->cn != NULL && t->cn[0] != '\0' && grant_set_cn(g, t->cn, why, sizeof(why)) != 0)
		goto bad;
	if (grant_check(g, why, sizeof(why)) != 0)
		goto bad;
	return 0;
bad:
	snprintf(err, err_len,
		 "token %.16s grants what the CA no longer issues (%s); make a new "
		 "token",
		 t->hash != NULL ? t->hash : "?", why);
	return rc;
}
