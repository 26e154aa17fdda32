/*
 * The CA inventory's audit log, whichever database keeps it (audit_log.h).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "audit_log.h"

const char audit_log_genesis[65] =
	"0000000000000000000000000000000000000000000000000000000000000000";

void audit_log_hash(const char *prev, const struct audit_log_entry *e, char out[65])
{
	const char *fields[] = {prev, e->actor, e->action, e->subject, e->detail};
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char digest[32];
	unsigned int n = 0;
	char num[64];

	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	snprintf(num, sizeof(num), "%lld:%lld:", (long long)e->seq, (long long)e->at);
	EVP_DigestUpdate(md, num, strlen(num));
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		snprintf(num, sizeof(num), "%zu:", strlen(fields[i]));
		EVP_DigestUpdate(md, num, strlen(num));
		EVP_DigestUpdate(md, fields[i], strlen(fields[i]));
	}
	EVP_DigestFinal_ex(md, digest, &n);
	EVP_MD_CTX_free(md);
	for (unsigned i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", digest[i]);
}

void audit_log_walk_start(struct audit_log_walk *w, int64_t *count, int64_t *bad_seq,
			  int (*fn)(const struct audit_log_entry *e, void *arg), void *arg)
{
	snprintf(w->prev, sizeof(w->prev), "%s", audit_log_genesis);
	w->next_seq = 1;
	w->count = count;
	w->bad_seq = bad_seq;
	w->fn = fn;
	w->arg = arg;
	*count = 0;
}

int audit_log_walk_next(struct audit_log_walk *w, const struct audit_log_entry *e,
			const char *stored_prev, const char *stored_hash)
{
	char hash[65];

	audit_log_hash(w->prev, e, hash);
	if (e->seq != w->next_seq || strcmp(stored_prev, w->prev) != 0 ||
	    strcmp(stored_hash, hash) != 0) {
		*w->bad_seq = e->seq != w->next_seq ? w->next_seq : e->seq;
		return 1;
	}
	if (w->fn != NULL && w->fn(e, w->arg) != 0)
		return 2;
	snprintf(w->prev, sizeof(w->prev), "%s", hash);
	w->next_seq++;
	(*w->count)++;
	return 0;
}

void audit_log_walk_head(const struct audit_log_walk *w, char head[65])
{
	snprintf(head, 65, "%s", *w->count > 0 ? w->prev : "");
}

/* ------------------------------------------------------------------------------------------
 * The details of the entries.
 */

#define TIME_FORMAT "%Y-%m-%dT%H:%M:%SZ"
/* a revocation logged without its time was made within this many seconds before its entry */
#define UNTIMED_SLACK 60

static const char *format_time(time_t t, char buf[32])
{
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || strftime(buf, 32, TIME_FORMAT, &tm) == 0)
		snprintf(buf, 32, "@%lld", (long long)t);
	return buf;
}

void audit_log_revoke_detail(char *buf, size_t len, const char *serial, const char *reason,
			     time_t when)
{
	char at[32];

	snprintf(buf, len, "serial %s, reason %s, at %s", serial, reason, format_time(when, at));
}

void audit_log_crl_detail(char *buf, size_t len, int64_t number, size_t revoked, const char *sha256)
{
	snprintf(buf, len, "CRL %lld, %zu revoked, sha256 %s", (long long)number, revoked, sha256);
}

void audit_log_crl_like(char *buf, size_t len, int64_t number)
{
	snprintf(buf, len, "CRL %lld, %%", (long long)number);
}

char *audit_log_token_detail(const struct store_token *t)
{
	const char *lines = t->names != NULL ? t->names : "";
	char at[32], *names, *detail = NULL, *o;

	/* the names as the rest of the log shows them: "DNS:a, URI:b" */
	names = o = malloc(2 * strlen(lines) + 1);
	if (names == NULL)
		return NULL;
	for (const char *p = lines; *p != '\0'; p++) {
		if (*p == '\n') {
			*o++ = ',';
			*o++ = ' ';
		} else {
			*o++ = *p;
		}
	}
	*o = '\0';
	if (asprintf(&detail, "token %.16s, profile %s, names %s, until %s", t->hash, t->profile,
		     names[0] != '\0' ? names : "none", format_time(t->not_after, at)) < 0)
		detail = NULL;
	free(names);
	return detail;
}

static bool take(const char **p, const char *literal)
{
	size_t n = strlen(literal);

	if (strncmp(*p, literal, n) != 0)
		return false;
	*p += n;
	return true;
}

/* A non-empty run of characters from set, shorter than len, into out. */
static bool take_span(const char **p, const char *set, char *out, size_t len)
{
	size_t n = strspn(*p, set);

	if (n == 0 || n >= len)
		return false;
	memcpy(out, *p, n);
	out[n] = '\0';
	*p += n;
	return true;
}

static const char hex_upper[] = "0123456789ABCDEF";
static const char hex_lower[] = "0123456789abcdef";
static const char digits[] = "0123456789";

struct logged_revocation {
	char serial[64];
	char reason[32];
	time_t at;  /* the revocation time, or the entry's time if !exact */
	bool exact; /* the entry states the revocation time */
	int64_t seq;
};

static int parse_revoke(const char *detail, int64_t entry_at, struct logged_revocation *r)
{
	const char *p = detail, *end;
	char when[32];
	struct tm tm;

	if (!take(&p, "serial ") || !take_span(&p, hex_upper, r->serial, sizeof(r->serial)) ||
	    !take(&p, ", reason ") ||
	    !take_span(&p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", r->reason,
		       sizeof(r->reason)))
		return -1;
	if (*p == '\0') {
		r->at = (time_t)entry_at;
		r->exact = false;
		return 0;
	}
	memset(&tm, 0, sizeof(tm));
	if (!take(&p, ", at ") || !take_span(&p, "0123456789-:TZ", when, sizeof(when)) ||
	    *p != '\0' || (end = strptime(when, TIME_FORMAT, &tm)) == NULL || *end != '\0')
		return -1;
	r->at = timegm(&tm);
	r->exact = true;
	return 0;
}

int audit_log_parse_crl(const char *detail, int64_t *number, char sha256[65])
{
	const char *p = detail;
	char num[20], count[20];

	if (!take(&p, "CRL ") || !take_span(&p, digits, num, sizeof(num)) || !take(&p, ", ") ||
	    !take_span(&p, digits, count, sizeof(count)) || !take(&p, " revoked, sha256 ") ||
	    !take_span(&p, hex_lower, sha256, 65) || strlen(sha256) != 64 || *p != '\0')
		return -1;
	*number = strtoll(num, NULL, 10);
	return *number > 0 ? 0 : -1;
}

int64_t audit_log_crl_next(int64_t floor, int64_t table, int64_t logged)
{
	int64_t max = floor;

	if (table > max)
		max = table;
	if (logged > max)
		max = logged;
	return max + 1;
}

/* ------------------------------------------------------------------------------------------
 * store_check().
 */

/* What the walk over the log collects. */
struct collect {
	struct logged_revocation *revs;
	size_t n, cap;
	int64_t *crls; /* the logged CRL numbers, in log order (strictly increasing) */
	size_t ncrl, crlcap;
	int64_t crl_min, crl_max;
	char crl_max_sha[65];
	int64_t bad_entry;     /* a revoke or crl entry that cannot be read */
	int64_t back_entry;    /* a crl entry whose number is not above every earlier one */
	int64_t back_number;   /* its number */
	int64_t back_previous; /* and the highest number before it */
};

static int push_number(int64_t **v, size_t *n, size_t *cap, int64_t x)
{
	if (*n == *cap) {
		size_t c = *cap != 0 ? *cap * 2 : 64;
		int64_t *grown = realloc(*v, c * sizeof(**v));

		if (grown == NULL)
			return -1;
		*v = grown;
		*cap = c;
	}
	(*v)[(*n)++] = x;
	return 0;
}

static int collect_entry(const struct audit_log_entry *e, void *arg)
{
	struct collect *c = arg;
	char sha[65];
	int64_t number;

	if (strcmp(e->action, "crl") == 0) {
		/* `mtls ca crl` logged "published" before CRLs were logged with their hash */
		if (strcmp(e->detail, "published") == 0)
			return 0;
		if (audit_log_parse_crl(e->detail, &number, sha) != 0) {
			c->bad_entry = e->seq;
			return 1;
		}
		/* every publication takes a new number, above all before it */
		if (number <= c->crl_max) {
			c->back_entry = e->seq;
			c->back_number = number;
			c->back_previous = c->crl_max;
			return 1;
		}
		if (c->crl_min == 0)
			c->crl_min = number;
		c->crl_max = number;
		snprintf(c->crl_max_sha, sizeof(c->crl_max_sha), "%s", sha);
		return push_number(&c->crls, &c->ncrl, &c->crlcap, number);
	}
	if (strcmp(e->action, "revoke") != 0)
		return 0;
	if (c->n == c->cap) {
		size_t cap = c->cap != 0 ? c->cap * 2 : 64;
		struct logged_revocation *revs = realloc(c->revs, cap * sizeof(*revs));

		if (revs == NULL)
			return -1;
		c->revs = revs;
		c->cap = cap;
	}
	if (parse_revoke(e->detail, e->at, &c->revs[c->n]) != 0) {
		c->bad_entry = e->seq;
		return 1;
	}
	c->revs[c->n++].seq = e->seq;
	return 0;
}

static int by_serial(const void *a, const void *b)
{
	return strcmp(((const struct logged_revocation *)a)->serial,
		      ((const struct logged_revocation *)b)->serial);
}

/* Does the table's (reason, time) match what the log says? */
static bool same_revocation(const struct logged_revocation *r, const char *reason, time_t at)
{
	if (strcmp(r->reason, reason) != 0)
		return false;
	if (r->exact)
		return at == r->at;
	return at <= r->at && at >= r->at - UNTIMED_SLACK;
}

static void describe_log(const struct logged_revocation *r, char *buf, size_t len)
{
	char when[32];

	if (r->exact)
		snprintf(buf, len, "revoked %s at %s", r->reason, format_time(r->at, when));
	else
		snprintf(buf, len, "revoked %s (entry %lld)", r->reason, (long long)r->seq);
}

static void disagree(char *what, size_t len, const char *serial, const char *table, const char *log)
{
	snprintf(what, len,
		 "inventory and audit log disagree on serial %s (table: %s, log: %s); the "
		 "inventory was altered; restore it from a backup or investigate",
		 serial, table, log);
}

void audit_log_trigger_altered(char *what, size_t what_len, const char *name, const char *how)
{
	snprintf(what, what_len,
		 "the audit log's append-only trigger %s was %s; the inventory was altered (its "
		 "newest entries may have been removed); restore it from a backup or investigate",
		 name, how);
}

/* The CRL table's rows against the logged numbers, one row at a time. */
struct crl_rows {
	const struct collect *c;
	size_t i;	  /* the next logged number to meet */
	int64_t missing;  /* a logged number without its row */
	int64_t unlogged; /* a row without its logged number */
};

static int crl_row(int64_t row, void *arg)
{
	struct crl_rows *m = arg;
	const struct collect *c = m->c;

	if (c->ncrl == 0 || m->i >= c->ncrl || c->crls[m->i] > row) {
		/* rows before any CRL was logged are not compared */
		if (c->ncrl == 0)
			return 0;
		m->unlogged = row;
		return 1;
	}
	if (c->crls[m->i] < row) {
		m->missing = c->crls[m->i];
		return 1;
	}
	m->i++;
	return 0;
}

/* The CRL table against the "crl" entries: one row for each logged number and a logged
 * number for each row, from the first logged one on (earlier rows are from before CRLs
 * were logged). 0 agree, 2 not (what), -1 error. */
static int check_crl_rows(const struct audit_log_ops *ops, void *db, const struct collect *c,
			  char *what, size_t what_len)
{
	struct crl_rows m = {c, 0, 0, 0};

	if (ops->crl_numbers(db, c->ncrl > 0 ? c->crl_min : 1, crl_row, &m) < 0)
		return -1;
	if (m.missing == 0 && m.unlogged == 0 && m.i < c->ncrl)
		m.missing = c->crls[m.i];
	if (m.missing != 0)
		snprintf(what, what_len,
			 "the audit log records CRL #%lld but the inventory's CRL table does not; "
			 "the inventory was altered; restore it from a backup or investigate",
			 (long long)m.missing);
	else if (m.unlogged != 0)
		snprintf(what, what_len,
			 "the inventory's CRL table holds CRL #%lld, which the audit log does not "
			 "record; the inventory was altered; restore it from a backup or "
			 "investigate",
			 (long long)m.unlogged);
	return m.missing != 0 || m.unlogged != 0 ? 2 : 0;
}

/* Every revocation of the log, in the table. 0, 2 not (what), -1 error. */
static int check_logged(const struct audit_log_ops *ops, void *db, const struct collect *c,
			char *what, size_t what_len)
{
	struct store_cert cert;
	char table[160], log[160], when[32];
	int rc;

	for (size_t i = 0; i < c->n; i++) {
		const struct logged_revocation *r = &c->revs[i];

		describe_log(r, log, sizeof(log));
		if (i > 0 && strcmp(r->serial, c->revs[i - 1].serial) == 0) {
			disagree(what, what_len, r->serial, "revoked once", "revoked twice");
			return 2;
		}
		rc = ops->get_cert(db, r->serial, &cert);
		if (rc < 0)
			return rc;
		if (rc == 1)
			snprintf(table, sizeof(table), "missing");
		else if (!cert.revoked)
			snprintf(table, sizeof(table), "valid");
		else if (!same_revocation(
				 r, cert.revocation_reason != NULL ? cert.revocation_reason : "",
				 cert.revoked_at))
			snprintf(table, sizeof(table), "revoked %s at %s",
				 cert.revocation_reason != NULL ? cert.revocation_reason : "?",
				 format_time(cert.revoked_at, when));
		else
			continue;
		disagree(what, what_len, r->serial, table, log);
		return 2;
	}
	return 0;
}

/* One revoked row of the table against the log. */
struct revoked_row {
	const struct collect *c;
	char *what;
	size_t what_len;
};

static int revoked_row(const char *serial, const char *reason, time_t at, void *arg)
{
	const struct revoked_row *v = arg;
	struct logged_revocation key;
	char table[160], when[32];

	snprintf(key.serial, sizeof(key.serial), "%s", serial);
	if (v->c->n > 0 &&
	    bsearch(&key, v->c->revs, v->c->n, sizeof(*v->c->revs), by_serial) != NULL)
		return 0;
	snprintf(table, sizeof(table), "revoked %s at %s", reason != NULL ? reason : "?",
		 format_time(at, when));
	disagree(v->what, v->what_len, key.serial, table, "not revoked");
	return 2;
}

int audit_log_check(const struct audit_log_ops *ops, void *db, struct store_check *out, char *what,
		    size_t what_len)
{
	struct collect c = {0};
	struct revoked_row v = {&c, what, what_len};
	int rc;

	memset(out, 0, sizeof(*out));
	what[0] = '\0';
	rc = ops->walk(db, &out->entries, &out->bad_seq, out->head, collect_entry, &c);
	if (rc == 2 && c.bad_entry == 0 && c.back_entry == 0) {
		ops->out_of_memory(db);
		rc = -1;
	}
	if (rc == 2 && c.bad_entry != 0) {
		snprintf(what, what_len,
			 "audit entry %lld cannot be read (a revocation or CRL in an unknown "
			 "form); the audit log was altered; restore the inventory from a backup or "
			 "investigate",
			 (long long)c.bad_entry);
		goto out;
	}
	if (rc == 2) {
		snprintf(what, what_len,
			 "audit entry %lld records CRL #%lld after CRL #%lld: a CRL number was "
			 "published twice or went back (the inventory was restored or altered); "
			 "investigate",
			 (long long)c.back_entry, (long long)c.back_number,
			 (long long)c.back_previous);
		goto out;
	}
	if (rc != 0)
		goto out;
	rc = ops->triggers(db, what, what_len);
	if (rc != 0)
		goto out;
	out->crl_logged_min = c.crl_min;
	out->crl_logged_max = c.crl_max;
	snprintf(out->crl_logged_sha, sizeof(out->crl_logged_sha), "%s", c.crl_max_sha);
	out->crl_allocated = ops->max_crl_number(db);
	if (out->crl_allocated < 0) {
		rc = -1;
		goto out;
	}
	rc = check_crl_rows(ops, db, &c, what, what_len);
	if (rc != 0)
		goto out;
	if (c.n > 0)
		qsort(c.revs, c.n, sizeof(*c.revs), by_serial);
	rc = check_logged(ops, db, &c, what, what_len);
	if (rc != 0)
		goto out;
	/* every revoked row of the table, in the log */
	rc = ops->revoked(db, revoked_row, &v);
out:
	free(c.revs);
	free(c.crls);
	return rc;
}
