/*
 * The agent's hook (agent_hook.h): a shell command run with posix_spawn (the agent may have
 * threads, the log's writer, so nothing but exec follows the fork), watched with a pidfd and
 * bounded by its timeout; then a signal to the service.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent_hook.h"
#include "service_notify.h"

extern char **environ;

static const struct {
	const char *name;
	int sig;
} signals[] = {
	{"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"USR1", SIGUSR1},
	{"USR2", SIGUSR2}, {"TERM", SIGTERM}, {"CONT", SIGCONT}, {"WINCH", SIGWINCH},
	{"ALRM", SIGALRM}, {"KILL", SIGKILL},
};

int agent_hook_signal_parse(const char *name, int *sig)
{
	char *end;
	long n;

	if (name == NULL || name[0] == '\0')
		return -1;
	if (strncmp(name, "SIG", 3) == 0)
		name += 3;
	for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++)
		if (strcasecmp(name, signals[i].name) == 0) {
			*sig = signals[i].sig;
			return 0;
		}
	if (name[0] < '1' || name[0] > '9')
		return -1;
	errno = 0;
	n = strtol(name, &end, 10);
	if (errno != 0 || *end != '\0' || n < 1 || n > SIGRTMAX)
		return -1;
	*sig = (int)n;
	return 0;
}

const char *agent_hook_signal_name(int sig)
{
	for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++)
		if (signals[i].sig == sig)
			return signals[i].name;
	return "?";
}

int agent_hook_read_pid(const char *path, pid_t *pid, char *err, size_t err_len)
{
	char buf[4096], *end;
	ssize_t n;
	long v;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0) {
		snprintf(err, err_len, "cannot read the pid file %s: %s", path, strerror(errno));
		return -1;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0) {
		snprintf(err, err_len, "cannot read the pid file %s: %s", path, strerror(errno));
		return -1;
	}
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	errno = 0;
	v = strtol(buf, &end, 10);
	if (buf[0] < '1' || buf[0] > '9' || errno != 0 || *end != '\0' || v <= 1 || v > INT_MAX) {
		snprintf(
			err, err_len,
			"the pid file %s does not start with a process id (a number above 1 on the "
			"first line)",
			path);
		return -1;
	}
	*pid = (pid_t)v;
	return 0;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Keep the last AGENT_HOOK_OUTPUT_MAX bytes of what the command wrote. */
static void keep_output(struct agent_hook_result *res, size_t *len, const char *buf, size_t n)
{
	if (n >= AGENT_HOOK_OUTPUT_MAX) {
		memcpy(res->output, buf + n - AGENT_HOOK_OUTPUT_MAX, AGENT_HOOK_OUTPUT_MAX);
		*len = AGENT_HOOK_OUTPUT_MAX;
	} else {
		if (*len + n > AGENT_HOOK_OUTPUT_MAX) {
			size_t drop = *len + n - AGENT_HOOK_OUTPUT_MAX;

			memmove(res->output, res->output + drop, *len - drop);
			*len -= drop;
		}
		memcpy(res->output + *len, buf, n);
		*len += n;
	}
	res->output[*len] = '\0';
}

/* What systemd hands the agent itself (sd_notify(3), sd_listen_fds(3)): a command that
 * inherited NOTIFY_SOCKET could say READY=1, STOPPING=1 or MAINPID= for the agent's service
 * (with NotifyAccess=all), and one that inherited WATCHDOG_* or LISTEN_* would think it is the
 * service. Not passed on. */
static bool service_var(const char *e)
{
	static const char *const names[] = {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
					    "LISTEN_FDS",    "LISTEN_PID",    "LISTEN_FDNAMES"};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		size_t l = strlen(names[i]);

		if (strncmp(e, names[i], l) == 0 && e[l] == '=')
			return true;
	}
	return false;
}

/* The environment of the command: ours without the variables env sets and systemd's for
 * the agent, then env. */
static char **build_env(const char *const *env, size_t nenv)
{
	size_t n = 0, k = 0;
	char **v;

	while (environ != NULL && environ[n] != NULL)
		n++;
	v = calloc(n + nenv + 1, sizeof(*v));
	if (v == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		bool replaced = false;

		for (size_t j = 0; j < nenv && !replaced; j++) {
			size_t l = strcspn(env[j], "=");

			replaced = strncmp(environ[i], env[j], l) == 0 && environ[i][l] == '=';
		}
		if (!replaced && !service_var(environ[i]))
			v[k++] = environ[i];
	}
	for (size_t j = 0; j < nenv; j++)
		v[k++] = (char *)(uintptr_t)env[j]; /* posix_spawn's type; never written */
	return v;
}

/* Start /bin/sh -c cmd in a process group of its own, its output into *out_fd. */
static int spawn(const char *cmd, char **envp, pid_t *pid, int *out_fd, char *err, size_t err_len)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, dfl;
	int p[2], e;
	char sh[] = "sh", c[] = "-c";
	char *argv[] = {sh, c, (char *)(uintptr_t)cmd, NULL};

	if (pipe2(p, O_CLOEXEC) != 0) {
		snprintf(err, err_len, "cannot run the --exec command: pipe: %s", strerror(errno));
		return -1;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&at);
	sigemptyset(&none);
	sigemptyset(&dfl);
	sigaddset(&dfl, SIGHUP);
	sigaddset(&dfl, SIGINT);
	sigaddset(&dfl, SIGTERM);
	sigaddset(&dfl, SIGPIPE);
	sigaddset(&dfl, SIGCHLD);
	sigaddset(&dfl, SIGQUIT);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	posix_spawn_file_actions_adddup2(&fa, p[1], 2);
	posix_spawnattr_setpgroup(&at, 0);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &dfl);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
					      POSIX_SPAWN_SETSIGDEF);
	e = posix_spawn(pid, "/bin/sh", &fa, &at, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	close(p[1]);
	if (e != 0) {
		close(p[0]);
		snprintf(err, err_len, "cannot run the --exec command: /bin/sh: %s", strerror(e));
		return -1;
	}
	*out_fd = p[0];
	return 0;
}

/* End the command's process group: SIGTERM, then SIGKILL after the grace, and reap it. */
static void kill_group(pid_t pid, int pidfd, int *status)
{
	long long deadline = now_ms() + AGENT_HOOK_KILL_GRACE_MS;

	kill(-pid, SIGTERM);
	for (;;) {
		long long left = deadline - now_ms();

		if (waitpid(pid, status, WNOHANG) == pid)
			break;
		if (left <= 0) {
			kill(-pid, SIGKILL);
			while (waitpid(pid, status, 0) < 0 && errno == EINTR)
				;
			break;
		}
		if (pidfd >= 0) {
			struct pollfd pf = {pidfd, POLLIN, 0};

			poll(&pf, 1, (int)left);
		} else {
			poll(NULL, 0, left < 50 ? (int)left : 50);
		}
	}
	/* what the shell left behind in its group goes too */
	kill(-pid, SIGKILL);
}

static int run_exec(const struct agent_hook *h, const char *const *env, size_t nenv, int stop_fd,
		    agent_hook_stop_fn stop, void *arg, struct agent_hook_result *res, char *err,
		    size_t err_len)
{
	char **envp = build_env(env, nenv);
	long long start = now_ms(), deadline = start + h->timeout_ms;
	/* systemd's watchdog (WatchdogSec=) is fed while the command runs: the wait is bounded
	 * by its timeout, which may be longer than WatchdogSec= (0: off) */
	long long wd_ms = (long long)(service_notify_watchdog_every() * 1000), wd_at = start;
	size_t outlen = 0;
	pid_t pid;
	int out = -1, pidfd = -1, status = 0;
	bool exited = false;

	if (envp == NULL) {
		snprintf(err, err_len, "cannot run the --exec command: out of memory");
		return -1;
	}
	if (spawn(h->exec, envp, &pid, &out, err, err_len) != 0) {
		free(envp);
		return -1;
	}
	free(envp);
	res->ran = true;
	pidfd = pidfd_open(pid, 0);
	while (!exited) {
		struct pollfd pf[3];
		nfds_t n = 0;
		int ip = -1, iw = -1, is = -1;
		long long left = deadline - now_ms();
		int wait_ms;

		if (left <= 0) {
			res->timed_out = true;
			kill_group(pid, pidfd, &status);
			exited = true;
			break;
		}
		wait_ms = left > INT_MAX ? INT_MAX : (int)left;
		if (wd_ms > 0) {
			long long now = now_ms();

			if (now >= wd_at + wd_ms) {
				service_notify_watchdog();
				wd_at = now;
			}
			if (wd_at + wd_ms - now < wait_ms)
				wait_ms = (int)(wd_at + wd_ms - now);
		}
		if (out >= 0) {
			pf[n] = (struct pollfd){out, POLLIN, 0};
			ip = (int)n++;
		}
		if (pidfd >= 0) {
			pf[n] = (struct pollfd){pidfd, POLLIN, 0};
			iw = (int)n++;
		} else if (wait_ms > 50) {
			wait_ms = 50; /* no pidfd: look at the child now and then */
		}
		if (stop_fd >= 0) {
			pf[n] = (struct pollfd){stop_fd, POLLIN, 0};
			is = (int)n++;
		}
		if (poll(pf, n, wait_ms) < 0 && errno != EINTR)
			poll(NULL, 0, 10);
		if (ip >= 0 && (pf[ip].revents & (POLLIN | POLLHUP | POLLERR))) {
			char buf[4096];
			ssize_t r = read(out, buf, sizeof(buf));

			if (r > 0) {
				keep_output(res, &outlen, buf, (size_t)r);
			} else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
				close(out);
				out = -1;
			}
		}
		if (is >= 0 && (pf[is].revents & POLLIN) && stop != NULL && stop(arg)) {
			res->stopped = true;
			kill_group(pid, pidfd, &status);
			exited = true;
			break;
		}
		if ((iw < 0 || (pf[iw].revents & POLLIN)) && waitpid(pid, &status, WNOHANG) == pid)
			exited = true;
	}
	/* what the command wrote before it ended; a child it left behind holding the pipe is
	 * not waited for */
	if (out >= 0) {
		char buf[4096];
		ssize_t r;

		fcntl(out, F_SETFL, O_NONBLOCK);
		while ((r = read(out, buf, sizeof(buf))) > 0)
			keep_output(res, &outlen, buf, (size_t)r);
		close(out);
	}
	if (pidfd >= 0)
		close(pidfd);
	res->ms = now_ms() - start;
	if (WIFEXITED(status))
		res->exit_status = WEXITSTATUS(status);
	else if (WIFSIGNALED(status))
		res->term_signal = WTERMSIG(status);
	if (res->timed_out) {
		snprintf(err, err_len,
			 "the --exec command did not finish within its timeout (%lld ms) and was "
			 "killed; make it faster or raise --exec-timeout",
			 h->timeout_ms);
		return -1;
	}
	if (res->stopped) {
		snprintf(err, err_len, "the --exec command was ended because the agent stops");
		return -1;
	}
	if (res->term_signal != 0) {
		snprintf(err, err_len, "the --exec command was killed by signal %d (%s)",
			 res->term_signal, agent_hook_signal_name(res->term_signal));
		return -1;
	}
	if (res->exit_status != 0) {
		snprintf(err, err_len,
			 "the --exec command exited with status %d; its output is in the log line",
			 res->exit_status);
		return -1;
	}
	return 0;
}

/* The real uid of process pid (/proc/PID/status), or -1. */
static long long process_uid(pid_t pid)
{
	char p[64], line[256];
	long long uid = -1;
	FILE *f;

	snprintf(p, sizeof(p), "/proc/%ld/status", (long)pid);
	if ((f = fopen(p, "re")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (strncmp(line, "Uid:", 4) == 0) {
			uid = strtoll(line + 4, NULL, 10);
			break;
		}
	fclose(f);
	return uid;
}

/* A pid file names a process of its owner (or any, if root owns it): the agent may run as
 * root while the service's user writes its pid file (PostgreSQL's postmaster.pid), and that
 * user must not be able to make the agent signal someone else's process (systemd's PIDFile=
 * rule). 0, or -1 with the message. */
static int pid_file_owns(const char *pid_file, pid_t pid, char *err, size_t err_len)
{
	struct stat st;
	long long uid;

	if (stat(pid_file, &st) != 0) {
		snprintf(err, err_len, "cannot read the pid file %s: %s", pid_file,
			 strerror(errno));
		return -1;
	}
	if (st.st_uid == 0)
		return 0;
	uid = process_uid(pid);
	if (uid >= 0 && uid != (long long)st.st_uid) {
		snprintf(err, err_len,
			 "refusing to signal process %ld: it runs as uid %lld, but the pid file %s "
			 "belongs to uid %ld (a pid file may name only a process of its owner)",
			 (long)pid, uid, pid_file, (long)st.st_uid);
		return -1;
	}
	return 0;
}

static int send_signal(const struct agent_hook *h, struct agent_hook_result *res, char *err,
		       size_t err_len)
{
	pid_t pid = h->pid;
	char from[PATH_MAX + 16] = "";

	if (h->pid_file != NULL) {
		if (agent_hook_read_pid(h->pid_file, &pid, err, err_len) != 0 ||
		    (pid > 1 && pid_file_owns(h->pid_file, pid, err, err_len) != 0))
			return -1;
		snprintf(from, sizeof(from), " (from %s)", h->pid_file);
	}
	if (pid <= 1 || pid == getpid()) {
		snprintf(err, err_len, "refusing to signal process %ld%s", (long)pid, from);
		return -1;
	}
	if (kill(pid, h->sig) != 0) {
		int e = errno;

		if (e == ESRCH)
			snprintf(err, err_len,
				 "cannot send SIG%s to process %ld%s: no such process; "
				 "is the service running?",
				 agent_hook_signal_name(h->sig), (long)pid, from);
		else if (e == EPERM)
			snprintf(err, err_len,
				 "cannot send SIG%s to process %ld%s: not permitted; run the agent "
				 "as the service's user or as root",
				 agent_hook_signal_name(h->sig), (long)pid, from);
		else
			snprintf(err, err_len, "cannot send SIG%s to process %ld%s: %s",
				 agent_hook_signal_name(h->sig), (long)pid, from, strerror(e));
		return -1;
	}
	res->signalled = pid;
	return 0;
}

int agent_hook_run(const struct agent_hook *h, const char *const *env, size_t nenv, int stop_fd,
		   agent_hook_stop_fn stop, void *arg, struct agent_hook_result *res, char *err,
		   size_t err_len)
{
	int rc = 0;

	memset(res, 0, sizeof(*res));
	res->exit_status = -1;
	if (nenv > AGENT_HOOK_MAX_ENV) {
		snprintf(err, err_len, "internal error: too many hook variables");
		return -1;
	}
	if (h->exec != NULL && run_exec(h, env, nenv, stop_fd, stop, arg, res, err, err_len) != 0)
		rc = -1;
	/* the signal is what makes the service load the files: sent even if the command
	 * failed (not when the agent stops) */
	if ((h->pid > 0 || h->pid_file != NULL) && !res->stopped) {
		char why[1024];

		if (send_signal(h, res, why, sizeof(why)) != 0) {
			if (rc == 0)
				snprintf(err, err_len, "%s", why);
			else {
				size_t l = strlen(err);

				snprintf(err + l, err_len - l, "; %s", why);
			}
			rc = -1;
		}
	}
	return rc;
}
