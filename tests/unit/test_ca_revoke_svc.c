/*
 * svc_revoke() and svc_crl_publish() (ca/revoke.c) on a real CA made by authority_create() in
 * a temporary directory, certificates issued by the built `mtls ca issue`, and the CLI's
 * `mtls ca revoke` / `mtls ca crl` run in between, as an operator would while the service
 * runs. crl.pem writes are made to fail through a link-time wrap of files_write()
 * (tests/CMakeLists.txt), which works as root too, where a read-only directory would not.
 */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "files.h"
#include "issue.h"
#include "revoke.h"
#include "svc_testca.h"

/* --- crl.pem writes that fail on demand ---------------------------------------------- */

static int write_fails; /* errno to fail the next crl.pem writes with; 0: write */

int __real_files_write(const char *path, const void *data, size_t len, mode_t mode, bool no_replace,
		       char *err, size_t err_len);
int __wrap_files_write(const char *path, const void *data, size_t len, mode_t mode, bool no_replace,
		       char *err, size_t err_len);

int __wrap_files_write(const char *path, const void *data, size_t len, mode_t mode, bool no_replace,
		       char *err, size_t err_len)
{
	const char *base = strrchr(path, '/');

	if (write_fails != 0 && base != NULL && strcmp(base, "/crl.pem") == 0) {
		snprintf(err, err_len, "cannot write %s: %s", path, strerror(write_fails));
		errno = write_fails;
		return -1;
	}
	return __real_files_write(path, data, len, mode, no_replace, err, err_len);
}

/* A store that fails to begin, with this kind of failure; -1: begins. */
static int begin_fails = -1;

int __real_store_begin(struct store *st);
int __wrap_store_begin(struct store *st);
enum store_failure __real_store_error_kind(const struct store *st);
enum store_failure __wrap_store_error_kind(const struct store *st);

int __wrap_store_begin(struct store *st)
{
	return begin_fails >= 0 ? -1 : __real_store_begin(st);
}

enum store_failure __wrap_store_error_kind(const struct store *st)
{
	return begin_fails >= 0 ? (enum store_failure)begin_fails : __real_store_error_kind(st);
}

/* --- a CA in a temporary directory ---------------------------------------------------- */

struct fixture {
	struct testca t;
	struct authority *ca;
	int issued;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	testca_make(&f->t, "svc test");
	/* as mtls ca serve holds it: opened once, locked around each change */
	f->ca = testca_open(&f->t);
	write_fails = 0;
	begin_fails = -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	authority_close(f->ca);
	testca_remove(&f->t);
	free(f);
	return 0;
}

static void lock(struct fixture *f)
{
	char err[1024];

	if (authority_lock(f->ca, err, sizeof(err)) != 0)
		fail_msg("authority_lock: %s", err);
}

/* Run the built `mtls` with args (a shell fragment); its exit status. */
static int mtls_cli(const char *args)
{
	const char *bin = getenv("MTLS_BIN_DIR");
	char cmd[1024];
	int rc;

	assert_non_null(bin);
	snprintf(cmd, sizeof(cmd), "'%s/mtls' %s >/dev/null 2>&1", bin, args);
	rc = system(cmd);
	return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* Issue a client certificate with the CLI (the lock released meanwhile); its serial. */
static void issue(struct fixture *f, char serial[64])
{
	char args[512], path[256];
	FILE *fp;
	X509 *cert;

	snprintf(path, sizeof(path), "%s/leaf%d", f->t.top, ++f->issued);
	snprintf(args, sizeof(args),
		 "ca issue --dir '%s' --profile client --uri spiffe://svc.test/leaf%d --out '%s'",
		 f->t.dir, f->issued, path);
	assert_int_equal(mtls_cli(args), 0);
	strcat(path, ".pem");
	fp = fopen(path, "r");
	assert_non_null(fp);
	cert = PEM_read_X509(fp, NULL, NULL, NULL);
	fclose(fp);
	assert_non_null(cert);
	issue_serial_hex(cert, serial, 64);
	X509_free(cert);
}

/* crl.pem as it is on disk: its number, and the reason code of serial's entry (-1 if not
 * listed; 0 for an entry without a reason code, as "unspecified" is written). */
static int64_t crl_on_disk(struct fixture *f, const char *serial, int *reason)
{
	char path[256];
	FILE *fp;
	X509_CRL *crl;
	ASN1_INTEGER *num;
	STACK_OF(X509_REVOKED) * revoked;
	int64_t n = 0;

	snprintf(path, sizeof(path), "%s/crl.pem", f->t.dir);
	fp = fopen(path, "r");
	assert_non_null(fp);
	crl = PEM_read_X509_CRL(fp, NULL, NULL, NULL);
	fclose(fp);
	assert_non_null(crl);
	num = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
	assert_non_null(num);
	assert_int_equal(ASN1_INTEGER_get_int64(&n, num), 1);
	ASN1_INTEGER_free(num);
	if (reason != NULL) {
		*reason = -1;
		revoked = X509_CRL_get_REVOKED(crl);
		for (int i = 0; i < sk_X509_REVOKED_num(revoked); i++) {
			X509_REVOKED *r = sk_X509_REVOKED_value(revoked, i);
			BIGNUM *bn = ASN1_INTEGER_to_BN(X509_REVOKED_get0_serialNumber(r), NULL);
			char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;

			if (hex != NULL && strcmp(hex, serial) == 0) {
				ASN1_ENUMERATED *code =
					X509_REVOKED_get_ext_d2i(r, NID_crl_reason, NULL, NULL);

				*reason = code != NULL ? (int)ASN1_ENUMERATED_get(code) : 0;
				ASN1_ENUMERATED_free(code);
			}
			OPENSSL_free(hex);
			BN_free(bn);
		}
	}
	X509_CRL_free(crl);
	return n;
}

/* Everything `mtls ca audit` checks agrees (the lock is held). */
static void audit_intact(struct fixture *f)
{
	char out[2048];

	if (authority_audit(f->ca, NULL, 0, out, sizeof(out)) != 0)
		fail_msg("audit: %s", out);
}

/* The lowercase, colon-separated form people paste. */
static void pasted(const char *serial, char *out, size_t len)
{
	size_t n = 0;

	for (size_t i = 0; serial[i] != '\0' && n + 4 < len; i++) {
		if (i > 0 && i % 2 == 0)
			out[n++] = ':';
		out[n++] =
			(char)(serial[i] >= 'A' && serial[i] <= 'F' ? serial[i] + 32 : serial[i]);
	}
	out[n] = '\0';
}

/* The scheduled rebuild, which must succeed. */
static void publish_ok(struct fixture *f, time_t now, int64_t *number)
{
	struct svc_error e = {0};

	if (svc_crl_publish(f->ca, now, "scheduler", number, &e) != 0)
		fail_msg("svc_crl_publish: %d %s: %s", e.status, e.code, e.message);
}

/* --- the tests ----------------------------------------------------------------------- */

/* A revocation is committed and published: crl.pem lists it with its reason under a
 * higher number, and the audit chain holds. */
static void test_revoke_publishes(void **state)
{
	struct fixture *f = *state;
	struct svc_revoked out;
	struct svc_error e = {0};
	char serial[64], input[200];
	int64_t before, number = 0;
	int reason;
	time_t now = time(NULL);

	issue(f, serial);
	lock(f);
	publish_ok(f, now, &number);
	before = crl_on_disk(f, serial, &reason);
	assert_int_equal(before, number);
	assert_int_equal(reason, -1);

	pasted(serial, input, sizeof(input));
	if (svc_revoke(f->ca, input, "keyCompromise", now, "admin@test", &out, &e) != 0)
		fail_msg("svc_revoke: %d %s %s", e.status, e.code, e.message);
	assert_string_equal(out.serial, serial);
	assert_int_equal(out.revoked_at, now);
	assert_true(out.crl_number > before);
	assert_int_equal(crl_on_disk(f, serial, &reason), out.crl_number);
	assert_int_equal(reason, CRL_REASON_KEY_COMPROMISE);
	audit_intact(f);
	authority_unlock(f->ca);
}

/* What is refused changes nothing: no revocation, no CRL. */
static void test_refusals(void **state)
{
	struct fixture *f = *state;
	struct svc_revoked out;
	struct svc_error e = {0};
	char serial[64], root_serial[64], when[32];
	int64_t number, after;
	time_t now = time(NULL);
	struct tm tm;

	issue(f, serial);
	lock(f);
	publish_ok(f, now, &number);

	assert_int_equal(svc_revoke(f->ca, "0badc0ffee", NULL, now, "admin", &out, &e), -1);
	assert_int_equal(e.status, 404);
	assert_string_equal(e.code, "not_found");

	assert_int_equal(svc_revoke(f->ca, serial, "stolen", now, "admin", &out, &e), -1);
	assert_int_equal(e.status, 400);
	assert_string_equal(e.code, "bad_reason");
	assert_non_null(strstr(e.message, "keyCompromise"));
	assert_non_null(strstr(e.message, "privilegeWithdrawn"));

	assert_int_equal(svc_revoke(f->ca, "12zz", NULL, now, "admin", &out, &e), -1);
	assert_int_equal(e.status, 400);
	assert_string_equal(e.code, "bad_serial");
	assert_int_equal(svc_revoke(f->ca, "00:00", NULL, now, "admin", &out, &e), -1);
	assert_int_equal(e.status, 400);

	issue_serial_hex(f->ca->root, root_serial, sizeof(root_serial));
	assert_int_equal(svc_revoke(f->ca, root_serial, NULL, now, "admin", &out, &e), -1);
	assert_int_equal(e.status, 403);
	assert_string_equal(e.code, "ca_certificate");
	after = crl_on_disk(f, serial, NULL);
	assert_int_equal(after, number);

	/* twice: the second says when the first was */
	assert_int_equal(svc_revoke(f->ca, serial, NULL, now - 60, "admin", &out, &e), 0);
	after = out.crl_number;
	assert_int_equal(svc_revoke(f->ca, serial, "superseded", now, "admin", &out, &e), -1);
	assert_int_equal(e.status, 409);
	assert_string_equal(e.code, "already_revoked");
	assert_int_equal(out.revoked_at, now - 60);
	time_t first = now - 60;
	gmtime_r(&first, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	assert_non_null(strstr(e.message, when));
	assert_int_equal(crl_on_disk(f, serial, NULL), after);
	audit_intact(f);
	authority_unlock(f->ca);
}

/* crl.pem cannot be written after the commit: the revocation stands, the answer says the
 * disk is full (507) or that the CRL is not published (500), and the next scheduled
 * publication publishes a CRL that lists it. */
static void test_write_fails_after_commit(void **state)
{
	static const int errors[] = {ENOSPC, EACCES};
	struct fixture *f = *state;
	struct svc_revoked out;
	struct svc_error e = {0};
	char serial[64];
	int64_t on_disk, number;
	int reason;
	time_t now = time(NULL);

	for (size_t i = 0; i < 2; i++) {
		issue(f, serial);
		lock(f);
		publish_ok(f, now, &number);
		on_disk = crl_on_disk(f, serial, NULL);

		write_fails = errors[i];
		assert_int_equal(svc_revoke(f->ca, serial, "keyCompromise", now, "admin", &out, &e),
				 -1);
		write_fails = 0;
		assert_int_equal(e.status, errors[i] == ENOSPC ? 507 : 500);
		assert_string_equal(e.code,
				    errors[i] == ENOSPC ? "disk_full" : "crl_not_published");
		assert_non_null(strstr(e.message, "committed"));
		assert_non_null(strstr(e.message, "next rebuild"));
		assert_true(out.crl_number > on_disk);
		/* nothing was published, and the revocation is committed */
		assert_int_equal(crl_on_disk(f, serial, &reason), on_disk);
		assert_int_equal(reason, -1);
		audit_intact(f); /* crl.pem behind the inventory is not a disagreement */
		assert_int_equal(svc_revoke(f->ca, serial, NULL, now, "admin", &out, &e), -1);
		assert_int_equal(e.status, 409);

		/* a failed scheduled publication is the same: committed, not written */
		write_fails = ENOSPC;
		assert_int_equal(svc_crl_publish(f->ca, now, "scheduler", &number, &e), -1);
		write_fails = 0;
		assert_int_equal(e.status, 507);
		assert_true(number > on_disk);
		assert_int_equal(crl_on_disk(f, serial, NULL), on_disk);

		publish_ok(f, now, &number);
		assert_int_equal(crl_on_disk(f, serial, &reason), number);
		assert_int_equal(reason, CRL_REASON_KEY_COMPROMISE);
		audit_intact(f);
		authority_unlock(f->ca);
	}
}

/* Numbers strictly increase across the service and the CLI working on one CA in turns; the
 * service reads crl.pem afresh each time (the CLI rewrote it). */
static void test_numbers_with_cli(void **state)
{
	struct fixture *f = *state;
	struct svc_revoked out;
	struct svc_error e = {0};
	char a[64], b[64], args[512];
	int64_t last = 0, n, number;
	int reason;
	time_t now = time(NULL);

	for (int round = 0; round < 3; round++) {
		issue(f, a);
		issue(f, b);

		lock(f);
		assert_int_equal(svc_revoke(f->ca, a, "superseded", now, "admin", &out, &e), 0);
		assert_true(out.crl_number > last);
		last = out.crl_number;
		authority_unlock(f->ca);

		snprintf(args, sizeof(args), "ca crl --dir '%s'", f->t.dir);
		assert_int_equal(mtls_cli(args), 0);
		n = crl_on_disk(f, a, &reason);
		assert_true(n > last);
		assert_int_equal(reason, CRL_REASON_SUPERSEDED);
		last = n;

		snprintf(args, sizeof(args),
			 "ca revoke --dir '%s' --serial %s --reason keyCompromise", f->t.dir, b);
		assert_int_equal(mtls_cli(args), 0);
		n = crl_on_disk(f, b, &reason);
		assert_true(n > last);
		assert_int_equal(reason, CRL_REASON_KEY_COMPROMISE);
		last = n;

		lock(f);
		publish_ok(f, now, &number);
		assert_true(number > last);
		assert_int_equal(crl_on_disk(f, b, &reason), number);
		assert_int_equal(reason, CRL_REASON_KEY_COMPROMISE);
		last = number;
		audit_intact(f);
		authority_unlock(f->ca);
	}
	/* the CLI sees the service's revocations as its own */
	snprintf(args, sizeof(args), "ca revoke --dir '%s' --serial %s", f->t.dir, a);
	assert_int_equal(mtls_cli(args), 1);
	snprintf(args, sizeof(args), "ca audit --dir '%s'", f->t.dir);
	assert_int_equal(mtls_cli(args), 0);
}

/* A store that cannot take the change (busy past its timeout, read-only: 503; a full disk:
 * 507) changes nothing. The store's answer is injected (store_begin() and
 * store_error_kind() wrapped): a real busy store waits out a 30-second timeout first. */
static void test_store_unavailable(void **state)
{
	static const struct {
		enum store_failure kind;
		int status;
		const char *code;
	} cases[] = {
		{STORE_FAIL_UNAVAILABLE, 503, "store_unavailable"},
		{STORE_FAIL_FULL, 507, "disk_full"},
		{STORE_FAIL_OTHER, 500, "internal"},
	};
	struct fixture *f = *state;
	struct svc_revoked out;
	struct svc_error e = {0};
	char serial[64];
	int64_t number, on_disk;
	time_t now = time(NULL);

	issue(f, serial);
	lock(f);
	publish_ok(f, now, &number);
	on_disk = crl_on_disk(f, serial, NULL);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		begin_fails = cases[i].kind;
		assert_int_equal(svc_revoke(f->ca, serial, NULL, now, "admin", &out, &e), -1);
		assert_int_equal(e.status, cases[i].status);
		assert_string_equal(e.code, cases[i].code);
		assert_int_equal(svc_crl_publish(f->ca, now, "scheduler", &number, &e), -1);
		assert_int_equal(e.status, cases[i].status);
		begin_fails = -1;
	}
	assert_int_equal(crl_on_disk(f, serial, NULL), on_disk);
	assert_int_equal(svc_revoke(f->ca, serial, NULL, now, "admin", &out, &e), 0);
	assert_true(out.crl_number > on_disk);
	audit_intact(f);
	authority_unlock(f->ca);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_revoke_publishes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_fails_after_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_numbers_with_cli, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_unavailable, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
