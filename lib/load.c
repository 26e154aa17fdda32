/*
 * Loading: the PEM blobs a config holds (read when the config was built) turned into OpenSSL
 * objects for a state being built: the own certificate, chain and private key into its
 * SSL_CTX, the CA bundle and CRLs into its trust store (and, on a server, the CA names its
 * CertificateRequest sends).
 *
 * The checks that catch the wrong file given are here, where the bytes are read, so that the
 * message names the file and says what it holds instead: a certificate where the key should
 * be, a key readable by others, a leaf given as the CA bundle (which would make its holder a
 * trust anchor), a file with no PEM of the expected kind.
 */
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "internal.h"
#include "pkcs11.h"

static BIO *blob_bio(const struct blob *b)
{
	return BIO_new_mem_buf(b->data, (int)b->len);
}

STACK_OF(X509) * load_certs(const struct blob *b, const char *what, struct error *err)
{
	STACK_OF(X509) *certs = sk_X509_new_null();
	BIO *bio = blob_bio(b);
	X509 *x;

	if (certs == NULL || bio == NULL) {
		error_set(err, MTLS_REASON_INTERNAL, "out of memory");
		goto fail;
	}
	ERR_clear_error();
	while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
		if (!sk_X509_push(certs, x)) {
			X509_free(x);
			error_set(err, MTLS_REASON_INTERNAL, "out of memory");
			goto fail;
		}
	}
	/* The loop ends with "no start line" at the end of input; anything else is damage. */
	if (ERR_GET_REASON(ERR_peek_last_error()) != PEM_R_NO_START_LINE ||
	    sk_X509_num(certs) == 0) {
		error_set_ssl(err, MTLS_REASON_BAD_PEM,
			      "%s %s does not hold valid PEM certificates (BEGIN CERTIFICATE); "
			      "check that it is the right file",
			      what, b->origin);
		goto fail;
	}
	ERR_clear_error();
	BIO_free(bio);
	return certs;
fail:
	BIO_free(bio);
	sk_X509_pop_free(certs, X509_free);
	return NULL;
}

struct pass_ctx {
	const struct mtls_config *config;
	bool asked;
};

static int pass_cb(char *buf, int size, int rwflag, void *arg)
{
	struct pass_ctx *pc = arg;
	size_t len;

	(void)rwflag;
	pc->asked = true;
	if (!pc->config->passphrase_set)
		return -1;
	len = strlen(pc->config->passphrase);
	if (len > (size_t)size)
		return -1;
	memcpy(buf, pc->config->passphrase, len);
	return (int)len;
}

/* Which kinds of PEM blocks a blob holds: private keys (of any format), certificates. */
static void pem_kinds(const struct blob *b, bool *keys, bool *certs)
{
	BIO *bio = blob_bio(b);
	char *name = NULL, *header = NULL;
	unsigned char *data = NULL;
	long len = 0;

	*keys = *certs = false;
	if (bio == NULL)
		return;
	while (PEM_read_bio(bio, &name, &header, &data, &len) == 1) {
		size_t n = strlen(name);

		if (n >= 11 && strcmp(name + n - 11, "PRIVATE KEY") == 0)
			*keys = true;
		else if (strcmp(name, PEM_STRING_X509) == 0 ||
			 strcmp(name, PEM_STRING_X509_OLD) == 0 ||
			 strcmp(name, PEM_STRING_X509_TRUSTED) == 0)
			*certs = true;
		OPENSSL_free(name);
		OPENSSL_free(header);
		OPENSSL_clear_free(data, len > 0 ? (size_t)len : 0); /* may be a key */
		name = header = NULL;
		data = NULL;
	}
	BIO_free(bio);
	ERR_clear_error();
}

/* A key on a PKCS#11 token: no file, so no permission check; the passphrase is the PIN. */
static EVP_PKEY *read_token_key(const struct mtls_config *c, struct error *err)
{
	enum pkcs11_failure why = PKCS11_OK;
	char msg[ERROR_MSG_MAX - 32];
	EVP_PKEY *key;
	enum mtls_reason reason;

	key = pkcs11_key_load(c->key_uri, c->pkcs11_module,
			      c->passphrase_set ? c->passphrase : NULL, &why, msg, sizeof(msg));
	if (key != NULL)
		return key;
	switch (why) {
	case PKCS11_BAD_PIN:
	case PKCS11_PIN_LOCKED: reason = MTLS_REASON_BAD_PASSPHRASE; break;
	case PKCS11_BAD_URI: reason = MTLS_REASON_CONFIG; break;
	default: reason = MTLS_REASON_FILE; break; /* no module, token or object to read */
	}
	error_set(err, reason, "%s", msg);
	return NULL;
}

static EVP_PKEY *read_key(const struct mtls_config *c, struct error *err)
{
	struct pass_ctx pc = {.config = c};
	bool keys, certs;
	BIO *bio;
	EVP_PKEY *key;

	if (c->key_uri != NULL)
		return read_token_key(c, err);

	/* the certificate given twice, a common slip: say so, not "chmod 600" */
	pem_kinds(&c->key, &keys, &certs);
	if (certs && !keys) {
		error_set(err, MTLS_REASON_BAD_PEM,
			  "key file %s holds a certificate, not a private key; give the key file "
			  "(BEGIN PRIVATE KEY)",
			  c->key.origin);
		return NULL;
	}
	if (c->key_mode & 077 && !(c->insecure & INSECURE_KEY_PERMISSIONS)) {
		error_set(err, MTLS_REASON_KEY_PERMISSIONS,
			  "private key %s is readable by group or others (mode %04o); run "
			  "'chmod 600 %s' (or, for a daemon running as its own user, 'chmod 640' "
			  "with the file owned by root and its group that user's own: named after "
			  "it, with no other members)",
			  c->key.origin, (unsigned)(c->key_mode & 07777), c->key.origin);
		return NULL;
	}
	bio = blob_bio(&c->key);
	if (bio == NULL) {
		error_set(err, MTLS_REASON_INTERNAL, "out of memory");
		return NULL;
	}
	ERR_clear_error();
	key = PEM_read_bio_PrivateKey(bio, NULL, pass_cb, &pc);
	BIO_free(bio);
	if (key != NULL) {
		ERR_clear_error();
		return key;
	}
	if (pc.asked && !c->passphrase_set)
		error_set(err, MTLS_REASON_BAD_PASSPHRASE,
			  "private key %s is encrypted; give its passphrase (file or environment "
			  "variable)",
			  c->key.origin);
	else if (pc.asked)
		error_set(err, MTLS_REASON_BAD_PASSPHRASE,
			  "cannot decrypt private key %s: wrong passphrase", c->key.origin);
	else
		error_set_ssl(err, MTLS_REASON_BAD_PEM,
			      "private key %s is not a valid PEM private key", c->key.origin);
	return NULL;
}

int load_own_cert(struct state *st, const struct mtls_config *c, struct error *err)
{
	STACK_OF(X509) *certs = load_certs(&c->cert, "certificate", err);
	EVP_PKEY *key = NULL;
	int rc = -1;

	if (certs == NULL)
		return -1;
	key = read_key(c, err);
	if (key == NULL)
		goto out;
	if (SSL_CTX_use_certificate(st->ssl_ctx, sk_X509_value(certs, 0)) != 1) {
		error_set_ssl(err, MTLS_REASON_WEAK_KEY,
			      "certificate %s cannot be used (is its key strong enough?)",
			      c->cert.origin);
		goto out;
	}
	for (int i = 1; i < sk_X509_num(certs); i++) {
		X509 *ca = sk_X509_value(certs, i);

		if (SSL_CTX_add1_chain_cert(st->ssl_ctx, ca) != 1) {
			error_set_ssl(err, MTLS_REASON_BAD_PEM, "certificate chain %s is unusable",
				      c->cert.origin);
			goto out;
		}
		/* kept for verify.c's second path (see struct state); not trusted for it */
		if (X509_get_extension_flags(ca) & EXFLAG_CA) {
			if ((st->own_cas == NULL && (st->own_cas = sk_X509_new_null()) == NULL) ||
			    !X509_up_ref(ca)) {
				error_set(err, MTLS_REASON_INTERNAL, "out of memory");
				goto out;
			}
			if (!sk_X509_push(st->own_cas, ca)) {
				X509_free(ca);
				error_set(err, MTLS_REASON_INTERNAL, "out of memory");
				goto out;
			}
		}
	}
	if (SSL_CTX_use_PrivateKey(st->ssl_ctx, key) != 1 ||
	    SSL_CTX_check_private_key(st->ssl_ctx) != 1) {
		error_set(err, MTLS_REASON_KEY_MISMATCH,
			  "private key %s does not match certificate %s; give the key that was "
			  "issued with this certificate",
			  c->key_uri != NULL ? c->key_uri : c->key.origin, c->cert.origin);
		goto out;
	}
	st->cert_not_after = certfields_time(X509_get0_notAfter(sk_X509_value(certs, 0)));
	rc = 0;
out:
	EVP_PKEY_free(key);
	sk_X509_pop_free(certs, X509_free);
	return rc;
}

int load_trust(struct state *st, const struct mtls_config *c, struct error *err)
{
	STACK_OF(X509) * cas;

	if (c->ca.data == NULL)
		return error_set(err, MTLS_REASON_CONFIG,
				 "no CA configured: give the CA bundle that issued the peers' "
				 "certificates");
	cas = load_certs(&c->ca, "CA file", err);
	if (cas == NULL)
		return -1;
	for (int i = 0; i < sk_X509_num(cas); i++) {
		X509 *ca = sk_X509_value(cas, i);
		time_t na = certfields_time(X509_get0_notAfter(ca));

		/* a leaf given as the CA would make its holder a trust anchor, and in any case
		 * means the wrong file was given */
		if (!(X509_get_extension_flags(ca) & EXFLAG_CA)) {
			char who[300];

			identity_describe(ca, who, sizeof(who));
			sk_X509_pop_free(cas, X509_free);
			return error_set(
				err, MTLS_REASON_CONFIG,
				"CA file %s holds a certificate that is not a CA (%s, no "
				"basicConstraints CA:TRUE); give the CA bundle, not a leaf",
				c->ca.origin, who);
		}
		if (X509_STORE_add_cert(st->store, ca) != 1) {
			sk_X509_pop_free(cas, X509_free);
			return error_set_ssl(err, MTLS_REASON_INTERNAL, "cannot add CA");
		}
		/* a server names the CAs it trusts in its CertificateRequest, so that a client
		 * with several certificates picks the right one and mtls doctor can say which
		 * CA the server wants; built with the state, so a reload of the CA renews it */
		if (st->server && SSL_CTX_add_client_CA(st->ssl_ctx, ca) != 1) {
			sk_X509_pop_free(cas, X509_free);
			return error_set_ssl(err, MTLS_REASON_INTERNAL, "cannot add CA name");
		}
		if (st->ca_not_after == 0 || na < st->ca_not_after)
			st->ca_not_after = na;
	}
	sk_X509_pop_free(cas, X509_free);

	for (size_t i = 0; i < c->ncrls; i++) {
		BIO *bio = blob_bio(&c->crls[i]);
		X509_CRL *crl;
		int n = 0;

		if (bio == NULL)
			return error_set(err, MTLS_REASON_INTERNAL, "out of memory");
		ERR_clear_error();
		while ((crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL)) != NULL) {
			time_t next = certfields_time(X509_CRL_get0_nextUpdate(crl));
			int ok = X509_STORE_add_crl(st->store, crl);

			X509_CRL_free(crl);
			if (ok != 1) {
				BIO_free(bio);
				return error_set_ssl(err, MTLS_REASON_INTERNAL, "cannot add CRL");
			}
			if (next != 0 && (st->crl_next_update == 0 || next < st->crl_next_update))
				st->crl_next_update = next;
			n++;
		}
		BIO_free(bio);
		if (ERR_GET_REASON(ERR_peek_last_error()) != PEM_R_NO_START_LINE || n == 0)
			return error_set_ssl(
				err, MTLS_REASON_BAD_PEM,
				"CRL %s does not hold valid PEM CRLs (BEGIN X509 CRL); "
				"check that it is the right file",
				c->crls[i].origin);
		ERR_clear_error();
	}
	return 0;
}
