/*
 * OCSP fetching for the endpoint's jobs (ocspfetch.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "log.h"
#include "ocspfetch.h"
#include "thread.h"

struct ocspfetch {
	struct mtls *endpoint;
	struct metrics *m;
	struct ev_loop *loop;
	ev_async *recheck;
	pthread_t thread;
	bool started;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	bool kicked; /* under mu: a job may be due */
	atomic_bool stop;
	/* ocsp_fetch_failed lines: a streak, its reason, when last logged */
	time_t failing_since, warned_at;
	char warned[128];
};

struct body {
	uint8_t data[OCSPFETCH_MAX_BYTES];
	size_t len;
	bool too_big;
};

static void on_notify(void *arg)
{
	struct ocspfetch *f = arg;

	pthread_mutex_lock(&f->mu);
	f->kicked = true;
	pthread_cond_signal(&f->cond);
	pthread_mutex_unlock(&f->mu);
}

struct ocspfetch *ocspfetch_new(struct mtls *endpoint, struct metrics *m, char *err, size_t len)
{
	struct ocspfetch *f = calloc(1, sizeof(*f));

	if (f == NULL) {
		snprintf(err, len, "out of memory");
		return NULL;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT); /* here, before any thread */
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->cond, NULL);
	f->endpoint = endpoint;
	f->m = m;
	mtls_endpoint_set_ocsp_notify(endpoint, on_notify, f);
	return f;
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	struct body *b = arg;
	size_t len = size * n;

	if (len > sizeof(b->data) - b->len) {
		b->too_big = true;
		return 0;
	}
	memcpy(b->data + b->len, p, len);
	b->len += len;
	return len;
}

static int on_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
	const atomic_bool *stop = arg;

	(void)a, (void)b, (void)c, (void)d;
	return stop != NULL && atomic_load(stop) ? 1 : 0;
}

/* POST req to url: 0 with the answer's bytes in b, or -1 and why. */
static int post_to(const char *url, const uint8_t *req, size_t req_len, const atomic_bool *stop,
		   struct body *b, char *why, size_t len)
{
	CURL *c = curl_easy_init();
	struct curl_slist *hdr = NULL;
	char ebuf[CURL_ERROR_SIZE] = "";
	long status = 0;
	CURLcode cc;
	int rc = -1;

	b->len = 0;
	b->too_big = false;
	if (c == NULL) {
		snprintf(why, len, "out of memory");
		return -1;
	}
	hdr = curl_slist_append(hdr, "Content-Type: application/ocsp-request");
	hdr = curl_slist_append(hdr, "Accept: application/ocsp-response");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)OCSPFETCH_CONNECT_S);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)OCSPFETCH_TIMEOUT_S);
	curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)OCSPFETCH_MAX_BYTES);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
	curl_easy_setopt(c, CURLOPT_POST, 1L);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, req);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req_len);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
	/* (libcurl takes it as void *; on_progress only reads it) */
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, (void *)(uintptr_t)stop);
	cc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (cc != CURLE_OK)
		snprintf(why, len, "%s",
			 b->too_big || cc == CURLE_FILESIZE_EXCEEDED ? "answer larger than 64 KiB"
			 : ebuf[0] != '\0'			     ? ebuf
								     : curl_easy_strerror(cc));
	else if (status != 200)
		snprintf(why, len, "HTTP status %ld", status);
	else
		rc = 0;
	curl_slist_free_all(hdr);
	curl_easy_cleanup(c);
	return rc;
}

/* POST the job's request to its responder. */
static int post(struct ocspfetch *f, const struct mtls_ocsp_job *job, struct body *b, char *why,
		size_t len)
{
	size_t req_len;
	const uint8_t *req = mtls_ocsp_job_request(job, &req_len);

	return post_to(mtls_ocsp_job_url(job), req, req_len, &f->stop, b, why, len);
}

uint8_t *ocspfetch_once(const char *url, const uint8_t *req, size_t req_len,
			const atomic_bool *stop, size_t *len, char *why, size_t why_len)
{
	struct body *b = malloc(sizeof(*b));
	uint8_t *out = NULL;

	if (b == NULL) {
		snprintf(why, why_len, "out of memory");
		return NULL;
	}
	if (post_to(url, req, req_len, stop, b, why, why_len) == 0) {
		if (b->len == 0)
			snprintf(why, why_len, "an empty answer");
		else if ((out = malloc(b->len)) == NULL)
			snprintf(why, why_len, "out of memory");
		else {
			memcpy(out, b->data, b->len);
			*len = b->len;
		}
	}
	free(b);
	return out;
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

/* A failed fetch (or a refused answer): counted, and logged at the start of a streak, when
 * its reason changes, and every OCSPFETCH_WARN_EVERY seconds while it lasts. */
static void failed(struct ocspfetch *f, const char *kind, const char *url, const char *who,
		   const char *why, bool invalid)
{
	time_t now = time(NULL);
	char head[sizeof(f->warned)];
	bool staple = strcmp(kind, "staple") == 0;

	atomic_fetch_add(
		&f->m->ocsp_requests[staple][invalid ? METRICS_OCSP_INVALID : METRICS_OCSP_ERROR],
		1);
	snprintf(head, sizeof(head), "%s", why);
	if (f->failing_since == 0)
		f->failing_since = now;
	else if (now - f->warned_at < OCSPFETCH_WARN_EVERY && same_reason(head, f->warned))
		return;
	f->warned_at = now;
	memcpy(f->warned, head, sizeof(head));
	LOG(LOG_WARN, invalid ? "ocsp_answer_refused" : "ocsp_fetch_failed", LS("kind", kind),
	    LS("url", url), LS("cert", who), LS("reason", why),
	    LN("failing_for_seconds", now - f->failing_since),
	    LS("action", staple ? "no staple is served for the own certificate until the responder "
				  "answers (must-staple clients refuse it meanwhile); check the "
				  "responder"
				: "OCSP soft-fail lets such peers in meanwhile, hard-fail refuses "
				  "them (ocsp_unavailable); check the responder"));
}

static void answered(struct ocspfetch *f, const char *kind, const char *url, const char *who,
		     int status)
{
	bool staple = strcmp(kind, "staple") == 0;
	time_t now = time(NULL), tu = 0, nu = 0;
	static const char *const names[] = {"", "good", "revoked", "unknown"};
	const char *name = status >= 1 && status <= 3 ? names[status] : "?";

	atomic_fetch_add(
		&f->m->ocsp_requests[staple][status == MTLS_OCSP_STATUS_GOOD ? METRICS_OCSP_GOOD
					     : status == MTLS_OCSP_STATUS_REVOKED
						     ? METRICS_OCSP_REVOKED
						     : METRICS_OCSP_UNKNOWN],
		1);
	if (f->failing_since != 0)
		LOG(LOG_INFO, "ocsp_fetch_recovered", LS("url", url),
		    LN("failed_for_seconds", now - f->failing_since));
	f->failing_since = 0;
	if (staple) {
		if (mtls_endpoint_ocsp_staple_times(f->endpoint, &tu, &nu) < 0)
			tu = nu = 0;
		if (status == MTLS_OCSP_STATUS_REVOKED)
			LOG(LOG_ERROR, "ocsp_staple", LS("cert", who), LS("status", name),
			    LS("url", url), LN("next_update", nu),
			    LS("message", "the own certificate is revoked: clients refuse it"),
			    LS("action", "renew it"));
		else
			LOG(status == MTLS_OCSP_STATUS_GOOD ? LOG_INFO : LOG_WARN, "ocsp_staple",
			    LS("cert", who), LS("status", name), LS("url", url),
			    LN("this_update", tu), LN("next_update", nu));
		return;
	}
	LOG(status == MTLS_OCSP_STATUS_GOOD ? LOG_DEBUG : LOG_WARN, "ocsp_answer", LS("cert", who),
	    LS("status", name), LS("url", url));
}

/* One job: fetched, handed back; the main loop woken if live connections need a look. */
static void run_job(struct ocspfetch *f, struct mtls_ocsp_job *job, struct body *b)
{
	const char *kind = mtls_ocsp_job_is_staple(job) ? "staple" : "peer";
	char url[256], who[256], why[CURL_ERROR_SIZE + 64];
	int status, recheck = 0;

	snprintf(url, sizeof(url), "%s", mtls_ocsp_job_url(job));
	snprintf(who, sizeof(who), "%s", mtls_ocsp_job_subject(job));
	if (post(f, job, b, why, sizeof(why)) != 0) {
		if (atomic_load(&f->stop)) {
			mtls_ocsp_job_free(job);
			return;
		}
		mtls_ocsp_job_failed(f->endpoint, job, why);
		failed(f, kind, url, who, why, false);
		return;
	}
	status = mtls_ocsp_job_done(f->endpoint, job, b->data, b->len, &recheck);
	if (status < 0) {
		failed(f, kind, url, who, mtls_error(f->endpoint), true);
		return;
	}
	answered(f, kind, url, who, status);
	if (recheck)
		ev_async_send(f->loop, f->recheck);
}

static void *run(void *arg)
{
	struct ocspfetch *f = arg;
	struct body *b = malloc(sizeof(*b));

	while (b != NULL && !atomic_load(&f->stop)) {
		time_t due = 0, now;
		struct timespec until;
		struct mtls_ocsp_job *job = mtls_ocsp_job_next(f->endpoint, &due);

		if (job != NULL) {
			run_job(f, job, b);
			continue;
		}
		now = time(NULL);
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec +=
			due > now && due - now < OCSPFETCH_IDLE_S ? due - now : OCSPFETCH_IDLE_S;
		pthread_mutex_lock(&f->mu);
		while (!f->kicked && !atomic_load(&f->stop) &&
		       pthread_cond_timedwait(&f->cond, &f->mu, &until) != ETIMEDOUT)
			;
		f->kicked = false;
		pthread_mutex_unlock(&f->mu);
	}
	free(b);
	return NULL;
}

int ocspfetch_start(struct ocspfetch *f, struct ev_loop *loop, ev_async *recheck)
{
	f->loop = loop;
	f->recheck = recheck;
	if (thread_start(&f->thread, run, f) != 0)
		return -1;
	f->started = true;
	return 0;
}

void ocspfetch_free(struct ocspfetch *f)
{
	if (f == NULL)
		return;
	mtls_endpoint_set_ocsp_notify(f->endpoint, NULL, NULL);
	if (f->started) {
		pthread_mutex_lock(&f->mu);
		atomic_store(&f->stop, true);
		pthread_cond_signal(&f->cond);
		pthread_mutex_unlock(&f->mu);
		pthread_join(f->thread, NULL);
	}
	pthread_mutex_destroy(&f->mu);
	pthread_cond_destroy(&f->cond);
	free(f);
}
