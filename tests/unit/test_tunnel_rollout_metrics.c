/*
 * The rollout metrics of tunnel/metrics.c: the bound on per-identity series (the first N
 * identities, then "other"; an identity too long for a slot is "other"), label values
 * escaped whatever bytes an identity holds, the mode gauge, and /status's counters of now.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"
#include "tunnel.h"

static char *render(struct metrics *m)
{
	size_t len;
	char *text = metrics_render(m, &len);

	assert_non_null(text);
	assert_int_equal(strlen(text), len);
	return text;
}

static int count_lines(const char *text, const char *prefix)
{
	int n = 0;

	for (const char *p = text; p != NULL && *p != '\0';) {
		if (strncmp(p, prefix, strlen(prefix)) == 0)
			n++;
		p = strchr(p, '\n');
		if (p != NULL)
			p++;
	}
	return n;
}

static void test_bound(void **state)
{
	struct metrics m;
	char *text, longid[400];

	(void)state;
	metrics_init(&m, "server");
	assert_int_equal(metrics_identities_init(&m, 2), 0);
	metrics_conn_kind(&m, METRICS_KIND_MTLS, "spiffe://t/a");
	metrics_conn_kind(&m, METRICS_KIND_MTLS, "spiffe://t/b");
	metrics_conn_kind(&m, METRICS_KIND_MTLS, "spiffe://t/a");
	for (int i = 0; i < 500; i++) {
		char id[40];

		snprintf(id, sizeof(id), "spiffe://t/scan%d", i);
		metrics_conn_kind(&m, METRICS_KIND_MTLS, id);
		metrics_would_refuse(&m, MTLS_REASON_IDENTITY_NOT_ALLOWED, id);
	}
	memset(longid, 'x', sizeof(longid) - 1);
	longid[sizeof(longid) - 1] = '\0';
	metrics_conn_kind(&m, METRICS_KIND_MTLS, longid);
	metrics_conn_kind(&m, METRICS_KIND_PLAINTEXT, NULL);
	text = render(&m);
	assert_non_null(strstr(
		text,
		"mtls_identity_connections_total{identity=\"spiffe://t/a\",kind=\"mtls\"} 2\n"));
	assert_non_null(strstr(
		text,
		"mtls_identity_connections_total{identity=\"spiffe://t/b\",kind=\"mtls\"} 1\n"));
	assert_non_null(strstr(
		text, "mtls_identity_connections_total{identity=\"other\",kind=\"mtls\"} 501\n"));
	/* "none" found no slot either: the table was full */
	assert_non_null(strstr(
		text,
		"mtls_identity_connections_total{identity=\"other\",kind=\"plaintext\"} 1\n"));
	assert_non_null(strstr(text, "mtls_identity_would_refuse_total{identity=\"other\",reason="
				     "\"identity_not_allowed\"} 500\n"));
	assert_int_equal(count_lines(text, "mtls_identity_connections_total{"), 4);
	assert_int_equal(count_lines(text, "mtls_identity_would_refuse_total{"), 1);
	assert_non_null(strstr(text, "mtls_connections_by_kind_total{kind=\"mtls\"} 504\n"));
	assert_non_null(
		strstr(text, "mtls_would_refuse_total{reason=\"identity_not_allowed\"} 500\n"));
	assert_null(strstr(text, "scan"));
	free(text);
	metrics_free(&m);
}

static void test_escaping(void **state)
{
	struct metrics m;
	char *text;

	(void)state;
	metrics_init(&m, "server");
	assert_int_equal(metrics_identities_init(&m, 4), 0);
	metrics_conn_kind(&m, METRICS_KIND_MTLS, "a\"b\\c\nd\x01\xc3\xa9");
	text = render(&m);
	assert_non_null(strstr(text,
			       "mtls_identity_connections_total{identity=\"a\\\"b\\\\c\\nd\\\\x01"
			       "\\\\xc3\\\\xa9\",kind=\"mtls\"} 1\n"));
	/* one line per series: no raw control byte anywhere */
	for (const char *p = text; *p != '\0'; p++)
		assert_true(*p == '\n' || ((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f));
	free(text);
	metrics_free(&m);
}

static void test_mode_and_status(void **state)
{
	struct metrics m;
	char *text;

	(void)state;
	metrics_init(&m, "server");
	assert_int_equal(metrics_identities_init(&m, 4), 0);
	atomic_store(&m.mode, TUNNEL_MODE_AUDIT);
	text = render(&m);
	assert_non_null(strstr(text, "mtls_mode{mode=\"audit\"} 1\n"));
	assert_non_null(strstr(text, "mtls_mode{mode=\"strict\"} 0\n"));
	assert_non_null(strstr(text, "mtls_mode{mode=\"permissive\"} 0\n"));
	free(text);
	metrics_would_refuse(&m, MTLS_REASON_REVOKED, "spiffe://t/r");
	metrics_would_refuse(&m, MTLS_REASON_EXPIRED, "spiffe://t/e");
	metrics_set_status(&m, strdup("{\"crl\":[{\"file\":\"x\",\"this_update_unix\":1000}]}"));
	text = metrics_status(&m, 1600);
	assert_non_null(text);
	assert_non_null(strstr(text, "\"mode\": \"audit\""));
	assert_non_null(strstr(text, "\"age_seconds\": 600"));
	assert_non_null(strstr(text, "\"would_refuse\": 2"));
	free(text);
	m.renewal_configured = true;
	atomic_store(&m.renew_at, 86400);
	metrics_set_status(&m, strdup("{\"certificate\":{\"serial\":\"01\"}}"));
	text = metrics_status(&m, 1600);
	assert_non_null(text);
	assert_non_null(strstr(text, "\"next_renewal\": \"1970-01-02T00:00:00Z\""));
	free(text);
	metrics_set_status(&m, NULL);
	text = metrics_status(&m, 1600);
	assert_non_null(text);
	assert_non_null(strstr(text, "\"mode\": \"audit\""));
	free(text);
	metrics_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bound),
		cmocka_unit_test(test_escaping),
		cmocka_unit_test(test_mode_and_status),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
