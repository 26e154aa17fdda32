/*
 * mtls server and mtls connector: their options (one table each, sharing every common
 * entry) and help texts. The daemons themselves are in tunnel/.
 */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "duration.h"
#include "log.h"
#include "options.h"
#include "tunnel.h"
#include "tunnel_cmd.h"

static_assert(sizeof(struct tunnel_list) == sizeof(struct opt_list) &&
		      offsetof(struct tunnel_list, n) == offsetof(struct opt_list, n),
	      "tunnel_list and opt_list must have one layout");

#define O(f) offsetof(struct tunnel_options, f)

#define TLS_OPTIONS                                                                                \
	{"cert", OPT_STRING, O(cert), "FILE", "own certificate chain (PEM, leaf first)"},          \
		{"key", OPT_STRING, O(key), "FILE|URI",                                            \
		 "own private key (mode 0600; 0640 for --user's own group), or a key on a "        \
		 "PKCS#11 token: pkcs11:token=LABEL;object=LABEL (no PIN in it)"},                 \
		{"key-passphrase-file", OPT_STRING, O(key_passphrase_file), "FILE",                \
		 "passphrase of an encrypted key, from FILE (mode 0600 as a key); for a pkcs11: "  \
		 "key, the token's user PIN"},                                                     \
		{"key-passphrase-env", OPT_STRING, O(key_passphrase_env), "VAR",                   \
		 "passphrase of an encrypted key, from environment variable VAR (then wiped "      \
		 "from the environment); for a pkcs11: key, the token's user PIN"},                \
		{"pkcs11-module", OPT_STRING, O(pkcs11_module), "PATH",                            \
		 "PKCS#11 module of a pkcs11: --key (default: the URI's module-path, else "        \
		 "p11-kit's proxy, p11-kit-proxy.so)"},                                            \
		{"ca", OPT_STRING, O(ca), "FILE", "CA bundle the peer's chain must lead to"},      \
		{"crl", OPT_LIST, O(crl), "FILE", "CRL (PEM); enables revocation checking"},       \
		{"crl-check-chain", OPT_FLAG, O(crl_check_chain), NULL,                            \
		 "check revocation of the whole chain, not only the leaf"},                        \
		{"crl-grace", OPT_DURATION_S, O(crl_grace), "DURATION",                            \
		 "accept a CRL this long past nextUpdate, with a warning (e.g. 1h; default 0)"},   \
		{"crl-url", OPT_LIST, O(crl_url), "URL",                                           \
		 "fetch the CRL from URL (http or https, DER or PEM) in the background, verify "   \
		 "it by --ca, keep it in --crl-cache and load it; 'auto': the URL of the own "     \
		 "certificate's CRL distribution point; repeatable (one per CA)"},                 \
		{"crl-refresh", OPT_STRING, O(crl_refresh), "DURATION",                            \
		 "fetch --crl-url this often (default 60s; 1s to 1d)"},                            \
		{"crl-cache", OPT_LIST, O(crl_cache), "FILE",                                      \
		 "where the last good CRL of --crl-url is kept (one per --crl-url, in the same "   \
		 "order; its directory writable)"},                                                \
		{"crl-push", OPT_STRING, O(crl_push), "on|off",                                    \
		 "keep a long poll at --crl-url, so a new CRL arrives as soon as the CA service "  \
		 "publishes it (default on; a server that cannot hold it is polled)"},             \
		{"ca-url", OPT_STRING, O(ca_url), "URL",                                           \
		 "renew --cert and --key at this CA service (mtls ca serve, https://HOST:PORT, "   \
		 "verified against --ca) at 2/3 of their life, and keep --ca its root bundle; "    \
		 "their directories writable (a pkcs11: --key: the certificate only, for the "     \
		 "same token key)"},                                                               \
		{"renew-key-type", OPT_STRING, O(renew_key_type), "ALG",                           \
		 "new keys of --ca-url: p256, p384, ed25519, rsa3072, rsa4096 (default: the "      \
		 "current key's type)"},                                                           \
		{"ca-refresh", OPT_STRING, O(ca_refresh), "DURATION",                              \
		 "fetch the roots of --ca-url into --ca this often, and after each renewal "       \
		 "(default 1h; 1s to 1d)"},                                                        \
		{"ocsp", OPT_STRING, O(ocsp), "off|soft-fail|hard-fail",                           \
		 "check the peer's certificate by OCSP (default off); soft-fail refuses only a "   \
		 "revoked one, hard-fail needs a good answer"},                                    \
		{"ocsp-url", OPT_STRING, O(ocsp_url), "URL",                                       \
		 "ask this OCSP responder instead of the one the certificates name"},              \
		{"ocsp-cache", OPT_INT, O(ocsp_cache), "N",                                        \
		 "OCSP answers kept, one per peer certificate (default 4096; 1 to 65536)"},        \
		{"allow-uri", OPT_LIST, O(allow_uri), "PATTERN",                                   \
		 "allow peers with this URI SAN (a path segment may be *)"},                       \
		{"allow-dns", OPT_LIST, O(allow_dns), "NAME", "allow peers with this DNS SAN"},    \
		{"allow-cn", OPT_LIST, O(allow_cn), "CN", "allow peers with this common name"},    \
		{"allow-email", OPT_LIST, O(allow_email), "ADDRESS",                               \
		 "allow peers with this email SAN (or *@domain for every address there)"},         \
		{"allow-spki", OPT_LIST, O(allow_spki), "SHA256", "pin: SHA-256 of the peer key"}, \
		{"allow-cert", OPT_LIST, O(allow_cert), "SHA256",                                  \
		 "pin: SHA-256 of the peer certificate"},                                          \
		{"tls-min", OPT_STRING, O(tls_min), "1.2|1.3", "minimum TLS version (1.2)"},       \
		{"verify-cache", OPT_INT, O(verify_cache), "N",                                    \
		 "remember N verified peer chains (default 4096; 0: verify every chain)"},         \
	{                                                                                          \
		"insecure-key-permissions", OPT_FLAG, O(insecure_key_permissions), NULL,           \
			"accept a key file readable by group or others (logs a warning)"           \
	}

#define DAEMON_OPTIONS                                                                             \
	{"workers", OPT_INT, O(workers), "N", "worker threads (default: one per core)"},           \
		{"max-connections", OPT_INT, O(max_connections), "N",                              \
		 "refuse connections past N open ones (default 10000, lowered to fit the "         \
		 "descriptor limit; 0: as many as it allows)"},                                    \
		{"handshake-timeout", OPT_DURATION, O(handshake_timeout_ms), "DURATION",           \
		 "TLS handshake deadline (default 10s; at most 5m); also how long the "            \
		 "bytes of a client that has left wait for a target that reads none before the "   \
		 "connection is closed (why=undeliverable)"},                                      \
		{"connect-timeout", OPT_DURATION, O(connect_timeout_ms), "DURATION",               \
		 "outbound connect deadline, for all the addresses a connection tries (default "   \
		 "5s; at most 5m)"},                                                               \
		{"resolve-interval", OPT_DURATION, O(resolve_interval_ms), "DURATION",             \
		 "resolve the names of --server/--target again this often, in the background "     \
		 "(default 30s; 1s to 1d); and at once after a failed connect"},                   \
		{"idle-timeout", OPT_DURATION, O(idle_timeout_ms), "DURATION",                     \
		 "close connections idle this long (default 1h; 0: never; at most 7d)"},           \
		{"park", OPT_STRING, O(park), "on|off",                                            \
		 "park TLS 1.3 connections quiet for a second: their record keys move to mtls's "  \
		 "own record layer and OpenSSL's state, about 18 KiB each, is freed (default on; " \
		 "SIGHUP applies a change)"},                                                      \
		{"max-connection-lifetime", OPT_STRING, O(max_connection_lifetime), "DURATION",    \
		 "close connections open this long, e.g. 12h (why=max_lifetime; default: "         \
		 "never)"},                                                                        \
		{"drain-timeout", OPT_DURATION, O(drain_timeout_ms), "DURATION",                   \
		 "on SIGTERM, wait this long for connections to end (default 30s; 0: none; at "    \
		 "most 1h)"},                                                                      \
		{"watch-interval", OPT_DURATION, O(watch_interval_ms), "DURATION",                 \
		 "watch certificate/key/CA/CRL files for changes: inotify (libev ev_stat) where "  \
		 "it works, else a look this often (network filesystems; default 2s, at least "    \
		 "100ms, at most 1h; 0: no watching); a change is loaded once the files are "      \
		 "unchanged for 1s"},                                                              \
		{"metrics", OPT_STRING, O(metrics), "ADDR",                                        \
		 "serve /metrics and /healthz over plain HTTP, unauthenticated, here (e.g. "       \
		 "127.0.0.1:9109)"},                                                               \
		{"log-format", OPT_STRING, O(log_format), "json|logfmt",                           \
		 "log line format (json)"},                                                        \
		{"log-level", OPT_STRING, O(log_level), "LEVEL",                                   \
		 "debug, info (default), warn, error"},                                            \
		{"log-file", OPT_STRING, O(log_file), "FILE", "log here instead of stderr"},       \
		{"user", OPT_STRING, O(user), "NAME",                                              \
		 "drop privileges to this user after binding; it must exist and be able to read "  \
		 "every file (checked at start before any socket, read again at each reload)"},    \
		{"sandbox-allow", OPT_LIST, O(sandbox_allow), "PATH",                              \
		 "let the sandbox read and write PATH too (a PKCS#11 module's token directory, "   \
		 "its lock files); repeatable (docs/operations.md, Sandbox)"},                     \
		{"insecure-no-sandbox", OPT_FLAG, O(insecure_no_sandbox), NULL,                    \
		 "run without the sandbox (Landlock, seccomp) that limits the daemon to its own "  \
		 "files and system calls after start-up (logs a warning)"},                        \
	{                                                                                          \
		"config", OPT_STRING, 0, "FILE", "read options from FILE"                          \
	}

static const struct opt server_table[] = {
	{"listen", OPT_STRING, O(listen), "ADDR",
	 "accept TLS here: HOST:PORT, [IPv6]:PORT or unix:/path"},
	{"listen-mode", OPT_STRING, O(listen_mode), "MODE",
	 "permissions of a unix:/path listen socket, in octal (default 0660)"},
	{"reuse-port", OPT_FLAG, O(reuse_port), NULL,
	 "share the --listen port with a running server/connector (SO_REUSEPORT), for a "
	 "zero-downtime upgrade; without it a port in use is refused (docs/operations.md)"},
	{"target", OPT_LIST, O(target), "ADDR",
	 "carry verified connections to HOST:PORT or unix:/path; repeatable: in order of "
	 "preference, a connect that fails (refused, unreachable, timed out) goes on to the next "
	 "address, and a failed address is skipped for a backoff of 1s doubling to 30s; every "
	 "address a name resolves to is used (IPv4 and IPv6)"},
	{"allow-any-identity", OPT_FLAG, O(allow_any_identity), NULL,
	 "accept any certificate from the CA (instead of allow rules)"},
	{"proxy-protocol", OPT_FLAG, O(proxy_protocol), NULL,
	 "send a PROXY v2 header (client address, TLS version, CN, identity) to the target"},
	{"session-cache", OPT_INT, O(session_cache), "N",
	 "keep N sessions for resumption (default 4096, ~9 KiB each; 0: none)"},
	{"mode", OPT_STRING, O(mode), "strict|insecure-permissive|insecure-audit",
	 "rollout mode (docs/rollout.md; default strict). insecure-permissive also forwards "
	 "plaintext clients and TLS clients without a certificate; insecure-audit requires a "
	 "client certificate but forwards one that would be refused, counted would_refuse. "
	 "SIGHUP applies a change"},
	{"plaintext-wait", OPT_DURATION, O(plaintext_wait_ms), "DURATION",
	 "insecure-permissive: a client that has sent nothing for this long is taken for a "
	 "plaintext client whose server speaks first (default 1s; 0: wait for its first byte; "
	 "at most 5m)"},
	{"metrics-identities", OPT_INT, O(metrics_identities), "N",
	 "client identities with metrics of their own, the rest counted as identity=\"other\" "
	 "(default 20; at most 1000)"},
	{"ocsp-staple", OPT_FLAG, O(ocsp_staple), NULL,
	 "staple an OCSP answer for the own certificate, fetched in the background (always on "
	 "for a must-staple certificate)"},
	{"protocol", OPT_STRING, O(protocol), "tcp|postgresql",
	 "postgresql: speak PostgreSQL's wire protocol around TLS, so that libpq clients "
	 "(sslmode=verify-full with sslcert and sslkey) connect straight to this server: "
	 "SSLRequest answered, PostgreSQL 17 direct TLS (ALPN postgresql), cancel requests "
	 "forwarded, plaintext clients refused with a PostgreSQL error (docs/database.md; "
	 "default tcp)"},
	{"pg-role", OPT_LIST, O(pg_role), "PATTERN=ROLE[@DATABASE]",
	 "with --protocol postgresql: the client identities matching PATTERN (as --allow-uri or "
	 "--allow-dns patterns) may log in as ROLE (and to DATABASE); * for any role or "
	 "database; repeatable. With none, every allowed identity may use any role. SIGHUP "
	 "applies a change"},
	TLS_OPTIONS,
	DAEMON_OPTIONS,
	OPT_END,
};

static const struct opt connector_table[] = {
	{"listen", OPT_STRING, O(listen), "ADDR",
	 "accept plaintext here: 127.0.0.1:PORT, [::1]:PORT or unix:/path"},
	{"listen-mode", OPT_STRING, O(listen_mode), "MODE",
	 "permissions of a unix:/path listen socket, in octal (default 0660; o+w refused)"},
	{"reuse-port", OPT_FLAG, O(reuse_port), NULL,
	 "share the --listen port with a running server/connector (SO_REUSEPORT), for a "
	 "zero-downtime upgrade; without it a port in use is refused (docs/operations.md)"},
	{"server", OPT_LIST, O(target), "HOST:PORT",
	 "the mtls server to connect to; repeatable: in order of preference, a connect that "
	 "fails (refused, unreachable, timed out) goes on to the next address, and a failed "
	 "address is skipped for a backoff of 1s doubling to 30s; every address a name resolves "
	 "to is used (IPv4 and IPv6); a name that does not resolve yet is retried, not an error"},
	{"protocol", OPT_STRING, O(protocol), "tcp|postgresql",
	 "postgresql: local clients speak plaintext PostgreSQL (libpq sslmode=disable or "
	 "prefer); the connector answers their SSLRequest with N, sends its own SSLRequest to "
	 "the server and does mutual TLS there (PostgreSQL's own TLS with clientcert=verify-full, "
	 "or mtls server --protocol postgresql; docs/database.md; default tcp)"},
	{"server-name", OPT_STRING, O(server_name), "NAME",
	 "DNS name or IP the server's certificate must carry (default: the host of the "
	 "--server each connection goes to)"},
	{"insecure-listen-remote", OPT_FLAG, O(insecure_listen_remote), NULL,
	 "allow --listen on a non-loopback address, or a unix socket every local user may "
	 "connect to (anyone who reaches it uses your identity)"},
	TLS_OPTIONS,
	DAEMON_OPTIONS,
	OPT_END,
};

/* The command line, kept for SIGHUP: the options are parsed again from it (and the
 * --config file it names, read again). */
struct parsed {
	struct tunnel_options o;
	struct options_state st;
};

struct cmdline {
	enum tunnel_role role;
	const struct opt *table;
	int argc;
	char **argv;
};

/* One tunnel of the command line: a config file's [section], or (name NULL) the only one.
 * For SIGHUP, which parses its options again: the sections running, to tell one added to the
 * file (first only: one warning for the process). */
struct section {
	const struct cmdline *cl;
	const char *name;
	const char *const *running;
	size_t nrunning;
	bool first;
};

/* Keys of the process, not of one tunnel: given before the first [section] only. */
static const char *const process_wide[] = {"log-file", "log-format",	"log-level",
					   "user",     "sandbox-allow", "insecure-no-sandbox",
					   NULL};

/* Sections in the file that do not run: a restart's (told once, by the first tunnel). */
static void tell_added(const struct section *sec, const struct options_state *st)
{
	char added[400] = "";
	size_t used = 0;

	for (size_t i = 0; i < st->nsections; i++) {
		bool runs = false;

		for (size_t j = 0; j < sec->nrunning; j++)
			runs |= strcmp(st->sections[i], sec->running[j]) == 0;
		if (!runs && used < sizeof(added)) {
			int k = snprintf(added + used, sizeof(added) - used, "%s[%s]",
					 used > 0 ? " " : "", st->sections[i]);

			used += k > 0 ? (size_t)k : 0;
		}
	}
	if (used == 0)
		return;
	log_tag_set(NULL);
	LOG(LOG_WARN, "restart_needed", LS("sections", added),
	    LS("message", "sections were added to the config file; they start at a restart (the "
			  "running tunnels reload as usual)"));
	log_tag_set(sec->name);
}

/* Parse argc/argv into p (its strings point into p->st): the options of section sec->name,
 * or with name NULL those before any section (all of them without sections). 0, 1 for
 * --help, or -1 with err. */
static int parse(const struct section *sec, struct parsed *p, char *err, size_t len)
{
	const struct cmdline *cl = sec->cl;

	tunnel_defaults(&p->o, cl->role);
	p->st.sections_allowed = true;
	p->st.section = sec->name;
	p->st.process_wide = process_wide;
	if (options_parse(cl->table, &p->o, cl->argc, cl->argv, &p->st, err, len) != 0)
		return -1;
	if (p->st.help)
		return 1;
	if (sec->first && sec->name != NULL)
		tell_added(sec, &p->st);
	if (sec->name != NULL && !p->st.section_found) {
		snprintf(err, len,
			 "section [%s] is no longer in the config file; restart the daemon to "
			 "stop a tunnel (it keeps running as it was)",
			 sec->name);
		return -1;
	}
	if (sec->name == NULL && p->st.nsections > 0 && sec->nrunning > 0) {
		/* the only tunnel: a file that has sections now is a restart's */
		snprintf(err, len,
			 "the config file has [sections] now; restart the daemon to run them (it "
			 "keeps running as it was)");
		return -1;
	}
	p->o.max_connections_given = options_given(&p->st, "max-connections");
	p->o.config_files = (struct tunnel_list){p->st.config_files, p->st.nconfig_files};
	if (p->o.max_connection_lifetime != NULL &&
	    duration_parse(p->o.max_connection_lifetime, "--max-connection-lifetime", 1000,
			   365LL * 86400000, &p->o.max_lifetime_ms, err, len) != 0)
		return -1;
	if (p->st.positional.n != 0) {
		snprintf(err, len, "unexpected argument '%s'; see --help", p->st.positional.v[0]);
		return -1;
	}
	return 0;
}

static void reparse_free(void *handle)
{
	struct parsed *p = handle;

	if (p == NULL)
		return;
	options_free(&p->st);
	free(p);
}

static void *reparse(void *arg, struct tunnel_options **out, char *err, size_t len)
{
	const struct section *sec = arg;
	struct parsed *p = calloc(1, sizeof(*p));

	if (p == NULL) {
		snprintf(err, len, "out of memory");
		return NULL;
	}
	if (parse(sec, p, err, len) != 0) {
		options_free(&p->st);
		free(p);
		return NULL;
	}

	p->o.reparse = reparse;
	p->o.reparse_arg = arg;
	p->o.reparse_free = reparse_free;
	*out = &p->o;
	return p;
}

/* The sections of p's config file, each a tunnel, in one process. */
static int run_sections(const struct cmdline *cl, const struct parsed *p)
{
	const char *name = cl->role == TUNNEL_SERVER ? "server" : "connector";
	size_t n = p->st.nsections;
	struct parsed *each = calloc(n, sizeof(*each));
	struct section *secs = calloc(n, sizeof(*secs));
	const struct tunnel_options **opts = calloc(n, sizeof(*opts));
	size_t done = 0;
	char err[512];
	int rc = 2;

	if (each == NULL || secs == NULL || opts == NULL) {
		fprintf(stderr, "mtls %s: out of memory\n", name);
		goto out;
	}
	for (; done < n; done++) {
		secs[done] = (struct section){.cl = cl,
					      .name = p->st.sections[done],
					      .running = p->st.sections,
					      .nrunning = n,
					      .first = done == 0};
		if (parse(&secs[done], &each[done], err, sizeof(err)) != 0) {
			fprintf(stderr, "mtls %s: %s\n", name, err);
			done++;
			goto out;
		}
		/* SIGHUP parses the command line and --config file again, for this section */
		each[done].o.reparse = reparse;
		each[done].o.reparse_arg = &secs[done];
		each[done].o.reparse_free = reparse_free;
		opts[done] = &each[done].o;
	}
	rc = tunnel_run_many(opts, p->st.sections, n);
out:
	for (size_t i = 0; each != NULL && i < done; i++)
		options_free(&each[i].st);
	free(each);
	free(secs);
	free(opts);
	return rc;
}

static int run(enum tunnel_role role, const struct opt *table, const char *usage, const char *about,
	       int argc, char **argv)
{
	struct cmdline cl = {.role = role, .table = table, .argc = argc, .argv = argv};
	struct section only = {.cl = &cl};
	struct parsed p = {0};
	const char *name = role == TUNNEL_SERVER ? "server" : "connector";
	char err[512];
	int rc;

	switch (parse(&only, &p, err, sizeof(err))) {
	case 0: break;
	case 1:
		options_help(stdout, usage, about, table);
		rc = 0;
		goto out;
	default:
		fprintf(stderr, "mtls %s: %s\n", name, err);
		rc = 2;
		goto out;
	}
	if (p.st.nsections > 0) {
		rc = run_sections(&cl, &p);
		goto out;
	}
	/* SIGHUP parses the command line and --config file again */
	only.nrunning = 1; /* a file with sections then is refused */
	p.o.reparse = reparse;
	p.o.reparse_arg = &only;
	p.o.reparse_free = reparse_free;
	rc = tunnel_run(&p.o);
out:
	options_free(&p.st);
	return rc;
}

int cmd_server(int argc, char **argv)
{
	return run(TUNNEL_SERVER, server_table,
		   "mtls server --listen ADDR --target ADDR --cert FILE --key FILE --ca FILE "
		   "(--allow-* | --allow-any-identity) [options]",
		   "Accept mutual TLS, require and verify the client's certificate (chain, key "
		   "usage, CRLs,\nallow rules), then carry the connection to the target. SIGHUP "
		   "or a changed file reloads\ncertificates, keys, CAs and CRLs; SIGTERM drains.",
		   argc, argv);
}

int cmd_connector(int argc, char **argv)
{
	return run(
		TUNNEL_CONNECTOR, connector_table,
		"mtls connector --listen ADDR --server HOST:PORT --cert FILE --key FILE --ca FILE "
		"[options]",
		"Accept plaintext from local applications and carry it over mutual TLS to an mtls "
		"server,\npresenting a client certificate and verifying the server's chain and "
		"name.",
		argc, argv);
}

int tunnel_cmd_parse_config(enum tunnel_role role, const char *path, struct tunnel_options *o,
			    struct options_state *st, char *err, size_t len)
{
	char *argv[] = {(char *)(uintptr_t) "--config", (char *)(uintptr_t)path, NULL};

	tunnel_defaults(o, role);
	st->sections_allowed = true;
	st->process_wide = process_wide;
	return options_parse(role == TUNNEL_SERVER ? server_table : connector_table, o, 2, argv, st,
			     err, len);
}
