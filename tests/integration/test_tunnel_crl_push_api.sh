#!/usr/bin/env bash
# The CRL's push channel on the CA service's API port: a daemon whose --crl-url is the API's
# https URL (what `mtls enroll` writes when the CA names no CRL distribution point) keeps a
# long poll there, as it does on the plain port.
#   - the service: GET /crl over https with the current ETag and "Prefer: wait=N" is held and
#     answered 304 with Preference-Applied; the wait granted stays below --idle-timeout (the
#     TLS front closes a connection that moves nothing that long)
#   - mtls server --crl-url https://API/crl --crl-refresh 10m: mtls_crl_push_active 1, its
#     request held at the service; a revocation through the API closes the revoked client's
#     live connection (crl_fetched via push), which a 10-minute poll could not
set -euo pipefail
BG_LIMIT=${BG_LIMIT:-120}
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

command -v curl >/dev/null || _lib_die "curl not found in PATH"

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca
TD=spiffe://pushapi.test
ADMIN=$TD/admin
ca() {
	run "$MTLS" ca "$@"
	[ "$RC" = 0 ] || _lib_die "(setup) mtls ca $*: exit $RC: $ERR"
}
ca init --dir "$D"
ca issue --dir "$D" --profile server --dns localhost --ip 127.0.0.1 --out "$W/S"
ca issue --dir "$D" --profile client --uri "$ADMIN" --out "$W/admin"
for c in A B; do
	ca issue --dir "$D" --profile client --uri "$TD/$c" --out "$W/$c"
done
serial() { openssl x509 -in "$W/$1.pem" -noout -serial | sed 's/^serial=//'; }

# --idle-timeout 5s: a held API request is granted at most 3 s
start_bg "$W/serve.log" "$MTLS" ca serve --dir "$D" --listen 127.0.0.1:0 \
	--http-listen 127.0.0.1:0 --admin-uri "$ADMIN" --log-level debug --idle-timeout 5s
SERVE_PID=$BG_PID
SERVE_LOG=$W/serve.log
wait_for_line "$SERVE_LOG" '"event":"listening"' "$READY_LIMIT" "$SERVE_PID" || {
	cat -- "$SERVE_LOG" >&2
	_lib_die "mtls ca serve did not start"
}
AP=$(_daemon_port "$SERVE_LOG" listening)
API=https://127.0.0.1:$AP

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
logged() { [ "$(log_count "$1" "$2" "${4:-}")" -ge "$3" ]; }
head_of() {
	{ grep -i "^$2:" "$1" || true; } | head -n 1 | sed 's/^[^:]*: *//' | tr -d '\r'
}
status_of() { head -n 1 "$1" | awk '{print $2}'; }

ETAG=$(curl -s --cacert "$D/root.pem" -D - -o /dev/null --max-time 10 "$API/crl" | sed -n 's/^[Ee][Tt][Aa][Gg]: *//p' | tr -d '\r')
[ -n "$ETAG" ] || _lib_die "(setup) GET $API/crl has no ETag"

echo "# the service: long polls of GET /crl on the API port"
held=$(log_count "$SERVE_LOG" crl_held)
run curl -s --cacert "$D/root.pem" -D "$W/short" -o /dev/null --max-time 30 \
	-H "If-None-Match: $ETAG" -H "Prefer: wait=1" "$API/crl"
p=()
[ "$(status_of "$W/short")" = 304 ] || p+=("status '$(status_of "$W/short")', not 304")
[ "$(head_of "$W/short" Preference-Applied)" = "wait=1" ] || p+=("no 'Preference-Applied: wait=1'")
# (the log is written by its own thread: the line may land after curl has its answer)
wait_until "$RUN_LIMIT" logged "$SERVE_LOG" crl_held $((held + 1)) ||
	p+=("no crl_held line: the request was not held")
verdict "https API, the current ETag and Prefer: wait=1: held, then 304 with Preference-Applied" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/short")"

run curl -s --cacert "$D/root.pem" -D "$W/long" -o /dev/null --max-time 30 \
	-H "If-None-Match: $ETAG" -H "Prefer: wait=300" "$API/crl"
p=()
[ "$RC" = 0 ] || p+=("curl failed ($RC): the connection was cut while held?")
[ "$(status_of "$W/long")" = 304 ] || p+=("status '$(status_of "$W/long")', not 304")
[ "$(head_of "$W/long" Preference-Applied)" = "wait=3" ] ||
	p+=("Preference-Applied '$(head_of "$W/long" Preference-Applied)', not wait=3 (--idle-timeout 5s less 2)")
verdict "https API, Prefer: wait=300: granted less than --idle-timeout, answered before the front's idle cut" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/long")"

echo "# mtls server --crl-url https://API/crl --crl-refresh 10m"
held=$(log_count "$SERVE_LOG" crl_held)
start_backend "$TMP/be.log" --mode echo
start_tunnel_server "$W/srv.log" --target "127.0.0.1:$BE_PORT" --cert "$W/S-chain.pem" \
	--key "$W/S.key" --ca "$D/root.pem" --allow-any-identity --metrics 127.0.0.1:0 \
	--watch-interval 0 --crl-url "$API/crl" --crl-cache "$W/srv-crl.pem" --crl-refresh 10m
SRV_LOG=$W/srv.log
M=$SRV_METRICS
S_PORT=$SRV_PORT
connector() {
	start_tunnel_connector "$W/con-$1.log" --server "127.0.0.1:$S_PORT" --server-name localhost \
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
# closed FD : EOF within 30 s (a poll every 10 minutes would take up to 600 s)
closed() {
	local line="" rc=0
	read -r -t 30 -u "$1" line 2>/dev/null || rc=$?
	[ "$rc" = 1 ]
}
connector A
connector B
A_PORT=${A_PORT:?} B_PORT=${B_PORT:?} # set by connector()
open_conn 5 "$A_PORT"
open_conn 6 "$B_PORT"
p=()
wait_until 30 metric_is "$M" mtls_crl_push_active 1 || p+=("mtls_crl_push_active is not 1 (the API port does not hold: polling)")
# (logged before the gauge is set, but written by the log thread maybe after it is read)
wait_until "$RUN_LIMIT" logged "$SRV_LOG" crl_push_started 1 || true
[ "$(log_count "$SRV_LOG" crl_push_started)" = 1 ] || p+=("no crl_push_started line")
ping 5 a1 || p+=("A's connection carries nothing")
ping 6 b1 || p+=("B's connection carries nothing")
wait_until 30 logged "$SERVE_LOG" crl_held $((held + 1)) || p+=("the service holds no request of the server")
verdict "the server keeps a long poll at the CA's API port (mtls_crl_push_active 1)" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 20 "$SRV_LOG")"

LAST_CMD="mtls ca revoke --ca-url (through the API)"
run "$MTLS" ca revoke --dir "$D" --ca-url "$API" --admin-cert "$W/admin-chain.pem" \
	--admin-key "$W/admin.key" --serial "$(serial A)" --reason keyCompromise
p=()
[ "$RC" = 0 ] || p+=("the revocation through the API failed: $ERR")
closed 5 || p+=("A's live connection is still open (the push did not arrive)")
wait_until 20 logged "$SRV_LOG" conn_close 1 revoked_while_connected || p+=("no conn_close why revoked_while_connected")
logged "$SRV_LOG" crl_fetched 1 '"via":"push"' || p+=("no crl_fetched via push")
ping 6 b2 || p+=("B's connection broke")
[ "$(log_count "$SRV_LOG" crl_push_lost)" = 0 ] || p+=("crl_push_lost: a held request was cut")
verdict "a revocation through the API reaches the server by push over https: A's live connection closed, B's kept" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 20 "$SRV_LOG")"
exec 5>&- 6>&-
stop_bg "$SRV_PID"

finish
