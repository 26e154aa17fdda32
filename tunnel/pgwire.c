/*
 * PostgreSQL's first messages and its ErrorResponse, read and written through bounds that
 * come from the caller's length only: a length field inside the message is compared with it,
 * never trusted in its place.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "pgwire.h"

#define CODE_CANCEL 80877102u /* 1234 << 16 | 5678 */
#define CODE_SSL    80877103u /* 1234 << 16 | 5679 */
#define CODE_GSSENC 80877104u /* 1234 << 16 | 5680 */

/* NAMEDATALEN - 1 of a default PostgreSQL build: longer user and database names are cut */
/* a parameter name is quoted in a reason only up to this length */
#define QUOTE_MAX 32u

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

enum pgwire_kind pgwire_classify(const uint8_t *p, size_t n, uint32_t *len)
{
	enum pgwire_kind k = PGWIRE_BAD;
	uint32_t l, code;

	if (len != NULL)
		*len = 0;
	if (n < 8)
		return PGWIRE_NEED_MORE;
	l = be32(p);
	code = be32(p + 4);
	switch (code) {
	case CODE_SSL:
		if (l == 8)
			k = PGWIRE_SSL;
		break;
	case CODE_GSSENC:
		if (l == 8)
			k = PGWIRE_GSSENC;
		break;
	case CODE_CANCEL:
		if (l == PGWIRE_CANCEL_LEN)
			k = PGWIRE_CANCEL;
		break;
	default:
		if (code >> 16 == 3 && l > 8 && l <= PGWIRE_STARTUP_MAX)
			k = PGWIRE_STARTUP;
		break;
	}
	if (k != PGWIRE_BAD && len != NULL)
		*len = l;
	return k;
}

const char *pgwire_kind_name(enum pgwire_kind k)
{
	switch (k) {
	case PGWIRE_NEED_MORE: return "need_more";
	case PGWIRE_SSL: return "ssl_request";
	case PGWIRE_GSSENC: return "gssenc_request";
	case PGWIRE_CANCEL: return "cancel_request";
	case PGWIRE_STARTUP: return "startup_message";
	case PGWIRE_BAD: return "bad";
	}
	return "unknown";
}

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t errlen, const char *fmt,
						      ...)
{
	va_list ap;

	if (err != NULL && errlen > 0) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

/* A parameter's name for a reason: quoted if short and plainly printable, else a stand-in, so
 * that a client's bytes never put a control character or a quote into a log line. */
static const char *quote(char *buf, size_t cap, const char *name, size_t n)
{
	size_t i;

	if (n == 0 || n > QUOTE_MAX || cap < n + 3)
		return "a parameter";
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];

		if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\\')
			return "a parameter";
	}
	buf[0] = '"';
	memcpy(buf + 1, name, n);
	buf[n + 1] = '"';
	buf[n + 2] = '\0';
	return buf;
}

static int lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

/* The same name ignoring ASCII case, as PostgreSQL compares setting names. */
static int same_name(const char *a, size_t an, const char *b, size_t bn)
{
	size_t i;

	if (an != bn)
		return 0;
	for (i = 0; i < an; i++)
		if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
			return 0;
	return 1;
}

/* Whether name is among the pairs in [8, end) of msg, already checked to be whole pairs. */
static int seen_before(const char *msg, size_t end, const char *name, size_t n)
{
	size_t pos = 8;

	while (pos < end) {
		size_t nlen = strnlen(msg + pos, end - pos);
		size_t vpos = pos + nlen + 1;

		if (same_name(msg + pos, nlen, name, n))
			return 1;
		pos = vpos + strnlen(msg + vpos, end - vpos) + 1;
	}
	return 0;
}

int pgwire_startup_parse(const uint8_t *msg, size_t len, struct pgwire_startup *out, char *err,
			 size_t errlen)
{
	const char *s = (const char *)msg;
	struct pgwire_startup r = {0};
	char q[QUOTE_MAX + 3];
	size_t pos = 8;

	*out = r;
	if (len < 9 || len > PGWIRE_STARTUP_MAX)
		return fail(err, errlen, "startup message: %zu bytes, not 9 to %u", len,
			    PGWIRE_STARTUP_MAX);
	if (be32(msg) != len)
		return fail(err, errlen,
			    "startup message: its length field says %u bytes, %zu were read",
			    be32(msg), len);
	r.version = be32(msg + 4);
	if (r.version >> 16 != 3)
		return fail(err, errlen, "startup message: protocol %u.%u, only 3.x is spoken",
			    r.version >> 16, r.version & 0xffff);
	for (;;) {
		size_t nlen, vpos, vlen;

		if (pos >= len)
			return fail(err, errlen, "startup message: no NUL ends its parameters");
		if (msg[pos] == '\0') {
			if (pos + 1 != len)
				return fail(err, errlen,
					    "startup message: an empty parameter name, or bytes "
					    "after the NUL that ends the parameters");
			break;
		}
		nlen = strnlen(s + pos, len - pos);
		if (pos + nlen == len)
			return fail(err, errlen, "startup message: no NUL ends its parameters");
		vpos = pos + nlen + 1;
		if (vpos >= len)
			return fail(err, errlen, "startup message: %s has no value",
				    quote(q, sizeof(q), s + pos, nlen));
		vlen = strnlen(s + vpos, len - vpos);
		if (vpos + vlen >= len)
			return fail(err, errlen, "startup message: the value of %s has no NUL",
				    quote(q, sizeof(q), s + pos, nlen));
		if (seen_before(s, pos, s + pos, nlen))
			return fail(err, errlen, "startup message: %s given twice",
				    quote(q, sizeof(q), s + pos, nlen));
		/* PostgreSQL: user and database by strcmp(), settings by guc_name_compare() */
		if (strcmp(s + pos, "user") == 0)
			r.user = s + vpos;
		else if (strcmp(s + pos, "database") == 0)
			r.database = s + vpos;
		else if (same_name(s + pos, nlen, "application_name", 16))
			r.application_name = s + vpos;
		else if (strcmp(s + pos, "replication") == 0)
			/* as PostgreSQL reads it (parse_bool or "database"); an unknown value
			 * counts as one, so that it is never taken for none */
			r.replication = strcmp(s + vpos, "false") != 0 &&
					strcmp(s + vpos, "off") != 0 &&
					strcmp(s + vpos, "no") != 0 && strcmp(s + vpos, "0") != 0;
		pos = vpos + vlen + 1;
	}
	if (r.user == NULL || r.user[0] == '\0')
		return fail(err, errlen, "startup message: no user name (libpq's user=)");
	if (strlen(r.user) > PGWIRE_NAME_MAX)
		return fail(err, errlen,
			    "startup message: user name longer than %u bytes (PostgreSQL would "
			    "cut it to another name)",
			    PGWIRE_NAME_MAX);
	if (r.database != NULL && r.database[0] == '\0')
		r.database = NULL; /* PostgreSQL connects to the database named as the user */
	if (r.database != NULL && strlen(r.database) > PGWIRE_NAME_MAX)
		return fail(err, errlen,
			    "startup message: database name longer than %u bytes (PostgreSQL "
			    "would cut it to another name)",
			    PGWIRE_NAME_MAX);
	*out = r;
	return 0;
}

/* Whether s is a field PostgreSQL's clients print as it is: no control byte. */
static int plain(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20)
			return 0;
	return 1;
}

static size_t field(uint8_t *out, size_t pos, char type, const char *value, size_t n)
{
	out[pos] = (uint8_t)type;
	memcpy(out + pos + 1, value, n);
	out[pos + 1 + n] = '\0';
	return pos + n + 2;
}

size_t pgwire_error_response(uint8_t *out, size_t cap, const char *sqlstate, const char *message,
			     const char *hint)
{
	static const char severity[] = "FATAL";
	size_t sev = sizeof(severity) - 1, mlen, hlen = 0, total, pos, i;

	if (sqlstate == NULL || message == NULL || strlen(sqlstate) != 5)
		return 0;
	for (i = 0; i < 5; i++)
		if (!((sqlstate[i] >= '0' && sqlstate[i] <= '9') ||
		      (sqlstate[i] >= 'A' && sqlstate[i] <= 'Z')))
			return 0;
	if (!plain(message) || (hint != NULL && !plain(hint)))
		return 0;
	mlen = strlen(message);
	if (hint != NULL)
		hlen = strlen(hint);
	/* type byte and length, S V C M fields (type byte, value, NUL), H if any, final NUL; each
	 * term checked against cap before the sum so that it cannot wrap */
	if (mlen > cap || hlen > cap)
		return 0;
	total = 1 + 4 + 2 * (sev + 2) + (5 + 2) + (mlen + 2) + (hint != NULL ? hlen + 2 : 0) + 1;
	if (total > cap || total - 1 > INT32_MAX)
		return 0;
	out[0] = 'E';
	put32(out + 1, (uint32_t)(total - 1));
	pos = 5;
	pos = field(out, pos, 'S', severity, sev);
	pos = field(out, pos, 'V', severity, sev);
	pos = field(out, pos, 'C', sqlstate, 5);
	pos = field(out, pos, 'M', message, mlen);
	if (hint != NULL)
		pos = field(out, pos, 'H', hint, hlen);
	out[pos++] = '\0';
	return pos;
}

void pgwire_ssl_request(uint8_t out[8])
{
	put32(out, 8);
	put32(out + 4, CODE_SSL);
}
