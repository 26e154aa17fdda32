/*
 * The TLS context of a state: one SSL_CTX per applied config, set up once here and never
 * changed after, as every handshake on the state shares it.
 *
 * It fixes what mtls does not let a config choose: TLS 1.2 with ECDHE and AEAD ciphers only,
 * the groups, no renegotiation or compression, security level 2, a peer certificate required
 * both ways (a server may make the client's optional: asked for, verified when sent). OpenSSL's own
 * chain verification is replaced by ours (conn_verify_cb(), which calls verify_chain()), so that
 * every path a peer takes is decided in one place. Resumption is wired here too: a server keeps
 * sessions in its own store (sessions.c) and issues no stateless tickets; a client keeps the
 * tickets it receives per server name (tickets.c). OCSP stapling too: a server staples the
 * answer its endpoint holds for its certificate, a client asks for one and judges it. ALPN
 * (RFC 7301) when configured: a client offers the one protocol, a server selects it or
 * refuses a client that offers only others (conn_alpn_cb()).
 */
#include <string.h>

#include <openssl/err.h>

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

/* A client received a session (a TLS 1.3 ticket) it may resume later. */
static int client_new_session(SSL *ssl, SSL_SESSION *sess)
{
	struct mtls *c = SSL_get_app_data(ssl);

	if (c == NULL || c->conn.server_name == NULL)
		return 0;
	/* 1: we keep the reference */
	return tickets_put(&c->state->tickets, sess, c->conn.server_name) ? 1 : 0;
}

/* A client's ALPN offer: the one protocol in the wire form (a length byte, then the name). */
static int offer_alpn(SSL_CTX *ctx, const char *protocol, struct error *err)
{
	unsigned char wire[256];
	size_t n = strlen(protocol);

	if (n == 0 || n > 255)
		return error_set(err, MTLS_REASON_CONFIG, "ALPN protocol must be 1 to 255 bytes");
	wire[0] = (unsigned char)n;
	memcpy(wire + 1, protocol, n);
	/* 0 is success here, unlike the rest of OpenSSL */
	if (SSL_CTX_set_alpn_protos(ctx, wire, (unsigned)n + 1) != 0)
		return error_set_ssl(err, MTLS_REASON_INTERNAL, "cannot set the ALPN protocol");
	return 0;
}

SSL_CTX *tlsctx_new(struct state *st, struct error *err)
{
	const struct mtls_config *c = st->config;
	SSL_CTX *ctx = SSL_CTX_new(st->server ? TLS_server_method() : TLS_client_method());

	if (ctx == NULL) {
		error_set_ssl(err, MTLS_REASON_INTERNAL, "cannot create TLS context");
		return NULL;
	}
	SSL_CTX_set_security_level(ctx, 2);
	if (SSL_CTX_set_min_proto_version(ctx, c->min_version) != 1 ||
	    SSL_CTX_set_max_proto_version(ctx, c->max_version) != 1 ||
	    SSL_CTX_set_cipher_list(ctx, tls12_ciphers) != 1 ||
	    SSL_CTX_set_ciphersuites(ctx, tls13_suites) != 1 ||
	    SSL_CTX_set1_groups_list(ctx, groups) != 1) {
		error_set_ssl(err, MTLS_REASON_INTERNAL, "cannot set TLS parameters");
		SSL_CTX_free(ctx);
		return NULL;
	}
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
	/* what mtls_park() needs: the traffic secrets and the records counted (park.c) */
	SSL_CTX_set_keylog_callback(ctx, park_keylog_cb);
	SSL_CTX_set_msg_callback(ctx, park_msg_cb);
	SSL_CTX_set_app_data(ctx, st);
	if (st->server) {
		/* an optional client certificate is still asked for, and verified when sent
		 * (SSL_VERIFY_PEER); only its absence is let through to the decision after the
		 * handshake (conn.c, verify_no_certificate()) */
		SSL_CTX_set_verify(ctx,
				   SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE |
					   (c->insecure & INSECURE_OPTIONAL_CLIENT_CERT
						    ? 0
						    : SSL_VERIFY_FAIL_IF_NO_PEER_CERT),
				   NULL);
		SSL_CTX_set_session_id_context(ctx, session_context, sizeof(session_context) - 1);
		/* resumption from the server's own store (sessions.c), never stateless tickets */
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
		/* the own certificate's OCSP staple, to clients that ask (ocsp_store.c) */
		SSL_CTX_set_tlsext_status_cb(ctx, conn_staple_cb);
		if (c->alpn != NULL)
			SSL_CTX_set_alpn_select_cb(ctx, conn_alpn_cb, NULL);
		if (st->sessions != NULL && sessions_kept(st->sessions)) {
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
		/* every full handshake asks for the server's OCSP staple; conn_status_cb() judges
		 * what comes (or that nothing does) */
		SSL_CTX_set_tlsext_status_type(ctx, TLSEXT_STATUSTYPE_ocsp);
		SSL_CTX_set_tlsext_status_cb(ctx, conn_status_cb);
		if (c->alpn != NULL && offer_alpn(ctx, c->alpn, err) != 0) {
			SSL_CTX_free(ctx);
			return NULL;
		}
	}
	return ctx;
}
