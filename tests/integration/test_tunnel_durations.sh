#!/usr/bin/env bash
# The time options of mtls server, mtls connector and mtls verify take durations with a unit
# (500ms, 30s, 2m): a bare number (seconds or milliseconds?) is refused with one line saying
# what to write, on the command line and in a config file; a bare 0 is taken where 0 means
# off/none; the value given is the value used (a daemon logs it, or echoes it when out of range).
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

C=$CERTS
SRV=(--listen 127.0.0.1:0 --target 127.0.0.1:9 --cert "$C/server-chain.pem"
	--key "$C/server.key" --ca "$C/ca.pem" --allow-any-identity)
CON=(--listen 127.0.0.1:0 --server 127.0.0.1:9 --server-name server.test
	--cert "$C/client-chain.pem" --key "$C/client.key" --ca "$C/ca.pem")
BOTH=(handshake-timeout connect-timeout idle-timeout drain-timeout watch-interval crl-grace)

# refused NAME EXPECT CMD... : exit 2, one line on stderr containing EXPECT, nothing started.
refused() {
	local name=$1 expect=$2 p=()
	shift 2
	LAST_CMD="$*"
	run "$@"
	[ "$RC" = 2 ] || p+=("exit status $RC, expected 2")
	[[ $ERR == *"$expect"* ]] || p+=("stderr does not say: $expect")
	[ "$(count_lines "$ERR" "")" = 1 ] || p+=("stderr is not one line")
	[[ $ERR != *'"event"'* ]] || p+=("a log line was written: the daemon started")
	report "$name" "${p[@]+"${p[@]}"}"
}

echo "# 1. a bare number is refused with what to write"
for role in server connector; do
	base=("${SRV[@]}")
	opts=("${BOTH[@]}" plaintext-wait)
	[ "$role" = server ] || {
		base=("${CON[@]}")
		opts=("${BOTH[@]}")
	}
	for o in "${opts[@]}"; do
		refused "$role --$o 30" "--$o 30: give a unit: 30s or 30ms" \
			"$MTLS" "$role" "${base[@]}" "--$o" 30
		printf '# a config file\n%s 30\n' "$o" >"$TMP/$role-$o.conf"
		refused "$role config file: $o 30" "$role-$o.conf:2: $o 30: give a unit: 30s or 30ms" \
			"$MTLS" "$role" "${base[@]}" --config "$TMP/$role-$o.conf"
	done
done
refused "verify --crl-grace 3600" "--crl-grace 3600: give a unit: 3600s or 3600ms" \
	"$MTLS" verify --ca "$C/ca.pem" --crl-grace 3600 "$C/client-chain.pem"
refused "verify --crl-grace 1500ms: whole seconds" "--crl-grace 1500ms: give whole seconds" \
	"$MTLS" verify --ca "$C/ca.pem" --crl-grace 1500ms "$C/client-chain.pem"
refused "a unit alone" "--drain-timeout: 's' is not a duration" \
	"$MTLS" server "${SRV[@]}" --drain-timeout s

echo "# 2. a value with a unit is read in that unit (echoed back when out of range)"
# the bounds are 5m, 5m, 7d, 1h, 1h, 5m and 366d: one unit past each, written in
# different units; the message shows the value the daemon holds
refused "--handshake-timeout 301s is 301 seconds" "--handshake-timeout 301s is out of range: give 1ms to 5m" \
	"$MTLS" server "${SRV[@]}" --handshake-timeout 301s
refused "--connect-timeout 300001ms" "--connect-timeout 300001ms is out of range: give 1ms to 5m" \
	"$MTLS" connector "${CON[@]}" --connect-timeout 300001ms
refused "--idle-timeout 169h" "--idle-timeout 169h is out of range: give 0 to 7d" \
	"$MTLS" server "${SRV[@]}" --idle-timeout 169h
printf 'drain-timeout = 61m\n' >"$TMP/drain.conf"
refused "--drain-timeout 61m (config file)" "--drain-timeout 61m is out of range: give 0 to 1h" \
	"$MTLS" connector "${CON[@]}" --config "$TMP/drain.conf"
refused "--watch-interval 99ms is below 100ms" "--watch-interval 99ms is out of range" \
	"$MTLS" server "${SRV[@]}" --watch-interval 99ms
refused "--plaintext-wait 6m" "--plaintext-wait 6m is out of range: give 0 to 5m" \
	"$MTLS" server "${SRV[@]}" --plaintext-wait 6m
refused "--crl-grace 367d" "--crl-grace 367d is out of range: give 0 to 366d" \
	"$MTLS" server "${SRV[@]}" --crl-grace 367d
refused "--handshake-timeout 0 (0 is not a deadline)" "--handshake-timeout 0 is out of range" \
	"$MTLS" server "${SRV[@]}" --handshake-timeout 0

echo "# 3. accepted: units everywhere, a bare 0 where 0 is off; the drain timeout as given"
start_backend "$TMP/be.log" --mode echo
printf 'handshake-timeout 2s\nconnect-timeout 1500ms\nidle-timeout 2h\ndrain-timeout 30s\nwatch-interval 0\nplaintext-wait 0\ncrl-grace 1d\n' \
	>"$TMP/server.conf"
start_tunnel_server "$TMP/srv.log" --target "127.0.0.1:$BE_PORT" --cert "$C/server-chain.pem" \
	--key "$C/server.key" --ca "$C/ca.pem" --allow-any-identity --config "$TMP/server.conf"
stop_bg "$SRV_PID"
p=()
[ "$(log_count "$TMP/srv.log" draining '"timeout_ms":30000')" = 1 ] ||
	p+=("no draining line with timeout_ms 30000 (drain-timeout 30s)")
verdict "server: config file with units and bare 0s starts; drain-timeout 30s is 30000 ms" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$TMP/srv.log")"

start_tunnel_connector "$TMP/con.log" --server "127.0.0.1:$BE_PORT" --server-name server.test \
	--cert "$C/client-chain.pem" --key "$C/client.key" --ca "$C/ca.pem" \
	--handshake-timeout 500ms --connect-timeout 2s --idle-timeout 0 --drain-timeout 0 \
	--watch-interval 1m --crl-grace 0
stop_bg "$CON_PID"
p=()
[ "$(log_count "$TMP/con.log" draining '"timeout_ms":0')" = 1 ] ||
	p+=("no draining line with timeout_ms 0 (drain-timeout 0)")
verdict "connector: units and bare 0s on the command line start; drain-timeout 0 is 0" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$TMP/con.log")"

echo "# 4. --help shows DURATION, never MS"
for role in server connector; do
	LAST_CMD="mtls $role --help"
	run "$MTLS" "$role" --help
	p=()
	[ "$RC" = 0 ] || p+=("exit status $RC")
	[[ $OUT == *"--drain-timeout DURATION"* ]] || p+=("--drain-timeout DURATION not shown")
	[[ $OUT != *" MS "* && $OUT != *"after MS"* ]] || p+=("an option still takes MS")
	[[ $OUT == *"500ms, 30s"* ]] || p+=("the DURATION form is not explained")
	report "mtls $role --help: durations" "${p[@]+"${p[@]}"}"
done

finish
