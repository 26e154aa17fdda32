#!/usr/bin/env bash
# What a stalled log reader costs the tunnel (issue 11, item 2). mtls server logs JSON into a
# pipe read by `cat`; after 2 s the cat is stopped (a stuck journald or shipper) for STALL
# seconds, then resumed. One worker, so that the probe's connection and the new clients
# share it (with several, a worker that happens to log nothing does not block). Meanwhile:
#   - one established mTLS connection (opened before the stall) makes 64-byte round trips
#     through the server to an echo backend, as fast as it can: exchanges per second before,
#     during and after the stall;
#   - new clients (loadgen handshakes, 2 threads) connect during the stall: how many succeed.
# Not part of the test suite; prints one block of numbers.
#
#   bench/log_stall.sh [BUILD_DIR] [STALL_SECONDS]     (default build, 10; at least 3)
#   MTLS=/path/to/other/mtls bench/log_stall.sh ...    (compare another binary: before/after)
#   CONTROL=1 bench/log_stall.sh ...                   (the same load, the reader not stopped)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$top/build}
stall=${2:-10}
mtls=${MTLS:-$bin/mtls}
tmp=$(mktemp -d)
pids=()
reader=""
cleanup() {
	[ -z "$reader" ] || kill -CONT "$reader" 2>/dev/null || true
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
for t in loadgen echod; do
	[ -x "$bin/$t" ] || { echo "bench: $bin/$t missing; build first" >&2; exit 1; }
done
[ -x "$mtls" ] || { echo "bench: $mtls missing" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench: needs python3 (the probe)" >&2; exit 1; }

ca=$tmp/ca
"$bin/mtls" ca init --dir "$ca" --key p256 >/dev/null
"$bin/mtls" ca issue --dir "$ca" --profile server --dns bench.test --ip 127.0.0.1 --out "$tmp/srv" >/dev/null
"$bin/mtls" ca issue --dir "$ca" --profile client --uri spiffe://bench.test/client --out "$tmp/cli" >/dev/null

"$bin/echod" >"$tmp/echod.log" &
pids+=($!)
for _ in $(seq 50); do grep -q listening "$tmp/echod.log" 2>/dev/null && break; sleep 0.1; done
echo_port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$tmp/echod.log")

mkfifo "$tmp/log.fifo"
cat "$tmp/log.fifo" >"$tmp/server.log" &
reader=$!
pids+=("$reader")
"$mtls" server --listen 127.0.0.1:0 --target "127.0.0.1:$echo_port" \
	--cert "$tmp/srv-chain.pem" --key "$tmp/srv.key" --ca "$ca/root.pem" \
	--allow-uri 'spiffe://bench.test/*' --workers 1 --metrics 127.0.0.1:0 \
	2>"$tmp/log.fifo" &
pids+=($!)
for _ in $(seq 50); do grep -q '"event":"listening"' "$tmp/server.log" 2>/dev/null && break; sleep 0.1; done
port=$(sed -n 's/.*"event":"listening".*"address":"[^"]*:\([0-9]*\)".*/\1/p' "$tmp/server.log")
mport=$(sed -n 's/.*"event":"metrics_listening".*"address":"[^"]*:\([0-9]*\)".*/\1/p' "$tmp/server.log")
[ -n "$port" ] || { cat "$tmp/server.log"; echo "bench: server did not start" >&2; exit 1; }

# the probe: one connection, round trips for 2 + stall + 3 seconds, a count per second (a
# round trip waits as long as it takes: a stalled server shows as seconds with 0)
cat >"$tmp/probe.py" <<'EOF'
import socket, ssl, sys, time
port, cert, key, ca, secs = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_cert_chain(cert, key)
ctx.load_verify_locations(ca)
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="bench.test")
s.settimeout(0.2)
msg = b"x" * 64
counts = [0] * secs
t0 = time.monotonic()
def left():
    return time.monotonic() - t0 < secs
while left():
    s.sendall(msg)
    got = 0
    while got < 64 and left():
        try:
            b = s.recv(64 - got)
        except socket.timeout:
            continue
        if not b:
            raise SystemExit("closed")
        got += len(b)
    if got == 64 and left():
        counts[int(time.monotonic() - t0)] += 1
print(" ".join(str(c) for c in counts))
EOF
total=$((2 + stall + 3))
python3 "$tmp/probe.py" "$port" "$tmp/cli-chain.pem" "$tmp/cli.key" "$ca/root.pem" "$total" \
	>"$tmp/probe.out" 2>&1 &
probe=$!
pids+=("$probe")
sleep 2
[ "${CONTROL:-0}" = 1 ] || kill -STOP "$reader"
(timeout -k 1 $((stall + 5)) "$bin/loadgen" handshakes --connect "127.0.0.1:$port" \
	--cert "$tmp/cli-chain.pem" --key "$tmp/cli.key" --ca "$ca/root.pem" --name bench.test \
	--threads 2 --seconds "$stall" >"$tmp/lg.out" 2>&1 ||
	echo "loadgen hung (killed after $((stall + 5)) s)" >>"$tmp/lg.out") &
lgpid=$!
sleep "$stall"
dropped=$(curl -s --max-time 1 "http://127.0.0.1:$mport/metrics" 2>/dev/null |
	awk '/^mtls_log_lines_dropped_total\{reason="full"\}/ { print $NF }' || true)
healthz=$(curl -s --max-time 1 -w ' %{http_code}' "http://127.0.0.1:$mport/healthz" 2>/dev/null || true)
healthz=${healthz//$'\n'/ }
kill -CONT "$reader"
wait "$lgpid" || true
lg=$(cat "$tmp/lg.out")
wait "$probe" || true
read -r -a c <"$tmp/probe.out" || true
sum() { local s=0 i; for ((i = $1; i < $2 && i < ${#c[@]}; i++)); do s=$((s + c[i])); done; echo "$s"; }
echo "binary: $mtls"
echo "probe (exchanges per second): ${c[*]:-none}"
# the stall's first and last second are left out: the probe started a little after this
# script's clock, and the pipe takes a moment to fill
printf 'established connection: before %s/s, inside the %d s stall %s/s (min %s/s), after %s/s\n' \
	"$(($(sum 0 2) / 2))" "$stall" "$(($(sum 3 $((1 + stall))) / (stall - 2)))" \
	"$(printf '%s\n' "${c[@]:3:$((stall - 2))}" | sort -n | head -n 1)" \
	"$(($(sum $((2 + stall)) "$total") / 3))"
ok=$(sed -n 's/.* ok=\([0-9]*\) .*/\1/p' <<<"$lg")
failed=$(sed -n 's/.* failed=\([0-9]*\) .*/\1/p' <<<"$lg")
took=$(sed -n 's/.* seconds=\([0-9.]*\) .*/\1/p' <<<"$lg")
if [ -n "$ok" ]; then
	# a loadgen that took longer than the stall had handshakes stuck until the reader came back
	printf 'new clients during the stall: %s ok, %s failed, %.0f/s; loadgen took %s s for a %d s run\n' \
		"$ok" "$failed" "$(echo "$ok / $stall" | bc -l)" "$took" "$stall"
else
	echo "new clients during the stall: $lg"
fi
echo "dropped log lines during the stall: ${dropped:-n/a}; /healthz during the stall: ${healthz:-no answer}"
