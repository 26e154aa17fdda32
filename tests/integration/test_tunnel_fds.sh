#!/usr/bin/env bash
# Descriptors a hostile or departed client makes mtls server hold:
#   1. out of descriptors at accept(): the server pauses accepting instead of spinning on the
#      level-triggered listen socket (before: both cores at 100 %, 241,000 log lines a second),
#      and serves clients again once descriptors are free;
#   2. a client that sends more than the buffers hold to a target that never reads, then
#      leaves: the server closes the connection (both descriptors) once the client is gone and
#      the target has taken nothing for the handshake timeout, not after the idle timeout (an
#      hour); while the client is still there, it waits. The same for mtls connector, whose
#      client is the local application and whose target is the server.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

command -v prlimit >/dev/null || _lib_die "prlimit (util-linux) not found in PATH"
PEER=$MTLS_BIN_DIR/tunnelpeer
[ -x "$PEER" ] || _lib_die "$PEER is missing: build the project first"
C=$CERTS
TLS=(--cert "$C/client-chain.pem" --key "$C/client.key" --ca "$C/ca.pem" --name server.test)
SRV_TLS=(--cert "$C/server-chain.pem" --key "$C/server.key" --ca "$C/ca.pem" --allow-any-identity)
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2" | head -n 1; }
# cpu_ticks PID : user + system CPU time of a process, in clock ticks
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

echo "# 1. out of descriptors at accept()"
start_backend "$TMP/be1.log"
start_tunnel_server "$TMP/srv1.log" --target "127.0.0.1:$BE_PORT" "${SRV_TLS[@]}"
PID=$SRV_REAL
p=()
# The limit drops under the running server (as when 2 x --max-connections exceeds it): 64
# descriptors, of which the server already uses some 15, and 120 clients that send nothing.
prlimit --pid "$PID" --nofile=64:
start_bg "$TMP/idle.log" "$PEER" idle --connect "127.0.0.1:$SRV_PORT" --connections 120 --seconds 30
IDLE=$BG_PID
wait_for_line "$TMP/idle.log" '^held ' 10 "$IDLE" || p+=("the idle clients did not connect")
sleep 0.5
t0=$(cpu_ticks "$PID")
l0=$(log_count "$TMP/srv1.log" accept_failed)
sleep 2
t1=$(cpu_ticks "$PID")
l1=$(log_count "$TMP/srv1.log" accept_failed)
cpu_ms=$(((t1 - t0) * 1000 / HZ))
lines=$((l1 - l0))
# before: 2 cores busy (some 4,000 ms in 2 s) and hundreds of thousands of lines
[ "$cpu_ms" -lt 500 ] || p+=("the server used $cpu_ms ms of CPU in 2 s while out of descriptors")
[ "$lines" -lt 50 ] || p+=("$lines accept_failed lines in 2 s")
[ "$l1" -ge 1 ] || p+=("no accept_failed line: the descriptors did not run out (the setup is wrong)")
verdict "out of descriptors: $cpu_ms ms of CPU and $lines accept_failed lines in 2 s" \
	"${p[@]+"${p[@]}"}" -- "$(grep -F accept_failed "$TMP/srv1.log" | tail -n 3)"

p=()
stop_bg "$IDLE"
prlimit --pid "$PID" --nofile=1024:
# the accept pause is at most 1.6 s; the idle clients' connections end as their EOF arrives
ok=0
for _ in 1 2 3 4 5 6 7 8 9 10; do
	run "$PEER" probe --seconds 0.5 --windows 1 --connect "127.0.0.1:$SRV_PORT" "${TLS[@]}"
	if [ "$RC" = 0 ] && [ "$(field round_trips "$OUT")" -ge 1 ] 2>/dev/null; then
		ok=1
		break
	fi
	sleep 0.5
done
[ "$ok" = 1 ] || p+=("no mTLS client got through after the descriptors were free: $OUT $ERR")
kill -0 "$PID" 2>/dev/null || p+=("the server is gone")
verdict "descriptors free again: an mTLS client gets through" "${p[@]+"${p[@]}"}" -- \
	"$(grep -v '"level":"info"' "$TMP/srv1.log" | tail -n 5)"
stop_bg "$SRV_PID"
stop_bg "$BE_PID"

echo "# 2. a client leaves while the target does not read"
start_bg "$TMP/stall.log" "$PEER" stall-backend --seconds 40
STALL=$BG_PID
wait_for_line "$TMP/stall.log" '^listening on ' "$READY_LIMIT" "$STALL" || {
	echo "stall-backend did not start: $(cat -- "$TMP/stall.log")" >&2
	exit 1
}
STALL_PORT=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$TMP/stall.log")
# a handshake timeout of 1 s bounds how long a departed client's bytes wait; the idle
# timeout stays at its hour
start_tunnel_server "$TMP/srv2.log" --target "127.0.0.1:$STALL_PORT" "${SRV_TLS[@]}" \
	--handshake-timeout 1s
p=()
start_bg "$TMP/flood.log" "$PEER" flood --bytes 64000000 --hold 3 --connect "127.0.0.1:$SRV_PORT" \
	"${TLS[@]}"
FLOOD=$BG_PID
wait_for_line "$TMP/flood.log" '^flood sent=' 15 "$FLOOD" || p+=("the flood did not finish")
# the client is still there (holding for 3 s): its connection must stay, stuck or not
sleep 2
[ "$(log_count "$TMP/srv2.log" conn_close)" = 0 ] ||
	p+=("the server closed the connection of a client that is still there")
verdict "a stalled target, the client still there: the connection stays ($(cat -- "$TMP/flood.log"))" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 5 "$TMP/srv2.log")"

p=()
wait_exit "$FLOOD" 10
start=$EPOCHREALTIME
wait_for_line "$TMP/srv2.log" '"event":"conn_close".*"why":"undeliverable"' 15 ||
	p+=("no conn_close why=undeliverable within 15 s of the client leaving")
wait_for_line "$TMP/stall.log" '^conn closed' 5 || p+=("the target's connection was not closed")
secs=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
verdict "the client left: both descriptors closed ${secs} s later (why=undeliverable)" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 5 "$TMP/srv2.log")" "$(cat -- "$TMP/stall.log")"

echo "# 3. the same through mtls connector: a local client leaves, the server does not read"
# the server of case 2 still holds no connection; the connector in front of it
start_tunnel_connector "$TMP/con3.log" --server "127.0.0.1:$SRV_PORT" --server-name server.test \
	--cert "$C/client-chain.pem" --key "$C/client.key" --ca "$C/ca.pem" --handshake-timeout 1s
p=()
# A reset: a local client's FIN would wait behind its unsent bytes until its kernel gives up
# on them (then a reset arrives, and the same check closes the connection). A TLS client's
# close is a reset already (it leaves the server's session tickets unread).
run "$PEER" flood --bytes 64000000 --plain 1 --reset 1 --connect "127.0.0.1:$CON_PORT"
[ "$RC" = 0 ] || p+=("the flood failed: $OUT $ERR")
wait_for_line "$TMP/con3.log" '"event":"conn_close".*"why":"undeliverable"' 15 ||
	p+=("the connector did not close the connection as undeliverable within 15 s")
# the connector's reset ends the server's connection too (its client is gone)
wait_for_line "$TMP/srv2.log" '"event":"conn_close".*"conn":2,' 15 ||
	p+=("the server did not close its connection from the connector within 15 s")
verdict "through the connector: the local client left, both daemons closed ($OUT)" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 3 "$TMP/con3.log")" "$(tail -n 3 "$TMP/srv2.log")"

finish
