#!/usr/bin/env bash
# mtls ca serve against a hostile client and a careless neighbour (review of issue 12):
#   - an admin whose certificate was revoked cannot revoke any more, even on the kept-alive
#     connection it revoked itself on (the inventory decides, not the connection's TLS
#     configuration)
#   - a revocation made through the API reaches the API's TLS configuration: the revoked
#     certificate's next handshake is refused
#   - crl.pem replaced with garbage: the last good CRL stays served, and the log says so once
#   - another process holding the CA directory's lock (a local command, a backup): the CRL
#     and the API keep answering, a change is answered 503 store_unavailable, and SIGTERM
#     still stops the service
#   - an endless chunked body is cut off, not read forever
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

command -v curl >/dev/null || _lib_die "curl not found in PATH"
command -v flock >/dev/null || _lib_die "flock (util-linux) not found in PATH"
command -v python3 >/dev/null || _lib_die "python3 not found in PATH"

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca
TD=spiffe://example.org
ADMIN=$TD/ns/prod/sa/admin
ADMIN2=$TD/ns/prod/sa/admin2

"$MTLS" ca init --dir "$D" >/dev/null 2>&1 || _lib_die "(setup) mtls ca init failed"
for n in admin admin2 other third fourth; do
	uri=$TD/ns/prod/sa/$n
	"$MTLS" ca issue --dir "$D" --profile client --uri "$uri" --out "$W/$n" >/dev/null 2>&1 ||
		_lib_die "(setup) the $n certificate could not be issued"
done
serial_of() { openssl x509 -in "$W/$1-chain.pem" -noout -serial | sed 's/serial=//'; }

start_bg "$W/serve.log" "$MTLS" ca serve --dir "$D" --listen 127.0.0.1:0 \
	--http-listen 127.0.0.1:0 --admin-uri "$ADMIN" --admin-uri "$ADMIN2" --log-level debug
SERVE_PID=$BG_PID
wait_for_line "$W/serve.log" '"event":"listening"' "$READY_LIMIT" "$SERVE_PID" || {
	cat -- "$W/serve.log" >&2
	_lib_die "mtls ca serve did not start"
}
port_of() { grep -m1 -F "\"event\":\"$1\"" "$W/serve.log" | sed -n 's/.*"address":"[^"]*:\([0-9][0-9]*\)".*/\1/p'; }
AP=$(port_of listening)
HP=$(port_of http_listening)
API=https://127.0.0.1:$AP
HTTP=http://127.0.0.1:$HP
revoked() { "$MTLS" ca list --dir "$D" --revoked 2>/dev/null | grep -q "$1"; }
# as NAME : curl options to authenticate as NAME's certificate
as() { echo "--cacert $D/root.pem --cert $W/$1-chain.pem --key $W/$1.key"; }

echo "# a revoked admin"
printf '{"serial":"%s","reason":"keyCompromise"}' "$(serial_of admin)" >"$W/rev-admin.json"
printf '{"serial":"%s"}' "$(serial_of other)" >"$W/rev-other.json"
# one curl, two requests on one kept-alive connection: the admin revokes itself, then tries
# again with another serial
# shellcheck disable=SC2046
curl -sS --max-time 20 -H 'Content-Type: application/json' $(as admin) \
	--data-binary "@$W/rev-admin.json" -o "$W/self.out" -w '%{http_code}\n' "$API/v1/revoke" \
	--next -H 'Content-Type: application/json' $(as admin) \
	--data-binary "@$W/rev-other.json" -o "$W/after.out" -w '%{http_code} %{num_connects}\n' \
	"$API/v1/revoke" >"$W/keepalive.codes" 2>"$W/curl.err" || true
p=()
[ "$(sed -n 1p "$W/keepalive.codes")" = 200 ] || p+=("revoking itself: $(cat "$W/self.out")")
read -r code2 conns2 <<<"$(sed -n 2p "$W/keepalive.codes")" || true
[ "${code2:-}" = 403 ] || p+=("the revoked admin's next revocation: ${code2:-none} $(cat "$W/after.out")")
grep -q cert_revoked "$W/after.out" || p+=("not cert_revoked")
! revoked "$(serial_of other)" || p+=("the revoked admin revoked $(serial_of other)")
[ "${conns2:-}" = 0 ] || p+=("(curl did not keep the connection: num_connects ${conns2:-})")
verdict "a revoked admin on its kept-alive connection: 403 cert_revoked, nothing revoked" \
	"${p[@]+"${p[@]}"}" -- "$(cat "$W/curl.err")" "$(tail -n 4 "$W/serve.log")"

# the revocation was made by a request: the watch must still give it to the TLS front
refused=""
for _ in $(seq 1 100); do
	# shellcheck disable=SC2046
	code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 20 $(as admin) \
		"$API/roots.pem" 2>/dev/null || true)
	if [ "$code" = 000 ]; then
		refused=1
		break
	fi
	sleep 0.1
done
p=()
[ -n "$refused" ] || p+=("the revoked admin certificate still completes handshakes")
# the log is written by its own thread: wait for the line rather than grep once
wait_for_line "$W/serve.log" '"event":"api_refused".*"reason":"revoked"' 20 "$SERVE_PID" ||
	p+=("no api_refused line with reason revoked")
verdict "a revocation through the API reaches the API's TLS configuration" \
	"${p[@]+"${p[@]}"}" -- "$(grep -E 'crl_|api_refused' "$W/serve.log" | tail -n 5)"

echo "# crl.pem replaced with garbage"
curl -sS -o "$W/good.pem" --max-time 20 "$HTTP/crl.pem" 2>/dev/null || true
printf 'garbage\n' >"$D/crl.pem.new"
mv -f -- "$D/crl.pem.new" "$D/crl.pem"
wait_for_line "$W/serve.log" '"event":"crl_refused"' 20 "$SERVE_PID" || true
for _ in 1 2 3; do
	curl -sS -o "$W/served.pem" -w '%{http_code}' --max-time 20 "$HTTP/crl.pem" \
		>"$W/served.code" 2>/dev/null || true
done
p=()
[ "$(cat "$W/served.code")" = 200 ] && cmp -s "$W/served.pem" "$W/good.pem" ||
	p+=("the last good CRL is not what is served ($(cat "$W/served.code"))")
n=$(grep -c '"event":"crl_refused"' "$W/serve.log" || true)
[ "$n" = 1 ] || p+=("$n crl_refused lines, expected exactly 1")
verdict "a garbage crl.pem: the last good CRL stays served, the log says so once" \
	"${p[@]+"${p[@]}"}"
cp -- "$W/good.pem" "$D/crl.pem.new"
mv -f -- "$D/crl.pem.new" "$D/crl.pem"

echo "# an endless chunked body"
cat >"$W/stream.py" <<'EOF'
import socket, ssl, sys
port, cafile = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=cafile)
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=20),
                    server_hostname="127.0.0.1")
s.sendall(b"POST /v1/enroll HTTP/1.1\r\nHost: ca\r\nContent-Type: application/json\r\n"
          b"Transfer-Encoding: chunked\r\n\r\n")
chunk = b"4000\r\n" + b"a" * 0x4000 + b"\r\n"
try:
    for _ in range(64 * 64):  # 64 MiB, a thousand times the bound
        s.sendall(chunk)
    s.settimeout(3)
    print("open" if s.recv(100) else "closed")
except (OSError, ssl.SSLError) as e:
    print("closed" if not isinstance(e, TimeoutError) else "open")
EOF
r=$(timeout 40 python3 "$W/stream.py" "$AP" "$D/root.pem" 2>&1 || true)
p=()
[ "$r" = closed ] || p+=("64 MiB of chunked body were read without the connection being closed ($r)")
wait_for_line "$W/serve.log" '"event":"request_refused".*"reason":"too_large"' 20 "$SERVE_PID" ||
	p+=("no request_refused line")
verdict "an endless chunked body is cut off and logged" "${p[@]+"${p[@]}"}"

echo "# another process holds the CA directory's lock"
open_fifo "$W/hold"
HOLD_FD=$FIFO_FD
start_bg_stdin "$W/hold" "$W/hold.log" flock "$D/lock" cat
HOLD_PID=$BG_PID
for _ in $(seq 1 200); do
	flock -n "$D/lock" true 2>/dev/null || break
	sleep 0.05
done
printf '{"serial":"%s"}' "$(serial_of third)" >"$W/rev-third.json"
# shellcheck disable=SC2046
curl -sS --max-time 30 -H 'Content-Type: application/json' $(as admin2) \
	--data-binary "@$W/rev-third.json" -o "$W/waiting.out" -w '%{http_code}' \
	"$API/v1/revoke" >"$W/waiting.code" 2>/dev/null &
WAITER=$!
wait_for_line "$W/serve.log" '"event":"api_connected".*admin2' 20 "$SERVE_PID" || true
sleep 0.2 # let the request reach the lock (not a threshold: it only makes the case sharper)
crl=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 20 "$HTTP/crl" 2>/dev/null || true)
roots=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 20 --cacert "$D/root.pem" \
	"$API/roots.pem" 2>/dev/null || true)
p=()
[ "$crl" = 200 ] || p+=("GET /crl while a request waits for the lock: $crl")
[ "$roots" = 200 ] || p+=("GET /roots.pem on the API meanwhile: $roots")
verdict "while a request waits for the CA's lock, the CRL and the API keep answering" \
	"${p[@]+"${p[@]}"}"
wait "$WAITER" || true
p=()
[ "$(cat "$W/waiting.code")" = 503 ] || p+=("status $(cat "$W/waiting.code"), expected 503")
grep -q store_unavailable "$W/waiting.out" || p+=("not store_unavailable: $(cat "$W/waiting.out")")
! revoked "$(serial_of third)" || p+=("revoked anyway")
verdict "a change that cannot get the CA's lock: 503 store_unavailable, nothing done" \
	"${p[@]+"${p[@]}"}"

# SIGTERM while a request waits for the lock
printf '{"serial":"%s"}' "$(serial_of fourth)" >"$W/rev-fourth.json"
n=$(grep -c '"event":"api_connected"' "$W/serve.log" || true)
# shellcheck disable=SC2046
curl -sS --max-time 30 -H 'Content-Type: application/json' $(as admin2) \
	--data-binary "@$W/rev-fourth.json" -o /dev/null "$API/v1/revoke" 2>/dev/null &
WAITER=$!
for _ in $(seq 1 200); do
	[ "$(grep -c '"event":"api_connected"' "$W/serve.log" || true)" -gt "$n" ] && break
	sleep 0.05
done
sleep 0.2
kill -TERM "$SERVE_PID"
wait_exit "$SERVE_PID" 20
vcheck "SIGTERM while a request waits for the CA's lock: the service exits (status 0)" \
	"$([ "$EXIT_RC" = 0 ] || echo "exit: $EXIT_RC")"
close_fifo "$HOLD_FD"
wait "$HOLD_PID" 2>/dev/null || true
_forget_bg "$HOLD_PID"
wait "$WAITER" || true
! revoked "$(serial_of fourth)" || echo "(note: the fourth was revoked after all)"

echo "# start-up errors"
python3 -c 'import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True); time.sleep(30)' >"$W/busy.port" &
BUSY=$!
for _ in $(seq 1 100); do [ -s "$W/busy.port" ] && break; sleep 0.05; done
LAST_CMD="mtls ca serve --listen (a port in use)"
run "$MTLS" ca serve --dir "$D" --listen "127.0.0.1:$(cat "$W/busy.port")" --http-listen none
kill "$BUSY" 2>/dev/null || true
wait "$BUSY" 2>/dev/null || true
p=()
[ "$RC" = 1 ] || p+=("exit status $RC, expected 1")
last=${ERR##*$'\n'}
[[ $last == "mtls ca serve: --listen 127.0.0.1:"*"Address already in use" ]] ||
	p+=("the last line of stderr is not the reason: '$last'")
report "a port in use: exit 1, the reason is the last line of stderr" "${p[@]+"${p[@]}"}"

aud=0
"$MTLS" ca audit --dir "$D" >"$W/audit.out" 2>&1 || aud=$?
vcheck "the audit chain is intact after all of it" "$([ "$aud" = 0 ] || cat "$W/audit.out")"
finish
