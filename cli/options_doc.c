/*
 * mtls __generate-docs DIR: docs/config.md, docs/man/ (sections 1 and 8) and completion/mtls
 * under DIR, generated from the commands' option tables. Each command is run with --help while
 * options_help() hands its usage, text and table here (options_help_capture()), so what the
 * docs say is what --help says and what the parser takes; nothing lists options by hand.
 * The hand-written paragraphs are in options_doc_text.c. The output does not depend on the
 * date or the machine, so a test can regenerate it and compare (test_docs_generated.sh).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ca_cmd.h"
#include "commands.h"
#include "files.h"
#include "options.h"
#include "options_doc.h"

#define MAX_CMDS 64

struct doc_cmd {
	char name[64]; /* "server", "ca issue" */
	const char *summary;
	const char *usage;
	const char *about;
	const struct opt *table;
};

struct doc {
	struct doc_cmd cmds[MAX_CMDS];
	size_t n;
	const char *top[MAX_CMDS]; /* the top-level commands, in mtls --help's order */
	const char *top_summary[MAX_CMDS];
	size_t ntop;
};

static void capture(void *arg, const char *usage, const char *about, const struct opt *table)
{
	struct doc_cmd *c = arg;

	c->usage = usage;
	c->about = about;
	c->table = table;
}

/* Run cmd --help with the capture on; 0 if it gave its help. */
static int collect(struct doc *d, const char *name, int (*run)(int, char **), const char *summary)
{
	char help[] = "--help";
	char *argv[] = {help, NULL};
	struct doc_cmd *c;

	if (d->n == MAX_CMDS)
		return -1;
	c = &d->cmds[d->n];
	memset(c, 0, sizeof(*c));
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->summary = summary;
	options_help_capture(capture, c);
	run(1, argv);
	options_help_capture(NULL, NULL);
	if (c->table == NULL)
		return -1;
	d->n++;
	return 0;
}

static const struct options_doc_page *page_of(const char *command)
{
	for (const struct options_doc_page *p = options_doc_pages; p->command != NULL; p++)
		if (strcmp(p->command, command) == 0)
			return p;
	return NULL;
}

/* Does the command read a --config file of its own options (not mtls doctor's)? */
static bool reads_config(const struct opt *table)
{
	for (const struct opt *o = table; o->name != NULL; o++)
		if (strcmp(o->name, "config") == 0 && o->help != NULL &&
		    strncmp(o->help, "read options from", 17) == 0)
			return true;
	return false;
}

/* The default the help text names ("(default 10s; at most 5m)" -> "10s"), into out; false
 * if it names none. */
static bool default_of(const char *help, char *out, size_t len)
{
	const char *p = help;

	while ((p = strstr(p, "default")) != NULL) {
		const char *v = p + 7;
		size_t n = 0;
		int depth = 0;

		/* "(default X", "; default X", "default: X" at the start; not "the default" */
		if (!(p == help || p[-1] == '(' ||
		      (p - help >= 2 && p[-1] == ' ' && p[-2] == ';')) ||
		    (*v != ' ' && *v != ':')) {
			p = v;
			continue;
		}
		v += *v == ':';
		v += strspn(v, " ");
		while (v[n] != '\0' && !(depth == 0 && (v[n] == ';' || v[n] == ')' ||
							(v[n] == ',' && v[n + 1] == ' ')))) {
			depth += v[n] == '(';
			depth -= v[n] == ')';
			n++;
		}
		if (n == 0 || strncmp(v, "is ", 3) == 0) {
			p = v;
			continue;
		}
		snprintf(out, len, "%.*s", (int)n, v);
		return true;
	}
	return false;
}

/* ---- roff (man(7)) ---- */

/* Text for a filled roff line: backslash, minus, a leading dot or quote escaped; a newline
 * (the --help text's wrapping) becomes a blank. */
static void roff(FILE *f, const char *s, size_t n)
{
	bool start = true;

	for (size_t i = 0; i < n && s[i] != '\0'; i++) {
		char c = s[i] == '\n' ? ' ' : s[i];

		if (start && (c == '.' || c == '\''))
			fputs("\\&", f);
		start = false;
		if (c == '\\')
			fputs("\\e", f);
		else if (c == '-')
			fputs("\\-", f);
		else
			fputc(c, f);
	}
}

static void roffs(FILE *f, const char *s)
{
	roff(f, s, strlen(s));
}

/* Hand-written text (options_doc.h's form) as roff paragraphs. */
static void roff_text(FILE *f, const char *text)
{
	const char *p = text;

	while (*p != '\0') {
		const char *end = strstr(p, "\n\n");
		size_t n = end != NULL ? (size_t)(end - p) : strlen(p);

		if (strncmp(p, "    ", 4) == 0) {
			/* an example: each line as is */
			fputs(".PP\n.RS 4\n.nf\n", f);
			for (const char *l = p; l < p + n;) {
				const char *nl = memchr(l, '\n', (size_t)(p + n - l));
				size_t ln = nl != NULL ? (size_t)(nl - l) : (size_t)(p + n - l);

				roff(f, l + 4, ln > 4 ? ln - 4 : 0);
				fputc('\n', f);
				l += ln + (nl != NULL);
			}
			fputs(".fi\n.RE\n", f);
		} else if (strncmp(p, "- ", 2) == 0) {
			fputs(".IP \\(bu 2\n", f);
			roff(f, p + 2, n - 2);
			fputc('\n', f);
		} else {
			fputs(".PP\n", f);
			roff(f, p, n);
			fputc('\n', f);
		}
		p += n;
		p += strspn(p, "\n");
	}
}

static void roff_options(FILE *f, const struct opt *table)
{
	for (const struct opt *o = table; o->name != NULL; o++) {
		fputs(".TP\n", f);
		if (o->arg != NULL) {
			fputs(".BI \\-\\-", f);
			roffs(f, o->name);
			fputs(" \" ", f);
			roffs(f, o->arg);
			fputs("\"\n", f);
		} else {
			fputs(".B \\-\\-", f);
			roffs(f, o->name);
			fputc('\n', f);
		}
		roffs(f, o->help);
		if (o->type == OPT_LIST)
			fputs("; repeatable", f);
		fputs(".\n", f);
	}
	fputs(".TP\n.B \\-\\-help\nShow the options and exit.\n"
	      ".TP\n.B \\-\\-version\nPrint the version line and exit.\n",
	      f);
}

static void roff_synopsis(FILE *f, const char *usage)
{
	fputs(".nf\n", f);
	for (const char *l = usage; *l != '\0';) {
		size_t n = strcspn(l, "\n");
		const char *s = l + strspn(l, " ");

		roff(f, s, n - (size_t)(s - l));
		fputc('\n', f);
		l += n + (l[n] == '\n');
	}
	fputs(".fi\n", f);
}

/* "mtls-connector(8), mtls-ca(1)" as .BR lines. */
static void roff_see_also(FILE *f, const char *list)
{
	const char *p = list;

	while (*p != '\0') {
		size_t n = strcspn(p, ",");
		const char *paren = memchr(p, '(', n);

		if (paren != NULL) {
			fputs(".BR ", f);
			roff(f, p, (size_t)(paren - p));
			fprintf(f, " %.*s%s\n", (int)(n - (size_t)(paren - p)), paren,
				p[n] == ',' ? "," : "");
		}
		p += n;
		p += strspn(p, ", ");
	}
}

static void roff_header(FILE *f, const char *page, int section, const char *summary)
{
	char upper[80];
	size_t i;

	for (i = 0; page[i] != '\0' && i + 1 < sizeof(upper); i++)
		upper[i] = page[i] >= 'a' && page[i] <= 'z' ? (char)(page[i] - 32) : page[i];
	upper[i] = '\0';
	fputs(".\\\" Generated by 'mtls __generate-docs' from the option tables; do not edit.\n"
	      ".\\\" Regenerate with scripts/gen-docs.sh.\n",
	      f);
	fputs(".TH ", f);
	roffs(f, upper);
	fprintf(f, " %d \"\" \"mtls\" \"%s\"\n.SH NAME\n", section,
		section == 8 ? "System Administration" : "User Commands");
	roffs(f, page);
	fputs(" \\- ", f);
	roffs(f, summary);
	fputc('\n', f);
}

static void roff_config_section(FILE *f, const struct options_doc_page *pg)
{
	fputs(".SH CONFIGURATION\n", f);
	if (pg != NULL && pg->config != NULL)
		roff_text(f, pg->config);
	roff_text(f, options_doc_grammar);
	roff_text(f, options_doc_sections);
	fputs(".PP\ndocs/config.md lists the keys of every command.\n", f);
}

static void roff_tail(FILE *f, const struct options_doc_page *pg)
{
	if (pg == NULL)
		return;
	if (pg->signals != NULL) {
		fputs(".SH SIGNALS\n", f);
		roff_text(f, pg->signals);
	}
	if (pg->files != NULL) {
		fputs(".SH FILES\n", f);
		roff_text(f, pg->files);
	}
	if (pg->exit_status != NULL) {
		fputs(".SH \"EXIT STATUS\"\n", f);
		roff_text(f, pg->exit_status);
	}
	if (pg->see_also != NULL) {
		fputs(".SH \"SEE ALSO\"\n", f);
		roff_see_also(f, pg->see_also);
	}
}

/* mtls-NAME.N for a top-level command other than ca. */
static void man_command(FILE *f, const struct doc_cmd *c, const struct options_doc_page *pg,
			int section)
{
	char page[80];

	snprintf(page, sizeof(page), "mtls-%s", c->name);
	roff_header(f, page, section, c->summary);
	fputs(".SH SYNOPSIS\n", f);
	roff_synopsis(f, c->usage);
	fputs(".SH DESCRIPTION\n.PP\n", f);
	roffs(f, c->about);
	fputc('\n', f);
	if (pg != NULL && pg->description != NULL)
		roff_text(f, pg->description);
	fputs(".SH OPTIONS\n", f);
	roff_options(f, c->table);
	if (reads_config(c->table))
		roff_config_section(f, pg);
	roff_tail(f, pg);
}

/* mtls-ca.1: every subcommand, each with its synopsis, text and options. */
static void man_ca(FILE *f, const struct doc *d, const char *summary,
		   const struct options_doc_page *pg)
{
	bool config = false;

	roff_header(f, "mtls-ca", pg != NULL ? pg->section : 1, summary);
	fputs(".SH SYNOPSIS\n.B mtls ca\n.I COMMAND\n.RI [ options ]\n", f);
	fputs(".SH DESCRIPTION\n", f);
	if (pg != NULL && pg->description != NULL)
		roff_text(f, pg->description);
	fputs(".SH COMMANDS\n", f);
	for (size_t i = 0; i < d->n; i++) {
		const struct doc_cmd *c = &d->cmds[i];

		if (strncmp(c->name, "ca ", 3) != 0)
			continue;
		config |= reads_config(c->table);
		fputs(".SS \"", f);
		roffs(f, c->name);
		fputs("\"\n", f);
		roff_synopsis(f, c->usage);
		fputs(".PP\n", f);
		roffs(f, c->about);
		fputc('\n', f);
		roff_options(f, c->table);
	}
	if (config)
		roff_config_section(f, pg);
	roff_tail(f, pg);
}

static void man_overview(FILE *f, const struct doc *d)
{
	roff_header(f, "mtls", 1, "mutual TLS for services");
	fputs(".SH SYNOPSIS\n.B mtls\n.I COMMAND\n.RI [ options ]\n", f);
	fputs(".SH DESCRIPTION\n", f);
	roff_text(f, options_doc_overview);
	fputs(".SH COMMANDS\n", f);
	for (size_t i = 0; i < d->ntop; i++) {
		const struct options_doc_page *pg = page_of(d->top[i]);

		fputs(".TP\n.B ", f);
		roffs(f, d->top[i]);
		fputc('\n', f);
		roffs(f, d->top_summary[i]);
		fputs("; see\n.BR mtls\\-", f);
		roffs(f, d->top[i]);
		fprintf(f, " (%d).\n", pg != NULL ? pg->section : 1);
	}
	fputs(".TP\n.B version\nPrint the version.\n", f);
	roff_text(f, options_doc_overview_after);
	fputs(".SH \"EXIT STATUS\"\n.PP\n0 success, 1 failure, 2 a usage or configuration "
	      "error; each command's page says what its failures are.\n.SH \"SEE ALSO\"\n",
	      f);
	for (size_t i = 0; i < d->ntop; i++) {
		const struct options_doc_page *pg = page_of(d->top[i]);

		fputs(".BR mtls\\-", f);
		roffs(f, d->top[i]);
		fprintf(f, " (%d)%s\n", pg != NULL ? pg->section : 1, i + 1 < d->ntop ? "," : "");
	}
}

/* ---- Markdown ---- */

static void md(FILE *f, const char *s, size_t n)
{
	for (size_t i = 0; i < n && s[i] != '\0'; i++) {
		char c = s[i] == '\n' ? ' ' : s[i];

		if (strchr("\\`*_[]<>|#", c) != NULL)
			fputc('\\', f);
		fputc(c, f);
	}
}

static void mds(FILE *f, const char *s)
{
	md(f, s, strlen(s));
}

static void md_text(FILE *f, const char *text)
{
	const char *p = text;

	while (*p != '\0') {
		const char *end = strstr(p, "\n\n");
		size_t n = end != NULL ? (size_t)(end - p) : strlen(p);

		if (strncmp(p, "    ", 4) == 0)
			fprintf(f, "```\n%.*s\n```\n\n", (int)n, p); /* the lines as they are */
		else if (strncmp(p, "- ", 2) == 0) {
			fputs("- ", f);
			md(f, p + 2, n - 2);
			fputs(p[n] != '\0' && strncmp(p + n + strspn(p + n, "\n"), "- ", 2) == 0
				      ? "\n"
				      : "\n\n",
			      f);
		} else {
			md(f, p, n);
			fputs("\n\n", f);
		}
		p += n;
		p += strspn(p, "\n");
	}
}

static void config_md(FILE *f, const struct doc *d)
{
	bool first = true;

	fputs("<!-- Generated by 'mtls __generate-docs' from the option tables (cli/); do not "
	      "edit.\n     Regenerate with scripts/gen-docs.sh. -->\n"
	      "# Config files\n\n"
	      "Every command that takes `--config FILE` reads the same options from it as from "
	      "its command line. The daemons' files live in /etc/mtls/server/NAME.conf and "
	      "/etc/mtls/connector/NAME.conf (one per systemd unit instance), the CA service's "
	      "in /etc/mtls/ca.conf.\n\n"
	      "## Grammar\n\n",
	      f);
	md_text(f, options_doc_grammar);
	md_text(f, options_doc_sections);
	fputs("A DURATION is a whole number and a unit: 500ms, 30s, 10m, 2h, 1d (a bare 0 is "
	      "0). A flag is given alone (true) or with true/false. The defaults below are those "
	      "the help text names; an option without one is off or unset.\n\n",
	      f);
	for (size_t i = 0; i < d->n; i++) {
		const struct doc_cmd *c = &d->cmds[i];

		if (!reads_config(c->table))
			continue;
		fprintf(f, "## mtls %s\n\n", c->name);
		fprintf(f, "`mtls %s --config FILE`: ", c->name);
		mds(f, c->summary);
		fputs(".\n\n| key | value | default | meaning |\n|---|---|---|---|\n", f);
		for (const struct opt *o = c->table; o->name != NULL; o++) {
			char def[200];

			if (strcmp(o->name, "config") == 0)
				continue;
			fprintf(f, "| `%s` | ", o->name);
			if (o->arg != NULL)
				mds(f, o->arg);
			else
				fputs("flag", f);
			if (o->type == OPT_LIST)
				fputs(", repeatable", f);
			fputs(" | ", f);
			if (default_of(o->help, def, sizeof(def)))
				mds(f, def);
			fputs(" | ", f);
			mds(f, o->help);
			fputs(" |\n", f);
		}
		fputc('\n', f);
	}
	fputs("## Commands without a config file\n\n", f);
	for (size_t i = 0; i < d->n; i++)
		if (!reads_config(d->cmds[i].table)) {
			fprintf(f, "%smtls %s", first ? "" : ", ", d->cmds[i].name);
			first = false;
		}
	fputs(" take their options on the command line only (mtls doctor's --config is the "
	      "file of the daemon it checks). `mtls COMMAND --help` and the man pages list "
	      "them.\n",
	      f);
}

/* ---- bash completion ---- */

/* What an option's value is, for completion: "file", "dir", "words A B", or "value". */
static void value_kind(const struct opt *o, char *out, size_t len)
{
	if (strstr(o->arg, "FILE") != NULL || strcmp(o->arg, "PREFIX") == 0)
		snprintf(out, len, "file");
	else if (strcmp(o->arg, "DIR") == 0)
		snprintf(out, len, "dir");
	else if (strchr(o->arg, '|') != NULL && strspn(o->arg, "abcdefghijklmnopqrstuvwxyz"
							       "0123456789.-|") == strlen(o->arg)) {
		size_t n = (size_t)snprintf(out, len, "words ");

		for (const char *p = o->arg; *p != '\0' && n + 1 < len; p++)
			out[n++] = *p == '|' ? ' ' : *p;
		out[n] = '\0';
	} else
		snprintf(out, len, "value");
}

/* The words of a first argument the usage names as "a|b|c" right after the command
 * ("mtls ca rollover begin|switch|finish|status ..."), blank-separated into out; "" if none. */
static void steps_of(const struct doc_cmd *c, char *out, size_t len)
{
	char prefix[80];
	const char *p;
	size_t n, k = 0;

	out[0] = '\0';
	snprintf(prefix, sizeof(prefix), "mtls %s ", c->name);
	if (strncmp(c->usage, prefix, strlen(prefix)) != 0)
		return;
	p = c->usage + strlen(prefix);
	n = strcspn(p, " \n");
	if (n == 0 || memchr(p, '|', n) == NULL || strspn(p, "abcdefghijklmnopqrstuvwxyz-|") < n ||
	    n >= len)
		return;
	for (size_t i = 0; i < n; i++)
		out[k++] = p[i] == '|' ? ' ' : p[i];
	out[k] = '\0';
}

static void completion(FILE *f, const struct doc *d)
{
	fputs("# bash completion for mtls(1). Generated by 'mtls __generate-docs' from the "
	      "commands' option\n# tables (cli/); do not edit. Regenerate with "
	      "scripts/gen-docs.sh.\n\n",
	      f);
	fputs("# _mtls_options COMMAND: the options of COMMAND (\"ca issue\" for a ca "
	      "subcommand)\n_mtls_options() {\n\tcase $1 in\n",
	      f);
	for (size_t i = 0; i < d->n; i++) {
		fprintf(f, "\t'%s') echo '", d->cmds[i].name);
		for (const struct opt *o = d->cmds[i].table; o->name != NULL; o++)
			fprintf(f, "--%s ", o->name);
		fputs("--help --version' ;;\n", f);
	}
	fputs("\tesac\n}\n\n", f);
	fputs("# _mtls_value COMMAND OPTION: what the option's value is (file, dir, words W..., "
	      "value), or\n# nothing for a flag or an unknown option\n_mtls_value() {\n"
	      "\tcase \"$1 $2\" in\n",
	      f);
	for (size_t i = 0; i < d->n; i++)
		for (const struct opt *o = d->cmds[i].table; o->name != NULL; o++) {
			char kind[200];

			if (o->arg == NULL)
				continue;
			value_kind(o, kind, sizeof(kind));
			fprintf(f, "\t'%s --%s') echo '%s' ;;\n", d->cmds[i].name, o->name, kind);
		}
	fputs("\tesac\n}\n\n", f);
	fputs("# _mtls_steps COMMAND: the words its first argument may be (mtls ca rollover STEP)\n"
	      "_mtls_steps() {\n\tcase $1 in\n",
	      f);
	for (size_t i = 0; i < d->n; i++) {
		char steps[200];

		steps_of(&d->cmds[i], steps, sizeof(steps));
		if (steps[0] != '\0')
			fprintf(f, "\t'%s') echo '%s' ;;\n", d->cmds[i].name, steps);
	}
	fputs("\tesac\n}\n\n", f);
	fputs("_mtls() {\n"
	      "\tlocal cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]} cmd "
	      "kind first=2\n"
	      "\tCOMPREPLY=()\n"
	      "\tif [ \"$COMP_CWORD\" -eq 1 ]; then\n"
	      "\t\tmapfile -t COMPREPLY < <(compgen -W '",
	      f);
	for (size_t i = 0; i < d->ntop; i++)
		fprintf(f, "%s ", d->top[i]);
	fputs("version --help --version' -- \"$cur\")\n"
	      "\t\treturn 0\n"
	      "\tfi\n"
	      "\tcmd=${COMP_WORDS[1]}\n"
	      "\tif [ \"$cmd\" = ca ]; then\n"
	      "\t\tif [ \"$COMP_CWORD\" -eq 2 ]; then\n"
	      "\t\t\tmapfile -t COMPREPLY < <(compgen -W '",
	      f);
	for (size_t i = 0; i < d->n; i++)
		if (strncmp(d->cmds[i].name, "ca ", 3) == 0)
			fprintf(f, "%s ", d->cmds[i].name + 3);
	fputs("--help --version' -- \"$cur\")\n"
	      "\t\t\treturn 0\n"
	      "\t\tfi\n"
	      "\t\tcmd=\"ca ${COMP_WORDS[2]}\"\n"
	      "\t\tfirst=3\n"
	      "\tfi\n"
	      "\t# the first word after the command: its step, if it takes one\n"
	      "\tif [[ $cur != -* ]] && [ \"$COMP_CWORD\" -eq \"$first\" ]; then\n"
	      "\t\tkind=$(_mtls_steps \"$cmd\")\n"
	      "\t\tif [ -n \"$kind\" ]; then\n"
	      "\t\t\tmapfile -t COMPREPLY < <(compgen -W \"$kind\" -- \"$cur\")\n"
	      "\t\t\treturn 0\n"
	      "\t\tfi\n"
	      "\tfi\n"
	      "\tif [[ $prev == --* ]]; then\n"
	      "\t\tkind=$(_mtls_value \"$cmd\" \"$prev\")\n"
	      "\t\tcase $kind in\n"
	      "\t\tfile)\n"
	      "\t\t\tcompopt -o filenames 2>/dev/null || true\n"
	      "\t\t\tmapfile -t COMPREPLY < <(compgen -f -- \"$cur\")\n"
	      "\t\t\treturn 0 ;;\n"
	      "\t\tdir)\n"
	      "\t\t\tcompopt -o filenames 2>/dev/null || true\n"
	      "\t\t\tmapfile -t COMPREPLY < <(compgen -d -- \"$cur\")\n"
	      "\t\t\treturn 0 ;;\n"
	      "\t\t'words '*)\n"
	      "\t\t\tmapfile -t COMPREPLY < <(compgen -W \"${kind#words }\" -- \"$cur\")\n"
	      "\t\t\treturn 0 ;;\n"
	      "\t\tvalue) return 0 ;;\n"
	      "\t\tesac\n"
	      "\tfi\n"
	      "\tif [[ $cur == -* ]]; then\n"
	      "\t\tmapfile -t COMPREPLY < <(compgen -W \"$(_mtls_options \"$cmd\")\" -- "
	      "\"$cur\")\n"
	      "\telse\n"
	      "\t\t# a positional argument: a file (mtls verify CERT, mtls ca inspect FILE)\n"
	      "\t\tcompopt -o filenames 2>/dev/null || true\n"
	      "\t\tmapfile -t COMPREPLY < <(compgen -f -- \"$cur\")\n"
	      "\tfi\n"
	      "\treturn 0\n"
	      "}\n"
	      "complete -F _mtls mtls\n",
	      f);
}

/* ---- output ---- */

/* Write what fill() prints to DIR/path, whole or not at all. */
static int emit(const char *dir, const char *path, void (*fill)(FILE *, const void *),
		const void *arg)
{
	char full[4096], err[512];
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	int rc;

	if (f == NULL) {
		fprintf(stderr, "mtls __generate-docs: out of memory\n");
		return -1;
	}
	fill(f, arg);
	if (fclose(f) != 0 || buf == NULL) {
		free(buf);
		fprintf(stderr, "mtls __generate-docs: out of memory\n");
		return -1;
	}
	snprintf(full, sizeof(full), "%s/%s", dir, path);
	rc = files_write(full, buf, len, 0644, false, err, sizeof(err));
	if (rc != 0)
		fprintf(stderr, "mtls __generate-docs: %s\n", err);
	free(buf);
	return rc;
}

struct man_arg {
	const struct doc *d;
	size_t i; /* the command, for man_command */
	const char *summary;
	const struct options_doc_page *pg;
	int section;
};

static void fill_config(FILE *f, const void *arg)
{
	config_md(f, arg);
}

static void fill_completion(FILE *f, const void *arg)
{
	completion(f, arg);
}

static void fill_overview(FILE *f, const void *arg)
{
	man_overview(f, arg);
}

static void fill_command(FILE *f, const void *arg)
{
	const struct man_arg *m = arg;

	man_command(f, &m->d->cmds[m->i], m->pg, m->section);
}

static void fill_ca(FILE *f, const void *arg)
{
	const struct man_arg *m = arg;

	man_ca(f, m->d, m->summary, m->pg);
}

static int make_dir(const char *dir, const char *sub)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", dir, sub);
	if (mkdir(path, 0755) != 0 && errno != EEXIST) {
		fprintf(stderr, "mtls __generate-docs: cannot make %s: %s\n", path,
			strerror(errno));
		return -1;
	}
	return 0;
}

int options_doc_main(int argc, char **argv)
{
	static struct doc d; /* large; one run per process */
	const char *dir;

	if (argc != 1 || argv[0][0] == '-') {
		fprintf(stderr, "usage: mtls __generate-docs DIR (writes DIR/docs/config.md, "
				"DIR/docs/man/ and DIR/completion/mtls)\n");
		return 2;
	}
	dir = argv[0];
	for (const struct command *c = commands; c->name != NULL; c++) {
		if (d.ntop == MAX_CMDS)
			break;
		d.top[d.ntop] = c->name;
		d.top_summary[d.ntop++] = c->summary;
		if (strcmp(c->name, "ca") == 0) {
			for (const struct ca_command *s = ca_commands; s->name != NULL; s++) {
				char name[64];

				snprintf(name, sizeof(name), "ca %s", s->name);
				if (collect(&d, name, s->run, s->summary) != 0) {
					fprintf(stderr,
						"mtls __generate-docs: mtls %s --help gave "
						"no option table\n",
						name);
					return 1;
				}
			}
		} else if (collect(&d, c->name, c->run, c->summary) != 0) {
			fprintf(stderr,
				"mtls __generate-docs: mtls %s --help gave no option table\n",
				c->name);
			return 1;
		}
	}
	if (make_dir(dir, "docs") != 0 || make_dir(dir, "docs/man") != 0 ||
	    make_dir(dir, "completion") != 0)
		return 1;
	if (emit(dir, "docs/config.md", fill_config, &d) != 0 ||
	    emit(dir, "completion/mtls", fill_completion, &d) != 0 ||
	    emit(dir, "docs/man/mtls.1", fill_overview, &d) != 0)
		return 1;
	for (size_t t = 0; t < d.ntop; t++) {
		struct man_arg m = {.d = &d, .summary = d.top_summary[t], .pg = page_of(d.top[t])};
		char path[128];

		m.section = m.pg != NULL ? m.pg->section : 1;
		snprintf(path, sizeof(path), "docs/man/mtls-%s.%d", d.top[t], m.section);
		if (strcmp(d.top[t], "ca") == 0) {
			if (emit(dir, path, fill_ca, &m) != 0)
				return 1;
			continue;
		}
		for (m.i = 0; m.i < d.n && strcmp(d.cmds[m.i].name, d.top[t]) != 0; m.i++)
			;
		if (m.i < d.n && emit(dir, path, fill_command, &m) != 0)
			return 1;
	}
	return 0;
}
