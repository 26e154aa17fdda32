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
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				LOG(LOG_WARN, "accept_failed", LS("message", strerror(errno)));
			return;
		}
		if (d->o->max_connections > 0 && atomic_load(&d->active) >= d->o->max_connections) {
			char peer[80];

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
	if (phase >= 1 && ev_is_active(&w->accept_watcher)) {
		ev_io_stop(loop, &w->accept_watcher);
		if (w->own_listen_fd) {
			close(w->listen_fd);
			w->listen_fd = -1;
		}
	}
	if (phase >= 2) {
		pump_close_all(w);
		ev_break(loop, EVBREAK_ALL);
	}
}

static void on_quiet(struct ev_loop *loop, ev_timer *t, int events)
{
	struct worker *w = (struct worker *)((char *)t - offsetof(struct worker, quiet));

	(void)events;
	atomic_store(&w->d->metrics.worker_beats[w->id], (long long)ev_now(loop));
	pump_release_quiet(w);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

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
	ev_async_init(&w->wakeup, on_wakeup);
	ev_async_start(w->loop, &w->wakeup);
	atomic_store(&w->d->metrics.worker_beats[w->id], (long long)ev_now(w->loop));
	ev_timer_init(&w->quiet, on_quiet, 1.0, 1.0);
	ev_timer_start(w->loop, &w->quiet);
	return pthread_create(&w->thread, NULL, worker_main, w) == 0 ? 0 : -1;
}

void worker_wake(struct worker *w)
{
	ev_async_send(w->loop, &w->wakeup);
}
