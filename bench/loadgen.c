/*
 * loadgen: the benchmark client. Plain OpenSSL (not libmtls), so the terminator under test
 * and the client share no code.
 *
 *   loadgen handshakes --connect HOST:PORT [TLS options] [--resume] [--threads T] [--seconds S]
 *       new TCP connection + full (or resumed) mutual-TLS handshake + one 64-byte round trip
 *       through an echo target, in a loop; prints rate and client CPU.
 *   loadgen latency --connect HOST:PORT [TLS options] --connections N [--seconds S] [--size B]
 *       N persistent connections, each sending B bytes and waiting for the echo, in a loop;
 *       prints requests/s and latency p50/p99/p999.
 *   loadgen bulk --connect HOST:PORT [TLS options] [--seconds S]
 *       one connection streaming 64 KiB writes with the echo read back concurrently.
 *   loadgen idle --connect HOST:PORT [TLS options] --connections N [--seconds S]
 *                [--fleet] [--resume] [--no-exchange]
 *       open N connections (full handshake + one round trip, the answer and whatever the
 *       server sent with it read), print "held N", hold them S seconds. --no-exchange: idle
 *       right after the handshake, nothing read; --resume: each connection after the first
 *       resumes the session of the one before.
 *
 * TLS options: --cert FILE --key FILE --ca FILE --name SERVERNAME [--tls13-suite NAME];
 * --plain for plaintext (the upper bound). --fleet (with --cert/--key of an issuing CA, and
 * its chain up to the root as the --cert file): every connection presents a client
 * certificate of its own, made here and signed by that CA (P-256, URI
 * spiffe://bench.test/client-N), as a fleet of distinct clients does; without it every
 * connection presents the same certificate, which a server may answer from a cache.
 * Every loop is bounded by --seconds (default 5). Output: one line of key=value results.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "clock.h"

struct opts {
	const char *mode;
	const char *connect;
	const char *cert, *key, *ca, *name, *suite;
	bool plain, resume, fleet, no_exchange;
	int threads, connections, size;
	double seconds;
};

static struct opts o = {.threads = 1,
			.connections = 1,
			.size = 64,
			.seconds = 5,
			.suite = "TLS_AES_128_GCM_SHA256"};
static struct sockaddr_storage target;
static char server_name[256]; /* a copy: OpenSSL's SNI macro takes a non-const pointer */
static socklen_t target_len;
static SSL_CTX *ctx;
static atomic_ullong done_ops, failed_ops, resumed_ops;
static atomic_bool stop;
/* --fleet: the issuing CA that signs a certificate per connection, and its chain */
static X509 *fleet_ca;
static EVP_PKEY *fleet_ca_key;
static STACK_OF(X509) * fleet_chain;

static void die(const char *what)
{
	fprintf(stderr, "loadgen: %s\n", what);
	ERR_print_errors_fp(stderr);
	exit(1);
}

static int dial(void)
{
	int one = 1;
	int fd = socket(target.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&target, target_len) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

struct conn {
	int fd;
	SSL *ssl;
};

static int conn_write(struct conn *c, const void *buf, int len)
{
	if (c->ssl == NULL)
		return (int)send(c->fd, buf, (size_t)len, MSG_NOSIGNAL);
	return SSL_write(c->ssl, buf, len);
}

static int conn_read(struct conn *c, void *buf, int len)
{
	if (c->ssl == NULL)
		return (int)recv(c->fd, buf, (size_t)len, 0);
	return SSL_read(c->ssl, buf, len);
}

/* Write len bytes and read len bytes back (an echo target). */
static bool round_trip(struct conn *c, char *buf, int len)
{
	int got = 0;

	if (conn_write(c, buf, len) != len)
		return false;
	while (got < len) {
		int n = conn_read(c, buf + got, len - got);

		if (n <= 0)
			return false;
		got += n;
	}
	return true;
}

static bool add_ext(X509 *cert, X509V3_CTX *v3, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, v3, nid, value);
	bool ok = ext != NULL && X509_add_ext(cert, ext, -1) == 1;

	X509_EXTENSION_free(ext);
	return ok;
}

/* --fleet: a client certificate of its own for connection n (a new P-256 key, signed by the
 * issuing CA, with the extensions a client certificate of `mtls ca issue` carries). */
static bool fleet_identity(SSL *ssl, int n)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *cert = X509_new();
	X509_NAME *name = X509_NAME_new();
	BIGNUM *serial = BN_new();
	X509V3_CTX v3;
	char uri[96];
	bool ok = false;

	snprintf(uri, sizeof(uri), "URI:spiffe://bench.test/client-%d", n);
	if (key == NULL || cert == NULL || name == NULL || serial == NULL ||
	    !BN_rand(serial, 127, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY) ||
	    !BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(cert)) ||
	    !X509_set_version(cert, X509_VERSION_3) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)uri + 4,
					-1, -1, 0) ||
	    !X509_set_subject_name(cert, name) ||
	    !X509_set_issuer_name(cert, X509_get_subject_name(fleet_ca)) ||
	    X509_gmtime_adj(X509_getm_notBefore(cert), -300) == NULL ||
	    X509_gmtime_adj(X509_getm_notAfter(cert), 86400) == NULL || !X509_set_pubkey(cert, key))
		goto out;
	X509V3_set_ctx(&v3, fleet_ca, cert, NULL, NULL, 0);
	if (!add_ext(cert, &v3, NID_basic_constraints, "critical,CA:FALSE") ||
	    !add_ext(cert, &v3, NID_key_usage, "critical,digitalSignature") ||
	    !add_ext(cert, &v3, NID_subject_key_identifier, "hash") ||
	    !add_ext(cert, &v3, NID_authority_key_identifier, "keyid") ||
	    !add_ext(cert, &v3, NID_ext_key_usage, "clientAuth") ||
	    !add_ext(cert, &v3, NID_subject_alt_name, uri) ||
	    X509_sign(cert, fleet_ca_key, EVP_sha256()) == 0)
		goto out;
	ok = SSL_use_certificate(ssl, cert) == 1 && SSL_use_PrivateKey(ssl, key) == 1 &&
	     SSL_set1_chain(ssl, fleet_chain) == 1;
out:
	BN_free(serial);
	X509_NAME_free(name);
	X509_free(cert);
	EVP_PKEY_free(key);
	return ok;
}

static atomic_int fleet_next;

static bool conn_open(struct conn *c, SSL_SESSION **session)
{
	c->ssl = NULL;
	c->fd = dial();
	if (c->fd < 0)
		return false;
	if (o.plain)
		return true;
	c->ssl = SSL_new(ctx);
	SSL_set_fd(c->ssl, c->fd);
	SSL_set_tlsext_host_name(c->ssl, server_name);
	SSL_set1_host(c->ssl, o.name);
	if (o.fleet && !fleet_identity(c->ssl, atomic_fetch_add(&fleet_next, 1))) {
		ERR_clear_error();
		return false;
	}
	if (session != NULL && *session != NULL)
		SSL_set_session(c->ssl, *session);
	if (SSL_connect(c->ssl) != 1) {
		ERR_clear_error();
		return false;
	}
	return true;
}

static void conn_close(struct conn *c)
{
	if (c->ssl != NULL) {
		SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
	}
	if (c->fd >= 0)
		close(c->fd);
	c->ssl = NULL;
	c->fd = -1;
}

static void *handshake_thread(void *arg)
{
	SSL_SESSION *session = NULL;
	char buf[64] = "ping";

	(void)arg;
	while (!atomic_load(&stop)) {
		struct conn c;
		bool ok = conn_open(&c, o.resume ? &session : NULL) && round_trip(&c, buf, 64);

		/* TLS 1.3 tickets arrive after the handshake: after the round trip, take the
		 * newest one (as real clients do; a server may treat tickets as single-use) */
		if (ok && c.ssl != NULL && SSL_session_reused(c.ssl))
			atomic_fetch_add(&resumed_ops, 1);
		if (ok && o.resume && c.ssl != NULL) {
			SSL_SESSION *fresh = SSL_get1_session(c.ssl);

			if (fresh != NULL && SSL_SESSION_is_resumable(fresh)) {
				SSL_SESSION_free(session);
				session = fresh;
			} else {
				SSL_SESSION_free(fresh);
			}
		}
		conn_close(&c);
		atomic_fetch_add(ok ? &done_ops : &failed_ops, 1);
	}
	SSL_SESSION_free(session);
	return NULL;
}

/* latency: per-thread sample arrays */
struct lat {
	double *samples;
	size_t n, cap;
	struct conn c;
};

static void *latency_thread(void *arg)
{
	struct lat *l = arg;
	char *buf = calloc(1, (size_t)o.size);

	while (!atomic_load(&stop)) {
		double t0 = now();

		if (!round_trip(&l->c, buf, o.size)) {
			atomic_fetch_add(&failed_ops, 1);
			break;
		}
		if (l->n == l->cap) {
			l->cap = l->cap ? l->cap * 2 : 65536;
			l->samples = realloc(l->samples, l->cap * sizeof(double));
		}
		l->samples[l->n++] = now() - t0;
		atomic_fetch_add(&done_ops, 1);
	}
	free(buf);
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static atomic_ullong bulk_read_bytes;

static void *bulk_reader(void *arg)
{
	struct conn *c = arg;
	char buf[65536];

	while (!atomic_load(&stop)) {
		int n = conn_read(c, buf, sizeof(buf));

		if (n <= 0)
			break;
		atomic_fetch_add(&bulk_read_bytes, (unsigned long long)n);
	}
	return NULL;
}

/* --fleet: --cert holds the issuing CA first, then the rest of its chain (sent by every
 * client); --key is the issuing CA's key. */
static void load_fleet_ca(void)
{
	FILE *f = o.cert != NULL ? fopen(o.cert, "r") : NULL;
	X509 *x;

	if (f == NULL || (fleet_ca = PEM_read_X509(f, NULL, NULL, NULL)) == NULL)
		die("--fleet: cannot read the issuing CA from --cert");
	fleet_chain = sk_X509_new_null();
	X509_up_ref(fleet_ca);
	sk_X509_push(fleet_chain, fleet_ca);
	while ((x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL)
		sk_X509_push(fleet_chain, x);
	ERR_clear_error();
	fclose(f);
	f = o.key != NULL ? fopen(o.key, "r") : NULL;
	if (f == NULL || (fleet_ca_key = PEM_read_PrivateKey(f, NULL, NULL, NULL)) == NULL)
		die("--fleet: cannot read the issuing CA's key from --key");
	fclose(f);
}

static void setup_tls(void)
{
	if (o.plain)
		return;
	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL)
		die("SSL_CTX_new");
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	if (SSL_CTX_set_ciphersuites(ctx, o.suite) != 1)
		die("bad --tls13-suite");
	if (o.fleet)
		load_fleet_ca();
	else if (o.cert != NULL && (SSL_CTX_use_certificate_chain_file(ctx, o.cert) != 1 ||
				    SSL_CTX_use_PrivateKey_file(ctx, o.key, SSL_FILETYPE_PEM) != 1))
		die("cannot load --cert/--key");
	if (o.ca == NULL || SSL_CTX_load_verify_locations(ctx, o.ca, NULL) != 1)
		die("cannot load --ca");
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
	SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY);
}

static void resolve(void)
{
	char host[256];
	const char *colon = strrchr(o.connect, ':');
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;

	if (colon == NULL || (size_t)(colon - o.connect) >= sizeof(host))
		die("--connect HOST:PORT");
	memcpy(host, o.connect, (size_t)(colon - o.connect));
	host[colon - o.connect] = '\0';
	if (getaddrinfo(host, colon + 1, &hints, &res) != 0)
		die("cannot resolve --connect");
	memcpy(&target, res->ai_addr, res->ai_addrlen);
	target_len = res->ai_addrlen;
	freeaddrinfo(res);
}

static void parse(int argc, char **argv)
{
	if (argc < 2)
		die("usage: loadgen handshakes|latency|bulk|idle --connect HOST:PORT ... (see the "
		    "comment in bench/loadgen.c)");
	o.mode = argv[1];
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--plain") == 0)
			o.plain = true;
		else if (strcmp(a, "--resume") == 0)
			o.resume = true;
		else if (strcmp(a, "--fleet") == 0)
			o.fleet = true;
		else if (strcmp(a, "--no-exchange") == 0)
			o.no_exchange = true;
		else if (v == NULL)
			die("option needs a value");
		else if (strcmp(a, "--connect") == 0)
			o.connect = v, i++;
		else if (strcmp(a, "--cert") == 0)
			o.cert = v, i++;
		else if (strcmp(a, "--key") == 0)
			o.key = v, i++;
		else if (strcmp(a, "--ca") == 0)
			o.ca = v, i++;
		else if (strcmp(a, "--name") == 0)
			o.name = v, i++;
		else if (strcmp(a, "--tls13-suite") == 0)
			o.suite = v, i++;
		else if (strcmp(a, "--threads") == 0)
			o.threads = atoi(v), i++;
		else if (strcmp(a, "--connections") == 0)
			o.connections = atoi(v), i++;
		else if (strcmp(a, "--size") == 0)
			o.size = atoi(v), i++;
		else if (strcmp(a, "--seconds") == 0)
			o.seconds = atof(v), i++;
		else
			die("unknown option");
	}
	if (o.connect == NULL || (!o.plain && o.name == NULL))
		die("give --connect and (unless --plain) --name");
	if (o.fleet && (o.plain || o.resume || o.cert == NULL || o.key == NULL))
		die("--fleet needs --cert and --key of an issuing CA, and no --plain or --resume "
		    "(a client does not resume another client's session)");
	snprintf(server_name, sizeof(server_name), "%s", o.plain ? "" : o.name);
	if (o.threads < 1 || o.threads > 256 || o.connections < 1 || o.connections > 100000 ||
	    o.size < 1 || o.size > 1 << 20 || o.seconds <= 0 || o.seconds > 600)
		die("--threads 1..256, --connections 1..100000, --size 1..1MiB, --seconds 0..600");
}

static void sleep_for(double seconds)
{
	struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

int main(int argc, char **argv)
{
	double t0, elapsed, cpu0;

	parse(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	resolve();
	setup_tls();
	cpu0 = cpu_seconds();
	t0 = now();

	if (strcmp(o.mode, "handshakes") == 0) {
		pthread_t *th = calloc((size_t)o.threads, sizeof(*th));

		for (int i = 0; i < o.threads; i++)
			pthread_create(&th[i], NULL, handshake_thread, NULL);
		sleep_for(o.seconds);
		atomic_store(&stop, true);
		for (int i = 0; i < o.threads; i++)
			pthread_join(th[i], NULL);
		elapsed = now() - t0;
		printf("mode=%s%s ok=%llu resumed=%llu failed=%llu seconds=%.2f rate=%.1f "
		       "client_cpu=%.2f\n",
		       o.mode, o.resume ? "-resumed" : "", (unsigned long long)done_ops,
		       (unsigned long long)resumed_ops, (unsigned long long)failed_ops, elapsed,
		       (double)done_ops / elapsed, (cpu_seconds() - cpu0) / elapsed);
		free(th);
	} else if (strcmp(o.mode, "latency") == 0) {
		struct lat *ls = calloc((size_t)o.connections, sizeof(*ls));
		pthread_t *th = calloc((size_t)o.connections, sizeof(*th));
		double *all;
		size_t total = 0, k = 0;

		for (int i = 0; i < o.connections; i++)
			if (!conn_open(&ls[i].c, NULL))
				die("cannot open a connection");
		t0 = now();
		cpu0 = cpu_seconds();
		for (int i = 0; i < o.connections; i++)
			pthread_create(&th[i], NULL, latency_thread, &ls[i]);
		sleep_for(o.seconds);
		atomic_store(&stop, true);
		for (int i = 0; i < o.connections; i++) {
			pthread_join(th[i], NULL);
			total += ls[i].n;
		}
		elapsed = now() - t0;
		all = malloc((total + 1) * sizeof(double));
		for (int i = 0; i < o.connections; i++) {
			memcpy(all + k, ls[i].samples, ls[i].n * sizeof(double));
			k += ls[i].n;
			free(ls[i].samples);
			conn_close(&ls[i].c);
		}
		qsort(all, total, sizeof(double), cmp_double);
		printf("mode=latency connections=%d size=%d requests=%zu failed=%llu rps=%.0f "
		       "p50_us=%.0f p99_us=%.0f p999_us=%.0f client_cpu=%.2f\n",
		       o.connections, o.size, total, (unsigned long long)failed_ops,
		       (double)total / elapsed, total ? all[total / 2] * 1e6 : 0,
		       total ? all[(size_t)((double)total * 0.99)] * 1e6 : 0,
		       total ? all[(size_t)((double)total * 0.999)] * 1e6 : 0,
		       (cpu_seconds() - cpu0) / elapsed);
		free(all);
		free(ls);
		free(th);
	} else if (strcmp(o.mode, "bulk") == 0) {
		struct conn c;
		pthread_t reader;
		char *buf = calloc(1, 65536);
		unsigned long long sent = 0;

		if (!conn_open(&c, NULL))
			die("cannot open a connection");
		pthread_create(&reader, NULL, bulk_reader, &c);
		t0 = now();
		while (now() - t0 < o.seconds) {
			int n = conn_write(&c, buf, 65536);

			if (n <= 0)
				break;
			sent += (unsigned long long)n;
		}
		elapsed = now() - t0;
		atomic_store(&stop, true);
		shutdown(c.fd, SHUT_RDWR);
		pthread_join(reader, NULL);
		printf("mode=bulk seconds=%.2f sent_MBps=%.1f received_MBps=%.1f client_cpu=%.2f\n",
		       elapsed, (double)sent / elapsed / 1e6,
		       (double)atomic_load(&bulk_read_bytes) / elapsed / 1e6,
		       (cpu_seconds() - cpu0) / elapsed);
		conn_close(&c);
		free(buf);
	} else if (strcmp(o.mode, "idle") == 0) {
		struct conn *cs = calloc((size_t)o.connections, sizeof(*cs));
		char buf[64] = "ping";
		int held = 0;
		struct rlimit rl;

		getrlimit(RLIMIT_NOFILE, &rl);
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		SSL_SESSION *session = NULL;
		int resumed = 0;

		for (int i = 0; i < o.connections; i++) {
			if (!conn_open(&cs[i], o.resume ? &session : NULL) ||
			    (!o.no_exchange && !round_trip(&cs[i], buf, 64))) {
				fprintf(stderr, "loadgen: connection %d failed\n", i);
				break;
			}
			held++;
			if (cs[i].ssl == NULL)
				continue;
			resumed += SSL_session_reused(cs[i].ssl);
			if (o.resume) { /* the ticket read with the answer, for the next one */
				SSL_SESSION *fresh = SSL_get1_session(cs[i].ssl);

				SSL_SESSION_free(session);
				session = fresh;
			}
		}
		SSL_SESSION_free(session);
		printf("held %d\n", held);
		printf("resumed %d\n", resumed);
		fflush(stdout);
		sleep_for(o.seconds);
		for (int i = 0; i < held; i++)
			conn_close(&cs[i]);
		free(cs);
	} else {
		die("mode is handshakes, latency, bulk or idle");
	}
	SSL_CTX_free(ctx);
	return failed_ops > 0 && done_ops == 0 ? 1 : 0;
}
