/*
 * echo-server: a mutual-TLS echo service built on libmtls' public API only, in the spirit
 * of brpc's echo example. Each client must present a certificate from --ca whose identity
 * matches an --allow-uri/--allow-dns rule (or --allow-any); whatever it sends comes back.
 *
 *   echo-server --cert server-chain.pem --key server.key --ca ca.pem \
 *       --allow-uri spiffe://example.org/ns/prod/sa/api [--port 0] [--count N]
 *
 * It prints "listening on 127.0.0.1:PORT" once ready, and one line per client. On SIGHUP it
 * loads its files again (mtls_configure() with a new config: a reload that never drops a
 * connection and keeps the old certificate if the new files do not load), so that `mtls
 * agent --signal PID` can renew its certificate under it; it prints "reloaded" or
 * "reload failed: ...".
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mtls.h>

static void usage(void)
{
	fprintf(stderr, "usage: echo-server --cert FILE --key FILE --ca FILE "
			"(--allow-uri PATTERN | --allow-dns NAME | --allow-any) [--crl FILE] "
			"[--port N] [--count N]\n");
}

static int listen_on(int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	socklen_t len = sizeof(sa);
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 16) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
		perror("echo-server: listen");
		if (fd >= 0)
			close(fd);
		return -1;
	}
	printf("listening on 127.0.0.1:%d\n", ntohs(sa.sin_port));
	fflush(stdout);
	return fd;
}

static void serve(struct mtls *server, int fd)
{
	struct mtls *conn = mtls_accept_fd(server, fd);
	const struct mtls_peer *peer;
	char buf[4096];
	ssize_t n;

	if (conn == NULL) {
		printf("refused: %s: %s\n", mtls_reason_name(mtls_error_reason(server)),
		       mtls_error(server));
		return;
	}
	if (mtls_handshake_wait(conn, 10000) != 0) {
		printf("refused: %s: %s\n", mtls_reason_name(mtls_error_reason(conn)),
		       mtls_error(conn));
		mtls_free(conn);
		return;
	}
	peer = mtls_conn_peer(conn);
	printf("client: %s (%s, %s%s)\n", mtls_peer_identity(peer), mtls_conn_version(conn),
	       mtls_conn_cipher(conn), mtls_conn_resumed(conn) ? ", resumed" : "");
	fflush(stdout);
	while ((n = mtls_read_wait(conn, buf, sizeof(buf), 30000)) > 0)
		if (mtls_write_all(conn, buf, (size_t)n, 30000) != 0) {
			n = -1; /* the reason is on conn, as for a failed read */
			break;
		}
	if (n < 0)
		printf("connection ended: %s: %s\n", mtls_reason_name(mtls_error_reason(conn)),
		       mtls_error(conn));
	mtls_close_wait(conn, 1000);
	mtls_free(conn);
}

/* What the command line asked for, kept so that a reload can build the config again. */
#define MAX_RULES 16
struct settings {
	const char *cert, *key, *ca, *crl;
	const char *allow_uri[MAX_RULES], *allow_dns[MAX_RULES];
	int nuri, ndns, allow_any;
};

/* A config from the files as they are now. Setters read the files at once; the endpoint
 * checks and compiles the whole in mtls_configure(). NULL with the message printed. */
static struct mtls_config *build_config(const struct settings *s)
{
	struct mtls_config *cfg = mtls_config_new();
	int rc;

	if (cfg == NULL)
		return NULL;
	rc = mtls_config_set_cert_file(cfg, s->cert);
	rc = rc != 0 ? rc : mtls_config_set_key_file(cfg, s->key);
	rc = rc != 0 ? rc : mtls_config_set_ca_file(cfg, s->ca);
	if (rc == 0 && s->crl != NULL)
		rc = mtls_config_add_crl_file(cfg, s->crl);
	for (int i = 0; rc == 0 && i < s->nuri; i++)
		rc = mtls_config_allow_uri(cfg, s->allow_uri[i]);
	for (int i = 0; rc == 0 && i < s->ndns; i++)
		rc = mtls_config_allow_dns(cfg, s->allow_dns[i]);
	if (rc == 0 && s->allow_any)
		rc = mtls_config_set_allow_any_identity(cfg, 1);
	if (rc != 0) {
		fprintf(stderr, "echo-server: %s\n", mtls_config_error(cfg));
		mtls_config_free(cfg);
		return NULL;
	}
	return cfg;
}

/* SIGHUP: load the certificate, key, CA and CRL files again (mtls agent --signal sends it
 * after a renewal). The handler only writes a byte to a pipe that the main loop polls with
 * the listening socket (the self-pipe trick: no signal is missed between a check and a
 * blocking call); the reload itself runs in the main loop. */
static int hup_pipe[2] = {-1, -1};

static void on_hup(int sig)
{
	int saved = errno;

	(void)sig;
	(void)!write(hup_pipe[1], "h", 1); /* full pipe: a reload is pending anyway */
	errno = saved;
}

/* A reload is one mtls_configure() with a new config: all or nothing. New handshakes use
 * the new files at once; a connection in progress keeps the config it started with; if the
 * files do not load (a key that does not match the certificate, say), the endpoint keeps its
 * current config and we say why. */
static void reload(struct mtls *server, const struct settings *s)
{
	struct mtls_config *cfg = build_config(s);

	if (cfg == NULL) {
		printf("reload failed: the old certificate stays in use\n");
		return;
	}
	if (mtls_configure(server, cfg) != 0)
		printf("reload failed: %s: %s; the old certificate stays in use\n",
		       mtls_reason_name(mtls_error_reason(server)), mtls_error(server));
	else
		printf("reloaded\n");
	mtls_config_free(cfg);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"cert", required_argument, NULL, 'c'},
		{"key", required_argument, NULL, 'k'},
		{"ca", required_argument, NULL, 'a'},
		{"crl", required_argument, NULL, 'r'},
		{"allow-uri", required_argument, NULL, 'u'},
		{"allow-dns", required_argument, NULL, 'd'},
		{"allow-any", no_argument, NULL, 'y'},
		{"port", required_argument, NULL, 'p'},
		{"count", required_argument, NULL, 'n'},
		{NULL, 0, NULL, 0},
	};
	struct settings s = {0};
	struct sigaction sa = {.sa_handler = on_hup, .sa_flags = SA_RESTART};
	struct mtls_config *cfg = NULL;
	struct mtls *server = mtls_server_new();
	int port = 0, count = -1, opt, lfd;
	int status = 2;

	signal(SIGPIPE, SIG_IGN); /* a peer that resets must not end the process */
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (server == NULL)
		goto out;
	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c': s.cert = optarg; break;
		case 'k': s.key = optarg; break;
		case 'a': s.ca = optarg; break;
		case 'r': s.crl = optarg; break;
		case 'u':
			if (s.nuri == MAX_RULES)
				goto usage;
			s.allow_uri[s.nuri++] = optarg;
			break;
		case 'd':
			if (s.ndns == MAX_RULES)
				goto usage;
			s.allow_dns[s.ndns++] = optarg;
			break;
		case 'y': s.allow_any = 1; break;
		case 'p': port = atoi(optarg); break;
		case 'n': count = atoi(optarg); break;
		default: goto usage;
		}
	}
	if (optind != argc)
		goto usage;
	if ((cfg = build_config(&s)) == NULL)
		goto out;
	if (mtls_configure(server, cfg) != 0) {
		fprintf(stderr, "echo-server: %s\n", mtls_error(server));
		goto out;
	}
	if (pipe2(hup_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
		perror("echo-server: pipe");
		status = 1;
		goto out;
	}
	sigemptyset(&sa.sa_mask);
	sigaction(SIGHUP, &sa, NULL);
	lfd = listen_on(port);
	if (lfd < 0) {
		status = 1;
		goto out;
	}
	while (count != 0) {
		struct pollfd pf[2] = {{hup_pipe[0], POLLIN, 0}, {lfd, POLLIN, 0}};
		char drain[64];
		int fd;

		if (poll(pf, 2, -1) < 0)
			continue;
		if (pf[0].revents & POLLIN) {
			while (read(hup_pipe[0], drain, sizeof(drain)) > 0)
				;
			reload(server, &s);
		}
		if (!(pf[1].revents & POLLIN))
			continue;
		fd = accept(lfd, NULL, NULL);
		if (fd < 0)
			continue;
		serve(server, fd);
		close(fd);
		if (count > 0)
			count--;
	}
	close(lfd);
	status = 0;
	goto out;
usage:
	usage();
out:
	mtls_config_free(cfg); /* the endpoint keeps its own copy */
	mtls_free(server);
	return status;
}
