/*
 * Root rollover: begin, switch, finish (rollover.h).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "authority.h"
#include "files.h"
#include "issue.h"
#include "keys.h"
#include "rollover.h"

#define BACKDATE 300 /* as authority.c: peers with slightly slow clocks accept it */
#define DAY	 86400L

/* the files of a rollover, in the CA directory */
#define F_PREV	   "root-prev.pem"
#define F_NEXT	   "root-next.pem"
#define F_LINK	   "link.pem"
#define F_INT_PREV "intermediate-prev.pem"
#define F_INT_NEXT "intermediate-next.pem"
#define F_NEXT_KEY "root-next.key"
/* the renewed issuing CA between its signing and its publication (rollover_renew_issuer()) */
#define F_INT_RENEWED "intermediate-renewed.pem"

const char *rollover_phase_name(enum rollover_phase p)
{
	switch (p) {
	case ROLLOVER_BEGUN: return "begun";
	case ROLLOVER_SWITCHED: return "switched";
	case ROLLOVER_NONE: break;
	}
	return "none";
}

static int store_failed(struct authority *ca, char *err, size_t err_len)
{
	snprintf(err, err_len, "%s", store_error(ca->store));
	return -1;
}

static time_t meta_time(struct authority *ca, const char *key)
{
	char v[32];

	if (store_get_meta(ca->store, key, v, sizeof(v)) != 0)
		return 0;
	return (time_t)strtoll(v, NULL, 10);
}

int rollover_state(struct authority *ca, struct rollover_state *out, char *err, size_t err_len)
{
	char v[32];

	memset(out, 0, sizeof(*out));
	switch (store_get_meta(ca->store, "rollover_phase", v, sizeof(v))) {
	case 0: break;
	case 1: return 0; /* never rolled over */
	default: return store_failed(ca, err, err_len);
	}
	if (strcmp(v, "begun") == 0)
		out->phase = ROLLOVER_BEGUN;
	else if (strcmp(v, "switched") == 0)
		out->phase = ROLLOVER_SWITCHED;
	else if (strcmp(v, "none") != 0) {
		snprintf(err, err_len,
			 "the inventory names an unknown rollover phase '%.20s'; investigate", v);
		return -1;
	}
	out->begun_at = meta_time(ca, "rollover_begun_at");
	out->switched_at = meta_time(ca, "rollover_switched_at");
	if (store_get_meta(ca->store, "rollover_new_key", out->new_key, sizeof(out->new_key)) < 0)
		out->new_key[0] = '\0';
	return 0;
}

/* Every certificate of a PEM file (at least one), or NULL with a message. */
static STACK_OF(X509) * read_certs(const char *path, char *err, size_t err_len)
{
	size_t len = 0;
	char *pem = files_read(path, &len, err, err_len);
	STACK_OF(X509) *out = pem != NULL ? sk_X509_new_null() : NULL;
	BIO *bio = out != NULL ? BIO_new_mem_buf(pem, (int)len) : NULL;
	X509 *x;

	if (bio != NULL) {
		while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
			if (!sk_X509_push(out, x)) {
				X509_free(x);
				break;
			}
	}
	ERR_clear_error();
	BIO_free(bio);
	free(pem);
	if (out != NULL && sk_X509_num(out) == 0) {
		snprintf(err, err_len, "%s holds no PEM certificate; restore it from a backup",
			 path);
		sk_X509_free(out);
		return NULL;
	}
	return out;
}

static X509 *read_one(struct authority *ca, const char *name, char *err, size_t err_len)
{
	char path[PATH_MAX];
	STACK_OF(X509) *s = read_certs(authority_path(ca, name, path, sizeof(path)), err, err_len);
	X509 *x = s != NULL ? sk_X509_shift(s) : NULL;

	sk_X509_pop_free(s, X509_free);
	return x;
}

/* The certificates as one PEM text; free() it. */
static char *pem_of(X509 *const *certs, int n, size_t *len)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data, *out = NULL;
	long l;

	for (int i = 0; bio != NULL && i < n; i++)
		if (PEM_write_bio_X509(bio, certs[i]) != 1)
			goto out;
	if (bio == NULL || (l = BIO_get_mem_data(bio, &data)) <= 0)
		goto out;
	out = malloc((size_t)l + 1);
	if (out != NULL) {
		memcpy(out, data, (size_t)l);
		out[l] = '\0';
		*len = (size_t)l;
	}
out:
	BIO_free(bio);
	return out;
}

static int write_certs(struct authority *ca, const char *name, X509 *const *certs, int n, char *err,
		       size_t err_len)
{
	char path[PATH_MAX];
	size_t len = 0;
	char *pem = pem_of(certs, n, &len);
	int rc;

	if (pem == NULL) {
		snprintf(err, err_len, "out of memory");
		return -1;
	}
	rc = files_write(authority_path(ca, name, path, sizeof(path)), pem, len, 0644, false, err,
			 err_len);
	free(pem);
	return rc;
}

static void remove_file(struct authority *ca, const char *name)
{
	char path[PATH_MAX];

	if (unlink(authority_path(ca, name, path, sizeof(path))) != 0 && errno != ENOENT) {
		/* left behind: the next step's rollover_recover() tries again */
	}
}

/* Is the file's content exactly these certificates? */
static bool holds_exactly(struct authority *ca, const char *name, X509 *const *certs, int n)
{
	char path[PATH_MAX], err[256];
	STACK_OF(X509) *s =
		read_certs(authority_path(ca, name, path, sizeof(path)), err, sizeof(err));
	bool same = s != NULL && sk_X509_num(s) == n;

	for (int i = 0; same && i < n; i++)
		same = X509_cmp(sk_X509_value(s, i), certs[i]) == 0;
	sk_X509_pop_free(s, X509_free);
	return same;
}

/* Did issuer's key sign x, and does x name it as its issuer? */
static bool issued_by(X509 *issuer, X509 *x)
{
	bool ok = X509_check_issued(issuer, x) == X509_V_OK &&
		  X509_verify(x, X509_get0_pubkey(issuer)) == 1;

	ERR_clear_error();
	return ok;
}

/* The root bundle of the begun and switched phases: old root, new root, link. */
static int bundle_of(struct authority *ca, X509 *b[3], char *err, size_t err_len)
{
	b[0] = read_one(ca, F_PREV, err, err_len);
	b[1] = b[0] != NULL ? read_one(ca, F_NEXT, err, err_len) : NULL;
	b[2] = b[1] != NULL ? read_one(ca, F_LINK, err, err_len) : NULL;
	if (b[2] != NULL)
		return 0;
	X509_free(b[0]);
	X509_free(b[1]);
	b[0] = b[1] = NULL;
	return -1;
}

/* intermediate-prev.pem is a rollover's (the intermediate under the old root, removed when
 * the rollover ends or a switch is taken back) or a renewal's (the same root's previous
 * certificate, kept): removed only when its issuer is not intermediate.pem's. */
static void remove_int_prev(struct authority *ca)
{
	char err[256];
	X509 *prev = read_one(ca, F_INT_PREV, err, sizeof(err));

	if (prev == NULL || ca->issuer == NULL ||
	    X509_NAME_cmp(X509_get_issuer_name(prev), X509_get_issuer_name(ca->issuer)) != 0)
		remove_file(ca, F_INT_PREV);
	X509_free(prev);
}

/* Is this certificate in the inventory? 1 yes, 0 no, -1 the store failed. */
static int in_inventory(struct authority *ca, X509 *x)
{
	char serial[64];
	struct store_cert c;

	int rc;

	issue_serial_hex(x, serial, sizeof(serial));
	rc = store_get_cert(ca->store, serial, &c);
	return rc < 0 ? -1 : rc == 0;
}

/* A renewal of the issuing CA killed after its commit is published (the previous
 * certificate kept as intermediate-prev.pem); one killed before it is removed. Every step
 * of the publication is repeatable, so a crash in this one is finished by the next. */
static int recover_renewed(struct authority *ca, char *err, size_t err_len)
{
	char path[PATH_MAX];
	X509 *renewed = NULL, *current = NULL;
	int rc = -1, known;

	if (!files_exists(authority_path(ca, F_INT_RENEWED, path, sizeof(path))))
		return 0;
	renewed = read_one(ca, F_INT_RENEWED, err, err_len);
	if (renewed == NULL) {
		/* killed while writing it, before the commit (files_write() is whole or absent):
		 * unreadable means not ours; leave it for a human */
		return -1;
	}
	known = in_inventory(ca, renewed);
	if (known < 0) {
		store_failed(ca, err, err_len);
		goto out;
	}
	if (known == 0) {
		remove_file(ca, F_INT_RENEWED); /* killed before the commit */
		rc = 0;
		goto out;
	}
	current = read_one(ca, "intermediate.pem", err, err_len);
	if (current == NULL)
		goto out;
	if (X509_cmp(current, renewed) != 0) {
		if (write_certs(ca, F_INT_PREV, &current, 1, err, err_len) != 0 ||
		    write_certs(ca, "intermediate.pem", &renewed, 1, err, err_len) != 0)
			goto out;
	}
	remove_file(ca, F_INT_RENEWED);
	files_sync_dir(path);
	rc = authority_refresh(ca, err, err_len) < 0 ? -1 : 0;
out:
	X509_free(renewed);
	X509_free(current);
	return rc;
}

int rollover_recover(struct authority *ca, char *err, size_t err_len)
{
	struct rollover_state s;
	char path[PATH_MAX];
	X509 *b[3] = {NULL, NULL, NULL}, *next = NULL, *inter = NULL;
	int rc = -1;

	if (recover_renewed(ca, err, err_len) != 0 || rollover_state(ca, &s, err, err_len) != 0)
		return -1;
	if (s.phase == ROLLOVER_NONE) {
		if (!files_exists(authority_path(ca, F_NEXT, path, sizeof(path)))) {
			/* what a finish left after root-next.pem went, or nothing */
			remove_file(ca, F_LINK);
			remove_file(ca, F_PREV);
			remove_int_prev(ca);
			remove_file(ca, F_INT_NEXT);
			return 0;
		}
		next = read_one(ca, F_NEXT, err, err_len);
		if (next == NULL)
			return -1;
		if (issued_by(next, ca->issuer)) {
			/* a finish killed after its commit: publish the new root alone */
			if (!holds_exactly(ca, "root.pem", &next, 1) &&
			    write_certs(ca, "root.pem", &next, 1, err, err_len) != 0)
				goto out;
			authority_path(ca, F_NEXT_KEY, path, sizeof(path));
			if (files_exists(path)) {
				char key[PATH_MAX];

				if (rename(path,
					   authority_path(ca, "root.key", key, sizeof(key))) != 0) {
					snprintf(err, err_len, "cannot rename %s to %s: %s", path,
						 key, strerror(errno));
					goto out;
				}
				files_sync_dir(key);
			}
		} else {
			/* a begin killed before its commit: nothing of it was published */
			remove_file(ca, F_NEXT_KEY);
		}
		remove_file(ca, F_LINK);
		remove_file(ca, F_PREV);
		remove_int_prev(ca);
		remove_file(ca, F_INT_NEXT);
		remove_file(ca, F_NEXT);
		rc = 0;
		goto out;
	}
	/* begun or switched: root.pem must be the bundle */
	if (bundle_of(ca, b, err, err_len) != 0)
		goto out;
	if (!holds_exactly(ca, "root.pem", b, 3) && write_certs(ca, "root.pem", b, 3, err, err_len))
		goto out;
	if (s.phase == ROLLOVER_SWITCHED) {
		inter = read_one(ca, F_INT_NEXT, err, err_len);
		if (inter == NULL)
			goto out;
		if (!holds_exactly(ca, "intermediate.pem", &inter, 1) &&
		    write_certs(ca, "intermediate.pem", &inter, 1, err, err_len) != 0)
			goto out;
	} else {
		/* a switch killed before its commit (a renewal's intermediate-prev.pem stays) */
		remove_file(ca, F_INT_NEXT);
		remove_int_prev(ca);
	}
	rc = authority_refresh(ca, err, err_len) < 0 ? -1 : 0;
out:
	X509_free(b[0]);
	X509_free(b[1]);
	X509_free(b[2]);
	X509_free(next);
	X509_free(inter);
	return rc;
}

/* The CN and O of a certificate's subject. */
static void name_parts(X509 *x, char cn[65], char org[65])
{
	X509_NAME *n = X509_get_subject_name(x);

	cn[0] = org[0] = '\0';
	if (X509_NAME_get_text_by_NID(n, NID_commonName, cn, 65) < 0)
		cn[0] = '\0';
	if (X509_NAME_get_text_by_NID(n, NID_organizationName, org, 65) < 0)
		org[0] = '\0';
}

/* The next generation's name: "X Root CA" -> "X Root CA G2", "X Root CA G2" -> "... G3". */
static int next_name(const char *cn, char *out, size_t len)
{
	size_t n = strlen(cn);
	const char *sp = strrchr(cn, ' ');
	long gen = 1;

	if (sp != NULL && sp[1] == 'G' && sp[2] >= '1' && sp[2] <= '9' &&
	    strspn(sp + 2, "0123456789") == strlen(sp + 2) && strlen(sp + 2) <= 6) {
		gen = strtol(sp + 2, NULL, 10);
		n = (size_t)(sp - cn);
	}
	if (snprintf(out, len, "%.*s G%ld", (int)n, cn, gen + 1) >= (int)len || strlen(out) > 64)
		return -1;
	return 0;
}

/* The keys_generate() name of key's algorithm, or NULL. */
static const char *alg_of(EVP_PKEY *key)
{
	char group[64];
	size_t glen = 0;

	switch (EVP_PKEY_get_base_id(key)) {
	case EVP_PKEY_ED25519: return "ed25519";
	case EVP_PKEY_RSA:
		return EVP_PKEY_get_bits(key) >= 4096	? "rsa4096"
		       : EVP_PKEY_get_bits(key) >= 3072 ? "rsa3072"
							: NULL;
	case EVP_PKEY_EC:
		if (EVP_PKEY_get_utf8_string_param(key, "group", group, sizeof(group), &glen) != 1)
			return NULL;
		if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0)
			return "p256";
		if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0)
			return "p384";
		return NULL;
	default: return NULL;
	}
}

/* Record a CA certificate of the rollover in the inventory, with its audit entry. */
static int record(struct authority *ca, X509 *cert, const char *profile, const char *detail,
		  time_t now)
{
	return authority_record_ca(ca->store, cert, profile, "rollover", detail, now);
}

static int set_meta_time(struct store *st, const char *key, time_t t)
{
	char v[32];

	snprintf(v, sizeof(v), "%lld", (long long)t);
	return store_set_meta(st, key, v);
}

/* Refusals common to every step: the phase it needs. */
static int need_phase(const struct rollover_state *s, enum rollover_phase want, const char *step,
		      char *err, size_t err_len)
{
	static const char *const next[] = {"begin", "switch", "finish"};

	if (s->phase == want)
		return 0;
	if (want == ROLLOVER_NONE)
		snprintf(err, err_len,
			 "a root rollover is already in progress (phase %s); 'mtls ca rollover "
			 "%s' is its next step ('mtls ca rollover status' says what is left)",
			 rollover_phase_name(s->phase), next[s->phase]);
	else if (s->phase == ROLLOVER_NONE)
		snprintf(err, err_len,
			 "no root rollover is in progress; 'mtls ca rollover begin' starts one "
			 "(%s comes after it)",
			 step);
	else
		snprintf(err, err_len,
			 "the root rollover is in phase %s: its next step is 'mtls ca rollover "
			 "%s', not %s",
			 rollover_phase_name(s->phase), next[s->phase], step);
	return 1;
}

int rollover_begin(struct authority *ca, const struct rollover_begin_opts *o, char *err,
		   size_t err_len)
{
	struct rollover_state s;
	char path[PATH_MAX], keypath[PATH_MAX], cn[65], org[65], newcn[80], detail[PATH_MAX + 400];
	char serial[64], lserial[64];
	STACK_OF(X509) *cur = NULL;
	EVP_PKEY *old_key = NULL, *new_key = NULL;
	X509 *new_root = NULL, *link = NULL, *b[3];
	struct issue_spec spec;
	struct files_staged key_file = {0};
	char *key_pem = NULL;
	size_t key_len = 0;
	const char *alg;
	time_t old_end, new_end, lifetime;
	bool wrote = false, key_written = false;
	int rc = -1;

	if (rollover_recover(ca, err, err_len) != 0 || rollover_state(ca, &s, err, err_len) != 0)
		return -1;
	if (need_phase(&s, ROLLOVER_NONE, "begin", err, err_len) != 0)
		return 1;
	cur = read_certs(authority_path(ca, "root.pem", path, sizeof(path)), err, err_len);
	if (cur == NULL)
		return -1;
	if (sk_X509_num(cur) != 1) {
		snprintf(err, err_len,
			 "%s holds %d certificates, and no rollover is in progress: a rollover "
			 "starts from one root; put the CA's root alone into it",
			 path, sk_X509_num(cur));
		rc = 1;
		goto out;
	}
	snprintf(keypath, sizeof(keypath), "%s",
		 o->root_key != NULL ? o->root_key
				     : authority_path(ca, "root.key", path, sizeof(path)));
	if (o->root_key == NULL && !files_exists(keypath)) {
		snprintf(err, err_len,
			 "%s has no root.key (kept offline?); give the current root key with "
			 "--root-key FILE",
			 ca->dir);
		rc = 1;
		goto out;
	}
	old_key = keys_load(keypath, o->passphrase, err, err_len);
	if (old_key == NULL)
		goto out;
	if (X509_check_private_key(ca->root, old_key) != 1) {
		ERR_clear_error();
		snprintf(err, err_len,
			 "%s is not the key of the root in root.pem; give the root key with "
			 "--root-key",
			 keypath);
		rc = 1;
		goto out;
	}
	alg = alg_of(old_key);
	if (alg == NULL) {
		snprintf(err, err_len, "the root key's algorithm is not one mtls makes (%s)",
			 keys_algorithms());
		goto out;
	}
	new_key = keys_generate(alg, err, err_len);
	if (new_key == NULL)
		goto out;
	name_parts(ca->root, cn, org);
	if (cn[0] == '\0' || next_name(cn, newcn, sizeof(newcn)) != 0) {
		snprintf(err, err_len,
			 "the root's common name '%.64s' leaves no room for a generation suffix",
			 cn);
		goto out;
	}
	old_end = certfields_time(X509_get0_notAfter(ca->root));
	lifetime = old_end - certfields_time(X509_get0_notBefore(ca->root));
	new_end = o->now + (o->days > 0 ? o->days * DAY : lifetime);
	if (old_end <= o->now) {
		snprintf(err, err_len,
			 "the old root expired: no link certificate can vouch for a new one; "
			 "distribute a new CA by hand");
		rc = 1;
		goto out;
	}
	spec = (struct issue_spec){.kind = ISSUE_ROOT,
				   .cn = newcn,
				   .org = org[0] != '\0' ? org : NULL,
				   .subject_key = new_key,
				   .not_before = o->now - BACKDATE,
				   .not_after = new_end};
	new_root = issue_sign(&spec, NULL, new_key, err, err_len);
	if (new_root == NULL)
		goto out;
	/* the link: the new root's subject and key, signed by the old root, within its life */
	spec.not_after = new_end < old_end ? new_end : old_end;
	link = issue_sign(&spec, ca->root, old_key, err, err_len);
	if (link == NULL)
		goto out;

	/* the files nobody reads yet, then the new key, then the commit, then root.pem */
	wrote = true;
	b[0] = ca->root;
	b[1] = new_root;
	b[2] = link;
	if (write_certs(ca, F_PREV, &b[0], 1, err, err_len) != 0 ||
	    write_certs(ca, F_NEXT, &b[1], 1, err, err_len) != 0 ||
	    write_certs(ca, F_LINK, &b[2], 1, err, err_len) != 0)
		goto out;
	if (o->new_root_key_dir != NULL) {
		if (snprintf(keypath, sizeof(keypath), "%s/root.key", o->new_root_key_dir) >=
		    (int)sizeof(keypath)) {
			snprintf(err, err_len, "--new-root-key-dir is too long");
			goto out;
		}
	} else {
		authority_path(ca, F_NEXT_KEY, keypath, sizeof(keypath));
	}
	key_pem = keys_to_pem(new_key, o->passphrase, &key_len);
	if (key_pem == NULL) {
		snprintf(err, err_len, "cannot encode the private key");
		goto out;
	}
	if (files_stage(&key_file, keypath, key_pem, key_len, 0600, err, err_len) != 0 ||
	    files_publish(&key_file, true, err, err_len) != 0)
		goto out;
	key_written = true;
	files_sync_dir(keypath);

	issue_serial_hex(new_root, serial, sizeof(serial));
	issue_serial_hex(link, lserial, sizeof(lserial));
	snprintf(detail, sizeof(detail),
		 "begin: new root serial %s, link serial %s (signed by the old root), new root "
		 "key %s",
		 serial, lserial, keypath);
	if (store_begin(ca->store) != 0) {
		store_failed(ca, err, err_len);
		goto out;
	}
	if (record(ca, new_root, "root", detail, o->now) != 0 ||
	    record(ca, link, "link", "link certificate: the new root's key certified by the old",
		   o->now) != 0 ||
	    store_set_meta(ca->store, "rollover_phase", "begun") != 0 ||
	    set_meta_time(ca->store, "rollover_begun_at", o->now) != 0 ||
	    store_set_meta(ca->store, "rollover_switched_at", "0") != 0 ||
	    store_set_meta(ca->store, "rollover_new_key", keypath) != 0 ||
	    store_commit(ca->store) != 0) {
		store_failed(ca, err, err_len);
		store_rollback(ca->store);
		goto out;
	}
	wrote = key_written = false; /* committed: recover() publishes them if we die now */
	if (write_certs(ca, "root.pem", b, 3, err, err_len) != 0) {
		size_t l = strlen(err);

		snprintf(err + l, err_len - l,
			 "; the rollover is begun: run 'mtls ca rollover status' to publish "
			 "root.pem");
		goto out;
	}
	(void)authority_refresh(ca, err, err_len);
	err[0] = '\0';
	rc = 0;
out:
	if (key_written)
		unlink(keypath);
	if (wrote) {
		remove_file(ca, F_PREV);
		remove_file(ca, F_NEXT);
		remove_file(ca, F_LINK);
	}
	files_discard(&key_file);
	if (key_pem != NULL)
		keys_free_pem(key_pem, key_len);
	sk_X509_pop_free(cur, X509_free);
	EVP_PKEY_free(old_key);
	EVP_PKEY_free(new_key);
	X509_free(new_root);
	X509_free(link);
	return rc;
}

int rollover_switch(struct authority *ca, const char *passphrase, time_t now, char *err,
		    size_t err_len)
{
	struct rollover_state s;
	char cn[65], org[65], serial[64], detail[256];
	X509 *next = NULL, *inter = NULL;
	EVP_PKEY *key = NULL;
	struct issue_spec spec;
	time_t end, root_end;
	bool wrote = false;
	int rc = -1;

	if (rollover_recover(ca, err, err_len) != 0 || rollover_state(ca, &s, err, err_len) != 0)
		return -1;
	if (need_phase(&s, ROLLOVER_BEGUN, "switch", err, err_len) != 0)
		return 1;
	next = read_one(ca, F_NEXT, err, err_len);
	if (next == NULL)
		goto out;
	key = keys_load(s.new_key, passphrase, err, err_len);
	if (key == NULL)
		goto out;
	if (X509_check_private_key(next, key) != 1) {
		ERR_clear_error();
		snprintf(err, err_len, "%s is not the key of the new root (%s); restore it",
			 s.new_key, F_NEXT);
		rc = 1;
		goto out;
	}
	/* the same subject, key and notAfter; only the issuer is new */
	name_parts(ca->issuer, cn, org);
	end = certfields_time(X509_get0_notAfter(ca->issuer));
	root_end = certfields_time(X509_get0_notAfter(next));
	spec = (struct issue_spec){.kind = ISSUE_INTERMEDIATE,
				   .cn = cn,
				   .org = org[0] != '\0' ? org : NULL,
				   .subject_key = X509_get0_pubkey(ca->issuer),
				   .not_before = now - BACKDATE,
				   .not_after = end < root_end ? end : root_end};
	if (X509_NAME_cmp(X509_get_subject_name(ca->issuer), X509_get_subject_name(next)) == 0) {
		snprintf(err, err_len, "the intermediate and the new root have the same subject");
		goto out;
	}
	inter = issue_sign(&spec, next, key, err, err_len);
	if (inter == NULL)
		goto out;
	if (X509_NAME_cmp(X509_get_subject_name(inter), X509_get_subject_name(ca->issuer)) != 0) {
		snprintf(err, err_len,
			 "the intermediate's subject is not one mtls makes (CN and O only); it "
			 "cannot be certified again under the same name");
		goto out;
	}
	wrote = true;
	if (write_certs(ca, F_INT_PREV, &ca->issuer, 1, err, err_len) != 0 ||
	    write_certs(ca, F_INT_NEXT, &inter, 1, err, err_len) != 0)
		goto out;
	issue_serial_hex(inter, serial, sizeof(serial));
	snprintf(detail, sizeof(detail),
		 "switch: the intermediate's key certified by the new root, serial %s", serial);
	if (store_begin(ca->store) != 0) {
		store_failed(ca, err, err_len);
		goto out;
	}
	if (record(ca, inter, "intermediate", detail, now) != 0 ||
	    store_set_meta(ca->store, "rollover_phase", "switched") != 0 ||
	    set_meta_time(ca->store, "rollover_switched_at", now) != 0 ||
	    store_commit(ca->store) != 0) {
		store_failed(ca, err, err_len);
		store_rollback(ca->store);
		goto out;
	}
	wrote = false;
	if (write_certs(ca, "intermediate.pem", &inter, 1, err, err_len) != 0) {
		size_t l = strlen(err);

		snprintf(err + l, err_len - l,
			 "; the switch is committed: run 'mtls ca rollover status' to publish "
			 "intermediate.pem");
		goto out;
	}
	if (authority_refresh(ca, err, err_len) < 0)
		goto out;
	/* The CA's lock is held into the next second: every certificate issued after the switch
	 * (under the lock, with the new intermediate) then has an issued_at above switched_at,
	 * and every one issued before it one at most switched_at (rollover_left()). */
	while (time(NULL) <= now)
		usleep(20000);
	rc = 0;
out:
	if (wrote) {
		remove_file(ca, F_INT_PREV);
		remove_file(ca, F_INT_NEXT);
	}
	EVP_PKEY_free(key);
	X509_free(next);
	X509_free(inter);
	return rc;
}

static void utc(time_t t, char out[32])
{
	struct tm tm;

	if (t <= 0 || gmtime_r(&t, &tm) == NULL ||
	    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, 32, "-");
}

/* ---- what is left before finish ---- */

struct left_walk {
	time_t switched_at, now;
	char **renewed; /* "subject\nsans" of the leaves issued since the switch, sorted */
	size_t n, cap;
	struct rollover_left *out;
	bool oom;
};

static bool leaf_profile(const char *p)
{
	return p != NULL &&
	       (strcmp(p, "server") == 0 || strcmp(p, "client") == 0 || strcmp(p, "peer") == 0);
}

static char *key_of(const struct store_cert *c)
{
	char *k = NULL;

	if (asprintf(&k, "%s\n%s", c->subject != NULL ? c->subject : "",
		     c->sans != NULL ? c->sans : "") < 0)
		return NULL;
	return k;
}

static int collect_renewed(const struct store_cert *c, void *arg)
{
	struct left_walk *w = arg;
	char *k;

	/* the second of the switch counts as before it: issued_at has no finer grain */
	if (!leaf_profile(c->profile) || c->issued_at <= w->switched_at)
		return 0;
	if (w->n == w->cap) {
		size_t cap = w->cap ? 2 * w->cap : 64;
		char **v = realloc(w->renewed, cap * sizeof(*v));

		if (v == NULL) {
			w->oom = true;
			return 1;
		}
		w->renewed = v;
		w->cap = cap;
	}
	k = key_of(c);
	if (k == NULL) {
		w->oom = true;
		return 1;
	}
	w->renewed[w->n++] = k;
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int count_left(const struct store_cert *c, void *arg)
{
	struct left_walk *w = arg;
	char *k;
	bool renewed;

	if (!leaf_profile(c->profile) || (w->switched_at > 0 && c->issued_at > w->switched_at) ||
	    c->not_after <= w->now)
		return 0;
	k = key_of(c);
	if (k == NULL) {
		w->oom = true;
		return 1;
	}
	renewed = w->n > 0 && bsearch(&k, w->renewed, w->n, sizeof(char *), cmp_str) != NULL;
	free(k);
	if (renewed)
		return 0;
	w->out->count++;
	if (c->not_after >= w->out->latest_not_after) {
		w->out->latest_not_after = c->not_after;
		snprintf(w->out->example, sizeof(w->out->example), "%s",
			 c->subject != NULL && c->subject[0] != '\0' ? c->subject
								     : (c->sans ? c->sans : ""));
	}
	return 0;
}

int rollover_left(struct authority *ca, time_t now, struct rollover_left *out, char *err,
		  size_t err_len)
{
	struct rollover_state s;
	struct left_walk w = {.now = now, .out = out};
	int rc = -1;

	memset(out, 0, sizeof(*out));
	if (rollover_state(ca, &s, err, err_len) != 0)
		return -1;
	w.switched_at = s.phase == ROLLOVER_SWITCHED ? s.switched_at : 0;
	if (store_begin_read(ca->store) != 0)
		return store_failed(ca, err, err_len);
	if (w.switched_at > 0 &&
	    store_each_cert(ca->store, STORE_VALID, 0, collect_renewed, &w) != 0 && !w.oom) {
		store_failed(ca, err, err_len);
		goto out;
	}
	if (!w.oom && w.n > 0)
		qsort(w.renewed, w.n, sizeof(char *), cmp_str);
	if (!w.oom && store_each_cert(ca->store, STORE_VALID, 0, count_left, &w) != 0 && !w.oom) {
		store_failed(ca, err, err_len);
		goto out;
	}
	if (w.oom) {
		snprintf(err, err_len, "out of memory");
		goto out;
	}
	rc = 0;
out:
	store_rollback(ca->store);
	for (size_t i = 0; i < w.n; i++)
		free(w.renewed[i]);
	free(w.renewed);
	return rc;
}

int rollover_finish(struct authority *ca, bool force, time_t now, struct rollover_left *left,
		    char *err, size_t err_len)
{
	struct rollover_state s;
	char detail[512], when[32], key[PATH_MAX], path[PATH_MAX];
	X509 *next = NULL;
	int rc = -1;

	memset(left, 0, sizeof(*left));
	if (rollover_recover(ca, err, err_len) != 0 || rollover_state(ca, &s, err, err_len) != 0)
		return -1;
	if (need_phase(&s, ROLLOVER_SWITCHED, "finish", err, err_len) != 0)
		return 1;
	if (rollover_left(ca, now, left, err, err_len) != 0)
		return -1;
	utc(left->latest_not_after, when);
	if (left->count > 0 && !force) {
		snprintf(err, err_len,
			 "%lld unexpired certificate%s issued before the switch %s not been "
			 "renewed (the last expires %s: %.100s): their holders would present a "
			 "chain the new root alone does not verify; wait for their renewal or "
			 "expiry, or revoke them, or give --force",
			 left->count, left->count == 1 ? "" : "s",
			 left->count == 1 ? "has" : "have", when, left->example);
		return 1;
	}
	next = read_one(ca, F_NEXT, err, err_len);
	if (next == NULL)
		return -1;
	if (left->count > 0)
		snprintf(detail, sizeof(detail),
			 "finish, forced: %lld certificate%s issued before the switch left "
			 "unrenewed (the last expires %s)",
			 left->count, left->count == 1 ? "" : "s", when);
	else
		snprintf(detail, sizeof(detail), "finish: root.pem holds the new root alone");
	{
		char *subject = issue_subject(next);

		if (subject == NULL || store_begin(ca->store) != 0) {
			if (subject == NULL)
				snprintf(err, err_len, "out of memory");
			else
				store_failed(ca, err, err_len);
			free(subject);
			goto out;
		}
		if (store_audit(ca->store, authority_actor(), "rollover", subject, detail) != 0 ||
		    store_set_meta(ca->store, "rollover_phase", "none") != 0 ||
		    store_commit(ca->store) != 0) {
			store_failed(ca, err, err_len);
			store_rollback(ca->store);
			free(subject);
			goto out;
		}
		free(subject);
	}
	/* committed: publish (rollover_recover() does the rest if we die on the way) */
	if (write_certs(ca, "root.pem", &next, 1, err, err_len) != 0)
		goto out;
	authority_path(ca, F_NEXT_KEY, path, sizeof(path));
	if (files_exists(path) &&
	    rename(path, authority_path(ca, "root.key", key, sizeof(key))) != 0) {
		snprintf(err, err_len, "cannot rename %s to %s: %s", path, key, strerror(errno));
		goto out;
	}
	files_sync_dir(path);
	if (rollover_recover(ca, err, err_len) != 0 || authority_refresh(ca, err, err_len) < 0)
		goto out;
	rc = 0;
out:
	X509_free(next);
	return rc;
}

int rollover_renew_issuer(struct authority *ca, const struct rollover_issuer_opts *o, char *err,
			  size_t err_len)
{
	struct rollover_state s;
	char cn[65], org[65], serial[64], old_serial[64], detail[384], path[PATH_MAX];
	char root_when[32], when[32];
	const ASN1_OCTET_STRING *ski_old, *ski_new;
	X509 *inter = NULL;
	EVP_PKEY *key = NULL;
	struct issue_spec spec;
	time_t root_end, not_after;
	long days;
	bool wrote = false;
	int rc = -1;

	if (rollover_recover(ca, err, err_len) != 0 || rollover_state(ca, &s, err, err_len) != 0)
		return -1;
	if (s.phase != ROLLOVER_NONE) {
		snprintf(err, err_len,
			 "a root rollover is under way (phase %s): finish it first ('mtls ca "
			 "rollover finish'), then renew the issuing CA",
			 rollover_phase_name(s.phase));
		return 1;
	}
	if (!issued_by(ca->root, ca->issuer)) {
		snprintf(err, err_len,
			 "intermediate.pem was not issued by root.pem; restore them from a backup");
		return 1;
	}
	root_end = certfields_time(X509_get0_notAfter(ca->root));
	utc(root_end, root_when);
	/* the default lifetime: the current certificate's */
	days = o->days > 0 ? o->days
			   : (long)((certfields_time(X509_get0_notAfter(ca->issuer)) -
				     certfields_time(X509_get0_notBefore(ca->issuer)) + DAY / 2) /
				    DAY);
	if (days < 1)
		days = 1;
	not_after = o->now + (time_t)days * DAY;
	if (root_end <= o->now + DAY) {
		snprintf(err, err_len,
			 "the root expires at %s: the issuing CA cannot be renewed under it; roll "
			 "the root over first ('mtls ca rollover begin', docs/ca.md)",
			 root_when);
		return 1;
	}
	if (not_after > root_end) {
		snprintf(err, err_len,
			 "an issuing CA of %ld days would outlive the root (it expires at %s); ask "
			 "for at most %ld days (--days), or roll the root over first ('mtls ca "
			 "rollover begin', docs/ca.md)",
			 days, root_when, (long)((root_end - o->now) / DAY));
		return 1;
	}
	key = keys_load(o->root_key != NULL ? o->root_key
					    : authority_path(ca, "root.key", path, sizeof(path)),
			o->passphrase, err, err_len);
	if (key == NULL)
		goto out;
	if (X509_check_private_key(ca->root, key) != 1) {
		ERR_clear_error();
		snprintf(err, err_len,
			 "%s is not the key of the root in root.pem; give the root key with "
			 "--root-key",
			 o->root_key != NULL ? o->root_key : path);
		rc = 1;
		goto out;
	}
	/* the same subject and key (so the same subjectKeyIdentifier): leaves issued before,
	 * CRLs and OCSP answers verify under the new certificate as under the old one */
	name_parts(ca->issuer, cn, org);
	spec = (struct issue_spec){.kind = ISSUE_INTERMEDIATE,
				   .cn = cn,
				   .org = org[0] != '\0' ? org : NULL,
				   .subject_key = X509_get0_pubkey(ca->issuer),
				   .not_before = o->now - BACKDATE,
				   .not_after = not_after};
	inter = issue_sign(&spec, ca->root, key, err, err_len);
	if (inter == NULL)
		goto out;
	ski_old = X509_get0_subject_key_id(ca->issuer);
	ski_new = X509_get0_subject_key_id(inter);
	if (X509_NAME_cmp(X509_get_subject_name(inter), X509_get_subject_name(ca->issuer)) != 0 ||
	    ski_old == NULL || ski_new == NULL || ASN1_OCTET_STRING_cmp(ski_old, ski_new) != 0) {
		snprintf(err, err_len,
			 "the issuing CA's subject or key identifier is not one mtls makes (CN and "
			 "O, SHA-1 key identifier); it cannot be certified again under the same "
			 "name: make a new CA with mtls ca init");
		rc = 1;
		goto out;
	}
	/* written before the commit under a name nobody reads; published after it */
	wrote = true;
	if (write_certs(ca, F_INT_RENEWED, &inter, 1, err, err_len) != 0)
		goto out;
	issue_serial_hex(inter, serial, sizeof(serial));
	issue_serial_hex(ca->issuer, old_serial, sizeof(old_serial));
	utc(not_after, when);
	snprintf(detail, sizeof(detail),
		 "renew-issuer: the issuing CA's key certified again by the root, serial %s until "
		 "%s, replacing serial %s",
		 serial, when, old_serial);
	if (store_begin(ca->store) != 0) {
		store_failed(ca, err, err_len);
		goto out;
	}
	if (authority_record_ca(ca->store, inter, "intermediate", "renew-issuer", detail, o->now) !=
		    0 ||
	    store_commit(ca->store) != 0) {
		store_failed(ca, err, err_len);
		store_rollback(ca->store);
		goto out;
	}
	wrote = false;
	/* committed: publish (recover_renewed() does the same if we die on the way) */
	if (recover_renewed(ca, err, err_len) != 0) {
		size_t l = strlen(err);

		snprintf(err + l, err_len - l,
			 "; the renewal is committed: run 'mtls ca rollover status' to publish "
			 "intermediate.pem");
		goto out;
	}
	rc = 0;
out:
	if (wrote)
		remove_file(ca, F_INT_RENEWED);
	EVP_PKEY_free(key);
	X509_free(inter);
	return rc;
}
