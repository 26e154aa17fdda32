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
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "agent_out.h"
#include "files.h"

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

/* A new temporary file beside the target (the name files_stage() gives, so that
 * files_remove_temporaries_of() knows it), its owner and mode set on the descriptor before
 * anything is written, then the data, fsynced. */
static int stage_owned(struct files_staged *f, const struct agent_out *o, const void *data,
		       size_t len, uid_t uid, gid_t gid, char *err, size_t err_len)
{
	const unsigned char *p = data;
	unsigned char rnd[6];
	size_t left = len;
	int fd, e;

	snprintf(f->path, sizeof(f->path), "%s", o->path);
	f->tmp[0] = '\0';
	if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
		snprintf(err, err_len, "%s %s: cannot pick a temporary name", o->what, o->path);
		return -1;
	}
	snprintf(f->tmp, sizeof(f->tmp), "%s.tmp-%02x%02x%02x%02x%02x%02x", o->path, rnd[0], rnd[1],
		 rnd[2], rnd[3], rnd[4], rnd[5]);
	fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		e = errno;
		f->tmp[0] = '\0';
		snprintf(err, err_len, "%s %s: cannot create a file there: %s", o->what, o->path,
			 strerror(e));
		return -1;
	}
	if ((uid != (uid_t)-1 || gid != (gid_t)-1) && fchown(fd, uid, gid) != 0) {
		e = errno;
		snprintf(err, err_len, "%s %s: cannot give it to the --owner: %s", o->what, o->path,
			 strerror(e));
		goto fail;
	}
	if (fchmod(fd, o->mode) != 0) {
		e = errno;
		snprintf(err, err_len, "%s %s: cannot set its mode: %s", o->what, o->path,
			 strerror(e));
		goto fail;
	}
	while (left > 0) {
		ssize_t n = write(fd, p, left);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			e = n < 0 ? errno : EIO;
			snprintf(err, err_len, "%s %s: cannot write: %s", o->what, o->path,
				 strerror(e));
			goto fail;
		}
		p += n;
		left -= (size_t)n;
	}
	if (fsync(fd) != 0 || close(fd) != 0) {
		e = errno;
		fd = -1;
		snprintf(err, err_len, "%s %s: cannot write: %s", o->what, o->path, strerror(e));
		goto fail;
	}
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	files_discard(f);
	return -1;
}

int agent_out_write(const struct agent_out *o, const void *data, size_t len, uid_t uid, gid_t gid,
		    bool *changed, char *err, size_t err_len)
{
	struct files_staged f;

	*changed = false;
	if (same(o->path, data, len, uid, gid, o->mode))
		return 0;
	if (stage_owned(&f, o, data, len, uid, gid, err, err_len) != 0)
		return -1;
	if (rename(f.tmp, f.path) != 0) {
		snprintf(err, err_len, "%s %s: cannot replace it: %s", o->what, o->path,
			 strerror(errno));
		files_discard(&f);
		return -1;
	}
	files_sync_dir(o->path);
	*changed = true;
	return 0;
}
