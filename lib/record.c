/*
 * A parked connection's TLS 1.3 record layer (mtls_park(), conn.c).
 *
 * OpenSSL keeps about 18 KiB for every connection for as long as it lasts: the SSL object,
 * a cipher context for each direction, the session, the peer's certificates, key shares.
 * Moving the next record needs none of that, only each direction's traffic secret, key, IV
 * and sequence number (RFC 8446 7.1-7.3, 5.3). A parked connection keeps those here and its
 * SSL is freed. It is what OpenSSL itself does when it hands a connection to the kernel's
 * TLS (kTLS, which this project's kernels lack): the records move elsewhere, the handshake
 * is over. The AEADs are OpenSSL's, through EVP; what is ours is the framing (5.1, 5.2), the
 * padding and inner content type (5.4), KeyUpdate (4.6.3), alerts (6) and the limits (5.5).
 *
 * Inbound records are read ahead as OpenSSL's are (one recv for all that has arrived, up to
 * one record's room) and opened in place; the buffer is freed once empty, and the cipher
 * contexts with it, unless the connection keeps its buffers (busy, record_keep_buffers()).
 * A record is sealed once: if the socket takes only part of it, the rest is sent before
 * anything else, and the write that sealed it is answered when it has gone.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/ssl.h>

#include "internal.h"

#define HEADER_LEN 5
#define TAG_LEN	   16
#define IV_LEN	   12
#define MAX_PLAIN  16384	     /* 2^14 (5.1) */
#define MAX_CIPHER (MAX_PLAIN + 256) /* TLSCiphertext.length at most 2^14 + 256 (5.2) */
#define IN_ROOM	   (HEADER_LEN + MAX_CIPHER)
#define OUT_ROOM   (HEADER_LEN + MAX_PLAIN + 1 + TAG_LEN)
#define MAX_QUIET_RECORDS                                                                          \
	32		     /* in a row without application data: empty records, KeyUpdates,      \
			      * tickets (OpenSSL allows 32 empty records) */
#define MAX_WARNING_ALERTS 4 /* user_canceled in a row (OpenSSL refuses the 5th) */
#define RECORDS_PER_KEY	   (1ULL << 24) /* our own key is updated before AES-GCM's limit (5.5) */

enum {
	CT_ALERT = 21,
	CT_HANDSHAKE = 22,
	CT_APPLICATION_DATA = 23,
	HS_NEW_SESSION_TICKET = 4,
	HS_KEY_UPDATE = 24,
	AD_CLOSE_NOTIFY = 0,
	AD_UNEXPECTED_MESSAGE = 10,
	AD_BAD_RECORD_MAC = 20,
	AD_RECORD_OVERFLOW = 22,
	AD_DECODE_ERROR = 50,
	AD_ILLEGAL_PARAMETER = 47,
	AD_USER_CANCELED = 90,
};

struct direction {
	uint8_t secret[EVP_MAX_MD_SIZE];
	uint8_t key[32];
	uint8_t iv[IV_LEN];
	uint64_t seq;
	EVP_CIPHER_CTX *ctx; /* keyed; only while buffers are kept or within a call */
};

struct record {
	int fd;
	bool server;
	const struct suite *suite;
	struct direction rd, wr;
	/* inbound: in[start, have) received and not consumed; a record being handed out is
	 * in[start, start + rec_len) with its plaintext at in[plain_off, plain_end) */
	uint8_t *in;
	size_t start, have, rec_len, plain_off, plain_end;
	bool drained;	  /* the last recv came back short: the socket was empty */
	bool peer_closed; /* close_notify received */
	bool failed;	  /* a fatal error: no more I/O */
	bool keep;	  /* keep buffers and contexts between calls */
	unsigned quiet_records, warning_alerts; /* in a row, without application data */
	bool update_due; /* the peer asked for our KeyUpdate: it goes before our next record */
	bool sent_close;
	/* outbound: out[out_off, out_len) sealed and not yet sent; owed: the plaintext bytes
	 * of a write that sealed them, answered once they have gone */
	uint8_t *out;
	size_t out_off, out_len, owed;
};

/* The three suites a parked connection can carry (RFC 8446 B.4); CCM ones stay unparked. */
struct suite {
	uint16_t id;
	const char *cipher, *digest;
	size_t key_len, hash_len;
	EVP_CIPHER *evp; /* fetched once for the process */
	EVP_MD *md;
};

static struct suite suites[] = {
	{0x1301, "AES-128-GCM", "SHA256", 16, 32, NULL, NULL},
	{0x1302, "AES-256-GCM", "SHA384", 32, 48, NULL, NULL},
	{0x1303, "ChaCha20-Poly1305", "SHA256", 32, 32, NULL, NULL},
};

static EVP_KDF *hkdf;
static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;

static void fetch_all(void)
{
	hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++) {
		suites[i].evp = EVP_CIPHER_fetch(NULL, suites[i].cipher, NULL);
		suites[i].md = EVP_MD_fetch(NULL, suites[i].digest, NULL);
	}
}

static const struct suite *suite_of(uint16_t id)
{
	pthread_once(&fetch_once, fetch_all);
	if (hkdf == NULL)
		return NULL;
	for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++)
		if (suites[i].id == id)
			return suites[i].evp != NULL && suites[i].md != NULL ? &suites[i] : NULL;
	return NULL;
}

bool record_suite_supported(uint16_t id)
{
	return suite_of(id) != NULL;
}

/* HKDF-Expand-Label(secret, label, "", out_len) (7.1). */
static bool expand_label(const struct suite *s, const uint8_t *secret, const char *label,
			 uint8_t *out, size_t out_len)
{
	uint8_t info[2 + 1 + 6 + 16 + 1];
	size_t label_len = strlen(label), n = 0;
	char mode[] = "EXPAND_ONLY", digest[16];
	uint8_t key[EVP_MAX_MD_SIZE];
	OSSL_PARAM params[5];
	EVP_KDF_CTX *k;
	bool ok;

	if (label_len > 16)
		return false;
	info[n++] = (uint8_t)(out_len >> 8);
	info[n++] = (uint8_t)out_len;
	info[n++] = (uint8_t)(6 + label_len);
	memcpy(info + n, "tls13 ", 6);
	n += 6;
	memcpy(info + n, label, label_len);
	n += label_len;
	info[n++] = 0; /* an empty context */
	k = EVP_KDF_CTX_new(hkdf);
	if (k == NULL)
		return false;
	/* OSSL_PARAM takes non-const pointers: copies */
	memcpy(key, secret, s->hash_len);
	snprintf(digest, sizeof(digest), "%s", s->digest);
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_MODE, mode, 0);
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0);
	params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, key, s->hash_len);
	params[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, n);
	params[4] = OSSL_PARAM_construct_end();
	ok = EVP_KDF_derive(k, out, out_len, params) == 1;
	EVP_KDF_CTX_free(k);
	OPENSSL_cleanse(key, sizeof(key));
	return ok;
}

static void drop_ctx(struct direction *d)
{
	EVP_CIPHER_CTX_free(d->ctx);
	d->ctx = NULL;
}

/* The direction's key and IV from its secret, the sequence number back to 0. */
static bool derive(const struct record *p, struct direction *d)
{
	drop_ctx(d);
	d->seq = 0;
	return expand_label(p->suite, d->secret, "key", d->key, p->suite->key_len) &&
	       expand_label(p->suite, d->secret, "iv", d->iv, IV_LEN);
}

/* A KeyUpdate: the next secret of the direction (7.2), and its key and IV. */
static bool update(const struct record *p, struct direction *d)
{
	uint8_t next[EVP_MAX_MD_SIZE];
	bool ok = expand_label(p->suite, d->secret, "traffic upd", next, p->suite->hash_len);

	if (ok)
		memcpy(d->secret, next, p->suite->hash_len);
	OPENSSL_cleanse(next, sizeof(next));
	return ok && derive(p, d);
}

static void nonce_of(const struct direction *d, uint8_t nonce[IV_LEN])
{
	memcpy(nonce, d->iv, IV_LEN);
	for (int i = 0; i < 8; i++)
		nonce[IV_LEN - 1 - i] ^= (uint8_t)(d->seq >> (8 * i));
}

/* The direction's context, keyed, with this record's nonce. */
static EVP_CIPHER_CTX *ctx_for(const struct record *p, struct direction *d, int enc)
{
	uint8_t nonce[IV_LEN];
	bool fresh = d->ctx == NULL;

	if (fresh && (d->ctx = EVP_CIPHER_CTX_new()) == NULL)
		return NULL;
	nonce_of(d, nonce);
	if (EVP_CipherInit_ex2(d->ctx, fresh ? p->suite->evp : NULL, fresh ? d->key : NULL, nonce,
			       enc, NULL) != 1) {
		drop_ctx(d);
		return NULL;
	}
	return d->ctx;
}

/* Out of the busy state: what only a busy connection keeps is given back. */
static void release(struct record *p)
{
	if (p->keep)
		return;
	if (p->start == p->have) {
		free(p->in);
		p->in = NULL;
		p->start = p->have = 0;
	}
	if (p->out_len == 0) {
		free(p->out);
		p->out = NULL;
	}
	drop_ctx(&p->rd);
	drop_ctx(&p->wr);
}

struct record *record_new(int fd, bool server, uint16_t suite, const uint8_t *rd_secret,
			  const uint8_t *wr_secret, size_t secret_len, uint64_t rd_seq,
			  uint64_t wr_seq)
{
	const struct suite *s = suite_of(suite);
	struct record *p;

	if (s == NULL || secret_len != s->hash_len)
		return NULL;
	p = calloc(1, sizeof(*p));
	if (p == NULL)
		return NULL;
	p->fd = fd;
	p->server = server;
	p->suite = s;
	memcpy(p->rd.secret, rd_secret, secret_len);
	memcpy(p->wr.secret, wr_secret, secret_len);
	if (!derive(p, &p->rd) || !derive(p, &p->wr)) {
		record_free(p);
		return NULL;
	}
	p->rd.seq = rd_seq;
	p->wr.seq = wr_seq;
	return p;
}

void record_free(struct record *p)
{
	if (p == NULL)
		return;
	drop_ctx(&p->rd);
	drop_ctx(&p->wr);
	free(p->in);
	free(p->out);
	OPENSSL_cleanse(p, sizeof(*p));
	free(p);
}

int record_fd(const struct record *p)
{
	return p->fd;
}

void record_set_drained(struct record *p, bool drained)
{
	p->drained = drained;
}

void record_keep_buffers(struct record *p, bool keep)
{
	p->keep = keep;
	release(p);
}

/* --- sending --------------------------------------------------------------------------- */

/* Send what is sealed: 0 all gone, MTLS_WANT_POLLOUT, or -1. */
static int flush(struct record *p, struct error *err)
{
	while (p->out_off < p->out_len) {
		ssize_t n = send(p->fd, p->out + p->out_off, p->out_len - p->out_off, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN))
			return MTLS_WANT_POLLOUT;
		if (n < 0) {
			p->failed = true;
			return error_set(err, MTLS_REASON_IO, "connection write: %s",
					 strerror(errno));
		}
		p->out_off += (size_t)n;
	}
	p->out_off = p->out_len = 0;
	return 0;
}

/* Seal one record of the inner type into out (which must be empty). */
static int seal(struct record *p, uint8_t type, const void *data, size_t len, struct error *err)
{
	EVP_CIPHER_CTX *ctx;
	size_t inner = len + 1, total = HEADER_LEN + inner + TAG_LEN;
	uint8_t *o;
	int n = 0, fin = 0;

	if (len > MAX_PLAIN || p->out_len != 0)
		return error_set(err, MTLS_REASON_INTERNAL,
				 "record layer: nothing can be sealed now");
	if (p->out == NULL && (p->out = malloc(OUT_ROOM)) == NULL)
		return error_set(err, MTLS_REASON_INTERNAL, "out of memory");
	o = p->out;
	o[0] = CT_APPLICATION_DATA; /* the outer type of every protected record (5.2) */
	o[1] = 0x03;
	o[2] = 0x03;
	o[3] = (uint8_t)((inner + TAG_LEN) >> 8);
	o[4] = (uint8_t)(inner + TAG_LEN);
	if (len > 0)
		memcpy(o + HEADER_LEN, data, len);
	o[HEADER_LEN + len] = type;
	ctx = ctx_for(p, &p->wr, 1);
	if (ctx == NULL || EVP_EncryptUpdate(ctx, NULL, &n, o, HEADER_LEN) != 1 ||
	    EVP_EncryptUpdate(ctx, o + HEADER_LEN, &n, o + HEADER_LEN, (int)inner) != 1 ||
	    EVP_EncryptFinal_ex(ctx, o + HEADER_LEN + n, &fin) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, o + HEADER_LEN + inner) != 1) {
		p->failed = true;
		drop_ctx(&p->wr);
		return error_set_ssl(err, MTLS_REASON_INTERNAL, "record layer: cannot seal");
	}
	p->wr.seq++;
	p->out_off = 0;
	p->out_len = total;
	return 0;
}

/* Best effort on the way out after an error: an alert if nothing is half sent. */
static void send_alert(struct record *p, uint8_t desc)
{
	uint8_t alert[2] = {2, desc}; /* fatal (6) */
	struct error ignored;

	if (p->out_len != 0 || p->sent_close)
		return;
	p->sent_close = true;
	error_clear(&ignored);
	if (seal(p, CT_ALERT, alert, sizeof(alert), &ignored) == 0) {
		(void)send(p->fd, p->out, p->out_len, MSG_NOSIGNAL | MSG_DONTWAIT);
		p->out_off = p->out_len = 0;
	}
}

/* A fatal error in what the peer sent: the alert, then -1. */
static int protocol_error(struct record *p, uint8_t desc, struct error *err, const char *what)
{
	p->failed = true;
	send_alert(p, desc);
	return error_set(err, MTLS_REASON_MALFORMED, "the peer sent %s (RFC 8446)", what);
}

int record_key_update(struct record *p, bool request, struct error *err)
{
	const uint8_t msg[5] = {HS_KEY_UPDATE, 0, 0, 1, request ? 1 : 0};
	int rc;

	if (p->failed)
		return -1;
	rc = flush(p, err);
	if (rc != 0)
		return rc;
	if (seal(p, CT_HANDSHAKE, msg, sizeof(msg), err) != 0)
		return -1;
	/* sealed under the old key; everything after it under the new one */
	if (!update(p, &p->wr)) {
		p->failed = true;
		return error_set(err, MTLS_REASON_INTERNAL, "record layer: cannot update the key");
	}
	p->update_due = false;
	return flush(p, err);
}

/* Our KeyUpdate, when the peer asked for one or our key has sealed its share. */
static int key_update_if_due(struct record *p, struct error *err)
{
	if (!p->update_due && p->wr.seq < RECORDS_PER_KEY)
		return 0;
	return record_key_update(p, false, err);
}

ssize_t record_write(struct record *p, const void *buf, size_t len, struct error *err)
{
	size_t n = len < MAX_PLAIN ? len : MAX_PLAIN;
	int rc;

	if (p->failed)
		return -1;
	if (p->sent_close)
		return error_set(err, MTLS_REASON_USAGE, "write after mtls_close()");
	rc = flush(p, err);
	if (rc != 0)
		return rc;
	if (p->owed > 0) {
		/* the write that sealed them, made again: answered now that they have gone */
		size_t owed = p->owed;

		p->owed = 0;
		release(p);
		if (owed > len)
			return error_set(err, MTLS_REASON_USAGE,
					 "mtls_write retried with fewer bytes than before");
		return (ssize_t)owed;
	}
	rc = key_update_if_due(p, err);
	if (rc != 0)
		return rc;
	if (len == 0)
		return 0;
	if (seal(p, CT_APPLICATION_DATA, buf, n, err) != 0)
		return -1;
	rc = flush(p, err);
	if (rc == MTLS_WANT_POLLOUT) {
		p->owed = n;
		return rc;
	}
	if (rc != 0)
		return rc;
	release(p);
	return (ssize_t)n;
}

int record_close(struct record *p, struct error *err)
{
	static const uint8_t close_notify[2] = {1, AD_CLOSE_NOTIFY};
	int rc;

	if (p->failed)
		return -1;
	rc = flush(p, err);
	if (rc != 0)
		return rc;
	if (!p->sent_close) {
		p->sent_close = true;
		if (seal(p, CT_ALERT, close_notify, sizeof(close_notify), err) != 0)
			return -1;
		rc = flush(p, err);
	}
	if (rc == 0)
		release(p);
	return rc;
}

/* --- receiving ------------------------------------------------------------------------- */

/* Open the record at in[start] in place (5.2): its plaintext length and inner type. */
static int open_record(struct record *p, size_t clen, size_t *plen, uint8_t *type,
		       struct error *err)
{
	uint8_t *hdr = p->in + p->start, *body = hdr + HEADER_LEN;
	size_t n = clen - TAG_LEN;
	EVP_CIPHER_CTX *ctx;
	int out = 0, fin = 0;

	if (p->rd.seq == UINT64_MAX)
		return protocol_error(p, AD_UNEXPECTED_MESSAGE, err,
				      "too many records for one key");
	ctx = ctx_for(p, &p->rd, 0);
	if (ctx == NULL) {
		p->failed = true;
		return error_set_ssl(err, MTLS_REASON_INTERNAL, "record layer: cannot open");
	}
	if (EVP_DecryptUpdate(ctx, NULL, &out, hdr, HEADER_LEN) != 1 ||
	    EVP_DecryptUpdate(ctx, body, &out, body, (int)n) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, body + n) != 1 ||
	    EVP_DecryptFinal_ex(ctx, body + out, &fin) != 1) {
		ERR_clear_error();
		return protocol_error(p, AD_BAD_RECORD_MAC, err,
				      "a record that does not authenticate (bad_record_mac)");
	}
	p->rd.seq++;
	/* the inner content type: the last non-zero byte, after the padding (5.4) */
	while (n > 0 && body[n - 1] == 0)
		n--;
	if (n == 0)
		return protocol_error(p, AD_UNEXPECTED_MESSAGE, err,
				      "a record without a content type");
	*type = body[n - 1];
	*plen = n - 1;
	if (*plen > MAX_PLAIN)
		return protocol_error(p, AD_RECORD_OVERFLOW, err, "a record over 2^14 bytes");
	return 0;
}

static int on_alert(struct record *p, const uint8_t *a, size_t len, struct error *err)
{
	if (len != 2)
		return protocol_error(p, AD_DECODE_ERROR, err, "a malformed alert");
	if (a[1] == AD_CLOSE_NOTIFY) {
		p->peer_closed = true;
		return 0;
	}
	if (a[1] == AD_USER_CANCELED) { /* a close_notify follows (6.1) */
		if (++p->warning_alerts > MAX_WARNING_ALERTS)
			return protocol_error(p, AD_UNEXPECTED_MESSAGE, err,
					      "too many warning alerts in a row");
		return 0;
	}
	p->failed = true;
	return error_set(err, MTLS_REASON_REJECTED_BY_PEER,
			 "the peer ended the connection with an alert: %s",
			 SSL_alert_desc_string_long(a[1]));
}

/* Post-handshake messages, each whole in this record (4.6). */
static int on_handshake(struct record *p, const uint8_t *m, size_t len, struct error *err)
{
	size_t off = 0;

	if (len == 0)
		return protocol_error(p, AD_UNEXPECTED_MESSAGE, err, "an empty handshake record");
	while (off < len) {
		size_t mlen;

		if (len - off < 4)
			return protocol_error(p, AD_UNEXPECTED_MESSAGE, err,
					      "a handshake message split across records");
		mlen = (size_t)m[off + 1] << 16 | (size_t)m[off + 2] << 8 | m[off + 3];
		if (mlen > len - off - 4)
			return protocol_error(p, AD_UNEXPECTED_MESSAGE, err,
					      "a handshake message split across records");
		switch (m[off]) {
		case HS_KEY_UPDATE:
			if (mlen != 1 || m[off + 4] > 1)
				return protocol_error(
					p, mlen != 1 ? AD_DECODE_ERROR : AD_ILLEGAL_PARAMETER, err,
					"a malformed KeyUpdate");
			if (++p->quiet_records > MAX_QUIET_RECORDS)
				return protocol_error(p, AD_UNEXPECTED_MESSAGE, err,
						      "too many KeyUpdates in a row");
			/* the key changes here: nothing may follow in this record (5.1) */
			if (off + 5 != len)
				return protocol_error(p, AD_UNEXPECTED_MESSAGE, err,
						      "data after a KeyUpdate in its record");
			if (!update(p, &p->rd)) {
				p->failed = true;
				return error_set(err, MTLS_REASON_INTERNAL,
						 "record layer: cannot update the key");
			}
			if (m[off + 4] == 1)
				p->update_due = true;
			break;
		case HS_NEW_SESSION_TICKET:
			/* a client may ignore a ticket it is sent (4.6.1); a server is sent none.
			 * Not a record without content: OpenSSL takes any number of them. */
			if (p->server)
				return protocol_error(p, AD_UNEXPECTED_MESSAGE, err,
						      "a NewSessionTicket to a server");
			p->quiet_records = 0;
			break;
		default:
			return protocol_error(
				p, AD_UNEXPECTED_MESSAGE, err,
				"a handshake message not allowed after the handshake");
		}
		off += 4 + mlen;
	}
	return 0;
}

/* Consume the record handed out (or handled). */
static void consume(struct record *p)
{
	p->start += p->rec_len;
	p->rec_len = p->plain_off = p->plain_end = 0;
	if (p->start == p->have)
		p->start = p->have = 0;
}

/* The next whole record in the buffer: 1 handled (application data now in
 * [plain_off, plain_end), or a control record dealt with), 0 more bytes needed, -1. */
static int next_record(struct record *p, struct error *err)
{
	size_t avail = p->have - p->start, clen, plen = 0;
	const uint8_t *h;
	uint8_t type = 0;

	if (avail < HEADER_LEN)
		return 0;
	h = p->in + p->start;
	if (h[0] != CT_APPLICATION_DATA)
		return protocol_error(p, AD_UNEXPECTED_MESSAGE, err,
				      "an unprotected record after the handshake");
	if (h[1] != 0x03 || h[2] != 0x03)
		return protocol_error(p, AD_DECODE_ERROR, err, "a record of another version");
	clen = (size_t)h[3] << 8 | h[4];
	if (clen > MAX_CIPHER)
		return protocol_error(p, AD_RECORD_OVERFLOW, err, "a record over 2^14 + 256 bytes");
	if (clen < TAG_LEN + 1)
		return protocol_error(p, AD_DECODE_ERROR, err, "a record too short to hold a tag");
	if (avail < HEADER_LEN + clen)
		return 0;
	if (open_record(p, clen, &plen, &type, err) != 0)
		return -1;
	p->rec_len = HEADER_LEN + clen;
	p->plain_off = p->start + HEADER_LEN;
	switch (type) {
	case CT_APPLICATION_DATA:
		p->plain_end = p->plain_off + plen;
		if (plen > 0) {
			p->quiet_records = p->warning_alerts = 0;
			return 1;
		}
		if (++p->quiet_records > MAX_QUIET_RECORDS)
			return protocol_error(p, AD_UNEXPECTED_MESSAGE, err,
					      "too many records without data in a row");
		consume(p);
		return 1;
	case CT_ALERT:
		if (on_alert(p, p->in + p->plain_off, plen, err) != 0)
			return -1;
		break;
	case CT_HANDSHAKE:
		if (on_handshake(p, p->in + p->plain_off, plen, err) != 0)
			return -1;
		break;
	default:
		return protocol_error(p, AD_UNEXPECTED_MESSAGE, err,
				      "a record of an unexpected content type");
	}
	consume(p);
	return 1;
}

ssize_t record_read(struct record *p, void *buf, size_t len, struct error *err)
{
	for (;;) {
		ssize_t n;
		size_t room;
		int rc;

		if (p->plain_end > p->plain_off) {
			size_t k = p->plain_end - p->plain_off;

			if (k > len)
				k = len;
			memcpy(buf, p->in + p->plain_off, k);
			p->plain_off += k;
			if (p->plain_off == p->plain_end)
				consume(p);
			return (ssize_t)k;
		}
		if (p->failed)
			return -1;
		if (p->peer_closed)
			return 0;
		rc = next_record(p, err);
		if (rc < 0)
			return -1;
		if (rc > 0)
			continue;
		/* more bytes: what is left of a record to the front, then read ahead */
		if (p->in == NULL && (p->in = malloc(IN_ROOM)) == NULL)
			return error_set(err, MTLS_REASON_INTERNAL, "out of memory");
		if (p->start > 0) {
			memmove(p->in, p->in + p->start, p->have - p->start);
			p->have -= p->start;
			p->start = 0;
		}
		room = IN_ROOM - p->have;
		do
			n = recv(p->fd, p->in + p->have, room, 0);
		while (n < 0 && errno == EINTR);
		if (n < 0 && (errno == EAGAIN)) {
			p->drained = true;
			release(p);
			return MTLS_WANT_POLLIN;
		}
		if (n < 0) {
			p->failed = true;
			return error_set(err, MTLS_REASON_IO, "connection read: %s",
					 strerror(errno));
		}
		if (n == 0) {
			p->failed = true;
			return error_set(err, MTLS_REASON_TRUNCATED,
					 "the peer closed the connection without close_notify");
		}
		p->drained = (size_t)n < room;
		p->have += (size_t)n;
	}
}

bool record_drained(const struct record *p)
{
	size_t avail = p->have - p->start;

	if (p->plain_end > p->plain_off || p->peer_closed || p->failed || !p->drained)
		return false;
	/* a whole record waiting to be opened is not drained */
	if (avail >= HEADER_LEN) {
		size_t clen = (size_t)p->in[p->start + 3] << 8 | p->in[p->start + 4];

		return avail < HEADER_LEN + clen;
	}
	return true;
}

int record_send(struct record *p, uint8_t type, const void *data, size_t len, struct error *err)
{
	int rc;

	if (p->failed)
		return -1;
	rc = flush(p, err);
	if (rc != 0)
		return rc;
	if (seal(p, type, data, len, err) != 0)
		return -1;
	return flush(p, err);
}
