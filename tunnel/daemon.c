/*
 * The daemon's main thread: check the whole configuration, bind, drop privileges, start the
 * workers, then handle signals, reloads and the final drain.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <malloc.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include "caclient.h"
#include "credentials.h"
#include "crlfetch.h"
#include "duration.h"
#include "daemon.h"
#include "log.h"
#include "fileset.h"
#include "ocspfetch.h"
#include "pgrole.h"
#include "pkcs11.h"
#include "renewal.h"
#include "renewer.h"
#include "sandbox.h"
#include "service_listen.h"
#include "service_notify.h"

#define WATCH_MAX	    16
#define WATCH_LINKS	    32	    /* symbolic links on the files' paths, watched themselves */
#define WATCH_MIN_MS	    100	    /* --watch-interval, unless 0 (off) */
#define WATCH_SETTLE	    1.0	    /* seconds a changed file must stay unchanged to load */
#define WATCH_UNSETTLED	    5.0	    /* seconds of changes after which the wait is logged */
#define WATCH_SLACK	    0.05    /* past WATCH_SETTLE: the second look is surely late enough */
#define MAX_CONNECTIONS	    1000000 /* --max-connections, before the descriptor limit */
#define CRL_WARN_EVERY	    600.0   /* seconds between repeated CRL warnings */
#define HEALTH_EVERY	    60.0    /* seconds between periodic checks (CRLs) */
#define TRIM_EVERY	    10.0    /* seconds, at least, between two trims of the heap */
#define LISTEN_MODE_DEFAULT 0660    /* unix sockets: owner and group */
#define NOTIFY_STATUS_EVERY 5.0	    /* seconds between checks of systemd's STATUS= line */

struct file_sig {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
	struct timespec ctime;
	bool exists;
};

#define KEEP_LISTS 4 /* the restart-only lists: target, crl-url, crl-cache, sandbox-allow */

/* A list of options parsed again, replaced by the running one's: put back before those
 * options are freed (their parser frees the array it made, not the running one). */
struct kept_list {
	struct tunnel_list *field; /* NULL: none */
	struct tunnel_list parsed;
};

struct tunnel;

/* The tunnels of one process (the sections of its config file) share the main loop: each
 * drains on SIGTERM, and the loop ends when the last one is done. */
struct stop_group {
	struct tunnel *tunnels;
	size_t n;
	size_t running; /* tunnels not done draining */
	struct ev_loop *loop;
	/* a SIGHUP reloads every tunnel in turn; systemd hears READY=1 once, after the last,
	 * with the first failure (batch: the tunnels' own notifications only note theirs) */
	bool batch;
	bool batch_ok;
	char batch_message[SERVICE_NOTIFY_STATUS_MAX];
};

struct main_state {
	struct daemon *d;
	struct stop_group *group;
	bool primary; /* the first tunnel: it speaks to systemd and reopens the log file */
	const struct credentials_secret *pass; /* --key-passphrase-env's, or NULL */
	const char *files[WATCH_MAX];
	struct file_sig sigs[WATCH_MAX];    /* as last loaded (or tried) */
	struct file_sig pending[WATCH_MAX]; /* a change seen, not yet settled */
	bool pending_set;
	ev_tstamp pending_since;
	ev_tstamp changing_since; /* first change not loaded yet; 0: none */
	bool unsettled_told;
	size_t nfiles;
	struct credentials_chain chain; /* the own chain in service */
	ev_tstamp crl_warned;		/* when the CRL warnings were last logged */
	ev_signal sighup, sigterm, sigint, sigusr1;
	/* the file watcher: one ev_stat per file (inotify where libev can use it, else a stat
	 * every --watch-interval), and one per symbolic link's target (a link swapped to
	 * another directory, as Kubernetes secret volumes do, changes no inode inotify sees on
	 * the link's path); watch is the settle timer of the second look */
	ev_stat stat[WATCH_MAX], stat_real[WATCH_MAX];
	char *real[WATCH_MAX]; /* realpath() of files[i] where it differs, else NULL */
	/* and each symbolic link met on the way to a file (a directory link such as current ->
	 * releases/1 swapped to releases/2, the old release kept, changes neither the file's
	 * path nor its old target) */
	ev_stat stat_link[WATCH_LINKS];
	char *link[WATCH_LINKS];
	size_t nlinks;
	bool watching;
	ev_timer watch;
	ev_timer health;
	ev_timer trim;
	ev_tstamp trimmed_at;
	ev_timer drain;
	ev_tstamp drain_deadline;
	struct metrics_http *http;
	/* the options reloads read (files, CA, CRLs, allow rules): d->o at start, those parsed
	 * again by the last SIGHUP after (live_handle owns them). Main thread only: workers
	 * read d->o, whose fields a reload never changes. */
	const struct tunnel_options *live;
	void *live_handle;
	/* with --crl-url, live's --crl list is crl_files_live: live_handle's own (malloc'd)
	 * list goes back into it before the handle is freed */
	struct tunnel_list *live_crl;
	struct tunnel_list live_crl_parsed;
	/* live's restart-only lists, the running ones' arrays: what was parsed goes back in
	 * before live_handle is freed (restart_only()) */
	struct kept_list live_kept[KEEP_LISTS];
	struct crlfetch *crlfetch[CREDENTIALS_FILES_MAX]; /* one per --crl-url */
	size_t ncrlfetch;
	char crl_auto[2049];  /* the URL --crl-url auto stands for */
	ev_async crl_fetched; /* a fetch thread wrote a new CRL to its --crl-cache */
	const char *crl_files[CREDENTIALS_FILES_MAX];	   /* --crl and --crl-cache */
	const char *crl_files_live[CREDENTIALS_FILES_MAX]; /* the same for live (SIGHUP) */
	struct renewer *renewer;			   /* --ca-url, or NULL */
	bool roots_writable; /* --ca-url: --ca's directory is writable (roots refreshed) */
	ev_async renewed;    /* the renewal thread replaced the cert and key, or --ca */

	struct ocspfetch *ocspfetch; /* the endpoint's OCSP jobs */
	/* /status: what the files in service hold (set at start and by each good reload) and
	 * when the daemon started */
	json_t *creds;
	time_t started;
	const struct sandbox *sandbox; /* the process's (sandbox.h), for /status */

	ev_async ocsp_recheck; /* an OCSP answer about a peer turned to revoked */

	/* systemd (service_notify.h; all idle without NOTIFY_SOCKET) */
	ev_timer watchdog;	/* WATCHDOG=1, every half of WatchdogSec= while healthy */
	ev_timer status_timer;	/* STATUS= when what it says changed */
	bool reloading;		/* RELOADING=1 sent, its READY=1 not yet */
	bool watchdog_withheld; /* a worker is stuck: no WATCHDOG=1 until it beats again */
	char listening[300];	/* "listening on ADDRESS → TARGET" */
	char last_reload[SERVICE_NOTIFY_STATUS_MAX];
	char status_sent[1024]; /* sent as at most SERVICE_NOTIFY_STATUS_MAX bytes */
};

/* One tunnel of the process (a config file's [section], or the only one). */
struct tunnel {
	struct tunnel_options eff; /* --max-connections may be lowered to fit the descriptors */
	struct daemon d;
	struct main_state ms;
	struct credentials_secret *pass; /* --key-passphrase-env's, owned if own_pass */
	bool own_pass;
	int metrics_fd;
	int passed[2];		/* socket activation: listen, metrics */
	long long fds;		/* its part of the descriptor limit */
	long long lowered_from; /* fit_connections()'s, for log_lowered() */
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
	o->resolve_interval_ms = 30000;
	o->log_format = "json";
	o->log_level = "info";
	o->tls_min = "1.2";
	o->verify_cache = MTLS_VERIFY_CACHE_DEFAULT;
	o->session_cache = MTLS_SESSION_CACHE_DEFAULT;
	o->ocsp_cache = MTLS_OCSP_CACHE_DEFAULT;
	o->plaintext_wait_ms = 1000;
	o->metrics_identities = 20;
}

static void fail(const char *role, const char *msg)
{
	log_flush(1000); /* the lines logged before it come first */
	fprintf(stderr, "mtls %s: %s\n", role, msg);
}

static void update_expiry(struct daemon *d)
{
	atomic_store(&d->metrics.cert_not_after,
		     (long long)mtls_endpoint_cert_not_after(d->endpoint));
	atomic_store(&d->metrics.ca_not_after, (long long)mtls_endpoint_ca_not_after(d->endpoint));
	time_t oldest = 0;

	atomic_store(&d->metrics.crl_next_update,
		     (long long)mtls_endpoint_crl_next_update(d->endpoint));
	for (size_t i = 0; i < d->o->crl.n; i++) {
		time_t tu, nu;

		if (credentials_crl_times(d->o->crl.v[i], &tu, &nu) == 0 &&
		    (oldest == 0 || tu < oldest))
			oldest = tu;
	}
	atomic_store(&d->metrics.crl_this_update, (long long)oldest);
	atomic_store(&d->metrics.crl_grace, d->o->crl_grace); /* for /readyz */
}

static void sign_files(const struct main_state *ms, struct file_sig *sigs)
{
	for (size_t i = 0; i < ms->nfiles; i++) {
		struct stat sb;
		struct file_sig *s = &sigs[i];

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

/* A changed file set is loaded once it has looked the same for WATCH_SETTLE seconds, on two
 * looks or more: a certificate chain being written in place holds only the leaf for a
 * moment, and that moment must not be what is served. Files that never stop changing are
 * never loaded: said once, after WATCH_UNSETTLED seconds, naming the file. */
static bool files_settled(struct main_state *ms, ev_tstamp now)
{
	struct file_sig cur[WATCH_MAX];
	size_t n = sizeof(struct file_sig) * ms->nfiles;

	sign_files(ms, cur);
	if (memcmp(cur, ms->sigs, n) == 0) {
		ms->pending_set = false;
		ms->changing_since = 0;
		ms->unsettled_told = false;
		return false;
	}
	if (!ms->pending_set || memcmp(cur, ms->pending, n) != 0) {
		const struct file_sig *was = ms->pending_set ? ms->pending : ms->sigs;
		size_t i = 0;

		while (i + 1 < ms->nfiles && memcmp(&cur[i], &was[i], sizeof(cur[i])) == 0)
			i++;
		if (ms->changing_since == 0)
			ms->changing_since = now;
		if (now - ms->changing_since >= WATCH_UNSETTLED && !ms->unsettled_told) {
			char msg[300];

			snprintf(msg, sizeof(msg),
				 "the files have kept changing for %.0f s (%s last): they are "
				 "loaded once unchanged for %.0f s; until then the current ones "
				 "stay",
				 now - ms->changing_since, ms->files[i], WATCH_SETTLE);
			LOG(LOG_WARN, "reload_waiting", LS("file", ms->files[i]),
			    LS("message", msg));
			ms->unsettled_told = true;
		}
		memcpy(ms->pending, cur, n);
		ms->pending_set = true;
		ms->pending_since = now;
		return false;
	}
	if (now - ms->pending_since < WATCH_SETTLE)
		return false;
	memcpy(ms->sigs, cur, n);
	ms->pending_set = false;
	ms->changing_since = 0;
	ms->unsettled_told = false;
	return true;
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
	/* the lifetime from the file, if it still holds the certificate loaded; with --ca-url
	 * the renewal thread says it, when renewal is late (cert_expiring at error level) */
	if (o->ca_url != NULL || credentials_cert_validity(o->cert, &nb, &na) != 0 ||
	    na != not_after || nb >= na || left >= (long long)(na - nb) / 3)
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

/* The new own chain file against the one in service: a chain that led to a CA of --ca (the
 * common case, one PKI for both sides) must still lead there, so a leaf without its
 * intermediates is refused; and a change seen by the watcher that is shorter than the chain
 * in service and ends at another issuer looks like the first part of a chain being written
 * (a bundle holding the intermediates lets a leaf alone verify), which the explicit SIGHUP
 * may override. A chain as long as before that ends elsewhere is a rotation (an intermediate
 * re-signed by a new root): the watcher loads it. -1 with a message. */
static int check_own_chain(const struct main_state *ms, bool watcher, struct credentials_chain *now,
			   char *err, size_t len)
{
	const struct tunnel_options *o = ms->live;

	memset(now, 0, sizeof(*now));
	if (o->cert == NULL || credentials_chain(o->cert, o->ca, now) != 0)
		return 0; /* unreadable: the build that follows says why */
	if (ms->chain.verifies && !now->verifies) {
		snprintf(err, len,
			 "own certificate chain %s (%d certificate%s) does not lead to a CA of %s "
			 "as the one in service does; is it still being written? Give the leaf "
			 "followed by its intermediates",
			 o->cert, now->ncerts, now->ncerts == 1 ? "" : "s", o->ca);
		return -1;
	}
	if (watcher && now->ncerts < ms->chain.ncerts && now->top_issuer != ms->chain.top_issuer) {
		snprintf(err, len,
			 "own certificate chain %s (%d certificate%s, %d in service) is shorter "
			 "and ends at another issuer than the one in service: is it still being "
			 "written? If the new chain is meant, send SIGHUP to load it",
			 o->cert, now->ncerts, now->ncerts == 1 ? "" : "s", ms->chain.ncerts);
		return -1;
	}
	return 0;
}

static void check_crls(struct main_state *ms, ev_tstamp now, bool force);

/* New certificate, key, CA, CRLs and rules for new handshakes; the old ones stay if anything
 * is wrong with the new. */
/* The mode of the live options into force (workers read it for each new connection and
 * re-judge the live ones after the reload that follows). A weaker mode is a warning each
 * time it comes into force. */
static void apply_mode(struct main_state *ms)
{
	bool park = ms->live->park == NULL || strcmp(ms->live->park, "on") == 0;
	struct daemon *d = ms->d;
	enum tunnel_mode mode, was = (enum tunnel_mode)atomic_load(&d->metrics.mode);
	char msg[300];

	/* --park: read by the workers at each sweep (parked connections stay parked) */
	if (atomic_exchange(&d->park, park) != park && ms->started != 0)
		LOG(LOG_INFO, "park_changed", LS("to", park ? "on" : "off"));

	if (credentials_mode(ms->live->mode, &mode) != 0)
		return; /* not reached: checked before */
	atomic_store(&d->metrics.mode, (int)mode);
	if (mode != was)
		LOG(LOG_INFO, "mode_changed", LS("from", credentials_mode_name(was)),
		    LS("to", credentials_mode_name(mode)));
	if (mode == TUNNEL_MODE_STRICT || (mode == was && ms->started != 0))
		return;
	snprintf(msg, sizeof(msg), "%s",
		 mode == TUNNEL_MODE_PERMISSIVE
			 ? "insecure-permissive: plaintext clients, TLS clients without a "
			   "certificate and clients whose certificate would be refused are all "
			   "forwarded to the target; for a rollout only (docs/rollout.md)"
			 : "insecure-audit: clients whose certificate would be refused are "
			   "forwarded "
			   "to the target, logged and counted would_refuse; for a rollout only "
			   "(docs/rollout.md)");
	LOG(LOG_WARN, "insecure_mode", LS("mode", credentials_mode_name(mode)), LS("message", msg));
}

/* The URL a CRL file of the live options is fetched from (a --crl-cache), or NULL. */
static const char *crl_url_of(const struct main_state *ms, size_t i)
{
	const struct tunnel_options *o = ms->live;
	size_t first = o->crl.n - ms->ncrlfetch;

	if (ms->ncrlfetch == 0 || i < first || i - first >= o->crl_url.n)
		return NULL;
	return strcmp(o->crl_url.v[i - first], "auto") == 0 ? ms->crl_auto
							    : o->crl_url.v[i - first];
}

/* /status's part from the main thread: the files in service (read again after a good
 * reload, kept after a failed one) and the last reload. */
static void publish_status(struct main_state *ms, const char *trigger, bool ok, const char *message)
{
	const char *urls[CREDENTIALS_FILES_MAX] = {0};
	json_t *doc, *creds;
	char when[32];

	if (ok) {
		for (size_t i = 0; i < ms->live->crl.n && i < CREDENTIALS_FILES_MAX; i++)
			urls[i] = crl_url_of(ms, i);
		creds = json_object();
		if (creds != NULL && credentials_status(ms->live, urls, creds) == 0) {
			json_decref(ms->creds);
			ms->creds = creds;
		} else {
			json_decref(creds);
		}
	}
	doc = ms->creds != NULL ? json_deep_copy(ms->creds) : json_object();
	utc(time(NULL), when, sizeof(when));
	if (doc == NULL || json_object_set_new(doc, "last_reload",
					       json_pack("{s:s,s:s,s:s,s:s?}", "time", when,
							 "result", ok ? "ok" : "failed", "trigger",
							 trigger, "message", message)) != 0) {
		json_decref(doc);
		return; /* out of memory: the last one stays */
	}
	utc(ms->started, when, sizeof(when));
	json_object_set_new(doc, "started", json_string(when));
	if (ms->sandbox != NULL) {
		const char *what;
		int abi = sandbox_landlock_abi(ms->sandbox, &what);

		json_object_set_new(doc, "sandbox",
				    json_pack("{s:o,s:b}", "landlock",
					      abi > 0 ? json_integer(abi) : json_string(what),
					      "seccomp", sandbox_seccomp_on(ms->sandbox)));
	}
	metrics_set_status(&ms->d->metrics, json_dumps(doc, JSON_COMPACT));
	json_decref(doc);
}

/* /healthz?target=1: a TCP connection to the target, within the connect timeout (at most
 * 2 s: a health check must answer before its prober gives up), to the addresses in the order
 * a client's connection would try them; the first that connects answers. */
static int target_check(void *arg, char *err, size_t len)
{
	struct daemon *d = arg;
	long long ms = d->o->connect_timeout_ms < 2000 ? d->o->connect_timeout_ms : 2000;
	struct timespec t0, t1;
	struct resolver_plan plan;
	const struct resolver_entry *e;
	int rc = -1;

	if (resolver_plan(d->resolver, &plan, err, len) != 0)
		return -1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (rc != 0 && (e = resolver_plan_next(&plan)) != NULL) {
		char addr[300];
		long long left;
		int fd = address_connect(&e->addr, err, len), so = 0;
		socklen_t elen = sizeof(so);
		struct pollfd p = {.fd = fd, .events = POLLOUT};

		clock_gettime(CLOCK_MONOTONIC, &t1);
		left = ms - ((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);
		if (fd < 0)
			continue;
		address_format((const struct sockaddr *)&e->addr.sa, e->addr.len, addr,
			       sizeof(addr));
		if (left <= 0 || poll(&p, 1, (int)left) != 1)
			snprintf(err, len, "%s: no connection within %lld ms", addr, ms);
		else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &elen) != 0 || so != 0)
			snprintf(err, len, "%s: %s", addr, strerror(so != 0 ? so : errno));
		else
			rc = 0;
		close(fd);
		if (left <= 0)
			break;
	}
	resolver_plan_done(d->resolver, &plan);
	return rc;
}

/* systemd's STATUS= line: what the daemon does now, the open connections and the last
 * reload's result (`systemctl status` shows it). */
static void notify_status_text(struct main_state *ms, char *out, size_t len)
{
	struct daemon *d = ms->d;
	const struct stop_group *g = ms->group;
	long long n = 0;
	char what[sizeof(ms->listening) + 80];

	for (size_t i = 0; i < g->n; i++)
		n += atomic_load(&g->tunnels[i].d.active);
	if (g->n > 1) /* the first tunnel's reloads: systemd hears of its reloads only */
		snprintf(what, sizeof(what), "%zu tunnels, [%.32s] %s", g->n, d->name,
			 ms->listening);
	else
		snprintf(what, sizeof(what), "%s", ms->listening);
	snprintf(out, len, "%s%s; %lld connection%s%s%s",
		 atomic_load(&d->phase) != 0 ? "draining, was " : "", what, n, n == 1 ? "" : "s",
		 ms->last_reload[0] != '\0' ? "; " : "", ms->last_reload);
}

/* RELOADING=1, once per reload (SIGHUP sends it before the options are parsed again). */
static void notify_reload_begin(struct main_state *ms)
{
	if (ms->reloading || !ms->primary || ms->group->batch)
		return;
	ms->reloading = true;
	service_notify_reloading();
}

/* READY=1 after a reload, STATUS= its result: a failed one keeps the configuration in
 * service, and says so. */
static void notify_reload_end(struct main_state *ms, const char *trigger, bool ok,
			      const char *message)
{
	struct stop_group *g = ms->group;
	char when[32];

	if (g->batch) {
		if (!ok && g->batch_ok) {
			g->batch_ok = false;
			if (ms->d->name != NULL)
				snprintf(g->batch_message, sizeof(g->batch_message), "[%s] %s",
					 ms->d->name, message);
			else
				snprintf(g->batch_message, sizeof(g->batch_message), "%s", message);
		}
		return;
	}
	utc(time(NULL), when, sizeof(when));
	if (ok)
		snprintf(ms->last_reload, sizeof(ms->last_reload), "last reload (%s) at %s: ok",
			 trigger, when);
	else
		snprintf(ms->last_reload, sizeof(ms->last_reload),
			 "last reload (%s) at %s FAILED, the previous configuration stays: %s",
			 trigger, when, message);
	if (!ms->primary)
		return;
	notify_status_text(ms, ms->status_sent, sizeof(ms->status_sent));
	ms->reloading = false;
	service_notify_ready(ms->status_sent);
}

static void reload(struct main_state *ms, const char *trigger)
{
	struct daemon *d = ms->d;
	char err[700];
	const char *reason = "config";
	struct credentials_chain chain = {0};
	struct mtls_config *cfg = NULL;
	struct pgrole *roles = NULL, *old;

	notify_reload_begin(ms);
	if (!d->pg && ms->live->pg_role.n > 0)
		snprintf(err, sizeof(err), "--pg-role is for --protocol postgresql");
	else if ((roles = pgrole_parse(&ms->live->pg_role, err, sizeof(err))) == NULL)
		;
	else if (d->o->user != NULL &&
		 credentials_check_readable(ms->live, d->o->user, err, sizeof(err)))
		reason = "file_permissions";
	else if (check_own_chain(ms, strcmp(trigger, "SIGHUP") != 0, &chain, err, sizeof(err)))
		reason = "incomplete_chain";
	else
		cfg = credentials_build(ms->live, ms->pass, err, sizeof(err));
	if (cfg != NULL && ms->renewer != NULL)
		renewer_staple_config(ms->renewer, cfg);
	if (cfg == NULL || reload_apply(d, cfg, &reason, err, sizeof(err)) != 0) {
		pgrole_free(roles);
		atomic_fetch_add(&d->metrics.reloads_failed, 1);
		LOG(LOG_ERROR, "reload_failed", LS("trigger", trigger), LS("reason", reason),
		    LS("message", err), LS("action", "keeping the current certificates and rules"));
		mtls_config_free(cfg);
		publish_status(ms, trigger, false, err);
		notify_reload_end(ms, trigger, false, err);
		return;
	}
	mtls_config_free(cfg);
	pthread_mutex_lock(&d->pg_mu);
	old = d->pgrole;
	d->pgrole = roles;
	pthread_mutex_unlock(&d->pg_mu);
	pgrole_free(old);
	ms->chain = chain;
	atomic_fetch_add(&d->metrics.reloads_ok, 1);
	update_expiry(d);
	if (ms->renewer != NULL)
		renewer_loaded(ms->renewer, mtls_endpoint_cert_not_after(d->endpoint));
	LOG(LOG_INFO, "reload", LS("trigger", trigger),
	    LN("cert_not_after", mtls_endpoint_cert_not_after(d->endpoint)),
	    LN("crl_next_update", mtls_endpoint_crl_next_update(d->endpoint)));
	check_crls(ms, ev_now(ev_default_loop(0)), true);
	apply_mode(ms);
	publish_status(ms, trigger, true, NULL);
	notify_reload_end(ms, trigger, true, NULL);
	worker_recheck_all(d);
}

/* Every CRL file past (or near) its nextUpdate, logged: at start, after a reload, and then
 * every CRL_WARN_EVERY seconds while it lasts. Past nextUpdate (and --crl-grace), every client
 * whose issuer it covers is refused crl_expired: the operator must hear of it before the
 * clients do. */
static void check_crls(struct main_state *ms, ev_tstamp now, bool force)
{
	const struct tunnel_options *o = ms->live;
	time_t t = time(NULL);

	if (!force && now - ms->crl_warned < CRL_WARN_EVERY)
		return;
	for (size_t i = 0; i < o->crl.n; i++) {
		time_t tu, nu;
		char when[32], msg[300];
		long long left;

		if (credentials_crl_times(o->crl.v[i], &tu, &nu) != 0)
			continue;
		utc(nu, when, sizeof(when));
		left = (long long)(nu - t);
		if (left <= 0 && -left <= o->crl_grace) {
			snprintf(msg, sizeof(msg),
				 "CRL expired, accepted for --crl-grace (%lld s more); publish a "
				 "new CRL",
				 o->crl_grace + left);
			LOG(LOG_WARN, "crl_expired", LS("file", o->crl.v[i]),
			    LS("next_update", when), LS("message", msg));
		} else if (left <= 0) {
			LOG(LOG_ERROR, "crl_expired", LS("file", o->crl.v[i]),
			    LS("next_update", when),
			    LS("message", "CRL past its nextUpdate: every client it covers is "
					  "refused (crl_expired)"),
			    LS("action", "publish a new CRL; until then every client is refused"));
		} else if (nu > tu && tu != 0 && left < (long long)(nu - tu) / 3) {
			snprintf(msg, sizeof(msg),
				 "%lld hours left of its %lld: CRL %s expires at %s; publish a new "
				 "one before then, or every client it covers is refused",
				 left / 3600, (long long)(nu - tu) / 3600, o->crl.v[i], when);
			LOG(LOG_WARN, "crl_expiring", LS("file", o->crl.v[i]),
			    LS("next_update", when), LN("seconds_left", left), LS("message", msg));
		} else {
			continue;
		}
		ms->crl_warned = now;
	}
}

static int check_ranges(const struct tunnel_options *o, char *err, size_t len);
static void watch_start(struct main_state *ms, struct ev_loop *loop);
static int check_ocsp(const struct tunnel_options *o, char *err, size_t len);
static int check_mode(const struct tunnel_options *o, char *err, size_t len);

static void restore_lists(struct kept_list *keep)
{
	for (size_t i = 0; i < KEEP_LISTS; i++)
		if (keep[i].field != NULL) {
			*keep[i].field = keep[i].parsed;
			keep[i].field = NULL;
		}
}

static bool same_list(const struct tunnel_list *a, const struct tunnel_list *b)
{
	if (a->n != b->n)
		return false;
	for (size_t i = 0; i < a->n; i++)
		if (strcmp(a->v[i], b->v[i]) != 0)
			return false;
	return true;
}

/* The options a reload cannot apply (a worker reads them, or they were acted on at start):
 * next gets run's. A list is the running one's array, not a copy: the list next was parsed
 * with is kept in keep[] (at most KEEP_LISTS), to be put back before next's options are freed
 * (restore_lists()), which frees the arrays they were parsed into. */
static void restart_only(const struct tunnel_options *run, struct tunnel_options *next,
			 struct kept_list *keep, char *changed, size_t len)
{
	size_t used = 0, nkeep = 0;

#define SAME_STR(f, name)                                                                          \
	do {                                                                                       \
		if ((run->f == NULL) != (next->f == NULL) ||                                       \
		    (run->f != NULL && strcmp(run->f, next->f) != 0)) {                            \
			used += (size_t)snprintf(changed + used, used < len ? len - used : 0,      \
						 "%s%s", used > 0 ? ", " : "", name);              \
			next->f = run->f;                                                          \
		}                                                                                  \
	} while (0)
#define SAME_LIST(f, name)                                                                         \
	do {                                                                                       \
		if (!same_list(&run->f, &next->f)) {                                               \
			used += (size_t)snprintf(changed + used, used < len ? len - used : 0,      \
						 "%s%s", used > 0 ? ", " : "", name);              \
			keep[nkeep++] = (struct kept_list){&next->f, next->f};                     \
			next->f = run->f;                                                          \
		}                                                                                  \
	} while (0)
#define SAME_NUM(f, name)                                                                          \
	do {                                                                                       \
		if (run->f != next->f) {                                                           \
			used += (size_t)snprintf(changed + used, used < len ? len - used : 0,      \
						 "%s%s", used > 0 ? ", " : "", name);              \
			next->f = run->f;                                                          \
		}                                                                                  \
	} while (0)
	changed[0] = '\0';
	SAME_STR(listen, "--listen");
	SAME_STR(listen_mode, "--listen-mode");
	SAME_LIST(target, "--target/--server");
	SAME_NUM(resolve_interval_ms, "--resolve-interval");
	SAME_STR(server_name, "--server-name");
	SAME_STR(key_passphrase_env, "--key-passphrase-env");
	SAME_STR(metrics, "--metrics");
	SAME_STR(log_format, "--log-format");
	SAME_STR(log_level, "--log-level");
	SAME_STR(log_file, "--log-file");
	SAME_STR(user, "--user");
	SAME_NUM(proxy_protocol, "--proxy-protocol");
	SAME_NUM(insecure_listen_remote, "--insecure-listen-remote");
	SAME_NUM(reuse_port, "--reuse-port");
	SAME_NUM(workers, "--workers");
	SAME_NUM(handshake_timeout_ms, "--handshake-timeout");
	SAME_NUM(connect_timeout_ms, "--connect-timeout");
	SAME_NUM(idle_timeout_ms, "--idle-timeout");
	SAME_NUM(max_lifetime_ms, "--max-connection-lifetime");
	SAME_NUM(drain_timeout_ms, "--drain-timeout");
	SAME_NUM(watch_interval_ms, "--watch-interval");
	SAME_NUM(plaintext_wait_ms, "--plaintext-wait");
	SAME_NUM(metrics_identities, "--metrics-identities");
	SAME_LIST(crl_url, "--crl-url"); /* the fetchers were made at start */
	SAME_LIST(crl_cache, "--crl-cache");
	SAME_STR(crl_refresh, "--crl-refresh");
	SAME_STR(ca_url, "--ca-url"); /* the renewal thread was made at start */
	SAME_STR(renew_key_type, "--renew-key-type");
	SAME_STR(ca_refresh, "--ca-refresh");
	if (run->ca_url != NULL) { /* and renews these files */
		SAME_STR(cert, "--cert (with --ca-url)");
		SAME_STR(key, "--key (with --ca-url)");
		SAME_STR(ca, "--ca (with --ca-url)");
	}
	SAME_STR(crl_push, "--crl-push");
	SAME_STR(protocol, "--protocol");
	SAME_NUM(insecure_no_sandbox, "--insecure-no-sandbox"); /* applied at start */
	SAME_LIST(sandbox_allow, "--sandbox-allow");
	/* the effective limit (fitted to the descriptors at start) stays */
	if (next->max_connections != run->max_connections && next->max_connections_given)
		SAME_NUM(max_connections, "--max-connections");
	next->max_connections = run->max_connections;
	next->max_connections_given = run->max_connections_given;
#undef SAME_STR
#undef SAME_LIST
#undef SAME_NUM
}

/* Free the options of the last SIGHUP (live_handle), their --crl list as parsed. */
static void live_free(struct main_state *ms)
{
	if (ms->live_handle == NULL || ms->d->o->reparse_free == NULL)
		return;
	if (ms->live_crl != NULL)
		*ms->live_crl = ms->live_crl_parsed;
	restore_lists(ms->live_kept);
	ms->d->o->reparse_free(ms->live_handle);
	ms->live_handle = NULL;
	ms->live_crl = NULL;
}

/* SIGHUP: the command line and its --config file parsed again, for the reload that follows
 * (allow rules, certificate, key, CA, CRL files). What only a restart applies is kept, and
 * named in a warning. 0, or -1 (logged; the current options and files stay in service). */
static int reparse(struct main_state *ms)
{
	const struct tunnel_options *o = ms->d->o;
	struct tunnel_options *next = NULL;
	char err[700], changed[512];
	struct tunnel_list next_crl_parsed;
	struct kept_list kept[KEEP_LISTS] = {0};
	void *handle;

	if (o->reparse == NULL)
		return 0;
	handle = o->reparse(o->reparse_arg, &next, err, sizeof(err));
	if (handle == NULL || check_ranges(next, err, sizeof(err)) != 0 ||
	    check_ocsp(next, err, sizeof(err)) != 0 || check_mode(next, err, sizeof(err)) != 0) {
		atomic_fetch_add(&ms->d->metrics.reloads_failed, 1);
		LOG(LOG_ERROR, "reload_failed", LS("trigger", "SIGHUP"), LS("reason", "config"),
		    LS("message", err), LS("action", "keeping the current options and files"));
		publish_status(ms, "SIGHUP", false, err);
		notify_reload_end(ms, "SIGHUP", false, err);
		if (handle != NULL && o->reparse_free != NULL)
			o->reparse_free(handle);
		return -1;
	}
	restart_only(o, next, kept, changed, sizeof(changed));
	/* the fetched CRLs' cache files are CRL files, as at start */
	next_crl_parsed = next->crl;
	if (ms->ncrlfetch > 0) {
		if (next->crl.n + next->crl_cache.n > CREDENTIALS_FILES_MAX) {
			atomic_fetch_add(&ms->d->metrics.reloads_failed, 1);
			LOG(LOG_ERROR, "reload_failed", LS("trigger", "SIGHUP"),
			    LS("reason", "config"), LS("message", "too many --crl files"),
			    LS("action", "keeping the current options and files"));
			notify_reload_end(ms, "SIGHUP", false, "too many --crl files");
			restore_lists(kept);
			o->reparse_free(handle);
			return -1;
		}
		for (size_t i = 0; i < next->crl.n; i++)
			ms->crl_files_live[i] = next->crl.v[i];
		for (size_t i = 0; i < next->crl_cache.n; i++)
			ms->crl_files_live[next->crl.n + i] = next->crl_cache.v[i];
		next->crl.v = ms->crl_files_live;
		next->crl.n += next->crl_cache.n;
	}
	if (changed[0] != '\0')
		LOG(LOG_WARN, "restart_needed", LS("options", changed),
		    LS("message", "these options changed but apply only at a restart; the rest of "
				  "the configuration is reloaded"));
	live_free(ms);
	memcpy(ms->live_kept, kept, sizeof(kept));
	ms->live = next;
	ms->live_handle = handle;
	ms->live_crl = &next->crl;
	ms->live_crl_parsed = next_crl_parsed;
	/* the files to watch may be others now */
	ms->nfiles = credentials_files(ms->live, ms->files, WATCH_MAX);
	watch_start(ms, ev_default_loop(0));
	return 0;
}

/* Reload now, on a word other than the file watcher's (SIGHUP, a fetched CRL, a renewal):
 * the files as they are become the watcher's baseline, so the change is not loaded twice. */
static void reload_now(struct main_state *ms, const char *trigger)
{
	sign_files(ms, ms->sigs);
	ms->pending_set = false;
	ms->changing_since = 0;
	ms->unsettled_told = false;
	reload(ms, trigger);
}

static void on_sighup(struct ev_loop *loop, ev_signal *w, int events)
{
	struct main_state *ms =
		(struct main_state *)((char *)w - offsetof(struct main_state, sighup));

	struct stop_group *g = ms->group;

	(void)loop;
	(void)events;
	log_tag_set(ms->d->name);
	notify_reload_begin(ms);
	g->batch = true;
	g->batch_ok = true;
	g->batch_message[0] = '\0';
	for (size_t i = 0; i < g->n; i++) {
		struct main_state *t = &g->tunnels[i].ms;

		if (atomic_load(&t->d->phase) != 0) /* draining: no reload */
			continue;
		log_tag_set(t->d->name);
		if (reparse(t) == 0)
			reload_now(t, "SIGHUP"); /* the operator's word: no settling */
	}
	g->batch = false;
	log_tag_set(ms->d->name);
	notify_reload_end(ms, "SIGHUP", g->batch_ok, g->batch_message);
	sandbox_probe("sighup");
}

/* SIGUSR1: logrotate moved --log-file away; the log writer opens it again by its name */
static void on_sigusr1(struct ev_loop *loop, ev_signal *w, int events)
{
	(void)loop;
	(void)w;
	(void)events;
	log_tag_set(NULL); /* the process's */
	log_reopen();
}

/* The fetch thread replaced --crl-cache with a verified CRL: load it now. */
static void on_crl_fetched(struct ev_loop *loop, ev_async *w, int events)
{
	struct main_state *ms =
		(struct main_state *)((char *)w - offsetof(struct main_state, crl_fetched));

	(void)loop;
	(void)events;
	log_tag_set(ms->d->name);
	if (atomic_load(&ms->d->phase) != 0)
		return;
	reload_now(ms, "crl_fetch");
}

/* The renewal thread replaced the own certificate and key, or --ca: load them now, as for a
 * fetched CRL. */
static void on_renewed(struct ev_loop *loop, ev_async *w, int events)
{
	struct main_state *ms =
		(struct main_state *)((char *)w - offsetof(struct main_state, renewed));

	(void)loop;
	(void)events;
	log_tag_set(ms->d->name);
	if (atomic_load(&ms->d->phase) != 0)
		return;
	reload_now(ms, renewer_trigger(ms->renewer));
}

/* An OCSP answer about a peer turned to revoked (or unknown): what is trusted changed
 * without a reload, and every live connection is judged again. */
static void on_ocsp_recheck(struct ev_loop *loop, ev_async *w, int events)
{
	struct main_state *ms =
		(struct main_state *)((char *)w - offsetof(struct main_state, ocsp_recheck));

	(void)loop;
	(void)events;
	log_tag_set(ms->d->name);
	if (atomic_load(&ms->d->phase) != 0)
		return;
	LOG(LOG_INFO, "recheck", LS("trigger", "ocsp"));
	worker_recheck_all(ms->d);
}

static void watch_stop(struct main_state *ms, struct ev_loop *loop)
{
	for (size_t i = 0; i < WATCH_MAX; i++) {
		if (ms->watching) {
			ev_stat_stop(loop, &ms->stat[i]);
			ev_stat_stop(loop, &ms->stat_real[i]);
		}
		free(ms->real[i]);
		ms->real[i] = NULL;
	}
	for (size_t i = 0; i < ms->nlinks; i++) {
		ev_stat_stop(loop, &ms->stat_link[i]);
		free(ms->link[i]);
		ms->link[i] = NULL;
	}
	ms->nlinks = 0;
	ev_timer_stop(loop, &ms->watch);
	ms->watching = false;
}

static bool real_changed(const struct main_state *ms)
{
	for (size_t i = 0; i < ms->nfiles; i++) {
		char *r = realpath(ms->files[i], NULL);
		bool same = r == NULL || strcmp(r, ms->files[i]) == 0
				    ? ms->real[i] == NULL
				    : ms->real[i] != NULL && strcmp(r, ms->real[i]) == 0;

		free(r);
		if (!same)
			return true;
	}
	return false;
}

static void on_stat(struct ev_loop *loop, ev_stat *w, int events);

/* Watch the symbolic links on the way to path: each directory of it that is a link, and
 * where its last part is a link, the same along the path it points to (a few hops). */
static void watch_links(struct main_state *ms, struct ev_loop *loop, const char *path,
			ev_tstamp every)
{
	char p[PATH_MAX];

	if (path[0] == '\0' || snprintf(p, sizeof(p), "%s", path) >= (int)sizeof(p))
		return;
	for (int hop = 0; hop < 8; hop++) {
		char target[PATH_MAX], *slash;
		struct stat sb;
		ssize_t n;

		for (char *c = strchr(p + 1, '/'); c != NULL; c = strchr(c + 1, '/')) {
			bool known = false;

			*c = '\0';
			for (size_t k = 0; k < ms->nlinks && !known; k++)
				known = strcmp(ms->link[k], p) == 0;
			if (!known && ms->nlinks < WATCH_LINKS && lstat(p, &sb) == 0 &&
			    S_ISLNK(sb.st_mode) && (ms->link[ms->nlinks] = strdup(p)) != NULL) {
				ev_stat *w = &ms->stat_link[ms->nlinks];

				ev_stat_init(w, on_stat, ms->link[ms->nlinks++], every);
				w->data = ms;
				ev_stat_start(loop, w);
			}
			*c = '/';
		}
		n = readlink(p, target, sizeof(target) - 1);
		if (n <= 0)
			return; /* the last part is no link: done */
		target[n] = '\0';
		slash = strrchr(p, '/');
		if (target[0] == '/' || slash == NULL)
			snprintf(p, sizeof(p), "%s", target);
		else if (snprintf(slash + 1, sizeof(p) - (size_t)(slash + 1 - p), "%s", target) >=
			 (int)(sizeof(p) - (size_t)(slash + 1 - p)))
			return;
	}
}

/* (Re)start the watchers of the files of ms->live (--watch-interval 0: none). */
static void watch_start(struct main_state *ms, struct ev_loop *loop)
{
	ev_tstamp every = (ev_tstamp)ms->d->o->watch_interval_ms / 1000.0;

	watch_stop(ms, loop);
	if (ms->d->o->watch_interval_ms <= 0)
		return;
	for (size_t i = 0; i < ms->nfiles; i++) {
		char *r = realpath(ms->files[i], NULL);

		ev_stat_init(&ms->stat[i], on_stat, ms->files[i], every);
		ms->stat[i].data = ms;
		ev_stat_start(loop, &ms->stat[i]);
		if (r != NULL && strcmp(r, ms->files[i]) != 0) {
			ms->real[i] = r;
			ev_stat_init(&ms->stat_real[i], on_stat, r, every);
			ms->stat_real[i].data = ms;
			ev_stat_start(loop, &ms->stat_real[i]);
			watch_links(ms, loop, ms->files[i], every);
		} else {
			free(r);
		}
	}
	ms->watching = true;
	/* libev compares stat data in whole seconds: a file rewritten in place at the same size
	 * within the second ev_stat_start took its first look goes unseen. A look of our own
	 * (nanoseconds) a settle period later catches it, as libev's manual advises. */
	if (!ev_is_active(&ms->watch)) {
		ms->watch.repeat = WATCH_SETTLE + WATCH_SLACK;
		ev_timer_again(loop, &ms->watch);
	}
}

/* A look at the files: a settled change is loaded; a change still settling (re)arms the
 * settle timer for the second look, WATCH_SETTLE after the files last changed. */
static void watch_look(struct main_state *ms, struct ev_loop *loop)
{
	ev_tstamp now = ev_now(loop);

	if (ms->watching && real_changed(ms))
		watch_start(ms, loop); /* a link points elsewhere now: watch its new target */
	if (files_settled(ms, now)) {
		ev_timer_stop(loop, &ms->watch);
		reload(ms, "file_change");
		return;
	}
	if (!ms->pending_set) {
		ev_timer_stop(loop, &ms->watch);
		return;
	}
	ms->watch.repeat = ms->pending_since + WATCH_SETTLE - now;
	ms->watch.repeat = (ms->watch.repeat > 0 ? ms->watch.repeat : 0) + WATCH_SLACK;
	ev_timer_again(loop, &ms->watch);
}

/* libev saw a watched file change (or vanish, or appear) */
static void on_stat(struct ev_loop *loop, ev_stat *w, int events)
{
	(void)events;
	log_tag_set(((struct main_state *)w->data)->d->name);
	if (atomic_load(&((struct main_state *)w->data)->d->phase) == 0)
		watch_look(w->data, loop);
}

/* the settle timer: the second look */
static void on_watch(struct ev_loop *loop, ev_timer *w, int events)
{
	struct main_state *ms =
		(struct main_state *)((char *)w - offsetof(struct main_state, watch));

	(void)events;
	log_tag_set(ms->d->name);
	watch_look(ms, loop);
}

/* Freed memory back to the system after a burst of connections closed (worker.c asks).
 * Here, on the main thread: malloc_trim walks every arena, taking each one's lock while it
 * trims it, so a worker waits at most for its own arena, once per TRIM_EVERY; called from a
 * worker it held that worker's loop for the whole walk, 40-80 ms a call, several calls per
 * burst (bench/trim_stall.sh). */
static void on_trim(struct ev_loop *loop, ev_timer *w, int events)
{
	struct main_state *ms =
		(struct main_state *)((char *)w - offsetof(struct main_state, trim));

	(void)events;
	log_tag_set(ms->d->name);
	if (!atomic_load(&ms->d->trim_wanted) || ev_now(loop) - ms->trimmed_at < TRIM_EVERY)
		return;
	atomic_store(&ms->d->trim_wanted, false);
#ifdef __GLIBC__
	malloc_trim(0);
#endif
	ms->trimmed_at = ev_now(loop);
}

static void on_health(struct ev_loop *loop, ev_timer *w, int events)
{
	struct main_state *ms =
		(struct main_state *)((char *)w - offsetof(struct main_state, health));

	(void)events;
	log_tag_set(ms->d->name);
	check_crls(ms, ev_now(loop), false);
}

/* Stuck workers in every tunnel of the process. */
static int group_stuck_workers(const struct stop_group *g)
{
	long long now = metrics_beat_clock();
	int stuck = 0;

	for (size_t i = 0; i < g->n; i++) /* a tunnel done draining has no worker left */
		if (atomic_load(&g->tunnels[i].d.phase) != 2)
			stuck += metrics_stuck_workers(&g->tunnels[i].d.metrics, now);
	return stuck;
}

/* systemd's watchdog: WATCHDOG=1 only while the main loop runs (this is its timer) and no
 * worker is stuck (the check /healthz makes), so a stuck worker gets the service restarted
 * once WatchdogSec= passes without one. */
static void on_watchdog(struct ev_loop *loop, ev_timer *w, int events)
{
	struct main_state *ms =
		(struct main_state *)((char *)w - offsetof(struct main_state, watchdog));
	int stuck = group_stuck_workers(ms->group);

	(void)loop;
	(void)events;
	log_tag_set(ms->d->name);
	if (stuck == 0) {
		if (ms->watchdog_withheld)
			LOG(LOG_INFO, "watchdog_resumed",
			    LS("message", "every worker beats again"));
		ms->watchdog_withheld = false;
		service_notify_watchdog();
		return;
	}
	if (!ms->watchdog_withheld)
		LOG(LOG_ERROR, "watchdog_withheld", LN("stuck_workers", stuck),
		    LS("message", "a worker's loop is stuck (see /healthz): the systemd watchdog "
				  "is no longer fed, so systemd restarts the service when "
				  "WatchdogSec= passes"));
	ms->watchdog_withheld = true;
}

/* STATUS= again when what it says changed (connections come and go). */
static void on_status_timer(struct ev_loop *loop, ev_timer *w, int events)
{
	struct main_state *ms =
		(struct main_state *)((char *)w - offsetof(struct main_state, status_timer));
	char now[sizeof(ms->status_sent)];

	(void)loop;
	(void)events;
	log_tag_set(ms->d->name);
	notify_status_text(ms, now, sizeof(now));
	if (strcmp(now, ms->status_sent) == 0)
		return;
	memcpy(ms->status_sent, now, sizeof(now));
	service_notify_status(ms->status_sent);
}

/* Serving: READY=1 with the STATUS= line, and the watchdog and status timers (only under a
 * service manager: NOTIFY_SOCKET). */
static void notify_ready(struct main_state *ms, struct ev_loop *loop)
{
	double every = service_notify_watchdog_every();

	if (!service_notify_enabled())
		return;
	notify_status_text(ms, ms->status_sent, sizeof(ms->status_sent));
	service_notify_ready(ms->status_sent);
	ev_timer_init(&ms->status_timer, on_status_timer, NOTIFY_STATUS_EVERY, NOTIFY_STATUS_EVERY);
	ev_timer_start(loop, &ms->status_timer);
	if (every > 0) {
		service_notify_watchdog();
		ev_timer_init(&ms->watchdog, on_watchdog, every, every);
		ev_timer_start(loop, &ms->watchdog);
	}
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
	log_tag_set(ms->d->name);
	if (left > 0 && ev_now(loop) < ms->drain_deadline)
		return;
	LOG(left > 0 ? LOG_WARN : LOG_INFO, "stopped", LN("connections_cut", left));
	atomic_store(&d->phase, 2);
	wake_all(d);
	ev_timer_stop(loop, &ms->drain);
	if (--ms->group->running == 0) /* the last tunnel done */
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
	log_tag_set(ms->d->name);
	if (atomic_load(&d->phase) != 0)
		return;
	atomic_store(&d->phase, 1);
	atomic_store(&d->metrics.draining, true);
	LOG(LOG_INFO, "draining", LS("signal", w->signum == SIGTERM ? "SIGTERM" : "SIGINT"),
	    LN("connections", atomic_load(&d->active)), LN("timeout_ms", d->o->drain_timeout_ms));
	wake_all(d);
	if (ms->primary) {
		notify_status_text(ms, ms->status_sent, sizeof(ms->status_sent));
		service_notify_stopping(ms->status_sent);
	}
	watch_stop(ms, loop);
	ev_timer_stop(loop, &ms->health);
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

/* Bounds of the numeric options: a deadline of 2^63 ms is no deadline (the slowloris guard
 * gone), a watch every millisecond is a busy loop. */
static int check_ranges(const struct tunnel_options *o, char *err, size_t len)
{
	if (o->park != NULL && strcmp(o->park, "on") != 0 && strcmp(o->park, "off") != 0) {
		snprintf(err, len, "--park %s: give on or off", o->park);
		return -1;
	}
	/* unit: 0 a count, else how many milliseconds one of v is (a duration, shown as one) */
	const struct {
		const char *name;
		long long v, lo, hi, unit;
		const char *what;
	} r[] = {
		{"workers", o->workers, 1, METRICS_WORKERS_MAX, 0, "worker threads"},
		{"max-connections", o->max_connections, 0, MAX_CONNECTIONS, 0,
		 "connections (0: as many as the descriptor limit allows)"},
		{"handshake-timeout", o->handshake_timeout_ms, 1, 300000, 1, ""},
		{"connect-timeout", o->connect_timeout_ms, 1, 300000, 1, ""},
		{"resolve-interval", o->resolve_interval_ms, 1000, 86400000, 1, ""},
		{"idle-timeout", o->idle_timeout_ms, 0, 7LL * 86400000, 1, " (0: never)"},
		{"drain-timeout", o->drain_timeout_ms, 0, 3600000, 1, " (0: none)"},
		{"watch-interval", o->watch_interval_ms, 0, 3600000, 1,
		 " (0: off; else at least 100ms)"},
		{"verify-cache", o->verify_cache, 0, 1 << 20, 0, "entries (0: off)"},
		{"session-cache", o->session_cache, 0, 1 << 20, 0, "entries (0: off)"},
		{"crl-grace", o->crl_grace, 0, 366LL * 86400, 1000, ""},
		{"ocsp-cache", o->ocsp_cache, 1, 1 << 16, 0, "entries"},
		{"plaintext-wait", o->plaintext_wait_ms, 0, 300000, 1,
		 " (0: wait for the client's first byte)"},
		{"metrics-identities", o->metrics_identities, 0, METRICS_IDENTITIES_MAX, 0,
		 "identities"},
	};

	for (size_t i = 0; i < sizeof(r) / sizeof(r[0]); i++) {
		char v[32], lo[32], hi[32];

		if (r[i].v >= r[i].lo && r[i].v <= r[i].hi &&
		    !(strcmp(r[i].name, "watch-interval") == 0 && r[i].v > 0 &&
		      r[i].v < WATCH_MIN_MS))
			continue;
		if (r[i].unit == 0) {
			snprintf(err, len, "--%s %lld is out of range: give %lld..%lld %s",
				 r[i].name, r[i].v, r[i].lo, r[i].hi, r[i].what);
			return -1;
		}
		/* durations come from the option parser: at most a year, no overflow here */
		duration_format(r[i].v * r[i].unit, v, sizeof(v));
		duration_format(r[i].lo * r[i].unit, lo, sizeof(lo));
		duration_format(r[i].hi * r[i].unit, hi, sizeof(hi));
		snprintf(err, len, "--%s %s is out of range: give %s to %s%s", r[i].name,
			 r[i].v == 0 ? "0" : v, r[i].lo == 0 ? "0" : lo, hi, r[i].what);
		return -1;
	}
	return 0;
}

/* --ocsp's value, and --ocsp-staple only on a server (a client asks for the server's staple
 * in any case). Also for a SIGHUP's options. */
static int check_ocsp(const struct tunnel_options *o, char *err, size_t len)
{
	enum mtls_ocsp_mode mode;

	if (credentials_ocsp_mode(o->ocsp, &mode) != 0) {
		snprintf(err, len, "--ocsp '%.40s': give off, soft-fail or hard-fail", o->ocsp);
		return -1;
	}
	if (o->ocsp_staple && o->role != TUNNEL_SERVER) {
		snprintf(err, len,
			 "--ocsp-staple is for mtls server: the connector asks the "
			 "server for its staple in any case");
		return -1;
	}
	return 0;
}

/* --mode's value, and the weaker modes only on a server. Also for a SIGHUP's options: the
 * mode is one of the things a reload applies. */
static int check_mode(const struct tunnel_options *o, char *err, size_t len)
{
	enum tunnel_mode mode;

	if (credentials_mode(o->mode, &mode) != 0) {
		snprintf(err, len,
			 "--mode '%.40s': give strict, insecure-permissive or insecure-audit (see "
			 "docs/rollout.md)",
			 o->mode);
		return -1;
	}
	if (mode != TUNNEL_MODE_STRICT && o->role != TUNNEL_SERVER) {
		snprintf(err, len, "--mode is for mtls server");
		return -1;
	}
	return 0;
}

/* address_parse, the message naming the option. */
static int parse_address(const char *option, const char *text, struct address *a, char *err,
			 size_t len)
{
	char why[600];

	if (address_parse(text, a, why, sizeof(why)) == 0)
		return 0;
	snprintf(err, len, "--%s: %s", option, why);
	return -1;
}

/* Check everything that can be checked before a socket is opened. */
/* --protocol and --pg-role (pgrole.h, pgwire.h). */
static int check_protocol(struct daemon *d, char *err, size_t len)
{
	const struct tunnel_options *o = d->o;
	enum tunnel_mode mode = TUNNEL_MODE_STRICT;

	if (o->protocol != NULL && strcmp(o->protocol, "tcp") != 0 &&
	    strcmp(o->protocol, "postgresql") != 0) {
		snprintf(err, len, "--protocol '%.40s': give tcp or postgresql", o->protocol);
		return -1;
	}
	d->pg = o->protocol != NULL && strcmp(o->protocol, "postgresql") == 0;
	d->metrics.pg = d->pg;
	if (o->pg_role.n > 0 && !d->pg) {
		snprintf(err, len, "--pg-role is for --protocol postgresql");
		return -1;
	}
	(void)credentials_mode(o->mode, &mode);
	if (d->pg && mode == TUNNEL_MODE_PERMISSIVE) {
		snprintf(err, len,
			 "--protocol postgresql does not take --mode insecure-permissive (its "
			 "plaintext clients would be refused anyway); use insecure-audit or "
			 "strict");
		return -1;
	}
	if ((d->pgrole = pgrole_parse(&o->pg_role, err, len)) == NULL)
		return -1;
	pthread_mutex_init(&d->pg_mu, NULL);
	return 0;
}

static int check(struct daemon *d, char *err, size_t len)
{
	const struct tunnel_options *o = d->o;

	if (o->listen == NULL || o->target.n == 0) {
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
	if (check_ranges(o, err, len) != 0 || check_ocsp(o, err, len) != 0 ||
	    check_mode(o, err, len) != 0)
		return -1;
	/* with the rest of the options, before any socket (metrics, listen, a CRL fetch) */
	if (o->user != NULL && (o->user[0] == '\0' || getpwnam(o->user) == NULL)) {
		snprintf(err, len, "--user %s: no such user; create it or give another one",
			 o->user);
		return -1;
	}
	if (o->ca_url == NULL && (o->renew_key_type != NULL || o->ca_refresh != NULL)) {
		snprintf(err, len, "--renew-key-type and --ca-refresh go with --ca-url");
		return -1;
	}
	if (o->ca_url != NULL) {
		char base[512], why[400];

		if (caclient_base_url(o->ca_url, base, sizeof(base), why, sizeof(why)) != 0) {
			snprintf(err, len, "--ca-url: %s", why);
			return -1;
		}
		if (o->renew_key_type != NULL && !renewal_key_type_known(o->renew_key_type)) {
			snprintf(err, len,
				 "--renew-key-type %s: give one of p256, p384, ed25519, rsa3072, "
				 "rsa4096",
				 o->renew_key_type);
			return -1;
		}
	}
	/* a token key is renewed with the same key: the engine makes no keys, and PKCS#11 has
	 * no atomic swap of objects (docs/keys.md) */
	if (o->ca_url != NULL && pkcs11_is_uri(o->key) && o->renew_key_type != NULL) {
		snprintf(err, len,
			 "--renew-key-type: --ca-url renews a pkcs11: --key with the same key (a "
			 "token key is rotated by hand: see docs/keys.md); leave --renew-key-type "
			 "out");
		return -1;
	}
	if (o->pkcs11_module != NULL && !pkcs11_is_uri(o->key)) {
		snprintf(err, len, "--pkcs11-module goes with a pkcs11: --key (pkcs11:token=...)");
		return -1;
	}
	if (o->ca_url != NULL && !pkcs11_is_uri(o->key) &&
	    (o->key_passphrase_file != NULL || o->key_passphrase_env != NULL)) {
		snprintf(err, len,
			 "--ca-url writes each new key unencrypted (mode 0600), so it does not go "
			 "with --key-passphrase-file or --key-passphrase-env; give an unencrypted "
			 "key, or renew by other means");
		return -1;
	}
	if (o->tls_min != NULL && strcmp(o->tls_min, "1.2") != 0 &&
	    strcmp(o->tls_min, "1.3") != 0) {
		snprintf(err, len, "--tls-min is 1.2 or 1.3");
		return -1;
	}
	if (parse_address("listen", o->listen, &d->listen, err, len) != 0)
		return -1;
	/* the targets are parsed, not resolved: a name that does not resolve yet is a
	 * warning at start (resolver_start), a malformed address an error now */
	d->resolver = resolver_new(o->target.v, o->target.n,
				   o->role == TUNNEL_SERVER ? "target" : "server",
				   o->resolve_interval_ms, &d->metrics, err, len);
	if (d->resolver == NULL)
		return -1;
	if (check_listen_mode(d, err, len) != 0 || check_protocol(d, err, len) != 0)
		return -1;
	if (o->metrics != NULL &&
	    parse_address("metrics", o->metrics, &d->metrics_addr, err, len) != 0)
		return -1;
	if (o->metrics != NULL && !address_is_local(&d->metrics_addr))
		LOG(LOG_WARN, "metrics_unauthenticated", LS("address", o->metrics),
		    LS("message", "/metrics and /healthz are plain HTTP without authentication, "
				  "open to whoever reaches this address; bind them to 127.0.0.1 "
				  "or [::1], or firewall the port"));
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
		d->server_name = o->server_name;
		if ((o->server_name == NULL && resolver_has_unix(d->resolver)) ||
		    (o->server_name != NULL && o->server_name[0] == '\0')) {
			snprintf(err, len,
				 "give --server-name: the name the server's certificate "
				 "must carry");
			return -1;
		}
	}
	return 0;
}

/* A core dump of the daemon would hold its private key (and the passphrase kept for
 * reloads); so would a ptrace by any process of the same user. Both off, before any key is
 * read; a debugger needs root now. Again after every change of ids: the kernel then resets
 * "dumpable" to fs.suid_dumpable (2 where apport or systemd-coredump run, 1 for debugging). */
static void no_core_dumps(void)
{
	struct rlimit none = {0, 0};

	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	setrlimit(RLIMIT_CORE, &none);
}

/* credentials_become_user()/_root(), and no core dumps after each change of ids (the kernel
 * makes the process dumpable again when its ids change) */
static int become_user(const char *user, struct credentials_ids *saved, char *err, size_t len)
{
	if (credentials_become_user(user, saved, err, len) != 0)
		return -1;
	no_core_dumps();
	return 0;
}

static int become_root(const struct credentials_ids *saved, char *err, size_t len)
{
	if (credentials_become_root(saved, err, len) != 0)
		return -1;
	no_core_dumps();
	return 0;
}

/* Can this process (as --user, if given) replace the file path, that is write its
 * directory? */
static bool dir_writable(const char *path)
{
	char buf[4096];
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		return faccessat(AT_FDCWD, ".", W_OK | X_OK, AT_EACCESS) == 0;
	if ((size_t)(slash - path) >= sizeof(buf))
		return false;
	memcpy(buf, path, (size_t)(slash - path));
	buf[slash - path] = '\0';
	return faccessat(AT_FDCWD, slash == path ? "/" : buf, W_OK | X_OK, AT_EACCESS) == 0;
}

/* Without --ca-url, files renewed by someone else (mtls renew from a timer, mtls agent): a
 * renewal killed between its renames left a journal beside the chain, and the pair on disk
 * may not match. Finish or take back that change first (renewal_recover()), as the renewer
 * does at start. Only when a journal is there: the directory of a key managed by hand may
 * not even be readable by the daemon. */
static int recover_if_journal(const char *cert, const char *key, char *err, size_t len)
{
	const struct renewal_files f = {cert, key, NULL};
	const char *names[] = {FILESET_JOURNAL, FILESET_UNDO};
	char dir[PATH_MAX], path[PATH_MAX + 32];
	const char *slash = strrchr(cert, '/');

	if (slash == NULL)
		snprintf(dir, sizeof(dir), ".");
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash == cert ? 1 : slash - cert), cert);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (access(path, F_OK) == 0)
			return renewal_recover(&f, err, len);
	}
	return 0;
}

/* The key as the renewal thread names it: a pkcs11: URI with the --pkcs11-module in its query
 * (the thread loads the key itself, through the module the process uses), else --key. */
static const char *renewal_key_name(const struct tunnel_options *o, char *buf, size_t len)
{
	size_t n;

	if (!pkcs11_is_uri(o->key) || o->pkcs11_module == NULL)
		return o->key;
	n = (size_t)snprintf(buf, len, "%s%cmodule-path=", o->key,
			     strchr(o->key, '?') != NULL ? '&' : '?');
	for (const char *p = o->pkcs11_module; *p != '\0' && n + 4 < len; p++) {
		unsigned char ch = (unsigned char)*p;

		if (isalnum(ch) || strchr("/._-~", ch) != NULL)
			buf[n++] = (char)ch;
		else
			n += (size_t)snprintf(buf + n, len - n, "%%%02X", ch);
	}
	buf[n < len ? n : len - 1] = '\0';
	return buf;
}

/* --ca-url: the renewal thread writes the new key and chain as the daemon runs, so their
 * directories must be writable by it (by --user's ids: called as that user); --ca's
 * directory too, for the roots, else they are not refreshed (said once, now). */
static int check_renewal_files(struct main_state *ms, char *err, size_t len)
{
	const struct tunnel_options *o = ms->d->o;
	const char *who = o->user != NULL ? o->user : "the daemon's user";

	if (o->ca_url == NULL)
		return recover_if_journal(o->cert, o->key, err, len);
	if (renewer_check(o->cert, o->key, err, len) != 0)
		return -1;
	for (int i = 0; i < (pkcs11_is_uri(o->key) ? 1 : 2); i++) { /* a token: no key file */
		const char *f = i == 0 ? o->cert : o->key;

		if (!dir_writable(f)) {
			snprintf(err, len,
				 "--ca-url renews %s by replacing it, but %s cannot write its "
				 "directory; make the directory writable by %s (the files of mtls "
				 "enroll --dir DIR are, for the user who enrolled)",
				 f, who, who);
			return -1;
		}
	}
	ms->roots_writable = dir_writable(o->ca);
	if (!ms->roots_writable)
		LOG(LOG_WARN, "roots_left_alone", LS("file", o->ca),
		    LS("message", "--ca's directory is not writable by the daemon: the CA's root "
				  "bundle is not refreshed (renewal goes on); make it writable for "
				  "a root rollover without hand work"));
	return 0;
}

/* The credentials, read and checked as every reload will read them: with --user, as that
 * user (effective ids only, given back for binding), so that a file only root can read is
 * refused now, not at the first rotation. */
static int load_credentials(struct main_state *ms, char *err, size_t len)
{
	struct daemon *d = ms->d;
	const struct tunnel_options *o = d->o;
	struct credentials_ids saved;
	struct mtls_config *cfg = NULL;
	int rc = -1;

	if (o->user != NULL && become_user(o->user, &saved, err, len) != 0)
		return -1;
	if (o->user != NULL && credentials_check_readable(o, o->user, err, len) != 0)
		goto out;
	if (check_renewal_files(ms, err, len) != 0)
		goto out;
	cfg = credentials_build(o, ms->pass, err, len);
	if (cfg == NULL)
		goto out;
	d->endpoint = endpoint_new(o->role);
	if (d->endpoint == NULL || mtls_configure(d->endpoint, cfg) != 0) {
		snprintf(err, len, "%s",
			 d->endpoint != NULL ? mtls_error(d->endpoint) : "out of memory");
		goto out;
	}
	if (mtls_config_insecure(cfg)[0] != '\0')
		LOG(LOG_WARN, "insecure_options", LS("options", mtls_config_insecure(cfg)));
	if (check_own_cert(o, d->endpoint, err, len) != 0)
		goto out;
	if (o->cert != NULL)
		credentials_chain(o->cert, o->ca, &ms->chain);
	rc = 0;
out:
	mtls_config_free(cfg);
	if (o->user != NULL && become_root(&saved, err, len) != 0)
		rc = -1;
	return rc;
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

/* Socket activation: the sockets a .socket unit passed (LISTEN_FDNAMES "listen" and
 * "metrics"; one socket alone is "listen"), checked against --listen and --metrics: a unit
 * whose ListenStream= says one address and a --listen another is refused, not served on the
 * unit's address in silence. */
static int take_passed(struct daemon *d, int passed[2], char *err, size_t len)
{
	static const char *const names[2] = {"listen", "metrics"};
	char have[300];

	if (service_listen_take(names, passed, 2, err, len) < 0)
		return -1;
	if (passed[0] < 0 && passed[1] >= 0) {
		snprintf(err, len,
			 "systemd passed a socket named metrics but none named listen; add the "
			 "tunnel's ListenStream= with FileDescriptorName=listen to the .socket "
			 "unit");
		return -1;
	}
	if (passed[0] >= 0 &&
	    !service_listen_matches(passed[0], (struct sockaddr *)&d->listen.sa, d->listen.len)) {
		address_local(passed[0], have, sizeof(have));
		snprintf(
			err, len,
			"the socket systemd passed (the .socket unit's ListenStream=) is %s, not "
			"a listening stream socket on --listen %s; make ListenStream= and --listen "
			"the same address",
			have[0] != '\0' ? have : "of another kind", d->o->listen);
		return -1;
	}
	if (passed[1] >= 0 && d->o->metrics == NULL) {
		snprintf(err, len,
			 "systemd passed a socket named metrics but --metrics is not given; give "
			 "--metrics with its address, or remove that ListenStream=");
		return -1;
	}
	if (passed[1] >= 0 &&
	    !service_listen_matches(passed[1], (struct sockaddr *)&d->metrics_addr.sa,
				    d->metrics_addr.len)) {
		address_local(passed[1], have, sizeof(have));
		snprintf(err, len,
			 "the metrics socket systemd passed (ListenStream= with "
			 "FileDescriptorName=metrics) is %s, not --metrics %s; make them the same "
			 "address",
			 have[0] != '\0' ? have : "of another kind", d->o->metrics);
		return -1;
	}
	return 0;
}

/* One listening descriptor per worker: their own sockets on one port (SO_REUSEPORT, the
 * kernel spreads the connections), or one socket, each worker with a descriptor of it (dup):
 * a unix socket, or the socket systemd passed (passed >= 0), where every worker's loop
 * competes for each connection and the kernel balances nothing. */
static int bind_workers(struct daemon *d, int passed, char *err, size_t len)
{
	for (int i = 0; i < d->nworkers; i++) {
		struct worker *w = &d->workers[i];

		w->d = d;
		w->id = i;
		if (passed >= 0 && i == 0) {
			w->listen_fd = passed;
			w->own_listen_fd = true;
			continue;
		}
		if ((d->listen.is_unix || passed >= 0) && i > 0) {
			/* one socket, every loop accepts; each closes its own descriptor */
			w->listen_fd = fcntl(d->workers[0].listen_fd, F_DUPFD_CLOEXEC, 0);
			if (w->listen_fd < 0) {
				snprintf(err, len, "dup: %s", strerror(errno));
				return -1;
			}
			w->own_listen_fd = true;
			continue;
		}
		/* the first bind fails if any socket holds the port, unless --reuse-port */
		w->listen_fd = address_listen(&d->listen,
					      i > 0 || d->o->reuse_port ? ADDRESS_SHARE_JOIN
									: ADDRESS_SHARE_FIRST,
					      d->listen_mode, err, len);
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
	no_core_dumps();
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

/* --max-connections against the descriptor limit (after raise_fd_limit()): each connection
 * holds two (accepted and outbound), and the daemon needs some of its own: standard streams,
 * log, main loop and signals, files read at a reload, and per worker its listener, event loop
 * and wakeup; the metrics listener and its clients. A limit that cannot be reached is one the
 * kernel enforces instead, with accept() failing (HAProxy derives its maxconn the same way).
 * The default and 0 are lowered with a warning; an explicit number that does not fit is
 * refused. */
/* The metrics HTTP server's connections, out of a descriptor limit of fds: an eighth of it,
 * 16 to METRICS_HTTP_CONNECTIONS, so that idle metrics clients cannot take the descriptors
 * of the tunnel's connections (fit_connections() reserves them). */
static unsigned metrics_connections(long long fds)
{
	long long n = fds / 8;

	return n < 16 ? 16 : n > METRICS_HTTP_CONNECTIONS ? METRICS_HTTP_CONNECTIONS : (unsigned)n;
}

static long long fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
		return INT32_MAX;
	return rl.rlim_cur > (rlim_t)INT32_MAX ? INT32_MAX : (long long)rl.rlim_cur;
}

/* fds: the descriptors this tunnel may count on (its part of the limit) */
/* The descriptors a tunnel needs besides its connections' (fds: the limit). */
static long long fd_reserve(const struct tunnel_options *o, long long fds)
{
	return 32 + 4 * o->workers + (o->metrics != NULL ? 8 + metrics_connections(fds) : 0);
}

/* fds: this tunnel's part of the limit (all of it for a single tunnel); part: "" or what
 * says how the limit was shared, for the messages */
static int fit_connections(struct tunnel_options *o, long long fds, const char *part,
			   long long *lowered_from, char *err, size_t len)
{
	long long reserve, fit, want;

	*lowered_from = -1;
	if (fds == INT32_MAX) /* no limit, or one past counting */
		return 0;
	reserve = fd_reserve(o, fds);
	fit = fds > reserve ? (fds - reserve) / 2 : 0;
	want = o->max_connections;
	if (fit < 1) {
		snprintf(err, len,
			 "the descriptor limit (RLIMIT_NOFILE) is %lld%s, too few for %lld workers "
			 "and any connection; raise it (ulimit -n, LimitNOFILE= in a systemd unit)",
			 fds, part, o->workers);
		return -1;
	}
	if (want > 0 && want <= fit)
		return 0;
	if (want > 0 && o->max_connections_given) {
		snprintf(err, len,
			 "--max-connections %lld needs about %lld descriptors but the limit "
			 "(RLIMIT_NOFILE) is %lld%s: raise it (ulimit -n, LimitNOFILE= in a "
			 "systemd unit) or give --max-connections %lld or less",
			 want, 2 * want + reserve, fds, part, fit);
		return -1;
	}
	o->max_connections = fit;
	*lowered_from = want;
	return 0;
}

/* The line about a --max-connections fit_connections() lowered (from requested; -1: it did
 * not), once every tunnel passed its checks: a refused configuration writes one line. */
static void log_lowered(const struct tunnel_options *o, long long requested, long long fds)
{
	if (requested < 0)
		return;
	LOG(requested == 0 ? LOG_INFO : LOG_WARN, "max_connections_lowered",
	    LN("requested", requested), LN("max_connections", o->max_connections),
	    LN("fd_limit", fds),
	    LS("message", requested == 0 ? "no limit given: as many connections as the "
					   "descriptor limit allows (two descriptors each)"
					 : "the default does not fit the descriptor limit (two "
					   "descriptors per connection); raise it (ulimit -n, "
					   "LimitNOFILE=) for more"));
}

/* The owner of user, for the CRL caches written before the drop; -1, -1 if none. */
static void user_ids(const char *user, uid_t *uid, gid_t *gid)
{
	struct passwd *pw = user != NULL ? getpwnam(user) : NULL;

	*uid = pw != NULL ? pw->pw_uid : (uid_t)-1;
	*gid = pw != NULL ? pw->pw_gid : (gid_t)-1;
}

/* --crl-url: each cache file joins the CRL files (o's list, kept in ms), and a fetcher is made
 * for each URL. Without a cache file yet (the first start), one fetch now: a daemon that has
 * never had the CRL it was told to check refuses to start rather than let everyone in. */
static int setup_crl_url(struct main_state *ms, struct tunnel_options *o, char *err, size_t len)
{
	long long refresh_ms = 60000;
	struct stat sb;
	char why[400];
	bool push = true;
	uid_t uid;
	gid_t gid;

	if (o->crl_url.n == 0) {
		if (o->crl_cache.n > 0 || o->crl_refresh != NULL || o->crl_push != NULL) {
			snprintf(err, len,
				 "--crl-cache, --crl-refresh and --crl-push go with --crl-url");
			return -1;
		}
		return 0;
	}
	if (o->crl_cache.n == 0) {
		snprintf(err, len,
			 "--crl-url needs --crl-cache FILE: where the last good CRL is kept, so a "
			 "restart while the URL is down still has it");
		return -1;
	}
	if (o->crl_cache.n != o->crl_url.n) {
		snprintf(
			err, len,
			"%zu --crl-url and %zu --crl-cache: give one --crl-cache per --crl-url, in "
			"the same order",
			o->crl_url.n, o->crl_cache.n);
		return -1;
	}
	for (size_t i = 0; i < o->crl_cache.n; i++)
		for (size_t j = 0; j < i; j++)
			if (strcmp(o->crl_cache.v[i], o->crl_cache.v[j]) == 0) {
				snprintf(err, len,
					 "--crl-cache %s is given twice: each --crl-url needs its "
					 "own file",
					 o->crl_cache.v[i]);
				return -1;
			}
	if (o->ca == NULL) {
		snprintf(err, len, "give --ca: a fetched CRL is verified by it");
		return -1;
	}
	if (o->crl_refresh != NULL && duration_parse(o->crl_refresh, "--crl-refresh", 1000,
						     86400000, &refresh_ms, err, len) != 0)
		return -1;
	if (o->crl_push != NULL && strcmp(o->crl_push, "on") != 0) {
		if (strcmp(o->crl_push, "off") != 0) {
			snprintf(err, len, "--crl-push %s: give on or off", o->crl_push);
			return -1;
		}
		push = false;
	}
	if (o->crl.n + o->crl_cache.n > CREDENTIALS_FILES_MAX) {
		snprintf(err, len, "too many --crl and --crl-cache files (at most %d)",
			 CREDENTIALS_FILES_MAX);
		return -1;
	}
	user_ids(o->user, &uid, &gid);
	for (size_t i = 0; i < o->crl.n; i++)
		ms->crl_files[i] = o->crl.v[i];
	for (size_t i = 0; i < o->crl_cache.n; i++) {
		const char *url = o->crl_url.v[i], *cache = o->crl_cache.v[i];
		struct crlfetch *f;

		ms->crl_files[o->crl.n + i] = cache;
		if (strcmp(url, "auto") == 0) {
			if (crlfetch_auto_url(o->cert, o->ca, ms->crl_auto, sizeof(ms->crl_auto),
					      err, len) != 0)
				return -1;
			url = ms->crl_auto;
			LOG(LOG_INFO, "crl_url_auto", LS("url", url), LS("file", cache));
		}
		f = crlfetch_new(url, o->ca, o->cert, cache, refresh_ms, &ms->d->metrics, err, len);
		if (f == NULL)
			return -1;
		ms->crlfetch[ms->ncrlfetch++] = f;
		crlfetch_set_push(f, push);
		crlfetch_set_owner(f, uid, gid);
		crlfetch_set_grace(f, o->crl_grace);
		if (stat(cache, &sb) == 0)
			continue;
		if (crlfetch_once(f, why, sizeof(why)) != 0) {
			snprintf(err, len,
				 "--crl-url %.200s: no CRL yet (%s does not exist) and the fetch "
				 "failed: "
				 "%s; start when the URL serves the CRL, or put a CRL in %s",
				 url, cache, why, cache);
			return -1;
		}
	}
	o->crl.v = ms->crl_files;
	o->crl.n += o->crl_cache.n;
	return 0;
}

static void fail_in(const struct tunnel *t, const char *msg)
{
	const char *role = t->eff.role == TUNNEL_SERVER ? "server" : "connector";
	char line[1000];

	if (t->d.name == NULL) {
		fail(role, msg);
		return;
	}
	snprintf(line, sizeof(line), "[%s] %s", t->d.name, msg);
	fail(role, line);
}

/* A tunnel's whole configuration checked and its files read, before any tunnel of the
 * process binds a socket. fds: the descriptors this tunnel may count on (n tunnels share the
 * limit). 0, or 2 (the reason on stderr). */
static int prepare_check(struct tunnel *t, long long fds, const char *part)
{
	struct tunnel_options *o = &t->eff;
	struct daemon *d = &t->d;
	struct main_state *ms = &t->ms;
	const char *role = o->role == TUNNEL_SERVER ? "server" : "connector";
	char err[800];

	log_tag_set(d->name);
	metrics_init(&d->metrics, role);
	d->metrics.tunnel = d->name;
	ms->pass = t->pass;
	/* the whole configuration first: nothing below opens a socket before it passed */
	if (check(d, err, sizeof(err)) != 0 || setup_crl_url(ms, o, err, sizeof(err)) != 0)
		goto config;
	d->metrics.crl_configured = o->crl.n > 0;
	d->metrics.crl_fetching = ms->ncrlfetch > 0;
	/* the watcher's baseline is taken before the files are read: a file replaced in
	 * between is then seen as a change and loaded, not taken for what is in service */
	ms->nfiles = credentials_files(o, ms->files, WATCH_MAX);
	sign_files(ms, ms->sigs);
	/* the descriptors last: a warning about them is for a configuration that will run */
	if (load_credentials(ms, err, sizeof(err)) != 0) {
		/* a module that keeps files (SoftHSM's token directory) cannot reach them
		 * from inside the sandbox unless they are given */
		if (pkcs11_is_uri(o->key) && !o->insecure_no_sandbox &&
		    strlen(err) + 160 < sizeof(err))
			strcat(err, " (the daemon is sandboxed: a PKCS#11 module that keeps files, "
				    "such as SoftHSM's token directory, needs them given with "
				    "--sandbox-allow)");
		goto config;
	}
	if (fit_connections(o, fds, part, &t->lowered_from, err, sizeof(err)) != 0)
		goto config;
	if (o->ca_url != NULL) {
		long long every_ms = (long long)RENEWER_ROOTS_EVERY * 1000;
		char key_name[8192];

		if (o->ca_refresh != NULL &&
		    duration_parse(o->ca_refresh, "--ca-refresh", 1000, 86400000, &every_ms, err,
				   sizeof(err)) != 0)
			goto config;
		ms->renewer = renewer_new(
			o->ca_url, o->cert, renewal_key_name(o, key_name, sizeof(key_name)), o->ca,
			o->renew_key_type, ms->roots_writable ? every_ms / 1000 : 0, &d->metrics,
			err, sizeof(err));
		if (ms->renewer == NULL)
			goto config;
		/* a renewed certificate's staple is fetched before it is swapped in */
		if (o->role == TUNNEL_SERVER &&
		    renewer_set_staple(ms->renewer, d->endpoint, o->ocsp_url) != 0) {
			snprintf(err, sizeof(err), "out of memory");
			goto config;
		}
		renewer_loaded(ms->renewer, mtls_endpoint_cert_not_after(d->endpoint));
	}
	return 0;
config:
	fail_in(t, err);
	return 2;
}

/* The rest of what a tunnel needs before the privileges are dropped: the threads that need
 * no loop started, the sockets bound (the tunnel's own, then its metrics). 0, or 1 (the
 * reason on stderr). */
static int prepare_bind(struct tunnel *t, long long fds)
{
	struct tunnel_options *o = &t->eff;
	struct daemon *d = &t->d;
	struct main_state *ms = &t->ms;
	char err[800], addr[300];

	log_tag_set(d->name);
	log_lowered(o, t->lowered_from, fds);
	/* OCSP jobs (peers' status by --ocsp, the own staple), fetched by a thread of their
	 * own; it sleeps while there is none */
	if ((ms->ocspfetch = ocspfetch_new(d->endpoint, &d->metrics, err, sizeof(err))) == NULL)
		goto failed;
	d->metrics.endpoint = d->endpoint;
	update_expiry(d);
	if (metrics_identities_init(&d->metrics, (size_t)o->metrics_identities) != 0) {
		snprintf(err, sizeof(err), "out of memory");
		goto failed;
	}
	apply_mode(ms);
	ms->started = time(NULL);
	publish_status(ms, "start", true, NULL);
	if (resolver_start(d->resolver) != 0) {
		snprintf(err, sizeof(err), "cannot start the resolver thread");
		goto failed;
	}
	d->metrics.target_check = target_check;
	d->metrics.target_arg = d;
	d->nworkers = (int)o->workers;
	d->metrics.nworkers = d->nworkers;
	d->workers = calloc((size_t)d->nworkers, sizeof(*d->workers));
	if (d->workers == NULL) {
		snprintf(err, sizeof(err), "out of memory");
		goto failed;
	}
	if (take_passed(d, t->passed, err, sizeof(err)) != 0 ||
	    bind_workers(d, t->passed[0], err, sizeof(err)) != 0)
		goto failed;
	if (t->passed[0] >= 0) {
		address_local(t->passed[0], addr, sizeof(addr));
		LOG(LOG_INFO, "socket_activation", LS("address", addr),
		    LS("metrics", t->passed[1] >= 0 ? "passed" : "bound"),
		    LN("workers", d->nworkers),
		    LS("message", "listening on the socket systemd passed; the workers share it "
				  "(no SO_REUSEPORT balancing)"));
	}
	if (o->metrics != NULL) {
		if ((t->metrics_fd = t->passed[1]) < 0 &&
		    (t->metrics_fd = address_listen(&d->metrics_addr, ADDRESS_SHARE_NONE,
						    LISTEN_MODE_DEFAULT, err, sizeof(err))) < 0)
			goto failed;
		address_local(t->metrics_fd, addr, sizeof(addr));
		ms->http = metrics_http_start(t->metrics_fd, &d->metrics, metrics_connections(fds));
		if (ms->http == NULL) {
			close(t->metrics_fd);
			snprintf(err, sizeof(err), "cannot start the metrics HTTP server");
			goto failed;
		}
		LOG(LOG_INFO, "metrics_listening", LS("address", addr));
	}
	return 0;
failed:
	fail_in(t, err);
	return 1;
}

/* The tunnel's workers, with every signal the main loop takes blocked (the caller's mask). 0,
 * or -1 (logged on stderr). */
static int start_workers(struct tunnel *t)
{
	struct daemon *d = &t->d;
	const char *role = t->eff.role == TUNNEL_SERVER ? "server" : "connector";
	char addr[300];

	log_tag_set(d->name);
	for (int i = 0; i < d->nworkers; i++)
		if (worker_start(&d->workers[i]) != 0) {
			fail_in(t, "cannot start worker threads");
			return -1;
		}
	address_local(d->workers[0].listen_fd, addr, sizeof(addr));
	LOG(LOG_INFO, "listening", LS("role", role), LS("address", addr),
	    LS("target", resolver_describe(d->resolver)), LN("workers", d->nworkers),
	    LN("pid", getpid()));
	snprintf(t->ms.listening, sizeof(t->ms.listening), "listening on %.120s → %.150s", addr,
		 resolver_describe(d->resolver));
	return 0;
}

/* The tunnel's part of the main loop: its signals (each tunnel drains and reloads itself),
 * the file watcher, CRL, renewal and OCSP threads, and its timers. */
static void start_main(struct tunnel *t, struct ev_loop *loop)
{
	struct main_state *ms = &t->ms;
	const struct tunnel_options *o = &t->eff;

	log_tag_set(t->d.name);
	ev_signal_init(&ms->sigterm, on_stop, SIGTERM);
	ev_signal_init(&ms->sigint, on_stop, SIGINT);
	ev_signal_start(loop, &ms->sigterm);
	ev_signal_start(loop, &ms->sigint);
	/* the process's: a SIGHUP reloads each tunnel in turn, the log file is reopened once */
	if (ms->primary) {
		ev_signal_init(&ms->sighup, on_sighup, SIGHUP);
		ev_signal_start(loop, &ms->sighup);
		ev_signal_init(&ms->sigusr1, on_sigusr1, SIGUSR1);
		ev_signal_start(loop, &ms->sigusr1);
	}
	ev_timer_init(&ms->watch, on_watch, 0.0, 0.0);
	watch_start(ms, loop);
	if (ms->watching) /* a change since the baseline (before the files were read) */
		watch_look(ms, loop);
	check_crls(ms, ev_now(loop), true);
	if (ms->ncrlfetch > 0) {
		ev_async_init(&ms->crl_fetched, on_crl_fetched);
		ev_async_start(loop, &ms->crl_fetched);
	}
	for (size_t i = 0; i < ms->ncrlfetch; i++)
		if (crlfetch_start(ms->crlfetch[i], loop, &ms->crl_fetched) != 0)
			LOG(LOG_ERROR, "crl_fetch_failed", LS("file", o->crl_cache.v[i]),
			    LS("reason", "cannot start the fetch thread"),
			    LS("action", "the CRL in --crl-cache stays; restart the daemon"));
	if (ms->renewer != NULL) {
		ev_async_init(&ms->renewed, on_renewed);
		ev_async_start(loop, &ms->renewed);
		if (renewer_start(ms->renewer, loop, &ms->renewed) != 0)
			LOG(LOG_ERROR, "renewal_failed",
			    LS("reason", "cannot start the renewal thread"),
			    LS("action", "the certificate is not renewed; restart the daemon"));
	}
	ev_async_init(&ms->ocsp_recheck, on_ocsp_recheck);
	ev_async_start(loop, &ms->ocsp_recheck);
	if (ocspfetch_start(ms->ocspfetch, loop, &ms->ocsp_recheck) != 0)
		LOG(LOG_ERROR, "ocsp_fetch_failed", LS("reason", "cannot start the OCSP thread"),
		    LS("action", "no OCSP answers are fetched; restart the daemon"));
	ev_timer_init(&ms->trim, on_trim, 1.0, 1.0);
	ev_timer_start(loop, &ms->trim);
	ev_timer_init(&ms->health, on_health, HEALTH_EVERY, HEALTH_EVERY);
	ev_timer_start(loop, &ms->health);
}

/* The workers stopped (phase 2 and woken), then joined. */
static void join_workers(struct tunnel *t)
{
	struct daemon *d = &t->d;

	for (int i = 0; d->workers != NULL && i < d->nworkers; i++)
		if (d->workers[i].loop != NULL) {
			pthread_join(d->workers[i].thread, NULL);
			ev_loop_destroy(d->workers[i].loop);
			d->workers[i].loop = NULL;
		}
}

static void stop_workers(struct tunnel *t)
{
	atomic_store(&t->d.phase, 2);
	wake_all(&t->d);
	join_workers(t);
}

/* What prepare() and start_main() made, in the order it can go: the threads that may wake the
 * loop first. */
static void tunnel_free(struct tunnel *t, struct ev_loop *loop)
{
	struct main_state *ms = &t->ms;
	struct daemon *d = &t->d;

	log_tag_set(d->name);
	for (size_t i = 0; i < ms->ncrlfetch; i++)
		crlfetch_free(ms->crlfetch[i]); /* its thread may still wake the loop: first */
	renewer_free(ms->renewer);
	ocspfetch_free(ms->ocspfetch); /* likewise; after the workers, whose handshakes notify it */
	metrics_http_stop(ms->http);
	if (loop != NULL)
		watch_stop(ms, loop);
	for (int i = 0; d->workers != NULL && i < d->nworkers; i++)
		if (d->workers[i].own_listen_fd && d->workers[i].listen_fd >= 0)
			close(d->workers[i].listen_fd);
	/* only a socket this daemon made: not one of a daemon that refused this one, nor
	 * systemd's */
	if (d->listen.is_unix && d->workers != NULL && d->workers[0].own_listen_fd &&
	    t->passed[0] < 0)
		unlink(((struct sockaddr_un *)&d->listen.sa)->sun_path);
	free(d->workers);
	resolver_free(d->resolver); /* after the workers: their connections held its lists */
	if (d->pgrole != NULL) {
		pgrole_free(d->pgrole);
		pthread_mutex_destroy(&d->pg_mu);
	}
	mtls_free(d->endpoint);
	json_decref(ms->creds);
	metrics_free(&d->metrics);
	live_free(ms);
	log_tag_set(NULL);
}

/* The port of an IP address, and whether it is the wildcard (0.0.0.0, ::). */
static unsigned short ip_port(const struct address *a, bool *any)
{
	if (a->sa.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&a->sa;

		*any = in->sin_addr.s_addr == htonl(INADDR_ANY);
		return ntohs(in->sin_port);
	}
	if (a->sa.ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&a->sa;

		*any = IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr);
		return ntohs(in6->sin6_port);
	}
	*any = false;
	return 0;
}

/* Whether two tunnels binding a and b would share connections (or the second fail): one
 * unix path, or one port on one address or on a wildcard covering the other. Port 0 (any
 * port) is never one address. */
static bool same_address(const struct address *a, const struct address *b)
{
	unsigned short pa, pb;
	bool anya, anyb;

	if (a->is_unix || b->is_unix)
		return a->is_unix && b->is_unix &&
		       strcmp(((const struct sockaddr_un *)&a->sa)->sun_path,
			      ((const struct sockaddr_un *)&b->sa)->sun_path) == 0;
	pa = ip_port(a, &anya);
	pb = ip_port(b, &anyb);
	if (pa == 0 || pa != pb)
		return false;
	if (anya || anyb)
		return true;
	if (a->sa.ss_family != b->sa.ss_family)
		return false;
	if (a->sa.ss_family == AF_INET)
		return ((const struct sockaddr_in *)&a->sa)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)&b->sa)->sin_addr.s_addr;
	return memcmp(&((const struct sockaddr_in6 *)&a->sa)->sin6_addr,
		      &((const struct sockaddr_in6 *)&b->sa)->sin6_addr,
		      sizeof(struct in6_addr)) == 0;
}

/* Whether paths a and b name one file: the same inode, or (a file not there yet, such as a
 * first --crl-cache) the same real directory and name. */
static bool same_file(const char *a, const char *b)
{
	struct stat sa, sb;
	char *da, *db, *ra, *rb;
	const char *na, *nb;
	bool same;

	if (stat(a, &sa) == 0 && stat(b, &sb) == 0)
		return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
	na = strrchr(a, '/') != NULL ? strrchr(a, '/') + 1 : a;
	nb = strrchr(b, '/') != NULL ? strrchr(b, '/') + 1 : b;
	if (strcmp(na, nb) != 0)
		return false;
	da = strndup(a, (size_t)(na - a));
	db = strndup(b, (size_t)(nb - b));
	ra = da != NULL ? realpath(da[0] != '\0' ? da : ".", NULL) : NULL;
	rb = db != NULL ? realpath(db[0] != '\0' ? db : ".", NULL) : NULL;
	same = ra != NULL && rb != NULL ? strcmp(ra, rb) == 0 : strcmp(a, b) == 0;
	free(da);
	free(db);
	free(ra);
	free(rb);
	return same;
}

/* Whether lists a and b name one file; *which is set to it. */
static bool lists_share(const struct tunnel_list *a, const struct tunnel_list *b,
			const char **which)
{
	for (size_t i = 0; i < a->n; i++)
		for (size_t k = 0; k < b->n; k++)
			if (same_file(a->v[i], b->v[k])) {
				*which = a->v[i];
				return true;
			}
	return false;
}

/* Two tunnels of one process on one address would split its connections, or the second
 * fail to bind; two renewing one certificate (--ca-url) or fetching into one --crl-cache
 * would each write the other's files: refused with both names. After check() (the
 * addresses parsed). */
static int check_distinct(const struct tunnel *t, size_t n, char *err, size_t len)
{
	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++) {
			const struct tunnel_options *a = &t[i].eff, *b = &t[j].eff;
			const char *what = NULL, *addr = NULL;

			if (a->ca_url != NULL && b->ca_url != NULL && a->cert != NULL &&
			    b->cert != NULL && same_file(a->cert, b->cert)) {
				snprintf(err, len,
					 "sections [%s] and [%s] both renew %s (ca-url); give "
					 "ca-url "
					 "to one of them: the other loads the renewed file when it "
					 "changes",
					 t[i].d.name, t[j].d.name, a->cert);
				return -1;
			}
			if (lists_share(&a->crl_cache, &b->crl_cache, &addr)) {
				snprintf(
					err, len,
					"sections [%s] and [%s] both fetch into crl-cache %s; give "
					"crl-url and crl-cache to one of them and crl %s to the "
					"other",
					t[i].d.name, t[j].d.name, addr, addr);
				return -1;
			}
			if (same_address(&t[i].d.listen, &t[j].d.listen))
				what = "listen on", addr = a->listen;
			else if (a->metrics != NULL && b->metrics != NULL &&
				 same_address(&t[i].d.metrics_addr, &t[j].d.metrics_addr))
				what = "serve metrics on", addr = a->metrics;
			else if (a->metrics != NULL &&
				 same_address(&t[i].d.metrics_addr, &t[j].d.listen))
				what = "use", addr = a->metrics;
			else if (b->metrics != NULL &&
				 same_address(&t[i].d.listen, &t[j].d.metrics_addr))
				what = "use", addr = b->metrics;
			if (what != NULL) {
				snprintf(
					err, len,
					"sections [%s] and [%s] both %s %s (%s); give each its own "
					"address",
					t[i].d.name, t[j].d.name, what, addr,
					what[0] == 'u' ? "a listen and a metrics address"
						       : "one address");
				return -1;
			}
		}
	return 0;
}

int tunnel_check_distinct(const struct tunnel_options *const *o, const char *const *names, size_t n,
			  char *err, size_t len)
{
	struct tunnel *t = calloc(n, sizeof(*t));
	char why[300];
	int rc;

	if (t == NULL) {
		snprintf(err, len, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		t[i].eff = *o[i];
		t[i].d.name = names[i];
		/* an address that does not parse is the other checks' finding */
		if (o[i]->listen != NULL)
			address_parse(o[i]->listen, &t[i].d.listen, why, sizeof(why));
		if (o[i]->metrics != NULL)
			address_parse(o[i]->metrics, &t[i].d.metrics_addr, why, sizeof(why));
	}
	rc = check_distinct(t, n, err, len);
	free(t);
	return rc;
}

/* Whether a change of files (mtls renew, mtls agent) left its journal beside cert. */
static bool journal_left(const char *cert)
{
	const char *names[] = {FILESET_JOURNAL, FILESET_UNDO};
	const char *slash = cert != NULL ? strrchr(cert, '/') : NULL;
	char path[PATH_MAX + 32];

	for (size_t i = 0; cert != NULL && i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%.*s/%s", slash != NULL ? (int)(slash - cert) : 1,
			 slash != NULL ? cert : ".", names[i]);
		if (access(path, F_OK) == 0)
			return true;
	}
	return false;
}

/* What a tunnel reads and writes, for the sandbox (sandbox.h): the directories of the files
 * it reads, read-only (a rotation renames a new file in; the watcher sees the new inode);
 * where it writes, read-write: the --crl-cache directories, with --ca-url the directories of
 * --cert, --key and --ca (renewed in place), the --log-file's, a unix --listen socket's; and
 * --sandbox-allow. A SIGHUP that names files elsewhere fails to load them (a restart takes
 * them). 0, or -1 out of memory. */
static int sandbox_paths(struct sandbox *sb, const struct tunnel_options *o)
{
	/* a pkcs11: key is no file: its module's files are --sandbox-allow's */
	const char *key = pkcs11_is_uri(o->key) ? NULL : o->key;
	const char *const reads[] = {o->cert, key, o->ca, o->key_passphrase_file};
	int rc = 0;

	for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++)
		rc |= sandbox_read_dir_of(sb, reads[i]);
	for (size_t i = 0; i < o->crl.n; i++)
		rc |= sandbox_read_dir_of(sb, o->crl.v[i]);
	for (size_t i = 0; i < o->config_files.n; i++)
		rc |= sandbox_read_dir_of(sb, o->config_files.v[i]);
	for (size_t i = 0; i < o->crl_cache.n; i++)
		rc |= sandbox_write_dir_of(sb, o->crl_cache.v[i]);
	/* and a change of files cut short, which the start finishes (recover_if_journal) */
	if (o->ca_url != NULL || journal_left(o->cert)) {
		rc |= sandbox_write_dir_of(sb, o->cert);
		rc |= sandbox_write_dir_of(sb, key);
		rc |= sandbox_write_dir_of(sb, o->ca);
	}
	rc |= sandbox_write_dir_of(sb, o->log_file);
	if (o->listen != NULL && strncmp(o->listen, "unix:", 5) == 0)
		rc |= sandbox_write_dir_of(sb, o->listen + 5);
	for (size_t i = 0; i < o->sandbox_allow.n; i++)
		rc |= sandbox_allow(sb, o->sandbox_allow.v[i]);
	return rc != 0 ? -1 : 0;
}

int tunnel_run_many(const struct tunnel_options *const *given, const char *const *names, size_t n)
{
	struct sandbox *sb = NULL;
	const char *role = given[0]->role == TUNNEL_SERVER ? "server" : "connector";
	struct tunnel *t = NULL;
	struct ev_loop *loop = NULL;
	struct stop_group group = {0};
	enum log_format lf;
	enum log_level ll;
	sigset_t block, old;
	char err[800];
	long long fds;
	char part[80] = "";
	size_t prepared = 0, started = 0;
	int rc = 2;

	no_core_dumps();
	/* the process's own options: the same in every section (the config file refuses them
	 * in one) */
	if (log_format_parse(given[0]->log_format, &lf) != 0 ||
	    log_level_parse(given[0]->log_level, &ll) != 0) {
		fail(role, "--log-format is json or logfmt; --log-level is debug, info, warn or "
			   "error");
		return 2;
	}
	/* Landlock before the first thread (the log's writer): it binds the thread that applies
	 * it and those it starts after, and this kernel's ABI cannot reach threads that run
	 * already (sandbox.h) */
	sb = sandbox_new(SANDBOX_TUNNEL, given[0]->insecure_no_sandbox);
	for (size_t i = 0; sb != NULL && i < n; i++)
		if (sandbox_paths(sb, given[i]) != 0) {
			sandbox_free(sb);
			sb = NULL;
		}
	if (sb == NULL) {
		fail(role, "out of memory");
		return 2;
	}
	if (sandbox_landlock(sb, err, sizeof(err)) != 0) {
		fail(role, err);
		sandbox_free(sb);
		return 1;
	}
	if (log_setup(lf, ll, given[0]->log_file) != 0) {
		snprintf(err, sizeof(err), "cannot open --log-file %s: %s", given[0]->log_file,
			 strerror(errno));
		fail(role, err);
		sandbox_free(sb);
		return 2;
	}
	log_tag_set(names != NULL ? names[0] : NULL); /* every line of sections names one */
	sandbox_warnings(sb);
	log_tag_set(NULL);
	signal(SIGPIPE, SIG_IGN);
	raise_fd_limit();
	t = calloc(n, sizeof(*t));
	if (t == NULL) {
		fail(role, "out of memory");
		goto out;
	}
	group.running = n;
	for (size_t i = 0; i < n; i++) {
		t[i].eff = *given[i];
		t[i].d.o = &t[i].eff;
		t[i].d.name = names != NULL ? names[i] : NULL;
		t[i].ms.d = &t[i].d;
		t[i].ms.live = &t[i].eff;
		t[i].ms.group = &group;
		t[i].ms.primary = i == 0;
		t[i].ms.sandbox = sb;
		t[i].metrics_fd = -1;
		t[i].passed[0] = t[i].passed[1] = -1;
	}
	group.tunnels = t;
	group.n = n;
	if (names != NULL && service_listen_passed()) {
		fail(role, "systemd passed sockets (socket activation), which serve one tunnel; "
			   "run a config file with [sections] without the .socket unit, or one "
			   "unit per tunnel");
		goto out;
	}
	/* a passphrase is taken from the environment once (which clears it there): tunnels
	 * naming the same variable share it */
	for (size_t i = 0; i < n; i++) {
		const char *env = t[i].eff.key_passphrase_env;

		if (env == NULL)
			continue;
		for (size_t j = 0; j < i && t[i].pass == NULL; j++)
			if (t[j].eff.key_passphrase_env != NULL &&
			    strcmp(t[j].eff.key_passphrase_env, env) == 0)
				t[i].pass = t[j].pass;
		if (t[i].pass != NULL)
			continue;
		if ((t[i].pass = credentials_secret_take_env(env, err, sizeof(err))) == NULL) {
			fail_in(&t[i], err);
			goto out;
		}
		t[i].own_pass = true;
	}
	/* the descriptors shared out: a tunnel with --max-connections gets what it needs, the
	 * others share the rest evenly, each fitting its connections into its part */
	fds = fd_limit();
	if (fds != INT32_MAX && n > 1) {
		long long rest = fds, others = 0;

		for (size_t i = 0; i < n; i++) {
			const struct tunnel_options *o = &t[i].eff;

			if (o->max_connections_given && o->max_connections > 0) {
				t[i].fds = 2 * o->max_connections + fd_reserve(o, fds);
				rest -= t[i].fds;
			} else {
				others++;
			}
		}
		for (size_t i = 0; i < n; i++)
			if (t[i].fds == 0)
				t[i].fds = rest > 0 ? rest / (others > 0 ? others : 1) : 0;
			else if (rest < 0) /* more than the limit: each its even part */
				t[i].fds = fds / (long long)n;
		snprintf(part, sizeof(part), " (this tunnel's part of %lld for %zu tunnels)", fds,
			 n);
	} else {
		t[0].fds = fds;
	}
	/* every tunnel checked before any binds */
	for (; prepared < n; prepared++)
		if ((rc = prepare_check(&t[prepared], t[prepared].fds, part)) != 0) {
			prepared++; /* freed below, as far as it came */
			goto out;
		}
	log_tag_set(NULL);
	if (n > 1 && check_distinct(t, n, err, sizeof(err)) != 0) {
		fail(role, err);
		rc = 2;
		goto out;
	}
	rc = 1;
	for (size_t i = 0; i < n; i++)
		if (prepare_bind(&t[i], t[i].fds) != 0)
			goto out;
	log_tag_set(NULL);
	if (given[0]->user != NULL && drop_privileges(given[0]->user, err, sizeof(err)) != 0) {
		fail(role, err);
		goto out;
	}

	/* signals go to the main loop only */
	sigemptyset(&block);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	for (; started < n; started++)
		if (start_workers(&t[started]) != 0) {
			pthread_sigmask(SIG_SETMASK, &old, NULL);
			started++;
			goto join;
		}
	loop = ev_default_loop(EVFLAG_AUTO);
	group.loop = loop;
	for (size_t i = 0; i < n; i++)
		start_main(&t[i], loop);
	log_tag_set(NULL);
	/* seccomp last, for every thread at once (TSYNC): the start-up made the calls only it
	 * needs (bind, listen, setuid, ...); the threads started since are bound too */
	log_tag_set(t[0].d.name);
	if (sandbox_seccomp(sb, err, sizeof(err)) != 0) {
		LOG(LOG_ERROR, "sandbox_failed", LS("message", err));
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		fail(role, err);
		rc = 1;
		goto join;
	}
	for (size_t i = 0; i < n; i++) { /* each tunnel's log says it */
		char what[80];

		log_tag_set(t[i].d.name);
		sandbox_describe(sb, what, sizeof(what));
		LOG(LOG_INFO, "sandbox", LS("state", what),
		    LS("message", given[0]->insecure_no_sandbox
					  ? "off (--insecure-no-sandbox)"
					  : "limited to its files and system calls"));
	}
	log_tag_set(NULL);
	for (size_t i = 0; i < n; i++)
		publish_status(&t[i].ms, "start", true, NULL);
	sandbox_probe("start");
	/* unblocked only now: a SIGHUP sent as soon as "listening" shows (a deployment tool
	 * rotating right after start) is a reload, not the default action, which kills */
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	notify_ready(&t[0].ms, loop);
	ev_run(loop, 0);
	rc = 0;
join:
	for (size_t i = 0; i < started; i++)
		stop_workers(&t[i]);
out:
	for (size_t i = 0; i < prepared; i++)
		tunnel_free(&t[i], loop);
	for (size_t i = 0; t != NULL && i < n; i++)
		if (t[i].own_pass)
			credentials_secret_free(t[i].pass);
	if (loop != NULL)
		ev_loop_destroy(loop);
	free(t);
	log_flush(LOG_STOP_WAIT_MS);
	sandbox_free(sb);
	return rc;
}

int tunnel_run(const struct tunnel_options *o)
{
	return tunnel_run_many(&o, NULL, 1);
}
