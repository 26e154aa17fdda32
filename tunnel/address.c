/*
 * Parsing, resolving, listening on and connecting to addresses.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "address.h"

int address_split(const char *text, char *host, size_t host_len, char *port, size_t port_len,
		  bool *is_unix, char *err, size_t err_len)
{
	const char *p;

	*is_unix = false;
	host[0] = port[0] = '\0';
	if (strncmp(text, "unix:", 5) == 0) {
		if (text[5] == '\0' ||
		    strlen(text + 5) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
			snprintf(err, err_len, "'%s': give unix:/path (at most %zu characters)",
				 text, sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
			return -1;
		}
		*is_unix = true;
		return 0;
	}
	if (text[0] == '[') {
		const char *close = strchr(text, ']');

		if (close == NULL || close[1] != ':' || (size_t)(close - text - 1) >= host_len)
			goto usage;
		memcpy(host, text + 1, (size_t)(close - text - 1));
		host[close - text - 1] = '\0';
		p = close + 2;
	} else {
		const char *colon = strrchr(text, ':');

		if (colon == NULL || (size_t)(colon - text) >= host_len ||
		    strchr(text, ':') != colon)
			goto usage;
		memcpy(host, text, (size_t)(colon - text));
		host[colon - text] = '\0';
		p = colon + 1;
	}
	if (host[0] == '\0' || strpbrk(host, "[]") != NULL)
		goto usage;
	/* at most 5 digits (past leading zeros) before the value is taken: atoi() of
	 * "4294977296" wrapped to 10000 */
	if (p[0] == '\0' || strspn(p, "0123456789") != strlen(p) ||
	    strlen(p + strspn(p, "0")) > 5 || strtol(p, NULL, 10) > 65535) {
		snprintf(err, err_len, "'%s': the port must be a number from 0 to 65535", text);
		return -1;
	}
	snprintf(port, port_len, "%ld", strtol(p, NULL, 10));
	return 0;
usage:
	snprintf(err, err_len, "'%s': give HOST:PORT, [IPv6]:PORT or unix:/path", text);
	return -1;
}

/* text split, then resolved with the getaddrinfo flags given */
static int parse_with(const char *text, struct address *out, int flags, char *err, size_t err_len)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = flags | AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	char host[256], port[8];
	bool is_unix;
	int rc;

	memset(out, 0, sizeof(*out));
	if (address_split(text, host, sizeof(host), port, sizeof(port), &is_unix, err, err_len) !=
	    0)
		return -1;
	if (is_unix) {
		struct sockaddr_un *un = (struct sockaddr_un *)&out->sa;

		un->sun_family = AF_UNIX;
		snprintf(un->sun_path, sizeof(un->sun_path), "%s", text + 5);
		out->len = sizeof(*un);
		out->is_unix = true;
		return 0;
	}
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0 || res == NULL) {
		snprintf(err, err_len, "cannot resolve '%s': %s", text, gai_strerror(rc));
		return -1;
	}
	memcpy(&out->sa, res->ai_addr, res->ai_addrlen);
	out->len = res->ai_addrlen;
	snprintf(out->host, sizeof(out->host), "%s", host);
	freeaddrinfo(res);
	return 0;
}

int address_parse(const char *text, struct address *out, char *err, size_t err_len)
{
	return parse_with(text, out, AI_ADDRCONFIG, err, err_len);
}

int address_parse_numeric(const char *text, struct address *out)
{
	char err[300];

	return parse_with(text, out, AI_NUMERICHOST, err, sizeof(err));
}

unsigned address_port(const struct address *a)
{
	if (a->sa.ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)&a->sa)->sin_port);
	if (a->sa.ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)&a->sa)->sin6_port);
	return 0;
}

bool address_is_local(const struct address *a)
{
	if (a->is_unix)
		return true;
	if (a->sa.ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)&a->sa)->sin_addr.s_addr) >> 24) == 127;
	if (a->sa.ss_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)&a->sa)->sin6_addr);
	return false;
}

/* A socket file at path: 0 if there is none or it is stale (nobody listens: removed), -1
 * with a message if a process listens on it or it cannot be told. Connecting is the only
 * way to tell a live socket from a stale one; the daemon listening there sees one
 * connection that closes at once. */
static int unix_stale_remove(const char *path, const char *text, char *err, size_t err_len)
{
	struct sockaddr_un un = {.sun_family = AF_UNIX};
	struct stat sb;
	int fd, rc, saved;

	if (lstat(path, &sb) != 0 || !S_ISSOCK(sb.st_mode))
		return 0; /* nothing there, or not a socket: bind() says what is wrong */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, err_len, "cannot listen on %s: socket: %s", text, strerror(errno));
		return -1;
	}
	snprintf(un.sun_path, sizeof(un.sun_path), "%s", path);
	rc = connect(fd, (const struct sockaddr *)&un, sizeof(un));
	saved = errno;
	close(fd);
	if (rc != 0 && (saved == ECONNREFUSED || saved == ENOENT)) {
		unlink(path); /* a stale socket from an earlier run; never anything else */
		return 0;
	}
	if (rc == 0 || saved == EAGAIN || saved == EINPROGRESS)
		snprintf(err, err_len,
			 "cannot listen on %s: a running process listens there (another mtls "
			 "daemon?); stop it, or give another --listen path",
			 text);
	else
		snprintf(err, err_len,
			 "cannot listen on %s: cannot tell whether a process listens there "
			 "(connect: %s); remove the file if it is stale",
			 text, strerror(saved));
	return -1;
}

/* EADDRINUSE of a daemon's --listen socket: what holds the port, and what to do. */
static void in_use(const char *text, enum address_share share, char *err, size_t err_len)
{
	if (share == ADDRESS_SHARE_FIRST)
		snprintf(err, err_len,
			 "cannot listen on %s: the port is in use (another mtls server or "
			 "connector?); stop it or give another --listen port (to share the port on "
			 "purpose, for a zero-downtime upgrade, start the new one with "
			 "--reuse-port)",
			 text);
	else if (share == ADDRESS_SHARE_JOIN)
		snprintf(err, err_len,
			 "cannot listen on %s: the port is in use by a socket that does not share "
			 "it (another program, or a daemon of another user); stop it or give "
			 "another port",
			 text);
}

int address_listen(const struct address *a, enum address_share share, unsigned unix_mode, char *err,
		   size_t err_len)
{
	int one = 1, rc;
	int fd = -1;
	char text[300];
	mode_t old_mask = 0;

	address_format((const struct sockaddr *)&a->sa, a->len, text, sizeof(text));
	if (a->is_unix && unix_stale_remove(((const struct sockaddr_un *)&a->sa)->sun_path, text,
					    err, err_len) != 0)
		return -1;
	fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	if (!a->is_unix) {
		/* SO_REUSEADDR only lets the bind through TIME_WAIT leftovers, never past a
		 * listening socket */
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (share == ADDRESS_SHARE_JOIN &&
		    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
			goto fail;
	}
	/* no chmod() after bind(): it would follow a symlink put in the socket's place */
	if (a->is_unix)
		old_mask = umask(~(mode_t)unix_mode & 0777);
	rc = bind(fd, (const struct sockaddr *)&a->sa, a->len);
	if (a->is_unix)
		umask(old_mask);
	if (rc != 0)
		goto fail;
	/* bound alone: now let the daemon's other workers join (the kernel checks
	 * SO_REUSEPORT of the sockets already bound at each later bind and at listen) */
	if (!a->is_unix && share == ADDRESS_SHARE_FIRST &&
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
		goto fail;
	if (listen(fd, 1024) != 0)
		goto fail;
	return fd;
fail:
	if (errno == EADDRINUSE && !a->is_unix && share != ADDRESS_SHARE_NONE)
		in_use(text, share, err, err_len);
	else
		snprintf(err, err_len, "cannot listen on %s: %s", text, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

int address_connect(const struct address *a, char *err, size_t err_len)
{
	int one = 1;
	int fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		snprintf(err, err_len, "socket: %s", strerror(errno));
		return -1;
	}
	if (!a->is_unix)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (const struct sockaddr *)&a->sa, a->len) != 0 && errno != EINPROGRESS) {
		char text[300];

		address_format((const struct sockaddr *)&a->sa, a->len, text, sizeof(text));
		snprintf(err, err_len, "cannot connect to %s: %s", text, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

void address_format(const struct sockaddr *sa, socklen_t len, char *out, size_t out_len)
{
	char host[INET6_ADDRSTRLEN];

	(void)len;
	switch (sa->sa_family) {
	case AF_INET: {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(out, out_len, "%s:%u", host, ntohs(in->sin_port));
		break;
	}
	case AF_INET6: {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(out, out_len, "[%s]:%u", host, ntohs(in6->sin6_port));
		break;
	}
	case AF_UNIX:
		snprintf(out, out_len, "unix:%s", ((const struct sockaddr_un *)sa)->sun_path);
		break;
	default: snprintf(out, out_len, "?"); break;
	}
}

void address_local(int fd, char *out, size_t out_len)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
		snprintf(out, out_len, "?");
	else
		address_format((struct sockaddr *)&ss, len, out, out_len);
}
