#!/usr/bin/env bash
# `mtls ca renew-issuer`: the issuing CA's key certified again by the same root with a new
# validity, with a real CA, a real `mtls ca serve`, a real `mtls server` and openssl/curl:
#   - the new intermediate.pem has the same subject, key and SKI, a later notAfter, is in
#     the inventory, the old one is kept as intermediate-prev.pem, the audit log intact;
#   - a leaf issued before verifies with `openssl verify` against the root and the NEW
#     intermediate; the CRL (signed by the same key) too;
#   - a leaf issued after carries the new intermediate in its chain;
#   - a running `mtls server` keeps accepting the old leaf's client (and the new one's);
#   - the running `mtls ca serve` hands out the new chain on /v1/renew, no restart;
#   - refusals: a lifetime past the root (names --days and the root rollover), a key that is
#     not the root's, a root rollover under way;
#   - killed (strace, SIGKILL) at each fsync, rename, link and unlink: after the next `mtls
#     ca rollover status` (which recovers), intermediate.pem is the newest intermediate the
#     inventory holds (a committed renewal is published, an uncommitted one leaves nothing),
#     its key the issuing key, nothing temporary left, the audit log intact.
set -euo pipefail
BG_LIMIT=${BG_LIMIT:-240}
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

command -v curl >/dev/null || _lib_die "curl not found in PATH"
unset https_proxy HTTPS_PROXY all_proxy ALL_PROXY || true

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca
TD=spiffe://example.org
APP=$TD/ns/dev/sa/app

m() {
	LAST_CMD="mtls $*"
	run "$MTLS" "$@"
}
serial() { openssl x509 -in "$1" -noout -serial 2>/dev/null | sed 's/^serial=//'; }
# nth_serial FILE N : the serial of the Nth certificate of a PEM bundle (1-based).
nth_serial() {
	awk -v n="$2" '/-----BEGIN CERTIFICATE-----/{i++} i==n' "$1" | openssl x509 -noout -serial 2>/dev/null |
		sed 's/^serial=//'
}
ski() { openssl x509 -in "$1" -noout -ext subjectKeyIdentifier 2>/dev/null | tail -n 1 | tr -d ' '; }
subject() { openssl x509 -in "$1" -noout -subject -nameopt RFC2253 2>/dev/null; }
end_of() { date -d "$(openssl x509 -in "$1" -noout -enddate | sed 's/^notAfter=//')" +%s; }
pub() { openssl x509 -in "$1" -noout -pubkey 2>/dev/null; }
keypub() { openssl pkey -in "$1" -pubout 2>/dev/null; }
# inter_serials : the intermediates of the inventory, one serial a line, sorted.
inter_serials() { "$MTLS" ca list --dir "$D" 2>/dev/null | awk '$3 == "intermediate" {print $1}' | sort; }
audit_ok() { "$MTLS" ca audit --dir "$D" 2>/dev/null | grep -q '^audit log intact'; }

m ca init --dir "$D"
[ "$RC" = 0 ] || _lib_die "(setup) mtls ca init failed: $ERR"
m ca issue --dir "$D" --profile server --dns localhost --ip 127.0.0.1 --out "$W/srv"
[ "$RC" = 0 ] || _lib_die "(setup) the server certificate: $ERR"
m ca issue --dir "$D" --profile client --uri "$APP" --out "$W/old"
[ "$RC" = 0 ] || _lib_die "(setup) the client certificate: $ERR"
cp -- "$D/intermediate.pem" "$W/int-before.pem"

# a mtls server in front of an HTTP backend, trusting the root only
start_backend "$W/be.log" --mode http
start_tunnel_server "$W/srv.log" --target "127.0.0.1:$BE_PORT" --cert "$W/srv-chain.pem" \
	--key "$W/srv.key" --ca "$D/root.pem" --allow-uri "$APP"
# through PREFIX : an HTTPS request through the mtls server as the client PREFIX (its chain
# sent); 0 if the backend's answer came back.
through() {
	local out
	out=$(curl -sS --max-time 20 --cacert "$D/root.pem" --cert "$1-chain.pem" --key "$1.key" \
		"https://127.0.0.1:$SRV_PORT/" 2>&1) || {
		THROUGH_ERR=$out
		return 1
	}
	[ "$out" = "hello from backend" ] || {
		THROUGH_ERR="answer: $out"
		return 1
	}
}
THROUGH_ERR=
through "$W/old" || _lib_die "(setup) the old client is not accepted before the renewal: $THROUGH_ERR"

start_bg "$W/serve.log" "$MTLS" ca serve --dir "$D" --listen 127.0.0.1:0 --http-listen none
SERVE_PID=$BG_PID
wait_for_line "$W/serve.log" '"event":"listening"' "$READY_LIMIT" "$SERVE_PID" || {
	cat -- "$W/serve.log" >&2
	_lib_die "mtls ca serve did not start"
}
AP=$(_daemon_port "$W/serve.log" listening)
# renew_json OUT KEY : a /v1/renew body with a fresh key's CSR
renew_json() {
	openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout "$2" \
		-subj / -out "$2.csr" >/dev/null 2>&1 || _lib_die "(setup) openssl req"
	printf '{"csr":"%s"}' "$(awk '{printf "%s\\n", $0}' "$2.csr")" >"$1"
}
field() { sed -n "s/.*\"$2\":\"\\(\\([^\"\\\\]\\|\\\\.\\)*\\)\".*/\\1/p" "$1" | head -n 1 | sed 's/\\\//\//g' | { IFS= read -r v || true; printf '%b' "$v"; }; }
# v1_renew TAG : POST /v1/renew as the old client; the chain in $W/TAG-chain.pem, CODE.
v1_renew() {
	renew_json "$W/$1.json" "$W/$1.key"
	CODE=$(curl -sS -o "$W/$1.out" -w '%{http_code}' --max-time 20 --cacert "$D/root.pem" \
		--cert "$W/old-chain.pem" --key "$W/old.key" -H 'Content-Type: application/json' \
		--data-binary "@$W/$1.json" "https://127.0.0.1:$AP/v1/renew" 2>"$W/curl.err" || true)
	field "$W/$1.out" chain >"$W/$1-chain.pem"
}
v1_renew before
[ "$CODE" = 200 ] || _lib_die "(setup) /v1/renew before: $CODE $(cat -- "$W/before.out")"
[ "$(nth_serial "$W/before-chain.pem" 2)" = "$(serial "$W/int-before.pem")" ] ||
	_lib_die "(setup) the chain before does not end with intermediate.pem"
pass "setup: a CA, a client certificate accepted by a mtls server, a CA service renewing"

# ------------------------------------------------------------------------------------------
echo "# the renewal"
# the default lifetime is the current one's, counted from now: in the second of ca init
# (a quick setup, seen in a CI rehearsal) the new end is the old one, and "later" cannot show
while [ "$(date -u +%s)" -le "$(stat -c %Y "$D/intermediate.pem")" ]; do
	sleep 0.2
done
m ca renew-issuer --dir "$D"
p=()
[ "$RC" = 0 ] || p+=("exit $RC")
new=$(serial "$D/intermediate.pem")
old=$(serial "$W/int-before.pem")
[ -n "$new" ] && [ "$new" != "$old" ] || p+=("intermediate.pem is not a new certificate")
[ "$(subject "$D/intermediate.pem")" = "$(subject "$W/int-before.pem")" ] || p+=("another subject")
[ "$(ski "$D/intermediate.pem")" = "$(ski "$W/int-before.pem")" ] || p+=("another subject key identifier")
[ "$(pub "$D/intermediate.pem")" = "$(keypub "$D/intermediate.key")" ] || p+=("not the issuing key")
[ "$(end_of "$D/intermediate.pem")" -gt "$(end_of "$W/int-before.pem")" ] || p+=("the notAfter is not later")
openssl verify -CAfile "$D/root.pem" "$D/intermediate.pem" >/dev/null 2>&1 || p+=("it does not verify under the root")
cmp -s "$D/intermediate-prev.pem" "$W/int-before.pem" || p+=("intermediate-prev.pem is not the old certificate")
[ ! -e "$D/intermediate-renewed.pem" ] || p+=("intermediate-renewed.pem left behind")
inter_serials | grep -qx "$new" || p+=("the new intermediate is not in the inventory")
audit_ok || p+=("mtls ca audit does not say intact")
[[ $OUT == *"serial $new"*"intermediate-prev.pem"* ]] || p+=("the output does not name the new serial and intermediate-prev.pem")
report "renew-issuer: same subject, key and SKI, a later end, under the root; the old kept as intermediate-prev.pem; inventory and audit" "${p[@]+"${p[@]}"}"

p=()
LAST_CMD="openssl verify -CAfile root.pem -untrusted intermediate.pem old.pem"
out=$(openssl verify -CAfile "$D/root.pem" -untrusted "$D/intermediate.pem" "$W/old.pem" 2>&1) ||
	p+=("openssl verify: $out")
out=$(openssl crl -in "$D/crl.pem" -noout -verify -CAfile "$D/intermediate.pem" 2>&1) ||
	p+=("the CRL does not verify with the new intermediate: $out")
verdict "a leaf issued before verifies against the root and the NEW intermediate; so does the CRL" \
	"${p[@]+"${p[@]}"}"

m ca issue --dir "$D" --profile client --uri "$APP" --out "$W/new"
p=()
[ "$RC" = 0 ] || p+=("mtls ca issue: exit $RC: $ERR")
[ "$(nth_serial "$W/new-chain.pem" 2)" = "$new" ] || p+=("the new leaf's chain holds $(nth_serial "$W/new-chain.pem" 2), not $new")
report "a leaf issued after carries the new intermediate in its chain" "${p[@]+"${p[@]}"}"

p=()
THROUGH_ERR=
through "$W/old" || p+=("the old client is refused: $THROUGH_ERR")
through "$W/new" || p+=("the new client is refused: $THROUGH_ERR")
kill -0 "$SRV_PID" 2>/dev/null || p+=("the mtls server is gone")
verdict "the running mtls server keeps accepting the old leaf's client, and accepts the new one" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 5 "$W/srv.log")"

v1_renew after
p=()
[ "$CODE" = 200 ] || p+=("POST /v1/renew: $CODE $(cat -- "$W/after.out")")
[ "$(nth_serial "$W/after-chain.pem" 2)" = "$new" ] ||
	p+=("the chain served holds intermediate $(nth_serial "$W/after-chain.pem" 2), not $new")
kill -0 "$SERVE_PID" 2>/dev/null || p+=("mtls ca serve is gone")
verdict "the running mtls ca serve hands out the new chain on /v1/renew (no restart)" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 5 "$W/serve.log")"

# ------------------------------------------------------------------------------------------
echo "# refusals"
sum=$(cat -- "$D/intermediate.pem" "$D/intermediate-prev.pem" | sha256sum)
m ca renew-issuer --dir "$D" --days 5000
p=()
[ "$RC" = 1 ] || p+=("exit $RC, expected 1")
[[ $ERR == *"would outlive the root"*"--days"*"mtls ca rollover"* ]] || p+=("does not say it outlives the root, --days and the rollover")
report "a lifetime past the root: refused, with the most --days allows and the root rollover" "${p[@]+"${p[@]}"}"

m ca renew-issuer --dir "$D" --root-key "$D/intermediate.key"
p=()
[ "$RC" = 1 ] || p+=("exit $RC, expected 1")
[[ $ERR == *"is not the key of the root"* ]] || p+=("does not say it is not the root's key")
report "a key that is not the root's: refused" "${p[@]+"${p[@]}"}"
vcheck "after the refusals intermediate.pem and intermediate-prev.pem are unchanged" \
	"$([ "$(cat -- "$D/intermediate.pem" "$D/intermediate-prev.pem" | sha256sum)" = "$sum" ] || echo changed)"

D2=$W/ca2
"$MTLS" ca init --dir "$D2" >/dev/null 2>&1 || _lib_die "(setup) a second CA"
"$MTLS" ca rollover begin --dir "$D2" >/dev/null 2>&1 || _lib_die "(setup) rollover begin"
m ca renew-issuer --dir "$D2"
p=()
[ "$RC" = 1 ] || p+=("exit $RC, expected 1")
[[ $ERR == *"root rollover is under way"*"rollover finish"* ]] || p+=("does not say a rollover is under way")
report "during a root rollover: refused (finish it first)" "${p[@]+"${p[@]}"}"

stop_bg "$SERVE_PID"

# ------------------------------------------------------------------------------------------
echo "# mtls ca renew-issuer: SIGKILL at each fsync, rename, link and unlink"
if ! command -v strace >/dev/null || ! strace -f -qq -o /dev/null true 2>/dev/null; then
	echo "skip  the kills: strace is not installed (or cannot trace here)"
	finish
	exit $?
fi
STRACE=(env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" strace -f -qq -o /dev/null)
total=0 killed=0 forward=0 nothing=0
bad=()
for sc in fsync rename link unlink; do
	for n in $(seq 1 40); do
		before=$(serial "$D/intermediate.pem")
		known=$(inter_serials)
		LAST_CMD="strace -e inject=$sc:signal=KILL:when=$n mtls ca renew-issuer"
		run "${STRACE[@]}" -e trace="$sc" -e inject="$sc:signal=KILL:when=$n" \
			"$MTLS" ca renew-issuer --dir "$D" --days 1000
		k=$RC
		total=$((total + 1))
		case $k in
		137) killed=$((killed + 1)) ;;
		0) ;;
		*) bad+=("$sc #$n: exit status $k, expected 0 or 137: $ERR") ;;
		esac
		run "$MTLS" ca rollover status --dir "$D"
		[ "$RC" = 0 ] || bad+=("$sc #$n: mtls ca rollover status (the recovery): exit $RC: $ERR")
		added=$(comm -13 <(printf '%s\n' "$known") <(inter_serials))
		now=$(serial "$D/intermediate.pem")
		if [ -n "$added" ]; then
			[ "$now" = "$added" ] || bad+=("$sc #$n (exit $k): the inventory holds the renewed $added, intermediate.pem is $now")
			[ "$(serial "$D/intermediate-prev.pem")" = "$before" ] ||
				bad+=("$sc #$n: intermediate-prev.pem is not the one replaced ($before)")
			forward=$((forward + 1))
		else
			[ "$now" = "$before" ] || bad+=("$sc #$n: intermediate.pem changed to $now, which the inventory does not hold")
			nothing=$((nothing + 1))
		fi
		[ "$(pub "$D/intermediate.pem")" = "$(keypub "$D/intermediate.key")" ] ||
			bad+=("$sc #$n: intermediate.pem is not the issuing key's")
		[ ! -e "$D/intermediate-renewed.pem" ] || bad+=("$sc #$n: intermediate-renewed.pem left behind")
		audit_ok || bad+=("$sc #$n: mtls ca audit does not say intact")
		[ "$k" = 0 ] && break
	done
done
p=("${bad[@]+"${bad[@]}"}")
[ "$killed" -gt 0 ] || p+=("no run was killed: the injection did not work")
[ "$forward" -gt 0 ] && [ "$nothing" -gt 0 ] || p+=("renewals finished $forward times, left nothing $nothing times: both expected")
verdict "$total runs, $killed killed: afterwards intermediate.pem is the newest intermediate of the inventory ($forward renewed, $nothing not), the issuing key's, nothing left over, the audit intact" \
	"${p[@]+"${p[@]}"}"

# after all that, the old leaf still verifies with what is on disk
vcheck "the leaf issued first still verifies with the root and intermediate.pem" \
	"$(openssl verify -CAfile "$D/root.pem" -untrusted "$D/intermediate.pem" "$W/old.pem" 2>&1 >/dev/null || echo "does not verify")"

finish
