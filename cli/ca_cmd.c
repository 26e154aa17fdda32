/*
 * mtls ca: the certificate authority's commands.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca_cmd.h"
#include "commands.h"
#include "grant.h"

const struct ca_command ca_commands[] = {
	{"init", cmd_ca_init, "create a root CA and an issuing (intermediate) CA"},
	{"issue", cmd_ca_issue, "issue a server, client or peer certificate (or sign a CSR)"},
	{"revoke", cmd_ca_revoke, "revoke a certificate and publish a new CRL"},
	{"crl", cmd_ca_crl, "publish a fresh CRL"},
	{"list", cmd_ca_list, "list issued certificates (filters: expiring, revoked, valid)"},
	{"inspect", cmd_ca_inspect, "show a certificate, CSR or CRL in human-readable form"},
	{"export", cmd_ca_export, "bundle a certificate and key as PKCS#12"},
	{"audit", cmd_ca_audit, "verify the hash chain of the audit log"},
	{"serve", cmd_ca_serve,
	 "serve the CA over the network: enrollment, renewal, revocation, "
	 "CRL, OCSP"},
	{"token", cmd_ca_token, "make a one-time enrollment token for the CA service"},
	{"rollover", cmd_ca_rollover, "roll the root over to a new key: begin, switch, finish"},
	{"renew-issuer", cmd_ca_renew_issuer, "renew the issuing CA (same key, new validity)"},
	{NULL, NULL, NULL},
};

const char *ca_default_dir(void)
{
	const char *d = getenv("MTLS_CA_DIR");

	return d != NULL && d[0] != '\0' ? d : "mtls-ca";
}

char *ca_shown(const char *text)
{
	size_t n = 0;
	char *out, *o;

	for (const char *p = text; *p != '\0'; p++)
		n += (unsigned char)*p < 0x20 || *p == 0x7f ? 4 : 1;
	out = malloc(n + 1);
	if (out == NULL)
		return NULL;
	o = out;
	for (const unsigned char *p = (const unsigned char *)text; *p != '\0'; p++)
		if (*p < 0x20 || *p == 0x7f)
			o += snprintf(o, 5, "\\x%02x", *p);
		else
			*o++ = (char)*p;
	*o = '\0';
	return out;
}

void ca_fail(const char *cmd, const char *msg)
{
	char *shown = ca_shown(msg);

	/* one line, whatever a path or name in it holds */
	fprintf(stderr, "mtls ca %s: %s\n", cmd, shown != NULL ? shown : "out of memory");
	free(shown);
}

void ca_failf(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	char *msg = NULL;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	ca_fail(cmd, n >= 0 ? msg : "out of memory");
	if (n >= 0)
		free(msg);
}

int ca_names_add(const struct ca_names *n, struct grant *g, char *err, size_t len)
{
	char why[512];

	for (size_t i = 0; i < n->dns.n; i++)
		if (grant_add_dns(&g->names, n->dns.v[i], err, len) != 0)
			return -1;
	for (size_t i = 0; i < n->ip.n; i++)
		if (grant_add_ip(&g->names, n->ip.v[i], err, len) != 0)
			return -1;
	for (size_t i = 0; i < n->uri.n; i++)
		if (grant_add_uri(&g->names, n->uri.v[i], err, len) != 0)
			return -1;
	if (n->cn != NULL && grant_set_cn(g, n->cn, why, sizeof(why)) != 0) {
		snprintf(err, len, "invalid --cn: %s", why);
		return -1;
	}
	return 0;
}

int ca_parse(const char *cmd, const char *usage, const char *about, const struct opt *table,
	     void *target, int argc, char **argv, struct options_state *st)
{
	char err[512];

	if (options_parse(table, target, argc, argv, st, err, sizeof(err)) != 0) {
		ca_fail(cmd, err);
		return 2;
	}
	if (st->help) {
		options_help(stdout, usage, about, table);
		return 0;
	}
	return -1;
}

static void ca_usage(FILE *out)
{
	fprintf(out, "usage: mtls ca COMMAND [options]\n\nthe built-in certificate authority\n\n"
		     "commands:\n");
	for (const struct ca_command *c = ca_commands; c->name != NULL; c++)
		fprintf(out, "  %-9s %s\n", c->name, c->summary);
	fprintf(out, "\nThe CA lives in --dir (default $MTLS_CA_DIR or ./mtls-ca).\n"
		     "mtls ca COMMAND --help describes each command's options.\n");
}

int cmd_ca(int argc, char **argv)
{
	if (argc < 1) {
		ca_usage(stderr);
		return 2;
	}
	if (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0 ||
	    strcmp(argv[0], "help") == 0) {
		ca_usage(stdout);
		return 0;
	}
	if (strcmp(argv[0], "--version") == 0) {
		options_version(stdout);
		return 0;
	}
	for (const struct ca_command *c = ca_commands; c->name != NULL; c++)
		if (strcmp(argv[0], c->name) == 0)
			return c->run(argc - 1, argv + 1);
	{
		char *shown = ca_shown(argv[0]);

		fprintf(stderr,
			"mtls ca: unknown command '%s'; run 'mtls ca --help' for the list\n",
			shown != NULL ? shown : "?");
		free(shown);
	}
	return 2;
}
