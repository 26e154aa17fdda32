/*
 * A certificate authority on disk: a directory (mode 0700) holding
 *
 *   root.pem          the root certificate: the CA bundle peers trust (--ca)
 *   root.key          the root key, unless it was written elsewhere to be kept offline
 *   intermediate.pem  the issuing CA (pathlen 0), signed by the root
 *   intermediate.key  its key (0600), optionally encrypted; absent when the issuing key is on a
 *                     PKCS#11 token (mtls ca init --key-uri): the inventory's settings then
 *                     hold the key's URI and module (meta issuer_key_uri, issuer_key_module),
 *                     and authority_load_key() logs in to the token with the passphrase as PIN
 *   crl.pem           the intermediate's current CRL
 *   ca.db             the inventory and audit log (store.h), or
 *   store             instead, one line: the postgresql:// URL of the inventory's database,
 *                     which several CA nodes (copies of this directory) share
 *   lock              taken (flock) by every command that changes the CA
 * and, while a root rollover is under way (ca/rollover.h), root-prev.pem, root-next.pem,
 * link.pem, intermediate-prev.pem, intermediate-next.pem (and root-next.key).
 */
#ifndef MTLS_CA_AUTHORITY_H
#define MTLS_CA_AUTHORITY_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

#include <openssl/x509.h>

#include "files.h"
#include "store.h"

struct authority {
	char dir[PATH_MAX - 64];
	struct store *store;
	/* the root of root.pem that issued intermediate.pem (the first one if none did): the
	 * root issued chains lead to, which tokens pin; during a root rollover (rollover.h) the
	 * old root until the switch, the new one from then on */
	X509 *root;
	X509 *issuer;
	/* root.pem and intermediate.pem as last read; generation counts the reads that found
	 * them changed (authority_refresh()) */
	struct stat root_st, issuer_st;
	unsigned generation;
	char refresh_err[512]; /* why the last refresh in authority_lock() failed, or "" */
	EVP_PKEY *issuer_key;  /* after authority_load_key() */
	/* "" (the issuing key is intermediate.key), or the PKCS#11 URI of the issuing key on a
	 * token, checked with pkcs11_uri_check(), and the module to load it with ("": the URI's
	 * module-path, else p11-kit's proxy) */
	char key_uri[4097];
	char key_module[1024];
	int lock_fd;
	char crl_url[2049];  /* "" or an URL that passed issue_check_crl_url() */
	char ocsp_url[2049]; /* "" or an URL that passed issue_check_ocsp_url() */
	bool must_staple;    /* server and peer leaves carry the TLS feature status_request */
	long server_days;
	long client_days;
	long crl_days;
	long crl_seconds; /* > 0: the validity of the next CRL instead of crl_days (mtls ca crl
			   * --valid-for: drills and tests of an expiring CRL) */
	/* crl.pem is gone and no copy is left: publish anyway (`mtls ca crl --replace-missing`),
	 * with a number above any CRL published since the last one logged (crl_prepare()) */
	bool crl_replace_missing;
	struct files_staged room; /* authority_take_room() */
};

struct authority_init {
	const char *dir;
	const char *root_key_dir; /* NULL: the root key stays in dir */
	const char *name;	  /* organisation / CA name */
	const char *key_alg;	  /* CA keys, default p384 */
	long root_days;
	long intermediate_days;
	long server_days;
	long client_days;
	long crl_days;
	const char *crl_url;	/* checked with issue_check_crl_url() */
	const char *ocsp_url;	/* OCSP responder for leaves' authorityInfoAccess, checked with
				 * issue_check_ocsp_url(), or NULL */
	bool must_staple;	/* server and peer leaves must-staple (RFC 7633); needs ocsp_url */
	const char *passphrase; /* encrypts both CA keys, or NULL; with key_uri, the token's PIN
				 * (and it encrypts the root key) */
	/* the issuing key on a PKCS#11 token (pkcs11.h) instead of a new intermediate.key: its
	 * URI (no PIN in it) and module (NULL: the URI's module-path, else p11-kit's proxy),
	 * recorded in the inventory; the intermediate certifies the token's public key */
	const char *key_uri;
	const char *key_module;
	/* a postgresql:// URL without a password (store_url_check()): the inventory is made in
	 * that database, which must hold none, and DIR/store names it; NULL: DIR/ca.db */
	const char *store_url;
};

/* Create a new CA. Refuses to touch a directory that already holds one. */
int authority_create(const struct authority_init *init, char *err, size_t err_len);
enum authority_lock {
	AUTHORITY_UNLOCKED,  /* reads that need no consistency with the files (list) */
	AUTHORITY_EXCLUSIVE, /* every command that changes the CA */
	AUTHORITY_SHARED,    /* reads of the inventory together with crl.pem (audit) */
};

/* Open an existing CA, holding its lock as asked until authority_close(). Unlocked and
 * shared opens only read, so they work on a full disk too (store_open_read()). */
struct authority *authority_open(const char *dir, enum authority_lock lock, char *err,
				 size_t err_len);
/* For a long-running process (mtls ca serve), which opens the CA with AUTHORITY_EXCLUSIVE
 * and then holds the lock only around each change, so that local `mtls ca` commands on the
 * same directory run in between: authority_unlock() releases the flock right after the
 * open, authority_lock() takes it again (waiting for a command that holds it) and removes
 * what a killed writer left. 0, or -1 with a message. */
int authority_lock(struct authority *ca, char *err, size_t err_len);
/* The same without waiting: 0 locked, 1 another process holds the lock, -1 with a message. */
int authority_trylock(struct authority *ca, char *err, size_t err_len);
void authority_unlock(struct authority *ca);
/* Read root.pem and intermediate.pem again if either changed since the last read (a `mtls ca
 * rollover` step while `mtls ca serve` runs): authority_lock() and authority_trylock() call it, so
 * that every change is made with the certificates on disk. A new intermediate.pem must match the
 * issuing key if it is loaded. 1 read anew (generation bumped), 0 unchanged, -1 with a message (the
 * previous certificates kept). */
int authority_refresh(struct authority *ca, char *err, size_t err_len);
/* Load the issuing key (passphrase NULL if not encrypted): intermediate.key, or the key on
 * the PKCS#11 token ca->key_uri names, with passphrase as the token's PIN (the caller wipes
 * it; the key keeps the token's session). Either must match intermediate.pem. 0, or -1 with
 * a one-line message (wrong passphrase or PIN, no such key or token, module missing, the
 * token's key not the CA's). */
int authority_load_key(struct authority *ca, const char *passphrase, char *err, size_t err_len);
void authority_close(struct authority *ca);
/* dir/name into buf. */
const char *authority_path(const struct authority *ca, const char *name, char *buf, size_t len);
/* The actor for the audit log: "user@host". */
const char *authority_actor(void);

/* Record a CA certificate (root, intermediate, link) in the inventory with its audit entry
 * (action, detail). 0, or -1. */
int authority_record_ca(struct store *st, X509 *cert, const char *profile, const char *action,
			const char *detail, time_t now);
/* Take room in the CA directory for an issuance and, should its files then not be
 * delivered, for the revocation and CRL that take it back (AUTHORITY_ROOM plus twice
 * crl.pem): allocated to a temporary file (room.tmp-<hex>), so that another process filling
 * the disk meanwhile cannot take it; an issue that could commit but then not revoke would
 * leave a valid certificate nobody holds. authority_release_room() gives it back just
 * before the revocation needs it (authority_close() does too; a killed issue's file is
 * removed by the next exclusive authority_open()). 0, or -1 with a one-line "disk nearly
 * full" message. */
#define AUTHORITY_ROOM (256 * 1024)
int authority_take_room(struct authority *ca, char *err, size_t err_len);
void authority_release_room(struct authority *ca);

/* Everything `mtls ca audit` checks, in one read transaction: the audit chain, the inventory
 * against it, the published crl.pem against both, and each of the ncrls CRL files in crls
 * (copies of CRLs this CA published, from the distribution point: crl_check_file()). One
 * line in out: "audit log intact: N entries" (and, on a second line, a note when crl.pem is
 * behind the inventory), or what is wrong. Open ca with AUTHORITY_SHARED so that no command
 * changes the CA meanwhile. 0 all agree, 1 they do not, -1 error (in out). */
int authority_audit(struct authority *ca, const char *const *crls, size_t ncrls, char *out,
		    size_t out_len);

/* crl.c. Publishing a CRL is two steps so that the CRL (its number, its entries) is
 * committed before it is published:
 *   store_begin(); ... crl_prepare(); store_commit(); crl_write();
 * A process killed in between leaves a committed CRL that was never written: the next
 * publication makes a newer one. Numbers are never reused. */
struct crl_pending {
	char *pem; /* the signed CRL (PEM) */
	size_t len;
	int64_t number;
};

/* Inside a store transaction: check that the inventory, its audit log and the published
 * crl.pem agree (store_check(), crl_check()), then sign a CRL of every revoked certificate
 * with a new number, and record it (store_crl_add()). 0, or -1 with a message. */
int crl_prepare(struct authority *ca, struct crl_pending *out, char *err, size_t err_len);
/* The same at the time now (the CRL's thisUpdate, nextUpdate now + crl_days) with actor in
 * its audit entry; crl_prepare() is this with time(NULL) and authority_actor(). */
int crl_prepare_at(struct authority *ca, time_t now, const char *actor, struct crl_pending *out,
		   char *err, size_t err_len);
/* After the commit: write dir/crl.pem atomically. -1 with errno ENOSPC when the disk is
 * full. */
int crl_write(struct authority *ca, const struct crl_pending *crl, char *err, size_t err_len);
void crl_pending_free(struct crl_pending *crl);

/* The published crl.pem against the inventory and the audit log (chk from store_check()):
 * it must be a CRL of this CA, each of its entries revoked in the inventory with the same
 * reason and date, its number and SHA-256 those of a CRL the audit log records, and the
 * audit entries it was signed over (its checkpoint: their count and the chain head) still
 * in the log, unchanged. A missing crl.pem after a logged CRL disagrees too, unless
 * ca->crl_replace_missing. Sets *number to its CRL number (0 without a crl.pem) and *stale
 * when it is older than the newest committed CRL (a publication interrupted after its
 * commit). 0 agree, 1 disagree (err says how and what to do), -1 error. */
int crl_check(struct authority *ca, const struct store_check *chk, int64_t *number, bool *stale,
	      char *err, size_t err_len);
/* The same checks for a copy of a CRL this CA published (PEM or DER, from the distribution
 * point or a relying party), whatever its age: a CRL newer than the log, or one whose
 * checkpoint the log no longer matches, shows the log was cut back or rewritten. */
int crl_check_file(struct authority *ca, const struct store_check *chk, const char *path,
		   int64_t *number, char *err, size_t err_len);
/* Revocation reasons by name ("keyCompromise", ...); -1 if unknown. */
int crl_reason_code(const char *name);
const char *crl_reason_names(void);

#endif
