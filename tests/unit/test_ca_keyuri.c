/*
 * The issuing key's settings in the CA's inventory (authority.h): issuer_key_uri and
 * issuer_key_module, "" for a key file, absent in a CA made before them; a CA whose
 * settings name a token never falls back to intermediate.key; a URI that is no longer one
 * mtls takes (a PIN put into it behind the CA's back) is refused at open; init refusals
 * leave nothing. With SoftHSM installed, a CA on a real token: made, recorded, loaded with
 * the PIN, refused without it or with a wrong one.
 */
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
#include <sqlite3.h>

#include "authority.h"

#define SOFTHSM_MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define TOKEN_PIN      "unit-pin-4d2f81"

static char top[64];

static int setup(void **state)
{
	(void)state;
	snprintf(top, sizeof(top), "/tmp/mtls-keyuri-XXXXXX");
	return mkdtemp(top) != NULL ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", top);
	return system(cmd) == 0 ? 0 : -1;
}

static struct authority_init init_of(const char *dir)
{
	return (struct authority_init){.dir = dir,
				       .name = "keyuri",
				       .key_alg = "p256",
				       .root_days = 3650,
				       .intermediate_days = 1825,
				       .server_days = 90,
				       .client_days = 90,
				       .crl_days = 7};
}

static void make_ca(const char *dir)
{
	char err[1024] = "";
	struct authority_init in = init_of(dir);

	if (authority_create(&in, err, sizeof(err)) != 0)
		fail_msg("authority_create: %s", err);
}

/* meta key of DIR/ca.db set to value, or removed (value NULL), behind the store's back */
static void set_meta(const char *dir, const char *key, const char *value)
{
	char path[256];
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;

	snprintf(path, sizeof(path), "%s/ca.db", dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db,
					    value != NULL
						    ? "insert or replace into meta (key, value) "
						      "values (?1, ?2)"
						    : "delete from meta where key = ?1",
					    -1, &st, NULL),
			 SQLITE_OK);
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	if (value != NULL)
		sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
	assert_int_equal(sqlite3_step(st), SQLITE_DONE);
	sqlite3_finalize(st);
	sqlite3_close(db);
}

static void get_meta(const char *dir, const char *key, char *out, size_t len)
{
	char err[512] = "";
	struct authority *ca = authority_open(dir, AUTHORITY_UNLOCKED, err, sizeof(err));

	if (ca == NULL)
		fail_msg("authority_open: %s", err);
	assert_int_equal(store_get_meta(ca->store, key, out, len), 0);
	authority_close(ca);
}

static bool exists(const char *path)
{
	struct stat sb;

	return lstat(path, &sb) == 0;
}

/* A CA with its key in a file records "" for both settings and loads intermediate.key. */
static void test_file_key(void **state)
{
	char dir[128], err[512] = "", v[64] = "x", path[160];
	struct authority *ca;

	(void)state;
	snprintf(dir, sizeof(dir), "%s/file", top);
	make_ca(dir);
	get_meta(dir, "issuer_key_uri", v, sizeof(v));
	assert_string_equal(v, "");
	get_meta(dir, "issuer_key_module", v, sizeof(v));
	assert_string_equal(v, "");
	snprintf(path, sizeof(path), "%s/intermediate.key", dir);
	assert_true(exists(path));
	ca = authority_open(dir, AUTHORITY_EXCLUSIVE, err, sizeof(err));
	assert_non_null(ca);
	assert_string_equal(ca->key_uri, "");
	assert_string_equal(ca->key_module, "");
	if (authority_load_key(ca, NULL, err, sizeof(err)) != 0)
		fail_msg("authority_load_key: %s", err);
	authority_close(ca);
}

/* A CA made before the settings existed (no meta rows) opens and uses intermediate.key. */
static void test_made_before(void **state)
{
	char dir[128], err[512] = "";
	struct authority *ca;

	(void)state;
	snprintf(dir, sizeof(dir), "%s/before", top);
	make_ca(dir);
	set_meta(dir, "issuer_key_uri", NULL);
	set_meta(dir, "issuer_key_module", NULL);
	ca = authority_open(dir, AUTHORITY_EXCLUSIVE, err, sizeof(err));
	if (ca == NULL)
		fail_msg("authority_open: %s", err);
	assert_string_equal(ca->key_uri, "");
	assert_int_equal(authority_load_key(ca, NULL, err, sizeof(err)), 0);
	authority_close(ca);
}

/* Settings that name a token are read back as recorded, and the key is looked for there
 * only: intermediate.key beside it is not taken instead. */
static void test_token_no_fallback(void **state)
{
	char dir[128], err[2048] = "";
	struct authority *ca;

	(void)state;
	snprintf(dir, sizeof(dir), "%s/nofallback", top);
	make_ca(dir);
	set_meta(dir, "issuer_key_uri", "pkcs11:token=ca;object=issuing");
	set_meta(dir, "issuer_key_module", "/nonexistent/libnope.so");
	ca = authority_open(dir, AUTHORITY_EXCLUSIVE, err, sizeof(err));
	if (ca == NULL)
		fail_msg("authority_open: %s", err);
	assert_string_equal(ca->key_uri, "pkcs11:token=ca;object=issuing");
	assert_string_equal(ca->key_module, "/nonexistent/libnope.so");
	assert_int_equal(authority_load_key(ca, NULL, err, sizeof(err)), -1);
	assert_null(ca->issuer_key);
	if (strstr(err, "cannot load PKCS#11 module /nonexistent/libnope.so") == NULL)
		fail_msg("unexpected message: %s", err);
	authority_close(ca);
}

/* A URI edited in the inventory to hold a PIN (or anything mtls does not take) is refused
 * when the CA is opened, without repeating the PIN. */
static void test_tampered_uri(void **state)
{
	static const char *const bad[] = {
		"pkcs11:token=ca;object=issuing;pin-value=1234",
		"pkcs11:token=ca;object=issuing?pin-source=file:/tmp/p",
		"file:/etc/passwd",
	};
	char dir[128], err[1024];

	(void)state;
	snprintf(dir, sizeof(dir), "%s/tampered", top);
	make_ca(dir);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		set_meta(dir, "issuer_key_uri", bad[i]);
		assert_null(authority_open(dir, AUTHORITY_EXCLUSIVE, err, sizeof(err)));
		if (strstr(err, "the issuing key's PKCS#11 URI in the CA's inventory is "
				"unusable") == NULL)
			fail_msg("%s: unexpected message: %s", bad[i], err);
		assert_null(strstr(err, "1234"));
	}
}

/* Init refusals for the token's key come before anything is made: neither DIR nor a
 * missing parent of it is left. */
static void test_create_refusals(void **state)
{
	static const struct {
		const char *uri, *module, *want;
	} cases[] = {
		{"pkcs11:token=ca;object=issuing", "/nonexistent/libnope.so",
		 "cannot load PKCS#11 module /nonexistent/libnope.so"},
		{"pkcs11:token=ca;object=issuing;pin-value=1", NULL, "holds a PIN"},
		{"pkcs11:type=private", NULL, "names no key"},
	};
	char parent[128], dir[160], err[2048];

	(void)state;
	snprintf(parent, sizeof(parent), "%s/absent", top);
	snprintf(dir, sizeof(dir), "%s/ca", parent);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct authority_init in = init_of(dir);

		in.key_uri = cases[i].uri;
		in.key_module = cases[i].module;
		err[0] = '\0';
		assert_int_equal(authority_create(&in, err, sizeof(err)), -1);
		if (strstr(err, cases[i].want) == NULL)
			fail_msg("%s: unexpected message: %s", cases[i].uri, err);
		assert_false(exists(parent));
	}
}

static bool have_softhsm(void)
{
	return access(SOFTHSM_MODULE, R_OK) == 0 &&
	       system("command -v softhsm2-util >/dev/null && command -v pkcs11-tool "
		      ">/dev/null") == 0;
}

/* A CA on a SoftHSM token: settings recorded, no intermediate.key, the key loaded with the
 * PIN and matched to intermediate.pem; refused without the PIN or with a wrong one (before
 * anything is made). */
static void test_softhsm(void **state)
{
	char conf[128], tokens[128], dir[128], cmd[1024], err[2048] = "", v[1024];
	struct authority_init in;
	struct authority *ca;
	FILE *f;

	(void)state;
	/* scripts/install-deps.sh installs SoftHSM: missing, this fails rather than skip */
	assert_true(have_softhsm());
	snprintf(conf, sizeof(conf), "%s/softhsm2.conf", top);
	snprintf(tokens, sizeof(tokens), "%s/tokens", top);
	assert_int_equal(mkdir(tokens, 0700), 0);
	f = fopen(conf, "w");
	assert_non_null(f);
	fprintf(f, "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n",
		tokens);
	fclose(f);
	/* before the engine loads the module, which reads it once */
	assert_int_equal(setenv("SOFTHSM2_CONF", conf, 1), 0);
	snprintf(cmd, sizeof(cmd),
		 "softhsm2-util --init-token --free --label unit --so-pin 5678 --pin %s "
		 ">/dev/null && pkcs11-tool --module %s --token-label unit --login --pin %s "
		 "--keypairgen --key-type EC:prime256v1 --label issuing --id 01 >/dev/null 2>&1",
		 TOKEN_PIN, SOFTHSM_MODULE, TOKEN_PIN);
	assert_int_equal(system(cmd), 0);

	snprintf(dir, sizeof(dir), "%s/token", top);
	in = init_of(dir);
	in.key_uri = "pkcs11:token=unit;object=issuing";
	in.key_module = SOFTHSM_MODULE;
	/* the refusals first: once this process is logged in to the token, the engine's
	 * session needs no PIN again */
	in.passphrase = "wrong-pin-00";
	assert_int_equal(authority_create(&in, err, sizeof(err)), -1);
	if (strstr(err, "wrong PIN") == NULL)
		fail_msg("unexpected message: %s", err);
	assert_false(exists(dir));
	in.passphrase = NULL;
	assert_int_equal(authority_create(&in, err, sizeof(err)), -1);
	if (strstr(err, "needs its PIN: give it with --passphrase-file or --passphrase-env") ==
	    NULL)
		fail_msg("unexpected message: %s", err);
	assert_false(exists(dir));

	in.passphrase = TOKEN_PIN;
	if (authority_create(&in, err, sizeof(err)) != 0)
		fail_msg("authority_create: %s", err);
	snprintf(v, sizeof(v), "%s/intermediate.key", dir);
	assert_false(exists(v));
	get_meta(dir, "issuer_key_uri", v, sizeof(v));
	assert_string_equal(v, "pkcs11:token=unit;object=issuing");
	get_meta(dir, "issuer_key_module", v, sizeof(v));
	assert_string_equal(v, SOFTHSM_MODULE);

	ca = authority_open(dir, AUTHORITY_EXCLUSIVE, err, sizeof(err));
	if (ca == NULL)
		fail_msg("authority_open: %s", err);
	if (authority_load_key(ca, TOKEN_PIN, err, sizeof(err)) != 0)
		fail_msg("authority_load_key: %s", err);
	assert_int_equal(X509_check_private_key(ca->issuer, ca->issuer_key), 1);
	authority_close(ca);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_file_key),	  cmocka_unit_test(test_made_before),
		cmocka_unit_test(test_token_no_fallback), cmocka_unit_test(test_tampered_uri),
		cmocka_unit_test(test_create_refusals),	  cmocka_unit_test(test_softhsm),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
