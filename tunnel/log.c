/*
 * Log lines. JSON through jansson (correct escaping of whatever a certificate says);
 * logfmt quoted and escaped by hand (logfmt_value()). Either way one event is one line,
 * whatever bytes a peer puts in its certificate.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "log.h"

static enum log_format fmt = LOG_JSON;
static enum log_level min = LOG_INFO;
static int out_fd = 2;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int log_format_parse(const char *name, enum log_format *out)
{
	if (strcmp(name, "json") == 0)
		*out = LOG_JSON;
	else if (strcmp(name, "logfmt") == 0)
		*out = LOG_LOGFMT;
	else
		return -1;
	return 0;
}

int log_level_parse(const char *name, enum log_level *out)
{
	for (int i = 0; i <= LOG_ERROR; i++)
		if (strcmp(name, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	return -1;
}

int log_setup(enum log_format format, enum log_level min_level, const char *path)
{
	fmt = format;
	min = min_level;
	if (path != NULL) {
		int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);

		if (fd < 0)
			return -1;
		if (out_fd != 2)
			close(out_fd);
		out_fd = fd;
	}
	return 0;
}

/* A JSON string of s; text that is not UTF-8 (a certificate may say anything) is shown with
 * '?' for every byte outside printable ASCII. */
static json_t *json_text(const char *s)
{
	json_t *v = json_string(s);
	char *copy;

	if (v != NULL)
		return v;
	copy = strdup(s);
	if (copy == NULL)
		return json_string("?");
	for (char *p = copy; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
			*p = '?';
	v = json_string(copy);
	free(copy);
	return v;
}

/* JSON_ENSURE_ASCII escapes everything but DEL, which JSON allows raw: a terminal showing
 * the log should not get it either. text is JSON text, where a DEL can only be inside a
 * string, so \u007f in its place means the same. Takes text (NULL on out of memory). */
static char *json_escape_del(char *text)
{
	size_t n = 0, len;
	char *out, *o;

	if (text == NULL)
		return NULL;
	for (const char *p = text; *p != '\0'; p++)
		n += *p == 0x7f;
	if (n == 0)
		return text;
	len = strlen(text);
	out = o = malloc(len + 5 * n + 1);
	if (out != NULL) {
		for (const char *p = text; *p != '\0'; p++) {
			if (*p == 0x7f) {
				memcpy(o, "\\u007f", 6);
				o += 6;
			} else {
				*o++ = *p;
			}
		}
		*o = '\0';
	}
	free(text);
	return out;
}

static void timestamp(char *buf, size_t len)
{
	struct timeval tv;
	struct tm tm;
	char base[32];

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, len, "%.20s.%03dZ", base, (int)(tv.tv_usec / 1000) % 1000);
}

/* A logfmt line being built, bounded: what does not fit is cut at a whole character or
 * escape, the value's quote is closed and the line ends with truncated=1. */
struct line {
	char buf[4096];
	size_t len;
	bool cut;
};

/* room kept for a closing quote, " truncated=1" and the newline */
#define LINE_RESERVE 16

static bool line_put(struct line *l, const char *s, size_t n)
{
	if (l->cut || n > sizeof(l->buf) - LINE_RESERVE - l->len) {
		l->cut = true;
		return false;
	}
	memcpy(l->buf + l->len, s, n);
	l->len += n;
	return true;
}

/* The length of the well-formed UTF-8 sequence of 2 to 4 bytes at s (its code point in
 * *cp), or 0: overlong forms, surrogates and truncated sequences are not characters. */
static size_t utf8_seq(const unsigned char *s, uint32_t *cp)
{
	size_t n;
	uint32_t c;

	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		n = 2;
		c = s[0] & 0x1fu;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		n = 3;
		c = s[0] & 0x0fu;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		n = 4;
		c = s[0] & 0x07u;
	} else {
		return 0;
	}
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80) /* also stops at the terminating NUL */
			return 0;
		c = c << 6 | (s[i] & 0x3fu);
	}
	if ((n == 3 && c < 0x800) || (n == 4 && (c < 0x10000 || c > 0x10ffff)) ||
	    (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return n;
}

/* Characters that some readers take for a line break (C1 controls such as NEL, the line
 * and paragraph separators) or that reorder what a terminal shows (bidi controls). */
static bool invisible(uint32_t c)
{
	return c < 0xa0 || (c >= 0x2028 && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
}

/* Append a logfmt value; returns how many bytes of s it shows (all of them unless the line
 * is cut). Whatever a peer put in its certificate stays inside one quoted
 * value on one line: the value is quoted unless it is only printable ASCII without space,
 * '"', '=' or backslash; inside the quotes '"' and backslash are escaped, \n \r \t written
 * as such, other control bytes and bytes that are not UTF-8 as \xHH, and the characters of
 * invisible() as \uHHHH (as Go's strconv.Quote would). */
static size_t logfmt_value(struct line *l, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	bool quote = *p == '\0';
	char esc[12];

	for (const unsigned char *q = p; *q != '\0' && !quote; q++)
		quote = *q <= ' ' || *q >= 0x7f || *q == '"' || *q == '=' || *q == '\\';
	if (!quote)
		return line_put(l, s, strlen(s)) ? strlen(s) : 0;
	if (!line_put(l, "\"", 1))
		return 0;
	while (*p != '\0') {
		const char *unit = esc;
		size_t len, used = 1; /* what to write for the bytes used */
		uint32_t cp;

		if (*p == '"' || *p == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*p;
			len = 2;
		} else if (*p == '\n' || *p == '\r' || *p == '\t') {
			unit = *p == '\n' ? "\\n" : *p == '\r' ? "\\r" : "\\t";
			len = 2;
		} else if (*p >= ' ' && *p < 0x7f) {
			unit = (const char *)p;
			len = 1;
		} else if (*p >= 0x80 && (used = utf8_seq(p, &cp)) > 0) {
			if (invisible(cp)) {
				len = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", (unsigned)cp);
			} else {
				unit = (const char *)p;
				len = used;
			}
		} else {
			len = (size_t)snprintf(esc, sizeof(esc), "\\x%02x", *p);
			used = 1;
		}
		if (!line_put(l, unit, len))
			break;
		p += used;
	}
	/* the reserve always has room for the closing quote */
	l->buf[l->len++] = '"';
	return (size_t)(p - (const unsigned char *)s);
}

void log_event(enum log_level level, const char *event, const struct log_field *fields, size_t n)
{
	char ts[40];

	if (level < min)
		return;
	timestamp(ts, sizeof(ts));
	if (fmt == LOG_JSON) {
		json_t *obj = json_object();
		char *text;

		json_object_set_new(obj, "ts", json_string(ts));
		json_object_set_new(obj, "level", json_string(level_names[level]));
		json_object_set_new(obj, "event", json_string(event));
		for (size_t i = 0; i < n; i++)
			json_object_set_new(obj, fields[i].key,
					    fields[i].str != NULL ? json_text(fields[i].str)
								  : json_integer(fields[i].num));
		text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
		json_decref(obj);
		text = json_escape_del(text);
		if (text == NULL)
			return;
		{
			static char newline[] = "\n";
			struct iovec iov[2] = {{text, strlen(text)}, {newline, 1}};

			/* one writev: lines from different threads do not interleave */
			while (writev(out_fd, iov, 2) < 0 && errno == EINTR)
				;
		}
		free(text);
		return;
	} else {
		struct line l = {.len = 0};

		l.len = (size_t)snprintf(l.buf, sizeof(l.buf), "ts=%s level=%s event=%s", ts,
					 level_names[level], event);
		for (size_t i = 0; i < n && !l.cut; i++) {
			char key[72], num[32];
			int k = snprintf(key, sizeof(key), " %s=", fields[i].key);

			size_t mark = l.len;

			if (k < 0 || (size_t)k >= sizeof(key) || !line_put(&l, key, (size_t)k))
				break;
			if (fields[i].str == NULL)
				snprintf(num, sizeof(num), "%lld", fields[i].num);
			/* a field of which nothing fits is left out whole, key and all */
			if (logfmt_value(&l, fields[i].str != NULL ? fields[i].str : num) == 0 &&
			    l.cut)
				l.len = mark;
		}
		if (l.cut) {
			memcpy(l.buf + l.len, " truncated=1", 12);
			l.len += 12;
		}
		l.buf[l.len++] = '\n';
		/* one write: lines from different threads do not interleave */
		while (write(out_fd, l.buf, l.len) < 0 && errno == EINTR)
			;
	}
}
