/*
 * The documentation generated from the option tables (mtls __generate-docs DIR): the
 * hand-written parts of the man pages, which the tables cannot say, live in
 * options_doc_text.c; everything about options comes from the tables themselves, through
 * each command's own --help (options_help_capture()).
 */
#ifndef MTLS_CLI_OPTIONS_DOC_H
#define MTLS_CLI_OPTIONS_DOC_H

/* One man page's hand-written text. Plain text (the generator escapes it for roff and
 * Markdown): paragraphs are separated by an empty line; a paragraph starting with "- " is a
 * list item; one whose lines all start with four blanks is shown as is (an example). NULL
 * where a section does not apply. */
struct options_doc_page {
	const char *command; /* "server", "ca": the page is mtls-<command>.<section> */
	int section;
	const char *description; /* after the --help text */
	const char *config;	 /* the CONFIGURATION section, if the command reads --config */
	const char *signals;
	const char *files;
	const char *exit_status;
	const char *see_also; /* "mtls-connector(8), mtls-ca(1)" */
};

/* NULL-terminated. A command without an entry gets a page in section 1 from its --help. */
extern const struct options_doc_page options_doc_pages[];
/* The overview page mtls(1), before and after its list of commands. */
extern const char options_doc_overview[];
extern const char options_doc_overview_after[];
/* The grammar of config files, the start of docs/config.md and of every CONFIGURATION
 * section (Markdown-free plain text as above). */
extern const char options_doc_grammar[];
/* The grammar's part on [sections] (several tunnels in one process), printed after it. */
extern const char options_doc_sections[];

#endif /* MTLS_CLI_OPTIONS_DOC_H */
