/*
 * Durations with units (duration.h).
 */
#include <stdio.h>
#include <string.h>

#include "duration.h"

static const struct {
	const char *name;
	long long ms;
} units[] = {{"d", 86400000LL}, {"h", 3600000LL}, {"m", 60000LL}, {"s", 1000LL}, {"ms", 1LL}};

int duration_parse(const char *text, const char *what, long long min_ms, long long max_ms,
		   long long *ms, char *err, size_t err_len)
{
	long long n = 0;
	const char *p = text;
	char lo[32], hi[32];

	duration_format(min_ms, lo, sizeof(lo));
	duration_format(max_ms, hi, sizeof(hi));
	if (*p < '0' || *p > '9')
		goto bad;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (n > (max_ms + 9) / 10 + 1) /* far past the bound: stop before overflow */
			goto range;
		n = n * 10 + (*p - '0');
	}
	if (*p == '\0') {
		snprintf(err, err_len, "%s: '%s' has no unit; write it with one, e.g. %s%s", what,
			 text, text, "s");
		return -1;
	}
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(p, units[i].name) != 0)
			continue;
		if (n > max_ms / units[i].ms)
			goto range;
		n *= units[i].ms;
		if (n < min_ms || n > max_ms)
			goto range;
		*ms = n;
		return 0;
	}
bad:
	snprintf(err, err_len,
		 "%s: '%s' is not a duration; write a whole number and a unit (ms, s, "
		 "m, h, d), e.g. 10m",
		 what, text);
	return -1;
range:
	snprintf(err, err_len, "%s: '%s' is out of range; give %s to %s", what, text, lo, hi);
	return -1;
}

void duration_format(long long ms, char *out, size_t len)
{
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (ms != 0 && ms % units[i].ms == 0) {
			snprintf(out, len, "%lld%s", ms / units[i].ms, units[i].name);
			return;
		}
	}
	snprintf(out, len, "%lldms", ms);
}
