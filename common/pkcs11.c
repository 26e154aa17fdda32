/*
 * PKCS#11 keys through libp11's engine (see pkcs11.h). OpenSSL 3.0 deprecates the ENGINE API
 * in favour of providers, but Debian 12 packages no PKCS#11 provider; the engine is what it
 * ships, so this one file asks for the 1.1 API.
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1

#include "pkcs11.h"

#include <ctype.h>
#include <pthread.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/ui.h>
#include <p11-kit/pkcs11.h>

#define PKCS11_ENGINE_ID "pkcs11"
#define PKCS11_URI_MAX	 4096

/* The engine, loaded and initialized with its module on first use and kept until the process
 * ends: keys loaded through it refer to it. There is one: OpenSSL keeps a single instance of
 * an engine per process (ENGINE_by_id() hands out the same one, and libp11's engine will not
 * bind a second), and its module is set once, at its initialization. A process therefore
 * uses one module; p11-kit's proxy, the default, reaches every module registered with
 * p11-kit through it. */
static pthread_mutex_t engines_mu = PTHREAD_MUTEX_INITIALIZER;
static char engine_module[1024];
static ENGINE *engine;

/* The module, as the engine reaches it (dlopen gives one instance per path), for the login:
 * this file logs in itself and never hands the PIN to the engine, because libp11 keeps a copy
 * of a PIN it logged in with for the life of the process (to log in again after a fork). A
 * token's login lasts while a session of the process is open on it: one is kept per token. */
#define PKCS11_MAX_LOGINS 16
static CK_FUNCTION_LIST_PTR p11;
static struct {
	CK_SLOT_ID slot;
	CK_SESSION_HANDLE session;
} logins[PKCS11_MAX_LOGINS];
static int nlogins;
static UI_METHOD *no_prompt;

bool pkcs11_is_uri(const char *s)
{
	return s != NULL && strncasecmp(s, "pkcs11:", 7) == 0;
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decodes [s, s + n) into out (NUL-terminated). -1 if it does not fit, holds a bad
 * escape or decodes to a NUL; out is "" then. */
static int pct_decode(const char *s, size_t n, char *out, size_t out_len)
{
	size_t o = 0;

	if (out_len == 0)
		return -1;
	out[0] = '\0';

	for (size_t i = 0; i < n; i++) {
		int c = (unsigned char)s[i];

		if (c == '%') {
			int hi, lo;

			if (n - i < 3)
				goto bad;
			hi = hex_value(s[i + 1]);
			lo = hex_value(s[i + 2]);
			if (hi < 0 || lo < 0)
				goto bad;
			c = hi * 16 + lo;
			i += 2;
		}
		if (c == 0 || o + 1 >= out_len)
			goto bad;
		out[o++] = (char)c;
	}
	out[o] = '\0';
	return 0;
bad:
	out[0] = '\0';
	return -1;
}

static bool attr_is(const char *a, size_t n, const char *name)
{
	size_t k = strlen(name);

	return n >= k && strncasecmp(a, name, k) == 0 && (n == k || a[k] == '=');
}

static const char *const path_attrs[] = {
	"token", "manufacturer", "serial", "model", "object", "id", "type",
};

int pkcs11_uri_check(const char *uri, char *module, size_t module_len, char *err, size_t err_len)
{
	size_t len;
	const char *p, *q, *end;
	bool any = false;

	if (module != NULL && module_len > 0)
		module[0] = '\0';
	if (!pkcs11_is_uri(uri)) {
		snprintf(err, err_len, "not a PKCS#11 URI (pkcs11:token=...;object=...)");
		return -1;
	}
	len = strnlen(uri, PKCS11_URI_MAX + 1);
	if (len > PKCS11_URI_MAX) {
		snprintf(err, err_len, "PKCS#11 URI longer than %d characters", PKCS11_URI_MAX);
		return -1;
	}
	/* RFC 7512 percent-encodes anything else; and the URI is echoed in messages and logs */
	for (size_t i = 0; i < len; i++)
		if (!isgraph((unsigned char)uri[i])) {
			snprintf(err, err_len,
				 "PKCS#11 URI holds a space or a control character at offset %zu: "
				 "percent-encode it (%%20 for a space)",
				 i);
			return -1;
		}
	end = uri + len;
	q = memchr(uri, '?', len);
	/* path attributes: name=value;name=value */
	for (p = uri + 7; p < (q != NULL ? q : end);) {
		const char *stop = q != NULL ? q : end;
		const char *semi = memchr(p, ';', (size_t)(stop - p));
		size_t n = (size_t)((semi != NULL ? semi : stop) - p);
		bool known = false;

		if (attr_is(p, n, "pin-value") || attr_is(p, n, "pin-source")) {
			snprintf(
				err, err_len,
				"the PKCS#11 URI holds a PIN (pin-value/pin-source): remove it and "
				"give the PIN from a file or an environment variable");
			return -1;
		}
		for (size_t i = 0; i < sizeof(path_attrs) / sizeof(path_attrs[0]); i++)
			known = known || attr_is(p, n, path_attrs[i]);
		if (n > 0 && (!known || memchr(p, '=', n) == NULL)) {
			snprintf(err, err_len,
				 "PKCS#11 URI attribute '%.*s' is not one mtls takes (token, "
				 "manufacturer, serial, model, object, id, type)",
				 (int)(n > 64 ? 64 : n), p);
			return -1;
		}
		if (attr_is(p, n, "type") &&
		    !(n == 12 && strncasecmp(p, "type=private", 12) == 0)) {
			snprintf(err, err_len,
				 "PKCS#11 URI '%.*s' names no private key: use type=private or "
				 "leave "
				 "type out",
				 (int)(n > 64 ? 64 : n), p);
			return -1;
		}
		any = any || (n > 0 && !attr_is(p, n, "type"));
		p += n + (semi != NULL ? 1 : 0);
		if (semi == NULL)
			break;
	}
	if (!any) {
		snprintf(err, err_len,
			 "PKCS#11 URI names no key: give at least object= or id= (and token=)");
		return -1;
	}
	/* query attributes: name=value&name=value */
	for (p = q != NULL ? q + 1 : end; p < end;) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		size_t n = (size_t)((amp != NULL ? amp : end) - p);

		if (attr_is(p, n, "pin-value") || attr_is(p, n, "pin-source")) {
			snprintf(
				err, err_len,
				"the PKCS#11 URI holds a PIN (pin-value/pin-source): remove it and "
				"give the PIN from a file or an environment variable");
			return -1;
		}
		if (attr_is(p, n, "module-path") && n > 12) {
			char dummy[1024];
			char *out = module != NULL && module_len > 0 ? module : dummy;
			size_t out_len =
				module != NULL && module_len > 0 ? module_len : sizeof(dummy);

			if (pct_decode(p + 12, n - 12, out, out_len) != 0) {
				snprintf(err, err_len,
					 "PKCS#11 URI module-path is not a valid percent-encoded "
					 "path");
				return -1;
			}
		} else if (n > 0) {
			snprintf(err, err_len,
				 "PKCS#11 URI query attribute '%.*s' is not one mtls takes (only "
				 "module-path)",
				 (int)(n > 64 ? 64 : n), p);
			return -1;
		}
		p += n + (amp != NULL ? 1 : 0);
		if (amp == NULL)
			break;
	}
	return 0;
}

/* The engine asks its UI for a PIN it was not given; a daemon has nobody to ask. */
static bool asked_pin; /* under engines_mu */

static int no_prompt_read(UI *ui, UI_STRING *uis)
{
	(void)ui;
	(void)uis;
	asked_pin = true;
	return 0;
}

/* Must hold engines_mu. The engine for module, loaded and initialized on first use. */
static ENGINE *engine_for(const char *module, char *err, size_t err_len)
{
	ENGINE *e;
	void *h;

	if (engine != NULL && strcmp(engine_module, module) == 0)
		return engine;
	if (engine != NULL) {
		snprintf(err, err_len,
			 "PKCS#11 module %s cannot be used: this process already uses module %s, "
			 "and OpenSSL's PKCS#11 engine takes one module per process; give both "
			 "keys the same module (p11-kit's proxy, %s, reaches every module "
			 "registered with p11-kit)",
			 module, engine_module, PKCS11_DEFAULT_MODULE);
		return NULL;
	}
	if (strlen(module) >= sizeof(engine_module)) {
		snprintf(err, err_len, "PKCS#11 module path longer than %zu characters",
			 sizeof(engine_module) - 1);
		return NULL;
	}
	if (no_prompt == NULL) {
		no_prompt = UI_create_method("mtls: no PIN prompt");
		if (no_prompt == NULL || UI_method_set_reader(no_prompt, no_prompt_read) != 0) {
			snprintf(err, err_len, "out of memory");
			return NULL;
		}
	}
	/* the engine opens the module only at the first key; open it now to say what is wrong */
	h = dlopen(module, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		const char *why = dlerror();

		snprintf(err, err_len,
			 "cannot load PKCS#11 module %s (%s); check the path (--pkcs11-module) and "
			 "that the module's package is installed",
			 module, why != NULL ? why : "dlopen failed");
		return NULL;
	}
	{
		CK_C_GetFunctionList get = NULL;
		void *sym = dlsym(h, "C_GetFunctionList");
		CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
		CK_RV rv;

		/* POSIX's way to a function from dlsym(): ISO C has no conversion */
		if (sym != NULL)
			memcpy(&get, &sym, sizeof(get));
		/* as libp11 initializes it: threads may call it, with the OS's locks */
		if (get == NULL || get(&p11) != CKR_OK || p11 == NULL ||
		    ((rv = p11->C_Initialize(&args)) != CKR_OK &&
		     rv != CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
			p11 = NULL;
			dlclose(h);
			snprintf(err, err_len,
				 "PKCS#11 module %s does not initialize; check that it is a "
				 "PKCS#11 module and its configuration",
				 module);
			return NULL;
		}
	}
	/* h stays open: the module is in use until the process ends */
	ERR_set_mark();
	e = ENGINE_by_id(PKCS11_ENGINE_ID);
	if (e == NULL) {
		ERR_pop_to_mark();
		snprintf(err, err_len,
			 "cannot load OpenSSL's PKCS#11 engine; install libengine-pkcs11-openssl");
		return NULL;
	}
	/* Not a default for anything: OpenSSL's ENGINE_register_all_complete() (run by
	 * OPENSSL_init_crypto(OPENSSL_INIT_ENGINE_ALL_BUILTIN), as libcurl's initialization
	 * asks) would otherwise make it the engine of every EC and RSA key, and the peers'
	 * public keys would be decoded as legacy keys our checks cannot read (weak_key) */
	ENGINE_set_flags(e, ENGINE_get_flags(e) | ENGINE_FLAGS_NO_REGISTER_ALL);
	/* QUIET: the engine's own lines on standard error say what our message says */
	ENGINE_ctrl_cmd(e, "QUIET", 0, NULL, NULL, 0);
	if (!ENGINE_ctrl_cmd_string(e, "MODULE_PATH", module, 0) || !ENGINE_init(e)) {
		ERR_pop_to_mark();
		ENGINE_free(e);
		snprintf(err, err_len,
			 "cannot load PKCS#11 module %s; check the path (--pkcs11-module) and that "
			 "the module's package is installed",
			 module);
		return NULL;
	}
	ERR_pop_to_mark();
	/* ENGINE_init took a functional reference; the structural one from ENGINE_by_id is
	 * kept too, both until exit */
	snprintf(engine_module, sizeof(engine_module), "%s", module);
	engine = e;
	return e;
}

/* The value of path attribute name of uri, percent-decoded, into out; false if absent. */
static bool uri_attr(const char *uri, const char *name, char *out, size_t out_len)
{
	const char *end = uri + strcspn(uri, "?");

	for (const char *p = uri + 7; p < end;) {
		const char *semi = memchr(p, ';', (size_t)(end - p));
		size_t n = (size_t)((semi != NULL ? semi : end) - p), k = strlen(name);

		if (attr_is(p, n, name) && n > k)
			return pct_decode(p + k + 1, n - k - 1, out, out_len) == 0;
		if (semi == NULL)
			break;
		p = semi + 1;
	}
	return false;
}

/* Does a space-padded field of a token's info (n bytes) say want? */
static bool field_is(const unsigned char *field, size_t n, const char *want)
{
	size_t w = strlen(want);

	while (n > 0 && field[n - 1] == ' ')
		n--;
	return n == w && memcmp(field, want, n) == 0;
}

static bool token_matches(const CK_TOKEN_INFO *t, const char *uri)
{
	char v[256];

	return (!uri_attr(uri, "token", v, sizeof(v)) || field_is(t->label, 32, v)) &&
	       (!uri_attr(uri, "manufacturer", v, sizeof(v)) ||
		field_is(t->manufacturerID, 32, v)) &&
	       (!uri_attr(uri, "model", v, sizeof(v)) || field_is(t->model, 16, v)) &&
	       (!uri_attr(uri, "serial", v, sizeof(v)) || field_is(t->serialNumber, 16, v));
}

/* Must hold engines_mu, after engine_for(). Log in, with pin, to the one token uri names
 * (unless the process is logged in there already), keeping the session open. */
static enum pkcs11_failure login(const char *uri, const char *pin, char *err, size_t err_len)
{
	CK_SLOT_ID slots[64], found = 0;
	CK_ULONG n = sizeof(slots) / sizeof(slots[0]);
	CK_SESSION_HANDLE s;
	CK_TOKEN_INFO info;
	int matches = 0;
	CK_RV rv;

	if (p11->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
		n = 0;
	for (CK_ULONG i = 0; i < n; i++)
		if (p11->C_GetTokenInfo(slots[i], &info) == CKR_OK && token_matches(&info, uri)) {
			found = slots[i];
			matches++;
		}
	if (matches == 0)
		return PKCS11_NO_OBJECT;
	if (matches > 1) {
		snprintf(err, err_len,
			 "PKCS#11 URI %.*s matches %d tokens, and a PIN is tried on one only; name "
			 "it with token= (or serial=)",
			 (int)strcspn(uri, "?"), uri, matches);
		return PKCS11_BAD_URI;
	}
	for (int i = 0; i < nlogins; i++)
		if (logins[i].slot == found)
			return PKCS11_OK;
	if (nlogins == PKCS11_MAX_LOGINS) {
		snprintf(err, err_len, "too many PKCS#11 tokens in one process (at most %d)",
			 PKCS11_MAX_LOGINS);
		return PKCS11_BAD_URI;
	}
	if (p11->C_OpenSession(found, CKF_SERIAL_SESSION, NULL, NULL, &s) != CKR_OK)
		return PKCS11_NO_OBJECT;
	rv = p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)(uintptr_t)pin, (CK_ULONG)strlen(pin));
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
		p11->C_CloseSession(s);
		return rv == CKR_PIN_LOCKED ? PKCS11_PIN_LOCKED
		       : rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LEN_RANGE || rv == CKR_PIN_INVALID
			       ? PKCS11_BAD_PIN
			       : PKCS11_NO_OBJECT;
	}
	logins[nlogins].slot = found;
	logins[nlogins].session = s;
	nlogins++;
	return PKCS11_OK;
}

/* Can the token sign with key? The engine returns a key it found before from its cache,
 * token or not. why: the engine's first error, for the message. */
static bool signs(EVP_PKEY *key, char *why, size_t why_len)
{
	static const unsigned char probe[] = "mtls: is the token there?";
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	bool ok;

	ok = md != NULL && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
	     EVP_DigestSign(md, NULL, &sig_len, probe, sizeof(probe)) == 1 &&
	     (sig = OPENSSL_malloc(sig_len)) != NULL &&
	     EVP_DigestSign(md, sig, &sig_len, probe, sizeof(probe)) == 1;
	if (!ok) {
		const char *r = ERR_reason_error_string(ERR_peek_error());

		snprintf(why, why_len, "%s", r != NULL ? r : "signing failed");
	}
	OPENSSL_free(sig);
	EVP_MD_CTX_free(md);
	return ok;
}

/* What the engine's errors say, read from the queue: libp11 reports PKCS#11 return codes by
 * their names. */
static enum pkcs11_failure failure_from_errors(void)
{
	enum pkcs11_failure why = PKCS11_NO_OBJECT;
	unsigned long e;
	const char *data = NULL;
	int flags = 0;

	while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
		const char *r = ERR_reason_error_string(e);
		char text[256];

		snprintf(text, sizeof(text), "%s %s", r != NULL ? r : "",
			 (flags & ERR_TXT_STRING) && data != NULL ? data : "");
		if (strcasestr(text, "pin locked") != NULL)
			why = PKCS11_PIN_LOCKED;
		else if (strcasestr(text, "pin incorrect") != NULL ||
			 strcasestr(text, "pin len range") != NULL ||
			 strcasestr(text, "user not logged in") != NULL)
			why = why == PKCS11_PIN_LOCKED ? why : PKCS11_BAD_PIN;
	}
	return why;
}

EVP_PKEY *pkcs11_key_load(const char *uri, const char *module, const char *pin,
			  enum pkcs11_failure *why, char *err, size_t err_len)
{
	char uri_module[1024], path[PKCS11_URI_MAX + 1], why_sign[128] = "";
	enum pkcs11_failure f = PKCS11_OK;
	EVP_PKEY *key = NULL;
	const char *q;
	ENGINE *e;

	if (pkcs11_uri_check(uri, uri_module, sizeof(uri_module), err, err_len) != 0) {
		f = PKCS11_BAD_URI;
		goto out;
	}
	if (module == NULL || module[0] == '\0')
		module = uri_module[0] != '\0' ? uri_module : PKCS11_DEFAULT_MODULE;
	/* the engine's parser takes no query part: the module is set on the engine instead */
	q = strchr(uri, '?');
	snprintf(path, sizeof(path), "%.*s", (int)(q != NULL ? (size_t)(q - uri) : strlen(uri)),
		 uri);

	pthread_mutex_lock(&engines_mu);
	e = engine_for(module, err, err_len);
	if (e == NULL) {
		f = PKCS11_NO_ENGINE;
		goto unlock;
	}
	/* the login first, by this file: the engine then finds the token logged in and is
	 * never given the PIN */
	if (pin != NULL && (f = login(path, pin, err, err_len)) != PKCS11_OK) {
		if (f == PKCS11_BAD_URI)
			goto unlock; /* err says why */
		goto explain;
	}
	ERR_set_mark();
	asked_pin = false;
	key = ENGINE_load_private_key(e, path, no_prompt, NULL);
	if (key == NULL) {
		f = failure_from_errors();
		if (f == PKCS11_NO_OBJECT && asked_pin)
			f = PKCS11_BAD_PIN;
		/* logged in with the PIN given (login()): what the engine missed is the key */
		if (pin != NULL && f == PKCS11_BAD_PIN)
			f = PKCS11_NO_OBJECT;
	} else if (!signs(key, why_sign, sizeof(why_sign))) {
		EVP_PKEY_free(key);
		key = NULL;
		f = PKCS11_NO_SIGN;
	}
	ERR_pop_to_mark();
explain:
	switch (f) {
	case PKCS11_OK: break;
	case PKCS11_BAD_PIN:
		snprintf(err, err_len,
			 pin == NULL ? "PKCS#11 key %s needs the token's PIN; give it from a file "
				       "or an environment variable"
				     : "the token refused the PIN for PKCS#11 key %s: wrong PIN",
			 path);
		break;
	case PKCS11_NO_SIGN:
		snprintf(err, err_len,
			 "the token will not sign with PKCS#11 key %s (%s): it is missing, was "
			 "removed or ended its session; once it is back, restart (the PKCS#11 "
			 "engine keeps its session for the process)",
			 path, why_sign);
		break;
	case PKCS11_PIN_LOCKED:
		snprintf(err, err_len,
			 "the token's PIN is locked (too many wrong PINs) for PKCS#11 key %s; "
			 "unlock it with the SO PIN",
			 path);
		break;
	default:
		snprintf(err, err_len,
			 "no private key matches PKCS#11 URI %s in module %s; check token= and "
			 "object=/id= (pkcs11-tool --module %s --list-objects), that the token is "
			 "present (one removed while the process ran needs a restart once it is "
			 "back), and its PIN",
			 path, module, module);
		break;
	}
unlock:
	pthread_mutex_unlock(&engines_mu);
out:
	if (why != NULL)
		*why = f;
	return key;
}
