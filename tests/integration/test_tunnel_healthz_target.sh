#!/usr/bin/env bash
# /healthz?target=1 and /readyz?target=1 never stall the metrics HTTP server (review): the
# target check (a TCP connect, up to 2 s) runs off the HTTP thread, with the request
# suspended meanwhile.
#
# 1. a target whose accept queue is full, so that a connect to it hangs: while ?target=1
#    requests wait for their check, /metrics, plain /healthz and /readyz are answered (they
#    complete while every ?target=1 request is still open: an order, not a time); then each
#    ?target=1 request gets 503 "target: unreachable", plain /healthz stays 200.
# 2. requests arriving while a check runs share the next one: 5 requests queued behind a
#    running check cost one more connect, not 5.
# 3. SIGTERM with ?target=1 requests queued: the daemon stops cleanly (the queued requests
#    are answered or closed, nothing is left suspended; exit status 0).
# 4. the target accepting again: ?target=1 answers 200 "target: ok" (/healthz and /readyz).
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

command -v curl >/dev/null || _lib_die "curl not found in PATH"
command -v python3 >/dev/null || _lib_die "python3 not found in PATH"

C=$CERTS

# hung.py PORTFILE GOFILE : a target on 127.0.0.1 whose accept queue is full (listen(0) and
# connections from 127.0.0.2 it does not accept), so a connect from elsewhere hangs: the
# kernel drops the SYN. Checked before the port is written (exit 3 if a connect gets
# through). Once GOFILE exists it accepts everything: the target is up.
cat >"$TMP/hung.py" <<'EOF'
import os, socket, sys, time

portfile, gofile = sys.argv[1], sys.argv[2]
lsn = socket.socket()
lsn.bind(("127.0.0.1", 0))
lsn.listen(0)
port = lsn.getsockname()[1]
held = []
for _ in range(4):
    c = socket.socket()
    c.bind(("127.0.0.2", 0))
    c.setblocking(False)
    try:
        c.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    held.append(c)
time.sleep(0.2)
probe = socket.socket()
probe.bind(("127.0.0.3", 0))
probe.settimeout(1)
try:
    probe.connect(("127.0.0.1", port))
    print("a connect got through: the accept queue is not full", flush=True)
    sys.exit(3)
except socket.timeout:
    pass
probe.close()
with open(portfile + ".tmp", "w") as f:
    f.write("%d\n" % port)
os.rename(portfile + ".tmp", portfile)
while not os.path.exists(gofile):
    time.sleep(0.05)
print("accepting", flush=True)
while True:
    c, _ = lsn.accept()
    c.close()
EOF

# watch.py PORT SEENFILE STOPFILE OUT : the daemon's connects to 127.0.0.1:PORT (from
# 127.0.0.1, in SYN-SENT: a hung target check) from /proc/net/tcp, every 20 ms: writes
# SEENFILE once one is seen, and to OUT at STOPFILE how many different ones were seen and
# the most at once.
cat >"$TMP/watch.py" <<'EOF'
import os, sys, time

port, seenfile, stopfile, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
rem = "0100007F:%04X" % port
seen, most = set(), 0
while not os.path.exists(stopfile):
    now = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            x = line.split()
            if x[2] == rem and x[3] == "02" and x[1].startswith("0100007F:"):
                now.add(x[1])
    if now and not seen:
        open(seenfile, "w").close()
    seen |= now
    most = max(most, len(now))
    if not os.path.exists(seenfile + ".ready"):
        open(seenfile + ".ready", "w").close()  # watching: the first scan is done
    time.sleep(0.02)
with open(out, "w") as f:
    f.write("%d %d\n" % (len(seen), most))
EOF

start_bg "$TMP/hung.log" python3 "$TMP/hung.py" "$TMP/hung.port" "$TMP/hung.go"
HUNG_PID=$BG_PID
n=$((READY_LIMIT * 20))
while [ ! -s "$TMP/hung.port" ] && kill -0 "$HUNG_PID" 2>/dev/null && [ "$n" -gt 0 ]; do
	sleep 0.05
	n=$((n - 1))
done
[ -s "$TMP/hung.port" ] || _lib_die "(setup) no hung target: $(cat "$TMP/hung.log")"
HP=$(cat "$TMP/hung.port")

SRV=(--target "127.0.0.1:$HP" --cert "$C/server-chain.pem" --key "$C/server.key"
	--ca "$C/ca.pem" --allow-uri spiffe://test.mtls/ns/prod/sa/app1 --metrics 127.0.0.1:0
	--drain-timeout 1s)

# ask NAME PATH : curl http://127.0.0.1:$SRV_METRICS/PATH in the background: the body in
# $TMP/NAME.body, the status in $TMP/NAME.code, written only when the answer is complete
# (empty while the request waits); the pid in ASK_PID.
ask() {
	start_bg "$TMP/$1.code" curl -s --max-time 30 -o "$TMP/$1.body" -w '%{http_code}' \
		"http://127.0.0.1:$SRV_METRICS$2"
	ASK_PID=$BG_PID
}

# watch_start TAG / watch_stop TAG : the target checks seen meanwhile, into $TMP/TAG.watch
watch_start() {
	rm -f -- "$TMP/$1.seen" "$TMP/$1.seen.ready" "$TMP/$1.stop"
	start_bg "$TMP/$1.watchlog" python3 "$TMP/watch.py" "$HP" "$TMP/$1.seen" "$TMP/$1.stop" \
		"$TMP/$1.watch"
	WATCH_PID=$BG_PID
	# watching before anything is asked (a loaded machine starts python slowly, and a
	# check lasts 2 s at most)
	wait_file "$TMP/$1.seen.ready" || _lib_die "(setup) the watcher did not start"
}
watch_stop() {
	touch -- "$TMP/$1.stop"
	wait_exit "$WATCH_PID" 10
}

# wait_file FILE : until FILE exists (within READY_LIMIT); false if it does not.
wait_file() {
	local n=$((READY_LIMIT * 20))
	while [ ! -e "$1" ] && [ "$n" -gt 0 ]; do
		sleep 0.05
		n=$((n - 1))
	done
	[ -e "$1" ]
}

# ==========================================================================================
echo "# 1. a hanging target check does not stall /metrics, /healthz, /readyz"

start_tunnel_server "$TMP/srv.log" "${SRV[@]}"
watch_start w1
T=()
ask t1 "/healthz?target=1"
T+=("$ASK_PID")
# a check is under way (its connect hangs): the HTTP thread is waited on now, if ever; the
# requests that come now wait for it and for the next check
wait_file "$TMP/w1.seen" || _lib_die "(setup) no target check seen: $(cat "$TMP/srv.log")"
for i in 2 3; do
	ask "t$i" "/healthz?target=1"
	T+=("$ASK_PID")
done
ask t4 "/readyz?target=1"
T+=("$ASK_PID")
p=()
for x in metrics:/metrics healthz:/healthz readyz:/readyz; do
	code=$(curl -s --max-time 10 -o "$TMP/${x%%:*}.body" -w '%{http_code}' \
		"http://127.0.0.1:$SRV_METRICS${x#*:}" || true)
	[ "$code" = 200 ] || p+=("${x#*:} while a target check hangs: $code")
done
grep -q '^mtls_connections_open{' "$TMP/metrics.body" || p+=("/metrics: no mtls_connections_open")
# the ?target=1 requests that came during the first check still wait (for the next one):
# the answers above did not wait for a check. (The first request's own check may have ended
# by now on a loaded machine: it lasts 2 s at most. Were the HTTP thread held by the checks,
# /metrics would come after all four, each with its own check.)
for i in 2 3 4; do
	[ ! -s "$TMP/t$i.code" ] || p+=("?target=1 request $i answered before /metrics, /healthz and /readyz: $(cat "$TMP/t$i.code")")
done
verdict "/metrics, /healthz and /readyz answer while ?target=1 requests wait on a hung target" \
	"${p[@]+"${p[@]}"}"

p=()
for i in 1 2 3 4; do
	wait_exit "${T[$((i - 1))]}" 30
	code=$(cat "$TMP/t$i.code")
	[ "$code" = 503 ] && grep -q '^target: unreachable: .*no connection within 2000 ms' "$TMP/t$i.body" ||
		p+=("?target=1 request $i: $code $(cat "$TMP/t$i.body" 2>/dev/null)")
done
head -n1 "$TMP/t4.body" | grep -q '^ready$' || p+=("/readyz?target=1: $(cat "$TMP/t4.body")")
code=$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$SRV_METRICS/healthz" || true)
[ "$code" = 200 ] || p+=("plain /healthz with the target down: $code")
verdict "?target=1 with the target hanging: 503 target: unreachable; plain /healthz 200" \
	"${p[@]+"${p[@]}"}"
watch_stop w1

# ==========================================================================================
echo "# 2. requests arriving during a check share the next one"

watch_start w2
ask c0 "/healthz?target=1"
C0=$ASK_PID
wait_file "$TMP/w2.seen" || _lib_die "(setup) no target check seen"
CS=()
for i in 1 2 3 4 5; do
	ask "c$i" "/healthz?target=1"
	CS+=("$ASK_PID")
done
# the 5 are queued once /metrics (asked after them, on the same single thread) answers
curl -s --max-time 10 -o /dev/null "http://127.0.0.1:$SRV_METRICS/metrics" || true
p=()
wait_exit "$C0" 30
for i in 1 2 3 4 5; do
	wait_exit "${CS[$((i - 1))]}" 30
	[ "$(cat "$TMP/c$i.code")" = 503 ] || p+=("request $i: $(cat "$TMP/c$i.code")")
done
watch_stop w2
read -r checks most <"$TMP/w2.watch"
# the first request's check, and one for the 5 (two if some of them arrived only after the
# first check ended: still fewer than one each; one each, as a blocking server does, is 6)
[ "$checks" -le 3 ] || p+=("$checks target checks for 6 requests, expected 3 at most")
[ "$most" -le 1 ] || p+=("$most target checks at once, expected 1")
verdict "6 ?target=1 requests, 5 of them while a check runs: $checks checks, one at a time" \
	"${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# 3. SIGTERM with ?target=1 requests queued"

watch_start w3
ask s0 "/healthz?target=1"
S0=$ASK_PID
wait_file "$TMP/w3.seen" || _lib_die "(setup) no target check seen"
ask s1 "/healthz?target=1"
S1=$ASK_PID
curl -s --max-time 10 -o /dev/null "http://127.0.0.1:$SRV_METRICS/metrics" || true
kill -TERM "$SRV_REAL"
wait_exit "$SRV_PID" 30
p=()
[ "$EXIT_RC" = 0 ] || p+=("the server's exit status: $EXIT_RC")
wait_exit "$S0" 30
wait_exit "$S1" 30
for s in s0 s1; do
	code=$(cat "$TMP/$s.code")
	case $code in
	503 | 000) ;;
	*) p+=("$s: $code $(cat "$TMP/$s.body" 2>/dev/null)") ;;
	esac
done
verdict "SIGTERM with ?target=1 requests queued: a clean stop" "${p[@]+"${p[@]}"}" \
	-- "$(tail -n 5 "$TMP/srv.log")"
watch_stop w3

# ==========================================================================================
echo "# 4. the target up"

touch "$TMP/hung.go"
wait_for_line "$TMP/hung.log" '^accepting' "$READY_LIMIT" "$HUNG_PID" ||
	_lib_die "(setup) the target does not accept: $(cat "$TMP/hung.log")"
start_tunnel_server "$TMP/srv2.log" "${SRV[@]}"
p=()
for x in healthz readyz; do
	code=$(curl -s --max-time 10 -o "$TMP/up.body" -w '%{http_code}' \
		"http://127.0.0.1:$SRV_METRICS/$x?target=1" || true)
	[ "$code" = 200 ] && grep -q '^target: ok$' "$TMP/up.body" ||
		p+=("/$x?target=1 with the target up: $code $(cat "$TMP/up.body")")
done
code=$(curl -s --max-time 10 -o "$TMP/up0.body" -w '%{http_code}' \
	"http://127.0.0.1:$SRV_METRICS/healthz?target=0" || true)
[ "$code" = 200 ] && ! grep -q '^target' "$TMP/up0.body" || p+=("?target=0: $code $(cat "$TMP/up0.body")")
code=$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' -X POST \
	"http://127.0.0.1:$SRV_METRICS/healthz?target=1" || true)
[ "$code" = 405 ] || p+=("POST ?target=1: $code, expected 405")
verdict "the target up: ?target=1 200 target: ok" "${p[@]+"${p[@]}"}"
stop_bg "$SRV_PID"
stop_bg "$HUNG_PID"
finish
