/*
 * Whether a peer's chain is let in: one decision (verify_chain()) for a full handshake (as
 * OpenSSL's cert verify callback), a resumed session (verify_resumed()), and
 * mtls_verify_chain_pem() / `mtls verify`. A peer that presented no certificate at all is
 * decided here too (verify_no_certificate()): refused, unless a server's config makes the
 * client certificate optional; a certificate presented is never judged by that rule.
 *
 *   1. The path to the trust anchors: OpenSSL's X509_verify_cert() builds it and checks
 *      signatures, validity, purpose, name and OpenSSL's strict mode; then the strict
 *      profile (strict.c) and key strength. This is what the verification cache remembers
 *      (verify_cache.c): a hit gives back the path verified before, and nothing else.
 *   2. On that path, every time: the leaf (an end entity with the role's EKU), validity
 *      now, revocation (revocation.c), the identity and the expected URI, the allow rules,
 *      and last OCSP (the server's staple, or the endpoint's answers by mode: ocsp.c,
 *      ocsp_store.c); a client's full handshake judges OCSP in the status callback, once
 *      the staple is known (verify_ocsp()), on the chain verified here.
 *
 * The decision and the words are apart: checks return what failed (a verify_run, a strict
 * or revocation finding) and explain() / strict_explain() say it.
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "internal.h"
#include "key_strength.h"

/* What the verify callback records while X509_verify_cert() runs. */
struct verify_run {
	const struct verify_request *rq;
	int error;
	int depth;
	X509 *cert;		/* the certificate the first error is about (referenced) */
	int chain_len;		/* of the chain built so far, when the first error came */
	STACK_OF(X509) * chain; /* that chain (referenced) */
	STACK_OF(X509) * sent;	/* what the peer sent, leaf first (not referenced) */
	X509_CRL *crl;		/* the CRL the error is about (not referenced) */
	bool crl_not_yet_valid; /* crl_expired: the CRL is from the future */
	int forged;		/* crl_missing: CRLs of the issuer's name that did not verify */
	int out_of_scope;	/* crl_missing: CRLs of the issuer that do not cover it */
	int no_crl_sign;	/* crl_missing: CRLs from an issuer whose keyUsage lacks cRLSign */
};

static int run_index = -1;
static pthread_once_t run_index_once = PTHREAD_ONCE_INIT;

static void run_index_init(void)
{
	run_index = X509_STORE_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* A client's certificate may name serverAuth instead of clientAuth. */
static bool server_eku_ok(const struct verify_request *rq)
{
	return rq->peer_is_client && (rq->st->config->insecure & INSECURE_SERVER_EKU_CLIENTS);
}

static time_t verify_now(const struct verify_request *rq)
{
	return rq->st->config->verify_time != 0 ? rq->st->config->verify_time : time(NULL);
}

static int verify_cb(int ok, X509_STORE_CTX *xctx)
{
	struct verify_run *run = X509_STORE_CTX_get_ex_data(xctx, run_index);

	if (ok || run == NULL)
		return ok;
	if (run->cert == NULL) {
		X509 *cert = X509_STORE_CTX_get_current_cert(xctx);

		run->error = X509_STORE_CTX_get_error(xctx);
		run->depth = X509_STORE_CTX_get_error_depth(xctx);
		run->chain_len = sk_X509_num(X509_STORE_CTX_get0_chain(xctx));
		run->chain = X509_STORE_CTX_get1_chain(xctx);
		if (cert != NULL && X509_up_ref(cert))
			run->cert = cert;
	}
	return 0;
}

static bool is_ip(const char *name)
{
	unsigned char buf[16];

	return inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
}

int verify_setup(const struct verify_request *rq, X509_STORE_CTX *xctx)
{
	const struct mtls_config *c = rq->st->config;
	X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(xctx);

	/* RFC 5280's profile as far as OpenSSL checks it (strict.c does the rest); no CRL
	 * flags: revocation is decided on the verified path by revocation.c, on every path */
	X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_TRUSTED_FIRST | X509_V_FLAG_X509_STRICT);
	X509_VERIFY_PARAM_clear_flags(param, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
	X509_VERIFY_PARAM_clear_flags(param,
				      X509_V_FLAG_PARTIAL_CHAIN | X509_V_FLAG_ALLOW_PROXY_CERTS);
	X509_VERIFY_PARAM_set_depth(param, c->verify_depth);
	X509_VERIFY_PARAM_set_auth_level(param, 2);
	if (rq->certs_at != 0)
		X509_VERIFY_PARAM_set_time(param, rq->certs_at);
	else if (c->verify_time != 0)
		X509_VERIFY_PARAM_set_time(param, c->verify_time);
	/* with server_eku_ok, the EKU is checked by strict_leaf() alone (serverAuth or
	 * clientAuth); a handshake's context has its purpose set already (the SSL default),
	 * which X509_STORE_CTX_set_purpose() does not replace */
	if (server_eku_ok(rq)) {
		if (X509_VERIFY_PARAM_set_purpose(param, X509_PURPOSE_ANY) != 1)
			return -1;
	} else if (X509_STORE_CTX_set_purpose(xctx, rq->peer_is_client
							    ? X509_PURPOSE_SSL_CLIENT
							    : X509_PURPOSE_SSL_SERVER) != 1)
		return -1;
	X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NEVER_CHECK_SUBJECT |
						       X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if (rq->name != NULL && rq->name[0] != '\0') {
		int ok = is_ip(rq->name) ? X509_VERIFY_PARAM_set1_ip_asc(param, rq->name)
					 : X509_VERIFY_PARAM_set1_host(param, rq->name, 0);
		if (ok != 1)
			return -1;
	}
	return 0;
}

struct reason_map {
	int x509_error;
	enum mtls_reason reason;
};

static const struct reason_map x509_reasons[] = {
	{X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT, MTLS_REASON_UNKNOWN_CA},
	{X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, MTLS_REASON_UNKNOWN_CA},
	{X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE, MTLS_REASON_UNKNOWN_CA},
	{X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN, MTLS_REASON_UNKNOWN_CA},
	{X509_V_ERR_CERT_UNTRUSTED, MTLS_REASON_UNKNOWN_CA},
	{X509_V_ERR_CERT_REJECTED, MTLS_REASON_UNKNOWN_CA},
	{X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, MTLS_REASON_SELF_SIGNED},
	{X509_V_ERR_CERT_HAS_EXPIRED, MTLS_REASON_EXPIRED},
	{X509_V_ERR_CERT_NOT_YET_VALID, MTLS_REASON_NOT_YET_VALID},
	{X509_V_ERR_INVALID_PURPOSE, MTLS_REASON_BAD_KEY_USAGE},
	{X509_V_ERR_HOSTNAME_MISMATCH, MTLS_REASON_NAME_MISMATCH},
	{X509_V_ERR_IP_ADDRESS_MISMATCH, MTLS_REASON_NAME_MISMATCH},
	{X509_V_ERR_EMAIL_MISMATCH, MTLS_REASON_NAME_MISMATCH},
	{X509_V_ERR_CERT_REVOKED, MTLS_REASON_REVOKED},
	{X509_V_ERR_CRL_HAS_EXPIRED, MTLS_REASON_CRL_EXPIRED},
	{X509_V_ERR_CRL_NOT_YET_VALID, MTLS_REASON_CRL_EXPIRED},
	{X509_V_ERR_UNABLE_TO_GET_CRL, MTLS_REASON_CRL_MISSING},
	{X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER, MTLS_REASON_CRL_MISSING},
	{X509_V_ERR_DIFFERENT_CRL_SCOPE, MTLS_REASON_CRL_MISSING},
	{X509_V_ERR_CERT_CHAIN_TOO_LONG, MTLS_REASON_CHAIN_TOO_LONG},
	{X509_V_ERR_PATH_LENGTH_EXCEEDED, MTLS_REASON_CHAIN_TOO_LONG},
	{X509_V_ERR_INVALID_CA, MTLS_REASON_INVALID_CA},
	{X509_V_ERR_KEYUSAGE_NO_CERTSIGN, MTLS_REASON_INVALID_CA},
	{X509_V_ERR_CERT_SIGNATURE_FAILURE, MTLS_REASON_BAD_SIGNATURE},
	{X509_V_ERR_CRL_SIGNATURE_FAILURE, MTLS_REASON_BAD_SIGNATURE},
	{X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE, MTLS_REASON_BAD_SIGNATURE},
	{X509_V_ERR_UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY, MTLS_REASON_BAD_SIGNATURE},
	{X509_V_ERR_EE_KEY_TOO_SMALL, MTLS_REASON_WEAK_KEY},
	{X509_V_ERR_CA_KEY_TOO_SMALL, MTLS_REASON_WEAK_KEY},
	{X509_V_ERR_CA_MD_TOO_WEAK, MTLS_REASON_WEAK_SIGNATURE},
};

/* Among the certificates the peer sent, one that could be cert's issuer: its name, and its
 * subjectKeyIdentifier if both have key identifiers. NULL if none. */
static X509 *sent_issuer(const struct verify_run *run, X509 *cert)
{
	const ASN1_OCTET_STRING *akid = X509_get0_authority_key_id(cert);

	for (int i = 0; i < sk_X509_num(run->sent); i++) {
		X509 *c = sk_X509_value(run->sent, i);
		const ASN1_OCTET_STRING *skid = X509_get0_subject_key_id(c);

		if (X509_cmp(c, cert) != 0 &&
		    X509_NAME_cmp(X509_get_subject_name(c), X509_get_issuer_name(cert)) == 0 &&
		    (akid == NULL || skid == NULL || ASN1_OCTET_STRING_cmp(akid, skid) == 0))
			return c;
	}
	return NULL;
}

/* A certificate of the chain sent, or the one the error is about, with an extension that
 * does not decode: OpenSSL then finds no issuer for it (or uses it for none), whatever
 * else was sent. NULL if none. */
static X509 *undecodable(const struct verify_run *run)
{
	if (run->cert != NULL && (X509_get_extension_flags(run->cert) & EXFLAG_INVALID))
		return run->cert;
	for (int i = 0; i < sk_X509_num(run->sent); i++)
		if (X509_get_extension_flags(sk_X509_value(run->sent, i)) & EXFLAG_INVALID)
			return sk_X509_value(run->sent, i);
	return NULL;
}

static bool is_ca(X509 *cert)
{
	return (X509_get_extension_flags(cert) & (EXFLAG_BCONS | EXFLAG_CA)) ==
	       (EXFLAG_BCONS | EXFLAG_CA);
}

static enum mtls_reason reason_of(const struct verify_run *run)
{
	if (undecodable(run) != NULL)
		return MTLS_REASON_BAD_CERTIFICATE;
	/* a CA certificate as the peer's own: that is what is wrong with it, whatever else */
	if (run->depth == 0 && run->cert != NULL && is_ca(run->cert))
		return MTLS_REASON_LEAF_IS_CA;
	/* no issuer found for the leaf. Not among what the peer sent, nor in the trust store:
	 * most likely a chain file without the intermediate, not a certificate from another
	 * CA. Among what it sent, but OpenSSL would not take it as the issuer: the leaf's
	 * signature algorithm is not of that issuer's key */
	if (run->error == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY && run->depth == 0 &&
	    run->chain_len == 1 && run->cert != NULL &&
	    !(X509_get_extension_flags(run->cert) & EXFLAG_SI))
		return sent_issuer(run, run->cert) == NULL ? MTLS_REASON_ISSUER_NOT_SENT
							   : MTLS_REASON_BAD_SIGNATURE;
	for (size_t i = 0; i < sizeof(x509_reasons) / sizeof(x509_reasons[0]); i++)
		if (x509_reasons[i].x509_error == run->error)
			return x509_reasons[i].reason;
	return MTLS_REASON_BAD_CERTIFICATE;
}

static const char *role_of(const struct verify_request *rq)
{
	return rq->peer_is_client ? "client" : "server";
}

static void issuer_string(X509 *cert, char *buf, size_t len)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data = NULL;
	long n;

	buf[0] = '\0';
	if (bio == NULL)
		return;
	if (X509_NAME_print_ex(bio, X509_get_issuer_name(cert), 0, XN_FLAG_RFC2253) >= 0) {
		n = BIO_get_mem_data(bio, &data);
		snprintf(buf, len, "%.*s", (int)(n > 0 ? n : 0), data != NULL ? data : "");
	}
	BIO_free(bio);
}

/* The "what to do" and the detail for each reason. */
static void explain(const struct verify_request *rq, const struct verify_run *run,
		    struct error *err)
{
	enum mtls_reason reason = reason_of(run);
	const char *role = role_of(rq);
	char who[300] = "";
	char issuer[200] = "";
	char when[32];
	const char *which = run->depth == 0 ? "certificate" : "certificate chain";
	struct strict_finding f;
	X509 *bad = undecodable(run);

	if (bad != NULL) {
		bool leaf = bad ==
			    (sk_X509_num(run->sent) > 0 ? sk_X509_value(run->sent, 0) : run->cert);

		identity_describe(bad, who, sizeof(who));
		error_set(err, MTLS_REASON_BAD_CERTIFICATE,
			  "%s %s rejected: %s: an extension of it does not decode; it is malformed "
			  "or forged",
			  role, leaf ? "certificate" : "certificate chain", who);
		return;
	}
	if (reason == MTLS_REASON_LEAF_IS_CA &&
	    strict_leaf(run->cert, rq->peer_is_client, server_eku_ok(rq), &f) != 0) {
		strict_explain(&f, role, err);
		return;
	}
	if (strict_of_x509_error(run->error, run->depth, run->cert, run->chain, &f) == 0) {
		strict_explain(&f, role, err);
		return;
	}
	if (run->cert != NULL) {
		identity_describe(run->cert, who, sizeof(who));
		issuer_string(run->cert, issuer, sizeof(issuer));
	}
	switch (reason) {
	case MTLS_REASON_ISSUER_NOT_SENT:
		error_set(
			err, reason,
			"%s certificate rejected: its issuer %s was not sent and is not in the CA "
			"bundle (%s); the peer must send its chain file (leaf + intermediates) or "
			"add the intermediate with --untrusted/--ca (if that issuer is not one of "
			"your CAs, use a certificate from the trusted CA)",
			role, issuer, who);
		break;
	case MTLS_REASON_UNKNOWN_CA:
		error_set(err, reason,
			  "%s certificate rejected: issued by %s, which does not lead to a "
			  "configured CA (%s); use a certificate from the trusted CA or add its CA "
			  "to the CA bundle",
			  role, issuer[0] ? issuer : "an unknown issuer", who);
		break;
	case MTLS_REASON_SELF_SIGNED:
		error_set(err, reason,
			  "%s certificate rejected: self-signed and not issued by the configured "
			  "CA (%s); use a certificate issued by the CA",
			  role, who);
		break;
	case MTLS_REASON_EXPIRED:
		error_set(err, reason, "%s %s rejected: expired at %s (%s); renew it", role, which,
			  error_time(certfields_time(X509_get0_notAfter(run->cert)), when,
				     sizeof(when)),
			  who);
		break;
	case MTLS_REASON_NOT_YET_VALID:
		error_set(
			err, reason,
			"%s %s rejected: not valid before %s (%s); check the clocks of both hosts",
			role, which,
			error_time(certfields_time(X509_get0_notBefore(run->cert)), when,
				   sizeof(when)),
			who);
		break;
	case MTLS_REASON_BAD_KEY_USAGE:
		error_set(
			err, reason,
			"%s %s rejected: its key usage does not allow TLS %s authentication (%s); "
			"issue it with the %s profile",
			role, which, role, who, role);
		break;
	case MTLS_REASON_NAME_MISMATCH:
		error_set(
			err, reason,
			"server certificate rejected: it is not valid for %s (%s); connect with a "
			"name from its subjectAltName or reissue it with that name",
			rq->name != NULL ? rq->name : "the expected name", who);
		break;
	case MTLS_REASON_REVOKED:
		error_set(err, reason,
			  "%s %s rejected: revoked by its issuer's CRL (%s); issue a new "
			  "certificate",
			  role, which, who);
		break;
	case MTLS_REASON_CRL_EXPIRED:
		if (run->crl_not_yet_valid)
			error_set(err, reason,
				  "%s %s rejected: the CRL of %s is not valid before %s; check the "
				  "clock of this host",
				  role, which, issuer[0] ? issuer : "its issuer",
				  error_time(certfields_time(X509_CRL_get0_lastUpdate(run->crl)),
					     when, sizeof(when)));
		else
			error_set(
				err, reason,
				"%s %s rejected: the CRL of %s is past its nextUpdate %s; publish "
				"a fresh CRL (or set a CRL grace period)",
				role, which, issuer[0] ? issuer : "its issuer",
				run->crl != NULL
					? error_time(certfields_time(
							     X509_CRL_get0_nextUpdate(run->crl)),
						     when, sizeof(when))
					: "?");
		break;
	case MTLS_REASON_CRL_MISSING:
		error_set(err, reason,
			  "%s %s rejected: revocation checking is on but no valid CRL of %s covers "
			  "it (%s)%s%s%s; add that issuer's CRL",
			  role, which, issuer[0] ? issuer : "its issuer", who,
			  run->forged > 0
				  ? "; a CRL in that name does not verify with the issuer's "
				    "key and was ignored"
				  : "",
			  run->no_crl_sign > 0 ? "; its issuer's keyUsage lacks cRLSign, so that "
						 "issuer's CRL was ignored (reissue the CA with "
						 "cRLSign)"
					       : "",
			  run->out_of_scope > 0 ? "; a CRL of that issuer has a scope "
						  "(issuingDistributionPoint) that leaves it out"
						: "");
		break;
	case MTLS_REASON_CHAIN_TOO_LONG:
		error_set(err, reason,
			  "%s certificate rejected: its chain has more intermediates than the "
			  "maximum depth %d (%s); shorten the chain or raise the verify depth",
			  role, rq->st->config->verify_depth, who);
		break;
	case MTLS_REASON_INVALID_CA:
		error_set(
			err, reason,
			"%s certificate rejected: %s in its chain is not a CA (no basicConstraints "
			"CA:TRUE or keyCertSign); fix the chain",
			role, who);
		break;
	case MTLS_REASON_BAD_SIGNATURE:
		error_set(err, reason,
			  "%s %s rejected: its signature does not verify (%s); the certificate is "
			  "corrupt or forged",
			  role, which, who);
		break;
	case MTLS_REASON_WEAK_KEY:
		error_set(err, reason,
			  "%s %s rejected: its key is too weak (%s); use ECDSA P-256 or RSA 2048+",
			  role, which, who);
		break;
	case MTLS_REASON_WEAK_SIGNATURE:
		error_set(
			err, reason,
			"%s %s rejected: signed with a weak digest such as SHA-1 (%s); reissue it "
			"with SHA-256",
			role, which, who);
		break;
	default:
		error_set(err, reason, "%s %s rejected: %s (%s)", role, which,
			  X509_verify_cert_error_string(run->error), who);
		break;
	}
}

/* The peer's own certificate, on every path: an end entity whose EKU names the role. */
static int check_leaf(const struct verify_request *rq, X509 *leaf, struct error *err)
{
	struct strict_finding f;

	if (strict_leaf(leaf, rq->peer_is_client, server_eku_ok(rq), &f) != 0)
		return strict_explain(&f, role_of(rq), err);
	return 0;
}

/* The strict profile, on a chain just verified (a cached verification had it checked). */
static int check_profile(const struct verify_request *rq, STACK_OF(X509) * chain, struct error *err)
{
	struct strict_finding f;

	if (strict_chain(chain, &f) != 0)
		return strict_explain(&f, role_of(rq), err);
	return 0;
}

/* Keys and signature digests of every certificate but the trust anchor's own signature. */
static int check_strength(const struct verify_request *rq, STACK_OF(X509) * chain,
			  struct error *err)
{
	int n = sk_X509_num(chain);
	char who[300];

	for (int i = 0; i < n; i++) {
		X509 *cert = sk_X509_value(chain, i);
		int md = NID_undef, pk = NID_undef;

		if (!key_strength_ok(X509_get0_pubkey(cert))) {
			identity_describe(cert, who, sizeof(who));
			return error_set(
				err, MTLS_REASON_WEAK_KEY,
				"%s certificate rejected: %s has a weak or unsupported key; "
				"use ECDSA P-256/P-384, Ed25519 or RSA 2048+",
				role_of(rq), who);
		}
		if (i == n - 1)
			break; /* the root's self-signature proves nothing */
		if (OBJ_find_sigid_algs(X509_get_signature_nid(cert), &md, &pk) == 1 &&
		    (md == NID_sha1 || md == NID_md5 || md == NID_md5_sha1)) {
			identity_describe(cert, who, sizeof(who));
			return error_set(
				err, MTLS_REASON_WEAK_SIGNATURE,
				"%s certificate rejected: %s is signed with %s; reissue it "
				"with SHA-256",
				role_of(rq), who, OBJ_nid2sn(md));
		}
	}
	return 0;
}

static int check_uri(const struct verify_request *rq, const struct mtls_peer *peer,
		     struct error *err)
{
	for (size_t i = 0; i < peer->uris.n; i++)
		if (strcmp(peer->uris.v[i], rq->uri) == 0)
			return 0;
	return error_set(err, MTLS_REASON_NAME_MISMATCH,
			 "%s certificate rejected: it does not carry the URI %s (identity %s, "
			 "serial %s); use the certificate issued for that identity",
			 role_of(rq), rq->uri, peer->identity, peer->serial);
}

static bool was_sent(X509 *cert, STACK_OF(X509) * sent)
{
	for (int i = 0; i < sk_X509_num(sent); i++)
		if (X509_cmp(sk_X509_value(sent, i), cert) == 0)
			return true;
	return false;
}

/* Every certificate of the path within its validity at when (a cached path, or one
 * verified a moment ago, or under an earlier state). On a path own_path() rebuilt (sent not
 * NULL: what the peer sent), only the leaf and the certificates of sent at when; the
 * others, put in by this endpoint, at now. */
static int check_times(const struct verify_request *rq, STACK_OF(X509) * chain, time_t when,
		       STACK_OF(X509) * sent, time_t now, struct verify_run *run)
{
	for (int i = 0; i < sk_X509_num(chain); i++) {
		X509 *cert = sk_X509_value(chain, i);
		time_t at = sent == NULL || i == 0 || was_sent(cert, sent) ? when : now;
		/* ASN1_TIME_cmp_time_t() allocates nothing, unlike X509_cmp_time() */
		int e = ASN1_TIME_cmp_time_t(X509_get0_notBefore(cert), at) > 0
				? X509_V_ERR_CERT_NOT_YET_VALID
			: ASN1_TIME_cmp_time_t(X509_get0_notAfter(cert), at) < 0
				? X509_V_ERR_CERT_HAS_EXPIRED
				: X509_V_OK;

		if (e != X509_V_OK) {
			*run = (struct verify_run){.rq = rq, .error = e, .depth = i, .cert = cert};
			return -1;
		}
	}
	return 0;
}

/* Revocation of the path; a CRL within its grace period leaves a warning. */
static int check_revocation(const struct verify_request *rq, STACK_OF(X509) * chain, time_t now,
			    struct verify_run *run, char *warning, size_t warning_len)
{
	static const int errors[] = {
		[REVOCATION_REVOKED] = X509_V_ERR_CERT_REVOKED,
		[REVOCATION_MISSING] = X509_V_ERR_UNABLE_TO_GET_CRL,
		[REVOCATION_EXPIRED] = X509_V_ERR_CRL_HAS_EXPIRED,
	};
	struct revocation_finding f;
	char issuer[200], when[32];

	if (revocation_check(rq->st, chain, now, &f) != 0) {
		*run = (struct verify_run){.rq = rq,
					   .error = errors[f.status],
					   .depth = f.depth,
					   .cert = f.cert,
					   .crl = f.crl,
					   .crl_not_yet_valid = f.not_yet_valid,
					   .forged = f.forged,
					   .out_of_scope = f.out_of_scope,
					   .no_crl_sign = f.no_crl_sign};
		return -1;
	}
	if (f.status == REVOCATION_GRACE && warning_len > 0) {
		issuer_string(f.cert, issuer, sizeof(issuer));
		snprintf(warning, warning_len,
			 "CRL of %s expired at %s, accepted within the grace period; publish a "
			 "fresh CRL",
			 issuer,
			 error_time(certfields_time(X509_CRL_get0_nextUpdate(f.crl)), when,
				    sizeof(when)));
	}
	return 0;
}

/* A note about an accepted chain, added to warning (after what is there already). */
static void warn(char *warning, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void warn(char *warning, size_t len, const char *fmt, ...)
{
	size_t used = len > 0 ? strlen(warning) : 0;
	va_list ap;

	if (len == 0 || used + 3 >= len)
		return;
	if (used > 0) {
		memcpy(warning + used, "; ", 3);
		used += 2;
	}
	va_start(ap, fmt);
	vsnprintf(warning + used, len - used, fmt, ap);
	va_end(ap);
}

/* Why no answer is at hand, and what to do, for a message. */
static void ocsp_absence(const struct ocsp_seen *seen, char *buf, size_t len)
{
	if (seen->no_url)
		snprintf(buf, len,
			 "no OCSP responder is known for it (no authorityInfoAccess OCSP in it, no "
			 "responder URL configured); configure one");
	else if (seen->failures > 0)
		snprintf(buf, len,
			 "the OCSP responder %s failed (%s%s); make it reachable, the fetch is "
			 "retried",
			 seen->url, seen->failure, seen->failures > 1 ? ", again" : "");
	else
		snprintf(buf, len,
			 "there is no answer from the OCSP responder %s yet; it is being fetched, "
			 "retry in a moment",
			 seen->url);
}

/* leaf described into buf for a message, once: only a refusal or a warning needs it. */
static const char *describe_once(X509 *leaf, char *buf, size_t len)
{
	if (buf[0] == '\0')
		identity_describe(leaf, buf, len);
	return buf;
}

/* OCSP of the leaf of a verified chain, last of step 2: a stapled answer (a client's full
 * handshake), else the endpoint's answers, by mode (the mtls.h OCSP section). 0 accepted,
 * or -1 with err and found->error (for the alert). */
static int check_ocsp(const struct verify_request *rq, STACK_OF(X509) * chain, time_t now,
		      struct verify_run *found, struct error *err, char *warning,
		      size_t warning_len)
{
	const struct mtls_config *c = rq->st->config;
	const char *role = role_of(rq);
	enum mtls_ocsp_result result = MTLS_OCSP_RESULT_NONE;
	struct ocsp_result staple;
	struct ocsp_seen seen;
	char why[300] = "", who[300] = "", when[32], absent[700];
	bool stapled = false, must;
	X509 *leaf, *issuer;

	if (rq->ocsp_out != NULL)
		*rq->ocsp_out = MTLS_OCSP_RESULT_NONE;
	if (sk_X509_num(chain) < 2)
		return 0; /* a trust anchor as the peer's own: nothing above it to answer */
	leaf = sk_X509_value(chain, 0);
	issuer = sk_X509_value(chain, 1);
	must = rq->staple_round && !rq->peer_is_client && ocsp_must_staple(leaf);
	/* off, nothing stapled, nothing known: the common case costs no more than this */
	if (c->ocsp_mode == MTLS_OCSP_OFF && rq->staple == NULL && !must &&
	    ocsp_store_empty(rq->st->ocsp))
		return 0;
	if (rq->staple != NULL &&
	    ocsp_check_response(rq->staple, rq->staple_len, issuer, X509_get0_serialNumber(leaf),
				now, &staple, why, sizeof(why)) == 0) {
		stapled = true;
		/* remembered for resumptions and re-checks, which carry no staple */
		ocsp_store_put(rq->st->ocsp, leaf, issuer, c->ocsp_url, &staple,
			       c->ocsp_cache_slots, now);
	} else if (rq->staple != NULL && !must) {
		warn(warning, warning_len,
		     "the server stapled an unusable OCSP answer, taken as none: %s", why);
	}
	if (stapled && staple.status == V_OCSP_CERTSTATUS_REVOKED) {
		found->error = X509_V_ERR_CERT_REVOKED;
		return error_set(err, MTLS_REASON_REVOKED,
				 "server certificate rejected: revoked at %s (%s) according to the "
				 "OCSP answer it stapled (%s); issue it a new certificate",
				 error_time(staple.revoked_at, when, sizeof(when)),
				 ocsp_reason_name(staple.reason),
				 describe_once(leaf, who, sizeof(who)));
	}
	if (must && !stapled) {
		found->error = X509_V_ERR_OCSP_VERIFY_NEEDED;
		return error_set(
			err, MTLS_REASON_OCSP_MISSING,
			"server certificate rejected: it is must-staple (TLS feature "
			"status_request, RFC 7633) and the server %s%s (%s); the server must "
			"staple a fresh OCSP answer (mtls server --ocsp-staple), or use a "
			"certificate without must-staple",
			rq->staple != NULL ? "stapled an unusable answer: "
					   : "stapled no OCSP answer",
			rq->staple != NULL ? why : "", describe_once(leaf, who, sizeof(who)));
	}
	if (stapled) {
		memset(&seen, 0, sizeof(seen));
		seen.answered = true;
		seen.answer = staple;
		snprintf(seen.url, sizeof(seen.url), "stapled by the server");
	} else {
		/* off: no fetch, but an answer known (a staple seen before) still counts */
		ocsp_store_lookup(rq->st->ocsp, leaf, issuer, c->ocsp_url, c->ocsp_cache_slots,
				  c->ocsp_mode != MTLS_OCSP_OFF, now, &seen);
	}
	if (seen.answered && seen.answer.status == V_OCSP_CERTSTATUS_REVOKED) {
		found->error = X509_V_ERR_CERT_REVOKED;
		return error_set(
			err, MTLS_REASON_REVOKED,
			"%s certificate rejected: revoked at %s (%s) according to the OCSP "
			"responder %s (%s); issue a new certificate",
			role, error_time(seen.answer.revoked_at, when, sizeof(when)),
			ocsp_reason_name(seen.answer.reason), seen.url,
			describe_once(leaf, who, sizeof(who)));
	}
	if (seen.answered && seen.answer.status == V_OCSP_CERTSTATUS_GOOD) {
		result = MTLS_OCSP_RESULT_GOOD;
	} else if (seen.answered) { /* unknown */
		if (c->ocsp_mode == MTLS_OCSP_HARD_FAIL) {
			found->error = X509_V_ERR_OCSP_CERT_UNKNOWN;
			return error_set(
				err, MTLS_REASON_OCSP_UNKNOWN,
				"%s certificate rejected: the OCSP responder %s does not know it "
				"(status unknown) (%s); OCSP hard-fail needs a good answer: was it "
				"issued by this CA, and does the responder serve that CA?",
				role, seen.url, describe_once(leaf, who, sizeof(who)));
		}
		warn(warning, warning_len,
		     "the OCSP responder %s does not know the %s certificate (%s): status "
		     "unknown, accepted in OCSP %s mode",
		     seen.url, role, describe_once(leaf, who, sizeof(who)),
		     c->ocsp_mode == MTLS_OCSP_OFF ? "off" : "soft-fail");
		if (c->ocsp_mode == MTLS_OCSP_SOFT_FAIL)
			result = MTLS_OCSP_RESULT_SOFT_FAIL;
	} else if (c->ocsp_mode == MTLS_OCSP_HARD_FAIL) {
		ocsp_absence(&seen, absent, sizeof(absent));
		found->error = X509_V_ERR_OCSP_VERIFY_NEEDED;
		return error_set(err, MTLS_REASON_OCSP_UNAVAILABLE,
				 "%s certificate rejected: no OCSP answer for it (%s) and OCSP is "
				 "hard-fail: %s (or use soft-fail)",
				 role, describe_once(leaf, who, sizeof(who)), absent);
	} else if (c->ocsp_mode == MTLS_OCSP_SOFT_FAIL) {
		ocsp_absence(&seen, absent, sizeof(absent));
		warn(warning, warning_len,
		     "no OCSP answer for the %s certificate (%s), accepted in OCSP soft-fail "
		     "mode: %s",
		     role, describe_once(leaf, who, sizeof(who)), absent);
		result = MTLS_OCSP_RESULT_SOFT_FAIL;
	}
	if (rq->ocsp_out != NULL)
		*rq->ocsp_out = result;
	return 0;
}

int verify_ocsp(const struct verify_request *rq, STACK_OF(X509) * chain, struct error *err,
		char *warning, size_t warning_len)
{
	struct verify_run found = {.rq = rq};

	error_clear(err);
	if (check_ocsp(rq, chain, verify_now(rq), &found, err, warning, warning_len) != 0)
		return -1;
	error_clear(err);
	return 0;
}

/* The time window in which the verification of this chain stays true: every certificate
 * valid, and the CRLs before their nextUpdate. */
static void chain_window(const struct verify_request *rq, STACK_OF(X509) * chain, time_t *from,
			 time_t *until)
{
	*from = 0;
	*until = rq->st->config->ncrls > 0 && rq->st->crl_next_update != 0 ? rq->st->crl_next_update
									   : (time_t)INT64_MAX;
	for (int i = 0; i < sk_X509_num(chain); i++) {
		X509 *cert = sk_X509_value(chain, i);
		time_t nb = certfields_time(X509_get0_notBefore(cert));
		time_t na = certfields_time(X509_get0_notAfter(cert));

		if (nb > *from)
			*from = nb;
		if (na < *until)
			*until = na;
	}
}

/* A certificate the peer sent (after its leaf) of own's subject and public key: own is
 * another certificate of the same CA key. */
static bool replaces_sent(X509 *own, STACK_OF(X509) * sent)
{
	for (int i = 1; i < sk_X509_num(sent); i++) {
		X509 *cert = sk_X509_value(sent, i);

		if (X509_NAME_cmp(X509_get_subject_name(cert), X509_get_subject_name(own)) == 0 &&
		    EVP_PKEY_eq(X509_get0_pubkey(cert), X509_get0_pubkey(own)) == 1)
			return true;
	}
	return false;
}

/* The second path of step 1, when the one through what the peer sent failed: the same
 * leaf and certificates, with those CA certificates of the endpoint's own chain that are
 * another certificate of a CA the peer sent (its subject and key) ahead of them (OpenSSL
 * takes the first fitting issuer of the untrusted ones, and searches other paths only in
 * the trust store). A peer still sending an intermediate certificate its CA has replaced
 * under a new root (the same key and subject: a root rollover) is verified through the
 * current certificate, as it would be if it sent that one. Nothing else is weakened: a
 * chain the peer left incomplete is not completed (issuer_not_sent stays), the path still
 * ends at a trust anchor of the store, under the same rules, and step 2 runs on it. Times are
 * check_times()'s: what the peer sent at rq->certs_at, as on the first path (a live
 * connection re-judged: at its handshake), what was put in now (it may be younger than the
 * handshake). The path, or NULL. */
static STACK_OF(X509) * own_path(const struct verify_request *rq, X509_STORE_CTX *xctx)
{
	STACK_OF(X509) *sent = X509_STORE_CTX_get0_untrusted(xctx), *pool, *chain = NULL;
	X509_STORE_CTX *x2;

	if (sk_X509_num(rq->st->own_cas) == 0)
		return NULL;
	pool = sk_X509_new_null();
	for (int i = 0; pool != NULL && i < sk_X509_num(rq->st->own_cas); i++) {
		X509 *own = sk_X509_value(rq->st->own_cas, i);

		if (replaces_sent(own, sent) && !sk_X509_push(pool, own)) {
			sk_X509_free(pool);
			pool = NULL;
		}
	}
	if (sk_X509_num(pool) <= 0) {
		sk_X509_free(pool);
		return NULL;
	}
	for (int i = 0; pool != NULL && i < sk_X509_num(sent); i++)
		if (!sk_X509_push(pool, sk_X509_value(sent, i))) {
			sk_X509_free(pool);
			pool = NULL;
		}
	x2 = X509_STORE_CTX_new();
	if (pool != NULL && x2 != NULL &&
	    X509_STORE_CTX_init(x2, X509_STORE_CTX_get0_store(xctx), X509_STORE_CTX_get0_cert(xctx),
				pool) == 1 &&
	    verify_setup(rq, x2) == 0) {
		X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(x2);

		/* the times are check_times()'s, each certificate at its own (see above) */
		X509_VERIFY_PARAM_clear_flags(param, X509_V_FLAG_USE_CHECK_TIME);
		X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_NO_CHECK_TIME);
		if (X509_verify_cert(x2) == 1)
			chain = X509_STORE_CTX_get1_chain(x2);
	}
	X509_STORE_CTX_free(x2);
	sk_X509_free(pool);
	ERR_clear_error();
	return chain;
}

/* Step 1: the path to the trust anchors, from the cache or verified now (through what the
 * peer sent, else own_path(): *rebuilt). NULL with run or err set if there is none. */
static STACK_OF(X509) * verified_path(const struct verify_request *rq, X509_STORE_CTX *xctx,
				      const uint8_t *key, time_t now, struct verify_run *run,
				      struct error *err, bool *cached, bool *rebuilt)
{
	X509 *leaf = X509_STORE_CTX_get0_cert(xctx);
	STACK_OF(X509) *chain = sk_X509_new_null();

	*cached = *rebuilt = false;
	if (chain == NULL || !X509_up_ref(leaf)) {
		sk_X509_free(chain);
		error_set(err, MTLS_REASON_INTERNAL, "out of memory");
		return NULL;
	}
	if (!sk_X509_push(chain, leaf)) {
		X509_free(leaf);
		sk_X509_free(chain);
		error_set(err, MTLS_REASON_INTERNAL, "out of memory");
		return NULL;
	}
	if (key != NULL && verify_cache_hit(rq->st->vcache, key, now, chain)) {
		*cached = true;
		return chain;
	}
	sk_X509_pop_free(chain, X509_free);
	run->sent = X509_STORE_CTX_get0_untrusted(xctx);
	X509_STORE_CTX_set_ex_data(xctx, run_index, run);
	X509_STORE_CTX_set_verify_cb(xctx, verify_cb);
	if (X509_verify_cert(xctx) != 1) {
		if (run->cert == NULL) {
			run->error = X509_STORE_CTX_get_error(xctx);
			run->depth = X509_STORE_CTX_get_error_depth(xctx);
			run->chain_len = sk_X509_num(X509_STORE_CTX_get0_chain(xctx));
			run->chain = X509_STORE_CTX_get1_chain(xctx);
			run->cert = X509_STORE_CTX_get_current_cert(xctx);
			if (run->cert == NULL)
				run->cert = leaf;
			if (X509_up_ref(run->cert) != 1)
				run->cert = NULL;
		}
		chain = own_path(rq, xctx);
		if (chain == NULL)
			return NULL; /* the first path's failure says what is wrong */
		*rebuilt = true;
		X509_free(run->cert);
		sk_X509_pop_free(run->chain, X509_free);
		*run = (struct verify_run){.rq = rq};
		X509_STORE_CTX_set_error(xctx, X509_V_OK);
	} else
		chain = X509_STORE_CTX_get1_chain(xctx);
	if (chain == NULL)
		error_set(err, MTLS_REASON_INTERNAL, "out of memory");
	else if (check_profile(rq, chain, err) != 0 || check_strength(rq, chain, err) != 0) {
		sk_X509_pop_free(chain, X509_free);
		chain = NULL;
	}
	return chain;
}

int verify_chain(const struct verify_request *rq, X509_STORE_CTX *xctx, struct mtls_peer **out,
		 struct error *err, char *warning, size_t warning_len)
{
	struct verify_run run = {.rq = rq}, found = {.rq = rq};
	struct mtls_peer *peer = NULL;
	STACK_OF(X509) *chain = NULL;
	bool keyed, cached, rebuilt;
	uint8_t key[32];
	time_t now, certs_at;
	X509 *leaf;
	int rc = -1;

	*out = NULL;
	error_clear(err);
	if (warning_len > 0)
		warning[0] = '\0';
	pthread_once(&run_index_once, run_index_init);
	if (run_index < 0 || verify_setup(rq, xctx) != 0) {
		error_set_ssl(err, MTLS_REASON_INTERNAL, "cannot set up verification");
		return -1;
	}
	leaf = X509_STORE_CTX_get0_cert(xctx);
	keyed = rq->st->vcache != NULL &&
		verify_cache_key(rq, leaf, X509_STORE_CTX_get0_untrusted(xctx), key) == 0;
	now = verify_now(rq);
	certs_at = rq->certs_at != 0 ? rq->certs_at : now;

	/* 1: the path (remembered or verified now) */
	chain = verified_path(rq, xctx, keyed ? key : NULL, certs_at, &run, err, &cached, &rebuilt);
	if (chain == NULL) {
		if (run.error != X509_V_OK)
			explain(rq, &run, err);
		goto reject;
	}
	/* a path through certificates the peer did not send is not remembered under the key of
	 * what it sent (a hit would not say which certificates are the peer's) */
	if (rebuilt)
		keyed = false;
	/* 2: what holds on that path now, every time */
	if (check_leaf(rq, leaf, err) != 0)
		goto reject;
	if (check_times(rq, chain, certs_at, rebuilt ? X509_STORE_CTX_get0_untrusted(xctx) : NULL,
			now, &found) != 0 ||
	    check_revocation(rq, chain, now, &found, warning, warning_len) != 0) {
		explain(rq, &found, err);
		goto reject;
	}
	peer = identity_from_cert(leaf, err);
	if (peer == NULL)
		goto reject;
	if (rq->uri != NULL && check_uri(rq, peer, err) != 0)
		goto reject;
	if (keyed && !cached && (warning_len == 0 || warning[0] == '\0')) {
		/* a chain accepted with a warning (CRL in its grace period) is not remembered:
		 * every handshake should carry the warning */
		time_t from, until;

		chain_window(rq, chain, &from, &until);
		verify_cache_put(rq->st->vcache, key, chain, from, until);
	}
	if (policy_check(rq->st->policy, peer, role_of(rq), err) != 0)
		goto reject;
	/* OCSP last: no answer is asked for a peer refused anyway; a client's full handshake
	 * decides it once the server's staple is known (verify_ocsp()) */
	if (rq->ocsp_out != NULL)
		*rq->ocsp_out = MTLS_OCSP_RESULT_NONE;
	if (!rq->ocsp_later && check_ocsp(rq, chain, now, &found, err, warning, warning_len) != 0)
		goto reject;
	if (rq->ocsp_later && rq->keep_chain != NULL) {
		*rq->keep_chain = chain;
		chain = NULL;
	}
	*out = peer;
	peer = NULL;
	error_clear(err);
	rc = 0;
	goto done;
reject:
	/* makes the handshake send a fitting alert: OpenSSL's own error if it found one, the
	 * X509 error of what we found (certificate_revoked, certificate_expired, ...), or
	 * the application's refusal */
	if (run.error == X509_V_OK)
		X509_STORE_CTX_set_error(xctx, found.error != X509_V_OK
						       ? found.error
						       : X509_V_ERR_APPLICATION_VERIFICATION);
	if (err->reason == MTLS_REASON_NONE)
		error_set(err, MTLS_REASON_INTERNAL, "verification failed");
done:
	/* a warning is about an accepted chain only */
	if (rc != 0 && warning_len > 0)
		warning[0] = '\0';
	X509_STORE_CTX_set_ex_data(xctx, run_index, NULL);
	identity_free(peer);
	sk_X509_pop_free(chain, X509_free);
	X509_free(run.cert);
	sk_X509_pop_free(run.chain, X509_free);
	ERR_clear_error();
	return rc;
}

int verify_resumed(const struct verify_request *rq, X509 *leaf, STACK_OF(X509) * chain,
		   struct mtls_peer **out, struct error *err)
{
	X509_STORE_CTX *xctx = X509_STORE_CTX_new();
	STACK_OF(X509) *sent = NULL;
	char warning[256];
	int rc = -1;

	*out = NULL;
	/* what the peer sent, leaf first, as a handshake's verification sees it (and the
	 * cache keys it): a client's session keeps the leaf in its peer chain, a server's
	 * does not */
	if (sk_X509_num(chain) > 0 && X509_cmp(sk_X509_value(chain, 0), leaf) == 0)
		sent = sk_X509_dup(chain);
	else if ((sent = sk_X509_new_reserve(NULL, sk_X509_num(chain) + 1)) != NULL) {
		sk_X509_push(sent, leaf);
		for (int i = 0; i < sk_X509_num(chain); i++)
			sk_X509_push(sent, sk_X509_value(chain, i));
	}
	if (xctx == NULL || sent == NULL ||
	    X509_STORE_CTX_init(xctx, rq->st->store, leaf, sent) != 1) {
		error_set_ssl(err, MTLS_REASON_INTERNAL, "cannot set up verification");
		goto out;
	}
	/* the warning of a resumed handshake is not reported: the full one that made the
	 * session reported it */
	rc = verify_chain(rq, xctx, out, err, warning, sizeof(warning));
out:
	X509_STORE_CTX_free(xctx);
	sk_X509_free(sent);
	return rc;
}

int verify_no_certificate(const struct verify_request *rq, struct error *err)
{
	if (rq->peer_is_client && rq->st->server &&
	    (rq->st->config->insecure & INSECURE_OPTIONAL_CLIENT_CERT))
		return 0;
	return error_set(err, MTLS_REASON_NO_CERTIFICATE,
			 "the %s presented no certificate; configure it with a certificate and "
			 "key issued by the trusted CA",
			 role_of(rq));
}

int verify_audit(const struct verify_request *rq, X509 *leaf, struct error *err,
		 struct error *would, struct mtls_peer **peer)
{
	struct error scratch;
	struct mtls_peer *p;

	if (!rq->peer_is_client || !rq->st->server ||
	    !(rq->st->config->insecure & INSECURE_AUDIT) || leaf == NULL ||
	    err->reason == MTLS_REASON_NONE || err->reason == MTLS_REASON_INTERNAL ||
	    err->reason == MTLS_REASON_USAGE)
		return -1;
	error_clear(&scratch);
	p = identity_from_cert(leaf, &scratch);
	if (p == NULL)
		return -1; /* no identity to forward it under: the refusal stands */
	*would = *err;
	error_clear(err);
	identity_free(*peer);
	*peer = p;
	return 0;
}
