/*
 * The enrollment directory's files written as one change (enroll.h).
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "fileset.h"
#include "files.h"

int enroll_path(char *out, size_t out_len, const char *dir, const char *name)
{
	return snprintf(out, out_len, "%s/%s", dir, name) >= (int)out_len ? -1 : 0;
}

int enroll_options(const char *cmd, const char *usage, const char *about, const struct opt *table,
		   void *target, int argc, char **argv, struct options_state *st)
{
	char err[2048];

	if (options_parse(table, target, argc, argv, st, err, sizeof(err)) != 0) {
		fprintf(stderr, "mtls %s: %s\n", cmd, err);
		return 2;
	}
	if (st->help) {
		options_help(stdout, usage, about, table);
		return 0;
	}
	if (st->positional.n != 0) {
		fprintf(stderr, "mtls %s: unexpected argument '%.100s'; see --help\n", cmd,
			st->positional.v[0]);
		return 2;
	}
	return -1;
}

void enroll_utc(time_t t, char out[32])
{
	struct tm tm;

	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
}

int enroll_write(const char *dir, const struct enroll_file *f, size_t n, bool replace, char *err,
		 size_t err_len)
{
	struct files_staged staged[8], backup[8];
	bool had_backup[8] = {false}, published[8] = {false};
	char path[PATH_MAX], why[1024];
	size_t i, nstaged = 0;
	int rc = -1;

	if (n > 8)
		return snprintf(err, err_len, "internal error: too many files"), -1;
	memset(staged, 0, sizeof(staged));
	memset(backup, 0, sizeof(backup));
	for (i = 0; i < n; i++) {
		if (enroll_path(path, sizeof(path), dir, f[i].name) != 0) {
			snprintf(err, err_len, "directory name %s is too long", dir);
			goto out;
		}
		if (files_stage(&staged[i], path, f[i].data, f[i].len, f[i].mode, err, err_len) !=
		    0)
			goto out;
		nstaged = i + 1;
		/* the old content, for putting back what was replaced if a later file fails */
		if (replace && files_exists(path)) {
			struct stat sb;
			size_t len = 0;
			char *old = files_read(path, &len, err, err_len);
			int s;

			if (old == NULL)
				goto out;
			s = stat(path, &sb) == 0
				    ? files_stage(&backup[i], path, old, len, sb.st_mode & 0777,
						  err, err_len)
				    : (snprintf(err, err_len, "cannot read %s", path), -1);
			OPENSSL_cleanse(old, len);
			free(old);
			if (s != 0)
				goto out;
			had_backup[i] = true;
		}
	}
	for (i = 0; i < n; i++) {
		if (files_publish(&staged[i], !replace, err, err_len) != 0)
			break;
		published[i] = true;
	}
	if (i == n) {
		files_sync_dir(staged[0].path);
		rc = 0;
		goto out;
	}
	/* take back what was published, newest first */
	while (i-- > 0) {
		if (had_backup[i]) {
			if (files_publish(&backup[i], false, why, sizeof(why)) != 0) {
				size_t l = strlen(err);

				snprintf(err + l, err_len - l,
					 "; %s was replaced and its old content could not be put "
					 "back (%s): enroll again",
					 staged[i].path, why);
			}
		} else if (published[i]) {
			unlink(staged[i].path);
		}
	}
	files_sync_dir(staged[0].path);
out:
	for (i = 0; i < nstaged; i++) {
		files_discard(&staged[i]);
		files_discard(&backup[i]);
	}
	return rc;
}
