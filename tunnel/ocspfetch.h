/*
 * OCSP for the daemons: a thread that fetches the answers the endpoint asks for, libmtls's
 * OCSP jobs (mtls.h): the status of peers' certificates (--ocsp soft-fail / hard-fail) and
 * a server's own staple (--ocsp-staple, or a must-staple certificate). Each job is one HTTP
 * POST (application/ocsp-request) to its responder, with timeouts and a bounded answer;
 * the answer goes back to the endpoint, which verifies it (signed by the certificate's
 * issuer or its delegated responder, about that certificate, within its times) and keeps
 * it. Handshakes never wait for it: the library decides by mode meanwhile.
 *
 * When an answer about a peer turns to revoked (or unknown), the main loop is woken
 * (ev_async) to re-judge every live connection (worker_recheck_all): in soft-fail, a client
 * let in before its answer came is closed then (revoked_while_connected).
 *
 * A failed fetch is counted (mtls_ocsp_requests_total{result="error"}) and logged
 * (ocsp_fetch_failed: at the first failure after a success, when the reason changes, then
 * at most every OCSPFETCH_WARN_EVERY seconds); the endpoint retries it after a pause that
 * doubles up to a minute.
 */
#ifndef MTLS_TUNNEL_OCSPFETCH_H
#define MTLS_TUNNEL_OCSPFETCH_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "metrics.h"
#include "mtls.h"

#define OCSPFETCH_MAX_BYTES  (64L * 1024) /* an answer (as libmtls's OCSP_RESPONSE_MAX) */
#define OCSPFETCH_CONNECT_S  5
#define OCSPFETCH_TIMEOUT_S  10
#define OCSPFETCH_WARN_EVERY 600 /* seconds between repeated ocsp_fetch_failed lines */
#define OCSPFETCH_IDLE_S     60	 /* the longest sleep between two looks at the jobs */

struct ocspfetch;

/* A fetcher for endpoint (which must outlive it); it becomes the endpoint's OCSP notify
 * callback. NULL with a message. */
struct ocspfetch *ocspfetch_new(struct mtls *endpoint, struct metrics *m, char *err, size_t len);
/* Start the thread; recheck on loop is sent when live connections must be judged again.
 * -1 if the thread cannot start. */
int ocspfetch_start(struct ocspfetch *f, struct ev_loop *loop, ev_async *recheck);
/* Stop the thread (a transfer under way is aborted) and free. NULL does nothing. */
void ocspfetch_free(struct ocspfetch *f);
/* One POST of an OCSP request (DER) to url, as a job's (timeouts, bounded answer; aborted
 * when stop, if not NULL, turns true): the answer's bytes, unchecked (malloc'd, *len), or
 * NULL and why. For the renewal thread's early fetch of a new certificate's staple. */
uint8_t *ocspfetch_once(const char *url, const uint8_t *req, size_t req_len,
			const atomic_bool *stop, size_t *len, char *why, size_t why_len);

#endif
