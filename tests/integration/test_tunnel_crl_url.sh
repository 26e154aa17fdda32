#!/usr/bin/env bash
# --crl-url: mtls server fetches its CRL from a real `mtls ca serve` (plain-HTTP /crl) in the
# background, verifies it and applies it through the reload:
#   - a client is accepted; revoked with `mtls ca revoke --dir`, its new handshakes are
#     refused (revoked) once the service publishes the new CRL
#   - the CA service stopped: the server keeps serving with the last good CRL, counts fetch
#     errors and says so (crl_fetch_failed)
#   - at a URL serving garbage, a foreign CA's CRL, an older CRL: each refused with its
#     reason, the CRL in use kept (the client still accepted, no reload)
#   - the metrics: mtls_crl_fetch_total, mtls_crl_age_seconds, mtls_crl_configured; no
#     mtls_crl_next_update_seconds on a daemon without CRLs
#   - mtls connector --crl-url likewise (the server it reaches is checked against it)
set -euo pipefail
BG_LIMIT=${BG_LIMIT:-150} # the CA service, the backend and the daemons live through it all
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

command -v curl >/dev/null || _lib_die "curl not found in PATH"
command -v python3 >/dev/null || _lib_die "python3 not found in PATH (the plain HTTP server)"

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca
TD=spiffe://example.org
"$MTLS" ca init --dir "$D" >/dev/null 2>&1 || _lib_die "(setup) mtls ca init failed"
"$MTLS" ca init --dir "$W/other-ca" >/dev/null 2>&1 || _lib_die "(setup) the foreign CA"
"$MTLS" ca issue --dir "$D" --profile server --dns localhost --ip 127.0.0.1 --out "$W/srv" \
	>/dev/null 2>&1 || _lib_die "(setup) the server certificate"
"$MTLS" ca issue --dir "$D" --profile client --uri "$TD/ns/dev/sa/app" --out "$W/app" \
	>/dev/null 2>&1 || _lib_die "(setup) the client certificate"
"$MTLS" ca issue --dir "$D" --profile client --uri "$TD/ns/dev/sa/other" --out "$W/other" \
	>/dev/null 2>&1 || _lib_die "(setup) the second client certificate"

start_bg "$W/serve.log" "$MTLS" ca serve --dir "$D" --listen 127.0.0.1:0 \
	--http-listen 127.0.0.1:0 --admin-uri "$TD/ns/prod/sa/admin"
SERVE_PID=$BG_PID
wait_for_line "$W/serve.log" '"event":"http_listening"' "$READY_LIMIT" "$SERVE_PID" || {
	cat -- "$W/serve.log" >&2
	_lib_die "mtls ca serve did not start"
}
HP=$(_daemon_port "$W/serve.log" http_listening)

start_backend "$TMP/be.log"
SRV=(--target "127.0.0.1:$BE_PORT" --cert "$W/srv-chain.pem" --key "$W/srv.key"
	--ca "$D/root.pem" --allow-any-identity --drain-timeout 100ms --metrics 127.0.0.1:0)

# hello PORT METRICS PREFIX : one TLS connection as the client PREFIX (.pem, -chain.pem,
# .key) with a line through it. Sets HELLO to what the server made of it, by its counters:
# "accepted" (a handshake ok and the line came back), "revoked" (refused, reason revoked),
# or "other".
hello() {
	local ok rev pid n=400 v
	ok=$(metric "$2" 'mtls_handshakes_total{result="ok"}')
	rev=$(metric "$2" 'mtls_handshakes_total{result="failed",reason="revoked"}')
	# -quiet ignores the end of its input and waits for the server to close: the answer is
	# polled for, then the client stopped
	printf 'hello\n' >"$W/hello.in"
	timeout 20 openssl s_client -connect "127.0.0.1:$1" -quiet -cert "$3.pem" \
		-cert_chain "$3-chain.pem" -key "$3.key" -CAfile "$D/root.pem" \
		<"$W/hello.in" >"$W/hello.out" 2>&1 &
	pid=$!
	HELLO=other
	while [ "$n" -gt 0 ]; do
		v=$(metric "$2" 'mtls_handshakes_total{result="ok"}')
		if [ "${v:-0}" -gt "${ok:-0}" ] && grep -q '^hello$' "$W/hello.out"; then
			HELLO=accepted
			break
		fi
		v=$(metric "$2" 'mtls_handshakes_total{result="failed",reason="revoked"}')
		if [ "${v:-0}" -gt "${rev:-0}" ]; then
			HELLO=revoked
			break
		fi
		sleep 0.05
		n=$((n - 1))
	done
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}
# admitted / refused_revoked PORT METRICS PREFIX : did hello end so?
admitted() {
	hello "$@"
	[ "$HELLO" = accepted ]
}
refused_revoked() {
	hello "$@"
	[ "$HELLO" = revoked ]
}
# wait_metric PORT SERIES MIN : until SERIES >= MIN (generous: 30 s); 0 if it got there.
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

echo "# a client accepted, then revoked through the CA service's CRL"
start_tunnel_server "$W/s1.log" "${SRV[@]}" --crl-refresh 1s --crl-url "http://127.0.0.1:$HP/crl" \
	--crl-cache "$W/s1-crl.pem"
S1=$SRV_PID
M1=$SRV_METRICS
p=()
[ -s "$W/s1-crl.pem" ] || p+=("no CRL in --crl-cache after the start")
cp -- "$W/s1-crl.pem" "$W/crl-v1.pem"
admitted "$SRV_PORT" "$SRV_METRICS" "$W/app" || p+=("the client was not let in before its revocation")
[ "$(metric "$M1" mtls_crl_configured)" = 1 ] || p+=("mtls_crl_configured is not 1")
[ -n "$(metric "$M1" mtls_crl_next_update_seconds)" ] || p+=("no mtls_crl_next_update_seconds")
age=$(metric "$M1" mtls_crl_age_seconds)
{ [ -n "$age" ] && [ "$age" -ge 0 ] && [ "$age" -lt 86400 ]; } || p+=("mtls_crl_age_seconds is '$age'")
wait_metric "$M1" 'mtls_crl_fetch_total{result="not_modified"}' 1 ||
	p+=("no conditional fetch answered 304 (not_modified)")
verdict "the CRL of mtls ca serve fetched at start, cached, its gauges exported; the client is accepted" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/s1.log")"

serial=$(openssl x509 -in "$W/app.pem" -noout -serial | sed 's/^serial=//')
reloads=$(metric "$M1" 'mtls_reloads_total{result="ok"}')
run "$MTLS" ca revoke --dir "$D" --serial "$serial" --reason keyCompromise
p=()
[ "$RC" = 0 ] || p+=("mtls ca revoke failed: $ERR")
wait_metric "$M1" 'mtls_reloads_total{result="ok"}' $((reloads + 1)) ||
	p+=("the new CRL was not loaded (no reload)")
refused_revoked "$SRV_PORT" "$SRV_METRICS" "$W/app" || p+=("the revoked client is still let in")
wait_metric "$M1" 'mtls_handshakes_total{result="failed",reason="revoked"}' 1 ||
	p+=("the refusal is not counted as revoked")
admitted "$SRV_PORT" "$SRV_METRICS" "$W/other" || p+=("the other client is no longer let in")
# (a reload is counted before it is logged, and the log thread writes the line later)
wait_for_line "$W/s1.log" '"event":"reload".*"trigger":"crl_fetch"' "$READY_LIMIT" ||
	p+=("no reload with trigger crl_fetch")
verdict "revoked at the CA: the fetched CRL refuses the client (revoked), the other one still in" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/s1.log")"

# signals are the main loop's: the fetch thread must not take (and die of) a SIGHUP
reloads=$(metric "$M1" 'mtls_reloads_total{result="ok"}')
kill -HUP "$SRV_REAL"
p=()
wait_metric "$M1" 'mtls_reloads_total{result="ok"}' $((reloads + 1)) || p+=("SIGHUP did not reload")
kill -0 "$SRV_REAL" 2>/dev/null || p+=("the server died of SIGHUP")
# SIGHUP parses the options again: the fetched CRL's cache must stay one of the CRL files
refused_revoked "$SRV_PORT" "$SRV_METRICS" "$W/app" || p+=("after SIGHUP the revoked client is let in again")
wait_for_line "$W/s1.log" '"event":"reload".*"trigger":"SIGHUP"' "$READY_LIMIT" || true
[ "$(log_count "$W/s1.log" reload '"trigger":"SIGHUP"')" = 1 ] || p+=("no reload with trigger SIGHUP")
verdict "SIGHUP with the fetch thread running: a reload, not a death" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/s1.log")"

echo "# the connector: the server's certificate checked against the fetched CRL"
start_tunnel_connector "$W/c1.log" --server "127.0.0.1:$SRV_PORT" --cert "$W/other-chain.pem" \
	--key "$W/other.key" --ca "$D/root.pem" --metrics 127.0.0.1:0 --crl-refresh 1s \
	--crl-url "http://127.0.0.1:$HP/crl" --crl-cache "$W/c1-crl.pem"
p=()
[ -s "$W/c1-crl.pem" ] || p+=("no CRL in the connector's --crl-cache")
[ "$(metric "$CON_METRICS" mtls_crl_configured)" = 1 ] || p+=("mtls_crl_configured is not 1")
wait_metric "$CON_METRICS" 'mtls_crl_fetch_total{result="not_modified"}' 1 ||
	p+=("the connector does not fetch on its schedule")
got=
if exec {fd}<>"/dev/tcp/127.0.0.1/$CON_PORT"; then
	printf 'through\n' >&"$fd"
	IFS= read -r -t 10 got <&"$fd" || true
	exec {fd}>&-
fi
[[ $got == *through* ]] || p+=("nothing came back through connector and server ('$got')")
stop_bg "$CON_PID"
verdict "mtls connector --crl-url: fetched, cached, on its schedule; the server (not revoked) is reached" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/c1.log")"

echo "# the CA service down: the last good CRL kept"
stop_bg "$SERVE_PID"
errors=$(metric "$M1" 'mtls_crl_fetch_total{result="error"}')
p=()
wait_metric "$M1" 'mtls_crl_fetch_total{result="error"}' $((errors + 2)) ||
	p+=("fetch errors are not counted")
admitted "$SRV_PORT" "$SRV_METRICS" "$W/other" || p+=("the server stopped letting the good client in")
refused_revoked "$SRV_PORT" "$SRV_METRICS" "$W/app" || p+=("the revoked client is let in with the CRL server down")
# Rate-limited: a line when the streak begins and when its reason changes (the held long poll
# torn, then the connection refused), never the same reason twice within the streak.
# (a failure is counted before it is logged, and the log thread writes the line later)
wait_for_line "$W/s1.log" '"event":"crl_fetch_failed"' "$READY_LIMIT" || true
n=$(log_count "$W/s1.log" crl_fetch_failed)
[ "$n" -ge 1 ] || p+=("no crl_fetch_failed line")
[ "$(log_count "$W/s1.log" crl_fetch_failed 'keeping the last good CRL')" = "$n" ] ||
	p+=("crl_fetch_failed does not say the last good CRL is kept")
reasons=$(grep -F '"event":"crl_fetch_failed"' "$W/s1.log" | sed -n 's/.*"reason":"\([^"]*\)".*/\1/p' | tr -d 0-9)
[ "$(printf '%s\n' "$reasons" | sort | uniq -d)" = "" ] ||
	p+=("a crl_fetch_failed reason logged twice within the streak (not rate-limited)")
kill -0 "$S1" 2>/dev/null || p+=("the server died")
verdict "the CRL server down: still serving with the last good CRL, errors counted, warnings rate-limited" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/s1.log")"
stop_bg "$S1"

echo "# a restart with the CRL server down: the cached CRL"
start_tunnel_server "$W/s1b.log" "${SRV[@]}" --crl-refresh 1s --crl-url "http://127.0.0.1:$HP/crl" \
	--crl-cache "$W/s1-crl.pem"
p=()
admitted "$SRV_PORT" "$SRV_METRICS" "$W/other" || p+=("the good client is not let in after the restart")
refused_revoked "$SRV_PORT" "$SRV_METRICS" "$W/app" || p+=("the revoked client is let in after the restart")
stop_bg "$SRV_PID"
verdict "restarted while the CRL server is down: the cached CRL is in force" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/s1b.log")"

LAST_CMD="mtls server --crl-url (nothing there, no cache)"
run "$MTLS" server --listen 127.0.0.1:0 "${SRV[@]}" --crl-refresh 1s --crl-url "http://127.0.0.1:$HP/crl" \
	--crl-cache "$W/none.pem"
p=()
[ "$RC" = 2 ] || p+=("exit status $RC, not 2")
[[ $ERR == *"no CRL yet"*"start when the URL serves the CRL"* ]] || p+=("the message does not say what is wrong and what to do")
report "no cache and the CRL server down: refused to start, saying what to do" "${p[@]+"${p[@]}"}"

# refused [ARGS...] TEXT : mtls server with ARGS exits 2 saying TEXT
refused() {
	local text=${*: -1}
	LAST_CMD="mtls server ${*:1:$#-1}"
	run "$MTLS" server --listen 127.0.0.1:0 "${SRV[@]}" "${@:1:$#-1}"
	p=()
	[ "$RC" = 2 ] || p+=("exit status $RC, not 2")
	[[ $ERR == *"$text"* ]] || p+=("the message does not say '$text'")
	report "refused: ${*:1:$#-1}" "${p[@]+"${p[@]}"}"
}
refused --crl-url "http://127.0.0.1:$HP/crl" "--crl-url needs --crl-cache FILE"
refused --crl-cache "$W/x.pem" "--crl-cache, --crl-refresh and --crl-push go with --crl-url"
refused --crl-url "http://127.0.0.1:$HP/crl" --crl-cache "$W/x.pem" --crl-refresh 30 "--crl-refresh"
refused --crl-url "ftp://127.0.0.1/crl" --crl-cache "$W/x.pem" "give an http:// or https:// URL"

echo "# what is served at the URL is verified before it replaces the CRL in use"
WWW=$W/www
mkdir -- "$WWW"
cp -- "$W/s1-crl.pem" "$WWW/crl"
t=$(($(date +%s) - 1000))
touch -d "@$t" "$WWW/crl"
start_bg "$W/http.log" python3 -u -m http.server --bind 127.0.0.1 --directory "$WWW" 0
HTTP_PID=$BG_PID
wait_for_line "$W/http.log" 'port [0-9]+' "$READY_LIMIT" "$HTTP_PID" || _lib_die "python3 http.server did not start"
PP=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$W/http.log" | head -n 1)
cp -- "$W/s1-crl.pem" "$W/s2-crl.pem"
start_tunnel_server "$W/s2.log" "${SRV[@]}" --crl-refresh 1s --crl-url "http://127.0.0.1:$PP/crl" \
	--crl-cache "$W/s2-crl.pem"
M2=$SRV_METRICS
wait_metric "$M2" 'mtls_crl_fetch_total{result="ok"}' 1 || true
# serve FILE : put FILE at the URL (a newer Last-Modified each time, so no 304), and wait for
# two more fetch errors.
k=0
serve() {
	local e
	k=$((k + 1))
	e=$(metric "$M2" 'mtls_crl_fetch_total{result="error"}')
	cp -- "$1" "$WWW/crl.new"
	touch -d "@$((t + k * 10))" "$WWW/crl.new"
	mv -- "$WWW/crl.new" "$WWW/crl"
	wait_metric "$M2" 'mtls_crl_fetch_total{result="error"}' $((e + 2))
}
head -c 3000 /dev/urandom >"$W/garbage"
openssl crl -in "$W/other-ca/crl.pem" -outform DER -out "$W/foreign.der" 2>/dev/null ||
	_lib_die "(setup) the foreign CRL"
reloads=$(metric "$M2" 'mtls_reloads_total{result="ok"}')
p=()
serve "$W/garbage" || p+=("garbage: no fetch errors counted")
serve "$W/foreign.der" || p+=("a foreign CA's CRL: no fetch errors counted")
# (each failure is counted before it is logged: the lines are waited for)
wait_for_line "$W/s2.log" '"event":"crl_fetch_failed".*not a CRL' "$READY_LIMIT" ||
	p+=("garbage: the reason is not 'not a CRL'")
cmp -s "$W/s1-crl.pem" "$W/s2-crl.pem" || p+=("the cache file was replaced")
[ "$(metric "$M2" 'mtls_reloads_total{result="ok"}')" = "$reloads" ] || p+=("a reload happened")
admitted "$SRV_PORT" "$SRV_METRICS" "$W/other" || p+=("the good client is not let in")
refused_revoked "$SRV_PORT" "$SRV_METRICS" "$W/app" || p+=("the revoked client is let in")
verdict "garbage and a foreign CA's CRL at the URL: refused, the CRL in use kept" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/s2.log")"

p=()
wait_for_line "$W/s2.log" 'not signed by a CA' "$READY_LIMIT" || p+=("the reason is not 'not signed by a CA'")
verdict "a foreign CA's CRL: refused as not signed by a CA of --ca or the own chain" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/s2.log")"

p=()
serve "$W/crl-v1.pem" || p+=("no fetch errors counted")
wait_for_line "$W/s2.log" 'crlNumber lower than the one in use' "$READY_LIMIT" ||
	p+=("the reason is not the lower crlNumber")
cmp -s "$W/s1-crl.pem" "$W/s2-crl.pem" || p+=("the cache file was replaced")
refused_revoked "$SRV_PORT" "$SRV_METRICS" "$W/app" || p+=("the revoked client is let in again")
verdict "an older CRL (lower crlNumber, from before the revocation): refused, the revocation stays" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/s2.log")"
stop_bg "$SRV_PID"

echo "# --ca changes (a rollover, a second CA): CRLs are verified by the CAs of the file now"
# a third CA (its own names), whose CRL has a number above this CA's (a CRL is never replaced
# by a lower one)
"$MTLS" ca init --dir "$W/third-ca" --name third >/dev/null 2>&1 || _lib_die "(setup) the third CA"
n_this=$(openssl crl -in "$W/s1-crl.pem" -noout -crlnumber | sed 's/.*=0x//')
until [ "$((16#$(openssl crl -in "$W/third-ca/crl.pem" -noout -crlnumber | sed 's/.*=0x//')))" -gt "$((16#$n_this))" ]; do
	"$MTLS" ca crl --dir "$W/third-ca" >/dev/null 2>&1 || _lib_die "(setup) mtls ca crl of the third CA"
done
cp -- "$D/root.pem" "$W/ca4.pem"
cp -- "$W/s1-crl.pem" "$W/s4-crl.pem"
cp -- "$W/s1-crl.pem" "$WWW/crl.new"
touch -d "@$((t + 5000))" "$WWW/crl.new"
mv -- "$WWW/crl.new" "$WWW/crl"
start_tunnel_server "$W/s4.log" --target "127.0.0.1:$BE_PORT" --cert "$W/srv-chain.pem" \
	--key "$W/srv.key" --ca "$W/ca4.pem" --allow-any-identity --metrics 127.0.0.1:0 \
	--crl-refresh 1s --crl-url "http://127.0.0.1:$PP/crl" --crl-cache "$W/s4-crl.pem" --crl-push off
M4=$SRV_METRICS
p=()
cat -- "$D/root.pem" "$W/third-ca/root.pem" "$W/third-ca/intermediate.pem" >"$W/ca4.new"
mv -- "$W/ca4.new" "$W/ca4.pem"
oks=$(metric "$M4" 'mtls_crl_fetch_total{result="ok"}')
cp -- "$W/third-ca/crl.pem" "$WWW/crl.new"
touch -d "@$((t + 6000))" "$WWW/crl.new"
mv -- "$WWW/crl.new" "$WWW/crl"
wait_metric "$M4" 'mtls_crl_fetch_total{result="ok"}' $((${oks:-0} + 1)) ||
	p+=("the third CA's CRL was not taken after --ca named that CA: $(grep -m1 -F crl_fetch_failed "$W/s4.log" || true)")
[ "$(openssl crl -in "$W/s4-crl.pem" -noout -issuer)" = "$(openssl crl -in "$W/third-ca/crl.pem" -noout -issuer)" ] ||
	p+=("the cache does not hold the third CA's CRL")
verdict "--ca replaced with a bundle naming another CA: that CA's CRL is verified and taken (no restart)" \
	"${p[@]+"${p[@]}"}" -- "$(grep -v '"event":"conn_' "$W/s4.log" | tail -n 6)"
stop_bg "$SRV_PID"
stop_bg "$HTTP_PID"

echo "# no CRL"
start_tunnel_server "$W/s3.log" "${SRV[@]}"
p=()
text=$(curl -s --max-time 5 "http://127.0.0.1:$SRV_METRICS/metrics" || true)
has_line "$text" "mtls_crl_configured 0" || p+=("mtls_crl_configured is not 0")
[[ $text == *mtls_crl_next_update_seconds* ]] && p+=("mtls_crl_next_update_seconds exported without a CRL")
[[ $text == *mtls_crl_age_seconds* ]] && p+=("mtls_crl_age_seconds exported without a CRL")
[[ $text == *mtls_crl_fetch_total* ]] && p+=("mtls_crl_fetch_total exported without --crl-url")
stop_bg "$SRV_PID"
verdict "without a CRL: mtls_crl_configured 0 and no other CRL series (not a nextUpdate of 0)" \
	"${p[@]+"${p[@]}"}" -- "$text"

finish
