/*
 * What mtls agent does after it changed a service's certificate files: run a command and/or
 * send a signal to the service, so that it loads them.
 *
 * The command (--exec) is one shell command line, run as /bin/sh -c CMD (like cron and
 * certbot's --deploy-hook: `pg_ctl reload -D /var/lib/postgresql/15/main` and
 * `systemctl reload nginx` are written as on a terminal). It runs in its own process group
 * with stdin from /dev/null, the agent's environment (without what systemd gave the agent:
 * NOTIFY_SOCKET, WATCHDOG_*, LISTEN_*) plus the MTLS_* variables the caller
 * gives (MTLS_CERT, MTLS_KEY, MTLS_CA, MTLS_SERIAL, ...), default signal handling and an
 * empty signal mask. Its output (stdout and stderr) is collected, at most
 * AGENT_HOOK_OUTPUT_MAX bytes of its end, for the log line. It must exit 0 within the
 * timeout; past it the whole group gets SIGTERM, then SIGKILL AGENT_HOOK_KILL_GRACE_MS
 * later. A stop of the agent (SIGTERM) ends a running command the same way. Meanwhile
 * systemd's watchdog (WATCHDOG_USEC) is fed: the wait is bounded by the timeout.
 *
 * The signal (--signal PID, or --pid-file FILE read at each use: its first line is the PID,
 * which is how PostgreSQL's postmaster.pid starts) is sent after the command.
 */
#ifndef MTLS_CLI_AGENT_HOOK_H
#define MTLS_CLI_AGENT_HOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define AGENT_HOOK_OUTPUT_MAX	 1024
#define AGENT_HOOK_KILL_GRACE_MS 2000
#define AGENT_HOOK_MAX_ENV	 16

struct agent_hook {
	const char *exec; /* shell command line, or NULL */
	long long timeout_ms;
	pid_t pid;	      /* --signal, or 0 */
	const char *pid_file; /* or NULL */
	int sig;	      /* the signal to send (SIGHUP by default) */
};

/* How a hook ended. */
struct agent_hook_result {
	bool ran;				/* the command was started */
	int exit_status;			/* its exit status, or -1 */
	int term_signal;			/* the signal that ended it, or 0 */
	bool timed_out;				/* killed at the timeout */
	bool stopped;				/* killed because the agent stops */
	long long ms;				/* how long it ran */
	pid_t signalled;			/* the process signalled, or 0 */
	char output[AGENT_HOOK_OUTPUT_MAX + 1]; /* the end of its output, NUL-terminated */
};

/* A signal name ("HUP", "SIGHUP", "USR1", "TERM", ...) or number into *sig. 0, or -1. */
int agent_hook_signal_parse(const char *name, int *sig);
/* The short name of a signal ("HUP"), for logs. */
const char *agent_hook_signal_name(int sig);

/* Read the PID from the first line of path (at most 4 KiB read). 0, or -1 with the message. */
int agent_hook_read_pid(const char *path, pid_t *pid, char *err, size_t err_len);

/* Whether a stop was asked for: called when stop_fd is readable (it should consume what made
 * it so), returns true to end the command now. */
typedef bool (*agent_hook_stop_fn)(void *arg);

/* Run the hook: the command (if any) with env (NAME=VALUE strings, at most
 * AGENT_HOOK_MAX_ENV, replacing variables of the same names), then the signal (if any). While
 * the command runs, stop_fd (or -1) is watched and stop(arg) asked when it is readable.
 * 0 when every part succeeded; -1 with one line in err (what failed and what to do) and the
 * details in *res. */
int agent_hook_run(const struct agent_hook *h, const char *const *env, size_t nenv, int stop_fd,
		   agent_hook_stop_fn stop, void *arg, struct agent_hook_result *res, char *err,
		   size_t err_len);

#endif /* MTLS_CLI_AGENT_HOOK_H */
