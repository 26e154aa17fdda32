/*
 * The CA's validation of names before anything is signed, table-driven.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "grant.h"
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
	/* SPIFFE IDs (spiffe/spiffe standards/SPIFFE-ID.md) */
	{'u', "spiffe://example.org/ns/prod/sa/api-1_x.y", true},
	{'u', "spiffe://my-td_1.example/A/b", true},
	{'u', "spiffe://x/ns/../sa/admin", false},
	{'u', "spiffe://x/ns/./sa", false},
	{'u', "spiffe://x/..", false},
	{'u', "spiffe://x/.", false},
	{'u', "spiffe://x/ns/..a/b", true},
	{'u', "spiffe://x/ns/.../b", true},
	{'u', "spiffe://x/ns%2Fprod/sa", false},
	{'u', "spiffe://x/ns%2fprod/sa", false},
	{'u', "spiffe://x/%2E%2E/sa", false},
	{'u', "spiffe://x/a%20b", false},
	{'u', "spiffe://x/a#frag", false},
	{'u', "spiffe://x?q", false},
	{'u', "spiffe://x/a:b", false},
	{'u', "spiffe://x/a@b", false},
	{'u', "spiffe://x/a+b", false},
	{'u', "SPIFFE://x/a", false},
	{'u', "Spiffe://x/a", false},
	{'u', "spiffe://EXAMPLE.org/a", false},
	{'u', "spiffe://example.org:8443/a", false},
	{'u', "spiffe://user@example.org/a", false},
	{'u', "spiffe://ex%41mple.org/a", false},
	{'u', "spiffe://", false},
	{'u', "spiffe:x/a", false},
	{'u', "spiffe://x//", false},
	/* other schemes */
	{'u', "https://example.org/a/b?x=1#f", true},
	{'u', "https://example.org/a%20b/%C3%A9", true},
	{'u', "https://example.org//a", true},
	{'u', "https://example.org/a/%2e%2ex", true},
	{'u', "https://example.org/a/../b", false},
	{'u', "https://example.org/a/./b", false},
	{'u', "https://example.org/..", false},
	{'u', "https://example.org/a/%2E%2E/b", false},
	{'u', "https://example.org/a/.%2e", false},
	{'u', "https://example.org/a/%2e", false},
	{'u', "https://example.org/a%2Fb", false},
	{'u', "https://example.org/a%2fb", false},
	{'u', "https://example.org/a%00b", false},
	{'u', "https://example.org/a%0ab", false},
	{'u', "https://example.org/a%7Fb", false},
	{'u', "https://example.org/a%zzb", false},
	{'u', "https://example.org/a%2", false},
	{'u', "https://example.org/a\tb", false},
	{'u', "https://example.org/a\x7f", false},
	{'u', "https://example.org/\xc3\xa9", false},
	{'u', "https://example.org/a{b}", false},
	{'u', "https://example.org/a|b", false},
	{'u', "https:///a", false},
	{'u', "https://?q", false},
	{'u', "https://example.org?../x", true},
	/* DNS: LDH labels, 63/253, wildcard only as the whole leftmost label */
	{'d', "a", true},
	{'d', "A.Example.ORG", true},
	{'d', "012345678901234567890123456789012345678901234567890123456789012.x", true},
	{'d', "*.a", false}, /* a wildcard over a top-level domain */
	{'d', "*.com", false},
	{'d', "*.example.com", true},
	{'d', "1.2.3.4", false},	 /* an address, not a name: --ip */
	{'d', "a.123", false},		 /* the last label all digits */
	{'d', "10.0.0.1.example", true}, /* digits in other labels */
	{'d', "a.b1", true},
	{'d', "a.1b", true},
	{'d', "123", false},
	{'d', "*a.example", false},
	{'d', "a*.example", false},
	{'d', "*.*.example", false},
	{'d', "example.org.", false},
	{'d', ".example.org", false},
	{'d', "exa\tmple.org", false},
	{'d', "exa%41mple.org", false},
	{'d', "\xc3\xa9.example", false},
	{'d', "a.b/c", false},
	{'d', "a:443", false},
};

static void test_names(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct grant_names n;
		char err[512] = "";
		int rc;

		grant_names_init(&n);
		rc = cases[i].kind == 'd'   ? grant_add_dns(&n, cases[i].value, err, sizeof(err))
		     : cases[i].kind == 'i' ? grant_add_ip(&n, cases[i].value, err, sizeof(err))
					    : grant_add_uri(&n, cases[i].value, err, sizeof(err));
		if ((rc == 0) != cases[i].ok)
			fail_msg("%c '%s': expected %s (%s)", cases[i].kind, cases[i].value,
				 cases[i].ok ? "accepted" : "refused", err);
		if (rc != 0)
			assert_true(strlen(err) > 10);
		else
			assert_int_equal(sk_GENERAL_NAME_num(n.names), 1);
		grant_names_free(&n);
	}
}

/* Long names: at the limits and one past them. */
static void test_name_lengths(void **state)
{
	char dns[300], uri[2100], err[512];
	struct grant_names n;

	(void)state;
	grant_names_init(&n);
	/* 4 labels of 63 + 3 dots = 255: too long; 3 of 63 + one of 61 + 3 dots = 253: fine */
	memset(dns, 'a', sizeof(dns));
	dns[63] = dns[127] = dns[191] = '.';
	dns[255] = '\0';
	assert_int_equal(grant_add_dns(&n, dns, err, sizeof(err)), -1);
	dns[253] = '\0';
	assert_int_equal(grant_add_dns(&n, dns, err, sizeof(err)), 0);
	/* URIs: 2048 bytes fine, 2049 not */
	memcpy(uri, "spiffe://example.org/", 21);
	memset(uri + 21, 'a', sizeof(uri) - 21);
	uri[2048] = '\0';
	assert_int_equal(grant_add_uri(&n, uri, err, sizeof(err)), 0);
	uri[2048] = 'a';
	uri[2049] = '\0';
	assert_int_equal(grant_add_uri(&n, uri, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "2048"));
	memcpy(uri, "https://example.org/", 20);
	assert_int_equal(grant_add_uri(&n, uri, err, sizeof(err)), -1);
	/* a SPIFFE trust domain of 255 bytes fine, 256 not */
	memset(uri, 'a', sizeof(uri));
	memcpy(uri, "spiffe://", 9);
	memcpy(uri + 9 + 255, "/x", 3);
	assert_int_equal(grant_add_uri(&n, uri, err, sizeof(err)), 0);
	memset(uri, 'a', sizeof(uri));
	memcpy(uri, "spiffe://", 9);
	memcpy(uri + 9 + 256, "/x", 3);
	assert_int_equal(grant_add_uri(&n, uri, err, sizeof(err)), -1);
	grant_names_free(&n);
}

/* The messages name the problem, and bytes a terminal would act on are shown escaped. */
static void test_name_messages(void **state)
{
	static const struct {
		char kind;
		const char *value, *says;
	} m[] = {
		{'u', "spiffe://x/ns/../sa/admin", "no '.' or '..' path segment"},
		{'u', "spiffe://x/ns%2Fa", "no percent-encoding"},
		{'u', "spiffe://x/a/", "no empty path segment"},
		{'u', "spiffe://x/a?b", "no query"},
		{'u', "SPIFFE://x/a", "lower-case spiffe://"},
		{'u', "spiffe://X/a", "trust domain of a SPIFFE ID is lower case"},
		{'u', "spiffe://x:1/a", "no port or user info"},
		{'u', "https://x/a/%2e%2E/b", "'.' and '..' path segments"},
		{'u', "https://x/a%2Fb", "percent-encoded '/'"},
		{'u', "https://x/a\nb", "control bytes"},
		{'d', "a\nb", "'a\\x0ab'"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
		struct grant_names n;
		char err[512] = "";

		grant_names_init(&n);
		assert_int_equal(m[i].kind == 'u' ? grant_add_uri(&n, m[i].value, err, sizeof(err))
						  : grant_add_dns(&n, m[i].value, err, sizeof(err)),
				 -1);
		if (strstr(err, m[i].says) == NULL)
			fail_msg("'%s': message '%s' does not say '%s'", m[i].value, err,
				 m[i].says);
		assert_null(strchr(err, '\n'));
		grant_names_free(&n);
	}
}

struct cn_case {
	const char *cn;
	bool ok;
};

static const struct cn_case cn_cases[] = {
	{"api", true},
	{"db.example.org", true},
	{"Jürgen's service", true},
	{"\xe6\x9c\x8d\xe5\x8b\x99", true},
	{"\xf0\x9f\x94\x92 vault", true},
	{"0123456789012345678901234567890123456789012345678901234567890123", true},
	{"01234567890123456789012345678901234567890123456789012345678901234", false},
	{"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
	 "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
	 "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
	 "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
	 "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
	 "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
	 "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9",
	 true}, /* 64 characters, 128 bytes */
	{"", false},
	{"a\tb", false},
	{"a\nb", false},
	{"a\rb", false},
	{"\x1b[31mred", false},
	{"a\x7f", false},
	{"a\xc2\x85"
	 "b",
	 false}, /* U+0085 NEL, a C1 control */
	{"a\xe2\x80\xae"
	 "b",
	 false}, /* U+202E right-to-left override */
	{"a\xe2\x81\xa6"
	 "b",
	 false}, /* U+2066 left-to-right isolate */
	{"a\xe2\x80\xa8"
	 "b",
	 false}, /* U+2028 line separator */
	{"\xff", false},
	{"\xc3", false},	     /* truncated */
	{"\xc0\xaf", false},	     /* overlong '/' */
	{"\xed\xa0\x80", false},     /* a surrogate */
	{"\xf4\x90\x80\x80", false}, /* above U+10FFFF */
	/* format characters (Cf): invisible, names that look alike differ */
	{"a\xe2\x80\x8b"
	 "b",
	 false}, /* U+200B zero width space */
	{"a\xe2\x80\x8f"
	 "b",
	 false}, /* U+200F right-to-left mark */
	{"\xef\xbb\xbf"
	 "a",
	 false}, /* U+FEFF byte order mark */
	{"a\xd8\x9c"
	 "b",
	 false}, /* U+061C Arabic letter mark */
	{"a\xc2\xad"
	 "b",
	 false},		      /* U+00AD soft hyphen */
	{"a\xf3\xa0\x80\x81", false}, /* U+E0001 language tag */
	{"a\xe2\x80\x8a"
	 "b",
	 true}, /* U+200A hair space: a space (Zs), visible as one */
};

static void test_cn(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cn_cases) / sizeof(cn_cases[0]); i++) {
		char err[512] = "";
		int rc = grant_check_cn(cn_cases[i].cn, err, sizeof(err));

		if ((rc == 0) != cn_cases[i].ok)
			fail_msg("CN case %zu: expected %s (%s)", i,
				 cn_cases[i].ok ? "accepted" : "refused", err);
		if (rc != 0)
			assert_true(strlen(err) > 10 && strchr(err, '\n') == NULL);
	}
}

static void test_names_text(void **state)
{
	struct grant_names n;
	char err[256];

	(void)state;
	grant_names_init(&n);
	assert_int_equal(grant_add_dns(&n, "DB.Example.org", err, sizeof(err)), 0);
	assert_int_equal(grant_add_ip(&n, "10.0.0.1", err, sizeof(err)), 0);
	assert_int_equal(grant_add_uri(&n, "spiffe://example.org/db", err, sizeof(err)), 0);
	assert_string_equal(n.text, "DNS:db.example.org, IP:10.0.0.1, URI:spiffe://example.org/db");
	assert_string_equal(n.first, "db.example.org");
	assert_int_equal(n.ndns + n.nip + n.nuri, 3);
	grant_names_free(&n);
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
		struct grant g;
		struct grant_request r;
		char err[512] = "";
		int len, rc;
		unsigned char *der = csr_der(ip_san(lens[i]), &len);

		assert_int_equal(grant_init(&g, "client", GRANT_OPERATOR, err, sizeof(err)), 0);
		assert_int_equal(grant_add_ip(&g.names, "10.11.12.13", err, sizeof(err)), 0);
		assert_int_equal(grant_add_ip(&g.names, "a0b:c0d:e0f:1011:1213:1415:1617:1819", err,
					      sizeof(err)),
				 0);
		assert_int_equal(
			grant_request_read(&r, der, (size_t)len, "t.csr", err, sizeof(err)), 0);
		assert_int_equal(grant_request_verify(&r, "t.csr", err, sizeof(err)), 0);
		rc = grant_match(&g, &r, "t.csr", err, sizeof(err));
		if (lens[i] == 4 || lens[i] == 16) {
			if (rc != 0)
				fail_msg("IP of %d bytes refused: %s", lens[i], err);
		} else {
			if (rc == 0)
				fail_msg("IP of %d bytes accepted", lens[i]);
			assert_non_null(strstr(err, "malformed IP address"));
		}
		grant_request_free(&r);
		grant_free(&g);
		OPENSSL_free(der);
	}
}

/* A CSR with this CN (or none), subjectAltName and basicConstraints in openssl's config
 * syntax (or none), as DER. */
static unsigned char *csr_conf(const char *cn, const char *san, const char *bc, int *len)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509_REQ *req = X509_REQ_new();
	X509_NAME *name = X509_NAME_new();
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	unsigned char *der = NULL;

	assert_non_null(key);
	assert_int_equal(X509_REQ_set_pubkey(req, key), 1);
	if (cn != NULL)
		assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
							    (const unsigned char *)cn, -1, -1, 0),
				 1);
	assert_int_equal(X509_REQ_set_subject_name(req, name), 1);
	if (san != NULL)
		assert_true(sk_X509_EXTENSION_push(exts, X509V3_EXT_conf_nid(NULL, NULL,
									     NID_subject_alt_name,
									     san)) > 0);
	if (bc != NULL)
		assert_true(sk_X509_EXTENSION_push(exts, X509V3_EXT_conf_nid(NULL, NULL,
									     NID_basic_constraints,
									     bc)) > 0);
	for (int i = 0; i < sk_X509_EXTENSION_num(exts); i++)
		assert_non_null(sk_X509_EXTENSION_value(exts, i));
	if (sk_X509_EXTENSION_num(exts) > 0)
		assert_int_equal(X509_REQ_add_extensions(req, exts), 1);
	assert_true(X509_REQ_sign(req, key, EVP_sha256()) > 0);
	*len = i2d_X509_REQ(req, &der);
	assert_true(*len > 0);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_NAME_free(name);
	X509_REQ_free(req);
	EVP_PKEY_free(key);
	return der;
}

struct match_case {
	const char *grant; /* "dns:a uri:b ip:c cn:d", "token" for GRANT_TOKEN */
	const char *cn, *san, *bc;
	const char *refusal; /* NULL: accepted; else part of the message */
};

static const struct match_case match_cases[] = {
	{"uri:spiffe://x/a", NULL, NULL, NULL, NULL},
	{"uri:spiffe://x/a", NULL, "URI:spiffe://x/a", NULL, NULL},
	{"uri:spiffe://x/a", NULL, "URI:spiffe://x/a,URI:spiffe://x/b", NULL,
	 "CSR t.csr asks for URI spiffe://x/b, which was not granted; issue with --uri for it or "
	 "fix the CSR"},
	{"uri:spiffe://x/a", NULL, "URI:SPIFFE://x/a", NULL, "asks for URI SPIFFE://x/a"},
	{"uri:spiffe://x/a", NULL, "URI:spiffe://x/a/", NULL, "asks for URI spiffe://x/a/"},
	{"uri:spiffe://x/a", NULL, "DNS:a.example", NULL,
	 "asks for DNS name a.example, which was not granted; issue with --dns for it"},
	{"dns:db.example.org", NULL, "DNS:DB.Example.ORG", NULL, NULL},
	{"dns:db.example.org", NULL, "DNS:db.example.org.evil", NULL, "db.example.org.evil"},
	{"dns:*.example.org", NULL, "DNS:a.example.org", NULL, "DNS name a.example.org"},
	{"ip:::1", NULL, "IP:0:0:0:0:0:0:0:1", NULL, NULL},
	{"ip:10.0.0.1", NULL, "IP:10.0.0.2", NULL,
	 "asks for IP address 10.0.0.2, which was not granted; issue with --ip for it"},
	{"ip:10.0.0.1", NULL, "IP:::ffff:10.0.0.1", NULL, "IP address ::ffff:10.0.0.1"},
	{"uri:spiffe://x/a", NULL, "email:a@example.org", NULL,
	 "asks for an email address (rfc822Name) as a subjectAltName, which the CA never grants"},
	{"uri:spiffe://x/a", NULL, "otherName:1.2.3.4;UTF8:x", NULL, "an otherName"},
	{"uri:spiffe://x/a", NULL, "RID:1.2.3.4", NULL, "a registered ID"},
	{"uri:spiffe://x/a", NULL, NULL, "critical,CA:TRUE",
	 "asks for a CA certificate (basicConstraints CA:TRUE)"},
	{"uri:spiffe://x/a", NULL, NULL, "CA:TRUE,pathlen:0", "CA:TRUE"},
	{"uri:spiffe://x/a", NULL, NULL, "critical,CA:FALSE", NULL},
	{"uri:spiffe://x/a", "spiffe://x/a", NULL, NULL, NULL},
	{"uri:spiffe://x/a", "admin", NULL, NULL,
	 "asks for the common name 'admin', which was not granted; issue with --cn for it"},
	{"uri:spiffe://x/a cn:app", "app", NULL, NULL, NULL},
	{"uri:spiffe://x/a cn:app", "App", NULL, NULL, "common name 'App'"},
	{"dns:a.example", "A.Example", NULL, NULL, NULL},
	{"ip:10.0.0.1", "10.0.0.1", NULL, NULL, NULL},
	{"ip:10.0.0.1", "10.0.0.01", NULL, NULL, "common name '10.0.0.01'"},
	{"", NULL, NULL, NULL, NULL},
	{"", NULL, "URI:spiffe://x/a", NULL, "asks for URI spiffe://x/a"},
	{"token uri:spiffe://x/a", NULL, "URI:spiffe://x/b", NULL,
	 "asks for URI spiffe://x/b, which was not granted; the enrollment token does not grant "
	 "it; fix the CSR"},
	{"token uri:spiffe://x/a", "b", NULL, NULL, "the enrollment token does not grant it"},
};

static void make_grant(struct grant *g, const char *spec)
{
	char buf[256], err[512], *save = NULL;

	snprintf(buf, sizeof(buf), "%s", spec);
	assert_int_equal(grant_init(g, "peer",
				    strncmp(spec, "token", 5) == 0 ? GRANT_TOKEN : GRANT_OPERATOR,
				    err, sizeof(err)),
			 0);
	for (char *w = strtok_r(buf, " ", &save); w != NULL; w = strtok_r(NULL, " ", &save)) {
		int rc = 0;

		if (strncmp(w, "dns:", 4) == 0)
			rc = grant_add_dns(&g->names, w + 4, err, sizeof(err));
		else if (strncmp(w, "ip:", 3) == 0)
			rc = grant_add_ip(&g->names, w + 3, err, sizeof(err));
		else if (strncmp(w, "uri:", 4) == 0)
			rc = grant_add_uri(&g->names, w + 4, err, sizeof(err));
		else if (strncmp(w, "cn:", 3) == 0)
			rc = grant_set_cn(g, w + 3, err, sizeof(err));
		if (rc != 0)
			fail_msg("grant '%s': %s", spec, err);
	}
}

/* A CSR asks for no more than the grant: every name in it granted, its CN granted, no CA. */
static void test_grant_match(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(match_cases) / sizeof(match_cases[0]); i++) {
		const struct match_case *c = &match_cases[i];
		struct grant g;
		struct grant_request r;
		char err[1024] = "";
		int len, rc;
		unsigned char *der = csr_conf(c->cn, c->san, c->bc, &len);

		make_grant(&g, c->grant);
		assert_int_equal(
			grant_request_read(&r, der, (size_t)len, "t.csr", err, sizeof(err)), 0);
		assert_int_equal(grant_request_verify(&r, "t.csr", err, sizeof(err)), 0);
		rc = grant_match(&g, &r, "t.csr", err, sizeof(err));
		if (c->refusal == NULL && rc != 0)
			fail_msg("case %zu (grant '%s', CN %s, SAN %s, BC %s) refused: %s", i,
				 c->grant, c->cn, c->san, c->bc, err);
		if (c->refusal != NULL && (rc == 0 || strstr(err, c->refusal) == NULL))
			fail_msg("case %zu (grant '%s', CN %s, SAN %s, BC %s): expected a refusal "
				 "saying '%s', got %s",
				 i, c->grant, c->cn, c->san, c->bc, c->refusal,
				 rc == 0 ? "acceptance" : err);
		if (rc == 0 && c->cn != NULL)
			assert_string_equal(r.cn, c->cn);
		grant_request_free(&r);
		grant_free(&g);
		OPENSSL_free(der);
	}
}

/* A CSR file holds one CSR: PEM with text around it is fine; two PEM CSRs, DER with bytes
 * after it, or a PEM CSR block with bytes after its DER are refused. */
static void test_csr_forms(void **state)
{
	int len;
	unsigned char *der = csr_conf("a", NULL, NULL, &len), *buf;
	BIO *bio = BIO_new(BIO_s_mem());
	char *pem, err[512];
	long pem_len;
	struct grant_request r;
	size_t n;

	(void)state;
	assert_true(PEM_write_bio(bio, PEM_STRING_X509_REQ, "", der, len) > 0);
	pem_len = BIO_get_mem_data(bio, &pem);
	buf = malloc((size_t)(2 * pem_len + len + 64));
	assert_non_null(buf);

	/* DER alone, PEM alone, PEM with text before and after */
	assert_int_equal(grant_request_read(&r, der, (size_t)len, "t.csr", err, sizeof(err)), 0);
	grant_request_free(&r);
	assert_int_equal(grant_request_read(&r, pem, (size_t)pem_len, "t.csr", err, sizeof(err)),
			 0);
	grant_request_free(&r);
	n = (size_t)snprintf((char *)buf, 64, "Certificate Request:\n  (text)\n");
	memcpy(buf + n, pem, (size_t)pem_len);
	n += (size_t)pem_len;
	memcpy(buf + n, "trailing text\n", 14);
	n += 14;
	assert_int_equal(grant_request_read(&r, buf, n, "t.csr", err, sizeof(err)), 0);
	grant_request_free(&r);

	/* DER with a byte after it */
	memcpy(buf, der, (size_t)len);
	buf[len] = 0;
	assert_int_equal(grant_request_read(&r, buf, (size_t)len + 1, "t.csr", err, sizeof(err)),
			 -1);
	assert_non_null(strstr(err, "t.csr holds 1 bytes after the certificate signing request"));
	grant_request_free(&r);

	/* two PEM CSRs */
	memcpy(buf, pem, (size_t)pem_len);
	memcpy(buf + pem_len, pem, (size_t)pem_len);
	assert_int_equal(
		grant_request_read(&r, buf, 2 * (size_t)pem_len, "t.csr", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "t.csr holds more than one certificate signing request"));
	grant_request_free(&r);

	/* a PEM block whose DER has a byte after the CSR */
	(void)BIO_reset(bio);
	memcpy(buf, der, (size_t)len);
	buf[len] = 0;
	assert_true(PEM_write_bio(bio, PEM_STRING_X509_REQ, "", buf, len + 1) > 0);
	pem_len = BIO_get_mem_data(bio, &pem);
	assert_int_equal(grant_request_read(&r, pem, (size_t)pem_len, "t.csr", err, sizeof(err)),
			 -1);
	grant_request_free(&r);

	free(buf);
	BIO_free(bio);
	OPENSSL_free(der);
}

/* The certificate's CN: the granted one, else the CSR's granted one, else the first name
 * if it fits in 64 characters, else none. */
static void test_grant_cn(void **state)
{
	struct grant g;
	struct grant_request r = {0};
	char err[512];

	(void)state;
	make_grant(&g, "uri:spiffe://example.org/ns/prod/sa/api dns:api.example.org");
	assert_string_equal(grant_cn(&g, NULL), "spiffe://example.org/ns/prod/sa/api");
	snprintf(r.cn, sizeof(r.cn), "api.example.org");
	assert_string_equal(grant_cn(&g, &r), "api.example.org");
	assert_int_equal(grant_set_cn(&g, "api", err, sizeof(err)), 0);
	assert_string_equal(grant_cn(&g, &r), "api");
	grant_free(&g);
	make_grant(&g, "uri:spiffe://example.org/ns/production/serviceaccount/a-rather-long-name");
	assert_null(grant_cn(&g, NULL));
	grant_free(&g);
}

/* issue_sign() never makes a certificate RFC 5280 forbids for lack of a name: a CA without
 * a subject, a leaf with neither a subject nor a subjectAltName. A leaf with names and no
 * subject gets a critical subjectAltName. */
static void test_sign_names(void **state)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	struct grant_names n;
	char err[512] = "";
	struct issue_spec spec = {.kind = ISSUE_CLIENT,
				  .subject_key = key,
				  .not_before = time(NULL) - 60,
				  .not_after = time(NULL) + 3600};
	X509 *cert;
	int at;

	(void)state;
	assert_non_null(key);
	assert_null(issue_sign(&spec, NULL, key, err, sizeof(err)));
	assert_non_null(strstr(err, "needs a subjectAltName"));
	spec.kind = ISSUE_ROOT;
	assert_null(issue_sign(&spec, NULL, key, err, sizeof(err)));
	assert_non_null(strstr(err, "CA certificate needs a subject"));

	grant_names_init(&n);
	assert_int_equal(grant_add_uri(&n, "spiffe://example.org/a", err, sizeof(err)), 0);
	spec.kind = ISSUE_CLIENT;
	spec.names = n.names;
	cert = issue_sign(&spec, NULL, key, err, sizeof(err));
	assert_non_null(cert);
	assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(cert)), 0);
	at = X509_get_ext_by_NID(cert, NID_subject_alt_name, -1);
	assert_true(at >= 0);
	assert_int_equal(X509_EXTENSION_get_critical(X509_get_ext(cert, at)), 1);
	X509_free(cert);
	spec.cn = "a";
	cert = issue_sign(&spec, NULL, key, err, sizeof(err));
	assert_non_null(cert);
	at = X509_get_ext_by_NID(cert, NID_subject_alt_name, -1);
	assert_int_equal(X509_EXTENSION_get_critical(X509_get_ext(cert, at)), 0);
	X509_free(cert);
	grant_names_free(&n);
	EVP_PKEY_free(key);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_names_text),
		cmocka_unit_test(test_name_lengths),
		cmocka_unit_test(test_name_messages),
		cmocka_unit_test(test_cn),
		cmocka_unit_test(test_profiles),
		cmocka_unit_test(test_csr_ip_length),
		cmocka_unit_test(test_grant_match),
		cmocka_unit_test(test_csr_forms),
		cmocka_unit_test(test_grant_cn),
		cmocka_unit_test(test_sign_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
