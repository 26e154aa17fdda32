/*
 * --ca-url: the renewal thread (renewer.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>

#include "caclient.h"
#include "certfields.h"
#include "log.h"
#include "ocspfetch.h"
#include "renewal.h"
#include "renewer.h"
#include "thread.h"

enum { WOKE_RENEWAL = 1, WOKE_ROOTS = 2 };

struct renewer {
	char *url, *cert, *key, *ca, *key_type;
	bool roots;
	long long roots_every;
	struct metrics *m;
	struct ev_loop *loop;
	ev_async *wakeup;
	pthread_t thread;
	bool started;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	atomic_bool stop;
	atomic_int woke; /* WOKE_*: what the main loop is woken for */
	/* the certificate in service (renewer_loaded), under mu */
	time_t svc_nb, svc_na;
	char svc_serial[64];
	unsigned gen;
	/* the thread's own: its copy of the above as of gen seen_gen (0: none yet) */
	unsigned seen_gen;
	time_t nb, na;
	char serial[64];
	time_t renew_at, roots_at, warn_at;
	unsigned failures;
	struct renewal_roots roots_st;
	enum renewal_roots_result roots_last; /* what was last logged of the roots */
	/* the own staple (renewer_set_staple()): the endpoint, --ocsp-url or NULL; and, under
	 * mu, the answer fetched for a renewed certificate (its serial) until it is loaded */
	struct mtls *endpoint;
	char *ocsp_url;
	uint8_t *staple;
	size_t staple_len;
	char staple_serial[64];
};

static void utc(time_t t, char out[32])
{
	struct tm tm;

	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
}

struct renewer *renewer_new(const char *url, const char *cert, const char *key, const char *ca,
			    const char *key_type, long long roots_every, struct metrics *m,
			    char *err, size_t len)
{
	struct renewer *r = calloc(1, sizeof(*r));
	char base[512];

	if (r == NULL) {
		snprintf(err, len, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cond, NULL);
	caclient_init(); /* here, before any thread */
	r->roots = roots_every > 0;
	r->roots_every = roots_every;
	r->m = m;
	r->roots_last = RENEWAL_ROOTS_SAME;
	if (caclient_base_url(url, base, sizeof(base), err, len) != 0)
		goto err;
	if (key_type != NULL && !renewal_key_type_known(key_type)) {
		snprintf(err, len,
			 "--renew-key-type %s: give one of p256, p384, ed25519, rsa3072, "
			 "rsa4096",
			 key_type);
		goto err;
	}
	r->url = strdup(base);
	r->cert = strdup(cert);
	r->key = strdup(key);
	r->ca = strdup(ca);
	r->key_type = key_type != NULL ? strdup(key_type) : NULL;
	if (r->url == NULL || r->cert == NULL || r->key == NULL || r->ca == NULL ||
	    (key_type != NULL && r->key_type == NULL)) {
		snprintf(err, len, "out of memory");
		goto err;
	}
	if (m != NULL)
		m->renewal_configured = true;
	return r;
err:
	renewer_free(r);
	return NULL;
}

int renewer_set_staple(struct renewer *r, struct mtls *endpoint, const char *ocsp_url)
{
	r->endpoint = endpoint;
	free(r->ocsp_url);
	r->ocsp_url = ocsp_url != NULL ? strdup(ocsp_url) : NULL;
	return ocsp_url != NULL && r->ocsp_url == NULL ? -1 : 0;
}

void renewer_staple_config(struct renewer *r, struct mtls_config *cfg)
{
	pthread_mutex_lock(&r->mu);
	if (r->endpoint != NULL && r->staple != NULL)
		(void)mtls_config_set_ocsp_staple_answer(cfg, r->staple, r->staple_len);
	pthread_mutex_unlock(&r->mu);
}

/* The staple fetched for the certificate of serial, if that is it, handed to the endpoint,
 * which has just taken that certificate (if the config did not carry it already:
 * renewer_staple_config()): so that it is stapled from its first handshakes
 * (the OCSP thread's own fetch only starts now). Main thread. */
static void load_staple(struct renewer *r, const char *serial)
{
	uint8_t *der = NULL;
	size_t len = 0;

	pthread_mutex_lock(&r->mu);
	if (r->staple != NULL && strcmp(serial, r->staple_serial) == 0) {
		der = r->staple;
		len = r->staple_len;
		r->staple = NULL;
	}
	pthread_mutex_unlock(&r->mu);
	if (der == NULL)
		return;
	if (mtls_endpoint_set_ocsp_staple(r->endpoint, der, len) != 0)
		LOG(LOG_WARN, "renewal_staple", LS("serial", serial), LS("result", "refused"),
		    LS("reason", mtls_error(r->endpoint)),
		    LS("action", "the OCSP thread fetches another; must-staple clients refuse the "
				 "server meanwhile"));
	free(der);
}

void renewer_loaded(struct renewer *r, time_t not_after)
{
	BIO *bio = BIO_new_file(r->cert, "r");
	X509 *x = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	char *serial = x != NULL ? certfields_serial_hex(x) : NULL;

	ERR_clear_error();
	if (x != NULL && serial != NULL && certfields_time(X509_get0_notAfter(x)) == not_after) {
		time_t nb = certfields_time(X509_get0_notBefore(x));

		if (r->endpoint != NULL)
			load_staple(r, serial);
		pthread_mutex_lock(&r->mu);
		if (r->gen == 0 || nb != r->svc_nb || not_after != r->svc_na ||
		    strcmp(serial, r->svc_serial) != 0) {
			r->svc_nb = nb;
			r->svc_na = not_after;
			snprintf(r->svc_serial, sizeof(r->svc_serial), "%s", serial);
			r->gen++;
			pthread_cond_signal(&r->cond);
		}
		pthread_mutex_unlock(&r->mu);
	}
	free(serial);
	X509_free(x);
	BIO_free(bio);
}

/* Called at start before the credentials are read: a renewal that a crash cut short (the
 * chain replaced, the key not yet) is finished or taken back first (renewal_recover()), so
 * that the daemon starts on a matching pair. With the key named too: a crash after the
 * journal went leaves the old key's second name (key.pem.old-...) beside it, which only a
 * recovery given the key's path removes. */
int renewer_check(const char *cert, const char *key, char *err, size_t len)
{
	const struct renewal_files f = {cert, key, NULL};
	BIO *bio;
	X509 *x;
	int rc = 0;

	if (renewal_recover(&f, err, len) != 0 || renewal_files_apart(&f, err, len) != 0)
		return -1;
	bio = BIO_new_file(cert, "r");
	x = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	ERR_clear_error();
	if (x != NULL && !renewal_leaf_can_renew(x)) {
		snprintf(err, len, "--ca-url cannot renew %s: %s", cert, RENEWAL_NO_CLIENT_AUTH);
		rc = -1;
	}
	X509_free(x);
	BIO_free(bio);
	return rc; /* unreadable: the credentials' check says why */
}

/* Woken at t, or earlier by renewer_loaded() or a stop. */
static void sleep_until(struct renewer *r, time_t t)
{
	struct timespec until = {.tv_sec = t, .tv_nsec = 0};

	pthread_mutex_lock(&r->mu);
	while (!atomic_load(&r->stop) && r->gen == r->seen_gen &&
	       pthread_cond_timedwait(&r->cond, &r->mu, &until) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&r->mu);
}

static void wake_main(struct renewer *r, int why)
{
	atomic_fetch_or(&r->woke, why);
	ev_async_send(r->loop, r->wakeup);
}

const char *renewer_trigger(struct renewer *r)
{
	int woke = atomic_exchange(&r->woke, 0);

	return (woke & WOKE_RENEWAL) || woke == 0 ? "renewal" : "roots_refresh";
}

static void refresh_roots(struct renewer *r, time_t now)
{
	struct renewal_files f = {r->cert, r->key, r->ca};
	char msg[1024];
	enum renewal_roots_result res =
		renewal_refresh_roots(r->url, &f, &r->roots_st, &r->stop, msg, sizeof(msg));

	if (atomic_load(&r->stop))
		return;
	r->roots_at = now + (time_t)r->roots_every;
	if (r->m != NULL)
		atomic_fetch_add(&r->m->roots_refresh[res + 1], 1);
	/* once per set of roots the CA serves and this host does not take (renewal.h) */
	if (r->roots_st.note[0] != '\0') {
		LOG(LOG_WARN, "roots_left_out", LS("file", r->ca), LS("url", r->url),
		    LS("message", r->roots_st.note));
		r->roots_st.note[0] = '\0';
	}
	switch (res) {
	case RENEWAL_ROOTS_REPLACED:
		LOG(LOG_INFO, "roots_refreshed", LS("file", r->ca), LS("url", r->url),
		    LS("message", msg));
		wake_main(r, WOKE_ROOTS);
		break;
	case RENEWAL_ROOTS_SAME:
		if (r->roots_last != RENEWAL_ROOTS_SAME)
			LOG(LOG_INFO, "roots_refreshed", LS("file", r->ca), LS("url", r->url),
			    LS("message", msg));
		break;
	case RENEWAL_ROOTS_LEFT_ALONE:
		/* once, not every hour: the operator's file is the operator's */
		if (r->roots_last != RENEWAL_ROOTS_LEFT_ALONE)
			LOG(LOG_WARN, "roots_left_alone", LS("file", r->ca), LS("url", r->url),
			    LS("message", msg));
		break;
	default:
		LOG(LOG_WARN, "roots_refresh_failed", LS("file", r->ca), LS("url", r->url),
		    LS("reason", msg),
		    LS("action", "the current roots stay; retried at the next renewal or within "
				 "an hour"));
		break;
	}
	r->roots_last = res;
}

/* Wait until t (or a stop). */
static void pause_until(struct renewer *r, time_t t)
{
	struct timespec until = {.tv_sec = t, .tv_nsec = 0};

	pthread_mutex_lock(&r->mu);
	while (!atomic_load(&r->stop) &&
	       pthread_cond_timedwait(&r->cond, &r->mu, &until) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&r->mu);
}

/* The DER OCSP request about leaf (issued by issuer), malloc'd, or NULL. */
static uint8_t *ocsp_request(X509 *leaf, X509 *issuer, size_t *len)
{
	OCSP_REQUEST *req = OCSP_REQUEST_new();
	OCSP_CERTID *id = OCSP_cert_to_id(NULL, leaf, issuer);
	unsigned char *der = NULL;
	uint8_t *out = NULL;
	int n = -1;

	if (req != NULL && id != NULL && OCSP_request_add0_id(req, id) != NULL) {
		id = NULL; /* the request's now */
		n = i2d_OCSP_REQUEST(req, &der);
	}
	if (n > 0 && (out = malloc((size_t)n)) != NULL) {
		memcpy(out, der, (size_t)n);
		*len = (size_t)n;
	}
	OPENSSL_free(der);
	OCSP_CERTID_free(id);
	OCSP_REQUEST_free(req);
	return out;
}

/* Is der an OCSP response with status successful? (The endpoint checks it all.) */
static bool successful(const uint8_t *der, size_t len)
{
	const unsigned char *p = der;
	OCSP_RESPONSE *resp = d2i_OCSP_RESPONSE(NULL, &p, (long)len);
	bool ok = resp != NULL && OCSP_response_status(resp) == OCSP_RESPONSE_STATUS_SUCCESSFUL;

	OCSP_RESPONSE_free(resp);
	ERR_clear_error();
	return ok;
}

/* A server that staples: the renewed certificate's OCSP answer, fetched before the main
 * loop is woken to swap the certificate in, so that the server never serves it without a
 * staple (a must-staple certificate without one is refused by its clients). Tried every
 * second for at most RENEWER_STAPLE_WAIT seconds; past that the certificate is swapped in
 * anyway (it is valid; the OCSP thread keeps trying), and that is logged. */
static void prefetch_staple(struct renewer *r)
{
	BIO *bio = BIO_new_file(r->cert, "r");
	X509 *leaf = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	X509 *issuer = leaf != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	STACK_OF(OPENSSL_STRING) *aia = leaf != NULL ? X509_get1_ocsp(leaf) : NULL;
	const char *url = r->ocsp_url != NULL ? r->ocsp_url : sk_OPENSSL_STRING_value(aia, 0);
	char *serial = leaf != NULL ? certfields_serial_hex(leaf) : NULL;
	time_t tu, nu, until = time(NULL) + RENEWER_STAPLE_WAIT;
	char why[512] = "the responder did not answer";
	uint8_t *req = NULL, *der = NULL;
	size_t req_len = 0, len = 0;

	ERR_clear_error();
	/* not stapling, or nothing to ask: the OCSP thread says why after the reload */
	if (mtls_endpoint_ocsp_staple_times(r->endpoint, &tu, &nu) < 0 || leaf == NULL ||
	    issuer == NULL || url == NULL || serial == NULL ||
	    (req = ocsp_request(leaf, issuer, &req_len)) == NULL)
		goto out;
	for (;;) {
		der = ocspfetch_once(url, req, req_len, &r->stop, &len, why, sizeof(why));
		if (der != NULL && successful(der, len))
			break;
		if (der != NULL)
			snprintf(why, sizeof(why), "the responder's answer is not successful");
		free(der);
		der = NULL;
		if (atomic_load(&r->stop) || time(NULL) >= until)
			break;
		pause_until(r, time(NULL) + 1);
	}
	if (der == NULL) {
		if (!atomic_load(&r->stop))
			LOG(LOG_WARN, "renewal_staple", LS("serial", serial), LS("url", url),
			    LS("result", "missing"), LS("reason", why),
			    LS("action",
			       "the new certificate is loaded without a staple; the OCSP "
			       "thread keeps trying (must-staple clients refuse the server "
			       "meanwhile)"));
		goto out;
	}
	LOG(LOG_INFO, "renewal_staple", LS("serial", serial), LS("url", url),
	    LS("result", "fetched"));
	pthread_mutex_lock(&r->mu);
	free(r->staple);
	r->staple = der;
	r->staple_len = len;
	snprintf(r->staple_serial, sizeof(r->staple_serial), "%s", serial);
	pthread_mutex_unlock(&r->mu);
out:
	free(req);
	free(serial);
	X509_email_free(aia);
	X509_free(issuer);
	X509_free(leaf);
	BIO_free(bio);
}

static void renew(struct renewer *r, time_t now)
{
	struct renewal_files f = {r->cert, r->key, r->ca};
	struct renewal_result res;
	char err[2048], when[32], next[32];
	int rc = renewal_renew(r->url, &f, r->key_type, false, &r->stop, &res, err, sizeof(err));

	if (atomic_load(&r->stop))
		return;
	if (rc == 0) {
		r->failures = 0;
		atomic_fetch_add(&r->m->renewals[0], 1);
		atomic_store(&r->m->renewal_failures, 0);
		utc(res.not_after, when);
		LOG(LOG_INFO, "renewal_ok", LS("old_serial", res.old_serial),
		    LS("serial", res.serial), LS("not_after", when), LS("names", res.names),
		    LS("key_type", res.key_type), LS("file", r->cert));
		/* from the new certificate until the reload says what is in service */
		r->renew_at =
			renewal_schedule(res.not_before, res.not_after, now, renewal_random());
		r->roots_at = now; /* and the roots with it */
		if (r->endpoint != NULL)
			prefetch_staple(r);
		wake_main(r, WOKE_RENEWAL);
		return;
	}
	r->failures++;
	atomic_fetch_add(&r->m->renewals[1], 1);
	atomic_store(&r->m->renewal_failures, (long long)r->failures);
	r->renew_at = renewal_backoff(r->failures, r->na, now, renewal_random());
	utc(r->renew_at, next);
	utc(r->na, when);
	LOG(LOG_WARN, "renewal_failed", LS("reason", err), LS("serial", r->serial),
	    LN("failures", r->failures), LS("next_attempt", next), LS("not_after", when),
	    LN("seconds_left", (long long)(r->na - now)),
	    LS("action", "the current certificate stays in service; retrying"));
}

/* cert_expiring: from renewal_warn_at() on, at most every RENEWER_WARN_EVERY seconds (a
 * twelfth of the life if that is less, at least a second). */
static void warn_expiring(struct renewer *r, time_t now)
{
	long long life = (long long)(r->na - r->nb), every = life / 12;
	char when[32], msg[400];

	if (now < renewal_warn_at(r->nb, r->na) || now < r->warn_at)
		return;
	every = every > RENEWER_WARN_EVERY ? RENEWER_WARN_EVERY : every < 1 ? 1 : every;
	r->warn_at = now + (time_t)every;
	utc(r->na, when);
	snprintf(msg, sizeof(msg),
		 "the own certificate %s (serial %s) %s at %s and has not been renewed (%u failed "
		 "attempt%s); check the CA at %s and the renewal_failed lines",
		 r->cert, r->serial, now >= r->na ? "expired" : "expires", when, r->failures,
		 r->failures == 1 ? "" : "s", r->url);
	LOG(LOG_ERROR, "cert_expiring", LS("serial", r->serial), LS("not_after", when),
	    LN("seconds_left", (long long)(r->na - now)), LS("message", msg));
}

static void *run(void *arg)
{
	struct renewer *r = arg;

	while (!atomic_load(&r->stop)) {
		time_t now = time(NULL), wake;

		pthread_mutex_lock(&r->mu);
		if (r->gen != r->seen_gen) {
			char at[32], na[32];

			r->seen_gen = r->gen;
			r->nb = r->svc_nb;
			r->na = r->svc_na;
			memcpy(r->serial, r->svc_serial, sizeof(r->serial));
			r->failures = 0;
			r->warn_at = 0;
			r->renew_at = renewal_schedule(r->nb, r->na, now, renewal_random());
			atomic_store(&r->m->renewal_failures, 0);
			utc(r->renew_at, at);
			utc(r->na, na);
			LOG(LOG_INFO, "renewal_scheduled", LS("serial", r->serial),
			    LS("not_after", na), LS("renew_at", at), LS("url", r->url));
		}
		pthread_mutex_unlock(&r->mu);
		if (r->seen_gen == 0) { /* nothing in service known yet: wait to be told */
			sleep_until(r, now + 3600);
			continue;
		}
		if (r->roots && now >= r->roots_at)
			refresh_roots(r, now);
		if (!atomic_load(&r->stop) && time(NULL) >= r->renew_at)
			renew(r, time(NULL));
		if (r->roots && r->roots_at <= time(NULL) && !atomic_load(&r->stop))
			refresh_roots(r, time(NULL)); /* after a renewal */
		now = time(NULL);
		warn_expiring(r, now);
		atomic_store(&r->m->renew_at, (long long)r->renew_at);
		wake = r->renew_at;
		if (r->roots && r->roots_at < wake)
			wake = r->roots_at;
		if (r->warn_at > now && r->warn_at < wake)
			wake = r->warn_at;
		else if (renewal_warn_at(r->nb, r->na) > now &&
			 renewal_warn_at(r->nb, r->na) < wake)
			wake = renewal_warn_at(r->nb, r->na);
		sleep_until(r, wake);
	}
	return NULL;
}

int renewer_start(struct renewer *r, struct ev_loop *loop, ev_async *wakeup)
{
	r->loop = loop;
	r->wakeup = wakeup;
	if (thread_start(&r->thread, run, r) != 0)
		return -1;
	r->started = true;
	return 0;
}

void renewer_free(struct renewer *r)
{
	if (r == NULL)
		return;
	if (r->started) {
		pthread_mutex_lock(&r->mu);
		atomic_store(&r->stop, true);
		pthread_cond_signal(&r->cond);
		pthread_mutex_unlock(&r->mu);
		pthread_join(r->thread, NULL);
	}
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cond);
	free(r->url);
	free(r->cert);
	free(r->key);
	free(r->ca);
	free(r->key_type);
	free(r->ocsp_url);
	free(r->staple);
	free(r);
}
