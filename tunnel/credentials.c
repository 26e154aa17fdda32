/*
 * Building an mtls_config from daemon options.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "certfields.h"
#include "credentials.h"
#include "pkcs11.h"

static int add_all(struct mtls_config *c, const struct tunnel_list *l,
		   int (*add)(struct mtls_config *, const char *))
{
	for (size_t i = 0; i < l->n; i++)
		if (add(c, l->v[i]) != 0)
			return -1;
	return 0;
}

/* A negative size is out of range, as the setters say. */
static size_t cache_size(long long n)
{
	return n < 0 ? SIZE_MAX : (size_t)n;
}

/* A page of its own: left out of core dumps, kept out of swap where mlock is allowed. */
struct credentials_secret {
	char *buf;
	size_t size;
	bool locked;
};

struct credentials_secret *credentials_secret_take_env(const char *name, char *err, size_t len)
{
	char *v = getenv(name);
	struct credentials_secret *s;
	size_t n, page = (size_t)sysconf(_SC_PAGESIZE);

	/* not a name: most likely the passphrase itself, which stderr (the journal) must not
	 * repeat */
	if (name[0] == '\0' || (name[0] >= '0' && name[0] <= '9') ||
	    strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") !=
		    strlen(name)) {
		snprintf(err, len,
			 "--key-passphrase-env takes the name of an environment variable (letters, "
			 "digits and _) that holds the passphrase, not the passphrase itself");
		return NULL;
	}
	if (v == NULL) {
		snprintf(err, len,
			 "--key-passphrase-env %s: that environment variable is not set; set it "
			 "to the key's passphrase",
			 name);
		return NULL;
	}
	n = strlen(v);
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		goto oom;
	s->size = (n + 1 + page - 1) / page * page;
	s->buf = mmap(NULL, s->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (s->buf == MAP_FAILED) {
		free(s);
		goto oom;
	}
	madvise(s->buf, s->size, MADV_DONTDUMP);
	s->locked = mlock(s->buf, s->size) == 0;
	memcpy(s->buf, v, n + 1);
	/* unsetenv() only unlinks the entry: the bytes stay where /proc/PID/environ shows them
	 * (the process's first stack page) */
	OPENSSL_cleanse(v, n);
	unsetenv(name);
	return s;
oom:
	snprintf(err, len, "out of memory");
	return NULL;
}

void credentials_secret_free(struct credentials_secret *s)
{
	if (s == NULL)
		return;
	OPENSSL_cleanse(s->buf, s->size);
	if (s->locked)
		munlock(s->buf, s->size);
	munmap(s->buf, s->size);
	free(s);
}

int credentials_ocsp_mode(const char *text, enum mtls_ocsp_mode *mode)
{
	*mode = MTLS_OCSP_OFF;
	if (text == NULL || strcmp(text, "off") == 0)
		return 0;
	if (strcmp(text, "soft-fail") == 0)
		*mode = MTLS_OCSP_SOFT_FAIL;
	else if (strcmp(text, "hard-fail") == 0)
		*mode = MTLS_OCSP_HARD_FAIL;
	else
		return -1;
	return 0;
}

int credentials_mode(const char *text, enum tunnel_mode *mode)
{
	*mode = TUNNEL_MODE_STRICT;
	if (text == NULL || strcmp(text, "strict") == 0)
		return 0;
	if (strcmp(text, "insecure-permissive") == 0)
		*mode = TUNNEL_MODE_PERMISSIVE;
	else if (strcmp(text, "insecure-audit") == 0)
		*mode = TUNNEL_MODE_AUDIT;
	else
		return -1;
	return 0;
}

const char *credentials_mode_name(enum tunnel_mode mode)
{
	switch (mode) {
	case TUNNEL_MODE_PERMISSIVE: return "permissive";
	case TUNNEL_MODE_AUDIT: return "audit";
	default: return "strict";
	}
}

/* --mode: permissive lets a client in without a certificate, and both weaker modes let one
 * in whose certificate would be refused (recorded: mtls_conn_would_refuse()). */
static int set_mode(struct mtls_config *c, const struct tunnel_options *o)
{
	enum tunnel_mode mode;

	if (o->role != TUNNEL_SERVER || credentials_mode(o->mode, &mode) != 0 ||
	    mode == TUNNEL_MODE_STRICT)
		return 0; /* an unknown value is refused before (check_mode): never weaker */
	if (mode == TUNNEL_MODE_PERMISSIVE && mtls_config_insecure_optional_client_cert(c) != 0)
		return -1;
	return mtls_config_insecure_audit(c);
}

/* --ocsp, --ocsp-url, --ocsp-staple, --ocsp-cache (checked by the daemon before). */
static int set_ocsp(struct mtls_config *c, const struct tunnel_options *o)
{
	enum mtls_ocsp_mode mode;

	if (credentials_ocsp_mode(o->ocsp, &mode) != 0)
		mode = MTLS_OCSP_HARD_FAIL; /* not reached: refused at start; never weaker */
	if (mtls_config_set_ocsp_mode(c, mode) != 0 ||
	    (o->ocsp_url != NULL && mtls_config_set_ocsp_url(c, o->ocsp_url) != 0) ||
	    mtls_config_set_ocsp_staple(c, o->ocsp_staple) != 0 ||
	    mtls_config_set_ocsp_cache(c, cache_size(o->ocsp_cache)) != 0)
		return -1;
	return 0;
}

struct mtls_config *credentials_build(const struct tunnel_options *o,
				      const struct credentials_secret *pass, char *err, size_t len)
{
	struct mtls_config *c = mtls_config_new();
	int min = MTLS_TLS1_2;

	if (c == NULL) {
		snprintf(err, len, "out of memory");
		return NULL;
	}
	if (o->tls_min != NULL && strcmp(o->tls_min, "1.3") == 0)
		min = MTLS_TLS1_3;
	/* first: it also covers the passphrase file, checked as it is read */
	if (o->insecure_key_permissions)
		mtls_config_insecure_key_permissions(c);
	if ((o->cert != NULL && mtls_config_set_cert_file(c, o->cert) != 0) ||
	    (o->key != NULL && !pkcs11_is_uri(o->key) &&
	     mtls_config_set_key_file(c, o->key) != 0) ||
	    (o->key != NULL && pkcs11_is_uri(o->key) && mtls_config_set_key_uri(c, o->key) != 0) ||
	    (o->pkcs11_module != NULL && mtls_config_set_pkcs11_module(c, o->pkcs11_module) != 0) ||
	    (o->key_passphrase_file != NULL &&
	     mtls_config_set_key_passphrase_file(c, o->key_passphrase_file) != 0) ||
	    (pass != NULL && mtls_config_set_key_passphrase(c, pass->buf) != 0) ||
	    (o->ca != NULL && mtls_config_set_ca_file(c, o->ca) != 0) ||
	    mtls_config_set_crl_check_chain(c, o->crl_check_chain) != 0 ||
	    mtls_config_set_crl_grace(c, o->crl_grace) != 0 ||
	    mtls_config_set_protocols(c, min, MTLS_TLS1_3) != 0 ||
	    mtls_config_set_verify_cache(c, cache_size(o->verify_cache)) != 0 ||
	    mtls_config_set_session_cache(c, cache_size(o->session_cache)) != 0 ||
	    add_all(c, &o->crl, mtls_config_add_crl_file) != 0 ||
	    add_all(c, &o->allow_uri, mtls_config_allow_uri) != 0 ||
	    add_all(c, &o->allow_dns, mtls_config_allow_dns) != 0 ||
	    add_all(c, &o->allow_cn, mtls_config_allow_cn) != 0 ||
	    add_all(c, &o->allow_email, mtls_config_allow_email) != 0 ||
	    add_all(c, &o->allow_spki, mtls_config_allow_spki_sha256) != 0 ||
	    add_all(c, &o->allow_cert, mtls_config_allow_cert_sha256) != 0 ||
	    mtls_config_set_allow_any_identity(c, o->allow_any_identity) != 0 ||
	    set_ocsp(c, o) != 0 || set_mode(c, o) != 0 ||
	    (o->protocol != NULL && strcmp(o->protocol, "postgresql") == 0 &&
	     mtls_config_set_alpn(c, "postgresql") != 0)) {
		snprintf(err, len, "%s", mtls_config_error(c));
		mtls_config_free(c);
		return NULL;
	}
	return c;
}

int credentials_cert_validity(const char *path, time_t *not_before, time_t *not_after)
{
	BIO *bio = BIO_new_file(path, "r");
	X509 *cert = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	int rc = -1;

	if (cert != NULL) {
		*not_before = certfields_time(X509_get0_notBefore(cert));
		*not_after = certfields_time(X509_get0_notAfter(cert));
		if (*not_before != 0 && *not_after != 0)
			rc = 0;
	}
	X509_free(cert);
	BIO_free(bio);
	ERR_clear_error();
	return rc;
}

size_t credentials_files(const struct tunnel_options *o, const char **out, size_t max)
{
	size_t n = 0;

	if (o->cert != NULL && n < max)
		out[n++] = o->cert;
	if (o->key != NULL && !pkcs11_is_uri(o->key) && n < max) /* a token: no file to watch */
		out[n++] = o->key;
	if (o->key_passphrase_file != NULL && n < max)
		out[n++] = o->key_passphrase_file;
	if (o->ca != NULL && n < max)
		out[n++] = o->ca;
	for (size_t i = 0; i < o->crl.n && n < max; i++)
		out[n++] = o->crl.v[i];
	return n;
}

/* The group of user through which a root-owned key may be read: its primary group, if it is
 * the user's own (named after it, no other members: what lib/config.c accepts). NULL if it
 * has none, and then the key must be the user's (0600). */
static const char *own_group_name(const char *user, char *out, size_t len)
{
	struct passwd *pw = getpwnam(user);
	struct group *gr = pw != NULL ? getgrgid(pw->pw_gid) : NULL;

	if (gr == NULL || strcmp(gr->gr_name, user) != 0)
		return NULL;
	for (char **m = gr->gr_mem; m != NULL && *m != NULL; m++)
		if (strcmp(*m, user) != 0)
			return NULL;
	snprintf(out, len, "%s", gr->gr_name);
	return out;
}

int credentials_check_readable(const struct tunnel_options *o, const char *user, char *err,
			       size_t len)
{
	const char *files[CREDENTIALS_FILES_MAX];
	size_t n = credentials_files(o, files, CREDENTIALS_FILES_MAX);

	for (size_t i = 0; i < n; i++) {
		int fd = open(files[i], O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
		int e = errno;
		bool secret = files[i] == o->key || files[i] == o->key_passphrase_file;
		char group[64], fix[300];

		if (fd >= 0) {
			close(fd);
			continue;
		}
		if (e != EACCES && e != EPERM)
			continue; /* a missing file: the build says so, with the file's role */
		if (!secret)
			snprintf(fix, sizeof(fix), "chmod 0644 %s", files[i]);
		else if (own_group_name(user, group, sizeof(group)) != NULL)
			snprintf(fix, sizeof(fix), "chown root:%s %s; chmod 0640 %s", group,
				 files[i], files[i]);
		else /* a shared group (nobody's nogroup) would let its other members read it */
			snprintf(fix, sizeof(fix), "chown %s %s; chmod 0600 %s", user, files[i],
				 files[i]);
		snprintf(err, len,
			 "--user %s cannot read %s (%s), and every reload reads it again as %s: "
			 "run '%s' (the directories above it searchable by %s)",
			 user, files[i], strerror(e), user, fix, user);
		return -1;
	}
	return 0;
}

/* The certificates of a PEM file, or NULL. */
static STACK_OF(X509) * read_certs(const char *path)
{
	BIO *bio = BIO_new_file(path, "r");
	STACK_OF(X509) *certs = sk_X509_new_null();
	X509 *x;

	while (bio != NULL && certs != NULL && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)))
		if (!sk_X509_push(certs, x)) {
			X509_free(x);
			break;
		}
	BIO_free(bio);
	ERR_clear_error();
	if (certs != NULL && sk_X509_num(certs) == 0) {
		sk_X509_free(certs);
		certs = NULL;
	}
	return certs;
}

int credentials_chain(const char *cert, const char *ca, struct credentials_chain *out)
{
	STACK_OF(X509) *chain = read_certs(cert), *cas = ca != NULL ? read_certs(ca) : NULL;
	X509_STORE *store = NULL;
	X509_STORE_CTX *ctx = NULL;
	STACK_OF(X509) *untrusted = NULL;

	memset(out, 0, sizeof(*out));
	if (chain == NULL) {
		sk_X509_pop_free(cas, X509_free);
		return -1;
	}
	out->ncerts = sk_X509_num(chain);
	out->top_issuer = X509_NAME_hash_ex(
		X509_get_issuer_name(sk_X509_value(chain, out->ncerts - 1)), NULL, NULL, NULL);
	/* the chain as sent (leaf, then the file's other certificates) leads to a CA of the
	 * bundle; the time is not the question here (check_own_cert answers it) */
	if (cas != NULL && (store = X509_STORE_new()) != NULL && (ctx = X509_STORE_CTX_new()) &&
	    (untrusted = sk_X509_dup(chain)) != NULL) {
		for (int i = 0; i < sk_X509_num(cas); i++)
			X509_STORE_add_cert(store, sk_X509_value(cas, i));
		(void)sk_X509_shift(untrusted);
		X509_STORE_set_flags(store, X509_V_FLAG_NO_CHECK_TIME);
		if (X509_STORE_CTX_init(ctx, store, sk_X509_value(chain, 0), untrusted) == 1)
			out->verifies = X509_verify_cert(ctx) == 1;
	}
	sk_X509_free(untrusted);
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	sk_X509_pop_free(cas, X509_free);
	sk_X509_pop_free(chain, X509_free);
	ERR_clear_error();
	return 0;
}

int credentials_crl_times(const char *path, time_t *this_update, time_t *next_update)
{
	BIO *bio = BIO_new_file(path, "r");
	X509_CRL *crl;
	int rc = -1;

	*this_update = *next_update = 0;
	while (bio != NULL && (crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL)) != NULL) {
		time_t t = certfields_time(X509_CRL_get0_lastUpdate(crl));
		time_t nu = X509_CRL_get0_nextUpdate(crl) != NULL
				    ? certfields_time(X509_CRL_get0_nextUpdate(crl))
				    : 0;

		if (nu != 0 && (*next_update == 0 || nu < *next_update)) {
			*next_update = nu;
			*this_update = t;
			rc = 0;
		}
		X509_CRL_free(crl);
	}
	BIO_free(bio);
	ERR_clear_error();
	return rc;
}

static json_t *iso(time_t when)
{
	char buf[40];
	struct tm tm;

	if (when == 0 || gmtime_r(&when, &tm) == NULL ||
	    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		return json_null();
	return json_string(buf);
}

static json_t *name_json(const X509_NAME *name)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data = NULL;
	long n;
	json_t *j = NULL;

	if (bio != NULL && X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) >= 0 &&
	    (n = BIO_get_mem_data(bio, &data)) >= 0)
		j = json_stringn_nocheck(data != NULL ? data : "", (size_t)n);
	BIO_free(bio);
	return j != NULL ? j : json_null();
}

static json_t *cert_json(X509 *cert)
{
	char *serial = certfields_serial_hex(cert);
	json_t *j = json_pack("{s:o,s:o,s:s?,s:o,s:o}", "subject",
			      name_json(X509_get_subject_name(cert)), "issuer",
			      name_json(X509_get_issuer_name(cert)), "serial", serial, "not_before",
			      iso(certfields_time(X509_get0_notBefore(cert))), "not_after",
			      iso(certfields_time(X509_get0_notAfter(cert))));

	free(serial);
	return j;
}

static json_t *crl_json(X509_CRL *crl, const char *file, const char *url)
{
	ASN1_INTEGER *num = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
	BIGNUM *bn = num != NULL ? ASN1_INTEGER_to_BN(num, NULL) : NULL;
	char *dec = bn != NULL ? BN_bn2dec(bn) : NULL;
	time_t tu = certfields_time(X509_CRL_get0_lastUpdate(crl));
	json_t *j =
		json_pack("{s:s,s:s?,s:o,s:s?,s:o,s:I,s:o,s:i}", "file", file, "url", url, "issuer",
			  name_json(X509_CRL_get_issuer(crl)), "number", dec, "this_update",
			  iso(tu), "this_update_unix", (json_int_t)tu, "next_update",
			  iso(X509_CRL_get0_nextUpdate(crl) != NULL
				      ? certfields_time(X509_CRL_get0_nextUpdate(crl))
				      : 0),
			  "revoked", sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)));

	OPENSSL_free(dec);
	BN_free(bn);
	ASN1_INTEGER_free(num);
	return j;
}

int credentials_status(const struct tunnel_options *o, const char *const *crl_urls, json_t *obj)
{
	json_t *cas = json_array(), *crls = json_array();
	BIO *bio;
	X509 *cert;
	X509_CRL *crl;
	int rc = -1;

	if (cas == NULL || crls == NULL)
		goto out;
	if (o->cert != NULL && (bio = BIO_new_file(o->cert, "r")) != NULL) {
		if ((cert = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
			json_t *j = cert_json(cert);

			if (j == NULL ||
			    json_object_set_new(j, "file", json_string(o->cert)) != 0 ||
			    json_object_set_new(obj, "certificate", j) != 0)
				goto fail_bio;
			X509_free(cert);
		}
		BIO_free(bio);
	}
	if (o->ca != NULL && (bio = BIO_new_file(o->ca, "r")) != NULL) {
		while ((cert = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
			if (json_array_append_new(cas, cert_json(cert)) != 0)
				goto fail_bio;
			X509_free(cert);
		}
		BIO_free(bio);
	}
	for (size_t i = 0; i < o->crl.n; i++) {
		if ((bio = BIO_new_file(o->crl.v[i], "r")) == NULL)
			continue;
		while ((crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL)) != NULL) {
			json_t *j =
				crl_json(crl, o->crl.v[i], crl_urls != NULL ? crl_urls[i] : NULL);

			X509_CRL_free(crl);
			if (json_array_append_new(crls, j) != 0) {
				BIO_free(bio);
				goto out;
			}
		}
		BIO_free(bio);
	}
	if (json_object_set(obj, "ca", cas) == 0 && json_object_set(obj, "crl", crls) == 0)
		rc = 0;
	goto out;
fail_bio:
	X509_free(cert);
	BIO_free(bio);
out:
	json_decref(cas);
	json_decref(crls);
	ERR_clear_error();
	return rc;
}

int credentials_become_user(const char *user, struct credentials_ids *saved, char *err, size_t len)
{
	struct passwd *pw;

	/* saved first: after a failure, credentials_become_root() takes back what changed */
	saved->egid = getegid();
	saved->ngroups = getgroups(256, saved->groups);
	pw = getpwnam(user);
	if (pw == NULL) {
		snprintf(err, len, "--user %s: no such user", user);
		return -1;
	}
	if (saved->ngroups < 0 || initgroups(pw->pw_name, pw->pw_gid) != 0 ||
	    setegid(pw->pw_gid) != 0 || seteuid(pw->pw_uid) != 0) {
		snprintf(err, len, "--user %s: cannot become that user: %s%s", user,
			 strerror(errno),
			 geteuid() != 0 ? " (only root can change user; start as root)" : "");
		return -1;
	}
	return 0;
}

int credentials_become_root(const struct credentials_ids *saved, char *err, size_t len)
{
	if (seteuid(0) != 0 || setegid(saved->egid) != 0 ||
	    (saved->ngroups >= 0 && setgroups((size_t)saved->ngroups, saved->groups) != 0)) {
		snprintf(err, len, "cannot take back root's ids: %s", strerror(errno));
		return -1;
	}
	return 0;
}
