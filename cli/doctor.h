/*
 * mtls doctor: explain why a connection would fail, and what to do.
 *
 *   doctor_report.c  the findings (severity, topic, what was found, the fix), printed as
 *                    text (one line each) or JSON
 *   doctor_local.c   the local certificate, key and CA files: consistent, valid, usable
 *   doctor_probe.c   a server seen from a client host: TCP, TLS, the CA names it asks for,
 *                    its verdict on our certificate, a connector's handshake
 *   doctor_chain.c   the server's chain judged: validity, trust against --ca, name
 *   doctor_config.c  a daemon's config checked offline on its host
 *   doctor_cmd.c     options and the order of the checks
 */
#ifndef MTLS_CLI_DOCTOR_H
#define MTLS_CLI_DOCTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <time.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

enum doctor_severity { DOCTOR_OK, DOCTOR_WARN, DOCTOR_FAIL };

struct doctor_finding {
	enum doctor_severity severity;
	char topic[80]; /* "[section] topic" for a config file's tunnel */
	char text[1024];
	char fix[1024];
};

/* Findings in the order they were made. */
struct doctor_report {
	struct doctor_finding *v;
	size_t n;
	size_t fails, warns;
	bool oom;
	const char *scope; /* a config file's [section] the findings are about, or NULL */
};

/* Add a finding; fix may be NULL (no fix: an ok, or a warning without a remedy). */
void doctor_report_add(struct doctor_report *r, enum doctor_severity sev, const char *topic,
		       const char *fix, const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Print every finding and a result line: text, one finding a line, or one JSON object. */
void doctor_report_print(const struct doctor_report *r, FILE *out, bool json);
void doctor_report_free(struct doctor_report *r);

/* "CN=a,O=b" (RFC 2253) into buf. */
const char *doctor_name(const X509_NAME *name, char *buf, size_t len);
/* A UNIX time as "2026-12-01T18:00:00Z" into buf. */
const char *doctor_time(time_t t, char *buf, size_t len);
/* The certificates of a PEM file; NULL with why set (unreadable, no certificate). */
STACK_OF(X509) * doctor_read_certs(const char *path, char *why, size_t len);

/* The local side of a client: --cert, --key, --ca. */
struct doctor_local {
	const char *cert_path, *key_path, *ca_path;
	STACK_OF(X509) * chain;	 /* --cert: leaf first; NULL if not given or unreadable */
	STACK_OF(X509) * cas;	 /* --ca; NULL if not given or unreadable */
	bool usable;		 /* chain and key load and match: the probe presents them */
	bool key_mode_elsewhere; /* the key's mode is judged by another check (doctor --config's
				  * load, as the daemon's user): no warning about it here */
};

/* Check the local files, adding findings; fills l (free with doctor_local_free()). purpose:
 * X509_PURPOSE_SSL_CLIENT for a client certificate, X509_PURPOSE_SSL_SERVER for a daemon's
 * own server certificate. */
void doctor_local_check(struct doctor_local *l, int purpose, time_t now, struct doctor_report *r);
/* Does chain lead to one of the CAs in cas (time not checked)? */
bool doctor_local_chains_to(STACK_OF(X509) * chain, STACK_OF(X509) * cas, int purpose);
void doctor_local_free(struct doctor_local *l);

/* doctor_chain.c: the server's chain (leaf first), as sent. */
/* A finding per certificate: names, expiry, days left; *time_ok false if one is out of its
 * validity at now. */
void doctor_chain_times(STACK_OF(X509) * chain, time_t now, struct doctor_report *r, bool *time_ok);
/* Does the chain lead to a CA of l->cas (l->cas not NULL)? If not, why. */
void doctor_chain_trust(STACK_OF(X509) * chain, const struct doctor_local *l,
			struct doctor_report *r);
/* Is name (DNS name or IP address) among the leaf's SANs? name_given: from --name. */
void doctor_chain_name(X509 *leaf, const char *name, bool name_given, struct doctor_report *r);
bool doctor_chain_is_ip(const char *name);

struct doctor_probe_opts {
	const char *server; /* HOST:PORT */
	const char *name;   /* the name the server's certificate must carry; NULL: the host */
	int timeout_ms;
};

/* Probe a server and add the findings. Returns 0 when done (findings made), -1 for a usage
 * error (message in err). */
int doctor_probe_run(const struct doctor_probe_opts *o, struct doctor_local *l, time_t now,
		     struct doctor_report *r, char *err, size_t err_len);

/* Check a daemon's config file offline. user: the user it runs as (NULL: the config's
 * --user, else the current user). Returns 0 when done, -1 for a usage error (err). */
int doctor_config_run(const char *path, const char *user, time_t now, struct doctor_report *r,
		      char *err, size_t err_len);

#endif
