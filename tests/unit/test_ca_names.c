/*
 * The CA's validation of names before anything is signed, table-driven.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "issue.h"

struct name_case {
	char kind; /* 'd' DNS, 'i' IP, 'u' URI */
	const char *value;
	bool ok;
};

static const struct name_case cases[] = {
	{'d', "localhost", true},
	{'d', "db.example.org", true},
	{'d', "*.example.org", true},
	{'d', "xn--bcher-kva.example", true},
	{'d', "a-b.c-d.e", true},
	{'d', "", false},
	{'d', "bad_name", false},
	{'d', "-lead.example", false},
	{'d', "trail-.example", false},
	{'d', "double..dot", false},
	{'d', "*", false},
	{'d', "a.*.example", false},
	{'d', "sp ace.example", false},
	{'d', "0123456789012345678901234567890123456789012345678901234567890123.x", false},
	{'i', "127.0.0.1", true},
	{'i', "::1", true},
	{'i', "fe80::1", true},
	{'i', "300.1.1.1", false},
	{'i', "1.2.3", false},
	{'i', "localhost", false},
	{'u', "spiffe://example.org/ns/prod/sa/api", true},
	{'u', "spiffe://example.org", true},
	{'u', "https://example.org/a?b=c", true},
	{'u', "urn://x", true},
	{'u', "spiffe://Example.org/x", false},
	{'u', "spiffe://example.org/", false},
	{'u', "spiffe://example.org/a//b", false},
	{'u', "spiffe://example.org/a?q", false},
	{'u', "spiffe:///path", false},
	{'u', "not a uri", false},
	{'u', "://x", false},
	{'u', "1http://x", false},
	{'u', "http://x/\"quote", false},
	{'u', "http://x/sp ace", false},
};

static void test_names(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct issue_names n;
		char err[512] = "";
		int rc;

		issue_names_init(&n);
		rc = cases[i].kind == 'd'   ? issue_add_dns(&n, cases[i].value, err, sizeof(err))
		     : cases[i].kind == 'i' ? issue_add_ip(&n, cases[i].value, err, sizeof(err))
					    : issue_add_uri(&n, cases[i].value, err, sizeof(err));
		if ((rc == 0) != cases[i].ok)
			fail_msg("%c '%s': expected %s (%s)", cases[i].kind, cases[i].value,
				 cases[i].ok ? "accepted" : "refused", err);
		if (rc != 0)
			assert_true(strlen(err) > 10);
		else
			assert_int_equal(sk_GENERAL_NAME_num(n.names), 1);
		issue_names_free(&n);
	}
}

static void test_names_text(void **state)
{
	struct issue_names n;
	char err[256];

	(void)state;
	issue_names_init(&n);
	assert_int_equal(issue_add_dns(&n, "DB.Example.org", err, sizeof(err)), 0);
	assert_int_equal(issue_add_ip(&n, "10.0.0.1", err, sizeof(err)), 0);
	assert_int_equal(issue_add_uri(&n, "spiffe://example.org/db", err, sizeof(err)), 0);
	assert_string_equal(n.text, "DNS:db.example.org, IP:10.0.0.1, URI:spiffe://example.org/db");
	assert_string_equal(n.first, "db.example.org");
	assert_int_equal(n.ndns + n.nip + n.nuri, 3);
	issue_names_free(&n);
}

static void test_profiles(void **state)
{
	enum issue_kind k;

	(void)state;
	assert_int_equal(issue_profile("server", &k), 0);
	assert_int_equal(k, ISSUE_SERVER);
	assert_int_equal(issue_profile("client", &k), 0);
	assert_int_equal(k, ISSUE_CLIENT);
	assert_int_equal(issue_profile("peer", &k), 0);
	assert_int_equal(k, ISSUE_PEER);
	assert_int_equal(issue_profile("ca", &k), -1);
	assert_string_equal(issue_profile_name(ISSUE_PEER), "peer");
}

/* A CSR signed with a fresh P-256 key asking for the names in sans (taken), as DER. */
static unsigned char *csr_der(GENERAL_NAMES *sans, int *len)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509_REQ *req = X509_REQ_new();
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	unsigned char *der = NULL;

	assert_non_null(key);
	assert_non_null(req);
	assert_int_equal(X509_REQ_set_pubkey(req, key), 1);
	if (sans != NULL) {
		assert_int_equal(X509V3_add1_i2d(&exts, NID_subject_alt_name, sans, 0, 0), 1);
		assert_int_equal(X509_REQ_add_extensions(req, exts), 1);
	}
	assert_true(X509_REQ_sign(req, key, EVP_sha256()) > 0);
	*len = i2d_X509_REQ(req, &der);
	assert_true(*len > 0);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	GENERAL_NAMES_free(sans);
	X509_REQ_free(req);
	EVP_PKEY_free(key);
	return der;
}

/* An iPAddress SAN of len bytes (0x0a, 0x0b, ...). */
static GENERAL_NAMES *ip_san(int len)
{
	GENERAL_NAMES *gens = GENERAL_NAMES_new();
	GENERAL_NAME *g = GENERAL_NAME_new();
	ASN1_OCTET_STRING *v = ASN1_OCTET_STRING_new();
	unsigned char b[32];

	for (int i = 0; i < len; i++)
		b[i] = (unsigned char)(10 + i);
	assert_int_equal(ASN1_OCTET_STRING_set(v, b, len), 1);
	GENERAL_NAME_set0_value(g, GEN_IPADD, v);
	assert_true(sk_GENERAL_NAME_push(gens, g) > 0);
	return gens;
}

/* iPAddress SANs must be 4 or 16 bytes: anything else is refused before it is formatted
 * (inet_ntop() used to read 4 bytes of a shorter one). Fails under ASan without the check. */
static void test_csr_ip_length(void **state)
{
	static const int lens[] = {0, 1, 2, 3, 4, 5, 15, 16, 17};

	(void)state;
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		struct issue_names n;
		char err[512] = "", ignored[256];
		int len;
		unsigned char *der = csr_der(ip_san(lens[i]), &len);
		EVP_PKEY *key;

		issue_names_init(&n);
		key = issue_csr_parse(der, (size_t)len, "t.csr", true, &n, ignored, sizeof(ignored),
				      err, sizeof(err));
		if (lens[i] == 4 || lens[i] == 16) {
			if (key == NULL)
				fail_msg("IP of %d bytes refused: %s", lens[i], err);
			assert_int_equal(n.nip, 1);
			assert_string_equal(
				n.text, lens[i] == 4 ? "IP:10.11.12.13"
						     : "IP:a0b:c0d:e0f:1011:1213:1415:1617:1819");
		} else {
			if (key != NULL)
				fail_msg("IP of %d bytes accepted as %s", lens[i], n.text);
			assert_non_null(strstr(err, "malformed IP address"));
			assert_int_equal(n.nip, 0);
		}
		EVP_PKEY_free(key);
		OPENSSL_free(der);
		issue_names_free(&n);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_names_text),
		cmocka_unit_test(test_profiles),
		cmocka_unit_test(test_csr_ip_length),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
