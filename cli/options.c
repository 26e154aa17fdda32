/*
 * Command-line and config-file parsing from one option table.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "duration.h"
#include "files.h"
#include "mtls.h"
#include "options.h"

static int fail(char *err, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
	return -1;
}

static const struct opt *find(const struct opt *table, const char *name, size_t len)
{
	for (const struct opt *o = table; o->name != NULL; o++)
		if (strlen(o->name) == len && strncmp(o->name, name, len) == 0)
			return o;
	return NULL;
}

static int list_add(struct options_state *st, struct opt_list *l, const char *v)
{
	const char **n = realloc(l->v, (l->n + 1) * sizeof(*n));
	bool known = false;

	if (n == NULL)
		return -1;
	l->v = n;
	l->v[l->n++] = v;
	for (size_t i = 0; i < st->nlists; i++)
		known |= st->lists[i] == l;
	if (!known && st->nlists < sizeof(st->lists) / sizeof(st->lists[0]))
		st->lists[st->nlists++] = l;
	return 0;
}

/* Store value into the field for o. where names the source for messages. */
static int apply(const struct opt *o, void *target, const char *value, const char *where,
		 struct options_state *st, char *err, size_t err_len)
{
	char *field = (char *)target + o->offset;
	/* on the command line the option is --name, in a config file the key is name */
	const char *dash = strcmp(where, "command line") == 0 ? "--" : "";
	bool seen = false;

	for (size_t i = 0; i < st->ngiven; i++)
		seen |= st->given[i] == o;
	if (!seen && st->ngiven < sizeof(st->given) / sizeof(st->given[0]))
		st->given[st->ngiven++] = o;
	switch (o->type) {
	case OPT_FLAG: {
		int on = 1;

		if (value != NULL) {
			if (strcmp(value, "true") == 0 || strcmp(value, "yes") == 0 ||
			    strcmp(value, "1") == 0 || strcmp(value, "on") == 0)
				on = 1;
			else if (strcmp(value, "false") == 0 || strcmp(value, "no") == 0 ||
				 strcmp(value, "0") == 0 || strcmp(value, "off") == 0)
				on = 0;
			else
				return fail(err, err_len,
					    "%s: %s%s takes true or false (yes/no, on/off, 1/0), "
					    "not '%.40s'",
					    where, dash, o->name, value);
		}
		memcpy(field, &on, sizeof(on));
		return 0;
	}
	case OPT_STRING:
		if (value == NULL || value[0] == '\0')
			return fail(err, err_len, "%s: %s%s needs a value (%s)", where, dash,
				    o->name, o->arg);
		memcpy(field, &value, sizeof(value));
		return 0;
	case OPT_INT: {
		char *end = NULL;
		long long v;

		if (value == NULL || value[0] == '\0')
			return fail(err, err_len, "%s: %s%s needs a number", where, dash, o->name);
		errno = 0;
		v = strtoll(value, &end, 10);
		/* strtoll skips leading blanks and takes a '+': a number is digits, maybe '-' */
		if (end == value || *end != '\0' ||
		    (value[0] != '-' && (value[0] < '0' || value[0] > '9')))
			return fail(err, err_len, "%s: %s%s takes a whole number, not '%.40s'",
				    where, dash, o->name, value);
		if (errno == ERANGE)
			return fail(err, err_len, "%s: %s%s %.40s is out of range; see --help",
				    where, dash, o->name, value);
		memcpy(field, &v, sizeof(v));
		return 0;
	}
	case OPT_DURATION:
	case OPT_DURATION_S: {
		long long ms = 0, v;
		char what[80], why[300];

		if (value == NULL || value[0] == '\0')
			return fail(err, err_len, "%s: %s%s needs a duration, e.g. 30s", where,
				    dash, o->name);
		/* a bare number: seconds or milliseconds? Only 0 means the same in both */
		if (value[strspn(value, "0123456789")] == '\0' && strcmp(value, "0") != 0)
			return fail(err, err_len, "%s: %s%s %.20s: give a unit: %.20ss or %.20sms",
				    where, dash, o->name, value, value, value);
		snprintf(what, sizeof(what), "%s: %s%s", where, dash, o->name);
		/* the bounds of each option are checked by its command, which names them; a
		 * century is past them all, and far from overflowing in any unit */
		if (strcmp(value, "0") != 0 &&
		    duration_parse(value, what, 0, OPTIONS_DURATION_MAX_MS, &ms, why,
				   sizeof(why)) != 0)
			return fail(err, err_len, "%s", why);
		if (o->type == OPT_DURATION_S && ms % 1000 != 0)
			return fail(err, err_len, "%s: %s%s %.40s: give whole seconds, e.g. 30s",
				    where, dash, o->name, value);
		v = o->type == OPT_DURATION_S ? ms / 1000 : ms;
		memcpy(field, &v, sizeof(v));
		return 0;
	}
	case OPT_LIST:
		if (value == NULL || value[0] == '\0')
			return fail(err, err_len, "%s: %s%s needs a value (%s)", where, dash,
				    o->name, o->arg);
		if (list_add(st, (struct opt_list *)(void *)field, value) != 0)
			return fail(err, err_len, "out of memory");
		return 0;
	}
	return fail(err, err_len, "internal error: bad option type");
}

/* A config file is text: a NUL would end parsing early (and the lines after it, say a crl
 * line, would be ignored without a word), and other control bytes are never meant. */
static int check_bytes(const char *text, size_t len, const char *origin, char *err, size_t err_len)
{
	int lineno = 1;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)text[i];

		if (c == '\n') {
			lineno++;
			continue;
		}
		if (c == '\0')
			return fail(err, err_len,
				    "%s:%d: NUL byte in config file; is it a text file?", origin,
				    lineno);
		if ((c < 0x20 && c != '\t' &&
		     !(c == '\r' && (i + 1 == len || text[i + 1] == '\n'))) ||
		    c == 0x7f)
			return fail(err, err_len,
				    "%s:%d: control byte 0x%02x in config file; only tabs and "
				    "printable text are allowed",
				    origin, lineno, c);
		/* U+0080..U+009F in UTF-8: C1 controls (0x9b is CSI), which a terminal obeys
		 * when an error message quotes the text */
		if (c == 0xc2 && i + 1 < len && (unsigned char)text[i + 1] >= 0x80 &&
		    (unsigned char)text[i + 1] <= 0x9f)
			return fail(err, err_len,
				    "%s:%d: control character U+%04X in config file; only tabs "
				    "and printable text are allowed",
				    origin, lineno, (unsigned char)text[i + 1]);
	}
	return 0;
}

static bool blank(char c)
{
	return c == ' ' || c == '\t';
}

/* The end of a value's line: nothing, or a comment after a blank. */
static bool line_rest_empty(const char *p)
{
	const char *q = p + strspn(p, " \t");

	return *q == '\0' || (*q == '#' && q > p);
}

/*
 * Split one line (NUL-terminated, without its newline or a CR before it) into key and value,
 * in place, by the grammar in options.h. *key is NULL for a blank or comment line; *value is
 * NULL for a key given without a value. -1 with what is wrong and what to write in why.
 */
static int split_line(char *line, char **key, size_t *keylen, char **value, char **section,
		      char *why, size_t why_len)
{
	char *p = line + strspn(line, " \t");
	char *v;

	*key = NULL;
	*value = NULL;
	*section = NULL;
	if (*p == '\0' || *p == '#')
		return 0;
	if (*p == '[') {
		size_t n = strspn(p + 1, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
					 "0123456789._-");

		if (n == 0 || n > OPTIONS_SECTION_NAME_MAX || p[1 + n] != ']' || p[1] == '.' ||
		    p[1] == '_' || p[1] == '-' || (p[2 + n] != '#' && !line_rest_empty(p + 2 + n)))
			return fail(why, why_len,
				    "a section name is 1 to %d letters, digits, '.', '_' or '-' "
				    "(starting with a letter or digit), in brackets: [db]",
				    OPTIONS_SECTION_NAME_MAX);
		p[1 + n] = '\0';
		*section = p + 1;
		return 0;
	}
	*key = p;
	*keylen = strcspn(p, " \t=");
	p += *keylen;
	p += strspn(p, " \t");
	if (*p == '=') {
		p++;
		p += strspn(p, " \t");
	}
	/* a '#' after a blank starts a comment; right after the key (key#x) it is part of it */
	if (*p == '\0' || (*p == '#' && blank(p[-1])))
		return 0;
	if (*keylen == 0)
		return fail(why, why_len, "a line starts with '='; write 'key value'");
	if (*p == '\'') {
		/* literal: everything up to the next single quote */
		char *close = strchr(p + 1, '\'');

		if (close == NULL)
			return fail(why, why_len,
				    "unterminated single quote; close it on the same line: "
				    "'value'");
		*close = '\0';
		if (!line_rest_empty(close + 1))
			return fail(why, why_len,
				    "text after the closing quote; quote the whole value, or put "
				    "a comment after a blank and '#'");
		*value = p + 1;
		return 0;
	}
	if (*p == '"') {
		/* escapes \\ \" \n \t only, unescaped in place (the value only shrinks) */
		char *r = p + 1, *w = p + 1;

		for (;; r++) {
			if (*r == '\0')
				return fail(why, why_len,
					    "unterminated double quote; close it on the same line: "
					    "\"value\"");
			if (*r == '"')
				break;
			if (*r != '\\') {
				*w++ = *r;
				continue;
			}
			r++;
			switch (*r) {
			case '\\': *w++ = '\\'; break;
			case '"': *w++ = '"'; break;
			case 'n': *w++ = '\n'; break;
			case 't': *w++ = '\t'; break;
			case '\0':
				return fail(
					why, why_len,
					"unterminated double quote (a backslash ends the line); "
					"close it on the same line: \"value\"");
			default:
				return fail(
					why, why_len,
					"unknown escape '\\%c' in double quotes; only \\\\ \\\" "
					"\\n \\t are escapes (write \\\\ for a backslash, or use "
					"single quotes for a literal value)",
					*r);
			}
		}
		*w = '\0';
		if (!line_rest_empty(r + 1))
			return fail(why, why_len,
				    "text after the closing quote; quote the whole value, or put "
				    "a comment after a blank and '#'");
		*value = p + 1;
		return 0;
	}
	/* unquoted: up to a blank and '#', or the end; trailing blanks trimmed */
	v = p;
	for (; *p != '\0'; p++) {
		if (*p == '#' && blank(p[-1]))
			break;
		if (*p == '\'' || *p == '"')
			return fail(why, why_len,
				    "a quote inside an unquoted value; quote the whole value "
				    "('...' literal, or \"...\" with \\\" for a double quote)");
	}
	*p = '\0';
	while (p > v && blank(p[-1]))
		*--p = '\0';
	*value = v;
	return 0;
}

static bool wanted_section(const struct options_state *st, const char *name)
{
	return st->section != NULL && strcmp(name, st->section) == 0;
}

/* Whether a line is a section's ("[..."): its mistakes are everyone's. */
static bool starts_section(const char *line)
{
	return line[strspn(line, " \t")] == '[';
}

static bool process_wide(const struct options_state *st, const char *name)
{
	for (const char *const *k = st->process_wide; k != NULL && *k != NULL; k++)
		if (strcmp(*k, name) == 0)
			return true;
	return false;
}

/* A "[name]" line at where (line lineno): a new section, noted in st. */
static int section_start(struct options_state *st, const char *name, const char *where, int lineno,
			 char *err, size_t err_len)
{
	if (st->sections_allowed && st->ntexts > 1)
		return fail(err, err_len,
			    "%s: a config file with [sections] must be the only --config (the "
			    "defaults of every section go before the first [section] of that "
			    "file)",
			    where);
	if (!st->sections_allowed)
		return fail(err, err_len,
			    "%s: sections ([name]) are for several tunnels in one process (mtls "
			    "server, mtls connector); this command reads no [section] line",
			    where);
	for (size_t i = 0; i < st->nsections; i++)
		if (strcmp(st->sections[i], name) == 0)
			return fail(err, err_len,
				    "%s: section [%s] given again (first on line %d); name each "
				    "tunnel once",
				    where, name, st->section_lines[i]);
	if (st->nsections == OPTIONS_SECTIONS_MAX)
		return fail(err, err_len, "%s: more than %d sections; run several processes", where,
			    OPTIONS_SECTIONS_MAX);
	st->section_lines[st->nsections] = lineno;
	st->sections[st->nsections++] = name;
	if (st->section != NULL && strcmp(st->section, name) == 0)
		st->section_found = true;
	return 0;
}

int options_parse_text(const struct opt *table, void *target, char *text, size_t len,
		       const char *origin, struct options_state *st, char *err, size_t err_len)
{
	char *line = text;
	size_t nopts = 0;
	/* the line each single-valued option was first given on (in the defaults, then in the
	 * section at hand), and which list options the wanted section has emptied */
	int *first_line = NULL;
	bool *replaced = NULL;
	const char *in = NULL; /* the section at hand; NULL: the defaults before any */
	int lineno = 0, rc = -1;

	/* a UTF-8 byte order mark, which some editors put first (Notepad's "UTF-8", "UTF-8
	 * with BOM"), is not part of the first key (systemd's unit files skip it too) */
	if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) {
		text += 3;
		len -= 3;
		line = text;
	}
	if (check_bytes(text, len, origin, err, err_len) != 0)
		return -1;
	while (table[nopts].name != NULL)
		nopts++;
	first_line = calloc(nopts + 1, sizeof(*first_line));
	replaced = calloc(nopts + 1, sizeof(*replaced));
	if (first_line == NULL || replaced == NULL) {
		free(first_line);
		free(replaced);
		return fail(err, err_len, "out of memory");
	}

	while (line != NULL && *line != '\0') {
		char *next = strchr(line, '\n');
		char where[300], why[300];
		char *key, *value, *section;
		size_t keylen = 0, linelen;
		const struct opt *o;
		bool wanted;

		if (next != NULL)
			*next++ = '\0';
		lineno++;
		linelen = strlen(line);
		if (linelen > 0 && line[linelen - 1] == '\r')
			line[linelen - 1] = '\0';
		snprintf(where, sizeof(where), "%s:%d", origin, lineno);
		if (split_line(line, &key, &keylen, &value, &section, why, sizeof(why)) != 0) {
			/* a line of a section not wanted: that section's own pass refuses it, so
			 * that a mistake in one fails only its own reload */
			if (in != NULL && !wanted_section(st, in) && !starts_section(line)) {
				line = next;
				continue;
			}
			fail(err, err_len, "%s: %s", where, why);
			goto out;
		}
		line = next;
		if (section != NULL) {
			if (section_start(st, section, where, lineno, err, err_len) != 0)
				goto out;
			in = section;
			memset(first_line, 0, (nopts + 1) * sizeof(*first_line));
			continue;
		}
		if (key == NULL)
			continue;
		wanted = in == NULL || wanted_section(st, in);
		if (!wanted) /* another section's line: its own pass applies and checks it */
			continue;
		o = find(table, key, keylen);
		if (o == NULL || strcmp(o->name, "config") == 0) {
			fail(err, err_len, "%s: unknown key '%.*s'; see --help for the keys", where,
			     (int)(keylen > 64 ? 64 : keylen), key);
			goto out;
		}
		key[keylen] = '\0';
		if (in != NULL && process_wide(st, o->name)) {
			fail(err, err_len,
			     "%s: %s applies to the whole process; set it before the first "
			     "[section]",
			     where, o->name);
			goto out;
		}
		if (o->type == OPT_LIST && in != NULL && !replaced[o - table]) {
			/* the section's list replaces the defaults' */
			((struct opt_list *)(void *)((char *)target + o->offset))->n = 0;
			replaced[o - table] = true;
		}
		if (o->type != OPT_LIST) {
			size_t i = (size_t)(o - table);

			if (first_line[i] != 0) {
				fail(err, err_len,
				     "%s: %s given again (first on line %d); give it once (only "
				     "list keys such as allow-uri repeat)",
				     where, o->name, first_line[i]);
				goto out;
			}
			first_line[i] = lineno;
		}
		if (value == NULL && o->type != OPT_FLAG) {
			fail(err, err_len, "%s: %s needs a value; write '%s %s'", where, o->name,
			     o->name, o->arg != NULL ? o->arg : "VALUE");
			goto out;
		}
		if (apply(o, target, value, where, st, err, err_len) != 0)
			goto out;
	}
	rc = 0;
out:
	free(first_line);
	free(replaced);
	return rc;
}

static int load_config(const struct opt *table, void *target, const char *path,
		       struct options_state *st, char *err, size_t err_len)
{
	char **texts;
	char why[400];
	size_t len = 0;
	char *text;

	if (st->nsections > 0)
		return fail(err, err_len,
			    "--config %s: the config file before it has [sections], and it must "
			    "be the only --config; put these options before its first [section]",
			    path);
	text = files_read(path, &len, why, sizeof(why));

	if (text == NULL)
		return fail(err, err_len, "config file: %s", why);
	texts = realloc(st->texts, (st->ntexts + 1) * sizeof(*texts));
	if (texts == NULL) {
		free(text);
		return fail(err, err_len, "out of memory");
	}
	st->texts = texts;
	st->texts[st->ntexts++] = text;
	return options_parse_text(table, target, text, len, path, st, err, err_len);
}

int options_parse(const struct opt *table, void *target, int argc, char **argv,
		  struct options_state *st, char *err, size_t err_len)
{
	bool only_positional = false;

	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		const char *eq, *value = NULL;
		const struct opt *o;
		size_t len;

		if (only_positional || a[0] != '-' || strcmp(a, "-") == 0) {
			if (list_add(st, &st->positional, a) != 0)
				return fail(err, err_len, "out of memory");
			continue;
		}
		if (strcmp(a, "--") == 0) {
			only_positional = true;
			continue;
		}
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			st->help = 1;
			continue;
		}
		if (strcmp(a, "--version") == 0) {
			/* before any check of the other options: nothing else is needed for it */
			options_version(stdout);
			options_free(st);
			exit(fflush(stdout) == 0 ? 0 : 1);
		}
		if (a[1] != '-')
			return fail(err, err_len,
				    "unknown option '%s'; options are long (--name), "
				    "see --help",
				    a);
		a += 2;
		eq = strchr(a, '=');
		len = eq != NULL ? (size_t)(eq - a) : strlen(a);
		o = find(table, a, len);
		if (o == NULL)
			return fail(err, err_len, "unknown option '--%.*s'; see --help", (int)len,
				    a);
		if (eq != NULL)
			value = eq + 1;
		else if (o->type != OPT_FLAG) {
			if (i + 1 >= argc)
				return fail(err, err_len, "option --%s needs a value (%s)", o->name,
					    o->arg);
			value = argv[++i];
		}
		if (strcmp(o->name, "config") == 0) {
			if (st->nconfig_files < OPTIONS_CONFIG_FILES_MAX)
				st->config_files[st->nconfig_files++] = value;
			if (load_config(table, target, value, st, err, err_len) != 0)
				return -1;
			continue;
		}
		if (apply(o, target, value, "command line", st, err, err_len) != 0)
			return -1;
	}
	return 0;
}

void options_free(struct options_state *st)
{
	for (size_t i = 0; i < st->nlists; i++) {
		free(st->lists[i]->v);
		st->lists[i]->v = NULL;
		st->lists[i]->n = 0;
	}
	for (size_t i = 0; i < st->ntexts; i++)
		free(st->texts[i]);
	free(st->texts);
	memset(st, 0, sizeof(*st));
}

bool options_given(const struct options_state *st, const char *name)
{
	for (size_t i = 0; i < st->ngiven; i++)
		if (strcmp(st->given[i]->name, name) == 0)
			return true;
	return false;
}

void options_version(FILE *out)
{
	fprintf(out, "mtls %s\n", MTLS_VERSION_STRING);
}

/* Set only by the docs generator, which runs each command's --help with it (options_doc.c). */
static options_help_fn *help_capture;
static void *help_capture_arg;

void options_help_capture(options_help_fn *fn, void *arg)
{
	help_capture = fn;
	help_capture_arg = arg;
}

void options_help(FILE *out, const char *usage, const char *about, const struct opt *table)
{
	if (help_capture != NULL) {
		help_capture(help_capture_arg, usage, about, table);
		return;
	}
	fprintf(out, "usage: %s\n\n%s\n\noptions:\n", usage, about);
	for (const struct opt *o = table; o->name != NULL; o++) {
		char left[64];

		snprintf(left, sizeof(left), "--%s%s%s%s", o->name, o->arg ? " " : "",
			 o->arg ? o->arg : "", o->type == OPT_LIST ? " ..." : "");
		fprintf(out, "  %-28s %s\n", left, o->help);
	}
	fprintf(out, "  %-28s %s\n", "--help", "show this help");
	fprintf(out, "  %-28s %s\n", "--version", "print the version");
	/* where --config is a file of these options (not mtls doctor's, a daemon's config) */
	for (const struct opt *o = table; o->name != NULL; o++)
		if (strcmp(o->name, "config") == 0 && o->help != NULL &&
		    strncmp(o->help, "read options from", 17) == 0)
			fprintf(out, "\nEvery option can also be given in a --config file as 'name "
				     "value'.\n");
	for (const struct opt *o = table; o->name != NULL; o++)
		if (o->type == OPT_DURATION || o->type == OPT_DURATION_S) {
			fprintf(out, "A DURATION is a whole number and a unit: 500ms, 30s, 10m, "
				     "2h, 1d (a bare 0 is 0).\n");
			break;
		}
}
