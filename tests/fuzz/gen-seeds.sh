#!/usr/bin/env bash
# Regenerate the certificate-based fuzz seeds and fuzz_certs.h (the CA and CRLs that
# fuzz_chain embeds, the fixed verification time, a pin for fuzz_identity).
#
# Usage: tests/fuzz/gen-seeds.sh   (from anywhere; rewrites seeds/fuzz_identity/,
#                                   seeds/fuzz_chain/, repro/fuzz_{chain,identity}/,
#                                   fuzz_certs.h)
#
# The seeds are committed; run this only to change them. It makes a new CA each time, so
# the chain seeds and fuzz_certs.h must be committed together. Keys are thrown away.
# Keys are ECDSA P-256, signatures SHA-256 (the crafted identity seeds carry junk ones).
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
S=$here/seeds
W=$(mktemp -d)
trap 'rm -rf -- "$W"' EXIT
unset RANDFILE || true

ossl() {
	if ! openssl "$@" >"$W/log" 2>&1 </dev/null; then
		echo "gen-seeds.sh: 'openssl $*' failed:" >&2
		cat -- "$W/log" >&2
		exit 1
	fi
}

cat >"$W/ext.cnf" <<'EOF'
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = placeholder
[ root_ext ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ int_ext ]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[ client_ext ]
basicConstraints = critical, CA:FALSE
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = URI:spiffe://example.org/ns/prod/sa/api, DNS:api.example.org, IP:10.0.0.1, IP:fd00::1
[ server_ext ]
basicConstraints = critical, CA:FALSE
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:svc.example.org, DNS:*.svc.example.org, IP:127.0.0.1, IP:::1
[ cnonly_ext ]
basicConstraints = critical, CA:FALSE
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
[ ca_nolen_ext ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[ noeku_ext ]
basicConstraints = critical, CA:FALSE
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
keyUsage = critical, digitalSignature
subjectAltName = URI:spiffe://example.org/ns/prod/sa/api
[ revoked_ext ]
basicConstraints = critical, CA:FALSE
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = URI:spiffe://example.org/ns/prod/sa/revoked
[ nc_int_ext ]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
nameConstraints = critical, permitted;DNS:example.org, permitted;URI:.example.org, permitted;IP:10.0.0.0/255.0.0.0, permitted;email:example.org, excluded;DNS:evil.example.org
[ nc_leaf_ext ]
basicConstraints = critical, CA:FALSE
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = URI:spiffe://api.example.org/ns/prod/sa/api, DNS:*.svc.example.org, IP:10.0.0.1, email:api@example.org
[ nc_escape_ext ]
basicConstraints = critical, CA:FALSE
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = URI:https://api.example.org:x@evil.test/, DNS:*.example.org, email:api@evil.test
[ odd_names_ext ]
basicConstraints = critical, CA:FALSE
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
keyUsage = critical, digitalSignature, keyCertSign
extendedKeyUsage = clientAuth, anyExtendedKeyUsage
subjectAltName = URI:spiffe://example.org/ns/prod/sa/api, DNS:bad_label.example.org, DNS:a..example.org, DNS:*.*.example.org, URI:no-scheme/x, URI:x://a b/
[ ca_db ]
database = $ENV::W/index.txt
crlnumber = $ENV::W/crlnumber
default_md = sha256
default_crl_days = 30
[ ca_sign ]
database = $ENV::W/index-sign.txt
new_certs_dir = $ENV::W
rand_serial = yes
default_md = sha256
policy = policy_any
[ policy_any ]
commonName = supplied
EOF
export W
: >"$W/index.txt"
: >"$W/index-sign.txt"
echo 01 >"$W/crlnumber"

# key NAME [genpkey options]: P-256 unless told otherwise
key() {
	local name=$1
	shift
	[ $# -gt 0 ] || set -- -algorithm EC -pkeyopt ec_paramgen_curve:P-256
	ossl genpkey "$@" -out "$W/$name.key"
}
# leaf NAME SUBJECT EXT ISSUER DAYS (makes a P-256 key unless NAME.key exists)
leaf() {
	[ -f "$W/$1.key" ] || key "$1"
	ossl req -new -key "$W/$1.key" -subj "$2" -config "$W/ext.cnf" -out "$W/$1.csr"
	ossl x509 -req -in "$W/$1.csr" -CA "$W/$4.pem" -CAkey "$W/$4.key" -set_serial "0x$(openssl rand -hex 8)" \
		-days "$5" -sha256 -extfile "$W/ext.cnf" -extensions "$3" -out "$W/$1.pem"
}

key root
ossl req -x509 -new -key "$W/root.key" -subj "/O=mtls fuzz/CN=mtls fuzz root" -days 10950 -sha256 \
	-config "$W/ext.cnf" -extensions root_ext -out "$W/root.pem"
leaf int "/O=mtls fuzz/CN=mtls fuzz intermediate" int_ext root 10950
leaf client "/O=mtls fuzz/CN=api" client_ext int 3650
leaf server "/O=mtls fuzz/CN=svc.example.org" server_ext int 3650
leaf cnonly "/CN=legacy-client" cnonly_ext int 3650
leaf nonames "/O=mtls fuzz/OU=no names" cnonly_ext int 3650
leaf revoked "/O=mtls fuzz/CN=revoked" revoked_ext int 3650
# the strict profile: name constraints on every SAN type, names out of syntax, a long serial
leaf ncint "/O=mtls fuzz/CN=constrained intermediate" nc_int_ext root 10950
leaf ncleaf "/O=mtls fuzz/CN=constrained" nc_leaf_ext ncint 3650
leaf ncescape "/O=mtls fuzz/CN=escape" nc_escape_ext ncint 3650
leaf oddnames "/O=mtls fuzz/CN=odd names" odd_names_ext int 3650
ossl x509 -req -in "$W/client.csr" -CA "$W/int.pem" -CAkey "$W/int.key" \
	-set_serial 0x0102030405060708091011121314151617181920212223 -days 3650 -sha256 \
	-extfile "$W/ext.cnf" -extensions client_ext -out "$W/longserial.pem"
leaf expired "/O=mtls fuzz/CN=expired" client_ext int 1
leaf noeku "/CN=no eku" noeku_ext int 3650
key p224 -algorithm EC -pkeyopt ec_paramgen_curve:P-224
leaf p224 "/CN=p224" client_ext int 3650
key rsa1024 -algorithm RSA -pkeyopt rsa_keygen_bits:1024
leaf rsa1024 "/CN=rsa1024" client_ext int 3650
# issued by a certificate that is not a CA
leaf notca "/CN=issued by a leaf" client_ext client 3650
# valid from 2040 on
leaf notyet "/CN=not yet" client_ext int 3650
ossl ca -batch -config "$W/ext.cnf" -name ca_sign -in "$W/notyet.csr" -cert "$W/int.pem" \
	-keyfile "$W/int.key" -startdate 20400101000000Z -enddate 20500101000000Z \
	-extfile "$W/ext.cnf" -extensions client_ext -notext -out "$W/notyet.pem"
# five CAs below the root: more than the default maximum depth (4)
prev=root
for i in 1 2 3 4 5; do
	leaf "long$i" "/CN=long $i" ca_nolen_ext "$prev" 10950
	prev=long$i
done
leaf longleaf "/CN=long leaf" client_ext long5 3650
# self-signed client certificate, not from the CA
key self
ossl req -x509 -new -key "$W/self.key" -subj "/CN=self" -days 3650 -sha256 -config "$W/ext.cnf" \
	-extensions client_ext -out "$W/self.pem"

# CRLs: the intermediate's revokes "revoked"; both expire in 30 days (fuzz_chain verifies
# 31 days from now with a grace period, to reach the grace-period path).
crl() {
	ossl ca -config "$W/ext.cnf" -name ca_db -gencrl -keyfile "$W/$1.key" -cert "$W/$1.pem" \
		-out "$W/$1.crl"
}
crl root
ossl ca -config "$W/ext.cnf" -name ca_db -revoke "$W/revoked.pem" -keyfile "$W/int.key" \
	-cert "$W/int.pem"
crl int

rm -rf -- "$S/fuzz_identity" "$S/fuzz_chain"
mkdir -p -- "$S/fuzz_identity" "$S/fuzz_chain"
for n in client server cnonly nonames self; do
	ossl x509 -in "$W/$n.pem" -outform DER -out "$S/fuzz_identity/$n.der"
done
C=$S/fuzz_chain
cat "$W/client.pem" "$W/int.pem" >"$C/client-chain.pem"
cat "$W/server.pem" "$W/int.pem" >"$C/server-chain.pem"
cat "$W/cnonly.pem" "$W/int.pem" >"$C/cnonly-chain.pem"
cat "$W/revoked.pem" "$W/int.pem" >"$C/revoked-chain.pem"
cat "$W/expired.pem" "$W/int.pem" >"$C/expired-chain.pem"
cp -- "$W/client.pem" "$C/leaf-without-intermediate.pem"
cp -- "$W/self.pem" "$C/self-signed.pem"
cat "$W/noeku.pem" "$W/int.pem" >"$C/noeku-chain.pem"
cat "$W/p224.pem" "$W/int.pem" >"$C/p224-chain.pem"
cat "$W/rsa1024.pem" "$W/int.pem" >"$C/rsa1024-chain.pem"
cat "$W/notca.pem" "$W/client.pem" "$W/int.pem" >"$C/issued-by-leaf-chain.pem"
cat "$W/notyet.pem" "$W/int.pem" >"$C/notyet-chain.pem"
cat "$W/ncleaf.pem" "$W/ncint.pem" >"$C/name-constraints-chain.pem"
cat "$W/ncescape.pem" "$W/ncint.pem" >"$C/name-constraints-escape-chain.pem"
cat "$W/oddnames.pem" "$W/int.pem" >"$C/odd-names-chain.pem"
cat "$W/longserial.pem" "$W/int.pem" >"$C/long-serial-chain.pem"
cat "$W"/longleaf.pem "$W"/long[54321].pem >"$C/too-long-chain.pem"
head -c 700 "$C/client-chain.pem" >"$C/truncated.pem"
printf -- '-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n' \
	>"$C/garbage.pem"


# Hand-made certificates for the corners of identity.c (the signature is junk: identity.c
# does not verify). odd: negative serial, BMPString and repeated CNs, times at the ends of
# the range, empty/odd-length/unusual SANs; nul-san: a URI SAN with a NUL byte; nul-cn: a
# CN with a NUL byte, no SAN, and a key of an algorithm OpenSSL does not know.
# crafted NAME SERIAL EXTENSION-OID < sections [subject], [spki_alg], [ext_value]
crafted() {
	local pub
	pub=$(openssl pkey -in "$W/client.key" -pubout -outform DER | tail -c 65 | od -An -tx1 | tr -d ' \n')
	cat >"$W/$1.cnf" <<EOF
asn1 = SEQUENCE:cert
[cert]
tbs = SEQUENCE:tbs
alg = SEQUENCE:sigalg
sig = FORMAT:HEX,BITSTRING:00
[sigalg]
oid = OID:ecdsa-with-SHA256
[tbs]
ver = EXPLICIT:0,INTEGER:2
serial = INTEGER:$2
alg = SEQUENCE:sigalg
issuer = SEQUENCE:issuer
validity = SEQUENCE:validity
subject = SEQUENCE:subject
spki = SEQUENCE:spki
exts = EXPLICIT:3,SEQUENCE:exts
[issuer]
rdn1 = SET:issuer_rdn
[issuer_rdn]
a = SEQUENCE:issuer_atv
[issuer_atv]
oid = OID:commonName
v = UTF8:crafted issuer
[validity]
nb = UTCTIME:500101000000Z
na = GENTIME:99991231235959Z
[spki]
alg = SEQUENCE:spki_alg
key = FORMAT:HEX,BITSTRING:$pub
[exts]
e = SEQUENCE:ext
[ext]
oid = OID:$3
v = OCTWRAP,SEQUENCE:ext_value
EOF
	cat >>"$W/$1.cnf"
	ossl asn1parse -genconf "$W/$1.cnf" -noout -out "$S/fuzz_identity/$1.der"
}

crafted odd -12345 subjectAltName <<'EOF'
[subject]
rdn1 = SET:cn1
rdn2 = SET:cn2
[cn1]
a = SEQUENCE:cn1_atv
[cn1_atv]
oid = OID:commonName
v = BMPSTRING:legacy-client
[cn2]
a = SEQUENCE:cn2_atv
[cn2_atv]
oid = OID:commonName
v = UTF8:second
[spki_alg]
a = OID:id-ecPublicKey
b = OID:prime256v1
[ext_value]
uri0 = IMPLICIT:6,IA5STRING:
dns0 = IMPLICIT:2,IA5STRING:*.example.org
uri1 = IMPLICIT:6,IA5STRING:spiffe://EXAMPLE.org/ns/x/sa/api
ip5 = IMPLICIT:7,FORMAT:HEX,OCTETSTRING:0a00000101
ip16 = IMPLICIT:7,FORMAT:HEX,OCTETSTRING:fd000000000000000000000000000001
ip0 = IMPLICIT:7,OCTETSTRING:
email = IMPLICIT:1,IA5STRING:a@example.org
other = IMPLICIT:0,SEQUENCE:othername
dns1 = IMPLICIT:2,IA5STRING:
[othername]
oid = OID:1.3.6.1.4.1.311.20.2.3
v = EXPLICIT:0,UTF8:upn@example.org
EOF

# URI "spiffe://example.org/ns/prod/sa/api\0.evil" (an OCTET STRING tagged [6]: the same bytes)
crafted nul-san 1 subjectAltName <<'EOF'
[subject]
rdn1 = SET:cn1
[cn1]
a = SEQUENCE:cn1_atv
[cn1_atv]
oid = OID:commonName
v = UTF8:nul-san
[spki_alg]
a = OID:id-ecPublicKey
b = OID:prime256v1
[ext_value]
dns = IMPLICIT:2,IA5STRING:api.example.org
uri = IMPLICIT:6,FORMAT:HEX,OCTETSTRING:7370696666653a2f2f6578616d706c652e6f72672f6e732f70726f642f73612f617069002e6576696c
EOF

# CN "legacy-client\0evil"; key algorithm 1.2.3.4; an extendedKeyUsage instead of a SAN
crafted nul-cn 0 extendedKeyUsage <<'EOF'
[subject]
rdn1 = SET:cn1
[cn1]
a = SEQUENCE:cn1_atv
[cn1_atv]
oid = OID:commonName
v = IMPLICIT:12U,FORMAT:HEX,OCTETSTRING:6c65676163792d636c69656e74006576696c
[spki_alg]
a = OID:1.2.3.4
[ext_value]
a = OID:clientAuth
EOF

# CN "" and no SAN
crafted empty-cn 2 extendedKeyUsage <<'EOF'
[subject]
rdn1 = SET:cn1
[cn1]
a = SEQUENCE:cn1_atv
[cn1_atv]
oid = OID:commonName
v = UTF8:
[spki_alg]
a = OID:id-ecPublicKey
b = OID:prime256v1
[ext_value]
a = OID:clientAuth
EOF

# Reproducers of bugs found by the fuzzers (repro/README.md), replayed in this order by
# CTest. The chain ones depend on this CA.
R=$here/repro
rm -rf -- "$R/fuzz_chain" "$R/fuzz_identity"
mkdir -p -- "$R/fuzz_chain" "$R/fuzz_identity"
cp -- "$C/client-chain.pem" "$R/fuzz_chain/stale-warning-1-accepted.pem"
cp -- "$C/garbage.pem" "$R/fuzz_chain/stale-warning-2-bad-pem.pem"
cp -- "$C/expired-chain.pem" "$R/fuzz_chain/warning-on-refusal.pem"
printf 'V:/\0\0\0V' >"$R/fuzz_chain/uri-nul-accepted.bin"
cp -- "$S/fuzz_identity/odd.der" "$R/fuzz_identity/empty-uri-san.der"
cp -- "$S/fuzz_identity/nul-cn.der" "$R/fuzz_identity/unknown-key-algorithm.der"
cp -- "$S/fuzz_identity/empty-cn.der" "$R/fuzz_identity/empty-cn.der"

now=$(date +%s)
spki=$(openssl x509 -in "$W/client.pem" -pubkey -noout |
	openssl pkey -pubin -outform DER | openssl dgst -sha256 -r | cut -c1-64)
{
	echo "/* Generated by gen-seeds.sh on $(date -u +%Y-%m-%d); regenerate with the seeds. */"
	echo "#ifndef FUZZ_CERTS_H"
	echo "#define FUZZ_CERTS_H"
	echo
	echo "/* Verification time: 31 days after generation, when the CRLs (30 days) have just"
	echo " * expired but are within fuzz_chain's grace period, and the 1-day leaf has expired. */"
	echo "#define FUZZ_VERIFY_TIME ((time_t)$((now + 31 * 86400)))"
	echo
	echo "/* SHA-256 of the SubjectPublicKeyInfo of seeds/fuzz_identity/client.der */"
	echo "#define FUZZ_CLIENT_SPKI_SHA256 \"$spki\""
	for v in root:fuzz_ca_pem:pem root:fuzz_root_crl_pem:crl int:fuzz_int_crl_pem:crl; do
		IFS=: read -r f name ext <<<"$v"
		echo
		echo "static const char $name[] ="
		sed 's/.*/\t"&\\n"/' "$W/$f.$ext"
		echo "\t;" | sed 's/\\t/\t/'
	done
	echo
	echo "#endif"
} >"$here/fuzz_certs.h"
# the suite checks the format of every C file: write it formatted
command -v clang-format >/dev/null && clang-format -i "$here/fuzz_certs.h"
echo "gen-seeds.sh: wrote $S/fuzz_identity, $S/fuzz_chain and $here/fuzz_certs.h"
