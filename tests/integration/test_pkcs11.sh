#!/usr/bin/env bash
# Keys on a PKCS#11 token (a SoftHSM token made in this test's directory) in mtls server and
# mtls connector: traffic with the server's key on the token and the connector's in a file,
# and the reverse (PIN from a file, then from an environment variable); refused at start with
# one clear line and exit != 0: a wrong PIN, no PIN, a missing object, a missing module, a
# URI holding the PIN, a PIN file --user cannot read; mtls doctor --config; SIGHUP from a file key to the token key and
# back under a live connection (and a reload with a wrong PIN keeps the old key); the token
# taken away while the server runs: full handshakes fail with a line naming the key (a
# resumed session needs no signature), a reload fails and keeps the old state, a connection
# made before goes on.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"
# shellcheck source=tests/integration/p11_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/p11_lib.sh"

p11_have || _lib_die "softhsm2, opensc or libengine-pkcs11-openssl missing: run scripts/install-deps.sh"

C=$CERTS
PIN=48151623
H=$TMP/hsm
p11_token "$H" t1 "$PIN" || _lib_die "(setup) softhsm2-util --init-token"
p11_keygen t1 "$PIN" srv 01 || _lib_die "(setup) keygen srv"
p11_keygen t1 "$PIN" cli 02 || _lib_die "(setup) keygen cli"
p11_cert t1 "$PIN" srv server "$TMP/srv-tok.pem" || _lib_die "(setup) certificate for srv"
p11_cert t1 "$PIN" cli client "$TMP/cli-tok.pem" || _lib_die "(setup) certificate for cli"
SRV_KEY="pkcs11:token=t1;object=srv;type=private"
CLI_KEY="pkcs11:token=t1;object=cli"
printf '%s\n' "$PIN" >"$TMP/pin"
chmod 600 "$TMP/pin"
printf '9999\n' >"$TMP/wrong.pin"
chmod 600 "$TMP/wrong.pin"
cp -- "$C/server.key" "$TMP/server.key"
chmod 600 "$TMP/server.key"

start_backend "$TMP/be.log" --mode echo

# exchange PORT TEXT : a line through PORT and back on a new connection ("" if refused)
exchange() {
	local fd line=""
	exec {fd}<>"/dev/tcp/127.0.0.1/$1" || return 0
	printf '%s\n' "$2" >&"$fd"
	IFS= read -r -t 10 line <&"$fd" || true
	exec {fd}>&-
	printf '%s' "$line"
}
# served_cn : the CN of the certificate the server presents to a zoo client
served_cn() {
	local out
	out=$(timeout -k 2 "$RUN_LIMIT" openssl s_client -connect "127.0.0.1:$SRV_PORT" \
		-servername server.test -CAfile "$C/ca.pem" -cert "$C/client-chain.pem" \
		-key "$C/client.key" </dev/null 2>/dev/null || true)
	printf '%s\n' "$out" | sed -n 's/^subject=.*CN *= *\([^,]*\).*/\1/p' | head -n 1
}
connector() { # LOG ARGS... : a connector to the server at SRV_PORT
	local log=$1
	shift
	start_tunnel_connector "$log" --server "127.0.0.1:$SRV_PORT" --server-name server.test \
		--ca "$C/ca.pem" --drain-timeout 100ms "$@"
}

echo "# 1. the server's key on the token, the connector's in a file (PIN from a file)"
start_tunnel_server "$TMP/srv1.log" --target "127.0.0.1:$BE_PORT" --cert "$TMP/srv-tok.pem" \
	--pkcs11-module "$SOFTHSM_MODULE" "${P11_ALLOW[@]}" \
	--key "$SRV_KEY" --key-passphrase-file "$TMP/pin" --ca "$C/ca.pem" \
	--allow-uri spiffe://test.mtls/ns/prod/sa/app1 --drain-timeout 100ms
connector "$TMP/con1.log" --cert "$C/client-chain.pem" --key "$C/client.key"
p=()
[ "$(exchange "$CON_PORT" hello-token-server)" = hello-token-server ] ||
	p+=("no echo through connector -> server (token key)")
[ "$(served_cn)" = srv ] || p+=("the server does not present the token key's certificate")
verdict "traffic through a server whose key is on the token" "${p[@]+"${p[@]}"}" -- \
	"$(tail -n 5 "$TMP/srv1.log")" "$(tail -n 5 "$TMP/con1.log")"
stop_bg "$CON_PID"
stop_bg "$SRV_PID"

echo "# 2. the connector's key on the token (PIN from an environment variable), the server's in a file"
start_tunnel_server "$TMP/srv2.log" --target "127.0.0.1:$BE_PORT" --cert "$C/server-chain.pem" \
	--key "$TMP/server.key" --ca "$C/ca.pem" --allow-uri spiffe://test.mtls/ns/prod/sa/app1 \
	--drain-timeout 100ms
export MTLS_TEST_PIN=$PIN
connector "$TMP/con2.log" --cert "$TMP/cli-tok.pem" --key "$CLI_KEY" \
	--key-passphrase-env MTLS_TEST_PIN --pkcs11-module "$SOFTHSM_MODULE" "${P11_ALLOW[@]}"
unset MTLS_TEST_PIN
p=()
[ "$(exchange "$CON_PORT" hello-token-client)" = hello-token-client ] ||
	p+=("no echo through a connector whose key is on the token")
[ "$(log_count "$TMP/srv2.log" handshake_refused)" = 0 ] || p+=("the server refused a handshake")
verdict "traffic through a connector whose key is on the token" "${p[@]+"${p[@]}"}" -- \
	"$(tail -n 5 "$TMP/srv2.log")" "$(tail -n 5 "$TMP/con2.log")"
stop_bg "$CON_PID"
stop_bg "$SRV_PID"

echo "# 3. refused at start, with one line that says what to do"
# refused NAME EXPECTED ARGS... : mtls server with ARGS exits != 0, one line holding EXPECTED,
# never the PIN
refused() {
	local name=$1 want=$2
	shift 2
	LAST_CMD="mtls server $*"
	run "$MTLS" server --listen 127.0.0.1:0 --target "127.0.0.1:$BE_PORT" --ca "$C/ca.pem" \
		--allow-any-identity "${ALLOW[@]}" "$@"
	p=()
	[ "$RC" != 0 ] && [ "$RC" != 124 ] || p+=("exit status $RC, expected a refusal")
	[[ $ERR == *"$want"* ]] || p+=("stderr does not say: $want")
	[[ $ERR != *"$PIN"* ]] || p+=("stderr holds the PIN")
	[ "$(count_lines "$ERR" "")" = 1 ] || p+=("stderr is not one line")
	report "$name" "${p[@]+"${p[@]}"}"
}
T=(--cert "$TMP/srv-tok.pem")
ALLOW=()
refused "a token key in the sandbox without --sandbox-allow: the error says to give it" \
	"needs them given with --sandbox-allow" "${T[@]}" --key "$SRV_KEY" --key-passphrase-file "$TMP/pin"
ALLOW=("${P11_ALLOW[@]}")
refused "a wrong PIN" "the token refused the PIN for PKCS#11 key $SRV_KEY: wrong PIN" \
	"${T[@]}" --key "$SRV_KEY" --key-passphrase-file "$TMP/wrong.pin"
refused "no PIN" "PKCS#11 key $SRV_KEY needs the token's PIN; give it from a file or an environment variable" \
	"${T[@]}" --key "$SRV_KEY"
refused "a missing object" "no private key matches PKCS#11 URI pkcs11:token=t1;object=nosuch" \
	"${T[@]}" --key "pkcs11:token=t1;object=nosuch" --key-passphrase-file "$TMP/pin"
refused "a missing token" "no private key matches PKCS#11 URI pkcs11:token=t2;object=srv" \
	"${T[@]}" --key "pkcs11:token=t2;object=srv" --key-passphrase-file "$TMP/pin"
refused "a missing module" "cannot load PKCS#11 module $TMP/nosuch.so" \
	"${T[@]}" --key "$SRV_KEY" --key-passphrase-file "$TMP/pin" --pkcs11-module "$TMP/nosuch.so"
refused "a URI holding the PIN" "the PKCS#11 URI holds a PIN (pin-value/pin-source): remove it" \
	"${T[@]}" --key "pkcs11:token=t1;object=srv;pin-value=$PIN"
refused "--pkcs11-module with a key file" "--pkcs11-module goes with a pkcs11: --key" \
	--cert "$C/server-chain.pem" --key "$TMP/server.key" --pkcs11-module "$SOFTHSM_MODULE"

LAST_CMD="mtls agent --key $SRV_KEY ..."
run "$MTLS" agent --cert "$TMP/srv-tok.pem" --key "$SRV_KEY" --ca "$C/ca.pem" --ca-url https://127.0.0.1:9
p=()
[ "$RC" = 2 ] || p+=("exit status $RC, expected 2")
[[ $ERR == *"mtls agent renews by writing a new key file"*"--ca-url"*"docs/keys.md"* ]] ||
	p+=("the refusal does not say why and what to do instead")
report "mtls agent with a token key: refused, pointing at the daemon's --ca-url" "${p[@]+"${p[@]}"}"

# --user: the PIN file is read as the user, as a key file is (checked at start)
if [ "$(id -u)" = 0 ] && id nobody >/dev/null 2>&1; then
	chmod 711 "$TMP"
	refused "--user nobody, a PIN file only root can read" "--user nobody cannot read $TMP/pin" \
		"${T[@]}" --key "$SRV_KEY" --key-passphrase-file "$TMP/pin" --user nobody
	chmod 700 "$TMP"
else
	echo "skip  --user case: needs root and user nobody"
fi

echo "# 3b. mtls doctor --config: a token key is no missing file, and it is loaded"
{
	echo "target 127.0.0.1:$BE_PORT"
	echo "ca $C/ca.pem"
	echo "allow-uri spiffe://test.mtls/ns/prod/sa/app1"
	echo "cert $TMP/srv-tok.pem"
	echo "key $SRV_KEY"
	echo "key-passphrase-file $TMP/pin"
} >"$TMP/doctor.conf"
LAST_CMD="mtls doctor --config (key $SRV_KEY)"
run "$MTLS" doctor --config "$TMP/doctor.conf"
p=()
[ "$RC" = 0 ] || p+=("exit status $RC, expected 0")
[[ $OUT == *"$SRV_KEY: a key on a PKCS#11 token"* ]] || p+=("the key is not named as a token key")
[[ $OUT != *"fail"*"$SRV_KEY"* ]] || p+=("a finding fails on the token key")
[[ $OUT != *"$PIN"* ]] || p+=("the PIN is in the output")
report "mtls doctor --config with a token key: no missing file, the key loads" "${p[@]+"${p[@]}"}"

echo "# 4. SIGHUP: file key -> token key -> file key, under a live connection"
conf() { # KEYLINES... : the server's config file
	{
		echo "target 127.0.0.1:$BE_PORT"
		echo "ca $C/ca.pem"
		echo "allow-uri spiffe://test.mtls/ns/prod/sa/app1"
		echo "drain-timeout 100ms"
		printf '%s\n' "$@"
	} >"$TMP/server.conf"
}
FILE_KEY=("cert $C/server-chain.pem" "key $TMP/server.key")
TOKEN_KEY=("cert $TMP/srv-tok.pem" "key $SRV_KEY" "key-passphrase-file $TMP/pin")
conf "${FILE_KEY[@]}"
start_tunnel_server "$TMP/srv4.log" --config "$TMP/server.conf" --watch-interval 0 "${P11_ALLOW[@]}"
connector "$TMP/con4.log" --cert "$C/client-chain.pem" --key "$C/client.key"
reloads() { echo $(($(log_count "$TMP/srv4.log" reload) + $(log_count "$TMP/srv4.log" reload_failed))); }
hup() {
	local before
	before=$(reloads)
	kill -HUP "$SRV_REAL"
	for _ in $(seq 1 200); do
		[ "$(reloads)" -gt "$before" ] && return 0
		sleep 0.05
	done
}
exec {live}<>"/dev/tcp/127.0.0.1/$CON_PORT"
live_echo() {
	local line=""
	printf '%s\n' "$1" >&"$live"
	IFS= read -r -t 10 line <&"$live" || true
	printf '%s' "$line"
}
p=()
[ "$(live_echo live-1)" = live-1 ] || p+=("the live connection does not echo")
[ "$(served_cn)" = server.test ] || p+=("at start the file key's certificate is not served")
conf "cert $TMP/srv-tok.pem" "key $SRV_KEY" "key-passphrase-file $TMP/wrong.pin"
hup
[ "$(log_count "$TMP/srv4.log" reload_failed "the token refused the PIN")" = 1 ] ||
	p+=("a reload to the token with a wrong PIN did not fail saying so")
[ "$(served_cn)" = server.test ] || p+=("after the failed reload the file key is not served")
conf "${TOKEN_KEY[@]}"
hup
[ "$(log_count "$TMP/srv4.log" reload '"trigger":"SIGHUP"')" = 1 ] || p+=("no reload to the token key")
[ "$(served_cn)" = srv ] || p+=("after the reload the token key's certificate is not served")
[ "$(exchange "$CON_PORT" new-on-token)" = new-on-token ] || p+=("no new connection on the token key")
[ "$(live_echo live-2)" = live-2 ] || p+=("the live connection broke at the reload to the token")
conf "${FILE_KEY[@]}"
hup
[ "$(log_count "$TMP/srv4.log" reload '"trigger":"SIGHUP"')" = 2 ] || p+=("no reload back to the file key")
[ "$(served_cn)" = server.test ] || p+=("after the reload back the file key's certificate is not served")
[ "$(exchange "$CON_PORT" new-on-file)" = new-on-file ] || p+=("no new connection on the file key")
[ "$(live_echo live-3)" = live-3 ] || p+=("the live connection broke at the reload back")
exec {live}>&-
verdict "SIGHUP file key -> token key -> file key; a wrong PIN keeps the old" "${p[@]+"${p[@]}"}" -- \
	"$(grep -E 'reload|refused' "$TMP/srv4.log" || true)"
stop_bg "$CON_PID"
stop_bg "$SRV_PID"

echo "# 5. the token taken away while the server runs"
start_tunnel_server "$TMP/srv5.log" --target "127.0.0.1:$BE_PORT" --cert "$TMP/srv-tok.pem" \
	--key "$SRV_KEY" --key-passphrase-file "$TMP/pin" --ca "$C/ca.pem" \
	--allow-uri spiffe://test.mtls/ns/prod/sa/app1 --drain-timeout 100ms --watch-interval 0 "${P11_ALLOW[@]}"
connector "$TMP/con5.log" --cert "$C/client-chain.pem" --key "$C/client.key"
exec {live}<>"/dev/tcp/127.0.0.1/$CON_PORT"
p=()
[ "$(live_echo before)" = before ] || p+=("no echo before the token was taken away")
mkdir -p -- "$H/away"
mv -- "$H"/tokens/* "$H/away/"
# a connector of its own: one that resumes its TLS session with the server needs no
# signature, and gets in (until its session expires)
CON5_PID=$CON_PID
connector "$TMP/con5b.log" --cert "$C/client-chain.pem" --key "$C/client.key"
[ -z "$(exchange "$CON_PORT" after)" ] || p+=("a new connection got through without the token")
stop_bg "$CON_PID"
CON_PID=$CON5_PID
for _ in $(seq 1 100); do
	[ "$(log_count "$TMP/srv5.log" handshake_refused)" -ge 1 ] && break
	sleep 0.05
done
line=$(grep -F '"event":"handshake_refused"' "$TMP/srv5.log" | head -n 1 || true)
[[ $line == *"cannot sign the handshake with private key $SRV_KEY"* ]] ||
	p+=("the server's refusal does not name the key and the cause: $line")
[[ $line == *"restart"* ]] || p+=("the server's refusal does not say what to do: $line")
kill -HUP "$SRV_REAL"
for _ in $(seq 1 200); do
	[ "$(log_count "$TMP/srv5.log" reload_failed)" -ge 1 ] && break
	sleep 0.05
done
line=$(grep -F '"event":"reload_failed"' "$TMP/srv5.log" | head -n 1 || true)
[[ $line == *"no private key matches PKCS#11 URI $SRV_KEY"*"needs a restart once it is back"* ]] ||
	p+=("the reload did not fail naming the key: $line")
[ "$(live_echo still)" = still ] || p+=("the connection made before broke")
kill -0 "$SRV_REAL" 2>/dev/null || p+=("the server exited")
exec {live}>&-
mv -- "$H"/away/* "$H/tokens/"
verdict "token taken away: handshakes refused naming the key, reload refused, live connection kept" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 4 "$TMP/srv5.log")"
echo "# what the server logged:"
grep -E 'handshake_refused|reload_failed' "$TMP/srv5.log" | head -n 2 | cut -c 1-400
stop_bg "$CON_PID"
stop_bg "$SRV_PID"

finish
