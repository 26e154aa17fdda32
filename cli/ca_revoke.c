/*
 * mtls ca revoke / mtls ca crl: revocation and CRL publication. Every revoke makes a new CRL
 * in the same transaction; the CRL file is written after the commit (commit, then publish).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "authority.h"
#include "ca_cmd.h"
#include "duration.h"
#include "files.h"
#include "issue.h"
#include "keys.h"
#include "caclient.h"
#include "revoke.h"

struct revoke_opts {
	const char *dir;
	const char *serial;
	const char *cert;
	const char *reason;
	int replace_missing;
	const char *passphrase_file;
	const char *passphrase_env;
	const char *config;
	const char *ca_url;
	const char *admin_cert;
	const char *admin_key;
	const char *ca_file;
	const char *valid_for;
};

#define O(f) offsetof(struct revoke_opts, f)

static const struct opt revoke_table[] = {
	CA_OPT_DIR(O),
	{"serial", OPT_STRING, O(serial), "HEX", "serial number of the certificate to revoke"},
	{"cert", OPT_STRING, O(cert), "FILE", "or: the certificate file to revoke"},
	{"reason", OPT_STRING, O(reason), "REASON",
	 "unspecified (default), keyCompromise, affiliationChanged, superseded, "
	 "cessationOfOperation, privilegeWithdrawn"},
	{"ca-url", OPT_STRING, O(ca_url), "URL",
	 "revoke through a running 'mtls ca serve' at https://HOST:PORT instead of in --dir"},
	{"admin-cert", OPT_STRING, O(admin_cert), "FILE",
	 "with --ca-url: an admin's client certificate chain (an --admin-uri of the service)"},
	{"admin-key", OPT_STRING, O(admin_key), "FILE", "with --ca-url: its key"},
	{"ca-file", OPT_STRING, O(ca_file), "FILE",
	 "with --ca-url: the CA's root bundle, to verify the service (default DIR/root.pem)"},
	CA_OPT_PASSPHRASE(O),
	CA_OPT_CONFIG(O),
	OPT_END,
};

static const struct opt crl_table[] = {
	CA_OPT_DIR(O),
	{"replace-missing", OPT_FLAG, O(replace_missing), NULL,
	 "crl.pem was lost and no copy is left: publish a new CRL anyway (its number jumps to "
	 "the current UNIX time, above any CRL published since the last one the log records)"},
	{"valid-for", OPT_STRING, O(valid_for), "DURATION",
	 "this CRL's validity (nextUpdate) instead of the CA's --crl-days, e.g. 30s: for drills "
	 "and tests of what the daemons do with an expired CRL"},
	CA_OPT_PASSPHRASE(O),
	CA_OPT_CONFIG(O),
	OPT_END,
};

/* The certificate in path (the first of a PEM file, or DER): its serial and DER (caller
 * frees with OPENSSL_free()). */
static int read_cert_file(const char *path, char *serial, size_t len, unsigned char **der,
			  int *der_len, char *err, size_t err_len)
{
	size_t n = 0;
	char *data = files_read(path, &n, err, err_len);
	BIO *bio = data != NULL ? BIO_new_mem_buf(data, (int)n) : NULL;
	X509 *cert = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;

	if (cert == NULL && data != NULL) {
		const unsigned char *p = (const unsigned char *)data;

		cert = d2i_X509(NULL, &p, (long)n);
	}
	BIO_free(bio);
	free(data);
	ERR_clear_error();
	*der = NULL;
	if (cert == NULL) {
		if (data != NULL)
			snprintf(err, err_len, "%s is not a certificate (PEM or DER)", path);
		return -1;
	}
	issue_serial_hex(cert, serial, len);
	*der_len = i2d_X509(cert, der);
	X509_free(cert);
	if (*der_len <= 0) {
		snprintf(err, err_len, "cannot encode the certificate in %s", path);
		return -1;
	}
	return 0;
}

static struct authority *open_signing(const char *cmd, const struct revoke_opts *o)
{
	char err[1024] = "", *pass = NULL;
	struct authority *ca = NULL;

	if (keys_passphrase(o->passphrase_file, o->passphrase_env, &pass, err, sizeof(err)) == 0) {
		ca = authority_open(o->dir != NULL ? o->dir : ca_default_dir(), AUTHORITY_EXCLUSIVE,
				    err, sizeof(err));
		if (ca != NULL && authority_load_key(ca, pass, err, sizeof(err)) != 0) {
			authority_close(ca);
			ca = NULL;
		}
	}
	keys_free_passphrase(pass);
	if (ca == NULL)
		ca_fail(cmd, err);
	return ca;
}

/* After the commit: write crl.pem. A failure here leaves the change committed, so say that
 * and how to publish it, and never that the inventory is damaged. */
static int publish(const char *cmd, struct authority *ca, const struct crl_pending *crl,
		   const char *committed)
{
	char err[1024] = "", msg[sizeof(ca->dir) + 2048];
	int e;

	if (crl_write(ca, crl, err, sizeof(err)) == 0)
		return 0;
	e = errno;
	if (e == ENOSPC || e == EDQUOT)
		snprintf(msg, sizeof(msg),
			 "%s while writing %s/crl.pem: %s; free space%s and run 'mtls ca crl' to "
			 "publish it",
			 e == ENOSPC ? "disk full" : "disk quota exceeded", ca->dir, committed,
			 e == ENOSPC ? "" : " within the quota (or have it raised)");
	else
		snprintf(msg, sizeof(msg), "%s: %s; fix this and run 'mtls ca crl' to publish it",
			 err, committed);
	ca_fail(cmd, msg);
	return -1;
}

int cmd_ca_revoke(int argc, char **argv)
{
	struct revoke_opts o = {.reason = "unspecified"};
	struct options_state st = {0};
	struct authority *ca = NULL;
	struct crl_pending crl = {0};
	struct revoke_request rq;
	enum store_failure kind;
	time_t at;
	char serial[64], err[1024] = "";
	unsigned char *der = NULL;
	int der_len = 0;
	int rc = ca_parse(
		"revoke",
		"mtls ca revoke (--serial HEX | --cert FILE) [--reason R] [--ca-url URL "
		"--admin-cert FILE --admin-key FILE]",
		"Revoke a certificate issued by the CA and publish a new CRL (DIR/crl.pem), in the "
		"CA directory\nor through a running 'mtls ca serve' (--ca-url).",
		revoke_table, &o, argc, argv, &st);

	if (rc >= 0)
		goto out;
	rc = 2;
	if (st.positional.n != 0 || (o.serial == NULL) == (o.cert == NULL)) {
		ca_fail("revoke", "give either --serial or --cert; see --help");
		goto out;
	}
	if (crl_reason_code(o.reason) < 0) {
		snprintf(err, sizeof(err), "unknown reason '%s'; use one of %s", o.reason,
			 crl_reason_names());
		ca_fail("revoke", err);
		goto out;
	}
	if (o.serial != NULL && revoke_serial(o.serial, serial, sizeof(serial)) != 0) {
		ca_fail("revoke", "--serial takes a hexadecimal serial number");
		goto out;
	}
	if (o.cert != NULL &&
	    read_cert_file(o.cert, serial, sizeof(serial), &der, &der_len, err, sizeof(err)) != 0) {
		ca_fail("revoke", err);
		goto out;
	}
	if (o.ca_url != NULL) {
		char root[PATH_MAX];

		if (o.admin_cert == NULL || o.admin_key == NULL) {
			ca_fail("revoke", "--ca-url needs --admin-cert and --admin-key");
			goto out;
		}
		if (o.ca_file == NULL) {
			snprintf(root, sizeof(root), "%s/root.pem",
				 o.dir != NULL ? o.dir : ca_default_dir());
			o.ca_file = root;
		}
		rc = caclient_revoke(o.ca_url, o.admin_cert, o.admin_key, o.ca_file, serial,
				     o.reason, err, sizeof(err)) == 0
			     ? 0
			     : 1;
		if (rc == 0)
			printf("%s\n", err);
		else
			ca_fail("revoke", err);
		goto out;
	}
	rc = 1;
	ca = open_signing("revoke", &o);
	if (ca == NULL)
		goto out;
	rq = (struct revoke_request){.serial = serial,
				     .reason = o.reason,
				     .der = der,
				     .der_len = (size_t)der_len,
				     .now = time(NULL),
				     .actor = authority_actor()};
	switch (revoke_commit(ca, &rq, &crl, &at, &kind, err, sizeof(err))) {
	case REVOKE_DONE: break;
	case REVOKE_UNKNOWN:
		snprintf(err, sizeof(err), "no certificate with serial %s in this CA's inventory",
			 serial);
		goto fail;
	case REVOKE_NOT_THIS:
		snprintf(err, sizeof(err),
			 "%s was not issued by this CA (serial %s belongs to another certificate)",
			 o.cert, serial);
		goto fail;
	case REVOKE_CA_CERT:
		snprintf(err, sizeof(err), "serial %s is a CA certificate; revoke leaves only",
			 serial);
		goto fail;
	case REVOKE_ALREADY:
		snprintf(err, sizeof(err), "serial %s is already revoked", serial);
		goto fail;
	default: goto fail;
	}
	if (publish("revoke", ca, &crl, "the revocation is committed") != 0)
		goto out;
	printf("revoked serial %s (%s); new CRL: %s/crl.pem\n", serial, o.reason, ca->dir);
	rc = 0;
	goto out;
fail:
	ca_fail("revoke", err);
out:
	OPENSSL_free(der);
	crl_pending_free(&crl);
	authority_close(ca);
	options_free(&st);
	return rc;
}

int cmd_ca_crl(int argc, char **argv)
{
	struct revoke_opts o = {0};
	struct options_state st = {0};
	struct authority *ca = NULL;
	struct crl_pending crl = {0};
	enum store_failure kind;
	char err[1024] = "", committed[64];
	long long valid_ms = 0;
	int rc = ca_parse("crl",
			  "mtls ca crl [--dir DIR] [--replace-missing] [--valid-for DURATION]",
			  "Publish a fresh CRL (DIR/crl.pem) with a new CRL number and nextUpdate.",
			  crl_table, &o, argc, argv, &st);

	if (rc >= 0)
		goto out;
	if (o.valid_for != NULL &&
	    duration_parse(o.valid_for, "--valid-for", 1000, 366LL * 86400000, &valid_ms, err,
			   sizeof(err)) != 0) {
		ca_fail("crl", err);
		rc = 2;
		goto out;
	}
	rc = 1;
	ca = open_signing("crl", &o);
	if (ca == NULL)
		goto out;
	ca->crl_seconds = (long)(valid_ms / 1000);
	if (o.replace_missing) {
		char path[PATH_MAX];

		if (files_exists(authority_path(ca, "crl.pem", path, sizeof(path)))) {
			ca_fail("crl", "--replace-missing is for a lost crl.pem, and crl.pem is "
				       "there; run 'mtls ca crl' without it");
			rc = 2;
			goto out;
		}
		ca->crl_replace_missing = true;
	}
	if (revoke_crl_commit(ca, time(NULL), authority_actor(), &crl, &kind, err, sizeof(err)) !=
	    0) {
		ca_fail("crl", err);
		goto out;
	}
	snprintf(committed, sizeof(committed), "CRL #%lld is committed", (long long)crl.number);
	if (publish("crl", ca, &crl, committed) != 0)
		goto out;
	if (o.valid_for != NULL)
		printf("published %s/crl.pem (valid %s)\n", ca->dir, o.valid_for);
	else
		printf("published %s/crl.pem (valid %ld days)\n", ca->dir, ca->crl_days);
	rc = 0;
out:
	crl_pending_free(&crl);
	authority_close(ca);
	options_free(&st);
	return rc;
}
