/*
 * The config-file grammar of cli/options.c (options_parse_text(), documented in
 * cli/options.h and docs/config.md): quoting, comments, flags, lists, duplicates, sections,
 * and for each error the line it names. Table-driven: one config text, and either the values
 * it gives or the start of the error ("FILE:LINE: ...") and a piece of its advice.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "options.h"

struct topts {
	int verbose;
	const char *ca;
	const char *name;
	long long depth;
	long long timeout;
	struct opt_list allow;
	const char *config;
};

#define O(f) offsetof(struct topts, f)
static const struct opt table[] = {
	{"verbose", OPT_FLAG, O(verbose), NULL, "log more"},
	{"ca", OPT_STRING, O(ca), "FILE", "CA bundle"},
	{"name", OPT_STRING, O(name), "NAME", "a name"},
	{"depth", OPT_INT, O(depth), "N", "depth"},
	{"timeout", OPT_DURATION, O(timeout), "DURATION", "timeout"},
	{"allow-uri", OPT_LIST, O(allow), "PATTERN", "allow a URI"},
	{"config", OPT_STRING, O(config), "FILE", "read options from FILE"},
	OPT_END,
};

/* Values a good text gives; NULL/0 where the text gives none. allow0/allow1 the list. */
struct want {
	int verbose;
	const char *ca;
	const char *name;
	long long depth;
	long long timeout;
	size_t nallow;
	const char *allow0;
	const char *allow1;
};

static const struct {
	const char *what;
	const char *text;
	struct want want;
} good[] = {
	{"key value", "ca /etc/ca.pem\n", {.ca = "/etc/ca.pem"}},
	{"key = value", "ca = /etc/ca.pem\n", {.ca = "/etc/ca.pem"}},
	{"key=value", "ca=/etc/ca.pem", {.ca = "/etc/ca.pem"}},
	{"tabs and blanks around", "\t ca \t=\t /a.pem \t\n", {.ca = "/a.pem"}},
	{"blank and comment lines", "# a comment\n\n   # indented\n\t\nca /a\n", {.ca = "/a"}},
	{"comment after a value", "ca /a.pem # ours\n", {.ca = "/a.pem"}},
	{"comment after a tab", "ca /a.pem\t#ours", {.ca = "/a.pem"}},
	{"# inside a value is kept", "ca /a#b.pem\n", {.ca = "/a#b.pem"}},
	{"inner blanks kept", "name My Service  \n", {.name = "My Service"}},
	{"single quotes: literal",
	 "allow-uri 'spiffe://example.org/*'\n",
	 {.nallow = 1, .allow0 = "spiffe://example.org/*"}},
	{"single quotes keep # and \\ and blanks", "name ' a #b \\n '\n", {.name = " a #b \\n "}},
	{"single quotes hold a double quote", "name 'say \"hi\"'", {.name = "say \"hi\""}},
	{"double quotes",
	 "allow-uri = \"spiffe://example.org/ns/*/sa/app\"  # c\n",
	 {.nallow = 1, .allow0 = "spiffe://example.org/ns/*/sa/app"}},
	{"double-quote escapes", "name \"a\\\\b\\\"c\\nd\\te'\"\n", {.name = "a\\b\"c\nd\te'"}},
	{"quoted then comment", "name 'x' # c\nca \"y\"\t#c", {.name = "x", .ca = "y"}},
	{"flag alone is true", "verbose\n", {.verbose = 1}},
	{"flag with a comment", "verbose # yes\n", {.verbose = 1}},
	{"flag false", "verbose false\n", {.verbose = 0}},
	{"flag = yes", "verbose = yes\n", {.verbose = 1}},
	{"flag off", "verbose off\n", {.verbose = 0}},
	{"flag 1", "verbose 1\n", {.verbose = 1}},
	{"flag quoted", "verbose 'no'\n", {.verbose = 0}},
	{"list repeats",
	 "allow-uri a://x\nallow-uri 'b://y'\n",
	 {.nallow = 2, .allow0 = "a://x", .allow1 = "b://y"}},
	{"CRLF line ends", "ca /a.pem\r\ndepth 3\r\n", {.ca = "/a.pem", .depth = 3}},
	{"no newline at the end", "depth 4", {.depth = 4}},
	{"duration", "timeout 30s\n", {.timeout = 30000}},
	{"a comment line that quotes", "# allow-uri 'x\nca /a", {.ca = "/a"}},
	/* editors that save "UTF-8 with BOM" (Notepad): the mark is not part of the first key */
	{"UTF-8 byte order mark first",
	 "\xef\xbb\xbf"
	 "ca /a\r\n",
	 {.ca = "/a"}},
};

static void test_good(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct topts o = {0};
		struct options_state st = {0};
		char err[512] = "";
		char *text = strdup(good[i].text);
		const struct want *w = &good[i].want;
		int rc;

		assert_non_null(text);
		rc = options_parse_text(table, &o, text, strlen(text), "t.conf", &st, err,
					sizeof(err));
		if (rc != 0)
			fail_msg("%s: refused: %s", good[i].what, err);
		if (o.verbose != w->verbose)
			fail_msg("%s: verbose %d", good[i].what, o.verbose);
		if ((o.ca == NULL) != (w->ca == NULL) || (o.ca != NULL && strcmp(o.ca, w->ca) != 0))
			fail_msg("%s: ca [%s]", good[i].what, o.ca ? o.ca : "(null)");
		if ((o.name == NULL) != (w->name == NULL) ||
		    (o.name != NULL && strcmp(o.name, w->name) != 0))
			fail_msg("%s: name [%s]", good[i].what, o.name ? o.name : "(null)");
		if (o.depth != w->depth || o.timeout != w->timeout)
			fail_msg("%s: depth %lld timeout %lld", good[i].what, o.depth, o.timeout);
		if (o.allow.n != w->nallow)
			fail_msg("%s: %zu allow-uri", good[i].what, o.allow.n);
		if (w->nallow > 0 && strcmp(o.allow.v[0], w->allow0) != 0)
			fail_msg("%s: allow-uri [%s]", good[i].what, o.allow.v[0]);
		if (w->nallow > 1 && strcmp(o.allow.v[1], w->allow1) != 0)
			fail_msg("%s: allow-uri 2 [%s]", good[i].what, o.allow.v[1]);
		options_free(&st);
		free(text);
	}
}

/* Each error: the message starts with "t.conf:LINE: " and holds the piece advice. */
static const struct {
	const char *what;
	const char *text;
	int line;
	const char *advice;
} bad[] = {
	{"unknown key", "ca /a\n\nnope 1\n", 3, "unknown key 'nope'; see --help"},
	{"nested config", "config /x.conf\n", 1, "unknown key 'config'"},
	{"unterminated single quote", "ca /a\nname 'abc\n", 2,
	 "unterminated single quote; close it on the same line"},
	{"unterminated double quote", "#\n#\nname \"abc\n", 3, "unterminated double quote"},
	{"a quote spans no lines", "name 'a\nb'\n", 1, "unterminated single quote"},
	{"backslash at the end", "name \"abc\\\n", 1, "unterminated double quote"},
	{"unknown escape", "name \"a\\qb\"\n", 1, "unknown escape '\\q' in double quotes; only"},
	{"\\x is no escape", "\nname \"\\x41\"", 2, "unknown escape '\\x'"},
	{"text after a closing single quote", "name 'a'b\n", 1, "text after the closing quote"},
	{"text after a closing double quote", "name \"a\" b\n", 1,
	 "text after the closing quote; quote the whole value"},
	{"#comment glued to a closing quote", "name 'a'#c\n", 1, "text after the closing quote"},
	{"a quote inside an unquoted value", "allow-uri spiffe://x/'y'\n", 1,
	 "a quote inside an unquoted value; quote the whole value"},
	{"a trailing quote", "ca /a.pem\"\n", 1, "a quote inside an unquoted value"},
	{"flag value", "verbose maybe\n", 1, "verbose takes true or false (yes/no, on/off, 1/0)"},
	{"duplicate single-valued key", "ca /a\n# x\nca /b\n", 3,
	 "ca given again (first on line 1); give it once"},
	{"duplicate flag", "verbose\nverbose no\n", 2, "verbose given again (first on line 1)"},
	{"key without a value", "ca /a\nname\n", 2, "name needs a value; write 'name NAME'"},
	{"key = and nothing", "depth =   # none\n", 1, "depth needs a value; write 'depth N'"},
	{"empty quoted value", "ca ''\n", 1, "ca needs a value (FILE)"},
	{"section", "ca /a\n[db]\n", 2,
	 "sections ([name]) are for several tunnels in one process (mtls server, mtls "
	 "connector); this command reads no [section] line"},
	{"indented section", "  [db]", 1, "sections ([name])"},
	{"line starting with =", "= x\n", 1, "a line starts with '='; write 'key value'"},
	{"bad number", "depth 4x\n", 1, "depth takes a whole number, not '4x'"},
	{"bare duration", "\n\ntimeout 30 # s\n", 3, "timeout 30: give a unit: 30s or 30ms"},
	{"NUL byte", "ca /a\nca\0b\n", 2, "NUL byte in config file"},
	{"control byte", "ca /a\n\n\x1b[31m\n", 3, "control byte 0x1b"},
	{"CR alone", "ca /a\rname b\n", 1, "control byte 0x0d"},
	/* U+009B (CSI in UTF-8): an error quoting the text must not steer the terminal */
	{"C1 control",
	 "ca /a\nname x\xc2\x9b"
	 "31m\n",
	 2, "control character U+009B"},
	{"a byte order mark only first",
	 "ca /a\n\xef\xbb\xbf"
	 "name b\n",
	 2, "unknown key"},
};

static void test_bad(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct topts o = {0};
		struct options_state st = {0};
		char err[512] = "", prefix[32];
		/* the texts with a NUL: their length is up to the last newline */
		size_t len = strlen(bad[i].text);
		char *text;
		int rc;

		if (strcmp(bad[i].what, "NUL byte") == 0)
			len = sizeof("ca /a\nca\0b\n") - 1;
		text = malloc(len + 1);
		assert_non_null(text);
		memcpy(text, bad[i].text, len);
		text[len] = '\0';
		rc = options_parse_text(table, &o, text, len, "t.conf", &st, err, sizeof(err));
		if (rc != -1)
			fail_msg("%s: accepted", bad[i].what);
		snprintf(prefix, sizeof(prefix), "t.conf:%d: ", bad[i].line);
		if (strncmp(err, prefix, strlen(prefix)) != 0)
			fail_msg("%s: does not start with %s: %s", bad[i].what, prefix, err);
		if (strstr(err, bad[i].advice) == NULL)
			fail_msg("%s: does not say '%s': %s", bad[i].what, bad[i].advice, err);
		if (strchr(err, '\n') != NULL)
			fail_msg("%s: not one line: %s", bad[i].what, err);
		options_free(&st);
		free(text);
	}
}

/* A command-line flag after --config overrides the file's value; a list adds to it. */
static void test_command_line_after_config(void **state)
{
	char dir[] = "/tmp/test_options.XXXXXX", path[64];
	char *argv[] = {(char *)(uintptr_t) "--config",	   path,
			(char *)(uintptr_t) "--ca",	   (char *)(uintptr_t) "/cli.pem",
			(char *)(uintptr_t) "--allow-uri", (char *)(uintptr_t) "c://z"};
	struct topts o = {0};
	struct options_state st = {0};
	char err[512] = "";
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/a.conf", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("ca '/file.pem'\nallow-uri \"a://x\"\n", f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(options_parse(table, &o, 6, argv, &st, err, sizeof(err)), 0);
	assert_string_equal(o.ca, "/cli.pem");
	assert_int_equal(o.allow.n, 2);
	assert_string_equal(o.allow.v[0], "a://x");
	assert_string_equal(o.allow.v[1], "c://z");
	options_free(&st);
	/* the file's error names the file and line */
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("ca /a\nca /b\n", f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(options_parse(table, &o, 2, argv, &st, err, sizeof(err)), -1);
	assert_non_null(strstr(err, ":2: ca given again (first on line 1)"));
	assert_non_null(strstr(err, path));
	options_free(&st);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(rmdir(dir), 0);
}

/* Parse text with sections allowed, section wanted (NULL: none) and "verbose" process-wide.
 * Returns the parser's result; o and st are the caller's (options_free(st) after). */
static int parse_sections(const char *text, const char *section, struct topts *o,
			  struct options_state *st, char **copy, char *err, size_t len)
{
	static const char *const process_wide[] = {"verbose", NULL};

	*copy = strdup(text);
	assert_non_null(*copy);
	memset(o, 0, sizeof(*o));
	memset(st, 0, sizeof(*st));
	st->sections_allowed = true;
	st->section = section;
	st->process_wide = process_wide;
	return options_parse_text(table, o, *copy, strlen(*copy), "t.conf", st, err, len);
}

/* [sections]: the defaults before the first, a section's key replacing one, its list
 * replacing the defaults' list, the names listed in order. */
static void test_sections(void **state)
{
	static const char text[] = "verbose\nca /a\nallow-uri g://1\n"
				   "[db]\nname db\n"
				   "[api.v2]  # the API\nallow-uri a://1\nallow-uri a://2\nca /b\n";
	struct topts o;
	struct options_state st;
	char err[512] = "", *copy;

	(void)state;
	/* none wanted: the defaults only, every section named */
	assert_int_equal(parse_sections(text, NULL, &o, &st, &copy, err, sizeof(err)), 0);
	assert_string_equal(o.ca, "/a");
	assert_null(o.name);
	assert_int_equal(o.allow.n, 1);
	assert_int_equal(st.nsections, 2);
	assert_string_equal(st.sections[0], "db");
	assert_string_equal(st.sections[1], "api.v2");
	assert_int_equal(st.section_lines[1], 6);
	assert_false(st.section_found);
	options_free(&st);
	free(copy);
	/* [db]: the defaults and its own name */
	assert_int_equal(parse_sections(text, "db", &o, &st, &copy, err, sizeof(err)), 0);
	assert_true(st.section_found);
	assert_int_equal(o.verbose, 1);
	assert_string_equal(o.ca, "/a");
	assert_string_equal(o.name, "db");
	assert_int_equal(o.allow.n, 1);
	assert_string_equal(o.allow.v[0], "g://1");
	options_free(&st);
	free(copy);
	/* [api.v2]: its ca replaces the default, its list replaces the default list */
	assert_int_equal(parse_sections(text, "api.v2", &o, &st, &copy, err, sizeof(err)), 0);
	assert_string_equal(o.ca, "/b");
	assert_null(o.name);
	assert_int_equal(o.allow.n, 2);
	assert_string_equal(o.allow.v[0], "a://1");
	assert_string_equal(o.allow.v[1], "a://2");
	options_free(&st);
	free(copy);
	/* mistakes in another section are its own pass's: [db] parses */
	assert_int_equal(parse_sections("[db]\nname x\n[api]\nnope 1\nname 'x\nverbose\n"
					"[c]# no blank\n",
					"db", &o, &st, &copy, err, sizeof(err)),
			 0);
	assert_string_equal(o.name, "x");
	assert_int_equal(st.nsections, 3);
	options_free(&st);
	free(copy);
	/* a section the file does not have */
	assert_int_equal(parse_sections(text, "gone", &o, &st, &copy, err, sizeof(err)), 0);
	assert_false(st.section_found);
	options_free(&st);
	free(copy);
}

static void test_sections_bad(void **state)
{
	static const struct {
		const char *what, *text, *section, *want;
	} cases[] = {
		{"empty name", "[]\n", NULL, "t.conf:1: a section name is 1 to 32"},
		{"name starting with -", "[-db]\n", NULL, "t.conf:1: a section name"},
		{"blank in a name", "ca /a\n[d b]\n", NULL, "t.conf:2: a section name"},
		{"text after ]", "[db] x\n", NULL, "t.conf:1: a section name"},
		{"unclosed", "[db\n", NULL, "t.conf:1: a section name"},
		{"33 characters", "[abcdefghijabcdefghijabcdefghijabc]\n", NULL,
		 "t.conf:1: a section name"},
		{"twice", "[a]\nca /x\n[b]\n[a]\n", NULL,
		 "t.conf:4: section [a] given again (first on line 1)"},
		{"process-wide key in a section", "ca /a\n[db]\nverbose\n", "db",
		 "t.conf:3: verbose applies to the whole process; set it before the first "
		 "[section]"},
		{"... in the section's own pass", "[db]\n[api]\nverbose\n", "api",
		 "t.conf:3: verbose applies to the whole process"},
		{"an unknown key, in its section's pass", "[db]\n[api]\nnope 1\n", "api",
		 "t.conf:3: unknown key 'nope'"},
		{"a bad section name in another section", "[db]\nca /a\n[api]\n[a b]\n", "db",
		 "t.conf:4: a section name"},
		{"a second file after one with sections", "[db]\n", "db",
		 "t.conf:1: a config file with [sections] must be the only --config"},
		{"a key twice in one section", "ca /g\n[db]\nca /x\nca /y\n", "db",
		 "t.conf:4: ca given again (first on line 3)"},
		{"a bad value in the wanted section", "[db]\ndepth x\n", "db",
		 "t.conf:2: depth takes a whole number"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct topts o;
		struct options_state st;
		char err[512] = "", *copy;

		/* the last case: as if a file had been read before this one */
		if (strstr(cases[i].what, "second file") != NULL) {
			char *first = strdup("ca /0\n");
			int rc;

			assert_non_null(first);
			memset(&o, 0, sizeof(o));
			memset(&st, 0, sizeof(st));
			st.sections_allowed = true;
			st.section = cases[i].section;
			st.texts = calloc(2, sizeof(*st.texts));
			assert_non_null(st.texts);
			st.texts[st.ntexts++] = first;
			copy = strdup(cases[i].text);
			assert_non_null(copy);
			st.texts[st.ntexts++] = copy;
			rc = options_parse_text(table, &o, copy, strlen(copy), "t.conf", &st, err,
						sizeof(err));
			if (rc != -1)
				fail_msg("%s: accepted", cases[i].what);
			if (strncmp(err, cases[i].want, strlen(cases[i].want)) != 0)
				fail_msg("%s: not '%s...': %s", cases[i].what, cases[i].want, err);
			options_free(&st); /* frees both texts */
			continue;
		}
		if (parse_sections(cases[i].text, cases[i].section, &o, &st, &copy, err,
				   sizeof(err)) != -1)
			fail_msg("%s: accepted", cases[i].what);
		if (strncmp(err, cases[i].want, strlen(cases[i].want)) != 0)
			fail_msg("%s: not '%s...': %s", cases[i].what, cases[i].want, err);
		options_free(&st);
		free(copy);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good),
		cmocka_unit_test(test_bad),
		cmocka_unit_test(test_sections),
		cmocka_unit_test(test_sections_bad),
		cmocka_unit_test(test_command_line_after_config),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
