/*
 * Creating and opening a CA directory.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "authority.h"
#include "files.h"
#include "issue.h"
#include "keys.h"
#include "pkcs11.h"

#define DAY 86400L
/* notBefore is set this far back so that peers with slightly slow clocks accept it */
#define BACKDATE 300

const char *authority_path(const struct authority *ca, const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s", ca->dir, name);
	return buf;
}

const char *authority_actor(void)
{
	static char actor[300];
	struct passwd *pw = getpwuid(getuid());
	char host[256] = "";

	gethostname(host, sizeof(host) - 1);
	snprintf(actor, sizeof(actor), "%s@%s", pw != NULL ? pw->pw_name : "?", host);
	return actor;
}

static int write_cert(const char *path, X509 *cert, char *err, size_t err_len)
{
	size_t len = 0;
	char *pem = issue_cert_pem(cert, &len);
	int rc;

	if (pem == NULL) {
		snprintf(err, err_len, "out of memory");
		return -1;
	}
	rc = files_write(path, pem, len, 0644, true, err, err_len);
	free(pem);
	return rc;
}

static int write_key(const char *path, EVP_PKEY *key, const char *pass, char *err, size_t err_len)
{
	size_t len = 0;
	char *pem = keys_to_pem(key, pass, &len);
	int rc;

	if (pem == NULL) {
		snprintf(err, err_len, "cannot encode the private key");
		return -1;
	}
	rc = files_write(path, pem, len, 0600, true, err, err_len);
	keys_free_pem(pem, len);
	return rc;
}

static int save_settings(struct store *st, const struct authority_init *in)
{
	char v[32];
	int rc = 0;

	snprintf(v, sizeof(v), "%ld", in->server_days);
	rc |= store_set_meta(st, "server_days", v);
	snprintf(v, sizeof(v), "%ld", in->client_days);
	rc |= store_set_meta(st, "client_days", v);
	snprintf(v, sizeof(v), "%ld", in->crl_days);
	rc |= store_set_meta(st, "crl_days", v);
	rc |= store_set_meta(st, "crl_url", in->crl_url != NULL ? in->crl_url : "");
	rc |= store_set_meta(st, "ocsp_url", in->ocsp_url != NULL ? in->ocsp_url : "");
	rc |= store_set_meta(st, "must_staple", in->must_staple ? "1" : "");
	/* set for every CA, "" for a key file: a CA made before has neither (authority_open()) */
	rc |= store_set_meta(st, "issuer_key_uri", in->key_uri != NULL ? in->key_uri : "");
	rc |= store_set_meta(st, "issuer_key_module", in->key_module != NULL ? in->key_module : "");
	return rc != 0 ? -1 : 0;
}

/* The issuing key on a PKCS#11 token, pin as its PIN. NULL with a one-line message that
 * names the CA's options for the PIN. */
static EVP_PKEY *token_key_load(const char *uri, const char *module, const char *pin, char *err,
				size_t err_len)
{
	enum pkcs11_failure why = PKCS11_OK;
	char msg[8192];
	EVP_PKEY *key = pkcs11_key_load(uri, module != NULL && module[0] != '\0' ? module : NULL,
					pin, &why, msg, sizeof(msg));

	if (key != NULL)
		return key;
	if (why == PKCS11_BAD_PIN && pin == NULL)
		snprintf(err, err_len,
			 "the CA's issuing key %s is on a PKCS#11 token that needs its PIN: give "
			 "it with --passphrase-file or --passphrase-env",
			 uri);
	else
		snprintf(err, err_len, "the CA's issuing key: %s", msg);
	return NULL;
}

int authority_record_ca(struct store *st, X509 *cert, const char *profile, const char *action,
			const char *detail, time_t now)
{
	struct store_cert c = {0};
	char *subject = issue_subject(cert), spki[65];
	unsigned char *der = NULL;
	int len = i2d_X509(cert, &der), rc = -1;

	if (len > 0 && subject != NULL) {
		issue_serial_hex(cert, c.serial, sizeof(c.serial));
		issue_spki_sha256(cert, spki);
		c.subject = subject;
		c.sans = "";
		c.spki_sha256 = spki;
		c.profile = profile;
		c.not_before = certfields_time(X509_get0_notBefore(cert));
		c.not_after = certfields_time(X509_get0_notAfter(cert));
		c.issued_at = now;
		c.der = der;
		c.der_len = (size_t)len;
		rc = store_add_cert(st, &c) == 0 && store_audit(st, authority_actor(), action,
								subject, detail) == 0
			     ? 0
			     : -1;
	}
	OPENSSL_free(der);
	free(subject);
	return rc;
}

static X509 *read_cert(const char *path, char *err, size_t err_len)
{
	size_t len = 0;
	char *pem = files_read(path, &len, err, err_len);
	X509 *cert = NULL;
	BIO *bio;

	if (pem == NULL)
		return NULL;
	bio = BIO_new_mem_buf(pem, (int)len);
	if (bio != NULL)
		cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	BIO_free(bio);
	free(pem);
	ERR_clear_error();
	/* a message cut short still names the file's start: the length is not checked */
	if (cert == NULL &&
	    snprintf(err, err_len, "%s is not a PEM certificate; restore it from a backup", path) <
		    0)
		err[0] = '\0';
	return cert;
}

/* Where `mtls ca init` builds a CA: DIR.tmp-<12 hex digits> beside DIR, renamed to DIR when
 * it is whole, so that DIR is a complete CA or absent, whenever the command dies. */
struct staging {
	char dir[PATH_MAX];	 /* the CA directory asked for */
	char parent[PATH_MAX];	 /* the directory that holds it */
	char base[NAME_MAX + 1]; /* its name there */
	char path[PATH_MAX];	 /* the staging directory */
	int parent_lock;
	int key_dir_lock;
};

/* NAME.tmp-<12 hex digits>: one of our staging directories for name base? */
static bool staging_of(const char *entry, const char *base)
{
	size_t n = strlen(base);

	return strncmp(entry, base, n) == 0 && strncmp(entry + n, ".tmp-", 5) == 0 &&
	       strlen(entry + n + 5) == 12 && strspn(entry + n + 5, "0123456789abcdef") == 12;
}

/* Does the private key in key_path belong to the certificate in cert_path? */
static bool key_of(const char *key_path, const char *cert_path)
{
	char err[256];
	X509 *cert = read_cert(cert_path, err, sizeof(err));
	EVP_PKEY *key = cert != NULL ? keys_load(key_path, NULL, err, sizeof(err)) : NULL;
	bool same = key != NULL && X509_check_private_key(cert, key) == 1;

	ERR_clear_error();
	EVP_PKEY_free(key);
	X509_free(cert);
	return same;
}

/* What an init of the same DIR killed half-way left (under the parent's lock, so that none
 * is running): its staging directories, and a root key it had already put into the
 * --root-key-dir (the root of a CA that never came to be) along with the temporary files
 * of one. */
static void remove_leftovers(const struct staging *st, const char *root_key_dir)
{
	char path[PATH_MAX + NAME_MAX + 32], key[PATH_MAX + 16];
	const char *names[] = {"root.key"};
	DIR *d = opendir(st->parent);
	struct dirent *e;

	if (root_key_dir != NULL) {
		files_remove_temporaries_of(root_key_dir, names, 1);
		snprintf(key, sizeof(key), "%s/root.key", root_key_dir);
	}
	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (!staging_of(e->d_name, st->base))
			continue;
		snprintf(path, sizeof(path), "%s/%s/root.pem", st->parent, e->d_name);
		if (root_key_dir != NULL && files_exists(key) && key_of(key, path))
			unlink(key);
		snprintf(path, sizeof(path), "%s/%s", st->parent, e->d_name);
		files_remove_dir(path);
	}
	closedir(d);
}

/* DIR must be absent, or an empty directory of this user not writable by group or others. */
static int target_free(const char *dir, char *err, size_t err_len)
{
	struct stat sb;
	DIR *d;
	struct dirent *e;
	bool empty = true, ca = false;

	if (lstat(dir, &sb) != 0)
		return 0;
	if (!S_ISDIR(sb.st_mode)) {
		snprintf(err, err_len, "%s exists and is not a directory; choose another --dir",
			 dir);
		return -1;
	}
	if (sb.st_mode & 022) {
		snprintf(err, err_len,
			 "directory %s is writable by group or others (mode %04o); run 'chmod 700 "
			 "%s'",
			 dir, (unsigned)(sb.st_mode & 07777), dir);
		return -1;
	}
	d = opendir(dir);
	if (d == NULL) {
		snprintf(err, err_len, "cannot read %s: %s", dir, strerror(errno));
		return -1;
	}
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		empty = false;
		ca = ca || strcmp(e->d_name, "ca.db") == 0 || strcmp(e->d_name, "root.pem") == 0 ||
		     strcmp(e->d_name, "store") == 0;
	}
	closedir(d);
	if (ca)
		snprintf(err, err_len, "%s already holds a CA; choose another --dir", dir);
	else if (!empty)
		snprintf(err, err_len,
			 "%s is not empty, and ca init never writes keys among other files (a "
			 "source tree's folder, a home directory); give a directory that does not "
			 "exist yet, outside any source tree (e.g. --dir ~/mtls-ca), and ca init "
			 "makes it",
			 dir);
	else if (sb.st_uid != geteuid()) {
		snprintf(err, err_len,
			 "directory %s belongs to uid %u, not to this user (uid %u): whoever owns "
			 "it could read the CA's keys; give a directory that does not exist yet "
			 "(ca init makes it) or one of your own",
			 dir, (unsigned)sb.st_uid, (unsigned)geteuid());
		return -1;
	}
	return empty ? 0 : -1;
}

static void staging_release(struct staging *st)
{
	if (st->key_dir_lock >= 0)
		close(st->key_dir_lock);
	if (st->parent_lock >= 0)
		close(st->parent_lock);
	st->key_dir_lock = st->parent_lock = -1;
}

/* Lock DIR's parent (and the --root-key-dir), clear what a killed init left, check DIR and
 * make the staging directory. */
static int staging_begin(struct staging *st, const struct authority_init *in, char *err,
			 size_t err_len)
{
	char buf[PATH_MAX];
	unsigned char rnd[6];
	struct stat a, b;

	memset(st, 0, sizeof(*st));
	st->parent_lock = st->key_dir_lock = -1;
	if (strlen(in->dir) >= sizeof(((struct authority *)NULL)->dir) - 32) {
		snprintf(err, err_len, "--dir is too long");
		return -1;
	}
	snprintf(st->dir, sizeof(st->dir), "%s", in->dir);
	/* "ca/" is "ca" */
	while (strlen(st->dir) > 1 && st->dir[strlen(st->dir) - 1] == '/')
		st->dir[strlen(st->dir) - 1] = '\0';
	snprintf(buf, sizeof(buf), "%s", st->dir);
	snprintf(st->parent, sizeof(st->parent), "%s", dirname(buf));
	snprintf(buf, sizeof(buf), "%s", st->dir);
	snprintf(st->base, sizeof(st->base), "%s", basename(buf));
	if (strcmp(st->base, "/") == 0 || strcmp(st->base, ".") == 0 ||
	    strcmp(st->base, "..") == 0) {
		snprintf(err, err_len, "--dir %s does not name a directory to create", in->dir);
		return -1;
	}
	if (files_mkdir_parents(st->dir, err, err_len) != 0)
		return -1;
	if (in->root_key_dir != NULL && files_mkdir_private(in->root_key_dir, err, err_len) != 0)
		return -1;
	/* one init of DIR at a time: then any staging directory of DIR is a killed one's */
	st->parent_lock = files_lock_dir(st->parent, err, err_len);
	if (st->parent_lock < 0)
		return -1;
	if (in->root_key_dir != NULL && stat(st->parent, &a) == 0 &&
	    stat(in->root_key_dir, &b) == 0 && (a.st_dev != b.st_dev || a.st_ino != b.st_ino)) {
		st->key_dir_lock = files_lock_dir(in->root_key_dir, err, err_len);
		if (st->key_dir_lock < 0)
			goto fail;
	}
	remove_leftovers(st, in->root_key_dir);
	if (target_free(st->dir, err, err_len) != 0)
		goto fail;
	if (in->root_key_dir != NULL) {
		snprintf(buf, sizeof(buf), "%s/root.key", in->root_key_dir);
		if (files_exists(buf)) {
			snprintf(err, err_len,
				 "%s already exists; remove it or choose another --root-key-dir",
				 buf);
			goto fail;
		}
	}
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		goto fail;
	if (snprintf(st->path, sizeof(st->path), "%s/%s.tmp-%02x%02x%02x%02x%02x%02x", st->parent,
		     st->base, rnd[0], rnd[1], rnd[2], rnd[3], rnd[4],
		     rnd[5]) >= (int)sizeof(st->path) ||
	    mkdir(st->path, 0700) != 0 || chmod(st->path, 0700) != 0) {
		snprintf(err, err_len, "cannot create directory %s: %s", st->path, strerror(errno));
		st->path[0] = '\0';
		goto fail;
	}
	return 0;
fail:
	staging_release(st);
	return -1;
}

int authority_create(const struct authority_init *in, char *err, size_t err_len)
{
	struct authority ca = {.lock_fd = -1};
	EVP_PKEY *root_key = NULL, *int_key = NULL;
	X509 *root = NULL, *inter = NULL;
	char path[PATH_MAX], cn[300], *pem = NULL;
	time_t now = time(NULL);
	struct issue_spec spec;
	struct staging stage;
	struct files_staged root_file = {.tmp = ""};
	struct crl_pending crl = {0};
	size_t pem_len = 0;
	int rc = -1;

	if (in->crl_url != NULL && in->crl_url[0] != '\0' &&
	    issue_check_crl_url(in->crl_url, err, err_len) != 0)
		return -1;
	if (in->ocsp_url != NULL && in->ocsp_url[0] != '\0' &&
	    issue_check_ocsp_url(in->ocsp_url, err, err_len) != 0)
		return -1;
	if (in->must_staple && (in->ocsp_url == NULL || in->ocsp_url[0] == '\0')) {
		snprintf(err, err_len,
			 "must-staple certificates need an OCSP responder to staple answers from; "
			 "give --ocsp-url too");
		return -1;
	}
	if (in->key_uri != NULL && pkcs11_uri_check(in->key_uri, NULL, 0, err, err_len) != 0)
		return -1;
	if (in->key_module != NULL && strlen(in->key_module) >= sizeof(ca.key_module)) {
		snprintf(err, err_len, "the PKCS#11 module's path is longer than %zu bytes",
			 sizeof(ca.key_module) - 1);
		return -1;
	}
	if (in->intermediate_days >= in->root_days) {
		snprintf(err, err_len,
			 "the intermediate lifetime (%ld days) must be shorter than the root's "
			 "(%ld days)",
			 in->intermediate_days, in->root_days);
		return -1;
	}
	if (in->server_days > in->intermediate_days || in->client_days > in->intermediate_days) {
		snprintf(err, err_len,
			 "leaf lifetimes must not exceed the intermediate's (%ld days)",
			 in->intermediate_days);
		return -1;
	}
	/* the token's key before anything is made: a wrong PIN, a missing object or module
	 * leaves no directory behind */
	if (in->key_uri != NULL) {
		int_key = token_key_load(in->key_uri, in->key_module, in->passphrase, err, err_len);
		if (int_key == NULL)
			return -1;
	}
	if (staging_begin(&stage, in, err, err_len) != 0) {
		EVP_PKEY_free(int_key);
		return -1;
	}
	if (snprintf(ca.dir, sizeof(ca.dir), "%s", stage.path) >= (int)sizeof(ca.dir)) {
		snprintf(err, err_len, "--dir is too long");
		goto out;
	}
	root_key = keys_generate(in->key_alg, err, err_len);
	if (root_key != NULL && int_key == NULL)
		int_key = keys_generate(in->key_alg, err, err_len);
	if (root_key == NULL || int_key == NULL)
		goto out;

	snprintf(cn, sizeof(cn), "%.50s Root CA", in->name);
	spec = (struct issue_spec){.kind = ISSUE_ROOT,
				   .cn = cn,
				   .org = in->name,
				   .subject_key = root_key,
				   .not_before = now - BACKDATE,
				   .not_after = now + in->root_days * DAY};
	root = issue_sign(&spec, NULL, root_key, err, err_len);
	if (root == NULL)
		goto out;
	snprintf(cn, sizeof(cn), "%.50s Issuing CA", in->name);
	spec = (struct issue_spec){.kind = ISSUE_INTERMEDIATE,
				   .cn = cn,
				   .org = in->name,
				   .subject_key = int_key,
				   .not_before = now - BACKDATE,
				   .not_after = now + in->intermediate_days * DAY};
	inter = issue_sign(&spec, root, root_key, err, err_len);
	if (inter == NULL)
		goto out;

	/* everything inside the staging directory, which nobody uses until it is DIR */
	if ((in->root_key_dir == NULL &&
	     write_key(authority_path(&ca, "root.key", path, sizeof(path)), root_key,
		       in->passphrase, err, err_len) != 0) ||
	    (in->key_uri == NULL &&
	     write_key(authority_path(&ca, "intermediate.key", path, sizeof(path)), int_key,
		       in->passphrase, err, err_len) != 0) ||
	    write_cert(authority_path(&ca, "intermediate.pem", path, sizeof(path)), inter, err,
		       err_len) != 0 ||
	    write_cert(authority_path(&ca, "root.pem", path, sizeof(path)), root, err, err_len) !=
		    0)
		goto out;
	if (in->store_url != NULL && store_url_check(in->store_url, err, err_len) != 0)
		goto out;
	ca.store =
		store_open(in->store_url != NULL ? in->store_url
						 : authority_path(&ca, "ca.db", path, sizeof(path)),
			   true, err, err_len);
	if (ca.store == NULL)
		goto out;
	/* DIR/store names the database: every copy of DIR (a CA node) opens it */
	if (in->store_url != NULL) {
		size_t n = strlen(in->store_url);
		char *line = malloc(n + 2);
		int written;

		if (line == NULL) {
			snprintf(err, err_len, "out of memory");
			goto out;
		}
		memcpy(line, in->store_url, n);
		line[n] = '\n';
		written = files_write(authority_path(&ca, "store", path, sizeof(path)), line, n + 1,
				      0600, true, err, err_len);
		free(line);
		if (written != 0)
			goto out;
	}
	if (store_begin(ca.store) != 0) {
		snprintf(err, err_len, "%s", store_error(ca.store));
		goto out;
	}
	if (save_settings(ca.store, in) != 0 ||
	    authority_record_ca(ca.store, root, "root", "init", "root", time(NULL)) != 0 ||
	    authority_record_ca(ca.store, inter, "intermediate", "init",
				in->key_uri != NULL ? "intermediate, key on a PKCS#11 token"
						    : "intermediate",
				time(NULL)) != 0) {
		snprintf(err, err_len, "%s", store_error(ca.store));
		store_rollback(ca.store);
		goto out;
	}
	ca.root = root;
	ca.issuer = inter;
	ca.issuer_key = int_key;
	ca.crl_days = in->crl_days;
	snprintf(ca.crl_url, sizeof(ca.crl_url), "%s", in->crl_url != NULL ? in->crl_url : "");
	if (crl_prepare(&ca, &crl, err, err_len) != 0) {
		store_rollback(ca.store);
		goto out;
	}
	if (store_commit(ca.store) != 0) {
		snprintf(err, err_len, "%s", store_error(ca.store));
		store_rollback(ca.store);
		goto out;
	}
	store_close(ca.store);
	ca.store = NULL;
	if (crl_write(&ca, &crl, err, err_len) != 0)
		goto out;
	/* The root key goes into --root-key-dir last: a CA whose init died before it has no
	 * root key lying about there (and the next init removes one that got there before
	 * DIR did: it matches the root of the staging directory left behind). */
	if (in->root_key_dir != NULL) {
		snprintf(path, sizeof(path), "%s/root.key", in->root_key_dir);
		pem = keys_to_pem(root_key, in->passphrase, &pem_len);
		if (pem == NULL) {
			snprintf(err, err_len, "cannot encode the private key");
			goto out;
		}
		if (files_stage(&root_file, path, pem, pem_len, 0600, err, err_len) != 0 ||
		    files_publish(&root_file, true, err, err_len) != 0)
			goto out;
		files_sync_dir(path);
	}
	/* DIR appears whole: rename() replaces an empty directory too */
	if (rename(stage.path, stage.dir) != 0) {
		snprintf(err, err_len, "cannot rename %s to %s: %s", stage.path, stage.dir,
			 strerror(errno));
		if (in->root_key_dir != NULL)
			unlink(path);
		goto out;
	}
	stage.path[0] = '\0';
	files_sync_dir(stage.dir);
	rc = 0;
out:
	files_discard(&root_file);
	keys_free_pem(pem, pem_len);
	crl_pending_free(&crl);
	store_close(ca.store);
	if (stage.path[0] != '\0')
		files_remove_dir(stage.path);
	staging_release(&stage);
	EVP_PKEY_free(root_key);
	EVP_PKEY_free(int_key);
	X509_free(root);
	X509_free(inter);
	return rc;
}

static long meta_long(struct store *st, const char *key, long fallback)
{
	char buf[64];

	if (store_get_meta(st, key, buf, sizeof(buf)) != 0)
		return fallback;
	return strtol(buf, NULL, 10) > 0 ? strtol(buf, NULL, 10) : fallback;
}

/* The room an issue takes: AUTHORITY_ROOM plus twice crl.pem (the CRL is rewritten beside
 * itself). */
static unsigned long long room_needed(const struct authority *ca)
{
	char path[PATH_MAX];
	struct stat sb;
	unsigned long long need = AUTHORITY_ROOM;

	if (stat(authority_path(ca, "crl.pem", path, sizeof(path)), &sb) == 0)
		need += 2ull * (unsigned long long)sb.st_size;
	return need;
}

int authority_take_room(struct authority *ca, char *err, size_t err_len)
{
	char path[PATH_MAX], why[PATH_MAX + 256];
	struct statvfs vfs;
	unsigned long long need = room_needed(ca), avail = 0;
	int e;

	/* Allocated, not only looked for: free space that another process can take before
	 * the commit would leave an issue that commits, cannot deliver and cannot revoke. */
	if (files_reserve(&ca->room, authority_path(ca, "room", path, sizeof(path)), (off_t)need,
			  why, sizeof(why)) == 0)
		return 0;
	e = errno;
	if (e != ENOSPC && e != EDQUOT) {
		snprintf(err, err_len, "%s; nothing was issued", why);
		return -1;
	}
	if (e == EDQUOT) { /* a quota is not a full disk: df shows room there */
		snprintf(err, err_len,
			 "disk quota exceeded: an issue needs %llu KiB in %s (for the certificate "
			 "and, should its files not be delivered, for revoking it); free space "
			 "within the quota or have it raised, and run the command again; nothing "
			 "was issued",
			 (need + 1023) / 1024, ca->dir);
		return -1;
	}
	if (statvfs(ca->dir, &vfs) == 0)
		avail = (unsigned long long)vfs.f_bavail * vfs.f_frsize;
	snprintf(err, err_len,
		 "disk nearly full: %s has %llu KiB free, and an issue needs %llu KiB there (for "
		 "the certificate and, should its files not be delivered, for revoking it); free "
		 "space and run the command again; nothing was issued",
		 ca->dir, avail / 1024, (need + 1023) / 1024);
	return -1;
}

void authority_release_room(struct authority *ca)
{
	files_discard(&ca->room);
}

/* Where the inventory of ca->dir is: the database that DIR/store names, or DIR/ca.db. */
static int locate_store(struct authority *ca, char *location, size_t len, char *err, size_t err_len)
{
	char path[PATH_MAX];
	size_t n = 0;
	char *url;

	if (!files_exists(authority_path(ca, "store", path, sizeof(path)))) {
		if (files_exists(authority_path(ca, "ca.db", location, len)))
			return 0;
		snprintf(err, err_len, "%s holds no CA; create one with 'mtls ca init --dir %s'",
			 ca->dir, ca->dir);
		return -1;
	}
	url = files_read(path, &n, err, err_len);
	if (url == NULL)
		return -1;
	/* one line: the URL */
	while (n > 0 && (url[n - 1] == '\n' || url[n - 1] == '\r'))
		url[--n] = '\0';
	if (n == 0 || n >= len || strlen(url) != n || strchr(url, '\n') != NULL ||
	    store_url_check(url, err, err_len) != 0) {
		char why[512];

		snprintf(why, sizeof(why), "%s",
			 n == 0 || n >= len || strlen(url) != n || strchr(url, '\n') != NULL
				 ? "not one line holding a URL"
				 : err);
		snprintf(err, err_len,
			 "%s does not name the CA's database (%s); write the postgresql:// URL "
			 "into it, on one line",
			 path, why);
		free(url);
		return -1;
	}
	memcpy(location, url, n + 1);
	free(url);
	return 0;
}

struct authority *authority_open(const char *dir, enum authority_lock lock, char *err,
				 size_t err_len)
{
	struct authority *ca = calloc(1, sizeof(*ca));
	char path[PATH_MAX], what[512], location[PATH_MAX];

	if (ca == NULL) {
		snprintf(err, err_len, "out of memory");
		return NULL;
	}
	ca->lock_fd = -1;
	snprintf(ca->dir, sizeof(ca->dir), "%s", dir);
	if (locate_store(ca, location, sizeof(location), err, err_len) != 0)
		goto fail;
	if (lock != AUTHORITY_UNLOCKED) {
		authority_path(ca, "lock", path, sizeof(path));
		ca->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
		/* 0600 whatever the umask: a lock file we could not open again is no lock */
		if (ca->lock_fd >= 0 && fchmod(ca->lock_fd, 0600) != 0) {
			/* another user's lock file: leave its mode alone */
		}
		/* a reader of a CA it cannot write (an auditor) locks it read-only */
		if (ca->lock_fd < 0 && lock == AUTHORITY_SHARED &&
		    (errno == EACCES || errno == EROFS))
			ca->lock_fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (ca->lock_fd < 0 ||
		    flock(ca->lock_fd, lock == AUTHORITY_SHARED ? LOCK_SH : LOCK_EX) != 0) {
			snprintf(err, err_len, "cannot lock %s: %s", path, strerror(errno));
			goto fail;
		}
	}
	/* under the exclusive lock, a temporary file can only be one that a killed writer left */
	if (lock == AUTHORITY_EXCLUSIVE)
		files_remove_temporaries(ca->dir);
	ca->store = lock == AUTHORITY_EXCLUSIVE ? store_open(location, false, err, err_len)
						: store_open_read(location, err, err_len);
	if (ca->store == NULL)
		goto fail;
	if (authority_refresh(ca, err, err_len) < 0)
		goto fail;
	ca->server_days = meta_long(ca->store, "server_days", 90);
	ca->client_days = meta_long(ca->store, "client_days", 90);
	ca->crl_days = meta_long(ca->store, "crl_days", 7);
	switch (store_get_meta(ca->store, "crl_url", ca->crl_url, sizeof(ca->crl_url))) {
	case 0: break;
	case 1: ca->crl_url[0] = '\0'; break;
	default: snprintf(err, err_len, "%s", store_error(ca->store)); goto fail;
	}
	/* the inventory of an older version may hold one that was never checked */
	if (ca->crl_url[0] != '\0' && issue_check_crl_url(ca->crl_url, what, sizeof(what)) != 0) {
		snprintf(err, err_len,
			 "the CA's CRL distribution point in %s is unusable (%s); investigate",
			 store_is_url(location) ? "its inventory" : location, what);
		goto fail;
	}
	switch (store_get_meta(ca->store, "ocsp_url", ca->ocsp_url, sizeof(ca->ocsp_url))) {
	case 0: break;
	case 1: ca->ocsp_url[0] = '\0'; break; /* a CA made before OCSP */
	default: snprintf(err, err_len, "%s", store_error(ca->store)); goto fail;
	}
	{
		char v[8] = "";

		switch (store_get_meta(ca->store, "must_staple", v, sizeof(v))) {
		case 0:
		case 1: ca->must_staple = strcmp(v, "1") == 0; break; /* 1: a CA made before */
		default: snprintf(err, err_len, "%s", store_error(ca->store)); goto fail;
		}
	}
	if (ca->ocsp_url[0] != '\0' &&
	    issue_check_ocsp_url(ca->ocsp_url, what, sizeof(what)) != 0) {
		snprintf(err, err_len,
			 "the CA's OCSP responder URL in %s/ca.db is unusable (%s); investigate",
			 dir, what);
		goto fail;
	}
	/* the issuing key on a token (absent in a CA made before: intermediate.key) */
	if (store_get_meta(ca->store, "issuer_key_uri", ca->key_uri, sizeof(ca->key_uri)) < 0 ||
	    store_get_meta(ca->store, "issuer_key_module", ca->key_module, sizeof(ca->key_module)) <
		    0) {
		snprintf(err, err_len,
			 "cannot read the issuing key's settings (issuer_key_uri, "
			 "issuer_key_module) from the CA's inventory: %s; investigate",
			 store_error(ca->store));
		goto fail;
	}
	if (ca->key_uri[0] != '\0' &&
	    pkcs11_uri_check(ca->key_uri, NULL, 0, what, sizeof(what)) != 0) {
		snprintf(err, err_len,
			 "the issuing key's PKCS#11 URI in the CA's inventory is unusable (%s); "
			 "investigate",
			 what);
		goto fail;
	}
	return ca;
fail:
	authority_close(ca);
	return NULL;
}

static bool same_stat(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* The root of root.pem (a bundle during a rollover) that issued issuer; the first one if
 * none did. NULL with a message. */
static X509 *root_of(const char *path, X509 *issuer, char *err, size_t err_len)
{
	size_t len = 0;
	char *pem = files_read(path, &len, err, err_len);
	BIO *bio = pem != NULL ? BIO_new_mem_buf(pem, (int)len) : NULL;
	X509 *x, *first = NULL, *found = NULL;

	while (bio != NULL && found == NULL && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
		if (X509_check_issued(x, issuer) == X509_V_OK &&
		    X509_verify(issuer, X509_get0_pubkey(x)) == 1)
			found = x;
		else if (first == NULL)
			first = x;
		else
			X509_free(x);
	}
	ERR_clear_error();
	BIO_free(bio);
	if (found != NULL) {
		X509_free(first);
		free(pem);
		return found;
	}
	if (first == NULL && pem != NULL &&
	    snprintf(err, err_len, "%s is not a PEM certificate; restore it from a backup", path) <
		    0)
		err[0] = '\0';
	free(pem);
	return first;
}

int authority_refresh(struct authority *ca, char *err, size_t err_len)
{
	char path[PATH_MAX], rpath[PATH_MAX];
	struct stat rs, is;
	X509 *root = NULL, *issuer = NULL;

	if (stat(authority_path(ca, "root.pem", rpath, sizeof(rpath)), &rs) != 0 ||
	    stat(authority_path(ca, "intermediate.pem", path, sizeof(path)), &is) != 0) {
		snprintf(err, err_len, "cannot read %s: %s; restore it from a backup",
			 errno == ENOENT && files_exists(rpath) ? path : rpath, strerror(errno));
		return -1;
	}
	if (ca->root != NULL && ca->issuer != NULL && same_stat(&rs, &ca->root_st) &&
	    same_stat(&is, &ca->issuer_st))
		return 0;
	issuer = read_cert(path, err, err_len);
	root = issuer != NULL ? root_of(rpath, issuer, err, err_len) : NULL;
	if (root == NULL)
		goto fail;
	if (ca->issuer_key != NULL && X509_check_private_key(issuer, ca->issuer_key) != 1) {
		ERR_clear_error();
		snprintf(err, err_len,
			 "%s does not match the issuing key; restore it from a backup or "
			 "'mtls ca rollover switch' again",
			 path);
		goto fail;
	}
	X509_free(ca->root);
	X509_free(ca->issuer);
	ca->root = root;
	ca->issuer = issuer;
	ca->root_st = rs;
	ca->issuer_st = is;
	ca->generation++;
	return 1;
fail:
	X509_free(root);
	X509_free(issuer);
	return -1;
}

/* After taking the lock: the certificates as on disk now (the old ones kept, and the reason
 * kept for the service to log, if they cannot be read). */
static void locked_refresh(struct authority *ca)
{
	char err[sizeof(ca->refresh_err)];

	if (authority_refresh(ca, err, sizeof(err)) < 0)
		memcpy(ca->refresh_err, err, sizeof(err));
	else
		ca->refresh_err[0] = '\0';
}

int authority_lock(struct authority *ca, char *err, size_t err_len)
{
	if (ca->lock_fd < 0) {
		snprintf(err, err_len, "%s was opened without its lock", ca->dir);
		return -1;
	}
	while (flock(ca->lock_fd, LOCK_EX) != 0) {
		if (errno != EINTR) {
			snprintf(err, err_len, "cannot lock %s/lock: %s", ca->dir, strerror(errno));
			return -1;
		}
	}
	files_remove_temporaries(ca->dir);
	locked_refresh(ca);
	return 0;
}

int authority_trylock(struct authority *ca, char *err, size_t err_len)
{
	if (ca->lock_fd < 0) {
		snprintf(err, err_len, "%s was opened without its lock", ca->dir);
		return -1;
	}
	while (flock(ca->lock_fd, LOCK_EX | LOCK_NB) != 0) {
		if (errno == EWOULDBLOCK)
			return 1;
		if (errno != EINTR) {
			snprintf(err, err_len, "cannot lock %s/lock: %s", ca->dir, strerror(errno));
			return -1;
		}
	}
	files_remove_temporaries(ca->dir);
	locked_refresh(ca);
	return 0;
}

void authority_unlock(struct authority *ca)
{
	if (ca->lock_fd >= 0)
		flock(ca->lock_fd, LOCK_UN);
}

int authority_load_key(struct authority *ca, const char *passphrase, char *err, size_t err_len)
{
	char path[PATH_MAX];

	if (ca->key_uri[0] != '\0') {
		ca->issuer_key =
			token_key_load(ca->key_uri, ca->key_module, passphrase, err, err_len);
		if (ca->issuer_key == NULL)
			return -1;
		if (X509_check_private_key(ca->issuer, ca->issuer_key) != 1) {
			ERR_clear_error();
			EVP_PKEY_free(ca->issuer_key);
			ca->issuer_key = NULL;
			snprintf(err, err_len,
				 "the key at %s is not the one intermediate.pem certifies: the "
				 "token is another one (or its object was replaced); put the CA's "
				 "token back",
				 ca->key_uri);
			return -1;
		}
		return 0;
	}
	ca->issuer_key = keys_load(authority_path(ca, "intermediate.key", path, sizeof(path)),
				   passphrase, err, err_len);
	if (ca->issuer_key == NULL)
		return -1;
	if (X509_check_private_key(ca->issuer, ca->issuer_key) != 1) {
		ERR_clear_error();
		snprintf(err, err_len,
			 "%s does not match intermediate.pem; restore the pair from a backup",
			 path);
		return -1;
	}
	return 0;
}

int authority_audit(struct authority *ca, const char *const *crls, size_t ncrls, char *out,
		    size_t out_len)
{
	struct store_check chk;
	char what[2048], crl[2048] = "";
	int64_t number = 0;
	bool stale = false;
	int rc;

	/* one snapshot of the inventory for every check below (the lock keeps crl.pem still) */
	if (store_begin_read(ca->store) != 0) {
		snprintf(out, out_len, "%s", store_error(ca->store));
		return -1;
	}
	switch (store_check(ca->store, &chk, what, sizeof(what))) {
	case 0: break;
	case 1:
		snprintf(out, out_len,
			 "audit log BROKEN at entry %lld (after %lld good entries): it was edited "
			 "or an entry removed",
			 (long long)chk.bad_seq, (long long)chk.entries);
		rc = 1;
		goto out;
	case 2:
		snprintf(out, out_len, "%s", what);
		rc = 1;
		goto out;
	default:
		snprintf(out, out_len, "%s", store_error(ca->store));
		rc = -1;
		goto out;
	}
	rc = crl_check(ca, &chk, &number, &stale, crl, sizeof(crl));
	for (size_t i = 0; i < ncrls && rc == 0; i++) {
		int64_t n;

		rc = crl_check_file(ca, &chk, crls[i], &n, crl, sizeof(crl));
	}
	if (rc != 0) {
		snprintf(out, out_len, "%s", crl);
		goto out;
	}
	crl[0] = '\0';
	if (stale && number == 0)
		snprintf(crl, sizeof(crl),
			 "\nnote: there is no crl.pem; run 'mtls ca crl' to publish the CRL");
	else if (stale)
		snprintf(
			crl, sizeof(crl),
			"\nnote: crl.pem is CRL #%lld, older than the newest committed CRL (#%lld: "
			"its publication was interrupted); run 'mtls ca crl' to publish the "
			"inventory's revocations",
			(long long)number,
			(long long)(chk.crl_logged_max > chk.crl_allocated ? chk.crl_logged_max
									   : chk.crl_allocated));
	if (ncrls > 0)
		snprintf(out, out_len, "audit log intact: %lld entries; %zu CRL file%s agree%s%s",
			 (long long)chk.entries, ncrls, ncrls == 1 ? "" : "s",
			 ncrls == 1 ? "s" : "", crl);
	else
		snprintf(out, out_len, "audit log intact: %lld entries%s", (long long)chk.entries,
			 crl);
	rc = 0;
out:
	store_rollback(ca->store);
	return rc;
}

void authority_close(struct authority *ca)
{
	if (ca == NULL)
		return;
	store_close(ca->store);
	X509_free(ca->root);
	X509_free(ca->issuer);
	EVP_PKEY_free(ca->issuer_key);
	authority_release_room(ca);
	if (ca->lock_fd >= 0)
		close(ca->lock_fd); /* releases the flock */
	free(ca);
}
