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

static const unsigned long name_flags = XN_FLAG_RFC2253;

static int show_cert(BIO *out, X509 *cert)
{
	char serial[64], spki[65], *subject = issue_subject(cert);

	issue_serial_hex(cert, serial, sizeof(serial));
	issue_spki_sha256(cert, spki);
	printf("certificate %s\n  serial:      %s\n  spki sha256: %s\n",
	       subject != NULL ? subject : "?", serial, spki);
	free(subject);
	fflush(stdout);
	X509_print_ex(out, cert, name_flags, X509_FLAG_NO_SIGDUMP | X509_FLAG_NO_PUBKEY);
	return 1;
}

/* Shows and frees req; 0 if there is none. */
static int show_req(BIO *out, X509_REQ *req)
{
	EVP_PKEY *key;

	if (req == NULL)
		return 0;
	key = X509_REQ_get0_pubkey(req);
	printf("certificate request, signature %s\n",
	       key != NULL && X509_REQ_verify(req, key) == 1 ? "valid" : "INVALID");
	fflush(stdout);
	X509_REQ_print_ex(out, req, name_flags, X509_FLAG_NO_SIGDUMP);
	X509_REQ_free(req);
	return 1;
}

/* Shows and frees crl; 0 if there is none. */
static int show_crl(BIO *out, X509_CRL *crl)
{
	if (crl == NULL)
		return 0;
	X509_CRL_print_ex(out, crl, name_flags);
	X509_CRL_free(crl);
	return 1;
}

int cmd_ca_inspect(int argc, char **argv)
{
	struct inspect_opts o = {0};
	struct options_state st = {0};
	BIO *in = NULL, *out = BIO_new_fp(stdout, BIO_NOCLOSE);
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
	for (X509 *x; (x = PEM_read_bio_X509(in, NULL, NULL, NULL)) != NULL; X509_free(x))
		shown += show_cert(out, x);
	if (!shown && BIO_reset(in) >= 0)
		shown = show_req(out, PEM_read_bio_X509_REQ(in, NULL, NULL, NULL));
	if (!shown && BIO_reset(in) >= 0)
		shown = show_crl(out, PEM_read_bio_X509_CRL(in, NULL, NULL, NULL));
	if (!shown) {
		const unsigned char *p = (const unsigned char *)data;
		X509 *x = d2i_X509(NULL, &p, (long)len);

		shown = x != NULL && show_cert(out, x);
		X509_free(x);
	}
	if (!shown) {
		const unsigned char *p = (const unsigned char *)data;

		shown = show_req(out, d2i_X509_REQ(NULL, &p, (long)len));
	}
	if (!shown) {
		const unsigned char *p = (const unsigned char *)data;

		shown = show_crl(out, d2i_X509_CRL(NULL, &p, (long)len));
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
