#!/usr/bin/env bash
# The multi-address connect under failure (resolver.c, pump.c), as an attacker or a bad
# network would drive it:
#   1. many clients while every --server fails at once (refused, a socket file that does
#      not exist, a name that does not resolve): each is refused, and the connector holds
#      the same descriptors afterwards as before (no socket left open on any failure path)
#   2. every --server a black hole (SYNs dropped): a client is not held forever; its
#      connection ends (connect_timeout) and the descriptors come back
#   3. SIGHUP, then SIGTERM, while connects to a black hole are in flight: the connector
#      reloads, drains and exits 0 (under ASan: no use after free of the address lists)
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

C=$CERTS
BG_LIMIT=200
CON_TLS=(--cert "$C/client-chain.pem" --key "$C/client.key" --ca "$C/ca.pem")
UNRESOLVABLE=mtls-test-unresolvable.invalid

# fds PID : how many descriptors the process has open
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
# fds_back PID N : wait (bounded) until the process has N descriptors again (the metrics
# server may still be closing the last scrape's); prints how many it has
fds_back() {
	local n=0
	while [ "$(fds "$1")" != "$2" ] && [ "$n" -lt 100 ]; do
		sleep 0.05
		n=$((n + 1))
	done
	fds "$1"
}
# settle_open PORT : wait (bounded) until the connector has no connection open
settle_open() {
	local n=0
	while [ "$(metric "$1" 'mtls_connections_open{role="connector"}')" != 0 ] && [ "$n" -lt 400 ]; do
		sleep 0.05
		n=$((n + 1))
	done
}
# wait_lines FILE EVENT TEXT N : wait (bounded) until FILE has N lines of EVENT with TEXT (a
# connection's conn_close is queued before it is counted closed, but the log thread may write
# it after settle_open saw it so)
wait_lines() {
	local n=0
	while [ "$(log_count "$1" "$2" "$3")" -lt "$4" ] && [ "$n" -lt $((READY_LIMIT * 20)) ]; do
		sleep 0.05
		n=$((n + 1))
	done
}
# client PORT : one client that writes a line and waits (bounded) for the connector to close
client() {
	local fd line
	{ exec {fd}<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 0
	{ printf 'x\n' >&"$fd"; } 2>/dev/null || true
	IFS= read -r -t 20 -u "$fd" line 2>/dev/null || true
	exec {fd}>&-
}

# a port that refuses: a listener closed again
python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' >"$TMP/closed.port"
CLOSED=$(cat -- "$TMP/closed.port")

echo "# 1. every --server fails at once: no descriptor left behind"
start_tunnel_connector "$TMP/con.log" --server "127.0.0.1:$CLOSED" \
	--server "unix:$TMP/nonexistent.sock" --server "$UNRESOLVABLE:443" \
	--server "[::1]:$CLOSED" --server-name localhost --metrics 127.0.0.1:0 "${CON_TLS[@]}"
CM=$CON_METRICS
client "$CON_PORT"
settle_open "$CM"
before=$(fds "$CON_REAL")
for _ in $(seq 1 60); do client "$CON_PORT"; done
settle_open "$CM"
after=$(fds_back "$CON_REAL" "$before")
p=()
wait_lines "$TMP/con.log" conn_close connect_failed 61
[ "$(log_count "$TMP/con.log" conn_close connect_failed)" = 61 ] ||
	p+=("$(log_count "$TMP/con.log" conn_close connect_failed) conn_close connect_failed lines for 61 clients")
[ "$after" = "$before" ] || p+=("descriptors: $before before 60 failing clients, $after after" \
	"$(ls -l "/proc/$CON_REAL/fd" 2>&1)")
kill -0 "$CON_PID" 2>/dev/null || p+=("the connector exited")
verdict "60 clients, every --server failing: refused, no descriptor left open ($after)" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 20 -- "$TMP/con.log")"
stop_bg "$CON_PID"

# a listener whose accept queue is full: the kernel drops further SYNs, a connect hangs
cat >"$TMP/hole.py" <<'PYEOF'
import os, socket, sys, time
lsn = socket.socket()
lsn.bind(("127.0.0.1", 0))
lsn.listen(0)
port = lsn.getsockname()[1]
held = []
for _ in range(4):
    c = socket.socket()
    c.setblocking(False)
    try:
        c.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    held.append(c)
time.sleep(0.5)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(port))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(300)
PYEOF
start_bg "$TMP/hole.log" python3 "$TMP/hole.py" "$TMP/hole.port"
n=0
while [ ! -s "$TMP/hole.port" ] && [ "$n" -lt 200 ]; do
	sleep 0.05
	n=$((n + 1))
done
[ -s "$TMP/hole.port" ] || _lib_die "the black hole did not start: $(cat -- "$TMP/hole.log")"
HOLE=$(cat -- "$TMP/hole.port")

echo "# 2. every --server a black hole: the client is not held forever"
start_tunnel_connector "$TMP/con-h.log" --server "127.0.0.1:$HOLE" --server "localhost:$HOLE" \
	--connect-timeout 1s --metrics 127.0.0.1:0 "${CON_TLS[@]}"
CM=$CON_METRICS
client "$CON_PORT"
settle_open "$CM"
before=$(fds "$CON_REAL")
pids=()
for _ in $(seq 1 5); do
	client "$CON_PORT" &
	pids+=($!)
done
wait "${pids[@]}"
settle_open "$CM"
after=$(fds_back "$CON_REAL" "$before")
p=()
[ "$(metric "$CM" 'mtls_connections_open{role="connector"}')" = 0 ] || p+=("connections still open")
# (connect_timeout, or connect_failed where localhost has ::1 too, refused last)
wait_lines "$TMP/con-h.log" conn_close '"why":"connect_' 6
wait_lines "$TMP/con-h.log" conn_close connect_timeout 1
[ "$(log_count "$TMP/con-h.log" conn_close '"why":"connect_')" -ge 6 ] ||
	p+=("$(log_count "$TMP/con-h.log" conn_close '"why":"connect_') conn_close connect_* lines, want 6")
[ "$(log_count "$TMP/con-h.log" conn_close connect_timeout)" -ge 1 ] || p+=("no connect_timeout")
[ "$after" = "$before" ] || p+=("descriptors: $before before, $after after")
verdict "every --server a black hole: each connection ends (its connect timeout), no descriptor kept" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 20 -- "$TMP/con-h.log")"
stop_bg "$CON_PID"

echo "# 3. SIGHUP and SIGTERM while connects are in flight"
start_tunnel_connector "$TMP/con-s.log" --server "127.0.0.1:$HOLE" --server "127.0.0.1:$CLOSED" \
	--connect-timeout 30s --drain-timeout 2s "${CON_TLS[@]}"
pids=()
for _ in $(seq 1 4); do
	client "$CON_PORT" &
	pids+=($!)
done
n=0
while [ "$(log_count "$TMP/con-s.log" target_down)" -lt 1 ] && [ "$n" -lt 200 ]; do
	sleep 0.05
	n=$((n + 1))
done
kill -HUP "$CON_REAL"
wait_for_line "$TMP/con-s.log" '"event":"reload' 10 || true
kill -TERM "$CON_REAL"
wait_exit "$CON_PID" 30
wait "${pids[@]}"
p=()
[ "$EXIT_RC" = 0 ] || p+=("exit status $EXIT_RC")
grep -qF '"event":"stopped"' "$TMP/con-s.log" || p+=("no stopped line")
verdict "SIGHUP then SIGTERM with connects in flight: reloaded, drained, exit 0" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 30 -- "$TMP/con-s.log")"

finish
