/*
 * Log lines. JSON through jansson (correct escaping of whatever a certificate says);
 * logfmt quoted by hand: key=value, values with spaces, quotes or '=' in double quotes.
 */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
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

/* Append s to buf for logfmt, quoted if needed. Returns the new length. */
static size_t logfmt_value(char *buf, size_t used, size_t cap, const char *s)
{
	bool quote = s[0] == '\0' || strpbrk(s, " =\"\\\t\r\n") != NULL;

	if (!quote)
		return used + (size_t)snprintf(buf + used, used < cap ? cap - used : 0, "%s", s);
	if (used < cap)
		buf[used] = '"';
	used++;
	for (; *s != '\0' && used + 3 < cap; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			buf[used++] = '\\';
			buf[used++] = (char)c;
		} else if (c == '\n' || c == '\r' || c == '\t') {
			buf[used++] = '\\';
			buf[used++] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
		} else if (c < 0x20) {
			buf[used++] = '?';
		} else {
			buf[used++] = (char)c;
		}
	}
	if (used < cap)
		buf[used] = '"';
	return used + 1;
}

void log_event(enum log_level level, const char *event, const struct log_field *fields, size_t n)
{
	char ts[40], line[4096];
	size_t used = 0;

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
		used = (size_t)snprintf(line, sizeof(line), "ts=%s level=%s event=%s", ts,
					level_names[level], event);
		for (size_t i = 0; i < n && used < sizeof(line); i++) {
			char num[32];

			used += (size_t)snprintf(line + used, sizeof(line) - used,
						 " %s=", fields[i].key);
			if (fields[i].str == NULL)
				snprintf(num, sizeof(num), "%lld", fields[i].num);
			used = logfmt_value(line, used, sizeof(line) - 1,
					    fields[i].str != NULL ? fields[i].str : num);
		}
	}
	if (used > sizeof(line) - 2)
		used = sizeof(line) - 2;
	line[used++] = '\n';
	/* one write: lines from different threads do not interleave */
	while (write(out_fd, line, used) < 0 && errno == EINTR)
		;
}
