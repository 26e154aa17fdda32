#!/usr/bin/env bash
# systemd integration without a running systemd (docs/systemd.md): a unix datagram socket
# set as NOTIFY_SOCKET stands for the service manager and records what each daemon tells it;
# systemd-socket-activate passes listening sockets as a .socket unit would.
#
# 1. mtls server, Type=notify: READY=1 (MAINPID=, STATUS= naming the port and target) once
#    the port accepts; SIGHUP: RELOADING=1 with MONOTONIC_USEC= then READY=1 with the
#    result; a failed reload's STATUS= says the previous configuration stays (and it does);
#    WATCHDOG=1 every WATCHDOG_USEC/2 (each gap below WATCHDOG_USEC, none a flood); a stuck
#    worker (its epoll_wait held by strace) stops WATCHDOG=1, which comes back when the
#    worker does; SIGTERM: STOPPING=1.
# 2. A NOTIFY_SOCKET nobody listens on: the server serves as usual (a gone service manager
#    is not a reason to stop).
# 3. Socket activation: the socket systemd-socket-activate passed (LISTEN_FDNAMES listen and
#    metrics) serves a real client through a connector, with two workers sharing it, and
#    the metrics socket answers /healthz; a unix socket passed while --listen is TCP is
#    refused with one line naming ListenStream= and --listen.
# 4. mtls ca serve and mtls agent: READY=1 with a STATUS=, STOPPING=1 at SIGTERM; ca serve
#    on the sockets systemd passed (the API and the plain port).
set -euo pipefail
# the server of part 1 lives through every case of it (a minute under a sanitizer)
BG_LIMIT=${BG_LIMIT:-150}
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

command -v python3 >/dev/null || _lib_die "python3 not found in PATH"
command -v systemd-socket-activate >/dev/null || _lib_die "systemd-socket-activate not found"
command -v strace >/dev/null || _lib_die "strace not found in PATH"

C=$CERTS
W=$TMP/w
mkdir -m 700 -- "$W"
WD_USEC=4000000 # WATCHDOG_USEC: WATCHDOG=1 expected every 2 s, never 4 s apart

# The service manager's end: each datagram a line "MONOTONIC_SECONDS FIELD|FIELD|...".
cat >"$W/listen.py" <<'EOF'
import socket, sys, time
path, out = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
with open(out, "a", buffering=1) as f:
    while True:
        data = s.recv(65536)
        f.write("%.3f %s\n" % (time.monotonic(), data.decode("utf-8", "replace").replace("\n", "|")))
EOF

# notify_listener NAME : a NOTIFY_SOCKET at $W/NAME.sock recording into $W/NAME.msgs
notify_listener() {
	start_bg "$W/$1.py.log" python3 "$W/listen.py" "$W/$1.sock" "$W/$1.msgs"
	: >"$W/$1.msgs"
	local n=$((READY_LIMIT * 20))
	while [ ! -S "$W/$1.sock" ] && [ "$n" -gt 0 ]; do
		sleep 0.05
		n=$((n - 1))
	done
	[ -S "$W/$1.sock" ] || _lib_die "(setup) the notify listener did not start: $(cat -- "$W/$1.py.log")"
}
# msgs FILE : the messages without their time stamps
msgs() { cut -d' ' -f2- -- "$1"; }
# count FILE PREFIX : how many messages start with PREFIX
count() { count_lines "$(msgs "$1")" "$2"; }
# wait_count FILE PREFIX N SECONDS : wait until N messages start with PREFIX
wait_count() {
	local n=$(($4 * 20))
	while [ "$(count "$1" "$2")" -lt "$3" ] && [ "$n" -gt 0 ]; do
		sleep 0.05
		n=$((n - 1))
	done
	[ "$(count "$1" "$2")" -ge "$3" ]
}
# last_other FILE N : the N-th last message that is not WATCHDOG=1 (1: the last)
last_other() { msgs "$1" | grep -v '^WATCHDOG=1$' | tail -n "$2" | head -n 1; }
# under_manager NAME CMD... : CMD with NOTIFY_SOCKET $W/NAME.sock, WATCHDOG_USEC and a
# WATCHDOG_PID of its own (sh execs it: the pid stays), in the background (BG_PID)
under_manager() {
	local name=$1
	shift
	start_bg "$W/$name.log" env NOTIFY_SOCKET="$W/$name.sock" WATCHDOG_USEC=$WD_USEC \
		sh -c 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"' sh "$@"
}

start_backend "$W/be.log" --mode echo
cp -- "$C/server-chain.pem" "$W/srv-chain.pem"
# the options of every server here but --cert
SRV=(--target "127.0.0.1:$BE_PORT" --key "$C/server.key" --ca "$C/ca.pem"
	--allow-uri spiffe://test.mtls/ns/prod/sa/app1 --watch-interval 0 --drain-timeout 1s
	--log-format json)

# connector LOG SERVER_PORT : a connector with the client certificate; sets CPORT
connector() {
	start_bg "$1" "$MTLS" connector --listen 127.0.0.1:0 --log-format json \
		--server "127.0.0.1:$2" --server-name localhost --cert "$C/client-chain.pem" \
		--key "$C/client.key" --ca "$C/ca.pem"
	wait_for_line "$1" '"event":"listening"' "$READY_LIMIT" "$BG_PID" ||
		_lib_die "(setup) the connector did not start: $(cat -- "$1")"
	CPORT=$(_daemon_port "$1" listening)
}
# exchange PORT TEXT : a line through PORT and back ("" if refused)
exchange() {
	local fd line=""
	exec {fd}<>"/dev/tcp/127.0.0.1/$1" || return 0
	printf '%s\n' "$2" >&"$fd"
	IFS= read -r -t 10 line <&"$fd" || true
	exec {fd}>&-
	printf '%s' "$line"
}

# ==========================================================================================
echo "# 1. mtls server under a service manager"

notify_listener srv
under_manager srv "$MTLS" server --listen 127.0.0.1:0 --workers 2 --cert "$W/srv-chain.pem" \
	"${SRV[@]}"
SRV_BG=$BG_PID
p=()
wait_count "$W/srv.msgs" READY=1 1 "$READY_LIMIT" || p+=("no READY=1 within $READY_LIMIT s")
ready=$(msgs "$W/srv.msgs" | grep -m1 '^READY=1' || true)
port=$(sed -n 's/.*STATUS=listening on 127\.0\.0\.1:\([0-9][0-9]*\) → .*/\1/p' <<<"$ready")
pid=$(sed -n 's/.*MAINPID=\([0-9][0-9]*\).*/\1/p' <<<"$ready")
[[ $ready == *"→ 127.0.0.1:$BE_PORT; 0 connections"* ]] ||
	p+=("READY=1's STATUS= does not name the target and connections: '$ready'")
[ -n "$pid" ] && [ "$pid" = "$(daemon_pid "$W/srv.log")" ] ||
	p+=("MAINPID '$pid' is not the daemon's pid $(daemon_pid "$W/srv.log")")
# the port of READY=1 accepts at once: a client through a connector gets its line back
if [ -n "$port" ]; then
	connector "$W/con1.log" "$port"
	got=$(exchange "$CPORT" hello)
	[ "$got" = hello ] || p+=("a client through the port of READY=1 got '$got', not 'hello'")
else
	p+=("no port in READY=1's STATUS=")
fi
verdict "READY=1 once the port accepts: MAINPID=, STATUS=listening on the port → target" \
	"${p[@]+"${p[@]}"}" -- "messages: $(msgs "$W/srv.msgs" | grep -v WATCHDOG)" \
	"$(tail -n 5 "$W/srv.log")"
PID=$(daemon_pid "$W/srv.log")

# hup LOG EVENT : SIGHUP the daemon, wait for the next READY=1 and for EVENT in LOG
hup() {
	local before
	before=$(count "$W/srv.msgs" READY=1)
	kill -HUP "$PID"
	wait_count "$W/srv.msgs" READY=1 $((before + 1)) "$READY_LIMIT" || true
}
p=()
hup
rel=$(last_other "$W/srv.msgs" 2)
rdy=$(last_other "$W/srv.msgs" 1)
[[ $rel =~ ^RELOADING=1\|MONOTONIC_USEC=[0-9]+$ ]] ||
	p+=("before the reload's READY=1: '$rel', not RELOADING=1|MONOTONIC_USEC=N")
[[ $rdy == "READY=1|MAINPID=$PID|STATUS="*"last reload (SIGHUP) at "*": ok" ]] ||
	p+=("after the reload: '$rdy', not READY=1 with the reload's result ok")
verdict "SIGHUP: RELOADING=1 with MONOTONIC_USEC=, then READY=1 with STATUS= the result" \
	"${p[@]+"${p[@]}"}" -- "messages: $(msgs "$W/srv.msgs" | grep -v WATCHDOG)"

p=()
echo "not a certificate" >"$W/srv-chain.pem"
hup
rel=$(last_other "$W/srv.msgs" 2)
rdy=$(last_other "$W/srv.msgs" 1)
[[ $rel == RELOADING=1* ]] || p+=("before the failed reload's READY=1: '$rel'")
[[ $rdy == "READY=1|"*"STATUS="*"last reload (SIGHUP) at "*" FAILED, the previous configuration stays: "* ]] ||
	p+=("after the failed reload: '$rdy'")
got=$(exchange "$CPORT" still)
[ "$got" = still ] || p+=("after the failed reload a client got '$got', not 'still'")
verdict "a failed reload: READY=1 with STATUS= saying it failed and the previous configuration stays (it serves)" \
	"${p[@]+"${p[@]}"}" -- "messages: $(msgs "$W/srv.msgs" | grep -v WATCHDOG)"

# WATCHDOG=1: at least 5, each within WATCHDOG_USEC of the one before (systemd's deadline),
# and on average no more often than every WATCHDOG_USEC/2 (not at every turn of the loop; a
# late tick may be followed by an early one, so the average, not each gap)
p=()
wait_count "$W/srv.msgs" WATCHDOG=1 5 $((WD_USEC * 5 / 1000000 + READY_LIMIT)) ||
	p+=("fewer than 5 WATCHDOG=1: $(count "$W/srv.msgs" WATCHDOG=1)")
gaps=$(awk '$2 == "WATCHDOG=1" { if (t != "") printf "%.2f ", $1 - t; t = $1 }' "$W/srv.msgs")
bad=$(awk -v max="$WD_USEC" '$2 == "WATCHDOG=1" {
	if (t != "" && ($1 - t) * 1e6 >= max) print $1 - t; t = $1 }' "$W/srv.msgs")
[ -z "$bad" ] || p+=("WATCHDOG=1 gaps of WATCHDOG_USEC or more: $bad")
flood=$(awk -v half="$WD_USEC" '$2 == "WATCHDOG=1" { if (n++ == 0) first = $1; last = $1 }
	END { if (n - 1 > (last - first) * 1e6 / (half / 2) + 1) print n " in " last - first " s" }' \
	"$W/srv.msgs")
[ -z "$flood" ] || p+=("WATCHDOG=1 more often than every WATCHDOG_USEC/2: $flood")
verdict "WATCHDOG=1 at the WATCHDOG_USEC/2 cadence (gaps: $gaps)" "${p[@]+"${p[@]}"}"

# a stuck worker: strace holds every epoll_wait of the threads other than the main one (the
# workers' loops; the log writer and the OCSP thread wait on condition variables)
p=()
tids=()
for t in /proc/"$PID"/task/*; do
	t=${t##*/}
	[ "$t" = "$PID" ] || tids+=(-p "$t")
done
start_bg "$W/strace.log" strace -qq -o "$W/strace.out" -e trace=epoll_wait,epoll_pwait \
	-e inject=epoll_wait,epoll_pwait:delay_enter=60s "${tids[@]}"
STRACE_BG=$BG_PID
if wait_for_line "$W/srv.log" '"event":"watchdog_withheld"' 30 "$PID"; then
	sleep 1 # a WATCHDOG=1 sent just before the line may still be on its way
	before=$(count "$W/srv.msgs" WATCHDOG=1)
	sleep $((WD_USEC * 2 / 1000000))
	after=$(count "$W/srv.msgs" WATCHDOG=1)
	[ "$after" = "$before" ] ||
		p+=("$((after - before)) WATCHDOG=1 sent while a worker was stuck")
	[ "$(count "$W/srv.msgs" 'STOPPING=1')" = 0 ] || p+=("STOPPING=1 while stuck")
else
	p+=("no watchdog_withheld in 30 s with the workers held by strace: $(cat -- "$W/strace.log")")
fi
stop_bg "$STRACE_BG" # detaches: the workers run again
before=$(count "$W/srv.msgs" WATCHDOG=1)
wait_for_line "$W/srv.log" '"event":"watchdog_resumed"' 30 "$PID" ||
	p+=("no watchdog_resumed once the workers ran again")
wait_count "$W/srv.msgs" WATCHDOG=1 $((before + 1)) $((WD_USEC / 1000000 + READY_LIMIT)) ||
	p+=("WATCHDOG=1 did not come back after the workers ran again")
verdict "a stuck worker stops WATCHDOG=1 (systemd would restart the service); it comes back with the worker" \
	"${p[@]+"${p[@]}"}" -- "$(grep -F watchdog "$W/srv.log" || true)"

p=()
kill -TERM "$PID"
wait_exit "$SRV_BG" 20
[ "$EXIT_RC" = 0 ] || p+=("exit status $EXIT_RC after SIGTERM")
stopping=$(msgs "$W/srv.msgs" | grep -m1 '^STOPPING=1' || true)
[[ $stopping == "STOPPING=1|STATUS=draining"* ]] || p+=("no STOPPING=1 with a draining STATUS=: '$stopping'")
verdict "SIGTERM: STOPPING=1 when the drain begins" "${p[@]+"${p[@]}"}" -- \
	"last messages: $(msgs "$W/srv.msgs" | tail -n 3)"

# ==========================================================================================
echo "# 2. a NOTIFY_SOCKET nobody listens on"

p=()
start_bg "$W/gone.log" env NOTIFY_SOCKET="$W/nobody.sock" WATCHDOG_USEC=$WD_USEC \
	"$MTLS" server --listen 127.0.0.1:0 --workers 1 --cert "$C/server-chain.pem" "${SRV[@]}"
GONE_BG=$BG_PID
if wait_for_line "$W/gone.log" '"event":"listening"' "$READY_LIMIT" "$GONE_BG"; then
	connector "$W/con2.log" "$(_daemon_port "$W/gone.log" listening)"
	got=$(exchange "$CPORT" alone)
	[ "$got" = alone ] || p+=("a client got '$got', not 'alone'")
	# (the absence read once the server has stopped: the readiness and watchdog messages
	# are sent after "listening", and the log thread writes a line after it is queued)
	stop_bg "$GONE_BG"
	grep -qiE 'notify|watchdog' "$W/gone.log" && p+=("the log speaks of it: $(grep -iE 'notify|watchdog' "$W/gone.log")")
else
	p+=("the server did not start: $(cat -- "$W/gone.log")")
fi
verdict "no service manager at NOTIFY_SOCKET: the server serves, says nothing of it" "${p[@]+"${p[@]}"}"
stop_bg "$GONE_BG"

# ==========================================================================================
echo "# 3. socket activation"

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# activate LOG ARGS... : systemd-socket-activate ARGS on ports picked free (ARGS name them
# @P1@ and @P2@), retried on a collision; sets ACT_BG, P1, P2
activate() {
	local log=$1 tries=10 a args nl
	shift
	while :; do
		P1=$(free_port)
		P2=$(free_port)
		args=()
		nl=0
		for a in "$@"; do
			a=${a//@P1@/$P1}
			args+=("${a//@P2@/$P2}")
			# the index after the last -l's address
			[ "${#args[@]}" -ge 2 ] && [ "${args[-2]}" = -l ] && nl=${#args[@]}
		done
		start_bg "$log" systemd-socket-activate "${args[@]}"
		ACT_BG=$BG_PID
		# its "Listening on ADDR as FD." line for the last -l: all of them bound
		wait_for_line "$log" "^Listening on ${args[$((nl - 1))]} as [0-9]+\\.\$" \
			"$READY_LIMIT" "$ACT_BG" && return 0
		stop_bg "$ACT_BG"
		tries=$((tries - 1))
		[ "$tries" -gt 0 ] || _lib_die "(setup) systemd-socket-activate did not listen: $(cat -- "$log")"
	done
}

p=()
activate "$W/act.log" -l 127.0.0.1:@P1@ -l 127.0.0.1:@P2@ --fdname=listen:metrics \
	"$MTLS" server --listen 127.0.0.1:@P1@ --metrics 127.0.0.1:@P2@ --workers 2 \
	--cert "$C/server-chain.pem" "${SRV[@]}"
# the daemon starts at the first connection, which waits in the passed socket's backlog
connector "$W/con3.log" "$P1"
got=$(exchange "$CPORT" activated)
[ "$got" = activated ] || p+=("a client through the activated server got '$got', not 'activated'")
got=$(exchange "$CPORT" again)
[ "$got" = again ] || p+=("a second client got '$got', not 'again'")
# the log is written by a thread of its own: the line may come after the exchanges
wait_for_line "$W/act.log" "\"event\":\"socket_activation\",\"address\":\"127\\.0\\.0\\.1:$P1\"" 10 ||
	p+=("no socket_activation line for 127.0.0.1:$P1")
h=$(curl -s --max-time 5 "http://127.0.0.1:$P2/healthz" || true)
[ "$h" = ok ] || p+=("/healthz on the passed metrics socket: '$h'")
wait_for_line "$W/act.log" '"event":"metrics_listening"' 10 || p+=("no metrics_listening line")
verdict "socket activation: the passed sockets (listen, metrics) serve a real client and /healthz" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 8 "$W/act.log")"
stop_bg "$ACT_BG"

p=()
LP=$(free_port)
start_bg "$W/mis.log" systemd-socket-activate -l "$W/mis.sock" \
	"$MTLS" server --listen "127.0.0.1:$LP" --workers 1 --cert "$C/server-chain.pem" "${SRV[@]}"
MIS_BG=$BG_PID
wait_for_line "$W/mis.log" '^Listening on ' "$READY_LIMIT" "$MIS_BG" ||
	_lib_die "(setup) systemd-socket-activate did not listen: $(cat -- "$W/mis.log")"
python3 -c 'import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])' \
	"$W/mis.sock" 2>/dev/null || true
wait_exit "$MIS_BG" 20
line=$(grep '^mtls server: ' "$W/mis.log" || true)
[ "$EXIT_RC" != 0 ] && [ "$EXIT_RC" != timeout ] || p+=("exit status $EXIT_RC, not a refusal")
[[ $line == *"ListenStream="*"unix:$W/mis.sock"*"--listen 127.0.0.1:$LP"* ]] ||
	p+=("the refusal does not name the passed socket, ListenStream= and --listen: '$line'")
[ "$(grep -c '^mtls server: ' "$W/mis.log")" = 1 ] || p+=("not one line")
grep -qF '"event":"listening"' "$W/mis.log" && p+=("it listened anyway")
verdict "a unix socket passed, --listen TCP: refused in one line naming ListenStream= and --listen" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 5 "$W/mis.log")"

# ==========================================================================================
echo "# 4. mtls ca serve and mtls agent"

D=$W/ca
"$MTLS" ca init --dir "$D" >/dev/null 2>&1 || _lib_die "(setup) mtls ca init"
notify_listener ca
under_manager ca "$MTLS" ca serve --dir "$D" --listen 127.0.0.1:0 --http-listen none \
	--log-format json
CA_BG=$BG_PID
p=()
wait_count "$W/ca.msgs" READY=1 1 "$READY_LIMIT" || p+=("no READY=1")
wait_for_line "$W/ca.log" '"event":"listening"' "$READY_LIMIT" "$CA_BG" || true
AP=$(sed -n 's/.*"event":"listening".*"address":"[^"]*:\([0-9][0-9]*\)".*/\1/p;T;q' "$W/ca.log")
CA_PID=$(sed -n 's/.*"event":"listening".*"pid":\([0-9][0-9]*\).*/\1/p;T;q' "$W/ca.log")
ready=$(msgs "$W/ca.msgs" | grep -m1 '^READY=1' || true)
[[ $ready == "READY=1|MAINPID=$CA_PID|STATUS=API on 127.0.0.1:$AP (https://127.0.0.1:$AP)" ]] ||
	p+=("READY=1: '$ready'")
verdict "mtls ca serve: READY=1 with STATUS= the API's address" "${p[@]+"${p[@]}"}" -- \
	"$(tail -n 3 "$W/ca.log")"

tok=$("$MTLS" ca token --dir "$D" --profile peer --dns localhost 2>/dev/null) ||
	_lib_die "(setup) mtls ca token"
MTLS_TOKEN=$tok run "$MTLS" enroll --dir "$W/svc"
[ "$RC" = 0 ] || _lib_die "(setup) mtls enroll: $ERR"
notify_listener agent
under_manager agent "$MTLS" agent --dir "$W/svc" --log-format json
AGENT_BG=$BG_PID
p=()
wait_count "$W/agent.msgs" READY=1 1 "$READY_LIMIT" || p+=("no READY=1")
ready=$(msgs "$W/agent.msgs" | grep -m1 '^READY=1' || true)
serial=$(openssl x509 -in "$W/svc/cert.pem" -noout -serial | sed 's/^serial=//')
[[ $ready == "READY=1|MAINPID="*"|STATUS=$W/svc/cert.pem serial "*"valid until "*"; renews at "* ]] ||
	p+=("READY=1: '$ready'")
[[ ${ready,,} == *"${serial,,}"* ]] || p+=("READY=1 does not name serial $serial")
wait_count "$W/agent.msgs" WATCHDOG=1 1 "$READY_LIMIT" || p+=("no WATCHDOG=1")
APID=$(sed -n 's/.*"event":"agent_started".*"pid":\([0-9][0-9]*\).*/\1/p;T;q' "$W/agent.log")
[ -n "$APID" ] && kill -TERM "$APID"
wait_exit "$AGENT_BG" 20
[ "$(count "$W/agent.msgs" STOPPING=1)" = 1 ] || p+=("no STOPPING=1 at SIGTERM")
verdict "mtls agent: READY=1 with STATUS= the certificate and its renewal, WATCHDOG=1, STOPPING=1" \
	"${p[@]+"${p[@]}"}" -- "messages: $(msgs "$W/agent.msgs")" "$(tail -n 3 "$W/agent.log")"

p=()
kill -TERM "$CA_PID"
wait_exit "$CA_BG" 20
[ "$(count "$W/ca.msgs" STOPPING=1)" = 1 ] || p+=("no STOPPING=1 at SIGTERM")
verdict "mtls ca serve: STOPPING=1 at SIGTERM" "${p[@]+"${p[@]}"}" -- "messages: $(msgs "$W/ca.msgs")"

# mtls ca serve with both ports passed (FileDescriptorName= listen, http): the plain port
# answers /roots.pem, the API /roots.pem over TLS verified by the CA's root
p=()
activate "$W/ca-act.log" -l 127.0.0.1:@P1@ -l 127.0.0.1:@P2@ --fdname=listen:http \
	"$MTLS" ca serve --dir "$D" --listen 127.0.0.1:@P1@ --http-listen 127.0.0.1:@P2@ \
	--log-format json
roots=$(curl -s --max-time 10 "http://127.0.0.1:$P2/roots.pem" || true)
[ "$roots" = "$(cat -- "$D/root.pem")" ] || p+=("/roots.pem on the passed plain port: '${roots:0:80}'")
roots=$(curl -s --max-time 10 --cacert "$D/root.pem" "https://127.0.0.1:$P1/roots.pem" || true)
[ "$roots" = "$(cat -- "$D/root.pem")" ] || p+=("/roots.pem on the passed API port: '${roots:0:80}'")
verdict "mtls ca serve: the sockets systemd passed (listen, http) serve the API and the plain port" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 5 "$W/ca-act.log")"
stop_bg "$ACT_BG"

finish
