/*
 * The daemons' sandbox: Landlock for the files, a seccomp allowlist for the system calls
 * (sandbox.h says which order and why).
 */
#include "sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/landlock.h>
#include <seccomp.h>

#include "log.h"

/* Debian 12's kernel headers are 6.1's (Landlock ABI 2): the rights of later ABIs, by the
 * numbers the kernel's uapi gives them. */
#ifndef LANDLOCK_ACCESS_FS_REFER
#define LANDLOCK_ACCESS_FS_REFER (1ULL << 13) /* ABI 2 */
#endif
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14) /* ABI 3 */
#endif
#ifndef LANDLOCK_ACCESS_FS_IOCTL_DEV
#define LANDLOCK_ACCESS_FS_IOCTL_DEV (1ULL << 15) /* ABI 5 */
#endif
#define LL_SCOPE_SIGNAL (1ULL << 1) /* LANDLOCK_SCOPE_SIGNAL, ABI 6 */
#ifndef __NR_landlock_create_ruleset
#define __NR_landlock_create_ruleset 444
#define __NR_landlock_add_rule	     445
#define __NR_landlock_restrict_self  446
#endif

#define LL_ABI1_FS ((1ULL << 13) - 1) /* EXECUTE .. MAKE_SYM */
#define LL_FILE_RIGHTS                                                                             \
	(LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE |                              \
	 LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_TRUNCATE |                              \
	 LANDLOCK_ACCESS_FS_IOCTL_DEV)
#define LL_READ (LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR)
#define LL_LIBS (LL_READ | LANDLOCK_ACCESS_FS_EXECUTE)
#define LL_WRITE                                                                                   \
	(LL_READ | LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_TRUNCATE |                   \
	 LANDLOCK_ACCESS_FS_REMOVE_FILE | LANDLOCK_ACCESS_FS_REMOVE_DIR |                          \
	 LANDLOCK_ACCESS_FS_MAKE_REG | LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_SYM | \
	 LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_REFER)
#define LL_DEVNULL (LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_WRITE_FILE)

/* The ruleset attribute as the kernel reads it (its size says which fields are there). */
struct ll_ruleset_attr {
	uint64_t handled_access_fs;
	uint64_t handled_access_net;
	uint64_t scoped;
};

struct rule {
	char *path;
	uint64_t access;
	bool required; /* --sandbox-allow: a path that is not there is an error */
};

struct sandbox {
	enum sandbox_daemon daemon;
	bool off;
	struct rule *rules;
	size_t n, cap;
	int landlock_abi; /* in force; 0: not */
	const char *landlock_what;
	bool seccomp;
	/* what sandbox_landlock() found to warn about, logged by sandbox_warnings() once the
	 * log is set up */
	enum { WARN_NONE, WARN_OFF, WARN_NO_LANDLOCK, WARN_PARTIAL } warn;
	char warn_reason[160];
	int probe_abi;
};

struct sandbox *sandbox_new(enum sandbox_daemon daemon, bool off)
{
	struct sandbox *sb = calloc(1, sizeof(*sb));

	if (sb == NULL)
		return NULL;
	sb->daemon = daemon;
	sb->off = off;
	sb->landlock_what = off ? "off" : "unavailable";
	return sb;
}

void sandbox_free(struct sandbox *sb)
{
	if (sb == NULL)
		return;
	for (size_t i = 0; i < sb->n; i++)
		free(sb->rules[i].path);
	free(sb->rules);
	free(sb);
}

static int add(struct sandbox *sb, const char *path, uint64_t access)
{
	char *p;

	if (path == NULL || path[0] == '\0')
		return 0;
	for (size_t i = 0; i < sb->n; i++)
		if (strcmp(sb->rules[i].path, path) == 0) {
			sb->rules[i].access |= access;
			return 0;
		}
	if (sb->n == sb->cap) {
		size_t cap = sb->cap > 0 ? sb->cap * 2 : 32;
		struct rule *r = realloc(sb->rules, cap * sizeof(*r));

		if (r == NULL)
			return -1;
		sb->rules = r;
		sb->cap = cap;
	}
	if ((p = strdup(path)) == NULL)
		return -1;
	sb->rules[sb->n++] = (struct rule){p, access, false};
	return 0;
}

/* A directory reached through a symbolic link that a deployment swaps (current ->
 * releases/1 replaced by current -> releases/2, Kubernetes' ..data): the rule on the
 * directory follows the link to releases/1 only, and the next release would be refused. For
 * each link on the way whose target is relative and stays beside it (no "/" first, no ".."),
 * the directory holding the link is granted too, which holds the next target as well. An
 * absolute link (/etc/mtls -> /data/mtls) grants nothing more than its target. */
static bool beside(const char *target)
{
	if (target[0] == '/')
		return false;
	for (const char *p = target; *p != '\0';) {
		size_t l = strcspn(p, "/");

		if (l == 2 && p[0] == '.' && p[1] == '.')
			return false; /* the parent; "..data" (Kubernetes) is a name */
		p += l;
		p += *p == '/';
	}
	return true;
}

static int add_link_dirs(struct sandbox *sb, const char *dir, uint64_t access)
{
	char prefix[PATH_MAX], target[PATH_MAX];
	size_t len = strlen(dir);

	if (len >= sizeof(prefix))
		return 0;
	for (size_t i = 1; i <= len; i++) {
		struct stat st;
		ssize_t n;

		if (i < len && dir[i] != '/')
			continue;
		memcpy(prefix, dir, i);
		prefix[i] = '\0';
		if (lstat(prefix, &st) != 0 || !S_ISLNK(st.st_mode))
			continue;
		n = readlink(prefix, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = '\0';
		if (!beside(target))
			continue;
		{
			const char *slash = strrchr(prefix, '/');
			char holder[PATH_MAX];

			if (slash == NULL)
				snprintf(holder, sizeof(holder), ".");
			else if (slash == prefix)
				snprintf(holder, sizeof(holder), "/");
			else
				snprintf(holder, sizeof(holder), "%.*s", (int)(slash - prefix),
					 prefix);
			if (add(sb, holder, access) != 0)
				return -1;
		}
	}
	return 0;
}

/* The directory of file, and that of its real path when a symlink leads elsewhere (a
 * Kubernetes-style ..data link, /etc/ssl/certs into /usr/share). */
static int add_dir_of(struct sandbox *sb, const char *file, uint64_t access)
{
	char dir[PATH_MAX], *real;
	const char *slash;
	int rc = 0;

	if (file == NULL || file[0] == '\0')
		return 0;
	slash = strrchr(file, '/');
	if (slash == NULL)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == file)
		snprintf(dir, sizeof(dir), "/");
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - file), file);
	if (add(sb, dir, access) != 0 || add_link_dirs(sb, dir, access) != 0)
		return -1;
	real = realpath(file, NULL);
	if (real != NULL) {
		slash = strrchr(real, '/');
		if (slash != NULL && slash != real) {
			snprintf(dir, sizeof(dir), "%.*s", (int)(slash - real), real);
			rc = add(sb, dir, access);
		}
		free(real);
	}
	return rc;
}

int sandbox_read(struct sandbox *sb, const char *path)
{
	return add(sb, path, LL_READ);
}

int sandbox_read_dir_of(struct sandbox *sb, const char *file)
{
	return add_dir_of(sb, file, LL_READ);
}

int sandbox_write(struct sandbox *sb, const char *path)
{
	return add(sb, path, LL_WRITE);
}

int sandbox_write_dir_of(struct sandbox *sb, const char *file)
{
	return add_dir_of(sb, file, LL_WRITE);
}

int sandbox_allow(struct sandbox *sb, const char *path)
{
	if (add(sb, path, LL_WRITE) != 0)
		return -1;
	for (size_t i = 0; i < sb->n; i++)
		if (strcmp(sb->rules[i].path, path) == 0)
			sb->rules[i].required = true;
	return 0;
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MTLS_SANDBOX_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define MTLS_SANDBOX_SANITIZER 1
#endif
#endif

#if defined(MTLS_SANDBOX_SANITIZER)
/* Sanitizer builds only: a report written to *_OPTIONS' log_path=PREFIX (PREFIX.PID) needs
 * its directory writable, or the report of a sandboxed daemon is lost ("Can't open file")
 * and only its exit status tells; a suppressions= file is read at exit. */
static int add_sanitizer_logs(struct sandbox *sb)
{
	static const char *const vars[] = {"ASAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS",
					   "LSAN_OPTIONS"};
	int rc = 0;

	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
		const char *v = getenv(vars[i]), *p;
		char path[PATH_MAX];

		for (p = v; p != NULL && (p = strstr(p, "log_path=")) != NULL; p += 9) {
			if (p != v && p[-1] != ':')
				continue;
			snprintf(path, sizeof(path), "%.*s", (int)strcspn(p + 9, ":"), p + 9);
			if (path[0] == '/')
				rc |= add_dir_of(sb, path, LL_WRITE);
		}
		/* read at exit, when the leak check runs */
		for (p = v; p != NULL && (p = strstr(p, "suppressions=")) != NULL; p += 13) {
			if (p != v && p[-1] != ':')
				continue;
			snprintf(path, sizeof(path), "%.*s", (int)strcspn(p + 13, ":"), p + 13);
			if (path[0] == '/')
				rc |= add_dir_of(sb, path, LL_READ);
		}
	}
	return rc;
}
#endif

/* What every daemon needs to live, whatever its options. */
static int add_base(struct sandbox *sb)
{
	static const char *const libs[] = {"/usr/lib", "/usr/lib64", "/usr/lib32",    "/lib",
					   "/lib64",   "/lib32",     "/usr/local/lib"};
	static const char *const reads[] = {
		/* name resolution (getaddrinfo, getpwnam for --user) */
		"/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/gai.conf",
		"/etc/services", "/etc/host.conf", "/etc/protocols", "/etc/passwd", "/etc/group",
		/* dlopen (NSS modules, a PKCS#11 engine and module), time zones */
		"/etc/ld.so.cache", "/etc/localtime", "/usr/share/zoneinfo",
		/* OpenSSL's openssl.cnf, the system CA bundle (links into
		 * /usr/share/ca-certificates), p11-kit's module list; not /etc/ssl/private */
		"/etc/ssl/openssl.cnf", "/etc/ssl/certs", "/usr/share/ca-certificates",
		"/etc/pkcs11", "/usr/share/p11-kit",
		/* randomness, this process's own /proc (the allocator, sanitizers), the CPU list
		 * (sysconf) */
		"/dev/urandom", "/dev/random", "/proc/self", "/sys/devices/system/cpu"};
	char *real;
	int rc = 0;

	for (size_t i = 0; i < sizeof(libs) / sizeof(libs[0]); i++)
		if (add(sb, libs[i], LL_LIBS) != 0)
			return -1;
	for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++)
		if (add(sb, reads[i], LL_READ) != 0)
			return -1;
	/* a resolv.conf that links elsewhere (systemd-resolved's stub) is rewritten there by
	 * rename: its directory, whose next file the rule on one inode would miss */
	real = realpath("/etc/resolv.conf", NULL);
	if (real != NULL && strncmp(real, "/etc/", 5) != 0 && strrchr(real, '/') != real) {
		*strrchr(real, '/') = '\0';
		rc = add(sb, real, LL_READ);
	}
	free(real);
	if (rc != 0)
		return -1;
	return add(sb, "/dev/null", LL_DEVNULL);
}

static uint64_t abi_fs(int abi)
{
	uint64_t fs = LL_ABI1_FS;

	if (abi >= 2)
		fs |= LANDLOCK_ACCESS_FS_REFER;
	if (abi >= 3)
		fs |= LANDLOCK_ACCESS_FS_TRUNCATE;
	if (abi >= 5)
		fs |= LANDLOCK_ACCESS_FS_IOCTL_DEV;
	return fs;
}

int sandbox_landlock(struct sandbox *sb, char *err, size_t len)
{
	struct ll_ruleset_attr attr = {0};
	uint64_t handled;
	long abi;
	int rfd = -1, rc = -1;

	if (sb->off) {
		sb->warn = WARN_OFF;
		return 0;
	}
	abi = syscall(__NR_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
	if (abi < 1) {
		sb->warn = WARN_NO_LANDLOCK;
		snprintf(sb->warn_reason, sizeof(sb->warn_reason), "%s", strerror(errno));
		return 0;
	}
	if (abi < 5) {
		sb->warn = WARN_PARTIAL;
		sb->probe_abi = (int)abi;
		snprintf(sb->warn_reason, sizeof(sb->warn_reason), "%s%s%s",
			 abi < 2 ? "REFER (ABI 2) " : "", abi < 3 ? "TRUNCATE (ABI 3) " : "",
			 "IOCTL_DEV (ABI 5)");
	}
	handled = abi_fs((int)abi);
	attr.handled_access_fs = handled;
	/* network rules (ABI 4) are not used: OCSP responders and CRL URLs named by
	 * certificates are learnt at run time. From ABI 6, no signal to a process outside the
	 * sandbox (seccomp has no kill(), but tgkill() names any thread); abstract unix sockets
	 * stay open (systemd's NOTIFY_SOCKET may be one) */
	if (abi >= 6)
		attr.scoped = LL_SCOPE_SIGNAL;
	rfd = (int)syscall(__NR_landlock_create_ruleset, &attr,
			   abi >= 6 ? sizeof(attr) : sizeof(attr.handled_access_fs), 0);
	if (rfd < 0) {
		snprintf(err, len,
			 "sandbox: cannot create the Landlock ruleset: %s; start with "
			 "--insecure-no-sandbox to run without it",
			 strerror(errno));
		return -1;
	}
	if (add_base(sb) != 0
#if defined(MTLS_SANDBOX_SANITIZER)
	    || add_sanitizer_logs(sb) != 0
#endif
	) {
		snprintf(err, len, "sandbox: out of memory");
		goto out;
	}
	for (size_t i = 0; i < sb->n; i++) {
		struct landlock_path_beneath_attr pb = {0};
		struct stat st;
		int fd = open(sb->rules[i].path, O_PATH | O_CLOEXEC);

		if (fd < 0 && sb->rules[i].required) {
			snprintf(err, len,
				 "--sandbox-allow %.200s: %s; give a file or directory that exists",
				 sb->rules[i].path, strerror(errno));
			goto out;
		}
		if (fd < 0)
			continue; /* not there: nothing to reach */
		pb.allowed_access = sb->rules[i].access & handled;
		if (fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode))
			pb.allowed_access &= LL_FILE_RIGHTS;
		pb.parent_fd = fd;
		if (syscall(__NR_landlock_add_rule, rfd, LANDLOCK_RULE_PATH_BENEATH, &pb, 0) != 0) {
			snprintf(err, len, "sandbox: Landlock rule for %.200s: %s",
				 sb->rules[i].path, strerror(errno));
			close(fd);
			goto out;
		}
		close(fd);
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
	    syscall(__NR_landlock_restrict_self, rfd, 0) != 0) {
		snprintf(err, len, "sandbox: cannot apply Landlock: %s", strerror(errno));
		goto out;
	}
	sb->landlock_abi = (int)abi;
	rc = 0;
out:
	close(rfd);
	return rc;
}

void sandbox_warnings(struct sandbox *sb)
{
	switch (sb->warn) {
	case WARN_OFF:
		LOG(LOG_WARN, "sandbox_off",
		    LS("message", "--insecure-no-sandbox: no Landlock and no seccomp filter; the "
				  "daemon can reach every file and system call its user can"));
		break;
	case WARN_NO_LANDLOCK:
		LOG(LOG_WARN, "sandbox_unavailable", LS("missing", "landlock"),
		    LS("reason", sb->warn_reason),
		    LS("message", "this kernel offers no Landlock (Linux 5.13+ with lsm=landlock), "
				  "or the service manager's filter refuses it: the daemon runs "
				  "without file restrictions"));
		break;
	case WARN_PARTIAL:
		LOG(LOG_WARN, "sandbox_partial", LN("landlock_abi", sb->probe_abi),
		    LS("missing", sb->warn_reason),
		    LS("message", sb->probe_abi < 2 ? "files cannot be renamed into another "
						      "directory; the rest of Landlock applies"
						    : "this kernel's Landlock lacks these rights; "
						      "the rest applies"));
		break;
	case WARN_NONE: break;
	}
	sb->warn = WARN_NONE;
}

/* ---- seccomp ---- */

/* What every daemon calls (glibc, OpenSSL, libev, libcurl, jansson, the log). */
static const char *const calls_base[] = {
	/* I/O on descriptors */
	"read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2",
	"pwritev2", "lseek", "close", "close_range", "dup", "dup2", "dup3", "fcntl", "ioctl",
	"pipe", "pipe2", "sendfile",
	/* files (Landlock says which) */
	"open", "openat", "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs",
	"access", "faccessat", "faccessat2", "getdents", "getdents64", "readlink", "readlinkat",
	"getcwd", "rename", "renameat", "renameat2", "link", "linkat", "unlink", "unlinkat",
	"symlink", "symlinkat", "mkdir", "mkdirat", "rmdir", "chmod", "fchmod", "fchmodat",
	"fchown", "fchownat", "chown", "lchown", "umask", "fsync", "fdatasync", "ftruncate",
	"fallocate", "flock", "utimensat", "fadvise64", "inotify_init", "inotify_init1",
	"inotify_add_watch", "inotify_rm_watch",
	/* memory */
	"brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "mincore",
	/* threads, time, signals, identity */
	"futex", "set_robust_list", "get_robust_list", "rseq", "set_tid_address", "exit",
	"exit_group", "sched_yield", "sched_getaffinity", "getpid", "gettid", "getppid", "getuid",
	"geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups", "tgkill", "tkill",
	"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigtimedwait", "rt_sigpending",
	"sigaltstack", "restart_syscall", "clock_gettime", "clock_getres", "clock_nanosleep",
	"nanosleep", "gettimeofday", "time", "alarm", "setitimer", "getitimer", "times",
	"getrusage", "prlimit64", "getrlimit", "uname", "sysinfo", "getrandom", "prctl",
	"arch_prctl", "wait4", "waitid",
	/* events */
	"poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl",
	"epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "signalfd", "signalfd4",
	"timerfd_create", "timerfd_settime", "timerfd_gettime",
	/* network (socket() itself below, by family); bind: glibc's netlink query of the
	 * addresses for getaddrinfo */
	"socketpair", "connect", "bind", "getsockname", "getpeername", "setsockopt", "getsockopt",
	"sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown"};

/* The daemons that accept connections: the tunnel and ca serve (their sockets listen
 * already; listen() is not allowed again). */
static const char *const calls_accept[] = {"accept", "accept4"};

/* Sanitizer builds only (compile time: MTLS_SANITIZE, MTLS_SANITIZE_THREAD): LeakSanitizer
 * stops the world at exit with a tracer clone that ptrace()s every thread, and a report
 * runs the symbolizer (fork + execve); TSan's reports likewise. Never in a release build. */
#if defined(MTLS_SANDBOX_SANITIZER)
static const char *const calls_sanitizer[] = {
	"ptrace", "process_vm_readv", "execve", "vfork", "fork", "personality", "sched_getparam"};
#endif

/* Calls no daemon makes and an attacker would: the process is killed. */
static const char *const calls_kill[] = {
#if !defined(MTLS_SANDBOX_SANITIZER)
	"ptrace",	 "process_vm_readv", "process_vm_writev",
	"execve",	 "execveat",
#endif
	"mount",	 "umount2",	     "pivot_root",
	"chroot",	 "init_module",	     "finit_module",
	"delete_module", "kexec_load",	     "kexec_file_load",
	"bpf",		 "perf_event_open",  "keyctl",
	"add_key",	 "request_key",	     "userfaultfd",
	"setns",	 "unshare",	     "reboot",
	"fsopen",	 "fsmount",	     "move_mount",
	"open_tree",	 "fsconfig",	     "fspick"};

static int allow_all(scmp_filter_ctx ctx, const char *const *names, size_t n, uint32_t action)
{
	for (size_t i = 0; i < n; i++) {
		int nr = seccomp_syscall_resolve_name(names[i]);

		if (nr == __NR_SCMP_ERROR)
			continue; /* not a call of this architecture */
		if (seccomp_rule_add(ctx, action, nr, 0) != 0)
			return -1;
	}
	return 0;
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

int sandbox_seccomp(struct sandbox *sb, char *err, size_t len)
{
	static const int families[] = {AF_UNIX, AF_INET, AF_INET6, AF_NETLINK};
	/* a clone that makes namespaces is what unshare() would do */
	const uint64_t newns = CLONE_NEWNS | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET |
			       CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWCGROUP;
	const struct scmp_arg_cmp no_newns = {0, SCMP_CMP_MASKED_EQ, newns, 0};
	scmp_filter_ctx ctx;
	int rc;

	if (sb->off)
		return 0;
	if (prctl(PR_GET_SECCOMP, 0, 0, 0, 0) < 0 && errno == EINVAL) {
		LOG(LOG_WARN, "sandbox_unavailable", LS("missing", "seccomp"),
		    LS("message", "this kernel has no seccomp filters: the daemon runs without "
				  "its system call allowlist"));
		return 0;
	}
	ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
	if (ctx == NULL) {
		snprintf(err, len, "sandbox: seccomp_init failed: out of memory");
		return -1;
	}
	rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
	if (rc == 0) /* the kernel's errno, not -ECANCELED, from seccomp_load() */
		rc = seccomp_attr_set(ctx, SCMP_FLTATR_API_SYSRAWRC, 1);
	if (rc == 0)
		rc = allow_all(ctx, calls_base, N(calls_base), SCMP_ACT_ALLOW);
	if (rc == 0 && sb->daemon != SANDBOX_AGENT)
		rc = allow_all(ctx, calls_accept, N(calls_accept), SCMP_ACT_ALLOW);
#if defined(MTLS_SANDBOX_SANITIZER)
	if (rc == 0)
		rc = allow_all(ctx, calls_sanitizer, N(calls_sanitizer), SCMP_ACT_ALLOW);
#endif
	if (rc == 0)
		rc = allow_all(ctx, calls_kill, N(calls_kill), SCMP_ACT_KILL_PROCESS);
	/* clone3's flags are in memory a filter cannot read: ENOSYS makes glibc use clone(),
	 * whose flags it can */
	if (rc == 0 && seccomp_syscall_resolve_name("clone3") != __NR_SCMP_ERROR)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS),
				      seccomp_syscall_resolve_name("clone3"), 0);
	if (rc == 0)
		rc = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1, &no_newns);
	for (size_t i = 0; rc == 0 && i < N(families); i++) {
		const struct scmp_arg_cmp family = {0, SCMP_CMP_EQ, (scmp_datum_t)families[i], 0};

		rc = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1, &family);
	}
	if (rc == 0)
		rc = seccomp_load(ctx);
	seccomp_release(ctx);
	if (rc == -EPERM || rc == -EACCES || rc == -ENOSYS) {
		/* a filter of the service manager's that lacks seccomp() (systemd units: see
		 * systemd/), or a kernel without filters */
		LOG(LOG_WARN, "sandbox_unavailable", LS("missing", "seccomp"),
		    LS("reason", strerror(-rc)),
		    LS("message",
		       "the seccomp filter cannot be loaded here: the daemon runs "
		       "without its system call allowlist; allow seccomp() to it (systemd: "
		       "SystemCallFilter=seccomp)"));
		return 0;
	}
	if (rc != 0) {
		snprintf(err, len,
			 "sandbox: cannot load the seccomp filter: %s; start with "
			 "--insecure-no-sandbox to run without it",
			 strerror(-rc));
		return -1;
	}
	sb->seccomp = true;
	return 0;
}

int sandbox_landlock_abi(const struct sandbox *sb, const char **what)
{
	*what = sb->landlock_abi > 0 ? NULL : sb->landlock_what;
	return sb->landlock_abi;
}

bool sandbox_seccomp_on(const struct sandbox *sb)
{
	return sb->seccomp;
}

void sandbox_describe(const struct sandbox *sb, char *out, size_t len)
{
	if (sb->landlock_abi > 0)
		snprintf(out, len, "landlock=%d seccomp=%s", sb->landlock_abi,
			 sb->seccomp ? "on" : "off");
	else
		snprintf(out, len, "landlock=%s seccomp=%s", sb->landlock_what,
			 sb->seccomp ? "on" : "off");
}

#ifdef MTLS_TEST_HOOKS
static const char *errno_name(int e)
{
	switch (e) {
	case 0: return "OK";
	case EACCES: return "EACCES";
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case ENOSYS: return "ENOSYS";
	default: return "other";
	}
}

void sandbox_probe(const char *when)
{
	const char *path = getenv("MTLS_TEST_SANDBOX_PROBE");
	const char *kill = getenv("MTLS_TEST_SANDBOX_KILL");
	int fd, open_errno, call_errno = 0;

	if (path == NULL)
		return;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	open_errno = fd < 0 ? errno : 0;
	if (fd >= 0)
		close(fd);
	/* outside the allowlist, harmless where it runs */
	if (syscall(SYS_getpriority, PRIO_PROCESS, 0) < 0)
		call_errno = errno;
	LOG(LOG_INFO, "sandbox_probe", LS("when", when), LS("path", path),
	    LS("open", errno_name(open_errno)), LS("syscall", errno_name(call_errno)));
	if (kill != NULL && strcmp(kill, "1") == 0) {
		log_flush(1000);
		syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -1 /* thread */, 0);
		LOG(LOG_INFO, "sandbox_probe_survived", LS("when", when));
	}
}
#else
void sandbox_probe(const char *when)
{
	(void)when;
}
#endif
