/*
 * mtls doctor: the server's chain as a connector would judge it, with the reasons spelled
 * out: each certificate's validity against this host's clock (clock skew), whether the chain
 * leads to a CA of --ca (and if not, which CA it needs and what --ca holds, or that the
 * server sent its leaf alone), and whether the expected name is among its SANs.
 */
#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "certfields.h"
#include "doctor.h"

/* Per certificate of the server's chain: names and validity. */
void doctor_chain_times(STACK_OF(X509) * chain, time_t now, struct doctor_report *r, bool *time_ok)
{
	char s[512], i[512], a[32], b[32];

	*time_ok = true;
	for (int k = 0; k < sk_X509_num(chain); k++) {
		X509 *x = sk_X509_value(chain, k);
		time_t nb = certfields_time(X509_get0_notBefore(x));
		time_t na = certfields_time(X509_get0_notAfter(x));

		doctor_name(X509_get_subject_name(x), s, sizeof(s));
		doctor_name(X509_get_issuer_name(x), i, sizeof(i));
		if (now < nb) {
			*time_ok = false;
			doctor_report_add(r, DOCTOR_FAIL, "server-cert",
					  "compare the clocks: run date -u here and on the server "
					  "and CA hosts "
					  "(timedatectl; NTP); if the clocks agree, the "
					  "certificate was issued "
					  "with a future start: reissue it",
					  "#%d %s (issuer %s) is not valid yet: it starts at %s "
					  "and this host's "
					  "clock says %s (%lld minutes before): clock skew?",
					  k, s, i, doctor_time(nb, a, sizeof(a)),
					  doctor_time(now, b, sizeof(b)),
					  (long long)((nb - now + 59) / 60));
		} else if (now > na) {
			*time_ok = false;
			doctor_report_add(
				r, DOCTOR_FAIL, "server-cert",
				"renew the server's certificate (mtls renew on the server "
				"host, or --ca-url for automatic renewal)",
				"#%d %s (issuer %s) expired at %s (%lld days ago)", k, s, i,
				doctor_time(na, a, sizeof(a)), (long long)((now - na) / 86400));
		} else
			doctor_report_add(
				r, na - now < 7 * 86400 ? DOCTOR_WARN : DOCTOR_OK, "server-cert",
				na - now < 7 * 86400 ? "renew the server's certificate soon" : NULL,
				"#%d %s (issuer %s) valid until %s (%lld days left)", k, s, i,
				doctor_time(na, a, sizeof(a)), (long long)((na - now) / 86400));
	}
}

/* "CN=a; CN=b" of the first few certificates of a bundle. */
static void subjects(STACK_OF(X509) * certs, char *out, size_t len)
{
	size_t o = 0;
	char s[512];

	out[0] = '\0';
	for (int k = 0; k < sk_X509_num(certs) && k < 4 && o + 1 < len; k++)
		o += (size_t)snprintf(
			out + o, len - o, "%s%s", k > 0 ? "; " : "",
			doctor_name(X509_get_subject_name(sk_X509_value(certs, k)), s, sizeof(s)));
	if (sk_X509_num(certs) > 4 && o + 1 < len)
		snprintf(out + o, len - o, "; and %d more", sk_X509_num(certs) - 4);
}

void doctor_chain_trust(STACK_OF(X509) * chain, const struct doctor_local *l,
			struct doctor_report *r)
{
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	STACK_OF(X509) *untrusted = sk_X509_dup(chain);
	X509 *top = sk_X509_value(chain, sk_X509_num(chain) - 1);
	char have[1200], iss[512], s[512], fix[1400];
	int e = X509_V_ERR_OUT_OF_MEM;

	if (store != NULL && ctx != NULL && untrusted != NULL) {
		for (int k = 0; k < sk_X509_num(l->cas); k++)
			X509_STORE_add_cert(store, sk_X509_value(l->cas, k));
		X509_STORE_set_flags(store, X509_V_FLAG_NO_CHECK_TIME);
		(void)sk_X509_shift(untrusted);
		if (X509_STORE_CTX_init(ctx, store, sk_X509_value(chain, 0), untrusted) == 1) {
			X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
			e = X509_verify_cert(ctx) == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
		}
	}
	subjects(l->cas, have, sizeof(have));
	doctor_name(X509_get_issuer_name(top), iss, sizeof(iss));
	switch (e) {
	case X509_V_OK: {
		STACK_OF(X509) *built = X509_STORE_CTX_get0_chain(ctx);
		X509 *anchor = sk_X509_value(built, sk_X509_num(built) - 1);

		doctor_report_add(
			r, DOCTOR_OK, "server-trust", NULL, "the server's chain leads to %s of %s",
			doctor_name(X509_get_subject_name(anchor), s, sizeof(s)), l->ca_path);
		break;
	}
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
		if (sk_X509_num(chain) == 1 && X509_check_issued(top, top) != X509_V_OK) {
			snprintf(
				fix, sizeof(fix),
				"if %s is an intermediate of your CA, the server's --cert must "
				"hold it after the leaf (an incomplete chain); otherwise give --ca "
				"the CA that issued it",
				iss);
			doctor_report_add(
				r, DOCTOR_FAIL, "server-trust", fix,
				"unknown CA: the server sent only its leaf, issued by %s, "
				"and %s does not hold that CA (it holds: %s)",
				iss, l->ca_path, have);
		} else {
			snprintf(fix, sizeof(fix),
				 "give --ca (and the connector's --ca) the CA bundle that issued "
				 "the server's certificate (holding %s), or give the server a "
				 "certificate from your CA",
				 iss);
			doctor_report_add(r, DOCTOR_FAIL, "server-trust", fix,
					  "unknown CA: the server's chain needs %s, which %s does "
					  "not hold (it holds: %s)",
					  iss, l->ca_path, have);
		}
		break;
	case X509_V_ERR_INVALID_PURPOSE:
		doctor_report_add(r, DOCTOR_FAIL, "server-trust",
				  "issue the server a certificate of the server profile",
				  "the server's certificate has no serverAuth in its "
				  "extendedKeyUsage: a connector refuses it");
		break;
	default:
		doctor_report_add(r, DOCTOR_FAIL, "server-trust",
				  "run mtls verify --purpose server on the server's chain for "
				  "details",
				  "the server's chain does not verify against %s: %s", l->ca_path,
				  X509_verify_cert_error_string(e));
	}
	sk_X509_free(untrusted);
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	ERR_clear_error();
}

bool doctor_chain_is_ip(const char *name)
{
	unsigned char buf[16];

	return inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
}

/* The SANs of x, "DNS:a, IP:1.2.3.4", into out. */
static void sans(X509 *x, char *out, size_t len)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	size_t o = 0;

	snprintf(out, len, "no DNS or IP name");
	for (int k = 0; k < sk_GENERAL_NAME_num(gens) && o + 1 < len; k++) {
		GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, k);
		char ip[64];

		if (g->type == GEN_DNS)
			o += (size_t)snprintf(out + o, len - o, "%sDNS:%.*s", o > 0 ? ", " : "",
					      g->d.dNSName->length > 200 ? 200
									 : g->d.dNSName->length,
					      (const char *)g->d.dNSName->data);
		else if (g->type == GEN_IPADD) {
			const unsigned char *a = g->d.iPAddress->data;

			if (g->d.iPAddress->length == 4)
				snprintf(ip, sizeof(ip), "%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
			else
				snprintf(ip, sizeof(ip), "(IPv6)");
			o += (size_t)snprintf(out + o, len - o, "%sIP:%s", o > 0 ? ", " : "", ip);
		}
	}
	for (char *p = out; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	GENERAL_NAMES_free(gens);
}

void doctor_chain_name(X509 *leaf, const char *name, bool name_given, struct doctor_report *r)
{
	char have[600], fix[700];
	int ok =
		doctor_chain_is_ip(name)
			? X509_check_ip_asc(leaf, name, 0)
			: X509_check_host(leaf, name, 0, X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, NULL);

	sans(leaf, have, sizeof(have));
	ERR_clear_error();
	if (ok == 1) {
		doctor_report_add(r, DOCTOR_OK, "name", NULL,
				  "the server's certificate carries %s (%s)", name, have);
		return;
	}
	snprintf(fix, sizeof(fix),
		 "connect with a name the certificate carries (the connector's --server-name, "
		 "doctor's --name), or reissue the server's certificate with %s:%s",
		 doctor_chain_is_ip(name) ? "IP" : "DNS", name);
	doctor_report_add(r, DOCTOR_FAIL, "name", fix,
			  "name mismatch: the server's certificate does not carry %s%s; it carries "
			  "%s",
			  name, name_given ? "" : " (the host part of --server)", have);
}
