/*
 * The few PostgreSQL wire messages (protocol 3, www.postgresql.org/docs/current/protocol.html)
 * that `mtls server --protocol postgresql` and `mtls connector --protocol postgresql` read or
 * write themselves: a connection's first message (SSLRequest, GSSENCRequest, CancelRequest,
 * StartupMessage), the StartupMessage's parameters, and the ErrorResponse that refuses a
 * client. Pure functions on caller-owned bytes: no I/O, no allocation, never a read past the
 * length they are given.
 */
#ifndef MTLS_TUNNEL_PGWIRE_H
#define MTLS_TUNNEL_PGWIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PGWIRE_NAME_MAX	   63u	  /* NAMEDATALEN - 1: PostgreSQL's longest role or database name */
#define PGWIRE_STARTUP_MAX 10000u /* PostgreSQL's MAX_STARTUP_PACKET_LENGTH */
#define PGWIRE_CANCEL_LEN  16u

enum pgwire_kind {
	PGWIRE_NEED_MORE, /* fewer than 8 bytes: read more */
	PGWIRE_SSL,	  /* SSLRequest: length 8, code 80877103 */
	PGWIRE_GSSENC,	  /* GSSENCRequest: length 8, code 80877104 */
	PGWIRE_CANCEL,	  /* CancelRequest: length 16, code 80877102 */
	PGWIRE_STARTUP, /* StartupMessage: protocol major 3 (code >> 16 == 3), 8 < length <= MAX */
	PGWIRE_BAD,	/* anything else (a wrong length for its code, major != 3, ...) */
};

/* The kind of a connection's first message from its first n bytes (a 4-byte big-endian length
 * that counts itself, then a 4-byte code); *len gets the whole message's length for every kind
 * but NEED_MORE and BAD (0 for those; len may be NULL). Only the first 8 bytes are looked at,
 * so a STARTUP's *len may exceed n: read up to *len bytes, then pgwire_startup_parse(). A TLS
 * ClientHello (PostgreSQL 17's direct TLS, first byte 0x16) is BAD here: look for it first.
 * Never reads past n. */
enum pgwire_kind pgwire_classify(const uint8_t *p, size_t n, uint32_t *len);
/* "need_more", "ssl_request", "gssenc_request", "cancel_request", "startup_message", "bad"
 * (for logs; "unknown" for a value outside the enum). */
const char *pgwire_kind_name(enum pgwire_kind k);

struct pgwire_startup {
	uint32_t version;     /* 0x00030000 for 3.0 */
	const char *user;     /* never NULL nor empty after a successful parse; pointers into msg */
	const char *database; /* NULL if absent or empty (PostgreSQL then uses user) */
	const char *application_name; /* NULL if absent */
	/* a replication connection (walsender): "replication" given as anything but false,
	 * off, no or 0 ("true"/"on"/"yes"/"1": physical, "database": logical) */
	bool replication;
};

/* Parse a whole StartupMessage (len bytes, as classified). The parameters are NUL-terminated
 * name/value pairs ended by one more NUL, all within len; a name twice, an empty name, no
 * final NUL, bytes after it, or no "user" are refused. 0, or -1 with a one-line reason.
 *
 * Other parameters ("options", "replication", "client_encoding", "_pq_." protocol extensions,
 * settings) are parsed as pairs and otherwise ignored. Names are compared as PostgreSQL does:
 * "user" and "database" exactly, "application_name" (a setting) ignoring ASCII case; a name
 * twice is refused ignoring case too. Also refused, so that the user and database checked are
 * the ones PostgreSQL uses: a length field other than len, a protocol major other than 3, an
 * empty user, and a user or database longer than 63 bytes (PostgreSQL cuts names to
 * NAMEDATALEN - 1 = 63 bytes, and would then use another name than the one checked). The
 * strings of *out point into msg (NUL-terminated there) and live as long as it; on error
 * *out is all NULL. The reason never quotes more of the message than a short printable
 * parameter name. */
int pgwire_startup_parse(const uint8_t *msg, size_t len, struct pgwire_startup *out, char *err,
			 size_t errlen);

/* An ErrorResponse ('E', length, then fields S and V "FATAL", C sqlstate, M message, H hint if
 * not NULL, then a NUL) into out; its length, or 0 if it does not fit in cap (or a string holds
 * a byte < 0x20). Also 0 if sqlstate is not 5 characters of 0-9 A-Z or message is NULL. On 0
 * out is left untouched. A message that quotes a client's bytes (a role name) may hold control
 * bytes: have a plainer message ready for that 0. */
size_t pgwire_error_response(uint8_t *out, size_t cap, const char *sqlstate, const char *message,
			     const char *hint);

/* The 8 bytes of an SSLRequest. */
void pgwire_ssl_request(uint8_t out[8]);

#endif
