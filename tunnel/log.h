/*
 * The daemons' one logging module: one line per event, JSON or logfmt, to stderr (or a
 * file), each with a timestamp, level and event name. The library never prints; everything
 * the daemons say goes through here. Private keys and passphrases never do.
 *
 * Logging never blocks the caller on the log's reader: lines go through a bounded buffer to
 * a writer thread; when the buffer is full a line is dropped and counted (log_dropped()),
 * and the log later says how many. Warnings and errors are rate-limited per (event, value of
 * the "reason" field, else of the "message" field): at most 10 lines a second per key, the
 * rest summed up in one "log_suppressed" line.
 */
#ifndef MTLS_TUNNEL_LOG_H
#define MTLS_TUNNEL_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_JSON, LOG_LOGFMT };
enum log_drop { LOG_DROP_FULL, LOG_DROP_WRITE_ERROR, LOG_DROP_REASONS };

#define LOG_BUFFER_DEFAULT (512 * 1024) /* a few seconds of a busy daemon's lines */
#define LOG_STOP_WAIT_MS   2000		/* how long log_stop() waits for a stalled reader */

struct log_field {
	const char *key;
	const char *str; /* NULL: use num */
	long long num;
};

#define LS(k, v) ((struct log_field){(k), (v) != NULL ? (v) : "", 0})
#define LN(k, v) ((struct log_field){(k), NULL, (long long)(v)})

/* Where and how to log, and start the writer thread (which takes no signals). Call once
 * before any other thread starts; -1 with errno if path cannot be opened. The buffered lines
 * are written at exit (atexit(log_stop)). Calling it again first flushes what was logged. */
int log_setup(enum log_format format, enum log_level min_level, const char *path);
/* The same with a buffer of that many bytes (tests; 0: no buffer, every line written by its
 * caller). */
int log_setup_buffer(enum log_format format, enum log_level min_level, const char *path,
		     size_t buffer);
int log_format_parse(const char *name, enum log_format *out);
int log_level_parse(const char *name, enum log_level *out);

/* One line; thread-safe, never waits on the log's reader; lines never interleave. */
void log_event(enum log_level level, const char *event, const struct log_field *fields, size_t n);

/* Wait until every line logged so far is written (or failed), at most timeout_ms; false if
 * the time ran out (the reader is stalled). For the daemon before it writes to stderr itself,
 * so that its message comes after the lines logged before it. */
bool log_flush(int timeout_ms);
/* Flush (at most LOG_STOP_WAIT_MS) and stop the writer; later lines are written by their
 * callers. Registered with atexit by log_setup; calling it again does nothing. */
void log_stop(void);

/* Open the --log-file again, by its name (after logrotate moved it; SIGUSR1 in the daemons):
 * the lines from the next batch on go to the new file, created with the old one's
 * permissions unless it exists already. Logs log_reopened, or log_reopen_failed and goes on
 * with the old file. Nothing for stderr. Thread-safe; does not wait for the reopen. */
void log_reopen(void);

/* The tunnel (a config file's [section]) whose lines this thread logs from now on: each
 * carries "tunnel":NAME after "event" (logfmt: tunnel=NAME). NULL: none. name must outlive
 * the logging (the options' text). thread_start() hands the caller's to the new thread. */
void log_tag_set(const char *name);
const char *log_tag(void);

/* Lines lost since the start, for the metrics: the buffer was full, or writing failed. */
unsigned long long log_dropped(enum log_drop reason);
/* Lines held back by the rate limit since the start. */
unsigned long long log_suppressed(void);

#define LOG(level, event, ...)                                                                     \
	do {                                                                                       \
		const struct log_field log_f_[] = {__VA_ARGS__};                                   \
		log_event((level), (event), log_f_, sizeof(log_f_) / sizeof(log_f_[0]));           \
	} while (0)

#endif
