#!/usr/bin/env bash
# mtls server and mtls connector with peers nobody here wrote: curl, openssl s_client and
# stunnel as clients of `mtls server`; openssl s_server and stunnel as servers of `mtls
# connector`. Then the refusals each daemon must report end to end (with the backend never
# reached), the PROXY v2 header as the backend decodes it, unix sockets on both plaintext
# sides, and 8 MiB through the pair, with and without a half-close.
#
# Plaintext applications are curl, bash's /dev/tcp and (for the half-close, which /dev/tcp
# cannot do) a few lines of perl (perl-base, always on Debian).
set -euo pipefail
# the first server and backend live through the whole script: 40 s alone, 164 s under
# ThreadSanitizer in a loaded CI rehearsal, where the default 50 s stopped them before part 8
BG_LIMIT=${BG_LIMIT:-300}
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

command -v curl >/dev/null || _lib_die "curl not found in PATH"
command -v perl >/dev/null || _lib_die "perl not found in PATH"
STUNNEL=$(command -v stunnel4 || command -v stunnel || true)
[ -n "$STUNNEL" ] || _lib_die "stunnel (Debian: stunnel4) not found in PATH"

C=$CERTS
APP1=spiffe://test.mtls/ns/prod/sa/app1
ALLOW=(--allow-uri 'spiffe://test.mtls/ns/prod/sa/*')
# Every daemon: a short drain, so that stopping one never waits for a stuck connection, and
# its metrics on a free port (SRV_METRICS / CON_METRICS).
DAEMON=(--drain-timeout 1s --metrics 127.0.0.1:0)
SRV_TLS=(--cert "$C/server-chain.pem" --key "$C/server.key" --ca "$C/ca.pem" "${DAEMON[@]}")
CON_TLS=(--cert "$C/client-chain.pem" --key "$C/client.key" --ca "$C/ca.pem" "${DAEMON[@]}")
GOOD_CLIENT=(-cert "$C/client.pem" -cert_chain "$C/int.pem" -key "$C/client.key")
BULK=$((8 * 1024 * 1024))

# ------------------------------------------------------------------------------------------
# Helpers

# count FILE ERE : how many lines of FILE match ERE.
count() {
	local n
	n=$(grep -cE -- "$2" "$1" 2>/dev/null || true)
	echo "${n:-0}"
}

# wait_count FILE ERE N SECONDS : wait until at least N lines of FILE match ERE.
wait_count() {
	local i=$(($4 * 20))
	while [ "$(count "$1" "$2")" -lt "$3" ]; do
		[ "$i" -gt 0 ] || return 1
		sleep 0.05
		i=$((i - 1))
	done
}

# wait_logged LOG EVENT TEXT N : wait (5 s) until LOG has N lines of EVENT with TEXT. A daemon
# queues a connection's line before the client sees its effect, but its log thread may write
# the line after.
wait_logged() {
	local i=100
	while [ "$(log_count "$1" "$2" "$3")" -lt "$4" ] && [ "$i" -gt 0 ]; do
		sleep 0.05
		i=$((i - 1))
	done
}

# opens LOG : "conn open" lines of a backend log.
opens() {
	count "$1" '^conn open$'
}

# settle : give a process that should NOT do something (a backend that must not be reached)
# the time to do it anyway, before we look.
settle() {
	sleep 0.3
}

# tcp_line PORT TEXT : connect with bash's /dev/tcp, send TEXT and a newline, read one line
# back (RUN_LIMIT), close. Sets RC (0 if a line came back), OUT (that line), ERR.
tcp_line() {
	# shellcheck disable=SC2016
	run bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 3
		printf "%s\n" "$2" >&3
		IFS= read -r line <&3 || { printf "%s" "$line"; exit 4; }
		printf "%s\n" "$line"' tcp_line "$1" "$2"
}

# s_client_line ADDR MSG LOG S_CLIENT_ARGS... : openssl s_client to the mtls server at ADDR
# sends MSG (letters, digits, spaces) and waits for it to come back, then closes its stdin
# (s_client sends close_notify and ends). Sets SC_PROBLEMS (empty: echo seen, exit status 0).
s_client_line() {
	local addr=$1 msg=$2 log=$3 fifo=$3.in pid
	shift 3
	SC_PROBLEMS=()
	open_fifo "$fifo"
	start_bg_stdin "$fifo" "$log" openssl s_client -connect "$addr" -quiet \
		-no_ign_eof -CAfile "$C/ca.pem" -verify_return_error -servername server.test \
		-verify_hostname server.test "$@"
	pid=$BG_PID
	printf '%s\n' "$msg" >&"$FIFO_FD"
	wait_for_line "$log" "^$msg\$" "$RUN_LIMIT" "$pid" ||
		SC_PROBLEMS+=("the echo did not come back to s_client")
	close_fifo "$FIFO_FD"
	wait_exit "$pid" "$RUN_LIMIT"
	[ "$EXIT_RC" = 0 ] || SC_PROBLEMS+=("s_client exit status $EXIT_RC, expected 0")
	rm -f -- "$fifo"
}

# series PORT SERIES : tunnel_lib.sh's metric, "" (not a failed assignment under set -e and
# pipefail) when the series is absent.
series() {
	metric "$@" || true
}

# refused_by REASON LOG : wait (5 s) for a handshake_refused line with REASON in LOG. Each
# reason is refused at most once per daemon here, so this is the case's own line, whatever
# other refusals are logged around it.
refused_by() {
	wait_for_line "$2" "\"event\":\"handshake_refused\".*\"reason\":\"$1\"" 5
}

# start_stunnel NAME CONFIG_LINES... : stunnel in the foreground with a [NAME] service made
# of CONFIG_LINES, accepting on 127.0.0.1:0 (stunnel binds port 0 and logs the real port).
# Sets ST_PID, ST_PORT, ST_LOG. Exits the script if it does not come up.
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

# ------------------------------------------------------------------------------------------
echo "# 1. curl -> mtls server -> backend (http)"

start_backend "$TMP/be-http.log" --mode http
BE_HTTP_LOG=$TMP/be-http.log
start_tunnel_server "$TMP/srv-http.log" --target "127.0.0.1:$BE_PORT" "${SRV_TLS[@]}" \
	"${ALLOW[@]}"
SRV_HTTP_LOG=$TMP/srv-http.log
SRV_HTTP_PORT=$SRV_PORT
SRV_HTTP_METRICS=$SRV_METRICS

CURL=(curl -sS --max-time 10 --cacert "$C/ca.pem"
	--resolve "server.test:$SRV_HTTP_PORT:127.0.0.1" "https://server.test:$SRV_HTTP_PORT/")

p=()
run "${CURL[@]}" --cert "$C/client-chain.pem" --key "$C/client.key"
[ "$RC" = 0 ] || p+=("curl exit status $RC, expected 0")
[ "$OUT" = "hello from backend" ] || p+=("curl printed '$OUT', expected 'hello from backend'")
wait_count "$SRV_HTTP_LOG" '"event":"conn_open".*"identity":"'"$APP1"'"' 1 5 ||
	p+=("the server logged no conn_open for $APP1")
verdict "curl with the client certificate gets the backend's answer" "${p[@]+"${p[@]}"}" -- \
	"curl stderr: $ERR" "server log:" "$(cat -- "$SRV_HTTP_LOG")"

# curl_refused NAME REASON CURL_ARGS... : curl must fail, the server must log handshake_refused
# with REASON, and the backend must see no new connection.
curl_refused() {
	local name=$1 reason=$2 p=() before
	shift 2
	before=$(opens "$BE_HTTP_LOG")
	run "${CURL[@]}" "$@"
	[ "$RC" != 0 ] || p+=("curl succeeded (exit 0), expected a failure")
	[[ $OUT != *"hello from backend"* ]] || p+=("curl got the backend's answer")
	refused_by "$reason" "$SRV_HTTP_LOG" || p+=("the server logged no handshake_refused $reason")
	settle
	[ "$(opens "$BE_HTTP_LOG")" = "$before" ] || p+=("the backend saw a new connection")
	verdict "$name" "${p[@]+"${p[@]}"}" -- "curl exit $RC, stderr: $ERR" "server log:" \
		"$(cat -- "$SRV_HTTP_LOG")" "backend log:" "$(cat -- "$BE_HTTP_LOG")"
}

curl_refused "curl without a client certificate: refused, no_certificate" no_certificate
curl_refused "curl as client2 (ns/dev): refused, identity_not_allowed" identity_not_allowed \
	--cert "$C/client2-chain.pem" --key "$C/client2.key"

p=()
v=$(series "$SRV_HTTP_METRICS" 'mtls_handshakes_total{result="failed",reason="no_certificate"}')
[ "$v" = 1 ] || p+=("failed/no_certificate is '$v', expected 1")
v=$(series "$SRV_HTTP_METRICS" 'mtls_handshakes_total{result="failed",reason="identity_not_allowed"}')
[ "$v" = 1 ] || p+=("failed/identity_not_allowed is '$v', expected 1")
v=$(series "$SRV_HTTP_METRICS" 'mtls_handshakes_total{result="ok"}')
[ "$v" = 1 ] || p+=("ok is '$v', expected 1")
verdict "server metrics count the curl handshakes by result and reason" "${p[@]+"${p[@]}"}" -- \
	"$(curl -s --max-time 5 "http://127.0.0.1:$SRV_HTTP_METRICS/metrics" | grep handshakes_total)"

# ------------------------------------------------------------------------------------------
# The shared echo path: mtls server (with the CRL and metrics) in front of an echo backend,
# for cases 2, 4, 5 and 8.

start_backend "$TMP/be-echo.log" --mode echo
BE_ECHO_LOG=$TMP/be-echo.log
BE_ECHO_PORT=$BE_PORT
start_tunnel_server "$TMP/srv-echo.log" --target "127.0.0.1:$BE_ECHO_PORT" "${SRV_TLS[@]}" \
	"${ALLOW[@]}" --crl "$C/crl.pem"
SRV_ECHO_LOG=$TMP/srv-echo.log
SRV_ECHO_PORT=$SRV_PORT
SRV_ECHO_METRICS=$SRV_METRICS

echo "# 2. openssl s_client -> mtls server -> backend (echo)"

for v in 1.2 1.3; do
	msg="hello over TLS $v from s_client"
	closes=$(count "$BE_ECHO_LOG" '^conn close ')
	opened=$(log_count "$SRV_ECHO_LOG" conn_open "\"tls\":\"TLSv$v\"")
	s_client_line "127.0.0.1:$SRV_ECHO_PORT" "$msg" "$TMP/sc-$v.log" "-tls${v/./_}" "${GOOD_CLIENT[@]}"
	p=("${SC_PROBLEMS[@]+"${SC_PROBLEMS[@]}"}")
	wait_logged "$SRV_ECHO_LOG" conn_open "\"tls\":\"TLSv$v\"" $((opened + 1))
	[ "$(log_count "$SRV_ECHO_LOG" conn_open "\"tls\":\"TLSv$v\"")" = $((opened + 1)) ] ||
		p+=("the server logged no TLSv$v conn_open")
	if wait_count "$BE_ECHO_LOG" '^conn close ' $((closes + 1)) 5; then
		[ "$(grep '^conn close ' "$BE_ECHO_LOG" | tail -n 1)" = "conn close bytes=$((${#msg} + 1))" ] ||
			p+=("the backend did not count $((${#msg} + 1)) bytes")
	else
		p+=("the backend connection did not end after s_client closed")
	fi
	verdict "TLS $v: s_client line echoed through mtls server" "${p[@]+"${p[@]}"}" -- \
		"s_client:" "$(cat -- "$TMP/sc-$v.log")" "server log:" "$(cat -- "$SRV_ECHO_LOG")" \
		"backend log:" "$(cat -- "$BE_ECHO_LOG")"
done

# ------------------------------------------------------------------------------------------
echo "# 3. app -> mtls connector -> openssl s_server -rev"

for v in 1.2 1.3; do
	start_s_server "$TMP/ss-$v.log" -naccept 1 -rev -Verify 2 -verify_return_error \
		-CAfile "$C/ca.pem" -cert "$C/server.pem" -cert_chain "$C/int.pem" \
		-key "$C/server.key" "-tls${v/./_}"
	start_tunnel_connector "$TMP/con-ss-$v.log" --server "127.0.0.1:$SS_PORT" \
		--server-name server.test "${CON_TLS[@]}"
	p=()
	tcp_line "$CON_PORT" "tls interop"
	[ "$RC" = 0 ] && [ "$OUT" = "poretni slt" ] ||
		p+=("the app got '$OUT' (status $RC), expected 'poretni slt'")
	wait_exit "$SS_PID" 5
	[ "$EXIT_RC" = 0 ] || p+=("s_server exit status $EXIT_RC, expected 0")
	ss_out=$(cat -- "$TMP/ss-$v.log")
	has_line "$ss_out" "Peer certificate: CN = app1" || p+=("s_server did not see CN = app1")
	has_line "$ss_out" "Verification: OK" || p+=("s_server did not verify our certificate")
	has_line "$ss_out" "Protocol version: TLSv$v" || p+=("s_server did not speak TLSv$v")
	wait_logged "$TMP/con-ss-$v.log" conn_open "\"tls\":\"TLSv$v\"" 1
	[ "$(log_count "$TMP/con-ss-$v.log" conn_open "\"tls\":\"TLSv$v\"")" = 1 ] ||
		p+=("the connector logged no TLSv$v conn_open")
	stop_bg "$CON_PID"
	verdict "TLS $v: app line through mtls connector to s_server -rev" "${p[@]+"${p[@]}"}" -- \
		"app stderr: $ERR" "s_server:" "$ss_out" "connector log:" \
		"$(cat -- "$TMP/con-ss-$v.log")"
done

# What a connector logs when the server refuses its certificate: in TLS 1.2 the handshake
# fails (handshake_refused); in TLS 1.3 the client's side of the handshake is over before the
# server has judged the certificate, so the alert ends the connection (conn_close).
PEER_REFUSED='"event":"(handshake_refused|conn_close)".*"(reason|why)":"rejected_by_peer"'

# ------------------------------------------------------------------------------------------
echo "# 4. stunnel as client of mtls server, and as server of mtls connector"

start_stunnel client "client = yes" "connect = 127.0.0.1:$SRV_ECHO_PORT" \
	"cert = $C/client-chain.pem" "key = $C/client.key" "CAfile = $C/ca.pem" \
	"verifyChain = yes" "checkHost = server.test" "sslVersionMin = TLSv1.2"
ST_CLIENT_PID=$ST_PID
p=()
opened=$(log_count "$SRV_ECHO_LOG" conn_open "\"identity\":\"$APP1\"")
tcp_line "$ST_PORT" "through stunnel"
[ "$RC" = 0 ] && [ "$OUT" = "through stunnel" ] ||
	p+=("the app got '$OUT' (status $RC), expected the echo 'through stunnel'")
wait_logged "$SRV_ECHO_LOG" conn_open "\"identity\":\"$APP1\"" $((opened + 1))
[ "$(log_count "$SRV_ECHO_LOG" conn_open "\"identity\":\"$APP1\"")" = $((opened + 1)) ] ||
	p+=("the server logged no conn_open for $APP1")
verdict "stunnel client -> mtls server -> echo backend" "${p[@]+"${p[@]}"}" -- \
	"stunnel log:" "$(cat -- "$ST_LOG")" "server log:" "$(cat -- "$SRV_ECHO_LOG")"
stop_bg "$ST_CLIENT_PID"

start_backend "$TMP/be-st.log" --mode echo
BE_ST_LOG=$TMP/be-st.log
start_stunnel server "connect = 127.0.0.1:$BE_PORT" "cert = $C/server-chain.pem" \
	"key = $C/server.key" "CAfile = $C/ca.pem" "verifyChain = yes" "requireCert = yes" \
	"sslVersionMin = TLSv1.2"
ST_SERVER_LOG=$ST_LOG
ST_SERVER_PORT=$ST_PORT

start_tunnel_connector "$TMP/con-st.log" --server "127.0.0.1:$ST_SERVER_PORT" \
	--server-name server.test "${CON_TLS[@]}"
p=()
tcp_line "$CON_PORT" "to stunnel"
[ "$RC" = 0 ] && [ "$OUT" = "to stunnel" ] ||
	p+=("the app got '$OUT' (status $RC), expected the echo 'to stunnel'")
[ "$(opens "$BE_ST_LOG")" = 1 ] || p+=("the backend behind stunnel saw no connection")
wait_logged "$TMP/con-st.log" conn_open '"identity":"server.test"' 1
[ "$(log_count "$TMP/con-st.log" conn_open '"identity":"server.test"')" = 1 ] ||
	p+=("the connector logged no conn_open for server.test")
verdict "mtls connector -> stunnel server -> echo backend" "${p[@]+"${p[@]}"}" -- \
	"stunnel log:" "$(cat -- "$ST_SERVER_LOG")" "connector log:" "$(cat -- "$TMP/con-st.log")"
stop_bg "$CON_PID"

# The other CA's client certificate: stunnel refuses it; the backend never hears of it.
start_tunnel_connector "$TMP/con-st-other.log" --server "127.0.0.1:$ST_SERVER_PORT" \
	--server-name server.test --cert "$C/other-client-chain.pem" --key "$C/other-client.key" \
	--ca "$C/ca.pem" "${DAEMON[@]}"
p=()
before=$(opens "$BE_ST_LOG")
tcp_line "$CON_PORT" "should not pass"
[ "$OUT" != "should not pass" ] || p+=("the echo came back through a refused connection")
wait_for_line "$ST_SERVER_LOG" 'Rejected by CERT|certificate verify failed|unable to get local issuer' 5 ||
	p+=("stunnel did not log that it rejected the certificate")
wait_for_line "$TMP/con-st-other.log" "$PEER_REFUSED" 5 ||
	p+=("the connector did not log that the server rejected it (rejected_by_peer)")
settle
[ "$(opens "$BE_ST_LOG")" = "$before" ] || p+=("the backend behind stunnel saw a connection")
verdict "mtls connector with another CA's certificate: refused by stunnel" "${p[@]+"${p[@]}"}" -- \
	"app: status $RC, '$OUT' $ERR" "stunnel log:" "$(cat -- "$ST_SERVER_LOG")" \
	"connector log:" "$(cat -- "$TMP/con-st-other.log")"
stop_bg "$CON_PID"

# ------------------------------------------------------------------------------------------
echo "# 5. refusals end to end"

# refusal NAME LOG REASON : after an app line through a connector: no echo, LOG (of whichever
# daemon refuses) says handshake_refused REASON, and the echo backend saw no connection.
refusal() {
	local name=$1 log=$2 reason=$3 p=() before
	before=$(opens "$BE_ECHO_LOG")
	tcp_line "$CON_PORT" "must not arrive"
	[ "$OUT" != "must not arrive" ] || p+=("the echo came back through a refused connection")
	refused_by "$reason" "$log" || p+=("no handshake_refused $reason in ${log##*/}")
	settle
	[ "$(opens "$BE_ECHO_LOG")" = "$before" ] || p+=("the backend saw a connection")
	verdict "$name" "${p[@]+"${p[@]}"}" -- "app: status $RC, '$OUT' $ERR" \
		"${log##*/}:" "$(cat -- "$log")" "connector log:" "$(cat -- "$CON_LOG")" \
		"backend log:" "$(cat -- "$BE_ECHO_LOG")"
}

# connector_metric NAME REASON : the connector's failed/REASON counter is 1.
connector_metric() {
	local v
	v=$(series "$CON_METRICS" "mtls_handshakes_total{result=\"failed\",reason=\"$2\"}")
	if [ "$v" = 1 ]; then
		pass "$1"
	else
		fail "$1" "failed/$2 is '$v', expected 1" \
			"$(curl -s --max-time 5 "http://127.0.0.1:$CON_METRICS/metrics" | grep handshakes)"
	fi
}

# a server of another CA (it trusts our CA for its clients; the connector must not trust it)
start_tunnel_server "$TMP/srv-other.log" --target "127.0.0.1:$BE_ECHO_PORT" \
	--cert "$C/other-server-chain.pem" --key "$C/other-server.key" --ca "$C/ca.pem" \
	"${ALLOW[@]}" "${DAEMON[@]}"
OTHER_PID=$SRV_PID
CON_LOG=$TMP/con-unknown-ca.log
start_tunnel_connector "$CON_LOG" --server "127.0.0.1:$SRV_PORT" --server-name server.test \
	"${CON_TLS[@]}"
refusal "connector -> server of another CA: refused by the connector, unknown_ca" \
	"$CON_LOG" unknown_ca
connector_metric "connector metric failed/unknown_ca" unknown_ca
stop_bg "$CON_PID"
stop_bg "$OTHER_PID"

CON_LOG=$TMP/con-name.log
start_tunnel_connector "$CON_LOG" --server "127.0.0.1:$SRV_ECHO_PORT" --server-name wrong.test \
	"${CON_TLS[@]}"
refusal "connector --server-name wrong.test: refused by the connector, name_mismatch" \
	"$CON_LOG" name_mismatch
connector_metric "connector metric failed/name_mismatch" name_mismatch
stop_bg "$CON_PID"

# srv_refusal NAME CERT KEY REASON : a connector presenting CERT/KEY to the echo server: the
# server refuses it with REASON (log and metric), the backend never hears of it.
srv_refusal() {
	local name=$1 cert=$2 key=$3 reason=$4 p=() before v
	CON_LOG=$TMP/con-$reason.log
	start_tunnel_connector "$CON_LOG" --server "127.0.0.1:$SRV_ECHO_PORT" \
		--server-name server.test --cert "$cert" --key "$key" --ca "$C/ca.pem" \
		"${DAEMON[@]}"
	before=$(opens "$BE_ECHO_LOG")
	tcp_line "$CON_PORT" "must not arrive"
	[ "$OUT" != "must not arrive" ] || p+=("the echo came back through a refused connection")
	refused_by "$reason" "$SRV_ECHO_LOG" || p+=("the server logged no handshake_refused $reason")
	settle
	[ "$(opens "$BE_ECHO_LOG")" = "$before" ] || p+=("the backend saw a connection")
	v=$(series "$SRV_ECHO_METRICS" "mtls_handshakes_total{result=\"failed\",reason=\"$reason\"}")
	[ "$v" = 1 ] || p+=("server metric failed/$reason is '$v', expected 1")
	wait_for_line "$CON_LOG" "$PEER_REFUSED" 5 ||
		p+=("the connector did not log that the server rejected it (rejected_by_peer)")
	verdict "$name" "${p[@]+"${p[@]}"}" -- "app: status $RC, '$OUT' $ERR" \
		"server log:" "$(cat -- "$SRV_ECHO_LOG")" "connector log:" "$(cat -- "$CON_LOG")" \
		"backend log:" "$(cat -- "$BE_ECHO_LOG")"
	stop_bg "$CON_PID"
}

srv_refusal "connector with a revoked certificate (server --crl): refused, revoked" \
	"$C/revoked-client-chain.pem" "$C/revoked-client.key" revoked

# An expired client certificate, presented by openssl s_client: a connector with one does not
# even start (test_tunnel_hardening.sh).
p=()
before=$(opens "$BE_ECHO_LOG")
run openssl s_client -connect "127.0.0.1:$SRV_ECHO_PORT" -servername server.test \
	-CAfile "$C/ca.pem" -cert "$C/expired-client-chain.pem" -cert_chain "$C/int.pem" \
	-key "$C/expired-client.key"
refused_by expired "$SRV_ECHO_LOG" || p+=("the server logged no handshake_refused expired")
settle
[ "$(opens "$BE_ECHO_LOG")" = "$before" ] || p+=("the backend saw a connection")
v=$(series "$SRV_ECHO_METRICS" 'mtls_handshakes_total{result="failed",reason="expired"}')
[ "$v" = 1 ] || p+=("server metric failed/expired is '$v', expected 1")
verdict "s_client with an expired certificate: refused by the server, expired" \
	"${p[@]+"${p[@]}"}" -- "server log:" "$(cat -- "$SRV_ECHO_LOG")" \
	"backend log:" "$(cat -- "$BE_ECHO_LOG")"

# ------------------------------------------------------------------------------------------
echo "# 6. PROXY protocol v2"

start_backend "$TMP/be-proxy.log" --mode proxy-echo
BE_PROXY_LOG=$TMP/be-proxy.log
BE_PROXY_PORT=$BE_PORT
start_tunnel_server "$TMP/srv-proxy.log" --target "127.0.0.1:$BE_PROXY_PORT" "${SRV_TLS[@]}" \
	"${ALLOW[@]}" --proxy-protocol
SRV_PROXY_LOG=$TMP/srv-proxy.log
SRV_PROXY_PORT=$SRV_PORT

# proxy_opened : wait (5 s) until the proxy server's log has a conn_open for each PROXY header
# the backend decoded from that server (its log thread may write the line after the echo)
proxy_opened() {
	local dst=${PROXY_DST:-127.0.0.1:$SRV_PROXY_PORT} n
	n=$(grep -cF " dst=$dst " "$BE_PROXY_LOG" || true)
	wait_count "$SRV_PROXY_LOG" '"event":"conn_open"' "${n:-0}" 5 || true
}

# proxy_check NAME TLS_VERSION PROBLEMS... : the last proxy line of the backend is exactly
# what the server's last conn_open says (peer, our address, version, CN, identity), with
# ssl_verify=0 and ssl_client flags saying TLS and a client certificate (checked in detail
# below). Sets FLAGS to the ssl_client value.
proxy_check() {
	local name=$1 tls=$2 p=() peer want got family=tcp4 dst=127.0.0.1:$SRV_PROXY_PORT
	shift 2
	p=("$@")
	if [ -n "${PROXY_DST:-}" ]; then
		family=tcp6
		dst=$PROXY_DST
	fi
	proxy_opened
	peer=$({ grep -F '"event":"conn_open"' "$SRV_PROXY_LOG" || true; } | tail -n 1 |
		sed -n 's/.*"peer":"\([^"]*\)".*/\1/p')
	got=$({ grep '^proxy ' "$BE_PROXY_LOG" || true; } | tail -n 1)
	FLAGS=$(printf '%s\n' "$got" | sed -n 's/.* ssl_client=\([0-9][0-9]*\) .*/\1/p')
	want="proxy family=$family src=$peer dst=$dst ssl_client=${FLAGS:-?}"
	want+=" ssl_verify=0 tls=$tls cn=app1 identity=$APP1"
	[ -n "$peer" ] || p+=("the server logged no conn_open")
	[ "$got" = "$want" ] || p+=("the backend decoded: $got" "expected:            $want")
	if [ -z "$FLAGS" ] || [ $((FLAGS & 1)) = 0 ] || [ $((FLAGS & 6)) = 0 ]; then
		p+=("ssl_client=${FLAGS:-?} does not say PP2_CLIENT_SSL and a client certificate")
	fi
	verdict "$name" "${p[@]+"${p[@]}"}" -- "server log:" "$(cat -- "$SRV_PROXY_LOG")" \
		"backend log:" "$(cat -- "$BE_PROXY_LOG")"
}

start_tunnel_connector "$TMP/con-proxy.log" --server "127.0.0.1:$SRV_PROXY_PORT" \
	--server-name server.test "${CON_TLS[@]}"
p=()
tcp_line "$CON_PORT" "after the header"
[ "$RC" = 0 ] && [ "$OUT" = "after the header" ] ||
	p+=("the app got '$OUT' (status $RC), expected the echo 'after the header'")
proxy_check "PROXY v2 header via connector (TLS 1.3), then the echo" TLSv1.3 "${p[@]+"${p[@]}"}"
flags_13=$FLAGS
stop_bg "$CON_PID"

s_client_line "127.0.0.1:$SRV_PROXY_PORT" "proxied by s_client" "$TMP/sc-proxy.log" -tls1_2 \
	"${GOOD_CLIENT[@]}"
proxy_check "PROXY v2 header via s_client -tls1_2, then the echo" TLSv1.2 \
	"${SC_PROBLEMS[@]+"${SC_PROBLEMS[@]}"}"
flags_12=$FLAGS

# A resumed TLS 1.3 session: the certificate crossed the first connection only.
s_client_line "127.0.0.1:$SRV_PROXY_PORT" "first of the session" "$TMP/sc-proxy-1.log" -tls1_3 \
	-sess_out "$TMP/session.pem" "${GOOD_CLIENT[@]}"
s_client_line "127.0.0.1:$SRV_PROXY_PORT" "resumed session" "$TMP/sc-proxy-2.log" -tls1_3 \
	-sess_in "$TMP/session.pem" "${GOOD_CLIENT[@]}"
flags_resumed=
proxy_opened
if grep -F '"event":"conn_open"' "$SRV_PROXY_LOG" | tail -n 1 | grep -cF '"resumed":1' >/dev/null; then
	proxy_check "PROXY v2 header on a resumed TLS 1.3 session, then the echo" TLSv1.3 \
		"${SC_PROBLEMS[@]+"${SC_PROBLEMS[@]}"}"
	flags_resumed=$FLAGS
else
	verdict "PROXY v2 on a resumed TLS 1.3 session (the server did not resume: nothing to check)" \
		"${SC_PROBLEMS[@]+"${SC_PROBLEMS[@]}"}" -- "$(cat -- "$TMP/sc-proxy-2.log")"
fi

# A client over IPv6 (if this host has ::1): a tcp6 header, from a second server on [::1].
if grep -q '^0\{31\}1 ' /proc/net/if_inet6 2>/dev/null; then
	start_tunnel_server "$TMP/srv-proxy6.log" --listen '[::1]:0' --target "127.0.0.1:$BE_PROXY_PORT" \
		"${SRV_TLS[@]}" "${ALLOW[@]}" --proxy-protocol
	SRV_PROXY_LOG=$TMP/srv-proxy6.log
	PROXY_DST="[::1]:$SRV_PORT"
	s_client_line "[::1]:$SRV_PORT" "over IPv6" "$TMP/sc-proxy6.log" "${GOOD_CLIENT[@]}"
	proxy_check "PROXY v2 header for an IPv6 client (tcp6), then the echo" TLSv1.3 \
		"${SC_PROBLEMS[@]+"${SC_PROBLEMS[@]}"}"
	PROXY_DST=
	stop_bg "$SRV_PID"
else
	echo "# (no IPv6 loopback: the tcp6 PROXY header is not tested)"
fi

# The PP2_TYPE_SSL client field: PP2_CLIENT_SSL 0x01, PP2_CLIENT_CERT_CONN 0x02 ("the client
# provided a certificate over the current connection"), PP2_CLIENT_CERT_SESS 0x04 ("... at
# least once over the TLS session this connection belongs to"). A full handshake with a
# client certificate is 7 (HAProxy, the protocol's home, sends CERT_CONN only together with
# CERT_SESS); a resumed session, on which no certificate crosses this connection, is 5.
p=()
[ "$flags_13" = 7 ] || p+=("full TLS 1.3 handshake: ssl_client=${flags_13:-?}, expected 7")
[ "$flags_12" = 7 ] || p+=("full TLS 1.2 handshake: ssl_client=${flags_12:-?}, expected 7")
[ -z "$flags_resumed" ] || [ "$flags_resumed" = 5 ] ||
	p+=("resumed TLS 1.3 session: ssl_client=$flags_resumed, expected 5")
verdict "PROXY v2 ssl_client flags: CERT_SESS always, CERT_CONN only without resumption" \
	"${p[@]+"${p[@]}"}" -- "backend log:" "$(cat -- "$BE_PROXY_LOG")"

# ------------------------------------------------------------------------------------------
echo "# 7. unix sockets: connector --listen unix:, server --target unix:"

start_backend "$TMP/be-unix.log" --unix "$TMP/be.sock" --mode http
start_tunnel_server "$TMP/srv-unix.log" --target "unix:$TMP/be.sock" "${SRV_TLS[@]}" "${ALLOW[@]}"
start_tunnel_connector "$TMP/con-unix.log" --listen "unix:$TMP/app.sock" \
	--server "127.0.0.1:$SRV_PORT" --server-name server.test "${CON_TLS[@]}"
p=()
run curl -sS --max-time 10 --unix-socket "$TMP/app.sock" http://x/
[ "$RC" = 0 ] && [ "$OUT" = "hello from backend" ] ||
	p+=("curl got '$OUT' (status $RC), expected 'hello from backend'")
[ "$(opens "$TMP/be-unix.log")" = 1 ] || p+=("the unix-socket backend saw no connection")
wait_logged "$TMP/srv-unix.log" conn_open "\"identity\":\"$APP1\"" 1
[ "$(log_count "$TMP/srv-unix.log" conn_open "\"identity\":\"$APP1\"")" = 1 ] ||
	p+=("the server logged no conn_open for $APP1")
verdict "curl -> unix:app.sock -> connector -> server -> unix:be.sock" "${p[@]+"${p[@]}"}" -- \
	"curl stderr: $ERR" "server log:" "$(cat -- "$TMP/srv-unix.log")" "connector log:" \
	"$(cat -- "$TMP/con-unix.log")" "backend log:" "$(cat -- "$TMP/be-unix.log")"
stop_bg "$CON_PID"
if [ -e "$TMP/app.sock" ]; then
	fail "connector removes its unix socket when it stops" "$TMP/app.sock is still there" \
		"$(cat -- "$TMP/con-unix.log")"
else
	pass "connector removes its unix socket when it stops"
fi

# ------------------------------------------------------------------------------------------
echo "# 8. 8 MiB through connector -> server -> echo backend"

start_tunnel_connector "$TMP/con-bulk.log" --server "127.0.0.1:$SRV_ECHO_PORT" \
	--server-name server.test "${CON_TLS[@]}"
CON_BULK_LOG=$TMP/con-bulk.log
head -c "$BULK" /dev/urandom >"$TMP/bulk.in"
want_sum=$(sha256sum <"$TMP/bulk.in")

# Without a half-close: write everything, read back exactly as many bytes, then close.
p=()
bulk_closes=$(count "$BE_ECHO_LOG" '^conn close ')
bulk_srv_closes=$(log_count "$SRV_ECHO_LOG" conn_close)
# shellcheck disable=SC2016
run bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 3
	cat -- "$2" >&3 &
	head -c "$3" <&3 >"$4"
	wait' bulk "$CON_PORT" "$TMP/bulk.in" "$BULK" "$TMP/bulk.out1"
[ "$RC" = 0 ] || p+=("the transfer ended with status $RC")
[ "$(sha256sum <"$TMP/bulk.out1")" = "$want_sum" ] ||
	p+=("the echo differs: $(wc -c <"$TMP/bulk.out1") bytes came back, sha256 differs")
verdict "8 MiB echoed byte-identical (no half-close)" "${p[@]+"${p[@]}"}" -- "$ERR"
# that connection ends everywhere before the next one is counted
wait_count "$BE_ECHO_LOG" '^conn close ' $((bulk_closes + 1)) 5 || true
wait_count "$SRV_ECHO_LOG" '"event":"conn_close"' $((bulk_srv_closes + 1)) 5 || true
wait_count "$CON_BULK_LOG" '"event":"conn_close"' 1 5 || true

# halfclose_echo PORT : write the bulk file to 127.0.0.1:PORT, shutdown(SHUT_WR), read
# until EOF; what came back must be the same bytes. The EOF must travel app -> connector or
# stunnel -> (close_notify) -> mtls server -> backend, and back. Also checks the backend's
# byte count and the server's orderly close. Sets HC_PROBLEMS.
halfclose_echo() {
	local port=$1 out=$TMP/bulk.out-$1 closes srv_closes
	HC_PROBLEMS=()
	closes=$(count "$BE_ECHO_LOG" '^conn close ')
	srv_closes=$(log_count "$SRV_ECHO_LOG" conn_close)
	# shellcheck disable=SC2016
	run perl -MIO::Socket::INET -e '
		my ($port, $in, $out) = @ARGV;
		my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $port,
			Proto => "tcp") or die "connect: $!\n";
		my $pid = fork() // die "fork: $!\n";
		if ($pid == 0) {
			open(my $o, ">:raw", $out) or die "$out: $!\n";
			my $buf;
			while (1) {
				my $n = sysread($s, $buf, 65536);
				die "read: $!\n" unless defined $n;
				last if $n == 0;
				print $o $buf or die "write $out: $!\n";
			}
			close($o) or die "close $out: $!\n";
			exit 0;
		}
		open(my $i, "<:raw", $in) or die "$in: $!\n";
		my $buf;
		while (my $n = sysread($i, $buf, 65536)) {
			for (my $off = 0; $off < $n;) {
				my $w = syswrite($s, $buf, $n - $off, $off);
				die "send: $!\n" unless defined $w;
				$off += $w;
			}
		}
		shutdown($s, 1) or die "shutdown: $!\n";
		waitpid($pid, 0);
		exit($? >> 8);' "$port" "$TMP/bulk.in" "$out"
	[ "$RC" = 0 ] ||
		HC_PROBLEMS+=("the half-closing client ended with status $RC (124: no EOF came back): $ERR")
	[ "$(sha256sum <"$out")" = "$want_sum" ] ||
		HC_PROBLEMS+=("the echo differs: $(wc -c <"$out") bytes came back, sha256 differs")
	if wait_count "$BE_ECHO_LOG" '^conn close ' $((closes + 1)) 5; then
		[ "$(grep '^conn close ' "$BE_ECHO_LOG" | tail -n 1)" = "conn close bytes=$BULK" ] ||
			HC_PROBLEMS+=("the backend did not count $BULK bytes")
	else
		HC_PROBLEMS+=("the backend connection did not end")
	fi
	wait_count "$SRV_ECHO_LOG" '"event":"conn_close"' $((srv_closes + 1)) 5 || true
	grep -F '"event":"conn_close"' "$SRV_ECHO_LOG" | tail -n 1 |
		grep -qF "\"why\":\"closed\",\"bytes_to_target\":$BULK,\"bytes_from_target\":$BULK," ||
		HC_PROBLEMS+=("the server's last conn_close is not an orderly close with $BULK bytes each way")
	rm -f -- "$out"
}

con_closes=$(log_count "$CON_BULK_LOG" conn_close)
halfclose_echo "$CON_PORT"
p=("${HC_PROBLEMS[@]+"${HC_PROBLEMS[@]}"}")
wait_count "$CON_BULK_LOG" '"event":"conn_close"' $((con_closes + 1)) 5 || true
grep -F '"event":"conn_close"' "$CON_BULK_LOG" | tail -n 1 |
	grep -qF "\"why\":\"closed\",\"bytes_to_target\":$BULK,\"bytes_from_target\":$BULK," ||
	p+=("the connector's last conn_close is not an orderly close with $BULK bytes each way")
verdict "TLS 1.3: 8 MiB echoed byte-identical after the app's half-close (connector)" \
	"${p[@]+"${p[@]}"}" -- "server log:" "$(tail -n 3 -- "$SRV_ECHO_LOG")" "connector log:" \
	"$(tail -n 3 -- "$CON_BULK_LOG")" "backend log:" "$(tail -n 3 -- "$BE_ECHO_LOG")"
stop_bg "$CON_PID"

# The same over TLS 1.2, whose close_notify the server must also take as a half-close: the
# TLS client is stunnel, held to TLS 1.2 (it passes the app's EOF on as close_notify and
# reads on).
start_stunnel client12 "client = yes" "connect = 127.0.0.1:$SRV_ECHO_PORT" \
	"cert = $C/client-chain.pem" "key = $C/client.key" "CAfile = $C/ca.pem" \
	"verifyChain = yes" "checkHost = server.test" "sslVersionMax = TLSv1.2"
halfclose_echo "$ST_PORT"
p=("${HC_PROBLEMS[@]+"${HC_PROBLEMS[@]}"}")
grep -F '"event":"conn_open"' "$SRV_ECHO_LOG" | tail -n 1 | grep -cF '"tls":"TLSv1.2"' >/dev/null ||
	p+=("the server's last connection was not TLS 1.2")
verdict "TLS 1.2: 8 MiB echoed byte-identical after the app's half-close (stunnel)" \
	"${p[@]+"${p[@]}"}" -- "server log:" "$(tail -n 3 -- "$SRV_ECHO_LOG")" "stunnel log:" \
	"$(tail -n 8 -- "$ST_LOG")" "backend log:" "$(tail -n 3 -- "$BE_ECHO_LOG")"
stop_bg "$ST_PID"

finish
