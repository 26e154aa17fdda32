/*
 * mtls ca serve: the certificate authority as a network service.
 *
 * One process, four parts:
 *   serve.c    set-up, the main thread's libev loop (signals, the CRL and OCSP schedules)
 *   front.c    the HTTPS API's TLS side: accepts TCP, runs the mutual TLS handshake through
 *              libmtls (a client certificate is optional at this level), then pumps the
 *              decrypted bytes to libmicrohttpd over a socketpair, with the peer's verified
 *              identity attached to the connection
 *   routes.c   the HTTP side (libmicrohttpd, two daemons: the API fed by front.c, and a
 *              plain-HTTP port for what is signed anyway): routing, bounded bodies, JSON, and
 *              one call into ca/service.h or ca/ocsp.h per request
 *   publish.c  the CRL and root bundle as served: read from the CA directory when they
 *              change, with their ETag and Last-Modified
 *   crlwait.c  GET /crl requests held until the CRL changes (the daemons' push channel)
 *
 * Threads: the main loop (front.c and the schedules), one libmicrohttpd thread per daemon.
 * Every use of the authority (its store, its key, the OCSP responder) holds serve.lock; every
 * change also holds the CA directory's flock (authority_lock()), so that local `mtls ca`
 * commands on the same directory run in between requests.
 */
#ifndef MTLS_CASERVE_SERVE_H
#define MTLS_CASERVE_SERVE_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

#include "authority.h"
#include "service.h"

struct serve_options {
	const char *dir;
	const char *listen;	 /* the HTTPS API: host:port */
	const char *http_listen; /* plain HTTP (CRL, OCSP, roots): host:port, or NULL for none */
	const char *public_url;	 /* https://host:port put in tokens (default: from listen) */
	const char *const *admin_uris; /* client identities allowed to revoke */
	size_t n_admin_uris;
	const char *const *admin_cns;
	size_t n_admin_cns;
	long long leaf_seconds;	   /* lifetime of issued certificates */
	long long crl_seconds;	   /* CRL validity (nextUpdate - thisUpdate) */
	long long max_connections; /* API connections at once */
	long long per_ip;	   /* API connections at once from one address */
	long long handshake_timeout_ms;
	long long idle_timeout_ms; /* an API or HTTP connection that moves nothing */
	/* of the issuing key (a token's PIN), or NULL: serve_run() wipes it once the key is
	 * loaded, so that the process keeps the key (the token's session), not the PIN */
	char *passphrase;
	const char *cert_dir;	 /* where the API's own certificate and key are kept */
	struct sandbox *sandbox; /* Landlock applied by the caller; seccomp by serve_run */
};

#define SERVE_BODY_MAX	       (64 * 1024) /* a JSON request: a CSR with many names fits */
#define SERVE_OCSP_BODY_MAX    4096
#define SERVE_HTTP_CONNECTIONS 64 /* plain-HTTP connections at once */
/* A body past its bound is read and dropped up to this much, so that a merely large request
 * still gets its 413; past it the connection is closed (an endless chunked stream). */
#define SERVE_DISCARD_MAX (1024 * 1024)
/* How long a request waits for the CA directory's lock (a local `mtls ca` command, a backup
 * holding DIR/lock) before it is answered 503. It waits without holding serve.lock, so the
 * CRL, OCSP and the TLS front keep going meanwhile. */
#define SERVE_LOCK_WAIT_MS 5000

/* The CRL as served: the bytes of crl.pem as last read, as DER too. */
struct served_crl {
	unsigned char *der;
	size_t der_len;
	char *pem;
	size_t pem_len;
	char etag[67]; /* quoted hex SHA-256 of the DER */
	time_t this_update;
	time_t next_update;
	int64_t number;
	struct stat st; /* of crl.pem when read (device, inode, size, mtime) */
};

struct ev_loop;
struct crlwait;
struct ocsp_responder;
struct front;
struct routes;

struct serve {
	const struct serve_options *o;
	pthread_mutex_t lock;
	struct authority *ca;
	struct svc_policy policy;
	struct ocsp_responder *ocsp;
	struct served_crl crl;
	char *roots_pem; /* the root bundle served at /roots.pem (root.pem as last read) */
	size_t roots_len;
	char roots_etag[67];
	struct stat roots_st; /* of root.pem when read */
	char *trust_pem;      /* its roots alone (no link certificate): the API's trust */
	size_t trust_len;
	/* the authority's certificates (authority_refresh()) the API was last set up with */
	unsigned ca_generation;
	char refresh_err[512]; /* the last refresh failure logged, so that it is logged once */
	char api_url[300];
	/* the CRL (its ETag) the API's TLS configuration was last built with: whoever replaced
	 * s->crl (a request, the schedule, the watch), the watch reloads the front when they
	 * differ */
	char front_crl_etag[67];
	/* crl.pem as last refused by publish_refresh_crl(), so that it is logged once */
	struct stat crl_refused;
	bool crl_refused_set;
	struct front *front;
	struct routes *routes;
	struct crlwait *crlwait; /* held GET /crl requests, woken when s->crl changes */
};

/* publish.c, under s->lock: read crl.pem again if it changed since the last read (or was
 * never read); on a change, cached OCSP answers are dropped too (a revocation made by a
 * local `mtls ca revoke` publishes a CRL), and the held GET /crl requests are woken. 0, or -1 with
 * a message (the last good CRL is kept; a refused file is logged once, "crl_refused"). */
int publish_refresh_crl(struct serve *s, char *err, size_t err_len);
/* publish.c, under s->lock: when the inventory holds a newer CRL than the one served (another
 * CA node on a shared store published it), write it as crl.pem (under the CA's lock) and
 * serve it. 0 (also when there is nothing newer), or -1 with a message. */
int publish_sync_crl(struct serve *s, char *err, size_t err_len);
/* Under s->lock: the root bundle (root.pem), read again when it changed (inode, size,
 * mtime), e.g. by a `mtls ca rollover` step: /roots.pem serves it whole, the API trusts its
 * roots (self-signed CA certificates; a link certificate is no trust anchor). 1 read anew,
 * 0 unchanged, -1 with a message (the last good bundle kept). */
int publish_load_roots(struct serve *s, char *err, size_t err_len);
void publish_free(struct serve *s);
/* The quoted hex SHA-256 of data, for an ETag. */
void publish_etag(const void *data, size_t len, char out[67]);

/* The peer of an API connection, as front.c verified it (NULL fields: no certificate). */
struct front_peer {
	uint64_t id;
	char addr[64]; /* "203.0.113.7:51234" */
	bool has_cert;
	bool client_eku;     /* the certificate names clientAuth (not a server's alone) */
	char identity[2049]; /* mtls_peer_identity() */
	char serial[64];
	char cert_sha256[65];
	char **uris; /* NULL-terminated */
	char cn[257];
	struct front_peer *next; /* front.c's table of peers not yet claimed by routes.c */
};
void front_peer_free(struct front_peer *p);

/* front.c */
struct front *front_start(struct serve *s, struct ev_loop *loop, int listen_fd, char *err,
			  size_t err_len);
/* (Re)apply the API's TLS configuration: its own certificate (cert_dir/api-chain.pem and
 * api.key), the CA's roots, the CRL as last read (taken under s->lock; not to be held by the
 * caller). Connections keep the configuration they started with. 0, or -1 with a message
 * (the previous configuration stays). */
int front_reload(struct front *f, char *err, size_t err_len);
/* Stop accepting; close every connection. */
void front_stop(struct front *f);
/* Called by routes.c when libmicrohttpd starts a connection that front.c added: the peer
 * whose id the fake client address carries, removed from the table (caller frees). */
struct front_peer *front_claim(struct front *f, uint64_t id);
/* The fake client address front.c gives libmicrohttpd for connection id, and back. */
void front_fake_address(uint64_t id, struct sockaddr_in6 *out);
bool front_fake_id(const struct sockaddr *sa, uint64_t *id);

/* routes.c */
struct routes *routes_start(struct serve *s, int http_fd, char *err, size_t err_len);
/* Hand a decrypted API connection (one end of a socketpair) to the API daemon. */
int routes_add_api(struct routes *r, int fd, uint64_t id);
void routes_stop(struct routes *r);

/* serve.c */
int serve_run(const struct serve_options *o);

#endif
