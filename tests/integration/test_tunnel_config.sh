#!/usr/bin/env bash
# mtls server and mtls connector refuse what they cannot honour, before serving: each bad
# invocation exits 2 with one line naming the option and what to give; --max-connections is
# fitted to the descriptor limit (the default lowered with a warning, an explicit number that
# does not fit refused), and a --metrics address anyone may reach is warned about.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

command -v prlimit >/dev/null || _lib_die "prlimit (util-linux) not found in PATH"
command -v curl >/dev/null || _lib_die "curl not found in PATH"

C=$CERTS
SRV=(--listen 127.0.0.1:0 --target 127.0.0.1:9 --cert "$C/server-chain.pem"
	--key "$C/server.key" --ca "$C/ca.pem" --allow-any-identity)
CON=(--listen 127.0.0.1:0 --server 127.0.0.1:9 --server-name server.test
	--cert "$C/client-chain.pem" --key "$C/client.key" --ca "$C/ca.pem")

echo "# 1. bad invocations: exit 2, one line naming the option"

# bad NAME ROLE EXPECT ARGS... : mtls ROLE (valid base options) ARGS must exit 2 with one
# line on stderr containing EXPECT, and nothing on stdout.
bad() {
	local name=$1 role=$2 expect=$3 p=()
	shift 3
	local base=("${SRV[@]}")
	[ "$role" = server ] || base=("${CON[@]}")
	LAST_CMD="mtls $role ... $*"
	run "$MTLS" "$role" "${base[@]}" "$@"
	[ "$RC" = 2 ] || p+=("exit status $RC, expected 2")
	[[ $ERR == *"$expect"* ]] || p+=("stderr does not say: $expect")
	[ "$(count_lines "$ERR" "")" = 1 ] || p+=("stderr is not one line")
	[[ $ERR != *'"event"'* ]] || p+=("a log line was written: the daemon started")
	report "$name" "${p[@]+"${p[@]}"}"
}

bad "port 2^32+10000 does not wrap to 10000" server "--listen: '127.0.0.1:4294977296': the port must be a number from 0 to 65535" \
	--listen 127.0.0.1:4294977296
bad "port 65536" server "the port must be a number from 0 to 65535" --listen 127.0.0.1:65536
bad "no host: the form is asked for, not a port" server "--listen: ':8443': give HOST:PORT" \
	--listen :8443
bad "a port with leading zeros past 65535" server "the port must be a number from 0 to 65535" \
	--target 127.0.0.1:0065536
bad "target port 99999 (names --target)" server "--target: '127.0.0.1:99999'" --target 127.0.0.1:99999
bad "target port 0" server "--target 127.0.0.1:0: port 0 cannot be connected to" --target 127.0.0.1:0
bad "connector --server port 0" connector "--server 127.0.0.1:0: port 0" --server 127.0.0.1:0
bad "metrics port 70000 (names --metrics)" server "--metrics: '127.0.0.1:70000'" --metrics 127.0.0.1:70000
bad "handshake timeout past 100 years" server "--handshake-timeout: '9223372036854775807ms' is out of range" \
	--handshake-timeout 9223372036854775807ms
bad "handshake timeout 0" server "--handshake-timeout 0 is out of range" --handshake-timeout 0
bad "connect timeout 1 hour" server "--connect-timeout 1h is out of range: give 1ms to 5m" \
	--connect-timeout 1h
bad "idle timeout 8 days" server "--idle-timeout 8d is out of range: give 0 to 7d" \
	--idle-timeout 8d
bad "drain timeout 2 hours" connector "--drain-timeout 2h is out of range: give 0 to 1h" \
	--drain-timeout 2h
bad "watch interval 1 ms" server "--watch-interval 1ms is out of range" --watch-interval 1ms
bad "watch interval 99 ms" server "--watch-interval 99ms is out of range" --watch-interval 99ms
bad "max-connections -1 names --max-connections" server "--max-connections -1 is out of range: give 0..1000000" \
	--max-connections -1
bad "workers 0 names --workers" server "--workers 0 is out of range: give 1..256" --workers 0
bad "workers 257" connector "--workers 257 is out of range" --workers 257
bad "verify cache past 2^20 names --verify-cache" server "--verify-cache 2000000 is out of range" \
	--verify-cache 2000000
bad "session cache -1 names --session-cache" server "--session-cache -1 is out of range" \
	--session-cache -1
bad "crl grace -5s names --crl-grace" server "--crl-grace: '-5s' is not a duration" --crl-grace -5s
bad "number past 2^63" server "--handshake-timeout: '99999999999999999999s' is out of range" \
	--handshake-timeout 99999999999999999999s
bad "trailing garbage" server "--workers takes a whole number, not '2x'" --workers 2x
bad "a leading plus" server "--workers takes a whole number, not '+2'" --workers +2
bad "a leading blank" server "--idle-timeout: ' 5s' is not a duration" --idle-timeout " 5s"
printf 'workers 9999999999999999999\n' >"$TMP/bad.conf"
bad "config file: number past 2^63 names the file and key" server "bad.conf:1: workers 9999999999999999999 is out of range" \
	--config "$TMP/bad.conf"
bad "max-connections past the descriptor limit" server "--max-connections 1000000 needs about" \
	--max-connections 1000000

# leading zeros are still the port (0009 is 9): taken, as by getaddrinfo
start_tunnel_server "$TMP/srv-zeros.log" --target 127.0.0.1:0000009 --cert "$C/server-chain.pem" \
	--key "$C/server.key" --ca "$C/ca.pem" --allow-any-identity --drain-timeout 100ms
p=()
[ "$(log_count "$TMP/srv-zeros.log" listening '"target":"127.0.0.1:0000009"')" = 1 ] ||
	p+=("the server did not start with --target 127.0.0.1:0000009")
stop_bg "$SRV_PID"
verdict "--target 127.0.0.1:0000009 (leading zeros) is port 9" "${p[@]+"${p[@]}"}" -- \
	"$(cat -- "$TMP/srv-zeros.log")"

echo "# 2. --max-connections against the descriptor limit (prlimit --nofile=256:256)"

LAST_CMD="prlimit --nofile=256:256 mtls server --max-connections 5000"
run prlimit --nofile=256:256 "$MTLS" server "${SRV[@]}" --max-connections 5000
p=()
[ "$RC" = 2 ] || p+=("exit status $RC, expected 2")
for w in "--max-connections 5000" "limit (RLIMIT_NOFILE) is 256" "ulimit -n" "LimitNOFILE=" \
	"--max-connections 1"; do
	[[ $ERR == *"$w"* ]] || p+=("the refusal does not say: $w")
done
[ "$(count_lines "$ERR" "")" = 1 ] || p+=("stderr is not one line")
report "an explicit --max-connections that cannot fit 256 descriptors is refused, saying what to do" \
	"${p[@]+"${p[@]}"}"

# The default (10000) under 256 descriptors: lowered, with a warning giving the numbers; the
# limit then holds: connections past it are refused by the daemon (counted), not by accept()
# failing for want of a descriptor.
start_backend "$TMP/be.log" --mode echo
start_bg "$TMP/srv-default.log" prlimit --nofile=256:256 "$MTLS" server --listen 127.0.0.1:0 \
	--target "127.0.0.1:$BE_PORT" --cert "$C/server-chain.pem" --key "$C/server.key" \
	--ca "$C/ca.pem" --allow-any-identity --workers 2 --metrics 127.0.0.1:0 \
	--handshake-timeout 20s --drain-timeout 100ms
SRV_PID=$BG_PID
wait_for_line "$TMP/srv-default.log" '"event":"listening"' "$READY_LIMIT" "$SRV_PID" || {
	cat -- "$TMP/srv-default.log" >&2
	_lib_die "the server did not start under prlimit"
}
SRV_PORT=$(_daemon_port "$TMP/srv-default.log" listening)
SRV_METRICS=$(_daemon_port "$TMP/srv-default.log" metrics_listening)
warn=$(grep -F '"event":"max_connections_lowered"' "$TMP/srv-default.log" || true)
eff=$(sed -n 's/.*"event":"max_connections_lowered".*"max_connections":\([0-9]*\).*/\1/p' "$TMP/srv-default.log")
p=()
[[ $warn == *'"level":"warn"'* ]] || p+=("no max_connections_lowered warning")
[[ $warn == *'"requested":10000'* && $warn == *'"fd_limit":256'* ]] ||
	p+=("the warning does not give the numbers (requested 10000, fd_limit 256)")
if [ -z "$eff" ] || [ "$eff" -lt 1 ] || [ $((2 * eff)) -ge 256 ]; then
	p+=("effective max_connections '${eff}' does not fit 256 descriptors at 2 each")
fi
verdict "default --max-connections lowered to ${eff:-?} under 256 descriptors, with a warning" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$TMP/srv-default.log")"

# 200 idle connections to the metrics port first: the metrics server takes at most its
# share of the descriptors (an eighth of the limit, reserved by the lowering above), so the
# tunnel's connections still find theirs. It closes idle ones after 3 s: all is done before.
mfds=()
for _ in $(seq 1 200); do
	exec {fd}<>"/dev/tcp/127.0.0.1/$SRV_METRICS" || break
	mfds+=("$fd")
done
sleep 0.3
# eff + 20 silent TCP connections (they never send a byte, so the handshake waits)
fds=()
for _ in $(seq 1 $((eff + 20))); do
	exec {fd}<>"/dev/tcp/127.0.0.1/$SRV_PORT" || break
	fds+=("$fd")
done
for fd in "${mfds[@]}"; do
	exec {fd}>&-
done
refused=""
for _ in $(seq 1 100); do
	refused=$(metric "$SRV_METRICS" 'mtls_connections_refused_total{reason="max_connections"}')
	[ "${refused:-0}" -ge 20 ] && break
	sleep 0.1
done
p=()
[ "${refused:-0}" -ge 20 ] || p+=("$((eff + 20)) connections against a limit of $eff: ${refused:-0} refused for max_connections, expected 20 or more")
kill -0 "$SRV_PID" 2>/dev/null || p+=("the server died")
for fd in "${fds[@]}"; do
	exec {fd}>&-
done
# the absence of accept_failed read once the server has stopped: a failed accept() is logged by
# the log thread, maybe after the refusals were counted
stop_bg "$SRV_PID"
[ "$(log_count "$TMP/srv-default.log" accept_failed)" = 0 ] ||
	p+=("accept() failed (descriptors ran out before the limit)")
verdict "the lowered limit holds with idle metrics clients: past $eff connections the daemon refuses (${refused:-0}), accept() never fails" \
	"${p[@]+"${p[@]}"}" -- "$(grep -vF '"event":"conn_refused"' "$TMP/srv-default.log" | tail -n 20)"

# --max-connections 0 ("no limit") is bounded by the descriptors as well
LAST_CMD="prlimit --nofile=256:256 mtls connector --max-connections 0"
start_bg "$TMP/con-zero.log" prlimit --nofile=256:256 "$MTLS" connector "${CON[@]}" \
	--max-connections 0 --workers 1 --drain-timeout 100ms
CON_PID=$BG_PID
p=()
wait_for_line "$TMP/con-zero.log" '"event":"listening"' "$READY_LIMIT" "$CON_PID" ||
	p+=("the connector did not start")
eff0=$(sed -n 's/.*"event":"max_connections_lowered".*"max_connections":\([0-9]*\).*/\1/p' "$TMP/con-zero.log")
if [ -z "$eff0" ] || [ "$eff0" -lt 1 ] || [ $((2 * eff0)) -ge 256 ]; then
	p+=("--max-connections 0 became '${eff0}', not a limit that fits 256 descriptors")
fi
[ "$(log_count "$TMP/con-zero.log" max_connections_lowered '"requested":0')" = 1 ] ||
	p+=("no max_connections_lowered line for --max-connections 0")
stop_bg "$CON_PID"
verdict "--max-connections 0 is bounded by the descriptor limit (${eff0:-?} under 256)" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$TMP/con-zero.log")"

# Four workers accepting at once share one limit: a slot is taken before the check, so two
# workers cannot both see room for the last one. strace slows every getsockname (made for each
# accepted connection) so that all four are between accept and the count together; 40 silent
# clients against --max-connections 5 must leave exactly 5 open and 35 refused.
if command -v strace >/dev/null; then
	start_bg "$TMP/srv-race.log" env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
		strace -f -qq -o /dev/null -e trace=getsockname \
		-e inject=getsockname:delay_enter=100000 \
		"$MTLS" server "${SRV[@]}" --workers 4 --metrics 127.0.0.1:0 --max-connections 5 \
		--handshake-timeout 30s --drain-timeout 100ms
	SRV_PID=$BG_PID
	wait_for_line "$TMP/srv-race.log" '"event":"listening"' "$READY_LIMIT" "$SRV_PID" || {
		cat -- "$TMP/srv-race.log" >&2
		_lib_die "the strace-slowed server did not start"
	}
	SRV_PORT=$(_daemon_port "$TMP/srv-race.log" listening)
	SRV_METRICS=$(_daemon_port "$TMP/srv-race.log" metrics_listening)
	holders=()
	for _ in 1 2 3 4 5 6 7 8; do
		(
			for _ in 1 2 3 4 5; do
				exec {fd}<>"/dev/tcp/127.0.0.1/$SRV_PORT" || true
			done
			sleep 6
		) &
		holders+=("$!")
	done
	open="" refused=""
	for _ in $(seq 1 100); do
		open=$(metric "$SRV_METRICS" 'mtls_connections_open{role="server"}')
		refused=$(metric "$SRV_METRICS" 'mtls_connections_refused_total{reason="max_connections"}')
		[ $((${open:-0} + ${refused:-0})) -ge 40 ] && break
		sleep 0.1
	done
	p=()
	[ "${open:-0}" -le 5 ] || p+=("${open} connections open against --max-connections 5")
	[ "${refused:-0}" = 35 ] || p+=("${refused:-0} of 40 refused, expected 35")
	kill "${holders[@]}" 2>/dev/null || true
	wait "${holders[@]}" 2>/dev/null || true
	stop_bg "$SRV_PID"
	verdict "four workers accepting at once never pass --max-connections (open ${open:-?}, refused ${refused:-?})" \
		"${p[@]+"${p[@]}"}" -- "$(grep -vF '"event":"conn_refused"' "$TMP/srv-race.log" | tail -n 20)"
else
	echo "skip  four workers accepting at once: strace is not installed"
fi

echo "# 3. --metrics on an address others can reach: a warning"

start_tunnel_server "$TMP/srv-metrics.log" --target 127.0.0.1:9 --cert "$C/server-chain.pem" \
	--key "$C/server.key" --ca "$C/ca.pem" --allow-any-identity --metrics 0.0.0.0:0 \
	--drain-timeout 100ms
l=$(grep -F '"event":"metrics_unauthenticated"' "$TMP/srv-metrics.log" || true)
p=()
[[ $l == *'"level":"warn"'* && $l == *"0.0.0.0:0"* && $l == *"without authentication"* ]] ||
	p+=("no metrics_unauthenticated warning naming the address")
stop_bg "$SRV_PID"
start_tunnel_server "$TMP/srv-metrics-lo.log" --target 127.0.0.1:9 --cert "$C/server-chain.pem" \
	--key "$C/server.key" --ca "$C/ca.pem" --allow-any-identity --metrics 127.0.0.1:0 \
	--drain-timeout 100ms
[ "$(log_count "$TMP/srv-metrics-lo.log" metrics_unauthenticated)" = 0 ] ||
	p+=("a loopback --metrics was warned about")
stop_bg "$SRV_PID"
verdict "--metrics 0.0.0.0 warns that /metrics and /healthz are unauthenticated; loopback does not" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$TMP/srv-metrics.log")"

finish
