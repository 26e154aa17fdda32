#!/usr/bin/env bash
# mtls server --ca-url with its key on a PKCS#11 token (SoftHSM): the certificate renews
# itself with the SAME token key (the CSR signed on the token, the CA service authenticated
# by the token key over TLS, "same_key": true), only the certificate file is replaced, no key
# file appears, the server presents the new certificate and traffic goes on. The first
# certificate comes from the CA service's own enrollment (POST /v1/enroll with a CSR signed on
# the token), with the service's 60 s leaf lifetime, so a renewal comes within a minute.
# Also: --renew-key-type with a token key is refused at start.
set -euo pipefail
BG_LIMIT=${BG_LIMIT:-240}
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"
# shellcheck source=tests/integration/p11_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/p11_lib.sh"

p11_have || _lib_die "softhsm2, opensc or libengine-pkcs11-openssl missing: run scripts/install-deps.sh"
command -v curl >/dev/null && command -v python3 >/dev/null || _lib_die "curl or python3 missing"

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca
APP=spiffe://renewal.test/app
PIN=$(openssl rand -hex 6)
KEY="pkcs11:token=t1;object=srv"

"$MTLS" ca init --dir "$D" >/dev/null 2>&1 || _lib_die "(setup) mtls ca init"
start_bg "$W/serve.log" "$MTLS" ca serve --dir "$D" --listen 127.0.0.1:0 --http-listen none \
	--leaf-lifetime 60s
CA_PID=$BG_PID
wait_for_line "$W/serve.log" '"event":"listening"' "$READY_LIMIT" "$CA_PID" ||
	_lib_die "mtls ca serve did not start: $(cat -- "$W/serve.log")"
CA_PORT=$(_daemon_port "$W/serve.log" listening)

p11_token "$W/hsm" t1 "$PIN" || _lib_die "(setup) token"
p11_keygen t1 "$PIN" srv 01 || _lib_die "(setup) keygen"
printf '%s\n' "$PIN" >"$W/pin"
chmod 600 "$W/pin"
openssl req -new -engine pkcs11 -keyform engine -key "$KEY;type=private" -passin "file:$W/pin" \
	-subj /CN=localhost -out "$W/srv.csr" >/dev/null 2>&1 || _lib_die "(setup) CSR on the token"

# enrollment by the CA service's API, with a CSR signed on the token
TOKEN=$("$MTLS" ca token --dir "$D" --profile server --dns localhost 2>/dev/null) ||
	_lib_die "(setup) mtls ca token"
python3 -c 'import json, sys; print(json.dumps({"token": sys.argv[1], "csr": open(sys.argv[2]).read()}))' \
	"$TOKEN" "$W/srv.csr" >"$W/enroll.json"
curl -sS --max-time 10 --cacert "$D/root.pem" -H 'Content-Type: application/json' \
	--data-binary "@$W/enroll.json" "https://127.0.0.1:$CA_PORT/v1/enroll" >"$W/issued.json" ||
	_lib_die "(setup) POST /v1/enroll"
python3 - "$W/issued.json" "$W/cert.pem" "$W/ca.pem" <<'EOF' || _lib_die "(setup) the enrollment's answer: $(cat "$W/issued.json")"
import json, sys
a = json.load(open(sys.argv[1]))
open(sys.argv[2], "w").write(a["chain"])
open(sys.argv[3], "w").write(a["roots"])
EOF
SERIAL0=$(openssl x509 -in "$W/cert.pem" -noout -serial | sed 's/^serial=//')
PUB0=$(openssl x509 -in "$W/cert.pem" -noout -pubkey | sha256sum)
"$MTLS" ca issue --dir "$D" --profile client --uri "$APP" --out "$W/app" >/dev/null 2>&1 ||
	_lib_die "(setup) client certificate"

LAST_CMD="mtls server --ca-url ... --key $KEY --renew-key-type p256"
run "$MTLS" server --listen 127.0.0.1:0 --target 127.0.0.1:9 --cert "$W/cert.pem" --key "$KEY" \
	--key-passphrase-file "$W/pin" --pkcs11-module "$SOFTHSM_MODULE" --ca "$W/ca.pem" \
	--allow-uri "$APP" --ca-url "https://127.0.0.1:$CA_PORT" --renew-key-type p256
p=()
[ "$RC" != 0 ] || p+=("started")
[[ $ERR == *"--ca-url renews a pkcs11: --key with the same key"* ]] || p+=("the refusal does not say why")
report "--renew-key-type with a token key: refused at start" "${p[@]+"${p[@]}"}"

start_backend "$W/be.log" --mode echo
start_tunnel_server "$W/srv.log" --target "127.0.0.1:$BE_PORT" --cert "$W/cert.pem" \
	--key "$KEY" --key-passphrase-file "$W/pin" --pkcs11-module "$SOFTHSM_MODULE" \
	--ca "$W/ca.pem" --allow-uri "$APP" --ca-url "https://127.0.0.1:$CA_PORT" \
	--drain-timeout 100ms "${P11_ALLOW[@]}"
start_tunnel_connector "$W/con.log" --server "127.0.0.1:$SRV_PORT" --server-name localhost \
	--cert "$W/app-chain.pem" --key "$W/app.key" --ca "$D/root.pem" --drain-timeout 100ms

exchange() { # TEXT : a line through the connector and back
	local fd line=""
	exec {fd}<>"/dev/tcp/127.0.0.1/$CON_PORT" || return 0
	printf '%s\n' "$1" >&"$fd"
	IFS= read -r -t 10 line <&"$fd" || true
	exec {fd}>&-
	printf '%s' "$line"
}
p=()
[ "$(exchange before)" = before ] || p+=("no traffic before the renewal")
# the renewal comes at about 2/3 of the 60 s lifetime; bounded generously
for _ in $(seq 1 1200); do
	[ "$(log_count "$W/srv.log" renewal_ok)" -ge 1 ] && break
	[ "$(log_count "$W/srv.log" renewal_failed)" -ge 1 ] && break
	sleep 0.1
done
[ "$(log_count "$W/srv.log" renewal_ok)" -ge 1 ] ||
	p+=("no renewal_ok: $(grep -F renewal "$W/srv.log" | head -n 2)")
[ "$(log_count "$W/srv.log" renewal_failed)" = 0 ] ||
	p+=("a renewal failed: $(grep -F renewal_failed "$W/srv.log" | head -n 1)")
SERIAL1=$(openssl x509 -in "$W/cert.pem" -noout -serial | sed 's/^serial=//')
PUB1=$(openssl x509 -in "$W/cert.pem" -noout -pubkey | sha256sum)
[ "$SERIAL1" != "$SERIAL0" ] || p+=("cert.pem was not replaced")
[ "$PUB1" = "$PUB0" ] || p+=("the renewed certificate is not for the token key")
[ -z "$(find "$W" -maxdepth 1 -name '*.key' ! -name app.key)" ] || p+=("a key file appeared: $(ls "$W")")
for _ in $(seq 1 100); do
	[ "$(log_count "$W/srv.log" reload renewal)" -ge 1 ] && break
	sleep 0.1
done
[ "$(log_count "$W/srv.log" reload renewal)" -ge 1 ] || p+=("no reload after the renewal")
served=$(timeout -k 2 "$RUN_LIMIT" openssl s_client -connect "127.0.0.1:$SRV_PORT" \
	-servername localhost -CAfile "$D/root.pem" -cert "$W/app-chain.pem" -key "$W/app.key" \
	</dev/null 2>/dev/null | openssl x509 -noout -serial 2>/dev/null | sed 's/^serial=//' || true)
[ "$served" = "$SERIAL1" ] || p+=("the server presents '$served', not the renewed $SERIAL1")
[ "$(exchange after)" = after ] || p+=("no traffic after the renewal")
verdict "--ca-url with a token key: renewed with the same key, only the certificate replaced" \
	"${p[@]+"${p[@]}"}" -- "$(grep -E 'renewal|reload' "$W/srv.log" | head -n 5)"
stop_bg "$CON_PID"
stop_bg "$SRV_PID"
stop_bg "$CA_PID"

finish
