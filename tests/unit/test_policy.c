/*
 * Allow-rule matching, table-driven: URI patterns with "*" segments (and what a "*" may stand
 * for), DNS wildcards, pins; which URIs can be identities at all.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "internal.h"
#include "testutil.h"

struct match_case {
	const char *pattern;
	const char *value;
	bool match;
};

static const struct match_case uri_cases[] = {
	{"spiffe://example.org/ns/prod/sa/api", "spiffe://example.org/ns/prod/sa/api", true},
	{"spiffe://example.org/ns/*/sa/api", "spiffe://example.org/ns/prod/sa/api", true},
	{"spiffe://example.org/ns/*/sa/*", "spiffe://example.org/ns/dev/sa/web", true},
	{"SPIFFE://Example.org/ns/prod", "spiffe://example.org/ns/prod", true},
	{"spiffe://example.org/ns/prod", "spiffe://example.org/NS/prod", false},
	{"spiffe://example.org/ns/*/sa/api", "spiffe://example.org/ns//sa/api", false},
	{"spiffe://example.org/ns/*/sa/api", "spiffe://example.org/ns/a/b/sa/api", false},
	{"spiffe://example.org/ns/*", "spiffe://example.org/ns/prod/sa/api", false},
	{"spiffe://example.org/ns/*", "spiffe://example.org/ns", false},
	{"spiffe://example.org/ns/prod", "spiffe://example.org/ns/prod/", false},
	{"spiffe://example.org/ns/prod", "spiffe://example.org/ns/prodx", false},
	{"spiffe://example.org/ns/prod", "spiffe://example.org.evil/ns/prod", false},
	{"spiffe://example.org/ns/*", "spiffe://example.org/ns/a?x=1", false},
	{"spiffe://*/ns/prod", "spiffe://example.org/ns/prod", false},
	{"spiffe://example.org", "spiffe://example.org", true},
	{"spiffe://example.org", "spiffe://example.org/x", false},
	{"spiffe://example.org/a", "https://example.org/a", false},
	{"spiffe://example.org/a", "no scheme", false},
	{"spiffe://example.org/*x", "spiffe://example.org/ax", false},
	{"spiffe://example.org/*x", "spiffe://example.org/*x", true},
	/* what "*" may stand for: one plain segment, never a dot segment or an escaped '/',
	 * '\\', '.', '%' or control byte that a server decoding the path reads otherwise */
	{"spiffe://x/ns/*/sa/api", "spiffe://x/ns/./sa/api", false},
	{"spiffe://x/ns/*/sa/api", "spiffe://x/ns/../sa/api", false},
	{"spiffe://x/ns/prod/sa/*", "spiffe://x/ns/prod/sa/..", false},
	{"spiffe://x/ns/prod/sa/*", "spiffe://x/ns/prod/sa/.", false},
	{"spiffe://x/ns/prod/sa/*", "spiffe://x/ns/prod/sa/%2e%2e", false},
	{"spiffe://x/ns/prod/sa/*", "spiffe://x/ns/prod/sa/.%2E", false},
	{"spiffe://x/ns/prod/sa/*", "spiffe://x/ns/prod/sa/a%2Eb", false},
	{"spiffe://x/ns/*/sa/api", "spiffe://x/ns/a%2Fb/sa/api", false},
	{"spiffe://x/ns/*/sa/api", "spiffe://x/ns/a%2fb/sa/api", false},
	{"spiffe://x/ns/*/sa/api", "spiffe://x/ns/a%5Cb/sa/api", false},
	{"spiffe://x/ns/*/sa/api", "spiffe://x/ns/a%252Fb/sa/api", false},
	{"spiffe://x/ns/*/sa/api", "spiffe://x/ns/a%00b/sa/api", false},
	{"spiffe://x/ns/*/sa/api", "spiffe://x/ns/a%0ab/sa/api", false},
	{"spiffe://x/ns/*/sa/api", "spiffe://x/ns/a%7Fb/sa/api", false},
	{"spiffe://x/ns/*/sa/api", "spiffe://x/ns/a%2/sa/api", false},
	{"spiffe://x/ns/*/sa/api", "spiffe://x/ns/a%zzb/sa/api", false},
	{"spiffe://x/ns/*/sa/api", "spiffe://x/ns/%/sa/api", false},
	{"spiffe://x/ns/*/sa/api", "spiffe://x/ns/a\tb/sa/api", false},
	{"spiffe://x/ns/*/sa/api", "spiffe://x/ns/a\x01/sa/api", false},
	{"spiffe://x/ns/*/sa/api", "spiffe://x/ns/a\\b/sa/api", false},
	{"spiffe://x/ns/*/sa/api", "spiffe://x/ns/a b/sa/api", false},
	{"spiffe://x/ns/*/sa/api", "spiffe://x/ns/caf\xc3\xa9/sa/api", false},
	{"spiffe://x/ns/*/sa/api", "spiffe://x/ns/a#b/sa/api", false},
	/* plain segments are still fine, with dots, escapes of harmless bytes and sub-delims */
	{"spiffe://x/ns/*/sa/api", "spiffe://x/ns/a.b/sa/api", true},
	{"spiffe://x/ns/*/sa/api", "spiffe://x/ns/.../sa/api", true},
	{"spiffe://x/ns/*/sa/api", "spiffe://x/ns/a%20b/sa/api", true},
	{"spiffe://x/ns/*/sa/api", "spiffe://x/ns/a-b_c~d!$&'()*+,;=:@/sa/api", true},
	/* an exact segment still compares exactly, escapes and all */
	{"spiffe://x/ns/a%2Fb", "spiffe://x/ns/a%2Fb", true},
	{"spiffe://x/ns/a%2Fb", "spiffe://x/ns/a/b", false},
};

static const struct match_case dns_cases[] = {
	{"app1.test", "app1.test", true},
	{"APP1.test", "app1.TEST", true},
	{"app1.test.", "app1.test", true},
	{"app1.test", "app2.test", false},
	{"*.example.org", "api.example.org", true},
	{"*.example.org", "a.b.example.org", false},
	{"*.example.org", "example.org", false},
	{"*.example.org", ".example.org", false},
	{"*.example.org", "api.example.org.evil", false},
	{"*.example.org", "*.example.org", false},
	{"api.example.org", "*.example.org", false},
	{"", "x", false},
};

static void test_uri(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(uri_cases) / sizeof(uri_cases[0]); i++)
		if (policy_uri_match(uri_cases[i].pattern, uri_cases[i].value) !=
		    uri_cases[i].match)
			fail_msg("uri pattern %s vs %s: expected %s", uri_cases[i].pattern,
				 uri_cases[i].value, uri_cases[i].match ? "match" : "no match");
}

/* A "*" segment stands for at most 255 bytes, and no URI over 2048 bytes matches. */
static void test_uri_lengths(void **state)
{
	static const struct {
		const char *pattern;
		size_t segment; /* length of the last segment of the URI */
		bool match;
	} cases[] = {
		{"spiffe://x/ns/prod/sa/*", 1, true},
		{"spiffe://x/ns/prod/sa/*", 255, true},
		{"spiffe://x/ns/prod/sa/*", 256, false},
		{"spiffe://x/ns/prod/sa/*", 17000, false},
		{"spiffe://x/*", 2048 - 11 + 1, false}, /* 2049 bytes in all */
		{"spiffe://x/*", 255, true},
	};
	char uri[20000];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t head = strlen(cases[i].pattern) - 1;

		memcpy(uri, cases[i].pattern, head);
		memset(uri + head, 'a', cases[i].segment);
		uri[head + cases[i].segment] = '\0';
		if (policy_uri_match(cases[i].pattern, uri) != cases[i].match)
			fail_msg("%s vs a last segment of %zu bytes: expected %s", cases[i].pattern,
				 cases[i].segment, cases[i].match ? "match" : "no match");
	}
	/* exact rules too: a URI of 2048 bytes matches itself, one of 2049 nothing */
	memcpy(uri, "spiffe://x/", 11);
	memset(uri + 11, 'b', 2048 - 11);
	uri[2048] = '\0';
	assert_true(policy_uri_match(uri, uri));
	uri[2048] = 'b';
	uri[2049] = '\0';
	assert_false(policy_uri_match(uri, uri));
}

/* A certificate whose only SAN is the URI of len bytes (self-signed, from testutil). */
static X509 *cert_with_uri(const char *uri, size_t len)
{
	struct test_cert spec = {.subject = "CN=uri", .san = ""};
	GENERAL_NAMES *gens = GENERAL_NAMES_new();
	GENERAL_NAME *g = GENERAL_NAME_new();
	ASN1_IA5STRING *v = ASN1_IA5STRING_new();
	EVP_PKEY *key;
	X509 *cert = test_cert_make(&spec, NULL, NULL, &key);

	assert_int_equal(ASN1_STRING_set(v, uri, (int)len), 1);
	GENERAL_NAME_set0_value(g, GEN_URI, v);
	assert_true(sk_GENERAL_NAME_push(gens, g) > 0);
	assert_int_equal(X509_add1_ext_i2d(cert, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT),
			 1);
	assert_true(X509_sign(cert, key, EVP_sha256()) > 0);
	GENERAL_NAMES_free(gens);
	EVP_PKEY_free(key);
	return cert;
}

/* URIs that cannot be identities refuse the certificate when its identity is extracted,
 * whatever the allow rules: SPIFFE IDs by the SPIFFE ID rules, and in any URI no dot
 * segment, no escaped '/', '\\', '.' or '%', no control byte, at most 2048 bytes. */
static void test_uri_identities(void **state)
{
	static const struct {
		const char *uri;
		const char *why; /* NULL: a valid identity */
	} cases[] = {
		{"spiffe://test.mtls/ns/prod/sa/app1", NULL},
		{"spiffe://test.mtls", NULL},
		{"spiffe://test.mtls/a.b/c-d_e/F", NULL},
		{"spiffe://test.mtls/ns/../sa/app1", "'..' path segment"},
		{"spiffe://test.mtls/ns/./sa", "'.' or '..'"},
		{"spiffe://test.mtls/ns//sa", "empty path segment"},
		{"spiffe://test.mtls/ns/sa/", "empty path segment"},
		{"spiffe://Test.mtls/ns", "trust domain"},
		{"spiffe://test.mtls:8443/ns", "trust domain"},
		{"spiffe://user@test.mtls/ns", "trust domain"},
		{"spiffe:///ns", "no trust domain"},
		{"spiffe://test.mtls/a%2Fb", "path may hold only"},
		{"spiffe://test.mtls/a%2e%2e", "path may hold only"},
		{"spiffe://test.mtls/ns?x", "path may hold only"},
		{"spiffe://test.mtls/ns\tx", "control byte"},
		{"https://app.test/a/b?x=../y", NULL},
		{"https://app.test/a%20b", NULL},
		{"urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66", NULL},
		{"urn:x:a/b", NULL},
		/* no authority: the segments are still checked (found by fuzz_identity) */
		{"spif/..//example.org/ns", "'.' or '..' path segment"},
		{"urn:x/./y", "'.' or '..' path segment"},
		{"https://app.test/a/../b", "'.' or '..' path segment"},
		{"https://app.test/a/.", "'.' or '..' path segment"},
		{"https://app.test/a/%2e%2E/b", "escapes"},
		{"https://app.test/a%2Fb", "escapes"},
		{"https://app.test/a%5cb", "escapes"},
		{"https://app.test/a%25b", "escapes"},
		{"https://app.test/a%0d%0ab", "escapes"},
		{"https://app.test/a%2", "broken %-escape"},
		{"https://app.test/a\x7f", "control byte"},
	};
	char long_uri[2100];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]) + 2; i++) {
		const char *uri, *why;
		struct error err;
		struct mtls_peer *p;
		X509 *cert;

		if (i < sizeof(cases) / sizeof(cases[0])) {
			uri = cases[i].uri;
			why = cases[i].why;
		} else { /* 2048 bytes and 2049 */
			memcpy(long_uri, "https://app.test/", 17);
			memset(long_uri + 17, 'x', sizeof(long_uri) - 17);
			long_uri[i == sizeof(cases) / sizeof(cases[0]) ? 2048 : 2049] = '\0';
			uri = long_uri;
			why = i == sizeof(cases) / sizeof(cases[0]) ? NULL : "longer than 2048";
		}
		cert = cert_with_uri(uri, strlen(uri));
		error_clear(&err);
		p = identity_from_cert(cert, &err);
		if (why == NULL && (p == NULL || strcmp(mtls_peer_identity(p), uri) != 0))
			fail_msg("%.60s: refused (%s)", uri, err.msg);
		if (why != NULL && (p != NULL || err.reason != MTLS_REASON_BAD_CERTIFICATE ||
				    strstr(err.msg, why) == NULL ||
				    strstr(err.msg, "cannot be an identity") == NULL))
			fail_msg("%.60s: expected a refusal with '%s', got %s (%s)", uri, why,
				 p != NULL ? "a peer" : mtls_reason_name(err.reason), err.msg);
		/* the message shows the name, with control bytes escaped */
		if (p == NULL)
			for (const char *m = err.msg; *m != '\0'; m++)
				assert_true(*m >= 0x20 && *m < 0x7f);
		identity_free(p);
		X509_free(cert);
	}
}

static const struct match_case email_cases[] = {
	{"alice@example.org", "alice@example.org", true},
	{"alice@example.org", "alice@EXAMPLE.org", true},
	{"alice@Example.ORG", "alice@example.org", true},
	{"alice@example.org", "Alice@example.org", false}, /* the local part is exact */
	{"alice@example.org", "bob@example.org", false},
	{"alice@example.org", "alice@example.org.", false},
	{"alice@example.org", "alice@example.org@evil.test", false},
	{"alice@example.org", "alice@evil.test", false},
	{"*@example.org", "bob@example.org", true},
	{"*@example.org", "bob@Example.Org", true},
	{"*@example.org", "\"a@b\"@example.org", true}, /* the domain follows the last '@' */
	{"*@example.org", "bob@sub.example.org", false},
	{"*@example.org", "bob@example.org.evil", false},
	{"*@example.org", "bob@xexample.org", false},
	{"*@example.org", "@example.org", false},
	{"*@example.org", "example.org", false},
	{"*@example.org", "bob@", false},
	{"*@example.org", "", false},
	{"*@example.org", "*@example.org", true},
	{"bob@example.org", "*@example.org", false},
};

static void test_email(void **state)
{
	struct mtls_config *cfg = mtls_config_new();
	static const char *const bad[] = {
		"nope", "@example.org", "a@", "a*@example.org", "*@*.example.org", "*a@example.org",
		"a b@example.org", "",
		/* no certificate could hold these (strict_email_ok()) */
		"\"a@b\"@x.test", "a@b@x.test", "a.@x.test", "a@x.test.", "a@bad_domain.test", "*@",
		"*@x.test.", "a\n@x.test", NULL};
	static const char *const good[] = {"*@example.org", "alice@example.org",
					   "first.last+tag@Sub.Example.org", "*@EXAMPLE.org"};

	(void)state;
	for (size_t i = 0; i < sizeof(email_cases) / sizeof(email_cases[0]); i++)
		if (policy_email_match(email_cases[i].pattern, email_cases[i].value) !=
		    email_cases[i].match)
			fail_msg("email pattern %s vs %s: expected %s", email_cases[i].pattern,
				 email_cases[i].value, email_cases[i].match ? "match" : "no match");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (mtls_config_allow_email(cfg, bad[i]) != -1)
			fail_msg("allow email '%s' was accepted", bad[i] != NULL ? bad[i] : "NULL");
		assert_int_equal(mtls_config_error_reason(cfg), MTLS_REASON_USAGE);
	}
	assert_non_null(strstr(mtls_config_error(cfg), "*@example.org"));
	/* the refused pattern is shown escaped */
	assert_int_equal(mtls_config_allow_email(cfg, "a\nb@x.test"), -1);
	assert_non_null(strstr(mtls_config_error(cfg), "allow email a\\x0ab@x.test: expected"));
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_int_equal(mtls_config_allow_email(cfg, good[i]), 0);
	mtls_config_free(cfg);
}

static void test_dns(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(dns_cases) / sizeof(dns_cases[0]); i++)
		if (policy_dns_match(dns_cases[i].pattern, dns_cases[i].value) !=
		    dns_cases[i].match)
			fail_msg("dns pattern %s vs %s: expected %s", dns_cases[i].pattern,
				 dns_cases[i].value, dns_cases[i].match ? "match" : "no match");
}

static void test_pins(void **state)
{
	uint8_t a[32], b[32];

	(void)state;
	assert_int_equal(
		policy_parse_pin("00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF",
				 a),
		0);
	assert_int_equal(a[0], 0x00);
	assert_int_equal(a[31], 0xff);
	assert_int_equal(policy_parse_pin("00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:"
					  "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff",
					  b),
			 0);
	assert_memory_equal(a, b, 32);
	/* base64 of the same 32 bytes */
	assert_int_equal(policy_parse_pin("ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v8=", b), 0);
	assert_memory_equal(a, b, 32);
	assert_int_equal(policy_parse_pin("", b), -1);
	assert_int_equal(policy_parse_pin("0011", b), -1);
	assert_int_equal(
		policy_parse_pin(
			"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff00", b),
		-1);
	assert_int_equal(
		policy_parse_pin("g0112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
				 b),
		-1);
	assert_int_equal(policy_parse_pin("ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v8", b), -1);
	/* typos that would configure a pin that never matches are refused */
	assert_int_equal(policy_parse_pin("============================================", b), -1);
	assert_int_equal(policy_parse_pin("ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v==", b), -1);
	assert_int_equal(policy_parse_pin("ABEiM0RVZneImaq7zN3u/wAR=jNEVWZ3iJmqu8zd7v8=", b), -1);
	assert_int_equal(policy_parse_pin("ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v9=", b), -1);
	assert_int_equal(policy_parse_pin("00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:"
					  "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:",
					  b),
			 -1);
	assert_int_equal(policy_parse_pin("00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:"
					  "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:eeff",
					  b),
			 -1);
}

static int refuse_all(const struct mtls_peer *peer, void *arg, char *why, size_t len)
{
	(void)peer;
	(void)arg;
	(void)why;
	(void)len;
	return 0;
}

/* Refusals show the peer's names escaped, so that no byte of them breaks the one-line
 * message (identity.c refuses such certificates first; a message does not rely on it). */
static void test_refusal_escapes_names(void **state)
{
	static char uri[] = "spiffe://x/a\nrefused: forged", dns[] = "a\x1b[2J.test",
		    email[] = "x\naccepted: spiffe://ex.org/admin\n@ok.test",
		    identity[] = "evil\r\naccepted: x", cn[] = "evil\nrefused: forged line",
		    serial[] = "01";
	static char *uris[] = {uri}, *dnss[] = {dns}, *emails[] = {email};
	struct mtls_peer peer = {.identity = identity,
				 .cn = cn,
				 .serial = serial,
				 .spki_sha256 = "00",
				 .cert_sha256 = "00",
				 .uris = {uris, 1},
				 .dns = {dnss, 1},
				 .emails = {emails, 1}};
	struct mtls_config *cfg[3] = {mtls_config_new(), mtls_config_new(), mtls_config_new()};
	const char *expect[3] = {
		"identity evil\\x0d\\x0aaccepted: x (URI:spiffe://x/a\\x0arefused: forged, "
		"DNS:a\\x1b[2J.test, email:x\\x0aaccepted: spiffe://ex.org/admin\\x0a@ok.test, "
		"CN=evil\\x0arefused: forged line, serial 01)",
		"identity evil\\x0d\\x0aaccepted: x)", "identity evil\\x0d\\x0aaccepted: x"};

	(void)state;
	assert_int_equal(mtls_config_allow_email(cfg[0], "*@other.test"), 0);
	assert_int_equal(mtls_config_allow_spki_sha256(cfg[1], "ABEiM0RVZneImaq7zN3u/"
							       "wARIjNEVWZ3iJmqu8zd7v8="),
			 0);
	assert_int_equal(mtls_config_set_authz_cb(cfg[2], refuse_all, NULL), 0);
	for (int i = 0; i < 3; i++) {
		struct error err = {0};
		struct policy *pol = policy_new(cfg[i], &err);

		assert_non_null(pol);
		assert_int_equal(policy_check(pol, &peer, "client", &err), -1);
		if (strstr(err.msg, expect[i]) == NULL)
			fail_msg("case %d: %s", i, err.msg);
		for (const char *m = err.msg; *m != '\0'; m++)
			assert_true(*m >= 0x20 && *m < 0x7f);
		free(peer.matched_rule);
		peer.matched_rule = NULL;
		policy_free(pol);
		mtls_config_free(cfg[i]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_uri),
		cmocka_unit_test(test_uri_lengths),
		cmocka_unit_test(test_uri_identities),
		cmocka_unit_test(test_dns),
		cmocka_unit_test(test_email),
		cmocka_unit_test(test_pins),
		cmocka_unit_test(test_refusal_escapes_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
