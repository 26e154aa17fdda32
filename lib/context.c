/*
 * Endpoints and their compiled state.
 *
 * mtls_configure() turns a config into an immutable, reference-counted struct state (an
 * SSL_CTX, a trust store with CRLs, the allow rules) and swaps it in under the endpoint's
 * lock: commit or roll back, as hitch does on reload. Connections keep a reference to the
 * state they started with, so a reload never touches a live connection.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "internal.h"

/* TLS 1.2: ECDHE with AEAD only. TLS 1.3 suites are all AEAD. */
static const char tls12_ciphers[] = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
				    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
				    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
static const char tls13_suites[] = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
				   "TLS_CHACHA20_POLY1305_SHA256";
/* not const: OpenSSL's SSL_CTX_set1_groups_list() macro casts the const away */
static char groups[] = "X25519:P-256:P-384";
static const unsigned char session_context[] = "mtls";

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
	mtls_config_free(st->config);
	tickets_clear(&st->tickets);
	free(st);
}

/*
 * What endpoint calls leave behind for their caller (the error, and the peer and warning of
 * mtls_verify_chain_pem()) is kept per thread, as errno is: an endpoint is shared by the
 * threads that accept, connect and verify on it, and each of them must read its own
 * result, not whatever another thread wrote last. One slot per thread holds the results of
 * its last call, tagged with the endpoint's id; it is freed when the thread exits.
 */
struct thread_results {
	uint64_t err_of; /* id of the endpoint the error is about; 0: none */
	struct error err;
	uint64_t peer_of; /* id of the endpoint of the verification below; 0: none */
	struct mtls_peer *peer;
	char warning[256];
};

static pthread_key_t results_key;
static pthread_once_t results_once = PTHREAD_ONCE_INIT;
static bool results_ready;
static atomic_uint_fast64_t endpoint_ids = 1;

static void results_destroy(void *arg)
{
	struct thread_results *r = arg;

	identity_free(r->peer);
	free(r);
}

static void results_init(void)
{
	results_ready = pthread_key_create(&results_key, results_destroy) == 0;
}

/* The calling thread's slot; NULL if it has none and create is false, or no memory. */
static struct thread_results *thread_results(bool create)
{
	struct thread_results *r;

	pthread_once(&results_once, results_init);
	if (!results_ready)
		return NULL;
	r = pthread_getspecific(results_key);
	if (r == NULL && create) {
		r = calloc(1, sizeof(*r));
		if (r != NULL && pthread_setspecific(results_key, r) != 0) {
			free(r);
			r = NULL;
		}
	}
	return r;
}

/* Where a call on m reports its error: a connection's own, an endpoint's in the calling
 * thread's slot (the endpoint's own only when there is no memory for a slot). */
static struct error *err_of(struct mtls *m)
{
	struct thread_results *r;

	if (m->kind == KIND_CONN || (r = thread_results(true)) == NULL)
		return &m->err;
	r->err_of = m->id;
	return &r->err;
}

static const struct error *err_seen(const struct mtls *m)
{
	const struct thread_results *r;

	if (m->kind != KIND_CONN && (r = thread_results(false)) != NULL && r->err_of == m->id)
		return &r->err;
	return &m->err;
}

/* A call on endpoint e succeeded: the calling thread has no error about it any more. */
static void endpoint_ok(struct mtls *e)
{
	struct thread_results *r = thread_results(false);

	if (r != NULL && r->err_of == e->id)
		error_clear(&r->err);
}

/* Endpoint e goes away: drop what the calling thread kept about it (other threads' slots
 * are theirs, freed with them), and the slot itself once it holds nothing. */
static void endpoint_forget(const struct mtls *e)
{
	struct thread_results *r = thread_results(false);

	if (r == NULL)
		return;
	if (r->peer_of == e->id) {
		identity_free(r->peer);
		r->peer = NULL;
		r->peer_of = 0;
		r->warning[0] = '\0';
	}
	if (r->err_of == e->id)
		r->err_of = 0;
	if (r->peer_of == 0 && r->err_of == 0) {
		pthread_setspecific(results_key, NULL);
		free(r);
	}
}

static struct mtls *endpoint_new(enum mtls_kind kind)
{
	struct mtls *e = calloc(1, sizeof(*e));

	if (e == NULL)
		return NULL;
	e->kind = kind;
	e->id = atomic_fetch_add(&endpoint_ids, 1);
	pthread_mutex_init(&e->lock, NULL);
	return e;
}

struct mtls *mtls_server_new(void)
{
	return endpoint_new(KIND_SERVER);
}

struct mtls *mtls_client_new(void)
{
	return endpoint_new(KIND_CLIENT);
}

static BIO *blob_bio(const struct blob *b)
{
	return BIO_new_mem_buf(b->data, (int)b->len);
}

/* Read all PEM certificates of a blob. NULL (with err) if there are none or one is bad. */
static STACK_OF(X509) * read_certs(const struct blob *b, const char *what, struct error *err)
{
	STACK_OF(X509) *certs = sk_X509_new_null();
	BIO *bio = blob_bio(b);
	X509 *x;

	if (certs == NULL || bio == NULL) {
		error_set(err, MTLS_REASON_INTERNAL, "out of memory");
		goto fail;
	}
	ERR_clear_error();
	while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
		if (!sk_X509_push(certs, x)) {
			X509_free(x);
			error_set(err, MTLS_REASON_INTERNAL, "out of memory");
			goto fail;
		}
	}
	/* The loop ends with "no start line" at the end of input; anything else is damage. */
	if (ERR_GET_REASON(ERR_peek_last_error()) != PEM_R_NO_START_LINE ||
	    sk_X509_num(certs) == 0) {
		error_set_ssl(err, MTLS_REASON_BAD_PEM,
			      "%s %s does not hold valid PEM certificates (BEGIN CERTIFICATE); "
			      "check that it is the right file",
			      what, b->origin);
		goto fail;
	}
	ERR_clear_error();
	BIO_free(bio);
	return certs;
fail:
	BIO_free(bio);
	sk_X509_pop_free(certs, X509_free);
	return NULL;
}

struct pass_ctx {
	const struct mtls_config *config;
	bool asked;
};

static int pass_cb(char *buf, int size, int rwflag, void *arg)
{
	struct pass_ctx *pc = arg;
	size_t len;

	(void)rwflag;
	pc->asked = true;
	if (!pc->config->passphrase_set)
		return -1;
	len = strlen(pc->config->passphrase);
	if (len > (size_t)size)
		return -1;
	memcpy(buf, pc->config->passphrase, len);
	return (int)len;
}

/* Which kinds of PEM blocks a blob holds: private keys (of any format), certificates. */
static void pem_kinds(const struct blob *b, bool *keys, bool *certs)
{
	BIO *bio = blob_bio(b);
	char *name = NULL, *header = NULL;
	unsigned char *data = NULL;
	long len = 0;

	*keys = *certs = false;
	if (bio == NULL)
		return;
	while (PEM_read_bio(bio, &name, &header, &data, &len) == 1) {
		size_t n = strlen(name);

		if (n >= 11 && strcmp(name + n - 11, "PRIVATE KEY") == 0)
			*keys = true;
		else if (strcmp(name, PEM_STRING_X509) == 0 ||
			 strcmp(name, PEM_STRING_X509_OLD) == 0 ||
			 strcmp(name, PEM_STRING_X509_TRUSTED) == 0)
			*certs = true;
		OPENSSL_free(name);
		OPENSSL_free(header);
		OPENSSL_clear_free(data, len > 0 ? (size_t)len : 0); /* may be a key */
		name = header = NULL;
		data = NULL;
	}
	BIO_free(bio);
	ERR_clear_error();
}

static EVP_PKEY *read_key(const struct mtls_config *c, struct error *err)
{
	struct pass_ctx pc = {.config = c};
	bool keys, certs;
	BIO *bio;
	EVP_PKEY *key;

	/* the certificate given twice, a common slip: say so, not "chmod 600" */
	pem_kinds(&c->key, &keys, &certs);
	if (certs && !keys) {
		error_set(err, MTLS_REASON_BAD_PEM,
			  "key file %s holds a certificate, not a private key; give the key file "
			  "(BEGIN PRIVATE KEY)",
			  c->key.origin);
		return NULL;
	}
	if (c->key_mode & 077 && !(c->insecure & INSECURE_KEY_PERMISSIONS)) {
		error_set(err, MTLS_REASON_KEY_PERMISSIONS,
			  "private key %s is readable by group or others (mode %04o); run "
			  "'chmod 600 %s'",
			  c->key.origin, (unsigned)c->key_mode, c->key.origin);
		return NULL;
	}
	bio = blob_bio(&c->key);
	if (bio == NULL) {
		error_set(err, MTLS_REASON_INTERNAL, "out of memory");
		return NULL;
	}
	ERR_clear_error();
	key = PEM_read_bio_PrivateKey(bio, NULL, pass_cb, &pc);
	BIO_free(bio);
	if (key != NULL) {
		ERR_clear_error();
		return key;
	}
	if (pc.asked && !c->passphrase_set)
		error_set(err, MTLS_REASON_BAD_PASSPHRASE,
			  "private key %s is encrypted; give its passphrase (file or environment "
			  "variable)",
			  c->key.origin);
	else if (pc.asked)
		error_set(err, MTLS_REASON_BAD_PASSPHRASE,
			  "cannot decrypt private key %s: wrong passphrase", c->key.origin);
	else
		error_set_ssl(err, MTLS_REASON_BAD_PEM,
			      "private key %s is not a valid PEM private key", c->key.origin);
	return NULL;
}

static int load_own_cert(struct state *st, const struct mtls_config *c, struct error *err)
{
	STACK_OF(X509) *certs = read_certs(&c->cert, "certificate", err);
	EVP_PKEY *key = NULL;
	int rc = -1;

	if (certs == NULL)
		return -1;
	key = read_key(c, err);
	if (key == NULL)
		goto out;
	if (SSL_CTX_use_certificate(st->ssl_ctx, sk_X509_value(certs, 0)) != 1) {
		error_set_ssl(err, MTLS_REASON_WEAK_KEY,
			      "certificate %s cannot be used (is its key strong enough?)",
			      c->cert.origin);
		goto out;
	}
	for (int i = 1; i < sk_X509_num(certs); i++)
		if (SSL_CTX_add1_chain_cert(st->ssl_ctx, sk_X509_value(certs, i)) != 1) {
			error_set_ssl(err, MTLS_REASON_BAD_PEM, "certificate chain %s is unusable",
				      c->cert.origin);
			goto out;
		}
	if (SSL_CTX_use_PrivateKey(st->ssl_ctx, key) != 1 ||
	    SSL_CTX_check_private_key(st->ssl_ctx) != 1) {
		error_set(err, MTLS_REASON_KEY_MISMATCH,
			  "private key %s does not match certificate %s; give the key that was "
			  "issued with this certificate",
			  c->key.origin, c->cert.origin);
		goto out;
	}
	st->cert_not_after = error_asn1_time(X509_get0_notAfter(sk_X509_value(certs, 0)));
	rc = 0;
out:
	EVP_PKEY_free(key);
	sk_X509_pop_free(certs, X509_free);
	return rc;
}

static int load_trust(struct state *st, const struct mtls_config *c, struct error *err)
{
	STACK_OF(X509) * cas;

	if (c->ca.data == NULL)
		return error_set(err, MTLS_REASON_CONFIG,
				 "no CA configured: give the CA bundle that issued the peers' "
				 "certificates");
	cas = read_certs(&c->ca, "CA file", err);
	if (cas == NULL)
		return -1;
	for (int i = 0; i < sk_X509_num(cas); i++) {
		X509 *ca = sk_X509_value(cas, i);
		time_t na = error_asn1_time(X509_get0_notAfter(ca));

		/* a leaf given as the CA would make its holder a trust anchor, and in any case
		 * means the wrong file was given */
		if (!(X509_get_extension_flags(ca) & EXFLAG_CA)) {
			char who[300];

			identity_describe(ca, who, sizeof(who));
			sk_X509_pop_free(cas, X509_free);
			return error_set(
				err, MTLS_REASON_CONFIG,
				"CA file %s holds a certificate that is not a CA (%s, no "
				"basicConstraints CA:TRUE); give the CA bundle, not a leaf",
				c->ca.origin, who);
		}
		if (X509_STORE_add_cert(st->store, ca) != 1) {
			sk_X509_pop_free(cas, X509_free);
			return error_set_ssl(err, MTLS_REASON_INTERNAL, "cannot add CA");
		}
		if (st->ca_not_after == 0 || na < st->ca_not_after)
			st->ca_not_after = na;
	}
	sk_X509_pop_free(cas, X509_free);

	for (size_t i = 0; i < c->ncrls; i++) {
		BIO *bio = blob_bio(&c->crls[i]);
		X509_CRL *crl;
		int n = 0;

		if (bio == NULL)
			return error_set(err, MTLS_REASON_INTERNAL, "out of memory");
		ERR_clear_error();
		while ((crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL)) != NULL) {
			time_t next = error_asn1_time(X509_CRL_get0_nextUpdate(crl));
			int ok = X509_STORE_add_crl(st->store, crl);

			X509_CRL_free(crl);
			if (ok != 1) {
				BIO_free(bio);
				return error_set_ssl(err, MTLS_REASON_INTERNAL, "cannot add CRL");
			}
			if (next != 0 && (st->crl_next_update == 0 || next < st->crl_next_update))
				st->crl_next_update = next;
			n++;
		}
		BIO_free(bio);
		if (ERR_GET_REASON(ERR_peek_last_error()) != PEM_R_NO_START_LINE || n == 0)
			return error_set_ssl(
				err, MTLS_REASON_BAD_PEM,
				"CRL %s does not hold valid PEM CRLs (BEGIN X509 CRL); "
				"check that it is the right file",
				c->crls[i].origin);
		ERR_clear_error();
	}
	return 0;
}

static int client_new_session(SSL *ssl, SSL_SESSION *sess)
{
	struct mtls *conn = SSL_get_app_data(ssl);

	if (conn == NULL || conn->server_name == NULL)
		return 0;
	/* 1: we keep the reference */
	return tickets_put(&conn->cstate->tickets, sess, conn->server_name) ? 1 : 0;
}

static int setup_ssl_ctx(struct state *st, const struct mtls_config *c, struct error *err)
{
	SSL_CTX *ctx = SSL_CTX_new(st->server ? TLS_server_method() : TLS_client_method());

	if (ctx == NULL)
		return error_set_ssl(err, MTLS_REASON_INTERNAL, "cannot create TLS context");
	st->ssl_ctx = ctx;
	SSL_CTX_set_security_level(ctx, 2);
	if (SSL_CTX_set_min_proto_version(ctx, c->min_version) != 1 ||
	    SSL_CTX_set_max_proto_version(ctx, c->max_version) != 1 ||
	    SSL_CTX_set_cipher_list(ctx, tls12_ciphers) != 1 ||
	    SSL_CTX_set_ciphersuites(ctx, tls13_suites) != 1 ||
	    SSL_CTX_set1_groups_list(ctx, groups) != 1)
		return error_set_ssl(err, MTLS_REASON_INTERNAL, "cannot set TLS parameters");
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
					 SSL_OP_CIPHER_SERVER_PREFERENCE |
					 (c->tickets ? 0 : SSL_OP_NO_TICKET));
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
				      SSL_MODE_RELEASE_BUFFERS);
	/* one recv for every record that has arrived, not two per record (see sockbio.c);
	 * a read buffer of more than one record measured no better in bulk transfers */
	SSL_CTX_set_read_ahead(ctx, 1);
	SSL_CTX_set1_cert_store(ctx, st->store);
	SSL_CTX_set_cert_verify_callback(ctx, conn_verify_cb, NULL);
	SSL_CTX_set_app_data(ctx, st);
	if (st->server) {
		SSL_CTX_set_verify(ctx,
				   SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT |
					   SSL_VERIFY_CLIENT_ONCE,
				   NULL);
		SSL_CTX_set_session_id_context(ctx, session_context, sizeof(session_context) - 1);
		/* resumption from the server's own store (sessions.c), never stateless tickets */
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
		if (st->sessions != NULL) {
			sessions_attach(ctx);
			SSL_CTX_set_num_tickets(ctx, 1);
		} else {
			SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
			SSL_CTX_set_num_tickets(ctx, 0);
		}
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
		SSL_CTX_set_session_cache_mode(
			ctx, c->tickets ? SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE
					: SSL_SESS_CACHE_OFF);
		SSL_CTX_sess_set_new_cb(ctx, client_new_session);
	}
	return 0;
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

/* The server's session store: the previous state's while the trust is the same. */
static int setup_sessions(struct state *st, const struct state *prev, struct error *err)
{
	const struct mtls_config *c = st->config;
	uint8_t trust[32];

	if (!st->server || !c->tickets || c->session_cache_slots == 0)
		return 0;
	if (trust_fingerprint(c, trust) != 0)
		return error_set_ssl(err, MTLS_REASON_INTERNAL, "cannot hash the CA bundle");
	if (prev != NULL && prev->sessions != NULL && sessions_trust_is(prev->sessions, trust))
		st->sessions = sessions_ref(prev->sessions);
	else
		st->sessions = sessions_new(c->session_cache_slots, trust);
	if (st->sessions == NULL)
		return error_set(err, MTLS_REASON_INTERNAL, "out of memory");
	return 0;
}

static struct state *state_build(bool server, const struct mtls_config *given,
				 const struct state *prev, struct error *err)
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
		error_set(
			err, MTLS_REASON_CONFIG,
			"server has no allow rule: add allow rules (URI, DNS, CN or pins) for the "
			"clients it should accept, or allow any identity from the CA explicitly");
		goto fail;
	}
	if ((c->cert.data == NULL) != (c->key.data == NULL)) {
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
	if (setup_sessions(st, prev, err) != 0 || setup_ssl_ctx(st, c, err) != 0 ||
	    load_trust(st, c, err) != 0 || revocation_load(st, err) != 0)
		goto fail;
	if (c->cert.data != NULL && load_own_cert(st, c, err) != 0)
		goto fail;
	config_forget_key(st->config); /* the SSL_CTX holds the key now */
	return st;
fail:
	state_unref(st);
	return NULL;
}

/* The endpoint's current state, referenced; NULL if it was never configured. */
static struct state *current_state(struct mtls *e)
{
	struct state *st;

	pthread_mutex_lock(&e->lock);
	st = e->state != NULL ? state_ref(e->state) : NULL;
	pthread_mutex_unlock(&e->lock);
	return st;
}

int mtls_configure(struct mtls *e, struct mtls_config *config)
{
	struct state *st, *old;

	if (e == NULL || config == NULL || e->kind == KIND_CONN) {
		if (e != NULL)
			error_set(err_of(e), MTLS_REASON_USAGE,
				  "mtls_configure needs a server or client endpoint and a config");
		return -1;
	}
	old = current_state(e);
	st = state_build(e->kind == KIND_SERVER, config, old, err_of(e));
	state_unref(old);
	if (st == NULL)
		return -1;
	pthread_mutex_lock(&e->lock);
	old = e->state;
	e->state = st;
	pthread_mutex_unlock(&e->lock);
	state_unref(old);
	endpoint_ok(e);
	return 0;
}

static time_t state_time(struct mtls *e, int which)
{
	struct state *st = current_state(e);
	time_t t = 0;

	if (st == NULL)
		return 0;
	t = which == 0 ? st->cert_not_after : which == 1 ? st->ca_not_after : st->crl_next_update;
	state_unref(st);
	return t;
}

time_t mtls_endpoint_cert_not_after(const struct mtls *e)
{
	return state_time((struct mtls *)(uintptr_t)e, 0);
}

time_t mtls_endpoint_ca_not_after(const struct mtls *e)
{
	return state_time((struct mtls *)(uintptr_t)e, 1);
}

time_t mtls_endpoint_crl_next_update(const struct mtls *e)
{
	return state_time((struct mtls *)(uintptr_t)e, 2);
}

void mtls_endpoint_verify_cache_stats(const struct mtls *e, unsigned long *hits,
				      unsigned long *misses)
{
	struct state *st = current_state((struct mtls *)(uintptr_t)e);

	*hits = *misses = 0;
	if (st == NULL)
		return;
	verify_cache_stats(st->vcache, hits, misses);
	state_unref(st);
}

/* Whether a connection that ended this way leaves its session resumable: yes unless the
 * TLS layer itself failed (a bad record, an alert). */
static bool session_survives(enum mtls_reason reason)
{
	return reason == MTLS_REASON_NONE || reason == MTLS_REASON_TRUNCATED ||
	       reason == MTLS_REASON_IO || reason == MTLS_REASON_TIMEOUT;
}

void mtls_free(struct mtls *m)
{
	if (m == NULL)
		return;
	if (m->ssl != NULL && m->handshake_done && session_survives(m->err.reason))
		/* OpenSSL would mark the session of a connection freed without close_notify
		 * unresumable; TLS 1.3 dropped that rule, and peers that just close are common */
		SSL_set_shutdown(m->ssl, SSL_get_shutdown(m->ssl) | SSL_SENT_SHUTDOWN);
	if (m->kind != KIND_CONN)
		endpoint_forget(m);
	SSL_free(m->ssl);
	state_unref(m->state);
	state_unref(m->cstate);
	identity_free(m->peer);
	free(m->server_name);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

const char *mtls_error(const struct mtls *m)
{
	return err_seen(m)->msg;
}

enum mtls_reason mtls_error_reason(const struct mtls *m)
{
	return err_seen(m)->reason;
}

enum mtls_category mtls_error_category(const struct mtls *m)
{
	return mtls_reason_category(err_seen(m)->reason);
}

static struct mtls *conn_new(struct mtls *e, int fd, const char *name)
{
	struct state *st;
	struct mtls *c;
	BIO *bio;

	if (e == NULL)
		return NULL;
	st = current_state(e);
	if (st == NULL) {
		error_set(err_of(e), MTLS_REASON_USAGE, "endpoint is not configured");
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		state_unref(st);
		error_set(err_of(e), MTLS_REASON_INTERNAL, "out of memory");
		return NULL;
	}
	c->kind = KIND_CONN;
	pthread_mutex_init(&c->lock, NULL);
	c->cstate = st;
	c->server_side = st->server;
	if (name != NULL && (c->server_name = strdup(name)) == NULL)
		goto oom;
	c->ssl = SSL_new(st->ssl_ctx);
	if (c->ssl == NULL || (bio = sockbio_new(fd)) == NULL)
		goto oom;
	SSL_set_bio(c->ssl, bio, bio);
	SSL_set_app_data(c->ssl, c);
	return c;
oom:
	error_set_ssl(err_of(e), MTLS_REASON_INTERNAL, "cannot create connection");
	mtls_free(c);
	return NULL;
}

struct mtls *mtls_accept_fd(struct mtls *server, int fd)
{
	struct mtls *c;

	if (server == NULL || server->kind != KIND_SERVER) {
		if (server != NULL)
			error_set(err_of(server), MTLS_REASON_USAGE,
				  "mtls_accept_fd needs a server endpoint");
		return NULL;
	}
	c = conn_new(server, fd, NULL);
	if (c == NULL)
		return NULL;
	if (c->cstate->cert_not_after == 0) {
		error_set(err_of(server), MTLS_REASON_CONFIG,
			  "server endpoint has no certificate: configure a cert and key");
		mtls_free(c);
		return NULL;
	}
	SSL_set_accept_state(c->ssl);
	return c;
}

struct mtls *mtls_connect_fd(struct mtls *client, int fd, const char *server_name)
{
	struct mtls *c;
	struct state *st;

	if (client == NULL || client->kind != KIND_CLIENT) {
		if (client != NULL)
			error_set(err_of(client), MTLS_REASON_USAGE,
				  "mtls_connect_fd needs a client endpoint");
		return NULL;
	}
	c = conn_new(client, fd, server_name);
	if (c == NULL)
		return NULL;
	st = c->cstate;
	if ((server_name == NULL || server_name[0] == '\0') &&
	    !(st->config->insecure & INSECURE_NO_VERIFY_NAME)) {
		error_set(err_of(client), MTLS_REASON_USAGE,
			  "no server name given: pass the DNS name or IP address the server's "
			  "certificate must carry");
		mtls_free(c);
		return NULL;
	}
	SSL_set_connect_state(c->ssl);
	if (server_name != NULL && server_name[0] != '\0') {
		unsigned char addr[16];

		/* SNI only for DNS names, as RFC 6066 says */
		if (inet_pton(AF_INET, server_name, addr) != 1 &&
		    inet_pton(AF_INET6, server_name, addr) != 1)
			SSL_set_tlsext_host_name(c->ssl, c->server_name); /* ours, not const */
		SSL_SESSION *session = tickets_take(&st->tickets, server_name);

		if (session != NULL) {
			SSL_set_session(c->ssl, session); /* takes its own reference */
			SSL_SESSION_free(session);
		}
	}
	return c;
}

int mtls_verify_chain_pem(struct mtls *e, const uint8_t *pem, size_t len, const char *expected_name,
			  const char *expected_uri)
{
	struct blob b = {.data = (uint8_t *)(uintptr_t)pem,
			 .len = len,
			 .origin = (char *)(uintptr_t) "(input)"};
	struct state *st = NULL;
	STACK_OF(X509) *certs = NULL;
	X509_STORE_CTX *xctx = NULL;
	struct verify_request rq;
	struct thread_results *r;
	struct mtls_peer *peer = NULL;
	struct error err;
	char warning[sizeof(r->warning)] = "";
	int rc = -1;

	if (e == NULL || e->kind == KIND_CONN || pem == NULL) {
		if (e != NULL)
			error_set(err_of(e), MTLS_REASON_USAGE,
				  "mtls_verify_chain_pem needs an endpoint and a PEM chain");
		return -1;
	}
	/* verify into locals, then publish in the calling thread's slot: threads verifying
	 * on one endpoint at once never see (or free) each other's results */
	error_clear(&err);
	st = current_state(e);
	if (st == NULL) {
		error_set(&err, MTLS_REASON_USAGE, "endpoint is not configured");
		goto out;
	}
	if (!st->server && (expected_name == NULL || expected_name[0] == '\0') &&
	    !(st->config->insecure & INSECURE_NO_VERIFY_NAME)) {
		error_set(&err, MTLS_REASON_USAGE,
			  "verifying a server certificate needs the expected DNS name or IP");
		goto out;
	}
	certs = read_certs(&b, "certificate", &err);
	if (certs == NULL)
		goto out;
	xctx = X509_STORE_CTX_new();
	if (xctx == NULL ||
	    X509_STORE_CTX_init(xctx, st->store, sk_X509_value(certs, 0), certs) != 1) {
		error_set_ssl(&err, MTLS_REASON_INTERNAL, "cannot set up verification");
		goto out;
	}
	rq = (struct verify_request){
		.st = st, .peer_is_client = st->server, .name = expected_name, .uri = expected_uri};
	rc = verify_chain(&rq, xctx, &peer, &err, warning, sizeof(warning));
out:
	X509_STORE_CTX_free(xctx);
	sk_X509_pop_free(certs, X509_free);
	state_unref(st);
	r = thread_results(true);
	if (r == NULL) {
		identity_free(peer);
		return error_set(&e->err, MTLS_REASON_INTERNAL, "out of memory");
	}
	identity_free(r->peer);
	r->peer = peer;
	r->peer_of = e->id;
	memcpy(r->warning, warning, sizeof(warning));
	r->err = err;
	r->err_of = e->id;
	return rc;
}

const struct mtls_peer *mtls_verified_peer(const struct mtls *e)
{
	const struct thread_results *r;

	if (e == NULL || e->kind == KIND_CONN || (r = thread_results(false)) == NULL ||
	    r->peer_of != e->id)
		return NULL;
	return r->peer;
}

const char *mtls_conn_warning(const struct mtls *m)
{
	const struct thread_results *r;
	const char *w = NULL;

	if (m == NULL)
		return NULL;
	if (m->kind == KIND_CONN)
		w = m->warning;
	else if ((r = thread_results(false)) != NULL && r->peer_of == m->id)
		w = r->warning;
	return w != NULL && w[0] != '\0' ? w : NULL;
}
