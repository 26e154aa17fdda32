/*
 * libFuzzer target: describing a peer certificate (lib/identity.c) and checking it against
 * allow rules (lib/policy.c).
 *
 * The input is a DER certificate. In a handshake identity_from_cert() only sees certificates
 * whose chain verified, but everything it reads (names, SANs, serial, key) is chosen by
 * whoever asked the CA, so it must cope with any well-formed DER. Seeds: gen-seeds.sh.
 *
 * Invariants: a certificate that cannot be described is refused as bad_certificate (not
 * "out of memory"), with a message of printable ASCII; no SAN is empty; no SAN and no CN
 * holds a control byte (C0, DEL; a C1 control in a CN); a URI SAN kept is at most 2048
 * printable bytes with no dot segment; the primary identity follows the rule in mtls.h and
 * is never ""; a refusal by the allow rules is one line of printable ASCII.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "fuzz_certs.h"
#include "internal.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond) ((cond) ? (void)0 : fail(#cond, __LINE__))

__attribute__((noreturn)) static void fail(const char *what, int line)
{
	fprintf(stderr, "fuzz_identity.c:%d: invariant failed: %s\n", line, what);
	abort();
}

enum { P_NAMES, P_PINS, P_BOTH, P_ANY, NPOLICIES };

static struct mtls_config *configs[NPOLICIES];
static struct policy *policies[NPOLICIES];

static struct mtls_config *make_config(bool names, bool pins, bool any)
{
	struct mtls_config *c = mtls_config_new();

	check(c != NULL);
	if (names) {
		check(mtls_config_allow_uri(c, "spiffe://example.org/ns/*/sa/api") == 0);
		check(mtls_config_allow_uri(c, "spiffe://example.org/ns/prod/sa/web") == 0);
		check(mtls_config_allow_dns(c, "*.example.org") == 0);
		check(mtls_config_allow_dns(c, "localhost.") == 0);
		check(mtls_config_allow_cn(c, "legacy-client") == 0);
		check(mtls_config_allow_email(c, "*@example.org") == 0);
		check(mtls_config_allow_email(c, "ops@example.net") == 0);
	}
	if (pins) {
		check(mtls_config_allow_spki_sha256(c, FUZZ_CLIENT_SPKI_SHA256) == 0);
		check(mtls_config_allow_cert_sha256(
			      c, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=") == 0);
	}
	check(mtls_config_set_allow_any_identity(c, any) == 0);
	return c;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct error err;

	(void)argc;
	(void)argv;
	configs[P_NAMES] = make_config(true, false, false);
	configs[P_PINS] = make_config(false, true, false);
	configs[P_BOTH] = make_config(true, true, false);
	configs[P_ANY] = make_config(false, false, true);
	for (int i = 0; i < NPOLICIES; i++) {
		error_clear(&err);
		policies[i] = policy_new(configs[i], &err);
		check(policies[i] != NULL);
	}
	return 0;
}

static bool has_prefix(const char *s, const char *prefix)
{
	return s != NULL && strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool printable(const char *s)
{
	for (; *s != '\0'; s++)
		if (*s < 0x20 || *s > 0x7e)
			return false;
	return true;
}

static bool has_control(const char *s)
{
	for (const unsigned char *u = (const unsigned char *)s; *u != '\0'; u++)
		if (*u < 0x20 || *u == 0x7f || (u[0] == 0xc2 && u[1] >= 0x80 && u[1] <= 0x9f))
			return true;
	return false;
}

static void check_peer(const struct mtls_peer *p)
{
	char want[7 + 65];

	check(p->identity != NULL && p->subject != NULL && p->issuer != NULL && p->serial != NULL);
	check(p->identity[0] != '\0');
	for (size_t i = 0; i < p->uris.n; i++) {
		size_t n = strlen(p->uris.v[i]);

		/* a URI identity is bounded and printable, with no dot segment (identity.c
		 * refuses the rest) */
		check(n > 0 && n <= POLICY_URI_MAX);
		for (size_t j = 0; j < n; j++)
			check((unsigned char)p->uris.v[i][j] >= 0x20 && p->uris.v[i][j] != 0x7f);
		check(strstr(p->uris.v[i], "/../") == NULL && strstr(p->uris.v[i], "/./") == NULL);
	}
	for (size_t i = 0; i < p->dns.n; i++)
		check(p->dns.v[i][0] != '\0' && !has_control(p->dns.v[i]));
	for (size_t i = 0; i < p->emails.n; i++)
		check(p->emails.v[i][0] != '\0' && !has_control(p->emails.v[i]));
	check(p->cn == NULL || (p->cn[0] != '\0' && !has_control(p->cn)));
	check(strlen(p->cert_sha256) == 64 && strlen(p->spki_sha256) == 64);
	/* the primary identity is the first URI SAN, else DNS SAN, else CN, else the hash */
	if (p->uris.n > 0) {
		check(strcmp(p->identity, p->uris.v[0]) == 0);
	} else if (p->dns.n > 0) {
		check(strcmp(p->identity, p->dns.v[0]) == 0);
	} else if (p->cn != NULL) {
		check(strcmp(p->identity, p->cn) == 0);
	} else {
		snprintf(want, sizeof(want), "sha256:%s", p->cert_sha256);
		check(strcmp(p->identity, want) == 0);
	}
	check(mtls_peer_uri(p, mtls_peer_uri_count(p)) == NULL);
	check(mtls_peer_dns(p, mtls_peer_dns_count(p)) == NULL);
	check(mtls_peer_ip(p, mtls_peer_ip_count(p)) == NULL);
	check(mtls_peer_email(p, mtls_peer_email_count(p)) == NULL);
	for (size_t i = 0; i < mtls_peer_ip_count(p); i++)
		check(strlen(mtls_peer_ip(p, i)) > 0);
}

static void run_policy(int which, struct mtls_peer *p)
{
	struct error err;
	int rc;

	free(p->matched_rule);
	p->matched_rule = NULL;
	error_clear(&err);
	rc = policy_check(policies[which], p, "client", &err);
	check(rc == 0 || rc == -1);
	if (rc != 0) {
		check(err.reason == MTLS_REASON_IDENTITY_NOT_ALLOWED ||
		      err.reason == MTLS_REASON_PIN_MISMATCH);
		check(strlen(err.msg) < sizeof(err.msg) && printable(err.msg));
		return;
	}
	check(p->matched_rule != NULL);
	switch (which) {
	case P_NAMES:
	case P_BOTH:
		check(has_prefix(p->matched_rule, "uri:") || has_prefix(p->matched_rule, "dns:") ||
		      has_prefix(p->matched_rule, "cn:") || has_prefix(p->matched_rule, "email:"));
		break;
	case P_PINS:
		check(has_prefix(p->matched_rule, "spki:") || has_prefix(p->matched_rule, "cert:"));
		if (has_prefix(p->matched_rule, "spki:"))
			check(strcmp(p->spki_sha256, FUZZ_CLIENT_SPKI_SHA256) == 0);
		break;
	case P_ANY: check(strcmp(p->matched_rule, "any:ca") == 0); break;
	default: break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const unsigned char *der = data;
	struct mtls_peer *p;
	struct error err;
	char small[16], who[300];
	X509 *cert;

	if (size > 64 * 1024)
		return 0;
	cert = d2i_X509(NULL, &der, (long)size);
	if (cert == NULL)
		return 0;

	identity_describe(cert, who, sizeof(who));
	identity_describe(cert, small, sizeof(small));
	check(strlen(small) < sizeof(small));

	error_clear(&err);
	p = identity_from_cert(cert, &err);
	if (p == NULL) {
		/* malloc does not fail here (libFuzzer's limit aborts first) */
		check(err.reason == MTLS_REASON_BAD_CERTIFICATE);
		check(printable(err.msg));
	} else {
		check_peer(p);
		for (int i = 0; i < NPOLICIES; i++)
			run_policy(i, p);
		identity_free(p);
	}
	X509_free(cert);
	return 0;
}
