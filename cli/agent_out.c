/*
 * The agent's copies of its files for a service (agent_out.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "agent_out.h"
#include "files.h"
#include "fileset.h"

/* A user or group as a name or a number: 0, or -1. */
static int lookup_user(const char *s, uid_t *uid, gid_t *gid)
{
	struct passwd pw, *res = NULL;
	char buf[4096], *end;
	unsigned long v;

	if (getpwnam_r(s, &pw, buf, sizeof(buf), &res) == 0 && res != NULL) {
		*uid = res->pw_uid;
		*gid = res->pw_gid;
		return 0;
	}
	errno = 0;
	v = strtoul(s, &end, 10);
	if (s[0] < '0' || s[0] > '9' || *end != '\0' || errno != 0 || v >= (unsigned long)INT_MAX)
		return -1;
	*uid = (uid_t)v;
	if (getpwuid_r(*uid, &pw, buf, sizeof(buf), &res) == 0 && res != NULL)
		*gid = res->pw_gid;
	return 0;
}

static int lookup_group(const char *s, gid_t *gid)
{
	struct group gr, *res = NULL;
	char buf[16384], *end;
	unsigned long v;

	if (getgrnam_r(s, &gr, buf, sizeof(buf), &res) == 0 && res != NULL) {
		*gid = res->gr_gid;
		return 0;
	}
	errno = 0;
	v = strtoul(s, &end, 10);
	if (s[0] < '0' || s[0] > '9' || *end != '\0' || errno != 0 || v >= (unsigned long)INT_MAX)
		return -1;
	*gid = (gid_t)v;
	return 0;
}

int agent_out_owner_parse(const char *spec, uid_t *uid, gid_t *gid, char *err, size_t err_len)
{
	char user[256];
	const char *colon = strchr(spec, ':');
	size_t ul = colon != NULL ? (size_t)(colon - spec) : strlen(spec);

	*uid = (uid_t)-1;
	*gid = (gid_t)-1;
	if (ul >= sizeof(user) || (ul == 0 && (colon == NULL || colon[1] == '\0'))) {
		snprintf(err, err_len, "--owner '%.100s': give USER, USER:GROUP or :GROUP", spec);
		return -1;
	}
	memcpy(user, spec, ul);
	user[ul] = '\0';
	if (ul > 0 && lookup_user(user, uid, gid) != 0) {
		snprintf(err, err_len, "--owner: no user '%.100s' on this system", user);
		return -1;
	}
	if (colon != NULL && colon[1] != '\0' && lookup_group(colon + 1, gid) != 0) {
		snprintf(err, err_len, "--owner: no group '%.100s' on this system", colon + 1);
		return -1;
	}
	return 0;
}

int agent_out_check(const struct agent_out *o, uid_t uid, gid_t gid, char *err, size_t err_len)
{
	char buf[PATH_MAX];
	const char *dir;
	struct stat sb;

	if (snprintf(buf, sizeof(buf), "%s", o->path) >= (int)sizeof(buf) ||
	    strlen(o->path) + FILES_TMP_SUFFIX >= PATH_MAX) {
		snprintf(err, err_len, "%s: path too long", o->what);
		return -1;
	}
	if (o->path[0] == '\0' || o->path[strlen(o->path) - 1] == '/') {
		snprintf(err, err_len, "%s '%s': give a file name", o->what, o->path);
		return -1;
	}
	dir = dirname(buf);
	if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
		snprintf(err, err_len, "%s %s: the directory %s does not exist; create it first",
			 o->what, o->path, dir);
		return -1;
	}
	if (sb.st_mode & 022) {
		snprintf(err, err_len,
			 "%s %s: the directory %s is writable by group or others (mode %04o); the "
			 "agent writes certificates and keys only where their owner alone can "
			 "write",
			 o->what, o->path, dir, (unsigned)(sb.st_mode & 07777));
		return -1;
	}
	if (lstat(o->path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
		snprintf(err, err_len, "%s %s is a directory; give a file name", o->what, o->path);
		return -1;
	}
	if (geteuid() != 0 && ((uid != (uid_t)-1 && uid != geteuid()))) {
		snprintf(err, err_len,
			 "--owner: only root may give files to another user; run the agent as root "
			 "or as that user");
		return -1;
	}
	(void)gid; /* a group we may not give is told by the first write */
	return 0;
}

/* Does path already hold data with that owner and mode? */
static bool same(const char *path, const void *data, size_t len, uid_t uid, gid_t gid, mode_t mode)
{
	struct stat sb;
	unsigned char buf[8192];
	size_t off = 0;
	bool eq = false;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);

	if (fd < 0)
		return false;
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || (sb.st_mode & 07777) != mode ||
	    (uid != (uid_t)-1 && sb.st_uid != uid) || (gid != (gid_t)-1 && sb.st_gid != gid) ||
	    (size_t)sb.st_size != len)
		goto out;
	while (off < len) {
		size_t want = len - off < sizeof(buf) ? len - off : sizeof(buf);
		ssize_t n = read(fd, buf, want);

		if (n <= 0 || memcmp(buf, (const unsigned char *)data + off, (size_t)n) != 0)
			goto out;
		off += (size_t)n;
	}
	eq = true;
out:
	OPENSSL_cleanse(buf, sizeof(buf));
	close(fd);
	return eq;
}

struct dir_lock {
	int fd;
	dev_t dev;
	ino_t ino;
};

static int dir_lock_cmp(const void *a, const void *b)
{
	const struct dir_lock *x = a, *y = b;

	if (x->dev != y->dev)
		return x->dev < y->dev ? -1 : 1;
	return x->ino < y->ino ? -1 : x->ino > y->ino;
}

/* Lock (flock, waiting) the directory of every copy once, in the order of their device and
 * inode numbers (two agents never wait for each other in a circle): recovery finishes the
 * journals of all of them, and a change under way in one (another writer's, under its lock)
 * must not be finished or removed beside it. The number of descriptors in l, or -1. */
static int lock_dirs(const struct agent_out *o, size_t n, struct dir_lock *l, char *err,
		     size_t err_len)
{
	size_t nl = 0;

	for (size_t i = 0; i < n; i++) {
		char dir[PATH_MAX];
		struct stat sb;
		bool seen = false;
		int fd;

		snprintf(dir, sizeof(dir), "%s", o[i].path);
		fd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0 || fstat(fd, &sb) != 0) {
			snprintf(err, err_len, "%s %s: cannot open its directory: %s", o[i].what,
				 o[i].path, strerror(errno));
			if (fd >= 0)
				close(fd);
			goto fail;
		}
		for (size_t k = 0; k < nl && !seen; k++)
			seen = l[k].dev == sb.st_dev && l[k].ino == sb.st_ino;
		if (seen) {
			close(fd);
			continue;
		}
		l[nl++] = (struct dir_lock){fd, sb.st_dev, sb.st_ino};
	}
	qsort(l, nl, sizeof(*l), dir_lock_cmp);
	for (size_t k = 0; k < nl; k++)
		while (flock(l[k].fd, LOCK_EX) != 0) {
			if (errno == EINTR)
				continue;
			snprintf(err, err_len, "%s %s: cannot lock its directory: %s", o[0].what,
				 o[0].path, strerror(errno));
			goto fail;
		}
	return (int)nl;
fail:
	for (size_t k = 0; k < nl; k++)
		close(l[k].fd);
	return -1;
}

int agent_out_write_set(const struct agent_out *o, const void *const *data, const size_t *len,
			size_t n, uid_t uid, gid_t gid, bool *changed, char *err, size_t err_len)
{
	struct fileset_file fs[FILESET_MAX];
	struct dir_lock locks[FILESET_MAX];
	const char *paths[FILESET_MAX];
	char why[2048];
	bool any = false;
	int nlocks, rc = -1;

	if (n == 0 || n > FILESET_MAX)
		return snprintf(err, err_len, "internal error: %zu copies", n), -1;
	for (size_t i = 0; i < n; i++) {
		changed[i] = false;
		paths[i] = o[i].path;
	}
	/* the directories of all copies are locked: one writer at a time in each */
	if ((nlocks = lock_dirs(o, n, locks, err, err_len)) < 0)
		return -1;
	/* copies that a crash left half written are finished (or taken back) first */
	if (fileset_recover(paths, n, why, sizeof(why)) != 0) {
		snprintf(err, err_len, "%s %s: %s", o[0].what, o[0].path, why);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		changed[i] = !same(o[i].path, data[i], len[i], uid, gid, o[i].mode);
		any = any || changed[i];
		fs[i] = (struct fileset_file){o[i].path, data[i], len[i], o[i].mode,
					      true,	 uid,	  gid};
	}
	if (any && fileset_write(fs, n, true, why, sizeof(why)) != 0) {
		for (size_t i = 0; i < n; i++)
			changed[i] = false;
		snprintf(err, err_len, "%s %s: %s", o[0].what, o[0].path, why);
		goto out;
	}
	rc = 0;
out:
	for (int k = 0; k < nlocks; k++)
		close(locks[k].fd);
	return rc;
}

int agent_out_write(const struct agent_out *o, const void *data, size_t len, uid_t uid, gid_t gid,
		    bool *changed, char *err, size_t err_len)
{
	return agent_out_write_set(o, &data, &len, 1, uid, gid, changed, err, err_len);
}
