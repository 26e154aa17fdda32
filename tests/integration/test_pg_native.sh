#!/usr/bin/env bash
# PostgreSQL clients straight to `mtls server --protocol postgresql` (issue 16), against a
# real PostgreSQL 15 started here, with certificates from `mtls ca` made here:
#
#   psql / pgbench / psycopg2 (libpq, sslmode=verify-full, client certificate)
#       ==SSLRequest + mutual TLS==> mtls server --protocol postgresql --pg-role ...
#       --unix socket--> PostgreSQL
#
#   psql (sslmode=disable) --> mtls connector --protocol postgresql
#       ==SSLRequest + mutual TLS==> PostgreSQL's own TLS (hostssl ... cert clientcert=verify-full)
#
# Cases: the role the certificate allows works and another is refused with SQLSTATE 28000
# naming the identity and the role (psql's stderr, the raw ErrorResponse, the log's
# pg_refused); a replication connection refused without a rule for it; --pg-role patterns,
# ROLE '*' and @DATABASE; a plaintext client gets the mtls message instead of "server closed
# the connection unexpectedly"; GSSENCRequest answered N;
# cancel by pg_cancel_backend(), by psql's own CancelRequest (SIGINT; libpq 15 sends it
# without TLS) and by a CancelRequest inside TLS (s_client -starttls postgres, the key from a
# raw session); PostgreSQL 17's direct TLS (openssl s_client -alpn postgresql) and its
# refusal without ALPN; the connector against PostgreSQL's own TLS with clientcert=verify-full
# and against the mtls server; psycopg2 as a second client library (skipped with a note when
# absent); pgbench -c 4 -t 200.
set -euo pipefail
BG_LIMIT=${BG_LIMIT:-200} # PostgreSQL and the daemons live through the whole script
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

skip_all() {
	printf 'skip  all cases: %s\n' "$1"
	exit 0
}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
for p in "$PG_BIN/initdb" "$PG_BIN/postgres"; do
	[ -x "$p" ] || skip_all "$p not found (install postgresql-15)"
done
for p in psql pgbench pgrep; do
	command -v "$p" >/dev/null || skip_all "$p not found in PATH"
done
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
	skip_all "running as root and there is no postgres user"
fi
# the cluster (initdb) on a unix socket; setup_die, sql (as postgres on the socket)
# shellcheck source=tests/integration/pg_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/pg_lib.sh"
export PGCONNECT_TIMEOUT=5 PGAPPNAME=mtls-pg-native

W=$TMP/w
mkdir -m 700 -- "$W"
CA=$TMP/ca
ALLOW='spiffe://example.org/ns/prod/sa/*'
BILLING=spiffe://example.org/ns/prod/sa/billing
REPORTS=spiffe://example.org/ns/prod/sa/reports # allowed by --allow-uri, in no --pg-role rule
PLAIN_MSG='mtls: this server accepts only TLS with a client certificate'
PLAIN_HINT='connect with sslmode=verify-full, sslcert and sslkey'
DRAIN=(--drain-timeout 1s)

# ------------------------------------------------------------------------------------------
# Helpers (none fails the script under set -e: problems become failed cases)

# be32 N : N as 4 bytes, big-endian (PostgreSQL's Int32)
be32() {
	# shellcheck disable=SC2059
	printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 >> 24 & 255)) $(($1 >> 16 & 255)) \
		$(($1 >> 8 & 255)) $(($1 & 255)))"
}
# startup USER DB : a protocol 3.0 StartupMessage
startup() {
	be32 $((4 + 4 + 5 + ${#1} + 1 + 9 + ${#2} + 1 + 1))
	be32 196608
	printf 'user\000%s\000database\000%s\000\000' "$1" "$2"
}
ssl_request() { be32 8 && be32 80877103; }
gssenc_request() { be32 8 && be32 80877104; }
terminate() { printf 'X\000\000\000\004'; }
startup_billing() { startup billing billingdb; }

# fields FILE : the NUL-separated strings of FILE (an ErrorResponse), one per line
fields() { tr '\000' '\n' <"$1"; } # (the S field follows the type and length bytes)

# tls_conn PORT USER DB CERT : libpq conninfo, verify-full with client certificate CERT
# ($W/CERT-chain.pem, $W/CERT.key); the server certificate names localhost and 127.0.0.1
tls_conn() {
	printf 'host=localhost hostaddr=127.0.0.1 port=%s user=%s dbname=%s sslmode=verify-full sslrootcert=%s sslcert=%s sslkey=%s gssencmode=disable' \
		"$1" "$2" "$3" "$CA/root.pem" "$W/$4-chain.pem" "$W/$4.key"
}
# plain_conn PORT USER DB [SSLMODE] : libpq conninfo without TLS (or with SSLMODE)
plain_conn() {
	printf 'host=127.0.0.1 port=%s user=%s dbname=%s sslmode=%s gssencmode=disable' \
		"$1" "$2" "$3" "${4:-disable}"
}
# q CONNINFO SQL... : psql -c SQL (RC, OUT, ERR)
q() {
	local c=$1
	shift
	LAST_CMD="psql '$c' $*"
	run psql -X -q -At -v ON_ERROR_STOP=1 -d "$c" "$@"
}

# wait_count FILE EVENT TEXT ABOVE SECONDS : until log_count FILE EVENT TEXT > ABOVE
wait_count() {
	local n=$(($5 * 20))
	while [ "$(log_count "$1" "$2" "$3")" -le "$4" ]; do
		n=$((n - 1))
		[ "$n" -gt 0 ] || return 1
		sleep 0.05
	done
}

# free_port : a TCP port free on 127.0.0.1 now (for PostgreSQL, which cannot bind port 0)
free_port() {
	local py
	for py in /usr/bin/python3 python3; do
		command -v "$py" >/dev/null || continue
		"$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' &&
			return 0
	done
	echo $((20000 + RANDOM % 20000))
}

# raw_plain PORT OUT BYTES-FUNCTION... : connect with bash's /dev/tcp, write what each
# function prints (in turn, each after the previous answer's first byte when several), and
# keep what comes back in OUT until the server closes (bounded: 10 s)
raw_plain() {
	local port=$1 out=$2 fd
	shift 2
	: >"$out"
	exec {fd}<>"/dev/tcp/127.0.0.1/$port" || return 1
	while [ $# -gt 1 ]; do
		"$1" >&"$fd"
		timeout 10 head -c 1 <&"$fd" >>"$out" || true
		shift
	done
	"$@" >&"$fd"
	timeout 10 cat <&"$fd" >>"$out" || true
	exec {fd}>&-
}

# s_client LOG INPUT ARGS... : openssl s_client to the mtls server in the background, stdin
# from INPUT (a FIFO from open_fifo); sets SC_PID
s_client() {
	local log=$1 input=$2
	shift 2
	start_bg_stdin "$input" "$log" openssl s_client -connect "127.0.0.1:$SRV_PORT" \
		-servername localhost -CAfile "$CA/root.pem" -verify_return_error -ign_eof "$@"
	SC_PID=$BG_PID
}

# active_pid ROLE : the backend pid of ROLE's active pg_sleep, waited for (bounded)
active_pid() {
	local pid=""
	for _ in $(seq 1 200); do
		sql postgres -c "select pid from pg_stat_activity where usename = '$1' and state = 'active' and query like 'select pg_sleep(30)%'"
		pid=$OUT
		[ -z "$pid" ] || break
		sleep 0.05
	done
	echo "$pid"
}
# end_sleepers ROLE : end any pg_sleep(30) of ROLE still running (a failed case's), so that
# the next case finds only its own
end_sleepers() {
	sql postgres -c "select pg_terminate_backend(pid) from pg_stat_activity where usename = '$1' and query like 'select pg_sleep(30)%'"
}
# sleepers ROLE : how many pg_sleep(30) of ROLE are still active
sleepers() {
	sql postgres -c "select count(*) from pg_stat_activity where usename = '$1' and state = 'active' and query like 'select pg_sleep(30)%'"
	echo "${OUT:-?}"
}

# ------------------------------------------------------------------------------------------
# Setup: the CA and certificates; PostgreSQL on its unix socket (trust, for the mtls server)
# and on 127.0.0.1 with its own TLS (hostssl, cert clientcert=verify-full, CN = role name).

LAST_CMD="mtls ca init --dir $CA"
run "$MTLS" ca init --dir "$CA"
[ "$RC" = 0 ] || setup_die "$LAST_CMD failed ($RC)" "$OUT" "$ERR"
issue() {
	local name=$1
	shift
	LAST_CMD="mtls ca issue $* --out $W/$name"
	run "$MTLS" ca issue --dir "$CA" "$@" --out "$W/$name"
	if [ "$RC" != 0 ] || [ ! -s "$W/$name-chain.pem" ] || [ ! -s "$W/$name.key" ]; then
		setup_die "$LAST_CMD failed ($RC)" "$OUT" "$ERR"
	fi
}
issue server --profile server --dns localhost --ip 127.0.0.1
issue billing --profile client --uri "$BILLING" --cn billing
issue reports --profile client --uri "$REPORTS" --cn reports

PGP=$(free_port) # PostgreSQL's TCP port (and the name of its socket)
cp -- "$W/server-chain.pem" "$PGDIR/server-chain.pem"
cp -- "$W/server.key" "$PGDIR/server.key"
cp -- "$CA/root.pem" "$PGDIR/root.pem"
chmod 600 -- "$PGDIR/server.key"
[ ${#AS_PG[@]} -eq 0 ] || chown postgres: -- "$PGDIR/server-chain.pem" "$PGDIR/server.key" "$PGDIR/root.pem"
cat >"$PGDATA/pg_hba.conf" <<'EOF'
local   all all                trust
hostssl all all 127.0.0.1/32   cert clientcert=verify-full
EOF
PG_LOG=$TMP/postgres.log
pg_start "$PG_LOG" -c log_connections=on -c listen_addresses=127.0.0.1 -c ssl=on \
	-c ssl_cert_file="$PGDIR/server-chain.pem" -c ssl_key_file="$PGDIR/server.key" \
	-c ssl_ca_file="$PGDIR/root.pem"
PG_TARGET=unix:$PGSOCK/.s.PGSQL.$PGP
sql postgres -c 'create role billing login' -c 'create role reports login' \
	-c 'create database billingdb owner billing'
[ "$RC" = 0 ] || setup_die "creating the roles failed" "$ERR"

SRV_LOG=$TMP/server.log
start_tunnel_server "$SRV_LOG" --protocol postgresql --target "$PG_TARGET" \
	--cert "$W/server-chain.pem" --key "$W/server.key" --ca "$CA/root.pem" \
	--allow-uri "$ALLOW" --pg-role "$BILLING=billing" --metrics 127.0.0.1:0 "${DRAIN[@]}"
MAIN_SRV_PID=$SRV_PID
MAIN_SRV_PORT=$SRV_PORT

# ==========================================================================================
echo "# 1. psql verify-full straight to mtls server --protocol postgresql"

p=()
q "$(tls_conn "$SRV_PORT" billing billingdb billing)" \
	-c 'select current_user, 40 + 2, (select ssl from pg_stat_ssl where pid = pg_backend_pid())'
[ "$RC" = 0 ] || p+=("psql exit status $RC, expected 0")
[ "$OUT" = 'billing|42|f' ] || p+=("got '$OUT', expected 'billing|42|f' (role billing, over the unix socket behind mtls)")
report "psql sslmode=verify-full with $BILLING's certificate, as role billing: select works" "${p[@]+"${p[@]}"}"

p=()
r0=$(log_count "$SRV_LOG" pg_refused)
q "$(tls_conn "$SRV_PORT" postgres postgres billing)" -c 'select 1'
[ "$RC" != 0 ] || p+=("psql succeeded as role postgres")
[ "$OUT" != 1 ] || p+=("the query was answered")
[[ $ERR == *"FATAL:  mtls: identity $BILLING may not connect as role \"postgres\""* ]] ||
	p+=("psql's stderr lacks 'FATAL:  mtls: identity $BILLING may not connect as role \"postgres\"'")
[[ $ERR != *'server closed the connection unexpectedly'* ]] || p+=("psql says 'server closed the connection unexpectedly'")
wait_count "$SRV_LOG" pg_refused "$BILLING" "$r0" 5 || p+=("no pg_refused line naming $BILLING in the server log")
grep -F '"event":"pg_refused"' "$SRV_LOG" | grep -qF postgres || p+=("the pg_refused line does not name the role postgres")
report "psql as role postgres with $BILLING's certificate: refused, FATAL naming identity and role, log pg_refused" \
	"${p[@]+"${p[@]}"}"

# a replication connection (which can copy every database) needs a rule for the database
# "replication" itself: "$BILLING=billing" (any database) does not grant it
p=()
r0=$(log_count "$SRV_LOG" pg_refused '"database":"replication"')
q "$(tls_conn "$SRV_PORT" billing billingdb billing) replication=database" -c 'IDENTIFY_SYSTEM'
[ "$RC" != 0 ] || p+=("a replication connection as billing got through")
[[ $ERR == *"FATAL:  mtls: identity $BILLING may not connect as role \"billing\""* ]] ||
	p+=("psql's stderr lacks the mtls refusal naming $BILLING and billing")
wait_count "$SRV_LOG" pg_refused '"database":"replication"' "$r0" 5 ||
	p+=("no pg_refused line with database replication in the server log")
report "psql replication=database as billing (rule '$BILLING=billing', any database): refused by mtls" \
	"${p[@]+"${p[@]}"}"

# the same refusal byte for byte: SSLRequest, handshake, StartupMessage inside TLS
# (openssl s_client -starttls postgres) -> ErrorResponse S FATAL, C 28000, M naming both
p=()
open_fifo "$W/in-role"
s_client "$W/role.out" "$W/in-role" -starttls postgres -cert "$W/reports-chain.pem" \
	-cert_chain "$W/reports-chain.pem" -key "$W/reports.key"
startup billing billingdb >&"$FIFO_FD"
wait_exit "$SC_PID" 20
close_fifo "$FIFO_FD"
[ "$EXIT_RC" != timeout ] || p+=("the server did not close the connection after the refusal (20 s)")
fields "$W/role.out" | grep -q 'SFATAL$' || p+=("no severity field SFATAL in the answer")
fields "$W/role.out" | grep -qx 'C28000' || p+=("no SQLSTATE field C28000 in the answer")
fields "$W/role.out" | grep -qxF "Mmtls: identity $REPORTS may not connect as role \"billing\"" ||
	p+=("no message field 'mtls: identity $REPORTS may not connect as role \"billing\"'")
fields "$W/role.out" | grep -q 'server_version' && p+=("PostgreSQL answered (server_version)")
LAST_CMD="openssl s_client -starttls postgres (certificate $REPORTS, user billing)" RC=$EXIT_RC
OUT=$(fields "$W/role.out" | tail -n 20) ERR=""
report "raw: $REPORTS (allowed, but in no --pg-role rule) as billing: ErrorResponse FATAL SQLSTATE 28000 naming identity and role" \
	"${p[@]+"${p[@]}"}"

# rules with patterns, ROLE '*' and @DATABASE, on a second server
start_tunnel_server "$TMP/server-rules.log" --protocol postgresql --target "$PG_TARGET" \
	--cert "$W/server-chain.pem" --key "$W/server.key" --ca "$CA/root.pem" \
	--allow-uri "$ALLOW" --pg-role "$ALLOW=reports@billingdb" --pg-role "$BILLING=*@postgres" \
	--metrics 127.0.0.1:0 "${DRAIN[@]}"
RULES_PID=$SRV_PID
# rule_case CERT USER DB EXPECT : EXPECT "ok" (select current_user answers USER) or "refused"
# (the mtls FATAL naming CERT's identity and USER)
rule_case() {
	local id=$BILLING
	[ "$1" = billing ] || id=$REPORTS
	q "$(tls_conn "$SRV_PORT" "$2" "$3" "$1")" -c 'select current_user'
	if [ "$4" = ok ]; then
		[ "$RC" = 0 ] && [ "$OUT" = "$2" ] || echo "$1's certificate as $2 on $3: refused (exit $RC: $(first_line "$ERR"))"
	else
		[ "$RC" != 0 ] || echo "$1's certificate as $2 on $3: let in"
		[[ $ERR == *"FATAL:  mtls: identity $id may not connect as role \"$2\""* ]] ||
			echo "$1's certificate as $2 on $3: not the mtls refusal naming $id and $2: $(first_line "$ERR")"
	fi
}
p=()
for c in "reports reports billingdb ok" "reports reports postgres refused" \
	"reports billing billingdb refused" "billing postgres postgres ok" \
	"billing billing postgres ok" "billing reports billingdb ok" "billing postgres billingdb refused"; do
	# shellcheck disable=SC2086
	r=$(rule_case $c)
	[ -z "$r" ] || p+=("$r")
done
LAST_CMD="" RC="" OUT="" ERR=""
report "--pg-role '$ALLOW=reports@billingdb' --pg-role '$BILLING=*@postgres': patterns, any role, the database decide" \
	"${p[@]+"${p[@]}"}"
stop_bg "$RULES_PID"
SRV_PORT=$MAIN_SRV_PORT

# ==========================================================================================
echo "# 2. plaintext clients get the mtls message"

p=()
pg0=$(grep -c 'connection received' "$PG_LOG" || true)
q "$(plain_conn "$SRV_PORT" billing billingdb)" -c 'select 1'
[ "$RC" != 0 ] || p+=("psql sslmode=disable succeeded")
[[ $ERR == *"FATAL:  $PLAIN_MSG"* ]] || p+=("psql's stderr lacks 'FATAL:  $PLAIN_MSG'")
[[ $ERR != *'server closed the connection unexpectedly'* ]] || p+=("psql says 'server closed the connection unexpectedly'")
report "psql sslmode=disable: psql shows 'FATAL:  $PLAIN_MSG'" "${p[@]+"${p[@]}"}"

p=()
raw_plain "$SRV_PORT" "$W/plain.out" startup_billing
[ "$(head -c 1 "$W/plain.out")" = E ] || p+=("the answer does not start with an ErrorResponse ('E')")
fields "$W/plain.out" | grep -q 'SFATAL$' || p+=("no severity field SFATAL")
fields "$W/plain.out" | grep -qx 'C28000' || p+=("no SQLSTATE field C28000")
fields "$W/plain.out" | grep -qxF "M$PLAIN_MSG" || p+=("no message field '$PLAIN_MSG'")
fields "$W/plain.out" | grep -qxF "H$PLAIN_HINT" || p+=("no hint field '$PLAIN_HINT'")
LAST_CMD="raw plaintext StartupMessage" RC="" OUT=$(fields "$W/plain.out") ERR=""
report "raw plaintext StartupMessage: ErrorResponse FATAL 28000, the message and the hint, then closed" \
	"${p[@]+"${p[@]}"}"

p=()
raw_plain "$SRV_PORT" "$W/gss.out" gssenc_request startup_billing
[ "$(head -c 1 "$W/gss.out")" = N ] || p+=("GSSENCRequest not answered 'N' (got '$(head -c 1 "$W/gss.out" | od -An -c)')")
[ "$(tail -c +2 "$W/gss.out" | head -c 1)" = E ] || p+=("the StartupMessage after it got no ErrorResponse")
fields "$W/gss.out" | grep -qxF "M$PLAIN_MSG" || p+=("no message field '$PLAIN_MSG' after the N")
LAST_CMD="raw GSSENCRequest, then a plaintext StartupMessage" RC="" OUT=$(fields "$W/gss.out") ERR=""
report "GSSENCRequest: answered N, the next first message read (the plaintext StartupMessage refused)" \
	"${p[@]+"${p[@]}"}"
sleep 0.2
pg1=$(grep -c 'connection received' "$PG_LOG" || true)
vcheck "PostgreSQL received none of the plaintext connections" \
	"$([ "$pg1" = "$pg0" ] || echo "PostgreSQL received $((pg1 - pg0)) connection(s)")"

p=()
q "$(tls_conn "$SRV_PORT" billing billingdb billing) sslcert=$W/none.crt sslkey=$W/none.key" -c 'select 1'
[ "$RC" != 0 ] || p+=("psql without a client certificate succeeded")
[ "$OUT" != 1 ] || p+=("the query was answered")
report "psql verify-full without a client certificate: refused" "${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# 3. cancel through mtls"

# cancel_case NAME HOW : pg_sleep(30) through mtls as billing, cancelled by HOW (a function
# given the psql's pid and the backend's pid); psql must end (bounded: 20 s) with
# "canceling statement due to user request"
cancel_case() {
	local name=$1 how=$2 pid bpid psql_pid
	local p=()
	start_bg "$W/sleep.out" psql -X -At -d "$(tls_conn "$SRV_PORT" billing billingdb billing)" \
		-c 'select pg_sleep(30)'
	pid=$BG_PID
	bpid=$(active_pid billing)
	psql_pid=$(pgrep -P "$pid" psql || true)
	if [ -z "$bpid" ] || [ -z "$psql_pid" ]; then
		p+=("the pg_sleep(30) did not start through mtls (backend '$bpid', psql '$psql_pid'):" "$(cat -- "$W/sleep.out")")
		stop_bg "$pid"
	else
		"$how" "$psql_pid" "$bpid"
		wait_exit "$pid" 20
		[ "$EXIT_RC" != timeout ] || p+=("psql still running 20 s after the cancel")
		[ "$EXIT_RC" != 0 ] || p+=("psql exited 0: the query was not cancelled")
		grep -q 'canceling statement due to user request' "$W/sleep.out" ||
			p+=("psql did not print 'canceling statement due to user request':" "$(cat -- "$W/sleep.out")")
		[ "$(sleepers billing)" = 0 ] || p+=("pg_sleep(30) still active in PostgreSQL")
	fi
	LAST_CMD="psql -c 'select pg_sleep(30)' cancelled by $how" RC=$EXIT_RC OUT=$(cat -- "$W/sleep.out")
	report "$name" "${p[@]+"${p[@]}"}"
	end_sleepers billing
}
by_function() { # a second session, through mtls too
	q "$(tls_conn "$SRV_PORT" billing billingdb billing)" -c "select pg_cancel_backend($2)"
	[ "$OUT" = t ] || echo "pg_cancel_backend($2) said '$OUT' ($ERR)" >&2
}
by_sigint() { kill -INT "$1"; } # psql sends a CancelRequest (libpq 15: plaintext) to mtls
cancel_case "pg_sleep(30) through mtls cancelled by pg_cancel_backend() from a second session through mtls" by_function
cancel_case "pg_sleep(30) through mtls cancelled by psql's own cancel (SIGINT: CancelRequest to mtls server)" by_sigint

# A CancelRequest inside TLS (after SSLRequest and the handshake, as libpq 17's
# PQcancelCreate sends it): a raw session's BackendKeyData gives the pid and secret key
p=()
open_fifo "$W/in-session"
SESSION_FD=$FIFO_FD
s_client "$W/session.out" "$W/in-session" -starttls postgres -cert "$W/billing-chain.pem" \
	-cert_chain "$W/billing-chain.pem" -key "$W/billing.key"
SESSION_PID=$SC_PID
startup billing billingdb >&"$SESSION_FD"
wait_for_line "$W/session.out" 'server_version' 20 "$SESSION_PID" || p+=("the raw session got no answer")
# BackendKeyData: 'K', length 12, the backend's pid, its secret key
key=$(python3 -c 'import sys
d = open(sys.argv[1], "rb").read()
i = d.find(b"K\x00\x00\x00\x0c")
print(int.from_bytes(d[i + 5:i + 9], "big"), int.from_bytes(d[i + 9:i + 13], "big")) if i >= 0 else None' \
	"$W/session.out" 2>/dev/null || true)
kpid=${key% *}
ksecret=${key#* }
if [ -z "$key" ]; then
	p+=("no BackendKeyData in the raw session's output")
else
	sqltext='select pg_sleep(30)'
	{
		printf Q
		be32 $((4 + ${#sqltext} + 1))
		printf '%s\000' "$sqltext"
	} >&"$SESSION_FD"
	bpid=$(active_pid billing)
	[ "$bpid" = "$kpid" ] || p+=("the active pg_sleep's backend is '$bpid', BackendKeyData said '$kpid'")
	{
		be32 16
		be32 80877102
		be32 "$kpid"
		be32 "$ksecret"
	} >"$W/cancel.bin"
	s_client "$W/cancel.out" "$W/cancel.bin" -starttls postgres -cert "$W/billing-chain.pem" \
		-cert_chain "$W/billing-chain.pem" -key "$W/billing.key"
	wait_exit "$SC_PID" 20
	[ "$EXIT_RC" != timeout ] || p+=("the server kept the cancel connection open (20 s)")
	wait_for_line "$W/session.out" 'canceling statement due to user request' 20 "$SESSION_PID" ||
		p+=("the raw session's pg_sleep(30) was not cancelled")
	[ "$(sleepers billing)" = 0 ] || p+=("pg_sleep(30) still active in PostgreSQL")
fi
terminate >&"$SESSION_FD"
close_fifo "$SESSION_FD"
wait_exit "$SESSION_PID" 20
end_sleepers billing
LAST_CMD="CancelRequest (pid ${kpid:-?}) through openssl s_client -starttls postgres" RC=$EXIT_RC
OUT=$(fields "$W/session.out" | tail -n 12) ERR=""
report "a CancelRequest inside TLS (SSLRequest, handshake, then the 16 bytes) cancels the raw session's pg_sleep(30)" \
	"${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# 4. direct TLS (PostgreSQL 17: ClientHello first, ALPN postgresql)"

p=()
open_fifo "$W/in-direct"
s_client "$W/direct.out" "$W/in-direct" -alpn postgresql -cert "$W/billing-chain.pem" \
	-cert_chain "$W/billing-chain.pem" -key "$W/billing.key"
startup billing billingdb >&"$FIFO_FD"
wait_for_line "$W/direct.out" 'server_version' 20 "$SC_PID" ||
	p+=("no answer to the StartupMessage (no ParameterStatus server_version)")
terminate >&"$FIFO_FD"
close_fifo "$FIFO_FD"
wait_exit "$SC_PID" 20
[ "$EXIT_RC" != timeout ] || p+=("the connection stayed open after Terminate (20 s)")
grep -q '^ALPN protocol: postgresql' "$W/direct.out" || p+=("the server did not select ALPN postgresql")
grep -q 'Verify return code: 0 (ok)' "$W/direct.out" || p+=("the server certificate was not verified")
fields "$W/direct.out" | grep -qF 'mtls:' && p+=("an mtls refusal came back")
LAST_CMD="openssl s_client -alpn postgresql (certificate $BILLING, user billing)" RC=$EXIT_RC
OUT=$(fields "$W/direct.out" | grep -av '^-----\|^[A-Za-z0-9+/=]\{64\}$' | tail -n 30) ERR=""
report "direct TLS with ALPN postgresql and a client certificate: handshake, StartupMessage answered by PostgreSQL" \
	"${p[@]+"${p[@]}"}"

p=()
a0=$(grep -c 'alpn_required' "$SRV_LOG" || true)
open_fifo "$W/in-noalpn"
s_client "$W/noalpn.out" "$W/in-noalpn" -cert "$W/billing-chain.pem" \
	-cert_chain "$W/billing-chain.pem" -key "$W/billing.key"
startup billing billingdb >&"$FIFO_FD"
wait_exit "$SC_PID" 20
close_fifo "$FIFO_FD"
[ "$EXIT_RC" != timeout ] || p+=("the server did not close the connection (20 s)")
grep -q 'server_version' "$W/noalpn.out" && p+=("PostgreSQL answered the StartupMessage")
n=0
for _ in $(seq 1 100); do
	n=$(grep -c 'alpn_required' "$SRV_LOG" || true)
	[ "$n" -gt "$a0" ] && break
	sleep 0.05
done
[ "$n" -gt "$a0" ] || p+=("no log line with reason alpn_required:" "$(tail -n 5 "$SRV_LOG")")
LAST_CMD="openssl s_client without -alpn" RC=$EXIT_RC OUT=$(tail -n 20 "$W/noalpn.out") ERR=""
report "direct TLS without ALPN: refused (log reason alpn_required), PostgreSQL never answers" "${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# 5. mtls connector --protocol postgresql"

p=()
q "$(plain_conn "$PGP" billing billingdb)" -c 'select 1'
[ "$RC" != 0 ] || p+=("PostgreSQL let a plaintext TCP client in (hostssl only expected)")
LAST_CMD="psql sslmode=disable straight to PostgreSQL"
report "setup check: PostgreSQL itself refuses plaintext TCP (hostssl ... cert clientcert=verify-full)" "${p[@]+"${p[@]}"}"

# connector LOG SERVER_PORT CERT KEY : a postgresql connector (sets CON_PORT, CON_PID)
connector() {
	start_tunnel_connector "$1" --protocol postgresql --server "127.0.0.1:$2" \
		--server-name localhost --cert "$3" --key "$4" --ca "$CA/root.pem" \
		--metrics 127.0.0.1:0 "${DRAIN[@]}"
}
connector "$TMP/con-pg.log" "$PGP" "$W/billing-chain.pem" "$W/billing.key"
p=()
q "$(plain_conn "$CON_PORT" billing billingdb)" \
	-c 'select current_user, ssl, client_dn from pg_stat_ssl where pid = pg_backend_pid()'
[ "$RC" = 0 ] || p+=("psql exit status $RC")
[ "$OUT" = 'billing|t|/CN=billing' ] || p+=("got '$OUT', expected 'billing|t|/CN=billing' (TLS with the client certificate)")
report "psql sslmode=disable -> connector -> PostgreSQL's own TLS (cert clientcert=verify-full): select as billing" \
	"${p[@]+"${p[@]}"}"

p=()
q "$(plain_conn "$CON_PORT" billing billingdb prefer)" -c 'select current_user'
[ "$RC" = 0 ] && [ "$OUT" = billing ] || p+=("psql sslmode=prefer to the connector: exit $RC, '$OUT'")
report "psql sslmode=prefer to the connector: SSLRequest answered N locally, select works" "${p[@]+"${p[@]}"}"

p=()
q "$(plain_conn "$CON_PORT" postgres postgres)" -c 'select 1'
[ "$RC" != 0 ] || p+=("PostgreSQL let billing's certificate in as postgres")
[[ $ERR == *'certificate authentication failed for user "postgres"'* ]] ||
	p+=("psql does not show PostgreSQL's 'certificate authentication failed for user \"postgres\"'")
report "through the connector as role postgres: PostgreSQL's own refusal (CN billing) reaches psql" "${p[@]+"${p[@]}"}"
stop_bg "$CON_PID"

p=()
connector "$TMP/con-other.log" "$PGP" "$CERTS/other-client-chain.pem" "$CERTS/other-client.key"
q "$(plain_conn "$CON_PORT" billing billingdb)" -c 'select 1'
[ "$RC" != 0 ] || p+=("a client certificate from another CA got through")
[ "$OUT" != 1 ] || p+=("the query was answered")
[ "$RC" != 124 ] || p+=("psql hung")
report "connector with a client certificate from another CA: PostgreSQL refuses" "${p[@]+"${p[@]}"}"
stop_bg "$CON_PID"

p=()
connector "$TMP/con-mtls.log" "$SRV_PORT" "$W/billing-chain.pem" "$W/billing.key"
q "$(plain_conn "$CON_PORT" billing billingdb)" -c 'select current_user'
[ "$RC" = 0 ] && [ "$OUT" = billing ] || p+=("as billing: exit $RC, '$OUT'")
q "$(plain_conn "$CON_PORT" postgres postgres)" -c 'select 1'
[ "$RC" != 0 ] || p+=("as postgres: psql succeeded")
[[ $ERR == *"FATAL:  mtls: identity $BILLING may not connect as role \"postgres\""* ]] ||
	p+=("as postgres: psql's stderr lacks the mtls refusal naming $BILLING and postgres")
report "connector -> mtls server --protocol postgresql: billing works, postgres refused with the mtls message" \
	"${p[@]+"${p[@]}"}"
stop_bg "$CON_PID"

# ==========================================================================================
echo "# 6. a second client library: psycopg2"

PY=""
for py in /usr/bin/python3 python3; do
	if command -v "$py" >/dev/null && "$py" -c 'import psycopg2' 2>/dev/null; then
		PY=$py
		break
	fi
done
if [ -z "$PY" ]; then
	echo "skip  psycopg2: not installed (apt-get install python3-psycopg2)"
else
	cat >"$W/pg.py" <<'EOF'
import sys, threading, time
import psycopg2, psycopg2.errors
ok, refused = sys.argv[1], sys.argv[2]
c = psycopg2.connect(ok)
cur = c.cursor()
cur.execute("select current_user, ssl from pg_stat_ssl where pid = pg_backend_pid()")
print("row", *cur.fetchone())
# the library's own cancel (PQcancel: a CancelRequest without TLS) from another thread
def cancel():
    c2 = psycopg2.connect(ok)
    c2.autocommit = True
    k = c2.cursor()
    for _ in range(400):
        k.execute("select count(*) from pg_stat_activity where usename = 'billing'"
                  " and state = 'active' and query like 'select pg_sleep(30)%'")
        if k.fetchone()[0] > 0:
            c.cancel()
            return
        time.sleep(0.05)
t = threading.Thread(target=cancel)
t.start()
try:
    cur.execute("select pg_sleep(30)")
    print("not cancelled")
except psycopg2.errors.QueryCanceled:
    print("cancelled")
t.join()
try:
    psycopg2.connect(refused)
    print("refused-role connected")
except psycopg2.OperationalError as e:
    print("refused", str(e).strip().replace("\n", " "))
EOF
	p=()
	LAST_CMD="$PY pg.py"
	run "$PY" "$W/pg.py" "$(tls_conn "$SRV_PORT" billing billingdb billing)" \
		"$(tls_conn "$SRV_PORT" postgres postgres billing)"
	[ "$RC" = 0 ] || p+=("exit status $RC")
	has_line "$OUT" 'row billing False' || p+=("no 'row billing False' (connected as billing)")
	has_line "$OUT" 'cancelled' || p+=("the pg_sleep(30) was not cancelled by connection.cancel()")
	[[ $OUT == *"FATAL:  mtls: identity $BILLING may not connect as role \"postgres\""* ]] ||
		p+=("the refusal as postgres does not carry the mtls message")
	report "psycopg2 $("$PY" -c 'import psycopg2; print(psycopg2.__version__.split()[0])'): verify-full as billing, cancel(), postgres refused" \
		"${p[@]+"${p[@]}"}"
fi

# ==========================================================================================
echo "# 7. pgbench through mtls native"

p=()
LAST_CMD="pgbench -i -s 1"
RUN_LIMIT=120 run pgbench -i -s 1 -q "$(tls_conn "$SRV_PORT" billing billingdb billing)"
[ "$RC" = 0 ] || p+=("pgbench -i exit status $RC")
LAST_CMD="pgbench -c 4 -j 2 -t 200"
[ "$RC" != 0 ] || RUN_LIMIT=120 run pgbench -c 4 -j 2 -t 200 "$(tls_conn "$SRV_PORT" billing billingdb billing)"
processed=$(sed -n 's/^number of transactions actually processed: \([0-9/]*\).*/\1/p' <<<"$OUT")
failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$OUT")
tps=$(sed -n '/^tps = \([0-9.]*\) .*/{s//\1/p;q}' <<<"$OUT")
[ "$RC" = 0 ] || p+=("pgbench exit status $RC")
[ "$processed" = 800/800 ] || p+=("processed '$processed', expected 800/800")
[ -z "$failed" ] || [ "$failed" = 0 ] || p+=("$failed failed transactions")
report "pgbench -i -s 1, then -c 4 -t 200 through mtls native (verify-full): ${processed:-?} transactions, tps ${tps:-?}" \
	"${p[@]+"${p[@]}"}"

# ==========================================================================================
p=()
kill -0 "$MAIN_SRV_PID" 2>/dev/null || p+=("the mtls server died")
LAST_CMD="" RC="" OUT="" ERR=""
report "the mtls server is alive at the end" "${p[@]+"${p[@]}"}"
finish
