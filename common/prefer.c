/*
 * RFC 7240's "wait" preference (prefer.h).
 */
#include <stdbool.h>
#include <stddef.h>
#include <strings.h>

#include "prefer.h"

/* RFC 9110's tchar */
static bool tchar(char c)
{
	if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
		return true;
	switch (c) {
	case '!':
	case '#':
	case '$':
	case '%':
	case '&':
	case '\'':
	case '*':
	case '+':
	case '-':
	case '.':
	case '^':
	case '_':
	case '`':
	case '|':
	case '~': return true;
	default: return false;
	}
}

struct cursor {
	const char *p;
	size_t i, end;
};

static char peek(const struct cursor *c)
{
	return c->i < c->end ? c->p[c->i] : '\0';
}

static void ows(struct cursor *c)
{
	while (peek(c) == ' ' || peek(c) == '\t')
		c->i++;
}

/* A token: its start and length (0: none). */
static size_t token(struct cursor *c, size_t *start)
{
	*start = c->i;
	while (tchar(peek(c)))
		c->i++;
	return c->i - *start;
}

/* A quoted-string, the cursor on its opening quote: skipped; false if it does not end. */
static bool quoted(struct cursor *c)
{
	c->i++;
	for (;;) {
		char ch = peek(c);

		if (ch == '\0')
			return false;
		c->i++;
		if (ch == '"')
			return true;
		if (ch == '\\') {
			if (peek(c) == '\0')
				return false;
			c->i++;
		}
	}
}

/* A word (token or quoted-string), the cursor after "=" and BWS. For wait, its value as a
 * number in *n (-1: not a number of at most nine digits). false if there is no word. */
static bool word(struct cursor *c, long *n)
{
	size_t start, len;
	bool q = peek(c) == '"';

	*n = -1;
	if (q) {
		start = c->i + 1;
		if (!quoted(c))
			return false;
		len = c->i - 1 - start;
	} else if ((len = token(c, &start)) == 0) {
		return false;
	}
	if (len >= 1 && len <= 9) {
		long v = 0;
		size_t k;

		for (k = 0; k < len && c->p[start + k] >= '0' && c->p[start + k] <= '9'; k++)
			v = v * 10 + (c->p[start + k] - '0');
		if (k == len)
			*n = v;
	}
	return true;
}

/* [ BWS "=" BWS word ]: true if well formed (*n: the word's number, or -1). */
static bool value(struct cursor *c, long *n)
{
	size_t save = c->i;

	*n = -1;
	ows(c);
	if (peek(c) != '=') {
		c->i = save;
		return true;
	}
	c->i++;
	ows(c);
	return word(c, n);
}

long prefer_wait(const char *v)
{
	struct cursor c = {.p = v, .i = 0, .end = 0};
	long found = -1;

	if (v == NULL)
		return -1;
	while (c.end < PREFER_MAX_LEN && v[c.end] != '\0')
		c.end++;
	if (c.end == PREFER_MAX_LEN && v[c.end] != '\0')
		return -1; /* longer than any header worth reading */
	for (;;) {
		size_t start, len;
		long n;
		bool wait;

		/* 1#element: empty elements and blanks between commas are allowed */
		while (peek(&c) == ',' || peek(&c) == ' ' || peek(&c) == '\t')
			c.i++;
		if (peek(&c) == '\0')
			return found;
		len = token(&c, &start);
		if (len == 0)
			return -1;
		wait = len == 4 && strncasecmp(v + start, "wait", 4) == 0;
		if (!value(&c, &n))
			return -1;
		if (wait && found < 0) {
			if (n < 0)
				return -1;
			found = n;
		}
		/* *( OWS ";" [ OWS parameter ] ) */
		for (;;) {
			ows(&c);
			if (peek(&c) != ';')
				break;
			c.i++;
			ows(&c);
			if (token(&c, &start) > 0 && !value(&c, &n))
				return -1;
		}
		if (peek(&c) != ',' && peek(&c) != '\0')
			return -1;
	}
}
