#!/usr/bin/env bash
# A second mtls server (or connector) on a port a running one holds is refused at start,
# with the port and the fix in one line, instead of splitting the traffic with the first
# (the workers' SO_REUSEPORT sockets would have let it join). --reuse-port asks for the
# sharing on purpose (a zero-downtime upgrade): then both run. A unix:/path listen socket
# a running daemon listens on is refused too (before: unlinked and taken over), while a
# stale socket file from a killed one is replaced.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

C=$CERTS
# check NAME PROBLEM... : report NAME with the PROBLEMs that are not empty
check() {
	local name=$1 p problems=()
	shift
	for p in "$@"; do [ -z "$p" ] || problems+=("$p"); done
	report "$name" "${problems[@]+"${problems[@]}"}"
}
SRV_TLS=(--cert "$C/server-chain.pem" --key "$C/server.key" --ca "$C/ca.pem" --allow-any-identity)

start_backend "$TMP/be.log"
start_tunnel_server "$TMP/a.log" --target "127.0.0.1:$BE_PORT" "${SRV_TLS[@]}"
A_PID=$SRV_PID
PORT=$SRV_PORT

echo "# a second server on the port of a running one"
LAST_CMD="mtls server --listen 127.0.0.1:$PORT (a server runs there)"
run "$MTLS" server --listen "127.0.0.1:$PORT" --target "127.0.0.1:$BE_PORT" --workers 2 \
	"${SRV_TLS[@]}"
check "second server refused" \
	"$([ "$RC" != 0 ] || echo "exit status 0")" \
	"$([ "$RC" != 124 ] || echo "it ran (did not exit): it shares the port")" \
	"$(grep -q "127.0.0.1:$PORT: the port is in use" <<<"$ERR" || echo "no 'port is in use' naming the port")" \
	"$(grep -q -- "--reuse-port" <<<"$ERR" || echo "the message does not name --reuse-port")" \
	"$([ "$(grep -c 'mtls server:' <<<"$ERR")" = 1 ] || echo "not one line")"
vcheck "the first server still runs" "$(kill -0 "$A_PID" 2>/dev/null || echo "it exited")"

LAST_CMD="mtls connector --listen 127.0.0.1:$PORT (a server runs there)"
run "$MTLS" connector --listen "127.0.0.1:$PORT" --server "127.0.0.1:$PORT" --workers 1 \
	--cert "$C/client-chain.pem" --key "$C/client.key" --ca "$C/ca.pem"
check "a connector on that port refused" \
	"$([ "$RC" != 0 ] && [ "$RC" != 124 ] || echo "exit status $RC")" \
	"$(grep -q "127.0.0.1:$PORT: the port is in use" <<<"$ERR" || echo "no 'port is in use'")"

echo "# --reuse-port: sharing on purpose"
start_bg "$TMP/b.log" "$MTLS" server --listen "127.0.0.1:$PORT" --target "127.0.0.1:$BE_PORT" \
	--workers 2 --log-format json --reuse-port "${SRV_TLS[@]}"
B_PID=$BG_PID
if wait_for_line "$TMP/b.log" '"event":"listening"' "$READY_LIMIT" "$B_PID"; then
	pass "a server with --reuse-port joins"
else
	fail "a server with --reuse-port joins" "$(cat -- "$TMP/b.log")"
fi
vcheck "both run" "$(kill -0 "$A_PID" 2>/dev/null && kill -0 "$B_PID" 2>/dev/null ||
	echo "one of them exited")"
stop_bg "$B_PID"
stop_bg "$A_PID"

echo "# unix sockets: a live one refused, a stale one replaced"
SOCK=$TMP/s.sock
start_tunnel_server "$TMP/u1.log" --listen "unix:$SOCK" --target "127.0.0.1:$BE_PORT" \
	"${SRV_TLS[@]}"
U1=$SRV_PID
INODE=$(stat -c %i "$SOCK")
LAST_CMD="mtls server --listen unix:$SOCK (a server listens there)"
run "$MTLS" server --listen "unix:$SOCK" --target "127.0.0.1:$BE_PORT" "${SRV_TLS[@]}"
check "a live unix socket refused" \
	"$([ "$RC" != 0 ] && [ "$RC" != 124 ] || echo "exit status $RC")" \
	"$(grep -q "unix:$SOCK: a running process listens there" <<<"$ERR" || echo "no 'a running process listens there'")"
vcheck "the first server's socket is untouched" \
	"$([ -S "$SOCK" ] && [ "$(stat -c %i "$SOCK")" = "$INODE" ] || echo "the socket file was replaced or removed")"
kill -KILL "$SRV_REAL"
wait_exit "$U1" 5
[ -S "$SOCK" ] || _lib_die "a killed server left no socket file: cannot test a stale one"
start_bg "$TMP/u2.log" "$MTLS" server --listen "unix:$SOCK" --target "127.0.0.1:$BE_PORT" \
	--log-format json "${SRV_TLS[@]}"
U2=$BG_PID
if wait_for_line "$TMP/u2.log" '"event":"listening"' "$READY_LIMIT" "$U2"; then
	pass "a stale unix socket is replaced"
else
	fail "a stale unix socket is replaced" "$(cat -- "$TMP/u2.log")"
fi
stop_bg "$U2"
finish
