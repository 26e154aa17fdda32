/*
 * Rolling the CA's root over to a new root key, in three steps that the daemons follow by
 * themselves (they take a new root from /roots.pem only with a link certificate, and drop
 * an old one once it is no longer served: renew/renewal.h):
 *
 *   begin   a new root key and self-signed root ("NAME Root CA G2", G3, ...: another
 *           subject, so that no chain builder can mistake one root for the other), and a
 *           link certificate: the new root's subject and key, CA:TRUE, issued and signed
 *           by the old root (RFC 4210 newWithOld). root.pem becomes old root, new root,
 *           link: what /roots.pem serves, so that every daemon takes the new root.
 *   switch  the SAME intermediate key certified by the new root (intermediate.pem: same
 *           subject and key, issuer the new root; same notAfter). The issuing key does not
 *           change, so CRLs and OCSP answers verify under both chains, and leaves issued
 *           before chain through either intermediate certificate. From now on chains are
 *           leaf and new intermediate (as long as before, ending at the other root: the
 *           daemons load them as a rotation), and tokens pin the new root (authority.h).
 *           Every daemon must have taken the new root before: wait at least their
 *           --ca-refresh after begin.
 *   finish  root.pem holds the new root alone. Refused
 *           while leaves issued before the switch are unexpired, unrevoked and not renewed
 *           since (a later certificate with the same subject and names), unless forced.
 *
 * The phase is kept in the inventory (meta rollover_phase, rollover_begun_at,
 * rollover_switched_at, rollover_new_key), committed with the step's audit entry; the files
 * of each step are written before the commit (under names nobody reads) and published after
 * it, so that a step killed half-way leaves the previous phase, or the new phase with the
 * files still to publish: rollover_recover(), which every step runs first, completes it.
 * Files during a rollover (in the CA directory): root-prev.pem, root-next.pem, link.pem,
 * intermediate-prev.pem and intermediate-next.pem (after switch), root-next.key (the new
 * root key, unless --new-root-key-dir put it elsewhere as root.key).
 *
 * Renewing the issuing CA (rollover_renew_issuer(), `mtls ca renew-issuer`) is the other
 * replacement, one step with no phase: the SAME intermediate key and subject (so the same
 * subjectKeyIdentifier) certified again by the same root with a new validity. Leaves issued
 * before still chain (to the old certificate until it expires, to the new one after), CRLs
 * and OCSP answers signed by the key verify under both, and the root does not change, so no
 * link certificate is needed. The new certificate is written as intermediate-renewed.pem,
 * recorded in the inventory with its audit entry (action renew-issuer), then published:
 * intermediate-prev.pem the old one (kept until a root rollover's switch replaces it),
 * intermediate.pem the new one. rollover_recover() finishes one killed after its commit.
 * A new intermediate KEY is not offered: its leaves' CRLs would need the old key to keep
 * signing beside the new one until they expire, which the CA (one issuing key, one CRL)
 * does not do.
 *
 * Every function takes a CA opened with AUTHORITY_EXCLUSIVE.
 */
#ifndef MTLS_CA_ROLLOVER_H
#define MTLS_CA_ROLLOVER_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <openssl/x509.h>

struct authority;

enum rollover_phase { ROLLOVER_NONE, ROLLOVER_BEGUN, ROLLOVER_SWITCHED };

struct rollover_state {
	enum rollover_phase phase;
	time_t begun_at, switched_at;
	char new_key[PATH_MAX]; /* where the new root key is */
};

/* The phase from the inventory. 0, or -1 with a message. */
int rollover_state(struct authority *ca, struct rollover_state *out, char *err, size_t err_len);
const char *rollover_phase_name(enum rollover_phase p);

/* Complete a step that was killed after its commit, and remove the files of one killed
 * before it. 0, or -1 with a message. */
int rollover_recover(struct authority *ca, char *err, size_t err_len);

struct rollover_begin_opts {
	const char *root_key; /* the old root key's file; NULL: DIR/root.key */
	const char
		*new_root_key_dir; /* the new key goes there as root.key; NULL: DIR/root-next.key */
	long days;		   /* the new root's lifetime; <= 0: the old root's */
	const char *passphrase;	   /* of the old root key, and the new one's; or NULL */
	time_t now;
};
/* 0 begun, 1 refused (a rollover in progress, root.pem not one root, a wrong key: err
 * says), -1 failed with nothing changed (err says). */
int rollover_begin(struct authority *ca, const struct rollover_begin_opts *o, char *err,
		   size_t err_len);
/* passphrase of the new root key, or NULL. 0, 1 refused (not begun, or switched), -1. */
int rollover_switch(struct authority *ca, const char *passphrase, time_t now, char *err,
		    size_t err_len);

/* The leaves that still carry a chain through the old root: issued before the switch (or
 * all of them before it), not expired at now, not revoked, and not renewed since. */
struct rollover_left {
	long long count;
	time_t latest_not_after;
	char example[160]; /* the subject of the one that expires last */
};
int rollover_left(struct authority *ca, time_t now, struct rollover_left *out, char *err,
		  size_t err_len);
/* 0 finished, 1 refused (not switched, or leaves left without force: *left says how many),
 * -1 failed. With force, left is filled too (what was left behind). */
int rollover_finish(struct authority *ca, bool force, time_t now, struct rollover_left *left,
		    char *err, size_t err_len);

struct rollover_issuer_opts {
	const char *root_key;	/* the root key's file; NULL: DIR/root.key */
	long days;		/* the new certificate's lifetime; <= 0: the current one's */
	const char *passphrase; /* of the root key, or NULL */
	time_t now;
};
/* Renew the issuing CA under the same root and key (above). Refused during a root
 * rollover, with a wrong root key, or when the lifetime would outlive the root (err says
 * to roll the root over, or how many days fit). 0 renewed (ca->issuer is the new
 * certificate), 1 refused, -1 failed (err says; nothing changed unless it says the renewal
 * is committed). */
int rollover_renew_issuer(struct authority *ca, const struct rollover_issuer_opts *o, char *err,
			  size_t err_len);

#endif
