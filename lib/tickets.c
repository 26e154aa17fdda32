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
 * A session whose server certificate has expired is never offered: resuming it would be
 * refused (the resumed handshake judges the certificate the session holds), where a full
 * handshake gets the server's current one. A server that renews its certificate every few
 * hours makes this the common case, not an edge. Nor is one whose certificate expires in the
 * current second (TICKETS_EXPIRY_MARGIN): a handshake begun then is judged in the next one,
 * when the certificate has expired (seen under continuous traffic through a server renewing
 * every 40 s, test_tunnel_renewal).
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

/* The session's server certificate is past its notAfter, or reaches it within
 * TICKETS_EXPIRY_MARGIN. */
static bool peer_expired(SSL_SESSION *session, time_t now)
{
	X509 *peer = SSL_SESSION_get0_peer(session);

	return peer != NULL &&
	       ASN1_TIME_cmp_time_t(X509_get0_notAfter(peer), now + TICKETS_EXPIRY_MARGIN) < 0;
}

SSL_SESSION *tickets_take(struct tickets *t, const char *name)
{
	SSL_SESSION *session = NULL;
	time_t now = time(NULL);

	pthread_mutex_lock(&t->lock);
	for (int i = t->n - 1; i >= 0; i--) {
		if (strcmp(t->slot[i].name, name) != 0)
			continue;
		if (peer_expired(t->slot[i].session, now)) {
			drop(t, i); /* of no use to anyone: a full handshake instead */
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
