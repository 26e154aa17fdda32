/*
 * mtls agent's hook runner (agent_runner.h): forked before the sandbox, runs the one
 * configured hook when the agent asks.
 *
 * Messages (SOCK_SEQPACKET, one a send):
 *   agent -> runner  'R' then NAME=VALUE strings, each NUL-terminated: run the hook
 *                    'S': end the running command (the agent stops)
 *   runner -> agent  struct reply: agent_hook_run()'s result
 */
#include "agent_runner.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "service_notify.h"

#define FIXED_MAX   4
#define VALUE_MAX   128 /* a serial, a time, an event name */
#define REQUEST_MAX (1 + AGENT_HOOK_MAX_ENV * (32 + VALUE_MAX + 1))

/* The variables a request may set: the rest of the environment is the runner's. */
static const char *const variable[] = {
	"MTLS_SERIAL=", "MTLS_OLD_SERIAL=", "MTLS_NOT_AFTER=", "MTLS_EVENT="};

struct reply {
	int rc;
	struct agent_hook_result res;
	char err[4096];
};

struct agent_runner {
	int fd;
	pid_t pid;
};

/* Whether s is NAME=VALUE of a variable a request may set, with a short value of safe
 * characters (no path, no shell syntax). */
static bool allowed(const char *s)
{
	const char *v = NULL;

	for (size_t i = 0; i < sizeof(variable) / sizeof(variable[0]); i++)
		if (strncmp(s, variable[i], strlen(variable[i])) == 0)
			v = s + strlen(variable[i]);
	if (v == NULL || strlen(v) > VALUE_MAX)
		return false;
	for (; *v != '\0'; v++)
		if (!((*v >= '0' && *v <= '9') || (*v >= 'a' && *v <= 'z') ||
		      (*v >= 'A' && *v <= 'Z') || strchr("-_:.,+ ", *v) != NULL))
			return false;
	return true;
}

/* The command's stop: the agent asked ('S') or went away. */
static bool runner_stop(void *arg)
{
	int fd = *(int *)arg;
	char c;
	ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);

	return n == 0 || (n == 1 && c == 'S') || (n < 0 && errno != EAGAIN && errno != EINTR);
}

static void runner_main(int fd, const struct agent_hook *h, char fixed[][PATH_MAX + 32],
			size_t nfixed)
{
	static char req[REQUEST_MAX + 1];
	static struct reply rep;
	const char *env[AGENT_HOOK_MAX_ENV];

	signal(SIGTERM, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGUSR1, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	for (;;) {
		ssize_t n = recv(fd, req, REQUEST_MAX, 0);
		size_t nenv = 0;

		if (n == 0 || (n < 0 && errno != EINTR))
			_exit(0);
		if (n <= 0 || req[0] != 'R')
			continue; /* 'S' with nothing running */
		req[n] = '\0';
		for (size_t i = 0; i < nfixed; i++)
			env[nenv++] = fixed[i];
		for (char *p = req + 1; p < req + n && nenv < AGENT_HOOK_MAX_ENV;
		     p += strlen(p) + 1)
			if (allowed(p))
				env[nenv++] = p;
		memset(&rep, 0, sizeof(rep));
		rep.rc = agent_hook_run(h, env, nenv, fd, runner_stop, &fd, &rep.res, rep.err,
					sizeof(rep.err));
		if (send(fd, &rep, sizeof(rep), MSG_NOSIGNAL) < 0)
			_exit(0);
	}
}

struct agent_runner *agent_runner_start(const struct agent_hook *h, const char *const *fixed,
					size_t nfixed, char *err, size_t err_len)
{
	static char copy[FIXED_MAX][PATH_MAX + 32];
	struct agent_runner *r;
	int sv[2];

	if (nfixed > FIXED_MAX) {
		snprintf(err, err_len, "internal: too many fixed hook variables");
		return NULL;
	}
	for (size_t i = 0; i < nfixed; i++)
		snprintf(copy[i], sizeof(copy[i]), "%s", fixed[i]);
	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		snprintf(err, err_len, "out of memory");
		return NULL;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
		snprintf(err, err_len, "cannot start the hook runner: socketpair: %s",
			 strerror(errno));
		free(r);
		return NULL;
	}
	r->pid = fork();
	if (r->pid < 0) {
		snprintf(err, err_len, "cannot start the hook runner: fork: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		free(r);
		return NULL;
	}
	if (r->pid == 0) {
		close(sv[0]);
		runner_main(sv[1], h, copy, nfixed);
		_exit(0);
	}
	close(sv[1]);
	r->fd = sv[0];
	return r;
}

int agent_runner_run(struct agent_runner *r, const char *const *env, size_t nenv, int stop_fd,
		     agent_hook_stop_fn stop, void *arg, struct agent_hook_result *res, char *err,
		     size_t err_len)
{
	static char req[REQUEST_MAX];
	static struct reply rep;
	double watchdog = service_notify_watchdog_every();
	size_t used = 1;
	bool stopping = false;
	ssize_t n;

	memset(res, 0, sizeof(*res));
	res->exit_status = -1;
	req[0] = 'R';
	for (size_t i = 0; i < nenv; i++) {
		size_t l = strlen(env[i]) + 1;

		if (!allowed(env[i]))
			continue; /* the runner's own (paths), or not for a request */
		if (used + l > sizeof(req))
			break;
		memcpy(req + used, env[i], l);
		used += l;
	}
	if (send(r->fd, req, used, MSG_NOSIGNAL) < 0)
		goto gone;
	for (;;) {
		struct pollfd pf[2] = {{r->fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
		int ms = watchdog > 0 ? (int)(watchdog * 1000) : -1;

		if (watchdog > 0)
			service_notify_watchdog();
		if (poll(pf, stop_fd >= 0 && !stopping ? 2 : 1, ms) < 0 && errno != EINTR)
			goto gone;
		if (!stopping && stop_fd >= 0 && (pf[1].revents & POLLIN) && stop(arg)) {
			stopping = true;
			if (send(r->fd, "S", 1, MSG_NOSIGNAL) < 0)
				goto gone;
		}
		if (pf[0].revents & (POLLIN | POLLHUP | POLLERR))
			break;
	}
	n = recv(r->fd, &rep, sizeof(rep), 0);
	if (n != (ssize_t)sizeof(rep))
		goto gone;
	*res = rep.res;
	snprintf(err, err_len, "%s", rep.err);
	return rep.rc;
gone:
	snprintf(err, err_len,
		 "the hook runner (pid %ld) is gone; restart the agent (it forks a new one)",
		 (long)r->pid);
	return -1;
}

void agent_runner_free(struct agent_runner *r)
{
	if (r == NULL)
		return;
	close(r->fd);
	while (waitpid(r->pid, NULL, 0) < 0 && errno == EINTR)
		;
	free(r);
}
