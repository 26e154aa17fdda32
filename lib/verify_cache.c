/*
 * The verification cache: successful chain verifications remembered by the SHA-256 of the
 * presented chain (and of the name and URI the request expects), so that a client that
 * reconnects with a certificate already seen skips OpenSSL's chain building and signature
 * checks, and the strict profile and key strength checks of that chain. A hit gives back the
 * verified path (the certificates above the leaf), on which the rest of the decision runs
 * as on a fresh verification (verify.c): the leaf, validity now, revocation, the allow rules.
 *
 * One cache belongs to one compiled state (struct state), whose trust store, CRLs and allow
 * rules never change: a reload builds a new state, so it starts with an empty cache. Within
 * a state only time moves; an entry therefore carries the window in which its verification
 * stays true (the latest notBefore and the earliest notAfter of the verified chain, capped
 * by the CRLs' nextUpdate), and a lookup outside the window is a miss that verifies anew,
 * which reports the precise reason. The TLS handshake still checks the peer's proof of
 * possession of the leaf's key (CertificateVerify): the cache only spares the chain.
 *
 * The table is direct-mapped and bounded: an insert replaces whatever shares its slot.
 * Entries hold references to the certificates of their path; the CA certificates many
 * paths share are kept once (a small list of the issuers seen), not once per entry.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "internal.h"

#define PATH_MAX_ISSUERS 8 /* longer paths are not remembered */
#define SHARED_ISSUERS	 16

struct verify_entry {
	uint8_t key[32];
	time_t valid_from;
	time_t valid_until;
	bool used;
	int nissuers;
	X509 *issuers[PATH_MAX_ISSUERS]; /* the path above the leaf (referenced) */
};

struct verify_cache {
	pthread_mutex_t lock;
	size_t slots;
	struct verify_entry *table;   /* allocated on the first insert */
	X509 *shared[SHARED_ISSUERS]; /* issuers seen, referenced; entries point at these */
	atomic_ulong hits;
	atomic_ulong misses;
};

struct verify_cache *verify_cache_new(size_t slots)
{
	struct verify_cache *vc;

	if (slots == 0)
		return NULL;
	vc = calloc(1, sizeof(*vc));
	if (vc == NULL)
		return NULL;
	pthread_mutex_init(&vc->lock, NULL);
	vc->slots = slots;
	return vc;
}

void verify_cache_free(struct verify_cache *vc)
{
	if (vc == NULL)
		return;
	pthread_mutex_destroy(&vc->lock);
	for (size_t i = 0; vc->table != NULL && i < vc->slots; i++)
		for (int j = 0; j < vc->table[i].nissuers; j++)
			X509_free(vc->table[i].issuers[j]);
	for (int i = 0; i < SHARED_ISSUERS; i++)
		X509_free(vc->shared[i]);
	free(vc->table);
	free(vc);
}

static EVP_MD *sha256;
static int hash_index = -1;
static pthread_once_t once = PTHREAD_ONCE_INIT;
/* guards the memo of every certificate: objects of a session or a cached path are shared
 * between threads, and setting ex data is not atomic */
static pthread_mutex_t hash_lock = PTHREAD_MUTEX_INITIALIZER;

static void hash_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	free(ptr);
}

/* fetched once: EVP_sha256() makes every digest look its implementation up again */
static void init(void)
{
	sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	hash_index = X509_get_ex_new_index(0, NULL, NULL, NULL, hash_free);
}

/* The SHA-256 of a certificate's DER, remembered on the object: a resumed session brings
 * the same objects each time, and encoding a certificate again costs more than the rest of
 * the lookup. */
static int cert_hash(X509 *cert, uint8_t h[32])
{
	uint8_t *memo;
	unsigned n = 0;

	pthread_mutex_lock(&hash_lock);
	memo = X509_get_ex_data(cert, hash_index);
	if (memo != NULL)
		memcpy(h, memo, 32);
	pthread_mutex_unlock(&hash_lock);
	if (memo != NULL)
		return 0;
	if (X509_digest(cert, sha256, h, &n) != 1 || n != 32)
		return -1;
	memo = malloc(32);
	if (memo == NULL)
		return 0;
	memcpy(memo, h, 32);
	pthread_mutex_lock(&hash_lock);
	if (X509_get_ex_data(cert, hash_index) != NULL ||
	    X509_set_ex_data(cert, hash_index, memo) != 1) {
		free(memo);
	}
	pthread_mutex_unlock(&hash_lock);
	return 0;
}

static int digest_string(EVP_MD_CTX *md, const char *s)
{
	/* a string and its terminating NUL: "" and NULL differ from every name */
	if (s == NULL)
		return EVP_DigestUpdate(md, "\1", 1) == 1 ? 0 : -1;
	return EVP_DigestUpdate(md, s, strlen(s) + 1) == 1 ? 0 : -1;
}

int verify_cache_key(const struct verify_request *rq, X509 *leaf, STACK_OF(X509) * untrusted,
		     uint8_t key[32])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	uint8_t leaf_hash[32], h[32];
	unsigned n = 0;
	int rc = -1;

	pthread_once(&once, init);
	if (md == NULL || sha256 == NULL || hash_index < 0 ||
	    EVP_DigestInit_ex(md, sha256, NULL) != 1)
		goto out;
	if (EVP_DigestUpdate(md, rq->peer_is_client ? "c" : "s", 1) != 1 ||
	    digest_string(md, rq->name) != 0 || digest_string(md, rq->uri) != 0 ||
	    cert_hash(leaf, leaf_hash) != 0 || EVP_DigestUpdate(md, leaf_hash, 32) != 1)
		goto out;
	/* the leaf is usually the first of the certificates sent: hashed once */
	for (int i = 0; i < sk_X509_num(untrusted); i++) {
		X509 *cert = sk_X509_value(untrusted, i);

		if (cert == leaf)
			memcpy(h, leaf_hash, sizeof(h));
		else if (cert_hash(cert, h) != 0)
			goto out;
		if (EVP_DigestUpdate(md, h, sizeof(h)) != 1)
			goto out;
	}
	if (EVP_DigestFinal_ex(md, key, &n) == 1 && n == 32)
		rc = 0;
out:
	EVP_MD_CTX_free(md);
	return rc;
}

static struct verify_entry *slot_of(struct verify_cache *vc, const uint8_t key[32])
{
	uint64_t h;

	memcpy(&h, key, sizeof(h));
	return &vc->table[h % vc->slots];
}

bool verify_cache_hit(struct verify_cache *vc, const uint8_t key[32], time_t now,
		      STACK_OF(X509) * chain)
{
	X509 *path[PATH_MAX_ISSUERS];
	int n = 0;
	bool hit = false;

	if (vc == NULL)
		return false;
	pthread_mutex_lock(&vc->lock);
	if (vc->table != NULL) {
		const struct verify_entry *e = slot_of(vc, key);

		hit = e->used && memcmp(e->key, key, 32) == 0 && now >= e->valid_from &&
		      now <= e->valid_until;
		for (int i = 0; hit && i < e->nissuers; i++)
			if (X509_up_ref(e->issuers[i]))
				path[n++] = e->issuers[i];
		hit = hit && n == e->nissuers;
	}
	pthread_mutex_unlock(&vc->lock);
	for (int i = 0; i < n; i++)
		if (!hit || !sk_X509_push(chain, path[i])) {
			X509_free(path[i]);
			hit = false;
		}
	atomic_fetch_add(hit ? &vc->hits : &vc->misses, 1);
	return hit;
}

/* The cache's own reference to a certificate equal to cert (under the lock). */
static X509 *shared_copy(struct verify_cache *vc, X509 *cert)
{
	for (int i = 0; i < SHARED_ISSUERS; i++) {
		if (vc->shared[i] == NULL) {
			if (!X509_up_ref(cert))
				return NULL;
			vc->shared[i] = cert;
			return cert;
		}
		if (X509_cmp(vc->shared[i], cert) == 0)
			return vc->shared[i];
	}
	return cert;
}

void verify_cache_put(struct verify_cache *vc, const uint8_t key[32], STACK_OF(X509) * chain,
		      time_t valid_from, time_t valid_until)
{
	X509 *old[PATH_MAX_ISSUERS];
	int nold = 0, n = sk_X509_num(chain) - 1;

	if (vc == NULL || valid_until < valid_from || n < 0 || n > PATH_MAX_ISSUERS)
		return;
	pthread_mutex_lock(&vc->lock);
	if (vc->table == NULL)
		vc->table = calloc(vc->slots, sizeof(*vc->table));
	if (vc->table != NULL) {
		struct verify_entry *e = slot_of(vc, key);

		for (nold = 0; nold < e->nissuers; nold++)
			old[nold] = e->issuers[nold];
		memcpy(e->key, key, 32);
		e->valid_from = valid_from;
		e->valid_until = valid_until;
		e->nissuers = 0;
		for (int i = 0; i < n; i++) {
			X509 *c = shared_copy(vc, sk_X509_value(chain, i + 1));

			if (c == NULL || !X509_up_ref(c))
				break;
			e->issuers[e->nissuers++] = c;
		}
		e->used = e->nissuers == n;
	}
	pthread_mutex_unlock(&vc->lock);
	for (int i = 0; i < nold; i++)
		X509_free(old[i]);
}

void verify_cache_stats(struct verify_cache *vc, unsigned long *hits, unsigned long *misses)
{
	*hits = vc != NULL ? atomic_load(&vc->hits) : 0;
	*misses = vc != NULL ? atomic_load(&vc->misses) : 0;
}
