/*
 * Creating and opening a CA directory.
 */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "authority.h"
#include "files.h"
#include "issue.h"
#include "keys.h"

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
	return rc != 0 ? -1 : 0;
}

static int record(struct store *st, X509 *cert, const char *profile)
{
	struct store_cert c = {0};
	char *subject = issue_subject(cert), spki[65];
	unsigned char *der = NULL;
	int len = i2d_X509(cert, &der), rc;

	if (len <= 0 || subject == NULL) {
		OPENSSL_free(der);
		free(subject);
		return -1;
	}
	issue_serial_hex(cert, c.serial, sizeof(c.serial));
	issue_spki_sha256(cert, spki);
	c.subject = subject;
	c.sans = "";
	c.spki_sha256 = spki;
	c.profile = profile;
	c.not_before = issue_time(X509_get0_notBefore(cert));
	c.not_after = issue_time(X509_get0_notAfter(cert));
	c.issued_at = time(NULL);
	c.der = der;
	c.der_len = (size_t)len;
	rc = store_add_cert(st, &c);
	if (rc == 0)
		rc = store_audit(st, authority_actor(), "init", subject, profile);
	OPENSSL_free(der);
	free(subject);
	return rc;
}

/* What a failed init made, to remove so that it can simply be run again. */
struct made {
	char paths[8][PATH_MAX];
	int n;
};

static void made_add(struct made *m, const char *path)
{
	if (m->n < 8)
		snprintf(m->paths[m->n++], PATH_MAX, "%s", path);
}

static void made_remove(const struct made *m)
{
	char extra[PATH_MAX + 8];

	for (int i = 0; i < m->n; i++) {
		unlink(m->paths[i]);
		/* SQLite's companions of a database we created */
		snprintf(extra, sizeof(extra), "%s-wal", m->paths[i]);
		unlink(extra);
		snprintf(extra, sizeof(extra), "%s-shm", m->paths[i]);
		unlink(extra);
	}
}

int authority_create(const struct authority_init *in, char *err, size_t err_len)
{
	struct authority ca = {.lock_fd = -1};
	EVP_PKEY *root_key = NULL, *int_key = NULL;
	X509 *root = NULL, *inter = NULL;
	char path[PATH_MAX], cn[300];
	time_t now = time(NULL);
	struct issue_spec spec;
	struct made made = {.n = 0};
	struct crl_pending crl = {0};
	int rc = -1;

	if (in->crl_url != NULL && in->crl_url[0] != '\0' &&
	    issue_check_crl_url(in->crl_url, err, err_len) != 0)
		return -1;
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
	snprintf(ca.dir, sizeof(ca.dir), "%s", in->dir);
	if (files_mkdir_private(in->dir, err, err_len) != 0 ||
	    (in->root_key_dir != NULL && files_mkdir_private(in->root_key_dir, err, err_len) != 0))
		return -1;
	if (files_exists(authority_path(&ca, "ca.db", path, sizeof(path))) ||
	    files_exists(authority_path(&ca, "root.pem", path, sizeof(path)))) {
		snprintf(err, err_len, "%s already holds a CA; choose another --dir", in->dir);
		return -1;
	}
	root_key = keys_generate(in->key_alg, err, err_len);
	int_key = root_key != NULL ? keys_generate(in->key_alg, err, err_len) : NULL;
	if (int_key == NULL)
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

	authority_path(&ca, "ca.db", path, sizeof(path));
	ca.store = store_open(path, true, err, err_len);
	if (ca.store == NULL)
		goto out;
	made_add(&made, path);
	if (store_begin(ca.store) != 0) {
		snprintf(err, err_len, "%s", store_error(ca.store));
		goto out;
	}
	if (save_settings(ca.store, in) != 0 || record(ca.store, root, "root") != 0 ||
	    record(ca.store, inter, "intermediate") != 0) {
		snprintf(err, err_len, "%s", store_error(ca.store));
		store_rollback(ca.store);
		goto out;
	}
	/* keys first: a crash leaves no certificate without its key */
	if (in->root_key_dir != NULL)
		snprintf(path, sizeof(path), "%s/root.key", in->root_key_dir);
	else
		authority_path(&ca, "root.key", path, sizeof(path));
	if (write_key(path, root_key, in->passphrase, err, err_len) != 0)
		goto rollback;
	made_add(&made, path);
	if (write_key(authority_path(&ca, "intermediate.key", path, sizeof(path)), int_key,
		      in->passphrase, err, err_len) != 0)
		goto rollback;
	made_add(&made, path);
	if (write_cert(authority_path(&ca, "intermediate.pem", path, sizeof(path)), inter, err,
		       err_len) != 0)
		goto rollback;
	made_add(&made, path);
	if (write_cert(authority_path(&ca, "root.pem", path, sizeof(path)), root, err, err_len) !=
	    0)
		goto rollback;
	made_add(&made, path);
	made_add(&made, authority_path(&ca, "crl.pem", path, sizeof(path)));
	ca.root = root;
	ca.issuer = inter;
	ca.issuer_key = int_key;
	ca.crl_days = in->crl_days;
	snprintf(ca.crl_url, sizeof(ca.crl_url), "%s", in->crl_url != NULL ? in->crl_url : "");
	/* the first CRL is committed, then written; a failure removes the whole CA */
	if (crl_prepare(&ca, &crl, err, err_len) != 0)
		goto rollback;
	if (store_commit(ca.store) != 0) {
		snprintf(err, err_len, "%s", store_error(ca.store));
		goto rollback;
	}
	if (crl_write(&ca, &crl, err, err_len) != 0)
		goto out;
	rc = 0;
	goto out;
rollback:
	store_rollback(ca.store);
out:
	crl_pending_free(&crl);
	store_close(ca.store);
	if (rc != 0)
		made_remove(&made);
	EVP_PKEY_free(root_key);
	EVP_PKEY_free(int_key);
	X509_free(root);
	X509_free(inter);
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
	if (cert == NULL)
		snprintf(err, err_len, "%s is not a PEM certificate; restore it from a backup",
			 path);
	return cert;
}

static long meta_long(struct store *st, const char *key, long fallback)
{
	char buf[64];

	if (store_get_meta(st, key, buf, sizeof(buf)) != 0)
		return fallback;
	return strtol(buf, NULL, 10) > 0 ? strtol(buf, NULL, 10) : fallback;
}

struct authority *authority_open(const char *dir, enum authority_lock lock, char *err,
				 size_t err_len)
{
	struct authority *ca = calloc(1, sizeof(*ca));
	char path[PATH_MAX], what[512];

	if (ca == NULL) {
		snprintf(err, err_len, "out of memory");
		return NULL;
	}
	ca->lock_fd = -1;
	snprintf(ca->dir, sizeof(ca->dir), "%s", dir);
	if (!files_exists(authority_path(ca, "ca.db", path, sizeof(path)))) {
		snprintf(err, err_len, "%s holds no CA; create one with 'mtls ca init --dir %s'",
			 dir, dir);
		goto fail;
	}
	if (lock != AUTHORITY_UNLOCKED) {
		authority_path(ca, "lock", path, sizeof(path));
		ca->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
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
	ca->store =
		store_open(authority_path(ca, "ca.db", path, sizeof(path)), false, err, err_len);
	if (ca->store == NULL)
		goto fail;
	ca->root = read_cert(authority_path(ca, "root.pem", path, sizeof(path)), err, err_len);
	if (ca->root == NULL)
		goto fail;
	ca->issuer =
		read_cert(authority_path(ca, "intermediate.pem", path, sizeof(path)), err, err_len);
	if (ca->issuer == NULL)
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
			 "the CA's CRL distribution point in %s/ca.db is unusable (%s); "
			 "investigate",
			 dir, what);
		goto fail;
	}
	return ca;
fail:
	authority_close(ca);
	return NULL;
}

int authority_load_key(struct authority *ca, const char *passphrase, char *err, size_t err_len)
{
	char path[PATH_MAX];

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
	if (ca->lock_fd >= 0)
		close(ca->lock_fd); /* releases the flock */
	free(ca);
}
