/*
 * Held GET /crl requests (crlwait.h).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <microhttpd.h>

#include "crlwait.h"

struct crlwait {
	pthread_mutex_t mu;
	struct crlwait_entry *head;
	size_t n;
	size_t unanswered; /* requests held once, not completed yet */
	bool stopping;
};

void crlwait_key(const struct sockaddr *sa, char *out, size_t len)
{
	out[0] = '\0';
	if (sa != NULL && sa->sa_family == AF_INET6) {
		const struct in6_addr *a6 =
			&((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
		struct in6_addr prefix;
		char text[INET6_ADDRSTRLEN];

		if (IN6_IS_ADDR_V4MAPPED(a6)) {
			inet_ntop(AF_INET, &a6->s6_addr[12], out, (socklen_t)len);
			return;
		}
		memset(&prefix, 0, sizeof(prefix));
		memcpy(prefix.s6_addr, a6->s6_addr, 8);
		if (inet_ntop(AF_INET6, &prefix, text, sizeof(text)) != NULL)
			snprintf(out, len, "%s/64", text);
	} else if (sa != NULL && sa->sa_family == AF_INET) {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out,
			  (socklen_t)len);
	}
}

struct crlwait *crlwait_new(void)
{
	struct crlwait *w = calloc(1, sizeof(*w));

	if (w != NULL)
		pthread_mutex_init(&w->mu, NULL);
	return w;
}

void crlwait_free(struct crlwait *w)
{
	if (w == NULL)
		return;
	pthread_mutex_destroy(&w->mu);
	free(w);
}

long long crlwait_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void unlist(struct crlwait *w, struct crlwait_entry *e)
{
	if (e->prev != NULL)
		e->prev->next = e->next;
	else
		w->head = e->next;
	if (e->next != NULL)
		e->next->prev = e->prev;
	e->prev = e->next = NULL;
	e->listed = false;
	w->n--;
}

int crlwait_hold(struct crlwait *w, struct crlwait_entry *e, struct MHD_Connection *conn)
{
	size_t same = 0;

	pthread_mutex_lock(&w->mu);
	for (const struct crlwait_entry *x = w->head; x != NULL; x = x->next)
		same += strcmp(x->ip, e->ip) == 0;
	if (w->stopping || e->listed || w->n >= CRLWAIT_MAX || same >= CRLWAIT_PER_IP) {
		bool stopping = w->stopping;

		pthread_mutex_unlock(&w->mu);
		return stopping ? 1 : -1;
	}
	e->conn = conn;
	e->listed = true;
	if (!e->counted)
		w->unanswered++;
	e->counted = true;
	e->prev = NULL;
	e->next = w->head;
	if (w->head != NULL)
		w->head->prev = e;
	w->head = e;
	w->n++;
	/* under the mutex: a wake that takes it next finds the connection suspended */
	MHD_suspend_connection(conn);
	pthread_mutex_unlock(&w->mu);
	return 0;
}

/* Resume and unlist every entry (all) or those past now_ms. */
static void resume(struct crlwait *w, bool all, long long now_ms)
{
	struct crlwait_entry *e, *next;

	for (e = w->head; e != NULL; e = next) {
		next = e->next;
		if (all || e->deadline_ms <= now_ms) {
			struct MHD_Connection *conn = e->conn;

			unlist(w, e);
			MHD_resume_connection(conn);
		}
	}
}

void crlwait_wake(struct crlwait *w)
{
	if (w == NULL)
		return;
	pthread_mutex_lock(&w->mu);
	resume(w, true, 0);
	pthread_mutex_unlock(&w->mu);
}

void crlwait_expire(struct crlwait *w, long long now_ms)
{
	if (w == NULL)
		return;
	pthread_mutex_lock(&w->mu);
	resume(w, false, now_ms);
	pthread_mutex_unlock(&w->mu);
}

void crlwait_stop(struct crlwait *w)
{
	if (w == NULL)
		return;
	pthread_mutex_lock(&w->mu);
	w->stopping = true;
	resume(w, true, 0);
	pthread_mutex_unlock(&w->mu);
}

void crlwait_forget(struct crlwait *w, struct crlwait_entry *e)
{
	if (w == NULL || e == NULL)
		return;
	pthread_mutex_lock(&w->mu);
	if (e->listed)
		unlist(w, e);
	if (e->counted)
		w->unanswered--;
	e->counted = false;
	pthread_mutex_unlock(&w->mu);
}

bool crlwait_drained(struct crlwait *w, int ms)
{
	struct timespec pause = {0, 10 * 1000 * 1000};
	bool done = false;

	if (w == NULL)
		return true;
	for (int waited = 0;; waited += 10) {
		pthread_mutex_lock(&w->mu);
		done = w->unanswered == 0;
		pthread_mutex_unlock(&w->mu);
		if (done || waited >= ms)
			return done;
		nanosleep(&pause, NULL);
	}
}

size_t crlwait_held(struct crlwait *w)
{
	size_t n;

	pthread_mutex_lock(&w->mu);
	n = w->n;
	pthread_mutex_unlock(&w->mu);
	return n;
}
