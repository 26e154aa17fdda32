/*
 * mtls ca serve: the options of the CA service (caserve/serve.h does the work).
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca_cmd.h"
#include "duration.h"
#include "files.h"
#include "keys.h"
#include "log.h"
#include "sandbox.h"
#include "serve.h"
#include "token.h"

struct serve_opts {
	const char *dir;
	const char *listen;
	const char *http_listen;
	const char *public_url;
	struct opt_list admin_uri;
	struct opt_list admin_cn;
	const char *leaf_lifetime;
	long long crl_days;
	long long max_connections;
	long long per_ip;
	const char *handshake_timeout;
	const char *idle_timeout;
	const char *cert_dir;
	const char *passphrase_file;
	const char *passphrase_env;
	const char *log_format;
	const char *log_level;
	const char *log_file;
	struct opt_list sandbox_allow;
	int insecure_no_sandbox;
	const char *config;
};

#define O(f) offsetof(struct serve_opts, f)

static const struct opt serve_table[] = {
	CA_OPT_DIR(O),
	{"listen", OPT_STRING, O(listen), "HOST:PORT",
	 "the HTTPS API (enroll, renew, revoke), served through libmtls (default "
	 "127.0.0.1:8443)"},
	{"http-listen", OPT_STRING, O(http_listen), "HOST:PORT",
	 "plain HTTP for the CRL, OCSP and the root bundle (default 127.0.0.1:8080; 'none': off)"},
	{"public-url", OPT_STRING, O(public_url), "URL",
	 "https://HOST:PORT clients reach the API at, put in tokens and in the API's certificate "
	 "(default: https:// and the --listen address)"},
	{"admin-uri", OPT_LIST, O(admin_uri), "URI",
	 "a client identity (URI SAN, exact) allowed to revoke through the API"},
	{"admin-cn", OPT_LIST, O(admin_cn), "NAME",
	 "a client certificate common name allowed to revoke through the API"},
	{"leaf-lifetime", OPT_STRING, O(leaf_lifetime), "DURATION",
	 "lifetime of the certificates the service issues (default 24h; 1m to 7d); renewal is "
	 "due after two thirds of it"},
	{"crl-days", OPT_INT, O(crl_days), "N",
	 "validity of the CRLs the service publishes (default 1 day; rebuilt when a third is "
	 "left, and at every revocation)"},
	{"max-connections", OPT_INT, O(max_connections), "N",
	 "API connections at once (default 256)"},
	{"per-ip", OPT_INT, O(per_ip), "N",
	 "API connections at once from one address (default 16)"},
	{"handshake-timeout", OPT_STRING, O(handshake_timeout), "DURATION",
	 "TLS handshake deadline (default 10s)"},
	{"idle-timeout", OPT_STRING, O(idle_timeout), "DURATION",
	 "close a connection that moves nothing this long (default 30s)"},
	{"cert-dir", OPT_STRING, O(cert_dir), "DIR",
	 "where the API's own certificate and key are kept (default DIR/serve)"},
	CA_OPT_PASSPHRASE(O),
	{"log-format", OPT_STRING, O(log_format), "json|logfmt", "log line format (json)"},
	{"log-level", OPT_STRING, O(log_level), "LEVEL", "debug, info (default), warn, error"},
	{"log-file", OPT_STRING, O(log_file), "FILE", "log here instead of stderr"},
	{"sandbox-allow", OPT_LIST, O(sandbox_allow), "PATH",
	 "let the sandbox read and write PATH too (a PKCS#11 module's token directory, files "
	 "a PostgreSQL store's connection names); repeatable (docs/operations.md, Sandbox)"},
	{"insecure-no-sandbox", OPT_FLAG, O(insecure_no_sandbox), NULL,
	 "run without the sandbox (Landlock, seccomp) that limits the service to its CA "
	 "directory and its system calls after start-up (logs a warning)"},
	CA_OPT_CONFIG(O),
	OPT_END,
};

static int count_range(const char *name, long long v, long long lo, long long hi, char *err,
		       size_t len)
{
	if (v >= lo && v <= hi)
		return 0;
	snprintf(err, len, "--%s: %lld is out of range; give %lld to %lld", name, v, lo, hi);
	return -1;
}

int cmd_ca_serve(int argc, char **argv)
{
	struct serve_opts o = {.listen = "127.0.0.1:8443",
			       .http_listen = "127.0.0.1:8080",
			       .leaf_lifetime = "24h",
			       .crl_days = 1,
			       .max_connections = 256,
			       .per_ip = 16,
			       .handshake_timeout = "10s",
			       .idle_timeout = "30s",
			       .log_format = "json",
			       .log_level = "info"};
	struct serve_options so = {0};
	struct options_state st = {0};
	struct sandbox *sb = NULL;
	char err[600], cert_dir[PATH_MAX];
	char *pass = NULL;
	enum log_format fmt;
	enum log_level level;
	long long leaf_ms = 0, hs_ms = 0, idle_ms = 0;
	int rc;

	rc = ca_parse(
		"serve", "mtls ca serve [--dir DIR] [--listen HOST:PORT] [options]",
		"Serve the CA over the network: an HTTPS API through libmtls (enrollment with "
		"a one-time\ntoken, renewal by mutual TLS, revocation by an admin), and plain "
		"HTTP for the CRL, OCSP\nand the root bundle. Local 'mtls ca' commands on the "
		"same directory keep working.",
		serve_table, &o, argc, argv, &st);
	if (rc >= 0)
		goto out;
	rc = 2;
	if (st.positional.n != 0) {
		ca_failf("serve", "unexpected argument '%s'; see --help", st.positional.v[0]);
		goto out;
	}
	if (o.dir == NULL)
		o.dir = ca_default_dir();
	if (duration_parse(o.leaf_lifetime, "--leaf-lifetime", SVC_LEAF_MIN * 1000,
			   SVC_LEAF_MAX * 1000, &leaf_ms, err, sizeof(err)) != 0 ||
	    duration_parse(o.handshake_timeout, "--handshake-timeout", 100, 300000, &hs_ms, err,
			   sizeof(err)) != 0 ||
	    duration_parse(o.idle_timeout, "--idle-timeout", 1000, 3600000, &idle_ms, err,
			   sizeof(err)) != 0 ||
	    count_range("crl-days", o.crl_days, 1, 365, err, sizeof(err)) != 0 ||
	    count_range("max-connections", o.max_connections, 1, 100000, err, sizeof(err)) != 0 ||
	    count_range("per-ip", o.per_ip, 1, 100000, err, sizeof(err)) != 0) {
		ca_fail("serve", err);
		goto out;
	}
	if (o.public_url != NULL && token_check_url(o.public_url, err, sizeof(err)) != 0) {
		ca_failf("serve", "--public-url: %s", err);
		goto out;
	}
	if (log_format_parse(o.log_format, &fmt) != 0) {
		ca_failf("serve", "--log-format: '%s': give json or logfmt", o.log_format);
		goto out;
	}
	if (log_level_parse(o.log_level, &level) != 0) {
		ca_failf("serve", "--log-level: '%s': give debug, info, warn or error",
			 o.log_level);
		goto out;
	}
	rc = 1;
	if (keys_passphrase(o.passphrase_file, o.passphrase_env, &pass, err, sizeof(err)) != 0) {
		ca_fail("serve", err);
		goto out;
	}
	if (o.cert_dir == NULL) {
		snprintf(cert_dir, sizeof(cert_dir), "%s/serve", o.dir);
		o.cert_dir = cert_dir;
	}
	/* Landlock before the first thread, the log's writer (sandbox.h): the CA directory
	 * (the store and its WAL, the CRLs, the API's own certificate) and the log's directory
	 * read-write, the config files read-only */
	if (files_mkdir_private(o.cert_dir, err, sizeof(err)) != 0) {
		ca_fail("serve", err);
		goto out;
	}
	sb = sandbox_new(SANDBOX_CASERVE, o.insecure_no_sandbox);
	if (sb == NULL || sandbox_write(sb, o.dir) != 0 || sandbox_write(sb, o.cert_dir) != 0 ||
	    sandbox_write_dir_of(sb, o.log_file) != 0 ||
	    sandbox_read_dir_of(sb, o.passphrase_file) != 0) {
		ca_fail("serve", "out of memory");
		goto out;
	}
	for (size_t i = 0; i < st.nconfig_files; i++)
		if (sandbox_read_dir_of(sb, st.config_files[i]) != 0) {
			ca_fail("serve", "out of memory");
			goto out;
		}
	for (size_t i = 0; i < o.sandbox_allow.n; i++)
		if (sandbox_allow(sb, o.sandbox_allow.v[i]) != 0) {
			ca_fail("serve", "out of memory");
			goto out;
		}
	/* SQLite's temporary files (a large sort) go to the CA directory, which the sandbox
	 * lets it write, rather than /var/tmp or /tmp, which it does not */
	if (!o.insecure_no_sandbox)
		setenv("SQLITE_TMPDIR", o.dir, 0);
	if (sandbox_landlock(sb, err, sizeof(err)) != 0) {
		ca_fail("serve", err);
		goto out;
	}
	if (log_setup(fmt, level, o.log_file) != 0) {
		ca_failf("serve", "--log-file: cannot open '%s'", o.log_file);
		goto out;
	}
	sandbox_warnings(sb);
	so.dir = o.dir;
	so.listen = o.listen;
	so.http_listen = strcmp(o.http_listen, "none") == 0 ? NULL : o.http_listen;
	so.public_url = o.public_url;
	so.admin_uris = o.admin_uri.v;
	so.n_admin_uris = o.admin_uri.n;
	so.admin_cns = o.admin_cn.v;
	so.n_admin_cns = o.admin_cn.n;
	so.leaf_seconds = leaf_ms / 1000;
	so.crl_seconds = o.crl_days * 86400;
	so.max_connections = o.max_connections;
	so.per_ip = o.per_ip;
	so.handshake_timeout_ms = hs_ms;
	so.idle_timeout_ms = idle_ms;
	so.passphrase = pass;
	so.cert_dir = o.cert_dir;
	so.sandbox = sb;
	if (so.n_admin_uris == 0 && so.n_admin_cns == 0)
		LOG(LOG_INFO, "no_admin",
		    LS("message", "no --admin-uri or --admin-cn: revocation "
				  "through the API is refused; revoke locally "
				  "with 'mtls ca revoke'"));
	rc = serve_run(&so);
	log_stop();
out:
	keys_free_passphrase(pass);
	sandbox_free(sb);
	options_free(&st);
	return rc;
}
