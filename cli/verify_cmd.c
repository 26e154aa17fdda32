/*
 * mtls verify: check a certificate exactly as an mtls server (purpose client) or connector
 * (purpose server) would, and explain the result.
 *
 * Exit 0 accepted (prints the identity), 1 refused (prints reason code and message),
 * 2 usage or configuration error.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "commands.h"
#include "files.h"
#include "mtls.h"
#include "options.h"

struct verify_opts {
	const char *ca;
	const char *untrusted;
	const char *purpose;
	const char *dns;
	const char *ip;
	const char *uri;
	const char *email;
	const char *at;
	struct opt_list crl;
	int crl_check_chain;
	long long crl_grace;
	struct opt_list allow_uri;
	struct opt_list allow_dns;
	struct opt_list allow_cn;
	struct opt_list allow_email;
	struct opt_list allow_spki;
	struct opt_list allow_cert;
	int allow_any;
	long long max_depth;
	const char *config;
};

#define O(field) offsetof(struct verify_opts, field)

static const struct opt verify_table[] = {
	{"ca", OPT_STRING, O(ca), "FILE", "trusted root CA bundle (PEM); required"},
	{"untrusted", OPT_STRING, O(untrusted), "FILE",
	 "intermediate certificates to build the chain with"},
	{"purpose", OPT_STRING, O(purpose), "client|server",
	 "verify as a server checks a client (default) or as a connector checks a server"},
	{"dns", OPT_STRING, O(dns), "NAME", "expected server DNS name (purpose server)"},
	{"ip", OPT_STRING, O(ip), "ADDR", "expected server IP address (purpose server)"},
	{"uri", OPT_STRING, O(uri), "URI", "the certificate must carry this URI SAN"},
	{"email", OPT_STRING, O(email), "ADDR",
	 "the certificate must carry this email SAN (domain compared ignoring case)"},
	{"at", OPT_STRING, O(at), "TIME",
	 "verify at this time (2026-01-31T12:00:00Z or @UNIXSECONDS) instead of now"},
	{"crl", OPT_LIST, O(crl), "FILE", "CRL file (PEM); enables revocation checking"},
	{"crl-check-chain", OPT_FLAG, O(crl_check_chain), NULL,
	 "check revocation of every certificate in the chain, not only the leaf"},
	{"crl-grace", OPT_DURATION_S, O(crl_grace), "DURATION",
	 "accept a CRL this long past its nextUpdate, with a warning (e.g. 1h; default 0)"},
	{"allow-uri", OPT_LIST, O(allow_uri), "PATTERN",
	 "allow this URI SAN (a path segment may be *)"},
	{"allow-dns", OPT_LIST, O(allow_dns), "NAME", "allow this DNS SAN (*.example.org)"},
	{"allow-cn", OPT_LIST, O(allow_cn), "CN", "allow this subject common name"},
	{"allow-email", OPT_LIST, O(allow_email), "PATTERN",
	 "allow this email SAN (name@example.org, or *@example.org for the domain)"},
	{"allow-spki", OPT_LIST, O(allow_spki), "SHA256", "pin: SHA-256 of the public key"},
	{"allow-cert", OPT_LIST, O(allow_cert), "SHA256", "pin: SHA-256 of the certificate"},
	{"allow-any", OPT_FLAG, O(allow_any), NULL,
	 "accept any identity from the CA (the default when no allow rule is given)"},
	{"max-depth", OPT_INT, O(max_depth), "N", "maximum intermediates (default 4)"},
	{"config", OPT_STRING, O(config), "FILE", "read options from FILE"},
	OPT_END,
};

static const char verify_usage[] = "mtls verify [options] --ca FILE CERT";
static const char verify_about[] =
	"Verify the certificate chain in CERT (PEM: leaf first, then intermediates) exactly as\n"
	"mtls server (--purpose client) or mtls connector (--purpose server) would, and explain\n"
	"the result. Exit status: 0 accepted, 1 refused, 2 usage or configuration error.";

static int parse_time(const char *s, time_t *out)
{
	struct tm tm = {0};
	const char *end;

	if (s[0] == '@') {
		char *e = NULL;
		long long v = strtoll(s + 1, &e, 10);

		if (e == s + 1 || *e != '\0' || v < 0)
			return -1;
		*out = (time_t)v;
		return 0;
	}
	end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (end == NULL || *end != '\0')
		return -1;
	*out = timegm(&tm);
	return 0;
}

static int add_rules(struct mtls_config *cfg, const struct opt_list *l,
		     int (*add)(struct mtls_config *, const char *))
{
	for (size_t i = 0; i < l->n; i++)
		if (add(cfg, l->v[i]) != 0)
			return -1;
	return 0;
}

static int build_config(const struct verify_opts *o, struct mtls_config *cfg, bool server_side)
{
	bool rules = o->allow_uri.n + o->allow_dns.n + o->allow_cn.n + o->allow_email.n +
			     o->allow_spki.n + o->allow_cert.n >
		     0;
	time_t at;

	if (mtls_config_set_ca_file(cfg, o->ca) != 0)
		return -1;
	for (size_t i = 0; i < o->crl.n; i++)
		if (mtls_config_add_crl_file(cfg, o->crl.v[i]) != 0)
			return -1;
	if (mtls_config_set_crl_check_chain(cfg, o->crl_check_chain) != 0 ||
	    mtls_config_set_crl_grace(cfg, o->crl_grace) != 0 ||
	    mtls_config_set_verify_depth(cfg, (int)o->max_depth) != 0)
		return -1;
	if (add_rules(cfg, &o->allow_uri, mtls_config_allow_uri) != 0 ||
	    add_rules(cfg, &o->allow_dns, mtls_config_allow_dns) != 0 ||
	    add_rules(cfg, &o->allow_cn, mtls_config_allow_cn) != 0 ||
	    add_rules(cfg, &o->allow_email, mtls_config_allow_email) != 0 ||
	    add_rules(cfg, &o->allow_spki, mtls_config_allow_spki_sha256) != 0 ||
	    add_rules(cfg, &o->allow_cert, mtls_config_allow_cert_sha256) != 0)
		return -1;
	if (server_side && (o->allow_any || !rules))
		mtls_config_set_allow_any_identity(cfg, 1);
	if (o->at != NULL) {
		if (parse_time(o->at, &at) != 0) {
			fprintf(stderr,
				"mtls verify: --at %s: give a time as 2026-01-31T12:00:00Z or "
				"@UNIXSECONDS\n",
				o->at);
			return -2;
		}
		mtls_config_set_verify_time(cfg, at);
	}
	return 0;
}

static void print_list(const char *label, size_t n,
		       const char *(*get)(const struct mtls_peer *, size_t),
		       const struct mtls_peer *p)
{
	if (n == 0)
		return;
	printf("  %-12s", label);
	for (size_t i = 0; i < n; i++)
		printf("%s%s", i > 0 ? ", " : "", get(p, i));
	printf("\n");
}

/* Does the leaf (the first certificate of pem) carry the email SAN addr? OpenSSL's rule:
 * the domain ignoring case, the local part exactly; SANs only, not the subject. */
static bool has_email(const char *pem, size_t len, const char *addr)
{
	BIO *bio = BIO_new_mem_buf(pem, (int)len);
	X509 *leaf = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	bool found = leaf != NULL &&
		     X509_check_email(leaf, addr, 0, X509_CHECK_FLAG_NEVER_CHECK_SUBJECT) == 1;

	X509_free(leaf);
	BIO_free(bio);
	ERR_clear_error();
	return found;
}

static void print_peer(const struct mtls_peer *p, const char *warning)
{
	char nb[32], na[32];
	time_t t;
	struct tm tm;

	t = mtls_peer_not_before(p);
	strftime(nb, sizeof(nb), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
	t = mtls_peer_not_after(p);
	strftime(na, sizeof(na), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
	printf("accepted: %s\n", mtls_peer_identity(p));
	printf("  %-12s%s\n", "subject:", mtls_peer_subject(p));
	printf("  %-12s%s\n", "issuer:", mtls_peer_issuer(p));
	printf("  %-12s%s\n", "serial:", mtls_peer_serial(p));
	printf("  %-12s%s .. %s\n", "valid:", nb, na);
	print_list("uri:", mtls_peer_uri_count(p), mtls_peer_uri, p);
	print_list("dns:", mtls_peer_dns_count(p), mtls_peer_dns, p);
	print_list("ip:", mtls_peer_ip_count(p), mtls_peer_ip, p);
	print_list("email:", mtls_peer_email_count(p), mtls_peer_email, p);
	printf("  %-12s%s\n", "spki sha256:", mtls_peer_spki_sha256(p));
	printf("  %-12s%s\n", "cert sha256:", mtls_peer_cert_sha256(p));
	printf("  %-12s%s\n", "allowed by:",
	       mtls_peer_matched_rule(p) != NULL ? mtls_peer_matched_rule(p) : "chain only");
	if (warning != NULL)
		printf("warning: %s\n", warning);
}

int cmd_verify(int argc, char **argv)
{
	struct verify_opts o = {.purpose = "client", .max_depth = 4};
	struct options_state st = {0};
	struct mtls_config *cfg = NULL;
	struct mtls *ep = NULL;
	char *pem = NULL, *extra = NULL;
	size_t len = 0, extra_len = 0;
	bool server_side;
	const char *name;
	char err[512];
	int rc = 2, brc;

	if (options_parse(verify_table, &o, argc, argv, &st, err, sizeof(err)) != 0) {
		fprintf(stderr, "mtls verify: %s\n", err);
		goto out;
	}
	if (st.help) {
		options_help(stdout, verify_usage, verify_about, verify_table);
		rc = 0;
		goto out;
	}
	if (st.positional.n != 1 || o.ca == NULL) {
		fprintf(stderr, "mtls verify: give --ca FILE and exactly one CERT file; see "
				"mtls verify --help\n");
		goto out;
	}
	if (strcmp(o.purpose, "client") != 0 && strcmp(o.purpose, "server") != 0) {
		fprintf(stderr, "mtls verify: --purpose is client or server, not '%s'\n",
			o.purpose);
		goto out;
	}
	server_side = strcmp(o.purpose, "client") == 0;
	name = o.dns != NULL ? o.dns : o.ip;
	if (!server_side && name == NULL) {
		fprintf(stderr, "mtls verify: --purpose server needs the expected --dns NAME or "
				"--ip ADDR, as a connector always checks the server's name\n");
		goto out;
	}
	if (o.dns != NULL && o.ip != NULL) {
		fprintf(stderr, "mtls verify: give --dns or --ip, not both\n");
		goto out;
	}
	cfg = mtls_config_new();
	ep = server_side ? mtls_server_new() : mtls_client_new();
	if (cfg == NULL || ep == NULL) {
		fprintf(stderr, "mtls verify: out of memory\n");
		goto out;
	}
	brc = build_config(&o, cfg, server_side);
	if (brc == -1) {
		fprintf(stderr, "mtls verify: %s\n", mtls_config_error(cfg));
		goto out;
	}
	if (brc != 0)
		goto out;
	if (mtls_configure(ep, cfg) != 0) {
		fprintf(stderr, "mtls verify: %s\n", mtls_error(ep));
		goto out;
	}
	pem = files_read(st.positional.v[0], &len, err, sizeof(err));
	if (pem == NULL) {
		fprintf(stderr, "mtls verify: certificate: %s\n", err);
		goto out;
	}
	if (o.untrusted != NULL) {
		char *both;

		extra = files_read(o.untrusted, &extra_len, err, sizeof(err));
		if (extra == NULL || (both = realloc(pem, len + 1 + extra_len + 1)) == NULL) {
			fprintf(stderr, "mtls verify: intermediates: %s\n",
				extra == NULL ? err : "out of memory");
			goto out;
		}
		pem = both;
		pem[len++] = '\n';
		memcpy(pem + len, extra, extra_len);
		len += extra_len;
		pem[len] = '\0';
	}
	if (mtls_verify_chain_pem(ep, (const uint8_t *)pem, len, name, o.uri) != 0) {
		enum mtls_reason r = mtls_error_reason(ep);

		rc = r == MTLS_REASON_USAGE || r == MTLS_REASON_INTERNAL ? 2 : 1;
		printf("refused: %s: %s\n", mtls_reason_name(r), mtls_error(ep));
		goto out;
	}
	if (o.email != NULL && !has_email(pem, len, o.email)) {
		const struct mtls_peer *p = mtls_verified_peer(ep);

		rc = 1;
		printf("refused: %s: %s certificate rejected: it does not carry the email address "
		       "%s (identity %s, serial %s); use the certificate issued for that address\n",
		       mtls_reason_name(MTLS_REASON_NAME_MISMATCH),
		       server_side ? "client" : "server", o.email, mtls_peer_identity(p),
		       mtls_peer_serial(p));
		goto out;
	}
	print_peer(mtls_verified_peer(ep), mtls_conn_warning(ep));
	rc = 0;
out:
	free(pem);
	free(extra);
	mtls_free(ep);
	mtls_config_free(cfg);
	options_free(&st);
	return rc;
}
