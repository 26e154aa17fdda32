#!/usr/bin/env bash
# KiB of terminator memory per idle established connection, measured as bench/run.sh's
# idle_kib() does, for mtls server --park on, mtls server --park off and HAProxy (from
# Debian, configured as run.sh configures it): a fresh terminator, one worker pinned to CPU 0,
# one warm-up connection, then IDLE connections of a fleet (loadgen idle --fleet: every
# connection a client certificate of its own, a full handshake, one round trip with the
# answer and the session ticket read, then idle), and the growth of the terminator's RSS
# (its process tree) divided by the connections held. RSS is read WAIT seconds after the
# fleet is held: a connection parks after a whole quiet sweep interval (1 s), so within ~2 s
# of going idle. The RSS is also sampled every second from `held` on (the trace), since it
# moves after `held` (bench/results/2026-12-02-issue11-before-after.md, "Surprising" 1).
# mtls runs with --metrics, to report how many connections were parked when RSS was read.
# Not a CI test.
#
#   bench/idle_memory.sh [BUILD_DIR]          IDLE=9000 WAIT=3 TERMINATORS="mtls_park mtls_nopark haproxy"
#
# 9,000 connections need 18,000 descriptors in the terminator (two per connection) and
# 9,000 in the loadgen; the descriptor limit is raised to the hard limit, and IDLE refused
# if it does not fit.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$top/build}
IDLE=${IDLE:-9000}
WAIT=${WAIT:-3}
TERMINATORS=${TERMINATORS:-"mtls_park mtls_nopark haproxy"}
SUITE=TLS_AES_128_GCM_SHA256
# shellcheck source=bench/common.sh
. "$top/bench/common.sh"
bench_setup "$bin" mtls loadgen echod
case " $TERMINATORS " in
*" haproxy "*) command -v haproxy >/dev/null || {
	echo "bench: haproxy not found (Debian: apt-get install haproxy)" >&2
	exit 1
} ;;
esac
[ "$WAIT" -ge 3 ] || {
	echo "bench: WAIT=$WAIT: at least 3 s, so that every connection has had time to park" >&2
	exit 1
}

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
FDLIMIT=$(ulimit -n)
[ $((IDLE * 2 + 200)) -le "$FDLIMIT" ] || {
	echo "bench: IDLE=$IDLE needs $((IDLE * 2 + 200)) descriptors; the limit is $FDLIMIT" >&2
	exit 1
}

bench_certs
CA=$ca/root.pem
cat "$tmp/srv-chain.pem" "$tmp/srv.key" >"$tmp/srv-combined.pem"
chmod 644 "$tmp"/*.pem "$tmp"/*.key "$CA" "$ca/intermediate.pem" "$ca/intermediate.key"
chmod 755 "$tmp" "$ca"
FLEET=(--fleet --cert "$ca/intermediate.pem" --key "$ca/intermediate.key" --ca "$CA" --name bench.test)

taskset -c 1 "$bin/echod" >"$tmp/echod.log" &
pids+=($!)
bench_wait "$tmp/echod.log" listening || true
ECHO=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$tmp/echod.log")

# a port below the ephemeral range and free in every TCP state (as run.sh's free_port)
free_port() {
	local p low
	low=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
	for _ in $(seq 50); do
		p=$((10000 + RANDOM % (low - 10000)))
		ss -Htan "sport = :$p" | grep -c . >/dev/null || {
			echo "$p"
			return
		}
	done
	echo "bench: no free port" >&2
	exit 1
}

# start_NAME PORT: pinned to CPU 0; sets TPID (the process whose tree is measured), METRICS
start_mtls() { # PORT on|off
	METRICS=$(free_port)
	taskset -c 0 "$bin/mtls" server --listen "127.0.0.1:$1" --target "127.0.0.1:$ECHO" \
		--cert "$tmp/srv-chain.pem" --key "$tmp/srv.key" --ca "$CA" --insecure-key-permissions \
		--allow-uri 'spiffe://bench.test/*' --workers 1 --log-level error \
		--max-connections 0 --handshake-timeout 2m --idle-timeout 0 --park "$2" \
		--metrics "127.0.0.1:$METRICS" 2>"$tmp/mtls-$2.log" &
	TPID=$!
}
start_mtls_park() { start_mtls "$1" on; }
start_mtls_nopark() { start_mtls "$1" off; }

start_haproxy() { # as bench/run.sh's haproxy_head and start_haproxy
	METRICS=
	cat >"$tmp/haproxy.cfg" <<EOF
global
	nbthread 1
	maxconn $(((FDLIMIT - 100) / 2))
	tune.ssl.default-dh-param 2048
defaults
	mode tcp
	timeout connect 5s
	timeout client 120s
	timeout server 120s
frontend fe
	bind 127.0.0.1:$1 ssl crt $tmp/srv-combined.pem ca-file $CA verify required ssl-min-ver TLSv1.3 ciphersuites $SUITE
	default_backend be
backend be
	server echo 127.0.0.1:$ECHO
EOF
	taskset -c 0 haproxy -f "$tmp/haproxy.cfg" -db >"$tmp/haproxy.log" 2>&1 &
	TPID=$!
}

tree() {
	local p=$1 c
	echo "$p"
	for c in $(pgrep -P "$p" 2>/dev/null); do tree "$c"; done
}
tree_rss() {
	local sum=0 p
	for p in $(tree "$1"); do
		[ -r "/proc/$p/status" ] && sum=$((sum + $(awk '/VmRSS/ {print $2}' "/proc/$p/status")))
	done
	echo "$sum"
}
stop_tree() {
	local p
	for p in $(tree "$1"); do kill "$p" 2>/dev/null || true; done
	wait "$1" 2>/dev/null || true
}
parked() { # the mtls gauge, or - for a terminator without one
	[ -n "$METRICS" ] || {
		echo -
		return
	}
	curl -s --max-time 5 "http://127.0.0.1:$METRICS/metrics" |
		awk '!f && ($1 == "mtls_connections_parked" || $1 ~ /^mtls_connections_parked\{/) {
			print $NF; f = 1 } END { if (!f) print "?" }'
}

declare -A KIB HELD PARKED BEFORE AFTER TRACE
measure() {
	local name=$1 port tpid ip before after held trace="" i
	port=$(free_port)
	"start_$name" "$port"
	tpid=$TPID
	pids+=("$tpid")
	for _ in $(seq 300); do ss -Htln "sport = :$port" | grep -c . >/dev/null && break; sleep 0.1; done
	taskset -c 1 "$bin/loadgen" idle --connect "127.0.0.1:$port" "${FLEET[@]}" --connections 1 \
		--seconds 0.1 >/dev/null 2>&1 || true # warm up: first-use allocations are not per connection
	sleep 0.5
	before=$(tree_rss "$tpid")
	taskset -c 1 "$bin/loadgen" idle --connect "127.0.0.1:$port" "${FLEET[@]}" \
		--connections "$IDLE" --seconds $((WAIT + 4)) >"$tmp/idle-$name.out" 2>&1 &
	ip=$!
	for _ in $(seq 1500); do grep -q '^held' "$tmp/idle-$name.out" 2>/dev/null && break; sleep 0.1; done
	for i in $(seq 0 $((WAIT + 2))); do
		trace+="${trace:+ }$(tree_rss "$tpid")"
		if [ "$i" = "$WAIT" ]; then
			after=$(tree_rss "$tpid")
			PARKED[$name]=$(parked)
		fi
		sleep 1
	done
	wait "$ip" || true
	held=$(sed -n 's/^held //p' "$tmp/idle-$name.out")
	HELD[$name]=${held:-0}
	BEFORE[$name]=$before
	AFTER[$name]=$after
	TRACE[$name]=$trace
	KIB[$name]=$([ "${held:-0}" -gt 0 ] && printf '%.1f' "$(echo "($after - $before) / $held" | bc -l)" || echo nan)
	stop_tree "$tpid"
	sleep 1
}

for t in $TERMINATORS; do
	measure "$t"
done

label() {
	case $1 in
	mtls_park) echo "mtls server --park on" ;;
	mtls_nopark) echo "mtls server --park off" ;;
	haproxy) echo "HAProxy $(haproxy -v 2>/dev/null | awk 'NR == 1 { print $3 }')" ;;
	*) echo "$1" ;;
	esac
}
echo "IDLE=$IDLE WAIT=${WAIT}s fleet, one worker on CPU 0, loadgen and echod on CPU 1; $(uptime | sed 's/.*load/load/')"
echo
echo "| terminator | KiB per idle connection | held | parked at the reading | RSS before -> after (KiB) | RSS each second from held (KiB) |"
echo "|---|---|---|---|---|---|"
for t in $TERMINATORS; do
	printf '| %s | **%s** | %s | %s | %s -> %s | %s |\n' "$(label "$t")" "${KIB[$t]}" "${HELD[$t]}" \
		"${PARKED[$t]}" "${BEFORE[$t]}" "${AFTER[$t]}" "${TRACE[$t]}"
done
echo
# ratio A B: A's figure over B's
ratio() {
	[ -n "${KIB[$1]:-}" ] && [ -n "${KIB[$2]:-}" ] && [ "${KIB[$1]}" != nan ] && [ "${KIB[$2]}" != nan ] ||
		return 0
	awk -v a="${KIB[$1]}" -v b="${KIB[$2]}" -v na="$(label "$1")" -v nb="$(label "$2")" \
		'BEGIN { if (b + 0 != 0) printf "- %s / %s: %.2f\n", na, nb, a / b }'
}
ratio mtls_park mtls_nopark
ratio mtls_park haproxy
ratio mtls_nopark haproxy
