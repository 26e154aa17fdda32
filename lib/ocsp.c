/*
 * OCSP (RFC 6960, in the RFC 5019 profile): what a certificate says about its responder
 * (authorityInfoAccess, the TLS feature "must staple" of RFC 7633), the request for it, and
 * the one check of an answer, whoever brought it: a server's staple, a fetch for a peer's
 * certificate, a fetch for the endpoint's own staple.
 *
 * An answer counts only if ocsp_check_response() accepts it:
 *   - exactly one DER OCSPResponse of at most OCSP_RESPONSE_MAX bytes, status successful,
 *     a basic response;
 *   - signed (not with MD5 or SHA-1) by the certificate's issuer itself, or by a responder
 *     certificate that issuer signed (RFC 6960 4.2.2.2: extendedKeyUsage OCSPSigning, within
 *     its validity now, a strong key), found by the response's responder ID among the
 *     issuer and the first OCSP_SIGNER_CANDIDATES certificates the response carries;
 *   - a SingleResponse whose CertID (SHA-1 or SHA-2) names this issuer's name and key and
 *     this serial, among the first OCSP_SINGLE_MAX;
 *   - no critical extension (none is defined that a client must understand);
 *   - thisUpdate not more than OCSP_SKEW in the future, a nextUpdate after it and not past
 *     (an answer without nextUpdate counts for OCSP_NO_NEXT_UPDATE after its thisUpdate).
 * It then stays valid until nextUpdate, or a delegated responder certificate's notAfter if
 * that comes first. A revocation other than certificateHold is final: it counts whatever
 * the answer's age (as a CRL's entry does in revocation.c).
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>

#include "internal.h"
#include "key_strength.h"

/* Is this digest one a CertID may use (SHA-1, as RFC 5019 clients send, or SHA-2)? */
static const EVP_MD *certid_md(int nid)
{
	switch (nid) {
	case NID_sha1: return EVP_sha1();
	case NID_sha256: return EVP_sha256();
	case NID_sha384: return EVP_sha384();
	case NID_sha512: return EVP_sha512();
	default: return NULL;
	}
}

OCSP_CERTID *ocsp_cert_id(X509 *issuer, const ASN1_INTEGER *serial)
{
	return OCSP_cert_id_new(EVP_sha1(), X509_get_subject_name(issuer),
				X509_get0_pubkey_bitstr(issuer), serial);
}

int ocsp_key(X509 *issuer, const ASN1_INTEGER *serial, uint8_t key[32])
{
	OCSP_CERTID *id = ocsp_cert_id(issuer, serial);
	unsigned char *der = NULL;
	int n = id != NULL ? i2d_OCSP_CERTID(id, &der) : -1;
	unsigned len = 0;
	int rc =
		n > 0 && EVP_Digest(der, (size_t)n, key, &len, EVP_sha256(), NULL) == 1 && len == 32
			? 0
			: -1;

	OPENSSL_free(der);
	OCSP_CERTID_free(id);
	ERR_clear_error();
	return rc;
}

int ocsp_request(X509 *issuer, const ASN1_INTEGER *serial, uint8_t **der, size_t *len)
{
	OCSP_REQUEST *req = OCSP_REQUEST_new();
	OCSP_CERTID *id = ocsp_cert_id(issuer, serial);
	unsigned char *out = NULL;
	int n = -1;

	*der = NULL;
	*len = 0;
	/* no nonce (RFC 5019 4): answers are cached by responders and by us */
	if (req != NULL && id != NULL && OCSP_request_add0_id(req, id) != NULL) {
		id = NULL; /* the request owns it */
		n = i2d_OCSP_REQUEST(req, &out);
	}
	OCSP_CERTID_free(id);
	OCSP_REQUEST_free(req);
	ERR_clear_error();
	if (n <= 0)
		return -1;
	*der = malloc((size_t)n);
	if (*der != NULL) {
		memcpy(*der, out, (size_t)n);
		*len = (size_t)n;
	}
	OPENSSL_free(out);
	return *der != NULL ? 0 : -1;
}

char *ocsp_url(X509 *cert)
{
	STACK_OF(OPENSSL_STRING) *urls = X509_get1_ocsp(cert);
	char *found = NULL;

	for (int i = 0; found == NULL && i < sk_OPENSSL_STRING_num(urls); i++) {
		const char *u = sk_OPENSSL_STRING_value(urls, i);
		size_t n = strlen(u);
		bool printable = true;

		for (size_t j = 0; j < n; j++)
			printable = printable && u[j] > 0x20 && u[j] < 0x7f;
		if (printable && n <= OCSP_URL_MAX &&
		    (strncmp(u, "http://", 7) == 0 || strncmp(u, "https://", 8) == 0))
			found = strdup(u);
	}
	X509_email_free(urls); /* a stack of strings, freed the same way */
	ERR_clear_error();
	return found;
}

bool ocsp_must_staple(X509 *cert)
{
	TLS_FEATURE *f = X509_get_ext_d2i(cert, NID_tlsfeature, NULL, NULL);
	bool must = false;

	/* status_request (5), the TLS extension of RFC 6066 */
	for (int i = 0; f != NULL && i < sk_ASN1_INTEGER_num(f); i++)
		must = must || ASN1_INTEGER_get(sk_ASN1_INTEGER_value(f, i)) == 5;
	sk_ASN1_INTEGER_pop_free(f, ASN1_INTEGER_free);
	ERR_clear_error();
	return must;
}

const char *ocsp_reason_name(int reason)
{
	return reason >= 0 ? OCSP_crl_reason_str(reason) : "no reason given";
}

/* Does the responder ID (by name or by SHA-1 of the key) name cert? */
static bool names(const ASN1_OCTET_STRING *keyhash, const X509_NAME *name, X509 *cert)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned n = 0;

	if (name != NULL)
		return X509_NAME_cmp(name, X509_get_subject_name(cert)) == 0;
	if (keyhash == NULL || X509_pubkey_digest(cert, EVP_sha1(), md, &n) != 1)
		return false;
	return (size_t)ASN1_STRING_length(keyhash) == n &&
	       memcmp(ASN1_STRING_get0_data(keyhash), md, n) == 0;
}

/* May cert sign answers about issuer's certificates on its behalf (RFC 6960 4.2.2.2)?
 * NULL if so, else why not. */
static const char *delegation_problem(X509 *cert, X509 *issuer, time_t now)
{
	uint32_t flags = X509_get_extension_flags(cert);

	if (X509_NAME_cmp(X509_get_issuer_name(cert), X509_get_subject_name(issuer)) != 0 ||
	    X509_verify(cert, X509_get0_pubkey(issuer)) != 1)
		return "it is signed by a responder certificate that the certificate's issuer "
		       "did not issue";
	if (!(flags & EXFLAG_XKUSAGE) || !(X509_get_extended_key_usage(cert) & XKU_OCSP_SIGN))
		return "it is signed by a certificate of the issuer without extendedKeyUsage "
		       "OCSPSigning, which may not answer for it";
	if (ASN1_TIME_cmp_time_t(X509_get0_notBefore(cert), now) > 0 ||
	    ASN1_TIME_cmp_time_t(X509_get0_notAfter(cert), now) < 0)
		return "its responder certificate is not within its validity";
	if (!key_strength_ok(X509_get0_pubkey(cert)))
		return "its responder certificate has a weak key";
	return NULL;
}

/* The responder that signed bs for issuer's certificates: the issuer or a delegate. NULL
 * with why set if none verifies. */
static X509 *find_signer(OCSP_BASICRESP *bs, X509 *issuer, time_t now, const char **why)
{
	const ASN1_OCTET_STRING *keyhash = NULL;
	const X509_NAME *name = NULL;
	const STACK_OF(X509) *certs = OCSP_resp_get0_certs(bs);
	const X509_ALGOR *alg = OCSP_resp_get0_tbs_sigalg(bs);
	const ASN1_OCTET_STRING *sig = OCSP_resp_get0_signature(bs);
	const OCSP_RESPDATA *data = OCSP_resp_get0_respdata(bs);
	int n = sk_X509_num(certs);

	*why = "it is signed by neither the certificate's issuer nor a responder certificate "
	       "the issuer issued";
	if (OCSP_resp_get0_id(bs, &keyhash, &name) != 1)
		return NULL;
	if (n < 0) /* no certificates: sk_X509_num(NULL) is -1 */
		n = 0;
	if (n > OCSP_SIGNER_CANDIDATES)
		n = OCSP_SIGNER_CANDIDATES;
	for (int i = -1; i < n; i++) {
		X509 *cand = i < 0 ? issuer : sk_X509_value(certs, i);
		bool is_issuer = i < 0 || X509_cmp(cand, issuer) == 0 ||
				 EVP_PKEY_eq(X509_get0_pubkey(cand), X509_get0_pubkey(issuer)) == 1;
		const char *problem;

		if (cand == NULL || !names(keyhash, name, cand))
			continue;
		if (!is_issuer && (problem = delegation_problem(cand, issuer, now)) != NULL) {
			*why = problem;
			continue;
		}
		if (ASN1_item_verify(ASN1_ITEM_rptr(OCSP_RESPDATA), alg, sig, data,
				     X509_get0_pubkey(is_issuer ? issuer : cand)) == 1)
			return is_issuer ? issuer : cand;
		*why = "its signature does not verify: it is corrupt or forged";
	}
	return NULL;
}

/* A critical extension in exts of the response or of its single response? */
static bool has_critical(OCSP_BASICRESP *bs, OCSP_SINGLERESP *single)
{
	for (int i = 0; i < OCSP_BASICRESP_get_ext_count(bs); i++)
		if (X509_EXTENSION_get_critical(OCSP_BASICRESP_get_ext(bs, i)))
			return true;
	for (int i = 0; i < OCSP_SINGLERESP_get_ext_count(single); i++)
		if (X509_EXTENSION_get_critical(OCSP_SINGLERESP_get_ext(single, i)))
			return true;
	return false;
}

/* The SingleResponse about (issuer, serial), whichever SHA the responder's CertID used. */
static OCSP_SINGLERESP *find_single(OCSP_BASICRESP *bs, X509 *issuer, const ASN1_INTEGER *serial)
{
	int n = OCSP_resp_count(bs);

	if (n > OCSP_SINGLE_MAX) /* (a negative count loops not at all) */
		n = OCSP_SINGLE_MAX;
	for (int i = 0; i < n; i++) {
		OCSP_SINGLERESP *single = OCSP_resp_get0(bs, i);
		/* OpenSSL's getter takes its CertID as not const, and only reads it */
		OCSP_CERTID *id = (OCSP_CERTID *)(uintptr_t)OCSP_SINGLERESP_get0_id(single);
		ASN1_OBJECT *md = NULL;
		const EVP_MD *dgst;
		OCSP_CERTID *ours;
		bool same;

		if (id == NULL || OCSP_id_get0_info(NULL, &md, NULL, NULL, id) != 1 ||
		    (dgst = certid_md(OBJ_obj2nid(md))) == NULL)
			continue;
		ours = OCSP_cert_id_new(dgst, X509_get_subject_name(issuer),
					X509_get0_pubkey_bitstr(issuer), serial);
		same = ours != NULL && OCSP_id_cmp(ours, id) == 0;
		OCSP_CERTID_free(ours);
		if (same)
			return single;
	}
	return NULL;
}

/* The digest an answer's signature algorithm hashes with (NID_undef if it names none, as
 * Ed25519): for RSASSA-PSS the one in its parameters (SHA-1 when they leave it out, RFC
 * 4055), not the NID_undef of OBJ_find_sigid_algs(). -1 for an unknown algorithm or PSS
 * parameters that do not decode. */
static int sig_digest(const X509_ALGOR *alg, int *md)
{
	const ASN1_OBJECT *oid = NULL;
	const void *pval = NULL;
	int ptype = V_ASN1_UNDEF, pk = NID_undef;
	RSA_PSS_PARAMS *pss;
	ASN1_TYPE param;

	*md = NID_undef;
	if (alg == NULL)
		return -1;
	X509_ALGOR_get0(&oid, &ptype, &pval, alg);
	if (oid == NULL || OBJ_find_sigid_algs(OBJ_obj2nid(oid), md, &pk) != 1)
		return -1;
	if (pk != NID_rsassaPss)
		return 0;
	if (ptype != V_ASN1_SEQUENCE || pval == NULL)
		return -1;
	param.type = V_ASN1_SEQUENCE;
	/* ASN1_TYPE_unpack_sequence() only reads the parameters */
	param.value.sequence = (ASN1_STRING *)(uintptr_t)pval;
	pss = ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(RSA_PSS_PARAMS), &param);
	if (pss == NULL)
		return -1;
	*md = pss->hashAlgorithm != NULL ? OBJ_obj2nid(pss->hashAlgorithm->algorithm) : NID_sha1;
	RSA_PSS_PARAMS_free(pss);
	return *md != NID_undef ? 0 : -1;
}

static int refuse(char *why, size_t why_len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int refuse(char *why, size_t why_len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, why_len, fmt, ap);
	va_end(ap);
	ERR_clear_error();
	return -1;
}

int ocsp_check_response(const uint8_t *der, size_t len, X509 *issuer, const ASN1_INTEGER *serial,
			time_t now, struct ocsp_result *out, char *why, size_t why_len)
{
	const unsigned char *p = der;
	OCSP_RESPONSE *resp = NULL;
	OCSP_BASICRESP *bs = NULL;
	OCSP_SINGLERESP *single;
	ASN1_GENERALIZEDTIME *tu_t = NULL, *nu_t = NULL, *rev_t = NULL;
	const char *problem = NULL;
	int status, reason = -1, md = NID_undef, rc = -1;
	char when[32];
	X509 *signer;
	time_t tu, nu;

	memset(out, 0, sizeof(*out));
	if (len == 0 || len > OCSP_RESPONSE_MAX)
		return refuse(why, why_len, "the answer is %s",
			      len == 0 ? "empty" : "larger than 64 KiB");
	resp = d2i_OCSP_RESPONSE(NULL, &p, (long)len);
	if (resp == NULL || p != der + len) {
		refuse(why, why_len, "the answer is not one DER OCSP response");
		goto out;
	}
	status = OCSP_response_status(resp);
	if (status != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
		refuse(why, why_len, "the responder answered %s", OCSP_response_status_str(status));
		goto out;
	}
	bs = OCSP_response_get1_basic(resp);
	if (bs == NULL) {
		refuse(why, why_len, "the answer is not a basic OCSP response");
		goto out;
	}
	if (sig_digest(OCSP_resp_get0_tbs_sigalg(bs), &md) != 0 || md == NID_sha1 ||
	    md == NID_md5 || md == NID_md5_sha1) {
		refuse(why, why_len, "the answer is signed with %s, which is not accepted",
		       md != NID_undef ? OBJ_nid2sn(md) : "an unknown algorithm");
		goto out;
	}
	signer = find_signer(bs, issuer, now, &problem);
	if (signer == NULL) {
		refuse(why, why_len, "%s", problem);
		goto out;
	}
	single = find_single(bs, issuer, serial);
	if (single == NULL) {
		refuse(why, why_len, "the answer is about another certificate");
		goto out;
	}
	if (has_critical(bs, single)) {
		refuse(why, why_len,
		       "the answer carries a critical extension that is not understood");
		goto out;
	}
	status = OCSP_single_get0_status(single, &reason, &rev_t, &tu_t, &nu_t);
	tu = certfields_time(tu_t);
	nu = certfields_time(nu_t);
	if (tu == 0 || (nu_t != NULL && nu <= tu)) {
		refuse(why, why_len, "the answer has no thisUpdate, or a nextUpdate not after it");
		goto out;
	}
	if (tu > now + OCSP_SKEW) {
		refuse(why, why_len,
		       "the answer's thisUpdate %s is in the future; check the clocks",
		       error_time(tu, when, sizeof(when)));
		goto out;
	}
	out->status = status;
	out->reason = status == V_OCSP_CERTSTATUS_REVOKED ? reason : -1;
	out->revoked_at = certfields_time(rev_t);
	out->this_update = tu;
	out->next_update = nu;
	out->valid_until = nu_t != NULL ? nu : tu + OCSP_NO_NEXT_UPDATE;
	out->delegated = signer != issuer;
	if (out->delegated) {
		time_t na = certfields_time(X509_get0_notAfter(signer));

		if (na < out->valid_until)
			out->valid_until = na;
	}
	if (status != V_OCSP_CERTSTATUS_GOOD && status != V_OCSP_CERTSTATUS_REVOKED &&
	    status != V_OCSP_CERTSTATUS_UNKNOWN) {
		refuse(why, why_len, "the answer has a status that does not exist");
		goto out;
	}
	if (!ocsp_result_final(out) && now > out->valid_until) {
		refuse(why, why_len, "the answer expired at %s%s",
		       error_time(out->valid_until, when, sizeof(when)),
		       nu_t != NULL ? "" : " (it has no nextUpdate)");
		goto out;
	}
	rc = 0;
out:
	OCSP_BASICRESP_free(bs);
	OCSP_RESPONSE_free(resp);
	ERR_clear_error();
	return rc;
}

bool ocsp_result_final(const struct ocsp_result *r)
{
	return r->status == V_OCSP_CERTSTATUS_REVOKED &&
	       r->reason != OCSP_REVOKED_STATUS_CERTIFICATEHOLD;
}

bool ocsp_result_usable(const struct ocsp_result *r, time_t now)
{
	if (ocsp_result_final(r))
		return true;
	return r->this_update <= now + OCSP_SKEW && now <= r->valid_until;
}

/* The certificate of the chain or the CA bundle that issued leaf: its name, and its key
 * verifies leaf's signature. NULL if none. */
static X509 *issuer_of(struct state *st, X509 *leaf)
{
	STACK_OF(X509) *chain = NULL;
	STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(st->store);
	int n;

	if (SSL_CTX_get0_chain_certs(st->ssl_ctx, &chain) != 1)
		chain = NULL;
	n = sk_X509_num(chain);
	for (int i = 0; i < n + sk_X509_OBJECT_num(objs); i++) {
		X509 *c = i < n ? sk_X509_value(chain, i)
				: X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i - n));

		if (c != NULL &&
		    X509_NAME_cmp(X509_get_subject_name(c), X509_get_issuer_name(leaf)) == 0 &&
		    X509_verify(leaf, X509_get0_pubkey(c)) == 1) {
			ERR_clear_error();
			return c;
		}
	}
	ERR_clear_error();
	return NULL;
}

int ocsp_own(struct state *st, struct error *err)
{
	const struct mtls_config *c = st->config;
	X509 *leaf = SSL_CTX_get0_certificate(st->ssl_ctx), *issuer;
	unsigned n = 0;
	char who[300];
	bool must;

	if (leaf == NULL)
		return 0;
	if (!X509_up_ref(leaf))
		return error_set(err, MTLS_REASON_INTERNAL, "out of memory");
	st->own_leaf = leaf;
	if (X509_digest(leaf, EVP_sha256(), st->own_hash, &n) != 1 || n != 32)
		return error_set_ssl(err, MTLS_REASON_INTERNAL, "cannot hash the own certificate");
	issuer = issuer_of(st, leaf);
	if (issuer != NULL && X509_up_ref(issuer))
		st->own_issuer = issuer;
	st->own_ocsp_url = c->ocsp_url != NULL ? strdup(c->ocsp_url) : ocsp_url(leaf);
	if (c->ocsp_url != NULL && st->own_ocsp_url == NULL)
		return error_set(err, MTLS_REASON_INTERNAL, "out of memory");
	must = ocsp_must_staple(leaf);
	st->staples = st->server && (c->ocsp_staple || must);
	if (!st->staples)
		return 0;
	identity_describe(leaf, who, sizeof(who));
	if (st->own_issuer == NULL)
		return error_set(err, MTLS_REASON_CONFIG,
				 "OCSP stapling%s needs the issuer of the own certificate (%s), "
				 "which is neither in its chain file %s nor in the CA bundle; put "
				 "the intermediate after the leaf in the chain file",
				 must ? " (the certificate is must-staple)" : "", who,
				 c->cert.origin);
	if (st->own_ocsp_url == NULL)
		return error_set(
			err, MTLS_REASON_CONFIG,
			"OCSP stapling%s needs a responder, and the own certificate (%s) "
			"names none (no authorityInfoAccess OCSP); configure the responder "
			"URL",
			must ? " (the certificate is must-staple)" : "", who);
	return 0;
}
