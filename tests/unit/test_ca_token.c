/*
 * Enrollment tokens (ca/token.c) and their rows in the inventory (store_token_*): the text
 * round-trips and is read strictly (every malformed class refused with a message that
 * tells damage from a foreign token), the root pin, the URL rule, the grant a stored token
 * gives; a token is taken once (also by concurrent processes), not after it expires, and
 * the audit chain and store_check() stay intact, also on an inventory made before tokens.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <sqlite3.h>

#include "grant.h"
#include "store.h"
#include "testutil.h"
#include "token.h"

static char dir[64];
static char dbpath[128];
static X509 *root, *other_root;

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/mtls-token-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(dbpath, sizeof(dbpath), "%s/ca.db", dir);
	root = test_read_cert("ca.pem");
	other_root = test_read_cert("other-ca.pem");
	return 0;
}

static int teardown(void **state)
{
	char cmd[200];

	(void)state;
	X509_free(root);
	X509_free(other_root);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* ---- an independent encoder, to build texts the CA would never print ------------------ */

/* CRC-32 with a table (token.c computes it bit by bit) */
static uint32_t crc32_table(const char *p, size_t n)
{
	static uint32_t table[256];
	uint32_t crc = 0xffffffffu;

	if (table[1] == 0)
		for (uint32_t i = 0; i < 256; i++) {
			uint32_t c = i;

			for (int k = 0; k < 8; k++)
				c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
			table[i] = c;
		}
	for (size_t i = 0; i < n; i++)
		crc = table[(crc ^ (unsigned char)p[i]) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* base64url of n bytes with EVP_EncodeBlock, then '+' '/' swapped and '=' dropped */
static void b64(const void *in, size_t n, char *out)
{
	int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);

	while (len > 0 && out[len - 1] == '=')
		out[--len] = '\0';
	for (int i = 0; i < len; i++)
		out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
}

/* "mtls1.S.R.U.<crc of that>" from the three parts as given */
static void assemble(const char *s, const char *r, const char *u, char *out, size_t len)
{
	unsigned char crc[4];
	char c[16];
	uint32_t v;
	int n = snprintf(out, len, "mtls1.%s.%s.%s", s, r, u);

	assert_true(n > 0 && (size_t)n < len);
	v = crc32_table(out, (size_t)n);
	crc[0] = (unsigned char)(v >> 24);
	crc[1] = (unsigned char)(v >> 16);
	crc[2] = (unsigned char)(v >> 8);
	crc[3] = (unsigned char)v;
	b64(crc, 4, c);
	snprintf(out + n, len - (size_t)n, ".%s", c);
}

static void parts_of(const struct token *t, char s[64], char r[64], char u[512])
{
	b64(t->secret, sizeof(t->secret), s);
	b64(t->root_sha256, sizeof(t->root_sha256), r);
	b64(t->url, strlen(t->url), u);
}

static void make(struct token *t, const char *url)
{
	char err[256] = "";

	assert_int_equal(token_make(t, root, url, err, sizeof(err)), 0);
}

/* ---- the text ------------------------------------------------------------------------ */

static void test_round_trip(void **state)
{
	struct token t, got;
	char text[TOKEN_TEXT_MAX + 1], again[TOKEN_TEXT_MAX + 1], mine[600], s[64], r[64], u[512],
		padded[700], err[256];
	static const char *const urls[] = {"https://ca.example.org:8443", "https://10.0.0.1",
					   "https://[2001:db8::1]:443", "https://localhost:1",
					   "https://CA.Example.ORG:65535"};

	(void)state;
	for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
		make(&t, urls[i]);
		assert_int_equal(token_encode(&t, text, sizeof(text)), 0);
		/* the independent encoder writes the same text */
		parts_of(&t, s, r, u);
		assemble(s, r, u, mine, sizeof(mine));
		assert_string_equal(text, mine);
		assert_int_equal(token_decode(text, &got, err, sizeof(err)), 0);
		assert_memory_equal(got.secret, t.secret, sizeof(t.secret));
		assert_memory_equal(got.root_sha256, t.root_sha256, 32);
		assert_string_equal(got.url, urls[i]);
		assert_int_equal(token_encode(&got, again, sizeof(again)), 0);
		assert_string_equal(again, text);
		/* surrounding ASCII whitespace, as a paste brings it */
		snprintf(padded, sizeof(padded), " \t\r\n%s\r\n\n ", text);
		assert_int_equal(token_decode(padded, &got, err, sizeof(err)), 0);
		assert_memory_equal(got.secret, t.secret, sizeof(t.secret));
	}
	/* two tokens never share a secret */
	{
		struct token a, b;

		make(&a, urls[0]);
		make(&b, urls[0]);
		assert_memory_not_equal(a.secret, b.secret, sizeof(a.secret));
	}
	/* the longest URL: a 443-byte token */
	{
		char url[300], host[249];

		memset(host, 'a', 248);
		host[63] = host[127] = host[191] = '.';
		host[248] = '\0';
		snprintf(url, sizeof(url), "https://%s", host);
		assert_int_equal(strlen(url), TOKEN_URL_MAX);
		make(&t, url);
		assert_int_equal(token_encode(&t, text, sizeof(text)), 0);
		assert_int_equal(strlen(text), 443);
		assert_int_equal(token_decode(text, &got, err, sizeof(err)), 0);
		assert_string_equal(got.url, url);
		/* too small an output buffer */
		assert_int_equal(token_encode(&t, text, 443), -1);
		/* one byte more is refused when made */
		snprintf(url, sizeof(url), "https://%sa", host);
		assert_int_equal(token_make(&t, root, url, err, sizeof(err)), -1);
		assert_non_null(strstr(err, "longer than 256"));
	}
	token_wipe(&t);
	for (size_t i = 0; i < sizeof(t); i++)
		assert_int_equal(((unsigned char *)&t)[i], 0);
}

struct bad {
	const char *name;
	char text[1200];
	const char *says;
};

static void refused(const struct bad *b)
{
	struct token t;
	char err[512] = "";

	memset(&t, 0x5a, sizeof(t));
	if (token_decode(b->text, &t, err, sizeof(err)) == 0)
		fail_msg("%s: accepted '%s'", b->name, b->text);
	if (strstr(err, b->says) == NULL)
		fail_msg("%s: message '%s' lacks '%s'", b->name, err, b->says);
	assert_null(strchr(err, '\n'));
	/* nothing of a refused token is left in t */
	for (size_t i = 0; i < sizeof(t); i++)
		assert_int_equal(((unsigned char *)&t)[i], 0);
}

static void test_malformed(void **state)
{
	struct token t;
	char good[TOKEN_TEXT_MAX + 1], s[64], r[64], u[512], x[700], url[300];
	static struct bad b[64];
	size_t n = 0, len;
	const char *damaged = "the token is damaged", *checksum = "damaged (checksum): copy it "
								  "again whole";
#define ADD(N, SAYS, ...)                                                                          \
	do {                                                                                       \
		b[n].name = (N);                                                                   \
		b[n].says = (SAYS);                                                                \
		snprintf(b[n].text, sizeof(b[n].text), __VA_ARGS__);                               \
		n++;                                                                               \
	} while (0)

	(void)state;
	make(&t, "https://ca.example.org:8443");
	assert_int_equal(token_encode(&t, good, sizeof(good)), 0);
	parts_of(&t, s, r, u);
	len = strlen(good);

	ADD("empty", "no token given", "%s", "");
	ADD("blank", "no token given", "%s", " \t\n ");
	ADD("other word", "not an mtls enrollment token", "%s", "hello");
	ADD("upper-case prefix", "not an mtls enrollment token", "MTLS1.%s", good + 6);
	ADD("other version", "mtls2 token, of another version", "mtls2.%s", good + 6);
	ADD("version 10", "mtls10 token", "mtls10.%s", good + 6);
	ADD("prefix only, cut", "cut short", "%s", "mtls1");
	ADD("prefix only", "5", "%s", "mtls1.");
	ADD("crc missing", "4 parts", "%.*s", (int)(strrchr(good, '.') - good), good);
	ADD("cut in the middle", "parts", "%.*s", 60, good);
	ADD("extra part", "6 parts", "%s.AAAA", good);
	ADD("cut by one", "wrong length", "%.*s", (int)len - 1, good);
	ADD("one more", "wrong length", "%sA", good);
	ADD("secret short", "wrong length", "mtls1.%.42s.%s.%s.AAAAAA", s, r, u);
	ADD("url empty", "wrong length", "mtls1.%s.%s..AAAAAA", s, r);
	ADD("whitespace inside", "whitespace at character 20", "%.19s %s", good, good + 19);
	ADD("line break inside", "whitespace", "%.60s\n%s", good, good + 60);
	ADD("tab inside", "whitespace", "%.60s\t%s", good, good + 60);
	ADD("padding", "padding '='", "mtls1.%s=.%s.%s.AAAAAA", s, r, u);
	ADD("standard base64 +", "standard base64", "%.10s+%s", good, good + 11);
	ADD("standard base64 /", "standard base64", "%.10s/%s", good, good + 11);
	ADD("control byte", "character 11", "%.10s\x01%s", good, good + 11);
	ADD("non-ASCII", damaged, "%.10s\xc3\xa9%s", good, good + 12);
	ADD("NUL-free but long", "more than a token's 512", "%s%0600d", good, 0);
	/* a changed character anywhere: the checksum says so */
	ADD("secret mistyped", checksum, "%s", good);
	b[n - 1].text[10] = b[n - 1].text[10] == 'A' ? 'B' : 'A';
	ADD("root mistyped", checksum, "%s", good);
	b[n - 1].text[60] = b[n - 1].text[60] == 'A' ? 'B' : 'A';
	ADD("url mistyped", checksum, "%s", good);
	b[n - 1].text[100] = b[n - 1].text[100] == 'A' ? 'B' : 'A';
	ADD("crc mistyped", checksum, "%s", good);
	b[n - 1].text[len - 2] = b[n - 1].text[len - 2] == 'A' ? 'B' : 'A';
	/* the last CRC character carries 4 stray bits: another spelling of the same CRC */
	ADD("crc non-canonical", checksum, "%s", good);
	b[n - 1].text[len - 1] = b[n - 1].text[len - 1] == 'A'	 ? 'B'
				 : b[n - 1].text[len - 1] == 'Q' ? 'R'
				 : b[n - 1].text[len - 1] == 'g' ? 'h'
								 : 'x';
	/* with a right checksum: written so, not damaged */
	{
		char s2[64];

		snprintf(s2, sizeof(s2), "%s", s);
		/* 43 characters, 2 stray bits in the last: value | 1 */
		s2[42] = s2[42] == 'A' ? 'B' : s2[42] == 'Q' ? 'R' : s2[42] == 'g' ? 'h' : 'x';
		assemble(s2, r, u, x, sizeof(x));
		ADD("secret non-canonical", "not in the one form", "%s", x);
	}
	b64("https://ca.example.org:8443x", 28, u); /* 28 bytes: 38 characters, 2 stray bits */
	u[37] = u[37] == 'A' ? 'B' : 'x';
	assemble(s, r, u, x, sizeof(x));
	ADD("url non-canonical", "not in the one form", "%s", x);
	assemble(s, r, "A", x, sizeof(x)); /* 1 character: never base64 */
	ADD("url of one character", "not in the one form", "%s", x);
	static const struct {
		const char *url, *says;
	} urls[] = {
		{"http://ca.example.org", "must start with https://"},
		{"https://ca.example.org/", "path"},
		{"https://ca.example.org:8443/v1", "path"},
		{"https://user@ca.example.org", "user name"},
		{"https://ca.example.org?x=1", "query"},
		{"https://ca.example.org#f", "query or fragment"},
		{"https://ca.example.org:0", "port"},
		{"https://ca.example.org:65536", "port"},
		{"https://", "no host"},
		{"https://a_b.example", "not https://HOST"},
		{"https://[::1", "IPv6"},
	};
	for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
		b64(urls[i].url, strlen(urls[i].url), u);
		assemble(s, r, u, x, sizeof(x));
		ADD(urls[i].url, urls[i].says, "%s", x);
	}
	/* a NUL inside the URL */
	memcpy(url, "https://a.example\0b", 19);
	b64(url, 19, u);
	assemble(s, r, u, x, sizeof(x));
	ADD("NUL in url", "NUL", "%s", x);
	/* a 257-byte URL (343 characters) */
	memset(url, 'a', 257);
	b64(url, 257, u);
	assemble(s, r, u, x, sizeof(x));
	ADD("url too long", "wrong length", "%s", x);
	for (size_t i = 0; i < n; i++)
		refused(&b[i]);
#undef ADD
}

static void test_url_rule(void **state)
{
	static const char *const good[] = {"https://a.b",	    "https://ca.example.org:8443",
					   "https://10.0.0.1:443",  "https://[::1]:8443",
					   "https://[2001:db8::1]", "https://localhost",
					   "https://x-1.Example",   "https://ca.example.org:65535"};
	static const char *const bad[] = {
		"http://a.b",	     "https://",	  "HTTPS://a.b",
		"https://a.b/",	     "https://a.b:",	  "https://a.b:0",
		"https://a.b:08443", "https://a.b:65536", "https://a.b:123456",
		"https://u:p@a.b",   "https://a.b?x",	  "https://a.b#x",
		"https://1.2.3",     "https://1.2.3.256", "https://-a.b",
		"https://a-.b",	     "https://a..b",	  "https://a.b.",
		"https://a.123",     "https://[zz]",	  "https://[fe80::1%eth0]",
		"https://[::1]x",    "https://a.b c",	  "https://a.b\n"};
	char err[512];

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		if (token_check_url(good[i], err, sizeof(err)) != 0)
			fail_msg("refused %s: %s", good[i], err);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		if (token_check_url(bad[i], err, sizeof(err)) == 0)
			fail_msg("accepted %s", bad[i]);
		assert_non_null(strstr(err, "https://HOST[:PORT]"));
		assert_null(strchr(err, '\n'));
	}
}

static void test_pins_and_hash(void **state)
{
	struct token t;
	char hex[65], want[65], s[64];
	unsigned char d[32];
	unsigned int n = 0;

	(void)state;
	make(&t, "https://ca.example.org");
	assert_true(token_pins(&t, root));
	assert_false(token_pins(&t, other_root));
	assert_false(token_pins(&t, NULL));
	t.root_sha256[31] ^= 1;
	assert_false(token_pins(&t, root));
	/* the hash: SHA-256 of the secret, lower-case hex, nothing of the secret in it */
	token_hash_hex(&t, hex);
	assert_int_equal(EVP_Digest(t.secret, sizeof(t.secret), d, &n, EVP_sha256(), NULL), 1);
	for (int i = 0; i < 32; i++)
		snprintf(want + 2 * i, 3, "%02x", d[i]);
	assert_string_equal(hex, want);
	b64(t.secret, sizeof(t.secret), s);
	assert_null(strstr(hex, s));
}

/* ---- what a token grants ------------------------------------------------------------- */

static void test_grant(void **state)
{
	struct grant g, back;
	struct store_token row = {.hash = "00", .profile = "peer", .cn = "app1"};
	char err[512], *names;

	(void)state;
	assert_int_equal(grant_init(&g, "peer", GRANT_TOKEN, err, sizeof(err)), 0);
	assert_int_equal(grant_add_dns(&g.names, "App.Example.ORG", err, sizeof(err)), 0);
	assert_int_equal(grant_add_ip(&g.names, "2001:db8:0::01", err, sizeof(err)), 0);
	assert_int_equal(
		grant_add_uri(&g.names, "spiffe://example.org/ns/a/sa/b", err, sizeof(err)), 0);
	assert_int_equal(grant_add_ip(&g.names, "10.0.0.1", err, sizeof(err)), 0);
	names = token_names_text(&g.names);
	assert_non_null(names);
	assert_string_equal(names, "DNS:app.example.org\nIP:2001:db8::1\n"
				   "URI:spiffe://example.org/ns/a/sa/b\nIP:10.0.0.1");
	row.names = names;
	assert_int_equal(token_grant(&row, &back, err, sizeof(err)), 0);
	assert_int_equal(back.source, GRANT_TOKEN);
	assert_int_equal(back.kind, g.kind);
	assert_string_equal(back.cn, "app1");
	assert_string_equal(back.names.text, "DNS:app.example.org, IP:2001:db8::1, "
					     "URI:spiffe://example.org/ns/a/sa/b, IP:10.0.0.1");
	grant_free(&back);
	free(names);
	grant_free(&g);
	/* no names */
	assert_int_equal(grant_init(&g, "client", GRANT_TOKEN, err, sizeof(err)), 0);
	names = token_names_text(&g.names);
	assert_string_equal(names, "");
	free(names);
	grant_free(&g);

	/* what the store holds is read strictly too */
	static const struct {
		const char *profile, *names, *cn, *says;
	} bad[] = {
		{"root", "DNS:a.example", "", "profile"},
		{"server", "DNS:a.example\n", "", "empty name"},
		{"server", "DNS:a.example\n\nIP:10.0.0.1", "", "no known type"},
		{"server", "EMAIL:a@b", "", "no known type"},
		{"server", "DNS:a..example", "", "invalid DNS name"},
		{"server", "IP:10.0.0.256", "", "invalid IP"},
		{"server", "", "", "grants what the CA no longer issues"},
		{"client", "URI:spiffe://a/b", "bad\x01", "grants what"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct store_token t = {.hash = "0123456789abcdef0123",
					.profile = bad[i].profile,
					.names = bad[i].names,
					.cn = bad[i].cn};

		err[0] = '\0';
		if (token_grant(&t, &back, err, sizeof(err)) == 0)
			fail_msg("accepted %s '%s'", bad[i].profile, bad[i].names);
		grant_free(&back);
		if (strstr(err, bad[i].says) == NULL || strstr(err, "0123456789abcdef0") != NULL ||
		    strstr(err, "0123456789abcdef") == NULL)
			fail_msg("%s: %s", bad[i].names, err);
	}
}

/* ---- the inventory ------------------------------------------------------------------- */

static void add_token(struct store *st, const char *hash, time_t not_after)
{
	struct store_token t = {.hash = hash,
				.profile = "client",
				.cn = "",
				.names = "URI:spiffe://example.org/a\nDNS:a.example",
				.created_at = not_after - 600,
				.not_after = not_after,
				.used_serial = ""};

	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_token_add(st, &t, "tester"), 0);
	assert_int_equal(store_commit(st), 0);
}

static void audit_ok(struct store *st, int64_t entries)
{
	struct store_check chk;
	char what[512];

	assert_int_equal(store_check(st, &chk, what, sizeof(what)), 0);
	assert_int_equal(chk.entries, entries);
}

static void test_store(void **state)
{
	char err[256], path[160];
	struct store *st;
	struct store_token out, dup = {.hash = "h1",
				       .profile = "server",
				       .cn = "x",
				       .names = "DNS:x.example",
				       .created_at = 1,
				       .not_after = 2};
	time_t now = 1800000000;
	sqlite3 *db;
	sqlite3_stmt *s;

	(void)state;
	snprintf(path, sizeof(path), "%s/store.db", dir);
	st = store_open(path, true, err, sizeof(err));
	assert_non_null(st);
	add_token(st, "h1", now + 600);
	add_token(st, "h2", now + 600);
	add_token(st, "h3", now + 10);
	audit_ok(st, 3);

	/* the same hash twice: 1, nothing recorded */
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_token_add(st, &dup, "tester"), 1);
	store_rollback(st);
	/* a profile the CA does not know */
	dup.hash = "h9";
	dup.profile = "root";
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_token_add(st, &dup, "tester"), -1);
	store_rollback(st);

	/* taken once */
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_token_take(st, "h1", now, &out), 0);
	assert_string_equal(out.hash, "h1");
	assert_string_equal(out.profile, "client");
	assert_string_equal(out.cn, "");
	assert_string_equal(out.names, "URI:spiffe://example.org/a\nDNS:a.example");
	assert_int_equal(out.not_after, now + 600);
	assert_int_equal(out.created_at, now);
	assert_int_equal(out.used_at, now);
	assert_string_equal(out.used_serial, "");
	/* again in the same transaction: used */
	assert_int_equal(store_token_take(st, "h1", now + 1, &out), 3);
	assert_int_equal(out.used_at, now);
	assert_int_equal(store_token_used_by(st, "h1", "0A1B"), 0);
	assert_int_equal(store_commit(st), 0);
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_token_take(st, "h1", now + 2, &out), 3);
	assert_int_equal(out.used_at, now);
	assert_string_equal(out.used_serial, "0A1B");
	store_rollback(st);

	/* a take rolled back leaves the token unused */
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_token_take(st, "h2", now, &out), 0);
	store_rollback(st);
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_token_take(st, "h2", now, &out), 0);
	assert_int_equal(store_commit(st), 0);

	/* expiry: usable before not_after, not at it */
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_token_take(st, "h3", now + 10, &out), 2);
	assert_int_equal(out.used_at, 0);
	assert_int_equal(store_token_take(st, "h3", now + 11, &out), 2);
	assert_int_equal(store_token_take(st, "h3", now + 9, &out), 0);
	assert_int_equal(store_token_take(st, "h3", now + 9, &out), 3);
	store_rollback(st);

	/* unknown */
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_token_take(st, "nope", now, &out), 1);
	/* recording a serial needs a taken token */
	assert_int_equal(store_token_used_by(st, "nope", "01"), -1);
	assert_int_equal(store_token_used_by(st, "h3", "01"), -1);
	assert_non_null(strstr(store_error(st), "not taken"));
	store_rollback(st);

	/* the chain holds the three "token" entries and store_check() is content */
	audit_ok(st, 3);
	store_close(st);

	/* what the inventory holds: the hash and the grant; the audit entry */
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db,
					    "SELECT action, subject, detail FROM audit ORDER BY "
					    "seq LIMIT 1",
					    -1, &s, NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(s, 0), "token");
	assert_string_equal((const char *)sqlite3_column_text(s, 1), "");
	assert_string_equal((const char *)sqlite3_column_text(s, 2),
			    "token h1, profile client, names URI:spiffe://example.org/a, "
			    "DNS:a.example, until 2027-01-15T08:10:00Z");
	sqlite3_finalize(s);
	sqlite3_close(db);
}

/* Several processes take one token at once: exactly one wins. */
static void test_concurrent_take(void **state)
{
	enum { TAKERS = 4 };
	char err[256], path[160];
	struct store *st;
	pid_t pid[TAKERS];
	int won = 0, used = 0, go[2];
	time_t now = time(NULL);

	(void)state;
	snprintf(path, sizeof(path), "%s/race.db", dir);
	st = store_open(path, true, err, sizeof(err));
	assert_non_null(st);
	add_token(st, "race", now + 600);
	store_close(st);
	assert_int_equal(pipe(go), 0);
	for (int i = 0; i < TAKERS; i++) {
		pid[i] = fork();
		assert_true(pid[i] >= 0);
		if (pid[i] == 0) {
			struct store_token out;
			char c;
			int rc;

			close(go[1]);
			st = store_open(path, false, err, sizeof(err));
			/* all start together: when the pipe closes */
			if (st == NULL || read(go[0], &c, 1) != 0)
				_exit(100);
			rc = store_begin(st) == 0 ? store_token_take(st, "race", now, &out) : -1;
			if (rc == 0 && store_token_used_by(st, "race", "0C") != 0)
				rc = -1;
			if (store_commit(st) != 0)
				rc = -1;
			store_close(st);
			_exit(rc < 0 ? 101 : rc);
		}
	}
	close(go[0]);
	close(go[1]);
	for (int i = 0; i < TAKERS; i++) {
		int status;

		assert_int_equal(waitpid(pid[i], &status, 0), pid[i]);
		assert_true(WIFEXITED(status));
		if (WEXITSTATUS(status) == 0)
			won++;
		else if (WEXITSTATUS(status) == 3)
			used++;
		else
			fail_msg("a taker exited %d", WEXITSTATUS(status));
	}
	assert_int_equal(won, 1);
	assert_int_equal(used, TAKERS - 1);
}

static int count_certs(const struct store_cert *c, void *arg)
{
	(void)c;
	(*(int *)arg)++;
	return 0;
}

/* An inventory made before the tokens table: it opens, lists and audits as before, and
 * gains the table when opened for writing. */
static void test_old_inventory(void **state)
{
	static const uint8_t der[] = {0x30, 0x03, 0x02, 0x01, 0x01};
	struct store_cert c = {.serial = "0A",
			       .subject = "CN=x",
			       .sans = "DNS:x",
			       .spki_sha256 = "00",
			       .profile = "server",
			       .not_before = 1,
			       .not_after = 4000000000,
			       .issued_at = 1,
			       .der = der,
			       .der_len = sizeof(der)};
	char err[256], path[160];
	struct store *st;
	struct store_token out;
	sqlite3 *db;
	int rows = 0, tables = -1;
	sqlite3_stmt *s;

	(void)state;
	snprintf(path, sizeof(path), "%s/old.db", dir);
	st = store_open(path, true, err, sizeof(err));
	assert_non_null(st);
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_add_cert(st, &c), 0);
	assert_int_equal(store_audit(st, "tester", "issue", "CN=x", "serial 0A"), 0);
	assert_int_equal(store_revoke_audited(st, "0A", "superseded", 1000000, "tester"), 0);
	assert_int_equal(store_commit(st), 0);
	store_close(st);
	/* the schema before this change: no tokens table */
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "DROP TABLE tokens", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);

	/* a reader opens, lists and audits it, and changes nothing */
	st = store_open_read(path, err, sizeof(err));
	assert_non_null(st);
	assert_int_equal(store_each_cert(st, STORE_ALL, 0, count_certs, &rows), 0);
	assert_int_equal(rows, 1);
	audit_ok(st, 2);
	store_close(st);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db,
					    "SELECT COUNT(*) FROM sqlite_master WHERE name = "
					    "'tokens'",
					    -1, &s, NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	tables = sqlite3_column_int(s, 0);
	assert_int_equal(tables, 0);
	sqlite3_finalize(s);
	sqlite3_close(db);

	/* a writer: the table is there, tokens work, the log stays intact */
	st = store_open(path, false, err, sizeof(err));
	assert_non_null(st);
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_token_take(st, "none", 1, &out), 1);
	store_rollback(st);
	add_token(st, "old", 2000000000);
	audit_ok(st, 3);
	store_close(st);

	/* and if the table vanished after the open (or could not be made then), the token
	 * functions make it in their transaction */
	st = store_open(path, false, err, sizeof(err));
	assert_non_null(st);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "DROP TABLE tokens", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	add_token(st, "again", 2000000000);
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_token_take(st, "again", 1, &out), 0);
	assert_int_equal(store_commit(st), 0);
	audit_ok(st, 4);
	store_close(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),	cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_url_rule),	cmocka_unit_test(test_pins_and_hash),
		cmocka_unit_test(test_grant),		cmocka_unit_test(test_store),
		cmocka_unit_test(test_concurrent_take), cmocka_unit_test(test_old_inventory),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
