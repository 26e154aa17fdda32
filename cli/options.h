/*
 * One option table per command drives its command-line flags, its config file keys and its
 * --help text (curl's tool options and .curlrc).
 *
 * A config file has one "key value" or "key = value" per line, the keys being the long
 * option names without "--"; blank lines and lines starting with '#' are ignored. A list
 * option may appear several times. Command-line flags given after --config override it.
 */
#ifndef MTLS_CLI_OPTIONS_H
#define MTLS_CLI_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum opt_type {
	OPT_FLAG,   /* int, set to 1 */
	OPT_STRING, /* const char * (points into argv or the config file text) */
	OPT_INT,    /* long long */
	OPT_LIST,   /* struct opt_list, repeatable */
};

struct opt_list {
	const char **v;
	size_t n;
};

struct opt {
	const char *name; /* long name, without "--" */
	enum opt_type type;
	size_t offset;	 /* of the field in the command's option struct */
	const char *arg; /* placeholder in --help ("FILE"), NULL for flags */
	const char *help;
};

#define OPT_END                                                                                    \
	{                                                                                          \
		NULL, OPT_FLAG, 0, NULL, NULL                                                      \
	}

/* Parse argv (after the command name) into target. Positional arguments are collected in
 * *positional (allocated). "--config FILE" reads a config file at that point. "--help" sets
 * *help. Returns 0, or -1 with a one-line message in err. Config file texts stay allocated
 * (strings point into them) until options_free(). */
struct options_state {
	struct opt_list positional;
	int help;
	char **texts;
	size_t ntexts;
	struct opt_list *lists[32];
	size_t nlists;
	const struct opt *given[64]; /* the options given (once each), for options_given() */
	size_t ngiven;
};

int options_parse(const struct opt *table, void *target, int argc, char **argv,
		  struct options_state *state, char *err, size_t err_len);
/* Parse a config file's text of len bytes (text[len] must be NUL; modified in place).
 * origin names it in messages. A NUL or a control byte other than tab (and CR before a
 * newline) anywhere in the text refuses the whole file. */
int options_parse_text(const struct opt *table, void *target, char *text, size_t len,
		       const char *origin, struct options_state *state, char *err, size_t err_len);
void options_free(struct options_state *state);
/* Whether option name was given, on the command line or in a config file: a default may be
 * adjusted where an explicit value is refused (mtls server --max-connections). */
bool options_given(const struct options_state *state, const char *name);
void options_help(FILE *out, const char *usage, const char *about, const struct opt *table);

#endif /* MTLS_CLI_OPTIONS_H */
