/*
 * echo-client: connects to echo-server over mutual TLS with libmtls' public API only,
 * verifies the server's certificate and name, sends a message and prints the echo.
 *
 *   echo-client --cert client-chain.pem --key client.key --ca ca.pem \
 *       --connect 127.0.0.1:PORT --name server.test "hello"
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mtls.h>

static void usage(void)
{
	fprintf(stderr, "usage: echo-client --cert FILE --key FILE --ca FILE --connect HOST:PORT "
			"[--name SERVERNAME] [--repeat N] MESSAGE\n");
}

static int dial(const char *hostport)
{
	char host[256];
	const char *colon = strrchr(hostport, ':');
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *ai;
	int fd = -1;

	if (colon == NULL || (size_t)(colon - hostport) >= sizeof(host))
		return -1;
	memcpy(host, hostport, (size_t)(colon - hostport));
	host[colon - hostport] = '\0';
	if (getaddrinfo(host, colon + 1, &hints, &res) != 0) {
		fprintf(stderr, "echo-client: cannot resolve %s\n", hostport);
		return -1;
	}
	for (ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
		if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(res);
	if (fd < 0)
		perror("echo-client: connect");
	return fd;
}

/* One connection: handshake, send, read the echo. 0 or 1. */
static int exchange(struct mtls *client, const char *addr, const char *name, const char *msg)
{
	size_t len = strlen(msg), got = 0;
	int fd = dial(addr);
	struct mtls *conn = fd >= 0 ? mtls_connect_fd(client, fd, name) : NULL;
	char *buf = malloc(len + 1);
	int rc = 1;

	if (fd < 0) {
		free(buf);
		return 1;
	}
	if (conn == NULL || buf == NULL) {
		fprintf(stderr, "echo-client: %s\n", mtls_error(client));
		goto out;
	}
	if (mtls_handshake_wait(conn, 10000) != 0 || mtls_write_all(conn, msg, len, 10000) != 0)
		goto fail;
	while (got < len) {
		ssize_t n = mtls_read_wait(conn, buf + got, len - got, 10000);
		if (n <= 0)
			goto fail;
		got += (size_t)n;
	}
	buf[len] = '\0';
	printf("server: %s (%s, %s%s)\n", mtls_peer_identity(mtls_conn_peer(conn)),
	       mtls_conn_version(conn), mtls_conn_cipher(conn),
	       mtls_conn_resumed(conn) ? ", resumed" : "");
	printf("echo: %s\n", buf);
	mtls_close_wait(conn, 1000);
	rc = 0;
	goto out;
fail:
	/* In TLS 1.3 a server's refusal of our certificate arrives after our handshake ends,
	 * so it shows up here, on the first read. */
	printf("refused: %s: %s\n", mtls_reason_name(mtls_error_reason(conn)), mtls_error(conn));
out:
	free(buf);
	mtls_free(conn);
	close(fd);
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"cert", required_argument, NULL, 'c'},
		{"key", required_argument, NULL, 'k'},
		{"ca", required_argument, NULL, 'a'},
		{"connect", required_argument, NULL, 's'},
		{"name", required_argument, NULL, 'n'},
		{"repeat", required_argument, NULL, 'r'},
		{NULL, 0, NULL, 0},
	};
	struct mtls_config *cfg = mtls_config_new();
	struct mtls *client = mtls_client_new();
	const char *addr = NULL, *name = NULL;
	char *host = NULL;
	int opt, rc = 0, repeat = 1, status = 2;

	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (cfg == NULL || client == NULL)
		goto out;
	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c': rc = mtls_config_set_cert_file(cfg, optarg); break;
		case 'k': rc = mtls_config_set_key_file(cfg, optarg); break;
		case 'a': rc = mtls_config_set_ca_file(cfg, optarg); break;
		case 's': addr = optarg; break;
		case 'n': name = optarg; break;
		case 'r': repeat = atoi(optarg); break;
		default: usage(); goto out;
		}
		if (rc != 0) {
			fprintf(stderr, "echo-client: %s\n", mtls_config_error(cfg));
			goto out;
		}
	}
	if (addr == NULL || optind != argc - 1 || strrchr(addr, ':') == NULL) {
		usage();
		goto out;
	}
	if (name == NULL) /* the host part of --connect */
		name = host = strndup(addr, (size_t)(strrchr(addr, ':') - addr));
	if (mtls_configure(client, cfg) != 0) {
		fprintf(stderr, "echo-client: %s\n", mtls_error(client));
		goto out;
	}
	rc = 0;
	for (int i = 0; i < repeat && rc == 0; i++)
		rc = exchange(client, addr, name, argv[optind]);
	status = rc;
out:
	free(host);
	mtls_config_free(cfg);
	mtls_free(client);
	return status;
}
