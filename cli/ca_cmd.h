/*
 * Shared by the `mtls ca` subcommands.
 */
#ifndef MTLS_CLI_CA_CMD_H
#define MTLS_CLI_CA_CMD_H

#include "options.h"

/* The CA directory when --dir is not given: $MTLS_CA_DIR, else ./mtls-ca. */
const char *ca_default_dir(void);
/* Parse options; on error or --help print and return the exit status (>= 0), else -1. */
int ca_parse(const char *cmd, const char *usage, const char *about, const struct opt *table,
	     void *target, int argc, char **argv, struct options_state *st);
/* Print "mtls ca CMD: message" to stderr. */
void ca_fail(const char *cmd, const char *msg);

int cmd_ca_init(int argc, char **argv);
int cmd_ca_issue(int argc, char **argv);
int cmd_ca_revoke(int argc, char **argv);
int cmd_ca_crl(int argc, char **argv);
int cmd_ca_list(int argc, char **argv);
int cmd_ca_audit(int argc, char **argv);
int cmd_ca_inspect(int argc, char **argv);
int cmd_ca_export(int argc, char **argv);

#endif
