#!/usr/bin/env bash
# The CRL server down while the cached CRL passes its nextUpdate (a CRL published with
# `mtls ca crl --valid-for 15s`, served by python3 -m http.server, fetched with --crl-url):
#   - without --crl-grace: the client is refused with reason crl_expired, and the daemon says
#     why in one line (crl_stale, level error: the server is unreachable and the CRL expired)
#   - with --crl-grace: the client is accepted with a warning (tls_warning; crl_stale, level
#     warn, naming when the grace ends) until the grace ends, then refused crl_expired (and
#     said again, level error)
# Nothing here waits for a duration: each step waits for the clock to pass a time the CRL
# names.
set -euo pipefail
BG_LIMIT=${BG_LIMIT:-150}
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

command -v python3 >/dev/null || _lib_die "python3 not found in PATH (the plain HTTP server)"

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca
ca() {
	run "$MTLS" ca "$@"
	[ "$RC" = 0 ] || _lib_die "(setup) mtls ca $*: exit $RC: $ERR"
}
ca init --dir "$D"
ca issue --dir "$D" --profile server --dns localhost --ip 127.0.0.1 --out "$W/S"
ca issue --dir "$D" --profile client --uri spiffe://down.test/a --out "$W/A"
GRACE=20
ca crl --dir "$D" --valid-for 15s
NU=$(date -d "$(openssl crl -in "$D/crl.pem" -noout -nextupdate | sed 's/^nextUpdate=//')" +%s)

WWW=$W/www
mkdir -- "$WWW"
cp -- "$D/crl.pem" "$WWW/crl"
start_bg "$W/http.log" python3 -u -m http.server --bind 127.0.0.1 --directory "$WWW" 0
HTTP_PID=$BG_PID
wait_for_line "$W/http.log" 'port [0-9]+' "$READY_LIMIT" "$HTTP_PID" || _lib_die "python3 http.server did not start"
PP=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$W/http.log" | head -n 1)

start_backend "$TMP/be.log"
SRV=(--target "127.0.0.1:$BE_PORT" --cert "$W/S-chain.pem" --key "$W/S.key" --ca "$D/root.pem"
	--allow-any-identity --metrics 127.0.0.1:0 --watch-interval 0 --crl-refresh 1s
	--crl-url "http://127.0.0.1:$PP/crl")
start_tunnel_server "$W/strict.log" "${SRV[@]}" --crl-cache "$W/strict-crl.pem"
P1=$SRV_PORT M1=$SRV_METRICS
start_tunnel_server "$W/grace.log" "${SRV[@]}" --crl-cache "$W/grace-crl.pem" --crl-grace "${GRACE}s"
P2=$SRV_PORT M2=$SRV_METRICS

# hello PORT METRICS : one connection as client A; sets HELLO to accepted, crl_expired or other
hello() {
	local ok ex pid n=400 v
	ok=$(metric "$2" 'mtls_handshakes_total{result="ok"}')
	ex=$(metric "$2" 'mtls_handshakes_total{result="failed",reason="crl_expired"}')
	printf 'hello\n' >"$W/hello.in"
	timeout 20 openssl s_client -connect "127.0.0.1:$1" -quiet -cert "$W/A.pem" \
		-cert_chain "$W/A-chain.pem" -key "$W/A.key" -CAfile "$D/root.pem" \
		<"$W/hello.in" >"$W/hello.out" 2>&1 &
	pid=$!
	HELLO=other
	while [ "$n" -gt 0 ]; do
		v=$(metric "$2" 'mtls_handshakes_total{result="ok"}')
		if [ "${v:-0}" -gt "${ok:-0}" ] && grep -q '^hello$' "$W/hello.out"; then
			HELLO=accepted
			break
		fi
		v=$(metric "$2" 'mtls_handshakes_total{result="failed",reason="crl_expired"}')
		if [ "${v:-0}" -gt "${ex:-0}" ]; then
			HELLO=crl_expired
			break
		fi
		sleep 0.05
		n=$((n - 1))
	done
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}
# until_clock T : wait until the clock is past T (UNIX seconds)
until_clock() {
	while [ "$(date +%s)" -le "$1" ]; do sleep 0.2; done
}
# wait_log FILE EVENT TEXT : until FILE has an EVENT line with TEXT (RUN_LIMIT seconds)
wait_log() {
	local n=$((RUN_LIMIT * 10))
	while [ "$n" -gt 0 ]; do
		[ "$(log_count "$1" "$2" "$3")" -ge 1 ] && return 0
		sleep 0.1
		n=$((n - 1))
	done
	return 1
}

p=()
hello "$P1" "$M1"
[ "$HELLO" = accepted ] || p+=("without grace: the client is '$HELLO' before nextUpdate")
hello "$P2" "$M2"
[ "$HELLO" = accepted ] || p+=("with grace: the client is '$HELLO' before nextUpdate")
verdict "a current CRL from the URL: the client is accepted by both servers" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 5 "$W/strict.log")"

stop_bg "$HTTP_PID"
until_clock "$NU"

echo "# past nextUpdate, the CRL server down"
p=()
hello "$P1" "$M1"
[ "$HELLO" = crl_expired ] || p+=("the client is '$HELLO', not refused crl_expired")
wait_log "$W/strict.log" crl_stale '"level":"error"' || p+=("no crl_stale error line")
l=$(grep -F '"event":"crl_stale"' "$W/strict.log" | head -n 1 || true)
[[ $l == *"refused (crl_expired)"* ]] || p+=("crl_stale does not say the clients are refused crl_expired")
[[ $l == *"bring the CRL server back"* ]] || p+=("crl_stale does not say what to do")
[ "$(log_count "$W/strict.log" crl_stale)" = 1 ] || p+=("crl_stale said $(log_count "$W/strict.log" crl_stale) times, not once")
# (the refusal is counted before it is logged, and the log thread writes the line later)
wait_log "$W/strict.log" handshake_refused crl_expired || p+=("no handshake_refused line with crl_expired")
verdict "without --crl-grace: refused crl_expired, and one clear line (crl_stale, error)" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 8 "$W/strict.log")"

p=()
hello "$P2" "$M2"
[ "$HELLO" = accepted ] || p+=("the client is '$HELLO' within the grace, not accepted")
wait_log "$W/grace.log" tls_warning 'grace period' || p+=("no tls_warning about the grace period")
wait_log "$W/grace.log" crl_stale '"level":"warn"' || p+=("no crl_stale warn line")
l=$(grep -F '"event":"crl_stale"' "$W/grace.log" | head -n 1 || true)
[[ $l == *'"grace_until":"'* ]] || p+=("crl_stale does not say when the grace ends")
verdict "with --crl-grace: accepted with a warning (tls_warning, crl_stale warn) within the grace" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 8 "$W/grace.log")"

until_clock $((NU + GRACE))
p=()
hello "$P2" "$M2"
[ "$HELLO" = crl_expired ] || p+=("the client is '$HELLO' after the grace, not refused crl_expired")
wait_log "$W/grace.log" crl_stale '"level":"error"' || p+=("no crl_stale error line once the grace is over")
verdict "with --crl-grace, once it is over: refused crl_expired, said again (crl_stale, error)" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 8 "$W/grace.log")"

finish
