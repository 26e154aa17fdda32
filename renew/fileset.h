/*
 * Several files replaced as one change: a private key and the certificate chain it belongs
 * to, the files of an enrollment directory, or mtls agent's copies for a service. Used by
 * mtls enroll, mtls renew, mtls agent and the daemons' renewal (renewal.h).
 *
 * The change survives a crash at any point (a kill, a power cut): afterwards the files are
 * either all old or all new once fileset_recover() has run, never a mix (a key beside a
 * chain it does not match). How:
 *   1. each new file is written beside its target as NAME.new-<12 hex> (owner and mode set
 *      on the descriptor, fsync); an existing target gets a second name, NAME.old-<12 hex>
 *      (link(): the old content, for taking the change back; a copy where link() is not
 *      allowed: a file of another user under protected_hardlinks); the directories are synced;
 *   2. the journal, DIR/.mtls-fileset in the directory of the first file, names them all
 *      (written whole: temporary file, fsync, rename, directory fsync). From here on the
 *      change is made: a crash is finished forward by fileset_recover();
 *   3. the new files take their names (rename(), or link() when none may exist), the
 *      directories are synced, the journal removed, then the .new-/.old- names.
 * A failure in 3 (not a crash) takes the change back: the journal is first renamed
 * DIR/.mtls-fileset-undo (so that a crash during the undo goes on undoing), then each
 * target gets its .old- name back (or is removed if it is new), then the journal goes.
 *
 * The journal: "mtls fileset 1\n", then one line per file: "<12 hex of .new-> <12 hex of
 * .old-, or -> <absolute path>\n". Nothing else is allowed in it. A journal is followed only
 * if the recovering user wrote it (a regular file owned by the effective uid, writable by
 * nobody else): root (mtls agent) recovers in directories its services' users can write, and
 * a journal names any file to rename or remove.
 *
 * Callers hold the flock (files_lock_dir()) that every writer of these files holds, around
 * both fileset_write() and fileset_recover().
 */
#ifndef MTLS_RENEW_FILESET_H
#define MTLS_RENEW_FILESET_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define FILESET_MAX	8
#define FILESET_JOURNAL ".mtls-fileset"
#define FILESET_UNDO	".mtls-fileset-undo"

struct fileset_file {
	const char *path;
	const void *data;
	size_t len;
	mode_t mode; /* whatever the umask */
	bool own;    /* set the owner: uid, gid ((uid_t)-1 / (gid_t)-1: that one unchanged) */
	uid_t uid;
	gid_t gid;
};

/* Write the n (at most FILESET_MAX) files as one change (see above); a change a crash left
 * half made in their directories is finished first (fileset_recover()). Without replace,
 * none may exist (link(), never replacing). 0, or -1 with the message (the files as they
 * were, unless the message says otherwise). */
int fileset_write(const struct fileset_file *f, size_t n, bool replace, char *err, size_t err_len);

/* Finish or take back a change that a crash left half made in the directories of the n
 * paths (their journals), then remove what such changes leave behind beside these paths
 * (NAME.new-/NAME.old- <12 hex>, and the journal's own temporary files). A journal names
 * its files: those are finished too, wherever they are. 0 (nothing to do, or done), or -1
 * with the message (a journal that cannot be read or finished is left in place, and the
 * files are not to be trusted until it is). */
int fileset_recover(const char *const *paths, size_t n, char *err, size_t err_len);

/* A parsed journal (fileset_journal_parse()). */
struct fileset_journal {
	size_t n;
	struct {
		char path[PATH_MAX];
		char new_id[13]; /* the 12 hex of NAME.new-, NUL-terminated */
		char old_id[13]; /* of NAME.old-, "" if the file did not exist */
	} e[FILESET_MAX];
};

/* Parse len bytes of a journal (untrusted: bounded, strict). 0, or -1 with the message. */
int fileset_journal_parse(const char *text, size_t len, struct fileset_journal *j, char *err,
			  size_t err_len);

#endif /* MTLS_RENEW_FILESET_H */
