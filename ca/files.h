/*
 * Writing CA material safely: private directories, and files that appear whole or not at
 * all (temporary file, fsync, rename), created without following symlinks.
 */
#ifndef MTLS_CA_FILES_H
#define MTLS_CA_FILES_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Create directory path with mode 0700 (parents too). An existing directory must not be
 * writable by group or others. */
int files_mkdir_private(const char *path, char *err, size_t err_len);

/* Create the missing directories above path (mode 0700), not path itself; existing ones are
 * left as they are. */
int files_mkdir_parents(const char *path, char *err, size_t err_len);

/* Remove directory path and the files in it (not subdirectories: it fails on those). 0, or
 * -1 if something is left. */
int files_remove_dir(const char *path);

/* Write len bytes to path with the given mode via a temporary file in the same directory
 * (O_CREAT|O_EXCL|O_NOFOLLOW), fsync, then rename, then fsync the directory. With
 * no_replace, an existing path is an error and is left alone. On failure the temporary file
 * is removed and errno says why (ENOSPC: the disk is full). */
int files_write(const char *path, const void *data, size_t len, mode_t mode, bool no_replace,
		char *err, size_t err_len);

/* Writing in two steps, so that a file can be prepared before a commit and appear after it:
 * files_stage() writes data to a new temporary file next to path (PATH.tmp-<12 hex digits>,
 * O_CREAT|O_EXCL|O_NOFOLLOW, the given mode whatever the umask) and fsyncs it;
 * files_publish() gives it its name (with no_replace by link(), which never replaces an
 * existing path, else by rename()); files_discard() removes it if it is still there. Then
 * files_sync_dir(path) makes the new name durable. */
struct files_staged {
	char path[PATH_MAX];
	char tmp[PATH_MAX]; /* "" once published or discarded */
};
/* How much longer than its file's name a temporary file's name is (".tmp-" and 12 hex). */
#define FILES_TMP_SUFFIX 17
int files_stage(struct files_staged *f, const char *path, const void *data, size_t len, mode_t mode,
		char *err, size_t err_len);
int files_publish(struct files_staged *f, bool no_replace, char *err, size_t err_len);
void files_discard(struct files_staged *f);
/* Hold len bytes of the disk that holds path: a temporary file next to it (as
 * files_stage() makes, mode 0600) with its blocks allocated, so that nobody else can take
 * them; files_discard() gives them back. -1 with the message, errno ENOSPC or EDQUOT if
 * there is not that much room. */
int files_reserve(struct files_staged *f, const char *path, off_t len, char *err, size_t err_len);
/* fsync the directory that holds path. */
int files_sync_dir(const char *path);

/* Hold an exclusive flock on directory dir (for everyone who writes files there the same
 * way): a descriptor to close(), or -1 with a message. */
int files_lock_dir(const char *dir, char *err, size_t err_len);

/* Remove the temporary files that files_write() calls killed half-way left in dir (only
 * NAME.tmp-<12 hex digits>). Call only while holding the lock that every writer into dir
 * holds. The number removed, or -1 if dir cannot be read. */
int files_remove_temporaries(const char *dir);
/* The same for the temporary files of the n given NAMEs only (base names in dir). */
int files_remove_temporaries_of(const char *dir, const char *const *names, size_t n);

/* Read a whole file (at most 16 MiB) into a NUL-terminated buffer; caller frees. */
char *files_read(const char *path, size_t *len, char *err, size_t err_len);

bool files_exists(const char *path);

#endif
