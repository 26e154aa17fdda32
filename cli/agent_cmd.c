/*
 * mtls agent: keeps the certificate of a service that is not mtls (PostgreSQL's own TLS, an
 * application embedding libmtls, a brpc service) renewed at the CA service, copies it where
 * the service reads it, and tells the service (a command, a signal).
 *
 * The renewal itself is renewal.h's, as in the daemons: the schedule (two thirds of the
 * lifetime with jitter), the backoff after failures, one renewal (new key, CSR, POST
 * /v1/renew over mutual TLS, the answer checked, chain and key replaced as one change), the
 * root bundle refresh. This file adds the loop around it (signals: TERM/INT stop, HUP renews
 * now), the copies (agent_out.h), the hook (agent_hook.h), the log (tunnel/log.h) and a
 * metrics textfile for node_exporter.
 *
 * The loop is single-threaded. Signal handlers only set flags and write a byte to a pipe;
 * the loop sleeps in poll() on that pipe until the next thing is due. A transfer under way
 * watches the stop flag (caclient's progress callback) and a running hook command the pipe,
 * so a stop is prompt whatever the agent is doing.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "agent_hook.h"
#include "agent_out.h"
#include "agent_runner.h"
#include "caclient.h"
#include "certfields.h"
#include "commands.h"
#include "duration.h"
#include "files.h"
#include "log.h"
#include "options.h"
#include "pkcs11.h"
#include "renewal.h"
#include "sandbox.h"
#include "service_notify.h"

#define EXEC_TIMEOUT_DEFAULT_MS	 (60LL * 1000)
#define ROOTS_REFRESH_DEFAULT_MS (3600LL * 1000)
#define SLEEP_MAX_S		 30  /* look at the clock (and the files) at least this often */
#define LOOK_AGAIN_MS		 250 /* files being replaced: looked at again this soon */
#define HOOK_RETRY_FIRST	 30  /* seconds after a failed hook, doubling */
#define HOOK_RETRY_MAX		 3600
#define EXPIRING_EVERY		 600 /* cert_expiring at most this often */
#define ROOTS_FRESH_S		 60  /* a renewal fetches the roots first unless this fresh */

struct agent_opts {
	const char *dir, *cert, *key, *ca, *ca_url;
	int once, force;
	const char *exec, *exec_timeout;
	long long signal_pid;
	const char *pid_file, *signal_name;
	const char *cert_out, *key_out, *ca_out, *owner;
	const char *key_type, *roots_refresh;
	const char *log_format, *log_level, *log_file, *metrics_file;
	struct opt_list sandbox_allow;
	int insecure_no_sandbox;
};

#define O(f) offsetof(struct agent_opts, f)

static const struct opt agent_table[] = {
	{"dir", OPT_STRING, O(dir), "DIR",
	 "the directory mtls enroll wrote (cert.pem, key.pem, ca.pem, ca-url)"},
	{"cert", OPT_STRING, O(cert), "FILE",
	 "instead of --dir: the certificate chain to renew (leaf first)"},
	{"key", OPT_STRING, O(key), "FILE", "instead of --dir: its private key (replaced, 0600)"},
	{"ca", OPT_STRING, O(ca), "FILE",
	 "instead of --dir: the CA's root bundle (the CA service is verified against it; kept "
	 "fresh)"},
	{"ca-url", OPT_STRING, O(ca_url), "URL",
	 "the CA's API URL, https://HOST:PORT (default: DIR/ca-url; required without --dir)"},
	{"once", OPT_FLAG, O(once), NULL,
	 "renew if due (two thirds into the certificate's life), run the hook if anything "
	 "changed, and exit: for a systemd timer or cron"},
	{"force", OPT_FLAG, O(force), NULL, "renew at once, even before it is due"},
	{"exec", OPT_STRING, O(exec), "CMD",
	 "after every change, run CMD with /bin/sh -c (MTLS_CERT, MTLS_KEY, MTLS_CA, "
	 "MTLS_SERIAL, MTLS_NOT_AFTER, MTLS_EVENT in its environment); it must exit 0"},
	{"exec-timeout", OPT_STRING, O(exec_timeout), "DURATION",
	 "kill the --exec command (its whole process group) after this long (default 60s)"},
	{"signal", OPT_INT, O(signal_pid), "PID", "after every change, signal process PID"},
	{"pid-file", OPT_STRING, O(pid_file), "FILE",
	 "after every change, signal the process whose id is on the first line of FILE (read "
	 "each time; PostgreSQL's postmaster.pid works)"},
	{"signal-name", OPT_STRING, O(signal_name), "SIG",
	 "the signal for --signal/--pid-file (default HUP)"},
	{"cert-out", OPT_STRING, O(cert_out), "FILE",
	 "keep a copy of the certificate chain here (0644), e.g. PostgreSQL's server.crt"},
	{"key-out", OPT_STRING, O(key_out), "FILE",
	 "keep a copy of the private key here (0600), e.g. PostgreSQL's server.key"},
	{"ca-out", OPT_STRING, O(ca_out), "FILE", "keep a copy of the root bundle here (0644)"},
	{"owner", OPT_STRING, O(owner), "USER[:GROUP]",
	 "the owner of the copies (root only), e.g. postgres"},
	{"key-type", OPT_STRING, O(key_type), "ALG",
	 "new keys: p256, p384, ed25519, rsa3072 (default: the type of the current key)"},
	{"roots-refresh", OPT_STRING, O(roots_refresh), "DURATION",
	 "fetch the CA's root bundle this often, and before every renewal (default 1h)"},
	{"log-format", OPT_STRING, O(log_format), "json|logfmt", "log line format (json)"},
	{"log-level", OPT_STRING, O(log_level), "LEVEL", "debug, info (default), warn, error"},
	{"log-file", OPT_STRING, O(log_file), "FILE", "log here instead of stderr"},
	{"metrics-file", OPT_STRING, O(metrics_file), "FILE",
	 "write metrics here in Prometheus text format, for node_exporter's textfile "
	 "collector (replaced atomically after every change)"},
	{"sandbox-allow", OPT_LIST, O(sandbox_allow), "PATH",
	 "let the sandbox read and write PATH too (a PKCS#11 module's token directory); "
	 "repeatable (docs/operations.md, Sandbox)"},
	{"insecure-no-sandbox", OPT_FLAG, O(insecure_no_sandbox), NULL,
	 "run without the sandbox (Landlock, seccomp) that limits the agent to its files and "
	 "system calls after start-up (logs a warning; hooks then run from the agent itself)"},
	{"config", OPT_STRING, 0, "FILE",
	 "read options from FILE (docs/config.md; the systemd unit reads "
	 "/etc/mtls/agent/NAME.conf)"},
	OPT_END,
};

/* Set by the signal handlers; the pipe wakes the loop. */
static atomic_bool stop_flag;
static atomic_bool renew_flag;
static atomic_bool reopen_flag; /* SIGUSR1: open --log-file again (logrotate) */
static int wake_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
	int saved = errno;

	if (sig == SIGHUP)
		atomic_store(&renew_flag, true);
	else if (sig == SIGUSR1)
		atomic_store(&reopen_flag, true);
	else
		atomic_store(&stop_flag, true);
	(void)!write(wake_pipe[1], "s", 1);
	errno = saved;
}

static void drain_wake(void)
{
	char buf[64];

	while (read(wake_pipe[0], buf, sizeof(buf)) > 0)
		;
}

/* agent_hook_run()'s question while a hook command runs. */
static bool hook_should_stop(void *arg)
{
	(void)arg;
	drain_wake();
	return atomic_load(&stop_flag);
}

/* What the agent knows of the certificate in use. */
struct leaf {
	char serial[64];
	time_t not_before, not_after;
	bool can_renew; /* may authenticate its own renewal (renewal_leaf_can_renew()) */
};

struct agent {
	struct agent_opts o;
	struct renewal_files f;
	char dir[PATH_MAX], certp[PATH_MAX], keyp[PATH_MAX], cap[PATH_MAX];
	char base[512];
	struct agent_hook hook;
	bool has_hook;
	struct agent_runner *runner; /* runs the hook under the sandbox (agent_runner.h) */
	struct sandbox *sandbox;
	struct agent_out outs[3]; /* cert, key, ca copies; path NULL if not asked for */
	uid_t uid;
	gid_t gid;
	long long roots_refresh_ms;
	struct renewal_roots roots;
	uint32_t rnd;

	/* the loop's state */
	struct leaf leaf; /* serial "" while cert.pem cannot be read */
	time_t renew_at, retry_at, roots_at, roots_fetched_at, hook_retry_at, expiring_told;
	unsigned failures, hook_failures_streak;
	bool hook_pending;
	bool look_again; /* the files were being replaced: look again after LOOK_AGAIN_MS */
	char pending_event[64];
	char old_serial[64];

	/* metrics */
	time_t last_success;
	unsigned long long renewals, renew_failures, hook_runs, hook_failures, roots_failures,
		roots_replaced;
	char *metrics_last;
};

static void usage_error(const char *msg)
{
	fprintf(stderr, "mtls agent: %s\n", msg);
}

static void utc(time_t t, char out[32])
{
	struct tm tm;

	if (t <= 0) {
		snprintf(out, 32, "-");
		return;
	}
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
}

/* The leaf of the chain pem (len bytes, read from path). 0, or -1 with the message. */
static int leaf_parse(const char *pem, size_t len, const char *path, struct leaf *l, char *err,
		      size_t err_len)
{
	BIO *bio = BIO_new_mem_buf(pem, (int)len);
	X509 *x = NULL;
	char *serial;

	memset(l, 0, sizeof(*l));
	if (bio != NULL)
		x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	BIO_free(bio);
	ERR_clear_error();
	if (x == NULL) {
		snprintf(err, err_len, "%s holds no PEM certificate; enroll again", path);
		return -1;
	}
	l->not_before = certfields_time(X509_get0_notBefore(x));
	l->not_after = certfields_time(X509_get0_notAfter(x));
	l->can_renew = renewal_leaf_can_renew(x);
	serial = certfields_serial_hex(x);
	snprintf(l->serial, sizeof(l->serial), "%s", serial != NULL ? serial : "?");
	free(serial);
	X509_free(x);
	return 0;
}

/* The leaf of the chain in path. 0, or -1 with the message. */
static int leaf_read(const char *path, struct leaf *l, char *err, size_t err_len)
{
	size_t len = 0;
	char *pem = files_read(path, &len, err, err_len);
	int rc;

	memset(l, 0, sizeof(*l));
	if (pem == NULL)
		return -1;
	rc = leaf_parse(pem, len, path, l, err, err_len);
	free(pem);
	return rc;
}

/* dir/name into out; -1 if too long. */
static int join(char *out, size_t len, const char *dir, const char *name)
{
	return snprintf(out, len, "%s/%s", dir, name) >= (int)len ? -1 : 0;
}

/* ---- Options ---- */

/* The hook's NAME=VALUE for one file, as run_hook() tells it: the copy if there is one, else
 * the file of the --dir (absolute) or the file given. */
static void hook_file(char *out, size_t len, const char *name, const char *copy, const char *dir,
		      const char *file, const char *given)
{
	if (copy != NULL)
		snprintf(out, len, "%s=%s", name, copy);
	else if (dir != NULL)
		snprintf(out, len, "%s=%s/%s", name, dir, file);
	else
		snprintf(out, len, "%s=%s", name, given != NULL ? given : "");
}

/* The sandbox's first part, before the log's thread starts (sandbox.h): the hook runner
 * forked while the agent is unrestricted, then Landlock: read-write the renewed files'
 * directories (--dir, or those of --cert, --key, --ca), the copies', the metrics file's and
 * the log's; read-only the config files'; --sandbox-allow. 0, or 1 with the message printed. */
static int sandbox_start(struct agent *a, const struct options_state *st)
{
	const struct agent_opts *o = &a->o;
	const char *const writes[] = {o->cert,	  o->key,    o->ca,	  o->cert_out,
				      o->key_out, o->ca_out, o->log_file, o->metrics_file};
	char err[1024];
	int rc = 0;

	if (a->has_hook && !o->insecure_no_sandbox) {
		/* what the hook is told of the files is the runner's, fixed now */
		char fixed[4][PATH_MAX + 32], dir[PATH_MAX] = "";
		const char *fp[4];
		char *abs = o->dir != NULL ? realpath(o->dir, NULL) : NULL;
		size_t n = 0;

		if (abs != NULL)
			snprintf(dir, sizeof(dir), "%.*s", PATH_MAX - 16, abs);
		free(abs);
		hook_file(fixed[n++], sizeof(fixed[0]), "MTLS_CERT", o->cert_out,
			  o->dir != NULL ? dir : NULL, "cert.pem", o->cert);
		hook_file(fixed[n++], sizeof(fixed[0]), "MTLS_KEY", o->key_out,
			  o->dir != NULL ? dir : NULL, "key.pem", o->key);
		hook_file(fixed[n++], sizeof(fixed[0]), "MTLS_CA", o->ca_out,
			  o->dir != NULL ? dir : NULL, "ca.pem", o->ca);
		if (o->dir != NULL)
			snprintf(fixed[n++], sizeof(fixed[0]), "MTLS_DIR=%s", dir);
		for (size_t i = 0; i < n; i++)
			fp[i] = fixed[i];
		a->runner = agent_runner_start(&a->hook, fp, n, err, sizeof(err));
		if (a->runner == NULL) {
			usage_error(err);
			return 1;
		}
	}
	a->sandbox = sandbox_new(SANDBOX_AGENT, o->insecure_no_sandbox);
	if (a->sandbox == NULL) {
		usage_error("out of memory");
		return 1;
	}
	rc |= sandbox_write(a->sandbox, o->dir);
	for (size_t i = 0; i < sizeof(writes) / sizeof(writes[0]); i++)
		rc |= sandbox_write_dir_of(a->sandbox, writes[i]);
	for (size_t i = 0; i < st->nconfig_files; i++)
		rc |= sandbox_read_dir_of(a->sandbox, st->config_files[i]);
	for (size_t i = 0; i < o->sandbox_allow.n; i++)
		rc |= sandbox_allow(a->sandbox, o->sandbox_allow.v[i]);
	if (rc != 0) {
		usage_error("out of memory");
		return 1;
	}
	if (sandbox_landlock(a->sandbox, err, sizeof(err)) != 0) {
		usage_error(err);
		return 1;
	}
	return 0;
}

/* Parse and check everything before touching the network. -1 to go on; else the exit
 * status (0 after --help). */
static int configure(struct agent *a, int argc, char **argv, struct options_state *st)
{
	struct agent_opts *o = &a->o;
	char err[4096];
	long long ms;
	int outs = 0;

	if (options_parse(agent_table, o, argc, argv, st, err, sizeof(err)) != 0) {
		usage_error(err);
		return 2;
	}
	if (st->help) {
		options_help(
			stdout,
			"mtls agent (--dir DIR | --cert FILE --key FILE --ca FILE --ca-url URL)\n"
			"       [--exec CMD] [--signal PID | --pid-file FILE] [--cert-out FILE "
			"--key-out FILE [--owner USER]] [--once [--force]]",
			"Keep a service's certificate renewed at the CA service (mtls ca serve): "
			"renew it two thirds\ninto its life (with jitter; retries with backoff "
			"when the CA cannot be reached), keep the\nCA's root bundle fresh, copy "
			"the files where the service reads them, and after every change\nrun "
			"--exec and/or signal the service so that it loads them. Runs in the "
			"foreground until\nSIGTERM or SIGINT; SIGHUP renews at once. With --once: "
			"one pass, for a timer.\nExit status: 0 (--once: renewed or not due), 1 "
			"failure (one line on stderr, and the log),\n2 usage.",
			agent_table);
		return 0;
	}
	if (st->positional.n != 0) {
		snprintf(err, sizeof(err), "unexpected argument '%.100s'; see --help",
			 st->positional.v[0]);
		usage_error(err);
		return 2;
	}
	if (o->dir != NULL && (o->cert != NULL || o->key != NULL || o->ca != NULL)) {
		usage_error("give --dir or --cert/--key/--ca, not both");
		return 2;
	}
	if (o->dir == NULL && (o->cert == NULL || o->key == NULL || o->ca == NULL)) {
		usage_error("give --dir DIR (what mtls enroll wrote), or --cert, --key, --ca and "
			    "--ca-url; see --help");
		return 2;
	}
	/* the agent renews by writing a new key file and its copies; the engine cannot make a
	 * key on a token and PKCS#11 has no atomic swap of objects (docs/keys.md) */
	if (pkcs11_is_uri(o->key)) {
		usage_error(
			"--key pkcs11:...: mtls agent renews by writing a new key file (and its "
			"copies), and a key on a PKCS#11 token stays there; let the daemon "
			"renew its certificate with the same token key (--ca-url), and rotate "
			"the key by hand (see docs/keys.md)");
		return 2;
	}
	if (o->dir == NULL && o->ca_url == NULL) {
		usage_error("--cert/--key/--ca need --ca-url URL (the CA service's API)");
		return 2;
	}
	if (o->dir != NULL) {
		snprintf(a->dir, sizeof(a->dir), "%s", o->dir);
		if (join(a->certp, sizeof(a->certp), a->dir, "cert.pem") != 0 ||
		    join(a->keyp, sizeof(a->keyp), a->dir, "key.pem") != 0 ||
		    join(a->cap, sizeof(a->cap), a->dir, "ca.pem") != 0) {
			usage_error("--dir is too long");
			return 2;
		}
	} else if (snprintf(a->certp, sizeof(a->certp), "%s", o->cert) >= (int)sizeof(a->certp) ||
		   snprintf(a->keyp, sizeof(a->keyp), "%s", o->key) >= (int)sizeof(a->keyp) ||
		   snprintf(a->cap, sizeof(a->cap), "%s", o->ca) >= (int)sizeof(a->cap)) {
		usage_error("a file name is too long");
		return 2;
	}
	a->f = (struct renewal_files){a->certp, a->keyp, a->cap};
	if (o->ca_url != NULL &&
	    caclient_base_url(o->ca_url, a->base, sizeof(a->base), err, sizeof(err)) != 0) {
		usage_error(err);
		return 2;
	}
	if (o->key_type != NULL && !renewal_key_type_known(o->key_type)) {
		usage_error("--key-type: give p256, p384, ed25519 or rsa3072");
		return 2;
	}
	a->hook.timeout_ms = EXEC_TIMEOUT_DEFAULT_MS;
	if (o->exec_timeout != NULL &&
	    duration_parse(o->exec_timeout, "--exec-timeout", 100, 3600LL * 1000,
			   &a->hook.timeout_ms, err, sizeof(err)) != 0) {
		usage_error(err);
		return 2;
	}
	if (o->exec_timeout != NULL && o->exec == NULL) {
		usage_error("--exec-timeout without --exec");
		return 2;
	}
	if (o->exec != NULL && o->exec[0] == '\0') {
		usage_error("--exec needs a command");
		return 2;
	}
	a->hook.exec = o->exec;
	if (options_given(st, "signal") && o->pid_file != NULL) {
		usage_error("give --signal PID or --pid-file FILE, not both");
		return 2;
	}
	if (options_given(st, "signal") && (o->signal_pid <= 1 || o->signal_pid > INT_MAX)) {
		usage_error("--signal needs a process id above 1");
		return 2;
	}
	a->hook.pid = options_given(st, "signal") ? (pid_t)o->signal_pid : 0;
	a->hook.pid_file = o->pid_file;
	a->hook.sig = SIGHUP;
	if (o->signal_name != NULL) {
		if (a->hook.pid == 0 && o->pid_file == NULL) {
			usage_error("--signal-name without --signal or --pid-file");
			return 2;
		}
		if (agent_hook_signal_parse(o->signal_name, &a->hook.sig) != 0) {
			snprintf(err, sizeof(err),
				 "--signal-name '%.50s': give a signal name (HUP, USR1, ...) or "
				 "number",
				 o->signal_name);
			usage_error(err);
			return 2;
		}
	}
	a->has_hook = a->hook.exec != NULL || a->hook.pid != 0 || a->hook.pid_file != NULL;
	ms = ROOTS_REFRESH_DEFAULT_MS;
	if (o->roots_refresh != NULL &&
	    duration_parse(o->roots_refresh, "--roots-refresh", 1000, 7LL * 24 * 3600 * 1000, &ms,
			   err, sizeof(err)) != 0) {
		usage_error(err);
		return 2;
	}
	a->roots_refresh_ms = ms;
	{
		enum log_format lf = LOG_JSON;
		enum log_level ll = LOG_INFO;

		if (o->log_format != NULL && log_format_parse(o->log_format, &lf) != 0) {
			usage_error("--log-format: give json or logfmt");
			return 2;
		}
		if (o->log_level != NULL && log_level_parse(o->log_level, &ll) != 0) {
			usage_error("--log-level: give debug, info, warn or error");
			return 2;
		}
		if (sandbox_start(a, st) != 0)
			return 1;
		if (log_setup(lf, ll, o->log_file) != 0) {
			snprintf(err, sizeof(err), "--log-file %s: %s", o->log_file,
				 strerror(errno));
			usage_error(err);
			return 1;
		}
		sandbox_warnings(a->sandbox);
	}
	a->outs[0] = (struct agent_out){o->cert_out, 0644, "--cert-out"};
	a->outs[1] = (struct agent_out){o->key_out, 0600, "--key-out"};
	a->outs[2] = (struct agent_out){o->ca_out, 0644, "--ca-out"};
	a->uid = (uid_t)-1;
	a->gid = (gid_t)-1;
	for (int i = 0; i < 3; i++)
		outs += a->outs[i].path != NULL;
	if (o->owner != NULL) {
		if (outs == 0) {
			usage_error("--owner is for the copies: give --cert-out, --key-out or "
				    "--ca-out");
			return 2;
		}
		if (agent_out_owner_parse(o->owner, &a->uid, &a->gid, err, sizeof(err)) != 0) {
			usage_error(err);
			return 2;
		}
	}
	for (int i = 0; i < 3; i++) {
		if (a->outs[i].path == NULL)
			continue;
		for (int j = 0; j < i; j++)
			if (a->outs[j].path != NULL &&
			    strcmp(a->outs[i].path, a->outs[j].path) == 0) {
				usage_error("--cert-out, --key-out and --ca-out must be different "
					    "files");
				return 2;
			}
		if (strcmp(a->outs[i].path, a->certp) == 0 ||
		    strcmp(a->outs[i].path, a->keyp) == 0 || strcmp(a->outs[i].path, a->cap) == 0) {
			usage_error("a copy (--cert-out, --key-out, --ca-out) cannot be one of the "
				    "renewed files");
			return 2;
		}
		if (agent_out_check(&a->outs[i], a->uid, a->gid, err, sizeof(err)) != 0) {
			usage_error(err);
			return 1;
		}
	}
	if (o->metrics_file != NULL) {
		struct agent_out m = {o->metrics_file, 0644, "--metrics-file"};

		if (agent_out_check(&m, (uid_t)-1, (gid_t)-1, err, sizeof(err)) != 0) {
			usage_error(err);
			return 1;
		}
	}
	/* what runs at all: the files and the CA's address */
	if (o->dir != NULL) {
		/* absolute names for the hook's environment, the log and the metrics */
		char *abs = realpath(o->dir, NULL);

		if (abs == NULL) {
			snprintf(err, sizeof(err),
				 "--dir %.1024s: %s; run mtls enroll --dir %.1024s first", o->dir,
				 strerror(errno), o->dir);
			usage_error(err);
			return 1;
		}
		snprintf(a->dir, sizeof(a->dir), "%s", abs);
		free(abs);
		if (join(a->certp, sizeof(a->certp), a->dir, "cert.pem") != 0 ||
		    join(a->keyp, sizeof(a->keyp), a->dir, "key.pem") != 0 ||
		    join(a->cap, sizeof(a->cap), a->dir, "ca.pem") != 0) {
			usage_error("--dir is too long");
			return 1;
		}
	}
	/* a renewal or enrollment that a crash cut short: finished or taken back first */
	if (renewal_recover(&a->f, err, sizeof(err)) != 0) {
		usage_error(err);
		return 1;
	}
	if (o->ca_url == NULL) {
		char urlp[PATH_MAX], *text;

		if (join(urlp, sizeof(urlp), a->dir, "ca-url") != 0 ||
		    (text = files_read(urlp, NULL, err, sizeof(err))) == NULL) {
			size_t l = strlen(err);

			snprintf(err + l, sizeof(err) - l, "; give --ca-url or enroll again");
			usage_error(err);
			return 1;
		}
		text[strcspn(text, "\r\n")] = '\0';
		if (caclient_base_url(text, a->base, sizeof(a->base), err, sizeof(err)) != 0) {
			free(text);
			usage_error(err);
			return 1;
		}
		free(text);
	}
	if (leaf_read(a->certp, &a->leaf, err, sizeof(err)) != 0) {
		usage_error(err);
		return 1;
	}
	if (!a->leaf.can_renew) {
		snprintf(err, sizeof(err), "%.1024s cannot renew itself: %s", a->certp,
			 RENEWAL_NO_CLIENT_AUTH);
		usage_error(err);
		return 1;
	}
	if (access(a->keyp, R_OK) != 0 || access(a->cap, R_OK) != 0) {
		snprintf(err, sizeof(err), "cannot read %.1024s: %s",
			 access(a->keyp, R_OK) != 0 ? a->keyp : a->cap, strerror(errno));
		usage_error(err);
		return 1;
	}
	return -1;
}

/* ---- A look at the files ---- */

/* The files as one look read them: the leaf that is taken in, the copies that are written
 * and what the hook is told all come from the same bytes, so that they name one pair. */
struct look {
	char *data[3]; /* cert.pem, key.pem, ca.pem (ca.pem only with --ca-out) */
	size_t len[3];
	struct leaf leaf;
};

enum look_result {
	LOOK_OK,       /* a pair that belongs together */
	LOOK_CHANGING, /* being replaced (a writer holds the directory): look again shortly */
	LOOK_FAILED,   /* unreadable, or a key that does not match: the message says */
};

static void look_free(struct look *l)
{
	for (int i = 0; i < 3; i++) {
		if (l->data[i] != NULL)
			OPENSSL_cleanse(l->data[i], l->len[i]);
		free(l->data[i]);
		l->data[i] = NULL;
		l->len[i] = 0;
	}
}

/* Does the key (PEM) belong to the leaf of the chain (PEM)? */
static bool pair_matches(const char *cert, size_t cert_len, const char *key, size_t key_len)
{
	BIO *cb = BIO_new_mem_buf(cert, (int)cert_len);
	BIO *kb = BIO_new_mem_buf(key, (int)key_len);
	X509 *x = cb != NULL ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
	EVP_PKEY *k = kb != NULL ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
	bool match = x != NULL && k != NULL && EVP_PKEY_eq(X509_get0_pubkey(x), k) == 1;

	BIO_free(cb);
	BIO_free(kb);
	X509_free(x);
	EVP_PKEY_free(k);
	ERR_clear_error();
	return match;
}

/* Read the files once. 0 (a pair), 1 (a key that does not match the leaf: l freed, the
 * message set), or -1 with the message (l freed). */
static int look_read(const struct agent *a, struct look *l, char *err, size_t err_len)
{
	const char *src[3] = {a->certp, a->keyp, a->cap};

	memset(l, 0, sizeof(*l));
	for (int i = 0; i < 3; i++)
		if ((i < 2 || a->outs[i].path != NULL) &&
		    (l->data[i] = files_read(src[i], &l->len[i], err, err_len)) == NULL)
			goto fail;
	if (leaf_parse(l->data[0], l->len[0], a->certp, &l->leaf, err, err_len) != 0)
		goto fail;
	if (!pair_matches(l->data[0], l->len[0], l->data[1], l->len[1])) {
		snprintf(err, err_len,
			 "%.1024s and %.1024s do not belong together; the copies are left as they "
			 "are and the service is not told until they do",
			 a->certp, a->keyp);
		look_free(l);
		return 1;
	}
	return 0;
fail:
	look_free(l);
	return -1;
}

/* Is a writer (mtls renew, mtls enroll, a daemon's renewal) replacing the files now? They
 * hold the flock of the directories for the whole change (renewal.h); the lock is tried,
 * never waited for, and let go at once. */
static bool writer_busy(const struct agent *a)
{
	const char *p[2] = {a->certp, a->keyp};

	for (int i = 0; i < 2; i++) {
		char d[PATH_MAX];
		int fd;
		bool busy;

		snprintf(d, sizeof(d), "%s", p[i]);
		if ((fd = open(dirname(d), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
			continue;
		busy = flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
		close(fd);
		if (busy)
			return true;
	}
	return false;
}

/* Look at the files. A key that does not match the certificate is, most often, a renewal by
 * another program between its two renames (the chain first, then the key): while a writer
 * holds the directory, LOOK_CHANGING (logged at debug). With no writer, a change a crash cut
 * short is finished (renewal_recover()) and the files read again; a pair that still does not
 * match is LOOK_FAILED. l is filled for LOOK_OK only (look_free() it). */
static enum look_result look_files(const struct agent *a, struct look *l, char *err, size_t err_len)
{
	int rc = look_read(a, l, err, err_len);

	if (rc == 0)
		return LOOK_OK;
	if (rc < 0)
		return LOOK_FAILED;
	for (int tries = 0; tries < 2; tries++) {
		if (writer_busy(a)) {
			LOG(LOG_DEBUG, "files_changing", LS("cert", a->certp), LS("key", a->keyp));
			return LOOK_CHANGING;
		}
		if (tries == 1)
			break;
		if (renewal_recover(&a->f, err, err_len) != 0)
			return LOOK_FAILED;
		if ((rc = look_read(a, l, err, err_len)) != 1)
			return rc == 0 ? LOOK_OK : LOOK_FAILED;
	}
	return LOOK_FAILED;
}

/* ---- The copies ---- */

/* Bring the copies up to date with the files of one look (a pair that belongs together).
 * *changed says whether one was written. 0, or -1 with the message. */
static int sync_outputs(struct agent *a, const struct look *l, bool *changed, char *err,
			size_t err_len)
{
	const char *src[3] = {a->certp, a->keyp, a->cap};
	struct agent_out o[3];
	const void *d[3];
	size_t len[3], n = 0, from[3];
	bool c[3];

	*changed = false;
	/* the copies as one change (agent_out_write_set()), the chain before its key */
	for (int i = 0; i < 3; i++)
		if (a->outs[i].path != NULL) {
			o[n] = a->outs[i];
			d[n] = l->data[i];
			len[n] = l->len[i];
			from[n++] = (size_t)i;
		}
	if (n > 0 && agent_out_write_set(o, d, len, n, a->uid, a->gid, c, err, err_len) != 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (c[i])
			LOG(LOG_INFO, "file_written", LS("file", o[i].path),
			    LS("from", src[from[i]]));
		*changed = *changed || c[i];
	}
	return 0;
}

/* ---- The hook ---- */

/* A change the service must be told of. A new change is told at once, even while a failed
 * hook waits for its retry: the backoff is for telling the same change again. */
static void add_pending(struct agent *a, const char *event)
{
	size_t l = strlen(a->pending_event);

	a->hook_retry_at = 0;
	a->hook_pending = true;
	if (strstr(a->pending_event, event) != NULL)
		return;
	snprintf(a->pending_event + l, sizeof(a->pending_event) - l, "%s%s", l > 0 ? "," : "",
		 event);
}

/* Run the hook for what changed. 0, or -1 (logged; retried later by the loop). */
static int run_hook(struct agent *a, time_t now)
{
	char env[8][PATH_MAX + 32], na[32], err[4096];
	const char *envp[8];
	size_t n = 0;
	struct agent_hook_result res;
	int rc;

	if (!a->has_hook) {
		a->hook_pending = false;
		a->pending_event[0] = '\0';
		return 0;
	}
	utc(a->leaf.not_after, na);
	snprintf(env[n++], sizeof(env[0]), "MTLS_CERT=%s",
		 a->outs[0].path != NULL ? a->outs[0].path : a->certp);
	snprintf(env[n++], sizeof(env[0]), "MTLS_KEY=%s",
		 a->outs[1].path != NULL ? a->outs[1].path : a->keyp);
	snprintf(env[n++], sizeof(env[0]), "MTLS_CA=%s",
		 a->outs[2].path != NULL ? a->outs[2].path : a->cap);
	snprintf(env[n++], sizeof(env[0]), "MTLS_SERIAL=%s", a->leaf.serial);
	snprintf(env[n++], sizeof(env[0]), "MTLS_OLD_SERIAL=%s", a->old_serial);
	snprintf(env[n++], sizeof(env[0]), "MTLS_NOT_AFTER=%s", na);
	snprintf(env[n++], sizeof(env[0]), "MTLS_EVENT=%s", a->pending_event);
	if (a->o.dir != NULL)
		snprintf(env[n++], sizeof(env[0]), "MTLS_DIR=%s", a->dir);
	for (size_t i = 0; i < n; i++)
		envp[i] = env[i];
	a->hook_runs++;
	if (a->runner != NULL)
		rc = agent_runner_run(a->runner, envp, n, wake_pipe[0], hook_should_stop, NULL,
				      &res, err, sizeof(err));
	else
		rc = agent_hook_run(&a->hook, envp, n, wake_pipe[0], hook_should_stop, NULL, &res,
				    err, sizeof(err));
	if (rc == 0) {
		LOG(LOG_INFO, "hook_done", LS("change", a->pending_event),
		    LS("serial", a->leaf.serial), LN("exit_status", res.ran ? res.exit_status : -1),
		    LN("ms", res.ms), LN("signalled_pid", res.signalled),
		    LS("signal", res.signalled != 0 ? agent_hook_signal_name(a->hook.sig) : ""),
		    LS("output", res.output));
		a->hook_pending = false;
		a->pending_event[0] = '\0';
		a->hook_failures_streak = 0;
		a->hook_retry_at = 0;
		return 0;
	}
	a->hook_failures++;
	if (res.stopped) {
		LOG(LOG_WARN, "hook_failed", LS("change", a->pending_event), LS("message", err),
		    LN("ms", res.ms), LS("output", res.output));
		return -1;
	}
	a->hook_failures_streak++;
	{
		long long delay = HOOK_RETRY_FIRST;
		char when[32];

		for (unsigned i = 1; i < a->hook_failures_streak && delay < HOOK_RETRY_MAX; i++)
			delay *= 2;
		if (delay > HOOK_RETRY_MAX)
			delay = HOOK_RETRY_MAX;
		a->hook_retry_at = now + (time_t)delay;
		utc(a->hook_retry_at, when);
		LOG(LOG_ERROR, "hook_failed", LS("change", a->pending_event), LS("message", err),
		    LN("exit_status", res.exit_status), LN("term_signal", res.term_signal),
		    LN("timed_out", res.timed_out), LN("ms", res.ms), LS("output", res.output),
		    LN("failures", a->hook_failures_streak), LS("retry_at", when));
	}
	return -1;
}

/* ---- Metrics ---- */

/* s with '\\', '"' and newlines escaped for a label value. */
static void label_escape(const char *s, char *out, size_t len)
{
	size_t o = 0;

	for (; *s != '\0' && o + 3 < len; s++) {
		if (*s == '\\' || *s == '"') {
			out[o++] = '\\';
			out[o++] = *s;
		} else if (*s == '\n') {
			out[o++] = '\\';
			out[o++] = 'n';
		} else {
			out[o++] = *s;
		}
	}
	out[o] = '\0';
}

static void metrics_write(struct agent *a)
{
	char lbl[PATH_MAX * 2 + 16], text[8192], err[1024];
	int n;

	if (a->o.metrics_file == NULL)
		return;
	label_escape(a->certp, lbl, sizeof(lbl));
	n = snprintf(
		text, sizeof(text),
		"# HELP mtls_agent_cert_not_after_seconds When the certificate in use expires.\n"
		"# TYPE mtls_agent_cert_not_after_seconds gauge\n"
		"mtls_agent_cert_not_after_seconds{cert=\"%s\"} %lld\n"
		"# HELP mtls_agent_renew_at_seconds When the next renewal (or retry) is due.\n"
		"# TYPE mtls_agent_renew_at_seconds gauge\n"
		"mtls_agent_renew_at_seconds{cert=\"%s\"} %lld\n"
		"# HELP mtls_agent_last_renewal_seconds When the agent last renewed (0: not since "
		"it started).\n"
		"# TYPE mtls_agent_last_renewal_seconds gauge\n"
		"mtls_agent_last_renewal_seconds{cert=\"%s\"} %lld\n"
		"# HELP mtls_agent_renewals_total Renewals since the agent started.\n"
		"# TYPE mtls_agent_renewals_total counter\n"
		"mtls_agent_renewals_total{cert=\"%s\"} %llu\n"
		"# HELP mtls_agent_renewal_failures_total Failed renewals since the agent "
		"started.\n"
		"# TYPE mtls_agent_renewal_failures_total counter\n"
		"mtls_agent_renewal_failures_total{cert=\"%s\"} %llu\n"
		"# HELP mtls_agent_renewal_failures_in_a_row Failed renewals since the last "
		"success.\n"
		"# TYPE mtls_agent_renewal_failures_in_a_row gauge\n"
		"mtls_agent_renewal_failures_in_a_row{cert=\"%s\"} %u\n"
		"# HELP mtls_agent_roots_refresh_failures_total Failed root bundle fetches.\n"
		"# TYPE mtls_agent_roots_refresh_failures_total counter\n"
		"mtls_agent_roots_refresh_failures_total{cert=\"%s\"} %llu\n"
		"# HELP mtls_agent_roots_replaced_total Root bundles replaced by the CA's.\n"
		"# TYPE mtls_agent_roots_replaced_total counter\n"
		"mtls_agent_roots_replaced_total{cert=\"%s\"} %llu\n"
		"# HELP mtls_agent_hook_runs_total Hooks run (command and/or signal).\n"
		"# TYPE mtls_agent_hook_runs_total counter\n"
		"mtls_agent_hook_runs_total{cert=\"%s\"} %llu\n"
		"# HELP mtls_agent_hook_failures_total Hooks that failed (retried later).\n"
		"# TYPE mtls_agent_hook_failures_total counter\n"
		"mtls_agent_hook_failures_total{cert=\"%s\"} %llu\n"
		"# HELP mtls_agent_hook_pending 1 while a change has not reached the service.\n"
		"# TYPE mtls_agent_hook_pending gauge\n"
		"mtls_agent_hook_pending{cert=\"%s\"} %d\n",
		lbl, (long long)a->leaf.not_after, lbl,
		(long long)(a->failures > 0 ? a->retry_at : a->renew_at), lbl,
		(long long)a->last_success, lbl, a->renewals, lbl, a->renew_failures, lbl,
		a->failures, lbl, a->roots_failures, lbl, a->roots_replaced, lbl, a->hook_runs, lbl,
		a->hook_failures, lbl, a->hook_pending ? 1 : 0);
	if (n < 0 || n >= (int)sizeof(text))
		return;
	if (a->metrics_last != NULL && strcmp(a->metrics_last, text) == 0)
		return;
	if (files_write(a->o.metrics_file, text, (size_t)n, 0644, false, err, sizeof(err)) != 0) {
		LOG(LOG_WARN, "metrics_write_failed", LS("file", a->o.metrics_file),
		    LS("message", err));
		return;
	}
	free(a->metrics_last);
	a->metrics_last = strdup(text);
}

/* ---- Renewal and roots ---- */

/* The leaf of a look at the files: a change made by someone else (mtls renew by hand) is
 * taken in, with a new schedule. */
static void leaf_take(struct agent *a, const struct leaf *l, time_t now)
{
	if (strcmp(l->serial, a->leaf.serial) == 0 && l->not_after == a->leaf.not_after)
		return;
	LOG(LOG_INFO, "cert_changed", LS("cert", a->certp), LS("serial", l->serial),
	    LS("old_serial", a->leaf.serial));
	snprintf(a->old_serial, sizeof(a->old_serial), "%s", a->leaf.serial);
	a->leaf = *l;
	add_pending(a, "changed");
	a->renew_at = renewal_schedule(l->not_before, l->not_after, now, a->rnd);
	a->failures = 0;
	a->retry_at = 0;
}

/* The leaf as it is on disk now (leaf_take()), if the files are not being replaced. true
 * if they are (nothing taken in: look again shortly). */
static bool leaf_refresh(struct agent *a, time_t now)
{
	struct look l;
	char err[4096];

	switch (look_files(a, &l, err, sizeof(err))) {
	case LOOK_OK:
		leaf_take(a, &l.leaf, now);
		look_free(&l);
		return false;
	case LOOK_CHANGING: return true;
	case LOOK_FAILED:
		LOG(LOG_ERROR, "cert_unreadable", LS("cert", a->certp), LS("message", err));
		break;
	}
	return false;
}

static void roots_refresh(struct agent *a, time_t now)
{
	char msg[4096];
	enum renewal_roots_result r =
		renewal_refresh_roots(a->base, &a->f, &a->roots, &stop_flag, msg, sizeof(msg));

	a->roots_at = now + (time_t)(a->roots_refresh_ms / 1000);
	a->roots_fetched_at = now;
	switch (r) {
	case RENEWAL_ROOTS_FAILED:
		a->roots_failures++;
		if (!atomic_load(&stop_flag))
			LOG(LOG_WARN, "roots_refresh_failed", LS("ca", a->cap), LS("message", msg));
		break;
	case RENEWAL_ROOTS_SAME: LOG(LOG_DEBUG, "roots_unchanged", LS("ca", a->cap)); break;
	case RENEWAL_ROOTS_REPLACED:
		a->roots_replaced++;
		LOG(LOG_INFO, "roots_replaced", LS("ca", a->cap), LS("message", msg));
		add_pending(a, "roots");
		break;
	case RENEWAL_ROOTS_LEFT_ALONE:
		LOG(LOG_WARN, "roots_left_alone", LS("ca", a->cap), LS("message", msg));
		break;
	}
}

/* One renewal. 0, or -1 (logged, the retry scheduled). */
static int renew(struct agent *a, time_t now, bool forced, char *err, size_t err_len)
{
	struct renewal_result res;
	char na[32], at[32];
	int rc;

	/* a root rollover may be what the new chain needs */
	if (now > a->roots_fetched_at + ROOTS_FRESH_S)
		roots_refresh(a, now);
	memset(&res, 0, sizeof(res));
	rc = renewal_renew(a->base, &a->f, a->o.key_type, false, &stop_flag, &res, err, err_len);
	if (atomic_load(&stop_flag))
		return -1;
	if (rc != 0) {
		a->failures++;
		a->renew_failures++;
		a->retry_at =
			renewal_backoff(a->failures, a->leaf.not_after, now, renewal_random());
		utc(a->retry_at, at);
		utc(a->leaf.not_after, na);
		LOG(LOG_ERROR, "renew_failed", LS("cert", a->certp), LS("serial", a->leaf.serial),
		    LS("message", err), LN("failures", a->failures), LS("retry_at", at),
		    LS("not_after", na));
		return -1;
	}
	snprintf(a->old_serial, sizeof(a->old_serial), "%s", res.old_serial);
	/* what is on disk now, as leaf_refresh() will read it */
	if (leaf_read(a->certp, &a->leaf, err, err_len) != 0) {
		a->leaf.not_before = res.not_before;
		a->leaf.not_after = res.not_after;
		a->leaf.can_renew = true;
		snprintf(a->leaf.serial, sizeof(a->leaf.serial), "%s", res.serial);
	}
	a->renew_at = renewal_schedule(res.not_before, res.not_after, now, a->rnd);
	a->failures = 0;
	a->retry_at = 0;
	a->renewals++;
	a->last_success = now;
	utc(res.not_after, na);
	utc(a->renew_at, at);
	LOG(LOG_INFO, "renewed", LS("cert", a->certp), LS("serial", res.serial),
	    LS("old_serial", res.old_serial), LS("names", res.names), LS("key_type", res.key_type),
	    LS("not_after", na), LS("renew_at", at), LN("forced", forced));
	add_pending(a, "renewed");
	return 0;
}

/* Tell cert_expiring when the certificate is in its last stretch and not renewed. */
static void expiring_check(struct agent *a, time_t now)
{
	char na[32];

	if (a->leaf.not_after == 0 ||
	    now < renewal_warn_at(a->leaf.not_before, a->leaf.not_after) ||
	    now < a->expiring_told + EXPIRING_EVERY)
		return;
	a->expiring_told = now;
	utc(a->leaf.not_after, na);
	LOG(LOG_WARN, now >= a->leaf.not_after ? "cert_expired" : "cert_expiring",
	    LS("cert", a->certp), LS("serial", a->leaf.serial), LS("not_after", na),
	    LN("seconds_left", (long long)(a->leaf.not_after - now)), LN("failures", a->failures));
}

/* ---- The loop ---- */

/* One look at the files: the leaf taken in, the copies written, the hook run, all from the
 * same pair. Files being replaced are neither copied nor told: looked at again shortly. */
static void copies_and_hook(struct agent *a, time_t now)
{
	char err[4096];
	bool changed = false;
	struct look l;

	switch (look_files(a, &l, err, sizeof(err))) {
	case LOOK_CHANGING: a->look_again = true; return;
	case LOOK_FAILED:
		/* the service is told once the files are whole again */
		LOG(LOG_ERROR, "copy_failed", LS("message", err));
		return;
	case LOOK_OK: break;
	}
	leaf_take(a, &l.leaf, now);
	if (sync_outputs(a, &l, &changed, err, sizeof(err)) != 0)
		LOG(LOG_ERROR, "copy_failed", LS("message", err));
	look_free(&l);
	if (changed)
		add_pending(a, "files");
	if (a->hook_pending && (a->hook_retry_at == 0 || now >= a->hook_retry_at))
		run_hook(a, now);
}

static time_t earliest(time_t a, time_t b)
{
	return a == 0 ? b : b == 0 ? a : a < b ? a : b;
}

/* systemd's STATUS= line (sent when it changes): the certificate in service and what
 * comes next. */
static void notify_status(struct agent *a, char *sent, size_t len)
{
	char now[SERVICE_NOTIFY_STATUS_MAX], na[32], at[32];

	utc(a->leaf.not_after, na);
	utc(a->failures > 0 ? a->retry_at : a->renew_at, at);
	snprintf(now, sizeof(now), "%.120s serial %.64s valid until %s; %s %s", a->certp,
		 a->leaf.serial[0] != '\0' ? a->leaf.serial : "(unreadable)", na,
		 a->failures > 0 ? "renewal failing, retry at" : "renews at", at);
	if (strcmp(now, sent) == 0)
		return;
	snprintf(sent, len, "%s", now);
	service_notify_status(sent);
}

static int run_loop(struct agent *a)
{
	char at[32], na[32], err[4096], status[SERVICE_NOTIFY_STATUS_MAX] = "";
	time_t now = time(NULL);
	/* systemd's watchdog: WATCHDOG=1 each turn of the loop, which then sleeps no longer
	 * than half of WatchdogSec= (0: off) */
	double watchdog = service_notify_watchdog_every();

	a->renew_at = renewal_schedule(a->leaf.not_before, a->leaf.not_after, now, a->rnd);
	utc(a->renew_at, at);
	utc(a->leaf.not_after, na);
	LOG(LOG_INFO, "agent_started", LS("cert", a->certp), LS("serial", a->leaf.serial),
	    LS("not_after", na), LS("renew_at", at), LS("ca_url", a->base),
	    LN("pid", (long long)getpid()));
	roots_refresh(a, now);
	notify_status(a, status, sizeof(status));
	service_notify_ready(status);
	if (a->o.force)
		atomic_store(&renew_flag, true);
	while (!atomic_load(&stop_flag)) {
		time_t due, wake;
		bool forced;

		if (watchdog > 0)
			service_notify_watchdog();
		if (atomic_exchange(&reopen_flag, false))
			log_reopen();
		now = time(NULL);
		/* files being replaced by another program: no renewal of ours now (its lock is
		 * held), the next look is soon */
		a->look_again = leaf_refresh(a, now);
		if (!a->look_again) {
			forced = atomic_exchange(&renew_flag, false);
			if (forced)
				sandbox_probe("sighup");
			due = a->failures > 0 ? a->retry_at : a->renew_at;
			if (forced || now >= due)
				renew(a, now, forced, err, sizeof(err));
		}
		if (atomic_load(&stop_flag))
			break;
		if (now >= a->roots_at)
			roots_refresh(a, now);
		if (atomic_load(&stop_flag))
			break;
		expiring_check(a, now);
		copies_and_hook(a, now);
		metrics_write(a);
		notify_status(a, status, sizeof(status));
		/* sleep until the next thing is due, a signal, or SLEEP_MAX_S */
		now = time(NULL);
		wake = earliest(a->failures > 0 ? a->retry_at : a->renew_at, a->roots_at);
		if (a->hook_pending)
			wake = earliest(wake, a->hook_retry_at);
		if (a->leaf.not_after != 0) {
			time_t w = renewal_warn_at(a->leaf.not_before, a->leaf.not_after);

			if (w > now)
				wake = earliest(wake, w);
		}
		/* files being replaced: looked at again soon, and not sooner, whatever else is
		 * due (a renewal asked for by SIGHUP waits for them) */
		if (a->look_again && (wake <= now || atomic_load(&renew_flag)))
			wake = now + 1; /* bounded by LOOK_AGAIN_MS below */
		if (wake > now && !atomic_load(&stop_flag) &&
		    (a->look_again || !atomic_load(&renew_flag))) {
			long long s = wake - now < SLEEP_MAX_S ? wake - now : SLEEP_MAX_S;
			long long ms = s * 1000;
			struct pollfd pf = {wake_pipe[0], POLLIN, 0};

			if (watchdog > 0 && ms > (long long)(watchdog * 1000))
				ms = (long long)(watchdog * 1000);
			if (a->look_again && ms > LOOK_AGAIN_MS)
				ms = LOOK_AGAIN_MS;
			poll(&pf, 1, (int)ms);
		}
		drain_wake();
	}
	service_notify_stopping("stopping");
	LOG(LOG_INFO, "agent_stopping", LS("cert", a->certp), LS("serial", a->leaf.serial));
	return 0;
}

/* --once: one pass. 0 renewed (and told) or not due; 1 a failure. */
static int run_once(struct agent *a)
{
	char err[4096], at[32], na[32];
	time_t now = time(NULL);
	bool changed = false, copy_failed = false;
	enum look_result look;
	struct look l;
	int rc = 0;

	/* the middle of the jitter: a timer's own randomized delay spreads the hosts */
	a->renew_at = renewal_schedule(a->leaf.not_before, a->leaf.not_after, now, UINT32_MAX / 2);
	roots_refresh(a, now);
	if (a->o.force || now >= a->renew_at) {
		if (renew(a, now, a->o.force, err, sizeof(err)) != 0) {
			if (atomic_load(&stop_flag))
				snprintf(err, sizeof(err), "stopped by a signal");
			usage_error(err);
			rc = 1;
		} else {
			utc(a->leaf.not_after, na);
			utc(a->renew_at, at);
			printf("renewed: serial %s (was %s), valid until %s, renew after %s\n",
			       a->leaf.serial, a->old_serial, na, at);
		}
	} else {
		utc(a->renew_at, at);
		utc(a->leaf.not_after, na);
		printf("not due until %s (serial %s valid until %s); --force renews now\n", at,
		       a->leaf.serial, na);
		LOG(LOG_INFO, "not_due", LS("cert", a->certp), LS("serial", a->leaf.serial),
		    LS("renew_at", at));
	}
	/* the files as they are, whole: a replacement by another program under way is waited
	 * for (a signal stops the wait) */
	for (;;) {
		struct pollfd pf = {wake_pipe[0], POLLIN, 0};

		look = look_files(a, &l, err, sizeof(err));
		if (look != LOOK_CHANGING || atomic_load(&stop_flag))
			break;
		poll(&pf, 1, LOOK_AGAIN_MS);
		drain_wake();
	}
	if (look == LOOK_CHANGING)
		snprintf(err, sizeof(err), "stopped by a signal");
	if (look == LOOK_OK) {
		leaf_take(a, &l.leaf, now);
		/* copies that cannot be written: the hook is still run, as by the loop */
		copy_failed = sync_outputs(a, &l, &changed, err, sizeof(err)) != 0;
		look_free(&l);
	}
	if (look != LOOK_OK || copy_failed) {
		LOG(LOG_ERROR, "copy_failed", LS("message", err));
		usage_error(err);
		rc = 1;
	}
	if (changed)
		add_pending(a, "files");
	/* files that are not a whole pair are not told to the service */
	if (a->hook_pending && look == LOOK_OK && !atomic_load(&stop_flag) &&
	    run_hook(a, now) != 0) {
		fprintf(stderr,
			"mtls agent: the hook failed (see the log); the service may still use the "
			"old files\n");
		rc = 1;
	}
	metrics_write(a);
	return rc;
}

int cmd_agent(int argc, char **argv)
{
	struct agent a;
	struct options_state st = {0};
	struct sigaction sa;
	int rc;

	memset(&a, 0, sizeof(a));
	atomic_store(&stop_flag, false);
	atomic_store(&renew_flag, false);
	rc = configure(&a, argc, argv, &st);
	if (rc >= 0)
		goto out;
	if (pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
		usage_error("cannot make a pipe");
		rc = 1;
		goto out;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	caclient_init();
	a.rnd = renewal_random();
	/* seccomp once the start-up is done (TSYNC: the log's thread too) */
	{
		char err[1024], what[80];

		if (sandbox_seccomp(a.sandbox, err, sizeof(err)) != 0) {
			LOG(LOG_ERROR, "sandbox_failed", LS("message", err));
			usage_error(err);
			rc = 1;
		} else {
			sandbox_describe(a.sandbox, what, sizeof(what));
			LOG(LOG_INFO, "sandbox", LS("state", what),
			    LS("hooks", a.runner != NULL ? "runner"
					: a.has_hook	 ? "agent"
							 : "none"));
			sandbox_probe("start");
			rc = a.o.once ? run_once(&a) : run_loop(&a);
			if (!a.o.once)
				rc = 0;
		}
	}
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	signal(SIGUSR1, SIG_DFL);
	close(wake_pipe[0]);
	close(wake_pipe[1]);
	wake_pipe[0] = wake_pipe[1] = -1;
out:
	log_flush(LOG_STOP_WAIT_MS);
	agent_runner_free(a.runner);
	sandbox_free(a.sandbox);
	free(a.metrics_last);
	options_free(&st);
	return rc;
}
