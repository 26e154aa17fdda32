/*
 * mtls ca init: a root CA and an issuing CA, keys ECDSA P-384 by default.
 */
#include <stdio.h>
#include <string.h>

#include "authority.h"
#include "ca_cmd.h"
#include "grant.h"
#include "issue.h"
#include "keys.h"
#include "pkcs11.h"

struct init_opts {
	const char *dir;
	const char *root_key_dir;
	const char *name;
	const char *key;
	long long root_days;
	long long intermediate_days;
	long long server_days;
	long long client_days;
	long long crl_days;
	const char *crl_url;
	const char *ocsp_url;
	int must_staple;
	const char *passphrase_file;
	const char *passphrase_env;
	const char *config;
	const char *store;
	const char *key_uri;
	const char *pkcs11_module;
};

#define O(f) offsetof(struct init_opts, f)

static const struct opt init_table[] = {
	CA_OPT_DIR(O),
	{"root-key-dir", OPT_STRING, O(root_key_dir), "DIR",
	 "write the root key here instead, to be kept offline"},
	{"name", OPT_STRING, O(name), "NAME",
	 "organisation name in the CA subjects (default mtls)"},
	{"key", OPT_STRING, O(key), "ALG",
	 "CA key algorithm: p384 (default), p256, ed25519, "
	 "rsa3072, rsa4096"},
	{"root-days", OPT_INT, O(root_days), "DAYS", "root lifetime (default 3650)"},
	{"intermediate-days", OPT_INT, O(intermediate_days), "DAYS",
	 "issuing CA lifetime (default 1825)"},
	{"server-days", OPT_INT, O(server_days), "DAYS",
	 "default lifetime of server certificates (default 90)"},
	{"client-days", OPT_INT, O(client_days), "DAYS",
	 "default lifetime of client certificates (default 90)"},
	{"crl-days", OPT_INT, O(crl_days), "DAYS", "CRL validity, nextUpdate (default 7)"},
	{"crl-url", OPT_STRING, O(crl_url), "URL",
	 "CRL distribution point written into certificates and the CRL: an http:// or https:// "
	 "URL of at most 2048 bytes"},
	{"ocsp-url", OPT_STRING, O(ocsp_url), "URL",
	 "OCSP responder written into certificates (authorityInfoAccess), e.g. the plain port "
	 "of 'mtls ca serve' with /ocsp: an http:// or https:// URL of at most 2048 bytes"},
	{"must-staple", OPT_FLAG, O(must_staple), NULL,
	 "server and peer certificates carry the TLS feature status_request (RFC 7633): clients "
	 "that honour it refuse a server that does not staple a good OCSP answer; needs "
	 "--ocsp-url"},
	{"passphrase-file", OPT_STRING, O(passphrase_file), "FILE",
	 "encrypt the CA keys with the passphrase in FILE (with --key-uri: the token's PIN, "
	 "which encrypts the root key too)"},
	{"passphrase-env", OPT_STRING, O(passphrase_env), "VAR",
	 "encrypt the CA keys with the passphrase in environment variable VAR (with --key-uri: "
	 "the token's PIN)"},
	{"key-uri", OPT_STRING, O(key_uri), "URI",
	 "the issuing CA's key is this one on a PKCS#11 token (pkcs11:token=...;object=..., no "
	 "PIN in it): certified by the root, recorded in the inventory, used through the token "
	 "by every command that signs; no intermediate.key is written"},
	{"pkcs11-module", OPT_STRING, O(pkcs11_module), "PATH",
	 "the PKCS#11 module for --key-uri (e.g. /usr/lib/softhsm/libsofthsm2.so; default the "
	 "URI's module-path, else p11-kit-proxy.so), recorded with the URI"},
	{"store", OPT_STRING, O(store), "URL",
	 "keep the inventory in this PostgreSQL database (postgresql://user@host:5432/dbname, "
	 "no password: PGPASSFILE or PGPASSWORD) instead of DIR/ca.db, for several CA nodes"},
	CA_OPT_CONFIG(O),
	OPT_END,
};

int cmd_ca_init(int argc, char **argv)
{
	struct init_opts o = {.name = "mtls",
			      .key = "p384",
			      .root_days = 3650,
			      .intermediate_days = 1825,
			      .server_days = 90,
			      .client_days = 90,
			      .crl_days = 7};
	struct options_state st = {0};
	struct authority_init in;
	char err[1024] = "", *pass = NULL;
	int rc =
		ca_parse("init", "mtls ca init [--dir DIR] [options]",
			 "Create a root CA and an issuing CA (pathlen 0) in DIR, an inventory, and "
			 "an empty CRL.\nPeers trust DIR/root.pem; certificates are issued by "
			 "DIR/intermediate.pem.",
			 init_table, &o, argc, argv, &st);

	if (rc >= 0)
		goto out;
	rc = 2;
	if (st.positional.n != 0) {
		ca_fail("init", "unexpected argument; see --help");
		goto out;
	}
	if (o.root_days < 2 || o.intermediate_days < 1 || o.server_days < 1 || o.client_days < 1 ||
	    o.crl_days < 1 || o.root_days > 36500 || o.crl_days > 366) {
		ca_fail("init", "lifetimes must be positive days (root at most 100 years, CRL at "
				"most 366 days)");
		goto out;
	}
	/* the subjects are "NAME Root CA" and "NAME Issuing CA" with O=NAME: at most 64
	 * characters each (RFC 5280 ub-common-name), and authority.c keeps 50 bytes of NAME */
	if (grant_check_text(o.name, 50, "--name", err, sizeof(err)) != 0) {
		ca_fail("init", err);
		goto out;
	}
	if (strlen(o.name) > 50) {
		ca_fail("init", "--name is longer than 50 bytes; use a shorter one");
		goto out;
	}
	if (o.crl_url != NULL && issue_check_crl_url(o.crl_url, err, sizeof(err)) != 0) {
		ca_fail("init", err);
		goto out;
	}
	if (o.ocsp_url != NULL && issue_check_ocsp_url(o.ocsp_url, err, sizeof(err)) != 0) {
		ca_fail("init", err);
		goto out;
	}
	if (o.store != NULL && store_url_check(o.store, err, sizeof(err)) != 0) {
		ca_fail("init", err);
		goto out;
	}
	if (o.pkcs11_module != NULL && o.key_uri == NULL) {
		ca_fail("init", "--pkcs11-module goes with --key-uri; give the key's URI too");
		goto out;
	}
	/* recorded for every later command, whatever its working directory */
	if (o.pkcs11_module != NULL && o.pkcs11_module[0] != '/' &&
	    strchr(o.pkcs11_module, '/') != NULL) {
		ca_fail("init", "--pkcs11-module: give the module's absolute path (it is recorded "
				"for every later command, run from any directory)");
		goto out;
	}
	if (o.key_uri != NULL && pkcs11_uri_check(o.key_uri, NULL, 0, err, sizeof(err)) != 0) {
		ca_failf("init", "--key-uri: %s", err);
		goto out;
	}
	if (keys_passphrase(o.passphrase_file, o.passphrase_env, &pass, err, sizeof(err)) != 0) {
		ca_fail("init", err);
		goto out;
	}
	in = (struct authority_init){.dir = o.dir != NULL ? o.dir : ca_default_dir(),
				     .root_key_dir = o.root_key_dir,
				     .name = o.name,
				     .key_alg = o.key,
				     .root_days = (long)o.root_days,
				     .intermediate_days = (long)o.intermediate_days,
				     .server_days = (long)o.server_days,
				     .client_days = (long)o.client_days,
				     .crl_days = (long)o.crl_days,
				     .crl_url = o.crl_url,
				     .ocsp_url = o.ocsp_url,
				     .must_staple = o.must_staple != 0,
				     .passphrase = pass,
				     .store_url = o.store,
				     .key_uri = o.key_uri,
				     .key_module = o.pkcs11_module};
	if (authority_create(&in, err, sizeof(err)) != 0) {
		ca_fail("init", err);
		rc = 1;
		goto out;
	}
	printf("created CA in %s\n", in.dir);
	printf("  trust bundle (give peers as --ca): %s/root.pem\n", in.dir);
	printf("  issuing CA:                        %s/intermediate.pem\n", in.dir);
	printf("  CRL:                               %s/crl.pem\n", in.dir);
	if (o.key_uri != NULL)
		printf("  issuing key:                       on the PKCS#11 token, %s\n",
		       o.key_uri);
	if (o.store != NULL)
		printf("  inventory:                         the database in %s/store\n", in.dir);
	printf("  root key:                          %s/root.key%s\n",
	       o.root_key_dir != NULL ? o.root_key_dir : in.dir,
	       o.root_key_dir != NULL ? " (keep it offline)" : "");
	rc = 0;
out:
	keys_free_passphrase(pass);
	options_free(&st);
	return rc;
}
