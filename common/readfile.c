/*
 * The one whole-file reader (see readfile.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "readfile.h"

int readfile(const char *path, size_t max, uint8_t **data, size_t *len, mode_t *mode)
{
	struct stat st;
	uint8_t *buf = NULL;
	size_t used = 0;
	int fd, e = 0;

	*data = NULL;
	*len = 0;
	/* O_NONBLOCK: a FIFO (or a device) given for a file is refused below instead of
	 * blocking open() until a writer comes; regular files ignore it */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return errno;
	if (fstat(fd, &st) != 0) {
		e = errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		e = EINVAL;
		goto out;
	}
	if ((uintmax_t)st.st_size > max) {
		e = EFBIG;
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (buf == NULL) {
		e = ENOMEM;
		goto out;
	}
	while (used < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + used, (size_t)st.st_size - used);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			e = n < 0 ? errno : EIO;
			OPENSSL_cleanse(buf, used);
			free(buf);
			buf = NULL;
			goto out;
		}
		used += (size_t)n;
	}
	buf[used] = '\0';
	*data = buf;
	*len = used;
	if (mode != NULL)
		*mode = st.st_mode & 07777;
out:
	close(fd);
	return e;
}
