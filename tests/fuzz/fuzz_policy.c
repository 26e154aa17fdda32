/*
 * libFuzzer target: the allow-rule matchers and the pin parser (lib/policy.c).
 *
 * URI and DNS SANs come from the peer's certificate, so policy_uri_match() and
 * policy_dns_match() see attacker-chosen strings; pins come from configuration. The input
 * is "A\nB": A and B are tried as pattern and value both ways round, and as pins.
 *
 * Besides memory safety, it checks properties that follow from the documented rules:
 *   - URI: a pattern with no "*" path segment matches exactly the URIs equal to it, except
 *     that scheme://authority compares case-insensitively; a match never changes the number
 *     of path segments; any string with a non-empty scheme before "://" matches itself; no
 *     URI longer than 2048 bytes matches; what a "*" matched is 1..255 RFC 3986 path
 *     characters, not "." or "..", with no escape of '/', '\', '.', '%' or a control byte.
 *   - DNS: a pattern that is not "*.<rest>" matches exactly the names equal to it ignoring
 *     case and one trailing dot; "*.<rest>" stands for exactly one non-empty label.
 *   - email: the part after the last '@' compares ignoring case and must not be empty; the
 *     part before it exactly, or "*" for any non-empty one.
 *   - pins: any 32 bytes written as hex (either case, colons or not) or base64 parse back,
 *     and only the canonical forms parse: 64 hex digits, 32 pairs joined by single colons,
 *     or the base64 that encodes exactly the bytes parsed (repro/fuzz_policy/).
 *   - refusals: a peer whose names are A and B, refused by a name rule, a pin or the authz
 *     callback, gets a one-line message of printable ASCII (its names escaped).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant: on failure, say which one and abort so that libFuzzer keeps the input. */
#define check(cond) ((cond) ? (void)0 : fail(#cond, __LINE__))

__attribute__((noreturn)) static void fail(const char *what, int line)
{
	fprintf(stderr, "fuzz_policy.c:%d: invariant failed: %s\n", line, what);
	abort();
}

/* Length of "scheme://authority", as the URI rules define it; 0 if there is no scheme. */
static size_t ref_authority(const char *s)
{
	const char *sep = strstr(s, "://");
	const char *slash;

	if (sep == NULL || sep == s)
		return 0;
	slash = strchr(sep + 3, '/');
	return slash != NULL ? (size_t)(slash - s) : strlen(s);
}

static bool has_star_segment(const char *path)
{
	for (const char *p = path; (p = strchr(p, '/')) != NULL;) {
		p++;
		if (p[0] == '*' && (p[1] == '/' || p[1] == '\0'))
			return true;
	}
	return false;
}

static int ref_hex(int c)
{
	const char *digits = "0123456789abcdef", *at;

	if (c >= 'A' && c <= 'F')
		c += 'a' - 'A';
	at = c != 0 ? strchr(digits, c) : NULL;
	return at != NULL ? (int)(at - digits) : -1;
}

/* What "*" may stand for, written out independently of policy.c. */
static bool ref_star_ok(const char *seg, size_t len)
{
	static const char pchar[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
				    "-._~!$&'()*+,;=:@";

	if (len < 1 || len > 255 || (len == 1 && seg[0] == '.') ||
	    (len == 2 && seg[0] == '.' && seg[1] == '.'))
		return false;
	for (size_t i = 0; i < len; i++) {
		if (seg[i] == '%') {
			int hi = i + 2 < len ? ref_hex(seg[i + 1]) : -1;
			int lo = i + 2 < len ? ref_hex(seg[i + 2]) : -1;
			int c = hi * 16 + lo;

			if (hi < 0 || lo < 0 || c < 0x20 || c == 0x7f || c == '/' || c == '\\' ||
			    c == '.' || c == '%')
				return false;
			i += 2;
		} else if (seg[i] == '\0' || strchr(pchar, seg[i]) == NULL) {
			return false;
		}
	}
	return true;
}

/* After a match: every segment the pattern's "*" stood for is one "*" may stand for. */
static void check_star_segments(const char *p, const char *u)
{
	while (*p == '/' && *u == '/') {
		size_t plen = strcspn(++p, "/"), ulen = strcspn(++u, "/");

		if (plen == 1 && p[0] == '*')
			check(ref_star_ok(u, ulen));
		p += plen;
		u += ulen;
	}
}

static size_t count_char(const char *s, size_t len, char c)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++)
		n += s[i] == c;
	return n;
}

static void check_uri(const char *pattern, const char *uri)
{
	bool m = policy_uri_match(pattern, uri);
	size_t pa = ref_authority(pattern), ua = ref_authority(uri);

	if (!has_star_segment(pattern + pa)) {
		bool want = pa > 0 && pa == ua && strncasecmp(pattern, uri, pa) == 0 &&
			    strcmp(pattern + pa, uri + pa) == 0 && strlen(uri) <= 2048;
		check(m == want);
	}
	if (m) {
		check(pa > 0 && pa == ua && strlen(uri) <= 2048);
		check(count_char(pattern + pa, strlen(pattern + pa), '/') ==
		      count_char(uri + ua, strlen(uri + ua), '/'));
		check_star_segments(pattern + pa, uri + ua);
	}
	/* what policy.c exports agrees with the reference on the segment "*" would match */
	{
		size_t n = strcspn(uri, "/");

		check(policy_uri_segment_ok(uri, n) == ref_star_ok(uri, n));
	}
}

/* Length without one trailing dot. */
static size_t dns_len(const char *s)
{
	size_t n = strlen(s);

	return n > 0 && s[n - 1] == '.' ? n - 1 : n;
}

static void check_dns(const char *pattern, const char *name)
{
	bool m = policy_dns_match(pattern, name);
	size_t plen = dns_len(pattern), nlen = dns_len(name);
	bool wildcard = plen > 2 && pattern[0] == '*' && pattern[1] == '.';

	if (pattern[0] == '\0' || name[0] == '\0') {
		check(!m);
		return;
	}
	if (!wildcard) {
		check(m == (plen == nlen && strncasecmp(pattern, name, plen) == 0));
		return;
	}
	if (m) {
		const char *dot = memchr(name, '.', nlen);

		/* one whole label, not itself a wildcard, then the pattern's suffix */
		check(dot != NULL && dot != name && name[0] != '*');
		check(count_char(name, nlen, '.') == count_char(pattern, plen, '.'));
		check((size_t)(name + nlen - dot) == plen - 1);
	}
}

static void check_email(const char *pattern, const char *addr)
{
	bool m = policy_email_match(pattern, addr);
	const char *pat = strrchr(pattern, '@'), *at = strrchr(addr, '@');
	bool want;

	if (pat == NULL || at == NULL || at == addr || at[1] == '\0' || pat[1] == '\0' ||
	    strcasecmp(pat + 1, at + 1) != 0)
		want = false;
	else if (pat == pattern + 1 && pattern[0] == '*')
		want = true;
	else
		want = pat - pattern == at - addr &&
		       strncmp(pattern, addr, (size_t)(at - addr)) == 0;
	check(m == want);
}

/* A text that parses is the canonical form of what it parsed to. */
static void check_pin(const char *text)
{
	static const char lower[] = "0123456789abcdef";
	size_t len = strlen(text);
	unsigned char b64[45];
	char want[96];
	uint8_t out[32];

	if (policy_parse_pin(text, out) != 0)
		return;
	if (len == 64 || len == 95) {
		size_t step = len == 64 ? 2 : 3;

		for (size_t n = 0; n < 32; n++) {
			want[n * step] = lower[out[n] >> 4];
			want[n * step + 1] = lower[out[n] & 0xf];
			if (step == 3)
				want[n * step + 2] = ':';
		}
		want[len] = '\0';
		check(strcasecmp(want, text) == 0);
	} else {
		check(len == 44);
		check(EVP_EncodeBlock(b64, out, 32) == 44 && strcmp((char *)b64, text) == 0);
	}
}

static void check_pin_roundtrip(const uint8_t raw[32])
{
	static const char lower[] = "0123456789abcdef", upper[] = "0123456789ABCDEF";
	char hex[65], hexup[65], colons[96];
	unsigned char b64[45];
	uint8_t out[32];

	for (size_t i = 0; i < 32; i++) {
		hex[2 * i] = lower[raw[i] >> 4];
		hex[2 * i + 1] = lower[raw[i] & 0xf];
		hexup[2 * i] = upper[raw[i] >> 4];
		hexup[2 * i + 1] = upper[raw[i] & 0xf];
		colons[3 * i] = hexup[2 * i];
		colons[3 * i + 1] = hexup[2 * i + 1];
		colons[3 * i + 2] = ':';
	}
	hex[64] = hexup[64] = '\0';
	colons[95] = '\0';
	check(EVP_EncodeBlock(b64, raw, 32) == 44);

	check(policy_parse_pin(hex, out) == 0 && memcmp(out, raw, 32) == 0);
	check(policy_parse_pin(hexup, out) == 0 && memcmp(out, raw, 32) == 0);
	check(policy_parse_pin(colons, out) == 0 && memcmp(out, raw, 32) == 0);
	check(policy_parse_pin((const char *)b64, out) == 0 && memcmp(out, raw, 32) == 0);
	hex[63] = '\0'; /* 31.5 bytes */
	check(policy_parse_pin(hex, out) != 0);
}

static int refuse_all(const struct mtls_peer *peer, void *arg, char *why, size_t len)
{
	(void)peer;
	(void)arg;
	(void)why;
	(void)len;
	return 0;
}

/* The policies of check_refusal(): a name rule, a pin, an authz callback. */
static struct policy *refusing[3];

static void init_refusing(void)
{
	struct mtls_config *c[3] = {mtls_config_new(), mtls_config_new(), mtls_config_new()};
	struct error err;

	check(c[0] != NULL && c[1] != NULL && c[2] != NULL);
	check(mtls_config_allow_uri(c[0], "spiffe://fuzz.invalid/never") == 0);
	check(mtls_config_allow_spki_sha256(c[1], "ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v8=") ==
	      0);
	check(mtls_config_set_authz_cb(c[2], refuse_all, NULL) == 0);
	for (int i = 0; i < 3; i++) {
		error_clear(&err);
		refusing[i] = policy_new(c[i], &err);
		check(refusing[i] != NULL);
		mtls_config_free(c[i]);
	}
}

static void check_refusal(char *a, char *b)
{
	char *names[2] = {a, b}, serial[] = "01";
	struct mtls_peer peer = {.identity = a,
				 .cn = b,
				 .serial = serial,
				 .uris = {names, 2},
				 .dns = {names, 2},
				 .emails = {names, 2}};
	struct error err;

	for (int i = 0; i < 3; i++) {
		error_clear(&err);
		if (policy_check(refusing[i], &peer, "client", &err) == 0) {
			/* only a name rule can match, and only the one URI */
			check(i == 0 && peer.matched_rule != NULL);
		} else {
			check(err.msg[0] != '\0' && strlen(err.msg) < sizeof(err.msg));
			for (const char *m = err.msg; *m != '\0'; m++)
				check(*m >= 0x20 && *m < 0x7f);
		}
		free(peer.matched_rule);
		peer.matched_rule = NULL;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 1);
	char *a, *b, *nl;

	if (buf == NULL)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';
	a = buf;
	nl = strchr(buf, '\n');
	if (nl != NULL) {
		*nl = '\0';
		b = nl + 1;
	} else {
		b = buf + size; /* "" */
	}

	check_uri(a, b);
	check_uri(b, a);
	check_uri(a, a);
	check(policy_uri_match(a, a) == (ref_authority(a) > 0 && strlen(a) <= 2048));
	check_dns(a, b);
	check_dns(b, a);
	check_dns(a, a);
	check_email(a, b);
	check_email(b, a);
	check_email(a, a);

	check_pin(a);
	check_pin(b);
	if (size >= 32)
		check_pin_roundtrip(data);

	if (refusing[0] == NULL)
		init_refusing();
	check_refusal(a, b);

	free(buf);
	return 0;
}
