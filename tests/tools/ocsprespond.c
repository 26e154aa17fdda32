/*
 * ocsprespond: answer one OCSP request with the CA's responder (ca/ocsp.c), offline, so
 * that the integration tests can use the real `openssl ocsp` client on both ends.
 *
 *   ocsprespond CA_DIR REQ.der RESP.der [--now EPOCH]
 *
 * Opens the CA (exclusive lock), loads its issuing key (unencrypted), refreshes a responder
 * (which issues a responder certificate: a new inventory row and audit entry each run),
 * answers the DER request in REQ.der and writes the DER response to RESP.der. Prints one
 * line: the response status, the certificate status and the ETag. Exit 0 when a response was
 * written, 1 otherwise.
 *
 * Test code: a tool for the integration tests, not part of mtls.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ocsp.h>

#include "authority.h"
#include "ocsp.h"

static unsigned char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf = NULL;
	size_t cap = 0, n = 0, got;

	if (f == NULL)
		return NULL;
	do {
		if (n == cap) {
			unsigned char *bigger = realloc(buf, cap = cap * 2 + 4096);

			if (bigger == NULL) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = bigger;
		}
		got = fread(buf + n, 1, cap - n, f);
		n += got;
	} while (got > 0);
	fclose(f);
	*len = n;
	return buf;
}

int main(int argc, char **argv)
{
	struct authority *ca = NULL;
	struct ocsp_responder *r = NULL;
	struct ocsp_answer meta;
	unsigned char *req = NULL, *resp = NULL;
	size_t req_len = 0, resp_len = 0;
	time_t now = time(NULL);
	char err[1024];
	FILE *out;
	int rc = 1;

	if (argc != 4 && !(argc == 6 && strcmp(argv[4], "--now") == 0)) {
		fprintf(stderr, "usage: ocsprespond CA_DIR REQ.der RESP.der [--now EPOCH]\n");
		return 2;
	}
	if (argc == 6)
		now = (time_t)strtoll(argv[5], NULL, 10);
	req = slurp(argv[2], &req_len);
	if (req == NULL) {
		fprintf(stderr, "ocsprespond: cannot read %s\n", argv[2]);
		goto out;
	}
	ca = authority_open(argv[1], AUTHORITY_EXCLUSIVE, err, sizeof(err));
	if (ca == NULL || authority_load_key(ca, NULL, err, sizeof(err)) != 0) {
		fprintf(stderr, "ocsprespond: %s\n", err);
		goto out;
	}
	r = ocsp_responder_new();
	if (r == NULL || ocsp_responder_refresh(r, ca, now, err, sizeof(err)) != 0) {
		fprintf(stderr, "ocsprespond: %s\n", r == NULL ? "out of memory" : err);
		goto out;
	}
	if (ocsp_respond(r, ca, req, req_len, now, &resp, &resp_len, &meta) != 0) {
		fprintf(stderr, "ocsprespond: no response could be made\n");
		goto out;
	}
	out = fopen(argv[3], "wb");
	if (out == NULL || fwrite(resp, 1, resp_len, out) != resp_len || fclose(out) != 0) {
		fprintf(stderr, "ocsprespond: cannot write %s\n", argv[3]);
		goto out;
	}
	printf("%s %s %s\n", OCSP_response_status_str(meta.status),
	       meta.cert_status >= 0 ? OCSP_cert_status_str(meta.cert_status) : "-", meta.etag);
	rc = 0;
out:
	free(req);
	free(resp);
	ocsp_responder_free(r);
	authority_close(ca);
	return rc;
}
