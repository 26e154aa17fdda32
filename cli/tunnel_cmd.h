/*
 * The option tables of mtls server and mtls connector, for other commands that read a
 * daemon's config (mtls doctor --config).
 */
#ifndef MTLS_CLI_TUNNEL_CMD_H
#define MTLS_CLI_TUNNEL_CMD_H

#include <stddef.h>

#include "options.h"
#include "tunnel.h"

/* Parse the config file path into o exactly as 'mtls server --config path' (role
 * TUNNEL_SERVER) or 'mtls connector --config path' would (defaults first), starting
 * nothing. o's strings point into st (options_free() after). 0, or -1 with err. With
 * [sections]: st->section (set by the caller, NULL for none) is the one parsed, and
 * st->sections lists them all. */
int tunnel_cmd_parse_config(enum tunnel_role role, const char *path, struct tunnel_options *o,
			    struct options_state *st, char *err, size_t len);

#endif
