#!/usr/bin/env bash
# The server logs a client's identity whole, however long (a URI SAN of 321 bytes): the
# connection keeps its own copy of the identity, sized to it, not a fixed 256-byte buffer per
# connection (which also cut a longer identity short: a truncated identity is another one).
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

D=$TMP/ca
W=$TMP/w
mkdir -p "$W"
ca() {
	run "$MTLS" ca "$@"
	[ "$RC" = 0 ] || _lib_die "mtls ca $*: exit $RC: $ERR"
}
seg=$(printf 'x%.0s' $(seq 100))
long=spiffe://long.test/$seg/$seg/$seg
ca init --dir "$D"
ca issue --dir "$D" --profile server --dns localhost --ip 127.0.0.1 --out "$W/S"
ca issue --dir "$D" --profile client --uri "$long" --out "$W/L"

start_backend "$TMP/be.log" --mode echo
start_tunnel_server "$TMP/srv.log" --target "127.0.0.1:$BE_PORT" --cert "$W/S-chain.pem" \
	--key "$W/S.key" --ca "$D/root.pem" --allow-uri "$long" --watch-interval 0
start_tunnel_connector "$TMP/con.log" --server "127.0.0.1:$SRV_PORT" --server-name localhost \
	--cert "$W/L-chain.pem" --key "$W/L.key" --ca "$D/root.pem" --watch-interval 0

p=()
exec 5<>"/dev/tcp/127.0.0.1/$CON_PORT"
line=""
printf 'hello\n' >&5
read -r -t "$RUN_LIMIT" -u 5 line || true
[ "$line" = hello ] || p+=("no echo through the tunnel (got '$line')")
exec 5>&-
n=$((RUN_LIMIT * 10))
while [ "$n" -gt 0 ] && [ "$(log_count "$TMP/srv.log" conn_close)" -lt 1 ]; do
	sleep 0.1
	n=$((n - 1))
done
[ "$(log_count "$TMP/srv.log" conn_open "\"identity\":\"$long\"")" = 1 ] ||
	p+=("the conn_open line does not carry the whole identity (${#long} bytes)")
[ "$(log_count "$TMP/srv.log" conn_close "\"identity\":\"$long\"")" = 1 ] ||
	p+=("the conn_close line does not carry the whole identity (${#long} bytes)")
verdict "a 321-byte client identity is logged whole at conn_open and conn_close" "${p[@]}" -- \
	"server log:" "$(tail -n 5 "$TMP/srv.log")"
finish
