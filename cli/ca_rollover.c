/*
 * mtls ca rollover begin|switch|finish|status: rolling the root over to a new key
 * (ca/rollover.h), in steps the daemons follow by themselves.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "authority.h"
#include "ca_cmd.h"
#include "keys.h"
#include "rollover.h"

struct rollover_opts {
	const char *dir;
	const char *root_key;
	const char *new_root_key_dir;
	long long days;
	int force;
	const char *passphrase_file;
	const char *passphrase_env;
	const char *config;
};

#define O(f) offsetof(struct rollover_opts, f)

static const struct opt rollover_table[] = {
	CA_OPT_DIR(O),
	{"root-key", OPT_STRING, O(root_key), "FILE",
	 "begin: the current root key (default DIR/root.key; where --root-key-dir of 'mtls ca "
	 "init' put it)"},
	{"new-root-key-dir", OPT_STRING, O(new_root_key_dir), "DIR",
	 "begin: write the new root key there as root.key, to be kept offline (default "
	 "DIR/root-next.key, which finish renames to DIR/root.key)"},
	{"days", OPT_INT, O(days), "DAYS",
	 "begin: the new root's lifetime (default the old one's)"},
	{"force", OPT_FLAG, O(force), NULL,
	 "finish: even while certificates issued before the switch are unexpired and not "
	 "renewed (their holders lose their peers' trust; logged)"},
	CA_OPT_PASSPHRASE(O),
	CA_OPT_CONFIG(O),
	OPT_END,
};

static const char usage[] = "mtls ca rollover begin|switch|finish|status [--dir DIR] [options]";
static const char about[] =
	"Roll the root CA over to a new key, with no hand work on the daemons (they fetch\n"
	"/roots.pem from 'mtls ca serve' every --ca-refresh):\n"
	"  begin   make a new root key and root, and a link certificate (the new root's key\n"
	"          certified by the old root); root.pem then holds old root, new root, link,\n"
	"          and the daemons take the new root.\n"
	"  switch  certify the issuing CA's key under the new root; chains issued from now on\n"
	"          are leaf, new intermediate and link (they verify under either root). Wait\n"
	"          at least the daemons' --ca-refresh after begin.\n"
	"  finish  root.pem holds the new root alone; the old root key is no longer needed.\n"
	"          Wait until every certificate issued before the switch was renewed or\n"
	"          expired (refused otherwise, unless --force).\n"
	"  status  the phase, and what is left.\n"
	"'mtls ca serve' picks each step up within a second.";

static void show_left(const struct rollover_left *l, time_t now)
{
	char when[32] = "-";
	struct tm tm;

	if (l->count == 0) {
		printf("  certificates issued before the switch and not renewed: none\n");
		return;
	}
	if (gmtime_r(&l->latest_not_after, &tm) != NULL)
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	printf("  certificates issued before the switch and not renewed: %lld (the last "
	       "expires %s, in %lld s: %s)\n",
	       l->count, when, (long long)(l->latest_not_after - now), l->example);
}

static int status(struct authority *ca, time_t now)
{
	struct rollover_state s;
	struct rollover_left l;
	char err[1024], when[32];
	struct tm tm;

	if (rollover_recover(ca, err, sizeof(err)) != 0 ||
	    rollover_state(ca, &s, err, sizeof(err)) != 0 ||
	    rollover_left(ca, now, &l, err, sizeof(err)) != 0) {
		ca_fail("rollover", err);
		return 1;
	}
	printf("phase: %s\n", rollover_phase_name(s.phase));
	switch (s.phase) {
	case ROLLOVER_NONE:
		printf("  no rollover in progress; 'mtls ca rollover begin' starts one\n");
		break;
	case ROLLOVER_BEGUN:
		gmtime_r(&s.begun_at, &tm);
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
		printf("  begun %s (%lld s ago); root.pem serves old root, new root and link\n",
		       when, (long long)(now - s.begun_at));
		printf("  new root key: %s\n", s.new_key);
		printf("  next: 'mtls ca rollover switch' once every daemon fetched the roots "
		       "(wait at least their --ca-refresh)\n");
		break;
	case ROLLOVER_SWITCHED:
		gmtime_r(&s.switched_at, &tm);
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
		printf("  switched %s (%lld s ago); chains are issued through the new root\n", when,
		       (long long)(now - s.switched_at));
		show_left(&l, now);
		printf("  next: 'mtls ca rollover finish'%s\n",
		       l.count > 0 ? " once those are renewed or expired" : "");
		break;
	}
	return 0;
}

int cmd_ca_rollover(int argc, char **argv)
{
	struct rollover_opts o = {0};
	struct options_state st = {0};
	struct authority *ca = NULL;
	struct rollover_left left;
	char err[2048] = "", *pass = NULL;
	const char *step = argc > 0 && argv[0][0] != '-' ? argv[0] : NULL;
	time_t now = time(NULL);
	int rc = ca_parse("rollover", usage, about, rollover_table, &o, argc - (step != NULL),
			  argv + (step != NULL), &st);

	if (rc >= 0)
		goto out;
	rc = 2;
	if (step == NULL || st.positional.n != 0 ||
	    (strcmp(step, "begin") != 0 && strcmp(step, "switch") != 0 &&
	     strcmp(step, "finish") != 0 && strcmp(step, "status") != 0)) {
		ca_failf("rollover", "give one step: begin, switch, finish or status; see --help");
		goto out;
	}
	if (strcmp(step, "begin") != 0 &&
	    (o.root_key != NULL || o.new_root_key_dir != NULL || o.days != 0)) {
		ca_fail("rollover", "--root-key, --new-root-key-dir and --days go with begin only");
		goto out;
	}
	if (o.force && strcmp(step, "finish") != 0) {
		ca_fail("rollover", "--force goes with finish only");
		goto out;
	}
	if (o.days < 0 || o.days > 36500) {
		ca_fail("rollover", "--days must be 1 to 36500");
		goto out;
	}
	if (keys_passphrase(o.passphrase_file, o.passphrase_env, &pass, err, sizeof(err)) != 0) {
		ca_fail("rollover", err);
		goto out;
	}
	rc = 1;
	ca = authority_open(o.dir != NULL ? o.dir : ca_default_dir(), AUTHORITY_EXCLUSIVE, err,
			    sizeof(err));
	if (ca == NULL) {
		ca_fail("rollover", err);
		goto out;
	}
	if (strcmp(step, "status") == 0) {
		rc = status(ca, now);
	} else if (strcmp(step, "begin") == 0) {
		struct rollover_begin_opts b = {.root_key = o.root_key,
						.new_root_key_dir = o.new_root_key_dir,
						.days = (long)o.days,
						.passphrase = pass,
						.now = now};

		if (rollover_begin(ca, &b, err, sizeof(err)) != 0) {
			ca_fail("rollover", err);
			goto out;
		}
		printf("rollover begun: %s/root.pem holds the old root, the new root and the link "
		       "certificate\nnext: wait at least the daemons' --ca-refresh, then 'mtls ca "
		       "rollover switch'\n",
		       ca->dir);
		rc = 0;
	} else if (strcmp(step, "switch") == 0) {
		if (rollover_switch(ca, pass, now, err, sizeof(err)) != 0) {
			ca_fail("rollover", err);
			goto out;
		}
		printf("switched: %s/intermediate.pem is certified by the new root; chains are "
		       "issued through it\nnext: wait until every certificate issued before now "
		       "was renewed (their lifetime), then 'mtls ca rollover finish'\n",
		       ca->dir);
		rc = 0;
	} else {
		int r = rollover_finish(ca, o.force != 0, now, &left, err, sizeof(err));

		if (r != 0) {
			ca_fail("rollover", err);
			goto out;
		}
		if (left.count > 0)
			fprintf(stderr,
				"mtls ca rollover: warning: finished with --force: %lld "
				"certificate%s issued before the switch not renewed; their holders "
				"are no longer trusted by peers that dropped the old root\n",
				left.count, left.count == 1 ? "" : "s");
		printf("rollover finished: %s/root.pem holds the new root alone; the old root key "
		       "is no longer needed: destroy it\n",
		       ca->dir);
		rc = 0;
	}
out:
	authority_close(ca);
	keys_free_passphrase(pass);
	options_free(&st);
	return rc;
}
