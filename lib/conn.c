/*
 * Connections, from beginning to end: made from an endpoint (mtls_accept_fd(),
 * mtls_connect_fd()) on the endpoint's current state, the handshake (with its failure
 * reasons), I/O, orderly shutdown, the blocking helpers built on poll(), and freeing.
 *
 * A connection keeps a reference to the state it started with (state.c) and reads it without
 * a lock: a reload of its endpoint never reaches a live connection.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>

#include "internal.h"

/* --- making and freeing a connection ---------------------------------------------- */

static struct mtls *conn_new(struct mtls *e, int fd, const char *name)
{
	struct state *st;
	struct mtls *c;
	BIO *bio;

	if (e == NULL)
		return NULL;
	st = endpoint_state(e);
	if (st == NULL) {
		error_set(endpoint_err(e), MTLS_REASON_USAGE, "endpoint is not configured");
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		state_unref(st);
		error_set(endpoint_err(e), MTLS_REASON_INTERNAL, "out of memory");
		return NULL;
	}
	c->kind = KIND_CONN;
	c->state = st;
	if (name != NULL && (c->conn.server_name = strdup(name)) == NULL)
		goto oom;
	c->conn.ssl = SSL_new(st->ssl_ctx);
	if (c->conn.ssl == NULL || (bio = sockbio_new(fd)) == NULL)
		goto oom;
	SSL_set_bio(c->conn.ssl, bio, bio);
	SSL_set_app_data(c->conn.ssl, c);
	return c;
oom:
	error_set_ssl(endpoint_err(e), MTLS_REASON_INTERNAL, "cannot create connection");
	conn_free(c);
	return NULL;
}

struct mtls *mtls_accept_fd(struct mtls *server, int fd)
{
	struct mtls *c;

	if (server == NULL || server->kind != KIND_SERVER) {
		if (server != NULL)
			error_set(endpoint_err(server), MTLS_REASON_USAGE,
				  "mtls_accept_fd needs a server endpoint");
		return NULL;
	}
	c = conn_new(server, fd, NULL);
	if (c == NULL)
		return NULL;
	if (c->state->cert_not_after == 0) {
		error_set(endpoint_err(server), MTLS_REASON_CONFIG,
			  "server endpoint has no certificate: configure a cert and key");
		conn_free(c);
		return NULL;
	}
	SSL_set_accept_state(c->conn.ssl);
	return c;
}

struct mtls *mtls_connect_fd(struct mtls *client, int fd, const char *server_name)
{
	struct mtls *c;
	struct state *st;

	if (client == NULL || client->kind != KIND_CLIENT) {
		if (client != NULL)
			error_set(endpoint_err(client), MTLS_REASON_USAGE,
				  "mtls_connect_fd needs a client endpoint");
		return NULL;
	}
	c = conn_new(client, fd, server_name);
	if (c == NULL)
		return NULL;
	st = c->state;
	if ((server_name == NULL || server_name[0] == '\0') &&
	    !(st->config->insecure & INSECURE_NO_VERIFY_NAME)) {
		error_set(endpoint_err(client), MTLS_REASON_USAGE,
			  "no server name given: pass the DNS name or IP address the server's "
			  "certificate must carry");
		conn_free(c);
		return NULL;
	}
	SSL_set_connect_state(c->conn.ssl);
	if (server_name != NULL && server_name[0] != '\0') {
		unsigned char addr[16];

		/* SNI only for DNS names, as RFC 6066 says */
		if (inet_pton(AF_INET, server_name, addr) != 1 &&
		    inet_pton(AF_INET6, server_name, addr) != 1)
			SSL_set_tlsext_host_name(c->conn.ssl,
						 c->conn.server_name); /* ours, not const */
		SSL_SESSION *session = tickets_take(&st->tickets, server_name);

		if (session != NULL) {
			SSL_set_session(c->conn.ssl, session); /* takes its own reference */
			SSL_SESSION_free(session);
		}
	}
	return c;
}

/* Whether a connection that ended this way leaves its session resumable: yes unless the
 * TLS layer itself failed (a bad record, an alert). */
static bool session_survives(enum mtls_reason reason)
{
	return reason == MTLS_REASON_NONE || reason == MTLS_REASON_TRUNCATED ||
	       reason == MTLS_REASON_IO || reason == MTLS_REASON_TIMEOUT;
}

void conn_free(struct mtls *c)
{
	if (c->conn.ssl != NULL && c->conn.handshake_done && session_survives(c->conn.err.reason))
		/* OpenSSL would mark the session of a connection freed without close_notify
		 * unresumable; TLS 1.3 dropped that rule, and peers that just close are common */
		SSL_set_shutdown(c->conn.ssl, SSL_get_shutdown(c->conn.ssl) | SSL_SENT_SHUTDOWN);
	SSL_free(c->conn.ssl);
	record_free(c->conn.rec);
	park_keys_free(c->conn.keys);
	free(c->conn.peer_der);
	state_unref(c->state);
	identity_free(c->conn.peer);
	sk_X509_pop_free(c->conn.ocsp_chain, X509_free);
	free(c->conn.server_name);
	free(c->conn.warning);
	free(c->conn.would);
	free(c);
}

/* --- the handshake ------------------------------------------------------------------ */

/* The connection's warning: w's text (none if empty). Lost if there is no memory for it. */
static void keep_warning(struct mtls *c, const char *w)
{
	free(c->conn.warning);
	c->conn.warning = w[0] != '\0' ? strdup(w) : NULL;
}

/* What audit found (reason none: the peer would be let in anyway); -1 (the connection's
 * error set) if there is no memory to keep it. */
static int keep_would(struct mtls *c, const struct error *would)
{
	if (would->reason == MTLS_REASON_NONE) {
		free(c->conn.would);
		c->conn.would = NULL;
		return 0;
	}
	if (c->conn.would == NULL && (c->conn.would = malloc(sizeof(*c->conn.would))) == NULL)
		return error_set(&c->conn.err, MTLS_REASON_INTERNAL, "out of memory");
	*c->conn.would = *would;
	return 0;
}

static void request_for(struct mtls *c, struct verify_request *rq)
{
	*rq = (struct verify_request){.st = c->state,
				      .peer_is_client = c->state->server,
				      .name = c->state->server ? NULL : c->conn.server_name,
				      .ocsp_out = &c->conn.ocsp};
}

/* OpenSSL's certificate verification, replaced by ours (verify.c). A client leaves OCSP to
 * conn_status_cb(), which runs once the server's staple (or its absence) is known: in TLS
 * 1.2 the staple comes in a message after the certificate. */
int conn_verify_cb(X509_STORE_CTX *xctx, void *arg)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(xctx, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct mtls *c = ssl != NULL ? SSL_get_app_data(ssl) : NULL;
	struct verify_request rq;
	struct error would;
	char warning[256];

	(void)arg;
	if (c == NULL)
		return 0;
	request_for(c, &rq);
	identity_free(c->conn.peer);
	c->conn.peer = NULL;
	sk_X509_pop_free(c->conn.ocsp_chain, X509_free);
	c->conn.ocsp_chain = NULL;
	c->conn.ocsp_done = false;
	if (!c->state->server) {
		rq.ocsp_later = true;
		rq.keep_chain = &c->conn.ocsp_chain;
	}
	error_clear(&would);
	(void)keep_would(c, &would);
	/* a refusal goes straight into the connection's error: the handshake fails with it,
	 * unless the server audits (then it is recorded and the client let in) */
	if (verify_chain(&rq, xctx, &c->conn.peer, &c->conn.err, warning, sizeof(warning)) == 0) {
		keep_warning(c, warning);
		return 1;
	}
	keep_warning(c, "");
	if (verify_audit(&rq, X509_STORE_CTX_get0_cert(xctx), &c->conn.err, &would,
			 &c->conn.peer) != 0 ||
	    keep_would(c, &would) != 0)
		return 0;
	X509_STORE_CTX_set_error(xctx, X509_V_OK);
	return 1;
}

/* The OCSP step of a client's full handshake, on the chain the verify callback kept: the
 * server's staple (NULL: none) judged, or the endpoint's answers by mode. */
static int judge_ocsp(struct mtls *c, const uint8_t *staple, size_t len)
{
	struct verify_request rq;
	char warning[256] = "";
	int rc;

	request_for(c, &rq);
	rq.staple_round = true;
	rq.staple = staple;
	rq.staple_len = len;
	/* verify_ocsp() adds to the chain's warning */
	if (c->conn.warning != NULL)
		snprintf(warning, sizeof(warning), "%s", c->conn.warning);
	rc = verify_ocsp(&rq, c->conn.ocsp_chain, &c->conn.err, warning, sizeof(warning));
	keep_warning(c, warning);
	c->conn.ocsp_done = true;
	sk_X509_pop_free(c->conn.ocsp_chain, X509_free);
	c->conn.ocsp_chain = NULL;
	if (rc != 0) {
		identity_free(c->conn.peer);
		c->conn.peer = NULL;
	}
	return rc;
}

/* A client: the server answered our status request (or did not; staple NULL). 1 goes on,
 * 0 fails the handshake (the refusal is in the connection's error). */
int conn_status_cb(SSL *ssl, void *arg)
{
	struct mtls *c = SSL_get_app_data(ssl);
	const unsigned char *staple = NULL;
	long len;

	(void)arg;
	/* a resumed session has no certificate to verify: judge_peer() decides it */
	if (c == NULL || c->conn.ocsp_chain == NULL || c->conn.peer == NULL)
		return 1;
	len = SSL_get_tlsext_status_ocsp_resp(ssl, &staple);
	return judge_ocsp(c, len > 0 ? staple : NULL, len > 0 ? (size_t)len : 0) == 0;
}

/* A server: the client asked for a staple; the endpoint's, if it holds a valid one for this
 * state's certificate. */
int conn_staple_cb(SSL *ssl, void *arg)
{
	struct state *st = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
	unsigned char *der;
	size_t len = 0;

	(void)arg;
	if (st == NULL || st->own_leaf == NULL ||
	    (der = ocsp_store_staple(st->ocsp, st->own_hash, time(NULL), &len)) == NULL)
		return SSL_TLSEXT_ERR_NOACK;
	if (SSL_set_tlsext_status_ocsp_resp(ssl, der, (long)len) != 1) { /* takes der */
		OPENSSL_free(der);
		return SSL_TLSEXT_ERR_NOACK;
	}
	return SSL_TLSEXT_ERR_OK;
}

/* Append the protocols of an ALPN offer (wire form, untrusted) to buf as "a", "b" for a
 * message, cut with "..." when they do not fit. */
static void describe_alpn(const unsigned char *in, unsigned int inlen, char *buf, size_t len)
{
	size_t used = 0;
	char name[64];

	buf[0] = '\0';
	for (unsigned int i = 0; i < inlen && used < len;) {
		unsigned int n = in[i];

		if (n == 0 || n > inlen - i - 1)
			break;
		identity_shown(in + i + 1, n, name, sizeof(name));
		used += (size_t)snprintf(buf + used, len - used, "%s\"%s\"", used > 0 ? ", " : "",
					 name);
		i += n + 1;
	}
	if (used >= len && len > 4)
		memcpy(buf + len - 4, "...", 4);
}

unsigned int conn_alpn_select(const char *want, const unsigned char *in, unsigned int inlen,
			      const unsigned char **out, char *offered, size_t offered_len)
{
	size_t wlen = strlen(want);

	/* OpenSSL has checked the list's form; a malformed one is read only up to its fault */
	for (unsigned int i = 0; i < inlen;) {
		unsigned int n = in[i];

		if (n == 0 || n > inlen - i - 1)
			break;
		if (n == wlen && memcmp(in + i + 1, want, wlen) == 0) {
			*out = in + i + 1;
			return n;
		}
		i += n + 1;
	}
	describe_alpn(in, inlen, offered, offered_len);
	return 0;
}

int conn_alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		 const unsigned char *in, unsigned int inlen, void *arg)
{
	struct mtls *c = SSL_get_app_data(ssl);
	const char *want;
	char offered[300];
	unsigned int n;

	(void)arg;
	if (c == NULL || (want = c->state->config->alpn) == NULL)
		return SSL_TLSEXT_ERR_NOACK;
	n = conn_alpn_select(want, in, inlen, out, offered, sizeof(offered));
	if (n > 0) {
		*outlen = (unsigned char)n;
		return SSL_TLSEXT_ERR_OK;
	}
	error_set(&c->conn.err, MTLS_REASON_NO_APPLICATION_PROTOCOL,
		  "client refused: it offered ALPN protocols %s, not \"%s\", the one this server "
		  "speaks; point a %s client at this port",
		  offered[0] != '\0' ? offered : "(none readable)", want, want);
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* After a handshake that OpenSSL completed: who the peer is, decided by verify.c. A peer
 * that presented a certificate was judged by the verify callback on a full handshake and is
 * judged again on a resumed one; one that presented none (a session without a peer
 * certificate) is let in only where verify_no_certificate() says so, without an identity. */
static int judge_peer(struct mtls *c)
{
	X509 *leaf = SSL_get0_peer_certificate(c->conn.ssl);
	struct verify_request rq;

	request_for(c, &rq);
	if (leaf == NULL) {
		identity_free(c->conn.peer);
		c->conn.peer = NULL;
		return verify_no_certificate(&rq, &c->conn.err);
	}
	if (SSL_session_reused(c->conn.ssl)) {
		identity_free(c->conn.peer);
		c->conn.peer = NULL;
		struct error would;

		error_clear(&would);
		(void)keep_would(c, &would);
		if (verify_resumed(&rq, leaf, SSL_get_peer_cert_chain(c->conn.ssl), &c->conn.peer,
				   &c->conn.err) == 0)
			return 0;
		if (verify_audit(&rq, leaf, &c->conn.err, &would, &c->conn.peer) != 0)
			return -1;
		return keep_would(c, &would);
	}
	/* a certificate was presented: it is in only if the verify callback accepted it */
	if (c->conn.peer == NULL)
		return error_set(&c->conn.err, MTLS_REASON_BAD_CERTIFICATE,
				 "the %s certificate was not verified",
				 c->state->server ? "client" : "server");
	/* a client's OCSP step, if the status callback did not run: without a staple */
	if (!c->state->server && !c->conn.ocsp_done) {
		if (c->conn.ocsp_chain == NULL)
			return error_set(&c->conn.err, MTLS_REASON_INTERNAL,
					 "the server certificate's OCSP status was not decided");
		return judge_ocsp(c, NULL, 0);
	}
	return 0;
}

/* The connection's peer judged again, under the endpoint's current state, by the same
 * decision as a resumed handshake: the chain it presented (kept in the connection's
 * session), built again against the current trust store, validity now, revocation, the
 * allow rules. The peer found at the handshake stays (its strings may be in use). */
int mtls_conn_recheck(struct mtls *conn, struct mtls *endpoint)
{
	struct verify_request rq;
	struct mtls_peer *peer = NULL;
	struct state *st;
	X509 *leaf, *parked_leaf = NULL;
	STACK_OF(X509) *chain = NULL;
	int rc;

	if (conn == NULL || conn->kind != KIND_CONN)
		return -1;
	if (!conn->conn.handshake_done)
		return error_set(&conn->conn.err, MTLS_REASON_USAGE,
				 "mtls_conn_recheck needs a connection whose handshake is done");
	if (endpoint == NULL || endpoint->kind == KIND_CONN ||
	    (endpoint->kind == KIND_SERVER) != conn->state->server)
		return error_set(
			&conn->conn.err, MTLS_REASON_USAGE,
			"mtls_conn_recheck needs the endpoint the connection was made from");
	st = endpoint_state(endpoint);
	if (st == NULL)
		return error_set(&conn->conn.err, MTLS_REASON_USAGE, "endpoint is not configured");
	/* validity at the handshake: a certificate that expired since does not end a live
	 * connection (its successor serves the next one; --max-connection-lifetime bounds
	 * how long one lasts); what is trusted now, revocation and the rules do */
	rq = (struct verify_request){.st = st,
				     .peer_is_client = st->server,
				     .name = st->server ? NULL : conn->conn.server_name,
				     .certs_at = conn->conn.handshake_at};
	if (conn->conn.rec != NULL) {
		/* parked: the certificates it kept */
		if (park_peer_certs(conn, &parked_leaf, &chain) != 0) {
			state_unref(st);
			return error_set(&conn->conn.err, MTLS_REASON_INTERNAL,
					 "cannot re-check: out of memory");
		}
		leaf = parked_leaf;
	} else {
		leaf = SSL_get0_peer_certificate(conn->conn.ssl);
		chain = SSL_get_peer_cert_chain(conn->conn.ssl);
	}
	if (leaf == NULL) {
		rc = verify_no_certificate(&rq, &conn->conn.err);
	} else {
		struct error would;

		error_clear(&would);
		rc = verify_resumed(&rq, leaf, chain, &peer, &conn->conn.err);
		if (rc != 0 && verify_audit(&rq, leaf, &conn->conn.err, &would, &peer) == 0)
			rc = 0;
		if (rc == 0)
			rc = keep_would(conn, &would); /* kept or cleared by this judgement */
	}
	identity_free(peer);
	X509_free(parked_leaf);
	if (parked_leaf != NULL)
		sk_X509_pop_free(chain, X509_free);
	state_unref(st);
	return rc;
}

static bool is_alert(int reason)
{
	return reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256;
}

/* OpenSSL could not parse what the peer sent as TLS records or handshake messages. */
static bool is_parse_error(int reason)
{
	switch (reason) {
	case SSL_R_WRONG_VERSION_NUMBER:
	case SSL_R_HTTP_REQUEST:
	case SSL_R_HTTPS_PROXY_REQUEST:
	case SSL_R_PACKET_LENGTH_TOO_LONG:
	case SSL_R_ENCRYPTED_LENGTH_TOO_LONG:
	case SSL_R_DATA_LENGTH_TOO_LONG:
	case SSL_R_EXCESSIVE_MESSAGE_SIZE:
	case SSL_R_RECORD_LENGTH_MISMATCH:
	case SSL_R_LENGTH_MISMATCH:
	case SSL_R_LENGTH_TOO_SHORT:
	case SSL_R_LENGTH_TOO_LONG:
	case SSL_R_BAD_LENGTH:
	case SSL_R_BAD_PACKET:
	case SSL_R_BAD_PACKET_LENGTH:
	case SSL_R_BAD_HANDSHAKE_LENGTH:
	case SSL_R_BAD_RECORD_TYPE:
	case SSL_R_UNEXPECTED_MESSAGE:
	case SSL_R_UNEXPECTED_RECORD:
	case SSL_R_UNEXPECTED_CCS_MESSAGE:
	case SSL_R_BAD_CHANGE_CIPHER_SPEC:
	case SSL_R_INVALID_CCS_MESSAGE:
	case SSL_R_BAD_EXTENSION:
	case SSL_R_PARSE_TLSEXT:
	case SSL_R_EXT_LENGTH_MISMATCH:
	case SSL_R_BAD_LEGACY_VERSION:
	case SSL_R_BAD_KEY_SHARE:
	case SSL_R_BAD_ECPOINT:
	case SSL_R_BAD_DATA:
	case SSL_R_BAD_VALUE:
	case SSL_R_NO_COMPRESSION_SPECIFIED:
	case SSL_R_ERROR_IN_RECEIVED_CIPHER_LIST:
	case SSL_R_CIPHER_CODE_WRONG_LENGTH:
	case SSL_R_SSL_SESSION_ID_HAS_BAD_LENGTH:
	case SSL_R_TLS_INVALID_ECPOINTFORMAT_LIST:
	case SSL_R_SSL3_EXT_INVALID_SERVERNAME:
	case SSL_R_SSL3_EXT_INVALID_SERVERNAME_TYPE:
	case SSL_R_INVALID_ALERT: return true;
	default: return false;
	}
}

/* Did the peer's first bytes start a TLS record: type 20..23 (change_cipher_spec, alert,
 * handshake, application data), then version 3.x? Nothing received counts as TLS. */
static bool looks_like_tls(struct mtls *c)
{
	uint8_t head[SOCKBIO_HEAD];
	int n = sockbio_head(SSL_get_rbio(c->conn.ssl), head);

	return n == 0 || (head[0] >= 0x14 && head[0] <= 0x17 && (n < 2 || head[1] == 0x03));
}

/* Set c->conn.err from a failed handshake step. */
static int handshake_error(struct mtls *c, int ssl_err, int saved_errno)
{
	unsigned long e = ERR_peek_error();
	int lib = ERR_GET_LIB(e);
	int reason = ERR_GET_REASON(e);
	const char *peer = c->state->server ? "client" : "server";
	const char *text = e != 0 ? ERR_reason_error_string(e) : NULL;

	/* the error was clear when the step began (mtls_handshake()): one set since is the
	 * verify callback's refusal of the peer, which says more than OpenSSL's errors */
	if (c->conn.err.reason != MTLS_REASON_NONE) {
		ERR_clear_error();
		return -1;
	}
	if (ssl_err == SSL_ERROR_SYSCALL && e == 0) {
		if (saved_errno == 0 || saved_errno == EPIPE || saved_errno == ECONNRESET)
			return error_set(&c->conn.err, MTLS_REASON_TRUNCATED,
					 "the %s closed the connection during the handshake%s%s",
					 peer, saved_errno != 0 ? ": " : "",
					 saved_errno != 0 ? strerror(saved_errno) : "");
		return error_set(&c->conn.err, MTLS_REASON_IO, "handshake with the %s failed: %s",
				 peer, strerror(saved_errno));
	}
	if (ssl_err == SSL_ERROR_ZERO_RETURN)
		return error_set(&c->conn.err, MTLS_REASON_TRUNCATED,
				 "the %s closed the connection during the handshake", peer);
	/* the PKCS#11 engine's errors (a library number it was given at run time) come first
	 * when the token would not sign: a local fault, to be named as one, with the key */
	if (c->state->config->key_uri != NULL && (lib >= ERR_LIB_USER || lib == ERR_LIB_ENGINE))
		return error_set(
			&c->conn.err, MTLS_REASON_CONFIG,
			"cannot sign the handshake with private key %s: %s; the token is "
			"missing, was removed or ended its session: check it "
			"(pkcs11-tool --list-slots); once it is back, restart (the PKCS#11 "
			"engine keeps its session for the process)",
			c->state->config->key_uri,
			text != NULL ? text : "the PKCS#11 engine failed");
	if (lib != ERR_LIB_SSL)
		return error_set_ssl(&c->conn.err, MTLS_REASON_HANDSHAKE_FAILED,
				     "handshake with the %s failed", peer);
	/* bytes that start like TLS but do not parse are a broken peer (or a corrupted
	 * stream), not a plaintext client at the wrong port */
	if (is_parse_error(reason) && reason != SSL_R_HTTP_REQUEST &&
	    reason != SSL_R_HTTPS_PROXY_REQUEST && looks_like_tls(c))
		return error_set(&c->conn.err, MTLS_REASON_MALFORMED,
				 "malformed TLS handshake from the %s: %s; its TLS implementation "
				 "is broken, or something on the way corrupts the stream",
				 peer, text != NULL ? text : "bad record");
	if (is_parse_error(reason))
		return error_set(&c->conn.err, MTLS_REASON_NOT_TLS,
				 "the %s did not speak TLS (%s); point a TLS client at this port, "
				 "or plaintext at the connector",
				 peer, text != NULL ? text : "bad record");
	switch (reason) {
	case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
		return error_set(&c->conn.err, MTLS_REASON_NO_CERTIFICATE,
				 "client sent no certificate; configure the client with a "
				 "certificate and key issued by the trusted CA");
	case SSL_R_UNSUPPORTED_PROTOCOL:
	case SSL_R_WRONG_SSL_VERSION:
	case SSL_R_VERSION_TOO_LOW:
	case SSL_R_VERSION_TOO_HIGH:
	case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
		return error_set(&c->conn.err, MTLS_REASON_PROTOCOL_VERSION,
				 "the %s offered no TLS version we accept (%s); TLS 1.2 or 1.3 is "
				 "required",
				 peer, text != NULL ? text : "unsupported protocol");
	case SSL_R_UNEXPECTED_EOF_WHILE_READING:
		return error_set(&c->conn.err, MTLS_REASON_TRUNCATED,
				 "the %s closed the connection during the handshake", peer);
	case SSL_R_NO_SHARED_CIPHER:
	case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
	case SSL_R_NO_SHARED_GROUPS:
	case SSL_R_NO_CIPHERS_AVAILABLE:
		return error_set(&c->conn.err, MTLS_REASON_HANDSHAKE_FAILED,
				 "no common cipher suite, group or signature algorithm with the "
				 "%s (%s); it must support ECDHE with AES-GCM or ChaCha20-Poly1305",
				 peer, text);
	default: break;
	}
	if (reason == SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL && !c->state->server)
		return error_set(&c->conn.err, MTLS_REASON_REJECTED_BY_PEER,
				 "the server refused ALPN protocol \"%s\" (alert "
				 "no_application_protocol); it serves another protocol at this "
				 "address: check the address, or the protocol configured on both",
				 c->state->config->alpn != NULL ? c->state->config->alpn : "");
	if (is_alert(reason))
		return error_set(&c->conn.err, MTLS_REASON_REJECTED_BY_PEER,
				 "the %s refused the handshake (%s); check its log for why", peer,
				 text != NULL ? text : "alert");
	return error_set_ssl(&c->conn.err, MTLS_REASON_HANDSHAKE_FAILED,
			     "handshake with the %s failed", peer);
}

static int handshake_failed(struct mtls *c, int ssl_err, int saved_errno)
{
	handshake_error(c, ssl_err, saved_errno);
	if (!looks_like_tls(c) && c->conn.err.reason != MTLS_REASON_NOT_TLS &&
	    mtls_reason_category(c->conn.err.reason) == MTLS_CATEGORY_PROTOCOL)
		error_set(&c->conn.err, MTLS_REASON_NOT_TLS,
			  "the %s did not speak TLS (first byte 0x%02x); point a TLS client at "
			  "this port, or plaintext at the connector",
			  c->state->server ? "client" : "server",
			  (unsigned)sockbio_first_byte(SSL_get_rbio(c->conn.ssl)));
	/* the rest of the client's flight is unread: closing now would reset the connection
	 * and the client might never see the alert that says why it was refused */
	if (c->state->server)
		sockbio_discard_input(SSL_get_rbio(c->conn.ssl));
	return -1;
}

/* Clearing the error queue costs about a thousand instructions in OpenSSL 3.0, looking at
 * it a tenth of that; it is nearly always empty. */
static void clear_errors(void)
{
	if (ERR_peek_error() != 0)
		ERR_clear_error();
}

static int want_of(int ssl_err)
{
	return ssl_err == SSL_ERROR_WANT_WRITE ? MTLS_WANT_POLLOUT : MTLS_WANT_POLLIN;
}

int mtls_handshake(struct mtls *c)
{
	int rc, ssl_err;

	if (c == NULL || c->kind != KIND_CONN)
		return -1;
	if (c->conn.handshake_done)
		return 0;
	if (c->conn.err.reason != MTLS_REASON_NONE)
		return -1;
	clear_errors();
	errno = 0;
	rc = SSL_do_handshake(c->conn.ssl);
	if (rc == 1) {
		c->conn.handshake_at = c->state->config->verify_time != 0
					       ? c->state->config->verify_time
					       : time(NULL);
		if (judge_peer(c) != 0) {
			SSL_shutdown(c->conn.ssl); /* close_notify, so the peer does not carry on */
			return -1;
		}
		c->conn.handshake_done = true;
		if (c->state->server)
			sessions_share_unkept(c->state->sessions, c->conn.ssl);
		/* nothing more is needed until the application's first byte; a record read
		 * ahead keeps its buffer */
		SSL_free_buffers(c->conn.ssl);
		return 0;
	}
	ssl_err = SSL_get_error(c->conn.ssl, rc);
	if (ssl_err == SSL_ERROR_WANT_READ || ssl_err == SSL_ERROR_WANT_WRITE)
		return want_of(ssl_err);
	return handshake_failed(c, ssl_err, errno);
}

/* A read or write failed: set the error and say what to return. */
static ssize_t io_error(struct mtls *c, int rc, int saved_errno, bool reading)
{
	int ssl_err = SSL_get_error(c->conn.ssl, rc);
	unsigned long e;

	switch (ssl_err) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE: return want_of(ssl_err);
	case SSL_ERROR_ZERO_RETURN: ERR_clear_error(); return 0;
	case SSL_ERROR_SYSCALL:
		if (ERR_peek_error() == 0)
			return error_set(&c->conn.err,
					 saved_errno != 0 ? MTLS_REASON_IO : MTLS_REASON_TRUNCATED,
					 "connection %s: %s", reading ? "read" : "write",
					 saved_errno != 0 ? strerror(saved_errno)
							  : "closed without close_notify");
		break;
	default: break;
	}
	e = ERR_peek_error();
	if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
	    ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
		return error_set(&c->conn.err, MTLS_REASON_TRUNCATED,
				 "the peer closed the connection without close_notify");
	if (ERR_GET_LIB(e) == ERR_LIB_SSL && is_alert(ERR_GET_REASON(e)))
		return error_set_ssl(&c->conn.err, MTLS_REASON_REJECTED_BY_PEER,
				     "the peer ended the connection with an alert");
	/* what the peer sent is not a valid record: the reason a parked connection gives too
	 * (record.c) */
	if (reading && ERR_GET_LIB(e) == ERR_LIB_SSL &&
	    (is_parse_error(ERR_GET_REASON(e)) ||
	     ERR_GET_REASON(e) == SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC ||
	     ERR_GET_REASON(e) == SSL_R_RECORD_TOO_SMALL ||
	     ERR_GET_REASON(e) == SSL_R_TOO_MANY_WARN_ALERTS ||
	     ERR_GET_REASON(e) == SSL_R_TOO_MANY_KEY_UPDATES))
		return error_set_ssl(&c->conn.err, MTLS_REASON_MALFORMED,
				     "the peer sent a record that is not valid TLS");
	return error_set_ssl(&c->conn.err, MTLS_REASON_IO, "connection %s failed",
			     reading ? "read" : "write");
}

static int check_ready(struct mtls *c)
{
	int rc;

	if (c == NULL || c->kind != KIND_CONN)
		return -1;
	if (c->conn.handshake_done)
		return 0;
	rc = mtls_handshake(c);
	return rc;
}

ssize_t mtls_read(struct mtls *c, void *buf, size_t len)
{
	size_t got = 0;
	ssize_t ret;
	int rc;

	rc = check_ready(c);
	if (rc != 0)
		return rc;
	if (len == 0) /* 0 would say the peer closed */
		return error_set(&c->conn.err, MTLS_REASON_USAGE, "mtls_read needs room (len 0)");
	if (c->conn.rec != NULL)
		return record_read(c->conn.rec, buf, len, &c->conn.err);
	clear_errors();
	errno = 0;
	rc = SSL_read_ex(c->conn.ssl, buf, len, &got);
	if (rc == 1)
		return (ssize_t)got;
	ret = io_error(c, rc, errno, true);
	/* waiting for the peer: hold no record buffer meanwhile (SSL_free_buffers() keeps
	 * them while a partial record or unsent data is in them) */
	if (ret == MTLS_WANT_POLLIN)
		SSL_free_buffers(c->conn.ssl);
	return ret;
}

void mtls_keep_buffers(struct mtls *c, int keep)
{
	if (c == NULL || c->kind != KIND_CONN)
		return;
	if (c->conn.rec != NULL) {
		record_keep_buffers(c->conn.rec, keep != 0);
		return;
	}
	if (c->conn.ssl == NULL)
		return;
	if (keep) {
		SSL_clear_mode(c->conn.ssl, SSL_MODE_RELEASE_BUFFERS);
	} else {
		SSL_set_mode(c->conn.ssl, SSL_MODE_RELEASE_BUFFERS);
		SSL_free_buffers(c->conn.ssl);
	}
}

int mtls_read_drained(const struct mtls *c)
{
	if (c != NULL && c->kind == KIND_CONN && c->conn.rec != NULL)
		return record_drained(c->conn.rec);
	if (c == NULL || c->kind != KIND_CONN || c->conn.ssl == NULL || !c->conn.handshake_done)
		return 0;
	return !SSL_has_pending(c->conn.ssl) && sockbio_drained(SSL_get_rbio(c->conn.ssl));
}

ssize_t mtls_write(struct mtls *c, const void *buf, size_t len)
{
	size_t put = 0;
	int rc;

	rc = check_ready(c);
	if (rc != 0)
		return rc;
	if (c->conn.rec != NULL)
		return record_write(c->conn.rec, buf, len, &c->conn.err);
	if (len == 0)
		return 0;
	clear_errors();
	errno = 0;
	rc = SSL_write_ex(c->conn.ssl, buf, len, &put);
	c->conn.write_pending = rc != 1;
	if (rc == 1)
		return (ssize_t)put;
	return io_error(c, rc, errno, false);
}

int mtls_close(struct mtls *c)
{
	int rc;

	if (c == NULL || c->kind != KIND_CONN)
		return -1;
	if (!c->conn.handshake_done)
		return 0;
	if (c->conn.rec != NULL)
		return record_close(c->conn.rec, &c->conn.err);
	clear_errors();
	errno = 0;
	rc = SSL_shutdown(c->conn.ssl);
	if (rc >= 0)
		return 0; /* close_notify sent; we do not wait for the peer's */
	rc = (int)io_error(c, rc, errno, false);
	return rc == 0 ? 0 : rc;
}

/* --- blocking helpers ---------------------------------------------------------------- */

/* The connection's socket, parked or not. */
static int conn_fd(const struct mtls *c)
{
	return c->conn.rec != NULL ? record_fd(c->conn.rec) : SSL_get_fd(c->conn.ssl);
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for what rc asks (MTLS_WANT_*). 0 ready, -1 timeout or poll error (c->conn.err set). */
static int wait_for(struct mtls *c, int rc, long long deadline)
{
	struct pollfd pfd = {.fd = conn_fd(c),
			     .events = rc == MTLS_WANT_POLLOUT ? POLLOUT : POLLIN};
	int timeout = -1;

	for (;;) {
		int n;

		if (deadline >= 0) {
			long long left = deadline - now_ms();
			if (left <= 0)
				return error_set(&c->conn.err, MTLS_REASON_TIMEOUT,
						 "timed out waiting for the peer");
			timeout = left > 1000000 ? 1000000 : (int)left;
		}
		n = poll(&pfd, 1, timeout);
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return error_set(&c->conn.err, MTLS_REASON_IO, "poll: %s", strerror(errno));
	}
}

static long long deadline_of(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

/* On a blocking fd OpenSSL would sit in read() past any deadline: run non-blocking while a
 * helper runs, and restore the caller's flags after. Returns the flags to restore. */
static int nonblocking_begin(struct mtls *c)
{
	int fd = conn_fd(c);
	int flags = fcntl(fd, F_GETFL);

	if (flags >= 0 && !(flags & O_NONBLOCK))
		fcntl(fd, F_SETFL, flags | O_NONBLOCK);
	return flags;
}

static void nonblocking_end(struct mtls *c, int flags)
{
	if (flags >= 0 && !(flags & O_NONBLOCK))
		fcntl(conn_fd(c), F_SETFL, flags);
}

int mtls_handshake_wait(struct mtls *c, int timeout_ms)
{
	long long deadline = deadline_of(timeout_ms);
	int rc, flags;

	if (c == NULL || c->kind != KIND_CONN)
		return -1;
	flags = nonblocking_begin(c);
	while ((rc = mtls_handshake(c)) == MTLS_WANT_POLLIN || rc == MTLS_WANT_POLLOUT)
		if (wait_for(c, rc, deadline) != 0) {
			rc = -1;
			break;
		}
	nonblocking_end(c, flags);
	return rc;
}

int mtls_write_all(struct mtls *c, const void *buf, size_t len, int timeout_ms)
{
	long long deadline = deadline_of(timeout_ms);
	const uint8_t *p = buf;

	int rc = 0, flags;

	if (c == NULL || c->kind != KIND_CONN)
		return -1;
	flags = nonblocking_begin(c);
	while (len > 0 && rc == 0) {
		ssize_t n = mtls_write(c, p, len);

		if (n == MTLS_WANT_POLLIN || n == MTLS_WANT_POLLOUT) {
			rc = wait_for(c, (int)n, deadline);
			continue;
		}
		if (n <= 0) {
			rc = -1;
			break;
		}
		p += n;
		len -= (size_t)n;
	}
	nonblocking_end(c, flags);
	return rc;
}

ssize_t mtls_read_wait(struct mtls *c, void *buf, size_t len, int timeout_ms)
{
	long long deadline = deadline_of(timeout_ms);
	ssize_t n;
	int flags;

	if (c == NULL || c->kind != KIND_CONN)
		return -1;
	flags = nonblocking_begin(c);
	while ((n = mtls_read(c, buf, len)) == MTLS_WANT_POLLIN || n == MTLS_WANT_POLLOUT)
		if (wait_for(c, (int)n, deadline) != 0) {
			n = -1;
			break;
		}
	nonblocking_end(c, flags);
	return n;
}

int mtls_close_wait(struct mtls *c, int timeout_ms)
{
	long long deadline = deadline_of(timeout_ms);
	int rc, flags;

	if (c == NULL || c->kind != KIND_CONN)
		return -1;
	flags = nonblocking_begin(c);
	while ((rc = mtls_close(c)) == MTLS_WANT_POLLIN || rc == MTLS_WANT_POLLOUT)
		if (wait_for(c, rc, deadline) != 0) {
			rc = -1;
			break;
		}
	nonblocking_end(c, flags);
	return rc;
}

/* --- after the handshake ------------------------------------------------------------- */

const struct mtls_peer *mtls_conn_peer(const struct mtls *c)
{
	return c != NULL && c->kind == KIND_CONN && c->conn.handshake_done ? c->conn.peer : NULL;
}

/* The connection's SSL; NULL for an endpoint. */
static SSL *ssl_of(const struct mtls *c)
{
	return c != NULL && c->kind == KIND_CONN ? c->conn.ssl : NULL;
}

/* A parked connection's (its SSL is gone); NULL otherwise. */
static const struct connection *parked(const struct mtls *c)
{
	return c != NULL && c->kind == KIND_CONN && c->conn.rec != NULL ? &c->conn : NULL;
}

const char *mtls_conn_version(const struct mtls *c)
{
	if (parked(c) != NULL)
		return parked(c)->version;
	return ssl_of(c) != NULL ? SSL_get_version(ssl_of(c)) : NULL;
}

const char *mtls_conn_cipher(const struct mtls *c)
{
	if (parked(c) != NULL)
		return parked(c)->cipher;
	return ssl_of(c) != NULL ? SSL_get_cipher_name(ssl_of(c)) : NULL;
}

int mtls_conn_resumed(const struct mtls *c)
{
	if (parked(c) != NULL)
		return parked(c)->resumed;
	return ssl_of(c) != NULL && SSL_session_reused(ssl_of(c));
}

const char *mtls_conn_alpn(const struct mtls *c)
{
	const unsigned char *p = NULL;
	unsigned int n = 0;
	const char *ours;

	if (c == NULL || c->kind != KIND_CONN || !c->conn.handshake_done ||
	    (ours = c->state->config->alpn) == NULL)
		return NULL;
	if (parked(c) != NULL)
		return parked(c)->alpn_ours ? ours : NULL;
	/* only ours can have been selected: a server selects nothing else, and OpenSSL
	 * refuses a server's choice that a client did not offer */
	SSL_get0_alpn_selected(c->conn.ssl, &p, &n);
	return n == strlen(ours) && memcmp(p, ours, n) == 0 ? ours : NULL;
}

enum mtls_ocsp_result mtls_conn_ocsp(const struct mtls *c)
{
	return c != NULL && c->kind == KIND_CONN && c->conn.handshake_done ? c->conn.ocsp
									   : MTLS_OCSP_RESULT_NONE;
}

enum mtls_reason mtls_conn_would_refuse(const struct mtls *c)
{
	return c != NULL && c->kind == KIND_CONN && c->conn.handshake_done && c->conn.would != NULL
		       ? c->conn.would->reason
		       : MTLS_REASON_NONE;
}

const char *mtls_conn_would_refuse_message(const struct mtls *c)
{
	return mtls_conn_would_refuse(c) != MTLS_REASON_NONE ? c->conn.would->msg : NULL;
}
