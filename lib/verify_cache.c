/*
 * The verification cache: successful chain verifications remembered by the SHA-256 of the
 * presented chain (and of the name and URI the request expects), so that a client that
 * reconnects with a certificate already seen skips OpenSSL's chain building, signature and
 * CRL checks.
 *
 * One cache belongs to one compiled state (struct state), whose trust store, CRLs and allow
 * rules never change: a reload builds a new state, so it starts with an empty cache. Within
 * a state only time moves; an entry therefore carries the window in which its verification
 * stays true (the latest notBefore and the earliest notAfter of the verified chain, capped
 * by the CRLs' nextUpdate), and a lookup outside the window is a miss that verifies anew,
 * which reports the precise reason. What a hit does not decide (revocation of the leaf in
 * the current CRLs, the allow rules and the authorization callback) is checked again by the
 * caller on every hit. The TLS handshake still checks the peer's proof of possession of the
 * leaf's key (CertificateVerify): the cache only spares the chain.
 *
 * The table is direct-mapped and bounded: an insert replaces whatever shares its slot.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "internal.h"

struct verify_entry {
	uint8_t key[32];
	time_t valid_from;
	time_t valid_until;
	bool used;
};

struct verify_cache {
	pthread_mutex_t lock;
	size_t slots;
	struct verify_entry *table; /* allocated on the first insert */
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
	free(vc->table);
	free(vc);
}

static int digest_cert(EVP_MD_CTX *md, X509 *cert)
{
	uint8_t h[32];
	unsigned n = 0;

	return X509_digest(cert, EVP_sha256(), h, &n) == 1 && n == 32 &&
			       EVP_DigestUpdate(md, h, sizeof(h)) == 1
		       ? 0
		       : -1;
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
	unsigned n = 0;
	int rc = -1;

	if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
		goto out;
	if (EVP_DigestUpdate(md, rq->peer_is_client ? "c" : "s", 1) != 1 ||
	    digest_string(md, rq->name) != 0 || digest_string(md, rq->uri) != 0 ||
	    digest_cert(md, leaf) != 0)
		goto out;
	for (int i = 0; i < sk_X509_num(untrusted); i++)
		if (digest_cert(md, sk_X509_value(untrusted, i)) != 0)
			goto out;
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

bool verify_cache_hit(struct verify_cache *vc, const uint8_t key[32], time_t now)
{
	bool hit = false;

	if (vc == NULL)
		return false;
	pthread_mutex_lock(&vc->lock);
	if (vc->table != NULL) {
		const struct verify_entry *e = slot_of(vc, key);

		hit = e->used && memcmp(e->key, key, 32) == 0 && now >= e->valid_from &&
		      now <= e->valid_until;
	}
	pthread_mutex_unlock(&vc->lock);
	atomic_fetch_add(hit ? &vc->hits : &vc->misses, 1);
	return hit;
}

void verify_cache_put(struct verify_cache *vc, const uint8_t key[32], time_t valid_from,
		      time_t valid_until)
{
	if (vc == NULL || valid_until < valid_from)
		return;
	pthread_mutex_lock(&vc->lock);
	if (vc->table == NULL)
		vc->table = calloc(vc->slots, sizeof(*vc->table));
	if (vc->table != NULL) {
		struct verify_entry *e = slot_of(vc, key);

		memcpy(e->key, key, 32);
		e->valid_from = valid_from;
		e->valid_until = valid_until;
		e->used = true;
	}
	pthread_mutex_unlock(&vc->lock);
}

void verify_cache_stats(struct verify_cache *vc, unsigned long *hits, unsigned long *misses)
{
	*hits = vc != NULL ? atomic_load(&vc->hits) : 0;
	*misses = vc != NULL ? atomic_load(&vc->misses) : 0;
}
