/*
 * svc_enroll (service.h): a first certificate for the holder of an enrollment token.
 *
 * The token (token.h) is checked for form and for the CA it pins before the store is
 * touched; then, in one store transaction (BEGIN IMMEDIATE: one writer at a time), the token
 * is taken (store_token_take(): exactly one of two concurrent takers wins), the CSR matched
 * against what it grants, the certificate signed and recorded, the token marked with its
 * serial and the issuance audited, and all of it committed at once. Any failure before the
 * commit rolls everything back: the token stays unused and nothing is issued. Refusals are
 * audited in a transaction of their own.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "grant.h"
#include "issuance.h"
#include "issue.h"
#include "service.h"
#include "token.h"

struct enrollment {
	struct authority *ca;
	const char *actor;
	char hash[65]; /* the token's (token_hash_hex()), "" before it is known */
	char *subject; /* of the CSR, once read */
	bool in_tx;    /* a transaction is open */
};

static const char *when(time_t t, char buf[32])
{
	struct tm tm;

	strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
	return buf;
}

/* Refuse with e (already filled): roll back what the transaction did (the token stays
 * unused), then record the refusal in the audit log in a transaction of its own. -1. */
static int refused(struct enrollment *en, struct svc_error *e)
{
	char subject[64], *detail = NULL, err[512];

	if (en->in_tx)
		store_rollback(en->ca->store);
	en->in_tx = false;
	if (en->hash[0] != '\0')
		snprintf(subject, sizeof(subject), "token %.16s", en->hash);
	else
		snprintf(subject, sizeof(subject), "(unreadable token)");
	if (asprintf(&detail, "%s: %s%s%s", e->code, e->message,
		     en->subject != NULL ? "; CSR subject " : "",
		     en->subject != NULL ? (en->subject[0] != '\0' ? en->subject : "(empty)")
					 : "") < 0)
		return -1;
	/* the client is told why whatever happens to the entry */
	issuance_refused(en->ca, en->actor, "enroll-refused", subject, detail, err, sizeof(err));
	free(detail);
	return -1;
}

/* Refuse a request that carries no token this CA made (malformed, another CA's, unknown):
 * rolled back, not audited. Anyone can send those without any credential, and an audit
 * entry each (a synchronous write) would let them grow the CA's append-only log at will;
 * the service logs the refusal instead (rate-limited). -1. */
static int refused_unaudited(struct enrollment *en)
{
	if (en->in_tx)
		store_rollback(en->ca->store);
	en->in_tx = false;
	return -1;
}

/* The store failed: roll back and say so (not audited: the store is what failed). */
static int store_failed(struct enrollment *en, struct svc_error *e, const char *err)
{
	const char *code;
	int status = issuance_store_status(en->ca->store, &code);

	if (en->in_tx)
		store_rollback(en->ca->store);
	en->in_tx = false;
	return svc_fail(e, status, code, "%s", err != NULL ? err : store_error(en->ca->store));
}

/* Take the token, inside the transaction: 0, or -1 (e filled, refused or failed). */
static int take(struct enrollment *en, time_t now, struct store_token *row, struct svc_error *e)
{
	char t[32];

	switch (store_token_take(en->ca->store, en->hash, now, row)) {
	case 0: return 0;
	case 1:
		svc_fail(e, 401, "token_unknown",
			 "this CA does not know the enrollment token (mistyped, or withdrawn); ask "
			 "the CA operator for a new token");
		return refused_unaudited(en);
	case 2:
		svc_fail(e, 401, "token_expired",
			 "the enrollment token expired at %s; ask the CA operator for a new token",
			 when(row->not_after, t));
		return refused(en, e);
	case 3:
		svc_fail(e, 401, "token_used",
			 "the enrollment token was already used (at %s%s%s); a token enrolls once: "
			 "ask the CA operator for a new token",
			 when(row->used_at, t), row->used_serial[0] != '\0' ? ", serial " : "",
			 row->used_serial);
		return refused(en, e);
	default: return store_failed(en, e, NULL);
	}
}

int svc_enroll(struct authority *ca, const struct svc_policy *p, const char *token, const void *csr,
	       size_t csr_len, time_t now, const char *actor, struct svc_issued *out,
	       struct svc_error *e)
{
	static const char what[] = "of the enrollment";
	struct enrollment en = {.ca = ca, .actor = actor != NULL ? actor : "enroll"};
	long long seconds = p != NULL && p->leaf_seconds > 0 ? p->leaf_seconds : SVC_LEAF_DEFAULT;
	struct token t;
	struct store_token row;
	struct grant g = {0};
	struct grant_request req = {0};
	char err[1024], serial[64], note[64];
	time_t not_before, not_after;
	X509 *cert = NULL;
	int rc = -1, k;

	memset(out, 0, sizeof(*out));
	memset(e, 0, sizeof(*e));
	if (token_decode(token != NULL ? token : "", &t, err, sizeof(err)) != 0) {
		svc_fail(e, 400, "token_malformed", "%s", err);
		refused_unaudited(&en);
		goto out;
	}
	token_hash_hex(&t, en.hash);
	if (!token_pins(&t, ca->root)) {
		token_wipe(&t);
		svc_fail(e, 401, "token_foreign",
			 "this token is for another CA (it pins another root certificate); use the "
			 "URL the token names, or ask this CA's operator for a token");
		refused_unaudited(&en);
		goto out;
	}
	token_wipe(&t);

	if (store_begin(ca->store) != 0) {
		store_failed(&en, e, NULL);
		goto out;
	}
	en.in_tx = true;
	if (take(&en, now, &row, e) != 0)
		goto out;
	/* the token is taken: from here any failure rolls the take back with the rest */
	if (token_grant(&row, &g, err, sizeof(err)) != 0) {
		svc_fail(e, 403, "policy_changed",
			 "the enrollment token grants what the CA no longer issues: %s; ask the CA "
			 "operator for a new token",
			 err);
		refused(&en, e);
		goto out;
	}
	if (grant_request_read(&req, csr, csr_len, what, err, sizeof(err)) != 0) {
		svc_fail(e, 400, "csr_malformed", "%s", err);
		refused(&en, e);
		goto out;
	}
	en.subject = req.subject;
	if (grant_request_verify(&req, what, err, sizeof(err)) != 0) {
		svc_fail(e, 400, "csr_invalid", "%s", err);
		refused(&en, e);
		goto out;
	}
	if (grant_match(&g, &req, what, err, sizeof(err)) != 0) {
		svc_fail(e, 403, "csr_not_granted", "%s", err);
		refused(&en, e);
		goto out;
	}
	k = issuance_check_key(ca, req.key, "the CSR of the enrollment", err, sizeof(err));
	if (k < 0) {
		store_failed(&en, e, err);
		goto out;
	}
	if (k > 0) {
		svc_fail(e, k == 1 ? 400 : 403, k == 1 ? "key_weak" : "key_compromised", "%s", err);
		refused(&en, e);
		goto out;
	}
	if (issuance_window(ca, now, seconds, &not_before, &not_after, err, sizeof(err)) != 0) {
		svc_fail(e, 503, "ca_expired", "%s", err);
		refused(&en, e);
		goto out;
	}
	snprintf(note, sizeof(note), "token %.16s", en.hash);
	{
		struct issuance is = {.grant = &g,
				      .req = &req, /* its common name, if granted */
				      .key = req.key,
				      .not_before = not_before,
				      .not_after = not_after,
				      .issued_at = now,
				      .actor = en.actor,
				      .action = "enroll",
				      .note = note};

		k = issuance_sign(ca, &is, &cert, serial, err, sizeof(err));
	}
	if (k == -1 || (k == 0 && store_token_used_by(ca->store, en.hash, serial) != 0)) {
		store_failed(&en, e, k == -1 ? err : NULL);
		goto out;
	}
	if (k != 0 || issuance_result(ca, cert, serial, &g, not_before, not_after, out) != 0) {
		store_rollback(ca->store);
		en.in_tx = false;
		svc_fail(e, 500, "internal", "%s; nothing was issued",
			 k != 0 ? err : "out of memory");
		goto out;
	}
	if (store_commit(ca->store) != 0) {
		svc_issued_free(out);
		store_failed(&en, e, NULL);
		goto out;
	}
	en.in_tx = false;
	rc = 0;
out:
	X509_free(cert);
	grant_free(&g);
	grant_request_free(&req);
	return rc;
}
