/*
 * A certificate that renews itself at the CA service (mtls ca serve): when to renew and
 * when to try again (renewal_schedule(), renewal_backoff(), renewal_warn_at()), one renewal
 * (renewal_renew()), and the CA's root bundle kept fresh (renewal_refresh_roots()).
 *
 * Used by mtls renew (one shot), the daemons' renewal thread (tunnel/renewer.c) and mtls
 * agent. Nothing here logs or keeps a thread: the caller decides when, and says what
 * happened. The times are UNIX seconds; the functions that reach the CA block for at most
 * the client's timeouts (caclient.h) and can be interrupted through stop.
 *
 * The files are named one by one (a daemon's --cert, --key and --ca may be anywhere):
 *   cert  the certificate chain, leaf first, PEM
 *   key   its private key, PEM, unencrypted (it is replaced by a new one: 0600)
 *   ca    the root bundle the CA service is verified against, and the renewed chain too
 */
#ifndef MTLS_RENEW_RENEWAL_H
#define MTLS_RENEW_RENEWAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/x509.h>

#include "caclient.h"

struct renewal_files {
	const char *cert;
	const char *key;
	const char *ca;
};

/* ---- When ---- */

#define RENEWAL_JITTER_PERMILLE 50    /* renew within ±5 % of the lifetime around ⅔ of it */
#define RENEWAL_LATEST_PERMILLE 750   /* and never after 75 % */
#define RENEWAL_RETRY_FIRST	30    /* seconds after a first failure, doubling */
#define RENEWAL_RETRY_MAX	3600  /* at most this */
#define RENEWAL_RETRY_SHORTEST	1     /* however close the expiry */
#define RENEWAL_WARN_MAX	86400 /* cert_expiring: the last ⅙ of the life, at most a day */

/* Random bits for the jitter (RAND_bytes; 0 if it fails). */
uint32_t renewal_random(void);

/* When to renew a certificate valid from not_before to not_after, at time now: uniformly
 * (by rnd) within RENEWAL_JITTER_PERMILLE of its lifetime around ⅔ of it, never after
 * RENEWAL_LATEST_PERMILLE of it, never before now. An expired certificate, or one with no
 * lifetime, is due now (the attempt then says why it cannot renew). */
time_t renewal_schedule(time_t not_before, time_t not_after, time_t now, uint32_t rnd);

/* When to try again after the failures-th failure in a row (1 for the first), at time now:
 * RENEWAL_RETRY_FIRST doubling up to RENEWAL_RETRY_MAX, less up to a half by rnd (so that
 * daemons that failed together do not retry together); but never later than halfway to
 * not_after, so that the attempts get closer as the expiry nears, and never sooner than
 * RENEWAL_RETRY_SHORTEST. Past not_after, the doubling alone. */
time_t renewal_backoff(unsigned failures, time_t not_after, time_t now, uint32_t rnd);

/* From when a certificate not renewed yet is reported as expiring (cert_expiring): the last
 * sixth of its lifetime, or its last RENEWAL_WARN_MAX seconds if that is less. */
time_t renewal_warn_at(time_t not_before, time_t not_after);

/* ---- One renewal ---- */

#define RENEWAL_USAGE (-2) /* renewal_renew(): an unknown key type */

struct renewal_result {
	char old_serial[64], serial[64]; /* upper-case hex */
	time_t not_before, not_after;	 /* of the new certificate */
	char names[1024];		 /* its subjectAltNames, "DNS:a, URI:b" */
	char key_type[16];		 /* of the new key: "p256" */
	bool same_key;
};

/* The key type keys_generate() would make for a key like key ("p256", "rsa3072", ...; an
 * RSA key under 3072 bits gives "rsa3072"), or NULL for one it cannot make. */
const char *renewal_key_type(EVP_PKEY *key);

/* Is name a key type keys_generate() makes? */
bool renewal_key_type_known(const char *name);

/* Can leaf authenticate its own renewal? The CA service takes the certificate being renewed
 * as the TLS client certificate, with clientAuth or serverAuth in its extendedKeyUsage (a
 * certificate of every profile the CA issues: its API accepts a server's own certificate
 * as its credential, mtls_config_insecure_server_eku_clients()); one with neither cannot. */
bool renewal_leaf_can_renew(X509 *leaf);
#define RENEWAL_NO_CLIENT_AUTH                                                                     \
	"its extendedKeyUsage names neither clientAuth nor serverAuth, and the CA service "        \
	"authenticates a renewal by the TLS certificate being renewed: enroll again with a "       \
	"token of the client, server or peer profile"

/* Renew the certificate in f->cert at the CA's API base ("https://HOST:PORT", checked with
 * caclient_base_url()): POST /v1/renew over TLS, authenticated by f->cert and f->key, the
 * server verified against f->ca; with a new key of key_type (NULL: the type of the current
 * key), or the current key if same_key. The answer is checked (caclient_issued_check():
 * our key, verifies to a root of f->ca, carries names); then the chain and its key replace
 * f->cert and f->key as one change (fileset_write(), crash-safe: the chain first, the key 0600
 * after it; if the key cannot take its place the old chain is put back). A replacement that a crash
 * cut short is finished first (renewal_recover()). The directories of the two files are locked
 * (flock, as mtls enroll and mtls renew do) for the whole renewal: a renewal of the same files
 * already under way is a failure, not a wait. 0 with out filled; -1 with the message (the files as
 * they were, unless it says otherwise); RENEWAL_USAGE for an unknown key_type. The new key is wiped
 * after use. */
int renewal_renew(const char *base, const struct renewal_files *f, const char *key_type,
		  bool same_key, const atomic_bool *stop, struct renewal_result *out, char *err,
		  size_t err_len);

/* Are f->cert and f->key two files (not one name twice, nor two names of one file: a
 * combined PEM file)? A renewal replaces them one after the other, so one file would end
 * up holding the key alone. 0, or -1 with the message. renewal_renew() checks it before
 * it asks the CA. */
int renewal_files_apart(const struct renewal_files *f, char *err, size_t err_len);

/* Finish or take back a replacement of f->cert and f->key that a crash (a kill, a power
 * cut) cut short, so that the two match again: the new pair if the change had begun (its
 * journal written: the new key is never lost), else the old (fileset_recover()); and remove
 * the temporary files such a crash leaves. f->key may be NULL (the journal beside f->cert
 * names the key). Takes the directories' locks as renewal_renew() does (waiting for a
 * renewal under way elsewhere to end), which calls it first itself; call it at start,
 * before the files are read. 0, or -1 with the message. */
int renewal_recover(const struct renewal_files *f, char *err, size_t err_len);

/* ---- The roots ---- */

/* What renewal_refresh_roots() remembers between calls: the roots the CA served last. */
struct renewal_roots {
	unsigned char seen[CACLIENT_MAX_CERTS][32]; /* SHA-256 of their DER */
	int nseen;
	/* the served roots left out last (renewal_roots_take()): how many, and their set */
	int left_out;
	unsigned char left_set[32];
	/* set when a new set of roots is left out: said once (the caller logs it, then sets
	 * note[0] to '\0') */
	char note[640];
};

enum renewal_roots_result {
	RENEWAL_ROOTS_FAILED = -1, /* not fetched, or not acceptable: msg says why */
	RENEWAL_ROOTS_SAME = 0,	   /* f->ca holds what the CA serves */
	RENEWAL_ROOTS_REPLACED,	   /* f->ca replaced (atomically) by what the CA serves */
	RENEWAL_ROOTS_LEFT_ALONE,  /* f->ca is not the CA service's alone: untouched */
};

/* Keep f->ca the CA service's root bundle: GET /roots.pem from base, the server verified
 * against f->ca. The answer holds roots (self-signed, CA:TRUE) and may hold link
 * certificates (a CA certificate with a new root's subject and key, issued by a root of
 * f->ca: RFC 4210's newWithOld); at most CACLIENT_MAX_CERTS in all. It is taken only if
 * every root in it is either in f->ca already or vouched for by such a link (the TLS check
 * of the API proves only that its server holds a certificate of the current root, which
 * other servers of the same CA may hold too: a new trust anchor needs the old key's word),
 * and its roots verify f->cert's chain now (a new bundle never locks the daemon out of its
 * own certificate). f->ca is replaced only if it is the CA service's: every certificate in it
 * is in the bundle just served or in the one served at the previous call (st). So a
 * rollover needs nothing by hand: the CA serves old and new roots with the link, both
 * roots are taken; then only the new one, and the old one goes. A file that holds other CAs
 * as well (an operator's bundle) is left alone, and so is a file after a restart of the
 * daemon half-way through a rollover (its st is new): both say so in msg. A new file holds
 * the roots alone, in the order served, PEM re-encoded, with the old file's mode. st is
 * updated by every acceptable answer. */
/* The rule of renewal_refresh_roots() on the certificates served (roots and link
 * certificates) and the roots trusted now: the roots to take, in the order served (*taken,
 * not referenced: served owns them), and how many served roots are left out. A root is
 * taken if trusted already or vouched for by a link from a trusted root. A link that
 * certifies a root trusted already is not needed and is ignored; the root that issued it (a
 * rollover's old root, served to hosts that still trust it) is left out unless vouched for
 * otherwise: a host that trusts only the new root is not made to trust the old one on the
 * CA service's word. Any other certificate, or root, makes the bundle unacceptable: -1 with
 * msg. */
int renewal_roots_take(STACK_OF(X509) * served, STACK_OF(X509) * trusted, const char *ca,
		       STACK_OF(X509) * *taken, int *left_out, char *msg, size_t msg_len);

enum renewal_roots_result renewal_refresh_roots(const char *base, const struct renewal_files *f,
						struct renewal_roots *st, const atomic_bool *stop,
						char *msg, size_t msg_len);

#endif /* MTLS_RENEW_RENEWAL_H */
