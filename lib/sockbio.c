/*
 * The socket BIO under every connection.
 *
 * OpenSSL's own socket BIO writes with write(2), so a peer that resets the connection kills
 * a program that did not ignore SIGPIPE; ours sends with MSG_NOSIGNAL. It also remembers the
 * first bytes the peer sent (a TLS record header starts with its type and version), which
 * tell "not TLS at all" from "TLS, cut short or malformed" when a handshake fails, and it
 * can discard what a refused peer already sent, so that closing the socket does not reset
 * the connection before the peer has read our alert.
 *
 * Connections read ahead (OpenSSL asks for as much as its buffer holds, so one recv(2) brings
 * in every record that has arrived). A recv that came back short means the socket was empty
 * at that moment: the BIO remembers it, so that mtls_read_drained() can tell an event loop
 * to wait for POLLIN instead of making a recv that could only fail with EAGAIN.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/bio.h>

#include "internal.h"

struct sockbio {
	int fd;
	uint8_t head[SOCKBIO_HEAD]; /* the first bytes received */
	int head_len;
	bool drained; /* the last recv returned less than asked for */
	/* the framing of what was received: the header bytes of the record under way (0-4)
	 * and the bytes of its body still to come */
	uint8_t hdr[5];
	uint8_t hdr_have;
	size_t body_left;
};

/* Follow the records through the bytes received: a header's length says where the next
 * header starts. */
static void frame(struct sockbio *s, const uint8_t *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		if (s->body_left > 0) {
			size_t k = n - i < s->body_left ? n - i : s->body_left;

			s->body_left -= k;
			i += k;
			continue;
		}
		s->hdr[s->hdr_have++] = p[i++];
		if (s->hdr_have == sizeof(s->hdr)) {
			s->body_left = (size_t)s->hdr[3] << 8 | s->hdr[4];
			s->hdr_have = 0;
		}
	}
}

static int sb_write(BIO *b, const char *buf, int len)
{
	struct sockbio *s = BIO_get_data(b);
	ssize_t n;

	BIO_clear_retry_flags(b);
	do
		n = send(s->fd, buf, (size_t)len, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		BIO_set_retry_write(b);
	return (int)n;
}

static int sb_read(BIO *b, char *buf, int len)
{
	struct sockbio *s = BIO_get_data(b);
	ssize_t n;

	BIO_clear_retry_flags(b);
	do
		n = recv(s->fd, buf, (size_t)len, 0);
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		BIO_set_retry_read(b);
	s->drained = n >= 0 && n < len;
	if (n > 0)
		frame(s, (const uint8_t *)buf, (size_t)n);
	for (ssize_t i = 0; i < n && s->head_len < SOCKBIO_HEAD; i++)
		s->head[s->head_len++] = (uint8_t)buf[i];
	return (int)n;
}

static int sb_puts(BIO *b, const char *str)
{
	return sb_write(b, str, (int)strlen(str));
}

static long sb_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	struct sockbio *s = BIO_get_data(b);

	(void)num;
	switch (cmd) {
	case BIO_C_GET_FD:
		if (ptr != NULL)
			*(int *)ptr = s->fd;
		return s->fd;
	case BIO_CTRL_FLUSH:
	case BIO_CTRL_DUP: return 1;
	case BIO_CTRL_GET_CLOSE: return BIO_NOCLOSE;
	case BIO_CTRL_SET_CLOSE: return 1;
	default: return 0;
	}
}

static int sb_create(BIO *b)
{
	BIO_set_init(b, 0);
	return 1;
}

static int sb_destroy(BIO *b)
{
	/* the fd belongs to the caller; only our state is freed */
	OPENSSL_free(BIO_get_data(b));
	BIO_set_data(b, NULL);
	return 1;
}

static BIO_METHOD *method;
static pthread_once_t method_once = PTHREAD_ONCE_INIT;

static void method_init(void)
{
	BIO_METHOD *m = BIO_meth_new(
		BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR, "mtls socket");

	if (m == NULL || !BIO_meth_set_write(m, sb_write) || !BIO_meth_set_read(m, sb_read) ||
	    !BIO_meth_set_puts(m, sb_puts) || !BIO_meth_set_ctrl(m, sb_ctrl) ||
	    !BIO_meth_set_create(m, sb_create) || !BIO_meth_set_destroy(m, sb_destroy)) {
		BIO_meth_free(m);
		return;
	}
	method = m;
}

BIO *sockbio_new(int fd)
{
	struct sockbio *s;
	BIO *b;

	pthread_once(&method_once, method_init);
	if (method == NULL || (b = BIO_new(method)) == NULL)
		return NULL;
	s = OPENSSL_zalloc(sizeof(*s));
	if (s == NULL) {
		BIO_free(b);
		return NULL;
	}
	s->fd = fd;
	BIO_set_data(b, s);
	BIO_set_init(b, 1);
	return b;
}

int sockbio_first_byte(BIO *b)
{
	struct sockbio *s = b != NULL ? BIO_get_data(b) : NULL;

	return s != NULL && s->head_len > 0 ? s->head[0] : -1;
}

int sockbio_head(BIO *b, uint8_t out[SOCKBIO_HEAD])
{
	struct sockbio *s = b != NULL ? BIO_get_data(b) : NULL;

	if (s == NULL)
		return 0;
	memcpy(out, s->head, (size_t)s->head_len);
	return s->head_len;
}

bool sockbio_drained(BIO *b)
{
	struct sockbio *s = b != NULL ? BIO_get_data(b) : NULL;

	return s != NULL && s->drained;
}

bool sockbio_at_record_end(BIO *b)
{
	struct sockbio *s = b != NULL ? BIO_get_data(b) : NULL;

	return s != NULL && s->hdr_have == 0 && s->body_left == 0;
}

void sockbio_discard_input(BIO *b)
{
	struct sockbio *s = b != NULL ? BIO_get_data(b) : NULL;
	char buf[4096];

	if (s == NULL)
		return;
	/* only what has already arrived, and not without bound */
	for (int i = 0; i < 16; i++)
		if (recv(s->fd, buf, sizeof(buf), MSG_DONTWAIT) <= 0)
			break;
}
