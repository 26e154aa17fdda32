#!/usr/bin/env bash
# Decisions reach live connections: after a reload that revokes a client, the server closes
# that client's established connection (why revoked_while_connected, counted in
# mtls_connections_closed_by_recheck_total) while another client's stays up; and
# --max-connection-lifetime closes a connection that is idle but open too long. The
# connector does the same with a server whose certificate was revoked.
#
# (A changed --allow-uri in a --config file is not covered here: a reload re-reads the
# certificate, key, CA and CRL files, not the options. The re-check on new allow rules is
# covered by tests/unit/test_recheck.c.)
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
ca init --dir "$D"
ca issue --dir "$D" --profile server --dns localhost --ip 127.0.0.1 --out "$W/S"
ca issue --dir "$D" --profile client --uri spiffe://recheck.test/a --out "$W/A"
ca issue --dir "$D" --profile client --uri spiffe://recheck.test/b --out "$W/B"

start_backend "$TMP/be.log" --mode echo

# connector NAME CERT [args] : a connector presenting CERT; sets <NAME>_PORT, <NAME>_LOG
connector() {
	local name=$1 cert=$2
	shift 2
	start_tunnel_connector "$TMP/$name.log" --server "127.0.0.1:$SRV_PORT" \
		--server-name localhost --cert "$W/$cert-chain.pem" --key "$W/$cert.key" \
		--ca "$D/root.pem" --watch-interval 0 "$@"
	printf -v "${name}_PORT" '%s' "$CON_PORT"
}

# open_conn FD PORT : a plaintext connection to a connector on descriptor FD
open_conn() {
	eval "exec $1<>/dev/tcp/127.0.0.1/$2"
}

# ping FD WORD : WORD goes through and comes back; 0 or 1
ping() {
	local line=""
	printf '%s\n' "$2" >&"$1" 2>/dev/null || return 1
	read -r -t 5 -u "$1" line 2>/dev/null || return 1
	[ "$line" = "$2" ]
}

# closed FD : the connection ends (EOF) within RUN_LIMIT seconds; 0 or 1
closed() {
	local line="" rc=0
	read -r -t "$RUN_LIMIT" -u "$1" line 2>/dev/null || rc=$?
	[ "$rc" = 1 ]
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

# --- a revoked client's live connection is closed; another client's stays ---------------
start_tunnel_server "$TMP/srv.log" --target "127.0.0.1:$BE_PORT" --cert "$W/S-chain.pem" \
	--key "$W/S.key" --ca "$D/root.pem" --crl "$D/crl.pem" \
	--allow-uri spiffe://recheck.test/a --allow-uri spiffe://recheck.test/b \
	--metrics 127.0.0.1:0 --watch-interval 0
SRV=$SRV_REAL
connector A A
connector B B

open_conn 5 "$A_PORT"
open_conn 6 "$B_PORT"
p=()
ping 5 a1 || p+=("client A's connection does not carry data before the revocation")
ping 6 b1 || p+=("client B's connection does not carry data before the revocation")

# a reload that changes nothing closes nothing
kill -HUP "$SRV"
wait_log "$TMP/srv.log" reload SIGHUP || p+=("no reload after the first SIGHUP")
ping 5 a2 || p+=("client A's connection broke on a reload that changed nothing")

ca revoke --dir "$D" --cert "$W/A.pem" --reason keyCompromise
kill -HUP "$SRV"
closed 5 || p+=("client A's connection stayed open after its certificate was revoked and the server reloaded")
wait_log "$TMP/srv.log" conn_close revoked_while_connected ||
	p+=("no conn_close line with why revoked_while_connected")
[ "$(log_count "$TMP/srv.log" conn_rejudged '"reason":"revoked"')" -ge 1 ] ||
	p+=("no conn_rejudged line with reason revoked")
v=$(metric "$SRV_METRICS" 'mtls_connections_closed_by_recheck_total{reason="revoked"}')
[ "$v" = 1 ] || p+=("mtls_connections_closed_by_recheck_total{reason=\"revoked\"} is '$v', expected 1")
ping 6 b2 || p+=("client B's connection broke when client A was revoked")
exec 5>&- 6>&-
verdict "a revoked client's live connection is closed at the reload, another client's stays" "${p[@]}" -- "server log:" "$(tail -n 15 "$TMP/srv.log")"

stop_bg "$CON_PID"
stop_bg "$SRV_PID"

# --- a handshake in flight across the revocation ----------------------------------------------
# The server builds a connection's TLS state, on the state trusted then, at the client's first
# byte. A relay passes the connector's ClientHello at once and holds what follows (the client's
# certificate flight) until GO exists; meanwhile the certificate is revoked and the server
# reloads. The handshake then completes: the live-connection re-check ran while it was still in
# its handshake, so the server must judge it under the new state when it completes.
ca issue --dir "$D" --profile client --uri spiffe://recheck.test/b --out "$W/B3"
cat >"$W/relay.py" <<'PY'
import os, select, socket, sys
up_port, go, ready = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(1)
print(ls.getsockname()[1], flush=True)
down, _ = ls.accept()
up = socket.create_connection(("127.0.0.1", up_port))
up.sendall(down.recv(65536))          # the ClientHello, at once
open(ready, "w").close()
held = b""
while True:
    r, _, _ = select.select([down, up], [], [], 0.05)
    if os.path.exists(go) and held:
        up.sendall(held); held = b""
    for s in r:
        data = s.recv(65536)
        if not data:
            sys.exit(0)
        if s is up:
            down.sendall(data)
        elif os.path.exists(go):
            up.sendall(data)
        else:
            held += data
PY
start_tunnel_server "$TMP/srv4.log" --target "127.0.0.1:$BE_PORT" --cert "$W/S-chain.pem" \
	--key "$W/S.key" --ca "$D/root.pem" --crl "$D/crl.pem" --allow-uri spiffe://recheck.test/b \
	--metrics 127.0.0.1:0 --watch-interval 0
SRV4=$SRV_REAL SRV4_PID=$SRV_PID SRV4_METRICS=$SRV_METRICS
start_bg "$TMP/relay.out" python3 "$W/relay.py" "$SRV_PORT" "$W/GO" "$W/READY"
RELAY_PID=$BG_PID
wait_for_line "$TMP/relay.out" '^[0-9]' 10 "$RELAY_PID" || _lib_die "the relay did not start"
RELAY_PORT=$(head -n 1 "$TMP/relay.out")
start_tunnel_connector "$TMP/C4.log" --server "127.0.0.1:$RELAY_PORT" --server-name localhost \
	--cert "$W/B3-chain.pem" --key "$W/B3.key" --ca "$D/root.pem" --watch-interval 0 \
	--handshake-timeout 30s
p=()
exec 9<>"/dev/tcp/127.0.0.1/$CON_PORT"
printf 'in flight\n' >&9
for _ in $(seq 100); do [ -e "$W/READY" ] && break; sleep 0.1; done
[ -e "$W/READY" ] || p+=("the relay never saw the connector's ClientHello")
sleep 0.3 # the server has the ClientHello: its TLS state is made, on the old CRL
ca revoke --dir "$D" --cert "$W/B3.pem" --reason keyCompromise
kill -HUP "$SRV4"
wait_log "$TMP/srv4.log" reload SIGHUP || p+=("no reload after SIGHUP")
touch "$W/GO"
line=""
read -r -t 10 -u 9 line 2>/dev/null || true
[ -z "$line" ] || p+=("the revoked client's data went through: the handshake that began before the revocation was accepted ('$line')")
wait_log "$TMP/srv4.log" handshake_refused '"reason":"revoked"' ||
	p+=("no handshake_refused line with reason revoked")
[ "$(log_count "$TMP/srv4.log" conn_open recheck.test/b)" = 0 ] ||
	p+=("the server logged conn_open for the revoked client")
exec 9>&-
verdict "a handshake that began before the revocation and completed after the reload is refused (revoked)" \
	"${p[@]+"${p[@]}"}" -- "server log:" "$(tail -n 8 "$TMP/srv4.log")"
stop_bg "$RELAY_PID"
stop_bg "$CON_PID"
stop_bg "$SRV4_PID"

# --- the connector re-judges the server: a revoked server certificate ------------------------
ca issue --dir "$D" --profile server --dns localhost --ip 127.0.0.1 --out "$W/S2"
start_tunnel_server "$TMP/srv3.log" --target "127.0.0.1:$BE_PORT" --cert "$W/S2-chain.pem" \
	--key "$W/S2.key" --ca "$D/root.pem" --allow-uri spiffe://recheck.test/b --watch-interval 0
connector C3 B --crl "$D/crl.pem" --metrics 127.0.0.1:0
C3_REAL=$CON_REAL C3_METRICS=$CON_METRICS
open_conn 8 "$C3_PORT"
p=()
ping 8 s1 || p+=("the connection does not carry data before the server's revocation")
ca revoke --dir "$D" --cert "$W/S2.pem" --reason keyCompromise
kill -HUP "$C3_REAL"
closed 8 || p+=("the connection stayed open after the server's certificate was revoked and the connector reloaded")
wait_log "$TMP/C3.log" conn_close revoked_while_connected ||
	p+=("no conn_close line with why revoked_while_connected in the connector's log")
v=$(metric "$C3_METRICS" 'mtls_connections_closed_by_recheck_total{reason="revoked"}')
[ "$v" = 1 ] || p+=("the connector's mtls_connections_closed_by_recheck_total{reason=\"revoked\"} is '$v', expected 1")
exec 8>&-
verdict "the connector closes its live connection to a server whose certificate was revoked" "${p[@]}" \
	-- "connector log:" "$(tail -n 10 "$TMP/C3.log")"
stop_bg "$CON_PID"
stop_bg "$SRV_PID"

# --- --max-connection-lifetime --------------------------------------------------------------
start_tunnel_server "$TMP/srv2.log" --target "127.0.0.1:$BE_PORT" --cert "$W/S-chain.pem" \
	--key "$W/S.key" --ca "$D/root.pem" --allow-uri spiffe://recheck.test/b \
	--metrics 127.0.0.1:0 --watch-interval 0 --max-connection-lifetime 2s
connector B2 B
open_conn 7 "$B2_PORT"
p=()
ping 7 x1 || p+=("the connection does not carry data")
closed 7 || p+=("an idle connection stayed open past --max-connection-lifetime 2s")
wait_log "$TMP/srv2.log" conn_close '"why":"max_lifetime"' || p+=("no conn_close line with why max_lifetime")
v=$(metric "$SRV_METRICS" 'mtls_connections_closed_max_lifetime_total')
[ "$v" = 1 ] || p+=("mtls_connections_closed_max_lifetime_total is '$v', expected 1")
exec 7>&-
verdict "--max-connection-lifetime 2s closes an idle connection (why max_lifetime)" "${p[@]}" -- "server log:" "$(tail -n 10 "$TMP/srv2.log")"

run "$MTLS" server --max-connection-lifetime 30 --listen 127.0.0.1:0 --target 127.0.0.1:1
p=()
[ "$RC" = 2 ] || p+=("--max-connection-lifetime 30 (no unit): exit $RC, expected 2")
[[ $ERR == *max-connection-lifetime* ]] || p+=("the message does not name the option: $ERR")
verdict "--max-connection-lifetime without a unit is refused" "${p[@]}"

finish
