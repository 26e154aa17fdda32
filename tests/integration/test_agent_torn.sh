#!/usr/bin/env bash
# mtls agent never copies, nor tells its service of, a key and certificate that do not belong
# together while another program (mtls renew by hand) replaces them:
#   - a replacement held between its two renames (the new chain in place, the old key still
#     there, the directory's flock held as mtls renew holds it): the agent takes nothing in,
#     writes no copy and runs no hook while it lasts; once the key follows, one hook run
#     ("changed,files") with the new serial and copies that match;
#   - 20 `mtls renew --force` back to back while the agent looks every second: every hook run
#     names the serial of the certificate copied, and the copied key matches it; every
#     renewal succeeds (the agent never holds the renewal's lock against it);
#   - a key that does not match, with no writer: logged, nothing copied, no hook.
# Each hook run records what it was told (MTLS_EVENT, MTLS_SERIAL) and what it finds in the
# copies (their serial, whether the key matches): the agent writes no copy while a hook runs.
set -euo pipefail
BG_LIMIT=${BG_LIMIT:-200}
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

# setup_die WHAT [DETAILS...] : the setup failed (not a case): say so and exit 1.
setup_die() {
	echo "${0##*/}: setup: $1" >&2
	shift
	[ $# -eq 0 ] || printf '%s\n' "$@" | sed 's/^/    | /' >&2
	exit 1
}

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca

# count FILE EVENT : how many log lines of FILE are EVENT.
count() { grep -c -F "\"event\":\"$2\"" "$1" 2>/dev/null || true; }
# wait_count FILE EVENT N PID : wait (bounded) until FILE has N lines of EVENT.
wait_count() {
	local i
	for ((i = 0; i < 60 * 20; i++)); do
		[ "$(count "$1" "$2")" -ge "$3" ] && return 0
		kill -0 "$4" 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}
# serial FILE : the serial of the first certificate of FILE (upper-case hex).
serial() { openssl x509 -in "$1" -noout -serial | sed 's/^serial=//'; }
# pair CERT KEY : "match" if KEY belongs to the certificate of CERT, else "MISMATCH".
pair() {
	if [ "$(openssl x509 -in "$1" -noout -pubkey 2>/dev/null)" = \
		"$(openssl pkey -in "$2" -pubout 2>/dev/null)" ]; then
		echo match
	else
		echo MISMATCH
	fi
}
# marks_problems FROM : what is wrong with the hook's lines from line FROM on (each:
# "EVENT SERIAL COPIED-SERIAL match|MISMATCH").
marks_problems() {
	local ev s c m
	tail -n "+$1" "$W/marks" 2>/dev/null | while read -r ev s c m; do
		[ "$s" = "$c" ] || echo "hook ($ev) told serial $s while the copy holds $c"
		[ "$m" = match ] || echo "hook ($ev): the copied key does not match the copied certificate"
	done
}
marks() { wc -l <"$W/marks" 2>/dev/null || echo 0; }

"$MTLS" ca init --dir "$D" >/dev/null 2>&1 || setup_die "mtls ca init failed"
start_bg "$W/serve.log" "$MTLS" ca serve --dir "$D" --listen 127.0.0.1:0 --http-listen none
SERVE_PID=$BG_PID
wait_for_line "$W/serve.log" '"event":"listening"' "$READY_LIMIT" "$SERVE_PID" ||
	setup_die "mtls ca serve did not start" "$(cat -- "$W/serve.log")"
tok=$("$MTLS" ca token --dir "$D" --profile peer --dns localhost 2>/dev/null) ||
	setup_die "mtls ca token"
LAST_CMD="mtls enroll --dir $W/svc"
MTLS_TOKEN=$tok run "$MTLS" enroll --dir "$W/svc"
[ "$RC" = 0 ] || setup_die "mtls enroll failed" "$ERR"

mkdir -m 700 -- "$W/app"
cat >"$W/hook.sh" <<'EOF'
c=$(openssl x509 -in "$MTLS_CERT" -noout -serial | sed 's/^serial=//')
if [ "$(openssl x509 -in "$MTLS_CERT" -noout -pubkey)" = "$(openssl pkey -in "$MTLS_KEY" -pubout)" ]; then
	m=match
else
	m=MISMATCH
fi
echo "$MTLS_EVENT $MTLS_SERIAL $c $m" >>"$1"
EOF
# --roots-refresh 1s: the agent looks at its files every second (and logs roots_unchanged
# at debug each time: how the test knows that it looked)
start_bg "$W/agent.log" "$MTLS" agent --log-format json --log-level debug --dir "$W/svc" \
	--cert-out "$W/app/server.crt" --key-out "$W/app/server.key" \
	--exec "sh '$W/hook.sh' '$W/marks'" --roots-refresh 1s
AGENT_BG=$BG_PID
wait_for_line "$W/agent.log" '"event":"agent_started"' "$READY_LIMIT" "$AGENT_BG" ||
	setup_die "mtls agent did not start" "$(cat -- "$W/agent.log")"
# the first copies, told to the hook
wait_count "$W/agent.log" hook_done 1 "$AGENT_BG" ||
	setup_die "no first hook" "$(cat -- "$W/agent.log")"
first=$(serial "$W/svc/cert.pem")
p=()
[ "$(cat "$W/marks")" = "files $first $first match" ] || p+=("the hook's line is '$(cat "$W/marks")'")
verdict "the first copies: one hook run, the serial copied, a matching key" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 3 "$W/agent.log")"

echo "# a replacement held between its two renames"
# the new pair, renewed in a copy of the directory
cp -a -- "$W/svc" "$W/next"
LAST_CMD="mtls renew --dir $W/next --force"
run "$MTLS" renew --dir "$W/next" --force
[ "$RC" = 0 ] || setup_die "mtls renew of the copy" "$ERR"
new=$(serial "$W/next/cert.pem")
hooks=$(count "$W/agent.log" hook_done)
nmarks=$(marks)
# what mtls renew does (renew/fileset.c), stopped between its renames: the directory's lock
# held, the chain renamed into place, then (once released) the key
# shellcheck disable=SC2016 # expanded by that sh
start_bg "$W/writer.log" flock "$W/svc" sh -c \
	'mv -- "$1/next/cert.pem" "$1/svc/cert.pem" && : >"$1/half" &&
	while [ ! -e "$1/release" ]; do sleep 0.05; done && mv -- "$1/next/key.pem" "$1/svc/key.pem"' \
	sh "$W"
WRITER=$BG_PID
for ((i = 0; i < READY_LIMIT * 20; i++)); do
	[ -e "$W/half" ] && break
	sleep 0.05
done
[ -e "$W/half" ] || setup_die "the writer did not start" "$(cat -- "$W/writer.log")"
# three more looks of the agent: at least two whole turns of its loop with the pair torn
looks=$(count "$W/agent.log" roots_unchanged)
wait_count "$W/agent.log" roots_unchanged $((looks + 3)) "$AGENT_BG" ||
	setup_die "the agent stopped looking" "$(tail -n 5 "$W/agent.log")"
# and a one-shot agent (--once) meanwhile: it waits for the key
mkdir -m 700 -- "$W/app2"
start_bg "$W/once.log" "$MTLS" agent --log-format json --log-level debug --dir "$W/svc" --once \
	--cert-out "$W/app2/server.crt" --key-out "$W/app2/server.key"
ONCE_BG=$BG_PID
wait_for_line "$W/once.log" '"event":"files_changing"' "$READY_LIMIT" "$ONCE_BG" || true
p=()
kill -0 "$ONCE_BG" 2>/dev/null || p+=("mtls agent --once did not wait: $(grep -v '"level":"debug"' "$W/once.log" | tail -n 2)")
[ -z "$(ls -A -- "$W/app2")" ] || p+=("--once wrote copies: $(ls -A -- "$W/app2")")
verdict "--once during the torn pair: waits (its start-up recovery waits for the lock), no copies yet" "${p[@]+"${p[@]}"}" -- "$(tail -n 3 "$W/once.log")"
p=()
[ "$(pair "$W/svc/cert.pem" "$W/svc/key.pem")" = MISMATCH ] || p+=("the pair was not torn: the test is wrong")
[ "$(count "$W/agent.log" hook_done)" = "$hooks" ] || p+=("a hook ran while the pair was torn")
mapfile -t mp < <(marks_problems $((nmarks + 1)))
p+=("${mp[@]+"${mp[@]}"}")
[ "$(serial "$W/app/server.crt")" = "$first" ] || p+=("--cert-out holds $(serial "$W/app/server.crt"), not $first")
[ "$(pair "$W/app/server.crt" "$W/app/server.key")" = match ] || p+=("the copies do not match")
[ "$(count "$W/agent.log" cert_changed)" = 0 ] || p+=("the torn certificate was taken in (cert_changed)")
grep -q -F '"event":"files_changing"' "$W/agent.log" || p+=("no files_changing at debug")
verdict "torn pair (chain new, key old, lock held): nothing taken in, no copy, no hook" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 6 "$W/agent.log")" "$(tail -n 2 "$W/marks")"
: >"$W/release"
wait_exit "$WRITER" "$READY_LIMIT"
[ "$EXIT_RC" = 0 ] || setup_die "the writer: $EXIT_RC" "$(cat -- "$W/writer.log")"
wait_exit "$ONCE_BG" "$RUN_LIMIT"
p=()
[ "$EXIT_RC" = 0 ] || p+=("exit $EXIT_RC: $(grep -v '"level":"debug"' "$W/once.log" | tail -n 2)")
[ "$(serial "$W/app2/server.crt" 2>/dev/null)" = "$new" ] || p+=("its --cert-out is not $new")
[ "$(pair "$W/app2/server.crt" "$W/app2/server.key")" = match ] || p+=("its copies do not match")
verdict "--once after the key came: exit 0, copies of the new pair" "${p[@]+"${p[@]}"}" -- "$(tail -n 3 "$W/once.log")"
p=()
wait_count "$W/agent.log" hook_done $((hooks + 1)) "$AGENT_BG" || p+=("no hook after the key came")
# two more looks: no second hook run for the same change
looks=$(count "$W/agent.log" roots_unchanged)
wait_count "$W/agent.log" roots_unchanged $((looks + 2)) "$AGENT_BG" || p+=("the agent stopped looking")
[ "$(count "$W/agent.log" hook_done)" = $((hooks + 1)) ] ||
	p+=("$(($(count "$W/agent.log" hook_done) - hooks)) hook runs, not one")
[ "$(tail -n 1 "$W/marks")" = "changed,files $new $new match" ] ||
	p+=("the hook's line is '$(tail -n 1 "$W/marks")', not 'changed,files $new $new match'")
cmp -s "$W/svc/cert.pem" "$W/app/server.crt" || p+=("--cert-out differs from cert.pem")
cmp -s "$W/svc/key.pem" "$W/app/server.key" || p+=("--key-out differs from key.pem")
verdict "the key in place: one hook run (changed,files) with the new serial, the copies the new pair" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 6 "$W/agent.log")" "$(tail -n 3 "$W/marks")"

echo "# a renewal by another program finished while the agent is between its two looks"
# (the case of the CI rehearsal: the chain read for the leaf before the renewal, the copies
# after it). The agent is held in its roots fetch, between the look that takes the leaf in
# and the one that copies, by stopping the CA service: its ClientHello then waits in the
# service's receive queue. The files are replaced meanwhile, as mtls renew replaces them.
cp -a -- "$W/svc" "$W/next2"
LAST_CMD="mtls renew --dir $W/next2 --force"
run "$MTLS" renew --dir "$W/next2" --force
[ "$RC" = 0 ] || setup_die "mtls renew of the second copy" "$ERR"
new2=$(serial "$W/next2/cert.pem")
AP=$(sed -n 's/.*"event":"listening".*"address":"[^"]*:\([0-9][0-9]*\)".*/\1/p;T;q' "$W/serve.log")
hooks=$(count "$W/agent.log" hook_done)
CA_PID=$(pgrep -P "$SERVE_PID") # start_bg's pid is timeout(1)'s
[ -n "$CA_PID" ] || setup_die "no mtls ca serve process"
kill -STOP "$CA_PID"
# held: a connection to the service with bytes it has not read
held=
for ((i = 0; i < READY_LIMIT * 20; i++)); do
	if ss -Htn state established "( sport = :$AP )" | awk '$1 > 0 { f = 1 } END { exit !f }'; then
		held=1
		break
	fi
	sleep 0.05
done
if [ -z "$held" ]; then
	kill -CONT "$CA_PID"
	setup_die "the agent did not reach its roots fetch" "$(tail -n 5 "$W/agent.log")"
fi
# shellcheck disable=SC2016 # expanded by that sh
flock "$W/svc" sh -c 'mv -- "$1/next2/cert.pem" "$1/svc/cert.pem" && mv -- "$1/next2/key.pem" "$1/svc/key.pem"' sh "$W" ||
	setup_die "replacing the pair"
kill -CONT "$CA_PID"
p=()
wait_count "$W/agent.log" hook_done $((hooks + 1)) "$AGENT_BG" || p+=("no hook after the change")
looks=$(count "$W/agent.log" roots_unchanged)
wait_count "$W/agent.log" roots_unchanged $((looks + 2)) "$AGENT_BG" || p+=("the agent stopped looking")
[ "$(count "$W/agent.log" hook_done)" = $((hooks + 1)) ] ||
	p+=("$(($(count "$W/agent.log" hook_done) - hooks)) hook runs, not one")
[ "$(tail -n 1 "$W/marks")" = "changed,files $new2 $new2 match" ] ||
	p+=("the hook's line is '$(tail -n 1 "$W/marks")', not 'changed,files $new2 $new2 match'")
mapfile -t mp < <(marks_problems $((nmarks + 1)))
p+=("${mp[@]+"${mp[@]}"}")
verdict "a renewal between the agent's looks: one hook run (changed,files) naming the pair it copied" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 6 "$W/agent.log")" "$(tail -n 3 "$W/marks")"

echo "# mtls renew --force 20 times while the agent looks"
nmarks=$(marks)
fails=()
for ((i = 1; i <= 20; i++)); do
	LAST_CMD="mtls renew --dir $W/svc --force"
	run "$MTLS" renew --dir "$W/svc" --force
	[ "$RC" = 0 ] || fails+=("renewal $i: exit $RC: $ERR")
done
last=$(serial "$W/svc/cert.pem")
p=("${fails[@]+"${fails[@]}"}")
# the agent takes the last one in (it looks at least every second)
for ((i = 0; i < READY_LIMIT * 20; i++)); do
	[ "$(tail -n 1 "$W/marks" | cut -d' ' -f2)" = "$last" ] && break
	kill -0 "$AGENT_BG" 2>/dev/null || break
	sleep 0.05
done
[ "$(tail -n 1 "$W/marks" | cut -d' ' -f2)" = "$last" ] ||
	p+=("the last hook run names $(tail -n 1 "$W/marks" | cut -d' ' -f2), not the last serial $last")
mapfile -t mp < <(marks_problems $((nmarks + 1)))
p+=("${mp[@]+"${mp[@]}"}")
[ "$(marks)" -gt "$nmarks" ] || p+=("no hook ran")
cmp -s "$W/svc/cert.pem" "$W/app/server.crt" || p+=("--cert-out differs from cert.pem")
cmp -s "$W/svc/key.pem" "$W/app/server.key" || p+=("--key-out differs from key.pem")
verdict "20 renewals by hand: all succeed; every hook run ($(($(marks) - nmarks))) names the serial copied, with its key" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n +"$((nmarks + 1))" "$W/marks")" \
	"$(grep -F -e copy_failed -e hook_done "$W/agent.log" | tail -n 4)"

echo "# a key that does not belong, no writer"
hooks=$(count "$W/agent.log" hook_done)
held=$(serial "$W/app/server.crt")
cp -- "$W/svc/key.pem" "$W/key.keep"
"$MTLS" ca init --dir "$W/other" >/dev/null 2>&1 || setup_die "a second CA"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$W/stray.pem" 2>/dev/null ||
	setup_die "openssl genpkey"
chmod 600 -- "$W/stray.pem"
mv -- "$W/stray.pem" "$W/svc/key.pem"
nfail=$(count "$W/agent.log" copy_failed)
p=()
wait_count "$W/agent.log" copy_failed $((nfail + 1)) "$AGENT_BG" || p+=("no copy_failed")
line=$(grep -F '"event":"copy_failed"' "$W/agent.log" | tail -n 1 || true)
[[ $line == *"do not belong together"* ]] || p+=("copy_failed does not say why: $line")
[ "$(count "$W/agent.log" hook_done)" = "$hooks" ] || p+=("a hook ran")
[ "$(serial "$W/app/server.crt")" = "$held" ] || p+=("--cert-out changed")
[ "$(pair "$W/app/server.crt" "$W/app/server.key")" = match ] || p+=("the copies do not match")
verdict "a stray key with no writer: copy_failed says they do not belong together; no copy, no hook" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 4 "$W/agent.log")"
mv -- "$W/key.keep" "$W/svc/key.pem"

stop_bg "$AGENT_BG"
stop_bg "$SERVE_PID"
finish
