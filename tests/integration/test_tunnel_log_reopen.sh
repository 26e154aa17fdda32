#!/usr/bin/env bash
# --log-file and logrotate: after the file is moved away, SIGUSR1 makes the daemon open it
# again by its name (docs/operations.md). Lines logged before the signal still reach the
# moved file; after it, the new file (created with the old one's permissions) gets them and
# the moved one nothing more. Before: the daemon wrote to the moved file for ever (and
# SIGUSR1 killed it). The same for mtls ca serve and mtls agent.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

C=$CERTS
SRV_TLS=(--cert "$C/server-chain.pem" --key "$C/server.key" --ca "$C/ca.pem" --allow-any-identity)
mkdir "$TMP/log"
LOG=$TMP/log/mtls.log
: >"$LOG"
chmod 0604 "$LOG" # not the default (0640): the new file must get this one's mode

start_backend "$TMP/be.log"
start_bg "$TMP/srv.out" "$MTLS" server --listen 127.0.0.1:0 --target "127.0.0.1:$BE_PORT" \
	--log-format json --log-file "$LOG" "${SRV_TLS[@]}"
SRV=$BG_PID
wait_for_line "$LOG" '"event":"listening"' "$READY_LIMIT" "$SRV" ||
	_lib_die "mtls server did not start: $(cat -- "$TMP/srv.out" "$LOG")"
PID=$(daemon_pid "$LOG")

mv "$LOG" "$LOG.1"
kill -HUP "$PID"
if wait_for_line "$LOG.1" '"event":"reload"' "$READY_LIMIT" "$SRV"; then
	pass "before SIGUSR1 the moved file gets the lines"
else
	fail "before SIGUSR1 the moved file gets the lines" "$(cat -- "$LOG.1" "$TMP/srv.out")"
fi

kill -USR1 "$PID"
if wait_for_line "$LOG" '"event":"log_reopened"' "$READY_LIMIT" "$SRV"; then
	pass "SIGUSR1 opens the file again"
else
	fail "SIGUSR1 opens the file again" "daemon running: $(kill -0 "$SRV" 2>/dev/null &&
		echo yes || echo no)" "$(cat -- "$TMP/srv.out")"
fi
vcheck "the new file has the old one's mode" \
	"$(m=$(stat -c %a "$LOG" 2>/dev/null || echo none); [ "$m" = 604 ] || echo "mode $m")"

OLD_LINES=$(wc -l <"$LOG.1")
kill -HUP "$PID"
if wait_for_line "$LOG" '"event":"reload"' "$READY_LIMIT" "$SRV"; then
	pass "after SIGUSR1 the lines go to the new file"
else
	fail "after SIGUSR1 the lines go to the new file" "$(cat -- "$LOG" "$TMP/srv.out")"
fi
vcheck "the moved file gets nothing more" \
	"$([ "$(wc -l <"$LOG.1")" = "$OLD_LINES" ] || tail -n 3 -- "$LOG.1")"
vcheck "the daemon still runs" "$(kill -0 "$SRV" 2>/dev/null || echo "it exited")"
stop_bg "$SRV"

echo "# mtls ca serve --log-file"
"$MTLS" ca init --dir "$TMP/ca" >/dev/null 2>&1 || _lib_die "(setup) mtls ca init failed"
CALOG=$TMP/log/ca.log
start_bg "$TMP/serve.out" "$MTLS" ca serve --dir "$TMP/ca" --listen 127.0.0.1:0 \
	--http-listen 127.0.0.1:0 --log-file "$CALOG"
SERVE=$BG_PID
wait_for_line "$CALOG" '"event":"listening"' "$READY_LIMIT" "$SERVE" ||
	_lib_die "mtls ca serve did not start: $(cat -- "$TMP/serve.out" "$CALOG")"
SPID=$(pgrep -P "$SERVE") # start_bg's pid is timeout(1)'s
mv "$CALOG" "$CALOG.1"
kill -USR1 "$SPID"
if wait_for_line "$CALOG" '"event":"log_reopened"' "$READY_LIMIT" "$SERVE"; then
	pass "ca serve: SIGUSR1 opens the file again"
else
	fail "ca serve: SIGUSR1 opens the file again" "running: $(kill -0 "$SPID" 2>/dev/null &&
		echo yes || echo no)" "$(cat -- "$TMP/serve.out")"
fi

echo "# mtls agent --log-file"
AP=$(sed -n 's/.*"event":"listening".*"address":"[^"]*:\([0-9][0-9]*\)".*/\1/p;T;q' "$CALOG.1")
TOK=$("$MTLS" ca token --dir "$TMP/ca" --profile server --dns localhost 2>/dev/null) ||
	_lib_die "(setup) mtls ca token failed"
MTLS_TOKEN=$TOK "$MTLS" enroll --dir "$TMP/enr" >/dev/null 2>&1 ||
	_lib_die "(setup) mtls enroll failed (CA API port ${AP:-?})"
AGLOG=$TMP/log/agent.log
start_bg "$TMP/agent.out" "$MTLS" agent --dir "$TMP/enr" --log-format json --log-file "$AGLOG"
AGENT=$BG_PID
wait_for_line "$AGLOG" '"event":"agent_started"' "$READY_LIMIT" "$AGENT" ||
	_lib_die "mtls agent did not start: $(cat -- "$TMP/agent.out" "$AGLOG")"
APID=$(sed -n 's/.*"event":"agent_started".*"pid":\([0-9][0-9]*\).*/\1/p;T;q' "$AGLOG")
mv "$AGLOG" "$AGLOG.1"
kill -USR1 "$APID"
if wait_for_line "$AGLOG" '"event":"log_reopened"' "$READY_LIMIT" "$AGENT"; then
	pass "agent: SIGUSR1 opens the file again"
else
	fail "agent: SIGUSR1 opens the file again" "running: $(kill -0 "$APID" 2>/dev/null &&
		echo yes || echo no)" "$(cat -- "$TMP/agent.out")"
fi
stop_bg "$AGENT"
stop_bg "$SERVE"
finish
