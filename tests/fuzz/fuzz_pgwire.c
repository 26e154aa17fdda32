/*
 * libFuzzer target: a connection's first bytes as `mtls server --protocol postgresql` reads
 * them (tunnel/pgwire.c): classified, parsed as a StartupMessage, and what was parsed written
 * back into an ErrorResponse that is decoded again.
 *
 * Every call gets a heap copy of exactly the bytes it may read, so ASan reports a read past
 * them. Invariants: fewer than 8 bytes are NEED_MORE, and 8 or more are classified by their
 * first 8 alone, with the length the kind implies (8, 16, or the length field within
 * 9..10000 for major 3) and 0 for BAD; a parse succeeds only on a whole StartupMessage (its
 * length field = len, major 3, the last byte NUL) that classifies as one, and then every
 * string lies NUL-terminated inside it, user and database are the values of exactly the names
 * "user" and "database" (empty database = NULL; both at most 63 bytes), no name is there twice
 * ignoring ASCII case; a refusal leaves *out all NULL and a one-line printable reason; an
 * ErrorResponse decodes to its fields, needs exactly the room it says, and is refused (0)
 * exactly when a string holds a byte below 0x20.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pgwire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond) ((cond) ? (void)0 : fail(#cond, __LINE__))

__attribute__((noreturn)) static void fail(const char *what, int line)
{
	fprintf(stderr, "fuzz_pgwire: invariant failed at line %d: %s\n", line, what);
	abort();
}

static uint8_t *copy(const uint8_t *p, size_t n)
{
	uint8_t *c = malloc(n > 0 ? n : 1);

	if (c == NULL)
		abort();
	if (n > 0)
		memcpy(c, p, n);
	return c;
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int has_control(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20)
			return 1;
	return 0;
}

static void check_classify(const uint8_t *data, size_t size)
{
	enum pgwire_kind k, k8;
	uint32_t len = 777, len8 = 777;
	size_t n = size < 8 ? size : 8;
	uint8_t *head = copy(data, n);

	k8 = pgwire_classify(head, n, &len8);
	k = pgwire_classify(data, size, &len);
	check(strcmp(pgwire_kind_name(k), "unknown") != 0);
	check(k == k8 && len == len8);
	check((size < 8) == (k == PGWIRE_NEED_MORE));
	switch (k) {
	case PGWIRE_NEED_MORE:
	case PGWIRE_BAD: check(len == 0); break;
	case PGWIRE_SSL:
	case PGWIRE_GSSENC: check(len == 8 && be32(data) == 8); break;
	case PGWIRE_CANCEL: check(len == PGWIRE_CANCEL_LEN && be32(data) == len); break;
	case PGWIRE_STARTUP:
		check(be32(data) == len && len > 8 && len <= PGWIRE_STARTUP_MAX);
		check(be32(data + 4) >> 16 == 3);
		break;
	}
	free(head);
}

/* The value of the one name equal to want (exactly), or NULL; the pairs are known whole. */
static const char *value_of(const uint8_t *m, size_t len, const char *want)
{
	const char *found = NULL;
	size_t pos = 8;

	while (m[pos] != '\0') {
		const char *name = (const char *)m + pos;
		const char *value = name + strlen(name) + 1;

		if (strcmp(name, want) == 0) {
			check(found == NULL);
			found = value;
		}
		pos = (size_t)(value - (const char *)m) + strlen(value) + 1;
		check(pos < len);
	}
	check(pos == len - 1);
	return found;
}

/* The pair after the one at pos; the pairs are known whole. */
static size_t next_pair(const uint8_t *m, size_t pos)
{
	const char *name = (const char *)m + pos;
	const char *value = name + strlen(name) + 1;

	return (size_t)(value - (const char *)m) + strlen(value) + 1;
}

static void check_names_distinct(const uint8_t *m)
{
	size_t a, b;

	for (a = 8; m[a] != '\0'; a = next_pair(m, a))
		for (b = next_pair(m, a); m[b] != '\0'; b = next_pair(m, b))
			check(strcasecmp((const char *)m + a, (const char *)m + b) != 0);
}

static int inside(const char *s, const uint8_t *m, size_t len)
{
	const uint8_t *p = (const uint8_t *)s;

	return p >= m + 8 && p < m + len && p + strlen(s) < m + len;
}

/* Decode an ErrorResponse and compare it with what it was made of. */
static void check_decoded(const uint8_t *e, size_t n, const char *message, const char *hint)
{
	static const char head[] = "SFATAL\0VFATAL\0C28000\0M";
	size_t pos = 5 + sizeof(head) - 1;

	check(n > pos && e[0] == 'E' && be32(e + 1) == n - 1);
	check(memcmp(e + 5, head, sizeof(head) - 1) == 0);
	check(memcmp(e + pos, message, strlen(message) + 1) == 0);
	pos += strlen(message) + 1;
	if (hint != NULL) {
		check(e[pos] == 'H' && memcmp(e + pos + 1, hint, strlen(hint) + 1) == 0);
		pos += strlen(hint) + 2;
	}
	check(pos == n - 1 && e[pos] == '\0');
}

/* An ErrorResponse naming the parsed role, the application name as its hint. */
static void check_error_response(const struct pgwire_startup *s)
{
	static const char pre[] = "mtls: may not connect as role \"";
	char message[sizeof(pre) + 64 + 2];
	uint8_t big[512], *exact;
	size_t n, n2;

	snprintf(message, sizeof(message), "%s%s\"", pre, s->user);
	n = pgwire_error_response(big, sizeof(big), "28000", message, s->application_name);
	if (has_control(message) ||
	    (s->application_name != NULL && has_control(s->application_name))) {
		check(n == 0);
		return;
	}
	if (n == 0) { /* only for want of room: an application_name of hundreds of bytes */
		check(s->application_name != NULL && strlen(s->application_name) > 300);
		return;
	}
	check_decoded(big, n, message, s->application_name);
	exact = copy(big, n);
	n2 = pgwire_error_response(exact, n, "28000", message, s->application_name);
	check(n2 == n && memcmp(exact, big, n) == 0);
	check(pgwire_error_response(exact, n - 1, "28000", message, s->application_name) == 0);
	free(exact);
}

static void check_parse(const uint8_t *m, size_t len)
{
	struct pgwire_startup s;
	char err[160];
	uint32_t clen;
	size_t i;

	err[0] = '\0';
	if (pgwire_startup_parse(m, len, &s, err, sizeof(err)) != 0) {
		check(s.user == NULL && s.database == NULL && s.application_name == NULL);
		check(err[0] != '\0');
		for (i = 0; err[i] != '\0'; i++)
			check((unsigned char)err[i] >= 0x20 && (unsigned char)err[i] < 0x7f);
		return;
	}
	check(pgwire_classify(m, len, &clen) == PGWIRE_STARTUP && clen == len);
	check(m[len - 1] == '\0' && s.version == be32(m + 4) && s.version >> 16 == 3);
	check(s.user != NULL && s.user[0] != '\0' && strlen(s.user) <= 63);
	check(inside(s.user, m, len));
	check(value_of(m, len, "user") == s.user);
	if (s.database != NULL) {
		check(inside(s.database, m, len) && s.database[0] != '\0');
		check(strlen(s.database) <= 63 && value_of(m, len, "database") == s.database);
	} else {
		const char *d = value_of(m, len, "database");

		check(d == NULL || d[0] == '\0');
	}
	if (s.application_name != NULL)
		check(inside(s.application_name, m, len));
	check_names_distinct(m);
	check_error_response(&s);
}

/* The raw bytes as a message: refused exactly for a control byte before their first NUL. */
static void check_raw_message(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	size_t cap = size + 64, n;
	uint8_t *out = malloc(cap);

	if (text == NULL || out == NULL)
		abort();
	memcpy(text, data, size);
	text[size] = '\0';
	n = pgwire_error_response(out, cap, "28000", text, NULL);
	check((n == 0) == (has_control(text) != 0));
	if (n != 0)
		check_decoded(out, n, text, NULL);
	free(out);
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint32_t len;

	check_classify(data, size);
	check_parse(data, size);
	if (pgwire_classify(data, size, &len) == PGWIRE_STARTUP && len < size) {
		uint8_t *m = copy(data, len);

		check_parse(m, len);
		free(m);
	}
	check_raw_message(data, size);
	return 0;
}
