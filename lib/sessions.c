/*
 * The server's resumable sessions, kept in the server (stateful resumption: TLS 1.3 tickets
 * and TLS 1.2 session IDs are random identifiers of an entry here).
 *
 * Why not stateless tickets: OpenSSL 3.0 encodes a session into every ticket it issues and
 * decodes it again to clean it, and decodes it once more when the ticket comes back; each
 * decode parses the peer's certificate through the provider decoders, which costs more than
 * the handshake's signatures. Here a ticket is 32 random bytes, resumption is a lookup, and
 * nothing leaves the server that a stolen ticket key could open.
 *
 * One store serves all the states of an endpoint while the trust anchors and chain rules
 * stay the same (a reload of a certificate, key, CRL or allow rules keeps it); a change of
 * CA bundle, verify depth or chain CRL checks starts an empty one. Every resumption is
 * decided again against the current state by the same code as a full handshake
 * (verify_resumed(): the path rebuilt from the session's certificates and the current trust
 * store, validity, revocation of the whole path, allow rules), so a session never outlives
 * a revocation, even of an intermediate the peer did not send. The table is direct-mapped
 * and bounded: a new session replaces the one in its slot, and a lookup drops a session past
 * its lifetime. Tickets are single-use: a lookup takes the session out (its reference goes
 * to OpenSSL), the resumed handshake issues a fresh one. Each kept session holds the peer's decoded
 * certificates: about 9 KiB with OpenSSL 3.0.
 *
 * The CA certificates a peer sends with its own (its intermediates) are the same for most
 * peers, yet every handshake decodes its own copy, and a full verification caches its
 * extensions on it: about 4-6 KiB per connection and per kept session. A new session's copies
 * are therefore swapped for the store's one object of identical bytes (SHARED_ISSUERS of them,
 * the first seen), before the session is published. Resumption still rebuilds and judges
 * the path from these certificates, which are byte for byte the ones the peer sent.
 * A server that keeps no sessions (--session-cache 0, no tickets) still has a store of no
 * slots for these copies: its connections are swapped to them when the handshake completes
 * (sessions_share_unkept()), else each idle connection held some 5 KiB more than with a cache.
 * A connection that ends without close_notify does not make its session unusable (RFC 8446
 * dropped that rule), so OpenSSL's removals are not honoured: there is no remove callback.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/x509v3.h>

#include "internal.h"

#define SHARED_ISSUERS 16

struct sessions {
	atomic_int refs;
	pthread_mutex_t lock;
	uint8_t trust[32];
	size_t slots;
	SSL_SESSION **table; /* allocated on the first insert */
	/* CA certificates sent by peers, referenced, warmed (read-only from then on) */
	X509 *issuers[SHARED_ISSUERS];
	int nissuers;
};

struct sessions *sessions_new(size_t slots, const uint8_t trust[32])
{
	struct sessions *s;

	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return NULL;
	atomic_init(&s->refs, 1);
	pthread_mutex_init(&s->lock, NULL);
	memcpy(s->trust, trust, sizeof(s->trust));
	s->slots = slots;
	return s;
}

struct sessions *sessions_ref(struct sessions *s)
{
	atomic_fetch_add(&s->refs, 1);
	return s;
}

void sessions_unref(struct sessions *s)
{
	if (s == NULL || atomic_fetch_sub(&s->refs, 1) != 1)
		return;
	if (s->table != NULL)
		for (size_t i = 0; i < s->slots; i++)
			SSL_SESSION_free(s->table[i]);
	for (int i = 0; i < s->nissuers; i++)
		X509_free(s->issuers[i]);
	free(s->table);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

bool sessions_fit(const struct sessions *s, const uint8_t trust[32], size_t slots)
{
	return s->slots == slots && memcmp(s->trust, trust, sizeof(s->trust)) == 0;
}

bool sessions_kept(const struct sessions *s)
{
	return s->slots > 0;
}

static size_t slot_of(const struct sessions *s, const unsigned char *id, unsigned len)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a: the IDs are random already */

	for (unsigned i = 0; i < len; i++)
		h = (h ^ id[i]) * 1099511628211ull;
	return (size_t)(h % s->slots);
}

static struct sessions *sessions_of_ctx(SSL_CTX *ctx)
{
	struct state *st = SSL_CTX_get_app_data(ctx);

	return st != NULL ? st->sessions : NULL;
}

/* The store's object for cert: an earlier one of identical bytes, or cert itself, kept for
 * later sessions if there is room; NULL if neither. Called with the lock held. */
static X509 *shared_issuer(struct sessions *s, X509 *cert)
{
	for (int i = 0; i < s->nissuers; i++)
		if (s->issuers[i] == cert || X509_cmp(s->issuers[i], cert) == 0)
			return s->issuers[i];
	if (s->nissuers == SHARED_ISSUERS || !X509_check_ca(cert))
		return NULL;
	/* its extension cache is filled now, while only this thread sees it: threads that
	 * share it later only read it */
	X509_check_purpose(cert, -1, 0);
	if (!X509_up_ref(cert))
		return NULL;
	s->issuers[s->nissuers++] = cert;
	return cert;
}

static void share_chain(struct sessions *s, STACK_OF(X509) * chain)
{
	for (int i = 0; i < sk_X509_num(chain); i++) {
		X509 *cert = sk_X509_value(chain, i);
		X509 *shared = shared_issuer(s, cert);

		if (shared == NULL || shared == cert || !X509_up_ref(shared))
			continue;
		sk_X509_set(chain, i, shared);
		X509_free(cert);
	}
}

/* The connection's certificates of the client's CAs, swapped for the store's shared copies:
 * those of its session (OpenSSL's peer chain of a server holds no leaf), which no other
 * thread can see yet, and those of the path the handshake verified (kept by the SSL). */
static void share_issuers(struct sessions *s, SSL *ssl, SSL_SESSION *sess)
{
	if (SSL_get_session(ssl) == sess)
		share_chain(s, SSL_get_peer_cert_chain(ssl));
	share_chain(s, SSL_get0_verified_chain(ssl));
}

/* OpenSSL hands us a reference to a new session; we keep it (return 1) or not (0). */
static int on_new(SSL *ssl, SSL_SESSION *sess)
{
	struct sessions *s = sessions_of_ctx(SSL_get_SSL_CTX(ssl));
	SSL_SESSION *old = NULL;
	unsigned len = 0;
	const unsigned char *id = SSL_SESSION_get_id(sess, &len);
	int kept = 0;

	if (s == NULL || len == 0)
		return 0;
	pthread_mutex_lock(&s->lock);
	share_issuers(s, ssl, sess);
	if (s->table == NULL)
		s->table = calloc(s->slots, sizeof(*s->table));
	if (s->table != NULL) {
		size_t i = slot_of(s, id, len);

		old = s->table[i];
		s->table[i] = sess;
		kept = 1;
	}
	pthread_mutex_unlock(&s->lock);
	SSL_SESSION_free(old);
	return kept;
}

static SSL_SESSION *on_get(SSL *ssl, const unsigned char *id, int len, int *copy)
{
	struct sessions *s = sessions_of_ctx(SSL_get_SSL_CTX(ssl));
	SSL_SESSION *found = NULL, *expired = NULL;

	*copy = 0; /* the reference we return (the table's) is the caller's */
	if (s == NULL || len <= 0)
		return NULL;
	pthread_mutex_lock(&s->lock);
	if (s->table != NULL) {
		size_t i = slot_of(s, id, (unsigned)len);
		SSL_SESSION *cand = s->table[i];
		unsigned clen = 0;
		const unsigned char *cid = cand != NULL ? SSL_SESSION_get_id(cand, &clen) : NULL;

		if (cid != NULL && clen == (unsigned)len && memcmp(cid, id, clen) == 0) {
			if (time(NULL) - SSL_SESSION_get_time(cand) >
			    SSL_SESSION_get_timeout(cand)) {
				expired = cand; /* past its lifetime: drop it */
				s->table[i] = NULL;
			} else {
				/* single use (RFC 8446, 8.1): the client gets a new ticket with
				 * this handshake, and a stale session holds no slot */
				found = cand;
				s->table[i] = NULL;
			}
		}
	}
	pthread_mutex_unlock(&s->lock);
	SSL_SESSION_free(expired);
	return found;
}

void sessions_share_unkept(struct sessions *s, SSL *ssl)
{
	/* a kept session was shared by on_new() before it was published; sharing it now would
	 * change a session other threads may already resume */
	if (s == NULL || s->slots > 0 || SSL_session_reused(ssl))
		return;
	pthread_mutex_lock(&s->lock);
	share_issuers(s, ssl, SSL_get_session(ssl));
	pthread_mutex_unlock(&s->lock);
}

void sessions_attach(SSL_CTX *ctx)
{
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL);
	SSL_CTX_sess_set_new_cb(ctx, on_new);
	SSL_CTX_sess_set_get_cb(ctx, on_get);
}
