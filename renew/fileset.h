/*
 * Several files replaced as one change: a private key and the certificate chain it belongs
 * to, or the files of an enrollment directory. Used by mtls enroll, mtls renew and the
 * daemons' renewal (renewal.h).
 *
 * All files are staged first (a temporary file beside each, synced); then published in the
 * order given; then their directories are synced. A failure part-way takes back what was
 * published, newest first, so that a key never stays beside a chain it does not match.
 */
#ifndef MTLS_RENEW_FILESET_H
#define MTLS_RENEW_FILESET_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define FILESET_MAX 8

struct fileset_file {
	const char *path;
	const void *data;
	size_t len;
	mode_t mode; /* whatever the umask (files_stage) */
};

/* Write the n (at most FILESET_MAX) files as one change. Without replace, none may exist
 * (link(), never replacing) and on a failure those published are removed again. With
 * replace, existing files are replaced (rename()) and on a failure those already replaced
 * get their old content and mode back. 0, or -1 with the message (the files as they were,
 * unless the message says otherwise). */
int fileset_write(const struct fileset_file *f, size_t n, bool replace, char *err, size_t err_len);

#endif /* MTLS_RENEW_FILESET_H */
