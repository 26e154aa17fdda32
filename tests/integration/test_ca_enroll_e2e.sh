#!/usr/bin/env bash
# From nothing to mutual TLS in front of a database with one command per host: a CA
# service (mtls ca serve), a token for each host (mtls ca token), and on each host `mtls
# enroll`, whose mtls.conf is all mtls server and mtls connector need besides addresses and
# the allow rule. Then psql on the application host reaches PostgreSQL (started here)
# through connector and server, a host enrolled with another identity is refused by the
# server's allow rule, and `mtls renew --force` on the application host gives a certificate
# the running connector picks up for new connections.
set -euo pipefail
BG_LIMIT=${BG_LIMIT:-120}
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"
# shellcheck source=tests/integration/pg_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/pg_lib.sh"
command -v psql >/dev/null || setup_die "psql not found: install postgresql-client"
pg_start "$TMP/postgres.log"

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca
TD=spiffe://example.org
APP=$TD/ns/prod/sa/app

"$MTLS" ca init --dir "$D" >/dev/null 2>&1 || _lib_die "(setup) mtls ca init failed"
start_bg "$W/serve.log" "$MTLS" ca serve --dir "$D" --listen 127.0.0.1:0 --http-listen none
SERVE_PID=$BG_PID
wait_for_line "$W/serve.log" '"event":"listening"' "$READY_LIMIT" "$SERVE_PID" || {
	cat -- "$W/serve.log" >&2
	_lib_die "mtls ca serve did not start"
}

# token ARGS... : a token from the CA host (the URL is the one mtls ca serve recorded)
token() { "$MTLS" ca token --dir "$D" "$@" 2>/dev/null || _lib_die "(setup) mtls ca token $*"; }
# enroll NAME TOKEN : `mtls enroll` into $W/NAME (RC, OUT, ERR)
enroll() {
	LAST_CMD="mtls enroll --dir $W/$1"
	MTLS_TOKEN=$2 run "$MTLS" enroll --dir "$W/$1"
}

enroll db "$(token --profile server --dns localhost)"
p=()
[ "$RC" = 0 ] || p+=("exit $RC")
report "the database host enrolls with one command" "${p[@]+"${p[@]}"}"
enroll app "$(token --profile client --uri "$APP")"
p=()
[ "$RC" = 0 ] || p+=("exit $RC")
report "the application host enrolls with one command" "${p[@]+"${p[@]}"}"
enroll intruder "$(token --profile client --uri "$TD/ns/dev/sa/intruder")"
[ "$RC" = 0 ] || _lib_die "(setup) the third host could not enroll: $ERR"

start_tunnel_server "$W/srv.log" --config "$W/db/mtls.conf" \
	--target "unix:$PGSOCK/.s.PGSQL.$PGP" --allow-uri "$APP"
start_tunnel_connector "$W/con.log" --config "$W/app/mtls.conf" \
	--server "127.0.0.1:$SRV_PORT" --server-name localhost
# the same client host with the other identity
start_bg "$W/con2.log" "$MTLS" connector --config "$W/intruder/mtls.conf" --listen 127.0.0.1:0 \
	--log-format json --server "127.0.0.1:$SRV_PORT" --server-name localhost
CON2_PID=$BG_PID
wait_for_line "$W/con2.log" '"event":"listening"' "$READY_LIMIT" "$CON2_PID" ||
	_lib_die "the second connector did not start"
CON2_PORT=$(_daemon_port "$W/con2.log" listening)

# query PORT SQL : psql through a connector on PORT; prints its answer ("" if none)
query() {
	LAST_CMD="psql (port $1) -c $2"
	run psql -X -q -At -v ON_ERROR_STOP=1 -c "$2" \
		-d "host=127.0.0.1 port=$1 user=postgres dbname=postgres sslmode=disable gssencmode=disable connect_timeout=5"
	printf '%s' "$OUT"
}

got=$(query "$CON_PORT" "select 'hello from the app'")
vcheck "psql on the enrolled application host reaches PostgreSQL through connector and server" \
	"$([ "$got" = "hello from the app" ] || echo "got '$got' ($ERR); server log: $(tail -n 3 "$W/srv.log")")"
got=$(query "$CON2_PORT" "select 'let me in'")
p=()
[ -z "$got" ] || p+=("the other identity got through: '$got'")
wait_for_line "$W/srv.log" '"reason":"identity_not_allowed"' 10 || p+=("no identity_not_allowed refusal logged")
verdict "a host enrolled with another identity is refused by the server's allow rule" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 3 "$W/srv.log")"

old=$(openssl x509 -in "$W/app/cert.pem" -noout -serial)
LAST_CMD="mtls renew --dir $W/app --force"
run "$MTLS" renew --dir "$W/app" --force
p=()
[ "$RC" = 0 ] || p+=("exit $RC")
[ "$(openssl x509 -in "$W/app/cert.pem" -noout -serial)" != "$old" ] || p+=("cert.pem still has $old")
report "mtls renew --force replaces the certificate and key in place" "${p[@]+"${p[@]}"}"
# the connector reloads changed files (its watcher) and keeps carrying traffic
wait_for_line "$W/con.log" '"event":"reload"' 15 "$CON_PID" || true
got=$(query "$CON_PORT" "select 'after renewal'")
vcheck "after the renewal the connector still carries traffic (with the new certificate)" \
	"$([ "$got" = "after renewal" ] || echo "got '$got'; $(tail -n 3 "$W/con.log")")"
vcheck "the connector loaded the renewed files" \
	"$(grep -q '"event":"reload"' "$W/con.log" || echo "no reload line: $(tail -n 3 "$W/con.log")")"
finish
