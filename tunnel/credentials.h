/*
 * The TLS configuration of a daemon, built from its options: at start and again at every
 * reload (so a reload reads every file afresh and is checked as a whole).
 */
#ifndef MTLS_TUNNEL_CREDENTIALS_H
#define MTLS_TUNNEL_CREDENTIALS_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <jansson.h>

#include "mtls.h"
#include "tunnel.h"

#define CREDENTIALS_FILES_MAX 16

/* The passphrase of --key-passphrase-env, kept for reloads in memory excluded from core
 * dumps (and locked, where allowed) and wiped by credentials_secret_free(); the variable's
 * value is wiped from the environment and the variable removed, so that neither
 * /proc/PID/environ nor the daemon's children see it. NULL with a message if it is not set. */
struct credentials_secret;
struct credentials_secret *credentials_secret_take_env(const char *name, char *err, size_t len);
void credentials_secret_free(struct credentials_secret *s);

/* NULL with a one-line message. pass: the passphrase taken from the environment, or NULL
 * (a --key-passphrase-file is read again at every build, as the key is). */
struct mtls_config *credentials_build(const struct tunnel_options *o,
				      const struct credentials_secret *pass, char *err, size_t len);

/* --ocsp's value (NULL: off): 0, or -1 if it is not off, soft-fail or hard-fail. */
int credentials_ocsp_mode(const char *text, enum mtls_ocsp_mode *mode);

/* --mode's value (NULL: strict): 0, or -1 if it is not strict, insecure-permissive or
 * insecure-audit. credentials_mode_name(): "strict", "permissive", "audit". */
int credentials_mode(const char *text, enum tunnel_mode *mode);
const char *credentials_mode_name(enum tunnel_mode mode);

/* Can this process (running as --user) open every file a reload reads? -1 with a message
 * naming the first file it cannot read and how to make it readable. */
int credentials_check_readable(const struct tunnel_options *o, const char *user, char *err,
			       size_t len);

/* What a certificate chain file holds: how many certificates, the issuer name hash of the
 * last (how far it reaches), and whether it leads to a CA of the bundle ca (NULL: no). */
struct credentials_chain {
	int ncerts;
	unsigned long top_issuer;
	bool verifies;
};
int credentials_chain(const char *cert, const char *ca, struct credentials_chain *out);

/* thisUpdate and nextUpdate of the CRL in the PEM file that expires first: -1 if none has a
 * nextUpdate or the file cannot be read. */
int credentials_crl_times(const char *path, time_t *this_update, time_t *next_update);

/* notBefore and notAfter (UNIX times) of the first certificate in a PEM file: -1 if there
 * is none that can be read. */
int credentials_cert_validity(const char *path, time_t *not_before, time_t *not_after);

/* /status's view of the files in use, set into obj: "certificate" (subject, serial,
 * not_before, not_after, file) of o->cert, "ca" (subject and not_after of each certificate
 * of o->ca) and "crl" (per file: file, url (crl_urls[i], or null for a plain --crl),
 * issuer, number, this_update, this_update_unix, next_update). What cannot be read is left
 * out (a file replaced meanwhile is read as it is now). 0, or -1 if out of memory. */
int credentials_status(const struct tunnel_options *o, const char *const *crl_urls, json_t *obj);

/* The files a reload depends on (certificate, key, passphrase file, CA, CRLs), to watch for
 * changes; a key on a PKCS#11 token (a pkcs11: URI) is no file and is left out. Returns how
 * many were put in out. */
size_t credentials_files(const struct tunnel_options *o, const char **out, size_t max);

/* root's effective group and groups, kept while the files are read as another user */
struct credentials_ids {
	gid_t egid;
	gid_t groups[256];
	int ngroups;
};

/* Take the effective ids and groups of user, keeping root's as the saved ids: for reading
 * files as the user the daemon runs as (the daemon before it binds, mtls doctor --config).
 * 0, or -1 with the message. */
int credentials_become_user(const char *user, struct credentials_ids *saved, char *err, size_t len);
/* Back to root's ids from saved. 0, or -1 with the message. */
int credentials_become_root(const struct credentials_ids *saved, char *err, size_t len);

#endif
