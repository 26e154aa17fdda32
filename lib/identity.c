/*
 * The identity of a certificate: names, serial, validity and fingerprints, extracted once
 * after verification and exposed through the mtls_peer_* getters.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "internal.h"

void identity_hex(const uint8_t *bytes, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[bytes[i] >> 4];
		out[2 * i + 1] = digits[bytes[i] & 0xf];
	}
	out[2 * n] = '\0';
}

static char *name_string(const X509_NAME *name)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *out = NULL;
	char *data;
	long len;

	if (bio == NULL)
		return NULL;
	if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
		len = BIO_get_mem_data(bio, &data);
		out = strndup(data != NULL ? data : "", (size_t)(len > 0 ? len : 0));
	}
	BIO_free(bio);
	return out;
}

/* A control byte: C0, DEL, or a C1 control in UTF-8 (U+0080..U+009F, such as CSI). */
static size_t control_at(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] < 0x20 || p[i] == 0x7f ||
		    (p[i] == 0xc2 && i + 1 < n && p[i + 1] >= 0x80 && p[i + 1] <= 0x9f))
			return i;
	return n;
}

/* The first CN (UTF-8) into *out, NULL if there is none or it is empty (no name: the
 * identity falls back to the certificate hash). A CN with a NUL or control byte (in any CN
 * entry) would forge lines in messages and logs, or fool a matcher: the certificate is
 * refused (-1, err set). */
static int common_name(const X509_NAME *name, const char *serial, char **out, struct error *err)
{
	int i = -1;

	*out = NULL;
	while ((i = X509_NAME_get_index_by_NID(name, NID_commonName, i)) >= 0) {
		const ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
		unsigned char *utf8 = NULL;
		int len = ASN1_STRING_to_UTF8(&utf8, s);
		char shown_cn[200];

		if (len < 0) {
			ERR_clear_error();
			continue; /* not a string OpenSSL can convert: not a name we use */
		}
		if (control_at(utf8, (size_t)len) < (size_t)len) {
			identity_shown(utf8, (size_t)len, shown_cn, sizeof(shown_cn));
			OPENSSL_free(utf8);
			return error_set(err, MTLS_REASON_BAD_CERTIFICATE,
					 "certificate (serial %s) has the CN %s, with a NUL or "
					 "control byte; it is malformed or forged",
					 serial, shown_cn);
		}
		if (*out == NULL && len > 0 &&
		    (*out = strndup((const char *)utf8, (size_t)len)) == NULL) {
			OPENSSL_free(utf8);
			return error_set(err, MTLS_REASON_INTERNAL, "out of memory");
		}
		OPENSSL_free(utf8);
	}
	return 0;
}

static int list_push(struct strlist *l, const char *s, size_t len)
{
	char **v = realloc(l->v, (l->n + 1) * sizeof(*v));

	if (v == NULL)
		return -1;
	l->v = v;
	l->v[l->n] = strndup(s, len);
	if (l->v[l->n] == NULL)
		return -1;
	l->n++;
	return 0;
}

/* A name for a message: printable ASCII as is, anything else as \xNN, cut at 120 bytes. */
void identity_shown(const unsigned char *p, size_t n, char *out, size_t len)
{
	size_t used = 0;

	out[0] = '\0';
	for (size_t i = 0; i < n && used + 8 < len; i++) {
		if (i == 120) {
			snprintf(out + used, len - used, "...");
			return;
		}
		used += (size_t)snprintf(
			out + used, len - used,
			p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\' ? "%c" : "\\x%02x", p[i]);
	}
}

static int hexval(int c)
{
	return c >= '0' && c <= '9'   ? c - '0'
	       : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10
				      : -1;
}

/* A SPIFFE ID (SPIFFE-ID.md): spiffe://trust-domain[/segment]..., the trust domain of
 * [a-z0-9._-], segments of [a-zA-Z0-9._-] that are neither empty nor "." nor "..", no
 * trailing '/', no port, user, query, fragment or percent-encoding. */
static const char *spiffe_problem(const unsigned char *p, size_t n)
{
	size_t i = 9, seg; /* after "spiffe://" */

	for (; i < n && p[i] != '/'; i++)
		if (!(islower(p[i]) || isdigit(p[i]) || p[i] == '.' || p[i] == '-' || p[i] == '_'))
			return "its trust domain may hold only a-z, 0-9, '.', '-' and '_'";
	if (i == 9)
		return "it has no trust domain";
	while (i < n) {
		i++; /* the '/' */
		for (seg = i; i < n && p[i] != '/'; i++)
			if (!(isalnum(p[i]) || p[i] == '.' || p[i] == '-' || p[i] == '_'))
				return "its path may hold only letters, digits, '.', '-' and '_'";
		if (i == seg)
			return "it has an empty path segment (or a trailing '/')";
		if ((i - seg == 1 && p[seg] == '.') ||
		    (i - seg == 2 && p[seg] == '.' && p[seg + 1] == '.'))
			return "it has a '.' or '..' path segment";
	}
	return NULL;
}

/* Why a URI cannot be an identity, or NULL: longer than POLICY_URI_MAX (the SPIFFE ID limit;
 * no allow rule would match it either), control bytes, or a path that a server decoding it
 * would read as another path (dot segments, escaped '/', '\\', '.' or '%'); a spiffe: URI
 * must be a valid SPIFFE ID. */
static const char *uri_problem(const unsigned char *p, size_t n)
{
	const unsigned char *sep = NULL;
	size_t path, end, seg;

	if (n > POLICY_URI_MAX)
		return "it is longer than 2048 bytes";
	for (size_t i = 0; i < n; i++)
		if (p[i] < 0x20 || p[i] == 0x7f)
			return "it holds a control byte";
	if (n >= 9 && strncasecmp((const char *)p, "spiffe://", 9) == 0)
		return spiffe_problem(p, n);
	for (size_t i = 0; i + 3 <= n && sep == NULL; i++)
		if (memcmp(p + i, "://", 3) == 0)
			sep = p + i;
	/* an authority follows only a scheme (RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" /
	 * "." )): "s/../e://host/x" has none, and its dot segment is checked below */
	for (const unsigned char *q = p; sep != NULL && q < sep; q++)
		if (!(isalpha(*q) ||
		      (q > p && (isdigit(*q) || *q == '+' || *q == '-' || *q == '.'))))
			sep = NULL;
	/* with no authority (urn:, mailto:, a URI without a scheme), every '/'-separated
	 * segment is checked: "x/../y" must not pass for a path */
	for (path = sep != NULL ? (size_t)(sep - p) + 3 : 0; path < n && p[path] != '/'; path++)
		;
	for (end = path; end < n && p[end] != '?' && p[end] != '#'; end++)
		;
	for (size_t i = path; i < end; i = seg) {
		i++; /* the '/' */
		for (seg = i; seg < end && p[seg] != '/'; seg++)
			;
		if ((seg - i == 1 && p[i] == '.') ||
		    (seg - i == 2 && p[i] == '.' && p[i + 1] == '.'))
			return "it has a '.' or '..' path segment";
		for (size_t j = i; j < seg; j++) {
			int hi, lo, c;

			if (p[j] != '%')
				continue;
			if (seg - j < 3 || (hi = hexval(p[j + 1])) < 0 ||
			    (lo = hexval(p[j + 2])) < 0)
				return "it has a broken %-escape in its path";
			c = hi << 4 | lo;
			if (c == '/' || c == '\\' || c == '.' || c == '%' || c < 0x20 || c == 0x7f)
				return "its path escapes '/', '\\', '.', '%' or a control byte";
		}
	}
	return NULL;
}

/* Collect URI, DNS, email and IP SANs. A name with an embedded NUL is an attack on naive
 * matchers, one with a control byte on messages and log lines: the whole certificate is
 * refused, as is one with a URI that cannot be an identity (see uri_problem()). Empty names
 * are skipped. */
static int collect_sans(X509 *cert, struct mtls_peer *p, struct error *err)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	int rc = 0;

	if (gens == NULL)
		return 0;
	for (int i = 0; i < sk_GENERAL_NAME_num(gens) && rc == 0; i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		const ASN1_STRING *s;
		const char *why;
		char name[200];
		size_t len;

		switch (g->type) {
		case GEN_URI:
		case GEN_DNS:
		case GEN_EMAIL:
			s = g->type == GEN_URI	 ? g->d.uniformResourceIdentifier
			    : g->type == GEN_DNS ? g->d.dNSName
						 : g->d.rfc822Name;
			len = (size_t)ASN1_STRING_length(s);
			if (len == 0)
				break; /* an empty name is no identity */
			if (memchr(ASN1_STRING_get0_data(s), '\0', len) != NULL) {
				rc = error_set(
					err, MTLS_REASON_BAD_CERTIFICATE,
					"certificate (serial %s) has a subjectAltName with a "
					"NUL byte; it is malformed or forged",
					p->serial);
				break;
			}
			if (g->type == GEN_URI &&
			    (why = uri_problem(ASN1_STRING_get0_data(s), len)) != NULL) {
				identity_shown(ASN1_STRING_get0_data(s), len, name, sizeof(name));
				rc = error_set(
					err, MTLS_REASON_BAD_CERTIFICATE,
					"certificate (serial %s) has the URI SAN %s, which "
					"cannot be an identity: %s; it is malformed or forged",
					p->serial, name, why);
				break;
			}
			if (control_at(ASN1_STRING_get0_data(s), len) < len) {
				identity_shown(ASN1_STRING_get0_data(s), len, name, sizeof(name));
				rc = error_set(
					err, MTLS_REASON_BAD_CERTIFICATE,
					"certificate (serial %s) has the %s SAN %s, with a control "
					"byte; it is malformed or forged",
					p->serial,
					g->type == GEN_URI   ? "URI"
					: g->type == GEN_DNS ? "DNS"
							     : "email",
					name);
				break;
			}
			rc = list_push(g->type == GEN_URI   ? &p->uris
				       : g->type == GEN_DNS ? &p->dns
							    : &p->emails,
				       (const char *)ASN1_STRING_get0_data(s), len);
			break;
		case GEN_IPADD: {
			char buf[INET6_ADDRSTRLEN];
			int n = ASN1_STRING_length(g->d.iPAddress);
			int af = n == 4 ? AF_INET : n == 16 ? AF_INET6 : 0;

			if (af != 0 &&
			    inet_ntop(af, ASN1_STRING_get0_data(g->d.iPAddress), buf, sizeof(buf)))
				rc = list_push(&p->ips, buf, strlen(buf));
			break;
		}
		default: break;
		}
	}
	GENERAL_NAMES_free(gens);
	if (rc != 0 && err->reason == MTLS_REASON_NONE)
		error_set(err, MTLS_REASON_INTERNAL, "out of memory");
	return rc;
}

static int fingerprints(X509 *cert, struct mtls_peer *p)
{
	unsigned int n = 0;
	unsigned char *der = NULL;
	int len;

	if (X509_digest(cert, EVP_sha256(), p->cert_hash, &n) != 1 || n != 32)
		return -1;
	if (X509_get0_pubkey(cert) == NULL)
		return 1;
	/* the SubjectPublicKeyInfo as the certificate encodes it: the same bytes i2d_PUBKEY()
	 * would give, without OpenSSL 3.0's costly encoder round trip */
	len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
	if (len <= 0)
		return -1;
	if (EVP_Digest(der, (size_t)len, p->spki_hash, &n, EVP_sha256(), NULL) != 1 || n != 32) {
		OPENSSL_free(der);
		return -1;
	}
	OPENSSL_free(der);
	identity_hex(p->cert_hash, 32, p->cert_sha256);
	identity_hex(p->spki_hash, 32, p->spki_sha256);
	return 0;
}

struct mtls_peer *identity_from_cert(X509 *cert, struct error *err)
{
	struct mtls_peer *p = calloc(1, sizeof(*p));
	const char *primary;

	if (p == NULL || (p->serial = certfields_serial_hex(cert)) == NULL)
		goto oom;
	/* the serial first: refusals name the certificate by it */
	if (collect_sans(cert, p, err) != 0 ||
	    common_name(X509_get_subject_name(cert), p->serial, &p->cn, err) != 0)
		goto fail;
	p->subject = name_string(X509_get_subject_name(cert));
	p->issuer = name_string(X509_get_issuer_name(cert));
	p->not_before = certfields_time(X509_get0_notBefore(cert));
	p->not_after = certfields_time(X509_get0_notAfter(cert));
	p->client_eku = (X509_get_extension_flags(cert) & EXFLAG_XKUSAGE) != 0 &&
			(X509_get_extended_key_usage(cert) & XKU_SSL_CLIENT) != 0;
	if (p->subject == NULL || p->issuer == NULL || p->serial == NULL)
		goto oom;
	switch (fingerprints(cert, p)) {
	case 0: break;
	case 1:
		error_set(err, MTLS_REASON_BAD_CERTIFICATE,
			  "certificate (serial %s) has a public key that cannot be decoded; it is "
			  "malformed or uses an unsupported algorithm",
			  p->serial);
		goto fail;
	default: goto oom;
	}
	if (p->uris.n > 0) {
		primary = p->uris.v[0];
		p->identity = strdup(primary);
	} else if (p->dns.n > 0) {
		p->identity = strdup(p->dns.v[0]);
	} else if (p->cn != NULL) {
		p->identity = strdup(p->cn);
	} else {
		p->identity = malloc(7 + 65);
		if (p->identity != NULL)
			snprintf(p->identity, 7 + 65, "sha256:%s", p->cert_sha256);
	}
	if (p->identity == NULL)
		goto oom;
	return p;
oom:
	error_set(err, MTLS_REASON_INTERNAL, "out of memory describing a certificate");
fail:
	identity_free(p);
	return NULL;
}

static void list_free(struct strlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
}

void identity_free(struct mtls_peer *p)
{
	if (p == NULL)
		return;
	free(p->identity);
	free(p->subject);
	free(p->issuer);
	free(p->cn);
	free(p->serial);
	list_free(&p->uris);
	list_free(&p->dns);
	list_free(&p->ips);
	list_free(&p->emails);
	free(p->matched_rule);
	free(p);
}

void identity_describe(X509 *cert, char *buf, size_t len)
{
	char *subject = name_string(X509_get_subject_name(cert));
	char *serial = certfields_serial_hex(cert);

	snprintf(buf, len, "subject %s, serial %s",
		 subject != NULL && subject[0] != '\0' ? subject : "(empty)",
		 serial != NULL ? serial : "?");
	free(subject);
	free(serial);
}

const char *mtls_peer_identity(const struct mtls_peer *p)
{
	return p != NULL ? p->identity : NULL;
}

const char *mtls_peer_subject(const struct mtls_peer *p)
{
	return p != NULL ? p->subject : NULL;
}

const char *mtls_peer_issuer(const struct mtls_peer *p)
{
	return p != NULL ? p->issuer : NULL;
}

const char *mtls_peer_common_name(const struct mtls_peer *p)
{
	return p != NULL ? p->cn : NULL;
}

const char *mtls_peer_serial(const struct mtls_peer *p)
{
	return p != NULL ? p->serial : NULL;
}

time_t mtls_peer_not_before(const struct mtls_peer *p)
{
	return p != NULL ? p->not_before : 0;
}

time_t mtls_peer_not_after(const struct mtls_peer *p)
{
	return p != NULL ? p->not_after : 0;
}

const char *mtls_peer_cert_sha256(const struct mtls_peer *p)
{
	return p != NULL ? p->cert_sha256 : NULL;
}

int mtls_peer_client_eku(const struct mtls_peer *p)
{
	return p != NULL && p->client_eku;
}

const char *mtls_peer_spki_sha256(const struct mtls_peer *p)
{
	return p != NULL ? p->spki_sha256 : NULL;
}

size_t mtls_peer_uri_count(const struct mtls_peer *p)
{
	return p != NULL ? p->uris.n : 0;
}

const char *mtls_peer_uri(const struct mtls_peer *p, size_t i)
{
	return p != NULL && i < p->uris.n ? p->uris.v[i] : NULL;
}

size_t mtls_peer_dns_count(const struct mtls_peer *p)
{
	return p != NULL ? p->dns.n : 0;
}

const char *mtls_peer_dns(const struct mtls_peer *p, size_t i)
{
	return p != NULL && i < p->dns.n ? p->dns.v[i] : NULL;
}

size_t mtls_peer_ip_count(const struct mtls_peer *p)
{
	return p != NULL ? p->ips.n : 0;
}

const char *mtls_peer_ip(const struct mtls_peer *p, size_t i)
{
	return p != NULL && i < p->ips.n ? p->ips.v[i] : NULL;
}

size_t mtls_peer_email_count(const struct mtls_peer *p)
{
	return p != NULL ? p->emails.n : 0;
}

const char *mtls_peer_email(const struct mtls_peer *p, size_t i)
{
	return p != NULL && i < p->emails.n ? p->emails.v[i] : NULL;
}

const char *mtls_peer_matched_rule(const struct mtls_peer *p)
{
	return p != NULL ? p->matched_rule : NULL;
}
