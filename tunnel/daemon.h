/*
 * State shared by the daemon's main thread (signals, reload, drain) and its workers (one
 * libev loop each: accept, handshake, pump).
 */
#ifndef MTLS_TUNNEL_DAEMON_H
#define MTLS_TUNNEL_DAEMON_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <ev.h>

#include "address.h"
#include "metrics.h"
#include "resolver.h"
#include "mtls.h"
#include "tunnel.h"

struct conn;

#define WORKER_SPARE_BUFS 32

struct worker {
	struct daemon *d;
	int id;
	struct ev_loop *loop;
	pthread_t thread;
	int listen_fd;
	bool own_listen_fd; /* its own socket (SO_REUSEPORT) or descriptor (dup) */
	ev_io accept_watcher;
	ev_timer accept_retry;	   /* restarts accept_watcher after a pause (out of descriptors) */
	ev_tstamp accept_pause;	   /* the last pause; 0 while accepting works */
	ev_async wakeup;	   /* the main thread asks to stop accepting, or to stop */
	ev_timer quiet;		   /* gives back the TLS buffers of connections gone quiet */
	struct conn *conns;	   /* doubly linked, for shutdown */
	long n_conns, conns_peak;  /* open now; the most since memory was last trimmed */
	unsigned parked_untrimmed; /* parked since memory was last trimmed (park_quiet()) */
	/* connections whose pump() ran out of its budget with work left, resumed in turn once
	 * per loop iteration after the poll (pump.c) */
	struct conn *resume_head, *resume_tail;
	long n_resume;
	ev_check resume;
	ev_idle resume_awake; /* only keeps the poll from blocking while any wait */
	/* pump buffers given back by connections, reused before malloc (pump.c) */
	void *spare_bufs[WORKER_SPARE_BUFS];
	int n_spare_bufs;
	unsigned trust_seen; /* the d->trust_gen its connections were last judged under */
};

struct daemon {
	const struct tunnel_options *o;
	const char *name; /* the config file's [section] of this tunnel; NULL: the only one */
	bool pg;	  /* --protocol postgresql (pgwire.h) */
	/* its --pg-role rules: replaced by a reload, read by the workers at each startup */
	pthread_mutex_t pg_mu;
	struct pgrole *pgrole;
	struct address listen;
	unsigned listen_mode;	   /* of a unix listen socket's file */
	struct resolver *resolver; /* the targets (--target, --server) and their addresses */
	struct address metrics_addr;
	/* connector: --server-name, the name the server's certificate must carry; NULL: the
	 * host of the --server each connection went to */
	const char *server_name;
	struct mtls *endpoint; /* server or client endpoint, shared by all workers */
	struct metrics metrics;
	atomic_llong active;
	atomic_ullong next_id;
	atomic_int phase; /* 0 running, 1 draining (no accepts), 2 stopping */
	/* a worker saw many connections close: the main thread gives freed memory back
	 * (malloc_trim), off the data path and at most every TRIM_EVERY seconds (daemon.c) */
	atomic_bool trim_wanted;
	atomic_bool park; /* --park in force (a reload may change it) */
	/* bumped when what is trusted changed (a reload): each worker re-judges its live
	 * connections when it sees a number it has not (worker_recheck_all) */
	atomic_uint trust_gen;
	int nworkers;
	struct worker *workers;
};

/* worker.c */
int worker_start(struct worker *w);
void worker_wake(struct worker *w);
/* What is trusted changed (the endpoint was reconfigured): every worker re-judges its
 * established connections, in its own thread, and closes those now refused. */
void worker_recheck_all(struct daemon *d);

/* pump.c: set up w's pump watchers (before its loop runs). */
void pump_worker_init(struct worker *w);
/* pump.c: a new connection accepted by worker w (fd is taken over, and the slot in
 * d->active the caller reserved for it). */
void pump_accept(struct worker *w, int fd, const struct sockaddr *peer, socklen_t len);
/* Close every connection of w (at the end of a drain). */
void pump_close_all(struct worker *w);
/* Release the TLS record buffers of connections that moved nothing since the last call. */
unsigned pump_release_quiet(struct worker *w);
/* Judge every verified connection of w again under the endpoint's current config
 * (mtls_conn_recheck) and close those refused (why revoked_while_connected or
 * no_longer_allowed, counted in closed_by_recheck). */
void pump_recheck(struct worker *w);

#endif
