/*
 * The enrollment directory that mtls enroll writes and mtls renew keeps fresh:
 *
 *   key.pem    the private key (0600)
 *   cert.pem   the certificate chain, leaf first
 *   ca.pem     the pinned root
 *   ca-url     the CA's API URL, one line (for mtls renew)
 *   mtls.conf  cert, key, ca and ca-url lines for mtls server/connector --config
 *
 * Shared by enroll_cmd.c and renew_cmd.c.
 */
#ifndef MTLS_CLI_ENROLL_H
#define MTLS_CLI_ENROLL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include "options.h"

struct enroll_file {
	const char *name; /* in the directory: "key.pem" */
	const void *data;
	size_t len;
	mode_t mode;
};

/* Write n files into dir as one change (fileset_write(): all staged, published in the order
 * given, and on a failure those published taken back). Without replace, none may exist.
 * 0, or -1 with the message (the directory as it was, unless the message says otherwise). */
int enroll_write(const char *dir, const struct enroll_file *f, size_t n, bool replace, char *err,
		 size_t err_len);

/* A write of the n files named into dir that a crash cut short is finished or taken back
 * (fileset_recover(); under dir's lock): the directory holds the old set or the new one
 * whole. Nothing to do if dir does not exist. 0, or -1 with the message. */
int enroll_recover(const char *dir, const char *const *names, size_t n, char *err, size_t err_len);

/* dir/name into out. -1 if too long. */
int enroll_path(char *out, size_t out_len, const char *dir, const char *name);

/* Parse the options of mtls cmd ("enroll", "renew"): on --help print usage and about and
 * return 0; on a usage error (a positional argument included) print "mtls CMD: ..." and
 * return 2; else -1, to go on. */
int enroll_options(const char *cmd, const char *usage, const char *about, const struct opt *table,
		   void *target, int argc, char **argv, struct options_state *st);

/* t as "2026-12-01T18:00:00Z", for messages. */
void enroll_utc(time_t t, char out[32]);

#endif /* MTLS_CLI_ENROLL_H */
