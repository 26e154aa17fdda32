#!/usr/bin/env bash
# The Java guide (docs/java.md) for real: the examples of docs/examples/java compiled with
# javac, their keystores made with `mtls ca export` (PKCS#12) and their truststore with
# `keytool -importcert` of the CA's root, talking to a real `mtls server` in front of an
# echo backend, and reached by a real `mtls connector`:
#   - the Java client's line comes back through mtls server (its SPIFFE ID allowed, the
#     server's SPIFFE ID checked by the client);
#   - HTTPS endpoint identification: dialling 127.0.0.1 when the server's certificate names
#     only localhost is refused by the Java client;
#   - refused by mtls server: a client certificate from another CA, and one whose SPIFFE ID
#     is not allowed; refused by Java: a truststore with another CA's root;
#   - the Java server behind mtls connector: a plaintext line comes back, the server saw the
#     connector's SPIFFE ID; after `mtls ca issue --force` and a new export, its next
#     handshake presents the new certificate without a restart (the reload on renewal).
# Skipped (exit 77) when javac, java or keytool are absent (openjdk-17-jdk-headless).
set -euo pipefail
# each JVM takes seconds to start: the daemons live longer than the default 50 s
BG_LIMIT=${BG_LIMIT:-240}
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

for tool in javac java keytool; do
	if ! command -v "$tool" >/dev/null; then
		echo "skip  all cases: $tool is not installed (apt-get install openjdk-17-jdk-headless)"
		exit 77
	fi
done
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca
TD=spiffe://example.org
JAVA_ID=$TD/ns/dev/sa/java
DB_ID=$TD/ns/prod/sa/db
EX=$MTLS_SOURCE_DIR/docs/examples/java
export MTLS_KEYSTORE_PASSWORD=keystore-secret MTLS_TRUSTSTORE_PASSWORD=truststore-secret

setup() {
	LAST_CMD="$*"
	run "$@"
	[ "$RC" = 0 ] || _lib_die "(setup) $*: exit $RC: $ERR $OUT"
}
# p12 PREFIX : PREFIX.p12 from PREFIX-chain.pem and PREFIX.key, as docs/java.md says
p12() {
	setup "$MTLS" ca export --cert "$1-chain.pem" --key "$1.key" --out "$1.p12.tmp" \
		--password-env MTLS_KEYSTORE_PASSWORD --name "$(basename -- "$1")"
	mv -f -- "$1.p12.tmp" "$1.p12"
}
setup javac -d "$W/classes" "$EX/MtlsTls.java" "$EX/MtlsClient.java" "$EX/MtlsServer.java"
JAVA=(java -cp "$W/classes")

setup "$MTLS" ca init --dir "$D"
setup keytool -importcert -noprompt -alias mtls-root -file "$D/root.pem" \
	-keystore "$W/truststore.p12" -storetype PKCS12 -storepass "$MTLS_TRUSTSTORE_PASSWORD"
setup "$MTLS" ca issue --dir "$D" --profile server --dns localhost --uri "$DB_ID" --out "$W/srv"
setup "$MTLS" ca issue --dir "$D" --profile client --uri "$JAVA_ID" --out "$W/java"
p12 "$W/java"
setup "$MTLS" ca issue --dir "$D" --profile client --uri "$TD/ns/dev/sa/other" --out "$W/other"
p12 "$W/other"
# another CA: a client with the same SPIFFE ID, and a truststore of its root
setup "$MTLS" ca init --dir "$W/ca2"
setup "$MTLS" ca issue --dir "$W/ca2" --profile client --uri "$JAVA_ID" --out "$W/foreign"
p12 "$W/foreign"
setup keytool -importcert -noprompt -alias other-root -file "$W/ca2/root.pem" \
	-keystore "$W/truststore2.p12" -storetype PKCS12 -storepass "$MTLS_TRUSTSTORE_PASSWORD"

start_backend "$W/be.log" --mode echo
start_tunnel_server "$W/srv.log" --target "127.0.0.1:$BE_PORT" --cert "$W/srv-chain.pem" \
	--key "$W/srv.key" --ca "$D/root.pem" --allow-uri "$JAVA_ID"
pass "setup: javac compiled the examples, keytool imported the root, mtls ca export made the keystores"

# client HOST KEYSTORE TRUSTSTORE [EXPECTED] : the Java client through mtls server
client() {
	LAST_CMD="java MtlsClient $1 $SRV_PORT $2 $3 ${4:-}"
	run "${JAVA[@]}" MtlsClient "$1" "$SRV_PORT" "$2" "$3" ${4:+"$4"}
}

client localhost "$W/java.p12" "$W/truststore.p12" "$DB_ID"
p=()
[ "$RC" = 0 ] || p+=("exit $RC")
[ "$OUT" = "hello from java" ] || p+=("the answer is '$OUT'")
report "the Java client's line comes back through mtls server (keystore from mtls ca export, truststore of the root, server SPIFFE ID checked)" "${p[@]+"${p[@]}"}"

client localhost "$W/java.p12" "$W/truststore.p12" "$TD/ns/prod/sa/somebody-else"
p=()
[ "$RC" = 1 ] || p+=("exit $RC, expected 1")
[[ $ERR == *"not $TD/ns/prod/sa/somebody-else"* ]] || p+=("the reason is not the server's SPIFFE ID")
report "another server SPIFFE ID expected: the Java client refuses" "${p[@]+"${p[@]}"}"

client 127.0.0.1 "$W/java.p12" "$W/truststore.p12"
p=()
[ "$RC" = 1 ] || p+=("exit $RC, expected 1")
[[ $ERR == *"No subject alternative names matching IP address 127.0.0.1"* ]] ||
	p+=("not refused for the name (endpoint identification)")
report "HTTPS endpoint identification: 127.0.0.1 is not a name of the server's certificate, refused" "${p[@]+"${p[@]}"}"

client localhost "$W/java.p12" "$W/truststore2.p12"
p=()
[ "$RC" = 1 ] || p+=("exit $RC, expected 1")
[[ $ERR == *"PKIX path"* ]] || p+=("not refused as untrusted")
report "a truststore with another CA's root: the Java client refuses the server" "${p[@]+"${p[@]}"}"

refusals=$(log_count "$W/srv.log" handshake_refused '"reason":"unknown_ca"')
client localhost "$W/foreign.p12" "$W/truststore.p12"
p=()
[ "$RC" = 1 ] || p+=("exit $RC, expected 1")
[[ $OUT != *"hello from java"* ]] || p+=("the line came back")
# (the refusal is logged by the server's log thread, maybe after the client saw it)
for _ in $(seq 1 $((READY_LIMIT * 20))); do
	[ "$(log_count "$W/srv.log" handshake_refused '"reason":"unknown_ca"')" -gt "$refusals" ] && break
	sleep 0.05
done
[ "$(log_count "$W/srv.log" handshake_refused '"reason":"unknown_ca"')" -gt "$refusals" ] ||
	p+=("mtls server logged no handshake refused for an unknown CA")
kill -0 "$SRV_PID" 2>/dev/null || p+=("mtls server is not running")
report "a client certificate from another CA (same SPIFFE ID): mtls server refuses it" "${p[@]+"${p[@]}"}"

client localhost "$W/other.p12" "$W/truststore.p12"
p=()
[ "$RC" = 1 ] || p+=("exit $RC, expected 1")
[[ $OUT != *"hello from java"* ]] || p+=("the line came back")
# (the refusal is logged by the server's log thread, maybe after the client saw it)
for _ in $(seq 1 $((READY_LIMIT * 20))); do
	[ "$(log_count "$W/srv.log" handshake_refused "identity $TD/ns/dev/sa/other")" -gt 0 ] && break
	sleep 0.05
done
[ "$(log_count "$W/srv.log" handshake_refused "identity $TD/ns/dev/sa/other")" -gt 0 ] ||
	p+=("mtls server did not log the identity it refused")
kill -0 "$SRV_PID" 2>/dev/null || p+=("mtls server is not running")
report "a client of this CA whose SPIFFE ID is not allowed: mtls server refuses it (and logs who)" "${p[@]+"${p[@]}"}"

# ------------------------------------------------------------------------------------------
echo "# a Java server behind mtls connector"
setup "$MTLS" ca issue --dir "$D" --profile server --dns localhost --uri "$DB_ID" --out "$W/jsrv"
p12 "$W/jsrv"
setup "$MTLS" ca issue --dir "$D" --profile client --uri "$TD/ns/prod/sa/connector" --out "$W/con"
start_bg "$W/jsrv.log" "${JAVA[@]}" MtlsServer 0 "$W/jsrv.p12" "$W/truststore.p12" "$TD/ns/prod/"
JSRV_PID=$BG_PID
wait_for_line "$W/jsrv.log" '^listening on ' "$((READY_LIMIT * 3))" "$JSRV_PID" || {
	cat -- "$W/jsrv.log" >&2
	_lib_die "the Java server did not start"
}
JPORT=$(sed -n 's/^listening on \([0-9][0-9]*\)$/\1/p' "$W/jsrv.log")
start_tunnel_connector "$W/con.log" --server "localhost:$JPORT" --cert "$W/con-chain.pem" \
	--key "$W/con.key" --ca "$D/root.pem" --allow-uri "$DB_ID"

# line TEXT : TEXT through the connector (plaintext), the answer in LINE
line() {
	LINE=
	exec {fd}<>"/dev/tcp/127.0.0.1/$CON_PORT"
	printf '%s\n' "$1" >&"$fd"
	IFS= read -r -t 20 LINE <&"$fd" || true
	exec {fd}>&-
}
line ping
p=()
[ "$LINE" = ping ] || p+=("the answer is '$LINE'")
grep -qF "accepted [$TD/ns/prod/sa/connector]" "$W/jsrv.log" || p+=("the Java server did not see the connector's SPIFFE ID")
verdict "mtls connector to the Java server: the line comes back, the server saw the connector's SPIFFE ID" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 5 "$W/jsrv.log")" "$(tail -n 5 "$W/con.log")"

# served_serial : the serial of the certificate the Java server presents now
served_serial() {
	timeout 20 openssl s_client -connect "localhost:$JPORT" -servername localhost \
		-cert "$W/con.pem" -cert_chain "$W/con-chain.pem" -key "$W/con.key" \
		-CAfile "$D/root.pem" </dev/null 2>/dev/null | openssl x509 -noout -serial 2>/dev/null |
		sed 's/^serial=//'
}
first=$(openssl x509 -in "$W/jsrv.pem" -noout -serial | sed 's/^serial=//')
served=$(served_serial)
setup "$MTLS" ca issue --dir "$D" --profile server --dns localhost --uri "$DB_ID" --out "$W/jsrv" --force
p12 "$W/jsrv"
second=$(openssl x509 -in "$W/jsrv.pem" -noout -serial | sed 's/^serial=//')
now=$(served_serial)
line pong
p=()
[ "$served" = "$first" ] || p+=("before: the Java server presented '$served', not $first")
[ "$second" != "$first" ] || p+=("mtls ca issue --force made no new certificate")
[ "$now" = "$second" ] || p+=("after: the Java server presents '$now', not the renewed $second")
grep -q '^keystore reloaded' "$W/jsrv.log" || p+=("the Java server did not say it reloaded")
[ "$LINE" = pong ] || p+=("through the connector after the reload: '$LINE'")
kill -0 "$JSRV_PID" 2>/dev/null || p+=("the Java server is gone")
verdict "renewal: a new keystore (issue --force, export) is used by the Java server's next handshake, no restart" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 5 "$W/jsrv.log")"

finish
