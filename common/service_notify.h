/*
 * The daemons' side of systemd's service notification protocol (sd_notify(3), through
 * Debian's libsystemd): READY=1 once serving, RELOADING=1 / READY=1 around a reload,
 * STOPPING=1 when a drain begins, STATUS= lines for `systemctl status`, and WATCHDOG=1.
 *
 * Without NOTIFY_SOCKET in the environment (not started by systemd as Type=notify) every
 * call does nothing and returns 0: no error, nothing logged. The caller decides what a
 * failed send means (a service manager gone away is not a reason to stop serving).
 * Call from the main thread only (the daemon's main loop): systemd takes messages from the
 * main process (NotifyAccess=main); messages from one thread keep their order.
 */
#ifndef MTLS_COMMON_SERVICE_NOTIFY_H
#define MTLS_COMMON_SERVICE_NOTIFY_H

#include <stdbool.h>

/* Longest STATUS= text sent; longer text is cut (systemctl shows one line). */
#define SERVICE_NOTIFY_STATUS_MAX 400

/* Is a service manager listening (NOTIFY_SOCKET set)? */
bool service_notify_enabled(void);
/* READY=1 with MAINPID= (this process) and STATUS=status (NULL: none). Also after a reload
 * (RELOADING=1), with the reload's result as status. 0, or -1 if the message was not sent. */
int service_notify_ready(const char *status);
/* RELOADING=1 with MONOTONIC_USEC= (CLOCK_MONOTONIC now, as systemd wants it to match the
 * reload to the request); the READY=1 that follows ends the reload. */
int service_notify_reloading(void);
/* STOPPING=1, with STATUS=status (NULL: none). */
int service_notify_stopping(const char *status);
/* STATUS=status alone. Newlines become spaces; at most SERVICE_NOTIFY_STATUS_MAX bytes. */
int service_notify_status(const char *status);
/* Seconds between two WATCHDOG=1: half of the WATCHDOG_USEC systemd set for this process
 * (WatchdogSec=), or 0 when the watchdog is off (or meant for another process:
 * WATCHDOG_PID). */
double service_notify_watchdog_every(void);
/* WATCHDOG=1: "this daemon is alive and healthy". Send it only after checking that. */
int service_notify_watchdog(void);

#endif
