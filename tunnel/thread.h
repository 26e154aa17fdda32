/*
 * The daemons' helper threads (CRL and OCSP fetchers, the renewer): born with every signal
 * blocked, since signals are the main loop's (libev's signalfd sees only signals that every
 * thread blocks).
 */
#ifndef MTLS_TUNNEL_THREAD_H
#define MTLS_TUNNEL_THREAD_H

#include <pthread.h>

/* pthread_create() with all signals blocked in the new thread; the caller's mask is kept,
 * and its log tag (log_tag_set()) is the new thread's. 0, or an errno value. */
int thread_start(pthread_t *thread, void *(*run)(void *), void *arg);

#endif
