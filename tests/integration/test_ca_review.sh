#!/usr/bin/env bash
# The CA disk tests themselves, under the worst a CI run does to them:
#   - test_ca_diskfull.sh killed with SIGKILL (a CTest timeout) once its tmpfs is mounted
#     leaves no mount behind: it mounts in a private mount namespace, which goes with it;
#   - where it may not mount (not root, no user namespace), it skips and passes.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

DISKFULL=$MTLS_SOURCE_DIR/tests/integration/test_ca_diskfull.sh
mkdir -m 700 -- "$TMP/k"

echo "# test_ca_diskfull.sh killed with SIGKILL while its tmpfs is mounted"
# its tmpfs is MNT=$TMP/full under its own $TMP, made in $TMP/k here
TMPDIR=$TMP/k setsid bash "$DISKFULL" >"$TMP/killed.log" 2>&1 &
victim=$!
mnt=""
for _ in $(seq 1 300); do
	# where it mounted: in its own namespace, or in ours
	mnt=$(awk -v k="$TMP/k/" 'index($2, k) == 1 && $3 == "tmpfs" { print $2 }' "/proc/$victim/mounts" 2>/dev/null || true)
	[ -z "$mnt" ] || break
	grep -q '^skip' "$TMP/killed.log" && break
	sleep 0.05
done
p=()
if [ -z "$mnt" ]; then
	kill -KILL -- -"$victim" 2>/dev/null || true
	wait "$victim" 2>/dev/null || true
	if grep -q '^skip' "$TMP/killed.log"; then
		echo "skip  killed while mounted: test_ca_diskfull.sh cannot mount here"
	else
		p+=("test_ca_diskfull.sh never mounted its tmpfs: $(tail -n 5 -- "$TMP/killed.log")")
	fi
else
	kill -KILL "$victim"
	wait "$victim" 2>/dev/null || true
	# what it ran when killed ends within the run limit (bounded by timeout)
	for _ in $(seq 1 $((RUN_LIMIT * 10 + 40))); do
		pgrep -s "$victim" >/dev/null || break
		sleep 0.1
	done
	kill -KILL -- -"$victim" 2>/dev/null || true
	if awk -v m="$mnt" '$2 == m { found = 1 } END { exit !found }' /proc/self/mounts; then
		p+=("$mnt is still mounted after the test was killed")
		umount -l -- "$mnt" 2>/dev/null || true
	fi
fi
verdict "killed with SIGKILL while its tmpfs is mounted: no mount left behind" "${p[@]+"${p[@]}"}"

echo "# test_ca_diskfull.sh where it may not mount a tmpfs"
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
	# an unprivileged user without a namespace (MTLS_DISKFULL_NS set: none is made)
	mkdir -m 1777 -- "$TMP/u"
	chmod 711 -- "$TMP" # for the other user, just this run
	LAST_CMD="setpriv --reuid=65534 test_ca_diskfull.sh (no namespace)"
	run setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
		env MTLS_DISKFULL_NS=1 TMPDIR="$TMP/u" bash "$DISKFULL"
	chmod 700 -- "$TMP"
	p=()
	if [[ $ERR == *"Permission denied"* && $OUT != *skip* ]]; then
		echo "skip  no mount permitted: user 65534 cannot read the build ($(first_line "$ERR"))"
	else
		[ "$RC" = 0 ] || p+=("exit status $RC")
		[[ $OUT == *"skip  all cases: cannot mount a tmpfs"* ]] || p+=("no skip line")
		[[ $OUT != *FAIL* ]] || p+=("a case failed")
		report "no mount permitted: skipped, passes" "${p[@]+"${p[@]}"}"
	fi
else
	echo "skip  no mount permitted: needs root and setpriv to become another user"
fi

finish
