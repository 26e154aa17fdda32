/*
 * The CRL and the root bundle as `mtls ca serve` serves them.
 *
 * crl.pem in the CA directory is the published CRL, whoever wrote it (this process after a
 * revocation or a scheduled rebuild, or a local `mtls ca revoke`): it is read again whenever
 * its inode, size or modification time changed, so that the service never serves a CRL older
 * than the directory's. A file that cannot be read or parsed keeps the last good one.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "crlwait.h"
#include "files.h"
#include "log.h"
#include "ocsp.h"
#include "serve.h"

void publish_etag(const void *data, size_t len, char out[67])
{
	unsigned char md[32];
	unsigned int n = 0;

	EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
	out[0] = '"';
	for (unsigned i = 0; i < 32; i++)
		snprintf(out + 1 + 2 * i, 3, "%02x", md[i]);
	out[65] = '"';
	out[66] = '\0';
}

static time_t asn1_time(const ASN1_TIME *t)
{
	struct tm tm;

	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
		return 0;
	return timegm(&tm);
}

static bool same_file(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static void crl_clear(struct served_crl *c)
{
	free(c->der);
	free(c->pem);
	memset(c, 0, sizeof(*c));
}

int publish_refresh_crl(struct serve *s, char *err, size_t err_len)
{
	char path[PATH_MAX];
	struct stat sb;
	struct served_crl next = {0};
	X509_CRL *crl = NULL;
	ASN1_INTEGER *num = NULL;
	BIO *bio = NULL;
	unsigned char *p;
	int len;

	authority_path(s->ca, "crl.pem", path, sizeof(path));
	if (stat(path, &sb) != 0) {
		snprintf(err, err_len, "%s: %s", path, strerror(errno));
		memset(&sb, 0, sizeof(sb));
		goto refused;
	}
	if (s->crl.der != NULL && same_file(&sb, &s->crl.st))
		return 0;
	next.st = sb;
	next.pem = files_read(path, &next.pem_len, err, err_len);
	if (next.pem == NULL)
		goto fail;
	bio = BIO_new_mem_buf(next.pem, (int)next.pem_len);
	crl = bio != NULL ? PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL) : NULL;
	if (crl == NULL || X509_CRL_verify(crl, X509_get0_pubkey(s->ca->issuer)) != 1) {
		snprintf(err, err_len,
			 "%s is not a CRL signed by this CA; keeping the last good one", path);
		goto fail;
	}
	len = i2d_X509_CRL(crl, NULL);
	if (len <= 0 || (next.der = malloc((size_t)len)) == NULL) {
		snprintf(err, err_len, "out of memory");
		goto fail;
	}
	p = next.der;
	next.der_len = (size_t)i2d_X509_CRL(crl, &p);
	publish_etag(next.der, next.der_len, next.etag);
	next.this_update = asn1_time(X509_CRL_get0_lastUpdate(crl));
	next.next_update = asn1_time(X509_CRL_get0_nextUpdate(crl));
	num = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
	if (num != NULL)
		next.number = (int64_t)ASN1_INTEGER_get(num);
	ASN1_INTEGER_free(num);
	X509_CRL_free(crl);
	BIO_free(bio);
	crl_clear(&s->crl);
	s->crl = next;
	s->crl_refused_set = false;
	/* a revocation made elsewhere (a local `mtls ca revoke`) shows up here first */
	if (s->ocsp != NULL)
		ocsp_responder_forget(s->ocsp);
	/* the push channel: held GET /crl requests answer with the new CRL now */
	crlwait_wake(s->crlwait);
	return 0;
fail:
	X509_CRL_free(crl);
	BIO_free(bio);
	crl_clear(&next);
refused:
	/* read again every time (a fixed file is taken at once), told once per file */
	if (!s->crl_refused_set || !same_file(&sb, &s->crl_refused)) {
		s->crl_refused = sb;
		s->crl_refused_set = true;
		LOG(LOG_ERROR, "crl_refused", LS("message", err),
		    LS("advice",
		       s->crl.der != NULL
			       ? "the last good CRL is still served; run 'mtls ca crl' to "
				 "publish a new one"
			       : "run 'mtls ca crl' to publish one"));
	}
	return -1;
}

int publish_sync_crl(struct serve *s, char *err, size_t err_len)
{
	unsigned char *der = NULL;
	const unsigned char *p;
	size_t len = 0;
	int64_t number = 0;
	X509_CRL *crl = NULL;
	BIO *bio = NULL;
	char path[PATH_MAX], *pem;
	long pem_len;
	int rc = -1;

	switch (store_crl_der_latest(s->ca->store, &number, &der, &len)) {
	case 0: break;
	case 1: return 0; /* none recorded yet */
	default: snprintf(err, err_len, "%s", store_error(s->ca->store)); return -1;
	}
	if (number <= s->crl.number) {
		free(der);
		return 0;
	}
	p = der;
	crl = d2i_X509_CRL(NULL, &p, (long)len);
	bio = BIO_new(BIO_s_mem());
	if (crl == NULL || p != der + len ||
	    X509_CRL_verify(crl, X509_get0_pubkey(s->ca->issuer)) != 1) {
		snprintf(err, err_len, "the inventory's CRL %lld is not a CRL signed by this CA",
			 (long long)number);
		goto out;
	}
	if (bio == NULL || !PEM_write_bio_X509_CRL(bio, crl) ||
	    (pem_len = BIO_get_mem_data(bio, &pem)) <= 0) {
		snprintf(err, err_len, "out of memory");
		goto out;
	}
	if (authority_lock(s->ca, err, err_len) != 0)
		goto out;
	rc = files_write(authority_path(s->ca, "crl.pem", path, sizeof(path)), pem, (size_t)pem_len,
			 0644, false, err, err_len);
	authority_unlock(s->ca);
	if (rc == 0)
		rc = publish_refresh_crl(s, err, err_len);
out:
	X509_CRL_free(crl);
	BIO_free(bio);
	free(der);
	return rc;
}

int publish_load_roots(struct serve *s, char *err, size_t err_len)
{
	char path[PATH_MAX];
	struct stat sb;
	size_t len = 0;
	char *pem, *data, *trust = NULL;
	BIO *in = NULL, *out = NULL;
	X509 *x;
	long tlen;
	int n = 0, rc = -1;

	authority_path(s->ca, "root.pem", path, sizeof(path));
	if (stat(path, &sb) != 0) {
		snprintf(err, err_len, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (s->roots_pem != NULL && same_file(&sb, &s->roots_st))
		return 0;
	pem = files_read(path, &len, err, err_len);
	if (pem == NULL)
		return -1;
	in = BIO_new_mem_buf(pem, (int)len);
	out = BIO_new(BIO_s_mem());
	while (in != NULL && out != NULL && (x = PEM_read_bio_X509(in, NULL, NULL, NULL)) != NULL) {
		/* a root: self-issued with its own key (X509_check_issued() of itself) */
		if (X509_check_issued(x, x) == X509_V_OK && PEM_write_bio_X509(out, x) == 1)
			n++;
		X509_free(x);
	}
	ERR_clear_error();
	if (out == NULL || n == 0 || (tlen = BIO_get_mem_data(out, &data)) <= 0 ||
	    (trust = malloc((size_t)tlen + 1)) == NULL) {
		snprintf(err, err_len, "%s holds no root certificate; keeping the last good one",
			 path);
		free(pem);
		goto out;
	}
	memcpy(trust, data, (size_t)tlen);
	trust[tlen] = '\0';
	free(s->roots_pem);
	free(s->trust_pem);
	s->roots_pem = pem;
	s->roots_len = len;
	s->trust_pem = trust;
	s->trust_len = (size_t)tlen;
	s->roots_st = sb;
	publish_etag(s->roots_pem, s->roots_len, s->roots_etag);
	rc = 1;
out:
	BIO_free(in);
	BIO_free(out);
	return rc;
}

void publish_free(struct serve *s)
{
	crl_clear(&s->crl);
	free(s->roots_pem);
	free(s->trust_pem);
	s->roots_pem = NULL;
	s->trust_pem = NULL;
}
