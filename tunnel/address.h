/*
 * Addresses the daemons listen on and connect to: "host:port", "[v6addr]:port" or
 * "unix:/path".
 */
#ifndef MTLS_TUNNEL_ADDRESS_H
#define MTLS_TUNNEL_ADDRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct address {
	struct sockaddr_storage sa;
	socklen_t len;
	char host[256]; /* as given (for names: the name), empty for unix sockets */
	bool is_unix;
};

/* Parse and resolve (names through getaddrinfo); the port is 0..65535, digits only. -1 with
 * a message. */
int address_parse(const char *text, struct address *out, char *err, size_t err_len);
/* Split text without resolving anything: host (empty for unix:/path; an IPv6 address
 * without its brackets) and port (digits, 0..65535). -1 with a message (a malformed
 * address). */
int address_split(const char *text, char *host, size_t host_len, char *port, size_t port_len,
		  bool *is_unix, char *err, size_t err_len);
/* Parse text whose host is an IP address (or a unix:/path): no name lookup. -1 if it is a
 * name (or malformed). */
int address_parse_numeric(const char *text, struct address *out);
/* The TCP port (0 for a unix socket, or a listen address meaning "any free port"). */
unsigned address_port(const struct address *a);
/* Loopback (127.0.0.0/8, ::1) or a unix socket. */
bool address_is_local(const struct address *a);
/* How a TCP listen socket shares its port (SO_REUSEPORT) with other sockets. */
enum address_share {
	ADDRESS_SHARE_NONE, /* never shared */
	/* bound without SO_REUSEPORT, so the bind fails (EADDRINUSE) if any socket holds the
	 * port, even one that allows sharing; SO_REUSEPORT is set after the bind, so the
	 * daemon's other workers (ADDRESS_SHARE_JOIN) can join it. Race-free: of two daemons
	 * starting at once, whichever binds second is refused. */
	ADDRESS_SHARE_FIRST,
	/* SO_REUSEPORT before the bind: joins sockets of the same user that allow sharing
	 * (the daemon's first worker, or a running daemon: --reuse-port) */
	ADDRESS_SHARE_JOIN,
};

/* A listening, non-blocking socket. share: see above (ignored for unix sockets; a unix
 * socket file is replaced only if stale, never one a running process listens on).
 * unix_mode: the permissions of a unix socket's file, which bind() creates under the
 * matching umask, so that it never has wider ones, not even for an instant (umask is per
 * process: call this before starting threads). -1 with a message (EADDRINUSE of
 * ADDRESS_SHARE_FIRST and _JOIN: what holds the port and what to do). */
int address_listen(const struct address *a, enum address_share share, unsigned unix_mode, char *err,
		   size_t err_len);
/* Start a non-blocking connect: the fd (connection in progress or done), or -1. */
int address_connect(const struct address *a, char *err, size_t err_len);
/* "127.0.0.1:5432", "[::1]:443", "unix:/run/x.sock" of a socket address. */
void address_format(const struct sockaddr *sa, socklen_t len, char *out, size_t out_len);
/* The address a listening socket is bound to (the real port after port 0). */
void address_local(int fd, char *out, size_t out_len);

#endif
