#!/usr/bin/env bash
# Crash safety of certificate renewal and of the other multi-file writes (renew/fileset.c),
# shown by fault injection against a real `mtls ca serve`:
#   - `mtls renew --force` killed (strace, SIGKILL) at the Nth fsync, rename, link, linkat
#     and unlink in turn, N = 1, 2, ... until a run completes without reaching it. After
#     each kill the files on disk match (openssl: the certificate's public key is the key's)
#     or a journal records the half-made change; the next `mtls renew` (not due: it only
#     recovers) leaves a matching pair, the NEW one whenever the change had begun (the CA
#     issued it: its key is never lost), and nothing temporary; a daemon started on the
#     files right after a kill between the two renames starts.
#   - the disk full at the Nth write (inject=write:error=ENOSPC): one line, the old pair.
#   - `mtls agent --once --cert-out --key-out --ca-out` killed at each rename: the next run
#     leaves copies that match (written as one set); a journal in the copies' directory
#     that another user wrote is not followed (as root: it could name any file).
#   - `mtls enroll` killed at each link and rename: the next enroll finds the directory
#     whole (and says so) or empty (and enrolls), never a key beside a foreign certificate.
set -euo pipefail
# the CA service lives through the whole script (about 30 s, a minute or more under ASan on a
# loaded machine): bounded, but not by the default 50 s
BG_LIMIT=${BG_LIMIT:-240}
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

if ! command -v strace >/dev/null || ! strace -f -qq -o /dev/null true 2>/dev/null; then
	echo "skip  all cases: strace is not installed (or cannot trace here)"
	exit 0
fi

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca
unset MTLS_TOKEN https_proxy HTTPS_PROXY all_proxy ALL_PROXY || true

# LeakSanitizer cannot work under ptrace (sanitizer builds): off for the traced runs only.
STRACE=(env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" strace -f -qq -o /dev/null)

setup_die() {
	echo "(setup) $1" >&2
	shift
	printf '%s\n' "$@" >&2
	exit 1
}
m() {
	LAST_CMD="mtls $*"
	run "$MTLS" "$@"
}
# traced SYSCALL INJECT ARGS... : mtls ARGS under strace with -e inject=SYSCALL:INJECT.
traced() {
	local sc=$1 inj=$2
	shift 2
	LAST_CMD="strace -e inject=$sc:$inj mtls $*"
	run "${STRACE[@]}" -e trace="$sc" -e inject="$sc:$inj" "$MTLS" "$@"
}
serial() { openssl x509 -in "$1" -noout -serial 2>/dev/null | sed 's/^serial=//'; }
# matches CERT KEY : is the first certificate of CERT the one of KEY?
matches() {
	local a b
	a=$(openssl x509 -in "$1" -noout -pubkey 2>/dev/null) || return 1
	b=$(openssl pkey -in "$2" -pubout 2>/dev/null) || return 1
	[ -n "$a" ] && [ "$a" = "$b" ]
}
# leftovers DIR : temporary files and journals left in DIR (none after a recovery).
leftovers() {
	find "$1" -maxdepth 1 \( -name '*.new-*' -o -name '*.old-*' -o -name '*.tmp-*' \
		-o -name '.mtls-fileset*' \) -printf '%f\n' | sort | tr '\n' ' '
}
journal() { [ -e "$1/.mtls-fileset" ] || [ -e "$1/.mtls-fileset-undo" ]; }

"$MTLS" ca init --dir "$D" >/dev/null 2>&1 || setup_die "mtls ca init failed"
start_bg "$W/serve.log" "$MTLS" ca serve --dir "$D" --listen 127.0.0.1:0 --http-listen none
SERVE_PID=$BG_PID
wait_for_line "$W/serve.log" '"event":"listening"' "$READY_LIMIT" "$SERVE_PID" ||
	setup_die "mtls ca serve did not start" "$(cat -- "$W/serve.log")"
AP=$(sed -n 's/.*"event":"listening".*"address":"[^"]*:\([0-9][0-9]*\)".*/\1/p;T;q' "$W/serve.log")
APP=spiffe://example.org/app

token() {
	"$MTLS" ca token --dir "$D" --profile "$1" --uri "$APP" --dns localhost \
		--ca-url "https://127.0.0.1:$AP" 2>/dev/null
}
E=$W/e
MTLS_TOKEN=$(token peer) m enroll --dir "$E"
[ "$RC" = 0 ] || setup_die "mtls enroll" "$ERR"
matches "$E/cert.pem" "$E/key.pem" || setup_die "the enrolled pair does not match"
pass "setup: a CA service and an enrollment directory"

# ==========================================================================================
echo "# mtls renew: SIGKILL at each fsync, rename, link, linkat and unlink"

DAEMON_TRIED=0
# daemon_starts TAG HOW : mtls server on the files as they are now (its recovery runs at
# start); HOW is "config" (the enrollment's mtls.conf: it renews, --ca-url) or "files" (the
# same files named by hand, no --ca-url: renewed by a timer's mtls renew).
daemon_starts() {
	local log=$W/daemon-$1.log
	local how=(--config "$E/mtls.conf")
	[ "$2" = files ] && how=(--cert "$E/cert.pem" --key "$E/key.pem" --ca "$E/ca.pem")
	start_bg "$log" "$MTLS" server "${how[@]}" --listen 127.0.0.1:0 \
		--target 127.0.0.1:1 --allow-uri "$APP" --log-format json
	# bounded like every start here; it ends early if the daemon exits (a refusal)
	if wait_for_line "$log" '"event":"listening"' "$((READY_LIMIT * 3))" "$BG_PID"; then
		stop_bg "$BG_PID"
		return 0
	fi
	stop_bg "$BG_PID"
	cat -- "$log"
	return 1
}

total=0
killed=0
for sc in fsync rename link linkat unlink; do
	for n in $(seq 1 40); do
		before=$(serial "$E/cert.pem")
		traced "$sc" "signal=KILL:when=$n" renew --dir "$E" --force
		k=$RC
		total=$((total + 1))
		p=()
		case $k in
		137) killed=$((killed + 1)) ;;
		0) ;;
		*) p+=("exit status $k, expected 0 or 137 (killed)") ;;
		esac
		half=no
		if journal "$E"; then
			half=yes
		elif ! matches "$E/cert.pem" "$E/key.pem"; then
			p+=("killed: key.pem does not match cert.pem and no journal records the change")
		fi
		# a daemon on the files as the kill left them, once, where they do not match: without
		# --ca-url, then (the same state again, copied back with its links) with it
		if [ "$DAEMON_TRIED" = 0 ] && [ "$half" = yes ] &&
			! matches "$E/cert.pem" "$E/key.pem"; then
			DAEMON_TRIED=1
			rm -rf -- "$W/half"
			cp -a -- "$E" "$W/half"
			for how in files config; do
				if [ "$how" = config ]; then
					rm -rf -- "$E"
					cp -a -- "$W/half" "$E"
					matches "$E/cert.pem" "$E/key.pem" && p+=("the copied half state matches: no test")
				fi
				if ! out=$(daemon_starts "$sc-$n-$how" "$how"); then
					p+=("mtls server ($how) did not start after the kill: $out")
				elif ! matches "$E/cert.pem" "$E/key.pem"; then
					p+=("mtls server ($how) left a mismatched pair")
				else
					pass "a kill between the two renames ($sc #$n): key.pem does not match, mtls server ($how) starts on them all the same (recovered)"
				fi
			done
		fi
		# the next run (not due: it recovers, and renews nothing)
		m renew --dir "$E"
		[ "$RC" = 0 ] || p+=("the next mtls renew failed (exit $RC): $ERR")
		matches "$E/cert.pem" "$E/key.pem" || p+=("after the next run: key.pem does not match cert.pem")
		after=$(serial "$E/cert.pem")
		if [ "$half" = yes ] && [ "$after" = "$before" ]; then
			p+=("the change had begun (journal) but the old certificate $before is back: the new key was lost")
		fi
		[ -z "$(leftovers "$E")" ] || p+=("left behind: $(leftovers "$E")")
		[ "$(stat -c %a -- "$E/key.pem")" = 600 ] || p+=("key.pem has mode $(stat -c %a -- "$E/key.pem")")
		openssl verify -CAfile "$E/ca.pem" -untrusted "$E/cert.pem" "$E/cert.pem" >/dev/null 2>&1 ||
			p+=("cert.pem does not verify against ca.pem")
		report "renew killed at $sc #$n (journal: $half)" "${p[@]+"${p[@]}"}"
		[ "$k" = 137 ] || break
	done
done
echo "# ($total runs, $killed killed)"
[ "$DAEMON_TRIED" = 1 ] || fail "no kill left a mismatched pair for the daemon to recover" \
	"(the injection never hit between the renames?)"

# ==========================================================================================
echo "# mtls renew: the disk full at each write"

for n in $(seq 1 60); do
	before=$(serial "$E/cert.pem")
	traced write "error=ENOSPC:when=$n" renew --dir "$E" --force
	k=$RC
	p=()
	case $k in
	0 | 1) ;;
	*) p+=("exit status $k, expected 0 or 1") ;;
	esac
	if [ "$k" = 1 ]; then
		[ "$(printf '%s\n' "$ERR" | wc -l)" = 1 ] || p+=("stderr is not one line")
		[ "$(serial "$E/cert.pem")" = "$before" ] || p+=("failed, yet cert.pem changed")
		[[ $ERR == *"disk full"*"old one stays in use"* ]] || p+=("the message does not say the disk is full and the old pair stays: $ERR")
	fi
	matches "$E/cert.pem" "$E/key.pem" || p+=("key.pem does not match cert.pem")
	journal "$E" && p+=("a journal stays after a failure that was not a crash")
	[ -z "$(leftovers "$E")" ] || p+=("left behind: $(leftovers "$E")")
	report "renew with ENOSPC at write #$n (exit $k)" "${p[@]+"${p[@]}"}"
	[ "$k" != 0 ] || break
done

# ==========================================================================================
echo "# mtls agent --once: its copies, SIGKILL at each rename"

mkdir -m 700 -- "$W/app"
m agent --dir "$E" --once --cert-out "$W/app/server.crt" --key-out "$W/app/server.key" \
	--ca-out "$W/app/ca.pem"
[ "$RC" = 0 ] || setup_die "mtls agent --once" "$ERR"
for n in $(seq 1 12); do
	m renew --dir "$E" --force
	[ "$RC" = 0 ] || setup_die "mtls renew --force" "$ERR"
	traced rename "signal=KILL:when=$n" agent --dir "$E" --once \
		--cert-out "$W/app/server.crt" --key-out "$W/app/server.key" --ca-out "$W/app/ca.pem"
	k=$RC
	p=()
	case $k in
	0 | 137) ;;
	*) p+=("exit status $k, expected 0 or 137: $ERR") ;;
	esac
	journal "$W/app" || matches "$W/app/server.crt" "$W/app/server.key" ||
		p+=("killed: the copies do not match and no journal records the change")
	m agent --dir "$E" --once --cert-out "$W/app/server.crt" --key-out "$W/app/server.key" \
		--ca-out "$W/app/ca.pem"
	[ "$RC" = 0 ] || p+=("the next agent run failed: $ERR")
	matches "$W/app/server.crt" "$W/app/server.key" || p+=("the copies do not match")
	cmp -s "$E/cert.pem" "$W/app/server.crt" || p+=("server.crt is not cert.pem")
	cmp -s "$E/key.pem" "$W/app/server.key" || p+=("server.key is not key.pem")
	[ -z "$(leftovers "$W/app")" ] || p+=("left behind: $(leftovers "$W/app")")
	report "agent copies killed at rename #$n (exit $k)" "${p[@]+"${p[@]}"}"
	[ "$k" = 137 ] || break
done

# A journal in the copies' directory that this agent did not write: the directory may be
# its service's (PostgreSQL's data directory, owned by postgres), and the agent runs as root.
# Not followed (it names a file outside the copies: "created by the change, remove it"):
# the file stays, and the message says whose journal it is.
if [ "$(id -u)" = 0 ]; then
	printf 'precious\n' >"$W/victim"
	printf 'mtls fileset 1\n0123456789ab - %s\n' "$W/victim" >"$W/app/.mtls-fileset-undo"
	chown 65534:65534 -- "$W/app/.mtls-fileset-undo"
	m agent --dir "$E" --once --cert-out "$W/app/server.crt" --key-out "$W/app/server.key" \
		--ca-out "$W/app/ca.pem"
	p=()
	[ -e "$W/victim" ] || p+=("the agent (root) removed $W/victim, named by a journal uid 65534 wrote")
	[ "$RC" != 0 ] || p+=("the agent followed a journal it did not write")
	[[ $ERR == *"not written by this user"* ]] || p+=("the message does not say whose journal it is: $ERR")
	report "agent: a journal another user wrote in the copies' directory is not followed" \
		"${p[@]+"${p[@]}"}"
	rm -f -- "$W/app/.mtls-fileset-undo" "$W/victim"
else
	echo "skip  agent: a journal another user wrote (needs root to make one)"
fi

# ==========================================================================================
echo "# mtls enroll: SIGKILL at each link and rename"

i=0
for sc in link rename; do
	for n in $(seq 1 12); do
		i=$((i + 1))
		X=$W/enr-$i
		tok=$(token client)
		MTLS_TOKEN=$tok traced "$sc" "signal=KILL:when=$n" enroll --dir "$X"
		k=$RC
		p=()
		case $k in
		0 | 137) ;;
		*) p+=("exit status $k, expected 0 or 137: $ERR") ;;
		esac
		if ! journal "$X" && [ -e "$X/key.pem" ] && [ -e "$X/cert.pem" ] &&
			! matches "$X/cert.pem" "$X/key.pem"; then
			p+=("killed: key.pem does not match cert.pem and no journal records the change")
		fi
		# the next enroll: finds it whole (and refuses), or enrolls
		MTLS_TOKEN=$(token client) m enroll --dir "$X"
		case $RC in
		0) ;;
		1) [[ $ERR == *"already holds an enrollment"* ]] || p+=("the next enroll failed: $ERR") ;;
		*) p+=("the next enroll: exit $RC: $ERR") ;;
		esac
		for f in ca.pem ca-url cert.pem key.pem mtls.conf; do
			[ -s "$X/$f" ] || p+=("$f is missing after the next enroll")
		done
		matches "$X/cert.pem" "$X/key.pem" || p+=("key.pem does not match cert.pem")
		[ -z "$(leftovers "$X")" ] || p+=("left behind: $(leftovers "$X")")
		report "enroll killed at $sc #$n (exit $k)" "${p[@]+"${p[@]}"}"
		[ "$k" = 137 ] || break
	done
done

finish
