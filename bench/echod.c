/*
 * echod: a single-threaded epoll echo server, the plaintext backend of the benchmarks (the
 * test backend forks per connection, which would be what we measure).
 *
 *   echod [--listen 127.0.0.1:0]     prints "listening on HOST:PORT", runs until killed
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	const char *addr = argc == 3 && strcmp(argv[1], "--listen") == 0 ? argv[2] : "127.0.0.1:0";
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	struct epoll_event ev, events[256];
	struct rlimit rl;
	char host[64], buf[65536];
	const char *colon = strrchr(addr, ':');
	int one = 1, lfd, ep;

	if (colon == NULL || (size_t)(colon - addr) >= sizeof(host))
		return 2;
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = '\0';
	sa.sin_port = htons((uint16_t)atoi(colon + 1));
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return 2;
	signal(SIGPIPE, SIG_IGN);
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 4096) != 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &len) != 0) {
		perror("echod");
		return 1;
	}
	printf("listening on %s:%u\n", host, ntohs(sa.sin_port));
	fflush(stdout);
	ep = epoll_create1(0);
	ev.events = EPOLLIN;
	ev.data.fd = lfd;
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	for (;;) {
		int n = epoll_wait(ep, events, 256, -1);

		for (int i = 0; i < n; i++) {
			int fd = events[i].data.fd;

			if (fd == lfd) {
				int c;

				while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
					setsockopt(c, IPPROTO_TCP, 1 /* TCP_NODELAY */, &one,
						   sizeof(one));
					ev.events = EPOLLIN;
					ev.data.fd = c;
					epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
				}
				continue;
			}
			for (;;) {
				ssize_t r = read(fd, buf, sizeof(buf));

				if (r > 0) {
					/* echo; a full socket buffer on loopback is rare: block
					 * briefly */
					for (ssize_t off = 0; off < r;) {
						ssize_t w = write(fd, buf + off, (size_t)(r - off));

						if (w > 0)
							off += w;
						else if (w < 0 && errno == EAGAIN)
							usleep(50);
						else
							break;
					}
					continue;
				}
				if (r < 0 && errno == EAGAIN)
					break;
				close(fd);
				break;
			}
		}
	}
}
