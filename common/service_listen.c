/*
 * Sockets passed by systemd (service_listen.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "service_listen.h"

static void close_passed(int nfds)
{
	for (int i = 0; i < nfds; i++)
		close(SD_LISTEN_FDS_START + i);
}

bool service_listen_passed(void)
{
	return sd_listen_fds(0) > 0;
}

int service_listen_take(const char *const names[], int fds[], size_t n, char *err, size_t err_len)
{
	char **passed = NULL;
	int nfds, rc = -1;

	for (size_t i = 0; i < n; i++)
		fds[i] = -1;
	nfds = sd_listen_fds_with_names(1, &passed);
	if (nfds <= 0) {
		if (nfds < 0)
			snprintf(err, err_len,
				 "the sockets passed by systemd (LISTEN_FDS) cannot be used: %s",
				 strerror(-nfds));
		return nfds < 0 ? -1 : 0;
	}
	for (int i = 0; i < nfds; i++) {
		const char *name = passed != NULL && passed[i] != NULL ? passed[i] : "unknown";
		size_t k = n;

		for (size_t j = 0; j < n; j++)
			if (strcmp(name, names[j]) == 0)
				k = j;
		if (k == n && nfds == 1 && n > 0)
			k = 0; /* one socket, not named: the main one */
		if (k == n || fds[k] >= 0) {
			snprintf(err, err_len,
				 "systemd passed %d sockets and socket %d is named '%.60s'%s; give "
				 "each ListenStream= of the .socket unit its own "
				 "FileDescriptorName=%s%s",
				 nfds, i + 1, name, k < n ? " twice" : "", names[0],
				 n > 1 ? " or the name of another of the daemon's sockets" : "");
			goto out;
		}
		fds[k] = SD_LISTEN_FDS_START + i;
	}
	for (int i = 0; i < nfds; i++) {
		int fd = SD_LISTEN_FDS_START + i, fl = fcntl(fd, F_GETFL);

		if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0 ||
		    fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
			snprintf(err, err_len, "socket %d passed by systemd: %s", i + 1,
				 strerror(errno));
			goto out;
		}
	}
	rc = nfds;
out:
	if (rc < 0) {
		close_passed(nfds);
		for (size_t i = 0; i < n; i++)
			fds[i] = -1;
	}
	for (int i = 0; passed != NULL && i < nfds; i++)
		free(passed[i]);
	free(passed);
	return rc;
}

static bool is_wildcard(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ((const struct sockaddr_in *)(const void *)sa)->sin_addr.s_addr ==
		       htonl(INADDR_ANY);
	if (sa->sa_family == AF_INET6)
		return IN6_IS_ADDR_UNSPECIFIED(
			&((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr);
	return false;
}

static unsigned port_of(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
}

int service_listen_matches(int fd, const struct sockaddr *sa, socklen_t sa_len)
{
	if (sa->sa_family == AF_UNIX) {
		const struct sockaddr_un *un = (const struct sockaddr_un *)(const void *)sa;

		return sd_is_socket_unix(fd, SOCK_STREAM, 1, un->sun_path, 0) > 0;
	}
	if (sa->sa_family != AF_INET && sa->sa_family != AF_INET6)
		return 0;
	if (is_wildcard(sa))
		return sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, (uint16_t)port_of(sa)) > 0;
	return sd_is_socket_sockaddr(fd, SOCK_STREAM, sa, (unsigned)sa_len, 1) > 0;
}
