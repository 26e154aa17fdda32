/*
 * mtls doctor --config: a daemon's config checked offline on its host, without starting it.
 *
 * The file is parsed with the daemons' own option table (tunnel_cmd_parse_config()), the
 * TLS configuration is built and applied as the daemon builds it at start and at every
 * reload (credentials_build(), mtls_configure()), and then what a start does not say, or
 * says only as the first error: whether each file can be read by the user the daemon runs
 * as (its mode, owner and group against that user's ids, and the directories above it),
 * the own certificate against the clock and the renewal schedule, the CRLs against the CA
 * bundle, and allow rules that can never match.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "certfields.h"
#include "credentials.h"
#include "doctor.h"
#include "renewal.h"
#include "tunnel_cmd.h"

#define MAX_GROUPS 256

struct ids {
	const char *name;
	uid_t uid;
	gid_t gids[MAX_GROUPS];
	int ngids;
};

static int user_ids(const char *name, struct ids *ids)
{
	struct passwd *pw = getpwnam(name);

	if (pw == NULL)
		return -1;
	ids->name = name;
	ids->uid = pw->pw_uid;
	ids->ngids = MAX_GROUPS;
	if (getgrouplist(name, pw->pw_gid, ids->gids, &ids->ngids) < 0) {
		ids->gids[0] = pw->pw_gid;
		ids->ngids = 1;
	}
	return 0;
}

/* May ids do what (4 read, 1 search) to the file st? The owner's bits for its owner, the
 * group's for a member, the others' for the rest; root may do all (ACLs not considered). */
static bool may(const struct ids *ids, const struct stat *st, unsigned what)
{
	unsigned bits;

	if (ids->uid == 0)
		return what != 1 || !S_ISREG(st->st_mode) || (st->st_mode & 0111);
	if (st->st_uid == ids->uid)
		bits = (st->st_mode >> 6) & 7;
	else {
		bool member = false;

		for (int i = 0; i < ids->ngids && !member; i++)
			member = ids->gids[i] == st->st_gid;
		bits = member ? (st->st_mode >> 3) & 7 : st->st_mode & 7;
	}
	return (bits & what) == what;
}

/* Can ids read path (searching every directory above it)? false with why and a fix. */
static bool can_read(const struct ids *ids, const char *path, char *why, size_t len, char *fix,
		     size_t flen)
{
	char buf[4096];
	struct stat st;
	size_t n = strlen(path);

	if (n >= sizeof(buf)) {
		snprintf(why, len, "path too long");
		return false;
	}
	if (stat(path, &st) != 0) {
		snprintf(why, len, "%s: %s", path, strerror(errno));
		snprintf(fix, flen, "put the file there, or correct the path in the config");
		return false;
	}
	/* every directory on the way, from the top */
	if (path[0] == '/')
		snprintf(buf, sizeof(buf), "%s", path);
	else {
		char cwd[2048];

		if (getcwd(cwd, sizeof(cwd)) == NULL ||
		    (size_t)snprintf(buf, sizeof(buf), "%s/%s", cwd, path) >= sizeof(buf)) {
			snprintf(why, len, "path too long");
			return false;
		}
	}
	for (char *slash = strchr(buf + 1, '/'); slash != NULL; slash = strchr(slash + 1, '/')) {
		struct stat d;

		*slash = '\0';
		if (stat(buf, &d) == 0 && !may(ids, &d, 1)) {
			snprintf(why, len, "user %s cannot search the directory %.400s (mode %04o)",
				 ids->name, buf, (unsigned)(d.st_mode & 07777));
			snprintf(fix, flen,
				 "chmod o+x %.400s (or give %s a group that may search it)", buf,
				 ids->name);
			return false;
		}
		*slash = '/';
	}
	if (stat("/", &st) == 0 && !may(ids, &st, 1)) {
		snprintf(why, len, "user %s cannot search /", ids->name);
		snprintf(fix, flen, "chmod o+x /");
		return false;
	}
	if (stat(path, &st) == 0 && !may(ids, &st, 4)) {
		snprintf(why, len, "user %s cannot read %s (mode %04o, owner uid %u, group gid %u)",
			 ids->name, path, (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid,
			 (unsigned)st.st_gid);
		snprintf(fix, flen,
			 "chown %s %s (a key: chmod 0600; a certificate or CA: chmod 0644)",
			 ids->name, path);
		return false;
	}
	return true;
}

static void check_files(const struct tunnel_options *o, const struct ids *ids,
			struct doctor_report *r)
{
	const char *files[CREDENTIALS_FILES_MAX + 8];
	size_t n = credentials_files(o, files, CREDENTIALS_FILES_MAX);
	char why[700], fix[600];
	size_t bad = 0;

	for (size_t i = 0; i < o->crl_cache.n && n < sizeof(files) / sizeof(files[0]); i++)
		if (access(o->crl_cache.v[i], F_OK) == 0)
			files[n++] = o->crl_cache.v[i];
	for (size_t i = 0; i < n; i++) {
		fix[0] = '\0';
		if (can_read(ids, files[i], why, sizeof(why), fix, sizeof(fix)))
			continue;
		/* a directory above several files is said once */
		if (bad > 0 && strcmp(r->v[r->n - 1].text, why) == 0)
			continue;
		bad++;
		doctor_report_add(r, DOCTOR_FAIL, "file", fix[0] != '\0' ? fix : NULL, "%s", why);
	}
	if (bad == 0)
		doctor_report_add(r, DOCTOR_OK, "file", NULL,
				  "user %s can read all %zu files the daemon reads", ids->name, n);
}

/* The TLS configuration, built and applied as the daemon does at start and each reload. */
static void check_load(const struct tunnel_options *o, struct doctor_report *r)
{
	struct credentials_secret *secret = NULL;
	struct mtls_config *cfg;
	struct mtls *ep;
	char err[600];

	if (o->key_passphrase_env != NULL) {
		if (getenv(o->key_passphrase_env) == NULL) {
			doctor_report_add(
				r, DOCTOR_WARN, "load",
				"run the doctor with that variable set to check the key",
				"the key's passphrase comes from the environment variable "
				"%s, which is not set here: the key was not loaded",
				o->key_passphrase_env);
			return;
		}
		secret = credentials_secret_take_env(o->key_passphrase_env, err, sizeof(err));
		if (secret == NULL) {
			doctor_report_add(r, DOCTOR_FAIL, "load", NULL, "%s", err);
			return;
		}
	}
	cfg = credentials_build(o, secret, err, sizeof(err));
	credentials_secret_free(secret);
	if (cfg == NULL) {
		doctor_report_add(r, DOCTOR_FAIL, "load", NULL, "the daemon would not start: %s",
				  err);
		return;
	}
	ep = o->role == TUNNEL_SERVER ? mtls_server_new() : mtls_client_new();
	if (ep == NULL)
		doctor_report_add(r, DOCTOR_FAIL, "load", NULL, "out of memory");
	else if (mtls_configure(ep, cfg) != 0)
		doctor_report_add(r, DOCTOR_FAIL, "load", NULL, "the daemon would not start: %s",
				  mtls_error(ep));
	else
		doctor_report_add(r, DOCTOR_OK, "load", NULL,
				  "the TLS configuration loads as the daemon loads it");
	mtls_free(ep);
	mtls_config_free(cfg);
}

/* check_load() with the effective ids of the daemon's user, as the daemon loads its files
 * (it reads them as --user, or runs as that user under systemd): a key of root's with that
 * user's own group and mode 0640 is the daemon's to read, and not root's. Root only; the
 * ids are taken back afterwards. */
static void check_load_as(const struct tunnel_options *o, const struct ids *ids,
			  struct doctor_report *r)
{
	struct credentials_ids saved;
	char err[300], why[300];

	if (geteuid() != 0 || ids == NULL || ids->uid == 0) {
		check_load(o, r);
		return;
	}
	if (credentials_become_user(ids->name, &saved, why, sizeof(why)) != 0) {
		if (credentials_become_root(&saved, err, sizeof(err)) != 0) {
			doctor_report_add(r, DOCTOR_FAIL, "load", NULL, "%s", err);
			exit(2);
		}
		doctor_report_add(r, DOCTOR_WARN, "load", NULL,
				  "cannot load as user %s (%s): loaded as root instead", ids->name,
				  why);
		check_load(o, r);
		return;
	}
	check_load(o, r);
	if (credentials_become_root(&saved, err, sizeof(err)) != 0) {
		doctor_report_add(r, DOCTOR_FAIL, "load", NULL, "%s", err);
		exit(2);
	}
}

/* The own certificate against the renewal schedule of --ca-url (or, without, a hint). */
static void check_renewal(const struct tunnel_options *o, time_t now, struct doctor_report *r)
{
	time_t nb, na, from, until;
	char a[32], b[32];

	if (o->cert == NULL || credentials_cert_validity(o->cert, &nb, &na) != 0 || now > na ||
	    now < nb)
		return; /* unreadable, expired or not yet valid: said by cert-time */
	from = renewal_schedule(nb, na, nb, 0);
	until = renewal_schedule(nb, na, nb, UINT32_MAX);
	if (o->ca_url == NULL) {
		if (now >= renewal_warn_at(nb, na))
			doctor_report_add(
				r, DOCTOR_WARN, "renewal",
				"renew it now (mtls renew), or add --ca-url for automatic "
				"renewal",
				"no --ca-url: %s is renewed by hand, and its last sixth of "
				"life has begun (expires %s)",
				o->cert, doctor_time(na, a, sizeof(a)));
		else
			doctor_report_add(r, DOCTOR_OK, "renewal", NULL,
					  "no --ca-url: renew %s by hand before %s", o->cert,
					  doctor_time(na, a, sizeof(a)));
		return;
	}
	if (now > until)
		doctor_report_add(
			r, DOCTOR_WARN, "renewal",
			"look for renewal_failed lines in the daemon's log; check that "
			"--ca-url is reachable (mtls renew --ca-url ... by hand)",
			"%s should have been renewed by %s (--ca-url renews at 2/3 of its "
			"life) and expires %s: renewals are failing or the daemon is not "
			"running",
			o->cert, doctor_time(until, a, sizeof(a)), doctor_time(na, b, sizeof(b)));
	else
		doctor_report_add(
			r, DOCTOR_OK, "renewal", NULL, "--ca-url renews %s between %s and %s",
			o->cert, doctor_time(from, a, sizeof(a)), doctor_time(until, b, sizeof(b)));
}

/* Each CRL is signed by a CA the daemon knows: one of --ca, or of its own chain. */
static void check_crl_file(const char *path, STACK_OF(X509) * known, time_t now, long long grace,
			   struct doctor_report *r)
{
	BIO *bio = BIO_new_file(path, "r");
	X509_CRL *crl;
	char iss[512], a[32];
	int n = 0;

	while (bio != NULL && (crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL)) != NULL) {
		const X509_NAME *in = X509_CRL_get_issuer(crl);
		time_t next = X509_CRL_get0_nextUpdate(crl) != NULL
				      ? certfields_time(X509_CRL_get0_nextUpdate(crl))
				      : 0;
		int found = 0; /* 1 by name, 2 and the signature verifies */

		n++;
		doctor_name(in, iss, sizeof(iss));
		for (int k = 0; k < sk_X509_num(known) && found < 2; k++) {
			X509 *ca = sk_X509_value(known, k);

			if (X509_NAME_cmp(X509_get_subject_name(ca), in) != 0)
				continue;
			found = 1;
			if (X509_CRL_verify(crl, X509_get0_pubkey(ca)) == 1)
				found = 2;
		}
		if (found == 2)
			doctor_report_add(r, DOCTOR_OK, "crl", NULL,
					  "%s: signed by %s, a CA it knows", path, iss);
		else if (found == 1)
			doctor_report_add(
				r, DOCTOR_FAIL, "crl",
				"give the CRL of the CA in --ca (mtls ca crl, or the CA "
				"service's /crl)",
				"%s: issued by %s, but not signed by the CA of that name in "
				"--ca: a CA named alike, or a damaged CRL; the daemon refuses "
				"it (crl_invalid)",
				path, iss);
		else
			doctor_report_add(
				r, DOCTOR_FAIL, "crl",
				"give the CRL of a CA in --ca, or add its CA to --ca",
				"%s: issued by %s, which is neither in --ca nor in the own "
				"chain: it covers none of the clients the daemon trusts",
				path, iss);
		if (next != 0 && now > next + grace)
			doctor_report_add(
				r, DOCTOR_FAIL, "crl",
				"publish a fresh CRL (mtls ca crl) or use --crl-url to keep "
				"it fresh",
				"%s: past its nextUpdate %s: the daemon refuses every client "
				"(crl_expired)",
				path, doctor_time(next, a, sizeof(a)));
		X509_CRL_free(crl);
	}
	if (bio == NULL || n == 0)
		doctor_report_add(r, DOCTOR_FAIL, "crl", "give a PEM CRL (BEGIN X509 CRL)",
				  "%s holds no readable CRL", path);
	BIO_free(bio);
	ERR_clear_error();
}

static void check_crls(const struct tunnel_options *o, const struct doctor_local *l, time_t now,
		       struct doctor_report *r)
{
	STACK_OF(X509) *known = sk_X509_new_null();

	if (known == NULL)
		return;
	for (int k = 0; l->cas != NULL && k < sk_X509_num(l->cas); k++)
		sk_X509_push(known, sk_X509_value(l->cas, k));
	for (int k = 1; l->chain != NULL && k < sk_X509_num(l->chain); k++)
		sk_X509_push(known, sk_X509_value(l->chain, k));
	for (size_t i = 0; i < o->crl.n; i++)
		check_crl_file(o->crl.v[i], known, now, o->crl_grace, r);
	for (size_t i = 0; i < o->crl_cache.n; i++)
		if (access(o->crl_cache.v[i], F_OK) == 0)
			check_crl_file(o->crl_cache.v[i], known, now, o->crl_grace, r);
	sk_X509_free(known);
}

/* An allow rule that can never match: what a value keeps that the writer did not mean to
 * (quotes inside the quotes of the config grammar, a comment inside them, a stray quote on
 * the command line), or a value of the wrong kind. */
static void check_rule(const char *key, const char *v, struct doctor_report *r)
{
	size_t n = strlen(v);
	char fix[700];
	const char *colon = strchr(v, ':'), *slash = strchr(v, '/');

	if (n == 2 && (v[0] == '\'' || v[0] == '"') && v[1] == v[0]) {
		doctor_report_add(
			r, DOCTOR_FAIL, "allow", "give the identity to allow, or remove the line",
			"%s %s: an empty value in quotes; the rule never matches", key, v);
	} else if (n >= 2 && (v[0] == '\'' || v[0] == '"') && v[n - 1] == v[0]) {
		snprintf(fix, sizeof(fix), "write '%s %.*s' with one pair of quotes or none", key,
			 (int)(n - 2), v + 1);
		doctor_report_add(
			r, DOCTOR_FAIL, "allow", fix,
			"%s %s: these quotes are part of the value (quoted twice), so this "
			"rule wants the quotes in the certificate and never matches",
			key, v);
	} else if (v[0] == '\'' || v[0] == '"' || v[n - 1] == '\'' || v[n - 1] == '"') {
		doctor_report_add(
			r, DOCTOR_FAIL, "allow", "remove the quote",
			"%s %s: a stray quote is part of the value; the rule never matches", key,
			v);
	} else if (strstr(v, " #") != NULL || strstr(v, "\t#") != NULL) {
		doctor_report_add(r, DOCTOR_FAIL, "allow",
				  "close the quotes before the comment: key 'value'  # comment",
				  "%s %s: a comment inside quotes is part of the value; the rule "
				  "never matches",
				  key, v);
	} else if (strcmp(key, "allow-uri") == 0 &&
		   (colon == NULL || (slash != NULL && slash < colon) || colon == v)) {
		doctor_report_add(r, DOCTOR_FAIL, "allow",
				  "write the whole URI with its scheme, e.g. "
				  "spiffe://example.org/ns/prod/sa/app",
				  "%s %s: a URI rule without a scheme never matches a URI SAN", key,
				  v);
	} else if (strcmp(key, "allow-dns") == 0 && (strchr(v, ':') != NULL || slash != NULL)) {
		doctor_report_add(r, DOCTOR_FAIL, "allow",
				  "give the bare host name (api.example.org), or use allow-uri for "
				  "a URI SAN",
				  "%s %s: a DNS rule is a host name, not a URL; it never matches",
				  key, v);
	} else if (strcmp(key, "allow-email") == 0 && strchr(v, '@') == NULL) {
		doctor_report_add(r, DOCTOR_FAIL, "allow",
				  "give an address (name@example.org) or *@example.org",
				  "%s %s: an email rule without '@' never matches", key, v);
	} else if (strchr(v, ' ') != NULL && strcmp(key, "allow-cn") != 0) {
		doctor_report_add(r, DOCTOR_FAIL, "allow", "remove the blank",
				  "%s %s: a blank in the value; the rule never matches", key, v);
	}
}

static void check_rules(const struct tunnel_options *o, struct doctor_report *r)
{
	const struct {
		const char *key;
		const struct tunnel_list *l;
	} lists[] = {
		{"allow-uri", &o->allow_uri},	{"allow-dns", &o->allow_dns},
		{"allow-cn", &o->allow_cn},	{"allow-email", &o->allow_email},
		{"allow-spki", &o->allow_spki}, {"allow-cert", &o->allow_cert},
	};
	size_t rules = 0, before = r->fails;

	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
		for (size_t k = 0; k < lists[i].l->n; k++) {
			rules++;
			check_rule(lists[i].key, lists[i].l->v[k], r);
		}
	if (o->role != TUNNEL_SERVER)
		return;
	if (rules == 0 && !o->allow_any_identity)
		doctor_report_add(r, DOCTOR_FAIL, "allow",
				  "add allow rules (allow-uri, allow-dns, allow-cn, ...) for the "
				  "clients, or allow-any-identity",
				  "no allow rule: the server would not start");
	else if (o->allow_any_identity)
		doctor_report_add(r, DOCTOR_WARN, "allow", NULL,
				  "allow-any-identity: every certificate of --ca is let in");
	else if (r->fails == before)
		doctor_report_add(r, DOCTOR_OK, "allow", NULL, "%zu allow rule%s, each can match",
				  rules, rules == 1 ? "" : "s");
}

/* The rollout mode (docs/rollout.md): the weaker ones let in what strict mode refuses, and a
 * server left in one is the mistake this finding is for. */
static void check_mode(const struct tunnel_options *o, struct doctor_report *r)
{
	enum tunnel_mode mode;

	if (credentials_mode(o->mode, &mode) != 0) {
		doctor_report_add(r, DOCTOR_FAIL, "mode",
				  "give strict, insecure-permissive or insecure-audit",
				  "mode '%.40s': not a mode; the daemon would not start", o->mode);
		return;
	}
	if (o->role != TUNNEL_SERVER)
		return; /* a connector has no mode (its table has no such key) */
	if (mode == TUNNEL_MODE_PERMISSIVE)
		doctor_report_add(
			r, DOCTOR_WARN, "mode",
			"move the clients to mutual TLS; once "
			"mtls_connections_by_kind_total{kind=~\"plaintext|tls_no_cert\"} stops "
			"growing, set mode insecure-audit, then mode strict once "
			"mtls_would_refuse_total stops growing, each with a SIGHUP "
			"(docs/rollout.md)",
			"mode insecure-permissive: plaintext clients, clients without a "
			"certificate and clients strict mode would refuse (another CA, revoked, "
			"expired, no allow rule matching) are all forwarded to the target; "
			"mutual TLS is not enforced");
	else if (mode == TUNNEL_MODE_AUDIT)
		doctor_report_add(
			r, DOCTOR_WARN, "mode",
			"once mtls_would_refuse_total stops growing over a window covering every "
			"client (sum(increase(mtls_would_refuse_total[W])) == 0), set mode strict "
			"and SIGHUP (docs/rollout.md, step 2)",
			"mode insecure-audit: clients strict mode would refuse (another CA, "
			"revoked, expired, no allow rule matching) are forwarded to the target, "
			"only counted in mtls_would_refuse_total");
	else
		doctor_report_add(r, DOCTOR_OK, "mode", NULL,
				  "strict: only clients with a verified certificate the allow "
				  "rules let in are forwarded");
}

/* Every check of one tunnel's options o (mtls role), as the daemon would run them. */
static void check_tunnel(struct tunnel_options *o, const char *user, time_t now,
			 struct doctor_report *r)
{
	struct doctor_local l = {0};
	struct ids ids;
	bool have_ids = false;

	if (user == NULL)
		user = o->user;
	if (user == NULL) {
		struct passwd *pw = getpwuid(geteuid());

		user = pw != NULL ? pw->pw_name : NULL;
	}
	if (user == NULL || user_ids(user, &ids) != 0) {
		doctor_report_add(r, DOCTOR_FAIL, "user", "create the user, or correct --user",
				  "no such user: %s", user != NULL ? user : "(this process's uid)");
	} else {
		doctor_report_add(r, DOCTOR_OK, "user", NULL, "the daemon runs as %s (uid %u)",
				  user, (unsigned)ids.uid);
		check_files(o, &ids, r);
		have_ids = true;
	}
	if (o->ca == NULL || o->cert == NULL || o->key == NULL)
		doctor_report_add(r, DOCTOR_FAIL, "config", "add the missing keys to the config",
				  "the daemon needs ca, cert and key (missing:%s%s%s)",
				  o->ca == NULL ? " ca" : "", o->cert == NULL ? " cert" : "",
				  o->key == NULL ? " key" : "");
	l.cert_path = o->cert;
	l.key_mode_elsewhere = true; /* the load below judges it, as the daemon's user */
	l.key_path = o->key;
	l.ca_path = o->ca;
	doctor_local_check(
		&l, o->role == TUNNEL_SERVER ? X509_PURPOSE_SSL_SERVER : X509_PURPOSE_SSL_CLIENT,
		now, r);
	if (o->role == TUNNEL_CONNECTOR && l.chain != NULL && l.cas != NULL &&
	    !doctor_local_chains_to(l.chain, l.cas, X509_PURPOSE_SSL_CLIENT))
		doctor_report_add(r, DOCTOR_WARN, "cert-chain", NULL,
				  "%s does not lead to a CA of %s: fine if the server trusts "
				  "another CA (check with mtls doctor --server)",
				  o->cert, o->ca);
	check_renewal(o, now, r);
	check_crls(o, &l, now, r);
	check_rules(o, r);
	check_mode(o, r);
	check_load_as(o, have_ids ? &ids : NULL, r);
	doctor_local_free(&l);
}

int doctor_config_run(const char *path, const char *user, time_t now, struct doctor_report *r,
		      char *err, size_t err_len)
{
	struct tunnel_options o;
	struct options_state st = {0};
	enum tunnel_role role = TUNNEL_SERVER;
	struct tunnel_options *each = NULL;
	struct options_state *states = NULL;
	const struct tunnel_options **parsed = NULL;
	size_t nparsed = 0;
	char e1[600], e2[600];
	int rc = 0;

	if (access(path, F_OK) != 0) {
		snprintf(err, err_len, "--config %s: %s", path, strerror(errno));
		return -1;
	}
	/* a server's config, else a connector's (only it has the key "server") */
	if (tunnel_cmd_parse_config(TUNNEL_SERVER, path, &o, &st, e1, sizeof(e1)) != 0) {
		options_free(&st);
		memset(&st, 0, sizeof(st));
		role = TUNNEL_CONNECTOR;
		if (tunnel_cmd_parse_config(TUNNEL_CONNECTOR, path, &o, &st, e2, sizeof(e2)) != 0) {
			/* a connector's config (it has the key "server") with a mistake */
			bool conn = strstr(e1, "unknown key 'server'") != NULL;

			doctor_report_add(r, DOCTOR_FAIL, "config", "correct that line",
					  "mtls %s would not start: %s",
					  conn ? "connector" : "server", conn ? e2 : e1);
			options_free(&st);
			return 0;
		}
	}
	if (st.nsections == 0) {
		doctor_report_add(r, DOCTOR_OK, "config", NULL, "%s: a config of mtls %s", path,
				  role == TUNNEL_SERVER ? "server" : "connector");
		check_tunnel(&o, user, now, r);
		options_free(&st);
		return 0;
	}
	doctor_report_add(r, DOCTOR_OK, "config", NULL,
			  "%s: a config of mtls %s with %zu tunnels ([sections]), each checked "
			  "below",
			  path, role == TUNNEL_SERVER ? "server" : "connector", st.nsections);
	each = calloc(st.nsections, sizeof(*each));
	states = calloc(st.nsections, sizeof(*states));
	parsed = calloc(st.nsections, sizeof(*parsed));
	if (each == NULL || states == NULL || parsed == NULL) {
		snprintf(err, err_len, "out of memory");
		rc = -1;
		goto out;
	}
	for (size_t i = 0; i < st.nsections; i++) {
		states[i].section = st.sections[i];
		r->scope = st.sections[i];
		if (tunnel_cmd_parse_config(role, path, &each[i], &states[i], e1, sizeof(e1)) !=
		    0) {
			doctor_report_add(r, DOCTOR_FAIL, "config", "correct that line",
					  "this tunnel would not start: %s", e1);
			continue;
		}
		check_tunnel(&each[i], user, now, r);
		parsed[nparsed++] = &each[i];
	}
	r->scope = NULL;
	/* what the daemon refuses of the tunnels together (of those that parse) */
	if (nparsed == st.nsections &&
	    tunnel_check_distinct(parsed, st.sections, nparsed, e1, sizeof(e1)) != 0)
		doctor_report_add(r, DOCTOR_FAIL, "sections", "give each section its own",
				  "the daemon would not start: %s", e1);
out:
	for (size_t i = 0; states != NULL && i < st.nsections; i++)
		options_free(&states[i]);
	free(each);
	free(states);
	free(parsed);
	options_free(&st);
	return rc;
}
