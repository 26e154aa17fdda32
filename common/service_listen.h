/*
 * Socket activation (sd_listen_fds(3), through Debian's libsystemd): the listening sockets a
 * .socket unit passed to the daemon, in place of the ones it would bind itself.
 *
 * Which socket is which: by LISTEN_FDNAMES (FileDescriptorName= in the .socket unit). A
 * single socket passed is the first of names whatever it is called (a unit with one
 * ListenStream= need not name it); several must each carry one of names.
 */
#ifndef MTLS_COMMON_SERVICE_LISTEN_H
#define MTLS_COMMON_SERVICE_LISTEN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* Take the sockets passed to this process: fds[i] is the one named names[i], or -1. The
 * LISTEN_* variables are removed from the environment (nothing started later takes them for
 * its own) and each socket is made non-blocking and close-on-exec; the caller owns them.
 * 0 (none passed: every fds[i] is -1), the number taken, or -1 with a one-line message (a
 * socket nobody asked for, or not named as it should be: all of them closed). */
int service_listen_take(const char *const names[], int fds[], size_t n, char *err, size_t err_len);
/* Whether systemd passed sockets to this process (nothing taken, the environment kept). */
bool service_listen_passed(void);
/* Is fd a listening stream socket on the address sa (as the daemon would have bound it)? A
 * unix address compares by path; a wildcard address (0.0.0.0, ::) by port only (systemd's
 * ListenStream=PORT listens on [::] for both families); any other by address and port. A
 * port of 0 matches any port. 1 yes, 0 no. */
int service_listen_matches(int fd, const struct sockaddr *sa, socklen_t sa_len);

#endif
