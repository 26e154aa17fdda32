/*
 * Reasons, categories and error messages.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>

#include "internal.h"

struct reason_info {
	const char *name;
	enum mtls_category category;
};

static const struct reason_info reasons[MTLS_REASON_COUNT] = {
	[MTLS_REASON_NONE] = {"none", MTLS_CATEGORY_NONE},
	[MTLS_REASON_NO_CERTIFICATE] = {"no_certificate", MTLS_CATEGORY_VERIFY},
	[MTLS_REASON_UNKNOWN_CA] = {"unknown_ca", MTLS_CATEGORY_VERIFY},
	[MTLS_REASON_SELF_SIGNED] = {"self_signed", MTLS_CATEGORY_VERIFY},
	[MTLS_REASON_EXPIRED] = {"expired", MTLS_CATEGORY_VERIFY},
	[MTLS_REASON_NOT_YET_VALID] = {"not_yet_valid", MTLS_CATEGORY_VERIFY},
	[MTLS_REASON_BAD_KEY_USAGE] = {"bad_key_usage", MTLS_CATEGORY_VERIFY},
	[MTLS_REASON_NAME_MISMATCH] = {"name_mismatch", MTLS_CATEGORY_VERIFY},
	[MTLS_REASON_IDENTITY_NOT_ALLOWED] = {"identity_not_allowed", MTLS_CATEGORY_AUTHZ},
	[MTLS_REASON_PIN_MISMATCH] = {"pin_mismatch", MTLS_CATEGORY_AUTHZ},
	[MTLS_REASON_REVOKED] = {"revoked", MTLS_CATEGORY_REVOKED},
	[MTLS_REASON_CRL_EXPIRED] = {"crl_expired", MTLS_CATEGORY_REVOKED},
	[MTLS_REASON_CRL_MISSING] = {"crl_missing", MTLS_CATEGORY_REVOKED},
	[MTLS_REASON_CHAIN_TOO_LONG] = {"chain_too_long", MTLS_CATEGORY_VERIFY},
	[MTLS_REASON_INVALID_CA] = {"invalid_ca", MTLS_CATEGORY_VERIFY},
	[MTLS_REASON_BAD_SIGNATURE] = {"bad_signature", MTLS_CATEGORY_VERIFY},
	[MTLS_REASON_WEAK_KEY] = {"weak_key", MTLS_CATEGORY_VERIFY},
	[MTLS_REASON_WEAK_SIGNATURE] = {"weak_signature", MTLS_CATEGORY_VERIFY},
	[MTLS_REASON_BAD_CERTIFICATE] = {"bad_certificate", MTLS_CATEGORY_VERIFY},
	[MTLS_REASON_PROTOCOL_VERSION] = {"protocol_version", MTLS_CATEGORY_PROTOCOL},
	[MTLS_REASON_NOT_TLS] = {"not_tls", MTLS_CATEGORY_PROTOCOL},
	[MTLS_REASON_TRUNCATED] = {"truncated", MTLS_CATEGORY_PROTOCOL},
	[MTLS_REASON_HANDSHAKE_FAILED] = {"handshake_failed", MTLS_CATEGORY_PROTOCOL},
	[MTLS_REASON_REJECTED_BY_PEER] = {"rejected_by_peer", MTLS_CATEGORY_PROTOCOL},
	[MTLS_REASON_TIMEOUT] = {"timeout", MTLS_CATEGORY_IO},
	[MTLS_REASON_KEY_MISMATCH] = {"key_mismatch", MTLS_CATEGORY_CONFIG},
	[MTLS_REASON_KEY_PERMISSIONS] = {"key_permissions", MTLS_CATEGORY_CONFIG},
	[MTLS_REASON_BAD_PEM] = {"bad_pem", MTLS_CATEGORY_CONFIG},
	[MTLS_REASON_BAD_PASSPHRASE] = {"bad_passphrase", MTLS_CATEGORY_CONFIG},
	[MTLS_REASON_FILE] = {"file", MTLS_CATEGORY_CONFIG},
	[MTLS_REASON_CONFIG] = {"config", MTLS_CATEGORY_CONFIG},
	[MTLS_REASON_IO] = {"io", MTLS_CATEGORY_IO},
	[MTLS_REASON_USAGE] = {"usage", MTLS_CATEGORY_USAGE},
	[MTLS_REASON_INTERNAL] = {"internal", MTLS_CATEGORY_INTERNAL},
	[MTLS_REASON_NONCONFORMING] = {"nonconforming", MTLS_CATEGORY_VERIFY},
	[MTLS_REASON_LEAF_IS_CA] = {"leaf_is_ca", MTLS_CATEGORY_VERIFY},
	[MTLS_REASON_ISSUER_NOT_SENT] = {"issuer_not_sent", MTLS_CATEGORY_VERIFY},
	[MTLS_REASON_MALFORMED] = {"malformed", MTLS_CATEGORY_PROTOCOL},
	[MTLS_REASON_CRL_INVALID] = {"crl_invalid", MTLS_CATEGORY_REVOKED},
	[MTLS_REASON_OCSP_MISSING] = {"ocsp_missing", MTLS_CATEGORY_REVOKED},
	[MTLS_REASON_OCSP_UNAVAILABLE] = {"ocsp_unavailable", MTLS_CATEGORY_REVOKED},
	[MTLS_REASON_OCSP_UNKNOWN] = {"ocsp_unknown", MTLS_CATEGORY_REVOKED},
	[MTLS_REASON_NO_APPLICATION_PROTOCOL] = {"no_application_protocol", MTLS_CATEGORY_PROTOCOL},
};

static const char *const categories[] = {
	[MTLS_CATEGORY_NONE] = "none",
	[MTLS_CATEGORY_VERIFY] = "verify",
	[MTLS_CATEGORY_AUTHZ] = "authz",
	[MTLS_CATEGORY_REVOKED] = "revoked",
	[MTLS_CATEGORY_PROTOCOL] = "protocol",
	[MTLS_CATEGORY_CONFIG] = "config",
	[MTLS_CATEGORY_IO] = "io",
	[MTLS_CATEGORY_USAGE] = "usage",
	[MTLS_CATEGORY_INTERNAL] = "internal",
};

const char *mtls_reason_name(enum mtls_reason reason)
{
	if ((unsigned)reason >= MTLS_REASON_COUNT)
		return "unknown";
	return reasons[reason].name;
}

enum mtls_reason mtls_reason_from_name(const char *name)
{
	if (name == NULL)
		return MTLS_REASON_NONE;
	for (int i = 0; i < MTLS_REASON_COUNT; i++)
		if (strcmp(reasons[i].name, name) == 0)
			return (enum mtls_reason)i;
	return MTLS_REASON_NONE;
}

enum mtls_category mtls_reason_category(enum mtls_reason reason)
{
	if ((unsigned)reason >= MTLS_REASON_COUNT)
		return MTLS_CATEGORY_INTERNAL;
	return reasons[reason].category;
}

const char *mtls_category_name(enum mtls_category category)
{
	if ((unsigned)category > MTLS_CATEGORY_INTERNAL)
		return "unknown";
	return categories[category];
}

void error_clear(struct error *err)
{
	err->reason = MTLS_REASON_NONE;
	err->msg[0] = '\0';
}

static void error_vset(struct error *err, enum mtls_reason reason, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));

static void error_vset(struct error *err, enum mtls_reason reason, const char *fmt, va_list ap)
{
	err->reason = reason;
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
}

int error_set(struct error *err, enum mtls_reason reason, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	error_vset(err, reason, fmt, ap);
	va_end(ap);
	ERR_clear_error();
	return -1;
}

int error_set_ssl(struct error *err, enum mtls_reason reason, const char *fmt, ...)
{
	va_list ap;
	unsigned long e;
	size_t used;

	va_start(ap, fmt);
	error_vset(err, reason, fmt, ap);
	va_end(ap);
	e = ERR_peek_error();
	used = strlen(err->msg);
	if (e != 0 && used + 3 < sizeof(err->msg)) {
		const char *why = ERR_reason_error_string(e);
		snprintf(err->msg + used, sizeof(err->msg) - used, ": %s",
			 why != NULL ? why : "unknown OpenSSL error");
	}
	ERR_clear_error();
	return -1;
}

const char *error_time(time_t t, char *buf, size_t len)
{
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "%lld", (long long)t);
	return buf;
}
