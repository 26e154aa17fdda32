/*
 * Authorization: allow rules by URI SAN, DNS SAN, email SAN, CN and SHA-256 pins; and the
 * same patterns against an identity string (mtls_identity_match()).
 *
 * Name rules are alternatives; pins are alternatives; when both kinds exist the peer must
 * satisfy both (as Envoy does with SAN matchers and SPKI/hash lists). The authz callback
 * runs last. Matching works on strings taken from certificates, which are untrusted: every
 * comparison is bounded by the strings' own lengths (see tests/fuzz/fuzz_policy.c), a URI
 * is at most POLICY_URI_MAX bytes and what "*" stands for is one short, plain segment: no
 * dot segment or escaped '/' that a server decoding the path would read differently.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "internal.h"

/* Everything is copied out of the config: a policy owns its strings. */
struct policy {
	struct strlist uri;
	struct strlist dns;
	struct strlist cn;
	struct strlist email;
	struct strlist spki_text; /* the pins as configured, for matched_rule */
	struct strlist cert_text;
	uint8_t (*spki)[32];
	size_t nspki;
	uint8_t (*cert)[32];
	size_t ncert;
	bool allow_any;
	mtls_authz_cb authz_cb;
	void *authz_arg;
};

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static bool is_base64(int c)
{
	return isalnum(c) || c == '+' || c == '/';
}

/* A SHA-256 as 64 hex digits, or 32 pairs with single colons between them, or canonical
 * base64 (43 characters and one '='). Anything else is a typo that would configure a pin
 * that can never match, so it is refused. */
int policy_parse_pin(const char *text, uint8_t out[32])
{
	size_t len = strlen(text);
	uint8_t buf[48];

	if (len == 64 || len == 95) {
		size_t step = len == 64 ? 2 : 3;

		for (size_t i = 0, n = 0; n < 32; i += step, n++) {
			int hi = hexval(text[i]), lo = hexval(text[i + 1]);

			if (hi < 0 || lo < 0 || (step == 3 && n < 31 && text[i + 2] != ':'))
				return -1;
			out[n] = (uint8_t)(hi << 4 | lo);
		}
		return 0;
	}
	if (len != 44 || text[43] != '=')
		return -1;
	for (size_t i = 0; i < 43; i++)
		if (!is_base64((unsigned char)text[i]))
			return -1;
	/* 32 bytes leave 2 spare bits in the last character: canonical form has them zero */
	if (strchr("AEIMQUYcgkosw048", text[42]) == NULL)
		return -1;
	if (EVP_DecodeBlock(buf, (const unsigned char *)text, (int)len) != 33)
		return -1;
	memcpy(out, buf, 32);
	return 0;
}

static int compile_pins(const struct strlist *l, uint8_t (**out)[32], size_t *n)
{
	if (l->n == 0)
		return 0;
	*out = calloc(l->n, 32);
	if (*out == NULL)
		return -1;
	for (size_t i = 0; i < l->n; i++)
		if (policy_parse_pin(l->v[i], (*out)[i]) != 0)
			return -1;
	*n = l->n;
	return 0;
}

static void list_free(struct strlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
}

struct policy *policy_new(const struct mtls_config *config, struct error *err)
{
	struct policy *p = calloc(1, sizeof(*p));

	if (p == NULL || config_strlist_copy(&p->uri, &config->allow_uri) != 0 ||
	    config_strlist_copy(&p->dns, &config->allow_dns) != 0 ||
	    config_strlist_copy(&p->cn, &config->allow_cn) != 0 ||
	    config_strlist_copy(&p->email, &config->allow_email) != 0 ||
	    config_strlist_copy(&p->spki_text, &config->allow_spki) != 0 ||
	    config_strlist_copy(&p->cert_text, &config->allow_cert) != 0) {
		error_set(err, MTLS_REASON_INTERNAL, "out of memory");
		policy_free(p);
		return NULL;
	}
	p->allow_any = config->allow_any;
	p->authz_cb = config->authz_cb;
	p->authz_arg = config->authz_arg;
	if (compile_pins(&p->spki_text, &p->spki, &p->nspki) != 0 ||
	    compile_pins(&p->cert_text, &p->cert, &p->ncert) != 0) {
		error_set(err, MTLS_REASON_CONFIG, "invalid pin in allow rules");
		policy_free(p);
		return NULL;
	}
	return p;
}

void policy_free(struct policy *p)
{
	if (p == NULL)
		return;
	list_free(&p->uri);
	list_free(&p->dns);
	list_free(&p->cn);
	list_free(&p->email);
	list_free(&p->spki_text);
	list_free(&p->cert_text);
	free(p->spki);
	free(p->cert);
	free(p);
}

static bool has_name_rules(const struct policy *p)
{
	return p->uri.n + p->dns.n + p->cn.n + p->email.n > 0;
}

bool policy_has_rules(const struct policy *p)
{
	return has_name_rules(p) || p->nspki + p->ncert > 0 || p->authz_cb != NULL;
}

/* Length of the "scheme://authority" prefix, or 0 if there is none. */
static size_t authority_end(const char *s)
{
	const char *sep = strstr(s, "://");
	const char *slash;

	if (sep == NULL || sep == s)
		return 0;
	slash = strchr(sep + 3, '/');
	return slash != NULL ? (size_t)(slash - s) : strlen(s);
}

bool policy_uri_segment_ok(const char *seg, size_t len)
{
	if (len == 0 || len > POLICY_SEGMENT_MAX || (len == 1 && seg[0] == '.') ||
	    (len == 2 && seg[0] == '.' && seg[1] == '.'))
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)seg[i];
		int hi, lo, decoded;

		if (c == '%') {
			if (len - i < 3 || (hi = hexval(seg[i + 1])) < 0 ||
			    (lo = hexval(seg[i + 2])) < 0)
				return false;
			decoded = hi << 4 | lo;
			if (decoded < 0x20 || decoded == 0x7f || decoded == '/' ||
			    decoded == '\\' || decoded == '.' || decoded == '%')
				return false;
			i += 2;
		} else if (c == '\0' || c > 0x7e ||
			   !(isalnum(c) || strchr("-._~!$&'()*+,;=:@", c) != NULL)) {
			/* RFC 3986 pchar: unreserved, sub-delims, ':' and '@' */
			return false;
		}
	}
	return true;
}

bool policy_uri_match(const char *pattern, const char *uri)
{
	size_t pa = authority_end(pattern);
	size_t ua = authority_end(uri);
	const char *p, *u;

	if (strnlen(uri, POLICY_URI_MAX + 1) > POLICY_URI_MAX)
		return false;
	if (pa == 0 || pa != ua || strncasecmp(pattern, uri, pa) != 0)
		return false;
	p = pattern + pa;
	u = uri + pa;
	/* Compare the path segment by segment; "*" is one whole, non-empty segment. */
	while (*p != '\0' && *u != '\0') {
		size_t plen, ulen;

		if (*p != '/' || *u != '/')
			return false;
		p++;
		u++;
		plen = strcspn(p, "/");
		ulen = strcspn(u, "/");
		if (plen == 1 && p[0] == '*') {
			/* one whole, harmless segment of bounded length ('?' and '#' are no
			 * path characters, so a query or fragment never matches either) */
			if (!policy_uri_segment_ok(u, ulen))
				return false;
		} else if (plen != ulen || memcmp(p, u, plen) != 0) {
			return false;
		}
		p += plen;
		u += ulen;
	}
	return *p == '\0' && *u == '\0';
}

bool policy_dns_match(const char *pattern, const char *name)
{
	size_t plen = strlen(pattern);
	size_t nlen = strlen(name);

	if (plen == 0 || nlen == 0)
		return false;
	/* a trailing dot is the same name */
	if (pattern[plen - 1] == '.')
		plen--;
	if (nlen > 0 && name[nlen - 1] == '.')
		nlen--;
	if (plen > 2 && pattern[0] == '*' && pattern[1] == '.') {
		const char *dot = memchr(name, '.', nlen);
		size_t suffix = plen - 1; /* ".example.org" */

		if (dot == NULL || dot == name || name[0] == '*')
			return false;
		return (size_t)(name + nlen - dot) == suffix &&
		       strncasecmp(dot, pattern + 1, suffix) == 0;
	}
	return plen == nlen && strncasecmp(pattern, name, plen) == 0;
}

bool policy_email_match(const char *pattern, const char *address)
{
	const char *pat = strrchr(pattern, '@');
	const char *at = strrchr(address, '@');

	/* the domain follows the last '@' (a quoted local part may hold one) */
	if (pat == NULL || at == NULL || at == address || at[1] == '\0' || pat[1] == '\0' ||
	    strcasecmp(pat + 1, at + 1) != 0)
		return false;
	if (pat - pattern == 1 && pattern[0] == '*')
		return true;
	return pat - pattern == at - address &&
	       memcmp(pattern, address, (size_t)(at - address)) == 0;
}

static int set_rule(struct mtls_peer *peer, const char *kind, const char *value)
{
	size_t len = strlen(kind) + strlen(value) + 2;

	free(peer->matched_rule);
	peer->matched_rule = malloc(len);
	if (peer->matched_rule == NULL)
		return -1;
	snprintf(peer->matched_rule, len, "%s:%s", kind, value);
	return 0;
}

static const char *match_names(const struct policy *p, const struct mtls_peer *peer,
			       const char **kind)
{
	for (size_t i = 0; i < p->uri.n; i++)
		for (size_t j = 0; j < peer->uris.n; j++)
			if (policy_uri_match(p->uri.v[i], peer->uris.v[j])) {
				*kind = "uri";
				return p->uri.v[i];
			}
	for (size_t i = 0; i < p->dns.n; i++)
		for (size_t j = 0; j < peer->dns.n; j++)
			if (policy_dns_match(p->dns.v[i], peer->dns.v[j])) {
				*kind = "dns";
				return p->dns.v[i];
			}
	for (size_t i = 0; i < p->email.n; i++)
		for (size_t j = 0; j < peer->emails.n; j++)
			if (policy_email_match(p->email.v[i], peer->emails.v[j])) {
				*kind = "email";
				return p->email.v[i];
			}
	for (size_t i = 0; i < p->cn.n && peer->cn != NULL; i++)
		if (strcmp(p->cn.v[i], peer->cn) == 0) {
			*kind = "cn";
			return p->cn.v[i];
		}
	return NULL;
}

static const char *match_pins(const struct policy *p, const struct mtls_peer *peer,
			      const char **kind)
{
	for (size_t i = 0; i < p->nspki; i++)
		if (CRYPTO_memcmp(p->spki[i], peer->spki_hash, 32) == 0) {
			*kind = "spki";
			return p->spki_text.v[i];
		}
	for (size_t i = 0; i < p->ncert; i++)
		if (CRYPTO_memcmp(p->cert[i], peer->cert_hash, 32) == 0) {
			*kind = "cert";
			return p->cert_text.v[i];
		}
	return NULL;
}

/* A name from a certificate as a message shows it: escaped, so that no byte of it can
 * break the one-line message (identity.c refuses such names, but a message must not rely
 * on it). */
static const char *shown(const char *name, char *buf, size_t len)
{
	identity_shown((const unsigned char *)name, strlen(name), buf, len);
	return buf;
}

/* "URI:a, DNS:b, email:c, CN=d" for refusal messages. */
static void describe_names(const struct mtls_peer *peer, char *buf, size_t len)
{
	size_t used = 0;
	char name[200];
	const struct {
		const char *label;
		const struct strlist *l;
	} lists[] = {{"URI", &peer->uris}, {"DNS", &peer->dns}, {"email", &peer->emails}};

	buf[0] = '\0';
	for (size_t k = 0; k < sizeof(lists) / sizeof(lists[0]); k++)
		for (size_t i = 0; i < lists[k].l->n && used < len; i++)
			used += (size_t)snprintf(buf + used, len - used, "%s%s:%s",
						 used > 0 ? ", " : "", lists[k].label,
						 shown(lists[k].l->v[i], name, sizeof(name)));
	if (peer->cn != NULL && used < len)
		used += (size_t)snprintf(buf + used, len - used, "%sCN=%s", used > 0 ? ", " : "",
					 shown(peer->cn, name, sizeof(name)));
	if (used == 0)
		snprintf(buf, len, "no names");
}

int policy_check(const struct policy *p, struct mtls_peer *peer, const char *role,
		 struct error *err)
{
	const char *kind = NULL;
	const char *rule = NULL;
	char names[256], identity[200];

	if (has_name_rules(p)) {
		rule = match_names(p, peer, &kind);
		if (rule == NULL) {
			describe_names(peer, names, sizeof(names));
			return error_set(
				err, MTLS_REASON_IDENTITY_NOT_ALLOWED,
				"%s certificate refused: identity %s (%s, serial %s) matches "
				"no allow rule; add an allow rule for it or use an allowed "
				"certificate",
				role, shown(peer->identity, identity, sizeof(identity)), names,
				peer->serial);
		}
		if (set_rule(peer, kind, rule) != 0)
			return error_set(err, MTLS_REASON_INTERNAL, "out of memory");
	}
	if (p->nspki + p->ncert > 0) {
		rule = match_pins(p, peer, &kind);
		if (rule == NULL)
			return error_set(err, MTLS_REASON_PIN_MISMATCH,
					 "%s certificate refused: neither its key (SPKI sha256 %s) "
					 "nor the certificate (sha256 %s, identity %s) matches a "
					 "configured pin; update the pin or use the pinned key",
					 role, peer->spki_sha256, peer->cert_sha256,
					 shown(peer->identity, identity, sizeof(identity)));
		if (peer->matched_rule == NULL && set_rule(peer, kind, rule) != 0)
			return error_set(err, MTLS_REASON_INTERNAL, "out of memory");
	}
	if (p->authz_cb != NULL) {
		char why[256] = "";

		if (p->authz_cb(peer, p->authz_arg, why, sizeof(why)) != 1)
			return error_set(err, MTLS_REASON_IDENTITY_NOT_ALLOWED,
					 "%s certificate refused by the authorization callback: "
					 "identity %s%s%s",
					 role, shown(peer->identity, identity, sizeof(identity)),
					 why[0] != '\0' ? ": " : "", why);
		if (peer->matched_rule == NULL && set_rule(peer, "callback", "allowed") != 0)
			return error_set(err, MTLS_REASON_INTERNAL, "out of memory");
	}
	if (peer->matched_rule == NULL && p->allow_any && set_rule(peer, "any", "ca") != 0)
		return error_set(err, MTLS_REASON_INTERNAL, "out of memory");
	return 0;
}

/* A host name, with an optional trailing dot (the same name); with wildcard, "*." in front
 * allowed. */
static bool host_name(const char *s, bool wildcard)
{
	size_t n = strnlen(s, 256);

	if (n > 0 && s[n - 1] == '.')
		n--;
	if (!wildcard && s[0] == '*')
		return false;
	return strict_dns_name_ok((const unsigned char *)s, n);
}

int mtls_identity_match(const char *pattern, const char *identity)
{
	if (pattern == NULL || identity == NULL || pattern[0] == '\0' || identity[0] == '\0')
		return 0;
	if (strstr(pattern, "://") != NULL)
		return policy_uri_match(pattern, identity);
	/* policy_dns_match() compares DNS SANs, which the strict profile checked: an identity
	 * taken from a CN ("evil one.example.org") must be a host name as well */
	if (host_name(pattern, true))
		return host_name(identity, false) && policy_dns_match(pattern, identity);
	return strcmp(pattern, identity) == 0;
}
