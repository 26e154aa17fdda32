/*
 * libFuzzer target: the CLI's config-file parser, options_parse_text() in cli/options.c.
 *
 * A config file may come from anywhere the operator points --config at, so the parser must
 * take any bytes. The table has one option of each type (and "config", which a file may
 * not use). After a successful parse, every value must be a non-empty piece of the text
 * (quotes are taken off and escapes undone in place, so it never grows), holding a newline
 * only if the text has a "\n" escape and starting or ending with a blank only if the text
 * has a quote; a "[section]" line is always refused; after options_free() the lists are
 * empty. A text
 * with a NUL or a control byte other than tab (or CR before a newline), or a C1 control
 * character (U+0080..U+009F), is refused as a whole, naming the line: a NUL once silently
 * ended parsing, dropping the lines after it.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "options.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond) ((cond) ? (void)0 : fail(#cond, __LINE__))

__attribute__((noreturn)) static void fail(const char *what, int line)
{
	fprintf(stderr, "fuzz_config.c:%d: invariant failed: %s\n", line, what);
	abort();
}

struct fuzz_opts {
	int verbose;
	int reload;
	const char *ca;
	const char *listen;
	long long depth;
	long long timeout;
	long long grace;
	struct opt_list allow_uri;
	struct opt_list allow_dns;
	const char *config;
};

static const struct opt table[] = {
	{"verbose", OPT_FLAG, offsetof(struct fuzz_opts, verbose), NULL, "log more"},
	{"reload", OPT_FLAG, offsetof(struct fuzz_opts, reload), NULL, "reload on SIGHUP"},
	{"ca", OPT_STRING, offsetof(struct fuzz_opts, ca), "FILE", "CA bundle"},
	{"listen", OPT_STRING, offsetof(struct fuzz_opts, listen), "ADDR", "listen address"},
	{"depth", OPT_INT, offsetof(struct fuzz_opts, depth), "N", "verify depth"},
	{"timeout", OPT_DURATION, offsetof(struct fuzz_opts, timeout), "DURATION", "timeout"},
	{"grace", OPT_DURATION_S, offsetof(struct fuzz_opts, grace), "DURATION", "grace"},
	{"allow-uri", OPT_LIST, offsetof(struct fuzz_opts, allow_uri), "URI", "allow a URI"},
	{"allow-dns", OPT_LIST, offsetof(struct fuzz_opts, allow_dns), "NAME", "allow a name"},
	{"config", OPT_STRING, offsetof(struct fuzz_opts, config), "FILE", "config file"},
	OPT_END,
};

/* A value must lie inside the text and be non-empty; a newline in it comes from a "\n"
 * escape of a double-quoted value, a blank at an end from quotes. */
static const uint8_t *orig;
static size_t orig_size;

static bool orig_has(const char *s)
{
	return memmem(orig, orig_size, s, strlen(s)) != NULL;
}

static void check_value(const char *v, const char *text, size_t size)
{
	size_t len;

	check(v >= text && v < text + size);
	len = strlen(v);
	check(len > 0 && v + len <= text + size);
	check(memchr(v, '\n', len) == NULL || orig_has("\\n"));
	check((v[0] != ' ' && v[0] != '\t' && v[len - 1] != ' ' && v[len - 1] != '\t') ||
	      orig_has("'") || orig_has("\""));
	check(v[len - 1] != '\r');
}

/* Does a line of the text start (after blanks) with '['? */
static bool has_section(const uint8_t *d, size_t n)
{
	bool start = true;

	for (size_t i = 0; i < n; i++) {
		if (d[i] == '\n')
			start = true;
		else if (start && d[i] == '[')
			return true;
		else if (d[i] != ' ' && d[i] != '\t')
			start = false;
	}
	return false;
}

static void check_list(const struct opt_list *l, const char *text, size_t size)
{
	check((l->n == 0) == (l->v == NULL));
	for (size_t i = 0; i < l->n; i++)
		check_value(l->v[i], text, size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_opts o;
	struct options_state st;
	char err[256];
	char *text;
	int rc;

	if (size > 64 * 1024)
		return 0;
	text = malloc(size + 1);
	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	memset(&o, 0, sizeof(o));
	memset(&st, 0, sizeof(st));
	err[0] = '\0';

	orig = data;
	orig_size = size;
	rc = options_parse_text(table, &o, text, size, "fuzz.conf", &st, err, sizeof(err));
	check(rc == 0 || rc == -1);
	check(memchr(err, '\0', sizeof(err)) != NULL);
	if (memchr(data, '\0', size) != NULL) /* refused here, or at a control byte before */
		check(rc == -1 &&
		      (strstr(err, "NUL byte") != NULL || strstr(err, "control byte") != NULL ||
		       strstr(err, "control character") != NULL));
	if (rc == 0)
		for (size_t i = 0; i < size; i++) {
			check(data[i] >= 0x20 || data[i] == '\t' || data[i] == '\n' ||
			      (data[i] == '\r' && (i + 1 == size || data[i + 1] == '\n')));
			/* no C1 control (U+0080..U+009F) either */
			check(!(data[i] == 0xc2 && i + 1 < size && data[i + 1] >= 0x80 &&
				data[i + 1] <= 0x9f));
		}
	if (rc == 0) {
		check(!has_section(data, size));
		check(err[0] == '\0');
		check(o.verbose == 0 || o.verbose == 1);
		check(o.reload == 0 || o.reload == 1);
		check(o.config == NULL);
		/* durations: never negative, never past the parser's bound */
		check(o.timeout >= 0 && o.timeout <= OPTIONS_DURATION_MAX_MS);
		check(o.grace >= 0 && o.grace <= OPTIONS_DURATION_MAX_MS / 1000);
		if (o.ca != NULL)
			check_value(o.ca, text, size);
		if (o.listen != NULL)
			check_value(o.listen, text, size);
		check_list(&o.allow_uri, text, size);
		check_list(&o.allow_dns, text, size);
	} else {
		check(err[0] != '\0');
	}
	options_free(&st);
	check(o.allow_uri.v == NULL && o.allow_uri.n == 0);
	check(o.allow_dns.v == NULL && o.allow_dns.n == 0);
	check(st.nlists == 0 && st.texts == NULL);
	free(text);
	return 0;
}
