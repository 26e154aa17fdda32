/*
 * mtls server and mtls connector: the tunnel pair.
 *
 *   server:    TLS in (client certificate required and authorized) -> plaintext target
 *   connector: plaintext in (loopback or unix socket) -> TLS out (server verified)
 *
 * tunnel_run() checks the whole configuration, binds, starts one libev loop per worker
 * thread and runs until SIGTERM/SIGINT (then drains). SIGHUP, or a change to any of the
 * certificate, key, CA or CRL files, reloads the TLS configuration without touching
 * established connections.
 */
#ifndef MTLS_TUNNEL_H
#define MTLS_TUNNEL_H

#include <stdbool.h>
#include <stddef.h>

enum tunnel_role { TUNNEL_SERVER, TUNNEL_CONNECTOR };

/* A server's rollout mode (--mode; docs/rollout.md). The weaker ones carry "insecure" in
 * their option value and are logged at start and at each reload, and exported (mtls_mode).
 *   strict      TLS and a verified, allowed client certificate (the default)
 *   permissive  plaintext clients (detected by their first bytes), TLS clients without a
 *               certificate and mTLS clients all forwarded; a certificate that would be
 *               refused is forwarded too, counted would_refuse
 *   audit       TLS and a client certificate required; one that would be refused is
 *               forwarded anyway, logged and counted would_refuse with its reason */
enum tunnel_mode { TUNNEL_MODE_STRICT, TUNNEL_MODE_PERMISSIVE, TUNNEL_MODE_AUDIT };

struct tunnel_list {
	const char **v;
	size_t n;
};

/* Field names follow the command-line options (cli/server_cmd.c, cli/connector_cmd.c). */
struct tunnel_options {
	enum tunnel_role role;
	const char *listen;
	const char *listen_mode; /* octal, for a unix:/path listen address; NULL: 0660 */
	/* server: the backend; connector: the mtls server; several: in order of preference,
	 * the next one taken when a connect fails (resolver.h) */
	struct tunnel_list target;
	long long resolve_interval_ms; /* names of target resolved again this often */
	const char *server_name;
	const char *cert;
	const char *key;
	const char *key_passphrase_file;
	const char *key_passphrase_env;
	const char *pkcs11_module; /* for a key given as a pkcs11: URI; NULL: the default */
	const char *ca;
	struct tunnel_list crl;
	int crl_check_chain;
	long long crl_grace;
	struct tunnel_list crl_url;   /* each fetched into the crl_cache of its rank (crlfetch.h);
				       * "auto": the own certificate's CRL distribution point */
	const char *crl_refresh;      /* a duration; NULL: 60s */
	struct tunnel_list crl_cache; /* one per crl_url */
	const char *crl_push;	      /* long polls of crl_url: "on" (NULL) or "off" */
	const char *ca_url;	      /* renew cert and key there, refresh ca (renewer.h) */
	const char *renew_key_type;   /* of the new keys; NULL: the current key's type */
	const char *ca_refresh;	      /* a duration: how often ca is refreshed; NULL: 1h */
	const char *ocsp;	      /* peer checking: off, soft-fail, hard-fail; NULL: off */
	const char *ocsp_url;	      /* the responder instead of the certificates' own */
	int ocsp_staple;	      /* server: staple an answer for the own certificate */
	long long ocsp_cache;	      /* answers kept */
	struct tunnel_list allow_uri;
	struct tunnel_list allow_dns;
	struct tunnel_list allow_cn;
	struct tunnel_list allow_email;
	struct tunnel_list allow_spki;
	struct tunnel_list allow_cert;
	int allow_any_identity;
	int proxy_protocol;
	int insecure_listen_remote;
	int reuse_port; /* share the TCP --listen port with a running daemon (SO_REUSEPORT) */
	int insecure_key_permissions;
	long long workers;
	long long max_connections;
	int max_connections_given; /* explicit: refused if it cannot fit the descriptor limit,
				    * where the default is lowered with a warning */
	long long handshake_timeout_ms;
	long long connect_timeout_ms;
	long long idle_timeout_ms;
	const char *max_connection_lifetime; /* as given, a duration */
	long long max_lifetime_ms;	     /* parsed from it; 0: no limit */
	long long drain_timeout_ms;
	long long watch_interval_ms;
	const char *metrics;
	const char *log_format;
	const char *log_level;
	const char *log_file;
	const char *user;
	const char *tls_min;
	const char *mode;	    /* server: strict (NULL), insecure-permissive, insecure-audit */
	const char *protocol;	    /* tcp (NULL) or postgresql (pgwire.h, docs/database.md) */
	struct tunnel_list pg_role; /* server, postgresql: PATTERN=ROLE[@DATABASE] rules */
	long long plaintext_wait_ms;  /* permissive: a client silent this long is plaintext */
	long long metrics_identities; /* identities with their own metrics (then "other") */
	long long verify_cache;
	long long session_cache;
	const char *park; /* on (NULL) or off: idle TLS 1.3 connections parked (mtls_park()) */
	/* the sandbox (common/sandbox.h), process-wide: more read-write paths, or none at all */
	struct tunnel_list sandbox_allow;
	int insecure_no_sandbox;
	/* the --config files read (set by the command, not an option): readable in the sandbox
	 * for SIGHUP */
	struct tunnel_list config_files;
	/* SIGHUP: the options parsed again (the command line and the --config file it names).
	 * reparse returns a handle that owns *out (freed with reparse_free once replaced), or
	 * NULL with a message. NULL reparse: SIGHUP reloads files only. */
	void *(*reparse)(void *arg, struct tunnel_options **out, char *err, size_t len);
	void *reparse_arg;
	void (*reparse_free)(void *handle);
};

/* Defaults for a role. */
void tunnel_defaults(struct tunnel_options *o, enum tunnel_role role);
/* Run; returns the process exit status (0 after a clean drain, 2 for configuration errors,
 * 1 for failures at start). Errors are printed as one line to stderr. */
int tunnel_run(const struct tunnel_options *o);
/* Run n tunnels in one process (a config file's [sections], named by names): each checked,
 * bound and started as tunnel_run() would, the privileges dropped once (the first's --user),
 * one main loop for all; each reloads on SIGHUP and drains on SIGTERM, and this returns when
 * the last has drained. The process-wide options (log, user) are the first's. A message
 * about one tunnel names it: "mtls server: [name] ...". */
int tunnel_run_many(const struct tunnel_options *const *o, const char *const *names, size_t n);
/* What tunnel_run_many() refuses in the tunnels together, checked without starting anything
 * (mtls doctor): two on one address, two renewing one certificate, two fetching into one
 * CRL cache. 0, or -1 with the message. */
int tunnel_check_distinct(const struct tunnel_options *const *o, const char *const *names, size_t n,
			  char *err, size_t len);

#endif
