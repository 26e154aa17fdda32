/*
 * libFuzzer target: what a parked connection's record layer (lib/record.c) reads from its
 * peer. Per input, a fresh TLS 1.3 handshake over a socketpair between a libmtls server and
 * a plain OpenSSL client (certificates made once at start), the server parked (mtls_park()),
 * then the input turned into bytes on the client's side of the socket, the client's side shut
 * for writing, and the parked server read until it ends.
 *
 * The first byte chooses: bit 0 the mode, bits 1-2 the suite (AES-128-GCM, AES-256-GCM,
 * ChaCha20-Poly1305), bit 3 trickle (the stream arrives in small pieces between reads), bit
 * 4 mtls_keep_buffers(), bits 5-7 the size of each read.
 *   mode 0: the rest of the input as raw bytes;
 *   mode 1: chunks of [t][pad][len hi][len lo][data...]: t's top bit set, len raw bytes;
 *           else one record sealed with the client's application traffic keys (taken from
 *           the client's keylog and derived here, RFC 8446 7.1-7.3, independently of
 *           record.c), its inner plaintext data || type || pad zeros, with type 23, 22 or 21
 *           or (t bit 6) any t & 0x3f; len may pass the data given (filled with a pattern) to
 *           reach the largest records. A sealed KeyUpdate moves the sealer to the next key.
 *
 * Invariants, besides ASan/UBSan and leaks: a read never returns more than asked nor blocks
 * for good (after the peer's EOF every read ends in 0 or -1); in mode 0 no byte is ever read
 * and the end is -1 (malformed or truncated); in mode 1 the bytes read are a prefix of the
 * application data sealed, and while every record so far is one the RFC fixes the outcome of
 * (application data up to 2^14 bytes, KeyUpdate, an alert, or a record it refuses) the bytes
 * and the end are exactly that outcome: close_notify 0, another alert rejected_by_peer, a
 * refused record malformed, EOF after whole records truncated.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "mtls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond) ((cond) ? (void)0 : fail(#cond, __LINE__))

__attribute__((noreturn)) static void fail(const char *what, int line)
{
	fprintf(stderr, "fuzz_park: invariant failed at line %d: %s\n", line, what);
	abort();
}

#define MAX_PLAIN  16384
#define MAX_CIPHER (MAX_PLAIN + 256)
#define MAX_STREAM (1 << 20)

/* --- certificates, made once --------------------------------------------------------- */

static void add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;

	X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (ext == NULL || !X509_add_ext(cert, ext, -1))
		fail("certificate extension", __LINE__);
	X509_EXTENSION_free(ext);
}

/* A P-256 certificate for key, signed by issuer_key (self-signed when issuer is NULL). */
static X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key,
		       const char *eku, const char *san)
{
	X509 *x = X509_new();
	X509_NAME *name = X509_NAME_new();
	static long serial = 1;

	if (x == NULL || name == NULL)
		fail("X509_new", __LINE__);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_subject_name(x, name);
	X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 86400);
	X509_set_pubkey(x, key);
	if (issuer == NULL) {
		add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE");
		add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign");
		add_ext(x, x, NID_subject_key_identifier, "hash");
	} else {
		add_ext(x, issuer, NID_basic_constraints, "critical,CA:FALSE");
		add_ext(x, issuer, NID_key_usage, "critical,digitalSignature");
		add_ext(x, issuer, NID_ext_key_usage, eku);
		add_ext(x, issuer, NID_subject_alt_name, san);
		add_ext(x, issuer, NID_subject_key_identifier, "hash");
		add_ext(x, issuer, NID_authority_key_identifier, "keyid");
	}
	if (X509_sign(x, issuer_key, EVP_sha256()) <= 0)
		fail("X509_sign", __LINE__);
	X509_NAME_free(name);
	return x;
}

static char *pem_of(X509 *cert, EVP_PKEY *key)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *p, *out;
	long n;

	if (b == NULL || (cert != NULL && !PEM_write_bio_X509(b, cert)) ||
	    (key != NULL && !PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL)))
		fail("PEM", __LINE__);
	n = BIO_get_mem_data(b, &p);
	if ((out = malloc((size_t)n + 1)) == NULL)
		abort();
	memcpy(out, p, (size_t)n);
	out[n] = '\0';
	BIO_free(b);
	return out;
}

/* --- the two ends -------------------------------------------------------------------- */

static struct mtls *server;
static SSL_CTX *peer_ctx; /* the client: plain OpenSSL, so that its keylog is ours */

/* The client's application traffic secret of the handshake under way. */
static uint8_t client_secret[48];
static size_t client_secret_len;

static int hex(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static void keylog(const SSL *ssl, const char *line)
{
	static const char label[] = "CLIENT_TRAFFIC_SECRET_0 ";
	const char *p;
	size_t n = 0;

	(void)ssl;
	if (strncmp(line, label, sizeof(label) - 1) != 0 ||
	    (p = strchr(line + sizeof(label), ' ')) == NULL)
		return;
	for (p++; p[0] != '\0' && p[1] != '\0' && n < sizeof(client_secret); p += 2)
		client_secret[n++] = (uint8_t)(hex(p[0]) << 4 | hex(p[1]));
	client_secret_len = n;
}

static void setup(void)
{
	EVP_PKEY *ca_key = EVP_EC_gen("P-256"), *srv_key = EVP_EC_gen("P-256"),
		 *cli_key = EVP_EC_gen("P-256");
	X509 *ca, *srv, *cli;
	char *ca_pem, *srv_pem, *key_pem;
	struct mtls_config *cfg = mtls_config_new();

	if (ca_key == NULL || srv_key == NULL || cli_key == NULL || cfg == NULL)
		fail("setup", __LINE__);
	ca = make_cert("fuzz park CA", ca_key, NULL, ca_key, NULL, NULL);
	srv = make_cert("server.test", srv_key, ca, ca_key, "serverAuth", "DNS:server.test");
	cli = make_cert("client", cli_key, ca, ca_key, "clientAuth",
			"URI:spiffe://fuzz.test/client");
	ca_pem = pem_of(ca, NULL);
	srv_pem = pem_of(srv, NULL);
	key_pem = pem_of(NULL, srv_key);

	server = mtls_server_new();
	if (mtls_config_set_cert_mem(cfg, (const uint8_t *)srv_pem, strlen(srv_pem)) != 0 ||
	    mtls_config_set_key_mem(cfg, (const uint8_t *)key_pem, strlen(key_pem)) != 0 ||
	    mtls_config_set_ca_mem(cfg, (const uint8_t *)ca_pem, strlen(ca_pem)) != 0 ||
	    mtls_config_set_allow_any_identity(cfg, 1) != 0 ||
	    mtls_config_set_protocols(cfg, MTLS_TLS1_3, MTLS_TLS1_3) != 0 ||
	    mtls_config_set_session_tickets(cfg, 0) != 0 ||
	    mtls_config_set_session_cache(cfg, 0) != 0 || mtls_configure(server, cfg) != 0) {
		fprintf(stderr, "fuzz_park: server: %s / %s\n", mtls_config_error(cfg),
			mtls_error(server));
		abort();
	}
	mtls_config_free(cfg);

	peer_ctx = SSL_CTX_new(TLS_client_method());
	if (peer_ctx == NULL || !SSL_CTX_set_min_proto_version(peer_ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_use_certificate(peer_ctx, cli) || !SSL_CTX_use_PrivateKey(peer_ctx, cli_key))
		fail("client context", __LINE__);
	SSL_CTX_set_verify(peer_ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_keylog_callback(peer_ctx, keylog);

	free(ca_pem);
	free(srv_pem);
	OPENSSL_cleanse(key_pem, strlen(key_pem));
	free(key_pem);
	X509_free(ca);
	X509_free(srv);
	X509_free(cli);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(srv_key);
	EVP_PKEY_free(cli_key);
}

/* --- sealing records as the client (RFC 8446 5.2, 7.1-7.3) ----------------------------- */

static const struct {
	const char *name, *cipher, *digest;
	size_t key_len;
} suites[3] = {
	{"TLS_AES_128_GCM_SHA256", "AES-128-GCM", "SHA256", 16},
	{"TLS_AES_256_GCM_SHA384", "AES-256-GCM", "SHA384", 32},
	{"TLS_CHACHA20_POLY1305_SHA256", "ChaCha20-Poly1305", "SHA256", 32},
};

struct sealer {
	const EVP_CIPHER *cipher;
	const EVP_MD *md;
	size_t key_len, hash_len;
	uint8_t secret[48], key[32], iv[12];
	uint64_t seq;
};

/* HKDF-Expand-Label(secret, label, "", len) for len up to one hash: HMAC(secret, info || 1). */
static void expand_label(const struct sealer *s, const uint8_t *secret, const char *label,
			 uint8_t *out, size_t len)
{
	uint8_t info[64], mac[EVP_MAX_MD_SIZE];
	size_t n = 0, l = strlen(label);
	unsigned int mac_len = 0;

	info[n++] = (uint8_t)(len >> 8);
	info[n++] = (uint8_t)len;
	info[n++] = (uint8_t)(6 + l);
	memcpy(info + n, "tls13 ", 6);
	n += 6;
	memcpy(info + n, label, l);
	n += l;
	info[n++] = 0;
	info[n++] = 1;
	if (HMAC(s->md, secret, (int)s->hash_len, info, n, mac, &mac_len) == NULL || mac_len < len)
		fail("HMAC", __LINE__);
	memcpy(out, mac, len);
}

static void sealer_keys(struct sealer *s)
{
	expand_label(s, s->secret, "key", s->key, s->key_len);
	expand_label(s, s->secret, "iv", s->iv, sizeof(s->iv));
	s->seq = 0;
}

static void sealer_update(struct sealer *s)
{
	uint8_t next[48];

	expand_label(s, s->secret, "traffic upd", next, s->hash_len);
	memcpy(s->secret, next, s->hash_len);
	sealer_keys(s);
}

/* One record: header, inner (content || type || pad zeros) sealed, tag. Its length. */
static size_t seal(struct sealer *s, const uint8_t *content, size_t len, uint8_t type, size_t pad,
		   uint8_t *out)
{
	size_t inner = len + 1 + pad, clen = inner + 16;
	uint8_t nonce[12];
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int n = 0;

	check(clen <= 0xffff);
	out[0] = 23;
	out[1] = 3;
	out[2] = 3;
	out[3] = (uint8_t)(clen >> 8);
	out[4] = (uint8_t)clen;
	memcpy(out + 5, content, len);
	out[5 + len] = type;
	memset(out + 5 + len + 1, 0, pad);
	memcpy(nonce, s->iv, 12);
	for (int i = 0; i < 8; i++)
		nonce[11 - i] ^= (uint8_t)(s->seq >> (8 * i));
	if (ctx == NULL || EVP_EncryptInit_ex2(ctx, s->cipher, s->key, nonce, NULL) != 1 ||
	    EVP_EncryptUpdate(ctx, NULL, &n, out, 5) != 1 ||
	    EVP_EncryptUpdate(ctx, out + 5, &n, out + 5, (int)inner) != 1 ||
	    EVP_EncryptFinal_ex(ctx, out + 5 + n, &n) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, out + 5 + inner) != 1)
		fail("seal", __LINE__);
	EVP_CIPHER_CTX_free(ctx);
	s->seq++;
	return 5 + clen;
}

/* --- one connection ---------------------------------------------------------------------- */

struct run {
	int fds[2]; /* server, client */
	struct mtls *sc;
	SSL *peer;
	/* what the parked server read */
	uint8_t *got;
	size_t got_len;
	ssize_t end; /* 1: not ended yet; else the read's final 0 or -1 */
	size_t read_size;
	bool trickle;
};

static bool open_run(struct run *r, int suite)
{
	int s = MTLS_WANT_POLLIN, c = 0;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, r->fds) != 0)
		fail("socketpair", __LINE__);
	client_secret_len = 0;
	r->sc = mtls_accept_fd(server, r->fds[0]);
	r->peer = SSL_new(peer_ctx);
	if (r->sc == NULL || r->peer == NULL || !SSL_set_fd(r->peer, r->fds[1]) ||
	    !SSL_set_ciphersuites(r->peer, suites[suite].name))
		fail("connection", __LINE__);
	SSL_set_connect_state(r->peer);
	for (int i = 0; i < 100 && (s != 0 || c != 1); i++) {
		if (c != 1) {
			c = SSL_do_handshake(r->peer);
			if (c != 1 && SSL_get_error(r->peer, c) != SSL_ERROR_WANT_READ)
				return false;
		}
		if (s != 0) {
			s = mtls_handshake(r->sc);
			if (s == -1)
				return false;
		}
	}
	return s == 0 && c == 1 && client_secret_len > 0;
}

static void close_run(struct run *r)
{
	mtls_free(r->sc);
	SSL_free(r->peer);
	close(r->fds[0]);
	close(r->fds[1]);
	free(r->got);
}

/* One read of the parked server. */
static void read_once(struct run *r)
{
	uint8_t buf[MAX_PLAIN + 2];
	size_t want = r->read_size;
	ssize_t n;

	if (r->end != 1)
		return;
	/* the byte after what was asked for must stay untouched */
	buf[want] = 0xa5;
	n = mtls_read(r->sc, buf, want);
	check(buf[want] == 0xa5);
	check(n <= (ssize_t)want);
	if (n == MTLS_WANT_POLLIN)
		return;
	check(n != MTLS_WANT_POLLOUT);
	if (n <= 0) {
		check(n == 0 || n == -1);
		r->end = n;
		return;
	}
	check(r->got_len + (size_t)n <= MAX_STREAM);
	memcpy(r->got + r->got_len, buf, (size_t)n);
	r->got_len += (size_t)n;
}

/* Bytes toward the parked server; when the socket is full (or trickling), the server reads. */
static void feed(struct run *r, const uint8_t *p, size_t len)
{
	while (len > 0 && r->end == 1) {
		size_t piece = r->trickle ? 1 + (len * 7 + p[0]) % 61 : len;
		ssize_t n = send(r->fds[1], p, piece < len ? piece : len, MSG_NOSIGNAL);

		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return; /* the server went away: nothing more to say */
		if (n > 0) {
			p += n;
			len -= (size_t)n;
		}
		if (n < 0 || r->trickle)
			read_once(r);
	}
}

/* The peer's EOF: every read ends, in a bounded number of calls. */
static void finish(struct run *r)
{
	shutdown(r->fds[1], SHUT_WR);
	for (int i = 0; i < 100000 && r->end == 1; i++)
		read_once(r);
	check(r->end != 1);
	/* after the end, the end again; and a write and a close do not crash */
	{
		uint8_t b;

		check(mtls_read(r->sc, &b, 1) == r->end);
		(void)mtls_write(r->sc, "x", 1);
		(void)mtls_close(r->sc);
	}
}

/* --- mode 1: the model ---------------------------------------------------------------------- */

enum outcome { GOING, CLOSED, REJECTED, REFUSED, UNKNOWN };

struct model {
	enum outcome state;
	uint8_t *data; /* the application data sealed, all of it */
	size_t len;
	size_t known_len; /* of it, what must be read when the outcome is known */
	int key_updates;
};

/* What the receiver makes of an inner plaintext (5.4): its type and content length, or
 * type 0 when it is all zeros. */
static uint8_t inner_type(const uint8_t *inner, size_t n, size_t *content)
{
	while (n > 0 && inner[n - 1] == 0)
		n--;
	*content = n > 0 ? n - 1 : 0;
	return n > 0 ? inner[n - 1] : 0;
}

static void model_record(struct model *m, const uint8_t *inner, size_t inner_len, bool *ku)
{
	size_t clen;
	uint8_t type = inner_type(inner, inner_len, &clen);

	*ku = false;
	if (type == 23 && clen <= MAX_PLAIN && inner_len + 16 <= MAX_CIPHER) {
		if (m->len + clen <= MAX_STREAM) {
			memcpy(m->data + m->len, inner, clen);
			m->len += clen;
		}
		if (m->state == GOING) {
			m->known_len = m->len;
			m->key_updates = 0;
		}
		return;
	}
	/* a KeyUpdate alone in its record: the sealer's key changes after it either way */
	if (type == 22 && clen == 5 && inner[0] == 24 && inner[1] == 0 && inner[2] == 0 &&
	    inner[3] == 1 && inner[4] <= 1) {
		*ku = true;
		if (m->state == GOING && ++m->key_updates > 32)
			m->state = REFUSED;
		return;
	}
	if (m->state != GOING)
		return;
	if (inner_len + 16 > MAX_CIPHER || clen > MAX_PLAIN || type == 0) {
		m->state = REFUSED;
	} else if (type == 21 && clen == 2) {
		if (inner[1] == 0)
			m->state = CLOSED;
		else if (inner[1] != 90) /* user_canceled: a close_notify should follow */
			m->state = REJECTED;
		else
			m->state = UNKNOWN;
	} else {
		/* a malformed alert, any other handshake message (a server takes none but
		 * KeyUpdate), or an unknown content type */
		m->state = REFUSED;
	}
}

static void run_records(struct run *r, struct sealer *s, const uint8_t *p, size_t left)
{
	static uint8_t inner[0x10000], rec[0x10000 + 64];
	struct model m = {.state = GOING, .data = malloc(MAX_STREAM)};
	size_t total = 0; /* bytes sealed */

	if (m.data == NULL)
		abort();
	while (left >= 4 && r->end == 1) {
		uint8_t t = p[0];
		size_t pad = p[1], len = (size_t)p[2] << 8 | p[3], given, out_len;

		p += 4;
		left -= 4;
		given = len < left ? len : left;
		if (t & 0x80) { /* raw */
			if (given > 0 && m.state == GOING)
				m.state = UNKNOWN;
			feed(r, p, given);
			p += given;
			left -= given;
			continue;
		}
		/* sealed: content of len bytes (the input's, then a pattern), within what a
		 * record header can say */
		if (len + 1 + pad + 16 > 0xffff)
			len = 0xffff - 16 - 1 - pad;
		given = len < given ? len : given;
		memcpy(inner, p, given);
		for (size_t i = given; i < len; i++)
			inner[i] = (uint8_t)(i * 31 + 7);
		p += given;
		left -= given;
		{
			uint8_t type = t & 0x40 ? t & 0x3f : (uint8_t)(23 - t % 3);
			bool ku;

			inner[len] = type;
			memset(inner + len + 1, 0, pad);
			model_record(&m, inner, len + 1 + pad, &ku);
			out_len = seal(s, inner, len, type, pad, rec);
			if ((total += out_len) > MAX_STREAM)
				break;
			feed(r, rec, out_len);
			if (ku)
				sealer_update(s);
		}
	}
	finish(r);

	/* what was read is application data that was sealed, in order */
	check(r->got_len <= m.len && memcmp(r->got, m.data, r->got_len) == 0);
	switch (m.state) {
	case GOING:
		check(r->got_len == m.known_len);
		check(r->end == -1 && mtls_error_reason(r->sc) == MTLS_REASON_TRUNCATED);
		break;
	case CLOSED: check(r->got_len == m.known_len && r->end == 0); break;
	case REJECTED:
		check(r->got_len == m.known_len);
		check(r->end == -1 && mtls_error_reason(r->sc) == MTLS_REASON_REJECTED_BY_PEER);
		break;
	case REFUSED:
		check(r->got_len == m.known_len);
		check(r->end == -1 && mtls_error_reason(r->sc) == MTLS_REASON_MALFORMED);
		break;
	case UNKNOWN: break;
	}
	free(m.data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	static const size_t read_sizes[8] = {1, 5, 100, 1000, 4096, 16383, 16384, 16385};
	struct run r = {.end = 1};
	struct sealer s;
	int suite;

	if (!ready) {
		setup();
		ready = true;
	}
	if (size < 1)
		return 0;
	suite = (data[0] >> 1 & 3) % 3;
	r.trickle = data[0] & 8;
	r.read_size = read_sizes[data[0] >> 5];
	if ((r.got = malloc(MAX_STREAM)) == NULL)
		abort();
	if (!open_run(&r, suite))
		fail("handshake", __LINE__);
	check(mtls_park(r.sc) == 1);
	check(mtls_conn_parked(r.sc) == 1);
	if (data[0] & 16)
		mtls_keep_buffers(r.sc, 1);

	if ((data[0] & 1) == 0) {
		feed(&r, data + 1, size - 1);
		finish(&r);
		check(r.got_len == 0);
		check(r.end == -1);
		check(mtls_error_reason(r.sc) == MTLS_REASON_MALFORMED ||
		      mtls_error_reason(r.sc) == MTLS_REASON_TRUNCATED);
	} else {
		s.cipher = EVP_get_cipherbyname(suites[suite].cipher);
		s.md = EVP_get_digestbyname(suites[suite].digest);
		check(s.cipher != NULL && s.md != NULL);
		s.key_len = suites[suite].key_len;
		s.hash_len = (size_t)EVP_MD_get_size(s.md);
		check(client_secret_len == s.hash_len);
		memcpy(s.secret, client_secret, s.hash_len);
		sealer_keys(&s);
		run_records(&r, &s, data + 1, size - 1);
	}
	close_run(&r);
	return 0;
}
