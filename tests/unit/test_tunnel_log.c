/*
 * The daemons' log lines (tunnel/log.c), table-driven: whatever bytes a peer puts in a
 * certificate field, an event is exactly one line, its value stays one quoted logfmt value
 * (no forged key, no forged line, no terminal control), and JSON lines stay valid JSON.
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
#include <jansson.h>

#include "log.h"

struct log_case {
	const char *value;  /* a peer-controlled field */
	const char *logfmt; /* how logfmt must show it */
};

static const struct log_case cases[] = {
	{"spiffe://example.org/ns/prod/sa/app1", "spiffe://example.org/ns/prod/sa/app1"},
	{"", "\"\""},
	{"two words", "\"two words\""},
	{"x\n reason=ok", "\"x\\n reason=ok\""},
	{"x\r\nts=0 level=error event=forged", "\"x\\r\\nts=0 level=error event=forged\""},
	{"tab\there", "\"tab\\there\""},
	{"a\"b", "\"a\\\"b\""},
	{"a\\b", "\"a\\\\b\""},
	{"k=v", "\"k=v\""},
	{"a\" reason=\"ok", "\"a\\\" reason=\\\"ok\""},
	/* control bytes without a space: quoted and escaped all the same */
	{"a\vreason=ok", "\"a\\x0breason=ok\""},
	{"a\freason=ok", "\"a\\x0creason=ok\""},
	{"\x1b[2J\x1b[31mred", "\"\\x1b[2J\\x1b[31mred\""},
	{"a\x1c\x1d\x1e", "\"a\\x1c\\x1d\\x1e\""},
	{"del\x7f", "\"del\\x7f\""},
	/* UTF-8: characters as they are, line breaks and bidi controls escaped */
	{"caf\xc3\xa9", "\"caf\xc3\xa9\""},
	{"nel\xc2\x85x", "\"nel\\u0085x\""},
	{"ls\xe2\x80\xa8ps\xe2\x80\xa9", "\"ls\\u2028ps\\u2029\""},
	{"rlo\xe2\x80\xaex", "\"rlo\\u202ex\""},
	{"fsi\xe2\x81\xa8x", "\"fsi\\u2068x\""},
	{"emoji\xf0\x9f\x94\x92", "\"emoji\xf0\x9f\x94\x92\""},
	/* not UTF-8: each byte as \xHH */
	{"latin1\x85x", "\"latin1\\x85x\""},
	{"overlong\xc0\xaf", "\"overlong\\xc0\\xaf\""},
	{"surrogate\xed\xa0\x80", "\"surrogate\\xed\\xa0\\x80\""},
	{"cut\xe2\x80", "\"cut\\xe2\\x80\""},
	{"big\xf4\x90\x80\x80", "\"big\\xf4\\x90\\x80\\x80\""},
};

static char path[64];

static int setup(void **state)
{
	int fd;

	(void)state;
	snprintf(path, sizeof(path), "/tmp/test_tunnel_log.XXXXXX");
	fd = mkstemp(path);
	if (fd < 0)
		return -1;
	close(fd);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(path);
	return 0;
}

/* The log file's text after one conn_open event with identity value (caller frees). */
static char *logged(enum log_format format, const char *value)
{
	FILE *f;
	char *text;
	long len;

	assert_int_equal(truncate(path, 0), 0);
	assert_int_equal(log_setup(format, LOG_DEBUG, path), 0);
	LOG(LOG_INFO, "conn_open", LN("conn", 7), LS("identity", value), LS("rule", "any"));
	f = fopen(path, "rb");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	rewind(f);
	text = malloc((size_t)len + 1);
	assert_non_null(text);
	assert_int_equal(fread(text, 1, (size_t)len, f), (size_t)len);
	text[len] = '\0';
	fclose(f);
	return text;
}

/* One line: a single '\n', at the end, and no other byte below 0x20 nor DEL. */
static void assert_one_line(const char *text, const char *value)
{
	size_t len = strlen(text);

	if (len == 0 || text[len - 1] != '\n')
		fail_msg("no line for value \"%s\"", value);
	for (size_t i = 0; i + 1 < len; i++)
		if ((unsigned char)text[i] < 0x20 || (unsigned char)text[i] == 0x7f)
			fail_msg("byte 0x%02x at %zu of the line for a value: %s",
				 (unsigned char)text[i], i, text);
}

/* The keys of a logfmt line, space separated, as a reader splitting on unquoted spaces and
 * skipping quoted values (with their backslash escapes) sees them. */
static void logfmt_keys(const char *line, char *keys, size_t cap)
{
	const char *p = line;
	size_t used = 0;

	keys[0] = '\0';
	while (*p != '\0' && *p != '\n') {
		const char *eq = strchr(p, '=');

		assert_non_null(eq);
		used += (size_t)snprintf(keys + used, cap - used, "%s%.*s", used > 0 ? " " : "",
					 (int)(eq - p), p);
		assert_true(used < cap);
		p = eq + 1;
		if (*p == '"') {
			for (p++; *p != '"'; p++) {
				assert_true(*p != '\0' && *p != '\n');
				if (*p == '\\')
					p++;
			}
			p++;
		} else {
			p += strcspn(p, " \n");
		}
		if (*p == ' ')
			p++;
	}
}

static void test_logfmt(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *text = logged(LOG_LOGFMT, cases[i].value), want[256], keys[256];
		const char *field = strstr(text, " identity=");

		assert_one_line(text, cases[i].value);
		snprintf(want, sizeof(want), " identity=%s rule=any\n", cases[i].logfmt);
		if (field == NULL || strcmp(field, want) != 0)
			fail_msg("case %zu: got \"%s\", want \"...%s\"", i, text, want);
		logfmt_keys(text, keys, sizeof(keys));
		assert_string_equal(keys, "ts level event conn identity rule");
		free(text);
	}
}

static void test_json(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *text = logged(LOG_JSON, cases[i].value);
		json_error_t error;
		json_t *obj;
		json_t *utf8 = json_string(cases[i].value); /* NULL: not UTF-8 */
		const char *got;

		assert_one_line(text, cases[i].value);
		for (const char *p = text; *p != '\0'; p++)
			assert_true((unsigned char)*p < 0x80); /* ASCII only */
		obj = json_loads(text, 0, &error);
		if (obj == NULL)
			fail_msg("case %zu: not JSON (%s): %s", i, error.text, text);
		assert_int_equal(json_object_size(obj), 6);
		got = json_string_value(json_object_get(obj, "identity"));
		assert_non_null(got);
		/* UTF-8 values come back as they were; others with '?' for what is not */
		if (utf8 != NULL)
			assert_string_equal(got, cases[i].value);
		json_decref(utf8);
		json_decref(obj);
		free(text);
	}
}

/* A value longer than a line is cut at a whole escape, its quote closed, and the line says
 * so; the fields after it are dropped, never half-written. */
static void test_truncated(void **state)
{
	char *value = malloc(6001), *text;
	const char *q;
	size_t len;

	(void)state;
	assert_non_null(value);
	for (size_t i = 0; i < 6000; i++)
		value[i] = i % 2 == 0 ? '\n' : 'x';
	value[6000] = '\0';
	text = logged(LOG_LOGFMT, value);
	len = strlen(text);
	assert_one_line(text, "(long)");
	assert_true(len <= 4096);
	assert_true(len > 4000);
	assert_string_equal(text + len - strlen("\" truncated=1\n"), "\" truncated=1\n");
	q = strstr(text, " identity=\"");
	assert_non_null(q);
	for (q += 11; *q != '"';) {
		if (q[0] == '\\' && q[1] == 'n')
			q += 2;
		else
			assert_int_equal(*q++, 'x');
	}
	assert_string_equal(q, "\" truncated=1\n");
	free(text);
	free(value);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_logfmt),
		cmocka_unit_test(test_json),
		cmocka_unit_test(test_truncated),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
