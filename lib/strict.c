/*
 * The strict certificate profile: what every certificate of a chain libmtls accepts must
 * look like, beyond what OpenSSL 3.0 enforces even with X509_V_FLAG_X509_STRICT (which
 * verify_setup() turns on; the errors it finds are worded here too).
 *
 * RFC 5280 as a profile for private mTLS PKIs, as this project's CA issues: positive serials
 * of at most 20 octets, key identifiers, CA certificates with critical basicConstraints and
 * keyCertSign, end entities that cannot sign certificates or CRLs, names in the
 * subjectAltName that parse (host names, 4 or 16 octet addresses, absolute URIs, email
 * addresses), and name constraints applied to every SAN type, wildcards and the host of a URI
 * included (OpenSSL takes a URI's host to end at the first ':', so
 * "https://good.test:x@evil.test/" passes a "permitted good.test" constraint there, and a
 * wildcard "*.test" passes "excluded evil.test"), to other spellings of a name (a URI host
 * with a trailing dot or a %-escape, an IPv4 address written as IPv4-mapped IPv6), and to
 * the leaf's CN, which is an identity here (--allow-cn).
 *
 * Deciding and wording are apart: strict_chain() and strict_leaf() return a finding (the
 * rule and the certificate); strict_explain() turns it into the message.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include <openssl/x509v3.h>

#include "internal.h"

/* A name as it appears in a certificate: bytes and length (not NUL-terminated). */
struct name {
	const unsigned char *p;
	size_t n;
};

static struct name name_of(const ASN1_STRING *s)
{
	return (struct name){ASN1_STRING_get0_data(s), (size_t)ASN1_STRING_length(s)};
}

static void finding(struct strict_finding *f, enum strict_rule rule, int depth, X509 *cert)
{
	memset(f, 0, sizeof(*f));
	f->rule = rule;
	f->depth = depth;
	f->cert = cert;
}

/* The name, printable, for a message (anything else becomes '?'). */
static void finding_name(struct strict_finding *f, const char *kind, struct name s)
{
	size_t i;

	snprintf(f->kind, sizeof(f->kind), "%s", kind);
	for (i = 0; i < s.n && i < sizeof(f->name) - 1; i++)
		f->name[i] = s.p[i] >= 0x20 && s.p[i] < 0x7f ? (char)s.p[i] : '?';
	f->name[i] = '\0';
}

/* --- names ---------------------------------------------------------------------------- */

static bool ldh(unsigned char c)
{
	return isalnum(c) || c == '-';
}

/* A host name: LDH labels of 1 to 63, at most 253 in all, no empty label (so no leading or
 * trailing dot), a wildcard only as the whole leftmost label of a name with more labels. */
bool strict_dns_name_ok(const unsigned char *p, size_t n)
{
	size_t label = 0, i = 0;

	if (n == 0 || n > 253)
		return false;
	if (n >= 2 && p[0] == '*' && p[1] == '.')
		i = 2;
	if (i == n)
		return false;
	for (; i < n; i++) {
		if (p[i] == '.') {
			if (label == 0 || p[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (!ldh(p[i]) || (p[i] == '-' && label == 0) || ++label > 63)
			return false;
	}
	return label > 0 && p[n - 1] != '-';
}

static bool uri_char(unsigned char c)
{
	/* RFC 3986 unreserved, gen-delims and sub-delims; '%' is checked apart */
	return isalnum(c) || (c != '\0' && strchr("-._~:/?#[]@!$&'()*+,;=", c) != NULL);
}

/* Where the host of an absolute URI is: 0 and *host set, or -1 if s is not an absolute URI
 * (scheme ":" hier-part, RFC 3986 4.3). A URI without an authority has host.n == 0. */
static int uri_parse(struct name s, struct name *host)
{
	size_t i = 0, auth, end, at, hb, he;

	*host = (struct name){NULL, 0};
	if (s.n == 0 || !isalpha(s.p[0]))
		return -1;
	while (i < s.n && (isalnum(s.p[i]) || s.p[i] == '+' || s.p[i] == '-' || s.p[i] == '.'))
		i++;
	if (i == s.n || s.p[i] != ':' || i + 1 == s.n)
		return -1;
	for (size_t j = i + 1; j < s.n; j++) {
		if (s.p[j] == '%') {
			if (j + 2 >= s.n || !isxdigit(s.p[j + 1]) || !isxdigit(s.p[j + 2]))
				return -1;
			j += 2;
		} else if (!uri_char(s.p[j])) {
			return -1;
		}
	}
	if (s.n - i < 3 || s.p[i + 1] != '/' || s.p[i + 2] != '/')
		return 0; /* no authority: urn:, mailto: */
	auth = i + 3;
	for (end = auth; end < s.n && s.p[end] != '/' && s.p[end] != '?' && s.p[end] != '#'; end++)
		;
	hb = auth;
	for (at = auth; at < end; at++)
		if (s.p[at] == '@')
			hb = at + 1; /* the host follows the last '@' of the authority */
	if (hb < end && s.p[hb] == '[') {
		for (he = hb; he < end && s.p[he] != ']'; he++)
			;
		if (he == end)
			return -1;
		he++;
	} else {
		for (he = hb; he < end && s.p[he] != ':'; he++)
			;
	}
	if (he == hb)
		return -1; /* an authority with no host names nobody */
	*host = (struct name){s.p + hb, he - hb};
	return 0;
}

bool strict_uri_ok(const unsigned char *p, size_t n)
{
	struct name host;

	return uri_parse((struct name){p, n}, &host) == 0;
}

static bool atext(unsigned char c)
{
	/* RFC 5322 3.2.3 */
	return isalnum(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* A Mailbox of RFC 5321 4.1.2 as RFC 5280 4.2.1.6 wants it, without the quoted local part
 * (which certificates do not need, and which would let any byte in): a dot-string of
 * atext, one '@', and a host name (no wildcard) as the domain. */
bool strict_email_ok(const unsigned char *p, size_t n)
{
	const unsigned char *at = n > 0 ? memchr(p, '@', n) : NULL;
	size_t local;

	if (at == NULL || at == p)
		return false;
	local = (size_t)(at - p);
	for (size_t i = 0; i < local; i++)
		if (p[i] == '.' ? i == 0 || i == local - 1 || p[i - 1] == '.' : !atext(p[i]))
			return false;
	return n - local - 1 > 0 && at[1] != '*' && strict_dns_name_ok(at + 1, n - local - 1);
}

/* --- name constraints ------------------------------------------------------------------ */

static bool ieq(const unsigned char *a, const unsigned char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (tolower(a[i]) != tolower(b[i]))
			return false;
	return true;
}

/* name is base or below it (RFC 5280 4.2.1.10 for dNSName: labels added on the left; a base
 * with a leading '.' stands for the names strictly below it, as OpenSSL reads it). */
static bool dns_within(struct name name, struct name base)
{
	bool below_only = base.n > 0 && base.p[0] == '.';

	if (base.n == 0)
		return true;
	if (below_only) {
		base.p++;
		base.n--;
	}
	if (name.n == base.n)
		return !below_only && ieq(name.p, base.p, base.n);
	return name.n > base.n && name.p[name.n - base.n - 1] == '.' &&
	       ieq(name.p + name.n - base.n, base.p, base.n);
}

/* Could a name the wildcard "*.rest" stands for (one more label) be within base? */
static bool wildcard_meets(struct name rest, struct name base)
{
	struct name star = {rest.p - 2, rest.n + 2}; /* "*.rest" */
	const unsigned char *dot;

	if (dns_within(star, base))
		return true; /* all of them are */
	if (base.n == 0 || base.p[0] == '.' || base.n <= rest.n + 1)
		return false;
	/* base is one label above rest: "evil.test" against "*.test" */
	dot = memchr(base.p, '.', base.n);
	return dot != NULL && (size_t)(dot - base.p) + 1 + rest.n == base.n &&
	       ieq(dot + 1, rest.p, rest.n);
}

static bool host_within_uri_base(struct name host, struct name base)
{
	/* a URI constraint names a host, or with a leading '.' the hosts below a domain */
	if (base.n > 0 && base.p[0] == '.')
		return host.n > base.n && ieq(host.p + host.n - base.n, base.p, base.n);
	return host.n == base.n && ieq(host.p, base.p, base.n);
}

static bool email_within(struct name mail, struct name base)
{
	const unsigned char *at = memchr(mail.p, '@', mail.n);
	struct name domain;

	if (at == NULL)
		return false;
	if (memchr(base.p, '@', base.n) != NULL) /* a whole mailbox */
		return mail.n == base.n && memcmp(mail.p, base.p, (size_t)(at - mail.p)) == 0 &&
		       ieq(at, base.p + (at - mail.p), mail.n - (size_t)(at - mail.p));
	domain = (struct name){at + 1, mail.n - (size_t)(at - mail.p) - 1};
	if (base.n > 0 && base.p[0] == '.')
		return domain.n > base.n && ieq(domain.p + domain.n - base.n, base.p, base.n);
	return domain.n == base.n && ieq(domain.p, base.p, base.n);
}

/* An IPv4-mapped IPv6 address (::ffff:a.b.c.d) reaches the IPv4 host a.b.c.d: to an
 * excluded IPv4 subtree it is that address, and an IPv4 address is its mapped form to an
 * excluded IPv6 subtree. A permitted subtree holds only addresses of its own length, as
 * OpenSSL reads it (so a mapped address is outside every permitted IPv4 subtree). */
static const unsigned char v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static bool ip_within(struct name ip, struct name base, bool excluded)
{
	unsigned char mapped[16];
	size_t n;

	if (excluded && ip.n == 16 && base.n == 8 && memcmp(ip.p, v4_mapped, 12) == 0) {
		ip = (struct name){ip.p + 12, 4};
	} else if (excluded && ip.n == 4 && base.n == 32) {
		memcpy(mapped, v4_mapped, 12);
		memcpy(mapped + 12, ip.p, 4);
		ip = (struct name){mapped, 16};
	}
	n = ip.n;

	if (base.n != 2 * n)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((ip.p[i] & base.p[n + i]) != (base.p[i] & base.p[n + i]))
			return false;
	return true;
}

/* Does the name n of this type fall within the subtree base (same type)? For an excluded
 * subtree, "within" also means "a name it stands for could be", which matters for a
 * wildcard, and for a URI host spelled so that it compares unlike the host it names. */
static bool within(int type, struct name n, const GENERAL_NAME *base, bool excluded)
{
	struct name b, host;

	if (type != GEN_DNS && type != GEN_URI && type != GEN_EMAIL && type != GEN_IPADD)
		return false;
	b = name_of(base->d.ia5); /* the same member for these four */
	switch (type) {
	case GEN_DNS:
		if (excluded && n.n > 2 && n.p[0] == '*' && n.p[1] == '.')
			return wildcard_meets((struct name){n.p + 2, n.n - 2}, b);
		return dns_within(n, b);
	case GEN_URI:
		if (uri_parse(n, &host) != 0 || host.n == 0)
			return false;
		/* "evil.test." and "evil%2etest" are evil.test to a resolver: such a host is
		 * outside every permitted URI subtree and inside every excluded one */
		if (host.p[host.n - 1] == '.' || memchr(host.p, '%', host.n) != NULL)
			return excluded;
		return host_within_uri_base(host, b);
	case GEN_EMAIL: return email_within(n, b);
	case GEN_IPADD: return ip_within(n, b, excluded);
	default: return false;
	}
}

static const char *type_name(int type)
{
	return type == GEN_DNS	   ? "DNS name"
	       : type == GEN_URI   ? "URI"
	       : type == GEN_EMAIL ? "email address"
				   : "IP address";
}

static void ip_text(struct strict_finding *f, struct name ip)
{
	snprintf(f->kind, sizeof(f->kind), "IP address");
	if ((ip.n != 4 && ip.n != 16) ||
	    inet_ntop(ip.n == 4 ? AF_INET : AF_INET6, ip.p, f->name, sizeof(f->name)) == NULL)
		snprintf(f->name, sizeof(f->name), "(%zu octets)", ip.n);
}

/* One name against one CA's constraints: permitted subtrees of its type (if there are any)
 * must hold it, excluded ones must not. */
static bool name_allowed(int type, struct name n, const NAME_CONSTRAINTS *nc)
{
	bool typed = false, in = false;

	for (int i = 0; i < sk_GENERAL_SUBTREE_num(nc->permittedSubtrees); i++) {
		const GENERAL_SUBTREE *t = sk_GENERAL_SUBTREE_value(nc->permittedSubtrees, i);

		if (t->base->type != type)
			continue;
		typed = true;
		in = in || within(type, n, t->base, false);
	}
	if (typed && !in)
		return false;
	for (int i = 0; i < sk_GENERAL_SUBTREE_num(nc->excludedSubtrees); i++) {
		const GENERAL_SUBTREE *t = sk_GENERAL_SUBTREE_value(nc->excludedSubtrees, i);

		if (t->base->type == type && within(type, n, t->base, true))
			return false;
	}
	return true;
}

static bool has_subtrees(const NAME_CONSTRAINTS *nc, int type)
{
	for (int i = 0; i < sk_GENERAL_SUBTREE_num(nc->permittedSubtrees); i++)
		if (sk_GENERAL_SUBTREE_value(nc->permittedSubtrees, i)->base->type == type)
			return true;
	for (int i = 0; i < sk_GENERAL_SUBTREE_num(nc->excludedSubtrees); i++)
		if (sk_GENERAL_SUBTREE_value(nc->excludedSubtrees, i)->base->type == type)
			return true;
	return false;
}

/* The leaf's CNs under one CA's name constraints. OpenSSL checks a CN that looks like a
 * host name against DNS constraints, but not with X509_CHECK_FLAG_NEVER_CHECK_SUBJECT,
 * which verify_setup() sets; and a CN is an identity here (--allow-cn, or the identity of a
 * certificate without URI and DNS SANs). So under name constraints every CN must be a host
 * name within the CA's DNS subtrees or an email address within its email subtrees, and the
 * CA must have subtrees of that type: else a CA constrained to other names, or a CN that is
 * neither, would let the CA mint any CN. */
static int check_cn(X509 *leaf, X509 *ca, const NAME_CONSTRAINTS *nc, struct strict_finding *f)
{
	const X509_NAME *subject = X509_get_subject_name(leaf);
	int i = -1, rc = 0;

	while (rc == 0 && (i = X509_NAME_get_index_by_NID(subject, NID_commonName, i)) >= 0) {
		const ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i));
		unsigned char *utf8 = NULL;
		int len = ASN1_STRING_to_UTF8(&utf8, s);
		struct name cn = {utf8, len > 0 ? (size_t)len : 0};
		int type = strict_dns_name_ok(cn.p, cn.n) ? GEN_DNS
			   : strict_email_ok(cn.p, cn.n)  ? GEN_EMAIL
							  : GEN_OTHERNAME;
		enum strict_rule rule = 0;

		/* an empty CN is no name (identity.c) */
		if (len != 0 && (len < 0 || type == GEN_OTHERNAME || !has_subtrees(nc, type)))
			rule = STRICT_CN_UNCONSTRAINED;
		else if (len > 0 && !name_allowed(type, cn, nc))
			rule = STRICT_NAME_CONSTRAINTS;
		if (rule != 0) {
			finding(f, rule, 0, leaf);
			finding_name(f, "CN", cn);
			f->ca = ca;
			rc = -1;
		}
		OPENSSL_free(utf8);
	}
	return rc;
}

static int check_constraints(STACK_OF(X509) * chain, struct strict_finding *f)
{
	int n = sk_X509_num(chain);

	for (int j = n - 1; j >= 1; j--) {
		X509 *ca = sk_X509_value(chain, j);
		NAME_CONSTRAINTS *nc = X509_get_ext_d2i(ca, NID_name_constraints, NULL, NULL);
		int rc = 0;

		if (nc == NULL)
			continue;
		for (int i = j - 1; i >= 0 && rc == 0; i--) {
			X509 *cert = sk_X509_value(chain, i);
			GENERAL_NAMES *sans;

			/* RFC 5280 4.2.1.10: not on self-issued intermediates */
			if (i > 0 && (X509_get_extension_flags(cert) & EXFLAG_SI))
				continue;
			sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
			for (int k = 0; k < sk_GENERAL_NAME_num(sans) && rc == 0; k++) {
				const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, k);

				if ((g->type == GEN_DNS || g->type == GEN_URI ||
				     g->type == GEN_EMAIL || g->type == GEN_IPADD) &&
				    !name_allowed(g->type, name_of(g->d.ia5), nc)) {
					finding(f, STRICT_NAME_CONSTRAINTS, i, cert);
					if (g->type == GEN_IPADD)
						ip_text(f, name_of(g->d.iPAddress));
					else
						finding_name(f, type_name(g->type),
							     name_of(g->d.ia5));
					f->ca = ca;
					rc = -1;
				}
			}
			GENERAL_NAMES_free(sans);
			if (i == 0 && rc == 0)
				rc = check_cn(cert, ca, nc, f);
		}
		NAME_CONSTRAINTS_free(nc);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* --- one certificate ------------------------------------------------------------------- */

static int check_serial(X509 *cert, int depth, struct strict_finding *f)
{
	const ASN1_INTEGER *s = X509_get0_serialNumber(cert);
	const unsigned char *p = ASN1_STRING_get0_data(s);
	int n = ASN1_STRING_length(s);
	bool zero = true;

	for (int i = 0; i < n; i++)
		zero = zero && p[i] == 0;
	if (ASN1_STRING_type(s) == V_ASN1_NEG_INTEGER || zero) {
		finding(f, STRICT_SERIAL_NOT_POSITIVE, depth, cert);
		return -1;
	}
	/* the DER content octets: the magnitude, and a zero octet before a high bit */
	if (n + (p[0] & 0x80 ? 1 : 0) > 20) {
		finding(f, STRICT_SERIAL_TOO_LONG, depth, cert);
		return -1;
	}
	return 0;
}

static bool has_control(struct name s)
{
	for (size_t i = 0; i < s.n; i++)
		if (s.p[i] < 0x20 || s.p[i] == 0x7f)
			return true;
	return false;
}

static int check_names(X509 *cert, int depth, struct strict_finding *f)
{
	int crit = -1;
	GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);
	bool empty_subject = X509_NAME_entry_count(X509_get_subject_name(cert)) == 0;
	int rc = 0;

	if (sans == NULL && crit != -1) {
		finding(f, STRICT_SAN_EMPTY, depth, cert); /* present but undecodable */
		return -1;
	}
	if (empty_subject && (sans == NULL || crit != 1)) {
		finding(f, STRICT_EMPTY_SUBJECT, depth, cert);
		rc = -1;
	} else if (sans != NULL && sk_GENERAL_NAME_num(sans) == 0) {
		finding(f, STRICT_SAN_EMPTY, depth, cert);
		rc = -1;
	}
	for (int i = 0; i < sk_GENERAL_NAME_num(sans) && rc == 0; i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
		struct name s;

		/* a NUL or control byte inside a name is identity.c's to refuse
		 * (bad_certificate): it is an attack on matchers and log lines, not a lapse of
		 * profile */
		if ((g->type == GEN_DNS || g->type == GEN_URI || g->type == GEN_EMAIL) &&
		    has_control(name_of(g->d.ia5)))
			continue;
		switch (g->type) {
		case GEN_DNS:
			s = name_of(g->d.dNSName);
			if (!strict_dns_name_ok(s.p, s.n)) {
				finding(f, STRICT_DNS_NAME, depth, cert);
				finding_name(f, "DNS name", s);
				rc = -1;
			}
			break;
		case GEN_IPADD:
			s = name_of(g->d.iPAddress);
			if (s.n != 4 && s.n != 16) {
				finding(f, STRICT_IP_LENGTH, depth, cert);
				snprintf(f->name, sizeof(f->name), "%zu", s.n);
				rc = -1;
			}
			break;
		case GEN_URI:
			s = name_of(g->d.uniformResourceIdentifier);
			if (!strict_uri_ok(s.p, s.n)) {
				finding(f, STRICT_URI, depth, cert);
				finding_name(f, "URI", s);
				rc = -1;
			}
			break;
		case GEN_EMAIL:
			s = name_of(g->d.rfc822Name);
			if (!strict_email_ok(s.p, s.n)) {
				finding(f, STRICT_EMAIL, depth, cert);
				finding_name(f, "email address", s);
				rc = -1;
			}
			break;
		default: break;
		}
	}
	GENERAL_NAMES_free(sans);
	return rc;
}

static int check_cert(X509 *cert, int depth, bool leaf, struct strict_finding *f)
{
	uint32_t flags = X509_get_extension_flags(cert);
	uint32_t ku = X509_get_key_usage(cert);
	const ASN1_OCTET_STRING *akid = X509_get0_authority_key_id(cert);
	int crit = -1;
	BASIC_CONSTRAINTS *bc;

	if (leaf && (flags & EXFLAG_BCONS) && (flags & EXFLAG_CA)) {
		finding(f, STRICT_LEAF_IS_CA, depth, cert);
		return -1;
	}
	if (check_serial(cert, depth, f) != 0)
		return -1;
	if (!(flags & EXFLAG_SS) && (akid == NULL || ASN1_STRING_length(akid) == 0)) {
		finding(f, STRICT_NO_AKI, depth, cert);
		return -1;
	}
	if (leaf) {
		if ((flags & EXFLAG_KUSAGE) && (ku & (KU_KEY_CERT_SIGN | KU_CRL_SIGN))) {
			finding(f, STRICT_LEAF_KEY_USAGE, depth, cert);
			return -1;
		}
	} else {
		bc = X509_get_ext_d2i(cert, NID_basic_constraints, &crit, NULL);
		if (bc == NULL || !bc->ca || crit != 1) {
			BASIC_CONSTRAINTS_free(bc);
			finding(f, STRICT_CA_BASIC_CONSTRAINTS, depth, cert);
			return -1;
		}
		BASIC_CONSTRAINTS_free(bc);
		if (!(flags & EXFLAG_KUSAGE) || !(ku & KU_KEY_CERT_SIGN)) {
			finding(f, STRICT_CA_KEY_USAGE, depth, cert);
			return -1;
		}
		if (X509_get0_subject_key_id(cert) == NULL) {
			finding(f, STRICT_CA_NO_SKI, depth, cert);
			return -1;
		}
	}
	return check_names(cert, depth, f);
}

int strict_chain(STACK_OF(X509) * chain, struct strict_finding *f)
{
	for (int i = 0; i < sk_X509_num(chain); i++)
		if (check_cert(sk_X509_value(chain, i), i, i == 0, f) != 0)
			return -1;
	return check_constraints(chain, f);
}

int strict_leaf(X509 *leaf, bool peer_is_client, bool server_eku_ok, struct strict_finding *f)
{
	uint32_t flags = X509_get_extension_flags(leaf);
	uint32_t want = peer_is_client ? XKU_SSL_CLIENT : XKU_SSL_SERVER;

	if (peer_is_client && server_eku_ok)
		want |= XKU_SSL_SERVER; /* mtls_config_insecure_server_eku_clients() */

	/* OpenSSL's purpose check takes a CA for a leaf */
	if ((flags & EXFLAG_BCONS) && (flags & EXFLAG_CA)) {
		finding(f, STRICT_LEAF_IS_CA, 0, leaf);
		return -1;
	}
	/* the role's own EKU: OpenSSL accepts no EKU at all; anyExtendedKeyUsage alone sets
	 * no XKU_SSL_* bit, so it does not count either */
	if (!(flags & EXFLAG_XKUSAGE) || !(X509_get_extended_key_usage(leaf) & want)) {
		finding(f, STRICT_LEAF_EKU, 0, leaf);
		return -1;
	}
	return 0;
}

/* --- OpenSSL's strict mode ------------------------------------------------------------- */

static const struct {
	int x509_error;
	enum strict_rule rule;
} openssl_rules[] = {
	{X509_V_ERR_PATHLEN_INVALID_FOR_NON_CA, STRICT_PATHLEN},
	{X509_V_ERR_PATHLEN_WITHOUT_KU_KEY_CERT_SIGN, STRICT_PATHLEN},
	{X509_V_ERR_KU_KEY_CERT_SIGN_INVALID_FOR_NON_CA, STRICT_LEAF_KEY_USAGE},
	{X509_V_ERR_ISSUER_NAME_EMPTY, STRICT_ISSUER_EMPTY},
	{X509_V_ERR_SUBJECT_NAME_EMPTY, STRICT_EMPTY_SUBJECT},
	{X509_V_ERR_MISSING_AUTHORITY_KEY_IDENTIFIER, STRICT_NO_AKI},
	{X509_V_ERR_MISSING_SUBJECT_KEY_IDENTIFIER, STRICT_CA_NO_SKI},
	{X509_V_ERR_EMPTY_SUBJECT_ALT_NAME, STRICT_SAN_EMPTY},
	{X509_V_ERR_EMPTY_SUBJECT_SAN_NOT_CRITICAL, STRICT_EMPTY_SUBJECT},
	{X509_V_ERR_CA_BCONS_NOT_CRITICAL, STRICT_CA_BASIC_CONSTRAINTS},
	{X509_V_ERR_AUTHORITY_KEY_IDENTIFIER_CRITICAL, STRICT_KEY_ID_CRITICAL},
	{X509_V_ERR_SUBJECT_KEY_IDENTIFIER_CRITICAL, STRICT_KEY_ID_CRITICAL},
	{X509_V_ERR_CA_CERT_MISSING_KEY_USAGE, STRICT_CA_KEY_USAGE},
	{X509_V_ERR_EXTENSIONS_REQUIRE_VERSION_3, STRICT_VERSION},
	{X509_V_ERR_EC_KEY_EXPLICIT_PARAMS, STRICT_EC_EXPLICIT},
	{X509_V_ERR_SIGNATURE_ALGORITHM_INCONSISTENCY, STRICT_SIGNATURE_ALGORITHM},
	{X509_V_ERR_PERMITTED_VIOLATION, STRICT_NAME_CONSTRAINTS},
	{X509_V_ERR_EXCLUDED_VIOLATION, STRICT_NAME_CONSTRAINTS},
	{X509_V_ERR_SUBTREE_MINMAX, STRICT_NAME_CONSTRAINTS},
	{X509_V_ERR_UNSUPPORTED_CONSTRAINT_TYPE, STRICT_NAME_CONSTRAINTS},
	{X509_V_ERR_UNSUPPORTED_CONSTRAINT_SYNTAX, STRICT_NAME_CONSTRAINTS},
	{X509_V_ERR_UNSUPPORTED_NAME_SYNTAX, STRICT_NAME_CONSTRAINTS},
};

int strict_of_x509_error(int x509_error, int depth, X509 *cert, STACK_OF(X509) * chain,
			 struct strict_finding *f)
{
	for (size_t i = 0; i < sizeof(openssl_rules) / sizeof(openssl_rules[0]); i++) {
		if (openssl_rules[i].x509_error != x509_error)
			continue;
		/* a CA certificate as the leaf: that is what is wrong with it, whatever else */
		if (depth == 0 && cert != NULL &&
		    (X509_get_extension_flags(cert) & (EXFLAG_BCONS | EXFLAG_CA)) ==
			    (EXFLAG_BCONS | EXFLAG_CA)) {
			finding(f, STRICT_LEAF_IS_CA, 0, cert);
			return 0;
		}
		/* our own check of the names says which one broke the constraints */
		if (openssl_rules[i].rule == STRICT_NAME_CONSTRAINTS && chain != NULL &&
		    check_constraints(chain, f) != 0)
			return 0;
		finding(f, openssl_rules[i].rule, depth, cert);
		return 0;
	}
	return -1;
}

/* --- messages -------------------------------------------------------------------------- */

static const char *rule_text(const struct strict_finding *f, char *buf, size_t len)
{
	switch (f->rule) {
	case STRICT_SERIAL_NOT_POSITIVE:
		return "serial number is zero or negative (RFC 5280 4.1.2.2)";
	case STRICT_SERIAL_TOO_LONG:
		return "serial number is longer than 20 octets (RFC 5280 4.1.2.2)";
	case STRICT_NO_AKI:
		return "it has no authorityKeyIdentifier with a keyIdentifier (RFC 5280 4.2.1.1)";
	case STRICT_CA_NO_SKI:
		return "a CA certificate without subjectKeyIdentifier (RFC 5280 4.2.1.2)";
	case STRICT_CA_BASIC_CONSTRAINTS:
		return "a CA certificate whose basicConstraints is missing, not CA:TRUE or not "
		       "critical (RFC 5280 4.2.1.9)";
	case STRICT_CA_KEY_USAGE:
		return "a CA certificate whose keyUsage is missing or lacks keyCertSign (RFC 5280 "
		       "4.2.1.3)";
	case STRICT_LEAF_KEY_USAGE:
		return "an end-entity certificate with keyCertSign or cRLSign in its keyUsage "
		       "(RFC 5280 4.2.1.3)";
	case STRICT_EMPTY_SUBJECT:
		return "its subject is empty and its subjectAltName is missing or not critical "
		       "(RFC 5280 4.2.1.6)";
	case STRICT_SAN_EMPTY:
		return "its subjectAltName extension holds no name (RFC 5280 4.2.1.6)";
	case STRICT_DNS_NAME:
		snprintf(buf, len,
			 "DNS name '%s' in its subjectAltName is not a valid host name (letters, "
			 "digits, hyphens; labels of 1-63, at most 253 in all; a wildcard only as "
			 "the whole leftmost label; no trailing dot) (RFC 5280 4.2.1.6)",
			 f->name);
		return buf;
	case STRICT_IP_LENGTH:
		snprintf(buf, len,
			 "an IP address in its subjectAltName is %s octets long, not 4 or 16 (RFC "
			 "5280 4.2.1.6)",
			 f->name);
		return buf;
	case STRICT_URI:
		snprintf(buf, len,
			 "URI '%s' in its subjectAltName is not an absolute URI with a scheme (RFC "
			 "3986 4.3, RFC 5280 4.2.1.6)",
			 f->name);
		return buf;
	case STRICT_EMAIL:
		snprintf(buf, len,
			 "email address '%s' in its subjectAltName is not an address (a local part "
			 "of letters, digits and !#$%%&'*+-/=?^_`{|}~ in dot-separated atoms, one "
			 "'@', a host name) (RFC 5321 4.1.2, RFC 5280 4.2.1.6)",
			 f->name);
		return buf;
	case STRICT_PATHLEN:
		return "a pathLenConstraint on a certificate that is not a CA with keyCertSign "
		       "(RFC 5280 4.2.1.9)";
	case STRICT_ISSUER_EMPTY: return "its issuer name is empty (RFC 5280 4.1.2.4)";
	case STRICT_KEY_ID_CRITICAL:
		return "a key identifier extension is marked critical (RFC 5280 4.2.1.1, 4.2.1.2)";
	case STRICT_VERSION: return "it has extensions but is not version 3 (RFC 5280 4.1.2.1)";
	case STRICT_EC_EXPLICIT:
		return "its EC key has explicit curve parameters, not a named curve (RFC 5480 "
		       "2.1.1)";
	case STRICT_SIGNATURE_ALGORITHM:
		return "its signature algorithm differs from the one inside it (RFC 5280 4.1.1.2)";
	default: return "it does not conform to the certificate profile (RFC 5280)";
	}
}

int strict_explain(const struct strict_finding *f, const char *role, struct error *err)
{
	char who[300] = "", ca[300] = "", text[600];
	const char *what = f->depth == 0 ? "certificate" : "certificate chain";
	const char *prefix = f->depth == 0 ? "" : "CA ";

	if (f->cert != NULL)
		identity_describe(f->cert, who, sizeof(who));
	switch (f->rule) {
	case STRICT_LEAF_IS_CA:
		return error_set(
			err, MTLS_REASON_LEAF_IS_CA,
			"%s certificate rejected: it is a CA certificate (basicConstraints "
			"CA:TRUE) (%s); a peer must present an end-entity certificate "
			"issued with the %s profile",
			role, who, role);
	case STRICT_LEAF_EKU:
		return error_set(
			err, MTLS_REASON_BAD_KEY_USAGE,
			"%s certificate rejected: its extendedKeyUsage does not include %s "
			"(%s); issue it with the %s profile",
			role, strcmp(role, "client") == 0 ? "clientAuth" : "serverAuth", who, role);
	case STRICT_NAME_CONSTRAINTS:
		if (f->ca != NULL)
			identity_describe(f->ca, ca, sizeof(ca));
		if (f->name[0] != '\0')
			return error_set(err, MTLS_REASON_NONCONFORMING,
					 "%s %s rejected: %s%s: %s '%s' in its %s is outside the "
					 "name constraints of the CA %s (RFC 5280 4.2.1.10); "
					 "reissue it with a permitted name",
					 role, what, prefix, who, f->kind, f->name,
					 strcmp(f->kind, "CN") == 0 ? "subject" : "subjectAltName",
					 ca[0] != '\0' ? ca : "above it");
		return error_set(
			err, MTLS_REASON_NONCONFORMING,
			"%s %s rejected: %s%s: a name in it is outside the name "
			"constraints of a CA above it (RFC 5280 4.2.1.10); reissue it with "
			"a permitted name",
			role, what, prefix, who);
	case STRICT_CN_UNCONSTRAINED:
		if (f->ca != NULL)
			identity_describe(f->ca, ca, sizeof(ca));
		return error_set(
			err, MTLS_REASON_NONCONFORMING,
			"%s certificate rejected: %s: its CN '%s' is not bounded by the name "
			"constraints of the CA %s: under name constraints a CN must be a host name "
			"within the CA's DNS constraints or an email address within its email "
			"constraints (RFC 5280 4.2.1.10); reissue it with such a CN, or none",
			role, who, f->name, ca[0] != '\0' ? ca : "above it");
	default:
		return error_set(err, MTLS_REASON_NONCONFORMING,
				 "%s %s rejected: %s%s: %s; reissue it", role, what, prefix, who,
				 rule_text(f, text, sizeof(text)));
	}
}
