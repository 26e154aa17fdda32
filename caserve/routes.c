/*
 * The HTTP side of the CA service: two libmicrohttpd daemons, one handler.
 *
 *   API (fed by front.c over socketpairs, after libmtls's handshake):
 *     POST /v1/enroll   a token and a CSR; no client certificate needed
 *     POST /v1/renew    a CSR; the client certificate being renewed
 *     POST /v1/revoke   a serial and a reason; an admin's client certificate
 *     and everything the plain port serves
 *   plain HTTP (its own listening socket), what is signed anyway:
 *     GET  /roots.pem   the root bundle
 *     GET  /crl         the CRL, DER (/crl.pem: PEM), with ETag and Last-Modified
 *     POST /ocsp, GET /ocsp/<base64 request>   OCSP (RFC 6960, RFC 5019)
 *
 * Bodies are bounded (SERVE_BODY_MAX for JSON, SERVE_OCSP_BODY_MAX for OCSP): a declared
 * length over the bound is refused before the body is read, a longer chunked body is
 * discarded as it comes and refused at its end (413). Request line and headers are bounded
 * by libmicrohttpd's per-connection memory limit, idle connections by its timeout.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <microhttpd.h>

#include "address.h"
#include "crlwait.h"
#include "log.h"
#include "ocsp.h"
#include "ocsp_get.h"
#include "prefer.h"
#include "serve.h"

struct routes;

struct daemon_ctx {
	struct routes *r;
	bool api;
	struct MHD_Daemon *mhd;
};

struct routes {
	struct serve *s;
	struct daemon_ctx api;
	struct daemon_ctx plain;
	atomic_bool stopping; /* a request waiting for the CA's lock gives up */
};

struct request {
	char *body;
	size_t len;
	size_t max;
	size_t dropped; /* bytes past the bound, read and dropped */
	bool too_large;
	/* GET /crl with "Prefer: wait=N": 0 not asked, N the seconds granted
	 * (the request may be held, crlwait.h), -1 asked but not held (answered at once) */
	long wait_s;
	bool wait_told; /* its first hold logged (debug) */
	struct crlwait_entry wait;
};

/* ---- responses ---- */

static enum MHD_Result send_buffer(struct MHD_Connection *conn, unsigned status, const char *type,
				   const void *data, size_t len, const char *etag)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	resp = MHD_create_response_from_buffer(len, (void *)(uintptr_t)data, MHD_RESPMEM_MUST_COPY);
	if (resp == NULL)
		return MHD_NO;
	MHD_add_response_header(resp, "Content-Type", type);
	MHD_add_response_header(resp, "Cache-Control", "no-store");
	if (etag != NULL)
		MHD_add_response_header(resp, "ETag", etag);
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *conn, unsigned status, json_t *j)
{
	char *text = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
	enum MHD_Result ret;

	json_decref(j);
	if (text == NULL)
		return send_buffer(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "application/json",
				   "{\"error\":\"internal\",\"message\":\"out of memory\"}", 47,
				   NULL);
	ret = send_buffer(conn, status, "application/json", text, strlen(text), NULL);
	free(text);
	return ret;
}

static enum MHD_Result send_error_quiet(struct MHD_Connection *conn, unsigned status,
					const char *code, const char *message)
{
	return send_json(conn, status, json_pack("{s:s,s:s}", "error", code, "message", message));
}

/* Who sent the request on conn: the API's verified peer, or the plain port's client. */
static void request_peer(struct MHD_Connection *conn, char *addr, size_t len, const char **id)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	const struct front_peer *p = ci != NULL ? ci->socket_context : NULL;

	*id = "";
	addr[0] = '\0';
	if (p != NULL) {
		snprintf(addr, len, "%s", p->addr);
		*id = p->has_cert ? p->identity : "";
		return;
	}
	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (ci != NULL && ci->client_addr != NULL)
		address_format(ci->client_addr,
			       ci->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
								      : sizeof(struct sockaddr_in),
			       addr, len);
}

/* A refusal of the HTTP layer itself (route, method, body, content type): answered and
 * logged, one line (the log's rate limit keeps a scanner from flooding it). */
static enum MHD_Result send_error(struct MHD_Connection *conn, unsigned status, const char *code,
				  const char *message)
{
	char addr[80];
	const char *id;

	request_peer(conn, addr, sizeof(addr), &id);
	LOG(status >= 500 ? LOG_ERROR : LOG_WARN, "http_refused", LS("peer", addr),
	    LS("identity", id), LN("status", status), LS("reason", code), LS("message", message));
	return send_error_quiet(conn, status, code, message);
}

static void rfc3339(time_t t, char out[32])
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void http_date(time_t t, char out[40])
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, 40, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* A signed object that caches well: ETag, Last-Modified, Expires, and 304 when the client
 * has it already. */
static enum MHD_Result send_signed(struct MHD_Connection *conn, const char *type, const void *data,
				   size_t len, const char *etag, time_t this_update,
				   time_t next_update, time_t now, long wait_applied)
{
	const char *inm =
		MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
	struct MHD_Response *resp;
	enum MHD_Result ret;
	unsigned status = MHD_HTTP_OK;
	char lm[40], ex[40], cc[96], applied[32];
	long long age = next_update > now ? (long long)(next_update - now) : 0;

	if (inm != NULL && strstr(inm, etag) != NULL) {
		status = MHD_HTTP_NOT_MODIFIED;
		resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
	} else {
		resp = MHD_create_response_from_buffer(len, (void *)(uintptr_t)data,
						       MHD_RESPMEM_MUST_COPY);
	}
	if (resp == NULL)
		return MHD_NO;
	/* a proxy may keep it at most an hour: a revocation must not hide behind a cache */
	snprintf(cc, sizeof(cc), "max-age=%lld, public, no-transform, must-revalidate",
		 age < 3600 ? age : 3600);
	MHD_add_response_header(resp, "Content-Type", type);
	MHD_add_response_header(resp, "ETag", etag);
	MHD_add_response_header(resp, "Cache-Control", cc);
	if (this_update > 0) {
		http_date(this_update, lm);
		MHD_add_response_header(resp, "Last-Modified", lm);
	}
	if (next_update > 0) {
		http_date(next_update, ex);
		MHD_add_response_header(resp, "Expires", ex);
	}
	/* the long poll was granted: the client may ask again at once (crlwait.h) */
	if (wait_applied > 0) {
		snprintf(applied, sizeof(applied), "wait=%ld", wait_applied);
		MHD_add_response_header(resp, "Preference-Applied", applied);
		MHD_add_response_header(resp, "Vary", "Prefer");
	}
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* ---- public data ---- */

/* The client's address, as the per-address bound counts it: the plain port's peer, or the
 * API's as front.c saw it ("203.0.113.7:51234", "[2001:db8::1]:443"; libmicrohttpd sees a
 * fake address there). */
static void client_ip(const struct daemon_ctx *d, struct MHD_Connection *conn, char *out,
		      size_t len)
{
	const union MHD_ConnectionInfo *ci;
	const struct front_peer *p;
	struct sockaddr_in6 a6 = {.sin6_family = AF_INET6};
	struct sockaddr_in a4 = {.sin_family = AF_INET};
	char host[64];
	const char *colon;

	out[0] = '\0';
	if (!d->api) {
		ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
		crlwait_key(ci != NULL ? ci->client_addr : NULL, out, len);
		return;
	}
	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	p = ci != NULL ? ci->socket_context : NULL;
	if (p == NULL)
		return;
	if (p->addr[0] == '[') {
		snprintf(host, sizeof(host), "%s", p->addr + 1);
		host[strcspn(host, "]")] = '\0';
	} else {
		colon = strrchr(p->addr, ':');
		snprintf(host, sizeof(host), "%.*s",
			 (int)(colon != NULL ? (size_t)(colon - p->addr) : strlen(p->addr)),
			 p->addr);
	}
	if (inet_pton(AF_INET6, host, &a6.sin6_addr) == 1)
		crlwait_key((const struct sockaddr *)&a6, out, len);
	else if (inet_pton(AF_INET, host, &a4.sin_addr) == 1)
		crlwait_key((const struct sockaddr *)&a4, out, len);
	/* (anything else, a unix socket's peer: "", all of them counted together) */
}

/* The long poll asked for by a GET /crl: the seconds granted, or 0. On the API port, less
 * than --idle-timeout: the TLS front closes a connection that moves nothing that long, and
 * the held request is answered up to the expiry's tick (a second) after its deadline. */
static long wait_asked(struct daemon_ctx *d, struct MHD_Connection *conn, const char *method)
{
	const char *prefer;
	long n, cap = CRLWAIT_MAX_SECONDS;

	if (d->r->s->crlwait == NULL || strcmp(method, "GET") != 0)
		return 0;
	if (d->api) {
		long long idle_s = d->r->s->o->idle_timeout_ms / 1000 - 2;

		if (idle_s < 1)
			return 0;
		if (idle_s < cap)
			cap = (long)idle_s;
	}
	prefer = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Prefer");
	n = prefer != NULL ? prefer_wait(prefer) : -1;
	if (n <= 0)
		return 0;
	return n < cap ? n : cap;
}

static enum MHD_Result get_crl(struct daemon_ctx *d, struct MHD_Connection *conn, bool pem,
			       const char *method, struct request *rq)
{
	struct serve *s = d->r->s;
	char err[512];
	enum MHD_Result ret;
	time_t now = time(NULL);
	long long now_ms = crlwait_now_ms();
	const char *inm;

	if (rq->wait_s == 0) {
		rq->wait_s = wait_asked(d, conn, method);
		rq->wait.deadline_ms = now_ms + rq->wait_s * 1000;
		client_ip(d, conn, rq->wait.ip, sizeof(rq->wait.ip));
	}
	pthread_mutex_lock(&s->lock);
	if (publish_refresh_crl(s, err, sizeof(err)) != 0 && s->crl.der == NULL) {
		pthread_mutex_unlock(&s->lock);
		LOG(LOG_ERROR, "crl_unavailable", LS("message", err));
		return send_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "crl_unavailable",
				  "no CRL has been published yet; run 'mtls ca crl'");
	}
	/* the client has the current CRL: held until it changes or the wait ends, under the
	 * lock a new CRL is published under, so that none slips in between */
	inm = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
	if (rq->wait_s > 0 && now_ms < rq->wait.deadline_ms && inm != NULL &&
	    strstr(inm, s->crl.etag) != NULL) {
		int held = crlwait_hold(s->crlwait, &rq->wait, conn);

		if (held == 0) {
			pthread_mutex_unlock(&s->lock);
			if (!rq->wait_told)
				LOG(LOG_DEBUG, "crl_held", LS("peer", rq->wait.ip),
				    LN("wait_seconds", rq->wait_s));
			rq->wait_told = true;
			return MHD_YES;
		}
		if (held < 0) {
			LOG(LOG_WARN, "crl_wait_refused", LS("peer", rq->wait.ip),
			    LN("held", (long long)crlwait_held(s->crlwait)),
			    LS("message", "too many held CRL requests (in all, or from this "
					  "address): answered at once; the client polls"));
			rq->wait_s =
				-1; /* a plain GET's answer: the client learns it was not held */
		}
	}
	/* the lock is held while libmicrohttpd copies the bytes: a refresh cannot free them */
	ret = pem ? send_signed(conn, "application/x-pem-file", s->crl.pem, s->crl.pem_len,
				s->crl.etag, s->crl.this_update, s->crl.next_update, now,
				rq->wait_s)
		  : send_signed(conn, "application/pkix-crl", s->crl.der, s->crl.der_len,
				s->crl.etag, s->crl.this_update, s->crl.next_update, now,
				rq->wait_s);
	pthread_mutex_unlock(&s->lock);
	return ret;
}

static enum MHD_Result do_ocsp(struct routes *r, struct MHD_Connection *conn,
			       const unsigned char *req, size_t len, bool cacheable)
{
	struct serve *s = r->s;
	unsigned char *resp = NULL;
	size_t resp_len = 0;
	struct ocsp_answer meta = {0};
	char err[512];
	enum MHD_Result ret;
	time_t now = time(NULL);

	pthread_mutex_lock(&s->lock);
	(void)publish_refresh_crl(s, err, sizeof(err)); /* forgets answers after a revocation */
	if (ocsp_respond(s->ocsp, s->ca, req, len, now, &resp, &resp_len, &meta) != 0) {
		pthread_mutex_unlock(&s->lock);
		return send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal",
				  "the OCSP answer could not be made");
	}
	pthread_mutex_unlock(&s->lock);
	if (cacheable && meta.etag[0] != '\0')
		ret = send_signed(conn, "application/ocsp-response", resp, resp_len, meta.etag,
				  meta.this_update, meta.next_update, now, 0);
	else
		ret = send_buffer(conn, MHD_HTTP_OK, "application/ocsp-response", resp, resp_len,
				  NULL);
	free(resp);
	return ret;
}

/* ---- the API ---- */

/* An admin: a client certificate (clientAuth: the API lets server certificates in for
 * their own renewal alone) with an --admin-uri or --admin-cn. */
static bool is_admin(const struct serve *s, const struct front_peer *p)
{
	if (p == NULL || !p->has_cert || !p->client_eku)
		return false;
	for (size_t i = 0; i < s->o->n_admin_uris; i++)
		for (char **u = p->uris; *u != NULL; u++)
			if (strcmp(*u, s->o->admin_uris[i]) == 0)
				return true;
	for (size_t i = 0; i < s->o->n_admin_cns; i++)
		if (p->cn[0] != '\0' && strcmp(p->cn, s->o->admin_cns[i]) == 0)
			return true;
	return false;
}

static json_t *parse_body(const struct request *rq, struct MHD_Connection *conn,
			  enum MHD_Result *ret)
{
	const char *type =
		MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
	json_error_t je;
	json_t *j;
	char msg[300];

	if (type == NULL || strncasecmp(type, "application/json", 16) != 0) {
		*ret = send_error(conn, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "content_type",
				  "send the request as Content-Type: application/json");
		return NULL;
	}
	j = json_loadb(rq->body != NULL ? rq->body : "", rq->len, JSON_REJECT_DUPLICATES, &je);
	if (j == NULL || !json_is_object(j)) {
		snprintf(msg, sizeof(msg), "the body is not a JSON object (%s)",
			 j == NULL ? je.text : "another JSON value");
		json_decref(j);
		*ret = send_error(conn, MHD_HTTP_BAD_REQUEST, "bad_json", msg);
		return NULL;
	}
	return j;
}

static enum MHD_Result send_issued(struct MHD_Connection *conn, struct serve *s,
				   const struct svc_issued *is)
{
	char nb[32], na[32], ra[32];
	json_t *j;

	rfc3339(is->not_before, nb);
	rfc3339(is->not_after, na);
	rfc3339(is->renew_after, ra);
	/* the roots are replaced under the lock (a rollover step): copied under it */
	pthread_mutex_lock(&s->lock);
	j = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s%,s:s%}", "serial", is->serial, "profile",
		      is->profile, "names", is->names != NULL ? is->names : "", "not_before", nb,
		      "not_after", na, "renew_after", ra, "chain", is->chain_pem, is->chain_len,
		      "roots", s->roots_pem, s->roots_len);
	pthread_mutex_unlock(&s->lock);
	return send_json(conn, MHD_HTTP_OK, j);
}

/* One operation of the API, run by locked(). */
struct op {
	struct routes *r;
	struct serve *s;
	const struct front_peer *p;
	const char *token, *csr, *serial, *reason, *actor;
	bool same_key;
	struct svc_issued *is;
	struct svc_revoked *rv;
	struct svc_error *e;
};

/* Run fn under the service lock and the CA directory's lock. The CA's lock is held by
 * another process at times (a local `mtls ca` command, a backup): it is waited for without
 * holding the service lock, so that the CRL, OCSP and the main loop go on meanwhile, and at
 * most SERVE_LOCK_WAIT_MS (or until the service stops). */
static int locked(struct op *o, int (*fn)(struct op *))
{
	struct timespec pause = {0, 20 * 1000 * 1000};
	char err[256];
	int rc;

	for (long waited = 0;; waited += 20) {
		pthread_mutex_lock(&o->s->lock);
		rc = authority_trylock(o->s->ca, err, sizeof(err));
		if (rc == 0)
			break;
		pthread_mutex_unlock(&o->s->lock);
		if (rc < 0)
			return svc_fail(o->e, 503, "store_unavailable", "%s", err);
		if (waited >= SERVE_LOCK_WAIT_MS || atomic_load(&o->r->stopping))
			return svc_fail(o->e, 503, "store_unavailable",
					"the CA directory %s is locked by another process (a local "
					"'mtls ca' command, a backup holding its lock file); try "
					"again",
					o->s->ca->dir);
		nanosleep(&pause, NULL);
	}
	rc = fn(o);
	authority_unlock(o->s->ca);
	pthread_mutex_unlock(&o->s->lock);
	return rc;
}

static int op_enroll(struct op *o)
{
	return svc_enroll(o->s->ca, &o->s->policy, o->token, o->csr, strlen(o->csr), time(NULL),
			  o->actor, o->is, o->e);
}

static enum MHD_Result refused(struct MHD_Connection *conn, const char *what,
			       const struct front_peer *p, const struct svc_error *e)
{
	LOG(e->status >= 500 ? LOG_ERROR : LOG_WARN, "api_refused", LS("op", what),
	    LS("peer", p != NULL ? p->addr : ""),
	    LS("identity", p != NULL && p->has_cert ? p->identity : ""), LN("status", e->status),
	    LS("reason", e->code), LS("message", e->message));
	return send_error_quiet(conn, (unsigned)e->status, e->code, e->message);
}

static enum MHD_Result api_enroll(struct routes *r, struct MHD_Connection *conn,
				  const struct front_peer *p, const struct request *rq)
{
	struct serve *s = r->s;
	enum MHD_Result ret = MHD_NO;
	json_t *j = parse_body(rq, conn, &ret);
	const char *token = NULL, *csr = NULL;
	struct svc_issued is = {0};
	struct svc_error e = {0};
	char actor[128];

	if (j == NULL)
		return ret;
	if (json_unpack(j, "{s:s,s:s}", "token", &token, "csr", &csr) != 0) {
		json_decref(j);
		return send_error(
			conn, MHD_HTTP_BAD_REQUEST, "bad_request",
			"give {\"token\": \"mtls1...\", \"csr\": \"-----BEGIN CERTIFICATE "
			"REQUEST-----...\"}");
	}
	snprintf(actor, sizeof(actor), "enroll@%s", p != NULL ? p->addr : "?");
	if (locked(&(struct op){.r = r,
				.s = s,
				.token = token,
				.csr = csr,
				.actor = actor,
				.is = &is,
				.e = &e},
		   op_enroll) != 0) {
		json_decref(j);
		return refused(conn, "enroll", p, &e);
	}
	json_decref(j);
	LOG(LOG_INFO, "enrolled", LS("peer", p != NULL ? p->addr : ""), LS("serial", is.serial),
	    LS("profile", is.profile), LS("names", is.names));
	ret = send_issued(conn, s, &is);
	svc_issued_free(&is);
	return ret;
}

/* The peer's certificate as the inventory holds it (its DER's SHA-256 must be the one the
 * handshake verified), into row (valid until the next store call). 0, or -1 with e. */
static int peer_row(struct serve *s, const struct front_peer *p, struct store_cert *row,
		    struct svc_error *e)
{
	unsigned char md[32];
	unsigned int n = 0;
	char hex[65];

	switch (store_get_cert(s->ca->store, p->serial, row)) {
	case 0: break;
	case 1:
		return svc_fail(
			e, 403, "cert_unknown",
			"certificate %s was not issued by this CA's inventory; enroll with a token",
			p->serial);
	default: return svc_fail(e, 503, "store_unavailable", "%s", store_error(s->ca->store));
	}
	EVP_Digest(row->der, row->der_len, md, &n, EVP_sha256(), NULL);
	for (unsigned i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	if (strcmp(hex, p->cert_sha256) != 0)
		return svc_fail(e, 403, "cert_unknown",
				"the certificate presented is not the one the inventory holds for "
				"serial %s",
				p->serial);
	return 0;
}

static X509 *peer_cert(struct serve *s, const struct front_peer *p, struct svc_error *e)
{
	struct store_cert row;
	const unsigned char *q;
	X509 *x;

	if (peer_row(s, p, &row, e) != 0)
		return NULL;
	q = row.der;
	x = d2i_X509(NULL, &q, (long)row.der_len);
	if (x == NULL)
		svc_fail(e, 500, "internal", "the inventory's copy of %s does not parse",
			 p->serial);
	return x;
}

static int op_renew(struct op *o)
{
	X509 *x = peer_cert(o->s, o->p, o->e);
	int rc;

	if (x == NULL)
		return -1;
	rc = svc_renew(o->s->ca, &o->s->policy, x, o->csr, strlen(o->csr), o->same_key, time(NULL),
		       o->actor, o->is, o->e);
	X509_free(x);
	return rc;
}

static enum MHD_Result api_renew(struct routes *r, struct MHD_Connection *conn,
				 const struct front_peer *p, const struct request *rq)
{
	struct serve *s = r->s;
	enum MHD_Result ret = MHD_NO;
	json_t *j;
	const char *csr = NULL;
	int same_key = 0;
	struct svc_issued is = {0};
	struct svc_error e = {0};
	char actor[2200];

	if (p == NULL || !p->has_cert) {
		svc_fail(&e, 401, "certificate_required",
			 "renewal authenticates with the certificate being renewed: connect with "
			 "it as the client certificate");
		return refused(conn, "renew", p, &e);
	}
	j = parse_body(rq, conn, &ret);
	if (j == NULL)
		return ret;
	if (json_unpack(j, "{s:s,s?b}", "csr", &csr, "same_key", &same_key) != 0) {
		json_decref(j);
		return send_error(conn, MHD_HTTP_BAD_REQUEST, "bad_request",
				  "give {\"csr\": \"-----BEGIN CERTIFICATE REQUEST-----...\"}");
	}
	snprintf(actor, sizeof(actor), "%s@%s", p->identity, p->addr);
	if (locked(&(struct op){.r = r,
				.s = s,
				.p = p,
				.csr = csr,
				.same_key = same_key != 0,
				.actor = actor,
				.is = &is,
				.e = &e},
		   op_renew) != 0) {
		json_decref(j);
		return refused(conn, "renew", p, &e);
	}
	json_decref(j);
	LOG(LOG_INFO, "renewed", LS("peer", p->addr), LS("identity", p->identity),
	    LS("old_serial", p->serial), LS("serial", is.serial));
	ret = send_issued(conn, s, &is);
	svc_issued_free(&is);
	return ret;
}

static int op_revoke(struct op *o)
{
	struct store_cert row;

	/* the admin's own certificate, as the inventory has it now: the TLS configuration of a
	 * connection learns of a revocation only when it is made (a kept-alive connection
	 * never), the inventory at once */
	if (peer_row(o->s, o->p, &row, o->e) != 0)
		return -1;
	if (row.revoked)
		return svc_fail(o->e, 403, "cert_revoked",
				"the admin certificate presented (serial %s) is revoked; it can no "
				"longer revoke: use another admin's certificate",
				o->p->serial);
	return svc_revoke(o->s->ca, o->serial, o->reason, time(NULL), o->actor, o->rv, o->e);
}

static enum MHD_Result api_revoke(struct routes *r, struct MHD_Connection *conn,
				  const struct front_peer *p, const struct request *rq)
{
	struct serve *s = r->s;
	enum MHD_Result ret = MHD_NO;
	json_t *j;
	const char *serial = NULL, *reason = NULL;
	struct svc_revoked rv = {0};
	struct svc_error e = {0};
	char actor[2200], at[32], err[256];

	if (p == NULL || !p->has_cert) {
		svc_fail(
			&e, 401, "certificate_required",
			"revocation needs an admin client certificate (mtls ca serve --admin-uri)");
		return refused(conn, "revoke", p, &e);
	}
	if (!is_admin(s, p)) {
		svc_fail(&e, 403, "not_admin",
			 "%s is not an admin of this CA (mtls ca serve --admin-uri / --admin-cn)",
			 p->identity);
		return refused(conn, "revoke", p, &e);
	}
	j = parse_body(rq, conn, &ret);
	if (j == NULL)
		return ret;
	if (json_unpack(j, "{s:s,s?s}", "serial", &serial, "reason", &reason) != 0) {
		json_decref(j);
		return send_error(conn, MHD_HTTP_BAD_REQUEST, "bad_request",
				  "give {\"serial\": \"HEX\", \"reason\": \"keyCompromise\"}");
	}
	snprintf(actor, sizeof(actor), "%s@%s", p->identity, p->addr);
	if (locked(&(struct op){.r = r,
				.s = s,
				.p = p,
				.serial = serial,
				.reason = reason,
				.actor = actor,
				.rv = &rv,
				.e = &e},
		   op_revoke) != 0) {
		json_decref(j);
		return refused(conn, "revoke", p, &e);
	}
	pthread_mutex_lock(&s->lock);
	if (publish_refresh_crl(s, err, sizeof(err)) != 0)
		LOG(LOG_ERROR, "crl_unavailable", LS("message", err));
	ocsp_responder_forget(s->ocsp);
	pthread_mutex_unlock(&s->lock);
	LOG(LOG_INFO, "revoked", LS("peer", p->addr), LS("identity", p->identity),
	    LS("serial", rv.serial), LS("reason", reason != NULL ? reason : "unspecified"),
	    LN("crl_number", rv.crl_number));
	json_decref(j); /* reason pointed into it */
	rfc3339(rv.revoked_at, at);
	return send_json(conn, MHD_HTTP_OK,
			 json_pack("{s:s,s:s,s:I}", "serial", rv.serial, "revoked_at", at,
				   "crl_number", (json_int_t)rv.crl_number));
}

/* ---- dispatch ---- */

static enum MHD_Result route(struct daemon_ctx *d, struct MHD_Connection *conn, const char *url,
			     const char *method, struct request *rq)
{
	struct serve *s = d->r->s;
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	const struct front_peer *p = d->api && ci != NULL ? ci->socket_context : NULL;
	bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
	bool post = strcmp(method, "POST") == 0;

	if (rq->too_large)
		return send_error(conn, MHD_HTTP_CONTENT_TOO_LARGE, "too_large",
				  "the request body is larger than this service accepts");
	if (strcmp(url, "/roots.pem") == 0 && get) {
		enum MHD_Result ret;

		/* copied under the lock a rollover step replaces the roots under */
		pthread_mutex_lock(&s->lock);
		ret = send_signed(conn, "application/x-pem-file", s->roots_pem, s->roots_len,
				  s->roots_etag, 0, 0, time(NULL), 0);
		pthread_mutex_unlock(&s->lock);
		return ret;
	}
	if ((strcmp(url, "/crl") == 0 || strcmp(url, "/crl.pem") == 0) && get)
		return get_crl(d, conn, strcmp(url, "/crl.pem") == 0, method, rq);
	if (strcmp(url, "/ocsp") == 0 && post)
		return do_ocsp(d->r, conn, (const unsigned char *)rq->body, rq->len, false);
	if (strncmp(url, "/ocsp/", 6) == 0 && get) {
		size_t len = 0;
		unsigned char *der = ocsp_get_decode(url + 6, SERVE_OCSP_BODY_MAX, &len);
		enum MHD_Result ret;

		/* undecodable: the responder answers malformedRequest itself */
		ret = do_ocsp(d->r, conn, der != NULL ? der : (const unsigned char *)"", len, true);
		free(der);
		return ret;
	}
	if (d->api && post && strcmp(url, "/v1/enroll") == 0)
		return api_enroll(d->r, conn, p, rq);
	if (d->api && post && strcmp(url, "/v1/renew") == 0)
		return api_renew(d->r, conn, p, rq);
	if (d->api && post && strcmp(url, "/v1/revoke") == 0)
		return api_revoke(d->r, conn, p, rq);
	if (strcmp(url, "/roots.pem") == 0 || strcmp(url, "/crl") == 0 ||
	    strcmp(url, "/crl.pem") == 0 || strncmp(url, "/ocsp", 5) == 0 ||
	    (d->api && strncmp(url, "/v1/", 4) == 0))
		return send_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method",
				  "method not allowed here");
	return send_error(conn, MHD_HTTP_NOT_FOUND, "not_found",
			  d->api ? "no such route (POST /v1/enroll, /v1/renew, /v1/revoke)"
				 : "no such route (GET /roots.pem, /crl, /crl.pem; OCSP at /ocsp)");
}

/* The client's address as it is to be logged: the API's is the one front.c accepted. */
static const char *peer_addr(const struct daemon_ctx *d, struct MHD_Connection *conn)
{
	static _Thread_local char buf[64]; /* one per thread: each daemon has one */
	const union MHD_ConnectionInfo *ci;

	if (d->api) {
		ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
		return ci != NULL && ci->socket_context != NULL
			       ? ((const struct front_peer *)ci->socket_context)->addr
			       : "";
	}
	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (ci == NULL || ci->client_addr == NULL)
		return "";
	address_format(ci->client_addr,
		       ci->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
							      : sizeof(struct sockaddr_in),
		       buf, sizeof(buf));
	return buf;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_len, void **req_cls)
{
	struct daemon_ctx *d = cls;
	struct request *rq = *req_cls;

	(void)version;
	if (rq == NULL) {
		const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
							     MHD_HTTP_HEADER_CONTENT_LENGTH);

		rq = calloc(1, sizeof(*rq));
		if (rq == NULL)
			return MHD_NO;
		rq->max = strncmp(url, "/ocsp", 5) == 0 ? SERVE_OCSP_BODY_MAX : SERVE_BODY_MAX;
		*req_cls = rq;
		/* a declared length past the bound: refused before a byte of it is read */
		if (cl != NULL && strtoull(cl, NULL, 10) > rq->max) {
			rq->too_large = true;
			return send_error(conn, MHD_HTTP_CONTENT_TOO_LARGE, "too_large",
					  "the request body is larger than this service accepts");
		}
		return MHD_YES;
	}
	if (*upload_len > 0) {
		if (!rq->too_large && rq->len + *upload_len <= rq->max) {
			char *grown = realloc(rq->body, rq->len + *upload_len + 1);

			if (grown == NULL)
				return MHD_NO;
			rq->body = grown;
			memcpy(rq->body + rq->len, upload, *upload_len);
			rq->len += *upload_len;
			rq->body[rq->len] = '\0';
		} else {
			rq->too_large = true;
			free(rq->body);
			rq->body = NULL;
			rq->len = 0;
			rq->dropped += *upload_len;
			/* no answer can be queued before the body ends: an endless one (chunked)
			 * is cut off */
			if (rq->dropped > SERVE_DISCARD_MAX) {
				LOG(LOG_WARN, "request_refused", LS("peer", peer_addr(d, conn)),
				    LS("url", url), LS("reason", "too_large"),
				    LS("message", "a body far past the bound: connection closed"));
				return MHD_NO;
			}
		}
		*upload_len = 0;
		return MHD_YES;
	}
	return route(d, conn, url, method, rq);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct daemon_ctx *d = cls;
	struct request *rq = *req_cls;

	(void)conn;
	(void)toe;
	if (rq != NULL) {
		crlwait_forget(d->r->s->crlwait, &rq->wait);
		free(rq->body);
		free(rq);
		*req_cls = NULL;
	}
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
			  enum MHD_ConnectionNotificationCode toe)
{
	struct daemon_ctx *d = cls;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci =
			MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
		uint64_t id;

		if (ci != NULL && front_fake_id(ci->client_addr, &id))
			*socket_context = front_claim(d->r->s->front, id);
	} else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
		front_peer_free(*socket_context);
		*socket_context = NULL;
	}
}

struct routes *routes_start(struct serve *s, int http_fd, char *err, size_t err_len)
{
	struct routes *r = calloc(1, sizeof(*r));
	const struct serve_options *o = s->o;
	unsigned timeout = (unsigned)((o->idle_timeout_ms + 999) / 1000);
	sigset_t all, old;

	if (r == NULL) {
		snprintf(err, err_len, "out of memory");
		return NULL;
	}
	r->s = s;
	r->api = (struct daemon_ctx){.r = r, .api = true};
	r->plain = (struct daemon_ctx){.r = r, .api = false};
	/* their threads take no signal: the main loop handles them */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r->api.mhd = MHD_start_daemon(
		MHD_USE_NO_LISTEN_SOCKET | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
			MHD_USE_ITC | MHD_ALLOW_SUSPEND_RESUME,
		0, NULL, NULL, on_request, &r->api, MHD_OPTION_CONNECTION_LIMIT,
		(unsigned)o->max_connections, MHD_OPTION_CONNECTION_TIMEOUT, timeout,
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)32768, MHD_OPTION_STRICT_FOR_CLIENT, 1,
		MHD_OPTION_NOTIFY_CONNECTION, on_connection, &r->api, MHD_OPTION_NOTIFY_COMPLETED,
		on_completed, &r->api, MHD_OPTION_END);
	if (r->api.mhd != NULL && http_fd >= 0)
		/* held CRL requests (crlwait.h) come on top of the limits: they never take the
		 * room of the others */
		r->plain.mhd = MHD_start_daemon(
			MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME,
			0, NULL, NULL, on_request, &r->plain, MHD_OPTION_LISTEN_SOCKET, http_fd,
			MHD_OPTION_CONNECTION_LIMIT,
			(unsigned)(SERVE_HTTP_CONNECTIONS + CRLWAIT_MAX),
			MHD_OPTION_PER_IP_CONNECTION_LIMIT,
			(unsigned)(SERVE_HTTP_CONNECTIONS / 4 + CRLWAIT_PER_IP),
			MHD_OPTION_CONNECTION_TIMEOUT, timeout, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
			(size_t)16384, MHD_OPTION_STRICT_FOR_CLIENT, 1, MHD_OPTION_NOTIFY_COMPLETED,
			on_completed, &r->plain, MHD_OPTION_END);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r->api.mhd == NULL || (http_fd >= 0 && r->plain.mhd == NULL)) {
		snprintf(err, err_len, "the HTTP daemons could not start (libmicrohttpd)");
		routes_stop(r);
		return NULL;
	}
	return r;
}

int routes_add_api(struct routes *r, int fd, uint64_t id)
{
	struct sockaddr_in6 sa;

	front_fake_address(id, &sa);
	return MHD_add_connection(r->api.mhd, fd, (const struct sockaddr *)&sa, sizeof(sa)) ==
			       MHD_YES
		       ? 0
		       : -1;
}

void routes_stop(struct routes *r)
{
	if (r == NULL)
		return;
	atomic_store(&r->stopping, true);
	/* libmicrohttpd refuses to stop with suspended connections: every held one resumed
	 * first (and none held after), and given a moment to be answered (304) rather than cut */
	crlwait_stop(r->s->crlwait);
	(void)crlwait_drained(r->s->crlwait, 1000);
	if (r->api.mhd != NULL)
		MHD_stop_daemon(r->api.mhd);
	if (r->plain.mhd != NULL)
		MHD_stop_daemon(r->plain.mhd);
	free(r);
}
