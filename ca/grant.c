/*
 * Issuance policy: name syntax, the profiles' needs, and a CSR compared with a grant.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "grant.h"

void grant_names_init(struct grant_names *n)
{
	memset(n, 0, sizeof(*n));
	n->names = GENERAL_NAMES_new();
}

void grant_names_free(struct grant_names *n)
{
	GENERAL_NAMES_free(n->names);
	n->names = NULL;
}

static int push(struct grant_names *n, int type, ASN1_STRING *value, const char *label,
		const char *text, char *err, size_t err_len)
{
	GENERAL_NAME *g = GENERAL_NAME_new();
	size_t used = strlen(n->text);

	if (g == NULL || n->names == NULL) {
		ASN1_STRING_free(value);
		GENERAL_NAME_free(g);
		snprintf(err, err_len, "out of memory");
		return -1;
	}
	GENERAL_NAME_set0_value(g, type, value);
	if (!sk_GENERAL_NAME_push(n->names, g)) {
		GENERAL_NAME_free(g);
		snprintf(err, err_len, "out of memory");
		return -1;
	}
	snprintf(n->text + used, sizeof(n->text) - used, "%s%s:%s", used > 0 ? ", " : "", label,
		 text);
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
 * ending with a hyphen; total at most 253; optionally "*." for the leftmost label. */
static bool valid_dns(const char *name)
{
	size_t len = strlen(name), label = 0;
	const char *p = name;

	if (len == 0 || len > 253)
		return false;
	if (strncmp(p, "*.", 2) == 0)
		p += 2;
	if (*p == '\0')
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
	char lower[256];
	ASN1_IA5STRING *v;

	if (!valid_dns(name)) {
		snprintf(err, err_len,
			 "invalid DNS name '%.260s': use letters, digits, hyphens and dots (a "
			 "leading '*.' is allowed), at most 253 characters",
			 name);
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
	unsigned char buf[16];
	int len = 0;
	ASN1_OCTET_STRING *v;

	if (inet_pton(AF_INET, ip, buf) == 1)
		len = 4;
	else if (inet_pton(AF_INET6, ip, buf) == 1)
		len = 16;
	if (len == 0) {
		snprintf(err, err_len, "invalid IP address '%.100s': give an IPv4 or IPv6 address",
			 ip);
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

/* scheme "://" authority [path], printable ASCII without spaces, quotes or backslashes;
 * spiffe IDs: lower-case trust domain, non-empty path segments, no query or fragment. */
static bool valid_uri(const char *uri, const char **why)
{
	const char *sep = strstr(uri, "://");
	size_t len = strlen(uri);

	*why = "expected scheme://authority/path";
	if (sep == NULL || sep == uri || len > 2048)
		return false;
	for (const char *p = uri; p < sep; p++)
		if (!(isalnum((unsigned char)*p) || *p == '+' || *p == '-' || *p == '.') ||
		    (p == uri && !isalpha((unsigned char)*p)))
			return false;
	for (const char *p = uri; *p != '\0'; p++)
		if (*p <= ' ' || *p > '~' || *p == '"' || *p == '\\' || *p == '<' || *p == '>') {
			*why = "spaces, quotes, backslashes and non-ASCII characters are not "
			       "allowed";
			return false;
		}
	if (sep[3] == '\0' || sep[3] == '/') {
		*why = "the authority (trust domain or host) is empty";
		return false;
	}
	if (strncmp(uri, "spiffe://", 9) == 0) {
		const char *td = uri + 9, *path = strchr(td, '/');

		*why = "a SPIFFE ID is spiffe://trust-domain/path with a lower-case trust domain, "
		       "non-empty path segments and no query or fragment";
		for (const char *p = td; p < (path != NULL ? path : td + strlen(td)); p++)
			if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) ||
			      *p == '.' || *p == '-' || *p == '_'))
				return false;
		if (strpbrk(uri, "?#") != NULL || strstr(td, "//") != NULL ||
		    (path != NULL && (path[1] == '\0' || uri[len - 1] == '/')))
			return false;
	}
	return true;
}

int grant_add_uri(struct grant_names *n, const char *uri, char *err, size_t err_len)
{
	const char *why;
	ASN1_IA5STRING *v;

	if (!valid_uri(uri, &why)) {
		snprintf(err, err_len, "invalid URI '%.200s': %s", uri, why);
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

int grant_check_cn(const char *cn, char *err, size_t err_len)
{
	if (strlen(cn) > 64) {
		snprintf(err, err_len, "the common name is longer than 64 characters");
		return -1;
	}
	return 0;
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
	return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* CSRs */

int grant_request_read(struct grant_request *r, const void *data, size_t len, const char *what,
		       char *err, size_t err_len)
{
	const unsigned char *p = data;
	BIO *bio = NULL, *out = NULL;
	char *text = NULL;
	long n;

	memset(r, 0, sizeof(*r));
	if (len > INT_MAX) {
		snprintf(err, err_len, "%s is too large for a certificate signing request", what);
		return -1;
	}
	bio = BIO_new_mem_buf(data, (int)len);
	if (bio != NULL)
		r->req = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL);
	BIO_free(bio);
	if (r->req == NULL)
		r->req = d2i_X509_REQ(NULL, &p, (long)len);
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
	    X509_NAME_print_ex(out, X509_REQ_get_subject_name(r->req), 0, XN_FLAG_RFC2253) >= 0) {
		n = BIO_get_mem_data(out, &text);
		snprintf(r->subject, sizeof(r->subject), "%.*s", (int)n, text != NULL ? text : "");
	}
	BIO_free(out);
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

	ERR_clear_error();
	if (!ok) {
		snprintf(err, err_len,
			 "the signature of CSR %s does not verify: it was altered or not made with "
			 "the key it carries",
			 what);
		return -1;
	}
	if (!issue_key_acceptable(r->key)) {
		snprintf(err, err_len,
			 "CSR %s carries a weak or unsupported key; use ECDSA P-256/P-384, Ed25519 "
			 "or RSA 2048+",
			 what);
		return -1;
	}
	return 0;
}

void grant_request_free(struct grant_request *r)
{
	X509_REQ_free(r->req);
	EVP_PKEY_free(r->key);
	r->req = NULL;
	r->key = NULL;
}

static void note(char *buf, size_t len, const char *what)
{
	size_t used = strlen(buf);

	if (strstr(buf, what) == NULL)
		snprintf(buf + used, len - used, "%s%s", used > 0 ? ", " : "", what);
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

static int match_extensions(const struct grant *g, struct grant_request *r, const char *what,
			    char *err, size_t err_len)
{
	STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(r->req);
	int rc = 0;

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
