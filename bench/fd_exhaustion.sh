#!/usr/bin/env bash
# Out of descriptors at accept(): mtls server (2 workers) whose descriptor limit drops to 64
# under it, and 200 TCP clients that send nothing. Reports the server's CPU (% of one core)
# and accept_failed log lines per second over SECONDS, then whether a real mTLS client gets
# through once the idle clients are gone. Not a CI test (tests/integration/test_tunnel_fds.sh
# checks the same with wide margins).
#
#   bench/fd_exhaustion.sh [BUILD_DIR] [SECONDS]      (default build, 5)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$top/build}
secs=${2:-5}
# shellcheck source=bench/common.sh
. "$top/bench/common.sh"
bench_setup "$bin" mtls tunnelpeer backend

bench_certs

bench_target backend "$bin/backend"

"$bin/mtls" server --listen 127.0.0.1:0 --target "127.0.0.1:$target_port" \
	--cert "$tmp/srv-chain.pem" --key "$tmp/srv.key" --ca "$ca/root.pem" \
	--allow-uri 'spiffe://bench.test/*' --workers 2 --log-format json >"$tmp/server.log" 2>&1 &
server=$!
pids+=("$server")
bench_wait "$tmp/server.log" '"event":"listening"' || true
port=$(sed -n 's/.*"event":"listening".*"address":"[^"]*:\([0-9]*\)".*/\1/p' "$tmp/server.log" | head -1)
[ -n "$port" ] || { cat "$tmp/server.log"; echo "bench: server did not start" >&2; exit 1; }

cpu() { awk '{ print $14 + $15 }' "/proc/$server/stat"; }
lines() { grep -c '"event":"accept_failed"' "$tmp/server.log" || true; }
hz=$(getconf CLK_TCK)

prlimit --pid "$server" --nofile=64:
"$bin/tunnelpeer" idle --connect "127.0.0.1:$port" --connections 200 --seconds 600 >"$tmp/idle.log" &
idle=$!
pids+=("$idle")
bench_wait "$tmp/idle.log" held || true
sleep 0.5
c0=$(cpu) l0=$(lines) b0=$(stat -c %s "$tmp/server.log")
sleep "$secs"
c1=$(cpu) l1=$(lines) b1=$(stat -c %s "$tmp/server.log")
awk -v c=$((c1 - c0)) -v hz="$hz" -v s="$secs" -v l=$((l1 - l0)) -v b=$((b1 - b0)) 'BEGIN {
	printf "out of descriptors for %d s: server_cpu=%.0f%% (of one core) accept_failed_lines_per_s=%.0f log_bytes_per_s=%.0f\n",
		s, c / hz / s * 100, l / s, b / s }'

kill "$idle"
prlimit --pid "$server" --nofile=1024:
t0=$(date +%s.%N)
for _ in $(seq 40); do
	out=$("$bin/tunnelpeer" probe --seconds 0.5 --windows 1 --connect "127.0.0.1:$port" \
		--cert "$tmp/cli-chain.pem" --key "$tmp/cli.key" --ca "$ca/root.pem" --name bench.test 2>&1 || true)
	case $out in *"round_trips=0 "* | "" | *tunnelpeer:*) sleep 0.25 ;; *) break ;; esac
done
echo "descriptors free again: a client got through after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s: $out"
