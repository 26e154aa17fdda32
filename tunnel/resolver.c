/*
 * Targets, their addresses (resolved by a thread of their own) and the health of each.
 */
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include "log.h"
#include "resolver.h"
#include "thread.h"

#define RESOLVER_RETRY_MS 5000 /* a name that did not resolve: tried again this often, at most */

struct resolver_list {
	int refs; /* under the resolver's lock */
	size_t n;
	struct resolver_entry e[];
};

struct target {
	char text[300];
	char host[256];
	char port[8];
	bool is_unix;
	bool numeric; /* an IP address or a unix socket: its one address known at start */
	struct address fixed;
	bool resolved_once; /* has had an address (for the resolved/resolve_failed lines) */
	bool failing;	    /* its last resolution failed (logged once per streak) */
};

struct resolver {
	struct target t[RESOLVER_TARGETS_MAX];
	size_t nt;
	char describe[1024];
	long long interval_ms;
	struct metrics *m;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct resolver_list *cur; /* under lock */
	bool kicked, stop;	   /* under lock */
	long long resolved_at;	   /* ms, the last resolution (the thread's) */
	bool thread_started;
	pthread_t thread;
	resolver_lookup_fn *lookup;
	void (*release)(struct addrinfo *res);
};

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool resolver_health_failed(struct resolver_health *h, long long now)
{
	bool was_up = !h->down;

	if (was_up || h->backoff <= 0)
		h->backoff = RESOLVER_BACKOFF_MIN_MS;
	else if (now >= h->down_until) /* a retry after the backoff failed too */
		h->backoff = h->backoff * 2 > RESOLVER_BACKOFF_MAX_MS ? RESOLVER_BACKOFF_MAX_MS
								      : h->backoff * 2;
	h->down = true;
	h->failed_at = now;
	h->down_until = now + h->backoff;
	return was_up;
}

bool resolver_health_ok(struct resolver_health *h)
{
	bool was_down = h->down;

	h->down = false;
	h->backoff = 0;
	h->down_until = 0;
	return was_down;
}

size_t resolver_order(const struct resolver_health *h, size_t n, long long now,
		      unsigned char *order, size_t max)
{
	size_t k = 0;
	bool taken[RESOLVER_ADDRS_MAX] = {false};

	if (n > RESOLVER_ADDRS_MAX)
		n = RESOLVER_ADDRS_MAX;
	for (size_t i = 0; i < n && k < max; i++)
		if (!h[i].down || h[i].down_until <= now) {
			order[k++] = (unsigned char)i;
			taken[i] = true;
		}
	while (k < max) { /* the down ones, least recently failed first */
		size_t best = n;

		for (size_t i = 0; i < n; i++)
			if (!taken[i] && (best == n || h[i].failed_at < h[best].failed_at))
				best = i;
		if (best == n)
			break;
		order[k++] = (unsigned char)best;
		taken[best] = true;
	}
	return k;
}

static void list_unref(struct resolver_list *l)
{
	if (l != NULL && --l->refs == 0)
		free(l);
}

struct resolver *resolver_new(const char *const *targets, size_t n, const char *option,
			      long long interval_ms, struct metrics *m, char *err, size_t len)
{
	struct resolver *r;
	size_t used = 0;

	if (n == 0) {
		snprintf(err, len, "give --%s", option);
		return NULL;
	}
	if (n > RESOLVER_TARGETS_MAX) {
		snprintf(err, len, "%zu --%s: at most %d", n, option, RESOLVER_TARGETS_MAX);
		return NULL;
	}
	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		snprintf(err, len, "out of memory");
		return NULL;
	}
	r->interval_ms = interval_ms;
	r->m = m;
	r->lookup = getaddrinfo;
	r->release = freeaddrinfo;
	for (size_t i = 0; i < n; i++) {
		struct target *t = &r->t[i];
		char why[400];

		if (address_split(targets[i], t->host, sizeof(t->host), t->port, sizeof(t->port),
				  &t->is_unix, why, sizeof(why)) != 0) {
			snprintf(err, len, "--%s: %s", option, why);
			goto fail;
		}
		if (!t->is_unix && strtol(t->port, NULL, 10) == 0) {
			snprintf(err, len,
				 "--%s %s: port 0 cannot be connected to; give the real port",
				 option, targets[i]);
			goto fail;
		}
		snprintf(t->text, sizeof(t->text), "%s", targets[i]);
		/* an IP address or a socket path: no name to resolve, ever */
		t->numeric = t->is_unix || address_parse_numeric(targets[i], &t->fixed) == 0;
		if (t->is_unix && address_parse(targets[i], &t->fixed, why, sizeof(why)) != 0) {
			snprintf(err, len, "--%s: %s", option, why);
			goto fail;
		}
		used += (size_t)snprintf(r->describe + used,
					 used < sizeof(r->describe) ? sizeof(r->describe) - used
								    : 0,
					 "%s%s", i > 0 ? "," : "", targets[i]);
		if (m != NULL)
			snprintf(m->targets[i].name, sizeof(m->targets[i].name), "%s", targets[i]);
	}
	r->nt = n;
	if (m != NULL)
		m->ntargets = n;
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->cond, NULL);
	return r;
fail:
	free(r);
	return NULL;
}

/* Target i's addresses into l: at most its share of RESOLVER_ADDRS_MAX, so that a name of
 * hundreds of addresses leaves the other targets (the fallbacks) their places. 0, or a
 * getaddrinfo error (why set). */
static int resolve_target(struct resolver *r, size_t i, struct resolver_list *l, char *why,
			  size_t len)
{
	const struct target *t = &r->t[i];
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	size_t end = l->n + RESOLVER_ADDRS_MAX / r->nt;
	int rc;

	if (end > RESOLVER_ADDRS_MAX)
		end = RESOLVER_ADDRS_MAX;
	if (t->numeric) {
		if (l->n < RESOLVER_ADDRS_MAX) {
			l->e[l->n].addr = t->fixed;
			snprintf(l->e[l->n].addr.host, sizeof(l->e[l->n].addr.host), "%s", t->host);
			l->e[l->n++].target = (int)i;
		}
		return 0;
	}
	rc = r->lookup(t->host, t->port, &hints, &res);
	if (rc != 0 || res == NULL) {
		snprintf(why, len, "%s", rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
		if (res != NULL)
			r->release(res);
		return rc != 0 ? rc : EAI_NONAME;
	}
	for (const struct addrinfo *a = res; a != NULL && l->n < end; a = a->ai_next) {
		bool dup = false;

		if (a->ai_addrlen > sizeof(struct sockaddr_storage) ||
		    (a->ai_family != AF_INET && a->ai_family != AF_INET6))
			continue;
		for (size_t j = 0; j < l->n && !dup; j++)
			dup = l->e[j].target == (int)i && l->e[j].addr.len == a->ai_addrlen &&
			      memcmp(&l->e[j].addr.sa, a->ai_addr, a->ai_addrlen) == 0;
		if (dup)
			continue;
		memset(&l->e[l->n], 0, sizeof(l->e[l->n]));
		memcpy(&l->e[l->n].addr.sa, a->ai_addr, a->ai_addrlen);
		l->e[l->n].addr.len = a->ai_addrlen;
		snprintf(l->e[l->n].addr.host, sizeof(l->e[l->n].addr.host), "%s", t->host);
		l->e[l->n++].target = (int)i;
	}
	r->release(res);
	return 0;
}

/* The up gauge of each target: resolved, and an address not down. Under the lock. */
static void update_gauges(struct resolver *r, const struct resolver_list *l)
{
	if (r->m == NULL)
		return;
	for (size_t i = 0; i < r->nt; i++) {
		int addrs = 0, up = 0;

		for (size_t j = 0; j < l->n; j++)
			if (l->e[j].target == (int)i) {
				addrs++;
				up |= !l->e[j].health.down;
			}
		atomic_store(&r->m->targets[i].addresses, addrs);
		atomic_store(&r->m->targets[i].up, up);
	}
}

/* Resolve every target and publish the new list (the health of the addresses it shares with
 * the old one carried over). Called without the lock. */
static void resolve_all(struct resolver *r)
{
	struct resolver_list *l =
		calloc(1, sizeof(*l) + RESOLVER_ADDRS_MAX * sizeof(struct resolver_entry));
	struct resolver_list *old;

	if (l == NULL)
		return; /* the old list stays */
	l->refs = 1;
	for (size_t i = 0; i < r->nt; i++) {
		struct target *t = &r->t[i];
		char why[200] = "";
		size_t before = l->n;

		if (resolve_target(r, i, l, why, sizeof(why)) != 0) {
			/* a name that resolved keeps its last addresses through a failure (a
			 * DNS blip must not refuse every client); only this thread replaces
			 * r->cur, and an entry's address is immutable: no lock to read them */
			for (size_t j = 0; r->cur != NULL && j < r->cur->n; j++)
				if (r->cur->e[j].target == (int)i && l->n < RESOLVER_ADDRS_MAX) {
					l->e[l->n].addr = r->cur->e[j].addr;
					l->e[l->n++].target = (int)i;
				}
			if (r->m != NULL)
				atomic_fetch_add(&r->m->targets[i].resolve_failures, 1);
			if (!t->failing)
				LOG(LOG_WARN, "resolve_failed", LS("target", t->text),
				    LS("message", why),
				    LS("action",
				       t->resolved_once ? "retrying; connections use its last "
							  "addresses meanwhile"
							: "retrying in the background; until it "
							  "resolves, connections to it are refused "
							  "(connect_failed)"));
			t->failing = true;
			continue;
		}
		if (t->failing || !t->resolved_once)
			LOG(t->failing ? LOG_INFO : LOG_DEBUG, "resolved", LS("target", t->text),
			    LN("addresses", (long long)(l->n - before)));
		t->failing = false;
		t->resolved_once = true;
	}
	pthread_mutex_lock(&r->lock);
	old = r->cur;
	for (size_t j = 0; old != NULL && j < l->n; j++)
		for (size_t k = 0; k < old->n; k++)
			if (old->e[k].target == l->e[j].target &&
			    old->e[k].addr.len == l->e[j].addr.len &&
			    memcmp(&old->e[k].addr.sa, &l->e[j].addr.sa, l->e[j].addr.len) == 0) {
				l->e[j].health = old->e[k].health;
				break;
			}
	r->cur = l;
	update_gauges(r, l);
	list_unref(old);
	pthread_mutex_unlock(&r->lock);
}

static bool any_failing(const struct resolver *r)
{
	for (size_t i = 0; i < r->nt; i++)
		if (r->t[i].failing)
			return true;
	return false;
}

static void *run(void *arg)
{
	struct resolver *r = arg;

	pthread_mutex_lock(&r->lock);
	while (!r->stop) {
		long long now = now_ms();
		long long every = r->interval_ms;
		long long due;

		if (any_failing(r) && every > RESOLVER_RETRY_MS)
			every = RESOLVER_RETRY_MS;
		due = r->resolved_at + every;
		if (r->kicked && r->resolved_at + RESOLVER_KICK_MIN_MS < due)
			due = r->resolved_at + RESOLVER_KICK_MIN_MS;
		if (now >= due) {
			r->kicked = false;
			r->resolved_at = now;
			pthread_mutex_unlock(&r->lock);
			resolve_all(r);
			pthread_mutex_lock(&r->lock);
			continue;
		}
		{
			struct timespec ts;
			long long wait = due - now;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += wait / 1000;
			ts.tv_nsec += (wait % 1000) * 1000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_cond_timedwait(&r->cond, &r->lock, &ts);
		}
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

int resolver_start(struct resolver *r)
{
	r->resolved_at = now_ms();
	resolve_all(r);
	if (thread_start(&r->thread, run, r) != 0)
		return -1;
	r->thread_started = true;
	return 0;
}

void resolver_free(struct resolver *r)
{
	if (r == NULL)
		return;
	if (r->thread_started) {
		pthread_mutex_lock(&r->lock);
		r->stop = true;
		pthread_cond_signal(&r->cond);
		pthread_mutex_unlock(&r->lock);
		pthread_join(r->thread, NULL);
	}
	list_unref(r->cur);
	pthread_mutex_destroy(&r->lock);
	pthread_cond_destroy(&r->cond);
	free(r);
}

void resolver_set_lookup(struct resolver *r, resolver_lookup_fn *lookup,
			 void (*release)(struct addrinfo *res))
{
	r->lookup = lookup;
	r->release = release;
}

const char *resolver_describe(const struct resolver *r)
{
	return r->describe;
}

size_t resolver_ntargets(const struct resolver *r)
{
	return r->nt;
}

const char *resolver_target_host(const struct resolver *r, int i)
{
	return i >= 0 && (size_t)i < r->nt ? r->t[i].host : "";
}

bool resolver_has_unix(const struct resolver *r)
{
	for (size_t i = 0; i < r->nt; i++)
		if (r->t[i].is_unix)
			return true;
	return false;
}

/* Under the lock. */
static void kick(struct resolver *r)
{
	if (!r->kicked) {
		r->kicked = true;
		pthread_cond_signal(&r->cond);
	}
}

int resolver_plan(struct resolver *r, struct resolver_plan *p, char *err, size_t len)
{
	struct resolver_health h[RESOLVER_ADDRS_MAX];
	struct resolver_list *l;

	memset(p, 0, sizeof(*p));
	pthread_mutex_lock(&r->lock);
	l = r->cur;
	if (l == NULL || l->n == 0) {
		kick(r);
		pthread_mutex_unlock(&r->lock);
		snprintf(err, len, "%s: no address (%s did not resolve yet; retrying)", r->describe,
			 r->nt == 1 ? "the name" : "the names");
		return -1;
	}
	for (size_t i = 0; i < l->n; i++)
		h[i] = l->e[i].health;
	p->n = (unsigned)resolver_order(h, l->n, now_ms(), p->order, RESOLVER_PLAN_MAX);
	l->refs++;
	p->list = l;
	pthread_mutex_unlock(&r->lock);
	return 0;
}

struct resolver_entry *resolver_plan_next(struct resolver_plan *p)
{
	p->trying = p->list != NULL && p->next < p->n ? &p->list->e[p->order[p->next++]] : NULL;
	return p->trying;
}

/* The health of the address of e in the current list, where the next connections read it:
 * a plan taken before a resolution published a new list holds the old one. e's own if the
 * address is not in the current list. Under the lock. */
static struct resolver_health *live_health(struct resolver *r, struct resolver_plan *p)
{
	struct resolver_list *l = r->cur;
	struct resolver_entry *e = p->trying;

	if (l == NULL || l == p->list)
		return &e->health;
	for (size_t k = 0; k < l->n; k++)
		if (l->e[k].target == e->target && l->e[k].addr.len == e->addr.len &&
		    memcmp(&l->e[k].addr.sa, &e->addr.sa, e->addr.len) == 0)
			return &l->e[k].health;
	return &e->health;
}

void resolver_plan_failed(struct resolver *r, struct resolver_plan *p, const char *why)
{
	struct resolver_entry *e = p->trying;
	struct resolver_health *h;
	long long now = now_ms();
	bool log = false;
	long long backoff;
	char addr[300];

	if (e == NULL)
		return;
	pthread_mutex_lock(&r->lock);
	h = live_health(r, p);
	if (resolver_health_failed(h, now) &&
	    (h->logged_at == 0 || now - h->logged_at >= RESOLVER_LOG_EVERY_MS)) {
		h->logged_at = now;
		h->down_logged = true;
		log = true;
	}
	backoff = h->backoff;
	if (r->m != NULL)
		atomic_fetch_add(&r->m->targets[e->target].connect_failures, 1);
	if (r->cur != NULL)
		update_gauges(r, r->cur);
	kick(r);
	pthread_mutex_unlock(&r->lock);
	if (log) {
		address_format((const struct sockaddr *)&e->addr.sa, e->addr.len, addr,
			       sizeof(addr));
		LOG(LOG_WARN, "target_down", LS("target", r->t[e->target].text),
		    LS("address", addr), LS("message", why), LN("retry_in_ms", backoff),
		    LS("action", "connections go to the other addresses meanwhile"));
	}
}

void resolver_plan_ok(struct resolver *r, struct resolver_plan *p)
{
	struct resolver_entry *e = p->trying;
	struct resolver_health *h;
	bool log = false;
	char addr[300];

	if (e == NULL)
		return;
	pthread_mutex_lock(&r->lock);
	h = live_health(r, p);
	if (h->down) {
		resolver_health_ok(h);
		log = h->down_logged; /* an up line for each down line, no more */
		h->down_logged = false;
		if (r->cur != NULL)
			update_gauges(r, r->cur);
	}
	pthread_mutex_unlock(&r->lock);
	if (log) {
		address_format((const struct sockaddr *)&e->addr.sa, e->addr.len, addr,
			       sizeof(addr));
		LOG(LOG_INFO, "target_up", LS("target", r->t[e->target].text), LS("address", addr));
	}
}

void resolver_plan_done(struct resolver *r, struct resolver_plan *p)
{
	if (p->list == NULL)
		return;
	pthread_mutex_lock(&r->lock);
	list_unref(p->list);
	pthread_mutex_unlock(&r->lock);
	p->list = NULL;
	p->trying = NULL;
	p->n = p->next = 0;
}
