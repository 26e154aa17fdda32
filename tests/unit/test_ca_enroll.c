/*
 * svc_enroll: a token enrolls once (also against a concurrent process), only at the CA it
 * pins, before it expires; the certificate carries exactly the token's names; any failure
 * after the token is taken leaves it unused and issues nothing; refusals are audited. A real
 * CA in a temporary directory.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <openssl/crypto.h>

#include "svc_testca.h"
#include "testutil.h"
#include "token.h"

#define SPIFFE "spiffe://test.mtls/ns/prod/sa/app1"
#define NAMES  "URI:" SPIFFE "\nDNS:app1.test"

struct fixture {
	struct testca t;
	struct authority *ca;
	time_t now;
	struct svc_policy p;
	char token[TOKEN_TEXT_MAX + 1];
	char hash[65];
};

/* A token for root recorded in ca's store (unless store is false): text into out. */
static void make_token(struct authority *ca, X509 *root, bool store, const char *profile,
		       const char *cn, const char *names, time_t now, time_t not_after,
		       char out[TOKEN_TEXT_MAX + 1], char hash[65])
{
	struct token t;
	char err[512] = "";

	if (token_make(&t, root, "https://ca.test:8443", err, sizeof(err)) != 0)
		fail_msg("token_make: %s", err);
	assert_int_equal(token_encode(&t, out, TOKEN_TEXT_MAX + 1), 0);
	token_hash_hex(&t, hash);
	token_wipe(&t);
	if (store) {
		struct store_token row = {.hash = hash,
					  .profile = profile,
					  .cn = cn,
					  .names = names,
					  .created_at = now,
					  .not_after = not_after,
					  .used_serial = ""};

		assert_int_equal(store_begin(ca->store), 0);
		assert_int_equal(store_token_add(ca->store, &row, "tester"), 0);
		assert_int_equal(store_commit(ca->store), 0);
	}
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	testca_make(&f->t, "enrolltest");
	f->ca = testca_open(&f->t);
	f->now = time(NULL);
	f->p.leaf_seconds = SVC_LEAF_DEFAULT;
	make_token(f->ca, f->ca->root, true, "client", "", NAMES, f->now, f->now + 3600, f->token,
		   f->hash);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	testca_check(f->ca);
	authority_close(f->ca);
	testca_remove(&f->t);
	OPENSSL_cleanse(f->token, sizeof(f->token));
	free(f);
	return 0;
}

static int enroll(struct fixture *f, const char *token, EVP_PKEY *key, const char *cn,
		  const char *san, bool ca_true, time_t now, struct svc_issued *out,
		  struct svc_error *e)
{
	size_t len;
	char *csr = testca_csr(key, cn, san, ca_true, &len);
	int rc = svc_enroll(f->ca, &f->p, token, csr, len, now, "enroll@198.51.100.7", out, e);

	free(csr);
	return rc;
}

/* Is the token still unused? (taken and rolled back: the check changes nothing) */
static bool unused(struct fixture *f)
{
	struct store_token row;
	int rc;

	assert_int_equal(store_begin(f->ca->store), 0);
	rc = store_token_take(f->ca->store, f->hash, f->now, &row);
	store_rollback(f->ca->store);
	assert_true(rc == 0 || rc == 3);
	return rc == 0;
}

static void enrolled(struct fixture *f, EVP_PKEY *key, const char *san)
{
	struct svc_issued out;
	struct svc_error e;
	X509 *leaf;

	if (enroll(f, f->token, key, NULL, san, false, f->now, &out, &e) != 0)
		fail_msg("enroll: %d %s: %s", e.status, e.code, e.message);
	leaf = testca_verify_chain(f->ca, out.chain_pem, X509_PURPOSE_SSL_CLIENT, f->now);
	/* exactly the token's names, whatever the CSR asked of them */
	assert_string_equal(testca_sans(leaf), "URI:" SPIFFE ", DNS:app1.test");
	assert_string_equal(out.names, "URI:" SPIFFE ", DNS:app1.test");
	assert_string_equal(out.profile, "client");
	assert_int_equal(out.not_before, f->now - ISSUANCE_BACKDATE);
	assert_int_equal(out.not_after, out.not_before + SVC_LEAF_DEFAULT);
	assert_int_equal(out.renew_after, out.not_before + SVC_LEAF_DEFAULT * 2 / 3);
	X509_free(leaf);
	svc_issued_free(&out);
}

static void test_success(void **state)
{
	struct fixture *f = *state;
	EVP_PKEY *key = testca_key();
	struct store_token row;
	int before = testca_certs(f->ca);
	char detail[2048];

	enrolled(f, key, "URI:" SPIFFE ", DNS:app1.test");
	assert_int_equal(testca_certs(f->ca), before + 1);
	assert_false(unused(f));
	/* the token records the serial it issued; the audit entry the token, serial, actor */
	assert_int_equal(store_begin(f->ca->store), 0);
	assert_int_equal(store_token_take(f->ca->store, f->hash, f->now, &row), 3);
	snprintf(detail, sizeof(detail), "%s", testca_audit_last(&f->t, "enroll"));
	assert_non_null(strstr(detail, row.used_serial));
	store_rollback(f->ca->store);
	assert_non_null(strstr(detail, "enroll@198.51.100.7"));
	{
		char prefix[32];

		snprintf(prefix, sizeof(prefix), "token %.16s", f->hash);
		assert_non_null(strstr(detail, prefix));
	}
	EVP_PKEY_free(key);
}

/* The CSR may ask for fewer names: the certificate still
 * carries exactly the token's names (grant.h). */
static void test_fewer_names(void **state)
{
	struct fixture *f = *state;
	EVP_PKEY *key = testca_key();

	enrolled(f, key, "DNS:app1.test");
	EVP_PKEY_free(key);
}

static void test_replay(void **state)
{
	struct fixture *f = *state;
	EVP_PKEY *key = testca_key(), *key2 = testca_key();
	struct svc_issued out;
	struct svc_error e;
	int before;

	enrolled(f, key, "URI:" SPIFFE);
	before = testca_certs(f->ca);
	testca_expect(enroll(f, f->token, key2, NULL, "URI:" SPIFFE, false, f->now, &out, &e), &e,
		      401, "token_used", "new token");
	assert_null(out.chain_pem);
	assert_int_equal(testca_certs(f->ca), before);
	assert_int_equal(testca_audit_count(&f->t, "enroll"), 1);
	assert_int_equal(testca_audit_count(&f->t, "enroll-refused"), 1);
	EVP_PKEY_free(key);
	EVP_PKEY_free(key2);
}

static void test_expired(void **state)
{
	struct fixture *f = *state;
	EVP_PKEY *key = testca_key();
	struct svc_issued out;
	struct svc_error e;

	testca_expect(enroll(f, f->token, key, NULL, "URI:" SPIFFE, false, f->now + 3600, &out, &e),
		      &e, 401, "token_expired", "new token");
	assert_int_equal(testca_certs(f->ca), 2); /* the CA's own two */
	EVP_PKEY_free(key);
}

static void test_unknown_foreign_malformed(void **state)
{
	struct fixture *f = *state;
	EVP_PKEY *key = testca_key();
	struct svc_issued out;
	struct svc_error e;
	struct testca other;
	struct authority *oca;
	char text[TOKEN_TEXT_MAX + 1], hash[65];

	/* well formed, this CA's root, never recorded */
	make_token(f->ca, f->ca->root, false, NULL, NULL, NULL, 0, 0, text, hash);
	testca_expect(enroll(f, text, key, NULL, "URI:" SPIFFE, false, f->now, &out, &e), &e, 401,
		      "token_unknown", "new token");
	/* another CA's token, even one recorded here */
	testca_make(&other, "othertest");
	oca = testca_open(&other);
	make_token(f->ca, oca->root, true, "client", "", NAMES, f->now, f->now + 3600, text, hash);
	testca_expect(enroll(f, text, key, NULL, "URI:" SPIFFE, false, f->now, &out, &e), &e, 401,
		      "token_foreign", "for another CA");
	authority_close(oca);
	testca_remove(&other);
	/* damaged */
	snprintf(text, sizeof(text), "%s", f->token);
	text[20] = text[20] == 'A' ? 'B' : 'A';
	testca_expect(enroll(f, text, key, NULL, "URI:" SPIFFE, false, f->now, &out, &e), &e, 400,
		      "token_malformed", NULL);
	testca_expect(enroll(f, "", key, NULL, "URI:" SPIFFE, false, f->now, &out, &e), &e, 400,
		      "token_malformed", NULL);
	assert_int_equal(testca_certs(f->ca), 2);
	assert_true(unused(f));
	/* no token of this CA: nothing for the audit log (anyone could fill it so) */
	assert_int_equal(testca_audit_count(&f->t, "enroll-refused"), 0);
	EVP_PKEY_free(key);
}

/* Refusals after the take: the token stays unused, nothing is issued, and it enrolls
 * afterwards. */
static void test_refused_after_take(void **state)
{
	struct fixture *f = *state;
	EVP_PKEY *key = testca_key(), *bad = testca_key();
	struct svc_issued out;
	struct svc_error e;
	char serial[64];
	static const char *const names[] = {"URI:spiffe://test.mtls/other", NULL};
	X509 *other = testca_issue(f->ca, "client", names, bad, f->now - 60, f->now + 3600);
	int before;

	/* a key whose certificate was revoked for keyCompromise: refused after the take */
	issue_serial_hex(other, serial, sizeof(serial));
	assert_int_equal(store_begin(f->ca->store), 0);
	assert_int_equal(
		store_revoke_audited(f->ca->store, serial, "keyCompromise", f->now, "tester"), 0);
	assert_int_equal(store_commit(f->ca->store), 0);
	before = testca_certs(f->ca);
	testca_expect(enroll(f, f->token, bad, NULL, "URI:" SPIFFE, false, f->now, &out, &e), &e,
		      403, "key_compromised", serial);
	assert_true(unused(f));
	assert_int_equal(testca_certs(f->ca), before);
	/* a name the token does not grant, CA:TRUE, a CN not granted, a CSR that is none */
	testca_expect(enroll(f, f->token, key, NULL, "URI:" SPIFFE ", DNS:admin.test", false,
			     f->now, &out, &e),
		      &e, 403, "csr_not_granted", "the enrollment token does not grant it");
	testca_expect(enroll(f, f->token, key, NULL, "URI:" SPIFFE, true, f->now, &out, &e), &e,
		      403, "csr_not_granted", "CA:TRUE");
	testca_expect(enroll(f, f->token, key, "admin", "URI:" SPIFFE, false, f->now, &out, &e), &e,
		      403, "csr_not_granted", "common name");
	e.status = 0;
	assert_int_equal(svc_enroll(f->ca, &f->p, f->token, "junk", 4, f->now, "t", &out, &e), -1);
	assert_string_equal(e.code, "csr_malformed");
	assert_true(unused(f));
	assert_int_equal(testca_certs(f->ca), before);
	assert_int_equal(testca_audit_count(&f->t, "enroll-refused"), 5);
	/* and the token still enrolls */
	enrolled(f, key, "URI:" SPIFFE);
	X509_free(other);
	EVP_PKEY_free(bad);
	EVP_PKEY_free(key);
}

/* A token whose names no longer pass the CA's rules (recorded behind token_names_text's
 * back): refused, unused. */
static void test_policy_changed(void **state)
{
	struct fixture *f = *state;
	EVP_PKEY *key = testca_key();
	struct svc_issued out;
	struct svc_error e;

	make_token(f->ca, f->ca->root, true, "server", "", "DNS:old_style.test", f->now,
		   f->now + 3600, f->token, f->hash);
	testca_expect(enroll(f, f->token, key, NULL, NULL, false, f->now, &out, &e), &e, 403,
		      "policy_changed", "new token");
	assert_true(unused(f));
	EVP_PKEY_free(key);
}

/* Two processes, each with the CA open as mtls ca serve has it, enroll with one token at
 * once: exactly one wins, the other is told the token was used. */
static void test_race(void **state)
{
	struct fixture *f = *state;
	int ready[2], go[2], status, wins = 0, used = 0;
	pid_t pid[2];
	char c;

	assert_int_equal(pipe(ready), 0);
	assert_int_equal(pipe(go), 0);
	for (int i = 0; i < 2; i++) {
		pid[i] = fork();
		assert_true(pid[i] >= 0);
		if (pid[i] == 0) {
			struct authority *ca = testca_open(&f->t);
			EVP_PKEY *key = EVP_EC_gen("P-256");
			size_t len;
			char *csr = testca_csr(key, NULL, "URI:" SPIFFE, false, &len);
			struct svc_issued out;
			struct svc_error e;
			int rc;

			close(ready[0]);
			close(go[1]);
			if (write(ready[1], "r", 1) != 1 || read(go[0], &c, 1) != 1)
				_exit(3);
			rc = svc_enroll(ca, &f->p, f->token, csr, len, f->now, "racer", &out, &e);
			svc_issued_free(&out);
			free(csr);
			EVP_PKEY_free(key);
			authority_close(ca);
			_exit(rc == 0 ? 0 : strcmp(e.code, "token_used") == 0 ? 10 : 20);
		}
	}
	close(ready[1]);
	close(go[0]);
	for (int i = 0; i < 2; i++)
		assert_int_equal(read(ready[0], &c, 1), 1);
	assert_int_equal(write(go[1], "gg", 2), 2);
	close(go[1]);
	close(ready[0]);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(waitpid(pid[i], &status, 0), pid[i]);
		assert_true(WIFEXITED(status));
		wins += WEXITSTATUS(status) == 0;
		used += WEXITSTATUS(status) == 10;
	}
	assert_int_equal(wins, 1);
	assert_int_equal(used, 1);
	assert_int_equal(testca_certs(f->ca), 3); /* the CA's two and one leaf */
	assert_int_equal(testca_audit_count(&f->t, "enroll"), 1);
}

/* The child of test_disk_full, in a mount namespace of its own: 0 as expected, else what
 * went wrong (77: no tmpfs here). */
static int disk_full_child(struct fixture *f)
{
	struct testca t;
	struct authority *ca;
	EVP_PKEY *key = testca_key();
	struct svc_issued out;
	struct svc_error e;
	char filler[128], buf[4096];
	size_t len;
	char *csr = testca_csr(key, NULL, "URI:" SPIFFE, false, &len);
	int fd, rc;

	if (unshare(CLONE_NEWNS) != 0 || mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
		return 77;
	/* inside the fixture's directory, which teardown removes */
	if (snprintf(t.top, sizeof(t.top), "%s/full", f->t.top) >= (int)sizeof(t.top) ||
	    mkdir(t.top, 0700) != 0)
		return 2;
	if (mount("tmpfs", t.top, "tmpfs", 0, "size=1m") != 0)
		return 77;
	snprintf(t.dir, sizeof(t.dir), "%s/ca", t.top);
	/* the CA made, a token recorded, then the disk filled to the last byte */
	{
		char err[1024] = "";
		struct authority_init in = {.dir = t.dir,
					    .name = "fulltest",
					    .key_alg = "p256",
					    .root_days = 3650,
					    .intermediate_days = 1825,
					    .server_days = 90,
					    .client_days = 90,
					    .crl_days = 7};

		if (authority_create(&in, err, sizeof(err)) != 0)
			return 3;
	}
	ca = testca_open(&t);
	f->ca = ca;
	make_token(ca, ca->root, true, "client", "", NAMES, f->now, f->now + 3600, f->token,
		   f->hash);
	snprintf(filler, sizeof(filler), "%s/filler", t.top);
	fd = open(filler, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0)
		return 4;
	memset(buf, 'x', sizeof(buf));
	for (size_t n = sizeof(buf); n > 0;)
		if (write(fd, buf, n) < 0)
			n /= 2; /* to the last byte */
	close(fd);
	rc = svc_enroll(ca, &f->p, f->token, csr, len, f->now, "full", &out, &e);
	if (rc != -1 || e.status != 507 || strcmp(e.code, "disk_full") != 0) {
		fprintf(stderr, "full disk: %d %d %s: %s\n", rc, e.status, e.code, e.message);
		return 5;
	}
	if (!unused(f))
		return 6;
	/* room again: the token enrolls */
	unlink(filler);
	rc = svc_enroll(ca, &f->p, f->token, csr, len, f->now, "full", &out, &e);
	if (rc != 0) {
		fprintf(stderr, "after: %d %s: %s\n", e.status, e.code, e.message);
		return 7;
	}
	svc_issued_free(&out);
	authority_close(ca);
	free(csr);
	EVP_PKEY_free(key);
	return 0;
}

/* A full disk: 507 disk_full, the token stays unused, and enrolls once there is room. On a
 * real tmpfs in a mount namespace of a child (skipped where none can be made). */
static void test_disk_full(void **state)
{
	struct fixture *f = *state;
	struct authority *mine = f->ca;
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0)
		_exit(disk_full_child(f));
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	f->ca = mine;
	if (WEXITSTATUS(status) == 77)
		skip();
	assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_success, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fewer_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_replay, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expired, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_foreign_malformed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refused_after_take, setup, teardown),
		cmocka_unit_test_setup_teardown(test_policy_changed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_race, setup, teardown),
		cmocka_unit_test_setup_teardown(test_disk_full, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
