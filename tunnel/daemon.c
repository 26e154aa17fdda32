/*
 * The daemon's main thread: check the whole configuration, bind, drop privileges, start the
 * workers, then handle signals, reloads and the final drain.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include "credentials.h"
#include "daemon.h"
#include "log.h"

#define WATCH_MAX	    16
#define LISTEN_MODE_DEFAULT 0660 /* unix sockets: owner and group */

struct file_sig {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
	struct timespec ctime;
	bool exists;
};

struct main_state {
	struct daemon *d;
	const char *files[WATCH_MAX];
	struct file_sig sigs[WATCH_MAX];
	size_t nfiles;
	ev_signal sighup, sigterm, sigint;
	ev_timer watch;
	ev_timer drain;
	ev_tstamp drain_deadline;
	struct metrics_http *http;
};

void tunnel_defaults(struct tunnel_options *o, enum tunnel_role role)
{
	long cores = sysconf(_SC_NPROCESSORS_ONLN);

	memset(o, 0, sizeof(*o));
	o->role = role;
	o->workers = cores > 0 ? cores : 1;
	o->max_connections = 10000;
	o->handshake_timeout_ms = 10000;
	o->connect_timeout_ms = 5000;
	o->idle_timeout_ms = 3600000;
	o->drain_timeout_ms = 30000;
	o->watch_interval_ms = 2000;
	o->log_format = "json";
	o->log_level = "info";
	o->tls_min = "1.2";
	o->verify_cache = MTLS_VERIFY_CACHE_DEFAULT;
	o->session_cache = MTLS_SESSION_CACHE_DEFAULT;
}

static void fail(const char *role, const char *msg)
{
	fprintf(stderr, "mtls %s: %s\n", role, msg);
}

static void update_expiry(struct daemon *d)
{
	atomic_store(&d->metrics.cert_not_after,
		     (long long)mtls_endpoint_cert_not_after(d->endpoint));
	atomic_store(&d->metrics.ca_not_after, (long long)mtls_endpoint_ca_not_after(d->endpoint));
	atomic_store(&d->metrics.crl_next_update,
		     (long long)mtls_endpoint_crl_next_update(d->endpoint));
}

static void sign_files(struct main_state *ms)
{
	for (size_t i = 0; i < ms->nfiles; i++) {
		struct stat sb;
		struct file_sig *s = &ms->sigs[i];

		memset(s, 0, sizeof(*s));
		if (stat(ms->files[i], &sb) == 0) {
			s->exists = true;
			s->dev = sb.st_dev;
			s->ino = sb.st_ino;
			s->size = sb.st_size;
			s->mtime = sb.st_mtim;
			s->ctime = sb.st_ctim;
		}
	}
}

static bool files_changed(struct main_state *ms)
{
	struct file_sig old[WATCH_MAX];

	memcpy(old, ms->sigs, sizeof(old));
	sign_files(ms);
	return memcmp(old, ms->sigs, sizeof(struct file_sig) * ms->nfiles) != 0;
}

static struct mtls *endpoint_new(enum tunnel_role role)
{
	return role == TUNNEL_SERVER ? mtls_server_new() : mtls_client_new();
}

static void utc(time_t t, char *out, size_t len)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The own certificate of endpoint e (configured from the options' files): -1 and why in
 * err if it has expired. If less than a third of its lifetime is left (where cert-manager
 * renews by default), a warning: renewal is due and did not happen. */
static int check_own_cert(const struct tunnel_options *o, const struct mtls *e, char *err,
			  size_t len)
{
	time_t now = time(NULL), not_after = mtls_endpoint_cert_not_after(e), nb, na;
	char when[32], msg[600];
	long long left = (long long)(not_after - now);

	if (o->cert == NULL || not_after == 0)
		return 0;
	utc(not_after, when, sizeof(when));
	if (left <= 0) {
		snprintf(err, len, "own certificate %s expired at %s; renew it", o->cert, when);
		return -1;
	}
	/* the lifetime from the file, if it still holds the certificate loaded */
	if (credentials_cert_validity(o->cert, &nb, &na) != 0 || na != not_after || nb >= na ||
	    left >= (long long)(na - nb) / 3)
		return 0;
	if (left >= 2 * 86400)
		snprintf(msg, sizeof(msg), "%lld days", left / 86400);
	else
		snprintf(msg, sizeof(msg), "%lld hours", left / 3600);
	snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg),
		 " left of its %lld days: own certificate %s expires at %s; renew it",
		 (long long)(na - nb) / 86400, o->cert, when);
	LOG(LOG_WARN, "cert_expiring", LS("file", o->cert), LS("not_after", when),
	    LN("seconds_left", left), LS("message", msg));
	return 0;
}

/* A reload's new configuration is tried on a probe endpoint first: the live one takes it
 * only if it loads and its own certificate has not expired. -1 with a reason name and a
 * message. */
static int reload_apply(struct daemon *d, struct mtls_config *cfg, const char **reason, char *err,
			size_t len)
{
	struct mtls *probe = endpoint_new(d->o->role);
	int rc = -1;

	*reason = "internal";
	if (probe == NULL) {
		snprintf(err, len, "out of memory");
	} else if (mtls_configure(probe, cfg) != 0) {
		*reason = mtls_reason_name(mtls_error_reason(probe));
		snprintf(err, len, "%s", mtls_error(probe));
	} else if (check_own_cert(d->o, probe, err, len) != 0) {
		*reason = mtls_reason_name(MTLS_REASON_EXPIRED);
	} else if (mtls_configure(d->endpoint, cfg) != 0) {
		*reason = mtls_reason_name(mtls_error_reason(d->endpoint));
		snprintf(err, len, "%s", mtls_error(d->endpoint));
	} else {
		rc = 0;
	}
	mtls_free(probe);
	return rc;
}

/* New certificate, key, CA, CRLs and rules for new handshakes; the old ones stay if anything
 * is wrong with the new. */
static void reload(struct main_state *ms, const char *trigger)
{
	struct daemon *d = ms->d;
	char err[700];
	const char *reason = "config";
	struct mtls_config *cfg = credentials_build(d->o, err, sizeof(err));

	if (cfg == NULL || reload_apply(d, cfg, &reason, err, sizeof(err)) != 0) {
		atomic_fetch_add(&d->metrics.reloads_failed, 1);
		LOG(LOG_ERROR, "reload_failed", LS("trigger", trigger), LS("reason", reason),
		    LS("message", err), LS("action", "keeping the current certificates and rules"));
		mtls_config_free(cfg);
		return;
	}
	mtls_config_free(cfg);
	atomic_fetch_add(&d->metrics.reloads_ok, 1);
	update_expiry(d);
	LOG(LOG_INFO, "reload", LS("trigger", trigger),
	    LN("cert_not_after", mtls_endpoint_cert_not_after(d->endpoint)),
	    LN("crl_next_update", mtls_endpoint_crl_next_update(d->endpoint)));
}

static void on_sighup(struct ev_loop *loop, ev_signal *w, int events)
{
	struct main_state *ms =
		(struct main_state *)((char *)w - offsetof(struct main_state, sighup));

	(void)loop;
	(void)events;
	sign_files(ms);
	reload(ms, "SIGHUP");
}

static void on_watch(struct ev_loop *loop, ev_timer *w, int events)
{
	struct main_state *ms =
		(struct main_state *)((char *)w - offsetof(struct main_state, watch));

	(void)loop;
	(void)events;
	if (files_changed(ms))
		reload(ms, "file_change");
}

static void wake_all(struct daemon *d)
{
	for (int i = 0; i < d->nworkers; i++)
		if (d->workers[i].loop != NULL)
			worker_wake(&d->workers[i]);
}

static void on_drain_tick(struct ev_loop *loop, ev_timer *w, int events)
{
	struct main_state *ms =
		(struct main_state *)((char *)w - offsetof(struct main_state, drain));
	struct daemon *d = ms->d;
	long long left = atomic_load(&d->active);

	(void)events;
	if (left > 0 && ev_now(loop) < ms->drain_deadline)
		return;
	LOG(left > 0 ? LOG_WARN : LOG_INFO, "stopped", LN("connections_cut", left));
	atomic_store(&d->phase, 2);
	wake_all(d);
	ev_break(loop, EVBREAK_ALL);
}

static void on_stop(struct ev_loop *loop, ev_signal *w, int events)
{
	struct main_state *ms =
		w->signum == SIGTERM
			? (struct main_state *)((char *)w - offsetof(struct main_state, sigterm))
			: (struct main_state *)((char *)w - offsetof(struct main_state, sigint));
	struct daemon *d = ms->d;

	(void)events;
	if (atomic_load(&d->phase) != 0)
		return;
	atomic_store(&d->phase, 1);
	atomic_store(&d->metrics.draining, true);
	LOG(LOG_INFO, "draining", LS("signal", w->signum == SIGTERM ? "SIGTERM" : "SIGINT"),
	    LN("connections", atomic_load(&d->active)), LN("timeout_ms", d->o->drain_timeout_ms));
	wake_all(d);
	ev_timer_stop(loop, &ms->watch);
	ms->drain_deadline = ev_now(loop) + (ev_tstamp)d->o->drain_timeout_ms / 1000.0;
	ev_timer_init(&ms->drain, on_drain_tick, 0.0, 0.05);
	ev_timer_start(loop, &ms->drain);
}

/* --listen-mode: octal, at most 0777, only for a unix socket. A connector's socket that
 * every local user may connect to (o+w) gives them all the connector's identity: refused
 * unless --insecure-listen-remote says that is meant. */
static int check_listen_mode(struct daemon *d, char *err, size_t len)
{
	const char *m = d->o->listen_mode;
	unsigned long v;

	d->listen_mode = LISTEN_MODE_DEFAULT;
	if (m == NULL)
		return 0;
	if (!d->listen.is_unix) {
		snprintf(err, len, "--listen-mode is for a unix:/path --listen address, not %s",
			 d->o->listen);
		return -1;
	}
	if (m[0] == '\0' || strlen(m) > 4 || strspn(m, "01234567") != strlen(m) ||
	    (v = strtoul(m, NULL, 8)) > 0777) {
		snprintf(err, len,
			 "--listen-mode '%.40s': give the socket's permissions in octal, at most "
			 "0777 (such as 0660: owner and group)",
			 m);
		return -1;
	}
	if (d->o->role == TUNNEL_CONNECTOR && (v & 0002) && !d->o->insecure_listen_remote) {
		snprintf(err, len,
			 "--listen-mode %s lets every local user connect, and whoever connects "
			 "speaks with your certificate; use 0660 (owner and group) or 0600, or add "
			 "--insecure-listen-remote",
			 m);
		return -1;
	}
	d->listen_mode = (unsigned)v;
	return 0;
}

/* Check everything that can be checked before a socket is opened. */
static int check(struct daemon *d, const char *role, char *err, size_t len)
{
	const struct tunnel_options *o = d->o;
	struct mtls_config *cfg;

	if (o->listen == NULL || o->target == NULL) {
		snprintf(err, len, "give --listen and --%s",
			 o->role == TUNNEL_SERVER ? "target" : "server");
		return -1;
	}
	if (o->ca == NULL || (o->role == TUNNEL_SERVER && (o->cert == NULL || o->key == NULL))) {
		snprintf(err, len, "give --ca%s",
			 o->role == TUNNEL_SERVER ? ", --cert and --key" : "");
		return -1;
	}
	if (o->role == TUNNEL_CONNECTOR && (o->cert == NULL || o->key == NULL)) {
		snprintf(err, len,
			 "give --cert and --key: the connector authenticates itself with "
			 "a client certificate");
		return -1;
	}
	if (o->workers < 1 || o->workers > METRICS_WORKERS_MAX || o->max_connections < 0 ||
	    o->handshake_timeout_ms < 1 || o->connect_timeout_ms < 1 || o->idle_timeout_ms < 0 ||
	    o->drain_timeout_ms < 0 || o->watch_interval_ms < 0) {
		snprintf(err, len,
			 "workers must be 1..256 and timeouts positive (idle, drain and "
			 "watch may be 0 for none)");
		return -1;
	}
	if (o->tls_min != NULL && strcmp(o->tls_min, "1.2") != 0 &&
	    strcmp(o->tls_min, "1.3") != 0) {
		snprintf(err, len, "--tls-min is 1.2 or 1.3");
		return -1;
	}
	if (address_parse(o->listen, &d->listen, err, len) != 0 ||
	    address_parse(o->target, &d->target, err, len) != 0)
		return -1;
	if (check_listen_mode(d, err, len) != 0)
		return -1;
	if (o->metrics != NULL &&
	    address_parse(o->metrics, &d->metrics_addr, err + 11, len - 11) != 0) {
		memcpy(err, "--metrics: ", 11);
		return -1;
	}
	if (o->role == TUNNEL_CONNECTOR && !address_is_local(&d->listen) &&
	    !o->insecure_listen_remote) {
		snprintf(err, len,
			 "--listen %s is not loopback or a unix socket: the connector takes "
			 "plaintext, "
			 "so anyone who reaches it speaks with your certificate; listen on "
			 "127.0.0.1 "
			 "or unix:/path, or add --insecure-listen-remote",
			 o->listen);
		return -1;
	}
	if (o->role == TUNNEL_CONNECTOR) {
		d->server_name = o->server_name != NULL ? o->server_name : d->target.host;
		if (d->server_name == NULL || d->server_name[0] == '\0') {
			snprintf(err, len,
				 "give --server-name: the name the server's certificate "
				 "must carry");
			return -1;
		}
	}
	cfg = credentials_build(o, err, len);
	if (cfg == NULL)
		return -1;
	d->endpoint = endpoint_new(o->role);
	if (d->endpoint == NULL || mtls_configure(d->endpoint, cfg) != 0) {
		snprintf(err, len, "%s",
			 d->endpoint != NULL ? mtls_error(d->endpoint) : "out of memory");
		mtls_config_free(cfg);
		return -1;
	}
	if (mtls_config_insecure(cfg)[0] != '\0')
		LOG(LOG_WARN, "insecure_options", LS("options", mtls_config_insecure(cfg)));
	mtls_config_free(cfg);
	if (check_own_cert(o, d->endpoint, err, len) != 0)
		return -1;
	(void)role;
	return 0;
}

static void set_port(struct address *a, int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (a->is_unix || getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
		return;
	if (ss.ss_family == AF_INET)
		((struct sockaddr_in *)&a->sa)->sin_port = ((struct sockaddr_in *)&ss)->sin_port;
	else if (ss.ss_family == AF_INET6)
		((struct sockaddr_in6 *)&a->sa)->sin6_port =
			((struct sockaddr_in6 *)&ss)->sin6_port;
}

static int bind_workers(struct daemon *d, char *err, size_t len)
{
	for (int i = 0; i < d->nworkers; i++) {
		struct worker *w = &d->workers[i];

		w->d = d;
		w->id = i;
		if (d->listen.is_unix && i > 0) {
			/* one socket, every loop accepts; each closes its own descriptor */
			w->listen_fd = fcntl(d->workers[0].listen_fd, F_DUPFD_CLOEXEC, 0);
			if (w->listen_fd < 0) {
				snprintf(err, len, "dup: %s", strerror(errno));
				return -1;
			}
			w->own_listen_fd = true;
			continue;
		}
		w->listen_fd =
			address_listen(&d->listen, !d->listen.is_unix, d->listen_mode, err, len);
		if (w->listen_fd < 0)
			return -1;
		w->own_listen_fd = true;
		if (i == 0) /* port 0: the others join the port the first one got */
			set_port(&d->listen, w->listen_fd);
	}
	return 0;
}

static int drop_privileges(const char *user, char *err, size_t len)
{
	struct passwd *pw = getpwnam(user);

	if (pw == NULL) {
		snprintf(err, len, "--user %s: no such user", user);
		return -1;
	}
	if (initgroups(pw->pw_name, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 ||
	    setuid(pw->pw_uid) != 0) {
		snprintf(err, len, "cannot become user %s: %s", user, strerror(errno));
		return -1;
	}
	if (setuid(0) == 0) {
		snprintf(err, len, "dropping privileges to %s did not stick", user);
		return -1;
	}
	return 0;
}

/* Every tunnelled connection holds two descriptors: take all the kernel allows us. */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int tunnel_run(const struct tunnel_options *o)
{
	const char *role = o->role == TUNNEL_SERVER ? "server" : "connector";
	struct daemon d = {.o = o};
	struct main_state ms = {.d = &d};
	struct ev_loop *loop = NULL;
	enum log_format lf;
	enum log_level ll;
	sigset_t block, old;
	char err[800], addr[300];
	int metrics_fd = -1, rc = 2;

	if (log_format_parse(o->log_format, &lf) != 0 || log_level_parse(o->log_level, &ll) != 0) {
		fail(role, "--log-format is json or logfmt; --log-level is debug, info, warn or "
			   "error");
		return 2;
	}
	if (log_setup(lf, ll, o->log_file) != 0) {
		snprintf(err, sizeof(err), "cannot open --log-file %s: %s", o->log_file,
			 strerror(errno));
		fail(role, err);
		return 2;
	}
	metrics_init(&d.metrics, role);
	signal(SIGPIPE, SIG_IGN);
	raise_fd_limit();
	if (check(&d, role, err, sizeof(err)) != 0) {
		fail(role, err);
		goto out;
	}
	rc = 1;
	d.metrics.endpoint = d.endpoint;
	update_expiry(&d);
	d.nworkers = (int)o->workers;
	d.metrics.nworkers = d.nworkers;
	d.workers = calloc((size_t)d.nworkers, sizeof(*d.workers));
	if (d.workers == NULL || bind_workers(&d, err, sizeof(err)) != 0) {
		fail(role, d.workers == NULL ? "out of memory" : err);
		goto out;
	}
	if (o->metrics != NULL) {
		if ((metrics_fd = address_listen(&d.metrics_addr, false, LISTEN_MODE_DEFAULT, err,
						 sizeof(err))) < 0) {
			fail(role, err);
			goto out;
		}
		address_local(metrics_fd, addr, sizeof(addr));
		ms.http = metrics_http_start(metrics_fd, &d.metrics);
		if (ms.http == NULL) {
			close(metrics_fd);
			fail(role, "cannot start the metrics HTTP server");
			goto out;
		}
		LOG(LOG_INFO, "metrics_listening", LS("address", addr));
	}
	if (o->user != NULL && drop_privileges(o->user, err, sizeof(err)) != 0) {
		fail(role, err);
		goto out;
	}

	/* signals go to the main loop only */
	sigemptyset(&block);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	for (int i = 0; i < d.nworkers; i++)
		if (worker_start(&d.workers[i]) != 0) {
			pthread_sigmask(SIG_SETMASK, &old, NULL);
			fail(role, "cannot start worker threads");
			atomic_store(&d.phase, 2);
			wake_all(&d);
			goto join;
		}
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	address_local(d.workers[0].listen_fd, addr, sizeof(addr));
	LOG(LOG_INFO, "listening", LS("role", role), LS("address", addr), LS("target", o->target),
	    LN("workers", d.nworkers), LN("pid", getpid()));

	loop = ev_default_loop(EVFLAG_AUTO);
	ev_signal_init(&ms.sighup, on_sighup, SIGHUP);
	ev_signal_init(&ms.sigterm, on_stop, SIGTERM);
	ev_signal_init(&ms.sigint, on_stop, SIGINT);
	ev_signal_start(loop, &ms.sighup);
	ev_signal_start(loop, &ms.sigterm);
	ev_signal_start(loop, &ms.sigint);
	ms.nfiles = credentials_files(o, ms.files, WATCH_MAX);
	sign_files(&ms);
	if (o->watch_interval_ms > 0) {
		ev_tstamp every = (ev_tstamp)o->watch_interval_ms / 1000.0;

		ev_timer_init(&ms.watch, on_watch, every, every);
		ev_timer_start(loop, &ms.watch);
	}
	ev_run(loop, 0);
	rc = 0;
join:
	for (int i = 0; i < d.nworkers; i++)
		if (d.workers[i].loop != NULL) {
			pthread_join(d.workers[i].thread, NULL);
			ev_loop_destroy(d.workers[i].loop);
		}
out:
	metrics_http_stop(ms.http);
	if (loop != NULL)
		ev_loop_destroy(loop);
	for (int i = 0; d.workers != NULL && i < d.nworkers; i++)
		if (d.workers[i].own_listen_fd && d.workers[i].listen_fd >= 0)
			close(d.workers[i].listen_fd);
	if (d.listen.is_unix && d.workers != NULL)
		unlink(((struct sockaddr_un *)&d.listen.sa)->sun_path);
	free(d.workers);
	mtls_free(d.endpoint);
	return rc;
}
