#!/usr/bin/env bash
# The CA's OCSP responder (ca/ocsp.c) against the real `openssl ocsp` client, offline:
# openssl builds the request (-reqout), tests/tools/ocsprespond answers it with the CA made
# by `mtls ca init`, and openssl checks the answer (-respin) against the root alone: the
# signature verifies through the delegated responder certificate the answer carries
# (OCSPSigning, nocheck), a leaf `mtls ca issue` made is good, then revoked with its reason
# after `mtls ca revoke`, a serial never issued is unknown (so are the CA certificates, which
# the issuing CA did not issue), a leaf of another CA is unauthorized, and bytes that are not
# exactly one request with one CertID are a malformedRequest. --ocsp-url puts the responder
# into the leaves (authorityInfoAccess); each responder certificate is in the inventory with
# its audit entry, and `mtls ca issue --profile ocsp` is not offered.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

RESPOND=$MTLS_BIN_DIR/ocsprespond
[ -x "$RESPOND" ] || {
	echo "$RESPOND is missing: build the project first" >&2
	exit 2
}

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca
OTHER=$W/other
URL=http://127.0.0.1:8080/ocsp

ca() { run "$MTLS" ca "$@"; }

setup() {
	"$@" >"$TMP/setup.out" 2>&1 || {
		echo "(test setup) $* failed:" >&2
		cat -- "$TMP/setup.out" >&2
		exit 1
	}
}

# ask NAME OPENSSL-ARGS... : build a request with openssl (no nonce) into W/NAME.q, answer it
# into W/NAME.r; the tool's line in ANSWER.
ask() {
	local name=$1
	shift
	setup openssl ocsp -no_nonce -reqout "$W/$name.q" "$@"
	run "$RESPOND" "$D" "$W/$name.q" "$W/$name.r"
	ANSWER=$OUT
	[ "$RC" = 0 ] || ANSWER="(ocsprespond exit $RC: $ERR)"
}

# check NAME OPENSSL-ARGS... : openssl's reading of W/NAME.r, verified against root.pem only.
check() {
	local name=$1
	shift
	run openssl ocsp -respin "$W/$name.r" -CAfile "$D/root.pem" -no_nonce -resp_text "$@"
	TEXT="$OUT"$'\n'"$ERR"
}

# --- an OCSP URL is checked like the CRL URL, and goes into the leaves --------------------
ca init --dir "$W/bad" --ocsp-url 'http://a b/'
if [ "$RC" = 2 ] && [ "$(printf '%s\n' "$ERR" | wc -l)" = 1 ] &&
	[[ $ERR == *"invalid OCSP URL"* ]] && [ ! -e "$W/bad/ca.db" ]; then
	pass "init: an OCSP URL with a space is refused in one line, no CA made"
else
	fail "init: an OCSP URL with a space is refused in one line, no CA made" "rc=$RC" "$ERR"
fi

setup "$MTLS" ca init --dir "$D" --ocsp-url "$URL"
setup "$MTLS" ca init --dir "$OTHER" --name other
setup "$MTLS" ca issue --dir "$D" --profile client --uri spiffe://example.org/ns/a/sa/app \
	--out "$W/leaf"
setup "$MTLS" ca issue --dir "$D" --profile server --dns two.example.org --out "$W/two"
setup "$MTLS" ca issue --dir "$OTHER" --profile client --uri spiffe://example.org/ns/a/sa/x \
	--out "$W/foreign"
I=$D/intermediate.pem

aia=$(openssl x509 -in "$W/leaf.pem" -noout -ocsp_uri 2>&1 || true)
if [ "$aia" = "$URL" ]; then
	pass "issue: the leaf names the OCSP responder (authorityInfoAccess)"
else
	fail "issue: the leaf names the OCSP responder (authorityInfoAccess)" "$aia"
fi
run "$MTLS" verify --ca "$D/root.pem" "$W/leaf-chain.pem"
if [ "$RC" = 0 ]; then
	pass "a leaf with the OCSP URL passes libmtls's strict profile (mtls verify)"
else
	fail "a leaf with the OCSP URL passes libmtls's strict profile (mtls verify)" "$OUT" "$ERR"
fi
aia=$(openssl x509 -in "$W/foreign.pem" -noout -ext authorityInfoAccess 2>&1 || true)
if [ -z "$aia" ] || [[ $aia == *"No extensions"* ]]; then
	pass "issue: no authorityInfoAccess without --ocsp-url"
else
	fail "issue: no authorityInfoAccess without --ocsp-url" "$aia"
fi

# --- good, with SHA-1 and SHA-256 CertIDs -------------------------------------------------
for md in sha1 sha256; do
	ask good-$md -issuer "$I" -"$md" -cert "$W/leaf.pem"
	check good-$md -issuer "$I" -"$md" -cert "$W/leaf.pem"
	if [[ $ANSWER == "successful good "* ]] && has_line "$TEXT" "Response verify OK" &&
		has_line "$TEXT" "$W/leaf.pem: good" &&
		[[ $TEXT == *"Hash Algorithm: $md"* ]]; then
		pass "good ($md CertID): openssl verifies it against the root"
	else
		fail "good ($md CertID): openssl verifies it against the root" "$ANSWER" "$TEXT"
	fi
done

# the answer carries the delegated responder certificate, and nothing but it signs
check good-sha1 -issuer "$I" -cert "$W/leaf.pem"
if [[ $TEXT == *"Subject: CN=OCSP responder"* ]] && [[ $TEXT == *"OCSP Signing"* ]] &&
	[[ $TEXT == *"OCSP No Check"* ]] && [[ $TEXT == *"CA:FALSE"* ]]; then
	pass "the answer carries the responder certificate: OCSPSigning, nocheck, CA:FALSE"
else
	fail "the answer carries the responder certificate: OCSPSigning, nocheck, CA:FALSE" "$TEXT"
fi
run openssl ocsp -respin "$W/good-sha1.r" -CAfile "$OTHER/root.pem" -no_nonce \
	-issuer "$I" -cert "$W/leaf.pem"
if ! has_line "$OUT"$'\n'"$ERR" "Response verify OK"; then
	pass "another CA's root does not verify the answer"
else
	fail "another CA's root does not verify the answer" "$OUT" "$ERR"
fi

# --- revoked --------------------------------------------------------------------------------
setup "$MTLS" ca revoke --dir "$D" --cert "$W/leaf.pem" --reason keyCompromise
ask revoked -issuer "$I" -cert "$W/leaf.pem"
check revoked -issuer "$I" -cert "$W/leaf.pem"
if [[ $ANSWER == "successful revoked "* ]] && has_line "$TEXT" "Response verify OK" &&
	has_line "$TEXT" "$W/leaf.pem: revoked" && [[ $TEXT == *"Reason: keyCompromise"* ]]; then
	pass "revoked after mtls ca revoke, with its reason"
else
	fail "revoked after mtls ca revoke, with its reason" "$ANSWER" "$TEXT"
fi
ask still-good -issuer "$I" -cert "$W/two.pem"
check still-good -issuer "$I" -cert "$W/two.pem"
if has_line "$TEXT" "$W/two.pem: good" && has_line "$TEXT" "Response verify OK"; then
	pass "another leaf stays good"
else
	fail "another leaf stays good" "$ANSWER" "$TEXT"
fi

# --- unknown: never issued, and the CA certificates (not issued by the issuing CA) ----------
ask unknown -issuer "$I" -serial 0x0123456789ABCDEF
check unknown -issuer "$I" -serial 0x0123456789ABCDEF
if [[ $ANSWER == "successful unknown "* ]] && has_line "$TEXT" "Response verify OK" &&
	has_line "$TEXT" "0x0123456789ABCDEF: unknown"; then
	pass "unknown for a serial never issued"
else
	fail "unknown for a serial never issued" "$ANSWER" "$TEXT"
fi
# (by serial: openssl takes a CertID's name hash from the certificate's issuer field)
for c in intermediate root; do
	s=0x$(openssl x509 -in "$D/$c.pem" -noout -serial | sed 's/^serial=//')
	ask ca-$c -issuer "$I" -serial "$s"
	check ca-$c -issuer "$I" -serial "$s"
	if [[ $ANSWER == "successful unknown "* ]] && has_line "$TEXT" "$s: unknown"; then
		pass "unknown for the $c certificate, which the issuing CA did not issue"
	else
		fail "unknown for the $c certificate, which the issuing CA did not issue" \
			"$ANSWER" "$TEXT"
	fi
done

# --- unauthorized: another CA's certificate -------------------------------------------------
ask foreign -issuer "$OTHER/intermediate.pem" -cert "$W/foreign.pem"
run openssl ocsp -respin "$W/foreign.r" -resp_text -noverify
if [[ $ANSWER == "unauthorized - "* ]] && [[ $OUT$ERR == *"unauthorized (6)"* ]]; then
	pass "unauthorized for a certificate of another CA"
else
	fail "unauthorized for a certificate of another CA" "$ANSWER" "$OUT" "$ERR"
fi
# our serial with the other CA as issuer: the issuer decides, not the serial
ask foreign-issuer -issuer "$OTHER/intermediate.pem" -cert "$W/two.pem"
if [[ $ANSWER == "unauthorized - "* ]]; then
	pass "unauthorized for one of our serials under another issuer"
else
	fail "unauthorized for one of our serials under another issuer" "$ANSWER"
fi

# --- malformed -----------------------------------------------------------------------------
# malformed NAME FILE : the answer to FILE's bytes is malformedRequest, as openssl reads it.
malformed() {
	run "$RESPOND" "$D" "$2" "$W/$1.r"
	ANSWER=$OUT
	run openssl ocsp -respin "$W/$1.r" -resp_text -noverify
	if [[ $ANSWER == "malformedrequest - "* ]] && [[ $OUT$ERR == *"malformedrequest (1)"* ]]; then
		pass "malformedRequest: $1"
	else
		fail "malformedRequest: $1" "$ANSWER" "$OUT" "$ERR"
	fi
}
printf 'GET / HTTP/1.0\r\n\r\n' >"$W/garbage"
malformed garbage "$W/garbage"
: >"$W/empty"
malformed empty "$W/empty"
{
	cat -- "$W/still-good.q"
	printf '\0'
} >"$W/trailing"
malformed "trailing byte" "$W/trailing"
cat -- "$W/still-good.q" "$W/still-good.q" >"$W/twice"
malformed "two requests" "$W/twice"
setup openssl ocsp -no_nonce -reqout "$W/two-ids.q" -issuer "$I" -cert "$W/two.pem" \
	-cert "$W/leaf.pem"
malformed "two CertIDs in one request (RFC 5019)" "$W/two-ids.q"

# --- the inventory and the audit log --------------------------------------------------------
ca list --dir "$D"
n=$(count_lines "$OUT" "")
ocsp_rows=$(printf '%s\n' "$OUT" | awk '$3 == "ocsp"' | wc -l)
# every ocsprespond run (it refreshes a fresh responder) issued one responder certificate
runs=$(find "$W" -name '*.r' | wc -l)
ca audit --dir "$D"
if [ "$ocsp_rows" = "$runs" ] && [[ $OUT == "audit log intact:"* ]]; then
	pass "each responder certificate is in the inventory (profile ocsp); the audit log is intact"
else
	fail "each responder certificate is in the inventory (profile ocsp); the audit log is intact" \
		"rows=$n ocsp=$ocsp_rows runs=$runs" "$OUT" "$ERR"
fi
if command -v sqlite3 >/dev/null; then
	entries=$(sqlite3 "$D/ca.db" "SELECT count(*) FROM audit WHERE action = 'issue' AND detail LIKE '%profile ocsp, OCSP signing delegated until %'")
	if [ "$entries" = "$runs" ]; then
		pass "each delegation of OCSP signing has its audit entry"
	else
		fail "each delegation of OCSP signing has its audit entry" "$entries of $runs"
	fi
fi
ca issue --dir "$D" --profile ocsp --uri spiffe://example.org/ns/a/sa/o --out "$W/o"
if [ "$RC" = 2 ] && [ ! -e "$W/o.pem" ]; then
	pass "mtls ca issue --profile ocsp is not offered"
else
	fail "mtls ca issue --profile ocsp is not offered" "rc=$RC" "$OUT" "$ERR"
fi

finish
