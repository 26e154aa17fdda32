/*
 * mtls agent's hook (cli/agent_hook.c) and copies (cli/agent_out.c): the command's exit
 * status, environment, output, timeout (its whole process group killed, a command ignoring
 * SIGTERM too), a stop while it runs; signals by pid and pid file; copies written with
 * their mode and owner, left alone when already right, and symlinks replaced, never
 * followed.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent_hook.h"
#include "agent_out.h"

static char dir[PATH_MAX];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "%s/mtls-agent-hook.XXXXXX",
		 getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
	if (mkdtemp(dir) == NULL)
		return -1;
	/* orphans of the commands (a background sleep) become our children, so that the
	 * tests can see how they ended */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	return 0;
}

static int teardown(void **state)
{
	char cmd[PATH_MAX + 16];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static const char *path(const char *name)
{
	static char buf[4][PATH_MAX + 64];
	static int i;

	i = (i + 1) % 4;
	if (snprintf(buf[i], sizeof(buf[i]), "%s/%s", dir, name) >= (int)sizeof(buf[i]))
		abort();
	return buf[i];
}

static char *slurp(const char *p)
{
	static char buf[8192];
	FILE *f = fopen(p, "r");
	size_t n;

	if (f == NULL)
		return NULL;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return buf;
}

static void put(const char *p, const char *text)
{
	FILE *f = fopen(p, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* Wait (bounded, 10 s) for child pid to end; its status, or -1 if it is still running. */
static int reap(pid_t pid)
{
	int st;

	for (int i = 0; i < 1000; i++) {
		if (waitpid(pid, &st, WNOHANG) == pid)
			return st;
		usleep(10000);
	}
	return -1;
}

static void test_signal_names(void **state)
{
	int sig = 0;

	(void)state;
	assert_int_equal(agent_hook_signal_parse("HUP", &sig), 0);
	assert_int_equal(sig, SIGHUP);
	assert_int_equal(agent_hook_signal_parse("SIGUSR1", &sig), 0);
	assert_int_equal(sig, SIGUSR1);
	assert_int_equal(agent_hook_signal_parse("term", &sig), 0);
	assert_int_equal(sig, SIGTERM);
	assert_int_equal(agent_hook_signal_parse("10", &sig), 0);
	assert_int_equal(sig, 10);
	assert_int_equal(agent_hook_signal_parse("0", &sig), -1);
	assert_int_equal(agent_hook_signal_parse("-1", &sig), -1);
	assert_int_equal(agent_hook_signal_parse("HUPX", &sig), -1);
	assert_int_equal(agent_hook_signal_parse("", &sig), -1);
	assert_int_equal(agent_hook_signal_parse("999", &sig), -1);
	assert_string_equal(agent_hook_signal_name(SIGHUP), "HUP");
}

static void test_pid_file(void **state)
{
	static const struct {
		const char *text;
		long pid; /* 0: refused */
	} cases[] = {
		{"1234\n", 1234},
		{"4321\n/var/lib/postgresql/15/main\n1700000000\n5432\n",
		 4321}, /* postmaster.pid */
		{"77", 77},
		{"", 0},
		{"\n12\n", 0},
		{"abc\n", 0},
		{"1\n", 0},
		{"0\n", 0},
		{"-5\n", 0},
		{"12 \n", 0},
		{"99999999999999999999\n", 0},
	};
	char err[1024];
	pid_t pid;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		put(path("pid"), cases[i].text);
		pid = 0;
		if (cases[i].pid == 0) {
			assert_int_equal(agent_hook_read_pid(path("pid"), &pid, err, sizeof(err)),
					 -1);
			assert_non_null(strstr(err, "does not start with a process id"));
		} else {
			assert_int_equal(agent_hook_read_pid(path("pid"), &pid, err, sizeof(err)),
					 0);
			assert_int_equal(pid, cases[i].pid);
		}
	}
	assert_int_equal(agent_hook_read_pid(path("nothing"), &pid, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "cannot read the pid file"));
}

static int run(const char *cmd, long long timeout_ms, struct agent_hook_result *res, char *err,
	       size_t err_len)
{
	struct agent_hook h = {.exec = cmd, .timeout_ms = timeout_ms, .sig = SIGHUP};
	const char *env[] = {"MTLS_SERIAL=ABCD", "MTLS_CERT=/x/cert.pem", "HOME=/agent-home"};

	return agent_hook_run(&h, env, 3, -1, NULL, NULL, res, err, err_len);
}

static void test_exec_ok(void **state)
{
	struct agent_hook_result res;
	char err[1024], cmd[PATH_MAX + 128];

	(void)state;
	setenv("MTLS_SERIAL", "OLD", 1); /* replaced, not doubled */
	snprintf(cmd, sizeof(cmd),
		 "echo \"$MTLS_SERIAL $MTLS_CERT $HOME $(env | grep -c ^MTLS_SERIAL=)\" > '%s'; "
		 "echo hello; echo oops >&2; read x || echo no-stdin",
		 path("marker"));
	assert_int_equal(run(cmd, 10000, &res, err, sizeof(err)), 0);
	assert_true(res.ran);
	assert_int_equal(res.exit_status, 0);
	assert_false(res.timed_out);
	assert_string_equal(slurp(path("marker")), "ABCD /x/cert.pem /agent-home 1\n");
	assert_string_equal(res.output, "hello\noops\nno-stdin\n");
	unsetenv("MTLS_SERIAL");
}

/* What systemd gave the agent (NOTIFY_SOCKET, WATCHDOG_*, LISTEN_*) is the agent's: the
 * command gets none of it (it could say READY=1 or STOPPING=1 for the agent's service). */
static void test_exec_no_service_env(void **state)
{
	static const char *const vars[] = {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
					   "LISTEN_FDS",    "LISTEN_PID",    "LISTEN_FDNAMES"};
	struct agent_hook_result res;
	char err[1024], cmd[PATH_MAX + 128];

	(void)state;
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		setenv(vars[i], "1", 1);
	setenv("NOTIFY_SOCKETX", "kept", 1); /* only the exact names go */
	snprintf(cmd, sizeof(cmd),
		 "env | grep -E '^(NOTIFY_SOCKET|WATCHDOG_|LISTEN_)' | sort > '%s'", path("env"));
	assert_int_equal(run(cmd, 10000, &res, err, sizeof(err)), 0);
	assert_string_equal(slurp(path("env")), "NOTIFY_SOCKETX=kept\n");
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		unsetenv(vars[i]);
	unsetenv("NOTIFY_SOCKETX");
}

/* Under systemd's watchdog (WATCHDOG_USEC for this process) WATCHDOG=1 goes on while the
 * command runs: --exec-timeout may be longer than WatchdogSec=, and a command within it must
 * not get the agent killed as hung. */
static void test_exec_feeds_watchdog(void **state)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct agent_hook_result res;
	char err[1024], pid[32], msg[256];
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), fed = 0;
	ssize_t n;

	(void)state;
	assert_true(fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path("notify"));
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	snprintf(pid, sizeof(pid), "%ld", (long)getpid());
	setenv("NOTIFY_SOCKET", sa.sun_path, 1);
	setenv("WATCHDOG_USEC", "200000", 1); /* WATCHDOG=1 every 100 ms */
	setenv("WATCHDOG_PID", pid, 1);
	assert_int_equal(run("sleep 1", 10000, &res, err, sizeof(err)), 0);
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	while ((n = recv(fd, msg, sizeof(msg) - 1, 0)) > 0) {
		msg[n] = '\0';
		fed += strcmp(msg, "WATCHDOG=1") == 0;
	}
	close(fd);
	unlink(sa.sun_path);
	if (fed == 0)
		fail_msg("no WATCHDOG=1 while the command ran for a second");
}

static void test_exec_fails(void **state)
{
	struct agent_hook_result res;
	char err[1024];

	(void)state;
	assert_int_equal(run("echo bad things; exit 3", 10000, &res, err, sizeof(err)), -1);
	assert_int_equal(res.exit_status, 3);
	assert_non_null(strstr(err, "exited with status 3"));
	assert_string_equal(res.output, "bad things\n");

	assert_int_equal(run("kill -USR2 $$", 10000, &res, err, sizeof(err)), -1);
	assert_int_equal(res.term_signal, SIGUSR2);
	assert_non_null(strstr(err, "killed by signal"));
}

/* The output kept is the end of it, at most AGENT_HOOK_OUTPUT_MAX bytes. */
static void test_exec_output_tail(void **state)
{
	struct agent_hook_result res;
	char err[1024];

	(void)state;
	assert_int_equal(run("i=0; while [ $i -lt 500 ]; do printf 'line%03d.\\n' $i; "
			     "i=$((i+1)); done",
			     10000, &res, err, sizeof(err)),
			 0);
	assert_int_equal(strlen(res.output), AGENT_HOOK_OUTPUT_MAX);
	assert_non_null(strstr(res.output, "line499.\n"));
	assert_null(strstr(res.output, "line000."));
}

/* Past the timeout the whole process group goes: the shell and what it started. */
static void test_exec_timeout(void **state)
{
	struct agent_hook_result res;
	char err[1024], cmd[PATH_MAX + 128];
	long bg;
	int st;

	(void)state;
	snprintf(cmd, sizeof(cmd), "sleep 60 & echo $! > '%s'; wait", path("bg"));
	assert_int_equal(run(cmd, 300, &res, err, sizeof(err)), -1);
	assert_true(res.timed_out);
	assert_non_null(strstr(err, "did not finish within its timeout"));
	assert_non_null(strstr(err, "--exec-timeout"));
	bg = atol(slurp(path("bg")));
	assert_true(bg > 1);
	st = reap((pid_t)bg);
	assert_int_not_equal(st, -1); /* the background sleep was killed too */
	assert_true(WIFSIGNALED(st));

	/* a command that ignores SIGTERM gets SIGKILL after the grace */
	assert_int_equal(
		run("trap '' TERM; while :; do sleep 1; done", 300, &res, err, sizeof(err)), -1);
	assert_true(res.timed_out);
	assert_int_equal(res.term_signal, SIGKILL);
}

static bool stop_yes(void *arg)
{
	int *calls = arg;
	char b[16];

	(*calls)++;
	(void)!read(STDIN_FILENO, b, 0);
	return true;
}

static bool stop_no(void *arg)
{
	int *fds = arg;
	char b[16];

	(void)!read(fds[0], b, sizeof(b)); /* consumed: a SIGHUP, say */
	fds[2]++;
	return false;
}

/* A stop of the agent ends the command; a wakeup that is not a stop does not. */
static void test_exec_stop(void **state)
{
	struct agent_hook h = {.exec = "sleep 60", .timeout_ms = 60000, .sig = SIGHUP};
	struct agent_hook_result res;
	char err[1024];
	int p[3], calls = 0;

	(void)state;
	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], "x", 1), 1);
	assert_int_equal(
		agent_hook_run(&h, NULL, 0, p[0], stop_yes, &calls, &res, err, sizeof(err)), -1);
	assert_true(res.stopped);
	assert_false(res.timed_out);
	assert_int_equal(calls, 1);
	assert_non_null(strstr(err, "agent stops"));

	h.exec = "sleep 0.3; echo done";
	p[2] = 0;
	assert_int_equal(agent_hook_run(&h, NULL, 0, p[0], stop_no, p, &res, err, sizeof(err)), 0);
	assert_false(res.stopped);
	assert_int_equal(p[2], 1);
	assert_string_equal(res.output, "done\n");
	close(p[0]);
	close(p[1]);
}

/* A child that waits to be signalled; how it ended. */
static pid_t waiter(void)
{
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		signal(SIGUSR1, SIG_DFL);
		for (;;)
			pause();
	}
	return pid;
}

static void test_signal(void **state)
{
	struct agent_hook h = {.timeout_ms = 1000, .sig = SIGUSR1};
	struct agent_hook_result res;
	char err[1024], text[32];
	pid_t pid = waiter();
	int st;

	(void)state;
	h.pid = pid;
	assert_int_equal(agent_hook_run(&h, NULL, 0, -1, NULL, NULL, &res, err, sizeof(err)), 0);
	assert_int_equal(res.signalled, pid);
	st = reap(pid);
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGUSR1);

	/* by pid file, read at the time */
	pid = waiter();
	snprintf(text, sizeof(text), "%ld\n/data\n", (long)pid);
	put(path("service.pid"), text);
	h.pid = 0;
	h.pid_file = path("service.pid");
	assert_int_equal(agent_hook_run(&h, NULL, 0, -1, NULL, NULL, &res, err, sizeof(err)), 0);
	st = reap(pid);
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGUSR1);

	/* the process is gone (reaped): said so */
	assert_int_equal(agent_hook_run(&h, NULL, 0, -1, NULL, NULL, &res, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "no such process"));
	assert_non_null(strstr(err, "service.pid"));

	/* a pid file of another user naming a process not theirs: refused (as root, where it
	 * matters: the service's user must not steer the agent's signals) */
	if (geteuid() == 0) {
		pid = waiter();
		snprintf(text, sizeof(text), "%ld\n", (long)pid);
		put(path("other.pid"), text);
		assert_int_equal(chown(path("other.pid"), 65534, 65534), 0);
		h.pid_file = path("other.pid");
		assert_int_equal(
			agent_hook_run(&h, NULL, 0, -1, NULL, NULL, &res, err, sizeof(err)), -1);
		if (strstr(err, "only a process of its owner") == NULL)
			fail_msg("not refused for its owner: %s", err);
		kill(pid, SIGKILL);
		reap(pid);
	}

	/* ourselves: refused */
	h.pid_file = NULL;
	h.pid = getpid();
	assert_int_equal(agent_hook_run(&h, NULL, 0, -1, NULL, NULL, &res, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "refusing"));
}

/* The signal is what makes the service load the files: sent when the command failed too. */
static void test_signal_after_failed_exec(void **state)
{
	struct agent_hook h = {.exec = "exit 1", .timeout_ms = 10000, .sig = SIGUSR1};
	struct agent_hook_result res;
	char err[1024];
	pid_t pid = waiter();
	int st;

	(void)state;
	h.pid = pid;
	assert_int_equal(agent_hook_run(&h, NULL, 0, -1, NULL, NULL, &res, err, sizeof(err)), -1);
	assert_int_equal(res.exit_status, 1);
	assert_int_equal(res.signalled, pid);
	st = reap(pid);
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGUSR1);
}

static void test_owner(void **state)
{
	uid_t uid;
	gid_t gid;
	char err[1024];

	(void)state;
	assert_int_equal(agent_out_owner_parse("root", &uid, &gid, err, sizeof(err)), 0);
	assert_int_equal(uid, 0);
	assert_int_equal(gid, 0);
	assert_int_equal(agent_out_owner_parse(":root", &uid, &gid, err, sizeof(err)), 0);
	assert_int_equal(uid, (uid_t)-1);
	assert_int_equal(gid, 0);
	assert_int_equal(agent_out_owner_parse("1234:5678", &uid, &gid, err, sizeof(err)), 0);
	assert_int_equal(uid, 1234);
	assert_int_equal(gid, 5678);
	assert_int_equal(agent_out_owner_parse("no-such-user-here", &uid, &gid, err, sizeof(err)),
			 -1);
	assert_non_null(strstr(err, "no user"));
	assert_int_equal(agent_out_owner_parse("root:no-such-group", &uid, &gid, err, sizeof(err)),
			 -1);
	assert_non_null(strstr(err, "no group"));
	assert_int_equal(agent_out_owner_parse("", &uid, &gid, err, sizeof(err)), -1);
	assert_int_equal(agent_out_owner_parse(":", &uid, &gid, err, sizeof(err)), -1);
}

static void test_out_check(void **state)
{
	char err[1024];
	struct agent_out o = {NULL, 0600, "--key-out"};

	(void)state;
	o.path = path("nodir/server.key");
	assert_int_equal(agent_out_check(&o, (uid_t)-1, (gid_t)-1, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "does not exist"));
	assert_int_equal(mkdir(path("open"), 0700), 0);
	assert_int_equal(chmod(path("open"), 0777), 0);
	o.path = path("open/server.key");
	assert_int_equal(agent_out_check(&o, (uid_t)-1, (gid_t)-1, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "writable by group or others"));
	assert_int_equal(mkdir(path("priv"), 0700), 0);
	o.path = path("priv");
	assert_int_equal(agent_out_check(&o, (uid_t)-1, (gid_t)-1, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "is a directory"));
	o.path = path("priv/server.key");
	assert_int_equal(agent_out_check(&o, (uid_t)-1, (gid_t)-1, err, sizeof(err)), 0);
}

static void test_out_write(void **state)
{
	struct agent_out o = {NULL, 0600, "--key-out"};
	struct stat sb;
	char err[1024];
	bool changed;

	(void)state;
	mkdir(path("w"), 0700);
	o.path = path("w/server.key");
	assert_int_equal(
		agent_out_write(&o, "KEY1", 4, (uid_t)-1, (gid_t)-1, &changed, err, sizeof(err)),
		0);
	assert_true(changed);
	assert_int_equal(stat(o.path, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0600);
	assert_string_equal(slurp(o.path), "KEY1");
	/* the same again: nothing written */
	assert_int_equal(
		agent_out_write(&o, "KEY1", 4, (uid_t)-1, (gid_t)-1, &changed, err, sizeof(err)),
		0);
	assert_false(changed);
	/* the right bytes with a wrong mode: written again */
	assert_int_equal(chmod(o.path, 0644), 0);
	assert_int_equal(
		agent_out_write(&o, "KEY1", 4, (uid_t)-1, (gid_t)-1, &changed, err, sizeof(err)),
		0);
	assert_true(changed);
	assert_int_equal(stat(o.path, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0600);

	/* a symlink in the target's place is replaced, and what it pointed to left alone */
	put(path("w/elsewhere"), "precious");
	assert_int_equal(unlink(o.path), 0);
	assert_int_equal(symlink(path("w/elsewhere"), o.path), 0);
	assert_int_equal(
		agent_out_write(&o, "KEY2", 4, (uid_t)-1, (gid_t)-1, &changed, err, sizeof(err)),
		0);
	assert_true(changed);
	assert_int_equal(lstat(o.path, &sb), 0);
	assert_true(S_ISREG(sb.st_mode));
	assert_string_equal(slurp(o.path), "KEY2");
	assert_string_equal(slurp(path("w/elsewhere")), "precious");

	/* the owner, set as root */
	if (geteuid() == 0) {
		assert_int_equal(
			agent_out_write(&o, "KEY2", 4, 65534, 65534, &changed, err, sizeof(err)),
			0);
		assert_true(changed);
		assert_int_equal(stat(o.path, &sb), 0);
		assert_int_equal(sb.st_uid, 65534);
		assert_int_equal(sb.st_gid, 65534);
		assert_int_equal(sb.st_mode & 07777, 0600);
		assert_int_equal(
			agent_out_write(&o, "KEY2", 4, 65534, 65534, &changed, err, sizeof(err)),
			0);
		assert_false(changed);
	}
}

/* Is process pid waiting for an flock on the inode ino (/proc/locks: "N: -> FLOCK ...")? */
static bool waits_for_lock(pid_t pid, ino_t ino)
{
	char line[256], want[64];
	FILE *f = fopen("/proc/locks", "r");
	bool found = false;

	if (f == NULL)
		return false;
	snprintf(want, sizeof(want), " %ld ", (long)pid);
	while (!found && fgets(line, sizeof(line), f) != NULL) {
		char tail[32];
		const char *c = strrchr(line, ':');

		snprintf(tail, sizeof(tail), ":%lu ", (unsigned long)ino);
		found = strstr(line, "-> FLOCK") != NULL && strstr(line, want) != NULL &&
			c != NULL && strncmp(c, tail, strlen(tail)) == 0;
	}
	fclose(f);
	return found;
}

/* The copies in two directories (--cert-out in one, --key-out in another): another writer
 * holds the second one's lock, in the middle of a change of its own there (its journal
 * written, its file not renamed yet). The agent waits for that lock before it touches the
 * directory (recovery finishes the journals of every directory of the copies): it never
 * finishes or removes a change under way under someone else's lock. */
static void test_out_write_set_locks_every_dir(void **state)
{
	struct agent_out o[2] = {{NULL, 0644, "--cert-out"}, {NULL, 0600, "--key-out"}};
	const void *data[2] = {"CERT", "KEY"};
	const size_t len[2] = {4, 3};
	char err[1024], jp[PATH_MAX + 64], text[PATH_MAX + 128], other[PATH_MAX + 64],
		staged[PATH_MAX + 128], cp[PATH_MAX + 64], kp[PATH_MAX + 64], edir[PATH_MAX + 64];
	int ready[2], done[2], status = -1, lk;
	bool changed[2];
	struct stat sb;
	pid_t child, me = getpid();

	(void)state;
	mkdir(path("d"), 0700);
	mkdir(path("e"), 0700);
	snprintf(cp, sizeof(cp), "%s", path("d/server.crt"));
	snprintf(kp, sizeof(kp), "%s", path("e/server.key"));
	snprintf(edir, sizeof(edir), "%s", path("e"));
	o[0].path = cp;
	o[1].path = kp;
	snprintf(other, sizeof(other), "%s", path("e/other.pem"));
	assert_true(snprintf(staged, sizeof(staged), "%s.new-0123456789ab", other) <
		    (int)sizeof(staged));
	snprintf(jp, sizeof(jp), "%s", path("e/.mtls-fileset"));
	assert_int_equal(stat(edir, &sb), 0);
	assert_int_equal(pipe(ready), 0);
	assert_int_equal(pipe(done), 0);
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		/* the other writer: e's lock, its change half made */
		int fd = open(edir, O_RDONLY | O_DIRECTORY), bad = 0;
		char c = 0;

		close(done[1]); /* the parent's end alone: its exit ends the wait below */
		close(ready[0]);
		if (fd < 0 || flock(fd, LOCK_EX) != 0)
			_exit(10);
		put(other, "OLD");
		put(staged, "NEW");
		snprintf(text, sizeof(text), "mtls fileset 1\n0123456789ab - %s\n", other);
		put(jp, text);
		if (write(ready[1], "r", 1) != 1)
			_exit(11);
		/* until the agent waits for e's lock (then it must not have touched e), or
		 * returns without having waited */
		for (;;) {
			struct pollfd pf = {done[0], POLLIN, 0};

			if (waits_for_lock(me, sb.st_ino))
				break;
			if (poll(&pf, 1, 10) == 1) {
				bad |= 1; /* done without waiting */
				break;
			}
		}
		if (strcmp(slurp(other), "OLD") != 0 || access(jp, F_OK) != 0 ||
		    access(staged, F_OK) != 0)
			bad |= 2; /* the change under way was finished by the agent */
		/* the other writer finishes its change and lets go */
		if (rename(staged, other) != 0 || unlink(jp) != 0)
			bad |= 4;
		close(fd);
		while (!(bad & 1) && read(done[0], &c, 1) < 0 && errno == EINTR)
			;
		_exit(bad);
	}
	close(done[0]);
	close(ready[1]);
	assert_int_equal(read(ready[0], &lk, 1), 1);
	assert_int_equal(agent_out_write_set(o, data, len, 2, (uid_t)-1, (gid_t)-1, changed, err,
					     sizeof(err)),
			 0);
	assert_int_equal(write(done[1], "d", 1), 1);
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) != 0)
		fail_msg("the other writer says %d (1: the agent did not wait for e's lock; 2: it "
			 "finished the change under way there)",
			 WEXITSTATUS(status));
	assert_string_equal(slurp(o[0].path), "CERT");
	assert_string_equal(slurp(o[1].path), "KEY");
	assert_string_equal(slurp(other), "NEW");
	close(ready[0]);
	close(done[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_signal_names),
		cmocka_unit_test(test_pid_file),
		cmocka_unit_test(test_exec_ok),
		cmocka_unit_test(test_exec_no_service_env),
		cmocka_unit_test(test_exec_feeds_watchdog),
		cmocka_unit_test(test_exec_fails),
		cmocka_unit_test(test_exec_output_tail),
		cmocka_unit_test(test_exec_timeout),
		cmocka_unit_test(test_exec_stop),
		cmocka_unit_test(test_signal),
		cmocka_unit_test(test_signal_after_failed_exec),
		cmocka_unit_test(test_owner),
		cmocka_unit_test(test_out_check),
		cmocka_unit_test(test_out_write),
		cmocka_unit_test(test_out_write_set_locks_every_dir),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
