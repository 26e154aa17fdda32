/*
 * The daemons' sandbox (issue 17): after start-up each daemon (mtls server, mtls connector,
 * mtls ca serve, mtls agent) limits what it can reach, so that a bug exploited in its TLS,
 * HTTP or JSON parsing reaches no more than the daemon's own files.
 *
 *   Landlock   the files: read-only where the daemon reads (its certificate, key, CA, CRLs,
 *              config: their DIRECTORIES, since rotation replaces a file by rename and the
 *              watcher must see the new inode), read-write where it writes (log, renewal
 *              directories, CRL caches, the CA directory, the agent's copies), plus what any
 *              process needs to live (shared libraries, name resolution, /etc/ssl, random,
 *              /proc/self, the CPU list). Every access right the running kernel's ABI knows
 *              is handled (denied unless granted); rights of newer ABIs are masked out.
 *   seccomp    an allowlist of the system calls the daemon uses (libseccomp): any other call
 *              fails with EPERM, and a short list of calls no daemon needs and attackers use
 *              (ptrace, execve, mount, bpf, keyctl, ...) kills the process (SIGSYS).
 *
 * Order (Landlock and seccomp bind a thread and the threads it creates later):
 *   1. sandbox_new() and the daemon's paths added from its options;
 *   2. sandbox_landlock() before the process starts its first thread (the log's writer is
 *      started by log_setup(), so before that): on ABI 7 Landlock cannot restrict threads that
 *      already run, and a thread left out could be made to open anything for the others;
 *   3. the start-up: files read, keys loaded, sockets bound, privileges dropped, threads
 *      started;
 *   4. sandbox_seccomp() just before the main loop, with TSYNC, so every thread gets the
 *      filter at once and the start-up keeps the calls only it needs (bind, setuid, ...).
 * Where the kernel lacks Landlock, seccomp or an ABI feature, one warning names what is
 * missing and the daemon goes on. --insecure-no-sandbox skips both, with a warning.
 *
 * Logs through tunnel/log.h (the daemons' one logging module).
 */
#ifndef MTLS_COMMON_SANDBOX_H
#define MTLS_COMMON_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>

/* The daemons, each with its own list of system calls. */
enum sandbox_daemon {
	SANDBOX_TUNNEL,	 /* mtls server, mtls connector */
	SANDBOX_CASERVE, /* mtls ca serve */
	SANDBOX_AGENT,	 /* mtls agent (its hooks run in a process forked before: agent_runner) */
};

struct sandbox;

/* A sandbox to be, for daemon; off: --insecure-no-sandbox (nothing is applied, a warning is
 * logged by the apply calls). NULL if out of memory. */
struct sandbox *sandbox_new(enum sandbox_daemon daemon, bool off);
void sandbox_free(struct sandbox *sb);

/* Read-only access to path (a directory and all below it, or one file). A path that does not
 * exist is skipped (nothing there to protect). 0, or -1 out of memory. */
int sandbox_read(struct sandbox *sb, const char *path);
/* Read-only access to the directory of file (rotation replaces files by rename), and to the
 * directory of its real path if a symlink leads elsewhere. */
int sandbox_read_dir_of(struct sandbox *sb, const char *file);
/* Read-write access (create, replace, remove files and directories, bind unix sockets) to
 * the directory path and all below it. */
int sandbox_write(struct sandbox *sb, const char *path);
/* Read-write access to the directory of file (and of its real path). */
int sandbox_write_dir_of(struct sandbox *sb, const char *file);

/* --sandbox-allow PATH: read-write access to path (a directory and all below it, or a file),
 * which must exist (sandbox_landlock() fails otherwise). */
int sandbox_allow(struct sandbox *sb, const char *path);

/* Apply Landlock with the paths added and the base set every process needs. Call before the
 * process starts any thread. If the kernel lacks Landlock or a right of the ABIs after 1 (or
 * sb is off), sandbox_warnings() says so later. 0, or -1 with err (a rule could not be made: the
 * daemon should not start half sandboxed). */
int sandbox_landlock(struct sandbox *sb, char *err, size_t len);
/* Log what sandbox_landlock() found to warn about (off, no Landlock, an ABI lacking rights),
 * once, after log_setup(): Landlock comes before the log is set up. */
void sandbox_warnings(struct sandbox *sb);
/* Load the seccomp filter into every thread of the process (TSYNC). Logs one warning if the
 * kernel lacks seccomp (or if sb is off). 0, or -1 with err. */
int sandbox_seccomp(struct sandbox *sb, char *err, size_t len);

/* The state, for /status and the start line: the Landlock ABI in force (1..), or 0 with
 * *what "unavailable" or "off"; whether the seccomp filter is loaded. */
int sandbox_landlock_abi(const struct sandbox *sb, const char **what);
bool sandbox_seccomp_on(const struct sandbox *sb);
/* "landlock=7 seccomp=on" or "landlock=unavailable seccomp=off", for log lines. */
void sandbox_describe(const struct sandbox *sb, char *out, size_t len);

/* Test builds only (MTLS_TEST_HOOKS; does nothing otherwise): with MTLS_TEST_SANDBOX_PROBE=PATH
 * in the environment, open PATH for reading and make one system call outside the allowlist
 * (getpriority), and log event=sandbox_probe with open=OK|EACCES|... syscall=OK|EPERM and
 * when. With MTLS_TEST_SANDBOX_KILL=1 also, make one call of the kill list (keyctl): a
 * sandboxed daemon dies by SIGSYS. */
void sandbox_probe(const char *when);

#endif /* MTLS_COMMON_SANDBOX_H */
