#!/usr/bin/env bash
# What the heap trim after many connections closed (asked by tunnel/worker.c, done by the
# main thread in tunnel/daemon.c at most every 10 s) costs the
# data path: mtls server --workers 2, a one-connection latency probe through it (tunnelpeer
# probe, 64-byte round trips, 1 s windows, from the moment all are held) while BURST established mTLS connections (loadgen
# idle) open, are held 3 s and close (the next 1 s sweep trims). Prints the probe's p99 and
# longest gap per window and, with a small LD_PRELOAD shim built here, the duration of each
# malloc_trim call. Not a CI test.
#
#   bench/trim_stall.sh [BUILD_DIR]      BURST=8000 SERVER_ARGS="..." TRIM_SKIP=1 (the shim
#                                        skips the calls: the same without trimming)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$top/build}
burst=${BURST:-8000}
# shellcheck source=bench/common.sh
. "$top/bench/common.sh"
bench_setup "$bin" mtls tunnelpeer loadgen echod
ulimit -n $((burst * 2 + 1000))

cat >"$tmp/trimtime.c" <<'C'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int malloc_trim(size_t pad)
{
	static int (*real)(size_t);
	struct timespec a, b;
	int r;

	if (getenv("TRIM_SKIP") != NULL) {
		fprintf(stderr, "malloc_trim skipped\n");
		return 0;
	}
	if (real == NULL)
		real = (int (*)(size_t))dlsym(RTLD_NEXT, "malloc_trim");
	clock_gettime(CLOCK_MONOTONIC, &a);
	r = real(pad);
	clock_gettime(CLOCK_MONOTONIC, &b);
	fprintf(stderr, "malloc_trim %.2f ms\n",
		(double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6);
	return r;
}
C
cc -shared -fPIC -O2 -o "$tmp/trimtime.so" "$tmp/trimtime.c" -ldl

bench_certs
TLS=(--cert "$tmp/cli-chain.pem" --key "$tmp/cli.key" --ca "$ca/root.pem" --name bench.test)

bench_target echod "$bin/echod"

LD_PRELOAD=$tmp/trimtime.so "$bin/mtls" server --listen 127.0.0.1:0 \
	--target "127.0.0.1:$target_port" --cert "$tmp/srv-chain.pem" --key "$tmp/srv.key" \
	--ca "$ca/root.pem" --allow-uri 'spiffe://bench.test/*' --workers 2 --log-format json \
	--log-level warn --max-connections $((burst + 100)) ${SERVER_ARGS:-} >"$tmp/server.log" 2>&1 &
server=$!
pids+=("$server")
port=$(bench_port "$server")

"$bin/loadgen" idle --connect "127.0.0.1:$port" --connections "$burst" --seconds 3 "${TLS[@]}" \
	>"$tmp/burst.log" 2>&1 &
lg=$!
pids+=("$lg")
for _ in $(seq 1200); do grep -q held "$tmp/burst.log" 2>/dev/null && break; sleep 0.1; done
# the probe from the moment all are held: they close 3 s in, the sweep trims within 1 s
"$bin/tunnelpeer" probe --connect "127.0.0.1:$port" "${TLS[@]}" --seconds 6 --windows 6 \
	>"$tmp/probe.log" 2>&1 || true
wait "$lg" || true
echo "burst: $(head -n 1 "$tmp/burst.log")"
grep -h '^malloc_trim' "$tmp/server.log" | tr '\n' ' '
echo
tr ' ' '\n' <"$tmp/probe.log" | grep -E '^(round_trips|max_gap_ms)=' | tr '\n' ' '
echo
for w in $(seq 1 6); do
	printf 'w%d p99 %s ms  ' "$w" "$(tr ' ' '\n' <"$tmp/probe.log" | sed -n "s/^w${w}_p99_ms=//p")"
done
echo
