/*
 * Root rollover (ca/rollover.h) on a real CA in a temporary directory: the files of each
 * step, the link certificate, chains of leaves issued before the switch under both roots,
 * CRLs signed after it under both, the refusals, recovery of a step killed after its commit,
 * and a begin that fails leaving root.pem as it was.
 */
#include "svc_testca.h"

#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/ocsp.h>

#include "files.h"
#include "issue.h"
#include "keys.h"
#include "ocsp.h"
#include "rollover.h"

struct fixture {
	struct testca t;
	struct authority *ca;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	testca_make(&f->t, "Roll");
	f->ca = testca_open(&f->t);
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

static char *path_of(struct fixture *f, const char *name)
{
	static char buf[4][256];
	static int i;

	i = (i + 1) % 4;
	snprintf(buf[i], sizeof(buf[i]), "%s/%s", f->t.dir, name);
	return buf[i];
}

static STACK_OF(X509) * certs_of(const char *path)
{
	FILE *fp = fopen(path, "r");
	STACK_OF(X509) *s = sk_X509_new_null();
	X509 *x;

	assert_non_null(fp);
	while ((x = PEM_read_X509(fp, NULL, NULL, NULL)) != NULL)
		sk_X509_push(s, x);
	ERR_clear_error();
	fclose(fp);
	return s;
}

static X509 *cert_of(const char *path)
{
	STACK_OF(X509) *s = certs_of(path);
	X509 *x = sk_X509_shift(s);

	assert_non_null(x);
	sk_X509_pop_free(s, X509_free);
	return x;
}

static char *slurp(const char *path)
{
	size_t len;
	char err[256];
	char *p = files_read(path, &len, err, sizeof(err));

	if (p == NULL)
		fail_msg("%s", err);
	return p;
}

/* Does leaf verify with inter as the untrusted intermediate up to root alone (and, with crl,
 * not revoked by it)? 1 yes, 0 no; *code the verify error. */
static int verifies(X509 *leaf, X509 *inter, X509 *root, X509_CRL *crl, int *code)
{
	X509_STORE *st = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	STACK_OF(X509) *untrusted = sk_X509_new_null();
	int ok;

	assert_int_equal(X509_STORE_add_cert(st, root), 1);
	if (crl != NULL) {
		assert_int_equal(X509_STORE_add_crl(st, crl), 1);
		X509_STORE_set_flags(st, X509_V_FLAG_CRL_CHECK);
	}
	sk_X509_push(untrusted, inter);
	assert_int_equal(X509_STORE_CTX_init(ctx, st, leaf, untrusted), 1);
	X509_STORE_CTX_set_flags(ctx, X509_V_FLAG_X509_STRICT);
	ok = X509_verify_cert(ctx);
	*code = X509_STORE_CTX_get_error(ctx);
	ERR_clear_error();
	sk_X509_free(untrusted);
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(st);
	return ok == 1;
}

static X509 *leaf_for(struct fixture *f, const char *uri, time_t issued)
{
	const char *names[] = {uri, NULL};
	EVP_PKEY *k = testca_key();
	X509 *x = testca_issue(f->ca, "client", names, k, issued, issued + 3600);

	EVP_PKEY_free(k);
	return x;
}

static void begin(struct fixture *f, time_t now)
{
	struct rollover_begin_opts o = {.now = now};
	char err[2048] = "";

	if (rollover_begin(f->ca, &o, err, sizeof(err)) != 0)
		fail_msg("rollover_begin: %s", err);
}

static void do_switch(struct fixture *f, time_t now)
{
	char err[2048] = "";

	if (rollover_switch(f->ca, NULL, now, err, sizeof(err)) != 0)
		fail_msg("rollover_switch: %s", err);
}

static void test_phases(void **state)
{
	struct fixture *f = *state;
	time_t now = time(NULL);
	char err[2048] = "";
	struct rollover_state s;
	struct rollover_left left;
	struct stat sb;
	struct svc_error e = {0};
	int64_t number;
	int code;
	X509 *old_root = X509_dup(f->ca->root), *old_inter = X509_dup(f->ca->issuer);
	X509 *new_root, *link, *new_inter, *leaf, *leaf2;
	X509_CRL *crl;
	STACK_OF(X509) * bundle;
	FILE *fp;

	/* a leaf issued before the rollover */
	leaf = leaf_for(f, "URI:spiffe://roll.test/a", now - 20);

	/* switch and finish before begin are refused */
	assert_int_equal(rollover_switch(f->ca, NULL, now, err, sizeof(err)), 1);
	assert_non_null(strstr(err, "rollover begin"));
	assert_int_equal(rollover_finish(f->ca, false, now, &left, err, sizeof(err)), 1);

	begin(f, now - 15);
	assert_int_equal(rollover_state(f->ca, &s, err, sizeof(err)), 0);
	assert_int_equal(s.phase, ROLLOVER_BEGUN);
	/* root.pem: old root, new root, link */
	bundle = certs_of(path_of(f, "root.pem"));
	assert_int_equal(sk_X509_num(bundle), 3);
	assert_int_equal(X509_cmp(sk_X509_value(bundle, 0), old_root), 0);
	new_root = X509_dup(sk_X509_value(bundle, 1));
	link = X509_dup(sk_X509_value(bundle, 2));
	sk_X509_pop_free(bundle, X509_free);
	/* the new root: self-signed, another name, another key */
	assert_int_equal(X509_verify(new_root, X509_get0_pubkey(new_root)), 1);
	assert_int_not_equal(
		X509_NAME_cmp(X509_get_subject_name(new_root), X509_get_subject_name(old_root)), 0);
	assert_int_not_equal(EVP_PKEY_eq(X509_get0_pubkey(new_root), X509_get0_pubkey(old_root)),
			     1);
	/* the link: the new root's subject and key, CA:TRUE, issued and signed by the old root */
	assert_int_equal(
		X509_NAME_cmp(X509_get_subject_name(link), X509_get_subject_name(new_root)), 0);
	assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(link), X509_get0_pubkey(new_root)), 1);
	assert_int_equal(X509_check_issued(old_root, link), X509_V_OK);
	assert_int_equal(X509_verify(link, X509_get0_pubkey(old_root)), 1);
	assert_int_equal(X509_check_ca(link), 1);
	assert_true(certfields_time(X509_get0_notAfter(link)) <=
		    certfields_time(X509_get0_notAfter(old_root)));
	/* the new key: 0600, the new root's */
	assert_int_equal(stat(path_of(f, "root-next.key"), &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	{
		EVP_PKEY *k = keys_load(path_of(f, "root-next.key"), NULL, err, sizeof(err));

		assert_non_null(k);
		assert_int_equal(X509_check_private_key(new_root, k), 1);
		EVP_PKEY_free(k);
	}
	/* a second begin, and finish before switch, are refused */
	{
		struct rollover_begin_opts o = {.now = now};

		assert_int_equal(rollover_begin(f->ca, &o, err, sizeof(err)), 1);
		assert_non_null(strstr(err, "already in progress"));
	}
	assert_int_equal(rollover_finish(f->ca, false, now, &left, err, sizeof(err)), 1);
	/* tokens still pin the old root: chains still lead there */
	assert_int_equal(X509_cmp(f->ca->root, old_root), 0);

	do_switch(f, now - 10);
	assert_int_equal(rollover_switch(f->ca, NULL, now, err, sizeof(err)), 1);
	new_inter = cert_of(path_of(f, "intermediate.pem"));
	/* the same subject and key, issued by the new root */
	assert_int_equal(
		X509_NAME_cmp(X509_get_subject_name(new_inter), X509_get_subject_name(old_inter)),
		0);
	assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(new_inter), X509_get0_pubkey(old_inter)), 1);
	assert_int_equal(X509_check_issued(new_root, new_inter), X509_V_OK);
	assert_int_equal(X509_cmp(f->ca->issuer, new_inter), 0);
	assert_int_equal(X509_cmp(f->ca->root, new_root), 0);

	/* the leaf of before: under the old root with the old intermediate, under the new root
	 * with the new one, and not across */
	assert_true(verifies(leaf, old_inter, old_root, NULL, &code));
	assert_true(verifies(leaf, new_inter, new_root, NULL, &code));
	assert_false(verifies(leaf, old_inter, new_root, NULL, &code));

	/* a CRL signed after the switch verifies for both chains; it revokes for both */
	assert_int_equal(svc_crl_publish(f->ca, now, "tester", &number, &e), 0);
	fp = fopen(path_of(f, "crl.pem"), "r");
	assert_non_null(fp);
	crl = PEM_read_X509_CRL(fp, NULL, NULL, NULL);
	fclose(fp);
	assert_non_null(crl);
	assert_true(verifies(leaf, old_inter, old_root, crl, &code));
	assert_true(verifies(leaf, new_inter, new_root, crl, &code));
	X509_CRL_free(crl);
	{
		char serial[64];
		struct svc_revoked rv = {0};

		leaf2 = leaf_for(f, "URI:spiffe://roll.test/revoked", now - 20);
		issue_serial_hex(leaf2, serial, sizeof(serial));
		assert_int_equal(svc_revoke(f->ca, serial, "keyCompromise", now, "tester", &rv, &e),
				 0);
	}
	fp = fopen(path_of(f, "crl.pem"), "r");
	assert_non_null(fp);
	crl = PEM_read_X509_CRL(fp, NULL, NULL, NULL);
	fclose(fp);
	assert_false(verifies(leaf2, old_inter, old_root, crl, &code));
	assert_int_equal(code, X509_V_ERR_CERT_REVOKED);
	assert_false(verifies(leaf2, new_inter, new_root, crl, &code));
	assert_int_equal(code, X509_V_ERR_CERT_REVOKED);
	X509_CRL_free(crl);
	X509_free(leaf2);

	/* finish is refused while the leaf of before is unexpired and not renewed */
	assert_int_equal(rollover_finish(f->ca, false, now, &left, err, sizeof(err)), 1);
	assert_int_equal(left.count, 1);
	assert_non_null(strstr(err, "1 unexpired certificate"));
	bundle = certs_of(path_of(f, "root.pem"));
	assert_int_equal(sk_X509_num(bundle), 3);
	sk_X509_pop_free(bundle, X509_free);
	/* renewed (the same names, issued after the switch): finish goes */
	X509_free(leaf_for(f, "URI:spiffe://roll.test/a", now));
	assert_int_equal(rollover_left(f->ca, now, &left, err, sizeof(err)), 0);
	assert_int_equal(left.count, 0);
	if (rollover_finish(f->ca, false, now, &left, err, sizeof(err)) != 0)
		fail_msg("rollover_finish: %s", err);
	bundle = certs_of(path_of(f, "root.pem"));
	assert_int_equal(sk_X509_num(bundle), 1);
	assert_int_equal(X509_cmp(sk_X509_value(bundle, 0), new_root), 0);
	sk_X509_pop_free(bundle, X509_free);
	assert_false(files_exists(path_of(f, "root-next.pem")));
	assert_false(files_exists(path_of(f, "root-next.key")));
	assert_false(files_exists(path_of(f, "link.pem")));
	{
		EVP_PKEY *k = keys_load(path_of(f, "root.key"), NULL, err, sizeof(err));

		assert_non_null(k);
		assert_int_equal(X509_check_private_key(new_root, k), 1);
		EVP_PKEY_free(k);
	}
	assert_int_equal(rollover_state(f->ca, &s, err, sizeof(err)), 0);
	assert_int_equal(s.phase, ROLLOVER_NONE);
	assert_int_equal(authority_audit(f->ca, NULL, 0, err, sizeof(err)), 0);
	assert_true(testca_audit_count(&f->t, "rollover") >= 4);

	/* and the next rollover starts from the new root: G3 */
	begin(f, now);
	bundle = certs_of(path_of(f, "root.pem"));
	assert_int_equal(sk_X509_num(bundle), 3);
	{
		char cn[80];

		X509_NAME_get_text_by_NID(X509_get_subject_name(sk_X509_value(bundle, 1)),
					  NID_commonName, cn, sizeof(cn));
		assert_string_equal(cn, "Roll Root CA G3");
	}
	sk_X509_pop_free(bundle, X509_free);

	X509_free(leaf);
	X509_free(old_root);
	X509_free(old_inter);
	X509_free(new_root);
	X509_free(new_inter);
	X509_free(link);
}

static void test_finish_force(void **state)
{
	struct fixture *f = *state;
	time_t now = time(NULL);
	char err[2048] = "";
	struct rollover_left left;

	X509_free(leaf_for(f, "URI:spiffe://roll.test/left", now - 20));
	begin(f, now - 15);
	do_switch(f, now - 10);
	assert_int_equal(rollover_finish(f->ca, false, now, &left, err, sizeof(err)), 1);
	/* an expired one does not count */
	assert_int_equal(rollover_left(f->ca, now + 7200, &left, err, sizeof(err)), 0);
	assert_int_equal(left.count, 0);
	if (rollover_finish(f->ca, true, now, &left, err, sizeof(err)) != 0)
		fail_msg("rollover_finish --force: %s", err);
	assert_int_equal(left.count, 1);
	/* begin: the new root and the link; switch; finish */
	assert_int_equal(testca_audit_count(&f->t, "rollover"), 4);
}

/* A begin that fails on its way (the new key's directory cannot be made) leaves root.pem as
 * it was and nothing of its own behind; the next begin works. */
static void test_begin_fails(void **state)
{
	struct fixture *f = *state;
	char err[2048] = "", bad[256];
	char *before = slurp(path_of(f, "root.pem")), *after;
	struct rollover_state s;
	struct rollover_begin_opts o = {.now = time(NULL)};
	FILE *fp;

	/* a regular file where the directory should be: fails for root too */
	snprintf(bad, sizeof(bad), "%s/not-a-dir", f->t.top);
	fp = fopen(bad, "w");
	assert_non_null(fp);
	fclose(fp);
	o.new_root_key_dir = bad;
	assert_int_equal(rollover_begin(f->ca, &o, err, sizeof(err)), -1);
	after = slurp(path_of(f, "root.pem"));
	assert_string_equal(before, after);
	free(after);
	assert_false(files_exists(path_of(f, "root-next.pem")));
	assert_false(files_exists(path_of(f, "root-prev.pem")));
	assert_false(files_exists(path_of(f, "link.pem")));
	assert_int_equal(rollover_state(f->ca, &s, err, sizeof(err)), 0);
	assert_int_equal(s.phase, ROLLOVER_NONE);
	begin(f, time(NULL));
	free(before);
}

/* A step killed after its commit, before its files were published: the next step (or
 * status) publishes them. */
static void test_recover(void **state)
{
	struct fixture *f = *state;
	char err[2048] = "";
	time_t now = time(NULL);
	X509 *old_root = X509_dup(f->ca->root), *old_inter = X509_dup(f->ca->issuer);
	STACK_OF(X509) * bundle;
	FILE *fp;

	begin(f, now - 10);
	/* as if root.pem had not been written */
	fp = fopen(path_of(f, "root.pem"), "w");
	assert_non_null(fp);
	PEM_write_X509(fp, old_root);
	fclose(fp);
	assert_int_equal(rollover_recover(f->ca, err, sizeof(err)), 0);
	bundle = certs_of(path_of(f, "root.pem"));
	assert_int_equal(sk_X509_num(bundle), 3);
	sk_X509_pop_free(bundle, X509_free);

	do_switch(f, now - 5);
	fp = fopen(path_of(f, "intermediate.pem"), "w");
	assert_non_null(fp);
	PEM_write_X509(fp, old_inter);
	fclose(fp);
	assert_int_equal(rollover_recover(f->ca, err, sizeof(err)), 0);
	{
		X509 *x = cert_of(path_of(f, "intermediate.pem"));

		assert_int_not_equal(X509_cmp(x, old_inter), 0);
		assert_int_equal(X509_cmp(f->ca->issuer, x), 0);
		X509_free(x);
	}
	X509_free(old_root);
	X509_free(old_inter);
}

/* OCSP after the switch: the CertID of a leaf issued before it is the same whichever
 * intermediate certificate the client holds (same name, same key); the answer says good, it
 * verifies under the new root, and its responder certificate is signed by the key of the
 * old intermediate certificate too (a client checking the delegation against the issuer of
 * the leaf's chain of before). */
static void test_ocsp(void **state)
{
	struct fixture *f = *state;
	time_t now = time(NULL);
	char err[2048] = "";
	X509 *old_inter = X509_dup(f->ca->issuer), *leaf, *signer = NULL, *new_root;
	OCSP_CERTID *id_old, *id_new;
	OCSP_REQUEST *rq = OCSP_REQUEST_new();
	OCSP_RESPONSE *resp;
	OCSP_BASICRESP *bs;
	struct ocsp_responder *r = ocsp_responder_new();
	struct ocsp_answer meta;
	unsigned char *der = NULL, *answer = NULL;
	const unsigned char *p;
	size_t answer_len = 0;
	int len, status = -1, reason;
	X509_STORE *st = X509_STORE_new();

	leaf = leaf_for(f, "URI:spiffe://roll.test/ocsp", now - 20);
	begin(f, now - 15);
	do_switch(f, now - 10);
	new_root = X509_dup(f->ca->root);
	id_old = OCSP_cert_to_id(EVP_sha1(), leaf, old_inter);
	id_new = OCSP_cert_to_id(EVP_sha1(), leaf, f->ca->issuer);
	assert_int_equal(OCSP_id_cmp(id_old, id_new), 0);
	if (ocsp_responder_refresh(r, f->ca, now, err, sizeof(err)) != 0)
		fail_msg("ocsp_responder_refresh: %s", err);
	assert_non_null(OCSP_request_add0_id(rq, id_old));
	len = i2d_OCSP_REQUEST(rq, &der);
	assert_true(len > 0);
	assert_int_equal(ocsp_respond(r, f->ca, der, (size_t)len, now, &answer, &answer_len, &meta),
			 0);
	assert_int_equal(meta.status, OCSP_RESPONSE_STATUS_SUCCESSFUL);
	assert_int_equal(meta.cert_status, V_OCSP_CERTSTATUS_GOOD);
	p = answer;
	resp = d2i_OCSP_RESPONSE(NULL, &p, (long)answer_len);
	assert_non_null(resp);
	bs = OCSP_response_get1_basic(resp);
	assert_non_null(bs);
	assert_int_equal(OCSP_resp_find_status(bs, id_new, &status, &reason, NULL, NULL, NULL), 1);
	assert_int_equal(status, V_OCSP_CERTSTATUS_GOOD);
	assert_int_equal(X509_STORE_add_cert(st, new_root), 1);
	assert_int_equal(OCSP_basic_verify(bs, NULL, st, 0), 1);
	assert_int_equal(OCSP_resp_get0_signer(bs, &signer, NULL), 1);
	assert_int_equal(X509_check_issued(old_inter, signer), X509_V_OK);
	assert_int_equal(X509_verify(signer, X509_get0_pubkey(old_inter)), 1);
	ERR_clear_error();

	X509_STORE_free(st);
	OCSP_BASICRESP_free(bs);
	OCSP_RESPONSE_free(resp);
	free(answer);
	OPENSSL_free(der);
	OCSP_REQUEST_free(rq);
	OCSP_CERTID_free(id_new);
	ocsp_responder_free(r);
	X509_free(leaf);
	X509_free(new_root);
	X509_free(old_inter);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_phases, setup, teardown),
		cmocka_unit_test_setup_teardown(test_finish_force, setup, teardown),
		cmocka_unit_test_setup_teardown(test_begin_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recover, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ocsp, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
