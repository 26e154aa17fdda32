/*
 * --crl-url: fetch, verify, cache, wake the main loop (crlfetch.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "certfields.h"
#include "crlfetch.h"
#include "thread.h"
#include "duration.h"
#include "log.h"
#include "prefer.h"

#define VALIDATOR_MAX 256 /* ETag and Last-Modified values kept */

struct body {
	uint8_t *data;
	size_t len, cap;
	bool too_big;
};

struct crlfetch {
	char *url, *cache;
	char *cainfo; /* --ca: what an https URL's server is verified by */
	char *chain;  /* the own chain file (its intermediates may sign CRLs), or NULL */
	struct stat ca_st, chain_st; /* the two files as cas was read from them */
	long long refresh_ms;
	STACK_OF(X509) * cas; /* the CAs a CRL may be signed by */
	X509_CRL *current;    /* the last good CRL (as in the cache file), or NULL */
	char etag[VALIDATOR_MAX], last_modified[VALIDATOR_MAX];
	struct metrics *m;
	struct ev_loop *loop;
	ev_async *wakeup;
	pthread_t thread;
	bool started;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	atomic_bool stop;
	time_t failing_since, warned_at; /* 0: the last fetch worked */
	char warned[128];		 /* the reason last logged */
	/* the push channel (crlfetch_set_push()); the fetch thread's alone */
	bool push;	      /* ask for long polls */
	bool push_active;     /* the last answer was held (Preference-Applied) */
	bool push_seen;	      /* the URL has held a request at least once */
	bool probed;	      /* a probe was answered, no failure since */
	long long backoff_ms; /* before the next try after a failure, once push_seen */
	/* the cache file's owner (crlfetch_set_owner()), or -1 */
	uid_t owner_uid;
	gid_t owner_gid;
	long long grace;   /* --crl-grace, for the log line of a CRL gone stale */
	time_t stale_told; /* the nextUpdate of the stale CRL last logged, */
	int stale_phase;   /* and when: 1 within --crl-grace, 2 past it */
};

static void drain_ssl(char *err, size_t len, const char *what)
{
	unsigned long e = ERR_get_error();
	char buf[200] = "";

	if (e != 0)
		ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	snprintf(err, len, "%s%s%s", what, buf[0] != '\0' ? ": " : "", buf);
}

static STACK_OF(X509) * read_certs(const char *path, int skip)
{
	STACK_OF(X509) *sk = sk_X509_new_null();
	BIO *bio = BIO_new_file(path, "r");
	X509 *x;
	int i = 0;

	if (sk == NULL || bio == NULL) {
		BIO_free(bio);
		sk_X509_free(sk);
		ERR_clear_error();
		return NULL;
	}
	while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
		if (i++ < skip || sk_X509_push(sk, x) == 0)
			X509_free(x);
	ERR_clear_error();
	BIO_free(bio);
	return sk;
}

/* The CA certificates of the bundle, and the intermediates of the own chain that verify to
 * it: a CRL of the issuing CA of a two-level PKI is signed by the intermediate, which the
 * bundle of roots does not hold. */
static STACK_OF(X509) * load_cas(const char *ca, const char *chain, char *err, size_t len)
{
	STACK_OF(X509) *cas = read_certs(ca, 0), *inter = NULL;
	X509_STORE *store = NULL;

	if (cas == NULL || sk_X509_num(cas) == 0) {
		snprintf(err, len, "--crl-url: no certificate in --ca %s to verify a CRL by", ca);
		goto err;
	}
	if (chain == NULL || (inter = read_certs(chain, 1)) == NULL)
		return cas;
	store = X509_STORE_new();
	for (int i = 0; store != NULL && i < sk_X509_num(cas); i++)
		X509_STORE_add_cert(store, sk_X509_value(cas, i));
	for (int i = 0; store != NULL && i < sk_X509_num(inter); i++) {
		X509 *x = sk_X509_value(inter, i);
		X509_STORE_CTX *ctx = X509_STORE_CTX_new();

		if (ctx != NULL && X509_STORE_CTX_init(ctx, store, x, inter) == 1 &&
		    X509_verify_cert(ctx) == 1 && X509_up_ref(x) == 1 && sk_X509_push(cas, x) == 0)
			X509_free(x);
		X509_STORE_CTX_free(ctx);
	}
	ERR_clear_error();
	X509_STORE_free(store);
	sk_X509_pop_free(inter, X509_free);
	return cas;
err:
	sk_X509_pop_free(cas, X509_free);
	return NULL;
}

static X509_CRL *parse(const uint8_t *data, size_t len)
{
	static const char pem[] = "-----BEGIN X509 CRL-----";
	const uint8_t *p = data;
	X509_CRL *crl = NULL;
	size_t skip = 0;

	if (len == 0 || len > (size_t)CRLFETCH_MAX_BYTES)
		return NULL;
	while (skip < len && (data[skip] == ' ' || data[skip] == '\n' || data[skip] == '\r' ||
			      data[skip] == '\t'))
		skip++;
	if (len - skip >= sizeof(pem) - 1 && memcmp(data + skip, pem, sizeof(pem) - 1) == 0) {
		BIO *bio = BIO_new_mem_buf(data, (int)len);

		crl = bio != NULL ? PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL) : NULL;
		BIO_free(bio);
		return crl;
	}
	crl = d2i_X509_CRL(NULL, &p, (long)len);
	if (crl != NULL && p != data + len) { /* trailing bytes: not one DER CRL */
		X509_CRL_free(crl);
		crl = NULL;
	}
	return crl;
}

X509_CRL *crlfetch_verify(const uint8_t *data, size_t len, STACK_OF(X509) * cas,
			  const X509_CRL *current, time_t now, char *err, size_t err_len)
{
	X509_CRL *crl = parse(data, len);
	ASN1_INTEGER *num = NULL, *cur = NULL;
	const ASN1_TIME *nu;
	time_t tu;
	bool signed_ok = false;

	if (crl == NULL) {
		drain_ssl(err, err_len, "not a CRL (DER or PEM)");
		return NULL;
	}
	for (int i = 0; i < sk_X509_num(cas) && !signed_ok; i++) {
		X509 *ca = sk_X509_value(cas, i);
		EVP_PKEY *key = X509_get0_pubkey(ca);

		signed_ok =
			X509_NAME_cmp(X509_get_subject_name(ca), X509_CRL_get_issuer(crl)) == 0 &&
			key != NULL && X509_CRL_verify(crl, key) == 1;
	}
	ERR_clear_error();
	if (!signed_ok) {
		snprintf(err, err_len, "not signed by a CA of --ca or of the own chain");
		goto err;
	}
	nu = X509_CRL_get0_nextUpdate(crl);
	tu = certfields_time(X509_CRL_get0_lastUpdate(crl));
	if (nu == NULL || certfields_time(nu) <= tu) {
		snprintf(err, err_len, "no nextUpdate after its thisUpdate");
		goto err;
	}
	if (tu > now + CRLFETCH_SKEW) {
		snprintf(err, err_len, "thisUpdate %lld s in the future", (long long)(tu - now));
		goto err;
	}
	num = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
	cur = current != NULL ? X509_CRL_get_ext_d2i(current, NID_crl_number, NULL, NULL) : NULL;
	if (cur != NULL && (num == NULL || ASN1_INTEGER_cmp(num, cur) < 0)) {
		snprintf(err, err_len, "crlNumber %s than the one in use (%ld): an older CRL",
			 num == NULL ? "missing, lower" : "lower", ASN1_INTEGER_get(cur));
		goto err;
	}
	ASN1_INTEGER_free(num);
	ASN1_INTEGER_free(cur);
	return crl;
err:
	ERR_clear_error();
	ASN1_INTEGER_free(num);
	ASN1_INTEGER_free(cur);
	X509_CRL_free(crl);
	return NULL;
}

bool crlfetch_cdp_url(X509 *x, char *out, size_t len)
{
	CRL_DIST_POINTS *dps = X509_get_ext_d2i(x, NID_crl_distribution_points, NULL, NULL);
	bool found = false;

	for (int i = 0; !found && i < sk_DIST_POINT_num(dps); i++) {
		DIST_POINT *dp = sk_DIST_POINT_value(dps, i);
		GENERAL_NAMES *names;

		if (dp->distpoint == NULL || dp->distpoint->type != 0)
			continue;
		names = dp->distpoint->name.fullname;
		for (int j = 0; !found && j < sk_GENERAL_NAME_num(names); j++) {
			GENERAL_NAME *g = sk_GENERAL_NAME_value(names, j);
			const unsigned char *d;
			int n;
			bool printable = true;

			if (g->type != GEN_URI)
				continue;
			d = ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
			n = ASN1_STRING_length(g->d.uniformResourceIdentifier);
			for (int k = 0; k < n; k++)
				printable = printable && d[k] > 0x20 && d[k] < 0x7f;
			if (!printable || n <= 0 || (size_t)n >= len ||
			    !((n > 7 && strncasecmp((const char *)d, "http://", 7) == 0) ||
			      (n > 8 && strncasecmp((const char *)d, "https://", 8) == 0)))
				continue;
			memcpy(out, d, (size_t)n);
			out[n] = '\0';
			found = true;
		}
	}
	CRL_DIST_POINTS_free(dps);
	ERR_clear_error();
	return found;
}

int crlfetch_auto_url(const char *chain, const char *ca, char *out, size_t len, char *err,
		      size_t err_len)
{
	STACK_OF(X509) *own = chain != NULL ? read_certs(chain, 0) : NULL;
	STACK_OF(X509) *cas = ca != NULL ? read_certs(ca, 0) : NULL;
	bool found = own != NULL && sk_X509_num(own) > 0 &&
		     crlfetch_cdp_url(sk_X509_value(own, 0), out, len);

	for (int i = 0; !found && cas != NULL && i < sk_X509_num(cas); i++)
		found = crlfetch_cdp_url(sk_X509_value(cas, i), out, len);
	sk_X509_pop_free(own, X509_free);
	sk_X509_pop_free(cas, X509_free);
	if (!found)
		snprintf(err, err_len,
			 "--crl-url auto: neither the own certificate (%s) nor a --ca certificate "
			 "(%s) carries an http(s) CRL distribution point; give the CRL's URL "
			 "(e.g. http://CA-HOST:8080/crl of mtls ca serve), or issue certificates "
			 "with one (mtls ca init --crl-url)",
			 chain != NULL ? chain : "none", ca != NULL ? ca : "none");
	return found ? 0 : -1;
}

static X509_CRL *read_cache(const char *path)
{
	BIO *bio = BIO_new_file(path, "r");
	X509_CRL *crl = bio != NULL ? PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL) : NULL;

	BIO_free(bio);
	ERR_clear_error();
	return crl;
}

/* The CRL as PEM into path, atomically: a temporary file beside it, synced, renamed over it,
 * the directory synced. Nothing half-written is ever read by a reload. */
static int write_cache(const char *path, X509_CRL *crl, uid_t uid, gid_t gid, char *err, size_t len)
{
	char tmp[4096], dirbuf[4096];
	BIO *mem = BIO_new(BIO_s_mem());
	char *pem;
	long n;
	int fd = -1, rc = -1;

	if (mem == NULL || PEM_write_bio_X509_CRL(mem, crl) != 1 ||
	    (n = BIO_get_mem_data(mem, &pem)) <= 0) {
		drain_ssl(err, len, "cannot encode the CRL");
		goto out;
	}
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= sizeof(tmp)) {
		snprintf(err, len, "--crl-cache %s: path too long", path);
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0 || write(fd, pem, (size_t)n) != (ssize_t)n || fsync(fd) != 0) {
		snprintf(err, len, "cannot write %s: %s; make its directory writable", tmp,
			 strerror(errno));
		goto out;
	}
	/* written by root before --user's drop: the user's file, so that the daemon can replace
	 * it later (in a sticky directory only a file's owner may) */
	if (uid != (uid_t)-1 && geteuid() == 0 && fchown(fd, uid, gid) != 0) {
		snprintf(err, len, "cannot give %s to --user: %s", tmp, strerror(errno));
		goto out;
	}
	close(fd);
	fd = -1;
	if (rename(tmp, path) != 0) {
		snprintf(err, len, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
		goto out;
	}
	snprintf(dirbuf, sizeof(dirbuf), "%s", path);
	if ((fd = open(dirname(dirbuf), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0)
		fsync(fd);
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	if (rc != 0)
		unlink(tmp);
	BIO_free(mem);
	return rc;
}

struct crlfetch *crlfetch_new(const char *url, const char *ca, const char *chain, const char *cache,
			      long long refresh_ms, struct metrics *m, char *err, size_t len)
{
	struct crlfetch *f = calloc(1, sizeof(*f));

	if (f == NULL) {
		snprintf(err, len, "out of memory");
		return NULL;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT); /* here, before any thread */
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->cond, NULL);
	f->url = strdup(url);
	f->cache = strdup(cache);
	f->cainfo = strdup(ca);
	f->chain = chain != NULL ? strdup(chain) : NULL;
	f->refresh_ms = refresh_ms;
	f->m = m;
	f->owner_uid = (uid_t)-1;
	f->owner_gid = (gid_t)-1;
	f->backoff_ms = CRLFETCH_RETRY_MIN_MS;
	if (f->url == NULL || f->cache == NULL || f->cainfo == NULL) {
		snprintf(err, len, "out of memory");
		goto err;
	}
	if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
		snprintf(err, len, "--crl-url %s: give an http:// or https:// URL", url);
		goto err;
	}
	if ((chain != NULL && f->chain == NULL) || (f->cas = load_cas(ca, chain, err, len)) == NULL)
		goto err;
	(void)stat(ca, &f->ca_st);
	if (chain != NULL)
		(void)stat(chain, &f->chain_st);
	f->current = read_cache(cache);
	return f;
err:
	crlfetch_free(f);
	return NULL;
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	struct body *b = arg;
	size_t len = size * n;

	if (len > (size_t)CRLFETCH_MAX_BYTES - b->len) {
		b->too_big = true;
		return 0;
	}
	if (b->len + len > b->cap) {
		size_t cap = b->cap == 0 ? 16384 : b->cap;
		uint8_t *d;

		while (cap < b->len + len)
			cap *= 2;
		if ((d = realloc(b->data, cap)) == NULL)
			return 0;
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, len);
	b->len += len;
	return len;
}

struct validators {
	char etag[VALIDATOR_MAX], last_modified[VALIDATOR_MAX];
	long applied; /* Preference-Applied: wait=N, or -1 */
};

/* A response header: ETag and Last-Modified kept if short and printable (they are sent
 * back as request headers). */
static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
	struct validators *v = arg;
	size_t len = size * n, klen;
	char *out;

	if (len > 19 && strncasecmp(p, "preference-applied:", 19) == 0) {
		char value[VALIDATOR_MAX];

		klen = len - 19 < sizeof(value) ? len - 19 : sizeof(value) - 1;
		memcpy(value, p + 19, klen);
		value[klen] = '\0';
		value[strcspn(value, "\r\n")] = '\0';
		v->applied = prefer_wait(value);
		return len;
	}
	if (len > 5 && strncasecmp(p, "etag:", 5) == 0) {
		klen = 5;
		out = v->etag;
	} else if (len > 14 && strncasecmp(p, "last-modified:", 14) == 0) {
		klen = 14;
		out = v->last_modified;
	} else {
		return len;
	}
	while (klen < len && p[klen] == ' ')
		klen++;
	while (len > klen && (p[len - 1] == '\r' || p[len - 1] == '\n' || p[len - 1] == ' '))
		len--;
	if (len - klen == 0 || len - klen >= VALIDATOR_MAX)
		return size * n;
	for (size_t i = klen; i < len; i++)
		if (p[i] < 0x20 || p[i] > 0x7e)
			return size * n;
	memcpy(out, p + klen, len - klen);
	out[len - klen] = '\0';
	return size * n;
}

static int on_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
	struct crlfetch *f = arg;

	(void)a, (void)b, (void)c, (void)d;
	return atomic_load(&f->stop) ? 1 : 0;
}

enum result { FETCH_OK, FETCH_NOT_MODIFIED, FETCH_ERROR };

/* The seconds a long poll asks the server to hold it: the refresh interval, at most
 * CRLFETCH_PUSH_WAIT_S (a request is never held longer than a poll would wait). */
static long push_wait(const struct crlfetch *f)
{
	long long s = f->refresh_ms / 1000;

	return s < 1 ? 1 : s > CRLFETCH_PUSH_WAIT_S ? CRLFETCH_PUSH_WAIT_S : (long)s;
}

/* How a request is made: a plain conditional GET; a probe, asking for long polls without
 * the validators that let a server hold it (answered at once: Preference-Applied tells whether
 * the server can); a long poll, conditional and asking to be held. */
enum mode { MODE_PLAIN, MODE_PROBE, MODE_HOLD };

static bool same_file(const char *path, const struct stat *was, struct stat *now)
{
	if (stat(path, now) != 0)
		return true; /* gone for a moment (being replaced): keep what was read */
	return now->st_ino == was->st_ino && now->st_size == was->st_size &&
	       now->st_mtim.tv_sec == was->st_mtim.tv_sec &&
	       now->st_mtim.tv_nsec == was->st_mtim.tv_nsec;
}

/* The CAs a CRL may be signed by, read again if --ca or the own chain changed since (a
 * renewal, a root rollover: the CA's next CRL may be signed by a key that was not there at
 * start). A file that cannot be read now keeps the CAs read before. */
static void refresh_cas(struct crlfetch *f)
{
	struct stat ca_now = f->ca_st, chain_now = f->chain_st;
	STACK_OF(X509) * cas;
	char err[256];

	if (same_file(f->cainfo, &f->ca_st, &ca_now) &&
	    (f->chain == NULL || same_file(f->chain, &f->chain_st, &chain_now)))
		return;
	if ((cas = load_cas(f->cainfo, f->chain, err, sizeof(err))) == NULL)
		return;
	sk_X509_pop_free(f->cas, X509_free);
	f->cas = cas;
	f->ca_st = ca_now;
	f->chain_st = chain_now;
}

/* One fetch: FETCH_OK with a new CRL in the cache (*changed) or the same one again; *applied
 * tells whether the server granted the long poll asked for. */
static enum result fetch(struct crlfetch *f, enum mode mode, bool *changed, bool *applied,
			 char *err, size_t len)
{
	CURL *c = curl_easy_init();
	struct curl_slist *hdr = NULL;
	struct body b = {0};
	struct validators v;
	char ebuf[CURL_ERROR_SIZE] = "", line[VALIDATOR_MAX + 32];
	enum result r = FETCH_ERROR;
	X509_CRL *crl = NULL;
	long status = 0;
	CURLcode cc;

	*changed = false;
	*applied = false;
	memset(&v, 0, sizeof(v));
	v.applied = -1;
	refresh_cas(f);
	if (c == NULL) {
		snprintf(err, len, "out of memory");
		return FETCH_ERROR;
	}
	if (f->current != NULL && f->etag[0] != '\0' && mode != MODE_PROBE) {
		snprintf(line, sizeof(line), "If-None-Match: %s", f->etag);
		hdr = curl_slist_append(hdr, line);
	}
	if (f->current != NULL && f->last_modified[0] != '\0' && mode != MODE_PROBE) {
		snprintf(line, sizeof(line), "If-Modified-Since: %s", f->last_modified);
		hdr = curl_slist_append(hdr, line);
	}
	/* a server that can hold it does so while the CRL is the one named by If-None-Match,
	 * and says so with Preference-Applied even when it answers at once */
	if (mode != MODE_PLAIN) {
		snprintf(line, sizeof(line), "Prefer: wait=%ld", push_wait(f));
		hdr = curl_slist_append(hdr, line);
	}
	curl_easy_setopt(c, CURLOPT_URL, f->url);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	/* an https URL's server is the CA's (its API serves /crl too): verified by --ca, not by
	 * the system's store, which does not hold a private CA */
	curl_easy_setopt(c, CURLOPT_CAINFO, f->cainfo);
	curl_easy_setopt(c, CURLOPT_CAPATH, NULL);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)CRLFETCH_CONNECT_S);
	curl_easy_setopt(c, CURLOPT_TIMEOUT,
			 (long)CRLFETCH_TIMEOUT_S + (mode == MODE_HOLD ? push_wait(f) : 0));
	curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)CRLFETCH_MAX_BYTES);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &v);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, f);
	if (hdr != NULL)
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
	cc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (cc != CURLE_OK) {
		snprintf(err, len, "%s",
			 b.too_big || cc == CURLE_FILESIZE_EXCEEDED ? "larger than 16 MiB"
			 : ebuf[0] != '\0'			    ? ebuf
								    : curl_easy_strerror(cc));
	} else if (status == 304 && f->current != NULL) {
		r = FETCH_NOT_MODIFIED;
	} else if (status != 200) {
		snprintf(err, len, "HTTP status %ld", status);
	} else if ((crl = crlfetch_verify(b.data, b.len, f->cas, f->current, time(NULL), err,
					  len)) == NULL) {
		/* err says why */
	} else if (f->current != NULL && X509_CRL_cmp(crl, f->current) == 0 &&
		   X509_CRL_match(crl, f->current) == 0) {
		r = FETCH_OK; /* the same CRL again (a server without validators) */
	} else if (write_cache(f->cache, crl, f->owner_uid, f->owner_gid, err, len) == 0) {
		X509_CRL_free(f->current);
		f->current = crl;
		crl = NULL;
		*changed = true;
		r = FETCH_OK;
	}
	if (r != FETCH_ERROR && status == 200) {
		memcpy(f->etag, v.etag, sizeof(f->etag));
		memcpy(f->last_modified, v.last_modified, sizeof(f->last_modified));
	}
	*applied = r != FETCH_ERROR && v.applied > 0;
	X509_CRL_free(crl);
	free(b.data);
	curl_slist_free_all(hdr);
	curl_easy_cleanup(c);
	return r;
}

/* a and b alike but for their digits (a connect error's "after 3 ms") */
static bool same_reason(const char *a, const char *b)
{
	for (;; a++, b++) {
		while (*a >= '0' && *a <= '9')
			a++;
		while (*b >= '0' && *b <= '9')
			b++;
		if (*a != *b)
			return false;
		if (*a == '\0')
			return true;
	}
}

/* Counted; a failure logged at the start of a streak, when its reason changes, and every
 * CRLFETCH_WARN_EVERY seconds while it lasts. */
static void count(struct crlfetch *f, enum result r, const char *why)
{
	char head[sizeof(f->warned)];

	time_t now = time(NULL);

	if (f->m != NULL)
		atomic_fetch_add(&f->m->crl_fetch[r], 1);
	if (r != FETCH_ERROR) {
		if (f->failing_since != 0)
			LOG(LOG_INFO, "crl_fetch_recovered", LS("url", f->url),
			    LN("failed_for_seconds", now - f->failing_since));
		f->failing_since = 0;
		return;
	}
	snprintf(head, sizeof(head), "%s", why);
	if (f->failing_since == 0)
		f->failing_since = now;
	else if (now - f->warned_at < CRLFETCH_WARN_EVERY && same_reason(head, f->warned))
		return;
	f->warned_at = now;
	memcpy(f->warned, head, sizeof(head));
	LOG(LOG_WARN, "crl_fetch_failed", LS("url", f->url), LS("reason", why),
	    LN("failing_for_seconds", now - f->failing_since),
	    LS("action", f->current != NULL ? "keeping the last good CRL (until its nextUpdate "
					      "plus --crl-grace); check the CRL server"
					    : "no CRL yet; check the CRL server"));
}

/* A failing fetch while the cached CRL is past its nextUpdate: said once per CRL within the
 * grace and once past it, with what it means for the clients (accepted with a warning until
 * the grace ends, or refused crl_expired). */
static void tell_stale(struct crlfetch *f, time_t now)
{
	const ASN1_TIME *t = f->current != NULL ? X509_CRL_get0_nextUpdate(f->current) : NULL;
	time_t nu = t != NULL ? certfields_time(t) : 0;
	char when[32], until[32];
	struct tm tm;

	int phase = now < nu + f->grace ? 1 : 2;

	if (nu == 0 || now < nu || (f->stale_told == nu && f->stale_phase >= phase))
		return;
	f->stale_told = nu;
	f->stale_phase = phase;
	gmtime_r(&nu, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (phase == 1) {
		time_t g = nu + f->grace;

		gmtime_r(&g, &tm);
		strftime(until, sizeof(until), "%Y-%m-%dT%H:%M:%SZ", &tm);
		LOG(LOG_WARN, "crl_stale", LS("url", f->url), LS("file", f->cache),
		    LS("next_update", when), LS("grace_until", until),
		    LS("message", "the CRL server is unreachable and the cached CRL is past its "
				  "nextUpdate: clients are accepted with a warning until the grace "
				  "ends, then refused (crl_expired)"),
		    LS("action", "bring the CRL server back"));
	} else {
		LOG(LOG_ERROR, "crl_stale", LS("url", f->url), LS("file", f->cache),
		    LS("next_update", when),
		    LS("message", "the CRL server is unreachable and the cached CRL is past its "
				  "nextUpdate: every client it covers is refused (crl_expired)"),
		    LS("action", "bring the CRL server back, or set --crl-grace to accept the "
				 "last CRL for a while"));
	}
}

int crlfetch_once(struct crlfetch *f, char *err, size_t len)
{
	bool changed, applied;
	enum result r = fetch(f, MODE_PLAIN, &changed, &applied, err, len);

	count(f, r, err);
	return r == FETCH_ERROR ? -1 : 0;
}

static void push_set(struct crlfetch *f, bool active)
{
	if (f->push_active == active)
		return;
	f->push_active = active;
	if (f->m != NULL)
		atomic_fetch_add(&f->m->crl_push_active, active ? 1 : -1);
}

/* After a fetch: how long until the next one. With a server that holds requests (push), at
 * once; but a request that brought no new CRL is followed by the next only CRLFETCH_PUSH_GAP_MS
 * after it began, so that nothing spins on a server that answers at once. Without push, the
 * refresh interval. After a failure, the refresh interval too, or sooner for a URL that held
 * requests before (a CA service restarted: push resumes within the backoff). */
static long long next_delay(struct crlfetch *f, enum result r, bool changed, bool applied,
			    long long took_ms, const char *why)
{
	char every[32];

	duration_format(f->refresh_ms, every, sizeof(every));
	if (r == FETCH_ERROR) {
		long long d = f->backoff_ms < f->refresh_ms ? f->backoff_ms : f->refresh_ms;

		if (f->push_active)
			LOG(LOG_WARN, "crl_push_lost", LS("url", f->url), LS("reason", why),
			    LS("action", "polling every --crl-refresh meanwhile; the long poll is "
					 "tried again with backoff"),
			    LS("refresh", every));
		push_set(f, false);
		if (!f->push_seen)
			return f->refresh_ms;
		f->backoff_ms = f->backoff_ms * 2 < CRLFETCH_RETRY_MAX_MS ? f->backoff_ms * 2
									  : CRLFETCH_RETRY_MAX_MS;
		return d;
	}
	f->backoff_ms = CRLFETCH_RETRY_MIN_MS;
	if (!applied) {
		if (f->push_active)
			LOG(LOG_WARN, "crl_push_lost", LS("url", f->url),
			    LS("reason",
			       "the server answered without holding the request (too many "
			       "held requests there?)"),
			    LS("action", "polling every --crl-refresh meanwhile"),
			    LS("refresh", every));
		push_set(f, false);
		return f->refresh_ms;
	}
	if (!f->push_active)
		LOG(LOG_INFO, "crl_push_started", LS("url", f->url),
		    LN("wait_seconds", push_wait(f)),
		    LS("message", "a long poll is kept at the CRL server: a new CRL is fetched as "
				  "soon as it is published"));
	push_set(f, true);
	f->push_seen = true;
	if (changed || took_ms >= CRLFETCH_PUSH_GAP_MS)
		return 0;
	return CRLFETCH_PUSH_GAP_MS - took_ms;
}

static long long mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *run(void *arg)
{
	struct crlfetch *f = arg;

	while (!atomic_load(&f->stop)) {
		struct timespec until;
		char err[512] = "";
		bool changed = false, applied = false;
		long long began = mono_ms(), delay;
		/* with push, the first request (and the first after a failure) is a probe: the
		 * server's answer comes at once and says whether it holds requests */
		enum mode mode = !f->push ? MODE_PLAIN : f->probed ? MODE_HOLD : MODE_PROBE;
		enum result r = fetch(f, mode, &changed, &applied, err, sizeof(err));

		if (atomic_load(&f->stop))
			break;
		count(f, r, err);
		f->probed = r != FETCH_ERROR;
		if (r == FETCH_ERROR)
			tell_stale(f, time(NULL));
		if (changed) {
			LOG(LOG_INFO, "crl_fetched", LS("url", f->url), LS("file", f->cache),
			    LS("via", mode == MODE_HOLD && applied ? "push" : "poll"));
			ev_async_send(f->loop, f->wakeup);
		}
		delay = next_delay(f, r, changed, applied, mono_ms() - began, err);
		if (delay <= 0)
			continue;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += delay / 1000;
		until.tv_nsec += (delay % 1000) * 1000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
		pthread_mutex_lock(&f->mu);
		while (!atomic_load(&f->stop) &&
		       pthread_cond_timedwait(&f->cond, &f->mu, &until) != ETIMEDOUT)
			;
		pthread_mutex_unlock(&f->mu);
	}
	return NULL;
}

void crlfetch_set_push(struct crlfetch *f, bool on)
{
	f->push = on;
}

void crlfetch_set_owner(struct crlfetch *f, uid_t uid, gid_t gid)
{
	f->owner_uid = uid;
	f->owner_gid = gid;
}

void crlfetch_set_grace(struct crlfetch *f, long long seconds)
{
	f->grace = seconds;
}

int crlfetch_start(struct crlfetch *f, struct ev_loop *loop, ev_async *wakeup)
{
	f->loop = loop;
	f->wakeup = wakeup;
	if (thread_start(&f->thread, run, f) != 0)
		return -1;
	f->started = true;
	return 0;
}

void crlfetch_free(struct crlfetch *f)
{
	if (f == NULL)
		return;
	if (f->started) {
		pthread_mutex_lock(&f->mu);
		atomic_store(&f->stop, true);
		pthread_cond_signal(&f->cond);
		pthread_mutex_unlock(&f->mu);
		pthread_join(f->thread, NULL);
	}
	pthread_mutex_destroy(&f->mu);
	pthread_cond_destroy(&f->cond);
	sk_X509_pop_free(f->cas, X509_free);
	X509_CRL_free(f->current);
	if (f->push_active && f->m != NULL)
		atomic_fetch_add(&f->m->crl_push_active, -1);
	free(f->cainfo);
	free(f->chain);
	free(f->url);
	free(f->cache);
	free(f);
}
