/*
 * libFuzzer target: the CA's OCSP responder (ca/ocsp.c) on arbitrary bytes.
 *
 * At start, a small CA is made with authority_create() in a temporary directory (removed at
 * exit), with one good leaf and one revoked leaf in its inventory, and a responder with its
 * certificate. Each input is answered as it is, and a second time "aimed" at this CA: when it
 * parses as an OCSPRequest, the issuer hashes of its first CertID are replaced with this
 * CA's (for the CertID's hash algorithm) and serials 1 to 4 with those of the good leaf, the
 * revoked leaf, the responder certificate and the issuing CA itself (in the inventory, not
 * issued by itself: unknown), so that the seeds (requests made by
 * `openssl ocsp` for any issuer) reach the status lookup, the cache and the signing.
 *
 * Invariants: every input gets a whole DER OCSPResponse whose status is the one reported;
 * bytes that are not exactly one DER OCSPRequest holding exactly one Request are
 * malformedRequest; a successful answer is for exactly one CertID, whose issuer name and key
 * hashes are this CA's (compared here with memcmp, independently of OCSP_id_issuer_cmp()),
 * verifies against the root alone (OCSP_basic_verify), says the status the inventory holds
 * for its serial (good only for the good leaf and the responder certificate, revoked only for
 * the revoked leaf, else unknown), and answers it for the serial that was asked.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/x509v3.h>

#include "authority.h"
#include "files.h"
#include "issue.h"
#include "keys.h"
#include "ocsp.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond) ((cond) ? (void)0 : fail(#cond, __LINE__))

__attribute__((noreturn)) static void fail(const char *what, int line)
{
	fprintf(stderr, "fuzz_ocsp.c:%d: invariant failed: %s\n", line, what);
	abort();
}

static char tmpdir[256], cadir[300];
static struct authority *ca;
static struct ocsp_responder *responder;
static X509_STORE *trust;
static time_t now;
/* serials 1 to 4 of an aimed request: the good leaf, the revoked leaf, the responder, the
 * issuing CA */
#define NSERIALS 4
static ASN1_INTEGER *serials[NSERIALS];

static void cleanup(void)
{
	ocsp_responder_free(responder);
	authority_close(ca);
	X509_STORE_free(trust);
	for (int i = 0; i < NSERIALS; i++)
		ASN1_INTEGER_free(serials[i]);
	if (cadir[0] != '\0')
		files_remove_dir(cadir);
	if (tmpdir[0] != '\0')
		files_remove_dir(tmpdir);
}

static X509 *leaf(const char *cn, bool revoked)
{
	char err[512], spki[65];
	EVP_PKEY *key = keys_generate("p256", err, sizeof(err));
	struct issue_spec spec = {.kind = ISSUE_CLIENT,
				  .cn = cn,
				  .subject_key = key,
				  .not_before = now - 300,
				  .not_after = now + 86400};
	struct store_cert c = {.subject = cn, .sans = "", .profile = "client"};
	unsigned char *der = NULL;
	X509 *x = key != NULL ? issue_sign(&spec, ca->issuer, ca->issuer_key, err, sizeof(err))
			      : NULL;
	int len = x != NULL ? i2d_X509(x, &der) : -1;

	check(len > 0);
	issue_serial_hex(x, c.serial, sizeof(c.serial));
	issue_spki_sha256(x, spki);
	c.spki_sha256 = spki;
	c.not_before = spec.not_before;
	c.not_after = spec.not_after;
	c.issued_at = now;
	c.der = der;
	c.der_len = (size_t)len;
	check(store_begin(ca->store) == 0);
	check(store_add_cert(ca->store, &c) == 0);
	if (revoked)
		check(store_revoke_audited(ca->store, c.serial, "keyCompromise", now, "fuzz") == 0);
	check(store_commit(ca->store) == 0);
	OPENSSL_free(der);
	EVP_PKEY_free(key);
	return x;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *base = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
	char err[1024];
	struct authority_init in = {.name = "fuzz",
				    .key_alg = "p256",
				    .root_days = 30,
				    .intermediate_days = 20,
				    .server_days = 10,
				    .client_days = 10,
				    .crl_days = 7};
	X509 *good, *revoked;
	unsigned char *req = NULL, *resp = NULL;
	size_t resp_len;
	struct ocsp_answer meta;
	OCSP_REQUEST *rq = OCSP_REQUEST_new();
	X509 *signer = NULL;
	OCSP_RESPONSE *r;
	OCSP_BASICRESP *bs;
	const unsigned char *p;
	int len;

	(void)argc;
	(void)argv;
	snprintf(tmpdir, sizeof(tmpdir), "%s/fuzz-ocsp-XXXXXX", base);
	check(mkdtemp(tmpdir) != NULL);
	atexit(cleanup);
	snprintf(cadir, sizeof(cadir), "%s/ca", tmpdir);
	in.dir = cadir;
	if (authority_create(&in, err, sizeof(err)) != 0 ||
	    (ca = authority_open(cadir, AUTHORITY_EXCLUSIVE, err, sizeof(err))) == NULL ||
	    authority_load_key(ca, NULL, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_ocsp: %s\n", err);
		abort();
	}
	now = time(NULL);
	good = leaf("good", false);
	revoked = leaf("revoked", true);
	responder = ocsp_responder_new();
	check(responder != NULL);
	check(ocsp_responder_refresh(responder, ca, now, err, sizeof(err)) == 0);
	trust = X509_STORE_new();
	check(trust != NULL && X509_STORE_add_cert(trust, ca->root) == 1);
	serials[0] = ASN1_INTEGER_dup(X509_get0_serialNumber(good));
	serials[1] = ASN1_INTEGER_dup(X509_get0_serialNumber(revoked));
	/* the responder certificate's serial, from an answer it signed */
	check(rq != NULL && OCSP_request_add0_id(rq, OCSP_cert_to_id(NULL, good, ca->issuer)));
	len = i2d_OCSP_REQUEST(rq, &req);
	check(len > 0);
	check(ocsp_respond(responder, ca, req, (size_t)len, now, &resp, &resp_len, &meta) == 0);
	p = resp;
	r = d2i_OCSP_RESPONSE(NULL, &p, (long)resp_len);
	bs = r != NULL ? OCSP_response_get1_basic(r) : NULL;
	check(bs != NULL && OCSP_resp_get0_signer(bs, &signer, NULL) == 1);
	serials[2] = ASN1_INTEGER_dup(X509_get0_serialNumber(signer));
	serials[3] = ASN1_INTEGER_dup(X509_get0_serialNumber(ca->issuer));
	for (int i = 0; i < NSERIALS; i++)
		check(serials[i] != NULL);
	OCSP_BASICRESP_free(bs);
	OCSP_RESPONSE_free(r);
	free(resp);
	OPENSSL_free(req);
	OCSP_REQUEST_free(rq);
	X509_free(good);
	X509_free(revoked);
	ERR_clear_error();
	return 0;
}

/* Is data exactly one DER OCSPRequest with exactly one Request? The request in *rq (the
 * caller frees it) and its CertID in *id. */
static bool one_request(const uint8_t *data, size_t size, OCSP_REQUEST **rq, OCSP_CERTID **id)
{
	const unsigned char *p = data;
	bool one;

	*rq = size > 0 && size <= OCSP_REQUEST_MAX ? d2i_OCSP_REQUEST(NULL, &p, (long)size) : NULL;
	one = *rq != NULL && p == data + size && OCSP_request_onereq_count(*rq) == 1;
	*id = one ? OCSP_onereq_get0_id(OCSP_request_onereq_get0(*rq, 0)) : NULL;
	return one && *id != NULL;
}

/* Are id's issuer hashes this CA's for its hash algorithm? */
static bool ours(OCSP_CERTID *id)
{
	ASN1_OCTET_STRING *name = NULL, *key = NULL;
	ASN1_OBJECT *md_obj = NULL;
	const EVP_MD *md;
	unsigned char want_name[EVP_MAX_MD_SIZE], want_key[EVP_MAX_MD_SIZE];
	unsigned int name_len = 0, key_len = 0;
	const ASN1_BIT_STRING *pub = X509_get0_pubkey_bitstr(ca->issuer);

	OCSP_id_get0_info(&name, &md_obj, &key, NULL, id);
	md = md_obj != NULL ? EVP_get_digestbyobj(md_obj) : NULL;
	if (md == NULL ||
	    X509_NAME_digest(X509_get_subject_name(ca->issuer), md, want_name, &name_len) != 1 ||
	    EVP_Digest(ASN1_STRING_get0_data(pub), (size_t)ASN1_STRING_length(pub), want_key,
		       &key_len, md, NULL) != 1)
		return false;
	return name != NULL && key != NULL && ASN1_STRING_length(name) == (int)name_len &&
	       memcmp(ASN1_STRING_get0_data(name), want_name, name_len) == 0 &&
	       ASN1_STRING_length(key) == (int)key_len &&
	       memcmp(ASN1_STRING_get0_data(key), want_key, key_len) == 0;
}

static void answer(const uint8_t *data, size_t size)
{
	unsigned char *resp = NULL;
	size_t resp_len = 0;
	struct ocsp_answer meta;
	const unsigned char *p;
	OCSP_RESPONSE *r;
	OCSP_BASICRESP *bs = NULL;
	OCSP_REQUEST *rq = NULL;
	OCSP_CERTID *asked = NULL;
	bool one = one_request(data, size, &rq, &asked);

	check(ocsp_respond(responder, ca, data, size, now, &resp, &resp_len, &meta) == 0);
	check(resp != NULL && resp_len > 0);
	check(meta.etag[0] == '"' && strlen(meta.etag) == 66);
	p = resp;
	r = d2i_OCSP_RESPONSE(NULL, &p, (long)resp_len);
	check(r != NULL && p == resp + resp_len);
	check(OCSP_response_status(r) == meta.status);
	if (!one)
		check(meta.status == OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
	if (meta.status == OCSP_RESPONSE_STATUS_SUCCESSFUL) {
		OCSP_SINGLERESP *single;
		ASN1_INTEGER *serial = NULL;
		int status, want = V_OCSP_CERTSTATUS_UNKNOWN;

		check(one && ours(asked));
		bs = OCSP_response_get1_basic(r);
		check(bs != NULL && OCSP_resp_count(bs) == 1);
		check(OCSP_basic_verify(bs, NULL, trust, 0) == 1);
		single = OCSP_resp_get0(bs, 0);
		status = OCSP_single_get0_status(single, NULL, NULL, NULL, NULL);
		check(status == meta.cert_status);
		/* the answer is for the CertID asked (hash, issuer hashes, serial) */
		check(OCSP_resp_find(bs, asked, -1) == 0);
		OCSP_id_get0_info(NULL, NULL, NULL, &serial, asked);
		check(serial != NULL);
		if (ASN1_INTEGER_cmp(serial, serials[0]) == 0 ||
		    ASN1_INTEGER_cmp(serial, serials[2]) == 0)
			want = V_OCSP_CERTSTATUS_GOOD;
		else if (ASN1_INTEGER_cmp(serial, serials[1]) == 0)
			want = V_OCSP_CERTSTATUS_REVOKED;
		check(status == want);
	}
	OCSP_BASICRESP_free(bs);
	OCSP_RESPONSE_free(r);
	OCSP_REQUEST_free(rq);
	free(resp);
	ERR_clear_error();
}

/* The input aimed at this CA (see the top); NULL if it does not parse as a request. */
static unsigned char *aim(const uint8_t *data, size_t size, size_t *len)
{
	const unsigned char *p = data;
	OCSP_REQUEST *rq = size <= OCSP_REQUEST_MAX ? d2i_OCSP_REQUEST(NULL, &p, (long)size) : NULL;
	OCSP_ONEREQ *one = rq != NULL && OCSP_request_onereq_count(rq) > 0
				   ? OCSP_request_onereq_get0(rq, 0)
				   : NULL;
	OCSP_CERTID *id = one != NULL ? OCSP_onereq_get0_id(one) : NULL;
	ASN1_OCTET_STRING *name = NULL, *key = NULL;
	ASN1_OBJECT *md_obj = NULL;
	ASN1_INTEGER *serial = NULL;
	const EVP_MD *md;
	unsigned char h[EVP_MAX_MD_SIZE], *der = NULL, *out = NULL;
	unsigned int n = 0;
	const ASN1_BIT_STRING *pub = X509_get0_pubkey_bitstr(ca->issuer);
	long small;
	int l;

	if (id == NULL || OCSP_id_get0_info(&name, &md_obj, &key, &serial, id) != 1)
		goto out;
	md = md_obj != NULL ? EVP_get_digestbyobj(md_obj) : NULL;
	if (md == NULL || name == NULL || key == NULL || serial == NULL)
		goto out;
	if (X509_NAME_digest(X509_get_subject_name(ca->issuer), md, h, &n) != 1 ||
	    ASN1_OCTET_STRING_set(name, h, (int)n) != 1 ||
	    EVP_Digest(ASN1_STRING_get0_data(pub), (size_t)ASN1_STRING_length(pub), h, &n, md,
		       NULL) != 1 ||
	    ASN1_OCTET_STRING_set(key, h, (int)n) != 1)
		goto out;
	small = ASN1_INTEGER_get(serial);
	if (small >= 1 && small <= NSERIALS && ASN1_STRING_copy(serial, serials[small - 1]) != 1)
		goto out;
	l = i2d_OCSP_REQUEST(rq, &der);
	if (l <= 0)
		goto out;
	/* keep what followed the request, to test the trailing-bytes rule there too */
	out = malloc((size_t)l + (size_t)(data + size - p));
	if (out != NULL) {
		memcpy(out, der, (size_t)l);
		memcpy(out + l, p, (size_t)(data + size - p));
		*len = (size_t)l + (size_t)(data + size - p);
	}
out:
	ERR_clear_error();
	OPENSSL_free(der);
	OCSP_REQUEST_free(rq);
	return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t len = 0;
	unsigned char *aimed;

	answer(data, size);
	aimed = aim(data, size, &len);
	if (aimed != NULL)
		answer(aimed, len);
	free(aimed);
	return 0;
}
