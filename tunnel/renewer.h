/*
 * --ca-url: the daemon's own certificate renewed at the CA service (mtls ca serve) by a
 * thread of its own, and the CA's root bundle kept fresh, so that neither needs a hand.
 *
 * The thread sleeps until the certificate in service is due (renewal_schedule(): ⅔ of its
 * life with jitter), renews it (renewal_renew(): a new key of the same type, or
 * --renew-key-type; chain and key replaced as one change) and wakes the main loop (ev_async),
 * which runs the all-or-nothing reload (trigger "renewal") and tells the thread what is in
 * service now (renewer_loaded()); the next renewal is scheduled from that. A failed renewal
 * is retried with backoff (renewal_backoff()), logged (renewal_failed, warn) and counted;
 * the current certificate stays in service. From the last sixth of its life (at most a
 * day) on, cert_expiring is logged at error level, at most every RENEWER_WARN_EVERY seconds
 * (less for short lives).
 *
 * The roots: at start, every roots_every seconds (--ca-refresh) and after each renewal,
 * renewal_refresh_roots() (only roots, only if they verify the own chain, only a --ca file
 * that is the CA's alone); a replaced --ca wakes the main loop as a renewal does.
 *
 * The thread runs as the daemon does after --user: the files are written as that user.
 * Nothing it logs holds key material.
 */
#ifndef MTLS_TUNNEL_RENEWER_H
#define MTLS_TUNNEL_RENEWER_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <ev.h>

#include "metrics.h"
#include "mtls.h"

#define RENEWER_ROOTS_EVERY 3600 /* seconds between root refreshes, by default */
#define RENEWER_WARN_EVERY  600	 /* seconds between cert_expiring lines, at most */
#define RENEWER_STAPLE_WAIT 30	 /* seconds a renewed certificate waits for its staple */

struct renewer;

/* A renewer of cert and key at the CA's API URL (https://HOST:PORT), the server verified
 * against ca, whose roots it refreshes every roots_every seconds (0: never). key_type: of
 * the new keys (NULL: the type of the current key). NULL with a message. */
struct renewer *renewer_new(const char *url, const char *cert, const char *key, const char *ca,
			    const char *key_type, long long roots_every, struct metrics *m,
			    char *err, size_t len);
/* A server that staples its own certificate (--ocsp-staple, or a must-staple one): after
 * each renewal the thread fetches the new certificate's OCSP answer (from ocsp_url if not
 * NULL, else the responder the certificate names) before it wakes the main loop, waiting at
 * most RENEWER_STAPLE_WAIT seconds, and renewer_loaded() hands it to endpoint as soon as
 * the reload has swapped the certificate in: the server is not without a staple for the OCSP
 * thread's fetch after the reload. Before renewer_start(). -1 if out of memory. */
int renewer_set_staple(struct renewer *r, struct mtls *endpoint, const char *ocsp_url);
/* The staple fetched for a renewed certificate, if one is waiting, given to the config the
 * reload builds (mtls_config_set_ocsp_staple_answer()): the endpoint then staples the new
 * certificate from its first handshake; the library drops it if the config's certificate is
 * another. Main thread. */
void renewer_staple_config(struct renewer *r, struct mtls_config *cfg);
/* The certificate in service now (main thread: at start, and after every successful reload):
 * the file cert's leaf, if it is the one in service (its notAfter is not_after); else
 * nothing changes (a reload of the file that follows says so again). A new certificate is
 * scheduled afresh. */
void renewer_loaded(struct renewer *r, time_t not_after);
/* At start, before the credentials are read: a renewal of cert and key that a crash cut
 * short is finished or taken back, and what it left beside both files removed (an old key's
 * second name among them); then can the certificate in the file cert renew itself
 * (renewal_leaf_can_renew())? 0, or -1 with a message for --ca-url. */
int renewer_check(const char *cert, const char *key, char *err, size_t len);
/* What the thread woke the main loop for, for the reload's log line ("renewal" or
 * "roots_refresh"); cleared. Main thread. */
const char *renewer_trigger(struct renewer *r);
/* Start the thread, which wakes wakeup on loop after it replaced files. -1 if it cannot. */
int renewer_start(struct renewer *r, struct ev_loop *loop, ev_async *wakeup);
/* Stop the thread (a transfer under way is aborted) and free. NULL does nothing. */
void renewer_free(struct renewer *r);

#endif
