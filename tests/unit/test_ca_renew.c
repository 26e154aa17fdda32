/*
 * svc_renew: a renewal is judged by the inventory (present, the same bytes, unrevoked,
 * unexpired), carries the old profile, names and CN re-checked against today's rules, a new
 * key unless allowed otherwise, and is audited; refusals too. A real CA in a temporary
 * directory.
 */
#include "svc_testca.h"
#include "testutil.h"

#define SPIFFE "spiffe://test.mtls/ns/prod/sa/app1"

static const char *const client_names[] = {"URI:" SPIFFE, "DNS:app1.test", "IP:2001:db8::1", NULL};
#define ALL_NAMES "URI:" SPIFFE ", DNS:app1.test, IP:2001:db8::1"

struct fixture {
	struct testca t;
	struct authority *ca;
	EVP_PKEY *old_key;
	X509 *old; /* a client certificate for client_names, valid for a day from an hour ago */
	time_t now;
	struct svc_policy p;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	testca_make(&f->t, "renewtest");
	f->ca = testca_open(&f->t);
	f->now = time(NULL);
	f->old_key = testca_key();
	f->old = testca_issue(f->ca, "client", client_names, f->old_key, f->now - 3600,
			      f->now + 86400);
	f->p.leaf_seconds = 12 * 3600;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	testca_check(f->ca); /* whatever happened, the audit chain and inventory agree */
	X509_free(f->old);
	EVP_PKEY_free(f->old_key);
	authority_close(f->ca);
	testca_remove(&f->t);
	free(f);
	return 0;
}

/* Renew f->old with a CSR for key asking for san (NULL: none) and cn. */
static int renew(struct fixture *f, X509 *peer, EVP_PKEY *key, const char *cn, const char *san,
		 bool ca_true, bool same_key_ok, time_t now, struct svc_issued *out,
		 struct svc_error *e)
{
	size_t len;
	char *csr = testca_csr(key, cn, san, ca_true, &len);
	int rc = svc_renew(f->ca, &f->p, peer, csr, len, same_key_ok, now, "renew@192.0.2.1", out,
			   e);

	free(csr);
	return rc;
}

static void test_success(void **state)
{
	struct fixture *f = *state;
	EVP_PKEY *key = testca_key();
	struct svc_issued out;
	struct svc_error e;
	struct store_cert c;
	char old_serial[64], spki[65], new_spki[65];
	X509 *leaf;
	int before = testca_certs(f->ca);

	issue_serial_hex(f->old, old_serial, sizeof(old_serial));
	if (renew(f, f->old, key, NULL, "URI:" SPIFFE ", DNS:app1.test, IP:2001:db8::1", false,
		  false, f->now, &out, &e) != 0)
		fail_msg("renew: %d %s: %s", e.status, e.code, e.message);
	assert_int_equal(testca_certs(f->ca), before + 1);
	assert_string_not_equal(out.serial, old_serial);
	assert_string_equal(out.profile, "client");
	assert_string_equal(out.names, ALL_NAMES);
	/* not_before backdated as mtls ca issue does, the policy's lifetime */
	assert_int_equal(out.not_before, f->now - ISSUANCE_BACKDATE);
	assert_int_equal(out.not_after, out.not_before + f->p.leaf_seconds);
	assert_int_equal(out.renew_after, out.not_before + f->p.leaf_seconds * 2 / 3);

	leaf = testca_verify_chain(f->ca, out.chain_pem, X509_PURPOSE_SSL_CLIENT, f->now);
	assert_string_equal(testca_sans(leaf), "URI:" SPIFFE ", DNS:app1.test, IP:16 bytes");
	assert_string_equal(testca_cn(leaf), testca_cn(f->old));
	issue_serial_hex(leaf, spki, sizeof(spki)); /* the serial the chain carries */
	assert_string_equal(spki, out.serial);
	issue_spki_sha256(leaf, new_spki);
	issue_key_sha256(key, spki);
	assert_string_equal(new_spki, spki);

	/* the old certificate stays valid; the new one is in the inventory as a client one */
	assert_int_equal(store_get_cert(f->ca->store, old_serial, &c), 0);
	assert_false(c.revoked);
	assert_int_equal(store_get_cert(f->ca->store, out.serial, &c), 0);
	assert_string_equal(c.profile, "client");
	assert_string_equal(c.sans, ALL_NAMES);

	/* audited: old serial -> new serial, by whom */
	assert_int_equal(testca_audit_count(&f->t, "renew"), 1);
	assert_non_null(strstr(testca_audit_last(&f->t, "renew"), "renew@192.0.2.1"));
	assert_non_null(strstr(testca_audit_last(&f->t, "renew"), out.serial));
	assert_non_null(strstr(testca_audit_last(&f->t, "renew"), old_serial));

	/* the renewed certificate renews in turn */
	{
		EVP_PKEY *key2 = testca_key();
		struct svc_issued out2;

		assert_int_equal(
			renew(f, leaf, key2, NULL, "URI:" SPIFFE, false, false, f->now, &out2, &e),
			0);
		/* fewer names asked: the certificate keeps all of them */
		assert_string_equal(out2.names, ALL_NAMES);
		svc_issued_free(&out2);
		EVP_PKEY_free(key2);
	}
	X509_free(leaf);
	svc_issued_free(&out);
	EVP_PKEY_free(key);
}

/* The lifetime is cut at the issuing CA's notAfter. */
static void test_capped(void **state)
{
	struct fixture *f = *state;
	EVP_PKEY *key = testca_key();
	struct svc_issued out;
	struct svc_error e;
	time_t end = issuance_issuer_end(f->ca);

	f->p.leaf_seconds = SVC_LEAF_MAX;
	/* a certificate made to live until the CA ends, renewed a day before the end */
	X509_free(f->old);
	f->old = testca_issue(f->ca, "client", client_names, f->old_key, f->now, end);
	assert_int_equal(
		renew(f, f->old, key, NULL, "URI:" SPIFFE, false, false, end - 86400, &out, &e), 0);
	assert_int_equal(out.not_after, end);
	svc_issued_free(&out);
	/* an hour before the end: nothing worth issuing */
	testca_expect(renew(f, f->old, key, NULL, "URI:" SPIFFE, false, false, end - 60, &out, &e),
		      &e, 503, "ca_expired", "mtls ca renew-issuer");
	EVP_PKEY_free(key);
}

static void test_revoked(void **state)
{
	struct fixture *f = *state;
	EVP_PKEY *key = testca_key();
	struct svc_issued out;
	struct svc_error e;
	char serial[64];
	int before;

	issue_serial_hex(f->old, serial, sizeof(serial));
	assert_int_equal(store_begin(f->ca->store), 0);
	assert_int_equal(store_revoke_audited(f->ca->store, serial, "superseded", f->now, "tester"),
			 0);
	assert_int_equal(store_commit(f->ca->store), 0);
	before = testca_certs(f->ca);
	testca_expect(renew(f, f->old, key, NULL, "URI:" SPIFFE, false, false, f->now, &out, &e),
		      &e, 403, "cert_revoked", "enroll again");
	assert_int_equal(testca_certs(f->ca), before);
	assert_null(out.chain_pem);
	assert_int_equal(testca_audit_count(&f->t, "renew-refused"), 1);
	assert_non_null(strstr(testca_audit_last(&f->t, "renew-refused"), serial));
	EVP_PKEY_free(key);
}

static void test_expired(void **state)
{
	struct fixture *f = *state;
	EVP_PKEY *key = testca_key();
	struct svc_issued out;
	struct svc_error e;
	time_t na = certfields_time(X509_get0_notAfter(f->old));

	testca_expect(renew(f, f->old, key, NULL, "URI:" SPIFFE, false, false, na, &out, &e), &e,
		      403, "cert_expired", "re-enroll with a token");
	testca_expect(renew(f, f->old, key, NULL, "URI:" SPIFFE, false, false, na + 3600, &out, &e),
		      &e, 403, "cert_expired", NULL);
	/* a second before: still renews */
	assert_int_equal(renew(f, f->old, key, NULL, "URI:" SPIFFE, false, false, na - 1, &out, &e),
			 0);
	svc_issued_free(&out);
	EVP_PKEY_free(key);
}

/* A certificate of another CA, and one of this issuer that the inventory does not hold. */
static void test_unknown(void **state)
{
	struct fixture *f = *state;
	struct testca other;
	struct authority *oca;
	EVP_PKEY *key = testca_key(), *okey = testca_key();
	struct svc_issued out;
	struct svc_error e;
	X509 *foreign;
	int before = testca_certs(f->ca);

	testca_make(&other, "othertest");
	oca = testca_open(&other);
	foreign = testca_issue(oca, "client", client_names, okey, f->now - 60, f->now + 3600);
	testca_expect(renew(f, foreign, key, NULL, "URI:" SPIFFE, false, false, f->now, &out, &e),
		      &e, 403, "cert_unknown", "not in this CA's inventory");
	assert_int_equal(testca_certs(f->ca), before);
	X509_free(foreign);
	authority_close(oca);
	testca_remove(&other);
	EVP_PKEY_free(okey);
	EVP_PKEY_free(key);
}

/* Same serial and issuer, other bytes: made with the issuing key but never recorded (a
 * second certificate under one serial, as a stolen or misused issuing key would make). */
static void test_der_mismatch(void **state)
{
	struct fixture *f = *state;
	EVP_PKEY *key = testca_key(), *forged_key = NULL;
	struct svc_issued out;
	struct svc_error e;
	char serial[64];
	struct test_cert spec = {.subject = "CN=app1", .san = "URI:" SPIFFE ", DNS:admin.test"};
	X509 *forged;
	int before = testca_certs(f->ca);

	issue_serial_hex(f->old, serial, sizeof(serial));
	spec.serial = serial;
	forged = test_cert_make(&spec, f->ca->issuer, f->ca->issuer_key, &forged_key);
	{
		char s2[64];

		issue_serial_hex(forged, s2, sizeof(s2));
		assert_string_equal(s2, serial);
	}
	testca_expect(renew(f, forged, key, NULL, "URI:" SPIFFE, false, false, f->now, &out, &e),
		      &e, 403, "cert_unknown", "not the one this CA issued");
	assert_int_equal(testca_certs(f->ca), before);
	X509_free(forged);
	EVP_PKEY_free(forged_key);
	EVP_PKEY_free(key);
}

static void test_same_key(void **state)
{
	struct fixture *f = *state;
	struct svc_issued out;
	struct svc_error e;
	int before = testca_certs(f->ca);

	testca_expect(
		renew(f, f->old, f->old_key, NULL, "URI:" SPIFFE, false, false, f->now, &out, &e),
		&e, 400, "same_key", "make a new key");
	assert_int_equal(testca_certs(f->ca), before);
	assert_int_equal(
		renew(f, f->old, f->old_key, NULL, "URI:" SPIFFE, false, true, f->now, &out, &e),
		0);
	assert_int_equal(testca_certs(f->ca), before + 1);
	svc_issued_free(&out);
}

static void test_csr_asks_more(void **state)
{
	struct fixture *f = *state;
	EVP_PKEY *key = testca_key();
	struct svc_issued out;
	struct svc_error e;
	int before = testca_certs(f->ca);

	testca_expect(renew(f, f->old, key, NULL, "URI:" SPIFFE ", DNS:admin.test", false, false,
			    f->now, &out, &e),
		      &e, 403, "csr_not_granted", "admin.test");
	assert_non_null(strstr(e.message, "the certificate being renewed does not carry it"));
	testca_expect(renew(f, f->old, key, NULL, "URI:" SPIFFE, true, false, f->now, &out, &e), &e,
		      403, "csr_not_granted", "CA:TRUE");
	testca_expect(
		renew(f, f->old, key, "other CN", "URI:" SPIFFE, false, false, f->now, &out, &e),
		&e, 403, "csr_not_granted", "common name");
	/* no client certificate */
	assert_int_equal(svc_renew(f->ca, &f->p, NULL, "junk", 4, false, f->now, "t", &out, &e),
			 -1);
	assert_int_equal(e.status, 401);
	/* a CSR that is not one */
	e.status = 0;
	assert_int_equal(svc_renew(f->ca, &f->p, f->old, "junk", 4, false, f->now, "t", &out, &e),
			 -1);
	assert_int_equal(e.status, 400);
	assert_string_equal(e.code, "csr_malformed");
	assert_int_equal(testca_certs(f->ca), before);
	assert_int_equal(testca_audit_count(&f->t, "renew-refused"), 4);
	EVP_PKEY_free(key);
}

/* A name the CA issued once but no longer would (here: an underscore, which the DNS rules
 * refuse; put in behind grant_add_dns's back, as an older CA version might have). */
static void test_policy_changed(void **state)
{
	struct fixture *f = *state;
	EVP_PKEY *key = testca_key();
	struct svc_issued out;
	struct svc_error e;
	struct grant g;
	char err[256];
	GENERAL_NAME *gn = GENERAL_NAME_new();
	ASN1_IA5STRING *s = ASN1_IA5STRING_new();
	X509 *old;
	int before;

	assert_int_equal(grant_init(&g, "client", GRANT_OPERATOR, err, sizeof(err)), 0);
	assert_int_equal(grant_add_uri(&g.names, SPIFFE, err, sizeof(err)), 0);
	assert_int_equal(ASN1_STRING_set(s, "old_style.test", -1), 1);
	GENERAL_NAME_set0_value(gn, GEN_DNS, s);
	assert_true(sk_GENERAL_NAME_push(g.names.names, gn) > 0);
	old = testca_issue_grant(f->ca, &g, f->old_key, f->now - 60, f->now + 3600);
	grant_free(&g);
	before = testca_certs(f->ca);
	testca_expect(renew(f, old, key, NULL, "URI:" SPIFFE, false, false, f->now, &out, &e), &e,
		      403, "policy_changed", "old_style.test");
	assert_int_equal(testca_certs(f->ca), before);
	X509_free(old);
	EVP_PKEY_free(key);
}

/* A key revoked for keyCompromise is not signed for again, even on renewal. */
static void test_compromised_key(void **state)
{
	struct fixture *f = *state;
	EVP_PKEY *bad = testca_key();
	X509 *other = testca_issue(f->ca, "client", client_names, bad, f->now - 60, f->now + 3600);
	struct svc_issued out;
	struct svc_error e;
	char serial[64];

	issue_serial_hex(other, serial, sizeof(serial));
	assert_int_equal(store_begin(f->ca->store), 0);
	assert_int_equal(
		store_revoke_audited(f->ca->store, serial, "keyCompromise", f->now, "tester"), 0);
	assert_int_equal(store_commit(f->ca->store), 0);
	testca_expect(renew(f, f->old, bad, NULL, "URI:" SPIFFE, false, false, f->now, &out, &e),
		      &e, 403, "key_compromised", serial);
	X509_free(other);
	EVP_PKEY_free(bad);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_success, setup, teardown),
		cmocka_unit_test_setup_teardown(test_capped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_revoked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expired, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown, setup, teardown),
		cmocka_unit_test_setup_teardown(test_der_mismatch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_same_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_csr_asks_more, setup, teardown),
		cmocka_unit_test_setup_teardown(test_policy_changed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compromised_key, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
