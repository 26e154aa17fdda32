/*
 * sd_notify(3) messages of the daemons (service_notify.h). The protocol itself is
 * libsystemd's: only the messages are composed here.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "service_notify.h"

bool service_notify_enabled(void)
{
	const char *s = getenv("NOTIFY_SOCKET");

	return s != NULL && s[0] != '\0';
}

/* "STATUS=" and status on one line, cut to SERVICE_NOTIFY_STATUS_MAX, after prefix. */
static void compose(char *out, size_t len, const char *prefix, const char *status)
{
	size_t used;

	snprintf(out, len, "%s", prefix);
	if (status == NULL)
		return;
	used = strlen(out);
	snprintf(out + used, len - used, "%sSTATUS=%.*s", used > 0 ? "\n" : "",
		 SERVICE_NOTIFY_STATUS_MAX, status);
	for (char *p = out + used + (used > 0 ? 1 : 0); *p != '\0'; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
}

static int send_msg(const char *msg)
{
	/* 0: no NOTIFY_SOCKET (nothing to do), > 0 sent, < 0 an errno */
	return sd_notify(0, msg) < 0 ? -1 : 0;
}

int service_notify_ready(const char *status)
{
	char msg[SERVICE_NOTIFY_STATUS_MAX + 64], head[48];

	if (!service_notify_enabled())
		return 0;
	snprintf(head, sizeof(head), "READY=1\nMAINPID=%ld", (long)getpid());
	compose(msg, sizeof(msg), head, status);
	return send_msg(msg);
}

int service_notify_reloading(void)
{
	struct timespec ts;
	char msg[64];

	if (!service_notify_enabled())
		return 0;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
		 (unsigned long long)ts.tv_sec * 1000000ULL +
			 (unsigned long long)ts.tv_nsec / 1000ULL);
	return send_msg(msg);
}

int service_notify_stopping(const char *status)
{
	char msg[SERVICE_NOTIFY_STATUS_MAX + 64];

	if (!service_notify_enabled())
		return 0;
	compose(msg, sizeof(msg), "STOPPING=1", status);
	return send_msg(msg);
}

int service_notify_status(const char *status)
{
	char msg[SERVICE_NOTIFY_STATUS_MAX + 64];

	if (!service_notify_enabled() || status == NULL)
		return 0;
	compose(msg, sizeof(msg), "", status);
	return send_msg(msg);
}

double service_notify_watchdog_every(void)
{
	uint64_t usec = 0;

	/* > 0 only if WATCHDOG_USEC is set and WATCHDOG_PID (if set) is this process */
	if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
		return 0;
	return (double)usec / 2e6;
}

int service_notify_watchdog(void)
{
	if (!service_notify_enabled())
		return 0;
	return send_msg("WATCHDOG=1");
}
