/*
 * libFuzzer target: the addresses of --listen, --server, --target and --metrics as a config
 * file gives them (tunnel/address.c address_split, address_parse_numeric), split without
 * any name lookup.
 *
 * Invariants: the input is read only up to its NUL (ASan sees the rest); a split address has
 * a non-empty host of fewer than 256 bytes (none for unix:/path) and a port of digits within
 * 0..65535; written back as HOST:PORT (or [HOST]:PORT for a host with a colon) it splits to
 * the same host and port; a numeric parse never succeeds where the split fails.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "address.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond) ((cond) ? (void)0 : fail(#cond, __LINE__))

__attribute__((noreturn)) static void fail(const char *what, int line)
{
	fprintf(stderr, "fuzz_address: invariant broken at line %d: %s\n", line, what);
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	char host[256], port[8], host2[256], port2[8], err[400], back[300];
	bool is_unix, is_unix2;
	struct address a;
	int rc;

	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	rc = address_split(text, host, sizeof(host), port, sizeof(port), &is_unix, err,
			   sizeof(err));
	if (rc != 0) {
		check(err[0] != '\0');
		check(address_parse_numeric(text, &a) != 0);
		free(text);
		return 0;
	}
	if (is_unix) {
		check(strncmp(text, "unix:", 5) == 0 && host[0] == '\0');
		free(text);
		return 0;
	}
	check(host[0] != '\0' && strlen(host) < sizeof(host));
	check(port[0] != '\0' && strspn(port, "0123456789") == strlen(port));
	check(strtol(port, NULL, 10) >= 0 && strtol(port, NULL, 10) <= 65535);
	/* written back in the form that means it: brackets for an IPv6 literal, and for a host
	 * named "unix" ("unix:2" is the unix socket "2"; "[unix]:2" the host, port 2) */
	snprintf(back, sizeof(back),
		 strchr(host, ':') != NULL || strcmp(host, "unix") == 0 ? "[%s]:%s" : "%s:%s", host,
		 port);
	check(address_split(back, host2, sizeof(host2), port2, sizeof(port2), &is_unix2, err,
			    sizeof(err)) == 0);
	check(!is_unix2 && strcmp(host, host2) == 0 && strcmp(port, port2) == 0);
	(void)address_parse_numeric(text, &a);
	free(text);
	return 0;
}
