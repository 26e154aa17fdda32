#!/usr/bin/env bash
# OCSP in the daemons, against two real responders: `openssl ocsp` (an index file, answers
# signed by the issuing CA itself, nextUpdate a minute ahead) and the project's own
# `mtls ca serve` (/ocsp, answers signed by a delegated responder certificate).
#
# Stapling (openssl ocsp):
#   - mtls server --ocsp-staple fetches and staples an answer: `openssl s_client -status`
#     sees it good; its metrics say so; it is fetched again before its nextUpdate
#   - the connector takes a good staple even in hard-fail with a responder that fails
#   - a must-staple certificate (TLS feature status_request, made with openssl x509): mtls
#     server staples it without being told; the same certificate on `openssl s_server`
#     without a staple is refused by the connector (ocsp_missing)
#   - `openssl s_server -status_file` with an answer saying revoked: refused (revoked)
#   - a connector in hard-fail without a staple: refused (ocsp_unavailable) until it has
#     fetched the answer from the responder its server's certificate names, then accepted
# Peer checking (mtls ca serve), a server per mode, with a good, a revoked and an unknown
# client (made with openssl x509, so the CA never issued it):
#   - off: all accepted; soft-fail: accepted until the answer, then revoked refused,
#     unknown accepted; hard-fail: refused until the answer (ocsp_unavailable), then good
#     accepted, revoked refused (revoked), unknown refused (ocsp_unknown)
#   - soft-fail: a live connection let in before its answer came is closed when the answer
#     says revoked (revoked_while_connected)
#   - the responder down: off accepts; soft-fail accepts, counts and logs it; hard-fail
#     refuses (ocsp_unavailable) naming the responder and its failure
# And options refused at start: an unknown mode, a URL that is not http(s), stapling with no
# responder to ask, --ocsp-cache 0.
set -euo pipefail
BG_LIMIT=${BG_LIMIT:-280} # the responders and daemons live through it all
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

command -v curl >/dev/null || _lib_die "curl not found in PATH"

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca
TD=spiffe://example.org
I=$D/intermediate.pem

setup() {
	"$@" >"$TMP/setup.out" 2>&1 || {
		echo "(test setup) $* failed:" >&2
		cat -- "$TMP/setup.out" >&2
		exit 1
	}
}
issue() { # NAME PROFILE : a certificate of the CA (in its inventory)
	if [ "$2" = server ]; then
		setup "$MTLS" ca issue --dir "$D" --profile server --dns localhost --ip 127.0.0.1 \
			--out "$W/$1"
	else
		setup "$MTLS" ca issue --dir "$D" --profile client --uri "$TD/ns/dev/sa/$1" \
			--out "$W/$1"
	fi
}
# mkcert NAME PROFILE [EXTENSION LINE...] : a leaf signed with the CA's issuing key by
# openssl x509, which the CA's inventory does not know; W/NAME.pem, -chain.pem, .key
mkcert() {
	local name=$1 profile=$2 eku san
	shift 2
	if [ "$profile" = server ]; then
		eku=serverAuth san="DNS:localhost,IP:127.0.0.1"
	else
		eku=clientAuth san="URI:$TD/ns/dev/sa/$name"
	fi
	printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
		"extendedKeyUsage=$eku" "subjectAltName=$san" "subjectKeyIdentifier=hash" \
		"authorityKeyIdentifier=keyid" "$@" >"$W/$name.ext"
	setup openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$W/$name.key"
	chmod 600 "$W/$name.key"
	setup openssl req -new -key "$W/$name.key" -subj "/CN=$name" -out "$W/$name.csr"
	[ -s "$W/$name.serial" ] || serial "$name"
	setup openssl x509 -req -in "$W/$name.csr" -CA "$I" -CAkey "$D/intermediate.key" \
		-set_serial "0x$(cat -- "$W/$name.serial")" -days 30 -sha256 -extfile "$W/$name.ext" \
		-out "$W/$name.pem"
	cat -- "$W/$name.pem" "$I" >"$W/$name-chain.pem"
}
# serial NAME : a serial for a certificate mkcert makes later (W/NAME.serial, hex, positive)
serial() {
	printf '7%s\n' "$(openssl rand -hex 15 | tr a-f A-F)" >"$W/$1.serial"
}
# index_line NAME V|R : NAME's line in openssl ocsp's index (R: revoked an hour ago), by the
# serial of W/NAME.pem or, for a certificate not made yet, W/NAME.serial
index_line() {
	local s e r=""
	if [ -s "$W/$1.pem" ]; then
		s=$(openssl x509 -in "$W/$1.pem" -noout -serial | sed 's/^serial=//')
	else
		s=$(cat -- "$W/$1.serial")
	fi
	e=$(date -u -d '30 days' +%y%m%d%H%M%SZ)
	[ "$2" = R ] && r="$(date -u -d '1 hour ago' +%y%m%d%H%M%SZ),keyCompromise"
	printf '%s\t%s\t%s\t%s\tunknown\t/CN=%s\n' "$2" "$e" "$r" "$s" "$s"
}

setup "$MTLS" ca init --dir "$D"
issue srv server
issue good client
issue bad client
issue late client
issue down-off client
issue down-soft client
issue down-hard client
issue conn client
mkcert unknown client
mkcert rsrv server
serial must
serial srv2

# --- the responders ------------------------------------------------------------------------
# openssl ocsp knows srv, rsrv (revoked), and must and srv2, made once its port is known
{
	index_line srv V
	index_line must V
	index_line rsrv R
	index_line srv2 V
} >"$W/index.txt"
start_bg "$W/ocsp.log" openssl ocsp -index "$W/index.txt" -port 0 -CA "$I" -rsigner "$I" \
	-rkey "$D/intermediate.key" -nmin 1
OCSP_PID=$BG_PID
wait_for_line "$W/ocsp.log" '^ACCEPT .*:[0-9]+ ' "$READY_LIMIT" "$OCSP_PID" || {
	cat -- "$W/ocsp.log" >&2
	_lib_die "openssl ocsp did not start"
}
OP=$(sed -n 's/^ACCEPT .*:\([0-9][0-9]*\) .*/\1/p' "$W/ocsp.log" | head -n1)
OURL=http://127.0.0.1:$OP/
# the certificates whose responder is openssl ocsp name it (authorityInfoAccess): made now
mkcert must server "tlsfeature=status_request" "authorityInfoAccess=OCSP;URI:$OURL"
mkcert srv2 server "authorityInfoAccess=OCSP;URI:$OURL"

start_bg "$W/serve.log" "$MTLS" ca serve --dir "$D" --listen 127.0.0.1:0 \
	--http-listen 127.0.0.1:0 --admin-uri "$TD/ns/prod/sa/admin"
SERVE_PID=$BG_PID
wait_for_line "$W/serve.log" '"event":"http_listening"' "$READY_LIMIT" "$SERVE_PID" || {
	cat -- "$W/serve.log" >&2
	_lib_die "mtls ca serve did not start"
}
HP=$(_daemon_port "$W/serve.log" http_listening)
MURL=http://127.0.0.1:$HP/ocsp

start_backend "$TMP/be.log"

# --- helpers ---------------------------------------------------------------------------------
REASONS=(revoked ocsp_unavailable ocsp_unknown ocsp_missing)
failed_series() { printf 'mtls_handshakes_total{result="failed",reason="%s"}' "$1"; }

# judge METRICS PID OKFILE : until the daemon's counters say how the last connection went:
# OUTCOME is "accepted" (a handshake ok, and OKFILE non-empty if given) or the reason of a
# refusal counted; "none" if neither within 20 s. Stops PID (the client) after.
declare -A BEFORE
snapshot() {
	local r
	BEFORE[ok]=$(metric "$1" 'mtls_handshakes_total{result="ok"}')
	for r in "${REASONS[@]}"; do
		BEFORE[$r]=$(metric "$1" "$(failed_series "$r")")
	done
}
judge() {
	local m=$1 pid=$2 okfile=${3:-} n=400 v r
	OUTCOME=none
	while [ "$n" -gt 0 ]; do
		v=$(metric "$m" 'mtls_handshakes_total{result="ok"}')
		if [ "${v:-0}" -gt "${BEFORE[ok]:-0}" ] &&
			{ [ -z "$okfile" ] || grep -q '^hello$' "$okfile"; }; then
			OUTCOME=accepted
			break
		fi
		for r in "${REASONS[@]}"; do
			v=$(metric "$m" "$(failed_series "$r")")
			if [ "${v:-0}" -gt "${BEFORE[$r]:-0}" ]; then
				OUTCOME=$r
				break 2
			fi
		done
		sleep 0.05
		n=$((n - 1))
	done
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}
# as_client PORT METRICS NAME [any] : one connection to an mtls server as client NAME, a line
# through it; OUTCOME by the server's counters ("accepted" needs the line back, unless
# "any": a connection that a re-check may close at once)
as_client() {
	snapshot "$2"
	printf 'hello\n' >"$W/hello.in"
	timeout 20 openssl s_client -connect "127.0.0.1:$1" -quiet -cert "$W/$3.pem" \
		-cert_chain "$W/$3-chain.pem" -key "$W/$3.key" -CAfile "$D/root.pem" \
		<"$W/hello.in" >"$W/hello.out" 2>&1 &
	if [ "${4:-}" = any ]; then
		judge "$2" $!
	else
		judge "$2" $! "$W/hello.out"
	fi
}
# via_connector PORT METRICS : one plaintext connection to a connector; OUTCOME by the
# connector's counters (its handshake with the server)
via_connector() {
	snapshot "$2"
	# shellcheck disable=SC2016 # $1 is the inner shell's
	timeout 20 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"; printf "hello\n" >&3; sleep 30' \
		_ "$1" 2>/dev/null &
	judge "$2" $!
}
# wait_metric PORT SERIES MIN : until SERIES >= MIN (30 s); 0 if it got there
wait_metric() {
	local n=600 v
	while [ "$n" -gt 0 ]; do
		v=$(metric "$1" "$2")
		[ -n "$v" ] && [ "${v%.*}" -ge "$3" ] && return 0
		sleep 0.05
		n=$((n - 1))
	done
	return 1
}
# wait_log FILE EVENT TEXT : until FILE has an EVENT line with TEXT (30 s)
wait_log() {
	local n=300
	while [ "$n" -gt 0 ]; do
		[ "$(log_count "$1" "$2" "$3")" -ge 1 ] && return 0
		sleep 0.1
		n=$((n - 1))
	done
	return 1
}
CLIENT=(--cert "$W/conn-chain.pem" --key "$W/conn.key" --ca "$D/root.pem" --server-name localhost
	--metrics 127.0.0.1:0 --watch-interval 0)
SERVER=(--target "127.0.0.1:$BE_PORT" --ca "$D/root.pem" --allow-any-identity --metrics 127.0.0.1:0
	--watch-interval 0)

echo "# options refused at start, each in one line"
# refused CASE WORDS ARGS... : mtls ARGS exits 2 with one line containing WORDS
refused() {
	local name=$1 words=$2
	shift 2
	run "$MTLS" "$@" --listen 127.0.0.1:0 --ca "$D/root.pem" --cert "$W/srv-chain.pem" \
		--key "$W/srv.key" --log-format json
	if [ "$RC" = 2 ] && [[ $ERR == *"$words"* ]] && [ "$(printf '%s\n' "$ERR" | grep -c '^mtls ')" = 1 ]; then
		pass "$name"
	else
		fail "$name" "exit $RC" "$ERR"
	fi
}
refused "--ocsp with a mode that does not exist" "--ocsp 'maybe': give off, soft-fail or hard-fail" \
	server --target "127.0.0.1:$BE_PORT" --allow-any-identity --ocsp maybe
refused "--ocsp-staple on the connector (a server option)" "unknown option '--ocsp-staple'" \
	connector --server "127.0.0.1:$BE_PORT" --ocsp-staple
refused "--ocsp-url that is not http(s)" "give an http:// or https:// URL" \
	server --target "127.0.0.1:$BE_PORT" --allow-any-identity --ocsp soft-fail --ocsp-url ftp://x/
refused "--ocsp-staple for a certificate that names no responder, without --ocsp-url" \
	"names none (no authorityInfoAccess OCSP)" \
	server --target "127.0.0.1:$BE_PORT" --allow-any-identity --ocsp-staple
refused "--ocsp-cache 0" "--ocsp-cache 0 is out of range" \
	server --target "127.0.0.1:$BE_PORT" --allow-any-identity --ocsp-cache 0

echo "# stapling (openssl ocsp)"
start_tunnel_server "$W/st.log" "${SERVER[@]}" --cert "$W/srv-chain.pem" --key "$W/srv.key" \
	--ocsp-staple --ocsp-url "$OURL"
ST_PORT=$SRV_PORT ST_M=$SRV_METRICS
p=()
wait_metric "$ST_M" 'mtls_ocsp_staple_valid' 1 || p+=("no valid staple (mtls_ocsp_staple_valid)")
run openssl s_client -connect "127.0.0.1:$ST_PORT" -status -CAfile "$D/root.pem" \
	-cert "$W/good-chain.pem" -key "$W/good.key"
has_line "$OUT" "    OCSP Response Status: successful (0x0)" || p+=("s_client -status saw no successful OCSP response")
[[ $OUT == *"Cert Status: good"* ]] || p+=("s_client -status saw no good status")
[ "$(log_count "$W/st.log" ocsp_staple '"status":"good"')" -ge 1 ] || p+=("no ocsp_staple line with status good")
STAPLE_NEXT=$(metric "$ST_M" mtls_ocsp_staple_next_update_seconds)
[ -n "$STAPLE_NEXT" ] || p+=("no mtls_ocsp_staple_next_update_seconds")
verdict "mtls server --ocsp-staple: openssl s_client -status sees a good staple, its metrics too" \
	"${p[@]+"${p[@]}"}" -- "$OUT" "$(cat -- "$W/st.log")"

# the connector's own responder fails (the server's metrics port answers POST with 405): only
# the staple can let the server in
start_tunnel_connector "$W/c-st.log" "${CLIENT[@]}" --server "127.0.0.1:$ST_PORT" \
	--ocsp hard-fail --ocsp-url "http://127.0.0.1:$ST_M/"
via_connector "$CON_PORT" "$CON_METRICS"
p=()
[ "$OUTCOME" = accepted ] || p+=("the connector did not accept the server with a good staple: $OUTCOME")
v=$(metric "$CON_METRICS" 'mtls_ocsp_requests_total{kind="peer",result="error"}')
[ "$v" = 0 ] || p+=("the connector asked its responder although the server stapled ($v errors)")
verdict "connector in hard-fail: a good staple lets the server in without asking a responder" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/c-st.log")"
stop_bg "$CON_PID"

start_tunnel_server "$W/must.log" "${SERVER[@]}" --cert "$W/must-chain.pem" --key "$W/must.key"
MUST_PORT=$SRV_PORT MUST_M=$SRV_METRICS MUST_PID=$SRV_PID
start_tunnel_connector "$W/c-must.log" "${CLIENT[@]}" --server "127.0.0.1:$MUST_PORT"
p=()
wait_metric "$MUST_M" 'mtls_ocsp_staple_valid' 1 ||
	p+=("mtls server did not staple for its must-staple certificate (from its authorityInfoAccess)")
via_connector "$CON_PORT" "$CON_METRICS"
[ "$OUTCOME" = accepted ] || p+=("the connector refused the must-staple server that staples: $OUTCOME")
verdict "a must-staple certificate: mtls server staples it unasked, from the responder it names; accepted" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/must.log")" "$(cat -- "$W/c-must.log")"
stop_bg "$CON_PID"
stop_bg "$MUST_PID"

# (-www: s_server does not read its stdin, whose end would stop it)
start_s_server "$W/ss-must.log" -www -cert "$W/must.pem" -key "$W/must.key" -cert_chain "$I"
SS_MUST=$SS_PID
start_tunnel_connector "$W/c-ssm.log" "${CLIENT[@]}" --server "127.0.0.1:$SS_PORT"
via_connector "$CON_PORT" "$CON_METRICS"
p=()
[ "$OUTCOME" = ocsp_missing ] || p+=("outcome $OUTCOME, expected ocsp_missing")
[ "$(log_count "$W/c-ssm.log" handshake_refused 'must-staple')" -ge 1 ] ||
	p+=("no handshake_refused line that says must-staple")
verdict "openssl s_server with the must-staple certificate and no staple: refused (ocsp_missing)" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/c-ssm.log")"
stop_bg "$CON_PID"
stop_bg "$SS_MUST"

setup openssl ocsp -issuer "$I" -cert "$W/rsrv.pem" -url "$OURL" -respout "$W/rsrv.der" -noverify
start_s_server "$W/ss-rev.log" -www -cert "$W/rsrv.pem" -key "$W/rsrv.key" -cert_chain "$I" \
	-status_file "$W/rsrv.der"
SS_REV=$SS_PID
start_tunnel_connector "$W/c-ssr.log" "${CLIENT[@]}" --server "127.0.0.1:$SS_PORT"
via_connector "$CON_PORT" "$CON_METRICS"
p=()
[ "$OUTCOME" = revoked ] || p+=("outcome $OUTCOME, expected revoked")
[ "$(log_count "$W/c-ssr.log" handshake_refused 'stapled')" -ge 1 ] ||
	p+=("no handshake_refused line that names the stapled answer")
verdict "openssl s_server stapling an answer that says revoked: refused (revoked), mode off" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/c-ssr.log")"
stop_bg "$CON_PID"
stop_bg "$SS_REV"

echo "# the connector checks a server that does not staple (openssl ocsp, from the certificate)"
start_tunnel_server "$W/s2.log" "${SERVER[@]}" --cert "$W/srv2-chain.pem" --key "$W/srv2.key"
S2_PID=$SRV_PID
start_tunnel_connector "$W/c-s2.log" "${CLIENT[@]}" --server "127.0.0.1:$SRV_PORT" --ocsp hard-fail
p=()
via_connector "$CON_PORT" "$CON_METRICS"
[ "$OUTCOME" = ocsp_unavailable ] || p+=("first connection: $OUTCOME, expected ocsp_unavailable")
wait_metric "$CON_METRICS" 'mtls_ocsp_requests_total{kind="peer",result="good"}' 1 ||
	p+=("the connector did not fetch the answer from $OURL")
via_connector "$CON_PORT" "$CON_METRICS"
[ "$OUTCOME" = accepted ] || p+=("once answered: $OUTCOME, expected accepted")
verdict "connector in hard-fail, no staple: refused until the answer from the certificate's responder, then accepted" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/c-s2.log")"
stop_bg "$CON_PID"
stop_bg "$S2_PID"

echo "# peer checking in each mode (mtls ca serve)"
setup "$MTLS" ca revoke --dir "$D" --cert "$W/bad.pem" --reason keyCompromise
setup "$MTLS" ca revoke --dir "$D" --cert "$W/late.pem" --reason keyCompromise
# mode_server MODE : an mtls server with --ocsp MODE asking mtls ca serve
mode_server() {
	start_tunnel_server "$W/$1.log" "${SERVER[@]}" --cert "$W/srv-chain.pem" \
		--key "$W/srv.key" --ocsp "$1" --ocsp-url "$MURL"
}
# (read by expect, through ${!port} and ${!metrics})
mode_server off
# shellcheck disable=SC2034
PORT_off=$SRV_PORT M_off=$SRV_METRICS
mode_server soft-fail
PORT_soft_fail=$SRV_PORT M_soft_fail=$SRV_METRICS
mode_server hard-fail
# shellcheck disable=SC2034
PORT_hard_fail=$SRV_PORT M_hard_fail=$SRV_METRICS

# expect MODE CLIENT OUTCOME... : the client's connection ends as one of the outcomes
# (EXPECT_ANY=any: accepted without waiting for the line back)
expect() {
	local mode=$1 client=$2 port metrics
	shift 2
	port=PORT_${mode//-/_} metrics=M_${mode//-/_}
	as_client "${!port}" "${!metrics}" "$client" "${EXPECT_ANY:-}"
	local o
	for o in "$@"; do
		[ "$OUTCOME" = "$o" ] && return 0
	done
	p+=("$mode, client $client: $OUTCOME, expected $*")
}

p=()
for c in good bad unknown; do expect off "$c" accepted; done
verdict "off: good, revoked and unknown clients all accepted" "${p[@]+"${p[@]}"}" -- \
	"$(cat -- "$W/off.log")"

p=()
# the revoked one's answer may close its connection before the line comes back, or on a busy
# machine come before its handshake ends (then it is refused, as it should be: the live close
# is the "late" client's case below, with the responder held)
EXPECT_ANY=any expect soft-fail good accepted
EXPECT_ANY=any expect soft-fail bad accepted revoked
EXPECT_ANY=any expect soft-fail unknown accepted
for r in good revoked unknown; do
	wait_metric "$M_soft_fail" "mtls_ocsp_requests_total{kind=\"peer\",result=\"$r\"}" 1 ||
		p+=("soft-fail: no answer '$r' fetched")
done
expect soft-fail good accepted
expect soft-fail bad revoked
expect soft-fail unknown accepted
[ "$(log_count "$W/soft-fail.log" handshake_refused "$MURL")" -ge 1 ] ||
	p+=("soft-fail: the revoked client's refusal does not name the responder")
verdict "soft-fail: accepted before the answer; then good accepted, revoked refused, unknown accepted" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/soft-fail.log")"

p=()
for c in good bad unknown; do expect hard-fail "$c" ocsp_unavailable; done
for r in good revoked unknown; do
	wait_metric "$M_hard_fail" "mtls_ocsp_requests_total{kind=\"peer\",result=\"$r\"}" 1 ||
		p+=("hard-fail: no answer '$r' fetched")
done
expect hard-fail good accepted
expect hard-fail bad revoked
expect hard-fail unknown ocsp_unknown
verdict "hard-fail: refused before the answer (ocsp_unavailable); then good accepted, revoked refused, unknown refused (ocsp_unknown)" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/hard-fail.log")"

echo "# soft-fail: a live connection let in before its answer is closed when it says revoked"
start_tunnel_connector "$W/c-late.log" --cert "$W/late-chain.pem" --key "$W/late.key" \
	--ca "$D/root.pem" --server-name localhost --watch-interval 0 \
	--server "127.0.0.1:$PORT_soft_fail"
p=()
# the responder is held stopped until the connection is in: on a busy machine its answer
# could otherwise come before the handshake ends, and the client be refused instead
SERVE_CHILD=$(pgrep -P "$SERVE_PID") || _lib_die "no mtls ca serve under $SERVE_PID"
kill -STOP "$SERVE_CHILD"
exec 5<>"/dev/tcp/127.0.0.1/$CON_PORT"
printf 'late\n' >&5
wait_log "$W/soft-fail.log" conn_open "$TD/ns/dev/sa/late" ||
	p+=("the revoked client was not let in (soft-fail, no answer yet)")
kill -CONT "$SERVE_CHILD"
# its line may come back or not: the answer may close the connection first; then EOF
rc=0
while :; do
	read -r -t 20 -u 5 line || {
		rc=$?
		break
	}
done
[ "$rc" = 1 ] || p+=("its connection stayed open after the answer said revoked (read: $rc)")
exec 5>&-
wait_log "$W/soft-fail.log" conn_close revoked_while_connected ||
	p+=("no conn_close line with why revoked_while_connected")
[ "$(log_count "$W/soft-fail.log" recheck '"trigger":"ocsp"')" -ge 1 ] ||
	p+=("no recheck line with trigger ocsp")
v=$(metric "$M_soft_fail" 'mtls_connections_closed_by_recheck_total{reason="revoked"}')
[ "${v:-0}" -ge 1 ] || p+=("mtls_connections_closed_by_recheck_total{reason=\"revoked\"} is '$v'")
verdict "soft-fail: the live connection is closed once the answer says revoked (revoked_while_connected)" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/soft-fail.log")"
stop_bg "$CON_PID"

echo "# the responder down"
stop_bg "$SERVE_PID"
p=()
expect off down-off accepted
verdict "responder down, off: accepted" "${p[@]+"${p[@]}"}" -- "$(cat -- "$W/off.log")"

p=()
soft=$(metric "$M_soft_fail" mtls_ocsp_soft_fail_total)
expect soft-fail down-soft accepted
wait_metric "$M_soft_fail" 'mtls_ocsp_requests_total{kind="peer",result="error"}' 1 ||
	p+=("soft-fail: the failed fetch is not counted")
v=$(metric "$M_soft_fail" mtls_ocsp_soft_fail_total)
[ "${v:-0}" -gt "${soft:-0}" ] || p+=("mtls_ocsp_soft_fail_total did not grow ($soft -> $v)")
[ "$(log_count "$W/soft-fail.log" tls_warning 'soft-fail')" -ge 1 ] ||
	p+=("no tls_warning line about the soft-fail acceptance")
wait_log "$W/soft-fail.log" ocsp_fetch_failed "$MURL" || p+=("no ocsp_fetch_failed line naming the responder")
expect soft-fail down-soft accepted
[ "$(log_count "$W/soft-fail.log" tls_warning 'failed')" -ge 1 ] ||
	p+=("no tls_warning line that says the responder failed")
verdict "responder down, soft-fail: accepted, counted (mtls_ocsp_soft_fail_total, fetch errors) and logged" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/soft-fail.log")"

p=()
expect hard-fail down-hard ocsp_unavailable
wait_metric "$M_hard_fail" 'mtls_ocsp_requests_total{kind="peer",result="error"}' 1 ||
	p+=("hard-fail: the failed fetch is not counted")
expect hard-fail down-hard ocsp_unavailable
line=$(grep -F '"event":"handshake_refused"' "$W/hard-fail.log" | grep -F ocsp_unavailable | tail -n1)
[[ $line == *"$MURL"* ]] || p+=("the refusal does not name the responder: $line")
[[ $line == *"failed ("* ]] || p+=("the refusal does not say the responder failed: $line")
[[ $line == *"soft-fail"* ]] || p+=("the refusal does not say what to do: $line")
verdict "responder down, hard-fail: refused (ocsp_unavailable), naming the responder and its failure" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/hard-fail.log")"

echo "# the staple is fetched again before its nextUpdate"
p=()
wait_metric "$ST_M" 'mtls_ocsp_requests_total{kind="staple",result="good"}' 2 ||
	wait_metric "$ST_M" 'mtls_ocsp_requests_total{kind="staple",result="good"}' 2 ||
	p+=("the staple was not fetched again")
v=$(metric "$ST_M" mtls_ocsp_staple_next_update_seconds)
[ "${v:-0}" -gt "${STAPLE_NEXT:-0}" ] || p+=("its nextUpdate did not move ($STAPLE_NEXT -> $v)")
[ "$(metric "$ST_M" mtls_ocsp_staple_valid)" = 1 ] || p+=("no valid staple after the refresh")
verdict "the staple (nextUpdate a minute ahead) is fetched again before it expires" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/st.log")"

finish
