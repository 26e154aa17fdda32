#!/usr/bin/env bash
# docs/rollout.md followed step by step in front of a real PostgreSQL: the server starts
# permissive in front of a database whose clients are plaintext (psql, pgbench), the clients
# move to mtls connectors, and the server goes to audit and then strict by SIGHUP, each step
# taken only when the metric the runbook names has not moved over a window of client traffic
# (and the test checks that the same metric does move while a client is not ready: a legacy
# plaintext client before step 1, a client with a certificate the rules refuse before step
# 2). Then the rollback the runbook describes. The metrics are read with the runbook's own
# metric() function, taken from docs/rollout.md.
set -euo pipefail
BG_LIMIT=${BG_LIMIT:-150}
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
for p in "$PG_BIN/initdb" "$PG_BIN/postgres"; do
	[ -x "$p" ] || {
		echo "SKIP: $p not found (install postgresql-15)"
		exit 77
	}
done
for p in psql pgbench curl; do
	command -v "$p" >/dev/null || {
		echo "SKIP: $p not found in PATH"
		exit 77
	}
done
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
	echo "SKIP: running as root and there is no postgres user"
	exit 77
fi
# shellcheck source=tests/integration/pg_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/pg_lib.sh"
export PGCONNECT_TIMEOUT=5 PGAPPNAME=mtls-rollout

W=$TMP/w
mkdir -m 700 -- "$W"
CA=$TMP/ca
ALLOW='spiffe://example.org/ns/prod/sa/*'
APP=spiffe://example.org/ns/prod/sa/app
OTHER=spiffe://example.org/ns/dev/sa/reports # a client issued the wrong name
FIXED=spiffe://example.org/ns/prod/sa/reports
run "$MTLS" ca init --dir "$CA"
[ "$RC" = 0 ] || setup_die "mtls ca init failed" "$ERR"
issue() {
	local name=$1
	shift
	run "$MTLS" ca issue --dir "$CA" "$@" --out "$W/$name"
	[ "$RC" = 0 ] || setup_die "mtls ca issue $* failed" "$ERR"
}
issue server --profile server --dns db.test --ip 127.0.0.1
issue app --profile client --uri "$APP"
issue reports --profile client --uri "$OTHER"

pg_start "$TMP/postgres.log"
PG_TARGET=unix:$PGSOCK/.s.PGSQL.$PGP

# the runbook's metric(), word for word
def=$(grep -m1 '^    metric() ' "$MTLS_SOURCE_DIR/docs/rollout.md" || true)
[ -n "$def" ] || setup_die "no metric() in docs/rollout.md"
eval "$def"
# the runbook's config file, with this test's paths (listen comes from the command line)
config() {
	cat >"$W/server.conf" <<EOF
target $PG_TARGET
cert $W/server-chain.pem
key $W/server.key
ca $CA/root.pem
allow-uri $ALLOW
mode $1
EOF
}
config insecure-permissive
start_tunnel_server "$W/srv.log" --config "$W/server.conf" --metrics 127.0.0.1:0 \
	--watch-interval 0 --drain-timeout 1s
M=127.0.0.1:$SRV_METRICS
DB_PORT=$SRV_PORT

conninfo() { printf 'host=127.0.0.1 port=%s user=postgres dbname=postgres sslmode=disable gssencmode=disable' "$1"; }
q() { # PORT SQL : one query; prints its result ("" if refused)
	timeout 20 psql -X -q -At -d "$(conninfo "$1")" -c "$2" 2>/dev/null || true
}
bench() { # PORT : a short pgbench run; 0 if every transaction went through
	timeout 60 pgbench -n -c 2 -t 20 "$(conninfo "$1")" >"$W/bench.out" 2>&1 &&
		grep -q 'number of failed transactions: 0\|number of transactions actually processed: 40' "$W/bench.out"
}
connector() { # LOG NAME : a connector with NAME's certificate; sets CON_PORT, CON_PID
	start_tunnel_connector "$1" --server "127.0.0.1:$DB_PORT" --server-name db.test \
		--cert "$W/$2-chain.pem" --key "$W/$2.key" --ca "$CA/root.pem" --drain-timeout 1s
}
reloads() { echo $(($(log_count "$W/srv.log" reload) + $(log_count "$W/srv.log" reload_failed))); }
hup() { # the runbook's switch: the mode line, then SIGHUP
	local before
	before=$(reloads)
	config "$1"
	kill -HUP "$SRV_REAL"
	for _ in $(seq 1 200); do
		[ "$(reloads)" -gt "$before" ] && return 0
		sleep 0.05
	done
	setup_die "no reload after SIGHUP"
}
val() { local v; v=$(metric "$1"); echo "${v:-0}"; }
sum_prefix() { curl -s "http://$M/metrics" | awk -v p="$1" 'index($0, p) == 1 { s += $NF } END { print s + 0 }'; }
no_cert_kinds() { echo $(($(val 'mtls_connections_by_kind_total{kind="plaintext"}') + $(val 'mtls_connections_by_kind_total{kind="tls_no_cert"}'))); }
would() { sum_prefix 'mtls_would_refuse_total{'; }
failed() { sum_prefix 'mtls_handshakes_total{result="failed"'; }

# --- step 0: the server in front, permissive; the clients as they were (plaintext) --------
p=()
[ "$(val 'mtls_mode{mode="permissive"}')" = 1 ] || p+=("mtls_mode permissive is not 1")
[ "$(q "$DB_PORT" 'select 40+2')" = 42 ] || p+=("a plaintext psql does not get through")
timeout 60 pgbench -i -q "$(conninfo "$DB_PORT")" >"$W/init.out" 2>&1 || p+=("plaintext pgbench -i failed: $(tail -n 3 "$W/init.out")")
bench "$DB_PORT" || p+=("plaintext pgbench failed: $(tail -n 5 "$W/bench.out")")
[ "$(val 'mtls_connections_by_kind_total{kind="plaintext"}')" -ge 3 ] || p+=("plaintext connections not counted")
verdict "step 0: permissive in front of PostgreSQL, the plaintext clients work unchanged" "${p[@]+"${p[@]}"}"

# the clients move to connectors: app, and reports (issued a name the rules do not allow)
connector "$W/con-app.log" app
APP_PORT=$CON_PORT
connector "$W/con-reports.log" reports
REP_PORT=$CON_PORT
REP_PID=$CON_PID

# --- step 1: permissive -> audit when plaintext and tls_no_cert stay flat over a window ----
p=()
before=$(no_cert_kinds)
bench "$APP_PORT" || p+=("pgbench through the app's connector failed")
[ "$(q "$REP_PORT" 'select 1')" = 1 ] || p+=("reports does not get through in permissive mode")
[ "$(q "$DB_PORT" 'select 2')" = 2 ] || p+=("the legacy plaintext client does not get through") # not moved yet
[ "$(no_cert_kinds)" -gt "$before" ] || p+=("the runbook's step-1 metric did not move for a plaintext client")
verdict "step 1 check: a client not moved yet shows in the plaintext count (not ready)" "${p[@]+"${p[@]}"}"

p=()
before=$(no_cert_kinds)
bench "$APP_PORT" || p+=("pgbench through the app's connector failed")
[ "$(q "$REP_PORT" 'select 1')" = 1 ] || p+=("reports does not get through")
[ "$(no_cert_kinds)" = "$before" ] || p+=("plaintext/tls_no_cert moved with every client on a connector")
hup insecure-audit
# (the mode is applied and said, and /status updated, after the reload line hup waits for)
wait_for_line "$W/srv.log" '"event":"mode_changed".*"from":"permissive".*"to":"audit"' "$READY_LIMIT" ||
	p+=("no mode_changed line")
[ "$(val 'mtls_mode{mode="audit"}')" = 1 ] || p+=("mtls_mode audit is not 1")
st=""
for _ in $(seq 1 $((READY_LIMIT * 20))); do
	st=$(curl -s "http://$M/status" || true)
	grep -q '"mode": "audit"' <<<"$st" && grep -q '"result": "ok"' <<<"$st" && break
	sleep 0.05
done
grep -q '"mode": "audit"' <<<"$st" || p+=("/status does not say audit")
grep -q '"result": "ok"' <<<"$st" || p+=("/status does not show the reload ok")
[ -z "$(q "$DB_PORT" 'select 3')" ] || p+=("a plaintext client still gets through in audit mode")
verdict "step 1: the window is flat, SIGHUP to audit took (mode_changed, mtls_mode, /status)" "${p[@]+"${p[@]}"}"

# --- step 2: audit -> strict when would_refuse stays flat over a window --------------------
p=()
before=$(would)
bench "$APP_PORT" || p+=("pgbench through the app's connector failed in audit mode")
[ "$(q "$REP_PORT" 'select 1')" = 1 ] || p+=("reports is refused in audit mode")
[ "$(would)" -gt "$before" ] || p+=("the runbook's step-2 metric did not move for the wrong name")
curl -s "http://$M/metrics" | grep '^mtls_identity_would_refuse_total' | grep -qF "identity=\"$OTHER\",reason=\"identity_not_allowed\"" ||
	p+=("the runbook's who-and-why does not name $OTHER")
# (queued before the client got through, but the log thread may write it after)
for _ in $(seq 1 $((READY_LIMIT * 20))); do
	[ "$(log_count "$W/srv.log" would_refuse "$OTHER")" -ge 1 ] && break
	sleep 0.05
done
grep -F '"event":"would_refuse"' "$W/srv.log" | grep -qF "$OTHER" || p+=("no would_refuse log line for $OTHER")
verdict "step 2 check: a client with a refused certificate shows in would_refuse, by identity (not ready)" "${p[@]+"${p[@]}"}"

# the fix the log line names: a certificate with the right name
issue reports2 --profile client --uri "$FIXED"
stop_bg "$REP_PID"
connector "$W/con-reports2.log" reports2
REP_PORT=$CON_PORT
p=()
before=$(would)
bench "$APP_PORT" || p+=("pgbench through the app's connector failed")
[ "$(q "$REP_PORT" 'select 1')" = 1 ] || p+=("the fixed reports client does not get through")
[ "$(would)" = "$before" ] || p+=("would_refuse moved with every client fixed")
hup strict
for _ in $(seq 1 $((READY_LIMIT * 20))); do # (applied after the reload line)
	[ "$(val 'mtls_mode{mode="strict"}')" = 1 ] && break
	sleep 0.05
done
[ "$(val 'mtls_mode{mode="strict"}')" = 1 ] || p+=("mtls_mode strict is not 1")
verdict "step 2: the window is flat, SIGHUP to strict took" "${p[@]+"${p[@]}"}"

# --- step 3: strict, failures flat ------------------------------------------------------------
p=()
before=$(failed)
bench "$APP_PORT" || p+=("pgbench through the app's connector failed in strict mode")
[ "$(q "$REP_PORT" 'select 1')" = 1 ] || p+=("the fixed reports client is refused in strict mode")
[ "$(failed)" = "$before" ] || p+=("handshake failures moved: $(curl -s "http://$M/metrics" | grep failed)")
[ -z "$(q "$DB_PORT" 'select 4')" ] || p+=("a plaintext client gets through in strict mode")
[ "$(failed)" = $((before + 1)) ] || p+=("the plaintext probe is not the one failure counted")
verdict "step 3: strict, every client through, failures flat (the one plaintext probe refused)" "${p[@]+"${p[@]}"}"

# --- rollback: strict -> audit by the same move -----------------------------------------------
p=()
hup insecure-audit
[ "$(val 'mtls_mode{mode="audit"}')" = 1 ] || p+=("mtls_mode audit is not 1 after the rollback")
bench "$APP_PORT" || p+=("pgbench failed after the rollback")
verdict "rollback: the previous mode back by SIGHUP, clients unaffected" "${p[@]+"${p[@]}"}"
finish
