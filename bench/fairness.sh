#!/usr/bin/env bash
# Fairness of one worker: mtls server --workers 1 in front of an echo backend, a bulk
# upload through it for UPLOAD seconds, and 0.5 s later a one-connection latency probe (64-byte
# ping-pong) through the same server for UPLOAD-1 seconds, cut into 3 windows. The issue's bar:
# the probe's p99 under 20 ms in each window. Also the upload's throughput alone and under the
# probe. The server is pinned to CPU 0, the clients and the backend to CPU 1. The backend is
# tests/tools/backend (a process per connection): echod serves one ready connection until it
# runs dry, so it would starve the probe itself behind the upload's echo. Not a CI test
# (tests/integration/test_tunnel_fairness.sh checks the same with wide margins).
#
#   bench/fairness.sh [BUILD_DIR] [ROUNDS]      (default build, 3)
#   UPLOAD=4 (seconds) P99_LIMIT_MS=20
#
# Prints one line per round and "windows_over_limit=K of N" at the end; exits 1 if K > 0.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$top/build}
rounds=${2:-3}
upload=${UPLOAD:-4}
limit=${P99_LIMIT_MS:-20}
# shellcheck source=bench/common.sh
. "$top/bench/common.sh"
bench_setup "$bin" mtls tunnelpeer backend

bench_certs

bench_target backend taskset -c 1 "$bin/backend"

taskset -c 0 "$bin/mtls" server --listen 127.0.0.1:0 --target "127.0.0.1:$target_port" \
	--cert "$tmp/srv-chain.pem" --key "$tmp/srv.key" --ca "$ca/root.pem" \
	--allow-uri 'spiffe://bench.test/*' --workers 1 --log-format json 2>"$tmp/server.log" &
pids+=($!)
bench_wait "$tmp/server.log" '"event":"listening"' || true
port=$(sed -n 's/.*"event":"listening".*"address":"[^"]*:\([0-9]*\)".*/\1/p' "$tmp/server.log" | head -1)
[ -n "$port" ] || { cat "$tmp/server.log"; echo "bench: server did not start" >&2; exit 1; }

peer() { taskset -c 1 "$bin/tunnelpeer" "$@" --connect "127.0.0.1:$port" --cert "$tmp/cli-chain.pem" \
	--key "$tmp/cli.key" --ca "$ca/root.pem" --name bench.test; }
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

# the server's CPU per GB moved: steadier than MB/s on a shared machine
server=${pids[1]}
cpu() { awk '{ print $14 + $15 }' "/proc/$server/stat"; }
c0=$(cpu)
alone=$(peer upload --seconds "$upload")
c1=$(cpu)
echo "upload alone: $alone server_cpu_s_per_gb=$(awk -v c=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" \
	-v b="$(field sent " $alone")" 'BEGIN { printf "%.2f", c / hz / (b / 1e9) }')"
over=0 windows=0
for r in $(seq "$rounds"); do
	peer upload --seconds "$upload" >"$tmp/upload.out" &
	up=$!
	sleep 0.5
	probe=$(peer probe --seconds "$((upload - 1))" --windows 3)
	wait "$up"
	line="round $r: $probe upload_mb_per_s=$(field mb_per_s " $(cat "$tmp/upload.out")")"
	for w in 1 2 3; do
		p99=$(field "w${w}_p99_ms" "$probe")
		n=$(field "w${w}_n" "$probe")
		windows=$((windows + 1))
		# a window without a single round trip is over the limit too
		if [ "${n:-0}" -eq 0 ] || awk -v p="$p99" -v l="$limit" 'BEGIN { exit !(p >= l) }'; then
			over=$((over + 1))
		fi
	done
	echo "$line"
done
echo "windows_over_limit=$over of $windows (p99 >= $limit ms or no round trip)"
[ "$over" -eq 0 ]
