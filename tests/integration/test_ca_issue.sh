#!/usr/bin/env bash
# `mtls ca issue` and its grant (ca/grant.c): the operator's names are exactly the
# certificate's names; a CSR (made here with `openssl req`) that asks for more — another
# name, a common name, CA:TRUE, a name of another type, a malformed IP — is refused in one
# line, exit 1, nothing written, and the refusal is in the audit log; whatever else a CSR
# asks for is never copied. Names that break the rules (SPIFFE IDs, URIs, DNS names, common
# names) are refused. Every certificate `mtls ca init` and `issue` make follows the strict
# RFC 5280 profile that libmtls's verifier enforces.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca
TD=spiffe://example.org
APP=$TD/ns/dev/sa/app
ADMIN=$TD/ns/prod/sa/admin

HAVE_SQLITE=1
command -v sqlite3 >/dev/null || HAVE_SQLITE=0

# ca ARGS... : `mtls ca ARGS...` (RC, OUT, ERR).
ca() {
	LAST_CMD="mtls ca $*"
	run "$MTLS" ca "$@"
}

# mkcsr OUT ARGS... : a CSR with a fresh P-256 key, made with openssl req ARGS.
mkcsr() {
	openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout "$1.key" \
		-out "$1" "${@:2}" >/dev/null 2>&1 || {
		echo "(test setup) openssl req ${*:2} failed" >&2
		exit 1
	}
}

x509() { openssl x509 -in "$1" -noout "${@:2}" 2>/dev/null || true; }
# ext FILE NAME : the value lines of one extension, joined by '|'.
ext() { x509 "$1" -ext "$2" | tail -n +2 | sed 's/^ *//; s/ *$//' | paste -sd'|' -; }
# rows : how many certificates the inventory holds.
rows() { "$MTLS" ca list --dir "$D" 2>/dev/null | tail -n +2 | wc -l; }
# audit_count : the entries of the audit log, as `mtls ca audit` counts them.
audit_count() { "$MTLS" ca audit --dir "$D" 2>/dev/null | sed -n 's/^audit log intact: \([0-9]*\) entries$/\1/p'; }
# last_audit : action|subject|detail of the newest audit entry (needs sqlite3).
last_audit() { sqlite3 "$D/ca.db" "SELECT action || '|' || subject || '|' || detail FROM audit ORDER BY seq DESC LIMIT 1" 2>/dev/null || true; }

ca init --dir "$D"
[ "$RC" = 0 ] || {
	echo "(test setup) mtls ca init failed: $ERR" >&2
	exit 1
}

# refused NAME MESSAGE OUT ARGS... : `mtls ca issue --dir D --out OUT ARGS...` must exit 1
# with exactly one line on stderr containing MESSAGE and nothing on stdout; no OUT.pem,
# OUT-chain.pem or OUT.key, no inventory row; the audit log one entry longer, intact, its
# newest entry an "issue-refused" carrying MESSAGE.
refused() {
	local name=$1 want=$2 out=$3 p=() rows_before audit_before entry f
	shift 3
	rows_before=$(rows)
	audit_before=$(audit_count)
	ca issue --dir "$D" --out "$out" "$@"
	[ "$RC" = 1 ] || p+=("exit status $RC, expected 1")
	[ -z "$OUT" ] || p+=("stdout is not empty")
	[ -n "$ERR" ] && [ "$(printf '%s\n' "$ERR" | wc -l)" = 1 ] || p+=("stderr is not one line")
	[[ $ERR == "mtls ca issue: "*"$want"* ]] || p+=("stderr does not say '$want'")
	for f in "$out.pem" "$out-chain.pem" "$out.key"; do
		[ ! -e "$f" ] || p+=("${f##*/} was written")
	done
	[ -z "$(find "$W" -name '*.tmp-*' -print -quit)" ] || p+=("temporary files left behind")
	[ "$(rows)" = "$rows_before" ] || p+=("the inventory has $(rows) certificates, $rows_before before")
	[ -n "$audit_before" ] && [ "$(audit_count)" = $((audit_before + 1)) ] ||
		p+=("audit log: '$("$MTLS" ca audit --dir "$D" 2>&1)', expected intact with $((audit_before + 1)) entries")
	if [ "$HAVE_SQLITE" = 1 ]; then
		entry=$(last_audit)
		[[ $entry == "issue-refused|"*"$want"* ]] || p+=("newest audit entry '$entry' is not an issue-refused one saying '$want'")
	fi
	report "$name" "${p[@]+"${p[@]}"}"
	rm -f -- "$out.pem" "$out-chain.pem" "$out.key"
}

# ==========================================================================================
echo "# a CSR asking for more than was granted is refused and audited"

mkcsr "$W/extra-uri.csr" -subj /CN=app -addext "subjectAltName=URI:$APP,URI:$ADMIN"
refused "CSR with a URI beyond --uri: refused, names it" \
	"CSR $W/extra-uri.csr asks for URI $ADMIN, which was not granted; issue with --uri for it or fix the CSR" \
	"$W/r1" --profile client --uri "$APP" --csr "$W/extra-uri.csr"

mkcsr "$W/extra-dns.csr" -subj /CN=app -addext "subjectAltName=URI:$APP,DNS:db.example.org"
refused "CSR with a DNS name beyond the grant: refused, names it" \
	"asks for DNS name db.example.org, which was not granted; issue with --dns for it" \
	"$W/r2" --profile client --uri "$APP" --csr "$W/extra-dns.csr"

mkcsr "$W/extra-ip.csr" -subj /CN=app -addext "subjectAltName=URI:$APP,IP:10.9.9.9"
refused "CSR with an IP address beyond the grant: refused, names it" \
	"asks for IP address 10.9.9.9, which was not granted; issue with --ip for it" \
	"$W/r3" --profile client --uri "$APP" --csr "$W/extra-ip.csr"

mkcsr "$W/cn.csr" -subj /CN=admin -addext "subjectAltName=URI:$APP"
refused "CSR whose CN is not granted: refused" \
	"asks for the common name 'admin', which was not granted; issue with --cn for it" \
	"$W/r4" --profile client --uri "$APP" --csr "$W/cn.csr"
refused "CSR whose CN is not the operator's --cn: refused" \
	"asks for the common name 'admin', which was not granted" \
	"$W/r5" --profile client --uri "$APP" --cn app --csr "$W/cn.csr"

mkcsr "$W/ca.csr" -subj /CN=app -addext "subjectAltName=URI:$APP" -addext "basicConstraints=critical,CA:TRUE"
refused "CSR asking for CA:TRUE: refused" \
	"asks for a CA certificate (basicConstraints CA:TRUE); the CA issues leaf certificates only" \
	"$W/r6" --profile client --uri "$APP" --csr "$W/ca.csr"

mkcsr "$W/email.csr" -subj /CN=app -addext "subjectAltName=URI:$APP,email:app@example.org"
refused "CSR with an email SAN (a type the CA never grants): refused" \
	"asks for an email address (rfc822Name) as a subjectAltName, which the CA never grants" \
	"$W/r7" --profile client --uri "$APP" --csr "$W/email.csr"

# SAN = SEQUENCE { [7] 0a 00 01 }: an iPAddress of 3 bytes.
mkcsr "$W/short-ip.csr" -subj /CN=app -addext "subjectAltName=DER:300587030a0001"
refused "CSR with a 3-byte iPAddress SAN: refused as malformed" \
	"has a malformed IP address (3 bytes" "$W/r8" --profile client --uri "$APP" --csr "$W/short-ip.csr"

# A CSR's file name is shown with its control bytes escaped: one line, in the message and
# in the audit log.
NL="$W/new"$'\n'"line.csr"
cp -- "$W/extra-uri.csr" "$NL"
refused "CSR file name with a newline: the refusal in one line, the name escaped" \
	"CSR $W/new\\x0aline.csr asks for URI $ADMIN, which was not granted" \
	"$W/r-nl" --profile client --uri "$APP" --csr "$NL"

# OpenSSL reads the first extension request only: names in a second one (an msExtReq beside
# the extReq, a second extReq, a second value) would be neither checked nor issued, so such
# a CSR is refused (tests/tools/csrgen.c makes them; each asks for DNS:evil.example in the
# second one).
for m in msext twoext twovals; do
	"$MTLS_BIN_DIR/csrgen" "$m" "$W/$m.csr" || fail "(test setup) csrgen $m" "exit $?"
	refused "CSR with a second extension request ($m): refused" \
		"CSR $W/$m.csr has more than one extension request (extReq or msExtReq attributes, or values of one); make it with one" \
		"$W/r-$m" --profile server --dns good.example --csr "$W/$m.csr"
done

# A key whose certificate was revoked for keyCompromise is never certified again; one revoked
# for another reason (superseded) may be.
mkcsr "$W/kc.csr" -subj /CN=kc.example
mkcsr "$W/sup.csr" -subj /CN=sup.example
p=()
for c in kc:keyCompromise sup:superseded; do
	ca issue --dir "$D" --profile server --dns "${c%%:*}.example" --csr "$W/${c%%:*}.csr" --out "$W/${c%%:*}-1"
	[ "$RC" = 0 ] || p+=("issue ${c%%:*}-1: exit $RC: $ERR")
	ca revoke --dir "$D" --cert "$W/${c%%:*}-1.pem" --reason "${c#*:}"
	[ "$RC" = 0 ] || p+=("revoke ${c%%:*}-1: exit $RC: $ERR")
done
ca issue --dir "$D" --profile server --dns sup.example --csr "$W/sup.csr" --out "$W/sup-2"
[ "$RC" = 0 ] || p+=("the key revoked as superseded: exit $RC, expected 0: $ERR")
report "(setup) a CSR's key certified and revoked for keyCompromise; another revoked as superseded is certified again" "${p[@]+"${p[@]}"}"
refused "CSR whose key was revoked for keyCompromise: refused, says so" \
	"CSR $W/kc.csr carries a key whose certificate (serial $(openssl x509 -in "$W/kc-1.pem" -noout -serial | cut -d= -f2)) was revoked for keyCompromise; make a new key and CSR" \
	"$W/kc-2" --profile server --dns kc.example --csr "$W/kc.csr"

refused "CSR with names, none granted (no --dns/--ip/--uri): refused, names the first" \
	"asks for URI $APP, which was not granted; issue with --uri for it" \
	"$W/r9" --profile client --csr "$W/extra-uri.csr"

# ==========================================================================================
echo "# a CSR asking for no more than was granted: exactly the granted names"

mkcsr "$W/ok.csr" -subj /CN=App.Example.org -addext "subjectAltName=DNS:App.Example.org,URI:$APP"
ca issue --dir "$D" --profile peer --dns app.example.org --ip 10.0.0.7 --uri "$APP" --csr "$W/ok.csr" --out "$W/ok"
p=()
[ "$RC" = 0 ] || p+=("exit status $RC, expected 0")
[ "$(ext "$W/ok.pem" subjectAltName)" = "DNS:app.example.org, IP Address:10.0.0.7, URI:$APP" ] ||
	p+=("subjectAltName '$(ext "$W/ok.pem" subjectAltName)', expected exactly the granted names")
[ "$(x509 "$W/ok.pem" -subject -nameopt RFC2253)" = "subject=CN=App.Example.org" ] || p+=("subject '$(x509 "$W/ok.pem" -subject -nameopt RFC2253)', expected the CSR's granted CN")
[ "$(x509 "$W/ok.pem" -pubkey)" = "$(openssl req -in "$W/ok.csr" -noout -pubkey 2>/dev/null)" ] || p+=("the key is not the CSR's")
[ ! -e "$W/ok.key" ] || p+=("ok.key written for a CSR")
out=$(openssl verify -CAfile "$D/root.pem" -untrusted "$D/intermediate.pem" "$W/ok.pem" 2>&1) || p+=("openssl verify: $out")
report "CSR with a subset of the granted names (DNS in another case): issued with exactly the grant" "${p[@]+"${p[@]}"}"

mkcsr "$W/bare.csr" -subj /
ca issue --dir "$D" --profile client --uri "$APP" --csr "$W/bare.csr" --out "$W/bare"
p=()
[ "$RC" = 0 ] || p+=("exit status $RC, expected 0")
[ "$(ext "$W/bare.pem" subjectAltName)" = "URI:$APP" ] || p+=("subjectAltName '$(ext "$W/bare.pem" subjectAltName)'")
[ "$(x509 "$W/bare.pem" -subject -nameopt RFC2253)" = "subject=CN=$APP" ] || p+=("subject '$(x509 "$W/bare.pem" -subject -nameopt RFC2253)', expected the first granted name")
report "CSR without names or subject: issued with the granted names" "${p[@]+"${p[@]}"}"

mkcsr "$W/cncn.csr" -subj /CN=app-1 -addext "subjectAltName=URI:$APP"
ca issue --dir "$D" --profile client --uri "$APP" --cn app-1 --csr "$W/cncn.csr" --out "$W/cncn"
p=()
[ "$RC" = 0 ] || p+=("exit status $RC, expected 0")
[ "$(x509 "$W/cncn.pem" -subject -nameopt RFC2253)" = "subject=CN=app-1" ] || p+=("subject '$(x509 "$W/cncn.pem" -subject -nameopt RFC2253)'")
report "CSR whose CN is the operator's --cn: issued with it" "${p[@]+"${p[@]}"}"

# Everything else a CSR asks for is the profile's to decide, never copied.
mkcsr "$W/asks.csr" -subj "/CN=app/O=Evil Corp/OU=x" -addext "subjectAltName=URI:$APP" \
	-addext "basicConstraints=CA:FALSE" -addext "keyUsage=critical,digitalSignature,keyCertSign,cRLSign" \
	-addext "extendedKeyUsage=codeSigning,serverAuth,anyExtendedKeyUsage" \
	-addext "nameConstraints=critical,permitted;DNS:example.org" -addext "1.2.3.4=ASN1:UTF8String:custom"
ca issue --dir "$D" --profile client --uri "$APP" --cn app --csr "$W/asks.csr" --out "$W/asks"
p=()
[ "$RC" = 0 ] || p+=("exit status $RC, expected 0")
[ "$(ext "$W/asks.pem" extendedKeyUsage)" = "TLS Web Client Authentication" ] || p+=("EKU '$(ext "$W/asks.pem" extendedKeyUsage)', expected clientAuth only")
[ "$(ext "$W/asks.pem" keyUsage)" = "Digital Signature" ] || p+=("keyUsage '$(ext "$W/asks.pem" keyUsage)'")
[ "$(ext "$W/asks.pem" basicConstraints)" = "CA:FALSE" ] || p+=("basicConstraints '$(ext "$W/asks.pem" basicConstraints)'")
text=$(x509 "$W/asks.pem" -text)
[[ $text != *"Name Constraints"* && $text != *"1.2.3.4"* ]] || p+=("nameConstraints or 1.2.3.4 copied")
[ "$(x509 "$W/asks.pem" -subject -nameopt RFC2253)" = "subject=CN=app" ] || p+=("subject '$(x509 "$W/asks.pem" -subject -nameopt RFC2253)', expected CN=app alone")
ng=$(printf '%s\n' "$OUT" | grep '^  not granted from the CSR' || true)
for w in keyUsage extendedKeyUsage nameConstraints "subject attributes other than CN"; do
	[[ $ng == *"$w"* ]] || p+=("the output does not say that $w was not granted")
done
report "CSR asking for key usages, EKUs, name constraints, more subject: none copied, all named" "${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# names that break the rules: exit 2, one line saying why, nothing written"

# db_state : size and modification time (ns) of the inventory's files.
db_state() { stat -c '%n %s %y' -- "$D"/ca.db* 2>/dev/null || true; }

# bad_name NAME MESSAGE ARGS... : `mtls ca issue --dir D --out W/bad ARGS...` must exit 2
# with one line on stderr containing MESSAGE, write nothing and leave the inventory (and so
# its audit log) untouched.
bad_name() {
	local name=$1 want=$2 p=() before f
	shift 2
	before=$(db_state)
	ca issue --dir "$D" --out "$W/bad" "$@"
	[ "$RC" = 2 ] || p+=("exit status $RC, expected 2")
	[ -z "$OUT" ] || p+=("stdout is not empty")
	[ -n "$ERR" ] && [ "$(printf '%s\n' "$ERR" | wc -l)" = 1 ] || p+=("stderr is not one line")
	[[ $ERR == "mtls ca issue: "*"$want"* ]] || p+=("stderr does not say '$want'")
	for f in "$W/bad.pem" "$W/bad-chain.pem" "$W/bad.key"; do
		[ ! -e "$f" ] || p+=("${f##*/} was written")
	done
	[ "$(db_state)" = "$before" ] || p+=("the inventory changed")
	report "$name" "${p[@]+"${p[@]}"}"
	rm -f -- "$W/bad.pem" "$W/bad-chain.pem" "$W/bad.key"
}

# one row per case: the option, its value, what the message must say
while IFS='|' read -r opt value want; do
	[ -n "$opt" ] || continue
	bad_name "--$opt '$value': refused" "$want" --profile peer --dns ok.example "--$opt" "$value"
done <<'EOF'
uri|spiffe://example.org/ns/../sa/admin|a SPIFFE ID has no '.' or '..' path segment
uri|spiffe://example.org/ns/./sa/admin|a SPIFFE ID has no '.' or '..' path segment
uri|spiffe://example.org/ns/prod/sa/..|a SPIFFE ID has no '.' or '..' path segment
uri|spiffe://example.org/ns%2Fprod/sa/admin|a SPIFFE ID has no percent-encoding
uri|spiffe://example.org/ns%2fprod/sa/admin|a SPIFFE ID has no percent-encoding
uri|spiffe://example.org/ns/%2E%2E/sa/admin|a SPIFFE ID has no percent-encoding
uri|spiffe://example.org/ns//sa/admin|a SPIFFE ID has no empty path segment
uri|spiffe://example.org/ns/prod/|a SPIFFE ID has no empty path segment
uri|spiffe://example.org/ns/prod?x=1|a SPIFFE ID has no query ('?') or fragment ('#')
uri|spiffe://example.org/ns/prod#f|a SPIFFE ID has no query ('?') or fragment ('#')
uri|SPIFFE://example.org/ns/prod|the scheme of a SPIFFE ID is lower-case spiffe://
uri|spiffe://Example.org/ns/prod|the trust domain of a SPIFFE ID is lower case
uri|spiffe://example.org:443/ns/prod|no port or user info
uri|spiffe://example.org/ns/pr od|control bytes, spaces and non-ASCII characters are not allowed
uri|spiffe://example.org/ns/pr+od|the path segments of a SPIFFE ID hold only letters, digits
uri|https://example.org/a/../admin|'.' and '..' path segments are not allowed
uri|https://example.org/a/%2e%2E/admin|'.' and '..' path segments are not allowed
uri|https://example.org/a%2Fadmin|a percent-encoded '/' (%2F) is not allowed
uri|https://example.org/a%00|percent-encoded control bytes are not allowed
dns|a..example.org|invalid DNS name 'a..example.org'
dns|a.*.example.org|a wildcard only as a whole leftmost label
dns|*a.example.org|invalid DNS name '*a.example.org'
dns|under_score.example|invalid DNS name
dns|trailing.dot.|invalid DNS name
dns|0123456789012345678901234567890123456789012345678901234567890123.example|1-63 characters
dns|1.2.3.4|invalid DNS name '1.2.3.4': use labels of letters, digits and hyphens (1-63 characters, not starting or ending with a hyphen, the last not all digits)
dns|a.123|invalid DNS name 'a.123'
dns|*.com|invalid DNS name '*.com'
cn||cn needs a value
EOF

long=spiffe://example.org/$(printf 'a%.0s' $(seq 1 2030))
bad_name "--uri of 2051 bytes: refused" "longer than 2048 bytes" --profile client --uri "$long"
bad_name "--cn with a tab: refused" "invalid --cn: the common name holds a control character (U+0009 at byte 3)" \
	--profile client --uri "$APP" --cn $'app\tx'
bad_name "--cn with an escape sequence: refused" "a control character (U+001B" \
	--profile client --uri "$APP" --cn $'\e[31mred'
bad_name "--cn with a right-to-left override: refused" "a control character (U+202E" \
	--profile client --uri "$APP" --cn $'app\u202etxt'
for c in 200b 200f feff 061c; do
	bad_name "--cn with U+${c^^} (a format character): refused" "invalid --cn: the common name holds an invisible format character (U+${c^^} at byte 3)" \
		--profile client --uri "$APP" --cn "app$(printf "\\u$c")x"
done
bad_name "--cn of 65 characters: refused" "longer than 64 characters" \
	--profile client --uri "$APP" --cn "$(printf 'c%.0s' $(seq 1 65))"
bad_name "--dns with a newline: refused, shown escaped in one line" "invalid DNS name 'a\\x0ab'" \
	--profile server --dns $'a\nb'

ca issue --dir "$D" --profile client --uri "$TD/ns/prod/sa/a-b_c.d" --cn "Jürgen's app" --out "$W/utf8"
p=()
[ "$RC" = 0 ] || p+=("exit status $RC, expected 0")
[ "$(x509 "$W/utf8.pem" -subject -nameopt RFC2253,-esc_msb)" = "subject=CN=Jürgen's app" ] || p+=("subject '$(x509 "$W/utf8.pem" -subject -nameopt RFC2253,-esc_msb)'")
report "a SPIFFE ID with '-', '_', '.' in segments and a UTF-8 --cn: issued" "${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# every certificate the CA makes follows the strict RFC 5280 profile of the verifier"

# critical FILE EXT : is the extension marked critical?
critical() { x509 "$1" -ext "$2" | head -n 1 | grep -q 'critical'; }

# profile FILE ROLE [ISSUER] : ROLE root, ca, server, client or peer; ISSUER the issuing
# certificate (none for the self-signed root). Appends problems to p.
profile() {
	local f=$1 role=$2 issuer=${3:-} n=${1##*/} s bytes ku eku
	x509 "$f" -text | grep -q 'Version: 3 (0x2)' || p+=("$n: not version 3")
	s=$(x509 "$f" -serial | sed -n 's/^serial=//p')
	bytes=$((${#s} / 2))
	[[ $s =~ ^[0-9A-F]+$ && ! $s =~ ^0+$ ]] || p+=("$n: serial '$s' is not a positive, non-zero number")
	[ -z "$s" ] || [ $((16#${s:0:1})) -lt 8 ] || bytes=$((bytes + 1))
	[ "$bytes" -le 20 ] || p+=("$n: serial of $bytes octets (at most 20)")
	[[ $(ext "$f" subjectKeyIdentifier) =~ ^([0-9A-F]{2}:)+[0-9A-F]{2}$ ]] || p+=("$n: no subjectKeyIdentifier")
	if [ -n "$issuer" ]; then
		[ "$(ext "$f" authorityKeyIdentifier)" = "$(ext "$issuer" subjectKeyIdentifier)" ] ||
			p+=("$n: authorityKeyIdentifier '$(ext "$f" authorityKeyIdentifier)' is not its issuer's SKI")
	else
		[ "$(x509 "$f" -subject | sed 's/^subject=//')" = "$(x509 "$f" -issuer | sed 's/^issuer=//')" ] || p+=("$n: not self-signed")
	fi
	ku=$(ext "$f" keyUsage)
	eku=$(ext "$f" extendedKeyUsage)
	case $role in
	root | ca)
		critical "$f" basicConstraints && [[ $(ext "$f" basicConstraints) == CA:TRUE* ]] || p+=("$n: basicConstraints not critical CA:TRUE")
		critical "$f" keyUsage && [[ $ku == *"Certificate Sign"* && $ku == *"CRL Sign"* ]] || p+=("$n: keyUsage '$ku' not critical keyCertSign, cRLSign")
		[ -z "$eku" ] || p+=("$n: a CA with extendedKeyUsage '$eku'")
		;;
	*)
		[ "$(ext "$f" basicConstraints)" = "CA:FALSE" ] || p+=("$n: basicConstraints '$(ext "$f" basicConstraints)', expected CA:FALSE")
		[[ $ku != *"Certificate Sign"* && $ku != *"CRL Sign"* ]] || p+=("$n: a leaf with keyUsage '$ku'")
		case $role in
		server) [ "$eku" = "TLS Web Server Authentication" ] || p+=("$n: extendedKeyUsage '$eku', expected serverAuth only") ;;
		client) [ "$eku" = "TLS Web Client Authentication" ] || p+=("$n: extendedKeyUsage '$eku', expected clientAuth only") ;;
		peer) [ "$eku" = "TLS Web Server Authentication, TLS Web Client Authentication" ] || p+=("$n: extendedKeyUsage '$eku', expected serverAuth and clientAuth") ;;
		esac
		[[ $eku != *"Any Extended Key Usage"* ]] || p+=("$n: anyExtendedKeyUsage")
		if [ -z "$(x509 "$f" -subject -nameopt RFC2253 | sed 's/^subject=//')" ]; then
			critical "$f" subjectAltName || p+=("$n: empty subject without a critical subjectAltName")
		fi
		;;
	esac
}

LONG=$TD/ns/production/serviceaccount/a-name-that-does-not-fit-in-a-common-name
ca issue --dir "$D" --profile server --dns srv.example.org --ip 10.0.0.1 --out "$W/p-server"
ca issue --dir "$D" --profile client --uri "$APP" --out "$W/p-client"
ca issue --dir "$D" --profile peer --dns peer.example.org --uri "$APP" --out "$W/p-peer"
ca issue --dir "$D" --profile client --uri "$LONG" --out "$W/p-nosubject"
E=$W/ca-ed
ca init --dir "$E" --key ed25519 --name "Ed CA"
ca issue --dir "$E" --profile server --dns ed.example.org --key ed25519 --out "$W/p-ed"
p=()
for f in p-server p-client p-peer p-nosubject p-ed; do
	[ -f "$W/$f.pem" ] || p+=("$f.pem was not issued")
done
profile "$D/root.pem" root
profile "$D/intermediate.pem" ca "$D/root.pem"
profile "$W/p-server.pem" server "$D/intermediate.pem"
profile "$W/p-client.pem" client "$D/intermediate.pem"
profile "$W/p-peer.pem" peer "$D/intermediate.pem"
profile "$W/p-nosubject.pem" client "$D/intermediate.pem"
profile "$W/ok.pem" peer "$D/intermediate.pem"
profile "$W/asks.pem" client "$D/intermediate.pem"
profile "$E/root.pem" root
profile "$E/intermediate.pem" ca "$E/root.pem"
profile "$W/p-ed.pem" server "$E/intermediate.pem"
[ -z "$(x509 "$W/p-nosubject.pem" -subject -nameopt RFC2253 | sed 's/^subject=//')" ] || p+=("p-nosubject.pem has a subject: the case of an empty one is not tested")
report "root, issuing CA and leaves (server, client, peer, from a CSR, without a subject; P-384 and Ed25519 CAs): serial, SKI/AKI, CA and leaf extensions" "${p[@]+"${p[@]}"}"

# and libmtls's verifier, which refuses certificates that break that profile, accepts them
p=()
for c in "$D|p-server|--purpose server --dns srv.example.org|srv.example.org" \
	"$D|p-client||$APP" "$D|p-peer|--purpose server --dns peer.example.org|$APP" \
	"$D|p-peer||$APP" "$D|p-nosubject||$LONG" "$D|ok||$APP" "$E|p-ed|--purpose server --dns ed.example.org|ed.example.org"; do
	IFS='|' read -r dir f args want <<<"$c"
	LAST_CMD="mtls verify --ca $dir/root.pem $args $f-chain.pem"
	# shellcheck disable=SC2086 # args holds several words
	run "$MTLS" verify --ca "$dir/root.pem" $args "$W/$f-chain.pem"
	[ "$RC" = 0 ] && [ "$(first_line "$OUT")" = "accepted: $want" ] || p+=("mtls verify $args $f-chain.pem: exit $RC, '$(first_line "$OUT")'")
done
report "mtls verify accepts each of them for its purpose" "${p[@]+"${p[@]}"}"

# the CA names are "NAME Root CA" and "NAME Issuing CA" (at most 64 characters, no controls)
for c in $'tab\there|a control character (U+0009' "$(printf 'n%.0s' $(seq 1 51))|longer than 50"; do
	p=()
	ca init --dir "$W/ca-name" --name "${c%%|*}"
	[ "$RC" = 2 ] || p+=("exit status $RC, expected 2")
	[[ $ERR == "mtls ca init: --name "*"${c#*|}"* ]] || p+=("stderr does not say '--name ... ${c#*|}'")
	[ ! -e "$W/ca-name" ] || p+=("$W/ca-name was created")
	report "init --name '${c%%|*}': refused, nothing created" "${p[@]+"${p[@]}"}"
done

# ==========================================================================================
echo "# the audit log"

# Names and subjects of any length are recorded whole: in the inventory (ca list) and in the
# issue entry, whose text is what an auditor reads (no 1024-byte limit cutting the last name).
A=$(printf 'a%.0s' $(seq 1 600))
EMOJI=$(printf '\xf0\x9f\x94\x92%.0s' $(seq 1 64)) # 64 characters, 256 bytes of UTF-8
ca issue --dir "$D" --profile client --uri "https://h.example/$A/1" --uri "https://h.example/$A/2" \
	--uri "$TD/ns/prod/sa/long-names" --cn "$EMOJI" --out "$W/longnames"
p=()
[ "$RC" = 0 ] || p+=("exit status $RC, expected 0")
[[ $(ext "$W/longnames.pem" subjectAltName) == *"URI:$TD/ns/prod/sa/long-names" ]] || p+=("the certificate lacks the third URI")
want="URI:https://h.example/$A/1, URI:https://h.example/$A/2, URI:$TD/ns/prod/sa/long-names"
row=$("$MTLS" ca list --dir "$D" 2>/dev/null | grep -F -- "long-names" || true)
[[ $row == *"  $want" ]] || p+=("ca list does not show every name")
if [ "$HAVE_SQLITE" = 1 ]; then
	entry=$(sqlite3 "$D/ca.db" "SELECT subject || '|' || detail FROM audit WHERE action = 'issue' AND detail LIKE '%long-names%'" 2>&1)
	esc=$(printf '\\F0\\9F\\94\\92%.0s' $(seq 1 64))
	[[ $entry == "CN=$esc|serial "*", profile client, $want" ]] || p+=("the issue entry is not whole: '${entry:0:80}...${entry: -80}'")
fi
report "names of 1,300 bytes and a CN of 64 four-byte characters: whole in the certificate, ca list and the audit log" "${p[@]+"${p[@]}"}"

p=()
ca audit --dir "$D"
[ "$RC" = 0 ] && [[ $OUT == "audit log intact: "* ]] || p+=("mtls ca audit: exit $RC, '$OUT'")
if [ "$HAVE_SQLITE" = 1 ]; then
	n=$(sqlite3 "$D/ca.db" "SELECT COUNT(*) FROM audit WHERE action = 'issue-refused'" 2>&1)
	[ "$n" = 14 ] || p+=("$n issue-refused entries, expected 14")
	e=$(sqlite3 "$D/ca.db" "SELECT subject || '|' || detail FROM audit WHERE action = 'issue-refused' ORDER BY seq LIMIT 1" 2>&1)
	[ "$e" = "CN=app|profile client, granted URI:$APP; CSR $W/extra-uri.csr asks for URI $ADMIN, which was not granted; issue with --uri for it or fix the CSR" ] ||
		p+=("the first refusal is recorded as '$e'")
else
	printf 'skip  audit entries (sqlite3 is not installed)\n'
fi
report "mtls ca audit: intact; the refusals are in the log with subject, grant and reason" "${p[@]+"${p[@]}"}"

finish
