#!/usr/bin/env bash
# Memory of mtls server (2 workers) that clients leave behind:
#   pending: PENDING TCP connections that send nothing (not even a ClientHello), RSS growth
#            divided by their number (before the TLS state waited for the first byte: 43-46 KiB);
#   burst:   BURST established mTLS connections (loadgen idle: handshake + one round trip),
#            held 3 s then closed; RSS at the peak and 3 s after they closed (the workers'
#            1 s sweep gives freed memory back to the system once many are gone).
# Not a CI test.
#
#   bench/pending_memory.sh [BUILD_DIR]      PENDING=2000 BURST=3000 SERVER_ARGS="..."
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$top/build}
pending=${PENDING:-2000}
burst=${BURST:-3000}
# shellcheck source=bench/common.sh
. "$top/bench/common.sh"
bench_setup "$bin" mtls tunnelpeer loadgen echod

bench_certs

bench_target echod "$bin/echod"

"$bin/mtls" server --listen 127.0.0.1:0 --target "127.0.0.1:$target_port" \
	--cert "$tmp/srv-chain.pem" --key "$tmp/srv.key" --ca "$ca/root.pem" \
	--allow-uri 'spiffe://bench.test/*' --workers 2 --log-format json --log-level warn \
	--max-connections 9000 --handshake-timeout 30s ${SERVER_ARGS:-} >"$tmp/server.log" 2>&1 &
server=$!
pids+=("$server")
port=$(bench_port "$server")
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$server/status"; }
sleep 0.5

# pending
r0=$(rss)
"$bin/tunnelpeer" idle --connect "127.0.0.1:$port" --connections "$pending" --seconds 600 >"$tmp/idle.log" &
idle=$!
pids+=("$idle")
for _ in $(seq 100); do grep -q held "$tmp/idle.log" 2>/dev/null && break; sleep 0.1; done
sleep 2
r1=$(rss)
echo "pending: $pending silent connections: RSS $r0 -> $r1 KiB, $(((r1 - r0) * 1024 / pending)) B per connection"
kill "$idle"
sleep 2

# burst
r2=$(rss)
"$bin/loadgen" idle --connect "127.0.0.1:$port" --connections "$burst" --seconds 3 \
	--cert "$tmp/cli-chain.pem" --key "$tmp/cli.key" --ca "$ca/root.pem" --name bench.test \
	>"$tmp/burst.log" 2>&1 &
lg=$!
pids+=("$lg")
for _ in $(seq 600); do grep -q held "$tmp/burst.log" 2>/dev/null && break; sleep 0.1; done
r3=$(rss)
wait "$lg" || true
sleep 3
r4=$(rss)
echo "burst: $(head -c 200 "$tmp/burst.log" | head -n 1); RSS before $r2 KiB, held $r3 KiB, 3 s after they closed $r4 KiB"
