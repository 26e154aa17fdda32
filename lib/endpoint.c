/*
 * Endpoints: a server or client that connections are made from, and the public calls on it.
 *
 * An endpoint holds its current state (state.c) behind a lock: mtls_configure() builds a new
 * one beside it and swaps the pointer (commit or roll back, as hitch does on reload), and
 * every connection or verification takes a reference to the state current when it starts.
 * mtls_verify_chain_pem() runs the same decision as a handshake (verify_chain()) on a chain
 * given as PEM.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

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

struct error *endpoint_err(struct mtls *m)
{
	struct thread_results *r;

	if (m->kind == KIND_CONN)
		return &m->conn.err;
	if ((r = thread_results(true)) == NULL)
		return &m->ep.err;
	r->err_of = m->ep.id;
	return &r->err;
}

/* The error mtls_error() shows for m: a connection's own; for an endpoint, the calling
 * thread's about it, else the endpoint's own (set only when a slot could not be had). */
static const struct error *err_seen(const struct mtls *m)
{
	const struct thread_results *r;

	if (m->kind == KIND_CONN)
		return &m->conn.err;
	if ((r = thread_results(false)) != NULL && r->err_of == m->ep.id)
		return &r->err;
	return &m->ep.err;
}

/* A call on endpoint e succeeded: the calling thread has no error about it any more. */
static void endpoint_ok(struct mtls *e)
{
	struct thread_results *r = thread_results(false);

	if (r != NULL && r->err_of == e->ep.id)
		error_clear(&r->err);
}

/* Endpoint e goes away: drop what the calling thread kept about it (other threads' slots
 * are theirs, freed with them), and the slot itself once it holds nothing. */
static void endpoint_forget(const struct mtls *e)
{
	struct thread_results *r = thread_results(false);

	if (r == NULL)
		return;
	if (r->peer_of == e->ep.id) {
		identity_free(r->peer);
		r->peer = NULL;
		r->peer_of = 0;
		r->warning[0] = '\0';
	}
	if (r->err_of == e->ep.id)
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
	e->ep.id = atomic_fetch_add(&endpoint_ids, 1);
	e->ep.ocsp = ocsp_store_new();
	if (e->ep.ocsp == NULL) {
		free(e);
		return NULL;
	}
	pthread_mutex_init(&e->ep.lock, NULL);
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

struct state *endpoint_state(struct mtls *e)
{
	struct state *st;

	if (e->kind == KIND_CONN)
		return NULL;
	pthread_mutex_lock(&e->ep.lock);
	st = e->state != NULL ? state_ref(e->state) : NULL;
	pthread_mutex_unlock(&e->ep.lock);
	return st;
}

int mtls_configure(struct mtls *e, struct mtls_config *config)
{
	struct state *st, *old;
	bool staples;

	if (e == NULL || config == NULL || e->kind == KIND_CONN) {
		if (e != NULL)
			error_set(endpoint_err(e), MTLS_REASON_USAGE,
				  "mtls_configure needs a server or client endpoint and a config");
		return -1;
	}
	old = endpoint_state(e);
	st = state_build(e->kind == KIND_SERVER, config, old, e->ep.ocsp, endpoint_err(e));
	state_unref(old);
	if (st == NULL)
		return -1;
	staples = st->staples;
	/* a staple given with the config is in place before any handshake uses the state */
	if (staples)
		ocsp_store_take_config_staple(e->ep.ocsp, st, config);
	pthread_mutex_lock(&e->ep.lock);
	old = e->state;
	e->state = st;
	pthread_mutex_unlock(&e->ep.lock);
	state_unref(old);
	endpoint_ok(e);
	/* a new own certificate needs its staple: the fetcher may have one to do */
	if (staples)
		ocsp_store_notify(e->ep.ocsp);
	return 0;
}

static time_t state_time(struct mtls *e, int which)
{
	struct state *st = endpoint_state(e);
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
	struct state *st = endpoint_state((struct mtls *)(uintptr_t)e);

	*hits = *misses = 0;
	if (st == NULL)
		return;
	verify_cache_stats(st->vcache, hits, misses);
	state_unref(st);
}

void mtls_free(struct mtls *m)
{
	if (m == NULL)
		return;
	if (m->kind == KIND_CONN) {
		conn_free(m);
		return;
	}
	endpoint_forget(m);
	state_unref(m->state);
	ocsp_store_unref(m->ep.ocsp);
	pthread_mutex_destroy(&m->ep.lock);
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
			error_set(endpoint_err(e), MTLS_REASON_USAGE,
				  "mtls_verify_chain_pem needs an endpoint and a PEM chain");
		return -1;
	}
	/* verify into locals, then publish in the calling thread's slot: threads verifying
	 * on one endpoint at once never see (or free) each other's results */
	error_clear(&err);
	st = endpoint_state(e);
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
	certs = load_certs(&b, "certificate", &err);
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
		return error_set(&e->ep.err, MTLS_REASON_INTERNAL, "out of memory");
	}
	identity_free(r->peer);
	r->peer = peer;
	r->peer_of = e->ep.id;
	memcpy(r->warning, warning, sizeof(warning));
	r->err = err;
	r->err_of = e->ep.id;
	return rc;
}

const struct mtls_peer *mtls_verified_peer(const struct mtls *e)
{
	const struct thread_results *r;

	if (e == NULL || e->kind == KIND_CONN || (r = thread_results(false)) == NULL ||
	    r->peer_of != e->ep.id)
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
		w = m->conn.warning;
	else if ((r = thread_results(false)) != NULL && r->peer_of == m->ep.id)
		w = r->warning;
	return w != NULL && w[0] != '\0' ? w : NULL;
}
