/*
 * backend: a plaintext target for the tunnel tests, which records what reaches it.
 *
 *   backend [--listen 127.0.0.1:0 | --unix PATH] [--mode echo|http|proxy-echo|greet]
 *
 * Prints "listening on ADDR" when ready; then, for each connection (one child process
 * each), "conn open", and at its end "conn close bytes=N". In proxy-echo mode it first
 * decodes a PROXY v2 header and prints "proxy family=... src=... dst=... tls=... cn=...
 * identity=..." (or "proxy error=..."), then echoes. In http mode it answers one request
 * with "hello from backend" and closes. In greet mode it speaks first ("greetings\n", as
 * SMTP or MySQL servers do), then echoes.
 *
 * Test code: a tool for the integration tests, not part of mtls.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static ssize_t read_full(int fd, unsigned char *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, buf + got, len - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -1 : (ssize_t)got;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

static void print_tlvs(const unsigned char *p, size_t len)
{
	while (len >= 3) {
		unsigned type = p[0];
		size_t vlen = (size_t)p[1] << 8 | p[2];

		if (vlen > len - 3) {
			printf(" tlv_error=truncated");
			return;
		}
		if (type == 0x20 && vlen >= 5) { /* PP2_TYPE_SSL: client, verify, sub-TLVs */
			printf(" ssl_client=%u ssl_verify=%u", p[3],
			       (unsigned)p[4] << 24 | (unsigned)p[5] << 16 | (unsigned)p[6] << 8 |
				       p[7]);
			print_tlvs(p + 8, vlen - 5);
		} else if (type == 0x21) {
			printf(" tls=%.*s", (int)vlen, (const char *)p + 3);
		} else if (type == 0x22) {
			printf(" cn=%.*s", (int)vlen, (const char *)p + 3);
		} else if (type == 0xE0) {
			printf(" identity=%.*s", (int)vlen, (const char *)p + 3);
		} else {
			printf(" tlv_0x%02x=%zu", type, vlen);
		}
		p += 3 + vlen;
		len -= 3 + vlen;
	}
}

/* Decode a PROXY v2 header from fd and print it. 0 or -1. */
static int proxy_header(int fd)
{
	static const unsigned char sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
					      0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
	unsigned char hdr[16], body[65536];
	char src[INET6_ADDRSTRLEN], dst[INET6_ADDRSTRLEN];
	size_t len, addr_len = 0;

	if (read_full(fd, hdr, 16) != 16 || memcmp(hdr, sig, 12) != 0 || hdr[12] != 0x21) {
		printf("proxy error=no_header\n");
		return -1;
	}
	len = (size_t)hdr[14] << 8 | hdr[15];
	if (read_full(fd, body, len) != (ssize_t)len) {
		printf("proxy error=truncated\n");
		return -1;
	}
	if (hdr[13] == 0x11 && len >= 12) {
		inet_ntop(AF_INET, body, src, sizeof(src));
		inet_ntop(AF_INET, body + 4, dst, sizeof(dst));
		printf("proxy family=tcp4 src=%s:%u dst=%s:%u", src, body[8] << 8 | body[9], dst,
		       body[10] << 8 | body[11]);
		addr_len = 12;
	} else if (hdr[13] == 0x21 && len >= 36) {
		inet_ntop(AF_INET6, body, src, sizeof(src));
		inet_ntop(AF_INET6, body + 16, dst, sizeof(dst));
		printf("proxy family=tcp6 src=[%s]:%u dst=[%s]:%u", src, body[32] << 8 | body[33],
		       dst, body[34] << 8 | body[35]);
		addr_len = 36;
	} else {
		printf("proxy family=unspec");
	}
	print_tlvs(body + addr_len, len - addr_len);
	printf("\n");
	return 0;
}

static void serve(int fd, const char *mode)
{
	unsigned char buf[16384];
	unsigned long long total = 0;
	ssize_t n;

	printf("conn open\n");
	if (strcmp(mode, "proxy-echo") == 0 && proxy_header(fd) != 0) {
		close(fd);
		return;
	}
	if (strcmp(mode, "greet") == 0 && write(fd, "greetings\n", 10) != 10)
		perror("backend: write");
	if (strcmp(mode, "http") == 0) {
		static const char reply[] = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
					    "Content-Length: 19\r\nConnection: close\r\n\r\n"
					    "hello from backend\n";
		size_t seen = 0;

		/* read the request head, then answer */
		while ((n = read(fd, buf + seen, sizeof(buf) - 1 - seen)) > 0) {
			total += (unsigned long long)n;
			seen += (size_t)n;
			buf[seen] = '\0';
			if (strstr((char *)buf, "\r\n\r\n") != NULL || seen == sizeof(buf) - 1)
				break;
		}
		if (write(fd, reply, sizeof(reply) - 1) < 0)
			perror("backend: write");
	} else {
		while ((n = read(fd, buf, sizeof(buf))) > 0) {
			total += (unsigned long long)n;
			for (ssize_t off = 0; off < n;) {
				ssize_t w = write(fd, buf + off, (size_t)(n - off));

				if (w <= 0)
					goto done;
				off += w;
			}
		}
	}
done:
	printf("conn close bytes=%llu\n", total);
	close(fd);
}

int main(int argc, char **argv)
{
	const char *listen_addr = "127.0.0.1:0", *unix_path = NULL, *mode = "echo";
	struct sockaddr_storage ss = {0};
	socklen_t len = sizeof(ss);
	int one = 1, lfd;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--listen") == 0)
			listen_addr = argv[i + 1];
		else if (strcmp(argv[i], "--unix") == 0)
			unix_path = argv[i + 1];
		else if (strcmp(argv[i], "--mode") == 0)
			mode = argv[i + 1];
		else {
			fprintf(stderr, "usage: backend [--listen HOST:PORT | --unix PATH] "
					"[--mode echo|http|proxy-echo|greet]\n");
			return 2;
		}
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGCHLD, SIG_IGN); /* no zombies */
	if (unix_path != NULL) {
		struct sockaddr_un *un = (struct sockaddr_un *)&ss;

		un->sun_family = AF_UNIX;
		snprintf(un->sun_path, sizeof(un->sun_path), "%s", unix_path);
		unlink(unix_path);
		len = sizeof(*un);
	} else {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		char host[64];
		const char *colon = strrchr(listen_addr, ':');

		if (colon == NULL || (size_t)(colon - listen_addr) >= sizeof(host))
			return 2;
		memcpy(host, listen_addr, (size_t)(colon - listen_addr));
		host[colon - listen_addr] = '\0';
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)atoi(colon + 1));
		if (inet_pton(AF_INET, host, &in->sin_addr) != 1)
			return 2;
		len = sizeof(*in);
	}
	lfd = socket(ss.ss_family, SOCK_STREAM, 0);
	if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    bind(lfd, (struct sockaddr *)&ss, len) != 0 || listen(lfd, 1024) != 0) {
		perror("backend: listen");
		return 1;
	}
	if (unix_path != NULL) {
		printf("listening on unix:%s\n", unix_path);
	} else {
		struct sockaddr_in in;
		socklen_t ilen = sizeof(in);
		char host[INET_ADDRSTRLEN];

		getsockname(lfd, (struct sockaddr *)&in, &ilen);
		inet_ntop(AF_INET, &in.sin_addr, host, sizeof(host));
		printf("listening on %s:%u\n", host, ntohs(in.sin_port));
	}
	for (;;) {
		int fd = accept(lfd, NULL, NULL);
		pid_t pid;

		if (fd < 0) {
			if (errno == EINTR)
				continue;
			perror("backend: accept");
			return 1;
		}
		pid = fork();
		if (pid == 0) {
			close(lfd);
			serve(fd, mode);
			_exit(0);
		}
		close(fd);
	}
}
