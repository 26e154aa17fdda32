/*
 * The daemon's start with --ca-url (tunnel/renewer.c renewer_check()): what a renewal killed
 * half-way left beside the key is removed, also with the key in a directory of its own.
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "renewer.h"

#define FMT(buf, ...) assert_true(snprintf(buf, sizeof(buf), __VA_ARGS__) < (int)sizeof(buf))

static void put(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	assert_int_equal(chmod(path, mode), 0);
}

/* Killed after the journal went, before the second names did (fileset.c close_journal()):
 * no journal, the new pair in place, the old chain and the OLD KEY under their .old- names.
 * The daemon's start removes both, not only the chain's. */
static void test_old_key_removed(void **state)
{
	char dir[64], keys[128], cert[160], key[160], oc[200], ok[200], err[1024], cmd[200];

	(void)state;
	FMT(dir, "/tmp/test_tunnel_renewer.XXXXXX");
	assert_non_null(mkdtemp(dir));
	FMT(keys, "%s/keys", dir);
	assert_int_equal(mkdir(keys, 0700), 0);
	FMT(cert, "%s/cert.pem", dir);
	FMT(key, "%s/app.key", keys);
	FMT(oc, "%s.old-0123456789ab", cert);
	FMT(ok, "%s.old-abcdef012345", key);
	put(cert, "not a certificate: the credentials' check says so\n", 0644);
	put(key, "new key\n", 0600);
	put(oc, "old chain\n", 0644);
	put(ok, "old key\n", 0600);
	assert_int_equal(renewer_check(cert, key, err, sizeof(err)), 0);
	assert_int_equal(access(oc, F_OK), -1);
	assert_int_equal(access(ok, F_OK), -1); /* the old private key does not linger */
	assert_int_equal(access(key, F_OK), 0);
	FMT(cmd, "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

/* --ca-url with --cert and --key one file (a combined PEM): refused at start. */
static void test_combined_file_refused(void **state)
{
	char dir[64], both[128], link2[128], err[1024], cmd[200];

	(void)state;
	FMT(dir, "/tmp/test_tunnel_renewer.XXXXXX");
	assert_non_null(mkdtemp(dir));
	FMT(both, "%s/both.pem", dir);
	FMT(link2, "%s/key.pem", dir);
	put(both, "chain and key\n", 0600);
	assert_int_equal(renewer_check(both, both, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "holds both the certificate and its key"));
	/* two names of one file */
	assert_int_equal(link(both, link2), 0);
	assert_int_equal(renewer_check(both, link2, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "holds both the certificate and its key"));
	FMT(cmd, "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_old_key_removed),
		cmocka_unit_test(test_combined_file_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
