/*
 * PostgreSQL role rules (pgrole.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mtls.h"
#include "pgrole.h"
#include "pgwire.h"

struct rule {
	char *text; /* as given, for the log */
	char *pattern;
	const char *role;     /* "*": any; in pattern's allocation */
	const char *database; /* "*": any */
};

struct pgrole {
	struct rule *v;
	size_t n;
};

void pgrole_free(struct pgrole *r)
{
	if (r == NULL)
		return;
	for (size_t i = 0; i < r->n; i++) {
		free(r->v[i].text);
		free(r->v[i].pattern);
	}
	free(r->v);
	free(r);
}

/* Whether pattern is one the allow rules would take (the library checks it), with a "*"
 * only where it stands for something: a whole path segment of a URI, the leftmost label of a
 * DNS name. */
static bool pattern_ok(const char *pattern)
{
	struct mtls_config *cfg;
	const char *path = strstr(pattern, "://");
	int rc;

	for (const char *p = pattern; *p != '\0'; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return false;
		if (*p != '*')
			continue;
		if (path != NULL && (p < path || p[-1] != '/' || (p[1] != '/' && p[1] != '\0')))
			return false;
		if (path == NULL && (p != pattern || p[1] != '.'))
			return false;
	}
	if (path != NULL && (strstr(path, "/../") != NULL || strstr(path, "/./") != NULL))
		return false;
	if ((cfg = mtls_config_new()) == NULL)
		return false;
	if (path != NULL)
		rc = mtls_config_allow_uri(cfg, pattern);
	else if (strchr(pattern, '*') != NULL)
		rc = mtls_config_allow_dns(cfg, pattern);
	else
		rc = mtls_config_allow_cn(cfg, pattern);
	mtls_config_free(cfg);
	return rc == 0;
}

static bool name_ok(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > PGWIRE_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
			return false;
	return true;
}

static int parse_one(const char *text, struct rule *out, char *err, size_t len)
{
	char *copy = strdup(text), *eq, *at;

	if (copy == NULL) {
		snprintf(err, len, "out of memory");
		return -1;
	}
	/* the last '=': a role name has none, an identity pattern might */
	eq = strrchr(copy, '=');
	if (eq == NULL || eq == copy || eq[1] == '\0') {
		snprintf(err, len,
			 "--pg-role '%.200s': write PATTERN=ROLE or PATTERN=ROLE@DATABASE, e.g. "
			 "'spiffe://example.org/ns/prod/sa/billing=billing'",
			 text);
		free(copy);
		return -1;
	}
	*eq = '\0';
	at = strrchr(eq + 1, '@'); /* a role may hold an '@' (alice@corp.com@*) */
	if (at != NULL)
		*at = '\0';
	out->text = strdup(text);
	out->pattern = copy;
	out->role = eq + 1;
	out->database = at != NULL ? at + 1 : "*";
	if (out->text == NULL) {
		snprintf(err, len, "out of memory");
		free(copy);
		return -1;
	}
	if (!pattern_ok(out->pattern)) {
		snprintf(err, len,
			 "--pg-role '%.200s': '%.200s' is not an identity pattern (write it as for "
			 "--allow-uri or --allow-dns, or an exact common name)",
			 text, out->pattern);
		goto bad;
	}
	if (!name_ok(out->role) || !name_ok(out->database)) {
		snprintf(err, len,
			 "--pg-role '%.200s': a role and a database are 1 to %d bytes without "
			 "control characters, or * for any",
			 text, (int)PGWIRE_NAME_MAX);
		goto bad;
	}
	return 0;
bad:
	free(out->text);
	free(copy);
	return -1;
}

struct pgrole *pgrole_parse(const struct tunnel_list *rules, char *err, size_t len)
{
	struct pgrole *r = calloc(1, sizeof(*r));

	if (r == NULL || (rules->n > 0 && (r->v = calloc(rules->n, sizeof(*r->v))) == NULL)) {
		free(r);
		snprintf(err, len, "out of memory");
		return NULL;
	}
	for (size_t i = 0; i < rules->n; i++) {
		if (parse_one(rules->v[i], &r->v[i], err, len) != 0) {
			pgrole_free(r);
			return NULL;
		}
		r->n++;
	}
	return r;
}

size_t pgrole_count(const struct pgrole *r)
{
	return r->n;
}

static bool name_match(const char *rule, const char *name)
{
	return strcmp(rule, "*") == 0 || strcmp(rule, name) == 0;
}

static bool peer_match(const char *pattern, const struct pgrole_peer *p)
{
	if (strstr(pattern, "://") != NULL) {
		for (size_t i = 0; i < p->nuri; i++)
			if (mtls_identity_match(pattern, p->uri[i]))
				return true;
		return false;
	}
	for (size_t i = 0; i < p->ndns; i++)
		if (mtls_identity_match(pattern, p->dns[i]))
			return true;
	return p->cn != NULL && strcmp(pattern, p->cn) == 0;
}

bool pgrole_allows(const struct pgrole *r, const struct pgrole_peer *peer, const char *user,
		   const char *database, bool replication, const char **rule)
{
	*rule = NULL;
	if (r->n == 0) {
		*rule = "";
		return true;
	}
	if (database == NULL || database[0] == '\0') /* PostgreSQL's default */
		database = user;
	for (size_t i = 0; i < r->n; i++) {
		const struct rule *x = &r->v[i];
		bool db = replication ? strcmp(x->database, "replication") == 0
				      : name_match(x->database, database);

		if (name_match(x->role, user) && db && peer_match(x->pattern, peer)) {
			*rule = x->text;
			return true;
		}
	}
	return false;
}
