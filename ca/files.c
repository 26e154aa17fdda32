/*
 * Safe file writing for keys, certificates and CRLs.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "files.h"
#include "readfile.h"

#define READ_MAX (16u * 1024 * 1024)

/* The message, and errno left at e for callers that tell a full disk from other failures. */
static int fail(char *err, size_t len, const char *what, const char *path, int e)
{
	char buf[PATH_MAX];

	/* "No space left on device" names no device: say which directory to make room in; a
	 * quota is not a full disk (df shows room there) */
	snprintf(buf, sizeof(buf), "%s", path);
	if (e == ENOSPC) {
		snprintf(err, len,
			 "%s %s: disk full (no space left in %s); free space and run the command "
			 "again",
			 what, path, dirname(buf));
	} else if (e == EDQUOT) {
		snprintf(err, len,
			 "%s %s: disk quota exceeded (in %s); free space within the quota or have "
			 "it raised, and run the command again",
			 what, path, dirname(buf));
	} else {
		snprintf(err, len, "%s %s: %s", what, path, strerror(e));
	}
	errno = e;
	return -1;
}

bool files_exists(const char *path)
{
	struct stat sb;

	return lstat(path, &sb) == 0;
}

/* mkdir with mode 0700 whatever the umask (which could leave us a directory we cannot
 * write); EEXIST is left to the caller. */
static int mkdir_0700(const char *path)
{
	if (mkdir(path, 0700) != 0)
		return -1;
	return chmod(path, 0700);
}

int files_mkdir_parents(const char *path, char *err, size_t err_len)
{
	char buf[PATH_MAX];

	if (strlen(path) >= sizeof(buf)) {
		snprintf(err, err_len, "path too long: %s", path);
		return -1;
	}
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir_0700(buf) != 0 && errno != EEXIST)
			return fail(err, err_len, "cannot create directory", buf, errno);
		*p = '/';
	}
	return 0;
}

int files_remove_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	int rc = 0;

	if (d == NULL)
		return errno == ENOENT ? 0 : -1;
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
		    unlinkat(dirfd(d), e->d_name, 0) != 0)
			rc = -1;
	closedir(d);
	if (rmdir(path) != 0)
		rc = -1;
	return rc;
}

int files_mkdir_private(const char *path, char *err, size_t err_len)
{
	const char *buf = path;
	struct stat sb;

	if (files_mkdir_parents(path, err, err_len) != 0)
		return -1;
	if (mkdir_0700(buf) != 0 && errno != EEXIST)
		return fail(err, err_len, "cannot create directory", buf, errno);
	if (lstat(buf, &sb) != 0)
		return fail(err, err_len, "cannot inspect directory", buf, errno);
	if (!S_ISDIR(sb.st_mode)) {
		snprintf(err, err_len, "%s is not a directory", buf);
		return -1;
	}
	if (sb.st_mode & 022) {
		snprintf(err, err_len,
			 "directory %s is writable by group or others (mode %04o); run "
			 "'chmod 700 %s'",
			 buf, (unsigned)(sb.st_mode & 07777), buf);
		return -1;
	}
	return 0;
}

int files_sync_dir(const char *path)
{
	char dirbuf[PATH_MAX];
	int dfd, rc;

	snprintf(dirbuf, sizeof(dirbuf), "%s", path);
	dfd = open(dirname(dirbuf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -1;
	rc = fsync(dfd);
	close(dfd);
	return rc;
}

/* Create f->tmp, PATH.tmp-<12 hex>, with mode (whatever the umask): a descriptor, or -1 with
 * the message and f->tmp "". */
static int create_temporary(struct files_staged *f, const char *path, mode_t mode, char *err,
			    size_t err_len)
{
	unsigned char rnd[6];
	int fd, e;

	f->tmp[0] = '\0';
	if (snprintf(f->path, sizeof(f->path), "%s", path) >= (int)sizeof(f->path) ||
	    strlen(path) + FILES_TMP_SUFFIX >= sizeof(f->tmp)) {
		snprintf(err, err_len, "path too long: %s", path);
		errno = ENAMETOOLONG;
		return -1;
	}
	if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
		snprintf(err, err_len, "cannot pick a temporary name for %s", path);
		errno = EIO;
		return -1;
	}
	snprintf(f->tmp, sizeof(f->tmp), "%s.tmp-%02x%02x%02x%02x%02x%02x", path, rnd[0], rnd[1],
		 rnd[2], rnd[3], rnd[4], rnd[5]);
	fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0) {
		e = errno;
		f->tmp[0] = '\0';
		return fail(err, err_len, "cannot create a file in the directory of", path, e);
	}
	/* the umask may have taken bits we want, never added any */
	if (fchmod(fd, mode) != 0) {
		e = errno;
		close(fd);
		files_discard(f);
		return fail(err, err_len, "cannot write", path, e);
	}
	return fd;
}

int files_stage(struct files_staged *f, const char *path, const void *data, size_t len, mode_t mode,
		char *err, size_t err_len)
{
	const unsigned char *p = data;
	size_t left = len;
	int fd = create_temporary(f, path, mode, err, err_len), e;

	if (fd < 0)
		return -1;
	while (left > 0) {
		ssize_t n = write(fd, p, left);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			goto write_failed;
		p += n;
		left -= (size_t)n;
	}
	if (fsync(fd) != 0)
		goto write_failed;
	if (close(fd) != 0) {
		e = errno;
		files_discard(f);
		return fail(err, err_len, "cannot write", path, e);
	}
	return 0;
write_failed:
	e = errno != 0 ? errno : EIO;
	close(fd);
	files_discard(f);
	return fail(err, err_len, "cannot write", path, e);
}

int files_reserve(struct files_staged *f, const char *path, off_t len, char *err, size_t err_len)
{
	int fd = create_temporary(f, path, 0600, err, err_len), e;

	if (fd < 0)
		return -1;
	e = posix_fallocate(fd, 0, len);
	close(fd);
	if (e == 0)
		return 0;
	files_discard(f);
	return fail(err, err_len, "cannot reserve disk space with", path, e);
}

int files_publish(struct files_staged *f, bool no_replace, char *err, size_t err_len)
{
	int e;

	if (no_replace) {
		/* link() fails if path exists: no window where another file is replaced */
		if (link(f->tmp, f->path) != 0) {
			e = errno;
			return fail(err, err_len, "cannot create", f->path, e);
		}
		unlink(f->tmp);
	} else if (rename(f->tmp, f->path) != 0) {
		e = errno;
		return fail(err, err_len, "cannot write", f->path, e);
	}
	f->tmp[0] = '\0';
	return 0;
}

void files_discard(struct files_staged *f)
{
	if (f->tmp[0] != '\0')
		unlink(f->tmp);
	f->tmp[0] = '\0';
}

int files_write(const char *path, const void *data, size_t len, mode_t mode, bool no_replace,
		char *err, size_t err_len)
{
	struct files_staged f;

	if (no_replace && files_exists(path)) {
		snprintf(err, err_len, "%s already exists; remove it or choose another name", path);
		errno = EEXIST;
		return -1;
	}
	if (files_stage(&f, path, data, len, mode, err, err_len) != 0)
		return -1;
	if (files_publish(&f, no_replace, err, err_len) != 0) {
		int e = errno;

		files_discard(&f);
		errno = e;
		return -1;
	}
	files_sync_dir(path);
	return 0;
}

int files_lock_dir(const char *dir, char *err, size_t err_len)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0 || flock(fd, LOCK_EX) != 0) {
		int e = errno;

		if (fd >= 0)
			close(fd);
		return fail(err, err_len, "cannot lock directory", dir, e);
	}
	return fd;
}

/* Is name NAME.tmp-<12 lower-case hex digits> (what files_stage() makes)? The length of
 * NAME, or 0. */
static size_t temporary_of(const char *name)
{
	const char *t = strstr(name, ".tmp-");

	while (t != NULL && strstr(t + 1, ".tmp-") != NULL)
		t = strstr(t + 1, ".tmp-");
	if (t == NULL || t == name || strlen(t + 5) != 12 ||
	    strspn(t + 5, "0123456789abcdef") != 12)
		return 0;
	return (size_t)(t - name);
}

/* Remove NAME.tmp-<12 hex> (what files_stage() leaves) in dir: for the n names given, or
 * for any name when names is NULL. */
static int remove_temporaries(const char *dir, const char *const *names, size_t n)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int removed = 0;

	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL) {
		size_t len = temporary_of(e->d_name);
		bool match = len > 0 && names == NULL;

		for (size_t i = 0; len > 0 && names != NULL && i < n && !match; i++)
			match = strlen(names[i]) == len && strncmp(e->d_name, names[i], len) == 0;
		if (match && unlinkat(dirfd(d), e->d_name, 0) == 0)
			removed++;
	}
	closedir(d);
	return removed;
}

int files_remove_temporaries_of(const char *dir, const char *const *names, size_t n)
{
	return remove_temporaries(dir, names, n);
}

int files_remove_temporaries(const char *dir)
{
	return remove_temporaries(dir, NULL, 0);
}

char *files_read(const char *path, size_t *len, char *err, size_t err_len)
{
	uint8_t *data;
	size_t n;
	int e = readfile(path, READ_MAX, &data, &n, NULL);

	if (e == EINVAL || e == EFBIG) {
		snprintf(err, err_len, "%s is not a regular file of at most 16 MiB", path);
		return NULL;
	}
	if (e != 0) {
		fail(err, err_len, "cannot read", path, e);
		return NULL;
	}
	if (len != NULL)
		*len = n;
	return (char *)data;
}
