/*
 * Certificate construction: validated names, profiles, CSRs, signing.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "files.h"
#include "issue.h"
#include "key_strength.h"

void issue_names_init(struct issue_names *n)
{
	memset(n, 0, sizeof(*n));
	n->names = GENERAL_NAMES_new();
}

void issue_names_free(struct issue_names *n)
{
	GENERAL_NAMES_free(n->names);
	n->names = NULL;
}

static int push(struct issue_names *n, int type, ASN1_STRING *value, const char *label,
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

int issue_add_dns(struct issue_names *n, const char *name, char *err, size_t err_len)
{
	char lower[256];
	ASN1_IA5STRING *v;

	if (!valid_dns(name)) {
		snprintf(err, err_len,
			 "invalid DNS name '%s': use letters, digits, hyphens and dots (a leading "
			 "'*.' is allowed), at most 253 characters",
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

int issue_add_ip(struct issue_names *n, const char *ip, char *err, size_t err_len)
{
	unsigned char buf[16];
	int len = 0;
	ASN1_OCTET_STRING *v;

	if (inet_pton(AF_INET, ip, buf) == 1)
		len = 4;
	else if (inet_pton(AF_INET6, ip, buf) == 1)
		len = 16;
	if (len == 0) {
		snprintf(err, err_len, "invalid IP address '%s': give an IPv4 or IPv6 address", ip);
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

int issue_add_uri(struct issue_names *n, const char *uri, char *err, size_t err_len)
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

int issue_profile(const char *name, enum issue_kind *kind)
{
	if (strcmp(name, "server") == 0)
		*kind = ISSUE_SERVER;
	else if (strcmp(name, "client") == 0)
		*kind = ISSUE_CLIENT;
	else if (strcmp(name, "peer") == 0)
		*kind = ISSUE_PEER;
	else
		return -1;
	return 0;
}

const char *issue_profile_name(enum issue_kind kind)
{
	switch (kind) {
	case ISSUE_ROOT: return "root";
	case ISSUE_INTERMEDIATE: return "intermediate";
	case ISSUE_SERVER: return "server";
	case ISSUE_CLIENT: return "client";
	case ISSUE_PEER: return "peer";
	}
	return "?";
}

bool issue_key_acceptable(EVP_PKEY *key)
{
	/* the CA issues for plain RSA keys, not RSA-PSS ones */
	return EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA_PSS && key_strength_ok(key);
}

static int add_ext(X509 *cert, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
	int ok = ext != NULL && X509_add_ext(cert, ext, -1) == 1;

	X509_EXTENSION_free(ext);
	return ok ? 0 : -1;
}

/* 16 random bytes, top bit clear and never zero: a positive 127-bit serial. */
static int random_serial(X509 *cert)
{
	unsigned char b[16];
	BIGNUM *bn;
	int ok;

	do {
		if (RAND_bytes(b, sizeof(b)) != 1)
			return -1;
		b[0] &= 0x7f;
	} while (b[0] == 0);
	bn = BN_bin2bn(b, sizeof(b), NULL);
	ok = bn != NULL && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) != NULL;
	BN_free(bn);
	return ok ? 0 : -1;
}

static const EVP_MD *digest_for(EVP_PKEY *key)
{
	int id = EVP_PKEY_get_base_id(key);

	if (id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448)
		return NULL; /* pure EdDSA */
	if (id == EVP_PKEY_EC && EVP_PKEY_get_bits(key) > 256)
		return EVP_sha384();
	return EVP_sha256();
}

X509 *issue_sign(const struct issue_spec *spec, X509 *issuer, EVP_PKEY *issuer_key, char *err,
		 size_t err_len)
{
	X509 *cert = X509_new();
	X509_NAME *name = X509_NAME_new();
	X509V3_CTX ctx;
	bool ca = spec->kind == ISSUE_ROOT || spec->kind == ISSUE_INTERMEDIATE;
	const char *eku = spec->kind == ISSUE_SERVER   ? "serverAuth"
			  : spec->kind == ISSUE_CLIENT ? "clientAuth"
			  : spec->kind == ISSUE_PEER   ? "serverAuth, clientAuth"
						       : NULL;
	bool has_names = spec->names != NULL && sk_GENERAL_NAME_num(spec->names->names) > 0;

	if (cert == NULL || name == NULL)
		goto fail;
	if (X509_set_version(cert, X509_VERSION_3) != 1 || random_serial(cert) != 0)
		goto fail;
	if (spec->org != NULL &&
	    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)spec->org,
				       -1, -1, 0) != 1)
		goto fail;
	if (spec->cn != NULL && spec->cn[0] != '\0' &&
	    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)spec->cn,
				       -1, -1, 0) != 1) {
		snprintf(err, err_len, "invalid common name '%.80s' (at most 64 characters)",
			 spec->cn);
		goto out;
	}
	if (X509_set_subject_name(cert, name) != 1 ||
	    X509_set_issuer_name(cert, issuer != NULL ? X509_get_subject_name(issuer) : name) !=
		    1 ||
	    X509_set_pubkey(cert, spec->subject_key) != 1 ||
	    X509_time_adj_ex(X509_getm_notBefore(cert), 0, 0, &(time_t){spec->not_before}) ==
		    NULL ||
	    X509_time_adj_ex(X509_getm_notAfter(cert), 0, 0, &(time_t){spec->not_after}) == NULL)
		goto fail;
	X509V3_set_ctx(&ctx, issuer != NULL ? issuer : cert, cert, NULL, NULL, 0);
	if (add_ext(cert, &ctx, NID_basic_constraints,
		    spec->kind == ISSUE_ROOT	       ? "critical,CA:TRUE"
		    : spec->kind == ISSUE_INTERMEDIATE ? "critical,CA:TRUE,pathlen:0"
						       : "critical,CA:FALSE") != 0 ||
	    add_ext(cert, &ctx, NID_key_usage,
		    ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature") != 0 ||
	    add_ext(cert, &ctx, NID_subject_key_identifier, "hash") != 0 ||
	    (issuer != NULL &&
	     add_ext(cert, &ctx, NID_authority_key_identifier, "keyid:always") != 0) ||
	    (eku != NULL && add_ext(cert, &ctx, NID_ext_key_usage, eku) != 0))
		goto fail;
	if (has_names &&
	    X509_add1_ext_i2d(cert, NID_subject_alt_name, spec->names->names,
			      /* critical when the subject is empty (RFC 5280 4.2.1.6) */
			      spec->cn == NULL || spec->cn[0] == '\0', X509V3_ADD_DEFAULT) != 1)
		goto fail;
	if (!ca && spec->crl_url != NULL && spec->crl_url[0] != '\0') {
		char dp[600];

		snprintf(dp, sizeof(dp), "URI:%s", spec->crl_url);
		if (add_ext(cert, &ctx, NID_crl_distribution_points, dp) != 0)
			goto fail;
	}
	if (X509_sign(cert, issuer_key, digest_for(issuer_key)) <= 0)
		goto fail;
	X509_NAME_free(name);
	ERR_clear_error();
	return cert;
fail:
	snprintf(err, err_len, "cannot build the certificate: %s",
		 ERR_reason_error_string(ERR_peek_error()) != NULL
			 ? ERR_reason_error_string(ERR_peek_error())
			 : "internal error");
out:
	ERR_clear_error();
	X509_NAME_free(name);
	X509_free(cert);
	return NULL;
}

/* PEM or DER, from memory; what names the input in messages. */
static X509_REQ *decode_csr(const void *data, size_t len, const char *what, char *err,
			    size_t err_len)
{
	const unsigned char *p = data;
	X509_REQ *req = NULL;
	BIO *bio;

	if (len > INT_MAX) {
		snprintf(err, err_len, "%s is too large for a certificate signing request", what);
		return NULL;
	}
	bio = BIO_new_mem_buf(data, (int)len);
	if (bio != NULL)
		req = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL);
	BIO_free(bio);
	if (req == NULL)
		req = d2i_X509_REQ(NULL, &p, (long)len);
	ERR_clear_error();
	if (req == NULL)
		snprintf(err, err_len,
			 "%s is not a certificate signing request (PEM 'BEGIN CERTIFICATE "
			 "REQUEST' or DER)",
			 what);
	return req;
}

static void note(char *buf, size_t len, const char *what)
{
	size_t used = strlen(buf);

	snprintf(buf + used, len - used, "%s%s", used > 0 ? ", " : "", what);
}

/* One subjectAltName of a CSR into names. */
static int csr_name(const GENERAL_NAME *g, const char *what, struct issue_names *names,
		    char *ignored, size_t ignored_len, char *err, size_t err_len)
{
	char text[2100], ip[INET6_ADDRSTRLEN];
	const ASN1_STRING *s;
	int len;

	switch (g->type) {
	case GEN_DNS:
	case GEN_URI:
		s = g->type == GEN_DNS ? g->d.dNSName : g->d.uniformResourceIdentifier;
		len = ASN1_STRING_length(s);
		if (len < 0 || (size_t)len >= sizeof(text) ||
		    memchr(ASN1_STRING_get0_data(s), 0, (size_t)len) != NULL) {
			snprintf(err, err_len, "CSR %s has a malformed name", what);
			return -1;
		}
		snprintf(text, sizeof(text), "%.*s", len, ASN1_STRING_get0_data(s));
		return g->type == GEN_DNS ? issue_add_dns(names, text, err, err_len)
					  : issue_add_uri(names, text, err, err_len);
	case GEN_IPADD:
		/* the length first: inet_ntop() reads 4 or 16 bytes whatever the string holds */
		s = g->d.iPAddress;
		len = ASN1_STRING_length(s);
		if ((len != 4 && len != 16) ||
		    inet_ntop(len == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(s), ip,
			      sizeof(ip)) == NULL) {
			snprintf(err, err_len,
				 "CSR %s has a malformed IP address (%d bytes; an IPv4 address "
				 "has 4, an IPv6 address 16)",
				 what, len);
			return -1;
		}
		return issue_add_ip(names, ip, err, err_len);
	default: note(ignored, ignored_len, "subjectAltName of another type"); return 0;
	}
}

EVP_PKEY *issue_csr_parse(const void *data, size_t len, const char *what, bool check_signature,
			  struct issue_names *names, char *ignored, size_t ignored_len, char *err,
			  size_t err_len)
{
	X509_REQ *req = decode_csr(data, len, what, err, err_len);
	STACK_OF(X509_EXTENSION) *exts = NULL;
	EVP_PKEY *key = NULL;

	ignored[0] = '\0';
	if (req == NULL)
		return NULL;
	key = X509_REQ_get_pubkey(req);
	if (key == NULL || (check_signature && X509_REQ_verify(req, key) != 1)) {
		snprintf(err, err_len,
			 "the signature of CSR %s does not verify: it was altered or not made with "
			 "the key it carries",
			 what);
		goto fail;
	}
	if (!issue_key_acceptable(key)) {
		snprintf(err, err_len,
			 "CSR %s carries a weak or unsupported key; use ECDSA P-256/P-384, Ed25519 "
			 "or RSA 2048+",
			 what);
		goto fail;
	}
	exts = X509_REQ_get_extensions(req);
	for (int i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
		X509_EXTENSION *ext = sk_X509_EXTENSION_value(exts, i);
		int nid = OBJ_obj2nid(X509_EXTENSION_get_object(ext));
		GENERAL_NAMES *gens;
		int rc = 0;

		if (nid != NID_subject_alt_name) {
			note(ignored, ignored_len, nid != NID_undef ? OBJ_nid2sn(nid) : "unknown");
			continue;
		}
		gens = X509V3_EXT_d2i(ext);
		for (int j = 0; gens != NULL && j < sk_GENERAL_NAME_num(gens) && rc == 0; j++)
			rc = csr_name(sk_GENERAL_NAME_value(gens, j), what, names, ignored,
				      ignored_len, err, err_len);
		GENERAL_NAMES_free(gens);
		if (rc != 0)
			goto fail;
	}
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_REQ_free(req);
	ERR_clear_error();
	return key;
fail:
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_REQ_free(req);
	EVP_PKEY_free(key);
	ERR_clear_error();
	return NULL;
}

EVP_PKEY *issue_from_csr(const char *path, struct issue_names *names, char *ignored,
			 size_t ignored_len, char *err, size_t err_len)
{
	size_t len = 0;
	char *data = files_read(path, &len, err, err_len);
	EVP_PKEY *key;

	ignored[0] = '\0';
	if (data == NULL)
		return NULL;
	key = issue_csr_parse(data, len, path, true, names, ignored, ignored_len, err, err_len);
	free(data);
	return key;
}

void issue_serial_hex(X509 *cert, char *out, size_t len)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
	char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;

	snprintf(out, len, "%s", hex != NULL ? hex : "?");
	OPENSSL_free(hex);
	BN_free(bn);
}

void issue_spki_sha256(X509 *cert, char out[65])
{
	unsigned char *der = NULL, md[32];
	unsigned int n = 0;
	int len = i2d_PUBKEY(X509_get0_pubkey(cert), &der);

	out[0] = '\0';
	if (len > 0 && EVP_Digest(der, (size_t)len, md, &n, EVP_sha256(), NULL) == 1)
		for (unsigned i = 0; i < 32; i++)
			snprintf(out + 2 * i, 3, "%02x", md[i]);
	OPENSSL_free(der);
}

void issue_subject(X509 *cert, char *out, size_t len)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data = NULL;
	long n = 0;

	out[0] = '\0';
	if (bio == NULL)
		return;
	if (X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) >= 0)
		n = BIO_get_mem_data(bio, &data);
	snprintf(out, len, "%.*s", (int)n, data != NULL ? data : "");
	BIO_free(bio);
}

time_t issue_time(const ASN1_TIME *t)
{
	struct tm tm;

	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
		return 0;
	return timegm(&tm);
}

char *issue_cert_pem(X509 *cert, size_t *len)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data, *out = NULL;
	long n;

	if (bio != NULL && PEM_write_bio_X509(bio, cert)) {
		n = BIO_get_mem_data(bio, &data);
		out = malloc((size_t)n + 1);
		if (out != NULL) {
			memcpy(out, data, (size_t)n);
			out[n] = '\0';
			*len = (size_t)n;
		}
	}
	BIO_free(bio);
	return out;
}
