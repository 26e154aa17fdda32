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
 */
#ifndef MTLS_TUNNEL_CRLFETCH_H
#define MTLS_TUNNEL_CRLFETCH_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <ev.h>
#include <openssl/x509.h>

#include "metrics.h"

#define CRLFETCH_MAX_BYTES  (16L * 1024 * 1024)
#define CRLFETCH_SKEW	    300 /* seconds a thisUpdate may lie in the future */
#define CRLFETCH_WARN_EVERY 600 /* seconds between repeated crl_fetch_failed lines */
#define CRLFETCH_CONNECT_S  10
#define CRLFETCH_TIMEOUT_S  30

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
/* Fetch every refresh interval on a thread of its own (the first fetch at once), waking
 * wakeup on loop after each new CRL written to the cache. -1 if the thread cannot start. */
int crlfetch_start(struct crlfetch *f, struct ev_loop *loop, ev_async *wakeup);
/* Stop the thread (a transfer under way is aborted) and free. NULL does nothing. */
void crlfetch_free(struct crlfetch *f);

/* The checks a fetched CRL must pass, at time now: it parses (DER, or PEM), is signed by one
 * of cas (whose certificates the caller has verified, or trusts), has a nextUpdate after its
 * thisUpdate, a thisUpdate not more than CRLFETCH_SKEW in the future, and a crlNumber not
 * lower than current's (current may be NULL; a number is required if current has one). The
 * CRL (caller frees) or NULL with a message. */
X509_CRL *crlfetch_verify(const uint8_t *data, size_t len, STACK_OF(X509) * cas,
			  const X509_CRL *current, time_t now, char *err, size_t err_len);

#endif
