#!/usr/bin/env bash
# `mtls enroll` and `mtls renew`, the client side of the CA service, against what needs no
# CA service: tokens missing, malformed or given twice; a CA URL nobody listens on; a real
# `openssl s_server -WWW` that serves the roots of ANOTHER CA (the token's pin refuses it),
# or the right roots behind a certificate from another CA (the pinned POST refuses it); an
# enrollment directory already there. Every refusal is one line, exit 1 (2 for usage), and
# leaves the directory as it was. (s_server answers no POST: it would only show the 30 s
# total timeout, so it is not asked one with the right certificate.)
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

W=$TMP/w
mkdir -m 700 -- "$W"
unset MTLS_TOKEN https_proxy HTTPS_PROXY all_proxy ALL_PROXY || true

# m ARGS... : `mtls ARGS...` (RC, OUT, ERR).
m() {
	LAST_CMD="mtls $*"
	run "$MTLS" "$@"
}

# one_line : is ERR exactly one line?
one_line() {
	[ -n "$ERR" ] && [ "$(printf '%s\n' "$ERR" | wc -l)" -eq 1 ]
}

# CA A (the token's) and CA B (another one), each made with the real `mtls ca init`.
m ca init --dir "$W/a" || true
[ "$RC" = 0 ] || { echo "(setup) mtls ca init a: $ERR" >&2; exit 1; }
m ca init --dir "$W/b" || true
[ "$RC" = 0 ] || { echo "(setup) mtls ca init b: $ERR" >&2; exit 1; }
for ca in a b; do
	m ca issue --dir "$W/$ca" --profile server --ip 127.0.0.1 --out "$W/srv-$ca"
	[ "$RC" = 0 ] || { echo "(setup) server certificate of $ca: $ERR" >&2; exit 1; }
done
FP_A=$(openssl x509 -in "$W/a/root.pem" -outform DER | openssl dgst -sha256 -r | cut -c1-64)

# token URL : a token of CA A for URL.
token() {
	"$MTLS" ca token --dir "$W/a" --profile client --uri spiffe://example.org/app \
		--ca-url "$1" 2>/dev/null
}

# A port nobody listens on: bound by s_server, then freed.
start_s_server "$W/free.log" -cert "$W/srv-a-chain.pem" -key "$W/srv-a.key"
FREE=$SS_PORT
stop_bg "$SS_PID"
TOK_FREE=$(token "https://127.0.0.1:$FREE")
[ -n "$TOK_FREE" ] || { echo "(setup) mtls ca token failed" >&2; exit 1; }

echo "# tokens"
D=$W/d1
m enroll --dir "$D"
p=()
[ "$RC" = 2 ] || p+=("exit $RC, not 2")
[[ $ERR == *"no token"*MTLS_TOKEN* ]] || p+=("message does not say where a token comes from")
one_line || p+=("stderr is not one line")
[ ! -e "$D" ] || p+=("$D was created")
report "no token: exit 2, one line, nothing written" "${p[@]+"${p[@]}"}"

# mtls.conf names DIR unquoted: a DIR the config grammar would need quoted is refused
# before the network (the token's URL is a free port: reaching it would say so)
m enroll --dir "$W/it's #1" --token "$TOK_FREE"
p=()
[ "$RC" = 2 ] || p+=("exit $RC, not 2")
[[ $ERR == *"cannot be named in mtls.conf"* ]] || p+=("message does not say why the directory is refused")
one_line || p+=("stderr is not one line")
[ ! -e "$W/it's #1" ] || p+=("the directory was created")
report "a --dir with a quote and ' #': exit 2 before the network, nothing written" "${p[@]+"${p[@]}"}"

m enroll --dir "$D" --token "${TOK_FREE%?????}"
p=()
[ "$RC" = 1 ] || p+=("exit $RC, not 1")
[[ $ERR == *damaged* ]] || p+=("message does not say the token is damaged")
one_line || p+=("stderr is not one line")
[ ! -e "$D" ] || p+=("$D was created")
report "a token cut short: exit 1, one line, nothing written" "${p[@]+"${p[@]}"}"

m enroll --dir "$D" --token "hello"
p=()
[ "$RC" = 1 ] || p+=("exit $RC, not 1")
one_line || p+=("stderr is not one line")
[ ! -e "$D" ] || p+=("$D was created")
report "not a token: exit 1, one line, nothing written" "${p[@]+"${p[@]}"}"

printf '%s\n' "$TOK_FREE" >"$W/token"
m enroll --dir "$D" --token "$TOK_FREE" --token-file "$W/token"
p=()
[ "$RC" = 2 ] || p+=("exit $RC, not 2")
one_line || p+=("stderr is not one line")
report "--token and --token-file together: usage error" "${p[@]+"${p[@]}"}"

m enroll --token-file "$W/token"
p=()
[ "$RC" = 2 ] || p+=("exit $RC, not 2")
[[ $ERR == *--dir* ]] || p+=("message does not ask for --dir")
report "no --dir: usage error" "${p[@]+"${p[@]}"}"

echo "# a CA URL nobody listens on (port $FREE)"
for how in file env; do
	if [ "$how" = file ]; then
		m enroll --dir "$D" --token-file "$W/token"
	else
		LAST_CMD="MTLS_TOKEN=... mtls enroll --dir $D"
		RC=0
		MTLS_TOKEN=$TOK_FREE timeout -k 2 "$RUN_LIMIT" "$MTLS" enroll --dir "$D" \
			>"$TMP/run.out" 2>"$TMP/run.err" </dev/null || RC=$?
		OUT=$(cat -- "$TMP/run.out")
		ERR=$(cat -- "$TMP/run.err")
	fi
	p=()
	[ "$RC" = 1 ] || p+=("exit $RC, not 1")
	[[ $ERR == *"cannot reach the CA at https://127.0.0.1:$FREE"* ]] ||
		p+=("no 'cannot reach' message")
	one_line || p+=("stderr is not one line")
	[ ! -e "$D" ] || p+=("$D was created")
	report "token from $how, nobody listening: 'cannot reach', nothing written" \
		"${p[@]+"${p[@]}"}"
done

echo "# a directory that already holds an enrollment"
mkdir -m 700 "$W/d2"
echo "old" >"$W/d2/cert.pem"
m enroll --dir "$W/d2" --token-file "$W/token"
p=()
[ "$RC" = 1 ] || p+=("exit $RC, not 1")
[[ $ERR == *"already holds an enrollment (cert.pem)"*--force* ]] ||
	p+=("message does not name the file and --force")
one_line || p+=("stderr is not one line")
[ "$(cat "$W/d2/cert.pem")" = old ] || p+=("cert.pem changed")
[ "$(ls -A "$W/d2" | wc -l)" = 1 ] || p+=("files were added: $(ls -A "$W/d2")")
report "existing enrollment without --force: refused before the network" "${p[@]+"${p[@]}"}"

m enroll --dir "$W/d2" --token-file "$W/token" --force
p=()
[ "$RC" = 1 ] || p+=("exit $RC, not 1")
[[ $ERR == *"cannot reach"* ]] || p+=("--force did not go on to the CA")
[ "$(cat "$W/d2/cert.pem")" = old ] || p+=("cert.pem changed")
report "existing enrollment with --force: goes on (and a failure keeps it)" \
	"${p[@]+"${p[@]}"}"

# serve WHICH_CERT ROOTS... : openssl s_server -WWW on a free port with CA WHICH_CERT's
# server certificate for 127.0.0.1, serving the concatenated ROOTS as /roots.pem. Sets
# SS_PID, SS_PORT.
serve() {
	local cert=$1 www
	shift
	www=$W/www-$RANDOM$RANDOM
	mkdir -p "$www"
	cat -- "$@" >"$www/roots.pem"
	cd "$www"
	start_s_server "$www.log" -WWW -cert "$W/srv-$cert.pem" \
		-cert_chain "$W/srv-$cert-chain.pem" -key "$W/srv-$cert.key"
	cd - >/dev/null
}

echo "# a server that serves another CA's roots"
serve b "$W/b/root.pem"
m enroll --dir "$D" --token "$(token "https://127.0.0.1:$SS_PORT")"
p=()
[ "$RC" = 1 ] || p+=("exit $RC, not 1")
[[ $ERR == *"does not serve the root this token pins (fingerprint $FP_A"*"for another CA or someone is in between" ]] ||
	p+=("no fingerprint message")
one_line || p+=("stderr is not one line")
[ ! -e "$D" ] || p+=("$D was created")
report "another CA's roots: refused with the pin's fingerprint, nothing written" \
	"${p[@]+"${p[@]}"}"
stop_bg "$SS_PID"

echo "# the right roots, served with another CA's certificate"
serve b "$W/b/root.pem" "$W/a/root.pem"
m enroll --dir "$D" --token "$(token "https://127.0.0.1:$SS_PORT")"
p=()
[ "$RC" = 1 ] || p+=("exit $RC, not 1")
[[ $ERR == *"is not the CA trusted here"* ]] || p+=("the enroll request was not refused")
one_line || p+=("stderr is not one line")
[ ! -e "$D" ] || p+=("$D was created")
report "pinned root fetched, server certificate from another CA: refused, nothing written" \
	"${p[@]+"${p[@]}"}"
stop_bg "$SS_PID"

echo "# mtls renew without a CA service"
R=$W/r
mkdir -m 700 "$R"
m ca issue --dir "$W/a" --profile client --uri spiffe://example.org/app --out "$R/x"
[ "$RC" = 0 ] || { echo "(setup) client certificate: $ERR" >&2; exit 1; }
mv "$R/x-chain.pem" "$R/cert.pem"
mv "$R/x.key" "$R/key.pem"
rm -f "$R/x.pem"
cp "$W/a/root.pem" "$R/ca.pem"
echo "https://127.0.0.1:$FREE" >"$R/ca-url"
snapshot() { (cd "$R" && sha256sum -- * | sha256sum); }
before=$(snapshot)

m renew --dir "$R"
p=()
[ "$RC" = 0 ] || p+=("exit $RC, not 0")
[[ $OUT == "not due until "* ]] || p+=("no 'not due until'")
[ "$(snapshot)" = "$before" ] || p+=("files changed")
report "renew before renew_after: nothing done, exit 0" "${p[@]+"${p[@]}"}"

m renew --dir "$R" --force
p=()
[ "$RC" = 1 ] || p+=("exit $RC, not 1")
[[ $ERR == *"cannot reach the CA at https://127.0.0.1:$FREE"* ]] || p+=("no 'cannot reach'")
one_line || p+=("stderr is not one line")
[ "$(snapshot)" = "$before" ] || p+=("files changed")
[ "$(ls -A "$R" | wc -l)" = 4 ] || p+=("files left: $(ls -A "$R")")
report "renew --force, nobody at DIR/ca-url: exit 1, one line, files unchanged" \
	"${p[@]+"${p[@]}"}"

serve b "$W/a/root.pem"
m renew --dir "$R" --force --ca-url "https://127.0.0.1:$SS_PORT"
p=()
[ "$RC" = 1 ] || p+=("exit $RC, not 1")
[[ $ERR == *"is not the CA trusted here"* ]] || p+=("not refused as the wrong server")
[ "$(snapshot)" = "$before" ] || p+=("files changed")
report "renew --force against a server of another CA: refused, files unchanged" \
	"${p[@]+"${p[@]}"}"
stop_bg "$SS_PID"

m renew --dir "$R" --ca-url "http://127.0.0.1:1"
p=()
[ "$RC" = 2 ] || p+=("exit $RC, not 2")
[[ $ERR == *https://* ]] || p+=("message does not ask for https://")
report "renew --ca-url http://: usage error" "${p[@]+"${p[@]}"}"

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$W/other.key" 2>/dev/null
cp "$R/key.pem" "$W/key.save"
cp "$W/other.key" "$R/key.pem"
m renew --dir "$R" --force
p=()
[ "$RC" = 1 ] || p+=("exit $RC, not 1")
[[ $ERR == *"does not match"* ]] || p+=("mismatch not named")
report "renew with a key that does not match cert.pem: refused" "${p[@]+"${p[@]}"}"
cp "$W/key.save" "$R/key.pem"

m renew --dir "$W/nothing-here"
p=()
[ "$RC" = 1 ] || p+=("exit $RC, not 1")
one_line || p+=("stderr is not one line")
report "renew of a directory that does not exist: exit 1, one line" "${p[@]+"${p[@]}"}"

# ------------------------------------------------------------------------------------------
# End to end against the real `mtls ca serve` (where this tree has it).
if ! "$MTLS" ca serve --help >/dev/null 2>&1; then
	echo "# (no mtls ca serve in this build: end-to-end cases skipped)"
	finish
	exit $?
fi
echo "# end to end: mtls ca serve"
TD=spiffe://example.org
m ca issue --dir "$W/a" --profile client --uri "$TD/admin" --out "$W/admin"
[ "$RC" = 0 ] || { echo "(setup) admin certificate: $ERR" >&2; exit 1; }
start_bg "$W/serve.log" "$MTLS" ca serve --dir "$W/a" --listen 127.0.0.1:0 \
	--http-listen 127.0.0.1:0 --admin-uri "$TD/admin"
SERVE_PID=$BG_PID
wait_for_line "$W/serve.log" '"event":"listening"' "$READY_LIMIT" "$SERVE_PID" || {
	cat -- "$W/serve.log" >&2
	echo "(setup) mtls ca serve did not start" >&2
	exit 1
}
AP=$(grep -m1 -F '"event":"listening"' "$W/serve.log" |
	sed -n 's/.*"address":"[^"]*:\([0-9][0-9]*\)".*/\1/p')
API=https://127.0.0.1:$AP
E=$W/e
token_app() {
	"$MTLS" ca token --dir "$W/a" --profile client --uri "$TD/app" --ca-url "$API" 2>/dev/null
}
TOK=$(token_app)
printf '%s\n' "$TOK" >"$W/etoken"
m enroll --dir "$E" --token-file "$W/etoken"
p=()
[ "$RC" = 0 ] || p+=("exit $RC, not 0")
[[ $OUT == "enrolled: serial "*"URI:$TD/app"*"mtls connector --config $E/mtls.conf"* ]] ||
	p+=("no one-line summary with the serial, names and next command")
[ "$(stat -c %a "$E")" = 700 ] || p+=("directory mode $(stat -c %a "$E")")
[ "$(stat -c %a "$E/key.pem")" = 600 ] || p+=("key.pem mode $(stat -c %a "$E/key.pem")")
cmp -s "$E/ca.pem" "$W/a/root.pem" || p+=("ca.pem is not the CA's root")
[ "$(cat "$E/ca-url")" = "$API" ] || p+=("ca-url is not $API")
openssl verify -CAfile "$E/ca.pem" -untrusted "$E/cert.pem" "$E/cert.pem" >/dev/null 2>&1 ||
	p+=("openssl verify of cert.pem against ca.pem failed")
[ "$(openssl x509 -in "$E/cert.pem" -noout -pubkey 2>/dev/null)" = \
	"$(openssl pkey -in "$E/key.pem" -pubout 2>/dev/null)" ] || p+=("key.pem does not match cert.pem")
"$MTLS" verify --ca "$E/ca.pem" --allow-uri "$TD/app" "$E/cert.pem" >/dev/null 2>&1 ||
	p+=("mtls verify refused cert.pem")
"$MTLS" connector --config "$E/mtls.conf" --help >/dev/null 2>&1 ||
	p+=("mtls connector does not accept mtls.conf")
report "enroll: five files, chain verifies to ca.pem, key matches, config accepted" \
	"${p[@]+"${p[@]}"}"

m enroll --dir "$W/e2" --token-file "$W/etoken"
p=()
[ "$RC" = 1 ] || p+=("exit $RC, not 1")
[[ $ERR == *"the CA refused (token_used"* ]] || p+=("the server's error not shown")
one_line || p+=("stderr is not one line")
[ ! -e "$W/e2" ] || p+=("$W/e2 was created")
report "a used token: the CA's error on one line, nothing written" "${p[@]+"${p[@]}"}"

serial() { openssl x509 -in "$1" -noout -serial 2>/dev/null | cut -d= -f2; }
S1=$(serial "$E/cert.pem")
K1=$(sha256sum <"$E/key.pem")
m renew --dir "$E"
p=()
[ "$RC" = 0 ] || p+=("exit $RC, not 0")
[[ $OUT == "not due until "* ]] || p+=("no 'not due until'")
[ "$(serial "$E/cert.pem")" = "$S1" ] || p+=("cert.pem changed")
report "renew of a fresh certificate: not due, nothing changes" "${p[@]+"${p[@]}"}"

m renew --dir "$E" --force
S2=$(serial "$E/cert.pem")
p=()
[ "$RC" = 0 ] || p+=("exit $RC, not 0")
[[ $OUT == "renewed: serial $S2 (was $S1)"*"new key"* ]] || p+=("no one-line summary")
[ "$S2" != "$S1" ] || p+=("same serial")
[ "$(sha256sum <"$E/key.pem")" != "$K1" ] || p+=("same key")
[ "$(openssl x509 -in "$E/cert.pem" -noout -pubkey 2>/dev/null)" = \
	"$(openssl pkey -in "$E/key.pem" -pubout 2>/dev/null)" ] || p+=("key.pem does not match cert.pem")
openssl verify -CAfile "$E/ca.pem" -untrusted "$E/cert.pem" "$E/cert.pem" >/dev/null 2>&1 ||
	p+=("openssl verify of the new cert.pem failed")
[ "$(stat -c %a "$E/key.pem")" = 600 ] || p+=("key.pem mode $(stat -c %a "$E/key.pem")")
[ "$(ls -A "$E" | wc -l)" = 5 ] || p+=("files: $(ls -A "$E")")
report "renew --force: new serial, new key, matching, verifying" "${p[@]+"${p[@]}"}"

K2=$(sha256sum <"$E/key.pem")
m renew --dir "$E" --force --same-key
p=()
[ "$RC" = 0 ] || p+=("exit $RC, not 0")
[ "$(serial "$E/cert.pem")" != "$S2" ] || p+=("same serial")
[ "$(sha256sum <"$E/key.pem")" = "$K2" ] || p+=("the key changed")
report "renew --same-key: new serial, same key" "${p[@]+"${p[@]}"}"

S3=$(serial "$E/cert.pem")
m ca revoke --dir "$W/a" --serial "$S3" --reason keyCompromise
[ "$RC" = 0 ] || { echo "(setup) revoke: $ERR" >&2; exit 1; }
before=$(cd "$E" && sha256sum -- * | sha256sum)
m renew --dir "$E" --force
p=()
[ "$RC" = 1 ] || p+=("exit $RC, not 1")
[[ $ERR == *"the CA refused ("* ]] || p+=("the server's refusal not shown")
one_line || p+=("stderr is not one line")
[ "$(cd "$E" && sha256sum -- * | sha256sum)" = "$before" ] || p+=("files changed")
report "renew of a revoked certificate: refused, files unchanged" "${p[@]+"${p[@]}"}"

# a server-profile certificate (serverAuth alone) renews itself too: the CA's API takes a
# server's own certificate as its TLS client credential (insecure_server_eku_clients on the
# API alone), and mtls.conf names ca-url for it
TOK=$("$MTLS" ca token --dir "$W/a" --profile server --dns localhost --ca-url "$API" 2>/dev/null)
MTLS_TOKEN=$TOK m enroll --dir "$W/srv"
[ "$RC" = 0 ] || { echo "(setup) enroll a server: $ERR" >&2; exit 1; }
p=()
grep -qx "ca-url $API" "$W/srv/mtls.conf" || p+=("the server enrollment's mtls.conf has no ca-url line")
grep -qx "ca-url $API" "$E/mtls.conf" || p+=("the client enrollment's mtls.conf has no ca-url line")
old=$(openssl x509 -in "$W/srv/cert.pem" -noout -serial)
m renew --dir "$W/srv" --force
[ "$RC" = 0 ] || p+=("exit $RC: $ERR")
[ "$(openssl x509 -in "$W/srv/cert.pem" -noout -serial)" != "$old" ] || p+=("cert.pem still has $old")
openssl x509 -in "$W/srv/cert.pem" -noout -ext extendedKeyUsage 2>/dev/null | grep -q "TLS Web Server Authentication" ||
	p+=("the renewed certificate is not a server certificate")
report "renew of a server-profile certificate: the CA takes it as the credential; a new server certificate" \
	"${p[@]+"${p[@]}"}"

# ... for its own renewal alone: a server certificate that carries an --admin-uri is no admin
m ca issue --dir "$W/a" --profile server --dns localhost --uri "$TD/admin" --out "$W/srvadmin"
[ "$RC" = 0 ] || { echo "(setup) server certificate with the admin URI: $ERR" >&2; exit 1; }
VICTIM=$(openssl x509 -in "$W/srv/cert.pem" -noout -serial | sed 's/^serial=//')
m ca revoke --ca-url "$API" --admin-cert "$W/srvadmin-chain.pem" --admin-key "$W/srvadmin.key" \
	--ca-file "$W/a/root.pem" --serial "$VICTIM"
p=()
[ "$RC" = 1 ] || p+=("exit $RC, not 1: $OUT $ERR")
[[ $ERR == *"refused"* ]] || p+=("the CA's refusal not shown: $ERR")
m ca list --dir "$W/a"
[[ $OUT != *"$VICTIM"*revoked* ]] || p+=("the certificate was revoked")
report "a server certificate carrying the admin URI cannot revoke through the API (admins are client certificates)" \
	"${p[@]+"${p[@]}"}"

finish
