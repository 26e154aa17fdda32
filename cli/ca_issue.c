/*
 * mtls ca issue: a certificate from a profile, with a key made here or a CSR made elsewhere.
 *
 * The options become a grant (ca/grant.h), which decides what the certificate carries and
 * what a CSR may ask for; this file only parses and writes. Everything is checked before
 * anything is written: the names, the CSR against the grant, the lifetime against the
 * issuer's, the output files. A CSR asking for more than was granted is refused and the
 * refusal is recorded in the audit log.
 *
 * Commit, then publish: the certificate, chain and key are written under temporary names
 * in the --out directory (O_EXCL, fsync, the key 0600) before the inventory row and its
 * audit entry are committed, and linked to their names (never replacing a file) after. A
 * failure before the commit issues nothing; one after it (the names could not be given)
 * revokes the undelivered certificate. A killed issue leaves at most temporary files, which
 * the next issue to the same --out removes.
 *
 * With --force the files of an earlier issue to the same --out are replaced, as one change
 * (renew/fileset.h: each new file written and fsync'd beside its target, a journal, then
 * rename() over the targets and the directory fsync'd): a crash leaves the old set or the
 * new one once fileset_recover() has run, which every issue to that directory (and a daemon
 * starting on the files) does first. The staged files still go before the commit (they
 * hold the room and prove the directory writable) and are discarded just before the set is
 * written. The replaced certificate stays valid: its holders may still be running on it
 * until they load the new files, so revoking it in the same transaction would cut them
 * off; the output says which serial to revoke (reason superseded) once they have. An
 * existing target that is a symbolic link is refused: rename() would replace the link, not
 * the file it points to, and the one who reads through the link would never see the change.
 */
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "authority.h"
#include "ca_cmd.h"
#include "files.h"
#include "grant.h"
#include "issuance.h"
#include "issue.h"
#include "fileset.h"
#include "keys.h"

struct issue_opts {
	const char *dir;
	const char *profile;
	struct ca_names names;
	const char *csr;
	const char *key;
	long long days;
	const char *out;
	int force;
	const char *passphrase_file;
	const char *passphrase_env;
	const char *config;
};

#define O(f) offsetof(struct issue_opts, f)

static const struct opt issue_table[] = {
	CA_OPT_DIR(O),
	{"profile", OPT_STRING, O(profile), "NAME",
	 "server (serverAuth), client (clientAuth) or peer (both); required"},
	CA_OPT_NAMES(O, "subject common name (default: the first name)", ""),
	{"csr", OPT_STRING, O(csr), "FILE",
	 "sign this CSR: only its key is used; every name it asks for must be given as --dns, "
	 "--ip, --uri or --cn"},
	{"key", OPT_STRING, O(key), "ALG",
	 "key to generate: p256 (default), p384, ed25519, "
	 "rsa3072, rsa4096"},
	{"days", OPT_INT, O(days), "DAYS", "lifetime (default: the profile's)"},
	{"out", OPT_STRING, O(out), "PREFIX",
	 "write PREFIX.pem, PREFIX-chain.pem and PREFIX.key (DIR/NAME: a file name prefix in "
	 "an existing directory, never a directory); required"},
	{"force", OPT_FLAG, O(force), NULL,
	 "replace the files of an earlier issue to the same --out, all or none (the replaced "
	 "certificate stays valid: revoke it once its holders use the new one)"},
	CA_OPT_PASSPHRASE(O),
	CA_OPT_CONFIG(O),
	OPT_END,
};

/* Read, authenticate and compare the CSR with the grant. 0, 1 the CSR cannot be used, 2 it
 * asks for more than was granted (err says what). */
static int check_csr(const char *path, const char *what, const struct grant *g,
		     struct grant_request *r, char *err, size_t len)
{
	size_t n = 0;
	char *data = files_read(path, &n, err, len);
	int rc = 1;

	memset(r, 0, sizeof(*r));
	if (data == NULL)
		return 1;
	if (grant_request_read(r, data, n, what, err, len) == 0 &&
	    grant_request_verify(r, what, err, len) == 0)
		rc = grant_match(g, r, what, err, len) == 0 ? 0 : 2;
	free(data);
	return rc;
}

/* A refused CSR goes into the audit log (no key needed), then the one-line error. */
static void refuse_csr(const struct issue_opts *o, const struct grant *g,
		       const struct grant_request *r, const char *why)
{
	char err[1024] = "", *detail = NULL;
	struct authority *ca = authority_open(o->dir != NULL ? o->dir : ca_default_dir(),
					      AUTHORITY_EXCLUSIVE, err, sizeof(err));

	/* the whole grant and reason: the audit log is never cut short */
	if (ca != NULL &&
	    asprintf(&detail, "profile %s, granted %s; %s", o->profile,
		     g->names.text[0] != '\0' ? g->names.text : "no names", why) < 0) {
		detail = NULL;
		snprintf(err, sizeof(err), "out of memory");
	} else if (ca != NULL) {
		issuance_refused(ca, authority_actor(), "issue-refused", r->subject, detail, err,
				 sizeof(err));
	}
	if (err[0] != '\0')
		ca_failf("issue", "%s (not recorded in the audit log: %s)", why, err);
	else
		ca_fail("issue", why);
	free(detail);
	authority_close(ca);
}

/* Inside the issue's transaction: was the CSR's key revoked for keyCompromise? Then the
 * transaction is rolled back, the refusal recorded instead, and -1 returned; 0 if not. */
static int key_compromised(struct authority *ca, const struct issue_opts *o, const char *what,
			   const struct grant *g, const struct grant_request *r, char *err,
			   size_t err_len)
{
	char *shown = NULL, *detail = NULL, why[1024];
	int rc;

	if (asprintf(&shown, "CSR %s", what) < 0) {
		store_rollback(ca->store);
		ca_fail("issue", "out of memory");
		return -1;
	}
	rc = issuance_check_key(ca, r->key, shown, err, err_len);
	free(shown);
	if (rc == 0)
		return 0;
	store_rollback(ca->store);
	if (rc < 0) {
		ca_fail("issue", err);
		return -1;
	}
	if (asprintf(&detail, "profile %s, granted %s; %s", o->profile,
		     g->names.text[0] != '\0' ? g->names.text : "no names", err) < 0)
		detail = NULL;
	if (detail == NULL)
		ca_failf("issue", "%s (not recorded in the audit log: out of memory)", err);
	else if (issuance_refused(ca, authority_actor(), "issue-refused", r->subject, detail, why,
				  sizeof(why)) != 0)
		ca_failf("issue", "%s (not recorded in the audit log: %s)", err, why);
	else
		ca_fail("issue", err);
	free(detail);
	return -1;
}

/* The three files of --out PREFIX (the key only when it is made here), and the directory
 * that holds them. */
struct output {
	char dir[PATH_MAX];
	char cert[PATH_MAX], chain[PATH_MAX], key[PATH_MAX];
	const char *base[3]; /* their names in dir, for removing what a killed issue left */
	char names[3][NAME_MAX + 16];
	bool with_key;
	struct files_staged staged[3]; /* cert, chain, key */
	int nstaged;
};

#define OUT_BASE_MAX ((int)(NAME_MAX - sizeof("-chain.pem") + 1 - FILES_TMP_SUFFIX))

static int output_init(struct output *out, const char *prefix, bool with_key, char *err,
		       size_t err_len)
{
	char buf[PATH_MAX];
	const char *base;
	struct stat sb;

	memset(out, 0, sizeof(*out));
	out->with_key = with_key;
	if (snprintf(out->cert, sizeof(out->cert), "%s.pem", prefix) >= (int)sizeof(out->cert) ||
	    snprintf(out->chain, sizeof(out->chain), "%s-chain.pem", prefix) >=
		    (int)sizeof(out->chain) ||
	    snprintf(out->key, sizeof(out->key), "%s.key", prefix) >= (int)sizeof(out->key) ||
	    strlen(prefix) > PATH_MAX - 40) {
		snprintf(err, err_len, "--out is too long");
		return -1;
	}
	snprintf(buf, sizeof(buf), "%s", prefix);
	snprintf(out->dir, sizeof(out->dir), "%s", dirname(buf));
	snprintf(buf, sizeof(buf), "%s", prefix);
	base = basename(buf);
	/* "dir/", "dir/." or an existing "dir" would make hidden files (dir/.key, dir/..pem)
	 * or files beside the directory meant: never a guess at a name */
	if (prefix[0] == '\0' || prefix[strlen(prefix) - 1] == '/' || strcmp(base, ".") == 0 ||
	    strcmp(base, "..") == 0 || (stat(prefix, &sb) == 0 && S_ISDIR(sb.st_mode))) {
		snprintf(err, err_len,
			 "--out names a file prefix, not a directory: give DIR/NAME to write "
			 "DIR/NAME.pem, DIR/NAME-chain.pem and DIR/NAME.key (--out '%s')",
			 prefix);
		return -1;
	}
	/* the longest name written is the chain's temporary one, NAME-chain.pem.tmp-<hex>:
	 * refused here rather than after the key is made and the transaction begun */
	if (strlen(base) > OUT_BASE_MAX) {
		snprintf(err, err_len,
			 "--out: the file name prefix is %zu bytes, more than %d "
			 "(NAME-chain.pem and its temporary name must fit in %d); choose a "
			 "shorter one",
			 strlen(base), OUT_BASE_MAX, NAME_MAX);
		return -1;
	}
	snprintf(out->names[0], sizeof(out->names[0]), "%s.pem", base);
	snprintf(out->names[1], sizeof(out->names[1]), "%s-chain.pem", base);
	snprintf(out->names[2], sizeof(out->names[2]), "%s.key", base);
	for (int i = 0; i < 3; i++)
		out->base[i] = out->names[i];
	if (stat(out->dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
		snprintf(err, err_len, "--out: directory %s does not exist; create it first",
			 out->dir);
		return -1;
	}
	return 0;
}

/* 0 if none of the files exists, else -1 with the message. */
static int output_free(const struct output *out, const char *prefix, char *err, size_t err_len)
{
	if (!files_exists(out->cert) && !files_exists(out->chain) &&
	    (!out->with_key || !files_exists(out->key)))
		return 0;
	snprintf(err, err_len,
		 "%s.pem, -chain.pem or .key already exists; choose another --out, remove them, "
		 "or give --force to replace them",
		 prefix);
	return -1;
}

/* --force: the files that exist must be regular files (a symbolic link would be replaced
 * by rename(), not followed). 0, or -1 with the message. */
static int output_replaceable(const struct output *out, char *err, size_t err_len)
{
	const char *const paths[3] = {out->cert, out->chain, out->key};

	for (int i = 0; i < (out->with_key ? 3 : 2); i++) {
		struct stat sb;

		if (lstat(paths[i], &sb) != 0)
			continue;
		if (S_ISLNK(sb.st_mode)) {
			snprintf(
				err, err_len,
				"--force: %s is a symbolic link; it would be replaced, not what it "
				"points to: give --out the real path of the files",
				paths[i]);
			return -1;
		}
		if (!S_ISREG(sb.st_mode)) {
			snprintf(err, err_len, "--force: %s is not a regular file; remove it first",
				 paths[i]);
			return -1;
		}
	}
	return 0;
}

/* The certificate in the --out PREFIX.pem about to be replaced, or NULL. */
static X509 *output_old_cert(const struct output *out)
{
	size_t n = 0;
	char err[256];
	char *pem = files_read(out->cert, &n, err, sizeof(err));
	BIO *bio = pem != NULL ? BIO_new_mem_buf(pem, (int)n) : NULL;
	X509 *x = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;

	ERR_clear_error();
	BIO_free(bio);
	free(pem);
	return x;
}

/* Whether a and b name the same holder: subject and subjectAltName alike. */
static bool same_names(X509 *a, X509 *b)
{
	int ia = X509_get_ext_by_NID(a, NID_subject_alt_name, -1);
	int ib = X509_get_ext_by_NID(b, NID_subject_alt_name, -1);

	if (X509_NAME_cmp(X509_get_subject_name(a), X509_get_subject_name(b)) != 0)
		return false;
	if (ia < 0 || ib < 0)
		return ia < 0 && ib < 0;
	return ASN1_STRING_cmp(X509_EXTENSION_get_data(X509_get_ext(a, ia)),
			       X509_EXTENSION_get_data(X509_get_ext(b, ib))) == 0;
}

/* --force, after the commit: the staged files give their room back, and the set is written
 * as one change over the old files (fileset_write()). 0, or -1 with the message (the old
 * files as they were). */
static int output_replace(struct output *out, const char *leaf, size_t leaf_len, const char *chain,
			  size_t chain_len, const char *key, size_t key_len, char *err,
			  size_t err_len)
{
	struct fileset_file f[3] = {
		{.path = out->cert, .data = leaf, .len = leaf_len, .mode = 0644},
		{.path = out->chain, .data = chain, .len = chain_len, .mode = 0644},
		{.path = out->key, .data = key, .len = key_len, .mode = 0600},
	};

	for (int i = 0; i < out->nstaged; i++)
		files_discard(&out->staged[i]);
	out->nstaged = 0;
	return fileset_write(f, out->with_key ? 3 : 2, true, err, err_len);
}

/* Write the files under temporary names in their directory, before the commit. */
static int output_stage(struct output *out, const char *leaf, size_t leaf_len, const char *chain,
			size_t chain_len, const char *key, size_t key_len, char *err,
			size_t err_len)
{
	if (files_stage(&out->staged[0], out->cert, leaf, leaf_len, 0644, err, err_len) != 0)
		return -1;
	out->nstaged = 1;
	if (files_stage(&out->staged[1], out->chain, chain, chain_len, 0644, err, err_len) != 0)
		return -1;
	out->nstaged = 2;
	if (out->with_key &&
	    files_stage(&out->staged[2], out->key, key, key_len, 0600, err, err_len) != 0)
		return -1;
	out->nstaged = out->with_key ? 3 : 2;
	return 0;
}

/* After the commit: give them their names, never replacing a file (the certificate and
 * chain first, the key last: a killed issue never leaves a private key without its
 * certificate). On failure, the names given are taken back. */
static int output_publish(struct output *out, char *err, size_t err_len)
{
	int i;

	for (i = 0; i < out->nstaged; i++)
		if (files_publish(&out->staged[i], true, err, err_len) != 0)
			break;
	if (i == out->nstaged) {
		files_sync_dir(out->cert);
		return 0;
	}
	while (i-- > 0)
		unlink(out->staged[i].path);
	return -1;
}

static void output_discard(struct output *out)
{
	for (int i = 0; i < out->nstaged; i++)
		files_discard(&out->staged[i]);
	out->nstaged = 0;
}

/* The certificate was committed, but its files could not be given their names: nobody
 * holds it. Revoke it (cessationOfOperation, with an audit entry saying why) and publish
 * the CRL, or say exactly what is recorded and what to do. */
static void undelivered(struct authority *ca, X509 *cert, const char *why)
{
	char serial[64], err[1024] = "", *subject = issue_subject(cert), *detail = NULL;
	struct crl_pending crl = {0};
	bool revoked = false, published = false;

	/* the room taken before the commit is what the revocation and the CRL are written in */
	authority_release_room(ca);
	issue_serial_hex(cert, serial, sizeof(serial));
	if (subject != NULL &&
	    asprintf(&detail, "serial %s, not delivered: %s; revoked", serial, why) < 0)
		detail = NULL;
	if (detail == NULL) {
		snprintf(err, sizeof(err), "out of memory");
	} else if (store_begin(ca->store) != 0) {
		snprintf(err, sizeof(err), "%s", store_error(ca->store));
	} else {
		if (store_revoke_audited(ca->store, serial, "cessationOfOperation", time(NULL),
					 authority_actor()) == 0 &&
		    store_audit(ca->store, authority_actor(), "issue-undelivered", subject,
				detail) == 0 &&
		    crl_prepare(ca, &crl, err, sizeof(err)) == 0 && store_commit(ca->store) == 0)
			revoked = true;
		else if (err[0] == '\0') /* the store's failure (crl_prepare() says its own) */
			snprintf(err, sizeof(err), "%s", store_error(ca->store));
		if (!revoked)
			store_rollback(ca->store);
	}
	if (revoked)
		published = crl_write(ca, &crl, err, sizeof(err)) == 0;
	if (revoked && published)
		ca_failf(
			"issue",
			"%s; the certificate (serial %s) was committed but not delivered, so it is "
			"revoked (cessationOfOperation) and the CRL published; issue again",
			why, serial);
	else if (revoked)
		ca_failf("issue",
			 "%s; the certificate (serial %s) was committed but not delivered, so its "
			 "revocation (cessationOfOperation) is committed; run 'mtls ca crl' to "
			 "publish it (%s), then issue again",
			 why, serial, err);
	else
		ca_failf("issue",
			 "%s; the certificate (serial %s) is recorded in the inventory but was not "
			 "delivered: revoke it with 'mtls ca revoke --serial %s --reason "
			 "cessationOfOperation'%s%s%s",
			 why, serial, serial,
			 err[0] != '\0' ? " (it could not be revoked now: " : "", err,
			 err[0] != '\0' ? ")" : "");
	crl_pending_free(&crl);
	free(detail);
	free(subject);
}

/* --force replaced a certificate: it is still valid; say what to do with it. */
static void replaced_note(struct authority *ca, X509 *old, X509 *cert, const char *prefix)
{
	struct store_cert c;
	char serial[64];
	int rc;

	issue_serial_hex(old, serial, sizeof(serial));
	rc = store_get_cert(ca->store, serial, &c);
	/* whoever can write the --out directory chose what PREFIX.pem held: a certificate of
	 * someone else, for the operator to revoke? Named, never offered for revocation. */
	if (!same_names(old, cert))
		printf("  replaced:    %s.pem held serial %s, of other names than the new "
		       "certificate (not from an earlier issue to this --out): revoke nothing "
		       "before you know whose it is (mtls ca list)\n",
		       prefix, serial);
	else if (rc == 0 && !c.revoked)
		printf("  replaced:    the previous certificate, serial %s, is still valid; once "
		       "its holders use the new one, revoke it: mtls ca revoke --serial %s "
		       "--reason superseded\n",
		       serial, serial);
	else if (rc == 0)
		printf("  replaced:    the previous certificate, serial %s (already revoked)\n",
		       serial);
	else
		printf("  replaced:    the previous certificate, serial %s (not in this CA's "
		       "inventory)\n",
		       serial);
}

int cmd_ca_issue(int argc, char **argv)
{
	struct issue_opts o = {.key = "p256", .days = -1};
	struct options_state st = {0};
	struct authority *ca = NULL;
	struct grant g = {0};
	struct grant_request req = {0};
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	struct output out;
	char err[8192] = "", *pass = NULL, *csr_shown = NULL;
	char *leaf = NULL, *inter = NULL, *chain = NULL, *keypem = NULL;
	X509 *old_cert = NULL;
	size_t leaf_len = 0, inter_len = 0, key_len = 0;
	time_t now = time(NULL), not_after;
	long days;
	int rc, dir_lock = -1;

	memset(&out, 0, sizeof(out));

	rc = ca_parse("issue",
		      "mtls ca issue --profile server|client|peer --out PREFIX [names] [options]",
		      "Issue a certificate from the CA in --dir. The key is generated here "
		      "(PREFIX.key, mode 0600)\nunless --csr gives a request made elsewhere.",
		      issue_table, &o, argc, argv, &st);
	if (rc >= 0)
		goto out;
	rc = 2;
	if (st.positional.n != 0 || o.profile == NULL || o.out == NULL) {
		ca_fail("issue", "give --profile and --out; see mtls ca issue --help");
		goto out;
	}
	if (grant_init(&g, o.profile, GRANT_OPERATOR, err, sizeof(err)) != 0 ||
	    ca_names_add(&o.names, &g, err, sizeof(err)) != 0) {
		ca_fail("issue", err);
		goto out;
	}
	if (output_init(&out, o.out, o.csr == NULL, err, sizeof(err)) != 0) {
		ca_fail("issue", err);
		goto out;
	}
	/* Nobody else writes PREFIX.* until we are done (every issue to a directory holds its
	 * lock), so what a killed issue left of PREFIX can go, whatever happens next, and the
	 * files still do not exist when they are linked. */
	dir_lock = files_lock_dir(out.dir, err, sizeof(err));
	if (dir_lock < 0) {
		ca_fail("issue", err);
		rc = 1;
		goto out;
	}
	files_remove_temporaries_of(out.dir, out.base, 3);
	{
		/* a replace (--force) that a crash left half made is finished or taken back */
		const char *const paths[3] = {out.cert, out.chain, out.key};

		if (fileset_recover(paths, 3, err, sizeof(err)) != 0) {
			ca_fail("issue", err);
			rc = 1;
			goto out;
		}
	}
	if ((o.force ? output_replaceable(&out, err, sizeof(err))
		     : output_free(&out, o.out, err, sizeof(err))) != 0) {
		ca_fail("issue", err);
		goto out;
	}
	if (o.force)
		old_cert = output_old_cert(&out);
	if (o.csr != NULL) {
		/* the CSR's name in messages and the audit log: one line whatever it holds */
		csr_shown = ca_shown(o.csr);
		rc = csr_shown != NULL ? check_csr(o.csr, csr_shown, &g, &req, err, sizeof(err))
				       : (snprintf(err, sizeof(err), "out of memory"), 1);
		if (rc == 2)
			refuse_csr(&o, &g, &req, err);
		else if (rc != 0)
			ca_fail("issue", err);
		if (rc != 0) {
			rc = 1;
			goto out;
		}
		rc = 2;
		key = req.key;
		EVP_PKEY_up_ref(key);
	}
	if (grant_check(&g, err, sizeof(err)) != 0) {
		ca_fail("issue", err);
		goto out;
	}
	if (keys_passphrase(o.passphrase_file, o.passphrase_env, &pass, err, sizeof(err)) != 0) {
		ca_fail("issue", err);
		goto out;
	}
	rc = 1;
	ca = authority_open(o.dir != NULL ? o.dir : ca_default_dir(), AUTHORITY_EXCLUSIVE, err,
			    sizeof(err));
	if (ca == NULL || authority_load_key(ca, pass, err, sizeof(err)) != 0) {
		ca_fail("issue", err);
		goto out;
	}
	if (o.days != -1 && o.days < 1) {
		ca_fail("issue", "--days must be a positive number of days");
		rc = 2;
		goto out;
	}
	/* anything past ~2700 years is refused below against the issuer's notAfter */
	days = o.days != -1		? (long)(o.days < 1000000 ? o.days : 1000000)
	       : g.kind == ISSUE_SERVER ? ca->server_days
					: ca->client_days;
	not_after = now + days * 86400L;
	if (not_after > issuance_issuer_end(ca)) {
		char when[32];
		time_t limit = issuance_issuer_end(ca);
		struct tm tm;

		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&limit, &tm));
		snprintf(err, sizeof(err),
			 "a lifetime of %ld days ends after the issuing CA (%s); ask for at most "
			 "%ld days (--days); for longer, %s",
			 days, when, (long)((limit - now) / 86400L), ISSUANCE_CA_END_HINT);
		ca_fail("issue", err);
		rc = 2;
		goto out;
	}
	if (authority_take_room(ca, err, sizeof(err)) != 0) {
		ca_fail("issue", err);
		goto out;
	}
	if (key == NULL && (key = keys_generate(o.key, err, sizeof(err))) == NULL) {
		ca_fail("issue", err);
		rc = 2;
		goto out;
	}
	if (store_begin(ca->store) != 0) {
		ca_fail("issue", store_error(ca->store));
		goto out;
	}
	if (o.csr != NULL && key_compromised(ca, &o, csr_shown, &g, &req, err, sizeof(err)) != 0)
		goto out;
	{
		struct issuance is = {.grant = &g,
				      .req = o.csr != NULL ? &req : NULL,
				      .key = key,
				      .not_before = now - ISSUANCE_BACKDATE,
				      .not_after = not_after,
				      .issued_at = time(NULL),
				      .actor = authority_actor(),
				      .action = "issue"};
		char serial[64];

		if (issuance_sign(ca, &is, &cert, serial, err, sizeof(err)) != 0)
			cert = NULL;
	}
	leaf = cert != NULL ? issue_cert_pem(cert, &leaf_len) : NULL;
	inter = leaf != NULL ? issue_cert_pem(ca->issuer, &inter_len) : NULL;
	chain = inter != NULL ? malloc(leaf_len + inter_len) : NULL;
	if (o.csr == NULL && chain != NULL)
		keypem = keys_to_pem(key, NULL, &key_len);
	if (chain == NULL || (o.csr == NULL && keypem == NULL)) {
		store_rollback(ca->store);
		ca_fail("issue", err[0] != '\0' ? err : "out of memory");
		goto out;
	}
	memcpy(chain, leaf, leaf_len);
	memcpy(chain + leaf_len, inter, inter_len);
	/* Commit, then publish: the files are written (temporary names, fsync) before the
	 * commit, so that nothing can fail after it but giving them their names. */
	if (output_stage(&out, leaf, leaf_len, chain, leaf_len + inter_len, keypem, key_len, err,
			 sizeof(err)) != 0) {
		char msg[sizeof(err) + 64];

		store_rollback(ca->store);
		snprintf(msg, sizeof(msg), "%s; nothing was issued", err);
		ca_fail("issue", msg);
		goto out;
	}
	if (store_commit(ca->store) != 0) {
		store_rollback(ca->store);
		ca_fail("issue", store_error(ca->store));
		goto out;
	}
	if ((o.force ? output_replace(&out, leaf, leaf_len, chain, leaf_len + inter_len, keypem,
				      key_len, err, sizeof(err))
		     : output_publish(&out, err, sizeof(err))) != 0) {
		undelivered(ca, cert, err);
		goto out;
	}
	{
		char serial[64], when[32];
		char *c = ca_shown(out.cert), *ch = ca_shown(out.chain), *k = ca_shown(out.key);
		struct tm tm;

		issue_serial_hex(cert, serial, sizeof(serial));
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&not_after, &tm));
		printf("issued %s certificate, serial %s, for %s, valid until %s\n", o.profile,
		       serial, g.names.text, when);
		printf("  certificate: %s\n  chain:       %s\n", c != NULL ? c : "?",
		       ch != NULL ? ch : "?");
		if (keypem != NULL)
			printf("  key:         %s\n", k != NULL ? k : "?");
		free(c);
		free(ch);
		free(k);
		if (req.ignored[0] != '\0')
			printf("  not granted from the CSR (the profile decides): %s\n",
			       req.ignored);
		if (old_cert != NULL)
			replaced_note(ca, old_cert, cert, o.out);
	}
	rc = 0;
out:
	output_discard(&out);
	if (dir_lock >= 0)
		close(dir_lock);
	free(csr_shown);
	grant_free(&g);
	grant_request_free(&req);
	keys_free_pem(keypem, key_len);
	free(leaf);
	free(inter);
	free(chain);
	X509_free(cert);
	X509_free(old_cert);
	EVP_PKEY_free(key);
	authority_close(ca);
	keys_free_passphrase(pass);
	options_free(&st);
	return rc;
}
