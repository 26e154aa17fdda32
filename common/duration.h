/*
 * Durations as operators write them: a whole number and a unit, "500ms", "30s", "10m", "24h",
 * "7d". A bare number is refused (is "30" seconds or milliseconds?), and so is anything else
 * (a sign, a fraction, a blank, two units).
 */
#ifndef MTLS_COMMON_DURATION_H
#define MTLS_COMMON_DURATION_H

#include <stddef.h>

/* Parse text into milliseconds, which must lie in [min_ms, max_ms]. what names the option in
 * messages ("--ttl"). 0, or -1 with a one-line message saying what to write. */
int duration_parse(const char *text, const char *what, long long min_ms, long long max_ms,
		   long long *ms, char *err, size_t err_len);
/* ms as the largest unit that divides it ("10m", "1500ms"), for messages. */
void duration_format(long long ms, char *out, size_t len);

#endif
