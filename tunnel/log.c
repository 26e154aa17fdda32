/*
 * Log lines. JSON through jansson (correct escaping of whatever a certificate says);
 * logfmt quoted and escaped by hand (logfmt_value()). Either way one event is one line,
 * whatever bytes a peer puts in its certificate.
 *
 * The data path never waits on the log: log_event() formats the line in the caller's thread
 * and copies it into a bounded ring under a mutex; one writer thread does the blocking
 * writes. A line that does not fit (the reader of the log is stalled: a stuck journald or
 * shipper, a full pipe) is dropped and counted, and once the writer catches up it says how
 * many. Write errors (a full disk) are counted too, and told on stderr when the log goes to
 * a file. Warnings and errors are rate-limited per (event, reason or message), so a flood of
 * refusals cannot fill the ring by itself: a summary line says how many were suppressed.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "log.h"

/* set by log_setup(); atomic because the writer thread reads them for its own lines */
static atomic_int fmt = LOG_JSON;
static atomic_int min = LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* The ring and its writer. Producers append whole lines (newline included) at
 * head + used; the writer writes [head, head + used) without the lock, which producers never
 * touch, then advances head. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake; /* to the writer: lines to write, or stop */
static pthread_cond_t idle; /* from the writer: everything written */
static struct {
	char *buf; /* NULL: no writer, lines are written by the caller (before log_setup) */
	size_t cap, head, used;
	bool writing; /* the writer is writing a batch it took */
	bool stop;
	bool reopen; /* log_reopen() asked: the writer opens path again before its next batch */
	/* batches written; its value when a flush last ran out of time (stalled) */
	unsigned long long batches, stalled_at;
	bool stalled;
	pthread_t thread;
	int fd;
	bool cut;   /* the last write to fd stopped inside a line (writer only, and log_setup) */
	char *path; /* NULL: stderr */
	/* drops not yet told in the log, by reason */
	unsigned long long untold[LOG_DROP_REASONS];
	/* write errors: the last errno, when stderr was last told, lines lost since */
	int write_errno;
	time_t told_at;
	unsigned long long lost_since_told;
} r = {.fd = 2};

static atomic_ullong dropped[LOG_DROP_REASONS];
static atomic_ullong suppressed_total;

/* Rate limit of warnings and errors: at most RATE_LINES lines per key in a window of
 * RATE_WINDOW seconds; the rest are counted and summed up in one line when the window is
 * over (by the next line of the key, or by the writer's sweep once a second).
 *
 * Keys whose (event, value) finds no slot this second (more than RATE_KEYS of them, e.g. a
 * message with something of each peer in it) share one slot per event: a flood of one
 * event cannot hold back another's lines (reload_failed, crl_expired). Event names are the
 * daemon's own words, never a peer's, so RATE_EVENTS slots are enough; only past them do
 * the rest share the last slot. */
#define RATE_KEYS   64
#define RATE_EVENTS 32
#define RATE_LINES  10
#define RATE_WINDOW 1.0

struct rate_key {
	bool used;
	bool from_reason; /* value is the "reason" field's, else the "message" field's */
	char tag[40];	  /* the tunnel's (log_tag()): one tunnel's flood hides no other's */
	char event[40];
	char value[88];
	double start;	/* of the current window */
	double since;	/* when the first suppressed line of the summary came */
	double last;	/* the last line of the key */
	unsigned lines; /* in the current window */
	unsigned long long suppressed;
};

/* the summary of a key, copied out to be logged outside the lock */
struct summary {
	bool from_reason;
	char tag[40];
	char event[40];
	char value[88];
	unsigned long long lines;
	double seconds;
};

static pthread_mutex_t rate_mu = PTHREAD_MUTEX_INITIALIZER;
/* RATE_KEYS by (event, value), RATE_EVENTS by event (value "*"), the last one shared */
static struct rate_key keys[RATE_KEYS + RATE_EVENTS + 1];

static void write_event(enum log_level level, const char *event, const struct log_field *fields,
			size_t n);

/* The module's own lines: not rate-limited (they are the summaries of what was) */
#define LOG_OWN(level, event, ...)                                                                 \
	do {                                                                                       \
		const struct log_field own_f_[] = {__VA_ARGS__};                                   \
		if ((int)(level) >= atomic_load(&min))                                             \
			write_event((level), (event), own_f_, sizeof(own_f_) / sizeof(own_f_[0])); \
	} while (0)

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

static double monotonic(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
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

/* The tunnel (config-file section) the calling thread works for; NULL: none (one tunnel per
 * process, or the process itself). A name of letters, digits, '.', '_' and '-' that lives as
 * long as the process logs. */
static _Thread_local const char *thread_tag;

void log_tag_set(const char *tunnel)
{
	thread_tag = tunnel;
}

const char *log_tag(void)
{
	return thread_tag;
}

/* The text of an event's line, without its newline: in l->buf (logfmt), or allocated (JSON:
 * *heap is set, to free). NULL if it could not be made (out of memory). */
static char *format_line(enum log_level level, const char *event, const struct log_field *fields,
			 size_t n, struct line *l, char **heap, size_t *len)
{
	char ts[40];

	*heap = NULL;
	timestamp(ts, sizeof(ts));
	if (atomic_load(&fmt) == LOG_JSON) {
		json_t *obj = json_object();
		char *text;

		json_object_set_new(obj, "ts", json_string(ts));
		json_object_set_new(obj, "level", json_string(level_names[level]));
		json_object_set_new(obj, "event", json_string(event));
		if (thread_tag != NULL)
			json_object_set_new(obj, "tunnel", json_string(thread_tag));
		for (size_t i = 0; i < n; i++)
			json_object_set_new(obj, fields[i].key,
					    fields[i].str != NULL ? json_text(fields[i].str)
								  : json_integer(fields[i].num));
		text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
		json_decref(obj);
		text = json_escape_del(text);
		if (text == NULL)
			return NULL;
		*heap = text;
		*len = strlen(text);
		return text;
	}
	l->len = (size_t)snprintf(l->buf, sizeof(l->buf), "ts=%s level=%s event=%s%s%s", ts,
				  level_names[level], event, thread_tag != NULL ? " tunnel=" : "",
				  thread_tag != NULL ? thread_tag : "");
	l->cut = false;
	for (size_t i = 0; i < n && !l->cut; i++) {
		char key[72], num[32];
		int k = snprintf(key, sizeof(key), " %s=", fields[i].key);
		size_t mark = l->len;

		if (k < 0 || (size_t)k >= sizeof(key) || !line_put(l, key, (size_t)k))
			break;
		if (fields[i].str == NULL)
			snprintf(num, sizeof(num), "%lld", fields[i].num);
		/* a field of which nothing fits is left out whole, key and all */
		if (logfmt_value(l, fields[i].str != NULL ? fields[i].str : num) == 0 && l->cut)
			l->len = mark;
	}
	if (l->cut) {
		memcpy(l->buf + l->len, " truncated=1", 12);
		l->len += 12;
	}
	*len = l->len;
	return l->buf;
}

/* One line written by the caller, in one writev, so that lines from different threads do
 * not interleave: only before log_setup() started the writer (or after log_stop()). */
static void write_direct(int fd, char *text, size_t len)
{
	static char newline[] = "\n";
	struct iovec iov[2] = {{text, len}, {newline, 1}};

	while (writev(fd, iov, 2) < 0 && errno == EINTR)
		;
}

static void ring_copy(size_t at, const char *s, size_t n)
{
	size_t first = n < r.cap - at ? n : r.cap - at;

	memcpy(r.buf + at, s, first);
	memcpy(r.buf, s + first, n - first);
}

/* Queue a line for the writer, or drop and count it if the ring has no room for it whole. */
static void emit(char *text, size_t len)
{
	int fd;

	pthread_mutex_lock(&mu);
	if (r.buf == NULL) {
		fd = r.fd;
		pthread_mutex_unlock(&mu);
		write_direct(fd, text, len);
		return;
	}
	if (len + 1 > r.cap - r.used) {
		r.untold[LOG_DROP_FULL]++;
		pthread_cond_signal(&wake); /* to tell it once there is room */
		pthread_mutex_unlock(&mu);
		atomic_fetch_add(&dropped[LOG_DROP_FULL], 1);
		return;
	}
	ring_copy((r.head + r.used) % r.cap, text, len);
	ring_copy((r.head + r.used + len) % r.cap, "\n", 1);
	r.used += len + 1;
	pthread_cond_signal(&wake);
	pthread_mutex_unlock(&mu);
}

static void write_event(enum log_level level, const char *event, const struct log_field *fields,
			size_t n)
{
	struct line l;
	char *heap;
	size_t len;
	char *text = format_line(level, event, fields, n, &l, &heap, &len);

	if (text != NULL)
		emit(text, len);
	free(heap);
}

/* ---- rate limit ---- */

static const char *field_str(const struct log_field *f, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (f[i].str != NULL && strcmp(f[i].key, key) == 0)
			return f[i].str;
	return NULL;
}

static void take_summary(struct rate_key *k, double now, struct summary *out)
{
	out->from_reason = k->from_reason;
	memcpy(out->tag, k->tag, sizeof(out->tag));
	memcpy(out->event, k->event, sizeof(out->event));
	memcpy(out->value, k->value, sizeof(out->value));
	out->lines = k->suppressed;
	out->seconds = now - k->since;
	k->suppressed = 0;
}

/* The slot of (ev, val) among keys[from, to): the one holding it, else a free one, else the
 * one least recently used among those whose window is over (its pending summary, if any,
 * into *due), set up for the key; NULL if every one is busy this very second. */

static struct rate_key *rate_slot(int from, int to, const char *ev, const char *val,
				  const char *tag, bool from_reason, double now,
				  struct summary *due)
{
	struct rate_key *k = NULL, *unused = NULL, *stale = NULL;

	for (int i = from; i < to; i++) {
		struct rate_key *c = &keys[i];

		if (!c->used) {
			if (unused == NULL)
				unused = c;
		} else if (c->from_reason == from_reason && strcmp(c->tag, tag) == 0 &&
			   strcmp(c->event, ev) == 0 && strcmp(c->value, val) == 0) {
			return c;
		} else if (now - c->start >= RATE_WINDOW &&
			   (stale == NULL || c->last < stale->last)) {
			stale = c;
		}
	}
	k = unused != NULL ? unused : stale;
	if (k == NULL)
		return NULL;
	if (k->used && k->suppressed > 0)
		take_summary(k, now, due);
	memset(k, 0, sizeof(*k));
	k->used = true;
	k->from_reason = from_reason;
	snprintf(k->tag, sizeof(k->tag), "%s", tag);
	snprintf(k->event, sizeof(k->event), "%s", ev);
	snprintf(k->value, sizeof(k->value), "%s", val);
	k->start = now;
	return k;
}

/* Whether a warning or error may be logged now. *due gets the summary of suppressed lines
 * to log first (lines == 0: none), when a window with suppressed lines is over. */
static bool rate_admit(const char *event, const struct log_field *f, size_t n, struct summary *due)
{
	const char *v = field_str(f, n, "reason");
	bool from_reason = v != NULL, ok;
	double now = monotonic();
	struct rate_key *k;
	char ev[sizeof(k->event)], val[sizeof(k->value)];

	if (v == NULL)
		v = field_str(f, n, "message");
	/* keys are compared as stored, cut to their slots */
	snprintf(ev, sizeof(ev), "%s", event);
	snprintf(val, sizeof(val), "%s", v != NULL ? v : "");
	due->lines = 0;
	pthread_mutex_lock(&rate_mu);
	k = rate_slot(0, RATE_KEYS, ev, val, thread_tag != NULL ? thread_tag : "", from_reason, now,
		      due);
	/* every slot busy this very second: the event's own, else the one shared by all */
	if (k == NULL)
		k = rate_slot(RATE_KEYS, RATE_KEYS + RATE_EVENTS, ev, "*",
			      thread_tag != NULL ? thread_tag : "", false, now, due);
	if (k == NULL) {
		k = &keys[RATE_KEYS + RATE_EVENTS];
		if (!k->used) {
			k->used = true;
			snprintf(k->event, sizeof(k->event), "*");
			snprintf(k->value, sizeof(k->value), "*");
			k->start = now;
		}
	}
	k->last = now;
	if (now - k->start >= RATE_WINDOW) {
		if (k->suppressed > 0 && due->lines == 0)
			take_summary(k, now, due);
		k->start = now;
		k->lines = 0;
	}
	ok = k->lines < RATE_LINES;
	if (ok) {
		k->lines++;
	} else if (k->suppressed++ == 0) {
		k->since = now;
	}
	pthread_mutex_unlock(&rate_mu);
	if (!ok)
		atomic_fetch_add(&suppressed_total, 1);
	return ok;
}

static void log_summary(const struct summary *s)
{
	const char *event = s->event, *value = s->value, *was = log_tag();
	char msg[300];

	snprintf(msg, sizeof(msg), "suppressed %llu lines event=%s %s=%s in the last %.1fs",
		 s->lines, event, s->from_reason ? "reason" : "message", value, s->seconds);
	/* the summary is the tunnel's whose lines it counts (its name copied: the summary may
	 * come after the tunnel's options are gone, at exit) */
	log_tag_set(s->tag[0] != '\0' ? s->tag : NULL);
	LOG_OWN(LOG_WARN, "log_suppressed", LS("suppressed_event", event),
		LS(s->from_reason ? "reason" : "suppressed_message", value), LN("lines", s->lines),
		LN("interval_ms", (long long)(s->seconds * 1000)), LS("message", msg));
	log_tag_set(was);
}

/* Log the summaries whose window is over (all of them: every pending one). */
static void rate_sweep(bool all)
{
	struct summary due[RATE_KEYS + RATE_EVENTS + 1];
	size_t nd = 0;
	double now = monotonic();

	pthread_mutex_lock(&rate_mu);
	for (int i = 0; i < RATE_KEYS + RATE_EVENTS + 1; i++) {
		struct rate_key *k = &keys[i];

		if (k->used && k->suppressed > 0 && (all || now - k->start >= RATE_WINDOW)) {
			take_summary(k, now, &due[nd++]);
			/* the next line of the key starts a new window */
			k->start = now - RATE_WINDOW;
		}
	}
	pthread_mutex_unlock(&rate_mu);
	for (size_t i = 0; i < nd; i++)
		log_summary(&due[i]);
}

/* What to run about a refused handshake, by its reason: every handshake_refused line where a
 * command helps carries it as its "hint" field. NULL where none does (not TLS, a timeout). */
static const char *refusal_hint(const char *reason)
{
	static const struct {
		const char *reasons;
		const char *hint;
	} hints[] = {
		{" unknown_ca self_signed issuer_not_sent expired not_yet_valid bad_key_usage "
		 "name_mismatch bad_certificate nonconforming leaf_is_ca weak_key weak_signature "
		 "bad_signature chain_too_long invalid_ca revoked no_certificate ",
		 "run 'mtls doctor --server HOST:PORT --cert CERT --key KEY --ca CA' on the client "
		 "host, or 'mtls verify --ca CA CERT' on the refused certificate"},
		{" identity_not_allowed pin_mismatch ",
		 "'mtls verify --ca CA CERT' shows the certificate's identity; compare it with the "
		 "server's allow rules"},
		{" rejected_by_peer ", "run 'mtls doctor --server HOST:PORT --cert CERT --key KEY "
				       "--ca CA' here: it shows "
				       "the server's alert and what it means"},
		{" crl_missing crl_expired crl_invalid ",
		 "run 'mtls doctor --config FILE' on this host: it checks the CRLs against --ca"},
	};
	char key[64];

	if (reason == NULL || strlen(reason) + 3 > sizeof(key))
		return NULL;
	snprintf(key, sizeof(key), " %s ", reason);
	for (size_t i = 0; i < sizeof(hints) / sizeof(hints[0]); i++)
		if (strstr(hints[i].reasons, key) != NULL)
			return hints[i].hint;
	return NULL;
}

void log_event(enum log_level level, const char *event, const struct log_field *fields, size_t n)
{
	struct log_field with_hint[32];
	const char *hint;
	struct summary due;
	bool ok = true;

	if (strcmp(event, "handshake_refused") == 0 &&
	    n < sizeof(with_hint) / sizeof(with_hint[0]) && field_str(fields, n, "hint") == NULL &&
	    (hint = refusal_hint(field_str(fields, n, "reason"))) != NULL) {
		memcpy(with_hint, fields, n * sizeof(*fields));
		with_hint[n++] = LS("hint", hint);
		fields = with_hint;
	}

	if ((int)level < atomic_load(&min))
		return;
	if (level >= LOG_WARN)
		ok = rate_admit(event, fields, n, &due);
	else
		due.lines = 0;
	if (due.lines > 0)
		log_summary(&due);
	if (ok)
		write_event(level, event, fields, n);
}

/* ---- the writer ---- */

static void deadline(struct timespec *ts, long ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* Write n bytes of the ring from head. Returns how many lines could not be written whole
 * (0: all were), with the error in *err. The ring holds whole lines only. *cut says whether
 * the last write stopped inside a line (a full disk, a file size limit): the part written
 * is ended with a newline first, so that the next line is not glued to it. */
static unsigned long long write_batch(int fd, size_t head, size_t n, int *err, bool *cut)
{
	size_t done = 0;
	unsigned long long lost = 0;
	ssize_t w;

	while (*cut && (w = write(fd, "\n", 1)) != 1) {
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN) {
			struct pollfd p = {.fd = fd, .events = POLLOUT};

			poll(&p, 1, 1000);
			continue;
		}
		*err = w < 0 ? errno : EIO;
		for (size_t i = 0; i < n; i++)
			lost += r.buf[(head + i) % r.cap] == '\n';
		return lost;
	}
	*cut = false;
	while (done < n) {
		size_t at = (head + done) % r.cap, left = n - done;
		struct iovec iov[2];
		int cnt = 1;

		iov[0].iov_base = r.buf + at;
		iov[0].iov_len = left < r.cap - at ? left : r.cap - at;
		if (iov[0].iov_len < left) {
			iov[1].iov_base = r.buf;
			iov[1].iov_len = left - iov[0].iov_len;
			cnt = 2;
		}
		w = writev(fd, iov, cnt);
		if (w > 0) {
			done += (size_t)w;
		} else if (w < 0 && errno == EINTR) {
			continue;
		} else if (w < 0 && errno == EAGAIN) {
			/* a non-blocking descriptor (set so by whoever shares it): wait here */
			struct pollfd p = {.fd = fd, .events = POLLOUT};

			poll(&p, 1, 1000);
		} else {
			*err = w < 0 ? errno : EIO;
			break;
		}
	}
	*cut = done > 0 && done < n && r.buf[(head + done - 1) % r.cap] != '\n';
	for (; done < n; done++)
		lost += r.buf[(head + done) % r.cap] == '\n';
	return lost;
}

/* Tell stderr that writing the log file fails (first, then once a minute while it does),
 * or works again. Only for a log file: a failing stderr has nobody to tell. */
static void tell_write_error(const char *path, int err, unsigned long long lost, bool first)
{
	char msg[600];
	int len;

	if (err == 0)
		len = snprintf(msg, sizeof(msg), "mtls: the log %s is written again\n", path);
	else
		len = snprintf(msg, sizeof(msg),
			       "mtls: cannot write the log to %s: %s; %s%llu line(s) lost (counted "
			       "in mtls_log_lines_dropped_total{reason=\"write_error\"}); free "
			       "space or fix the file\n",
			       path, strerror(err), first ? "" : "still failing, ", lost);
	if (len > 0)
		while (write(2, msg, (size_t)len < sizeof(msg) ? (size_t)len : sizeof(msg) - 1) <
			       0 &&
		       errno == EINTR)
			;
}

#define WRITE_ERROR_EVERY 60 /* seconds between reports on stderr while writes fail */

/* Drops not told yet that can be told now (room again, writes working). With mu held. */
static bool untold_pending(void)
{
	return r.write_errno == 0 && r.used <= r.cap / 2 &&
	       (r.untold[LOG_DROP_FULL] > 0 || r.untold[LOG_DROP_WRITE_ERROR] > 0);
}

/* Say what was lost, if it can be said now. Called and returns with mu held; marked as
 * writing meanwhile, so that a flush waits for the notices. A count is taken off only once
 * its notice is in the buffer: a notice that finds no room (the callers filled it while
 * the line was being made) is tried again later, not lost with what it had to say. */
static void tell_untold(void)
{
	static const char *const messages[LOG_DROP_REASONS] = {
		[LOG_DROP_FULL] = "log lines were dropped: the log buffer was full because the "
				  "log's reader did not keep up",
		[LOG_DROP_WRITE_ERROR] = "log lines were lost: writing the log failed",
	};
	static const char *const reasons[LOG_DROP_REASONS] = {
		[LOG_DROP_FULL] = "full",
		[LOG_DROP_WRITE_ERROR] = "write_error",
	};

	for (int i = 0; i < LOG_DROP_REASONS; i++) {
		unsigned long long n;
		struct log_field f[3];
		struct line l;
		char *heap, *text;
		size_t len;

		if (!untold_pending() || (n = r.untold[i]) == 0)
			continue;
		if (LOG_WARN < min) { /* not to be logged at this level */
			r.untold[i] = 0;
			continue;
		}
		f[0] = LN("lines", n);
		f[1] = LS("reason", reasons[i]);
		f[2] = LS("message", messages[i]);
		r.writing = true;
		pthread_mutex_unlock(&mu);
		text = format_line(LOG_WARN, "log_lines_dropped", f, 3, &l, &heap, &len);
		pthread_mutex_lock(&mu);
		r.writing = false;
		if (text != NULL && len + 1 <= r.cap - r.used) {
			ring_copy((r.head + r.used) % r.cap, text, len);
			ring_copy((r.head + r.used + len) % r.cap, "\n", 1);
			r.used += len + 1;
			r.untold[i] -= n;
		}
		free(heap);
	}
}

/* Open the log file again (logrotate moved it away): the new file gets the old one's
 * permissions; lines go on to the old file if it cannot be opened. Called and returns with
 * mu held, by the writer (or log_reopen() when there is none), the only one writing to r.fd
 * then, so no line is written to a closed descriptor or split between the two files. */
static void reopen_file(void)
{
	char *path = r.path != NULL ? strdup(r.path) : NULL;
	struct stat sb;
	mode_t mode = 0640;
	int fd, old_fd = r.fd, err = 0;

	r.reopen = false;
	if (path == NULL)
		return; /* stderr, or no memory: keep writing where the lines go */
	if (fstat(old_fd, &sb) == 0)
		mode = sb.st_mode & 07777;
	r.writing = true;
	pthread_mutex_unlock(&mu);
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd >= 0)
		(void)fchmod(fd, mode); /* created: not narrowed by the umask */
	else if (errno == EEXIST)	/* logrotate's "create" made it: its mode stays */
		fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
	if (fd < 0)
		err = errno;
	pthread_mutex_lock(&mu);
	r.writing = false;
	if (fd >= 0) {
		r.fd = fd;
		r.cut = false;
		close(old_fd);
	}
	pthread_mutex_unlock(&mu);
	if (fd >= 0)
		LOG(LOG_INFO, "log_reopened", LS("file", path));
	else {
		char msg[600];

		snprintf(msg, sizeof(msg),
			 "cannot open the log %s again: %s; lines go on to the old file: fix the "
			 "file's directory or permissions and send SIGUSR1 again",
			 path, strerror(err));
		LOG(LOG_ERROR, "log_reopen_failed", LS("file", path), LS("message", msg));
	}
	free(path);
	pthread_mutex_lock(&mu);
}

void log_reopen(void)
{
	pthread_mutex_lock(&mu);
	r.reopen = true;
	if (r.buf == NULL)
		reopen_file();
	else
		pthread_cond_signal(&wake);
	pthread_mutex_unlock(&mu);
}

static void *writer_main(void *arg)
{
	double swept = monotonic();

	(void)arg;
	pthread_mutex_lock(&mu);
	for (;;) {
		size_t head, n;
		unsigned long long lost;
		int fd, err = 0;
		bool tell = false, first = false, cut;
		char *path = NULL;

		if (r.used == 0 && !r.stop && !r.reopen && !untold_pending()) {
			struct timespec until;

			deadline(&until, 1000);
			pthread_cond_timedwait(&wake, &mu, &until);
		}
		if (monotonic() - swept >= RATE_WINDOW) {
			pthread_mutex_unlock(&mu);
			rate_sweep(false);
			swept = monotonic();
			pthread_mutex_lock(&mu);
		}
		if (r.reopen) { /* before the batch: what is logged after the signal goes there */
			reopen_file();
			if (r.used == 0 && !untold_pending())
				pthread_cond_broadcast(&idle); /* a flush waited for the reopen */
		}
		if (r.used == 0) {
			/* drops with nothing queued after them (a line longer than the buffer,
			 * the last of a burst) are told now, not with the next batch */
			if (untold_pending()) {
				tell_untold();
				if (r.used == 0)
					pthread_cond_broadcast(&idle);
				continue;
			}
			if (r.stop)
				break;
			continue;
		}
		head = r.head;
		n = r.used;
		fd = r.fd;
		cut = r.cut;
		r.writing = true;
		pthread_mutex_unlock(&mu);
		lost = write_batch(fd, head, n, &err, &cut);
		pthread_mutex_lock(&mu);
		if (r.fd == fd)
			r.cut = cut;
		r.head = (head + n) % r.cap;
		r.used -= n;
		r.writing = false;
		r.batches++;
		if (lost > 0) {
			time_t now = time(NULL);

			atomic_fetch_add(&dropped[LOG_DROP_WRITE_ERROR], lost);
			r.untold[LOG_DROP_WRITE_ERROR] += lost;
			r.lost_since_told += lost;
			first = r.write_errno == 0;
			r.write_errno = err;
			if (r.path != NULL && (first || now - r.told_at >= WRITE_ERROR_EVERY)) {
				tell = true;
				r.told_at = now;
				lost = r.lost_since_told;
				r.lost_since_told = 0;
			}
		} else if (r.write_errno != 0) {
			tell = r.path != NULL;
			r.write_errno = 0;
			r.lost_since_told = 0;
		}
		if (tell) {
			path = strdup(r.path);
			pthread_mutex_unlock(&mu);
			if (path != NULL)
				tell_write_error(path, err, lost, first);
			free(path);
			pthread_mutex_lock(&mu);
		}
		tell_untold();
		/* idle only now, so that a flush also waits for the notices */
		if (r.used == 0)
			pthread_cond_broadcast(&idle);
	}
	pthread_mutex_unlock(&mu);
	return NULL;
}

static void init_conds(void)
{
	pthread_condattr_t a;

	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(&wake, &a);
	pthread_cond_init(&idle, &a);
	pthread_condattr_destroy(&a);
}

/* Start the writer with a ring of size bytes; without one (no memory, no thread), lines are
 * written by their callers as before. */
static void start_writer(size_t size)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	static bool registered;
	char *buf = malloc(size);
	sigset_t all, old;
	int rc;

	pthread_once(&once, init_conds);
	if (buf == NULL)
		return;
	pthread_mutex_lock(&mu);
	r.buf = buf;
	r.cap = size;
	r.head = r.used = 0;
	r.stop = false;
	r.stalled = false;
	pthread_mutex_unlock(&mu);
	/* no signal for this thread: the daemon's main loop takes them */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&r.thread, NULL, writer_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		pthread_mutex_lock(&mu);
		r.buf = NULL;
		pthread_mutex_unlock(&mu);
		free(buf);
		return;
	}
	if (!registered && atexit(log_stop) == 0)
		registered = true;
}

int log_setup(enum log_format format, enum log_level min_level, const char *path)
{
	return log_setup_buffer(format, min_level, path, LOG_BUFFER_DEFAULT);
}

int log_setup_buffer(enum log_format format, enum log_level min_level, const char *path,
		     size_t buffer)
{
	int fd = 2, old_fd;
	char *copy = NULL, *old_path;
	bool flushed;

	if (path != NULL) {
		fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
		if (fd < 0)
			return -1;
		copy = strdup(path);
	}
	/* lines logged before go where they were meant to */
	flushed = log_flush(5000);
	if (flushed && r.buf != NULL && r.cap != buffer)
		log_stop();
	atomic_store(&fmt, format);
	atomic_store(&min, min_level);
	pthread_mutex_lock(&mu);
	old_fd = r.fd;
	old_path = r.path;
	r.fd = fd;
	r.cut = false;
	r.path = copy;
	r.write_errno = 0;
	r.told_at = 0;
	r.lost_since_told = 0;
	pthread_mutex_unlock(&mu);
	if (old_fd != 2 && flushed)
		close(old_fd);
	free(old_path);
	if (r.buf == NULL && buffer > 0)
		start_writer(buffer);
	return 0;
}

bool log_flush(int timeout_ms)
{
	struct timespec until;
	bool done;

	deadline(&until, timeout_ms);
	pthread_mutex_lock(&mu);
	while (r.buf != NULL && (r.used > 0 || r.writing || untold_pending())) {
		pthread_cond_signal(&wake);
		if (pthread_cond_timedwait(&idle, &mu, &until) == ETIMEDOUT)
			break;
	}
	done = r.buf == NULL || (r.used == 0 && !r.writing && !untold_pending());
	if (!done) {
		r.stalled = true;
		r.stalled_at = r.batches;
	}
	pthread_mutex_unlock(&mu);
	return done;
}

void log_stop(void)
{
	char *buf;
	bool still_stalled;

	pthread_mutex_lock(&mu);
	buf = r.buf;
	/* a flush before (the daemon's own at the end) already waited its time for a reader
	 * that has not taken a single batch since: exit would only wait as long again */
	still_stalled = r.stalled && r.batches == r.stalled_at && (r.used > 0 || r.writing);
	pthread_mutex_unlock(&mu);
	if (buf == NULL)
		return;
	rate_sweep(true);
	/* a stalled reader: leave the writer blocked, exit ends it */
	if (still_stalled || !log_flush(LOG_STOP_WAIT_MS))
		return;
	pthread_mutex_lock(&mu);
	r.stop = true;
	pthread_cond_signal(&wake);
	pthread_mutex_unlock(&mu);
	pthread_join(r.thread, NULL);
	pthread_mutex_lock(&mu);
	r.buf = NULL;
	r.stop = false;
	pthread_mutex_unlock(&mu);
	free(buf);
}

unsigned long long log_dropped(enum log_drop reason)
{
	return (unsigned)reason < LOG_DROP_REASONS ? atomic_load(&dropped[reason]) : 0;
}

unsigned long long log_suppressed(void)
{
	return atomic_load(&suppressed_total);
}
