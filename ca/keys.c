/*
 * Key generation, encrypted PKCS#8 output, and loading.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>

#include "files.h"
#include "keys.h"

const char *keys_algorithms(void)
{
	return "p256, p384, ed25519, rsa3072, rsa4096";
}

EVP_PKEY *keys_generate(const char *alg, char *err, size_t err_len)
{
	EVP_PKEY *key = NULL;

	if (strcmp(alg, "p256") == 0)
		key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	else if (strcmp(alg, "p384") == 0)
		key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
	else if (strcmp(alg, "ed25519") == 0)
		key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	else if (strcmp(alg, "rsa3072") == 0)
		key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)3072);
	else if (strcmp(alg, "rsa4096") == 0)
		key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)4096);
	else {
		snprintf(err, err_len, "unknown key algorithm '%s'; use one of %s", alg,
			 keys_algorithms());
		return NULL;
	}
	if (key == NULL)
		snprintf(err, err_len, "cannot generate a %s key", alg);
	ERR_clear_error();
	return key;
}

char *keys_to_pem(EVP_PKEY *key, const char *passphrase, size_t *len)
{
	BIO *bio = BIO_new(BIO_s_mem());
	PKCS8_PRIV_KEY_INFO *p8inf = NULL;
	X509_SIG *p8 = NULL;
	X509_ALGOR *pbe = NULL;
	char *data, *out = NULL;
	long n;
	int ok;

	if (bio == NULL)
		return NULL;
	if (passphrase == NULL) {
		ok = PEM_write_bio_PKCS8PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL);
	} else {
		p8inf = EVP_PKEY2PKCS8(key);
		pbe = PKCS5_pbe2_set_scrypt(EVP_aes_256_cbc(), NULL, 0, NULL, 1 << 14, 8, 1);
		if (p8inf != NULL && pbe != NULL)
			p8 = PKCS8_set0_pbe(passphrase, (int)strlen(passphrase), p8inf, pbe);
		if (p8 != NULL)
			pbe = NULL; /* owned by p8 now */
		ok = p8 != NULL && PEM_write_bio_PKCS8(bio, p8);
	}
	if (ok) {
		n = BIO_get_mem_data(bio, &data);
		out = malloc((size_t)n + 1);
		if (out != NULL) {
			memcpy(out, data, (size_t)n);
			out[n] = '\0';
			*len = (size_t)n;
		}
		OPENSSL_cleanse(data, (size_t)n);
	}
	X509_SIG_free(p8);
	X509_ALGOR_free(pbe);
	PKCS8_PRIV_KEY_INFO_free(p8inf);
	BIO_free(bio);
	ERR_clear_error();
	return out;
}

void keys_free_pem(char *pem, size_t len)
{
	if (pem == NULL)
		return;
	OPENSSL_cleanse(pem, len);
	free(pem);
}

struct pass {
	const char *passphrase;
	int asked;
};

static int pass_cb(char *buf, int size, int rwflag, void *arg)
{
	struct pass *p = arg;
	size_t n;

	(void)rwflag;
	p->asked = 1;
	if (p->passphrase == NULL)
		return -1;
	n = strlen(p->passphrase);
	if (n > (size_t)size)
		return -1;
	memcpy(buf, p->passphrase, n);
	return (int)n;
}

EVP_PKEY *keys_load(const char *path, const char *passphrase, char *err, size_t err_len)
{
	struct pass p = {.passphrase = passphrase};
	size_t len = 0;
	char *pem = files_read(path, &len, err, err_len);
	EVP_PKEY *key;
	BIO *bio;

	if (pem == NULL)
		return NULL;
	bio = BIO_new_mem_buf(pem, (int)len);
	key = bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, pass_cb, &p) : NULL;
	BIO_free(bio);
	keys_free_pem(pem, len);
	ERR_clear_error();
	if (key != NULL)
		return key;
	if (p.asked && passphrase == NULL)
		snprintf(err, err_len,
			 "private key %s is encrypted; give its passphrase with --passphrase-file "
			 "or --passphrase-env",
			 path);
	else if (p.asked)
		snprintf(err, err_len, "cannot decrypt private key %s: wrong passphrase", path);
	else
		snprintf(err, err_len, "%s is not a PEM private key; is it the right file?", path);
	return NULL;
}

int keys_passphrase(const char *file, const char *env, char **out, char *err, size_t err_len)
{
	char *v, *entry;
	size_t n;

	*out = NULL;
	if (file != NULL && env != NULL) {
		snprintf(err, err_len, "give --passphrase-file or --passphrase-env, not both");
		return -1;
	}
	if (file != NULL) {
		size_t len = 0;
		char *text = files_read(file, &len, err, err_len);

		if (text == NULL)
			return -1;
		text[strcspn(text, "\r\n")] = '\0';
		if (text[0] == '\0') {
			keys_free_pem(text, len);
			snprintf(err, err_len, "passphrase file %s is empty", file);
			return -1;
		}
		*out = strdup(text);
		keys_free_pem(text, len);
	} else if (env != NULL) {
		v = getenv(env);
		if (v == NULL || v[0] == '\0') {
			snprintf(err, err_len,
				 "environment variable %s (the passphrase) is not set", env);
			return -1;
		}
		*out = strdup(v);
		/* gone from the environment, name and value: unsetenv() alone leaves the bytes
		 * where /proc/PID/environ shows them (a long-running mtls ca serve); getenv()
		 * points into the entry "NAME=VALUE", which unsetenv() unlinks but keeps */
		entry = v - strlen(env) - 1;
		n = strlen(entry);
		unsetenv(env);
		OPENSSL_cleanse(entry, n);
	} else {
		return 0;
	}
	if (*out == NULL) {
		snprintf(err, err_len, "out of memory");
		return -1;
	}
	return 0;
}

void keys_free_passphrase(char *pass)
{
	if (pass == NULL)
		return;
	OPENSSL_cleanse(pass, strlen(pass));
	free(pass);
}

const EVP_MD *keys_sign_digest(EVP_PKEY *key)
{
	int id = EVP_PKEY_get_base_id(key);

	if (id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448)
		return NULL; /* pure EdDSA */
	if (id == EVP_PKEY_EC && EVP_PKEY_get_bits(key) > 256)
		return EVP_sha384();
	return EVP_sha256();
}
