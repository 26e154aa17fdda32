/*
 * tunnel/resolver.c: the backoff of a failed address, the order a connection tries the
 * addresses in, and plans over a real resolver (numeric targets, an unresolvable name,
 * malformed targets refused at start).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <cmocka.h>

#include "metrics.h"
#include "resolver.h"

static void test_backoff(void **state)
{
	struct resolver_health h = {0};
	long long t = 1000000;

	(void)state;
	assert_true(resolver_health_failed(&h, t)); /* up -> down: a transition */
	assert_true(h.down);
	assert_int_equal(h.backoff, RESOLVER_BACKOFF_MIN_MS);
	assert_int_equal(h.down_until, t + RESOLVER_BACKOFF_MIN_MS);
	/* a try begun before it was marked fails too: no doubling, no transition */
	assert_false(resolver_health_failed(&h, t + 10));
	assert_int_equal(h.backoff, RESOLVER_BACKOFF_MIN_MS);
	/* retries after the backoff that fail: doubled each time, up to the maximum */
	long long want = RESOLVER_BACKOFF_MIN_MS;
	for (int i = 0; i < 10; i++) {
		t = h.down_until;
		assert_false(resolver_health_failed(&h, t));
		want = want * 2 > RESOLVER_BACKOFF_MAX_MS ? RESOLVER_BACKOFF_MAX_MS : want * 2;
		assert_int_equal(h.backoff, want);
		assert_int_equal(h.down_until, t + want);
		assert_int_equal(h.failed_at, t);
	}
	assert_int_equal(h.backoff, RESOLVER_BACKOFF_MAX_MS);
	/* a success: up, and the next failure starts from the minimum again */
	assert_true(resolver_health_ok(&h));
	assert_false(h.down);
	assert_false(resolver_health_ok(&h));
	assert_true(resolver_health_failed(&h, t + 5));
	assert_int_equal(h.backoff, RESOLVER_BACKOFF_MIN_MS);
}

static void check_order(const struct resolver_health *h, size_t n, long long now, size_t max,
			const char *want)
{
	unsigned char order[RESOLVER_ADDRS_MAX];
	char got[RESOLVER_ADDRS_MAX + 1];
	size_t k = resolver_order(h, n, now, order, max);

	for (size_t i = 0; i < k; i++)
		got[i] = (char)('0' + order[i]);
	got[k] = '\0';
	if (strcmp(got, want) != 0)
		fail_msg("order at %lld: got '%s', want '%s'", now, got, want);
}

static void test_order(void **state)
{
	struct resolver_health h[4] = {{0}};

	(void)state;
	check_order(h, 4, 100, 8, "0123"); /* all up: the order of preference */
	check_order(h, 4, 100, 2, "01");   /* at most max */
	/* 0 down until 2000: skipped while others are up, tried last */
	h[0] = (struct resolver_health){.down = true, .down_until = 2000, .failed_at = 1000};
	check_order(h, 4, 1500, 8, "1230");
	/* its backoff over: in its place again (the first comes back) */
	check_order(h, 4, 2000, 8, "0123");
	/* 2 down too, failed after 0: the down ones least recently failed first */
	h[2] = (struct resolver_health){.down = true, .down_until = 2600, .failed_at = 1600};
	check_order(h, 4, 1700, 8, "1302");
	/* all down: still tried, least recently failed first, not refused */
	h[1] = (struct resolver_health){.down = true, .down_until = 9000, .failed_at = 1650};
	h[3] = (struct resolver_health){.down = true, .down_until = 9000, .failed_at = 1200};
	check_order(h, 4, 1700, 8, "0321");
	check_order(h, 4, 1700, 1, "0");
	/* the backoffs of 0 and 2 over: both in their places, then the others by their
	 * failure time */
	check_order(h, 4, 2700, 8, "0231");
}

static void test_plan(void **state)
{
	static struct metrics m;
	const char *targets[] = {"127.0.0.1:1", "[::1]:2", "unix:/nonexistent/x.sock"};
	char err[300];
	struct resolver *r;
	struct resolver_plan p;
	struct resolver_entry *e;

	(void)state;
	metrics_init(&m, "connector");
	r = resolver_new(targets, 3, "server", 30000, &m, err, sizeof(err));
	assert_non_null(r);
	assert_string_equal(resolver_describe(r), "127.0.0.1:1,[::1]:2,unix:/nonexistent/x.sock");
	assert_true(resolver_has_unix(r));
	assert_string_equal(resolver_target_host(r, 1), "::1");
	assert_int_equal(m.ntargets, 3);
	assert_string_equal(m.targets[1].name, "[::1]:2");
	assert_int_equal(resolver_start(r), 0);
	assert_int_equal(atomic_load(&m.targets[0].up), 1);
	assert_int_equal(atomic_load(&m.targets[0].addresses), 1);

	/* in order of preference */
	assert_int_equal(resolver_plan(r, &p, err, sizeof(err)), 0);
	assert_int_equal(p.n, 3);
	e = resolver_plan_next(&p);
	assert_non_null(e);
	assert_int_equal(e->target, 0);
	assert_int_equal(e->addr.sa.ss_family, AF_INET);
	resolver_plan_failed(r, &p, "Connection refused"); /* the first is down now */
	e = resolver_plan_next(&p);
	assert_int_equal(e->target, 1);
	assert_int_equal(e->addr.sa.ss_family, AF_INET6);
	resolver_plan_ok(r, &p);
	resolver_plan_done(r, &p);
	assert_int_equal(atomic_load(&m.targets[0].up), 0);
	assert_int_equal(atomic_load(&m.targets[0].connect_failures), 1);
	assert_int_equal(atomic_load(&m.targets[1].up), 1);

	/* the next connection skips the one down (its backoff is a second): tried last */
	assert_int_equal(resolver_plan(r, &p, err, sizeof(err)), 0);
	assert_int_equal(resolver_plan_next(&p)->target, 1);
	assert_int_equal(resolver_plan_next(&p)->target, 2);
	e = resolver_plan_next(&p);
	assert_int_equal(e->target, 0);
	resolver_plan_ok(r, &p); /* it is back */
	assert_null(resolver_plan_next(&p));
	resolver_plan_done(r, &p);
	resolver_plan_done(r, &p); /* twice: nothing */
	assert_int_equal(atomic_load(&m.targets[0].up), 1);
	assert_int_equal(resolver_plan(r, &p, err, sizeof(err)), 0);
	assert_int_equal(resolver_plan_next(&p)->target, 0);
	resolver_plan_done(r, &p);
	resolver_free(r);
	metrics_free(&m);
}

static void test_unresolvable(void **state)
{
	static struct metrics m;
	const char *targets[] = {"mtls-test-unresolvable.invalid:443"};
	char err[300];
	struct resolver *r;
	struct resolver_plan p;

	(void)state;
	metrics_init(&m, "connector");
	r = resolver_new(targets, 1, "server", 30000, &m, err, sizeof(err));
	assert_non_null(r);			/* a name is not looked up at parse time */
	assert_int_equal(resolver_start(r), 0); /* nor is it an error at start */
	assert_int_equal(atomic_load(&m.targets[0].up), 0);
	assert_true(atomic_load(&m.targets[0].resolve_failures) >= 1);
	assert_int_equal(resolver_plan(r, &p, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "did not resolve"));
	assert_null(resolver_plan_next(&p));
	resolver_plan_done(r, &p);
	resolver_free(r);
	metrics_free(&m);
}

/* A name server of the test's own: "fake.test" does not resolve until fake_answers is set,
 * then resolves to fake_answers addresses (::1 first, then 127.0.0.1). */
static atomic_int fake_answers, fake_lookups;

static struct addrinfo *fake_node(int family, const char *port)
{
	struct addrinfo *ai = calloc(1, sizeof(*ai) + sizeof(struct sockaddr_in6));

	assert_non_null(ai);
	ai->ai_family = family;
	ai->ai_socktype = SOCK_STREAM;
	ai->ai_addr = (struct sockaddr *)(ai + 1);
	if (family == AF_INET6) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ai->ai_addr;

		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)atoi(port));
		in6->sin6_addr = in6addr_loopback;
		ai->ai_addrlen = sizeof(*in6);
	} else {
		struct sockaddr_in *in = (struct sockaddr_in *)ai->ai_addr;

		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)atoi(port));
		in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		ai->ai_addrlen = sizeof(*in);
	}
	return ai;
}

static int fake_lookup(const char *host, const char *port, const struct addrinfo *hints,
		       struct addrinfo **res)
{
	int n = atomic_load(&fake_answers);

	(void)hints;
	atomic_fetch_add(&fake_lookups, 1);
	*res = NULL;
	if (strcmp(host, "fake.test") != 0 || n == 0)
		return EAI_NONAME;
	*res = fake_node(AF_INET6, port);
	if (n > 1)
		(*res)->ai_next = fake_node(AF_INET, port);
	return 0;
}

static void fake_release(struct addrinfo *res)
{
	while (res != NULL) {
		struct addrinfo *next = res->ai_next;

		free(res);
		res = next;
	}
}

/* a plan, waiting up to 20 s (the resolver thread resolves again at most once a second) for
 * one that ok() accepts (a plan taken, to release) */
static bool wait_plan(struct resolver *r, struct resolver_plan *p,
		      bool (*ok)(struct resolver_plan *))
{
	char err[300];

	for (int i = 0; i < 400; i++) {
		if (resolver_plan(r, p, err, sizeof(err)) == 0) {
			if (ok(p))
				return true;
			resolver_plan_done(r, p);
		}
		usleep(50000);
	}
	return false;
}

static bool has_two(struct resolver_plan *p)
{
	return p->n == 2;
}

static struct resolver_list *old_list;

static bool newer(struct resolver_plan *p)
{
	return p->list != old_list;
}

static void test_late_name(void **state)
{
	static struct metrics m;
	const char *targets[] = {"fake.test:8443"};
	char err[300];
	struct resolver *r;
	struct resolver_plan p, q;
	struct resolver_entry *e;

	(void)state;
	metrics_init(&m, "connector");
	r = resolver_new(targets, 1, "server", 3600000, &m, err, sizeof(err));
	assert_non_null(r);
	resolver_set_lookup(r, fake_lookup, fake_release);
	assert_int_equal(resolver_start(r), 0); /* the name does not resolve: not an error */
	assert_int_equal(resolver_plan(r, &p, err, sizeof(err)), -1);
	assert_int_equal(atomic_load(&m.targets[0].up), 0);

	/* it resolves now, to two addresses: a client's failure asked for a resolution, and
	 * the retry of a failing name comes well before the hour's interval */
	atomic_store(&fake_answers, 2);
	assert_true(wait_plan(r, &p, has_two));
	assert_int_equal(atomic_load(&m.targets[0].up), 1);
	assert_int_equal(atomic_load(&m.targets[0].addresses), 2);
	/* both addresses, in the resolver's order, under the name's own host */
	e = resolver_plan_next(&p);
	assert_int_equal(e->addr.sa.ss_family, AF_INET6);
	assert_string_equal(e->addr.host, "fake.test");
	resolver_plan_failed(r, &p, "Connection refused"); /* ::1 down; a resolution asked */
	e = resolver_plan_next(&p);
	assert_int_equal(e->addr.sa.ss_family, AF_INET);
	resolver_plan_ok(r, &p);
	assert_int_equal(atomic_load(&m.targets[0].up), 1); /* one address of it is up */

	/* the failure asked for a resolution: the new list keeps what the old one knew of
	 * the health of the same addresses (::1 down, its backoff; 127.0.0.1 up) */
	old_list = p.list; /* held, so that the new list is surely another */
	assert_true(wait_plan(r, &q, newer));
	resolver_plan_done(r, &p);
	assert_true(atomic_load(&fake_lookups) >= 3);
	for (unsigned i = 0; i < q.n; i++) {
		e = resolver_plan_next(&q);
		if (e->addr.sa.ss_family == AF_INET6) {
			assert_true(e->health.down);
			assert_int_equal(e->health.backoff, RESOLVER_BACKOFF_MIN_MS);
		} else {
			assert_false(e->health.down);
		}
	}
	resolver_plan_done(r, &q);
	resolver_free(r);
	metrics_free(&m);
}

/* A connection that began before a new list was published (its plan holds the old one)
 * reports a failure afterwards: the address is down in the list new connections take, not
 * only in the old one nobody reads again (a target that times out would be tried first by
 * every connection while each new list forgot it failed). And its later success brings it
 * back up there. */
static void test_stale_plan(void **state)
{
	static struct metrics m;
	const char *targets[] = {"fake.test:8443"};
	char err[300];
	struct resolver *r;
	struct resolver_plan p, q, s;
	struct resolver_entry *e;

	(void)state;
	atomic_store(&fake_answers, 2);
	metrics_init(&m, "connector");
	r = resolver_new(targets, 1, "server", 3600000, &m, err, sizeof(err));
	assert_non_null(r);
	resolver_set_lookup(r, fake_lookup, fake_release);
	assert_int_equal(resolver_start(r), 0);
	/* p: a slow connection to ::1, begun on the first list */
	assert_int_equal(resolver_plan(r, &p, err, sizeof(err)), 0);
	assert_int_equal(p.n, 2);
	e = resolver_plan_next(&p);
	assert_int_equal(e->addr.sa.ss_family, AF_INET6);
	/* q: another one, whose failure on 127.0.0.1 asks for a resolution */
	assert_int_equal(resolver_plan(r, &q, err, sizeof(err)), 0);
	assert_int_equal(resolver_plan_next(&q)->addr.sa.ss_family, AF_INET6);
	assert_int_equal(resolver_plan_next(&q)->addr.sa.ss_family, AF_INET);
	resolver_plan_failed(r, &q, "Connection refused");
	resolver_plan_done(r, &q);
	old_list = p.list;
	assert_true(wait_plan(r, &s, newer)); /* the new list is published */
	resolver_plan_done(r, &s);
	/* p's try times out now */
	resolver_plan_failed(r, &p, "connect timed out");
	assert_int_equal(resolver_plan(r, &s, err, sizeof(err)), 0);
	assert_ptr_not_equal(s.list, p.list);
	for (unsigned i = 0; i < s.n; i++) {
		e = resolver_plan_next(&s);
		if (!e->health.down)
			fail_msg("address %u (family %d) is up in the new list", i,
				 e->addr.sa.ss_family);
	}
	resolver_plan_done(r, &s);
	assert_int_equal(atomic_load(&m.targets[0].up), 0);
	/* and p's next try, 127.0.0.1, connects: up in the new list */
	e = resolver_plan_next(&p);
	assert_int_equal(e->addr.sa.ss_family, AF_INET);
	resolver_plan_ok(r, &p);
	resolver_plan_done(r, &p);
	assert_int_equal(atomic_load(&m.targets[0].up), 1);
	assert_int_equal(resolver_plan(r, &s, err, sizeof(err)), 0);
	for (unsigned i = 0; i < s.n; i++) {
		e = resolver_plan_next(&s);
		assert_int_equal(e->health.down, e->addr.sa.ss_family == AF_INET6);
	}
	resolver_plan_done(r, &s);
	resolver_free(r);
	metrics_free(&m);
}

/* "many.test" resolves to 200 addresses (127.1.0.0 to 127.1.0.199), as a name of a large pool
 * may */
static int many_lookup(const char *host, const char *port, const struct addrinfo *hints,
		       struct addrinfo **res)
{
	(void)hints;
	*res = NULL;
	if (strcmp(host, "many.test") != 0)
		return EAI_NONAME;
	for (int i = 199; i >= 0; i--) {
		struct addrinfo *ai = fake_node(AF_INET, port);

		((struct sockaddr_in *)ai->ai_addr)->sin_addr.s_addr =
			htonl(0x7f010000u + (unsigned)i);
		ai->ai_next = *res;
		*res = ai;
	}
	return 0;
}

/* A name with hundreds of addresses is bounded, and does not take the places of the other
 * targets: the second --server (the fallback) keeps its address in the list. */
static void test_many_addresses(void **state)
{
	static struct metrics m;
	const char *targets[] = {"many.test:8443", "127.0.0.1:9"};
	char err[300];
	struct resolver *r;
	struct resolver_plan p;

	(void)state;
	metrics_init(&m, "connector");
	r = resolver_new(targets, 2, "server", 3600000, &m, err, sizeof(err));
	assert_non_null(r);
	resolver_set_lookup(r, many_lookup, fake_release);
	assert_int_equal(resolver_start(r), 0);
	assert_true(atomic_load(&m.targets[0].addresses) >= 1);
	assert_true(atomic_load(&m.targets[0].addresses) < RESOLVER_ADDRS_MAX);
	assert_int_equal(atomic_load(&m.targets[1].addresses), 1);
	assert_int_equal(atomic_load(&m.targets[1].up), 1);
	assert_int_equal(resolver_plan(r, &p, err, sizeof(err)), 0);
	assert_true(p.n <= RESOLVER_PLAN_MAX);
	resolver_plan_done(r, &p);
	resolver_free(r);
	metrics_free(&m);
}

/* A name that resolved, then fails to (a DNS blip): the next list keeps its last addresses,
 * with their health, rather than refusing every client until the name resolves again. */
static void test_name_fails_later(void **state)
{
	static struct metrics m;
	const char *targets[] = {"fake.test:8443"};
	char err[300];
	struct resolver *r;
	struct resolver_plan p, q;
	bool published = false;

	(void)state;
	atomic_store(&fake_answers, 2);
	metrics_init(&m, "connector");
	r = resolver_new(targets, 1, "server", 3600000, &m, err, sizeof(err));
	assert_non_null(r);
	resolver_set_lookup(r, fake_lookup, fake_release);
	assert_int_equal(resolver_start(r), 0);
	assert_int_equal(resolver_plan(r, &p, err, sizeof(err)), 0);
	assert_int_equal(p.n, 2);
	atomic_store(&fake_answers, 0); /* the name server stops answering */
	resolver_plan_next(&p);
	resolver_plan_failed(r, &p, "Connection refused"); /* asks for a resolution */
	/* p holds the old list: the next list published is surely another */
	for (int i = 0; i < 400 && !published; i++) {
		if (resolver_plan(r, &q, err, sizeof(err)) != 0)
			fail_msg("no plan after the name stopped resolving: %s", err);
		published = q.list != p.list;
		if (published) {
			assert_int_equal(q.n, 2);
			assert_true(resolver_plan_next(&q)->health.down); /* ::1, as it was */
			assert_false(resolver_plan_next(&q)->health.down);
		}
		resolver_plan_done(r, &q);
		if (!published)
			usleep(50000);
	}
	assert_true(published);
	assert_true(atomic_load(&m.targets[0].resolve_failures) >= 1);
	assert_int_equal(atomic_load(&m.targets[0].addresses), 2);
	resolver_plan_done(r, &p);
	resolver_free(r);
	metrics_free(&m);
	atomic_store(&fake_answers, 2);
}

static void test_malformed(void **state)
{
	const char *bad[] = {"127.0.0.1:99999", ":443",	 "127.0.0.1:0", "127.0.0.1", "[::1:443",
			     "host:4294977296", "unix:", "a:b:1"};
	const char *many[RESOLVER_TARGETS_MAX + 1];
	char err[300];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		if (resolver_new(&bad[i], 1, "server", 30000, NULL, err, sizeof(err)) != NULL)
			fail_msg("'%s' was taken", bad[i]);
		assert_non_null(strstr(err, "--server"));
	}
	for (size_t i = 0; i < RESOLVER_TARGETS_MAX + 1; i++)
		many[i] = "127.0.0.1:1";
	assert_null(resolver_new(many, RESOLVER_TARGETS_MAX + 1, "target", 30000, NULL, err,
				 sizeof(err)));
	assert_null(resolver_new(many, 0, "target", 30000, NULL, err, sizeof(err)));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backoff),	       cmocka_unit_test(test_order),
		cmocka_unit_test(test_plan),	       cmocka_unit_test(test_unresolvable),
		cmocka_unit_test(test_late_name),      cmocka_unit_test(test_stale_plan),
		cmocka_unit_test(test_many_addresses), cmocka_unit_test(test_name_fails_later),
		cmocka_unit_test(test_malformed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
