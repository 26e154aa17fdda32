/*
 * Crash recovery of several files replaced as one change (renew/fileset.c): the half states
 * a crash can leave, made by hand, and what fileset_recover() makes of them (the old set or
 * the new one whole, nothing temporary left); a failure that is not a crash (a rename that
 * fails) taken back, also when the undo itself is cut short; the journal's parser on bad
 * input. The crashes themselves (SIGKILL at each syscall) are in
 * tests/integration/test_renew_crash.sh.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "fileset.h"

/* snprintf into an array, never cut short */
#define FMT(buf, ...) assert_true(snprintf(buf, sizeof(buf), __VA_ARGS__) < (int)sizeof(buf))

/* rename() fails (EIO) at the calls numbered in rename_fails (bit N: the Nth call, counted
 * from 1 since rename_arm()); linked with -Wl,--wrap=rename,--wrap=link. */
static unsigned rename_fails, rename_calls;
int __real_rename(const char *from, const char *to);
int __wrap_rename(const char *from, const char *to);
int __real_link(const char *from, const char *to);
int __wrap_link(const char *from, const char *to);

static void rename_arm(unsigned mask)
{
	rename_fails = mask;
	rename_calls = 0;
}

static void watch(void);
static const char *watch_dir;

int __wrap_rename(const char *from, const char *to)
{
	if (watch_dir != NULL)
		watch();
	if (++rename_calls < 32 && (rename_fails & (1u << rename_calls)) != 0) {
		errno = EIO;
		return -1;
	}
	return __real_rename(from, to);
}

int __wrap_link(const char *from, const char *to)
{
	return __real_link(from, to);
}

/* The race of another user who can write the directory (test_swapped_for_symlink): when
 * linkat() of swap_path fails (protected_hardlinks), swap_path becomes a symlink to
 * swap_to before the copy of its old content is made; at the next rename() (the journal's,
 * after every copy), leaked says whether a world-readable file in watch_dir holds secret.
 * Linked with -Wl,--wrap=linkat. */
static const char *swap_path, *swap_to, *secret;
static bool leaked;
int __real_linkat(int fromfd, const char *from, int tofd, const char *to, int flags);
int __wrap_linkat(int fromfd, const char *from, int tofd, const char *to, int flags);

int __wrap_linkat(int fromfd, const char *from, int tofd, const char *to, int flags)
{
	int r = __real_linkat(fromfd, from, tofd, to, flags), e = errno;

	if (r != 0 && swap_path != NULL && strcmp(from, swap_path) == 0) {
		if (unlink(from) != 0 || symlink(swap_to, from) != 0)
			abort();
		swap_path = NULL;
	}
	errno = e;
	return r;
}

static void watch(void)
{
	DIR *d = opendir(watch_dir);
	struct dirent *de;

	while (d != NULL && (de = readdir(d)) != NULL) {
		char p[PATH_MAX], buf[64] = "";
		struct stat sb;
		FILE *f;

		if (snprintf(p, sizeof(p), "%s/%s", watch_dir, de->d_name) >= (int)sizeof(p) ||
		    lstat(p, &sb) != 0 || !S_ISREG(sb.st_mode) || (sb.st_mode & 004) == 0 ||
		    (f = fopen(p, "r")) == NULL)
			continue;
		buf[fread(buf, 1, sizeof(buf) - 1, f)] = '\0';
		fclose(f);
		leaked |= strcmp(buf, secret) == 0;
	}
	if (d != NULL)
		closedir(d);
	watch_dir = NULL;
}

struct fx {
	char dir[64], cert[128], key[128], other[128], okey[128];
};

static void put(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static char *slurp(const char *path)
{
	static char buf[4096];
	FILE *f = fopen(path, "r");
	size_t n;

	if (f == NULL)
		return strcpy(buf, "<missing>");
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static int entries(const char *dir)
{
	char cmd[300];
	FILE *p;
	int n = -1;

	FMT(cmd, "ls -A '%s' | wc -l", dir);
	p = popen(cmd, "r");
	assert_non_null(p);
	assert_int_equal(fscanf(p, "%d", &n), 1);
	pclose(p);
	return n;
}

static int setup(void **state)
{
	struct fx *x = calloc(1, sizeof(*x));
	char real[PATH_MAX];

	assert_non_null(x);
	FMT(x->dir, "/tmp/test_fileset.XXXXXX");
	assert_non_null(mkdtemp(x->dir));
	/* journals name files by their resolved directory */
	assert_non_null(realpath(x->dir, real));
	FMT(x->dir, "%s", real);
	FMT(x->other, "%s/keys", x->dir);
	assert_int_equal(mkdir(x->other, 0700), 0);
	FMT(x->cert, "%s/cert.pem", x->dir);
	FMT(x->key, "%s/key.pem", x->dir);
	FMT(x->okey, "%s/app.key", x->other);
	put(x->cert, "cert1\n");
	put(x->key, "key1\n");
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	struct fx *x = *state;
	char cmd[200];

	FMT(cmd, "rm -rf '%s'", x->dir);
	assert_int_equal(system(cmd), 0);
	free(x);
	return 0;
}

/* side(out, path, "new", id) */
static void side(char *out, size_t len, const char *path, const char *kind, const char *id)
{
	assert_true(snprintf(out, len, "%s.%s-%s", path, kind, id) < (int)len);
}

static void journal(const struct fx *x, const char *name, const char *text)
{
	char p[PATH_MAX];

	FMT(p, "%s/%s", x->dir, name);
	put(p, text);
}

static int recover(const struct fx *x)
{
	const char *paths[2] = {x->cert, x->key};
	char err[1024];
	int rc = fileset_recover(paths, 2, err, sizeof(err));

	if (rc != 0)
		print_message("fileset_recover: %s\n", err);
	return rc;
}

#define ID_C "0123456789ab"
#define ID_K "abcdef012345"
#define ID_O "111111111111"
#define ID_P "222222222222"

/* The staged files and the backups of a change of cert.pem and key.pem, as step 1 leaves
 * them (cert and key still old). */
static void stage_both(const struct fx *x)
{
	char p[PATH_MAX];

	side(p, sizeof(p), x->cert, "new", ID_C);
	put(p, "cert2\n");
	side(p, sizeof(p), x->key, "new", ID_K);
	put(p, "key2\n");
	side(p, sizeof(p), x->cert, "old", ID_O);
	assert_int_equal(link(x->cert, p), 0);
	side(p, sizeof(p), x->key, "old", ID_P);
	assert_int_equal(link(x->key, p), 0);
}

static void both_journal(const struct fx *x, const char *name)
{
	char text[1024];

	FMT(text, "mtls fileset 1\n%s %s %s\n%s %s %s\n", ID_C, ID_O, x->cert, ID_K, ID_P, x->key);
	journal(x, name, text);
}

static void assert_pair(const struct fx *x, const char *cert, const char *key)
{
	char c[64];

	FMT(c, "%s", slurp(x->cert));
	assert_string_equal(c, cert);
	assert_string_equal(slurp(x->key), key);
}

/* Killed before the journal: staged files and backups lie about, the old pair stays. */
static void test_before_journal(void **state)
{
	struct fx *x = *state;

	stage_both(x);
	assert_int_equal(recover(x), 0);
	assert_pair(x, "cert1\n", "key1\n");
	assert_int_equal(entries(x->dir), 3); /* cert, key, keys/ */
}

/* Killed after the journal, before any rename: finished forward (the new key kept). */
static void test_journal_nothing_renamed(void **state)
{
	struct fx *x = *state;

	stage_both(x);
	both_journal(x, FILESET_JOURNAL);
	assert_int_equal(recover(x), 0);
	assert_pair(x, "cert2\n", "key2\n");
	assert_int_equal(entries(x->dir), 3);
}

/* Killed between the two renames: the new chain beside the old key. Finished forward. */
static void test_between_renames(void **state)
{
	struct fx *x = *state;
	char p[PATH_MAX];

	stage_both(x);
	both_journal(x, FILESET_JOURNAL);
	side(p, sizeof(p), x->cert, "new", ID_C);
	assert_int_equal(rename(p, x->cert), 0);
	assert_pair(x, "cert2\n", "key1\n"); /* the mismatch a crash leaves */
	assert_int_equal(recover(x), 0);
	assert_pair(x, "cert2\n", "key2\n");
	assert_int_equal(entries(x->dir), 3);
	/* and again: nothing to do */
	assert_int_equal(recover(x), 0);
	assert_pair(x, "cert2\n", "key2\n");
}

/* Killed after both renames, before the journal went: nothing to change, all cleaned. */
static void test_after_renames(void **state)
{
	struct fx *x = *state;
	char p[PATH_MAX];

	stage_both(x);
	both_journal(x, FILESET_JOURNAL);
	side(p, sizeof(p), x->cert, "new", ID_C);
	assert_int_equal(rename(p, x->cert), 0);
	side(p, sizeof(p), x->key, "new", ID_K);
	assert_int_equal(rename(p, x->key), 0);
	assert_int_equal(recover(x), 0);
	assert_pair(x, "cert2\n", "key2\n");
	assert_int_equal(entries(x->dir), 3);
}

/* Killed while taking a failed change back (the journal renamed to undo): the chain was
 * renamed, its old content already put back, the key never renamed. Undone, not redone. */
static void test_undo_cut_short(void **state)
{
	struct fx *x = *state;
	char p[PATH_MAX];

	stage_both(x);
	both_journal(x, FILESET_UNDO);
	side(p, sizeof(p), x->cert, "new", ID_C);
	assert_int_equal(rename(p, x->cert), 0);
	side(p, sizeof(p), x->cert, "old", ID_O);
	assert_int_equal(rename(p, x->cert), 0);
	assert_int_equal(recover(x), 0);
	assert_pair(x, "cert1\n", "key1\n");
	assert_int_equal(entries(x->dir), 3);
}

/* The key in another directory: the journal beside the chain names it, and a recovery
 * given the chain alone (the daemons' start) finishes both. */
static void test_two_dirs(void **state)
{
	struct fx *x = *state;
	const char *paths[1] = {x->cert};
	char p[PATH_MAX], text[1024], err[512];

	put(x->okey, "key1\n");
	side(p, sizeof(p), x->cert, "new", ID_C);
	put(p, "cert2\n");
	side(p, sizeof(p), x->okey, "new", ID_K);
	put(p, "key2\n");
	FMT(text, "mtls fileset 1\n%s - %s\n%s - %s\n", ID_C, x->cert, ID_K, x->okey);
	journal(x, FILESET_JOURNAL, text);
	side(p, sizeof(p), x->cert, "new", ID_C);
	assert_int_equal(rename(p, x->cert), 0);
	assert_int_equal(fileset_recover(paths, 1, err, sizeof(err)), 0);
	assert_string_equal(slurp(x->cert), "cert2\n");
	assert_string_equal(slurp(x->okey), "key2\n");
	assert_int_equal(entries(x->other), 1);
}

/* Stale staging files of the paths given go; others' files stay. */
static void test_stale(void **state)
{
	struct fx *x = *state;
	char p[PATH_MAX];

	side(p, sizeof(p), x->key, "new", "0000000000ff");
	put(p, "half\n");
	side(p, sizeof(p), x->key, "old", "0000000000fe");
	put(p, "old\n");
	FMT(p, "%s/.mtls-fileset.tmp-0123456789ab", x->dir);
	put(p, "half journal\n");
	FMT(p, "%s/other.pem.new-0000000000ff", x->dir);
	put(p, "not ours\n");
	FMT(p, "%s/key.pem.new-xyz", x->dir);
	put(p, "not a staging name\n");
	assert_int_equal(recover(x), 0);
	assert_int_equal(entries(x->dir), 5);
}

/* A damaged journal is left in place, and the recovery fails with a message. */
static void test_damaged_journal(void **state)
{
	struct fx *x = *state;
	const char *paths[2] = {x->cert, x->key};
	char err[1024];

	journal(x, FILESET_JOURNAL, "mtls fileset 1\nnonsense\n");
	assert_int_equal(fileset_recover(paths, 2, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "damaged"));
	assert_pair(x, "cert1\n", "key1\n");
	assert_int_equal(entries(x->dir), 4);
}

/* A journal that this user did not write is not followed: recovery runs as root in a
 * directory its service's user can write (mtls agent's copies), and a journal of that user's
 * naming another file (here "created by the change, remove it") must not make root remove
 * it. Left in place, with a message; the same journal written by this user is followed. */
static void test_foreign_journal(void **state)
{
	struct fx *x = *state;
	char victim[PATH_MAX], text[1024], jp[PATH_MAX], err[1024];
	const char *paths[2] = {x->cert, x->key};

	if (geteuid() != 0)
		skip(); /* only root can give a file to another user */
	FMT(victim, "%s/victim", x->other);
	put(victim, "precious\n");
	FMT(text, "mtls fileset 1\n%s - %s\n", ID_C, victim);
	journal(x, FILESET_UNDO, text);
	FMT(jp, "%s/%s", x->dir, FILESET_UNDO);
	assert_int_equal(chown(jp, 65534, 65534), 0);
	assert_int_equal(fileset_recover(paths, 2, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not written by this user"));
	assert_string_equal(slurp(victim), "precious\n");
	assert_int_equal(access(jp, F_OK), 0);
	/* group- or world-writable: the same */
	assert_int_equal(chown(jp, 0, 0), 0);
	assert_int_equal(chmod(jp, 0666), 0);
	assert_int_equal(fileset_recover(paths, 2, err, sizeof(err)), -1);
	assert_string_equal(slurp(victim), "precious\n");
	/* this user's own: followed */
	assert_int_equal(chmod(jp, 0600), 0);
	assert_int_equal(fileset_recover(paths, 2, err, sizeof(err)), 0);
	assert_int_equal(access(victim, F_OK), -1);
	assert_int_equal(access(jp, F_OK), -1);
}

/* A daemon running as --user renews files that root owns in a directory of the user's:
 * the key root:GROUP 0640 (what the daemon itself suggests for a key --user cannot read),
 * the chain root 0644. With protected_hardlinks (Debian's default) the user may not give
 * them a second name (link(): EPERM), so their old content is kept as a copy: the renewal
 * succeeds, and a failure is still taken back to the old content. The same for a symlink of
 * root's (its old name kept as a symlink of this user's). */
static void another_user(struct fx *x, bool symlink_key)
{
	const struct fileset_file f[2] = {{x->cert, "cert2\n", 6, 0644, false, 0, 0},
					  {x->key, "key2\n", 5, 0600, false, 0, 0}};
	int status = -1;
	pid_t pid;

	if (geteuid() != 0)
		skip(); /* only root can make files of two users */
	assert_int_equal(chown(x->dir, 65534, 65534), 0);
	assert_int_equal(chown(x->key, 0, 65534), 0);
	assert_int_equal(chmod(x->key, 0640), 0);
	assert_int_equal(chmod(x->cert, 0644), 0);
	if (symlink_key) { /* key.pem a symlink of root's to keys/app.key */
		put(x->okey, "key1\n");
		assert_int_equal(chmod(x->other, 0755), 0);
		assert_int_equal(chmod(x->okey, 0644), 0);
		assert_int_equal(unlink(x->key), 0);
		assert_int_equal(symlink(x->okey, x->key), 0);
	}
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char err[1024];
		int bad = 0;

		if (setgid(65534) != 0 || setuid(65534) != 0)
			_exit(10);
		/* the key's rename fails: the old chain is put back from its copy */
		rename_arm(1u << 3);
		if (fileset_write(f, 2, true, err, sizeof(err)) != -1)
			bad |= 1;
		rename_arm(0);
		if (strcmp(slurp(x->cert), "cert1\n") != 0 || strcmp(slurp(x->key), "key1\n") != 0)
			bad |= 2;
		if (fileset_write(f, 2, true, err, sizeof(err)) != 0) {
			fprintf(stderr, "fileset_write as uid 65534: %s\n", err);
			bad |= 4;
		}
		_exit(bad);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_pair(x, "cert2\n", "key2\n");
	assert_int_equal(entries(x->dir), 3);
	if (symlink_key) { /* replaced, its target left alone */
		struct stat sb;

		assert_int_equal(lstat(x->key, &sb), 0);
		assert_true(S_ISREG(sb.st_mode));
		assert_string_equal(slurp(x->okey), "key1\n");
	}
}

static void test_files_of_another_user(void **state)
{
	another_user(*state, false);
}

static void test_symlink_of_another_user(void **state)
{
	another_user(*state, true);
}

/* Replacing a file of another user (its old content copied: protected_hardlinks) in a
 * directory that user can write: they swap the file for a symlink to a file only the writer
 * may read (a CA's key) between the lstat() and the copy. The copy would read through it
 * into a file with the old file's mode (world-readable) beside the target: refused. */
static void test_swapped_for_symlink(void **state)
{
	struct fx *x = *state;
	const struct fileset_file f[2] = {{x->cert, "cert2\n", 6, 0644, false, 0, 0},
					  {x->key, "key2\n", 5, 0600, false, 0, 0}};
	char mine[PATH_MAX];
	int status = -1;
	pid_t pid;

	if (geteuid() != 0)
		skip(); /* only root can make files of two users */
	FMT(mine, "%s/ca.key", x->dir);
	put(mine, "secret\n");
	assert_int_equal(chown(mine, 65534, 65534), 0);
	assert_int_equal(chmod(mine, 0600), 0);
	assert_int_equal(chown(x->dir, 65534, 65534), 0);
	assert_int_equal(chmod(x->key, 0644), 0); /* root's: no link() for uid 65534 */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char err[1024];
		int bad = 0, rc;

		if (setgid(65534) != 0 || setuid(65534) != 0)
			_exit(10);
		swap_path = x->key;
		swap_to = mine;
		watch_dir = x->dir;
		secret = "secret\n";
		rc = fileset_write(f, 2, true, err, sizeof(err));
		if (leaked)
			bad |= 1;
		if (rc != -1 || strstr(err, "replaced meanwhile") == NULL) {
			fprintf(stderr, "fileset_write: %d %s\n", rc, err);
			bad |= 2;
		}
		_exit(bad);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* A rename that fails (not a crash) while publishing: taken back, nothing left. The first
 * rename is the journal's (nothing published yet), the second the chain's, the third the
 * key's. */
static void test_write_fails(void **state)
{
	struct fx *x = *state;
	const struct fileset_file f[2] = {{x->cert, "cert2\n", 6, 0644, false, 0, 0},
					  {x->key, "key2\n", 5, 0600, false, 0, 0}};
	char err[1024];
	struct stat sb;

	for (int at = 1; at <= 3; at++) {
		rename_arm(1u << at);
		assert_int_equal(fileset_write(f, 2, true, err, sizeof(err)), -1);
		rename_arm(0);
		assert_pair(x, "cert1\n", "key1\n");
		assert_int_equal(entries(x->dir), 3);
	}
	/* the chain's rename fails, and so does the journal's to undo: the change stays to be
	 * finished, and the next recovery finishes it forward (the new key is not lost) */
	rename_arm(1u << 2 | 1u << 3);
	assert_int_equal(fileset_write(f, 2, true, err, sizeof(err)), -1);
	rename_arm(0);
	assert_non_null(strstr(err, "finished at the next run"));
	assert_pair(x, "cert1\n", "key1\n");
	assert_int_equal(recover(x), 0);
	assert_pair(x, "cert2\n", "key2\n");
	assert_int_equal(entries(x->dir), 3);
	/* the key's rename fails, and putting the old chain back too: a mismatch on disk with
	 * the undo journal, which the next recovery completes (the old pair) */
	put(x->cert, "cert1\n");
	put(x->key, "key1\n");
	rename_arm(1u << 3 | 1u << 5);
	assert_int_equal(fileset_write(f, 2, true, err, sizeof(err)), -1);
	rename_arm(0);
	assert_non_null(strstr(err, "taken back at the next run"));
	assert_pair(x, "cert2\n", "key1\n");
	assert_int_equal(recover(x), 0);
	assert_pair(x, "cert1\n", "key1\n");
	assert_int_equal(entries(x->dir), 3);
	/* and when nothing fails */
	assert_int_equal(fileset_write(f, 2, true, err, sizeof(err)), 0);
	assert_pair(x, "cert2\n", "key2\n");
	assert_int_equal(stat(x->key, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_int_equal(entries(x->dir), 3);
}

/* The parser of journals: what it takes, what it refuses. */
static void test_parse(void **state)
{
	static const struct {
		const char *text;
		int rc;
		size_t n;
	} cases[] = {
		{"mtls fileset 1\n0123456789ab - /a/b\n", 0, 1},
		{"mtls fileset 1\n0123456789ab abcdefabcdef /a/b\n0123456789ab - /c\n", 0, 2},
		{"mtls fileset 1\n", -1, 0},			  /* no file */
		{"mtls fileset 2\n0123456789ab - /a/b\n", -1, 0}, /* version */
		{"mtls fileset 1\n0123456789ab - /a/b", -1, 0},	  /* cut short */
		{"mtls fileset 1\n0123456789AB - /a/b\n", -1, 0}, /* upper case */
		{"mtls fileset 1\n0123456789ab - a/b\n", -1, 0},  /* relative */
		{"mtls fileset 1\n0123456789ab - /a/\n", -1, 0},  /* a directory */
		{"mtls fileset 1\n0123456789ab x /a/b\n", -1, 0}, /* bad backup id */
		{"mtls fileset 1\n0123456789a - /a/b\n", -1, 0},  /* short id */
		{"mtls fileset 1\n0123456789ab -/a/b\n", -1, 0},  /* no blank */
		{"mtls fileset 1\n0123456789ab - \n", -1, 0},	  /* no path */
		{"", -1, 0},
	};
	struct fileset_journal *j = malloc(sizeof(*j));
	char err[256];

	(void)state;
	assert_non_null(j);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc = fileset_journal_parse(cases[i].text, strlen(cases[i].text), j, err,
					       sizeof(err));

		if (rc != cases[i].rc)
			fail_msg("case %zu: %d, not %d (%s)", i, rc, cases[i].rc, err);
		if (rc == 0)
			assert_int_equal(j->n, cases[i].n);
	}
	assert_int_equal(fileset_journal_parse("mtls fileset 1\n0123456789ab - /a\0b\n", 33, j, err,
					       sizeof(err)),
			 -1);
	free(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_before_journal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_journal_nothing_renamed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_between_renames, setup, teardown),
		cmocka_unit_test_setup_teardown(test_after_renames, setup, teardown),
		cmocka_unit_test_setup_teardown(test_undo_cut_short, setup, teardown),
		cmocka_unit_test_setup_teardown(test_two_dirs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stale, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damaged_journal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_foreign_journal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_files_of_another_user, setup, teardown),
		cmocka_unit_test_setup_teardown(test_symlink_of_another_user, setup, teardown),
		cmocka_unit_test_setup_teardown(test_swapped_for_symlink, setup, teardown),
		cmocka_unit_test(test_parse),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
