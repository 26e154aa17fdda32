#!/usr/bin/env bash
# The demo: throwaway certificates (made by the openssl CLI), the example echo server and
# client talking mutual TLS on loopback, each printing the identity it verified.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${MTLS_BIN_DIR:-$top/build}
tmp=$(mktemp -d)
server_pid=""
cleanup() {
	[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

echo "== making throwaway certificates in $tmp"
bash "$top/tests/certs/gen-certs.sh" "$tmp/certs"
c=$tmp/certs

echo "== starting echo-server (accepts spiffe://test.mtls/ns/prod/sa/*)"
"$bin/echo-server" --cert "$c/server-chain.pem" --key "$c/server.key" --ca "$c/ca.pem" \
	--crl "$c/crl.pem" --allow-uri 'spiffe://test.mtls/ns/prod/sa/*' --count 3 \
	>"$tmp/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
	grep -q '^listening on' "$tmp/server.log" && break
	sleep 0.05
done
addr=$(sed -n 's/^listening on //p' "$tmp/server.log")
[ -n "$addr" ] || { cat "$tmp/server.log"; echo "demo: echo-server did not start" >&2; exit 1; }

echo "== echo-client with a valid client certificate (twice: the second resumes)"
"$bin/echo-client" --cert "$c/client-chain.pem" --key "$c/client.key" --ca "$c/ca.pem" \
	--connect "$addr" --name server.test --repeat 2 "hello over mutual TLS"
echo "== echo-client with a revoked certificate (the server must refuse it)"
"$bin/echo-client" --cert "$c/revoked-client-chain.pem" --key "$c/revoked-client.key" \
	--ca "$c/ca.pem" --connect "$addr" --name server.test "let me in" || true
wait "$server_pid" 2>/dev/null || true
server_pid=""
echo "== echo-server saw:"
sed 's/^/   /' "$tmp/server.log"
grep -q '^refused: revoked:' "$tmp/server.log" || { echo "demo: revoked client was not refused" >&2; exit 1; }
echo "== demo ok"
