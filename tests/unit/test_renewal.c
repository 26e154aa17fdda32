/*
 * Certificates that renew themselves (renew/renewal.c), without a CA service: when to renew
 * (⅔ of the life with jitter, never after 75 %, never before now), when to retry (doubling,
 * jittered, bounded, closer as the expiry nears), when to warn; the key type kept; what a
 * renewal refuses before it reaches the network; and a key and chain in two directories
 * replaced as one change (renew/fileset.c). The renewals themselves are in
 * tests/integration/test_tunnel_renewal.sh and test_enroll_client.sh.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

#include "fileset.h"
#include "renewal.h"
#include "testutil.h"

/* ---- the schedule ---- */

static void test_schedule(void **state)
{
	static const long long lives[] = {60, 90, 3600, 86400, 90LL * 86400, 397LL * 86400};
	static const uint32_t rnds[] = {0, 1, 0x40000000u, 0x80000000u, 0xc0000000u, UINT32_MAX};
	const time_t nb = 1800000000;

	(void)state;
	for (size_t l = 0; l < sizeof(lives) / sizeof(lives[0]); l++) {
		long long life = lives[l];
		time_t na = nb + (time_t)life, lo = nb + (time_t)(life * 2 / 3 - life / 20),
		       hi = nb + (time_t)(life * 2 / 3 + life / 20), prev = 0;

		for (size_t r = 0; r < sizeof(rnds) / sizeof(rnds[0]); r++) {
			time_t at = renewal_schedule(nb, na, nb, rnds[r]);

			if (at < lo - 1 || at > hi + 1 || at > nb + (time_t)(life * 3 / 4))
				fail_msg("life %lld rnd %u: at %+lld s, outside [%lld, %lld]", life,
					 rnds[r], (long long)(at - nb), (long long)(lo - nb),
					 (long long)(hi - nb));
			assert_true(at >= prev); /* more random bits, later */
			prev = at;
		}
		/* the jitter spans the whole ±5 % */
		assert_true(renewal_schedule(nb, na, nb, 0) <= lo + 1);
		assert_true(renewal_schedule(nb, na, nb, UINT32_MAX) >= hi - 1);
		/* past the due time: now, never in the past */
		assert_int_equal(renewal_schedule(nb, na, nb + (time_t)(life * 4 / 5), 0),
				 nb + (time_t)(life * 4 / 5));
		/* not yet valid (the clock behind the CA's): from not_before, not from now */
		assert_true(renewal_schedule(nb, na, nb - 1000, 0) >= lo - 1);
		/* expired: due now (the attempt says why it cannot renew) */
		assert_int_equal(renewal_schedule(nb, na, na, 0), na);
		assert_int_equal(renewal_schedule(nb, na, na + 5000, 7), na + 5000);
	}
	/* no lifetime, or a backwards one */
	assert_int_equal(renewal_schedule(nb, nb, nb - 10, 0), nb - 10);
	assert_int_equal(renewal_schedule(nb, nb - 100, nb - 200, 0), nb - 200);
}

static void test_schedule_latest(void **state)
{
	/* ⅔ + 5 % is under 75 %: the cap holds only if the jitter ever grows; keep it checked
	 * for every fraction */
	const time_t nb = 1000;

	(void)state;
	for (uint32_t r = 0; r < UINT32_MAX - 0x01000000u; r += 0x01000000u) {
		time_t at = renewal_schedule(nb, nb + 1000000, nb, r);

		assert_true(at - nb <= 750000);
		assert_true(at - nb >= 616666);
	}
}

static void test_backoff(void **state)
{
	const time_t now = 1800000000, far = now + 365LL * 86400;

	(void)state;
	/* the first retry after 15..30 s, then doubling */
	assert_int_equal(renewal_backoff(1, far, now, 0), now + 30);
	assert_true(renewal_backoff(1, far, now, UINT32_MAX) >= now + 15);
	assert_int_equal(renewal_backoff(2, far, now, 0), now + 60);
	assert_int_equal(renewal_backoff(3, far, now, 0), now + 120);
	for (unsigned k = 1; k < 200; k++) {
		for (int j = 0; j < 3; j++) {
			uint32_t rnd = j == 0 ? 0 : j == 1 ? 0x9e3779b9u : UINT32_MAX;
			time_t t = renewal_backoff(k, far, now, rnd);

			if (t > now + RENEWAL_RETRY_MAX || t < now + RENEWAL_RETRY_FIRST / 2)
				fail_msg("failure %u: retry after %lld s", k, (long long)(t - now));
		}
	}
	/* capped at an hour, and no overflow however many failures */
	assert_int_equal(renewal_backoff(1000000, far, now, 0), now + RENEWAL_RETRY_MAX);
	assert_true(renewal_backoff(UINT32_MAX, far, now, UINT32_MAX) >=
		    now + RENEWAL_RETRY_MAX / 2);
	/* never later than halfway to the expiry: attempts get closer as it nears */
	assert_int_equal(renewal_backoff(5, now + 100, now, 0), now + 50);
	assert_int_equal(renewal_backoff(1, now + 20, now, 0), now + 10);
	assert_true(renewal_backoff(1, now + 20, now, UINT32_MAX) <= now + 10);
	assert_int_equal(renewal_backoff(12, now + 7200, now, 0), now + 3600);
	/* but never in a busy loop */
	assert_int_equal(renewal_backoff(1, now + 1, now, 0), now + RENEWAL_RETRY_SHORTEST);
	assert_int_equal(renewal_backoff(1, now, now, 0), now + 30);
	/* expired: the doubling alone (the attempt fails until someone enrolls again) */
	assert_int_equal(renewal_backoff(3, now - 10, now, 0), now + 120);
}

static void test_warn_at(void **state)
{
	(void)state;
	assert_int_equal(renewal_warn_at(1000, 1090), 1075);	      /* the last sixth */
	assert_int_equal(renewal_warn_at(0, 90 * 86400), 89 * 86400); /* the last day */
	assert_int_equal(renewal_warn_at(1000, 1000), 1000);
	assert_int_equal(renewal_warn_at(1000, 900), 900);
	/* after the latest renewal time: a warning means renewal is late */
	for (long long life = 6; life < 10000000; life *= 7)
		assert_true(renewal_warn_at(0, (time_t)life) >= (time_t)(life * 3 / 4));
}

/* ---- keys ---- */

static void test_key_type(void **state)
{
	static const struct {
		const char *type, *param;
		size_t bits;
		const char *want;
	} cases[] = {
		{"EC", "P-256", 0, "p256"},	 {"EC", "P-384", 0, "p384"},
		{"ED25519", NULL, 0, "ed25519"}, {"RSA", NULL, 2048, "rsa3072"},
		{"RSA", NULL, 3072, "rsa3072"},	 {"EC", "P-521", 0, NULL},
		{"X25519", NULL, 0, NULL},
	};

	(void)state;
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		EVP_PKEY *key =
			cases[k].param != NULL
				? EVP_PKEY_Q_keygen(NULL, NULL, cases[k].type, cases[k].param)
			: cases[k].bits != 0
				? EVP_PKEY_Q_keygen(NULL, NULL, cases[k].type, cases[k].bits)
				: EVP_PKEY_Q_keygen(NULL, NULL, cases[k].type);
		const char *got;

		assert_non_null(key);
		got = renewal_key_type(key);
		if (cases[k].want == NULL)
			assert_null(got);
		else
			assert_string_equal(got, cases[k].want);
		if (got != NULL)
			assert_true(renewal_key_type_known(got));
		EVP_PKEY_free(key);
	}
	assert_false(renewal_key_type_known("rsa2048"));
	assert_false(renewal_key_type_known(""));
}

/* ---- files ---- */

static int rename_fails_at;
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
	return __real_link(from, to);
}

struct dirs {
	char top[64], a[128], b[128];
};

static void make_dirs(struct dirs *d)
{
	snprintf(d->top, sizeof(d->top), "/tmp/test_renewal.XXXXXX");
	assert_non_null(mkdtemp(d->top));
	snprintf(d->a, sizeof(d->a), "%s/certs", d->top);
	snprintf(d->b, sizeof(d->b), "%s/private", d->top);
	assert_int_equal(mkdir(d->a, 0755), 0);
	assert_int_equal(mkdir(d->b, 0700), 0);
}

static void rm_dirs(struct dirs *d)
{
	char cmd[200];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d->top);
	assert_int_equal(system(cmd), 0);
}

static void copy(const char *from, const char *to, mode_t mode)
{
	size_t len;
	char *t = test_slurp(from, &len);
	int fd = open(to, O_WRONLY | O_CREAT | O_TRUNC, mode);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, t, len), (ssize_t)len);
	close(fd);
	free(t);
}

static bool same_content(const char *a, const char *b)
{
	size_t la, lb;
	char *ta = test_slurp(a, &la), *tb = test_slurp(b, &lb);
	bool same = la == lb && memcmp(ta, tb, la) == 0;

	free(ta);
	free(tb);
	return same;
}

static int entries(const char *dir)
{
	char cmd[300];
	FILE *p;
	int n = -1;

	snprintf(cmd, sizeof(cmd), "ls -A '%s' | wc -l", dir);
	p = popen(cmd, "r");
	assert_non_null(p);
	assert_int_equal(fscanf(p, "%d", &n), 1);
	pclose(p);
	return n;
}

/* A chain and its key in two directories: when the key cannot take its place, the chain is
 * put back; when the chain cannot, nothing changes; no temporary file stays either way. */
static void test_fileset_two_dirs(void **state)
{
	struct dirs d;
	char cert[200], key[200], err[512];
	struct stat sb;

	(void)state;
	make_dirs(&d);
	snprintf(cert, sizeof(cert), "%s/app.pem", d.a);
	snprintf(key, sizeof(key), "%s/app.key", d.b);
	copy(cert_path("client-chain.pem"), cert, 0644);
	copy(cert_path("client.key"), key, 0600);
	{
		const struct fileset_file f[2] = {{cert, "new chain\n", 10, 0644, false, 0, 0},
						  {key, "new key\n", 8, 0600, false, 0, 0}};

		for (int at = 1; at <= 2; at++) {
			rename_fails_at = at;
			assert_int_equal(fileset_write(f, 2, true, err, sizeof(err)), -1);
			rename_fails_at = 0;
			assert_true(same_content(cert, cert_path("client-chain.pem")));
			assert_true(same_content(key, cert_path("client.key")));
			assert_int_equal(entries(d.a), 1);
			assert_int_equal(entries(d.b), 1);
		}
		assert_int_equal(fileset_write(f, 2, true, err, sizeof(err)), 0);
	}
	assert_int_equal(stat(key, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_int_equal(entries(d.a), 1);
	assert_int_equal(entries(d.b), 1);
	rm_dirs(&d);
}

struct recover_arg {
	struct renewal_files f;
	int rc;
	char err[512];
};

static void *recover_thread(void *p)
{
	struct recover_arg *a = p;

	a->rc = renewal_recover(&a->f, a->err, sizeof(a->err));
	return NULL;
}

/* Whether another open file description holds the flock on dir. */
static bool dir_locked(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	bool held;

	assert_true(fd >= 0);
	held = flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
	close(fd);
	return held;
}

/* renewal_recover() waits for the two directories in the order mtls agent takes them
 * (device, inode): while another process holds the first and waits for the second, it must
 * not hold the second. Here that process (a child) holds the key's directory, which comes
 * first, and then asks for the certificate's; recovering in certificate-then-key order held
 * the certificate's directory while waiting for the key's: both waited forever (the child's
 * alarm ends it, and the test fails). */
static void test_recover_lock_order(void **state)
{
	struct dirs d;
	struct stat sa, sb;
	struct recover_arg arg;
	const char *first, *second;
	char cert[200], key[200], c;
	int go[2], ready[2], status = 0;
	pthread_t t;
	pid_t pid;

	(void)state;
	make_dirs(&d);
	assert_int_equal(stat(d.a, &sa), 0);
	assert_int_equal(stat(d.b, &sb), 0);
	/* second: the directory that comes first in the lock order; the key goes there */
	first = sa.st_ino > sb.st_ino ? d.a : d.b;
	second = sa.st_ino > sb.st_ino ? d.b : d.a;
	snprintf(cert, sizeof(cert), "%s/app.pem", first);
	snprintf(key, sizeof(key), "%s/app.key", second);
	copy(cert_path("client-chain.pem"), cert, 0644);
	copy(cert_path("client.key"), key, 0600);
	assert_int_equal(pipe(go), 0);
	assert_int_equal(pipe(ready), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fk = open(second, O_RDONLY | O_DIRECTORY),
		    fc = open(first, O_RDONLY | O_DIRECTORY);

		if (fk < 0 || fc < 0 || flock(fk, LOCK_EX) != 0 || write(ready[1], "r", 1) != 1 ||
		    read(go[0], &c, 1) != 1)
			_exit(2);
		alarm(10); /* a deadlock: killed by SIGALRM */
		if (flock(fc, LOCK_EX) != 0)
			_exit(3);
		_exit(0);
	}
	assert_int_equal(read(ready[0], &c, 1), 1);
	memset(&arg, 0, sizeof(arg));
	arg.f.cert = cert;
	arg.f.key = key;
	assert_int_equal(pthread_create(&t, NULL, recover_thread, &arg), 0);
	/* up to a second for the recovery to take the certificate's directory (the old order
	 * does at once); then the child asks for it */
	for (int i = 0; i < 100 && !dir_locked(first); i++)
		poll(NULL, 0, 10);
	assert_int_equal(write(go[1], "g", 1), 1);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(arg.rc, 0);
	close(go[0]);
	close(go[1]);
	close(ready[0]);
	close(ready[1]);
	rm_dirs(&d);
}

/* What renewal_renew() refuses before it reaches the CA, leaving the files as they were. */
static void test_renew_refusals(void **state)
{
	static const struct {
		const char *chain, *key, *key_type, *url, *want;
		int rc;
	} cases[] = {
		{"client-chain.pem", "mismatch.key", NULL, "https://127.0.0.1:1", "does not match",
		 -1},
		{"expired-client-chain.pem", "expired-client.key", NULL, "https://127.0.0.1:1",
		 "expired at", -1},
		{"client-chain.pem", "client.key", "rsa2048", "https://127.0.0.1:1",
		 "unknown key type", RENEWAL_USAGE},
		{"client-chain.pem", "client.key", NULL, "http://127.0.0.1:1", "https://", -1},
		{"malformed.pem", "client.key", NULL, "https://127.0.0.1:1", "certificate file",
		 -1},
		/* port 1 on loopback: nobody there */
		{"client-chain.pem", "client.key", NULL, "https://127.0.0.1:1", "cannot reach", -1},
	};
	struct dirs d;
	char cert[200], key[200], ca[200], err[1024];
	struct renewal_result res;

	(void)state;
	make_dirs(&d);
	snprintf(cert, sizeof(cert), "%s/app.pem", d.a);
	snprintf(key, sizeof(key), "%s/app.key", d.b);
	snprintf(ca, sizeof(ca), "%s/ca.pem", d.a);
	copy(cert_path("ca.pem"), ca, 0644);
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		struct renewal_files f = {cert, key, ca};
		int rc;

		copy(cert_path(cases[k].chain), cert, 0644);
		copy(cert_path(cases[k].key), key, 0600);
		err[0] = '\0';
		rc = renewal_renew(cases[k].url, &f, cases[k].key_type, false, NULL, &res, err,
				   sizeof(err));
		if (rc != cases[k].rc || strstr(err, cases[k].want) == NULL)
			fail_msg("case %zu: rc %d, '%s' (wanted %d, '%s')", k, rc, err, cases[k].rc,
				 cases[k].want);
		assert_null(strchr(err, '\n'));
		assert_true(same_content(cert, cert_path(cases[k].chain)));
		assert_true(same_content(key, cert_path(cases[k].key)));
		assert_int_equal(entries(d.a), 2);
		assert_int_equal(entries(d.b), 1);
	}
	/* the certificate and its key in one file (a combined PEM, which the daemons load):
	 * refused before the CA is asked, the file as it was (written as two files, the key
	 * would have replaced the certificate) */
	{
		char both[256], cmd[900];
		struct renewal_files f = {both, both, ca};

		snprintf(both, sizeof(both), "%s/both.pem", d.a);
		snprintf(cmd, sizeof(cmd), "cat '%s' '%s' > '%s' && chmod 600 '%s'",
			 cert_path("client-chain.pem"), cert_path("client.key"), both, both);
		assert_int_equal(system(cmd), 0);
		assert_int_equal(renewal_renew("https://127.0.0.1:1", &f, NULL, false, NULL, &res,
					       err, sizeof(err)),
				 -1);
		if (strstr(err, "holds both the certificate and its key") == NULL)
			fail_msg("combined file: '%s'", err);
		assert_int_equal(unlink(both), 0);
	}
	/* a renewal of the same files under way elsewhere (its lock on the key's directory): a
	 * failure at once, not a wait */
	{
		struct renewal_files f = {cert, key, ca};
		int fd = open(d.b, O_RDONLY | O_DIRECTORY);

		copy(cert_path("client-chain.pem"), cert, 0644);
		copy(cert_path("client.key"), key, 0600);
		assert_int_equal(flock(fd, LOCK_EX), 0);
		assert_int_equal(renewal_renew("https://127.0.0.1:1", &f, NULL, false, NULL, &res,
					       err, sizeof(err)),
				 -1);
		assert_non_null(strstr(err, "another renewal"));
		close(fd);
	}
	rm_dirs(&d);
}

/* ---- the roots ---- */

/* Another certificate of cert's subject and key, issued by issuer: a link certificate
 * (RFC 4210's newWithOld when cert is the new root and issuer the old). */
static X509 *link_cert(X509 *cert, X509 *issuer, EVP_PKEY *issuer_key)
{
	X509 *c = X509_dup(cert), *out;
	X509V3_CTX v3;
	X509_EXTENSION *aki;
	unsigned char *der = NULL;
	const unsigned char *p;
	int i, len;

	assert_non_null(c);
	assert_int_equal(X509_set_issuer_name(c, X509_get_subject_name(issuer)), 1);
	assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(c), 4242), 1);
	i = X509_get_ext_by_NID(c, NID_authority_key_identifier, -1);
	if (i >= 0)
		X509_EXTENSION_free(X509_delete_ext(c, i));
	X509V3_set_ctx(&v3, issuer, c, NULL, NULL, 0);
	aki = X509V3_EXT_conf_nid(NULL, &v3, NID_authority_key_identifier, "keyid:always");
	assert_non_null(aki);
	assert_int_equal(X509_add_ext(c, aki, -1), 1);
	X509_EXTENSION_free(aki);
	assert_true(X509_sign(c, issuer_key, EVP_sha256()) > 0);
	len = i2d_X509(c, &der);
	assert_true(len > 0);
	p = der;
	out = d2i_X509(NULL, &p, len);
	assert_non_null(out);
	OPENSSL_free(der);
	X509_free(c);
	return out;
}

static STACK_OF(X509) * certs_of(X509 *const *certs)
{
	STACK_OF(X509) *sk = sk_X509_new_null();

	assert_non_null(sk);
	for (int i = 0; certs[i] != NULL; i++)
		assert_true(sk_X509_push(sk, certs[i]) > 0);
	return sk;
}

/* renewal_roots_take(): what a daemon takes of the bundle the CA serves, through a
 * rollover, for a host that trusts the old root, both, or (enrolled after the switch) the
 * new one alone; and what it refuses. */
static void test_roots_take(void **state)
{
	EVP_PKEY *k1, *k2, *kx, *ki;
	X509 *g1 = test_cert_make(&(struct test_cert){.subject = "CN=Root CA", .ca = true}, NULL,
				  NULL, &k1);
	X509 *g2 = test_cert_make(&(struct test_cert){.subject = "CN=Root CA G2", .ca = true}, NULL,
				  NULL, &k2);
	X509 *x = test_cert_make(&(struct test_cert){.subject = "CN=Other CA", .ca = true}, NULL,
				 NULL, &kx);
	X509 *inter = test_cert_make(&(struct test_cert){.subject = "CN=Issuing", .ca = true}, g2,
				     k2, &ki);
	X509 *link = link_cert(g2, g1, k1); /* the new root's key, vouched for by the old */
	X509 *back = link_cert(g1, g2, k2); /* the old root's key, vouched for by the new */
	const struct {
		const char *name;
		X509 *trusted[4], *served[5];
		X509 *taken[4]; /* {NULL}: refused */
		int left_out;
		const char *why;
	} cases[] = {
		{"begin", {g1}, {g1, g2, link}, {g1, g2}, 0, NULL},
		{"begin, both trusted", {g1, g2}, {g1, g2, link}, {g1, g2}, 0, NULL},
		{"enrolled after the switch", {g2}, {g1, g2, link}, {g2}, 1, NULL},
		{"enrolled after the switch, served in another order",
		 {g2},
		 {link, g2, g1},
		 {g2},
		 1,
		 NULL},
		{"finish", {g1, g2}, {g2}, {g2}, 0, NULL},
		{"an oldWithNew link too", {g2}, {g1, g2, link, back}, {g1, g2}, 0, NULL},
		/* refused as before */
		{"a new root without a link", {g1}, {g1, g2}, {NULL}, 0, "no root of"},
		{"the old root without its link", {g2}, {g1, g2}, {NULL}, 0, "no root of"},
		{"another root beside the link's",
		 {g2},
		 {g1, g2, link, x},
		 {NULL},
		 0,
		 "no root of"},
		{"a link from an untrusted root for an untrusted one",
		 {x},
		 {x, g1, g2, link},
		 {NULL},
		 0,
		 "not a root"},
		{"an intermediate", {g2}, {g1, g2, link, inter}, {NULL}, 0, "not a root"},
		{"only the old root and its link", {g2}, {g1, link}, {NULL}, 0, "holds no root of"},
	};

	(void)state;
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		STACK_OF(X509) *trusted = certs_of(cases[c].trusted);
		STACK_OF(X509) *served = certs_of(cases[c].served);
		STACK_OF(X509) *taken = (STACK_OF(X509) *)1;
		char msg[1024] = "";
		int left = -1;
		int rc = renewal_roots_take(served, trusted, "ca.pem", &taken, &left, msg,
					    sizeof(msg));
		int want = 0;

		while (cases[c].taken[want] != NULL)
			want++;
		if (want == 0) {
			if (rc != -1 || taken != NULL || strstr(msg, cases[c].why) == NULL)
				fail_msg("%s: rc %d, message '%s'", cases[c].name, rc, msg);
		} else {
			if (rc != 0)
				fail_msg("%s: refused: %s", cases[c].name, msg);
			if (sk_X509_num(taken) != want || left != cases[c].left_out)
				fail_msg("%s: %d roots taken, %d left out", cases[c].name,
					 sk_X509_num(taken), left);
			for (int i = 0; i < want; i++)
				assert_int_equal(
					X509_cmp(sk_X509_value(taken, i), cases[c].taken[i]), 0);
		}
		sk_X509_free(taken);
		sk_X509_free(trusted);
		sk_X509_free(served);
	}
	X509_free(g1);
	X509_free(g2);
	X509_free(x);
	X509_free(inter);
	X509_free(link);
	X509_free(back);
	EVP_PKEY_free(k1);
	EVP_PKEY_free(k2);
	EVP_PKEY_free(kx);
	EVP_PKEY_free(ki);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_schedule),
		cmocka_unit_test(test_schedule_latest),
		cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_warn_at),
		cmocka_unit_test(test_key_type),
		cmocka_unit_test(test_fileset_two_dirs),
		cmocka_unit_test(test_renew_refusals),
		cmocka_unit_test(test_roots_take),
		cmocka_unit_test(test_recover_lock_order),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
