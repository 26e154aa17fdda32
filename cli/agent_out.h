/*
 * Copies of the agent's certificate files where a service wants them, in its names, owner
 * and modes: PostgreSQL reads server.crt and server.key from its data directory, the key
 * owned by postgres with mode 0600.
 *
 * The copies are written as one change (fileset_write(), renew/fileset.h): each a new
 * temporary file beside its target (O_CREAT|O_EXCL|O_NOFOLLOW, the mode set whatever the
 * umask), its owner set on that file (never on a path that could be a symlink), fsync; a
 * journal; then rename() over the targets, which replaces a symlink there instead of writing
 * through it. A crash at any point leaves the old set or the new one once the next write
 * has finished or taken back the change (fileset_recover()): never a key beside a
 * certificate it does not match. Copies already holding the right bytes, owner and mode
 * are left alone. The target's directory must exist and be writable by
 * its owner only: in a directory others can write to, the file could be swapped before it
 * is renamed.
 */
#ifndef MTLS_CLI_AGENT_OUT_H
#define MTLS_CLI_AGENT_OUT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct agent_out {
	const char *path; /* where the copy goes */
	mode_t mode;	  /* 0600 for a key, 0644 otherwise */
	const char *what; /* "--key-out", for messages */
};

/* "USER", "USER:GROUP", ":GROUP", or numeric ids, into *uid / *gid ((uid_t)-1 / (gid_t)-1:
 * leave as created). USER alone means that user's primary group. 0, or -1 with the
 * message. */
int agent_out_owner_parse(const char *spec, uid_t *uid, gid_t *gid, char *err, size_t err_len);

/* Check before anything runs that the copy can be written: an absolute path whose directory
 * exists, is a directory and is writable by its owner only, and that the agent may set the
 * owner (root, or the owner is itself). 0, or -1 with the message. */
int agent_out_check(const struct agent_out *o, uid_t uid, gid_t gid, char *err, size_t err_len);

/* Make the n copies o[i].path hold data[i] (len[i] bytes), owned by uid:gid with o[i].mode,
 * as one change; changed[i] says whether each had to be written. A change a crash cut
 * short is finished first. The directory of every copy is locked (flock) meanwhile. 0, or -1
 * with the message (the old copies untouched). */
int agent_out_write_set(const struct agent_out *o, const void *const *data, const size_t *len,
			size_t n, uid_t uid, gid_t gid, bool *changed, char *err, size_t err_len);

/* The same for one copy. */
int agent_out_write(const struct agent_out *o, const void *data, size_t len, uid_t uid, gid_t gid,
		    bool *changed, char *err, size_t err_len);

#endif /* MTLS_CLI_AGENT_OUT_H */
