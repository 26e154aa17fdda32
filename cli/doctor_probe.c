/*
 * mtls doctor --server: a server seen from a client host.
 *
 * One probe handshake with plain OpenSSL that refuses nothing (the doctor must see a server
 * libmtls would refuse), watching every message: whether the port speaks TLS, the
 * protocol and cipher, the server's chain, the CA names of its CertificateRequest, and the
 * alert it sends if it refuses our certificate (in TLS 1.3 that comes after our side of the
 * handshake ended: the probe waits for it, or for the session ticket a server sends once it
 * accepted us). The chain is then judged against --ca and the name (doctor_chain.c); and a
 * last handshake through libmtls, configured as a connector would be, gives the verdict of
 * the one decision path.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "doctor.h"
#include "mtls.h"

#define POST_HANDSHAKE_WAIT_MS 3000 /* at most, for a TLS 1.3 refusal or a ticket */

/* What the probe saw on the wire. */
struct seen {
	bool server_hello, server_cert, cert_request, finished, ticket;
	int alert; /* description of the first alert received, -1 none */
	unsigned char first[48];
	size_t nfirst;
	bool eof;
};

static long monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static int left_ms(long deadline)
{
	long left = deadline - monotonic_ms();

	return left < 0 ? 0 : (int)left;
}

/* HOST:PORT or [IPv6]:PORT into host and port. */
static int split_server(const char *s, char *host, size_t hlen, char *port, size_t plen)
{
	const char *colon;
	size_t n;

	if (s[0] == '[') {
		const char *end = strchr(s, ']');

		if (end == NULL || end[1] != ':')
			return -1;
		n = (size_t)(end - s - 1);
		colon = end + 1;
		if (n == 0 || n >= hlen)
			return -1;
		memcpy(host, s + 1, n);
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL || strchr(s, ':') != colon)
			return -1;
		n = (size_t)(colon - s);
		if (n == 0 || n >= hlen)
			return -1;
		memcpy(host, s, n);
	}
	host[n] = '\0';
	if (colon[1] == '\0' || strlen(colon + 1) >= plen ||
	    strspn(colon + 1, "0123456789") != strlen(colon + 1))
		return -1;
	snprintf(port, plen, "%s", colon + 1);
	return 0;
}

/* A connected socket, or -1 with a finding. */
static int tcp_connect(const char *host, const char *port, long deadline, struct doctor_report *r)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	int e = 0, fd = -1, gai = getaddrinfo(host, port, &hints, &res);
	bool timed_out = false;

	if (gai != 0) {
		doctor_report_add(r, DOCTOR_FAIL, "tcp",
				  "check the host name (DNS, /etc/hosts) or give an IP address",
				  "cannot resolve %s: %s", host, gai_strerror(gai));
		return -1;
	}
	for (struct addrinfo *a = res; a != NULL && fd < 0; a = a->ai_next) {
		struct pollfd p;
		socklen_t el = sizeof(e);

		fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			e = errno;
			continue;
		}
		if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
			break;
		e = errno;
		if (e == EINPROGRESS) {
			p = (struct pollfd){.fd = fd, .events = POLLOUT};
			if (poll(&p, 1, left_ms(deadline)) == 1 &&
			    getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) == 0 && e == 0)
				break;
			if (e == EINPROGRESS) {
				timed_out = true;
				e = ETIMEDOUT;
			}
		}
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd >= 0) {
		doctor_report_add(r, DOCTOR_OK, "tcp", NULL, "connected to %s port %s", host, port);
		return fd;
	}
	if (e == ECONNREFUSED)
		doctor_report_add(r, DOCTOR_FAIL, "tcp",
				  "start the server, or check the port (and the server's --listen "
				  "address: 127.0.0.1 is not reachable from other hosts)",
				  "connection refused by %s port %s: nothing listens there", host,
				  port);
	else if (timed_out)
		doctor_report_add(
			r, DOCTOR_FAIL, "tcp",
			"check firewalls and security groups between this host and the "
			"server, and that the host is up",
			"no answer from %s port %s within the timeout: packets are dropped "
			"on the way, or the host is down",
			host, port);
	else
		doctor_report_add(r, DOCTOR_FAIL, "tcp",
				  "check the address and the route to it (ip route, firewall)",
				  "cannot connect to %s port %s: %s", host, port, strerror(e));
	return -1;
}

static void on_msg(int write_p, int version, int content_type, const void *buf, size_t len,
		   SSL *ssl, void *arg)
{
	struct seen *s = arg;
	const unsigned char *b = buf;

	(void)version;
	(void)ssl;
	if (write_p || len < 1)
		return;
	if (content_type == SSL3_RT_ALERT && len >= 2 && s->alert < 0 && b[0] == SSL3_AL_FATAL)
		s->alert = b[1];
	if (content_type != SSL3_RT_HANDSHAKE)
		return;
	switch (b[0]) {
	case SSL3_MT_SERVER_HELLO: s->server_hello = true; break;
	case SSL3_MT_CERTIFICATE: s->server_cert = true; break;
	case SSL3_MT_CERTIFICATE_REQUEST: s->cert_request = true; break;
	case SSL3_MT_FINISHED: s->finished = true; break;
	case SSL3_MT_NEWSESSION_TICKET: s->ticket = true; break;
	default: break;
	}
}

/* The first bytes the server sent, to show what a port that does not speak TLS says. */
static long on_bio(BIO *b, int oper, const char *argp, size_t len, int argi, long argl, int ret,
		   size_t *processed)
{
	struct seen *s = (struct seen *)BIO_get_callback_arg(b);

	(void)len;
	(void)argi;
	(void)argl;
	if (s != NULL && oper == (BIO_CB_READ | BIO_CB_RETURN) && ret > 0 && processed != NULL) {
		size_t n = *processed;

		if (n > sizeof(s->first) - s->nfirst)
			n = sizeof(s->first) - s->nfirst;
		memcpy(s->first + s->nfirst, argp, n);
		s->nfirst += n;
	}
	if (s != NULL && oper == (BIO_CB_READ | BIO_CB_RETURN) && ret == 0)
		s->eof = true;
	return ret;
}

/* Wait for fd as SSL wants; false at the deadline. */
static bool wait_ssl(SSL *ssl, int fd, int rc, long deadline)
{
	int e = SSL_get_error(ssl, rc);
	struct pollfd p = {.fd = fd};

	if (e == SSL_ERROR_WANT_READ)
		p.events = POLLIN;
	else if (e == SSL_ERROR_WANT_WRITE)
		p.events = POLLOUT;
	else
		return false;
	return poll(&p, 1, left_ms(deadline)) == 1;
}

/* The alerts a refusing server sends, what its log says and what to do. */
struct alert_map {
	int code;
	const char *name;
	const char *log; /* the reason of its handshake_refused line (mtls server) */
	const char *fix;
};

static const struct alert_map alerts[] = {
	{SSL_AD_CERTIFICATE_REQUIRED, "certificate required", "no_certificate",
	 "give --cert and --key (a connector needs a client certificate from the CA the "
	 "server names)"},
	{SSL_AD_UNKNOWN_CA, "unknown CA", "unknown_ca (or self_signed, issuer_not_sent)",
	 "use a certificate from a CA the server trusts (see server-asks), or add your CA to "
	 "the server's --ca; if yours comes from an intermediate, put it after the leaf in "
	 "--cert"},
	{SSL_AD_CERTIFICATE_EXPIRED, "certificate expired", "expired",
	 "renew the certificate (mtls renew) and give the new files"},
	{SSL_AD_CERTIFICATE_REVOKED, "certificate revoked", "revoked",
	 "get a new certificate (mtls enroll with a new token); ask the CA's operator why it "
	 "was revoked (mtls ca list)"},
	{SSL_AD_UNSUPPORTED_CERTIFICATE, "unsupported certificate", "bad_key_usage",
	 "use a certificate with clientAuth in its extendedKeyUsage (the client profile)"},
	{SSL_AD_BAD_CERTIFICATE, "bad certificate",
	 "bad_certificate, nonconforming, weak_key, leaf_is_ca or not_yet_valid",
	 "run mtls verify --ca <the server's CA> on your certificate to see which rule it "
	 "breaks, and issue a conforming one"},
	{SSL_AD_CERTIFICATE_UNKNOWN, "certificate unknown",
	 "crl_missing, crl_expired, crl_invalid, ocsp_* or another verification failure",
	 "read the server's handshake_refused line for this connection; for a CRL problem the "
	 "server's operator fixes its --crl/--crl-url"},
	{SSL_AD_ACCESS_DENIED, "access denied", "identity_not_allowed",
	 "add an allow rule for your identity on the server (--allow-uri/--allow-dns/"
	 "--allow-cn), or use the certificate meant for this service"},
	{SSL_AD_HANDSHAKE_FAILURE, "handshake failure",
	 "identity_not_allowed or pin_mismatch (or no common cipher)",
	 "add an allow rule for your identity on the server (--allow-uri/--allow-dns/"
	 "--allow-cn/--allow-spki), or use the certificate meant for this service"},
	{SSL_AD_DECRYPT_ERROR, "decrypt error", "bad_signature",
	 "the certificate's key and signature do not agree: give the matching --key"},
	{SSL_AD_PROTOCOL_VERSION, "protocol version", "protocol_version",
	 "the server and this host share no TLS version: mtls needs TLS 1.2 or 1.3"},
	{SSL_AD_INTERNAL_ERROR, "internal error", "internal",
	 "read the server's log: it failed on its side"},
};

static const struct alert_map *alert_find(int code)
{
	for (size_t i = 0; i < sizeof(alerts) / sizeof(alerts[0]); i++)
		if (alerts[i].code == code)
			return &alerts[i];
	return NULL;
}

/* A printable rendering of what a non-TLS server said. */
static void printable(const unsigned char *b, size_t n, char *out, size_t len)
{
	size_t o = 0;

	for (size_t i = 0; i < n && o + 5 < len; i++) {
		if (b[i] >= 0x20 && b[i] < 0x7f && b[i] != '"' && b[i] != '\\')
			out[o++] = (char)b[i];
		else
			o += (size_t)snprintf(out + o, len - o, "\\x%02x", b[i]);
	}
	out[o < len ? o : len - 1] = '\0';
}

static void report_not_tls(const struct seen *s, bool timed_out, struct doctor_report *r)
{
	char said[200];

	if (s->nfirst > 5 && s->first[0] == SSL3_RT_HANDSHAKE &&
	    s->first[5] == SSL3_MT_CLIENT_HELLO)
		doctor_report_add(r, DOCTOR_FAIL, "tls",
				  "connect to the mtls server's --listen port, not to the service "
				  "behind it (its --target) or another service",
				  "the server does not speak TLS: it sent our own ClientHello back "
				  "(a plaintext service that echoes)");
	else if (s->nfirst > 0) {
		printable(s->first, s->nfirst, said, sizeof(said));
		doctor_report_add(r, DOCTOR_FAIL, "tls",
				  "connect to the mtls server's --listen port, not to the service "
				  "behind it (its --target) or another service",
				  "the server does not speak TLS: it answered our ClientHello with "
				  "\"%s\"",
				  said);
	} else if (timed_out)
		doctor_report_add(
			r, DOCTOR_FAIL, "tls",
			"connect to the mtls server's --listen port; a plaintext service "
			"waits for its client to speak first",
			"no answer to our TLS ClientHello within the timeout: the port does "
			"not speak TLS, or the server is stuck");
	else
		doctor_report_add(
			r, DOCTOR_FAIL, "tls",
			"connect to the mtls server's --listen port; check that it is a "
			"TLS server",
			"the server closed the connection after our ClientHello without a "
			"word: not a TLS server, or one that refuses this client's hello");
}

/* Does our chain (leaf and the certificates after it, and --ca's CAs our chain leads to)
 * meet one of the server's CA names? */
static bool chain_meets(STACK_OF(X509) * chain, const STACK_OF(X509_NAME) * names)
{
	for (int n = 0; n < sk_X509_NAME_num(names); n++) {
		const X509_NAME *want = sk_X509_NAME_value(names, n);

		for (int k = 0; k < sk_X509_num(chain); k++) {
			X509 *x = sk_X509_value(chain, k);

			if (X509_NAME_cmp(X509_get_issuer_name(x), want) == 0 ||
			    (k > 0 && X509_NAME_cmp(X509_get_subject_name(x), want) == 0))
				return true;
		}
	}
	return false;
}

static void report_asks(const struct seen *s, const STACK_OF(X509_NAME) * names,
			const struct doctor_local *l, struct doctor_report *r)
{
	char list[1200], one[512], iss[512];
	size_t o = 0;
	int n = sk_X509_NAME_num(names);

	if (!s->cert_request) {
		doctor_report_add(r, DOCTOR_WARN, "server-asks", NULL,
				  "the server did not ask for a client certificate: this is not "
				  "mutual TLS (an mtls server always asks)");
		return;
	}
	list[0] = '\0';
	for (int k = 0; k < n && k < 4 && o + 1 < sizeof(list); k++)
		o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", k > 0 ? "; " : "",
				      doctor_name(sk_X509_NAME_value(names, k), one, sizeof(one)));
	if (n > 4 && o + 1 < sizeof(list))
		snprintf(list + o, sizeof(list) - o, "; and %d more", n - 4);
	if (n <= 0) {
		doctor_report_add(
			r, DOCTOR_OK, "server-asks", NULL,
			"the server asks for a client certificate without naming its CAs");
		return;
	}
	if (l->chain == NULL) {
		doctor_report_add(r, DOCTOR_OK, "server-asks", NULL,
				  "the server asks for a client certificate from: %s", list);
		return;
	}
	doctor_name(X509_get_issuer_name(sk_X509_value(l->chain, 0)), iss, sizeof(iss));
	if (chain_meets(l->chain, names))
		doctor_report_add(r, DOCTOR_OK, "server-asks", NULL,
				  "the server asks for a client certificate from: %s; yours "
				  "(issued by %s) is one",
				  list, iss);
	else if (sk_X509_num(l->chain) == 1 &&
		 X509_check_issued(sk_X509_value(l->chain, 0), sk_X509_value(l->chain, 0)) !=
			 X509_V_OK)
		doctor_report_add(
			r, DOCTOR_FAIL, "server-asks",
			"if your issuer is an intermediate of one of those CAs, put it "
			"after the leaf in --cert (the -chain.pem file of mtls ca issue); "
			"else get a certificate from one of them",
			"the server asks for a client certificate from: %s; --cert holds "
			"only the leaf, issued by %s, which is none of them",
			list, iss);
	else
		doctor_report_add(r, DOCTOR_FAIL, "server-asks",
				  "get a certificate from one of the CAs the server names (mtls "
				  "enroll with that CA's token), or have the server's --ca include "
				  "your CA",
				  "the server asks for a client certificate from: %s; yours is "
				  "issued by %s, which leads to none of them",
				  list, iss);
	ERR_clear_error();
}

/* The identity a server's allow rules see: the first URI SAN, else DNS SAN, else the CN. */
static const char *leaf_identity(X509 *x, char *out, size_t len)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	int types[] = {GEN_URI, GEN_DNS};

	out[0] = '\0';
	for (size_t t = 0; t < 2 && out[0] == '\0'; t++)
		for (int k = 0; k < sk_GENERAL_NAME_num(gens) && out[0] == '\0'; k++) {
			GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, k);

			if (g->type == types[t])
				snprintf(out, len, "%s:%.*s", t == 0 ? "URI" : "DNS",
					 ASN1_STRING_length(g->d.ia5) > 255
						 ? 255
						 : ASN1_STRING_length(g->d.ia5),
					 (const char *)ASN1_STRING_get0_data(g->d.ia5));
		}
	GENERAL_NAMES_free(gens);
	if (out[0] == '\0') {
		char cn[256];

		if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn,
					      sizeof(cn)) > 0)
			snprintf(out, len, "CN=%s", cn);
		else
			snprintf(out, len, "(no name)");
	}
	for (char *p = out; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	return out;
}

/* The server's verdict on us, from the alert it sent (or its silence). */
static void report_verdict(const struct seen *s, bool handshake_ok, const struct doctor_local *l,
			   const STACK_OF(X509_NAME) * names, struct doctor_report *r)
{
	bool names_met =
		l->chain != NULL && sk_X509_NAME_num(names) > 0 && chain_meets(l->chain, names);

	const struct alert_map *m = s->alert >= 0 ? alert_find(s->alert) : NULL;
	const char *what = l->usable ? "our certificate" : "a client without a certificate";
	char extra[600] = "", id[300];

	if (s->alert >= 0) {
		const struct alert_map *sent = m;

		/* a server without our certificate says handshake failure in TLS 1.2 */
		if (!l->usable && s->alert == SSL_AD_HANDSHAKE_FAILURE && s->cert_request)
			m = alert_find(SSL_AD_CERTIFICATE_REQUIRED);
		if (s->alert == SSL_AD_UNKNOWN_CA && names_met)
			snprintf(extra, sizeof(extra),
				 " (your CA has the name the server asks for, but is not the same "
				 "CA: two CAs named alike; see mtls ca init --name)");
		else if ((s->alert == SSL_AD_HANDSHAKE_FAILURE ||
			  s->alert == SSL_AD_ACCESS_DENIED) &&
			 l->usable && l->chain != NULL)
			snprintf(extra, sizeof(extra), " (your certificate's identity: %s)",
				 leaf_identity(sk_X509_value(l->chain, 0), id, sizeof(id)));
		doctor_report_add(
			r, DOCTOR_FAIL, "client-cert",
			m != NULL ? m->fix : "read the server's log for this connection",
			"the server refused %s with the alert \"%s\" (%d); an mtls server "
			"logs handshake_refused reason=%s%s",
			what, sent != NULL ? sent->name : SSL_alert_desc_string_long(s->alert),
			s->alert, m != NULL ? m->log : "(see its message)", extra);
		return;
	}
	if (!handshake_ok) {
		doctor_report_add(r, DOCTOR_FAIL, "client-cert",
				  "read the server's log for this connection; retry with a longer "
				  "--timeout if the network is slow",
				  "the handshake did not finish: the server %s without an alert",
				  s->eof ? "closed the connection" : "stopped answering");
		return;
	}
	if (s->ticket)
		doctor_report_add(r, l->usable ? DOCTOR_OK : DOCTOR_WARN, "client-cert", NULL,
				  "the server accepted %s (it sent a session ticket)%s", what,
				  l->usable ? "" : ": the client certificate is optional there");
	else if (s->eof)
		doctor_report_add(
			r, DOCTOR_WARN, "client-cert",
			"read the server's log: a connect_failed line means its --target "
			"is down",
			"the server accepted the handshake and then closed the connection "
			"without an alert");
	else
		doctor_report_add(r, l->usable ? DOCTOR_OK : DOCTOR_WARN, "client-cert", NULL,
				  "the server did not refuse %s (no alert)", what);
}

/* After our side of a TLS 1.3 handshake ended, the server judges our certificate: wait for
 * its alert, a session ticket (it accepted us), data or the end. */
static void await_verdict(SSL *ssl, int fd, struct seen *s, long deadline)
{
	unsigned char b;

	while (s->alert < 0 && !s->ticket && !s->eof) {
		int rc = SSL_read(ssl, &b, 1);

		if (rc > 0)
			return; /* data: the target speaks, so we were let through */
		if (SSL_get_error(ssl, rc) == SSL_ERROR_ZERO_RETURN) {
			s->eof = true;
			return;
		}
		if (s->ticket || s->alert >= 0 || !wait_ssl(ssl, fd, rc, deadline))
			return;
	}
}

/* The verdict of libmtls configured as a connector with the same files. */
static void report_connector(const struct doctor_probe_opts *o, const char *host, const char *port,
			     const char *name, const struct doctor_local *l, const struct seen *s,
			     long deadline, struct doctor_report *r)
{
	struct mtls_config *cfg = mtls_config_new();
	struct mtls *ep = mtls_client_new(), *c = NULL;
	struct doctor_report quiet = {0};
	int fd = -1;

	(void)o;
	if (cfg == NULL || ep == NULL)
		goto out;
	if ((l->cert_path != NULL && mtls_config_set_cert_file(cfg, l->cert_path) != 0) ||
	    (l->key_path != NULL && mtls_config_set_key_file(cfg, l->key_path) != 0) ||
	    mtls_config_set_ca_file(cfg, l->ca_path) != 0) {
		doctor_report_add(r, DOCTOR_FAIL, "handshake", NULL,
				  "a connector with these files would not start: %s",
				  mtls_config_error(cfg));
		goto out;
	}
	if (mtls_configure(ep, cfg) != 0) {
		doctor_report_add(r, DOCTOR_FAIL, "handshake", NULL,
				  "a connector with these files would not start: %s",
				  mtls_error(ep));
		goto out;
	}
	fd = tcp_connect(host, port, deadline, &quiet);
	if (fd < 0) {
		doctor_report_add(r, DOCTOR_FAIL, "handshake", NULL,
				  "the second connection failed: %s",
				  quiet.n > 0 ? quiet.v[0].text : "out of memory");
		goto out;
	}
	c = mtls_connect_fd(ep, fd, name);
	if (c == NULL) {
		doctor_report_add(r, DOCTOR_FAIL, "handshake", NULL, "%s", mtls_error(ep));
		goto out;
	}
	if (mtls_handshake_wait(c, left_ms(deadline) > 0 ? left_ms(deadline) : 1) != 0)
		doctor_report_add(r, DOCTOR_FAIL, "handshake", NULL,
				  "a connector with these files refuses the connection: %s (%s)",
				  mtls_error(c), mtls_reason_name(mtls_error_reason(c)));
	else if (s->alert >= 0)
		doctor_report_add(r, DOCTOR_FAIL, "handshake", NULL,
				  "a connector with these files accepts the server, but the server "
				  "refuses the connector (see client-cert)");
	else
		doctor_report_add(r, DOCTOR_OK, "handshake", NULL,
				  "a connector with these files connects: %s %s, server %s",
				  mtls_conn_version(c), mtls_conn_cipher(c),
				  mtls_peer_identity(mtls_conn_peer(c)));
out:
	mtls_free(c);
	if (fd >= 0)
		close(fd);
	mtls_free(ep);
	mtls_config_free(cfg);
	doctor_report_free(&quiet);
}

int doctor_probe_run(const struct doctor_probe_opts *o, struct doctor_local *l, time_t now,
		     struct doctor_report *r, char *err, size_t err_len)
{
	char host[256], port[16];
	struct seen s = {.alert = -1};
	long deadline = monotonic_ms() + o->timeout_ms;
	SSL_CTX *ctx = NULL;
	SSL *ssl = NULL;
	STACK_OF(X509) * chain;
	const char *name;
	bool done = false, timed_out = false, time_ok = true;
	int fd, rc;

	if (split_server(o->server, host, sizeof(host), port, sizeof(port)) != 0) {
		snprintf(err, err_len, "--server %s: give HOST:PORT or [IPv6]:PORT", o->server);
		return -1;
	}
	name = o->name != NULL ? o->name : host;
	fd = tcp_connect(host, port, deadline, r);
	if (fd < 0)
		return 0;
	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL || (ssl = SSL_new(ctx)) == NULL) {
		doctor_report_add(r, DOCTOR_FAIL, "tls", NULL, "out of memory");
		goto out;
	}
	/* see whatever the server offers; judged below, not refused here */
	SSL_set_security_level(ssl, 0);
	SSL_set_min_proto_version(ssl, TLS1_2_VERSION);
	SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
	if (l->usable && (SSL_use_certificate_chain_file(ssl, l->cert_path) != 1 ||
			  SSL_use_PrivateKey_file(ssl, l->key_path, SSL_FILETYPE_PEM) != 1))
		l->usable = false; /* found by the local checks already */
	ERR_clear_error();
	if (!doctor_chain_is_ip(name)) {
		char sni[256]; /* the macro casts the const away */

		snprintf(sni, sizeof(sni), "%s", name);
		SSL_set_tlsext_host_name(ssl, sni);
	}
	SSL_set_msg_callback(ssl, on_msg);
	SSL_set_msg_callback_arg(ssl, &s);
	SSL_set_fd(ssl, fd);
	BIO_set_callback_ex(SSL_get_rbio(ssl), on_bio);
	BIO_set_callback_arg(SSL_get_rbio(ssl), (char *)&s);
	while ((rc = SSL_connect(ssl)) != 1) {
		if (!wait_ssl(ssl, fd, rc, deadline)) {
			timed_out = left_ms(deadline) == 0;
			break;
		}
	}
	done = rc == 1;
	ERR_clear_error();
	if (!s.server_hello && s.alert < 0) {
		/* OpenSSL read a record header only: show the rest of what already came */
		if (s.nfirst > 0 && s.nfirst < sizeof(s.first)) {
			ssize_t n = recv(fd, s.first + s.nfirst, sizeof(s.first) - s.nfirst,
					 MSG_DONTWAIT);

			if (n > 0)
				s.nfirst += (size_t)n;
		}
		report_not_tls(&s, timed_out, r);
		goto out;
	}
	if (!s.server_hello) {
		doctor_report_add(r, DOCTOR_FAIL, "tls",
				  "the server and this host share no TLS version or cipher: mtls "
				  "needs TLS 1.2 or 1.3 with ECDHE and AES-GCM or ChaCha20",
				  "the server refused our ClientHello (alert \"%s\")",
				  SSL_alert_desc_string_long(s.alert));
		goto out;
	}
	doctor_report_add(r, DOCTOR_OK, "tls", NULL, "%s, cipher %s", SSL_get_version(ssl),
			  SSL_get_cipher_name(ssl) != NULL ? SSL_get_cipher_name(ssl) : "?");
	if (done && SSL_version(ssl) == TLS1_3_VERSION) {
		long wait = monotonic_ms() + POST_HANDSHAKE_WAIT_MS;

		await_verdict(ssl, fd, &s, wait < deadline ? wait : deadline);
	}
	chain = SSL_get_peer_cert_chain(ssl);
	if (chain == NULL || sk_X509_num(chain) == 0)
		doctor_report_add(r, DOCTOR_FAIL, "server-cert", NULL,
				  "the server sent no certificate");
	else {
		doctor_chain_times(chain, now, r, &time_ok);
		if (l->cas != NULL)
			doctor_chain_trust(chain, l, r);
		else
			doctor_report_add(r, DOCTOR_WARN, "server-trust",
					  "give --ca with the bundle your connector uses",
					  "no --ca given: the server's chain was not judged");
		doctor_chain_name(sk_X509_value(chain, 0), name, o->name != NULL, r);
	}
	report_asks(&s, SSL_get0_peer_CA_list(ssl), l, r);
	report_verdict(&s, done, l, SSL_get0_peer_CA_list(ssl), r);
	/* the probe's connection ends first: a server that serves one connection at a time
	 * would keep the connector waiting */
	SSL_free(ssl);
	ssl = NULL;
	close(fd);
	fd = -1;
	if (l->cas != NULL)
		report_connector(o, host, port, name, l, &s, monotonic_ms() + o->timeout_ms, r);
out:
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	if (fd >= 0)
		close(fd);
	ERR_clear_error();
	return 0;
}
