/*
 * The daemons' one logging module: one line per event, JSON or logfmt, to stderr (or a
 * file), each with a timestamp, level and event name. The library never prints; everything
 * the daemons say goes through here. Private keys and passphrases never do.
 */
#ifndef MTLS_TUNNEL_LOG_H
#define MTLS_TUNNEL_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_JSON, LOG_LOGFMT };

struct log_field {
	const char *key;
	const char *str; /* NULL: use num */
	long long num;
};

#define LS(k, v) ((struct log_field){(k), (v) != NULL ? (v) : "", 0})
#define LN(k, v) ((struct log_field){(k), NULL, (long long)(v)})

/* Where and how to log; safe to call once before any thread starts. */
int log_setup(enum log_format format, enum log_level min_level, const char *path);
int log_format_parse(const char *name, enum log_format *out);
int log_level_parse(const char *name, enum log_level *out);

/* One line; thread-safe (one write(2) per line). */
void log_event(enum log_level level, const char *event, const struct log_field *fields, size_t n);

#define LOG(level, event, ...)                                                                     \
	do {                                                                                       \
		const struct log_field log_f_[] = {__VA_ARGS__};                                   \
		log_event((level), (event), log_f_, sizeof(log_f_) / sizeof(log_f_[0]));           \
	} while (0)

#endif
