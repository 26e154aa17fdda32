/*
 * --crl-url: a CRL fetched over HTTP in the background, verified, and kept in a cache file
 * that is one of the daemon's CRL files, so the daemon's all-or-nothing reload applies it.
 *
 * One thread per daemon fetches every refresh interval with If-None-Match /
 * If-Modified-Since (304: unchanged), at most CRLFETCH_MAX_BYTES, with timeouts. A CRL
 * (DER or PEM) replaces the cached one only if crlfetch_verify() accepts it; then the cache
 * file is replaced atomically and the main loop is woken (ev_async) to reload. A failed
 * fetch keeps the last good CRL, counts an error and logs crl_fetch_failed (the first
 * failure of a streak, then at most every CRLFETCH_WARN_EVERY seconds): an unreachable CRL
 * server is not an outage (the cached CRL stays in force until its nextUpdate plus
 * --crl-grace), nor a silent pass.
 *
 * The push channel (crlfetch_set_push(), on by default in the daemons): each request also
 * asks "Prefer: wait=N" (RFC 7240; N the refresh interval, at most CRLFETCH_PUSH_WAIT_S). A
 * server that can (mtls ca serve, caserve/crlwait.h) holds it while the CRL is the one named
 * by If-None-Match and answers as soon as a new one is published, with "Preference-Applied:
 * wait=N"; the next request then goes out at once, so a new CRL arrives within about a
 * second of its publication. The first request, and the first after a failure, is a probe:
 * without If-None-Match, so that it is answered at once and its Preference-Applied (or none)
 * tells at once whether the server holds requests. A plain server answers at once, without
 * Preference-Applied: the refresh interval is waited, as without push. A request that brings
 * nothing new is never followed by the next within CRLFETCH_PUSH_GAP_MS, whatever the server says.
 * When a held request fails (the CA service is down), that is logged once (crl_push_lost) and the
 * fetcher polls, retrying after 1 s, 2 s, ... up to CRLFETCH_RETRY_MAX_MS (or the refresh
 * interval if shorter); once a request is held again, crl_push_started.
 *
 * An https URL's server is verified by the --ca bundle (the CA service's API certificate is
 * the CA's), not the system's trust store.
 */
#ifndef MTLS_TUNNEL_CRLFETCH_H
#define MTLS_TUNNEL_CRLFETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include <ev.h>
#include <openssl/x509.h>

#include "metrics.h"

#define CRLFETCH_MAX_BYTES    (16L * 1024 * 1024)
#define CRLFETCH_SKEW	      300 /* seconds a thisUpdate may lie in the future */
#define CRLFETCH_WARN_EVERY   600 /* seconds between repeated crl_fetch_failed lines */
#define CRLFETCH_CONNECT_S    10
#define CRLFETCH_TIMEOUT_S    30
#define CRLFETCH_PUSH_WAIT_S  55 /* below the 60 s idle limit of common proxies */
#define CRLFETCH_PUSH_GAP_MS  1000
#define CRLFETCH_RETRY_MIN_MS 1000
#define CRLFETCH_RETRY_MAX_MS 60000

struct crlfetch;

/* A fetcher of url into the PEM file cache, verified against the CA certificates of the
 * bundle ca and of the own chain file chain (may be NULL: its certificates after the first).
 * The cache file's CRL, if any, is the current one. NULL with a message. */
struct crlfetch *crlfetch_new(const char *url, const char *ca, const char *chain, const char *cache,
			      long long refresh_ms, struct metrics *m, char *err, size_t len);
/* One fetch now, on the calling thread: 0 if the cache file now holds a good CRL (fetched, or
 * already there and the URL unchanged), -1 with a message. For the start, before the cache
 * file exists. */
int crlfetch_once(struct crlfetch *f, char *err, size_t len);
/* Before crlfetch_start(): ask for long polls (the push channel; off unless set). */
void crlfetch_set_push(struct crlfetch *f, bool on);
/* Before the first fetch: give the cache file to uid:gid when written as root (--user: the
 * daemon replaces it after dropping privileges). Default -1, -1: left as written. */
void crlfetch_set_owner(struct crlfetch *f, uid_t uid, gid_t gid);
/* --crl-grace, for the crl_stale line (a failing fetch with the cached CRL expired). */
void crlfetch_set_grace(struct crlfetch *f, long long seconds);
/* Fetch every refresh interval on a thread of its own (the first fetch at once), waking
 * wakeup on loop after each new CRL written to the cache. -1 if the thread cannot start. */
int crlfetch_start(struct crlfetch *f, struct ev_loop *loop, ev_async *wakeup);
/* Stop the thread (a transfer under way is aborted) and free. NULL does nothing. */
void crlfetch_free(struct crlfetch *f);

/* The first http(s) URI (printable, shorter than len) of x's CRL distribution points
 * (fullName) into out; false if there is none. */
bool crlfetch_cdp_url(X509 *x, char *out, size_t len);
/* --crl-url auto: the first http(s) URL of the CRL distribution points of the own leaf (the
 * first certificate of chain, may be NULL), which names the CRL of the CA that issued it,
 * the CA of its peers too; else of the certificates of the bundle ca (a CA certificate's
 * names its issuer's CRL). 0 with the URL in out, or -1 with a message (none carries one). */
int crlfetch_auto_url(const char *chain, const char *ca, char *out, size_t len, char *err,
		      size_t err_len);

/* The checks a fetched CRL must pass, at time now: it parses (DER, or PEM), is signed by one
 * of cas (whose certificates the caller has verified, or trusts), has a nextUpdate after its
 * thisUpdate, a thisUpdate not more than CRLFETCH_SKEW in the future, and a crlNumber not
 * lower than current's (current may be NULL; a number is required if current has one). The
 * CRL (caller frees) or NULL with a message. */
X509_CRL *crlfetch_verify(const uint8_t *data, size_t len, STACK_OF(X509) * cas,
			  const X509_CRL *current, time_t now, char *err, size_t err_len);

#endif
