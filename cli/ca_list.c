/*
 * mtls ca list / mtls ca audit: the inventory, and the integrity of the audit log.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "authority.h"
#include "ca_cmd.h"

struct list_opts {
	const char *dir;
	long long expiring;
	int revoked;
	int valid;
	struct opt_list crl;
	const char *config;
};

#define O(f) offsetof(struct list_opts, f)

static const struct opt list_table[] = {
	CA_OPT_DIR(O),
	{"expiring", OPT_INT, O(expiring), "DAYS",
	 "only valid certificates that expire within DAYS"},
	{"revoked", OPT_FLAG, O(revoked), NULL, "only revoked certificates"},
	{"valid", OPT_FLAG, O(valid), NULL, "only certificates neither revoked nor expired"},
	CA_OPT_CONFIG(O),
	OPT_END,
};

static const struct opt audit_table[] = {
	CA_OPT_DIR(O),
	{"crl", OPT_LIST, O(crl), "FILE",
	 "also check this copy of a CRL the CA published (PEM or DER, e.g. fetched from the "
	 "distribution point): a log cut back or rewritten after it was signed is caught"},
	CA_OPT_CONFIG(O),
	OPT_END,
};

static int print_row(const struct store_cert *c, void *arg)
{
	char when[32];
	struct tm tm;
	time_t now = time(NULL);
	const char *status = c->revoked ? "revoked" : c->not_after < now ? "expired" : "valid";

	(void)arg;
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&c->not_after, &tm));
	printf("%-32s %-8s %-12s %-20s %s%s%s\n", c->serial, status, c->profile, when, c->subject,
	       c->sans[0] != '\0' ? "  " : "", c->sans);
	return 0;
}

int cmd_ca_list(int argc, char **argv)
{
	struct list_opts o = {.expiring = -1};
	struct options_state st = {0};
	struct authority *ca = NULL;
	enum store_filter filter = STORE_ALL;
	char err[1024] = "";
	int rc = ca_parse("list", "mtls ca list [--expiring DAYS | --revoked | --valid]",
			  "List the certificates the CA issued: serial, status, profile, notAfter, "
			  "subject and names,\nthe soonest to expire first.",
			  list_table, &o, argc, argv, &st);

	if (rc >= 0)
		goto out;
	rc = 2;
	if ((o.expiring >= 0) + o.revoked + o.valid > 1) {
		ca_fail("list", "give at most one of --expiring, --revoked, --valid");
		goto out;
	}
	if (o.expiring >= 0)
		filter = STORE_EXPIRING;
	else if (o.revoked)
		filter = STORE_REVOKED;
	else if (o.valid)
		filter = STORE_VALID;
	rc = 1;
	ca = authority_open(o.dir != NULL ? o.dir : ca_default_dir(), AUTHORITY_UNLOCKED, err,
			    sizeof(err));
	if (ca == NULL) {
		ca_fail("list", err);
		goto out;
	}
	printf("%-32s %-8s %-12s %-20s %s\n", "SERIAL", "STATUS", "PROFILE", "NOT AFTER",
	       "SUBJECT  NAMES");
	if (store_each_cert(ca->store, filter, time(NULL) + (time_t)o.expiring * 86400, print_row,
			    NULL) != 0) {
		ca_fail("list", store_error(ca->store));
		goto out;
	}
	rc = 0;
out:
	authority_close(ca);
	options_free(&st);
	return rc;
}

int cmd_ca_audit(int argc, char **argv)
{
	struct list_opts o = {0};
	struct options_state st = {0};
	struct authority *ca = NULL;
	char err[2048] = "";
	int rc = ca_parse("audit", "mtls ca audit [--dir DIR] [--crl FILE]...",
			  "Verify that no entry of the audit log was edited (each entry's hash "
			  "covers the previous one),\nthat the inventory's revocations are those "
			  "of the log, and that crl.pem is a CRL the CA\npublished and revokes "
			  "only what the inventory revokes. Exit 0 intact, 1 not.",
			  audit_table, &o, argc, argv, &st);

	if (rc >= 0)
		goto out;
	rc = 1;
	/* shared: no command changes the inventory or crl.pem while they are compared */
	ca = authority_open(o.dir != NULL ? o.dir : ca_default_dir(), AUTHORITY_SHARED, err,
			    sizeof(err));
	if (ca == NULL) {
		ca_fail("audit", err);
		goto out;
	}
	/* the chain, the inventory against it, and crl.pem (and the --crl copies) against both */
	switch (authority_audit(ca, o.crl.v, o.crl.n, err, sizeof(err))) {
	case 0:
		printf("%s\n", err);
		rc = 0;
		break;
	case 1: printf("%s\n", err); break;
	default: ca_fail("audit", err); break;
	}
out:
	authority_close(ca);
	options_free(&st);
	return rc;
}
