/*
 * libmtls: mutual TLS for services, on OpenSSL 3.
 *
 * The only public header of libmtls. It exposes no OpenSSL types.
 *
 * Usage, in the spirit of OpenBSD's libtls:
 *
 *   1. Build a struct mtls_config (secure defaults are set by mtls_config_new()).
 *   2. Create an endpoint with mtls_server_new() or mtls_client_new() and apply the
 *      config with mtls_configure(). Applying a new config later is a reload: new
 *      handshakes use it, established connections keep the one they started with, and a
 *      config that fails to apply leaves the old one in place.
 *   3. For each TCP connection, mtls_accept_fd() or mtls_connect_fd() gives a connection
 *      object; drive mtls_handshake() until it returns 0, then mtls_read()/mtls_write(),
 *      then mtls_close() and mtls_free().
 *
 * Return values: functions return 0 (or a byte count, or a pointer) on success and -1 (or
 * NULL) on failure. Non-blocking calls may return MTLS_WANT_POLLIN or MTLS_WANT_POLLOUT:
 * wait for the fd to become readable / writable and call again.
 *
 * Errors: the message lives on the object that failed (mtls_error(), mtls_config_error()),
 * with a stable reason code (mtls_error_reason()) and a category. Messages never contain
 * key material. An endpoint keeps its errors per thread, as errno is kept: see mtls_error().
 *
 * Signals: the library never raises SIGPIPE (it sends with MSG_NOSIGNAL).
 *
 * Threads: a config is only read, by mtls_configure(), and may be applied to several
 * endpoints (but not changed while another thread applies it); an endpoint may accept or
 * connect from many threads at once and be reconfigured from another; a single connection
 * object must be used by one thread at a time. The library never prints.
 */
#ifndef MTLS_H
#define MTLS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MTLS_VERSION_STRING "0.1.0"

#define MTLS_WANT_POLLIN  (-2)
#define MTLS_WANT_POLLOUT (-3)

/* Protocol versions, for mtls_config_set_protocols(). */
#define MTLS_TLS1_2 0x0303
#define MTLS_TLS1_3 0x0304

/*
 * Why something failed. The names (mtls_reason_name()) are stable and appear in logs and
 * metrics; new reasons are only ever added at the end.
 */
enum mtls_reason {
	MTLS_REASON_NONE = 0,
	/* peer certificate verification */
	MTLS_REASON_NO_CERTIFICATE,	  /* peer sent no certificate */
	MTLS_REASON_UNKNOWN_CA,		  /* chain does not lead to the configured CA */
	MTLS_REASON_SELF_SIGNED,	  /* self-signed certificate not in the trust store */
	MTLS_REASON_EXPIRED,		  /* a certificate in the chain is past notAfter */
	MTLS_REASON_NOT_YET_VALID,	  /* a certificate in the chain is before notBefore */
	MTLS_REASON_BAD_KEY_USAGE,	  /* keyUsage / extendedKeyUsage do not allow this use */
	MTLS_REASON_NAME_MISMATCH,	  /* server name/IP/URI not in the certificate's SANs */
	MTLS_REASON_IDENTITY_NOT_ALLOWED, /* verified, but no allow rule matches */
	MTLS_REASON_PIN_MISMATCH,	  /* SPKI / certificate pins configured, none matches */
	MTLS_REASON_REVOKED,		  /* listed in the issuer's CRL */
	MTLS_REASON_CRL_EXPIRED,	  /* CRL past nextUpdate (and past the grace period) */
	MTLS_REASON_CRL_MISSING,	  /* revocation checking is on but no CRL for an issuer */
	MTLS_REASON_CHAIN_TOO_LONG,	  /* more intermediates than the maximum depth */
	MTLS_REASON_INVALID_CA,		  /* an issuer in the chain is not a CA */
	MTLS_REASON_BAD_SIGNATURE,	  /* a signature in the chain does not verify */
	MTLS_REASON_WEAK_KEY,		  /* RSA < 2048 bits or an unsupported curve */
	MTLS_REASON_WEAK_SIGNATURE,	  /* SHA-1 or MD5 signature */
	MTLS_REASON_BAD_CERTIFICATE,	  /* malformed or otherwise unacceptable certificate */
	/* handshake */
	MTLS_REASON_PROTOCOL_VERSION, /* peer offered no TLS version we accept */
	MTLS_REASON_NOT_TLS,	      /* the bytes received are not a TLS handshake */
	MTLS_REASON_TRUNCATED,	      /* peer closed the connection during the handshake */
	MTLS_REASON_HANDSHAKE_FAILED, /* other handshake failure (no shared cipher, ...) */
	MTLS_REASON_REJECTED_BY_PEER, /* the peer sent an alert refusing us */
	MTLS_REASON_TIMEOUT,	      /* a deadline passed */
	/* loading configuration */
	MTLS_REASON_KEY_MISMATCH,    /* private key does not match the certificate */
	MTLS_REASON_KEY_PERMISSIONS, /* private key file readable by group or others */
	MTLS_REASON_BAD_PEM,	     /* file is not valid PEM of the expected kind */
	MTLS_REASON_BAD_PASSPHRASE,  /* encrypted key and no or a wrong passphrase */
	MTLS_REASON_FILE,	     /* a file could not be read */
	MTLS_REASON_CONFIG,	     /* invalid or incomplete configuration */
	/* other */
	MTLS_REASON_IO,	      /* socket error or connection reset */
	MTLS_REASON_USAGE,    /* API misuse */
	MTLS_REASON_INTERNAL, /* out of memory or unexpected library error */
	/* added later (values stay stable) */
	MTLS_REASON_NONCONFORMING,   /* breaks the strict certificate profile (RFC 5280) */
	MTLS_REASON_LEAF_IS_CA,	     /* the peer's own certificate is a CA certificate */
	MTLS_REASON_ISSUER_NOT_SENT, /* the peer sent its leaf without the intermediate */
	MTLS_REASON_MALFORMED,	     /* a TLS record or handshake message is malformed */
	MTLS_REASON_CRL_INVALID,     /* a CRL does not verify or does not cover the cert */

	/* OCSP (added later too) */
	MTLS_REASON_OCSP_MISSING,     /* must-staple certificate, no valid stapled answer */
	MTLS_REASON_OCSP_UNAVAILABLE, /* OCSP hard-fail and no answer from the responder */
	MTLS_REASON_OCSP_UNKNOWN,     /* OCSP hard-fail and the responder says "unknown" */

	/* ALPN (added later too) */
	MTLS_REASON_NO_APPLICATION_PROTOCOL, /* client offered ALPN, not the server's protocol */
	MTLS_REASON_COUNT
};

enum mtls_category {
	MTLS_CATEGORY_NONE = 0,
	MTLS_CATEGORY_VERIFY,	/* the peer's certificate failed verification */
	MTLS_CATEGORY_AUTHZ,	/* verified but not authorized */
	MTLS_CATEGORY_REVOKED,	/* revocation status refused it */
	MTLS_CATEGORY_PROTOCOL, /* the TLS handshake itself failed */
	MTLS_CATEGORY_CONFIG,	/* local configuration could not be loaded */
	MTLS_CATEGORY_IO,
	MTLS_CATEGORY_USAGE,
	MTLS_CATEGORY_INTERNAL
};

/* Stable snake_case name of a reason ("expired", "unknown_ca", ...); never NULL. */
const char *mtls_reason_name(enum mtls_reason reason);
/* The reason for a name, or MTLS_REASON_NONE if unknown. */
enum mtls_reason mtls_reason_from_name(const char *name);
enum mtls_category mtls_reason_category(enum mtls_reason reason);
const char *mtls_category_name(enum mtls_category category);

/* ---------------------------------------------------------------------------------------
 * Configuration.
 *
 * A config is a description: setters copy what they are given (files are read at once and
 * their contents kept), and mtls_configure() parses and checks the whole. Setters fail only
 * on unreadable files or invalid arguments; the error is on the config.
 *
 * Owned by the caller. mtls_configure() compiles the config into the endpoint's own
 * immutable state, from a private copy of everything in it (the copy of the key and
 * passphrase is wiped once the key is loaded): the caller may change or free the config
 * right after, and nothing it does to the config reaches a running endpoint until the config
 * is applied again. The authz callback's arg is not copied; it must outlive the endpoints
 * configured with it.
 */
struct mtls_config;

struct mtls_config *mtls_config_new(void);
void mtls_config_free(struct mtls_config *config);
const char *mtls_config_error(const struct mtls_config *config);
enum mtls_reason mtls_config_error_reason(const struct mtls_config *config);

/* Own certificate: a PEM file with the leaf first, then any intermediates to send. */
int mtls_config_set_cert_file(struct mtls_config *config, const char *path);
int mtls_config_set_cert_mem(struct mtls_config *config, const uint8_t *pem, size_t len);
/* Own private key (PEM, PKCS#8 or traditional, optionally encrypted). A key file readable
 * by group or others is refused at mtls_configure() unless
 * mtls_config_insecure_key_permissions() was called. Readable by its group counts as private
 * only when the file belongs to root or the process's user, its group is that user's own
 * (named after it, with no other members) and the group may not write: a daemon running as
 * user mtls (group mtls) reads a key 'chown root:mtls; chmod 0640'. */
int mtls_config_set_key_file(struct mtls_config *config, const char *path);
int mtls_config_set_key_mem(struct mtls_config *config, const uint8_t *pem, size_t len);
/* Passphrase of an encrypted key, given directly, read from a file (first line), or taken
 * from an environment variable. The copy is wiped when the config is freed. A passphrase
 * file readable by group or others is refused at once, as a key file is, unless
 * mtls_config_insecure_key_permissions() was called before. */
int mtls_config_set_key_passphrase(struct mtls_config *config, const char *passphrase);
int mtls_config_set_key_passphrase_file(struct mtls_config *config, const char *path);
int mtls_config_set_key_passphrase_env(struct mtls_config *config, const char *name);
/* Own private key on a PKCS#11 token (a hardware security module, a smart card, SoftHSM),
 * named by an RFC 7512 URI: "pkcs11:token=LABEL;object=LABEL" (or id=%01...; type=private
 * may be given; the query part may name the module: ?module-path=/usr/lib/...so). The key
 * never leaves the token: it signs there, through OpenSSL's PKCS#11 engine (Debian:
 * libengine-pkcs11-openssl). It replaces a key file or PEM given before, and one given after
 * replaces it. The URI is checked at once: one holding a PIN (pin-value, pin-source) or not
 * naming a private key is refused (reason config). The token is opened at mtls_configure():
 * the key passphrase setters above give the token's user PIN (never in the URI); the PIN is
 * used for the login and wiped like a passphrase. Failures there: a wrong, missing or locked
 * PIN (bad_passphrase), no module, token or matching key (file), a key that is not the
 * certificate's (key_mismatch). File permission checks do not apply. The token must stay
 * present while the endpoint signs handshakes with it. The string is copied. */
int mtls_config_set_key_uri(struct mtls_config *config, const char *uri);
/* The PKCS#11 module (shared object) that reaches the token of mtls_config_set_key_uri().
 * NULL or "": the URI's module-path, else p11-kit's proxy (p11-kit-proxy.so, every module
 * registered with p11-kit). Not checked until mtls_configure(), which refuses a module that
 * cannot be loaded (reason file). The string is copied. */
int mtls_config_set_pkcs11_module(struct mtls_config *config, const char *path);

/* Trusted roots for the peer's chain (PEM bundle). The system store is never used. */
int mtls_config_set_ca_file(struct mtls_config *config, const char *path);
int mtls_config_set_ca_mem(struct mtls_config *config, const uint8_t *pem, size_t len);

/* Certificate revocation lists (PEM; several may be added). With any CRL configured, the
 * leaf's issuer must have a valid CRL; mtls_config_set_crl_check_chain() extends that to
 * every certificate in the chain. */
int mtls_config_add_crl_file(struct mtls_config *config, const char *path);
int mtls_config_add_crl_mem(struct mtls_config *config, const uint8_t *pem, size_t len);
int mtls_config_set_crl_check_chain(struct mtls_config *config, int on);
/* A CRL past its nextUpdate is refused (reason crl_expired) by default. With a grace period
 * of N seconds it is still used until nextUpdate + N, and the verification result carries a
 * warning (mtls_conn_warning()). */
int mtls_config_set_crl_grace(struct mtls_config *config, int64_t seconds);

/*
 * OCSP (RFC 6960). The library never touches the network: it says which answers it wants
 * (mtls_ocsp_job_next() below) and an application thread fetches them; the answers are
 * verified when they come back and kept per endpoint (they survive reloads).
 *
 * Peer checking, by mode (default off):
 *   off        no answers are asked for; an answer already known (a staple seen before)
 *              that says revoked still refuses.
 *   soft-fail  the peer's certificate must not be revoked: an answer saying revoked
 *              refuses it (reason revoked); without an answer (none yet, the responder
 *              down, no responder known) or with "unknown", the peer is accepted with a
 *              warning (mtls_conn_warning(), mtls_conn_ocsp() says MTLS_OCSP_RESULT_SOFT_FAIL)
 *              and an answer is asked for. When it arrives and says revoked, re-judge the
 *              live connections (mtls_conn_recheck()): that peer is refused then.
 *   hard-fail  the peer's certificate needs a good answer: none is ocsp_unavailable, and
 *              "unknown" ocsp_unknown. A handshake never waits for a responder (OpenSSL 3.0
 *              can suspend a client's verification but not a server's): the first one
 *              without an answer is refused and asks for one, and a retry once it has come
 *              succeeds.
 * Every path judges OCSP alike: full handshakes, verification cache hits, resumed sessions,
 * mtls_conn_recheck(), mtls_verify_chain_pem(). An answer counts until its nextUpdate (a
 * revocation for good, certificateHold aside); answers are asked for again at the middle
 * of their validity while their certificate keeps being seen (within a day).
 *
 * Stapling (RFC 6066): a client endpoint always asks the server for a stapled answer and
 * checks one it gets, whatever the mode: revoked refuses, good accepts without asking the
 * responder; an invalid staple counts as none. A server certificate with the TLS feature
 * status_request (RFC 7633, "must staple") is refused without a good or unknown staple
 * (ocsp_missing), on every full handshake, in every mode. A server endpoint staples an
 * answer for its own certificate with mtls_config_set_ocsp_staple(), or when its
 * certificate is must-staple; the answer is asked for like the peers' (a job), checked, and
 * served while valid to clients that ask; a new certificate (a reload) needs its own.
 */
enum mtls_ocsp_mode { MTLS_OCSP_OFF = 0, MTLS_OCSP_SOFT_FAIL, MTLS_OCSP_HARD_FAIL };
int mtls_config_set_ocsp_mode(struct mtls_config *config, enum mtls_ocsp_mode mode);
/* The responder to ask about every certificate (peers' and the own one), instead of the one
 * each certificate names (authorityInfoAccess). http:// or https://, at most 2048 bytes. */
int mtls_config_set_ocsp_url(struct mtls_config *config, const char *url);
/* Server only: staple an answer for the own certificate (default off, on for a must-staple
 * certificate). mtls_configure() then fails if the certificate's issuer (in the chain file
 * or the CA bundle) or a responder URL cannot be found. */
int mtls_config_set_ocsp_staple(struct mtls_config *config, int on);
/* Server only: an OCSP answer (DER, copied) for the certificate of this config, taken by
 * mtls_configure() before the endpoint starts using that certificate, so that a renewed
 * certificate is stapled from its first handshake on (the previous certificate's staple is
 * kept for handshakes still on it). An answer that does not verify for that certificate is
 * dropped, not an error: the staple is then asked for as usual (a job). */
int mtls_config_set_ocsp_staple_answer(struct mtls_config *config, const uint8_t *der, size_t len);
/* Answers an endpoint keeps, one per certificate (default 4096; 1 to 65536); the least
 * recently used goes first. */
#define MTLS_OCSP_CACHE_DEFAULT 4096
int mtls_config_set_ocsp_cache(struct mtls_config *config, size_t entries);

/* Maximum number of intermediate certificates between the leaf and the root (default 4). */
int mtls_config_set_verify_depth(struct mtls_config *config, int depth);
/* Minimum and maximum protocol versions (default TLS 1.2 .. TLS 1.3). Versions below TLS
 * 1.2 are refused. */
int mtls_config_set_protocols(struct mtls_config *config, int min_version, int max_version);
/* Verify at a fixed time instead of now (for mtls verify and tests). 0 means now. */
int mtls_config_set_verify_time(struct mtls_config *config, time_t when);
/* ALPN (RFC 7301) protocol name, e.g. "postgresql" (1 to 255 printable ASCII bytes, no
 * space). A client endpoint offers it; a server endpoint selects it when the client offers it
 * and refuses the handshake (fatal alert no_application_protocol, reason
 * no_application_protocol, with a message saying which protocols the client offered) when the
 * client offers ALPN without it. A client that offers no ALPN at all is accepted
 * (mtls_conn_alpn() then returns NULL): the caller decides. A client whose server selects
 * nothing is accepted too (mtls_conn_alpn() NULL); one whose server refuses the protocol
 * fails with rejected_by_peer. NULL: none (the default; a server then ignores what clients
 * offer). */
int mtls_config_set_alpn(struct mtls_config *config, const char *protocol);
/* TLS 1.3 session tickets for resumption (default on). A resumed session is re-checked
 * against the current CRLs, validity time and allow rules before it is accepted. */
int mtls_config_set_session_tickets(struct mtls_config *config, int on);

/* Sessions a server keeps for resumption (default 4096; 0 turns resumption off). Tickets
 * are single-use random identifiers of sessions held in the server's memory (about 9 KiB
 * each with OpenSSL 3.0: the peer's decoded certificates); the store survives a reload
 * unless the CA bundle, verify depth or chain CRL checks change. */
#define MTLS_SESSION_CACHE_DEFAULT 4096
int mtls_config_set_session_cache(struct mtls_config *config, size_t entries);

/* Chain verifications an endpoint remembers, by SHA-256 of the presented chain (default
 * 4096; 0 turns the cache off). A peer that reconnects with the same chain skips chain
 * building and signature checks while the chain's validity window and the CRLs' nextUpdate
 * allow; its revocation and the allow rules are checked on every handshake. Any reload
 * empties the cache. */
#define MTLS_VERIFY_CACHE_DEFAULT 4096
int mtls_config_set_verify_cache(struct mtls_config *config, size_t entries);

/*
 * Authorization of the peer's identity, checked after the chain verifies.
 *
 * Name rules (URI, DNS, email, CN) are alternatives: one match is enough. Pins (SPKI,
 * certificate) are alternatives too; when both kinds are configured, the peer must satisfy
 * both. Then the callback, if any, has the last word.
 *
 *   URI pattern: exact, or with "*" standing for exactly one whole path segment (as in
 *                spiffe://example.org/ns/STAR/sa/api, with a bare * for STAR). Scheme and
 *                authority compare case-insensitively (RFC 3986), the path exactly. A "*"
 *                stands for 1 to 255 bytes of RFC 3986 path characters, never "." or ".."
 *                nor a segment with an escaped '/', '\', '.', '%' or control byte; no URI
 *                over 2048 bytes matches. A certificate with a URI SAN that cannot be an
 *                identity (a spiffe: URI that breaks the SPIFFE ID rules, a dot segment or
 *                such an escape in the path, control bytes, over 2048 bytes) is refused as
 *                bad_certificate whatever the rules.
 *   DNS:         exact (case-insensitive) or "*.example.org" for one leftmost label.
 *   email:       an address (name@example.org) or "*@example.org" for every address of
 *                that domain, from the certificate's rfc822Name SANs; the domain compares
 *                case-insensitively, the part before the '@' exactly (RFC 5321).
 *   CN:          exact.
 *   SPKI/cert:   SHA-256 of the DER SubjectPublicKeyInfo / certificate, as 64 hex digits
 *                (colons allowed) or base64.
 *
 * A server endpoint refuses to apply a config with no name rule, pin or callback, unless
 * mtls_config_set_allow_any_identity() says that any certificate from the CA is welcome.
 * A client endpoint checks the server name given to mtls_connect_fd() in any case; its
 * allow rules are optional extra constraints.
 */
int mtls_config_allow_uri(struct mtls_config *config, const char *pattern);
int mtls_config_allow_dns(struct mtls_config *config, const char *pattern);
int mtls_config_allow_cn(struct mtls_config *config, const char *cn);
int mtls_config_allow_email(struct mtls_config *config, const char *pattern);
int mtls_config_allow_spki_sha256(struct mtls_config *config, const char *pin);
int mtls_config_allow_cert_sha256(struct mtls_config *config, const char *pin);
int mtls_config_set_allow_any_identity(struct mtls_config *config, int on);
/* Whether identity (a peer's, as mtls_peer_identity() gives it) matches pattern under the
 * rules above: a pattern with "://" as mtls_config_allow_uri() (the URI rule); a host name
 * or "*.example.org" as mtls_config_allow_dns() (the identity must then be a host name
 * itself: a CN "evil one.example.org" matches no DNS pattern); anything else by exact
 * comparison. 1 or 0 (also for NULL or empty arguments). The identity string does not say
 * which field of the certificate it came from: a certificate without URI and DNS SANs is
 * known by its CN, which then meets the patterns as it reads. */
int mtls_identity_match(const char *pattern, const char *identity);

struct mtls_peer;
/* Return 1 to allow, 0 to refuse (the handshake fails with identity_not_allowed and the
 * message written to why, if any). Called from the handshake, in the handshaking thread. */
typedef int (*mtls_authz_cb)(const struct mtls_peer *peer, void *arg, char *why, size_t why_len);
int mtls_config_set_authz_cb(struct mtls_config *config, mtls_authz_cb cb, void *arg);

/*
 * Weakening options. Each one is recorded; mtls_config_insecure() lists those in effect so
 * that a daemon can log a warning.
 */
int mtls_config_insecure_key_permissions(struct mtls_config *config);
/* Client only: do not check the server's name (chain and EKU are still verified). */
int mtls_config_insecure_no_verify_name(struct mtls_config *config);
/* Server only: a client certificate is asked for but not required (for a service that lets
 * new hosts enroll before they have one, and requires a verified peer per request itself).
 * A client that presents a certificate is verified exactly as without this option (chain,
 * validity, revocation, key usage, allow rules, authz callback) and refused if it fails: a
 * bad certificate is never taken for no certificate. A client that presents none completes
 * the handshake without an identity: mtls_conn_peer() returns NULL (the allow rules and the
 * authz callback are not consulted), on a full handshake and on every resumption of that
 * session alike; a session made with a certificate resumes with its identity, judged again
 * as always. Listed by mtls_config_insecure() as "insecure_optional_client_cert".
 * mtls_configure() of a client endpoint with it fails (reason config). */
int mtls_config_insecure_optional_client_cert(struct mtls_config *config);
/* Server only: a client certificate whose extendedKeyUsage names serverAuth instead of
 * clientAuth is accepted as a client certificate (everything else is verified as always).
 * For a service that authenticates hosts by any certificate its CA issued them, such as a
 * CA's renewal API, where a server's own certificate is its credential. Listed by
 * mtls_config_insecure() as "insecure_server_eku_clients". mtls_configure() of a client
 * endpoint with it fails (reason config). */
int mtls_config_insecure_server_eku_clients(struct mtls_config *config);
/* Server only: audit mode, for a staged rollout. The whole decision runs on every client
 * that presents a certificate (chain, validity, key usage, revocation, OCSP, allow rules,
 * authz callback), on full handshakes, resumptions and mtls_conn_recheck() alike; a client
 * it refuses is let in anyway: the handshake succeeds, mtls_conn_peer() describes the
 * certificate presented (its identity from its names, no matched rule: NOT verified), and
 * mtls_conn_would_refuse() gives the reason it would have been refused. A client that
 * presents no certificate is refused as without this option (unless
 * mtls_config_insecure_optional_client_cert()), as is one whose certificate cannot be
 * described at all, and internal failures stay failures. Whoever reads the peer of such a
 * connection must check mtls_conn_would_refuse() before trusting it. Listed by
 * mtls_config_insecure() as "insecure_audit"; mtls_configure() of a client endpoint with it
 * fails (reason config). */
int mtls_config_insecure_audit(struct mtls_config *config);
/* Comma-separated names of the insecure options in effect, or "" if none. */
const char *mtls_config_insecure(const struct mtls_config *config);

/* ---------------------------------------------------------------------------------------
 * Endpoints and connections.
 *
 * struct mtls is either an endpoint (mtls_server_new(), mtls_client_new()) or a connection
 * made from one. Free connections with mtls_free() before the endpoint they came from.
 * Each call below is for one kind, except mtls_free(), the mtls_error*() calls and
 * mtls_conn_warning(), which take both. Given the other kind, a connection call returns -1,
 * NULL or 0 and sets no error; an endpoint call fails with reason usage on the object given
 * (the mtls_endpoint_*() getters and mtls_verified_peer() return 0 or NULL).
 */
struct mtls;

struct mtls *mtls_server_new(void);
struct mtls *mtls_client_new(void);
/* Apply (or re-apply: reload) a config. On failure the endpoint keeps its previous config
 * and the error is on the endpoint. */
int mtls_configure(struct mtls *endpoint, struct mtls_config *config);
void mtls_free(struct mtls *ctx);

/* The last error of a connection. On an endpoint, which many threads may use at once: the
 * error of the calling thread's last failed call on that endpoint ("" and reason none after
 * its mtls_configure() or mtls_verify_chain_pem() succeeded), so that threads never read
 * each other's errors. The string stays valid until the same thread's next call that fails
 * on any endpoint, its freeing that endpoint, or its exit. */
const char *mtls_error(const struct mtls *ctx);
enum mtls_reason mtls_error_reason(const struct mtls *ctx);
enum mtls_category mtls_error_category(const struct mtls *ctx);

/* New server-side connection on an accepted socket. The fd stays owned by the caller (it is
 * never closed by the library). The error, if NULL, is on the endpoint. */
struct mtls *mtls_accept_fd(struct mtls *server, int fd);
/* New client-side connection on a connected socket; server_name is the DNS name or IP
 * address the server's certificate must carry (required unless
 * mtls_config_insecure_no_verify_name()). */
struct mtls *mtls_connect_fd(struct mtls *client, int fd, const char *server_name);

/* Drive the handshake: 0 done, MTLS_WANT_POLLIN / MTLS_WANT_POLLOUT, or -1 refused or failed
 * (see mtls_error_reason()). On a blocking fd it returns only 0 or -1. */
int mtls_handshake(struct mtls *conn);
/* Read up to len bytes: the count, 0 at the peer's orderly close, MTLS_WANT_*, or -1.
 * Records are read ahead: after mtls_handshake() returns 0 and after every read that returned
 * data, more may already be buffered, so call mtls_read() again before waiting for POLLIN
 * (or ask mtls_read_drained()). */
ssize_t mtls_read(struct mtls *conn, void *buf, size_t len);
/* 1 when nothing is buffered and the last receive found the socket empty: a read now would
 * only return MTLS_WANT_POLLIN, so an event loop can wait for POLLIN without trying. Data
 * that arrived since then makes the socket readable, so waiting loses nothing. */
int mtls_read_drained(const struct mtls *conn);
/* A connection gives its record buffers (up to about 34 KiB) back as soon as they are empty,
 * and mtls_read() frees them whenever it returns MTLS_WANT_POLLIN, so an idle connection
 * holds none. On a busy connection that costs a malloc and a free of each buffer per request.
 * keep = 1 keeps them between records; keep = 0 (the default) gives them back now, unless a
 * partial record or unsent data is in them, and after every record again. An event loop
 * that knows which connections are busy keeps theirs and turns this off when they go quiet. */
void mtls_keep_buffers(struct mtls *conn, int keep);
/* An idle connection made small. OpenSSL keeps about 18 KiB per connection for as long as
 * it lasts (the SSL object, a cipher context per direction, the session, the peer's
 * certificates), none of it needed to move more records. mtls_park() hands a TLS 1.3
 * connection's record keys and sequence numbers to libmtls's own record layer (AES-GCM or
 * ChaCha20-Poly1305 through OpenSSL; the peer's KeyUpdate answered, alerts, close_notify)
 * and frees OpenSSL's state: the connection then holds well under 1 KiB plus its peer's
 * certificates as DER (for mtls_conn_recheck()), and record buffers only while data moves.
 * Everything else works as before: mtls_read(), mtls_write(), mtls_close(),
 * mtls_read_drained(), mtls_keep_buffers(), the mtls_conn_*() calls. It cannot be undone.
 * Returns 1 parked (or already), 0 when the connection cannot be parked now (TLS 1.2, the
 * handshake not done, a record or a post-handshake message half read, data received and not
 * yet read, a write that wanted POLLOUT, a KeyUpdate already processed by OpenSSL, a CCM
 * suite, a max_fragment_length the peer asked for), -1 without memory (the connection
 * carries on unparked). OpenSSL does not wipe the traffic secrets it held when it frees
 * them; libmtls wipes its own copies.
 * Call it on a connection that has gone quiet, as an event loop's sweep of idle ones. */
int mtls_park(struct mtls *conn);
/* 1 when the connection is parked. */
int mtls_conn_parked(const struct mtls *conn);
/* Write up to len bytes: the count written (possibly fewer), MTLS_WANT_*, or -1. */
ssize_t mtls_write(struct mtls *conn, const void *buf, size_t len);
/* Send close_notify: 0 done, MTLS_WANT_*, or -1. Does not close the fd. */
int mtls_close(struct mtls *conn);

/* Blocking helpers for simple programs: poll() until done or timeout_ms passes (-1: no
 * limit; then reason timeout). They work on blocking and non-blocking fds alike: a blocking
 * fd is switched to non-blocking while a helper runs, so that the timeout holds, and back. */
int mtls_handshake_wait(struct mtls *conn, int timeout_ms);
/* Write all len bytes: 0 or -1. */
int mtls_write_all(struct mtls *conn, const void *buf, size_t len, int timeout_ms);
ssize_t mtls_read_wait(struct mtls *conn, void *buf, size_t len, int timeout_ms);
int mtls_close_wait(struct mtls *conn, int timeout_ms);

/* After the handshake. Strings are owned by the connection. mtls_conn_peer() is the peer's
 * verified identity; NULL before the handshake is done, on failure, and on a server with
 * mtls_config_insecure_optional_client_cert() whose client presented no certificate. On a
 * server with mtls_config_insecure_audit() it may describe a certificate the decision
 * refused: mtls_conn_would_refuse() says whether it did. */
const struct mtls_peer *mtls_conn_peer(const struct mtls *conn);
const char *mtls_conn_version(const struct mtls *conn); /* "TLSv1.3" */
const char *mtls_conn_cipher(const struct mtls *conn);	/* "TLS_AES_128_GCM_SHA256" */
int mtls_conn_resumed(const struct mtls *conn);
/* The protocol ALPN selected on this connection (mtls_config_set_alpn()), or NULL (none
 * selected, or the handshake is not done). Owned by the connection. */
const char *mtls_conn_alpn(const struct mtls *conn);
/* A warning about an accepted handshake (e.g. a CRL used within its grace period), or
 * NULL. On an endpoint: the warning of the calling thread's last mtls_verify_chain_pem()
 * on it (see there). */
const char *mtls_conn_warning(const struct mtls *conn);
/* Judge an established connection's peer again under endpoint's CURRENT configuration (the
 * one its last mtls_configure() applied), with the same decision as a handshake: the chain
 * the peer presented, built again against the current CA bundle, revocation under the
 * current CRLs (judged now, or at mtls_config_set_verify_time()), the server name, the
 * current allow rules. The certificates' validity is judged at the time of the handshake: a
 * peer certificate that expired since (renewed, typically) does not end the connection. A daemon
 * calls it for every live connection after a reload changed what is trusted, and closes those
 * refused. endpoint must be the endpoint conn was made from (or one of the same kind). A peer that
 * presented no certificate stays accepted only while the config still makes the client certificate
 * optional.
 *
 * Returns 0 if the peer is still accepted (mtls_conn_peer() is unchanged), -1 if refused
 * (reason and message on conn: revoked, identity_not_allowed, expired, unknown_ca, ...) or
 * on misuse (reason usage). The connection itself is untouched: closing it is the caller's.
 * Threads: call it from the thread that uses conn; reloads may run meanwhile. */
int mtls_conn_recheck(struct mtls *conn, struct mtls *endpoint);
/* Audit mode (mtls_config_insecure_audit()): why the connection's peer, let in, would have
 * been refused without it (MTLS_REASON_IDENTITY_NOT_ALLOWED, MTLS_REASON_UNKNOWN_CA, ...),
 * and the message that refusal would have had (owned by the connection; NULL when the
 * reason is none). MTLS_REASON_NONE: the peer passed the decision (or no handshake done).
 * mtls_conn_recheck() judges it again: a peer the current config still audits keeps (or
 * gets) a reason and is not refused; one that now passes has none. */
enum mtls_reason mtls_conn_would_refuse(const struct mtls *conn);
const char *mtls_conn_would_refuse_message(const struct mtls *conn);
/* What OCSP said of a connection's accepted peer. */
enum mtls_ocsp_result {
	MTLS_OCSP_RESULT_NONE = 0,  /* not checked: mode off and no staple */
	MTLS_OCSP_RESULT_GOOD,	    /* a good answer (stapled or from the responder) */
	MTLS_OCSP_RESULT_SOFT_FAIL, /* soft-fail: accepted without a good answer (see the
				     * warning) */
};
enum mtls_ocsp_result mtls_conn_ocsp(const struct mtls *conn);

/*
 * Fetching OCSP answers for an endpoint (see OCSP above). One application thread loops:
 *
 *   job = mtls_ocsp_job_next(endpoint, &due);
 *   if job: POST mtls_ocsp_job_request() to mtls_ocsp_job_url() (Content-Type
 *           application/ocsp-request), then mtls_ocsp_job_done() with the body of a 200
 *           answer, or mtls_ocsp_job_failed() with why;
 *   else:   sleep until due (0: until notified), or the notify callback runs.
 *
 * A job is for a peer's certificate or for the endpoint's own staple
 * (mtls_ocsp_job_is_staple()); the endpoint decides what is due: certificates seen without
 * a usable answer, answers past the middle of their validity, failed ones again after a
 * pause that doubles up to a minute. Jobs are owned by the caller until done or failed
 * (which free them), and are finished on the endpoint they came from.
 */
struct mtls_ocsp_job;
/* Called (from a handshake's thread, or mtls_configure()'s) when a job may be due: it must
 * not block (signal a condition variable, write to a pipe). NULL turns it off. */
typedef void (*mtls_ocsp_notify_cb)(void *arg);
void mtls_endpoint_set_ocsp_notify(struct mtls *endpoint, mtls_ocsp_notify_cb cb, void *arg);
/* The next job due, or NULL; then *due (if not NULL) is when one will be (0: none known). */
struct mtls_ocsp_job *mtls_ocsp_job_next(struct mtls *endpoint, time_t *due);
/* The DER OCSPRequest (one SHA-1 CertID, no nonce) and its length; owned by the job. */
const uint8_t *mtls_ocsp_job_request(const struct mtls_ocsp_job *job, size_t *len);
const char *mtls_ocsp_job_url(const struct mtls_ocsp_job *job);
/* "subject CN=x, serial 0A1B" of the certificate asked about. */
const char *mtls_ocsp_job_subject(const struct mtls_ocsp_job *job);
int mtls_ocsp_job_is_staple(const struct mtls_ocsp_job *job);
/* What an answer said. */
enum mtls_ocsp_status {
	MTLS_OCSP_STATUS_GOOD = 1,
	MTLS_OCSP_STATUS_REVOKED,
	MTLS_OCSP_STATUS_UNKNOWN,
};
/* The responder's answer (untrusted bytes): verified as a staple is (signed by the
 * certificate's issuer or a responder certificate it issued with OCSPSigning, about that
 * certificate, within its times) and kept. Returns its status, or -1 if it is refused
 * (counted as a failed fetch; the reason is mtls_error() on the endpoint). *recheck (may be
 * NULL) is set to 1 when the answer about a peer changed to revoked or unknown: re-judge the
 * endpoint's live connections (mtls_conn_recheck()). Frees the job. */
int mtls_ocsp_job_done(struct mtls *endpoint, struct mtls_ocsp_job *job, const uint8_t *der,
		       size_t len, int *recheck);
/* The fetch failed (why: one phrase, e.g. "connection refused"); it is retried later, and
 * hard-fail refusals name it. Frees the job. */
void mtls_ocsp_job_failed(struct mtls *endpoint, struct mtls_ocsp_job *job, const char *why);
/* Drop a job without an outcome (shutting down). */
void mtls_ocsp_job_free(struct mtls_ocsp_job *job);
/* A server endpoint: staple this answer (DER) for its current certificate, got some other
 * way than a job. Checked as mtls_ocsp_job_done() checks one. 0, or -1 (reason and message
 * on the endpoint). Thread-safe. */
int mtls_endpoint_set_ocsp_staple(struct mtls *endpoint, const uint8_t *der, size_t len);
/* The staple held for the endpoint's current certificate: 1 and its thisUpdate and the end
 * of its validity (nextUpdate, or earlier: see ocsp.c), 0 if the endpoint staples but holds
 * none for it (both times 0), -1 if it does not staple. A staple past its validity is no
 * longer served. */
int mtls_endpoint_ocsp_staple_times(const struct mtls *endpoint, time_t *this_update,
				    time_t *next_update);
/* OCSP answers the endpoint keeps about peers now. */
size_t mtls_endpoint_ocsp_cache_entries(const struct mtls *endpoint);

/* When the own certificate, the earliest-expiring CA certificate and the earliest CRL
 * nextUpdate of the endpoint's current config run out, as UNIX times (0 if none), so that a
 * daemon can export them and an operator can alert before expiry. */
time_t mtls_endpoint_cert_not_after(const struct mtls *endpoint);
time_t mtls_endpoint_ca_not_after(const struct mtls *endpoint);
time_t mtls_endpoint_crl_next_update(const struct mtls *endpoint);
/* Verification cache lookups of the endpoint's current configuration (counted from its
 * last mtls_configure()): hits skipped chain verification, misses verified in full. */
void mtls_endpoint_verify_cache_stats(const struct mtls *endpoint, unsigned long *hits,
				      unsigned long *misses);

/* ---------------------------------------------------------------------------------------
 * The peer's verified certificate and identity. Owned by the connection (or verifier).
 */
/* Each getter takes NULL (no peer: a client without a certificate, see
 * mtls_config_insecure_optional_client_cert()) and then returns NULL, or 0 for the times and
 * counts. */
/* The primary identity: first URI SAN, else first DNS SAN, else the subject CN, else
 * "sha256:" and the certificate hash. Never NULL for a peer. */
const char *mtls_peer_identity(const struct mtls_peer *peer);
const char *mtls_peer_subject(const struct mtls_peer *peer); /* RFC 2253 */
const char *mtls_peer_issuer(const struct mtls_peer *peer);
const char *mtls_peer_common_name(const struct mtls_peer *peer); /* or NULL */
const char *mtls_peer_serial(const struct mtls_peer *peer);	 /* upper-case hex */
time_t mtls_peer_not_before(const struct mtls_peer *peer);
time_t mtls_peer_not_after(const struct mtls_peer *peer);
const char *mtls_peer_cert_sha256(const struct mtls_peer *peer); /* lower-case hex */
const char *mtls_peer_spki_sha256(const struct mtls_peer *peer); /* lower-case hex */
/* 1 if the peer's certificate names clientAuth in its extendedKeyUsage, else 0 (a server
 * certificate let in by mtls_config_insecure_server_eku_clients()). */
int mtls_peer_client_eku(const struct mtls_peer *peer);
size_t mtls_peer_uri_count(const struct mtls_peer *peer);
const char *mtls_peer_uri(const struct mtls_peer *peer, size_t i);
size_t mtls_peer_dns_count(const struct mtls_peer *peer);
const char *mtls_peer_dns(const struct mtls_peer *peer, size_t i);
size_t mtls_peer_ip_count(const struct mtls_peer *peer);
const char *mtls_peer_ip(const struct mtls_peer *peer, size_t i);
/* Email (RFC 822) SANs, as in the certificate. */
size_t mtls_peer_email_count(const struct mtls_peer *peer);
const char *mtls_peer_email(const struct mtls_peer *peer, size_t i);
/* The allow rule that admitted the peer ("uri:spiffe://...", "any", ...), or NULL. */
const char *mtls_peer_matched_rule(const struct mtls_peer *peer);

/* ---------------------------------------------------------------------------------------
 * Verification without a handshake: check a PEM certificate chain (leaf first, then
 * untrusted intermediates) exactly as a configured endpoint would check a peer's. A server
 * endpoint verifies a client certificate, a client endpoint a server certificate against
 * expected_name (DNS name or IP; may be NULL if the config allows that). expected_uri, if
 * not NULL, must be one of the certificate's URI SANs.
 *
 * Returns 0 if accepted (the peer is then available with mtls_verified_peer()), -1 if
 * refused or on error (reason and message on the endpoint).
 *
 * Threads: it may run in several threads at once on one endpoint, beside handshakes and
 * reloads. Its results (verdict, peer, warning) are kept per calling thread, so each thread
 * reads its own with mtls_verified_peer(), mtls_conn_warning() and mtls_error() on the
 * endpoint.
 */
int mtls_verify_chain_pem(struct mtls *endpoint, const uint8_t *pem, size_t len,
			  const char *expected_name, const char *expected_uri);
/* The peer accepted by the calling thread's last mtls_verify_chain_pem() on endpoint, or
 * NULL (refused, or this thread verified nothing there). Owned by the library, valid until
 * the same thread calls mtls_verify_chain_pem() again (on any endpoint), frees that
 * endpoint, or exits; another thread's calls never touch it. */
const struct mtls_peer *mtls_verified_peer(const struct mtls *endpoint);

#ifdef __cplusplus
}
#endif

#endif /* MTLS_H */
