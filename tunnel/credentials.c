/*
 * Building an mtls_config from daemon options.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "certfields.h"
#include "credentials.h"

static int add_all(struct mtls_config *c, const struct tunnel_list *l,
		   int (*add)(struct mtls_config *, const char *))
{
	for (size_t i = 0; i < l->n; i++)
		if (add(c, l->v[i]) != 0)
			return -1;
	return 0;
}

/* A negative size is out of range, as the setters say. */
static size_t cache_size(long long n)
{
	return n < 0 ? SIZE_MAX : (size_t)n;
}

struct mtls_config *credentials_build(const struct tunnel_options *o, char *err, size_t len)
{
	struct mtls_config *c = mtls_config_new();
	int min = MTLS_TLS1_2;

	if (c == NULL) {
		snprintf(err, len, "out of memory");
		return NULL;
	}
	if (o->tls_min != NULL && strcmp(o->tls_min, "1.3") == 0)
		min = MTLS_TLS1_3;
	if ((o->cert != NULL && mtls_config_set_cert_file(c, o->cert) != 0) ||
	    (o->key != NULL && mtls_config_set_key_file(c, o->key) != 0) ||
	    (o->key_passphrase_file != NULL &&
	     mtls_config_set_key_passphrase_file(c, o->key_passphrase_file) != 0) ||
	    (o->key_passphrase_env != NULL &&
	     mtls_config_set_key_passphrase_env(c, o->key_passphrase_env) != 0) ||
	    (o->ca != NULL && mtls_config_set_ca_file(c, o->ca) != 0) ||
	    mtls_config_set_crl_check_chain(c, o->crl_check_chain) != 0 ||
	    mtls_config_set_crl_grace(c, o->crl_grace) != 0 ||
	    mtls_config_set_protocols(c, min, MTLS_TLS1_3) != 0 ||
	    mtls_config_set_verify_cache(c, cache_size(o->verify_cache)) != 0 ||
	    mtls_config_set_session_cache(c, cache_size(o->session_cache)) != 0 ||
	    add_all(c, &o->crl, mtls_config_add_crl_file) != 0 ||
	    add_all(c, &o->allow_uri, mtls_config_allow_uri) != 0 ||
	    add_all(c, &o->allow_dns, mtls_config_allow_dns) != 0 ||
	    add_all(c, &o->allow_cn, mtls_config_allow_cn) != 0 ||
	    add_all(c, &o->allow_email, mtls_config_allow_email) != 0 ||
	    add_all(c, &o->allow_spki, mtls_config_allow_spki_sha256) != 0 ||
	    add_all(c, &o->allow_cert, mtls_config_allow_cert_sha256) != 0 ||
	    mtls_config_set_allow_any_identity(c, o->allow_any_identity) != 0) {
		snprintf(err, len, "%s", mtls_config_error(c));
		mtls_config_free(c);
		return NULL;
	}
	if (o->insecure_key_permissions)
		mtls_config_insecure_key_permissions(c);
	return c;
}

int credentials_cert_validity(const char *path, time_t *not_before, time_t *not_after)
{
	BIO *bio = BIO_new_file(path, "r");
	X509 *cert = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	int rc = -1;

	if (cert != NULL) {
		*not_before = certfields_time(X509_get0_notBefore(cert));
		*not_after = certfields_time(X509_get0_notAfter(cert));
		if (*not_before != 0 && *not_after != 0)
			rc = 0;
	}
	X509_free(cert);
	BIO_free(bio);
	ERR_clear_error();
	return rc;
}

size_t credentials_files(const struct tunnel_options *o, const char **out, size_t max)
{
	size_t n = 0;

	if (o->cert != NULL && n < max)
		out[n++] = o->cert;
	if (o->key != NULL && n < max)
		out[n++] = o->key;
	if (o->ca != NULL && n < max)
		out[n++] = o->ca;
	for (size_t i = 0; i < o->crl.n && n < max; i++)
		out[n++] = o->crl.v[i];
	return n;
}
