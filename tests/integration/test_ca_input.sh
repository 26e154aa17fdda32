#!/usr/bin/env bash
# `mtls ca issue` input limits (issue 11, item 8): a --cn with control characters is refused
# and nothing is written; a certificate with 1,000 DNS names (given as options, or asked for
# by a CSR) keeps all 1,000 in the inventory (`ca list`) and the audit log; names too large
# for a TLS peer to accept are refused in one line; --out that names a directory ("dir/",
# "dir/.", "dir/..", an existing "dir") is refused instead of writing hidden files
# (dir/.key, dir/..pem) or files beside the directory.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca
run "$MTLS" ca init --dir "$D"
[ "$RC" = 0 ] || {
	fail "ca init" "exit $RC: $ERR"
	finish
	exit 1
}

# listing DIR : the names in DIR, hidden ones too, one a line.
listing() { find "$1" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort || true; }
certs_in_db() { sqlite3 "$D/ca.db" "SELECT COUNT(*) FROM certs" 2>&1; }

# refused NAME PATTERN ARGS... : `mtls ca issue ARGS` exits 2 with one line of stderr
# matching PATTERN (a glob), writes nothing in $W/out and issues nothing.
refused() {
	local name=$1 pattern=$2 before_files before_db
	shift 2
	p=()
	before_files=$(listing "$W/out")
	before_db=$(certs_in_db)
	LAST_CMD="mtls ca issue $*"
	run "$MTLS" ca issue --dir "$D" "$@"
	[ "$RC" = 2 ] || p+=("exit status $RC, expected 2")
	[ "$(printf '%s\n' "$ERR" | wc -l)" = 1 ] || p+=("stderr is not one line")
	# shellcheck disable=SC2053
	[[ $ERR == $pattern ]] || p+=("stderr does not match: $pattern")
	[ "$(listing "$W/out")" = "$before_files" ] || p+=("files were written: $(listing "$W/out" | tr '\n' ' ')")
	[ "$(certs_in_db)" = "$before_db" ] || p+=("the inventory changed: $before_db -> $(certs_in_db) certificates")
	report "$name" "${p[@]+"${p[@]}"}"
}
mkdir -m 700 -- "$W/out"

echo "# --cn with control characters"
for c in 01 0a 0d 1b 7f; do
	# shellcheck disable=SC2059 # the escape is the point
	printf -v ch "\\x$c" # not $(...), which drops a newline
	cn="bad${ch}cn"
	refused "--cn holding 0x$c: refused, names the character, nothing written" \
		"mtls ca issue: invalid --cn: the common name holds a control character (U+00${c^^} at byte 3); remove it" \
		--profile server --dns a.example.org --cn "$cn" --out "$W/out/cn$c"
done
refused "--cn holding U+0085 (C1): refused, nothing written" \
	"mtls ca issue: invalid --cn: *control character*" \
	--profile server --dns a.example.org --cn $'bad\xc2\x85cn' --out "$W/out/cnc1"

echo "# 1,000 names"
# names_conf FILE N PREFIX : a --config file granting N DNS names PREFIXi.example.org.
names_conf() {
	seq 1 "$2" | awk -v p="$3" '{print "dns " p $1 ".example.org"}' >"$1"
}
# names_in_list SERIAL : how many names `ca list` shows for SERIAL.
names_in_list() {
	run "$MTLS" ca list --dir "$D"
	printf '%s\n' "$OUT" | awk -v s="$1" '$1 == s' | grep -o 'DNS:[a-z0-9.]*' | sort -u | wc -l || true
}
serial_of() { openssl x509 -in "$1" -noout -serial | sed 's/^serial=//'; }

names_conf "$W/opt1000.conf" 1000 o
LAST_CMD="mtls ca issue --config opt1000.conf (1,000 --dns)"
run "$MTLS" ca issue --dir "$D" --profile server --config "$W/opt1000.conf" --out "$W/opt1000"
p=()
[ "$RC" = 0 ] || p+=("exit status $RC")
if [ "$RC" = 0 ]; then
	s=$(serial_of "$W/opt1000.pem")
	n=$(openssl x509 -in "$W/opt1000.pem" -noout -ext subjectAltName | grep -o 'DNS:' | wc -l)
	[ "$n" = 1000 ] || p+=("the certificate carries $n names")
	n=$(names_in_list "$s")
	[ "$n" = 1000 ] || p+=("ca list shows $n of the 1,000 names")
	n=$(sqlite3 "$D/ca.db" "SELECT detail FROM audit WHERE action = 'issue' AND detail LIKE 'serial $s,%'" | grep -o 'DNS:' | wc -l)
	[ "$n" = 1000 ] || p+=("the audit entry names $n of the 1,000 names")
	run "$MTLS" verify --ca "$D/root.pem" --purpose server --dns o1000.example.org "$W/opt1000-chain.pem"
	[ "$RC" = 0 ] || p+=("mtls verify refuses it: $(first_line "$OUT")")
fi
report "1,000 names as options: all in the certificate, ca list and the audit log" "${p[@]+"${p[@]}"}"

{
	printf '[req]\ndistinguished_name = dn\nreq_extensions = ext\nprompt = no\n'
	printf '[dn]\nCN = c1.example.org\n[ext]\nsubjectAltName = @alt\n[alt]\n'
	seq 1 1000 | awk '{print "DNS." $1 " = c" $1 ".example.org"}'
} >"$W/csr.cnf"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/csr1000.key" \
	-config "$W/csr.cnf" -out "$W/csr1000.csr" 2>/dev/null
names_conf "$W/csr1000.conf" 1000 c
LAST_CMD="mtls ca issue --csr csr1000.csr --config csr1000.conf (1,000 names asked and granted)"
run "$MTLS" ca issue --dir "$D" --profile server --config "$W/csr1000.conf" --csr "$W/csr1000.csr" --out "$W/csr1000"
p=()
[ "$(openssl req -in "$W/csr1000.csr" -noout -text | grep -o 'DNS:' | wc -l)" = 1000 ] || p+=("openssl made a CSR without the 1,000 names")
[ "$RC" = 0 ] || p+=("exit status $RC")
if [ "$RC" = 0 ]; then
	s=$(serial_of "$W/csr1000.pem")
	n=$(names_in_list "$s")
	[ "$n" = 1000 ] || p+=("ca list shows $n of the 1,000 names")
	[ "$(openssl x509 -in "$W/csr1000.pem" -noout -pubkey)" = "$(openssl pkey -in "$W/csr1000.key" -pubout)" ] ||
		p+=("the certificate does not carry the CSR's key")
fi
report "a CSR asking for 1,000 names: all in the certificate and ca list" "${p[@]+"${p[@]}"}"

# about 3,000 short names fit in the 64 KiB the CA allows; 5,000 do not
names_conf "$W/opt3000.conf" 3000 t
LAST_CMD="mtls ca issue --config opt3000.conf (3,000 --dns)"
run "$MTLS" ca issue --dir "$D" --profile server --config "$W/opt3000.conf" --out "$W/opt3000"
p=()
[ "$RC" = 0 ] || p+=("exit status $RC")
[ "$RC" != 0 ] || [ "$(names_in_list "$(serial_of "$W/opt3000.pem")")" = 3000 ] || p+=("ca list does not show the 3,000 names")
report "3,000 names (about 58 KiB): issued, all in ca list" "${p[@]+"${p[@]}"}"

names_conf "$W/opt5000.conf" 5000 f
refused "5,000 names (over 64 KiB): refused in one line saying how large, nothing issued" \
	"mtls ca issue: 5000 names take * bytes in the certificate, more than 65536: TLS peers refuse a certificate that large; split them over several certificates" \
	--profile server --config "$W/opt5000.conf" --out "$W/out/f5000"
# a URI may be 2,048 bytes: 40 of them are over the limit too
seq 1 40 | awk -v a="$(printf '%02000d' 0)" '{print "uri https://h.example.org/" a "/" $1}' >"$W/uri40.conf"
refused "40 URIs of 2 KiB: refused, nothing issued" \
	"mtls ca issue: 40 names take * bytes in the certificate, more than 65536: *" \
	--profile client --config "$W/uri40.conf" --out "$W/out/u40"

echo "# --out naming a directory"
mkdir -m 700 -- "$W/out/sub"
for o in "$W/out/" "$W/out/sub/" "$W/out/sub" "$W/out/sub/." "$W/out/sub/.." "$W/out/./" "$W/out/sub//"; do
	refused "--out '${o#"$W"/}': refused (a directory, not a file prefix), no hidden files" \
		"mtls ca issue: --out names a file prefix, not a directory: give DIR/NAME to write DIR/NAME.pem, DIR/NAME-chain.pem and DIR/NAME.key (--out '$o')" \
		--profile server --dns a.example.org --out "$o"
	[ -z "$(listing "$W/out/sub")" ] || fail "--out '${o#"$W"/}': nothing in out/sub" "$(listing "$W/out/sub")"
done
# from inside the directory, "." and ".." too
(
	cd "$W/out/sub"
	for o in . ..; do
		run "$MTLS" ca issue --dir "$D" --profile server --dns a.example.org --out "$o"
		[ "$RC" = 2 ] && [[ $ERR == *"not a directory: give DIR/NAME"* ]] || echo "--out $o: exit $RC: $ERR"
	done
) >"$W/dots.log"
p=()
[ ! -s "$W/dots.log" ] || p+=("$(cat -- "$W/dots.log")")
[ -z "$(listing "$W/out/sub")" ] || p+=("files written: $(listing "$W/out/sub" | tr '\n' ' ')")
[ -z "$(find "$W/out" -maxdepth 1 -name '.*' -print)" ] || p+=("hidden files in out/")
verdict "--out . and .. (from inside the directory): refused, no hidden files" "${p[@]+"${p[@]}"}"

# the longest file name written is the chain's temporary name, NAME-chain.pem.tmp-<12 hex>:
# a prefix too long for it is refused up front (exit 2), not after the key was made
long=$(printf '%0229d' 0)
refused "--out with a 229-byte file name: refused up front, names --out" \
	"mtls ca issue: --out: the file name prefix is 229 bytes, more than 228 (NAME-chain.pem and its temporary name must fit in 255)*" \
	--profile server --dns a.example.org --out "$W/out/$long"
LAST_CMD="mtls ca issue --out out/<228 bytes>"
run "$MTLS" ca issue --dir "$D" --profile server --dns a.example.org --out "$W/out/${long:1}"
p=()
[ "$RC" = 0 ] || p+=("exit status $RC")
[ -f "$W/out/${long:1}-chain.pem" ] || p+=("no chain file")
report "--out with a 228-byte file name: issued" "${p[@]+"${p[@]}"}"
rm -f -- "$W/out/${long:1}".* "$W/out/${long:1}"-chain.pem

LAST_CMD="mtls ca issue --out out/sub/app"
run "$MTLS" ca issue --dir "$D" --profile server --dns a.example.org --out "$W/out/sub/app"
p=()
[ "$RC" = 0 ] || p+=("exit status $RC")
[ "$(listing "$W/out/sub" | tr '\n' ' ')" = "app-chain.pem app.key app.pem " ] || p+=("files: $(listing "$W/out/sub" | tr '\n' ' ')")
report "--out DIR/NAME: DIR/NAME.pem, -chain.pem and .key" "${p[@]+"${p[@]}"}"

finish
