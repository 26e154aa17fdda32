#!/usr/bin/env bash
# `mtls ca issue --force`: reissuing to the same --out replaces PREFIX.pem, PREFIX-chain.pem
# and PREFIX.key as one change (renew/fileset.c), with real files and real openssl:
#   - without --force the refusal names --force and leaves the files alone;
#   - with it the three files are new and belong together (the key is the certificate's, the
#     chain starts with the certificate), the key is 0600 whatever the old file's mode was,
#     the replaced certificate is still valid in the inventory and the output says how to
#     revoke it (superseded), which works;
#   - a --out whose files are symbolic links is refused, the links and what they point to
#     untouched;
#   - killed (strace, SIGKILL) at the Nth fsync, rename, link and unlink in turn: after the
#     next issue to that --out (which recovers first, then refuses: the files exist) the files
#     are all old or all new, the key matches the certificate, nothing temporary is left.
set -euo pipefail
BG_LIMIT=${BG_LIMIT:-240}
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca
APP=spiffe://example.org/app

ca() {
	LAST_CMD="mtls ca $*"
	run "$MTLS" ca "$@"
}
serial() { openssl x509 -in "$1" -noout -serial 2>/dev/null | sed 's/^serial=//'; }
matches() {
	local a b
	a=$(openssl x509 -in "$1" -noout -pubkey 2>/dev/null) || return 1
	b=$(openssl pkey -in "$2" -pubout 2>/dev/null) || return 1
	[ -n "$a" ] && [ "$a" = "$b" ]
}
# one_set P : P.pem, P-chain.pem, P.key belong together; "" or what is wrong.
one_set() {
	local s c
	s=$(serial "$1.pem")
	c=$(serial "$1-chain.pem")
	[ -n "$s" ] || {
		echo "$1.pem holds no certificate"
		return
	}
	[ "$s" = "$c" ] || echo "$1-chain.pem starts with serial $c, $1.pem is $s"
	matches "$1.pem" "$1.key" || echo "$1.key is not the key of $1.pem"
	openssl verify -CAfile "$D/root.pem" -untrusted "$1-chain.pem" "$1.pem" >/dev/null 2>&1 ||
		echo "$1.pem does not verify with its chain"
}
leftovers() {
	find "$1" -maxdepth 1 \( -name '*.new-*' -o -name '*.old-*' -o -name '*.tmp-*' \
		-o -name '.mtls-fileset*' \) -printf '%f\n' | sort | tr '\n' ' '
}
mode() { stat -c %a -- "$1"; }
ISS=(--dir "$D" --profile client --uri "$APP")

"$MTLS" ca init --dir "$D" >/dev/null 2>&1 || {
	echo "(test setup) mtls ca init failed" >&2
	exit 1
}
O=$W/out
mkdir -- "$O"
ca issue "${ISS[@]}" --out "$O/app"
[ "$RC" = 0 ] || {
	echo "(test setup) the first issue failed: $ERR" >&2
	exit 1
}

# ------------------------------------------------------------------------------------------
first=$(serial "$O/app.pem")
sum=$(cat -- "$O/app.pem" "$O/app-chain.pem" "$O/app.key" | sha256sum)
ca issue "${ISS[@]}" --out "$O/app"
p=()
[ "$RC" = 2 ] || p+=("exit $RC, expected 2")
[[ $ERR == *"already exists"*"--force"* ]] || p+=("the refusal does not name --force")
[ "$(cat -- "$O/app.pem" "$O/app-chain.pem" "$O/app.key" | sha256sum)" = "$sum" ] ||
	p+=("the files changed")
report "without --force: refused (exit 2), the message names --force, the files untouched" "${p[@]}"

# ------------------------------------------------------------------------------------------
chmod 644 "$O/app.key"
ca issue "${ISS[@]}" --out "$O/app" --force
p=()
second=$(serial "$O/app.pem")
[ "$RC" = 0 ] || p+=("exit $RC")
[ -n "$second" ] && [ "$second" != "$first" ] || p+=("app.pem is not a new certificate ($second)")
w=$(one_set "$O/app")
[ -z "$w" ] || p+=("$w")
[ "$(mode "$O/app.key")" = 600 ] || p+=("app.key has mode $(mode "$O/app.key"), not 600")
[ "$(mode "$O/app.pem")" = 644 ] || p+=("app.pem has mode $(mode "$O/app.pem"), not 644")
[ -z "$(leftovers "$O")" ] || p+=("left behind: $(leftovers "$O")")
[[ $OUT == *"serial $first, is still valid"*"mtls ca revoke --serial $first --reason superseded"* ]] ||
	p+=("the output does not say the replaced serial $first is valid and how to revoke it")
report "--force: a new set that belongs together, the key 0600 (the old one was 0644), the old serial named with its revoke command" "${p[@]}"

ca list --dir "$D"
p=()
row=$(printf '%s\n' "$OUT" | grep -- "$first" || true)
[ -n "$row" ] || p+=("the replaced certificate is not in the inventory")
[[ $row == *revoked* ]] && p+=("the replaced certificate is revoked: $row")
ca revoke --dir "$D" --serial "$first" --reason superseded
[ "$RC" = 0 ] || p+=("mtls ca revoke --serial $first --reason superseded: exit $RC: $ERR")
report "the replaced certificate stays valid in the inventory; the suggested revoke works" "${p[@]}"

# ------------------------------------------------------------------------------------------
# the suggested revoke works too when the replaced certificate is already revoked: said so
ca issue "${ISS[@]}" --out "$O/app" --force
p=()
[ "$RC" = 0 ] || p+=("exit $RC: $ERR")
[[ $OUT == *"serial $second, is still valid"* ]] || p+=("the replaced serial $second is not named")
report "--force again replaces the replacement" "${p[@]}"

# ------------------------------------------------------------------------------------------
L=$W/links
mkdir -- "$L"
ca issue "${ISS[@]}" --out "$L/real"
for f in .pem -chain.pem .key; do ln -s "real$f" "$L/app$f"; done
sum=$(cat -- "$L/real.pem" "$L/real-chain.pem" "$L/real.key" | sha256sum)
ca issue "${ISS[@]}" --out "$L/app" --force
p=()
[ "$RC" = 2 ] || p+=("exit $RC, expected 2")
[[ $ERR == *"symbolic link"* ]] || p+=("the message does not say symbolic link")
[ "$(printf '%s\n' "$ERR" | wc -l)" = 1 ] || p+=("more than one line on stderr")
for f in .pem -chain.pem .key; do [ -L "$L/app$f" ] || p+=("app$f is no longer a link"); done
[ "$(cat -- "$L/real.pem" "$L/real-chain.pem" "$L/real.key" | sha256sum)" = "$sum" ] ||
	p+=("the files the links point to changed")
report "--force on symbolic links: refused in one line, links and their targets untouched" "${p[@]}"

# ------------------------------------------------------------------------------------------
echo "# mtls ca issue --force: SIGKILL at each fsync, rename, link and unlink"
if ! command -v strace >/dev/null || ! strace -f -qq -o /dev/null true 2>/dev/null; then
	echo "skip  the kills: strace is not installed (or cannot trace here)"
	finish
	exit $?
fi
STRACE=(env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" strace -f -qq -o /dev/null)
total=0 killed=0 journals=0 old=0 new=0
bad=()
for sc in fsync rename link unlink; do
	for n in $(seq 1 40); do
		before=$(serial "$O/app.pem")
		LAST_CMD="strace -e inject=$sc:signal=KILL:when=$n mtls ca issue --force"
		run "${STRACE[@]}" -e trace="$sc" -e inject="$sc:signal=KILL:when=$n" \
			"$MTLS" ca issue "${ISS[@]}" --out "$O/app" --force
		k=$RC
		total=$((total + 1))
		case $k in
		137) killed=$((killed + 1)) ;;
		0) ;;
		*) bad+=("$sc #$n: exit status $k, expected 0 or 137: $ERR") ;;
		esac
		if [ -e "$O/.mtls-fileset" ] || [ -e "$O/.mtls-fileset-undo" ]; then
			journals=$((journals + 1))
		fi
		# the next issue to the same --out recovers, then refuses (the files exist)
		run "$MTLS" ca issue "${ISS[@]}" --out "$O/app"
		[ "$RC" = 2 ] && [[ $ERR == *"already exists"* ]] ||
			bad+=("$sc #$n: the next issue did not recover and refuse: exit $RC: $ERR")
		w=$(one_set "$O/app")
		[ -z "$w" ] || bad+=("$sc #$n (exit $k): $w")
		[ -z "$(leftovers "$O")" ] || bad+=("$sc #$n: left behind after recovery: $(leftovers "$O")")
		[ "$(mode "$O/app.key")" = 600 ] || bad+=("$sc #$n: app.key mode $(mode "$O/app.key")")
		after=$(serial "$O/app.pem")
		if [ "$after" = "$before" ]; then old=$((old + 1)); else new=$((new + 1)); fi
		[ "$k" = 0 ] && break
	done
done
p=("${bad[@]}")
[ "$killed" -gt 0 ] || p+=("no run was killed: the injection did not work")
[ "$journals" -gt 0 ] || p+=("no kill left a journal: the half-made replace was never seen")
[ "$old" -gt 0 ] && [ "$new" -gt 0 ] || p+=("old sets kept $old times, new sets $new times: both expected")
verdict "$total runs, $killed killed ($journals with a journal): afterwards one set each time ($old old, $new new), the key the certificate's and 0600, nothing temporary left" \
	"${p[@]}"

finish
