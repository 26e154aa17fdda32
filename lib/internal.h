/*
 * Types and functions shared between the files of libmtls. Not installed.
 *
 * Each lib/foo.c exports only foo_* names (and the public mtls_* API it implements):
 *
 *   config.c        struct mtls_config: the setters, what a config holds
 *   load.c          a config's PEM blobs into OpenSSL objects (own cert and key, CAs, CRLs)
 *   tlsctx.c        the SSL_CTX of a state: protocol, ciphers, verify and resumption wiring
 *   state.c         a config compiled into an immutable, reference-counted state
 *   endpoint.c      endpoints: configure (swap the state), per-thread results, verify a PEM
 *   conn.c          connections: made from an endpoint, handshake, I/O, close, free
 *   sockbio.c       the socket BIO under every connection
 *   verify.c        the one decision on a peer's chain, whatever the path
 *   verify_cache.c  chains verified before, by hash
 *   strict.c        the strict certificate profile
 *   revocation.c    CRLs: validated once, matched to a chain
 *   ocsp.c          OCSP answers checked, requests made, a certificate's responder
 *   ocsp_store.c    an endpoint's OCSP answers, staple and fetch requests
 *   identity.c      what a certificate says about its holder (struct mtls_peer)
 *   policy.c        allow rules
 *   sessions.c      the server's resumable sessions
 *   tickets.c       the client's resumable sessions
 *   error.c         reasons, categories and messages
 */
#ifndef MTLS_INTERNAL_H
#define MTLS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/types.h>

#include <openssl/ocsp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "certfields.h"
#include "mtls.h"

#define ERROR_MSG_MAX 600

/* error.c: a reason and a one-line message, kept on the object that failed. */
struct error {
	enum mtls_reason reason;
	char msg[ERROR_MSG_MAX];
};

void error_clear(struct error *err);
/* Set reason and message (printf-style). Clears OpenSSL's error queue. Returns -1. */
int error_set(struct error *err, enum mtls_reason reason, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Like error_set(), then appends ": " and the first OpenSSL error in the queue, if any. */
int error_set_ssl(struct error *err, enum mtls_reason reason, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Format a time as 2026-11-01T00:00:00Z into buf (at least 21 bytes). */
const char *error_time(time_t t, char *buf, size_t len);

/* config.c */
struct strlist {
	char **v;
	size_t n;
};
/* Copy from into the empty to, string by string. -1 on no memory, with what was copied so
 * far in to (the caller frees it as usual). */
int config_strlist_copy(struct strlist *to, const struct strlist *from);

struct blob {
	uint8_t *data;
	size_t len;
	char *origin; /* file path or "memory", for messages */
};

enum insecure_flag {
	INSECURE_KEY_PERMISSIONS = 1u << 0,
	INSECURE_NO_VERIFY_NAME = 1u << 1,
	INSECURE_OPTIONAL_CLIENT_CERT = 1u << 2,
	INSECURE_SERVER_EKU_CLIENTS = 1u << 3,
	INSECURE_AUDIT = 1u << 4,
};

struct mtls_config {
	struct error err;

	struct blob cert;
	struct blob key;
	mode_t key_mode; /* permission bits of the key file; 0 for memory */
	struct blob ca;
	struct blob *crls;
	size_t ncrls;
	char *passphrase; /* or, for a key_uri, the token's user PIN */
	bool passphrase_set;
	char *key_uri;	     /* a key on a PKCS#11 token (then key holds none), or NULL */
	char *pkcs11_module; /* the PKCS#11 module for key_uri, or NULL for the default */

	bool crl_check_chain;
	int64_t crl_grace;
	int verify_depth;
	int min_version;
	int max_version;
	time_t verify_time;
	bool tickets;
	int ocsp_mode;	  /* enum mtls_ocsp_mode */
	char *ocsp_url;	  /* the responder to ask instead of the certificates' own, or NULL */
	bool ocsp_staple; /* a server staples an answer for its own certificate */
	/* mtls_config_set_ocsp_staple_answer(): read by mtls_configure() from the config given,
	 * never cloned into a state */
	uint8_t *staple_der;
	size_t staple_len;
	size_t ocsp_cache_slots;
	size_t verify_cache_slots;
	size_t session_cache_slots;
	char *alpn; /* the ALPN protocol offered (client) or required (server), or NULL */

	struct strlist allow_uri;
	struct strlist allow_dns;
	struct strlist allow_cn;
	struct strlist allow_spki;
	struct strlist allow_cert;
	struct strlist allow_email;
	bool allow_any;
	mtls_authz_cb authz_cb;
	void *authz_arg;

	unsigned insecure;
	char insecure_names[128];
};

/* A deep copy (blobs, rule lists, passphrase) that shares nothing with c: the state an
 * endpoint runs on owns one, so a caller changing or freeing its config cannot reach it.
 * NULL if out of memory. Freed with mtls_config_free(). */
struct mtls_config *config_clone(const struct mtls_config *c);
/* Wipe and free the private key and passphrase once the key is loaded. */
void config_forget_key(struct mtls_config *c);

/* identity.c: what we know of a certificate, extracted once. */
struct mtls_peer {
	char *identity;
	char *subject;
	char *issuer;
	char *cn;
	char *serial;
	time_t not_before;
	time_t not_after;
	uint8_t cert_hash[32];
	uint8_t spki_hash[32];
	char cert_sha256[65];
	char spki_sha256[65];
	struct strlist uris;
	struct strlist dns;
	struct strlist ips;
	struct strlist emails; /* rfc822Name SANs */
	char *matched_rule;
	bool client_eku; /* its extendedKeyUsage names clientAuth */
};

/* NULL with err set if the certificate cannot be described (OOM, NUL bytes in a SAN). */
struct mtls_peer *identity_from_cert(X509 *cert, struct error *err);
void identity_free(struct mtls_peer *peer);
/* "subject CN=x, serial 0A1B" for messages. */
void identity_describe(X509 *cert, char *buf, size_t len);
void identity_hex(const uint8_t *bytes, size_t n, char *out);
/* n bytes of a name for a message: printable ASCII as is, anything else as \xNN, cut. */
void identity_shown(const unsigned char *p, size_t n, char *out, size_t len);

/* policy.c: allow rules compiled from a config. */
struct policy;
struct policy *policy_new(const struct mtls_config *config, struct error *err);
void policy_free(struct policy *policy);
bool policy_has_rules(const struct policy *policy);
/* 0 allowed (peer->matched_rule set), -1 refused with err. role is "client"/"server". */
int policy_check(const struct policy *policy, struct mtls_peer *peer, const char *role,
		 struct error *err);
/* URIs longer than this match no rule and are no identity; a "*" segment stands for at
 * most POLICY_SEGMENT_MAX bytes. */
#define POLICY_URI_MAX	   2048
#define POLICY_SEGMENT_MAX 255
bool policy_uri_match(const char *pattern, const char *uri);
/* Can "*" stand for this path segment? Not if it is empty, longer than POLICY_SEGMENT_MAX,
 * "." or "..", or holds anything but RFC 3986 path characters, or an escape of '/', '\',
 * '.', '%' or a control byte (what a decoding server could read as another path). */
bool policy_uri_segment_ok(const char *seg, size_t len);
bool policy_dns_match(const char *pattern, const char *name);
/* pattern is "local@domain" (exact) or "*@domain" (any address of the domain); the domain
 * compares case-insensitively, the local part exactly (RFC 5321). */
bool policy_email_match(const char *pattern, const char *address);
/* Parse a SHA-256 pin (hex with optional colons, or base64). 0 or -1. */
int policy_parse_pin(const char *text, uint8_t out[32]);

/* tickets.c: the client's resumable sessions (see the file). */
#define TICKETS_MAX 16
/* seconds: a ticket whose server certificate expires sooner is dropped, not offered */
#define TICKETS_EXPIRY_MARGIN 10
struct tickets {
	pthread_mutex_t lock;
	int n;
	struct {
		SSL_SESSION *session;
		char *name; /* the server name it was made for */
	} slot[TICKETS_MAX];
};
void tickets_init(struct tickets *t);
void tickets_clear(struct tickets *t);
/* Keep a session received from the server called name (ownership passes on success). */
bool tickets_put(struct tickets *t, SSL_SESSION *session, const char *name);
/* The newest session for name, taken off the stack (the caller frees it), or NULL. */
SSL_SESSION *tickets_take(struct tickets *t, const char *name);

/* state.c: the compiled, immutable form of a config that handshakes run against (see the
 * file). */
struct state {
	atomic_int refs;
	bool server;
	SSL_CTX *ssl_ctx;
	X509_STORE *store;
	struct mtls_config *config; /* private copy of the applied config, key wiped */
	struct policy *policy;	    /* owns its rules */
	time_t cert_not_after;
	time_t ca_not_after;
	time_t crl_next_update;
	struct verify_cache *vcache; /* NULL when disabled */
	struct sessions *sessions;   /* server: resumable sessions (maybe none), shared CA certs */
	struct ocsp_store *ocsp;     /* the endpoint's OCSP answers and staple (ocsp_store.c) */
	/* the own certificate, for its OCSP staple (ocsp_own()) */
	X509 *own_leaf;	      /* referenced; NULL without one */
	X509 *own_issuer;     /* referenced; NULL if neither the chain nor the CA bundle has it */
	char *own_ocsp_url;   /* the configured responder, else its authorityInfoAccess's */
	uint8_t own_hash[32]; /* SHA-256 of its DER */
	bool staples; /* a server that staples (configured, or the certificate demands it) */
	/* the CA certificates of the own chain (referenced; NULL without any): offered to
	 * verification as more untrusted certificates when the path through what the peer
	 * sent fails (verify.c), so that a peer still sending an intermediate certificate the
	 * CA has replaced (a root rollover) is verified through the current one */
	STACK_OF(X509) * own_cas;

	struct tickets tickets; /* client: sessions to resume, each used once */
};

/* Compile config into a new state (referenced once), or NULL with err set. prev, the state it
 * replaces (or NULL), lends it the server's session store while the trust stays the same;
 * ocsp is the endpoint's OCSP store, which the state references. */
struct state *state_build(bool server, const struct mtls_config *config, const struct state *prev,
			  struct ocsp_store *ocsp, struct error *err);
struct state *state_ref(struct state *st);
void state_unref(struct state *st);

/* load.c: the config's PEM blobs into OpenSSL objects (see the file). */
/* Every PEM certificate of b (what names it in messages: "CA file", ...). NULL with err set
 * if there is none or one is damaged. */
STACK_OF(X509) * load_certs(const struct blob *b, const char *what, struct error *err);
/* The own certificate, chain and private key into st->ssl_ctx; sets st->cert_not_after. */
int load_own_cert(struct state *st, const struct mtls_config *c, struct error *err);
/* The CA bundle (CA certificates only) and CRLs into st->store; sets st->ca_not_after and
 * st->crl_next_update. */
int load_trust(struct state *st, const struct mtls_config *c, struct error *err);

/* tlsctx.c: the SSL_CTX of a state (protocol, ciphers, verification and resumption wiring),
 * from st->config, st->server, st->store and st->sessions. NULL with err set. */
SSL_CTX *tlsctx_new(struct state *st, struct error *err);

/*
 * struct mtls, the public type, is one of two things (as in libtls): an endpoint that
 * connections are made from, or a connection. Both run on a state; the rest of each is its
 * own, in a union, so that a connection (of which a daemon holds thousands) carries nothing
 * of an endpoint's, and code that reaches for the other role's fields reads as wrong.
 */
enum mtls_kind {
	KIND_SERVER, /* endpoint made by mtls_server_new() */
	KIND_CLIENT, /* endpoint made by mtls_client_new() */
	KIND_CONN,   /* connection made by mtls_accept_fd() or mtls_connect_fd() */
};

/* endpoint.c: a server or client. Shared by the threads that accept, connect, verify and
 * reconfigure on it; what a call leaves for its caller is kept per thread (see the file). */
struct endpoint {
	uint64_t id;		 /* unique in the process, never reused: tags per-thread results */
	pthread_mutex_t lock;	 /* guards the struct mtls's state pointer */
	struct error err;	 /* used only when a thread's result slot cannot be allocated */
	struct ocsp_store *ocsp; /* OCSP answers and staple, for every state it runs on */
};

/* record.c: a parked connection's TLS 1.3 record layer (mtls_park()). The fd is the
 * connection's (not owned); the secrets are the traffic secrets of each direction (read: the
 * peer's) of the suite (its IANA id) and their sequence numbers. NULL: a suite it does not
 * carry, or no memory. */
struct record;
struct record *record_new(int fd, bool server, uint16_t suite, const uint8_t *rd_secret,
			  const uint8_t *wr_secret, size_t secret_len, uint64_t rd_seq,
			  uint64_t wr_seq);
void record_free(struct record *p);
bool record_suite_supported(uint16_t suite);
/* As mtls_read(), mtls_write(), mtls_close(), mtls_read_drained(), mtls_keep_buffers(). */
ssize_t record_read(struct record *p, void *buf, size_t len, struct error *err);
ssize_t record_write(struct record *p, const void *buf, size_t len, struct error *err);
int record_close(struct record *p, struct error *err);
bool record_drained(const struct record *p);
void record_keep_buffers(struct record *p, bool keep);
void record_set_drained(struct record *p, bool drained);
int record_fd(const struct record *p);
/* Our KeyUpdate (RFC 8446 4.6.3), asking the peer for its own if request (tests; a record
 * layer sends one before its next record when the peer asked, or after 2^24 records under
 * one key): 0, MTLS_WANT_POLLOUT or -1. */
int record_key_update(struct record *p, bool request, struct error *err);
/* One record of any inner content type, sealed and sent (tests and fuzzers: a peer that
 * sends what ours never would): 0, MTLS_WANT_POLLOUT or -1. */
int record_send(struct record *p, uint8_t type, const void *data, size_t len, struct error *err);

/* park.c: the keylog and message callbacks every SSL_CTX gets (tlsctx.c), which capture
 * what mtls_park() needs; what a parked connection kept of its peer's certificates, as
 * SSL_get0_peer_certificate() and SSL_get_peer_cert_chain() gave them (the caller frees
 * both; 0, or -1 without memory); the captured keys freed. */
struct park_keys;
void park_keylog_cb(const SSL *ssl, const char *line);
void park_msg_cb(int write_p, int version, int content_type, const void *buf, size_t len, SSL *ssl,
		 void *arg);
int park_peer_certs(const struct mtls *c, X509 **leaf, STACK_OF(X509) * *chain);
void park_keys_free(struct park_keys *k);

/* conn.c: one TLS connection, used by one thread at a time. */
struct connection {
	SSL *ssl;
	char *server_name; /* client: the name the server's certificate must carry, or NULL */
	struct mtls_peer *peer;
	bool handshake_done;
	time_t handshake_at; /* when the handshake judged the peer (its verification time) */
	struct error err;    /* also where the verify callback puts its refusal */
	/* about the accepted handshake (owned; NULL: none). Rare, so allocated only when
	 * there is one: an idle connection's every byte counts (test_memory.c). */
	char *warning;
	/* client: OCSP is decided once the server's staple (or its absence) is known, by the
	 * status callback, on the chain the verify callback kept */
	STACK_OF(X509) * ocsp_chain;
	bool ocsp_done;
	enum mtls_ocsp_result ocsp; /* what OCSP said of the accepted peer */
	/* audit (mtls_config_insecure_audit()): why the peer let in would have been refused
	 * (owned; NULL: it would not) */
	struct error *would;
	/* TLS 1.3: what mtls_park() needs, captured by the keylog and message callbacks while
	 * OpenSSL moves the records (owned; NULL until the first callback) */
	struct park_keys *keys;
	bool write_pending; /* the last write wanted POLLOUT: OpenSSL holds a sealed record */
	/* parked (mtls_park()): the SSL is freed (ssl NULL), the records move through rec,
	 * and what the accessors answer is kept here */
	struct record *rec;
	const char *version, *cipher; /* OpenSSL's static names */
	bool resumed, alpn_ours;
	uint8_t *peer_der; /* the peer's certificates as sent (DER, one after another) */
	size_t peer_der_len;
};

struct mtls {
	enum mtls_kind kind;
	/* An endpoint's current state (NULL until configured), read and swapped under ep.lock;
	 * a connection's, the one it started with, fixed and read without a lock. */
	struct state *state;
	union {
		struct endpoint ep;	/* KIND_SERVER, KIND_CLIENT */
		struct connection conn; /* KIND_CONN */
	};
};

/* endpoint.c */
/* The endpoint's current state, referenced; NULL if it was never configured (or e is a
 * connection). */
struct state *endpoint_state(struct mtls *e);
/* Where a call that needs an endpoint reports its error: for an endpoint, the calling
 * thread's slot (the endpoint's own only when there is no memory for a slot); for a
 * connection given instead, the connection's. */
struct error *endpoint_err(struct mtls *m);

/* verify.c: the one verification path used by handshakes and mtls_verify_chain_pem(). */
struct verify_request {
	const struct state *st;
	bool peer_is_client;
	const char *name; /* expected DNS name or IP of a server, or NULL */
	const char *uri;  /* expected URI SAN, or NULL */
	/* certificate validity judged at this time instead of now (a re-check of a live
	 * connection: its handshake's time); 0: now. Revocation is always judged now. */
	time_t certs_at;
	/* OCSP. A client's full handshake decides it after the chain, once the server's
	 * staple is known (ocsp_later; the chain is handed over in keep_chain), with
	 * verify_ocsp() and staple_round set: the staple (or none, staple NULL) was the
	 * server's answer to our status request, and a must-staple certificate needs one. */
	bool ocsp_later;
	STACK_OF(X509) * *keep_chain;
	bool staple_round;
	const uint8_t *staple;
	size_t staple_len;
	enum mtls_ocsp_result *ocsp_out; /* receives what OCSP said (may be NULL) */
};

/* The decision on the chain set up in xctx, whatever the path (handshake, resumption,
 * mtls_verify_chain_pem()): the chain to the trust anchors (or the verification cache's
 * memory of it), the strict profile, key strength, the leaf, validity now, revocation, the
 * allow rules. Returns 0 and the peer (caller frees) or -1 with err set; the X509 error of
 * xctx is set so that a handshake sends a fitting alert. warning (may be empty) receives a
 * note on an accepted chain, such as a CRL within its grace period. */
int verify_chain(const struct verify_request *rq, X509_STORE_CTX *xctx, struct mtls_peer **peer,
		 struct error *err, char *warning, size_t warning_len);
/* The OCSP step of that decision on a verified chain (leaf first), for a request whose
 * verify_chain() left it for later (ocsp_later): 0, or -1 with err. A warning (soft-fail
 * without an answer) goes to warning if that is still empty. */
int verify_ocsp(const struct verify_request *rq, STACK_OF(X509) * chain, struct error *err,
		char *warning, size_t warning_len);
/* The verification parameters a request implies (also applied inside verify_chain). */
int verify_setup(const struct verify_request *rq, X509_STORE_CTX *xctx);

/* A resumed session skipped verification, and it may have been verified under an earlier
 * state (the server's session cache survives reloads that keep the trust anchors): the
 * same decision as verify_chain() on the session's peer certificate and chain (leaf first
 * or not), the path built again against the current trust store. */
int verify_resumed(const struct verify_request *rq, X509 *leaf, STACK_OF(X509) * chain,
		   struct mtls_peer **peer, struct error *err);
/* The peer presented no certificate (a full handshake or a resumed session without one):
 * 0 when the request's state lets a client in without one (a server with
 * mtls_config_insecure_optional_client_cert(); it then has no identity), else -1 with err
 * (no_certificate). Never called for a peer that presented a certificate: that one is
 * judged by verify_chain() / verify_resumed(), and a refusal there stays a refusal. */
int verify_no_certificate(const struct verify_request *rq, struct error *err);
/* Audit (a server's mtls_config_insecure_audit()): the refusal in err of a client that
 * presented leaf, made by verify_chain() / verify_resumed() under rq, becomes an acceptance:
 * the refusal moves to would, err is cleared and *peer describes leaf (no matched rule).
 * 0 then; -1 (err untouched) when the request's state does not audit, or the refusal is not
 * about the peer (internal, usage), or the certificate cannot be described at all. */
int verify_audit(const struct verify_request *rq, X509 *leaf, struct error *err,
		 struct error *would, struct mtls_peer **peer);

/* strict.c: the strict certificate profile (see the file). A check returns 0 or -1 with a
 * finding (the rule and the certificate); strict_explain() words it into err. */
enum strict_rule {
	STRICT_LEAF_IS_CA = 1,
	STRICT_LEAF_EKU,
	STRICT_SERIAL_NOT_POSITIVE,
	STRICT_SERIAL_TOO_LONG,
	STRICT_NO_AKI,
	STRICT_CA_NO_SKI,
	STRICT_CA_BASIC_CONSTRAINTS,
	STRICT_CA_KEY_USAGE,
	STRICT_LEAF_KEY_USAGE,
	STRICT_EMPTY_SUBJECT,
	STRICT_SAN_EMPTY,
	STRICT_DNS_NAME,
	STRICT_IP_LENGTH,
	STRICT_URI,
	STRICT_EMAIL,
	STRICT_NAME_CONSTRAINTS,
	STRICT_CN_UNCONSTRAINED, /* a leaf's CN that its CA's name constraints cannot bound */
	/* found by OpenSSL's X509_V_FLAG_X509_STRICT */
	STRICT_PATHLEN,
	STRICT_ISSUER_EMPTY,
	STRICT_KEY_ID_CRITICAL,
	STRICT_VERSION,
	STRICT_EC_EXPLICIT,
	STRICT_SIGNATURE_ALGORITHM,
};
struct strict_finding {
	enum strict_rule rule;
	int depth;     /* in the chain; 0 is the leaf */
	X509 *cert;    /* the certificate (not referenced) */
	X509 *ca;      /* name constraints: the CA that set them (not referenced) */
	char kind[16]; /* "DNS name", "URI", ... */
	char name[256];
};
/* Every certificate of a verified chain (leaf first, trust anchor last). */
int strict_chain(STACK_OF(X509) * chain, struct strict_finding *f);
/* The peer's own certificate: not a CA, and its EKU names the role. */
int strict_leaf(X509 *leaf, bool peer_is_client, bool server_eku_ok, struct strict_finding *f);
/* The finding for an error of OpenSSL's strict mode (0), or -1 if x509_error is not one. */
int strict_of_x509_error(int x509_error, int depth, X509 *cert, STACK_OF(X509) * chain,
			 struct strict_finding *f);
/* Sets err: reason nonconforming (or leaf_is_ca, bad_key_usage), the certificate, the rule
 * and what to do. role is "client" or "server". Returns -1. */
int strict_explain(const struct strict_finding *f, const char *role, struct error *err);
bool strict_dns_name_ok(const unsigned char *p, size_t n);
bool strict_uri_ok(const unsigned char *p, size_t n);
bool strict_email_ok(const unsigned char *p, size_t n);

/* revocation.c: the CRLs of a state and the revocation of a verified chain (see file). */
enum revocation_status {
	REVOCATION_OK,
	REVOCATION_REVOKED,
	REVOCATION_MISSING, /* no CRL that verifies and covers it */
	REVOCATION_EXPIRED, /* no CRL within its validity (or grace period) */
	REVOCATION_GRACE,   /* accepted with a CRL within the grace period */
};
struct revocation_finding {
	enum revocation_status status;
	int depth;	    /* in the chain; 0 is the leaf */
	X509 *cert;	    /* not referenced */
	X509_CRL *crl;	    /* not referenced; lives as long as the state */
	bool not_yet_valid; /* REVOCATION_EXPIRED: the CRL is from the future */
	int forged;	    /* CRLs in the issuer's name that do not verify with it */
	int out_of_scope;   /* the issuer's CRLs whose scope does not cover it */
	int no_crl_sign;    /* CRLs that verify with the issuer, whose keyUsage lacks cRLSign */
};
/* Validate the CRLs of the config (already in st->store) once: crl_invalid if one is
 * refused. Called by state_build(). */
int revocation_load(struct state *st, struct error *err);
/* The leaf (with CRL checks on the chain: every certificate below the trust anchor) against
 * the validated CRLs. 0 (f->status OK or GRACE) or -1 with f set. */
int revocation_check(const struct state *st, STACK_OF(X509) * chain, time_t now,
		     struct revocation_finding *f);

/* ocsp.c: OCSP answers checked against a certificate's issuer, requests, and what a
 * certificate says about its responder (see the file). */
#define OCSP_RESPONSE_MAX      (64 * 1024) /* bytes of an answer, stapled or fetched */
#define OCSP_SKEW	       300	   /* seconds a thisUpdate may be ahead of our clock */
#define OCSP_NO_NEXT_UPDATE    300	   /* seconds an answer without nextUpdate counts */
#define OCSP_SIGNER_CANDIDATES 8	   /* certificates of an answer tried as its signer */
#define OCSP_SINGLE_MAX	       16	   /* SingleResponses of an answer looked at */
#define OCSP_URL_MAX	       2048
struct ocsp_result {
	int status; /* V_OCSP_CERTSTATUS_GOOD, _REVOKED or _UNKNOWN */
	int reason; /* revoked: OCSP_REVOKED_STATUS_*, or -1 */
	time_t revoked_at;
	time_t this_update;
	time_t next_update; /* 0: the answer has none */
	time_t valid_until; /* nextUpdate, capped by a delegated responder's notAfter */
	bool delegated;	    /* signed by a responder certificate, not the issuer itself */
};
/* The answer in der[0..len) (untrusted) about the certificate of issuer with serial, at
 * now: 0 and out, or -1 and why (one phrase, "the answer expired at ..."). */
int ocsp_check_response(const uint8_t *der, size_t len, X509 *issuer, const ASN1_INTEGER *serial,
			time_t now, struct ocsp_result *out, char *why, size_t why_len);
/* A revocation other than certificateHold: final, whatever the answer's age. */
bool ocsp_result_final(const struct ocsp_result *r);
/* Does the answer count at now (within thisUpdate - OCSP_SKEW .. valid_until, or final)? */
bool ocsp_result_usable(const struct ocsp_result *r, time_t now);
/* The SHA-1 CertID (what requests ask, RFC 5019) of issuer's certificate serial. */
OCSP_CERTID *ocsp_cert_id(X509 *issuer, const ASN1_INTEGER *serial);
/* The key answers are kept by: SHA-256 of that CertID's DER. 0 or -1. */
int ocsp_key(X509 *issuer, const ASN1_INTEGER *serial, uint8_t key[32]);
/* A DER OCSPRequest for it, without nonce (malloc'd). 0 or -1. */
int ocsp_request(X509 *issuer, const ASN1_INTEGER *serial, uint8_t **der, size_t *len);
/* The first http(s) OCSP responder of cert's authorityInfoAccess (malloc'd), or NULL. */
char *ocsp_url(X509 *cert);
/* Does cert demand a stapled answer (TLS feature status_request, RFC 7633)? */
bool ocsp_must_staple(X509 *cert);
/* "keyCompromise", ... or "no reason given" (-1). */
const char *ocsp_reason_name(int reason);
/* The own certificate of a state being built (in st->ssl_ctx, its chain, the trust store):
 * st->own_*; an error if it must be stapled and cannot be (no issuer, no responder). */
int ocsp_own(struct state *st, struct error *err);

/* ocsp_store.c: an endpoint's OCSP answers for peers' certificates, its own staple, and the
 * requests its fetcher is asked to send (see the file). Shared by the endpoint's states. */
struct ocsp_store;
struct ocsp_store *ocsp_store_new(void);
struct ocsp_store *ocsp_store_ref(struct ocsp_store *s);
void ocsp_store_unref(struct ocsp_store *s);
/* What the store knows about a certificate, for the decision (verify.c). */
struct ocsp_seen {
	bool answered; /* answer holds a usable answer */
	struct ocsp_result answer;
	bool no_url;	   /* no responder is known for it */
	char url[256];	   /* the responder, for messages (cut) */
	unsigned failures; /* fetches failed in a row */
	char failure[200]; /* the last one's reason */
};
/* leaf (issued by issuer) at now. With fetch, a certificate without a usable answer, or
 * whose answer is past the middle of its validity, is asked for (the endpoint's notify
 * callback runs), and a new one is remembered (at most max, the least recently used one
 * dropped). url: the responder to ask instead of the certificate's own, or NULL. */
void ocsp_store_lookup(struct ocsp_store *s, X509 *leaf, X509 *issuer, const char *url, size_t max,
		       bool fetch, time_t now, struct ocsp_seen *out);
/* Remember a verified answer about leaf (a server's staple, seen by a client); it is not
 * fetched again while it counts (the server staples a fresh one). */
void ocsp_store_put(struct ocsp_store *s, X509 *leaf, X509 *issuer, const char *url,
		    const struct ocsp_result *r, size_t max, time_t now);
/* A copy (OPENSSL_malloc'd, for SSL_set_tlsext_status_ocsp_resp()) of the staple held for
 * the own certificate of SHA-256 hash, if it counts at now; NULL if none. */
unsigned char *ocsp_store_staple(struct ocsp_store *s, const uint8_t hash[32], time_t now,
				 size_t *len);
/* mtls_config_set_ocsp_staple_answer(): the answer given with the config, kept as the staple
 * of st's own certificate if it verifies for it (before st is published). */
void ocsp_store_take_config_staple(struct ocsp_store *s, const struct state *st,
				   const struct mtls_config *given);
/* Does it hold no answer about any peer (read without the lock: a hint)? */
bool ocsp_store_empty(struct ocsp_store *s);
/* Run the endpoint's notify callback (a request may be due). */
void ocsp_store_notify(struct ocsp_store *s);

/* verify_cache.c: successful chain verifications of one state, by chain hash (see file). */
struct verify_cache;
struct verify_cache *verify_cache_new(size_t slots); /* NULL if slots is 0 or no memory */
void verify_cache_free(struct verify_cache *vc);
int verify_cache_key(const struct verify_request *rq, X509 *leaf, STACK_OF(X509) * untrusted,
		     uint8_t key[32]);
/* On a hit, appends the verified chain above the leaf to chain (referenced). */
bool verify_cache_hit(struct verify_cache *vc, const uint8_t key[32], time_t now,
		      STACK_OF(X509) * chain);
/* Remember chain (leaf first) as verified between valid_from and valid_until. */
void verify_cache_put(struct verify_cache *vc, const uint8_t key[32], STACK_OF(X509) * chain,
		      time_t valid_from, time_t valid_until);
void verify_cache_stats(struct verify_cache *vc, unsigned long *hits, unsigned long *misses);

/* sessions.c: the server's resumable sessions, shared by the states of one endpoint as long
 * as its trust anchors stay the same (see file). */
struct sessions;
/* slots 0: a store that keeps no session, only the shared copies of the client CAs'
 * certificates (sessions_share_unkept()). */
struct sessions *sessions_new(size_t slots, const uint8_t trust[32]);
struct sessions *sessions_ref(struct sessions *s);
void sessions_unref(struct sessions *s);
/* Whether s serves a state of these trust anchors and this many slots. */
bool sessions_fit(const struct sessions *s, const uint8_t trust[32], size_t slots);
/* Whether s keeps sessions (then sessions_attach() wires it into the SSL_CTX). */
bool sessions_kept(const struct sessions *s);
/* After a server's full handshake on a store that keeps no sessions: the connection's
 * certificates of the client's CAs (its session's and its verified path's) swapped for the
 * store's shared copies, as on_new() does for a session it keeps. s NULL: nothing. */
void sessions_share_unkept(struct sessions *s, SSL *ssl);
/* The SSL_CTX callbacks of a server that keeps sessions (session ID and TLS 1.3 stateful
 * tickets). The SSL_CTX's app data must be its struct state. */
void sessions_attach(SSL_CTX *ctx);

/* sockbio.c: the BIO every connection's SSL reads and writes through (see the file). */
BIO *sockbio_new(int fd);
/* The first byte received, or -1. */
int sockbio_first_byte(BIO *bio);
/* The first bytes received (up to SOCKBIO_HEAD: a record's type and version); their count. */
#define SOCKBIO_HEAD 3
int sockbio_head(BIO *bio, uint8_t out[SOCKBIO_HEAD]);
/* The last recv came back short: the socket had nothing more at that moment. */
bool sockbio_drained(BIO *bio);
/* The bytes received so far end where a record ends (a record's header and length are
 * followed through the stream): nothing of a record is half read. */
bool sockbio_at_record_end(BIO *bio);
/* Read and drop what the peer already sent (non-blocking, bounded). */
void sockbio_discard_input(BIO *bio);

/* conn.c */
/* OpenSSL's certificate verification callback: verify_chain() on the connection's request. */
int conn_verify_cb(X509_STORE_CTX *xctx, void *arg);
/* OCSP status callbacks: a client's (the server's staple, judged by verify_ocsp()), a
 * server's (its staple, from the endpoint's OCSP store). */
int conn_status_cb(SSL *ssl, void *arg);
int conn_staple_cb(SSL *ssl, void *arg);
/* The ALPN protocol want in a client's offer in[0..inlen) (wire form, untrusted): its length
 * with *out pointing at it in in, or 0 with the protocols offered described in offered
 * ("h2", "http/1.1"; escaped, cut with "..."). */
unsigned int conn_alpn_select(const char *want, const unsigned char *in, unsigned int inlen,
			      const unsigned char **out, char *offered, size_t offered_len);
/* A server's ALPN selection (a state with config->alpn): the configured protocol if the
 * client offers it, else a fatal no_application_protocol alert with the connection's error
 * set. */
int conn_alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		 const unsigned char *in, unsigned int inlen, void *arg);
/* Free a connection (mtls_free() of one). */
void conn_free(struct mtls *c);

#endif /* MTLS_INTERNAL_H */
