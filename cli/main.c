/*
 * mtls: one binary, one subcommand per job.
 */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "mtls.h"

const struct command commands[] = {
	{"verify", cmd_verify, "verify a certificate as a server or connector would, and explain"},
	{"server", cmd_server, "accept mutual TLS and carry verified clients to a target"},
	{"connector", cmd_connector, "carry local plaintext to an mtls server over mutual TLS"},
	{"ca", cmd_ca,
	 "the certificate authority: init, issue, revoke, crl, list, audit, serve, token"},
	{"enroll", cmd_enroll, "get a certificate from the CA service with a one-time token"},
	{"renew", cmd_renew, "renew an enrolled certificate at the CA service (mtls ca serve)"},
	{"agent", cmd_agent,
	 "keep a service's certificate renewed (PostgreSQL, libmtls, brpc): files and a hook"},
	{"doctor", cmd_doctor,
	 "explain why a connection fails: a server from a client host, or a daemon's config"},
	{NULL, NULL, NULL},
};

static void usage(FILE *out)
{
	fprintf(out,
		"usage: mtls COMMAND [options]\n\nmutual TLS for services (version %s)\n\n"
		"commands:\n",
		MTLS_VERSION_STRING);
	for (const struct command *c = commands; c->name != NULL; c++)
		fprintf(out, "  %-10s %s\n", c->name, c->summary);
	fprintf(out, "  %-10s %s\n", "version", "print the version");
	fprintf(out, "\nmtls COMMAND --help describes each command's options.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
		printf("mtls %s\n", MTLS_VERSION_STRING);
		return 0;
	}
	/* hidden: writes docs/config.md, docs/man/ and completion/mtls from the option tables */
	if (strcmp(argv[1], "__generate-docs") == 0)
		return options_doc_main(argc - 2, argv + 2);
	for (const struct command *c = commands; c->name != NULL; c++)
		if (strcmp(argv[1], c->name) == 0)
			return c->run(argc - 2, argv + 2);
	fprintf(stderr, "mtls: unknown command '%s'; run 'mtls --help' for the list\n", argv[1]);
	return 2;
}
