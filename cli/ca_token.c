/*
 * mtls ca token: a one-time enrollment token (ca/token.h) for `POST /v1/enroll`.
 *
 * The options become a grant (ca/grant.h) checked exactly as `mtls ca issue` checks its
 * own, which the token then carries to the CA service: whoever holds the token may have one
 * certificate of that profile with those names (or fewer), once, before it expires. The
 * inventory keeps the SHA-256 of the token's secret with the grant and an audit entry; the
 * token itself is printed alone on stdout (for scripts) and never stored.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "authority.h"
#include "ca_cmd.h"
#include "duration.h"
#include "grant.h"
#include "token.h"

struct token_opts {
	const char *dir;
	const char *profile;
	struct ca_names names;
	const char *ttl;
	const char *ca_url;
	const char *config;
};

#define O(f) offsetof(struct token_opts, f)

static const struct opt token_table[] = {
	CA_OPT_DIR(O),
	{"profile", OPT_STRING, O(profile), "NAME",
	 "server (serverAuth), client (clientAuth) or peer (both); required"},
	CA_OPT_NAMES(O, "subject common name the enrolling CSR may ask for", " granted"),
	{"ttl", OPT_STRING, O(ttl), "DURATION",
	 "how long the token can be used: 1m to 24h (default 10m)"},
	{"ca-url", OPT_STRING, O(ca_url), "URL",
	 "the CA service's API, https://HOST[:PORT] (default: the URL 'mtls ca serve' "
	 "records)"},
	CA_OPT_CONFIG(O),
	OPT_END,
};

#define TTL_MIN_MS 60000LL	    /* 1m */
#define TTL_MAX_MS (24 * 3600000LL) /* 24h */

int cmd_ca_token(int argc, char **argv)
{
	struct token_opts o = {0};
	struct options_state st = {0};
	struct authority *ca = NULL;
	struct grant g = {0};
	struct token t;
	char err[1024] = "", why[512], url[TOKEN_URL_MAX + 1], text[TOKEN_TEXT_MAX + 1];
	char hash[65], when[32], *names = NULL;
	long long ttl_ms = 600000; /* 10m */
	time_t now, not_after;
	struct tm tm;
	int rc;

	memset(&t, 0, sizeof(t));
	memset(text, 0, sizeof(text));
	rc = ca_parse(
		"token",
		"mtls ca token --profile server|client|peer [names] [--ttl 10m] "
		"[--ca-url https://HOST:PORT]",
		"Make a one-time enrollment token for the CA service ('mtls ca serve'): whoever "
		"holds it may\nenroll once, before it expires, for a certificate of the profile "
		"with the names given\n(or fewer). The token alone is printed on stdout; the "
		"CA keeps only its hash.",
		token_table, &o, argc, argv, &st);
	if (rc >= 0)
		goto out;
	rc = 2;
	if (st.positional.n != 0 || o.profile == NULL) {
		ca_fail("token", "give --profile and the names to grant; see mtls ca token --help");
		goto out;
	}
	/* checked as `mtls ca issue` checks its own */
	if (grant_init(&g, o.profile, GRANT_TOKEN, err, sizeof(err)) != 0 ||
	    ca_names_add(&o.names, &g, err, sizeof(err)) != 0 ||
	    grant_check(&g, err, sizeof(err)) != 0) {
		ca_fail("token", err);
		goto out;
	}
	if (o.ttl != NULL && duration_parse(o.ttl, "--ttl", TTL_MIN_MS, TTL_MAX_MS, &ttl_ms, err,
					    sizeof(err)) != 0) {
		ca_fail("token", err);
		goto out;
	}
	if (o.ca_url != NULL && token_check_url(o.ca_url, why, sizeof(why)) != 0) {
		ca_failf("token", "invalid --ca-url: %s", why);
		goto out;
	}
	names = token_names_text(&g.names);
	if (names == NULL) {
		ca_fail("token", "out of memory");
		rc = 1;
		goto out;
	}
	rc = 1;
	ca = authority_open(o.dir != NULL ? o.dir : ca_default_dir(), AUTHORITY_EXCLUSIVE, err,
			    sizeof(err));
	if (ca == NULL) {
		ca_fail("token", err);
		goto out;
	}
	if (o.ca_url != NULL) {
		snprintf(url, sizeof(url), "%s", o.ca_url);
	} else {
		switch (store_get_meta(ca->store, "api_url", url, sizeof(url))) {
		case 0: break;
		case 1:
			ca_fail("token", "the CA has no API URL yet: give --ca-url "
					 "https://HOST:PORT, or start 'mtls ca serve' once");
			rc = 2;
			goto out;
		default: ca_fail("token", store_error(ca->store)); goto out;
		}
		if (token_check_url(url, why, sizeof(why)) != 0) {
			ca_failf("token",
				 "the API URL recorded in the CA is unusable (%s); give --ca-url",
				 why);
			goto out;
		}
	}
	if (token_make(&t, ca->root, url, err, sizeof(err)) != 0 ||
	    token_encode(&t, text, sizeof(text)) != 0) {
		ca_fail("token", err[0] != '\0' ? err : "cannot encode the token");
		goto out;
	}
	token_hash_hex(&t, hash);
	now = time(NULL);
	not_after = now + (time_t)(ttl_ms / 1000);
	{
		struct store_token row = {.hash = hash,
					  .profile = o.profile,
					  .cn = g.cn,
					  .names = names,
					  .created_at = now,
					  .not_after = not_after,
					  .used_serial = ""};
		int added;

		if (store_begin(ca->store) != 0) {
			ca_fail("token", store_error(ca->store));
			goto out;
		}
		added = store_token_add(ca->store, &row, authority_actor());
		if (added != 0 || store_commit(ca->store) != 0) {
			store_rollback(ca->store);
			ca_fail("token", added == 1 ? "a token with this secret exists already; "
						      "run the command again"
						    : store_error(ca->store));
			goto out;
		}
	}
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&not_after, &tm));
	printf("%s\n", text);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		ca_failf(
			"token",
			"the token could not be written to stdout; it is recorded (hash %.16s) and "
			"expires unused at %s: make another",
			hash, when);
		goto out;
	}
	fprintf(stderr,
		"mtls ca token: one %s certificate for %s%s%s, enrolling at %s, until %s "
		"(single use)\n",
		o.profile, g.names.text[0] != '\0' ? g.names.text : "no names",
		g.cn[0] != '\0' ? ", CN " : "", g.cn, url, when);
	rc = 0;
out:
	token_wipe(&t);
	OPENSSL_cleanse(text, sizeof(text));
	free(names);
	grant_free(&g);
	authority_close(ca);
	options_free(&st);
	return rc;
}
