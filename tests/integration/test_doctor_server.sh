#!/usr/bin/env bash
# mtls doctor --server, from a client host, against real servers: `mtls server` with
# certificates of `mtls ca` (made here), `openssl s_server` for servers mtls would not run
# (an expired certificate, TLS 1.2 only), a plaintext port and a closed one. Each case asserts
# the finding line (severity, topic, words) and the exit status (0 a connection would
# succeed, 1 not, 2 usage):
#   - good setup: exit 0, the server names its CA in its CertificateRequest
#   - the server's certificate from another CA: fail server-trust, unknown CA
#   - a name the server's certificate does not carry: fail name
#   - an expired server certificate: fail server-cert, expired
#   - a client certificate from another CA: the server's alert, mapped to its log reason
#   - a client key that does not match, no client certificate at all
#   - an identity no allow rule lets in: handshake failure -> identity_not_allowed
#   - a client certificate that is not valid yet: the clock hint
#   - an incomplete chain (the leaf alone), a server certificate not valid yet (clock skew), a
#     server that asks for no client certificate
#   - a plaintext port (an echo service, a banner), a refused connection, usage errors
set -euo pipefail
BG_LIMIT=${BG_LIMIT:-120}
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

command -v python3 >/dev/null || _lib_die "python3 not found in PATH (the banner server)"

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca
TD=spiffe://example.org
"$MTLS" ca init --dir "$D" >/dev/null 2>&1 || _lib_die "(setup) mtls ca init failed"
"$MTLS" ca init --dir "$W/other-ca" --name other >/dev/null 2>&1 || _lib_die "(setup) the other CA"
issue() { # issue CADIR PREFIX ARGS...
	local dir=$1 out=$2
	shift 2
	"$MTLS" ca issue --dir "$dir" --out "$W/$out" "$@" >/dev/null 2>&1 ||
		_lib_die "(setup) mtls ca issue $out"
}
issue "$D" srv --profile server --dns localhost --ip 127.0.0.1
issue "$D" app --profile client --uri "$TD/ns/dev/sa/app"
issue "$D" nope --profile client --uri "$TD/ns/dev/sa/nope"
issue "$D" dbsrv --profile server --dns db.internal
issue "$W/other-ca" osrv --profile server --dns localhost --ip 127.0.0.1
issue "$W/other-ca" oapp --profile client --uri "$TD/ns/dev/sa/app"
CA=$D/root.pem

start_backend "$TMP/be.log"
start_tunnel_server "$TMP/srv.log" --target "127.0.0.1:$BE_PORT" --cert "$W/srv-chain.pem" \
	--key "$W/srv.key" --ca "$CA" --allow-uri "$TD/ns/dev/sa/app"
GOOD=$SRV_PORT
# the server's own certificate from another CA; it still trusts our CA for clients
start_tunnel_server "$TMP/srv2.log" --target "127.0.0.1:$BE_PORT" --cert "$W/osrv-chain.pem" \
	--key "$W/osrv.key" --ca "$CA" --allow-uri "$TD/ns/dev/sa/app"
WRONGCA=$SRV_PORT
# no session tickets: the doctor waits (boundedly) for an alert that does not come
start_tunnel_server "$TMP/srv4.log" --target "127.0.0.1:$BE_PORT" --cert "$W/srv-chain.pem" \
	--key "$W/srv.key" --ca "$CA" --allow-uri "$TD/ns/dev/sa/app" --session-cache 0
NOTICKET=$SRV_PORT
# a certificate for db.internal only
start_tunnel_server "$TMP/srv3.log" --target "127.0.0.1:$BE_PORT" --cert "$W/dbsrv-chain.pem" \
	--key "$W/dbsrv.key" --ca "$CA" --allow-uri "$TD/ns/dev/sa/app"
DBSRV=$SRV_PORT

# doctor NAME EXPECTED_RC ERE [args] : run mtls doctor, expect the exit status and a line
# matching ERE (grep -E) in its output.
doctor() {
	local name=$1 want=$2 re=$3 p=()
	shift 3
	LAST_CMD="mtls doctor $*"
	run "$MTLS" doctor "$@"
	[ "$RC" = "$want" ] || p+=("exit status $RC, expected $want")
	[ -z "$re" ] || grep -Eq -- "$re" <<<"$OUT" || p+=("no line matching: $re")
	report "$name" "${p[@]+"${p[@]}"}"
}
CLIENT=(--cert "$W/app-chain.pem" --key "$W/app.key" --ca "$CA")

doctor "good setup: exit 0, a connector connects" 0 '^ok   handshake: a connector with these files connects' \
	--server "localhost:$GOOD" "${CLIENT[@]}"
doctor "good setup: the server names its CA, ours is one" 0 \
	'^ok   server-asks: the server asks for a client certificate from: CN=mtls Root CA,O=mtls; yours' \
	--server "localhost:$GOOD" "${CLIENT[@]}"
doctor "good setup: accepted (its ticket)" 0 '^ok   client-cert: the server accepted our certificate' \
	--server "127.0.0.1:$GOOD" "${CLIENT[@]}"
doctor "good setup: no fail line" 0 '^result: no problem found' --server "localhost:$GOOD" "${CLIENT[@]}"
if grep -q '^fail' <<<"$OUT"; then fail "good setup: no fail line" "$OUT"; fi
doctor "a server without tickets: accepted, no alert" 0 '^ok   client-cert: the server did not refuse our certificate \(no alert\)' \
	--server "localhost:$NOTICKET" "${CLIENT[@]}"
doctor "a server without tickets: a refusal still seen" 1 '^fail client-cert: the server refused our certificate with the alert "unknown CA"' \
	--server "localhost:$NOTICKET" --cert "$W/oapp-chain.pem" --key "$W/oapp.key" --ca "$CA"
doctor "--json: ok true" 0 '"ok": true' --server "localhost:$GOOD" "${CLIENT[@]}" --json

doctor "wrong CA on the server side: unknown CA, what it needs vs what --ca holds" 1 \
	'^fail server-trust: unknown CA: the server.s chain needs CN=other Root CA.*which .*root\.pem does not hold \(it holds: CN=mtls Root CA,O=mtls\); fix: ' \
	--server "localhost:$WRONGCA" "${CLIENT[@]}"
doctor "wrong CA on the server side: the connector refuses it too" 1 \
	'^fail handshake: a connector with these files refuses the connection: .*\(unknown_ca\)' \
	--server "localhost:$WRONGCA" "${CLIENT[@]}"

doctor "name mismatch: --name" 1 \
	'^fail name: name mismatch: the server.s certificate does not carry db\.example\.org; it carries DNS:localhost, IP:127\.0\.0\.1; fix: ' \
	--server "127.0.0.1:$GOOD" --name db.example.org "${CLIENT[@]}"
doctor "name mismatch: the host part of --server" 1 \
	'^fail name: name mismatch: the server.s certificate does not carry 127\.0\.0\.1 \(the host part of --server\); it carries DNS:db\.internal; fix: ' \
	--server "127.0.0.1:$DBSRV" "${CLIENT[@]}"
doctor "name mismatch: the right --name" 0 '^ok   name: the server.s certificate carries db\.internal' \
	--server "127.0.0.1:$DBSRV" --name db.internal "${CLIENT[@]}"
doctor "the right --name: exit 0" 0 '^ok   name: the server.s certificate carries localhost' \
	--server "127.0.0.1:$GOOD" --name localhost "${CLIENT[@]}"

doctor "client certificate from another CA: unknown CA alert, mapped to the server's log" 1 \
	'^fail client-cert: the server refused our certificate with the alert "unknown CA" \(48\); an mtls server logs handshake_refused reason=unknown_ca.*; fix: ' \
	--server "localhost:$GOOD" --cert "$W/oapp-chain.pem" --key "$W/oapp.key" --ca "$CA"
doctor "client certificate from another CA: the CA names do not meet" 1 \
	'^fail server-asks: .*yours is issued by CN=other Issuing CA.*which leads to none of them' \
	--server "localhost:$GOOD" --cert "$W/oapp-chain.pem" --key "$W/oapp.key" --ca "$CA"
if wait_for_line "$TMP/srv.log" '"event":"handshake_refused".*"reason":"unknown_ca"' 5; then
	pass "the server logged the refusal as unknown_ca"
else
	fail "the server logged the refusal as unknown_ca" "$(tail -n 5 "$TMP/srv.log")"
fi

doctor "client certificate without its issuing CA (the leaf alone)" 1 \
	'^fail server-asks: .*--cert holds only the leaf, issued by CN=mtls Issuing CA,O=mtls, which is none of them; fix: if your issuer is an intermediate' \
	--server "localhost:$GOOD" --cert "$W/app.pem" --key "$W/app.key" --ca "$CA"
doctor "client key does not match" 1 '^fail key: .*app\.key does not match the certificate in .*oapp-chain\.pem' \
	--server "localhost:$GOOD" --cert "$W/oapp-chain.pem" --key "$W/app.key" --ca "$CA"
doctor "no client certificate: certificate required -> no_certificate" 1 \
	'^fail client-cert: the server refused a client without a certificate with the alert "certificate required" \(116\); an mtls server logs handshake_refused reason=no_certificate; fix: give --cert and --key' \
	--server "localhost:$GOOD" --ca "$CA"
doctor "identity not allowed: handshake failure -> identity_not_allowed" 1 \
	'^fail client-cert: the server refused our certificate with the alert "handshake failure" \(40\); an mtls server logs handshake_refused reason=identity_not_allowed.*\(your certificate.s identity: URI:spiffe://example\.org/ns/dev/sa/nope\)' \
	--server "localhost:$GOOD" --cert "$W/nope-chain.pem" --key "$W/nope.key" --ca "$CA"
# the refusal lines point to the doctor or to mtls verify (tunnel/log.c)
wait_for_line "$TMP/srv.log" '"event":"handshake_refused".*"reason":"identity_not_allowed"' 5 || true
l=$(grep -m1 '"event":"handshake_refused".*"reason":"unknown_ca"' "$TMP/srv.log" || true)
if [[ $l == *'"hint":"run '"'"'mtls doctor --server HOST:PORT --cert CERT --key KEY --ca CA'"'"' on the client host'* ]]; then
	pass "an unknown_ca refusal line carries the doctor hint"
else
	fail "an unknown_ca refusal line carries the doctor hint" "$l"
fi
l=$(grep -m1 '"event":"handshake_refused".*"reason":"identity_not_allowed"' "$TMP/srv.log" || true)
if [[ $l == *'"hint":"'"'"'mtls verify --ca CA CERT'"'"' shows the certificate'* ]]; then
	pass "an identity_not_allowed line points to mtls verify"
else
	fail "an identity_not_allowed line points to mtls verify" "$l"
fi
doctor "client certificate not valid yet: the clock" 1 \
	'^fail cert-time: .*notyet-client-chain\.pem is not valid yet: it starts at .* and this host.s clock says .*; fix: check this host.s clock' \
	--server "localhost:$GOOD" --cert "$CERTS/notyet-client-chain.pem" --key "$CERTS/notyet-client.key" --ca "$CA"
doctor "a server certificate without clientAuth as client certificate" 1 \
	'^fail cert-usage: .*srv-chain\.pem has no clientAuth' \
	--server "localhost:$GOOD" --cert "$W/srv-chain.pem" --key "$W/srv.key" --ca "$CA"

# an expired server certificate (the zoo's, openssl-made), TLS 1.2 only; -rev: s_server reads
# no stdin (its EOF would end it)
start_s_server "$TMP/ss.log" -cert "$CERTS/expired-server-chain.pem" -key "$CERTS/expired-server.key" \
	-Verify 1 -CAfile "$CERTS/ca.pem" -tls1_2 -rev
doctor "expired server certificate" 1 \
	'^fail server-cert: #0 CN=server\.test \(issuer CN=mtls test issuing\) expired at 2021-01-01T00:00:00Z \([0-9]+ days ago\); fix: renew' \
	--server "localhost:$SS_PORT" --ca "$CERTS/ca.pem" --cert "$CERTS/client-chain.pem" --key "$CERTS/client.key"
doctor "TLS 1.2: protocol reported" 1 '^ok   tls: TLSv1\.2, cipher ' \
	--server "localhost:$SS_PORT" --ca "$CERTS/ca.pem" --cert "$CERTS/client-chain.pem" --key "$CERTS/client.key"
doctor "TLS 1.2, no client certificate: handshake failure read as certificate required" 1 \
	'^fail client-cert: the server refused a client without a certificate with the alert "handshake failure" \(40\); an mtls server logs handshake_refused reason=no_certificate; fix: give --cert and --key' \
	--server "localhost:$SS_PORT" --ca "$CERTS/ca.pem"

# a server that sends its leaf without the issuing CA: an incomplete chain
start_s_server "$TMP/ss2.log" -cert "$W/srv.pem" -key "$W/srv.key" -Verify 1 -CAfile "$CA" -rev
doctor "incomplete chain: only the leaf, the issuing CA named" 1 \
	'^fail server-trust: unknown CA: the server sent only its leaf, issued by CN=mtls Issuing CA,O=mtls, and .*root\.pem does not hold that CA.*; fix: if CN=mtls Issuing CA,O=mtls is an intermediate of your CA, the server.s --cert must hold it after the leaf' \
	--server "localhost:$SS_PORT" "${CLIENT[@]}"
stop_bg "$SS_PID"
# a server certificate that starts in the future (the zoo's, used as a server's): clock skew
start_s_server "$TMP/ss3.log" -cert "$CERTS/notyet-client-chain.pem" -key "$CERTS/notyet-client.key" -rev
doctor "server certificate not valid yet: the clock hint" 1 \
	'^fail server-cert: #0 .* is not valid yet: it starts at [0-9T:-]+Z and this host.s clock says [0-9T:-]+Z \([0-9]+ minutes before\): clock skew\?; fix: compare the clocks' \
	--server "localhost:$SS_PORT" --ca "$CERTS/ca.pem"
doctor "a server that asks for no client certificate" 1 '^warn server-asks: the server did not ask for a client certificate' \
	--server "localhost:$SS_PORT" --ca "$CERTS/ca.pem"
stop_bg "$SS_PID"

# plaintext: the backend echoes what it gets; a banner server speaks first
doctor "plaintext echo port: not TLS" 1 '^fail tls: the server does not speak TLS: it sent our own ClientHello back' \
	--server "127.0.0.1:$BE_PORT" "${CLIENT[@]}"
start_bg "$TMP/banner.log" python3 -u -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
print("listening on 127.0.0.1:%d" % s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
    c.close()
'
BANNER_PID=$BG_PID
wait_for_line "$TMP/banner.log" '^listening on ' "$READY_LIMIT" "$BANNER_PID" || _lib_die "banner server"
BANNER=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$TMP/banner.log")
doctor "plaintext banner port: what it said" 1 '^fail tls: the server does not speak TLS: it answered our ClientHello with "SSH-2\.0-OpenSSH_9\.2\\x0d\\x0a"' \
	--server "127.0.0.1:$BANNER" "${CLIENT[@]}"
stop_bg "$BANNER_PID"
# the banner server's port, closed now
doctor "connection refused" 1 '^fail tcp: connection refused by 127\.0\.0\.1 port [0-9]+: nothing listens there; fix: start the server' \
	--server "127.0.0.1:$BANNER" "${CLIENT[@]}"

doctor "usage: neither --server nor --config" 2 '' --ca "$CA"
doctor "usage: both" 2 '' --server "127.0.0.1:1" --config /dev/null
doctor "usage: bad HOST:PORT" 2 '' --server "127.0.0.1"
doctor "usage: bad --timeout" 2 '' --server "127.0.0.1:1" --timeout 5
doctor "--help" 0 '^usage: mtls doctor --server HOST:PORT' --help

finish
