#!/usr/bin/env bash
# The daemons' sandbox (common/sandbox.h: Landlock for the files, a seccomp allowlist), on by
# default, for mtls ca serve, mtls server, mtls connector and mtls agent, with the test hook
# of test builds (MTLS_TEST_HOOKS: MTLS_TEST_SANDBOX_PROBE=PATH opens PATH and makes one call
# outside the allowlist once sandboxed and after each SIGHUP; MTLS_TEST_SANDBOX_KILL=1 also
# makes one call of the kill list):
#   - each daemon logs its sandbox (landlock=ABI seccomp=on); a file outside its set (in a
#     fresh directory) cannot be opened (EACCES) and the call fails (EPERM), a file inside
#     its set (its CA) opens; again after SIGHUP;
#   - sandboxed, they still serve (exchanges through connector and server, enrollment at the
#     CA), reload (SIGHUP; a certificate and key renamed into place, seen by the watcher),
#     renew (--ca-url against mtls ca serve, certificates of 60 s), log (--log-file, and a
#     new file after logrotate's rename and SIGUSR1), and the server's /status says so;
#   - the agent renews on SIGHUP and its hook runs (outside the sandbox, by its runner);
#   - --insecure-no-sandbox: a warning, and the probe opens the outside file;
#   - a call of the kill list kills the daemon by SIGSYS.
# No timing thresholds: every wait is for an event, bounded.
set -euo pipefail
BG_LIMIT=${BG_LIMIT:-300}
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"
command -v curl >/dev/null || _lib_die "curl not found in PATH"

if ! grep -q MTLS_TEST_SANDBOX_PROBE "$MTLS"; then
	echo "skip  all cases: mtls was built without -DMTLS_TEST_HOOKS=ON (scripts/test.sh turns it on)"
	finish
	exit 0
fi

W=$TMP/w
mkdir -m 700 -- "$W"
# outside every daemon's set: a directory of its own, beside the daemons' files
OUTSIDE=$TMP/outside
mkdir -m 700 -- "$OUTSIDE"
echo "not for the daemons" >"$OUTSIDE/secret"
D=$W/ca
APP=spiffe://sandbox.test/app

# wait_count FILE EVENT N [TEXT] [SECONDS] : until FILE has N lines of EVENT (with TEXT)
wait_count() {
	local n=$((${5:-60} * 10))
	while [ "$n" -gt 0 ]; do
		[ "$(log_count "$1" "$2" "${4:-}")" -ge "$3" ] && return 0
		sleep 0.1
		n=$((n - 1))
	done
	return 1
}
# probe_line FILE WHEN : the last sandbox_probe line of FILE for WHEN (start, sighup)
probe_line() { { grep -F '"event":"sandbox_probe"' "$1" || true; } | grep -F "\"when\":\"$2\"" | tail -n 1; }
# probe_problems FILE WHEN OPEN SYSCALL : what is wrong with the probe's results
probe_problems() {
	local l
	wait_count "$1" sandbox_probe 1 "\"when\":\"$2\"" 20 || {
		echo "no sandbox_probe line ($2)"
		return
	}
	l=$(probe_line "$1" "$2")
	[[ $l == *"\"open\":\"$3\""* ]] || echo "open: want $3: $l"
	[[ $l == *"\"syscall\":\"$4\""* ]] || echo "syscall: want $4: $l"
}
# landlock: whether this kernel has it (the daemons warn and go on without it)
LANDLOCK=1
sandboxed_problems() {
	local l
	l=$({ grep -F '"event":"sandbox"' "$1" || true; } | head -n 1)
	[ -n "$l" ] || {
		echo "no sandbox line"
		return
	}
	[[ $l == *'seccomp=on'* ]] || echo "seccomp is not on: $l"
	if [[ $l == *'landlock=unavailable'* ]]; then
		LANDLOCK=0
	elif ! [[ $l =~ landlock=[0-9]+ ]]; then
		echo "landlock neither an ABI nor unavailable: $l"
	fi
}
# want_open : EACCES for a file outside the set where Landlock works, else OK
want_open() { if [ "$LANDLOCK" = 1 ]; then echo EACCES; else echo OK; fi; }

# --- mtls ca serve ---------------------------------------------------------------------------
"$MTLS" ca init --dir "$D" >/dev/null 2>&1 || _lib_die "(setup) mtls ca init failed"
MTLS_TEST_SANDBOX_PROBE=$OUTSIDE/secret start_bg "$W/ca.log" "$MTLS" ca serve --dir "$D" \
	--listen 127.0.0.1:0 --http-listen none --leaf-lifetime 60s
CA_PID=$BG_PID
wait_for_line "$W/ca.log" '"event":"listening"' "$READY_LIMIT" "$CA_PID" ||
	_lib_die "(setup) mtls ca serve did not start: $(cat "$W/ca.log")"
CA_REAL=$(daemon_pid "$W/ca.log")
p=()
mapfile -t p < <(sandboxed_problems "$W/ca.log")
mapfile -t -O "${#p[@]}" p < <(probe_problems "$W/ca.log" start "$(want_open)" EPERM)
verdict "ca serve: sandboxed at start; the outside file is refused, the call fails" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 20 "$W/ca.log")"

token() { "$MTLS" ca token --dir "$D" "$@" 2>/dev/null || _lib_die "(setup) mtls ca token $*"; }
enroll_problems() {
	LAST_CMD="mtls enroll --dir $W/$1"
	MTLS_TOKEN=$2 run "$MTLS" enroll --dir "$W/$1"
	[ "$RC" = 0 ] || echo "mtls enroll --dir $W/$1 failed: $ERR"
}
p=()
mapfile -t p < <(enroll_problems srv "$(token --profile server --dns localhost)")
mapfile -t -O "${#p[@]}" p < <(enroll_problems app "$(token --profile client --uri "$APP")")
mapfile -t -O "${#p[@]}" p < <(enroll_problems agt "$(token --profile client --uri "$APP/agent")")
verdict "ca serve: sandboxed, it enrolls (its store, WAL and CRLs in the CA directory)" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 20 "$W/ca.log")"

kill -HUP "$CA_REAL"
p=()
mapfile -t p < <(probe_problems "$W/ca.log" sighup "$(want_open)" EPERM)
kill -0 "$CA_REAL" 2>/dev/null || p+=("ca serve died on SIGHUP")
verdict "ca serve: after SIGHUP still refused, still running" "${p[@]+"${p[@]}"}" -- \
	"$(tail -n 20 "$W/ca.log")"

# --- mtls server and mtls connector: serve, renew, SIGHUP, /status -------------------------------
start_backend "$W/be.log" --mode echo
MTLS_TEST_SANDBOX_PROBE=$OUTSIDE/secret start_tunnel_server "$W/srv.log" --config "$W/srv/mtls.conf" \
	--target "127.0.0.1:$BE_PORT" --allow-uri "$APP" --metrics 127.0.0.1:0
MTLS_TEST_SANDBOX_PROBE=$W/app/ca.pem start_tunnel_connector "$W/con.log" \
	--config "$W/app/mtls.conf" --server "127.0.0.1:$SRV_PORT" --server-name localhost

p=()
mapfile -t p < <(sandboxed_problems "$W/srv.log")
mapfile -t -O "${#p[@]}" p < <(probe_problems "$W/srv.log" start "$(want_open)" EPERM)
verdict "server: sandboxed; a file in a fresh directory cannot be opened, the call fails" \
	"${p[@]+"${p[@]}"}" -- "$(grep -v '"conn_' "$W/srv.log" | tail -n 20)"
p=()
mapfile -t p < <(sandboxed_problems "$W/con.log")
mapfile -t -O "${#p[@]}" p < <(probe_problems "$W/con.log" start OK EPERM)
verdict "connector: sandboxed; its own CA file opens, the call fails" "${p[@]+"${p[@]}"}" -- \
	"$(grep -v '"conn_' "$W/con.log" | tail -n 20)"

# exchange N : one line through connector -> server -> echo backend, on a new connection
exchange() {
	local line=""
	exec 7<>"/dev/tcp/127.0.0.1/$CON_PORT" || return 1
	printf 'x%s\n' "$1" >&7 && read -r -t 10 -u 7 line
	exec 7>&-
	[ "$line" = "x$1" ]
}
p=()
exchange 1 || p+=("no exchange through connector and server")
STATUS=$(curl -s --max-time 5 "http://127.0.0.1:$SRV_METRICS/status" || true)
[[ $STATUS =~ \"sandbox\":\ *\{[^}]*\"seccomp\":\ *true ]] || p+=("/status has no sandbox with seccomp true")
if [ "$LANDLOCK" = 1 ] && ! [[ $STATUS =~ \"sandbox\":\ *\{[^}]*\"landlock\":\ *[0-9]+ ]]; then
	p+=("/status does not give the Landlock ABI")
fi
verdict "sandboxed server and connector carry a mutual TLS exchange; /status shows the sandbox" \
	"${p[@]+"${p[@]}"}" -- "$STATUS" "$(grep -v '"conn_' "$W/srv.log" | tail -n 10)"

kill -HUP "$SRV_REAL" "$CON_REAL"
p=()
mapfile -t p < <(probe_problems "$W/srv.log" sighup "$(want_open)" EPERM)
mapfile -t -O "${#p[@]}" p < <(probe_problems "$W/con.log" sighup OK EPERM)
wait_count "$W/srv.log" reload 1 '"trigger":"SIGHUP"' 20 || p+=("the server did not reload on SIGHUP")
wait_count "$W/con.log" reload 1 '"trigger":"SIGHUP"' 20 || p+=("the connector did not reload on SIGHUP")
exchange 2 || p+=("no exchange after SIGHUP")
verdict "SIGHUP: both reload (the config file read again), the probe still refused" \
	"${p[@]+"${p[@]}"}" -- "$(grep -v '"conn_' "$W/srv.log" | tail -n 12)"

# renewal: certificates of 60 s are renewed at two thirds, through the sandbox (the new files
# written into the enrollment directories, the roots refreshed)
p=()
wait_count "$W/srv.log" reload 1 '"trigger":"renewal"' 120 || p+=("the server did not renew and reload")
wait_count "$W/con.log" reload 1 '"trigger":"renewal"' 120 || p+=("the connector did not renew and reload")
exchange 3 || p+=("no exchange after the renewals")
log_count "$W/srv.log" renewal_failed | grep -qx 0 || p+=("the server logged renewal_failed")
verdict "sandboxed server and connector renew at the CA service and serve on" \
	"${p[@]+"${p[@]}"}" -- "$(grep -v '"conn_' "$W/srv.log" | tail -n 12)" \
	"$(grep -v '"conn_' "$W/con.log" | tail -n 12)"

# --- a certificate renamed into place; --log-file and logrotate -------------------------------
F=$W/files
L=$W/logs
mkdir -m 700 -- "$F" "$L"
cp -- "$CERTS/server-chain.pem" "$F/cert.pem"
cp -- "$CERTS/server.key" "$F/key.pem"
cp -- "$CERTS/ca.pem" "$F/ca.pem"
chmod 600 "$F/key.pem"
MTLS_TEST_SANDBOX_PROBE=$OUTSIDE/secret start_bg "$W/srv2.out" "$MTLS" server --listen 127.0.0.1:0 \
	--target "127.0.0.1:$BE_PORT" --cert "$F/cert.pem" --key "$F/key.pem" --ca "$F/ca.pem" \
	--allow-any-identity --metrics 127.0.0.1:0 --log-format json --log-file "$L/srv2.log" \
	--watch-interval 200ms
SRV2_PID=$BG_PID
wait_for_line "$L/srv2.log" '"event":"listening"' "$READY_LIMIT" "$SRV2_PID" ||
	_lib_die "(setup) the second server did not start: $(cat "$W/srv2.out" "$L/srv2.log" 2>&1)"
SRV2_REAL=$(daemon_pid "$L/srv2.log")
SRV2_M=$(_daemon_port "$L/srv2.log" metrics_listening)
wait_count "$L/srv2.log" sandbox_probe 1 '"when":"start"' 20 || true
cp -- "$CERTS/cnonly-server-chain.pem" "$F/cert.new"
cp -- "$CERTS/cnonly-server.key" "$F/key.new"
chmod 600 "$F/key.new"
mv -- "$F/key.new" "$F/key.pem"
mv -- "$F/cert.new" "$F/cert.pem"
p=()
wait_count "$L/srv2.log" reload 1 '"trigger":"file_change"' 30 || p+=("no reload after the rename")
STATUS=$(curl -s --max-time 5 "http://127.0.0.1:$SRV2_M/status" || true)
NEWSUBJ=$(openssl x509 -in "$CERTS/cnonly-server-chain.pem" -noout -subject -nameopt RFC2253 | sed 's/^subject=//')
[[ $STATUS == *"\"subject\": \"$NEWSUBJ\""* || $STATUS == *"\"subject\":\"$NEWSUBJ\""* ]] ||
	p+=("/status does not show the renamed certificate ($NEWSUBJ)")
verdict "a certificate and key renamed into place are loaded by the sandboxed watcher" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 10 "$L/srv2.log")" "$STATUS"

mv -- "$L/srv2.log" "$L/srv2.log.1"
kill -USR1 "$SRV2_REAL"
p=()
wait_for_line "$L/srv2.log" '"event":"log_reopened"' 20 "$SRV2_PID" ||
	p+=("no new --log-file after logrotate's rename and SIGUSR1")
verdict "--log-file: a new file is made in the log's directory after SIGUSR1" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 5 "$L/srv2.log.1")"
stop_bg "$SRV2_PID"

# --- mtls agent: renews on SIGHUP, its hook runs (by the runner, outside the sandbox) -----------
MTLS_TEST_SANDBOX_PROBE=$OUTSIDE/secret start_bg "$W/agent.log" "$MTLS" agent --dir "$W/agt" \
	--log-format json --exec "echo \"\$MTLS_SERIAL \$MTLS_EVENT\" >>'$W/marks'; cat '$OUTSIDE/secret' >>'$W/marks'"
AGENT_BG=$BG_PID
wait_for_line "$W/agent.log" '"event":"agent_started"' "$READY_LIMIT" "$AGENT_BG" ||
	_lib_die "(setup) mtls agent did not start: $(cat "$W/agent.log")"
AGENT_REAL=$(sed -n 's/.*"event":"agent_started".*"pid":\([0-9]*\).*/\1/p' "$W/agent.log" | head -n 1)
p=()
mapfile -t p < <(sandboxed_problems "$W/agent.log")
mapfile -t -O "${#p[@]}" p < <(probe_problems "$W/agent.log" start "$(want_open)" EPERM)
verdict "agent: sandboxed; the outside file is refused, the call fails" "${p[@]+"${p[@]}"}" -- \
	"$(tail -n 10 "$W/agent.log")"
HOOKS=$(log_count "$W/agent.log" hook_done)
kill -HUP "$AGENT_REAL"
p=()
mapfile -t p < <(probe_problems "$W/agent.log" sighup "$(want_open)" EPERM)
wait_count "$W/agent.log" renewed 1 '' 60 || p+=("no renewal after SIGHUP")
wait_count "$W/agent.log" hook_done $((HOOKS + 1)) '' 60 || p+=("no hook_done after the renewal")
grep -q "not for the daemons" "$W/marks" 2>/dev/null ||
	p+=("the hook did not run outside the sandbox (it reads the outside file)")
NEW=$(openssl x509 -in "$W/agt/cert.pem" -noout -serial | sed 's/^serial=//')
grep -q "^$NEW " "$W/marks" 2>/dev/null || p+=("the hook was not told the new serial $NEW")
verdict "agent: renews on SIGHUP through the sandbox, and its hook runs with MTLS_SERIAL" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 10 "$W/agent.log")" "$(cat "$W/marks" 2>&1)"
stop_bg "$AGENT_BG"

# --- --insecure-no-sandbox ---------------------------------------------------------------------
LAST_CMD="mtls server --insecure-no-sandbox (probe)"
MTLS_TEST_SANDBOX_PROBE=$OUTSIDE/secret start_tunnel_server "$W/nosb.log" --target "127.0.0.1:$BE_PORT" \
	--cert "$CERTS/server-chain.pem" --key "$CERTS/server.key" --ca "$CERTS/ca.pem" \
	--allow-any-identity --insecure-no-sandbox
p=()
mapfile -t p < <(probe_problems "$W/nosb.log" start OK OK)
grep -q '"event":"sandbox_off"' "$W/nosb.log" || p+=("no sandbox_off warning")
grep -q '"state":"landlock=off seccomp=off"' "$W/nosb.log" || p+=("the sandbox line does not say off")
verdict "--insecure-no-sandbox: a warning, and the outside file opens" "${p[@]+"${p[@]}"}" -- \
	"$(head -n 10 "$W/nosb.log")"
stop_bg "$SRV_PID"

# --- --sandbox-allow ---------------------------------------------------------------------------
MTLS_TEST_SANDBOX_PROBE=$OUTSIDE/secret start_tunnel_server "$W/allow.log" --target "127.0.0.1:$BE_PORT" \
	--cert "$CERTS/server-chain.pem" --key "$CERTS/server.key" --ca "$CERTS/ca.pem" \
	--allow-any-identity --sandbox-allow "$OUTSIDE"
p=()
mapfile -t p < <(probe_problems "$W/allow.log" start OK EPERM)
verdict "--sandbox-allow DIR: a file there opens (the rest stays sandboxed)" "${p[@]+"${p[@]}"}" -- \
	"$(head -n 10 "$W/allow.log")"
stop_bg "$SRV_PID"
LAST_CMD="mtls server --sandbox-allow (a path that does not exist)"
run "$MTLS" server --listen 127.0.0.1:0 --target "127.0.0.1:$BE_PORT" \
	--cert "$CERTS/server-chain.pem" --key "$CERTS/server.key" --ca "$CERTS/ca.pem" \
	--allow-any-identity --sandbox-allow "$OUTSIDE/none"
p=()
[ "$RC" = 1 ] || p+=("exit status $RC, not 1")
[[ $ERR == *"--sandbox-allow $OUTSIDE/none: No such file or directory"* ]] || p+=("the refusal does not name it")
if [ "$LANDLOCK" = 1 ]; then
	report "--sandbox-allow a path that does not exist: refused at start, named" "${p[@]+"${p[@]}"}"
fi

# --- a call of the kill list: SIGSYS -------------------------------------------------------------
LAST_CMD="mtls server with MTLS_TEST_SANDBOX_KILL=1"
MTLS_TEST_SANDBOX_PROBE=$OUTSIDE/secret MTLS_TEST_SANDBOX_KILL=1 run "$MTLS" server \
	--listen 127.0.0.1:0 --target "127.0.0.1:$BE_PORT" --cert "$CERTS/server-chain.pem" \
	--key "$CERTS/server.key" --ca "$CERTS/ca.pem" --allow-any-identity --log-format json
p=()
[ "$RC" = $((128 + 31)) ] || p+=("exit status $RC, not 159 (SIGSYS)")
[[ $ERR == *'"event":"sandbox_probe"'* ]] || p+=("the probe did not run")
[[ $ERR != *'sandbox_probe_survived'* ]] || p+=("the daemon survived the call")
report "a call of the kill list (keyctl) kills the sandboxed daemon by SIGSYS" "${p[@]+"${p[@]}"}"

finish
