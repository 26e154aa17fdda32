/*
 * Worker threads: one libev loop each, accepting on its own SO_REUSEPORT socket (or a shared
 * unix socket) and running the connections it accepted.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"

/* Pauses of accepting when descriptors or kernel memory run out, doubling while it lasts. */
#define ACCEPT_PAUSE_MIN 0.1
#define ACCEPT_PAUSE_MAX 1.6
/* Closed connections (since the last trim) after which freed memory is given back. */
#define TRIM_AFTER_CLOSED 256

/* Out of descriptors (or kernel memory): the pending connection stays in the listen
 * backlog, so the level-triggered watcher would fire again at once, forever, at 100 % CPU.
 * Stop it, and try again after a pause that doubles while the shortage lasts; connections
 * that close meanwhile free descriptors, and the backlog is served then. Shedding the
 * pending connections instead (a reserve descriptor, closed to accept and drop one) would
 * turn a passing shortage into refused clients, and the descriptor it frees can be taken by
 * another worker or the main thread before this one accepts. One line per pause. */
static void accept_pause(struct worker *w, int err)
{
	char msg[200];

	w->accept_pause = w->accept_pause > 0 ? w->accept_pause * 2 : ACCEPT_PAUSE_MIN;
	if (w->accept_pause > ACCEPT_PAUSE_MAX)
		w->accept_pause = ACCEPT_PAUSE_MAX;
	ev_io_stop(w->loop, &w->accept_watcher);
	ev_timer_set(&w->accept_retry, w->accept_pause, 0.0);
	ev_timer_start(w->loop, &w->accept_retry);
	snprintf(msg, sizeof(msg),
		 "%s: accepting paused; raise the descriptor limit (ulimit -n) or lower "
		 "--max-connections",
		 strerror(err));
	LOG(LOG_WARN, "accept_failed", LS("message", msg),
	    LN("retry_ms", (long long)(w->accept_pause * 1000)));
}

static void on_accept_retry(struct ev_loop *loop, ev_timer *t, int events)
{
	struct worker *w = (struct worker *)((char *)t - offsetof(struct worker, accept_retry));

	(void)events;
	if (atomic_load(&w->d->phase) == 0)
		ev_io_start(loop, &w->accept_watcher);
}

static void on_accept(struct ev_loop *loop, ev_io *io, int events)
{
	struct worker *w = (struct worker *)((char *)io - offsetof(struct worker, accept_watcher));
	struct daemon *d = w->d;

	(void)loop;
	(void)events;
	/* a bounded batch per wakeup, so one busy listener does not starve the connections */
	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int one = 1;
		int fd = accept4(w->listen_fd, (struct sockaddr *)&ss, &len,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM)
				accept_pause(w, errno);
			else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				LOG(LOG_WARN, "accept_failed", LS("message", strerror(errno)));
			return;
		}
		w->accept_pause = 0;
		/* the slot is taken before the check, so two workers accepting at once cannot
		 * both see room for one (pump_accept owns it from here) */
		if (atomic_fetch_add(&d->active, 1) >= d->o->max_connections &&
		    d->o->max_connections > 0) {
			char peer[80];

			atomic_fetch_sub(&d->active, 1);
			address_format((struct sockaddr *)&ss, len, peer, sizeof(peer));
			atomic_fetch_add(&d->metrics.connections_refused_limit, 1);
			LOG(LOG_WARN, "conn_refused", LS("peer", peer),
			    LS("reason", "max_connections"), LN("limit", d->o->max_connections));
			close(fd);
			continue;
		}
		if (ss.ss_family != AF_UNIX)
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		pump_accept(w, fd, (struct sockaddr *)&ss, len);
	}
}

static void on_wakeup(struct ev_loop *loop, ev_async *a, int events)
{
	struct worker *w = (struct worker *)((char *)a - offsetof(struct worker, wakeup));
	int phase = atomic_load(&w->d->phase);

	(void)events;
	/* accepting may be paused (accept_retry) or its retry may have seen the phase first:
	 * the listen socket is closed either way */
	if (phase >= 1) {
		ev_io_stop(loop, &w->accept_watcher);
		ev_timer_stop(loop, &w->accept_retry);
		if (w->own_listen_fd && w->listen_fd >= 0) {
			close(w->listen_fd);
			w->listen_fd = -1;
		}
	}
	if (phase >= 2) {
		pump_close_all(w);
		ev_break(loop, EVBREAK_ALL);
		return;
	}
	if (atomic_load(&w->d->trust_gen) != w->trust_seen) {
		w->trust_seen = atomic_load(&w->d->trust_gen);
		pump_recheck(w);
	}
}

static void on_quiet(struct ev_loop *loop, ev_timer *t, int events)
{
	struct worker *w = (struct worker *)((char *)t - offsetof(struct worker, quiet));

	(void)loop;
	(void)events;
	atomic_store(&w->d->metrics.worker_beats[w->id], metrics_beat_clock());
	w->parked_untrimmed += pump_release_quiet(w);
	/* glibc keeps what freed connections held in this thread's arena, so a burst would
	 * leave its peak as the resident size for good: once many are gone, or have given
	 * OpenSSL's state back by parking, ask the main thread to give it back (a trim takes
	 * 40-80 ms with a big heap: not on this loop) */
	if (w->conns_peak - w->n_conns >= TRIM_AFTER_CLOSED ||
	    w->parked_untrimmed >= TRIM_AFTER_CLOSED) {
		atomic_store(&w->d->trim_wanted, true);
		w->conns_peak = w->n_conns;
		w->parked_untrimmed = 0;
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	log_tag_set(w->d->name);
	ev_run(w->loop, 0);
	return NULL;
}

int worker_start(struct worker *w)
{
	w->loop = ev_loop_new(EVFLAG_AUTO);
	if (w->loop == NULL)
		return -1;
	ev_io_init(&w->accept_watcher, on_accept, w->listen_fd, EV_READ);
	ev_io_start(w->loop, &w->accept_watcher);
	ev_init(&w->accept_retry, on_accept_retry);
	pump_worker_init(w);
	ev_async_init(&w->wakeup, on_wakeup);
	ev_async_start(w->loop, &w->wakeup);
	atomic_store(&w->d->metrics.worker_beats[w->id], metrics_beat_clock());
	ev_timer_init(&w->quiet, on_quiet, 1.0, 1.0);
	ev_timer_start(w->loop, &w->quiet);
	return pthread_create(&w->thread, NULL, worker_main, w) == 0 ? 0 : -1;
}

void worker_wake(struct worker *w)
{
	ev_async_send(w->loop, &w->wakeup);
}

void worker_recheck_all(struct daemon *d)
{
	atomic_fetch_add(&d->trust_gen, 1);
	for (int i = 0; i < d->nworkers; i++)
		if (d->workers[i].loop != NULL)
			worker_wake(&d->workers[i]);
}
