/*
 * The CRL's push channel: long polls of GET /crl, on the plain-HTTP port and on the API's
 * (where a daemon whose --crl-url is the API's https URL asks; held there for less than
 * --idle-timeout, which the TLS front enforces).
 *
 * A request that carries the current CRL's ETag in If-None-Match and "Prefer: wait=N" (RFC
 * 7240) is held: routes.c suspends it in libmicrohttpd and lists it here, until the CRL
 * changes (crlwait_wake(), from publish_refresh_crl(): a revocation through the API at once,
 * a local `mtls ca revoke` at the main loop's next second) or N seconds pass (at most
 * CRLWAIT_MAX_SECONDS; crlwait_expire() from the main loop, every second). Resumed, the
 * request is answered as any GET /crl: 200 with the new CRL, or 304, with
 * "Preference-Applied: wait=N" so that the client knows it was held.
 *
 * Bounded: at most CRLWAIT_MAX requests held at once, CRLWAIT_PER_IP from one address (an
 * IPv6 address's /64: one host commonly owns a whole /64, crlwait_key()); past
 * that a request is answered at once as a plain GET (no Preference-Applied: the client falls
 * back to polling). The plain port's connection limits are raised by as much, so held
 * requests never take the room other clients need; the API's (front.c's --max-connections,
 * --per-ip) are not: a held request there counts as one of its connections.
 *
 * Locking: w's own mutex. crlwait_hold() is called under serve.lock (which crlwait_wake()'s
 * callers hold too), so a CRL published between the ETag check and the hold still wakes it.
 */
#ifndef MTLS_CASERVE_CRLWAIT_H
#define MTLS_CASERVE_CRLWAIT_H

#include <stdbool.h>
#include <stddef.h>

#define CRLWAIT_MAX	    256
#define CRLWAIT_PER_IP	    64
#define CRLWAIT_MAX_SECONDS 300

struct MHD_Connection;
struct crlwait;
struct sockaddr;

/* One held request, kept in its request state (routes.c); listed while suspended. */
struct crlwait_entry {
	struct MHD_Connection *conn;
	long long deadline_ms; /* crlwait_now_ms() */
	char ip[48];	       /* the address it counts against: crlwait_key() */
	bool listed;
	bool counted; /* among the unanswered (held once, not completed) */
	struct crlwait_entry *prev, *next;
};

/* The address a request from sa counts against for CRLWAIT_PER_IP: an IPv4 address as is
 * ("192.0.2.1", an IPv4-mapped IPv6 one too), an IPv6 one as its /64 ("2001:db8:1:2::/64").
 * "" for another family or NULL. out: at least 48 bytes. */
void crlwait_key(const struct sockaddr *sa, char *out, size_t len);

struct crlwait *crlwait_new(void);
/* After crlwait_stop() and the daemon's stop. NULL does nothing. */
void crlwait_free(struct crlwait *w);
/* The monotonic clock of the deadlines, in milliseconds. */
long long crlwait_now_ms(void);
/* Hold conn (suspend it, from within its access handler) until woken or e->deadline_ms, e
 * being filled by the caller (ip, deadline). 0 held, -1 not (the bounds are reached, or the
 * service stops): answer at once. */
int crlwait_hold(struct crlwait *w, struct crlwait_entry *e, struct MHD_Connection *conn);
/* The CRL changed: resume every held request. NULL does nothing. */
void crlwait_wake(struct crlwait *w);
/* Resume the held requests whose deadline is past at now_ms. */
void crlwait_expire(struct crlwait *w, long long now_ms);
/* The service stops: resume every held request, hold none from now on. NULL does nothing. */
void crlwait_stop(struct crlwait *w);
/* After crlwait_stop(): wait (at most ms) until every request held once is answered, so that
 * stopping the daemon does not cut them off. true if they were. */
bool crlwait_drained(struct crlwait *w, int ms);
/* The request of e ends (libmicrohttpd completed it): unlisted if it still is. */
void crlwait_forget(struct crlwait *w, struct crlwait_entry *e);
/* How many requests are held now. */
size_t crlwait_held(struct crlwait *w);

#endif
