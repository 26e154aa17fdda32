/*
 * mtls ca export: a certificate, its key and chain as a password-protected PKCS#12 file for
 * Java keystores and browsers (AES-256-CBC, PBKDF2, SHA-256 MAC).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>

#include "ca_cmd.h"
#include "files.h"
#include "keys.h"

struct export_opts {
	const char *cert;
	const char *key;
	const char *out;
	const char *name;
	const char *password_file;
	const char *password_env;
	const char *config;
};

#define O(f) offsetof(struct export_opts, f)

static const struct opt export_table[] = {
	{"cert", OPT_STRING, O(cert), "FILE", "certificate chain (leaf first); required"},
	{"key", OPT_STRING, O(key), "FILE", "its private key; required"},
	{"out", OPT_STRING, O(out), "FILE", "the PKCS#12 file to write (mode 0600); required"},
	{"name", OPT_STRING, O(name), "NAME", "friendly name (alias) of the entry"},
	{"password-file", OPT_STRING, O(password_file), "FILE",
	 "protect the bundle with the password in FILE"},
	{"password-env", OPT_STRING, O(password_env), "VAR",
	 "protect the bundle with the password in environment variable VAR"},
	CA_OPT_CONFIG(O),
	OPT_END,
};

int cmd_ca_export(int argc, char **argv)
{
	struct export_opts o = {0};
	struct options_state st = {0};
	STACK_OF(X509) *chain = sk_X509_new_null();
	X509 *leaf = NULL;
	EVP_PKEY *key = NULL;
	PKCS12 *p12 = NULL;
	unsigned char *der = NULL;
	char err[1024] = "", *pass = NULL, *pem = NULL;
	size_t len = 0;
	BIO *bio = NULL;
	int der_len;
	int rc = ca_parse("export",
			  "mtls ca export --cert FILE --key FILE --out FILE.p12 "
			  "(--password-file F | --password-env V)",
			  "Bundle a certificate chain and its key as PKCS#12.", export_table, &o,
			  argc, argv, &st);

	if (rc >= 0)
		goto out;
	rc = 2;
	if (o.cert == NULL || o.key == NULL || o.out == NULL ||
	    (o.password_file == NULL && o.password_env == NULL)) {
		ca_fail("export", "give --cert, --key, --out and a password (--password-file or "
				  "--password-env)");
		goto out;
	}
	if (keys_passphrase(o.password_file, o.password_env, &pass, err, sizeof(err)) != 0) {
		ca_fail("export", err);
		goto out;
	}
	rc = 1;
	pem = files_read(o.cert, &len, err, sizeof(err));
	if (pem == NULL) {
		ca_fail("export", err);
		goto out;
	}
	bio = BIO_new_mem_buf(pem, (int)len);
	leaf = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	for (X509 *x; leaf != NULL && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL;)
		sk_X509_push(chain, x);
	ERR_clear_error();
	if (leaf == NULL) {
		snprintf(err, sizeof(err), "%s is not a PEM certificate", o.cert);
		ca_fail("export", err);
		goto out;
	}
	key = keys_load(o.key, NULL, err, sizeof(err));
	if (key == NULL) {
		ca_fail("export", err);
		goto out;
	}
	if (X509_check_private_key(leaf, key) != 1) {
		ERR_clear_error();
		snprintf(err, sizeof(err), "%s does not match the certificate in %s", o.key,
			 o.cert);
		ca_fail("export", err);
		goto out;
	}
	p12 = PKCS12_create(pass, o.name, key, leaf, chain, NID_aes_256_cbc, NID_aes_256_cbc,
			    100000, 100000, 0);
	if (p12 != NULL)
		PKCS12_set_mac(p12, pass, -1, NULL, 0, 100000, EVP_sha256());
	der_len = p12 != NULL ? i2d_PKCS12(p12, &der) : -1;
	if (der_len <= 0) {
		ca_fail("export", "cannot build the PKCS#12 bundle");
		goto out;
	}
	if (files_write(o.out, der, (size_t)der_len, 0600, true, err, sizeof(err)) != 0) {
		ca_fail("export", err);
		goto out;
	}
	printf("wrote %s (certificate, %d chain certificates, key)\n", o.out, sk_X509_num(chain));
	rc = 0;
out:
	OPENSSL_free(der);
	PKCS12_free(p12);
	EVP_PKEY_free(key);
	X509_free(leaf);
	sk_X509_pop_free(chain, X509_free);
	BIO_free(bio);
	free(pem);
	keys_free_passphrase(pass);
	options_free(&st);
	return rc;
}
