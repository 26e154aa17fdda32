/*
 * Where a daemon's outbound connections go: the connector's --server, the server's --target.
 * Several targets may be given, in order of preference, each HOST:PORT, [IPv6]:PORT or
 * unix:/path. Names are resolved by a thread of the resolver (at start, every
 * --resolve-interval, and at once after a connect failure: at most once a second), never on
 * a worker loop; each resolution publishes a new list of every address the names gave (IPv4
 * and IPv6, in getaddrinfo's order) that connections take a reference to, under a lock held
 * for a few instructions.
 *
 * Every address has a health: a failed connect (refused, unreachable, timed out) marks it
 * down for a backoff that doubles from RESOLVER_BACKOFF_MIN_MS to RESOLVER_BACKOFF_MAX_MS
 * with each retry that fails; a connect that succeeds marks it up. A connection tries the
 * addresses not down (and those whose backoff has run out) in order of preference, then the
 * down ones, least recently failed first: when all are down it still tries rather than
 * refusing. The health of an address carries over to the next list.
 *
 * A name that does not resolve is a warning (resolve_failed, the target's metrics), retried
 * in the background; one that resolved before keeps its last addresses meanwhile. A
 * malformed address is an error at start (resolver_new).
 */
#ifndef MTLS_TUNNEL_RESOLVER_H
#define MTLS_TUNNEL_RESOLVER_H

#include <stdbool.h>
#include <stddef.h>

#include "address.h"
#include "metrics.h"

#define RESOLVER_TARGETS_MAX	METRICS_TARGETS_MAX
#define RESOLVER_ADDRS_MAX	64 /* addresses of all targets together (each its share) */
#define RESOLVER_PLAN_MAX	8  /* addresses one connection tries */
#define RESOLVER_BACKOFF_MIN_MS 1000
#define RESOLVER_BACKOFF_MAX_MS 30000
#define RESOLVER_KICK_MIN_MS	1000  /* resolutions after connect failures, at most this often */
#define RESOLVER_LOG_EVERY_MS	10000 /* target_down/target_up of one address at most this often */

/* The health of one address (under the resolver's lock). */
struct resolver_health {
	bool down;
	long long down_until; /* ms: not tried before then while others are up */
	long long backoff;    /* ms */
	long long failed_at;  /* ms: the last failure */
	long long logged_at;  /* ms: the last target_down line */
	bool down_logged;     /* its target_down was logged: target_up will be */
};

/* A connect to the address failed at now (ms, monotonic): down for the backoff, doubled when
 * a retry after the backoff failed (a failure of a try begun before it was marked down does
 * not double it). True if it was up before (a transition). */
bool resolver_health_failed(struct resolver_health *h, long long now);
/* A connect succeeded: up. True if it was down before. */
bool resolver_health_ok(struct resolver_health *h);
/* The order to try n addresses in (n <= RESOLVER_ADDRS_MAX, h in order of preference) at
 * now: those up or past their backoff in order of preference, then the others, least
 * recently failed first. At most max indices into order; returns how many. */
size_t resolver_order(const struct resolver_health *h, size_t n, long long now,
		      unsigned char *order, size_t max);

struct resolver_entry {
	struct address addr; /* addr.host: the target's host as given */
	int target;	     /* index in the targets, in order of preference */
	struct resolver_health health;
};

struct resolver_list; /* reference counted, immutable but for the health */

/* The addresses one connection tries, in order (resolver_plan()). */
struct resolver_plan {
	struct resolver_list *list; /* a reference; NULL: none */
	unsigned char order[RESOLVER_PLAN_MAX];
	unsigned n, next;
	struct resolver_entry *trying; /* the address the last resolver_plan_next() gave */
};

struct resolver;

/* Parse the targets (option: "server" or "target", for messages); nothing is resolved yet
 * (no socket). NULL with a message (a malformed address, port 0, too many). m's targets
 * table gets their names (its up gauges and counters are kept by the resolver). */
struct resolver *resolver_new(const char *const *targets, size_t n, const char *option,
			      long long interval_ms, struct metrics *m, char *err, size_t len);
/* Resolve once now (blocking: at start only; a name that does not resolve is logged), then
 * keep resolving in a thread. 0, or -1 if the thread cannot start. */
int resolver_start(struct resolver *r);
/* Tests: resolve names with lookup (getaddrinfo's signature) and free its results with
 * release, instead of getaddrinfo/freeaddrinfo. Before resolver_start(). */
struct addrinfo;
typedef int resolver_lookup_fn(const char *host, const char *port, const struct addrinfo *hints,
			       struct addrinfo **res);
void resolver_set_lookup(struct resolver *r, resolver_lookup_fn *lookup,
			 void (*release)(struct addrinfo *res));
/* Stops the thread; every plan must have been released. NULL: nothing. */
void resolver_free(struct resolver *r);

/* The targets as given, comma-separated (for the "listening" line). */
const char *resolver_describe(const struct resolver *r);
size_t resolver_ntargets(const struct resolver *r);
/* Target i's host as given ("" for a unix socket). */
const char *resolver_target_host(const struct resolver *r, int i);
/* Whether any target is a unix socket. */
bool resolver_has_unix(const struct resolver *r);

/* A plan for one connection: 0, or -1 with why in err (no target has an address: the
 * names did not resolve yet; a resolution is asked for). */
int resolver_plan(struct resolver *r, struct resolver_plan *p, char *err, size_t len);
/* The next address to try, or NULL when the plan is done. */
struct resolver_entry *resolver_plan_next(struct resolver_plan *p);
/* The address given last failed (why: for the target_down line): marked down, and a new
 * resolution asked for. Marked in the current list, also when the plan holds an older one
 * (likewise resolver_plan_ok()). */
void resolver_plan_failed(struct resolver *r, struct resolver_plan *p, const char *why);
/* It connected: marked up. */
void resolver_plan_ok(struct resolver *r, struct resolver_plan *p);
/* Release the plan's reference (safe on a plan never made, or released). */
void resolver_plan_done(struct resolver *r, struct resolver_plan *p);

#endif
