/*
 * Several files replaced as one change, crash-safe through a journal (fileset.h).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "files.h"
#include "fileset.h"

#define JOURNAL_HEAD "mtls fileset 1\n"
#define JOURNAL_MAX  (FILESET_MAX * (PATH_MAX + 32) + 64)
#define ID_LEN	     12

static int io_fail(char *err, size_t len, const char *what, const char *path, int e)
{
	if (e == ENOSPC)
		snprintf(err, len, "%s %s: disk full; free space and run the command again", what,
			 path);
	else if (e == EDQUOT)
		snprintf(err, len, "%s %s: disk quota exceeded; free space and run again", what,
			 path);
	else
		snprintf(err, len, "%s %s: %s", what, path, strerror(e));
	errno = e;
	return -1;
}

/* The directory of path (as dirname(), into out). */
static void dir_of(const char *path, char out[PATH_MAX])
{
	char buf[PATH_MAX];

	snprintf(buf, sizeof(buf), "%s", path);
	snprintf(out, PATH_MAX, "%s", dirname(buf));
}

/* path with its directory resolved (realpath), so that a journal names the files whatever
 * the working directory of the process that finishes it. 0, or -1. */
static int abs_path(const char *path, char out[PATH_MAX], char *err, size_t err_len)
{
	char d[PATH_MAX], b[PATH_MAX], r[PATH_MAX];
	const char *base;

	if (strlen(path) >= PATH_MAX - ID_LEN - 8 || strchr(path, '\n') != NULL)
		return snprintf(err, err_len, "unusable file name: %.200s", path), -1;
	snprintf(b, sizeof(b), "%s", path);
	base = basename(b);
	dir_of(path, d);
	if (strcmp(base, "/") == 0 || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
		return snprintf(err, err_len, "%s: give a file name", path), -1;
	if (realpath(d, r) == NULL)
		return io_fail(err, err_len, "cannot find the directory of", path, errno);
	if (snprintf(out, PATH_MAX, "%s/%s", strcmp(r, "/") == 0 ? "" : r, base) >=
		    PATH_MAX - ID_LEN - 8 ||
	    strchr(out, '\n') != NULL)
		return snprintf(err, err_len, "unusable file name: %.200s", path), -1;
	return 0;
}

/* PATH.KIND-ID */
static void side_name(char out[PATH_MAX], const char *path, const char *kind, const char *id)
{
	snprintf(out, PATH_MAX, "%s.%s-%s", path, kind, id);
}

static int new_id(char id[ID_LEN + 1])
{
	unsigned char r[ID_LEN / 2];

	if (RAND_bytes(r, sizeof(r)) != 1)
		return -1;
	for (size_t i = 0; i < sizeof(r); i++)
		snprintf(id + 2 * i, 3, "%02x", r[i]);
	return 0;
}

static int sync_dir_fd(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc;

	if (fd < 0)
		return -1;
	rc = fsync(fd);
	close(fd);
	return rc;
}

/* fsync each directory of the journal's files once, and dir too (if not NULL). */
static int sync_dirs(const struct fileset_journal *j, const char *dir)
{
	char dirs[FILESET_MAX + 1][PATH_MAX];
	size_t nd = 0;
	int rc = 0;

	for (size_t i = 0; i <= j->n; i++) {
		bool seen = false;

		if (i == j->n) {
			if (dir == NULL)
				break;
			snprintf(dirs[nd], PATH_MAX, "%s", dir);
		} else {
			dir_of(j->e[i].path, dirs[nd]);
		}
		for (size_t k = 0; k < nd && !seen; k++)
			seen = strcmp(dirs[k], dirs[nd]) == 0;
		if (!seen) {
			if (sync_dir_fd(dirs[nd]) != 0)
				rc = -1;
			nd++;
		}
	}
	return rc;
}

/* ---- the journal ---- */

static bool is_id(const char *s)
{
	for (int i = 0; i < ID_LEN; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

int fileset_journal_parse(const char *text, size_t len, struct fileset_journal *j, char *err,
			  size_t err_len)
{
	size_t off = sizeof(JOURNAL_HEAD) - 1;

	memset(j, 0, sizeof(*j));
	if (len > JOURNAL_MAX || len < off || memcmp(text, JOURNAL_HEAD, off) != 0)
		return snprintf(err, err_len, "not a journal of mtls (bad first line)"), -1;
	while (off < len) {
		const char *line = text + off, *nl = memchr(line, '\n', len - off);
		size_t ll, pl;

		if (nl == NULL)
			return snprintf(err, err_len, "line %zu is cut short", j->n + 2), -1;
		ll = (size_t)(nl - line);
		if (j->n == FILESET_MAX)
			return snprintf(err, err_len, "more than %d files", FILESET_MAX), -1;
		/* "<12 hex> <12 hex or -> /path" */
		if (ll < ID_LEN + 4 || !is_id(line) || line[ID_LEN] != ' ')
			return snprintf(err, err_len, "line %zu is damaged", j->n + 2), -1;
		memcpy(j->e[j->n].new_id, line, ID_LEN);
		line += ID_LEN + 1;
		ll -= ID_LEN + 1;
		if (line[0] == '-' && line[1] == ' ') {
			line += 2;
			ll -= 2;
		} else if (ll > ID_LEN + 1 && is_id(line) && line[ID_LEN] == ' ') {
			memcpy(j->e[j->n].old_id, line, ID_LEN);
			line += ID_LEN + 1;
			ll -= ID_LEN + 1;
		} else {
			return snprintf(err, err_len, "line %zu is damaged", j->n + 2), -1;
		}
		pl = ll;
		if (pl < 2 || pl >= PATH_MAX - ID_LEN - 8 || line[0] != '/' ||
		    memchr(line, '\0', pl) != NULL || line[pl - 1] == '/')
			return snprintf(err, err_len, "line %zu names no file", j->n + 2), -1;
		memcpy(j->e[j->n].path, line, pl);
		j->n++;
		off = (size_t)(nl - text) + 1;
	}
	if (j->n == 0)
		return snprintf(err, err_len, "it names no file"), -1;
	return 0;
}

static char *journal_text(const struct fileset_journal *j, size_t *len)
{
	size_t cap = sizeof(JOURNAL_HEAD), off;
	char *t;

	for (size_t i = 0; i < j->n; i++)
		cap += strlen(j->e[i].path) + 2 * ID_LEN + 4;
	if ((t = malloc(cap)) == NULL)
		return NULL;
	off = (size_t)snprintf(t, cap, "%s", JOURNAL_HEAD);
	for (size_t i = 0; i < j->n; i++)
		off += (size_t)snprintf(t + off, cap - off, "%s %s %s\n", j->e[i].new_id,
					j->e[i].old_id[0] != '\0' ? j->e[i].old_id : "-",
					j->e[i].path);
	*len = off;
	return t;
}

/* ---- the two ways a change ends ---- */

/* Give every file its new content (a .new- name already gone was published). */
static int forward(const struct fileset_journal *j, char *err, size_t err_len)
{
	char p[PATH_MAX];

	for (size_t i = 0; i < j->n; i++) {
		side_name(p, j->e[i].path, "new", j->e[i].new_id);
		if (rename(p, j->e[i].path) != 0 && errno != ENOENT)
			return io_fail(err, err_len, "cannot finish writing", j->e[i].path, errno);
	}
	return 0;
}

/* Give every file its old content back (a .old- name already gone was put back); a file
 * that did not exist is removed, if published (NULL: whatever is there). */
static int backward(const struct fileset_journal *j, const bool *published, char *err,
		    size_t err_len)
{
	char p[PATH_MAX];

	for (size_t i = 0; i < j->n; i++) {
		if (j->e[i].old_id[0] != '\0') {
			side_name(p, j->e[i].path, "old", j->e[i].old_id);
			if (rename(p, j->e[i].path) != 0 && errno != ENOENT)
				return io_fail(err, err_len, "cannot put back the old",
					       j->e[i].path, errno);
		} else if ((published == NULL || published[i]) && unlink(j->e[i].path) != 0 &&
			   errno != ENOENT) {
			return io_fail(err, err_len, "cannot remove the new", j->e[i].path, errno);
		}
	}
	return 0;
}

/* Remove the .new- and .old- names of the change (after its journal). */
static void remove_sides(const struct fileset_journal *j)
{
	char p[PATH_MAX];

	for (size_t i = 0; i < j->n; i++) {
		side_name(p, j->e[i].path, "new", j->e[i].new_id);
		unlink(p);
		if (j->e[i].old_id[0] != '\0') {
			side_name(p, j->e[i].path, "old", j->e[i].old_id);
			unlink(p);
		}
	}
}

/* The journal jpath (in dir) is done with: the files synced, then it goes, then the rest. */
static void close_journal(const struct fileset_journal *j, const char *dir, const char *jpath)
{
	sync_dirs(j, NULL);
	unlink(jpath);
	sync_dir_fd(dir);
	remove_sides(j);
}

/* ---- recovery ---- */

/* Read the journal jp, trusted only if this user wrote it: a regular file (not followed if a
 * symlink) owned by the effective uid and writable by nobody else. Recovery may run as root
 * (mtls agent) in a directory its service's user can write: a journal of that user's must not
 * make root rename or remove files anywhere. The text (caller frees), or NULL with why. */
static char *journal_read(const char *jp, size_t *len, char *why, size_t why_len)
{
	int fd = open(jp, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	struct stat sb;
	char *text = NULL;
	size_t off = 0;

	if (fd < 0)
		return snprintf(why, why_len, "%s", strerror(errno)), NULL;
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
		snprintf(why, why_len, "not a regular file");
		goto out;
	}
	if (sb.st_uid != geteuid() || (sb.st_mode & 022) != 0) {
		snprintf(why, why_len,
			 "owned by uid %u with mode %04o, not written by this user (uid %u): run "
			 "the command as the user who writes these files",
			 (unsigned)sb.st_uid, (unsigned)(sb.st_mode & 07777), (unsigned)geteuid());
		goto out;
	}
	if (sb.st_size > (off_t)JOURNAL_MAX) {
		snprintf(why, why_len, "too long");
		goto out;
	}
	if ((text = malloc((size_t)sb.st_size + 1)) == NULL) {
		snprintf(why, why_len, "out of memory");
		goto out;
	}
	while (off < (size_t)sb.st_size) {
		ssize_t n = read(fd, text + off, (size_t)sb.st_size - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			snprintf(why, why_len, "%s", n < 0 ? strerror(errno) : "cut short");
			free(text);
			text = NULL;
			goto out;
		}
		off += (size_t)n;
	}
	text[off] = '\0';
	*len = off;
out:
	if (fd >= 0)
		close(fd);
	return text;
}

/* Finish the journal in dir, if there is one: undone if it is FILESET_UNDO, else forward. */
static int recover_dir(const char *dir, char *err, size_t err_len)
{
	char jp[PATH_MAX + 32], why[512];
	struct fileset_journal *j = NULL;
	bool undo = true;
	char *text = NULL;
	size_t len = 0;
	int rc = -1;

	snprintf(jp, sizeof(jp), "%s/%s", dir, FILESET_UNDO);
	if (!files_exists(jp)) {
		undo = false;
		snprintf(jp, sizeof(jp), "%s/%s", dir, FILESET_JOURNAL);
		if (!files_exists(jp))
			return 0;
	}
	if ((j = malloc(sizeof(*j))) == NULL)
		return snprintf(err, err_len, "out of memory"), -1;
	if ((text = journal_read(jp, &len, why, sizeof(why))) == NULL) {
		snprintf(err, err_len,
			 "a change of files was cut short and its journal %s cannot be used (%s); "
			 "check by hand that the key and certificate files named there match, "
			 "then remove it",
			 jp, why);
		goto out;
	}
	if (fileset_journal_parse(text, len, j, why, sizeof(why)) != 0) {
		snprintf(
			err, err_len,
			"a change of files was cut short and its journal %s is damaged (%s); check "
			"by hand that the key and certificate files match, then remove it",
			jp, why);
		goto out;
	}
	if ((undo ? backward(j, NULL, why, sizeof(why)) : forward(j, why, sizeof(why))) != 0) {
		snprintf(err, err_len, "cannot finish a change of files cut short (journal %s): %s",
			 jp, why);
		goto out;
	}
	close_journal(j, dir, jp);
	rc = 0;
out:
	free(text);
	free(j);
	return rc;
}

/* Is name BASE.new-<12 hex> or BASE.old-<12 hex>? */
static bool side_of(const char *name, const char *base)
{
	size_t bl = strlen(base);

	return strlen(name) == bl + 5 + ID_LEN && strncmp(name, base, bl) == 0 &&
	       (strncmp(name + bl, ".new-", 5) == 0 || strncmp(name + bl, ".old-", 5) == 0) &&
	       is_id(name + bl + 5);
}

static void remove_stale(const char *path)
{
	static const char *const journals[] = {FILESET_JOURNAL, FILESET_UNDO};
	char d[PATH_MAX], b[PATH_MAX], p[PATH_MAX];
	const char *base;
	DIR *dh;
	struct dirent *e;

	snprintf(b, sizeof(b), "%s", path);
	base = basename(b);
	dir_of(path, d);
	files_remove_temporaries_of(d, journals, 2);
	if ((dh = opendir(d)) == NULL)
		return;
	while ((e = readdir(dh)) != NULL)
		if (side_of(e->d_name, base) &&
		    snprintf(p, sizeof(p), "%s/%s", d, e->d_name) < (int)sizeof(p))
			unlink(p);
	closedir(dh);
}

int fileset_recover(const char *const *paths, size_t n, char *err, size_t err_len)
{
	char dirs[FILESET_MAX][PATH_MAX];
	size_t nd = 0;

	if (n > FILESET_MAX)
		return snprintf(err, err_len, "internal error: %zu files in one change", n), -1;
	for (size_t i = 0; i < n; i++) {
		bool seen = false;

		dir_of(paths[i], dirs[nd]);
		for (size_t k = 0; k < nd && !seen; k++)
			seen = strcmp(dirs[k], dirs[nd]) == 0;
		if (seen)
			continue;
		if (recover_dir(dirs[nd], err, err_len) != 0)
			return -1;
		nd++;
	}
	for (size_t i = 0; i < n; i++)
		remove_stale(paths[i]);
	return 0;
}

/* ---- writing ---- */

/* The content of f at path.KIND-id: created 0600 (O_EXCL, O_NOFOLLOW), owner and mode set on
 * the descriptor, written, synced. */
static int stage(const struct fileset_file *f, const char *path, const char *kind, const char *id,
		 char *err, size_t err_len)
{
	const unsigned char *p = f->data;
	size_t left = f->len;
	char tmp[PATH_MAX];
	int fd, e;

	side_name(tmp, path, kind, id);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return io_fail(err, err_len, "cannot create a file beside", f->path, errno);
	if (f->own && (f->uid != (uid_t)-1 || f->gid != (gid_t)-1) &&
	    fchown(fd, f->uid, f->gid) != 0) {
		e = errno;
		snprintf(err, err_len, "%s: cannot give it to its owner: %s", f->path, strerror(e));
		goto fail;
	}
	if (fchmod(fd, f->mode) != 0) {
		e = errno;
		snprintf(err, err_len, "%s: cannot set its mode: %s", f->path, strerror(e));
		goto fail;
	}
	while (left > 0) {
		ssize_t n = write(fd, p, left);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			io_fail(err, err_len, "cannot write", f->path, n < 0 ? errno : EIO);
			goto fail;
		}
		p += n;
		left -= (size_t)n;
	}
	if (fsync(fd) != 0) {
		io_fail(err, err_len, "cannot write", f->path, errno);
		goto fail;
	}
	e = close(fd);
	fd = -1;
	if (e != 0) {
		io_fail(err, err_len, "cannot write", f->path, errno);
		goto fail;
	}
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return -1;
}

/* The content of path, which must still be the regular file lstat() gave sb: not a symlink or
 * a FIFO put in its place since (the directory may be another user's, who could make the
 * copy below read a file of ours, the CA's key, into a file of theirs). The text (caller
 * wipes and frees), or NULL with why. */
static char *read_same(const char *path, const struct stat *sb, size_t *len, char *why,
		       size_t why_len)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	struct stat now;
	char *text = NULL;
	size_t off = 0;

	if (fd < 0 && errno != ELOOP)
		return snprintf(why, why_len, "%s", strerror(errno)), NULL;
	if (fd < 0 || fstat(fd, &now) != 0 || !S_ISREG(now.st_mode) || now.st_dev != sb->st_dev ||
	    now.st_ino != sb->st_ino) {
		snprintf(why, why_len, "it was replaced meanwhile (by another user?); try again");
		goto out;
	}
	if (now.st_size > (off_t)(16 * 1024 * 1024) ||
	    (text = malloc((size_t)now.st_size + 1)) == NULL) {
		snprintf(why, why_len, "too long");
		goto out;
	}
	while (off < (size_t)now.st_size) {
		ssize_t n = read(fd, text + off, (size_t)now.st_size - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			snprintf(why, why_len, "%s", n < 0 ? strerror(errno) : "it shrank");
			OPENSSL_cleanse(text, off);
			free(text);
			text = NULL;
			goto out;
		}
		off += (size_t)n;
	}
	*len = off;
out:
	close(fd);
	return text;
}

/* The old content of path (lstat() gave sb) under its second name path.old-id: the name itself
 * (link(), a symlink too: flags 0, never followed), or a copy where link() is not allowed
 * (protected_hardlinks: a daemon running as --user replacing files root owns in its
 * directory, a key root:GROUP 0640). 0, or -1 with the message. */
static int keep_old(const struct fileset_file *f, const char *path, const struct stat *sb,
		    const char *id, char *err, size_t err_len)
{
	char old[PATH_MAX], target[PATH_MAX], why[512];
	struct fileset_file copy = {f->path, NULL, 0, sb->st_mode & 0777, false, 0, 0};
	char *data;
	ssize_t tl;
	int rc;

	side_name(old, path, "old", id);
	if (linkat(AT_FDCWD, path, AT_FDCWD, old, 0) == 0)
		return 0;
	if (errno != EPERM)
		return io_fail(err, err_len, "cannot keep the old content of", f->path, errno);
	if (S_ISLNK(sb->st_mode)) {
		if ((tl = readlink(path, target, sizeof(target) - 1)) < 0)
			return io_fail(err, err_len, "cannot keep the old content of", f->path,
				       errno);
		target[tl] = '\0';
		if (symlink(target, old) != 0)
			return io_fail(err, err_len, "cannot keep the old content of", f->path,
				       errno);
		return 0;
	}
	/* the copy is this user's, in its group: that group gets no more than others had */
	if (sb->st_gid != getegid())
		copy.mode = (copy.mode & ~(mode_t)070) | ((copy.mode & 07) << 3);
	if ((data = read_same(path, sb, &copy.len, why, sizeof(why))) == NULL)
		return snprintf(err, err_len, "cannot keep the old content of %s: %s", f->path,
				why),
		       -1;
	copy.data = data;
	rc = stage(&copy, path, "old", id, err, err_len);
	OPENSSL_cleanse(data, copy.len);
	free(data);
	return rc;
}

int fileset_write(const struct fileset_file *f, size_t n, bool replace, char *err, size_t err_len)
{
	const char *paths[FILESET_MAX];
	struct fileset_journal *j = NULL;
	bool published[FILESET_MAX] = {false};
	char jdir[PATH_MAX], jp[PATH_MAX + 32], up[PATH_MAX + 32], p[PATH_MAX], why[512],
		*text = NULL;
	size_t i, staged = 0, tlen = 0;
	int rc = -1;

	if (n == 0 || n > FILESET_MAX)
		return snprintf(err, err_len, "internal error: %zu files in one change", n), -1;
	for (i = 0; i < n; i++)
		paths[i] = f[i].path;
	if (fileset_recover(paths, n, err, err_len) != 0)
		return -1;
	if ((j = calloc(1, sizeof(*j))) == NULL)
		return snprintf(err, err_len, "out of memory"), -1;
	j->n = n;
	for (i = 0; i < n; i++) {
		if (abs_path(f[i].path, j->e[i].path, err, err_len) != 0)
			goto out;
		if (new_id(j->e[i].new_id) != 0) {
			snprintf(err, err_len, "cannot pick a temporary name for %s", f[i].path);
			goto out;
		}
	}
	dir_of(j->e[0].path, jdir);
	snprintf(jp, sizeof(jp), "%s/%s", jdir, FILESET_JOURNAL);
	snprintf(up, sizeof(up), "%s/%s", jdir, FILESET_UNDO);
	/* 1. the new files beside their targets, the old ones under a second name */
	for (i = 0; i < n; i++) {
		struct stat sb;

		if (stage(&f[i], j->e[i].path, "new", j->e[i].new_id, err, err_len) != 0)
			goto discard;
		staged = i + 1;
		if (lstat(j->e[i].path, &sb) != 0)
			continue;
		if (!replace) {
			snprintf(err, err_len, "cannot create %s: it exists", f[i].path);
			goto discard;
		}
		if (!S_ISREG(sb.st_mode) && !S_ISLNK(sb.st_mode)) {
			snprintf(err, err_len, "cannot replace %s: not a regular file", f[i].path);
			goto discard;
		}
		if (new_id(j->e[i].old_id) != 0) {
			snprintf(err, err_len, "cannot pick a temporary name for %s", f[i].path);
			goto discard;
		}
		if (keep_old(&f[i], j->e[i].path, &sb, j->e[i].old_id, err, err_len) != 0) {
			j->e[i].old_id[0] = '\0';
			goto discard;
		}
	}
	if (sync_dirs(j, NULL) != 0) {
		io_fail(err, err_len, "cannot sync the directory of", f[0].path, errno);
		goto discard;
	}
	/* 2. the journal: from here on the change is made */
	if ((text = journal_text(j, &tlen)) == NULL) {
		snprintf(err, err_len, "out of memory");
		goto discard;
	}
	if (files_write(jp, text, tlen, 0600, false, why, sizeof(why)) != 0) {
		snprintf(err, err_len, "cannot begin replacing %s: %s", f[0].path, why);
		goto discard;
	}
	/* 3. the new files take their names */
	for (i = 0; i < n; i++) {
		side_name(p, j->e[i].path, "new", j->e[i].new_id);
		if ((replace ? rename(p, j->e[i].path) : link(p, j->e[i].path)) != 0) {
			io_fail(err, err_len, replace ? "cannot replace" : "cannot create",
				f[i].path, errno);
			goto undo;
		}
		published[i] = true;
	}
	close_journal(j, jdir, jp);
	rc = 0;
	goto out;
undo:
	/* a crash from here on goes on undoing */
	if (rename(jp, up) != 0) {
		size_t l = strlen(err);

		snprintf(err + l, err_len - l,
			 "; the change is half made and is finished at the next run (journal %s)",
			 jp);
		goto out;
	}
	sync_dir_fd(jdir);
	if (backward(j, published, why, sizeof(why)) != 0) {
		size_t l = strlen(err);

		snprintf(err + l, err_len - l,
			 "; and taking it back failed (%s): it is taken back at the next run "
			 "(journal %s)",
			 why, up);
		goto out;
	}
	close_journal(j, jdir, up);
	goto out;
discard:
	for (i = 0; i < staged; i++) {
		side_name(p, j->e[i].path, "new", j->e[i].new_id);
		unlink(p);
		if (j->e[i].old_id[0] != '\0') {
			side_name(p, j->e[i].path, "old", j->e[i].old_id);
			unlink(p);
		}
	}
out:
	free(text);
	free(j);
	return rc;
}
