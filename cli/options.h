/*
 * One option table per command drives its command-line flags, its config file keys and its
 * --help text (curl's tool options and .curlrc).
 *
 * A config file (--config FILE; docs/config.md, generated from the tables, says the same):
 *
 *   - One option a line: "key value" or "key = value", the key being the long option name
 *     without "--". Blank lines are ignored.
 *   - A comment starts with '#' at the start of a line (after blanks) or after a blank
 *     outside quotes, and runs to the end of the line: "cert /a.pem  # ours".
 *   - A value is unquoted, 'single-quoted' or "double-quoted", on one line:
 *       unquoted: up to a blank followed by '#', or the end of the line; blanks inside are
 *         kept, blanks at the end trimmed; a quote inside it is refused (quote it all);
 *       '...': literal, no escapes (a value holding ' goes in double quotes);
 *       "...": escapes \ "
	 only, any other backslash refused.
 *     After a closing quote only blanks and a comment may follow.
 *   - A flag (an option without an argument) alone means true; it also takes true/false,
 *     yes/no, on/off, 1/0. Any other option needs a value.
 *   - A list option (allow-uri, crl, ...) repeats: each line adds one. Any other key given
 *     twice in one file is refused (naming both lines): one file, one value, no guessing
 *     whether the first or the last wins. Command-line flags given after --config override
 *     the file's value.
 *   - "[name]" starts a section: several tunnels in one process (mtls server and mtls
 *     connector only; other commands refuse it). A name is 1 to OPTIONS_SECTION_NAME_MAX
 *     letters, digits, '.', '_' or '-', starting with a letter or digit; a comment may
 *     follow the ']'. A name given twice is refused. The keys before the first section are
 *     every section's defaults; a section's key replaces its default, a list key's lines
 *     in a section replace the default list as a whole. The keys a command names process-
 *     wide (state->process_wide) are refused in a section. A key twice in one section is
 *     refused as above.
 *   - The key "config" (a file naming another) is refused; so are unknown keys, NUL and
 *     control bytes other than tab (and CR before a newline), and C1 controls (U+0080 to
 *     U+009F). A UTF-8 byte order mark at the very start is skipped.
 * Every error is one line "FILE:LINE: what is wrong; what to write" and the command exits 2
 * before it starts anything.
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
	/* long long milliseconds, written with a unit ("500ms", "30s", "2m"; duration.h); a
	 * bare number other than 0 is refused with what to write (is "30" seconds or ms?) */
	OPT_DURATION,
	OPT_DURATION_S, /* the same, stored as long long seconds: a whole number of them */
};

/* The largest duration the parser takes (100 years); each command checks its own bounds. */
#define OPTIONS_DURATION_MAX_MS (36500LL * 86400000)

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
 * *help. "--version" prints the version line (options_version) and exits 0, in every command.
 * Returns 0, or -1 with a one-line message in err. Config file texts stay allocated (strings point
 * into them) until options_free(). */
#define OPTIONS_SECTIONS_MAX	 64
#define OPTIONS_SECTION_NAME_MAX 32
#define OPTIONS_CONFIG_FILES_MAX 8

struct options_state {
	/* in: config-file sections. sections_allowed: whether "[name]" lines may appear;
	 * section: the one whose keys are applied (with the defaults before the first
	 * section), NULL for none (the keys before the first section only); process_wide: the
	 * NULL-terminated keys refused in a section. */
	bool sections_allowed;
	const char *section;
	const char *const *process_wide;
	/* out: the names of the sections met, in order (pointing into texts); whether
	 * section was one of them */
	const char *sections[OPTIONS_SECTIONS_MAX];
	int section_lines[OPTIONS_SECTIONS_MAX];
	size_t nsections;
	bool section_found;
	struct opt_list positional;
	int help;
	char **texts;
	size_t ntexts;
	struct opt_list *lists[32];
	size_t nlists;
	const struct opt *given[64]; /* the options given (once each), for options_given() */
	size_t ngiven;
	/* out: the --config files read, in order (pointing into argv): the daemons' sandbox
	 * keeps them readable for SIGHUP */
	const char *config_files[OPTIONS_CONFIG_FILES_MAX];
	size_t nconfig_files;
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
/* The version line of every mtls command: "mtls X.Y.Z". */
void options_version(FILE *out);
void options_help(FILE *out, const char *usage, const char *about, const struct opt *table);
/* For the docs generator (options_doc.c), which runs each command with --help: while fn is
 * set, options_help() hands its arguments to fn instead of printing. NULL prints again. */
typedef void options_help_fn(void *arg, const char *usage, const char *about,
			     const struct opt *table);
void options_help_capture(options_help_fn *fn, void *arg);

#endif /* MTLS_CLI_OPTIONS_H */
