#!/usr/bin/env bash
# Both daemons with two workers each, all threads busy at once: parallel clients exchanging
# lines through connector -> server -> echo backend, while both daemons reload (SIGHUP, on
# the main thread) and serve /metrics and /healthz (the HTTP thread). Every exchange must
# come back intact and every reload succeed.
#
# In the ThreadSanitizer build (scripts/test.sh) this is the test that gives TSan threads
# to compare: the workers' loops, the main thread's reloads swapping the state under live
# handshakes, resumed sessions handed between workers (lib/tickets.c) and the metrics
# thread reading what the workers count. lib.sh fails the script on any report.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

command -v curl >/dev/null || _lib_die "curl not found in PATH"

C=$CERTS
DAEMON=(--drain-timeout 1s --metrics 127.0.0.1:0)
CLIENTS=6
SECONDS_OF_TRAFFIC=3

start_backend "$TMP/backend.log" --mode echo
start_tunnel_server "$TMP/server.log" --target "127.0.0.1:$BE_PORT" --cert "$C/server-chain.pem" \
	--key "$C/server.key" --ca "$C/ca.pem" --allow-uri 'spiffe://test.mtls/ns/prod/sa/*' \
	"${DAEMON[@]}"
start_tunnel_connector "$TMP/connector.log" --server "127.0.0.1:$SRV_PORT" \
	--server-name server.test --cert "$C/client-chain.pem" --key "$C/client.key" \
	--ca "$C/ca.pem" "${DAEMON[@]}"

# client N : connections through the connector until told to stop, three lines echoed on
# each; prints how many connections it made and how many lines came back wrong or not at
# all.
client() {
	local n=$1 r i fd line bad=0
	for ((r = 0; ; r++)); do
		[ ! -e "$TMP/stop" ] || break
		if ! exec {fd}<>"/dev/tcp/127.0.0.1/$CON_PORT"; then
			bad=$((bad + 3))
			continue
		fi
		for i in 1 2 3; do
			printf 'client %s round %s line %s\n' "$n" "$r" "$i" >&"$fd"
			if ! IFS= read -r -t 10 line <&"$fd" ||
				[ "$line" != "client $n round $r line $i" ]; then
				bad=$((bad + 1))
			fi
		done
		exec {fd}>&-
	done
	echo "$r $bad"
}

# the side traffic: reloads of both daemons and scrapes of both metrics ports
side() {
	while [ ! -e "$TMP/stop" ]; do
		kill -HUP "$SRV_REAL" "$CON_REAL" 2>/dev/null || true
		curl -s --max-time 5 -o /dev/null "http://127.0.0.1:$SRV_METRICS/metrics" || true
		curl -s --max-time 5 -o /dev/null "http://127.0.0.1:$CON_METRICS/healthz" || true
		sleep 0.1
	done
}

side &
side_pid=$!
pids=()
for ((n = 0; n < CLIENTS; n++)); do
	client "$n" >"$TMP/client.$n" &
	pids+=($!)
done
sleep "$SECONDS_OF_TRAFFIC"
touch "$TMP/stop"
for p in "${pids[@]}"; do
	wait "$p" || true
done
wait "$side_pid" || true

bad=0 conns=0
for ((n = 0; n < CLIENTS; n++)); do
	read -r c b <"$TMP/client.$n"
	conns=$((conns + c))
	bad=$((bad + b))
done
problems=()
[ "$conns" -ge "$CLIENTS" ] || problems+=("only $conns connections were made")
[ "$bad" -eq 0 ] || problems+=("$bad of $((conns * 3)) lines did not come back intact")
ok_srv=$(metric "$SRV_METRICS" 'mtls_handshakes_total{result="ok"}')
failed_reloads=$(metric "$SRV_METRICS" 'mtls_reloads_total{result="failed"}')
reloads=$(metric "$SRV_METRICS" 'mtls_reloads_total{result="ok"}')
[ "${ok_srv:-0}" -ge "$conns" ] ||
	problems+=("the server counted ${ok_srv:-none} handshakes, expected $conns")
[ "${failed_reloads:-1}" -eq 0 ] || problems+=("${failed_reloads:-?} reloads failed")
[ "${reloads:-0}" -gt 0 ] || problems+=("no reload happened during the traffic")
verdict "$CLIENTS clients, $conns connections x 3 lines through both daemons (2 workers each) during ${reloads:-0} reloads and metrics scrapes" \
	"${problems[@]+"${problems[@]}"}" -- "server log:" "$(tail -n 20 "$TMP/server.log")" \
	"connector log:" "$(tail -n 20 "$TMP/connector.log")"

# A SIGHUP sent the moment "listening" shows is a reload. The main thread's signal handlers
# are installed after that line; until they are, the signals stay blocked (the default
# action of SIGHUP is to exit). strace widens the window: every epoll_create1 is slowed, so
# the main loop's is made half a second after "listening".
# start_slowed LOG CERT KEY WATCH_MS : a server whose every epoll_create1 strace delays by
# half a second, so its main loop is set up well after "listening"; true once that line is
# there (EARLY: its start_bg pid).
start_slowed() {
	start_bg "$1" env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
		strace -f -qq -o /dev/null -e trace=epoll_create1 \
		-e inject=epoll_create1:delay_enter=500000 \
		"$MTLS" server --listen 127.0.0.1:0 --log-format json --workers 1 \
		--target "127.0.0.1:$BE_PORT" --cert "$2" --key "$3" --ca "$C/ca.pem" \
		--allow-any-identity --drain-timeout 1s --watch-interval "$4"
	EARLY=$BG_PID
	wait_for_line "$1" '"event":"listening"' "$READY_LIMIT" "$EARLY"
}

if command -v strace >/dev/null; then
	problems=()
	if start_slowed "$TMP/early.log" "$C/server-chain.pem" "$C/server.key" 0; then
		pid=$(daemon_pid "$TMP/early.log")
		kill -HUP "$pid" 2>/dev/null || problems+=("could not signal $pid")
		wait_for_line "$TMP/early.log" '"event":"reload"' 5 "$EARLY" ||
			problems+=("no reload after the SIGHUP")
		kill -0 "$pid" 2>/dev/null || problems+=("the server died of the SIGHUP")
	else
		problems+=("the server did not start")
	fi
	verdict "SIGHUP right after \"listening\" (main loop slowed by strace): a reload, not death" \
		"${problems[@]+"${problems[@]}"}" -- "$(cat "$TMP/early.log")"

	# A certificate and key replaced at that moment are a change the watcher loads: its
	# baseline is what was read at start, not what the files hold once the loop runs.
	cp -- "$C/server-chain.pem" "$TMP/chain.pem"
	cp -- "$C/server.key" "$TMP/key.pem"
	chmod 0600 "$TMP/key.pem"
	problems=()
	if start_slowed "$TMP/early2.log" "$TMP/chain.pem" "$TMP/key.pem" 200ms; then
		cp -- "$C/cnonly-server-chain.pem" "$TMP/chain.new"
		cp -- "$C/cnonly-server.key" "$TMP/key.new"
		chmod 0600 "$TMP/key.new"
		mv -- "$TMP/chain.new" "$TMP/chain.pem"
		mv -- "$TMP/key.new" "$TMP/key.pem"
		wait_for_line "$TMP/early2.log" '"event":"reload".*"trigger":"file_change"' 10 "$EARLY" ||
			problems+=("the files replaced right after start were never loaded")
	else
		problems+=("the server did not start")
	fi
	verdict "certificate and key replaced right after \"listening\": loaded by the watcher" \
		"${problems[@]+"${problems[@]}"}" -- "$(cat "$TMP/early2.log")"
else
	echo "skip  SIGHUP right after listening: strace is not installed"
fi
finish
