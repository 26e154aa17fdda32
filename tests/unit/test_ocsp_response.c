/*
 * ocsp_check_response(): the one check of an OCSP answer (a server's staple, a fetched
 * answer about a peer, the own staple). Answers are made at test time with OpenSSL's
 * responder API, about certificates made at test time: a root, an issuing CA, a leaf, and
 * responder certificates with and without OCSPSigning, of this CA and of another.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/ocsp.h>
#include <openssl/rsa.h>

#include "internal.h"
#include "testutil.h"

struct pki {
	X509 *root, *ca, *leaf, *other_leaf, *responder, *responder_noeku, *responder_short,
		*foreign_root, *foreign_responder;
	EVP_PKEY *root_key, *ca_key, *leaf_key, *other_leaf_key, *responder_key, *noeku_key,
		*short_key, *foreign_root_key, *foreign_responder_key;
};

static struct pki P;

static int setup(void **state)
{
	(void)state;
	P.root = test_cert_make(&(struct test_cert){.subject = "CN=root", .ca = true}, NULL, NULL,
				&P.root_key);
	P.ca = test_cert_make(&(struct test_cert){.subject = "CN=issuing", .ca = true}, P.root,
			      P.root_key, &P.ca_key);
	P.leaf = test_cert_make(&(struct test_cert){.subject = "CN=leaf"}, P.ca, P.ca_key,
				&P.leaf_key);
	P.other_leaf = test_cert_make(&(struct test_cert){.subject = "CN=other"}, P.ca, P.ca_key,
				      &P.other_leaf_key);
	P.responder = test_cert_make(
		&(struct test_cert){.subject = "CN=responder", .eku = "OCSPSigning", .san = ""},
		P.ca, P.ca_key, &P.responder_key);
	P.responder_noeku = test_cert_make(
		&(struct test_cert){.subject = "CN=responder", .eku = "clientAuth", .san = ""},
		P.ca, P.ca_key, &P.noeku_key);
	/* valid for 10 minutes: an answer it signs counts no longer */
	P.responder_short = test_cert_make(&(struct test_cert){.subject = "CN=responder",
							       .eku = "OCSPSigning",
							       .san = "",
							       .not_before = -60,
							       .not_after = 600},
					   P.ca, P.ca_key, &P.short_key);
	P.foreign_root = test_cert_make(&(struct test_cert){.subject = "CN=issuing", .ca = true},
					NULL, NULL, &P.foreign_root_key);
	P.foreign_responder = test_cert_make(
		&(struct test_cert){.subject = "CN=responder", .eku = "OCSPSigning", .san = ""},
		P.foreign_root, P.foreign_root_key, &P.foreign_responder_key);
	return 0;
}

static int teardown(void **state)
{
	X509 *certs[] = {P.root,
			 P.ca,
			 P.leaf,
			 P.other_leaf,
			 P.responder,
			 P.responder_noeku,
			 P.responder_short,
			 P.foreign_root,
			 P.foreign_responder};
	EVP_PKEY *keys[] = {P.root_key,	      P.ca_key,		  P.leaf_key,
			    P.other_leaf_key, P.responder_key,	  P.noeku_key,
			    P.short_key,      P.foreign_root_key, P.foreign_responder_key};

	(void)state;
	for (size_t i = 0; i < sizeof(certs) / sizeof(certs[0]); i++)
		X509_free(certs[i]);
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		EVP_PKEY_free(keys[i]);
	return 0;
}

/* The spec with the defaults of these tests: about P.leaf, by P.ca. */
static struct test_ocsp about_leaf(void)
{
	return (struct test_ocsp){.cert = P.leaf, .issuer = P.ca, .issuer_key = P.ca_key};
}

/* Check spec's answer about P.leaf (issuer P.ca) at now + at: 0 or -1, with why. */
static int check(const struct test_ocsp *spec, long at, struct ocsp_result *r, char *why,
		 size_t len)
{
	size_t n;
	unsigned char *der = test_ocsp_response(spec, &n);
	int rc = ocsp_check_response(der, n, P.ca, X509_get0_serialNumber(P.leaf), time(NULL) + at,
				     r, why, len);

	free(der);
	return rc;
}

static void expect_refused(const struct test_ocsp *spec, long at, const char *words)
{
	struct ocsp_result r;
	char why[300] = "";

	if (check(spec, at, &r, why, sizeof(why)) == 0)
		fail_msg("accepted, expected refused with \"%s\"", words);
	if (strstr(why, words) == NULL)
		fail_msg("refused with \"%s\", expected \"%s\"", why, words);
}

static void test_good_revoked_unknown(void **state)
{
	struct test_ocsp spec = about_leaf();
	struct ocsp_result r;
	char why[300] = "";
	time_t now = time(NULL);

	(void)state;
	assert_int_equal(check(&spec, 0, &r, why, sizeof(why)), 0);
	assert_int_equal(r.status, V_OCSP_CERTSTATUS_GOOD);
	assert_false(r.delegated);
	assert_true(r.this_update >= now - 70 && r.this_update <= now - 50);
	assert_true(r.valid_until >= now + 3590 && r.valid_until <= now + 3610);
	assert_int_equal(r.valid_until, r.next_update);

	spec.status = V_OCSP_CERTSTATUS_REVOKED;
	spec.reason = OCSP_REVOKED_STATUS_KEYCOMPROMISE;
	assert_int_equal(check(&spec, 0, &r, why, sizeof(why)), 0);
	assert_int_equal(r.status, V_OCSP_CERTSTATUS_REVOKED);
	assert_int_equal(r.reason, OCSP_REVOKED_STATUS_KEYCOMPROMISE);
	assert_true(r.revoked_at >= now - 3610 && r.revoked_at <= now - 3590);
	assert_true(ocsp_result_final(&r));
	assert_string_equal(ocsp_reason_name(r.reason), "keyCompromise");

	spec.status = V_OCSP_CERTSTATUS_UNKNOWN;
	assert_int_equal(check(&spec, 0, &r, why, sizeof(why)), 0);
	assert_int_equal(r.status, V_OCSP_CERTSTATUS_UNKNOWN);
}

/* SHA-256 CertIDs and responder IDs by key are understood as well. */
static void test_certid_sha256_and_respid_by_key(void **state)
{
	struct test_ocsp spec = about_leaf();
	struct ocsp_result r;
	char why[300] = "";

	(void)state;
	spec.certid_md = EVP_sha256();
	spec.by_key = true;
	assert_int_equal(check(&spec, 0, &r, why, sizeof(why)), 0);
	spec.certid_md = EVP_sha512();
	spec.by_key = false;
	assert_int_equal(check(&spec, 0, &r, why, sizeof(why)), 0);
	/* an MD5 CertID is no CertID of ours */
	spec.certid_md = EVP_md5();
	expect_refused(&spec, 0, "another certificate");
}

static void test_delegated_responder(void **state)
{
	struct test_ocsp spec = about_leaf();
	struct ocsp_result r;
	char why[300] = "";
	time_t now = time(NULL);

	(void)state;
	spec.signer = P.responder;
	spec.signer_key = P.responder_key;
	assert_int_equal(check(&spec, 0, &r, why, sizeof(why)), 0);
	assert_true(r.delegated);
	spec.by_key = true;
	assert_int_equal(check(&spec, 0, &r, why, sizeof(why)), 0);

	/* its answer counts no longer than the responder certificate */
	spec.signer = P.responder_short;
	spec.signer_key = P.short_key;
	assert_int_equal(check(&spec, 0, &r, why, sizeof(why)), 0);
	assert_true(r.valid_until <= now + 610);
	expect_refused(&spec, 1200, "responder certificate is not within its validity");

	spec.signer = P.responder_noeku;
	spec.signer_key = P.noeku_key;
	expect_refused(&spec, 0, "OCSPSigning");

	/* a responder of another CA with the issuer's name: not issued by the issuer */
	spec.signer = P.foreign_responder;
	spec.signer_key = P.foreign_responder_key;
	expect_refused(&spec, 0, "did not issue");
}

/* Signed by a key that is not the issuer's: a certificate of another CA that has the
 * issuer's name, included in the answer, or the answer about a CertID of another key. */
static void test_forged(void **state)
{
	struct test_ocsp spec = about_leaf();

	(void)state;
	spec.signer = P.foreign_root; /* "CN=issuing" too, another key */
	spec.signer_key = P.foreign_root_key;
	expect_refused(&spec, 0, "did not issue");
	spec.by_key = true; /* then only the included certificate matches the responder ID */
	expect_refused(&spec, 0, "did not issue");
	spec = about_leaf();
	spec.issuer = P.foreign_root;
	spec.issuer_key = P.foreign_root_key;
	expect_refused(&spec, 0, "");
}

static void test_other_certificate(void **state)
{
	struct test_ocsp spec = about_leaf();

	(void)state;
	spec.cert = P.other_leaf;
	expect_refused(&spec, 0, "another certificate");
}

static void test_times(void **state)
{
	struct test_ocsp spec = about_leaf();
	struct ocsp_result r;
	char why[300] = "";
	time_t now = time(NULL);

	(void)state;
	expect_refused(&spec, 3700, "expired");
	/* a revocation is final, whatever the answer's age; a hold is not */
	spec.status = V_OCSP_CERTSTATUS_REVOKED;
	assert_int_equal(check(&spec, 3700, &r, why, sizeof(why)), 0);
	spec.reason = OCSP_REVOKED_STATUS_CERTIFICATEHOLD;
	expect_refused(&spec, 3700, "expired");
	spec = about_leaf();
	spec.this_off = 3600;
	spec.next_off = 7200;
	expect_refused(&spec, 0, "in the future");
	spec.this_off = 200; /* within the skew */
	assert_int_equal(check(&spec, 0, &r, why, sizeof(why)), 0);
	/* nextUpdate before thisUpdate */
	spec.this_off = -60;
	spec.next_off = -120;
	expect_refused(&spec, 0, "nextUpdate");
	/* no nextUpdate: it counts OCSP_NO_NEXT_UPDATE seconds */
	spec = about_leaf();
	spec.no_next = true;
	assert_int_equal(check(&spec, 0, &r, why, sizeof(why)), 0);
	assert_int_equal(r.next_update, 0);
	assert_true(r.valid_until <= now - 60 + OCSP_NO_NEXT_UPDATE + 5);
	expect_refused(&spec, OCSP_NO_NEXT_UPDATE, "no nextUpdate");
}

static void test_not_successful(void **state)
{
	struct test_ocsp spec = about_leaf();

	(void)state;
	spec.resp_status = OCSP_RESPONSE_STATUS_TRYLATER;
	expect_refused(&spec, 0, "trylater");
	spec.resp_status = OCSP_RESPONSE_STATUS_UNAUTHORIZED;
	expect_refused(&spec, 0, "unauthorized");
}

static void test_weak_signature_and_critical_extension(void **state)
{
	struct test_ocsp spec = about_leaf();

	(void)state;
	spec.sign_md = EVP_sha1();
	expect_refused(&spec, 0, "SHA1");
	spec = about_leaf();
	spec.critical_ext = true;
	expect_refused(&spec, 0, "critical extension");
}

/* An RSA CA (self-signed: only its name and key matter to the check). */
static X509 *rsa_ca(EVP_PKEY **key)
{
	X509 *ca = X509_new();
	X509_NAME *name = X509_NAME_new();

	*key = EVP_RSA_gen(2048);
	assert_non_null(*key);
	assert_non_null(ca);
	assert_non_null(name);
	assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
						    (const unsigned char *)"rsa issuing", -1, -1,
						    0),
			 1);
	assert_int_equal(X509_set_version(ca, X509_VERSION_3), 1);
	assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(ca), 7), 1);
	assert_int_equal(X509_set_subject_name(ca, name), 1);
	assert_int_equal(X509_set_issuer_name(ca, name), 1);
	assert_non_null(X509_gmtime_adj(X509_getm_notBefore(ca), -60));
	assert_non_null(X509_gmtime_adj(X509_getm_notAfter(ca), 86400));
	assert_int_equal(X509_set_pubkey(ca, *key), 1);
	assert_true(X509_sign(ca, *key, EVP_sha256()) > 0);
	X509_NAME_free(name);
	return ca;
}

/* A "good" answer about serial that ca signs with RSASSA-PSS over md (MGF1 with md). DER,
 * malloc'd. */
static unsigned char *pss_answer(X509 *ca, EVP_PKEY *key, const ASN1_INTEGER *serial,
				 const EVP_MD *md, size_t *len)
{
	OCSP_BASICRESP *bs = OCSP_BASICRESP_new();
	OCSP_CERTID *id = OCSP_cert_id_new(EVP_sha1(), X509_get_subject_name(ca),
					   X509_get0_pubkey_bitstr(ca), serial);
	ASN1_TIME *tu = X509_gmtime_adj(NULL, -60), *nu = X509_gmtime_adj(NULL, 3600);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx = NULL;
	OCSP_RESPONSE *resp;
	unsigned char *der = NULL, *out;
	int n;

	assert_non_null(bs);
	assert_non_null(id);
	assert_non_null(ctx);
	assert_non_null(OCSP_basic_add1_status(bs, id, V_OCSP_CERTSTATUS_GOOD, 0, NULL, tu, nu));
	assert_int_equal(EVP_DigestSignInit(ctx, &pctx, md, NULL, key), 1);
	assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 1);
	assert_int_equal(EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md), 1);
	assert_int_equal(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST), 1);
	assert_int_equal(OCSP_basic_sign_ctx(bs, ca, ctx, NULL, OCSP_NOCERTS), 1);
	resp = OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, bs);
	assert_non_null(resp);
	n = i2d_OCSP_RESPONSE(resp, &der);
	assert_true(n > 0);
	out = malloc((size_t)n);
	assert_non_null(out);
	memcpy(out, der, (size_t)n);
	*len = (size_t)n;
	OPENSSL_free(der);
	OCSP_RESPONSE_free(resp);
	OCSP_BASICRESP_free(bs);
	OCSP_CERTID_free(id);
	ASN1_TIME_free(tu);
	ASN1_TIME_free(nu);
	EVP_MD_CTX_free(ctx);
	return out;
}

/* RSASSA-PSS names its digest in its parameters, not in its OID: a PSS answer over SHA-1
 * is as weak as a sha1WithRSAEncryption one, one over SHA-256 is fine. */
static void test_rsa_pss_signature(void **state)
{
	EVP_PKEY *key;
	X509 *ca = rsa_ca(&key);
	ASN1_INTEGER *serial = ASN1_INTEGER_new();
	struct ocsp_result r;
	char why[300] = "";
	unsigned char *der;
	size_t n;

	(void)state;
	assert_non_null(serial);
	assert_int_equal(ASN1_INTEGER_set(serial, 0x1234), 1);
	der = pss_answer(ca, key, serial, EVP_sha256(), &n);
	if (ocsp_check_response(der, n, ca, serial, time(NULL), &r, why, sizeof(why)) != 0)
		fail_msg("a PSS/SHA-256 answer refused: %s", why);
	assert_int_equal(r.status, V_OCSP_CERTSTATUS_GOOD);
	free(der);
	der = pss_answer(ca, key, serial, EVP_sha1(), &n);
	assert_int_equal(ocsp_check_response(der, n, ca, serial, time(NULL), &r, why, sizeof(why)),
			 -1);
	assert_non_null(strstr(why, "SHA1"));
	free(der);
	ASN1_INTEGER_free(serial);
	X509_free(ca);
	EVP_PKEY_free(key);
}

static void test_bytes(void **state)
{
	struct test_ocsp spec = about_leaf();
	struct ocsp_result r;
	char why[300] = "";
	size_t n;
	unsigned char *der = test_ocsp_response(&spec, &n), *more = malloc(n + 1);
	uint8_t big[OCSP_RESPONSE_MAX + 1];

	(void)state;
	assert_non_null(more);
	memcpy(more, der, n);
	more[n] = 0;
	assert_int_equal(ocsp_check_response(more, n + 1, P.ca, X509_get0_serialNumber(P.leaf),
					     time(NULL), &r, why, sizeof(why)),
			 -1);
	assert_non_null(strstr(why, "not one DER"));
	assert_int_equal(ocsp_check_response(der, n - 1, P.ca, X509_get0_serialNumber(P.leaf),
					     time(NULL), &r, why, sizeof(why)),
			 -1);
	assert_int_equal(ocsp_check_response(der, 0, P.ca, X509_get0_serialNumber(P.leaf),
					     time(NULL), &r, why, sizeof(why)),
			 -1);
	assert_non_null(strstr(why, "empty"));
	memset(big, 0, sizeof(big));
	assert_int_equal(ocsp_check_response(big, sizeof(big), P.ca, X509_get0_serialNumber(P.leaf),
					     time(NULL), &r, why, sizeof(why)),
			 -1);
	assert_non_null(strstr(why, "larger"));
	free(der);
	free(more);
}

/* What a certificate says: its responder, must-staple; and the request made for it. */
static void test_certificate_fields(void **state)
{
	EVP_PKEY *k1, *k2;
	X509 *with = test_cert_make(&(struct test_cert){.subject = "CN=with",
							.aia = "OCSP;URI:http://ocsp.test:8080/x",
							.tlsfeature = "status_request"},
				    P.ca, P.ca_key, &k1);
	X509 *odd = test_cert_make(
		&(struct test_cert){
			.subject = "CN=odd",
			.aia = "OCSP;URI:ldap://ocsp.test/,OCSP;URI:https://ocsp.test/"},
		P.ca, P.ca_key, &k2);
	char *url;
	uint8_t *req;
	size_t len;
	const unsigned char *p;
	OCSP_REQUEST *parsed;
	OCSP_CERTID *want;

	(void)state;
	url = ocsp_url(with);
	assert_string_equal(url, "http://ocsp.test:8080/x");
	free(url);
	url = ocsp_url(odd); /* the first http(s) one */
	assert_string_equal(url, "https://ocsp.test/");
	free(url);
	assert_null(ocsp_url(P.leaf));
	assert_true(ocsp_must_staple(with));
	assert_false(ocsp_must_staple(odd));

	assert_int_equal(ocsp_request(P.ca, X509_get0_serialNumber(with), &req, &len), 0);
	p = req;
	parsed = d2i_OCSP_REQUEST(NULL, &p, (long)len);
	assert_non_null(parsed);
	assert_ptr_equal(p, req + len);
	assert_int_equal(OCSP_request_onereq_count(parsed), 1);
	want = OCSP_cert_to_id(NULL, with, P.ca);
	assert_int_equal(
		OCSP_id_cmp(want, OCSP_onereq_get0_id(OCSP_request_onereq_get0(parsed, 0))), 0);
	/* no nonce: the answer can be cached */
	assert_int_equal(OCSP_REQUEST_get_ext_by_NID(parsed, NID_id_pkix_OCSP_Nonce, -1), -1);
	OCSP_CERTID_free(want);
	OCSP_REQUEST_free(parsed);
	free(req);
	X509_free(with);
	X509_free(odd);
	EVP_PKEY_free(k1);
	EVP_PKEY_free(k2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_revoked_unknown),
		cmocka_unit_test(test_certid_sha256_and_respid_by_key),
		cmocka_unit_test(test_delegated_responder),
		cmocka_unit_test(test_forged),
		cmocka_unit_test(test_other_certificate),
		cmocka_unit_test(test_times),
		cmocka_unit_test(test_not_successful),
		cmocka_unit_test(test_weak_signature_and_critical_extension),
		cmocka_unit_test(test_rsa_pss_signature),
		cmocka_unit_test(test_bytes),
		cmocka_unit_test(test_certificate_fields),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
