/*
 * Which PostgreSQL roles a client identity may log in as (mtls server --protocol postgresql
 * --pg-role PATTERN=ROLE[@DATABASE]; docs/database.md), the way pg_ident.conf maps system
 * users to roles, here certificate identities.
 *
 *   PATTERN   a client identity pattern: with "://" an --allow-uri pattern
 *             (spiffe://example.org/ns/prod/sa/STAR), else an --allow-dns one
 *             (*.example.org) or an exact identity (a common name)
 *   ROLE      the role (StartupMessage "user") it may use; "*": any
 *   DATABASE  the database it may open; "*" or left out: any; "replication": replication
 *             connections (walsenders, which reach every database), which nothing else grants
 *             (the last '@' separates it: alice@corp.com@* is role alice@corp.com)
 *
 * A client is let in when one rule matches its identity, the role and the database. With no
 * rule at all every identity the allow rules let in may use any role.
 */
#ifndef MTLS_TUNNEL_PGROLE_H
#define MTLS_TUNNEL_PGROLE_H

#include <stdbool.h>
#include <stddef.h>

#include "tunnel.h"

struct pgrole;

/* Parse the rules (each "PATTERN=ROLE[@DATABASE]"). NULL with a one-line message naming the
 * rule and what to write, or out of memory. An empty list gives a set that allows all. */
struct pgrole *pgrole_parse(const struct tunnel_list *rules, char *err, size_t len);
void pgrole_free(struct pgrole *r);
/* A client's names, as its certificate carries them: a URI pattern matches one of its URI
 * SANs, a DNS pattern one of its DNS SANs, and any other pattern (or a DNS name) its common
 * name exactly. A common name never matches a URI pattern, whatever it reads like. */
struct pgrole_peer {
	const char *const *uri;
	size_t nuri;
	const char *const *dns;
	size_t ndns;
	const char *cn; /* or NULL */
};

/* Whether the client may log in as user to database (NULL or "": PostgreSQL's default, the
 * user's name). A replication connection (replication: physical or logical, either of which
 * can copy every database) needs a rule whose DATABASE is "replication" itself, as pg_hba.conf
 * has it: "*" does not grant it. *rule gets the rule that allowed it ("" when there are no
 * rules), else NULL. */
bool pgrole_allows(const struct pgrole *r, const struct pgrole_peer *peer, const char *user,
		   const char *database, bool replication, const char **rule);
/* The number of rules (0: all allowed). */
size_t pgrole_count(const struct pgrole *r);

#endif
