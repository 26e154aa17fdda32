#!/usr/bin/env bash
# Instructions the server spends per handshake, counted by callgrind: repeatable on a busy
# machine, where bench/tunnel.sh's rates swing. Runs mtls server (one worker) under
# valgrind, warms it up, then zeroes the counters before each measured loadgen run.
# Not part of the test suite.
#
#   bench/callgrind.sh [BUILD_DIR] [SECONDS]      (default build, 8)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "${1:-$top/build}" && pwd)
secs=${2:-8}
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null ||
	{ echo "bench: valgrind (callgrind_control) is needed" >&2; exit 1; }
tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
cd "$tmp"
"$bin/mtls" ca init --dir ca --key p256 >/dev/null
"$bin/mtls" ca issue --dir ca --profile server --dns bench.test --ip 127.0.0.1 --out srv >/dev/null
"$bin/mtls" ca issue --dir ca --profile client --uri spiffe://bench.test/client --out cli >/dev/null
"$bin/echod" >echod.log &
pids+=($!)
sleep 0.3
eport=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' echod.log)
valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out" "$bin/mtls" server \
	--listen 127.0.0.1:0 --target "127.0.0.1:$eport" --cert srv-chain.pem --key srv.key \
	--ca ca/root.pem --allow-uri 'spiffe://bench.test/*' --workers 1 2>srv.log &
server=$!
pids+=("$server")
for _ in $(seq 150); do grep -q '"listening"' srv.log 2>/dev/null && break; sleep 0.2; done
port=$(grep -o '"address":"127.0.0.1:[0-9]*"' srv.log | tail -n 1 | sed 's/.*://; s/"//')
[ -n "$port" ] || { cat srv.log; echo "bench: server did not start" >&2; exit 1; }
tls=(--cert cli-chain.pem --key cli.key --ca ca/root.pem --name bench.test --connect "127.0.0.1:$port")
"$bin/loadgen" handshakes "${tls[@]}" --seconds 2 >/dev/null # warm-up: caches, first-use costs
for mode in "resumed:--resume" "full (certificate seen before):"; do
	label=${mode%%:*}
	callgrind_control -z "$server" >/dev/null 2>&1
	# shellcheck disable=SC2086 # the flag is empty or one word
	out=$("$bin/loadgen" handshakes "${tls[@]}" ${mode#*:} --seconds "$secs")
	ok=$(grep -o 'ok=[0-9]*' <<<"$out" | cut -d= -f2)
	callgrind_control -d "$server" >/dev/null 2>&1
	sleep 1
	ir=$(grep -h -m1 '^totals:' "$(ls -t "$tmp"/cg.out* | head -n 1)" | awk '{print $2}')
	printf '%-32s handshakes=%s instructions_per_handshake=%s\n' "$label" "$ok" $((ir / ok))
done
