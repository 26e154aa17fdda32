/*
 * mtls ca serve: set-up, the main loop, and the schedules.
 *
 * Start-up, in order, so that nothing listens before everything is known to work: open the
 * CA (its exclusive lock clears what a killed writer left, then is released), load the
 * issuing key, bind both ports, record the API URL (tokens carry it), make sure the API has
 * a server certificate from this CA for its public name, make sure a current CRL is
 * published and the OCSP responder holds a delegated certificate; then start the HTTP
 * daemons and the TLS front, and log "listening".
 *
 * The main loop's timers: every second, crl.pem is read again if it changed (a revocation
 * by a local `mtls ca revoke` reaches the API's TLS configuration, the OCSP answers and the
 * held GET /crl requests) and held requests whose wait is over are answered;
 * every minute, the CRL is rebuilt when a third of its validity is left, the responder's
 * and the API's certificates are renewed when a third of their lifetime is left.
 * Every second (and at SIGHUP) root.pem and intermediate.pem are looked at too: a `mtls ca
 * rollover` step is taken up without a restart (watch_certs()).
 * SIGTERM / SIGINT stop the service.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ev.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "address.h"
#include "certfields.h"
#include "crlwait.h"
#include "files.h"
#include "grant.h"
#include "issuance.h"
#include "issue.h"
#include "keys.h"
#include "log.h"
#include "ocsp.h"
#include "sandbox.h"
#include "serve.h"
#include "service_listen.h"
#include "service_notify.h"
#include "token.h"

#define SCHEDULE_SECONDS  60.0
#define API_CERT_BACKDATE 300
#define API_CERT_MIN	  3600 /* seconds the API's own certificate lives at least */

struct loop_ctx {
	struct serve *s;
	ev_signal sigterm, sigint, sighup, sigusr1;
	ev_timer watch, schedule;
	ev_timer watchdog; /* systemd's WATCHDOG=1 while the main loop runs */
	char status[300];  /* systemd's STATUS= line */
};

/* ---- the API's own certificate ---- */

/* host of an https://host[:port] URL (brackets of an IPv6 literal removed) */
static int url_host(const char *url, char *host, size_t len)
{
	const char *p = strncmp(url, "https://", 8) == 0 ? url + 8 : NULL, *end;

	if (p == NULL)
		return -1;
	if (*p == '[') {
		end = strchr(p, ']');
		if (end == NULL)
			return -1;
		p++;
	} else {
		end = p + strcspn(p, ":/");
	}
	if (end == p || (size_t)(end - p) >= len)
		return -1;
	memcpy(host, p, (size_t)(end - p));
	host[end - p] = '\0';
	return 0;
}

static bool is_ip(const char *host)
{
	unsigned char buf[16];

	return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* Does cert_dir hold a certificate for host, from this CA, with more than a third of its
 * lifetime left at now, in the chain the CA hands out now (after `mtls ca rollover switch`
 * the intermediate is the new root's: the certificate is issued again, so that clients
 * enrolling with a token that pins the new root verify the API)? */
static bool own_cert_current(struct serve *s, const char *host, time_t now)
{
	char path[PATH_MAX];
	FILE *f;
	X509 *x = NULL, *c;
	STACK_OF(X509) *rest = sk_X509_new_null();
	bool ok = false;
	int n;

	snprintf(path, sizeof(path), "%s/api-chain.pem", s->o->cert_dir);
	f = rest != NULL ? fopen(path, "r") : NULL;
	if (f == NULL) {
		sk_X509_free(rest);
		return false;
	}
	x = PEM_read_X509(f, NULL, NULL, NULL);
	while ((c = PEM_read_X509(f, NULL, NULL, NULL)) != NULL)
		if (!sk_X509_push(rest, c))
			X509_free(c);
	ERR_clear_error();
	fclose(f);
	snprintf(path, sizeof(path), "%s/api.key", s->o->cert_dir);
	if (x != NULL && files_exists(path) && X509_check_issued(s->ca->issuer, x) == X509_V_OK &&
	    X509_verify(x, X509_get0_pubkey(s->ca->issuer)) == 1 && sk_X509_num(rest) == 1 &&
	    X509_cmp(sk_X509_value(rest, 0), s->ca->issuer) == 0) {
		time_t nb = certfields_time(X509_get0_notBefore(x));
		time_t na = certfields_time(X509_get0_notAfter(x));

		n = is_ip(host) ? X509_check_ip_asc(x, host, 0)
				: X509_check_host(x, host, 0, 0, NULL);
		ok = n == 1 && na > now && na - now > (na - nb) / 3;
	}
	ERR_clear_error();
	X509_free(x);
	sk_X509_pop_free(rest, X509_free);
	return ok;
}

/* Issue the API's server certificate for host: staged, committed, then published. */
static int own_cert_issue(struct serve *s, const char *host, time_t now, char *err, size_t err_len)
{
	struct grant g;
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	char *key_pem = NULL, *chain = NULL, *subject = NULL;
	char *detail = NULL, spki[65], keypath[PATH_MAX], chainpath[PATH_MAX];
	size_t key_len = 0, chain_len = 0;
	struct files_staged sk = {0}, sc = {0};
	time_t issuer_end = certfields_time(X509_get0_notAfter(s->ca->issuer));
	struct issue_spec spec = {.kind = ISSUE_SERVER};
	int rc = -1;

	if (grant_init(&g, "server", GRANT_OPERATOR, err, err_len) != 0)
		return -1;
	if ((is_ip(host) ? grant_add_ip(&g.names, host, err, err_len)
			 : grant_add_dns(&g.names, host, err, err_len)) != 0)
		goto out;
	key = keys_generate("p256", err, err_len);
	if (key == NULL)
		goto out;
	spec.cn = g.names.first;
	spec.subject_key = key;
	spec.names = g.names.names;
	spec.not_before = now - API_CERT_BACKDATE;
	/* at least an hour, however short the leaves: the API's certificate is renewed by the
	 * minute schedule when a third of it is left */
	spec.not_after = now + (s->policy.leaf_seconds > API_CERT_MIN ? s->policy.leaf_seconds
								      : API_CERT_MIN);
	if (spec.not_after > issuer_end)
		spec.not_after = issuer_end;
	spec.crl_url = s->ca->crl_url[0] != '\0' ? s->ca->crl_url : NULL;
	spec.ocsp_url = s->ca->ocsp_url[0] != '\0' ? s->ca->ocsp_url : NULL;
	if (store_begin(s->ca->store) != 0) {
		snprintf(err, err_len, "%s", store_error(s->ca->store));
		goto out;
	}
	cert = issue_sign(&spec, s->ca->issuer, s->ca->issuer_key, err, err_len);
	if (cert != NULL) {
		struct store_cert c = {0};
		unsigned char *der = NULL;
		int len = i2d_X509(cert, &der);

		issue_serial_hex(cert, c.serial, sizeof(c.serial));
		issue_spki_sha256(cert, spki);
		subject = issue_subject(cert);
		c.subject = subject != NULL ? subject : "";
		c.sans = g.names.text;
		c.spki_sha256 = spki;
		c.profile = "server";
		c.not_before = spec.not_before;
		c.not_after = spec.not_after;
		c.issued_at = now;
		c.der = der;
		c.der_len = len > 0 ? (size_t)len : 0;
		if (len <= 0 || asprintf(&detail,
					 "serial %s, profile server, %s (the API of mtls "
					 "ca serve)",
					 c.serial, g.names.text) < 0) {
			detail = NULL;
			snprintf(err, err_len, "out of memory");
			X509_free(cert);
			cert = NULL;
		} else if (store_add_cert(s->ca->store, &c) != 0 ||
			   store_audit(s->ca->store, "mtls ca serve", "issue", c.subject, detail) !=
				   0) {
			snprintf(err, err_len, "%s", store_error(s->ca->store));
			X509_free(cert);
			cert = NULL;
		}
		OPENSSL_free(der);
	}
	key_pem = cert != NULL ? keys_to_pem(key, NULL, &key_len) : NULL;
	/* the chain the CA hands out */
	chain = cert != NULL ? issuance_chain_pem(s->ca, cert, &chain_len) : NULL;
	if (cert != NULL && (key_pem == NULL || chain == NULL))
		snprintf(err, err_len, "out of memory");
	snprintf(keypath, sizeof(keypath), "%s/api.key", s->o->cert_dir);
	snprintf(chainpath, sizeof(chainpath), "%s/api-chain.pem", s->o->cert_dir);
	if (chain == NULL || key_pem == NULL ||
	    files_stage(&sk, keypath, key_pem, key_len, 0600, err, err_len) != 0 ||
	    files_stage(&sc, chainpath, chain, chain_len, 0644, err, err_len) != 0 ||
	    store_commit(s->ca->store) != 0) {
		if (err[0] == '\0')
			snprintf(err, err_len, "%s", store_error(s->ca->store));
		store_rollback(s->ca->store);
		goto out;
	}
	/* committed: the key first, so that a chain is never published without its key */
	if (files_publish(&sk, false, err, err_len) != 0 ||
	    files_publish(&sc, false, err, err_len) != 0)
		goto out;
	files_sync_dir(chainpath);
	rc = 0;
out:
	files_discard(&sk);
	files_discard(&sc);
	if (key_pem != NULL)
		keys_free_pem(key_pem, key_len);
	free(chain);
	free(subject);
	free(detail);
	X509_free(cert);
	EVP_PKEY_free(key);
	grant_free(&g);
	return rc;
}

/* Under s->lock and the CA's lock. 1 renewed, 0 current, -1 error. */
static int own_cert_ensure(struct serve *s, time_t now, char *err, size_t err_len)
{
	char host[256];

	if (url_host(s->api_url, host, sizeof(host)) != 0) {
		snprintf(err, err_len, "cannot tell the host of %s", s->api_url);
		return -1;
	}
	if (own_cert_current(s, host, now))
		return 0;
	return own_cert_issue(s, host, now, err, err_len) == 0 ? 1 : -1;
}

/* ---- the schedules ---- */

/* Under s->lock and the CA's lock: a CRL with a third of its validity left, or none, is
 * replaced. 1 published, 0 current, -1 error. */
static int crl_ensure(struct serve *s, time_t now, char *err, size_t err_len)
{
	struct svc_error e = {0};
	int64_t number;

	if (publish_refresh_crl(s, err, err_len) == 0 && s->crl.next_update > now &&
	    s->crl.next_update - now > (s->crl.next_update - s->crl.this_update) / 3)
		return 0;
	if (svc_crl_publish(s->ca, now, "mtls ca serve", &number, &e) != 0) {
		snprintf(err, err_len, "%s", e.message);
		return -1;
	}
	LOG(LOG_INFO, "crl_published", LN("crl_number", number), LS("trigger", "schedule"));
	return publish_refresh_crl(s, err, err_len) == 0 ? 1 : -1;
}

static void run_schedule(struct serve *s, bool at_start)
{
	char err[512] = "";
	time_t now = time(NULL);
	int crl = 0, cert = 0, rc;

	pthread_mutex_lock(&s->lock);
	/* the main loop never waits for another process's lock (the TLS front and the signals
	 * would wait with it): the schedule runs again in a minute */
	rc = at_start ? authority_lock(s->ca, err, sizeof(err))
		      : authority_trylock(s->ca, err, sizeof(err));
	if (rc != 0) {
		pthread_mutex_unlock(&s->lock);
		if (rc > 0)
			LOG(LOG_INFO, "schedule_deferred",
			    LS("message", "another process holds the CA directory's lock"));
		else
			LOG(LOG_ERROR, "schedule_failed", LS("message", err));
		return;
	}
	crl = crl_ensure(s, now, err, sizeof(err));
	if (crl < 0)
		LOG(LOG_ERROR, "crl_publish_failed", LS("message", err),
		    LS("advice", "the last CRL is served until it expires; fix the cause (disk, "
				 "store) or run 'mtls ca crl'"));
	err[0] = '\0';
	if (ocsp_responder_refresh(s->ocsp, s->ca, now, err, sizeof(err)) != 0)
		LOG(LOG_ERROR, "ocsp_responder_failed", LS("message", err));
	err[0] = '\0';
	if (!at_start) {
		cert = own_cert_ensure(s, now, err, sizeof(err));
		if (cert < 0)
			LOG(LOG_ERROR, "api_cert_failed", LS("message", err));
	}
	authority_unlock(s->ca);
	pthread_mutex_unlock(&s->lock);
	if ((crl > 0 || cert > 0) && s->front != NULL &&
	    front_reload(s->front, err, sizeof(err)) != 0)
		LOG(LOG_ERROR, "api_reload_failed", LS("message", err));
	if (cert > 0)
		LOG(LOG_INFO, "api_cert_renewed", LS("url", s->api_url));
}

/* The CA's certificates as on disk: a `mtls ca rollover` step (or a restored backup)
 * replaced root.pem or intermediate.pem. The authority read them again when it took its
 * lock (authority_refresh()); the served bundle, the OCSP responder's certificate, the API's
 * own chain and its TLS configuration follow here. Skipped while another process holds
 * the CA's lock (the next second tries again). */
static void watch_certs(struct serve *s, const char *trigger)
{
	char err[512] = "", msg[512] = "";
	bool roots = false, certs = false;
	int rc, cert = 0;
	time_t now = time(NULL);

	pthread_mutex_lock(&s->lock);
	rc = authority_trylock(s->ca, err, sizeof(err));
	if (rc != 0) {
		pthread_mutex_unlock(&s->lock);
		if (rc < 0)
			LOG(LOG_ERROR, "ca_watch_failed", LS("message", err));
		return;
	}
	if (s->ca->refresh_err[0] != '\0')
		snprintf(msg, sizeof(msg), "%s", s->ca->refresh_err);
	rc = publish_load_roots(s, err, sizeof(err));
	if (rc < 0 && msg[0] == '\0')
		snprintf(msg, sizeof(msg), "%s", err);
	roots = rc > 0;
	certs = s->ca->generation != s->ca_generation;
	if (certs) {
		s->ca_generation = s->ca->generation;
		err[0] = '\0';
		if (ocsp_responder_refresh(s->ocsp, s->ca, now, err, sizeof(err)) != 0)
			LOG(LOG_ERROR, "ocsp_responder_failed", LS("message", err));
		err[0] = '\0';
		cert = own_cert_ensure(s, now, err, sizeof(err));
		if (cert < 0)
			LOG(LOG_ERROR, "api_cert_failed", LS("message", err));
	}
	/* a file refused is said once, until it changes or is fixed */
	if (msg[0] != '\0' && strcmp(msg, s->refresh_err) != 0)
		LOG(LOG_ERROR, "ca_certs_refused", LS("message", msg),
		    LS("advice", "the CA's previous certificates are still used; restore the file "
				 "or finish the 'mtls ca rollover' step"));
	snprintf(s->refresh_err, sizeof(s->refresh_err), "%s", msg);
	authority_unlock(s->ca);
	pthread_mutex_unlock(&s->lock);
	if (roots || certs) {
		char subj[256] = "";

		pthread_mutex_lock(&s->lock);
		X509_NAME_oneline(X509_get_issuer_name(s->ca->issuer), subj, sizeof(subj));
		pthread_mutex_unlock(&s->lock);
		LOG(LOG_INFO, "ca_certs_loaded", LS("trigger", trigger),
		    LS("roots", roots ? "reloaded" : "unchanged"), LS("intermediate_issuer", subj),
		    LN("api_cert_renewed", cert > 0));
		if (front_reload(s->front, err, sizeof(err)) != 0)
			LOG(LOG_ERROR, "api_reload_failed", LS("message", err));
	}
}

static void on_watch(struct ev_loop *loop, ev_timer *w, int events)
{
	struct loop_ctx *lc = w->data;
	struct serve *s = lc->s;
	int64_t number;
	char err[512];
	bool stale;

	(void)loop;
	(void)events;
	/* a new CRL may have been read here, or by a request (a revocation through the API, a
	 * GET /crl after a local revoke): what matters is whether the front has it */
	pthread_mutex_lock(&s->lock);
	/* another CA node on a shared store may have published a newer one */
	if (publish_refresh_crl(s, err, sizeof(err)) == 0 &&
	    publish_sync_crl(s, err, sizeof(err)) != 0)
		LOG(LOG_ERROR, "crl_sync_failed", LS("message", err));
	stale = s->crl.der != NULL && strcmp(s->crl.etag, s->front_crl_etag) != 0;
	number = s->crl.number;
	pthread_mutex_unlock(&s->lock);
	crlwait_expire(s->crlwait, crlwait_now_ms());
	watch_certs(s, "watch");
	if (stale) {
		LOG(LOG_INFO, "crl_loaded", LN("crl_number", number));
		if (front_reload(s->front, err, sizeof(err)) != 0)
			LOG(LOG_ERROR, "api_reload_failed", LS("message", err));
	}
}

static void on_schedule(struct ev_loop *loop, ev_timer *w, int events)
{
	struct loop_ctx *lc = w->data;

	(void)loop;
	(void)events;
	run_schedule(lc->s, false);
}

static void on_hup(struct ev_loop *loop, ev_signal *w, int events)
{
	struct loop_ctx *lc = w->data;

	(void)loop;
	(void)events;
	service_notify_reloading();
	watch_certs(lc->s, "SIGHUP");
	service_notify_ready(lc->status);
	sandbox_probe("sighup");
}

/* SIGUSR1: logrotate moved --log-file away; open it again (docs/operations.md) */
static void on_usr1(struct ev_loop *loop, ev_signal *w, int events)
{
	(void)loop;
	(void)w;
	(void)events;
	log_reopen();
}

/* systemd's watchdog: this timer firing is the main loop running */
static void on_watchdog(struct ev_loop *loop, ev_timer *w, int events)
{
	(void)loop;
	(void)w;
	(void)events;
	service_notify_watchdog();
}

static void on_stop(struct ev_loop *loop, ev_signal *w, int events)
{
	(void)events;
	service_notify_stopping("stopping");
	LOG(LOG_INFO, "stopping", LS("signal", w->signum == SIGTERM ? "SIGTERM" : "SIGINT"));
	ev_break(loop, EVBREAK_ALL);
}

/* ---- start and stop ---- */

/* The socket of option what at text: the one systemd passed (passed >= 0: socket
 * activation, checked against text) or one bound here. */
static int bind_addr(const char *text, const char *what, int passed, int *fd, char *bound,
		     size_t len, char *err, size_t err_len)
{
	struct address a;
	char why[400];

	if (address_parse(text, &a, why, sizeof(why)) != 0 || a.is_unix) {
		snprintf(err, err_len, "%s: '%s': %s", what, text,
			 a.is_unix ? "a unix socket is not supported here; give HOST:PORT" : why);
		return -1;
	}
	if (passed >= 0) {
		if (!service_listen_matches(passed, (struct sockaddr *)&a.sa, a.len)) {
			address_local(passed, why, sizeof(why));
			snprintf(err, err_len,
				 "the socket systemd passed for %s (the .socket unit's "
				 "ListenStream=) is %s, not a listening stream socket on %s %s; "
				 "make "
				 "ListenStream= and %s the same address",
				 what, why[0] != '\0' ? why : "of another kind", what, text, what);
			return -1;
		}
		*fd = passed;
		address_local(*fd, bound, len);
		return 0;
	}
	*fd = address_listen(&a, false, 0, why, sizeof(why));
	if (*fd < 0) {
		snprintf(err, err_len, "%s %s: %s", what, text, why);
		return -1;
	}
	address_local(*fd, bound, len);
	return 0;
}

static int record_api_url(struct serve *s, char *err, size_t err_len)
{
	if (store_begin(s->ca->store) != 0 ||
	    store_set_meta(s->ca->store, "api_url", s->api_url) != 0 ||
	    store_commit(s->ca->store) != 0) {
		snprintf(err, err_len, "recording the API URL: %s", store_error(s->ca->store));
		store_rollback(s->ca->store);
		return -1;
	}
	return 0;
}

int serve_run(const struct serve_options *o)
{
	struct serve s = {.o = o};
	struct loop_ctx lc = {.s = &s};
	struct ev_loop *loop = NULL;
	char err[1024] = "", api_bound[80] = "", http_bound[80] = "";
	int api_fd = -1, http_fd = -1, rc = 1;
	/* socket activation: FileDescriptorName=listen (the API) and http (--http-listen) */
	static const char *const names[2] = {"listen", "http"};
	int passed[2] = {-1, -1};
	sigset_t block;
	struct rlimit rl;

	signal(SIGPIPE, SIG_IGN);
	/* the API's connections (three descriptors each), the plain port's and the held CRL
	 * requests (crlwait.h) outgrow a soft limit of 1024 */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	pthread_mutex_init(&s.lock, NULL);
	s.policy.leaf_seconds = o->leaf_seconds;
	s.ca = authority_open(o->dir, AUTHORITY_EXCLUSIVE, err, sizeof(err));
	if (s.ca == NULL)
		goto out;
	{
		int loaded = authority_load_key(s.ca, o->passphrase, err, sizeof(err));

		if (o->passphrase != NULL)
			OPENSSL_cleanse(o->passphrase, strlen(o->passphrase));
		/* SoftHSM and the like keep files that the sandbox reaches only when given */
		const char *what = NULL;

		if (loaded != 0 && s.ca->key_uri[0] != '\0' && o->sandbox != NULL &&
		    sandbox_landlock_abi(o->sandbox, &what) > 0 && strlen(err) + 160 < sizeof(err))
			strcat(err,
			       " (the service is sandboxed: a PKCS#11 module that keeps files, "
			       "such as SoftHSM's token directory, needs them given with "
			       "--sandbox-allow)");
		if (loaded != 0)
			goto out;
	}
	s.ca->crl_days = o->crl_seconds / 86400 > 0 ? o->crl_seconds / 86400 : 1;
	if (files_mkdir_private(o->cert_dir, err, sizeof(err)) != 0)
		goto out;
	if (service_listen_take(names, passed, 2, err, sizeof(err)) < 0)
		goto out;
	if (passed[1] >= 0 && o->http_listen == NULL) {
		close(passed[1]);
		passed[1] = -1;
		snprintf(err, sizeof(err),
			 "systemd passed a socket named http but --http-listen is none; give its "
			 "address, or remove that ListenStream=");
		goto out;
	}
	if (bind_addr(o->listen, "--listen", passed[0], &api_fd, api_bound, sizeof(api_bound), err,
		      sizeof(err)) != 0)
		goto out;
	passed[0] = -1; /* api_fd's now */
	if (o->http_listen != NULL &&
	    bind_addr(o->http_listen, "--http-listen", passed[1], &http_fd, http_bound,
		      sizeof(http_bound), err, sizeof(err)) != 0)
		goto out;
	passed[1] = -1;
	if (o->public_url != NULL)
		snprintf(s.api_url, sizeof(s.api_url), "%s", o->public_url);
	else
		snprintf(s.api_url, sizeof(s.api_url), "https://%s", api_bound);
	/* tokens carry it: it must be a URL clients can reach */
	if (strncmp(api_bound, "0.0.0.0:", 8) == 0 || strncmp(api_bound, "[::]:", 5) == 0) {
		if (o->public_url == NULL) {
			snprintf(err, sizeof(err),
				 "--listen %s accepts on every address: give --public-url "
				 "https://NAME:PORT, the name clients reach the API at",
				 o->listen);
			goto out;
		}
	}
	if (token_check_url(s.api_url, err, sizeof(err)) != 0)
		goto out;
	if (publish_load_roots(&s, err, sizeof(err)) < 0)
		goto out;
	s.ca_generation = s.ca->generation;
	s.ocsp = ocsp_responder_new();
	if (s.ocsp == NULL) {
		snprintf(err, sizeof(err), "out of memory");
		goto out;
	}
	/* still under the lock authority_open() took */
	if (record_api_url(&s, err, sizeof(err)) != 0 ||
	    own_cert_ensure(&s, time(NULL), err, sizeof(err)) < 0)
		goto out;
	authority_unlock(s.ca);
	run_schedule(&s, true);
	if (s.crl.der == NULL) {
		snprintf(err, sizeof(err), "no CRL could be published; see the log");
		goto out;
	}

	/* signals for the main loop only: blocked before any thread starts */
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &block, NULL);
	loop = ev_default_loop(EVFLAG_SIGNALFD);
	s.crlwait = crlwait_new();
	if (loop == NULL || s.crlwait == NULL) {
		snprintf(err, sizeof(err),
			 loop == NULL ? "cannot start the event loop" : "out of memory");
		goto out;
	}
	s.routes = routes_start(&s, http_fd, err, sizeof(err));
	if (s.routes == NULL)
		goto out;
	http_fd = -1; /* libmicrohttpd's now */
	s.front = front_start(&s, loop, api_fd, err, sizeof(err));
	if (s.front == NULL)
		goto out;
	ev_signal_init(&lc.sigterm, on_stop, SIGTERM);
	ev_signal_init(&lc.sigint, on_stop, SIGINT);
	ev_signal_start(loop, &lc.sigterm);
	ev_signal_start(loop, &lc.sigint);
	ev_signal_init(&lc.sighup, on_hup, SIGHUP);
	lc.sighup.data = &lc;
	ev_signal_start(loop, &lc.sighup);
	ev_signal_init(&lc.sigusr1, on_usr1, SIGUSR1);
	ev_signal_start(loop, &lc.sigusr1);
	ev_timer_init(&lc.watch, on_watch, 1., 1.);
	lc.watch.data = &lc;
	ev_timer_start(loop, &lc.watch);
	ev_timer_init(&lc.schedule, on_schedule, SCHEDULE_SECONDS, SCHEDULE_SECONDS);
	lc.schedule.data = &lc;
	ev_timer_start(loop, &lc.schedule);
	/* seccomp last, with TSYNC: the libmicrohttpd threads started above are bound too, and
	 * the start-up kept the calls only it needs (bind, listen) */
	if (o->sandbox != NULL) {
		char what[80];

		if (sandbox_seccomp(o->sandbox, err, sizeof(err)) != 0)
			goto out;
		sandbox_describe(o->sandbox, what, sizeof(what));
		LOG(LOG_INFO, "sandbox", LS("state", what));
	}
	if (http_bound[0] != '\0')
		LOG(LOG_INFO, "http_listening", LS("address", http_bound),
		    LS("serves", "/roots.pem /crl /crl.pem /ocsp"));
	LOG(LOG_INFO, "listening", LS("role", "ca"), LS("address", api_bound), LS("url", s.api_url),
	    LS("dir", o->dir), LN("leaf_seconds", o->leaf_seconds), LN("pid", getpid()));
	snprintf(lc.status, sizeof(lc.status), "API on %.60s (%.120s)%s%.60s", api_bound, s.api_url,
		 http_bound[0] != '\0' ? "; plain HTTP on " : "", http_bound);
	service_notify_ready(lc.status);
	sandbox_probe("start");
	if (service_notify_watchdog_every() > 0) {
		ev_timer_init(&lc.watchdog, on_watchdog, service_notify_watchdog_every(),
			      service_notify_watchdog_every());
		ev_timer_start(loop, &lc.watchdog);
	}
	ev_run(loop, 0);
	rc = 0;
out:
	if (rc != 0 && err[0] != '\0') {
		LOG(LOG_ERROR, "ca_serve_failed", LS("message", err));
		log_flush(1000); /* the lines logged before it come first: the reason is last */
		fprintf(stderr, "mtls ca serve: %s\n", err);
	}
	routes_stop(s.routes); /* resumes the held requests first */
	front_stop(s.front);
	if (api_fd >= 0)
		close(api_fd);
	if (http_fd >= 0)
		close(http_fd);
	for (int i = 0; i < 2; i++)
		if (passed[i] >= 0)
			close(passed[i]);
	ocsp_responder_free(s.ocsp);
	crlwait_free(s.crlwait);
	publish_free(&s);
	authority_close(s.ca);
	pthread_mutex_destroy(&s.lock);
	return rc;
}
