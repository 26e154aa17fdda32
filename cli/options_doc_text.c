/*
 * The hand-written parts of the man pages and of docs/config.md: what the option tables
 * cannot say (how a command behaves, its signals, files and exit status). The options
 * themselves are never listed here: options_doc.c takes them from the tables.
 */
#include <stddef.h>

#include "options_doc.h"

const char options_doc_grammar[] =
	"A config file holds one option a line, as \"key value\" or \"key = value\"; the keys "
	"are the long option names without \"--\". Blank lines are ignored.\n\n"
	"    # /etc/mtls/server/db.conf\n"
	"    listen    = 0.0.0.0:8443\n"
	"    target      127.0.0.1:5432\n"
	"    cert      /etc/mtls/server/db-chain.pem\n"
	"    key       '/etc/mtls/server/db key.pem'   # a blank in the name: quote it\n"
	"    ca        /etc/mtls/ca.pem\n"
	"    allow-uri 'spiffe://example.org/ns/prod/sa/*'\n"
	"    allow-uri \"spiffe://example.org/ns/prod/sa/report\"\n"
	"    proxy-protocol\n\n"
	"- Comments: a '#' at the start of a line (after blanks), or after a blank outside "
	"quotes, starts a comment that runs to the end of the line. A '#' inside a word "
	"(/a#b) is part of it.\n\n"
	"- Unquoted values run to the end of the line or to a blank followed by '#'; blanks "
	"inside are kept, blanks at the end dropped. A quote inside an unquoted value is "
	"refused: quote the whole value.\n\n"
	"- 'Single quotes' keep everything between them as it is, with no escapes (a value "
	"holding a single quote goes in double quotes).\n\n"
	"- \"Double quotes\" take the escapes \\\\ \\\" \\n and \\t; any other backslash is "
	"refused (write \\\\ for a backslash).\n\n"
	"- A quoted value ends on the same line; after the closing quote only blanks and a "
	"comment may follow. An empty value ('') is refused where a value is needed.\n\n"
	"- Flags (options without an argument) given alone mean true; they also take true, "
	"false, yes, no, on, off, 1 or 0.\n\n"
	"- List options (allow-uri, crl, ... marked \"repeatable\" below) may be given on "
	"several lines, each adding one value. Any other key given twice in one file is "
	"refused, naming both lines: a file says one thing, and nobody has to know whether the "
	"first or the last wins.\n\n"
	"- Options given on the command line after --config override the file's value (a list "
	"adds to it). The key config itself is refused in a file.\n\n"
	"- A NUL byte or a control byte other than tab (and CR before a newline) refuses the "
	"whole file, and so does a C1 control character (U+0080 to U+009F; a terminal obeys "
	"them in messages that quote the line). A UTF-8 byte order mark at the very start is "
	"skipped (editors that save \"UTF-8 with BOM\" write one); anywhere else it is an "
	"error.\n\n"
	"Every error is one line, FILE:LINE: what is wrong; what to write instead, and the "
	"command exits with status 2 before it starts anything. On SIGHUP the daemons read the "
	"file again; a file that no longer parses is refused and nothing changes. mtls doctor "
	"--config FILE checks a daemon's file offline.";

const char options_doc_sections[] =
	"Several tunnels in one process (mtls server and mtls connector): a line \"[name]\" "
	"starts a section, and each section is a tunnel of its own, with its own listen "
	"address, target, certificates, allow rules, metrics address, workers, CRL, OCSP and "
	"renewal. A name is 1 to 32 letters, digits, '.', '_' or '-', starting with a letter "
	"or a digit, and names one section only. The keys before the first section are every "
	"section's defaults; a key in a section replaces its default, and a list key's lines "
	"in a section replace the default list as a whole (nothing is merged). log-file, "
	"log-format, log-level and user are the process's: they may only come before the "
	"first section. Options on the command line after --config apply to every section. A "
	"file with sections must be the only --config.\n\n"
	"    log-format json\n"
	"    user       mtls\n"
	"    ca         /etc/mtls/ca.pem\n"
	"    [db]\n"
	"    listen     0.0.0.0:8443\n"
	"    target     127.0.0.1:5432\n"
	"    cert       /etc/mtls/server/db-chain.pem\n"
	"    key        /etc/mtls/server/db.key\n"
	"    allow-uri  'spiffe://example.org/ns/prod/sa/billing'\n"
	"    metrics    127.0.0.1:9101\n"
	"    [api]\n"
	"    listen     0.0.0.0:9443\n"
	"    target     127.0.0.1:8080\n"
	"    cert       /etc/mtls/server/api-chain.pem\n"
	"    key        /etc/mtls/server/api.key\n"
	"    allow-uri  'spiffe://example.org/ns/prod/sa/*'\n"
	"    metrics    127.0.0.1:9102\n\n"
	"Every section is checked before any socket is opened; an error names the section "
	"(mtls server: [api] ...), and two sections on one address (a wildcard covers the "
	"others on its port), renewing one certificate or fetching into one crl-cache are "
	"refused. The descriptor limit is shared: a section with max-connections gets what it "
	"needs, the others share the rest. Each log line "
	"of a section carries \"tunnel\":\"name\" (logfmt tunnel=name), and its /status "
	"says \"tunnel\". On SIGHUP each section reloads its own keys; a section with an "
	"error keeps its configuration while the others reload (systemd hears READY=1 once, "
	"after the last, with the first failure), and adding or removing a section takes a "
	"restart (restart_needed, reload_failed). SIGTERM drains every "
	"section. A .socket unit (socket activation) serves one tunnel: a file with sections "
	"is refused under one. Other commands refuse sections.\n\n";

const char options_doc_overview[] =
	"mtls verifies, issues and carries mutual TLS between services: a tunnel server and "
	"connector, a certificate authority with a network service, enrollment and renewal of "
	"certificates, an agent that keeps other services' certificates fresh, and a doctor that "
	"explains failed connections.\n\n"
	"Options are long (--name value or --name=value). Every command describes its options "
	"with --help and prints the version line with --version, whatever else is given. Most "
	"commands also read their options from a --config file (see mtls-server(8) and "
	"docs/config.md for the grammar).\n\n"
	"A DURATION is a whole number and a unit: 500ms, 30s, 10m, 2h, 1d; a bare number is "
	"refused (seconds or milliseconds?) except 0, which means off or none where an option "
	"allows it.";

const char options_doc_overview_after[] =
	"Each command has a page of its own, listed below; "
	"docs/ in the source tree holds the guides (ca.md, ca-service.md, operations.md, "
	"rollout.md, agent.md, doctor.md, config.md).";

#define DAEMON_SIGNALS                                                                             \
	"SIGHUP reloads: certificates, keys, passphrases, CAs and CRLs are read again, and the "   \
	"command line and its --config file are parsed again, so changed allow rules and file "    \
	"names take effect without dropping connections; every live connection is then judged "    \
	"again and one now refused is closed (conn_rejudged). Options only a restart applies "     \
	"(--listen, --target, --workers, the timeouts, --metrics) keep their value and are "       \
	"named in a restart_needed warning; a file that no longer parses is refused "              \
	"(reload_failed) and nothing changes. A changed certificate, key, CA or CRL file is "      \
	"loaded the same way once it has stayed unchanged for 1 s (--watch-interval).\n\n"         \
	"SIGUSR1 reopens --log-file by its name, for logrotate (move the file, then send "         \
	"SIGUSR1; no copytruncate needed).\n\n"                                                    \
	"SIGTERM (and SIGINT) stop accepting and drain: open connections get --drain-timeout to "  \
	"end, then the daemon exits 0."

#define DAEMON_EXIT                                                                                \
	"0 after a drain on SIGTERM; 1 a failure while running; 2 a usage or configuration "       \
	"error, found before anything is started (a bad option, a config file error naming "       \
	"FILE:LINE, an unreadable or expired certificate, a port in use)."

const struct options_doc_page options_doc_pages[] = {
	{
		.command = "server",
		.section = 8,
		.description =
			"The server requires a client certificate, verifies its chain against "
			"--ca, its key usage, revocation (--crl, --crl-url, --ocsp) and the allow "
			"rules (--allow-uri, --allow-dns, --allow-cn, --allow-email, --allow-spki, "
			"--allow-cert, or --allow-any-identity), and only then connects to "
			"--target and carries the bytes both ways. Every refusal is one log line "
			"with its reason (identity_not_allowed, revoked, expired, ...).\n\n"
			"With --ca-url the certificate and key renew themselves at the CA service "
			"(mtls ca serve) at two thirds of their life, swapped in by a reload "
			"without "
			"dropping connections. --metrics serves Prometheus /metrics, /healthz, "
			"/readyz and /status over plain HTTP.\n\n"
			"    mtls server --listen 0.0.0.0:8443 --target 127.0.0.1:5432 \\\n"
			"        --cert db-chain.pem --key db.key --ca ca.pem \\\n"
			"        --allow-uri 'spiffe://example.org/ns/prod/sa/*'",
		.config = "mtls server --config /etc/mtls/server/NAME.conf takes every option "
			  "below as a key.",
		.signals = DAEMON_SIGNALS,
		.files = "/etc/mtls/server/NAME.conf: the config file of the systemd unit "
			 "mtls-server@NAME.service, which runs as the user mtls with its state in "
			 "/var/lib/mtls and logs to the journal; mtls-server@NAME.socket activates "
			 "it on its socket (docs/systemd.md).",
		.exit_status = DAEMON_EXIT,
		.see_also = "mtls(1), mtls-connector(8), mtls-ca(1), mtls-doctor(1), "
			    "mtls-verify(1)",
	},
	{
		.command = "connector",
		.section = 8,
		.description =
			"The connector listens on loopback (or a unix socket) for plaintext "
			"clients, connects to the mtls server at --server presenting --cert, "
			"verifies the server's chain against --ca and its name (--server-name, "
			"default the --server host), and carries the bytes both ways. It takes the "
			"same TLS, revocation, renewal and daemon options as the server.\n\n"
			"    mtls connector --listen 127.0.0.1:15432 --server db.internal:8443 \\\n"
			"        --cert app-chain.pem --key app.key --ca ca.pem",
		.config = "mtls connector --config /etc/mtls/connector/NAME.conf takes every "
			  "option below as a key; mtls enroll writes such a file (mtls.conf).",
		.signals = DAEMON_SIGNALS,
		.files = "/etc/mtls/connector/NAME.conf: the config file of the systemd unit "
			 "mtls-connector@NAME.service.",
		.exit_status = DAEMON_EXIT,
		.see_also = "mtls(1), mtls-server(8), mtls-enroll(1), mtls-doctor(1)",
	},
	{
		.command = "agent",
		.section = 8,
		.description =
			"The agent is for services that are not mtls: PostgreSQL's own TLS, a "
			"program embedding libmtls, a brpc service. The certificate must carry "
			"clientAuth, as it authenticates its own renewal. After every change (a "
			"renewal, new roots, copies rewritten) the hook runs: --exec CMD with "
			"/bin/sh -c and MTLS_CERT, MTLS_KEY, MTLS_CA, MTLS_SERIAL, "
			"MTLS_OLD_SERIAL, "
			"MTLS_NOT_AFTER, MTLS_EVENT and MTLS_DIR in its environment, then --signal "
			"or --pid-file gets --signal-name. A failed hook is retried with backoff. "
			"See docs/agent.md.",
		.signals = "SIGHUP renews at once. SIGTERM and SIGINT stop the agent (exit 0).",
		.files = "/etc/mtls/agent/NAME.conf: the config file of the systemd unit "
			 "mtls-agent@NAME.service (--config; docs/config.md). "
			 "--metrics-file is rewritten "
			 "atomically for node_exporter's textfile collector.",
		.exit_status = "0 stopped by a signal, or with --once renewed or not due; 1 a "
			       "failure (renewal, copy or hook); 2 a usage error.",
		.see_also = "mtls(1), mtls-enroll(1), mtls-renew(1), mtls-ca(1)",
	},
	{
		.command = "ca",
		.section = 1,
		.description =
			"The CA lives in a directory (--dir, default $MTLS_CA_DIR or ./mtls-ca): "
			"the root and issuing certificates and keys, the inventory (SQLite, or "
			"PostgreSQL with ca init --store), the CRL and a hash-chained audit log. "
			"Each subcommand below has its own options; every change is committed to "
			"the inventory first and the files derived from it written after, "
			"atomically. See docs/ca.md and docs/ca-service.md.\n\n"
			"    mtls ca init --dir /var/lib/mtls/ca\n"
			"    mtls ca issue --dir /var/lib/mtls/ca --profile server --dns "
			"db.internal "
			"--out db\n"
			"    mtls ca token --dir /var/lib/mtls/ca --profile client --uri "
			"spiffe://example.org/app",
		.config = "The subcommands that take --config read their options from it.",
		.signals = "mtls ca serve: SIGTERM and SIGINT stop the service.",
		.files = "/etc/mtls/ca.conf: the config file of mtls-ca.service (mtls ca serve), "
			 "which keeps the CA in /var/lib/mtls.",
		.exit_status = "0 success; 1 a failure (mtls ca audit: the log and the inventory "
			       "disagree); 2 a usage error.",
		.see_also = "mtls(1), mtls-enroll(1), mtls-server(8), openssl-x509(1)",
	},
	{
		.command = "enroll",
		.section = 1,
		.description =
			"The token (mtls ca token) pins the CA's root: the root bundle is fetched "
			"from the token's URL and kept only if it holds that root, and every later "
			"request verifies the server against it. The key is made here; the CA puts "
			"the token's names in the certificate. DIR (created 0700) receives, all "
			"together or not at all: key.pem (0600), cert.pem, ca.pem, ca-url and "
			"mtls.conf, a config file for mtls server or mtls connector --config.",
		.files = "DIR/key.pem, DIR/cert.pem, DIR/ca.pem, DIR/ca-url, DIR/mtls.conf.",
		.exit_status = "0 enrolled; 1 refused or failed (the CA's message; nothing "
			       "written); 2 a usage error.",
		.see_also = "mtls(1), mtls-renew(1), mtls-ca(1), mtls-connector(8)",
	},
	{
		.command = "renew",
		.section = 1,
		.description = "cert.pem and key.pem are staged, then the chain is published "
			       "and then its key; if the key cannot be, the old chain is put back, "
			       "so the two always match.",
		.files = "DIR/cert.pem, DIR/key.pem, DIR/ca.pem, DIR/ca-url (mtls enroll).",
		.exit_status = "0 renewed or not due; 1 a failure (the CA's message); 2 a usage "
			       "error.",
		.see_also = "mtls(1), mtls-enroll(1), mtls-agent(8)",
	},
	{
		.command = "verify",
		.section = 1,
		.description =
			"The chain is verified exactly as mtls server (--purpose client, "
			"the default) or mtls connector (--purpose server) would, with the "
			"same allow rules and revocation checks, and the result explained "
			"with its reason. The system trust store is never used.\n\n"
			"    mtls verify --ca ca.pem --crl crl.pem \\\n"
			"        --allow-uri 'spiffe://example.org/ns/prod/sa/*' client.pem\n"
			"    mtls verify --ca ca.pem --purpose server --dns db.example.org "
			"server.pem",
		.exit_status = "0 accepted; 1 refused (the reason code and message are printed); "
			       "2 a usage or configuration error.",
		.see_also = "mtls(1), mtls-server(8), mtls-doctor(1), openssl-verify(1)",
	},
	{
		.command = "doctor",
		.section = 1,
		.exit_status = "0 a connection would succeed (no finding failed); 1 it would "
			       "not; 2 a usage error.",
		.see_also = "mtls(1), mtls-server(8), mtls-connector(8), mtls-verify(1)",
	},
	{NULL, 0, NULL, NULL, NULL, NULL, NULL, NULL},
};
