# SoftHSM tokens for the PKCS#11 tests (test_pkcs11.sh, test_secrets_leak.sh, bench/pkcs11.sh).
# Sourced, not run. Needs lib.sh's $CERTS and $TMP (or P11_DIR set before).
#
#   p11_token DIR LABEL PIN     a SoftHSM token in DIR/tokens (SOFTHSM2_CONF exported; the
#                                daemons' option for the sandbox to reach it in P11_ALLOW)
#   p11_keygen LABEL PIN OBJECT ID [KEYTYPE]   a key pair on the token (default EC:prime256v1)
#   p11_cert LABEL PIN OBJECT PROFILE OUT   a certificate for the token key OBJECT, issued by
#                                the zoo's issuing CA ($CERTS/int.pem), chain (leaf, int) in OUT;
#                                PROFILE server (DNS:server.test, IP:127.0.0.1) or client
#                                (URI spiffe://test.mtls/ns/prod/sa/app1)

SOFTHSM_MODULE=${SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}

p11_have() {
	[ -r "$SOFTHSM_MODULE" ] && command -v softhsm2-util >/dev/null &&
		command -v pkcs11-tool >/dev/null &&
		[ -e "$(openssl version -e | sed 's/.*"\(.*\)".*/\1/')/pkcs11.so" ]
}

p11_token() {
	local dir=$1 label=$2 pin=$3
	mkdir -p -- "$dir/tokens"
	printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' \
		"$dir" >"$dir/softhsm2.conf"
	export SOFTHSM2_CONF=$dir/softhsm2.conf
	# SoftHSM reads its configuration and token files at each use: a sandboxed daemon
	# reaches them only when given (docs/keys.md)
	P11_ALLOW=(--sandbox-allow "$dir")
	softhsm2-util --init-token --free --label "$label" --so-pin 5678 --pin "$pin" >/dev/null
}

p11_keygen() {
	pkcs11-tool --module "$SOFTHSM_MODULE" --token-label "$1" --login --pin "$2" \
		--keypairgen --key-type "${5:-EC:prime256v1}" --label "$3" --id "$4" >/dev/null 2>&1
}

p11_cert() {
	local label=$1 pin=$2 object=$3 profile=$4 out=$5 ext
	ext=$(mktemp -p "$TMP" ext.XXXXXX)
	if [ "$profile" = server ]; then
		printf '%s\n' 'basicConstraints = critical, CA:FALSE' \
			'keyUsage = critical, digitalSignature' 'extendedKeyUsage = serverAuth' \
			'subjectAltName = DNS:server.test, DNS:localhost, IP:127.0.0.1' >"$ext"
	else
		printf '%s\n' 'basicConstraints = critical, CA:FALSE' \
			'keyUsage = critical, digitalSignature' 'extendedKeyUsage = clientAuth' \
			'subjectAltName = URI:spiffe://test.mtls/ns/prod/sa/app1' >"$ext"
	fi
	# pin-value is fine in this test's own openssl command; mtls itself refuses it
	openssl req -new -engine pkcs11 -keyform engine \
		-key "pkcs11:token=$label;object=$object;type=private;pin-value=$pin" \
		-subj "/CN=$object" -out "$out.csr" >/dev/null 2>&1 &&
		openssl x509 -req -in "$out.csr" -CA "$CERTS/int.pem" -CAkey "$CERTS/int.key" \
			-set_serial "0x$(openssl rand -hex 12)" -days 2 -extfile "$ext" \
			-out "$out.leaf" >/dev/null 2>&1 &&
		cat -- "$out.leaf" "$CERTS/int.pem" >"$out"
}
