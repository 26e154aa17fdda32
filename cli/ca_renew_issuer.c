/*
 * mtls ca renew-issuer: the issuing CA (intermediate.pem) certified again by the root with a
 * new validity, same key and subject (ca/rollover.h, rollover_renew_issuer()).
 *
 * Why not a step of `mtls ca rollover`: a rollover replaces a KEY in phases the daemons
 * follow (begin, switch, finish), and nothing else may happen to the CA's certificates while
 * one is under way; this is one step that changes no key and needs nothing from the
 * daemons, like `mtls renew` (a new certificate for the same holder) is for a leaf.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "authority.h"
#include "ca_cmd.h"
#include "certfields.h"
#include "issue.h"
#include "keys.h"
#include "rollover.h"

struct renew_issuer_opts {
	const char *dir;
	const char *root_key;
	long long days;
	const char *passphrase_file;
	const char *passphrase_env;
	const char *config;
};

#define O(f) offsetof(struct renew_issuer_opts, f)

static const struct opt renew_issuer_table[] = {
	CA_OPT_DIR(O),
	{"root-key", OPT_STRING, O(root_key), "FILE",
	 "the root key (default DIR/root.key; where --root-key-dir of 'mtls ca init' put it)"},
	{"days", OPT_INT, O(days), "DAYS",
	 "the issuing CA's new lifetime (default the current one's); it may not outlive the "
	 "root"},
	CA_OPT_PASSPHRASE(O),
	CA_OPT_CONFIG(O),
	OPT_END,
};

static void utc(time_t t, char out[32])
{
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, 32, "%lld", (long long)t);
}

int cmd_ca_renew_issuer(int argc, char **argv)
{
	struct renew_issuer_opts o = {0};
	struct options_state st = {0};
	struct authority *ca = NULL;
	char err[2048] = "", *pass = NULL, old_serial[64], serial[64], old_end[32], end[32];
	time_t now = time(NULL);
	int rc = ca_parse(
		"renew-issuer", "mtls ca renew-issuer [--dir DIR] [--root-key FILE] [--days DAYS]",
		"Renew the issuing CA before it expires: the same intermediate key and subject\n"
		"certified again by the root with a new validity. Certificates issued before keep\n"
		"verifying (same key), CRLs and OCSP answers too; new ones carry the new chain.\n"
		"The previous certificate is kept as intermediate-prev.pem. 'mtls ca serve' picks\n"
		"it up within a second. Refused during a root rollover, and past the root's end\n"
		"(roll the root over first: 'mtls ca rollover').",
		renew_issuer_table, &o, argc, argv, &st);

	if (rc >= 0)
		goto out;
	rc = 2;
	if (st.positional.n != 0) {
		ca_fail("renew-issuer", "no arguments besides the options; see --help");
		goto out;
	}
	if (o.days < 0 || o.days > 36500) {
		ca_fail("renew-issuer", "--days must be 1 to 36500");
		goto out;
	}
	if (keys_passphrase(o.passphrase_file, o.passphrase_env, &pass, err, sizeof(err)) != 0) {
		ca_fail("renew-issuer", err);
		goto out;
	}
	rc = 1;
	ca = authority_open(o.dir != NULL ? o.dir : ca_default_dir(), AUTHORITY_EXCLUSIVE, err,
			    sizeof(err));
	if (ca == NULL) {
		ca_fail("renew-issuer", err);
		goto out;
	}
	issue_serial_hex(ca->issuer, old_serial, sizeof(old_serial));
	utc(certfields_time(X509_get0_notAfter(ca->issuer)), old_end);
	{
		struct rollover_issuer_opts r = {.root_key = o.root_key,
						 .days = (long)o.days,
						 .passphrase = pass,
						 .now = now};

		if (rollover_renew_issuer(ca, &r, err, sizeof(err)) != 0) {
			ca_fail("renew-issuer", err);
			goto out;
		}
	}
	issue_serial_hex(ca->issuer, serial, sizeof(serial));
	utc(certfields_time(X509_get0_notAfter(ca->issuer)), end);
	printf("issuing CA renewed: serial %s, valid until %s (same key and subject)\n", serial,
	       end);
	printf("  %s/intermediate.pem is the new certificate; the previous one (serial %s, "
	       "until %s) is kept as intermediate-prev.pem\n",
	       ca->dir, old_serial, old_end);
	printf("  certificates issued from now on carry the new chain; those issued before keep "
	       "verifying and get it at their next renewal (before %s, when the chain they hold "
	       "expires)\n",
	       old_end);
	rc = 0;
out:
	authority_close(ca);
	keys_free_passphrase(pass);
	options_free(&st);
	return rc;
}
