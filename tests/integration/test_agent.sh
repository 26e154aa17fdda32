#!/usr/bin/env bash
# `mtls agent` against a real CA service (`mtls ca init`, `mtls ca serve`, `mtls enroll`):
#   - option errors (exit 2, one line) and a missing directory (exit 1) before any network;
#   - --once: not due (exit 0, nothing run), --force (renewed, hook run), a failing hook
#     (exit 1), the CA unreachable (exit 1, files kept);
#   - the daemon renews several times (SIGHUP renews now): each time the written files (the
#     directory's and the --cert-out/--key-out copies) verify against ca.pem and belong
#     together, the key is 0600, the --exec hook runs with MTLS_* in its environment and
#     --signal reaches a process that counts its SIGHUPs, and the metrics file counts;
#   - an application embedding libmtls (examples/echo-server, reloading on SIGHUP) serves the
#     new certificate after each renewal, without a restart;
#   - a real PostgreSQL gets its server certificate from the agent (server.crt/server.key in
#     its data directory, owned by postgres, --pid-file postmaster.pid): psql with
#     sslmode=verify-full connects, and after a renewal a new connection sees the new serial;
#   - the CA down: the agent keeps the old files, logs the failure, retries by itself and
#     succeeds once the CA is back;
#   - a hook that fails or hangs is logged and bounded, and the agent goes on; SIGTERM stops
#     it promptly during a hanging hook and during a transfer to a CA that never answers.
set -euo pipefail
BG_LIMIT=${BG_LIMIT:-280}
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/pg_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/pg_lib.sh"
command -v python3 >/dev/null || setup_die "python3 not found (scripts/install-deps.sh)"

W=$TMP/w
mkdir -m 700 -- "$W"
chmod 711 -- "$W" # the postgres user reads nothing here, but walks through to $PGDATA's copies
D=$W/ca

# m ARGS... : `mtls ARGS...` (RC, OUT, ERR).
m() {
	LAST_CMD="mtls $*"
	run "$MTLS" "$@"
}
one_line_err() { [ -n "$ERR" ] && [ "$(printf '%s\n' "$ERR" | wc -l)" -eq 1 ]; }

# count FILE EVENT : how many log lines of FILE are EVENT.
count() { grep -c -F "\"event\":\"$2\"" "$1" 2>/dev/null || true; }
# wait_count FILE EVENT N [PID] : wait (bounded) until FILE has N lines of EVENT.
wait_count() {
	local i
	for ((i = 0; i < 60 * 20; i++)); do
		[ "$(count "$1" "$2")" -ge "$3" ] && return 0
		if [ -n "${4:-}" ] && ! kill -0 "$4" 2>/dev/null; then
			[ "$(count "$1" "$2")" -ge "$3" ]
			return
		fi
		sleep 0.05
	done
	return 1
}
# wait_prom LINE : wait (bounded) until a line of $W/agent.prom is LINE (a basic regular
# expression, the whole line): the agent writes its metrics file after it logs hook_done.
wait_prom() {
	local i
	for ((i = 0; i < READY_LIMIT * 20; i++)); do
		grep -qx -- "$1" "$W/agent.prom" 2>/dev/null && return 0
		sleep 0.05
	done
	return 1
}
# serial FILE : the serial of the first certificate of FILE (upper-case hex).
serial() { openssl x509 -in "$1" -noout -serial | sed 's/^serial=//'; }
# files_problems CERT KEY CA : what is wrong with a chain and key written by the agent.
files_problems() {
	local cert=$1 key=$2 ca=$3
	openssl verify -CAfile "$ca" -untrusted "$cert" "$cert" >/dev/null 2>&1 ||
		echo "$cert does not verify against $ca"
	[ "$(openssl x509 -in "$cert" -noout -pubkey 2>/dev/null)" = \
		"$(openssl pkey -in "$key" -pubout 2>/dev/null)" ] || echo "$key does not match $cert"
	[ "$(stat -c %a -- "$key")" = 600 ] || echo "$key has mode $(stat -c %a -- "$key"), not 600"
}
# free_port : a TCP port nobody listens on now (bound, then freed).
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_ca PORT [ARGS...] : mtls ca serve with its API on PORT (0: a free one; the same port
# again after a stop is retried while it is not free yet). Sets SERVE_PID, AP.
SERVE_N=0
start_ca() {
	local port=$1 tries=20 log
	shift
	while :; do
		SERVE_N=$((SERVE_N + 1))
		log=$W/serve-$SERVE_N.log
		start_bg "$log" "$MTLS" ca serve --dir "$D" --listen "127.0.0.1:$port" \
			--http-listen none "$@"
		SERVE_PID=$BG_PID
		wait_for_line "$log" '"event":"listening"' "$READY_LIMIT" "$SERVE_PID" && break
		stop_bg "$SERVE_PID"
		tries=$((tries - 1))
		if [ "$tries" -eq 0 ] || [ "$port" = 0 ]; then
			setup_die "mtls ca serve did not start on port $port" "$(cat -- "$log")"
		fi
		sleep 0.5
	done
	AP=$(sed -n 's/.*"event":"listening".*"address":"[^"]*:\([0-9][0-9]*\)".*/\1/p;T;q' "$log")
}
# enroll NAME PROFILE NAMES... : an enrollment directory $W/NAME.
enroll() {
	local name=$1 profile=$2 tok
	shift 2
	tok=$("$MTLS" ca token --dir "$D" --profile "$profile" "$@" 2>/dev/null) ||
		setup_die "mtls ca token --profile $profile $*"
	LAST_CMD="mtls enroll --dir $W/$name"
	MTLS_TOKEN=$tok run "$MTLS" enroll --dir "$W/$name"
	[ "$RC" = 0 ] || setup_die "mtls enroll $name failed" "$ERR"
}
# start_agent LOG ARGS... : mtls agent ARGS in the background, once it logged agent_started.
# Sets AGENT_BG (to stop it) and AGENT_PID (the agent itself, for signals).
start_agent() {
	local log=$1
	shift
	start_bg "$log" "$MTLS" agent --log-format json "$@"
	AGENT_BG=$BG_PID
	wait_for_line "$log" '"event":"agent_started"' "$READY_LIMIT" "$AGENT_BG" ||
		setup_die "mtls agent did not start ($*)" "$(cat -- "$log")"
	AGENT_PID=$(sed -n 's/.*"event":"agent_started".*"pid":\([0-9][0-9]*\).*/\1/p;T;q' "$log")
	[ -n "$AGENT_PID" ] || setup_die "no pid in agent_started" "$(cat -- "$log")"
}

# a second CA whose service issues 60 s certificates (due about 35 s after their issue): its
# agent renews by the schedule alone while the rest runs, and is checked at the end
"$MTLS" ca init --dir "$W/ca60" >/dev/null 2>&1 || setup_die "mtls ca init failed"
D=$W/ca60
start_ca 0 --leaf-lifetime 60s
enroll short peer --dns localhost
start_agent "$W/agent-s.log" --dir "$W/short" --exec "echo \"\$MTLS_SERIAL\" >>'$W/short-marks'"
SHORT_BG=$AGENT_BG

D=$W/ca
"$MTLS" ca init --dir "$D" >/dev/null 2>&1 || setup_die "mtls ca init failed"
start_ca 0
# a renewing certificate authenticates to the CA as the TLS client certificate (any profile)
enroll svc peer --dns localhost --ip 127.0.0.1
enroll client client --uri spiffe://example.org/ns/test/sa/client

echo "# option errors and missing files"
# usage_case NAME ARGS... : exit 2 with one line on stderr, nothing on stdout.
usage_case() {
	local name=$1
	shift
	m agent "$@"
	p=()
	[ "$RC" = 2 ] || p+=("exit $RC, not 2")
	one_line_err || p+=("stderr is not one line")
	[ -z "$OUT" ] || p+=("something on stdout")
	report "$name" "${p[@]+"${p[@]}"}"
}
usage_case "no arguments"
usage_case "--dir and --cert together" --dir "$W/svc" --cert "$W/svc/cert.pem"
usage_case "--cert without --ca-url" --cert "$W/svc/cert.pem" --key "$W/svc/key.pem" --ca "$W/svc/ca.pem"
usage_case "an unknown option" --dir "$W/svc" --frobnicate
usage_case "--signal 1" --dir "$W/svc" --signal 1
usage_case "--signal and --pid-file" --dir "$W/svc" --signal 1234 --pid-file "$W/pid"
usage_case "--signal-name nonsense" --dir "$W/svc" --signal 1234 --signal-name NOPE
usage_case "--signal-name without a target" --dir "$W/svc" --signal-name HUP
usage_case "--exec-timeout without a unit" --dir "$W/svc" --exec true --exec-timeout 5
usage_case "--owner without a copy" --dir "$W/svc" --owner root
usage_case "--owner of nobody known" --dir "$W/svc" --key-out "$W/k" --owner no-such-user-x
usage_case "--key-out onto the renewed key" --dir "$W/svc" --key-out "$W/svc/key.pem"
usage_case "--ca-url not https" --dir "$W/svc" --ca-url http://127.0.0.1:1
usage_case "a positional argument" --dir "$W/svc" extra

m agent --dir "$W/nowhere" --once
p=()
[ "$RC" = 1 ] || p+=("exit $RC, not 1")
[[ $ERR == *"$W/nowhere"*"mtls enroll"* ]] || p+=("the message does not name the directory and mtls enroll")
one_line_err || p+=("stderr is not one line")
report "a missing --dir: exit 1, says to enroll first" "${p[@]+"${p[@]}"}"

mkdir -m 777 -- "$W/open"
m agent --dir "$W/svc" --once --key-out "$W/open/server.key"
p=()
[ "$RC" = 1 ] || p+=("exit $RC, not 1")
[[ $ERR == *"writable by group or others"* ]] || p+=("no 'writable by group or others'")
[ ! -e "$W/open/server.key" ] || p+=("the key was written there")
report "--key-out in a directory others can write: refused" "${p[@]+"${p[@]}"}"

echo "# --once"
s0=$(serial "$W/svc/cert.pem")
m agent --dir "$W/svc" --once --exec "touch '$W/once-hook'"
p=()
[ "$RC" = 0 ] || p+=("exit $RC")
[[ $OUT == "not due until "* ]] || p+=("stdout does not say 'not due until'")
[ "$(serial "$W/svc/cert.pem")" = "$s0" ] || p+=("the certificate changed")
[ ! -e "$W/once-hook" ] || p+=("the hook ran though nothing changed")
report "--once before it is due: exit 0, nothing renewed, no hook" "${p[@]+"${p[@]}"}"

m agent --dir "$W/svc" --once --force --exec "env > '$W/once-env'"
s1=$(serial "$W/svc/cert.pem")
p=()
[ "$RC" = 0 ] || p+=("exit $RC")
[ "$s1" != "$s0" ] || p+=("the serial did not change")
[[ $OUT == "renewed: serial $s1 (was $s0)"* ]] || p+=("stdout does not say 'renewed: serial $s1 (was $s0)'")
grep -qx "MTLS_SERIAL=$s1" "$W/once-env" 2>/dev/null || p+=("the hook did not see MTLS_SERIAL=$s1")
grep -qx "MTLS_OLD_SERIAL=$s0" "$W/once-env" 2>/dev/null || p+=("the hook did not see MTLS_OLD_SERIAL=$s0")
grep -qx "MTLS_CERT=$W/svc/cert.pem" "$W/once-env" 2>/dev/null || p+=("the hook did not see MTLS_CERT")
grep -qx "MTLS_EVENT=renewed" "$W/once-env" 2>/dev/null || p+=("the hook did not see MTLS_EVENT=renewed")
mapfile -t fp < <(files_problems "$W/svc/cert.pem" "$W/svc/key.pem" "$W/svc/ca.pem")
p+=("${fp[@]+"${fp[@]}"}")
report "--once --force: renewed, files good, hook run with MTLS_*" "${p[@]+"${p[@]}"}"

m agent --dir "$W/svc" --once --force --exec "echo hook says no; exit 7"
s2=$(serial "$W/svc/cert.pem")
p=()
[ "$RC" = 1 ] || p+=("exit $RC, not 1")
[ "$s2" != "$s1" ] || p+=("not renewed")
[[ $ERR == *'"event":"hook_failed"'*'"exit_status":7'*'hook says no'* ]] || p+=("no hook_failed line with the status and output")
[[ $ERR == *"the hook failed"* ]] || p+=("no message that the hook failed")
report "--once with a failing hook: renewed, but exit 1" "${p[@]+"${p[@]}"}"

m agent --cert "$W/svc/cert.pem" --key "$W/svc/key.pem" --ca "$W/svc/ca.pem" \
	--ca-url "https://127.0.0.1:$AP" --once --force
p=()
[ "$RC" = 0 ] || p+=("exit $RC")
[ "$(serial "$W/svc/cert.pem")" != "$s2" ] || p+=("not renewed")
mapfile -t fp < <(files_problems "$W/svc/cert.pem" "$W/svc/key.pem" "$W/svc/ca.pem")
p+=("${fp[@]+"${fp[@]}"}")
report "--cert/--key/--ca/--ca-url instead of --dir: renewed in place" "${p[@]+"${p[@]}"}"
s2=$(serial "$W/svc/cert.pem")

NOBODY=$(free_port)
m agent --dir "$W/svc" --once --force --ca-url "https://127.0.0.1:$NOBODY"
p=()
[ "$RC" = 1 ] || p+=("exit $RC, not 1")
[ "$(serial "$W/svc/cert.pem")" = "$s2" ] || p+=("the certificate changed")
[[ $ERR == *'"event":"renew_failed"'* ]] || p+=("no renew_failed line")
mapfile -t fp < <(files_problems "$W/svc/cert.pem" "$W/svc/key.pem" "$W/svc/ca.pem")
p+=("${fp[@]+"${fp[@]}"}")
report "--once --force with the CA unreachable: exit 1, files kept" "${p[@]+"${p[@]}"}"

cp -a -- "$W/svc" "$W/mis"
cp -- "$W/client/key.pem" "$W/mis/key.pem"
mkdir -m 700 -- "$W/mis-out"
m agent --dir "$W/mis" --once --cert-out "$W/mis-out/c.pem" --key-out "$W/mis-out/k.pem"
p=()
[ "$RC" = 1 ] || p+=("exit $RC, not 1")
[[ $ERR == *"do not belong together"* ]] || p+=("no 'do not belong together'")
[ -z "$(ls -A -- "$W/mis-out")" ] || p+=("copies written: $(ls -A -- "$W/mis-out")")
report "a key that does not match the certificate is never copied for the service" "${p[@]+"${p[@]}"}"

enroll srvonly server --dns localhost
old=$(openssl x509 -in "$W/srvonly/cert.pem" -noout -serial)
m agent --dir "$W/srvonly" --once --force
p=()
[ "$RC" = 0 ] || p+=("exit $RC: $ERR")
[ "$(openssl x509 -in "$W/srvonly/cert.pem" -noout -serial)" != "$old" ] || p+=("cert.pem still has $old")
report "a server-profile certificate (serverAuth alone) renews itself: the CA takes it as the credential" "${p[@]+"${p[@]}"}"

echo "# the daemon: renewals, hooks, copies, an embedding application"
# a process that counts the SIGHUPs it gets
cat >"$W/counter.sh" <<'EOF'
n=0
echo $$ >"$1.pid"
echo 0 >"$1"
trap 'n=$((n + 1)); echo $n >"$1"' HUP
while :; do sleep 0.2 & wait $! || true; done
EOF
start_bg "$W/counter.log" bash "$W/counter.sh" "$W/hups"
wait_for_line "$W/hups" '^0$' "$READY_LIMIT" || setup_die "the counter did not start"
COUNTER=$(cat -- "$W/hups.pid")

# echo-server (libmtls, reloads on SIGHUP) with the agent's copies
mkdir -m 700 -- "$W/app"
m agent --dir "$W/svc" --once --cert-out "$W/app/server.crt" --key-out "$W/app/server.key" \
	--ca-out "$W/app/ca.pem"
[ "$RC" = 0 ] || setup_die "the first copies for echo-server" "$ERR"
# shellcheck disable=SC2016 # expanded by that sh: its own pid, then echo-server in its place
start_bg "$W/echo.log" sh -c 'echo $$ >"$0"; exec "$@"' "$W/echo.pid" "$ECHO_SERVER" --port 0 \
	--cert "$W/app/server.crt" --key "$W/app/server.key" --ca "$W/app/ca.pem" \
	--allow-uri 'spiffe://example.org/ns/test/sa/*'
wait_for_line "$W/echo.log" '^listening on 127\.0\.0\.1:[0-9]+$' "$READY_LIMIT" ||
	setup_die "echo-server did not start" "$(cat -- "$W/echo.log")"
ES_PORT=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$W/echo.log")
# served_serial : the serial echo-server presents to a new connection now.
served_serial() {
	timeout 10 openssl s_client -connect "127.0.0.1:$ES_PORT" -CAfile "$W/svc/ca.pem" \
		-cert "$W/client/cert.pem" -cert_chain "$W/client/cert.pem" -key "$W/client/key.pem" \
		-verify_return_error \
		</dev/null 2>/dev/null | openssl x509 -noout -serial 2>/dev/null | sed 's/^serial=//'
}

# the hook: a line per run with what it was given, then SIGHUP to echo-server; --signal
# goes to the counter
start_agent "$W/agent.log" --dir "$W/svc" \
	--exec "printf '%s %s %s %s\n' \"\$MTLS_SERIAL\" \"\$MTLS_CERT\" \"\$MTLS_KEY\" \"\$MTLS_EVENT\" >>'$W/marks' && kill -HUP \$(cat '$W/echo.pid')" \
	--signal "$COUNTER" \
	--cert-out "$W/app/server.crt" --key-out "$W/app/server.key" --ca-out "$W/app/ca.pem" \
	--metrics-file "$W/agent.prom" --roots-refresh 2s
AGENT1=$AGENT_PID
AGENT1_BG=$AGENT_BG

for i in 1 2 3; do
	before=$(serial "$W/svc/cert.pem")
	kill -HUP "$AGENT1"
	p=()
	wait_count "$W/agent.log" renewed "$i" "$AGENT1_BG" || p+=("no renewal $i logged")
	wait_count "$W/agent.log" hook_done "$i" "$AGENT1_BG" || p+=("no hook_done $i logged")
	now=$(serial "$W/svc/cert.pem")
	[ "$now" != "$before" ] || p+=("the serial is still $before")
	mapfile -t fp < <(files_problems "$W/svc/cert.pem" "$W/svc/key.pem" "$W/svc/ca.pem")
	p+=("${fp[@]+"${fp[@]}"}")
	mapfile -t fp < <(files_problems "$W/app/server.crt" "$W/app/server.key" "$W/app/ca.pem")
	p+=("${fp[@]+"${fp[@]}"}")
	cmp -s "$W/svc/cert.pem" "$W/app/server.crt" || p+=("--cert-out differs from cert.pem")
	cmp -s "$W/svc/key.pem" "$W/app/server.key" || p+=("--key-out differs from key.pem")
	[ "$(sed -n "${i}p" "$W/marks" 2>/dev/null)" = "$now $W/app/server.crt $W/app/server.key renewed,files" ] ||
		p+=("hook line $i is '$(sed -n "${i}p" "$W/marks" 2>/dev/null)'")
	wait_for_line "$W/hups" "^$i\$" 10 || p+=("the counter has $(cat "$W/hups") SIGHUPs, not $i")
	# the embedding application: its own agent signals it; the next connection sees the
	# new certificate
	n=0
	while [ "$(grep -c '^reloaded$' "$W/echo.log" || true)" -lt "$i" ] && [ $n -lt 200 ]; do
		sleep 0.05
		n=$((n + 1))
	done
	n=0
	while [ "$(served_serial)" != "$now" ] && [ $n -lt 100 ]; do
		sleep 0.1
		n=$((n + 1))
	done
	[ "$(served_serial)" = "$now" ] || p+=("echo-server serves $(served_serial), not $now")
	verdict "renewal $i: new files verify and match (copies too), hook and SIGHUP reach the service, echo-server serves the new certificate" \
		"${p[@]+"${p[@]}"}" -- "$(tail -n 5 "$W/agent.log")" "$(tail -n 3 "$W/echo.log")"
done
p=()
[ "$(grep -c '^reloaded$' "$W/echo.log")" -ge 3 ] || p+=("echo-server reloaded $(grep -c '^reloaded$' "$W/echo.log") times")
! grep -q '^reload failed' "$W/echo.log" || p+=("echo-server: $(grep '^reload failed' "$W/echo.log" | head -n 1)")
wait_prom 'mtls_agent_renewals_total{cert="'"$W"'/svc/cert.pem"} 3' ||
	p+=("metrics: $(grep '^mtls_agent_renewals_total' "$W/agent.prom")")
grep -qx 'mtls_agent_hook_failures_total{cert="'"$W"'/svc/cert.pem"} 0' "$W/agent.prom" ||
	p+=("metrics: $(grep '^mtls_agent_hook_failures_total' "$W/agent.prom")")
verdict "the embedding application reloaded each time; the metrics count 3 renewals, 0 hook failures" \
	"${p[@]+"${p[@]}"}" -- "$(cat "$W/echo.log")"

echo "# the CA down"
stop_bg "$SERVE_PID"
held=$(serial "$W/svc/cert.pem")
hooks=$(count "$W/agent.log" hook_done)
kill -HUP "$AGENT1"
p=()
wait_count "$W/agent.log" renew_failed 1 "$AGENT1_BG" || p+=("no renew_failed logged")
[ "$(serial "$W/svc/cert.pem")" = "$held" ] || p+=("cert.pem changed")
mapfile -t fp < <(files_problems "$W/app/server.crt" "$W/app/server.key" "$W/app/ca.pem")
p+=("${fp[@]+"${fp[@]}"}")
[ "$(count "$W/agent.log" hook_done)" = "$hooks" ] || p+=("a hook ran though nothing changed")
# (no "grep | grep -q" under pipefail: the first grep may die of SIGPIPE)
line=$(grep -F '"event":"renew_failed"' "$W/agent.log" | head -n 1 || true)
[[ $line == *'"retry_at":"'* ]] || p+=("no retry_at in renew_failed: $line")
kill -0 "$AGENT1" 2>/dev/null || p+=("the agent died")
verdict "CA down: renew_failed logged with its retry time, the old files kept, no hook" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 3 "$W/agent.log")"
start_ca "$AP"
p=()
wait_count "$W/agent.log" renewed 4 "$AGENT1_BG" || p+=("no renewal after the CA came back")
[ "$(serial "$W/svc/cert.pem")" != "$held" ] || p+=("cert.pem not renewed")
wait_count "$W/agent.log" hook_done $((hooks + 1)) "$AGENT1_BG" || p+=("no hook after the renewal")
mapfile -t fp < <(files_problems "$W/app/server.crt" "$W/app/server.key" "$W/app/ca.pem")
p+=("${fp[@]+"${fp[@]}"}")
wait_prom 'mtls_agent_renewal_failures_total{cert="'"$W"'/svc/cert.pem"} [1-9][0-9]*' ||
	p+=("metrics: $(grep '^mtls_agent_renewal_failures_total' "$W/agent.prom")")
verdict "the CA back: the agent's own retry renews, the hook runs" "${p[@]+"${p[@]}"}" -- \
	"$(grep -F -e renew_failed -e renewed "$W/agent.log" | tail -n 3)"

echo "# the certificate renewed by someone else"
hooks=$(count "$W/agent.log" hook_done)
m renew --dir "$W/svc" --force
[ "$RC" = 0 ] || setup_die "mtls renew --force" "$ERR"
other=$(serial "$W/svc/cert.pem")
p=()
# the agent looks at the files at least every 30 s
wait_count "$W/agent.log" cert_changed 1 "$AGENT1_BG" || p+=("no cert_changed")
wait_count "$W/agent.log" hook_done $((hooks + 1)) "$AGENT1_BG" || p+=("no hook after the change")
cmp -s "$W/svc/cert.pem" "$W/app/server.crt" || p+=("--cert-out not updated")
cmp -s "$W/svc/key.pem" "$W/app/server.key" || p+=("--key-out not updated")
[ "$(tail -n 1 "$W/marks")" = "$other $W/app/server.crt $W/app/server.key changed,files" ] ||
	p+=("the hook's line is '$(tail -n 1 "$W/marks")'")
verdict "mtls renew by hand: the agent takes the new certificate in, copies it and runs the hook" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 4 "$W/agent.log")"

echo "# a real PostgreSQL with its server certificate from the agent"
PGP=$(free_port)
enroll db peer --dns localhost
AS_OWNER=()
[ "$(id -u)" = 0 ] && AS_OWNER=(--owner postgres)
PGCOPY=(--cert-out "$PGDATA/server.crt" --key-out "$PGDATA/server.key" "${AS_OWNER[@]+"${AS_OWNER[@]}"}")
m agent --dir "$W/db" --once "${PGCOPY[@]}"
[ "$RC" = 0 ] || setup_die "the first copies into PGDATA" "$ERR"
pg_start "$W/postgres.log" -c listen_addresses=127.0.0.1 -c ssl=on \
	-c ssl_cert_file=server.crt -c ssl_key_file=server.key
start_agent "$W/agent-pg.log" --dir "$W/db" "${PGCOPY[@]}" --pid-file "$PGDATA/postmaster.pid"
AGENT_PG=$AGENT_PID
AGENT_PG_BG=$AGENT_BG
# pg_serial : the serial PostgreSQL presents to a new connection.
pg_serial() {
	timeout 10 openssl s_client -starttls postgres -connect "127.0.0.1:$PGP" \
		-CAfile "$W/db/ca.pem" -verify_return_error -verify_hostname localhost </dev/null 2>/dev/null |
		openssl x509 -noout -serial 2>/dev/null | sed 's/^serial=//'
}
# pg_psql : psql over TLS, the server verified (verify-full); prints "ssl|version".
pg_psql() {
	LAST_CMD="psql sslmode=verify-full"
	run psql -X -q -At -v ON_ERROR_STOP=1 -c "select ssl, version from pg_stat_ssl where pid = pg_backend_pid()" \
		-d "host=localhost hostaddr=127.0.0.1 port=$PGP user=postgres dbname=postgres sslmode=verify-full sslrootcert=$W/db/ca.pem connect_timeout=5"
}
pg_psql
p=()
[ "$RC" = 0 ] || p+=("psql exit $RC")
[[ $OUT == t\|TLSv1.* ]] || p+=("pg_stat_ssl says '$OUT'")
first=$(serial "$W/db/cert.pem")
[ "$(pg_serial)" = "$first" ] || p+=("PostgreSQL presents $(pg_serial), not $first")
report "psql with sslmode=verify-full reaches PostgreSQL, whose certificate is the agent's" "${p[@]+"${p[@]}"}"
for i in 1 2; do
	reloads=$(grep -c 'received SIGHUP, reloading configuration files' "$W/postgres.log" || true)
	kill -HUP "$AGENT_PG"
	p=()
	wait_count "$W/agent-pg.log" hook_done "$i" "$AGENT_PG_BG" || p+=("no hook_done $i")
	now=$(serial "$W/db/cert.pem")
	[ "$now" != "$first" ] || p+=("not renewed")
	[ "$(stat -c %U -- "$PGDATA/server.key")" = "$(stat -c %U -- "$PGDATA")" ] ||
		p+=("server.key belongs to $(stat -c %U -- "$PGDATA/server.key")")
	n=0
	while [ "$(grep -c 'received SIGHUP, reloading configuration files' "$W/postgres.log" || true)" -le "$reloads" ] && [ $n -lt 200 ]; do
		sleep 0.05
		n=$((n + 1))
	done
	n=0
	while [ "$(pg_serial)" != "$now" ] && [ $n -lt 100 ]; do
		sleep 0.1
		n=$((n + 1))
	done
	[ "$(pg_serial)" = "$now" ] || p+=("PostgreSQL presents $(pg_serial), not $now")
	pg_psql
	[ "$RC" = 0 ] && [[ $OUT == t\|TLSv1.* ]] || p+=("psql verify-full after the renewal: exit $RC, '$OUT' $ERR")
	first=$now
	verdict "PostgreSQL renewal $i: postmaster signalled through postmaster.pid, new connections see serial $now" \
		"${p[@]+"${p[@]}"}" -- "$(tail -n 3 "$W/agent-pg.log")" "$(grep -i -e ssl -e sighup "$W/postgres.log" | tail -n 3)"
done
stop_bg "$AGENT_PG_BG"

echo "# hooks that fail or hang"
enroll h peer --dns localhost
start_agent "$W/agent-h.log" --dir "$W/h" --exec 'echo about to hang; sleep 60' --exec-timeout 1s
for i in 1 2; do
	kill -HUP "$AGENT_PID"
	p=()
	wait_count "$W/agent-h.log" renewed "$i" "$AGENT_BG" || p+=("no renewal $i")
	wait_count "$W/agent-h.log" hook_failed "$i" "$AGENT_BG" || p+=("no hook_failed $i")
	line=$(grep -F '"event":"hook_failed"' "$W/agent-h.log" | sed -n "${i}p" || true)
	[[ $line == *'"timed_out":1'* && $line == *'about to hang'* ]] ||
		p+=("hook_failed $i does not say timed_out with the output: $line")
	kill -0 "$AGENT_PID" 2>/dev/null || p+=("the agent died")
	verdict "a hanging hook ($i): killed at --exec-timeout, logged, the agent goes on" \
		"${p[@]+"${p[@]}"}" -- "$(tail -n 3 "$W/agent-h.log")"
done
stop_bg "$AGENT_BG"

start_agent "$W/agent-f.log" --dir "$W/h" --exec 'echo nope >&2; exit 3'
kill -HUP "$AGENT_PID"
p=()
wait_count "$W/agent-f.log" hook_failed 1 "$AGENT_BG" || p+=("no hook_failed")
line=$(grep -F '"event":"hook_failed"' "$W/agent-f.log" | head -n 1 || true)
[[ $line == *'"exit_status":3'* && $line == *nope* ]] ||
	p+=("hook_failed does not carry exit_status 3 and the output: $line")
kill -HUP "$AGENT_PID"
wait_count "$W/agent-f.log" renewed 2 "$AGENT_BG" || p+=("no second renewal after the failed hook")
mapfile -t fp < <(files_problems "$W/h/cert.pem" "$W/h/key.pem" "$W/h/ca.pem")
p+=("${fp[@]+"${fp[@]}"}")
verdict "a failing hook: exit status and output logged, the agent goes on renewing" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 3 "$W/agent-f.log")"
stop_bg "$AGENT_BG"

echo "# SIGTERM stops promptly"
start_agent "$W/agent-t.log" --dir "$W/h" --exec "sleep 300 & echo \$! >'$W/hook-sleep'; wait" \
	--exec-timeout 10m
kill -HUP "$AGENT_PID"
wait_for_line "$W/hook-sleep" '^[0-9]+$' 30 || setup_die "the hook did not start" "$(cat "$W/agent-t.log")"
sleeper=$(cat -- "$W/hook-sleep")
kill -TERM "$AGENT_PID"
wait_exit "$AGENT_BG" "$RUN_LIMIT"
p=()
[ "$EXIT_RC" = 0 ] || p+=("exit status $EXIT_RC (timeout: not stopped)")
grep -q '"event":"agent_stopping"' "$W/agent-t.log" || p+=("no agent_stopping line")
if [ -e "/proc/$sleeper" ] && ! grep -q ') Z' "/proc/$sleeper/stat" 2>/dev/null; then
	p+=("the hook's child $sleeper still runs")
fi
verdict "SIGTERM during a hanging hook: the agent ends it and exits" "${p[@]+"${p[@]}"}" -- \
	"$(tail -n 3 "$W/agent-t.log")"

# a "CA" that completes the TLS handshake (its certificate verifies against ca.pem) and then
# never answers: only the transfer's 30 s total limit would end the request
"$MTLS" ca issue --dir "$D" --profile server --ip 127.0.0.1 --out "$W/mute" >/dev/null 2>&1 ||
	setup_die "mtls ca issue for the mute server"
cat >"$W/mute.py" <<'EOF'
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(8)
print(s.getsockname()[1], flush=True)
held = []
while True:
    c, _ = s.accept()
    try:
        held.append(ctx.wrap_socket(c, server_side=True))
        print("handshake done", flush=True)
    except (ssl.SSLError, OSError) as e:
        print("handshake failed:", e, flush=True)
EOF
start_bg "$W/mute.log" python3 "$W/mute.py" "$W/mute-chain.pem" "$W/mute.key"
wait_for_line "$W/mute.log" '^[0-9]+$' "$READY_LIMIT" || setup_die "the mute server did not start"
MUTE=$(head -n 1 "$W/mute.log")
start_bg "$W/agent-m.log" "$MTLS" agent --dir "$W/h" --ca-url "https://127.0.0.1:$MUTE"
AGENT_BG=$BG_PID
wait_for_line "$W/agent-m.log" '"event":"agent_started"' "$READY_LIMIT" "$AGENT_BG" ||
	setup_die "the agent did not start" "$(cat "$W/agent-m.log")"
wait_for_line "$W/mute.log" '^handshake done$' "$READY_LIMIT" ||
	setup_die "the agent did not connect" "$(cat "$W/mute.log")"
AGENT_PID=$(sed -n 's/.*"event":"agent_started".*"pid":\([0-9][0-9]*\).*/\1/p;T;q' "$W/agent-m.log")
kill -TERM "$AGENT_PID"
# the transfer's own limit is 30 s; a stop must not wait for it
wait_exit "$AGENT_BG" "$RUN_LIMIT"
p=()
[ "$EXIT_RC" = 0 ] || p+=("exit status $EXIT_RC (timeout: the transfer was not aborted)")
grep -q '"event":"agent_stopping"' "$W/agent-m.log" || p+=("no agent_stopping line")
verdict "SIGTERM during a transfer to a CA that never answers: aborted, the agent exits" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 3 "$W/agent-m.log")"

echo "# a second root served by the CA"
stop_bg "$SERVE_PID"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/root-B.key" \
	-out "$W/root-B.pem" -subj "/O=agent test/CN=root B" -days 2 \
	-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
	>/dev/null 2>&1 || setup_die "openssl: root B"
# with its link certificate (root B's key certified by the CA's root): the agent takes a new
# root only with one
printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n' >"$W/link.ext"
openssl req -new -key "$W/root-B.key" -subj "/O=agent test/CN=root B" 2>/dev/null |
	openssl x509 -req -CA "$D/root.pem" -CAkey "$D/root.key" -days 2 -extfile "$W/link.ext" \
		-out "$W/link-B.pem" >/dev/null 2>&1 || setup_die "openssl: link certificate for root B"
cat -- "$W/root-B.pem" "$W/link-B.pem" >>"$D/root.pem"
hooks=$(count "$W/agent.log" hook_done)
start_ca "$AP"
p=()
wait_count "$W/agent.log" roots_replaced 1 "$AGENT1_BG" || p+=("no roots_replaced")
wait_count "$W/agent.log" hook_done $((hooks + 1)) "$AGENT1_BG" || p+=("no hook after the new roots")
[ "$(grep -c 'BEGIN CERTIFICATE' "$W/svc/ca.pem")" = 2 ] || p+=("ca.pem does not hold both roots")
cmp -s "$W/svc/ca.pem" "$W/app/ca.pem" || p+=("--ca-out not updated")
[[ $(tail -n 1 "$W/marks") == *" roots,files" ]] || p+=("the hook's line is '$(tail -n 1 "$W/marks")'")
wait_prom 'mtls_agent_roots_replaced_total{cert="'"$W"'/svc/cert.pem"} 1' ||
	p+=("metrics: $(grep '^mtls_agent_roots_replaced_total' "$W/agent.prom")")
verdict "a second root served: ca.pem and its copy take both, the hook runs (MTLS_EVENT roots,files)" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 4 "$W/agent.log")"
stop_bg "$AGENT1_BG"

echo "# short-lived certificates: renewed by the schedule alone (started at the beginning)"
for i in 1 2 3; do
	p=()
	wait_count "$W/agent-s.log" renewed "$i" "$SHORT_BG" || p+=("no renewal $i within a minute")
	wait_count "$W/agent-s.log" hook_done "$i" "$SHORT_BG" || p+=("no hook_done $i")
	line=$(grep -F '"event":"renewed"' "$W/agent-s.log" | sed -n "${i}p")
	[[ $line == *'"forced":0'* ]] || p+=("renewal $i was not the schedule's: $line")
	now=$(serial "$W/short/cert.pem")
	[ "$(tail -n 1 "$W/short-marks" 2>/dev/null)" = "$now" ] || p+=("the hook's last serial is not $now")
	mapfile -t fp < <(files_problems "$W/short/cert.pem" "$W/short/key.pem" "$W/short/ca.pem")
	p+=("${fp[@]+"${fp[@]}"}")
	verdict "60 s certificate: renewal $i by the schedule, hook run, files good" \
		"${p[@]+"${p[@]}"}" -- "$(tail -n 3 "$W/agent-s.log")"
done
stop_bg "$SHORT_BG"
finish
