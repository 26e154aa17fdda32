/*
 * Several files replaced as one change (fileset.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "files.h"
#include "fileset.h"

int fileset_write(const struct fileset_file *f, size_t n, bool replace, char *err, size_t err_len)
{
	struct files_staged staged[FILESET_MAX], backup[FILESET_MAX];
	bool had_backup[FILESET_MAX] = {false}, published[FILESET_MAX] = {false};
	char why[1024];
	size_t i, nstaged = 0;
	int rc = -1;

	if (n == 0 || n > FILESET_MAX)
		return snprintf(err, err_len, "internal error: %zu files in one change", n), -1;
	memset(staged, 0, sizeof(staged));
	memset(backup, 0, sizeof(backup));
	for (i = 0; i < n; i++) {
		if (files_stage(&staged[i], f[i].path, f[i].data, f[i].len, f[i].mode, err,
				err_len) != 0)
			goto out;
		nstaged = i + 1;
		/* the old content, for putting back what was replaced if a later file fails */
		if (replace && files_exists(f[i].path)) {
			struct stat sb;
			size_t len = 0;
			char *old = files_read(f[i].path, &len, err, err_len);
			int s;

			if (old == NULL)
				goto out;
			s = stat(f[i].path, &sb) == 0
				    ? files_stage(&backup[i], f[i].path, old, len,
						  sb.st_mode & 0777, err, err_len)
				    : (snprintf(err, err_len, "cannot read %s", f[i].path), -1);
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
		for (i = 0; i < n; i++)
			files_sync_dir(f[i].path);
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
					 "back (%s)",
					 f[i].path, why);
			}
		} else if (published[i]) {
			unlink(f[i].path);
		}
	}
	for (i = 0; i < n; i++)
		files_sync_dir(f[i].path);
out:
	for (i = 0; i < nstaged; i++) {
		files_discard(&staged[i]);
		files_discard(&backup[i]);
	}
	return rc;
}
