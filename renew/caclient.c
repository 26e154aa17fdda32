/*
 * The client side of the CA service: libcurl for HTTPS, jansson for JSON, OpenSSL for the
 * checks of what comes back. See caclient.h.
 */
#include <ctype.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "caclient.h"
#include "certfields.h"
#include "files.h"
#include "keys.h"
#include "pkcs11.h"

#define CONNECT_TIMEOUT_S 10L
#define TOTAL_TIMEOUT_S	  30L

static int fail(char *err, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
	return -1;
}

/* text (at most max bytes of it) with control bytes and non-ASCII shown as \xNN: what a
 * server says goes on one line of the terminal and nothing else. */
static void shown(const char *text, size_t max, char *out, size_t out_len)
{
	size_t o = 0;

	if (out_len == 0)
		return;
	for (size_t i = 0; text[i] != '\0' && i < max; i++) {
		unsigned char c = (unsigned char)text[i];
		char esc[5];
		size_t n;

		if (c >= 0x20 && c < 0x7f) {
			esc[0] = (char)c;
			n = 1;
		} else {
			snprintf(esc, sizeof(esc), "\\x%02x", c);
			n = 4;
		}
		if (o + n >= out_len)
			break;
		memcpy(out + o, esc, n);
		o += n;
	}
	out[o] = '\0';
}

/* OpenSSL's first queued error, for a message, and the queue emptied. */
static const char *ssl_reason(void)
{
	static char buf[256];
	unsigned long e = ERR_peek_error();

	if (e == 0)
		snprintf(buf, sizeof(buf), "unknown error");
	else
		ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	return buf;
}

int caclient_base_url(const char *base, char *out, size_t out_len, char *err, size_t err_len)
{
	char show[300];
	const char *h, *p;
	size_t len;

	shown(base, 200, show, sizeof(show));
	if (strncmp(base, "https://", 8) != 0)
		return fail(err, err_len, "the CA URL must start with https:// (got '%s')", show);
	h = base + 8;
	p = h;
	if (*p == '[') {
		p++;
		while (isxdigit((unsigned char)*p) || *p == ':' || *p == '.')
			p++;
		if (*p != ']' || p == h + 1)
			return fail(err, err_len, "the CA URL '%s' has a malformed IPv6 address",
				    show);
		p++;
	} else {
		while (isalnum((unsigned char)*p) || *p == '-' || *p == '.')
			p++;
		if (p == h)
			return fail(err, err_len, "the CA URL '%s' has no host", show);
	}
	if (*p == ':') {
		long port = 0;
		const char *d = ++p;

		while (isdigit((unsigned char)*p) && p - d < 6)
			port = port * 10 + (*p++ - '0');
		if (p == d || port < 1 || port > 65535)
			return fail(err, err_len, "the CA URL '%s' has a malformed port", show);
	}
	len = (size_t)(p - base);
	if (*p == '/')
		p++;
	if (*p != '\0')
		return fail(err, err_len,
			    "the CA URL must be https://HOST[:PORT] with nothing after it (got "
			    "'%s')",
			    show);
	if (len >= out_len)
		return fail(err, err_len, "the CA URL is too long");
	memcpy(out, base, len);
	out[len] = '\0';
	return 0;
}

/* ------------------------------------------------------------------------------------ */
/* HTTP */

struct body {
	char *p;
	size_t len;
	bool too_big;
};

static size_t on_write(char *data, size_t size, size_t n, void *ud)
{
	struct body *b = ud;
	size_t add = size * n;
	char *p;

	if (add > CACLIENT_MAX_BODY - b->len) {
		b->too_big = true;
		return 0;
	}
	p = realloc(b->p, b->len + add + 1);
	if (p == NULL)
		return 0;
	memcpy(p + b->len, data, add);
	b->len += add;
	p[b->len] = '\0';
	b->p = p;
	return add;
}

static int on_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
	const atomic_bool *stop = arg;

	(void)a, (void)b, (void)c, (void)d;
	return atomic_load(stop) ? 1 : 0;
}

void caclient_init(void)
{
	static atomic_bool done;

	if (!atomic_exchange(&done, true)) {
		curl_global_init(CURL_GLOBAL_DEFAULT);
		atexit(curl_global_cleanup);
	}
}

/* One request to url: a GET, or a POST of body (JSON). tls NULL: the server is not
 * verified (only for the roots a pin then checks). The status and the answer's bytes (a
 * NUL-terminated buffer, maybe empty) on 0; -1 with the message if there is no answer. */
static int request(const char *url, const char *base, const struct caclient_tls *tls,
		   const char *post, long *status, struct body *b, char *err, size_t err_len)
{
	char ebuf[CURL_ERROR_SIZE] = "", why[CURL_ERROR_SIZE * 2], key_uri[4097];
	struct curl_slist *hdr = NULL;
	struct curl_blob root;
	CURL *c;
	CURLcode rc;
	int ret = -1;

	memset(b, 0, sizeof(*b));
	*status = 0;
	caclient_init();
	c = curl_easy_init();
	if (c == NULL)
		return fail(err, err_len, "cannot start an HTTP client (out of memory?)");
	if (post != NULL) {
		hdr = curl_slist_append(hdr, "Content-Type: application/json");
		hdr = hdr != NULL ? curl_slist_append(hdr, "Accept: application/json") : NULL;
		/* no 100-continue round trip: the bodies are small */
		hdr = hdr != NULL ? curl_slist_append(hdr, "Expect:") : NULL;
		if (hdr == NULL) {
			fail(err, err_len, "out of memory");
			goto out;
		}
	}
	if (curl_easy_setopt(c, CURLOPT_URL, url) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https") != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_TIMEOUT, TOTAL_TIMEOUT_S) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)CACLIENT_MAX_BODY) !=
		    CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_WRITEDATA, b) != CURLE_OK) {
		fail(err, err_len, "the HTTP client lacks a needed feature (libcurl %s)",
		     curl_version_info(CURLVERSION_NOW)->version);
		goto out;
	}
	if (tls != NULL && tls->stop != NULL &&
	    (curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L) != CURLE_OK ||
	     curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress) != CURLE_OK ||
	     curl_easy_setopt(c, CURLOPT_XFERINFODATA, (void *)(uintptr_t)tls->stop) != CURLE_OK)) {
		fail(err, err_len, "the HTTP client cannot be interrupted (libcurl %s)",
		     curl_version_info(CURLVERSION_NOW)->version);
		goto out;
	}
	if (tls == NULL) {
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
	} else {
		root.data = (void *)(uintptr_t)tls->root_pem;
		root.len = tls->root_len;
		root.flags = CURL_BLOB_COPY;
		/* the pinned root and nothing else: no system bundle, no system directory */
		if (curl_easy_setopt(c, CURLOPT_CAINFO, NULL) != CURLE_OK ||
		    curl_easy_setopt(c, CURLOPT_CAPATH, NULL) != CURLE_OK ||
		    curl_easy_setopt(c, CURLOPT_CAINFO_BLOB, &root) != CURLE_OK ||
		    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK ||
		    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK) {
			fail(err, err_len, "the HTTP client cannot pin a root (libcurl %s)",
			     curl_version_info(CURLVERSION_NOW)->version);
			goto out;
		}
		if (tls->cert_file != NULL && pkcs11_is_uri(tls->key_file)) {
			/* a key on a token, through the PKCS#11 engine the process already
			 * loaded (pkcs11_key_load(): its module, its login), by the URI without
			 * its query, which the engine's parser does not take */
			size_t n = strcspn(tls->key_file, "?");

			if (n >= sizeof(key_uri)) {
				fail(err, err_len, "PKCS#11 URI too long");
				goto out;
			}
			memcpy(key_uri, tls->key_file, n);
			key_uri[n] = '\0';
			if (curl_easy_setopt(c, CURLOPT_SSLCERT, tls->cert_file) != CURLE_OK ||
			    curl_easy_setopt(c, CURLOPT_SSLCERTTYPE, "PEM") != CURLE_OK ||
			    curl_easy_setopt(c, CURLOPT_SSLENGINE, "pkcs11") != CURLE_OK ||
			    curl_easy_setopt(c, CURLOPT_SSLKEY, key_uri) != CURLE_OK ||
			    curl_easy_setopt(c, CURLOPT_SSLKEYTYPE, "ENG") != CURLE_OK) {
				fail(err, err_len,
				     "the HTTP client cannot use the PKCS#11 engine for %s "
				     "(libcurl "
				     "%s)",
				     key_uri, curl_version_info(CURLVERSION_NOW)->version);
				goto out;
			}
		} else if (tls->cert_file != NULL &&
			   (curl_easy_setopt(c, CURLOPT_SSLCERT, tls->cert_file) != CURLE_OK ||
			    curl_easy_setopt(c, CURLOPT_SSLCERTTYPE, "PEM") != CURLE_OK ||
			    curl_easy_setopt(c, CURLOPT_SSLKEY, tls->key_file) != CURLE_OK ||
			    curl_easy_setopt(c, CURLOPT_SSLKEYTYPE, "PEM") != CURLE_OK)) {
			fail(err, err_len, "out of memory");
			goto out;
		}
	}
	if (post != NULL && (curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr) != CURLE_OK ||
			     curl_easy_setopt(c, CURLOPT_POSTFIELDS, post) != CURLE_OK ||
			     curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
					      (curl_off_t)strlen(post)) != CURLE_OK)) {
		fail(err, err_len, "out of memory");
		goto out;
	}
	rc = curl_easy_perform(c);
	shown(ebuf[0] != '\0' ? ebuf : curl_easy_strerror(rc), 300, why, sizeof(why));
	switch (rc) {
	case CURLE_OK:
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
		ret = 0;
		break;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
		fail(err, err_len, "cannot reach the CA at %s: %s; is mtls ca serve running there?",
		     base, why);
		break;
	case CURLE_OPERATION_TIMEDOUT:
		fail(err, err_len, "cannot reach the CA at %s: no answer within %ld s (%s)", base,
		     TOTAL_TIMEOUT_S, why);
		break;
	case CURLE_PEER_FAILED_VERIFICATION:
		fail(err, err_len,
		     "the server at %s is not the CA trusted here (its certificate does not lead "
		     "to the pinned root or does not name the URL's host): %s",
		     base, why);
		break;
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
		fail(err, err_len, "cannot use the client certificate %s or key %s: %s",
		     tls != NULL && tls->cert_file != NULL ? tls->cert_file : "?",
		     tls != NULL && tls->key_file != NULL ? tls->key_file : "?", why);
		break;
	case CURLE_ABORTED_BY_CALLBACK: fail(err, err_len, "stopped"); break;
	case CURLE_FILESIZE_EXCEEDED:
	case CURLE_WRITE_ERROR:
		if (rc == CURLE_FILESIZE_EXCEEDED || b->too_big)
			fail(err, err_len, "the CA at %s sent an answer larger than %d bytes", base,
			     CACLIENT_MAX_BODY);
		else
			fail(err, err_len, "request to the CA at %s failed: %s", base, why);
		break;
	default:
		/* the API refuses a revoked or expired client certificate at the handshake,
		 * once its CRL has it (before, with an HTTP answer): the same words either way */
		if (strstr(why, "alert certificate revoked") != NULL)
			fail(err, err_len,
			     "the CA refused (cert_revoked, at the TLS handshake): this "
			     "certificate "
			     "is revoked; enroll again with a new token (mtls enroll)");
		else if (strstr(why, "alert certificate expired") != NULL)
			fail(err, err_len,
			     "the CA refused (cert_expired, at the TLS handshake): this "
			     "certificate "
			     "has expired; enroll again with a new token (mtls enroll)");
		else
			fail(err, err_len, "request to the CA at %s failed: %s", base, why);
		break;
	}
out:
	curl_slist_free_all(hdr);
	curl_easy_cleanup(c);
	if (ret != 0) {
		free(b->p);
		memset(b, 0, sizeof(*b));
	}
	return ret;
}

/* The server's {"error", "message"} for a status other than 200, as one line. */
static void server_error(const char *base, long status, const struct body *b, char *err,
			 size_t err_len)
{
	json_t *j = b->p != NULL ? json_loadb(b->p, b->len, JSON_REJECT_DUPLICATES, NULL) : NULL;
	const char *code = json_string_value(json_object_get(j, "error"));
	const char *msg = json_string_value(json_object_get(j, "message"));
	char c[128], m[600];

	if (code != NULL && msg != NULL) {
		shown(code, 40, c, sizeof(c));
		shown(msg, 512, m, sizeof(m));
		fail(err, err_len, "the CA refused (%s, HTTP %ld): %s", c, status, m);
	} else {
		fail(err, err_len, "the CA at %s answered HTTP %ld without an error message", base,
		     status);
	}
	json_decref(j);
}

/* A request to base + path (a POST of body, or a GET if body is NULL) whose answer is 200. */
static int call(const char *base, const char *path, const char *body,
		const struct caclient_tls *tls, char **reply, size_t *reply_len, char *err,
		size_t err_len)
{
	char url[600];
	struct body b;
	long status;

	*reply = NULL;
	*reply_len = 0;
	if (snprintf(url, sizeof(url), "%s%s", base, path) >= (int)sizeof(url))
		return fail(err, err_len, "the CA URL is too long");
	if (request(url, base, tls, body, &status, &b, err, err_len) != 0)
		return -1;
	if (status != 200) {
		server_error(base, status, &b, err, err_len);
		free(b.p);
		return -1;
	}
	if (b.p == NULL) {
		free(b.p);
		return fail(err, err_len, "the CA at %s answered %s with nothing", base, path);
	}
	*reply = b.p;
	*reply_len = b.len;
	return 0;
}

int caclient_post(const char *base, const char *path, const char *body,
		  const struct caclient_tls *tls, char **reply, size_t *reply_len, char *err,
		  size_t err_len)
{
	return call(base, path, body, tls, reply, reply_len, err, err_len);
}

int caclient_get(const char *base, const char *path, const struct caclient_tls *tls, char **reply,
		 size_t *reply_len, char *err, size_t err_len)
{
	return call(base, path, NULL, tls, reply, reply_len, err, err_len);
}

/* ------------------------------------------------------------------------------------ */
/* Roots */

STACK_OF(X509) * caclient_certs(const char *pem, size_t len, char *err, size_t err_len)
{
	STACK_OF(X509) *sk = sk_X509_new_null();
	BIO *bio = NULL;

	if (sk == NULL)
		goto oom;
	if (len > CACLIENT_MAX_BODY) {
		fail(err, err_len, "a certificate bundle larger than %d bytes", CACLIENT_MAX_BODY);
		goto bad;
	}
	if ((bio = BIO_new_mem_buf(pem, (int)len)) == NULL)
		goto oom;
	/* every PEM block in turn (text between blocks is skipped, as PEM allows): each must
	 * be one whole certificate, so that nothing is silently left out */
	for (;;) {
		char *name = NULL, *header = NULL;
		unsigned char *data = NULL;
		const unsigned char *p;
		long n = 0;
		X509 *x = NULL;
		int ok;

		if (PEM_read_bio(bio, &name, &header, &data, &n) != 1) {
			unsigned long e = ERR_peek_last_error();

			if (ERR_GET_LIB(e) == ERR_LIB_PEM &&
			    ERR_GET_REASON(e) == PEM_R_NO_START_LINE)
				break; /* the end */
			fail(err, err_len, "block %d of the bundle is not valid PEM",
			     sk_X509_num(sk) + 1);
			goto bad;
		}
		p = data;
		ok = strcmp(name, "CERTIFICATE") == 0 && header[0] == '\0' &&
		     (x = d2i_X509(NULL, &p, n)) != NULL && p == data + n;
		OPENSSL_free(name);
		OPENSSL_free(header);
		OPENSSL_free(data);
		if (!ok) {
			X509_free(x);
			fail(err, err_len, "block %d of the bundle is not a certificate",
			     sk_X509_num(sk) + 1);
			goto bad;
		}
		if (sk_X509_num(sk) >= CACLIENT_MAX_CERTS) {
			X509_free(x);
			fail(err, err_len, "more than %d certificates in one bundle",
			     CACLIENT_MAX_CERTS);
			goto bad;
		}
		if (!sk_X509_push(sk, x)) {
			X509_free(x);
			goto oom;
		}
	}
	ERR_clear_error();
	BIO_free(bio);
	return sk;
oom:
	fail(err, err_len, "out of memory");
bad:
	ERR_clear_error();
	BIO_free(bio);
	sk_X509_pop_free(sk, X509_free);
	return NULL;
}

X509 *caclient_pick_root(const char *pem, size_t len, const unsigned char pin[32], int *count)
{
	BIO *bio = BIO_new_mem_buf(pem, len > INT_MAX ? INT_MAX : (int)len);
	X509 *found = NULL, *x;

	*count = 0;
	if (bio == NULL)
		return NULL;
	while (*count < CACLIENT_MAX_CERTS && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
		unsigned char md[32];
		unsigned int mdlen = 0;

		++*count;
		/* the pin is compared in constant time, as any secret-adjacent comparison */
		if (found == NULL && X509_digest(x, EVP_sha256(), md, &mdlen) == 1 && mdlen == 32 &&
		    CRYPTO_memcmp(md, pin, 32) == 0) {
			found = x;
			continue;
		}
		X509_free(x);
	}
	ERR_clear_error();
	BIO_free(bio);
	return found;
}

X509 *caclient_fetch_root(const char *base, const unsigned char pin[32], char *err, size_t err_len)
{
	char url[600], hex[65];
	struct body b;
	long status;
	X509 *root;
	int n = 0;

	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", pin[i]);
	if (snprintf(url, sizeof(url), "%s/roots.pem", base) >= (int)sizeof(url)) {
		fail(err, err_len, "the CA URL is too long");
		return NULL;
	}
	if (request(url, base, NULL, NULL, &status, &b, err, err_len) != 0)
		return NULL;
	if (status != 200) {
		fail(err, err_len, "the CA at %s answered HTTP %ld for /roots.pem; check the URL",
		     base, status);
		free(b.p);
		return NULL;
	}
	root = b.p != NULL ? caclient_pick_root(b.p, b.len, pin, &n) : NULL;
	free(b.p);
	if (root == NULL)
		fail(err, err_len,
		     "the CA at %s does not serve the root this token pins (fingerprint %s; it "
		     "serves %d other certificate%s); the token is for another CA or someone is in "
		     "between",
		     base, hex, n, n == 1 ? "" : "s");
	return root;
}

/* ------------------------------------------------------------------------------------ */
/* The issued answer */

void caclient_issued_free(struct caclient_issued *i)
{
	if (i == NULL)
		return;
	free(i->names);
	free(i->chain_pem);
	sk_X509_pop_free(i->chain, X509_free);
	memset(i, 0, sizeof(*i));
}

/* "2026-12-01T18:00:00Z" and nothing else. */
static int parse_time(const char *s, time_t *out)
{
	struct tm tm;
	const char *end;

	if (s == NULL || strlen(s) != 20)
		return -1;
	memset(&tm, 0, sizeof(tm));
	end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (end == NULL || *end != '\0')
		return -1;
	*out = timegm(&tm);
	return 0;
}

static int field(json_t *j, const char *name, const char **out, size_t max, char *err,
		 size_t err_len)
{
	json_t *v = json_object_get(j, name);

	*out = json_string_value(v);
	if (*out == NULL)
		return fail(err, err_len, "the CA's answer has no \"%s\" string", name);
	if (strlen(*out) != json_string_length(v) || json_string_length(v) > max)
		return fail(err, err_len, "the CA's answer has a malformed \"%s\"", name);
	return 0;
}

/* The certificates of chain as PEM, one block each, NUL-terminated (caller frees), or NULL. */
static char *chain_text(STACK_OF(X509) * chain, size_t *len)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data, *out = NULL;
	long n;

	if (bio == NULL)
		return NULL;
	for (int i = 0; i < sk_X509_num(chain); i++)
		if (PEM_write_bio_X509(bio, sk_X509_value(chain, i)) != 1)
			goto out;
	n = BIO_get_mem_data(bio, &data);
	if (n <= 0 || (out = malloc((size_t)n + 1)) == NULL)
		goto out;
	memcpy(out, data, (size_t)n);
	out[n] = '\0';
	*len = (size_t)n;
out:
	BIO_free(bio);
	return out;
}

int caclient_issued_parse(const char *text, size_t len, struct caclient_issued *out, char *err,
			  size_t err_len)
{
	json_t *j;
	const char *serial, *profile, *names, *nb, *na, *ra, *chain;
	BIO *bio = NULL;
	X509 *x;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	j = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(j)) {
		fail(err, err_len, "the CA's answer is not a JSON object");
		goto out;
	}
	if (field(j, "serial", &serial, sizeof(out->serial) - 1, err, err_len) != 0 ||
	    field(j, "profile", &profile, sizeof(out->profile) - 1, err, err_len) != 0 ||
	    field(j, "names", &names, 8192, err, err_len) != 0 ||
	    field(j, "not_before", &nb, 20, err, err_len) != 0 ||
	    field(j, "not_after", &na, 20, err, err_len) != 0 ||
	    field(j, "renew_after", &ra, 20, err, err_len) != 0 ||
	    field(j, "chain", &chain, CACLIENT_MAX_BODY, err, err_len) != 0)
		goto out;
	if (serial[0] == '\0' || strspn(serial, "0123456789ABCDEFabcdef") != strlen(serial)) {
		fail(err, err_len, "the CA's answer has a malformed \"serial\"");
		goto out;
	}
	if (parse_time(nb, &out->not_before) != 0 || parse_time(na, &out->not_after) != 0 ||
	    parse_time(ra, &out->renew_after) != 0) {
		fail(err, err_len, "the CA's answer has a malformed time");
		goto out;
	}
	snprintf(out->serial, sizeof(out->serial), "%s", serial);
	snprintf(out->profile, sizeof(out->profile), "%s", profile);
	out->names = strdup(names);
	out->chain = sk_X509_new_null();
	bio = BIO_new_mem_buf(chain, (int)strlen(chain));
	if (out->names == NULL || out->chain == NULL || bio == NULL) {
		fail(err, err_len, "out of memory");
		goto out;
	}
	while (sk_X509_num(out->chain) < CACLIENT_MAX_CERTS &&
	       (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
		if (!sk_X509_push(out->chain, x)) {
			X509_free(x);
			fail(err, err_len, "out of memory");
			goto out;
		}
	ERR_clear_error();
	if (sk_X509_num(out->chain) == 0) {
		fail(err, err_len, "the CA's answer holds no certificate in \"chain\"");
		goto out;
	}
	/* what is written to disk is what was parsed (and is then checked), re-encoded: text
	 * around the blocks, PEM headers, other blocks (a key, say) never reach the file */
	if ((out->chain_pem = chain_text(out->chain, &out->chain_len)) == NULL) {
		fail(err, err_len, "out of memory");
		goto out;
	}
	rc = 0;
out:
	BIO_free(bio);
	json_decref(j);
	if (rc != 0)
		caclient_issued_free(out);
	return rc;
}

void caclient_names(X509 *cert, char *out, size_t out_len)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	size_t o = 0;

	out[0] = '\0';
	for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		const char *type = NULL;
		char val[300] = "";

		switch (g->type) {
		case GEN_DNS:
		case GEN_URI:
		case GEN_EMAIL: {
			const ASN1_STRING *s = g->d.ia5;
			char raw[256];
			int n = ASN1_STRING_length(s) < 255 ? ASN1_STRING_length(s) : 255;

			type = g->type == GEN_DNS ? "DNS" : g->type == GEN_URI ? "URI" : "email";
			memcpy(raw, ASN1_STRING_get0_data(s), (size_t)n);
			raw[n] = '\0';
			/* an embedded NUL shows as the end: the CA never issues one */
			shown(raw, 255, val, sizeof(val));
			break;
		}
		case GEN_IPADD: {
			const unsigned char *a = ASN1_STRING_get0_data(g->d.ip);
			int n = ASN1_STRING_length(g->d.ip);

			type = "IP";
			if (n == 4)
				snprintf(val, sizeof(val), "%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
			else if (n == 16)
				for (int k = 0; k < 16; k += 2)
					snprintf(val + strlen(val), sizeof(val) - strlen(val),
						 "%s%x", k ? ":" : "",
						 (unsigned)(a[k] << 8 | a[k + 1]));
			else
				snprintf(val, sizeof(val), "?");
			break;
		}
		default: type = "other"; snprintf(val, sizeof(val), "?");
		}
		o += (size_t)snprintf(out + o, o < out_len ? out_len - o : 0, "%s%s:%s",
				      i ? ", " : "", type, val);
		if (o >= out_len)
			break;
	}
	GENERAL_NAMES_free(gens);
}

int caclient_issued_check(const struct caclient_issued *in, EVP_PKEY *key, STACK_OF(X509) * roots,
			  char *names, size_t names_len, char *err, size_t err_len)
{
	X509 *leaf = sk_X509_value(in->chain, 0);
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	STACK_OF(X509) *rest = sk_X509_dup(in->chain);
	char *serial = NULL;
	int rc = -1;

	names[0] = '\0';
	if (store == NULL || ctx == NULL || rest == NULL || leaf == NULL) {
		fail(err, err_len, "out of memory");
		goto out;
	}
	(void)sk_X509_shift(rest);
	if (EVP_PKEY_eq(X509_get0_pubkey(leaf), key) != 1) {
		fail(err, err_len,
		     "the certificate the CA returned is not for the key made here; nothing "
		     "written");
		goto out;
	}
	serial = certfields_serial_hex(leaf);
	if (serial == NULL || strcasecmp(serial, in->serial) != 0) {
		fail(err, err_len,
		     "the CA's answer says serial %s but its certificate has %s; nothing written",
		     in->serial, serial != NULL ? serial : "?");
		goto out;
	}
	for (int i = 0; i < sk_X509_num(roots); i++)
		if (X509_STORE_add_cert(store, sk_X509_value(roots, i)) != 1) {
			fail(err, err_len, "cannot verify the issued chain: %s", ssl_reason());
			goto out;
		}
	if (sk_X509_num(roots) == 0 || X509_STORE_CTX_init(ctx, store, leaf, rest) != 1) {
		fail(err, err_len, "cannot verify the issued chain: %s", ssl_reason());
		goto out;
	}
	X509_STORE_CTX_set_flags(ctx, X509_V_FLAG_X509_STRICT);
	if (X509_verify_cert(ctx) != 1) {
		fail(err, err_len,
		     "the certificate the CA returned does not verify to the trusted root%s: "
		     "%s; nothing written",
		     sk_X509_num(roots) == 1 ? "" : "s",
		     X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
		ERR_clear_error();
		goto out;
	}
	caclient_names(leaf, names, names_len);
	if (names[0] == '\0') {
		fail(err, err_len,
		     "the certificate the CA returned carries no names (subjectAltName); nothing "
		     "written");
		goto out;
	}
	rc = 0;
out:
	free(serial);
	sk_X509_free(rest);
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	return rc;
}

char *caclient_csr(EVP_PKEY *key, char *err, size_t err_len)
{
	X509_REQ *req = X509_REQ_new();
	BIO *bio = BIO_new(BIO_s_mem());
	char *out = NULL, *data;
	long n;

	if (req == NULL || bio == NULL || X509_REQ_set_version(req, 0) != 1 ||
	    X509_REQ_set_pubkey(req, key) != 1 ||
	    X509_REQ_sign(req, key, keys_sign_digest(key)) <= 0 ||
	    PEM_write_bio_X509_REQ(bio, req) != 1) {
		fail(err, err_len, "cannot make a certificate request: %s", ssl_reason());
		goto out;
	}
	n = BIO_get_mem_data(bio, &data);
	out = n > 0 ? strndup(data, (size_t)n) : NULL;
	if (out == NULL)
		fail(err, err_len, "out of memory");
out:
	BIO_free(bio);
	X509_REQ_free(req);
	return out;
}

int caclient_issue(const char *base, const char *path, json_t *request, EVP_PKEY *key,
		   const struct caclient_tls *tls, STACK_OF(X509) * roots,
		   struct caclient_issued *out, char *names, size_t names_len, char *err,
		   size_t err_len)
{
	char *csr = caclient_csr(key, err, err_len), *body = NULL, *reply = NULL;
	size_t reply_len = 0;
	int rc = -1;

	if (csr == NULL)
		return -1;
	if (json_object_set_new(request, "csr", json_string(csr)) != 0 ||
	    (body = json_dumps(request, JSON_COMPACT)) == NULL) {
		fail(err, err_len, "out of memory");
		goto out;
	}
	if (caclient_post(base, path, body, tls, &reply, &reply_len, err, err_len) == 0 &&
	    caclient_issued_parse(reply, reply_len, out, err, err_len) == 0 &&
	    caclient_issued_check(out, key, roots, names, names_len, err, err_len) == 0)
		rc = 0;
out:
	if (body != NULL) { /* an enrollment's holds the token */
		OPENSSL_cleanse(body, strlen(body));
		free(body);
	}
	free(reply);
	free(csr);
	return rc;
}

/* ------------------------------------------------------------------------------------ */
/* Revocation */

int caclient_revoke(const char *url, const char *cert_file, const char *key_file,
		    const char *ca_file, const char *serial, const char *reason, char *out,
		    size_t out_len)
{
	char base[512], *root = NULL, *body = NULL, *reply = NULL, when[32];
	size_t root_len = 0, reply_len = 0;
	json_t *req = NULL, *j = NULL;
	const char *s, *at;
	json_int_t number;
	int rc = -1;

	if (caclient_base_url(url, base, sizeof(base), out, out_len) != 0)
		return -1;
	root = files_read(ca_file, &root_len, out, out_len);
	if (root == NULL)
		return -1;
	req = reason != NULL ? json_pack("{s:s, s:s}", "serial", serial, "reason", reason)
			     : json_pack("{s:s}", "serial", serial);
	body = req != NULL ? json_dumps(req, JSON_COMPACT) : NULL;
	if (body == NULL) {
		fail(out, out_len, "cannot encode the request (is the serial text?)");
		goto done;
	}
	{
		struct caclient_tls tls = {root, root_len, cert_file, key_file, NULL};

		if (caclient_post(base, "/v1/revoke", body, &tls, &reply, &reply_len, out,
				  out_len) != 0)
			goto done;
	}
	j = json_loadb(reply, reply_len, JSON_REJECT_DUPLICATES, NULL);
	s = json_string_value(json_object_get(j, "serial"));
	at = json_string_value(json_object_get(j, "revoked_at"));
	number = json_integer_value(json_object_get(j, "crl_number"));
	if (s == NULL || at == NULL || !json_is_integer(json_object_get(j, "crl_number"))) {
		fail(out, out_len, "the CA's answer to the revocation is malformed");
		goto done;
	}
	{
		char ss[130];

		shown(s, 64, ss, sizeof(ss));
		shown(at, 24, when, sizeof(when));
		snprintf(out, out_len, "revoked serial %s at %s, CRL number %lld", ss, when,
			 (long long)number);
	}
	rc = 0;
done:
	json_decref(j);
	json_decref(req);
	free(body);
	free(reply);
	free(root);
	return rc;
}
