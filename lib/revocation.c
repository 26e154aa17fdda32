/*
 * Revocation: the CRLs of a state, validated once when the state is built, and the
 * revocation status of a verified chain, decided by revocation_check() on every path (full
 * handshake, verification cache hit, resumed session, mtls verify). OpenSSL's own CRL
 * checks are not used: they ran on full verifications only, and a cache hit or a resumed
 * session then had to be judged by different code.
 *
 * At state build, revocation_load() refuses (crl_invalid) a CRL that
 *   - has no CRL number (the strict profile, RFC 5280 5.2.3);
 *   - is a delta CRL, an indirect CRL, or is partitioned by reason or to attribute
 *     certificates (onlySomeReasons, onlyContainsAttributeCerts): scopes we do not honour;
 *   - covers only CA certificates while only leaves are checked (no --crl-check-chain);
 *   - carries a critical extension we do not know, on itself or on an entry;
 *   - names as its issuer a CA certificate of the bundle but does not verify with it (a
 *     forgery, or another key), or whose issuer may not sign CRLs (keyUsage without
 *     cRLSign).
 * A CRL whose issuer is not in the bundle (an intermediate that peers send) cannot be
 * verified yet: it is verified against that intermediate, as found in a verified chain,
 * when a chain first needs it, and the result is remembered.
 *
 * A certificate's CRLs are those in its issuer's name that verify with the issuer of the
 * verified chain and whose scope (issuingDistributionPoint: user or CA certificates, the
 * distribution point) covers it. Listed in any of them: revoked. None: crl_missing. None
 * within its validity: crl_expired, or accepted with a warning within the grace period.
 *
 * The table is kept in the trust store's ex data, so it lives and dies with the state.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "internal.h"

struct crl_entry {
	X509_CRL *crl;
	ISSUING_DIST_POINT *idp; /* decoded, with its dpname set; NULL if none */
	X509 *signer; /* the bundle's CA it verified with; NULL: issuer not in the bundle */
	/* for an issuer outside the bundle: the certificates it did and did not verify with
	 * (referenced; under the table's lock) */
	X509 *verified_with;
	X509 *failed_with;
};

struct crl_table {
	pthread_mutex_t lock;
	size_t n;
	struct crl_entry *v;
};

static int table_index = -1;
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void table_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	struct crl_table *t = ptr;

	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->n; i++) {
		X509_CRL_free(t->v[i].crl);
		ISSUING_DIST_POINT_free(t->v[i].idp);
		X509_free(t->v[i].signer);
		X509_free(t->v[i].verified_with);
		X509_free(t->v[i].failed_with);
	}
	free(t->v);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

static void table_index_init(void)
{
	table_index = X509_STORE_get_ex_new_index(0, NULL, NULL, NULL, table_free);
}

static struct crl_table *table_of(X509_STORE *store)
{
	pthread_once(&table_once, table_index_init);
	return table_index >= 0 ? X509_STORE_get_ex_data(store, table_index) : NULL;
}

/* --- validation at load ---------------------------------------------------------------- */

enum crl_problem {
	CRL_OK,
	CRL_NO_NUMBER,
	CRL_DELTA,
	CRL_INDIRECT,
	CRL_SOME_REASONS,
	CRL_ATTRIBUTE_CERTS,
	CRL_ONLY_CA_UNUSED,
	CRL_CRITICAL_EXTENSION,
	CRL_FORGED,
	CRL_SIGNER_NOT_CRL_SIGN,
};

static bool known_crl_extension(int nid)
{
	return nid == NID_crl_number || nid == NID_authority_key_identifier ||
	       nid == NID_issuing_distribution_point || nid == NID_issuer_alt_name;
}

static bool known_entry_extension(int nid)
{
	return nid == NID_crl_reason || nid == NID_invalidity_date;
}

static enum crl_problem crl_scope_problem(X509_CRL *crl, const ISSUING_DIST_POINT *idp,
					  bool chain_checked)
{
	const STACK_OF(X509_EXTENSION) *exts = X509_CRL_get0_extensions(crl);
	STACK_OF(X509_REVOKED) *entries = X509_CRL_get_REVOKED(crl);
	ASN1_INTEGER *number = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);

	if (number == NULL)
		return CRL_NO_NUMBER;
	ASN1_INTEGER_free(number);
	if (X509_CRL_get_ext_by_NID(crl, NID_delta_crl, -1) >= 0)
		return CRL_DELTA;
	if (idp != NULL) {
		if (idp->indirectCRL)
			return CRL_INDIRECT;
		if (idp->onlysomereasons != NULL)
			return CRL_SOME_REASONS;
		if (idp->onlyattr)
			return CRL_ATTRIBUTE_CERTS;
		if (idp->onlyCA && !chain_checked)
			return CRL_ONLY_CA_UNUSED;
	}
	for (int i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
		X509_EXTENSION *e = sk_X509_EXTENSION_value(exts, i);

		if (X509_EXTENSION_get_critical(e) &&
		    !known_crl_extension(OBJ_obj2nid(X509_EXTENSION_get_object(e))))
			return CRL_CRITICAL_EXTENSION;
	}
	for (int i = 0; i < sk_X509_REVOKED_num(entries); i++) {
		const STACK_OF(X509_EXTENSION) *ee =
			X509_REVOKED_get0_extensions(sk_X509_REVOKED_value(entries, i));

		for (int j = 0; j < sk_X509_EXTENSION_num(ee); j++) {
			X509_EXTENSION *e = sk_X509_EXTENSION_value(ee, j);
			int nid = OBJ_obj2nid(X509_EXTENSION_get_object(e));

			/* a certificateIssuer entry makes the CRL indirect */
			if (nid == NID_certificate_issuer)
				return CRL_INDIRECT;
			if (X509_EXTENSION_get_critical(e) && !known_entry_extension(nid))
				return CRL_CRITICAL_EXTENSION;
		}
	}
	return CRL_OK;
}

static bool may_sign_crls(X509 *ca)
{
	return !(X509_get_extension_flags(ca) & EXFLAG_KUSAGE) ||
	       (X509_get_key_usage(ca) & KU_CRL_SIGN);
}

/* The bundle's CA certificate named as the CRL's issuer that signed it: 0 and *signer
 * (NULL if the bundle has none of that name), or a problem. */
static enum crl_problem find_signer(X509_STORE *store, X509_CRL *crl, X509 **signer, X509 **named)
{
	STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(store);
	enum crl_problem problem = CRL_OK;

	*signer = *named = NULL;
	for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
		X509 *ca = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));

		if (ca == NULL ||
		    X509_NAME_cmp(X509_get_subject_name(ca), X509_CRL_get_issuer(crl)))
			continue;
		*named = ca;
		if (X509_CRL_verify(crl, X509_get0_pubkey(ca)) != 1) {
			problem = CRL_FORGED;
			continue;
		}
		if (!may_sign_crls(ca)) {
			problem = CRL_SIGNER_NOT_CRL_SIGN;
			continue;
		}
		*signer = ca;
		ERR_clear_error();
		return CRL_OK;
	}
	ERR_clear_error();
	return problem;
}

static int crl_explain(enum crl_problem p, const char *origin, X509_CRL *crl, X509 *named,
		       struct error *err)
{
	char issuer[256] = "", who[300] = "";
	BIO *bio = BIO_new(BIO_s_mem());
	char *data = NULL;
	long n;
	const char *why;

	if (bio != NULL &&
	    X509_NAME_print_ex(bio, X509_CRL_get_issuer(crl), 0, XN_FLAG_RFC2253) >= 0) {
		n = BIO_get_mem_data(bio, &data);
		snprintf(issuer, sizeof(issuer), "%.*s", (int)(n > 0 ? n : 0),
			 data != NULL ? data : "");
	}
	BIO_free(bio);
	if (named != NULL)
		identity_describe(named, who, sizeof(who));
	switch (p) {
	case CRL_NO_NUMBER:
		why = "it has no CRL number (RFC 5280 5.2.3); publish it with one (mtls ca crl "
		      "does)";
		break;
	case CRL_DELTA: why = "it is a delta CRL, which is not supported; give the full CRL"; break;
	case CRL_INDIRECT:
		why = "it is an indirect CRL (entries for another issuer's certificates), which is "
		      "not supported; give each CA's own CRL";
		break;
	case CRL_SOME_REASONS:
		why = "it covers only some revocation reasons (onlySomeReasons), which is not "
		      "supported; give a CRL for all reasons";
		break;
	case CRL_ATTRIBUTE_CERTS:
		why = "it covers attribute certificates only; give the CRL for the CA's "
		      "certificates";
		break;
	case CRL_ONLY_CA_UNUSED:
		why = "it covers only CA certificates (onlyContainsCACerts) but only peers' own "
		      "certificates are checked; turn on CRL checks of the whole chain or give "
		      "the CRL for end entities";
		break;
	case CRL_CRITICAL_EXTENSION:
		why = "it carries a critical extension that is not understood; give a CRL "
		      "without it";
		break;
	case CRL_FORGED:
		return error_set(
			err, MTLS_REASON_CRL_INVALID,
			"CRL %s (issuer %s) does not verify with the CA certificate of that "
			"name in the CA bundle (%s): it is forged or signed by another key; "
			"give the CRL that CA published",
			origin, issuer, who);
	case CRL_SIGNER_NOT_CRL_SIGN:
		return error_set(
			err, MTLS_REASON_CRL_INVALID,
			"CRL %s (issuer %s) is signed by a CA whose keyUsage does not allow "
			"cRLSign (%s); reissue that CA with cRLSign",
			origin, issuer, who);
	default: why = "it is not acceptable"; break;
	}
	return error_set(err, MTLS_REASON_CRL_INVALID, "CRL %s (issuer %s) refused: %s", origin,
			 issuer, why);
}

/* The store's copy of a CRL that load_trust() added (so that it is kept once). */
static X509_CRL *stored_copy(X509_STORE *store, X509_CRL *crl)
{
	STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(store);

	for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
		X509_CRL *c = X509_OBJECT_get0_X509_CRL(sk_X509_OBJECT_value(objs, i));

		if (c != NULL && X509_CRL_match(c, crl) == 0 && X509_CRL_up_ref(c))
			return c;
	}
	return X509_CRL_up_ref(crl) ? crl : NULL;
}

static int load_one(struct state *st, struct crl_table *t, X509_CRL *crl, const char *origin,
		    struct error *err)
{
	struct crl_entry *e;
	ISSUING_DIST_POINT *idp =
		X509_CRL_get_ext_d2i(crl, NID_issuing_distribution_point, NULL, NULL);
	X509 *signer = NULL, *named = NULL;
	enum crl_problem p = crl_scope_problem(crl, idp, st->config->crl_check_chain);
	void *grown;

	if (p == CRL_OK)
		p = find_signer(st->store, crl, &signer, &named);
	if (p != CRL_OK) {
		ISSUING_DIST_POINT_free(idp);
		return crl_explain(p, origin, crl, named, err);
	}
	if (idp != NULL && idp->distpoint != NULL &&
	    DIST_POINT_set_dpname(idp->distpoint, X509_CRL_get_issuer(crl)) != 1) {
		ISSUING_DIST_POINT_free(idp);
		return error_set_ssl(err, MTLS_REASON_INTERNAL, "cannot read the CRL's scope");
	}
	grown = realloc(t->v, (t->n + 1) * sizeof(*t->v));
	if (grown == NULL) {
		ISSUING_DIST_POINT_free(idp);
		return error_set(err, MTLS_REASON_INTERNAL, "out of memory");
	}
	t->v = grown;
	e = &t->v[t->n];
	memset(e, 0, sizeof(*e));
	e->crl = stored_copy(st->store, crl);
	e->idp = idp;
	if (signer != NULL && X509_up_ref(signer))
		e->signer = signer;
	if (e->crl == NULL) {
		ISSUING_DIST_POINT_free(idp);
		X509_free(e->signer);
		return error_set(err, MTLS_REASON_INTERNAL, "out of memory");
	}
	t->n++;
	return 0;
}

int revocation_load(struct state *st, struct error *err)
{
	const struct mtls_config *c = st->config;
	struct crl_table *t;

	if (c->ncrls == 0)
		return 0;
	pthread_once(&table_once, table_index_init);
	t = calloc(1, sizeof(*t));
	if (table_index < 0 || t == NULL) {
		free(t);
		return error_set(err, MTLS_REASON_INTERNAL, "out of memory");
	}
	pthread_mutex_init(&t->lock, NULL);
	if (X509_STORE_set_ex_data(st->store, table_index, t) != 1) {
		table_free(NULL, t, NULL, 0, 0, NULL);
		return error_set(err, MTLS_REASON_INTERNAL, "out of memory");
	}
	/* read again from the config, to name the file a refused CRL came from */
	for (size_t i = 0; i < c->ncrls; i++) {
		BIO *bio = BIO_new_mem_buf(c->crls[i].data, (int)c->crls[i].len);
		X509_CRL *crl;
		int rc = 0;

		if (bio == NULL)
			return error_set(err, MTLS_REASON_INTERNAL, "out of memory");
		while (rc == 0 && (crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL)) != NULL) {
			rc = load_one(st, t, crl, c->crls[i].origin, err);
			X509_CRL_free(crl);
		}
		BIO_free(bio);
		ERR_clear_error();
		if (rc != 0)
			return -1;
	}
	return 0;
}

/* --- the decision ---------------------------------------------------------------------- */

/* Does the distribution point a of a certificate name the same as the CRL's b? (RFC 5280
 * 6.3.3 b.2.i, as OpenSSL's idp_check_dp() reads it: full names share one, or a relative
 * name's full DN is among the other's directory names.) */
static bool same_point(const DIST_POINT_NAME *a, const DIST_POINT_NAME *b)
{
	const GENERAL_NAMES *gens;
	const X509_NAME *nm;

	if (a == NULL || b == NULL)
		return true;
	if (a->type == 1 && b->type == 1)
		return a->dpname != NULL && b->dpname != NULL &&
		       X509_NAME_cmp(a->dpname, b->dpname) == 0;
	if (a->type == 1 || b->type == 1) {
		nm = a->type == 1 ? a->dpname : b->dpname;
		gens = a->type == 1 ? b->name.fullname : a->name.fullname;
		for (int i = 0; nm != NULL && i < sk_GENERAL_NAME_num(gens); i++) {
			const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);

			if (g->type == GEN_DIRNAME && X509_NAME_cmp(g->d.directoryName, nm) == 0)
				return true;
		}
		return false;
	}
	for (int i = 0; i < sk_GENERAL_NAME_num(a->name.fullname); i++)
		for (int j = 0; j < sk_GENERAL_NAME_num(b->name.fullname); j++)
			if (GENERAL_NAME_cmp(sk_GENERAL_NAME_value(a->name.fullname, i),
					     sk_GENERAL_NAME_value(b->name.fullname, j)) == 0)
				return true;
	return false;
}

/* Is cert within the scope of the CRL (RFC 5280 6.3.3 b)? */
static bool covers(const struct crl_entry *e, X509 *cert)
{
	bool ca = (X509_get_extension_flags(cert) & EXFLAG_CA) != 0;
	CRL_DIST_POINTS *dps;
	bool in = false;

	if (e->idp != NULL && ((e->idp->onlyuser && ca) || (e->idp->onlyCA && !ca)))
		return false;
	dps = X509_get_ext_d2i(cert, NID_crl_distribution_points, NULL, NULL);
	if (dps == NULL)
		return e->idp == NULL || e->idp->distpoint == NULL;
	for (int i = 0; i < sk_DIST_POINT_num(dps) && !in; i++) {
		DIST_POINT *dp = sk_DIST_POINT_value(dps, i);

		if (dp->CRLissuer != NULL)
			continue; /* served by an indirect CRL, which we do not load */
		if (e->idp == NULL || e->idp->distpoint == NULL) {
			in = true;
		} else if (dp->distpoint != NULL &&
			   DIST_POINT_set_dpname(dp->distpoint, X509_get_issuer_name(cert)) == 1) {
			in = same_point(dp->distpoint, e->idp->distpoint);
		}
	}
	sk_DIST_POINT_pop_free(dps, DIST_POINT_free);
	return in;
}

enum signed_by { SIGNED, NOT_SIGNED, SIGNER_NOT_CRL_SIGN };

/* Was the CRL signed by issuer (the certificate above the one checked, in a verified
 * chain), which may sign CRLs? Whether the signature verifies is remembered per CRL for the
 * last issuer it did and did not verify with. */
static enum signed_by signed_by(struct crl_table *t, struct crl_entry *e, X509 *issuer)
{
	bool ok = false, known = false;

	if (e->signer != NULL) { /* the same CA, or one with its name and key */
		ok = X509_cmp(e->signer, issuer) == 0 ||
		     EVP_PKEY_eq(X509_get0_pubkey(e->signer), X509_get0_pubkey(issuer)) == 1;
		return ok ? SIGNED : NOT_SIGNED;
	}
	pthread_mutex_lock(&t->lock);
	if (e->verified_with != NULL && X509_cmp(e->verified_with, issuer) == 0)
		known = ok = true;
	else if (e->failed_with != NULL && X509_cmp(e->failed_with, issuer) == 0)
		known = true;
	pthread_mutex_unlock(&t->lock);
	if (!known) {
		ok = X509_CRL_verify(e->crl, X509_get0_pubkey(issuer)) == 1;
		ERR_clear_error();
		if (X509_up_ref(issuer)) {
			X509 **slot = ok ? &e->verified_with : &e->failed_with;

			pthread_mutex_lock(&t->lock);
			X509_free(*slot);
			*slot = issuer;
			pthread_mutex_unlock(&t->lock);
		}
	}
	/* a CRL from a CA without cRLSign counts for nothing (RFC 5280 4.2.1.3), but it is
	 * no forgery: the message says which it is */
	return !ok ? NOT_SIGNED : may_sign_crls(issuer) ? SIGNED : SIGNER_NOT_CRL_SIGN;
}

/* One certificate against the CRLs of its issuer. */
static int check_cert(const struct state *st, struct crl_table *t, X509 *cert, X509 *issuer,
		      int depth, time_t now, struct revocation_finding *f)
{
	const X509_NAME *name = X509_get_issuer_name(cert);
	struct crl_entry *fresh = NULL, *graced = NULL, *stale = NULL, *early = NULL;
	int forged = 0, out_of_scope = 0, no_crl_sign = 0;

	for (size_t i = 0; t != NULL && i < t->n; i++) {
		struct crl_entry *e = &t->v[i];
		X509_REVOKED *entry = NULL;
		time_t last, next;

		if (X509_NAME_cmp(X509_CRL_get_issuer(e->crl), name) != 0)
			continue;
		switch (signed_by(t, e, issuer)) {
		case SIGNED: break;
		case NOT_SIGNED: forged++; continue;
		case SIGNER_NOT_CRL_SIGN: no_crl_sign++; continue;
		}
		if (!covers(e, cert)) {
			out_of_scope++;
			continue;
		}
		/* a listed certificate is revoked whatever the CRL's age ("removeFromCRL"
		 * entries, 2, belong to delta CRLs, which are not loaded) */
		if (X509_CRL_get0_by_cert(e->crl, &entry, cert) == 1) {
			f->status = REVOCATION_REVOKED;
			f->crl = e->crl;
			goto found;
		}
		last = certfields_time(X509_CRL_get0_lastUpdate(e->crl));
		next = X509_CRL_get0_nextUpdate(e->crl) != NULL
			       ? certfields_time(X509_CRL_get0_nextUpdate(e->crl))
			       : 0;
		if (last > now)
			early = e;
		else if (next == 0 || now <= next)
			fresh = e;
		else if (now <= next + st->config->crl_grace)
			graced = e;
		else
			stale = e;
	}
	if (fresh != NULL)
		return 0;
	if (graced != NULL) {
		f->status = REVOCATION_GRACE;
		f->crl = graced->crl;
		f->depth = depth;
		f->cert = cert;
		return 0;
	}
	if (stale != NULL || early != NULL) {
		f->status = REVOCATION_EXPIRED;
		f->crl = stale != NULL ? stale->crl : early->crl;
		f->not_yet_valid = stale == NULL;
		goto found;
	}
	f->status = REVOCATION_MISSING;
	f->forged = forged;
	f->out_of_scope = out_of_scope;
	f->no_crl_sign = no_crl_sign;
found:
	f->depth = depth;
	f->cert = cert;
	return -1;
}

int revocation_check(const struct state *st, STACK_OF(X509) * chain, time_t now,
		     struct revocation_finding *f)
{
	struct crl_table *t;
	int n = sk_X509_num(chain), last;
	struct revocation_finding grace = {0};

	memset(f, 0, sizeof(*f));
	if (st->config->ncrls == 0)
		return 0;
	t = table_of(st->store);
	/* the leaf; with chain checks every certificate but the trust anchor, which has
	 * nothing above it to revoke it */
	last = st->config->crl_check_chain ? n - 1 : (n > 1 ? 1 : 0);
	for (int i = 0; i < last; i++) {
		if (check_cert(st, t, sk_X509_value(chain, i), sk_X509_value(chain, i + 1), i, now,
			       f) != 0)
			return -1;
		if (f->status == REVOCATION_GRACE && grace.status == 0)
			grace = *f;
		f->status = 0;
	}
	*f = grace;
	return 0;
}
