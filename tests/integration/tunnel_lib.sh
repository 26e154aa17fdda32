# Helpers for the tests of mtls server and mtls connector. Sourced after lib.sh.
#
#   start_backend LOG [backend args]       the plaintext target: sets BE_PID, BE_PORT
#   start_tunnel_server LOG [mtls args]    mtls server on 127.0.0.1:0: SRV_PID, SRV_PORT,
#                                          SRV_METRICS (port, if --metrics 127.0.0.1:0),
#                                          SRV_REAL (the daemon's own pid, for signals:
#                                          SRV_PID is timeout(1)'s, which turns a forwarded
#                                          SIGHUP into a SIGKILL 2 s later)
#   start_tunnel_connector LOG [args]      mtls connector on 127.0.0.1:0: CON_PID, CON_PORT,
#                                          CON_METRICS, CON_REAL
#   metric PORT SERIES                     the value of a metric series ("" if absent)
#   log_count FILE EVENT [TEXT]            how many JSON log lines have that event (and TEXT)
#   daemon_pid LOG                         the pid in the daemon's "listening" line
#
# Both daemons log JSON; their first "listening" line carries the real port.

# shellcheck disable=SC2034
BACKEND=$MTLS_BIN_DIR/backend
[ -x "$BACKEND" ] || _lib_die "$BACKEND is missing: build the project first"

start_backend() {
	local log=$1
	shift
	start_bg "$log" "$BACKEND" "$@"
	BE_PID=$BG_PID
	wait_for_line "$log" '^listening on ' "$READY_LIMIT" "$BE_PID" || {
		echo "backend did not start: $(cat -- "$log")" >&2
		exit 1
	}
	BE_PORT=$(sed -n '/^listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/{s//\1/p;q}' "$log")
}

# _daemon_port LOG EVENT : the port in the "address" of the first EVENT line.
_daemon_port() {
	{ grep -m1 -F "\"event\":\"$2\"" "$1" || true; } |
		sed -n 's/.*"address":"[^"]*:\([0-9][0-9]*\)".*/\1/p'
}

_start_daemon() {
	local role=$1 log=$2
	shift 2
	start_bg "$log" "$MTLS" "$role" --listen 127.0.0.1:0 --log-format json --workers 2 "$@"
	DAEMON_PID=$BG_PID
	if ! wait_for_line "$log" '"event":"listening"' "$READY_LIMIT" "$DAEMON_PID"; then
		echo "mtls $role did not start (args: $*); its output:" >&2
		cat -- "$log" >&2
		exit 1
	fi
	DAEMON_PORT=$(_daemon_port "$log" listening)
	DAEMON_METRICS=$(_daemon_port "$log" metrics_listening)
	DAEMON_REAL=$(daemon_pid "$log")
}

# daemon_pid LOG : the process id in the daemon's "listening" line: the daemon itself, for
# signals (start_bg's pid is timeout(1)'s, which turns a forwarded SIGHUP into a SIGKILL).
daemon_pid() {
	{ grep -m1 -F '"event":"listening"' "$1" 2>/dev/null || true; } |
		sed -n 's/.*"pid":\([0-9][0-9]*\).*/\1/p'
}

start_tunnel_server() {
	_start_daemon server "$@"
	SRV_PID=$DAEMON_PID
	SRV_PORT=$DAEMON_PORT
	SRV_METRICS=$DAEMON_METRICS
	SRV_REAL=$DAEMON_REAL
}

start_tunnel_connector() {
	_start_daemon connector "$@"
	CON_PID=$DAEMON_PID
	CON_PORT=$DAEMON_PORT
	CON_METRICS=$DAEMON_METRICS
	CON_REAL=$DAEMON_REAL
}

# metric PORT SERIES : e.g. metric 9100 'mtls_handshakes_total{result="ok"}'
metric() {
	# awk reads everything: no reader leaves early, so no writer dies of SIGPIPE
	curl -s --max-time 5 "http://127.0.0.1:$1/metrics" |
		awk -v s="$2 " '!done && index($0, s) == 1 { print $NF; done = 1 }' || true
}

log_count() {
	local n
	n=$(grep -F "\"event\":\"$2\"" "$1" | grep -cF -- "${3:-}" || true)
	echo "${n:-0}"
}
