/*
 * The daemons' sandbox (common/sandbox.c), each case in a child process (Landlock and seccomp
 * cannot be undone): a read-only directory reads but takes no write; a read-write directory
 * takes the atomic writes of a renewal (create, rename, truncate, remove, mkdir); a file
 * outside is refused; a file renamed into a read-only directory from outside (a rotation)
 * is read; a directory link swapped to the next release is followed; calls outside the
 * allowlist fail with EPERM, a socket of another family and a clone into new namespaces
 * too; a call of the kill list ends the process by SIGSYS; off applies nothing.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "sandbox.h"

static char dir[PATH_MAX];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "%s/mtls-sandbox.XXXXXX",
		 getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
	return mkdtemp(dir) != NULL ? 0 : -1;
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
	static char buf[8][PATH_MAX + 64];
	static int i;

	i = (i + 1) % 8;
	snprintf(buf[i], sizeof(buf[i]), "%s/%s", dir, name);
	return buf[i];
}

static void put(const char *p, const char *text)
{
	FILE *f = fopen(p, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* errno of opening p with flags (0: it opened) */
static int open_errno(const char *p, int flags)
{
	int fd = open(p, flags | O_CLOEXEC, 0600);

	if (fd < 0)
		return errno;
	close(fd);
	return 0;
}

static bool landlock_here(void)
{
	return syscall(SYS_landlock_create_ruleset, NULL, 0, 1 /* VERSION */) >= 1;
}

/* The child's checks report by exit status: 0 all good, else the number of the check that
 * failed. */
#define CHECK(n, cond)                                                                             \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "check %d failed: %s (errno %d)\n", n, #cond, errno);      \
			_exit(n);                                                                  \
		}                                                                                  \
	} while (0)

static int child_status(pid_t pid)
{
	int st;

	assert_int_equal(waitpid(pid, &st, 0), pid);
	return st;
}

/* The directory layout: ro/ (read-only), rw/ (read-write), out/ (neither), rel/current ->
 * releases/1 (read-only through the link). */
static void layout(void)
{
	mkdir(path("ro"), 0700);
	mkdir(path("rw"), 0700);
	mkdir(path("out"), 0700);
	mkdir(path("rel"), 0700);
	mkdir(path("rel/releases"), 0700);
	mkdir(path("rel/releases/1"), 0700);
	mkdir(path("rel/releases/2"), 0700);
	put(path("ro/cert.pem"), "one");
	put(path("rw/cert.pem"), "one");
	put(path("out/secret"), "no");
	put(path("rel/releases/1/chain.pem"), "r1");
	put(path("rel/releases/2/chain.pem"), "r2");
	unlink(path("rel/current"));
	assert_int_equal(symlink("releases/1", path("rel/current")), 0);
}

static struct sandbox *made(bool off)
{
	struct sandbox *sb = sandbox_new(SANDBOX_TUNNEL, off);

	assert_non_null(sb);
	assert_int_equal(sandbox_read_dir_of(sb, path("ro/cert.pem")), 0);
	assert_int_equal(sandbox_write_dir_of(sb, path("rw/cert.pem")), 0);
	assert_int_equal(sandbox_read_dir_of(sb, path("rel/current/chain.pem")), 0);
	return sb;
}

static void test_landlock_files(void **state)
{
	struct sandbox *sb;
	pid_t pid;
	int go[2], ready[2];
	char c;

	(void)state;
	if (!landlock_here()) {
		skip();
		return;
	}
	layout();
	sb = made(false);
	assert_int_equal(pipe(go), 0);
	assert_int_equal(pipe(ready), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char err[300];
		const char *what;
		int fd;

		close(go[1]);
		close(ready[0]);
		CHECK(1, sandbox_landlock(sb, err, sizeof(err)) == 0);
		CHECK(2, sandbox_landlock_abi(sb, &what) >= 1);
		/* read-only */
		CHECK(3, open_errno(path("ro/cert.pem"), O_RDONLY) == 0);
		CHECK(4, open_errno(path("ro/cert.pem"), O_WRONLY) == EACCES);
		CHECK(5, open_errno(path("ro/new"), O_WRONLY | O_CREAT) == EACCES);
		/* outside */
		CHECK(6, open_errno(path("out/secret"), O_RDONLY) == EACCES);
		CHECK(7, open_errno(dir, O_RDONLY | O_DIRECTORY) == EACCES);
		/* read-write: a renewal's atomic replace */
		fd = open(path("rw/.cert.tmp"), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		CHECK(8, fd >= 0 && write(fd, "two", 3) == 3 && fsync(fd) == 0);
		close(fd);
		CHECK(9, rename(path("rw/.cert.tmp"), path("rw/cert.pem")) == 0);
		CHECK(10, open_errno(path("rw/cert.pem"), O_WRONLY | O_TRUNC) == 0);
		CHECK(11, link(path("rw/cert.pem"), path("rw/cert.old")) == 0 &&
				  unlink(path("rw/cert.old")) == 0);
		CHECK(12, mkdir(path("rw/sub"), 0700) == 0 && rmdir(path("rw/sub")) == 0);
		/* and nothing moves out of it */
		CHECK(13, rename(path("rw/cert.pem"), path("out/cert.pem")) != 0);
		/* a rotation by the parent (outside), once the rules are made: the new inode is
		 * read */
		CHECK(14, write(ready[1], "r", 1) == 1 && read(go[0], &c, 1) == 1);
		CHECK(15, open_errno(path("ro/cert.pem"), O_RDONLY) == 0);
		/* the release link swapped: the next release is read */
		CHECK(16, open_errno(path("rel/current/chain.pem"), O_RDONLY) == 0);
		CHECK(17, open_errno(path("rel/releases/2/chain.pem"), O_RDONLY) == 0);
		/* no signal out of the sandbox (ABI 6) */
		CHECK(20, syscall(SYS_landlock_create_ruleset, NULL, 0, 1) < 6 ||
				  (kill(getppid(), 0) == -1 && errno == EPERM));
		/* the base set: libraries, randomness */
		CHECK(18, open_errno("/dev/urandom", O_RDONLY) == 0);
		CHECK(19, open_errno("/etc/hosts", O_RDONLY) == 0 || errno == ENOENT);
		_exit(0);
	}
	close(go[0]);
	close(ready[1]);
	assert_int_equal(read(ready[0], &c, 1), 1);
	close(ready[0]);
	put(path("ro/cert.new"), "rotated");
	assert_int_equal(rename(path("ro/cert.new"), path("ro/cert.pem")), 0);
	assert_int_equal(unlink(path("rel/current")), 0);
	assert_int_equal(symlink("releases/2", path("rel/current")), 0);
	assert_int_equal(write(go[1], "x", 1), 1);
	close(go[1]);
	assert_int_equal(child_status(pid), 0);
	sandbox_free(sb);
}

static void test_seccomp(void **state)
{
	struct sandbox *sb;
	pid_t pid;

	(void)state;
	layout();
	sb = made(false);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char err[300];
		int fd;

		CHECK(1, sandbox_seccomp(sb, err, sizeof(err)) == 0);
		CHECK(2, sandbox_seccomp_on(sb));
		errno = 0;
		CHECK(3, syscall(SYS_getpriority, PRIO_PROCESS, 0) == -1 && errno == EPERM);
		CHECK(4, socket(AF_PACKET, SOCK_RAW, 0) == -1 && errno == EPERM);
		fd = socket(AF_INET, SOCK_STREAM, 0);
		CHECK(5, fd >= 0);
		close(fd);
		/* a new socket cannot listen: the daemons' are listening already */
		fd = socket(AF_INET, SOCK_STREAM, 0);
		CHECK(6, listen(fd, 1) == -1 && errno == EPERM);
		close(fd);
		CHECK(7, syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, NULL, NULL, NULL, 0) == -1 &&
				 errno == EPERM);
		/* a thread's clone passes (clone3 says ENOSYS, glibc falls back) */
		CHECK(8, syscall(SYS_clone3, NULL, 0) == -1 && errno == ENOSYS);
		_exit(0);
	}
	assert_int_equal(child_status(pid), 0);

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char err[300];

		CHECK(1, sandbox_seccomp(sb, err, sizeof(err)) == 0);
		syscall(SYS_keyctl, 0, -1, 0);
		_exit(0);
	}
	{
		int st = child_status(pid);

		assert_true(WIFSIGNALED(st));
		assert_int_equal(WTERMSIG(st), SIGSYS);
	}
	sandbox_free(sb);
}

static void test_off(void **state)
{
	struct sandbox *sb;
	pid_t pid;

	(void)state;
	layout();
	sb = made(true);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char err[300], what[80];
		const char *w;

		CHECK(1, sandbox_landlock(sb, err, sizeof(err)) == 0);
		CHECK(2, sandbox_seccomp(sb, err, sizeof(err)) == 0);
		CHECK(3, open_errno(path("out/secret"), O_RDONLY) == 0);
		CHECK(4, syscall(SYS_getpriority, PRIO_PROCESS, 0) >= 0);
		CHECK(5, sandbox_landlock_abi(sb, &w) == 0 && strcmp(w, "off") == 0);
		CHECK(6, !sandbox_seccomp_on(sb));
		sandbox_describe(sb, what, sizeof(what));
		CHECK(7, strcmp(what, "landlock=off seccomp=off") == 0);
		_exit(0);
	}
	assert_int_equal(child_status(pid), 0);
	sandbox_free(sb);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_landlock_files),
		cmocka_unit_test(test_seccomp),
		cmocka_unit_test(test_off),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
