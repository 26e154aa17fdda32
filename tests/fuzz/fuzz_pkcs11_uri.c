/*
 * libFuzzer target: a PKCS#11 URI as an operator writes it for --key (common/pkcs11.c
 * pkcs11_uri_check()), the text every later step trusts: the module path taken from it, the
 * URI echoed in messages and logs.
 *
 * Invariants (with a module buffer of the size the callers give, 1024): the result is 0 or
 * -1, the same on a second call and without a module buffer;
 * a refusal has a one-line message of printable characters; an accepted URI holds no
 * pin-value or pin-source attribute (in the path or the query, any case), no control
 * character or space, and its module path (NUL-terminated inside its buffer) is "" unless the
 * query names one.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pkcs11.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond) ((cond) ? (void)0 : fail(#cond, __LINE__))

__attribute__((noreturn)) static void fail(const char *what, int line)
{
	fprintf(stderr, "fuzz_pkcs11_uri: invariant broken at line %d: %s\n", line, what);
	abort();
}

/* Does an attribute of text start with name? The path's attributes are split at ';' up to
 * the first '?', the query's at '&' (RFC 7512): a ';' in the query is part of a value. */
static int has_attr(const char *text, const char *name)
{
	size_t k = strlen(name), path_end = strcspn(text, "?");

	for (size_t i = 0; i < path_end;) {
		if (strncasecmp(text + i, name, k) == 0)
			return 1;
		i += strcspn(text + i, ";?");
		if (i < path_end)
			i++;
	}
	for (const char *p = text[path_end] == '?' ? text + path_end + 1 : NULL;
	     p != NULL && *p != '\0';) {
		if (strncasecmp(p, name, k) == 0)
			return 1;
		p += strcspn(p, "&");
		if (*p != '\0')
			p++;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1), module[1024], err[512], err2[512];
	int rc;

	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	memset(module, 'x', sizeof(module));
	rc = pkcs11_uri_check(text, module, sizeof(module), err, sizeof(err));
	check(rc == 0 || rc == -1);
	check(pkcs11_uri_check(text, NULL, 0, err2, sizeof(err2)) == rc);
	check(memchr(module, '\0', sizeof(module)) != NULL);
	if (rc != 0) {
		check(err[0] != '\0');
		for (const char *p = err; *p != '\0'; p++)
			check(isprint((unsigned char)*p));
	} else {
		check(pkcs11_is_uri(text));
		check(!has_attr(text + 7, "pin-value") && !has_attr(text + 7, "pin-source"));
		for (const char *p = text; *p != '\0'; p++)
			check(isgraph((unsigned char)*p));
		if (strchr(text, '?') == NULL)
			check(module[0] == '\0');
	}
	free(text);
	return 0;
}
