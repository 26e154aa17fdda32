#!/usr/bin/env bash
# The daemons' secrets stay theirs: no core dump and no ptrace by the same user
# (PR_SET_DUMPABLE 0, RLIMIT_CORE 0), --key-passphrase-env's value gone from
# /proc/PID/environ, a passphrase file readable by others refused like a key file. And with
# --user, every file a reload reads must be readable by that user: checked at start (a key
# only root can read is refused, naming the file, the user and the fix), and a key readable
# through the user's own group ('chown root:GROUP; chmod 0640') is accepted and reloads.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

C=$CERTS
PASS=$(cat -- "$C/client-enc.pass")
CON=(--server 127.0.0.1:9 --server-name server.test --cert "$C/client-chain.pem"
	--ca "$C/ca.pem" --drain-timeout 100ms)

echo "# 1. --key-passphrase-env: the value leaves the environment; no core dumps"
export MTLS_TEST_PASS=$PASS
start_tunnel_connector "$TMP/con.log" "${CON[@]}" --key "$C/client-enc.key" \
	--key-passphrase-env MTLS_TEST_PASS
unset MTLS_TEST_PASS
PID=$(daemon_pid "$TMP/con.log")
p=()
env_dump=$(tr '\0' '\n' <"/proc/$PID/environ")
[[ $env_dump != *"$PASS"* ]] || p+=("/proc/$PID/environ still holds the passphrase")
[[ $env_dump != *"MTLS_TEST_PASS=c"* ]] || p+=("/proc/$PID/environ still holds MTLS_TEST_PASS=...")
core_limit=$(awk '/^Max core file size/ { print $5 " " $6 }' "/proc/$PID/limits")
[ "$core_limit" = "0 0" ] || p+=("Max core file size (soft hard) is '$core_limit', expected '0 0'")
verdict "the passphrase is gone from /proc/PID/environ and RLIMIT_CORE is 0" \
	"${p[@]+"${p[@]}"}" -- "$(grep -a -o 'MTLS_TEST_PASS=[^[:cntrl:]]*' "/proc/$PID/environ" || true)"
stop_bg "$CON_PID"

# A process that is not dumpable has its /proc/PID files owned by root whatever its user:
# seen from a daemon running as nobody (when this test runs as root).
if [ "$(id -u)" = 0 ] && id nobody >/dev/null 2>&1 && command -v setpriv >/dev/null; then
	D=$TMP/nobody
	mkdir -m 755 "$D"
	chmod 711 "$TMP"
	cp -- "$C/client-chain.pem" "$C/ca.pem" "$D/"
	install -m 600 -o nobody -- "$C/client.key" "$D/client.key"
	start_bg "$TMP/con-nobody.log" setpriv --reuid=nobody --regid="$(id -g nobody)" \
		--clear-groups "$MTLS" connector --listen 127.0.0.1:0 --log-format json \
		--server 127.0.0.1:9 --server-name server.test --cert "$D/client-chain.pem" \
		--key "$D/client.key" --ca "$D/ca.pem" --drain-timeout 100ms
	CON_PID=$BG_PID
	wait_for_line "$TMP/con-nobody.log" '"event":"listening"' "$READY_LIMIT" "$CON_PID" ||
		_lib_die "the connector did not start as nobody: $(cat -- "$TMP/con-nobody.log")"
	PID=$(daemon_pid "$TMP/con-nobody.log")
	p=()
	[ "$(awk '/^Uid:/ { print $3 }' "/proc/$PID/status")" = "$(id -u nobody)" ] ||
		p+=("internal: the daemon does not run as nobody")
	[ "$(stat -c %u "/proc/$PID/mem")" = 0 ] ||
		p+=("/proc/$PID/mem is owned by uid $(stat -c %u "/proc/$PID/mem"): the daemon is dumpable (PR_SET_DUMPABLE not 0)")
	verdict "a daemon running as nobody is not dumpable (/proc/PID owned by root)" \
		"${p[@]+"${p[@]}"}" -- "$(ls -ln "/proc/$PID/mem" "/proc/$PID/status" 2>&1)"
	stop_bg "$CON_PID"
else
	echo "skip  dumpable check: needs root, user nobody and setpriv"
fi

# the passphrase given where the variable's name goes (a common slip): refused without
# repeating it, since stderr goes to the journal
LAST_CMD="mtls connector --key-passphrase-env '<the passphrase>'"
run "$MTLS" connector --listen 127.0.0.1:0 "${CON[@]}" --key "$C/client-enc.key" \
	--key-passphrase-env "$PASS"
p=()
[ "$RC" = 2 ] || p+=("exit status $RC, expected 2")
[[ $ERR != *"$PASS"* ]] || p+=("the refusal repeats the value given (the passphrase): $ERR")
[[ $ERR == *"--key-passphrase-env takes the name of an environment variable"* ]] ||
	p+=("the refusal does not say it takes a variable's name: $ERR")
[ "$(count_lines "$ERR" "")" = 1 ] || p+=("stderr is not one line")
report "--key-passphrase-env given the passphrase itself: refused without echoing it" \
	"${p[@]+"${p[@]}"}"

echo "# 2. a passphrase file readable by others is refused, like a key file"
cp -- "$C/client-enc.pass" "$TMP/world.pass"
chmod 644 "$TMP/world.pass"
LAST_CMD="mtls connector --key client-enc.key --key-passphrase-file world.pass (0644)"
run "$MTLS" connector --listen 127.0.0.1:0 "${CON[@]}" --key "$C/client-enc.key" \
	--key-passphrase-file "$TMP/world.pass"
p=()
[ "$RC" = 2 ] || p+=("exit status $RC, expected 2")
[[ $ERR == *"passphrase file $TMP/world.pass is readable by group or others (mode 0644); run 'chmod 600 $TMP/world.pass'"* ]] ||
	p+=("the refusal does not name the file, its mode and chmod 600")
[ "$(count_lines "$ERR" "")" = 1 ] || p+=("stderr is not one line")
report "a passphrase file with mode 0644 is refused (exit 2, chmod 600)" "${p[@]+"${p[@]}"}"

LAST_CMD="... --insecure-key-permissions"
start_tunnel_connector "$TMP/con-insecure.log" "${CON[@]}" --key "$C/client-enc.key" \
	--key-passphrase-file "$TMP/world.pass" --insecure-key-permissions
p=()
[ "$(log_count "$TMP/con-insecure.log" insecure_options insecure_key_permissions)" = 1 ] ||
	p+=("no insecure_options warning")
stop_bg "$CON_PID"
verdict "--insecure-key-permissions accepts it, with a warning" "${p[@]+"${p[@]}"}" -- \
	"$(cat -- "$TMP/con-insecure.log")"

echo "# 3. --user: the files a reload reads must be readable by the user"
if [ "$(id -u)" != 0 ] || ! id nobody >/dev/null 2>&1 || ! command -v setpriv >/dev/null; then
	echo "skip  --user cases: need root, user nobody and setpriv"
	finish
	exit
fi
chmod 711 "$TMP"

# A group-readable key is private only if the group is the reader's own: named after its
# user, with no other members (a user private group, as 'useradd --user-group' makes).
# nobody's primary group nogroup is not: on Debian it is also _apt's and sync's primary group,
# so 'chown root:nogroup; chmod 0640' lets them read the key. Refused, with and without
# --user, as it was before group-readable keys were accepted at all.
NG=$(id -gn nobody)
N=$TMP/nobody-key
mkdir -m 755 "$N"
cp -- "$C/server-chain.pem" "$C/ca.pem" "$N/"
chmod 644 "$N/server-chain.pem" "$N/ca.pem"
install -m 640 -o root -g "$NG" -- "$C/server.key" "$N/server.key"
NSRV=(--listen 127.0.0.1:0 --target 127.0.0.1:9 --cert "$N/server-chain.pem"
	--key "$N/server.key" --ca "$N/ca.pem" --allow-any-identity --drain-timeout 100ms)
LAST_CMD="mtls server --user nobody (key root:$NG 0640; $NG is not a group of nobody's own)"
run "$MTLS" server "${NSRV[@]}" --user nobody
p=()
[ "$RC" = 2 ] || p+=("exit status $RC, expected 2: the key readable by every member of $NG was accepted")
[[ $ERR == *"private key $N/server.key is readable by group or others (mode 0640)"* ]] ||
	p+=("the refusal does not name the key and its mode")
[ "$(count_lines "$ERR" "")" = 1 ] || p+=("stderr is not one line")
report "--user nobody with the key root:$NG 0640 ($NG is not nobody's own group): refused" \
	"${p[@]+"${p[@]}"}"

# the library's own check, for a process that simply runs as nobody:nogroup (no --user)
LAST_CMD="setpriv --reuid=nobody --regid=$NG mtls server (key root:$NG 0640)"
run setpriv --reuid=nobody --regid="$NG" --clear-groups "$MTLS" server "${NSRV[@]}"
p=()
[ "$RC" = 2 ] || p+=("exit status $RC, expected 2: the key readable by every member of $NG was accepted")
[[ $ERR == *"private key $N/server.key is readable by group or others (mode 0640)"* ]] ||
	p+=("the refusal does not name the key and its mode")
report "running as nobody:$NG (no --user), the key root:$NG 0640 is refused as before" \
	"${p[@]+"${p[@]}"}"

# A system user whose primary group is its own (named after it, no other members, no other
# account's primary group), for the accepted cases.
PU=""
for u in daemon www-data proxy backup list; do
	pw=$(getent passwd "$u") || continue
	gid=$(cut -d: -f4 <<<"$pw")
	gr=$(getent group "$gid") || continue
	others=$(getent passwd | awk -F: -v g="$gid" -v u="$u" '$4 == g && $1 != u' | wc -l)
	if [ "${gr%%:*}" = "$u" ] && [ -z "$(cut -d: -f4 <<<"$gr" | tr -d "$u,")" ] &&
		[ "$others" = 0 ]; then
		PU=$u
		break
	fi
done
if [ -z "$PU" ]; then
	echo "skip  --user accepted cases: no system user with a group of its own"
	finish
	exit
fi
G=$PU
U=$TMP/user
mkdir -m 755 "$U"
cp -- "$C/server-chain.pem" "$C/ca.pem" "$U/"
chmod 644 "$U/server-chain.pem" "$U/ca.pem"
install -m 600 -o root -g root -- "$C/server.key" "$U/server.key"
SRV=(--target 127.0.0.1:9 --cert "$U/server-chain.pem" --key "$U/server.key" --ca "$U/ca.pem"
	--allow-any-identity --user "$PU" --watch-interval 200ms --drain-timeout 100ms)

LAST_CMD="mtls server --user $PU (key root 0600)"
run "$MTLS" server --listen 127.0.0.1:0 "${SRV[@]}"
p=()
[ "$RC" = 2 ] || p+=("exit status $RC, expected 2")
for w in "--user $PU cannot read $U/server.key" "Permission denied" "every reload" \
	"chown root:$G $U/server.key; chmod 0640 $U/server.key"; do
	[[ $ERR == *"$w"* ]] || p+=("the refusal does not say: $w")
done
[ "$(count_lines "$ERR" "")" = 1 ] || p+=("stderr is not one line")
report "--user $PU with a key only root can read: refused at start, saying what to do" \
	"${p[@]+"${p[@]}"}"

# a key group-readable by the user's own group but owned by another user (who could read it,
# and change its mode): not private
chown "nobody:$G" "$U/server.key"
chmod 640 "$U/server.key"
LAST_CMD="mtls server --user $PU (key nobody:$G 0640)"
run "$MTLS" server --listen 127.0.0.1:0 "${SRV[@]}"
p=()
[ "$RC" = 2 ] || p+=("exit status $RC, expected 2: a key owned by nobody was accepted")
[[ $ERR == *"private key $U/server.key is readable by group or others"* ]] ||
	p+=("the refusal does not name the key")
report "--user $PU with the key nobody:$G 0640 (owned by another user): refused" \
	"${p[@]+"${p[@]}"}"

# the root-only key refused as nobody suggests nothing the key check refuses next
# (not 'chown root:$NG'): nogroup is not nobody's own
install -m 600 -o root -g root -- "$C/server.key" "$N/server.key"
LAST_CMD="mtls server --user nobody (key root 0600)"
run "$MTLS" server "${NSRV[@]}" --user nobody
p=()
[ "$RC" = 2 ] || p+=("exit status $RC, expected 2")
[[ $ERR == *"chown nobody $N/server.key; chmod 0600 $N/server.key"* ]] ||
	p+=("the refusal does not suggest 'chown nobody KEY; chmod 0600 KEY'")
[[ $ERR != *"chown root:$NG"* ]] || p+=("the refusal suggests 'chown root:$NG', which the key check refuses")
report "--user nobody with a root-only key: the fix suggested is one the key check accepts" \
	"${p[@]+"${p[@]}"}"

chown "root:$G" "$U/server.key"
chmod 640 "$U/server.key"
start_tunnel_server "$TMP/srv-user.log" "${SRV[@]}"
PID=$(daemon_pid "$TMP/srv-user.log")
p=()
[ "$(awk '/^Uid:/ { print $2 }' "/proc/$PID/status")" = "$(id -u "$PU")" ] ||
	p+=("the server does not run as $PU")
# a rotation: the same files rewritten in place (their owner and mode stay)
cat -- "$C/server-chain.pem" >"$U/server-chain.pem"
cat -- "$C/server.key" >"$U/server.key"
# up to 30 s: a change the inotify watch misses is seen by the --watch-interval stat, then
# needs two still looks (the settling second); 10 s ran out once on a busy CI machine
for _ in $(seq 1 300); do
	[ "$(log_count "$TMP/srv-user.log" reload '"trigger":"file_change"')" -ge 1 ] && break
	[ "$(log_count "$TMP/srv-user.log" reload_failed)" -ge 1 ] && break
	sleep 0.1
done
[ "$(log_count "$TMP/srv-user.log" reload '"trigger":"file_change"')" -ge 1 ] ||
	p+=("no reload after the rotation")
[ "$(log_count "$TMP/srv-user.log" reload_failed)" = 0 ] || p+=("a reload failed")
verdict "--user $PU with the key root:$G 0640: starts, and reloads after a rotation" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$TMP/srv-user.log")"

# Every change of ids (the reads as the user at start, the way back to root, the final drop)
# makes the kernel reset "dumpable" to fs.suid_dumpable, which is 2 where apport or
# systemd-coredump set it (1 on debugging setups: dumpable and ptrace-able by the user): the
# daemon must say PR_SET_DUMPABLE 0 again after the last one. Seen with strace (where
# suid_dumpable is 0 the reset is invisible).
if command -v strace >/dev/null; then
	start_bg "$TMP/strace-user.log" env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
		strace -f -qq -o "$TMP/ids.trace" \
		-e trace=setuid,setgid,setresuid,setresgid,setgroups,prctl \
		"$MTLS" server --listen 127.0.0.1:0 --log-format json --workers 1 "${SRV[@]}"
	ST_PID=$BG_PID
	p=()
	wait_for_line "$TMP/strace-user.log" '"event":"listening"' "$READY_LIMIT" "$ST_PID" ||
		p+=("the server did not start under strace")
	stop_bg "$ST_PID"
	# the line number of the last successful id change, and of the last PR_SET_DUMPABLE 0
	last_id=$(grep -nE ' set(res)?[ug]id\(|setgroups\(' "$TMP/ids.trace" | grep -E '= 0$' |
		tail -n 1 | cut -d: -f1)
	last_nodump=$(grep -nE 'PR_SET_DUMPABLE, (SUID_DUMP_DISABLE|0)\)' "$TMP/ids.trace" |
		tail -n 1 | cut -d: -f1)
	[ -n "$last_id" ] || p+=("internal: no id change seen in the trace")
	if [ -z "$last_nodump" ] || [ "${last_nodump:-0}" -lt "${last_id:-0}" ]; then
		p+=("no PR_SET_DUMPABLE 0 after the last id change (line ${last_id:-?}; last one at line ${last_nodump:-none})")
	fi
	verdict "--user: PR_SET_DUMPABLE 0 again after the privilege drop" "${p[@]+"${p[@]}"}" -- \
		"$(grep -vE 'SIGRT|resumed>|CAPBSET' "$TMP/ids.trace" | tail -n 20)"
else
	echo "skip  PR_SET_DUMPABLE after the drop: strace is not installed"
fi

# the key made root-only again: the next reload fails, saying why and what to do
chmod 600 "$U/server.key"
touch -- "$U/server.key"
for _ in $(seq 1 100); do
	[ "$(log_count "$TMP/srv-user.log" reload_failed)" -ge 1 ] && break
	sleep 0.1
done
l=$(grep -F '"event":"reload_failed"' "$TMP/srv-user.log" || true)
p=()
[[ $l == *'"reason":"file_permissions"'* && $l == *"--user $PU cannot read $U/server.key"* &&
	$l == *"chmod 0640"* ]] || p+=("no reload_failed file_permissions line naming the user, file and fix: $l")
kill -0 "$SRV_PID" 2>/dev/null || p+=("the server died")
stop_bg "$SRV_PID"
verdict "a key the user cannot read at a reload: reload_failed file_permissions, the old one kept" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$TMP/srv-user.log")"

finish
