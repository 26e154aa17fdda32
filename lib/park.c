/*
 * Parking an idle connection (mtls_park()): OpenSSL's per-connection state, about 18 KiB,
 * freed, and the records moved to our own TLS 1.3 record layer (record.c) with the keys and
 * sequence numbers OpenSSL had reached.
 *
 * OpenSSL 3.0 has no call that gives them. They are followed instead, from the start of
 * each connection, through two callbacks every SSL_CTX gets (tlsctx.c):
 *   - the keylog callback hands over the application traffic secrets (RFC 8446 7.1) as the
 *     handshake derives them: the peer's is our read secret, ours the write secret;
 *   - the message callback sees every record header OpenSSL reads or writes, and every
 *     handshake message. Each direction's keys change right after its Finished (a key change
 *     ends its record, 5.1), so the records after it are counted: that count is the
 *     direction's sequence number. A KeyUpdate OpenSSL processed would change the secret
 *     without telling us: such a connection is never parked.
 * A connection is parked only between records: nothing buffered in OpenSSL (no plaintext not
 * yet read, no bytes of a record not yet opened), the bytes received ending where a record
 * ends (sockbio.c follows the framing: OpenSSL may have read a header and wait for its
 * body), and no sealed record waiting to be sent.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "internal.h"

#define SECRET_MAX 48 /* SHA-384 */

struct park_keys {
	uint8_t rd_secret[SECRET_MAX], wr_secret[SECRET_MAX];
	size_t rd_len, wr_len;
	uint64_t rd_records, wr_records; /* since the direction's Finished */
	bool rd_epoch, wr_epoch;	 /* that Finished was seen */
	bool key_updated;		 /* OpenSSL processed or sent a KeyUpdate */
	/* post-handshake messages may span records (5.1): the bytes of handshake records
	 * received (the last record's length, a record assumed unpadded: a padded one only
	 * keeps its connection unparked) and of whole messages OpenSSL processed. Parked only
	 * when they are equal: no piece of a message is held inside OpenSSL. */
	size_t rd_last_len;
	uint64_t hs_in, hs_done;
};

void park_keys_free(struct park_keys *k)
{
	if (k == NULL)
		return;
	OPENSSL_cleanse(k, sizeof(*k));
	free(k);
}

/* The connection's capture, made if make (by the callbacks of TLS 1.3's application keys:
 * what came before them is not needed); NULL for an SSL that is not a connection's, before
 * then, or without memory (that connection is then never parked). */
static struct park_keys *keys_of(const SSL *ssl, bool make)
{
	struct mtls *c = SSL_get_app_data(ssl);

	if (c == NULL || c->kind != KIND_CONN)
		return NULL;
	if (c->conn.keys == NULL && make && SSL_version(ssl) == TLS1_3_VERSION)
		c->conn.keys = calloc(1, sizeof(*c->conn.keys));
	return c->conn.keys;
}

/* "LABEL <client random> <secret>", in hex (OpenSSL's keylog format): the secret's length,
 * or 0 if the line is not of that shape. */
static size_t secret_of(const char *line, uint8_t out[SECRET_MAX])
{
	const char *p = strchr(line, ' ');
	size_t n = 0;

	if (p == NULL || (p = strchr(p + 1, ' ')) == NULL)
		return 0;
	for (p++; p[0] != '\0' && p[1] != '\0' && n < SECRET_MAX; p += 2) {
		int hi = OPENSSL_hexchar2int((unsigned char)p[0]),
		    lo = OPENSSL_hexchar2int((unsigned char)p[1]);

		if (hi < 0 || lo < 0)
			return 0;
		out[n++] = (uint8_t)(hi << 4 | lo);
	}
	return *p == '\0' ? n : 0;
}

void park_keylog_cb(const SSL *ssl, const char *line)
{
	static const char client[] = "CLIENT_TRAFFIC_SECRET_0 ",
			  server[] = "SERVER_TRAFFIC_SECRET_0 ";
	bool is_client = strncmp(line, client, sizeof(client) - 1) == 0;
	struct park_keys *k;

	if (!is_client && strncmp(line, server, sizeof(server) - 1) != 0)
		return;
	if ((k = keys_of(ssl, true)) == NULL)
		return;
	/* the client's secret is what a server reads, and a client writes */
	if (is_client == (SSL_is_server(ssl) != 0))
		k->rd_len = secret_of(line, k->rd_secret);
	else
		k->wr_len = secret_of(line, k->wr_secret);
}

void park_msg_cb(int write_p, int version, int content_type, const void *buf, size_t len, SSL *ssl,
		 void *arg)
{
	const uint8_t *b = buf;
	struct park_keys *k;

	(void)version;
	(void)arg;
	if (content_type != SSL3_RT_HEADER && content_type != SSL3_RT_HANDSHAKE &&
	    content_type != SSL3_RT_INNER_CONTENT_TYPE)
		return;
	if (content_type == SSL3_RT_INNER_CONTENT_TYPE) {
		if (!write_p && len == 1 && b[0] == SSL3_RT_HANDSHAKE &&
		    (k = keys_of(ssl, false)) != NULL && k->rd_last_len > 16)
			k->hs_in += k->rd_last_len - 16 - 1; /* less the tag and the type */
		return;
	}
	/* counting starts at the first Finished (it resets the count of its direction) */
	if ((k = keys_of(ssl, content_type == SSL3_RT_HANDSHAKE && len >= 1 &&
				      b[0] == SSL3_MT_FINISHED)) == NULL)
		return;
	if (content_type == SSL3_RT_HEADER) {
		if (write_p) {
			k->wr_records++;
		} else {
			k->rd_records++;
			if (len == 5)
				k->rd_last_len = (size_t)b[3] << 8 | b[4];
		}
		return;
	}
	if (len < 1)
		return;
	if (b[0] == SSL3_MT_FINISHED) {
		/* the header of the record that carried it was counted before this call */
		if (write_p) {
			k->wr_records = 0;
			k->wr_epoch = true;
		} else {
			k->rd_records = 0;
			k->rd_epoch = true;
			k->hs_in = k->hs_done = 0;
		}
		return;
	} else if (b[0] == SSL3_MT_KEY_UPDATE) {
		/* never parked now: the secrets are of no more use */
		k->key_updated = true;
		OPENSSL_cleanse(k->rd_secret, sizeof(k->rd_secret));
		OPENSSL_cleanse(k->wr_secret, sizeof(k->wr_secret));
	}
	if (!write_p)
		k->hs_done += len;
}

/* The peer's certificates, for a re-check of the parked connection: DER, the leaf first,
 * then the rest of the chain OpenSSL kept (a server's peer chain holds no leaf, a client's
 * starts with it: the leaf is kept once). */
static int keep_peer_certs(struct mtls *c, SSL *ssl)
{
	X509 *leaf = SSL_get0_peer_certificate(ssl);
	STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl);
	int n = sk_X509_num(chain), first = 0, total = 0, len;
	uint8_t *der, *p;

	if (leaf == NULL)
		return 0;
	if (n > 0 && X509_cmp(sk_X509_value(chain, 0), leaf) == 0)
		first = 1;
	len = i2d_X509(leaf, NULL);
	if (len <= 0)
		return -1;
	total = len;
	for (int i = first; i < n; i++) {
		len = i2d_X509(sk_X509_value(chain, i), NULL);
		if (len <= 0)
			return -1;
		total += len;
	}
	if ((der = malloc((size_t)total)) == NULL)
		return -1;
	p = der;
	i2d_X509(leaf, &p);
	for (int i = first; i < n; i++)
		i2d_X509(sk_X509_value(chain, i), &p);
	c->conn.peer_der = der;
	c->conn.peer_der_len = (size_t)total;
	return 0;
}

int park_peer_certs(const struct mtls *c, X509 **leaf, STACK_OF(X509) * *chain)
{
	const uint8_t *p = c->conn.peer_der, *end = p + c->conn.peer_der_len;

	*leaf = NULL;
	*chain = NULL;
	if (p == NULL)
		return 0;
	if ((*leaf = d2i_X509(NULL, &p, end - p)) == NULL || (*chain = sk_X509_new_null()) == NULL)
		goto err;
	/* as OpenSSL gives it: with the leaf first on a client */
	if (!c->state->server) {
		if (!sk_X509_push(*chain, *leaf))
			goto err;
		X509_up_ref(*leaf);
	}
	while (p < end) {
		X509 *x = d2i_X509(NULL, &p, end - p);

		if (x == NULL || !sk_X509_push(*chain, x)) {
			X509_free(x);
			goto err;
		}
	}
	return 0;
err:
	X509_free(*leaf);
	sk_X509_pop_free(*chain, X509_free);
	*leaf = NULL;
	*chain = NULL;
	return -1;
}

int mtls_park(struct mtls *c)
{
	struct park_keys *k;
	struct record *rec;
	SSL *ssl;
	uint16_t suite;

	if (c == NULL || c->kind != KIND_CONN)
		return -1;
	if (c->conn.rec != NULL)
		return 1;
	ssl = c->conn.ssl;
	k = c->conn.keys;
	if (!c->conn.handshake_done || ssl == NULL || k == NULL ||
	    SSL_version(ssl) != TLS1_3_VERSION ||
	    (c->conn.err.reason != MTLS_REASON_NONE && c->conn.err.reason != MTLS_REASON_USAGE))
		return 0;
	if (!k->rd_epoch || !k->wr_epoch || k->key_updated || k->rd_len == 0 ||
	    k->rd_len != k->wr_len)
		return 0;
	/* between records and messages: nothing held inside OpenSSL, nothing half received or
	 * sent; OpenSSL not in an error state. A max_fragment_length (RFC 6066) the peer asked
	 * for is not carried (records are sealed up to 2^14). kTLS would write records without
	 * the message callback counting them: never parked (it is not turned on: sockbio.c). */
	if (!SSL_is_init_finished(ssl) || k->hs_in != k->hs_done ||
	    SSL_SESSION_get_max_fragment_length(SSL_get_session(ssl)) !=
		    TLSEXT_max_fragment_length_DISABLED ||
	    BIO_get_ktls_send(SSL_get_wbio(ssl)) || BIO_get_ktls_recv(SSL_get_rbio(ssl)))
		return 0;
	if (c->conn.write_pending || SSL_get_shutdown(ssl) != 0 || SSL_has_pending(ssl) ||
	    SSL_pending(ssl) > 0 || !sockbio_at_record_end(SSL_get_rbio(ssl)))
		return 0;
	suite = (uint16_t)SSL_CIPHER_get_protocol_id(SSL_get_current_cipher(ssl));
	if (!record_suite_supported(suite))
		return 0;
	rec = record_new(SSL_get_fd(ssl), c->state->server, suite, k->rd_secret, k->wr_secret,
			 k->rd_len, k->rd_records, k->wr_records);
	if (rec == NULL || keep_peer_certs(c, ssl) != 0) {
		/* the connection carries on unparked: its error is not set */
		record_free(rec);
		return -1;
	}
	record_set_drained(rec, sockbio_drained(SSL_get_rbio(ssl)));
	c->conn.version = SSL_get_version(ssl);
	c->conn.cipher = SSL_get_cipher_name(ssl);
	c->conn.resumed = SSL_session_reused(ssl);
	c->conn.alpn_ours = mtls_conn_alpn(c) != NULL;
	/* the session stays resumable (see conn_free()) */
	SSL_set_shutdown(ssl, SSL_get_shutdown(ssl) | SSL_SENT_SHUTDOWN);
	SSL_free(ssl);
	c->conn.ssl = NULL;
	park_keys_free(k);
	c->conn.keys = NULL;
	c->conn.rec = rec;
	return 1;
}

int mtls_conn_parked(const struct mtls *c)
{
	return c != NULL && c->kind == KIND_CONN && c->conn.rec != NULL;
}
