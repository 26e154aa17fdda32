/*
 * The TLS configuration of a daemon, built from its options: at start and again at every
 * reload (so a reload reads every file afresh and is checked as a whole).
 */
#ifndef MTLS_TUNNEL_CREDENTIALS_H
#define MTLS_TUNNEL_CREDENTIALS_H

#include <stddef.h>
#include <time.h>

#include "mtls.h"
#include "tunnel.h"

/* NULL with a one-line message. */
struct mtls_config *credentials_build(const struct tunnel_options *o, char *err, size_t len);

/* notBefore and notAfter (UNIX times) of the first certificate in a PEM file: -1 if there
 * is none that can be read. */
int credentials_cert_validity(const char *path, time_t *not_before, time_t *not_after);

/* The files a reload depends on, to watch for changes. Returns how many were put in out. */
size_t credentials_files(const struct tunnel_options *o, const char **out, size_t max);

#endif
