/*
 * echo-server: a mutual-TLS echo service built on libmtls' public API only, in the spirit
 * of brpc's echo example. Each client must present a certificate from --ca whose identity
 * matches an --allow-uri/--allow-dns rule (or --allow-any); whatever it sends comes back.
 *
 *   echo-server --cert server-chain.pem --key server.key --ca ca.pem \
 *       --allow-uri spiffe://example.org/ns/prod/sa/api [--port 0] [--count N]
 *
 * It prints "listening on 127.0.0.1:PORT" once ready, and one line per client.
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
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
	struct mtls_config *cfg = mtls_config_new();
	struct mtls *server = mtls_server_new();
	int port = 0, count = -1, opt, lfd;
	int rc = 0, status = 2;

	signal(SIGPIPE, SIG_IGN); /* a peer that resets must not end the process */
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (cfg == NULL || server == NULL)
		goto out;
	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c': rc = mtls_config_set_cert_file(cfg, optarg); break;
		case 'k': rc = mtls_config_set_key_file(cfg, optarg); break;
		case 'a': rc = mtls_config_set_ca_file(cfg, optarg); break;
		case 'r': rc = mtls_config_add_crl_file(cfg, optarg); break;
		case 'u': rc = mtls_config_allow_uri(cfg, optarg); break;
		case 'd': rc = mtls_config_allow_dns(cfg, optarg); break;
		case 'y': rc = mtls_config_set_allow_any_identity(cfg, 1); break;
		case 'p': port = atoi(optarg); break;
		case 'n': count = atoi(optarg); break;
		default: usage(); goto out;
		}
		if (rc != 0) {
			fprintf(stderr, "echo-server: %s\n", mtls_config_error(cfg));
			goto out;
		}
	}
	if (mtls_configure(server, cfg) != 0) {
		fprintf(stderr, "echo-server: %s\n", mtls_error(server));
		goto out;
	}
	lfd = listen_on(port);
	if (lfd < 0) {
		status = 1;
		goto out;
	}
	while (count != 0) {
		int fd = accept(lfd, NULL, NULL);

		if (fd < 0)
			continue;
		serve(server, fd);
		close(fd);
		if (count > 0)
			count--;
	}
	close(lfd);
	status = 0;
out:
	mtls_config_free(cfg); /* the endpoint keeps its own reference */
	mtls_free(server);
	return status;
}
