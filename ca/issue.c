/*
 * Certificate construction: profiles and signing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "issue.h"
#include "key_strength.h"
#include "keys.h"

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
	case ISSUE_OCSP: return "ocsp";
	}
	return "?";
}

bool issue_key_acceptable(EVP_PKEY *key, char *why, size_t len)
{
	/* the CA issues for plain RSA keys, not RSA-PSS ones */
	if (key != NULL && EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA_PSS) {
		snprintf(why, len, "an RSA-PSS key");
		return false;
	}
	return key_strength_check(key, why, len);
}

/* what: "CRL" or "OCSP", for the message */
static int check_url(const char *url, const char *what, char *err, size_t err_len)
{
	size_t len = strlen(url), scheme = 0;
	const char *why = NULL;

	if (strncasecmp(url, "http://", 7) == 0)
		scheme = 7;
	else if (strncasecmp(url, "https://", 8) == 0)
		scheme = 8;
	if (len > 2048)
		why = "longer than 2048 bytes";
	else if (scheme == 0)
		why = "not an absolute http:// or https:// URL";
	else if (strchr("/?#", url[scheme]) != NULL)
		why = "the host is empty";
	for (const char *p = url; why == NULL && *p != '\0'; p++)
		if (*p <= ' ' || *p > '~')
			why = "spaces, control bytes and non-ASCII characters are not allowed";
		else if (strchr(",\"<>\\^`{|}", *p) != NULL)
			why = "',', quotes, angle brackets, backslashes and ^`{|} are not allowed";
	if (why == NULL)
		return 0;
	snprintf(err, err_len, "invalid %s URL '%.200s%s': %s", what, url, len > 200 ? "..." : "",
		 why);
	for (char *p = err; *p != '\0'; p++)
		if ((unsigned char)*p < ' ' || (unsigned char)*p > '~')
			*p = '?';
	return -1;
}

int issue_check_crl_url(const char *url, char *err, size_t err_len)
{
	return check_url(url, "CRL", err, err_len);
}

int issue_check_ocsp_url(const char *url, char *err, size_t err_len)
{
	return check_url(url, "OCSP", err, err_len);
}

/* CRLDistributionPoints with one distribution point whose fullName is the URI, built from
 * structures: a URL is never read as configuration text ("URI:a,DNS:b" would add names). */
static int add_crl_dp(X509 *cert, const char *url)
{
	CRL_DIST_POINTS *dps = sk_DIST_POINT_new_null();
	DIST_POINT *dp = DIST_POINT_new();
	GENERAL_NAME *g = GENERAL_NAME_new();
	ASN1_IA5STRING *uri = ASN1_IA5STRING_new();
	int ok = 0;

	if (dps == NULL || dp == NULL || g == NULL || uri == NULL ||
	    ASN1_STRING_set(uri, url, (int)strlen(url)) != 1)
		goto out;
	GENERAL_NAME_set0_value(g, GEN_URI, uri);
	uri = NULL;
	dp->distpoint = DIST_POINT_NAME_new();
	if (dp->distpoint == NULL)
		goto out;
	dp->distpoint->type = 0; /* fullName */
	dp->distpoint->name.fullname = GENERAL_NAMES_new();
	if (dp->distpoint->name.fullname == NULL ||
	    !sk_GENERAL_NAME_push(dp->distpoint->name.fullname, g))
		goto out;
	g = NULL;
	if (!sk_DIST_POINT_push(dps, dp))
		goto out;
	dp = NULL;
	ok = X509_add1_ext_i2d(cert, NID_crl_distribution_points, dps, 0, X509V3_ADD_DEFAULT) == 1;
out:
	ASN1_IA5STRING_free(uri);
	GENERAL_NAME_free(g);
	DIST_POINT_free(dp);
	sk_DIST_POINT_pop_free(dps, DIST_POINT_free);
	return ok ? 0 : -1;
}

/* authorityInfoAccess with one OCSP access description whose location is the URI, built from
 * structures like add_crl_dp(). */
static int add_aia_ocsp(X509 *cert, const char *url)
{
	AUTHORITY_INFO_ACCESS *aia = sk_ACCESS_DESCRIPTION_new_null();
	ACCESS_DESCRIPTION *ad = ACCESS_DESCRIPTION_new();
	ASN1_IA5STRING *uri = ASN1_IA5STRING_new();
	int ok = 0;

	if (aia == NULL || ad == NULL || uri == NULL ||
	    ASN1_STRING_set(uri, url, (int)strlen(url)) != 1)
		goto out;
	ASN1_OBJECT_free(ad->method);
	ad->method = OBJ_nid2obj(NID_ad_OCSP);
	GENERAL_NAME_set0_value(ad->location, GEN_URI, uri);
	uri = NULL;
	if (!sk_ACCESS_DESCRIPTION_push(aia, ad))
		goto out;
	ad = NULL;
	ok = X509_add1_ext_i2d(cert, NID_info_access, aia, 0, X509V3_ADD_DEFAULT) == 1;
out:
	ASN1_IA5STRING_free(uri);
	ACCESS_DESCRIPTION_free(ad);
	AUTHORITY_INFO_ACCESS_free(aia);
	return ok ? 0 : -1;
}

/* id-pkix-ocsp-nocheck (RFC 6960 4.2.2.2.1): an ASN.1 NULL, not critical. */
static int add_ocsp_nocheck(X509 *cert)
{
	ASN1_NULL *null = ASN1_NULL_new();
	int ok = null != NULL && X509_add1_ext_i2d(cert, NID_id_pkix_OCSP_noCheck, null, 0,
						   X509V3_ADD_DEFAULT) == 1;

	ASN1_NULL_free(null);
	return ok ? 0 : -1;
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
			  : spec->kind == ISSUE_OCSP   ? "OCSPSigning"
						       : NULL;
	/* the URLs go into the leaves that relying parties check, not into a responder's */
	bool urls = !ca && spec->kind != ISSUE_OCSP;
	const char *crl_url =
		urls && spec->crl_url != NULL && spec->crl_url[0] != '\0' ? spec->crl_url : NULL;
	const char *ocsp_url =
		urls && spec->ocsp_url != NULL && spec->ocsp_url[0] != '\0' ? spec->ocsp_url : NULL;
	bool has_names = spec->names != NULL && sk_GENERAL_NAME_num(spec->names) > 0;
	bool has_cn = spec->cn != NULL && spec->cn[0] != '\0';

	if ((crl_url != NULL && issue_check_crl_url(crl_url, err, err_len) != 0) ||
	    (ocsp_url != NULL && issue_check_ocsp_url(ocsp_url, err, err_len) != 0))
		goto out;
	/* RFC 5280 4.1.2.6 and 4.2.1.6: a CA has a subject; a leaf has a subject or names */
	if (ca ? !has_cn : !has_cn && !has_names) {
		snprintf(err, err_len,
			 ca ? "a CA certificate needs a subject (common name)"
			    : "a certificate without a common name needs a subjectAltName");
		goto out;
	}
	if (cert == NULL || name == NULL)
		goto fail;
	if (X509_set_version(cert, X509_VERSION_3) != 1 || random_serial(cert) != 0)
		goto fail;
	if (spec->org != NULL &&
	    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)spec->org,
				       -1, -1, 0) != 1)
		goto fail;
	if (has_cn && X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
						 (const unsigned char *)spec->cn, -1, -1, 0) != 1) {
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
	    X509_add1_ext_i2d(cert, NID_subject_alt_name, spec->names,
			      /* critical when the subject is empty (RFC 5280 4.2.1.6) */
			      !has_cn, X509V3_ADD_DEFAULT) != 1)
		goto fail;
	if ((crl_url != NULL && add_crl_dp(cert, crl_url) != 0) ||
	    (ocsp_url != NULL && add_aia_ocsp(cert, ocsp_url) != 0) ||
	    (spec->kind == ISSUE_OCSP && add_ocsp_nocheck(cert) != 0))
		goto fail;
	/* must-staple: a client that honours it refuses the server without a staple */
	if (spec->must_staple && (spec->kind == ISSUE_SERVER || spec->kind == ISSUE_PEER) &&
	    add_ext(cert, &ctx, NID_tlsfeature, "status_request") != 0)
		goto fail;
	if (X509_sign(cert, issuer_key, keys_sign_digest(issuer_key)) <= 0)
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

void issue_serial_hex(X509 *cert, char *out, size_t len)
{
	char *hex = certfields_serial_hex(cert);

	snprintf(out, len, "%s", hex != NULL ? hex : "?");
	free(hex);
}

void issue_spki_sha256(X509 *cert, char out[65])
{
	issue_key_sha256(X509_get0_pubkey(cert), out);
}

void issue_key_sha256(EVP_PKEY *key, char out[65])
{
	unsigned char *der = NULL, md[32];
	unsigned int n = 0;
	int len = key != NULL ? i2d_PUBKEY(key, &der) : -1;

	out[0] = '\0';
	if (len > 0 && EVP_Digest(der, (size_t)len, md, &n, EVP_sha256(), NULL) == 1)
		for (unsigned i = 0; i < 32; i++)
			snprintf(out + 2 * i, 3, "%02x", md[i]);
	OPENSSL_free(der);
}

char *issue_subject(X509 *cert)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data = NULL, *out;
	long n = 0;

	if (bio != NULL &&
	    X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) >= 0)
		n = BIO_get_mem_data(bio, &data);
	out = malloc(n > 0 ? (size_t)n + 1 : 1);
	if (out != NULL) {
		if (n > 0)
			memcpy(out, data, (size_t)n);
		out[n > 0 ? n : 0] = '\0';
	}
	BIO_free(bio);
	return out;
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
