/*
 * The PostgreSQL wire messages (tunnel/pgwire.c): a connection's first message classified
 * from its first 8 bytes, the StartupMessage of a real psql parsed, each malformed one
 * refused with its reason, and ErrorResponses byte for byte as PostgreSQL's own. Every input
 * is a heap copy of exactly its length, so that ASan sees a read past it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pgwire.h"

/* psql 15 (user=billing dbname=ledger sslmode=disable gssencmode=disable), captured */
static const uint8_t psql_startup[] = {
	0x00, 0x00, 0x00, 0x3c, 0x00, 0x03, 0x00, 0x00, 'u', 's', 'e', 'r', 0,	 'b', 'i',
	'l',  'l',  'i',  'n',	'g',  0,    'd',  'a',	't', 'a', 'b', 'a', 's', 'e', 0,
	'l',  'e',  'd',  'g',	'e',  'r',  0,	  'a',	'p', 'p', 'l', 'i', 'c', 'a', 't',
	'i',  'o',  'n',  '_',	'n',  'a',  'm',  'e',	0,   'p', 's', 'q', 'l', 0,   0};

/* the same with replication=database, PGOPTIONS='-c search_path=app', PGCLIENTENCODING=UTF8 */
static const char psql_opts_params[] = "user\0billing\0database\0ledger\0replication\0database\0"
				       "options\0-c search_path=app\0application_name\0psql\0"
				       "client_encoding\0UTF8\0";

static uint8_t *copy(const void *p, size_t n)
{
	uint8_t *c = malloc(n > 0 ? n : 1);

	assert_non_null(c);
	memcpy(c, p, n);
	return c;
}

/* A StartupMessage of protocol version with the n bytes of params (their NULs included) and
 * the final NUL: its length field counts what is built, plus adjust. */
static uint8_t *startup(uint32_t version, const char *params, size_t n, int adjust, size_t *len)
{
	uint8_t *m = malloc(8 + n + 1);
	uint32_t l = (uint32_t)(8 + n + 1) + (uint32_t)adjust;

	assert_non_null(m);
	m[0] = (uint8_t)(l >> 24);
	m[1] = (uint8_t)(l >> 16);
	m[2] = (uint8_t)(l >> 8);
	m[3] = (uint8_t)l;
	m[4] = (uint8_t)(version >> 24);
	m[5] = (uint8_t)(version >> 16);
	m[6] = (uint8_t)(version >> 8);
	m[7] = (uint8_t)version;
	memcpy(m + 8, params, n);
	m[8 + n] = 0;
	*len = 8 + n + 1;
	return m;
}

static void test_classify(void **state)
{
	static const struct {
		uint8_t b[8];
		enum pgwire_kind kind;
		uint32_t len;
	} cases[] = {
		{{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}, PGWIRE_SSL, 8},
		{{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30}, PGWIRE_GSSENC, 8},
		{{0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e}, PGWIRE_CANCEL, 16},
		{{0, 0, 0, 0x3c, 0, 3, 0, 0}, PGWIRE_STARTUP, 0x3c},
		{{0, 0, 0, 9, 0, 3, 0, 2}, PGWIRE_STARTUP, 9},		 /* 3.2 (PostgreSQL 18) */
		{{0, 0, 0x27, 0x10, 0, 3, 0, 0}, PGWIRE_STARTUP, 10000}, /* the largest */
		{{0, 0, 0x27, 0x11, 0, 3, 0, 0}, PGWIRE_BAD, 0},	 /* one more */
		{{0, 0, 0, 8, 0, 3, 0, 0}, PGWIRE_BAD, 0},		 /* no room for a NUL */
		{{0, 0, 0, 0, 0, 3, 0, 0}, PGWIRE_BAD, 0},
		{{0xff, 0xff, 0xff, 0xff, 0, 3, 0, 0}, PGWIRE_BAD, 0},
		{{0, 0, 0, 0x3c, 0, 2, 0, 0}, PGWIRE_BAD, 0}, /* protocol 2 */
		{{0, 0, 0, 0x3c, 0, 4, 0, 0}, PGWIRE_BAD, 0},
		{{0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2f}, PGWIRE_BAD, 0}, /* SSLRequest of 16 */
		{{0, 0, 0, 9, 0x04, 0xd2, 0x16, 0x2f}, PGWIRE_BAD, 0},
		{{0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x30}, PGWIRE_BAD, 0}, /* GSSENCRequest of 16 */
		{{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2e}, PGWIRE_BAD, 0},	/* CancelRequest of 8 */
		{{0, 0, 0, 17, 0x04, 0xd2, 0x16, 0x2e}, PGWIRE_BAD, 0},
		{{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x31}, PGWIRE_BAD, 0}, /* 1234.5681: none */
		/* direct TLS: a ClientHello's record header and handshake type */
		{{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01}, PGWIRE_BAD, 0},
		/* an HTTP client */
		{{'G', 'E', 'T', ' ', '/', ' ', 'H', 'T'}, PGWIRE_BAD, 0},
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint8_t *b = copy(cases[i].b, 8);
		uint32_t len = 12345;

		assert_int_equal(pgwire_classify(b, 8, &len), cases[i].kind);
		assert_int_equal(len, cases[i].len);
		assert_int_equal(pgwire_classify(b, 8, NULL), cases[i].kind);
		free(b);
	}
}

/* Fewer than 8 bytes are never enough, whatever they are, and none past n is read. */
static void test_classify_need_more(void **state)
{
	size_t n;

	(void)state;
	for (n = 0; n < 8; n++) {
		uint8_t *b = copy(psql_startup, n);
		uint32_t len = 12345;

		assert_int_equal(pgwire_classify(b, n, &len), PGWIRE_NEED_MORE);
		assert_int_equal(len, 0);
		free(b);
	}
	/* 8 bytes of a longer message are enough to know it, not to parse it */
	{
		uint8_t *b = copy(psql_startup, 8);
		uint32_t len = 0;

		assert_int_equal(pgwire_classify(b, 8, &len), PGWIRE_STARTUP);
		assert_int_equal(len, sizeof(psql_startup));
		free(b);
	}
}

static void test_kind_name(void **state)
{
	(void)state;
	assert_string_equal(pgwire_kind_name(PGWIRE_NEED_MORE), "need_more");
	assert_string_equal(pgwire_kind_name(PGWIRE_SSL), "ssl_request");
	assert_string_equal(pgwire_kind_name(PGWIRE_GSSENC), "gssenc_request");
	assert_string_equal(pgwire_kind_name(PGWIRE_CANCEL), "cancel_request");
	assert_string_equal(pgwire_kind_name(PGWIRE_STARTUP), "startup_message");
	assert_string_equal(pgwire_kind_name(PGWIRE_BAD), "bad");
	assert_string_equal(pgwire_kind_name((enum pgwire_kind)99), "unknown");
}

static void test_ssl_request(void **state)
{
	static const uint8_t want[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
	uint8_t b[8];
	uint32_t len;

	(void)state;
	pgwire_ssl_request(b);
	assert_memory_equal(b, want, 8);
	assert_int_equal(pgwire_classify(b, 8, &len), PGWIRE_SSL);
	assert_int_equal(len, 8);
}

static void test_parse_psql(void **state)
{
	uint8_t *m = copy(psql_startup, sizeof(psql_startup));
	struct pgwire_startup s;
	char err[200] = "";
	uint32_t len;

	(void)state;
	assert_int_equal(pgwire_classify(m, sizeof(psql_startup), &len), PGWIRE_STARTUP);
	assert_int_equal(pgwire_startup_parse(m, len, &s, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	assert_int_equal(s.version, 0x00030000);
	assert_string_equal(s.user, "billing");
	assert_string_equal(s.database, "ledger");
	assert_string_equal(s.application_name, "psql");
	/* pointers into the message */
	assert_true((const uint8_t *)s.user > m && (const uint8_t *)s.user < m + len);
	free(m);
}

/* options, replication, client_encoding and _pq_. extensions are pairs like any other */
static void test_parse_other_parameters(void **state)
{
	static const char pq[] = "_pq_.command_marker\0true\0user\0app\0_pq_.x\0\0";
	struct pgwire_startup s;
	char err[200] = "";
	size_t len;
	uint8_t *m;

	(void)state;
	m = startup(0x00030000, psql_opts_params, sizeof(psql_opts_params) - 1, 0, &len);
	assert_int_equal(len, 0x81); /* the size psql's was, captured */
	assert_int_equal(pgwire_startup_parse(m, len, &s, err, sizeof(err)), 0);
	assert_string_equal(s.user, "billing");
	assert_string_equal(s.database, "ledger");
	assert_string_equal(s.application_name, "psql");
	free(m);

	m = startup(0x00030002, pq, sizeof(pq) - 1, 0, &len);
	assert_int_equal(pgwire_startup_parse(m, len, &s, err, sizeof(err)), 0);
	assert_int_equal(s.version, 0x00030002);
	assert_string_equal(s.user, "app");
	assert_null(s.database);
	assert_null(s.application_name);
	free(m);
}

/* An empty database is no database (PostgreSQL uses the user's); application_name is a
 * setting, named in any case; an empty value is a value. */
static void test_parse_names(void **state)
{
	static const char p1[] = "database\0\0user\0u\0Application_NAME\0x\0";
	static const char p2[] = "user\0u\0options\0\0";
	/* 63 bytes: the longest name PostgreSQL keeps whole */
	static const char p3[] =
		"user\0"
		"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijk\0"
		"database\0"
		"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijk\0";
	struct pgwire_startup s;
	char err[200] = "";
	size_t len;
	uint8_t *m;

	(void)state;
	m = startup(0x00030000, p1, sizeof(p1) - 1, 0, &len);
	assert_int_equal(pgwire_startup_parse(m, len, &s, err, sizeof(err)), 0);
	assert_null(s.database);
	assert_string_equal(s.user, "u");
	assert_string_equal(s.application_name, "x");
	free(m);

	m = startup(0x00030000, p2, sizeof(p2) - 1, 0, &len);
	assert_int_equal(pgwire_startup_parse(m, len, &s, err, sizeof(err)), 0);
	assert_string_equal(s.user, "u");
	free(m);

	m = startup(0x00030000, p3, sizeof(p3) - 1, 0, &len);
	assert_int_equal(pgwire_startup_parse(m, len, &s, err, sizeof(err)), 0);
	assert_int_equal(strlen(s.user), 63);
	assert_int_equal(strlen(s.database), 63);
	free(m);
}

/* Each refusal, with the words of its reason; *out stays empty and the reason is one line. */
static void test_parse_refusals(void **state)
{
#define P(s) s, sizeof(s) - 1
	static const struct {
		const char *what;
		uint32_t version;
		const char *params; /* the final NUL is added */
		size_t n;
		int adjust;	 /* added to the length field */
		size_t truncate; /* bytes cut off the end */
		const char *reason;
	} cases[] = {
		{"a name twice", 0x30000, P("user\0a\0database\0d\0user\0b\0"), 0, 0,
		 "\"user\" given twice"},
		{"a setting twice in another case", 0x30000,
		 P("user\0a\0application_name\0x\0APPLICATION_NAME\0y\0"), 0, 0,
		 "\"APPLICATION_NAME\" given twice"},
		{"database twice", 0x30000, P("database\0\0user\0a\0database\0d\0"), 0, 0,
		 "\"database\" given twice"},
		{"an empty name", 0x30000, P("user\0a\0\0v\0"), 0, 0, "empty parameter name"},
		{"bytes after the final NUL", 0x30000, P("user\0a\0"), 0, 0, "after the NUL"},
		{"no final NUL", 0x30000, P("user\0a\0"), 0, 1, "no NUL ends"},
		{"no value", 0x30000, P("user\0a\0database\0"), 0, 1, "\"database\" has no value"},
		{"a value without its NUL", 0x30000, P("user\0a\0database\0d"), 0, 1,
		 "value of \"database\" has no NUL"},
		{"a name without its NUL", 0x30000, P("user\0a\0database"), 0, 1, "no NUL ends"},
		{"no user", 0x30000, P("database\0d\0application_name\0psql\0"), 0, 0,
		 "no user name"},
		{"user in capitals (PostgreSQL's setting, not its user)", 0x30000, P("USER\0a\0"),
		 0, 0, "no user name"},
		{"an empty user", 0x30000, P("user\0\0database\0d\0"), 0, 0, "no user name"},
		{"no parameters", 0x30000, P(""), 0, 0, "no user name"},
		{"a user PostgreSQL would cut", 0x30000,
		 P("user\0abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijkl\0"), 0,
		 0, "user name longer than 63 bytes"},
		{"a database PostgreSQL would cut", 0x30000,
		 P("user\0u\0database\0"
		   "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijkl\0"),
		 0, 0, "database name longer than 63 bytes"},
		{"a length field too long", 0x30000, P("user\0a\0"), 1, 0, "length field says"},
		{"a length field too short", 0x30000, P("user\0a\0"), -1, 0, "length field says"},
		{"protocol 2", 0x20000, P("user\0a\0"), 0, 0, "protocol 2.0"},
		{"an SSLRequest's code", 80877103u, P("user\0a\0"), 0, 0, "protocol 1234.5679"},
		{"a control byte in a name is not quoted", 0x30000,
		 P("user\0a\0x\ny\0a\0x\ny\0b\0"), 0, 0, "a parameter given twice"},
	};
#undef P
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct pgwire_startup s;
		char err[200] = "";
		size_t len;
		uint8_t *m = startup(cases[i].version, cases[i].params, cases[i].n,
				     cases[i].adjust - (int)cases[i].truncate, &len);
		uint8_t *exact;

		/* "bytes after the final NUL": one more byte after it */
		if (strcmp(cases[i].what, "bytes after the final NUL") == 0) {
			m = realloc(m, len + 1);
			assert_non_null(m);
			m[len] = 'x';
			len++;
			m[3] = (uint8_t)len;
		}
		len -= cases[i].truncate;
		exact = copy(m, len);
		memset(&s, 0xa5, sizeof(s));
		print_message("%s\n", cases[i].what);
		assert_int_equal(pgwire_startup_parse(exact, len, &s, err, sizeof(err)), -1);
		assert_non_null(strstr(err, cases[i].reason));
		assert_non_null(strstr(err, "startup message: "));
		assert_null(strchr(err, '\n'));
		assert_null(s.user);
		assert_null(s.database);
		assert_null(s.application_name);
		free(exact);
		free(m);
	}
}

/* Lengths outside 9..10000 are refused before any byte is read as a parameter; no err buffer
 * is needed. */
static void test_parse_bounds(void **state)
{
	static const uint8_t nine[9] = {0, 0, 0, 9, 0, 3, 0, 0, 0};
	struct pgwire_startup s;
	char err[64];
	uint8_t *big = calloc(1, PGWIRE_STARTUP_MAX + 1);

	(void)state;
	assert_non_null(big);
	big[2] = 0x27;
	big[3] = 0x11;
	big[5] = 3;
	assert_int_equal(pgwire_startup_parse(big, PGWIRE_STARTUP_MAX + 1, &s, err, sizeof(err)),
			 -1);
	assert_non_null(strstr(err, "not 9 to 10000"));
	assert_int_equal(pgwire_startup_parse(nine, 8, &s, NULL, 0), -1);
	assert_int_equal(pgwire_startup_parse(nine, 9, &s, NULL, 0), -1); /* no user */
	/* a reason cut to a small buffer stays a string */
	assert_int_equal(pgwire_startup_parse(nine, 9, &s, err, 5), -1);
	assert_string_equal(err, "star");
	free(big);
}

/* A StartupMessage near the largest: about 2000 distinct names, each searched for among those
 * before it. */
static void test_parse_many(void **state)
{
	char *params = malloc(PGWIRE_STARTUP_MAX);
	struct pgwire_startup s;
	char err[200] = "";
	size_t n = 0, len;
	unsigned i = 0;
	uint8_t *m;

	(void)state;
	assert_non_null(params);
	memcpy(params, "user\0u\0", 7);
	n = 7;
	while (n + 10 <= PGWIRE_STARTUP_MAX - 9) { /* room for one more name below */
		params[n++] = (char)('a' + i % 26);
		params[n++] = (char)('a' + i / 26 % 26);
		params[n++] = (char)('a' + i / 676 % 26);
		params[n++] = '\0';
		params[n++] = '\0';
		i++;
	}
	m = startup(0x30000, params, n, 0, &len);
	assert_true(len <= PGWIRE_STARTUP_MAX);
	assert_int_equal(pgwire_startup_parse(m, len, &s, err, sizeof(err)), 0);
	/* the last name again, at the very end */
	memcpy(params + n, params + n - 5, 5);
	free(m);
	m = startup(0x30000, params, n + 5, 0, &len);
	assert_true(len <= PGWIRE_STARTUP_MAX);
	assert_int_equal(pgwire_startup_parse(m, len, &s, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "given twice"));
	free(m);
	free(params);
}

/* The ErrorResponse PostgreSQL itself sends: psql prints "FATAL:  <message>" and the hint. */
static void test_error_response(void **state)
{
	static const char msg[] = "mtls: this server accepts only TLS with a client certificate";
	static const char hint[] = "connect with sslmode=verify-full, sslcert and sslkey";
	uint8_t want[256], *out;
	size_t n = 0, got;

	(void)state;
	want[n++] = 'E';
	n += 4;
	memcpy(want + n, "SFATAL\0VFATAL\0C28000\0M", 22);
	n += 22;
	memcpy(want + n, msg, sizeof(msg));
	n += sizeof(msg);
	want[n++] = 'H';
	memcpy(want + n, hint, sizeof(hint));
	n += sizeof(hint);
	want[n++] = 0;
	want[1] = 0;
	want[2] = 0;
	want[3] = (uint8_t)((n - 1) >> 8);
	want[4] = (uint8_t)(n - 1);

	/* exactly the room it needs */
	out = malloc(n);
	assert_non_null(out);
	got = pgwire_error_response(out, n, "28000", msg, hint);
	assert_int_equal(got, n);
	assert_memory_equal(out, want, n);
	free(out);

	/* one byte less: refused, out untouched */
	out = malloc(n - 1);
	assert_non_null(out);
	memset(out, 0x5a, n - 1);
	assert_int_equal(pgwire_error_response(out, n - 1, "28000", msg, hint), 0);
	assert_int_equal(out[0], 0x5a);
	free(out);
	assert_int_equal(pgwire_error_response(NULL, 0, "28000", msg, hint), 0);

	/* without a hint: no H field */
	out = malloc(n);
	assert_non_null(out);
	got = pgwire_error_response(out, n, "28000", msg, NULL);
	assert_int_equal(got, n - 2 - strlen(hint));
	assert_memory_equal(out + 5, want + 5, got - 6);
	assert_int_equal(out[1] << 24 | out[2] << 16 | out[3] << 8 | out[4], got - 1);
	assert_int_equal(out[got - 1], 0);
	assert_int_equal(out[got - 2], 0); /* the message's NUL, then the end */
	free(out);
}

/* Control bytes (a client's role name quoted as it is), a malformed SQLSTATE or no message:
 * nothing is written. */
static void test_error_response_refusals(void **state)
{
	static const struct {
		const char *sqlstate, *message, *hint;
	} cases[] = {
		{"28000", "role \"a\nFATAL:  b\"", NULL},
		{"28000", "tab\there", NULL},
		{"28000", "ok", "\x1b[31m"},
		{"28000", "ok", "x\x1f"},
		{"2800", "ok", NULL},
		{"280000", "ok", NULL},
		{"28a00", "ok", NULL},
		{"28 00", "ok", NULL},
		{NULL, "ok", NULL},
		{"28000", NULL, NULL},
	};
	uint8_t out[256];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(out, 0x5a, sizeof(out));
		assert_int_equal(pgwire_error_response(out, sizeof(out), cases[i].sqlstate,
						       cases[i].message, cases[i].hint),
				 0);
		assert_int_equal(out[0], 0x5a);
	}
	/* bytes >= 0x20, UTF-8 included, are kept */
	assert_true(pgwire_error_response(out, sizeof(out), "3D000", "r\xc3\xb4le \x7f", NULL) > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_classify),
		cmocka_unit_test(test_classify_need_more),
		cmocka_unit_test(test_kind_name),
		cmocka_unit_test(test_ssl_request),
		cmocka_unit_test(test_parse_psql),
		cmocka_unit_test(test_parse_other_parameters),
		cmocka_unit_test(test_parse_names),
		cmocka_unit_test(test_parse_refusals),
		cmocka_unit_test(test_parse_bounds),
		cmocka_unit_test(test_parse_many),
		cmocka_unit_test(test_error_response),
		cmocka_unit_test(test_error_response_refusals),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
