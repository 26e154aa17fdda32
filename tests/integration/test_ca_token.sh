#!/usr/bin/env bash
# `mtls ca token`: a one-time enrollment token from a real `mtls ca init`. The token alone on
# stdout, of the documented shape: its root part is the SHA-256 of root.pem's DER (computed
# here with openssl), its URL part the CA's URL (--ca-url, else the api_url `mtls ca serve`
# records), its CRC-32 that of the text before it (python3's zlib, when there). The
# inventory keeps the SHA-256 of the secret, never the secret (grep of ca.db and its WAL),
# with the grant and an audit entry; `mtls ca audit` passes. Bad options exit 2, a CA that
# cannot be opened 1, each with one line on stderr, nothing on stdout and nothing recorded.
# An inventory made before tokens (no tokens table) still lists and audits, and takes tokens.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca
APP=spiffe://example.org/ns/dev/sa/app
URL=https://ca.example.org:8443

HAVE_SQLITE=1
command -v sqlite3 >/dev/null || HAVE_SQLITE=0
HAVE_PYTHON=1
command -v python3 >/dev/null || HAVE_PYTHON=0

# ca ARGS... : `mtls ca ARGS...` (RC, OUT, ERR).
ca() {
	LAST_CMD="mtls ca $*"
	run "$MTLS" ca "$@"
}

# audit_count [DIR] : the entries of the audit log, as `mtls ca audit` counts them.
audit_count() { "$MTLS" ca audit --dir "${1:-$D}" 2>/dev/null | sed -n 's/^audit log intact: \([0-9]*\) entries$/\1/p'; }
# sql QUERY [DIR] : one query on the inventory ("" without sqlite3).
sql() {
	[ "$HAVE_SQLITE" = 1 ] || return 0
	sqlite3 "${2:-$D}/ca.db" "$1" 2>/dev/null || true
}
tokens() { sql "SELECT COUNT(*) FROM tokens" "${1:-$D}"; }
# b64url : stdin as unpadded base64url.
b64url() { basenc --base64url -w0 | tr -d '='; }
# unb64url TEXT : the bytes TEXT encodes.
unb64url() {
	local s=$1
	while [ $((${#s} % 4)) != 0 ]; do s+='='; done
	printf '%s' "$s" | basenc --base64url -d
}

ca init --dir "$D"
[ "$RC" = 0 ] || {
	echo "(test setup) mtls ca init failed: $ERR" >&2
	exit 1
}
ROOT_PART=$(openssl x509 -in "$D/root.pem" -outform DER | openssl dgst -sha256 -binary | b64url)
[ ${#ROOT_PART} = 43 ] || {
	echo "(test setup) cannot hash root.pem" >&2
	exit 1
}

# refused NAME STATUS MESSAGE ARGS... : `mtls ca token ARGS...` exits STATUS with one line on
# stderr containing MESSAGE, nothing on stdout, and records nothing (audit log and tokens
# table as before).
refused() {
	local name=$1 status=$2 want=$3 p=() audit_before tokens_before
	shift 3
	audit_before=$(audit_count)
	tokens_before=$(tokens)
	ca token "$@"
	[ "$RC" = "$status" ] || p+=("exit status $RC, expected $status")
	[ -z "$OUT" ] || p+=("stdout is not empty")
	[ -n "$ERR" ] && [ "$(printf '%s\n' "$ERR" | wc -l)" = 1 ] || p+=("stderr is not one line")
	[[ $ERR == "mtls ca token: "*"$want"* ]] || p+=("stderr does not say '$want'")
	[ -n "$audit_before" ] && [ "$(audit_count)" = "$audit_before" ] ||
		p+=("audit log: '$("$MTLS" ca audit --dir "$D" 2>&1)', expected intact with $audit_before entries")
	[ "$(tokens)" = "$tokens_before" ] || p+=("the tokens table has $(tokens) rows, $tokens_before before")
	report "$name" "${p[@]+"${p[@]}"}"
}

# made NAME URL ARGS... : `mtls ca token ARGS...` succeeds: exit 0, one token of the right
# shape alone on stdout (TOKEN), naming the root and URL, one line on stderr, one more
# audit entry, one more row holding the hash of the secret and not the secret.
made() {
	local name=$1 url=$2 p=() audit_before secret hash f
	shift 2
	audit_before=$(audit_count)
	ca token "$@"
	TOKEN=$OUT
	[ "$RC" = 0 ] || p+=("exit status $RC")
	[[ $OUT =~ ^mtls1\.[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{2,342}\.[A-Za-z0-9_-]{6}$ ]] ||
		p+=("stdout is not one token")
	[ "$(printf '%s\n' "$ERR" | wc -l)" = 1 ] && [[ $ERR == "mtls ca token: "*"until "* ]] ||
		p+=("stderr is not one line saying until when")
	IFS=. read -r _ secret root urlpart crc <<<"$OUT"
	[ "$root" = "$ROOT_PART" ] || p+=("root part $root, expected $ROOT_PART (sha256 of root.pem's DER)")
	[ "$(unb64url "$urlpart")" = "$url" ] || p+=("URL part decodes to '$(unb64url "$urlpart")', expected $url")
	if [ "$HAVE_PYTHON" = 1 ]; then
		[ "$(unb64url "$crc" | od -An -tx1 | tr -d ' \n')" = \
			"$(printf '%s' "${OUT%.*}" | python3 -c 'import sys, zlib; print("%08x" % zlib.crc32(sys.stdin.buffer.read()))')" ] ||
			p+=("CRC part is not the CRC-32 of the text before it")
	fi
	[ -n "$audit_before" ] && [ "$(audit_count)" = $((audit_before + 1)) ] ||
		p+=("audit log: '$("$MTLS" ca audit --dir "$D" 2>&1)', expected intact with $((audit_before + 1)) entries")
	# the secret nowhere in the inventory's files, as text or bytes
	for f in "$D"/ca.db*; do
		! grep -a -q -F -- "$secret" "$f" || p+=("${f##*/} holds the secret")
		! grep -a -q -F -- "$(unb64url "$secret" | od -An -tx1 | tr -d ' \n')" "$f" ||
			p+=("${f##*/} holds the secret in hex")
	done
	if [ "$HAVE_SQLITE" = 1 ]; then
		hash=$(unb64url "$secret" | openssl dgst -sha256 -r | cut -c1-64)
		[ "$(sql "SELECT COUNT(*) FROM tokens WHERE hash = '$hash' AND used_at IS NULL")" = 1 ] ||
			p+=("no unused row with the secret's hash $hash")
		[[ $(sql "SELECT action || ' ' || detail FROM audit ORDER BY seq DESC LIMIT 1") == "token token ${hash:0:16}, $(sql "SELECT 'profile ' || profile FROM tokens WHERE hash = '$hash'"), names "* ]] ||
			p+=("newest audit entry is not this token's")
		HASH=$hash
	fi
	report "$name" "${p[@]+"${p[@]}"}"
}

# ==========================================================================================
echo "# tokens made"

made "client token with --ca-url: the token alone, root and URL in it" "$URL" \
	--dir "$D" --profile client --uri "$APP" --ca-url "$URL"
if [ "$HAVE_SQLITE" = 1 ]; then
	row=$(sql "SELECT profile || '|' || cn || '|' || names || '|' || (not_after - created_at) || '|' || used_serial FROM tokens WHERE hash = '$HASH'")
	[ "$row" = "client||URI:$APP|600|" ] && pass "the row: profile, names, 10 minutes by default, unused" ||
		fail "the row: profile, names, 10 minutes by default, unused" "row: $row"
fi
FIRST=$TOKEN

made "peer token with several names and a CN: names one per line, IP in canonical form" "https://[2001:db8::5]:9443" \
	--dir "$D" --profile peer --dns App.Example.ORG --ip 2001:db8:0::01 --uri "$APP" --cn app1 \
	--ttl 24h --ca-url "https://[2001:db8::5]:9443"
if [ "$HAVE_SQLITE" = 1 ]; then
	row=$(sql "SELECT profile || '|' || cn || '|' || replace(names, char(10), ';') || '|' || (not_after - created_at) FROM tokens WHERE hash = '$HASH'")
	[ "$row" = "peer|app1|DNS:app.example.org;IP:2001:db8::1;URI:$APP|86400" ] &&
		pass "the row of a peer token for 24h" || fail "the row of a peer token for 24h" "row: $row"
fi
[ "$TOKEN" != "$FIRST" ] && pass "two tokens differ" || fail "two tokens differ" "$TOKEN"

made "server token for 1m, IPv4 CA URL" "https://10.0.0.5" \
	--dir "$D" --profile server --dns db.example.org --ttl 1m --ca-url https://10.0.0.5
made "--ttl in seconds" "$URL" --dir "$D" --profile client --uri "$APP" --ttl 90s --ca-url "$URL"

if [ "$HAVE_SQLITE" = 1 ]; then
	sqlite3 "$D/ca.db" "INSERT INTO meta (key, value) VALUES ('api_url', 'https://ca.internal:7443')"
	made "no --ca-url: the API URL 'mtls ca serve' recorded" "https://ca.internal:7443" \
		--dir "$D" --profile client --uri "$APP"
	made "--ca-url wins over the recorded one" "$URL" \
		--dir "$D" --profile client --uri "$APP" --ca-url "$URL"
	sqlite3 "$D/ca.db" "UPDATE meta SET value = 'https://ca.internal:7443/api' WHERE key = 'api_url'"
	refused "an unusable recorded API URL: refused, says so" 1 \
		"the API URL recorded in the CA is unusable (the CA URL must not have a path" \
		--dir "$D" --profile client --uri "$APP"
	sqlite3 "$D/ca.db" "DELETE FROM meta WHERE key = 'api_url'"
fi

ca audit --dir "$D"
[ "$RC" = 0 ] && [[ $OUT == "audit log intact: "* ]] && pass "mtls ca audit passes after tokens" ||
	report "mtls ca audit passes after tokens" "audit failed"
ca list --dir "$D"
[ "$RC" = 0 ] && pass "mtls ca list works after tokens" || report "mtls ca list works after tokens" "list failed"

# ==========================================================================================
echo "# refused: usage (exit 2)"

refused "no --ca-url and none recorded" 2 "give --ca-url https://HOST:PORT, or start 'mtls ca serve'" \
	--dir "$D" --profile client --uri "$APP"
refused "no --profile" 2 "give --profile" --dir "$D" --uri "$APP" --ca-url "$URL"
refused "unknown profile" 2 "unknown profile 'root'" --dir "$D" --profile root --uri "$APP" --ca-url "$URL"
refused "server profile without a DNS name or IP" 2 "needs at least one --dns or --ip" \
	--dir "$D" --profile server --uri "$APP" --ca-url "$URL"
refused "client profile without an identity" 2 "needs an identity" \
	--dir "$D" --profile client --cn app --ca-url "$URL"
refused "bad DNS name" 2 "invalid DNS name 'bad..example.org'" \
	--dir "$D" --profile server --dns bad..example.org --ca-url "$URL"
refused "bad SPIFFE ID" 2 "invalid URI 'spiffe://Example.org/x'" \
	--dir "$D" --profile client --uri spiffe://Example.org/x --ca-url "$URL"
refused "bad IP" 2 "invalid IP address '300.1.1.1'" \
	--dir "$D" --profile server --ip 300.1.1.1 --ca-url "$URL"
refused "bad CN" 2 "invalid --cn" --dir "$D" --profile client --uri "$APP" --ca-url "$URL" \
	--cn "$(printf 'a%.0s' {1..65})"
refused "--ttl without a unit" 2 "--ttl: '10' has no unit" \
	--dir "$D" --profile client --uri "$APP" --ttl 10 --ca-url "$URL"
refused "--ttl below 1m" 2 "--ttl: '59s' is out of range; give 1m to 1d" \
	--dir "$D" --profile client --uri "$APP" --ttl 59s --ca-url "$URL"
refused "--ttl above 24h" 2 "--ttl: '25h' is out of range" \
	--dir "$D" --profile client --uri "$APP" --ttl 25h --ca-url "$URL"
refused "--ttl of days above 24h" 2 "--ttl: '2d' is out of range" \
	--dir "$D" --profile client --uri "$APP" --ttl 2d --ca-url "$URL"
refused "--ttl with an unknown unit" 2 "--ttl: '10w' is not a duration" \
	--dir "$D" --profile client --uri "$APP" --ttl 10w --ca-url "$URL"
refused "--ttl with two units" 2 "--ttl: '1h30m' is not a duration" \
	--dir "$D" --profile client --uri "$APP" --ttl 1h30m --ca-url "$URL"
refused "--ca-url http://" 2 "invalid --ca-url: the CA URL must start with https://" \
	--dir "$D" --profile client --uri "$APP" --ca-url http://ca.example.org
refused "--ca-url with a path" 2 "invalid --ca-url: the CA URL must not have a path" \
	--dir "$D" --profile client --uri "$APP" --ca-url https://ca.example.org/
refused "--ca-url with a user name" 2 "must not hold a user name" \
	--dir "$D" --profile client --uri "$APP" --ca-url https://admin@ca.example.org
refused "--ca-url with port 0" 2 "port must be 1 to 65535" \
	--dir "$D" --profile client --uri "$APP" --ca-url https://ca.example.org:0
refused "a positional argument" 2 "see mtls ca token --help" \
	--dir "$D" --profile client --uri "$APP" --ca-url "$URL" extra
refused "an unknown option" 2 "unknown option '--days'" \
	--dir "$D" --profile client --uri "$APP" --ca-url "$URL" --days 3

echo "# refused: runtime (exit 1)"
LAST_CMD="mtls ca token --dir $W/none ..."
ca token --dir "$W/none" --profile client --uri "$APP" --ca-url "$URL"
[ "$RC" = 1 ] && [ -z "$OUT" ] && [ "$(printf '%s\n' "$ERR" | wc -l)" = 1 ] &&
	[[ $ERR == "mtls ca token: $W/none holds no CA"* ]] && [ ! -e "$W/none" ] &&
	pass "no CA in --dir: exit 1, one line, nothing made" ||
	report "no CA in --dir: exit 1, one line, nothing made" "see output"

# ==========================================================================================
echo "# an inventory made before tokens"

if [ "$HAVE_SQLITE" = 1 ]; then
	O=$W/old
	ca init --dir "$O"
	sqlite3 "$O/ca.db" "DROP TABLE tokens"
	before=$(audit_count "$O")
	ca list --dir "$O"
	list_rc=$RC
	[ "$list_rc" = 0 ] && [ -n "$before" ] && [ -z "$(sql "SELECT name FROM sqlite_master WHERE name = 'tokens'" "$O")" ] &&
		pass "an old inventory lists and audits, unchanged by reading" ||
		fail "an old inventory lists and audits, unchanged by reading" "list $list_rc, audit '$before'"
	ca token --dir "$O" --profile client --uri "$APP" --ca-url "$URL"
	[ "$RC" = 0 ] && [ "$(tokens "$O")" = 1 ] && [ "$(audit_count "$O")" = $((before + 1)) ] &&
		pass "an old inventory takes tokens; the audit log stays intact" ||
		report "an old inventory takes tokens; the audit log stays intact" "tokens '$(tokens "$O")', audit '$(audit_count "$O")'"
fi

finish
