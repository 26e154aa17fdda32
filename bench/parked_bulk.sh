#!/usr/bin/env bash
# Bulk through a parked connection: mtls server --workers 1 (CPU 0) before echod, one client
# connection (CPU 1) idle for 3 s, then MB MiB echoed; --park on (the connection parked: the
# records move through lib/record.c) and --park off (OpenSSL's record layer), alternated
# ROUNDS times. Prints one line per run: MB/s and the server's CPU seconds per GiB.
#
#   bench/parked_bulk.sh [BUILD_DIR] [ROUNDS]      (default build, 3); MB=400
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$top/build}
ROUNDS=${2:-3}
MB=${MB:-400}
tmp=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$tmp"' EXIT
bash "$top/tests/certs/gen-certs.sh" "$tmp/certs"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
EP=$(port)
taskset -c 1 "$bin/echod" --listen "127.0.0.1:$EP" >/dev/null &
pids+=($!)
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for _ in $(seq "$ROUNDS"); do
	for park in on off; do
		SP=$(port)
		taskset -c 0 "$bin/mtls" server --listen "127.0.0.1:$SP" --target "127.0.0.1:$EP" \
			--cert "$tmp/certs/server-chain.pem" --key "$tmp/certs/server.key" \
			--ca "$tmp/certs/ca.pem" --allow-any-identity --workers 1 --park "$park" \
			--log-level error &
		spid=$!
		for _ in $(seq 50); do ss -Htln "sport = :$SP" | grep -q . && break; sleep 0.1; done
		echo "park=$park $(taskset -c 1 python3 "$top/bench/parked_bulk.py" "$SP" "$spid" "$MB" 3 "$tmp/certs")"
		kill "$spid"
		wait "$spid" 2>/dev/null || true
	done
done
