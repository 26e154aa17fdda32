/*
 * A state's shared certificates are cached before it is published (lib/state.c warm()).
 *
 * libcrypto computes a certificate's extension cache on first use and stores it under the
 * certificate's write lock; a certificate already cached is only read. This test counts the
 * write locks libcrypto takes (pthread_rwlock_wrlock, interposed: libcrypto's calls resolve
 * to the definition in this executable) while each certificate of a configured endpoint is
 * asked for its purpose: zero means the cache was there before any handshake could race to
 * build it (openssl/openssl#32609).
 */
#include <dlfcn.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "internal.h"
#include "testutil.h"

static int counting;
static unsigned wrlocks;

int pthread_rwlock_wrlock(pthread_rwlock_t *l)
{
	static int (*real)(pthread_rwlock_t *);

	if (real == NULL)
		*(void **)&real = dlsym(RTLD_NEXT, "pthread_rwlock_wrlock");
	if (counting)
		wrlocks++;
	return real(l);
}

/* write locks taken while x is asked for its purpose */
static unsigned wrlocks_of(X509 *x)
{
	wrlocks = 0;
	counting = 1;
	X509_check_purpose(x, -1, 0);
	counting = 0;
	return wrlocks;
}

/* the interposition works: a freshly parsed certificate takes the write lock once */
static void test_cold_certificate_counts(void **unused)
{
	FILE *f = fopen(cert_path("ca.pem"), "r");
	X509 *x;

	(void)unused;
	assert_non_null(f);
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(x);
	assert_true(wrlocks_of(x) > 0);
	assert_int_equal(wrlocks_of(x), 0);
	X509_free(x);
}

static void check_endpoint(struct mtls *e)
{
	struct state *st = endpoint_state(e);
	STACK_OF(X509_OBJECT) * objs;
	STACK_OF(X509) *chain = NULL;
	int ncerts = 0;

	assert_non_null(st);
	objs = X509_STORE_get0_objects(st->store);
	for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
		X509 *x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));

		if (x == NULL)
			continue;
		ncerts++;
		assert_int_equal(wrlocks_of(x), 0);
	}
	assert_true(ncerts > 0);
	assert_int_equal(wrlocks_of(SSL_CTX_get0_certificate(st->ssl_ctx)), 0);
	assert_int_equal(SSL_CTX_get0_chain_certs(st->ssl_ctx, &chain), 1);
	assert_true(sk_X509_num(chain) > 0);
	for (int i = 0; i < sk_X509_num(chain); i++)
		assert_int_equal(wrlocks_of(sk_X509_value(chain, i)), 0);
	state_unref(st);
}

static struct mtls *configured(struct mtls *e, const char *cert, const char *key)
{
	struct mtls_config *cfg = mtls_config_new();

	assert_non_null(e);
	assert_int_equal(mtls_config_set_cert_file(cfg, cert_path(cert)), 0);
	assert_int_equal(mtls_config_set_key_file(cfg, cert_path(key)), 0);
	assert_int_equal(mtls_config_set_ca_file(cfg, cert_path("ca.pem")), 0);
	assert_int_equal(mtls_config_set_allow_any_identity(cfg, 1), 0);
	assert_int_equal(mtls_configure(e, cfg), 0);
	mtls_config_free(cfg);
	return e;
}

static void test_server_state_is_warm(void **unused)
{
	struct mtls *e = configured(mtls_server_new(), "server-chain.pem", "server.key");

	(void)unused;
	check_endpoint(e);
	mtls_free(e);
}

static void test_client_state_is_warm(void **unused)
{
	struct mtls *e = configured(mtls_client_new(), "client-chain.pem", "client.key");

	(void)unused;
	check_endpoint(e);
	mtls_free(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cold_certificate_counts),
		cmocka_unit_test(test_server_state_is_warm),
		cmocka_unit_test(test_client_state_is_warm),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
