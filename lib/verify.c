/*
 * Certificate chain verification: the one path used by handshakes (as OpenSSL's cert
 * verify callback) and by mtls_verify_chain_pem() / `mtls verify`.
 *
 * OpenSSL's X509_verify_cert() checks the chain to the configured roots, validity, CRLs,
 * purpose and name; a verify callback records the first failure (and applies the CRL grace
 * period). Then we check what OpenSSL leaves lenient: an extendedKeyUsage must be present
 * and allow the role, keys must be strong, no SHA-1/MD5 signatures. Then the allow rules.
 */
#include <arpa/inet.h>
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
	X509_CRL *crl;
	char *warning;
	size_t warning_len;
};

static int run_index = -1;
static pthread_once_t run_index_once = PTHREAD_ONCE_INIT;

static void run_index_init(void)
{
	run_index = X509_STORE_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static time_t verify_now(const struct verify_request *rq)
{
	return rq->st->config->verify_time != 0 ? rq->st->config->verify_time : time(NULL);
}

static int verify_cb(int ok, X509_STORE_CTX *xctx)
{
	struct verify_run *run = X509_STORE_CTX_get_ex_data(xctx, run_index);
	int e = X509_STORE_CTX_get_error(xctx);

	if (ok || run == NULL)
		return ok;
	if (e == X509_V_ERR_CRL_HAS_EXPIRED && run->rq->st->config->crl_grace > 0) {
		X509_CRL *crl = X509_STORE_CTX_get0_current_crl(xctx);
		time_t next = crl != NULL ? error_asn1_time(X509_CRL_get0_nextUpdate(crl)) : 0;
		char when[32];

		if (next != 0 && verify_now(run->rq) <= next + run->rq->st->config->crl_grace) {
			snprintf(run->warning, run->warning_len,
				 "CRL of %s expired at %s, accepted within the grace period; "
				 "publish a fresh CRL",
				 crl != NULL ? "the issuer" : "?",
				 error_time(next, when, sizeof(when)));
			X509_STORE_CTX_set_error(xctx, X509_V_OK);
			return 1;
		}
	}
	if (run->cert == NULL) {
		X509 *cert = X509_STORE_CTX_get_current_cert(xctx);
		X509_CRL *crl = X509_STORE_CTX_get0_current_crl(xctx);

		run->error = e;
		run->depth = X509_STORE_CTX_get_error_depth(xctx);
		run->chain_len = sk_X509_num(X509_STORE_CTX_get0_chain(xctx));
		run->chain = X509_STORE_CTX_get1_chain(xctx);
		if (cert != NULL && X509_up_ref(cert))
			run->cert = cert;
		if (crl != NULL && X509_CRL_up_ref(crl))
			run->crl = crl;
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
	unsigned long flags = 0;

	if (c->ncrls > 0)
		flags |= X509_V_FLAG_CRL_CHECK |
			 (c->crl_check_chain ? X509_V_FLAG_CRL_CHECK_ALL : 0);
	/* RFC 5280's profile as far as OpenSSL checks it; strict.c does the rest */
	X509_VERIFY_PARAM_set_flags(param,
				    flags | X509_V_FLAG_TRUSTED_FIRST | X509_V_FLAG_X509_STRICT);
	X509_VERIFY_PARAM_clear_flags(param,
				      X509_V_FLAG_PARTIAL_CHAIN | X509_V_FLAG_ALLOW_PROXY_CERTS);
	X509_VERIFY_PARAM_set_depth(param, c->verify_depth);
	X509_VERIFY_PARAM_set_auth_level(param, 2);
	if (c->verify_time != 0)
		X509_VERIFY_PARAM_set_time(param, c->verify_time);
	if (X509_STORE_CTX_set_purpose(xctx, rq->peer_is_client ? X509_PURPOSE_SSL_CLIENT
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

static enum mtls_reason reason_of(const struct verify_run *run)
{
	/* the peer sent its leaf alone, and its issuer is not in the trust store: most likely
	 * a chain file without the intermediate, not a certificate from another CA */
	if (run->error == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY && run->depth == 0 &&
	    run->chain_len == 1 && run->cert != NULL &&
	    !(X509_get_extension_flags(run->cert) & EXFLAG_SI))
		return MTLS_REASON_ISSUER_NOT_SENT;
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
			  error_time(error_asn1_time(X509_get0_notAfter(run->cert)), when,
				     sizeof(when)),
			  who);
		break;
	case MTLS_REASON_NOT_YET_VALID:
		error_set(
			err, reason,
			"%s %s rejected: not valid before %s (%s); check the clocks of both hosts",
			role, which,
			error_time(error_asn1_time(X509_get0_notBefore(run->cert)), when,
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
		error_set(
			err, reason,
			"%s %s rejected: the CRL of %s is past its nextUpdate %s; publish a fresh "
			"CRL (or set a CRL grace period)",
			role, which, issuer[0] ? issuer : "its issuer",
			run->crl != NULL
				? error_time(error_asn1_time(X509_CRL_get0_nextUpdate(run->crl)),
					     when, sizeof(when))
				: "?");
		break;
	case MTLS_REASON_CRL_MISSING:
		error_set(err, reason,
			  "%s %s rejected: revocation checking is on but no valid CRL of %s is "
			  "configured (%s); add that issuer's CRL",
			  role, which, issuer[0] ? issuer : "its issuer", who);
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

	if (strict_leaf(leaf, rq->peer_is_client, &f) != 0)
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

/* Is a certificate listed in a CRL of its issuer? 0 no, -1 refused with err. */
static int check_cert_crl(const struct verify_request *rq, X509 *leaf, time_t now,
			  struct error *err)
{
	X509_STORE_CTX *xctx = X509_STORE_CTX_new();
	STACK_OF(X509_CRL) *crls = NULL;
	char who[300], when[32];
	bool found = false;
	int rc = 0;

	identity_describe(leaf, who, sizeof(who));
	if (xctx == NULL || X509_STORE_CTX_init(xctx, rq->st->store, leaf, NULL) != 1) {
		X509_STORE_CTX_free(xctx);
		return error_set_ssl(err, MTLS_REASON_INTERNAL, "cannot look up CRLs");
	}
	crls = X509_STORE_CTX_get1_crls(xctx, X509_get_issuer_name(leaf));
	for (int i = 0; i < sk_X509_CRL_num(crls) && rc == 0; i++) {
		X509_CRL *crl = sk_X509_CRL_value(crls, i);
		X509_REVOKED *entry = NULL;
		time_t next = error_asn1_time(X509_CRL_get0_nextUpdate(crl));

		found = true;
		if (X509_CRL_get0_by_cert(crl, &entry, leaf) == 1)
			rc = error_set(err, MTLS_REASON_REVOKED,
				       "%s certificate rejected: revoked by its issuer's CRL (%s); "
				       "issue a new certificate",
				       role_of(rq), who);
		else if (next != 0 && now > next + rq->st->config->crl_grace)
			rc = error_set(err, MTLS_REASON_CRL_EXPIRED,
				       "%s certificate rejected: the CRL of its issuer is past its "
				       "nextUpdate %s; publish a fresh CRL",
				       role_of(rq), error_time(next, when, sizeof(when)));
	}
	if (rc == 0 && !found)
		rc = error_set(err, MTLS_REASON_CRL_MISSING,
			       "%s certificate rejected: revocation checking is on but no CRL of "
			       "its issuer is configured (%s); add that issuer's CRL",
			       role_of(rq), who);
	sk_X509_CRL_pop_free(crls, X509_CRL_free);
	X509_STORE_CTX_free(xctx);
	return rc;
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
		time_t nb = error_asn1_time(X509_get0_notBefore(cert));
		time_t na = error_asn1_time(X509_get0_notAfter(cert));

		if (nb > *from)
			*from = nb;
		if (na < *until)
			*until = na;
	}
}

int verify_chain(const struct verify_request *rq, X509_STORE_CTX *xctx, struct mtls_peer **out,
		 struct error *err, char *warning, size_t warning_len)
{
	struct verify_run run = {.rq = rq, .warning = warning, .warning_len = warning_len};
	struct mtls_peer *peer = NULL;
	bool keyed, cached = false;
	uint8_t key[32];
	time_t now;
	X509 *leaf;
	int rc = -1;

	*out = NULL;
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
	if (keyed && verify_cache_hit(rq->st->vcache, key, now)) {
		/* the chain verified before, and it still does; revocation once more */
		if (rq->st->config->ncrls > 0 && check_cert_crl(rq, leaf, now, err) != 0)
			goto reject;
		cached = true;
		goto authorize;
	}
	X509_STORE_CTX_set_ex_data(xctx, run_index, &run);
	X509_STORE_CTX_set_verify_cb(xctx, verify_cb);
	if (X509_verify_cert(xctx) != 1) {
		if (run.cert == NULL) {
			run.error = X509_STORE_CTX_get_error(xctx);
			run.depth = X509_STORE_CTX_get_error_depth(xctx);
			run.chain_len = sk_X509_num(X509_STORE_CTX_get0_chain(xctx));
			run.chain = X509_STORE_CTX_get1_chain(xctx);
			run.cert = X509_STORE_CTX_get_current_cert(xctx);
			if (run.cert == NULL)
				run.cert = X509_STORE_CTX_get0_cert(xctx);
			if (run.cert != NULL && X509_up_ref(run.cert) != 1)
				run.cert = NULL;
		}
		explain(rq, &run, err);
		goto done;
	}
	if (check_profile(rq, X509_STORE_CTX_get0_chain(xctx), err) != 0 ||
	    check_strength(rq, X509_STORE_CTX_get0_chain(xctx), err) != 0)
		goto reject;
authorize:
	if (check_leaf(rq, leaf, err) != 0)
		goto reject;
	peer = identity_from_cert(leaf, err);
	if (peer == NULL)
		goto reject;
	if (rq->uri != NULL && check_uri(rq, peer, err) != 0)
		goto reject;
	if (keyed && !cached && (warning_len == 0 || warning[0] == '\0')) {
		/* a chain accepted with a warning (CRL in its grace period) is not remembered:
		 * every handshake should carry the warning */
		time_t from, until;

		chain_window(rq, X509_STORE_CTX_get0_chain(xctx), &from, &until);
		verify_cache_put(rq->st->vcache, key, from, until);
	}
	if (policy_check(rq->st->policy, peer, role_of(rq), err) != 0)
		goto reject;
	*out = peer;
	peer = NULL;
	error_clear(err);
	rc = 0;
	goto done;
reject:
	/* makes the handshake send a bad_certificate alert */
	X509_STORE_CTX_set_error(xctx, X509_V_ERR_APPLICATION_VERIFICATION);
done:
	/* a warning is about an accepted chain only */
	if (rc != 0 && warning_len > 0)
		warning[0] = '\0';
	X509_STORE_CTX_set_ex_data(xctx, run_index, NULL);
	identity_free(peer);
	X509_free(run.cert);
	sk_X509_pop_free(run.chain, X509_free);
	X509_CRL_free(run.crl);
	ERR_clear_error();
	return rc;
}

int verify_resumed(const struct verify_request *rq, X509 *leaf, STACK_OF(X509) * chain,
		   struct mtls_peer **out, struct error *err)
{
	const struct mtls_config *c = rq->st->config;
	time_t now = verify_now(rq);
	struct mtls_peer *peer = NULL;
	char who[300], when[32];
	int rc = -1;

	*out = NULL;
	if (check_leaf(rq, leaf, err) != 0)
		return -1;
	if (X509_cmp_time(X509_get0_notAfter(leaf), &now) < 0) {
		identity_describe(leaf, who, sizeof(who));
		return error_set(
			err, MTLS_REASON_EXPIRED,
			"%s certificate rejected: expired at %s (%s); renew it", role_of(rq),
			error_time(error_asn1_time(X509_get0_notAfter(leaf)), when, sizeof(when)),
			who);
	}
	if (c->ncrls > 0 && check_cert_crl(rq, leaf, now, err) != 0)
		return -1;
	for (int i = 0; i < sk_X509_num(chain); i++) {
		X509 *cert = sk_X509_value(chain, i);

		if (X509_cmp(cert, leaf) == 0)
			continue;
		if (X509_cmp_time(X509_get0_notAfter(cert), &now) < 0) {
			identity_describe(cert, who, sizeof(who));
			return error_set(
				err, MTLS_REASON_EXPIRED,
				"%s certificate chain rejected: %s expired at %s; renew it",
				role_of(rq), who,
				error_time(error_asn1_time(X509_get0_notAfter(cert)), when,
					   sizeof(when)));
		}
		/* the trust anchor has no CRL above it */
		if (c->ncrls > 0 && c->crl_check_chain &&
		    !(X509_get_extension_flags(cert) & EXFLAG_SS) &&
		    check_cert_crl(rq, cert, now, err) != 0)
			return -1;
	}
	if (rq->name != NULL && rq->name[0] != '\0') {
		unsigned flags =
			X509_CHECK_FLAG_NEVER_CHECK_SUBJECT | X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS;
		int ok = is_ip(rq->name) ? X509_check_ip_asc(leaf, rq->name, flags)
					 : X509_check_host(leaf, rq->name, 0, flags, NULL);

		if (ok != 1) {
			identity_describe(leaf, who, sizeof(who));
			return error_set(err, MTLS_REASON_NAME_MISMATCH,
					 "server certificate rejected: it is not valid for %s (%s)",
					 rq->name, who);
		}
	}
	peer = identity_from_cert(leaf, err);
	if (peer == NULL)
		return -1;
	if (policy_check(rq->st->policy, peer, role_of(rq), err) == 0) {
		*out = peer;
		peer = NULL;
		rc = 0;
	}
	identity_free(peer);
	ERR_clear_error();
	return rc;
}
