/*
 * An endpoint's OCSP store: the answers about peers' certificates, the staple for its own
 * certificate, and the jobs (requests to send) its fetcher takes. One store per endpoint,
 * made with it and shared by all the states it runs on, so that answers survive reloads:
 * an answer is about one issuer key and serial (its CertID) and is verified against that
 * issuer when it arrives, so no trust anchor or rule of a state changes what it says.
 *
 * Answers are looked up by the decision (verify.c) on every path; a certificate without a
 * usable answer, or whose answer is past the middle of its validity, becomes due for a
 * fetch: it joins the queue of wanted ones and the endpoint's notify callback is run. The
 * fetcher takes jobs from that queue; answers due for a refresh while nobody looks them up
 * (the peer of a long connection) and failed fetches due again join it by a sweep of the
 * table, when one is due and at most once a second (a job that ends brings the next sweep
 * forward to when its certificate is due again). The table holds at most the state's
 * configured number of certificates, in order of use: the least recently seen goes first.
 * A certificate not seen for OCSP_IDLE seconds is no longer fetched for. A failed fetch is
 * tried again after a pause of 1, 2, 4 ... up to OCSP_RETRY_MAX seconds.
 *
 * The staple is held with the SHA-256 of the certificate it is for, and served only to
 * handshakes whose state has that certificate: after a reload to a new certificate, nothing
 * is stapled until the new one's answer arrives (a job, due at once).
 *
 * One mutex guards it all; nothing slow runs under it (no signature check, no callback).
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "internal.h"

#define BUCKETS	       1024
#define OCSP_IDLE      86400 /* seconds after which an unseen certificate is not fetched */
#define OCSP_RETRY_MAX 60
#define OCSP_SWEEP_MAX 60 /* seconds between two sweeps with nothing due sooner */
#define SHARED_ISSUERS 16 /* issuing CAs whose one copy the entries share */

struct entry {
	struct entry *next;		     /* in its bucket */
	struct entry *newer, *older;	     /* in the order of use */
	struct entry *want_prev, *want_next; /* in the queue of wanted ones */
	bool queued;
	uint8_t key[32]; /* ocsp_key() */
	ASN1_INTEGER *serial;
	X509 *issuer; /* referenced: the answers are verified against it */
	char *url;    /* NULL: no responder known */
	char who[200];
	bool answered;
	bool stapled; /* the answer came with a handshake: the server refreshes it */
	struct ocsp_result answer;
	time_t last_used;
	time_t retry_at;
	unsigned failures;
	char failure[200];
	bool in_flight;
};

/* The staple of the previous own certificate, kept when a new one's is installed before
 * the endpoint takes the new certificate (mtls_config_set_ocsp_staple_answer()): handshakes
 * still on the old state go on stapling. */
struct staple_prev {
	bool set;
	uint8_t hash[32];
	unsigned char *der;
	size_t len;
	struct ocsp_result answer;
};

struct staple {
	bool set;
	uint8_t hash[32]; /* of the own certificate it is for */
	unsigned char *der;
	size_t len;
	struct ocsp_result answer;
	/* fetching for the certificate of failing_hash */
	uint8_t failing_hash[32];
	unsigned failures;
	time_t retry_at;
	char failure[200];
	bool in_flight;
};

struct ocsp_store {
	atomic_int refs;
	pthread_mutex_t lock;
	struct entry *buckets[BUCKETS];
	atomic_size_t count; /* changed under the lock; read without it by ocsp_store_empty() */
	struct entry *newest, *oldest; /* the order of use */
	struct entry *want_head, *want_tail;
	time_t sweep_at; /* the next sweep of the whole table for what is due */
	/* the issuers of the entries, one object each (referenced): each handshake decodes its
	 * own copy of the peer's intermediate, and an entry would otherwise keep one of them,
	 * extension cache and all, per certificate */
	X509 *issuers[SHARED_ISSUERS];
	int nissuers;
	mtls_ocsp_notify_cb notify;
	void *notify_arg;
	struct staple staple;
	struct staple_prev prev;
};

struct mtls_ocsp_job {
	struct ocsp_store *store; /* referenced: the job is finished on its endpoint */
	bool staple;
	uint8_t key[32]; /* peer: the entry's key; staple: the own certificate's hash */
	X509 *issuer;
	ASN1_INTEGER *serial;
	char *url;
	char who[200];
	uint8_t *req;
	size_t req_len;
};

struct ocsp_store *ocsp_store_new(void)
{
	struct ocsp_store *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	atomic_init(&s->refs, 1);
	pthread_mutex_init(&s->lock, NULL);
	return s;
}

struct ocsp_store *ocsp_store_ref(struct ocsp_store *s)
{
	atomic_fetch_add(&s->refs, 1);
	return s;
}

static void entry_free(struct entry *e)
{
	if (e == NULL)
		return;
	ASN1_INTEGER_free(e->serial);
	X509_free(e->issuer);
	free(e->url);
	free(e);
}

void ocsp_store_unref(struct ocsp_store *s)
{
	if (s == NULL || atomic_fetch_sub(&s->refs, 1) != 1)
		return;
	for (size_t i = 0; i < BUCKETS; i++)
		while (s->buckets[i] != NULL) {
			struct entry *e = s->buckets[i];

			s->buckets[i] = e->next;
			entry_free(e);
		}
	free(s->staple.der);
	free(s->prev.der);
	for (int i = 0; i < s->nissuers; i++)
		X509_free(s->issuers[i]);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static size_t bucket_of(const uint8_t key[32])
{
	uint64_t h;

	memcpy(&h, key, sizeof(h));
	return (size_t)(h % BUCKETS);
}

/* Under the lock. */
static struct entry *find(struct ocsp_store *s, const uint8_t key[32])
{
	for (struct entry *e = s->buckets[bucket_of(key)]; e != NULL; e = e->next)
		if (memcmp(e->key, key, 32) == 0)
			return e;
	return NULL;
}

/* Under the lock: e joins (or leaves) the queue of wanted ones. */
static void want(struct ocsp_store *s, struct entry *e)
{
	if (e->queued)
		return;
	e->queued = true;
	e->want_next = NULL;
	e->want_prev = s->want_tail;
	if (s->want_tail != NULL)
		s->want_tail->want_next = e;
	else
		s->want_head = e;
	s->want_tail = e;
}

static void unwant(struct ocsp_store *s, struct entry *e)
{
	if (!e->queued)
		return;
	e->queued = false;
	if (e->want_prev != NULL)
		e->want_prev->want_next = e->want_next;
	else
		s->want_head = e->want_next;
	if (e->want_next != NULL)
		e->want_next->want_prev = e->want_prev;
	else
		s->want_tail = e->want_prev;
	e->want_prev = e->want_next = NULL;
}

/* Under the lock: e leaves the order of use / becomes its newest. */
static void unuse(struct ocsp_store *s, struct entry *e)
{
	if (e->newer != NULL)
		e->newer->older = e->older;
	else if (s->newest == e)
		s->newest = e->older;
	if (e->older != NULL)
		e->older->newer = e->newer;
	else if (s->oldest == e)
		s->oldest = e->newer;
	e->newer = e->older = NULL;
}

static void use(struct ocsp_store *s, struct entry *e)
{
	if (s->newest == e)
		return;
	unuse(s, e);
	e->older = s->newest;
	if (s->newest != NULL)
		s->newest->newer = e;
	s->newest = e;
	if (s->oldest == NULL)
		s->oldest = e;
}

/* Under the lock: unlink e from everything (not freed). */
static void unlink_entry(struct ocsp_store *s, struct entry *e)
{
	struct entry **pp = &s->buckets[bucket_of(e->key)];

	while (*pp != NULL && *pp != e)
		pp = &(*pp)->next;
	if (*pp == e) {
		*pp = e->next;
		s->count--;
	}
	unuse(s, e);
	unwant(s, e);
}

/* Under the lock: room for one more within max, by dropping the least recently seen
 * entries that are not being fetched. Returns what to free after unlocking (a list). */
static struct entry *make_room(struct ocsp_store *s, size_t max)
{
	struct entry *dropped = NULL, *e = s->oldest;

	while (s->count >= max && e != NULL) {
		struct entry *newer = e->newer;

		if (!e->in_flight) {
			unlink_entry(s, e);
			e->next = dropped;
			dropped = e;
		}
		e = newer;
	}
	return dropped;
}

static void free_list(struct entry *e)
{
	while (e != NULL) {
		struct entry *next = e->next;

		entry_free(e);
		e = next;
	}
}

/* A new entry for leaf (not linked, without its issuer yet), or NULL if out of memory. */
static struct entry *entry_new(const uint8_t key[32], X509 *leaf, const char *url)
{
	struct entry *e = calloc(1, sizeof(*e));

	if (e == NULL)
		return NULL;
	memcpy(e->key, key, 32);
	e->serial = ASN1_INTEGER_dup(X509_get0_serialNumber(leaf));
	e->url = url != NULL ? strdup(url) : ocsp_url(leaf);
	if (e->serial == NULL || (url != NULL && e->url == NULL)) {
		entry_free(e);
		return NULL;
	}
	identity_describe(leaf, e->who, sizeof(e->who));
	return e;
}

/* Under the lock: a reference to the store's object for issuer (the same bytes), or to
 * issuer itself when there is no room for it; NULL if out of memory. */
static X509 *share_issuer(struct ocsp_store *s, X509 *issuer)
{
	X509 *x = NULL;

	for (int i = 0; x == NULL && i < s->nissuers; i++)
		if (s->issuers[i] == issuer || X509_cmp(s->issuers[i], issuer) == 0)
			x = s->issuers[i];
	if (x == NULL && s->nissuers < SHARED_ISSUERS && X509_up_ref(issuer)) {
		/* its extension cache is filled while only this thread sees it (a chain of
		 * this handshake): the threads that share it later only read it */
		X509_check_purpose(issuer, -1, 0);
		s->issuers[s->nissuers++] = issuer;
		x = issuer;
	}
	if (x == NULL)
		x = issuer;
	return X509_up_ref(x) ? x : NULL;
}

/* When the answer should be asked for again: the middle of its validity. */
static time_t refresh_at(const struct ocsp_result *r)
{
	return r->this_update + (r->valid_until - r->this_update) / 2;
}

/* Is a fetch due for e at now (under the lock)? 0 if so, else when it will be (or
 * (time_t)-1: never, as things stand). */
static time_t entry_due(const struct entry *e, time_t now)
{
	time_t at;

	if (e->url == NULL || e->in_flight || now - e->last_used > OCSP_IDLE)
		return (time_t)-1;
	if (e->answered && ocsp_result_final(&e->answer))
		return (time_t)-1;
	/* a staple is not fetched again while it counts: the next handshake brings one */
	if (e->answered && e->stapled && ocsp_result_usable(&e->answer, now))
		return (time_t)-1;
	at = e->answered && ocsp_result_usable(&e->answer, now) ? refresh_at(&e->answer) : 0;
	if (e->retry_at > at)
		at = e->retry_at;
	return at <= now ? 0 : at;
}

/* Under the lock: e's fetch ended (or was dropped); the next sweep comes no later than e
 * is due again. */
static void landed(struct ocsp_store *s, struct entry *e, time_t now)
{
	time_t at;

	e->in_flight = false;
	at = entry_due(e, now);
	if (at != (time_t)-1 && at < s->sweep_at)
		s->sweep_at = at == 0 ? now : at;
}

static void retry_later(unsigned *failures, time_t *retry_at, time_t now)
{
	unsigned n = *failures < 7 ? *failures : 7;
	time_t pause = (time_t)1 << n;

	(*failures)++;
	*retry_at = now + (pause < OCSP_RETRY_MAX ? pause : OCSP_RETRY_MAX);
}

/* leaf's entry, made (outside the lock) and linked if new and max allows; NULL if it has
 * none. The lock is held on return; *dropped and *spare are to free after unlocking. */
static struct entry *entry_of(struct ocsp_store *s, const uint8_t key[32], X509 *leaf, X509 *issuer,
			      const char *url, size_t max, bool make, struct entry **dropped,
			      struct entry **spare)
{
	struct entry *e, *fresh = NULL;

	*dropped = *spare = NULL;
	pthread_mutex_lock(&s->lock);
	e = find(s, key);
	if (e != NULL || !make || max == 0)
		return e;
	/* made without the lock: it reads the certificate's extensions */
	pthread_mutex_unlock(&s->lock);
	fresh = entry_new(key, leaf, url);
	pthread_mutex_lock(&s->lock);
	e = find(s, key);
	if (e != NULL || fresh == NULL || (fresh->issuer = share_issuer(s, issuer)) == NULL) {
		*spare = fresh;
		return e;
	}
	*dropped = make_room(s, max);
	fresh->next = s->buckets[bucket_of(key)];
	s->buckets[bucket_of(key)] = fresh;
	s->count++;
	use(s, fresh);
	return fresh;
}

void ocsp_store_lookup(struct ocsp_store *s, X509 *leaf, X509 *issuer, const char *url, size_t max,
		       bool fetch, time_t now, struct ocsp_seen *out)
{
	uint8_t key[32];
	struct entry *e, *spare, *dropped;
	bool notify = false;
	mtls_ocsp_notify_cb cb = NULL;
	void *arg = NULL;

	memset(out, 0, sizeof(*out));
	if (ocsp_key(issuer, X509_get0_serialNumber(leaf), key) != 0) {
		snprintf(out->failure, sizeof(out->failure), "out of memory");
		return;
	}
	e = entry_of(s, key, leaf, issuer, url, max, fetch, &dropped, &spare);
	if (e != NULL) {
		e->last_used = now;
		use(s, e);
		if (e->answered && ocsp_result_usable(&e->answer, now)) {
			out->answered = true;
			out->answer = e->answer;
		}
		out->no_url = e->url == NULL;
		snprintf(out->url, sizeof(out->url), "%s", e->url != NULL ? e->url : "");
		out->failures = e->failures;
		memcpy(out->failure, e->failure, sizeof(out->failure));
		if (fetch && !e->queued && entry_due(e, now) == 0) {
			want(s, e);
			notify = true;
		}
	} else if (fetch) {
		snprintf(out->failure, sizeof(out->failure), "out of memory");
	}
	cb = s->notify;
	arg = s->notify_arg;
	pthread_mutex_unlock(&s->lock);
	entry_free(spare);
	free_list(dropped);
	if (notify && cb != NULL)
		cb(arg);
}

void ocsp_store_put(struct ocsp_store *s, X509 *leaf, X509 *issuer, const char *url,
		    const struct ocsp_result *r, size_t max, time_t now)
{
	uint8_t key[32];
	struct entry *e, *spare, *dropped;

	if (ocsp_key(issuer, X509_get0_serialNumber(leaf), key) != 0)
		return;
	e = entry_of(s, key, leaf, issuer, url, max, true, &dropped, &spare);
	/* a revocation for good is not undone by an older or other answer */
	if (e != NULL && !(e->answered && ocsp_result_final(&e->answer) && !ocsp_result_final(r))) {
		e->answered = true;
		e->stapled = true;
		e->answer = *r;
		e->last_used = now;
		use(s, e);
	}
	pthread_mutex_unlock(&s->lock);
	entry_free(spare);
	free_list(dropped);
}

unsigned char *ocsp_store_staple(struct ocsp_store *s, const uint8_t hash[32], time_t now,
				 size_t *len)
{
	unsigned char *copy = NULL;

	pthread_mutex_lock(&s->lock);
	if (s->staple.set && memcmp(s->staple.hash, hash, 32) == 0 &&
	    ocsp_result_usable(&s->staple.answer, now) &&
	    (copy = OPENSSL_malloc(s->staple.len)) != NULL) {
		memcpy(copy, s->staple.der, s->staple.len);
		*len = s->staple.len;
	} else if (s->prev.set && memcmp(s->prev.hash, hash, 32) == 0 &&
		   ocsp_result_usable(&s->prev.answer, now) &&
		   (copy = OPENSSL_malloc(s->prev.len)) != NULL) {
		memcpy(copy, s->prev.der, s->prev.len);
		*len = s->prev.len;
	}
	pthread_mutex_unlock(&s->lock);
	return copy;
}

bool ocsp_store_empty(struct ocsp_store *s)
{
	return atomic_load(&s->count) == 0;
}

void ocsp_store_notify(struct ocsp_store *s)
{
	mtls_ocsp_notify_cb cb;
	void *arg;

	pthread_mutex_lock(&s->lock);
	cb = s->notify;
	arg = s->notify_arg;
	pthread_mutex_unlock(&s->lock);
	if (cb != NULL)
		cb(arg);
}

/* --- the public calls ------------------------------------------------------------------ */

void mtls_endpoint_set_ocsp_notify(struct mtls *e, mtls_ocsp_notify_cb cb, void *arg)
{
	if (e == NULL || e->kind == KIND_CONN)
		return;
	pthread_mutex_lock(&e->ep.ocsp->lock);
	e->ep.ocsp->notify = cb;
	e->ep.ocsp->notify_arg = arg;
	pthread_mutex_unlock(&e->ep.ocsp->lock);
}

static void job_release(struct mtls_ocsp_job *job)
{
	if (job == NULL)
		return;
	ocsp_store_unref(job->store);
	X509_free(job->issuer);
	ASN1_INTEGER_free(job->serial);
	free(job->url);
	free(job->req);
	free(job);
}

/* Under the lock: the job's entry (or staple) is no longer being fetched. */
static void not_in_flight(struct ocsp_store *s, const struct mtls_ocsp_job *job)
{
	struct entry *e;

	if (job->staple) {
		if (memcmp(s->staple.failing_hash, job->key, 32) == 0)
			s->staple.in_flight = false;
	} else if ((e = find(s, job->key)) != NULL) {
		landed(s, e, time(NULL));
	}
}

void mtls_ocsp_job_free(struct mtls_ocsp_job *job)
{
	if (job == NULL)
		return;
	/* dropped without an outcome: its certificate may be asked for again */
	pthread_mutex_lock(&job->store->lock);
	not_in_flight(job->store, job);
	pthread_mutex_unlock(&job->store->lock);
	job_release(job);
}

static struct mtls_ocsp_job *job_new(struct ocsp_store *s, bool staple, const uint8_t key[32],
				     X509 *issuer, const ASN1_INTEGER *serial, const char *url,
				     const char *who)
{
	struct mtls_ocsp_job *job = calloc(1, sizeof(*job));

	if (job == NULL)
		return NULL;
	job->store = ocsp_store_ref(s);
	job->staple = staple;
	memcpy(job->key, key, 32);
	snprintf(job->who, sizeof(job->who), "%s", who);
	job->serial = ASN1_INTEGER_dup(serial);
	job->url = strdup(url);
	if (job->serial == NULL || job->url == NULL || !X509_up_ref(issuer)) {
		job_release(job);
		return NULL;
	}
	job->issuer = issuer;
	if (ocsp_request(issuer, serial, &job->req, &job->req_len) != 0) {
		job_release(job);
		return NULL;
	}
	return job;
}

static void sooner(time_t *due, time_t at)
{
	if (at != (time_t)-1 && (*due == 0 || at < *due))
		*due = at;
}

/* The staple job of st, if due (under the lock); else its due time into *due. */
static bool staple_due(struct ocsp_store *s, const struct state *st, time_t now, time_t *due)
{
	struct staple *sp = &s->staple;
	time_t at = 0;

	if (!st->staples || st->own_issuer == NULL || st->own_ocsp_url == NULL)
		return false;
	if (memcmp(sp->failing_hash, st->own_hash, 32) != 0) {
		/* another certificate now: its failures start from nothing */
		memcpy(sp->failing_hash, st->own_hash, 32);
		sp->failures = 0;
		sp->retry_at = 0;
		sp->failure[0] = '\0';
		sp->in_flight = false;
	}
	if (sp->in_flight)
		return false;
	if (sp->set && memcmp(sp->hash, st->own_hash, 32) == 0 &&
	    ocsp_result_usable(&sp->answer, now))
		at = ocsp_result_final(&sp->answer) ? (time_t)-1 : refresh_at(&sp->answer);
	if (at != (time_t)-1 && sp->retry_at > at)
		at = sp->retry_at;
	if (at != (time_t)-1 && at <= now)
		return true;
	sooner(due, at);
	return false;
}

struct mtls_ocsp_job *mtls_ocsp_job_next(struct mtls *e, time_t *due)
{
	struct state *st;
	struct ocsp_store *s;
	struct entry *pick = NULL;
	time_t now = time(NULL), when = 0;
	struct mtls_ocsp_job *job = NULL;
	bool staple;

	if (due != NULL)
		*due = 0;
	if (e == NULL || e->kind == KIND_CONN || (st = endpoint_state(e)) == NULL)
		return NULL;
	s = e->ep.ocsp;
	pthread_mutex_lock(&s->lock);
	staple = staple_due(s, st, now, &when);
	if (staple) {
		s->staple.in_flight = true;
	} else if (st->config->ocsp_mode != MTLS_OCSP_OFF) {
		/* what is due and nobody looked up (refreshes, retries) joins the queue: a
		 * sweep of the table, when something is due, at most once a second */
		if (now >= s->sweep_at) {
			time_t next = 0;

			for (size_t i = 0; i < BUCKETS; i++)
				for (struct entry *x = s->buckets[i]; x != NULL; x = x->next) {
					time_t at = entry_due(x, now);

					if (at == 0)
						want(s, x);
					else
						sooner(&next, at);
				}
			s->sweep_at = next != 0 && next < now + OCSP_SWEEP_MAX
					      ? next
					      : now + OCSP_SWEEP_MAX;
			if (s->sweep_at <= now)
				s->sweep_at = now + 1;
		}
		/* the queue, in order (what handshakes wait for came first) */
		while (pick == NULL && s->want_head != NULL) {
			struct entry *x = s->want_head;

			unwant(s, x);
			if (entry_due(x, now) == 0)
				pick = x;
		}
		sooner(&when, s->sweep_at);
		if (pick != NULL)
			pick->in_flight = true;
	}
	pthread_mutex_unlock(&s->lock);
	/* the entry stays while in flight (make_room() skips it), and its fields other than
	 * the answer and the fetch state never change */
	if (staple) {
		char who[200];

		identity_describe(st->own_leaf, who, sizeof(who));
		job = job_new(s, true, st->own_hash, st->own_issuer,
			      X509_get0_serialNumber(st->own_leaf), st->own_ocsp_url, who);
		if (job == NULL) {
			pthread_mutex_lock(&s->lock);
			s->staple.in_flight = false;
			pthread_mutex_unlock(&s->lock);
		}
	} else if (pick != NULL) {
		job = job_new(s, false, pick->key, pick->issuer, pick->serial, pick->url,
			      pick->who);
		if (job == NULL) {
			pthread_mutex_lock(&s->lock);
			pick->in_flight = false;
			pthread_mutex_unlock(&s->lock);
		}
	}
	state_unref(st);
	if (job == NULL && due != NULL)
		*due = when;
	return job;
}

const uint8_t *mtls_ocsp_job_request(const struct mtls_ocsp_job *job, size_t *len)
{
	*len = job != NULL ? job->req_len : 0;
	return job != NULL ? job->req : NULL;
}

const char *mtls_ocsp_job_url(const struct mtls_ocsp_job *job)
{
	return job != NULL ? job->url : NULL;
}

const char *mtls_ocsp_job_subject(const struct mtls_ocsp_job *job)
{
	return job != NULL ? job->who : NULL;
}

int mtls_ocsp_job_is_staple(const struct mtls_ocsp_job *job)
{
	return job != NULL && job->staple;
}

/* The fetch of job ended without an answer to keep (under the lock). */
static void job_failed(struct ocsp_store *s, const struct mtls_ocsp_job *job, const char *why,
		       time_t now)
{
	struct entry *e;

	if (job->staple) {
		struct staple *sp = &s->staple;

		if (memcmp(sp->failing_hash, job->key, 32) == 0) {
			sp->in_flight = false;
			retry_later(&sp->failures, &sp->retry_at, now);
			snprintf(sp->failure, sizeof(sp->failure), "%s", why);
		}
		return;
	}
	if ((e = find(s, job->key)) != NULL) {
		retry_later(&e->failures, &e->retry_at, now);
		snprintf(e->failure, sizeof(e->failure), "%s", why);
		landed(s, e, now);
	}
}

void mtls_ocsp_job_failed(struct mtls *endpoint, struct mtls_ocsp_job *job, const char *why)
{
	(void)endpoint;
	if (job == NULL)
		return;
	pthread_mutex_lock(&job->store->lock);
	job_failed(job->store, job, why != NULL && why[0] != '\0' ? why : "the fetch failed",
		   time(NULL));
	pthread_mutex_unlock(&job->store->lock);
	job_release(job);
}

static enum mtls_ocsp_status status_of(int ocsp_status)
{
	return ocsp_status == V_OCSP_CERTSTATUS_GOOD	  ? MTLS_OCSP_STATUS_GOOD
	       : ocsp_status == V_OCSP_CERTSTATUS_REVOKED ? MTLS_OCSP_STATUS_REVOKED
							  : MTLS_OCSP_STATUS_UNKNOWN;
}

/* Keep a verified staple (DER copied) for the own certificate of hash (under the lock). */
static int keep_staple(struct ocsp_store *s, const uint8_t hash[32], const uint8_t *der, size_t len,
		       const struct ocsp_result *r)
{
	unsigned char *copy = malloc(len);

	if (copy == NULL)
		return -1;
	memcpy(copy, der, len);
	if (s->staple.set && memcmp(s->staple.hash, hash, 32) != 0) {
		/* another certificate's: kept for the handshakes still on it */
		free(s->prev.der);
		s->prev.set = true;
		memcpy(s->prev.hash, s->staple.hash, 32);
		s->prev.der = s->staple.der;
		s->prev.len = s->staple.len;
		s->prev.answer = s->staple.answer;
		s->staple.der = NULL;
	}
	free(s->staple.der);
	s->staple.der = copy;
	s->staple.len = len;
	s->staple.answer = *r;
	memcpy(s->staple.hash, hash, 32);
	s->staple.set = true;
	return 0;
}

int mtls_ocsp_job_done(struct mtls *endpoint, struct mtls_ocsp_job *job, const uint8_t *der,
		       size_t len, int *recheck)
{
	struct ocsp_store *s;
	struct ocsp_result r;
	struct error *err;
	char why[300];
	time_t now = time(NULL);
	int rc;

	if (recheck != NULL)
		*recheck = 0;
	if (endpoint == NULL || endpoint->kind == KIND_CONN || job == NULL) {
		if (endpoint != NULL && job == NULL)
			error_set(endpoint_err(endpoint), MTLS_REASON_USAGE,
				  "mtls_ocsp_job_done needs a job");
		mtls_ocsp_job_free(job);
		return -1;
	}
	err = endpoint_err(endpoint);
	s = job->store;
	if (s != endpoint->ep.ocsp) {
		mtls_ocsp_job_failed(endpoint, job, "finished on another endpoint");
		return error_set(err, MTLS_REASON_USAGE,
				 "an OCSP job must be finished on the endpoint it came from");
	}
	if (ocsp_check_response(der, der != NULL ? len : 0, job->issuer, job->serial, now, &r, why,
				sizeof(why)) != 0) {
		char msg[400];

		snprintf(msg, sizeof(msg), "answer refused: %s", why);
		pthread_mutex_lock(&s->lock);
		job_failed(s, job, msg, now);
		pthread_mutex_unlock(&s->lock);
		error_set(err, MTLS_REASON_BAD_CERTIFICATE,
			  "the OCSP answer from %s about %s was refused: %s", job->url, job->who,
			  why);
		job_release(job);
		return -1;
	}
	rc = status_of(r.status);
	pthread_mutex_lock(&s->lock);
	if (job->staple) {
		if (memcmp(s->staple.failing_hash, job->key, 32) == 0) {
			s->staple.in_flight = false;
			s->staple.failures = 0;
			s->staple.retry_at = 0;
			s->staple.failure[0] = '\0';
		}
		if (keep_staple(s, job->key, der, len, &r) != 0)
			rc = -1;
	} else {
		struct entry *e = find(s, job->key);

		if (e != NULL) {
			bool was_bad = e->answered && e->answer.status != V_OCSP_CERTSTATUS_GOOD;
			bool same = e->answered && e->answer.status == r.status;

			e->failures = 0;
			e->retry_at = 0;
			e->failure[0] = '\0';
			if (!(e->answered && ocsp_result_final(&e->answer))) {
				e->answer = r;
				e->answered = true;
				e->stapled = false;
			}
			landed(s, e, now);
			if (recheck != NULL && r.status != V_OCSP_CERTSTATUS_GOOD &&
			    !(same && was_bad))
				*recheck = 1;
		}
	}
	pthread_mutex_unlock(&s->lock);
	job_release(job);
	if (rc < 0)
		return error_set(err, MTLS_REASON_INTERNAL, "out of memory");
	error_clear(err);
	return rc;
}

int mtls_endpoint_set_ocsp_staple(struct mtls *e, const uint8_t *der, size_t len)
{
	struct state *st;
	struct ocsp_result r;
	struct error *err;
	char why[300], who[200];
	int rc = -1;

	if (e == NULL || e->kind != KIND_SERVER || der == NULL) {
		if (e != NULL)
			error_set(endpoint_err(e), MTLS_REASON_USAGE,
				  "mtls_endpoint_set_ocsp_staple needs a server endpoint and an "
				  "answer");
		return -1;
	}
	err = endpoint_err(e);
	st = endpoint_state(e);
	if (st == NULL || st->own_leaf == NULL || st->own_issuer == NULL) {
		state_unref(st);
		return error_set(err, MTLS_REASON_CONFIG,
				 "the endpoint has no certificate with a known issuer to staple an "
				 "answer for; configure its certificate with its chain");
	}
	identity_describe(st->own_leaf, who, sizeof(who));
	if (ocsp_check_response(der, len, st->own_issuer, X509_get0_serialNumber(st->own_leaf),
				time(NULL), &r, why, sizeof(why)) != 0) {
		error_set(err, MTLS_REASON_BAD_CERTIFICATE,
			  "OCSP staple refused for the own certificate (%s): %s", who, why);
	} else {
		pthread_mutex_lock(&e->ep.ocsp->lock);
		rc = keep_staple(e->ep.ocsp, st->own_hash, der, len, &r);
		pthread_mutex_unlock(&e->ep.ocsp->lock);
		if (rc != 0)
			error_set(err, MTLS_REASON_INTERNAL, "out of memory");
		else
			error_clear(err);
	}
	state_unref(st);
	return rc;
}

void ocsp_store_take_config_staple(struct ocsp_store *s, const struct state *st,
				   const struct mtls_config *given)
{
	struct ocsp_result r;
	char why[300];

	if (given->staple_der == NULL || !st->staples || st->own_leaf == NULL ||
	    st->own_issuer == NULL ||
	    ocsp_check_response(given->staple_der, given->staple_len, st->own_issuer,
				X509_get0_serialNumber(st->own_leaf), time(NULL), &r, why,
				sizeof(why)) != 0)
		return; /* not for this certificate, or not good: the staple job asks again */
	pthread_mutex_lock(&s->lock);
	(void)keep_staple(s, st->own_hash, given->staple_der, given->staple_len, &r);
	pthread_mutex_unlock(&s->lock);
}

int mtls_endpoint_ocsp_staple_times(const struct mtls *e, time_t *this_update, time_t *next_update)
{
	struct state *st;
	int rc = -1;

	if (e == NULL || e->kind == KIND_CONN)
		return -1;
	*this_update = *next_update = 0;
	st = endpoint_state((struct mtls *)(uintptr_t)e);
	if (st == NULL)
		return -1;
	rc = st->staples ? 0 : -1;
	pthread_mutex_lock(&e->ep.ocsp->lock);
	if (e->ep.ocsp->staple.set && memcmp(e->ep.ocsp->staple.hash, st->own_hash, 32) == 0) {
		*this_update = e->ep.ocsp->staple.answer.this_update;
		*next_update = e->ep.ocsp->staple.answer.valid_until;
		rc = 1;
	}
	pthread_mutex_unlock(&e->ep.ocsp->lock);
	state_unref(st);
	return rc;
}

size_t mtls_endpoint_ocsp_cache_entries(const struct mtls *e)
{
	size_t n;

	if (e == NULL || e->kind == KIND_CONN)
		return 0;
	pthread_mutex_lock(&e->ep.ocsp->lock);
	n = e->ep.ocsp->count;
	pthread_mutex_unlock(&e->ep.ocsp->lock);
	return n;
}
