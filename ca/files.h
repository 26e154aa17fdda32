/*
 * Writing CA material safely: private directories, and files that appear whole or not at
 * all (temporary file, fsync, rename), created without following symlinks.
 */
#ifndef MTLS_CA_FILES_H
#define MTLS_CA_FILES_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Create directory path with mode 0700 (parents too). An existing directory must not be
 * writable by group or others. */
int files_mkdir_private(const char *path, char *err, size_t err_len);

/* Write len bytes to path with the given mode via a temporary file in the same directory
 * (O_CREAT|O_EXCL|O_NOFOLLOW), fsync, then rename, then fsync the directory. With
 * no_replace, an existing path is an error and is left alone. On failure the temporary file
 * is removed and errno says why (ENOSPC: the disk is full). */
int files_write(const char *path, const void *data, size_t len, mode_t mode, bool no_replace,
		char *err, size_t err_len);

/* Remove the temporary files that files_write() calls killed half-way left in dir (only
 * NAME.tmp-<12 hex digits>). Call only while holding the lock that every writer into dir
 * holds. The number removed, or -1 if dir cannot be read. */
int files_remove_temporaries(const char *dir);

/* Read a whole file (at most 16 MiB) into a NUL-terminated buffer; caller frees. */
char *files_read(const char *path, size_t *len, char *err, size_t err_len);

bool files_exists(const char *path);

#endif
