/*
 * mtls doctor's findings: collected in order, printed once at the end, as text (one line a
 * finding: severity, topic, what was found, "fix:" and what to do) or as one JSON object.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "doctor.h"

static const char *severity_name[] = {"ok", "warn", "fail"};

void doctor_report_add(struct doctor_report *r, enum doctor_severity sev, const char *topic,
		       const char *fix, const char *fmt, ...)
{
	struct doctor_finding *v, *f;
	va_list ap;

	v = realloc(r->v, (r->n + 1) * sizeof(*v));
	if (v == NULL) {
		r->oom = true;
		return;
	}
	r->v = v;
	f = &r->v[r->n++];
	memset(f, 0, sizeof(*f));
	f->severity = sev;
	if (r->scope != NULL)
		snprintf(f->topic, sizeof(f->topic), "[%.32s] %s", r->scope, topic);
	else
		snprintf(f->topic, sizeof(f->topic), "%s", topic);
	va_start(ap, fmt);
	vsnprintf(f->text, sizeof(f->text), fmt, ap);
	va_end(ap);
	if (fix != NULL)
		snprintf(f->fix, sizeof(f->fix), "%s", fix);
	if (sev == DOCTOR_FAIL)
		r->fails++;
	else if (sev == DOCTOR_WARN)
		r->warns++;
}

static void print_json(const struct doctor_report *r, FILE *out)
{
	json_t *root = json_object(), *list = json_array();
	char *text;

	for (size_t i = 0; i < r->n && root != NULL && list != NULL; i++) {
		const struct doctor_finding *f = &r->v[i];
		json_t *o = json_pack("{s:s, s:s, s:s}", "severity", severity_name[f->severity],
				      "topic", f->topic, "finding", f->text);

		if (o != NULL && f->fix[0] != '\0')
			json_object_set_new(o, "fix", json_string(f->fix));
		if (o != NULL)
			json_array_append_new(list, o);
	}
	if (root == NULL || list == NULL) {
		json_decref(root);
		json_decref(list);
		fprintf(out, "{\"error\":\"out of memory\"}\n");
		return;
	}
	json_object_set_new(root, "findings", list);
	json_object_set_new(root, "fails", json_integer((json_int_t)r->fails));
	json_object_set_new(root, "warnings", json_integer((json_int_t)r->warns));
	json_object_set_new(root, "ok", json_boolean(r->fails == 0 && !r->oom));
	text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	if (text != NULL)
		fprintf(out, "%s\n", text);
	free(text);
	json_decref(root);
}

void doctor_report_print(const struct doctor_report *r, FILE *out, bool json)
{
	if (json) {
		print_json(r, out);
		return;
	}
	for (size_t i = 0; i < r->n; i++) {
		const struct doctor_finding *f = &r->v[i];

		fprintf(out, "%-4s %s: %s", severity_name[f->severity], f->topic, f->text);
		if (f->fix[0] != '\0')
			fprintf(out, "; fix: %s", f->fix);
		fprintf(out, "\n");
	}
	if (r->oom)
		fprintf(out, "fail doctor: out of memory, some findings are missing\n");
	if (r->fails == 0 && !r->oom)
		fprintf(out, "result: no problem found (%zu warning%s)\n", r->warns,
			r->warns == 1 ? "" : "s");
	else
		fprintf(out, "result: %zu problem%s to fix, %zu warning%s\n", r->fails,
			r->fails == 1 ? "" : "s", r->warns, r->warns == 1 ? "" : "s");
}

void doctor_report_free(struct doctor_report *r)
{
	free(r->v);
	memset(r, 0, sizeof(*r));
}

const char *doctor_name(const X509_NAME *name, char *buf, size_t len)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data = NULL;
	long n = -1;

	snprintf(buf, len, "(no name)");
	if (bio == NULL || name == NULL) {
		BIO_free(bio);
		return buf;
	}
	if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0 &&
	    (n = BIO_get_mem_data(bio, &data)) > 0)
		snprintf(buf, len, "%.*s", (int)(n > 400 ? 400 : n), data);
	else if (n == 0)
		snprintf(buf, len, "(empty name)");
	BIO_free(bio);
	/* no control bytes on the terminal: the names come from the network */
	for (char *p = buf; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	return buf;
}

const char *doctor_time(time_t t, char *buf, size_t len)
{
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "@%lld", (long long)t);
	return buf;
}

STACK_OF(X509) * doctor_read_certs(const char *path, char *why, size_t len)
{
	BIO *bio = BIO_new_file(path, "r");
	STACK_OF(X509) * certs;
	X509 *x;

	if (bio == NULL) {
		snprintf(why, len, "cannot read %s: %s", path, strerror(errno));
		ERR_clear_error();
		return NULL;
	}
	certs = sk_X509_new_null();
	while (certs != NULL && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
		if (!sk_X509_push(certs, x)) {
			X509_free(x);
			break;
		}
	BIO_free(bio);
	ERR_clear_error();
	if (certs == NULL || sk_X509_num(certs) == 0) {
		sk_X509_free(certs);
		snprintf(why, len, "%s holds no PEM certificate (BEGIN CERTIFICATE)", path);
		return NULL;
	}
	return certs;
}
