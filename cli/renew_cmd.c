/*
 * mtls renew: a fresh certificate for an enrollment directory (enroll.h) from the CA
 * service, authenticating with the certificate being renewed.
 *
 * Nothing happens before renew_after (two thirds into the certificate's life) unless
 * --force: run it from a timer as often as you like. The server is verified against
 * DIR/ca.pem alone. A new key is made unless --same-key. The new chain is checked (our key,
 * verifies to ca.pem, carries names) before it replaces cert.pem and key.pem, both staged
 * first, the chain published first and the key after it; if the key cannot be published the
 * old chain is put back, so the two files always match.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "caclient.h"
#include "certfields.h"
#include "commands.h"
#include "fileset.h"
#include "files.h"
#include "keys.h"
#include "options.h"

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
	 "new key: p256 (default), p384, ed25519, rsa3072"},
	OPT_END,
};

static void failmsg(const char *msg)
{
	fprintf(stderr, "mtls renew: %s\n", msg);
}

/* The first certificate of a PEM file, or NULL with the message. */
static X509 *first_cert(const char *text, size_t len, const char *path, char *err, size_t err_len)
{
	BIO *bio = BIO_new_mem_buf(text, (int)len);
	X509 *x = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;

	BIO_free(bio);
	ERR_clear_error();
	if (x == NULL)
		snprintf(err, err_len, "%s holds no PEM certificate; enroll again", path);
	return x;
}

int cmd_renew(int argc, char **argv)
{
	struct renew_opts o = {.key_type = "p256"};
	struct options_state st = {0};
	struct caclient_issued iss = {0};
	char err[8192], base[512], names[4096], certp[PATH_MAX], keyp[PATH_MAX], cap[PATH_MAX],
		urlp[PATH_MAX], t1[32], t2[32];
	char *certpem = NULL, *rootpem = NULL, *urltext = NULL, *keypem = NULL, *oldserial = NULL;
	size_t cert_len = 0, root_len = 0, key_len = 0;
	X509 *leaf = NULL, *root = NULL;
	EVP_PKEY *oldkey = NULL, *key = NULL;
	json_t *req = NULL;
	time_t now = time(NULL), nb, na, due;
	int rc = 2, lock = -1;

	rc = enroll_options("renew", "mtls renew --dir DIR [--ca-url URL] [--same-key] [--force]",
			    "Renew the certificate in DIR (written by mtls enroll) at the CA "
			    "service, authenticating\nwith it. Before renew_after (two thirds "
			    "into its life) it does nothing unless --force, so\nit can run from a "
			    "timer. The server is verified against DIR/ca.pem; the CA's URL is "
			    "read\nfrom DIR/ca-url unless --ca-url. cert.pem and key.pem are "
			    "replaced together (a running\nmtls server/connector reloads them).\n"
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
	if (enroll_path(certp, sizeof(certp), o.dir, "cert.pem") != 0 ||
	    enroll_path(keyp, sizeof(keyp), o.dir, "key.pem") != 0 ||
	    enroll_path(cap, sizeof(cap), o.dir, "ca.pem") != 0 ||
	    enroll_path(urlp, sizeof(urlp), o.dir, "ca-url") != 0) {
		failmsg("--dir is too long");
		goto out;
	}
	rc = 1;
	/* one renew (or enroll) at a time in DIR */
	lock = files_lock_dir(o.dir, err, sizeof(err));
	if (lock < 0) {
		failmsg(err);
		goto out;
	}
	{
		static const char *const ours[] = {"cert.pem", "key.pem"};

		files_remove_temporaries_of(o.dir, ours, 2);
	}
	certpem = files_read(certp, &cert_len, err, sizeof(err));
	if (certpem == NULL ||
	    (leaf = first_cert(certpem, cert_len, certp, err, sizeof(err))) == NULL) {
		failmsg(err);
		goto out;
	}
	oldkey = keys_load(keyp, NULL, err, sizeof(err));
	if (oldkey == NULL) {
		failmsg(err);
		goto out;
	}
	if (EVP_PKEY_eq(X509_get0_pubkey(leaf), oldkey) != 1) {
		fprintf(stderr,
			"mtls renew: %s does not match the certificate in %s; enroll again with a "
			"new token\n",
			keyp, certp);
		goto out;
	}
	rootpem = files_read(cap, &root_len, err, sizeof(err));
	if (rootpem == NULL ||
	    (root = first_cert(rootpem, root_len, cap, err, sizeof(err))) == NULL) {
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
	if (caclient_base_url(o.ca_url != NULL ? o.ca_url : urltext, base, sizeof(base), err,
			      sizeof(err)) != 0) {
		failmsg(err);
		rc = o.ca_url != NULL ? 2 : 1;
		goto out;
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
	if (now >= na) {
		enroll_utc(na, t1);
		snprintf(err, sizeof(err),
			 "%s expired at %s and cannot renew itself; enroll again with a new token",
			 certp, t1);
		failmsg(err);
		goto out;
	}
	if (o.same_key) {
		key = oldkey;
		EVP_PKEY_up_ref(key);
	} else if ((key = keys_generate(o.key_type, err, sizeof(err))) == NULL) {
		failmsg(err);
		rc = 2;
		goto out;
	}
	req = json_pack("{s:b}", "same_key", o.same_key != 0);
	if (req == NULL) {
		failmsg("out of memory");
		goto out;
	}
	{
		struct caclient_tls tls = {rootpem, root_len, certp, keyp};

		if (caclient_issue(base, "/v1/renew", req, key, &tls, root, &iss, names,
				   sizeof(names), err, sizeof(err)) != 0) {
			failmsg(err);
			goto out;
		}
	}
	if (!o.same_key && (keypem = keys_to_pem(key, NULL, &key_len)) == NULL) {
		failmsg("out of memory");
		goto out;
	}
	{
		/* the chain first, then its key: if the key cannot take its place, the old chain
		 * is put back (enroll_write) */
		struct enroll_file f[2] = {
			{"cert.pem", iss.chain_pem, iss.chain_len, 0644},
			{"key.pem", keypem, key_len, 0600},
		};

		if (enroll_write(o.dir, f, o.same_key ? 1 : 2, true, err, sizeof(err)) != 0) {
			size_t l = strlen(err);

			snprintf(err + l, sizeof(err) - l,
				 "; certificate %s was issued but not written (the old one stays "
				 "in use): run mtls renew again",
				 iss.serial);
			failmsg(err);
			goto out;
		}
	}
	{
		X509 *nl = sk_X509_value(iss.chain, 0);
		time_t nnb = certfields_time(X509_get0_notBefore(nl));
		time_t nna = certfields_time(X509_get0_notAfter(nl));

		enroll_utc(nna, t1);
		enroll_utc(nnb + (nna - nnb) / 3 * 2, t2);
		printf("renewed: serial %s (was %s), %s, %s, valid until %s, renew after %s\n",
		       iss.serial, oldserial != NULL ? oldserial : "?", names,
		       o.same_key ? "same key" : "new key", t1, t2);
	}
	rc = 0;
out:
	if (lock >= 0)
		close(lock);
	json_decref(req);
	keys_free_pem(keypem, key_len);
	free(certpem);
	free(rootpem);
	free(urltext);
	free(oldserial);
	caclient_issued_free(&iss);
	X509_free(leaf);
	X509_free(root);
	EVP_PKEY_free(oldkey);
	EVP_PKEY_free(key);
	options_free(&st);
	return rc;
}
