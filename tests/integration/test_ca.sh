#!/usr/bin/env bash
# `mtls ca` end to end: the quick start (init, issue server and client) checked with openssl
# and `mtls verify`, a real handshake with CA-made certificates before and after revocation,
# CRLs and CRL distribution points, CSRs (honest, abusive, forged, weak), refused input
# (exit status, one-line message, nothing written), encrypted CA keys, concurrent and killed
# issuers, the audit log's hash chain, inspect and export.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca # the main CA of this script
SPIFFE=spiffe://example.org/ns/prod/sa/app

HAVE_SQLITE=1
command -v sqlite3 >/dev/null || HAVE_SQLITE=0

# ------------------------------------------------------------------------------------------
# Helpers (none of them fails the script under set -e: problems become failed cases)

skip() {
	printf 'skip  %s\n' "$1"
}

# ca ARGS... : run `mtls ca ARGS...` (RC, OUT, ERR).
ca() {
	LAST_CMD="mtls ca $*"
	run "$MTLS" ca "$@"
}

# D_ACTIONS: the audit entries the main CA must hold (init 3: root, intermediate and the first
# CRL; each issue and crl 1; each revoke 2: the revocation and the CRL that publishes it).
D_ACTIONS=0
count_d() {
	[ "$RC" != 0 ] || D_ACTIONS=$((D_ACTIONS + $1))
}

mode() { stat -c %a -- "$1" 2>/dev/null || echo missing; }
x509() { openssl x509 -in "$1" -noout "${@:2}" 2>/dev/null || true; }
serial_of() { x509 "$1" -serial | sed -n 's/^serial=//p'; }
# norm SERIAL : upper-case hex without colons and leading zeros, to compare serials printed
# by different tools (openssl prints whole bytes: 0B3D...).
norm() {
	local s=${1^^}
	s=${s//:/}
	while [[ $s == 0?* ]]; do s=${s#0}; done
	printf '%s\n' "$s"
}
# list_row LIST SERIAL : the row of `mtls ca list` output LIST for SERIAL (in either form).
list_row() {
	local want line
	want=$(norm "$2")
	while IFS= read -r line; do
		[ "$(norm "${line%% *}")" != "$want" ] || {
			printf '%s\n' "$line"
			return 0
		}
	done <<<"$1"
	return 0
}
# ext FILE NAME : the value lines of one extension of a certificate, joined by '|'.
ext() { x509 "$1" -ext "$2" | tail -n +2 | sed 's/^ *//; s/ *$//' | paste -sd'|' -; }
sha_of() { sha256sum -- "$1" 2>/dev/null | cut -d' ' -f1 || true; }
one_line() { [ -n "$1" ] && [ "$(printf '%s\n' "$1" | wc -l)" -eq 1 ]; }
epoch() { date -u -d "$1" +%s 2>/dev/null || echo 0; }

# listing DIR : the names in DIR (one a line), or "(absent)". Not the CA's lock file, which
# any command that changes the CA may create.
listing() {
	if [ -d "$1" ]; then find "$1" -mindepth 1 -maxdepth 1 ! -name lock -printf '%f\n' | sort; else echo "(absent)"; fi
}

# fingerprint DIR : names, types, modes, sizes, mtimes and contents of everything in DIR.
fingerprint() {
	[ -d "$1" ] || {
		echo "(absent)"
		return 0
	}
	(
		cd -- "$1" && find . -printf '%P %y %m %s %T@\n' | sort
		find . -type f -print0 | sort -z | xargs -0r sha256sum
	) 2>/dev/null || true
}

# tmp_leftovers DIR... : temporary files of files_write() left in these directories.
tmp_leftovers() {
	local d
	for d in "$@"; do
		[ -d "$d" ] && find "$d" -maxdepth 1 -name '*.tmp-*' -printf '%p\n'
	done
	return 0
}

# refuse NAME RC MESSAGE CA_DIR OUT_PREFIX ARGS... : `mtls ca ARGS` must exit RC with nothing
# on stdout and exactly one line on stderr that starts with "mtls ca " and contains MESSAGE;
# nothing may appear in or vanish from CA_DIR or OUT_PREFIX's directory (in particular no
# PREFIX.pem, PREFIX.key, PREFIX-chain.pem and no temporary files). Extra problems found by
# the caller can be passed in the array EXTRA.
refuse() {
	local name=$1 want_rc=$2 want=$3 cadir=$4 prefix=$5 outdir b_ca b_out a_ca a_out f left
	local p=()
	shift 5
	outdir=$(dirname -- "$prefix")
	b_ca=$(listing "$cadir")
	b_out=$(listing "$outdir")
	ca "$@"
	a_ca=$(listing "$cadir")
	a_out=$(listing "$outdir")
	[ "$RC" = "$want_rc" ] || p+=("exit status $RC, expected $want_rc")
	[ -z "$OUT" ] || p+=("a refused command printed on stdout")
	one_line "$ERR" || p+=("stderr is not exactly one line")
	[[ $ERR == "mtls ca "* ]] || p+=("stderr does not start with 'mtls ca '")
	[[ $ERR == *"$want"* ]] || p+=("stderr does not mention '$want'")
	for f in "$prefix.pem" "$prefix.key" "$prefix-chain.pem"; do
		if [ -e "$f" ] && ! grep -qxF -- "${f##*/}" <<<"$b_out"; then
			p+=("$f was written")
		fi
	done
	[ "$b_ca" = "$a_ca" ] || p+=("the CA directory changed:" "$(diff <(echo "$b_ca") <(echo "$a_ca") || true)")
	[ "$b_out" = "$a_out" ] || p+=("the output directory changed:" "$(diff <(echo "$b_out") <(echo "$a_out") || true)")
	left=$(tmp_leftovers "$cadir" "$outdir")
	[ -z "$left" ] || p+=("temporary files left behind:" "$left")
	p+=("${EXTRA[@]+"${EXTRA[@]}"}")
	EXTRA=()
	report "$name" "${p[@]+"${p[@]}"}"
	# A command that wrongly succeeded must not spoil the cases after it: remove what it
	# wrote, and count its audit entry.
	for f in "$prefix.pem" "$prefix.key" "$prefix-chain.pem"; do
		grep -qxF -- "${f##*/}" <<<"$b_out" || rm -f -- "$f"
	done
	[ "$cadir" != "$D" ] || [ "$1" = init ] || count_d "$([ "$1" = revoke ] && echo 2 || echo 1)"
}
EXTRA=()

# ==========================================================================================
echo "# quick start: init, issue a server and a client certificate"

ca init --dir "$D"
count_d 3
p=()
[ "$RC" = 0 ] || p+=("exit status $RC, expected 0")
[ -z "$ERR" ] || p+=("unexpected stderr")
has_line "$OUT" "created CA in $D" || p+=("no 'created CA in $D' line")
for f in root.pem root.key intermediate.pem intermediate.key crl.pem ca.db; do
	[ -f "$D/$f" ] || p+=("$D/$f is missing")
done
[ "$(mode "$D")" = 700 ] || p+=("CA directory mode $(mode "$D"), expected 700")
for f in root.key intermediate.key ca.db; do
	[ "$(mode "$D/$f")" = 600 ] || p+=("$f mode $(mode "$D/$f"), expected 600")
done
for f in root.pem intermediate.pem crl.pem; do
	[ "$(mode "$D/$f")" = 644 ] || p+=("$f mode $(mode "$D/$f"), expected 644")
done
report "init: root, issuing CA, keys 600, ca.db 600, directory 700" "${p[@]+"${p[@]}"}"

ca issue --dir "$D" --profile server --dns localhost --ip 127.0.0.1 --out "$W/S"
count_d 1
S_OUT=$OUT
p=()
[ "$RC" = 0 ] || p+=("server: exit status $RC, expected 0")
[[ $(first_line "$OUT") == "issued server certificate, serial "*", for DNS:localhost, IP:127.0.0.1, valid until "* ]] ||
	p+=("server: unexpected first line")
ca issue --dir "$D" --profile client --uri "$SPIFFE" --out "$W/C"
count_d 1
[ "$RC" = 0 ] || p+=("client: exit status $RC, expected 0")
for f in S.pem S-chain.pem S.key C.pem C-chain.pem C.key; do
	[ -f "$W/$f" ] || p+=("$f is missing")
done
[ "$(mode "$W/C.key")" = 600 ] || p+=("C.key mode $(mode "$W/C.key"), expected 600")
[ "$(mode "$W/S.key")" = 600 ] || p+=("S.key mode $(mode "$W/S.key"), expected 600")
[ "$(mode "$D/ca.db")" = 600 ] || p+=("ca.db mode $(mode "$D/ca.db") after issuing, expected 600")
[ "$(grep -c 'BEGIN CERTIFICATE' "$W/C-chain.pem" 2>/dev/null)" = 2 ] || p+=("C-chain.pem does not hold 2 certificates")
[ "$(serial_of "$W/C-chain.pem")" = "$(serial_of "$W/C.pem")" ] || p+=("C-chain.pem does not start with C.pem")
[ "$(sed -n '/BEGIN/,$p' "$W/C-chain.pem" | tail -n +2 | sed -n '/BEGIN/,$p' | openssl x509 -noout -fingerprint 2>/dev/null)" = \
	"$(openssl x509 -in "$D/intermediate.pem" -noout -fingerprint 2>/dev/null)" ] || p+=("the second certificate of C-chain.pem is not intermediate.pem")
report "issue server and client: files written, keys 600" "${p[@]+"${p[@]}"}"

# The modes are set, not left to the umask: under umask 277 ca.db would be 0400 and the
# directories 0500 (unwritable).
LAST_CMD="(umask 277; mtls ca init --dir ca-umask; mtls ca issue --out umask)"
RC=0
(umask 277 && "$MTLS" ca init --dir "$W/ca-umask" && "$MTLS" ca issue --dir "$W/ca-umask" --profile client \
	--uri spiffe://example.org/umask --out "$W/umask") >"$TMP/run.out" 2>"$TMP/run.err" </dev/null || RC=$?
OUT=$(cat -- "$TMP/run.out")
ERR=$(cat -- "$TMP/run.err")
p=()
[ "$RC" = 0 ] || p+=("exit status $RC")
for f in ca-umask:700 ca-umask/ca.db:600 ca-umask/lock:600 ca-umask/root.key:600 ca-umask/intermediate.key:600 \
	ca-umask/root.pem:644 ca-umask/crl.pem:644 umask.key:600 umask.pem:644 umask-chain.pem:644; do
	[ "$(mode "$W/${f%%:*}")" = "${f#*:}" ] || p+=("${f%%:*} mode $(mode "$W/${f%%:*}"), expected ${f#*:}")
done
report "under umask 277: the CA directory 700, ca.db and lock and keys 600, certificates and CRL 644" "${p[@]+"${p[@]}"}"

OV=(openssl verify -CAfile "$D/root.pem" -untrusted "$D/intermediate.pem")
p=()
for c in S:sslserver:0 C:sslclient:0 S:sslclient:26 C:sslserver:26; do
	IFS=: read -r who purpose want <<<"$c"
	out=$("${OV[@]}" -purpose "$purpose" "$W/$who.pem" 2>&1) && got=0 || got=$?
	if [ "$want" = 0 ]; then
		[ "$got" = 0 ] && [ "$out" = "$W/$who.pem: OK" ] || p+=("$who.pem -purpose $purpose: expected OK, got:" "$out")
	else
		[ "$got" != 0 ] && [[ $out == *"error 26 at 0 depth"* ]] ||
			p+=("$who.pem -purpose $purpose: expected error 26 (unsuitable purpose), got:" "$out")
	fi
done
report "openssl verify: server OK as sslserver, client as sslclient, error 26 crosswise" "${p[@]+"${p[@]}"}"

p=()
LAST_CMD="mtls verify --ca root.pem C-chain.pem"
run "$MTLS" verify --ca "$D/root.pem" "$W/C-chain.pem"
[ "$RC" = 0 ] && [ "$(first_line "$OUT")" = "accepted: $SPIFFE" ] || p+=("client chain: expected exit 0 and 'accepted: $SPIFFE'" "$OUT")
run "$MTLS" verify --ca "$D/root.pem" --purpose server --dns localhost "$W/S-chain.pem"
[ "$RC" = 0 ] && [ "$(first_line "$OUT")" = "accepted: localhost" ] || p+=("server chain --dns localhost: expected 'accepted: localhost'" "$OUT")
run "$MTLS" verify --ca "$D/root.pem" --purpose server --ip 127.0.0.1 "$W/S-chain.pem"
[ "$RC" = 0 ] || p+=("server chain --ip 127.0.0.1: exit $RC, expected 0" "$OUT")
run "$MTLS" verify --ca "$D/root.pem" --purpose server --dns localhost "$W/C-chain.pem"
[ "$RC" = 1 ] && [[ $(first_line "$OUT") == "refused: bad_key_usage:"* ]] || p+=("client cert as server: expected exit 1 'refused: bad_key_usage:'" "$OUT")
run "$MTLS" verify --ca "$D/root.pem" "$W/S-chain.pem"
[ "$RC" = 1 ] && [[ $(first_line "$OUT") == "refused: bad_key_usage:"* ]] || p+=("server cert as client: expected exit 1 'refused: bad_key_usage:'" "$OUT")
report "mtls verify: both accepted for their purpose, bad_key_usage crosswise" "${p[@]+"${p[@]}"}"

# leaf_checks FILE EKU SAN : the profile's extensions, serial, dates, issuer.
now=$(date +%s)
int_ski=$(ext "$D/intermediate.pem" subjectKeyIdentifier)
leaf_checks() {
	local f=$1 eku=$2 san=$3 serial nb na
	[ "$(ext "$f" extendedKeyUsage)" = "$eku" ] || p+=("${f##*/}: extendedKeyUsage '$(ext "$f" extendedKeyUsage)', expected '$eku'")
	[ "$(ext "$f" subjectAltName)" = "$san" ] || p+=("${f##*/}: subjectAltName '$(ext "$f" subjectAltName)', expected '$san'")
	[ "$(ext "$f" basicConstraints)" = "CA:FALSE" ] || p+=("${f##*/}: basicConstraints is not CA:FALSE")
	x509 "$f" -ext basicConstraints | grep -c 'Basic Constraints: critical' >/dev/null || p+=("${f##*/}: basicConstraints not critical")
	[ "$(ext "$f" keyUsage)" = "Digital Signature" ] || p+=("${f##*/}: keyUsage '$(ext "$f" keyUsage)', expected Digital Signature")
	[[ $(ext "$f" subjectKeyIdentifier) =~ ^([0-9A-F]{2}:){19}[0-9A-F]{2}$ ]] || p+=("${f##*/}: no subjectKeyIdentifier")
	[ -n "$int_ski" ] && [ "$(ext "$f" authorityKeyIdentifier)" = "$int_ski" ] ||
		p+=("${f##*/}: authorityKeyIdentifier '$(ext "$f" authorityKeyIdentifier)' is not the intermediate's SKI '$int_ski'")
	[ "$(x509 "$f" -issuer)" = "$(x509 "$D/intermediate.pem" -subject | sed 's/^subject=/issuer=/')" ] ||
		p+=("${f##*/}: issuer is not the intermediate's subject")
	serial=$(serial_of "$f")
	[[ $serial =~ ^[0-9A-F]{16,}$ ]] && [ $((16#${serial:0:2})) -lt 128 ] ||
		p+=("${f##*/}: serial '$serial' is not positive with at least 16 hex digits")
	nb=$(epoch "$(x509 "$f" -startdate | cut -d= -f2)")
	na=$(epoch "$(x509 "$f" -enddate | cut -d= -f2)")
	[ $((now - nb)) -ge 120 ] && [ $((now - nb)) -le 900 ] || p+=("${f##*/}: notBefore is $((now - nb)) s in the past, expected a few minutes")
	[ $((na - now)) -ge $((90 * 86400 - 600)) ] && [ $((na - now)) -le $((90 * 86400 + 600)) ] ||
		p+=("${f##*/}: notAfter is $(((na - now) / 86400)) days away, expected the default 90")
}
p=()
leaf_checks "$W/S.pem" "TLS Web Server Authentication" "DNS:localhost, IP Address:127.0.0.1"
leaf_checks "$W/C.pem" "TLS Web Client Authentication" "URI:$SPIFFE"
[ "$(serial_of "$W/S.pem")" != "$(serial_of "$W/C.pem")" ] || p+=("S and C have the same serial")
[ "$(norm "$(sed -n '1s/^issued server certificate, serial \([0-9A-F]*\),.*/\1/p' <<<"$S_OUT")")" = "$(norm "$(serial_of "$W/S.pem")")" ] ||
	p+=("the serial printed by issue is not the certificate's")
report "leaf certificates: EKU, SAN, SKI/AKI, CA:FALSE, positive random serial, dates" "${p[@]+"${p[@]}"}"

p=()
[ "$(ext "$D/intermediate.pem" basicConstraints)" = "CA:TRUE, pathlen:0" ] ||
	p+=("intermediate basicConstraints '$(ext "$D/intermediate.pem" basicConstraints)', expected 'CA:TRUE, pathlen:0'")
[ "$(ext "$D/intermediate.pem" keyUsage)" = "Certificate Sign, CRL Sign" ] || p+=("intermediate keyUsage '$(ext "$D/intermediate.pem" keyUsage)'")
[[ $(ext "$D/root.pem" basicConstraints) == "CA:TRUE" ]] || p+=("root basicConstraints '$(ext "$D/root.pem" basicConstraints)'")
[ "$(x509 "$D/root.pem" -subject | sed 's/^subject=//')" = "$(x509 "$D/root.pem" -issuer | sed 's/^issuer=//')" ] || p+=("root is not self-issued")
out=$(openssl verify -CAfile "$D/root.pem" "$D/intermediate.pem" 2>&1) || p+=("intermediate does not verify against root:" "$out")
report "CA certificates: intermediate CA:TRUE pathlen:0, signed by the root" "${p[@]+"${p[@]}"}"

ca issue --dir "$D" --profile peer --dns x.test --out "$W/P"
count_d 1
p=()
[ "$RC" = 0 ] || p+=("issue peer: exit $RC")
[ "$(ext "$W/P.pem" extendedKeyUsage)" = "TLS Web Server Authentication, TLS Web Client Authentication" ] ||
	p+=("peer extendedKeyUsage '$(ext "$W/P.pem" extendedKeyUsage)'")
for purpose in sslserver sslclient; do
	out=$("${OV[@]}" -purpose "$purpose" "$W/P.pem" 2>&1) || p+=("openssl verify -purpose $purpose:" "$out")
done
run "$MTLS" verify --ca "$D/root.pem" "$W/P-chain.pem"
[ "$RC" = 0 ] && [ "$(first_line "$OUT")" = "accepted: x.test" ] || p+=("mtls verify (client): $(first_line "$OUT")")
run "$MTLS" verify --ca "$D/root.pem" --purpose server --dns x.test "$W/P-chain.pem"
[ "$RC" = 0 ] && [ "$(first_line "$OUT")" = "accepted: x.test" ] || p+=("mtls verify --purpose server: $(first_line "$OUT")")
report "peer profile: accepted as server and as client" "${p[@]+"${p[@]}"}"

ca list --dir "$D"
p=()
[ "$RC" = 0 ] || p+=("exit status $RC")
[ "$(printf '%s\n' "$OUT" | tail -n +2 | wc -l)" = 5 ] || p+=("expected 5 rows (root, intermediate, S, C, P)")
for c in S:server C:client P:peer; do
	IFS=: read -r who prof <<<"$c"
	[[ $(list_row "$OUT" "$(serial_of "$W/$who.pem")") =~ ^[0-9A-F]+\ +valid\ +$prof\  ]] || p+=("no 'SERIAL valid $prof' row for $who.pem")
done
[[ $(list_row "$OUT" "$(serial_of "$D/root.pem")") =~ ^[0-9A-F]+\ +valid\ +root\  ]] || p+=("no row for the root")
[[ $(list_row "$OUT" "$(serial_of "$D/intermediate.pem")") =~ ^[0-9A-F]+\ +valid\ +intermediate\  ]] || p+=("no row for the intermediate")
report "list: every certificate with its serial, status and profile" "${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# handshake with CA-made certificates, then revocation"

n=0
# pair : echo-server with the CA's server certificate and CRL, one connection from
# echo-client with the CA's client certificate. RC/OUT (client), ES_RC/ES_OUT (server).
pair() {
	n=$((n + 1))
	start_echo_server "$TMP/es-$n.log" --cert "$W/S-chain.pem" --key "$W/S.key" --ca "$D/root.pem" \
		--crl "$D/crl.pem" --allow-uri 'spiffe://example.org/ns/prod/sa/*' --count 1
	LAST_CMD="echo-client --connect 127.0.0.1:$ES_PORT --name localhost"
	run "$ECHO_CLIENT" --cert "$W/C-chain.pem" --key "$W/C.key" --ca "$D/root.pem" \
		--connect "127.0.0.1:$ES_PORT" --name localhost "hello CA"
	wait_exit "$ES_PID" "$RUN_LIMIT"
	ES_RC=$EXIT_RC
	ES_OUT=$(cat -- "$TMP/es-$n.log")
}

pair
p=()
[ "$RC" = 0 ] || p+=("echo-client exit status $RC, expected 0")
has_line "$OUT" "echo: hello CA" || p+=("no echo")
[[ $(first_line "$OUT") == "server: localhost (TLSv1.3, "* ]] || p+=("echo-client did not see server 'localhost'")
[ "$ES_RC" = 0 ] || p+=("echo-server exit status $ES_RC")
[ "$(count_lines "$ES_OUT" "client: $SPIFFE (TLSv1.3, ")" = 1 ] || p+=("echo-server did not accept $SPIFFE")
[ ${#p[@]} -eq 0 ] || p+=("echo-server (exit $ES_RC):" "$ES_OUT")
report "echo-client -> echo-server with CA-made certificates and CRL" "${p[@]+"${p[@]}"}"

crl_number() { openssl crl -in "$1" -noout -text 2>/dev/null | sed -n '/CRL Number/{n;s/ //g;p}' || true; }
crl0=$(crl_number "$D/crl.pem")
C_SERIAL=$(serial_of "$W/C.pem")
ca revoke --dir "$D" --cert "$W/C.pem" --reason keyCompromise
count_d 2
D_REVOKED=0
[ "$RC" != 0 ] || D_REVOKED=$((D_REVOKED + 1))
p=()
[ "$RC" = 0 ] || p+=("exit status $RC, expected 0")
[[ $(first_line "$OUT") =~ ^revoked\ serial\ ([0-9A-F]+)\ \(keyCompromise\)\;\ new\ CRL:\ (.*)$ ]] &&
	[ "$(norm "${BASH_REMATCH[1]}")" = "$(norm "$C_SERIAL")" ] && [ "${BASH_REMATCH[2]}" = "$D/crl.pem" ] || p+=("unexpected output")
[ "$(crl_number "$D/crl.pem")" = $((crl0 + 1)) ] || p+=("CRL number $(crl_number "$D/crl.pem"), expected $((crl0 + 1))")
report "revoke --cert C.pem --reason keyCompromise publishes a new CRL" "${p[@]+"${p[@]}"}"

pair
p=()
[ "$RC" = 1 ] || p+=("echo-client exit status $RC, expected 1")
! has_line "$OUT" "echo:" || p+=("the revoked client got an echo")
[ "$ES_RC" = 0 ] || p+=("echo-server exit status $ES_RC")
[ "$(count_lines "$ES_OUT" "refused: revoked:")" = 1 ] || p+=("echo-server did not print 'refused: revoked:'")
[[ $ES_OUT == *"$(norm "$C_SERIAL")"* ]] || p+=("echo-server's refusal does not name serial $C_SERIAL")
[ ${#p[@]} -eq 0 ] || p+=("echo-server (exit $ES_RC):" "$ES_OUT")
report "echo-server restarted with the new CRL refuses the client: revoked" "${p[@]+"${p[@]}"}"

p=()
out=$("${OV[@]}" -crl_check -CRLfile "$D/crl.pem" "$W/C.pem" 2>&1) && p+=("openssl accepted the revoked client")
[[ $out == *"error 23 at 0 depth"* ]] || p+=("openssl verify -crl_check: expected error 23 (certificate revoked):" "$out")
out=$("${OV[@]}" -crl_check -CRLfile "$D/crl.pem" "$W/S.pem" 2>&1) || p+=("openssl verify -crl_check of the server:" "$out")
run "$MTLS" verify --ca "$D/root.pem" --crl "$D/crl.pem" "$W/C-chain.pem"
[ "$RC" = 1 ] && [[ $(first_line "$OUT") == "refused: revoked:"* ]] || p+=("mtls verify --crl: expected 'refused: revoked:'" "$OUT")
crl_text=$(openssl crl -in "$D/crl.pem" -noout -text 2>/dev/null || true)
grep -q "Serial Number: $C_SERIAL" <<<"$crl_text" || p+=("the CRL does not list $C_SERIAL")
grep -A4 "Serial Number: $C_SERIAL" <<<"$crl_text" | grep -c "Key Compromise" >/dev/null || p+=("the CRL entry has no reason Key Compromise")
report "openssl -crl_check: revoked (error 23); mtls verify --crl: revoked" "${p[@]+"${p[@]}"}"

p=()
ca list --dir "$D" --revoked
[ "$RC" = 0 ] || p+=("list --revoked: exit $RC")
rows=$(printf '%s\n' "$OUT" | tail -n +2)
[ "$(printf '%s\n' "$rows" | wc -l)" = 1 ] && [[ $(list_row "$rows" "$C_SERIAL") =~ ^[0-9A-F]+\ +revoked\  ]] ||
	p+=("list --revoked is not exactly the revoked client:" "$OUT")
ca list --dir "$D" --valid
[ "$RC" = 0 ] || p+=("list --valid: exit $RC")
[ -z "$(list_row "$OUT" "$C_SERIAL")" ] || p+=("list --valid shows the revoked serial")
[ -n "$(list_row "$OUT" "$(serial_of "$W/S.pem")")" ] || p+=("list --valid does not show the server")
report "list --revoked shows the serial, list --valid does not" "${p[@]+"${p[@]}"}"

crl_sha=$(sha_of "$D/crl.pem")
refuse "revoke the same certificate again: exit 1, already revoked" 1 "already revoked" "$D" "$W/none" \
	revoke --dir "$D" --serial "$C_SERIAL"
refuse "revoke an unknown serial: exit 1, no certificate" 1 "no certificate" "$D" "$W/none" \
	revoke --dir "$D" --serial 1234ABCD
EXTRA=()
[ "$(sha_of "$D/crl.pem")" = "$crl_sha" ] || EXTRA+=("a refused revoke rewrote crl.pem")
refuse "revoke the issuing CA certificate: exit 1" 1 "CA certificate" "$D" "$W/none" \
	revoke --dir "$D" --cert "$D/intermediate.pem"

# --cert is the certificate, not its serial: a self-signed one made with the server's serial
# does not revoke the server.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null -subj /CN=attacker \
	-set_serial "0x$(serial_of "$W/S.pem")" -days 1 -out "$W/foreign.pem" 2>/dev/null
EXTRA=()
[ "$(serial_of "$W/foreign.pem")" = "$(serial_of "$W/S.pem")" ] || EXTRA+=("(test setup) the forged certificate does not carry S's serial")
refuse "revoke --cert of a foreign certificate with the server's serial: exit 1, not issued by this CA" 1 \
	"$W/foreign.pem was not issued by this CA (serial $(serial_of "$W/S.pem") belongs to another certificate)" \
	"$D" "$W/none" revoke --dir "$D" --cert "$W/foreign.pem"
ca list --dir "$D" --valid
[ -n "$(list_row "$OUT" "$(serial_of "$W/S.pem")")" ] && [ "$(sha_of "$D/crl.pem")" = "$crl_sha" ] ||
	fail "revoke --cert of a foreign certificate: the server stays valid, crl.pem unchanged" "S is not valid any more or crl.pem changed"

# --serial in the form `mtls ca list` prints it, and in the form of `openssl x509 -serial`, for
# a serial that starts with a 0 digit (its first byte is below 0x10; one in ~8.5): issue until
# one does.
ZS="" ZF="" ZU=""
for i in $(seq 1 150); do
	ca issue --dir "$D" --profile client --uri "spiffe://example.org/ns/prod/sa/z$i" --out "$W/z$i"
	count_d 1
	[ "$RC" = 0 ] || break
	s=$(serial_of "$W/z$i.pem")
	if [[ $s == 0* ]]; then
		ZS=$s ZF=$W/z$i.pem ZU=spiffe://example.org/ns/prod/sa/z$i
		break
	fi
done
p=()
if [ -z "$ZS" ]; then
	p+=("could not get a certificate whose serial starts with 0 (last issue: exit $RC)")
else
	ca list --dir "$D"
	ls=$(printf '%s\n' "$OUT" | grep " URI:$ZU\$" | awk '{print $1}' || true)
	[ -n "$ls" ] || p+=("mtls ca list has no row for $ZU")
	ca revoke --dir "$D" --serial "${ls:-none}"
	count_d 2
	[ "$RC" = 0 ] || p+=("mtls ca revoke --serial $ls (as mtls ca list prints it): exit $RC, expected 0" "$ERR")
	[ "$RC" != 0 ] || D_REVOKED=$((D_REVOKED + 1))
	ca revoke --dir "$D" --serial "$ZS"
	[ "$RC" = 1 ] && [[ $ERR == *"already revoked"* ]] ||
		p+=("mtls ca revoke --serial $ZS (as openssl prints it): expected exit 1 'already revoked', got exit $RC" "$ERR")
	count_d 2
	[ "$RC" != 0 ] || D_REVOKED=$((D_REVOKED + 1))
	ca list --dir "$D" --revoked
	printf '%s\n' "$OUT" | grep -c " revoked .* URI:$ZU\$" >/dev/null || p+=("$ZU is not listed as revoked")
	out=$("${OV[@]}" -crl_check -CRLfile "$D/crl.pem" "$ZF" 2>&1) && p+=("openssl still accepts $ZS with the new CRL")
	# RFC 5280 5.3.1: no reasonCode for the reason unspecified
	entry=$(openssl crl -in "$D/crl.pem" -noout -text 2>/dev/null | sed -n "/Serial Number: $ZS\$/,/Serial Number:/p")
	[ -n "$entry" ] && [[ $entry != *"Reason Code"* ]] || p+=("the CRL entry of $ZS (revoked unspecified) has a reasonCode, or none was found:" "$entry")
fi
report "revoke --serial of a serial with a leading 0 digit, as list and as openssl print it" "${p[@]+"${p[@]}"}"

# (a serial without a leading 0 digit, so that this case does not depend on the one above)
for i in $(seq 1 40); do
	ca issue --dir "$D" --profile client --uri "spiffe://example.org/ns/prod/sa/colon$i" --out "$W/X$i"
	count_d 1
	[ "$RC" = 0 ] || break
	[[ $(serial_of "$W/X$i.pem") == 0* ]] || break
done
cp -- "$W/X$i.pem" "$W/X.pem"
xs=$(x509 "$W/X.pem" -text | sed -n '/Serial Number:/{n;s/ //g;p}')
# (the CRLs before and after, for the audit --crl cases below)
X_SERIAL=$(serial_of "$W/X.pem") X_CRL_BEFORE=$W/x-crl-before.pem X_CRL_FILE=$W/x-crl.pem
cp -- "$D/crl.pem" "$X_CRL_BEFORE"
ca revoke --dir "$D" --serial "$xs" --reason superseded
count_d 2
cp -- "$D/crl.pem" "$X_CRL_FILE"
X_CRL=$(crl_number "$X_CRL_FILE")
[ "$RC" != 0 ] || D_REVOKED=$((D_REVOKED + 1))
p=()
[ -n "$xs" ] && [[ $xs == *:* ]] || p+=("could not read the serial in openssl's colon form")
[ "$RC" = 0 ] || p+=("revoke --serial $xs: exit $RC, expected 0")
out=$(openssl crl -in "$D/crl.pem" -noout -text 2>/dev/null | grep -A4 "Serial Number: $(serial_of "$W/X.pem")" || true)
[[ $out == *Superseded* ]] || p+=("the CRL has no Superseded entry for X")
report "revoke --serial in openssl's lower-case colon form" "${p[@]+"${p[@]}"}"

p=()
n1=$(crl_number "$D/crl.pem")
ca crl --dir "$D"
count_d 1
[ "$RC" = 0 ] || p+=("crl #1: exit $RC")
n2=$(crl_number "$D/crl.pem")
ca crl --dir "$D"
count_d 1
[ "$RC" = 0 ] || p+=("crl #2: exit $RC")
n3=$(crl_number "$D/crl.pem")
[ -n "$n1" ] && [ "$n2" = $((n1 + 1)) ] && [ "$n3" = $((n2 + 1)) ] || p+=("CRL numbers $n1, $n2, $n3: not increasing by one")
crl_text=$(openssl crl -in "$D/crl.pem" -noout -text 2>/dev/null || true)
[ "$(grep -A1 'Authority Key Identifier' <<<"$crl_text" | tail -n 1 | tr -d ' ')" = "$int_ski" ] || p+=("CRL AKI is not the intermediate's SKI")
grep -q 'Version 2' <<<"$crl_text" || p+=("not a v2 CRL")
out=$(openssl crl -in "$D/crl.pem" -CAfile "$D/intermediate.pem" -noout 2>&1) && [[ $out == *"verify OK"* ]] || p+=("CRL signature does not verify with the intermediate:" "$out")
nu=$(epoch "$(openssl crl -in "$D/crl.pem" -noout -nextupdate 2>/dev/null | cut -d= -f2)")
[ $((nu - $(date +%s))) -ge $((7 * 86400 - 600)) ] && [ $((nu - $(date +%s))) -le $((7 * 86400 + 600)) ] || p+=("nextUpdate is not 7 days away")
[ "$(grep -c 'Serial Number:' <<<"$crl_text")" = "$D_REVOKED" ] || p+=("the CRL does not list exactly the $D_REVOKED revoked serials")
report "crl: CRL number increases with each publication, AKI, 7-day nextUpdate" "${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# CRL distribution point"

E=$W/ca-dp
URL=http://ca.example/crl.pem
ca init --dir "$E" --crl-url "$URL"
p=()
[ "$RC" = 0 ] || p+=("init --crl-url: exit $RC")
ca issue --dir "$E" --profile client --uri spiffe://example.org/dp --out "$W/E1"
[ "$RC" = 0 ] || p+=("issue: exit $RC")
[ "$(ext "$W/E1.pem" crlDistributionPoints)" = "Full Name:|URI:$URL" ] || p+=("CRL DP of the certificate: '$(ext "$W/E1.pem" crlDistributionPoints)'")
crl_text=$(openssl crl -in "$E/crl.pem" -noout -text 2>/dev/null || true)
grep -A2 'Issuing Distribution Point' <<<"$crl_text" | grep -c "URI:$URL" >/dev/null || p+=("the CRL has no Issuing Distribution Point URI:$URL")
report "--crl-url: certificates carry the CRL DP, the CRL a matching IDP" "${p[@]+"${p[@]}"}"

p=()
EV=(openssl verify -CAfile "$E/root.pem" -untrusted "$E/intermediate.pem" -crl_check -CRLfile "$E/crl.pem")
out=$("${EV[@]}" "$W/E1.pem" 2>&1) && [ "$out" = "$W/E1.pem: OK" ] || p+=("openssl verify -crl_check:" "$out")
[[ $out != *"different CRL scope"* ]] || p+=("CRL scope mismatch")
run "$MTLS" verify --ca "$E/root.pem" --crl "$E/crl.pem" "$W/E1-chain.pem"
[ "$RC" = 0 ] && [ "$(first_line "$OUT")" = "accepted: spiffe://example.org/dp" ] || p+=("mtls verify --crl:" "$OUT")
report "a valid certificate with the DP CRL: openssl -crl_check and mtls verify accept" "${p[@]+"${p[@]}"}"

ca revoke --dir "$E" --cert "$W/E1.pem"
p=()
[ "$RC" = 0 ] || p+=("revoke: exit $RC")
out=$("${EV[@]}" "$W/E1.pem" 2>&1) && p+=("openssl accepted the revoked certificate")
[[ $out == *"error 23 at 0 depth"* ]] || p+=("expected error 23:" "$out")
run "$MTLS" verify --ca "$E/root.pem" --crl "$E/crl.pem" "$W/E1-chain.pem"
[ "$RC" = 1 ] && [[ $(first_line "$OUT") == "refused: revoked:"* ]] || p+=("mtls verify --crl: expected refused: revoked:" "$OUT")
report "the DP CRL is really used: revoked certificate refused (error 23)" "${p[@]+"${p[@]}"}"

# The URL is one distribution point, built as a structure: never read as configuration text
# (where ",DNS:..." would add names), never cut short.
for c in "http://crl.example/a.crl,DNS:evil.example|',', quotes" "http://crl.example/a crl|spaces, control bytes" \
	"ftp://crl.example/a.crl|not an absolute http:// or https:// URL" "http:///a.crl|the host is empty" \
	"http://crl.example/$(printf 'a%.0s' $(seq 1 2030))|longer than 2048 bytes"; do
	u=${c%%|*}
	refuse "init --crl-url '${u:0:40}': exit 2, nothing created" 2 "invalid CRL URL '" "$W/ca-badurl" "$W/none" \
		init --dir "$W/ca-badurl" --crl-url "$u"
	[[ $ERR == *"${c#*|}"* ]] || fail "init --crl-url '${u:0:40}': the message says '${c#*|}'" "$ERR"
done
LONGURL=https://crl.example/$(printf 'b%.0s' $(seq 1 2028)) # 2048 bytes
ca init --dir "$W/ca-longurl" --crl-url "$LONGURL"
p=()
[ "$RC" = 0 ] || p+=("init: exit $RC" "$ERR")
ca issue --dir "$W/ca-longurl" --profile client --uri spiffe://example.org/dp --out "$W/longurl"
[ "$RC" = 0 ] || p+=("issue: exit $RC" "$ERR")
[ "$(ext "$W/longurl.pem" crlDistributionPoints)" = "Full Name:|URI:$LONGURL" ] || p+=("the certificate's CRL DP is not the whole URL")
out=$(openssl verify -CAfile "$W/ca-longurl/root.pem" -untrusted "$W/ca-longurl/intermediate.pem" -crl_check \
	-CRLfile "$W/ca-longurl/crl.pem" "$W/longurl.pem" 2>&1) || p+=("openssl verify -crl_check:" "$out")
report "--crl-url of 2048 bytes: the certificate's distribution point and the CRL's IDP hold all of it" "${p[@]+"${p[@]}"}"
if [ "$HAVE_SQLITE" = 1 ]; then
	cp -a -- "$E" "$W/ca-dp-bad"
	sqlite3 "$W/ca-dp-bad/ca.db" "UPDATE meta SET value = 'http://crl.example/a.crl,DNS:evil.example' WHERE key = 'crl_url'"
	refuse "a CRL URL injected into ca.db: issue refused" 1 "CRL distribution point in $W/ca-dp-bad/ca.db is unusable" \
		"$W/ca-dp-bad" "$W/dp-bad" issue --dir "$W/ca-dp-bad" --profile server --dns s.example --out "$W/dp-bad"
fi

# ==========================================================================================
echo "# CSR"

mkcsr() { # mkcsr OUT ARGS... : a CSR with openssl req
	openssl req -new -nodes -keyout "$1.key" -out "$1" "${@:2}" >/dev/null 2>&1
}
mkcsr "$W/csr1.csr" -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj /CN=csr -addext subjectAltName=DNS:csr.test
ca issue --dir "$D" --profile server --dns csr.test --cn csr --csr "$W/csr1.csr" --out "$W/Y"
count_d 1
p=()
[ "$RC" = 0 ] || p+=("exit status $RC, expected 0")
[ -f "$W/Y.pem" ] && [ -f "$W/Y-chain.pem" ] || p+=("Y.pem or Y-chain.pem missing")
[ ! -e "$W/Y.key" ] || p+=("Y.key was written for a CSR")
! has_line "$OUT" "  key:" || p+=("the output mentions a key file")
a=$(x509 "$W/Y.pem" -pubkey)
b=$(openssl req -in "$W/csr1.csr" -noout -pubkey 2>/dev/null || true)
[ -n "$a" ] && [ "$a" = "$b" ] || p+=("the certificate's public key is not the CSR's")
[ "$(ext "$W/Y.pem" subjectAltName)" = "DNS:csr.test" ] || p+=("SAN '$(ext "$W/Y.pem" subjectAltName)', expected DNS:csr.test")
[ "$(ext "$W/Y.pem" extendedKeyUsage)" = "TLS Web Server Authentication" ] || p+=("EKU is not serverAuth")
out=$("${OV[@]}" -purpose sslserver "$W/Y.pem" 2>&1) || p+=("openssl verify:" "$out")
report "issue --csr: signed with the CSR's key and names, no .key written" "${p[@]+"${p[@]}"}"

# (a CSR asking for CA:TRUE or for names not granted is refused: test_ca_issue.sh)
mkcsr "$W/evil.csr" -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj /CN=evil.test \
	-addext subjectAltName=DNS:evil.test -addext keyUsage=critical,digitalSignature,keyCertSign \
	-addext extendedKeyUsage=codeSigning
ca issue --dir "$D" --profile server --dns evil.test --csr "$W/evil.csr" --out "$W/A"
count_d 1
p=()
[ "$RC" = 0 ] || p+=("exit status $RC, expected 0")
[ "$(ext "$W/A.pem" basicConstraints)" = "CA:FALSE" ] || p+=("basicConstraints '$(ext "$W/A.pem" basicConstraints)', expected CA:FALSE")
[ "$(ext "$W/A.pem" extendedKeyUsage)" = "TLS Web Server Authentication" ] || p+=("EKU '$(ext "$W/A.pem" extendedKeyUsage)', expected only serverAuth")
[ "$(ext "$W/A.pem" keyUsage)" = "Digital Signature" ] || p+=("keyUsage '$(ext "$W/A.pem" keyUsage)'")
ng=$(printf '%s\n' "$OUT" | grep 'not granted' || true)
[[ $ng == *keyUsage* && $ng == *extendedKeyUsage* ]] || p+=("the output does not say that keyUsage and extendedKeyUsage were not granted")
report "abusive CSR (keyCertSign, codeSigning): CA:FALSE, serverAuth only, says what was not granted" "${p[@]+"${p[@]}"}"

# A DER CSR with the last byte of its signature flipped: it still parses, it does not verify.
openssl req -in "$W/csr1.csr" -outform DER -out "$W/bad.der" 2>/dev/null
size=$(stat -c %s "$W/bad.der")
last=$(od -An -tu1 -j $((size - 1)) -N1 "$W/bad.der" | tr -d ' ')
# shellcheck disable=SC2059
printf "$(printf '\\%03o' $((last ^ 1)))" | dd of="$W/bad.der" bs=1 seek=$((size - 1)) conv=notrunc status=none
EXTRA=()
openssl req -inform DER -in "$W/bad.der" -noout 2>/dev/null || EXTRA+=("(test setup) the altered CSR no longer parses")
[[ $(openssl req -inform DER -in "$W/bad.der" -noout -verify 2>&1) == *"verify failure"* ]] || EXTRA+=("(test setup) openssl does not report the altered CSR's signature as failing")
refuse "CSR with a broken signature: exit 1, says signature, nothing written" 1 "signature" "$D" "$W/B" \
	issue --dir "$D" --profile server --csr "$W/bad.der" --out "$W/B"

# A CSR file holds one CSR: not DER with bytes after it, not two PEM CSRs.
openssl req -in "$W/csr1.csr" -outform DER -out "$W/trail.der" 2>/dev/null
printf 'garbage' >>"$W/trail.der"
refuse "DER CSR with bytes after it: exit 1, says so" 1 "$W/trail.der holds 7 bytes after the certificate signing request" \
	"$D" "$W/B" issue --dir "$D" --profile server --dns csr.test --csr "$W/trail.der" --out "$W/B"
cat -- "$W/csr1.csr" "$W/rsa1024.csr" >"$W/two.csr" 2>/dev/null || cat -- "$W/csr1.csr" "$W/csr1.csr" >"$W/two.csr"
refuse "a file with two PEM CSRs: exit 1, says so" 1 "$W/two.csr holds more than one certificate signing request" \
	"$D" "$W/B" issue --dir "$D" --profile server --dns csr.test --csr "$W/two.csr" --out "$W/B"

mkcsr "$W/rsa1024.csr" -newkey rsa:1024 -subj /CN=weak -addext subjectAltName=DNS:weak.test
refuse "CSR with an RSA-1024 key: exit 1, nothing written" 1 "weak" "$D" "$W/R" \
	issue --dir "$D" --profile server --csr "$W/rsa1024.csr" --out "$W/R"
mkcsr "$W/rsapss.csr" -newkey rsa-pss -pkeyopt rsa_keygen_bits:2048 -subj /CN=pss -addext subjectAltName=DNS:pss.test
refuse "CSR with an RSA-PSS key (unsupported by the CA): exit 1, nothing written" 1 "unsupported" "$D" "$W/R" \
	issue --dir "$D" --profile server --csr "$W/rsapss.csr" --out "$W/R"

# Keys `openssl req` will not make (tests/tools/csrgen.c): RSA with e = 1 (every signature is
# the message itself) or e = 3, and P-256 given as explicit curve parameters.
CSRGEN=$MTLS_BIN_DIR/csrgen
for c in "rsa-e1|an RSA public exponent of 1, not an odd number from 65537" \
	"rsa-e3|an RSA public exponent of 3, not an odd number from 65537" \
	"ec-explicit|EC curve parameters given explicitly, not as a named curve"; do
	m=${c%%|*}
	"$CSRGEN" "$m" "$W/$m.csr" || fail "(test setup) csrgen $m" "exit $?"
	refuse "CSR with $m key: exit 1, says why, nothing written" 1 "weak or unsupported key: ${c#*|}" "$D" "$W/R" \
		issue --dir "$D" --profile server --dns good.example --csr "$W/$m.csr" --out "$W/R"
done
# and libmtls (the same rule, common/key_strength.c) refuses such a leaf made by openssl
printf '%s\n' "subjectAltName=DNS:good.example" "extendedKeyUsage=serverAuth" \
	"keyUsage=critical,digitalSignature" "basicConstraints=critical,CA:FALSE" \
	"subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid" >"$W/leaf.ext"
p=()
openssl x509 -req -in "$W/rsa-e1.csr" -CA "$D/intermediate.pem" -CAkey "$D/intermediate.key" \
	-days 1 -extfile "$W/leaf.ext" -out "$W/e1.pem" 2>/dev/null || p+=("(test setup) openssl x509 -req failed")
LAST_CMD="mtls verify --purpose server --dns good.example e1.pem"
run "$MTLS" verify --ca "$D/root.pem" --untrusted "$D/intermediate.pem" --purpose server --dns good.example "$W/e1.pem"
[ "$RC" = 1 ] && [[ $(first_line "$OUT") == "refused: weak_key: "* ]] || p+=("expected exit 1 'refused: weak_key: ...'")
report "mtls verify: a leaf whose RSA public exponent is 1 is refused (weak_key)" "${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# refused input: exit status, one line on stderr, nothing written"

ISS=(issue --dir "$D" --out "$W/Q")
refuse "unknown profile: exit 2" 2 "unknown profile" "$D" "$W/Q" "${ISS[@]}" --profile admin --dns a.test
refuse "invalid DNS name 'bad_name!': exit 2" 2 "invalid DNS name" "$D" "$W/Q" "${ISS[@]}" --profile server --dns 'bad_name!'
refuse "invalid DNS name '-lead.example': exit 2" 2 "invalid DNS name" "$D" "$W/Q" "${ISS[@]}" --profile server --dns -lead.example
refuse "invalid IP '300.1.1.1': exit 2" 2 "invalid IP address" "$D" "$W/Q" "${ISS[@]}" --profile server --ip 300.1.1.1
refuse "invalid URI 'spiffe://Example.org/x' (upper-case trust domain): exit 2" 2 "invalid URI" "$D" "$W/Q" \
	"${ISS[@]}" --profile client --uri spiffe://Example.org/x
refuse "invalid URI 'not a uri': exit 2" 2 "invalid URI" "$D" "$W/Q" "${ISS[@]}" --profile client --uri 'not a uri'
refuse "server profile without a DNS or IP name: exit 2" 2 "--dns" "$D" "$W/Q" "${ISS[@]}" --profile server --uri "$SPIFFE"

# The issuing CA was made with the default 1825 days: what is left is 1824 whole days.
int_end=$(epoch "$(x509 "$D/intermediate.pem" -enddate | cut -d= -f2)")
max_days=$(((int_end - $(date +%s)) / 86400))
refuse "--days 5000 beyond the issuing CA: exit 2, says the maximum ($max_days days)" 2 "at most $max_days days" "$D" "$W/Q" \
	"${ISS[@]}" --profile server --dns a.test --days 5000
refuse "--days 99999 beyond the issuing CA: exit 2, says the maximum ($max_days days)" 2 "at most $max_days days" "$D" "$W/Q" \
	"${ISS[@]}" --profile server --dns a.test --days 99999
refuse "--days 0: exit 2" 2 "--days" "$D" "$W/Q" "${ISS[@]}" --profile server --dns a.test --days 0

printf 'precious\n' >"$W/Q.pem"
q_sha=$(sha_of "$W/Q.pem")
EXTRA=()
refuse "--out that already exists: exit 2" 2 "already exists" "$D" "$W/Q" "${ISS[@]}" --profile server --dns a.test
if [ "$(sha_of "$W/Q.pem")" = "$q_sha" ] && [ ! -e "$W/Q.key" ] && [ ! -e "$W/Q-chain.pem" ]; then
	pass "--out that already exists: the existing file is untouched"
else
	fail "--out that already exists: the existing file is untouched" "Q.pem changed or Q.key/Q-chain.pem appeared"
fi
rm -f -- "$W/Q.pem"

rows_before=$("$MTLS" ca list --dir "$D" | wc -l)
EXTRA=()
refuse "--out in a directory that does not exist: exit 2, nothing issued" 2 \
	"--out: directory $W/nodir does not exist; create it first" "$D" "$W/nodir/Q" \
	issue --dir "$D" --out "$W/nodir/Q" --profile server --dns a.test
[ "$("$MTLS" ca list --dir "$D" | wc -l)" = "$rows_before" ] && [ ! -e "$W/nodir" ] ||
	fail "--out in a directory that does not exist: no certificate in the inventory" "$("$MTLS" ca list --dir "$D" | tail -n 1)"

refuse "issue with no CA in --dir: suggests mtls ca init" 1 "mtls ca init" "$W/no-ca" "$W/Q" \
	issue --dir "$W/no-ca" --profile server --dns a.test --out "$W/Q"
[ ! -e "$W/no-ca" ] || fail "issue with no CA in --dir: creates nothing" "$W/no-ca was created"

fp=$(fingerprint "$D")
EXTRA=()
refuse "init into a directory that already holds a CA: refused" 1 "already holds a CA" "$D" "$W/none" init --dir "$D"
if [ "$(fingerprint "$D")" = "$fp" ]; then
	pass "init into an existing CA: nothing in it changed"
else
	fail "init into an existing CA: nothing in it changed" "$(diff <(echo "$fp") <(fingerprint "$D") || true)"
fi

cp -a -- "$D" "$W/ca-badint"
printf 'garbage\n' >"$W/ca-badint/intermediate.pem"
refuse "corrupt intermediate.pem: refused in one line" 1 "intermediate.pem" "$W/ca-badint" "$W/Q" \
	issue --dir "$W/ca-badint" --profile server --dns a.test --out "$W/Q"

cp -a -- "$D" "$W/ca-baddb"
for i in $(seq 1 200); do printf 'this is not an SQLite database, %d\n' "$i"; done >"$W/ca-baddb/ca.db"
refuse "corrupt ca.db: issue refused in one line" 1 "ca.db" "$W/ca-baddb" "$W/Q" \
	issue --dir "$W/ca-baddb" --profile server --dns a.test --out "$W/Q"
refuse "corrupt ca.db: list refused in one line" 1 "ca.db" "$W/ca-baddb" "$W/Q" list --dir "$W/ca-baddb"

# An emptied inventory (a truncated file) must not silently become a new, empty one: that
# would forget every issued and revoked certificate, and the next CRL would un-revoke them.
cp -a -- "$D" "$W/ca-emptydb"
: >"$W/ca-emptydb/ca.db"
crl_sha=$(sha_of "$W/ca-emptydb/crl.pem")
EXTRA=()
refuse "ca.db emptied (0 bytes): issue refused in one line" 1 "ca.db" "$W/ca-emptydb" "$W/Q" \
	issue --dir "$W/ca-emptydb" --profile server --dns a.test --out "$W/Q"
EXTRA=()
[ "$(sha_of "$W/ca-emptydb/crl.pem")" = "$crl_sha" ] || EXTRA+=("crl.pem was rewritten")
refuse "ca.db emptied (0 bytes): crl refused, the CRL is not replaced" 1 "ca.db" "$W/ca-emptydb" "$W/Q" \
	crl --dir "$W/ca-emptydb"

# --root-key-dir, and an init that fails half-way must leave nothing behind.
ca init --dir "$W/ca-rk" --root-key-dir "$W/offline"
p=()
[ "$RC" = 0 ] || p+=("exit $RC")
[ -f "$W/offline/root.key" ] || p+=("no root.key in --root-key-dir")
[ ! -e "$W/ca-rk/root.key" ] || p+=("root.key also written into the CA directory")
[ "$(mode "$W/offline/root.key")" = 600 ] || p+=("root.key mode $(mode "$W/offline/root.key")")
[ "$(mode "$W/offline")" = 700 ] || p+=("--root-key-dir mode $(mode "$W/offline")")
has_line "$OUT" "  root key:                          $W/offline/root.key (keep it offline)" || p+=("init does not say where the root key is")
ca issue --dir "$W/ca-rk" --profile client --uri spiffe://example.org/rk --out "$W/rk1"
[ "$RC" = 0 ] || p+=("issue without the root key: exit $RC")
report "--root-key-dir: root.key there (600, directory 700), not in the CA directory" "${p[@]+"${p[@]}"}"

rk_sha=$(sha_of "$W/offline/root.key")
EXTRA=()
refuse "init whose --root-key-dir already has root.key: refused" 1 "root.key" "$W/offline" "$W/offline/none" \
	init --dir "$W/ca-half" --root-key-dir "$W/offline"
p=()
[ "$(sha_of "$W/offline/root.key")" = "$rk_sha" ] || p+=("the existing root.key changed")
left=$(listing "$W/ca-half")
[ "$left" = "(absent)" ] || [ -z "$left" ] || p+=("the failed init left files in $W/ca-half:" "$left")
ca init --dir "$W/ca-half"
[ "$RC" = 0 ] || p+=("a second init into $W/ca-half (without --root-key-dir) fails: exit $RC" "$ERR")
report "a failed init leaves no CA behind: init into the same directory works" "${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# encrypted CA keys"

PASS='correct horse battery staple'
printf '%s\n' "$PASS" >"$W/pass"
printf 'not it\n' >"$W/wrong"
F=$W/ca-enc
ca init --dir "$F" --passphrase-file "$W/pass" --root-key-dir "$W/enc-offline"
p=()
[ "$RC" = 0 ] || p+=("init --passphrase-file: exit $RC, expected 0")
for k in "$F/intermediate.key" "$W/enc-offline/root.key"; do
	[ "$(head -n 1 -- "$k" 2>/dev/null)" = "-----BEGIN ENCRYPTED PRIVATE KEY-----" ] || p+=("${k#"$W"/} is not an encrypted PKCS#8 key")
	[ "$(mode "$k")" = 600 ] || p+=("${k#"$W"/} mode $(mode "$k")")
	openssl asn1parse -in "$k" 2>/dev/null | grep -cE 'OBJECT +:(id-)?scrypt$' >/dev/null || p+=("${k#"$W"/} is not encrypted with scrypt")
	openssl pkey -in "$k" -passin "file:$W/pass" -noout 2>/dev/null || p+=("openssl cannot decrypt ${k#"$W"/} with the passphrase")
done
[ ! -e "$F/root.key" ] || p+=("root.key written into the CA directory")
[ "$(mode "$W/enc-offline")" = 700 ] || p+=("--root-key-dir mode $(mode "$W/enc-offline"), expected 700")
report "init --passphrase-file: scrypt-encrypted PKCS#8 keys, root key in --root-key-dir" "${p[@]+"${p[@]}"}"

# enc_cases DIR LABEL : issuing from a CA whose intermediate key is encrypted with $PASS.
enc_cases() {
	local dir=$1 label=$2
	refuse "$label: issue without a passphrase names --passphrase-file" 1 "--passphrase-file" "$dir" "$W/enc" \
		issue --dir "$dir" --profile client --uri spiffe://example.org/enc --out "$W/enc"
	refuse "$label: issue with the wrong passphrase" 1 "wrong passphrase" "$dir" "$W/enc" \
		issue --dir "$dir" --profile client --uri spiffe://example.org/enc --out "$W/enc" --passphrase-file "$W/wrong"
	LAST_CMD="PW=... mtls ca issue --passphrase-env PW"
	RC=0
	PW=$PASS timeout -k 2 "$RUN_LIMIT" "$MTLS" ca issue --dir "$dir" --profile client \
		--uri spiffe://example.org/enc --out "$W/enc" --passphrase-env PW >"$TMP/run.out" 2>"$TMP/run.err" </dev/null || RC=$?
	OUT=$(cat -- "$TMP/run.out")
	ERR=$(cat -- "$TMP/run.err")
	p=()
	[ "$RC" = 0 ] || p+=("exit $RC, expected 0")
	out=$(openssl verify -CAfile "$dir/root.pem" -untrusted "$dir/intermediate.pem" -purpose sslclient "$W/enc.pem" 2>&1) ||
		p+=("the certificate does not verify:" "$out")
	report "$label: issue with --passphrase-env works" "${p[@]+"${p[@]}"}"
	rm -f -- "$W/enc.pem" "$W/enc-chain.pem" "$W/enc.key"
}
if [ -f "$F/root.pem" ]; then
	enc_cases "$F" "CA made by init --passphrase-file"
else
	fail "CA made by init --passphrase-file: issue without, with a wrong and with the right passphrase" \
		"not run: init --passphrase-file made no CA"
fi

# The same with a key encrypted by openssl itself (scrypt N=2^14), independent of init.
cp -a -- "$D" "$W/ca-enc2"
openssl pkcs8 -topk8 -in "$D/intermediate.key" -scrypt -scrypt_N 16384 -scrypt_r 8 -scrypt_p 1 \
	-passout "file:$W/pass" -out "$W/ca-enc2/intermediate.key.new" 2>/dev/null
mv -f -- "$W/ca-enc2/intermediate.key.new" "$W/ca-enc2/intermediate.key"
chmod 600 -- "$W/ca-enc2/intermediate.key"
enc_cases "$W/ca-enc2" "key encrypted by openssl pkcs8 -scrypt"

# ==========================================================================================
echo "# concurrency and crashes"

H=$W/ca-conc
mkdir -m 700 -- "$W/conc"
ca init --dir "$H"
[ "$RC" = 0 ] || fail "init the concurrency CA" "exit $RC" "$ERR"
pids=()
for i in 1 2 3 4 5 6 7 8; do
	start_bg "$TMP/conc-$i.log" "$MTLS" ca issue --dir "$H" --profile client \
		--uri "spiffe://example.org/ns/conc/sa/c$i" --out "$W/conc/c$i"
	pids+=("$BG_PID")
done
p=()
for i in 1 2 3 4 5 6 7 8; do
	wait_exit "${pids[$((i - 1))]}" "$RUN_LIMIT"
	[ "$EXIT_RC" = 0 ] || p+=("issue c$i: exit $EXIT_RC:" "$(cat -- "$TMP/conc-$i.log")")
	out=$(openssl verify -CAfile "$H/root.pem" -untrusted "$H/intermediate.pem" "$W/conc/c$i.pem" 2>&1) || p+=("c$i.pem:" "$out")
done
report "8 concurrent issues all succeed" "${p[@]+"${p[@]}"}"

p=()
ca list --dir "$H"
rows=$(printf '%s\n' "$OUT" | tail -n +2)
[ "$RC" = 0 ] || p+=("list: exit $RC")
[ "$(printf '%s\n' "$rows" | wc -l)" = 10 ] || p+=("list has $(printf '%s\n' "$rows" | wc -l) rows, expected 10")
[ "$(printf '%s\n' "$rows" | awk '{print $1}' | sed 's/^0*//' | sort -u | wc -l)" = 10 ] || p+=("the serials are not 10 distinct ones")
for i in 1 2 3 4 5 6 7 8; do
	[ -n "$(list_row "$rows" "$(serial_of "$W/conc/c$i.pem")")" ] || p+=("c$i's serial is not in the inventory")
done
if [ "$HAVE_SQLITE" = 1 ]; then
	ic=$(sqlite3 "$H/ca.db" 'PRAGMA integrity_check' 2>&1 || true)
	[ "$ic" = ok ] || p+=("integrity_check: $ic")
fi
ca audit --dir "$H"
[ "$RC" = 0 ] && [ "$OUT" = "audit log intact: 11 entries" ] || p+=("audit: $OUT")
report "after them: 10 distinct serials, integrity ok, audit intact: 11 entries (init 3, issue 8)" "${p[@]+"${p[@]}"}"
[ "$HAVE_SQLITE" = 1 ] || skip "sqlite3 PRAGMA integrity_check (sqlite3 is not installed)"

# 20 issues at once, each killed with SIGKILL after 1-100 ms (by an inner timeout; through sh so
# that bash has no job killed by a signal to report).
mkdir -m 700 -- "$W/crash"
pids=()
for i in $(seq 1 20); do
	d=$(((i * 7) % 100 + 1))
	start_bg "$TMP/crash-$i.log" sh -c 'timeout -s KILL "$@"; exit $?' sh "$(printf '0.%03d' "$d")" "$MTLS" ca issue --dir "$H" \
		--profile client --uri "spiffe://example.org/ns/crash/sa/k$i" --out "$W/crash/k$i"
	pids+=("$BG_PID")
done
completed=0
for pid in "${pids[@]}"; do
	wait_exit "$pid" "$RUN_LIMIT"
	[ "$EXIT_RC" != 0 ] || completed=$((completed + 1))
done
p=()
if [ "$HAVE_SQLITE" = 1 ]; then
	ic=$(sqlite3 "$H/ca.db" 'PRAGMA integrity_check' 2>&1 || true)
	[ "$ic" = ok ] || p+=("integrity_check: $ic")
fi
ca list --dir "$H"
[ "$RC" = 0 ] || p+=("list after the crashes: exit $RC" "$ERR")
rows=$(printf '%s\n' "$OUT" | tail -n +2)
nrows=$(printf '%s\n' "$rows" | grep -c . || true)
[ "$(printf '%s\n' "$rows" | awk '{print $1}' | sed 's/^0*//' | sort -u | wc -l)" = "$nrows" ] || p+=("duplicate serials in the inventory")
ncert=0
for f in "$W"/crash/*.pem; do
	[ -e "$f" ] || continue
	case $f in
	*-chain.pem)
		[ "$(grep -c 'BEGIN CERTIFICATE' "$f")" = 2 ] &&
			out=$(openssl verify -CAfile "$H/root.pem" -untrusted "$f" "$f" 2>&1) || p+=("${f##*/} is not a whole chain:" "${out:-}")
		;;
	*)
		ncert=$((ncert + 1))
		if x=$(openssl x509 -in "$f" -noout -serial 2>&1); then
			[ -n "$(list_row "$rows" "${x#serial=}")" ] || p+=("${f##*/} (serial ${x#serial=}) is not in the inventory")
		else
			p+=("${f##*/} does not parse: $x")
		fi
		;;
	esac
done
for f in "$W"/crash/*.key; do
	[ -e "$f" ] || continue
	openssl pkey -in "$f" -noout 2>/dev/null || p+=("${f##*/} does not parse")
	[ "$(mode "$f")" = 600 ] || p+=("${f##*/} mode $(mode "$f")")
done
ca audit --dir "$H"
[ "$RC" = 0 ] && [ "$OUT" = "audit log intact: $((nrows + 1)) entries" ] ||
	p+=("audit: '$OUT', expected 'audit log intact: $((nrows + 1)) entries' (one per inventory row, and init's CRL)")
leftovers=$(tmp_leftovers "$W/crash" "$H" | wc -l)
report "20 issues killed at 1-100 ms: inventory sound, every file on disk whole and known ($completed completed, $ncert certificates on disk, $leftovers temporary files left)" "${p[@]+"${p[@]}"}"

ca issue --dir "$H" --profile client --uri spiffe://example.org/ns/crash/sa/after --out "$W/crash/after"
p=()
[ "$RC" = 0 ] || p+=("exit $RC")
out=$(openssl verify -CAfile "$H/root.pem" -untrusted "$H/intermediate.pem" "$W/crash/after.pem" 2>&1) || p+=("$out")
ca audit --dir "$H"
[ "$RC" = 0 ] || p+=("audit: $OUT")
report "after the crashes a further issue works" "${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# audit log"

ca audit --dir "$D"
p=()
[ "$RC" = 0 ] || p+=("exit $RC, expected 0")
[ "$OUT" = "audit log intact: $D_ACTIONS entries" ] || p+=("expected 'audit log intact: $D_ACTIONS entries' (init 3 + issue + revoke 2 + crl)")
report "audit: intact, one entry per init(3)/issue/revoke(2)/crl ($D_ACTIONS)" "${p[@]+"${p[@]}"}"

if [ "$HAVE_SQLITE" = 1 ]; then
	T=$W/ca-tamper
	cp -a -- "$D" "$T"
	p=()
	out=$(sqlite3 "$T/ca.db" "UPDATE audit SET detail='forged' WHERE seq=2" 2>&1) && p+=("UPDATE on audit succeeded")
	[[ $out == *append-only* ]] || p+=("UPDATE refused without the append-only message: $out")
	out=$(sqlite3 "$T/ca.db" "DELETE FROM audit WHERE seq=3" 2>&1) && p+=("DELETE on audit succeeded")
	ca audit --dir "$T"
	[ "$RC" = 0 ] && [ "$OUT" = "audit log intact: $D_ACTIONS entries" ] || p+=("the log changed: $OUT")
	report "the database refuses UPDATE and DELETE on the audit log" "${p[@]+"${p[@]}"}"

	p=()
	out=$(sqlite3 "$T/ca.db" "DROP TRIGGER audit_no_update; UPDATE audit SET detail='forged' WHERE seq=2;" 2>&1) ||
		p+=("(test setup) could not forge the entry: $out")
	ca audit --dir "$T"
	[ "$RC" = 1 ] || p+=("exit $RC, expected 1")
	[[ $OUT == "audit log BROKEN at entry 2 "* ]] || p+=("expected 'audit log BROKEN at entry 2 ...'")
	report "an entry edited behind the trigger's back: audit exits 1, BROKEN at entry 2" "${p[@]+"${p[@]}"}"
	crl_sha=$(sha_of "$T/crl.pem")
	EXTRA=()
	refuse "a broken audit chain: crl refused" 1 "audit log is broken at entry 2" "$T" "$W/none" crl --dir "$T"
	[ "$(sha_of "$T/crl.pem")" = "$crl_sha" ] || fail "a broken audit chain: crl.pem is not replaced" "crl.pem changed"

	# The CRL is made from the certificates table; the audit chain does not cover the table,
	# so every revocation is also an audit entry (serial, reason, time) and the two must
	# agree before anything is published.
	# tampered NAME SQL : a copy of the main CA whose inventory was changed with SQL.
	# rewrite_log DB SEQ : take entry SEQ out of the audit log and compute the seq, prev_hash
	# and hash of every later entry again as ca/store_sqlite.c does (SHA-256 of "seq:at:"
	# and each of prev, actor, action, subject, detail as "length:text"): an intact chain.
	rewrite_log() {
		local db=$1 from=$2 prev seq at actor action subject detail h sql
		local LC_ALL=C
		prev=$(sqlite3 "$db" "SELECT hash FROM audit WHERE seq = $((from - 1))")
		sql="DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq = $from;"
		while IFS=$'\x1f' read -r seq at actor action subject detail; do
			h=$(printf '%s' "$((seq - 1)):$at:${#prev}:$prev${#actor}:$actor${#action}:$action${#subject}:$subject${#detail}:$detail" |
				sha256sum | cut -d' ' -f1)
			sql+="UPDATE audit SET seq = $((seq - 1)), prev_hash = '$prev', hash = '$h' WHERE seq = $seq;"
			prev=$h
		done < <(sqlite3 -separator $'\x1f' "$db" "SELECT seq, at, actor, action, subject, detail FROM audit WHERE seq > $from ORDER BY seq")
		sql+="CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;"
		sql+="CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;"
		out=$(sqlite3 "$db" "$sql" 2>&1) || fail "(test setup) rewrite the audit log" "$out"
	}
	tn=0
	tampered() {
		tn=$((tn + 1))
		T=$W/ca-tamper-$tn
		cp -a -- "$D" "$T"
		out=$(sqlite3 "$T/ca.db" "$1" 2>&1) || fail "(test setup) sqlite3: $1" "$out"
	}
	# disagreement NAME WANT : on the tampered copy, crl and revoke (of S, still valid) are
	# refused with WANT and change nothing; audit exits 1 and says WANT.
	disagreement() {
		local name=$1 want=$2 sha
		sha=$(sha_of "$T/crl.pem")
		EXTRA=()
		refuse "$name: crl refused" 1 "$want" "$T" "$W/none" crl --dir "$T"
		EXTRA=()
		[ "$(sha_of "$T/crl.pem")" = "$sha" ] || EXTRA+=("the refused crl replaced crl.pem")
		refuse "$name: revoke refused" 1 "$want" "$T" "$W/none" revoke --dir "$T" --cert "$W/S.pem"
		p=()
		[ "$(sha_of "$T/crl.pem")" = "$sha" ] || p+=("the refused revoke replaced crl.pem")
		ca list --dir "$T" --revoked
		[ -z "$(list_row "$OUT" "$(serial_of "$W/S.pem")")" ] || p+=("the refused revoke revoked S")
		ca audit --dir "$T"
		[ "$RC" = 1 ] || p+=("audit: exit $RC, expected 1")
		[[ $OUT == *"$want"* ]] || p+=("audit does not say '$want'")
		[[ $OUT != *intact* ]] || p+=("audit says intact")
		report "$name: audit exits 1 and says so" "${p[@]+"${p[@]}"}"
	}
	C_REVOKED_AT=$(sqlite3 "$D/ca.db" "SELECT strftime('%Y-%m-%dT%H:%M:%SZ', revoked_at, 'unixepoch') FROM certs WHERE serial = '$C_SERIAL'" 2>/dev/null || true)
	WHY="the inventory was altered; restore it from a backup or investigate"

	tampered "UPDATE certs SET status = 'valid', revoked_at = NULL, revocation_reason = NULL WHERE serial = '$C_SERIAL'"
	disagreement "a keyCompromise revocation undone in the table" \
		"inventory and audit log disagree on serial $C_SERIAL (table: valid, log: revoked keyCompromise at $C_REVOKED_AT); $WHY"
	p=()
	out=$("${OV[@]}" -crl_check -CRLfile "$T/crl.pem" "$W/C.pem" 2>&1) && p+=("the published CRL no longer revokes C")
	report "a keyCompromise revocation undone in the table: the published CRL still revokes C" "${p[@]+"${p[@]}"}"

	tampered "DELETE FROM certs WHERE serial = '$C_SERIAL'"
	disagreement "a revoked certificate deleted from the table" \
		"disagree on serial $C_SERIAL (table: missing, log: revoked keyCompromise at $C_REVOKED_AT)"

	tampered "UPDATE certs SET revocation_reason = 'superseded' WHERE serial = '$C_SERIAL'"
	disagreement "the reason of a revocation changed in the table" \
		"disagree on serial $C_SERIAL (table: revoked superseded at $C_REVOKED_AT, log: revoked keyCompromise"

	tampered "UPDATE certs SET revoked_at = revoked_at + 86400 WHERE serial = '$C_SERIAL'"
	disagreement "the time of a revocation changed in the table" \
		"disagree on serial $C_SERIAL (table: revoked keyCompromise at "

	P_SERIAL=$(serial_of "$W/P.pem")
	tampered "UPDATE certs SET status = 'revoked', revoked_at = 1700000000, revocation_reason = 'unspecified' WHERE serial = '$P_SERIAL'"
	disagreement "a revocation added to the table without its audit entry" \
		"disagree on serial $P_SERIAL (table: revoked unspecified at 2023-11-14T22:13:20Z, log: not revoked)"

	# Deleting the newest audit entries keeps the chain intact (the hard case). The database
	# refuses it until its append-only trigger is dropped, and a dropped trigger is named:
	tampered "DROP TRIGGER audit_no_delete"
	disagreement "the append-only trigger dropped (the first step of cutting the log back)" \
		"the audit log's append-only trigger audit_no_delete was dropped; the inventory was altered"
	tampered "DROP TRIGGER audit_no_update; CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT 1; END"
	disagreement "the append-only trigger replaced by one that allows edits" \
		"the audit log's append-only trigger audit_no_update was changed"

	# Whoever cuts the log back and puts the trigger back: the published CRL, signed and
	# numbered, is checked against what is left.
	RETRIGGER="CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
	tampered "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq >= (SELECT seq FROM audit WHERE action = 'revoke' ORDER BY seq LIMIT 1); UPDATE certs SET status = 'valid', revoked_at = NULL, revocation_reason = NULL; DELETE FROM crls WHERE number > (SELECT MIN(number) FROM crls); $RETRIGGER"
	disagreement "the audit log cut back to before the first revocation, the table to match" \
		"crl.pem (CRL #$(crl_number "$T/crl.pem")) and the inventory disagree on serial"

	tampered "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq >= (SELECT MAX(seq) FROM audit WHERE action = 'crl'); DELETE FROM crls WHERE number = (SELECT MAX(number) FROM crls); $RETRIGGER"
	n=$(crl_number "$T/crl.pem")
	disagreement "the audit log cut back to before the last CRL, the CRL numbers to match" \
		"crl.pem is CRL #$n but the inventory and its audit log go only up to #$((n - 1))"

	# the CRL numbers: the crls table holds exactly what the log records, one for one
	tampered "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq >= (SELECT MAX(seq) FROM audit WHERE action = 'crl'); $RETRIGGER"
	disagreement "the audit log cut back to before the last CRL" \
		"the inventory's CRL table holds CRL #$n, which the audit log does not record"
	tampered "DELETE FROM crls"
	disagreement "the CRL table emptied (CRL numbers would start again at 1)" \
		"the audit log records CRL #1 but the inventory's CRL table does not"

	# The same cut back, with the older crl.pem put back: nothing on the CA host contradicts
	# it any more, but the CRL the CA published after the cut (as the distribution point or
	# any relying party holds it) does; and without any crl.pem nothing is published.
	tampered "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq >= (SELECT MAX(seq) FROM audit WHERE action = 'revoke'); UPDATE certs SET status = 'valid', revoked_at = NULL, revocation_reason = NULL WHERE serial = '$X_SERIAL'; DELETE FROM crls WHERE number >= $X_CRL; $RETRIGGER"
	cp -- "$X_CRL_BEFORE" "$T/crl.pem"
	p=()
	ca audit --dir "$T"
	[ "$RC" = 0 ] || p+=("(documented limit) audit exit $RC without the newer CRL: $OUT")
	ca audit --dir "$T" --crl "$X_CRL_FILE"
	[ "$RC" = 1 ] || p+=("audit --crl (the CRL that revoked X): exit $RC, expected 1")
	[[ $OUT == "$X_CRL_FILE (CRL #$X_CRL) and the inventory disagree on serial $X_SERIAL (the CRL: revoked superseded at "*", inventory: valid)"* ]] ||
		p+=("audit --crl does not name the revocation undone")
	openssl crl -in "$X_CRL_FILE" -outform DER -out "$W/x-crl.der" 2>/dev/null
	ca audit --dir "$T" --crl "$X_CRL_BEFORE" --crl "$W/x-crl.der"
	[ "$RC" = 1 ] && [[ $OUT == "$W/x-crl.der (CRL #$X_CRL) and the inventory disagree on serial $X_SERIAL"* ]] ||
		p+=("audit --crl with the CRL as DER: exit $RC, '$OUT'")
	report "the log cut back past a revocation and the older crl.pem put back: audit --crl with the newer CRL says so" "${p[@]+"${p[@]}"}"
	rm -f -- "$T/crl.pem"
	disagreement "the same with crl.pem removed: nothing is published" \
		"crl.pem is missing but the audit log records CRL #$((X_CRL - 1)) (SHA-256 "

	# An operator who lost crl.pem (and every copy) publishes anyway, with a number above any
	# CRL that may be out there, and the log records the decision.
	tampered "SELECT 1"
	rm -f -- "$T/crl.pem"
	p=()
	ca crl --dir "$T"
	[ "$RC" = 1 ] && [[ $ERR == *"is missing but the audit log records CRL #"*"run 'mtls ca crl --replace-missing'" ]] ||
		p+=("crl without crl.pem: exit $RC, expected 1 naming --replace-missing" "$ERR")
	before=$(date +%s)
	ca crl --dir "$T" --replace-missing
	[ "$RC" = 0 ] || p+=("crl --replace-missing: exit $RC" "$ERR")
	n=$(crl_number "$T/crl.pem")
	[ -n "$n" ] && [ "$n" -ge "$before" ] || p+=("the new CRL number $n is not the current UNIX time or later")
	ca audit --dir "$T"
	[ "$RC" = 0 ] || p+=("audit afterwards: exit $RC: $OUT")
	[ "$(sqlite3 "$T/ca.db" "SELECT COUNT(*) FROM audit WHERE action = 'crl-replaced'" 2>&1)" = 1 ] || p+=("no crl-replaced audit entry")
	ca crl --dir "$T" --replace-missing
	[ "$RC" = 2 ] && [[ $ERR == *"crl.pem is there"* ]] || p+=("crl --replace-missing with a crl.pem: exit $RC, expected 2")
	ca crl --dir "$T"
	[ "$RC" = 0 ] && [ "$(crl_number "$T/crl.pem")" = $((n + 1)) ] ||
		p+=("the next CRL is $(crl_number "$T/crl.pem"), expected one above $n")
	report "crl.pem lost: crl refused; crl --replace-missing publishes a number above the current UNIX time, logged" "${p[@]+"${p[@]}"}"

	# Restored from a backup taken before the last revocation: the newer crl.pem is refused;
	# moved aside, nothing is published under the number it carries.
	tampered "SELECT 1"
	sqlite3 "$T/ca.db" ".backup '$W/x-backup.db'"
	ca issue --dir "$T" --profile client --uri spiffe://example.org/ns/prod/sa/backup --out "$W/bk"
	ca revoke --dir "$T" --cert "$W/bk.pem"
	cp -- "$T/crl.pem" "$W/bk-crl.pem"
	cp -- "$W/x-backup.db" "$T/ca.db"
	rm -f -- "$T/ca.db-wal" "$T/ca.db-shm"
	n=$(crl_number "$W/bk-crl.pem")
	disagreement "the inventory restored from an older backup" "crl.pem (CRL #$n) and the inventory disagree on serial"
	mv -- "$T/crl.pem" "$W/bk-aside.pem"
	disagreement "... and its crl.pem moved aside: no CRL under the number of the one moved aside" \
		"crl.pem is missing but the audit log records CRL #"

	# A log rewritten from some entry on (an issuance taken out, every later hash computed
	# again, so that the chain is intact): crl.pem was signed over the original entries.
	tampered "SELECT 1"
	rewrite_log "$T/ca.db" "$(sqlite3 "$T/ca.db" "SELECT MIN(seq) FROM audit WHERE action = 'issue'")"
	p=()
	ca audit --dir "$T"
	[ "$RC" = 1 ] && [[ $OUT == *"crl.pem (CRL #"*") was signed when the audit log had "*" entries, but it has "*": its newest entries were removed"* ||
		$OUT == *"crl.pem (CRL #"*") was signed over audit entries 1-"*"the audit log was rewritten"* ]] ||
		p+=("audit: exit $RC, expected 1 saying the log was cut back or rewritten")
	report "the log rewritten without an issuance, its chain recomputed: crl.pem's checkpoint shows it" "${p[@]+"${p[@]}"}"

	tampered "SELECT 1"
	openssl crl -in "$T/crl.pem" -out "$T/crl.der" -outform DER 2>/dev/null
	openssl crl -in "$T/crl.der" -inform DER -out "$T/crl.pem" -text 2>/dev/null
	rm -f -- "$T/crl.der"
	disagreement "crl.pem replaced by another file (same CRL, with text)" \
		"is not the CRL #$(crl_number "$T/crl.pem") this CA published"
else
	skip "audit log tampering (sqlite3 is not installed)"
fi

# ==========================================================================================
echo "# inspect and export"

p=()
ca inspect "$W/S.pem"
[ "$RC" = 0 ] && has_line "$OUT" "certificate CN=localhost" && [ "$(norm "$(sed -n '/^  serial: */{s///p;q}' <<<"$OUT")")" = "$(norm "$(serial_of "$W/S.pem")")" ] ||
	p+=("certificate: exit $RC, no 'certificate CN=localhost' and serial line")
[[ $OUT == *"DNS:localhost"* ]] || p+=("certificate: SAN not shown")
ca inspect "$W/S-chain.pem"
[ "$RC" = 0 ] && [ "$(count_lines "$OUT" "certificate ")" = 2 ] && has_line "$OUT" "certificate CN=mtls Issuing CA,O=mtls" ||
	p+=("chain: exit $RC, expected two certificates (leaf and issuing CA)")
ca inspect "$W/csr1.csr"
[ "$RC" = 0 ] && has_line "$OUT" "certificate request, signature valid" && [[ $OUT == *"CN=csr"* ]] || p+=("CSR: exit $RC")
ca inspect "$D/crl.pem"
[ "$RC" = 0 ] && [[ $OUT == *"Certificate Revocation List"* && $OUT == *"$C_SERIAL"* ]] || p+=("CRL: exit $RC")
openssl x509 -in "$W/C.pem" -outform DER -out "$W/C.der" 2>/dev/null
ca inspect "$W/C.der"
[ "$RC" = 0 ] && has_line "$OUT" "certificate CN=$SPIFFE" || p+=("DER certificate: exit $RC")
[ -z "$ERR" ] || p+=("stderr: $ERR")
report "inspect: certificate, chain, CSR, CRL, DER certificate" "${p[@]+"${p[@]}"}"

head -c 600 "$W/S.key" | tr 'A-Za-z' 'N-ZA-Mn-za-m' >"$W/garbage.bin"
refuse "inspect garbage: exit 1" 1 "is not a certificate, CSR or CRL" "$W" "$W/none" inspect "$W/garbage.bin"

# `mtls ca inspect --help`: "a certificate (or chain), CSR or CRL, PEM or DER".
openssl req -in "$W/csr1.csr" -outform DER -out "$W/csr1.der" 2>/dev/null
openssl crl -in "$D/crl.pem" -outform DER -out "$W/crl.der" 2>/dev/null
p=()
ca inspect "$W/csr1.der"
[ "$RC" = 0 ] && has_line "$OUT" "certificate request, signature valid" || p+=("DER CSR: exit $RC, $ERR")
ca inspect "$W/crl.der"
[ "$RC" = 0 ] && [[ $OUT == *"Certificate Revocation List"* ]] || p+=("DER CRL: exit $RC, $ERR")
report "inspect: DER CSR and DER CRL (the help promises PEM or DER)" "${p[@]+"${p[@]}"}"

LAST_CMD="PW=... mtls ca export --cert C-chain.pem --key C.key --out C.p12 --password-env PW"
RC=0
PW=p12-secret timeout -k 2 "$RUN_LIMIT" "$MTLS" ca export --cert "$W/C-chain.pem" --key "$W/C.key" \
	--out "$W/C.p12" --password-env PW >"$TMP/run.out" 2>"$TMP/run.err" </dev/null || RC=$?
OUT=$(cat -- "$TMP/run.out")
ERR=$(cat -- "$TMP/run.err")
p=()
[ "$RC" = 0 ] || p+=("exit $RC, expected 0")
[ "$(mode "$W/C.p12")" = 600 ] || p+=("C.p12 mode $(mode "$W/C.p12"), expected 600")
info=$(PW=p12-secret openssl pkcs12 -in "$W/C.p12" -passin env:PW -nokeys -info 2>&1) || p+=("openssl pkcs12 (without -legacy) cannot read it:" "$info")
[[ $info == *"PBES2, PBKDF2, AES-256-CBC"* ]] || p+=("not AES-256-CBC with PBKDF2")
[[ $info == *"MAC: sha256"* ]] || p+=("the MAC is not SHA-256")
[ "$(grep -c 'BEGIN CERTIFICATE' <<<"$info")" = 2 ] || p+=("the bundle does not hold the certificate and the issuing CA")
a=$(PW=p12-secret openssl pkcs12 -in "$W/C.p12" -passin env:PW -nocerts -nodes 2>/dev/null | openssl pkey -pubout 2>/dev/null || true)
[ -n "$a" ] && [ "$a" = "$(x509 "$W/C.pem" -pubkey)" ] || p+=("the bundled key is not C's")
report "export: PKCS#12 (AES-256/PBKDF2, SHA-256 MAC), mode 600, read by openssl without -legacy" "${p[@]+"${p[@]}"}"

export P12PW=p12-secret
refuse "export with a key that does not match: exit 1, nothing written" 1 "does not match" "$W" "$W/bad.p12" \
	export --cert "$W/C-chain.pem" --key "$W/S.key" --out "$W/bad.p12" --password-env P12PW
[ ! -e "$W/bad.p12" ] || fail "export with a wrong key writes no file" "$W/bad.p12 exists"

finish
