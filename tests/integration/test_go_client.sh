#!/usr/bin/env bash
# The Go guide (docs/go.md) for real, when a Go toolchain is present (Debian's golang-go;
# not in scripts/install-deps.sh: too heavy for CI, so this test is skipped, exit 77, where
# go is absent): the examples of docs/examples/go pass `go vet` and build with the standard
# library only (no module download: GOPROXY=off), then
#   - the Go client's line comes back through a real `mtls server` (the PEM files mtls
#     writes, the root as the only trust, the server's SPIFFE ID checked);
#   - crypto/tls's host name check: dialling 127.0.0.1 when the server's certificate names
#     only localhost is refused; a root of another CA is refused;
#   - a client certificate of another CA is refused by mtls server;
#   - the Go server behind a real `mtls connector`: the line comes back, the server saw the
#     connector's SPIFFE ID; after `mtls ca issue --force` its next handshake presents the
#     new certificate without a restart.
set -euo pipefail
BG_LIMIT=${BG_LIMIT:-240}
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

if ! command -v go >/dev/null; then
	echo "skip  all cases: go is not installed (apt-get install golang-go; not in install-deps)"
	exit 77
fi
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca
TD=spiffe://example.org
GO_ID=$TD/ns/dev/sa/go
DB_ID=$TD/ns/prod/sa/db
EX=$MTLS_SOURCE_DIR/docs/examples/go
export GOCACHE=$W/gocache GOPATH=$W/gopath GOPROXY=off GOFLAGS=-mod=mod GOTOOLCHAIN=local

setup() {
	LAST_CMD="$*"
	run "$@"
	[ "$RC" = 0 ] || _lib_die "(setup) $*: exit $RC: $ERR $OUT"
}
LAST_CMD="go vet ./... (docs/examples/go)"
RC=0
OUT=$(cd "$EX" && go vet ./... 2>&1) || RC=$?
ERR=$OUT
p=()
[ "$RC" = 0 ] || p+=("go vet: exit $RC")
report "go vet: the Go guide's programs are clean" "${p[@]+"${p[@]}"}"
RC=0
OUT=$(cd "$EX" && go build -o "$W/bin/" ./... 2>&1) || RC=$?
[ "$RC" = 0 ] || _lib_die "(setup) go build: $OUT"

setup "$MTLS" ca init --dir "$D"
setup "$MTLS" ca issue --dir "$D" --profile server --dns localhost --uri "$DB_ID" --out "$W/srv"
setup "$MTLS" ca issue --dir "$D" --profile client --uri "$GO_ID" --out "$W/go"
setup "$MTLS" ca init --dir "$W/ca2"
setup "$MTLS" ca issue --dir "$W/ca2" --profile client --uri "$GO_ID" --out "$W/foreign"

start_backend "$W/be.log" --mode echo
start_tunnel_server "$W/srv.log" --target "127.0.0.1:$BE_PORT" --cert "$W/srv-chain.pem" \
	--key "$W/srv.key" --ca "$D/root.pem" --allow-uri "$GO_ID"

# client HOST PREFIX ROOT [EXPECTED] : the Go client through mtls server
client() {
	LAST_CMD="mtlsclient $1:$SRV_PORT $2 $3 ${4:-}"
	run "$W/bin/mtlsclient" "$1:$SRV_PORT" "$2-chain.pem" "$2.key" "$3" ${4:+"$4"}
}
client localhost "$W/go" "$D/root.pem" "$DB_ID"
p=()
[ "$RC" = 0 ] || p+=("exit $RC")
[ "$OUT" = "hello from go" ] || p+=("the answer is '$OUT'")
report "the Go client's line comes back through mtls server (server SPIFFE ID checked)" "${p[@]+"${p[@]}"}"

client 127.0.0.1 "$W/go" "$D/root.pem"
p=()
[ "$RC" = 1 ] || p+=("exit $RC, expected 1")
[[ $ERR == *"127.0.0.1"* && $ERR == *"not valid for any names"* || $ERR == *"doesn't contain any IP SANs"* ]] ||
	p+=("not refused for the name")
report "crypto/tls's name check: 127.0.0.1 is not a name of the server's certificate, refused" "${p[@]+"${p[@]}"}"

client localhost "$W/go" "$W/ca2/root.pem"
p=()
[ "$RC" = 1 ] || p+=("exit $RC, expected 1")
[[ $ERR == *"certificate signed by unknown authority"* ]] || p+=("not refused as untrusted")
report "the root of another CA: the Go client refuses the server" "${p[@]+"${p[@]}"}"

refusals=$(log_count "$W/srv.log" handshake_refused '"reason":"unknown_ca"')
client localhost "$W/foreign" "$D/root.pem"
p=()
[ "$RC" = 1 ] || p+=("exit $RC, expected 1")
# (the refusal is logged by the server's log thread, maybe after the client saw it)
for _ in $(seq 1 $((READY_LIMIT * 20))); do
	[ "$(log_count "$W/srv.log" handshake_refused '"reason":"unknown_ca"')" -gt "$refusals" ] && break
	sleep 0.05
done
[ "$(log_count "$W/srv.log" handshake_refused '"reason":"unknown_ca"')" -gt "$refusals" ] ||
	p+=("mtls server logged no handshake refused for an unknown CA")
report "a client certificate of another CA: mtls server refuses it" "${p[@]+"${p[@]}"}"

echo "# a Go server behind mtls connector"
setup "$MTLS" ca issue --dir "$D" --profile server --dns localhost --uri "$DB_ID" --out "$W/gsrv"
setup "$MTLS" ca issue --dir "$D" --profile client --uri "$TD/ns/prod/sa/connector" --out "$W/con"
start_bg "$W/gsrv.log" "$W/bin/mtlsserver" 127.0.0.1:0 "$W/gsrv-chain.pem" "$W/gsrv.key" \
	"$D/root.pem" "$TD/ns/prod/"
GSRV_PID=$BG_PID
wait_for_line "$W/gsrv.log" '^listening on ' "$READY_LIMIT" "$GSRV_PID" || {
	cat -- "$W/gsrv.log" >&2
	_lib_die "the Go server did not start"
}
GPORT=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$W/gsrv.log")
start_tunnel_connector "$W/con.log" --server "localhost:$GPORT" --cert "$W/con-chain.pem" \
	--key "$W/con.key" --ca "$D/root.pem" --allow-uri "$DB_ID"
line() {
	LINE=
	exec {fd}<>"/dev/tcp/127.0.0.1/$CON_PORT"
	printf '%s\n' "$1" >&"$fd"
	IFS= read -r -t 20 LINE <&"$fd" || true
	exec {fd}>&-
}
line ping
p=()
[ "$LINE" = ping ] || p+=("the answer is '$LINE'")
grep -qF "accepted [$TD/ns/prod/sa/connector]" "$W/gsrv.log" || p+=("the Go server did not see the connector's SPIFFE ID")
verdict "mtls connector to the Go server: the line comes back, the server saw the connector's SPIFFE ID" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 5 "$W/gsrv.log")" "$(tail -n 5 "$W/con.log")"

served_serial() {
	timeout 20 openssl s_client -connect "localhost:$GPORT" -servername localhost \
		-cert "$W/con.pem" -cert_chain "$W/con-chain.pem" -key "$W/con.key" \
		-CAfile "$D/root.pem" </dev/null 2>/dev/null | openssl x509 -noout -serial 2>/dev/null |
		sed 's/^serial=//'
}
first=$(openssl x509 -in "$W/gsrv.pem" -noout -serial | sed 's/^serial=//')
served=$(served_serial)
setup "$MTLS" ca issue --dir "$D" --profile server --dns localhost --uri "$DB_ID" --out "$W/gsrv" --force
second=$(openssl x509 -in "$W/gsrv.pem" -noout -serial | sed 's/^serial=//')
now=$(served_serial)
line pong
p=()
[ "$served" = "$first" ] || p+=("before: the Go server presented '$served', not $first")
[ "$now" = "$second" ] && [ "$second" != "$first" ] || p+=("after: the Go server presents '$now', not the renewed $second")
grep -q 'certificate reloaded' "$W/gsrv.log" || p+=("the Go server did not say it reloaded")
[ "$LINE" = pong ] || p+=("through the connector after the reload: '$LINE'")
verdict "renewal: the files replaced (issue --force) are used by the Go server's next handshake, no restart" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 5 "$W/gsrv.log")"

finish
