#!/usr/bin/env bash
# The unit files in systemd/ (docs/systemd.md), checked offline (no running systemd):
#
# 1. `systemd-analyze verify` accepts each of them (ExecStart= pointed at the built mtls,
#    since /usr/bin/mtls is not installed here; man pages not looked up).
# 2. What the daemons rely on is there: Type=notify with NotifyAccess=main, WatchdogSec=,
#    ExecReload= sending SIGHUP, User=/Group=mtls, the config path of the conventions; the
#    socket unit names its socket "listen" (what mtls server looks for).
# 3. `systemd-analyze security --offline` rates each service's exposure at 2.0 or less
#    (systemd's scale, 0 to 10): the sandboxing stays.
# 4. ExecStart='s command line is one the daemon takes: mtls server/connector with the
#    unit's --config run to the config check (a config naming no files is refused for what
#    it lacks, not for the command line).
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

command -v systemd-analyze >/dev/null || _lib_die "systemd-analyze not found in PATH"

U=$MTLS_SOURCE_DIR/systemd
units=(mtls-server@.service mtls-connector@.service mtls-agent@.service mtls-ca.service
	mtls-server@.socket)
mkdir -- "$TMP/u"
for u in "${units[@]}"; do
	[ -f "$U/$u" ] || _lib_die "$U/$u is missing"
	sed "s|/usr/bin/mtls|$MTLS|g" "$U/$u" >"$TMP/u/$u"
done

echo "# 1. systemd-analyze verify"
for u in "${units[@]}"; do
	LAST_CMD="systemd-analyze verify --man=no $u"
	run systemd-analyze verify --man=no "$TMP/u/$u"
	p=()
	[ "$RC" = 0 ] || p+=("exit status $RC")
	[ -z "$OUT$ERR" ] || p+=("it has something to say")
	report "$u: systemd-analyze verify is silent" "${p[@]+"${p[@]}"}"
done

echo "# 2. what the daemons rely on"
# key UNIT LINE... : each LINE is a line of UNIT
key() {
	local u=$1 p=()
	shift
	for l in "$@"; do
		grep -qxF -- "$l" "$U/$u" || p+=("no line '$l'")
	done
	verdict "$u: the $# lines the daemons rely on" "${p[@]+"${p[@]}"}"
}
for u in mtls-server@.service mtls-connector@.service mtls-agent@.service mtls-ca.service; do
	# shellcheck disable=SC2016 # $MAINPID is systemd's, literally
	key "$u" Type=notify NotifyAccess=main 'ExecReload=/bin/kill -HUP $MAINPID' \
		Restart=on-failure User=mtls Group=mtls StateDirectory=mtls \
		ConfigurationDirectory=mtls ProtectSystem=strict NoNewPrivileges=yes \
		'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' \
		SystemCallFilter=@system-service SystemCallArchitectures=native
	if grep -qE '^WatchdogSec=[1-9]' "$U/$u"; then
		pass "$u: WatchdogSec= set"
	else
		fail "$u: WatchdogSec= set" "$(grep Watchdog "$U/$u" || echo none)"
	fi
done
key mtls-server@.service 'ExecStart=/usr/bin/mtls server --config /etc/mtls/server/%i.conf' \
	CapabilityBoundingSet=CAP_NET_BIND_SERVICE AmbientCapabilities=CAP_NET_BIND_SERVICE
key mtls-connector@.service \
	'ExecStart=/usr/bin/mtls connector --config /etc/mtls/connector/%i.conf' \
	CapabilityBoundingSet=
key mtls-agent@.service 'ExecStart=/usr/bin/mtls agent --config /etc/mtls/agent/%i.conf' \
	CapabilityBoundingSet=
key mtls-ca.service 'ExecStart=/usr/bin/mtls ca serve --config /etc/mtls/ca.conf' \
	CapabilityBoundingSet=
key mtls-server@.socket FileDescriptorName=listen PartOf=mtls-server@%i.service

echo "# 3. systemd-analyze security --offline"
for u in mtls-server@.service mtls-connector@.service mtls-agent@.service mtls-ca.service; do
	LAST_CMD="systemd-analyze security --offline=yes --threshold=20 $u"
	run systemd-analyze security --no-pager --offline=yes --threshold=20 "$TMP/u/$u"
	score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$OUT")
	p=()
	[ "$RC" = 0 ] || p+=("exit status $RC (threshold 2.0)")
	[ -n "$score" ] || p+=("no exposure level in the output")
	report "$u: exposure ${score:-?} (at most 2.0)" "${p[@]+"${p[@]}"}"
done

echo "# 4. ExecStart='s command lines"
: >"$TMP/empty.conf"
for role in server connector; do
	LAST_CMD="mtls $role --config (a config without files)"
	run "$MTLS" "$role" --config "$TMP/empty.conf"
	p=()
	[ "$RC" = 2 ] || p+=("exit status $RC, not 2")
	[[ $ERR == *"give --listen"* ]] || p+=("not refused for what the config lacks")
	report "mtls $role --config FILE (the units' ExecStart=): the command line is taken" \
		"${p[@]+"${p[@]}"}"
done
LAST_CMD="mtls agent --config (a config without a directory)"
run "$MTLS" agent --config "$TMP/empty.conf"
p=()
[ "$RC" = 2 ] || p+=("exit status $RC, not 2")
[[ $ERR == *"--dir"* ]] || p+=("not refused for what the config lacks")
report "mtls agent --config FILE (the unit's ExecStart=): the command line is taken" \
	"${p[@]+"${p[@]}"}"

finish
