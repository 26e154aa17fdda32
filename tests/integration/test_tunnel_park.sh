#!/usr/bin/env bash
# Parked connections (mtls_park): a TLS 1.3 connection quiet for a whole sweep interval (1 s)
# is handed to libmtls's own record layer and its SSL object freed. Real processes only: mtls
# server and mtls connector, openssl s_client (KeyUpdate both ways, close_notify, EOF without
# it, the three AEAD suites), stunnel as client and as server, and a plaintext application
# (bash's /dev/tcp). Checked for each: the daemons' gauge mtls_connections_parked (and the
# counter mtls_connections_parked_total), the traffic after parking, and the close.
#
#  1. s_client -> server: echo, idle until parked, echo through the parked record layer;
#     KeyUpdate(update_requested) answered by one of ours, KeyUpdate(not requested) not
#     answered, both followed by echoes; close_notify: the same conn_close as unparked. EOF
#     without close_notify: the same conn_close as unparked (truncated).
#  2. connector -> server: both hops parked, then 1 MiB each way, and 8 MiB with the reader
#     a second late (partial writes), checksums equal.
#  3. --park off on both daemons: nothing parked, traffic fine. park off -> on in a --config
#     file and SIGHUP: the idle connection parks.
#  4. TLS 1.2, and TLS 1.3 after a KeyUpdate OpenSSL processed: not parked, traffic fine
#     after the idle time.
#  5. stunnel as client of a parked server and as server of a parked connector.
#  6. SIGHUP while connections are parked: they stay parked and working.
#  7. parked clients revoked by a CRL reload (a connector's, a resumed s_client's): closed,
#     another kept; a parked connector closes its connection to a revoked server.
#  8. each of the three AEAD suites, and padded records, park and carry traffic.
#     A parked connection closed at --max-connection-lifetime: close_notify read by s_client.
#  9. a record with a flipped bit: bad_record_mac to the peer, why=malformed. Records that
#     arrive a byte at a time.
#
# Every certificate is made at test time by our own CA (mtls ca).
set -euo pipefail
BG_LIMIT=${BG_LIMIT:-150} # the backend and the first server live through the whole script
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

command -v curl >/dev/null || _lib_die "curl not found in PATH"
command -v python3 >/dev/null || _lib_die "python3 not found in PATH"
STUNNEL=$(command -v stunnel4 || command -v stunnel || true)
[ -n "$STUNNEL" ] || _lib_die "stunnel (Debian: stunnel4) not found in PATH"

# A connection parks after a whole quiet sweep interval (1 s), so within ~2 s of going idle;
# we wait up to PARK_LIMIT for that (a loaded machine) and IDLE seconds where nothing must park.
PARK_LIMIT=${PARK_LIMIT:-8}
IDLE=${IDLE:-3}
GAUGE=mtls_connections_parked
COUNTER=mtls_connections_parked_total

# ------------------------------------------------------------------------------------------
# Certificates: our own CA, a server, clients a, b (the recheck pair) and s (s_client, stunnel)

D=$TMP/ca
W=$TMP/w
mkdir -p "$W"
ca() {
	run "$MTLS" ca "$@"
	[ "$RC" = 0 ] || _lib_die "mtls ca $*: exit $RC: $ERR"
}
ca init --dir "$D"
ca issue --dir "$D" --profile server --dns localhost --ip 127.0.0.1 --out "$W/S"
for n in a b s; do
	ca issue --dir "$D" --profile client --uri "spiffe://park.test/$n" --out "$W/$n"
done
ROOT=$D/root.pem
COMMON=(--workers 1 --drain-timeout 1s --metrics 127.0.0.1:0 --watch-interval 0)
SRV_TLS=(--cert "$W/S-chain.pem" --key "$W/S.key" --ca "$ROOT" --crl "$D/crl.pem"
	--allow-uri 'spiffe://park.test/*' "${COMMON[@]}")
# con_tls NAME: a connector's TLS options with client certificate NAME
con_tls() {
	CON_TLS=(--server-name localhost --cert "$W/$1-chain.pem" --key "$W/$1.key" --ca "$ROOT"
		"${COMMON[@]}")
}
SC_CLIENT=(-cert "$W/s.pem" -cert_chain "$D/intermediate.pem" -key "$W/s.key" -CAfile "$ROOT"
	-verify_return_error -servername localhost -verify_hostname localhost)

# ------------------------------------------------------------------------------------------
# Helpers

count() {
	local n
	n=$(grep -cE -- "$2" "$1" 2>/dev/null || true)
	echo "${n:-0}"
}

# wait_count FILE ERE N SECONDS : until at least N lines of FILE match ERE
wait_count() {
	local i=$(($4 * 20))
	while [ "$(count "$1" "$2")" -lt "$3" ]; do
		[ "$i" -gt 0 ] || return 1
		sleep 0.05
		i=$((i - 1))
	done
}

# family PORT NAME : the value of NAME, bare or with labels ({role="server"}), "" if absent
family() {
	curl -s --max-time 5 "http://127.0.0.1:$1/metrics" |
		awk -v n="$2" '!done && ($1 == n || index($1, n "{") == 1) { print $NF; done = 1 }' ||
		true
}

# gauge PORT : the daemon's mtls_connections_parked ("" if absent)
gauge() {
	family "$1" "$GAUGE"
}

# wait_gauge PORT VALUE SECONDS : until the gauge is VALUE; sets WAITED_MS
wait_gauge() {
	local t0 now
	t0=$(date +%s%N)
	while [ "$(gauge "$1")" != "$2" ]; do
		now=$(date +%s%N)
		[ $(((now - t0) / 1000000)) -lt $(($3 * 1000)) ] || return 1
		sleep 0.1
	done
	WAITED_MS=$((($(date +%s%N) - t0) / 1000000))
}

# idle_watch PORT... : wait IDLE seconds, then IDLE_GAUGE[PORT] is each daemon's gauge ("" if
# absent). Parking cannot be undone: a connection parked at any time in the wait is still
# counted at its end.
declare -A IDLE_GAUGE
idle_watch() {
	local p
	sleep "$IDLE"
	for p in "$@"; do IDLE_GAUGE[$p]=$(gauge "$p"); done
}

# open_conn FD PORT : a plaintext connection to a connector (or stunnel) on descriptor FD
open_conn() {
	eval "exec $1<>/dev/tcp/127.0.0.1/$2"
}

# ping FD WORD : WORD goes through and comes back (5 s); 0 or 1
ping() {
	local line=""
	# in a subshell: a write to a reset connection kills it with SIGPIPE, not this script
	(printf '%s\n' "$2" >&"$1") 2>/dev/null || return 1
	read -r -t 5 -u "$1" line 2>/dev/null || return 1
	[ "$line" = "$2" ]
}

# closed FD : the connection ends (EOF) within RUN_LIMIT seconds; 0 or 1
closed() {
	local line="" rc=0
	read -r -t "$RUN_LIMIT" -u "$1" line 2>/dev/null || rc=$?
	[ "$rc" = 1 ]
}

# wait_log FILE EVENT TEXT [N] : until FILE has N (1) EVENT lines with TEXT (RUN_LIMIT seconds)
wait_log() {
	local n=$((RUN_LIMIT * 10))
	while [ "$n" -gt 0 ]; do
		[ "$(log_count "$1" "$2" "$3")" -ge "${4:-1}" ] && return 0
		sleep 0.1
		n=$((n - 1))
	done
	return 1
}

# last_close FILE : the "why" of FILE's last conn_close line
last_close() {
	{ grep -F '"event":"conn_close"' "$1" || true; } | tail -n 1 |
		sed -n 's/.*"why":"\([^"]*\)".*/\1/p'
}

# close_line FILE CONN : FILE's conn_close line of connection id CONN (from its conn_open)
close_line() {
	{ grep -F '"event":"conn_close"' "$1" || true; } | grep -F "\"conn\":$2," | tail -n 1
}

# last_conn_id FILE : the connection id of FILE's last conn_open line
last_conn_id() {
	{ grep -F '"event":"conn_open"' "$1" || true; } | tail -n 1 |
		sed -n 's/.*"conn":\([0-9][0-9]*\).*/\1/p'
}

# sc_start LOG ARGS... : openssl s_client to SRV_PORT, stdin from a FIFO (SC_FD) that we
# write lines to: data, or the commands K, k, Q (-no_ign_eof: -quiet would ignore them).
# -msg: the TLS messages it sends and receives ("<<< ... KeyUpdate"). Sets SC_PID, SC_LOG.
sc_start() {
	SC_LOG=$1
	shift
	open_fifo "$SC_LOG.in"
	SC_FD=$FIFO_FD
	start_bg_stdin "$SC_LOG.in" "$SC_LOG" openssl s_client -connect "127.0.0.1:$SRV_PORT" \
		-quiet -no_ign_eof -msg "${SC_CLIENT[@]}" "$@"
	SC_PID=$BG_PID
}

# sc_line TEXT : send TEXT and wait for its echo (a line of its own in SC_LOG); 0 or 1
sc_line() {
	local n
	n=$(count "$SC_LOG" "^$1\$")
	printf '%s\n' "$1" >&"$SC_FD"
	wait_count "$SC_LOG" "^$1\$" $((n + 1)) 5
}

# peer_key_updates : KeyUpdate messages s_client received so far
peer_key_updates() {
	count "$SC_LOG" '^<<< TLS 1\.3, Handshake .*KeyUpdate'
}

# start_stunnel NAME CONFIG_LINES... : stunnel in the foreground with a [NAME] service
# accepting on 127.0.0.1:0. Sets ST_PID, ST_PORT, ST_LOG.
start_stunnel() {
	local name=$1 conf
	shift
	conf=$TMP/stunnel-$name.conf
	ST_LOG=$TMP/stunnel-$name.log
	{
		printf '%s\n' "foreground = yes" "pid =" "syslog = no" "debug = info" "[$name]" \
			"accept = 127.0.0.1:0"
		printf '%s\n' "$@"
	} >"$conf"
	start_bg "$ST_LOG" "$STUNNEL" "$conf"
	ST_PID=$BG_PID
	if ! wait_for_line "$ST_LOG" "Service \\[$name\\].* bound to 127\\.0\\.0\\.1:[0-9]+" \
		"$READY_LIMIT" "$ST_PID"; then
		echo "stunnel did not start with $conf:" >&2
		cat -- "$conf" "$ST_LOG" >&2
		exit 1
	fi
	ST_PORT=$(sed -n "/.*Service \\[$name\\].* bound to 127\\.0\\.0\\.1:\\([0-9][0-9]*\\).*/{s//\\1/p;q}" \
		"$ST_LOG")
}

T_START=$(date +%s)
# section TITLE : the case's title, and the seconds since the start
section() {
	echo "# $1 (at $(($(date +%s) - T_START)) s)"
}
start_backend "$TMP/be.log" --mode echo
BE=$BE_PORT

# ------------------------------------------------------------------------------------------
section "1. openssl s_client -> mtls server --workers 1: parked, KeyUpdate, close_notify"

start_tunnel_server "$TMP/srv1.log" --target "127.0.0.1:$BE" "${SRV_TLS[@]}"
SRV1_LOG=$TMP/srv1.log SRV1_PORT=$SRV_PORT SRV1_METRICS=$SRV_METRICS
SRV1_REAL=$SRV_REAL

# What a normal close looks like without parking: a line, then Q (close_notify) at once.
sc_start "$TMP/sc0.log"
p=()
sc_line unparked || p+=("no echo")
n=$(log_count "$SRV1_LOG" conn_close)
printf 'Q\n' >&"$SC_FD"
wait_exit "$SC_PID" "$RUN_LIMIT"
close_fifo "$SC_FD"
wait_log "$SRV1_LOG" conn_close "" $((n + 1)) || p+=("no conn_close")
UNPARKED_WHY=$(last_close "$SRV1_LOG")
[ "$(gauge "$SRV1_METRICS")" = 0 ] || p+=("gauge $(gauge "$SRV1_METRICS"), expected 0")
verdict "an unparked s_client connection closes with why=${UNPARKED_WHY:-?}" \
	"${p[@]+"${p[@]}"}" -- "s_client:" "$(cat -- "$TMP/sc0.log")" "server log:" \
	"$(tail -n 5 -- "$SRV1_LOG")"

sc_start "$TMP/sc1.log"
SC1_LOG=$SC_LOG
p=()
sc_line one || p+=("the first line was not echoed")
wait_log "$SRV1_LOG" conn_open '"identity":"spiffe://park.test/s"' 2 || true
SC1_CONN=$(last_conn_id "$SRV1_LOG")
if wait_gauge "$SRV1_METRICS" 1 "$PARK_LIMIT"; then
	echo "# parked ${WAITED_MS} ms after the first echo"
else
	p+=("$GAUGE is '$(gauge "$SRV1_METRICS")' ${PARK_LIMIT} s after the echo, expected 1")
fi
v=$(family "$SRV1_METRICS" "$COUNTER")
[ "$v" = 1 ] || p+=("$COUNTER is '$v', expected 1")
sc_line "two after parking" || p+=("no echo through the parked connection")
verdict "idle s_client connection parked (gauge 1) and echoes through the parked record layer" \
	"${p[@]+"${p[@]}"}" -- "s_client:" "$(grep -v '^    ' -- "$SC1_LOG" | tail -n 30)" \
	"server log:" "$(tail -n 5 -- "$SRV1_LOG")"

# K: s_client sends KeyUpdate(update_requested) before its next record; the server must
# answer with a KeyUpdate of its own before its next record (the echo), and s_client must
# read the echo with the server's new keys.
p=()
ku0=$(peer_key_updates)
[ "$ku0" = 0 ] || p+=("s_client received $ku0 KeyUpdate before asking for one")
printf 'K\n' >&"$SC_FD"
wait_count "$SC1_LOG" '^KEYUPDATE$' 1 5 || p+=("s_client did not take the K command")
sc_line "three after K" || p+=("no echo after KeyUpdate(update_requested)")
[ "$(peer_key_updates)" = 1 ] ||
	p+=("s_client received $(peer_key_updates) KeyUpdate from the server after K, expected 1")
sc_line "four" || p+=("no second echo after K")
verdict "parked: KeyUpdate(update_requested) from s_client answered, echoes go on" \
	"${p[@]+"${p[@]}"}" -- "s_client:" "$(grep -v '^    ' -- "$SC1_LOG" | tail -n 30)" \
	"server log:" "$(tail -n 5 -- "$SRV1_LOG")"

# k: KeyUpdate(update_not_requested): the server takes the new key and does not answer
p=()
printf 'k\n' >&"$SC_FD"
wait_count "$SC1_LOG" '^KEYUPDATE$' 2 5 || p+=("s_client did not take the k command")
sc_line "five after k" || p+=("no echo after KeyUpdate(update_not_requested)")
[ "$(peer_key_updates)" = 1 ] ||
	p+=("s_client received $(peer_key_updates) KeyUpdate in all, expected 1 (k asks for none)")
# and both again, back to back with data between
for w in K six k seven K eight; do
	case $w in
	K | k)
		printf '%s\n' "$w" >&"$SC_FD"
		;;
	*)
		sc_line "$w" || p+=("no echo of '$w' in the K/k sequence")
		;;
	esac
done
[ "$(peer_key_updates)" = 3 ] ||
	p+=("s_client received $(peer_key_updates) KeyUpdate in all, expected 3 (one per K)")
[ "$(gauge "$SRV1_METRICS")" = 1 ] || p+=("the gauge is '$(gauge "$SRV1_METRICS")', expected 1")
verdict "parked: KeyUpdate(update_not_requested) taken without an answer; K k K with echoes" \
	"${p[@]+"${p[@]}"}" -- "s_client:" "$(grep -v '^    ' -- "$SC1_LOG" | tail -n 40)" \
	"server log:" "$(tail -n 5 -- "$SRV1_LOG")"

# Q: close_notify. The bytes the backend got: the data lines, not the commands.
p=()
sent=$(printf '%s\n' one "two after parking" "three after K" four "five after k" six seven eight |
	wc -c)
printf 'Q\n' >&"$SC_FD"
wait_exit "$SC_PID" "$RUN_LIMIT"
close_fifo "$SC_FD"
[ "$EXIT_RC" = 0 ] || p+=("s_client exit status $EXIT_RC, expected 0")
wait_log "$SRV1_LOG" conn_close "\"conn\":$SC1_CONN," || p+=("no conn_close for conn $SC1_CONN")
line=$(close_line "$SRV1_LOG" "$SC1_CONN")
why=$(sed -n 's/.*"why":"\([^"]*\)".*/\1/p' <<<"$line")
[ -n "$why" ] && [ "$why" = "$UNPARKED_WHY" ] ||
	p+=("the parked connection closed with why '$why', an unparked one with '$UNPARKED_WHY'")
[ "$why" = closed ] || p+=("why '$why', expected closed")
[[ $line == *"\"bytes_to_target\":$sent,\"bytes_from_target\":$sent,"* ]] ||
	p+=("expected $sent bytes each way in: $line")
wait_gauge "$SRV1_METRICS" 0 5 || p+=("the gauge is '$(gauge "$SRV1_METRICS")' after the close, expected 0")
verdict "parked: s_client's close_notify ends it as an unparked close does (why=closed, bytes)" \
	"${p[@]+"${p[@]}"}" -- "s_client:" "$(grep -v '^    ' -- "$SC1_LOG" | tail -n 12)" \
	"server log:" "$(tail -n 5 -- "$SRV1_LOG")"

# EOF without close_notify: s_client killed, unparked and parked; the same why
# (truncated) for both.
p=()
whys=()
for parked in 0 1; do
	sc_start "$TMP/sc-kill-$parked.log"
	sc_line "to be cut $parked" || p+=("no echo (parked=$parked)")
	if [ "$parked" = 1 ]; then
		wait_gauge "$SRV1_METRICS" 1 "$PARK_LIMIT" || p+=("not parked: gauge '$(gauge "$SRV1_METRICS")'")
	fi
	n=$(log_count "$SRV1_LOG" conn_close)
	# s_client, not the timeout(1) around it: SIGKILL, so no close_notify is sent
	for pid in $(pgrep -P "$SC_PID" || true); do
		kill -KILL "$pid" 2>/dev/null || true
	done
	wait_exit "$SC_PID" 5 2>/dev/null # bash's "Killed" line
	close_fifo "$SC_FD"
	wait_log "$SRV1_LOG" conn_close "" $((n + 1)) || p+=("no conn_close (parked=$parked)")
	whys+=("$(last_close "$SRV1_LOG")")
done
[ "${whys[0]}" = "${whys[1]}" ] ||
	p+=("EOF without close_notify: why '${whys[1]}' parked, '${whys[0]}' unparked")
[ "${whys[1]}" = truncated ] || p+=("parked: why '${whys[1]}', expected truncated")
wait_gauge "$SRV1_METRICS" 0 5 || p+=("the gauge is '$(gauge "$SRV1_METRICS")' after the close, expected 0")
verdict "parked: EOF without close_notify ends it as unparked (why=${whys[1]:-?})" \
	"${p[@]+"${p[@]}"}" -- "server log:" "$(tail -n 6 -- "$SRV1_LOG")"

# ------------------------------------------------------------------------------------------
section "2. app -> mtls connector -> mtls server: both hops parked, 1 MiB each way"

start_tunnel_server "$TMP/srv2.log" --target "127.0.0.1:$BE" "${SRV_TLS[@]}"
SRV2_LOG=$TMP/srv2.log SRV2_METRICS=$SRV_METRICS SRV2_PID=$SRV_PID
con_tls a
start_tunnel_connector "$TMP/con2.log" --server "127.0.0.1:$SRV_PORT" "${CON_TLS[@]}"
CON2_LOG=$TMP/con2.log CON2_METRICS=$CON_METRICS CON2_PID=$CON_PID
BULK=$((1024 * 1024))
head -c "$BULK" /dev/urandom >"$TMP/bulk.in"
want_sum=$(sha256sum <"$TMP/bulk.in")
p=()
open_conn 5 "$CON_PORT"
ping 5 hop || p+=("no echo through the pair")
wait_gauge "$SRV2_METRICS" 1 "$PARK_LIMIT" || p+=("server gauge '$(gauge "$SRV2_METRICS")', expected 1")
wait_gauge "$CON2_METRICS" 1 "$PARK_LIMIT" || p+=("connector gauge '$(gauge "$CON2_METRICS")', expected 1")
# shellcheck disable=SC2016
run bash -c 'cat -- "$1" >&5 & head -c "$2" <&5 >"$3"; wait $!' bulk "$TMP/bulk.in" "$BULK" \
	"$TMP/bulk.out"
[ "$RC" = 0 ] || p+=("the 1 MiB exchange ended with status $RC: $ERR")
[ "$(sha256sum <"$TMP/bulk.out")" = "$want_sum" ] ||
	p+=("the echo differs: $(wc -c <"$TMP/bulk.out") bytes came back, sha256 differs")
# 8 MiB more, its reader a second late: the sockets fill, and both parked record layers meet
# a socket that takes only part of a record (a write answered after MTLS_WANT_POLLOUT)
BIG=$((8 * 1024 * 1024))
head -c "$BIG" /dev/urandom >"$TMP/big.in"
big_sum=$(sha256sum <"$TMP/big.in")
# shellcheck disable=SC2016
run bash -c 'cat -- "$1" >&5 & sleep 1; head -c "$2" <&5 >"$3"; wait $!' big "$TMP/big.in" \
	"$BIG" "$TMP/big.out"
[ "$RC" = 0 ] || p+=("the 8 MiB exchange ended with status $RC: $ERR")
[ "$(sha256sum <"$TMP/big.out")" = "$big_sum" ] ||
	p+=("the 8 MiB echo differs: $(wc -c <"$TMP/big.out") bytes came back, sha256 differs")
rm -f -- "$TMP/big.in" "$TMP/big.out"
ping 5 after-bulk || p+=("no echo after the bulk")
[ "$(gauge "$SRV2_METRICS")" = 1 ] || p+=("server gauge '$(gauge "$SRV2_METRICS")' after the bulk, expected 1")
[ "$(gauge "$CON2_METRICS")" = 1 ] || p+=("connector gauge '$(gauge "$CON2_METRICS")' after the bulk, expected 1")
verdict "connector -> server: both parked, then 1 MiB, and 8 MiB read late, each way byte-identical" "${p[@]+"${p[@]}"}" -- \
	"server log:" "$(tail -n 5 -- "$SRV2_LOG")" "connector log:" "$(tail -n 5 -- "$CON2_LOG")"

# the app closes: close_notify across the parked hop, both daemons close normally
p=()
exec 5>&-
total=$((4 + BULK + BIG + 11)) # hop, the bulks, after-bulk
for l in "$SRV2_LOG" "$CON2_LOG"; do
	wait_log "$l" conn_close "" || p+=("no conn_close in ${l##*/}")
	line=$({ grep -F '"event":"conn_close"' "$l" || true; } | tail -n 1)
	[[ $line == *"\"why\":\"closed\",\"bytes_to_target\":$total,\"bytes_from_target\":$total,"* ]] ||
		p+=("${l##*/}: not an orderly close with $total bytes each way: $line")
done
wait_gauge "$SRV2_METRICS" 0 5 || p+=("server gauge '$(gauge "$SRV2_METRICS")' after the close")
wait_gauge "$CON2_METRICS" 0 5 || p+=("connector gauge '$(gauge "$CON2_METRICS")' after the close")
verdict "connector -> server: the app's close ends both parked hops orderly (why=closed)" \
	"${p[@]+"${p[@]}"}" -- "server log:" "$(tail -n 3 -- "$SRV2_LOG")" "connector log:" \
	"$(tail -n 3 -- "$CON2_LOG")"
stop_bg "$CON2_PID"
stop_bg "$SRV2_PID"

# ------------------------------------------------------------------------------------------
section "3. --park off; 4. TLS 1.2, and TLS 1.3 after a KeyUpdate: not parked"

# Side by side, one idle time: a connector -> server pair with --park off; TLS 1.2 to the
# first server; a TLS 1.3 connection whose KeyUpdate OpenSSL processed (mtls_park() cannot
# follow its keys) to a server of its own.
start_tunnel_server "$TMP/srv3.log" --target "127.0.0.1:$BE" "${SRV_TLS[@]}" --park off
SRV3_METRICS=$SRV_METRICS SRV3_PID=$SRV_PID
con_tls a
start_tunnel_connector "$TMP/con3.log" --server "127.0.0.1:$SRV_PORT" "${CON_TLS[@]}" --park off
CON3_METRICS=$CON_METRICS CON3_PID=$CON_PID
p3=()
open_conn 5 "$CON_PORT"
ping 5 off1 || p3+=("no echo")

start_tunnel_server "$TMP/srv4.log" --target "127.0.0.1:$BE" "${SRV_TLS[@]}"
SRV4_METRICS=$SRV_METRICS SRV4_PID=$SRV_PID
sc_start "$TMP/sc-ku.log" -tls1_3
KU_LOG=$SC_LOG KU_FD=$SC_FD KU_PID=$SC_PID
pk=()
sc_line "before the key update" || pk+=("no echo")
printf 'K\n' >&"$SC_FD"
sc_line "after the key update" || pk+=("no echo after K")
[ "$(peer_key_updates)" = 1 ] || pk+=("$(peer_key_updates) KeyUpdate from the server, expected 1")

# a server whose --config file says park off, changed to on by a SIGHUP later
printf '%s\n' "target 127.0.0.1:$BE" "park off" >"$W/park.conf"
start_tunnel_server "$TMP/srv-cfg.log" --config "$W/park.conf" "${SRV_TLS[@]}"
CFG_METRICS=$SRV_METRICS CFG_PID=$SRV_PID CFG_REAL=$SRV_REAL
sc_start "$TMP/sc-cfg.log"
CFG_LOG=$SC_LOG CFG_FD=$SC_FD CFG_SC=$SC_PID
pc=()
sc_line "config says off" || pc+=("no echo")

SRV_PORT=$SRV1_PORT
sc_start "$TMP/sc12.log" -tls1_2
T12_LOG=$SC_LOG T12_FD=$SC_FD T12_PID=$SC_PID
p4=()
sc_line "over tls 1.2" || p4+=("no echo")

idle_watch "$SRV3_METRICS" "$CON3_METRICS" "$SRV4_METRICS" "$SRV1_METRICS" "$CFG_METRICS"

# park off -> on by SIGHUP: the connection idle all along parks at the next sweeps
[ "${IDLE_GAUGE[$CFG_METRICS]}" = 0 ] ||
	pc+=("park off in the config: the gauge is '${IDLE_GAUGE[$CFG_METRICS]}' after ${IDLE} s of idle, expected 0")
printf '%s\n' "target 127.0.0.1:$BE" "park on" >"$W/park.conf"
kill -HUP "$CFG_REAL"
wait_log "$TMP/srv-cfg.log" park_changed '"to":"on"' || pc+=("no park_changed line to on")
[ "$(log_count "$TMP/srv-cfg.log" restart_needed)" = 0 ] || pc+=("a restart_needed line")
wait_gauge "$CFG_METRICS" 1 "$PARK_LIMIT" ||
	pc+=("after park on and SIGHUP the gauge is '$(gauge "$CFG_METRICS")', expected 1")
SC_LOG=$CFG_LOG SC_FD=$CFG_FD
sc_line "config says on" || pc+=("no echo through the connection parked after the SIGHUP")
printf 'Q\n' >&"$SC_FD"
wait_exit "$CFG_SC" "$RUN_LIMIT"
close_fifo "$SC_FD"
verdict "park off -> on in the --config file, SIGHUP: park_changed, the idle connection parks" \
	"${pc[@]+"${pc[@]}"}" -- "server log:" "$(tail -n 5 -- "$TMP/srv-cfg.log")"
stop_bg "$CFG_PID"

# 3
ping 5 off2 || p3+=("no echo after the idle time")
for m in "$SRV3_METRICS" "$CON3_METRICS"; do
	[ "${IDLE_GAUGE[$m]}" = 0 ] || p3+=("the gauge on :$m is '${IDLE_GAUGE[$m]}' after ${IDLE} s of idle, expected 0")
	v=$(family "$m" "$COUNTER")
	[ "$v" = 0 ] || p3+=("$COUNTER on :$m is '$v', expected 0")
done
exec 5>&-
verdict "--park off: nothing parked after ${IDLE} s idle (gauges 0), traffic fine" \
	"${p3[@]+"${p3[@]}"}" -- "server log:" "$(tail -n 5 -- "$TMP/srv3.log")"
stop_bg "$CON3_PID"
stop_bg "$SRV3_PID"

# 4
SC_LOG=$T12_LOG SC_FD=$T12_FD SC_PID=$T12_PID
[ "${IDLE_GAUGE[$SRV1_METRICS]}" = 0 ] ||
	p4+=("the gauge is '${IDLE_GAUGE[$SRV1_METRICS]}' after ${IDLE} s of idle, expected 0")
sc_line "tls 1.2 after idle" || p4+=("no echo after the idle time")
printf 'Q\n' >&"$SC_FD"
wait_exit "$SC_PID" "$RUN_LIMIT"
close_fifo "$SC_FD"
wait_log "$SRV1_LOG" conn_open '"tls":"TLSv1.2"' || p4+=("the server logged no TLSv1.2 conn_open")
verdict "TLS 1.2 s_client: not parked after ${IDLE} s idle (gauge 0), traffic fine" \
	"${p4[@]+"${p4[@]}"}" -- "s_client:" "$(grep -v '^    ' -- "$TMP/sc12.log" | tail -n 12)" \
	"server log:" "$(tail -n 5 -- "$SRV1_LOG")"

SC_LOG=$KU_LOG SC_FD=$KU_FD SC_PID=$KU_PID
[ "${IDLE_GAUGE[$SRV4_METRICS]}" = 0 ] ||
	pk+=("the gauge is '${IDLE_GAUGE[$SRV4_METRICS]}' after ${IDLE} s of idle, expected 0")
sc_line "after the idle time" || pk+=("no echo after the idle time")
printf 'Q\n' >&"$SC_FD"
wait_exit "$SC_PID" "$RUN_LIMIT"
close_fifo "$SC_FD"
verdict "TLS 1.3 after a KeyUpdate OpenSSL processed: not parked (gauge 0), traffic fine" \
	"${pk[@]+"${pk[@]}"}" -- "s_client:" "$(grep -v '^    ' -- "$KU_LOG" | tail -n 12)" \
	"server log:" "$(tail -n 5 -- "$TMP/srv4.log")"
stop_bg "$SRV4_PID"

# ------------------------------------------------------------------------------------------
section "5. stunnel as client of a parked server, and as server of a parked connector"

# both set up first, to park in the same second
wait_gauge "$SRV1_METRICS" 0 5 || true
start_stunnel client "client = yes" "connect = 127.0.0.1:$SRV1_PORT" \
	"cert = $W/s-chain.pem" "key = $W/s.key" "CAfile = $ROOT" "verifyChain = yes" \
	"checkHost = localhost" "sslVersionMin = TLSv1.3"
ST_CLIENT_PID=$ST_PID ST_CLIENT_LOG=$ST_LOG
start_backend "$TMP/be-st.log" --mode echo
start_stunnel server "connect = 127.0.0.1:$BE_PORT" "cert = $W/S-chain.pem" "key = $W/S.key" \
	"CAfile = $ROOT" "verifyChain = yes" "requireCert = yes" "sslVersionMin = TLSv1.3"
ST_SERVER_PID=$ST_PID ST_SERVER_LOG=$ST_LOG
con_tls a
start_tunnel_connector "$TMP/con5.log" --server "127.0.0.1:$ST_PORT" "${CON_TLS[@]}"
CON5_METRICS=$CON_METRICS CON5_PID=$CON_PID
pc=()
open_conn 8 "$CON_PORT"
ping 8 "to stunnel" || pc+=("no echo from behind stunnel")
ps=()
open_conn 5 "$(sed -n "/.*Service \\[client\\].* bound to 127\\.0\\.0\\.1:\\([0-9][0-9]*\\).*/{s//\\1/p;q}" "$ST_CLIENT_LOG")"
ping 5 "through stunnel" || ps+=("no echo through stunnel")
wait_gauge "$SRV1_METRICS" 1 "$PARK_LIMIT" || ps+=("server gauge '$(gauge "$SRV1_METRICS")', expected 1")
wait_gauge "$CON5_METRICS" 1 "$PARK_LIMIT" || pc+=("connector gauge '$(gauge "$CON5_METRICS")', expected 1")

ping 5 "through stunnel, parked" || ps+=("no echo through the parked connection")
ping 5 "and again" || ps+=("no second echo through the parked connection")
n=$(log_count "$SRV1_LOG" conn_close)
exec 5>&-
wait_log "$SRV1_LOG" conn_close "" $((n + 1)) || ps+=("no conn_close")
[ "$(last_close "$SRV1_LOG")" = closed ] || ps+=("why '$(last_close "$SRV1_LOG")', expected closed")
verdict "stunnel client -> parked mtls server: echoes, orderly close" "${ps[@]+"${ps[@]}"}" -- \
	"stunnel log:" "$(tail -n 12 -- "$ST_CLIENT_LOG")" "server log:" "$(tail -n 5 -- "$SRV1_LOG")"
stop_bg "$ST_CLIENT_PID"

ping 8 "to stunnel, parked" || pc+=("no echo through the parked connection")
head -c 65536 /dev/urandom | base64 -w 0 >"$TMP/st-bulk.in"
printf '\n' >>"$TMP/st-bulk.in"
# shellcheck disable=SC2016
run bash -c 'cat -- "$1" >&8 & IFS= read -r -t 10 line <&8; printf "%s\n" "$line"; wait $!' \
	st "$TMP/st-bulk.in"
[ "$OUT" = "$(cat -- "$TMP/st-bulk.in")" ] || pc+=("a 87 KiB line did not come back intact (status $RC)")
exec 8>&-
wait_log "$TMP/con5.log" conn_close "" || pc+=("no conn_close in the connector's log")
[ "$(last_close "$TMP/con5.log")" = closed ] ||
	pc+=("connector why '$(last_close "$TMP/con5.log")', expected closed")
verdict "parked mtls connector -> stunnel server: echoes and an 87 KiB line, orderly close" \
	"${pc[@]+"${pc[@]}"}" -- "stunnel log:" "$(tail -n 12 -- "$ST_SERVER_LOG")" "connector log:" \
	"$(tail -n 5 -- "$TMP/con5.log")"
stop_bg "$CON5_PID"
stop_bg "$ST_SERVER_PID"

# ------------------------------------------------------------------------------------------
section "6. SIGHUP while connections are parked; 7. parked peers revoked"

# On the first server: connectors with clients a and b, and an s_client with client a on a
# resumed session (its peer certificate came from the session, not this handshake). A
# connector with --crl to a second server, whose certificate is revoked later.
ca issue --dir "$D" --profile server --dns localhost --ip 127.0.0.1 --out "$W/S2"
wait_gauge "$SRV1_METRICS" 0 5 || true
SRV_PORT=$SRV1_PORT
con_tls a
start_tunnel_connector "$TMP/con-a.log" --server "127.0.0.1:$SRV1_PORT" "${CON_TLS[@]}"
A_PORT=$CON_PORT A_PID=$CON_PID A_METRICS=$CON_METRICS
con_tls b
start_tunnel_connector "$TMP/con-b.log" --server "127.0.0.1:$SRV1_PORT" "${CON_TLS[@]}"
B_PORT=$CON_PORT B_PID=$CON_PID B_METRICS=$CON_METRICS
start_tunnel_server "$TMP/srv7.log" --target "127.0.0.1:$BE" --cert "$W/S2-chain.pem" \
	--key "$W/S2.key" --ca "$ROOT" --allow-uri 'spiffe://park.test/*' "${COMMON[@]}"
SRV7_PID=$SRV_PID
con_tls b
start_tunnel_connector "$TMP/con-c.log" --server "127.0.0.1:$SRV_PORT" "${CON_TLS[@]}" \
	--crl "$D/crl.pem"
C_PORT=$CON_PORT C_PID=$CON_PID C_METRICS=$CON_METRICS C_REAL=$CON_REAL
SRV_PORT=$SRV1_PORT
A_CLIENT=(-cert "$W/a.pem" -cert_chain "$D/intermediate.pem" -key "$W/a.key")
sc_start "$TMP/sc-sess.log" -sess_out "$TMP/a.sess" "${A_CLIENT[@]}"
sc_line "for a session" || true
printf 'Q\n' >&"$SC_FD"
wait_exit "$SC_PID" "$RUN_LIMIT"
close_fifo "$SC_FD"
sc_start "$TMP/sc-resumed.log" -sess_in "$TMP/a.sess" "${A_CLIENT[@]}"
RS_LOG=$SC_LOG RS_FD=$SC_FD RS_PID=$SC_PID
p=()
sc_line "resumed a" || p+=("resumed s_client: no echo")
wait_log "$SRV1_LOG" conn_open '"identity":"spiffe://park.test/a"' 2 || true
RS_CONN=$(last_conn_id "$SRV1_LOG")
RESUMED=0
{ grep -F '"event":"conn_open"' "$SRV1_LOG" || true; } | tail -n 1 | grep -qF '"resumed":1' &&
	RESUMED=1
[ "$RESUMED" = 1 ] || echo "# (the s_client's session was not resumed: a full handshake stands in)"
open_conn 5 "$A_PORT"
open_conn 6 "$B_PORT"
open_conn 7 "$C_PORT"
ping 5 a1 || p+=("client a: no echo")
ping 6 b1 || p+=("client b: no echo")
ping 7 c1 || p+=("connector c: no echo")
wait_gauge "$SRV1_METRICS" 3 "$PARK_LIMIT" || p+=("server gauge '$(gauge "$SRV1_METRICS")', expected 3")
for m in "$A_METRICS" "$B_METRICS" "$C_METRICS"; do
	wait_gauge "$m" 1 "$PARK_LIMIT" || p+=("connector gauge '$(gauge "$m")' on :$m, expected 1")
done
reloads=$(log_count "$SRV1_LOG" reload SIGHUP)
closes=$(log_count "$SRV1_LOG" conn_close)
kill -HUP "$SRV1_REAL"
wait_log "$SRV1_LOG" reload SIGHUP $((reloads + 1)) || p+=("no reload after SIGHUP")
ping 5 a2 || p+=("client a's parked connection broke on the reload")
ping 6 b2 || p+=("client b's parked connection broke on the reload")
sc_line "resumed a after the reload" || p+=("the resumed s_client's parked connection broke on the reload")
[ "$(log_count "$SRV1_LOG" conn_close)" = "$closes" ] || p+=("a connection was closed at the reload")
v=$(gauge "$SRV1_METRICS")
[ "$v" = 3 ] || p+=("server gauge '$v' after the reload, expected 3")
verdict "SIGHUP reload: parked connections stay up and working" "${p[@]+"${p[@]}"}" -- \
	"server log:" "$(tail -n 8 -- "$SRV1_LOG")"

p=()
ca revoke --dir "$D" --cert "$W/a.pem" --reason keyCompromise
kill -HUP "$SRV1_REAL"
closed 5 || p+=("client a's parked connection stayed open after its revocation and a reload")
wait_log "$SRV1_LOG" conn_close revoked_while_connected 2 ||
	p+=("not 2 conn_close lines with why revoked_while_connected")
close_line "$SRV1_LOG" "$RS_CONN" | grep -qF '"why":"revoked_while_connected"' ||
	p+=("the s_client's (resumed=$RESUMED) parked connection was not closed as revoked: $(close_line "$SRV1_LOG" "$RS_CONN")")
wait_exit "$RS_PID" 5
close_fifo "$RS_FD"
[ "$(log_count "$SRV1_LOG" conn_rejudged '"reason":"revoked"')" = 2 ] ||
	p+=("not 2 conn_rejudged lines with reason revoked")
v=$(metric "$SRV1_METRICS" 'mtls_connections_closed_by_recheck_total{reason="revoked"}')
[ "$v" = 2 ] || p+=("mtls_connections_closed_by_recheck_total{reason=\"revoked\"} is '$v', expected 2")
ping 6 b3 || p+=("client b's parked connection broke when client a was revoked")
wait_gauge "$SRV1_METRICS" 1 5 || p+=("server gauge '$(gauge "$SRV1_METRICS")', expected 1 (b)")
# the connector passed the server's close on as EOF (a half-close): its connection ends
# when the application closes too
exec 5>&-
wait_gauge "$A_METRICS" 0 5 || p+=("connector a's gauge '$(gauge "$A_METRICS")' after the close, expected 0")
exec 6>&-
verdict "parked clients revoked by a CRL reload are closed (connector, resumed=$RESUMED s_client), another stays" \
	"${p[@]+"${p[@]}"}" -- "server log:" "$(tail -n 10 -- "$SRV1_LOG")" "connector a log:" \
	"$(tail -n 4 -- "$TMP/con-a.log")" "resumed s_client:" "$(grep -v '^    ' -- "$RS_LOG" | tail -n 8)"
stop_bg "$A_PID"
stop_bg "$B_PID"

# the connector re-judges its parked server: the server's certificate revoked
p=()
ca revoke --dir "$D" --cert "$W/S2.pem" --reason keyCompromise
kill -HUP "$C_REAL"
closed 7 || p+=("the connector's parked connection stayed open after the server's revocation and a reload")
wait_log "$TMP/con-c.log" conn_close revoked_while_connected ||
	p+=("no conn_close with why revoked_while_connected in the connector's log")
v=$(metric "$C_METRICS" 'mtls_connections_closed_by_recheck_total{reason="revoked"}')
[ "$v" = 1 ] || p+=("the connector's mtls_connections_closed_by_recheck_total{reason=\"revoked\"} is '$v', expected 1")
wait_gauge "$C_METRICS" 0 5 || p+=("connector gauge '$(gauge "$C_METRICS")' after the close, expected 0")
exec 7>&-
verdict "a parked connector closes its connection to a server revoked by a CRL reload" \
	"${p[@]+"${p[@]}"}" -- "connector log:" "$(tail -n 6 -- "$TMP/con-c.log")"
stop_bg "$C_PID"
stop_bg "$SRV7_PID"

# ------------------------------------------------------------------------------------------
section "8. the three AEAD suites, padded records (a server each, side by side)"

# and, in the same time, a parked connection that reaches --max-connection-lifetime: the
# server closes it with a close_notify from the parked record layer, which s_client must read
start_tunnel_server "$TMP/srv-ml.log" --target "127.0.0.1:$BE" "${SRV_TLS[@]}" \
	--max-connection-lifetime 5s
ML_METRICS=$SRV_METRICS ML_PID=$SRV_PID
sc_start "$TMP/sc-ml.log"
ML_LOG=$SC_LOG ML_FD=$SC_FD ML_SC=$SC_PID
sc_line "to live 5 s" || true

# Each variant: a name, then s_client's options. "padded": records padded to 512 bytes
# (RFC 8446 5.4), which the parked layer must strip.
variants=("TLS_AES_128_GCM_SHA256|-ciphersuites TLS_AES_128_GCM_SHA256"
	"TLS_AES_256_GCM_SHA384|-ciphersuites TLS_AES_256_GCM_SHA384"
	"TLS_CHACHA20_POLY1305_SHA256|-ciphersuites TLS_CHACHA20_POLY1305_SHA256"
	"padded records|-record_padding 512")
sm=() sp=() sl=() sfd=()
for i in "${!variants[@]}"; do
	start_tunnel_server "$TMP/srv-v$i.log" --target "127.0.0.1:$BE" "${SRV_TLS[@]}"
	sm+=("$SRV_METRICS")
	read -r -a args <<<"${variants[$i]#*|}"
	sc_start "$TMP/sc-v$i.log" "${args[@]}"
	sp+=("$SC_PID")
	sl+=("$SC_LOG")
	sfd+=("$SC_FD")
	sc_line "variant $i" || true
done
for i in "${!variants[@]}"; do
	s=${variants[$i]%%|*}
	SC_LOG=${sl[$i]} SC_FD=${sfd[$i]}
	p=()
	[ "$(count "$SC_LOG" "^variant $i\$")" = 1 ] || p+=("no echo before parking")
	wait_gauge "${sm[$i]}" 1 "$PARK_LIMIT" || p+=("gauge '$(gauge "${sm[$i]}")', expected 1")
	sc_line "parked $i" || p+=("no echo through the parked connection")
	printf 'K\n' >&"$SC_FD"
	sc_line "rekeyed $i" || p+=("no echo after KeyUpdate(update_requested)")
	[ "$(peer_key_updates)" = 1 ] || p+=("$(peer_key_updates) KeyUpdate from the server, expected 1")
	if [[ $s == TLS_* ]]; then
		wait_log "$TMP/srv-v$i.log" conn_open "\"cipher\":\"$s\"" ||
			p+=("the server's conn_open does not name $s")
	else # s_client's record headers (-msg dumps them): 512 bytes of inner plaintext + tag
		[ "$(count "$SC_LOG" '^ +17 03 03 02 10 *$')" -ge 3 ] ||
			p+=("s_client did not pad its records to 512 bytes")
	fi
	printf 'Q\n' >&"$SC_FD"
	wait_exit "${sp[$i]}" "$RUN_LIMIT"
	close_fifo "$SC_FD"
	[ "$EXIT_RC" = 0 ] || p+=("s_client exit status $EXIT_RC")
	verdict "$s: parked, echoes, KeyUpdate answered" "${p[@]+"${p[@]}"}" -- \
		"s_client:" "$(grep -v '^    ' -- "$SC_LOG" | tail -n 12)" \
		"server log:" "$(tail -n 4 -- "$TMP/srv-v$i.log")"
done

p=()
SC_LOG=$ML_LOG
[ "$(count "$SC_LOG" '^to live 5 s$')" = 1 ] || p+=("no echo")
[ "$(peer_key_updates)" = 0 ] || p+=("s_client received a KeyUpdate it did not ask for")
wait_log "$TMP/srv-ml.log" conn_close '"why":"max_lifetime"' || p+=("no conn_close with why max_lifetime")
v=$(family "$ML_METRICS" "$COUNTER")
[ "$v" = 1 ] || p+=("$COUNTER is '$v', expected 1 (parked before the lifetime ran out)")
wait_for_line "$SC_LOG" '^<<< TLS 1\.3, Alert \[length 0002\], warning close_notify$' 5 ||
	p+=("s_client did not read a close_notify")
wait_exit "$ML_SC" 5
close_fifo "$ML_FD"
verdict "parked, --max-connection-lifetime: closed with a close_notify that s_client reads" \
	"${p[@]+"${p[@]}"}" -- "s_client:" "$(grep -v '^    ' -- "$SC_LOG" | tail -n 8)" \
	"server log:" "$(tail -n 3 -- "$TMP/srv-ml.log")"
stop_bg "$ML_PID"

# ------------------------------------------------------------------------------------------
section "9. a record that does not authenticate (one bit flipped by a relay)"

cat >"$W/flip.py" <<'PY'
# flip: the last byte of the next client record after FLIP exists is flipped (its tag).
# dribble: the client's bytes go on one at a time, a millisecond apart.
import os, select, socket, sys, time
up_port, flip, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(1)
print(ls.getsockname()[1], flush=True)
down, _ = ls.accept()
up = socket.create_connection(("127.0.0.1", up_port))
up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    for s in select.select([down, up], [], [])[0]:
        data = s.recv(65536)
        if not data:
            sys.exit(0)
        if s is up:
            down.sendall(data)
        elif mode == "dribble" and os.path.exists(flip):
            for i in range(len(data)):
                up.sendall(data[i:i + 1])
                time.sleep(0.001)
        else:
            if os.path.exists(flip):
                os.unlink(flip)
                data = data[:-1] + bytes([data[-1] ^ 1])
            up.sendall(data)
PY
start_tunnel_server "$TMP/srv9.log" --target "127.0.0.1:$BE" "${SRV_TLS[@]}"
SRV9_LOG=$TMP/srv9.log SRV9_METRICS=$SRV_METRICS
whys=()
p=()
for parked in 0 1; do
	start_bg "$TMP/flip-$parked.out" python3 "$W/flip.py" "$SRV_PORT" "$W/FLIP" flip
	FLIP_PID=$BG_PID
	wait_for_line "$TMP/flip-$parked.out" '^[0-9]' 10 "$FLIP_PID" || _lib_die "the relay did not start"
	SRV_PORT_SAVED=$SRV_PORT
	SRV_PORT=$(head -n 1 "$TMP/flip-$parked.out")
	sc_start "$TMP/sc-flip-$parked.log"
	SRV_PORT=$SRV_PORT_SAVED
	sc_line "before the flip $parked" || p+=("no echo (parked=$parked)")
	if [ "$parked" = 1 ]; then
		wait_gauge "$SRV9_METRICS" 1 "$PARK_LIMIT" || p+=("not parked: gauge '$(gauge "$SRV9_METRICS")'")
	fi
	n=$(log_count "$SRV9_LOG" conn_close)
	touch "$W/FLIP"
	printf 'flipped\n' >&"$SC_FD"
	wait_exit "$SC_PID" "$RUN_LIMIT"
	close_fifo "$SC_FD"
	wait_log "$SRV9_LOG" conn_close "" $((n + 1)) || p+=("no conn_close (parked=$parked)")
	whys+=("$(last_close "$SRV9_LOG")")
	[ "$(count "$SC_LOG" '^flipped$')" = 0 ] || p+=("the flipped record was echoed (parked=$parked)")
	has_line "$(cat -- "$SC_LOG")" "<<< TLS 1.3, Alert [length 0002], fatal bad_record_mac" ||
		p+=("s_client got no bad_record_mac alert (parked=$parked)")
	stop_bg "$FLIP_PID"
done
[ "${whys[1]}" = malformed ] || p+=("parked: why '${whys[1]}', expected malformed")
echo "# bad record MAC: why '${whys[0]}' unparked, '${whys[1]}' parked"
wait_gauge "$SRV9_METRICS" 0 5 || p+=("the gauge is '$(gauge "$SRV9_METRICS")' after the close, expected 0")
verdict "a flipped bit: bad_record_mac alert to s_client, why=${whys[1]:-?} (parked)" \
	"${p[@]+"${p[@]}"}" -- "server log:" "$(tail -n 6 -- "$SRV9_LOG")" "s_client (parked):" \
	"$(grep -v '^    ' -- "$TMP/sc-flip-1.log" | tail -n 8)"

# the same relay in dribble mode: records reach the parked layer a byte at a time
p=()
start_bg "$TMP/dribble.out" python3 "$W/flip.py" "$SRV_PORT" "$W/DRIBBLE" dribble
FLIP_PID=$BG_PID
wait_for_line "$TMP/dribble.out" '^[0-9]' 10 "$FLIP_PID" || _lib_die "the relay did not start"
SRV_PORT_SAVED=$SRV_PORT
SRV_PORT=$(head -n 1 "$TMP/dribble.out")
sc_start "$TMP/sc-dribble.log"
SRV_PORT=$SRV_PORT_SAVED
sc_line "whole" || p+=("no echo before parking")
wait_gauge "$SRV9_METRICS" 1 "$PARK_LIMIT" || p+=("not parked: gauge '$(gauge "$SRV9_METRICS")'")
touch "$W/DRIBBLE"
long=$(printf 'x%.0s' $(seq 300))
sc_line "$long" || p+=("a 300-byte line sent a byte at a time was not echoed")
printf 'K\n' >&"$SC_FD"
sc_line "dribbled after K" || p+=("no echo after a KeyUpdate sent a byte at a time")
[ "$(peer_key_updates)" = 1 ] || p+=("$(peer_key_updates) KeyUpdate from the server, expected 1")
printf 'Q\n' >&"$SC_FD"
wait_exit "$SC_PID" "$RUN_LIMIT"
close_fifo "$SC_FD"
wait_log "$SRV9_LOG" conn_close '"why":"closed"' || p+=("no orderly conn_close")
stop_bg "$FLIP_PID"
verdict "parked: records arriving a byte at a time (a line, a KeyUpdate, close_notify)" \
	"${p[@]+"${p[@]}"}" -- "server log:" "$(tail -n 3 -- "$SRV9_LOG")" "s_client:" \
	"$(grep -v '^    ' -- "$TMP/sc-dribble.log" | tail -n 8)"

echo "# $(($(date +%s) - T_START)) s"
finish
