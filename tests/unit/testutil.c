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
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "testutil.h"

const char *cert_path(const char *name)
{
	/* per thread: tests verify from several threads at once */
	static _Thread_local char bufs[8][512];
	static _Thread_local unsigned next;
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
	{ /* a CRL number, as the strict profile wants (RFC 5280 5.2.3) */
		ASN1_INTEGER *number = ASN1_INTEGER_new();

		assert_int_equal(ASN1_INTEGER_set(number, 1), 1);
		assert_int_equal(X509_CRL_add1_ext_i2d(crl, NID_crl_number, number, 0, 0), 1);
		ASN1_INTEGER_free(number);
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

void test_add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
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
	test_add_ext(cert, issuer, NID_basic_constraints, "critical,CA:FALSE");
	test_add_ext(cert, issuer, NID_key_usage, "critical,digitalSignature");
	test_add_ext(cert, issuer, NID_ext_key_usage, "clientAuth");
	test_add_ext(cert, issuer, NID_subject_key_identifier, "hash");
	test_add_ext(cert, issuer, NID_authority_key_identifier, "keyid:always");
	snprintf(san, sizeof(san), "URI:%s", uri);
	test_add_ext(cert, issuer, NID_subject_alt_name, san);
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

static void add_conf_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	if (value != NULL && value[0] != '\0')
		test_add_ext(cert, issuer, nid, value);
}

static void set_subject(X509 *cert, const char *subject)
{
	X509_NAME *name = X509_NAME_new();
	char buf[512], *save = NULL;

	assert_non_null(name);
	snprintf(buf, sizeof(buf), "%s", subject);
	for (char *rdn = strtok_r(buf, ",", &save); rdn != NULL; rdn = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(rdn, '=');

		assert_non_null(eq);
		*eq = '\0';
		assert_int_equal(X509_NAME_add_entry_by_txt(name, rdn, MBSTRING_UTF8,
							    (const unsigned char *)eq + 1, -1, -1,
							    0),
				 1);
	}
	assert_int_equal(X509_set_subject_name(cert, name), 1);
	X509_NAME_free(name);
}

static void set_serial(X509 *cert, const char *hex)
{
	BIGNUM *bn = NULL;

	if (hex == NULL) {
		bn = BN_new();
		assert_int_equal(BN_rand(bn, 127, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY), 1);
	} else {
		assert_true(BN_hex2bn(&bn, hex) > 0);
	}
	assert_non_null(BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)));
	BN_free(bn);
}

/* One more name of a type in a SAN, its bytes as given. */
static void push_raw(GENERAL_NAMES *gens, int type, const void *bytes, size_t len)
{
	GENERAL_NAME *g = GENERAL_NAME_new();
	ASN1_STRING *v =
		ASN1_STRING_type_new(type == GEN_IPADD ? V_ASN1_OCTET_STRING : V_ASN1_IA5STRING);

	assert_non_null(g);
	assert_non_null(v);
	assert_int_equal(ASN1_STRING_set(v, bytes, (int)len), 1);
	GENERAL_NAME_set0_value(g, type, v);
	assert_true(sk_GENERAL_NAME_push(gens, g) > 0);
}

/* The SAN from its openssl.cnf form plus an iPAddress of any length and a name of any
 * bytes. */
static void add_san(X509 *cert, const struct test_cert *spec, const char *san)
{
	GENERAL_NAMES *gens = NULL;

	if (san != NULL && san[0] != '\0') {
		X509V3_CTX ctx;
		X509_EXTENSION *ext;

		X509V3_set_ctx(&ctx, NULL, cert, NULL, NULL, 0);
		ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, san);
		assert_non_null(ext);
		gens = X509V3_EXT_d2i(ext);
		X509_EXTENSION_free(ext);
	} else if (spec->ip_raw != NULL || spec->raw_name != NULL) {
		gens = GENERAL_NAMES_new();
	}
	if (gens == NULL)
		return;
	if (spec->ip_raw != NULL)
		push_raw(gens, GEN_IPADD, spec->ip_raw, spec->ip_raw_len);
	if (spec->raw_name != NULL)
		push_raw(gens, spec->raw_type, spec->raw_name, strlen(spec->raw_name));
	assert_int_equal(X509_add1_ext_i2d(cert, NID_subject_alt_name, gens,
					   spec->san_critical ? 1 : 0, X509V3_ADD_DEFAULT),
			 1);
	GENERAL_NAMES_free(gens);
}

/* An authorityKeyIdentifier with the SHA-1 of the issuer's public key (RFC 5280 4.2.1.2). */
static void add_aki_of_key(X509 *cert, X509 *issuer)
{
	AUTHORITY_KEYID *akid = AUTHORITY_KEYID_new();
	unsigned char md[20];
	unsigned int n = 0;

	assert_int_equal(X509_pubkey_digest(issuer, EVP_sha1(), md, &n), 1);
	akid->keyid = ASN1_OCTET_STRING_new();
	assert_int_equal(ASN1_OCTET_STRING_set(akid->keyid, md, (int)n), 1);
	assert_int_equal(X509_add1_ext_i2d(cert, NID_authority_key_identifier, akid, 0, 0), 1);
	AUTHORITY_KEYID_free(akid);
}

X509 *test_cert_make(const struct test_cert *spec, X509 *issuer, EVP_PKEY *issuer_key,
		     EVP_PKEY **key)
{
	X509 *cert = X509_new();
	X509 *signer;
	long nb = spec->not_before, na = spec->not_after;

	*key = EVP_EC_gen("P-256");
	assert_non_null(*key);
	assert_non_null(cert);
	if (nb == 0 && na == 0) {
		nb = -60;
		na = 86400;
	}
	X509_set_version(cert, X509_VERSION_3);
	set_serial(cert, spec->serial);
	set_subject(cert, spec->subject != NULL ? spec->subject : "CN=test");
	if (spec->cn_raw != NULL)
		assert_int_equal(X509_NAME_add_entry_by_NID(X509_get_subject_name(cert),
							    NID_commonName, V_ASN1_UTF8STRING,
							    (const unsigned char *)spec->cn_raw,
							    (int)spec->cn_raw_len, -1, 0),
				 1);
	assert_int_equal(X509_set_issuer_name(cert, issuer != NULL ? X509_get_subject_name(issuer)
								   : X509_get_subject_name(cert)),
			 1);
	X509_gmtime_adj(X509_getm_notBefore(cert), nb);
	X509_gmtime_adj(X509_getm_notAfter(cert), na);
	assert_int_equal(X509_set_pubkey(cert, *key), 1);
	signer = issuer != NULL ? issuer : cert;
	add_conf_ext(cert, signer, NID_basic_constraints,
		     spec->bc != NULL ? spec->bc
		     : spec->ca	      ? "critical,CA:TRUE"
				      : "critical,CA:FALSE");
	add_conf_ext(cert, signer, NID_key_usage,
		     spec->ku != NULL ? spec->ku
		     : spec->ca	      ? "critical,keyCertSign,cRLSign"
				      : "critical,digitalSignature");
	add_conf_ext(cert, signer, NID_ext_key_usage,
		     spec->eku != NULL ? spec->eku
		     : spec->ca	       ? ""
				       : "clientAuth");
	if (!spec->no_ski)
		test_add_ext(cert, signer, NID_subject_key_identifier, "hash");
	/* a self-signed certificate's AKI would name its own key: leave it out */
	if (!spec->no_aki && issuer != NULL && X509_get0_subject_key_id(issuer) != NULL)
		test_add_ext(cert, signer, NID_authority_key_identifier, "keyid:always");
	else if (!spec->no_aki && issuer != NULL)
		add_aki_of_key(cert, issuer); /* the issuer has no SKI to copy */
	add_san(cert, spec,
		spec->san != NULL ? spec->san
		: spec->ca	  ? ""
				  : "URI:spiffe://test.mtls/ns/prod/sa/app1");
	add_conf_ext(cert, signer, NID_name_constraints, spec->nc);
	add_conf_ext(cert, signer, NID_crl_distribution_points, spec->crldp);
	add_conf_ext(cert, signer, NID_info_access, spec->aia);
	add_conf_ext(cert, signer, NID_tlsfeature, spec->tlsfeature);
	assert_true(X509_sign(cert, issuer != NULL ? issuer_key : *key, EVP_sha256()) > 0);
	return cert;
}

unsigned char *test_ocsp_response(const struct test_ocsp *spec, size_t *len)
{
	OCSP_BASICRESP *bs = NULL;
	OCSP_RESPONSE *resp;
	OCSP_CERTID *id;
	OCSP_SINGLERESP *single;
	ASN1_TIME *tu = ASN1_TIME_new(), *nu = ASN1_TIME_new(), *rev = ASN1_TIME_new();
	STACK_OF(X509) *certs = sk_X509_new_null();
	X509 *signer = spec->signer != NULL ? spec->signer : spec->issuer;
	EVP_PKEY *key = spec->signer != NULL ? spec->signer_key : spec->issuer_key;
	unsigned char *der = NULL, *out;
	int n;

	assert_non_null(tu);
	assert_non_null(nu);
	assert_non_null(rev);
	assert_non_null(certs);
	if (spec->resp_status == 0) {
		bs = OCSP_BASICRESP_new();
		assert_non_null(bs);
		id = spec->serial != NULL
			     ? OCSP_cert_id_new(spec->certid_md != NULL ? spec->certid_md
									: EVP_sha1(),
						X509_get_subject_name(spec->issuer),
						X509_get0_pubkey_bitstr(spec->issuer), spec->serial)
			     : OCSP_cert_to_id(spec->certid_md, spec->cert, spec->issuer);
		assert_non_null(id);
		X509_gmtime_adj(tu, spec->this_off != 0 ? spec->this_off : -60);
		X509_gmtime_adj(nu, spec->next_off != 0 ? spec->next_off : 3600);
		X509_gmtime_adj(rev, -3600);
		single = OCSP_basic_add1_status(bs, id, spec->status,
						spec->status == V_OCSP_CERTSTATUS_REVOKED
							? (spec->reason != 0 ? spec->reason : 1)
							: 0,
						spec->status == V_OCSP_CERTSTATUS_REVOKED ? rev
											  : NULL,
						tu, spec->no_next ? NULL : nu);
		assert_non_null(single);
		if (spec->critical_ext) {
			ASN1_OCTET_STRING *v = ASN1_OCTET_STRING_new();
			X509_EXTENSION *ext;

			assert_non_null(v);
			assert_int_equal(
				ASN1_OCTET_STRING_set(v, (const unsigned char *)"\x05\x00", 2), 1);
			ext = X509_EXTENSION_create_by_NID(NULL, NID_id_pkix_OCSP_CrlID, 1, v);
			assert_non_null(ext);
			assert_int_equal(OCSP_SINGLERESP_add_ext(single, ext, -1), 1);
			X509_EXTENSION_free(ext);
			ASN1_OCTET_STRING_free(v);
		}
		OCSP_CERTID_free(id);
		assert_int_equal(
			OCSP_basic_sign(bs, signer, key,
					spec->sign_md != NULL ? spec->sign_md : EVP_sha256(), certs,
					OCSP_NOCERTS | (spec->by_key ? OCSP_RESPID_KEY : 0)),
			1);
		/* OCSP_NOCERTS leaves out the signer; a delegate goes in by hand */
		if (spec->signer != NULL)
			assert_int_equal(OCSP_basic_add1_cert(bs, spec->signer), 1);
	}
	resp = OCSP_response_create(spec->resp_status, bs);
	assert_non_null(resp);
	n = i2d_OCSP_RESPONSE(resp, &der);
	assert_true(n > 0);
	out = malloc((size_t)n);
	assert_non_null(out);
	memcpy(out, der, (size_t)n);
	*len = (size_t)n;
	OPENSSL_free(der);
	OCSP_RESPONSE_free(resp);
	OCSP_BASICRESP_free(bs);
	sk_X509_free(certs);
	ASN1_TIME_free(tu);
	ASN1_TIME_free(nu);
	ASN1_TIME_free(rev);
	return out;
}

char *test_certs_pem(X509 *const *certs, int n)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *out;

	for (int i = 0; i < n; i++)
		assert_int_equal(PEM_write_bio_X509(bio, certs[i]), 1);
	out = bio_string(bio);
	BIO_free(bio);
	return out;
}

char *test_key_pem(EVP_PKEY *key)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *out;

	assert_int_equal(PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL), 1);
	out = bio_string(bio);
	BIO_free(bio);
	return out;
}

char *test_crl_pem(X509 *issuer, EVP_PKEY *key, X509 *const *revoked, int n, long number,
		   const char *idp)
{
	X509_CRL *crl = X509_CRL_new();
	ASN1_TIME *t = ASN1_TIME_new();
	BIO *bio = BIO_new(BIO_s_mem());
	X509V3_CTX ctx;
	char *out;

	assert_int_equal(X509_CRL_set_version(crl, X509_CRL_VERSION_2), 1);
	assert_int_equal(X509_CRL_set_issuer_name(crl, X509_get_subject_name(issuer)), 1);
	X509_gmtime_adj(t, -60);
	X509_CRL_set1_lastUpdate(crl, t);
	X509_gmtime_adj(t, 3600);
	X509_CRL_set1_nextUpdate(crl, t);
	for (int i = 0; i < n; i++) {
		X509_REVOKED *r = X509_REVOKED_new();

		X509_gmtime_adj(t, -60);
		X509_REVOKED_set_serialNumber(r, X509_get_serialNumber(revoked[i]));
		X509_REVOKED_set_revocationDate(r, t);
		X509_CRL_add0_revoked(crl, r);
	}
	if (number >= 0) {
		ASN1_INTEGER *num = ASN1_INTEGER_new();

		ASN1_INTEGER_set(num, number);
		assert_int_equal(X509_CRL_add1_ext_i2d(crl, NID_crl_number, num, 0, 0), 1);
		ASN1_INTEGER_free(num);
	}
	if (idp != NULL) {
		X509_EXTENSION *ext;

		X509V3_set_ctx(&ctx, issuer, NULL, NULL, crl, 0);
		ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_issuing_distribution_point, idp);
		assert_non_null(ext);
		assert_int_equal(X509_CRL_add_ext(crl, ext, -1), 1);
		X509_EXTENSION_free(ext);
	}
	X509_CRL_sort(crl);
	assert_true(X509_CRL_sign(crl, key, EVP_sha256()) > 0);
	assert_int_equal(PEM_write_bio_X509_CRL(bio, crl), 1);
	out = bio_string(bio);
	BIO_free(bio);
	ASN1_TIME_free(t);
	X509_CRL_free(crl);
	return out;
}

struct mtls *test_mem_client(const char *chain, const char *key, bool tickets)
{
	struct mtls_config *cfg = mtls_config_new();
	struct mtls *client = mtls_client_new();

	assert_int_equal(mtls_config_set_cert_mem(cfg, (const uint8_t *)chain, strlen(chain)), 0);
	assert_int_equal(mtls_config_set_key_mem(cfg, (const uint8_t *)key, strlen(key)), 0);
	assert_int_equal(mtls_config_set_ca_file(cfg, cert_path("ca.pem")), 0);
	assert_int_equal(mtls_config_set_session_tickets(cfg, tickets), 0);
	if (mtls_configure(client, cfg) != 0)
		fail_msg("client config: %s", mtls_error(client));
	mtls_config_free(cfg);
	return client;
}
