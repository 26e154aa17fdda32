#!/usr/bin/env bash
# A short benchmark of mtls server alone: full and resumed handshakes/s, latency with 1 and
# 32 persistent connections, bulk throughput, and memory per idle connection. The server
# runs one worker pinned to CPU 0; the load generator and the echo backend share CPU 1.
# Every run is bounded (--seconds). Not part of the test suite.
#
#   bench/tunnel.sh [BUILD_DIR] [SECONDS]      (default build, 5)
#   IDLE_CONNECTIONS=9000 IDLE_CLIENTS=one bench/tunnel.sh
#
# Idle memory is what a fleet costs: every connection a client with a certificate of its own
# (the loadgen makes them, --fleet), a full handshake, one request and its answer read along
# with the session ticket, then idle. IDLE_CLIENTS=one: every connection with the same
# certificate (which the server's verification cache answers, keeping less).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$top/build}
secs=${2:-5}
idle=${IDLE_CONNECTIONS:-2000}
tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
for t in mtls loadgen echod; do
	[ -x "$bin/$t" ] || { echo "bench: $bin/$t missing; build first" >&2; exit 1; }
done

ca=$tmp/ca
"$bin/mtls" ca init --dir "$ca" --key p256 >/dev/null
"$bin/mtls" ca issue --dir "$ca" --profile server --dns bench.test --ip 127.0.0.1 --out "$tmp/srv" >/dev/null
"$bin/mtls" ca issue --dir "$ca" --profile client --uri spiffe://bench.test/client --out "$tmp/cli" >/dev/null

taskset -c 1 "$bin/echod" >"$tmp/echod.log" &
pids+=($!)
sleep 0.2
echo_port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$tmp/echod.log")

taskset -c 0 "$bin/mtls" server --listen 127.0.0.1:0 --target "127.0.0.1:$echo_port" \
	--cert "$tmp/srv-chain.pem" --key "$tmp/srv.key" --ca "$ca/root.pem" \
	--allow-uri 'spiffe://bench.test/*' --workers 1 --log-level warn \
	--max-connections $((($(ulimit -n) - 100) / 2)) --handshake-timeout 1m 2>"$tmp/server.log" &
server_pid=$!
pids+=("$server_pid")
for _ in $(seq 50); do grep -q listening "$tmp/server.log" 2>/dev/null && break; sleep 0.1; done
# --log-level warn hides the listening line: find the port from the socket table instead
port=$(ss -Hltnp 2>/dev/null | grep "pid=$server_pid," | awk '{print $4}' | sed 's/.*://' | head -1 || true)
[ -n "$port" ] || { cat "$tmp/server.log"; echo "bench: server did not start" >&2; exit 1; }

tls=(--cert "$tmp/cli-chain.pem" --key "$tmp/cli.key" --ca "$ca/root.pem" --name bench.test)
cpu() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }
sys() { awk '{print $15}' "/proc/$server_pid/stat"; }
hz=$(getconf CLK_TCK)

run() { # label, loadgen args...
	local label=$1 before after sys_before sys_after
	shift
	before=$(cpu)
	sys_before=$(sys)
	out=$(taskset -c 1 "$bin/loadgen" "$@" --seconds "$secs")
	after=$(cpu)
	sys_after=$(sys)
	# kernel_share: the part of the server's CPU spent in system calls and the network stack
	printf '%-22s %s server_cpu=%.2f kernel_share=%.2f\n' "$label" "$out" \
		"$(echo "($after - $before) / $hz / $secs" | bc -l)" \
		"$(echo "($sys_after - $sys_before) / ($after - $before + 0.0001)" | bc -l)"
}

# memory first, while the server is fresh (after thousands of handshakes, new connections
# would reuse freed heap and the figure would flatter us)
rss() { awk '/VmRSS/ {print $2}' "/proc/$server_pid/status"; }
idle_tls=(--fleet --cert "$ca/intermediate.pem" --key "$ca/intermediate.key" --ca "$ca/root.pem" --name bench.test)
[ "${IDLE_CLIENTS:-fleet}" = one ] && idle_tls=("${tls[@]}")
taskset -c 1 "$bin/loadgen" idle --connect "127.0.0.1:$port" "${idle_tls[@]}" --connections 1 \
	--seconds 0.1 >/dev/null # warm up: first-use allocations are not per connection
sleep 0.5
before=$(rss)
taskset -c 1 "$bin/loadgen" idle --connect "127.0.0.1:$port" "${idle_tls[@]}" \
	--connections "$idle" --seconds 3 >"$tmp/idle.out" &
idle_pid=$!
for _ in $(seq 1500); do grep -q '^held' "$tmp/idle.out" 2>/dev/null && break; sleep 0.1; done
sleep 0.5
after=$(rss)
wait "$idle_pid" || true
held=$(sed -n 's/^held //p' "$tmp/idle.out")
printf '%-22s clients=%s held=%s rss_before_kib=%s rss_after_kib=%s kib_per_connection=%.1f\n' \
	"idle connections" "${IDLE_CLIENTS:-fleet}" "$held" "$before" "$after" "$(echo "($after - $before) / $held" | bc -l)"

echo "mtls server, 1 worker on CPU 0; loadgen + echod on CPU 1; ${secs}s per run"
run "plaintext direct" latency --connect "127.0.0.1:$echo_port" --plain --connections 1
run "full handshakes" handshakes --connect "127.0.0.1:$port" "${tls[@]}"
run "resumed handshakes" handshakes --connect "127.0.0.1:$port" "${tls[@]}" --resume
run "latency 1 conn" latency --connect "127.0.0.1:$port" "${tls[@]}" --connections 1
run "latency 32 conns" latency --connect "127.0.0.1:$port" "${tls[@]}" --connections 32
run "bulk" bulk --connect "127.0.0.1:$port" "${tls[@]}"

