/*
 * libFuzzer target: mtls_verify_chain_pem(), i.e. PEM parsing of a peer's chain, chain
 * verification against a fixed CA, CRLs with a grace period, the strength and EKU checks,
 * the allow rules and the messages that explain a refusal (lib/endpoint.c, lib/verify.c).
 *
 * Two endpoints are configured once from fuzz_certs.h (made by gen-seeds.sh): a server that
 * verifies client chains against the CA and both CRLs at a fixed time when the CRLs are
 * within their grace period, and a client that verifies server chains by name. Each input
 * is given to both. Low bits of the size pick the expected URI and server name, so that
 * both sides of those checks are reached.
 *
 * A refused chain must leave no warning (mtls_conn_warning()), not even the previous
 * call's: the warning is about accepted chains only (repro/fuzz_chain/).
 *
 * The strict profile (lib/strict.c) parses names out of certificates by hand, and a
 * verification reaches it only for chains whose signatures verify, which a mutated input
 * rarely keeps. So the certificates of each input also go to strict_chain() and
 * strict_leaf() directly, as if they were a verified path, and the input's bytes to the
 * host name, URI and email address checks: a refusal must name a rule, a certificate, and
 * make a message; an accepted host name or address must be made of what one may hold.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "fuzz_certs.h"
#include "internal.h"
#include "mtls.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond) ((cond) ? (void)0 : fail(#cond, __LINE__))

__attribute__((noreturn)) static void fail(const char *what, int line)
{
	fprintf(stderr, "fuzz_chain.c:%d: invariant failed: %s\n", line, what);
	abort();
}

static struct mtls *server, *client;

static void mem(int (*set)(struct mtls_config *, const uint8_t *, size_t), struct mtls_config *c,
		const char *pem)
{
	check(set(c, (const uint8_t *)pem, strlen(pem)) == 0);
}

static struct mtls *endpoint(bool is_server)
{
	struct mtls_config *c = mtls_config_new();
	struct mtls *e = is_server ? mtls_server_new() : mtls_client_new();

	check(c != NULL && e != NULL);
	mem(mtls_config_set_ca_mem, c, fuzz_ca_pem);
	check(mtls_config_set_verify_time(c, FUZZ_VERIFY_TIME) == 0);
	if (is_server) {
		mem(mtls_config_add_crl_mem, c, fuzz_root_crl_pem);
		mem(mtls_config_add_crl_mem, c, fuzz_int_crl_pem);
		check(mtls_config_set_crl_check_chain(c, 1) == 0);
		check(mtls_config_set_crl_grace(c, 60 * 86400) == 0);
		check(mtls_config_allow_uri(c, "spiffe://example.org/ns/*/sa/api") == 0);
		check(mtls_config_allow_dns(c, "*.example.org") == 0);
		check(mtls_config_allow_cn(c, "legacy-client") == 0);
	}
	if (mtls_configure(e, c) != 0) {
		fprintf(stderr, "fuzz_chain: cannot configure: %s\n", mtls_error(e));
		abort();
	}
	mtls_config_free(c);
	return e;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	server = endpoint(true);
	client = endpoint(false);
	return 0;
}

static void verify(struct mtls *e, const uint8_t *data, size_t size, const char *name,
		   const char *uri)
{
	int rc = mtls_verify_chain_pem(e, data, size, name, uri);
	const struct mtls_peer *p = mtls_verified_peer(e);

	if (rc == 0) {
		check(p != NULL);
		check(mtls_error_reason(e) == MTLS_REASON_NONE);
		check(mtls_peer_identity(p) != NULL);
		/* the server has allow rules, so one of them admitted the peer */
		if (e == server)
			check(mtls_peer_matched_rule(p) != NULL);
		if (uri != NULL) {
			bool found = false;

			for (size_t i = 0; i < mtls_peer_uri_count(p); i++)
				found |= strcmp(mtls_peer_uri(p, i), uri) == 0;
			check(found);
		}
	} else {
		check(rc == -1);
		check(p == NULL);
		check(mtls_error_reason(e) != MTLS_REASON_NONE);
		check(mtls_error(e)[0] != '\0');
		check(mtls_error_category(e) != MTLS_CATEGORY_NONE);
		check(mtls_conn_warning(e) == NULL);
	}
}

/* The input's certificates as a path, leaf first, through the strict profile. */
static void strict_path(const uint8_t *data, size_t size)
{
	BIO *bio = BIO_new_mem_buf(data, (int)size);
	STACK_OF(X509) *chain = sk_X509_new_null();
	struct strict_finding f;
	struct error err;
	X509 *x;

	check(bio != NULL && chain != NULL);
	while (sk_X509_num(chain) < 8 && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
		if (!sk_X509_push(chain, x))
			X509_free(x);
	ERR_clear_error();
	if (sk_X509_num(chain) > 0) {
		if (strict_chain(chain, &f) != 0) {
			check(f.rule >= STRICT_LEAF_IS_CA && f.rule <= STRICT_SIGNATURE_ALGORITHM);
			check(f.cert == sk_X509_value(chain, f.depth));
			check(strict_explain(&f, "client", &err) == -1);
			check(err.msg[0] != '\0' && err.reason != MTLS_REASON_NONE);
		}
		if (strict_leaf(sk_X509_value(chain, 0), true, false, &f) != 0) {
			check(f.rule == STRICT_LEAF_IS_CA || f.rule == STRICT_LEAF_EKU);
			check(strict_explain(&f, "server", &err) == -1);
		}
	}
	sk_X509_pop_free(chain, X509_free);
	BIO_free(bio);
}

static void strict_names(const uint8_t *data, size_t size)
{
	if (strict_dns_name_ok(data, size)) {
		check(size >= 1 && size <= 253 && data[size - 1] != '.');
		for (size_t i = 0; i < size; i++)
			check(isalnum(data[i]) || data[i] == '-' || data[i] == '.' ||
			      (i == 0 && data[i] == '*'));
	}
	if (strict_uri_ok(data, size)) {
		check(size >= 3 && isalpha(data[0]) && memchr(data, ':', size) != NULL);
		for (size_t i = 0; i < size; i++)
			check(data[i] > 0x20 && data[i] < 0x7f);
	}
	if (strict_email_ok(data, size)) {
		const uint8_t *at = memchr(data, '@', size);
		size_t local = at != NULL ? (size_t)(at - data) : 0;

		/* one '@' after a local part that neither starts nor ends with '.', then a host
		 * name that is no wildcard; printable, no space, quote, bracket or backslash */
		check(at != NULL && local > 0 && data[0] != '.' && data[local - 1] != '.');
		check(memchr(at + 1, '@', size - local - 1) == NULL && at[1] != '*');
		check(strict_dns_name_ok(at + 1, size - local - 1));
		for (size_t i = 0; i < size; i++)
			check(data[i] > 0x20 && data[i] < 0x7f &&
			      strchr("\"(),:;<>[\\]", data[i]) == NULL);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const names[] = {"svc.example.org", "127.0.0.1", "other.example.org",
					    "::1"};

	if (size > 64 * 1024)
		return 0;
	verify(server, data, size, NULL, size & 1 ? "spiffe://example.org/ns/prod/sa/api" : NULL);
	verify(client, data, size, names[size & 3], NULL);
	strict_path(data, size);
	strict_names(data, size);
	return 0;
}
