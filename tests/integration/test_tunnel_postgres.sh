#!/usr/bin/env bash
# The tunnel in front of a real PostgreSQL 15 (the Acra picture):
#
#   psql / pgbench --plaintext, loopback--> mtls connector ==mutual TLS==> mtls server
#                  --unix socket--> PostgreSQL (listens on no TCP port at all)
#
# Certificates come from the project's own CA (`mtls ca`), made here; the openssl-made zoo
# gives the foreign-CA ones. Cases: queries, bulk COPY both ways and pgbench through the
# tunnel; the logs and metrics of the server; 50 sequential connections (TLS 1.3 resumption);
# clients refused by the server (unknown CA, revoked, identity not allowed, server
# certificate used as a client one) and servers refused by the connector (foreign CA, wrong
# name) without PostgreSQL ever seeing a connection; the connector's refusal to listen on a
# non-loopback address.
#
# As root, the cluster runs as the `postgres` system user (initdb refuses root).
set -euo pipefail
# PostgreSQL and the first server live through the whole script: 30-40 s alone, 170 s in a
# loaded CI run, where the default 50 s cut them down in the middle
BG_LIMIT=${BG_LIMIT:-300}
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

skip_all() {
	printf 'skip  all cases: %s\n' "$1"
	exit 0
}

# Without PostgreSQL the cases are skipped (pg_lib.sh would fail the script).
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
for p in "$PG_BIN/initdb" "$PG_BIN/postgres"; do
	[ -x "$p" ] || skip_all "$p not found (install postgresql-15)"
done
for p in psql pgbench curl; do
	command -v "$p" >/dev/null || skip_all "$p not found in PATH"
done
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
	skip_all "running as root and there is no postgres user"
fi

# the cluster (initdb), on a unix socket only; setup_die
# shellcheck source=tests/integration/pg_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/pg_lib.sh"

# libpq: bounded connects (pg_lib.sh cleared the rest of its environment)
export PGCONNECT_TIMEOUT=5 PGAPPNAME=mtls-test

W=$TMP/w
mkdir -m 700 -- "$W"
CA=$TMP/ca
SPIFFE_APP=spiffe://example.org/ns/prod/sa/app
SPIFFE_OTHER=spiffe://example.org/ns/dev/sa/other
SPIFFE_REVOKED=spiffe://example.org/ns/prod/sa/revoked
ALLOW='spiffe://example.org/ns/prod/sa/*'
DRAIN=(--drain-timeout 1s) # every daemon: never hold the exit for long

# ------------------------------------------------------------------------------------------
# Helpers (none of them fails the script under set -e: problems become failed cases)

# conninfo PORT : libpq connection string for a connector on 127.0.0.1:PORT.
conninfo() {
	printf 'host=127.0.0.1 port=%s user=postgres dbname=postgres sslmode=disable gssencmode=disable connect_timeout=5' "$1"
}

# sql PORT ARGS... : psql through the connector on PORT (RC, OUT, ERR).
sql() {
	local port=$1
	shift
	LAST_CMD="psql (port $port) $*"
	run psql -X -q -At -v ON_ERROR_STOP=1 -d "$(conninfo "$port")" "$@"
}

# num VALUE : VALUE if it is a number, else 0 (an absent metric series is 0).
num() {
	if [[ ${1:-} =~ ^[0-9]+$ ]]; then echo "$1"; else echo 0; fi
}

# m PORT SERIES : a metric's value, 0 when absent.
m() { num "$(metric "$1" "$2" || true)"; }

# failed_series REASON
failed_series() { printf 'mtls_handshakes_total{result="failed",reason="%s"}' "$1"; }

# pg_received : connections PostgreSQL has accepted so far (log_connections=on).
pg_received() { grep -c 'LOG:  connection received:' "$PG_LOG" 2>/dev/null || true; }

# wait_count FILE EVENT TEXT ABOVE SECONDS : wait until log_count FILE EVENT TEXT > ABOVE.
wait_count() {
	local n=$(($5 * 20))
	while [ "$(log_count "$1" "$2" "$3")" -le "$4" ]; do
		n=$((n - 1))
		[ "$n" -gt 0 ] || return 1
		sleep 0.05
	done
}

# json_field LINE NAME : a string or number field of one JSON log line.
json_field() {
	sed -n "/.*\"$2\":\"\\{0,1\\}\\([^\",}]*\\).*/{s//\\1/p;q}" <<<"$1"
}

# ------------------------------------------------------------------------------------------
# Setup: certificates from `mtls ca`, a PostgreSQL cluster on a unix socket only, the
# mtls server in front of it and a connector for the application.

LAST_CMD="mtls ca init --dir $CA"
run "$MTLS" ca init --dir "$CA"
[ "$RC" = 0 ] || setup_die "$LAST_CMD failed ($RC)" "$OUT" "$ERR"
# issue NAME ARGS... : a certificate from the CA: $W/NAME-chain.pem, $W/NAME.key.
issue() {
	local name=$1
	shift
	LAST_CMD="mtls ca issue $* --out $W/$name"
	run "$MTLS" ca issue --dir "$CA" "$@" --out "$W/$name"
	if [ "$RC" != 0 ] || [ ! -s "$W/$name-chain.pem" ] || [ ! -s "$W/$name.key" ]; then
		setup_die "$LAST_CMD failed ($RC)" "$OUT" "$ERR"
	fi
}
issue server --profile server --dns db.test --ip 127.0.0.1
issue app --profile client --uri "$SPIFFE_APP"
issue other --profile client --uri "$SPIFFE_OTHER"
issue revoked --profile client --uri "$SPIFFE_REVOKED"
LAST_CMD="mtls ca revoke --cert $W/revoked.pem"
run "$MTLS" ca revoke --dir "$CA" --cert "$W/revoked.pem" --reason keyCompromise
[ "$RC" = 0 ] || setup_die "$LAST_CMD failed ($RC)" "$OUT" "$ERR"

PG_LOG=$TMP/postgres.log
pg_start "$PG_LOG" -c log_connections=on -c log_destination=stderr -c max_wal_size=256MB
[ -S "$PGSOCK/.s.PGSQL.$PGP" ] || setup_die "no socket $PGSOCK/.s.PGSQL.$PGP" "$(cat -- "$PG_LOG")"
PG_TARGET=unix:$PGSOCK/.s.PGSQL.$PGP

SRV_LOG=$TMP/server.log
start_tunnel_server "$SRV_LOG" --target "$PG_TARGET" --cert "$W/server-chain.pem" \
	--key "$W/server.key" --ca "$CA/root.pem" --crl "$CA/crl.pem" --allow-uri "$ALLOW" \
	--metrics 127.0.0.1:0 "${DRAIN[@]}"
[ -n "$SRV_METRICS" ] || setup_die "the server logged no metrics port" "$(cat -- "$SRV_LOG")"
MAIN_SRV_PORT=$SRV_PORT
MAIN_SRV_PID=$SRV_PID

# connector LOG CERT KEY [ARGS...] : a connector to the real server with this client
# certificate (sets CON_PORT, CON_PID, CON_METRICS).
connector() {
	local log=$1 cert=$2 key=$3
	shift 3
	start_tunnel_connector "$log" --server "127.0.0.1:$MAIN_SRV_PORT" --server-name db.test \
		--cert "$cert" --key "$key" --ca "$CA/root.pem" --metrics 127.0.0.1:0 "${DRAIN[@]}" "$@"
}

CON_LOG=$TMP/connector.log
connector "$CON_LOG" "$W/app-chain.pem" "$W/app.key"
APP_PORT=$CON_PORT
APP_PID=$CON_PID

# ==========================================================================================
echo "# psql -> connector -> mutual TLS -> server -> PostgreSQL (unix socket)"

p=()
sql "$APP_PORT" -c 'select 40+2'
[ "$RC" = 0 ] || p+=("psql exit status $RC, expected 0")
[ "$OUT" = 42 ] || p+=("select 40+2 printed '$OUT', expected 42")
if [ "${#p[@]}" -eq 0 ]; then
	sql "$APP_PORT" -c 'create table t (i int primary key, v text not null)' \
		-c "insert into t select g, md5(g::text) from generate_series(1, 1000) g" \
		-c 'select count(*), sum(i) from t'
	[ "$RC" = 0 ] || p+=("create/insert/select: exit status $RC")
	[ "$OUT" = "1000|500500" ] || p+=("count and sum: got '$OUT', expected 1000|500500")
	# 32 000 bytes in one row (two pump buffers): its digest on both ends must agree
	sql "$APP_PORT" -c "select string_agg(v, '' order by i) from t"
	got=$(printf '%s' "$OUT" | md5sum | cut -d' ' -f1)
	sql "$APP_PORT" -c "select length(string_agg(v, '' order by i)), md5(string_agg(v, '' order by i)) from t"
	[ "$OUT" = "32000|$got" ] || p+=("a 32000-byte value arrived altered: server says '$OUT', psql got md5 $got")
fi
report "psql through the tunnel: select 40+2 is 42; 1000 rows in, count 1000 and sum 500500 back" \
	"${p[@]+"${p[@]}"}"

# Bulk data both ways: \copy streams a local file to the server and back.
p=()
seq 1 100000 | awk '{ printf "%d\tpayload-%08d-abcdefghijklmnopqrstuvwxyz\n", $1, $1 * 7 }' >"$W/in.tsv"
sql "$APP_PORT" -c 'create table big (n int, s text)' -c "\\copy big from '$W/in.tsv'" \
	-c 'select count(*), sum(n), sum(length(s)) from big' \
	-c "\\copy (select n, s from big order by n) to '$W/out.tsv'"
[ "$RC" = 0 ] || p+=("psql exit status $RC, expected 0")
[ "$OUT" = "100000|5000050000|4300000" ] || p+=("count, sum, length: got '$OUT', expected 100000|5000050000|4300000")
cmp -s -- "$W/in.tsv" "$W/out.tsv" || p+=("the $(wc -c <"$W/in.tsv")-byte table came back different ($(wc -c <"$W/out.tsv" 2>/dev/null || echo 0) bytes)")
report "COPY 100000 rows (4.9 MB) into PostgreSQL and back out through the tunnel, byte for byte" "${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# what the server and PostgreSQL recorded"

p=()
open_line=$(grep -F '"event":"conn_open"' "$SRV_LOG" | grep -F "\"identity\":\"$SPIFFE_APP\"" | head -n 1 || true)
if [ -z "$open_line" ]; then
	p+=("no conn_open line with identity $SPIFFE_APP in the server log")
else
	[ "$(json_field "$open_line" rule)" = "uri:$ALLOW" ] ||
		p+=("conn_open rule is '$(json_field "$open_line" rule)', expected 'uri:$ALLOW'")
	[ "$(json_field "$open_line" tls)" = "TLSv1.3" ] ||
		p+=("conn_open tls is '$(json_field "$open_line" tls)', expected TLSv1.3")
fi
# the last connection closes right after psql exits: give the log a moment
n=$(log_count "$SRV_LOG" conn_open "$SPIFFE_APP")
wait_count "$SRV_LOG" conn_close "$SPIFFE_APP" $((n - 1)) 5 ||
	p+=("$n conn_open but only $(log_count "$SRV_LOG" conn_close "$SPIFFE_APP") conn_close lines for $SPIFFE_APP")
max_to=0
while IFS= read -r line; do
	b=$(num "$(json_field "$line" bytes_to_target)")
	[ "$b" -le "$max_to" ] || max_to=$b
done < <(grep -F '"event":"conn_close"' "$SRV_LOG" | grep -F "\"identity\":\"$SPIFFE_APP\"" || true)
[ "$max_to" -gt 4000000 ] || p+=("largest conn_close bytes_to_target is $max_to, expected the COPY's > 4000000")
[ "$(log_count "$SRV_LOG" conn_close '"why":"closed"')" -ge 1 ] || p+=("no conn_close with why=closed")
[ "$(log_count "$SRV_LOG" handshake_refused)" = 0 ] || p+=("handshake_refused lines in the server log already")
[ "$(grep -c 'connection received: host=\[local\]' "$PG_LOG" || true)" -ge "$n" ] ||
	p+=("PostgreSQL's log has fewer than $n 'connection received: host=[local]' lines")
grep -q 'connection authorized: user=postgres database=postgres' "$PG_LOG" ||
	p+=("PostgreSQL's log has no 'connection authorized: user=postgres database=postgres'")
grep -Eq 'connection received: host=[0-9]' "$PG_LOG" && p+=("PostgreSQL received a TCP connection")
[ "${#p[@]}" = 0 ] || p+=("server log (end):" "$(tail -n 8 "$SRV_LOG")")
LAST_CMD="" RC="" OUT="" ERR=""
report "server log: conn_open $SPIFFE_APP by rule uri:$ALLOW, conn_close with bytes_to_target; PostgreSQL: [local] connections" \
	"${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# pgbench through the tunnel"

p=()
LAST_CMD="pgbench -i -s 1"
run pgbench -i -s 1 -q -h 127.0.0.1 -p "$APP_PORT" -U postgres postgres
[ "$RC" = 0 ] || p+=("pgbench -i exit status $RC")
sql "$APP_PORT" -c 'select count(*) from pgbench_accounts'
[ "$OUT" = 100000 ] || p+=("pgbench_accounts holds '$OUT' rows, expected 100000")
report "pgbench -i -s 1: 100000 accounts loaded through the tunnel" "${p[@]+"${p[@]}"}"

p=()
LAST_CMD="pgbench -c 4 -j 2 -T 5"
run pgbench -c 4 -j 2 -T 5 -h 127.0.0.1 -p "$APP_PORT" -U postgres postgres
processed=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$OUT")
failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$OUT")
TPS=$(sed -n '/^tps = \([0-9.]*\) .*/{s//\1/p;q}' <<<"$OUT")
[ "$RC" = 0 ] || p+=("pgbench exit status $RC, expected 0")
[ "$(num "$processed")" -gt 0 ] || p+=("no 'number of transactions actually processed: N' with N > 0")
[ -z "$failed" ] || [ "$failed" = 0 ] || p+=("$failed failed transactions")
! grep -qi 'error\|abort' <<<"$ERR" || p+=("pgbench reported errors")
report "pgbench -c 4 -j 2 -T 5: ${processed:-?} transactions, ${failed:-no} failed, tps ${TPS:-?}" \
	"${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# 50 sequential connections, TLS 1.3 resumption"

p=()
ok0=$(m "$SRV_METRICS" 'mtls_handshakes_total{result="ok"}')
res0=$(m "$SRV_METRICS" 'mtls_handshakes_total{result="resumed"}')
good=0
for i in $(seq 1 50); do
	sql "$APP_PORT" -c "select $i"
	if [ "$RC" = 0 ] && [ "$OUT" = "$i" ]; then
		good=$((good + 1))
	elif [ "${#p[@]}" -lt 3 ]; then
		p+=("connection $i: exit status $RC, output '$OUT', stderr '$(first_line "$ERR")'")
	fi
done
ok1=$(m "$SRV_METRICS" 'mtls_handshakes_total{result="ok"}')
res1=$(m "$SRV_METRICS" 'mtls_handshakes_total{result="resumed"}')
[ "$good" = 50 ] || p+=("$good of 50 connections worked")
[ "$ok1" -ge 50 ] && [ $((ok1 - ok0)) -ge 50 ] ||
	p+=("mtls_handshakes_total{result=\"ok\"} went from $ok0 to $ok1, expected +50")
[ $((res1 - res0)) -gt 0 ] ||
	p+=("mtls_handshakes_total{result=\"resumed\"} went from $res0 to $res1: the connector never resumed")
LAST_CMD="" RC="" OUT="" ERR=""
report "50 psql in a row: all answer; handshakes ok +$((ok1 - ok0)), resumed +$((res1 - res0))" \
	"${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# clients the server refuses: psql fails and PostgreSQL sees nothing"

# refused NAME REASON CERT KEY : a connector presenting CERT; psql through it must fail, the
# server must log handshake_refused REASON and count it, PostgreSQL must get no connection.
refused() {
	local name=$1 reason=$2 cert=$3 key=$4 log pg0 pg1 l0 o0 mf0 mf1
	local p=()
	log=$TMP/connector-$reason.log
	connector "$log" "$cert" "$key"
	pg0=$(pg_received)
	l0=$(log_count "$SRV_LOG" handshake_refused "\"reason\":\"$reason\"")
	o0=$(log_count "$SRV_LOG" conn_open)
	mf0=$(m "$SRV_METRICS" "$(failed_series "$reason")")
	sql "$CON_PORT" -c 'select 1'
	[ "$RC" != 0 ] || p+=("psql succeeded")
	[ "$RC" != 124 ] || p+=("psql hung (timed out)")
	[ "$OUT" != 1 ] || p+=("the query was answered")
	wait_count "$SRV_LOG" handshake_refused "\"reason\":\"$reason\"" "$l0" 5 ||
		p+=("no new handshake_refused with reason $reason in the server log;" \
			"its last lines:" "$(tail -n 4 "$SRV_LOG")")
	mf1=$(m "$SRV_METRICS" "$(failed_series "$reason")")
	[ "$mf1" -gt "$mf0" ] || p+=("$(failed_series "$reason") went from $mf0 to $mf1")
	sleep 0.2 # anything that did reach PostgreSQL is in its log by now
	pg1=$(pg_received)
	[ "$pg1" = "$pg0" ] || p+=("PostgreSQL received $((pg1 - pg0)) connection(s)")
	[ "$(log_count "$SRV_LOG" conn_open)" = "$o0" ] || p+=("the server opened a connection")
	stop_bg "$CON_PID"
	report "$name: psql fails, server refuses ($reason, metric $mf0 -> $mf1), PostgreSQL got nothing" \
		"${p[@]+"${p[@]}"}"
}

refused "client certificate from another CA" unknown_ca \
	"$CERTS/other-client-chain.pem" "$CERTS/other-client.key"
refused "revoked client certificate (--crl ca/crl.pem)" revoked \
	"$W/revoked-chain.pem" "$W/revoked.key"
refused "client $SPIFFE_OTHER outside --allow-uri '$ALLOW'" identity_not_allowed \
	"$W/other-chain.pem" "$W/other.key"
refused "server-profile certificate presented as a client certificate" bad_key_usage \
	"$W/server-chain.pem" "$W/server.key"

# The refusals did not disturb the tunnel.
sql "$APP_PORT" -c 'select count(*) from t'
p=()
[ "$RC" = 0 ] && [ "$OUT" = 1000 ] || p+=("the allowed client no longer gets through")
report "after the refusals the allowed client still gets through" "${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# servers the connector refuses"

# refused_server NAME REASON SERVER_PORT SERVER_NAME : a connector (app certificate) to
# SERVER_PORT expecting SERVER_NAME must log handshake_refused REASON and count it; psql fails;
# PostgreSQL gets nothing.
refused_server() {
	local name=$1 reason=$2 port=$3 sname=$4 log pg0 pg1 mf
	local p=()
	log=$TMP/connector-to-$reason-server.log
	start_tunnel_connector "$log" --server "127.0.0.1:$port" --server-name "$sname" \
		--cert "$W/app-chain.pem" --key "$W/app.key" --ca "$CA/root.pem" \
		--metrics 127.0.0.1:0 "${DRAIN[@]}"
	pg0=$(pg_received)
	sql "$CON_PORT" -c 'select 1'
	[ "$RC" != 0 ] || p+=("psql succeeded")
	[ "$RC" != 124 ] || p+=("psql hung (timed out)")
	[ "$OUT" != 1 ] || p+=("the query was answered")
	wait_count "$log" handshake_refused "\"reason\":\"$reason\"" 0 5 ||
		p+=("no handshake_refused with reason $reason in the connector's log:" "$(cat -- "$log")")
	mf=$(m "$CON_METRICS" "$(failed_series "$reason")")
	[ "$mf" -ge 1 ] || p+=("connector: $(failed_series "$reason") is $mf")
	[ "$(log_count "$log" conn_open)" = 0 ] || p+=("the connector opened a connection")
	sleep 0.2
	pg1=$(pg_received)
	[ "$pg1" = "$pg0" ] || p+=("PostgreSQL received $((pg1 - pg0)) connection(s)")
	stop_bg "$CON_PID"
	report "$name: connector refuses ($reason), psql fails, PostgreSQL got nothing" \
		"${p[@]+"${p[@]}"}"
}

# An impersonator: a working mtls server in front of the same PostgreSQL, with a certificate
# from another CA (it would accept our client). Every daemon here gets --metrics: tunnel_lib.sh's
# _start_daemon exits the script (set -e, pipefail) when no metrics_listening line is logged.
start_tunnel_server "$TMP/impostor.log" --target "$PG_TARGET" \
	--cert "$CERTS/other-server-chain.pem" --key "$CERTS/other-server.key" \
	--ca "$CA/root.pem" --allow-uri "$ALLOW" --metrics 127.0.0.1:0 "${DRAIN[@]}"
IMP_PID=$SRV_PID
refused_server "impostor server with another CA's certificate" unknown_ca "$SRV_PORT" db.test
stop_bg "$IMP_PID"
refused_server "the real server, but the connector expects wrong.test" name_mismatch \
	"$MAIN_SRV_PORT" wrong.test

# ==========================================================================================
echo "# the connector does not offer plaintext to the network"

p=()
LAST_CMD="mtls connector --listen 0.0.0.0:0 ..."
RUN_LIMIT=5 run "$MTLS" connector --listen 0.0.0.0:0 --server "127.0.0.1:$MAIN_SRV_PORT" \
	--server-name db.test --cert "$W/app-chain.pem" --key "$W/app.key" --ca "$CA/root.pem" \
	--log-format json
[ "$RC" = 2 ] || p+=("exit status $RC, expected 2")
[ -n "$ERR" ] && [ "$(printf '%s\n' "$ERR" | wc -l)" = 1 ] || p+=("stderr is not one line")
[[ $ERR == *--insecure-listen-remote* ]] || p+=("stderr does not mention --insecure-listen-remote")
[[ "$OUT$ERR" != *'"event":"listening"'* ]] || p+=("it logged that it was listening")
report "connector --listen 0.0.0.0:0 without --insecure-listen-remote: exit 2, one line, no listener" \
	"${p[@]+"${p[@]}"}"

# ==========================================================================================
# The server is still healthy, and PostgreSQL stops cleanly.

p=()
kill -0 "$MAIN_SRV_PID" 2>/dev/null || p+=("the mtls server died")
kill -0 "$APP_PID" 2>/dev/null || p+=("the application's connector died")
stop_bg "$PG_PID"
grep -q 'database system is shut down' "$PG_LOG" || p+=("PostgreSQL did not shut down cleanly")
if grep -Eq '(PANIC|FATAL):' "$PG_LOG"; then
	p+=("PostgreSQL logged:" "$(grep -m5 -E '(PANIC|FATAL):' "$PG_LOG" || true)")
fi
LAST_CMD="" RC="" OUT="" ERR=""
report "daemons alive at the end; PostgreSQL logged no FATAL/PANIC and shut down cleanly" \
	"${p[@]+"${p[@]}"}"

finish
