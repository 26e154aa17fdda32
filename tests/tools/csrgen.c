/*
 * csrgen: certificate signing requests that `openssl req` will not make, for the CA tests.
 *
 *   csrgen MODE OUT
 *
 * Writes one PEM CSR, signed with its key, to OUT:
 *   rsa-e1      RSA-2048 with public exponent 1 (a "signature" is the message itself)
 *   rsa-e3      RSA-2048 with public exponent 3
 *   ec-explicit P-256 given as explicit curve parameters, not by name
 *   msext       SAN DNS:good.example in extReq, DNS:evil.example in msExtReq
 *   twoext      two extReq attributes: DNS:good.example, then DNS:evil.example
 *   twovals     one extReq attribute with two values: DNS:good.example, DNS:evil.example
 *
 * Test code: a tool for the integration tests, not part of mtls.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>

/* RSA-2048 with e = 1 and d = 1 (its own inverse): no key generator makes one. */
static EVP_PKEY *rsa_e1(void)
{
	EVP_PKEY *gen = EVP_RSA_gen(2048), *key = NULL;
	BIGNUM *n = NULL;
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);

	if (gen != NULL && bld != NULL && ctx != NULL &&
	    EVP_PKEY_get_bn_param(gen, OSSL_PKEY_PARAM_RSA_N, &n) == 1 &&
	    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) == 1 &&
	    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, BN_value_one()) == 1 &&
	    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_D, BN_value_one()) == 1 &&
	    (params = OSSL_PARAM_BLD_to_param(bld)) != NULL && EVP_PKEY_fromdata_init(ctx) == 1)
		EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_KEYPAIR, params);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(n);
	EVP_PKEY_free(gen);
	return key;
}

/* RSA-2048 generated with e = 3 (the default provider still allows it). */
static EVP_PKEY *rsa_e3(void)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
	BIGNUM *e = BN_new();
	EVP_PKEY *key = NULL;

	if (ctx != NULL && e != NULL && BN_set_word(e, 3) == 1 && EVP_PKEY_keygen_init(ctx) == 1 &&
	    EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, 2048) == 1 &&
	    EVP_PKEY_CTX_set1_rsa_keygen_pubexp(ctx, e) == 1)
		EVP_PKEY_keygen(ctx, &key);
	BN_free(e);
	EVP_PKEY_CTX_free(ctx);
	return key;
}

static EVP_PKEY *ec_explicit(void)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	char group[] = "P-256", encoding[] = OSSL_PKEY_EC_ENCODING_EXPLICIT;
	OSSL_PARAM params[] = {
		OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
		OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_ENCODING, encoding, 0),
		OSSL_PARAM_END,
	};
	EVP_PKEY *key = NULL;

	if (ctx != NULL && EVP_PKEY_keygen_init(ctx) == 1 &&
	    EVP_PKEY_CTX_set_params(ctx, params) == 1)
		EVP_PKEY_keygen(ctx, &key);
	EVP_PKEY_CTX_free(ctx);
	return key;
}

/* The DER of an Extensions value holding one subjectAltName of one DNS name. */
static int san_der(const char *dns, unsigned char **der)
{
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, dns);
	int len = -1;

	if (exts != NULL && ext != NULL && sk_X509_EXTENSION_push(exts, ext) > 0) {
		ext = NULL;
		len = ASN1_item_i2d((ASN1_VALUE *)exts, der, ASN1_ITEM_rptr(X509_EXTENSIONS));
	}
	X509_EXTENSION_free(ext);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	return len;
}

static int add_attr(X509_REQ *req, int nid, const char *dns)
{
	unsigned char *der = NULL;
	int len = san_der(dns, &der);
	X509_ATTRIBUTE *a =
		len > 0 ? X509_ATTRIBUTE_create_by_NID(NULL, nid, V_ASN1_SEQUENCE, der, len) : NULL;
	/* X509_REQ_add1_attr_by_NID() would merge a second attribute of the same type */
	int ok = a != NULL && X509_REQ_add1_attr(req, a) == 1;

	X509_ATTRIBUTE_free(a);
	OPENSSL_free(der);
	return ok ? 0 : -1;
}

/* OpenSSL refuses to add a second attribute of a type (duplicate attribute), so the second
 * extReq goes in as a challengePassword, whose OID has the same length, and the request is
 * re-read with that OID's last byte changed to extReq's (1.2.840.113549.1.9.7 -> .14), to
 * be signed again. */
static X509_REQ *two_ext_reqs(X509_REQ *req, EVP_PKEY *key)
{
	static const unsigned char oid[] = {0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
					    0xf7, 0x0d, 0x01, 0x09, 0x07};
	unsigned char *der = NULL, *at;
	const unsigned char *p;
	X509_REQ *out = NULL;
	int len;

	if (add_attr(req, NID_ext_req, "DNS:good.example") != 0 ||
	    add_attr(req, NID_pkcs9_challengePassword, "DNS:evil.example") != 0 ||
	    X509_REQ_sign(req, key, EVP_sha256()) <= 0 || (len = i2d_X509_REQ(req, &der)) <= 0)
		goto out;
	at = memmem(der, (size_t)len, oid, sizeof(oid));
	if (at == NULL)
		goto out;
	at[sizeof(oid) - 1] = 0x0e;
	p = der;
	out = d2i_X509_REQ(NULL, &p, len);
out:
	OPENSSL_free(der);
	return out;
}

static int add_two_values(X509_REQ *req)
{
	unsigned char *d1 = NULL, *d2 = NULL;
	int l1 = san_der("DNS:good.example", &d1), l2 = san_der("DNS:evil.example", &d2);
	X509_ATTRIBUTE *a =
		l1 > 0 ? X509_ATTRIBUTE_create_by_NID(NULL, NID_ext_req, V_ASN1_SEQUENCE, d1, l1)
		       : NULL;
	int ok = a != NULL && l2 > 0 && X509_ATTRIBUTE_set1_data(a, V_ASN1_SEQUENCE, d2, l2) == 1 &&
		 X509_REQ_add1_attr(req, a) == 1;

	X509_ATTRIBUTE_free(a);
	OPENSSL_free(d1);
	OPENSSL_free(d2);
	return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
	const char *mode = argc == 3 ? argv[1] : "";
	EVP_PKEY *key = NULL;
	X509_REQ *req = X509_REQ_new();
	X509_NAME *name = X509_NAME_new();
	FILE *f = NULL;
	int rc = 1, ok = 0;

	if (strcmp(mode, "rsa-e1") == 0)
		key = rsa_e1();
	else if (strcmp(mode, "rsa-e3") == 0)
		key = rsa_e3();
	else if (strcmp(mode, "ec-explicit") == 0)
		key = ec_explicit();
	else if (strcmp(mode, "msext") == 0 || strcmp(mode, "twoext") == 0 ||
		 strcmp(mode, "twovals") == 0)
		key = EVP_EC_gen("P-256");
	else {
		fprintf(stderr,
			"usage: csrgen rsa-e1|rsa-e3|ec-explicit|msext|twoext|twovals OUT\n");
		return 2;
	}
	if (key == NULL || req == NULL || name == NULL || X509_REQ_set_version(req, 0) != 1 ||
	    X509_REQ_set_pubkey(req, key) != 1 ||
	    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
				       (const unsigned char *)"good.example", -1, -1, 0) != 1 ||
	    X509_REQ_set_subject_name(req, name) != 1)
		goto out;
	if (strcmp(mode, "msext") == 0)
		ok = add_attr(req, NID_ext_req, "DNS:good.example") == 0 &&
		     add_attr(req, NID_ms_ext_req, "DNS:evil.example") == 0;
	else if (strcmp(mode, "twoext") == 0) {
		X509_REQ *two = two_ext_reqs(req, key);

		X509_REQ_free(req);
		req = two;
		ok = req != NULL;
	} else if (strcmp(mode, "twovals") == 0)
		ok = add_two_values(req) == 0;
	else
		ok = 1;
	if (!ok || X509_REQ_sign(req, key, EVP_sha256()) <= 0)
		goto out;
	f = fopen(argv[2], "w");
	if (f == NULL || PEM_write_X509_REQ(f, req) != 1)
		goto out;
	rc = 0;
out:
	if (f != NULL && fclose(f) != 0)
		rc = 1;
	if (rc != 0) {
		fprintf(stderr, "csrgen %s: failed\n", mode);
		ERR_print_errors_fp(stderr);
	}
	X509_NAME_free(name);
	X509_REQ_free(req);
	EVP_PKEY_free(key);
	return rc;
}
