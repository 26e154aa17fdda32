/*
 * Shared by the `mtls ca` subcommands.
 */
#ifndef MTLS_CLI_CA_CMD_H
#define MTLS_CLI_CA_CMD_H

#include "options.h"

/* Option-table entries shared by the CA commands; O is the command's offsetof() macro and
 * the fields are named dir, passphrase_file, passphrase_env and config. */
#define CA_OPT_DIR(O)                                                                              \
	{                                                                                          \
		"dir", OPT_STRING, O(dir), "DIR",                                                  \
			"CA directory (default $MTLS_CA_DIR or ./mtls-ca)"                         \
	}
#define CA_OPT_PASSPHRASE(O)                                                                       \
	{"passphrase-file", OPT_STRING, O(passphrase_file), "FILE",                                \
	 "passphrase of the CA key (its token's PIN if on one), from FILE"},                       \
	{                                                                                          \
		"passphrase-env", OPT_STRING, O(passphrase_env), "VAR",                            \
			"passphrase of the CA key (its token's PIN if on one), from environment "  \
			"variable VAR"                                                             \
	}
/* The names a certificate (mtls ca issue) or a token (mtls ca token) is for, and their
 * option-table entries: O is the command's offsetof() macro, the field is named names,
 * cn_help is the help of --cn and granted is "" or " granted", put after each name's kind. */
struct ca_names {
	const char *cn;
	struct opt_list dns;
	struct opt_list ip;
	struct opt_list uri;
};
#define CA_OPT_NAMES(O, cn_help, granted)                                                          \
	{"cn", OPT_STRING, O(names.cn), "NAME", cn_help},                                          \
		{"dns", OPT_LIST, O(names.dns), "NAME", "DNS name" granted " (subjectAltName)"},   \
		{"ip", OPT_LIST, O(names.ip), "ADDR", "IP address" granted " (subjectAltName)"},   \
	{                                                                                          \
		"uri", OPT_LIST, O(names.uri), "URI",                                              \
			"URI such as a SPIFFE ID" granted " (subjectAltName)"                      \
	}
#define CA_OPT_CONFIG(O)                                                                           \
	{                                                                                          \
		"config", OPT_STRING, O(config), "FILE", "read options from FILE"                  \
	}

/* The CA directory when --dir is not given: $MTLS_CA_DIR, else ./mtls-ca. */
const char *ca_default_dir(void);
/* Parse options; on error or --help print and return the exit status (>= 0), else -1. */
int ca_parse(const char *cmd, const char *usage, const char *about, const struct opt *table,
	     void *target, int argc, char **argv, struct options_state *st);
/* Print "mtls ca CMD: message" to stderr, in one line: control bytes (a newline in a file
 * name, an escape sequence) shown as \xNN. */
void ca_fail(const char *cmd, const char *msg);
void ca_failf(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* text with control bytes shown as \xNN (for a file name in a message or the audit log);
 * the caller frees it; NULL if out of memory. */
char *ca_shown(const char *text);
struct grant;
/* Add the names to g (after grant_init()), each checked as ca/grant.h checks it; the grant
 * as a whole is left to grant_check(). 0, or -1 with the message in err. */
int ca_names_add(const struct ca_names *n, struct grant *g, char *err, size_t len);

/* The mtls ca subcommands, NULL-terminated (cli/ca_cmd.c); the docs generator walks them. */
struct ca_command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
};
extern const struct ca_command ca_commands[];

int cmd_ca_init(int argc, char **argv);
int cmd_ca_issue(int argc, char **argv);
int cmd_ca_revoke(int argc, char **argv);
int cmd_ca_crl(int argc, char **argv);
int cmd_ca_list(int argc, char **argv);
int cmd_ca_audit(int argc, char **argv);
int cmd_ca_inspect(int argc, char **argv);
int cmd_ca_export(int argc, char **argv);
int cmd_ca_serve(int argc, char **argv);
int cmd_ca_token(int argc, char **argv);
int cmd_ca_rollover(int argc, char **argv);
int cmd_ca_renew_issuer(int argc, char **argv);

#endif
