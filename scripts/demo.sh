#!/usr/bin/env bash
# The demo run by the README's first command (scripts/setup.sh), in two parts, on loopback:
#
# 1. The main job: a CA made by `mtls ca`; an HTTP service (python3 -m http.server) that knows
#    nothing of TLS; `mtls server` in front of it, admitting only the identity
#    spiffe://demo.mtls/ns/prod/sa/web; `mtls connector` on the client side holding that
#    identity's certificate; curl through connector and server to the service. Then a client
#    with another identity is refused, with the reason from the server's log, and the metrics.
# 2. The library: the example echo server and client (examples/) linked with libmtls.
#
# Everything lives in a temporary directory removed at the end (MTLS_DEMO_KEEP=1 keeps it).
# Exit 0 only when the traffic went through and the refusal happened for the right reason.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${MTLS_BIN_DIR:-$top/build}
mtls=$bin/mtls
tmp=$(mktemp -d)
pids=()
cleanup() {
	local p
	for p in "${pids[@]+"${pids[@]}"}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${pids[@]+"${pids[@]}"}"; do
		wait "$p" 2>/dev/null || true
	done
	if [ "${MTLS_DEMO_KEEP:-0}" = 1 ]; then
		echo "demo: kept $tmp"
	else
		rm -rf "$tmp"
	fi
}
trap cleanup EXIT

die() {
	echo "demo: $*" >&2
	exit 1
}

# wait_line FILE REGEX PID : until a line of FILE matches (10 s at most, PID must stay alive)
wait_line() {
	local i
	for i in $(seq 200); do
		grep -qE -- "$2" "$1" 2>/dev/null && return 0
		kill -0 "$3" 2>/dev/null || break
		sleep 0.05
	done
	sed 's/^/   | /' "$1" >&2
	die "no line matching '$2' in $1"
}

# port_of LOG EVENT : the port of the "address" in the first EVENT line of a daemon's log
port_of() {
	grep -m1 -F "\"event\":\"$2\"" "$1" | sed -n 's/.*"address":"[^"]*:\([0-9][0-9]*\)".*/\1/p'
}

for tool in python3 curl; do
	command -v "$tool" >/dev/null || die "$tool is missing: run scripts/install-deps.sh"
done
[ -x "$mtls" ] || die "$mtls is missing: build first (scripts/build.sh)"

echo "== 1. the main job: mtls server in front of an HTTP service, mtls connector beside curl"
echo "== a CA (mtls ca init) and three certificates (mtls ca issue), in $tmp"
"$mtls" ca init --dir "$tmp/ca" --name "mtls demo" >/dev/null
"$mtls" ca issue --dir "$tmp/ca" --profile server --dns localhost --ip 127.0.0.1 \
	--out "$tmp/server" >/dev/null
"$mtls" ca issue --dir "$tmp/ca" --profile client --uri spiffe://demo.mtls/ns/prod/sa/web \
	--out "$tmp/web" >/dev/null
"$mtls" ca issue --dir "$tmp/ca" --profile client --uri spiffe://demo.mtls/ns/dev/sa/intruder \
	--out "$tmp/intruder" >/dev/null
"$mtls" ca list --dir "$tmp/ca" | sed 's/^/   /'

mkdir "$tmp/site"
echo "hello from the service behind mtls" >"$tmp/site/index.html"
python3 -m http.server 0 --bind 127.0.0.1 --directory "$tmp/site" >"$tmp/http.log" 2>&1 &
pids+=($!)
wait_line "$tmp/http.log" 'port [0-9]+' "${pids[-1]}"
http_port=$(sed -n 's/.* port \([0-9][0-9]*\).*/\1/p' "$tmp/http.log" | head -1)
echo "== the service: python3 -m http.server on 127.0.0.1:$http_port (plain HTTP, no TLS)"

"$mtls" server --listen 127.0.0.1:0 --target "127.0.0.1:$http_port" \
	--cert "$tmp/server-chain.pem" --key "$tmp/server.key" --ca "$tmp/ca/root.pem" \
	--crl "$tmp/ca/crl.pem" --allow-uri 'spiffe://demo.mtls/ns/prod/sa/*' \
	--metrics 127.0.0.1:0 --log-format json --workers 1 >"$tmp/server.log" 2>&1 &
srv_pid=$!
pids+=("$srv_pid")
wait_line "$tmp/server.log" '"event":"listening"' "$srv_pid"
srv_port=$(port_of "$tmp/server.log" listening)
metrics_port=$(port_of "$tmp/server.log" metrics_listening)
echo "== mtls server on 127.0.0.1:$srv_port: client certificates from the CA required," \
	"identity spiffe://demo.mtls/ns/prod/sa/* allowed"

start_connector() { # NAME CERT-PREFIX : sets con_port
	"$mtls" connector --listen 127.0.0.1:0 --server "127.0.0.1:$srv_port" \
		--server-name localhost --cert "$2-chain.pem" --key "$2.key" \
		--ca "$tmp/ca/root.pem" --log-format json --workers 1 >"$tmp/$1.log" 2>&1 &
	pids+=($!)
	wait_line "$tmp/$1.log" '"event":"listening"' "${pids[-1]}"
	con_port=$(port_of "$tmp/$1.log" listening)
}

start_connector connector-web "$tmp/web"
echo "== mtls connector on 127.0.0.1:$con_port with the certificate of" \
	"spiffe://demo.mtls/ns/prod/sa/web"
echo "== curl http://127.0.0.1:$con_port/ (plain HTTP to the connector, mutual TLS to the server):"
body=$(curl -sS --max-time 10 "http://127.0.0.1:$con_port/")
echo "   $body"
[ "$body" = "hello from the service behind mtls" ] || die "the service's page did not come back"
grep -m1 -F '"event":"conn_open"' "$tmp/server.log" >/dev/null ||
	die "the server logged no conn_open"
echo "== the server logged the connection (conn_open) with the identity it verified:"
grep -m1 -F '"event":"conn_open"' "$tmp/server.log" | sed 's/^/   /'

start_connector connector-intruder "$tmp/intruder"
echo "== a connector with spiffe://demo.mtls/ns/dev/sa/intruder (a certificate from the same" \
	"CA, an identity not allowed):"
if curl -sS --max-time 10 "http://127.0.0.1:$con_port/" >"$tmp/intruder.out" 2>&1; then
	cat "$tmp/intruder.out" >&2
	die "the intruder's request went through"
fi
echo "   curl: $(head -c 200 "$tmp/intruder.out")"
wait_line "$tmp/server.log" '"event":"handshake_refused"' "$srv_pid"
refusal=$(grep -m1 -F '"event":"handshake_refused"' "$tmp/server.log")
[[ $refusal == *'"reason":"identity_not_allowed"'* ]] ||
	die "refused, but not for the identity: $refusal"
echo "== the server refused it and said why (handshake_refused):"
echo "   $refusal"

echo "== where to look next: the server's metrics at http://127.0.0.1:$metrics_port/metrics," \
	"for instance:"
curl -sS --max-time 5 "http://127.0.0.1:$metrics_port/metrics" |
	grep -E '^mtls_(handshakes_total|connections_total)' | grep -v ' 0$' |
	sed 's/^/   /' || true
echo "   and /healthz, /status on the same port; the JSON logs on stderr (or --log-file)."
echo "   Explain a refusal from the client side: mtls doctor --server HOST:PORT --cert ..." \
	"(docs/doctor.md)."

echo
echo "== 2. the library: examples/echo-server and echo-client linked with libmtls"
bash "$top/tests/certs/gen-certs.sh" "$tmp/certs" >/dev/null
c=$tmp/certs
"$bin/echo-server" --cert "$c/server-chain.pem" --key "$c/server.key" --ca "$c/ca.pem" \
	--crl "$c/crl.pem" --allow-uri 'spiffe://test.mtls/ns/prod/sa/*' --count 2 \
	>"$tmp/echo.log" 2>&1 &
echo_pid=$!
pids+=("$echo_pid")
wait_line "$tmp/echo.log" '^listening on' "$echo_pid"
addr=$(sed -n 's/^listening on //p' "$tmp/echo.log")
"$bin/echo-client" --cert "$c/client-chain.pem" --key "$c/client.key" --ca "$c/ca.pem" \
	--connect "$addr" --name server.test "hello over mutual TLS" | sed 's/^/   /'
"$bin/echo-client" --cert "$c/revoked-client-chain.pem" --key "$c/revoked-client.key" \
	--ca "$c/ca.pem" --connect "$addr" --name server.test "let me in" >/dev/null 2>&1 || true
wait "$echo_pid" 2>/dev/null || true
echo "== echo-server saw:"
sed 's/^/   /' "$tmp/echo.log"
grep -q '^refused: revoked:' "$tmp/echo.log" || die "the revoked client was not refused"
echo "== demo ok"
