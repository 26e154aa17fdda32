/*
 * The OCSP responder (ca/ocsp.c) with a CA made by authority_create() in a temporary
 * directory: answers verify against the root alone (OCSP_basic_verify) through the
 * delegated responder certificate (OCSPSigning only, nocheck, CA:FALSE); the issuer of a
 * CertID is compared, hash by hash (a foreign CertID never gets "good"); exactly one
 * request with one CertID; cached answers are reused until two thirds of their validity
 * have passed and never once the inventory says otherwise; the responder certificate is
 * renewed with a third of its life left, and when it is revoked. The clock is moved by
 * passing `now`.
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
#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/x509v3.h>

#include "authority.h"
#include "certfields.h"
#include "issue.h"
#include "keys.h"
#include "ocsp.h"

static char dir[64];
static struct authority *ca;
static time_t t0;

static int setup(void **state)
{
	char tmp[] = "/tmp/mtls-ocsp-XXXXXX", err[512];
	struct authority_init in = {.name = "ocsp test",
				    .key_alg = "p256",
				    .root_days = 3650,
				    .intermediate_days = 1825,
				    .server_days = 90,
				    .client_days = 90,
				    .crl_days = 7,
				    .ocsp_url = "http://ocsp.example.org/ocsp"};

	(void)state;
	if (mkdtemp(tmp) == NULL)
		return -1;
	snprintf(dir, sizeof(dir), "%s/ca", tmp);
	in.dir = dir;
	if (authority_create(&in, err, sizeof(err)) != 0) {
		fprintf(stderr, "authority_create: %s\n", err);
		return -1;
	}
	ca = authority_open(dir, AUTHORITY_EXCLUSIVE, err, sizeof(err));
	if (ca == NULL || authority_load_key(ca, NULL, err, sizeof(err)) != 0) {
		fprintf(stderr, "authority_open: %s\n", err);
		return -1;
	}
	t0 = time(NULL);
	return 0;
}

static int teardown(void **state)
{
	char cmd[200];

	(void)state;
	authority_close(ca);
	snprintf(cmd, sizeof(cmd), "rm -rf \"$(dirname '%s')\"", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* A client certificate of the CA, recorded in the inventory as `mtls ca issue` does. */
static X509 *issue_leaf(const char *cn)
{
	char err[512], spki[65];
	EVP_PKEY *key = keys_generate("p256", err, sizeof(err));
	struct issue_spec spec = {.kind = ISSUE_CLIENT,
				  .cn = cn,
				  .not_before = t0 - 300,
				  .not_after = t0 + 86400 * 30,
				  .crl_url = ca->crl_url,
				  .ocsp_url = ca->ocsp_url};
	struct store_cert c = {.subject = cn, .sans = "", .profile = "client"};
	unsigned char *der = NULL;
	X509 *x;
	int len;

	assert_non_null(key);
	spec.subject_key = key;
	x = issue_sign(&spec, ca->issuer, ca->issuer_key, err, sizeof(err));
	assert_non_null(x);
	len = i2d_X509(x, &der);
	assert_true(len > 0);
	issue_serial_hex(x, c.serial, sizeof(c.serial));
	issue_spki_sha256(x, spki);
	c.spki_sha256 = spki;
	c.not_before = spec.not_before;
	c.not_after = spec.not_after;
	c.issued_at = t0;
	c.der = der;
	c.der_len = (size_t)len;
	assert_int_equal(store_begin(ca->store), 0);
	assert_int_equal(store_add_cert(ca->store, &c), 0);
	assert_int_equal(store_commit(ca->store), 0);
	OPENSSL_free(der);
	EVP_PKEY_free(key);
	return x;
}

static void revoke(X509 *x, const char *reason, time_t when)
{
	char serial[64];

	issue_serial_hex(x, serial, sizeof(serial));
	assert_int_equal(store_begin(ca->store), 0);
	assert_int_equal(store_revoke_audited(ca->store, serial, reason, when, "test"), 0);
	assert_int_equal(store_commit(ca->store), 0);
}

/* DER of an OCSPRequest holding the given CertIDs (taken); caller frees with free(). */
static unsigned char *request_of(OCSP_CERTID **ids, int n, size_t *len)
{
	OCSP_REQUEST *rq = OCSP_REQUEST_new();
	unsigned char *der = NULL, *out;
	int l;

	assert_non_null(rq);
	for (int i = 0; i < n; i++)
		assert_non_null(OCSP_request_add0_id(rq, ids[i]));
	l = i2d_OCSP_REQUEST(rq, &der);
	assert_true(l > 0);
	out = malloc((size_t)l + 1);
	assert_non_null(out);
	memcpy(out, der, (size_t)l);
	*len = (size_t)l;
	OPENSSL_free(der);
	OCSP_REQUEST_free(rq);
	return out;
}

static unsigned char *request_for(X509 *leaf, const EVP_MD *md, size_t *len)
{
	OCSP_CERTID *id = OCSP_cert_to_id(md, leaf, ca->issuer);

	assert_non_null(id);
	return request_of(&id, 1, len);
}

struct reply {
	unsigned char *der;
	size_t len;
	struct ocsp_answer meta;
	OCSP_RESPONSE *resp;
	OCSP_BASICRESP *bs; /* successful answers */
};

static void reply_free(struct reply *a)
{
	free(a->der);
	OCSP_BASICRESP_free(a->bs);
	OCSP_RESPONSE_free(a->resp);
	memset(a, 0, sizeof(*a));
}

static struct reply ask(struct ocsp_responder *r, const unsigned char *req, size_t len, time_t now)
{
	struct reply a = {0};
	const unsigned char *p;

	assert_int_equal(ocsp_respond(r, ca, req, len, now, &a.der, &a.len, &a.meta), 0);
	assert_non_null(a.der);
	p = a.der;
	a.resp = d2i_OCSP_RESPONSE(NULL, &p, (long)a.len);
	assert_non_null(a.resp);
	assert_ptr_equal(p, a.der + a.len);
	assert_int_equal(OCSP_response_status(a.resp), a.meta.status);
	if (a.meta.status == OCSP_RESPONSE_STATUS_SUCCESSFUL) {
		a.bs = OCSP_response_get1_basic(a.resp);
		assert_non_null(a.bs);
	}
	return a;
}

/* The status the answer gives leaf (OCSP_resp_find_status), -1 if none. */
static int status_of(const struct reply *a, X509 *leaf, const EVP_MD *md, int *reason,
		     time_t *revoked_at)
{
	OCSP_CERTID *id = OCSP_cert_to_id(md, leaf, ca->issuer);
	ASN1_GENERALIZEDTIME *rev = NULL, *thisupd = NULL, *nextupd = NULL;
	int status = -1, r = -1;

	assert_non_null(id);
	if (a->bs == NULL ||
	    OCSP_resp_find_status(a->bs, id, &status, &r, &rev, &thisupd, &nextupd) != 1)
		status = -1;
	if (reason != NULL)
		*reason = r;
	if (revoked_at != NULL)
		*revoked_at = rev != NULL ? certfields_time(rev) : 0;
	OCSP_CERTID_free(id);
	return status;
}

/* OCSP_basic_verify against the root alone, at time now. */
static int verify(const struct reply *a, time_t now)
{
	X509_STORE *st = X509_STORE_new();
	X509_VERIFY_PARAM *vp = X509_VERIFY_PARAM_new();
	int ok;

	assert_non_null(st);
	assert_non_null(vp);
	X509_VERIFY_PARAM_set_time(vp, now);
	assert_int_equal(X509_STORE_set1_param(st, vp), 1);
	assert_int_equal(X509_STORE_add_cert(st, ca->root), 1);
	ok = OCSP_basic_verify(a->bs, NULL, st, 0);
	ERR_clear_error();
	X509_VERIFY_PARAM_free(vp);
	X509_STORE_free(st);
	return ok;
}

/* The responder certificate an answer carries (the one that signed it). */
static X509 *signer_of(const struct reply *a)
{
	X509 *signer = NULL;

	assert_int_equal(OCSP_resp_get0_signer(a->bs, &signer, NULL), 1);
	return signer;
}

static struct ocsp_responder *responder_at(time_t now)
{
	struct ocsp_responder *r = ocsp_responder_new();
	char err[512] = "";

	assert_non_null(r);
	if (ocsp_responder_refresh(r, ca, now, err, sizeof(err)) != 0)
		fail_msg("refresh: %s", err);
	return r;
}

static void test_good_verifies(void **state)
{
	struct ocsp_responder *r = responder_at(t0);
	X509 *leaf = issue_leaf("good"), *signer;
	const EVP_MD *mds[] = {EVP_sha1(), EVP_sha256(), EVP_sha384(), EVP_sha512()};

	(void)state;
	for (size_t i = 0; i < sizeof(mds) / sizeof(mds[0]); i++) {
		size_t len;
		unsigned char *req = request_for(leaf, mds[i], &len);
		struct reply a = ask(r, req, len, t0);
		const STACK_OF(X509) * certs;

		assert_int_equal(a.meta.status, OCSP_RESPONSE_STATUS_SUCCESSFUL);
		assert_int_equal(a.meta.cert_status, V_OCSP_CERTSTATUS_GOOD);
		assert_int_equal(status_of(&a, leaf, mds[i], NULL, NULL), V_OCSP_CERTSTATUS_GOOD);
		assert_int_equal(verify(&a, t0), 1);
		assert_int_equal(a.meta.this_update, t0);
		assert_int_equal(a.meta.next_update, t0 + OCSP_ANSWER_SECONDS);
		assert_int_equal(a.meta.produced, t0);
		assert_int_equal(certfields_time(OCSP_resp_get0_produced_at(a.bs)), t0);
		assert_int_equal(strlen(a.meta.etag), 66);
		assert_true(a.meta.etag[0] == '"' && a.meta.etag[65] == '"');
		assert_false(a.meta.cached);
		/* the responder's certificate travels with the issuing CA */
		certs = OCSP_resp_get0_certs(a.bs);
		assert_int_equal(sk_X509_num(certs), 2);
		assert_int_equal(X509_cmp(sk_X509_value(certs, 1), ca->issuer), 0);
		/* signed by the delegated responder, not by the CA's key */
		signer = signer_of(&a);
		assert_int_equal(X509_cmp(signer, sk_X509_value(certs, 0)), 0);
		assert_int_equal(X509_check_issued(ca->issuer, signer), X509_V_OK);
		assert_int_equal(X509_get_extended_key_usage(signer), XKU_OCSP_SIGN);
		assert_int_equal(X509_get_key_usage(signer), KU_DIGITAL_SIGNATURE);
		assert_int_equal(X509_check_ca(signer), 0);
		assert_true(X509_get_ext_by_NID(signer, NID_id_pkix_OCSP_noCheck, -1) >= 0);
		assert_true(X509_get_ext_by_NID(signer, NID_info_access, -1) < 0);
		assert_int_equal(EVP_PKEY_get_bits(X509_get0_pubkey(signer)), 256);
		assert_int_equal(X509_check_private_key(signer, ca->issuer_key), 0);
		reply_free(&a);
		free(req);
	}
	ERR_clear_error();
	X509_free(leaf);
	ocsp_responder_free(r);
}

/* The leaves carry the OCSP URL, the responder profile is internal. */
static void test_profile(void **state)
{
	X509 *leaf = issue_leaf("aia");
	AUTHORITY_INFO_ACCESS *aia = X509_get_ext_d2i(leaf, NID_info_access, NULL, NULL);
	ACCESS_DESCRIPTION *ad;
	enum issue_kind kind;
	char err[512];
	struct issue_spec spec = {.kind = ISSUE_CLIENT,
				  .cn = "x",
				  .subject_key = X509_get0_pubkey(leaf),
				  .not_before = t0,
				  .not_after = t0 + 60,
				  .ocsp_url = "http://a,b/"};

	(void)state;
	assert_non_null(aia);
	assert_int_equal(sk_ACCESS_DESCRIPTION_num(aia), 1);
	ad = sk_ACCESS_DESCRIPTION_value(aia, 0);
	assert_int_equal(OBJ_obj2nid(ad->method), NID_ad_OCSP);
	assert_int_equal(ad->location->type, GEN_URI);
	assert_string_equal(ASN1_STRING_get0_data(ad->location->d.uniformResourceIdentifier),
			    "http://ocsp.example.org/ocsp");
	AUTHORITY_INFO_ACCESS_free(aia);
	assert_int_equal(issue_profile("ocsp", &kind), -1);
	assert_string_equal(issue_profile_name(ISSUE_OCSP), "ocsp");
	assert_null(issue_sign(&spec, ca->issuer, ca->issuer_key, err, sizeof(err)));
	assert_non_null(strstr(err, "invalid OCSP URL"));
	X509_free(leaf);
}

static void test_unknown(void **state)
{
	struct ocsp_responder *r = responder_at(t0);
	X509 *ca_certs[] = {ca->issuer, ca->root};
	ASN1_INTEGER *never = ASN1_INTEGER_new();
	OCSP_CERTID *id;
	unsigned char *req;
	size_t len;
	struct reply a;

	(void)state;
	assert_int_equal(ASN1_INTEGER_set(never, 0x123456), 1);
	id = OCSP_cert_id_new(EVP_sha1(), X509_get_subject_name(ca->issuer),
			      X509_get0_pubkey_bitstr(ca->issuer), never);
	req = request_of(&id, 1, &len);
	a = ask(r, req, len, t0);
	assert_int_equal(a.meta.status, OCSP_RESPONSE_STATUS_SUCCESSFUL);
	assert_int_equal(a.meta.cert_status, V_OCSP_CERTSTATUS_UNKNOWN);
	assert_int_equal(verify(&a, t0), 1);
	reply_free(&a);
	free(req);
	/* the inventory holds the CA certificates too; the issuing CA issued neither */
	for (size_t i = 0; i < 2; i++) {
		id = OCSP_cert_id_new(EVP_sha1(), X509_get_subject_name(ca->issuer),
				      X509_get0_pubkey_bitstr(ca->issuer),
				      X509_get0_serialNumber(ca_certs[i]));
		req = request_of(&id, 1, &len);
		a = ask(r, req, len, t0);
		assert_int_equal(a.meta.cert_status, V_OCSP_CERTSTATUS_UNKNOWN);
		reply_free(&a);
		free(req);
	}
	ASN1_INTEGER_free(never);
	ocsp_responder_free(r);
}

/* A CertID with our serial but another issuer's name or key, or another hash: never good. */
static void test_foreign_issuer(void **state)
{
	struct ocsp_responder *r = responder_at(t0);
	X509 *leaf = issue_leaf("foreign");
	const ASN1_INTEGER *serial = X509_get0_serialNumber(leaf);
	X509_NAME *other_name = X509_NAME_new();
	char err[512];
	EVP_PKEY *other_key = keys_generate("p256", err, sizeof(err));
	X509 *other = X509_new();
	OCSP_CERTID *ids[4];
	unsigned char *req;
	size_t len;
	struct reply a;

	(void)state;
	assert_non_null(other_key);
	assert_int_equal(X509_NAME_add_entry_by_txt(other_name, "CN", MBSTRING_ASC,
						    (const unsigned char *)"other", -1, -1, 0),
			 1);
	assert_int_equal(X509_set_pubkey(other, other_key), 1);
	ids[0] = OCSP_cert_id_new(EVP_sha1(), X509_get_subject_name(ca->issuer),
				  X509_get0_pubkey_bitstr(other), serial);
	ids[1] = OCSP_cert_id_new(EVP_sha256(), other_name, X509_get0_pubkey_bitstr(ca->issuer),
				  serial);
	/* the root: a CA of this authority, but not the one that issues */
	ids[2] = OCSP_cert_id_new(EVP_sha1(), X509_get_subject_name(ca->root),
				  X509_get0_pubkey_bitstr(ca->root), serial);
	/* a hash this responder does not answer for */
	ids[3] = OCSP_cert_id_new(EVP_md5(), X509_get_subject_name(ca->issuer),
				  X509_get0_pubkey_bitstr(ca->issuer), serial);
	for (int i = 0; i < 4; i++) {
		assert_non_null(ids[i]);
		req = request_of(&ids[i], 1, &len);
		a = ask(r, req, len, t0);
		assert_int_equal(a.meta.status, OCSP_RESPONSE_STATUS_UNAUTHORIZED);
		assert_int_equal(a.meta.cert_status, -1);
		assert_null(a.bs);
		reply_free(&a);
		free(req);
	}
	X509_NAME_free(other_name);
	X509_free(other);
	EVP_PKEY_free(other_key);
	X509_free(leaf);
	ocsp_responder_free(r);
}

static void expect_malformed(struct ocsp_responder *r, const unsigned char *req, size_t len)
{
	struct reply a = ask(r, req, len, t0);

	assert_int_equal(a.meta.status, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
	assert_null(a.bs);
	reply_free(&a);
}

/* Exactly one OCSPRequest with exactly one Request (RFC 5019 2.1.1). */
static void test_one_request(void **state)
{
	struct ocsp_responder *r = responder_at(t0);
	X509 *a = issue_leaf("one-a"), *b = issue_leaf("one-b");
	OCSP_CERTID *ids[2] = {OCSP_cert_to_id(NULL, a, ca->issuer),
			       OCSP_cert_to_id(NULL, b, ca->issuer)};
	unsigned char *two, *none, *one, *big;
	size_t two_len, none_len, one_len;
	struct reply ok;

	(void)state;
	two = request_of(ids, 2, &two_len);
	none = request_of(NULL, 0, &none_len);
	one = request_for(a, EVP_sha1(), &one_len);
	expect_malformed(r, two, two_len);
	expect_malformed(r, none, none_len);
	/* the same request, whole, is answered; with a byte more, cut short or empty it is not */
	ok = ask(r, one, one_len, t0);
	assert_int_equal(ok.meta.status, OCSP_RESPONSE_STATUS_SUCCESSFUL);
	reply_free(&ok);
	one[one_len] = 0;
	expect_malformed(r, one, one_len + 1);
	expect_malformed(r, one, one_len - 1);
	expect_malformed(r, one, 0);
	expect_malformed(r, (const unsigned char *)"\x30\x00", 2);
	big = calloc(1, OCSP_REQUEST_MAX + 1);
	assert_non_null(big);
	memcpy(big, one, one_len);
	expect_malformed(r, big, OCSP_REQUEST_MAX + 1);
	free(big);
	free(two);
	free(none);
	free(one);
	X509_free(a);
	X509_free(b);
	ocsp_responder_free(r);
}

/* Reused while more than a third of the validity is left, then re-signed. */
static void test_cache(void **state)
{
	struct ocsp_responder *r = responder_at(t0);
	X509 *leaf = issue_leaf("cache");
	size_t len, len256;
	unsigned char *req = request_for(leaf, EVP_sha1(), &len);
	unsigned char *req256 = request_for(leaf, EVP_sha256(), &len256);
	time_t resign = t0 + OCSP_ANSWER_SECONDS * 2 / 3;
	struct reply first = ask(r, req, len, t0), again, other, last, newer;

	(void)state;
	assert_false(first.meta.cached);
	again = ask(r, req, len, resign - 1);
	assert_true(again.meta.cached);
	assert_int_equal(again.len, first.len);
	assert_memory_equal(again.der, first.der, first.len);
	assert_string_equal(again.meta.etag, first.meta.etag);
	assert_int_equal(again.meta.this_update, t0);
	/* per hash: a SHA-256 CertID gets its own answer, naming it */
	other = ask(r, req256, len256, resign - 1);
	assert_false(other.meta.cached);
	assert_int_equal(status_of(&other, leaf, EVP_sha256(), NULL, NULL), V_OCSP_CERTSTATUS_GOOD);
	/* two thirds gone: signed anew */
	last = ask(r, req, len, resign);
	assert_false(last.meta.cached);
	assert_int_equal(last.meta.this_update, resign);
	assert_int_equal(last.meta.next_update, resign + OCSP_ANSWER_SECONDS);
	assert_string_not_equal(last.meta.etag, first.meta.etag);
	assert_int_equal(verify(&last, resign), 1);
	newer = ask(r, req, len, resign + 1);
	assert_true(newer.meta.cached);
	assert_int_equal(newer.meta.this_update, resign);
	/* a clock stepped back before thisUpdate does not get an answer not valid yet */
	reply_free(&newer);
	newer = ask(r, req, len, resign - 10);
	assert_false(newer.meta.cached);
	assert_int_equal(newer.meta.this_update, resign - 10);
	/* forget(): nothing is reused */
	ocsp_responder_forget(r);
	reply_free(&again);
	again = ask(r, req, len, resign - 10);
	assert_false(again.meta.cached);
	reply_free(&first);
	reply_free(&again);
	reply_free(&other);
	reply_free(&last);
	reply_free(&newer);
	free(req);
	free(req256);
	X509_free(leaf);
	ocsp_responder_free(r);
}

/* A revocation is answered at once: after forget(), and without it (another process). */
static void test_revocation(void **state)
{
	struct ocsp_responder *r = responder_at(t0);
	X509 *a = issue_leaf("revoke-a"), *b = issue_leaf("revoke-b");
	size_t alen, blen;
	unsigned char *areq = request_for(a, EVP_sha1(), &alen);
	unsigned char *breq = request_for(b, EVP_sha1(), &blen);
	struct reply ga = ask(r, areq, alen, t0), gb = ask(r, breq, blen, t0), ra, rb;
	int reason;
	time_t when;

	(void)state;
	assert_int_equal(ga.meta.cert_status, V_OCSP_CERTSTATUS_GOOD);
	assert_int_equal(gb.meta.cert_status, V_OCSP_CERTSTATUS_GOOD);
	revoke(a, "keyCompromise", t0 + 10);
	ocsp_responder_forget(r);
	ra = ask(r, areq, alen, t0 + 20);
	assert_int_equal(ra.meta.cert_status, V_OCSP_CERTSTATUS_REVOKED);
	assert_int_equal(status_of(&ra, a, EVP_sha1(), &reason, &when), V_OCSP_CERTSTATUS_REVOKED);
	assert_int_equal(reason, OCSP_REVOKED_STATUS_KEYCOMPROMISE);
	assert_int_equal(when, t0 + 10);
	assert_int_equal(verify(&ra, t0 + 20), 1);
	/* revoked behind the responder's back (`mtls ca revoke`): the cached good is not used */
	reply_free(&gb);
	gb = ask(r, breq, blen, t0 + 25);
	assert_int_equal(gb.meta.cert_status, V_OCSP_CERTSTATUS_GOOD);
	reply_free(&gb);
	gb = ask(r, breq, blen, t0 + 26);
	assert_true(gb.meta.cached);
	revoke(b, "unspecified", t0 + 30);
	rb = ask(r, breq, blen, t0 + 40);
	assert_false(rb.meta.cached);
	assert_int_equal(status_of(&rb, b, EVP_sha1(), &reason, &when), V_OCSP_CERTSTATUS_REVOKED);
	assert_int_equal(reason, -1); /* unspecified is left out, as in the CRL */
	assert_int_equal(when, t0 + 30);
	/* and the revoked answer is the one cached now */
	reply_free(&rb);
	rb = ask(r, breq, blen, t0 + 50);
	assert_true(rb.meta.cached);
	assert_int_equal(rb.meta.cert_status, V_OCSP_CERTSTATUS_REVOKED);
	reply_free(&ga);
	reply_free(&gb);
	reply_free(&ra);
	reply_free(&rb);
	free(areq);
	free(breq);
	X509_free(a);
	X509_free(b);
	ocsp_responder_free(r);
}

static int count_ocsp(const struct store_cert *c, void *arg)
{
	if (strcmp(c->profile, "ocsp") == 0)
		(*(int *)arg)++;
	return 0;
}

static int responders(void)
{
	int n = 0;

	assert_int_equal(store_each_cert(ca->store, STORE_ALL, 0, count_ocsp, &n), 0);
	return n;
}

/* The same responder certificate while a third of its life is left; then a new one, recorded
 * with its audit entry; a revoked one is replaced too. */
static void test_renewal(void **state)
{
	struct ocsp_responder *r = ocsp_responder_new();
	X509 *leaf = issue_leaf("renew"), *s1, *s2;
	size_t len;
	unsigned char *req = request_for(leaf, EVP_sha1(), &len);
	char err[512], serial[64];
	struct reply a, b;
	int before = responders();
	int64_t entries0, entries1, bad;
	/* lifetime: BACKDATE (300 s) before t0 to OCSP_RESPONDER_SECONDS after */
	time_t last_ok = t0 + OCSP_RESPONDER_SECONDS - (OCSP_RESPONDER_SECONDS + 300) / 3;

	(void)state;
	assert_non_null(r);
	assert_int_equal(ocsp_responder_expiry(r), 0);
	/* not refreshed yet: no signature, tryLater */
	a = ask(r, req, len, t0);
	assert_int_equal(a.meta.status, OCSP_RESPONSE_STATUS_TRYLATER);
	reply_free(&a);
	assert_int_equal(store_audit_verify(ca->store, &entries0, &bad), 0);
	assert_int_equal(ocsp_responder_refresh(r, ca, t0, err, sizeof(err)), 0);
	assert_int_equal(responders(), before + 1);
	assert_int_equal(store_audit_verify(ca->store, &entries1, &bad), 0);
	assert_int_equal(entries1, entries0 + 1);
	assert_int_equal(ocsp_responder_expiry(r), t0 + OCSP_RESPONDER_SECONDS);
	a = ask(r, req, len, t0);
	s1 = X509_dup(signer_of(&a));
	issue_serial_hex(s1, serial, sizeof(serial));
	{
		struct store_cert c;

		assert_int_equal(store_get_cert(ca->store, serial, &c), 0);
		assert_string_equal(c.profile, "ocsp");
	}
	assert_int_equal(ocsp_responder_refresh(r, ca, last_ok, err, sizeof(err)), 0);
	assert_int_equal(responders(), before + 1);
	reply_free(&a);
	/* the answer's nextUpdate never passes the responder certificate's end */
	a = ask(r, req, len, t0 + OCSP_RESPONDER_SECONDS - 100);
	assert_int_equal(a.meta.next_update, t0 + OCSP_RESPONDER_SECONDS);
	reply_free(&a);
	/* expired, not refreshed: tryLater rather than an answer nobody accepts */
	a = ask(r, req, len, t0 + OCSP_RESPONDER_SECONDS);
	assert_int_equal(a.meta.status, OCSP_RESPONSE_STATUS_TRYLATER);
	reply_free(&a);
	/* a third of its life left: renewed, and the old answers are not served */
	assert_int_equal(ocsp_responder_refresh(r, ca, last_ok + 1, err, sizeof(err)), 0);
	assert_int_equal(responders(), before + 2);
	assert_int_equal(ocsp_responder_expiry(r), last_ok + 1 + OCSP_RESPONDER_SECONDS);
	a = ask(r, req, len, last_ok + 1);
	assert_false(a.meta.cached);
	s2 = X509_dup(signer_of(&a));
	assert_int_not_equal(X509_cmp(s1, s2), 0);
	assert_int_equal(verify(&a, last_ok + 1), 1);
	reply_free(&a);
	/* the responder certificate revoked (its key compromised): the next refresh replaces
	 * it */
	revoke(s2, "keyCompromise", last_ok + 2);
	assert_int_equal(ocsp_responder_refresh(r, ca, last_ok + 3, err, sizeof(err)), 0);
	assert_int_equal(responders(), before + 3);
	b = ask(r, req, len, last_ok + 3);
	assert_int_not_equal(X509_cmp(signer_of(&b), s2), 0);
	reply_free(&b);
	X509_free(s1);
	X509_free(s2);
	free(req);
	X509_free(leaf);
	ocsp_responder_free(r);
}

/* Without the issuing key, nothing is issued. */
static void test_refresh_needs_key(void **state)
{
	struct ocsp_responder *r = ocsp_responder_new();
	EVP_PKEY *key = ca->issuer_key;
	char err[512] = "";

	(void)state;
	ca->issuer_key = NULL;
	assert_int_equal(ocsp_responder_refresh(r, ca, t0, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "key is not loaded"));
	ca->issuer_key = key;
	ocsp_responder_free(r);
	ocsp_responder_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_verifies),	  cmocka_unit_test(test_profile),
		cmocka_unit_test(test_unknown),		  cmocka_unit_test(test_foreign_issuer),
		cmocka_unit_test(test_one_request),	  cmocka_unit_test(test_cache),
		cmocka_unit_test(test_revocation),	  cmocka_unit_test(test_renewal),
		cmocka_unit_test(test_refresh_needs_key),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
