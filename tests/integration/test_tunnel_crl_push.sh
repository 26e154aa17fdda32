#!/usr/bin/env bash
# The CRL's push channel: a long poll of `mtls ca serve`'s GET /crl, held until the CRL
# changes, kept outstanding by the daemons' --crl-url fetcher.
#   - the service: a request naming the current CRL (If-None-Match) with "Prefer: wait=N" is
#     held and answered 304 when the wait ends, or 200 with the new CRL as soon as one is
#     published (a local `mtls ca revoke`); "Preference-Applied" says it was held; past the
#     bound of held requests from one address a request is answered at once (no
#     Preference-Applied) and a plain GET is still served (the held ones do not take its room)
#   - mtls server --crl-url with --crl-refresh 10m: a revocation (local, and through the API)
#     reaches it and closes the revoked client's live connection within the test's budget,
#     which a 10-minute poll could not
#   - the CA service stopped: the server says so once (crl_push_lost), polls, keeps the last
#     good CRL; restarted on the same port: the long poll resumes (crl_push_started) and the
#     next revocation arrives by push again
#   - a plain HTTP server (python3 -m http.server) that cannot hold: no spinning, the
#     refresh interval is waited; a server that claims Preference-Applied but answers at once:
#     at most about one request a second
set -euo pipefail
BG_LIMIT=${BG_LIMIT:-240} # the CA service, the backend and the daemons live through it all
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

command -v curl >/dev/null || _lib_die "curl not found in PATH"
command -v python3 >/dev/null || _lib_die "python3 not found in PATH (the plain HTTP server)"

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca
TD=spiffe://push.test
ADMIN=$TD/admin
ca() {
	run "$MTLS" ca "$@"
	[ "$RC" = 0 ] || _lib_die "(setup) mtls ca $*: exit $RC: $ERR"
}
ca init --dir "$D"
ca issue --dir "$D" --profile server --dns localhost --ip 127.0.0.1 --out "$W/S"
ca issue --dir "$D" --profile client --uri "$ADMIN" --out "$W/admin"
for c in A B C E; do
	ca issue --dir "$D" --profile client --uri "$TD/$c" --out "$W/$c"
done
serial() { openssl x509 -in "$W/$1.pem" -noout -serial | sed 's/^serial=//'; }

# serve [API_PORT HTTP_PORT] : mtls ca serve (on those ports, or free ones); sets SERVE_PID,
# AP, HP
serve_n=0
serve() {
	serve_n=$((serve_n + 1))
	start_bg "$W/serve$serve_n.log" "$MTLS" ca serve --dir "$D" --listen "127.0.0.1:${1:-0}" \
		--http-listen "127.0.0.1:${2:-0}" --admin-uri "$ADMIN" --log-level debug
	SERVE_PID=$BG_PID
	SERVE_LOG=$W/serve$serve_n.log
	wait_for_line "$SERVE_LOG" '"event":"listening"' "$READY_LIMIT" "$SERVE_PID" || {
		cat -- "$SERVE_LOG" >&2
		_lib_die "mtls ca serve did not start"
	}
	AP=$(_daemon_port "$SERVE_LOG" listening)
	HP=$(_daemon_port "$SERVE_LOG" http_listening)
}

# wait_until N CMD... : until CMD succeeds, at most N seconds; 0 if it did
wait_until() {
	local n=$(($1 * 10))
	shift
	while [ "$n" -gt 0 ]; do
		"$@" && return 0
		sleep 0.1
		n=$((n - 1))
	done
	return 1
}
metric_is() { [ "$(metric "$1" "$2")" = "$3" ]; }
metric_ge() {
	local v
	v=$(metric "$1" "$2")
	[ -n "$v" ] && [ "${v%.*}" -ge "$3" ]
}
logged() { [ "$(log_count "$1" "$2" "${4:-}")" -ge "$3" ]; }

# head_of FILE NAME : the value of header NAME in a curl -D dump ("" if absent)
head_of() {
	{ grep -i "^$2:" "$1" || true; } | head -n 1 | sed 's/^[^:]*: *//' | tr -d '\r'
}
status_of() { head -n 1 "$1" | awk '{print $2}'; }

serve
ETAG=$(curl -s -D - -o /dev/null --max-time 10 "http://127.0.0.1:$HP/crl" | sed -n 's/^[Ee][Tt][Aa][Gg]: *//p' | tr -d '\r')
[ -n "$ETAG" ] || _lib_die "(setup) GET /crl has no ETag"

echo "# the service: long polls of GET /crl"
# poll OUT WAIT [ETAG] : a long poll in the background; its headers in OUT
poll() {
	start_bg "$1.log" curl -s -D "$1" -o "$1.body" --max-time 60 -H "If-None-Match: ${3:-$ETAG}" \
		-H "Prefer: wait=$2" "http://127.0.0.1:$HP/crl"
}
poll "$W/short" 1
SHORT=$BG_PID
wait_exit "$SHORT" 30
p=()
[ "$(status_of "$W/short")" = 304 ] || p+=("status $(status_of "$W/short"), not 304")
[ "$(head_of "$W/short" Preference-Applied)" = "wait=1" ] || p+=("no 'Preference-Applied: wait=1'")
# (the log is written by its own thread: the line may land after curl has its answer)
wait_until "$RUN_LIMIT" logged "$SERVE_LOG" crl_held 1 || p+=("no crl_held line: the request was not held")
verdict "the current ETag and Prefer: wait=1: held, then 304 with Preference-Applied" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/short")"

run curl -s -D "$W/stale" -o "$W/stale.body" --max-time 10 -H 'If-None-Match: "00"' \
	-H 'Prefer: wait=30' "http://127.0.0.1:$HP/crl"
p=()
[ "$(status_of "$W/stale")" = 200 ] || p+=("status $(status_of "$W/stale"), not 200")
[ "$(head_of "$W/stale" Preference-Applied)" = "wait=30" ] || p+=("no 'Preference-Applied: wait=30'")
openssl crl -inform DER -in "$W/stale.body" -noout 2>/dev/null || p+=("the body is not a CRL")
verdict "another ETag: the current CRL at once (200), with Preference-Applied" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/stale")"

run curl -s -D "$W/plain" -o /dev/null --max-time 10 -H "If-None-Match: $ETAG" \
	"http://127.0.0.1:$HP/crl"
p=()
[ "$(status_of "$W/plain")" = 304 ] || p+=("status $(status_of "$W/plain"), not 304")
[ -z "$(head_of "$W/plain" Preference-Applied)" ] || p+=("Preference-Applied without Prefer")
verdict "no Prefer: a plain conditional GET (304 at once, no Preference-Applied)" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/plain")"

echo "# mtls server --crl-url --crl-refresh 10m: revocations arrive by push"
# the server's long poll is held at the service (not merely sent) before each revocation: a
# CRL published before the hold would reach it without any push
held=$(log_count "$SERVE_LOG" crl_held)
start_backend "$TMP/be.log" --mode echo
start_tunnel_server "$W/srv.log" --target "127.0.0.1:$BE_PORT" --cert "$W/S-chain.pem" \
	--key "$W/S.key" --ca "$D/root.pem" --allow-any-identity --metrics 127.0.0.1:0 \
	--watch-interval 0 --crl-url "http://127.0.0.1:$HP/crl" --crl-cache "$W/srv-crl.pem" \
	--crl-refresh 10m
SRV_LOG=$W/srv.log
M=$SRV_METRICS
S_PORT=$SRV_PORT
# connector NAME [TAG] : a connector presenting NAME's certificate (its log con-NAME[TAG].log);
# sets <NAME>_PORT
connector() {
	start_tunnel_connector "$W/con-$1${2:-}.log" --server "127.0.0.1:$S_PORT" --server-name localhost \
		--cert "$W/$1-chain.pem" --key "$W/$1.key" --ca "$D/root.pem" --watch-interval 0
	printf -v "${1}_PORT" '%s' "$CON_PORT"
}
open_conn() { eval "exec $1<>/dev/tcp/127.0.0.1/$2"; }
ping() {
	local line=""
	{ printf '%s\n' "$2" >&"$1"; } 2>/dev/null || return 1
	read -r -t 10 -u "$1" line 2>/dev/null || return 1
	[ "$line" = "$2" ]
}
# closed FD : EOF within 30 s. A poll every 10 minutes would take up to 600 s, and a held
# request that the new CRL did not wake would end only after its 55 s wait.
closed() {
	local line="" rc=0
	read -r -t 30 -u "$1" line 2>/dev/null || rc=$?
	[ "$rc" = 1 ]
}
connector A
connector B
connector C
A_PORT=${A_PORT:?} B_PORT=${B_PORT:?} C_PORT=${C_PORT:?} # set by connector()
open_conn 5 "$A_PORT"
open_conn 6 "$B_PORT"
open_conn 7 "$C_PORT"
p=()
wait_until 30 metric_is "$M" mtls_crl_push_active 1 || p+=("mtls_crl_push_active is not 1")
# (logged before the gauge is set, but written by the log thread maybe after it is read)
wait_until "$RUN_LIMIT" logged "$SRV_LOG" crl_push_started 1 || true
[ "$(log_count "$SRV_LOG" crl_push_started)" = 1 ] || p+=("no crl_push_started line")
ping 5 a1 || p+=("A's connection carries nothing")
ping 6 b1 || p+=("B's connection carries nothing")
ping 7 c1 || p+=("C's connection carries nothing")
wait_until 30 logged "$SERVE_LOG" crl_held $((held + 1)) || p+=("the service holds no request of the server")
verdict "the server keeps a long poll at the CA service (mtls_crl_push_active 1)" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$SRV_LOG")"

ca revoke --dir "$D" --serial "$(serial A)" --reason keyCompromise
p=()
closed 5 || p+=("A's live connection is still open (10 min refresh: the push did not arrive)")
wait_until 20 logged "$SRV_LOG" conn_close 1 revoked_while_connected || p+=("no conn_close why revoked_while_connected")
logged "$SRV_LOG" crl_fetched 1 '"via":"push"' || p+=("no crl_fetched via push")
ping 6 b2 || p+=("B's connection broke")
wait_until 30 logged "$SERVE_LOG" crl_held $((held + 2)) || p+=("the server did not poll again at once")
verdict "a local revocation reaches the server by push: A's live connection closed, B's kept" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 20 "$SRV_LOG")"

LAST_CMD="mtls ca revoke --ca-url (through the API)"
run "$MTLS" ca revoke --dir "$D" --ca-url "https://127.0.0.1:$AP" --admin-cert "$W/admin-chain.pem" \
	--admin-key "$W/admin.key" --serial "$(serial B)" --reason keyCompromise
p=()
[ "$RC" = 0 ] || p+=("the revocation through the API failed: $ERR")
closed 6 || p+=("B's live connection is still open (the push did not arrive)")
wait_until 20 logged "$SRV_LOG" conn_close 2 revoked_while_connected || p+=("no second conn_close why revoked_while_connected")
ping 7 c2 || p+=("C's connection broke")
verdict "a revocation through the API reaches the server by push: B's live connection closed" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 20 "$SRV_LOG")"
exec 5>&- 6>&-

echo "# the CA service stopped, then back on the same ports"
errors=$(metric "$M" 'mtls_crl_fetch_total{result="error"}')
ETAG=$(curl -s -D - -o /dev/null --max-time 10 "http://127.0.0.1:$HP/crl" | sed -n 's/^[Ee][Tt][Aa][Gg]: *//p' | tr -d '\r')
held=$(log_count "$SERVE_LOG" crl_held)
poll "$W/last" 120
LAST=$BG_PID
wait_until 30 logged "$SERVE_LOG" crl_held $((held + 1)) || true
kill -TERM "$SERVE_PID"
wait_exit "$SERVE_PID" 30
serve_rc=$EXIT_RC
wait_exit "$LAST" 30
p=()
[ "$serve_rc" = 0 ] || p+=("mtls ca serve exited $serve_rc with requests held")
[ "$(status_of "$W/last")" = 304 ] || p+=("a held request was not answered at the stop: '$(status_of "$W/last")'")
verdict "SIGTERM with requests held: each answered (304), the service exits 0" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 5 "$SERVE_LOG")"
p=()
wait_until 60 metric_ge "$M" 'mtls_crl_fetch_total{result="error"}' $((errors + 2)) ||
	p+=("no failed fetches counted (no polling)")
metric_is "$M" mtls_crl_push_active 0 || p+=("mtls_crl_push_active is not 0")
wait_until "$RUN_LIMIT" logged "$SRV_LOG" crl_push_lost 1 || true # (logged after the count)
[ "$(log_count "$SRV_LOG" crl_push_lost)" = 1 ] ||
	p+=("expected one crl_push_lost line, got $(log_count "$SRV_LOG" crl_push_lost)")
# (a second one if the reason changed: a held request cut by the stop, then refused connects)
[ "$(log_count "$SRV_LOG" crl_fetch_failed)" -le 2 ] ||
	p+=("crl_fetch_failed is not rate-limited: $(log_count "$SRV_LOG" crl_fetch_failed) lines")
ping 7 c3 || p+=("C's connection broke")
connector A again
open_conn 5 "$A_PORT"
ping 5 again 2>/dev/null && p+=("the revoked client A is let in again: the last good CRL was not kept")
exec 5>&-
kill -0 "$SRV_PID" 2>/dev/null || p+=("the server died")
verdict "CA service down: polling with backoff, said once (crl_push_lost), the last good CRL kept" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 20 "$SRV_LOG")"

serve "$AP" "$HP"
p=()
wait_until 90 metric_is "$M" mtls_crl_push_active 1 || p+=("mtls_crl_push_active did not return to 1")
wait_until 30 logged "$SERVE_LOG" crl_held 1 || p+=("the service holds no request of the server")
# (crl_fetch_recovered is logged before it, by the same thread)
wait_until "$RUN_LIMIT" logged "$SRV_LOG" crl_push_started 2 || true
[ "$(log_count "$SRV_LOG" crl_push_started)" = 2 ] || p+=("no second crl_push_started line")
logged "$SRV_LOG" crl_fetch_recovered 1 || p+=("no crl_fetch_recovered line")
ca revoke --dir "$D" --serial "$(serial C)" --reason keyCompromise
closed 7 || p+=("C's live connection is still open (the push did not resume)")
exec 7>&-
verdict "the CA service back: the long poll resumes, the next revocation arrives by push" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 20 "$SRV_LOG")"
stop_bg "$SRV_PID"

echo "# servers that do not hold requests"
WWW=$W/www
mkdir -- "$WWW"
cp -- "$D/crl.pem" "$WWW/crl"
start_bg "$W/http.log" python3 -u -m http.server --bind 127.0.0.1 --directory "$WWW" 0
HTTP_PID=$BG_PID
wait_for_line "$W/http.log" 'port [0-9]+' "$READY_LIMIT" "$HTTP_PID" || _lib_die "python3 http.server did not start"
PP=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$W/http.log" | head -n 1)
start_tunnel_server "$W/srv2.log" --target "127.0.0.1:$BE_PORT" --cert "$W/S-chain.pem" \
	--key "$W/S.key" --ca "$D/root.pem" --allow-any-identity --metrics 127.0.0.1:0 \
	--watch-interval 0 --crl-url "http://127.0.0.1:$PP/crl" --crl-cache "$W/srv2-crl.pem" \
	--crl-refresh 10m
p=()
gets() { [ "$(grep -c 'GET /crl' "$W/http.log" || true)" -ge "$1" ]; }
wait_until 20 gets 2 || p+=("the fetch thread did not fetch")
sleep 3
n=$(grep -c 'GET /crl' "$W/http.log" || true)
[ "$n" -le 3 ] || p+=("$n requests in 3 s: spinning on a server that answers at once")
metric_is "$SRV_METRICS" mtls_crl_push_active 0 || p+=("mtls_crl_push_active is not 0")
[ "$(log_count "$W/srv2.log" crl_push_started)" = 0 ] || p+=("crl_push_started with a plain server")
stop_bg "$SRV_PID"
verdict "python3 -m http.server (no long poll): answered at once, the refresh interval waited" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/http.log")"
stop_bg "$HTTP_PID"

# a server that says Preference-Applied but never holds (and never has anything new)
cat >"$W/liar.py" <<'EOF'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(304)
        self.send_header("ETag", '"same"')
        self.send_header("Preference-Applied", "wait=55")
        self.end_headers()
        sys.stderr.write("GET /crl\n")
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print("port %d" % s.server_address[1], flush=True)
s.serve_forever()
EOF
start_bg "$W/liar.log" python3 -u "$W/liar.py"
LIAR_PID=$BG_PID
wait_for_line "$W/liar.log" 'port [0-9]+' "$READY_LIMIT" "$LIAR_PID" || _lib_die "the test server did not start"
LP=$(sed -n 's/^port \([0-9][0-9]*\).*/\1/p' "$W/liar.log" | head -n 1)
cp -- "$W/srv2-crl.pem" "$W/srv3-crl.pem"
start_tunnel_server "$W/srv3.log" --target "127.0.0.1:$BE_PORT" --cert "$W/S-chain.pem" \
	--key "$W/S.key" --ca "$D/root.pem" --allow-any-identity --metrics 127.0.0.1:0 \
	--watch-interval 0 --crl-url "http://127.0.0.1:$LP/crl" --crl-cache "$W/srv3-crl.pem" \
	--crl-refresh 10m
p=()
wait_until 20 metric_ge "$SRV_METRICS" 'mtls_crl_fetch_total{result="not_modified"}' 1 ||
	p+=("the fetch thread did not fetch")
before=$(grep -c 'GET /crl' "$W/liar.log" || true)
sleep 3
n=$(($(grep -c 'GET /crl' "$W/liar.log" || true) - before))
[ "$n" -le 5 ] || p+=("$n requests in 3 s: spinning on a server that claims to hold but answers at once")
stop_bg "$SRV_PID"
verdict "a server claiming Preference-Applied but answering at once: about a request a second, no spin" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 5 "$W/srv3.log")"
stop_bg "$LIAR_PID"

echo "# the bound of held requests"
# a fresh service: a client gone while held (the daemons stopped above) keeps its place until
# its wait ends, as libmicrohttpd does not watch a suspended connection
stop_bg "$SERVE_PID"
serve
ETAG=$(curl -s -D - -o /dev/null --max-time 10 "http://127.0.0.1:$HP/crl" | sed -n 's/^[Ee][Tt][Aa][Gg]: *//p' | tr -d '\r')
# 64 held from one address (CRLWAIT_PER_IP), then one more
held=$(log_count "$SERVE_LOG" crl_held)
pids=()
for i in $(seq 1 64); do
	poll "$W/many$i" 120
	pids+=("$BG_PID")
done
p=()
wait_until 60 logged "$SERVE_LOG" crl_held $((held + 64)) || p+=("not all 64 long polls were held")
run curl -s -D "$W/over" -o /dev/null --max-time 10 -H "If-None-Match: $ETAG" -H 'Prefer: wait=120' \
	"http://127.0.0.1:$HP/crl"
[ "$(status_of "$W/over")" = 304 ] || p+=("the 65th long poll: status '$(status_of "$W/over")', not 304 at once")
[ -z "$(head_of "$W/over" Preference-Applied)" ] || p+=("the 65th long poll says Preference-Applied")
wait_until "$RUN_LIMIT" logged "$SERVE_LOG" crl_wait_refused 1 || p+=("no crl_wait_refused line")
run curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://127.0.0.1:$HP/crl"
[ "$OUT" = 200 ] || p+=("a plain GET /crl with 64 held: '$OUT', not 200 (the held requests took its room)")
run curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://127.0.0.1:$HP/roots.pem"
[ "$OUT" = 200 ] || p+=("GET /roots.pem with 64 held: '$OUT', not 200")
verdict "64 held from one address: the next answered at once, not held; plain GETs still served" \
	"${p[@]+"${p[@]}"}" -- "$(grep -F crl_wait_refused "$SERVE_LOG" | head -n 3)"

# a local revocation (another process, on the CA directory) answers every held one
ca revoke --dir "$D" --serial "$(serial E)" --reason keyCompromise
p=()
for i in $(seq 1 64); do
	wait_exit "${pids[i - 1]}" 30
	[ "$(status_of "$W/many$i")" = 200 ] && openssl crl -inform DER -in "$W/many$i.body" -noout \
		-text 2>/dev/null | grep -q "$(serial E)" || p+=("long poll $i: '$(status_of "$W/many$i")', not 200 with the new CRL")
done
verdict "a local 'mtls ca revoke' answers every held long poll with the new CRL" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 5 "$SERVE_LOG")"

finish
