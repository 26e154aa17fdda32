/*
 * The strict certificate profile (lib/strict.c, with OpenSSL's X509_V_FLAG_X509_STRICT):
 * one row per rule, each a root, an intermediate and a leaf made at test time with one
 * property out of profile, verified with mtls_verify_chain_pem() as a server checks a client
 * (or a client a server). Each row asserts the reason and a piece of the message; the first
 * rows show that a chain within the profile passes. Then the name checks of strict.c on
 * their own.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/x509v3.h>

#include "internal.h"
#include "testutil.h"

struct row {
	const char *name;
	struct test_cert root, inter, leaf;
	bool server; /* verify a server's chain (as a client would), name server.test */
	enum mtls_reason reason;
	const char *message; /* a piece of the message; NULL for an accepted chain */
};

static const unsigned char five_octets[] = {10, 0, 0, 1, 9};

#define SERVER_LEAF .eku = "serverAuth", .san = "DNS:server.test"

static const struct row rows[] = {
	/* within the profile */
	{"a conforming chain passes", .reason = MTLS_REASON_NONE},
	{"a conforming server chain passes", .leaf = {SERVER_LEAF}, .server = true,
	 .reason = MTLS_REASON_NONE},
	{"a 20-octet serial passes", .leaf = {.serial = "7F0102030405060708090A0B0C0D0E0F10111213"},
	 .reason = MTLS_REASON_NONE},
	{"an empty subject with a critical SAN passes",
	 .leaf = {.subject = "", .san_critical = true}, .reason = MTLS_REASON_NONE},
	{"names within the name constraints pass",
	 .inter = {.ca = true,
		   .nc = "critical,permitted;DNS:good.test,permitted;URI:.good.test,"
			 "permitted;IP:10.0.0.0/255.0.0.0,permitted;email:good.test,"
			 "excluded;DNS:evil.good.test"},
	 .leaf = {.subject = "CN=a.good.test",
		  .san = "DNS:a.good.test,DNS:*.b.good.test,URI:spiffe://x.good.test/a,"
			 "IP:10.1.2.3,email:me@good.test"},
	 .reason = MTLS_REASON_NONE},
	{"a CN within a permitted DNS subtree passes",
	 .inter = {.ca = true, .nc = "critical,permitted;DNS:.good.test"},
	 .leaf = {.subject = "O=t,CN=app.good.test", .san = ""}, .reason = MTLS_REASON_NONE},
	{"a one-label CN outside an excluded DNS subtree passes",
	 .inter = {.ca = true, .nc = "critical,excluded;DNS:.evil.test"},
	 .leaf = {.subject = "CN=app", .san = ""}, .reason = MTLS_REASON_NONE},
	{"an email CN within a permitted email subtree passes",
	 .inter = {.ca = true, .nc = "critical,permitted;email:good.test"},
	 .leaf = {.subject = "CN=me@good.test", .san = "email:me@good.test"},
	 .reason = MTLS_REASON_NONE},
	{"email addresses with atoms, dots and '+' pass",
	 .leaf = {.san = "URI:spiffe://test.mtls/x,email:first.last+tag@good.test,"
			 "email:o'hara_1@Sub.Good.test"},
	 .reason = MTLS_REASON_NONE},

	/* serial number (RFC 5280 4.1.2.2) */
	{"serial zero", .leaf = {.serial = "00"}, .reason = MTLS_REASON_NONCONFORMING,
	 .message = "serial number is zero or negative (RFC 5280 4.1.2.2); reissue it"},
	{"serial negative", .leaf = {.serial = "-05"}, .reason = MTLS_REASON_NONCONFORMING,
	 .message = "serial number is zero or negative"},
	{"serial of 21 octets", .leaf = {.serial = "010203040506070809101112131415161718192021"},
	 .reason = MTLS_REASON_NONCONFORMING,
	 .message = "serial number is longer than 20 octets (RFC 5280 4.1.2.2)"},
	{"serial of 20 octets with the high bit (21 encoded)",
	 .leaf = {.serial = "8001020304050607080910111213141516171819"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "longer than 20 octets"},
	{"intermediate's serial of 21 octets",
	 .inter = {.ca = true, .serial = "010203040506070809101112131415161718192021"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "client certificate chain rejected: CA "},

	/* key identifiers (RFC 5280 4.2.1.1, 4.2.1.2) */
	{"leaf without AKI", .leaf = {.no_aki = true}, .reason = MTLS_REASON_NONCONFORMING,
	 .message = "no authorityKeyIdentifier"},
	{"intermediate without AKI", .inter = {.ca = true, .no_aki = true},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "no authorityKeyIdentifier"},
	{"intermediate without SKI", .inter = {.ca = true, .no_ski = true},
	 .reason = MTLS_REASON_NONCONFORMING,
	 .message = "CA certificate without subjectKeyIdentifier"},

	{"root without SKI", .root = {.ca = true, .no_ski = true},
	 .reason = MTLS_REASON_NONCONFORMING,
	 .message = "CA certificate without subjectKeyIdentifier"},

	/* CA certificates (RFC 5280 4.2.1.9, 4.2.1.3) */
	{"leaf with a pathLenConstraint", .leaf = {.bc = "critical,CA:FALSE,pathlen:0"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "pathLenConstraint"},
	{"intermediate's basicConstraints not critical", .inter = {.ca = true, .bc = "CA:TRUE"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "basicConstraints is missing"},
	{"root's basicConstraints not critical", .root = {.ca = true, .bc = "CA:TRUE"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "basicConstraints is missing"},
	{"intermediate without keyUsage", .inter = {.ca = true, .ku = ""},
	 .reason = MTLS_REASON_NONCONFORMING,
	 .message = "keyUsage is missing or lacks keyCertSign"},
	{"intermediate's keyUsage without keyCertSign",
	 .inter = {.ca = true, .ku = "critical,cRLSign,digitalSignature"},
	 .reason = MTLS_REASON_INVALID_CA, .message = "is not a CA"},

	/* the leaf (RFC 5280 4.2.1.3, 4.2.1.9, 4.2.1.12) */
	{"leaf is a CA", .leaf = {.bc = "critical,CA:TRUE", .ku = "critical,digitalSignature"},
	 .reason = MTLS_REASON_LEAF_IS_CA, .message = "it is a CA certificate"},
	{"a CA certificate as the leaf", .leaf = {.ca = true}, .reason = MTLS_REASON_LEAF_IS_CA,
	 .message = "client certificate rejected: it is a CA certificate"},
	{"leaf is a CA (not critical, with keyCertSign)",
	 .leaf = {.bc = "CA:TRUE", .ku = "digitalSignature,keyCertSign"},
	 .reason = MTLS_REASON_LEAF_IS_CA, .message = "end-entity certificate"},
	{"leaf with keyCertSign", .leaf = {.ku = "critical,digitalSignature,keyCertSign"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "keyCertSign or cRLSign"},
	{"leaf with cRLSign", .leaf = {.ku = "critical,digitalSignature,cRLSign"},
	 .reason = MTLS_REASON_NONCONFORMING,
	 .message = "an end-entity certificate with keyCertSign or cRLSign in its keyUsage"},
	{"leaf with an empty subject and a SAN not critical", .leaf = {.subject = ""},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "its subject is empty"},
	{"leaf without EKU", .leaf = {.eku = ""}, .reason = MTLS_REASON_BAD_KEY_USAGE,
	 .message = "does not include clientAuth"},
	{"leaf with anyExtendedKeyUsage only", .leaf = {.eku = "anyExtendedKeyUsage"},
	 .reason = MTLS_REASON_BAD_KEY_USAGE, .message = "client"},
	{"client leaf with serverAuth and anyExtendedKeyUsage",
	 .leaf = {.eku = "serverAuth,anyExtendedKeyUsage"}, .reason = MTLS_REASON_BAD_KEY_USAGE,
	 .message = "client"},
	{"server leaf with anyExtendedKeyUsage only",
	 .leaf = {.eku = "anyExtendedKeyUsage", .san = "DNS:server.test"}, .server = true,
	 .reason = MTLS_REASON_BAD_KEY_USAGE, .message = "server"},

	/* names in the subjectAltName (RFC 5280 4.2.1.6) */
	{"DNS name with an underscore", .leaf = {.san = "DNS:bad_label.test"},
	 .reason = MTLS_REASON_NONCONFORMING,
	 .message = "DNS name 'bad_label.test' in its subjectAltName is not a valid host name"},
	{"DNS name with a trailing dot", .leaf = {.san = "DNS:app.test."},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "'app.test.'"},
	{"DNS name with an empty label", .leaf = {.san = "DNS:app..test"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "'app..test'"},
	{"DNS name with a partial wildcard", .leaf = {.san = "DNS:a*.test"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "'a*.test'"},
	{"DNS name with a wildcard not leftmost", .leaf = {.san = "DNS:a.*.test"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "'a.*.test'"},
	{"DNS name with a label of 64",
	 .leaf = {.san = "DNS:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa."
			 "test"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "not a valid host name"},
	{"DNS name with a leading hyphen", .leaf = {.san = "DNS:-app.test"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "'-app.test'"},
	{"IP address of 5 octets", .leaf = {.ip_raw = five_octets, .ip_raw_len = 5},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "is 5 octets long, not 4 or 16"},
	{"URI without a scheme", .leaf = {.san = "URI:app1/ns/prod"},
	 .reason = MTLS_REASON_NONCONFORMING,
	 .message = "URI 'app1/ns/prod' in its subjectAltName is not an absolute URI"},
	{"URI with a scheme not starting with a letter", .leaf = {.san = "URI:1x://app.test/"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "'1x://app.test/'"},
	{"URI with a space", .leaf = {.san = "URI:spiffe://test.mtls/a b"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "not an absolute URI"},
	{"email address without '@'", .leaf = {.san = "email:not-an-address"},
	 .reason = MTLS_REASON_NONCONFORMING,
	 .message = "email address 'not-an-address' in its subjectAltName is not an address"},
	{"email address with spaces and '<'", .leaf = {.san = "email:not an address <script>"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "'not an address <script>'"},
	{"email address with two '@'", .leaf = {.san = "email:a@b@good.test"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "'a@b@good.test'"},
	{"email address with an empty local part", .leaf = {.san = "email:@good.test"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "'@good.test'"},
	{"email address with a dot ending its local part", .leaf = {.san = "email:a.@good.test"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "'a.@good.test'"},
	{"email address with a quoted local part", .leaf = {.san = "email:\"a b\"@good.test"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "is not an address"},
	{"email address whose domain is no host name", .leaf = {.san = "email:a@bad_domain.test"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "'a@bad_domain.test'"},
	{"email address whose domain has a trailing dot", .leaf = {.san = "email:a@good.test."},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "'a@good.test.'"},
	{"email address whose domain is a wildcard", .leaf = {.san = "email:a@*.good.test"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "'a@*.good.test'"},
	{"email address without a domain", .leaf = {.san = "email:a@"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "'a@'"},

	/* control bytes in names: an attack on log lines and matchers, refused as
	 * bad_certificate, the name escaped in the message */
	{"email address with newlines",
	 .leaf = {.raw_type = GEN_EMAIL,
		  .raw_name = "x\naccepted: spiffe://ex.org/admin\n@good.test"},
	 .reason = MTLS_REASON_BAD_CERTIFICATE,
	 .message = "has the email SAN x\\x0aaccepted: spiffe://ex.org/admin\\x0a@good.test, with "
		    "a control byte; it is malformed or forged"},
	{"DNS name with an escape byte",
	 .leaf = {.raw_type = GEN_DNS, .raw_name = "app\x1b[2J.test"},
	 .reason = MTLS_REASON_BAD_CERTIFICATE, .message = "DNS SAN app\\x1b[2J.test"},
	{"email address with DEL", .leaf = {.raw_type = GEN_EMAIL, .raw_name = "a\x7f@good.test"},
	 .reason = MTLS_REASON_BAD_CERTIFICATE, .message = "a\\x7f@good.test"},
	{"CN with a newline", .leaf = {.subject = "O=t,CN=evil\nrefused: forged line", .san = ""},
	 .reason = MTLS_REASON_BAD_CERTIFICATE,
	 .message = "has the CN evil\\x0arefused: forged line, with a NUL or control byte"},
	{"CN with a newline beside a URI SAN", .leaf = {.subject = "CN=evil\r\naccepted: x"},
	 .reason = MTLS_REASON_BAD_CERTIFICATE, .message = "CN evil\\x0d\\x0aaccepted: x"},
	{"CN with DEL", .leaf = {.subject = "CN=a\x7f"}, .reason = MTLS_REASON_BAD_CERTIFICATE,
	 .message = "CN a\\x7f,"},
	{"CN with a C1 control (CSI)",
	 .leaf = {.subject = "CN=a\xc2\x9b"
			     "2J"},
	 .reason = MTLS_REASON_BAD_CERTIFICATE, .message = "CN a\\xc2\\x9b2J,"},
	{"second CN with a NUL", .leaf = {.subject = "CN=app1", .cn_raw = "a\0b", .cn_raw_len = 3},
	 .reason = MTLS_REASON_BAD_CERTIFICATE, .message = "NUL or control byte"},

	/* name constraints on every SAN type (RFC 5280 4.2.1.10) */
	{"wildcard outside a permitted DNS subtree",
	 .inter = {.ca = true, .nc = "critical,permitted;DNS:good.test"},
	 .leaf = {.san = "DNS:*.evil.test"}, .reason = MTLS_REASON_NONCONFORMING,
	 .message = "DNS name '*.evil.test' in its subjectAltName is outside the name "
		    "constraints of the CA"},
	{"wildcard that covers an excluded DNS subtree",
	 .inter = {.ca = true, .nc = "critical,excluded;DNS:evil.test"},
	 .leaf = {.san = "DNS:*.test"}, .reason = MTLS_REASON_NONCONFORMING,
	 .message = "DNS name '*.test'"},
	{"DNS name in an excluded subtree",
	 .inter = {.ca = true, .nc = "critical,excluded;DNS:evil.test"},
	 .leaf = {.san = "DNS:a.evil.test"}, .reason = MTLS_REASON_NONCONFORMING,
	 .message = "'a.evil.test'"},
	{"URI whose real host is outside a permitted URI subtree",
	 .inter = {.ca = true, .nc = "critical,permitted;URI:good.test"},
	 .leaf = {.san = "URI:https://good.test:x@evil.test/"}, .reason = MTLS_REASON_NONCONFORMING,
	 .message = "URI 'https://good.test:x@evil.test/' in its subjectAltName is outside"},
	{"URI without an authority under a URI constraint",
	 .inter = {.ca = true, .nc = "critical,permitted;URI:.good.test"},
	 .leaf = {.san = "URI:urn:x:y"}, .reason = MTLS_REASON_NONCONFORMING,
	 .message = "'urn:x:y'"},
	{"URI in an excluded URI subtree",
	 .inter = {.ca = true, .nc = "critical,excluded;URI:.evil.test"},
	 .leaf = {.san = "URI:spiffe://a.evil.test/x"}, .reason = MTLS_REASON_NONCONFORMING,
	 .message = "'spiffe://a.evil.test/x'"},
	{"IP address outside a permitted subtree",
	 .inter = {.ca = true, .nc = "critical,permitted;IP:10.0.0.0/255.0.0.0"},
	 .leaf = {.san = "URI:spiffe://test.mtls/x,IP:192.168.1.1"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "IP address '192.168.1.1'"},
	{"email address outside a permitted subtree",
	 .inter = {.ca = true, .nc = "critical,permitted;email:good.test"},
	 .leaf = {.san = "URI:spiffe://test.mtls/x,email:me@evil.test"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "email address 'me@evil.test'"},
	{"constraints of the root apply to the leaf",
	 .root = {.ca = true, .nc = "critical,permitted;DNS:good.test"},
	 .leaf = {.san = "DNS:app.other.test"}, .reason = MTLS_REASON_NONCONFORMING,
	 .message = "'app.other.test'"},
	{"URI host with a trailing dot in an excluded URI subtree",
	 .inter = {.ca = true, .nc = "critical,excluded;URI:evil.test"},
	 .leaf = {.subject = "", .san_critical = true, .san = "URI:https://evil.test./a"},
	 .reason = MTLS_REASON_NONCONFORMING,
	 .message = "URI 'https://evil.test./a' in its subjectAltName is outside"},
	{"URI host with a %-escape in an excluded URI subtree",
	 .inter = {.ca = true, .nc = "critical,excluded;URI:evil.test"},
	 .leaf = {.subject = "", .san_critical = true, .san = "URI:https://evil%2etest/a"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "'https://evil%2etest/a'"},
	{"URI host with a trailing dot under a permitted URI subtree",
	 .inter = {.ca = true, .nc = "critical,permitted;URI:.good.test"},
	 .leaf = {.subject = "", .san_critical = true, .san = "URI:https://a.good.test.:8443/a"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "'https://a.good.test.:8443/a'"},
	{"IPv4-mapped IPv6 address in an excluded IPv4 subtree",
	 .inter = {.ca = true, .nc = "critical,excluded;IP:10.9.0.0/255.255.0.0"},
	 .leaf = {.subject = "",
		  .san_critical = true,
		  .san = "URI:spiffe://test.mtls/x,IP:::ffff:10.9.0.1"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "IP address '::ffff:10.9.0.1'"},
	{"IPv4-mapped IPv6 address under a permitted IPv4 subtree (as OpenSSL reads it)",
	 .inter = {.ca = true, .nc = "critical,permitted;IP:10.0.0.0/255.0.0.0"},
	 .leaf = {.subject = "",
		  .san = "URI:spiffe://test.mtls/x,IP:::ffff:10.1.2.3",
		  .san_critical = true},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "IP address '::ffff:10.1.2.3'"},
	{"IPv4 address in an excluded IPv4-mapped subtree",
	 .inter = {.ca = true,
		   .nc = "critical,excluded;IP:::ffff:10.9.0.0/"
			 "ffff:ffff:ffff:ffff:ffff:ffff:ffff:0"},
	 .leaf = {.subject = "",
		  .san_critical = true,
		  .san = "URI:spiffe://test.mtls/x,IP:10.9.0.1"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "IP address '10.9.0.1'"},

	/* the leaf's CN under name constraints: it is an identity (--allow-cn, or a leaf
	 * without URI and DNS SANs), which OpenSSL does not check with the flags we set */
	{"CN outside a permitted DNS subtree, no SAN",
	 .inter = {.ca = true, .nc = "critical,permitted;DNS:.good.test"},
	 .leaf = {.subject = "O=t,CN=admin.bad.test", .san = ""},
	 .reason = MTLS_REASON_NONCONFORMING,
	 .message = "CN 'admin.bad.test' in its subject is outside the name constraints of the CA "
		    "subject CN=strict issuing"},
	{"CN outside a permitted DNS subtree, only an email SAN",
	 .inter = {.ca = true, .nc = "critical,permitted;DNS:.good.test"},
	 .leaf = {.subject = "O=t,CN=admin.bad.test", .san = "email:a@x.test"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "CN 'admin.bad.test' in its subject"},
	{"CN outside a permitted DNS subtree beside a permitted DNS SAN",
	 .inter = {.ca = true, .nc = "critical,permitted;DNS:.good.test"},
	 .leaf = {.subject = "CN=admin.bad.test", .san = "DNS:app.good.test"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "CN 'admin.bad.test'"},
	{"one-label CN outside a permitted DNS subtree",
	 .inter = {.ca = true, .nc = "critical,permitted;DNS:.good.test"},
	 .leaf = {.subject = "CN=admin", .san = ""}, .reason = MTLS_REASON_NONCONFORMING,
	 .message = "CN 'admin' in its subject is outside"},
	{"CN in an excluded DNS subtree",
	 .inter = {.ca = true, .nc = "critical,excluded;DNS:.evil.test"},
	 .leaf = {.subject = "O=t,CN=x.evil.test", .san = ""}, .reason = MTLS_REASON_NONCONFORMING,
	 .message = "CN 'x.evil.test' in its subject is outside"},
	{"wildcard CN that covers an excluded DNS subtree",
	 .inter = {.ca = true, .nc = "critical,excluded;DNS:evil.test"},
	 .leaf = {.subject = "CN=*.test", .san = ""}, .reason = MTLS_REASON_NONCONFORMING,
	 .message = "CN '*.test'"},
	{"email CN outside a permitted email subtree",
	 .inter = {.ca = true, .nc = "critical,permitted;email:good.test"},
	 .leaf = {.subject = "CN=me@evil.test", .san = "email:me@good.test"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "CN 'me@evil.test'"},
	{"CN under URI constraints only",
	 .inter = {.ca = true, .nc = "critical,permitted;URI:.good.test"},
	 .leaf = {.subject = "CN=admin", .san = "URI:spiffe://x.good.test/a"},
	 .reason = MTLS_REASON_NONCONFORMING,
	 .message = "its CN 'admin' is not bounded by the name constraints of the CA subject "
		    "CN=strict issuing"},
	{"CN that is no host name or address under DNS constraints",
	 .inter = {.ca = true, .nc = "critical,permitted;DNS:.good.test"},
	 .leaf = {.subject = "CN=Admin User", .san = "DNS:a.good.test"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "its CN 'Admin User' is not bounded"},
	{"CN of a leaf under a root's constraints",
	 .root = {.ca = true, .nc = "critical,permitted;DNS:good.test"},
	 .leaf = {.subject = "CN=admin.bad.test", .san = "DNS:app.good.test"},
	 .reason = MTLS_REASON_NONCONFORMING, .message = "CN 'admin.bad.test'"},
};

/* One row: true if it went as expected (what did not is printed). */
static bool run_row(const struct row *r)
{
	struct test_cert root = r->root, inter = r->inter;
	EVP_PKEY *root_key, *int_key, *leaf_key;
	X509 *root_cert, *int_cert, *leaf_cert;
	struct mtls_config *cfg = mtls_config_new();
	struct mtls *ep = r->server ? mtls_client_new() : mtls_server_new();
	char *ca, *chain;
	X509 *pair[2];
	bool ok = true;
	int rc;

	root.ca = inter.ca = true;
	if (root.subject == NULL)
		root.subject = "CN=strict root";
	if (inter.subject == NULL)
		inter.subject = "CN=strict issuing";
	root_cert = test_cert_make(&root, NULL, NULL, &root_key);
	int_cert = test_cert_make(&inter, root_cert, root_key, &int_key);
	leaf_cert = test_cert_make(&r->leaf, int_cert, int_key, &leaf_key);
	ca = test_certs_pem(&root_cert, 1);
	pair[0] = leaf_cert;
	pair[1] = int_cert;
	chain = test_certs_pem(pair, 2);

	assert_int_equal(mtls_config_set_ca_mem(cfg, (const uint8_t *)ca, strlen(ca)), 0);
	assert_int_equal(mtls_config_set_allow_any_identity(cfg, 1), 0);
	if (mtls_configure(ep, cfg) != 0)
		fail_msg("%s: configure: %s", r->name, mtls_error(ep));
	rc = mtls_verify_chain_pem(ep, (const uint8_t *)chain, strlen(chain),
				   r->server ? "server.test" : NULL, NULL);
	if ((int)mtls_error_reason(ep) != (int)r->reason || (rc == 0) != (r->reason == 0) ||
	    (r->message != NULL && strstr(mtls_error(ep), r->message) == NULL)) {
		print_error("%s: %s: %s (expected %s, '%s')\n", r->name,
			    mtls_reason_name(mtls_error_reason(ep)), mtls_error(ep),
			    mtls_reason_name(r->reason), r->message != NULL ? r->message : "");
		ok = false;
	}
	/* the message names the certificate, on one line of printable text */
	if (rc != 0 && r->reason != MTLS_REASON_INVALID_CA &&
	    strstr(mtls_error(ep), "serial") == NULL) {
		print_error("%s: the message names no serial: %s\n", r->name, mtls_error(ep));
		ok = false;
	}
	for (const char *m = mtls_error(ep); *m != '\0' && ok; m++)
		if (*m < 0x20 || *m > 0x7e) {
			print_error("%s: a byte 0x%02x in the message: %s\n", r->name,
				    (unsigned char)*m, mtls_error(ep));
			ok = false;
		}

	free(ca);
	free(chain);
	mtls_free(ep);
	mtls_config_free(cfg);
	X509_free(root_cert);
	X509_free(int_cert);
	X509_free(leaf_cert);
	EVP_PKEY_free(root_key);
	EVP_PKEY_free(int_key);
	EVP_PKEY_free(leaf_key);
	return ok;
}

static void test_profile(void **state)
{
	size_t failed = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		failed += !run_row(&rows[i]);
	if (failed > 0)
		fail_msg("%zu of %zu rows failed", failed, sizeof(rows) / sizeof(rows[0]));
}

static bool dns_ok(const char *s)
{
	return strict_dns_name_ok((const unsigned char *)s, strlen(s));
}

static bool uri_ok(const char *s)
{
	return strict_uri_ok((const unsigned char *)s, strlen(s));
}

/* The name checks themselves, at their edges. */
static void test_names(void **state)
{
	char long_name[300];

	(void)state;
	assert_true(dns_ok("a.test"));
	assert_true(dns_ok("*.a.test"));
	assert_true(dns_ok("localhost"));
	assert_true(dns_ok("xn--bcher-kva.test"));
	assert_true(dns_ok("A-1.Test"));
	assert_false(dns_ok(""));
	assert_false(dns_ok("*"));
	assert_false(dns_ok("*."));
	assert_false(dns_ok(".a.test"));
	assert_false(dns_ok("a.test."));
	assert_false(dns_ok("a-.test"));
	assert_false(dns_ok("a.-b"));
	assert_false(dns_ok("*a.test"));
	assert_false(dns_ok("a b.test"));
	/* 63 is the longest label, 253 the longest name */
	memset(long_name, 'a', 63);
	strcpy(long_name + 63, ".test");
	assert_true(dns_ok(long_name));
	for (int i = 0; i < 4; i++) {
		memset(long_name + i * 64, 'a', 63);
		long_name[i * 64 + 63] = '.';
	}
	long_name[253] = '\0'; /* 3 labels of 63 and one of 61 */
	long_name[252] = 'a';
	assert_true(dns_ok(long_name));
	long_name[253] = 'a';
	long_name[254] = '\0';
	assert_false(dns_ok(long_name));

	assert_true(uri_ok("spiffe://test.mtls/ns/prod/sa/app1"));
	assert_true(uri_ok("urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"));
	assert_true(uri_ok("https://[::1]:8443/a?b=c#d"));
	assert_true(uri_ok("https://u%20x@host/"));
	assert_false(uri_ok("spiffe:"));
	assert_false(uri_ok("://x"));
	assert_false(uri_ok("no scheme"));
	assert_false(uri_ok("https://host/%zz"));
	assert_false(uri_ok("https://host/%2"));
	assert_false(uri_ok("https://[::1/"));
	assert_false(uri_ok("https://u@/x"));
	assert_false(uri_ok("https://host/\x01"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_profile),
		cmocka_unit_test(test_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
