/*
 * mtls doctor: the local certificate, key and CA bundle. Each problem a peer would refuse
 * us for (or that stops our own side from loading) is found here, before any network: the
 * key does not match, the certificate is out of its validity (with the clock to compare),
 * lacks the extended key usage for its role, or its chain file is out of order.
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "certfields.h"
#include "doctor.h"
#include "pkcs11.h"

static int no_passphrase(char *buf, int size, int rwflag, void *arg)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)arg;
	return -1;
}

/* The private key of path, or NULL with why (an encrypted key is not asked a passphrase). */
static EVP_PKEY *read_key(const char *path, bool *encrypted, char *why, size_t len)
{
	BIO *bio = BIO_new_file(path, "r");
	EVP_PKEY *key;
	char head[64] = "";
	int n;

	*encrypted = false;
	if (bio == NULL) {
		snprintf(why, len, "cannot read %s: %s", path, strerror(errno));
		ERR_clear_error();
		return NULL;
	}
	key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
	if (key == NULL) {
		(void)BIO_reset(bio);
		while ((n = BIO_gets(bio, head, sizeof(head))) > 0)
			if (strstr(head, "ENCRYPTED") != NULL)
				*encrypted = true;
		snprintf(why, len,
			 *encrypted ? "%s is an encrypted key (the doctor asks no passphrase)"
				    : "%s holds no PEM private key (BEGIN PRIVATE KEY)",
			 path);
	}
	BIO_free(bio);
	ERR_clear_error();
	return key;
}

static const char *purpose_eku(int purpose)
{
	return purpose == X509_PURPOSE_SSL_CLIENT ? "clientAuth" : "serverAuth";
}

bool doctor_local_chains_to(STACK_OF(X509) * chain, STACK_OF(X509) * cas, int purpose)
{
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	STACK_OF(X509) *untrusted = chain != NULL ? sk_X509_dup(chain) : NULL;
	bool ok = false;

	if (store != NULL && ctx != NULL && untrusted != NULL && cas != NULL) {
		for (int i = 0; i < sk_X509_num(cas); i++)
			X509_STORE_add_cert(store, sk_X509_value(cas, i));
		X509_STORE_set_flags(store, X509_V_FLAG_NO_CHECK_TIME | X509_V_FLAG_PARTIAL_CHAIN);
		(void)sk_X509_shift(untrusted);
		if (X509_STORE_CTX_init(ctx, store, sk_X509_value(chain, 0), untrusted) == 1) {
			X509_STORE_CTX_set_purpose(ctx, purpose);
			ok = X509_verify_cert(ctx) == 1;
		}
	}
	sk_X509_free(untrusted);
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	ERR_clear_error();
	return ok;
}

static void check_validity(X509 *leaf, const char *path, time_t now, struct doctor_report *r)
{
	time_t nb = certfields_time(X509_get0_notBefore(leaf));
	time_t na = certfields_time(X509_get0_notAfter(leaf));
	char a[32], b[32];

	if (now < nb)
		doctor_report_add(r, DOCTOR_FAIL, "cert-time",
				  "check this host's clock (timedatectl; NTP) and the CA host's; "
				  "or wait until it starts",
				  "%s is not valid yet: it starts at %s and this host's clock says "
				  "%s (%lld minutes before)",
				  path, doctor_time(nb, a, sizeof(a)),
				  doctor_time(now, b, sizeof(b)),
				  (long long)((nb - now + 59) / 60));
	else if (now > na)
		doctor_report_add(r, DOCTOR_FAIL, "cert-time",
				  "renew it (mtls renew, or mtls ca issue again) and give the new "
				  "files",
				  "%s expired at %s (%lld days ago)", path,
				  doctor_time(na, a, sizeof(a)), (long long)((now - na) / 86400));
	else if (na - now < 7 * 86400)
		doctor_report_add(r, DOCTOR_WARN, "cert-time", "renew it soon (mtls renew)",
				  "%s expires at %s, in %lld hours", path,
				  doctor_time(na, a, sizeof(a)), (long long)((na - now) / 3600));
	else
		doctor_report_add(r, DOCTOR_OK, "cert-time", NULL,
				  "%s valid until %s (%lld days left)", path,
				  doctor_time(na, a, sizeof(a)), (long long)((na - now) / 86400));
}

/* Each certificate of the file is issued by the next one (the order a peer expects). */
static void check_order(STACK_OF(X509) * chain, const char *path, struct doctor_report *r)
{
	char s[512], i[512];

	for (int k = 0; k + 1 < sk_X509_num(chain); k++) {
		X509 *child = sk_X509_value(chain, k), *parent = sk_X509_value(chain, k + 1);
		EVP_PKEY *pk = X509_get0_pubkey(parent);

		if (X509_check_issued(parent, child) != X509_V_OK || pk == NULL ||
		    X509_verify(child, pk) != 1) {
			doctor_report_add(
				r, DOCTOR_FAIL, "cert-chain",
				"put the leaf first, then its issuing CA, then that CA's issuer",
				"in %s, certificate %d (%s) is not issued by certificate %d (%s)",
				path, k + 1,
				doctor_name(X509_get_subject_name(child), s, sizeof(s)), k + 2,
				doctor_name(X509_get_subject_name(parent), i, sizeof(i)));
			ERR_clear_error();
			return;
		}
	}
	ERR_clear_error();
}

void doctor_local_check(struct doctor_local *l, int purpose, time_t now, struct doctor_report *r)
{
	char why[600], s[512], i[512];
	EVP_PKEY *key = NULL;
	bool encrypted = false;
	struct stat sb;
	X509 *leaf;

	if (l->ca_path != NULL) {
		l->cas = doctor_read_certs(l->ca_path, why, sizeof(why));
		if (l->cas == NULL)
			doctor_report_add(
				r, DOCTOR_FAIL, "ca-file",
				"give the CA bundle (PEM) that issued the peer's certificate", "%s",
				why);
		else {
			int notca = -1;

			for (int k = 0; k < sk_X509_num(l->cas) && notca < 0; k++)
				if (!(X509_get_extension_flags(sk_X509_value(l->cas, k)) &
				      EXFLAG_CA))
					notca = k;
			if (notca >= 0)
				doctor_report_add(r, DOCTOR_FAIL, "ca-file",
						  "give the CA bundle, not a leaf certificate",
						  "%s holds a certificate that is not a CA (%s); "
						  "libmtls refuses it",
						  l->ca_path,
						  doctor_name(X509_get_subject_name(
								      sk_X509_value(l->cas, notca)),
							      s, sizeof(s)));
			else
				doctor_report_add(
					r, DOCTOR_OK, "ca-file", NULL,
					"%s holds %d CA certificate%s, first %s", l->ca_path,
					sk_X509_num(l->cas), sk_X509_num(l->cas) == 1 ? "" : "s",
					doctor_name(X509_get_subject_name(sk_X509_value(l->cas, 0)),
						    s, sizeof(s)));
		}
	}
	if (l->cert_path == NULL && l->key_path == NULL)
		return;
	if (l->cert_path == NULL || l->key_path == NULL) {
		doctor_report_add(r, DOCTOR_FAIL, "cert", "give both --cert and --key",
				  "a certificate needs its key and a key its certificate");
		return;
	}
	l->chain = doctor_read_certs(l->cert_path, why, sizeof(why));
	if (l->chain == NULL) {
		doctor_report_add(r, DOCTOR_FAIL, "cert",
				  "give the certificate chain file (PEM, leaf first)", "%s", why);
		return;
	}
	leaf = sk_X509_value(l->chain, 0);
	doctor_report_add(r, DOCTOR_OK, "cert", NULL, "%s: %s, issued by %s", l->cert_path,
			  doctor_name(X509_get_subject_name(leaf), s, sizeof(s)),
			  doctor_name(X509_get_issuer_name(leaf), i, sizeof(i)));
	if (pkcs11_is_uri(l->key_path)) { /* no file: the load check opens the token */
		l->usable = true;
		doctor_report_add(r, DOCTOR_OK, "key", NULL,
				  "%s: a key on a PKCS#11 token (no file to read)", l->key_path);
	} else if ((key = read_key(l->key_path, &encrypted, why, sizeof(why))) == NULL)
		doctor_report_add(r, encrypted ? DOCTOR_WARN : DOCTOR_FAIL, "key",
				  encrypted ? NULL
					    : "give the private key file of this certificate",
				  "%s", why);
	else if (X509_check_private_key(leaf, key) != 1)
		doctor_report_add(r, DOCTOR_FAIL, "key",
				  "give the key that was made with this certificate (or issue a "
				  "certificate for this key)",
				  "%s does not match the certificate in %s", l->key_path,
				  l->cert_path);
	else {
		l->usable = true;
		if (!l->key_mode_elsewhere && stat(l->key_path, &sb) == 0 && (sb.st_mode & 077))
			doctor_report_add(
				r, DOCTOR_WARN, "key", NULL,
				"%s matches, but is readable by group or others (mode "
				"%04o): libmtls refuses it unless the group is the user's "
				"own; run chmod 600 %s",
				l->key_path, (unsigned)(sb.st_mode & 07777), l->key_path);
		else
			doctor_report_add(r, DOCTOR_OK, "key", NULL, "%s matches the certificate",
					  l->key_path);
	}
	EVP_PKEY_free(key);
	ERR_clear_error();
	check_validity(leaf, l->cert_path, now, r);
	if (X509_check_purpose(leaf, purpose, 0) != 1)
		doctor_report_add(r, DOCTOR_FAIL, "cert-usage",
				  purpose == X509_PURPOSE_SSL_CLIENT
					  ? "issue a client certificate (mtls ca issue --profile "
					    "client, or a token of the client profile)"
					  : "issue a server certificate (profile server)",
				  "%s has no %s in its extendedKeyUsage: a peer refuses it "
				  "(unsupported certificate)",
				  l->cert_path, purpose_eku(purpose));
	else
		doctor_report_add(r, DOCTOR_OK, "cert-usage", NULL, "%s may be used for %s",
				  l->cert_path, purpose_eku(purpose));
	ERR_clear_error();
	check_order(l->chain, l->cert_path, r);
	if (l->cas != NULL && purpose == X509_PURPOSE_SSL_SERVER) {
		if (doctor_local_chains_to(l->chain, l->cas, purpose))
			doctor_report_add(r, DOCTOR_OK, "cert-chain", NULL,
					  "%s leads to a CA of %s", l->cert_path, l->ca_path);
		else
			doctor_report_add(
				r, DOCTOR_WARN, "cert-chain",
				"if clients trust the same bundle, add the issuing CA to "
				"--cert after the leaf, or use the certificate of this CA",
				"%s does not lead to a CA of %s (issuer %s)", l->cert_path,
				l->ca_path,
				doctor_name(X509_get_issuer_name(sk_X509_value(
						    l->chain, sk_X509_num(l->chain) - 1)),
					    s, sizeof(s)));
	}
}

void doctor_local_free(struct doctor_local *l)
{
	sk_X509_pop_free(l->chain, X509_free);
	sk_X509_pop_free(l->cas, X509_free);
	l->chain = l->cas = NULL;
}
