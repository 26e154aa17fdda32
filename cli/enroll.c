/*
 * The enrollment directory (enroll.h): its files written as one change, and what mtls
 * enroll and mtls renew share.
 */
#include <limits.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "enroll.h"
#include "files.h"
#include "fileset.h"

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
	char paths[FILESET_MAX][PATH_MAX];
	struct fileset_file fs[FILESET_MAX];

	if (n > FILESET_MAX)
		return snprintf(err, err_len, "internal error: too many files"), -1;
	for (size_t i = 0; i < n; i++) {
		if (enroll_path(paths[i], sizeof(paths[i]), dir, f[i].name) != 0)
			return snprintf(err, err_len, "directory name %s is too long", dir), -1;
		fs[i] = (struct fileset_file){paths[i], f[i].data, f[i].len, f[i].mode,
					      false,	0,	   0};
	}
	return fileset_write(fs, n, replace, err, err_len);
}

int enroll_recover(const char *dir, const char *const *names, size_t n, char *err, size_t err_len)
{
	char paths[FILESET_MAX][PATH_MAX];
	const char *p[FILESET_MAX];
	int lock, rc;

	if (n > FILESET_MAX)
		return snprintf(err, err_len, "internal error: too many files"), -1;
	if (!files_exists(dir))
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (enroll_path(paths[i], sizeof(paths[i]), dir, names[i]) != 0)
			return snprintf(err, err_len, "directory name %s is too long", dir), -1;
		p[i] = paths[i];
	}
	if ((lock = files_lock_dir(dir, err, err_len)) < 0)
		return -1;
	rc = fileset_recover(p, n, err, err_len);
	close(lock);
	return rc;
}
