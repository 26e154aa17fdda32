/*
 * struct mtls_config: a description of what an endpoint should do, owned by the caller.
 * Setters copy their input; parsing and cross-checks happen in mtls_configure(), which
 * works on a private copy (config_clone()) that the endpoint's state owns: nothing done to
 * the caller's config afterwards reaches a running endpoint.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "internal.h"
#include "pkcs11.h"
#include "readfile.h"

/* Certificates, keys, CA bundles and CRLs larger than this are refused as a mistake. */
#define FILE_MAX (16u * 1024 * 1024)

struct mtls_config *mtls_config_new(void)
{
	struct mtls_config *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->crl_grace = 0;
	c->verify_depth = 4;
	c->min_version = MTLS_TLS1_2;
	c->max_version = MTLS_TLS1_3;
	c->tickets = true;
	c->verify_cache_slots = MTLS_VERIFY_CACHE_DEFAULT;
	c->session_cache_slots = MTLS_SESSION_CACHE_DEFAULT;
	c->ocsp_mode = MTLS_OCSP_OFF;
	c->ocsp_cache_slots = MTLS_OCSP_CACHE_DEFAULT;
	return c;
}

static void blob_free(struct blob *b, bool secret)
{
	if (b->data != NULL && secret)
		OPENSSL_cleanse(b->data, b->len);
	free(b->data);
	free(b->origin);
	memset(b, 0, sizeof(*b));
}

static void strlist_free(struct strlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

static void passphrase_free(struct mtls_config *c)
{
	if (c->passphrase != NULL) {
		OPENSSL_cleanse(c->passphrase, strlen(c->passphrase));
		free(c->passphrase);
	}
	c->passphrase = NULL;
	c->passphrase_set = false;
}

void mtls_config_free(struct mtls_config *c)
{
	if (c == NULL)
		return;
	blob_free(&c->cert, false);
	blob_free(&c->key, true);
	blob_free(&c->ca, false);
	for (size_t i = 0; i < c->ncrls; i++)
		blob_free(&c->crls[i], false);
	free(c->crls);
	passphrase_free(c);
	free(c->key_uri);
	free(c->pkcs11_module);
	free(c->ocsp_url);
	free(c->alpn);
	free(c->staple_der);
	strlist_free(&c->allow_uri);
	strlist_free(&c->allow_dns);
	strlist_free(&c->allow_cn);
	strlist_free(&c->allow_spki);
	strlist_free(&c->allow_cert);
	strlist_free(&c->allow_email);
	free(c);
}

static int blob_copy(struct blob *to, const struct blob *from)
{
	if (from->data == NULL)
		return 0;
	to->data = malloc(from->len + 1);
	to->origin = strdup(from->origin != NULL ? from->origin : "memory");
	if (to->data == NULL || to->origin == NULL)
		return -1;
	memcpy(to->data, from->data, from->len);
	to->data[from->len] = '\0';
	to->len = from->len;
	return 0;
}

int config_strlist_copy(struct strlist *to, const struct strlist *from)
{
	if (from->n == 0)
		return 0;
	to->v = calloc(from->n, sizeof(*to->v));
	if (to->v == NULL)
		return -1;
	for (; to->n < from->n; to->n++)
		if ((to->v[to->n] = strdup(from->v[to->n])) == NULL)
			return -1;
	return 0;
}

struct mtls_config *config_clone(const struct mtls_config *c)
{
	struct mtls_config *k = malloc(sizeof(*k));
	bool ok;

	if (k == NULL)
		return NULL;
	/* scalars first, then replace every pointer with a copy of what it points to */
	memcpy(k, c, sizeof(*k));
	error_clear(&k->err);
	memset(&k->cert, 0, sizeof(k->cert));
	memset(&k->key, 0, sizeof(k->key));
	memset(&k->ca, 0, sizeof(k->ca));
	k->crls = NULL;
	k->ncrls = 0;
	k->passphrase = NULL;
	k->staple_der = NULL;
	k->staple_len = 0;
	k->passphrase_set = false;
	k->key_uri = NULL;
	k->pkcs11_module = NULL;
	k->ocsp_url = NULL;
	k->alpn = NULL;
	memset(&k->allow_uri, 0, sizeof(k->allow_uri));
	memset(&k->allow_dns, 0, sizeof(k->allow_dns));
	memset(&k->allow_cn, 0, sizeof(k->allow_cn));
	memset(&k->allow_spki, 0, sizeof(k->allow_spki));
	memset(&k->allow_cert, 0, sizeof(k->allow_cert));
	memset(&k->allow_email, 0, sizeof(k->allow_email));

	ok = blob_copy(&k->cert, &c->cert) == 0 && blob_copy(&k->key, &c->key) == 0 &&
	     blob_copy(&k->ca, &c->ca) == 0;
	if (ok && c->ncrls > 0) {
		k->crls = calloc(c->ncrls, sizeof(*k->crls));
		ok = k->crls != NULL;
		for (; ok && k->ncrls < c->ncrls; k->ncrls++)
			ok = blob_copy(&k->crls[k->ncrls], &c->crls[k->ncrls]) == 0;
	}
	if (ok && c->key_uri != NULL)
		ok = (k->key_uri = strdup(c->key_uri)) != NULL;
	if (ok && c->pkcs11_module != NULL)
		ok = (k->pkcs11_module = strdup(c->pkcs11_module)) != NULL;
	if (ok && c->ocsp_url != NULL)
		ok = (k->ocsp_url = strdup(c->ocsp_url)) != NULL;
	if (ok && c->alpn != NULL)
		ok = (k->alpn = strdup(c->alpn)) != NULL;
	if (ok && c->passphrase_set) {
		k->passphrase = strdup(c->passphrase);
		k->passphrase_set = ok = k->passphrase != NULL;
	}
	ok = ok && config_strlist_copy(&k->allow_uri, &c->allow_uri) == 0 &&
	     config_strlist_copy(&k->allow_dns, &c->allow_dns) == 0 &&
	     config_strlist_copy(&k->allow_cn, &c->allow_cn) == 0 &&
	     config_strlist_copy(&k->allow_spki, &c->allow_spki) == 0 &&
	     config_strlist_copy(&k->allow_cert, &c->allow_cert) == 0 &&
	     config_strlist_copy(&k->allow_email, &c->allow_email) == 0;
	if (!ok) {
		mtls_config_free(k);
		return NULL;
	}
	return k;
}

void config_forget_key(struct mtls_config *c)
{
	blob_free(&c->key, true);
	passphrase_free(c);
}

const char *mtls_config_error(const struct mtls_config *c)
{
	return c->err.msg;
}

enum mtls_reason mtls_config_error_reason(const struct mtls_config *c)
{
	return c->err.reason;
}

/* Read a whole regular file into b. mode receives its permission bits. */
static int read_file(struct mtls_config *c, const char *what, const char *path, struct blob *b,
		     mode_t *mode)
{
	uint8_t *data;
	size_t len;
	mode_t m;
	int e;

	if (path == NULL || path[0] == '\0')
		return error_set(&c->err, MTLS_REASON_USAGE, "%s: no file name given", what);
	e = readfile(path, FILE_MAX, &data, &len, &m);
	if (e == EINVAL)
		return error_set(&c->err, MTLS_REASON_FILE, "%s file %s is not a regular file",
				 what, path);
	if (e == EFBIG)
		return error_set(&c->err, MTLS_REASON_FILE,
				 "%s file %s is larger than %u bytes; is it the right file?", what,
				 path, FILE_MAX);
	if (e == ENOMEM)
		return error_set(&c->err, MTLS_REASON_INTERNAL, "out of memory");
	if (e != 0)
		return error_set(&c->err, MTLS_REASON_FILE, "cannot read %s file %s: %s", what,
				 path, strerror(e));
	blob_free(b, b == &c->key);
	b->data = data;
	b->len = len;
	b->origin = strdup(path);
	if (mode != NULL)
		*mode = m;
	if (b->origin == NULL)
		return error_set(&c->err, MTLS_REASON_INTERNAL, "out of memory");
	error_clear(&c->err);
	return 0;
}

static int copy_mem(struct mtls_config *c, const char *what, const uint8_t *pem, size_t len,
		    struct blob *b)
{
	uint8_t *data;

	if (pem == NULL || len == 0)
		return error_set(&c->err, MTLS_REASON_USAGE, "%s: empty input", what);
	if (len > FILE_MAX)
		return error_set(&c->err, MTLS_REASON_USAGE, "%s: input too large", what);
	data = malloc(len + 1);
	if (data == NULL)
		return error_set(&c->err, MTLS_REASON_INTERNAL, "out of memory");
	memcpy(data, pem, len);
	data[len] = '\0';
	blob_free(b, b == &c->key);
	b->data = data;
	b->len = len;
	b->origin = strdup("memory");
	if (b->origin == NULL)
		return error_set(&c->err, MTLS_REASON_INTERNAL, "out of memory");
	return 0;
}

int mtls_config_set_cert_file(struct mtls_config *c, const char *path)
{
	return read_file(c, "certificate", path, &c->cert, NULL);
}

int mtls_config_set_cert_mem(struct mtls_config *c, const uint8_t *pem, size_t len)
{
	return copy_mem(c, "certificate", pem, len, &c->cert);
}

/* Whether group gid is the own group of the process's user: named after it and with no
 * other member, as 'useradd --user-group' (or 'adduser --system --group') makes it. A
 * primary group alone says nothing: nobody's nogroup is also the primary group of _apt and
 * sync on Debian, and 'users' that of every account on some systems. */
static bool own_group(gid_t gid)
{
	struct passwd pw, *pwp = NULL;
	struct group gr, *grp = NULL;
	char pwbuf[4096], grbuf[16384];
	bool own;

	if (getpwuid_r(geteuid(), &pw, pwbuf, sizeof(pwbuf), &pwp) != 0 || pwp == NULL ||
	    getgrgid_r(gid, &gr, grbuf, sizeof(grbuf), &grp) != 0 || grp == NULL)
		return false;
	own = strcmp(gr.gr_name, pw.pw_name) == 0 && pw.pw_gid == gid;
	for (char **m = gr.gr_mem; own && m != NULL && *m != NULL; m++)
		own = strcmp(*m, pw.pw_name) == 0;
	return own;
}

/* The permission bits of a secret's file that make it readable by others than its reader.
 * Group read (not write) counts as private when the file belongs to root or to this process's
 * user and its group is that user's own (own_group()): a daemon running as user mtls reads a
 * root-owned key through its group ('chown root:mtls key.pem; chmod 0640'), and nobody else
 * can, as with a 0600 key of its own. Any other group-readable file is refused, as before. */
static mode_t secret_mode(const char *path, mode_t mode)
{
	struct stat sb;
	gid_t gid = getegid();

	if ((mode & 077) == 040 && gid != 0 && stat(path, &sb) == 0 && S_ISREG(sb.st_mode) &&
	    sb.st_gid == gid && (sb.st_mode & 077) == 040 &&
	    (sb.st_uid == 0 || sb.st_uid == geteuid()) && own_group(gid))
		return mode & ~(mode_t)070;
	return mode;
}

static void key_uri_free(struct mtls_config *c)
{
	free(c->key_uri);
	c->key_uri = NULL;
}

int mtls_config_set_key_file(struct mtls_config *c, const char *path)
{
	if (read_file(c, "private key", path, &c->key, &c->key_mode) != 0)
		return -1;
	c->key_mode = secret_mode(path, c->key_mode);
	key_uri_free(c);
	return 0;
}

int mtls_config_set_key_mem(struct mtls_config *c, const uint8_t *pem, size_t len)
{
	c->key_mode = 0;
	if (copy_mem(c, "private key", pem, len, &c->key) != 0)
		return -1;
	key_uri_free(c);
	return 0;
}

int mtls_config_set_key_uri(struct mtls_config *c, const char *uri)
{
	char why[300];
	char *copy;

	if (uri == NULL || uri[0] == '\0')
		return error_set(&c->err, MTLS_REASON_USAGE, "key URI: none given");
	/* the text is checked now (a PIN in it is refused before it is copied anywhere); the
	 * token is opened by mtls_configure() */
	if (pkcs11_uri_check(uri, NULL, 0, why, sizeof(why)) != 0)
		return error_set(&c->err, MTLS_REASON_CONFIG, "%s", why);
	copy = strdup(uri);
	if (copy == NULL)
		return error_set(&c->err, MTLS_REASON_INTERNAL, "out of memory");
	blob_free(&c->key, true);
	c->key_mode = 0;
	key_uri_free(c);
	c->key_uri = copy;
	return 0;
}

int mtls_config_set_pkcs11_module(struct mtls_config *c, const char *path)
{
	char *copy = NULL;

	if (path != NULL && path[0] != '\0' && (copy = strdup(path)) == NULL)
		return error_set(&c->err, MTLS_REASON_INTERNAL, "out of memory");
	free(c->pkcs11_module);
	c->pkcs11_module = copy;
	return 0;
}

static int set_passphrase(struct mtls_config *c, const char *pass, size_t len)
{
	char *copy = malloc(len + 1);

	if (copy == NULL)
		return error_set(&c->err, MTLS_REASON_INTERNAL, "out of memory");
	memcpy(copy, pass, len);
	copy[len] = '\0';
	passphrase_free(c);
	c->passphrase = copy;
	c->passphrase_set = true;
	return 0;
}

int mtls_config_set_key_passphrase(struct mtls_config *c, const char *passphrase)
{
	if (passphrase == NULL)
		return error_set(&c->err, MTLS_REASON_USAGE, "key passphrase: NULL given");
	return set_passphrase(c, passphrase, strlen(passphrase));
}

int mtls_config_set_key_passphrase_file(struct mtls_config *c, const char *path)
{
	struct blob b = {0};
	mode_t mode = 0;
	size_t len;
	int rc;

	if (read_file(c, "passphrase", path, &b, &mode) != 0)
		return -1;
	/* as a key file is (load.c), but checked here: the passphrase is not kept past this */
	if (secret_mode(path, mode) & 077 && !(c->insecure & INSECURE_KEY_PERMISSIONS)) {
		blob_free(&b, true);
		return error_set(&c->err, MTLS_REASON_KEY_PERMISSIONS,
				 "passphrase file %s is readable by group or others (mode %04o); "
				 "run 'chmod 600 %s'",
				 path, (unsigned)(mode & 07777), path);
	}
	len = strcspn((const char *)b.data, "\r\n");
	rc = set_passphrase(c, (const char *)b.data, len);
	blob_free(&b, true);
	return rc;
}

int mtls_config_set_key_passphrase_env(struct mtls_config *c, const char *name)
{
	const char *v = name != NULL ? getenv(name) : NULL;

	if (v == NULL)
		return error_set(&c->err, MTLS_REASON_CONFIG,
				 "environment variable %s with the key passphrase is not set",
				 name != NULL ? name : "(null)");
	return set_passphrase(c, v, strlen(v));
}

int mtls_config_set_ca_file(struct mtls_config *c, const char *path)
{
	return read_file(c, "CA", path, &c->ca, NULL);
}

int mtls_config_set_ca_mem(struct mtls_config *c, const uint8_t *pem, size_t len)
{
	return copy_mem(c, "CA", pem, len, &c->ca);
}

static struct blob *crl_slot(struct mtls_config *c)
{
	struct blob *n = realloc(c->crls, (c->ncrls + 1) * sizeof(*n));

	if (n == NULL)
		return NULL;
	c->crls = n;
	memset(&n[c->ncrls], 0, sizeof(*n));
	return &n[c->ncrls];
}

int mtls_config_add_crl_file(struct mtls_config *c, const char *path)
{
	struct blob *b = crl_slot(c);

	if (b == NULL)
		return error_set(&c->err, MTLS_REASON_INTERNAL, "out of memory");
	if (read_file(c, "CRL", path, b, NULL) != 0)
		return -1;
	c->ncrls++;
	return 0;
}

int mtls_config_add_crl_mem(struct mtls_config *c, const uint8_t *pem, size_t len)
{
	struct blob *b = crl_slot(c);

	if (b == NULL)
		return error_set(&c->err, MTLS_REASON_INTERNAL, "out of memory");
	if (copy_mem(c, "CRL", pem, len, b) != 0)
		return -1;
	c->ncrls++;
	return 0;
}

int mtls_config_set_crl_check_chain(struct mtls_config *c, int on)
{
	c->crl_check_chain = on != 0;
	return 0;
}

int mtls_config_set_crl_grace(struct mtls_config *c, int64_t seconds)
{
	if (seconds < 0 || seconds > (int64_t)366 * 24 * 3600)
		return error_set(&c->err, MTLS_REASON_USAGE,
				 "CRL grace period must be between 0 and 366 days");
	c->crl_grace = seconds;
	return 0;
}

int mtls_config_set_verify_depth(struct mtls_config *c, int depth)
{
	if (depth < 0 || depth > 16)
		return error_set(&c->err, MTLS_REASON_USAGE,
				 "verify depth must be between 0 and 16 intermediates");
	c->verify_depth = depth;
	return 0;
}

int mtls_config_set_protocols(struct mtls_config *c, int min_version, int max_version)
{
	if ((min_version != MTLS_TLS1_2 && min_version != MTLS_TLS1_3) ||
	    (max_version != MTLS_TLS1_2 && max_version != MTLS_TLS1_3) || min_version > max_version)
		return error_set(&c->err, MTLS_REASON_USAGE,
				 "protocols must be TLS 1.2 or TLS 1.3, minimum not above maximum");
	c->min_version = min_version;
	c->max_version = max_version;
	return 0;
}

int mtls_config_set_verify_time(struct mtls_config *c, time_t when)
{
	c->verify_time = when;
	return 0;
}

int mtls_config_set_session_tickets(struct mtls_config *c, int on)
{
	c->tickets = on != 0;
	return 0;
}

int mtls_config_set_alpn(struct mtls_config *c, const char *protocol)
{
	size_t n = protocol != NULL ? strnlen(protocol, 256) : 0;
	char *copy = NULL;

	if (protocol != NULL) {
		/* any byte would do for RFC 7301; registered names are printable, and one that
		 * is can be shown in a message as it is */
		for (size_t i = 0; i < n; i++)
			if (protocol[i] <= 0x20 || protocol[i] >= 0x7f)
				n = 0;
		if (n == 0 || n > 255)
			return error_set(&c->err, MTLS_REASON_USAGE,
					 "ALPN protocol: give a name of 1 to 255 printable ASCII "
					 "bytes without spaces, such as postgresql");
		if ((copy = strdup(protocol)) == NULL)
			return error_set(&c->err, MTLS_REASON_INTERNAL, "out of memory");
	}
	free(c->alpn);
	c->alpn = copy;
	return 0;
}

int mtls_config_set_verify_cache(struct mtls_config *c, size_t entries)
{
	if (entries > 1u << 20)
		return error_set(&c->err, MTLS_REASON_USAGE,
				 "verify cache size must be between 0 (off) and 1048576 entries");
	c->verify_cache_slots = entries;
	return 0;
}

int mtls_config_set_session_cache(struct mtls_config *c, size_t entries)
{
	if (entries > 1u << 20)
		return error_set(&c->err, MTLS_REASON_USAGE,
				 "session cache size must be between 0 (off) and 1048576 entries");
	c->session_cache_slots = entries;
	return 0;
}

int mtls_config_set_ocsp_mode(struct mtls_config *c, enum mtls_ocsp_mode mode)
{
	if (mode != MTLS_OCSP_OFF && mode != MTLS_OCSP_SOFT_FAIL && mode != MTLS_OCSP_HARD_FAIL)
		return error_set(&c->err, MTLS_REASON_USAGE,
				 "OCSP mode must be off, soft-fail or hard-fail");
	c->ocsp_mode = mode;
	return 0;
}

int mtls_config_set_ocsp_url(struct mtls_config *c, const char *url)
{
	size_t n = url != NULL ? strlen(url) : 0;
	char *copy;

	for (size_t i = 0; i < n; i++)
		if (url[i] <= 0x20 || url[i] >= 0x7f)
			n = 0;
	if (n == 0 || n > OCSP_URL_MAX ||
	    (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0))
		return error_set(&c->err, MTLS_REASON_USAGE,
				 "OCSP responder URL: give an http:// or https:// URL of at most "
				 "2048 printable bytes");
	if ((copy = strdup(url)) == NULL)
		return error_set(&c->err, MTLS_REASON_INTERNAL, "out of memory");
	free(c->ocsp_url);
	c->ocsp_url = copy;
	return 0;
}

int mtls_config_set_ocsp_staple(struct mtls_config *c, int on)
{
	c->ocsp_staple = on != 0;
	return 0;
}

int mtls_config_set_ocsp_staple_answer(struct mtls_config *c, const uint8_t *der, size_t len)
{
	uint8_t *copy;

	if (der == NULL || len == 0 || len > 1u << 20)
		return error_set(&c->err, MTLS_REASON_USAGE,
				 "an OCSP staple must be a DER answer of 1 byte to 1 MiB");
	if ((copy = malloc(len)) == NULL)
		return error_set(&c->err, MTLS_REASON_INTERNAL, "out of memory");
	memcpy(copy, der, len);
	free(c->staple_der);
	c->staple_der = copy;
	c->staple_len = len;
	return 0;
}

int mtls_config_set_ocsp_cache(struct mtls_config *c, size_t entries)
{
	if (entries < 1 || entries > 1u << 16)
		return error_set(&c->err, MTLS_REASON_USAGE,
				 "OCSP cache size must be between 1 and 65536 entries");
	c->ocsp_cache_slots = entries;
	return 0;
}

static int strlist_add(struct mtls_config *c, struct strlist *l, const char *what, const char *s)
{
	char **v;

	if (s == NULL || s[0] == '\0')
		return error_set(&c->err, MTLS_REASON_USAGE, "allow %s: empty rule", what);
	v = realloc(l->v, (l->n + 1) * sizeof(*v));
	if (v == NULL)
		return error_set(&c->err, MTLS_REASON_INTERNAL, "out of memory");
	l->v = v;
	l->v[l->n] = strdup(s);
	if (l->v[l->n] == NULL)
		return error_set(&c->err, MTLS_REASON_INTERNAL, "out of memory");
	l->n++;
	return 0;
}

int mtls_config_allow_uri(struct mtls_config *c, const char *pattern)
{
	if (pattern != NULL && strstr(pattern, "://") == NULL)
		return error_set(&c->err, MTLS_REASON_USAGE,
				 "allow URI %s: expected scheme://authority/path, such as "
				 "spiffe://example.org/ns/prod/sa/api",
				 pattern);
	return strlist_add(c, &c->allow_uri, "URI", pattern);
}

int mtls_config_allow_dns(struct mtls_config *c, const char *pattern)
{
	return strlist_add(c, &c->allow_dns, "DNS", pattern);
}

int mtls_config_allow_cn(struct mtls_config *c, const char *cn)
{
	return strlist_add(c, &c->allow_cn, "CN", cn);
}

int mtls_config_allow_email(struct mtls_config *c, const char *pattern)
{
	const char *at = pattern != NULL ? strchr(pattern, '@') : NULL;
	char shown[200];
	bool ok;

	/* an address as the strict profile lets a certificate hold one (strict_email_ok()),
	 * else a rule no certificate could match, without '*' (which would read as a
	 * wildcard); or "*" as the whole local part and a host name */
	if (pattern != NULL && pattern[0] == '*' && at == pattern + 1)
		ok = at[1] != '*' &&
		     strict_dns_name_ok((const unsigned char *)at + 1, strlen(at + 1));
	else
		ok = pattern != NULL && strchr(pattern, '*') == NULL &&
		     strict_email_ok((const unsigned char *)pattern, strlen(pattern));
	if (!ok) {
		if (pattern != NULL)
			identity_shown((const unsigned char *)pattern, strlen(pattern), shown,
				       sizeof(shown));
		return error_set(&c->err, MTLS_REASON_USAGE,
				 "allow email %s: expected an address (name@example.org) or all "
				 "addresses of a domain (*@example.org)",
				 pattern != NULL ? shown : "(null)");
	}
	return strlist_add(c, &c->allow_email, "email", pattern);
}

static int add_pin(struct mtls_config *c, struct strlist *l, const char *what, const char *pin)
{
	uint8_t raw[32];

	if (pin == NULL || policy_parse_pin(pin, raw) != 0)
		return error_set(&c->err, MTLS_REASON_USAGE,
				 "%s pin %s: expected a SHA-256 as 64 hex digits or base64", what,
				 pin != NULL ? pin : "(null)");
	return strlist_add(c, l, what, pin);
}

int mtls_config_allow_spki_sha256(struct mtls_config *c, const char *pin)
{
	return add_pin(c, &c->allow_spki, "SPKI", pin);
}

int mtls_config_allow_cert_sha256(struct mtls_config *c, const char *pin)
{
	return add_pin(c, &c->allow_cert, "certificate", pin);
}

int mtls_config_set_allow_any_identity(struct mtls_config *c, int on)
{
	c->allow_any = on != 0;
	return 0;
}

int mtls_config_set_authz_cb(struct mtls_config *c, mtls_authz_cb cb, void *arg)
{
	c->authz_cb = cb;
	c->authz_arg = arg;
	return 0;
}

static void insecure_add(struct mtls_config *c, unsigned flag, const char *name)
{
	size_t used = strlen(c->insecure_names);

	if (c->insecure & flag)
		return;
	c->insecure |= flag;
	snprintf(c->insecure_names + used, sizeof(c->insecure_names) - used, "%s%s",
		 used > 0 ? "," : "", name);
}

int mtls_config_insecure_key_permissions(struct mtls_config *c)
{
	insecure_add(c, INSECURE_KEY_PERMISSIONS, "insecure_key_permissions");
	return 0;
}

int mtls_config_insecure_no_verify_name(struct mtls_config *c)
{
	insecure_add(c, INSECURE_NO_VERIFY_NAME, "insecure_no_verify_name");
	return 0;
}

int mtls_config_insecure_optional_client_cert(struct mtls_config *c)
{
	insecure_add(c, INSECURE_OPTIONAL_CLIENT_CERT, "insecure_optional_client_cert");
	return 0;
}

int mtls_config_insecure_server_eku_clients(struct mtls_config *c)
{
	insecure_add(c, INSECURE_SERVER_EKU_CLIENTS, "insecure_server_eku_clients");
	return 0;
}

int mtls_config_insecure_audit(struct mtls_config *c)
{
	insecure_add(c, INSECURE_AUDIT, "insecure_audit");
	return 0;
}

const char *mtls_config_insecure(const struct mtls_config *c)
{
	return c->insecure_names;
}
