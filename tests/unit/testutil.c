#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "testutil.h"

const char *cert_path(const char *name)
{
	static char bufs[8][512];
	static int next;
	const char *dir = getenv("MTLS_TEST_CERTS");
	char *buf = bufs[next++ % 8];

	if (dir == NULL)
		fail_msg("MTLS_TEST_CERTS is not set; run through ctest");
	snprintf(buf, sizeof(bufs[0]), "%s/%s", dir, name);
	return buf;
}

void test_socketpair(int fds[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds),
			 0);
}

void test_pair_free(struct mtls *srv, struct mtls *cli, int fds[2])
{
	mtls_free(srv);
	mtls_free(cli);
	close(fds[0]);
	close(fds[1]);
}

static bool pending(int rc)
{
	return rc == MTLS_WANT_POLLIN || rc == MTLS_WANT_POLLOUT;
}

void test_handshake_pair(struct mtls *srv, struct mtls *cli, int *srv_rc, int *cli_rc)
{
	int s = MTLS_WANT_POLLIN, c = MTLS_WANT_POLLIN;
	bool probed = false;

	for (int i = 0; i < 1000 && (pending(s) || pending(c)); i++) {
		if (pending(c))
			c = mtls_handshake(cli);
		if (pending(s))
			s = mtls_handshake(srv);
		/* a TLS 1.3 client is done before the server checked its certificate: read
		 * once so that the server's alert, if any, reaches the client */
		if (c == 0 && s == 0 && !probed) {
			char byte = 'x';
			ssize_t n;

			probed = true;
			if (mtls_write(srv, &byte, 1) != 1)
				fail_msg("server write after handshake failed: %s",
					 mtls_error(srv));
			for (int j = 0; j < 100; j++) {
				n = mtls_read(cli, &byte, 1);
				if (!pending((int)n))
					break;
				usleep(1000);
			}
			if (n != 1)
				c = -1;
		}
		if (c == 0 && s < 0 && !probed) {
			char byte;
			ssize_t n = MTLS_WANT_POLLIN;

			probed = true;
			for (int j = 0; j < 100 && pending((int)n); j++) {
				n = mtls_read(cli, &byte, 1);
				if (pending((int)n))
					usleep(1000);
			}
			c = n >= 0 ? 0 : -1;
		}
	}
	if (pending(s) || pending(c))
		fail_msg("handshake did not finish (server %d, client %d)", s, c);
	*srv_rc = s;
	*cli_rc = c;
}

char *test_slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	if (f == NULL)
		fail_msg("cannot open %s", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	buf[n] = '\0';
	if (len != NULL)
		*len = (size_t)n;
	return buf;
}

X509 *test_read_cert(const char *name)
{
	FILE *f = fopen(cert_path(name), "r");
	X509 *x;

	assert_non_null(f);
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(x);
	return x;
}

char *test_make_crl(long last, long next, const char *revoked_chain, size_t *len)
{
	X509 *issuer = test_read_cert("int.pem");
	FILE *f = fopen(cert_path("int.key"), "r");
	EVP_PKEY *key = f != NULL ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
	X509_CRL *crl = X509_CRL_new();
	ASN1_TIME *t = ASN1_TIME_new();
	BIO *bio = BIO_new(BIO_s_mem());
	char *data, *out;
	long n;

	assert_non_null(key);
	fclose(f);
	assert_int_equal(X509_CRL_set_version(crl, X509_CRL_VERSION_2), 1);
	assert_int_equal(X509_CRL_set_issuer_name(crl, X509_get_subject_name(issuer)), 1);
	X509_gmtime_adj(t, last);
	X509_CRL_set1_lastUpdate(crl, t);
	X509_gmtime_adj(t, next);
	X509_CRL_set1_nextUpdate(crl, t);
	if (revoked_chain != NULL) {
		X509 *leaf = test_read_cert(revoked_chain);
		X509_REVOKED *r = X509_REVOKED_new();

		X509_gmtime_adj(t, last);
		X509_REVOKED_set_serialNumber(r, X509_get_serialNumber(leaf));
		X509_REVOKED_set_revocationDate(r, t);
		X509_CRL_add0_revoked(crl, r);
		X509_free(leaf);
	}
	assert_true(X509_CRL_sign(crl, key, EVP_sha256()) > 0);
	PEM_write_bio_X509_CRL(bio, crl);
	n = BIO_get_mem_data(bio, &data);
	out = malloc((size_t)n + 1);
	memcpy(out, data, (size_t)n);
	out[n] = '\0';
	*len = (size_t)n;
	BIO_free(bio);
	ASN1_TIME_free(t);
	X509_CRL_free(crl);
	EVP_PKEY_free(key);
	X509_free(issuer);
	return out;
}

static char *bio_string(BIO *bio)
{
	char *data, *out;
	long n = BIO_get_mem_data(bio, &data);

	out = malloc((size_t)n + 1);
	assert_non_null(out);
	memcpy(out, data, (size_t)n);
	out[n] = '\0';
	return out;
}

static void add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;

	X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	assert_non_null(ext);
	assert_int_equal(X509_add_ext(cert, ext, -1), 1);
	X509_EXTENSION_free(ext);
}

void test_issue_client(long valid_for, const char *uri, char **chain_pem, char **key_pem)
{
	X509 *issuer = test_read_cert("int.pem");
	FILE *f = fopen(cert_path("int.key"), "r");
	EVP_PKEY *ca_key = f != NULL ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *cert = X509_new();
	X509_NAME *name = X509_NAME_new();
	BIGNUM *serial = BN_new();
	BIO *chain = BIO_new(BIO_s_mem()), *kbio = BIO_new(BIO_s_mem());
	char san[256];

	assert_non_null(ca_key);
	assert_non_null(key);
	fclose(f);
	assert_int_equal(BN_rand(serial, 120, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY), 1);
	BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(cert));
	X509_set_version(cert, X509_VERSION_3);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"short-lived",
				   -1, -1, 0);
	X509_set_subject_name(cert, name);
	X509_set_issuer_name(cert, X509_get_subject_name(issuer));
	X509_gmtime_adj(X509_getm_notBefore(cert), -60);
	X509_gmtime_adj(X509_getm_notAfter(cert), valid_for);
	X509_set_pubkey(cert, key);
	add_ext(cert, issuer, NID_basic_constraints, "critical,CA:FALSE");
	add_ext(cert, issuer, NID_key_usage, "critical,digitalSignature");
	add_ext(cert, issuer, NID_ext_key_usage, "clientAuth");
	snprintf(san, sizeof(san), "URI:%s", uri);
	add_ext(cert, issuer, NID_subject_alt_name, san);
	assert_true(X509_sign(cert, ca_key, EVP_sha256()) > 0);
	PEM_write_bio_X509(chain, cert);
	PEM_write_bio_X509(chain, issuer);
	PEM_write_bio_PrivateKey(kbio, key, NULL, NULL, 0, NULL, NULL);
	*chain_pem = bio_string(chain);
	*key_pem = bio_string(kbio);
	BIO_free(chain);
	BIO_free(kbio);
	BN_free(serial);
	X509_NAME_free(name);
	X509_free(cert);
	EVP_PKEY_free(key);
	EVP_PKEY_free(ca_key);
	X509_free(issuer);
}
