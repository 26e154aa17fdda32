/*
 * mtls renew: a fresh certificate for an enrollment directory (enroll.h) from the CA
 * service, authenticating with the certificate being renewed.
 *
 * Nothing happens before renew_after (two thirds into the certificate's life) unless
 * --force: run it from a timer as often as you like. The server is verified against
 * DIR/ca.pem alone. A new key is made unless --same-key. The renewal itself is
 * renewal_renew() (renew/renewal.h), as in the daemons: the new chain is checked (our key,
 * verifies to ca.pem, carries names) before it replaces cert.pem and key.pem as one change,
 * so the two files always match: a run killed half-way is finished (or taken back) by the
 * next run, due or not (renewal_recover()).
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "caclient.h"
#include "certfields.h"
#include "commands.h"
#include "enroll.h"
#include "files.h"
#include "keys.h"
#include "options.h"
#include "renewal.h"

struct renew_opts {
	const char *dir;
	const char *ca_url;
	const char *key_type;
	int same_key;
	int force;
};

#define O(f) offsetof(struct renew_opts, f)

static const struct opt renew_table[] = {
	{"dir", OPT_STRING, O(dir), "DIR",
	 "the directory mtls enroll wrote (cert.pem, key.pem, ca.pem, ca-url); required"},
	{"ca-url", OPT_STRING, O(ca_url), "URL",
	 "the CA's API URL, https://HOST:PORT (default: DIR/ca-url)"},
	{"same-key", OPT_FLAG, O(same_key), NULL, "keep the current key (default: a new one)"},
	{"force", OPT_FLAG, O(force), NULL, "renew now, even before renew_after"},
	{"key-type", OPT_STRING, O(key_type), "ALG",
	 "new key: p256, p384, ed25519, rsa3072, rsa4096 (default: the current key's type)"},
	OPT_END,
};

static void failmsg(const char *msg)
{
	fprintf(stderr, "mtls renew: %s\n", msg);
}

int cmd_renew(int argc, char **argv)
{
	struct renew_opts o = {0};
	struct options_state st = {0};
	struct renewal_result res;
	char err[8192], base[512], certp[PATH_MAX], keyp[PATH_MAX], cap[PATH_MAX], urlp[PATH_MAX],
		t1[32], t2[32];
	char *certpem = NULL, *urltext = NULL, *oldserial = NULL;
	size_t cert_len = 0;
	BIO *bio = NULL;
	X509 *leaf = NULL;
	time_t now = time(NULL), nb, na, due;
	int rc = 2;

	rc = enroll_options("renew", "mtls renew --dir DIR [--ca-url URL] [--same-key] [--force]",
			    "Renew the certificate in DIR (written by mtls enroll) at the CA "
			    "service, authenticating\nwith it. Before renew_after (two thirds "
			    "into its life) it does nothing unless --force, so\nit can run from a "
			    "timer. The server is verified against DIR/ca.pem; the CA's URL is "
			    "read\nfrom DIR/ca-url unless --ca-url. cert.pem and key.pem are "
			    "replaced together (a running\nmtls server/connector reloads them; "
			    "one started with --ca-url renews by itself).\n"
			    "Exit status: 0 renewed or not due, 1 failure (the CA's message), 2 "
			    "usage.",
			    renew_table, &o, argc, argv, &st);
	if (rc >= 0)
		goto out;
	rc = 2;
	if (o.dir == NULL) {
		failmsg("give --dir DIR (the directory mtls enroll wrote); see --help");
		goto out;
	}
	if (o.key_type != NULL && !renewal_key_type_known(o.key_type)) {
		snprintf(err, sizeof(err), "unknown key type '%s'; use one of %s", o.key_type,
			 keys_algorithms());
		failmsg(err);
		goto out;
	}
	if (enroll_path(certp, sizeof(certp), o.dir, "cert.pem") != 0 ||
	    enroll_path(keyp, sizeof(keyp), o.dir, "key.pem") != 0 ||
	    enroll_path(cap, sizeof(cap), o.dir, "ca.pem") != 0 ||
	    enroll_path(urlp, sizeof(urlp), o.dir, "ca-url") != 0) {
		failmsg("--dir is too long");
		goto out;
	}
	if (o.ca_url != NULL &&
	    caclient_base_url(o.ca_url, base, sizeof(base), err, sizeof(err)) != 0) {
		failmsg(err);
		goto out;
	}
	rc = 1;
	{
		/* a renewal or enrollment that a crash cut short: finished or taken back first,
		 * so that cert.pem and key.pem match again (due or not) */
		struct renewal_files f = {certp, keyp, cap};

		if (renewal_recover(&f, err, sizeof(err)) != 0) {
			failmsg(err);
			goto out;
		}
	}
	certpem = files_read(certp, &cert_len, err, sizeof(err));
	if (certpem == NULL) {
		failmsg(err);
		goto out;
	}
	bio = BIO_new_mem_buf(certpem, (int)cert_len);
	leaf = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	ERR_clear_error();
	if (leaf == NULL) {
		snprintf(err, sizeof(err), "%s holds no PEM certificate; enroll again", certp);
		failmsg(err);
		goto out;
	}
	if (o.ca_url == NULL) {
		urltext = files_read(urlp, NULL, err, sizeof(err));
		if (urltext == NULL) {
			size_t l = strlen(err);

			snprintf(err + l, sizeof(err) - l, "; give --ca-url");
			failmsg(err);
			goto out;
		}
		urltext[strcspn(urltext, "\r\n")] = '\0';
	}
	nb = certfields_time(X509_get0_notBefore(leaf));
	na = certfields_time(X509_get0_notAfter(leaf));
	due = nb + (na - nb) / 3 * 2;
	oldserial = certfields_serial_hex(leaf);
	if (!o.force && now < due) {
		enroll_utc(due, t1);
		enroll_utc(na, t2);
		printf("not due until %s (serial %s valid until %s); --force renews now\n", t1,
		       oldserial != NULL ? oldserial : "?", t2);
		rc = 0;
		goto out;
	}
	{
		struct renewal_files f = {certp, keyp, cap};

		rc = renewal_renew(o.ca_url != NULL ? o.ca_url : urltext, &f, o.key_type,
				   o.same_key != 0, NULL, &res, err, sizeof(err));
		if (rc != 0) {
			if (rc == -1 && strstr(err, "was issued but not written") != NULL)
				snprintf(err + strlen(err), sizeof(err) - strlen(err),
					 ": run mtls renew again");
			failmsg(err);
			rc = rc == RENEWAL_USAGE ? 2 : 1;
			goto out;
		}
	}
	enroll_utc(res.not_after, t1);
	enroll_utc(res.not_before + (res.not_after - res.not_before) / 3 * 2, t2);
	printf("renewed: serial %s (was %s), %s, %s, valid until %s, renew after %s\n", res.serial,
	       res.old_serial, res.names, res.same_key ? "same key" : "new key", t1, t2);
	rc = 0;
out:
	free(certpem);
	free(urltext);
	free(oldserial);
	BIO_free(bio);
	X509_free(leaf);
	options_free(&st);
	return rc;
}
