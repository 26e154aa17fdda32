# Shared helpers for the integration tests (tests/integration/test_*.sh). Sourced, not run.
#
# Gives each script:
#   $CERTS $MTLS $ECHO_SERVER $ECHO_CLIENT   the certificate zoo and the programs under test
#   $TMP                                     a private directory, removed at exit (kept
#                                            when MTLS_KEEP_TMP is set, for debugging)
#   start_bg / wait_exit / stop_bg           background processes, always bounded and always
#                                            killed (and waited for) when the script exits
#   start_echo_server / start_s_server       servers on a free port (port 0), ready to connect
#   run                                      a bounded foreground command, RC/OUT/ERR captured
#   pass / fail / finish                     one line per case, "N passed, M failed" at the end
#
# The environment comes from CTest (tests/CMakeLists.txt): MTLS_TEST_CERTS, MTLS_BIN_DIR,
# MTLS_SOURCE_DIR.

# Variables set here are for the scripts that source this file.
# shellcheck disable=SC2034
set -euo pipefail

_lib_die() {
	echo "${0##*/}: $*" >&2
	exit 2
}

[ -n "${MTLS_TEST_CERTS:-}" ] || _lib_die "MTLS_TEST_CERTS is not set (run the tests with ctest)"
[ -n "${MTLS_BIN_DIR:-}" ] || _lib_die "MTLS_BIN_DIR is not set (run the tests with ctest)"
[ -n "${MTLS_SOURCE_DIR:-}" ] || _lib_die "MTLS_SOURCE_DIR is not set (run the tests with ctest)"

CERTS=$MTLS_TEST_CERTS
MTLS=$MTLS_BIN_DIR/mtls
ECHO_SERVER=$MTLS_BIN_DIR/echo-server
ECHO_CLIENT=$MTLS_BIN_DIR/echo-client

[ -f "$CERTS/.done" ] || _lib_die "no certificate zoo in $CERTS (the gen_certs fixture did not run)"
for _p in "$MTLS" "$ECHO_SERVER" "$ECHO_CLIENT"; do
	[ -x "$_p" ] || _lib_die "$_p is missing: build the project first"
done
command -v openssl >/dev/null || _lib_die "openssl not found in PATH"
command -v timeout >/dev/null || _lib_die "timeout (coreutils) not found in PATH"

# Upper bounds, in seconds. Generous enough for sanitizer builds on a loaded machine; a
# passing script takes a few seconds.
RUN_LIMIT=${RUN_LIMIT:-20}	 # one foreground command
BG_LIMIT=${BG_LIMIT:-50}	 # lifetime of any background process
READY_LIMIT=${READY_LIMIT:-10} # a server printing its port

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mtls-${0##*/}.XXXXXX")

# Sanitizer reports of every process the script starts (daemons included, whose stderr goes
# to logs nobody reads) land in $TMP/sanitizer/report.PID (a directory of their own: a
# sandboxed daemon of a sanitizer build is given write access to it, and to nothing else of
# $TMP it was not given); any report fails the script at exit,
# after the background processes have run their exit-time leak checks.
mkdir -- "$TMP/sanitizer"
for _v in ASAN_OPTIONS UBSAN_OPTIONS TSAN_OPTIONS; do
	export "$_v=${!_v:+${!_v}:}log_path=$TMP/sanitizer/report"
done

# _sanitizer_reports: print any sanitizer report written so far; false if there was one.
_sanitizer_reports() {
	local f found=0
	for f in "$TMP"/sanitizer/report.*; do
		[ -e "$f" ] || continue
		found=1
		echo "SANITIZER REPORT ($f):"
		head -n 80 -- "$f"
	done
	[ "$found" -eq 0 ]
}

_bg_pids=()
_passed=0
_failed=0

_cleanup() {
	local rc=$? pid
	set +e
	for pid in "${_bg_pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null
	done
	for pid in "${_bg_pids[@]}"; do
		wait "$pid" 2>/dev/null
	done
	_sanitizer_reports || rc=1
	if [ -n "${MTLS_KEEP_TMP:-}" ]; then
		echo "${0##*/}: MTLS_KEEP_TMP: files kept in $TMP" >&2
	else
		rm -rf -- "$TMP"
	fi
	exit "$rc"
}
trap _cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------------------------------
# Cases

pass() {
	_passed=$((_passed + 1))
	printf 'ok    %s\n' "$1"
}

# fail NAME DETAIL... : record a failed case and show what was wrong (each DETAIL argument
# may be several lines).
fail() {
	local name=$1
	shift
	_failed=$((_failed + 1))
	printf 'FAIL  %s\n' "$name"
	printf '%s\n' "$@" | sed 's/^/        | /'
}

# verdict NAME PROBLEMS... -- DETAILS... : pass if no PROBLEMS were given, else fail with
# them and the DETAILS (output worth seeing when something is wrong).
verdict() {
	local name=$1 problems=()
	shift
	while [ $# -gt 0 ] && [ "$1" != -- ]; do
		problems+=("$1")
		shift
	done
	[ $# -gt 0 ] && shift
	if [ ${#problems[@]} -eq 0 ]; then
		pass "$name"
	else
		fail "$name" "${problems[@]}" "$@"
	fi
}

# vcheck NAME PROBLEM : pass when PROBLEM (one string, e.g. "$(test || echo why)") is empty,
# else fail with it.
vcheck() {
	if [ -z "$2" ]; then
		pass "$1"
	else
		fail "$1" "$2"
	fi
}

# report NAME PROBLEMS... : verdict, with the last `run` as the details (set LAST_CMD to
# name the command; the output shown is its last 40 lines on each stream).
report() {
	local name=$1
	shift
	verdict "$name" "$@" -- "last command: ${LAST_CMD:-}" "exit status: ${RC:-}" \
		"stdout:" "$(printf '%s\n' "${OUT:-}" | tail -n 40)" \
		"stderr:" "$(printf '%s\n' "${ERR:-}" | tail -n 40)"
}

# finish: the summary line; exit status 1 if any case failed.
finish() {
	echo "$_passed passed, $_failed failed"
	[ "$_failed" -eq 0 ] && [ "$_passed" -gt 0 ]
}

# ------------------------------------------------------------------------------------------
# Foreground commands

# run CMD... : run CMD with stdin from /dev/null, bounded by RUN_LIMIT. Sets RC (124 if it
# timed out), OUT (stdout) and ERR (stderr).
run() {
	RC=0
	timeout -k 2 "$RUN_LIMIT" "$@" >"$TMP/run.out" 2>"$TMP/run.err" </dev/null || RC=$?
	OUT=$(cat -- "$TMP/run.out")
	ERR=$(cat -- "$TMP/run.err")
}

# first_line TEXT
first_line() {
	# no pipe: "printf | head" can die of SIGPIPE once head has its line, and with
	# pipefail that ends the script without a word
	printf '%s\n' "${1%%$'\n'*}"
}

# has_line TEXT PREFIX : does a line of TEXT start with PREFIX (a literal string)?
has_line() {
	local line
	while IFS= read -r line; do
		[[ $line == "$2"* ]] && return 0
	done <<<"$1"
	return 1
}

# count_lines TEXT PREFIX : how many lines of TEXT start with PREFIX.
count_lines() {
	local line n=0
	while IFS= read -r line; do
		[[ $line == "$2"* ]] && n=$((n + 1))
	done <<<"$1"
	echo "$n"
}

# ------------------------------------------------------------------------------------------
# Background processes

# start_bg LOG CMD... : start CMD in the background (stdin /dev/null, stdout and stderr to
# LOG), bounded by BG_LIMIT; killed and waited for at exit. Sets BG_PID.
start_bg() {
	start_bg_stdin /dev/null "$@"
}

# start_bg_stdin INPUT LOG CMD... : the same with stdin from INPUT (a file or a FIFO). The
# FIFO ends opened with open_fifo are closed in CMD, so that closing ours means EOF to it.
start_bg_stdin() {
	local input=$1 log=$2
	shift 2
	# emptied now, not only in the background: a wait for a line right after would
	# otherwise find a line of the log's previous writer (a daemon started again on the
	# same log, its old port)
	: >"$log"
	(
		for fd in "${_fifo_fds[@]+"${_fifo_fds[@]}"}"; do
			exec {fd}>&-
		done
		exec timeout -k 2 "$BG_LIMIT" "$@" >"$log" 2>&1 <"$input"
	) &
	BG_PID=$!
	_bg_pids+=("$BG_PID")
}

# open_fifo PATH : make a FIFO and open it read-write (which never blocks), for feeding the
# stdin of (or taking the output of) a background process started later with
# start_bg_stdin. Sets FIFO_FD; close it with close_fifo to give a reader EOF.
_fifo_fds=()
open_fifo() {
	mkfifo -- "$1"
	exec {FIFO_FD}<>"$1"
	_fifo_fds+=("$FIFO_FD")
}

# close_fifo [FD] : close a descriptor from open_fifo (default: the last one, FIFO_FD).
close_fifo() {
	local target=${1:-$FIFO_FD} fd keep=()
	exec {target}>&-
	for fd in "${_fifo_fds[@]}"; do
		[ "$fd" = "$target" ] || keep+=("$fd")
	done
	_fifo_fds=("${keep[@]+"${keep[@]}"}")
}

_forget_bg() {
	local pid keep=()
	for pid in "${_bg_pids[@]}"; do
		[ "$pid" = "$1" ] || keep+=("$pid")
	done
	_bg_pids=("${keep[@]+"${keep[@]}"}")
}

# wait_exit PID SECONDS : wait for a background process to end by itself. Sets EXIT_RC to
# its exit status, or to "timeout" (after killing it) if it is still running after SECONDS.
wait_exit() {
	local pid=$1 n=$(($2 * 20))
	while kill -0 "$pid" 2>/dev/null && [ "$n" -gt 0 ]; do
		sleep 0.05
		n=$((n - 1))
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		EXIT_RC=timeout
	else
		EXIT_RC=0
		wait "$pid" 2>/dev/null || EXIT_RC=$?
	fi
	_forget_bg "$pid"
}

# stop_bg PID : kill a background process (if still running) and wait for it.
stop_bg() {
	kill -TERM "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
	_forget_bg "$1"
}

# wait_for_line FILE ERE SECONDS [PID] : wait until a line of FILE matches ERE. Returns 1 on
# timeout, or at once if PID (given) has ended without the line appearing.
wait_for_line() {
	local file=$1 re=$2 n=$(($3 * 20)) pid=${4:-}
	while [ "$n" -gt 0 ]; do
		grep -Eq -- "$re" "$file" 2>/dev/null && return 0
		if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
			grep -Eq -- "$re" "$file" 2>/dev/null && return 0
			return 1
		fi
		sleep 0.05
		n=$((n - 1))
	done
	return 1
}

# start_echo_server LOG ARGS... : echo-server --port 0 ARGS..., once it listens. Sets ES_PID
# and ES_PORT. Exits the script (the setup failed, not a case) if it does not come up.
start_echo_server() {
	local log=$1
	shift
	start_bg "$log" "$ECHO_SERVER" --port 0 "$@"
	ES_PID=$BG_PID
	if ! wait_for_line "$log" '^listening on 127\.0\.0\.1:[0-9]+$' "$READY_LIMIT" "$ES_PID"; then
		echo "echo-server did not start (args: $*); its output:" >&2
		cat -- "$log" >&2
		exit 1
	fi
	ES_PORT=$(sed -n '/^listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/{s//\1/p;q}' "$log")
	[ "$ES_PORT" -gt 0 ] || {
		echo "echo-server printed no port: $(cat -- "$log")" >&2
		exit 1
	}
}

# start_s_server LOG ARGS... : openssl s_server on 127.0.0.1, port 0 (OpenSSL 3 binds port 0
# and prints "ACCEPT 127.0.0.1:PORT" with the real port). Sets SS_PID and SS_PORT.
start_s_server() {
	local log=$1
	shift
	start_bg "$log" openssl s_server -accept 127.0.0.1:0 "$@"
	SS_PID=$BG_PID
	if ! wait_for_line "$log" '^ACCEPT .*:[0-9]+$' "$READY_LIMIT" "$SS_PID"; then
		echo "openssl s_server did not start (args: $*); its output:" >&2
		cat -- "$log" >&2
		exit 1
	fi
	SS_PORT=$(sed -n '/^ACCEPT .*:\([0-9][0-9]*\)$/{s//\1/p;q}' "$log")
	if [ -z "$SS_PORT" ] || [ "$SS_PORT" -eq 0 ]; then
		echo "openssl s_server did not report the port it bound: $(cat -- "$log")" >&2
		exit 1
	fi
}
