/*
 * mtls enroll: a certificate from a CA service (mtls ca serve) for a one-time token.
 *
 * The token carries the CA's URL and the SHA-256 of its root: the root bundle is fetched
 * without verifying the server and trusted only if it holds that root; from then on the
 * server is verified against that root alone. The key is made here and never leaves; the
 * CSR asks for no names (the CA puts the token's names in the certificate). What comes back
 * is checked (our key, verifies to the pinned root, carries names) before anything is
 * written, and the five files of the directory (enroll.h) appear together or not at all.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>

#include "caclient.h"
#include "certfields.h"
#include "commands.h"
#include "crlfetch.h"
#include "enroll.h"
#include "files.h"
#include "keys.h"
#include "options.h"
#include "renewal.h"
#include "token.h"

#define NFILES 5
static const char *const dir_files[NFILES] = {"ca.pem", "ca-url", "cert.pem", "key.pem",
					      "mtls.conf"};

/* ------------------------------------------------------------------------------------ */

struct enroll_opts {
	const char *token;
	const char *token_file;
	const char *dir;
	const char *key_type;
	int force;
};

#define O(f) offsetof(struct enroll_opts, f)

static const struct opt enroll_table[] = {
	{"token", OPT_STRING, O(token), "TOKEN",
	 "the one-time token from mtls ca token (visible in the process list: prefer "
	 "--token-file or MTLS_TOKEN)"},
	{"token-file", OPT_STRING, O(token_file), "FILE", "read the token from FILE"},
	{"dir", OPT_STRING, O(dir), "DIR",
	 "write key.pem, cert.pem, ca.pem, ca-url and mtls.conf here (created 0700); required"},
	{"key-type", OPT_STRING, O(key_type), "ALG",
	 "key to make: p256 (default), p384, ed25519, rsa3072"},
	{"force", OPT_FLAG, O(force), NULL, "replace an enrollment already in DIR"},
	OPT_END,
};

static void failmsg(const char *msg)
{
	fprintf(stderr, "mtls enroll: %s\n", msg);
}

/* The token's text: --token, --token-file (its first line) or $MTLS_TOKEN. Allocated (the
 * caller wipes and frees), or NULL with the message and *usage set for a usage error. */
static char *token_text(const struct enroll_opts *o, bool *usage, char *err, size_t err_len)
{
	const char *env = getenv("MTLS_TOKEN");
	char *t;

	*usage = true;
	if (o->token != NULL && o->token_file != NULL) {
		snprintf(err, err_len, "give --token or --token-file, not both");
		return NULL;
	}
	if (o->token != NULL)
		t = strdup(o->token);
	else if (o->token_file != NULL) {
		size_t len = 0;

		*usage = false;
		t = files_read(o->token_file, &len, err, err_len);
		if (t == NULL)
			return NULL;
		t[strcspn(t, "\n")] = '\0';
	} else if (env != NULL && env[0] != '\0') {
		t = strdup(env);
	} else {
		snprintf(
			err, err_len,
			"no token: give --token-file FILE, set MTLS_TOKEN or give --token (ask the "
			"CA's operator for one: mtls ca token)");
		return NULL;
	}
	if (t == NULL)
		snprintf(err, err_len, "out of memory");
	*usage = false;
	return t;
}

/* The names of the enrollment files that exist in dir, for the refusal ("" if none). */
static void existing(const char *dir, char *out, size_t out_len)
{
	char path[PATH_MAX];

	out[0] = '\0';
	for (int i = 0; i < NFILES; i++)
		if (enroll_path(path, sizeof(path), dir, dir_files[i]) == 0 && files_exists(path))
			snprintf(out + strlen(out), out_len - strlen(out), "%s%s",
				 out[0] ? ", " : "", dir_files[i]);
}

/* The crl-url and crl-cache lines of mtls.conf, appended to *conf: the daemons then check
 * revocation with no hand work. The URL is the CRL distribution point the leaf names (mtls ca
 * init --crl-url; the CA service's plain port there gives the push channel), else the CA
 * service's API (https, verified by ca.pem; polled). 0, or -1 out of memory. */
static int add_crl_lines(char **conf, X509 *leaf, const char *base, const char *absdir)
{
	char url[2049], *more = NULL;

	/* a quote would need quoting on the config line (cli/options.h): take the API's then */
	if (!crlfetch_cdp_url(leaf, url, sizeof(url)) || strpbrk(url, "'\"") != NULL)
		snprintf(url, sizeof(url), "%s/crl", base);
	if (asprintf(&more, "%scrl-url %s\ncrl-cache %s/crl.pem\n", *conf, url, absdir) < 0)
		return -1;
	free(*conf);
	*conf = more;
	return 0;
}

/* A path that can be written unquoted on a config line: no control byte, no leading or
 * trailing blank (the parser trims them), no quote and no '#' after a blank (the grammar's
 * quoting and comments, cli/options.h). */
static bool config_safe(const char *s)
{
	size_t n = strlen(s);

	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f || s[i] == '\'' || s[i] == '"' ||
		    (s[i] == '#' && i > 0 && (s[i - 1] == ' ' || s[i - 1] == '\t')))
			return false;
	return n > 0 && s[0] != ' ' && s[0] != '\t' && s[n - 1] != ' ' && s[n - 1] != '\t';
}

int cmd_enroll(int argc, char **argv)
{
	struct enroll_opts o = {.key_type = "p256"};
	struct options_state st = {0};
	struct token tok;
	struct caclient_issued iss = {0};
	char err[2048], base[TOKEN_URL_MAX + 1], absdir[PATH_MAX], have[128], names[4096];
	char path[PATH_MAX];
	char *text = NULL, *rootpem = NULL, *keypem = NULL, *conf = NULL, *url_line = NULL;
	size_t key_len = 0;
	long root_len = 0;
	X509 *root = NULL;
	EVP_PKEY *key = NULL;
	json_t *req = NULL;
	BIO *bio = NULL;
	bool usage = false, renews;
	int rc = 2, lock = -1;

	memset(&tok, 0, sizeof(tok));
	rc = enroll_options(
		"enroll",
		"mtls enroll --dir DIR (--token-file FILE | --token TOKEN | $MTLS_TOKEN) "
		"[--key-type ALG] [--force]",
		"Get a certificate from a CA service (mtls ca serve) with a one-time token "
		"from mtls ca token.\nThe token pins the CA's root: a server that does not "
		"serve it is refused. The key is made\nhere; DIR receives key.pem (0600), "
		"cert.pem (the chain), ca.pem (the root), ca-url (the CA's\nURL, for mtls "
		"renew) and mtls.conf (cert, key, ca and ca-url lines for mtls\nserver/connector "
		"--config, which then renew cert and key by themselves). The token\nmay come "
		"from --token-file or the environment variable MTLS_TOKEN, so that it is not\nin "
		"the process list. Exit status: 0 enrolled, 1 refused or failed (nothing "
		"written), 2\nusage.",
		enroll_table, &o, argc, argv, &st);
	if (rc >= 0)
		goto out;
	rc = 2;
	if (o.dir == NULL) {
		failmsg("give --dir DIR (where the key and certificate go); see --help");
		goto out;
	}
	/* DIR is named in mtls.conf: one the config grammar would need quoted is refused before
	 * the network (DIR as given; its real path is checked again once it exists) */
	{
		static char given[2 * PATH_MAX + 2];
		char cwd[PATH_MAX];

		given[0] = '\0';
		if (o.dir[0] == '/')
			snprintf(given, sizeof(given), "%s", o.dir);
		else if (getcwd(cwd, sizeof(cwd)) != NULL)
			snprintf(given, sizeof(given), "%s/%s", cwd, o.dir);
		if (given[0] != '\0' && !config_safe(given)) {
			snprintf(err, sizeof(err),
				 "%.1000s cannot be named in mtls.conf (control bytes, quotes, ' "
				 "#' or "
				 "blanks at its ends); choose another --dir",
				 o.dir);
			failmsg(err);
			goto out;
		}
	}
	text = token_text(&o, &usage, err, sizeof(err));
	if (text == NULL) {
		failmsg(err);
		rc = usage ? 2 : 1;
		goto out;
	}
	rc = 1;
	if (token_decode(text, &tok, err, sizeof(err)) != 0) {
		failmsg(err);
		goto out;
	}
	if (caclient_base_url(tok.url, base, sizeof(base), err, sizeof(err)) != 0) {
		failmsg(err);
		goto out;
	}
	/* an enrollment or renewal that a crash cut short: finished or taken back first */
	if (enroll_recover(o.dir, dir_files, NFILES, err, sizeof(err)) != 0) {
		failmsg(err);
		goto out;
	}
	/* everything about DIR that can be refused is refused before the network */
	existing(o.dir, have, sizeof(have));
	if (have[0] != '\0' && !o.force) {
		snprintf(err, sizeof(err),
			 "%s already holds an enrollment (%s); use mtls renew --dir %s, or --force "
			 "to enroll again over it",
			 o.dir, have, o.dir);
		failmsg(err);
		goto out;
	}
	key = keys_generate(o.key_type, err, sizeof(err));
	if (key == NULL) {
		failmsg(err);
		rc = 2;
		goto out;
	}
	root = caclient_fetch_root(base, tok.root_sha256, err, sizeof(err));
	if (root == NULL) {
		failmsg(err);
		goto out;
	}
	bio = BIO_new(BIO_s_mem());
	if (bio == NULL || PEM_write_bio_X509(bio, root) != 1) {
		failmsg("out of memory");
		goto out;
	}
	{
		char *p;

		root_len = BIO_get_mem_data(bio, &p);
		rootpem = strndup(p, (size_t)root_len);
	}
	req = json_pack("{s:s}", "token", text);
	if (rootpem == NULL || req == NULL) {
		failmsg("out of memory");
		goto out;
	}
	{
		struct caclient_tls tls = {rootpem, (size_t)root_len, NULL, NULL, NULL};
		STACK_OF(X509) *roots = sk_X509_new_null();
		int issued = roots != NULL && sk_X509_push(roots, root) > 0
				     ? caclient_issue(base, "/v1/enroll", req, key, &tls, roots,
						      &iss, names, sizeof(names), err, sizeof(err))
				     : (snprintf(err, sizeof(err), "out of memory"), -1);

		sk_X509_free(roots); /* root stays ours */
		if (issued != 0) {
			failmsg(err);
			goto out;
		}
	}
	/* the files: DIR made (0700) if missing, locked against a concurrent enroll/renew */
	if (files_mkdir_private(o.dir, err, sizeof(err)) != 0) {
		failmsg(err);
		goto out;
	}
	lock = files_lock_dir(o.dir, err, sizeof(err));
	if (lock < 0) {
		failmsg(err);
		goto out;
	}
	files_remove_temporaries_of(o.dir, dir_files, NFILES);
	existing(o.dir, have, sizeof(have));
	if (have[0] != '\0' && !o.force) {
		snprintf(err, sizeof(err), "%s: %s appeared meanwhile; nothing written", o.dir,
			 have);
		failmsg(err);
		goto out;
	}
	if (realpath(o.dir, absdir) == NULL || !config_safe(absdir)) {
		snprintf(err, sizeof(err),
			 "%s cannot be named in mtls.conf (unresolvable, or control bytes, "
			 "quotes, ' #' or blanks at its ends); choose another --dir",
			 o.dir);
		failmsg(err);
		goto out;
	}
	keypem = keys_to_pem(key, NULL, &key_len);
	renews = renewal_leaf_can_renew(sk_X509_value(iss.chain, 0));
	if (keypem == NULL ||
	    asprintf(&conf,
		     "# written by mtls enroll: serial %s from %s\n"
		     "%s"
		     "cert %s/cert.pem\nkey %s/key.pem\nca %s/ca.pem\n%s%s%s",
		     iss.serial, base,
		     renews ? "# with ca-url, mtls server/connector renew cert and key by "
			      "themselves (and keep ca\n# fresh); other programs: mtls renew "
			      "--dir DIR from a timer\n"
			    : "# no ca-url: this certificate cannot renew itself at the CA service "
			      "(neither\n# clientAuth nor serverAuth)\n",
		     absdir, absdir, absdir, renews ? "ca-url " : "", renews ? base : "",
		     renews ? "\n" : "") < 0 ||
	    asprintf(&url_line, "%s\n", base) < 0) {
		conf = url_line = NULL;
		failmsg("out of memory");
		goto out;
	}
	if (add_crl_lines(&conf, sk_X509_value(iss.chain, 0), base, absdir) != 0) {
		failmsg("out of memory");
		goto out;
	}
	{
		/* the root, the URL, the chain, the key beside it, and the config last: a config
		 * file never names files that are not all there */
		struct enroll_file f[NFILES] = {
			{"ca.pem", rootpem, (size_t)root_len, 0644},
			{"ca-url", url_line, strlen(url_line), 0644},
			{"cert.pem", iss.chain_pem, iss.chain_len, 0644},
			{"key.pem", keypem, key_len, 0600},
			{"mtls.conf", conf, strlen(conf), 0644},
		};

		if (enroll_write(o.dir, f, NFILES, o.force != 0, err, sizeof(err)) != 0) {
			size_t l = strlen(err);

			snprintf(err + l, sizeof(err) - l,
				 "; certificate %s was issued but not written: revoke it, get a "
				 "new token and enroll again",
				 iss.serial);
			failmsg(err);
			goto out;
		}
	}
	/* a CRL cached (crl-cache) for an earlier enrollment may be another CA's: the daemon
	 * fetches this CA's at its next start */
	if (o.force && enroll_path(path, sizeof(path), o.dir, "crl.pem") == 0)
		(void)unlink(path);
	{
		char when[32];
		time_t na = certfields_time(X509_get0_notAfter(sk_X509_value(iss.chain, 0)));
		bool server = strcmp(iss.profile, "server") == 0;
		const char *how = server ? "server" : "connector";
		const char *rest = server ? "--listen ADDR --target ADDR --allow-uri PATTERN"
					  : "--listen 127.0.0.1:PORT --server HOST:PORT";

		enroll_utc(na, when);
		printf("enrolled: serial %s, %s, valid until %s; next: mtls %s --config "
		       "%s/mtls.conf %s%s\n",
		       iss.serial, names, when, how, absdir, rest,
		       renews ? " (it renews the certificate by itself; other programs: mtls "
				"renew --dir DIR from a timer)"
			      : " (it cannot renew itself at the CA service: neither "
				"clientAuth nor serverAuth)");
	}
	rc = 0;
out:
	if (lock >= 0)
		close(lock);
	if (text != NULL) {
		OPENSSL_cleanse(text, strlen(text));
		free(text);
	}
	token_wipe(&tok);
	json_decref(req);
	keys_free_pem(keypem, key_len);
	free(conf);
	free(url_line);
	free(rootpem);
	BIO_free(bio);
	caclient_issued_free(&iss);
	X509_free(root);
	EVP_PKEY_free(key);
	options_free(&st);
	return rc;
}
