/*
 * Reading a whole file into memory: the one reader behind libmtls's config files and the
 * command's and the CA's files. Compiled into libmtls and the CA library.
 */
#ifndef MTLS_READFILE_H
#define MTLS_READFILE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Read the regular file path, of at most max bytes, into *data (NUL-terminated; the caller
 * frees it, after OPENSSL_cleanse() if it held a secret) and its length into *len. mode (may
 * be NULL) receives the file's permission bits. Returns 0, or an errno value and nothing
 * allocated: EINVAL not a regular file, EFBIG larger than max, EIO the file ended early,
 * others from open() and read(). A failed read never returns part of the file. */
int readfile(const char *path, size_t max, uint8_t **data, size_t *len, mode_t *mode);

#endif
