#!/usr/bin/env bash
# The example programs end to end: echo-client against echo-server over mutual TLS, session
# resumption, allow rules, revocation, and the configuration errors both report.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

C=$CERTS
APP1=spiffe://test.mtls/ns/prod/sa/app1
OTHER=spiffe://test.mtls/ns/dev/sa/other
SERVER=(--cert "$C/server-chain.pem" --key "$C/server.key" --ca "$C/ca.pem")
CLIENT=(--cert "$C/client-chain.pem" --key "$C/client.key" --ca "$C/ca.pem")
CLIENT2=(--cert "$C/client2-chain.pem" --key "$C/client2.key" --ca "$C/ca.pem")

n=0
# pair COUNT SERVER_ARGS... -- CLIENT_ARGS... : start echo-server SERVER_ARGS --count COUNT,
# run echo-client CLIENT_ARGS --connect 127.0.0.1:PORT against it, then wait for the server
# to end by itself. Sets RC/OUT/ERR (echo-client), ES_RC and ES_OUT (echo-server).
pair() {
	local count=$1 sargs=()
	shift
	while [ "$1" != -- ]; do
		sargs+=("$1")
		shift
	done
	shift
	n=$((n + 1))
	start_echo_server "$TMP/es-$n.log" "${sargs[@]}" --count "$count"
	run "$ECHO_CLIENT" --connect "127.0.0.1:$ES_PORT" "$@"
	wait_exit "$ES_PID" "$RUN_LIMIT"
	ES_RC=$EXIT_RC
	ES_OUT=$(cat -- "$TMP/es-$n.log")
}

# report_both NAME PROBLEM... : pass if there are no problems, else fail showing both sides.
report_both() {
	local name=$1
	shift
	if [ $# -eq 0 ]; then
		pass "$name"
	else
		fail "$name" "$@" "echo-client (exit $RC):" "$OUT" "echo-client stderr:" "$ERR" \
			"echo-server (exit ${ES_RC:-}):" "${ES_OUT:-}"
	fi
}

echo "# echo"
msg="hello, mutual TLS"
pair 1 "${SERVER[@]}" --allow-uri 'spiffe://test.mtls/ns/prod/sa/*' -- \
	"${CLIENT[@]}" --name server.test "$msg"
p=()
[ "$RC" = 0 ] || p+=("echo-client exit status $RC, expected 0")
[ "$(printf '%s\n' "$OUT" | grep '^echo: ' || true)" = "echo: $msg" ] || p+=("the echo is not '$msg'")
[[ $(first_line "$OUT") == "server: server.test (TLSv1.3, "* ]] || p+=("no 'server: server.test (TLSv1.3, ...' line")
[ "$ES_RC" = 0 ] || p+=("echo-server exit status $ES_RC, expected 0")
[ "$(count_lines "$ES_OUT" "client: $APP1 (TLSv1.3, ")" = 1 ] || p+=("echo-server did not print the client's identity")
! has_line "$ES_OUT" "refused:" && ! has_line "$ES_OUT" "connection ended:" ||
	p+=("echo-server reported a problem")
report_both "echo-client -> echo-server: the echo comes back" "${p[@]+"${p[@]}"}"

pair 1 "${SERVER[@]}" --allow-any -- "${CLIENT[@]}" "by address"
p=()
[ "$RC" = 0 ] && has_line "$OUT" "echo: by address" || p+=("no echo")
[ "$ES_RC" = 0 ] || p+=("echo-server exit status $ES_RC, expected 0")
report_both "server name defaults to the --connect host (IP SAN 127.0.0.1)" "${p[@]+"${p[@]}"}"

echo "# session resumption"
pair 3 "${SERVER[@]}" --allow-uri 'spiffe://test.mtls/ns/prod/sa/*' -- \
	"${CLIENT[@]}" --name server.test --repeat 3 "again"
p=()
[ "$RC" = 0 ] || p+=("echo-client exit status $RC, expected 0")
mapfile -t client_lines < <(printf '%s\n' "$OUT" | grep '^server: ' || true)
mapfile -t server_lines < <(printf '%s\n' "$ES_OUT" | grep -E '^(client|refused):' || true)
[ "${#client_lines[@]}" = 3 ] || p+=("echo-client made ${#client_lines[@]} connections, expected 3")
[ "${#server_lines[@]}" = 3 ] || p+=("echo-server saw ${#server_lines[@]} connections, expected 3")
[ "$(printf '%s\n' "$OUT" | grep -c '^echo: again$')" = 3 ] || p+=("not three echoes")
for i in 0 1 2; do
	c=${client_lines[$i]:-} s=${server_lines[$i]:-}
	if [ "$i" = 0 ]; then
		[[ $c == "server: server.test (TLSv1.3, "* && $c != *", resumed)" ]] ||
			p+=("connection 1 (client side) should be a full handshake: '$c'")
		[[ $s == "client: $APP1 (TLSv1.3, "* && $s != *", resumed)" ]] ||
			p+=("connection 1 (server side) should be a full handshake: '$s'")
	else
		[[ $c == "server: server.test (TLSv1.3, "*", resumed)" ]] ||
			p+=("connection $((i + 1)) (client side) is not resumed: '$c'")
		[[ $s == "client: $APP1 (TLSv1.3, "*", resumed)" ]] ||
			p+=("connection $((i + 1)) (server side) is not resumed: '$s'")
	fi
done
[ "$ES_RC" = 0 ] || p+=("echo-server exit status $ES_RC, expected 0")
report_both "--repeat 3: connections 2 and 3 are resumed, with the identity" "${p[@]+"${p[@]}"}"

echo "# allow rules and revocation"
# When echo-server refuses a client certificate (TLS 1.3: after the client's side of the
# handshake is done), the client's reason is checked by the last case of this group; here
# the server's reason is, and that the client ended with exit 1 and no echo.
client_refused() {
	[ "$RC" = 1 ] || p+=("echo-client exit status $RC, expected 1")
	[[ $(first_line "$OUT") == "refused: "* ]] || p+=("echo-client printed no refusal")
	! has_line "$OUT" "echo:" || p+=("a refused client got an echo")
}
DEV=(--allow-uri 'spiffe://test.mtls/ns/dev/sa/*')
pair 1 "${SERVER[@]}" "${DEV[@]}" -- "${CLIENT[@]}" --name server.test "not me"
p=()
client_refused
[ "$ES_RC" = 0 ] || p+=("echo-server exit status $ES_RC, expected 0")
[ "$(count_lines "$ES_OUT" "refused: identity_not_allowed:")" = 1 ] ||
	p+=("echo-server did not print 'refused: identity_not_allowed:'")
[[ $ES_OUT == *"$APP1"* ]] || p+=("echo-server's refusal does not name the identity")
! has_line "$ES_OUT" "client:" || p+=("echo-server accepted the client")
report_both "--allow-uri ns/dev/sa/*: client (ns/prod) refused" "${p[@]+"${p[@]}"}"

pair 1 "${SERVER[@]}" "${DEV[@]}" -- "${CLIENT2[@]}" --name server.test "me"
p=()
[ "$RC" = 0 ] && has_line "$OUT" "echo: me" || p+=("echo-client exit status $RC, no echo")
[ "$ES_RC" = 0 ] || p+=("echo-server exit status $ES_RC, expected 0")
[ "$(count_lines "$ES_OUT" "client: $OTHER (TLSv1.3, ")" = 1 ] || p+=("echo-server did not accept $OTHER")
report_both "--allow-uri ns/dev/sa/*: client2 (ns/dev) accepted" "${p[@]+"${p[@]}"}"

pair 1 "${SERVER[@]}" --allow-dns app1.test -- "${CLIENT[@]}" --name server.test "dns"
p=()
[ "$RC" = 0 ] && has_line "$OUT" "echo: dns" || p+=("echo-client exit status $RC, no echo")
[ "$(count_lines "$ES_OUT" "client: $APP1 (")" = 1 ] || p+=("echo-server did not accept the client")
report_both "--allow-dns app1.test accepts client" "${p[@]+"${p[@]}"}"

pair 1 "${SERVER[@]}" --allow-any --crl "$C/crl.pem" -- \
	--cert "$C/revoked-client-chain.pem" --key "$C/revoked-client.key" --ca "$C/ca.pem" \
	--name server.test "revoked"
p=()
client_refused
[ "$ES_RC" = 0 ] || p+=("echo-server exit status $ES_RC, expected 0")
[ "$(count_lines "$ES_OUT" "refused: revoked:")" = 1 ] || p+=("echo-server did not print 'refused: revoked:'")
report_both "--crl crl.pem: revoked client refused" "${p[@]+"${p[@]}"}"

pair 1 "${SERVER[@]}" --allow-any --crl "$C/crl.pem" -- "${CLIENT[@]}" --name server.test "fine"
p=()
[ "$RC" = 0 ] && has_line "$OUT" "echo: fine" || p+=("echo-client exit status $RC, no echo")
[ "$(count_lines "$ES_OUT" "client: $APP1 (")" = 1 ] || p+=("echo-server did not accept the client")
report_both "--crl crl.pem: good client accepted" "${p[@]+"${p[@]}"}"

# The refused client must learn that the server refused it (the server sent an alert):
# rejected_by_peer, every time. Ten connections, because whether the alert is read depends
# on when the server's close reaches the client.
tries=10
n=$((n + 1))
start_echo_server "$TMP/es-$n.log" "${SERVER[@]}" "${DEV[@]}" --count "$tries"
client_reasons=()
for i in $(seq "$tries"); do
	run "$ECHO_CLIENT" --connect "127.0.0.1:$ES_PORT" "${CLIENT[@]}" --name server.test "try $i"
	client_reasons+=("exit $RC: $(first_line "$OUT")")
done
wait_exit "$ES_PID" "$RUN_LIMIT"
ES_RC=$EXIT_RC
ES_OUT=$(cat -- "$TMP/es-$n.log")
p=()
for r in "${client_reasons[@]}"; do
	[[ $r == "exit 1: refused: rejected_by_peer:"* ]] || p+=("echo-client: $r")
done
[ ${#p[@]} -eq 0 ] || p=("not every refused connection was reported as rejected_by_peer:" "${p[@]}")
[ "$(count_lines "$ES_OUT" "refused: identity_not_allowed:")" = "$tries" ] ||
	p+=("echo-server did not refuse all $tries connections with identity_not_allowed")
[ "$ES_RC" = 0 ] || p+=("echo-server exit status $ES_RC, expected 0")
if [ ${#p[@]} -eq 0 ]; then
	pass "refused client reports rejected_by_peer ($tries connections)"
else
	fail "refused client reports rejected_by_peer ($tries connections)" "${p[@]}" \
		"echo-server's verdicts:" "$(printf '%s\n' "$ES_OUT" | grep -E '^(client|refused):' | cut -c1-100)"
fi

echo "# the client checks the server"
pair 1 "${SERVER[@]}" --allow-any -- "${CLIENT[@]}" --name wrong.test "hi"
p=()
[ "$RC" = 1 ] || p+=("echo-client exit status $RC, expected 1")
[[ $(first_line "$OUT") == "refused: name_mismatch:"* ]] || p+=("echo-client did not report name_mismatch")
[[ $OUT == *wrong.test* ]] || p+=("the refusal does not name wrong.test")
[ "$(count_lines "$ES_OUT" "refused: rejected_by_peer:")" = 1 ] ||
	p+=("echo-server did not report that the client refused it")
report_both "--name wrong.test: refused on both sides" "${p[@]+"${p[@]}"}"

pair 1 "${SERVER[@]}" --allow-any -- --cert "$C/client-chain.pem" --key "$C/client.key" \
	--ca "$C/other-ca.pem" --name server.test "hi"
p=()
[ "$RC" = 1 ] || p+=("echo-client exit status $RC, expected 1")
[[ $(first_line "$OUT") == "refused: unknown_ca:"* ]] || p+=("echo-client did not report unknown_ca")
[ "$(count_lines "$ES_OUT" "refused: rejected_by_peer:")" = 1 ] ||
	p+=("echo-server did not report that the client refused it")
report_both "client trusting another CA: unknown_ca" "${p[@]+"${p[@]}"}"

echo "# configuration errors (exit 2, before any connection)"
# conf_case NAME PROGRAM MESSAGE ARGS... : PROGRAM ARGS must exit 2 with MESSAGE on stderr.
conf_case() {
	local name=$1 prog=$2 want=$3
	shift 3
	run "$prog" "$@"
	if [ "$RC" = 2 ] && [[ $ERR == *"$want"* ]] && [ -z "$OUT" ]; then
		pass "$name"
	else
		fail "$name" "${prog##*/} $*" "expected exit 2 and '$want' on stderr, got exit $RC" \
			"stdout:" "$OUT" "stderr:" "$ERR"
	fi
}
NOWHERE=127.0.0.1:9 # never contacted: configuration is checked first
conf_case "client key mode 0644" "$ECHO_CLIENT" "chmod 600" \
	--cert "$C/client-chain.pem" --key "$C/client-world.key" --ca "$C/ca.pem" --connect "$NOWHERE" x
conf_case "encrypted key, no passphrase" "$ECHO_CLIENT" "passphrase" \
	--cert "$C/client-chain.pem" --key "$C/client-enc.key" --ca "$C/ca.pem" --connect "$NOWHERE" x
conf_case "key does not match the certificate" "$ECHO_CLIENT" "does not match" \
	--cert "$C/client-chain.pem" --key "$C/mismatch.key" --ca "$C/ca.pem" --connect "$NOWHERE" x
conf_case "malformed client certificate" "$ECHO_CLIENT" "malformed.pem" \
	--cert "$C/malformed.pem" --key "$C/client.key" --ca "$C/ca.pem" --connect "$NOWHERE" x
conf_case "echo-client usage" "$ECHO_CLIENT" "usage:" "${CLIENT[@]}" --connect "$NOWHERE"
cp -- "$C/server.key" "$TMP/server-world.key"
chmod 0644 -- "$TMP/server-world.key"
conf_case "server key mode 0644" "$ECHO_SERVER" "chmod 600" \
	--cert "$C/server-chain.pem" --key "$TMP/server-world.key" --ca "$C/ca.pem" --allow-any --port 0
conf_case "server without allow rule" "$ECHO_SERVER" "no allow rule" "${SERVER[@]}" --port 0
conf_case "server key does not match" "$ECHO_SERVER" "does not match" \
	--cert "$C/server-chain.pem" --key "$C/mismatch.key" --ca "$C/ca.pem" --allow-any --port 0

finish
