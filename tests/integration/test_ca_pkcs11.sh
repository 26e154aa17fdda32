#!/usr/bin/env bash
# The CA's issuing key on a PKCS#11 token (SoftHSM2, a token initialized here in the temp dir
# with its own SOFTHSM2_CONF): `mtls ca init --key-uri` certifies the token's key, and every
# command that signs uses it through the token:
#   - init: intermediate.pem holds the token's public key, no intermediate.key, the URI and
#     module recorded; the first CRL verifies under intermediate.pem
#   - ca issue: a leaf openssl verifies; ca revoke, ca crl: CRLs openssl crl -verify accepts
#   - ca serve with the token key (refused to start with a wrong PIN): a host enrolls (mtls
#     ca token + mtls enroll) and renews, OCSP answers verify with openssl ocsp (the
#     responder's certificate issued by the token's key), good, then revoked after an admin
#     revokes through the API; the served CRL lists it and verifies
#   - ca renew-issuer and a root rollover (both the root key's job) and issuing after them
#   - refusals, one line, non-zero, nothing left on disk: init with a wrong PIN, no PIN, a
#     missing object, a missing module, a URI holding pin-value, an absent token; ca issue
#     with a wrong PIN, the token removed, another token in its place (same labels)
#   - the PIN is nowhere: not in the CA directory, the logs, ca serve's /proc/PID/cmdline or
#     environ, nor (but for one copy the PKCS#11 library keeps) in its memory
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

MODULE=/usr/lib/softhsm/libsofthsm2.so
for t in softhsm2-util pkcs11-tool curl; do
	command -v "$t" >/dev/null || _lib_die "$t not found: run scripts/install-deps.sh (softhsm2, opensc)"
done
[ -e "$MODULE" ] || _lib_die "$MODULE not found: install softhsm2 (scripts/install-deps.sh)"

W=$TMP/w
mkdir -m 700 -- "$W"
export SOFTHSM2_CONF=$W/softhsm2.conf
mkdir -m 700 -- "$W/tokens"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' \
	"$W" >"$SOFTHSM2_CONF"
# a PIN nothing else in a run holds, to look for
PIN=pin-$(openssl rand -hex 8)
printf '%s\n' "$PIN" >"$W/pin"
chmod 600 -- "$W/pin"
printf 'wrong-pin-0000\n' >"$W/wrong"
chmod 600 -- "$W/wrong"

# token LABEL [KEYLABEL] : a token with an EC P-256 key pair (id 01)
token() {
	softhsm2-util --init-token --free --label "$1" --so-pin 5678 --pin "$PIN" >/dev/null ||
		_lib_die "(setup) softhsm2-util --init-token $1"
	pkcs11-tool --module "$MODULE" --token-label "$1" --login --pin "$PIN" --keypairgen \
		--key-type EC:prime256v1 --label "${2:-issuing}" --id 01 >/dev/null 2>&1 ||
		_lib_die "(setup) pkcs11-tool --keypairgen on $1"
}
token ca
CA_TOKDIR=$(find "$W/tokens" -mindepth 1 -maxdepth 1 -type d)
token other
OTHER_TOKDIR=$(find "$W/tokens" -mindepth 1 -maxdepth 1 -type d ! -path "$CA_TOKDIR")
if [ ! -d "$CA_TOKDIR" ] || [ ! -d "$OTHER_TOKDIR" ]; then
	_lib_die "(setup) the tokens' directories"
fi
URI='pkcs11:token=ca;object=issuing'
D=$W/ca
m() { run "$MTLS" "$@"; }
pub_of_cert() { openssl x509 -in "$1" -noout -pubkey 2>/dev/null | openssl sha256; }

echo "# init with the token's key"
LAST_CMD="mtls ca init --key-uri $URI --pkcs11-module $MODULE --passphrase-file pin"
m ca init --dir "$D" --key-uri "$URI" --pkcs11-module "$MODULE" --passphrase-file "$W/pin"
p=()
[ "$RC" = 0 ] || p+=("exit status $RC")
[ -e "$D/intermediate.key" ] && p+=("intermediate.key was written")
pkcs11-tool --module "$MODULE" --token-label ca --read-object --type pubkey --label issuing \
	-o "$W/token-pub.der" >/dev/null 2>&1 || p+=("(setup) cannot read the token's public key")
[ "$(openssl pkey -pubin -inform DER -in "$W/token-pub.der" | openssl sha256)" = \
	"$(pub_of_cert "$D/intermediate.pem")" ] || p+=("intermediate.pem does not certify the token's key")
openssl verify -CAfile "$D/root.pem" "$D/intermediate.pem" >/dev/null 2>&1 ||
	p+=("intermediate.pem does not verify under root.pem")
openssl crl -in "$D/crl.pem" -CAfile "$D/intermediate.pem" -noout 2>"$W/crl.err" ||
	p+=("the first CRL does not verify under intermediate.pem: $(cat "$W/crl.err")")
[[ $OUT == *"issuing key:"*"on the PKCS#11 token, $URI"* ]] || p+=("init does not say where the issuing key is")
sq=$(sqlite3 "$D/ca.db" "select key||'='||value from meta where key like 'issuer_key%' order by key" 2>&1)
[ "$sq" = "issuer_key_module=$MODULE"$'\n'"issuer_key_uri=$URI" ] ||
	p+=("the inventory does not record the URI and module: $sq")
report "init --key-uri: the intermediate certifies the token's key, no key file, URI and module recorded" \
	"${p[@]+"${p[@]}"}"
[ "$RC" = 0 ] || _lib_die "(setup) no CA to go on with"

echo "# ca issue and ca revoke sign on the token"
LAST_CMD="mtls ca issue --profile server --dns a.test --passphrase-file pin"
m ca issue --dir "$D" --profile server --dns a.test --out "$W/a" --passphrase-file "$W/pin"
p=()
[ "$RC" = 0 ] || p+=("exit status $RC")
openssl verify -CAfile "$D/root.pem" -untrusted "$D/intermediate.pem" "$W/a.pem" >"$W/v.out" 2>&1 ||
	p+=("openssl verify: $(cat "$W/v.out")")
report "ca issue: the leaf verifies with openssl verify (root, intermediate)" "${p[@]+"${p[@]}"}"

serial=$(openssl x509 -in "$W/a.pem" -noout -serial | cut -d= -f2)
LAST_CMD="mtls ca revoke --cert a.pem --reason keyCompromise --passphrase-file pin"
m ca revoke --dir "$D" --cert "$W/a.pem" --reason keyCompromise --passphrase-file "$W/pin"
p=()
[ "$RC" = 0 ] || p+=("exit status $RC")
openssl crl -in "$D/crl.pem" -CAfile "$D/intermediate.pem" -verify -noout >"$W/crl.out" 2>&1 ||
	p+=("openssl crl -verify: $(cat "$W/crl.out")")
grep -q "verify OK" "$W/crl.out" || p+=("openssl crl -verify did not say verify OK: $(cat "$W/crl.out")")
openssl crl -in "$D/crl.pem" -noout -text | grep -q "Serial Number: $serial" ||
	p+=("the CRL does not list serial $serial")
report "ca revoke: the new CRL lists the leaf and verifies with openssl crl -verify" "${p[@]+"${p[@]}"}"

before_crl=$(openssl crl -in "$D/crl.pem" -noout -crlnumber)
LAST_CMD="mtls ca crl --passphrase-file pin"
m ca crl --dir "$D" --passphrase-file "$W/pin"
p=()
[ "$RC" = 0 ] || p+=("exit status $RC")
[ "$(openssl crl -in "$D/crl.pem" -noout -crlnumber)" != "$before_crl" ] || p+=("no new CRL number")
openssl crl -in "$D/crl.pem" -CAfile "$D/intermediate.pem" -verify -noout >/dev/null 2>&1 ||
	p+=("the new CRL does not verify")
report "ca crl: a fresh CRL signed on the token verifies" "${p[@]+"${p[@]}"}"

echo "# refusals at init: one line, non-zero, no CA directory (nor its parent) left"
# refuse_init NAME WANT ARGS... : init of $W/none/ca refused, stderr one line holding WANT
refuse_init() {
	local name=$1 want=$2
	shift 2
	LAST_CMD="mtls ca init --dir none/ca $*"
	m ca init --dir "$W/none/ca" "$@"
	p=()
	[ "$RC" = 1 ] || [ "$RC" = 2 ] || p+=("exit status $RC, expected 1 or 2")
	[[ $ERR == *"$want"* ]] || p+=("stderr does not say '$want'")
	[ "$(count_lines "$ERR" "")" = 1 ] || p+=("stderr is not one line")
	[ -e "$W/none" ] && p+=("$W/none was left behind: $(find "$W/none" | head -n 5)")
	[[ $ERR$OUT != *"$PIN"* ]] || p+=("the output holds the PIN")
	report "init refused: $name" "${p[@]+"${p[@]}"}"
	rm -rf -- "$W/none"
}
refuse_init "a wrong PIN" "wrong PIN" --key-uri "$URI" --pkcs11-module "$MODULE" \
	--passphrase-file "$W/wrong"
refuse_init "no PIN" "needs its PIN: give it with --passphrase-file or --passphrase-env" \
	--key-uri "$URI" --pkcs11-module "$MODULE"
refuse_init "a missing object" "no private key matches PKCS#11 URI pkcs11:token=ca;object=nope" \
	--key-uri 'pkcs11:token=ca;object=nope' --pkcs11-module "$MODULE" --passphrase-file "$W/pin"
refuse_init "an absent token" "no private key matches PKCS#11 URI pkcs11:token=gone;object=issuing" \
	--key-uri 'pkcs11:token=gone;object=issuing' --pkcs11-module "$MODULE" --passphrase-file "$W/pin"
refuse_init "a missing module" "cannot load PKCS#11 module $W/libnope.so" \
	--key-uri "$URI" --pkcs11-module "$W/libnope.so" --passphrase-file "$W/pin"
refuse_init "a URI holding pin-value" "holds a PIN" \
	--key-uri "$URI;pin-value=$PIN" --pkcs11-module "$MODULE"
refuse_init "--pkcs11-module without --key-uri" "--pkcs11-module goes with --key-uri" \
	--pkcs11-module "$MODULE"
refuse_init "a relative module path" "give the module's absolute path" \
	--key-uri "$URI" --pkcs11-module "./libsofthsm2.so" --passphrase-file "$W/pin"

echo "# refusals at ca issue: nothing issued"
rows() { "$MTLS" ca list --dir "$D" 2>/dev/null | tail -n +2 | wc -l; }
# refuse_issue NAME WANT [ARGS...]
refuse_issue() {
	local name=$1 want=$2 before
	shift 2
	before=$(rows)
	LAST_CMD="mtls ca issue --profile server --dns b.test --out b $*"
	m ca issue --dir "$D" --profile server --dns b.test --out "$W/b" "$@"
	p=()
	[ "$RC" = 1 ] || p+=("exit status $RC, expected 1")
	[[ $ERR == *"$want"* ]] || p+=("stderr does not say '$want'")
	[ "$(count_lines "$ERR" "")" = 1 ] || p+=("stderr is not one line")
	[ "$(rows)" = "$before" ] || p+=("the inventory changed")
	ls "$W"/b.* >/dev/null 2>&1 && p+=("files were written: $(ls "$W"/b.*)")
	report "ca issue refused: $name" "${p[@]+"${p[@]}"}"
	rm -f -- "$W"/b.*
}
refuse_issue "a wrong PIN" "wrong PIN" --passphrase-file "$W/wrong"
refuse_issue "no PIN" "is on a PKCS#11 token that needs its PIN"
# the token taken away (SoftHSM keeps a token in a directory of its own), then put back
mv -- "$CA_TOKDIR" "$W/removed"
refuse_issue "the token removed" "check token= and object=/id=" --passphrase-file "$W/pin"
# another token in its place, with the same labels: a key the CA never certified
token ca
refuse_issue "another token with the same labels" "is not the one intermediate.pem certifies" \
	--passphrase-file "$W/pin"
for t in "$W"/tokens/*; do
	[ "$t" = "$OTHER_TOKDIR" ] || rm -rf -- "$t"
done
mv -- "$W/removed" "$CA_TOKDIR"
LAST_CMD="mtls ca issue --profile server --dns back.test (the CA's token back)"
m ca issue --dir "$D" --profile server --dns back.test --out "$W/back" --passphrase-file "$W/pin"
p=()
[ "$RC" = 0 ] || p+=("exit status $RC")
openssl verify -CAfile "$D/root.pem" -untrusted "$D/intermediate.pem" "$W/back.pem" >/dev/null 2>&1 ||
	p+=("the leaf does not verify")
report "the CA's token back in place: ca issue signs again" "${p[@]+"${p[@]}"}"

echo "# ca serve with the token's key (the PIN from an environment variable)"
LAST_CMD="mtls ca serve --passphrase-file wrong"
run "$MTLS" ca serve --dir "$D" --listen 127.0.0.1:0 --http-listen none --passphrase-file "$W/wrong" \
	--sandbox-allow "$W" # SoftHSM's configuration and tokens, for the sandbox
p=()
[ "$RC" = 1 ] || p+=("exit status $RC, expected 1")
[[ $OUT$ERR == *"wrong PIN"* ]] || p+=("it does not say wrong PIN")
report "ca serve refuses to start with a wrong PIN" "${p[@]+"${p[@]}"}"
LAST_CMD="mtls ca serve --passphrase-file pin (no --sandbox-allow)"
run "$MTLS" ca serve --dir "$D" --listen 127.0.0.1:0 --http-listen none --passphrase-file "$W/pin"
p=()
[ "$RC" = 1 ] || p+=("exit status $RC, expected 1")
[[ $OUT$ERR == *"needs them given with --sandbox-allow"* ]] ||
	p+=("it does not say to give SoftHSM's files with --sandbox-allow")
report "ca serve sandboxed without SoftHSM's files: the error says --sandbox-allow" "${p[@]+"${p[@]}"}"
ADMIN=spiffe://example.org/ops/admin
"$MTLS" ca issue --dir "$D" --profile client --uri "$ADMIN" --out "$W/admin" \
	--passphrase-file "$W/pin" >/dev/null 2>&1 || _lib_die "(setup) the admin's certificate"
export MTLS_TEST_CA_PIN=$PIN
start_bg "$W/serve.log" "$MTLS" ca serve --dir "$D" --listen 127.0.0.1:0 \
	--http-listen 127.0.0.1:0 --passphrase-env MTLS_TEST_CA_PIN --log-level debug \
	--admin-uri "$ADMIN" --sandbox-allow "$W"
unset MTLS_TEST_CA_PIN
SERVE_BG=$BG_PID
wait_for_line "$W/serve.log" '"event":"listening"' "$READY_LIMIT" "$SERVE_BG" || {
	cat -- "$W/serve.log" >&2
	_lib_die "mtls ca serve did not start"
}
SERVE_PID=$(sed -n 's/.*"event":"listening".*"pid":\([0-9][0-9]*\).*/\1/p' "$W/serve.log" | head -n 1)
if [ -z "$SERVE_PID" ] || [ ! -d "/proc/$SERVE_PID" ]; then
	_lib_die "(setup) no pid of mtls ca serve"
fi
port_of() { grep -m1 -F "\"event\":\"$1\"" "$W/serve.log" | sed -n 's/.*"address":"[^"]*:\([0-9][0-9]*\)".*/\1/p'; }
HTTP=http://127.0.0.1:$(port_of http_listening)
API=https://127.0.0.1:$(port_of listening)

TOKEN=$("$MTLS" ca token --dir "$D" --profile client --uri spiffe://example.org/app 2>/dev/null) ||
	_lib_die "(setup) mtls ca token"
LAST_CMD="mtls enroll --dir host (MTLS_TOKEN)"
MTLS_TOKEN=$TOKEN run "$MTLS" enroll --dir "$W/host"
p=()
[ "$RC" = 0 ] || p+=("exit status $RC")
openssl verify -CAfile "$W/host/ca.pem" -untrusted "$W/host/cert.pem" "$W/host/cert.pem" \
	>"$W/v.out" 2>&1 || p+=("the enrolled chain does not verify: $(cat "$W/v.out")")
openssl verify -CAfile "$D/root.pem" -untrusted "$D/intermediate.pem" "$W/host/cert.pem" \
	>/dev/null 2>&1 || p+=("the enrolled leaf is not signed by the token's key (intermediate.pem)")
report "ca serve: a host enrolls (mtls ca token, mtls enroll), its chain verifies" "${p[@]+"${p[@]}"}"

old=$(openssl x509 -in "$W/host/cert.pem" -noout -serial)
LAST_CMD="mtls renew --dir host --force"
run "$MTLS" renew --dir "$W/host" --force
p=()
[ "$RC" = 0 ] || p+=("exit status $RC")
[ "$(openssl x509 -in "$W/host/cert.pem" -noout -serial)" != "$old" ] || p+=("cert.pem was not replaced")
openssl verify -CAfile "$D/root.pem" -untrusted "$D/intermediate.pem" "$W/host/cert.pem" \
	>/dev/null 2>&1 || p+=("the renewed leaf does not verify")
report "ca serve: the host renews (mtls renew --force), signed by the token's key" "${p[@]+"${p[@]}"}"

ocsp() { # CERT -> openssl ocsp's output (status and the response's verification)
	openssl ocsp -issuer "$D/intermediate.pem" -cert "$1" -url "$HTTP/ocsp" \
		-CAfile "$D/root.pem" -resp_text 2>&1 || true
}
o=$(ocsp "$W/host/cert.pem")
p=()
[[ $o == *"Response verify OK"* ]] || p+=("the OCSP response does not verify")
[[ $o == *"cert.pem: good"* ]] || p+=("not good")
resp_issuer=$(printf '%s\n' "$o" | sed -n '/BEGIN CERTIFICATE/,/END CERTIFICATE/p' |
	openssl x509 -noout -issuer 2>/dev/null || true)
[ "$resp_issuer" = "$(openssl x509 -in "$D/intermediate.pem" -noout -subject | sed 's/^subject/issuer/')" ] ||
	p+=("the responder's certificate is not issued by the intermediate: '$resp_issuer'")
printf '%s\n' "$o" | sed -n '/BEGIN CERTIFICATE/,/END CERTIFICATE/p' >"$W/responder.pem"
openssl verify -CAfile "$D/root.pem" -untrusted "$D/intermediate.pem" "$W/responder.pem" \
	>/dev/null 2>&1 || p+=("the responder's certificate does not verify to the root")
verdict "ca serve: OCSP answer good, verified by openssl ocsp, the responder certified by the token's key" \
	"${p[@]+"${p[@]}"}" -- "$o"

LAST_CMD="mtls ca revoke --ca-url API --admin-cert admin-chain.pem --cert host/cert.pem"
m ca revoke --dir "$D" --ca-url "$API" --admin-cert "$W/admin-chain.pem" --admin-key "$W/admin.key" \
	--cert "$W/host/cert.pem" --reason keyCompromise
p=()
[ "$RC" = 0 ] || p+=("exit status $RC")
"$MTLS" ca list --dir "$D" --revoked 2>/dev/null | grep -q "$(openssl x509 -in "$W/host/cert.pem" -noout -serial | cut -d= -f2)" ||
	p+=("not revoked in the inventory")
report "ca serve: an admin revokes through the API" "${p[@]+"${p[@]}"}"
o=""
for _ in $(seq 1 100); do # the service rereads the inventory per request; bounded
	o=$(ocsp "$W/host/cert.pem")
	[[ $o == *"cert.pem: revoked"* ]] && break
	sleep 0.1
done
p=()
[[ $o == *"cert.pem: revoked"* ]] || p+=("not revoked")
[[ $o == *"Response verify OK"* ]] || p+=("the OCSP response does not verify")
verdict "ca serve: OCSP says revoked after ca revoke, verified by openssl ocsp" "${p[@]+"${p[@]}"}" -- "$o"

p=()
curl -sS --max-time 20 -o "$W/served.crl" "$HTTP/crl" 2>"$W/curl.err" || p+=("GET /crl: $(cat "$W/curl.err")")
openssl crl -inform DER -in "$W/served.crl" -CAfile "$D/intermediate.pem" -verify -noout \
	>"$W/crl.out" 2>&1 || p+=("openssl crl -verify: $(cat "$W/crl.out")")
host_serial=$(openssl x509 -in "$W/host/cert.pem" -noout -serial | cut -d= -f2)
openssl crl -inform DER -in "$W/served.crl" -noout -text 2>/dev/null | grep -q "Serial Number: $host_serial" ||
	p+=("the served CRL does not list the revoked host ($host_serial)")
verdict "ca serve: the served CRL lists the revoked host and verifies under intermediate.pem" \
	"${p[@]+"${p[@]}"}"

echo "# the PIN is nowhere"
p=()
tr '\0' '\n' <"/proc/$SERVE_PID/cmdline" | grep -qF -- "$PIN" && p+=("/proc/PID/cmdline holds the PIN")
tr '\0' '\n' <"/proc/$SERVE_PID/environ" | grep -qF -- "$PIN" && p+=("/proc/PID/environ holds the PIN")
grep -qa 'MTLS_TEST_CA_PIN=' "/proc/$SERVE_PID/environ" && p+=("/proc/PID/environ still names MTLS_TEST_CA_PIN")
grep -rqaF -- "$PIN" "$D" && p+=("the CA directory holds the PIN: $(grep -rlaF -- "$PIN" "$D")")
grep -qaF -- "$PIN" "$W/serve.log" && p+=("ca serve's log holds the PIN")
verdict "the PIN is not in the CA directory, the log, ca serve's /proc/PID/cmdline or environ" \
	"${p[@]+"${p[@]}"}"

# mtls keeps no copy once the key is loaded; the PKCS#11 library (libp11) keeps one for a
# login again after a fork, which mtls cannot reach. Needs the right to read another
# process's memory (root, or ptrace allowed).
if command -v python3 >/dev/null && [ -r "/proc/$SERVE_PID/mem" ] &&
	n=$(python3 - "$SERVE_PID" "$PIN" 2>/dev/null <<'EOF'
import re, sys
pid, needle = sys.argv[1], sys.argv[2].encode()
hits = 0
with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
    for line in maps:
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+)", line)
        if m is None or "r" not in m[3]:
            continue
        try:
            mem.seek(int(m[1], 16))
            hits += mem.read(int(m[2], 16) - int(m[1], 16)).count(needle)
        except OSError:
            pass
print(hits)
EOF
); then
	if [ "$n" -le 1 ]; then
		pass "ca serve's memory holds the PIN at most once (the PKCS#11 library's copy): $n"
	else
		fail "ca serve's memory holds the PIN $n times: mtls kept a copy after loading the key"
	fi
else
	echo "skip  ca serve's memory: cannot read /proc/$SERVE_PID/mem"
fi
stop_bg "$SERVE_BG"

echo "# renew-issuer with the issuing key on the token (the root key file signs)"
LAST_CMD="mtls ca renew-issuer --passphrase-file pin"
m ca renew-issuer --dir "$D" --passphrase-file "$W/pin"
p=()
[ "$RC" = 0 ] || p+=("exit status $RC")
[ "$(pub_of_cert "$D/intermediate.pem")" = "$(pub_of_cert "$D/intermediate-prev.pem")" ] ||
	p+=("the renewed intermediate does not certify the token's key")
m ca issue --dir "$D" --profile client --uri spiffe://example.org/after --out "$W/after" \
	--passphrase-file "$W/pin"
[ "$RC" = 0 ] || p+=("ca issue after renew-issuer: $ERR")
openssl verify -CAfile "$D/root.pem" -untrusted "$D/intermediate.pem" "$W/after.pem" >/dev/null 2>&1 ||
	p+=("a leaf issued after renew-issuer does not verify")
report "renew-issuer: the same token key certified again; issuing goes on through the token" \
	"${p[@]+"${p[@]}"}"

echo "# a root rollover with the issuing key on the token (the switch certifies its public key)"
p=()
m ca rollover begin --dir "$D" --passphrase-file "$W/pin"
[ "$RC" = 0 ] || p+=("rollover begin: $ERR")
m ca rollover switch --dir "$D" --passphrase-file "$W/pin"
[ "$RC" = 0 ] || p+=("rollover switch: $ERR")
[ "$(pub_of_cert "$D/intermediate.pem")" = "$(pub_of_cert "$D/intermediate-prev.pem")" ] ||
	p+=("the switched intermediate does not certify the token's key")
m ca issue --dir "$D" --profile server --dns rolled.test --out "$W/rolled" --passphrase-file "$W/pin"
[ "$RC" = 0 ] || p+=("ca issue after the switch: $ERR")
openssl verify -CAfile "$D/root-next.pem" -untrusted "$D/intermediate.pem" "$W/rolled.pem" \
	>/dev/null 2>&1 || p+=("a leaf issued after the switch does not verify under the new root")
m ca rollover finish --dir "$D" --force
[ "$RC" = 0 ] || p+=("rollover finish: $ERR")
m ca revoke --dir "$D" --cert "$W/rolled.pem" --passphrase-file "$W/pin"
[ "$RC" = 0 ] || p+=("ca revoke after the rollover: $ERR")
openssl crl -in "$D/crl.pem" -CAfile "$D/intermediate.pem" -verify -noout >/dev/null 2>&1 ||
	p+=("the CRL after the rollover does not verify")
report "rollover begin/switch/finish: the token's key keeps issuing and signing CRLs" \
	"${p[@]+"${p[@]}"}"

finish
