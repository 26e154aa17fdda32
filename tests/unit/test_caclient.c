/*
 * The CA service's client (renew/caclient.c) without a network: the root a pin selects from
 * a bundle, a bundle's parser, the issued answer's parser and checks, the CA URL rule; and
 * the enrollment directory written as one change (cli/enroll.c over renew/fileset.c): all
 * files or none, and a failed replacement puts the old content back.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/pem.h>

#include "caclient.h"
#include "certfields.h"
#include "enroll.h"
#include "testutil.h"

static void sha256_of(X509 *x, unsigned char md[32])
{
	unsigned int n = 0;

	assert_int_equal(X509_digest(x, EVP_sha256(), md, &n), 1);
}

static void test_pick_root(void **state)
{
	X509 *root = test_read_cert("ca.pem"), *inter = test_read_cert("int.pem"), *got;
	size_t rl, il;
	char *r = test_slurp(cert_path("ca.pem"), &rl), *i = test_slurp(cert_path("int.pem"), &il);
	char *both = malloc(rl + il + 1);
	unsigned char pin[32], other[32];
	int n;

	(void)state;
	sha256_of(root, pin);
	sha256_of(inter, other);
	memcpy(both, i, il);
	memcpy(both + il, r, rl);
	both[il + rl] = '\0';
	/* the pinned one, wherever it is in the bundle */
	got = caclient_pick_root(both, il + rl, pin, &n);
	assert_non_null(got);
	assert_int_equal(n, 2);
	assert_int_equal(X509_cmp(got, root), 0);
	X509_free(got);
	/* a bundle without it: nothing, however close */
	got = caclient_pick_root(i, il, pin, &n);
	assert_null(got);
	assert_int_equal(n, 1);
	pin[31] ^= 1;
	assert_null(caclient_pick_root(both, il + rl, pin, &n));
	assert_null(caclient_pick_root("", 0, other, &n));
	assert_int_equal(n, 0);
	free(both);
	free(r);
	free(i);
	X509_free(root);
	X509_free(inter);
}

static void test_base_url(void **state)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
		{"https://ca.example.org:8443", "https://ca.example.org:8443"},
		{"https://ca.example.org:8443/", "https://ca.example.org:8443"},
		{"https://127.0.0.1:1", "https://127.0.0.1:1"},
		{"https://[::1]:443", "https://[::1]:443"},
		{"https://ca", "https://ca"},
		{"http://ca.example.org", NULL},
		{"https://", NULL},
		{"https://ca:0", NULL},
		{"https://ca:65536", NULL},
		{"https://ca:443/v1", NULL},
		{"https://user@ca", NULL},
		{"https://ca?x", NULL},
		{"https://ca\n", NULL},
		{"https://[]:1", NULL},
		{"ftp://ca", NULL},
	};
	char out[300], err[300];

	(void)state;
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		int rc = caclient_base_url(cases[k].in, out, sizeof(out), err, sizeof(err));

		if (cases[k].out == NULL) {
			if (rc != -1)
				fail_msg("accepted %s", cases[k].in);
			assert_null(strchr(err, '\n'));
		} else {
			if (rc != 0)
				fail_msg("refused %s: %s", cases[k].in, err);
			assert_string_equal(out, cases[k].out);
		}
	}
}

/* An issued answer for chain (PEM) with the given serial. */
static char *issued_json(const char *chain, const char *serial)
{
	json_t *j =
		json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "serial", serial, "profile",
			  "client", "names", "URI:spiffe://test.mtls/x", "not_before",
			  "2026-12-01T18:00:00Z", "not_after", "2026-12-02T18:00:00Z",
			  "renew_after", "2026-12-02T10:00:00Z", "chain", chain, "roots", "");
	char *s = json_dumps(j, 0);

	json_decref(j);
	return s;
}

static EVP_PKEY *pem_key(const char *pem)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);

	BIO_free(b);
	assert_non_null(k);
	return k;
}

static void test_issued(void **state)
{
	char *chain, *keypem, *chain2, *keypem2, *json, *serial, names[512], err[512];
	struct caclient_issued iss;
	X509 *root = test_read_cert("ca.pem"), *inter = test_read_cert("int.pem");
	STACK_OF(X509) *roots = sk_X509_new_null(), *inters = sk_X509_new_null();
	EVP_PKEY *key, *key2;

	(void)state;
	sk_X509_push(roots, root);
	sk_X509_push(inters, inter);
	test_issue_client(3600, "spiffe://test.mtls/x", &chain, &keypem);
	test_issue_client(3600, "spiffe://test.mtls/y", &chain2, &keypem2);
	key = pem_key(keypem);
	key2 = pem_key(keypem2);
	{
		BIO *b = BIO_new_mem_buf(chain, -1);
		X509 *leaf = PEM_read_bio_X509(b, NULL, NULL, NULL);

		serial = certfields_serial_hex(leaf);
		X509_free(leaf);
		BIO_free(b);
	}
	json = issued_json(chain, serial);
	assert_int_equal(caclient_issued_parse(json, strlen(json), &iss, err, sizeof(err)), 0);
	assert_int_equal(sk_X509_num(iss.chain), 2);
	assert_string_equal(iss.profile, "client");
	/* ours, to the root: accepted, with the certificate's names */
	assert_int_equal(
		caclient_issued_check(&iss, key, roots, names, sizeof(names), err, sizeof(err)), 0);
	assert_string_equal(names, "URI:spiffe://test.mtls/x");
	/* another key's certificate */
	assert_int_equal(
		caclient_issued_check(&iss, key2, roots, names, sizeof(names), err, sizeof(err)),
		-1);
	assert_non_null(strstr(err, "not for the key"));
	/* a root that is not the pinned one (the issuing CA is no trust anchor here) */
	assert_int_equal(
		caclient_issued_check(&iss, key, inters, names, sizeof(names), err, sizeof(err)),
		-1);
	assert_non_null(strstr(err, "does not verify"));
	caclient_issued_free(&iss);
	free(json);
	/* text around and between the blocks and a key block in "chain": what is kept (and
	 * written to disk by enroll and renewal) is the two certificates re-encoded, only */
	{
		const char *end = strstr(chain, "-----END CERTIFICATE-----\n");
		size_t first = (size_t)(end - chain) + strlen("-----END CERTIFICATE-----\n");
		char *dirty = malloc(strlen(chain) + strlen(keypem2) + 64);
		char *j2;

		assert_non_null(end);
		assert_non_null(dirty);
		snprintf(dirty, strlen(chain) + strlen(keypem2) + 64,
			 "junk before\n%.*s%sbetween\n%sjunk after\n", (int)first, chain, keypem2,
			 chain + first);
		j2 = issued_json(dirty, serial);
		assert_int_equal(caclient_issued_parse(j2, strlen(j2), &iss, err, sizeof(err)), 0);
		assert_int_equal(sk_X509_num(iss.chain), 2);
		assert_string_equal(iss.chain_pem, chain);
		assert_int_equal(iss.chain_len, strlen(chain));
		assert_null(strstr(iss.chain_pem, "PRIVATE KEY"));
		assert_null(strstr(iss.chain_pem, "junk"));
		assert_int_equal(caclient_issued_check(&iss, key, roots, names, sizeof(names), err,
						       sizeof(err)),
				 0);
		caclient_issued_free(&iss);
		free(j2);
		free(dirty);
	}
	/* a serial that is not the certificate's */
	json = issued_json(chain, "01");
	assert_int_equal(caclient_issued_parse(json, strlen(json), &iss, err, sizeof(err)), 0);
	assert_int_equal(
		caclient_issued_check(&iss, key, roots, names, sizeof(names), err, sizeof(err)),
		-1);
	caclient_issued_free(&iss);
	free(json);
	/* malformed answers */
	{
		static const char *bad[] = {
			"",
			"[]",
			"{\"serial\": \"01\"}",
			"{\"serial\": 1, \"profile\": \"client\", \"names\": \"\", \"not_before\": "
			"\"2026-12-01T18:00:00Z\", \"not_after\": \"2026-12-01T18:00:00Z\", "
			"\"renew_after\": \"2026-12-01T18:00:00Z\", \"chain\": \"x\"}",
			"{\"serial\": \"0g\", \"profile\": \"client\", \"names\": \"\", "
			"\"not_before\": \"2026-12-01T18:00:00Z\", \"not_after\": "
			"\"2026-12-01T18:00:00Z\", \"renew_after\": \"2026-12-01T18:00:00Z\", "
			"\"chain\": \"x\"}",
			"{\"serial\": \"01\", \"profile\": \"client\", \"names\": \"\", "
			"\"not_before\": \"2026-12-01 18:00:00\", \"not_after\": "
			"\"2026-12-01T18:00:00Z\", \"renew_after\": \"2026-12-01T18:00:00Z\", "
			"\"chain\": \"x\"}",
			"{\"serial\": \"01\", \"profile\": \"client\", \"names\": \"\", "
			"\"not_before\": \"2026-12-01T18:00:00Z\", \"not_after\": "
			"\"2026-12-01T18:00:00Z\", \"renew_after\": \"2026-12-01T18:00:00Z\", "
			"\"chain\": \"no certificate\"}",
		};

		for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
			err[0] = '\0';
			if (caclient_issued_parse(bad[k], strlen(bad[k]), &iss, err, sizeof(err)) !=
			    -1)
				fail_msg("accepted %s", bad[k]);
			assert_true(err[0] != '\0');
		}
	}
	free(serial);
	free(chain);
	free(chain2);
	free(keypem);
	free(keypem2);
	EVP_PKEY_free(key);
	EVP_PKEY_free(key2);
	sk_X509_pop_free(roots, X509_free);
	sk_X509_pop_free(inters, X509_free);
}

/* A bundle: every certificate block parses, at most CACLIENT_MAX_CERTS of them. */
static void test_certs(void **state)
{
	size_t rl, il;
	char *r = test_slurp(cert_path("ca.pem"), &rl), *i = test_slurp(cert_path("int.pem"), &il);
	char *buf = malloc((rl + il) * (CACLIENT_MAX_CERTS + 1) + 64), err[256];
	STACK_OF(X509) * sk;
	size_t n = 0;

	(void)state;
	sk = caclient_certs("", 0, err, sizeof(err));
	assert_non_null(sk);
	assert_int_equal(sk_X509_num(sk), 0);
	sk_X509_free(sk);
	n = (size_t)sprintf(buf, "text before\n%s%s", r, i);
	sk = caclient_certs(buf, n, err, sizeof(err));
	assert_non_null(sk);
	assert_int_equal(sk_X509_num(sk), 2);
	sk_X509_pop_free(sk, X509_free);
	/* a block that does not parse is no silent skip */
	n = (size_t)sprintf(buf, "%s-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
			    r);
	assert_null(caclient_certs(buf, n, err, sizeof(err)));
	assert_non_null(strstr(err, "block 2"));
	/* a certificate under another label: each block must say CERTIFICATE */
	{
		char *x = strstr(strcpy(buf, r), "BEGIN CERTIFICATE"), *y;

		memmove(x + 11, x + 6, strlen(x + 6) + 1);
		memcpy(x + 6, "X509 ", 5);
		y = strstr(x, "END CERTIFICATE");
		memmove(y + 9, y + 4, strlen(y + 4) + 1);
		memcpy(y + 4, "X509 ", 5);
		assert_null(caclient_certs(buf, strlen(buf), err, sizeof(err)));
		assert_non_null(strstr(err, "block 1"));
	}
	/* a certificate with bytes after it in its block */
	{
		X509 *x = test_read_cert("ca.pem");
		unsigned char *der = NULL;
		int dl = i2d_X509(x, &der);
		unsigned char *more = malloc((size_t)dl + 2);
		BIO *b = BIO_new(BIO_s_mem());
		char *p;
		long pl;

		memcpy(more, der, (size_t)dl);
		more[dl] = 0x05;
		more[dl + 1] = 0x00;
		assert_int_equal(PEM_write_bio(b, "CERTIFICATE", "", more, dl + 2) > 0, 1);
		pl = BIO_get_mem_data(b, &p);
		assert_null(caclient_certs(p, (size_t)pl, err, sizeof(err)));
		assert_non_null(strstr(err, "block 1"));
		BIO_free(b);
		free(more);
		OPENSSL_free(der);
		X509_free(x);
	}
	/* another kind of block */
	n = (size_t)sprintf(buf, "%s-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", r);
	assert_null(caclient_certs(buf, n, err, sizeof(err)));
	assert_non_null(strstr(err, "block 2"));
	/* too many */
	n = 0;
	for (int k = 0; k <= CACLIENT_MAX_CERTS; k++) {
		memcpy(buf + n, r, rl);
		n += rl;
	}
	assert_null(caclient_certs(buf, n, err, sizeof(err)));
	assert_non_null(strstr(err, "more than"));
	free(buf);
	free(r);
	free(i);
}

static void test_csr(void **state)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	char err[256], *pem = caclient_csr(key, err, sizeof(err));
	BIO *b;
	X509_REQ *req;

	(void)state;
	assert_non_null(pem);
	b = BIO_new_mem_buf(pem, -1);
	req = PEM_read_bio_X509_REQ(b, NULL, NULL, NULL);
	assert_non_null(req);
	assert_int_equal(X509_REQ_verify(req, key), 1);
	/* no names asked for: empty subject, no extensions */
	assert_int_equal(X509_NAME_entry_count(X509_REQ_get_subject_name(req)), 0);
	assert_int_equal(X509_REQ_get_attr_count(req), 0);
	X509_REQ_free(req);
	BIO_free(b);
	free(pem);
	EVP_PKEY_free(key);
}

/* ---- enroll_write ---- */

/* rename() and link() fail (EIO) at their Nth call from now when armed (linked with
 * -Wl,--wrap=rename,--wrap=link): a publish that fails after others succeeded. */
static int rename_fails_at, link_fails_at;
int __real_rename(const char *from, const char *to);
int __wrap_rename(const char *from, const char *to);
int __real_link(const char *from, const char *to);
int __wrap_link(const char *from, const char *to);

int __wrap_rename(const char *from, const char *to)
{
	if (rename_fails_at > 0 && --rename_fails_at == 0) {
		errno = EIO;
		return -1;
	}
	return __real_rename(from, to);
}

int __wrap_link(const char *from, const char *to)
{
	if (link_fails_at > 0 && --link_fails_at == 0) {
		errno = EIO;
		return -1;
	}
	return __real_link(from, to);
}

static char *mkdtemp_dir(void)
{
	char *d = strdup("/tmp/test_caclient.XXXXXX");

	assert_non_null(mkdtemp(d));
	return d;
}

static void put(const char *dir, const char *name, const char *text)
{
	char p[1024];
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	f = fopen(p, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* name's content in dir, "" if it is missing */
static char *content(const char *dir, const char *name)
{
	char p[1024], *buf = calloc(1, 4096);
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	f = fopen(p, "r");
	if (f != NULL) {
		size_t n = fread(buf, 1, 4095, f);

		buf[n] = '\0';
		fclose(f);
	}
	return buf;
}

static int entries(const char *dir)
{
	char cmd[1200];
	FILE *p;
	int n = -1;

	snprintf(cmd, sizeof(cmd), "ls -A '%s' | wc -l", dir);
	p = popen(cmd, "r");
	assert_non_null(p);
	assert_int_equal(fscanf(p, "%d", &n), 1);
	pclose(p);
	return n;
}

static void rmtree(const char *dir)
{
	char cmd[1200];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

static const struct enroll_file new_files[] = {
	{"ca.pem", "root\n", 5, 0644},
	{"cert.pem", "cert2\n", 6, 0644},
	{"key.pem", "key2\n", 5, 0600},
	{"mtls.conf", "conf\n", 5, 0644},
};

static void test_write_fresh(void **state)
{
	char *d = mkdtemp_dir(), err[512], p[1024], *c;
	struct stat sb;

	(void)state;
	assert_int_equal(enroll_write(d, new_files, 4, false, err, sizeof(err)), 0);
	assert_int_equal(entries(d), 4);
	c = content(d, "key.pem");
	assert_string_equal(c, "key2\n");
	free(c);
	snprintf(p, sizeof(p), "%s/key.pem", d);
	assert_int_equal(stat(p, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	rmtree(d);
	free(d);
}

/* The last file cannot be created: none of the others stays, nothing temporary is left. */
static void test_write_none(void **state)
{
	char *d = mkdtemp_dir(), err[512], p[1024];

	(void)state;
	snprintf(p, sizeof(p), "%s/mtls.conf", d);
	assert_int_equal(mkdir(p, 0700), 0);
	assert_int_equal(enroll_write(d, new_files, 4, false, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "mtls.conf"));
	assert_int_equal(entries(d), 1); /* the directory in the way, nothing else */
	rmtree(d);
	free(d);
}

/* A file in the middle cannot be published (the third link fails): none of the others
 * stays. */
static void test_write_none_io(void **state)
{
	char *d = mkdtemp_dir(), err[512];

	(void)state;
	link_fails_at = 3;
	assert_int_equal(enroll_write(d, new_files, 4, false, err, sizeof(err)), -1);
	link_fails_at = 0;
	assert_non_null(strstr(err, "key.pem"));
	assert_int_equal(entries(d), 0);
	rmtree(d);
	free(d);
}

/* Replacing cert.pem and key.pem when the key cannot take its place (its rename fails
 * after the chain's succeeded): the old chain is put back, so that key and chain still
 * match; when the chain cannot, nothing changes. */
static void test_write_rollback(void **state)
{
	char *d = mkdtemp_dir(), err[512], *c, *k;
	struct enroll_file f[2] = {{"cert.pem", "cert2\n", 6, 0644},
				   {"key.pem", "key2\n", 5, 0600}};

	(void)state;
	put(d, "cert.pem", "cert1\n");
	put(d, "key.pem", "key1\n");
	for (int at = 1; at <= 2; at++) {
		rename_fails_at = at;
		assert_int_equal(enroll_write(d, f, 2, true, err, sizeof(err)), -1);
		rename_fails_at = 0;
		c = content(d, "cert.pem");
		k = content(d, "key.pem");
		assert_string_equal(c, "cert1\n");
		assert_string_equal(k, "key1\n");
		free(c);
		free(k);
		assert_int_equal(entries(d), 2); /* no temporary file left */
	}
	/* and when both can be replaced, both are */
	assert_int_equal(enroll_write(d, f, 2, true, err, sizeof(err)), 0);
	c = content(d, "cert.pem");
	k = content(d, "key.pem");
	assert_string_equal(c, "cert2\n");
	assert_string_equal(k, "key2\n");
	free(c);
	free(k);
	assert_int_equal(entries(d), 2);
	rmtree(d);
	free(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pick_root),      cmocka_unit_test(test_base_url),
		cmocka_unit_test(test_issued),	       cmocka_unit_test(test_csr),
		cmocka_unit_test(test_certs),	       cmocka_unit_test(test_write_fresh),
		cmocka_unit_test(test_write_none),     cmocka_unit_test(test_write_none_io),
		cmocka_unit_test(test_write_rollback),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
