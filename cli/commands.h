/*
 * The subcommands of the mtls command. Each takes the arguments after its name and returns
 * the process exit status.
 */
#ifndef MTLS_CLI_COMMANDS_H
#define MTLS_CLI_COMMANDS_H

#include <stdbool.h>
#include <stddef.h>

/* The subcommands, NULL-terminated (cli/main.c): mtls --help and the docs generator
 * (options_doc.c) walk them. */
struct command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
};
extern const struct command commands[];
/* mtls __generate-docs DIR (options_doc.c). */
int options_doc_main(int argc, char **argv);

int cmd_verify(int argc, char **argv);
int cmd_ca(int argc, char **argv);
int cmd_server(int argc, char **argv);
int cmd_connector(int argc, char **argv);
int cmd_enroll(int argc, char **argv);
int cmd_renew(int argc, char **argv);
int cmd_agent(int argc, char **argv);
int cmd_doctor(int argc, char **argv);

#endif /* MTLS_CLI_COMMANDS_H */
