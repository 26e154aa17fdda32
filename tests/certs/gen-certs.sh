#!/usr/bin/env bash
# Generate the test certificate "zoo" used by the mTLS library's tests.
#
# Usage: tests/certs/gen-certs.sh OUTDIR
#
# - Creates OUTDIR if missing and writes everything into it (scratch files,
#   CA databases and openssl configs go to OUTDIR/work/).
# - Idempotent: if OUTDIR/.done exists and is newer than this script, exits 0
#   at once. OUTDIR/.done is written last.
# - Needs only bash, coreutils and the openssl CLI (OpenSSL 3.0.x). No network.
# - Independent of the current directory; safe to run concurrently into
#   different OUTDIRs.
# - Quiet on success; on failure prints the failing step (and openssl's own
#   output) to stderr and exits non-zero.
#
# The file names written here are a contract with the test code:
#   ca.pem/.key (root), int.pem/.key (issuing CA), server.pem, server-chain.pem,
#   server.key, client.pem, client-chain.pem, client.key, client2.pem,
#   client2-chain.pem, client2.key, both-chain.pem, both.key,
#   noeku-client-*, other-ca.pem/.key, other-client-*, other-server-*,
#   selfsigned-client.pem/.key, expired-client-*, notyet-client-*,
#   expired-server-*, revoked-client-*, revoked-server-*, crl.pem,
#   crl-expired.pem, root-crl.pem, crl-all.pem, rsa1024-client-*,
#   sha1-client-*, badsig-client-*, longchain-ca.pem, longchain-client-*,
#   noca-client-*, client-enc.key, client-enc.pass, client-world.key,
#   malformed.pem, mismatch.key, cnonly-server-*   (X-* = X-chain.pem + X.key)

set -euo pipefail

prog=gen-certs.sh

die() {
    echo "$prog: $*" >&2
    exit 1
}

[ $# -eq 1 ] || die "usage: $0 OUTDIR"
[ -n "$1" ] || die "OUTDIR must not be empty"

script_path=${BASH_SOURCE[0]}
case $script_path in
    /*) ;;
    *) script_path=$PWD/$script_path ;;
esac

mkdir -p -- "$1"
OUT=$(cd -- "$1" && pwd -P)

if [ -f "$OUT/.done" ] && [ "$OUT/.done" -nt "$script_path" ]; then
    exit 0
fi

command -v openssl >/dev/null 2>&1 || die "openssl not found in PATH"

rm -f -- "$OUT/.done"
W=$OUT/work
rm -rf -- "$W"
mkdir -p -- "$W"

umask 022

# `openssl req` and `openssl ca` always get an explicit -config below, so the
# system openssl.cnf only matters for the other subcommands (defaults only).
# Make sure no random-seed file outside OUTDIR is read or written.
unset RANDFILE || true

LOG=$W/openssl.log

# Run openssl quietly; on failure show what it said and abort.
ossl() {
    if ! openssl "$@" >"$LOG" 2>&1 </dev/null; then
        echo "$prog: 'openssl $*' failed:" >&2
        cat -- "$LOG" >&2
        exit 1
    fi
}

# ---------------------------------------------------------------------------
# Shared openssl config: [req] for CSRs / self-signed certs, plus every
# X.509v3 extension profile (used via -extfile/-extensions with `openssl ca`
# and via -extensions with `openssl req -x509`).
# ---------------------------------------------------------------------------
EXT=$W/ext.cnf
cat >"$EXT" <<'EOF'
[ req ]
distinguished_name = req_dn
prompt             = no
utf8               = yes
string_mask        = utf8only

[ req_dn ]
CN = placeholder

# ---- CA profiles --------------------------------------------------------
[ root_ext ]
basicConstraints       = critical, CA:TRUE
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always

[ int_ext ]
basicConstraints       = critical, CA:TRUE, pathlen:0
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always

[ ca_nolen_ext ]
basicConstraints       = critical, CA:TRUE
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always

# Deliberately NOT a CA, used as an "intermediate" anyway.
[ notca_ext ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always

# ---- Leaf profiles ------------------------------------------------------
[ server_ext ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = serverAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
subjectAltName         = DNS:server.test, DNS:localhost, IP:127.0.0.1

[ client_ext ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = clientAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
subjectAltName         = URI:spiffe://test.mtls/ns/prod/sa/app1, DNS:app1.test

[ client2_ext ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = clientAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
subjectAltName         = URI:spiffe://test.mtls/ns/dev/sa/other

[ both_ext ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = serverAuth, clientAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
subjectAltName         = DNS:both.test, DNS:localhost, IP:127.0.0.1, URI:spiffe://test.mtls/ns/prod/sa/both

# A server whose CN (cnonly.test) is not among its SANs: a name check must not fall
# back to the CN.
[ cnonly_ext ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = serverAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
subjectAltName         = DNS:san.test

# No extendedKeyUsage extension at all.
[ noeku_ext ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
subjectAltName         = URI:spiffe://test.mtls/ns/prod/sa/noeku

[ selfsigned_ext ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = clientAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
subjectAltName         = URI:spiffe://test.mtls/ns/prod/sa/app1

[ expired_ext ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = clientAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
subjectAltName         = URI:spiffe://test.mtls/ns/prod/sa/expired

[ notyet_ext ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = clientAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
subjectAltName         = URI:spiffe://test.mtls/ns/prod/sa/notyet

[ revoked_ext ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = clientAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
subjectAltName         = URI:spiffe://test.mtls/ns/prod/sa/revoked

[ weak_ext ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = clientAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
subjectAltName         = URI:spiffe://test.mtls/ns/prod/sa/weak

[ sha1_ext ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = clientAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
subjectAltName         = URI:spiffe://test.mtls/ns/prod/sa/sha1

[ deep_ext ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = clientAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
subjectAltName         = URI:spiffe://test.mtls/ns/prod/sa/deep

[ noca_leaf_ext ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = clientAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
subjectAltName         = URI:spiffe://test.mtls/ns/prod/sa/noca

# ---- CRL profile --------------------------------------------------------
[ crl_ext ]
authorityKeyIdentifier = keyid:always
EOF

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

# genkey_ec FILE : ECDSA P-256 private key (PKCS#8 PEM), mode 0600.
genkey_ec() {
    (umask 077 && ossl genpkey -algorithm EC \
        -pkeyopt ec_paramgen_curve:P-256 -pkeyopt ec_param_enc:named_curve \
        -out "$1")
    chmod 0600 -- "$1"
}

# genkey_rsa FILE BITS : RSA private key, mode 0600.
genkey_rsa() {
    (umask 077 && ossl genpkey -algorithm RSA -pkeyopt "rsa_keygen_bits:$2" \
        -out "$1")
    chmod 0600 -- "$1"
}

# selfsign KEY CERT CN DAYS EXT_SECTION : self-signed certificate.
selfsign() {
    ossl req -new -x509 -config "$EXT" -key "$1" -out "$2" \
        -subj "/CN=$3" -days "$4" -extensions "$5" -sha256
}

# mkca NAME CERT KEY : set up an `openssl ca` directory W/ca-NAME signing
# with CERT/KEY. Writes W/ca-NAME/ca.cnf.
mkca() {
    local d=$W/ca-$1
    mkdir -p -- "$d/newcerts"
    : >"$d/index.txt"
    echo "unique_subject = no" >"$d/index.txt.attr"
    # random, positive starting serial (even number of hex digits, as
    # `openssl ca` requires); `openssl ca` increments from here
    local serial
    serial=$(openssl rand -hex 15) || die "openssl rand failed"
    printf '1%s\n' "${serial:1}" | tr 'a-f' 'A-F' >"$d/serial"
    echo 1000 >"$d/crlnumber"
    cat >"$d/ca.cnf" <<EOF
[ ca ]
default_ca = CA_default

[ CA_default ]
dir              = $d
database         = \$dir/index.txt
serial           = \$dir/serial
crlnumber        = \$dir/crlnumber
new_certs_dir    = \$dir/newcerts
certificate      = $2
private_key      = $3
default_md       = sha256
default_days     = 365
default_crl_days = 30
policy           = policy_anything
copy_extensions  = none
unique_subject   = no
email_in_dn      = no
name_opt         = ca_default
cert_opt         = ca_default
crl_extensions   = crl_ext

[ policy_anything ]
countryName            = optional
stateOrProvinceName    = optional
localityName           = optional
organizationName       = optional
organizationalUnitName = optional
commonName             = supplied
emailAddress           = optional

[ crl_ext ]
authorityKeyIdentifier = keyid:always
EOF
}

# issue CA_NAME KEY OUTCERT CN EXT_SECTION [extra `openssl ca` args...]
# Default validity (when no -days/-startdate/-enddate given) is 365 days.
issue() {
    local ca=$1 key=$2 out=$3 cn=$4 ext=$5
    shift 5
    local csr=$W/${out##*/}.csr
    ossl req -new -config "$EXT" -key "$key" -subj "/CN=$cn" -out "$csr"
    ossl ca -config "$W/ca-$ca/ca.cnf" -batch -notext \
        -in "$csr" -out "$out" \
        -extfile "$EXT" -extensions "$ext" "$@"
}

# putkey SRC DST MODE : copy a key file with explicit mode.
putkey() {
    (umask 077 && cp -f -- "$1" "$2")
    chmod "$3" -- "$2"
}

# ---------------------------------------------------------------------------
# Root and issuing intermediate
# ---------------------------------------------------------------------------
genkey_ec "$OUT/ca.key"
selfsign "$OUT/ca.key" "$OUT/ca.pem" "mtls test root" 3650 root_ext
mkca root "$OUT/ca.pem" "$OUT/ca.key"

genkey_ec "$OUT/int.key"
issue root "$OUT/int.key" "$OUT/int.pem" "mtls test issuing" int_ext -days 1825
mkca int "$OUT/int.pem" "$OUT/int.key"

# ---------------------------------------------------------------------------
# Good leaves signed by int
# ---------------------------------------------------------------------------
# leaf_int NAME CN EXT [extra ca args...]: key -> OUT/NAME.key,
# leaf -> W/NAME.pem, chain (leaf + int.pem) -> OUT/NAME-chain.pem.
leaf_int() {
    local name=$1 cn=$2 ext=$3
    shift 3
    genkey_ec "$OUT/$name.key"
    issue int "$OUT/$name.key" "$W/$name.pem" "$cn" "$ext" "$@"
    cat -- "$W/$name.pem" "$OUT/int.pem" >"$OUT/$name-chain.pem"
}

leaf_int server "server.test" server_ext -days 365
cp -f -- "$W/server.pem" "$OUT/server.pem"

leaf_int client "app1" client_ext -days 365
cp -f -- "$W/client.pem" "$OUT/client.pem"

leaf_int client2 "other" client2_ext -days 365
cp -f -- "$W/client2.pem" "$OUT/client2.pem"

leaf_int both "both.test" both_ext -days 365
leaf_int noeku-client "noeku" noeku_ext -days 365
leaf_int cnonly-server "cnonly.test" cnonly_ext -days 365

# Time-invalid leaves
leaf_int expired-client "expired" expired_ext \
    -startdate 20200101000000Z -enddate 20210101000000Z
leaf_int notyet-client "notyet" notyet_ext \
    -startdate 20400101000000Z -enddate 20410101000000Z
leaf_int expired-server "server.test" server_ext \
    -startdate 20200101000000Z -enddate 20210101000000Z

# Weak algorithms
genkey_rsa "$OUT/rsa1024-client.key" 1024
issue int "$OUT/rsa1024-client.key" "$W/rsa1024-client.pem" "weak" weak_ext -days 365
cat -- "$W/rsa1024-client.pem" "$OUT/int.pem" >"$OUT/rsa1024-client-chain.pem"

leaf_int sha1-client "sha1" sha1_ext -days 365 -md sha1

# ---------------------------------------------------------------------------
# Revocation and CRLs
# ---------------------------------------------------------------------------
leaf_int revoked-client "revoked" revoked_ext -days 365
leaf_int revoked-server "server.test" server_ext -days 365
ossl ca -config "$W/ca-int/ca.cnf" -batch \
    -revoke "$W/revoked-client.pem" -crl_reason keyCompromise
ossl ca -config "$W/ca-int/ca.cnf" -batch \
    -revoke "$W/revoked-server.pem" -crl_reason keyCompromise

ossl ca -config "$W/ca-int/ca.cnf" -batch -gencrl -crldays 30 \
    -out "$OUT/crl.pem"
ossl ca -config "$W/ca-int/ca.cnf" -batch -gencrl \
    -crl_lastupdate 20200101000000Z -crl_nextupdate 20200201000000Z \
    -out "$OUT/crl-expired.pem"
ossl ca -config "$W/ca-root/ca.cnf" -batch -gencrl -crldays 30 \
    -out "$OUT/root-crl.pem"
cat -- "$OUT/crl.pem" "$OUT/root-crl.pem" >"$OUT/crl-all.pem"

# ---------------------------------------------------------------------------
# Foreign root, its issuing intermediate and the leaves that one signs (chain files
# with the intermediate, as a peer of another CA would present them: a chain that
# leads elsewhere, unknown_ca, not a leaf sent alone, issuer_not_sent)
# ---------------------------------------------------------------------------
genkey_ec "$OUT/other-ca.key"
selfsign "$OUT/other-ca.key" "$OUT/other-ca.pem" "other root" 3650 root_ext
mkca other "$OUT/other-ca.pem" "$OUT/other-ca.key"
genkey_ec "$W/other-int.key"
issue other "$W/other-int.key" "$W/other-int.pem" "other issuing" int_ext -days 1825
mkca other-int "$W/other-int.pem" "$W/other-int.key"

genkey_ec "$OUT/other-client.key"
issue other-int "$OUT/other-client.key" "$W/other-client.pem" "app1" client_ext -days 365
cat -- "$W/other-client.pem" "$W/other-int.pem" >"$OUT/other-client-chain.pem"

genkey_ec "$OUT/other-server.key"
issue other-int "$OUT/other-server.key" "$W/other-server.pem" "server.test" server_ext -days 365
cat -- "$W/other-server.pem" "$W/other-int.pem" >"$OUT/other-server-chain.pem"

# Self-signed, non-CA client certificate
genkey_ec "$OUT/selfsigned-client.key"
selfsign "$OUT/selfsigned-client.key" "$OUT/selfsigned-client.pem" "app1" 365 selfsigned_ext

# ---------------------------------------------------------------------------
# Corrupted signature: copy of client.pem with one signature byte flipped
# ---------------------------------------------------------------------------
ossl x509 -in "$OUT/client.pem" -outform DER -out "$W/badsig.der"
size=$(stat -c %s -- "$W/badsig.der")
off=$((size - 5))
byte=$(od -An -tu1 -j "$off" -N1 -- "$W/badsig.der" | tr -d ' \n')
[ -n "$byte" ] || die "could not read byte $off of badsig.der"
newbyte=$((byte ^ 0x5A))
# shellcheck disable=SC2059
printf "\\$(printf '%03o' "$newbyte")" |
    dd of="$W/badsig.der" bs=1 seek="$off" count=1 conv=notrunc status=none
ossl x509 -inform DER -in "$W/badsig.der" -out "$W/badsig-client.pem"
ossl x509 -in "$W/badsig-client.pem" -noout
cat -- "$W/badsig-client.pem" "$OUT/int.pem" >"$OUT/badsig-client-chain.pem"
putkey "$OUT/client.key" "$OUT/badsig-client.key" 0600

# ---------------------------------------------------------------------------
# Long chain: long root -> long1 -> long2 -> long3 -> deep leaf
# ---------------------------------------------------------------------------
genkey_ec "$W/long-root.key"
selfsign "$W/long-root.key" "$OUT/longchain-ca.pem" "long root" 3650 root_ext
mkca longroot "$OUT/longchain-ca.pem" "$W/long-root.key"

prev=longroot
for i in 1 2 3; do
    genkey_ec "$W/long$i.key"
    issue "$prev" "$W/long$i.key" "$W/long$i.pem" "long intermediate $i" \
        ca_nolen_ext -days 1825
    mkca "long$i" "$W/long$i.pem" "$W/long$i.key"
    prev=long$i
done

genkey_ec "$OUT/longchain-client.key"
issue long3 "$OUT/longchain-client.key" "$W/longchain-client.pem" "deep" deep_ext -days 365
cat -- "$W/longchain-client.pem" "$W/long3.pem" "$W/long2.pem" "$W/long1.pem" \
    >"$OUT/longchain-client-chain.pem"

# ---------------------------------------------------------------------------
# Leaf issued by a non-CA "intermediate" (CA:FALSE, no keyCertSign)
# ---------------------------------------------------------------------------
genkey_ec "$W/notca.key"
issue root "$W/notca.key" "$W/notca.pem" "not a ca" notca_ext -days 1825
mkca notca "$W/notca.pem" "$W/notca.key"

genkey_ec "$OUT/noca-client.key"
issue notca "$OUT/noca-client.key" "$W/noca-client.pem" "noca" noca_leaf_ext -days 365
cat -- "$W/noca-client.pem" "$W/notca.pem" >"$OUT/noca-client-chain.pem"

# ---------------------------------------------------------------------------
# Key-file variants
# ---------------------------------------------------------------------------
(umask 077 && printf '%s' "correct horse battery" >"$OUT/client-enc.pass")
chmod 0600 -- "$OUT/client-enc.pass"
(umask 077 && ossl pkcs8 -topk8 -v2 aes-256-cbc -in "$OUT/client.key" \
    -passout "file:$OUT/client-enc.pass" -out "$OUT/client-enc.key")
chmod 0600 -- "$OUT/client-enc.key"

putkey "$OUT/client.key" "$OUT/client-world.key" 0644

genkey_ec "$OUT/mismatch.key"

cat >"$OUT/malformed.pem" <<'EOF'
-----BEGIN CERTIFICATE-----
MIIB!!notbase64@@##$$%%^^&&**((this is not a certificate))~~~~
Zm9vYmFy####====garbage====####Zm9vYmFy....????////\\\\||||
<<<<>>>>;;;;::::''''""""````....,,,,----____++++====
-----END CERTIFICATE-----
EOF

# ---------------------------------------------------------------------------
# Self-check
# ---------------------------------------------------------------------------
fail=0
check_ok() { # DESC, then openssl verify args
    local desc=$1
    shift
    if ! openssl verify "$@" >"$LOG" 2>&1; then
        echo "$prog: self-check failed (expected success): $desc" >&2
        cat -- "$LOG" >&2
        fail=1
    fi
}
check_fail() { # DESC EXPECTED_SUBSTRING, then openssl verify args
    local desc=$1 want=$2
    shift 2
    if openssl verify "$@" >"$LOG" 2>&1; then
        echo "$prog: self-check failed (expected rejection): $desc" >&2
        cat -- "$LOG" >&2
        fail=1
    elif ! grep -qi -- "$want" "$LOG"; then
        echo "$prog: self-check failed ($desc): expected '$want' in:" >&2
        cat -- "$LOG" >&2
        fail=1
    fi
}

check_ok "client-chain verifies (sslclient)" \
    -CAfile "$OUT/ca.pem" -untrusted "$OUT/int.pem" -purpose sslclient \
    "$OUT/client.pem"
check_ok "server verifies (sslserver)" \
    -CAfile "$OUT/ca.pem" -untrusted "$OUT/int.pem" -purpose sslserver \
    "$OUT/server.pem"
check_ok "client passes CRL check" \
    -CAfile "$OUT/ca.pem" -untrusted "$OUT/int.pem" -purpose sslclient \
    -crl_check_all -CRLfile "$OUT/crl-all.pem" "$OUT/client.pem"
check_fail "revoked-client rejected with crl.pem" "revoked" \
    -CAfile "$OUT/ca.pem" -untrusted "$OUT/int.pem" -purpose sslclient \
    -crl_check -CRLfile "$OUT/crl.pem" "$W/revoked-client.pem"
check_fail "badsig-client rejected" "signature" \
    -CAfile "$OUT/ca.pem" -untrusted "$OUT/int.pem" \
    "$W/badsig-client.pem"

[ "$fail" -eq 0 ] || exit 1

# Everything done; mark complete last.
touch -- "$OUT/.done"
