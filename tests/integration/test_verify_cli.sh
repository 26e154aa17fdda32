#!/usr/bin/env bash
# `mtls verify`: the refusal matrix over the certificate zoo, the explanations, exit codes,
# --help and --config. Table-driven: one row per case.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

cd -- "$CERTS" # certificate file names in the table are relative to the zoo

APP1=spiffe://test.mtls/ns/prod/sa/app1
OTHER=spiffe://test.mtls/ns/dev/sa/other
BOTH=spiffe://test.mtls/ns/prod/sa/both
DEEP=spiffe://test.mtls/ns/prod/sa/deep
ZERO=0000000000000000000000000000000000000000000000000000000000000000

# vcase NAME RC EXPECT DETAIL ARGS... : run `mtls verify ARGS...` and check
#   RC 0  exit 0, first stdout line is exactly EXPECT ("accepted: IDENTITY"), no stderr
#   RC 1  exit 1, first stdout line starts with EXPECT ("refused: REASON:"), no stderr
#   RC 2  exit 2, stderr contains EXPECT, no verdict on stdout
# and, if DETAIL is not empty, that the output (stdout and stderr) contains DETAIL.
vcase() {
	local name=$1 want_rc=$2 expect=$3 detail=$4 first problems=()
	shift 4
	run "$MTLS" verify "$@"
	first=$(first_line "$OUT")
	[ "$RC" = "$want_rc" ] || problems+=("exit status $RC, expected $want_rc")
	case $want_rc in
	0) [ "$first" = "$expect" ] || problems+=("first line is not '$expect'") ;;
	1) [[ $first == "$expect"* ]] || problems+=("first line does not start with '$expect'") ;;
	2)
		[[ $ERR == *"$expect"* ]] || problems+=("stderr does not contain '$expect'")
		if has_line "$OUT" "accepted:" || has_line "$OUT" "refused:"; then
			problems+=("a usage error printed a verdict")
		fi
		;;
	esac
	if [ "$want_rc" != 2 ] && [ -n "$ERR" ]; then
		problems+=("unexpected output on stderr")
	fi
	if [ -n "$detail" ] && [[ "$OUT$ERR" != *"$detail"* ]]; then
		problems+=("output does not mention '$detail'")
	fi
	if [ ${#problems[@]} -eq 0 ]; then
		pass "$name"
	else
		fail "$name" "mtls verify $*" "${problems[@]}" "exit status: $RC" \
			"stdout:" "$OUT" "stderr:" "$ERR"
	fi
}

# Pins, computed independently of libmtls.
spki_hex=$(openssl x509 -in client.pem -noout -pubkey | openssl pkey -pubin -outform DER |
	openssl dgst -sha256 -r | cut -d' ' -f1)
spki_b64=$(openssl x509 -in client.pem -noout -pubkey | openssl pkey -pubin -outform DER |
	openssl dgst -sha256 -binary | openssl base64 -A)
spki_colons=$(printf '%s' "$spki_hex" | tr 'a-f' 'A-F' | sed 's/../&:/g; s/:$//')
cert_hex=$(openssl x509 -in client.pem -outform DER | openssl dgst -sha256 -r | cut -d' ' -f1)
if [ ${#spki_hex} -ne 64 ] || [ ${#cert_hex} -ne 64 ]; then
	echo "could not compute pins with openssl" >&2
	exit 1
fi

echo "# chain verification (purpose client: as a server checks its clients)"
#     name                              rc expect                        detail                  args
vcase "good client"                     0 "accepted: $APP1"             "allowed by: any:ca"    --ca ca.pem client-chain.pem
vcase "leaf + --untrusted intermediate" 0 "accepted: $APP1"             ""                      --ca ca.pem --untrusted int.pem client.pem
vcase "leaf without its intermediate"   1 "refused: issuer_not_sent:"   "CN=mtls test issuing"  --ca ca.pem client.pem
vcase "trust anchor is another CA"      1 "refused: unknown_ca:"        ""                      --ca other-ca.pem client-chain.pem
vcase "client of another CA"            1 "refused: unknown_ca:"        "CN=other root"         --ca ca.pem other-client-chain.pem
vcase "self-signed client"              1 "refused: self_signed:"       "CN=app1"               --ca ca.pem selfsigned-client.pem
vcase "expired client"                  1 "refused: expired:"           "2021-01-01T00:00:00Z"  --ca ca.pem expired-client-chain.pem
vcase "not yet valid client"            1 "refused: not_yet_valid:"     "2040-01-01T00:00:00Z"  --ca ca.pem notyet-client-chain.pem
vcase "--at before the zoo was issued"  1 "refused: not_yet_valid:"     ""                      --ca ca.pem --at 2020-02-02T00:00:00Z client-chain.pem
vcase "server cert used as client"      1 "refused: bad_key_usage:"     "CN=server.test"        --ca ca.pem server-chain.pem
vcase "client without EKU"              1 "refused: bad_key_usage:"     "clientAuth"            --ca ca.pem noeku-client-chain.pem
vcase "client+server cert as client"    0 "accepted: $BOTH"             ""                      --ca ca.pem both-chain.pem
vcase "second client identity"          0 "accepted: $OTHER"            ""                      --ca ca.pem client2-chain.pem
vcase "RSA 1024 key"                    1 "refused: weak_key:"          "CN=weak"               --ca ca.pem rsa1024-client-chain.pem
vcase "SHA-1 signature"                 1 "refused: weak_signature:"    "CN=sha1"               --ca ca.pem sha1-client-chain.pem
vcase "corrupted signature"             1 "refused: bad_signature:"     ""                      --ca ca.pem badsig-client-chain.pem
vcase "long chain, --max-depth 2"       1 "refused: chain_too_long:"    "maximum depth 2"       --ca longchain-ca.pem --max-depth 2 longchain-client-chain.pem
vcase "long chain, --max-depth 3"       0 "accepted: $DEEP"             ""                      --ca longchain-ca.pem --max-depth 3 longchain-client-chain.pem
vcase "long chain, default depth"       0 "accepted: $DEEP"             ""                      --ca longchain-ca.pem longchain-client-chain.pem
vcase "one intermediate, --max-depth 0" 1 "refused: chain_too_long:"    "maximum depth 0"       --ca ca.pem --max-depth 0 client-chain.pem
vcase "one intermediate, --max-depth 1" 0 "accepted: $APP1"             ""                      --ca ca.pem --max-depth 1 client-chain.pem
vcase "issuer is not a CA"              1 "refused: invalid_ca:"        "CN=not a ca"           --ca ca.pem noca-client-chain.pem
vcase "malformed certificate file"      1 "refused: bad_pem:"           ""                      --ca ca.pem malformed.pem

echo "# revocation"
vcase "revoked client, crl.pem"         1 "refused: revoked:"           "CN=revoked"            --ca ca.pem --crl crl.pem revoked-client-chain.pem
vcase "good client, crl.pem"            0 "accepted: $APP1"             ""                      --ca ca.pem --crl crl.pem client-chain.pem
vcase "expired CRL"                     1 "refused: crl_expired:"       "2020-02-01T00:00:00Z"  --ca ca.pem --crl crl-expired.pem client-chain.pem
vcase "expired CRL, 366 days grace"     1 "refused: crl_expired:"       ""                      --ca ca.pem --crl crl-expired.pem --crl-grace 366d client-chain.pem
vcase "--crl-check-chain, no root CRL"  1 "refused: crl_missing:"       "CN=mtls test root"     --ca ca.pem --crl crl.pem --crl-check-chain client-chain.pem
vcase "--crl-check-chain, crl-all.pem"  0 "accepted: $APP1"             ""                      --ca ca.pem --crl crl-all.pem --crl-check-chain client-chain.pem
vcase "revoked, crl-all.pem, chain"     1 "refused: revoked:"           ""                      --ca ca.pem --crl crl-all.pem --crl-check-chain revoked-client-chain.pem

echo "# purpose server (as a connector checks its server)"
vcase "server by DNS name"              0 "accepted: server.test"       "allowed by: chain only" --ca ca.pem --purpose server --dns server.test server-chain.pem
vcase "server by second DNS SAN"        0 "accepted: server.test"       ""                      --ca ca.pem --purpose server --dns localhost server-chain.pem
vcase "server DNS name, other case"     0 "accepted: server.test"       ""                      --ca ca.pem --purpose server --dns SERVER.Test server-chain.pem
vcase "server by IP 127.0.0.1"          0 "accepted: server.test"       ""                      --ca ca.pem --purpose server --ip 127.0.0.1 server-chain.pem
vcase "wrong DNS name"                  1 "refused: name_mismatch:"     "wrong.test"            --ca ca.pem --purpose server --dns wrong.test server-chain.pem
vcase "wrong IP"                        1 "refused: name_mismatch:"     "127.0.0.2"             --ca ca.pem --purpose server --ip 127.0.0.2 server-chain.pem
vcase "wrong IP (IPv6)"                 1 "refused: name_mismatch:"     ""                      --ca ca.pem --purpose server --ip ::1 server-chain.pem
vcase "client cert used as server"      1 "refused: bad_key_usage:"     "server authentication" --ca ca.pem --purpose server --dns app1.test client-chain.pem
vcase "client+server cert as server"    0 "accepted: $BOTH"             ""                      --ca ca.pem --purpose server --dns both.test both-chain.pem
vcase "expired server"                  1 "refused: expired:"           ""                      --ca ca.pem --purpose server --dns server.test expired-server-chain.pem
vcase "revoked server"                  1 "refused: revoked:"           ""                      --ca ca.pem --crl crl.pem --purpose server --dns server.test revoked-server-chain.pem
vcase "server of another CA"            1 "refused: unknown_ca:"        ""                      --ca ca.pem --purpose server --dns server.test other-server-chain.pem
vcase "server, --allow-dns mismatch"    1 "refused: identity_not_allowed:" ""                   --ca ca.pem --purpose server --dns server.test --allow-dns other.test server-chain.pem

echo "# expected URI and allow rules"
vcase "--uri matches"                   0 "accepted: $APP1"             ""                      --ca ca.pem --uri "$APP1" client-chain.pem
vcase "--uri mismatch"                  1 "refused: name_mismatch:"     "sa/app2"               --ca ca.pem --uri spiffe://test.mtls/ns/prod/sa/app2 client-chain.pem
vcase "--allow-uri exact"               0 "accepted: $APP1"             "allowed by: uri:$APP1" --ca ca.pem --allow-uri "$APP1" client-chain.pem
vcase "--allow-uri with * segment"      0 "accepted: $APP1"             ""                      --ca ca.pem --allow-uri 'spiffe://test.mtls/ns/*/sa/app1' client-chain.pem
vcase "--allow-uri trailing *"          0 "accepted: $APP1"             ""                      --ca ca.pem --allow-uri 'spiffe://test.mtls/ns/prod/sa/*' client-chain.pem
vcase "--allow-uri mismatch"            1 "refused: identity_not_allowed:" "$APP1"              --ca ca.pem --allow-uri 'spiffe://test.mtls/ns/dev/sa/*' client-chain.pem
vcase "--allow-uri * is one segment"    1 "refused: identity_not_allowed:" ""                   --ca ca.pem --allow-uri 'spiffe://test.mtls/*' client-chain.pem
vcase "--allow-uri * is a whole segment" 1 "refused: identity_not_allowed:" ""                  --ca ca.pem --allow-uri 'spiffe://test.mtls/ns/pr*/sa/app1' client-chain.pem
vcase "--allow-uri * not in authority"  1 "refused: identity_not_allowed:" ""                   --ca ca.pem --allow-uri 'spiffe://*/ns/prod/sa/app1' client-chain.pem
vcase "--allow-uri is not a prefix"     1 "refused: identity_not_allowed:" ""                   --ca ca.pem --allow-uri spiffe://test.mtls/ns/prod/sa/app client-chain.pem
vcase "--allow-uri, second identity"    0 "accepted: $OTHER"            ""                      --ca ca.pem --allow-uri 'spiffe://test.mtls/ns/dev/sa/*' client2-chain.pem
vcase "--allow-dns exact"               0 "accepted: $APP1"             "allowed by: dns:app1.test" --ca ca.pem --allow-dns app1.test client-chain.pem
vcase "--allow-dns wildcard"            0 "accepted: $APP1"             ""                      --ca ca.pem --allow-dns '*.test' client-chain.pem
vcase "--allow-dns case-insensitive"    0 "accepted: $APP1"             ""                      --ca ca.pem --allow-dns APP1.TEST client-chain.pem
vcase "--allow-dns wildcard needs label" 1 "refused: identity_not_allowed:" ""                  --ca ca.pem --allow-dns '*.app1.test' client-chain.pem
vcase "--allow-dns mismatch"            1 "refused: identity_not_allowed:" ""                   --ca ca.pem --allow-dns app2.test client-chain.pem
vcase "--allow-cn"                      0 "accepted: $APP1"             "allowed by: cn:app1"   --ca ca.pem --allow-cn app1 client-chain.pem
vcase "--allow-cn mismatch"             1 "refused: identity_not_allowed:" ""                   --ca ca.pem --allow-cn app2 client-chain.pem
vcase "name rules are alternatives"     0 "accepted: $APP1"             ""                      --ca ca.pem --allow-uri 'spiffe://test.mtls/ns/dev/sa/*' --allow-dns app1.test client-chain.pem

echo "# pins"
vcase "--allow-spki hex"                0 "accepted: $APP1"             ""                      --ca ca.pem --allow-spki "$spki_hex" client-chain.pem
vcase "--allow-spki base64"             0 "accepted: $APP1"             ""                      --ca ca.pem --allow-spki "$spki_b64" client-chain.pem
vcase "--allow-spki hex with colons"    0 "accepted: $APP1"             ""                      --ca ca.pem --allow-spki "$spki_colons" client-chain.pem
vcase "--allow-spki mismatch"           1 "refused: pin_mismatch:"      "$spki_hex"             --ca ca.pem --allow-spki "$ZERO" client-chain.pem
vcase "--allow-spki given a cert hash"  1 "refused: pin_mismatch:"      ""                      --ca ca.pem --allow-spki "$cert_hex" client-chain.pem
vcase "--allow-cert"                    0 "accepted: $APP1"             ""                      --ca ca.pem --allow-cert "$cert_hex" client-chain.pem
vcase "--allow-cert mismatch"           1 "refused: pin_mismatch:"      ""                      --ca ca.pem --allow-cert "$ZERO" client-chain.pem
vcase "pins are alternatives"           0 "accepted: $APP1"             ""                      --ca ca.pem --allow-spki "$ZERO" --allow-cert "$cert_hex" client-chain.pem
vcase "pin ok but name rule fails"      1 "refused: identity_not_allowed:" ""                   --ca ca.pem --allow-spki "$spki_hex" --allow-uri 'spiffe://test.mtls/ns/dev/sa/*' client-chain.pem
vcase "name rule ok but pin fails"      1 "refused: pin_mismatch:"      ""                      --ca ca.pem --allow-uri "$APP1" --allow-spki "$ZERO" client-chain.pem

echo "# email SANs (a client certificate made here, issued by the zoo's issuing CA)"
printf '%s\n' "basicConstraints = critical,CA:FALSE" "keyUsage = critical,digitalSignature" \
	"extendedKeyUsage = clientAuth" "subjectAltName = email:alice@example.org" \
	"subjectKeyIdentifier = hash" "authorityKeyIdentifier = keyid" >"$TMP/alice.ext"
if ! openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/alice.key" \
	-subj /CN=alice -out "$TMP/alice.csr" >"$TMP/alice.log" 2>&1 ||
	! openssl x509 -req -in "$TMP/alice.csr" -CA int.pem -CAkey int.key -days 30 \
		-set_serial "0x$(openssl rand -hex 12)" -extfile "$TMP/alice.ext" \
		-out "$TMP/alice.pem" >>"$TMP/alice.log" 2>&1; then
	echo "could not make the email certificate:" >&2
	cat -- "$TMP/alice.log" >&2
	exit 1
fi
cat -- "$TMP/alice.pem" int.pem >"$TMP/alice-chain.pem"
ALICE=$TMP/alice-chain.pem
vcase "email SAN is listed"             0 "accepted: alice"             "email:      alice@example.org" --ca ca.pem "$ALICE"
vcase "--allow-email address"           0 "accepted: alice"             "allowed by: email:alice@example.org" --ca ca.pem --allow-email alice@example.org "$ALICE"
vcase "--allow-email domain, any case"  0 "accepted: alice"             "allowed by: email:*@EXAMPLE.org" --ca ca.pem --allow-email '*@EXAMPLE.org' "$ALICE"
vcase "--allow-email other address"     1 "refused: identity_not_allowed:" "email:alice@example.org" --ca ca.pem --allow-email bob@example.org "$ALICE"
vcase "--allow-email local part exact"  1 "refused: identity_not_allowed:" ""                   --ca ca.pem --allow-email Alice@example.org "$ALICE"
vcase "--allow-email not a subdomain"   1 "refused: identity_not_allowed:" ""                   --ca ca.pem --allow-email '*@sub.example.org' "$ALICE"
vcase "--allow-email, no email SAN"     1 "refused: identity_not_allowed:" ""                   --ca ca.pem --allow-email '*@example.org' client-chain.pem
vcase "--email matches"                 0 "accepted: alice"             ""                      --ca ca.pem --email alice@example.org "$ALICE"
vcase "--email, domain in upper case"   0 "accepted: alice"             ""                      --ca ca.pem --email alice@EXAMPLE.ORG "$ALICE"
vcase "--email mismatch"                1 "refused: name_mismatch:"     "bob@example.org"       --ca ca.pem --email bob@example.org "$ALICE"
vcase "--email, no email SAN"           1 "refused: name_mismatch:"     "alice@example.org"     --ca ca.pem --email alice@example.org client-chain.pem
vcase "--email, chain refused first"    1 "refused: unknown_ca:"        ""                      --ca other-ca.pem --email alice@example.org "$ALICE"
vcase "--allow-email not an address"    2 "*@example.org"               ""                      --ca ca.pem --allow-email example.org "$ALICE"

echo "# usage and configuration errors (exit 2)"
vcase "malformed CA file"               2 "malformed.pem"               ""                      --ca malformed.pem client-chain.pem
vcase "leaf given as the CA"            2 "CA file client.pem holds a certificate that is not a CA (subject CN=app1" "give the CA bundle, not a leaf" --ca client.pem client-chain.pem
vcase "chain file given as the CA"      2 "that is not a CA"            ""                      --ca client-chain.pem client-chain.pem
vcase "missing CA file"                 2 "no-such-ca.pem"              ""                      --ca no-such-ca.pem client-chain.pem
vcase "malformed CRL file"              2 "malformed.pem"               ""                      --ca ca.pem --crl malformed.pem client-chain.pem
vcase "missing certificate file"        2 "no-such-cert.pem"            ""                      --ca ca.pem no-such-cert.pem
vcase "unknown option"                  2 "unknown option '--bogus'"    ""                      --ca ca.pem --bogus client-chain.pem
vcase "short option"                    2 "unknown option '-x'"         ""                      --ca ca.pem -x client-chain.pem
vcase "option without its value"        2 "--ca needs a value"          ""                      client-chain.pem --ca
vcase "missing --ca"                    2 "give --ca FILE"              ""                      client-chain.pem
vcase "two certificate files"           2 "exactly one CERT"            ""                      --ca ca.pem client-chain.pem client.pem
vcase "--purpose server without name"   2 "--dns NAME or --ip ADDR"     ""                      --ca ca.pem --purpose server server-chain.pem
vcase "--dns and --ip together"         2 "not both"                    ""                      --ca ca.pem --purpose server --dns server.test --ip 127.0.0.1 server-chain.pem
vcase "unknown --purpose"               2 "not 'both'"                  ""                      --ca ca.pem --purpose both client-chain.pem
vcase "bad --at"                        2 "--at yesterday"              ""                      --ca ca.pem --at yesterday client-chain.pem
vcase "--max-depth not a number"        2 "'abc'"                       ""                      --ca ca.pem --max-depth abc client-chain.pem
vcase "--max-depth out of range"        2 "verify depth"                ""                      --ca ca.pem --max-depth 17 client-chain.pem
vcase "negative --crl-grace"            2 "grace"                       ""                      --ca ca.pem --crl crl.pem --crl-grace -1 client-chain.pem
vcase "--crl-grace over 366 days"       2 "grace"                       ""                      --ca ca.pem --crl crl.pem --crl-grace 31622401s client-chain.pem
vcase "malformed SPKI pin"              2 "zzzz"                        ""                      --ca ca.pem --allow-spki zzzz client-chain.pem

echo "# --help"
run "$MTLS" verify --help
help_problems=()
[ "$RC" = 0 ] || help_problems+=("exit status $RC, expected 0")
[[ $OUT == usage:* ]] || help_problems+=("stdout does not start with 'usage:'")
# Every option of the verify table (read from the source, so that a new option must be
# documented) and every option this test relies on must be described.
src_opts=$(sed -n 's/^[[:space:]]*{"\([a-z0-9-]*\)", OPT_.*/\1/p' "$MTLS_SOURCE_DIR/cli/verify_cmd.c")
[ "$(printf '%s\n' "$src_opts" | grep -c .)" -ge 15 ] ||
	help_problems+=("could not read the option table from cli/verify_cmd.c")
for opt in $src_opts ca untrusted purpose dns ip uri email at crl crl-check-chain crl-grace \
	allow-uri allow-dns allow-cn allow-email allow-spki allow-cert allow-any max-depth config \
	help; do
	grep -Eq -- "^  --$opt( |\$)" <<<"$OUT" || help_problems+=("--help does not describe --$opt")
done
if [ ${#help_problems[@]} -eq 0 ]; then
	pass "--help describes every option"
else
	fail "--help describes every option" "${help_problems[@]}" "stdout:" "$OUT" "stderr:" "$ERR"
fi

echo "# CRL grace period (a CRL made here, signed by the zoo's issuing CA)"
# The zoo's crl-expired.pem expired on 2020-02-01, before the zoo's certificates were
# issued ("now"), and the grace period is at most 366 days: no --at time makes both the
# certificates valid and that CRL inside its grace period (see the two cases above). So make
# a CRL of int.pem that expired an hour ago, listing revoked-client, and pin "now" with --at.
ca_dir=$TMP/crl-ca
mkdir -p -- "$ca_dir"
: >"$ca_dir/index.txt"
echo 4000 >"$ca_dir/crlnumber"
cat >"$ca_dir/ca.cnf" <<EOF
[ ca ]
default_ca = int
[ int ]
database       = $ca_dir/index.txt
crlnumber      = $ca_dir/crlnumber
certificate    = $CERTS/int.pem
private_key    = $CERTS/int.key
default_md     = sha256
crl_extensions = crl_ext
[ crl_ext ]
authorityKeyIdentifier = keyid:always
EOF
now=$(date +%s)
last_update=$(date -u -d "@$((now - 2 * 86400))" +%Y%m%d%H%M%SZ)
next_update=$(date -u -d "@$((now - 3600))" +%Y%m%d%H%M%SZ)
next_update_iso=$(date -u -d "@$((now - 3600))" +%Y-%m-%dT%H:%M:%SZ)
if ! openssl ca -config "$ca_dir/ca.cnf" -batch -revoke revoked-client-chain.pem \
	-crl_reason keyCompromise >"$ca_dir/log" 2>&1 ||
	! openssl ca -config "$ca_dir/ca.cnf" -batch -gencrl -crl_lastupdate "$last_update" \
		-crl_nextupdate "$next_update" -out "$TMP/stale-crl.pem" >>"$ca_dir/log" 2>&1; then
	echo "could not make the stale CRL:" >&2
	cat -- "$ca_dir/log" >&2
	exit 1
fi
stale=$TMP/stale-crl.pem
vcase "stale CRL, no grace"             1 "refused: crl_expired:"       "$next_update_iso"      --ca ca.pem --crl "$stale" --at "@$now" client-chain.pem
vcase "stale CRL, grace 1 s too short"  1 "refused: crl_expired:"       ""                      --ca ca.pem --crl "$stale" --at "@$now" --crl-grace 3599s client-chain.pem
vcase "stale CRL, grace just enough"    0 "accepted: $APP1"             "warning: "             --ca ca.pem --crl "$stale" --at "@$now" --crl-grace 1h client-chain.pem
vcase "stale CRL within grace"          0 "accepted: $APP1"             "$next_update_iso"      --ca ca.pem --crl "$stale" --at "@$now" --crl-grace 2h client-chain.pem
vcase "revoked, stale CRL within grace" 1 "refused: revoked:"           "CN=revoked"            --ca ca.pem --crl "$stale" --at "@$now" --crl-grace 2h revoked-client-chain.pem
# the warning is printed only when the grace period was needed
run "$MTLS" verify --ca ca.pem --crl crl.pem --crl-grace 2h client-chain.pem
if [ "$RC" = 0 ] && ! has_line "$OUT" "warning:"; then
	pass "fresh CRL with grace: no warning"
else
	fail "fresh CRL with grace: no warning" "exit status $RC" "stdout:" "$OUT" "stderr:" "$ERR"
fi
run "$MTLS" verify --ca ca.pem --crl "$stale" --at "@$now" --crl-grace 2h client-chain.pem
if [ "$(count_lines "$OUT" "warning: ")" = 1 ] && [[ $OUT == *"grace"* ]]; then
	pass "stale CRL with grace: one warning line about the grace period"
else
	fail "stale CRL with grace: one warning line about the grace period" "stdout:" "$OUT"
fi

echo "# --config gives the same verdict as the same options on the command line"
# cfg_equiv NAME RC EXPECT CERT KEY VALUE [KEY VALUE]... : VALUE "" means a flag.
cfg_n=0
cfg_equiv() {
	local name=$1 want_rc=$2 expect=$3 cert=$4 flags=() cfg
	shift 4
	cfg_n=$((cfg_n + 1))
	cfg=$TMP/verify-$cfg_n.conf
	printf '# mtls verify options for "%s"\n\n' "$name" >"$cfg"
	while [ $# -ge 2 ]; do
		if [ -n "$2" ]; then
			flags+=("--$1" "$2")
			printf '%s %s\n' "$1" "$2" >>"$cfg"
		else
			flags+=("--$1")
			printf '%s\n' "$1" >>"$cfg"
		fi
		shift 2
	done
	run "$MTLS" verify "${flags[@]}" "$cert"
	local rc_flags=$RC out_flags=$OUT
	run "$MTLS" verify --config "$cfg" "$cert"
	if [ "$RC" = "$want_rc" ] && [ "$rc_flags" = "$want_rc" ] && [ "$OUT" = "$out_flags" ] &&
		[[ $(first_line "$OUT") == "$expect"* ]]; then
		pass "--config: $name"
	else
		fail "--config: $name" "flags: ${flags[*]} $cert -> exit $rc_flags" "$out_flags" \
			"config file $(cat -- "$cfg") -> exit $RC" "$OUT" "stderr: $ERR" \
			"expected exit $want_rc and '$expect'"
	fi
}
cfg_equiv "allow-uri mismatch" 1 "refused: identity_not_allowed:" client-chain.pem \
	ca "$CERTS/ca.pem" allow-uri 'spiffe://test.mtls/ns/dev/sa/*'
cfg_equiv "allow-uri match" 0 "accepted: $APP1" client-chain.pem \
	ca "$CERTS/ca.pem" allow-uri 'spiffe://test.mtls/ns/prod/sa/*'
cfg_equiv "list option given twice" 0 "accepted: $APP1" client-chain.pem \
	ca "$CERTS/ca.pem" allow-uri 'spiffe://test.mtls/ns/dev/sa/*' allow-uri "$APP1"
cfg_equiv "crl-check-chain flag" 1 "refused: crl_missing:" client-chain.pem \
	ca "$CERTS/ca.pem" crl "$CERTS/crl.pem" crl-check-chain ""
cfg_equiv "purpose server" 1 "refused: name_mismatch:" server-chain.pem \
	ca "$CERTS/ca.pem" purpose server dns wrong.test
cfg_equiv "max-depth and pins" 0 "accepted: $APP1" client-chain.pem \
	ca "$CERTS/ca.pem" max-depth 1 allow-spki "$spki_hex"
cfg_equiv "allow-email and email" 0 "accepted: alice" "$ALICE" \
	ca "$CERTS/ca.pem" allow-email '*@example.org' email alice@example.org

# "key = value", indentation, comments and blank lines
cat >"$TMP/eq.conf" <<EOF
# comment

   ca = $CERTS/ca.pem
allow-uri=spiffe://test.mtls/ns/dev/sa/*
	# indented comment
EOF
vcase "--config: 'key = value' syntax"  1 "refused: identity_not_allowed:" ""                   --config "$TMP/eq.conf" client-chain.pem

printf 'ca %s\nallow-urls %s\n' "$CERTS/ca.pem" "$APP1" >"$TMP/unknown.conf"
vcase "--config: unknown key"           2 "unknown.conf:2: unknown key 'allow-urls'" ""  --config "$TMP/unknown.conf" client-chain.pem
printf 'ca %s\ncrl-check-chain maybe\n' "$CERTS/ca.pem" >"$TMP/badflag.conf"
vcase "--config: bad flag value"        2 "badflag.conf:2:" ""                              --config "$TMP/badflag.conf" client-chain.pem
printf 'ca %s\nconfig %s\n' "$CERTS/ca.pem" "$TMP/eq.conf" >"$TMP/nested.conf"
vcase "--config: no nested config"      2 "nested.conf:2:" ""                               --config "$TMP/nested.conf" client-chain.pem
vcase "--config: missing file"          2 "no-such.conf"                ""                      --config "$TMP/no-such.conf" client-chain.pem
# A NUL byte once ended parsing without a word: the crl line after it was ignored, and a
# revoked certificate accepted. Any control byte but tab refuses the file, naming the line.
printf 'ca %s\n\0crl %s\n' "$CERTS/ca.pem" "$CERTS/crl.pem" >"$TMP/nul.conf"
vcase "--config: NUL byte"              2 "nul.conf:2: NUL byte in config file" ""         --config "$TMP/nul.conf" revoked-client-chain.pem
printf 'ca %s\ncrl %s\x1b[0m\n' "$CERTS/ca.pem" "$CERTS/crl.pem" >"$TMP/esc.conf"
vcase "--config: escape byte"           2 "esc.conf:2: control byte 0x1b" ""               --config "$TMP/esc.conf" revoked-client-chain.pem
printf 'ca %s\r\ncrl\t%s\r\n' "$CERTS/ca.pem" "$CERTS/crl.pem" >"$TMP/crlf.conf"
vcase "--config: CRLF lines and a tab"  1 "refused: revoked:"           ""                      --config "$TMP/crlf.conf" revoked-client-chain.pem

finish
