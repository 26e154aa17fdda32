/*
 * Issuance policy: name syntax, the profiles' needs, and a CSR compared with a grant.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "grant.h"

void grant_names_init(struct grant_names *n)
{
	memset(n, 0, sizeof(*n));
	n->names = GENERAL_NAMES_new();
	n->text = calloc(1, 1);
	if (n->names == NULL || n->text == NULL)
		grant_names_free(n);
}

void grant_names_free(struct grant_names *n)
{
	GENERAL_NAMES_free(n->names);
	n->names = NULL;
	free(n->text);
	n->text = NULL;
}

/* Append ", LABEL:TEXT" (or "LABEL:TEXT" first) to n->text. 0, or -1 out of memory. */
static int append_text(struct grant_names *n, const char *label, const char *text)
{
	size_t used = strlen(n->text), add = strlen(label) + strlen(text) + 3;
	char *grown = realloc(n->text, used + add + 1);

	if (grown == NULL)
		return -1;
	n->text = grown;
	snprintf(n->text + used, add + 1, "%s%s:%s", used > 0 ? ", " : "", label, text);
	return 0;
}

/* Untrusted bytes for a message: printable ASCII kept, anything else as \xNN, at most
 * about 200 characters. */
static void printable(char *out, size_t out_len, const unsigned char *s, size_t len)
{
	size_t o = 0;

	for (size_t i = 0; i < len && o + 5 < out_len && o < 200; i++) {
		if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\\')
			out[o++] = (char)s[i];
		else
			o += (size_t)snprintf(out + o, out_len - o, "\\x%02x", s[i]);
	}
	if (out_len > 0)
		out[o < out_len ? o : out_len - 1] = '\0';
}

static int push(struct grant_names *n, int type, ASN1_STRING *value, const char *label,
		const char *text, char *err, size_t err_len)
{
	GENERAL_NAME *g = GENERAL_NAME_new();

	if (g == NULL || n->names == NULL || n->text == NULL) {
		ASN1_STRING_free(value);
		GENERAL_NAME_free(g);
		snprintf(err, err_len, "out of memory");
		return -1;
	}
	GENERAL_NAME_set0_value(g, type, value);
	if (append_text(n, label, text) != 0 || !sk_GENERAL_NAME_push(n->names, g)) {
		GENERAL_NAME_free(g);
		snprintf(err, err_len, "out of memory");
		return -1;
	}
	if (n->first[0] == '\0')
		snprintf(n->first, sizeof(n->first), "%s", text);
	return 0;
}

static ASN1_IA5STRING *ia5(const char *s)
{
	ASN1_IA5STRING *v = ASN1_IA5STRING_new();

	if (v != NULL && ASN1_STRING_set(v, s, (int)strlen(s)) != 1) {
		ASN1_IA5STRING_free(v);
		return NULL;
	}
	return v;
}

/* RFC 1123 host name: labels of letters, digits and hyphens, 1-63 long, not starting or
 * ending with a hyphen; total at most 253; the last label not all digits (RFC 1123 2.1:
 * "1.2.3.4" is an address, not a name); optionally "*." for the leftmost label, then at
 * least two labels ("*.com" would match every name under a top-level domain). */
static bool valid_dns(const char *name)
{
	size_t len = strlen(name), label = 0;
	const char *p = name, *last;

	if (len == 0 || len > 253)
		return false;
	if (strncmp(p, "*.", 2) == 0) {
		p += 2;
		if (strchr(p, '.') == NULL)
			return false;
	}
	if (*p == '\0')
		return false;
	last = strrchr(p, '.') != NULL ? strrchr(p, '.') + 1 : p;
	if (*last != '\0' && strspn(last, "0123456789") == strlen(last))
		return false;
	for (; *p != '\0'; p++) {
		if (*p == '.') {
			if (label == 0 || p[-1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (!(isalnum((unsigned char)*p) || *p == '-') || (*p == '-' && label == 0))
			return false;
		if (++label > 63)
			return false;
	}
	return label > 0 && p[-1] != '-';
}

int grant_add_dns(struct grant_names *n, const char *name, char *err, size_t err_len)
{
	char lower[256], shown[256];
	ASN1_IA5STRING *v;

	if (!valid_dns(name)) {
		printable(shown, sizeof(shown), (const unsigned char *)name, strlen(name));
		snprintf(err, err_len,
			 "invalid DNS name '%s': use labels of letters, digits and hyphens (1-63 "
			 "characters, not starting or ending with a hyphen, the last not all "
			 "digits) "
			 "joined by dots, at most 253 characters; a wildcard only as a whole "
			 "leftmost "
			 "label ('*.') above two more labels; for an IP address use --ip",
			 shown);
		return -1;
	}
	snprintf(lower, sizeof(lower), "%s", name);
	for (char *p = lower; *p != '\0'; p++)
		*p = (char)tolower((unsigned char)*p);
	v = ia5(lower);
	if (v == NULL) {
		snprintf(err, err_len, "out of memory");
		return -1;
	}
	n->ndns++;
	return push(n, GEN_DNS, v, "DNS", lower, err, err_len);
}

int grant_add_ip(struct grant_names *n, const char *ip, char *err, size_t err_len)
{
	char shown[256];
	unsigned char buf[16];
	int len = 0;
	ASN1_OCTET_STRING *v;

	if (inet_pton(AF_INET, ip, buf) == 1)
		len = 4;
	else if (inet_pton(AF_INET6, ip, buf) == 1)
		len = 16;
	if (len == 0) {
		printable(shown, sizeof(shown), (const unsigned char *)ip, strlen(ip));
		snprintf(err, err_len, "invalid IP address '%s': give an IPv4 or IPv6 address",
			 shown);
		return -1;
	}
	v = ASN1_OCTET_STRING_new();
	if (v == NULL || ASN1_OCTET_STRING_set(v, buf, len) != 1) {
		ASN1_OCTET_STRING_free(v);
		snprintf(err, err_len, "out of memory");
		return -1;
	}
	n->nip++;
	return push(n, GEN_IPADD, v, "IP", ip, err, err_len);
}

static bool is_hex(char c)
{
	return isxdigit((unsigned char)c) != 0;
}

static int hex_value(const char *p)
{
	char h[3] = {p[0], p[1], '\0'};

	return (int)strtol(h, NULL, 16);
}

/* Is the path segment [p, end) "." or ".." once its percent-encoding is decoded? */
static bool dot_segment(const char *p, const char *end)
{
	int dots = 0;

	while (p < end) {
		if (*p == '.')
			p++;
		else if (*p == '%' && end - p >= 3 && p[1] == '2' && (p[2] == 'e' || p[2] == 'E'))
			p += 3;
		else
			return false;
		dots++;
	}
	return dots == 1 || dots == 2;
}

/* The SPIFFE ID rules (github.com/spiffe/spiffe, standards/SPIFFE-ID.md): the scheme
 * "spiffe", a trust domain of [a-z0-9._-] (at most 255 bytes), then path segments of
 * [a-zA-Z0-9._-] that are neither "." nor ".."; no empty segment, trailing '/', query,
 * fragment, port, user info or percent-encoding. */
static bool valid_spiffe(const char *uri, const char **why)
{
	const char *td = uri + strlen("spiffe://"), *p;
	size_t tdlen = strcspn(td, "/");

	if (strncmp(uri, "spiffe://", 9) != 0) {
		*why = "the scheme of a SPIFFE ID is lower-case spiffe://";
		return false;
	}
	if (strpbrk(uri, "?#") != NULL) {
		*why = "a SPIFFE ID has no query ('?') or fragment ('#')";
		return false;
	}
	if (strchr(uri, '%') != NULL) {
		*why = "a SPIFFE ID has no percent-encoding";
		return false;
	}
	if (tdlen == 0) {
		*why = "the trust domain of a SPIFFE ID is empty";
		return false;
	}
	if (tdlen > 255) {
		*why = "the trust domain of a SPIFFE ID is at most 255 characters";
		return false;
	}
	for (p = td; p < td + tdlen; p++) {
		if (isupper((unsigned char)*p)) {
			*why = "the trust domain of a SPIFFE ID is lower case";
			return false;
		}
		if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '.' ||
		      *p == '-' || *p == '_')) {
			*why = "the trust domain of a SPIFFE ID holds only letters a-z, digits, "
			       "'.', '-' and '_' (no port or user info)";
			return false;
		}
	}
	for (p = td + tdlen; *p == '/'; p += strcspn(p + 1, "/") + 1) {
		const char *seg = p + 1;
		size_t n = strcspn(seg, "/");

		if (n == 0) {
			*why = "a SPIFFE ID has no empty path segment ('//' or a trailing '/')";
			return false;
		}
		if (dot_segment(seg, seg + n)) {
			*why = "a SPIFFE ID has no '.' or '..' path segment";
			return false;
		}
		for (size_t i = 0; i < n; i++)
			if (!(isalnum((unsigned char)seg[i]) || seg[i] == '.' || seg[i] == '-' ||
			      seg[i] == '_')) {
				*why = "the path segments of a SPIFFE ID hold only letters, "
				       "digits, "
				       "'.', '-' and '_'";
				return false;
			}
	}
	return true;
}

/* scheme "://" authority [path] [?query] [#fragment], at most 2048 bytes of printable
 * ASCII without spaces, quotes, backslashes or other characters URIs never hold raw;
 * percent-encoding well-formed and never of '/' or a control byte; no "." or ".." path
 * segment (raw or encoded), which would let a name climb out of a prefix that policies
 * match. spiffe: URIs follow the SPIFFE ID rules. */
static bool valid_uri(const char *uri, const char **why)
{
	const char *sep = strstr(uri, "://"), *p, *path, *end;
	size_t len = strlen(uri);

	if (len > 2048) {
		*why = "longer than 2048 bytes";
		return false;
	}
	for (p = uri; *p != '\0'; p++)
		if (*p <= ' ' || *p > '~') {
			*why = "control bytes, spaces and non-ASCII characters are not allowed";
			return false;
		} else if (strchr("\"<>\\^`{|}", *p) != NULL) {
			*why = "quotes, angle brackets, backslashes and ^`{|} are not allowed";
			return false;
		}
	*why = "expected scheme://authority/path";
	if (sep == NULL || sep == uri || !isalpha((unsigned char)uri[0]))
		return false;
	for (p = uri; p < sep; p++)
		if (!(isalnum((unsigned char)*p) || *p == '+' || *p == '-' || *p == '.'))
			return false;
	if (sep - uri == 6 && strncasecmp(uri, "spiffe", 6) == 0)
		return valid_spiffe(uri, why);
	if (strchr("/?#", sep[3]) != NULL) {
		*why = "the authority (host) is empty";
		return false;
	}
	for (p = uri; *p != '\0'; p++) {
		if (*p != '%')
			continue;
		if (!is_hex(p[1]) || !is_hex(p[2])) {
			*why = "malformed percent-encoding ('%' is followed by two hex digits)";
			return false;
		}
		if (hex_value(p + 1) == '/') {
			*why = "a percent-encoded '/' (%2F) is not allowed";
			return false;
		}
		if (hex_value(p + 1) < 0x20 || hex_value(p + 1) == 0x7f) {
			*why = "percent-encoded control bytes are not allowed";
			return false;
		}
	}
	path = sep + 3 + strcspn(sep + 3, "/?#");
	end = path + strcspn(path, "?#");
	for (p = path; p < end && *p == '/'; p += strcspn(p + 1, "/?#") + 1) {
		const char *seg = p + 1, *seg_end = seg + strcspn(seg, "/?#");

		if (dot_segment(seg, seg_end < end ? seg_end : end)) {
			*why = "'.' and '..' path segments are not allowed";
			return false;
		}
	}
	return true;
}

int grant_add_uri(struct grant_names *n, const char *uri, char *err, size_t err_len)
{
	const char *why;
	char shown[256];
	ASN1_IA5STRING *v;

	if (!valid_uri(uri, &why)) {
		printable(shown, sizeof(shown), (const unsigned char *)uri, strlen(uri));
		snprintf(err, err_len, "invalid URI '%s': %s", shown, why);
		return -1;
	}
	v = ia5(uri);
	if (v == NULL) {
		snprintf(err, err_len, "out of memory");
		return -1;
	}
	n->nuri++;
	return push(n, GEN_URI, v, "URI", uri, err, err_len);
}

/* The next UTF-8 character of s (at most n bytes) into *cp; its length, or 0 if s does not
 * start with a well-formed one (RFC 3629: no overlong forms, surrogates or values above
 * U+10FFFF). */
static size_t utf8_next(const unsigned char *s, size_t n, unsigned long *cp)
{
	size_t len = s[0] < 0x80	     ? 1
		     : (s[0] & 0xe0) == 0xc0 ? 2
		     : (s[0] & 0xf0) == 0xe0 ? 3
		     : (s[0] & 0xf8) == 0xf0 ? 4
					     : 0;
	static const unsigned long min[] = {0, 0, 0x80, 0x800, 0x10000};

	if (len == 0 || len > n)
		return 0;
	*cp = len == 1 ? s[0] : s[0] & (0x7f >> len);
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		*cp = *cp << 6 | (s[i] & 0x3f);
	}
	if (*cp < min[len] || *cp > 0x10ffff || (*cp >= 0xd800 && *cp <= 0xdfff))
		return 0;
	return len;
}

/* C0 and C1 controls, DEL, and the characters that reorder or break displayed text (bidi
 * embeddings, overrides and isolates; line and paragraph separators). */
static bool control_char(unsigned long c)
{
	return c < 0x20 || (c >= 0x7f && c <= 0x9f) || c == 0x2028 || c == 0x2029 ||
	       (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
}

/* Unicode format characters (general category Cf, Unicode 15): invisible, they make two
 * names that look the same differ (a zero-width space, a right-to-left mark, a BOM). */
static bool format_char(unsigned long c)
{
	static const unsigned long cf[][2] = {
		{0x00ad, 0x00ad},   {0x0600, 0x0605},	{0x061c, 0x061c},   {0x06dd, 0x06dd},
		{0x070f, 0x070f},   {0x0890, 0x0891},	{0x08e2, 0x08e2},   {0x180e, 0x180e},
		{0x200b, 0x200f},   {0x202a, 0x202e},	{0x2060, 0x2064},   {0x2066, 0x206f},
		{0xfeff, 0xfeff},   {0xfff9, 0xfffb},	{0x110bd, 0x110bd}, {0x110cd, 0x110cd},
		{0x13430, 0x1343f}, {0x1bca0, 0x1bca3}, {0x1d173, 0x1d17a}, {0xe0001, 0xe0001},
		{0xe0020, 0xe007f},
	};

	for (size_t i = 0; i < sizeof(cf) / sizeof(cf[0]); i++)
		if (c >= cf[i][0] && c <= cf[i][1])
			return true;
	return false;
}

int grant_check_text(const char *text, size_t max, const char *what, char *err, size_t err_len)
{
	const unsigned char *p = (const unsigned char *)text;
	size_t n = strlen(text), chars = 0, len;
	unsigned long c;

	if (n == 0) {
		snprintf(err, err_len, "%s is empty; give one or leave it out", what);
		return -1;
	}
	for (size_t i = 0; i < n; i += len, chars++) {
		len = utf8_next(p + i, n - i, &c);
		if (len == 0) {
			snprintf(err, err_len, "%s is not valid UTF-8", what);
			return -1;
		}
		if (control_char(c)) {
			snprintf(err, err_len,
				 "%s holds a control character (U+%04lX at byte %zu); remove it",
				 what, c, i);
			return -1;
		}
		if (format_char(c)) {
			snprintf(err, err_len,
				 "%s holds an invisible format character (U+%04lX at byte %zu); "
				 "remove it",
				 what, c, i);
			return -1;
		}
	}
	if (chars > max) {
		snprintf(err, err_len, "%s is longer than %zu characters (%zu); use a shorter one",
			 what, max, chars);
		return -1;
	}
	return 0;
}

int grant_check_cn(const char *cn, char *err, size_t err_len)
{
	return grant_check_text(cn, 64, "the common name", err, err_len);
}

int grant_init(struct grant *g, const char *profile, enum grant_source source, char *err,
	       size_t err_len)
{
	memset(g, 0, sizeof(*g));
	g->source = source;
	grant_names_init(&g->names);
	if (g->names.names == NULL) {
		snprintf(err, err_len, "out of memory");
		return -1;
	}
	if (issue_profile(profile, &g->kind) != 0) {
		snprintf(err, err_len, "unknown profile '%.100s'; use server, client or peer",
			 profile);
		return -1;
	}
	return 0;
}

void grant_free(struct grant *g)
{
	grant_names_free(&g->names);
}

int grant_set_cn(struct grant *g, const char *cn, char *err, size_t err_len)
{
	if (grant_check_cn(cn, err, err_len) != 0)
		return -1;
	snprintf(g->cn, sizeof(g->cn), "%s", cn);
	return 0;
}

int grant_check(const struct grant *g, char *err, size_t err_len)
{
	const struct grant_names *n = &g->names;
	int der = n->names != NULL ? i2d_GENERAL_NAMES(n->names, NULL) : 0;

	if (g->kind == ISSUE_SERVER && n->ndns + n->nip == 0) {
		snprintf(err, err_len,
			 "a server certificate needs at least one --dns or --ip name, "
			 "which clients check");
		return -1;
	}
	if (g->kind != ISSUE_SERVER && n->ndns + n->nip + n->nuri == 0) {
		snprintf(err, err_len,
			 "a %s certificate needs an identity: --uri (such as a SPIFFE "
			 "ID) or --dns",
			 issue_profile_name(g->kind));
		return -1;
	}
	/* a certificate no TLS peer would take is not issued: OpenSSL refuses a certificate
	 * chain over 100 KiB by default */
	if (der < 0 || der > GRANT_NAMES_MAX) {
		snprintf(
			err, err_len,
			"%d names take %d bytes in the certificate, more than %d: TLS peers refuse "
			"a certificate that large; split them over several certificates",
			n->ndns + n->nip + n->nuri, der, GRANT_NAMES_MAX);
		return -1;
	}
	return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* CSRs */

/* The PEM blocks of bio: 1 exactly one CSR (decoded whole into *req; other blocks, such
 * as text around it or a key, ignored), 0 none, -1 two or more, or a CSR block whose DER
 * does not decode exactly. */
static int read_pem_request(BIO *bio, X509_REQ **req)
{
	char *name = NULL, *header = NULL;
	unsigned char *der = NULL;
	long len = 0;
	int found = 0, rc = 0;

	*req = NULL;
	while (rc == 0 && PEM_read_bio(bio, &name, &header, &der, &len) == 1) {
		if (strcmp(name, PEM_STRING_X509_REQ) == 0 ||
		    strcmp(name, PEM_STRING_X509_REQ_OLD) == 0) {
			const unsigned char *p = der;

			if (++found > 1 || (*req = d2i_X509_REQ(NULL, &p, len)) == NULL ||
			    p != der + len)
				rc = -1;
		}
		OPENSSL_free(name);
		OPENSSL_free(header);
		OPENSSL_free(der);
		name = header = NULL;
		der = NULL;
	}
	/* the end of the data, or a block that is not PEM: only "no more PEM" is the end */
	if (rc == 0 && found > 0 && ERR_GET_REASON(ERR_peek_last_error()) != PEM_R_NO_START_LINE)
		rc = -1;
	ERR_clear_error();
	if (rc != 0) {
		X509_REQ_free(*req);
		*req = NULL;
		return -1;
	}
	return found;
}

int grant_request_read(struct grant_request *r, const void *data, size_t len, const char *what,
		       char *err, size_t err_len)
{
	const unsigned char *p = data;
	BIO *bio = NULL, *out = NULL;
	char *text = NULL;
	long n = 0;

	memset(r, 0, sizeof(*r));
	if (len > INT_MAX) {
		snprintf(err, err_len, "%s is too large for a certificate signing request", what);
		return -1;
	}
	bio = BIO_new_mem_buf(data, (int)len);
	switch (bio != NULL ? read_pem_request(bio, &r->req) : 0) {
	case 0: /* no PEM CSR: DER, all of it */
		r->req = d2i_X509_REQ(NULL, &p, (long)len);
		if (r->req != NULL && p != (const unsigned char *)data + len) {
			snprintf(err, err_len,
				 "%s holds %zu bytes after the certificate signing request; give "
				 "the CSR alone",
				 what, len - (size_t)(p - (const unsigned char *)data));
			BIO_free(bio);
			goto fail;
		}
		break;
	case 1: break;
	default:
		snprintf(err, err_len,
			 "%s holds more than one certificate signing request (or a malformed "
			 "one); give one CSR",
			 what);
		BIO_free(bio);
		goto fail;
	}
	BIO_free(bio);
	if (r->req == NULL) {
		snprintf(err, err_len,
			 "%s is not a certificate signing request (PEM 'BEGIN CERTIFICATE "
			 "REQUEST' or DER)",
			 what);
		goto fail;
	}
	r->key = X509_REQ_get_pubkey(r->req);
	if (r->key == NULL) {
		snprintf(err, err_len, "CSR %s carries a public key the CA cannot read", what);
		goto fail;
	}
	out = BIO_new(BIO_s_mem());
	if (out != NULL &&
	    X509_NAME_print_ex(out, X509_REQ_get_subject_name(r->req), 0, XN_FLAG_RFC2253) >= 0)
		n = BIO_get_mem_data(out, &text);
	r->subject = malloc(n > 0 ? (size_t)n + 1 : 1);
	if (r->subject != NULL && n > 0)
		memcpy(r->subject, text, (size_t)n);
	if (r->subject != NULL)
		r->subject[n > 0 ? n : 0] = '\0';
	BIO_free(out);
	if (r->subject == NULL) {
		snprintf(err, err_len, "out of memory");
		goto fail;
	}
	ERR_clear_error();
	return 0;
fail:
	grant_request_free(r);
	ERR_clear_error();
	return -1;
}

int grant_request_verify(const struct grant_request *r, const char *what, char *err, size_t err_len)
{
	int ok = X509_REQ_verify(r->req, r->key) == 1;
	char why[160];

	ERR_clear_error();
	if (!ok) {
		snprintf(err, err_len,
			 "the signature of CSR %s does not verify: it was altered or not made with "
			 "the key it carries",
			 what);
		return -1;
	}
	if (!issue_key_acceptable(r->key, why, sizeof(why))) {
		snprintf(err, err_len,
			 "CSR %s carries a weak or unsupported key: %s; use ECDSA P-256/P-384, "
			 "Ed25519 or RSA 2048+ with exponent 65537",
			 what, why);
		return -1;
	}
	return 0;
}

void grant_request_free(struct grant_request *r)
{
	X509_REQ_free(r->req);
	EVP_PKEY_free(r->key);
	free(r->subject);
	r->req = NULL;
	r->key = NULL;
	r->subject = NULL;
}

static void note(char *buf, size_t len, const char *what)
{
	size_t used = strlen(buf);

	if (strstr(buf, what) == NULL)
		snprintf(buf + used, len - used, "%s%s", used > 0 ? ", " : "", what);
}

/* ASCII case-insensitive comparison of length-counted strings (DNS names). */
static bool same_nocase(const unsigned char *a, size_t alen, const unsigned char *b, size_t blen)
{
	if (alen != blen)
		return false;
	for (size_t i = 0; i < alen; i++)
		if (tolower(a[i]) != tolower(b[i]))
			return false;
	return true;
}

/* Is name (a CSR's SAN of type DNS, IP or URI) among the granted names? DNS names compare
 * without regard to case (RFC 4343), IP addresses as bytes, URIs exactly. */
static bool granted(const struct grant_names *n, int type, const ASN1_STRING *value)
{
	const unsigned char *v = ASN1_STRING_get0_data(value);
	size_t vlen = (size_t)ASN1_STRING_length(value);

	for (int i = 0; i < sk_GENERAL_NAME_num(n->names); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(n->names, i);
		const ASN1_STRING *s = g->d.ia5; /* the same member for DNS, IP and URI */
		const unsigned char *d = ASN1_STRING_get0_data(s);
		size_t dlen = (size_t)ASN1_STRING_length(s);

		if (g->type != type)
			continue;
		if (type == GEN_DNS ? same_nocase(v, vlen, d, dlen)
				    : vlen == dlen && memcmp(v, d, vlen) == 0)
			return true;
	}
	return false;
}

static const char *other_kind(int type)
{
	switch (type) {
	case GEN_EMAIL: return "an email address (rfc822Name)";
	case GEN_DIRNAME: return "a directory name";
	case GEN_OTHERNAME: return "an otherName";
	case GEN_RID: return "a registered ID";
	case GEN_X400: return "an X.400 address";
	case GEN_EDIPARTY: return "an EDI party name";
	default: return "a name of an unknown type";
	}
}

/* The advice after "which was not granted". */
static const char *advice(const struct grant *g, const char *option)
{
	static char buf[96];

	if (g->source == GRANT_TOKEN)
		return "the enrollment token does not grant it; fix the CSR";
	if (g->source == GRANT_RENEWAL)
		return "the certificate being renewed does not carry it; ask for its names or "
		       "fewer";
	snprintf(buf, sizeof(buf), "issue with %s for it or fix the CSR", option);
	return buf;
}

static int match_san(const struct grant *g, const GENERAL_NAME *name, const char *what, char *err,
		     size_t err_len)
{
	const ASN1_STRING *s = name->d.ia5;
	char text[256];
	int len;

	switch (name->type) {
	case GEN_DNS:
	case GEN_URI:
		if (granted(&g->names, name->type, s))
			return 0;
		printable(text, sizeof(text), ASN1_STRING_get0_data(s),
			  (size_t)ASN1_STRING_length(s));
		snprintf(err, err_len, "CSR %s asks for %s %s, which was not granted; %s", what,
			 name->type == GEN_DNS ? "DNS name" : "URI", text,
			 advice(g, name->type == GEN_DNS ? "--dns" : "--uri"));
		return -1;
	case GEN_IPADD:
		/* the length first: inet_ntop() reads 4 or 16 bytes whatever the string holds */
		len = ASN1_STRING_length(s);
		if (len != 4 && len != 16) {
			snprintf(err, err_len,
				 "CSR %s has a malformed IP address (%d bytes; an IPv4 address "
				 "has 4, an IPv6 address 16)",
				 what, len);
			return -1;
		}
		if (granted(&g->names, GEN_IPADD, s))
			return 0;
		if (inet_ntop(len == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(s), text,
			      sizeof(text)) == NULL)
			snprintf(text, sizeof(text), "?");
		snprintf(err, err_len, "CSR %s asks for IP address %s, which was not granted; %s",
			 what, text, advice(g, "--ip"));
		return -1;
	default:
		snprintf(err, err_len,
			 "CSR %s asks for %s as a subjectAltName, which the CA never grants; make "
			 "the CSR without it",
			 what, other_kind(name->type));
		return -1;
	}
}

/* OpenSSL reads the extensions of the first extension-request attribute (extReq, else
 * msExtReq), and of it the first value: names in any other would be neither checked nor
 * issued, so a CSR with more than one such attribute or value is refused outright. */
static int one_extension_request(const X509_REQ *req, const char *what, char *err, size_t err_len)
{
	int found = 0;

	for (int i = 0; i < X509_REQ_get_attr_count(req); i++) {
		X509_ATTRIBUTE *a = X509_REQ_get_attr(req, i);
		int nid = OBJ_obj2nid(X509_ATTRIBUTE_get0_object(a));

		if (nid != NID_ext_req && nid != NID_ms_ext_req)
			continue;
		if (X509_ATTRIBUTE_count(a) != 1 || ++found > 1) {
			snprintf(err, err_len,
				 "CSR %s has more than one extension request (extReq or msExtReq "
				 "attributes, or values of one); make it with one",
				 what);
			return -1;
		}
	}
	return 0;
}

/* Does a CSR's extendedKeyUsage or keyUsage ask for more than the profile gives (serverAuth
 * for server, clientAuth for client, both for peer; never certificate or CRL signing)? 0 no,
 * -1 with a message naming the first usage it should not ask for. */
static int usage_beyond_profile(const struct grant *g, X509_EXTENSION *ext, int nid,
				const char *what, char *err, size_t err_len)
{
	const char *profile = issue_profile_name(g->kind);
	int rc = 0;

	if (nid == NID_ext_key_usage) {
		EXTENDED_KEY_USAGE *eku = X509V3_EXT_d2i(ext);

		if (eku == NULL) {
			snprintf(err, err_len, "CSR %s has a malformed extendedKeyUsage", what);
			return -1;
		}
		for (int i = 0; i < sk_ASN1_OBJECT_num(eku) && rc == 0; i++) {
			int u = OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, i));
			bool ok = (u == NID_server_auth && g->kind != ISSUE_CLIENT) ||
				  (u == NID_client_auth && g->kind != ISSUE_SERVER);

			if (!ok) {
				char name[80];

				OBJ_obj2txt(name, sizeof(name), sk_ASN1_OBJECT_value(eku, i), 0);
				snprintf(err, err_len,
					 "CSR %s asks for extended key usage %s, which a %s "
					 "certificate does not have; make the CSR without it",
					 what, name, profile);
				rc = -1;
			}
		}
		EXTENDED_KEY_USAGE_free(eku);
		return rc;
	}
	{
		ASN1_BIT_STRING *ku = X509V3_EXT_d2i(ext);

		if (ku == NULL) {
			snprintf(err, err_len, "CSR %s has a malformed keyUsage", what);
			return -1;
		}
		if (ASN1_BIT_STRING_get_bit(ku, 5) || ASN1_BIT_STRING_get_bit(ku, 6)) {
			snprintf(err, err_len,
				 "CSR %s asks for keyUsage keyCertSign or cRLSign (a CA's); the CA "
				 "issues leaf certificates only: make the CSR without it",
				 what);
			rc = -1;
		}
		ASN1_BIT_STRING_free(ku);
		return rc;
	}
}

static int match_extensions(const struct grant *g, struct grant_request *r, const char *what,
			    char *err, size_t err_len)
{
	STACK_OF(X509_EXTENSION) *exts = NULL;
	int rc = 0;

	if (one_extension_request(r->req, what, err, err_len) != 0)
		return -1;
	exts = X509_REQ_get_extensions(r->req);

	if (exts == NULL && (X509_REQ_get_attr_by_NID(r->req, NID_ext_req, -1) >= 0 ||
			     X509_REQ_get_attr_by_NID(r->req, NID_ms_ext_req, -1) >= 0)) {
		snprintf(err, err_len, "CSR %s has a malformed extension request", what);
		return -1;
	}
	for (int i = 0; i < sk_X509_EXTENSION_num(exts) && rc == 0; i++) {
		X509_EXTENSION *ext = sk_X509_EXTENSION_value(exts, i);
		int nid = OBJ_obj2nid(X509_EXTENSION_get_object(ext));
		GENERAL_NAMES *gens;
		BASIC_CONSTRAINTS *bc;

		switch (nid) {
		case NID_subject_alt_name:
			gens = X509V3_EXT_d2i(ext);
			if (gens == NULL) {
				snprintf(err, err_len, "CSR %s has a malformed subjectAltName",
					 what);
				rc = -1;
			}
			for (int j = 0; j < sk_GENERAL_NAME_num(gens) && rc == 0; j++)
				rc = match_san(g, sk_GENERAL_NAME_value(gens, j), what, err,
					       err_len);
			GENERAL_NAMES_free(gens);
			break;
		case NID_basic_constraints:
			bc = X509V3_EXT_d2i(ext);
			if (bc == NULL || bc->ca) {
				snprintf(err, err_len,
					 bc == NULL ? "CSR %s has a malformed basicConstraints"
						    : "CSR %s asks for a CA certificate "
						      "(basicConstraints CA:TRUE); the CA issues "
						      "leaf certificates only: make the CSR "
						      "without it",
					 what);
				rc = -1;
			}
			BASIC_CONSTRAINTS_free(bc);
			break; /* CA:FALSE is what every leaf gets */
		case NID_ext_key_usage:
		case NID_key_usage:
			/* an operator sees them noted and the profile decides; an automated
			 * client (token, renewal) asking for more than its profile gives is
			 * refused, so that it never believes it holds what it does not */
			if (g->source != GRANT_OPERATOR &&
			    usage_beyond_profile(g, ext, nid, what, err, err_len) != 0) {
				rc = -1;
				break;
			}
			note(r->ignored, sizeof(r->ignored), OBJ_nid2sn(nid));
			break;
		default:
			note(r->ignored, sizeof(r->ignored),
			     nid != NID_undef ? OBJ_nid2sn(nid) : "an unknown extension");
			break;
		}
	}
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	return rc;
}

/* Is the CSR's common name (UTF-8) the granted one or a granted name? */
static bool cn_granted(const struct grant *g, const char *cn)
{
	const struct grant_names *n = &g->names;
	unsigned char ip[16];
	int iplen = 0;

	if (g->cn[0] != '\0' && strcmp(cn, g->cn) == 0)
		return true;
	if (inet_pton(AF_INET, cn, ip) == 1)
		iplen = 4;
	else if (inet_pton(AF_INET6, cn, ip) == 1)
		iplen = 16;
	for (int i = 0; i < sk_GENERAL_NAME_num(n->names); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(n->names, i);
		const ASN1_STRING *s = gn->d.ia5;
		const unsigned char *d = ASN1_STRING_get0_data(s);
		size_t dlen = (size_t)ASN1_STRING_length(s);

		if ((gn->type == GEN_DNS &&
		     same_nocase((const unsigned char *)cn, strlen(cn), d, dlen)) ||
		    (gn->type == GEN_URI && strlen(cn) == dlen && memcmp(cn, d, dlen) == 0) ||
		    (gn->type == GEN_IPADD && iplen != 0 && (size_t)iplen == dlen &&
		     memcmp(ip, d, dlen) == 0))
			return true;
	}
	return false;
}

static int match_subject(const struct grant *g, struct grant_request *r, const char *what,
			 char *err, size_t err_len)
{
	X509_NAME *name = X509_REQ_get_subject_name(r->req);
	int at = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
	unsigned char *cn = NULL;
	char text[256];
	int len, rc = -1;

	if (X509_NAME_entry_count(name) > (at >= 0 ? 1 : 0))
		note(r->ignored, sizeof(r->ignored), "subject attributes other than CN");
	if (at < 0)
		return 0;
	if (X509_NAME_get_index_by_NID(name, NID_commonName, at) >= 0) {
		snprintf(err, err_len, "CSR %s has more than one common name; make it with one",
			 what);
		return -1;
	}
	len = ASN1_STRING_to_UTF8(&cn, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, at)));
	if (len < 0) {
		snprintf(err, err_len, "CSR %s has a common name that is not text", what);
		goto out;
	}
	if (memchr(cn, 0, (size_t)len) != NULL || !cn_granted(g, (const char *)cn)) {
		printable(text, sizeof(text), cn, (size_t)len);
		snprintf(err, err_len,
			 "CSR %s asks for the common name '%s', which was not granted; %s", what,
			 text, advice(g, "--cn"));
		goto out;
	}
	if (grant_check_cn((const char *)cn, err, err_len) != 0)
		goto out;
	snprintf(r->cn, sizeof(r->cn), "%s", (const char *)cn);
	rc = 0;
out:
	OPENSSL_free(cn);
	return rc;
}

int grant_match(const struct grant *g, struct grant_request *r, const char *what, char *err,
		size_t err_len)
{
	int rc;

	r->cn[0] = '\0';
	r->ignored[0] = '\0';
	rc = match_extensions(g, r, what, err, err_len);
	if (rc == 0)
		rc = match_subject(g, r, what, err, err_len);
	if (rc != 0)
		r->cn[0] = '\0';
	ERR_clear_error();
	return rc;
}

const char *grant_cn(const struct grant *g, const struct grant_request *r)
{
	if (g->cn[0] != '\0')
		return g->cn;
	if (r != NULL && r->cn[0] != '\0')
		return r->cn;
	if (g->names.first[0] != '\0' && strlen(g->names.first) <= 64)
		return g->names.first;
	return NULL;
}
