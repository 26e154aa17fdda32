#!/usr/bin/env bash
# mtls ca serve, end to end with peers nobody here wrote: curl speaks HTTPS to the API (its
# TLS through libmtls) and plain HTTP to the CRL/roots port, openssl makes the CSRs, reads
# the CRLs and is the OCSP client (POST; GET through curl).
#   - roots and CRL served with ETag / 304, the CRL a real CRL of the CA
#   - enrollment with a one-time token: issued with exactly the token's names; a replay, a
#     CSR asking for more, a garbage token are refused with their codes, nothing issued
#   - renewal over mutual TLS with the certificate being renewed; refused without one
#   - revocation by an admin only; the CRL and OCSP show it; the revoked certificate can no
#     longer renew; a local `mtls ca revoke` reaches the served CRL too
#   - bad input: an oversized body (413), not JSON (415/400), wrong method (405), garbage
#     bytes on the TLS port: refused, the service keeps serving
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

command -v curl >/dev/null || _lib_die "curl not found in PATH"

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca
TD=spiffe://example.org
APP=$TD/ns/dev/sa/app
ADMIN=$TD/ns/prod/sa/admin

"$MTLS" ca init --dir "$D" >/dev/null 2>&1 || _lib_die "(setup) mtls ca init failed"
"$MTLS" ca issue --dir "$D" --profile client --uri "$ADMIN" --out "$W/admin" >/dev/null 2>&1 ||
	_lib_die "(setup) the admin certificate could not be issued"
"$MTLS" ca issue --dir "$D" --profile client --uri "$TD/ns/dev/sa/other" --out "$W/other" \
	>/dev/null 2>&1 || _lib_die "(setup) the other certificate could not be issued"
"$MTLS" ca issue --dir "$D" --profile client --uri "$TD/ns/dev/sa/third" --out "$W/third" \
	>/dev/null 2>&1 || _lib_die "(setup) the third certificate could not be issued"

start_bg "$W/serve.log" "$MTLS" ca serve --dir "$D" --listen 127.0.0.1:0 \
	--http-listen 127.0.0.1:0 --admin-uri "$ADMIN" --log-level debug
SERVE_PID=$BG_PID
wait_for_line "$W/serve.log" '"event":"listening"' "$READY_LIMIT" "$SERVE_PID" || {
	cat -- "$W/serve.log" >&2
	_lib_die "mtls ca serve did not start"
}
port_of() { grep -m1 -F "\"event\":\"$1\"" "$W/serve.log" | sed -n 's/.*"address":"[^"]*:\([0-9][0-9]*\)".*/\1/p'; }
AP=$(port_of listening)
HP=$(port_of http_listening)
API=https://127.0.0.1:$AP
HTTP=http://127.0.0.1:$HP

# http OUT ARGS... : curl, bounded; sets CODE (the status, 000 if no answer) and writes the
# body to OUT.
http() {
	local out=$1
	shift
	CODE=$(curl -sS -o "$out" -w '%{http_code}' --max-time 20 "$@" 2>"$W/curl.err" || true)
}
# api OUT PATH JSONFILE [CURL ARGS...] : POST JSON to the API, verifying it by the CA's root.
api() {
	local out=$1 path=$2 body=$3
	shift 3
	http "$out" --cacert "$D/root.pem" -H 'Content-Type: application/json' \
		--data-binary "@$body" "$@" "$API$path"
}
# field FILE KEY : a string field of a JSON object, escapes undone (\n, \/, \").
field() { sed -n "s/.*\"$2\":\"\\(\\([^\"\\\\]\\|\\\\.\\)*\\)\".*/\\1/p" "$1" | head -n 1 | sed 's/\\\//\//g' | { IFS= read -r v || true; printf '%b' "$v"; }; }
# csr_json OUT KEY [SUBJ] : a P-256 key and a CSR for it, as {"csr": PEM} (plus "token" when
# TOKEN is set).
csr_json() {
	openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout "$2" \
		-subj "${3:-/}" -out "$2.csr" "${@:4}" >/dev/null 2>&1 || _lib_die "(setup) openssl req"
	local pem
	pem=$(awk '{printf "%s\\n", $0}' "$2.csr")
	if [ -n "${TOKEN:-}" ]; then
		printf '{"token":"%s","csr":"%s"}' "$TOKEN" "$pem" >"$1"
	else
		printf '{"csr":"%s"}' "$pem" >"$1"
	fi
}
rows() { "$MTLS" ca list --dir "$D" 2>/dev/null | tail -n +2 | wc -l; }
alive() { kill -0 "$SERVE_PID" 2>/dev/null; }

echo "# public data: roots, CRL"
p=()
http "$W/roots.pem" -D "$W/roots.h" "$HTTP/roots.pem"
[ "$CODE" = 200 ] || p+=("GET /roots.pem: $CODE")
cmp -s "$W/roots.pem" "$D/root.pem" || p+=("/roots.pem is not the CA's root.pem")
etag=$(sed -n 's/^[Ee][Tt][Aa][Gg]: *\(".*"\).*/\1/p' "$W/roots.h" | tr -d '\r')
[ -n "$etag" ] || p+=("no ETag")
http "$W/roots2.pem" -H "If-None-Match: $etag" "$HTTP/roots.pem"
[ "$CODE" = 304 ] || p+=("If-None-Match with the ETag: $CODE, expected 304")
verdict "GET /roots.pem: the root bundle, with an ETag that gives 304" "${p[@]+"${p[@]}"}" -- \
	"$(cat "$W/curl.err")"

p=()
http "$W/crl.der" -D "$W/crl.h" "$HTTP/crl"
[ "$CODE" = 200 ] || p+=("GET /crl: $CODE")
grep -qi '^Content-Type: application/pkix-crl' "$W/crl.h" || p+=("not application/pkix-crl")
grep -qi '^Last-Modified:' "$W/crl.h" || p+=("no Last-Modified")
openssl crl -inform DER -in "$W/crl.der" -CAfile "$D/intermediate.pem" -noout 2>"$W/crl.err" ||
	p+=("openssl crl does not verify it: $(cat "$W/crl.err")")
http "$W/crl.pem" "$HTTP/crl.pem"
[ "$CODE" = 200 ] && cmp -s "$W/crl.pem" "$D/crl.pem" || p+=("/crl.pem is not the CA's crl.pem ($CODE)")
verdict "GET /crl: the CA's CRL as DER (application/pkix-crl, Last-Modified), /crl.pem as PEM" \
	"${p[@]+"${p[@]}"}"

echo "# enrollment with a one-time token"
LAST_CMD="mtls ca token"
run "$MTLS" ca token --dir "$D" --profile client --uri "$APP" --ttl 10m
TOKEN=$OUT
[ "$RC" = 0 ] && [ -n "$TOKEN" ] || _lib_die "(setup) mtls ca token failed: $ERR"
[[ $TOKEN == mtls1.* ]] || _lib_die "(setup) not a token: $TOKEN"
csr_json "$W/enroll.json" "$W/app.key"
before=$(rows)
api "$W/enroll.out" /v1/enroll "$W/enroll.json"
p=()
[ "$CODE" = 200 ] || p+=("POST /v1/enroll: $CODE $(cat "$W/enroll.out")")
field "$W/enroll.out" chain >"$W/app-chain.pem"
openssl verify -CAfile "$D/root.pem" -untrusted "$W/app-chain.pem" "$W/app-chain.pem" \
	>/dev/null 2>&1 || p+=("the chain returned does not verify to the root")
san=$(openssl x509 -in "$W/app-chain.pem" -noout -ext subjectAltName 2>/dev/null | tail -n +2 | tr -d ' ')
[ "$san" = "URI:$APP" ] || p+=("the certificate's names are '$san', not exactly URI:$APP")
[ "$(openssl x509 -in "$W/app-chain.pem" -noout -pubkey | openssl sha256)" = \
	"$(openssl pkey -in "$W/app.key" -pubout | openssl sha256)" ] ||
	p+=("the certificate is not for the CSR's key")
[ "$(rows)" = $((before + 1)) ] || p+=("the inventory did not grow by one")
field "$W/enroll.out" roots | cmp -s - "$D/root.pem" || p+=("roots is not the root bundle")
verdict "enroll: a CSR without names gets exactly the token's URI, a chain to the root" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 5 "$W/serve.log")"
APP_SERIAL=$(field "$W/enroll.out" serial)

p=()
api "$W/replay.out" /v1/enroll "$W/enroll.json"
[ "$CODE" = 401 ] || p+=("status $CODE, expected 401")
grep -q '"error":"token_used"' "$W/replay.out" || p+=("not token_used: $(cat "$W/replay.out")")
[ "$(rows)" = $((before + 1)) ] || p+=("something was issued")
verdict "enroll: the same token again is refused (401 token_used), nothing issued" "${p[@]+"${p[@]}"}"

run "$MTLS" ca token --dir "$D" --profile client --uri "$APP" --ttl 10m
TOKEN=$OUT
csr_json "$W/more.json" "$W/more.key" "/" -addext "subjectAltName=URI:$APP,URI:$ADMIN"
api "$W/more.out" /v1/enroll "$W/more.json"
p=()
[ "$CODE" = 403 ] || p+=("status $CODE, expected 403")
grep -q '"error":"csr_not_granted"' "$W/more.out" || p+=("not csr_not_granted: $(cat "$W/more.out")")
[ "$(rows)" = $((before + 1)) ] || p+=("something was issued")
verdict "enroll: a CSR asking for a name the token does not grant is refused (403)" "${p[@]+"${p[@]}"}"
# that refusal left the token unused: the same token with a CSR asking for nothing works
csr_json "$W/less.json" "$W/less.key"
api "$W/less.out" /v1/enroll "$W/less.json"
vcheck "enroll: a refusal does not use the token up (the same token then enrolls)" \
	"$([ "$CODE" = 200 ] || echo "status $CODE: $(cat "$W/less.out")")"

# one token, two enrollments at once: exactly one wins
run "$MTLS" ca token --dir "$D" --profile client --uri "$TD/ns/dev/sa/race" --ttl 10m
TOKEN=$OUT
csr_json "$W/race1.json" "$W/race1.key"
csr_json "$W/race2.json" "$W/race2.key"
before=$(rows)
racers=()
for i in 1 2; do
	curl -sS -o "$W/race$i.out" -w '%{http_code}' --max-time 20 --cacert "$D/root.pem" \
		-H 'Content-Type: application/json' --data-binary "@$W/race$i.json" \
		"$API/v1/enroll" >"$W/race$i.code" 2>/dev/null &
	racers+=("$!")
done
wait "${racers[@]}" || true
codes=$({ cat "$W/race1.code"; echo; cat "$W/race2.code"; echo; } | sort | tr '\n' ' ')
p=()
[ "$codes" = "200 401 " ] || p+=("statuses $codes, expected one 200 and one 401")
[ "$(rows)" = $((before + 1)) ] || p+=("$(($(rows) - before)) certificates issued, expected 1")
verdict "one token used by two enrollments at once: exactly one wins" "${p[@]+"${p[@]}"}"

# what a CSR may not ask of an automated enrollment: another usage, a CA's key usage, and
# a signature that does not verify
run "$MTLS" ca token --dir "$D" --profile client --uri "$APP" --ttl 10m
TOKEN=$OUT
csr_json "$W/eku.json" "$W/eku.key" "/" -addext "extendedKeyUsage=clientAuth,codeSigning"
api "$W/eku.out" /v1/enroll "$W/eku.json"
vcheck "enroll: a CSR asking for codeSigning is refused (403 csr_not_granted)" \
	"$([ "$CODE" = 403 ] && grep -q 'csr_not_granted.*codeSigning\|codeSigning.*csr_not_granted\|Code Signing' "$W/eku.out" || echo "$CODE $(cat "$W/eku.out")")"
csr_json "$W/ku.json" "$W/ku.key" "/" -addext "keyUsage=digitalSignature,keyCertSign"
api "$W/ku.out" /v1/enroll "$W/ku.json"
vcheck "enroll: a CSR asking for keyCertSign is refused (403)" \
	"$([ "$CODE" = 403 ] || echo "$CODE $(cat "$W/ku.out")")"
csr_json "$W/sig.json" "$W/sig.key"
openssl req -in "$W/sig.key.csr" -outform DER -out "$W/sig.der" 2>/dev/null
size=$(stat -c %s "$W/sig.der")
printf '\x55' | dd of="$W/sig.der" bs=1 seek=$((size - 3)) conv=notrunc 2>/dev/null
pem=$( { echo "-----BEGIN CERTIFICATE REQUEST-----"; base64 -w 64 "$W/sig.der"; echo "-----END CERTIFICATE REQUEST-----"; } | awk '{printf "%s\\n", $0}')
printf '{"token":"%s","csr":"%s"}' "$TOKEN" "$pem" >"$W/sig.json"
api "$W/sig.out" /v1/enroll "$W/sig.json"
vcheck "enroll: a CSR whose signature does not verify is refused (400)" \
	"$([ "$CODE" = 400 ] || echo "$CODE $(cat "$W/sig.out")")"

TOKEN="mtls1.garbage"
csr_json "$W/bad.json" "$W/bad.key"
audit_before=$(sqlite3 "$D/ca.db" 'SELECT count(*) FROM audit' 2>/dev/null || echo "?")
api "$W/bad.out" /v1/enroll "$W/bad.json"
for _ in 1 2 3; do api "$W/bad2.out" /v1/enroll "$W/bad.json"; done
vcheck "requests with no token of this CA add nothing to the audit log (anyone could fill it)" \
	"$([ "$(sqlite3 "$D/ca.db" 'SELECT count(*) FROM audit' 2>/dev/null || echo "?")" = "$audit_before" ] || echo "the audit log grew from $audit_before")"
vcheck "enroll: a malformed token is refused (400 token_malformed)" \
	"$([ "$CODE" = 400 ] && grep -q token_malformed "$W/bad.out" || echo "$CODE $(cat "$W/bad.out")")"
TOKEN=""

echo "# renewal over mutual TLS"
csr_json "$W/renew.json" "$W/app2.key"
api "$W/renew.out" /v1/renew "$W/renew.json" --cert "$W/app-chain.pem" --key "$W/app.key"
p=()
[ "$CODE" = 200 ] || p+=("POST /v1/renew: $CODE $(cat "$W/renew.out")")
field "$W/renew.out" chain >"$W/app2-chain.pem"
new_serial=$(field "$W/renew.out" serial)
[ -n "$new_serial" ] && [ "$new_serial" != "$APP_SERIAL" ] || p+=("no new serial")
san=$(openssl x509 -in "$W/app2-chain.pem" -noout -ext subjectAltName 2>/dev/null | tail -n +2 | tr -d ' ')
[ "$san" = "URI:$APP" ] || p+=("renewed names '$san'")
verdict "renew: the holder of a valid certificate gets a new one, same names, new key" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 5 "$W/serve.log")"

api "$W/nocert.out" /v1/renew "$W/renew.json"
vcheck "renew without a client certificate: 401 certificate_required" \
	"$([ "$CODE" = 401 ] && grep -q certificate_required "$W/nocert.out" || echo "$CODE $(cat "$W/nocert.out")")"

echo "# revocation"
printf '{"serial":"%s","reason":"keyCompromise"}' "$APP_SERIAL" >"$W/revoke.json"
api "$W/notadmin.out" /v1/revoke "$W/revoke.json" --cert "$W/other-chain.pem" --key "$W/other.key"
vcheck "revoke by a client that is not an admin: 403 not_admin" \
	"$([ "$CODE" = 403 ] && grep -q not_admin "$W/notadmin.out" || echo "$CODE $(cat "$W/notadmin.out")")"
api "$W/revoke.out" /v1/revoke "$W/revoke.json" --cert "$W/admin-chain.pem" --key "$W/admin.key"
p=()
[ "$CODE" = 200 ] || p+=("POST /v1/revoke: $CODE $(cat "$W/revoke.out")")
http "$W/crl2.der" "$HTTP/crl"
openssl crl -inform DER -in "$W/crl2.der" -noout -text 2>/dev/null | grep -q "Serial Number: $APP_SERIAL" ||
	p+=("the served CRL does not list $APP_SERIAL")
verdict "revoke by the admin: 200, and the served CRL lists it at once" "${p[@]+"${p[@]}"}"
api "$W/again.out" /v1/revoke "$W/revoke.json" --cert "$W/admin-chain.pem" --key "$W/admin.key"
vcheck "revoking it again: 409 already_revoked" \
	"$([ "$CODE" = 409 ] || echo "$CODE $(cat "$W/again.out")")"

third=$(openssl x509 -in "$W/third-chain.pem" -noout -serial | sed 's/serial=//')
LAST_CMD="mtls ca revoke --ca-url (not an admin)"
run "$MTLS" ca revoke --dir "$D" --ca-url "$API" --admin-cert "$W/other-chain.pem" \
	--admin-key "$W/other.key" --serial "$third"
p=()
[ "$RC" = 1 ] || p+=("exit status $RC, expected 1")
[[ $ERR == *not_admin* ]] || p+=("the refusal does not say not_admin")
report "mtls ca revoke --ca-url with a certificate that is not an admin's: refused in one line" \
	"${p[@]+"${p[@]}"}"
LAST_CMD="mtls ca revoke --ca-url"
run "$MTLS" ca revoke --dir "$D" --ca-url "$API" --admin-cert "$W/admin-chain.pem" \
	--admin-key "$W/admin.key" --serial "$third" --reason superseded
p=()
[ "$RC" = 0 ] || p+=("exit status $RC")
"$MTLS" ca list --dir "$D" --revoked 2>/dev/null | grep -q "$third" || p+=("not revoked in the inventory")
report "mtls ca revoke --ca-url with the admin's certificate revokes through the service" \
	"${p[@]+"${p[@]}"}"

csr_json "$W/renew2.json" "$W/app3.key"
api "$W/revoked-renew.out" /v1/renew "$W/renew2.json" --cert "$W/app-chain.pem" --key "$W/app.key"
vcheck "a revoked certificate cannot renew" \
	"$([ "$CODE" != 200 ] || echo "status 200: $(cat "$W/revoked-renew.out")")"
# the API's TLS configuration follows the CRL: the handshake itself refuses it soon
seen=""
for _ in $(seq 1 50); do
	api "$W/revoked-tls.out" /v1/renew "$W/renew2.json" --cert "$W/app-chain.pem" --key "$W/app.key"
	if grep -q '"event":"api_refused".*"reason":"revoked"' "$W/serve.log"; then
		seen=1
		break
	fi
	sleep 0.1
done
vcheck "after a revocation through the API, the API's own handshake refuses that certificate" \
	"$([ -n "$seen" ] || echo "no api_refused line with reason revoked: $(grep api_refused "$W/serve.log" | tail -n 2)")"

echo "# OCSP (openssl ocsp as the client)"
ocsp_status() { # CERT -> good / revoked / unknown as openssl ocsp says, and "verify ok"
	openssl ocsp -issuer "$D/intermediate.pem" -cert "$1" -url "$HTTP/ocsp" -CAfile "$D/root.pem" \
		-no_nonce 2>&1 | tr '\n' ' '
}
o=$(ocsp_status "$W/app-chain.pem")
vcheck "OCSP POST: the revoked certificate is revoked, the response verifies" \
	"$([[ $o == *"Response verify OK"* && $o == *": revoked"* ]] || echo "$o")"
o=$(ocsp_status "$W/app2-chain.pem")
vcheck "OCSP POST: the renewed certificate is good" \
	"$([[ $o == *"Response verify OK"* && $o == *": good"* ]] || echo "$o")"
openssl ocsp -issuer "$D/intermediate.pem" -cert "$W/app2-chain.pem" -no_nonce -reqout "$W/q.der" >/dev/null 2>&1
enc=$(base64 -w0 "$W/q.der" | sed 's/+/%2B/g; s:/:%2F:g; s/=/%3D/g')
http "$W/g.der" -D "$W/g.h" "$HTTP/ocsp/$enc"
o=$(openssl ocsp -respin "$W/g.der" -issuer "$D/intermediate.pem" -cert "$W/app2-chain.pem" \
	-CAfile "$D/root.pem" -no_nonce 2>&1 | tr '\n' ' ')
vcheck "OCSP GET (RFC 5019): good, cacheable (ETag)" \
	"$([[ $CODE == 200 && $o == *"Response verify OK"* && $o == *": good"* ]] && grep -qi '^ETag:' "$W/g.h" || echo "$CODE $o")"

echo "# a local mtls ca revoke reaches the served CRL"
other=$(openssl x509 -in "$W/other-chain.pem" -noout -serial | sed 's/serial=//')
"$MTLS" ca revoke --dir "$D" --serial "$other" >/dev/null 2>&1 || true
found=""
for _ in $(seq 1 60); do
	http "$W/crl3.der" "$HTTP/crl"
	if openssl crl -inform DER -in "$W/crl3.der" -noout -text 2>/dev/null | grep -q "Serial Number: $other"; then
		found=1
		break
	fi
	sleep 0.1
done
vcheck "a revocation by a local 'mtls ca revoke' is served (the service reads crl.pem again)" \
	"$([ -n "$found" ] || echo "the served CRL never listed $other")"

echo "# bad input"
head -c 100000 /dev/zero | tr '\0' 'a' >"$W/big.json"
api "$W/big.out" /v1/enroll "$W/big.json"
vcheck "a body over the bound: 413" "$([ "$CODE" = 413 ] || echo "$CODE")"
# a client still sending when the answer comes must still read it: the service drains
# instead of closing on unread bytes (a reset would destroy the 413 before curl reads it)
head -c 3000000 /dev/zero | tr '\0' 'a' >"$W/huge.json"
codes=""
for _ in $(seq 1 10); do
	http "$W/huge.out" --limit-rate 500k -H 'Expect:' --cacert "$D/root.pem" \
		-H 'Content-Type: application/json' --data-binary "@$W/huge.json" "$API/v1/enroll"
	codes+="$CODE "
done
vcheck "3 MB bodies still being sent when the 413 comes: every client reads its 413" \
	"$([ "$codes" = "413 413 413 413 413 413 413 413 413 413 " ] || echo "statuses: $codes")"
printf 'not json' >"$W/nj.json"
http "$W/nj.out" --cacert "$D/root.pem" -H 'Content-Type: text/plain' --data-binary "@$W/nj.json" "$API/v1/enroll"
vcheck "a body that is not declared JSON: 415" "$([ "$CODE" = 415 ] || echo "$CODE")"
api "$W/nj2.out" /v1/enroll "$W/nj.json"
vcheck "a body that is not JSON: 400 bad_json" "$([ "$CODE" = 400 ] && grep -q bad_json "$W/nj2.out" || echo "$CODE $(cat "$W/nj2.out")")"
http "$W/get.out" --cacert "$D/root.pem" "$API/v1/enroll"
vcheck "GET on a POST route: 405" "$([ "$CODE" = 405 ] || echo "$CODE")"
p=()
for r in too_large content_type bad_json method; do
	# (the service logs through its own thread: the line may land after the client's answer)
	wait_for_line "$W/serve.log" "\"event\":\"http_refused\".*\"reason\":\"$r\"" "$READY_LIMIT" ||
		p+=("no http_refused line for $r")
done
verdict "each of those refusals is one log line with its reason" "${p[@]+"${p[@]}"}"
head -c 3000 /dev/urandom >"$W/garbage"
timeout 5 bash -c "cat '$W/garbage' >/dev/tcp/127.0.0.1/$AP" 2>/dev/null || true
http "$W/after.pem" --cacert "$D/root.pem" "$API/roots.pem"
p=()
alive || p+=("the service died")
[ "$CODE" = 200 ] || p+=("the API does not answer after garbage: $CODE")
grep -q '"event":"api_refused"' "$W/serve.log" || p+=("no api_refused line for the garbage")
verdict "garbage bytes on the TLS port: refused and logged, the API keeps serving" "${p[@]+"${p[@]}"}"

stop_bg "$SERVE_PID"
p=()
"$MTLS" ca audit --dir "$D" >"$W/audit.out" 2>&1 || p+=("mtls ca audit: $(cat "$W/audit.out")")
verdict "the audit chain is intact after all of it" "${p[@]+"${p[@]}"}"
finish
