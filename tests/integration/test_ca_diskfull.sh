#!/usr/bin/env bash
# Every CA command on a full disk (issue 11, item 9), on a real tmpfs (root only: skipped
# otherwise). With 0, 8 and 28 KiB free, then 48, 96 and 400 KiB until the command
# succeeds:
#   - a command that fails exits 1 with one line saying the disk is full and naming the
#     directory or file, never that the inventory is damaged ("not usable", "restore it from
#     a backup", "corrupt");
#   - the inventory, the audit log and crl.pem are the old ones or wholly the new ones, and
#     `mtls ca audit` agrees; nothing half-written is left (no temporary file, no staging
#     directory of init, no output file of a failed issue or export);
#   - list, audit and inspect only read: they work on a full disk.
# And an issue whose files cannot be given their names after the commit (link refused with
# ENOSPC by strace) on a nearly full CA disk never leaves a valid certificate nobody holds:
# it refuses before anything is issued, or revokes what it could not deliver; also when
# another process fills the disk after the issue made sure of its room.
# (revoke and crl scanned 4 KiB at a time: test_ca_crash.sh.)
set -euo pipefail
# The tmpfs is mounted in a mount namespace of our own, which goes when this script and what
# it started do, however they end: a SIGKILL (a CTest timeout) that no trap sees leaves no
# mount behind (test_ca_review.sh). Not root: a user namespace gives the right to mount a
# tmpfs where the system allows it; else the mount below fails and the cases are skipped.
if [ -z "${MTLS_DISKFULL_NS:-}" ] && command -v unshare >/dev/null; then
	export MTLS_DISKFULL_NS=1
	if [ "$(id -u)" = 0 ]; then
		ns=(unshare --mount --propagation private)
	else
		ns=(unshare --user --map-root-user --mount --propagation private)
	fi
	! "${ns[@]}" true 2>/dev/null || exec "${ns[@]}" -- bash "${BASH_SOURCE[0]}" "$@"
fi
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

W=$TMP/w
mkdir -m 700 -- "$W" "$W/out"
MNT=$TMP/full
mkdir -m 700 -- "$MNT"
MOUNTED=""
_full_exit() {
	local rc=$?
	set +e
	[ -z "$MOUNTED" ] || umount -- "$MNT" 2>/dev/null || umount -l -- "$MNT" 2>/dev/null
	(exit "$rc") # _cleanup exits with $?
	_cleanup
}
trap _full_exit EXIT
# A quota is not a full disk: `df` shows room, so "disk full" would send the operator to the
# wrong place. EDQUOT comes from strace here (tmpfs quotas are not everywhere, and root
# ignores them).
if command -v strace >/dev/null; then
	echo "# disk quota exceeded (EDQUOT injected)"
	Q=$W/caQ
	run "$MTLS" ca init --dir "$Q"
	QSTRACE=(env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" strace -f -qq -o /dev/null)
	# quota_case NAME SYSCALL WHEN ARGS... : `mtls ca ARGS` with SYSCALL failing with EDQUOT
	# from its WHENth call on: exit 1, one line saying the quota is exceeded (not that the
	# disk is full) and naming the CA directory or file.
	quota_case() {
		local name=$1 sc=$2 when=$3
		shift 3
		p=()
		LAST_CMD="strace inject=$sc:error=EDQUOT:when=$when mtls ca $*"
		run "${QSTRACE[@]}" -e trace="$sc" -e inject="$sc:error=EDQUOT:when=$when" "$MTLS" ca "$@"
		[ "$RC" = 1 ] || p+=("exit status $RC, expected 1")
		[ "$(printf '%s\n' "$ERR" | wc -l)" = 1 ] || p+=("stderr is not one line")
		[[ $ERR == *"quota exceeded"* ]] || p+=("the message does not say the quota is exceeded")
		[[ $ERR != *"disk full"* && $ERR != *"nearly full"* ]] || p+=("a quota is reported as a full disk")
		[[ $ERR == *"$W/"* ]] || p+=("the message does not name the directory")
		report "$name" "${p[@]+"${p[@]}"}"
	}
	quota_case "issue, quota exceeded writing the certificate: says so" write 1 \
		issue --dir "$Q" --profile client --uri spiffe://example.org/q1 --out "$W/out/q1"
	quota_case "issue, quota exceeded taking its room: says so" fallocate 1 \
		issue --dir "$Q" --profile client --uri spiffe://example.org/q2 --out "$W/out/q2"
	quota_case "revoke, quota exceeded in the inventory: says so" pwrite64 1+ \
		revoke --dir "$Q" --serial 01 --reason superseded
	quota_case "crl, quota exceeded writing crl.pem: says so" fsync 1 crl --dir "$Q"
fi

if ! mount -t tmpfs -o size=2m,mode=700 tmpfs "$MNT" 2>/dev/null; then
	echo "skip  all cases: cannot mount a tmpfs (not root?)"
	pass "skipped: no tmpfs"
	finish
	exit $?
fi
MOUNTED=1

F=$MNT/ca # the CA on the small disk
O=$W/caO  # a CA elsewhere, issuing onto the small disk
run "$MTLS" ca init --dir "$F"
[ "$RC" = 0 ] || fail "init a CA on a 2 MiB tmpfs" "exit $RC: $ERR"
run "$MTLS" ca init --dir "$O"
POOL=()
for i in $(seq 1 12); do
	run "$MTLS" ca issue --dir "$F" --profile client --uri "spiffe://example.org/pool/$i" --out "$W/out/p$i"
	[ "$RC" = 0 ] || break
	POOL+=("$W/out/p$i")
done
[ ${#POOL[@]} = 12 ] || fail "issue certificates on the tmpfs" "exit $RC: $ERR"
NEXT=0

# fill KIB : leave KIB KiB free on the tmpfs.
fill() {
	rm -f -- "$MNT/filler"
	local avail
	avail=$(df -B1 --output=avail -- "$MNT" | tail -n 1 | tr -d ' ')
	[ "$avail" -le $(($1 * 1024)) ] || fallocate -l $((avail - $1 * 1024)) -- "$MNT/filler"
}

# state : what must not change when a command fails: the inventory's rows and audit log
# (read with sqlite3, once space is back), crl.pem and the CA's certificates and keys.
state() {
	sqlite3 "$F/ca.db" "SELECT serial, status, COALESCE(revocation_reason, '') FROM certs ORDER BY serial; SELECT seq, hash FROM audit ORDER BY seq; SELECT number FROM crls ORDER BY number" 2>&1 | sha256sum | cut -d' ' -f1
	sha256sum -- "$F"/*.pem "$F"/*.key | cut -d' ' -f1 | sha256sum | cut -d' ' -f1
}
leftovers() {
	find "$MNT" "$W/out" -maxdepth 2 \( -name '*.tmp-*' -o -name 'ca2*' -o -name 'new*' -o -name 'x.p12' \) -printf '%P\n' 2>/dev/null | sort || true
}

# full_case WHAT KIB : `mtls ca WHAT` with KIB KiB free. OUTCOME: ok, or failed.
full_case() {
	local what=$1 kib=$2 before args cert
	p=()
	case $what in
	init) args=(init --dir "$MNT/ca2") ;;
	issue) args=(issue --dir "$F" --profile client --uri "spiffe://example.org/new/$kib" --out "$W/out/new$kib") ;;
	issue-out) args=(issue --dir "$O" --profile client --uri "spiffe://example.org/new/$kib" --out "$MNT/new$kib") ;;
	revoke)
		cert=${POOL[$NEXT]}
		args=(revoke --dir "$F" --cert "$cert.pem" --reason superseded)
		;;
	crl) args=(crl --dir "$F") ;;
	list) args=(list --dir "$F") ;;
	audit) args=(audit --dir "$F") ;;
	inspect) args=(inspect "$F/crl.pem") ;;
	export) args=(export --cert "${POOL[0]}-chain.pem" --key "${POOL[0]}.key" --out "$MNT/x.p12" --password-env P12PASS) ;;
	esac
	before=$(state)
	fill "$kib"
	LAST_CMD="mtls ca ${args[*]} ($kib KiB free)"
	P12PASS=correct-horse-battery run "$MTLS" ca "${args[@]}"
	rm -f -- "$MNT/filler"
	OUTCOME=ok
	if [ "$RC" != 0 ]; then
		OUTCOME=failed
		[ "$RC" = 1 ] || p+=("exit status $RC, expected 1")
		[ "$(printf '%s\n' "$ERR" | wc -l)" = 1 ] || p+=("stderr is not one line")
		[[ $ERR == *"disk full"* || $ERR == *"disk nearly full"* ]] || p+=("the message does not say the disk is full")
		[[ $ERR == *"$MNT"* ]] || p+=("the message does not name the directory")
		[[ $ERR != *corrupt* && $ERR != *"not a usable"* && $ERR != *"restore it from a backup"* ]] ||
			p+=("a full disk is reported as a damaged inventory")
		case $what in
		list | audit | inspect) p+=("a read-only command failed on a full disk") ;;
		revoke) [[ $ERR == *"revocation is committed"* ]] || [ "$(state)" = "$before" ] || p+=("the failed revoke changed the CA and does not say so") ;;
		# commit, then publish: a CRL committed whose file found no room is published by
		# the next 'mtls ca crl', as the message says
		crl) [[ $ERR == *"is committed; free space and run 'mtls ca crl'"* ]] || [ "$(state)" = "$before" ] || p+=("the failed crl changed the CA and does not say so") ;;
		*) [ "$(state)" = "$before" ] || p+=("the failed command changed the CA") ;;
		esac
		[ -z "$(leftovers)" ] || p+=("left behind: $(leftovers | tr '\n' ' ')")
	else
		case $what in
		list) [[ $OUT == *"spiffe://example.org/pool/1"* ]] || p+=("the listing lacks the certificates") ;;
		audit) [[ $OUT == "audit log intact: "* ]] || p+=("audit: $OUT") ;;
		inspect) [[ $OUT == *"CRL"* ]] || p+=("inspect shows no CRL") ;;
		esac
	fi
	if [ "$what" = revoke ] && { [ "$RC" = 0 ] || [[ $ERR == *"revocation is committed"* ]]; }; then
		NEXT=$((NEXT + 1)) # revoked: the next revoke takes another certificate
	fi
	if [ "$OUTCOME" = failed ]; then
		local rc=$RC out=$OUT err=$ERR
		run "$MTLS" ca audit --dir "$F"
		[ "$RC" = 0 ] || p+=("audit afterwards: exit $RC: $OUT $ERR")
		RC=$rc OUT=$out ERR=$err # the command's, for the report
	fi
	# put back what a success made, so that every command starts from the same disk
	rm -rf -- "$MNT/ca2" "$MNT/x.p12" "$MNT/new$kib".* "$MNT/new$kib"-chain.pem "$W/out/new$kib".* \
		"$W/out/new$kib"-chain.pem
	report "$what with $kib KiB free: $OUTCOME" "${p[@]+"${p[@]}"}"
}

for what in init issue issue-out revoke crl list audit inspect export; do
	for kib in 0 8 28; do
		full_case "$what" "$kib"
	done
	# up from there until it succeeds: every failure on the way is a clean one
	for kib in 48 96 400; do
		[ "$OUTCOME" = ok ] && break
		full_case "$what" "$kib"
	done
	p=()
	[ "$OUTCOME" = ok ] || p+=("still failing at 400 KiB free")
	verdict "$what succeeds once there is room" "${p[@]+"${p[@]}"}"
done

echo "# an issue that cannot deliver its files after the commit, on a nearly full CA disk"
if command -v strace >/dev/null; then
	STRACE=(env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" strace -f -qq -o /dev/null)
	# undelivered NAME KIB STRACE-ARGS... : `mtls ca issue --out $W/out/NAME` under strace
	# with its link (the delivery after the commit) refused with ENOSPC, KIB KiB free on the
	# CA disk (RACE: the disk is filled to KIB while the issue is held at its first fsync, the
	# first output file being staged: after it looked for room, before the commit). Adds to
	# p (problems) and seen (outcomes).
	undelivered() {
		local name=$1 kib=$2 e filler=""
		shift 2
		LAST_CMD="strace $* mtls ca issue --out $name ($kib KiB free)"
		if [ "${RACE:-}" ]; then
			rm -f -- "$MNT/filler"
			(
				for _ in $(seq 1 400); do
					! compgen -G "$W/out/$name.pem.tmp-*" >/dev/null || break
					sleep 0.05
				done
				fill "$kib"
			) &
			filler=$!
		else
			fill "$kib"
		fi
		run "${STRACE[@]}" "$@" -e inject=link:error=ENOSPC:when=1 \
			"$MTLS" ca issue --dir "$F" --profile client --uri "spiffe://example.org/undelivered/$name" --out "$W/out/$name"
		# a filler still waiting for a file the issue never staged stops here
		[ -z "$filler" ] || { kill "$filler" 2>/dev/null || true; wait "$filler" 2>/dev/null || true; }
		rm -f -- "$MNT/filler"
		e=$ERR
		run "$MTLS" ca list --dir "$F" --valid
		if [[ $OUT == *"undelivered/$name "* || $OUT == *"undelivered/$name"$'\n'* || $OUT == *"undelivered/$name" ]]; then
			p+=("$kib KiB free: a valid certificate nobody holds is left in the inventory: $e")
		elif [[ $e == *"so it is revoked"* || $e == *"revocation (cessationOfOperation) is committed"* ]]; then
			seen+=" $kib:revoked"
		elif [[ $e == *"nothing was issued"* || $e == *"nothing was changed"* ]]; then
			seen+=" $kib:refused"
		else
			p+=("$kib KiB free: unexpected outcome: $e")
		fi
		[ "$(printf '%s\n' "$e" | wc -l)" = 1 ] || p+=("$kib KiB free: stderr is not one line: $e")
		[ -z "$(find "$W/out" -maxdepth 1 -name "${name}[.-]*" -print)" ] || p+=("$kib KiB free: files of the undelivered certificate left")
	}
	p=()
	seen=""
	for kib in $(seq 40 8 88) 400; do
		undelivered "u$kib" "$kib" -e trace=link
	done
	[[ $seen == *":revoked"* ]] || p+=("no case got as far as revoking an undelivered certificate")
	run "$MTLS" ca audit --dir "$F"
	[ "$RC" = 0 ] || p+=("audit afterwards: exit $RC: $OUT $ERR")
	verdict "link refused after the commit on a filling disk: never a valid undelivered certificate ($seen)" "${p[@]+"${p[@]}"}"

	# Another process fills the disk after issue made sure of its room: the room must still
	# be there for taking the certificate back (a check of free space alone is not enough).
	p=()
	seen=""
	for kib in 16 24 32 40 48; do
		RACE=1 undelivered "race$kib" "$kib" -e trace=fsync,link -e inject=fsync:delay_enter=2000000:when=1
	done
	[[ $seen == *":revoked"* ]] || p+=("no case got as far as revoking an undelivered certificate")
	run "$MTLS" ca audit --dir "$F"
	[ "$RC" = 0 ] || p+=("audit afterwards: exit $RC: $OUT $ERR")
	verdict "the disk filled by another process after issue's room check, link refused: never a valid undelivered certificate ($seen)" "${p[@]+"${p[@]}"}"
else
	echo "skip  undelivered issue: strace is not installed"
fi

finish
