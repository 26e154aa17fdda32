/*
 * mtls ca issue: a certificate from a profile, with a key made here or a CSR made elsewhere.
 *
 * The options become a grant (ca/grant.h), which decides what the certificate carries and
 * what a CSR may ask for; this file only parses and writes. Everything is checked before
 * anything is written: the names, the CSR against the grant, the lifetime against the
 * issuer's, the output files. A CSR asking for more than was granted is refused and the
 * refusal is recorded in the audit log. The inventory row and its audit entry are committed
 * first; then the key and certificate files appear whole (temporary file + rename).
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>

#include "authority.h"
#include "ca_cmd.h"
#include "files.h"
#include "grant.h"
#include "issue.h"
#include "keys.h"

struct issue_opts {
	const char *dir;
	const char *profile;
	const char *cn;
	struct opt_list dns;
	struct opt_list ip;
	struct opt_list uri;
	const char *csr;
	const char *key;
	long long days;
	const char *out;
	const char *passphrase_file;
	const char *passphrase_env;
	const char *config;
};

#define O(f) offsetof(struct issue_opts, f)

static const struct opt issue_table[] = {
	CA_OPT_DIR(O),
	{"profile", OPT_STRING, O(profile), "NAME",
	 "server (serverAuth), client (clientAuth) or peer (both); required"},
	{"cn", OPT_STRING, O(cn), "NAME", "subject common name (default: the first name)"},
	{"dns", OPT_LIST, O(dns), "NAME", "DNS name (subjectAltName)"},
	{"ip", OPT_LIST, O(ip), "ADDR", "IP address (subjectAltName)"},
	{"uri", OPT_LIST, O(uri), "URI", "URI such as a SPIFFE ID (subjectAltName)"},
	{"csr", OPT_STRING, O(csr), "FILE",
	 "sign this CSR: only its key is used; every name it asks for must be given as --dns, "
	 "--ip, --uri or --cn"},
	{"key", OPT_STRING, O(key), "ALG",
	 "key to generate: p256 (default), p384, ed25519, "
	 "rsa3072, rsa4096"},
	{"days", OPT_INT, O(days), "DAYS", "lifetime (default: the profile's)"},
	{"out", OPT_STRING, O(out), "PREFIX",
	 "write PREFIX.pem, PREFIX-chain.pem and PREFIX.key; required"},
	CA_OPT_PASSPHRASE(O),
	CA_OPT_CONFIG(O),
	OPT_END,
};

static int add_names(const struct issue_opts *o, struct grant *g, char *err, size_t len)
{
	char why[512];

	for (size_t i = 0; i < o->dns.n; i++)
		if (grant_add_dns(&g->names, o->dns.v[i], err, len) != 0)
			return -1;
	for (size_t i = 0; i < o->ip.n; i++)
		if (grant_add_ip(&g->names, o->ip.v[i], err, len) != 0)
			return -1;
	for (size_t i = 0; i < o->uri.n; i++)
		if (grant_add_uri(&g->names, o->uri.v[i], err, len) != 0)
			return -1;
	if (o->cn != NULL && grant_set_cn(g, o->cn, why, sizeof(why)) != 0) {
		snprintf(err, len, "invalid --cn: %s", why);
		return -1;
	}
	return 0;
}

/* Read, authenticate and compare the CSR with the grant. 0, 1 the CSR cannot be used, 2 it
 * asks for more than was granted (err says what). */
static int check_csr(const char *path, const struct grant *g, struct grant_request *r, char *err,
		     size_t len)
{
	size_t n = 0;
	char *data = files_read(path, &n, err, len);
	int rc = 1;

	memset(r, 0, sizeof(*r));
	if (data == NULL)
		return 1;
	if (grant_request_read(r, data, n, path, err, len) == 0 &&
	    grant_request_verify(r, path, err, len) == 0)
		rc = grant_match(g, r, path, err, len) == 0 ? 0 : 2;
	free(data);
	return rc;
}

/* A refused CSR goes into the audit log (no key needed), then the one-line error. */
static void refuse_csr(const struct issue_opts *o, const struct grant *g,
		       const struct grant_request *r, const char *why)
{
	char err[1024] = "", *detail = NULL;
	struct authority *ca = authority_open(o->dir != NULL ? o->dir : ca_default_dir(),
					      AUTHORITY_EXCLUSIVE, err, sizeof(err));

	/* the whole grant and reason: the audit log is never cut short */
	if (ca != NULL &&
	    asprintf(&detail, "profile %s, granted %s; %s", o->profile,
		     g->names.text[0] != '\0' ? g->names.text : "no names", why) < 0) {
		detail = NULL;
		snprintf(err, sizeof(err), "out of memory");
	} else if (ca != NULL &&
		   (store_begin(ca->store) != 0 ||
		    store_audit(ca->store, authority_actor(), "issue-refused",
				r->subject[0] != '\0' ? r->subject : "(empty subject)",
				detail) != 0 ||
		    store_commit(ca->store) != 0)) {
		snprintf(err, sizeof(err), "%s", store_error(ca->store));
		store_rollback(ca->store);
	}
	if (err[0] != '\0')
		fprintf(stderr, "mtls ca issue: %s (not recorded in the audit log: %s)\n", why,
			err);
	else
		ca_fail("issue", why);
	free(detail);
	authority_close(ca);
}

/* Sign and record, retrying on the (astronomically unlikely) duplicate serial. */
static X509 *sign_and_record(struct authority *ca, const struct issue_spec *spec,
			     const char *profile, const struct grant_names *names, char *err,
			     size_t err_len)
{
	for (int attempt = 0; attempt < 4; attempt++) {
		X509 *cert = issue_sign(spec, ca->issuer, ca->issuer_key, err, err_len);
		struct store_cert c = {0};
		char *subject = NULL, spki[65], *detail = NULL;
		unsigned char *der = NULL;
		int len, rc;

		if (cert == NULL)
			return NULL;
		len = i2d_X509(cert, &der);
		issue_serial_hex(cert, c.serial, sizeof(c.serial));
		subject = issue_subject(cert);
		issue_spki_sha256(cert, spki);
		c.subject = subject;
		c.sans = names->text;
		c.spki_sha256 = spki;
		c.profile = profile;
		c.not_before = spec->not_before;
		c.not_after = spec->not_after;
		c.issued_at = time(NULL);
		c.der = der;
		c.der_len = len > 0 ? (size_t)len : 0;
		/* every name: the entry is never cut short */
		if (subject == NULL || asprintf(&detail, "serial %s, profile %s, %s", c.serial,
						profile, names->text) < 0) {
			detail = NULL;
			rc = -2;
		} else {
			rc = len > 0 ? store_add_cert(ca->store, &c) : -1;
		}
		if (rc == 0)
			rc = store_audit(ca->store, authority_actor(), "issue", subject, detail);
		OPENSSL_free(der);
		free(detail);
		free(subject);
		if (rc == 0)
			return cert;
		X509_free(cert);
		if (rc < 0) {
			snprintf(err, err_len, "%s",
				 rc == -2 ? "out of memory" : store_error(ca->store));
			return NULL;
		}
	}
	snprintf(err, err_len, "could not pick an unused serial number");
	return NULL;
}

int cmd_ca_issue(int argc, char **argv)
{
	struct issue_opts o = {.key = "p256", .days = -1};
	struct options_state st = {0};
	struct authority *ca = NULL;
	struct grant g = {0};
	struct grant_request req = {0};
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	char err[1024] = "", *pass = NULL;
	char path_cert[PATH_MAX], path_chain[PATH_MAX], path_key[PATH_MAX];
	char *leaf = NULL, *inter = NULL, *chain = NULL, *keypem = NULL;
	size_t leaf_len = 0, inter_len = 0, key_len = 0;
	time_t now = time(NULL), not_after;
	long days;
	int rc;

	rc = ca_parse("issue",
		      "mtls ca issue --profile server|client|peer --out PREFIX [names] [options]",
		      "Issue a certificate from the CA in --dir. The key is generated here "
		      "(PREFIX.key, mode 0600)\nunless --csr gives a request made elsewhere.",
		      issue_table, &o, argc, argv, &st);
	if (rc >= 0)
		goto out;
	rc = 2;
	if (st.positional.n != 0 || o.profile == NULL || o.out == NULL) {
		ca_fail("issue", "give --profile and --out; see mtls ca issue --help");
		goto out;
	}
	if (grant_init(&g, o.profile, GRANT_OPERATOR, err, sizeof(err)) != 0 ||
	    add_names(&o, &g, err, sizeof(err)) != 0) {
		ca_fail("issue", err);
		goto out;
	}
	snprintf(path_cert, sizeof(path_cert), "%s.pem", o.out);
	snprintf(path_chain, sizeof(path_chain), "%s-chain.pem", o.out);
	snprintf(path_key, sizeof(path_key), "%s.key", o.out);
	if (files_exists(path_cert) || files_exists(path_chain) ||
	    (o.csr == NULL && files_exists(path_key))) {
		snprintf(err, sizeof(err),
			 "%s.pem, -chain.pem or .key already exists; choose "
			 "another --out or remove them",
			 o.out);
		ca_fail("issue", err);
		goto out;
	}
	if (o.csr != NULL) {
		rc = check_csr(o.csr, &g, &req, err, sizeof(err));
		if (rc == 2)
			refuse_csr(&o, &g, &req, err);
		else if (rc != 0)
			ca_fail("issue", err);
		if (rc != 0) {
			rc = 1;
			goto out;
		}
		rc = 2;
		key = req.key;
		EVP_PKEY_up_ref(key);
	}
	if (grant_check(&g, err, sizeof(err)) != 0) {
		ca_fail("issue", err);
		goto out;
	}
	if (keys_passphrase(o.passphrase_file, o.passphrase_env, &pass, err, sizeof(err)) != 0) {
		ca_fail("issue", err);
		goto out;
	}
	rc = 1;
	ca = authority_open(o.dir != NULL ? o.dir : ca_default_dir(), AUTHORITY_EXCLUSIVE, err,
			    sizeof(err));
	if (ca == NULL || authority_load_key(ca, pass, err, sizeof(err)) != 0) {
		ca_fail("issue", err);
		goto out;
	}
	if (o.days != -1 && o.days < 1) {
		ca_fail("issue", "--days must be a positive number of days");
		rc = 2;
		goto out;
	}
	/* anything past ~2700 years is refused below against the issuer's notAfter */
	days = o.days != -1		? (long)(o.days < 1000000 ? o.days : 1000000)
	       : g.kind == ISSUE_SERVER ? ca->server_days
					: ca->client_days;
	not_after = now + days * 86400L;
	if (not_after > issue_time(X509_get0_notAfter(ca->issuer))) {
		char when[32];
		time_t limit = issue_time(X509_get0_notAfter(ca->issuer));
		struct tm tm;

		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&limit, &tm));
		snprintf(err, sizeof(err),
			 "a lifetime of %ld days ends after the issuing CA (%s); ask for at most "
			 "%ld days or renew the CA",
			 days, when, (long)((limit - now) / 86400L));
		ca_fail("issue", err);
		rc = 2;
		goto out;
	}
	if (key == NULL && (key = keys_generate(o.key, err, sizeof(err))) == NULL) {
		ca_fail("issue", err);
		rc = 2;
		goto out;
	}
	if (store_begin(ca->store) != 0) {
		ca_fail("issue", store_error(ca->store));
		goto out;
	}
	{
		struct issue_spec spec = {.kind = g.kind,
					  .cn = grant_cn(&g, o.csr != NULL ? &req : NULL),
					  .subject_key = key,
					  .names = g.names.names,
					  .not_before = now - 300,
					  .not_after = not_after,
					  .crl_url = ca->crl_url};

		cert = sign_and_record(ca, &spec, o.profile, &g.names, err, sizeof(err));
	}
	leaf = cert != NULL ? issue_cert_pem(cert, &leaf_len) : NULL;
	inter = leaf != NULL ? issue_cert_pem(ca->issuer, &inter_len) : NULL;
	chain = inter != NULL ? malloc(leaf_len + inter_len) : NULL;
	if (o.csr == NULL && chain != NULL)
		keypem = keys_to_pem(key, NULL, &key_len);
	if (chain == NULL || (o.csr == NULL && keypem == NULL)) {
		store_rollback(ca->store);
		ca_fail("issue", err[0] != '\0' ? err : "out of memory");
		goto out;
	}
	memcpy(chain, leaf, leaf_len);
	memcpy(chain + leaf_len, inter, inter_len);
	if (store_commit(ca->store) != 0) {
		store_rollback(ca->store);
		ca_fail("issue", store_error(ca->store));
		goto out;
	}
	/* the key first: a crash never leaves a certificate whose key is missing */
	if ((keypem != NULL &&
	     files_write(path_key, keypem, key_len, 0600, true, err, sizeof(err)) != 0) ||
	    files_write(path_cert, leaf, leaf_len, 0644, true, err, sizeof(err)) != 0 ||
	    files_write(path_chain, chain, leaf_len + inter_len, 0644, true, err, sizeof(err)) !=
		    0) {
		ca_fail("issue", err);
		goto out;
	}
	{
		char serial[64], when[32];
		struct tm tm;

		issue_serial_hex(cert, serial, sizeof(serial));
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&not_after, &tm));
		printf("issued %s certificate, serial %s, for %s, valid until %s\n", o.profile,
		       serial, g.names.text, when);
		printf("  certificate: %s\n  chain:       %s\n", path_cert, path_chain);
		if (keypem != NULL)
			printf("  key:         %s\n", path_key);
		if (req.ignored[0] != '\0')
			printf("  not granted from the CSR (the profile decides): %s\n",
			       req.ignored);
	}
	rc = 0;
out:
	grant_free(&g);
	grant_request_free(&req);
	keys_free_pem(keypem, key_len);
	free(leaf);
	free(inter);
	free(chain);
	X509_free(cert);
	EVP_PKEY_free(key);
	authority_close(ca);
	keys_free_passphrase(pass);
	options_free(&st);
	return rc;
}
