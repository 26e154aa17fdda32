/*
 * The daemons' log lines (tunnel/log.c), table-driven: whatever bytes a peer puts in a
 * certificate field, an event is exactly one line, its value stays one quoted logfmt value
 * (no forged key, no forged line, no terminal control), and JSON lines stay valid JSON.
 *
 * And the way lines leave: through a bounded buffer that never makes a caller wait on the
 * log's reader (full: dropped, counted, then told), with a rate limit on repeated warnings
 * (summed up), write errors counted and told on stderr, and everything written at exit.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
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

/* The whole text of a file (caller frees). */
static char *slurp(const char *name)
{
	FILE *f = fopen(name, "rb");
	char *text;
	long len;

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

/* The log file's text after one conn_open event with identity value (caller frees). */
static char *logged(enum log_format format, const char *value)
{
	assert_int_equal(truncate(path, 0), 0);
	assert_int_equal(log_setup(format, LOG_DEBUG, path), 0);
	LOG(LOG_INFO, "conn_open", LN("conn", 7), LS("identity", value), LS("rule", "any"));
	assert_true(log_flush(10000));
	return slurp(path);
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

/* ---- the buffer, the rate limit, write errors, exit ---- */

/* How many lines of text contain every one of the (up to 3) strings given. */
static int count_lines(const char *text, const char *a, const char *b, const char *c)
{
	int n = 0;

	for (const char *p = text; *p != '\0';) {
		const char *end = strchr(p, '\n');
		size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
		char *line = strndup(p, len);

		assert_non_null(line);
		n += strstr(line, a) != NULL && (b == NULL || strstr(line, b) != NULL) &&
		     (c == NULL || strstr(line, c) != NULL);
		free(line);
		p += len + (end != NULL);
	}
	return n;
}

/* The sum of the numbers after key (e.g. " lines=") on the lines containing a and b. */
static unsigned long long sum_field(const char *text, const char *a, const char *b, const char *key)
{
	unsigned long long sum = 0;

	for (const char *p = text; *p != '\0';) {
		const char *end = strchr(p, '\n');
		size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
		char *line = strndup(p, len), *k;

		assert_non_null(line);
		if (strstr(line, a) != NULL && (b == NULL || strstr(line, b) != NULL) &&
		    (k = strstr(line, key)) != NULL)
			sum += strtoull(k + strlen(key), NULL, 10);
		free(line);
		p += len + (end != NULL);
	}
	return sum;
}

static void on_alarm(int sig)
{
	(void)sig;
	/* a caller blocked on the log's reader: the very thing that must not happen */
	static const char msg[] = "test_tunnel_log: log_event blocked on a stalled reader\n";

	(void)!write(2, msg, sizeof(msg) - 1);
	_exit(3);
}

/* The log goes to a pipe nobody reads: logging returns at once, the lines that do not fit
 * are dropped and counted, and once the reader comes back every line either came out whole
 * or was counted, and a log_lines_dropped line says how many. */
static void test_stalled_reader(void **state)
{
	int p[2], total = 3000;
	char name[64];
	unsigned long long before = log_dropped(LOG_DROP_FULL), dropped;
	char *text = NULL;
	size_t len = 0, cap = 0;
	bool told = false;

	(void)state;
	assert_int_equal(pipe(p), 0);
	snprintf(name, sizeof(name), "/proc/self/fd/%d", p[1]);
	assert_int_equal(log_setup_buffer(LOG_LOGFMT, LOG_DEBUG, name, 16384), 0);
	close(p[1]);
	signal(SIGALRM, on_alarm);
	alarm(30);
	/* ~100 bytes each: 300 KB, far more than the pipe (64 KiB) and the buffer hold */
	for (int i = 0; i < total; i++)
		LOG(LOG_INFO, "filler", LN("n", i), LS("pad", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"));
	alarm(0);
	dropped = log_dropped(LOG_DROP_FULL) - before;
	assert_true(dropped > 0);
	assert_true(dropped < (unsigned long long)total);

	/* the reader comes back */
	assert_int_equal(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
	for (int waited = 0; waited < 2000 && !told; waited++) {
		ssize_t n;

		if (cap - len < 65536) {
			cap = cap * 2 + 65536;
			text = realloc(text, cap + 1);
			assert_non_null(text);
		}
		while ((n = read(p[0], text + len, cap - len)) > 0)
			len += (size_t)n;
		text[len] = '\0';
		/* told after the writer's next batch; nothing else is logged meanwhile, so
		 * the count stays the one taken above */
		told = strstr(text, "event=log_lines_dropped") != NULL;
		if (!told)
			usleep(10000);
	}
	assert_true(told);
	/* and the rest: the writer is done once we have read everything */
	for (int waited = 0; waited < 2000; waited++) {
		bool done = log_flush(10);
		ssize_t n;

		if (cap - len < 65536) {
			cap = cap * 2 + 65536;
			text = realloc(text, cap + 1);
			assert_non_null(text);
		}
		while ((n = read(p[0], text + len, cap - len)) > 0)
			len += (size_t)n;
		text[len] = '\0';
		if (done)
			break;
	}
	assert_int_equal(count_lines(text, "event=filler", NULL, NULL) + (int)dropped, total);
	assert_int_equal(
		count_lines(text, "event=filler", "pad=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", NULL),
		total - (int)dropped);
	assert_int_equal(sum_field(text, "event=log_lines_dropped", "reason=full", " lines="),
			 dropped);
	free(text);
	close(p[0]);
	assert_int_equal(log_setup(LOG_JSON, LOG_DEBUG, path), 0);
}

/* 100 identical refusals in a burst: 10 a second get through, the rest are summed up in
 * log_suppressed lines, each key (event, reason; or event, message) on its own; info lines
 * are never held back. */
static void test_rate_limit(void **state)
{
	unsigned long long before = log_suppressed();
	char *text = NULL;
	int cert, timeout, emfile;
	unsigned long long s_cert = 0, s_timeout = 0, s_emfile = 0;

	(void)state;
	assert_int_equal(truncate(path, 0), 0);
	assert_int_equal(log_setup(LOG_LOGFMT, LOG_DEBUG, path), 0);
	for (int i = 0; i < 100; i++) {
		LOG(LOG_WARN, "handshake_refused", LN("conn", i), LS("reason", "bad_certificate"),
		    LS("message", "unknown CA"));
		LOG(LOG_WARN, "handshake_refused", LN("conn", i), LS("reason", "timeout"));
		LOG(LOG_WARN, "accept_failed", LS("message", "Too many open files"));
		LOG(LOG_INFO, "conn_open", LN("conn", i));
	}
	/* the summaries come when a window is over: the writer sweeps once a second */
	for (int waited = 0; waited < 100; waited++) {
		assert_true(log_flush(10000));
		free(text);
		text = slurp(path);
		s_cert = sum_field(text, "event=log_suppressed", "reason=bad_certificate",
				   " lines=");
		s_timeout = sum_field(text, "event=log_suppressed", "reason=timeout", " lines=");
		s_emfile = sum_field(text, "event=log_suppressed",
				     "suppressed_message=\"Too many open files\"", " lines=");
		/* (the summaries say event=... too, but inside their message) */
		cert = count_lines(text, "level=warn event=handshake_refused",
				   "reason=bad_certificate", NULL);
		timeout = count_lines(text, "level=warn event=handshake_refused", "reason=timeout",
				      NULL);
		emfile = count_lines(text, "level=warn event=accept_failed", NULL, NULL);
		if (cert + (int)s_cert == 100 && timeout + (int)s_timeout == 100 &&
		    emfile + (int)s_emfile == 100)
			break;
		usleep(100000);
	}
	/* a slow machine may roll a window inside the burst: more lines, never fewer than 10 */
	assert_true(cert >= 10 && cert < 100);
	assert_true(timeout >= 10 && timeout < 100);
	assert_true(emfile >= 10 && emfile < 100);
	assert_int_equal(cert + (int)s_cert, 100);
	assert_int_equal(timeout + (int)s_timeout, 100);
	assert_int_equal(emfile + (int)s_emfile, 100);
	assert_int_equal(log_suppressed() - before, s_cert + s_timeout + s_emfile);
	assert_int_equal(count_lines(text, "event=conn_open", NULL, NULL), 100);
	assert_non_null(strstr(text, "suppressed_event=handshake_refused reason=bad_certificate"));
	assert_non_null(strstr(text, " message=\"suppressed "));
	assert_non_null(strstr(text, " lines event=handshake_refused reason=bad_certificate in the "
				     "last "));
	free(text);
}

/* A log that cannot be written (a full disk): every line lost is counted, and stderr says
 * so once, naming the file and the error. */
static void test_write_error(void **state)
{
	char errpath[64];
	int saved = dup(2), fd;
	unsigned long long before = log_dropped(LOG_DROP_WRITE_ERROR);
	char *err;

	(void)state;
	snprintf(errpath, sizeof(errpath), "/tmp/test_tunnel_log_err.XXXXXX");
	fd = mkstemp(errpath);
	assert_true(fd >= 0 && saved >= 0);
	assert_int_equal(dup2(fd, 2), 2);
	assert_int_equal(log_setup(LOG_JSON, LOG_DEBUG, "/dev/full"), 0);
	for (int i = 0; i < 5; i++)
		LOG(LOG_INFO, "conn_open", LN("conn", i));
	assert_true(log_flush(10000));
	assert_int_equal(log_dropped(LOG_DROP_WRITE_ERROR) - before, 5);
	for (int i = 0; i < 5; i++)
		LOG(LOG_INFO, "conn_open", LN("conn", i));
	assert_true(log_flush(10000));
	assert_int_equal(log_dropped(LOG_DROP_WRITE_ERROR) - before, 10);
	assert_int_equal(log_setup(LOG_JSON, LOG_DEBUG, path), 0);
	assert_int_equal(dup2(saved, 2), 2);
	close(saved);
	close(fd);
	err = slurp(errpath);
	unlink(errpath);
	/* told once (the next report is a minute later), naming the file and the error */
	assert_int_equal(count_lines(err,
				     "cannot write the log to /dev/full: No space left on "
				     "device",
				     NULL, NULL),
			 1);
	free(err);
}

/* log_reopen() (SIGUSR1, after logrotate moved the file): what was logged before stays in
 * the moved file, what comes after goes to a new file of the old one's mode, with and
 * without the writer thread. */
static void reopen_case(size_t buffer)
{
	char old[80];
	char *before, *after;
	struct stat sb;

	snprintf(old, sizeof(old), "%s.old", path);
	assert_int_equal(truncate(path, 0), 0);
	assert_int_equal(chmod(path, 0604), 0);
	assert_int_equal(log_setup_buffer(LOG_JSON, LOG_DEBUG, path, buffer), 0);
	LOG(LOG_INFO, "conn_open", LN("conn", 1));
	assert_true(log_flush(10000));
	assert_int_equal(rename(path, old), 0);
	LOG(LOG_INFO, "conn_open", LN("conn", 2)); /* before the signal: the moved file */
	assert_true(log_flush(10000));
	log_reopen();
	LOG(LOG_INFO, "conn_open", LN("conn", 3));
	assert_true(log_flush(10000));
	before = slurp(old);
	after = slurp(path);
	assert_non_null(strstr(before, "\"conn\":1"));
	assert_non_null(strstr(before, "\"conn\":2"));
	assert_null(strstr(before, "\"conn\":3"));
	assert_null(strstr(after, "\"conn\":2"));
	assert_non_null(strstr(after, "\"event\":\"log_reopened\""));
	assert_non_null(strstr(after, "\"conn\":3"));
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0604);
	free(before);
	free(after);
	unlink(old);
}

static void test_reopen(void **state)
{
	(void)state;
	reopen_case(LOG_BUFFER_DEFAULT);
	reopen_case(0);
	assert_int_equal(log_setup(LOG_JSON, LOG_DEBUG, path), 0);
}

/* Threads logging at once: every line whole, none lost or mixed with another. */
static void *burst(void *arg)
{
	for (int i = 0; i < 500; i++)
		LOG(LOG_INFO, "burst", LN("thread", (long)(intptr_t)arg), LN("n", i),
		    LS("pad", "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"));
	return NULL;
}

static void test_threads(void **state)
{
	pthread_t t[4];
	unsigned long long before = log_dropped(LOG_DROP_FULL);
	char *text;
	int whole = 0;

	(void)state;
	assert_int_equal(truncate(path, 0), 0);
	assert_int_equal(log_setup(LOG_JSON, LOG_DEBUG, path), 0);
	for (long i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, burst, (void *)(intptr_t)i), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	assert_true(log_flush(10000));
	text = slurp(path);
	for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
		json_t *obj = json_loads(line, 0, NULL);

		if (obj == NULL)
			fail_msg("not a whole JSON line: %s", line);
		whole += strcmp(json_string_value(json_object_get(obj, "event")), "burst") == 0;
		json_decref(obj);
	}
	assert_int_equal(whole + (int)(log_dropped(LOG_DROP_FULL) - before), 2000);
	free(text);
}

/* A process that logs and returns from main: every line is in the file (atexit). */
static void test_written_at_exit(void **state)
{
	char exe[] = "/proc/self/exe", flag[] = "--log-and-exit";
	char *argv[] = {exe, flag, path, NULL};
	char *text;
	int status;
	pid_t pid;

	(void)state;
	assert_int_equal(truncate(path, 0), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		execv(argv[0], argv);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	text = slurp(path);
	assert_int_equal(count_lines(text, "\"event\":\"last_words\"", NULL, NULL), 2000);
	free(text);
}

/* ---- review: the rate limit's slots, a cut line, the ring's wrap ---- */

/* A flood of warnings with a message of their own each (more keys than the rate limit has
 * slots, all in the same second) does not hold back another event's lines: the operator
 * still sees reload_failed and crl_expired. The flood stays bounded, and what it lost is
 * summed up. */
static void test_rate_slots_full(void **state)
{
	char *text = NULL, msg[64];
	int noise = 0, total = 300;
	unsigned long long summed = 0;

	(void)state;
	assert_int_equal(truncate(path, 0), 0);
	assert_int_equal(log_setup(LOG_LOGFMT, LOG_DEBUG, path), 0);
	for (int i = 0; i < total; i++) {
		snprintf(msg, sizeof(msg), "refused peer serial %d", i);
		LOG(LOG_WARN, "noise", LN("n", i), LS("message", msg));
	}
	LOG(LOG_ERROR, "reload_failed", LS("trigger", "SIGHUP"), LS("reason", "incomplete_chain"),
	    LS("message", "the chain ends at another issuer"));
	LOG(LOG_ERROR, "crl_expired", LS("file", "/etc/mtls/crl.pem"),
	    LS("message", "CRL past its nextUpdate"));
	/* the summaries come once their window is over */
	for (int waited = 0; waited < 100; waited++) {
		assert_true(log_flush(10000));
		free(text);
		text = slurp(path);
		noise = count_lines(text, "level=warn event=noise", NULL, NULL);
		summed = sum_field(text, "event=log_suppressed", "suppressed_event=noise",
				   " lines=");
		if (noise + (int)summed == total)
			break;
		usleep(100000);
	}
	assert_int_equal(count_lines(text, "level=error event=reload_failed", NULL, NULL), 1);
	assert_int_equal(count_lines(text, "level=error event=crl_expired", NULL, NULL), 1);
	assert_true(noise < total);
	assert_int_equal(noise + (int)summed, total);
	free(text);
}

/* A write cut short mid-line (a full disk, a file size limit) leaves part of a line in the
 * file: the next line written must start a line of its own, not be glued to that part. */
static void test_write_cut_midline(void **state)
{
	struct rlimit old, lim;
	struct stat st;
	unsigned long long before = log_dropped(LOG_DROP_WRITE_ERROR);
	char pad[201], *text;
	int after = 0, saved = dup(2), devnull = open("/dev/null", O_WRONLY);

	(void)state;
	memset(pad, 'c', sizeof(pad) - 1);
	pad[sizeof(pad) - 1] = '\0';
	assert_int_equal(truncate(path, 0), 0);
	assert_int_equal(log_setup(LOG_LOGFMT, LOG_DEBUG, path), 0);
	LOG(LOG_INFO, "before", LN("n", 0));
	assert_true(log_flush(10000));
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_IGN);
	lim = old;
	lim.rlim_cur = (rlim_t)st.st_size + 60;
	/* the writer's report of the error goes to stderr: not into the test's output */
	assert_true(saved >= 0 && devnull >= 0);
	assert_int_equal(dup2(devnull, 2), 2);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	for (int i = 0; i < 3; i++)
		LOG(LOG_INFO, "cut", LN("n", i), LS("pad", pad));
	assert_true(log_flush(10000));
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	LOG(LOG_INFO, "after", LN("n", 1));
	assert_true(log_flush(10000));
	assert_int_equal(dup2(saved, 2), 2);
	close(saved);
	close(devnull);
	assert_int_equal(log_dropped(LOG_DROP_WRITE_ERROR) - before, 3);
	text = slurp(path);
	for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n"))
		if (strstr(line, "event=after") != NULL) {
			after++;
			if (strncmp(line, "ts=", 3) != 0 || strstr(line, "event=cut") != NULL)
				fail_msg("a line glued to the part of one cut short: %s", line);
		}
	assert_int_equal(after, 1);
	free(text);
}

/* The reader of test_ring_wrap: reads the pipe in small pieces, now and then late. */
struct drained {
	int fd;
	char *text;
	size_t len, cap;
};

static void *drain(void *arg)
{
	struct drained *d = arg;
	unsigned seed = 7;

	for (;;) {
		size_t want = 1 + (size_t)(rand_r(&seed) % 3000);
		ssize_t n;

		if (d->cap - d->len < want + 1) {
			d->cap = d->cap * 2 + want + 1;
			d->text = realloc(d->text, d->cap);
			if (d->text == NULL)
				abort();
		}
		n = read(d->fd, d->text + d->len, want);
		if (n <= 0)
			break;
		d->len += (size_t)n;
		d->text[d->len] = '\0';
		if (rand_r(&seed) % 4 == 0)
			usleep((useconds_t)(rand_r(&seed) % 500));
	}
	return NULL;
}

/* Lines of random sizes, some longer than the whole buffer, through a small ring (so every
 * wrap position is met) to a reader that is sometimes late: what comes out is whole lines,
 * in order, each as logged, and the ones missing were counted as dropped. */
static void test_ring_wrap(void **state)
{
	enum { TOTAL = 4000, RING = 2039, MAXPAD = 2600 };
	struct drained d = {0};
	unsigned long long before = log_dropped(LOG_DROP_FULL), told = 0;
	unsigned seed = 12345;
	char name[64], *pad = malloc(MAXPAD + 1);
	pthread_t reader;
	int p[2], seen = 0, last = -1;

	(void)state;
	assert_non_null(pad);
	assert_int_equal(pipe(p), 0);
	snprintf(name, sizeof(name), "/proc/self/fd/%d", p[1]);
	assert_int_equal(log_setup_buffer(LOG_LOGFMT, LOG_DEBUG, name, RING), 0);
	close(p[1]);
	d.fd = p[0];
	assert_int_equal(pthread_create(&reader, NULL, drain, &d), 0);
	for (int i = 0; i < TOTAL; i++) {
		size_t n = (size_t)(rand_r(&seed) % (i % 50 == 0 ? MAXPAD : 300)) + 1;

		memset(pad, 'a' + i % 26, n);
		pad[n] = '\0';
		LOG(LOG_INFO, "ring", LN("n", i), LN("len", (long long)n), LS("pad", pad));
		if (rand_r(&seed) % 8 == 0)
			usleep(50);
	}
	assert_true(log_flush(10000));
	/* back to the file: the pipe's write end is closed, the reader sees its end */
	assert_int_equal(log_setup(LOG_JSON, LOG_DEBUG, path), 0);
	pthread_join(reader, NULL);
	close(p[0]);
	assert_non_null(d.text);
	assert_int_equal(d.text[d.len - 1], '\n');
	for (char *line = strtok(d.text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
		int n, len, at;
		char *v = NULL;

		if (strstr(line, " event=log_lines_dropped ") != NULL) {
			v = strstr(line, " lines=");
			assert_non_null(v);
			told += strtoull(v + 7, NULL, 10);
			continue;
		}
		if (strncmp(line, "ts=", 3) != 0 || (v = strstr(line, " event=ring n=")) == NULL ||
		    sscanf(v, " event=ring n=%d len=%d pad=%n", &n, &len, &at) != 2)
			fail_msg("not a whole line: %.200s", line);
		if (n <= last)
			fail_msg("line %d after line %d", n, last);
		last = n;
		v += at;
		if ((int)strlen(v) != len ||
		    (int)strspn(v, (char[]){(char)('a' + n % 26), 0}) != len)
			fail_msg("line %d: pad of %zu bytes, %d logged: %.80s", n, strlen(v), len,
				 v);
		seen++;
	}
	/* every line came out or was counted (a count that includes notices dropped in turn),
	 * and every drop was told */
	assert_true(seen > 0 && seen <= TOTAL);
	assert_true(seen + (int)(log_dropped(LOG_DROP_FULL) - before) >= TOTAL);
	assert_int_equal(told, log_dropped(LOG_DROP_FULL) - before);
	free(d.text);
	free(pad);
}

/* The child of test_exit_stalled: after the daemon's own flush at the end ran out of time
 * on a stalled reader, how long exit's log_stop still waits, in ms, written to fd. */
static double stall_t0;
static int stall_fd = -1;

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static void stall_report(void)
{
	dprintf(stall_fd, "%.0f\n", now_ms() - stall_t0);
}

static int stall_and_exit(int fd)
{
	int p[2];
	char name[64];

	stall_fd = fd;
	/* registered first, so it runs after log_stop */
	if (atexit(stall_report) != 0 || pipe(p) != 0)
		return 1;
	snprintf(name, sizeof(name), "/proc/self/fd/%d", p[1]);
	if (log_setup(LOG_LOGFMT, LOG_DEBUG, name) != 0)
		return 1;
	/* more than the pipe holds: the writer blocks, nobody reads */
	for (int i = 0; i < 2000; i++)
		LOG(LOG_INFO, "filler", LN("n", i),
		    LS("pad", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"));
	if (log_flush(LOG_STOP_WAIT_MS)) /* as tunnel_run does last */
		return 2;
	stall_t0 = now_ms();
	return 0;
}

/* A daemon leaving with a stalled reader waits LOG_STOP_WAIT_MS once, not once in its own
 * last flush and again in exit's log_stop. */
static void test_exit_stalled(void **state)
{
	char exe[] = "/proc/self/exe", flag[] = "--stall-and-exit", fdarg[16], got[32] = "";
	char *argv[] = {exe, flag, fdarg, NULL};
	int p[2], status;
	ssize_t n;
	pid_t pid;

	(void)state;
	assert_int_equal(pipe(p), 0);
	snprintf(fdarg, sizeof(fdarg), "%d", p[1]);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(p[0]);
		execv(argv[0], argv);
		_exit(127);
	}
	close(p[1]);
	n = read(p[0], got, sizeof(got) - 1);
	close(p[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_true(n > 0);
	/* before: LOG_STOP_WAIT_MS again; a generous margin below it for a loaded machine */
	if (atoi(got) >= LOG_STOP_WAIT_MS / 2)
		fail_msg("exit waited %s ms more for a reader that had been stalled for %d ms",
			 strtok(got, "\n"), LOG_STOP_WAIT_MS);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_logfmt),		cmocka_unit_test(test_json),
		cmocka_unit_test(test_truncated),	cmocka_unit_test(test_stalled_reader),
		cmocka_unit_test(test_rate_limit),	cmocka_unit_test(test_write_error),
		cmocka_unit_test(test_threads),		cmocka_unit_test(test_written_at_exit),
		cmocka_unit_test(test_ring_wrap),	cmocka_unit_test(test_write_cut_midline),
		cmocka_unit_test(test_rate_slots_full), cmocka_unit_test(test_exit_stalled),
		cmocka_unit_test(test_reopen),
	};

	/* the child of test_written_at_exit: log, then leave main without a flush */
	if (argc == 3 && strcmp(argv[1], "--log-and-exit") == 0) {
		if (log_setup(LOG_JSON, LOG_DEBUG, argv[2]) != 0)
			return 1;
		for (int i = 0; i < 2000; i++)
			LOG(LOG_INFO, "last_words", LN("n", i));
		return 0;
	}

	if (argc == 3 && strcmp(argv[1], "--stall-and-exit") == 0)
		return stall_and_exit(atoi(argv[2]));

	return cmocka_run_group_tests(tests, setup, teardown);
}
