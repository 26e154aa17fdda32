#!/usr/bin/env bash
# Adversarial review of --protocol postgresql (task rev4): raw-socket attack clients (python3)
# against `mtls server --protocol postgresql` in front of a real PostgreSQL 15, and against
# `mtls connector --protocol postgresql` in front of fake servers. Each case guards a
# protection that holds today:
#
#   1. SSLRequest with a plaintext StartupMessage pipelined behind it (CVE-2021-23214 class):
#      the bytes go to TLS, not to PostgreSQL
#   2. a preamble that never completes, and a ClientHello trickled a byte at a time: both end
#      within the handshake timeout (the timer is not re-armed by bytes)
#   3. a second GSSENCRequest: closed, no second N
#   4. a plaintext CancelRequest with bytes behind it: exactly its 16 bytes reach the target
#   5. inside TLS: an oversized StartupMessage, a user given twice, a 64-byte user name (that
#      PostgreSQL would cut to another name), a truncated one: refused or timed out, and
#      PostgreSQL sees none of them
#   6. the connector: a server answering S with plaintext injected behind it
#      (CVE-2021-23222 class) fails the handshake; a server answering N is refused
set -euo pipefail
BG_LIMIT=${BG_LIMIT:-150}
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
for p in psql python3; do
	command -v "$p" >/dev/null || skip_all "$p not found in PATH"
done
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
	skip_all "running as root and there is no postgres user"
fi
# shellcheck source=tests/integration/pg_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/pg_lib.sh"
export PGCONNECT_TIMEOUT=5

W=$TMP/w
mkdir -m 700 -- "$W"
CA=$TMP/ca
BILLING=spiffe://example.org/ns/prod/sa/billing

LAST_CMD="mtls ca init --dir $CA"
run "$MTLS" ca init --dir "$CA"
[ "$RC" = 0 ] || setup_die "$LAST_CMD failed ($RC)" "$OUT" "$ERR"
issue() {
	local name=$1
	shift
	LAST_CMD="mtls ca issue $* --out $W/$name"
	run "$MTLS" ca issue --dir "$CA" "$@" --out "$W/$name"
	if [ "$RC" != 0 ] || [ ! -s "$W/$name-chain.pem" ]; then
		setup_die "$LAST_CMD failed ($RC)" "$OUT" "$ERR"
	fi
}
issue server --profile server --dns localhost --ip 127.0.0.1
issue billing --profile client --uri "$BILLING" --cn billing

pg_start "$TMP/postgres.log" -c log_connections=on
PG_LOG=$TMP/postgres.log
sql postgres -c 'create role billing login' -c 'create database billingdb owner billing'
[ "$RC" = 0 ] || setup_die "creating the role failed" "$ERR"
pg_conns() { grep -c 'connection received' "$PG_LOG" || true; }

# the attack client: python3 pga.py CASE PORT, one line of result per case
cat >"$W/pga.py" <<'EOF'
import socket, ssl, struct, sys, time
W, CASE, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])
SSLREQ = struct.pack("!ii", 8, 80877103)
GSSREQ = struct.pack("!ii", 8, 80877104)
def startup(params, version=196608):
    body = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params) + b"\0"
    return struct.pack("!ii", 8 + len(body), version) + body
def raw():
    s = socket.create_connection(("127.0.0.1", PORT)); s.settimeout(20); return s
def readall(s, limit=20):
    s.settimeout(limit); out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d: return out
            out += d
    except socket.timeout: return out + b"<open>"
    except OSError: return out + b"<reset>"
def tls():
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.load_verify_locations(W + "/../ca/root.pem")
    c.load_cert_chain(W + "/billing-chain.pem", W + "/billing.key")
    s = raw(); s.sendall(SSLREQ)
    if s.recv(1) != b"S": raise SystemExit("no S")
    return c.wrap_socket(s, server_hostname="localhost")
def answer(d):  # an ErrorResponse's C and M fields, or the bytes
    if d[:1] == b"E":
        return " ".join(f.decode(errors="replace") for f in d[5:].split(b"\0") if f[:1] in (b"C", b"M"))
    return repr(d[:20])
base = [("user", "billing"), ("database", "billingdb")]
if CASE == "pipelined":
    s = raw(); s.sendall(SSLREQ + startup(base)); print(repr(readall(s)))
elif CASE == "partial":
    s = raw(); s.sendall(SSLREQ[:7]); t = time.time(); d = readall(s)
    print(repr(d), "closed" if not d.endswith(b"<open>") else "open")
elif CASE == "trickle":
    s = raw(); s.sendall(SSLREQ)
    if s.recv(1) != b"S": raise SystemExit("no S")
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); c.load_verify_locations(W + "/../ca/root.pem")
    o = c.wrap_bio(inc, out, server_hostname="localhost")
    try: o.do_handshake()
    except ssl.SSLWantReadError: pass
    hello, sent, t = out.read(), 0, time.time()
    try:
        while sent < len(hello) and time.time() - t < 20:
            s.send(hello[sent:sent + 1]); sent += 1; time.sleep(0.2)
    except OSError: pass
    print("closed" if sent < len(hello) else "still open after %d bytes" % sent)
elif CASE == "gssenc2":
    s = raw(); s.sendall(GSSREQ); a = s.recv(1); s.sendall(GSSREQ); print(repr(a + readall(s)))
elif CASE == "cancel_trailing":
    s = raw(); s.sendall(struct.pack("!iiii", 16, 80877102, 4711, 815) + b"TRAILING" + startup([("user", "postgres")]))
    print(repr(readall(s)))
elif CASE == "oversized":
    t = tls(); t.sendall(struct.pack("!ii", 10001, 196608) + b"x" * 9993); print(answer(readall(t)))
elif CASE == "user_twice":
    t = tls(); t.sendall(startup([("user", "billing"), ("database", "billingdb"), ("user", "postgres")])); print(answer(readall(t)))
elif CASE == "user_64":
    t = tls(); t.sendall(startup([("user", "billing" + "x" * 57)])); print(answer(readall(t)))
elif CASE == "truncated":
    t = tls(); t.sendall(startup(base)[:20]); d = readall(t); print(repr(d))
EOF
# attack CASE PORT : python3 pga.py (RC, OUT, ERR)
attack() {
	LAST_CMD="pga.py $1"
	RUN_LIMIT=40 run python3 "$W/pga.py" "$W" "$1" "$2"
}

SRV_LOG=$TMP/server.log
start_tunnel_server "$SRV_LOG" --protocol postgresql --target "unix:$PGSOCK/.s.PGSQL.$PGP" \
	--cert "$W/server-chain.pem" --key "$W/server.key" --ca "$CA/root.pem" \
	--allow-uri "$BILLING" --pg-role "$BILLING=billing" --handshake-timeout 2s \
	--drain-timeout 1s
MAIN_SRV_PID=$SRV_PID
MAIN_SRV_PORT=$SRV_PORT

p=()
LAST_CMD="psql verify-full as billing"
run psql -X -At -d "host=localhost hostaddr=127.0.0.1 port=$SRV_PORT user=billing dbname=billingdb sslmode=verify-full sslrootcert=$CA/root.pem sslcert=$W/billing-chain.pem sslkey=$W/billing.key" -c 'select current_user'
[ "$RC" = 0 ] && [ "$OUT" = billing ] || p+=("psql as billing: exit $RC, '$OUT'")
report "setup: psql verify-full as billing through the server works" "${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# 1. plaintext pipelined behind the SSLRequest"
p=()
pg0=$(pg_conns)
attack pipelined "$SRV_PORT"
[ "$OUT" = "b'S'" ] || p+=("expected only 'S' and a close, got $OUT")
sleep 0.3
[ "$(pg_conns)" = "$pg0" ] || p+=("PostgreSQL received a connection: the pipelined plaintext reached it")
report "SSLRequest + a plaintext StartupMessage in one packet: answered S, the plaintext fails TLS, PostgreSQL sees nothing" \
	"${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# 2. slow clients end within the handshake timeout"
p=()
attack partial "$SRV_PORT"
[ "$OUT" = "b'' closed" ] || p+=("7 bytes of an SSLRequest, then silence: '$OUT' (expected closed within 20 s of a 2 s timeout)")
report "7 bytes of a first message, then nothing: closed (--handshake-timeout 2s)" "${p[@]+"${p[@]}"}"
p=()
attack trickle "$SRV_PORT"
[ "$OUT" = closed ] || p+=("a ClientHello at one byte per 0.2 s: $OUT")
report "SSLRequest, then the ClientHello a byte at a time: closed well before it is complete" "${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# 3. GSSENCRequest loop"
p=()
attack gssenc2 "$SRV_PORT"
[ "$OUT" = "b'N'" ] || p+=("expected one 'N' then a close, got $OUT")
report "GSSENCRequest twice: N once, then closed" "${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# 4. a plaintext CancelRequest forwards its 16 bytes only"
cat >"$W/sink.py" <<'EOF'
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept(); c.settimeout(5); got = b""
    try:
        while True:
            d = c.recv(65536)
            if not d: break
            got += d
    except OSError: pass
    print("got", got.hex(), flush=True); c.close()
EOF
start_bg "$W/sink.out" python3 -u "$W/sink.py"
SINK_PID=$BG_PID
wait_for_line "$W/sink.out" '^[0-9]+$' 10 "$SINK_PID" || setup_die "the sink did not start"
SINK_PORT=$(head -n 1 "$W/sink.out")
start_tunnel_server "$TMP/server-sink.log" --protocol postgresql --target "127.0.0.1:$SINK_PORT" \
	--cert "$W/server-chain.pem" --key "$W/server.key" --ca "$CA/root.pem" \
	--allow-uri "$BILLING" --handshake-timeout 2s --drain-timeout 1s
SINK_SRV=$SRV_PID
p=()
attack cancel_trailing "$SRV_PORT"
wait_for_line "$W/sink.out" '^got ' 20 "$SINK_PID" || p+=("the target got nothing")
want="got 0000001004d2162e0000126700000$(printf '%03x' 815)"
grep -qx "$want" "$W/sink.out" || p+=("the target got '$(grep '^got' "$W/sink.out" | head -n 1)', expected exactly '$want'")
report "CancelRequest with bytes behind it (no TLS): the target gets exactly the 16 bytes" "${p[@]+"${p[@]}"}"
stop_bg "$SINK_SRV"
stop_bg "$SINK_PID"
SRV_PID=$MAIN_SRV_PID
SRV_PORT=$MAIN_SRV_PORT

# ==========================================================================================
echo "# 5. StartupMessages inside TLS that must not reach PostgreSQL"
pg0=$(pg_conns)
for c in "oversized|C28000 Mmtls: expected a startup message" \
	"user_twice|C28000 Mmtls: the startup message is not valid" \
	"user_64|C28000 Mmtls: the startup message is not valid"; do
	p=()
	attack "${c%%|*}" "$SRV_PORT"
	[ "$OUT" = "${c#*|}" ] || p+=("got '$OUT', expected '${c#*|}'")
	report "inside TLS, ${c%%|*}: refused with the mtls ErrorResponse" "${p[@]+"${p[@]}"}"
done
p=()
attack truncated "$SRV_PORT"
[ "$OUT" = "b''" ] || p+=("a StartupMessage cut short: '$OUT' (expected a close within 20 s of a 2 s timeout)")
report "inside TLS, a StartupMessage cut short: closed by the timeout" "${p[@]+"${p[@]}"}"
sleep 0.3
vcheck "PostgreSQL received none of the refused StartupMessages" \
	"$([ "$(pg_conns)" = "$pg0" ] || echo "PostgreSQL received $(($(pg_conns) - pg0)) connection(s)")"

# ==========================================================================================
echo "# 6. the connector against servers that do not do TLS"
cat >"$W/fake.py" <<'EOF'
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8)
print(s.getsockname()[1], flush=True)
answer = {"N": b"N",
          # S, then a plaintext AuthenticationOk and ReadyForQuery a MITM would inject
          "inject": b"SR\x00\x00\x00\x08\x00\x00\x00\x00Z\x00\x00\x00\x05I"}[sys.argv[1]]
while True:
    c, _ = s.accept(); c.settimeout(5)
    try:
        print("got", c.recv(8).hex(), flush=True); c.sendall(answer); c.recv(4096)
    except OSError: pass
    c.close()
EOF
fake_case() {
	local mode=$1 fake
	start_bg "$W/fake-$mode.out" python3 -u "$W/fake.py" "$mode"
	fake=$BG_PID
	wait_for_line "$W/fake-$mode.out" '^[0-9]+$' 10 "$fake" || setup_die "the fake server did not start"
	start_tunnel_connector "$TMP/con-$mode.log" --protocol postgresql \
		--server "127.0.0.1:$(head -n 1 "$W/fake-$mode.out")" --server-name localhost \
		--cert "$W/billing-chain.pem" --key "$W/billing.key" --ca "$CA/root.pem" \
		--handshake-timeout 2s --drain-timeout 1s
	LAST_CMD="psql sslmode=prefer to the connector (fake server: $mode)"
	run psql -X -At -d "host=127.0.0.1 port=$CON_PORT user=billing dbname=billingdb sslmode=prefer gssencmode=disable" -c 'select 42'
	stop_bg "$CON_PID"
	stop_bg "$fake"
}
p=()
fake_case inject
[ "$RC" != 0 ] || p+=("psql succeeded: plaintext after S was taken as the server's")
[ "$OUT" != 42 ] || p+=("a query was answered")
grep -q '^got 0000000804d2162f$' "$W/fake-inject.out" || p+=("the fake server got no SSLRequest")
[ "$(log_count "$TMP/con-inject.log" handshake_refused)" -ge 1 ] ||
	p+=("no handshake_refused in the connector's log")
report "connector: a server answering S with plaintext behind it: the handshake fails, nothing reaches psql" \
	"${p[@]+"${p[@]}"}"
p=()
fake_case N
[ "$RC" != 0 ] || p+=("psql succeeded against a server without TLS")
grep -qF "answered the SSLRequest with 'N'" "$TMP/con-N.log" ||
	p+=("the connector's log does not say the server answered N")
report "connector: a server answering N: refused, no plaintext fallback" "${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# 7. replication connections need DATABASE replication itself"
# (a walsender reaches every database: BASE_BACKUP copies the whole cluster)
sql postgres -c 'alter role billing replication'
[ "$RC" = 0 ] || setup_die "alter role billing replication failed" "$ERR"
rep_conn() { # PORT REPLICATION
	printf 'host=localhost hostaddr=127.0.0.1 port=%s user=billing dbname=billingdb replication=%s sslmode=verify-full sslrootcert=%s sslcert=%s sslkey=%s gssencmode=disable' \
		"$1" "$2" "$CA/root.pem" "$W/billing-chain.pem" "$W/billing.key"
}
# verify_full PORT NAME : libpq conninfo as billing to billingdb with $W/NAME.pem (its chain)
# and $W/NAME.key
verify_full() {
	printf 'host=localhost hostaddr=127.0.0.1 port=%s user=billing dbname=billingdb sslmode=verify-full sslrootcert=%s sslcert=%s sslkey=%s gssencmode=disable' \
		"$1" "$CA/root.pem" "$W/$2.pem" "$W/$2.key"
}
cp -- "$W/billing-chain.pem" "$W/billing2.pem"
cp -- "$W/billing.key" "$W/billing2.key"
p=()
for r in true database; do
	LAST_CMD="psql replication=$r IDENTIFY_SYSTEM (rule $BILLING=billing)"
	run psql -X -At -d "$(rep_conn "$MAIN_SRV_PORT" "$r")" -c IDENTIFY_SYSTEM
	[ "$RC" != 0 ] || p+=("replication=$r let in by a rule without @replication: $OUT")
	[[ $ERR == *"may not connect as role \"billing\""* ]] ||
		p+=("replication=$r: psql does not show the mtls refusal: $ERR")
done
[ "$(log_count "$SRV_LOG" pg_refused '"database":"replication"')" -ge 2 ] ||
	p+=("no pg_refused line naming database replication")
report "replication=true and replication=database refused without a @replication rule" \
	"${p[@]+"${p[@]}"}"
start_tunnel_server "$TMP/server-rep.log" --protocol postgresql \
	--target "unix:$PGSOCK/.s.PGSQL.$PGP" --cert "$W/server-chain.pem" --key "$W/server.key" \
	--ca "$CA/root.pem" --allow-uri "$BILLING" --pg-role "$BILLING=billing@replication" \
	--drain-timeout 1s
p=()
LAST_CMD="psql replication=true IDENTIFY_SYSTEM (rule $BILLING=billing@replication)"
run psql -X -At -d "$(rep_conn "$SRV_PORT" true)" -c IDENTIFY_SYSTEM
[ "$RC" = 0 ] || p+=("refused with a @replication rule: exit $RC: $ERR")
LAST_CMD="psql dbname=billingdb without replication (rule $BILLING=billing@replication only)"
run psql -X -At -d "$(verify_full "$SRV_PORT" billing2)" -c 'select 1'
[ "$RC" != 0 ] || p+=("a @replication rule let in an ordinary session")
[[ $ERR == *"may not connect as role \"billing\""* ]] ||
	p+=("an ordinary session is not refused by the role rule: $ERR")
report "a rule with @replication lets in replication connections, and only those" \
	"${p[@]+"${p[@]}"}"
stop_bg "$SRV_PID"

# ==========================================================================================
echo "# 8. a reload with other --pg-role rules closes the sessions they no longer allow"
{
	echo "protocol postgresql"
	echo "target unix:$PGSOCK/.s.PGSQL.$PGP"
	echo "cert $W/server-chain.pem"
	echo "key $W/server.key"
	echo "ca $CA/root.pem"
	echo "allow-uri $BILLING"
	echo "pg-role $BILLING=billing"
	echo "drain-timeout 1s"
} >"$W/roles.conf"
start_tunnel_server "$TMP/server-roles.log" --config "$W/roles.conf"
REAL=$(sed -n 's/.*"event":"listening".*"pid":\([0-9][0-9]*\).*/\1/p' "$TMP/server-roles.log" | head -n 1)
[ -n "$REAL" ] || setup_die "no pid in the listening line" "$(cat -- "$TMP/server-roles.log")"
start_bg "$W/long.out" psql -X -At -d "$(verify_full "$SRV_PORT" billing2)" \
	-c 'select pg_sleep(30)'
LONG=$BG_PID
wait_for_line "$TMP/server-roles.log" '"event":"pg_startup"' "$READY_LIMIT" ||
	setup_die "the long session did not start" "$(cat -- "$TMP/server-roles.log")"
sed -i "s|^pg-role .*|pg-role $BILLING=reports|" "$W/roles.conf"
kill -HUP "$REAL"
p=()
wait_for_line "$TMP/server-roles.log" '"event":"conn_rejudged".*"reason":"role_not_allowed"' \
	"$READY_LIMIT" || p+=("no conn_rejudged with reason role_not_allowed")
wait_exit "$LONG" 20
[ "$EXIT_RC" != 0 ] || p+=("the session went on to the end of its pg_sleep(30)")
[ "$EXIT_RC" != 124 ] || p+=("the session was not closed (psql still waiting)")
report "SIGHUP with rules that no longer allow billing: the live session is closed" \
	"${p[@]+"${p[@]}"}"
stop_bg "$SRV_PID"

# ==========================================================================================
echo "# 9. insecure-audit: an unverified certificate's names are no identity for --pg-role"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
	-subj /CN=billing -addext "subjectAltName=URI:$BILLING" \
	-addext "extendedKeyUsage=clientAuth" -keyout "$W/forged.key" -out "$W/forged.pem" \
	>/dev/null 2>&1 || setup_die "openssl req (a self-signed certificate) failed"
chmod 600 "$W/forged.key"
start_tunnel_server "$TMP/server-audit.log" --protocol postgresql --mode insecure-audit \
	--target "unix:$PGSOCK/.s.PGSQL.$PGP" --cert "$W/server-chain.pem" --key "$W/server.key" \
	--ca "$CA/root.pem" --allow-uri "$BILLING" --pg-role "$BILLING=billing" \
	--drain-timeout 1s
p=()
LAST_CMD="psql with a self-signed certificate naming $BILLING (insecure-audit)"
run psql -X -At -d "$(verify_full "$SRV_PORT" forged)" -c 'select current_user'
[ "$RC" != 0 ] || p+=("let in as $OUT with a forged certificate")
[ "$(log_count "$TMP/server-audit.log" pg_refused)" -ge 1 ] || p+=("no pg_refused line")
LAST_CMD="psql with the real certificate (insecure-audit)"
run psql -X -At -d "$(verify_full "$SRV_PORT" billing2)" -c 'select current_user'
[ "$RC" = 0 ] && [ "$OUT" = billing ] || p+=("the real certificate: exit $RC, '$OUT'")
report "insecure-audit: a forged certificate's URI gets no role, the real one does" \
	"${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# 10. refusals of what is not PostgreSQL, and of options that do not fit together"
p=()
before=$(pg_conns)
exec {g}<>"/dev/tcp/127.0.0.1/$MAIN_SRV_PORT"
# (the refusal may close the connection while the bytes go out: a failed write is no failure)
{ printf 'GET / HTTP/1.0\r\n\r\n' >&"$g"; } 2>/dev/null || true
reply=$(timeout 10 cat <&"$g" | head -c 100 | od -An -c | tr -s ' ' || true)
exec {g}>&-
[ -z "$reply" ] || p+=("an answer to HTTP bytes: $reply")
wait_for_line "$SRV_LOG" '"reason":"not_tls".*neither a PostgreSQL message' "$READY_LIMIT" ||
	p+=("no handshake_refused naming the bytes as neither PostgreSQL nor TLS")
[ "$(pg_conns)" = "$before" ] || p+=("PostgreSQL saw a connection")
report "server: HTTP bytes first are refused (not_tls), PostgreSQL sees nothing" "${p[@]+"${p[@]}"}"

start_tunnel_connector "$TMP/con-garbage.log" --protocol postgresql \
	--server "127.0.0.1:$MAIN_SRV_PORT" --server-name localhost \
	--cert "$W/billing-chain.pem" --key "$W/billing.key" --ca "$CA/root.pem" --drain-timeout 1s
p=()
before=$(log_count "$SRV_LOG" conn_open)
exec {g}<>"/dev/tcp/127.0.0.1/$CON_PORT"
# (the refusal may close the connection while the bytes go out: a failed write is no failure)
{ printf 'GET / HTTP/1.0\r\n\r\n' >&"$g"; } 2>/dev/null || true
timeout 10 cat <&"$g" >/dev/null || true
exec {g}>&-
wait_for_line "$TMP/con-garbage.log" '"event":"conn_refused".*"reason":"not_postgresql"' \
	"$READY_LIMIT" || p+=("no conn_refused not_postgresql in the connector's log")
[ "$(log_count "$SRV_LOG" conn_open)" = "$before" ] ||
	p+=("the connector went on to the server with bytes that are not PostgreSQL")
report "connector: a local client that does not speak PostgreSQL is refused before any TLS" \
	"${p[@]+"${p[@]}"}"
stop_bg "$CON_PID"

# refused ARGS... -- TEXT : mtls server ARGS exits 2 with TEXT in its one line of stderr
refused() {
	local args=() p=()
	while [ "$1" != -- ]; do
		args+=("$1")
		shift
	done
	LAST_CMD="mtls server ${args[*]}"
	run "$MTLS" server --listen 127.0.0.1:0 --target "unix:$PGSOCK/.s.PGSQL.$PGP" \
		--cert "$W/server-chain.pem" --key "$W/server.key" --ca "$CA/root.pem" \
		--allow-uri "$BILLING" "${args[@]}"
	[ "$RC" = 2 ] || p+=("exit $RC, expected 2")
	[[ $ERR == *"$2"* ]] || p+=("stderr does not say '$2'")
	[[ $ERR != *$'\n'* ]] || p+=("stderr is not one line")
	report "refused at start: ${args[*]}" "${p[@]+"${p[@]}"}"
}
refused --protocol mysql -- "--protocol 'mysql': give tcp or postgresql"
refused --pg-role "$BILLING=billing" -- "--pg-role is for --protocol postgresql"
refused --protocol postgresql --mode insecure-permissive -- \
	"--protocol postgresql does not take --mode insecure-permissive"
refused --protocol postgresql --pg-role billing -- "--pg-role 'billing': write PATTERN=ROLE"
refused --protocol postgresql --pg-role 'a.*.example.org=x' -- "is not an identity pattern"

p=()
kill -0 "$SRV_PID" 2>/dev/null || p+=("the mtls server died")
LAST_CMD="" RC="" OUT="" ERR=""
report "the mtls server is alive at the end" "${p[@]+"${p[@]}"}"
finish
