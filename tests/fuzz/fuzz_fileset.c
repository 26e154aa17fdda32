/*
 * libFuzzer target: the journal of a change of several files (renew/fileset.c,
 * fileset_journal_parse()) on arbitrary bytes. A journal is read back after a crash, from a
 * file a crash may have damaged: every byte is taken as untrusted.
 *
 * Invariants: a refusal has a one-line message; an accepted journal names 1 to FILESET_MAX
 * files, each an absolute path (NUL-terminated, no newline, not ending in '/'), with a
 * staging id of 12 lower-case hex digits and a backup id that is empty or the same kind.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond) ((cond) ? (void)0 : fail(#cond, __LINE__))

__attribute__((noreturn)) static void fail(const char *what, int line)
{
	fprintf(stderr, "fuzz_fileset.c:%d: invariant failed: %s\n", line, what);
	abort();
}

static int is_id(const char *s)
{
	return strlen(s) == 12 && strspn(s, "0123456789abcdef") == 12;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fileset_journal j;
	char err[512] = "";

	if (fileset_journal_parse((const char *)data, size, &j, err, sizeof(err)) != 0) {
		check(err[0] != '\0' && strchr(err, '\n') == NULL);
		return 0;
	}
	check(j.n >= 1 && j.n <= FILESET_MAX);
	for (size_t i = 0; i < j.n; i++) {
		size_t l = strnlen(j.e[i].path, sizeof(j.e[i].path));

		check(l > 1 && l < sizeof(j.e[i].path));
		check(j.e[i].path[0] == '/' && j.e[i].path[l - 1] != '/');
		check(strchr(j.e[i].path, '\n') == NULL);
		check(is_id(j.e[i].new_id));
		check(j.e[i].old_id[0] == '\0' || is_id(j.e[i].old_id));
	}
	return 0;
}
