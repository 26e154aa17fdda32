/*
 * Keys on a PKCS#11 token (mtls_config_set_key_uri(), mtls_config_set_pkcs11_module()):
 * handshakes over socketpairs with the server's EC P-256 key and the client's RSA key on a
 * SoftHSM token, a reload from a file key to a token key and back, and the refusals: a wrong
 * PIN, no PIN, no such object or token, no such module, a URI holding a PIN, a token key
 * that is not the certificate's, a second module in one process; the token taken away while
 * a server runs (handshakes and a reload fail, saying so). The PIN is gone from the
 * endpoint's state once the key is loaded.
 *
 * Each test runs in a process of its own (this program executes itself with the test's name)
 * with its own token in a mkdtemp directory and its own SOFTHSM2_CONF: a process has one
 * PKCS#11 engine, whose module reads its configuration once, when it is initialized.
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1 /* ENGINE_register_all_complete(), as libcurl uses it */

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/engine.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "internal.h"
#include "pkcs11.h"
#include "testutil.h"

#define APP1	     "spiffe://test.mtls/ns/prod/sa/app1"
#define SOFTHSM_MOD  "/usr/lib/softhsm/libsofthsm2.so"
#define PIN	     "1234"
#define SERVER_KEY   "pkcs11:token=t1;object=srv;type=private"
#define CLIENT_KEY   "pkcs11:token=t1;object=cli"
#define OTHER_OBJECT "pkcs11:token=t1;object=nosuch"

struct token {
	char dir[256];
	char module[300];
	char server_pem[300]; /* chain for the EC key srv */
	char client_pem[300]; /* chain for the RSA key cli */
};

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd);
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_true(fputs(text, f) >= 0);
	assert_int_equal(fclose(f), 0);
}

/* A certificate for the public key of token object label, issued by the zoo's issuing CA,
 * written with that CA as its chain to path. The public key is read with pkcs11-tool, so the
 * test's own process never logs in before the library does. */
static void issue_for(const struct token *t, const char *label, bool server, const char *path)
{
	X509 *issuer = test_read_cert("int.pem");
	FILE *f = fopen(cert_path("int.key"), "r");
	EVP_PKEY *ca_key = f != NULL ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
	EVP_PKEY *key;
	X509 *cert = X509_new();
	X509_NAME *name = X509_NAME_new();
	BIGNUM *serial = BN_new();
	char der_path[300];
	const unsigned char *p;
	unsigned char *der;
	size_t len;
	BIO *out;

	assert_non_null(ca_key);
	fclose(f);
	snprintf(der_path, sizeof(der_path), "%s/%s.pub.der", t->dir, label);
	assert_int_equal(run("pkcs11-tool --module %s --token-label t1 --read-object --type "
			     "pubkey --label %s -o %s >/dev/null 2>&1",
			     SOFTHSM_MOD, label, der_path),
			 0);
	der = (unsigned char *)test_slurp(der_path, &len);
	p = der;
	key = d2i_PUBKEY(NULL, &p, (long)len);
	assert_non_null(key);
	free(der);

	assert_int_equal(BN_rand(serial, 120, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY), 1);
	BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(cert));
	X509_set_version(cert, X509_VERSION_3);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
				   (const unsigned char *)(server ? "server.test" : "app1"), -1, -1,
				   0);
	X509_set_subject_name(cert, name);
	X509_set_issuer_name(cert, X509_get_subject_name(issuer));
	X509_gmtime_adj(X509_getm_notBefore(cert), -60);
	X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
	X509_set_pubkey(cert, key);
	test_add_ext(cert, issuer, NID_basic_constraints, "critical,CA:FALSE");
	test_add_ext(cert, issuer, NID_key_usage,
		     server ? "critical,digitalSignature,keyEncipherment"
			    : "critical,digitalSignature,keyEncipherment");
	test_add_ext(cert, issuer, NID_ext_key_usage, server ? "serverAuth" : "clientAuth");
	test_add_ext(cert, issuer, NID_subject_key_identifier, "hash");
	test_add_ext(cert, issuer, NID_authority_key_identifier, "keyid:always");
	test_add_ext(cert, issuer, NID_subject_alt_name, server ? "DNS:server.test" : "URI:" APP1);
	assert_true(X509_sign(cert, ca_key, EVP_sha256()) > 0);
	out = BIO_new_file(path, "w");
	assert_non_null(out);
	assert_int_equal(PEM_write_bio_X509(out, cert), 1);
	assert_int_equal(PEM_write_bio_X509(out, issuer), 1);
	BIO_free(out);
	BN_free(serial);
	X509_NAME_free(name);
	X509_free(cert);
	EVP_PKEY_free(key);
	EVP_PKEY_free(ca_key);
	X509_free(issuer);
}

static int setup(void **state)
{
	struct token *t = calloc(1, sizeof(*t));
	char conf[300], text[600];
	const char *tmp = getenv("TMPDIR");

	assert_non_null(t);
	snprintf(t->dir, sizeof(t->dir), "%s/mtls-p11-XXXXXX", tmp != NULL ? tmp : "/tmp");
	assert_non_null(mkdtemp(t->dir));
	snprintf(text, sizeof(text), "%s/tokens", t->dir);
	assert_int_equal(mkdir(text, 0700), 0);
	snprintf(conf, sizeof(conf), "%s/softhsm2.conf", t->dir);
	snprintf(text, sizeof(text),
		 "directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = "
		 "ERROR\n",
		 t->dir);
	write_text(conf, text);
	assert_int_equal(setenv("SOFTHSM2_CONF", conf, 1), 0);
	snprintf(t->module, sizeof(t->module), "%s", SOFTHSM_MOD);
	assert_int_equal(run("softhsm2-util --init-token --free --label t1 --so-pin 5678 --pin "
			     "%s >/dev/null",
			     PIN),
			 0);
	assert_int_equal(run("pkcs11-tool --module %s --token-label t1 --login --pin %s "
			     "--keypairgen --key-type EC:prime256v1 --label srv --id 01 "
			     ">/dev/null 2>&1",
			     SOFTHSM_MOD, PIN),
			 0);
	assert_int_equal(run("pkcs11-tool --module %s --token-label t1 --login --pin %s "
			     "--keypairgen --key-type rsa:2048 --label cli --id 02 >/dev/null "
			     "2>&1",
			     SOFTHSM_MOD, PIN),
			 0);
	snprintf(t->server_pem, sizeof(t->server_pem), "%s/server.pem", t->dir);
	snprintf(t->client_pem, sizeof(t->client_pem), "%s/client.pem", t->dir);
	issue_for(t, "srv", true, t->server_pem);
	issue_for(t, "cli", false, t->client_pem);
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct token *t = *state;

	run("rm -rf %s", t->dir);
	free(t);
	return 0;
}

/* A config for one side: a token key (uri, pin) with chain, or the zoo's file key when uri
 * is NULL. */
static struct mtls_config *side(const struct token *t, bool server, const char *uri,
				const char *pin, const char *chain)
{
	struct mtls_config *cfg = mtls_config_new();

	assert_non_null(cfg);
	if (uri == NULL) {
		assert_int_equal(
			mtls_config_set_cert_file(
				cfg, cert_path(server ? "server-chain.pem" : "client-chain.pem")),
			0);
		assert_int_equal(mtls_config_set_key_file(
					 cfg, cert_path(server ? "server.key" : "client.key")),
				 0);
	} else {
		assert_int_equal(mtls_config_set_cert_file(cfg, chain), 0);
		if (mtls_config_set_key_uri(cfg, uri) != 0)
			fail_msg("key uri: %s", mtls_config_error(cfg));
		assert_int_equal(mtls_config_set_pkcs11_module(cfg, t->module), 0);
		if (pin != NULL)
			assert_int_equal(mtls_config_set_key_passphrase(cfg, pin), 0);
	}
	assert_int_equal(mtls_config_set_ca_file(cfg, cert_path("ca.pem")), 0);
	if (server)
		assert_int_equal(mtls_config_allow_uri(cfg, APP1), 0);
	return cfg;
}

/* Configure e with cfg (freed); returns mtls_configure()'s result. */
static int apply(struct mtls *e, struct mtls_config *cfg)
{
	int rc = mtls_configure(e, cfg);

	mtls_config_free(cfg);
	return rc;
}

/* One connection: both sides must finish the handshake, the server seeing APP1, and a few
 * bytes must cross both ways. */
static void connect_ok(struct mtls *server, struct mtls *client)
{
	struct mtls *sc, *cc;
	int fds[2], srv_rc, cli_rc;
	char buf[8];

	test_socketpair(fds);
	sc = mtls_accept_fd(server, fds[0]);
	cc = mtls_connect_fd(client, fds[1], "server.test");
	assert_non_null(sc);
	assert_non_null(cc);
	test_handshake_pair(sc, cc, &srv_rc, &cli_rc);
	if (srv_rc != 0 || cli_rc != 0)
		fail_msg("handshake: server '%s', client '%s'", mtls_error(sc), mtls_error(cc));
	assert_string_equal(mtls_peer_identity(mtls_conn_peer(sc)), APP1);
	assert_int_equal(mtls_write_all(cc, "ping", 4, 5000), 0);
	assert_int_equal(mtls_read_wait(sc, buf, sizeof(buf), 5000), 4);
	assert_memory_equal(buf, "ping", 4);
	test_pair_free(sc, cc, fds);
}

/* The server signs with its EC P-256 key on the token, the client with its RSA key on the
 * same token; both ways with a file key on the other side too. */
static void test_handshakes(void **state)
{
	struct token *t = *state;
	struct mtls *srv_tok = mtls_server_new(), *srv_file = mtls_server_new();
	struct mtls *cli_tok = mtls_client_new(), *cli_file = mtls_client_new();

	if (apply(srv_tok, side(t, true, SERVER_KEY, PIN, t->server_pem)) != 0)
		fail_msg("server: %s", mtls_error(srv_tok));
	/* as libcurl's initialization has OpenSSL do (OPENSSL_INIT_ENGINE_ALL_BUILTIN): the
	 * PKCS#11 engine must not become the engine of every key, the peers' too */
	ENGINE_register_all_complete();
	assert_null(ENGINE_get_pkey_meth_engine(EVP_PKEY_EC));
	if (apply(cli_tok, side(t, false, CLIENT_KEY, PIN, t->client_pem)) != 0)
		fail_msg("client: %s", mtls_error(cli_tok));
	assert_int_equal(apply(srv_file, side(t, true, NULL, NULL, NULL)), 0);
	assert_int_equal(apply(cli_file, side(t, false, NULL, NULL, NULL)), 0);

	connect_ok(srv_tok, cli_file); /* EC on the token */
	connect_ok(srv_file, cli_tok); /* RSA on the token */
	connect_ok(srv_tok, cli_tok);
	connect_ok(srv_tok, cli_tok); /* again: the login lasts */
	mtls_free(srv_tok);
	mtls_free(srv_file);
	mtls_free(cli_tok);
	mtls_free(cli_file);
}

/* The PIN is used for the login and then gone: the endpoint's private copy of the config
 * holds neither the key nor the PIN once configured; the caller's config keeps its own copy
 * until it is freed. */
static void test_pin_forgotten(void **state)
{
	struct token *t = *state;
	struct mtls *srv = mtls_server_new();
	struct mtls_config *cfg = side(t, true, SERVER_KEY, PIN, t->server_pem);
	struct state *st;

	system("grep -i 'softhsm\\|pkcs11\\|libp11' /proc/$PPID/maps | awk '{print $6}' | sort -u "
	       ">&2");
	if (mtls_configure(srv, cfg) != 0)
		fail_msg("server: %s", mtls_error(srv));
	assert_true(cfg->passphrase_set); /* the caller's, until mtls_config_free() */
	mtls_config_free(cfg);
	st = endpoint_state(srv);
	assert_non_null(st);
	assert_null(st->config->passphrase);
	assert_false(st->config->passphrase_set);
	state_unref(st);
	mtls_free(srv);
}

/* What each refusal says, with its reason. */
static void expect_refused(const struct token *t, const char *uri, const char *pin,
			   const char *module, enum mtls_reason reason, const char *says)
{
	struct mtls *srv = mtls_server_new();
	struct mtls_config *cfg = side(t, true, uri, pin, t->server_pem);

	if (module != NULL)
		assert_int_equal(mtls_config_set_pkcs11_module(cfg, module), 0);
	assert_int_equal(mtls_configure(srv, cfg), -1);
	mtls_config_free(cfg);
	if (strstr(mtls_error(srv), says) == NULL || mtls_error_reason(srv) != reason)
		fail_msg("expected %s and '%s', got %s: '%s'", mtls_reason_name(reason), says,
			 mtls_reason_name(mtls_error_reason(srv)), mtls_error(srv));
	assert_null(strstr(mtls_error(srv), PIN));
	assert_null(strchr(mtls_error(srv), '\n'));
	mtls_free(srv);
}

static void test_wrong_pin(void **state)
{
	expect_refused(*state, SERVER_KEY, "9999", NULL, MTLS_REASON_BAD_PASSPHRASE,
		       "the token refused the PIN for PKCS#11 key " SERVER_KEY ": wrong PIN");
}

static void test_no_pin(void **state)
{
	expect_refused(*state, SERVER_KEY, NULL, NULL, MTLS_REASON_BAD_PASSPHRASE,
		       "needs the token's PIN; give it from a file or an environment variable");
}

static void test_missing_object(void **state)
{
	expect_refused(*state, OTHER_OBJECT, PIN, NULL, MTLS_REASON_FILE,
		       "no private key matches PKCS#11 URI " OTHER_OBJECT);
	expect_refused(*state, "pkcs11:token=nosuchtoken;object=srv", PIN, NULL, MTLS_REASON_FILE,
		       "check token= and object=/id=");
}

static void test_missing_module(void **state)
{
	struct token *t = *state;
	char module[400];

	snprintf(module, sizeof(module), "%s/no-such-module.so", t->dir);
	expect_refused(t, SERVER_KEY, PIN, module, MTLS_REASON_FILE, "cannot load PKCS#11 module");
}

/* A token key that is not the certificate's: the match check still runs. */
static void test_key_mismatch(void **state)
{
	struct token *t = *state;
	struct mtls *srv = mtls_server_new();
	struct mtls_config *cfg = side(t, true, CLIENT_KEY, PIN, t->server_pem);

	assert_int_equal(mtls_configure(srv, cfg), -1);
	mtls_config_free(cfg);
	assert_int_equal(mtls_error_reason(srv), MTLS_REASON_KEY_MISMATCH);
	assert_non_null(strstr(mtls_error(srv), "private key " CLIENT_KEY " does not match"));
	mtls_free(srv);
}

/* The URI is checked when it is set: a PIN in it is refused before anything is loaded, and
 * so is a URI that names no private key; a key file set after replaces it, and it replaces
 * a key file set before. */
static void test_uri_setter(void **state)
{
	struct mtls_config *cfg = mtls_config_new();
	static const char *const bad[] = {
		"pkcs11:token=t1;object=srv;pin-value=1234",
		"pkcs11:token=t1;object=srv?pin-value=1234",
		"pkcs11:token=t1;object=srv?pin-source=file:/etc/pin",
		"pkcs11:token=t1;object=srv;type=cert",
		"pkcs11:",
		"pkcs11:token=t 1;object=srv",
		"pkcs11:token=t1;object=srv\n{\"forged\":1}",
		"file:/key.pem",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(mtls_config_set_key_uri(cfg, bad[i]), -1);
		assert_int_equal(mtls_config_error_reason(cfg), MTLS_REASON_CONFIG);
		assert_null(strstr(mtls_config_error(cfg), "1234"));
		assert_null(cfg->key_uri);
	}
	assert_non_null(strstr(mtls_config_error(cfg), "not a PKCS#11 URI"));
	assert_int_equal(mtls_config_set_key_uri(cfg, "pkcs11:token=t1;object=srv;pin-value=1"),
			 -1);
	assert_non_null(strstr(mtls_config_error(cfg), "holds a PIN"));
	assert_int_equal(mtls_config_set_key_uri(cfg, NULL), -1);
	assert_int_equal(mtls_config_error_reason(cfg), MTLS_REASON_USAGE);

	assert_int_equal(mtls_config_set_key_file(cfg, cert_path("server.key")), 0);
	assert_int_equal(mtls_config_set_key_uri(cfg, SERVER_KEY "?module-path=%2Fx.so"), 0);
	assert_null(cfg->key.data);
	assert_string_equal(cfg->key_uri, SERVER_KEY "?module-path=%2Fx.so");
	assert_int_equal(mtls_config_set_key_file(cfg, cert_path("server.key")), 0);
	assert_null(cfg->key_uri);
	assert_non_null(cfg->key.data);
	assert_int_equal(mtls_config_set_pkcs11_module(cfg, "/x.so"), 0);
	assert_int_equal(mtls_config_set_pkcs11_module(cfg, NULL), 0);
	assert_null(cfg->pkcs11_module);
	mtls_config_free(cfg);
}

/* A server reloaded from its file key to the token key and back, with a connection made
 * under each; a failed reload to the token (wrong PIN) keeps the state before it. */
static void test_reload(void **state)
{
	struct token *t = *state;
	struct mtls *srv = mtls_server_new(), *cli = mtls_client_new();

	assert_int_equal(apply(cli, side(t, false, NULL, NULL, NULL)), 0);
	assert_int_equal(apply(srv, side(t, true, NULL, NULL, NULL)), 0);
	connect_ok(srv, cli);
	assert_int_equal(apply(srv, side(t, true, SERVER_KEY, "0000", t->server_pem)), -1);
	assert_int_equal(mtls_error_reason(srv), MTLS_REASON_BAD_PASSPHRASE);
	connect_ok(srv, cli); /* the file key still serves */
	if (apply(srv, side(t, true, SERVER_KEY, PIN, t->server_pem)) != 0)
		fail_msg("to the token: %s", mtls_error(srv));
	connect_ok(srv, cli);
	assert_int_equal(apply(srv, side(t, true, NULL, NULL, NULL)), 0);
	connect_ok(srv, cli);
	mtls_free(srv);
	mtls_free(cli);
}

/* One module per process: once a key was loaded through one, a key naming another is
 * refused with a message that says so, and the first module's keys still load. */
static void test_second_module(void **state)
{
	struct token *t = *state;
	struct mtls *srv = mtls_server_new(), *srv2 = mtls_server_new();
	char other[400];

	if (apply(srv, side(t, true, SERVER_KEY, PIN, t->server_pem)) != 0)
		fail_msg("server: %s", mtls_error(srv));
	snprintf(other, sizeof(other), "%s/other.so", t->dir);
	assert_int_equal(run("cp %s %s", SOFTHSM_MOD, other), 0);
	expect_refused(t, SERVER_KEY, PIN, other, MTLS_REASON_FILE, "takes one module per process");
	if (apply(srv2, side(t, true, SERVER_KEY, PIN, t->server_pem)) != 0)
		fail_msg("again: %s", mtls_error(srv2));
	mtls_free(srv);
	mtls_free(srv2);
}

/* The token taken away while a server signs with it: the handshake fails with a message
 * that names the key and says what to do, and a reload to the same key fails (the engine
 * would hand out its cached key without asking the token) and keeps the state before. */
static void test_token_removed(void **state)
{
	struct token *t = *state;
	struct mtls *srv = mtls_server_new(), *cli = mtls_client_new();
	struct mtls *sc, *cc;
	int fds[2], srv_rc, cli_rc;
	char away[300];

	if (apply(srv, side(t, true, SERVER_KEY, PIN, t->server_pem)) != 0)
		fail_msg("server: %s", mtls_error(srv));
	assert_int_equal(apply(cli, side(t, false, NULL, NULL, NULL)), 0);
	connect_ok(srv, cli);
	snprintf(away, sizeof(away), "%s/away", t->dir);
	assert_int_equal(run("mv %s/tokens %s", t->dir, away), 0);

	/* a client of its own: one that resumes its session would need no signature */
	mtls_free(cli);
	cli = mtls_client_new();
	assert_int_equal(apply(cli, side(t, false, NULL, NULL, NULL)), 0);
	test_socketpair(fds);
	sc = mtls_accept_fd(srv, fds[0]);
	cc = mtls_connect_fd(cli, fds[1], "server.test");
	test_handshake_pair(sc, cc, &srv_rc, &cli_rc);
	assert_int_equal(srv_rc, -1);
	assert_int_equal(cli_rc, -1);
	assert_int_equal(mtls_error_reason(sc), MTLS_REASON_CONFIG);
	if (strstr(mtls_error(sc), "cannot sign the handshake with private key " SERVER_KEY) ==
		    NULL ||
	    strstr(mtls_error(sc), "restart") == NULL)
		fail_msg("server says: %s", mtls_error(sc));
	test_pair_free(sc, cc, fds);

	assert_int_equal(apply(srv, side(t, true, SERVER_KEY, PIN, t->server_pem)), -1);
	assert_int_equal(mtls_error_reason(srv), MTLS_REASON_FILE);
	if (strstr(mtls_error(srv), "no private key matches PKCS#11 URI " SERVER_KEY) == NULL ||
	    strstr(mtls_error(srv), "needs a restart once it is back") == NULL)
		fail_msg("reload says: %s", mtls_error(srv));
	assert_int_equal(run("mv %s %s/tokens", away, t->dir), 0);
	mtls_free(srv);
	mtls_free(cli);
}

/* The parent: each test again in a child process of this program, by name. */
static void in_child(const char *name)
{
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		execl("/proc/self/exe", "test_pkcs11", name, (char *)NULL);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("%s failed in its process (status %d)", name, status);
}

#define CHILD(f)                                                                                   \
	static void child_##f(void **state)                                                        \
	{                                                                                          \
		(void)state;                                                                       \
		in_child(#f);                                                                      \
	}
CHILD(test_uri_setter)
CHILD(test_handshakes)
CHILD(test_pin_forgotten)
CHILD(test_wrong_pin)
CHILD(test_no_pin)
CHILD(test_missing_object)
CHILD(test_missing_module)
CHILD(test_key_mismatch)
CHILD(test_reload)
CHILD(test_second_module)
CHILD(test_token_removed)

#define TOKEN_TEST(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_uri_setter), TOKEN_TEST(test_handshakes),
		TOKEN_TEST(test_pin_forgotten),	   TOKEN_TEST(test_wrong_pin),
		TOKEN_TEST(test_no_pin),	   TOKEN_TEST(test_missing_object),
		TOKEN_TEST(test_missing_module),   TOKEN_TEST(test_key_mismatch),
		TOKEN_TEST(test_reload),	   TOKEN_TEST(test_second_module),
		TOKEN_TEST(test_token_removed),
	};
	const struct CMUnitTest children[] = {
		cmocka_unit_test(child_test_uri_setter),
		cmocka_unit_test(child_test_handshakes),
		cmocka_unit_test(child_test_pin_forgotten),
		cmocka_unit_test(child_test_wrong_pin),
		cmocka_unit_test(child_test_no_pin),
		cmocka_unit_test(child_test_missing_object),
		cmocka_unit_test(child_test_missing_module),
		cmocka_unit_test(child_test_key_mismatch),
		cmocka_unit_test(child_test_reload),
		cmocka_unit_test(child_test_second_module),
		cmocka_unit_test(child_test_token_removed),
	};

	if (access(SOFTHSM_MOD, R_OK) != 0 || system("command -v pkcs11-tool >/dev/null") != 0 ||
	    system("command -v softhsm2-util >/dev/null") != 0) {
		fprintf(stderr, "softhsm2 or opensc (pkcs11-tool) not installed: run "
				"scripts/install-deps.sh\n");
		return 1;
	}
	if (argc == 2) {
		cmocka_set_test_filter(argv[1]);
		return cmocka_run_group_tests_name(argv[1], tests, NULL, NULL);
	}
	return cmocka_run_group_tests(children, NULL, NULL);
}
