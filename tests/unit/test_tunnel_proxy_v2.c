/*
 * The PROXY v2 header builder (tunnel/proxy_v2.c): headers it builds decode to what it was
 * given, and whatever does not fit the protocol's 16-bit lengths or the buffer is refused
 * (0), never shortened nor written with a wrapped length.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy_v2.h"

#define BIG (3 * 65536)

struct decoded {
	unsigned family;
	size_t len; /* of the header, from its length field */
	char *version, *cn, *identity;
	int ssl_client;
	int tlvs_ok; /* every TLV and sub-TLV lies exactly within its parent */
};

static char *dup_n(const uint8_t *p, size_t n)
{
	char *s = malloc(n + 1);

	assert_non_null(s);
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

/* Decode the TLVs in [p, p + len); sub: inside PP2_TYPE_SSL. */
static void decode_tlvs(const uint8_t *p, size_t len, struct decoded *d, int sub)
{
	while (len > 0) {
		size_t vlen;

		if (len < 3 || (vlen = (size_t)p[1] << 8 | p[2]) > len - 3) {
			d->tlvs_ok = 0;
			return;
		}
		if (!sub && p[0] == 0x20) {
			if (vlen < 5) {
				d->tlvs_ok = 0;
				return;
			}
			d->ssl_client = p[3];
			decode_tlvs(p + 8, vlen - 5, d, 1);
		} else if (sub && p[0] == 0x21) {
			d->version = dup_n(p + 3, vlen);
		} else if (sub && p[0] == 0x22) {
			d->cn = dup_n(p + 3, vlen);
		} else if (!sub && p[0] == PROXY_V2_TYPE_MTLS_IDENTITY) {
			d->identity = dup_n(p + 3, vlen);
		} else {
			d->tlvs_ok = 0;
		}
		p += 3 + vlen;
		len -= 3 + vlen;
	}
}

static void decode(const uint8_t *buf, size_t n, struct decoded *d)
{
	static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
					0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
	size_t addr;

	memset(d, 0, sizeof(*d));
	d->tlvs_ok = 1;
	assert_true(n >= 16);
	assert_memory_equal(buf, sig, 12);
	assert_int_equal(buf[12], 0x21);
	d->family = buf[13];
	d->len = (size_t)buf[14] << 8 | buf[15];
	assert_int_equal(d->len + 16, n);
	addr = d->family == 0x11 ? 12 : d->family == 0x21 ? 36 : 0;
	decode_tlvs(buf + 16 + addr, d->len - addr, d, 0);
}

static void decoded_free(struct decoded *d)
{
	free(d->version);
	free(d->cn);
	free(d->identity);
}

static void addrs(struct sockaddr_in *src, struct sockaddr_in *dst)
{
	memset(src, 0, sizeof(*src));
	memset(dst, 0, sizeof(*dst));
	src->sin_family = dst->sin_family = AF_INET;
	src->sin_addr.s_addr = htonl(0x7f000001);
	dst->sin_addr.s_addr = htonl(0x7f000002);
	src->sin_port = htons(40000);
	dst->sin_port = htons(443);
}

static char *repeat(char c, size_t n)
{
	char *s = malloc(n + 1);

	assert_non_null(s);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

static size_t build(uint8_t *buf, size_t cap, const char *cn, const char *identity)
{
	struct sockaddr_in src, dst;

	addrs(&src, &dst);
	return proxy_v2_header(buf, cap, (struct sockaddr *)&src, (struct sockaddr *)&dst,
			       "TLSv1.3", cn, identity, 0);
}

static void test_round_trip(void **state)
{
	uint8_t buf[512];
	struct decoded d;
	size_t n = build(buf, sizeof(buf), "app1", "spiffe://example.org/ns/prod/sa/app1");

	(void)state;
	assert_true(n > 0);
	decode(buf, n, &d);
	assert_int_equal(d.family, 0x11);
	assert_true(d.tlvs_ok);
	assert_int_equal(d.ssl_client, 0x07);
	assert_string_equal(d.version, "TLSv1.3");
	assert_string_equal(d.cn, "app1");
	assert_string_equal(d.identity, "spiffe://example.org/ns/prod/sa/app1");
	decoded_free(&d);
}

/* The largest values that fit are carried whole; one byte more is refused. */
static void test_limits(void **state)
{
	uint8_t *buf = malloc(BIG);
	struct decoded d;
	/* after the 16 fixed bytes, at most 0xffff: IPv4 addresses 12, the SSL TLV 3 + 5,
	 * the version sub-TLV 3 + 7, the CN sub-TLV 3 + cn */
	size_t cn_max = 0xffff - 12 - 8 - 10 - 3;
	char *cn = repeat('c', cn_max + 1);
	char *id = repeat('i', 0x10000);
	size_t n;

	(void)state;
	assert_non_null(buf);
	n = build(buf, BIG, cn + 1, NULL);
	assert_true(n > 0);
	decode(buf, n, &d);
	assert_true(d.tlvs_ok);
	assert_int_equal(strlen(d.cn), cn_max);
	decoded_free(&d);

	/* a CN one byte longer */
	assert_int_equal(build(buf, BIG, cn, NULL), 0);
	/* an identity TLV longer than 0xffff */
	assert_int_equal(build(buf, BIG, "app1", id), 0);
	/* each fits alone, not both: the header's own length would pass 0xffff */
	id[0xffff - 100] = '\0';
	assert_int_equal(build(buf, BIG, cn + 1, id), 0);

	/* a header that fits the protocol but not the buffer; exactly the buffer is fine */
	id[1000] = '\0';
	n = build(buf, BIG, "app1", id);
	assert_true(n > 1000);
	assert_int_equal(build(buf, n - 1, "app1", id), 0);
	assert_int_equal(build(buf, n, "app1", id), n);
	free(cn);
	free(id);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_limits),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
