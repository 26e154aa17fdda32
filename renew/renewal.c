/*
 * A certificate that renews itself: the schedule, one renewal, the roots (renewal.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "caclient.h"
#include "certfields.h"
#include "files.h"
#include "fileset.h"
#include "keys.h"
#include "pkcs11.h"
#include "renewal.h"

static int fail(char *err, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
	return -1;
}

static void utc(time_t t, char out[32])
{
	struct tm tm;

	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
}

/* ------------------------------------------------------------------------------------ */
/* When */

uint32_t renewal_random(void)
{
	unsigned char b[4];

	if (RAND_bytes(b, sizeof(b)) != 1) {
		ERR_clear_error();
		return 0;
	}
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* rnd as a fraction in [0, 1) of span */
static long long part(long long span, uint32_t rnd)
{
	return (long long)((double)span * ((double)rnd / 4294967296.0));
}

time_t renewal_schedule(time_t not_before, time_t not_after, time_t now, uint32_t rnd)
{
	long long life = (long long)not_after - (long long)not_before, at, latest;

	if (life <= 0 || now >= not_after)
		return now;
	/* ⅔ of the life, then -5 % .. +5 % of it */
	at = (long long)not_before + life * 2 / 3 - life * RENEWAL_JITTER_PERMILLE / 1000 +
	     part(life * 2 * RENEWAL_JITTER_PERMILLE / 1000, rnd);
	latest = (long long)not_before + life * RENEWAL_LATEST_PERMILLE / 1000;
	if (at > latest)
		at = latest;
	return at < (long long)now ? now : (time_t)at;
}

time_t renewal_backoff(unsigned failures, time_t not_after, time_t now, uint32_t rnd)
{
	long long wait = RENEWAL_RETRY_FIRST;

	for (unsigned i = 1; i < failures && wait < RENEWAL_RETRY_MAX; i++)
		wait *= 2;
	if (wait > RENEWAL_RETRY_MAX)
		wait = RENEWAL_RETRY_MAX;
	wait -= part(wait / 2, rnd);
	if (not_after > now && wait > ((long long)not_after - now) / 2)
		wait = ((long long)not_after - now) / 2;
	if (wait < RENEWAL_RETRY_SHORTEST)
		wait = RENEWAL_RETRY_SHORTEST;
	return now + (time_t)wait;
}

time_t renewal_warn_at(time_t not_before, time_t not_after)
{
	long long life = (long long)not_after - (long long)not_before, last = life / 6;

	if (last > RENEWAL_WARN_MAX)
		last = RENEWAL_WARN_MAX;
	if (last < 0)
		last = 0;
	return not_after - (time_t)last;
}

/* ------------------------------------------------------------------------------------ */
/* Keys */

const char *renewal_key_type(EVP_PKEY *key)
{
	char group[64] = "";
	size_t glen = 0;

	if (EVP_PKEY_is_a(key, "ED25519"))
		return "ed25519";
	if (EVP_PKEY_is_a(key, "RSA"))
		return EVP_PKEY_get_bits(key) > 3072 ? "rsa4096" : "rsa3072";
	if (EVP_PKEY_is_a(key, "EC") &&
	    EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
					   &glen) == 1) {
		if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0)
			return "p256";
		if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0)
			return "p384";
	}
	ERR_clear_error();
	return NULL;
}

bool renewal_key_type_known(const char *name)
{
	static const char *const known[] = {"p256", "p384", "ed25519", "rsa3072", "rsa4096"};

	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (strcmp(name, known[i]) == 0)
			return true;
	return false;
}

bool renewal_leaf_can_renew(X509 *leaf)
{
	uint32_t fl = X509_get_extension_flags(leaf);

	return (fl & EXFLAG_XKUSAGE) != 0 &&
	       (X509_get_extended_key_usage(leaf) & (XKU_SSL_CLIENT | XKU_SSL_SERVER));
}

/* ------------------------------------------------------------------------------------ */
/* Files */

/* The certificates of a PEM file (a chain or a bundle), or NULL with the message. */
static STACK_OF(X509) * read_certs(const char *path, const char *what, char **text,
				   size_t *text_len, char *err, size_t err_len)
{
	size_t len = 0;
	char *pem = files_read(path, &len, err, err_len), why[512];
	STACK_OF(X509) * sk;

	if (pem == NULL)
		return NULL;
	sk = caclient_certs(pem, len, why, sizeof(why));
	if (sk == NULL || sk_X509_num(sk) == 0) {
		fail(err, err_len, "%s %s %s", what, path,
		     sk == NULL ? why : "holds no PEM certificate");
		sk_X509_free(sk);
		free(pem);
		return NULL;
	}
	if (text != NULL) {
		*text = pem;
		*text_len = len;
	} else {
		free(pem);
	}
	return sk;
}

/* An exclusive flock on the directory that holds path, without waiting unless wait: a
 * descriptor to close(), or -1 with the message. If the directory is the one other (a descriptor of
 * a lock already held) is on, other is returned again (as a dup). */
static int lock_dir_of_how(const char *path, int other, bool wait, char *err, size_t err_len)
{
	char buf[PATH_MAX];
	struct stat a, b;
	int fd;

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return fail(err, err_len, "%s: path too long", path);
	fd = open(dirname(buf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return fail(err, err_len, "cannot open the directory of %s: %s", path,
			    strerror(errno));
	if (other >= 0 && fstat(fd, &a) == 0 && fstat(other, &b) == 0 && a.st_dev == b.st_dev &&
	    a.st_ino == b.st_ino) {
		close(fd);
		return dup(other);
	}
	if (flock(fd, wait ? LOCK_EX : LOCK_EX | LOCK_NB) != 0) {
		int e = errno;

		close(fd);
		if (e == EWOULDBLOCK)
			return fail(err, err_len,
				    "another renewal of %s is under way (mtls renew, or another "
				    "daemon with the same files)",
				    path);
		return fail(err, err_len, "cannot lock the directory of %s: %s", path, strerror(e));
	}
	return fd;
}

static int lock_dir_of(const char *path, int other, char *err, size_t err_len)
{
	return lock_dir_of_how(path, other, false, err, err_len);
}

/* The temporary files that a renewal killed half-way left beside path. */
static void remove_temporaries(const char *path)
{
	char d[PATH_MAX], b[PATH_MAX];
	const char *name;

	if (snprintf(d, sizeof(d), "%s", path) >= (int)sizeof(d) ||
	    snprintf(b, sizeof(b), "%s", path) >= (int)sizeof(b))
		return;
	name = basename(b);
	files_remove_temporaries_of(dirname(d), &name, 1);
}

/* A replacement of f->cert and f->key (f->key may be NULL) that a crash cut short is
 * finished or taken back (fileset_recover()), under the locks held. */
static int recover_locked(const struct renewal_files *f, char *err, size_t err_len)
{
	const char *paths[2] = {f->cert, f->key};
	char why[1024];

	if (fileset_recover(paths, f->key != NULL ? 2 : 1, why, sizeof(why)) != 0)
		return fail(err, err_len, "%s: %s", f->cert, why);
	remove_temporaries(f->cert);
	if (f->key != NULL)
		remove_temporaries(f->key);
	return 0;
}

/* Whether the directory of a comes after the directory of b in the order every waiting
 * locker takes them (device, then inode: cli/agent_out.c lock_dirs). */
static bool dir_after(const char *a, const char *b)
{
	char da[PATH_MAX], db[PATH_MAX];
	struct stat sa, sb;

	if (snprintf(da, sizeof(da), "%s", a) >= (int)sizeof(da) ||
	    snprintf(db, sizeof(db), "%s", b) >= (int)sizeof(db) || stat(dirname(da), &sa) != 0 ||
	    stat(dirname(db), &sb) != 0)
		return false;
	if (sa.st_dev != sb.st_dev)
		return sa.st_dev > sb.st_dev;
	return sa.st_ino > sb.st_ino;
}

/* f with key NULL if it is a key on a PKCS#11 token: no file, never replaced */
static struct renewal_files files_only(const struct renewal_files *f)
{
	struct renewal_files ff = *f;

	if (pkcs11_is_uri(ff.key))
		ff.key = NULL;
	return ff;
}

int renewal_recover(const struct renewal_files *fk, char *err, size_t err_len)
{
	const struct renewal_files ff = files_only(fk), *f = &ff;
	int lock_first = -1, lock_second = -1, rc = -1;
	const char *first = f->cert, *second = f->key;

	/* waiting for a renewal under way elsewhere (bounded by its CA client's timeouts); the
	 * two directories in the order the agent locks them, so that neither waits for the
	 * other while holding what the other waits for */
	if (second != NULL && dir_after(first, second)) {
		first = f->key;
		second = f->cert;
	}
	if ((lock_first = lock_dir_of_how(first, -1, true, err, err_len)) < 0 ||
	    (second != NULL &&
	     (lock_second = lock_dir_of_how(second, lock_first, true, err, err_len)) < 0))
		goto out;
	rc = recover_locked(f, err, err_len);
out:
	if (lock_second >= 0)
		close(lock_second);
	if (lock_first >= 0)
		close(lock_first);
	return rc;
}

int renewal_files_apart(const struct renewal_files *f, char *err, size_t err_len)
{
	struct stat a, b;

	if (f->key == NULL || pkcs11_is_uri(f->key))
		return 0;
	if (strcmp(f->cert, f->key) == 0 || (stat(f->cert, &a) == 0 && stat(f->key, &b) == 0 &&
					     a.st_dev == b.st_dev && a.st_ino == b.st_ino))
		return fail(err, err_len,
			    "%s holds both the certificate and its key, and a renewal writes them "
			    "as two files (the second would replace the first); give the key a "
			    "file of its own",
			    f->cert);
	return 0;
}

static mode_t mode_of(const char *path, mode_t dflt)
{
	struct stat sb;

	return stat(path, &sb) == 0 ? sb.st_mode & 0777 : dflt;
}

/* ------------------------------------------------------------------------------------ */
/* One renewal */

int renewal_renew(const char *base_url, const struct renewal_files *fk, const char *key_type,
		  bool same_key, const atomic_bool *stop, struct renewal_result *out, char *err,
		  size_t err_len)
{
	/* a key on a token: no key file to lock, recover or replace, and the same key again
	 * (the engine makes no keys, and PKCS#11 has no atomic swap of objects) */
	const bool token = pkcs11_is_uri(fk->key);
	const struct renewal_files ff = files_only(fk), *f = &ff;
	struct caclient_issued iss = {0};
	char base[512], *capem = NULL, *keypem = NULL, *serial = NULL, when[32];
	size_t ca_len = 0, key_len = 0;
	STACK_OF(X509) *chain = NULL, *roots = NULL;
	EVP_PKEY *oldkey = NULL, *key = NULL;
	X509 *leaf;
	json_t *req = NULL;
	time_t now = time(NULL), na;
	int rc = -1, lock_cert = -1, lock_key = -1;

	memset(out, 0, sizeof(*out));
	if (key_type != NULL && !same_key && !renewal_key_type_known(key_type)) {
		fail(err, err_len, "unknown key type '%s'; use one of %s", key_type,
		     keys_algorithms());
		return RENEWAL_USAGE;
	}
	if (caclient_base_url(base_url, base, sizeof(base), err, err_len) != 0)
		return -1;
	/* one renewal of these files at a time, across processes (mtls renew, mtls enroll) */
	if (token)
		same_key = true;
	if ((lock_cert = lock_dir_of(f->cert, -1, err, err_len)) < 0 ||
	    (f->key != NULL && (lock_key = lock_dir_of(f->key, lock_cert, err, err_len)) < 0))
		goto out;
	if (recover_locked(f, err, err_len) != 0)
		goto out;
	if (renewal_files_apart(f, err, err_len) != 0)
		goto out;
	if ((chain = read_certs(f->cert, "certificate file", NULL, NULL, err, err_len)) == NULL)
		goto out;
	leaf = sk_X509_value(chain, 0);
	/* the token's login is the process's, made when the daemon loaded the key: no PIN */
	oldkey = token ? pkcs11_key_load(fk->key, NULL, NULL, NULL, err, err_len)
		       : keys_load(f->key, NULL, err, err_len);
	if (oldkey == NULL)
		goto out;
	if (EVP_PKEY_eq(X509_get0_pubkey(leaf), oldkey) != 1) {
		fail(err, err_len,
		     "%s does not match the certificate in %s; enroll again with a new token",
		     fk->key, f->cert);
		goto out;
	}
	if (!renewal_leaf_can_renew(leaf)) {
		fail(err, err_len, "%s cannot renew itself at the CA service: %s", f->cert,
		     RENEWAL_NO_CLIENT_AUTH);
		goto out;
	}
	if ((roots = read_certs(f->ca, "CA file", &capem, &ca_len, err, err_len)) == NULL)
		goto out;
	serial = certfields_serial_hex(leaf);
	snprintf(out->old_serial, sizeof(out->old_serial), "%s", serial != NULL ? serial : "?");
	na = certfields_time(X509_get0_notAfter(leaf));
	if (now >= na) {
		utc(na, when);
		fail(err, err_len,
		     "%s expired at %s and cannot renew itself; enroll again with a new token",
		     f->cert, when);
		goto out;
	}
	if (same_key) {
		key = oldkey;
		EVP_PKEY_up_ref(key);
	} else {
		const char *type = key_type != NULL ? key_type : renewal_key_type(oldkey);

		if (type == NULL)
			type = "p256"; /* a key of a kind keys_generate() does not make */
		if ((key = keys_generate(type, err, err_len)) == NULL)
			goto out;
		snprintf(out->key_type, sizeof(out->key_type), "%s", type);
	}
	out->same_key = same_key;
	if ((req = json_pack("{s:b}", "same_key", same_key)) == NULL) {
		fail(err, err_len, "out of memory");
		goto out;
	}
	{
		struct caclient_tls tls = {capem, ca_len, f->cert, fk->key, stop};

		if (caclient_issue(base, "/v1/renew", req, key, &tls, roots, &iss, out->names,
				   sizeof(out->names), err, err_len) != 0)
			goto out;
	}
	if (!same_key && (keypem = keys_to_pem(key, NULL, &key_len)) == NULL) {
		fail(err, err_len, "out of memory");
		goto out;
	}
	{
		/* the chain first, then its key: if the key cannot take its place, the old chain
		 * is put back (fileset_write) */
		struct fileset_file fs[2] = {
			{f->cert, iss.chain_pem, iss.chain_len, mode_of(f->cert, 0644), false, 0,
			 0},
			{f->key, keypem, key_len, 0600, false, 0, 0},
		};

		if (fileset_write(fs, same_key ? 1 : 2, true, err, err_len) != 0) {
			size_t l = strlen(err);

			snprintf(err + l, err_len - l,
				 "; certificate %s was issued but not written (the old one stays "
				 "in use)",
				 iss.serial);
			goto out;
		}
	}
	{
		X509 *nl = sk_X509_value(iss.chain, 0);

		snprintf(out->serial, sizeof(out->serial), "%s", iss.serial);
		out->not_before = certfields_time(X509_get0_notBefore(nl));
		out->not_after = certfields_time(X509_get0_notAfter(nl));
	}
	rc = 0;
out:
	if (lock_key >= 0)
		close(lock_key);
	if (lock_cert >= 0)
		close(lock_cert);
	json_decref(req);
	keys_free_pem(keypem, key_len);
	free(capem);
	free(serial);
	caclient_issued_free(&iss);
	sk_X509_pop_free(chain, X509_free);
	sk_X509_pop_free(roots, X509_free);
	EVP_PKEY_free(oldkey);
	EVP_PKEY_free(key);
	return rc;
}

/* ------------------------------------------------------------------------------------ */
/* The roots */

static int digest(X509 *x, unsigned char md[32])
{
	unsigned int n = 0;

	return X509_digest(x, EVP_sha256(), md, &n) == 1 && n == 32 ? 0 : -1;
}

static bool holds(const unsigned char (*set)[32], int n, const unsigned char md[32])
{
	for (int i = 0; i < n; i++)
		if (memcmp(set[i], md, 32) == 0)
			return true;
	return false;
}

/* A root: self-signed (its signature verifies with its own key) and CA:TRUE. */
static bool is_root(X509 *x)
{
	uint32_t fl = X509_get_extension_flags(x);
	EVP_PKEY *k = X509_get0_pubkey(x);
	bool ok = (fl & EXFLAG_SS) != 0 && (fl & EXFLAG_CA) != 0 && (fl & EXFLAG_INVALID) == 0 &&
		  k != NULL && X509_verify(x, k) == 1;

	ERR_clear_error();
	return ok;
}

/* Is link a link certificate for root (RFC 4210's newWithOld): a CA certificate with root's
 * subject and public key, issued and signed by one of trusted? Only such a certificate lets
 * a root that the daemon does not trust yet in: the TLS connection to the CA's API proves
 * only that its server holds a certificate of the current root, which other servers of the
 * same CA may hold too; the link proves that the current root's key vouches for the new one. */
static bool links(X509 *link, X509 *root, STACK_OF(X509) * trusted)
{
	uint32_t fl = X509_get_extension_flags(link);
	bool ok = false;

	if ((fl & EXFLAG_CA) == 0 || (fl & EXFLAG_INVALID) != 0 ||
	    X509_NAME_cmp(X509_get_subject_name(link), X509_get_subject_name(root)) != 0 ||
	    X509_get0_pubkey(link) == NULL ||
	    EVP_PKEY_eq(X509_get0_pubkey(link), X509_get0_pubkey(root)) != 1)
		return false;
	for (int i = 0; !ok && i < sk_X509_num(trusted); i++) {
		X509 *t = sk_X509_value(trusted, i);
		EVP_PKEY *k = X509_get0_pubkey(t);

		ok = X509_check_issued(t, link) == X509_V_OK && k != NULL &&
		     X509_verify(link, k) == 1;
	}
	ERR_clear_error();
	return ok;
}

/* Does chain (leaf first) verify to one of roots now? */
static bool verifies(STACK_OF(X509) * chain, STACK_OF(X509) * roots)
{
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	STACK_OF(X509) *rest = sk_X509_dup(chain);
	bool ok = false;

	if (store == NULL || ctx == NULL || rest == NULL)
		goto out;
	(void)sk_X509_shift(rest);
	for (int i = 0; i < sk_X509_num(roots); i++)
		if (X509_STORE_add_cert(store, sk_X509_value(roots, i)) != 1)
			goto out;
	if (X509_STORE_CTX_init(ctx, store, sk_X509_value(chain, 0), rest) != 1)
		goto out;
	ok = X509_verify_cert(ctx) == 1;
out:
	ERR_clear_error();
	sk_X509_free(rest);
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	return ok;
}

/* Is x (not a root) a link certificate from a root of served for one of trusted: a CA
 * certificate with a trusted root's subject and key, issued and signed by that served root?
 * A rollover's old root vouching for the new one, which a host enrolled after the switch
 * trusts alone (RFC 4210's newWithOld, seen from the new side). *by is that served root. */
static bool links_to_trusted(X509 *x, STACK_OF(X509) * served, STACK_OF(X509) * trusted, X509 **by)
{
	for (int i = 0; i < sk_X509_num(trusted); i++) {
		STACK_OF(X509) *one = sk_X509_new_null();
		bool ok = false;

		if (one == NULL)
			return false;
		for (int j = 0; !ok && j < sk_X509_num(served); j++) {
			X509 *r = sk_X509_value(served, j);

			sk_X509_zero(one);
			ok = is_root(r) && sk_X509_push(one, r) > 0 &&
			     links(x, sk_X509_value(trusted, i), one);
			if (ok)
				*by = r;
		}
		sk_X509_free(one);
		if (ok)
			return true;
	}
	return false;
}

int renewal_roots_take(STACK_OF(X509) * served, STACK_OF(X509) * trusted, const char *ca,
		       STACK_OF(X509) * *taken, int *left_out, char *msg, size_t msg_len)
{
	STACK_OF(X509) *roots = sk_X509_new_null(), *linkcerts = sk_X509_new_null(),
		       *olds = sk_X509_new_null();
	int n, rc = -1;

	*taken = NULL;
	*left_out = 0;
	if (roots == NULL || linkcerts == NULL || olds == NULL) {
		fail(msg, msg_len, "out of memory");
		goto out;
	}
	/* the roots, and link certificates for new ones (links()), which are not kept */
	for (int i = 0; i < sk_X509_num(served); i++) {
		X509 *x = sk_X509_value(served, i);

		if (!sk_X509_push(is_root(x) ? roots : linkcerts, x)) {
			fail(msg, msg_len, "out of memory");
			goto out;
		}
	}
	n = sk_X509_num(roots);
	for (int i = 0; i < sk_X509_num(linkcerts); i++) {
		X509 *x = sk_X509_value(linkcerts, i), *by = NULL;
		bool is_link = false;

		for (int j = 0; !is_link && j < n; j++)
			is_link = links(x, sk_X509_value(roots, j), trusted);
		/* a link for a root trusted already is not needed; its issuer is a rollover's
		 * old root, which is left out below unless vouched for otherwise */
		if (!is_link && links_to_trusted(x, roots, trusted, &by)) {
			is_link = true;
			if (!sk_X509_push(olds, by)) {
				fail(msg, msg_len, "out of memory");
				goto out;
			}
		}
		if (!is_link) {
			char *s = certfields_serial_hex(x);

			fail(msg, msg_len,
			     "the CA's /roots.pem holds a certificate that is not a root (serial "
			     "%s: not self-signed, or not CA:TRUE) nor a link certificate of a "
			     "trusted root for one; %s left alone",
			     s != NULL ? s : "?", ca);
			free(s);
			goto out;
		}
	}
	if (n == 0) {
		fail(msg, msg_len, "the CA's /roots.pem holds no root");
		goto out;
	}
	for (int i = 0; i < n; i++) {
		X509 *x = sk_X509_value(roots, i);
		bool known = false;

		for (int j = 0; !known && j < sk_X509_num(trusted); j++)
			known = X509_cmp(sk_X509_value(trusted, j), x) == 0;
		for (int j = 0; !known && j < sk_X509_num(linkcerts); j++)
			known = links(sk_X509_value(linkcerts, j), x, trusted);
		if (known) {
			if (!sk_X509_push(*taken == NULL ? (*taken = sk_X509_new_null()) : *taken,
					  x)) {
				fail(msg, msg_len, "out of memory");
				goto out;
			}
			continue;
		}
		if (sk_X509_find(olds, x) >= 0) {
			/* not trusted on the CA service's word: a host that trusts only the new
			 * root keeps it so (peers on the old chains are verified through its own
			 * chain's intermediate, or once they renew) */
			(*left_out)++;
			continue;
		}
		{
			char *s = certfields_serial_hex(x), subj[256];

			X509_NAME_oneline(X509_get_subject_name(x), subj, sizeof(subj));
			fail(msg, msg_len,
			     "the CA's /roots.pem holds a new root (%s, serial %s) that no root of "
			     "%s certifies: a new root is taken only with a link certificate (its "
			     "key certified by a trusted root) in the bundle; %s left alone (add "
			     "it "
			     "by hand if it is yours)",
			     subj, s != NULL ? s : "?", ca, ca);
			free(s);
			goto out;
		}
	}
	if (*taken == NULL) {
		fail(msg, msg_len,
		     "the CA's /roots.pem holds no root of %s, nor one that a root of it vouches "
		     "for; %s left alone",
		     ca, ca);
		goto out;
	}
	rc = 0;
out:
	if (rc != 0) {
		sk_X509_free(*taken);
		*taken = NULL;
		*left_out = 0;
	}
	ERR_clear_error();
	sk_X509_free(roots);
	sk_X509_free(linkcerts);
	sk_X509_free(olds);
	return rc;
}

/* The roots left out, told once per set (st->note; the caller logs it and clears it). */
static void note_left_out(struct renewal_roots *st, STACK_OF(X509) * served, STACK_OF(X509) * taken,
			  int left_out, const char *ca)
{
	unsigned char set[32] = {0}, md[32];
	char subj[256] = "";

	for (int i = 0; i < sk_X509_num(served); i++) {
		X509 *x = sk_X509_value(served, i);
		bool in = false;

		if (!is_root(x))
			continue;
		for (int j = 0; !in && j < sk_X509_num(taken); j++)
			in = X509_cmp(sk_X509_value(taken, j), x) == 0;
		if (in || digest(x, md) != 0)
			continue;
		for (int k = 0; k < 32; k++)
			set[k] ^= md[k];
		if (subj[0] == '\0')
			X509_NAME_oneline(X509_get_subject_name(x), subj, sizeof(subj));
	}
	if (left_out == 0) {
		st->left_out = 0;
		return;
	}
	if (st->left_out == left_out && memcmp(st->left_set, set, 32) == 0)
		return;
	st->left_out = left_out;
	memcpy(st->left_set, set, 32);
	snprintf(st->note, sizeof(st->note),
		 "the CA serves %d root%s (%s) that no root of %s vouches for (the old root of a "
		 "rollover begun before this host trusted the new one): left out, not trusted on "
		 "the CA service's word; peers still on the old chains are verified through this "
		 "host's own intermediate certificate of the same key, or once they renew (give "
		 "the host the old root by hand if it must trust it)",
		 left_out, left_out == 1 ? "" : "s", subj, ca);
}

enum renewal_roots_result renewal_refresh_roots(const char *base_url, const struct renewal_files *f,
						struct renewal_roots *st, const atomic_bool *stop,
						char *msg, size_t msg_len)
{
	enum renewal_roots_result r = RENEWAL_ROOTS_FAILED;
	unsigned char served[CACLIENT_MAX_CERTS][32], md[32];
	char base[512], *capem = NULL, *reply = NULL, *data, why[512];
	size_t ca_len = 0, reply_len = 0;
	STACK_OF(X509) *cur = NULL, *got = NULL, *chain = NULL, *roots = NULL;
	static const char left_note[] = "; a root the CA serves that no trusted root vouches for "
					"(a rollover's old root) is left out";
	BIO *out = NULL;
	int n, nt, foreign = 0, same = 0, left_out = 0;
	long len;

	if (caclient_base_url(base_url, base, sizeof(base), msg, msg_len) != 0)
		return RENEWAL_ROOTS_FAILED;
	if ((cur = read_certs(f->ca, "CA file", &capem, &ca_len, msg, msg_len)) == NULL)
		goto out;
	{
		struct caclient_tls tls = {capem, ca_len, NULL, NULL, stop};

		if (caclient_get(base, "/roots.pem", &tls, &reply, &reply_len, msg, msg_len) != 0)
			goto out;
	}
	if ((got = caclient_certs(reply, reply_len, why, sizeof(why))) == NULL) {
		fail(msg, msg_len, "the CA's /roots.pem: %s", why);
		goto out;
	}
	n = sk_X509_num(got);
	if (n == 0) {
		fail(msg, msg_len, "the CA's /roots.pem holds no certificate");
		goto out;
	}
	if (renewal_roots_take(got, cur, f->ca, &roots, &left_out, msg, msg_len) != 0)
		goto out;
	n = sk_X509_num(got);
	for (int i = 0; i < n; i++)
		if (digest(sk_X509_value(got, i), served[i]) != 0) {
			fail(msg, msg_len, "cannot hash a root: out of memory?");
			goto out;
		}
	/* never lock ourselves out: our own chain must verify to the new roots */
	if ((chain = read_certs(f->cert, "certificate file", NULL, NULL, msg, msg_len)) == NULL)
		goto out;
	if (!verifies(chain, roots)) {
		fail(msg, msg_len,
		     "the CA's roots do not verify this daemon's own certificate %s; %s left alone "
		     "until a certificate from the new root is in place",
		     f->cert, f->ca);
		goto out;
	}
	/* the file is the CA service's if each of its certificates is served now or was
	 * served last time (a root left out is served: not a certificate of another CA) */
	for (int i = 0; i < sk_X509_num(cur); i++) {
		X509 *x = sk_X509_value(cur, i);

		if (digest(x, md) != 0) {
			fail(msg, msg_len, "cannot hash a root: out of memory?");
			goto out;
		}
		if (holds((const unsigned char(*)[32])served, n, md)) {
			for (int j = 0; j < sk_X509_num(roots); j++)
				if (X509_cmp(sk_X509_value(roots, j), x) == 0) {
					same++;
					break;
				}
		} else if (!holds((const unsigned char(*)[32])st->seen, st->nseen, md))
			foreign++;
	}
	memcpy(st->seen, served, sizeof(served[0]) * (size_t)n);
	st->nseen = n;
	note_left_out(st, got, roots, left_out, f->ca);
	nt = sk_X509_num(roots);
	if (same == sk_X509_num(cur) && same == nt) {
		r = RENEWAL_ROOTS_SAME;
		snprintf(msg, msg_len, "%s holds the CA's %d root%s%s", f->ca, nt,
			 nt == 1 ? "" : "s", left_out > 0 ? left_note : "");
		goto out;
	}
	if (foreign > 0) {
		r = RENEWAL_ROOTS_LEFT_ALONE;
		snprintf(
			msg, msg_len,
			"%s holds %d certificate%s the CA service does not serve: it is not the "
			"CA's alone and is left as it is (the CA serves %d root%s; update the file "
			"by hand, or give the daemon a --ca file of the CA's roots only)",
			f->ca, foreign, foreign == 1 ? "" : "s", n, n == 1 ? "" : "s");
		goto out;
	}
	out = BIO_new(BIO_s_mem());
	for (int i = 0; out != NULL && i < nt; i++)
		if (PEM_write_bio_X509(out, sk_X509_value(roots, i)) != 1) {
			BIO_free(out);
			out = NULL;
		}
	if (out == NULL || (len = BIO_get_mem_data(out, &data)) <= 0) {
		fail(msg, msg_len, "cannot encode the roots: out of memory?");
		goto out;
	}
	if (files_write(f->ca, data, (size_t)len, mode_of(f->ca, 0644), false, why, sizeof(why)) !=
	    0) {
		fail(msg, msg_len, "cannot replace %s: %s", f->ca, why);
		goto out;
	}
	r = RENEWAL_ROOTS_REPLACED;
	snprintf(msg, msg_len, "%s replaced: the CA's %d root%s (it held %d)%s", f->ca, nt,
		 nt == 1 ? "" : "s", sk_X509_num(cur), left_out > 0 ? left_note : "");
out:
	ERR_clear_error();
	BIO_free(out);
	free(capem);
	free(reply);
	sk_X509_pop_free(cur, X509_free);
	sk_X509_free(roots); /* got owns their certificates */
	sk_X509_pop_free(got, X509_free);
	sk_X509_pop_free(chain, X509_free);
	return r;
}
