/*
 * mtls ca inspect: a certificate, CSR or CRL (PEM or DER) in human-readable form.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "ca_cmd.h"
#include "files.h"
#include "issue.h"

struct inspect_opts {
	const char *config;
};

static const struct opt inspect_table[] = {
	{"config", OPT_STRING, offsetof(struct inspect_opts, config), "FILE",
	 "read options from FILE"},
	OPT_END,
};

static void summary(X509 *cert)
{
	char serial[64], spki[65], subject[512];

	issue_serial_hex(cert, serial, sizeof(serial));
	issue_spki_sha256(cert, spki);
	issue_subject(cert, subject, sizeof(subject));
	printf("certificate %s\n  serial:      %s\n  spki sha256: %s\n", subject, serial, spki);
}

int cmd_ca_inspect(int argc, char **argv)
{
	struct inspect_opts o = {0};
	struct options_state st = {0};
	BIO *in = NULL, *out = BIO_new_fp(stdout, BIO_NOCLOSE);
	unsigned long flags = XN_FLAG_RFC2253;
	char err[512] = "", *data = NULL;
	size_t len = 0;
	int shown = 0;
	int rc =
		ca_parse("inspect", "mtls ca inspect FILE",
			 "Show a certificate (or chain), CSR or CRL, PEM or DER, in human-readable "
			 "form.",
			 inspect_table, &o, argc, argv, &st);

	if (rc >= 0)
		goto out;
	rc = 2;
	if (st.positional.n != 1) {
		ca_fail("inspect", "give one FILE");
		goto out;
	}
	data = files_read(st.positional.v[0], &len, err, sizeof(err));
	if (data == NULL) {
		ca_fail("inspect", err);
		goto out;
	}
	in = BIO_new_mem_buf(data, (int)len);
	for (X509 *x; (x = PEM_read_bio_X509(in, NULL, NULL, NULL)) != NULL; X509_free(x)) {
		summary(x);
		X509_print_ex(out, x, flags, X509_FLAG_NO_SIGDUMP | X509_FLAG_NO_PUBKEY);
		shown++;
	}
	if (!shown) {
		BIO_reset(in);
		X509_REQ *req = PEM_read_bio_X509_REQ(in, NULL, NULL, NULL);
		if (req != NULL) {
			EVP_PKEY *key = X509_REQ_get0_pubkey(req);

			printf("certificate request, signature %s\n",
			       key != NULL && X509_REQ_verify(req, key) == 1 ? "valid" : "INVALID");
			X509_REQ_print_ex(out, req, flags, X509_FLAG_NO_SIGDUMP);
			X509_REQ_free(req);
			shown++;
		}
	}
	if (!shown) {
		BIO_reset(in);
		X509_CRL *crl = PEM_read_bio_X509_CRL(in, NULL, NULL, NULL);
		if (crl != NULL) {
			X509_CRL_print_ex(out, crl, flags);
			X509_CRL_free(crl);
			shown++;
		}
	}
	if (!shown) {
		const unsigned char *p = (const unsigned char *)data;
		X509 *x = d2i_X509(NULL, &p, (long)len);

		if (x != NULL) {
			summary(x);
			X509_print_ex(out, x, flags, X509_FLAG_NO_SIGDUMP | X509_FLAG_NO_PUBKEY);
			X509_free(x);
			shown++;
		}
	}
	if (!shown) {
		const unsigned char *p = (const unsigned char *)data;
		X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)len);

		if (req != NULL) {
			EVP_PKEY *key = X509_REQ_get0_pubkey(req);

			printf("certificate request, signature %s\n",
			       key != NULL && X509_REQ_verify(req, key) == 1 ? "valid" : "INVALID");
			X509_REQ_print_ex(out, req, flags, X509_FLAG_NO_SIGDUMP);
			X509_REQ_free(req);
			shown++;
		}
	}
	if (!shown) {
		const unsigned char *p = (const unsigned char *)data;
		X509_CRL *crl = d2i_X509_CRL(NULL, &p, (long)len);

		if (crl != NULL) {
			X509_CRL_print_ex(out, crl, flags);
			X509_CRL_free(crl);
			shown++;
		}
	}
	ERR_clear_error();
	if (!shown) {
		snprintf(err, sizeof(err), "%s is not a certificate, CSR or CRL (PEM or DER)",
			 st.positional.v[0]);
		ca_fail("inspect", err);
		rc = 1;
		goto out;
	}
	rc = 0;
out:
	BIO_free(in);
	BIO_free(out);
	free(data);
	options_free(&st);
	return rc;
}
