#!/usr/bin/env bash
# Several --server addresses, failover and names resolved at connect time (resolver.c):
#   1. a connector with two --server, the first closed (refused): traffic flows through the
#      second, the first is marked down (target_down, mtls_target_up 0) and skipped by the
#      next clients; once it listens again, traffic goes back to it (target_up)
#   2. a --server name that does not resolve at start: the connector starts, warns
#      (resolve_failed, its metrics) and refuses clients with the reason; with a second
#      --server that works, traffic flows through that one
#   3. a malformed --server (bad port, empty host, port 0) is still an error at start
#   4. without --server-name, each --server's certificate is checked for its own host
#   5. a first --server that does not answer (SYNs dropped): the connection moves on after
#      its share of --connect-timeout
#   6. localhost resolving to 127.0.0.1 and ::1 (where /etc/hosts says both) with only one
#      family listening: connections succeed through the other address
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

C=$CERTS
BG_LIMIT=200
SRV_TLS=(--cert "$C/server-chain.pem" --key "$C/server.key" --ca "$C/ca.pem" --allow-any-identity)
CON_TLS=(--cert "$C/client-chain.pem" --key "$C/client.key" --ca "$C/ca.pem")
UNRESOLVABLE=mtls-test-unresolvable.invalid

# xchg PORT MESSAGE : one connection through the connector: MESSAGE out, the same line back
xchg() {
	local fd line rc
	XCHG_WHY=""
	if ! { exec {fd}<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null; then
		XCHG_WHY="connect to $1 failed"
		return 1
	fi
	printf '%s\n' "$2" >&"$fd" 2>/dev/null || true
	if IFS= read -r -t 10 -u "$fd" line 2>/dev/null; then rc=0; else rc=$?; fi
	exec {fd}>&-
	if [ "$rc" != 0 ]; then
		XCHG_WHY="no answer (read status $rc)"
		return 1
	fi
	[ "$line" = "$2" ] || {
		XCHG_WHY="answer '$line'"
		return 1
	}
}
conns() { grep -c '^conn open' "$1" 2>/dev/null || true; }
m() { metric "$1" "$2"; }

start_backend "$TMP/be-a.log" --mode echo
BE_A=$BE_PORT
start_backend "$TMP/be-b.log" --mode echo
BE_B=$BE_PORT

echo "# 1. two --server, the first closed"
start_tunnel_server "$TMP/srv-a.log" --target "127.0.0.1:$BE_A" "${SRV_TLS[@]}"
PA=$SRV_PORT
stop_bg "$SRV_PID" # its port is closed now: connects are refused
start_tunnel_server "$TMP/srv-b.log" --target "127.0.0.1:$BE_B" "${SRV_TLS[@]}"
PB=$SRV_PORT
start_tunnel_connector "$TMP/con.log" --server "127.0.0.1:$PA" --server "127.0.0.1:$PB" \
	--metrics 127.0.0.1:0 --connect-timeout 5s "${CON_TLS[@]}"
CP=$CON_PORT CM=$CON_METRICS CON1=$CON_PID

p=()
xchg "$CP" first || p+=("the first client got no answer: $XCHG_WHY")
[ "$(conns "$TMP/be-b.log")" = 1 ] || p+=("backend B saw $(conns "$TMP/be-b.log") connections, want 1")
# (logged before the answer, but written by the log thread maybe after it: conn_open, which
# comes after target_down, is waited for)
wait_for_line "$TMP/con.log" '"event":"conn_open"' "$READY_LIMIT" || true
l=$(grep -F '"event":"target_down"' "$TMP/con.log" | head -n 1 || true)
[[ $l == *"\"address\":\"127.0.0.1:$PA\""* ]] || p+=("no target_down line for 127.0.0.1:$PA")
l=$(grep -F '"event":"conn_open"' "$TMP/con.log" | head -n 1 || true)
[[ $l == *"\"target\":\"127.0.0.1:$PB\""* ]] || p+=("conn_open does not say it went to 127.0.0.1:$PB: $l")
[ "$(m "$CM" "mtls_target_up{target=\"127.0.0.1:$PA\"}")" = 0 ] || p+=("mtls_target_up of the first is not 0")
[ "$(m "$CM" "mtls_target_up{target=\"127.0.0.1:$PB\"}")" = 1 ] || p+=("mtls_target_up of the second is not 1")
verdict "the first --server refused: the client's connection goes to the second" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$TMP/con.log")"

# the next clients skip the address marked down: its retries back off (1 s doubling), so
# ten clients cost it far fewer than ten failures
p=()
for i in $(seq 1 10); do
	xchg "$CP" "m$i" || p+=("client $i: $XCHG_WHY")
done
fails=$(m "$CM" "mtls_target_address_failures_total{target=\"127.0.0.1:$PA\"}")
[ -n "$fails" ] && [ "$fails" -lt 10 ] || p+=("$fails failed connects to the first for 11 clients: it was not skipped")
[ "$(conns "$TMP/be-a.log")" = 0 ] || p+=("backend A saw a connection")
verdict "ten more clients all served by the second; the first is skipped while down ($fails failures)" \
	"${p[@]+"${p[@]}"}" -- "$(grep -F target_ "$TMP/con.log" || true)"

# the first comes back on its port
start_bg "$TMP/srv-a2.log" "$MTLS" server --listen "127.0.0.1:$PA" --log-format json \
	--workers 1 --target "127.0.0.1:$BE_A" "${SRV_TLS[@]}"
wait_for_line "$TMP/srv-a2.log" '"event":"listening"' "$READY_LIMIT" "$BG_PID" ||
	_lib_die "server A did not start again on $PA: $(cat -- "$TMP/srv-a2.log")"
p=()
n=0
# its backoff is at most 30 s: within 90 s a client goes to it again
while [ "$(conns "$TMP/be-a.log")" = 0 ] && [ "$n" -lt 180 ]; do
	xchg "$CP" "back$n" || p+=("client back$n: $XCHG_WHY")
	sleep 0.5
	n=$((n + 1))
done
[ "$(conns "$TMP/be-a.log")" -ge 1 ] || p+=("no connection reached the first server again in 90 s")
wait_for_line "$TMP/con.log" "\"event\":\"target_up\".*\"address\":\"127\\.0\\.0\\.1:$PA\"" "$READY_LIMIT" ||
	p+=("no target_up line for 127.0.0.1:$PA")
[ "$(m "$CM" "mtls_target_up{target=\"127.0.0.1:$PA\"}")" = 1 ] || p+=("mtls_target_up of the first is not 1 again")
before=$(conns "$TMP/be-b.log")
xchg "$CP" again || p+=("the client after the return: $XCHG_WHY")
[ "$(conns "$TMP/be-b.log")" = "$before" ] || p+=("the client after the return went to the second, not the first")
verdict "the first --server listens again: traffic goes back to it (target_up)" \
	"${p[@]+"${p[@]}"}" -- "$(grep -F target_ "$TMP/con.log" || true)"
stop_bg "$CON1"

echo "# 2. a --server name that does not resolve at start"
if getent hosts "$UNRESOLVABLE" >/dev/null 2>&1; then
	_lib_die "$UNRESOLVABLE resolves here"
fi
start_tunnel_connector "$TMP/con-u.log" --server "$UNRESOLVABLE:443" --metrics 127.0.0.1:0 \
	"${CON_TLS[@]}" --server-name localhost
p=()
l=$(grep -F '"event":"resolve_failed"' "$TMP/con-u.log" | head -n 1 || true)
[[ $l == *"\"target\":\"$UNRESOLVABLE:443\""* && $l == *'"level":"warn"'* ]] ||
	p+=("no resolve_failed warning naming $UNRESOLVABLE:443")
[ "$(m "$CON_METRICS" "mtls_target_up{target=\"$UNRESOLVABLE:443\"}")" = 0 ] || p+=("mtls_target_up is not 0")
[ "$(m "$CON_METRICS" "mtls_target_resolve_failures_total{target=\"$UNRESOLVABLE:443\"}")" -ge 1 ] ||
	p+=("mtls_target_resolve_failures_total is not counted")
xchg "$CON_PORT" hello && p+=("a client got an answer through a server that does not resolve")
wait_for_line "$TMP/con-u.log" '"event":"server_connect_failed"' 10 || true
l=$(grep -F '"event":"server_connect_failed"' "$TMP/con-u.log" | head -n 1 || true)
[[ $l == *"did not resolve"* ]] || p+=("server_connect_failed does not say the name did not resolve: $l")
# (conn_close comes after server_connect_failed)
wait_for_line "$TMP/con-u.log" '"event":"conn_close".*"why":"connect_failed"' "$READY_LIMIT" ||
	p+=("no conn_close why=connect_failed")
kill -0 "$CON_PID" 2>/dev/null || p+=("the connector exited")
verdict "a name that does not resolve: the connector starts, warns, refuses clients with the reason" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$TMP/con-u.log")"
stop_bg "$CON_PID"

start_tunnel_connector "$TMP/con-u2.log" --server "$UNRESOLVABLE:443" --server "127.0.0.1:$PB" \
	"${CON_TLS[@]}" --server-name localhost
p=()
xchg "$CON_PORT" via-second || p+=("no answer through the second --server: $XCHG_WHY")
verdict "an unresolvable first --server and a working second: traffic flows through the second" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$TMP/con-u2.log")"
stop_bg "$CON_PID"

echo "# 3. a malformed --server is an error at start"
for bad in "127.0.0.1:99999" ":443" "127.0.0.1:0" "127.0.0.1"; do
	LAST_CMD="mtls connector --server $bad"
	run "$MTLS" connector --listen 127.0.0.1:0 --server "127.0.0.1:$PB" --server "$bad" \
		"${CON_TLS[@]}"
	p=()
	[ "$RC" = 2 ] || p+=("exit status $RC, want 2")
	[[ $ERR == *"--server"* ]] || p+=("the error does not name --server")
	report "--server '$bad' is refused at start" "${p[@]+"${p[@]}"}"
done

echo "# 4. the name the server's certificate must carry is each --server's own host"
# the zoo's server certificate carries 127.0.0.1 and localhost, not 127.0.0.2
start_tunnel_server "$TMP/srv-c.log" --target "127.0.0.1:$BE_B" "${SRV_TLS[@]}"
PC=$SRV_PORT
stop_bg "$SRV_PID" # closed: the connection goes on to the second --server
start_bg "$TMP/srv-d.log" "$MTLS" server --listen 127.0.0.2:0 --log-format json --workers 1 \
	--target "127.0.0.1:$BE_B" "${SRV_TLS[@]}"
wait_for_line "$TMP/srv-d.log" '"event":"listening"' "$READY_LIMIT" "$BG_PID" ||
	_lib_die "the server on 127.0.0.2 did not start: $(cat -- "$TMP/srv-d.log")"
PD=$(_daemon_port "$TMP/srv-d.log" listening)
SRV_D=$BG_PID
start_tunnel_connector "$TMP/con-n.log" --server "127.0.0.1:$PC" --server "127.0.0.2:$PD" \
	"${CON_TLS[@]}"
p=()
xchg "$CON_PORT" name && p+=("a client got through to 127.0.0.2, whose certificate does not carry that name")
wait_for_line "$TMP/con-n.log" '"event":"handshake_refused"' 10 || true
l=$(grep -F '"event":"handshake_refused"' "$TMP/con-n.log" | head -n 1 || true)
[[ $l == *"127.0.0.2"* ]] || p+=("no handshake_refused naming 127.0.0.2: $l")
verdict "no --server-name: the second --server's certificate is checked for its own host (127.0.0.2)" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$TMP/con-n.log")"
stop_bg "$CON_PID"
start_tunnel_connector "$TMP/con-n2.log" --server "127.0.0.1:$PC" --server "127.0.0.2:$PD" \
	"${CON_TLS[@]}" --server-name localhost
p=()
xchg "$CON_PORT" named || p+=("no answer with --server-name localhost: $XCHG_WHY")
verdict "--server-name applies to every --server" "${p[@]+"${p[@]}"}" -- \
	"$(cat -- "$TMP/con-n2.log")"
stop_bg "$CON_PID"
stop_bg "$SRV_D"

echo "# 5. a first --server that does not answer: its share of --connect-timeout, then the next"
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
start_tunnel_connector "$TMP/con-h.log" --server "127.0.0.1:$HOLE" --server "127.0.0.1:$PB" \
	"${CON_TLS[@]}" --connect-timeout 8s
p=()
xchg "$CON_PORT" through-hole || p+=("no answer: $XCHG_WHY")
wait_for_line "$TMP/con-h.log" '"event":"target_down"' "$READY_LIMIT" || true
l=$(grep -F '"event":"target_down"' "$TMP/con-h.log" | head -n 1 || true)
[[ $l == *"\"address\":\"127.0.0.1:$HOLE\""* && $l == *"timed out"* ]] ||
	p+=("no target_down 'timed out' for the first: $l")
verdict "a first --server that does not answer: the connection goes on to the second within --connect-timeout" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$TMP/con-h.log")"
stop_bg "$CON_PID"

echo "# 6. localhost: every address of a name is used"
if getent ahosts localhost | grep -q '^::1 ' && getent ahosts localhost | grep -q '^127\.0\.0\.1 '; then
	for fam in v4 v6; do
		if [ "$fam" = v4 ]; then listen="127.0.0.1:0"; else listen="[::1]:0"; fi
		start_bg "$TMP/srv-$fam.log" "$MTLS" server --listen "$listen" --log-format json \
			--workers 1 --target "127.0.0.1:$BE_B" "${SRV_TLS[@]}"
		wait_for_line "$TMP/srv-$fam.log" '"event":"listening"' "$READY_LIMIT" "$BG_PID" ||
			_lib_die "the $fam server did not start: $(cat -- "$TMP/srv-$fam.log")"
		SP=$(_daemon_port "$TMP/srv-$fam.log" listening)
		SPID=$BG_PID
		start_tunnel_connector "$TMP/con-$fam.log" --server "localhost:$SP" "${CON_TLS[@]}"
		p=()
		for i in 1 2 3; do
			xchg "$CON_PORT" "$fam$i" || p+=("client $i: $XCHG_WHY")
		done
		verdict "localhost with only $fam listening: connections succeed" \
			"${p[@]+"${p[@]}"}" -- "$(cat -- "$TMP/con-$fam.log")"
		stop_bg "$CON_PID"
		stop_bg "$SPID"
	done
else
	echo "skip  localhost over both families: /etc/hosts here maps localhost to $(getent ahosts localhost | awk '{print $1}' | sort -u | tr '\n' ' ')only (the unit test test_tunnel_resolver covers a name with several addresses)"
fi

finish
