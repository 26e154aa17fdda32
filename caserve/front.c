/*
 * The TLS side of the CA service's HTTPS API.
 *
 * libmicrohttpd (0.9) does TLS only with GnuTLS, and the API must be served by libmtls, so
 * the two meet over a socketpair: this file accepts TCP on the main loop, runs the handshake
 * through libmtls (a client certificate is optional here: enrollment has none; routes.c
 * requires one per route), then gives one end of a socketpair to the API daemon
 * (routes_add_api()) and pumps bytes between the TLS connection and the other end.
 *
 * The verified peer travels with the connection: it is put in a table under a connection id
 * that never repeats, and libmicrohttpd is told a fake client address (an IPv6 unique local
 * address, fd00::/8, holding the id) from which routes.c claims it when the connection
 * starts (front_claim()). A descriptor number would not do: numbers are reused.
 *
 * Limits: max_connections at once, per_ip from one address (counted here: libmicrohttpd
 * sees only fake addresses), a handshake deadline, and an idle deadline that any progress
 * renews. Each refusal is one log line with its reason.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>

#include "address.h"
#include "log.h"
#include "mtls.h"
#include "serve.h"

#define FRONT_BUF	   16384
#define FRONT_ACCEPT_BATCH 32
#define FRONT_LINGER	   2.0	/* seconds of silence that end a lingering close */
#define FRONT_LINGER_MAX   30.0 /* seconds a closed connection drains a client still sending */

struct fconn {
	struct front *f;
	int fd;		  /* the client's TCP socket */
	int pair;	  /* our end of the socketpair (after the handshake), or -1 */
	struct mtls *tls; /* the libmtls connection */
	uint64_t id;
	ev_io tcp_io;
	ev_io pair_io;
	ev_timer timer;
	bool handshaken;
	bool tls_eof;	/* the client closed (close_notify or EOF) */
	bool pair_eof;	/* libmicrohttpd closed its end */
	bool up_dead;	/* libmicrohttpd reads no more: the client's bytes are dropped */
	bool lingering; /* answered and shut: waiting for the client to close (linger_close()) */
	ev_tstamp linger_until;
	char addr[64];
	struct sockaddr_storage peer_sa;
	unsigned char up[FRONT_BUF]; /* client -> libmicrohttpd */
	size_t up_len, up_off;
	unsigned char down[FRONT_BUF]; /* libmicrohttpd -> client */
	size_t down_len, down_off;
	struct fconn *prev, *next;
};

struct front {
	struct serve *s;
	struct ev_loop *loop;
	struct mtls *endpoint;
	int listen_fd;
	ev_io accept_io;
	ev_timer accept_retry;
	struct fconn *conns;
	size_t n_conns;
	uint64_t next_id;
	pthread_mutex_t table_lock; /* the peers not yet claimed, shared with routes.c */
	struct front_peer *table;
};

void front_peer_free(struct front_peer *p)
{
	if (p == NULL)
		return;
	if (p->uris != NULL)
		for (char **u = p->uris; *u != NULL; u++)
			free(*u);
	free(p->uris);
	free(p);
}

void front_fake_address(uint64_t id, struct sockaddr_in6 *out)
{
	memset(out, 0, sizeof(*out));
	out->sin6_family = AF_INET6;
	out->sin6_addr.s6_addr[0] = 0xfd;
	out->sin6_addr.s6_addr[1] = 0x6d; /* 'm' */
	for (int i = 0; i < 8; i++)
		out->sin6_addr.s6_addr[8 + i] = (unsigned char)(id >> (56 - 8 * i));
}

bool front_fake_id(const struct sockaddr *sa, uint64_t *id)
{
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;

	if (sa == NULL || sa->sa_family != AF_INET6 || s6->sin6_addr.s6_addr[0] != 0xfd ||
	    s6->sin6_addr.s6_addr[1] != 0x6d)
		return false;
	*id = 0;
	for (int i = 0; i < 8; i++)
		*id = (*id << 8) | s6->sin6_addr.s6_addr[8 + i];
	return true;
}

struct front_peer *front_claim(struct front *f, uint64_t id)
{
	struct front_peer **pp, *p = NULL;

	pthread_mutex_lock(&f->table_lock);
	for (pp = &f->table; *pp != NULL; pp = &(*pp)->next) {
		if ((*pp)->id == id) {
			p = *pp;
			*pp = p->next;
			p->next = NULL;
			break;
		}
	}
	pthread_mutex_unlock(&f->table_lock);
	return p;
}

static void table_drop(struct front *f, uint64_t id)
{
	front_peer_free(front_claim(f, id));
}

static void conn_close(struct fconn *c)
{
	struct front *f = c->f;

	ev_io_stop(f->loop, &c->tcp_io);
	ev_io_stop(f->loop, &c->pair_io);
	ev_timer_stop(f->loop, &c->timer);
	if (c->tls != NULL) {
		if (c->handshaken && !c->tls_eof && !c->lingering)
			(void)mtls_close(c->tls); /* best effort: one try, never waits */
		mtls_free(c->tls);
	}
	close(c->fd);
	if (c->pair >= 0)
		close(c->pair);
	table_drop(f, c->id); /* if libmicrohttpd never started it */
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		f->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	f->n_conns--;
	free(c);
}

static void refuse(struct fconn *c, const char *reason, const char *message)
{
	LOG(LOG_WARN, "api_refused", LS("peer", c->addr), LS("reason", reason),
	    LS("message", message));
	conn_close(c);
}

static struct front_peer *peer_of(struct fconn *c)
{
	const struct mtls_peer *mp = mtls_conn_peer(c->tls);
	struct front_peer *p = calloc(1, sizeof(*p));
	size_t n;

	if (p == NULL)
		return NULL;
	p->id = c->id;
	snprintf(p->addr, sizeof(p->addr), "%s", c->addr);
	n = mp != NULL ? mtls_peer_uri_count(mp) : 0;
	p->uris = calloc(n + 1, sizeof(char *));
	if (p->uris == NULL) {
		free(p);
		return NULL;
	}
	if (mp == NULL)
		return p;
	p->has_cert = true;
	p->client_eku = mtls_peer_client_eku(mp) == 1;
	snprintf(p->identity, sizeof(p->identity), "%s", mtls_peer_identity(mp));
	snprintf(p->serial, sizeof(p->serial), "%s", mtls_peer_serial(mp));
	snprintf(p->cert_sha256, sizeof(p->cert_sha256), "%s", mtls_peer_cert_sha256(mp));
	if (mtls_peer_common_name(mp) != NULL)
		snprintf(p->cn, sizeof(p->cn), "%s", mtls_peer_common_name(mp));
	for (size_t i = 0; i < n; i++) {
		p->uris[i] = strdup(mtls_peer_uri(mp, i));
		if (p->uris[i] == NULL) {
			front_peer_free(p);
			return NULL;
		}
	}
	return p;
}

static void arm(struct fconn *c, bool tls_read, bool tls_write, bool pair_read, bool pair_write)
{
	struct ev_loop *loop = c->f->loop;
	int te = (tls_read ? EV_READ : 0) | (tls_write ? EV_WRITE : 0);
	int pe = (pair_read ? EV_READ : 0) | (pair_write ? EV_WRITE : 0);

	if (!ev_is_active(&c->tcp_io) || c->tcp_io.events != te) {
		ev_io_stop(loop, &c->tcp_io);
		ev_io_set(&c->tcp_io, c->fd, te);
		if (te != 0)
			ev_io_start(loop, &c->tcp_io);
	}
	if (c->pair < 0)
		return;
	if (!ev_is_active(&c->pair_io) || c->pair_io.events != pe) {
		ev_io_stop(loop, &c->pair_io);
		ev_io_set(&c->pair_io, c->pair, pe);
		if (pe != 0)
			ev_io_start(loop, &c->pair_io);
	}
}

static void touch(struct fconn *c)
{
	c->timer.repeat = (double)c->f->s->o->idle_timeout_ms / 1000.0;
	ev_timer_again(c->f->loop, &c->timer);
}

static void on_linger(struct ev_loop *loop, ev_io *w, int events)
{
	struct fconn *c = w->data;
	char buf[4096];

	(void)events;
	for (int i = 0; i < 16; i++) {
		ssize_t n = recv(c->fd, buf, sizeof(buf), 0);

		if (n > 0) {
			/* still sending: wait on while it does, up to FRONT_LINGER_MAX in all */
			ev_tstamp left = c->linger_until - ev_now(loop);

			if (left <= 0)
				break;
			c->timer.repeat = left < FRONT_LINGER ? left : FRONT_LINGER;
			ev_timer_again(loop, &c->timer);
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		break; /* the client closed too (or failed): done */
	}
	conn_close(c);
}

/* The answer is out. A client still sending (a body libmicrohttpd refused to read, 413)
 * would get a reset from a close with its bytes unread, and a reset can destroy the answer
 * before the client reads it: say close_notify, shut our side, and drop what it sends until
 * it closes too or is silent for FRONT_LINGER seconds, at most FRONT_LINGER_MAX in all (as
 * Apache's lingering close). */
static void linger_close(struct fconn *c)
{
	struct ev_loop *loop = c->f->loop;

	if (c->tls_eof) {
		conn_close(c);
		return;
	}
	(void)mtls_close(c->tls); /* one try: never waits */
	c->lingering = true;
	shutdown(c->fd, SHUT_WR);
	ev_io_stop(loop, &c->pair_io);
	ev_io_stop(loop, &c->tcp_io);
	ev_set_cb(&c->tcp_io, on_linger);
	ev_io_set(&c->tcp_io, c->fd, EV_READ);
	ev_io_start(loop, &c->tcp_io);
	c->linger_until = ev_now(loop) + FRONT_LINGER_MAX;
	c->timer.repeat = FRONT_LINGER;
	ev_timer_again(loop, &c->timer);
}

/* Move what can move both ways; arm the watchers for what waits. */
static void pump(struct fconn *c)
{
	bool tls_read = false, tls_write = false, pair_read = false, pair_write = false;
	bool moved = false;

	for (;;) {
		bool progress = false;

		/* client -> libmicrohttpd */
		if (c->up_off < c->up_len) {
			ssize_t n = write(c->pair, c->up + c->up_off, c->up_len - c->up_off);

			if (n > 0) {
				c->up_off += (size_t)n;
				progress = true;
			} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
				/* libmicrohttpd stopped reading (it answered early, e.g. 413):
				 * what the client still sends is dropped, what was answered is
				 * still delivered */
				c->up_dead = true;
				c->up_off = c->up_len;
				progress = true;
			}
		}
		if (c->up_off == c->up_len && !c->tls_eof) {
			ssize_t n = mtls_read(c->tls, c->up, sizeof(c->up));

			c->up_off = c->up_len = 0;
			if (n > 0) {
				c->up_len = c->up_dead ? 0 : (size_t)n;
				progress = true;
			} else if (n == 0) {
				c->tls_eof = true;
				if (!c->up_dead)
					shutdown(c->pair, SHUT_WR);
				progress = true;
			} else if (n == MTLS_WANT_POLLOUT) {
				tls_write = true;
			} else if (n != MTLS_WANT_POLLIN) {
				conn_close(c);
				return;
			}
		}
		/* libmicrohttpd -> client */
		if (c->down_off < c->down_len) {
			ssize_t n = mtls_write(c->tls, c->down + c->down_off,
					       c->down_len - c->down_off);

			if (n > 0) {
				c->down_off += (size_t)n;
				progress = true;
			} else if (n == MTLS_WANT_POLLOUT) {
				tls_write = true;
			} else if (n == MTLS_WANT_POLLIN) {
				tls_read = true;
			} else {
				conn_close(c);
				return;
			}
		}
		if (c->down_off == c->down_len && !c->pair_eof) {
			ssize_t n = read(c->pair, c->down, sizeof(c->down));

			c->down_off = c->down_len = 0;
			if (n > 0) {
				c->down_len = (size_t)n;
				progress = true;
			} else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
				/* libmicrohttpd closed; with the client's bytes unread in its end
				 * (an early 413), an AF_UNIX read says ECONNRESET instead of 0:
				 * either way what it answered is out, and the close lingers */
				c->pair_eof = true;
				progress = true;
			}
		}
		if (!progress)
			break;
		moved = true;
	}
	/* libmicrohttpd closed and everything it said is sent: done */
	if (c->pair_eof && c->down_off == c->down_len) {
		linger_close(c);
		return;
	}
	if (moved)
		touch(c);
	if (c->up_off < c->up_len)
		pair_write = true;
	else if (!c->tls_eof && !tls_write)
		tls_read = true;
	if (c->down_off == c->down_len && !c->pair_eof)
		pair_read = true;
	arm(c, tls_read, tls_write, pair_read, pair_write);
}

static void handshake(struct fconn *c)
{
	struct front *f = c->f;
	int sv[2];
	int rc = mtls_handshake(c->tls);
	struct front_peer *p;

	if (rc == MTLS_WANT_POLLIN || rc == MTLS_WANT_POLLOUT) {
		arm(c, rc == MTLS_WANT_POLLIN, rc == MTLS_WANT_POLLOUT, false, false);
		return;
	}
	if (rc != 0) {
		refuse(c, mtls_reason_name(mtls_error_reason(c->tls)), mtls_error(c->tls));
		return;
	}
	c->handshaken = true;
	p = peer_of(c);
	if (p == NULL) {
		refuse(c, "internal", "out of memory");
		return;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
		front_peer_free(p);
		refuse(c, "internal", strerror(errno));
		return;
	}
	c->pair = sv[0];
	pthread_mutex_lock(&f->table_lock);
	p->next = f->table;
	f->table = p;
	pthread_mutex_unlock(&f->table_lock);
	LOG(LOG_DEBUG, "api_connected", LS("peer", c->addr),
	    LS("identity", p->has_cert ? p->identity : ""),
	    LS("version", mtls_conn_version(c->tls)));
	/* libmicrohttpd owns sv[1] from here, even when it fails */
	if (routes_add_api(f->s->routes, sv[1], c->id) != 0) {
		refuse(c, "internal", "the API daemon refused the connection");
		return;
	}
	touch(c);
	pump(c);
}

static void on_tcp(struct ev_loop *loop, ev_io *w, int events)
{
	struct fconn *c = w->data;

	(void)loop;
	(void)events;
	if (!c->handshaken)
		handshake(c);
	else
		pump(c);
}

static void on_pair(struct ev_loop *loop, ev_io *w, int events)
{
	(void)loop;
	(void)events;
	pump(w->data);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int events)
{
	struct fconn *c = w->data;

	(void)loop;
	(void)events;
	if (!c->handshaken)
		refuse(c, "timeout", "the TLS handshake did not finish in time");
	else
		conn_close(c);
}

static size_t count_from(struct front *f, const struct sockaddr_storage *ss)
{
	size_t n = 0;

	for (struct fconn *c = f->conns; c != NULL; c = c->next) {
		if (c->peer_sa.ss_family != ss->ss_family)
			continue;
		if (ss->ss_family == AF_INET &&
		    ((const struct sockaddr_in *)(const void *)&c->peer_sa)->sin_addr.s_addr ==
			    ((const struct sockaddr_in *)(const void *)ss)->sin_addr.s_addr)
			n++;
		else if (ss->ss_family == AF_INET6 &&
			 memcmp(&((const struct sockaddr_in6 *)(const void *)&c->peer_sa)
					 ->sin6_addr,
				&((const struct sockaddr_in6 *)(const void *)ss)->sin6_addr,
				16) == 0)
			n++;
	}
	return n;
}

static void on_accept_retry(struct ev_loop *loop, ev_timer *w, int events)
{
	struct front *f = w->data;

	(void)events;
	ev_io_start(loop, &f->accept_io);
}

static void on_accept(struct ev_loop *loop, ev_io *w, int events)
{
	struct front *f = w->data;
	const struct serve_options *o = f->s->o;

	(void)events;
	for (int i = 0; i < FRONT_ACCEPT_BATCH; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		char addr[64];
		struct fconn *c;
		int fd = accept4(f->listen_fd, (struct sockaddr *)&ss, &len,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				/* out of descriptors: pause instead of spinning on the ready socket
				 */
				LOG(LOG_WARN, "accept_failed", LS("message", strerror(errno)));
				ev_io_stop(loop, &f->accept_io);
				ev_timer_set(&f->accept_retry, 0.5, 0.);
				ev_timer_start(loop, &f->accept_retry);
			}
			return;
		}
		address_format((struct sockaddr *)&ss, len, addr, sizeof(addr));
		if ((long long)f->n_conns >= o->max_connections) {
			LOG(LOG_WARN, "api_refused", LS("peer", addr),
			    LS("reason", "max_connections"), LN("limit", o->max_connections));
			close(fd);
			continue;
		}
		if ((long long)count_from(f, &ss) >= o->per_ip) {
			LOG(LOG_WARN, "api_refused", LS("peer", addr), LS("reason", "per_ip_limit"),
			    LN("limit", o->per_ip));
			close(fd);
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (c == NULL) {
			close(fd);
			continue;
		}
		c->f = f;
		c->fd = fd;
		c->pair = -1;
		c->id = ++f->next_id;
		c->peer_sa = ss;
		snprintf(c->addr, sizeof(c->addr), "%s", addr);
		c->tls = mtls_accept_fd(f->endpoint, fd);
		if (c->tls == NULL) {
			LOG(LOG_ERROR, "api_refused", LS("peer", addr), LS("reason", "internal"),
			    LS("message", mtls_error(f->endpoint)));
			close(fd);
			free(c);
			continue;
		}
		ev_init(&c->tcp_io, on_tcp);
		ev_init(&c->pair_io, on_pair);
		c->tcp_io.data = c->pair_io.data = c;
		ev_init(&c->timer, on_timer);
		c->timer.data = c;
		c->timer.repeat = (double)o->handshake_timeout_ms / 1000.0;
		ev_timer_again(loop, &c->timer);
		c->next = f->conns;
		if (f->conns != NULL)
			f->conns->prev = c;
		f->conns = c;
		f->n_conns++;
		handshake(c);
	}
}

struct front *front_start(struct serve *s, struct ev_loop *loop, int listen_fd, char *err,
			  size_t err_len)
{
	struct front *f = calloc(1, sizeof(*f));

	if (f == NULL) {
		snprintf(err, err_len, "out of memory");
		return NULL;
	}
	f->s = s;
	f->loop = loop;
	f->listen_fd = listen_fd;
	pthread_mutex_init(&f->table_lock, NULL);
	f->endpoint = mtls_server_new();
	if (f->endpoint == NULL || front_reload(f, err, err_len) != 0) {
		if (f->endpoint == NULL)
			snprintf(err, err_len, "out of memory");
		mtls_free(f->endpoint);
		pthread_mutex_destroy(&f->table_lock);
		free(f);
		return NULL;
	}
	ev_io_init(&f->accept_io, on_accept, listen_fd, EV_READ);
	f->accept_io.data = f;
	ev_init(&f->accept_retry, on_accept_retry);
	f->accept_retry.data = f;
	ev_io_start(loop, &f->accept_io);
	return f;
}

int front_reload(struct front *f, char *err, size_t err_len)
{
	struct serve *s = f->s;
	char cert[PATH_MAX], key[PATH_MAX];
	struct mtls_config *cfg = mtls_config_new();
	int rc = -1;

	if (cfg == NULL) {
		snprintf(err, err_len, "out of memory");
		return -1;
	}
	snprintf(cert, sizeof(cert), "%s/api-chain.pem", s->o->cert_dir);
	snprintf(key, sizeof(key), "%s/api.key", s->o->cert_dir);
	/* s->crl is replaced by the HTTP threads too: read it, and say which one is applied,
	 * under the lock */
	pthread_mutex_lock(&s->lock);
	if (mtls_config_set_cert_file(cfg, cert) != 0 || mtls_config_set_key_file(cfg, key) != 0 ||
	    mtls_config_set_ca_mem(cfg, (const uint8_t *)s->trust_pem, s->trust_len) != 0 ||
	    (s->crl.pem != NULL &&
	     mtls_config_add_crl_mem(cfg, (const uint8_t *)s->crl.pem, s->crl.pem_len) != 0) ||
	    mtls_config_set_allow_any_identity(cfg, 1) != 0 ||
	    mtls_config_insecure_optional_client_cert(cfg) != 0 ||
	    /* any certificate the CA issued is a credential for its own renewal, a server's
	     * (serverAuth alone) included; each route decides who may do what */
	    mtls_config_insecure_server_eku_clients(cfg) != 0) {
		snprintf(err, err_len, "API TLS configuration: %s", mtls_config_error(cfg));
		goto out;
	}
	if (mtls_configure(f->endpoint, cfg) != 0) {
		snprintf(err, err_len, "API TLS configuration: %s", mtls_error(f->endpoint));
		goto out;
	}
	memcpy(s->front_crl_etag, s->crl.etag, sizeof(s->front_crl_etag));
	rc = 0;
out:
	pthread_mutex_unlock(&s->lock);
	mtls_config_free(cfg);
	return rc;
}

void front_stop(struct front *f)
{
	if (f == NULL)
		return;
	ev_io_stop(f->loop, &f->accept_io);
	ev_timer_stop(f->loop, &f->accept_retry);
	while (f->conns != NULL)
		conn_close(f->conns);
	while (f->table != NULL) {
		struct front_peer *p = f->table;

		f->table = p->next;
		front_peer_free(p);
	}
	mtls_free(f->endpoint);
	pthread_mutex_destroy(&f->table_lock);
	free(f);
}
