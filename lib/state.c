/*
 * States: a config compiled into what handshakes run against.
 *
 * state_build() turns a config into an immutable, reference-counted struct state: a private
 * copy of the config (its key wiped once loaded), the allow rules, a trust store with the
 * validated CRLs, the SSL_CTX, the verification cache and, on a server, the session store.
 * Nothing in a state changes after it is built, so handshakes read it without a lock (the
 * endpoint's OCSP store it references is the endpoint's, not the state's); an
 * endpoint swaps in a new one on reload (endpoint.c) and a connection keeps a reference to
 * the one it started with, so a reload never touches a live connection.
 *
 * The one thing a new state takes from the one it replaces is the server's session store,
 * and only while the trust anchors and chain rules stay the same (trust_fingerprint()):
 * every resumption is decided again against the current state anyway (verify_resumed()).
 */
#include <stdlib.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "internal.h"

struct state *state_ref(struct state *st)
{
	atomic_fetch_add(&st->refs, 1);
	return st;
}

void state_unref(struct state *st)
{
	if (st == NULL || atomic_fetch_sub(&st->refs, 1) != 1)
		return;
	SSL_CTX_free(st->ssl_ctx);
	X509_STORE_free(st->store);
	policy_free(st->policy);
	verify_cache_free(st->vcache);
	sessions_unref(st->sessions);
	ocsp_store_unref(st->ocsp);
	X509_free(st->own_leaf);
	X509_free(st->own_issuer);
	sk_X509_pop_free(st->own_cas, X509_free);
	free(st->own_ocsp_url);
	mtls_config_free(st->config);
	tickets_clear(&st->tickets);
	free(st);
}

/* What a verified session depends on beyond what verify_resumed() checks again: the trust
 * anchors and the rules of chain building. */
static int trust_fingerprint(const struct mtls_config *c, uint8_t out[32])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int params[] = {c->verify_depth, c->crl_check_chain, (int)c->insecure};
	unsigned n = 0;
	int ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
		 EVP_DigestUpdate(md, params, sizeof(params)) == 1 &&
		 (c->ca.data == NULL || EVP_DigestUpdate(md, c->ca.data, c->ca.len) == 1) &&
		 EVP_DigestFinal_ex(md, out, &n) == 1 && n == 32;

	EVP_MD_CTX_free(md);
	return ok ? 0 : -1;
}

/* libcrypto computes a certificate's extension cache (flags, key usage, hashes, signature
 * info) on first use, and a thread that loses the race to compute it writes it again while
 * others read it (openssl/openssl#32609, open): the first handshakes of several workers at
 * once would race on a shared certificate. Every certificate a state shares between threads
 * is cached here, before the state is published: the trust anchors and the own certificate
 * and chain. (A peer's certificates kept in a session were cached by the full handshake that
 * verified them, before the session was stored.) */
static void warm(struct state *st)
{
	STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(st->store);
	STACK_OF(X509) *chain = NULL;
	X509 *own = SSL_CTX_get0_certificate(st->ssl_ctx);

	for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
		X509 *x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));

		if (x != NULL)
			X509_check_purpose(x, -1, 0);
	}
	if (own != NULL)
		X509_check_purpose(own, -1, 0);
	if (SSL_CTX_get0_chain_certs(st->ssl_ctx, &chain) == 1)
		for (int i = 0; i < sk_X509_num(chain); i++)
			X509_check_purpose(sk_X509_value(chain, i), -1, 0);
	ERR_clear_error();
}

/* The server's session store: the previous state's while the trust is the same. */
static int take_sessions(struct state *st, const struct state *prev, struct error *err)
{
	const struct mtls_config *c = st->config;
	/* without resumption the store keeps no session, but still the one copy of each
	 * client CA certificate that connections share */
	size_t slots = c->tickets ? c->session_cache_slots : 0;
	uint8_t trust[32];

	if (!st->server)
		return 0;
	if (trust_fingerprint(c, trust) != 0)
		return error_set_ssl(err, MTLS_REASON_INTERNAL, "cannot hash the CA bundle");
	if (prev != NULL && prev->sessions != NULL && sessions_fit(prev->sessions, trust, slots))
		st->sessions = sessions_ref(prev->sessions);
	else
		st->sessions = sessions_new(slots, trust);
	if (st->sessions == NULL)
		return error_set(err, MTLS_REASON_INTERNAL, "out of memory");
	return 0;
}

struct state *state_build(bool server, const struct mtls_config *given, const struct state *prev,
			  struct ocsp_store *ocsp, struct error *err)
{
	struct state *st = calloc(1, sizeof(*st));
	const struct mtls_config *c;

	if (st == NULL) {
		error_set(err, MTLS_REASON_INTERNAL, "out of memory");
		return NULL;
	}
	atomic_init(&st->refs, 1);
	tickets_init(&st->tickets);
	st->server = server;
	st->ocsp = ocsp_store_ref(ocsp);
	/* the state runs on its own copy: nothing the caller does to its config afterwards
	 * changes who is let in, and no handshake reads memory the caller may change */
	st->config = config_clone(given);
	c = st->config;
	st->store = X509_STORE_new();
	if (c == NULL || st->store == NULL) {
		error_set(err, MTLS_REASON_INTERNAL, "out of memory");
		goto fail;
	}
	st->policy = policy_new(c, err);
	if (st->policy == NULL)
		goto fail;
	if (server && !policy_has_rules(st->policy) && !c->allow_any) {
		error_set(err, MTLS_REASON_CONFIG,
			  "server has no allow rule: add allow rules (URI, DNS, email, CN or pins) "
			  "for the clients it should accept, or allow any identity from the CA "
			  "explicitly");
		goto fail;
	}
	if (!server && (c->insecure & INSECURE_OPTIONAL_CLIENT_CERT)) {
		error_set(err, MTLS_REASON_CONFIG,
			  "an optional client certificate is a server setting: leave "
			  "insecure_optional_client_cert out of the client's config");
		goto fail;
	}
	if (!server && (c->insecure & INSECURE_AUDIT)) {
		error_set(err, MTLS_REASON_CONFIG,
			  "audit mode is a server setting: leave insecure_audit out of the "
			  "client's config");
		goto fail;
	}
	if (!server && (c->insecure & INSECURE_SERVER_EKU_CLIENTS)) {
		error_set(err, MTLS_REASON_CONFIG,
			  "accepting serverAuth client certificates is a server setting: leave "
			  "insecure_server_eku_clients out of the client's config");
		goto fail;
	}
	if ((c->cert.data == NULL) != (c->key.data == NULL && c->key_uri == NULL)) {
		error_set(
			err, MTLS_REASON_CONFIG,
			"a certificate needs its private key and a key its certificate: give both");
		goto fail;
	}
	if (c->verify_cache_slots > 0 &&
	    (st->vcache = verify_cache_new(c->verify_cache_slots)) == NULL) {
		error_set(err, MTLS_REASON_INTERNAL, "out of memory");
		goto fail;
	}
	if (take_sessions(st, prev, err) != 0 || (st->ssl_ctx = tlsctx_new(st, err)) == NULL ||
	    load_trust(st, c, err) != 0 || revocation_load(st, err) != 0)
		goto fail;
	if (c->cert.data != NULL && (load_own_cert(st, c, err) != 0 || ocsp_own(st, err) != 0))
		goto fail;
	if (!server && c->ocsp_staple) {
		error_set(err, MTLS_REASON_CONFIG,
			  "OCSP stapling is a server setting: a client asks for the server's "
			  "staple in any case");
		goto fail;
	}
	config_forget_key(st->config); /* the SSL_CTX holds the key now */
	warm(st);
	return st;
fail:
	state_unref(st);
	return NULL;
}
