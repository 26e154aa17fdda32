/*
 * caload: the load generator of the CA service benchmark (bench/ca_serve.sh). libcurl's multi
 * interface keeps N requests in flight, each easy handle reused for the next request so that
 * its connection is kept alive where the server allows it (mtls ca serve does; `openssl
 * ocsp` answers HTTP/1.0 and closes, so there every request is a new connection).
 *
 *   caload ocsp   --url BASE --req FILE... [--get]
 *       POST each DER OCSP request (round robin) to BASE, or with --get
 *       GET BASE/<percent-encoded base64> (RFC 5019). An answer counts only if it is HTTP 200
 *       and an OCSPResponse with status successful, a basic response and status good.
 *   caload enroll --url BASE/v1/enroll --cacert ROOT --tokens FILE --csr FILE
 *       POST {"token", "csr"}: each token of FILE (one a line) used once, every request with
 *       the same CSR (one key: what is measured is the CA, not the client's key generation).
 *   caload renew  --url BASE/v1/renew --cacert ROOT --cert FILE --key FILE --csr FILE
 *       POST {"csr", "same_key": true} over mutual TLS with the certificate being renewed,
 *       repeatedly (the old certificate stays valid, so it can renew again).
 *       enroll and renew count an answer only if it is HTTP 200 and JSON with a serial and a
 *       chain whose first certificate parses.
 *
 * Common: --connections N (in flight, default 8) --seconds S (default 10) --requests N (stop
 * after N sent; enroll stops when the tokens run out). The TLS of the API is verified with
 * --cacert (the CA's root); the host name is checked as curl checks it.
 *
 * Output: one line of key=value (rps, p50/p99/max latency in ms, new connections made,
 * failures by kind); if any request failed, a second line on stderr "caload: FAILED ..."
 * and exit status 2.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, strdup */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "clock.h"

enum mode { M_OCSP, M_ENROLL, M_RENEW };

struct opts {
	enum mode mode;
	const char *url, *cacert, *cert, *key, *csr, *tokens;
	const char **reqs;
	int n_reqs;
	bool get;
	int connections;
	double seconds;
	long long max_requests;
};

struct buf {
	char *p;
	size_t len, cap;
};

struct slot {
	CURL *h;
	struct curl_slist *headers;
	char *body; /* what this request sends (POST), or NULL */
	char *url;  /* GET: the request's own URL */
	struct buf resp;
	double t0;
};

/* failures by kind: the HTTP status when it is not 200 (0: no answer), or a bad body */
#define MAX_STATUS 600
static unsigned long long by_status[MAX_STATUS];
static unsigned long long bad_body, transport;
static char first_error[512];

static struct opts o = {.connections = 8, .seconds = 10};
static unsigned char **req_der;
static size_t *req_len;
static char **req_get_url; /* --get: BASE/<percent-encoded base64> per request file */
static char **tokens;
static size_t n_tokens, next_token;
static char *csr_pem;
static unsigned long long sent, ok, connects; /* connects: new connections made */
static double *lat;
static size_t n_lat, cap_lat;

_Noreturn static void die(const char *what, const char *arg)
{
	fprintf(stderr, "caload: %s%s%s\n", what, arg != NULL ? ": " : "", arg != NULL ? arg : "");
	exit(1);
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n);

	if (p == NULL)
		die("out of memory", NULL);
	return p;
}

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *p;
	long n;

	if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET) != 0)
		die("cannot read", path);
	p = xmalloc((size_t)n + 1);
	if (fread(p, 1, (size_t)n, f) != (size_t)n)
		die("cannot read", path);
	p[n] = '\0';
	fclose(f);
	*len = (size_t)n;
	return p;
}

/* the URL-safe form of base64 used in an OCSP GET: standard base64, percent-encoded */
static char *get_url(const unsigned char *der, size_t len)
{
	size_t b64_len = 4 * ((len + 2) / 3);
	unsigned char *b64 = xmalloc(b64_len + 1);
	char *url = xmalloc(strlen(o.url) + 1 + 3 * b64_len + 1);
	char *q;

	EVP_EncodeBlock(b64, der, (int)len);
	q = url + sprintf(url, "%s/", o.url);
	for (size_t i = 0; i < b64_len; i++) {
		if (isalnum(b64[i]))
			*q++ = (char)b64[i];
		else
			q += sprintf(q, "%%%02X", b64[i]);
	}
	*q = '\0';
	free(b64);
	return url;
}

static void load_tokens(const char *path)
{
	size_t len, cap = 0;
	char *text = read_file(path, &len);

	for (char *line = strtok(text, "\r\n"); line != NULL; line = strtok(NULL, "\r\n")) {
		if (*line == '\0')
			continue;
		if (n_tokens == cap) {
			cap = cap ? 2 * cap : 1024;
			tokens = realloc(tokens, cap * sizeof(*tokens));
			if (tokens == NULL)
				die("out of memory", NULL);
		}
		tokens[n_tokens++] = strdup(line);
	}
	free(text);
	if (n_tokens == 0)
		die("no token in", path);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: caload ocsp --url BASE --req FILE... [--get]\n"
		"       caload enroll --url URL --cacert ROOT --tokens FILE --csr FILE\n"
		"       caload renew --url URL --cacert ROOT --cert FILE --key FILE --csr FILE\n"
		"  common: [--connections N] [--seconds S] [--requests N]\n");
	exit(1);
}

static void parse(int argc, char **argv)
{
	if (argc < 2)
		usage();
	if (strcmp(argv[1], "ocsp") == 0)
		o.mode = M_OCSP;
	else if (strcmp(argv[1], "enroll") == 0)
		o.mode = M_ENROLL;
	else if (strcmp(argv[1], "renew") == 0)
		o.mode = M_RENEW;
	else
		usage();
	o.reqs = xmalloc((size_t)argc * sizeof(*o.reqs));
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--get") == 0) {
			o.get = true;
			continue;
		}
		if (v == NULL)
			die("missing value of", a);
		if (strcmp(a, "--url") == 0)
			o.url = v;
		else if (strcmp(a, "--req") == 0)
			o.reqs[o.n_reqs++] = v;
		else if (strcmp(a, "--cacert") == 0)
			o.cacert = v;
		else if (strcmp(a, "--cert") == 0)
			o.cert = v;
		else if (strcmp(a, "--key") == 0)
			o.key = v;
		else if (strcmp(a, "--csr") == 0)
			o.csr = v;
		else if (strcmp(a, "--tokens") == 0)
			o.tokens = v;
		else if (strcmp(a, "--connections") == 0)
			o.connections = atoi(v);
		else if (strcmp(a, "--seconds") == 0)
			o.seconds = atof(v);
		else if (strcmp(a, "--requests") == 0)
			o.max_requests = atoll(v);
		else
			die("unknown option", a);
		i++;
	}
	if (o.url == NULL || o.connections < 1 || o.connections > 1000 || o.seconds <= 0 ||
	    o.seconds > 600)
		die("give --url; --connections 1..1000, --seconds 0..600", NULL);
	if (o.mode == M_OCSP && o.n_reqs == 0)
		die("ocsp needs --req FILE (DER OCSP requests)", NULL);
	if (o.mode != M_OCSP && (o.csr == NULL || o.cacert == NULL))
		die("enroll and renew need --csr and --cacert", NULL);
	if (o.mode == M_ENROLL && o.tokens == NULL)
		die("enroll needs --tokens FILE", NULL);
	if (o.mode == M_RENEW && (o.cert == NULL || o.key == NULL))
		die("renew needs --cert and --key", NULL);
}

static size_t on_data(char *data, size_t size, size_t n, void *arg)
{
	struct buf *b = arg;
	size_t add = size * n;

	if (b->len + add + 1 > b->cap) {
		size_t cap = (b->len + add + 1) * 2;
		char *p = realloc(b->p, cap);

		if (p == NULL)
			return 0;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, data, add);
	b->len += add;
	b->p[b->len] = '\0';
	return add;
}

/* An OCSPResponse, successful, with a basic response whose first answer is "good". */
static bool ocsp_ok(const struct buf *b, char *why, size_t why_len)
{
	const unsigned char *p = (const unsigned char *)b->p;
	OCSP_RESPONSE *r = b->p != NULL ? d2i_OCSP_RESPONSE(NULL, &p, (long)b->len) : NULL;
	OCSP_BASICRESP *basic = NULL;
	OCSP_SINGLERESP *single;
	int status = -1, cert_status = -1;
	bool good = false;

	if (r == NULL) {
		snprintf(why, why_len, "not an OCSPResponse (%zu bytes)", b->len);
		return false;
	}
	status = OCSP_response_status(r);
	basic = status == OCSP_RESPONSE_STATUS_SUCCESSFUL ? OCSP_response_get1_basic(r) : NULL;
	single = basic != NULL ? OCSP_resp_get0(basic, 0) : NULL;
	if (single != NULL)
		cert_status = OCSP_single_get0_status(single, NULL, NULL, NULL, NULL);
	good = cert_status == V_OCSP_CERTSTATUS_GOOD;
	if (!good)
		snprintf(why, why_len, "OCSP response status %d (%s), certificate status %d",
			 status, OCSP_response_status_str(status), cert_status);
	OCSP_BASICRESP_free(basic);
	OCSP_RESPONSE_free(r);
	return good;
}

/* The issued JSON: a serial, and a chain whose first certificate parses. */
static bool issued_ok(const struct buf *b, char *why, size_t why_len)
{
	json_error_t je;
	json_t *j = b->p != NULL ? json_loadb(b->p, b->len, 0, &je) : NULL;
	const char *serial = NULL, *chain = NULL;
	X509 *x = NULL;
	BIO *bio;

	if (j == NULL || json_unpack(j, "{s:s,s:s}", "serial", &serial, "chain", &chain) != 0 ||
	    *serial == '\0') {
		snprintf(why, why_len, "not the issued JSON: %.200s", b->p != NULL ? b->p : "");
		json_decref(j);
		return false;
	}
	bio = BIO_new_mem_buf(chain, -1);
	if (bio != NULL)
		x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	BIO_free(bio);
	if (x == NULL)
		snprintf(why, why_len, "the chain of %s does not parse", serial);
	X509_free(x);
	json_decref(j);
	return x != NULL;
}

static char *json_body(const char *token)
{
	json_t *j = token != NULL ? json_pack("{s:s,s:s}", "token", token, "csr", csr_pem)
				  : json_pack("{s:s,s:b}", "csr", csr_pem, "same_key", 1);
	char *text = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;

	json_decref(j);
	if (text == NULL)
		die("out of memory", NULL);
	return text;
}

/* Set up slot's next request; false when there is none (out of tokens or --requests). */
static bool next_request(struct slot *s)
{
	if (o.max_requests > 0 && (long long)sent >= o.max_requests)
		return false;
	free(s->body);
	s->body = NULL;
	s->resp.len = 0;
	switch (o.mode) {
	case M_OCSP: {
		size_t k = sent % (size_t)o.n_reqs;

		if (o.get) {
			curl_easy_setopt(s->h, CURLOPT_HTTPGET, 1L);
			curl_easy_setopt(s->h, CURLOPT_URL, req_get_url[k]);
		} else {
			curl_easy_setopt(s->h, CURLOPT_URL, o.url);
			curl_easy_setopt(s->h, CURLOPT_POSTFIELDS, (const char *)req_der[k]);
			curl_easy_setopt(s->h, CURLOPT_POSTFIELDSIZE, (long)req_len[k]);
		}
		break;
	}
	case M_ENROLL:
		if (next_token >= n_tokens)
			return false;
		s->body = json_body(tokens[next_token++]);
		break;
	case M_RENEW: s->body = json_body(NULL); break;
	}
	if (s->body != NULL) {
		curl_easy_setopt(s->h, CURLOPT_POSTFIELDS, s->body);
		curl_easy_setopt(s->h, CURLOPT_POSTFIELDSIZE, (long)strlen(s->body));
	}
	sent++;
	s->t0 = now();
	return true;
}

static void slot_init(struct slot *s)
{
	s->h = curl_easy_init();
	if (s->h == NULL)
		die("curl_easy_init failed", NULL);
	s->headers =
		curl_slist_append(NULL, o.mode == M_OCSP ? "Content-Type: application/ocsp-request"
							 : "Content-Type: application/json");
	s->headers = curl_slist_append(s->headers, "Expect:"); /* no 100-continue round trip */
	curl_easy_setopt(s->h, CURLOPT_HTTPHEADER, s->headers);
	curl_easy_setopt(s->h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(s->h, CURLOPT_WRITEDATA, &s->resp);
	curl_easy_setopt(s->h, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(s->h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(s->h, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(s->h, CURLOPT_PRIVATE, s);
	if (o.mode != M_OCSP) {
		curl_easy_setopt(s->h, CURLOPT_URL, o.url);
		curl_easy_setopt(s->h, CURLOPT_CAINFO, o.cacert);
		curl_easy_setopt(s->h, CURLOPT_SSL_VERIFYPEER, 1L);
		curl_easy_setopt(s->h, CURLOPT_SSL_VERIFYHOST, 2L);
	}
	if (o.mode == M_RENEW) {
		curl_easy_setopt(s->h, CURLOPT_SSLCERT, o.cert);
		curl_easy_setopt(s->h, CURLOPT_SSLKEY, o.key);
	}
}

static void record(struct slot *s, CURLcode cc)
{
	long status = 0;
	char why[512] = "";
	bool good = false;
	double t = now() - s->t0;
	long nc = 0;

	if (curl_easy_getinfo(s->h, CURLINFO_NUM_CONNECTS, &nc) == CURLE_OK && nc > 0)
		connects += (unsigned long long)nc;
	if (cc != CURLE_OK) {
		transport++;
		snprintf(why, sizeof(why), "transport: %s", curl_easy_strerror(cc));
	} else {
		curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &status);
		if (status != 200) {
			by_status[status > 0 && status < MAX_STATUS ? status : 0]++;
			snprintf(why, sizeof(why), "HTTP %ld: %.300s", status,
				 s->resp.p != NULL && o.mode != M_OCSP ? s->resp.p : "");
		} else if (o.mode == M_OCSP ? ocsp_ok(&s->resp, why, sizeof(why))
					    : issued_ok(&s->resp, why, sizeof(why))) {
			good = true;
		} else {
			bad_body++;
		}
	}
	if (!good) {
		if (first_error[0] == '\0')
			snprintf(first_error, sizeof(first_error), "%s", why);
		return;
	}
	ok++;
	if (n_lat == cap_lat) {
		cap_lat = cap_lat ? 2 * cap_lat : 65536;
		lat = realloc(lat, cap_lat * sizeof(*lat));
		if (lat == NULL)
			die("out of memory", NULL);
	}
	lat[n_lat++] = t;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double pct(double p)
{
	size_t i = (size_t)(p * (double)n_lat);

	if (n_lat == 0)
		return 0;
	return lat[i < n_lat ? i : n_lat - 1] * 1e3;
}

int main(int argc, char **argv)
{
	CURLM *m;
	struct slot *slots;
	int running = 0, active = 0;
	double t0, elapsed, cpu0;
	unsigned long long failed;
	char errors[1024] = "";
	size_t el = 0;

	parse(argc, argv);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
		die("curl_global_init failed", NULL);
	if (o.mode == M_OCSP) {
		req_der = xmalloc((size_t)o.n_reqs * sizeof(*req_der));
		req_len = xmalloc((size_t)o.n_reqs * sizeof(*req_len));
		req_get_url = xmalloc((size_t)o.n_reqs * sizeof(*req_get_url));
		for (int i = 0; i < o.n_reqs; i++) {
			req_der[i] = (unsigned char *)read_file(o.reqs[i], &req_len[i]);
			req_get_url[i] = get_url(req_der[i], req_len[i]);
		}
	} else {
		size_t len;

		csr_pem = read_file(o.csr, &len);
		if (o.mode == M_ENROLL)
			load_tokens(o.tokens);
	}

	m = curl_multi_init();
	/* never more connections than requests in flight (the service limits them per address) */
	curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)o.connections);
	curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, (long)o.connections);
	slots = calloc((size_t)o.connections, sizeof(*slots));
	if (slots == NULL)
		die("out of memory", NULL);
	cpu0 = cpu_seconds();
	t0 = now();
	for (int i = 0; i < o.connections; i++) {
		slot_init(&slots[i]);
		if (next_request(&slots[i])) {
			curl_multi_add_handle(m, slots[i].h);
			active++;
		}
	}
	while (active > 0) {
		CURLMsg *msg;
		int left;
		bool stopping = now() - t0 >= o.seconds;

		curl_multi_perform(m, &running);
		while ((msg = curl_multi_info_read(m, &left)) != NULL) {
			struct slot *s;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
			record(s, msg->data.result);
			curl_multi_remove_handle(m, s->h);
			active--;
			/* the same handle again: its connection is reused if still open */
			if (!stopping && next_request(s)) {
				curl_multi_add_handle(m, s->h);
				active++;
			}
		}
		if (active > 0)
			curl_multi_poll(m, NULL, 0, 100, NULL);
	}
	elapsed = now() - t0;
	if (n_lat > 0)
		qsort(lat, n_lat, sizeof(double), cmp_double);
	failed = sent - ok;
	for (int st = 0; st < MAX_STATUS; st++)
		if (by_status[st] > 0 && el < sizeof(errors) - 32)
			el += (size_t)snprintf(errors + el, sizeof(errors) - el, "%shttp_%d:%llu",
					       el ? "," : "", st, by_status[st]);
	if (bad_body > 0 && el < sizeof(errors) - 32)
		el += (size_t)snprintf(errors + el, sizeof(errors) - el, "%sbad_body:%llu",
				       el ? "," : "", bad_body);
	if (transport > 0 && el < sizeof(errors) - 32)
		el += (size_t)snprintf(errors + el, sizeof(errors) - el, "%stransport:%llu",
				       el ? "," : "", transport);
	printf("mode=%s%s connections=%d sent=%llu ok=%llu failed=%llu seconds=%.2f rps=%.1f "
	       "p50_ms=%.2f p99_ms=%.2f max_ms=%.2f new_connections=%llu client_cpu=%.2f "
	       "errors=%s\n",
	       argv[1], o.get ? "-get" : "", o.connections, sent, ok, failed, elapsed,
	       (double)ok / elapsed, pct(0.50), pct(0.99), n_lat ? lat[n_lat - 1] * 1e3 : 0.0,
	       connects, (cpu_seconds() - cpu0) / elapsed, el ? errors : "none");
	if (o.mode == M_ENROLL && next_token >= n_tokens && elapsed < o.seconds)
		fprintf(stderr, "caload: the tokens ran out after %.2f s (of %.0f s asked)\n",
			elapsed, o.seconds);
	for (int i = 0; i < o.connections; i++) {
		curl_easy_cleanup(slots[i].h);
		curl_slist_free_all(slots[i].headers);
		free(slots[i].body);
		free(slots[i].resp.p);
	}
	free(slots);
	curl_multi_cleanup(m);
	curl_global_cleanup();
	if (failed > 0) {
		fprintf(stderr, "caload: FAILED: %llu of %llu requests failed (%s); first: %s\n",
			failed, sent, errors, first_error);
		return 2;
	}
	return 0;
}
