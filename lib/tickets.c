/*
 * The client's resumable sessions: a few of the newest, each used once.
 *
 * A TLS 1.3 ticket is meant for one connection (RFC 8446, C.4), and an mtls server takes a
 * ticket out of its store when it is used. A client that kept only its newest ticket would
 * offer it on every connection it opens at once, and all but one would fall back to a full
 * handshake; so each new connection takes a ticket of its own, and every ticket received
 * (one per handshake) goes back on the stack. After a burst of N parallel connections the
 * stack holds N tickets again, up to TICKETS_MAX.
 *
 * A resumed session is judged again, the server's certificate included, and refused once
 * that certificate has expired; a ticket carries the certificate of the full handshake it
 * descends from, however often it was renewed since. A server that renews its certificate
 * (mtls server --ca-url) keeps the old one in its clients' tickets until it expires, so a
 * ticket whose certificate expires within TICKETS_EXPIRY_MARGIN seconds is dropped, not
 * offered: the connection makes a full handshake and meets the current certificate.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

void tickets_init(struct tickets *t)
{
	memset(t, 0, sizeof(*t));
	pthread_mutex_init(&t->lock, NULL);
}

void tickets_clear(struct tickets *t)
{
	for (int i = 0; i < t->n; i++) {
		SSL_SESSION_free(t->slot[i].session);
		free(t->slot[i].name);
	}
	t->n = 0;
	pthread_mutex_destroy(&t->lock);
}

static void drop(struct tickets *t, int i)
{
	SSL_SESSION_free(t->slot[i].session);
	free(t->slot[i].name);
	memmove(&t->slot[i], &t->slot[i + 1], (size_t)(t->n - i - 1) * sizeof(t->slot[0]));
	t->n--;
}

bool tickets_put(struct tickets *t, SSL_SESSION *session, const char *name)
{
	char *copy = strdup(name);

	if (copy == NULL)
		return false;
	pthread_mutex_lock(&t->lock);
	if (t->n == TICKETS_MAX)
		drop(t, 0); /* the oldest */
	t->slot[t->n].session = session;
	t->slot[t->n].name = copy;
	t->n++;
	pthread_mutex_unlock(&t->lock);
	return true;
}

/* Would resuming s be refused for an expired server certificate (or nearly so)? */
static bool outlived(SSL_SESSION *s, time_t now)
{
	X509 *peer = SSL_SESSION_get0_peer(s);
	time_t limit = now + TICKETS_EXPIRY_MARGIN;

	/* X509_cmp_time: -1 if at or before limit, 0 on error */
	return peer == NULL || X509_cmp_time(X509_get0_notAfter(peer), &limit) <= 0;
}

SSL_SESSION *tickets_take(struct tickets *t, const char *name)
{
	SSL_SESSION *session = NULL;
	time_t now = time(NULL);

	pthread_mutex_lock(&t->lock);
	for (int i = t->n - 1; i >= 0; i--) {
		if (strcmp(t->slot[i].name, name) != 0)
			continue;
		if (outlived(t->slot[i].session, now)) {
			drop(t, i);
			continue;
		}
		session = t->slot[i].session;
		t->slot[i].session = NULL; /* ours now; drop() frees only the name */
		drop(t, i);
		break;
	}
	pthread_mutex_unlock(&t->lock);
	return session;
}
