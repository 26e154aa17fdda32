/*
 * libFuzzer target: the daemons' log lines (tunnel/log.c) with a value a peer chose.
 *
 * The input (up to its first NUL) is logged as the "identity" field of an event, as a CN or
 * SAN of a client certificate would be, once as logfmt and once as JSON. logfmt_value()
 * decodes UTF-8 by hand to decide what to escape.
 *
 * Invariants: each event is exactly one line without control bytes, DEL, C1 controls, line
 * or paragraph separators or bidi controls; the logfmt line has our keys and no other
 * (ts level event conn identity rule, and truncated when cut), and unescaping its identity
 * gives back the input (a prefix of it when cut); the JSON line is ASCII and valid JSON, and
 * its identity is the input when that is UTF-8.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond) ((cond) ? (void)0 : fail(#cond, __LINE__))

__attribute__((noreturn)) static void fail(const char *what, int line)
{
	fprintf(stderr, "fuzz_logfmt.c:%d: invariant failed: %s\n", line, what);
	abort();
}

static char path[64];
static char *line; /* the last line logged */

static void free_line(void)
{
	free(line);
}

/* The log goes to a temporary file that is unlinked at once (and reached through
 * /proc/self/fd), so that nothing is left behind when an input crashes the target. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char tmp[] = "/tmp/fuzz_logfmt.XXXXXX";
	int fd;

	(void)argc;
	(void)argv;
	fd = mkstemp(tmp);
	if (fd < 0)
		abort();
	unlink(tmp);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	atexit(free_line);
	return 0;
}

/* The line logged for value in format f, in line (allocated); its length. */
static size_t logged(enum log_format f, const char *value)
{
	FILE *in;
	long n;

	check(truncate(path, 0) == 0);
	/* no buffer: the line is written by this call, before it returns */
	check(log_setup_buffer(f, LOG_DEBUG, path, 0) == 0);
	LOG(LOG_INFO, "conn_open", LN("conn", 7), LS("identity", value), LS("rule", "any"));
	in = fopen(path, "rb");
	check(in != NULL);
	check(fseek(in, 0, SEEK_END) == 0 && (n = ftell(in)) >= 0);
	rewind(in);
	free(line);
	line = malloc((size_t)n + 1);
	check(line != NULL);
	check(fread(line, 1, (size_t)n, in) == (size_t)n);
	fclose(in);
	line[n] = '\0';
	return (size_t)n;
}

static void one_clean_line(size_t n)
{
	const unsigned char *p = (const unsigned char *)line;

	check(n > 0 && p[n - 1] == '\n');
	for (size_t i = 0; i + 1 < n; i++) {
		check(p[i] >= 0x20 && p[i] != 0x7f);
		check(!(p[i] == 0xc2 && p[i + 1] >= 0x80 && p[i + 1] <= 0x9f));
		check(!(p[i] == 0xe2 && p[i + 1] == 0x80 && i + 2 < n && p[i + 2] >= 0xa8 &&
			p[i + 2] <= 0xae));
		check(!(p[i] == 0xe2 && p[i + 1] == 0x81 && i + 2 < n && p[i + 2] >= 0xa6 &&
			p[i + 2] <= 0xa9));
	}
}

static int hex(int c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Unescape the logfmt value at *pp (bare or quoted) into out; *pp moves past it. */
static size_t unescape(const char **pp, char *out)
{
	const char *p = *pp;
	size_t n = 0;

	if (*p != '"') {
		while (*p != ' ' && *p != '\n') {
			check(*p != '"' && *p != '=' && *p != '\\');
			out[n++] = *p++;
		}
		*pp = p;
		return n;
	}
	for (p++; *p != '"'; p++) {
		check(*p != '\n' && *p != '\0');
		if (*p != '\\') {
			out[n++] = *p;
			continue;
		}
		p++;
		if (*p == 'n' || *p == 'r' || *p == 't') {
			out[n++] = *p == 'n' ? '\n' : *p == 'r' ? '\r' : '\t';
		} else if (*p == '"' || *p == '\\') {
			out[n++] = *p;
		} else if (*p == 'x') {
			check(hex(p[1]) >= 0 && hex(p[2]) >= 0);
			out[n++] = (char)(hex(p[1]) << 4 | hex(p[2]));
			p += 2;
		} else {
			unsigned cp = 0;

			check(*p == 'u');
			for (int i = 1; i <= 4; i++) {
				check(hex(p[i]) >= 0);
				cp = cp << 4 | (unsigned)hex(p[i]);
			}
			p += 4;
			check(cp >= 0x80 && cp <= 0xffff);
			if (cp < 0x800) {
				out[n++] = (char)(0xc0 | cp >> 6);
			} else {
				out[n++] = (char)(0xe0 | cp >> 12);
				out[n++] = (char)(0x80 | (cp >> 6 & 0x3f));
			}
			out[n++] = (char)(0x80 | (cp & 0x3f));
		}
	}
	*pp = p + 1;
	return n;
}

static void check_logfmt(const char *value, size_t len)
{
	size_t n = logged(LOG_LOGFMT, value), k;
	char *got = malloc(n + 1);
	const char *p = strstr(line, " event=conn_open conn=7 identity=");
	bool cut;

	one_clean_line(n);
	check(strncmp(line, "ts=", 3) == 0 && p != NULL && strchr(line, ' ') < p + 1);
	p += strlen(" event=conn_open conn=7 identity=");
	k = unescape(&p, got);
	cut = strcmp(p, " truncated=1\n") == 0;
	check(cut || strcmp(p, " rule=any\n") == 0);
	check(k <= len && memcmp(got, value, k) == 0);
	check(cut || k == len);
	check(n <= 4096);
	free(got);
}

static void check_json(const char *value)
{
	size_t n = logged(LOG_JSON, value);
	json_t *obj, *utf8 = json_string(value);
	json_error_t error;
	const char *got;

	one_clean_line(n);
	for (size_t i = 0; i < n; i++)
		check((unsigned char)line[i] < 0x80);
	obj = json_loads(line, 0, &error);
	check(obj != NULL);
	got = json_string_value(json_object_get(obj, "identity"));
	check(got != NULL);
	check(utf8 == NULL || strcmp(got, value) == 0);
	json_decref(utf8);
	json_decref(obj);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *value = malloc(size + 1);
	size_t len;

	if (value == NULL)
		return 0;
	memcpy(value, data, size);
	value[size] = '\0';
	len = strlen(value);
	check_logfmt(value, len);
	check_json(value);
	free(value);
	return 0;
}
