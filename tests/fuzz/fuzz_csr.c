/*
 * libFuzzer target: issuance policy (ca/grant.c) on arbitrary bytes.
 *
 * The input is read as a CSR (PEM or DER) and compared with three grants, as `mtls ca issue
 * --csr` and the CA service do; the same bytes, as text, are also offered as a DNS name, an
 * IP address, a URI and a common name. A CSR comes from whoever asks for a certificate, and
 * names will come from enrollment tokens: every byte is untrusted. The signature is checked
 * first in real use; here the comparison also runs without it, so that mutated inputs reach
 * it.
 *
 * Invariants: a refusal has a message; a CSR that matches a grant has at most one extension
 * request (extReq or msExtReq, one value), asks for no name outside it (checked here independently:
 * DNS without regard to case, IP and URI byte for byte), no name of another type, no CA:TRUE, and
 * its common name (if any) is the granted one or a granted name; an accepted DNS name is lower case
 * LDH, an accepted URI has no control byte, no "." or ".." segment and no percent-encoded '/' (and
 * a SPIFFE ID follows its rules), and an accepted common name has no control byte.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/x509v3.h>

#include "grant.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond) ((cond) ? (void)0 : fail(#cond, __LINE__))

__attribute__((noreturn)) static void fail(const char *what, int line)
{
	fprintf(stderr, "fuzz_csr.c:%d: invariant failed: %s\n", line, what);
	abort();
}

enum { G_EMPTY, G_NAMES, G_TOKEN, NGRANTS };
static struct grant grants[NGRANTS];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char err[512];

	(void)argc;
	(void)argv;
	check(grant_init(&grants[G_EMPTY], "client", GRANT_OPERATOR, err, sizeof(err)) == 0);
	for (int i = G_NAMES; i <= G_TOKEN; i++) {
		struct grant *g = &grants[i];

		check(grant_init(g, "peer", i == G_TOKEN ? GRANT_TOKEN : GRANT_OPERATOR, err,
				 sizeof(err)) == 0);
		check(grant_add_dns(&g->names, "app.example.org", err, sizeof(err)) == 0);
		check(grant_add_dns(&g->names, "*.app.example.org", err, sizeof(err)) == 0);
		check(grant_add_ip(&g->names, "10.0.0.1", err, sizeof(err)) == 0);
		check(grant_add_ip(&g->names, "fd00::1", err, sizeof(err)) == 0);
		check(grant_add_uri(&g->names, "spiffe://example.org/ns/prod/sa/app", err,
				    sizeof(err)) == 0);
		if (i == G_NAMES)
			check(grant_set_cn(g, "app", err, sizeof(err)) == 0);
	}
	return 0;
}

/* Independently of grant.c: is this SAN of the CSR one of the granted names? */
static bool in_grant(const struct grant *g, const GENERAL_NAME *name)
{
	for (int i = 0; i < sk_GENERAL_NAME_num(g->names.names); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(g->names.names, i);
		const ASN1_STRING *a = gn->d.ia5, *b = name->d.ia5;

		if (gn->type != name->type || ASN1_STRING_length(a) != ASN1_STRING_length(b))
			continue;
		if (name->type == GEN_DNS
			    ? strncasecmp((const char *)ASN1_STRING_get0_data(a),
					  (const char *)ASN1_STRING_get0_data(b),
					  (size_t)ASN1_STRING_length(a)) == 0 &&
				      memchr(ASN1_STRING_get0_data(b), 0,
					     (size_t)ASN1_STRING_length(b)) == NULL
			    : memcmp(ASN1_STRING_get0_data(a), ASN1_STRING_get0_data(b),
				     (size_t)ASN1_STRING_length(a)) == 0)
			return true;
	}
	return false;
}

static void check_accepted(const struct grant *g, const struct grant_request *r)
{
	STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(r->req);
	const char *cn = grant_cn(g, r);
	int requests = 0;

	/* the extensions checked below are all it asks for: one extension request, one value */
	for (int i = 0; i < X509_REQ_get_attr_count(r->req); i++) {
		X509_ATTRIBUTE *a = X509_REQ_get_attr(r->req, i);
		int nid = OBJ_obj2nid(X509_ATTRIBUTE_get0_object(a));

		if (nid == NID_ext_req || nid == NID_ms_ext_req) {
			check(X509_ATTRIBUTE_count(a) == 1);
			requests++;
		}
	}
	check(requests <= 1);

	for (int i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
		X509_EXTENSION *ext = sk_X509_EXTENSION_value(exts, i);
		int nid = OBJ_obj2nid(X509_EXTENSION_get_object(ext));

		if (nid == NID_subject_alt_name) {
			GENERAL_NAMES *gens = X509V3_EXT_d2i(ext);

			check(gens != NULL);
			for (int j = 0; j < sk_GENERAL_NAME_num(gens); j++)
				check(in_grant(g, sk_GENERAL_NAME_value(gens, j)));
			GENERAL_NAMES_free(gens);
		} else if (nid == NID_basic_constraints) {
			BASIC_CONSTRAINTS *bc = X509V3_EXT_d2i(ext);

			check(bc != NULL && !bc->ca);
			BASIC_CONSTRAINTS_free(bc);
		}
	}
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	if (r->cn[0] != '\0')
		check(cn != NULL);
	if (cn != NULL) {
		check(strlen(cn) > 0 && strlen(cn) <= 256);
		for (const char *p = cn; *p != '\0'; p++)
			check((unsigned char)*p >= 0x20 && *p != 0x7f);
	}
}

static void compare(const uint8_t *data, size_t size)
{
	struct grant_request r;
	char err[1024] = "";

	if (grant_request_read(&r, data, size, "fuzz.csr", err, sizeof(err)) != 0) {
		check(err[0] != '\0' && strlen(err) < sizeof(err));
		return;
	}
	check(r.req != NULL && r.key != NULL);
	if (grant_request_verify(&r, "fuzz.csr", err, sizeof(err)) != 0)
		check(err[0] != '\0');
	for (int i = 0; i < NGRANTS; i++) {
		err[0] = '\0';
		if (grant_match(&grants[i], &r, "fuzz.csr", err, sizeof(err)) == 0)
			check_accepted(&grants[i], &r);
		else
			check(err[0] != '\0' && r.cn[0] == '\0');
	}
	grant_request_free(&r);
}

/* Independently of grant.c: no "." or ".." path segment, raw or percent-encoded, no
 * percent-encoded '/'; a SPIFFE ID has a lower-case trust domain and only [A-Za-z0-9._-]
 * in its path. */
static void check_uri(const char *uri)
{
	const char *p = strstr(uri, "://");
	bool spiffe = strncmp(uri, "spiffe://", 9) == 0;

	check(p != NULL);
	for (const char *q = uri; *q != '\0'; q++)
		check(!(q[0] == '%' && q[1] == '2' && (q[2] == 'f' || q[2] == 'F')));
	if (spiffe)
		for (const char *q = uri + 9; *q != '\0' && *q != '/'; q++)
			check((*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') || *q == '.' ||
			      *q == '-' || *q == '_');
	p = p + 3 + strcspn(p + 3, "/?#");
	while (*p == '/') {
		size_t n = strcspn(p + 1, "/?#"), dots = 0, i = 1;

		while (i <= n) {
			if (p[i] == '.') {
				i++;
			} else if (p[i] == '%' && i + 2 <= n && p[i + 1] == '2' &&
				   (p[i + 2] == 'e' || p[i + 2] == 'E')) {
				i += 3;
			} else {
				dots = 99;
				break;
			}
			dots++;
		}
		check(dots != 1 && dots != 2);
		if (spiffe) {
			check(n > 0);
			for (i = 1; i <= n; i++)
				check((p[i] >= 'a' && p[i] <= 'z') ||
				      (p[i] >= 'A' && p[i] <= 'Z') ||
				      (p[i] >= '0' && p[i] <= '9') || p[i] == '.' || p[i] == '-' ||
				      p[i] == '_');
		}
		p += 1 + n;
	}
	if (spiffe)
		check(*p == '\0');
}

static void names(const uint8_t *data, size_t size)
{
	struct grant_names n;
	char text[4096], err[1024];

	if (size >= sizeof(text))
		return;
	memcpy(text, data, size);
	text[size] = '\0';
	grant_names_init(&n);
	if (grant_add_dns(&n, text, err, sizeof(err)) == 0) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(n.names, 0);

		check(strlen(text) <= 253);
		for (const unsigned char *p = ASN1_STRING_get0_data(g->d.ia5); *p != '\0'; p++)
			check((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' ||
			      *p == '.' || (*p == '*' && p == ASN1_STRING_get0_data(g->d.ia5)));
	}
	if (grant_add_uri(&n, text, err, sizeof(err)) == 0) {
		check(strlen(text) <= 2048);
		for (const char *p = text; *p != '\0'; p++)
			check(*p > ' ' && *p < 0x7f);
		check_uri(text);
	}
	(void)grant_add_ip(&n, text, err, sizeof(err));
	check(sk_GENERAL_NAME_num(n.names) == n.ndns + n.nip + n.nuri);
	if (grant_check_cn(text, err, sizeof(err)) == 0) {
		check(size > 0);
		for (const char *p = text; *p != '\0'; p++)
			check((unsigned char)*p >= 0x20 && *p != 0x7f);
	}
	grant_names_free(&n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 64 * 1024)
		return 0;
	compare(data, size);
	names(data, size);
	return 0;
}
