/*
 * mtls doctor: find why a connection fails, and say what to do.
 *
 *   mtls doctor --server HOST:PORT [--cert F --key F --ca F] [--name N] [--timeout 5s]
 *       from a client host: the local files, then the server as the network shows it
 *   mtls doctor --config FILE [--user NAME]
 *       on a server host: a daemon's config, offline
 *
 * Exit 0 when a connection would succeed (no finding failed), 1 when not, 2 for usage.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/x509v3.h>

#include "commands.h"
#include "doctor.h"
#include "duration.h"
#include "options.h"

struct doctor_opts {
	const char *server;
	const char *cert;
	const char *key;
	const char *ca;
	const char *name;
	const char *timeout;
	const char *user;
	int json;
};

#define O(f) offsetof(struct doctor_opts, f)
#define DOCTOR_OPTIONS                                                                             \
	{"server", OPT_STRING, O(server), "HOST:PORT",                                             \
	 "the mtls server to examine, from this (client) host"},                                   \
		{"cert", OPT_STRING, O(cert), "FILE", "the client certificate chain to present"},  \
		{"key", OPT_STRING, O(key), "FILE", "its private key"},                            \
		{"ca", OPT_STRING, O(ca), "FILE",                                                  \
		 "the CA bundle the server's chain must lead to (the connector's --ca)"},          \
		{"name", OPT_STRING, O(name), "NAME",                                              \
		 "the name the server's certificate must carry (default: the --server host)"},     \
		{"timeout", OPT_STRING, O(timeout), "DURATION",                                    \
		 "for each connection and handshake (default 5s)"},                                \
		{"user", OPT_STRING, O(user), "NAME",                                              \
		 "with --config: the user the daemon runs as (default: its --user, else you)"},    \
	{                                                                                          \
		"json", OPT_FLAG, O(json), NULL, "print the findings as one JSON object"           \
	}

/* "config" is not in the parsing table: options_parse() would read the file as doctor
 * options; it is taken out of argv first (take_config()). */
static const struct opt doctor_table[] = {DOCTOR_OPTIONS, OPT_END};
static const struct opt help_table[] = {
	DOCTOR_OPTIONS,
	{"config", OPT_STRING, 0, "FILE",
	 "check this mtls server or connector config offline, on its host"},
	OPT_END,
};

static const char doctor_usage[] =
	"mtls doctor --server HOST:PORT [--cert FILE --key FILE --ca FILE] [--name NAME]\n"
	"       mtls doctor --config FILE [--user NAME]";
static const char doctor_about[] =
	"Explain why a mutual TLS connection fails, one finding a line (ok, warn, fail) with\n"
	"the fix for each problem. With --server, from a client host: TCP, TLS, the server's\n"
	"chain, name and validity against --ca, the CA names the server asks for, the local\n"
	"certificate and key, and the server's verdict on them (its alert). With --config, on\n"
	"a server host: the daemon's files, their permissions for its user, key and chain,\n"
	"expiry and renewal, CRLs and allow rules, without starting it.\n"
	"Exit status: 0 a connection would succeed, 1 it would not, 2 usage error.\n"
	"See docs/doctor.md for what each finding means.";

/* Take "--config FILE" / "--config=FILE" out of argv (in place). -1 if given without a
 * value or twice. */
static int take_config(int *argc, char **argv, const char **config)
{
	int o = 0;

	for (int i = 0; i < *argc; i++) {
		if (strcmp(argv[i], "--") == 0) {
			while (i < *argc)
				argv[o++] = argv[i++];
			break;
		}
		if (strcmp(argv[i], "--config") == 0 || strncmp(argv[i], "--config=", 9) == 0) {
			if (*config != NULL)
				return -1;
			if (argv[i][8] == '=')
				*config = argv[i] + 9;
			else if (i + 1 < *argc)
				*config = argv[++i];
			else
				return -1;
			if ((*config)[0] == '\0')
				return -1;
			continue;
		}
		argv[o++] = argv[i];
	}
	*argc = o;
	return 0;
}

int cmd_doctor(int argc, char **argv)
{
	struct doctor_opts o = {0};
	struct options_state st = {0};
	struct doctor_report r = {0};
	struct doctor_local l = {0};
	const char *config = NULL;
	long long timeout_ms = 5000;
	char **args = NULL, err[600];
	time_t now = time(NULL);
	int rc = 2;

	/* a server that closes on us must not kill the doctor (OpenSSL writes with write()) */
	signal(SIGPIPE, SIG_IGN);
	args = calloc((size_t)argc + 1, sizeof(*args));
	if (args == NULL) {
		fprintf(stderr, "mtls doctor: out of memory\n");
		return 2;
	}
	memcpy(args, argv, (size_t)argc * sizeof(*args));
	if (take_config(&argc, args, &config) != 0) {
		fprintf(stderr, "mtls doctor: give --config FILE once; see mtls doctor --help\n");
		goto out;
	}
	if (options_parse(doctor_table, &o, argc, args, &st, err, sizeof(err)) != 0) {
		fprintf(stderr, "mtls doctor: %s\n", err);
		goto out;
	}
	if (st.help) {
		options_help(stdout, doctor_usage, doctor_about, help_table);
		rc = 0;
		goto out;
	}
	if (st.positional.n != 0) {
		fprintf(stderr, "mtls doctor: unexpected argument '%s'; see mtls doctor --help\n",
			st.positional.v[0]);
		goto out;
	}
	if ((o.server == NULL) == (config == NULL)) {
		fprintf(stderr, "mtls doctor: give --server HOST:PORT (from a client host) or "
				"--config FILE (on the server host); see mtls doctor --help\n");
		goto out;
	}
	if (o.timeout != NULL && duration_parse(o.timeout, "--timeout", 100, 300000, &timeout_ms,
						err, sizeof(err)) != 0) {
		fprintf(stderr, "mtls doctor: %s\n", err);
		goto out;
	}
	if (config != NULL) {
		if (o.cert != NULL || o.key != NULL || o.ca != NULL || o.name != NULL) {
			fprintf(stderr, "mtls doctor: --config takes its files from the config; "
					"--cert, --key, --ca and --name go with --server\n");
			goto out;
		}
		if (doctor_config_run(config, o.user, now, &r, err, sizeof(err)) != 0) {
			fprintf(stderr, "mtls doctor: %s\n", err);
			goto out;
		}
	} else {
		struct doctor_probe_opts po = {
			.server = o.server, .name = o.name, .timeout_ms = (int)timeout_ms};

		if (o.user != NULL) {
			fprintf(stderr, "mtls doctor: --user goes with --config\n");
			goto out;
		}
		l.cert_path = o.cert;
		l.key_path = o.key;
		l.ca_path = o.ca;
		doctor_local_check(&l, X509_PURPOSE_SSL_CLIENT, now, &r);
		if (o.cert == NULL && o.key == NULL)
			doctor_report_add(
				&r, DOCTOR_WARN, "cert",
				"give --cert and --key: the files a connector presents",
				"no --cert and --key given: the server is asked as by a client "
				"without a certificate");
		if (doctor_probe_run(&po, &l, now, &r, err, sizeof(err)) != 0) {
			fprintf(stderr, "mtls doctor: %s\n", err);
			goto out;
		}
	}
	doctor_report_print(&r, stdout, o.json);
	rc = r.fails == 0 && !r.oom ? 0 : 1;
out:
	doctor_local_free(&l);
	doctor_report_free(&r);
	options_free(&st);
	free(args);
	return rc;
}
