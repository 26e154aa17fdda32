/*
 * One tunnelled connection: TLS on one side, plaintext on the other. Its steps depend on
 * the role (roles[] below), each starting when the one before it is done:
 *
 *   server:    accept -> TLS handshake (verify, authorize) -> [PROXY v2 header]
 *                     -> connect target -> pump
 *   connector: accept -> connect server -> TLS handshake (verify the server) -> pump
 *
 * Nothing is read from the plaintext side before the TLS peer is verified, and nothing is
 * sent to the target before the client is: a refused client never reaches the target.
 *
 * The pump moves bytes through two bounded buffers (one per direction, allocated while in
 * use): a side is read only while its buffer has room, so a slow reader slows its writer
 * instead of growing memory. EOF on one side becomes a half-close on the other (shutdown
 * SHUT_WR, or TLS close_notify); the connection ends when both directions are done.
 *
 * Fairness: one wakeup of a connection moves at most PUMP_BUDGET passes of data. A connection
 * that still had work when its budget ran out is queued on its worker and resumed by an
 * ev_check after the loop's next poll: in the same round as the connections that became
 * ready meanwhile (libev runs that round's check watchers just before its I/O callbacks), so
 * each gets a budget per round; a queued connection whose own I/O also fired gets two. It
 * cannot wait for readability instead: OpenSSL may hold records it already read ahead while
 * the socket is empty.
 *
 * A server creates a connection's TLS state only when the first byte of its ClientHello
 * arrives (under the handshake timeout): a connection that sends nothing costs little more
 * than its socket.
 *
 * Rollout modes (tunnel.h, docs/rollout.md). In permissive mode the server looks at the
 * client's first two bytes (MSG_PEEK, nothing consumed): 0x16 0x03 is a TLS handshake
 * record, anything else a plaintext client, carried to the target as it is, without TLS
 * state (the "TLS side" of the connection is then a plain socket: side_read() and the
 * others). A client that sends nothing for --plaintext-wait is a plaintext client whose
 * server speaks first. A TLS client may present no certificate, or one the decision
 * refuses: both are forwarded (the library's optional client certificate and audit mode),
 * the second counted would_refuse. Audit mode forwards the refused certificates only.
 * Connections are counted by kind and by client identity (metrics.h) when forwarded.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "pgrole.h"
#include "pgwire.h"
#include "proxy_v2.h"

#define BUF_SIZE	   16384
#define KEEP_BUFFERS_AFTER 16 /* pump() calls in one sweep interval */
/* Passes of pump()'s loop per wakeup: each moves up to a record each way, so a busy
 * connection moves some 256 KiB a turn before the others' turn (bench/fairness.sh: a probe's
 * p99 beside a bulk upload on one worker went from 36-108 ms, and seconds without a round
 * trip, to 4-24 ms), and the small replies of its target go out every turn instead of
 * piling up until the client pauses. */
#define PUMP_BUDGET 16

/* What a connection waits for, so that its I/O and timer callbacks resume the right step. */
enum phase {
	PHASE_CONNECT,
	PHASE_HANDSHAKE,
	PHASE_PUMP,
	PHASE_PG_PREAMBLE, /* --protocol postgresql: the messages before TLS */
	PHASE_PG_STARTUP,  /* server: the StartupMessage inside TLS */
	PHASE_PG_REPLY,	   /* connector: the server's answer to our SSLRequest */
};

struct conn;
typedef void step_fn(struct conn *c);

static step_fn step_handshake, step_proxy_header, step_connect, step_pump;
static step_fn step_pg_preamble, step_pg_startup, step_pg_forward, step_pg_local,
	step_pg_sslrequest;

/* A role: its steps in order, and the names it gives to what goes wrong. */
struct role {
	step_fn *steps[8]; /* in order; the last (step_pump) lasts as long as the connection */
	/* the connector: TLS on the connection it makes, plaintext on the one it accepted */
	bool tls_client;
	const char *connect_failed; /* log event when the outbound connection fails */
	const char *plain_read_error, *plain_write_error; /* conn_close whys */
};

/* --protocol postgresql: the same, with PostgreSQL's messages around TLS (pgwire.h) */
static const struct role pg_roles[] = {
	[TUNNEL_SERVER] =
		{
			.steps = {step_pg_preamble, step_handshake, step_pg_startup,
				  step_proxy_header, step_pg_forward, step_connect, step_pump},
			.tls_client = false,
			.connect_failed = "target_connect_failed",
			.plain_read_error = "target_read_error",
			.plain_write_error = "target_write_error",
		},
	[TUNNEL_CONNECTOR] =
		{
			.steps = {step_pg_local, step_connect, step_pg_sslrequest, step_handshake,
				  step_pump},
			.tls_client = true,
			.connect_failed = "server_connect_failed",
			.plain_read_error = "client_read_error",
			.plain_write_error = "client_write_error",
		},
};

static const struct role roles[] = {
	[TUNNEL_SERVER] =
		{
			.steps = {step_handshake, step_proxy_header, step_connect, step_pump},
			.tls_client = false,
			.connect_failed = "target_connect_failed",
			.plain_read_error = "target_read_error",
			.plain_write_error = "target_write_error",
		},
	[TUNNEL_CONNECTOR] =
		{
			.steps = {step_connect, step_handshake, step_pump},
			.tls_client = true,
			.connect_failed = "server_connect_failed",
			.plain_read_error = "client_read_error",
			.plain_write_error = "client_write_error",
		},
};

struct buf {
	uint8_t *data;
	size_t start, end;
};

struct conn {
	struct worker *w;
	struct conn *prev, *next;
	uint64_t id;
	char peer[80];
	struct sockaddr_storage peer_sa, local_sa;
	const struct role *role;
	unsigned step; /* the next of role->steps */
	enum phase phase;
	int tls_fd;
	int plain_fd;
	struct mtls *tls;
	ev_io tls_io;
	ev_io plain_io;
	ev_timer timer;
	ev_tstamp started;
	struct buf to_plain; /* read from TLS, to write to the plaintext side */
	struct buf to_tls;   /* read from the plaintext side, to write to TLS */
	/* what each blocked side waits for; a side is tried again only when that event fires */
	int tls_read_wants; /* 0, EV_READ or EV_WRITE */
	int tls_write_wants;
	bool plain_read_blocked;
	bool plain_write_blocked;
	bool tls_eof, plain_eof;	       /* no more input from that side */
	bool plain_shut, tls_shut;	       /* we ended our output to that side */
	uint64_t bytes_to_plain, bytes_to_tls; /* sent to each side (PROXY header not counted) */
	size_t header_left; /* PROXY header bytes still to send: not the client's traffic */
	bool got_tls_data;  /* the TLS peer sent application data */
	unsigned pumps;	    /* pump() calls since the last pump_release_quiet() */
	bool keeps_buffers; /* busy: mtls_keep_buffers() is on */
	bool parked;	    /* mtls_park() took it (counted in connections_parked) */
	bool resume_queued; /* on w's resume queue (its budget ran out with work left) */
	struct conn *resume_prev, *resume_next;
	ev_tstamp active;  /* the last wakeup of the pump phase, for the idle timeout */
	char *identity;	   /* the peer's, owned; NULL: none (see ident()): not 256 bytes per conn */
	bool verified;	   /* the handshake accepted the peer: re-judged after a trust change */
	bool plaintext;	   /* permissive: a client without TLS (no TLS state) */
	bool detecting;	   /* permissive: waiting for the first bytes, under --plaintext-wait */
	bool side_drained; /* plaintext: the last read of the client emptied its socket */
	enum mtls_reason would; /* audit: why strict mode would refuse the peer (or none) */
	/* the outbound connection: the addresses it tries (a reference to the resolver's
	 * list, held while connecting), the deadline of them all, the last failure, and the
	 * address it went to */
	struct resolver_plan plan;
	ev_tstamp connect_deadline;
	char connect_error[200];
	bool connect_timed_out; /* the last address tried did not answer in its time */
	char target[80];
	const char *server_name; /* connector: the name the server's certificate must carry */
	unsigned trust_gen;	 /* d->trust_gen when the TLS state was made (start_tls) */
	/* --protocol postgresql: the first message before TLS (at most a CancelRequest), the
	 * StartupMessage (or CancelRequest) read inside TLS, and what it asked for */
	uint8_t pg_head[PGWIRE_CANCEL_LEN];
	size_t pg_have;
	bool pg_gssenc;	 /* a GSSENCRequest was answered N already */
	bool pg_direct;	 /* PostgreSQL 17 direct TLS: a ClientHello came first */
	bool pg_cancel;	 /* a CancelRequest: forwarded, then closed */
	uint8_t *pg_msg; /* PGWIRE_STARTUP_MAX bytes while in use */
	size_t pg_msg_have;
	uint32_t pg_msg_len;
	char pg_user[64], pg_database[64];
	bool pg_replication; /* a walsender connection (pgwire_startup.replication) */
};

static void on_tls_io(struct ev_loop *loop, ev_io *io, int events);
static void on_plain_io(struct ev_loop *loop, ev_io *io, int events);
static void close_gently(struct conn *c, const char *why);
static long long handshake_left_ms(const struct conn *c);
static void on_timer(struct ev_loop *loop, ev_timer *t, int events);

/* The identity a connection is logged under ("" without one). */
static const char *ident(const struct conn *c)
{
	return c->identity != NULL ? c->identity : "";
}

static void next_step(struct conn *c)
{
	c->role->steps[c->step++](c);
}

/* Buffers come from and go back to the worker's few spares: a busy connection takes and
 * gives back a buffer per request, which malloc would serve from its slow path. */
static void buf_release(struct worker *w, struct buf *b)
{
	if (b->data != NULL) {
		if (w->n_spare_bufs < WORKER_SPARE_BUFS)
			w->spare_bufs[w->n_spare_bufs++] = b->data;
		else
			free(b->data);
	}
	b->data = NULL;
	b->start = b->end = 0;
}

static size_t buf_used(const struct buf *b)
{
	return b->end - b->start;
}

static bool buf_has_room(const struct buf *b)
{
	return b->data == NULL || b->start == b->end || b->end < BUF_SIZE;
}

/* Room at the end, allocating on first use; NULL when full or out of memory. */
static uint8_t *buf_space(struct worker *w, struct buf *b, size_t *room)
{
	if (b->data == NULL) {
		b->data = w->n_spare_bufs > 0 ? w->spare_bufs[--w->n_spare_bufs] : malloc(BUF_SIZE);
		if (b->data == NULL)
			return NULL;
	}
	if (b->start == b->end)
		b->start = b->end = 0;
	*room = BUF_SIZE - b->end;
	return *room > 0 ? b->data + b->end : NULL;
}

/* Consumed n bytes: an empty buffer is given back, so idle connections hold none. */
static void buf_consume(struct worker *w, struct buf *b, size_t n)
{
	b->start += n;
	if (b->start == b->end)
		buf_release(w, b);
}

static void resume_add(struct conn *c)
{
	struct worker *w = c->w;

	if (c->resume_queued)
		return;
	c->resume_queued = true;
	c->resume_next = NULL;
	c->resume_prev = w->resume_tail;
	if (w->resume_tail != NULL)
		w->resume_tail->resume_next = c;
	else
		w->resume_head = c;
	w->resume_tail = c;
	if (w->n_resume++ == 0) {
		ev_check_start(w->loop, &w->resume);
		ev_idle_start(w->loop, &w->resume_awake);
	}
}

static void resume_remove(struct conn *c)
{
	struct worker *w = c->w;

	if (!c->resume_queued)
		return;
	c->resume_queued = false;
	if (c->resume_prev != NULL)
		c->resume_prev->resume_next = c->resume_next;
	else
		w->resume_head = c->resume_next;
	if (c->resume_next != NULL)
		c->resume_next->resume_prev = c->resume_prev;
	else
		w->resume_tail = c->resume_prev;
	c->resume_prev = c->resume_next = NULL;
	if (--w->n_resume == 0) {
		ev_check_stop(w->loop, &w->resume);
		ev_idle_stop(w->loop, &w->resume_awake);
	}
}

static void conn_free(struct conn *c, const char *why, enum log_level level)
{
	struct worker *w = c->w;
	struct daemon *d = w->d;
	/* the target is on the plaintext side of the server, the TLS side of the connector */
	uint64_t to_target = c->role->tls_client ? c->bytes_to_tls : c->bytes_to_plain;
	uint64_t from_target = c->role->tls_client ? c->bytes_to_plain : c->bytes_to_tls;

	ev_io_stop(w->loop, &c->tls_io);
	ev_io_stop(w->loop, &c->plain_io);
	ev_timer_stop(w->loop, &c->timer);
	resume_remove(c); /* the queue must not keep a freed connection */
	resolver_plan_done(d->resolver, &c->plan);
	atomic_fetch_add(&d->metrics.bytes_to_target, to_target);
	atomic_fetch_add(&d->metrics.bytes_from_target, from_target);
	if (why != NULL)
		LOG(level, "conn_close", LN("conn", c->id), LS("peer", c->peer),
		    LS("identity", ident(c)), LS("why", why), LN("bytes_to_target", to_target),
		    LN("bytes_from_target", from_target),
		    LN("duration_ms", (long long)((ev_now(w->loop) - c->started) * 1000)),
		    LS("target", c->target));
	if (c->parked)
		atomic_fetch_sub(&d->metrics.connections_parked, 1);
	mtls_free(c->tls);
	if (c->tls_fd >= 0)
		close(c->tls_fd);
	if (c->plain_fd >= 0)
		close(c->plain_fd);
	buf_release(w, &c->to_plain);
	buf_release(w, &c->to_tls);
	free(c->pg_msg);
	free(c->identity);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	w->n_conns--;
	atomic_fetch_sub(&d->active, 1);
	atomic_fetch_sub(&d->metrics.connections_open, 1);
	free(c);
}

static void set_io(struct conn *c, ev_io *io, int fd, int events)
{
	if (fd < 0)
		return;
	if (events == 0) {
		ev_io_stop(c->w->loop, io);
		return;
	}
	if (ev_is_active(io) && io->events == events)
		return;
	ev_io_stop(c->w->loop, io);
	ev_io_set(io, fd, events);
	ev_io_start(c->w->loop, io);
}

static void set_timer(struct conn *c, long long ms)
{
	ev_timer_stop(c->w->loop, &c->timer);
	if (ms > 0) {
		ev_timer_set(&c->timer, (ev_tstamp)ms / 1000.0, (ev_tstamp)ms / 1000.0);
		ev_timer_start(c->w->loop, &c->timer);
	}
}

static int want_events(int rc)
{
	return rc == MTLS_WANT_POLLOUT ? EV_WRITE : EV_READ;
}

/* The client's side of a server connection (or the server's side of a connector's): TLS,
 * or in permissive mode a plaintext client's socket, with mtls_read()'s conventions. */
static ssize_t side_read(struct conn *c, uint8_t *p, size_t room)
{
	ssize_t r;

	if (!c->plaintext)
		return mtls_read(c->tls, p, room);
	r = recv(c->tls_fd, p, room, 0);
	if (r >= 0) {
		c->side_drained = r > 0 && (size_t)r < room;
		return r;
	}
	return errno == EAGAIN || errno == EINTR ? MTLS_WANT_POLLIN : -1;
}

static bool side_read_drained(struct conn *c)
{
	return c->plaintext ? c->side_drained : mtls_read_drained(c->tls) != 0;
}

static ssize_t side_write(struct conn *c, const uint8_t *p, size_t n)
{
	ssize_t r;

	if (!c->plaintext)
		return mtls_write(c->tls, p, n);
	r = send(c->tls_fd, p, n, MSG_NOSIGNAL);
	if (r >= 0)
		return r;
	return errno == EAGAIN || errno == EINTR ? MTLS_WANT_POLLOUT : -1;
}

static int side_close(struct conn *c)
{
	if (!c->plaintext)
		return mtls_close(c->tls);
	shutdown(c->tls_fd, SHUT_WR);
	return 0;
}

/* The conn_close why of a failed read or write of that side. */
static const char *side_error(struct conn *c, bool reading)
{
	if (c->plaintext)
		return reading ? "client_read_error" : "client_write_error";
	return mtls_reason_name(mtls_error_reason(c->tls));
}

/* In TLS 1.3 a client's handshake ends before the server has checked the client's
 * certificate; a refusal arrives as an alert on the first read. Count and log it as the
 * failed handshake it is, not as a closed connection. */
static void refused_late(struct conn *c)
{
	struct metrics *m = &c->w->d->metrics;

	if (!c->role->tls_client || c->got_tls_data ||
	    mtls_error_reason(c->tls) != MTLS_REASON_REJECTED_BY_PEER)
		return;
	atomic_fetch_sub(&m->handshakes_ok, 1);
	if (mtls_conn_resumed(c->tls))
		atomic_fetch_sub(&m->handshakes_resumed, 1);
	metrics_handshake(m, MTLS_REASON_REJECTED_BY_PEER, false, 0);
	LOG(LOG_WARN, "handshake_refused", LN("conn", c->id), LS("peer", c->peer),
	    LS("reason", "rejected_by_peer"), LS("category", "protocol"),
	    LS("message", mtls_error(c->tls)));
}

/* Move bytes until nothing more can move without waiting, or the budget of PUMP_BUDGET
 * passes is spent (then the connection is queued for resume). Returns false if the
 * connection was closed.
 *
 * A side is not tried again once it said it would block (EAGAIN, MTLS_WANT_*, a short
 * plaintext recv, or mtls_read_drained()) until its event fires: a request and its answer
 * then cost one receive and one send on each side, and no receive that finds nothing. A
 * side's event is seen only between wakeups: the budget is also what lets the side that
 * made a short read take its turn while the other streams. */
static bool pump(struct conn *c)
{
	struct worker *w = c->w;
	bool progress;
	unsigned passes = 0;
	size_t room, n;
	uint8_t *p;
	ssize_t r;

	c->active = ev_now(w->loop);
	/* a connection that keeps moving data keeps its TLS buffers until it goes quiet */
	if (++c->pumps >= KEEP_BUFFERS_AFTER && !c->keeps_buffers && c->tls != NULL) {
		c->keeps_buffers = true;
		mtls_keep_buffers(c->tls, 1);
	}
	do {
		progress = false;
		/* TLS -> plaintext. Until the server's first byte, a connector reads before
		 * every write: a TLS 1.3 server refuses a client certificate after the client's
		 * handshake is over, and its alert must be read before a write fails on the
		 * reset that follows it (see refused_late()). */
		if (c->role->tls_client && !c->got_tls_data && c->tls_read_wants == EV_READ)
			c->tls_read_wants = 0;
		if (!c->tls_eof && c->tls_read_wants == 0 &&
		    (p = buf_space(w, &c->to_plain, &room)) != NULL) {
			r = side_read(c, p, room);
			if (r > 0) {
				c->got_tls_data = true;
				c->to_plain.end += (size_t)r;
				if (side_read_drained(c))
					c->tls_read_wants = EV_READ;
				progress = true;
			} else if (r == 0) {
				c->tls_eof = true;
				progress = true;
			} else if (r == MTLS_WANT_POLLIN || r == MTLS_WANT_POLLOUT) {
				c->tls_read_wants = want_events((int)r);
			} else {
				if (c->tls != NULL)
					refused_late(c);
				conn_free(c, side_error(c, true), LOG_INFO);
				return false;
			}
		}
		if (!c->plain_write_blocked && (n = buf_used(&c->to_plain)) > 0) {
			r = send(c->plain_fd, c->to_plain.data + c->to_plain.start, n,
				 MSG_NOSIGNAL);
			if (r > 0) {
				size_t header =
					(size_t)r < c->header_left ? (size_t)r : c->header_left;

				buf_consume(w, &c->to_plain, (size_t)r);
				c->header_left -= header;
				c->bytes_to_plain += (uint64_t)r - header;
				progress = true;
			} else if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
				c->plain_write_blocked = true;
			} else {
				conn_free(c, c->role->plain_write_error, LOG_INFO);
				return false;
			}
		}
		if (c->tls_eof && buf_used(&c->to_plain) == 0 && !c->plain_shut) {
			shutdown(c->plain_fd, SHUT_WR);
			c->plain_shut = true;
		}

		/* plaintext -> TLS */
		if (!c->plain_eof && !c->plain_read_blocked &&
		    (p = buf_space(w, &c->to_tls, &room)) != NULL) {
			r = recv(c->plain_fd, p, room, 0);
			if (r > 0) {
				c->to_tls.end += (size_t)r;
				/* a short read emptied the socket: wait for its next event */
				c->plain_read_blocked = (size_t)r < room;
				progress = true;
			} else if (r == 0) {
				c->plain_eof = true;
				progress = true;
			} else if (errno == EAGAIN || errno == EINTR) {
				c->plain_read_blocked = true;
			} else {
				conn_free(c, c->role->plain_read_error, LOG_INFO);
				return false;
			}
			if (buf_used(&c->to_tls) == 0)
				buf_release(w, &c->to_tls);
		}
		if (c->tls_write_wants == 0 && (n = buf_used(&c->to_tls)) > 0) {
			r = side_write(c, c->to_tls.data + c->to_tls.start, n);
			if (r > 0) {
				buf_consume(w, &c->to_tls, (size_t)r);
				c->bytes_to_tls += (uint64_t)r;
				progress = true;
			} else if (r == MTLS_WANT_POLLIN || r == MTLS_WANT_POLLOUT) {
				c->tls_write_wants = want_events((int)r);
			} else {
				conn_free(c, side_error(c, false), LOG_INFO);
				return false;
			}
		}
		if (c->plain_eof && buf_used(&c->to_tls) == 0 && !c->tls_shut &&
		    c->tls_write_wants == 0) {
			int rc = side_close(c);

			if (rc == 0) {
				c->tls_shut = true;
				progress = true;
			} else if (rc == MTLS_WANT_POLLIN || rc == MTLS_WANT_POLLOUT) {
				c->tls_write_wants = want_events(rc);
			} else {
				c->tls_shut = true; /* the peer is gone; nothing more to say */
			}
		}
	} while (progress && ++passes < PUMP_BUDGET);

	/* an idle connection holds no buffer */
	if (buf_used(&c->to_plain) == 0)
		buf_release(w, &c->to_plain);
	if (buf_used(&c->to_tls) == 0)
		buf_release(w, &c->to_tls);
	if (c->tls_eof && c->plain_eof && c->tls_shut && c->plain_shut &&
	    buf_used(&c->to_plain) == 0 && buf_used(&c->to_tls) == 0) {
		conn_free(c, "closed", LOG_INFO);
		return false;
	}
	/* the last pass moved something: more may move without any event (records read ahead
	 * inside OpenSSL, a side not yet blocked), so come back after the others' turn */
	if (progress)
		resume_add(c);
	/* wait only for what is blocked and still wanted: a full buffer stops its reader */
	set_io(c, &c->tls_io, c->tls_fd,
	       (!c->tls_eof && buf_has_room(&c->to_plain) ? c->tls_read_wants : 0) |
		       (buf_used(&c->to_tls) > 0 || (c->plain_eof && !c->tls_shut)
				? c->tls_write_wants
				: 0));
	set_io(c, &c->plain_io, c->plain_fd,
	       (!c->plain_eof && c->plain_read_blocked && buf_has_room(&c->to_tls) ? EV_READ : 0) |
		       (c->plain_write_blocked && buf_used(&c->to_plain) > 0 ? EV_WRITE : 0));
	return true;
}

/* The accepted client's bytes wait in the buffer to the target, which takes none. */
static bool to_target_stuck(const struct conn *c)
{
	if (c->role->tls_client)
		return buf_used(&c->to_tls) > 0 && c->tls_write_wants != 0;
	return buf_used(&c->to_plain) > 0 && c->plain_write_blocked;
}

/* The accepted client is gone: its connection was reset (TCP), or closed for good (a unix
 * socket's peer), which the kernel reports as an error or a hang-up. An EOF, a close_notify
 * or a FIN alone is not a departure: a client that has sent its request may end its side
 * and wait for the answer (an HTTP/1.0 client, `nc -N`, a TLS 1.3 half-close), and the
 * target may be slow to read that request, not stuck. A TCP client that closed with a FIN
 * looks the same as one that half-closed; it stays until the idle timeout. Once we have
 * ended our side too, a hang-up only means both sides ended: only an error counts then. */
static bool client_gone(const struct conn *c)
{
	bool we_ended = c->role->tls_client ? c->plain_shut : c->tls_shut;
	struct pollfd p = {.fd = c->role->tls_client ? c->plain_fd : c->tls_fd, .events = 0};

	if (poll(&p, 1, 0) != 1)
		return false;
	return (p.revents & POLLERR) != 0 || (!we_ended && (p.revents & POLLHUP) != 0);
}

/* The pump phase's timer: the idle timeout since the last wakeup and, while the client's
 * bytes are stuck before the target, a look every handshake timeout at whether the client
 * is still there (on_timer). */
static void pump_timer(struct conn *c)
{
	const struct tunnel_options *o = c->w->d->o;
	/* a CancelRequest's connection lives for a handshake timeout at most */
	ev_tstamp idle =
		(ev_tstamp)(c->pg_cancel ? o->handshake_timeout_ms : o->idle_timeout_ms) / 1000.0;
	ev_tstamp linger = (ev_tstamp)o->handshake_timeout_ms / 1000.0;
	ev_tstamp t = idle > 0 ? idle - (ev_now(c->w->loop) - c->active) : 0;

	ev_tstamp life = (ev_tstamp)o->max_lifetime_ms / 1000.0;

	if (to_target_stuck(c) && linger > 0 && (idle <= 0 || linger < t))
		t = linger;
	if (life > 0) {
		ev_tstamp left = life - (ev_now(c->w->loop) - c->started);

		if (t <= 0 || left < t)
			t = left > 0 ? left : 0.001;
	}
	if (idle <= 0 && t <= 0) {
		ev_timer_stop(c->w->loop, &c->timer);
		return;
	}
	c->timer.repeat = t > 0.001 ? t : 0.001;
	ev_timer_again(c->w->loop, &c->timer);
}

static void step_pump(struct conn *c)
{
	c->phase = PHASE_PUMP;
	if (pump(c))
		pump_timer(c);
}

/* Server with --proxy-protocol: the header goes into the buffer to the target before the
 * target is connected, so that it precedes every byte of the client's. A header that
 * cannot be built (an identity or CN too long for its 16-bit lengths or for the buffer, no
 * memory) refuses the connection: the client's bytes without our header would let the
 * client write a header of its own, with any address and identity it likes. Nothing is
 * shortened either: a truncated identity is another identity. */
static void step_proxy_header(struct conn *c)
{
	struct daemon *d = c->w->d;
	const struct mtls_peer *peer = c->tls != NULL ? mtls_conn_peer(c->tls) : NULL;
	const char *cn = mtls_peer_common_name(peer), *identity = mtls_peer_identity(peer);
	uint8_t *p;
	size_t room = 0, n = 0;
	char msg[300];

	if (!d->o->proxy_protocol) {
		next_step(c);
		return;
	}
	p = buf_space(c->w, &c->to_plain, &room);
	/* a client without a verified certificate gets no identity in the header, and a
	 * verify result that says so: the target must not take it for an authorized one */
	if (p != NULL && (c->plaintext || peer == NULL || c->would != MTLS_REASON_NONE))
		n = proxy_v2_header_unverified(p, room, (const struct sockaddr *)&c->peer_sa,
					       (const struct sockaddr *)&c->local_sa,
					       c->plaintext ? NULL : mtls_conn_version(c->tls));
	else if (p != NULL)
		n = proxy_v2_header(p, room, (const struct sockaddr *)&c->peer_sa,
				    (const struct sockaddr *)&c->local_sa,
				    mtls_conn_version(c->tls), cn, identity,
				    mtls_conn_resumed(c->tls));
	if (n > 0) {
		c->to_plain.end += n;
		c->header_left = n;
		next_step(c);
		return;
	}
	if (p == NULL)
		snprintf(msg, sizeof(msg),
			 "out of memory for the PROXY v2 header; nothing was sent to the target");
	else
		snprintf(
			msg, sizeof(msg),
			"the client's identity (%zu bytes) and common name (%zu bytes) do not fit "
			"in a PROXY v2 header of at most %zu bytes; nothing was sent to the target",
			identity != NULL ? strlen(identity) : 0, cn != NULL ? strlen(cn) : 0, room);
	atomic_fetch_add(&d->metrics.connections_refused_proxy_header, 1);
	LOG(LOG_WARN, "conn_refused", LN("conn", c->id), LS("peer", c->peer),
	    LS("identity", ident(c)), LS("reason", "proxy_header"), LS("message", msg));
	conn_free(c, "proxy_header", LOG_INFO);
}

static void connect_failed(struct conn *c, const char *message, const char *why)
{
	atomic_fetch_add(&c->w->d->metrics.target_connect_failures, 1);
	LOG(LOG_WARN, c->role->connect_failed, LN("conn", c->id), LS("peer", c->peer),
	    LS("identity", ident(c)), LS("message", message));
	conn_free(c, why, LOG_INFO);
}

/* The next address of the plan: a non-blocking connect, under a share of what is left of
 * the connect timeout (the rest divided among the addresses left, so that one that does not
 * answer cannot use up the time of the others; the last gets all that is left). When none is
 * left, the connection fails with the last address's error. */
static void try_next(struct conn *c)
{
	struct daemon *d = c->w->d;
	bool tls = c->role->tls_client;
	int *fd = tls ? &c->tls_fd : &c->plain_fd;
	const struct resolver_entry *e;

	while ((e = resolver_plan_next(&c->plan)) != NULL) {
		char err[300];
		ev_tstamp left = c->connect_deadline - ev_now(c->w->loop);
		unsigned others = c->plan.n - c->plan.next;

		if (left <= 0) { /* the others' time ran out */
			c->target[0] = '\0';
			connect_failed(c, c->connect_error, "connect_timeout");
			return;
		}
		c->connect_timed_out = false;
		*fd = address_connect(&e->addr, err, sizeof(err));
		if (*fd < 0) { /* at once: no route, no such socket file */
			snprintf(c->connect_error, sizeof(c->connect_error), "%.190s", err);
			resolver_plan_failed(d->resolver, &c->plan, err);
			continue;
		}
		address_format((const struct sockaddr *)&e->addr.sa, e->addr.len, c->target,
			       sizeof(c->target));
		c->phase = PHASE_CONNECT;
		if (others > 0)
			left /= others + 1;
		set_timer(c, (long long)(left * 1000) > 0 ? (long long)(left * 1000) : 1);
		set_io(c, tls ? &c->plain_io : &c->tls_io, tls ? c->plain_fd : c->tls_fd, 0);
		set_io(c, tls ? &c->tls_io : &c->plain_io, *fd, EV_WRITE);
		return;
	}
	c->target[0] = '\0';
	connect_failed(c, c->connect_error,
		       c->connect_timed_out ? "connect_timeout" : "connect_failed");
}

/* The outbound connection: to the target (server), to the server (connector), trying the
 * addresses of the targets in the resolver's order. Only it is watched meanwhile: the
 * accepted side waits. */
static void step_connect(struct conn *c)
{
	struct daemon *d = c->w->d;
	char err[300];

	if (resolver_plan(d->resolver, &c->plan, err, sizeof(err)) != 0) {
		connect_failed(c, err, "connect_failed");
		return;
	}
	c->connect_deadline = ev_now(c->w->loop) + (ev_tstamp)d->o->connect_timeout_ms / 1000.0;
	snprintf(c->connect_error, sizeof(c->connect_error), "no address to connect to");
	try_next(c);
}

/* The address being tried failed (why): marked down, and the next one tried. */
static void attempt_failed(struct conn *c, const char *why)
{
	int *fd = c->role->tls_client ? &c->tls_fd : &c->plain_fd;

	ev_io_stop(c->w->loop, c->role->tls_client ? &c->tls_io : &c->plain_io);
	ev_timer_stop(c->w->loop, &c->timer);
	close(*fd);
	*fd = -1;
	snprintf(c->connect_error, sizeof(c->connect_error), "cannot connect to %.79s: %.90s",
		 c->target, why);
	resolver_plan_failed(c->w->d->resolver, &c->plan, why);
	try_next(c);
}

/* The outbound connection finished connecting, or failed. */
static void connected(struct conn *c)
{
	struct daemon *d = c->w->d;
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(c->role->tls_client ? c->tls_fd : c->plain_fd, SOL_SOCKET, SO_ERROR, &err,
		       &len) != 0)
		err = errno;
	if (err != 0) {
		attempt_failed(c, strerror(err));
		return;
	}
	resolver_plan_ok(d->resolver, &c->plan);
	c->server_name = d->server_name != NULL
				 ? d->server_name
				 : resolver_target_host(d->resolver, c->plan.trying->target);
	resolver_plan_done(d->resolver, &c->plan);
	next_step(c);
}

static void handshake_refused(struct conn *c)
{
	struct daemon *d = c->w->d;

	metrics_handshake(&d->metrics, mtls_error_reason(c->tls), false, 0);
	LOG(LOG_WARN, "handshake_refused", LN("conn", c->id), LS("peer", c->peer),
	    LS("reason", mtls_reason_name(mtls_error_reason(c->tls))),
	    LS("category", mtls_category_name(mtls_error_category(c->tls))),
	    LS("message", mtls_error(c->tls)));
	conn_free(c, "handshake_refused", LOG_DEBUG);
}

/* The identity a connection is counted under in the per-identity metrics: a certificate that
 * does not lead to our CA names whatever its maker chose, so all of them count as one,
 * "untrusted", and cannot take the slots of the identities our CA issued. Named are only the
 * verified peers and those refused for a reason found once the whole path verified to the
 * trust anchors (validity, revocation, OCSP, the rules): a foreign chain is refused for many
 * reasons besides unknown_ca (issuer_not_sent, leaf_is_ca, nonconforming, chain_too_long,
 * bad_key_usage before the issuers are checked...), and a list of those would miss one. */
static const char *metrics_identity(const struct conn *c)
{
	switch (c->would) {
	case MTLS_REASON_NONE:
	case MTLS_REASON_EXPIRED:
	case MTLS_REASON_NOT_YET_VALID:
	case MTLS_REASON_NAME_MISMATCH:
	case MTLS_REASON_IDENTITY_NOT_ALLOWED:
	case MTLS_REASON_PIN_MISMATCH:
	case MTLS_REASON_REVOKED:
	case MTLS_REASON_CRL_EXPIRED:
	case MTLS_REASON_CRL_MISSING:
	case MTLS_REASON_CRL_INVALID:
	case MTLS_REASON_OCSP_MISSING:
	case MTLS_REASON_OCSP_UNAVAILABLE:
	case MTLS_REASON_OCSP_UNKNOWN: return ident(c);
	default: return "untrusted";
	}
}

/* A peer let in by a rollout mode that strict mode would refuse (c->would): logged and
 * counted, at its handshake or when a re-check first finds it so. */
static void would_refuse(struct conn *c, const char *when, const char *message)
{
	struct daemon *d = c->w->d;

	metrics_would_refuse(&d->metrics, c->would, metrics_identity(c));
	LOG(LOG_WARN, "would_refuse", LN("conn", c->id), LS("peer", c->peer),
	    LS("identity", ident(c)), LS("reason", mtls_reason_name(c->would)),
	    LS("category", mtls_category_name(mtls_reason_category(c->would))),
	    LS("message", message), LS("at", when),
	    LS("action", "forwarded (rollout mode); strict mode would refuse it"));
}

static void handshake_done(struct conn *c)
{
	struct daemon *d = c->w->d;
	const struct mtls_peer *peer = mtls_conn_peer(c->tls);
	const char *warning = mtls_conn_warning(c->tls);

	/* The handshake was judged on the state the connection started with. If what is
	 * trusted changed since (a reload: a new CRL, rules, CA), the re-check of live
	 * connections skipped this one, still in its handshake: judge it now, under the
	 * current state, or a peer revoked in between would stay in until the next reload. */
	if (atomic_load(&d->trust_gen) != c->trust_gen &&
	    mtls_conn_recheck(c->tls, d->endpoint) != 0) {
		handshake_refused(c);
		return;
	}
	peer = mtls_conn_peer(c->tls); /* a re-check may have described it again */
	free(c->identity);
	c->identity = NULL;
	if (peer != NULL && mtls_peer_identity(peer)[0] != '\0' &&
	    (c->identity = strdup(mtls_peer_identity(peer))) == NULL) {
		conn_free(c, "out_of_memory", LOG_ERROR);
		return;
	}
	c->verified = true;
	if (mtls_conn_ocsp(c->tls) == MTLS_OCSP_RESULT_SOFT_FAIL)
		atomic_fetch_add(&d->metrics.ocsp_soft_fail, 1);
	metrics_handshake(&d->metrics, MTLS_REASON_NONE, mtls_conn_resumed(c->tls),
			  (uint64_t)((ev_time() - c->started) * 1e6));
	c->would = mtls_conn_would_refuse(c->tls);
	/* the same line as before the rollout modes for a certificate (kind mtls); one with
	 * kind tls_no_cert for a client without (permissive) */
	if (peer != NULL && c->role->tls_client) /* the connector: the server it went to */
		LOG(LOG_INFO, "conn_open", LN("conn", c->id), LS("peer", c->peer),
		    LS("identity", ident(c)), LS("subject", mtls_peer_subject(peer)),
		    LS("serial", mtls_peer_serial(peer)),
		    LS("rule",
		       mtls_peer_matched_rule(peer) != NULL ? mtls_peer_matched_rule(peer) : ""),
		    LS("tls", mtls_conn_version(c->tls)), LS("cipher", mtls_conn_cipher(c->tls)),
		    LN("resumed", mtls_conn_resumed(c->tls)), LS("target", c->target));
	else if (peer != NULL) /* the server connects to its target after the handshake */
		LOG(LOG_INFO, "conn_open", LN("conn", c->id), LS("peer", c->peer),
		    LS("identity", ident(c)), LS("subject", mtls_peer_subject(peer)),
		    LS("serial", mtls_peer_serial(peer)),
		    LS("rule",
		       mtls_peer_matched_rule(peer) != NULL ? mtls_peer_matched_rule(peer) : ""),
		    LS("tls", mtls_conn_version(c->tls)), LS("cipher", mtls_conn_cipher(c->tls)),
		    LN("resumed", mtls_conn_resumed(c->tls)));
	else
		LOG(LOG_INFO, "conn_open", LN("conn", c->id), LS("peer", c->peer),
		    LS("identity", ""), LS("tls", mtls_conn_version(c->tls)),
		    LS("cipher", mtls_conn_cipher(c->tls)),
		    LN("resumed", mtls_conn_resumed(c->tls)), LS("kind", "tls_no_cert"));
	metrics_conn_kind(&d->metrics, peer != NULL ? METRICS_KIND_MTLS : METRICS_KIND_TLS_NO_CERT,
			  metrics_identity(c));
	if (c->would != MTLS_REASON_NONE)
		would_refuse(c, "handshake", mtls_conn_would_refuse_message(c->tls));
	if (warning != NULL)
		LOG(LOG_WARN, "tls_warning", LN("conn", c->id), LS("identity", ident(c)),
		    LS("message", warning));
	next_step(c);
}

static void do_handshake(struct conn *c)
{
	int rc = mtls_handshake(c->tls);

	if (rc == 0) {
		handshake_done(c);
		return;
	}
	if (rc == MTLS_WANT_POLLIN || rc == MTLS_WANT_POLLOUT) {
		set_io(c, &c->tls_io, c->tls_fd, want_events(rc));
		return;
	}
	handshake_refused(c);
}

static void start_tls(struct conn *c)
{
	struct daemon *d = c->w->d;

	c->trust_gen = atomic_load(&d->trust_gen); /* before the state is taken */
	c->tls = c->role->tls_client ? mtls_connect_fd(d->endpoint, c->tls_fd, c->server_name)
				     : mtls_accept_fd(d->endpoint, c->tls_fd);
	if (c->tls == NULL) {
		LOG(LOG_ERROR, "tls_setup_failed", LN("conn", c->id),
		    LS("message", mtls_error(d->endpoint)));
		conn_free(c, "tls_setup_failed", LOG_INFO);
		return;
	}
	do_handshake(c);
}

/* TLS on the accepted connection (server) or on the one made to the server (connector).
 * The server waits for the client's first byte before it builds the TLS state (some 40
 * KiB): a connection that sends nothing holds only its socket and this struct until the
 * handshake timeout. */
static void step_handshake(struct conn *c)
{
	const struct tunnel_options *o = c->w->d->o;

	c->phase = PHASE_HANDSHAKE;
	c->detecting = !c->role->tls_client &&
		       atomic_load(&c->w->d->metrics.mode) == TUNNEL_MODE_PERMISSIVE;
	/* permissive: the first bytes are awaited for --plaintext-wait, then the client is
	 * taken for a plaintext one whose server speaks first (on_timer) */
	set_timer(c, c->detecting && o->plaintext_wait_ms > 0 &&
				     o->plaintext_wait_ms < o->handshake_timeout_ms
			     ? o->plaintext_wait_ms
		     : c->w->d->pg ? handshake_left_ms(c) /* a preamble came before */
				   : o->handshake_timeout_ms);
	if (c->role->tls_client)
		start_tls(c);
	else
		set_io(c, &c->tls_io, c->tls_fd, EV_READ); /* on_tls_io: start_tls() */
}

/* Permissive mode: a client taken for a plaintext one is carried to the target as it is
 * (the PROXY v2 header, if any, says it came without TLS). */
static void start_plaintext(struct conn *c, const char *why)
{
	struct daemon *d = c->w->d;

	c->detecting = false;
	c->plaintext = true;
	c->verified = true; /* let in: re-judged after a reload (pump_recheck) */
	ev_timer_stop(c->w->loop, &c->timer);
	set_io(c, &c->tls_io, c->tls_fd, 0);
	LOG(LOG_INFO, "conn_open", LN("conn", c->id), LS("peer", c->peer), LS("identity", ""),
	    LS("kind", "plaintext"), LS("detected", why));
	metrics_conn_kind(&d->metrics, METRICS_KIND_PLAINTEXT, NULL);
	next_step(c);
}

/* What is left of the handshake timeout, counted from the accept (at least 1 ms): the wait
 * for a permissive client's first bytes is part of it, not added to it. */
static long long handshake_left_ms(const struct conn *c)
{
	long long spent = (long long)((ev_now(c->w->loop) - c->started) * 1000);
	long long left = c->w->d->o->handshake_timeout_ms - spent;

	return left > 0 ? left : 1;
}

/* Permissive mode, the client's first bytes arrived: TLS or not? Peeked, not read: both
 * paths then read them as they are. */
static void detect(struct conn *c)
{
	uint8_t head[2];
	ssize_t n = recv(c->tls_fd, head, sizeof(head), MSG_PEEK);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		conn_free(c, n == 0 ? "client_closed" : "client_read_error", LOG_DEBUG);
		return;
	}
	/* TLS, or a reload made the mode stricter since this connection came: then it is
	 * judged as a new one would be (a plaintext client refused not_tls) */
	if ((head[0] == 0x16 && (n < 2 || head[1] == 0x03)) ||
	    atomic_load(&c->w->d->metrics.mode) != TUNNEL_MODE_PERMISSIVE) {
		c->detecting = false;
		set_timer(c, handshake_left_ms(c));
		start_tls(c);
		return;
	}
	start_plaintext(c, "first_bytes");
}

/* ---- --protocol postgresql (pgwire.h; docs/database.md) ---- */

/* A PostgreSQL client refused before TLS: counted and logged as a handshake refusal, with
 * why (reason not_tls: it did not come to speak TLS), and closed after the ErrorResponse
 * (if any: msg) went out. */
static void pg_refuse_plain(struct conn *c, const char *why, const char *message, bool answer)
{
	struct daemon *d = c->w->d;
	uint8_t out[512];
	size_t n = 0;

	if (answer)
		n = pgwire_error_response(out, sizeof(out), "28000",
					  "mtls: this server accepts only TLS with a client "
					  "certificate",
					  "connect with sslmode=verify-full, sslcert and sslkey");
	if (n > 0) { /* a fresh socket: the kernel takes these few bytes at once */
		uint8_t rest[512];

		(void)send(c->tls_fd, out, n, MSG_NOSIGNAL);
		shutdown(c->tls_fd, SHUT_WR);
		/* what the client sent and we did not read (the rest of its StartupMessage,
		 * already here) would make the close a reset, which may overtake the error */
		for (size_t i = 0; i < PGWIRE_STARTUP_MAX / sizeof(rest); i++)
			if (recv(c->tls_fd, rest, sizeof(rest), MSG_DONTWAIT) <= 0)
				break;
	}
	metrics_handshake(&d->metrics, MTLS_REASON_NOT_TLS, false, 0);
	LOG(LOG_WARN, "handshake_refused", LN("conn", c->id), LS("peer", c->peer),
	    LS("reason", "not_tls"), LS("category", "protocol"), LS("message", message));
	conn_free(c, why, LOG_DEBUG);
}

/* The 16 bytes of a CancelRequest go to the target as they are (PostgreSQL checks its
 * secret key, as it would the client's own), then the connection ends: the client sends
 * nothing more, and PostgreSQL answers nothing. False if out of memory (c freed). */
static bool pg_start_cancel(struct conn *c, const uint8_t *msg)
{
	struct daemon *d = c->w->d;

	c->pg_cancel = true;
	c->tls_eof = true; /* nothing more from the client */
	if (c->pg_msg == NULL && (c->pg_msg = malloc(PGWIRE_CANCEL_LEN)) == NULL) {
		conn_free(c, "out_of_memory", LOG_WARN);
		return false; /* c is gone */
	}
	if (c->pg_msg != msg)
		memcpy(c->pg_msg, msg, PGWIRE_CANCEL_LEN);
	c->pg_msg_len = PGWIRE_CANCEL_LEN;
	atomic_fetch_add(&d->metrics.pg_cancels, 1);
	LOG(LOG_INFO, "pg_cancel", LN("conn", c->id), LS("peer", c->peer), LS("identity", ident(c)),
	    LS("tls", c->tls != NULL ? "yes" : "no"),
	    LS("message", "a cancel request: forwarded to the target, then closed"));
	return true;
}

/* Server: the client's first bytes, before any TLS. Exactly the bytes of each message are
 * read (8, or 16 for a cancel), so that what follows an SSLRequest is left for TLS. */
static void pg_preamble_read(struct conn *c)
{
	for (;;) {
		size_t want = PGWIRE_CANCEL_LEN > 8 && c->pg_have >= 8 ? PGWIRE_CANCEL_LEN : 8;
		uint32_t len = 0;
		enum pgwire_kind k;
		ssize_t r;

		if (c->pg_have == 0) {
			uint8_t first;

			r = recv(c->tls_fd, &first, 1, MSG_PEEK);
			if (r < 0 && (errno == EAGAIN || errno == EINTR))
				return;
			if (r <= 0) {
				conn_free(c, r == 0 ? "client_closed" : "client_read_error",
					  LOG_DEBUG);
				return;
			}
			if (first == 0x16) { /* a ClientHello: PostgreSQL 17 direct TLS */
				c->pg_direct = true;
				next_step(c);
				return;
			}
		}
		if (c->pg_have < want) {
			r = recv(c->tls_fd, c->pg_head + c->pg_have, want - c->pg_have, 0);
			if (r < 0 && (errno == EAGAIN || errno == EINTR))
				return;
			if (r <= 0) {
				conn_free(c, r == 0 ? "client_closed" : "client_read_error",
					  LOG_DEBUG);
				return;
			}
			c->pg_have += (size_t)r;
		}
		k = pgwire_classify(c->pg_head, c->pg_have, &len);
		switch (k) {
		case PGWIRE_NEED_MORE: continue;
		case PGWIRE_SSL:
			if (send(c->tls_fd, "S", 1, MSG_NOSIGNAL) != 1) {
				conn_free(c, "client_write_error", LOG_DEBUG);
				return;
			}
			next_step(c); /* the TLS handshake */
			return;
		case PGWIRE_GSSENC:
			if (c->pg_gssenc || send(c->tls_fd, "N", 1, MSG_NOSIGNAL) != 1) {
				pg_refuse_plain(c, "not_postgresql",
						"a second GSSENCRequest from a PostgreSQL client",
						false);
				return;
			}
			c->pg_gssenc = true;
			c->pg_have = 0; /* then its SSLRequest, or a StartupMessage */
			continue;
		case PGWIRE_CANCEL:
			if (c->pg_have < PGWIRE_CANCEL_LEN)
				continue;
			if (!pg_start_cancel(c, c->pg_head))
				return;
			c->plaintext = true; /* no TLS on this one: the socket as it is */
			/* straight to the PROXY header (if any) and the target */
			c->step = 3;
			next_step(c);
			return;
		case PGWIRE_STARTUP:
			pg_refuse_plain(
				c, "plaintext",
				"a PostgreSQL client without TLS (sslmode=disable or allow); "
				"told to use sslmode=verify-full with a client certificate",
				true);
			return;
		case PGWIRE_BAD:
		default:
			pg_refuse_plain(
				c, "not_postgresql",
				"the first bytes are neither a PostgreSQL message nor a TLS "
				"handshake",
				false);
			return;
		}
	}
}

static void step_pg_preamble(struct conn *c)
{
	c->phase = PHASE_PG_PREAMBLE;
	set_timer(c, c->w->d->o->handshake_timeout_ms);
	set_io(c, &c->tls_io, c->tls_fd, EV_READ); /* on_tls_io: pg_preamble_read() */
}

/* Server: an ErrorResponse inside TLS, then an orderly close. */
static void pg_refuse_tls(struct conn *c, const char *why, const char *message, const char *hint)
{
	uint8_t out[1500];
	size_t n = pgwire_error_response(out, sizeof(out), "28000", message, hint);

	if (n == 0) /* a name with a control byte in it: said without it */
		n = pgwire_error_response(out, sizeof(out), "28000",
					  "mtls: this identity may not connect as that role", NULL);
	if (n > 0)
		(void)mtls_write(c->tls, out, n);
	close_gently(c, why);
}

/* The names of a verified client, for --pg-role (its first PG_NAMES of each kind). */
#define PG_NAMES 16
struct pg_names {
	const char *uri[PG_NAMES], *dns[PG_NAMES];
	struct pgrole_peer p;
};

static const struct pgrole_peer *pg_peer(const struct conn *c, struct pg_names *n)
{
	const struct mtls_peer *peer = mtls_conn_peer(c->tls);

	memset(n, 0, sizeof(*n));
	n->p.uri = n->uri;
	n->p.dns = n->dns;
	/* insecure-audit forwards a certificate strict mode refuses: its names are not
	 * verified, and no rule may take them for an identity */
	if (peer == NULL || c->would != MTLS_REASON_NONE)
		return &n->p;
	for (size_t i = 0; i < mtls_peer_uri_count(peer) && n->p.nuri < PG_NAMES; i++)
		n->uri[n->p.nuri++] = mtls_peer_uri(peer, i);
	for (size_t i = 0; i < mtls_peer_dns_count(peer) && n->p.ndns < PG_NAMES; i++)
		n->dns[n->p.ndns++] = mtls_peer_dns(peer, i);
	n->p.cn = mtls_peer_common_name(peer);
	return &n->p;
}

/* Whether the --pg-role rules in force let c's client in as its role and database; the rule
 * that did is copied into rule (len bytes). The workers read the rules a reload replaces. */
static bool pg_role_allowed(struct conn *c, char *rule, size_t len)
{
	struct daemon *d = c->w->d;
	struct pg_names names;
	const char *which = NULL;
	bool ok;

	pthread_mutex_lock(&d->pg_mu);
	ok = pgrole_allows(d->pgrole, pg_peer(c, &names), c->pg_user, c->pg_database,
			   c->pg_replication, &which);
	snprintf(rule, len, "%s", ok ? which : "");
	pthread_mutex_unlock(&d->pg_mu);
	return ok;
}

/* Server: the StartupMessage (or a CancelRequest), read inside TLS and judged: the role and
 * database the client asks for against --pg-role. */
static void pg_startup_done(struct conn *c)
{
	struct daemon *d = c->w->d;
	struct pgwire_startup st;
	char err[200], msg[700], hint[300];

	if (pgwire_startup_parse(c->pg_msg, c->pg_msg_len, &st, err, sizeof(err)) != 0) {
		LOG(LOG_WARN, "pg_refused", LN("conn", c->id), LS("peer", c->peer),
		    LS("identity", ident(c)), LS("reason", "bad_startup"), LS("message", err));
		atomic_fetch_add(&d->metrics.pg_refused, 1);
		pg_refuse_tls(c, "pg_refused", "mtls: the startup message is not valid", NULL);
		return;
	}
	snprintf(c->pg_user, sizeof(c->pg_user), "%s", st.user);
	snprintf(c->pg_database, sizeof(c->pg_database), "%s",
		 st.replication					 ? "replication"
		 : st.database != NULL && st.database[0] != '\0' ? st.database
								 : st.user);
	c->pg_replication = st.replication;
	if (!pg_role_allowed(c, msg, sizeof(msg))) {
		snprintf(msg, sizeof(msg),
			 "mtls: identity %.300s may not connect as role \"%.63s\"",
			 c->identity != NULL ? c->identity : "(none)", c->pg_user);
		snprintf(
			hint, sizeof(hint),
			"no --pg-role rule of this server lets it in as role \"%.63s\" to database "
			"\"%.63s\"",
			c->pg_user, c->pg_database);
		atomic_fetch_add(&d->metrics.pg_refused, 1);
		LOG(LOG_WARN, "pg_refused", LN("conn", c->id), LS("peer", c->peer),
		    LS("identity", ident(c)), LS("reason", "role_not_allowed"),
		    LS("user", c->pg_user), LS("database", c->pg_database), LS("message", msg),
		    LS("hint", hint));
		pg_refuse_tls(c, "pg_refused", msg, hint);
		return;
	}
	LOG(LOG_INFO, "pg_startup", LN("conn", c->id), LS("identity", ident(c)),
	    LS("user", c->pg_user), LS("database", c->pg_database), LS("rule", msg));
	next_step(c);
}

static void pg_startup_read(struct conn *c)
{
	for (;;) {
		size_t want = c->pg_msg_len != 0 ? c->pg_msg_len : 8;
		ssize_t r;

		if (c->pg_msg_have == want) {
			uint32_t len = 0;
			enum pgwire_kind k = pgwire_classify(c->pg_msg, c->pg_msg_have, &len);

			if (c->pg_msg_len != 0 && k == PGWIRE_CANCEL) {
				if (pg_start_cancel(c, c->pg_msg))
					next_step(c);
				return;
			}
			if (c->pg_msg_len != 0) { /* the whole StartupMessage */
				pg_startup_done(c);
				return;
			}
			if (k == PGWIRE_CANCEL) {
				c->pg_msg_len = PGWIRE_CANCEL_LEN;
				continue;
			}
			if (k != PGWIRE_STARTUP) {
				atomic_fetch_add(&c->w->d->metrics.pg_refused, 1);
				LOG(LOG_WARN, "pg_refused", LN("conn", c->id), LS("peer", c->peer),
				    LS("identity", ident(c)), LS("reason", "bad_startup"),
				    LS("message", k == PGWIRE_SSL
							  ? "an SSLRequest inside TLS"
							  : "not a startup message inside TLS"));
				pg_refuse_tls(c, "pg_refused", "mtls: expected a startup message",
					      NULL);
				return;
			}
			c->pg_msg_len = len;
			continue;
		}
		r = mtls_read(c->tls, c->pg_msg + c->pg_msg_have, want - c->pg_msg_have);
		if (r > 0) {
			c->pg_msg_have += (size_t)r;
			continue;
		}
		if (r == MTLS_WANT_POLLIN || r == MTLS_WANT_POLLOUT) {
			set_io(c, &c->tls_io, c->tls_fd, want_events((int)r));
			return;
		}
		conn_free(c, r == 0 ? "client_closed" : "client_read_error", LOG_DEBUG);
		return;
	}
}

/* Server, after the handshake: a direct TLS client must have asked for ALPN postgresql
 * (PostgreSQL 17 does the same); then its StartupMessage. */
static void step_pg_startup(struct conn *c)
{
	struct daemon *d = c->w->d;

	if (c->pg_direct && mtls_conn_alpn(c->tls) == NULL) {
		metrics_handshake(&d->metrics, MTLS_REASON_PROTOCOL_VERSION, false, 0);
		LOG(LOG_WARN, "handshake_refused", LN("conn", c->id), LS("peer", c->peer),
		    LS("identity", ident(c)), LS("reason", "alpn_required"),
		    LS("category", "protocol"),
		    LS("message", "a direct TLS connection (no SSLRequest) without ALPN "
				  "postgresql; PostgreSQL 17 clients send it "
				  "(sslnegotiation=direct)"));
		close_gently(c, "alpn_required");
		return;
	}
	c->pg_msg = malloc(PGWIRE_STARTUP_MAX);
	if (c->pg_msg == NULL) {
		conn_free(c, "out_of_memory", LOG_WARN);
		return;
	}
	c->phase = PHASE_PG_STARTUP;
	set_timer(c, d->o->handshake_timeout_ms);
	pg_startup_read(c);
}

/* n bytes read before the pump into b, ahead of what the pump moves: false (c freed) if
 * they do not fit. */
static bool buf_put(struct conn *c, struct buf *b, const uint8_t *data, size_t n)
{
	size_t room = 0;
	uint8_t *p = buf_space(c->w, b, &room);

	if (p == NULL || room < n) {
		conn_free(c, "out_of_memory", LOG_WARN);
		return false;
	}
	memcpy(p, data, n);
	b->end += n;
	return true;
}

/* Server: the StartupMessage (or CancelRequest) goes first to the target, after the PROXY
 * header if any. */
static void step_pg_forward(struct conn *c)
{
	if (!buf_put(c, &c->to_plain, c->pg_msg, c->pg_msg_len))
		return;
	free(c->pg_msg);
	c->pg_msg = NULL;
	next_step(c);
}

/* Connector: the local client's first message. An SSLRequest or GSSENCRequest is answered
 * N (TLS is ours to do, to the server); a StartupMessage or CancelRequest goes on to the
 * server once TLS is up. */
static void pg_local_read(struct conn *c)
{
	for (;;) {
		uint32_t len = 0;
		enum pgwire_kind k;
		ssize_t r = recv(c->plain_fd, c->pg_head + c->pg_have, 8 - c->pg_have, 0);

		if (r < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (r <= 0) {
			conn_free(c, r == 0 ? "client_closed" : "client_read_error", LOG_DEBUG);
			return;
		}
		c->pg_have += (size_t)r;
		k = pgwire_classify(c->pg_head, c->pg_have, &len);
		if (k == PGWIRE_NEED_MORE)
			continue;
		if (k == PGWIRE_SSL || k == PGWIRE_GSSENC) {
			if (send(c->plain_fd, "N", 1, MSG_NOSIGNAL) != 1) {
				conn_free(c, "client_write_error", LOG_DEBUG);
				return;
			}
			c->pg_have = 0;
			continue;
		}
		if (k == PGWIRE_BAD) {
			LOG(LOG_WARN, "conn_refused", LN("conn", c->id), LS("peer", c->peer),
			    LS("reason", "not_postgresql"),
			    LS("message", "the local client's first bytes are not a PostgreSQL "
					  "message (--protocol postgresql)"));
			conn_free(c, "not_postgresql", LOG_DEBUG);
			return;
		}
		/* the bytes read so far go first, the rest is pumped */
		if (!buf_put(c, &c->to_tls, c->pg_head, c->pg_have))
			return;
		set_io(c, &c->plain_io, c->plain_fd, 0);
		ev_timer_stop(c->w->loop, &c->timer);
		next_step(c); /* connect to the server */
		return;
	}
}

static void step_pg_local(struct conn *c)
{
	c->phase = PHASE_PG_PREAMBLE;
	set_timer(c, c->w->d->o->handshake_timeout_ms);
	set_io(c, &c->plain_io, c->plain_fd, EV_READ); /* on_plain_io: pg_local_read() */
}

/* Connector: the server's one-byte answer to our SSLRequest. */
static void pg_reply_read(struct conn *c)
{
	uint8_t b;
	ssize_t r = recv(c->tls_fd, &b, 1, 0);
	char msg[200];

	if (r < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (r == 1 && b == 'S') {
		next_step(c); /* the TLS handshake */
		return;
	}
	if (r == 1)
		snprintf(msg, sizeof(msg),
			 "the server at %s answered the SSLRequest with '%c' (%s); it must do TLS "
			 "(ssl = on in postgresql.conf)",
			 c->target, b >= 0x20 && b < 0x7f ? b : '?',
			 b == 'N'   ? "no TLS"
			 : b == 'E' ? "an error"
				    : "not PostgreSQL");
	else
		snprintf(msg, sizeof(msg),
			 "the server at %s closed the connection after the "
			 "SSLRequest",
			 c->target);
	{ /* the local client (waiting after its StartupMessage) hears why, as psql shows it */
		uint8_t out[600];
		char said[300];
		size_t n;

		snprintf(said, sizeof(said), "mtls connector: %s", msg);
		n = pgwire_error_response(out, sizeof(out), "08001", said, NULL);
		if (n > 0)
			(void)send(c->plain_fd, out, n, MSG_NOSIGNAL);
	}
	connect_failed(c, msg, "pg_no_tls");
}

static void step_pg_sslrequest(struct conn *c)
{
	uint8_t req[8];

	pgwire_ssl_request(req);
	if (send(c->tls_fd, req, sizeof(req), MSG_NOSIGNAL) != (ssize_t)sizeof(req)) {
		connect_failed(c, "cannot send the SSLRequest to the server", "server_write_error");
		return;
	}
	c->phase = PHASE_PG_REPLY;
	set_timer(c, c->w->d->o->handshake_timeout_ms);
	set_io(c, &c->tls_io, c->tls_fd, EV_READ); /* on_tls_io: pg_reply_read() */
}

static void on_tls_io(struct ev_loop *loop, ev_io *io, int events)
{
	struct conn *c = (struct conn *)((char *)io - offsetof(struct conn, tls_io));

	(void)loop;
	if (c->tls_read_wants & events)
		c->tls_read_wants = 0;
	if (c->tls_write_wants & events)
		c->tls_write_wants = 0;
	switch (c->phase) {
	case PHASE_HANDSHAKE:
		if (c->tls == NULL && c->detecting)
			detect(c);
		else if (c->tls == NULL)
			start_tls(c);
		else
			do_handshake(c);
		break;
	case PHASE_CONNECT: connected(c); break; /* the connector's: to the server */
	case PHASE_PUMP:
		if (pump(c))
			pump_timer(c);
		break;
	case PHASE_PG_PREAMBLE: pg_preamble_read(c); break;
	case PHASE_PG_STARTUP: pg_startup_read(c); break;
	case PHASE_PG_REPLY: pg_reply_read(c); break;
	}
}

static void on_plain_io(struct ev_loop *loop, ev_io *io, int events)
{
	struct conn *c = (struct conn *)((char *)io - offsetof(struct conn, plain_io));

	(void)loop;
	if (events & EV_READ)
		c->plain_read_blocked = false;
	if (events & EV_WRITE)
		c->plain_write_blocked = false;
	if (c->phase == PHASE_CONNECT)
		connected(c); /* the server's: to the target */
	else if (c->phase == PHASE_PG_PREAMBLE)
		pg_local_read(c); /* the connector's local client */
	else if (c->phase == PHASE_PUMP && pump(c))
		pump_timer(c);
}

/* A close the daemon decided while both sides may be alive (a re-check refused the peer,
 * the connection reached --max-connection-lifetime): close_notify to the TLS peer, once and
 * without waiting (it may be refused or slow: nothing more is owed to it), then the sockets
 * closed, so that both the TLS peer and the plaintext side see an orderly end rather than a
 * reset. */
static void close_gently(struct conn *c, const char *why)
{
	if (c->tls != NULL && c->verified && !c->tls_shut)
		(void)mtls_close(c->tls);
	if (c->plain_fd >= 0)
		shutdown(c->plain_fd, SHUT_WR);
	conn_free(c, why, LOG_INFO);
}

/* A PostgreSQL session whose role the --pg-role rules (perhaps new ones, after a reload) no
 * longer allow: logged and counted, true to close it. */
static bool pg_role_rejudge(struct conn *c)
{
	struct daemon *d = c->w->d;
	char rule[300];

	if (!d->pg || c->pg_user[0] == '\0' || c->pg_cancel || c->tls == NULL ||
	    pg_role_allowed(c, rule, sizeof(rule)))
		return false;
	atomic_fetch_add(&d->metrics.pg_refused, 1);
	LOG(LOG_WARN, "conn_rejudged", LN("conn", c->id), LS("peer", c->peer),
	    LS("identity", ident(c)), LS("reason", "role_not_allowed"), LS("user", c->pg_user),
	    LS("database", c->pg_database),
	    LS("message", "the --pg-role rules no longer let this identity in as this role"),
	    LS("action", "closing the connection"));
	return true;
}

void pump_recheck(struct worker *w)
{
	struct daemon *d = w->d;
	struct conn *next;

	enum tunnel_mode mode = (enum tunnel_mode)atomic_load(&d->metrics.mode);

	for (struct conn *c = w->conns; c != NULL; c = next) {
		enum mtls_reason reason;

		next = c->next;
		if (!c->verified)
			continue;
		/* each live connection judged as a new one would be under the mode in force: a
		 * plaintext one stays only in permissive mode */
		if (c->plaintext) {
			if (mode == TUNNEL_MODE_PERMISSIVE)
				continue;
			atomic_fetch_add(&d->metrics.closed_by_recheck[MTLS_REASON_NOT_TLS], 1);
			LOG(LOG_WARN, "conn_rejudged", LN("conn", c->id), LS("peer", c->peer),
			    LS("identity", ""), LS("reason", "not_tls"),
			    LS("message", "a plaintext client, and the mode is no longer "
					  "insecure-permissive"),
			    LS("action", "closing the connection"));
			close_gently(c, "no_longer_allowed");
			continue;
		}
		/* audit and permissive: a peer refused now is kept, counted would_refuse once */
		if (mtls_conn_recheck(c->tls, d->endpoint) == 0) {
			enum mtls_reason was = c->would;

			c->would = mtls_conn_would_refuse(c->tls);
			if (c->would != MTLS_REASON_NONE && c->would != was)
				would_refuse(c, "recheck", mtls_conn_would_refuse_message(c->tls));
			if (pg_role_rejudge(c))
				close_gently(c, "no_longer_allowed");
			continue;
		}
		reason = mtls_error_reason(c->tls);
		if ((unsigned)reason < MTLS_REASON_COUNT)
			atomic_fetch_add(&d->metrics.closed_by_recheck[reason], 1);
		LOG(LOG_WARN, "conn_rejudged", LN("conn", c->id), LS("peer", c->peer),
		    LS("identity", ident(c)), LS("reason", mtls_reason_name(reason)),
		    LS("message", mtls_error(c->tls)), LS("action", "closing the connection"));
		close_gently(c, reason == MTLS_REASON_REVOKED ? "revoked_while_connected"
							      : "no_longer_allowed");
	}
}

/* The pump phase's timer fired: nothing happened on the connection for a while. */
static void pump_timeout(struct conn *c)
{
	const struct tunnel_options *o = c->w->d->o;
	ev_tstamp quiet = ev_now(c->w->loop) - c->active + 0.001;

	/* The client left, and what it sent has not moved for a handshake timeout: the target
	 * is not reading, and the client is not there to receive an answer either. Waiting
	 * for the idle timeout (an hour by default) would only hold two descriptors. */
	if (o->max_lifetime_ms > 0 &&
	    ev_now(c->w->loop) - c->started + 0.001 >= (ev_tstamp)o->max_lifetime_ms / 1000.0) {
		atomic_fetch_add(&c->w->d->metrics.closed_max_lifetime, 1);
		close_gently(c, "max_lifetime");
	} else if (to_target_stuck(c) && o->handshake_timeout_ms > 0 &&
		   quiet >= (ev_tstamp)o->handshake_timeout_ms / 1000.0 && client_gone(c)) {
		/* a reset: a plain close would leave the kernel holding the bytes (and their
		 * socket) for a target that does not read them */
		struct linger abort = {.l_onoff = 1, .l_linger = 0};

		setsockopt(c->role->tls_client ? c->tls_fd : c->plain_fd, SOL_SOCKET, SO_LINGER,
			   &abort, sizeof(abort));
		conn_free(c, "undeliverable", LOG_INFO);
	} else if (c->pg_cancel && ev_now(c->w->loop) - c->started + 0.001 >=
					   (ev_tstamp)o->handshake_timeout_ms / 1000.0) {
		conn_free(c, "cancel_done", LOG_DEBUG);
	} else if (o->idle_timeout_ms > 0 && quiet >= (ev_tstamp)o->idle_timeout_ms / 1000.0)
		conn_free(c, "idle_timeout", LOG_INFO);
	else
		pump_timer(c);
}

static void on_timer(struct ev_loop *loop, ev_timer *t, int events)
{
	struct conn *c = (struct conn *)((char *)t - offsetof(struct conn, timer));
	struct daemon *d = c->w->d;

	(void)loop;
	(void)events;
	switch (c->phase) {
	case PHASE_HANDSHAKE:
		if (c->tls == NULL && c->detecting && d->o->plaintext_wait_ms > 0 &&
		    d->o->plaintext_wait_ms < d->o->handshake_timeout_ms) {
			if (atomic_load(&d->metrics.mode) == TUNNEL_MODE_PERMISSIVE) {
				start_plaintext(c, "silence");
				break;
			}
			/* the mode is stricter now: the rest of the handshake timeout */
			c->detecting = false;
			set_timer(c, handshake_left_ms(c));
			break;
		}
		metrics_handshake(&d->metrics, MTLS_REASON_TIMEOUT, false, 0);
		LOG(LOG_WARN, "handshake_refused", LN("conn", c->id), LS("peer", c->peer),
		    LS("reason", "timeout"), LS("category", "io"),
		    LS("message", "the peer did not complete the handshake in time"));
		conn_free(c, "handshake_timeout", LOG_DEBUG);
		break;
	case PHASE_CONNECT:
		c->connect_timed_out = true;
		attempt_failed(c, "connect timed out");
		break;
	case PHASE_PUMP: pump_timeout(c); break;
	case PHASE_PG_PREAMBLE:
	case PHASE_PG_STARTUP:
	case PHASE_PG_REPLY:
		metrics_handshake(&d->metrics, MTLS_REASON_TIMEOUT, false, 0);
		LOG(LOG_WARN, "handshake_refused", LN("conn", c->id), LS("peer", c->peer),
		    LS("reason", "timeout"), LS("category", "io"),
		    LS("message", c->phase == PHASE_PG_REPLY
					  ? "the server did not answer the SSLRequest in time"
					  : "the PostgreSQL client did not send its first message "
					    "in time"));
		conn_free(c, "handshake_timeout", LOG_DEBUG);
		break;
	}
}

/* Once per loop iteration, after the poll: each connection queued by pump() gets another
 * budget, in the order they ran out; those that run out again wait for the next iteration. */
static void on_resume(struct ev_loop *loop, ev_check *check, int events)
{
	struct worker *w = (struct worker *)((char *)check - offsetof(struct worker, resume));

	(void)loop;
	(void)events;
	for (long n = w->n_resume; n > 0 && w->resume_head != NULL; n--) {
		struct conn *c = w->resume_head;

		resume_remove(c);
		if (pump(c))
			pump_timer(c);
	}
}

static void on_resume_awake(struct ev_loop *loop, ev_idle *idle, int events)
{
	(void)loop;
	(void)idle;
	(void)events;
}

void pump_worker_init(struct worker *w)
{
	ev_check_init(&w->resume, on_resume);
	ev_idle_init(&w->resume_awake, on_resume_awake);
}

void pump_accept(struct worker *w, int fd, const struct sockaddr *peer, socklen_t len)
{
	struct daemon *d = w->d;
	struct conn *c;
	socklen_t llen = sizeof(struct sockaddr_storage);

	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		atomic_fetch_sub(&d->active, 1);
		close(fd);
		return;
	}
	c->w = w;
	c->role = d->pg ? &pg_roles[d->o->role] : &roles[d->o->role];
	c->id = atomic_fetch_add(&d->next_id, 1) + 1;
	c->started = ev_now(w->loop);
	memcpy(&c->peer_sa, peer, len);
	getsockname(fd, (struct sockaddr *)&c->local_sa, &llen);
	address_format(peer, len, c->peer, sizeof(c->peer));
	c->tls_fd = c->plain_fd = -1;
	ev_init(&c->tls_io, on_tls_io);
	ev_init(&c->plain_io, on_plain_io);
	ev_init(&c->timer, on_timer);
	c->next = w->conns;
	if (w->conns != NULL)
		w->conns->prev = c;
	w->conns = c;
	if (++w->n_conns > w->conns_peak)
		w->conns_peak = w->n_conns;
	atomic_fetch_add(&d->metrics.connections_open, 1);
	atomic_fetch_add(&d->metrics.connections_total, 1);

	/* a connector's application's bytes wait in the kernel until the server is verified */
	if (c->role->tls_client)
		c->plain_fd = fd;
	else
		c->tls_fd = fd;
	next_step(c);
}

/* A connection quiet for a whole sweep interval, with nothing on its way in either
 * direction, gives OpenSSL's state back (mtls_park(); lib/park.c). mtls_park() itself
 * refuses what it cannot carry (TLS 1.2, a record half read) and such a connection is
 * tried again at the next sweep. */
static bool park_quiet(struct conn *c)
{
	struct daemon *d = c->w->d;

	if (c->tls == NULL || c->tls_eof || c->tls_shut || c->header_left > 0 ||
	    c->to_plain.start != c->to_plain.end || c->to_tls.start != c->to_tls.end)
		return false;
	if (mtls_park(c->tls) != 1)
		return false;
	c->parked = true;
	atomic_fetch_add(&d->metrics.connections_parked, 1);
	atomic_fetch_add(&d->metrics.connections_parked_total, 1);
	return true;
}

/* A busy connection keeps its TLS record buffers between requests (malloc and free of two
 * 17 KiB buffers per request cost more than a tenth of the pump's time). Busy means pumped
 * KEEP_BUFFERS_AFTER times within one sweep interval; one that then stays quiet for a whole
 * interval gives them back, and is parked (park_quiet()). Returns how many were parked. */
unsigned pump_release_quiet(struct worker *w)
{
	bool parking = atomic_load(&w->d->park);
	unsigned parked = 0;

	for (struct conn *c = w->conns; c != NULL; c = c->next) {
		if (c->phase != PHASE_PUMP)
			continue;
		if (c->pumps == 0 && c->keeps_buffers && c->tls != NULL) {
			c->keeps_buffers = false;
			mtls_keep_buffers(c->tls, 0);
		}
		if (c->pumps == 0 && parking && !c->parked && park_quiet(c))
			parked++;
		c->pumps = 0;
	}
	return parked;
}

void pump_close_all(struct worker *w)
{
	while (w->conns != NULL)
		conn_free(w->conns, "shutdown", LOG_INFO);
	while (w->n_spare_bufs > 0)
		free(w->spare_bufs[--w->n_spare_bufs]);
}
