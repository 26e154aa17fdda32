#!/usr/bin/env bash
# Review of the pump's changes for issue 11 (items 10c and 11), cases the first tests missed:
#   1. a client that ends its side (close_notify and a TCP FIN) and waits for the answer, in
#      front of a target that is slow but alive (busy for 6 s, longer than the handshake
#      timeout, before it reads the request and answers): a half-close is not a departure,
#      the connection must not be cut as undeliverable (before: cut 1-2 s in, the client got
#      no answer and the target a reset). Directly to mtls server, and through mtls connector
#      (whose client half-closes its plaintext side, as `nc -N` does).
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

PEER=$MTLS_BIN_DIR/tunnelpeer
[ -x "$PEER" ] || _lib_die "$PEER is missing: build the project first"
C=$CERTS
TLS=(--cert "$C/client-chain.pem" --key "$C/client.key" --ca "$C/ca.pem" --name server.test)
SRV_TLS=(--cert "$C/server-chain.pem" --key "$C/server.key" --ca "$C/ca.pem" --allow-any-identity)

echo "# 1. a half-closed client waits for the answer of a slow target"
# a unix socket: what the server's connection to it holds is its send buffer (net.core.
# wmem_default, 208 KiB), no autotuning, so a 320 KiB request is sure to wait in the tunnel
# while all of it fits in the buffers before (the client has sent it all and half-closed)
start_bg "$TMP/slow.log" "$PEER" slow-backend --listen "unix:$TMP/slow.sock" --hold 6 --bytes 0 \
	--seconds 50
SLOW=$BG_PID
wait_for_line "$TMP/slow.log" '^listening on ' "$READY_LIMIT" "$SLOW" || {
	echo "slow-backend did not start: $(cat -- "$TMP/slow.log")" >&2
	exit 1
}
# 1 s of handshake timeout: how long the undeliverable check waits
start_tunnel_server "$TMP/srv.log" --target "unix:$TMP/slow.sock" "${SRV_TLS[@]}" \
	--handshake-timeout 1s
start_tunnel_connector "$TMP/con.log" --server "127.0.0.1:$SRV_PORT" --server-name server.test \
	--cert "$C/client-chain.pem" --key "$C/client.key" --ca "$C/ca.pem" --handshake-timeout 1s

for via in server connector; do
	p=()
	n0=$(log_count "$TMP/srv.log" conn_close undeliverable)
	m0=$(log_count "$TMP/con.log" conn_close undeliverable)
	s0=$(log_count "$TMP/srv.log" conn_close)
	c0=$(log_count "$TMP/con.log" conn_close)
	if [ "$via" = server ]; then
		run "$PEER" halfclose --bytes 327680 --seconds 30 --connect "127.0.0.1:$SRV_PORT" "${TLS[@]}"
	else
		run "$PEER" halfclose --bytes 327680 --seconds 30 --plain 1 --connect "127.0.0.1:$CON_PORT"
	fi
	sent=$(sed -n 's/^halfclose sent=\([0-9]*\) answer=.*/\1/p' <<<"$OUT")
	[ "$RC" = 0 ] && [ -n "$sent" ] && [[ "$OUT" == *"answer=received=$sent" ]] ||
		p+=("the half-closed client got no answer (exit $RC): $OUT $ERR")
	# the connection's conn_close lines (whatever their why) first: the log thread may write
	# them after the client has its answer, and an undeliverable not yet written is no proof
	for _ in $(seq 1 $((READY_LIMIT * 20))); do
		[ "$(log_count "$TMP/srv.log" conn_close)" -gt "$s0" ] &&
			{ [ "$via" = server ] || [ "$(log_count "$TMP/con.log" conn_close)" -gt "$c0" ]; } &&
			break
		sleep 0.05
	done
	n=$(($(log_count "$TMP/srv.log" conn_close undeliverable) - n0))
	m=$(($(log_count "$TMP/con.log" conn_close undeliverable) - m0))
	[ "$n" = 0 ] && [ "$m" = 0 ] ||
		p+=("cut as undeliverable: $n by the server, $m by the connector")
	verdict "via $via: a half-closed client got the slow target's answer ($OUT)" \
		"${p[@]+"${p[@]}"}" -- "$(tail -n 4 "$TMP/srv.log")" "$(tail -n 4 "$TMP/con.log")" \
		"$(cat -- "$TMP/slow.log")"
done
stop_bg "$CON_PID"
stop_bg "$SRV_PID"
stop_bg "$SLOW"

finish
