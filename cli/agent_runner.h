/*
 * mtls agent's hooks under the sandbox (common/sandbox.h): a small process forked before the
 * agent restricts itself runs them.
 *
 * Why a process of its own: the sandbox kills a process that calls execve() and Landlock binds
 * every child, so a hook run by the sandboxed agent could neither start /bin/sh nor touch what
 * the service's reload needs (systemctl, pg_ctl, a PID file elsewhere). Allowing execve and
 * widening Landlock for the hooks would hand those powers to whoever takes over the agent's
 * TLS or JSON parsing. Instead the runner, forked while the agent is still single-threaded and
 * unrestricted, keeps the hook's configuration (--exec, --signal/--pid-file, the file paths of
 * MTLS_CERT, MTLS_KEY, MTLS_CA, MTLS_DIR) and waits on a socketpair. The agent can only ask it
 * to run that one hook now, with the few values that change (MTLS_SERIAL, MTLS_OLD_SERIAL,
 * MTLS_NOT_AFTER, MTLS_EVENT), each checked to be a short word of safe characters, or to stop
 * the running command. A compromised agent can make the hook run again; it cannot choose what
 * runs, nor its environment or files.
 *
 * The runner ignores SIGTERM, SIGINT, SIGHUP and SIGUSR1 (they are the agent's), ends the
 * running command when the agent asks (its SIGTERM) or goes away (end of file), and exits at
 * end of file. The agent keeps systemd's watchdog fed while it waits (NotifyAccess=main).
 */
#ifndef MTLS_CLI_AGENT_RUNNER_H
#define MTLS_CLI_AGENT_RUNNER_H

#include <stddef.h>

#include "agent_hook.h"

struct agent_runner;

/* Fork the runner for hook h, whose command is told fixed (NAME=VALUE strings: MTLS_CERT,
 * MTLS_KEY, MTLS_CA, MTLS_DIR; at most 4) on top of what each request gives. Call before any
 * thread starts. NULL with err. */
struct agent_runner *agent_runner_start(const struct agent_hook *h, const char *const *fixed,
					size_t nfixed, char *err, size_t err_len);

/* agent_hook_run() through the runner: env gives MTLS_SERIAL, MTLS_OLD_SERIAL,
 * MTLS_NOT_AFTER and MTLS_EVENT (others are the runner's own and ignored). stop(arg) is asked
 * when stop_fd is readable; true ends the command. 0, or -1 with err and *res. */
int agent_runner_run(struct agent_runner *r, const char *const *env, size_t nenv, int stop_fd,
		     agent_hook_stop_fn stop, void *arg, struct agent_hook_result *res, char *err,
		     size_t err_len);

/* Close the channel (the runner exits) and reap it. NULL: nothing. */
void agent_runner_free(struct agent_runner *r);

#endif /* MTLS_CLI_AGENT_RUNNER_H */
