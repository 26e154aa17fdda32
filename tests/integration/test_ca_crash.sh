#!/usr/bin/env bash
# Crash safety of revocation and CRL publication (`mtls ca revoke`, `mtls ca crl`), shown by
# fault injection rather than argued:
#   - SIGKILL injected by strace at each fsync, fdatasync and rename in turn,
#   - a disk (tmpfs) with 0 KiB left, then 4 KiB more each time until the command succeeds,
#   - SIGKILL at random moments.
# After every fault: every certificate the inventory says revoked is in crl.pem or the next
# `mtls ca crl` puts it there; crl.pem never revokes what the inventory says valid; `mtls ca
# audit` agrees; CRL numbers never go back and never name two different CRLs; no temporary
# file survives the next run.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

if ! command -v strace >/dev/null; then
	echo "skip  all cases: strace is not installed"
	exit 0
fi

W=$TMP/w
mkdir -m 700 -- "$W"

# strace ARGS: LeakSanitizer cannot work under ptrace (sanitizer builds); every command run
# outside strace still checks for leaks.
STRACE=(env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" strace -f -qq -o /dev/null)

ca() {
	LAST_CMD="mtls ca $*"
	run "$MTLS" ca "$@"
}

sha_of() { sha256sum -- "$1" 2>/dev/null | cut -d' ' -f1 || true; }
norm() {
	local s=${1^^}
	s=${s//:/}
	while [[ $s == 0?* ]]; do s=${s#0}; done
	printf '%s\n' "$s"
}
serial_of() { norm "$(openssl x509 -in "$1" -noout -serial 2>/dev/null | sed -n 's/^serial=//p')"; }
crl_number() { openssl crl -in "$1" -noout -text 2>/dev/null | sed -n '/CRL Number/{n;s/ //g;p}' || true; }
# crl_serials FILE : the serials a CRL revokes, normalized, sorted.
crl_serials() {
	openssl crl -in "$1" -noout -text 2>/dev/null | sed -n 's/^ *Serial Number: *//p' |
		while read -r s; do norm "$s"; done | sort || true
}
# store_revoked DIR : the serials `mtls ca list --revoked` shows, normalized, sorted.
store_revoked() {
	run "$MTLS" ca list --dir "$1" --revoked
	printf '%s\n' "$OUT" | tail -n +2 | awk 'NF {print $1}' | while read -r s; do norm "$s"; done | sort || true
}
tmp_leftovers() { find "$1" -maxdepth 1 -name '*.tmp-*' -printf '%f\n' 2>/dev/null || true; }

# CRLs seen so far: number -> SHA-256 of crl.pem. The same number must never name two
# different files, and the number must never go back.
declare -A SEEN=()
LAST_N=0
# see_crl DIR : record DIR/crl.pem (problems appended to p).
see_crl() {
	local f=$1/crl.pem n sha
	n=$(crl_number "$f")
	sha=$(sha_of "$f")
	if [ -z "$n" ]; then
		p+=("crl.pem has no CRL number (does it parse?)")
		return 0
	fi
	if [ -n "${SEEN[$n]:-}" ] && [ "${SEEN[$n]}" != "$sha" ]; then
		p+=("CRL number $n was published on two different CRLs")
	fi
	SEEN[$n]=$sha
	[ "$n" -ge "$LAST_N" ] || p+=("the CRL number went back from $LAST_N to $n")
	LAST_N=$n
	out=$(openssl crl -in "$f" -CAfile "$1/intermediate.pem" -noout 2>&1) && [[ $out == *"verify OK"* ]] ||
		p+=("crl.pem does not verify with the issuing CA: $out")
}

# invariants DIR : the checks after a fault (problems appended to p). Runs `mtls ca crl` to
# repair, as an operator would.
invariants() {
	local d=$1 revoked in_crl extra missing
	see_crl "$d"
	revoked=$(store_revoked "$d")
	in_crl=$(crl_serials "$d/crl.pem")
	extra=$(comm -13 <(printf '%s\n' "$revoked") <(printf '%s\n' "$in_crl") | grep . || true)
	[ -z "$extra" ] || p+=("crl.pem revokes what the inventory says is valid: $extra")
	ca audit --dir "$d"
	[ "$RC" = 0 ] || p+=("audit after the fault: exit $RC: $OUT $ERR")
	ca crl --dir "$d"
	[ "$RC" = 0 ] || p+=("the next 'mtls ca crl': exit $RC: $ERR")
	see_crl "$d"
	revoked=$(store_revoked "$d")
	in_crl=$(crl_serials "$d/crl.pem")
	missing=$(comm -23 <(printf '%s\n' "$revoked") <(printf '%s\n' "$in_crl") | grep . || true)
	[ -z "$missing" ] || p+=("revoked in the inventory but not in the next CRL: $missing")
	[ "$revoked" = "$in_crl" ] || p+=("after 'mtls ca crl' the CRL is not the inventory's revoked set")
	ca audit --dir "$d"
	[ "$RC" = 0 ] || p+=("audit after the repair: exit $RC: $OUT $ERR")
	[ -z "$(tmp_leftovers "$d")" ] || p+=("temporary files left after the next run: $(tmp_leftovers "$d")")
}

# A pool of certificates to revoke, one per case.
D=$W/ca
ca init --dir "$D"
[ "$RC" = 0 ] || {
	fail "init the CA" "exit $RC" "$ERR"
	finish
}
mkdir -m 700 -- "$W/pool"
POOL=()
for i in $(seq 1 40); do
	ca issue --dir "$D" --profile client --uri "spiffe://example.org/crash/c$i" --out "$W/pool/c$i"
	[ "$RC" = 0 ] || break
	POOL+=("$W/pool/c$i.pem")
done
[ ${#POOL[@]} = 40 ] || {
	fail "issue the pool of certificates" "exit $RC" "$ERR"
	finish
}
NEXT=0
next_cert() {
	CERT=${POOL[$NEXT]}
	NEXT=$((NEXT + 1))
}
p=()
see_crl "$D"
report "setup: CA and 40 certificates" "${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# SIGKILL at each fsync, fdatasync and rename"

# kill_each WHAT ARGS... : run `mtls ca ARGS` (with the next certificate of the pool as
# --cert when WHAT is revoke) killed at the Nth call of each syscall, N = 1, 2, ... until the
# command completes without reaching it; check the invariants after each.
kill_each() {
	local what=$1 sc n k cases=0 killed=0 s
	shift
	for sc in fsync fdatasync rename; do
		for n in $(seq 1 12); do
			args=("$@")
			if [ "$what" = revoke ]; then
				next_cert
				args+=(--cert "$CERT")
			fi
			LAST_CMD="strace inject=$sc:signal=KILL:when=$n mtls ca ${args[*]}"
			run sh -c '"$@"; exit $?' sh "${STRACE[@]}" -e trace="$sc" -e inject="$sc:signal=KILL:when=$n" "$MTLS" ca "${args[@]}"
			k=$RC
			cases=$((cases + 1))
			p=()
			case $k in
			137) killed=$((killed + 1)) ;;
			0) ;;
			*) p+=("exit status $k, expected 0 or 137 (killed)" "$ERR") ;;
			esac
			if [ "$what" = revoke ] && [ "$k" = 0 ]; then
				s=$(serial_of "$CERT")
				grep -qxF -- "$s" <(crl_serials "$D/crl.pem") || p+=("revoke succeeded but crl.pem does not list $s")
			fi
			invariants "$D"
			report "$what killed at $sc #$n" "${p[@]+"${p[@]}"}"
			[ "$k" = 137 ] || break
		done
	done
	echo "# ($what: $cases runs, $killed killed)"
}
kill_each revoke revoke --dir "$D" --reason keyCompromise
kill_each crl crl --dir "$D"

# ==========================================================================================
echo "# mtls ca init: SIGKILL at each link and rename"

# The CA is built in a staging directory beside --dir and renamed into place: killed at any
# point, --dir is a whole CA or absent; the next init of it removes what the killed one left
# (the staging directory with its keys, a root key already put into --root-key-dir) and
# creates the CA, or refuses because there is one. The links put each file of the staging
# directory and then the root key into place, the renames crl.pem and then the directory:
# between them lie all the states a kill can leave (the fsyncs add none).
mkdir -m 700 -- "$W/init"
for sc in link rename; do
	for n in $(seq 1 12); do
		X=$W/init/$sc-$n Y=$W/init/$sc-$n-offline
		LAST_CMD="strace inject=$sc:signal=KILL:when=$n mtls ca init --dir $X --root-key-dir $Y"
		run sh -c '"$@"; exit $?' sh "${STRACE[@]}" -e trace="$sc" -e inject="$sc:signal=KILL:when=$n" \
			"$MTLS" ca init --dir "$X" --root-key-dir "$Y"
		k=$RC
		p=()
		[ "$k" = 0 ] || [ "$k" = 137 ] || p+=("exit status $k, expected 0 or 137 (killed)" "$ERR")
		whole=0
		if [ -e "$X" ]; then
			whole=1
			ca audit --dir "$X"
			[ "$RC" = 0 ] || p+=("$X exists but is not a whole CA: audit exit $RC: $OUT $ERR")
			[ "$(openssl pkey -in "$Y/root.key" -pubout 2>/dev/null)" = "$(openssl x509 -in "$X/root.pem" -noout -pubkey 2>/dev/null)" ] ||
				p+=("$X exists without its root key in $Y")
		fi
		ca init --dir "$X" --root-key-dir "$Y"
		if [ "$whole" = 1 ]; then
			[ "$RC" = 1 ] && [[ $ERR == *"already holds a CA"* ]] || p+=("the next init: exit $RC, expected 1 'already holds a CA': $ERR")
		else
			[ "$RC" = 0 ] || p+=("the next init: exit $RC, expected 0: $ERR")
		fi
		ca issue --dir "$X" --profile client --uri "spiffe://example.org/init/$sc-$n" --out "$X-leaf"
		[ "$RC" = 0 ] || p+=("issue from $X after the next init: exit $RC: $ERR")
		left=$(find "$W/init" -maxdepth 2 -name '*.tmp-*' -printf '%P\n')
		[ -z "$left" ] || p+=("left behind:" "$left")
		report "init killed at $sc #$n: --dir whole or absent, the next init cleans up and works" "${p[@]+"${p[@]}"}"
		rm -rf -- "$X" "$Y" "$X-leaf"*
		[ "$k" = 137 ] || break
	done
done

# ==========================================================================================
echo "# mtls ca audit while a revoke runs"

# The audit reads the inventory, then (slowed down by strace for 2 s) crl.pem; a revoke
# reaches the CA's lock 0.5 s after it starts. The audit holds the lock (shared) throughout,
# so the revoke waits for it: the audit sees the inventory and crl.pem of one moment, never a
# crl.pem newer than the inventory it read (which it would call tampering).
next_cert
start_bg "$TMP/race-audit.log" "${STRACE[@]}" -P "$D/crl.pem" -e trace=openat -e inject=openat:delay_enter=2000ms \
	"$MTLS" ca audit --dir "$D"
ra=$BG_PID
start_bg "$TMP/race-revoke.log" "${STRACE[@]}" -e trace=flock -e inject=flock:delay_enter=500ms:when=1 \
	"$MTLS" ca revoke --dir "$D" --cert "$CERT"
rr=$BG_PID
wait_exit "$ra" "$RUN_LIMIT"
a_rc=$EXIT_RC
wait_exit "$rr" "$RUN_LIMIT"
r_rc=$EXIT_RC
p=()
[ "$a_rc" = 0 ] && [[ $(cat -- "$TMP/race-audit.log") == "audit log intact: "* ]] ||
	p+=("the audit during the revoke: exit $a_rc:" "$(cat -- "$TMP/race-audit.log")")
[ "$r_rc" = 0 ] || p+=("the revoke: exit $r_rc:" "$(cat -- "$TMP/race-revoke.log")")
invariants "$D"
report "audit while a revoke commits and publishes: consistent (no false tampering), the revoke waits" "${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# mtls ca issue: SIGKILL at each fsync and link; a link that fails"

# issue_files PREFIX : the files of PREFIX on disk must be whole and known (problems in p):
# a certificate and chain that verify and are in the inventory, a key (0600) only beside its
# certificate and matching it.
issue_files() {
	local f=$1 s
	if [ -e "$f.pem" ]; then
		out=$(openssl verify -CAfile "$D/root.pem" -untrusted "$D/intermediate.pem" "$f.pem" 2>&1) ||
			p+=("${f##*/}.pem does not verify: $out")
		s=$(serial_of "$f.pem")
		grep -qxF -- "$s" <(run "$MTLS" ca list --dir "$D" && printf '%s\n' "$OUT" | awk 'NR > 1 {print $1}' |
			while read -r x; do norm "$x"; done) || p+=("${f##*/}.pem (serial $s) is not in the inventory")
	fi
	if [ -e "$f-chain.pem" ]; then
		[ -e "$f.pem" ] && [ "$(grep -c 'BEGIN CERTIFICATE' "$f-chain.pem")" = 2 ] || p+=("${f##*/}-chain.pem without its certificate, or not whole")
	fi
	if [ -e "$f.key" ]; then
		[ -e "$f.pem" ] && [ -e "$f-chain.pem" ] || p+=("a private key ${f##*/}.key without its certificate")
		[ "$(stat -c %a -- "$f.key")" = 600 ] || p+=("${f##*/}.key mode $(stat -c %a -- "$f.key")")
		[ "$(openssl pkey -in "$f.key" -pubout 2>/dev/null)" = "$(openssl x509 -in "$f.pem" -noout -pubkey 2>/dev/null)" ] ||
			p+=("${f##*/}.key is not the key of ${f##*/}.pem")
	fi
}

# (fsync: the files staged before the commit, then the directory after the links; link: the
# names given after the commit; SQLite's own fdatasyncs are the revoke cases' above.)
mkdir -m 700 -- "$W/iss"
for sc in fsync link; do
	for n in $(seq 1 8); do
		P=$W/iss/$sc-$n
		LAST_CMD="strace inject=$sc:signal=KILL:when=$n mtls ca issue --out $P"
		run sh -c '"$@"; exit $?' sh "${STRACE[@]}" -e trace="$sc" -e inject="$sc:signal=KILL:when=$n" \
			"$MTLS" ca issue --dir "$D" --profile client --uri "spiffe://example.org/iss/$sc-$n" --out "$P"
		k=$RC
		p=()
		[ "$k" = 0 ] || [ "$k" = 137 ] || p+=("exit status $k, expected 0 or 137 (killed)" "$ERR")
		# the first three fsyncs are the files' own, written before the commit: killed
		# there, nothing is issued
		if [ "$sc" = fsync ] && [ "$n" -le 3 ] && [ "$k" = 137 ]; then
			run "$MTLS" ca list --dir "$D"
			[[ $OUT != *"URI:spiffe://example.org/iss/$sc-$n"* ]] || p+=("killed before the commit, yet the inventory holds the certificate")
		fi
		issue_files "$P"
		ca audit --dir "$D"
		[ "$RC" = 0 ] || p+=("audit after the kill: exit $RC: $OUT $ERR")
		# the next issue to the same --out removes what the killed one left of it, and
		# then issues, or refuses because a file of PREFIX is there
		ca issue --dir "$D" --profile client --uri "spiffe://example.org/iss/$sc-$n-again" --out "$P"
		if [ -e "$P.pem" ] && [ "$k" = 137 ] && [ "$RC" = 0 ]; then
			: # nothing of PREFIX had its name: this one issued
		elif [ "$RC" != 0 ]; then
			[ "$RC" = 2 ] && [[ $ERR == *"already exists"* ]] || p+=("the next issue to $P: exit $RC: $ERR")
		fi
		issue_files "$P"
		left=$(find "$W/iss" -maxdepth 1 -name "${P##*/}[.-]*.tmp-*" -printf '%f\n')
		[ -z "$left" ] || p+=("temporary files of the killed issue left after the next one:" "$left")
		report "issue killed at $sc #$n: files whole, a key never without its certificate, audit intact, leftovers gone at the next issue" "${p[@]+"${p[@]}"}"
		[ "$k" = 137 ] || break
	done
done

# A link that fails after the commit (the names cannot be given): the undelivered
# certificate is revoked, the CRL published, nothing of PREFIX is left.
P=$W/iss/eio
LAST_CMD="strace inject=link:error=EIO:when=2 mtls ca issue --out $P"
run sh -c '"$@"; exit $?' sh "${STRACE[@]}" -e trace=link -e inject=link:error=EIO:when=2 \
	"$MTLS" ca issue --dir "$D" --profile client --uri spiffe://example.org/iss/eio --out "$P"
p=()
[ "$RC" = 1 ] || p+=("exit status $RC, expected 1")
[[ $ERR == "mtls ca issue: cannot create $P-chain.pem: Input/output error; the certificate (serial "*") was committed but not delivered, so it is revoked (cessationOfOperation) and the CRL published; issue again" ]] ||
	p+=("the message does not say what happened")
s=$(sed -n 's/.*(serial \([0-9A-F]*\)).*/\1/p' <<<"$ERR")
[ -n "$s" ] && grep -qxF -- "$(norm "$s")" <(store_revoked "$D") || p+=("serial '$s' is not revoked in the inventory")
[ -n "$s" ] && grep -qxF -- "$(norm "$s")" <(crl_serials "$D/crl.pem") || p+=("crl.pem does not revoke serial '$s'")
left=$(find "$W/iss" -maxdepth 1 -name 'eio*' -printf '%f\n')
[ -z "$left" ] || p+=("files of PREFIX left:" "$left")
ca audit --dir "$D"
[ "$RC" = 0 ] || p+=("audit: exit $RC: $OUT")
report "issue whose link fails after the commit: the certificate revoked as undelivered, nothing left" "${p[@]+"${p[@]}"}"

# Two issues to the same --out: the second starts while the first (its links slowed down)
# has its files staged; it waits, then refuses. One certificate, the first one's.
P=$W/iss/same
start_bg "$TMP/same-1.log" "${STRACE[@]}" -e trace=link -e inject=link:delay_enter=200ms \
	"$MTLS" ca issue --dir "$D" --profile client --uri spiffe://example.org/iss/same --out "$P"
s1=$BG_PID
for _ in $(seq 1 400); do
	[ -z "$(find "$W/iss" -maxdepth 1 -name 'same.pem.tmp-*' -print -quit)" ] || break
	sleep 0.05
done
start_bg "$TMP/same-2.log" "$MTLS" ca issue --dir "$D" --profile client --uri spiffe://example.org/iss/same --out "$P"
s2=$BG_PID
wait_exit "$s1" "$RUN_LIMIT"
r1=$EXIT_RC
wait_exit "$s2" "$RUN_LIMIT"
r2=$EXIT_RC
p=()
[ "$r1" = 0 ] && [ "$r2" = 2 ] || p+=("exit statuses $r1 and $r2, expected 0 and 2" "$(cat -- "$TMP/same-1.log" "$TMP/same-2.log")")
grep -q "already exists" "$TMP/same-2.log" || p+=("the second does not say 'already exists'")
run "$MTLS" ca list --dir "$D"
[ "$(grep -c 'iss/same$' <<<"$OUT")" = 1 ] || p+=("$(grep -c 'iss/same$' <<<"$OUT") certificates for the --out, expected 1")
issue_files "$P"
report "two issues to the same --out: the second waits for the first, then refuses; one certificate" "${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# SIGKILL at random moments"

# Each fsync, fdatasync and rename is slowed down by 10 ms (strace), so that random kills
# often land between two of them: where a wrong order shows.
p=()
outcomes=""
for i in $(seq 1 40); do
	if [ $((i % 4)) = 0 ]; then
		next_cert
		args=(revoke --dir "$D" --cert "$CERT" --reason keyCompromise)
	else
		args=(crl --dir "$D")
	fi
	delay=$(printf '0.%03d' $((20 + RANDOM % 180)))
	LAST_CMD="mtls ca ${args[*]} killed after $delay s"
	run sh -c '"$@"; exit $?' sh "${STRACE[@]}" -e trace=fsync,fdatasync,rename \
		-e inject=fsync,fdatasync,rename:delay_enter=10ms timeout -s KILL "$delay" "$MTLS" ca "${args[@]}"
	outcomes+=" $RC"
	case $RC in
	0 | 124 | 137) ;;
	*) p+=("run $i (${args[0]}): exit status $RC: $ERR") ;;
	esac
	see_crl "$D"
	revoked=$(store_revoked "$D")
	extra=$(comm -13 <(printf '%s\n' "$revoked") <(crl_serials "$D/crl.pem") | grep . || true)
	[ -z "$extra" ] || p+=("run $i (${args[0]}): crl.pem revokes what the inventory says is valid: $extra")
done
invariants "$D"
report "40 revokes and CRLs killed at random moments: no CRL number on two CRLs, nothing unrevoked (exit statuses:$outcomes)" "${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# disk full"

MNT=$TMP/full
mkdir -m 700 -- "$MNT"
MOUNTED=""
_crash_exit() {
	local rc=$?
	set +e
	[ -z "$MOUNTED" ] || umount -- "$MNT" 2>/dev/null || umount -l -- "$MNT" 2>/dev/null
	(exit "$rc") # _cleanup exits with $?
	_cleanup
}
trap _crash_exit EXIT
if ! mount -t tmpfs -o size=2m,mode=700 tmpfs "$MNT" 2>/dev/null; then
	echo "skip  disk full: cannot mount a tmpfs (not root?)"
	finish
	exit $?
fi
MOUNTED=1
F=$MNT/ca
ca init --dir "$F"
[ "$RC" = 0 ] || fail "init a CA on a 2 MiB tmpfs" "exit $RC" "$ERR"
FPOOL=()
for i in $(seq 1 30); do
	ca issue --dir "$F" --profile client --uri "spiffe://example.org/full/c$i" --out "$W/pool/f$i"
	[ "$RC" = 0 ] || break
	FPOOL+=("$W/pool/f$i.pem")
done
[ ${#FPOOL[@]} = 30 ] || fail "issue certificates on the tmpfs" "exit $RC" "$ERR"
SEEN=()
LAST_N=0

# fill KIB : leave KIB KiB free on the tmpfs.
fill() {
	rm -f -- "$MNT/filler"
	local avail
	avail=$(df -B1 --output=avail -- "$MNT" | tail -n 1 | tr -d ' ')
	[ "$avail" -le $(($1 * 1024)) ] || fallocate -l $((avail - $1 * 1024)) -- "$MNT/filler"
}

# full_case WHAT KIB : `mtls ca WHAT` with KIB KiB free, then the invariants with space
# freed. OUTCOME: ok, unchanged (nothing was committed) or committed (crl.pem not written).
full_case() {
	local what=$1 kib=$2 before s args
	p=()
	before=$(sha_of "$F/crl.pem")
	args=(crl --dir "$F")
	if [ "$what" = revoke ]; then
		CERT=${FPOOL[$FNEXT]}
		FNEXT=$((FNEXT + 1))
		args=(revoke --dir "$F" --cert "$CERT" --reason keyCompromise)
	fi
	fill "$kib"
	ca "${args[@]}"
	rm -f -- "$MNT/filler"
	OUTCOME=ok
	if [ "$RC" != 0 ]; then
		OUTCOME=unchanged
		[[ $ERR != *" is committed"* ]] || OUTCOME=committed
		[ "$RC" = 1 ] || p+=("exit status $RC, expected 0 or 1")
		[ "$(printf '%s\n' "$ERR" | wc -l)" = 1 ] || p+=("stderr is not one line")
		[[ $ERR == *"disk full"* ]] || p+=("the message does not say 'disk full'")
		[[ $ERR != *corrupt* && $ERR != *"not a usable"* && $ERR != *"restore it from a backup"* ]] ||
			p+=("a full disk is reported as a damaged inventory")
		[ -z "$(tmp_leftovers "$F")" ] || p+=("temporary files left: $(tmp_leftovers "$F")")
		[ "$(sha_of "$F/crl.pem")" = "$before" ] || p+=("a failed command replaced crl.pem")
		if [ "$OUTCOME" = committed ]; then
			[[ $ERR == *"mtls ca crl"* ]] || p+=("the message does not say to run 'mtls ca crl'")
		else
			[[ $ERR == *"nothing was changed"* ]] || p+=("the message does not say 'nothing was changed' or what is committed")
		fi
		if [ "$what" = revoke ]; then
			s=$(serial_of "$CERT")
			if grep -qxF -- "$s" <(store_revoked "$F"); then
				[ "$OUTCOME" = committed ] || p+=("the revocation was committed but the message does not say so")
			else
				[ "$OUTCOME" = unchanged ] || p+=("the message says the revocation is committed, the inventory says valid")
			fi
		fi
		p+=("${p[@]+"stderr of the command: $ERR"}")
	fi
	invariants "$F"
	report "$what with $kib KiB free: $OUTCOME; invariants hold after freeing space" "${p[@]+"${p[@]}"}"
}

# scan WHAT : from a full disk up, 4 KiB more each time, until the command succeeds. On the
# way it must have failed both before its commit and after it (writing crl.pem).
scan() {
	local kib seen=""
	for kib in 0 16 $(seq 24 4 200); do
		full_case "$1" "$kib"
		seen+=" $OUTCOME"
		[ "$OUTCOME" != ok ] || break
		[ "$1" != revoke ] || [ "$FNEXT" -lt ${#FPOOL[@]} ] || break
	done
	p=()
	[[ $seen == *" unchanged"* ]] || p+=("no case failed before the commit")
	[[ $seen == *" committed"* ]] || p+=("no case failed after the commit, writing crl.pem")
	[[ $seen == *" ok" ]] || p+=("the command never succeeded")
	verdict "$1 on a filling disk: failed before the commit, after it, then succeeded ($seen)" "${p[@]+"${p[@]}"}"
}
FNEXT=0
scan revoke
scan crl

finish
