/*
 * What the CA service's operations share: their error and result types (service.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service.h"

int svc_fail(struct svc_error *e, int status, const char *code, const char *fmt, ...)
{
	va_list ap;

	e->status = status;
	snprintf(e->code, sizeof(e->code), "%s", code);
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
	return -1;
}

void svc_issued_free(struct svc_issued *i)
{
	if (i == NULL)
		return;
	free(i->chain_pem);
	free(i->names);
	i->chain_pem = i->names = NULL;
	i->chain_len = 0;
}
