#!/usr/bin/env bash
# Interoperability with peers nobody here wrote: `openssl s_client` against echo-server and
# echo-client against `openssl s_server`, over TLS 1.2 and TLS 1.3, then the refusals each
# side must report (with the alert the real peer receives, where the TLS version makes it
# deterministic).
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

C=$CERTS
APP1=spiffe://test.mtls/ns/prod/sa/app1
MSG=hello-from-openssl-s_client

# The echo-server every s_client case talks to (plus ES_EXTRA), one connection each.
ES_BASE=(--cert "$C/server-chain.pem" --key "$C/server.key" --ca "$C/ca.pem"
	--allow-uri 'spiffe://test.mtls/ns/prod/sa/*' --count 1)

n=0

# sc_case NAME EXPECT ALERT SEND S_CLIENT_ARGS...
#   Start echo-server (ES_BASE + ES_EXTRA), connect `openssl s_client ARGS` to it.
#   SEND=yes: send MSG, wait for the echo, then close stdin (s_client ends with close_notify).
#   SEND=no:  send nothing and keep stdin open: s_client must end by itself, because the
#             server refused it (so the alert is read before any EOF of ours can race it).
#   Checks: echo-server ends by itself with status 0 and printed exactly one line starting
#   with EXPECT ("client: ..." or "refused: REASON:") and no other verdict; with SEND=yes the
#   echo came back, s_client exited 0 and the server saw an orderly close; with SEND=no
#   s_client ended by itself; if ALERT is not empty, s_client's output names that alert.
sc_case() {
	local name=$1 expect=$2 alert=$3 send=$4 problems=() fifo sc_pid sc_rc es_rc
	shift 4
	n=$((n + 1))
	local es_log=$TMP/es-$n.log sc_log=$TMP/sc-$n.log
	start_echo_server "$es_log" "${ES_BASE[@]}" "${ES_EXTRA[@]+"${ES_EXTRA[@]}"}"
	fifo=$TMP/sc-$n.in
	open_fifo "$fifo"
	start_bg_stdin "$fifo" "$sc_log" openssl s_client -connect "127.0.0.1:$ES_PORT" \
		-quiet -no_ign_eof -CAfile "$C/ca.pem" -verify_return_error "$@"
	sc_pid=$BG_PID
	if [ "$send" = yes ]; then
		printf '%s\n' "$MSG" >&"$FIFO_FD"
		wait_for_line "$sc_log" "^$MSG\$" "$RUN_LIMIT" "$sc_pid" ||
			problems+=("the echo did not come back")
		close_fifo # EOF: s_client sends close_notify and ends
		wait_exit "$sc_pid" "$RUN_LIMIT"
	else
		# s_client must end by itself (its stdin is still open); stop waiting early if
		# the server accepted it after all
		wait_for_line "$es_log" '^client:' "$RUN_LIMIT" "$sc_pid" || true
		kill -0 "$sc_pid" 2>/dev/null && problems+=("s_client did not end after the refusal")
		close_fifo
		wait_exit "$sc_pid" 5
	fi
	sc_rc=$EXIT_RC
	wait_exit "$ES_PID" "$RUN_LIMIT"
	es_rc=$EXIT_RC
	rm -f -- "$fifo"

	local es_out sc_out
	es_out=$(cat -- "$es_log")
	sc_out=$(cat -- "$sc_log")
	[ "$es_rc" = 0 ] || problems+=("echo-server exit status $es_rc, expected 0")
	[ "$(count_lines "$es_out" "$expect")" = 1 ] ||
		problems+=("echo-server did not print exactly one line starting with '$expect'")
	[ "$(count_lines "$es_out" "client:")$(count_lines "$es_out" "refused:")" = 10 ] ||
		[ "$(count_lines "$es_out" "client:")$(count_lines "$es_out" "refused:")" = 01 ] ||
		problems+=("echo-server printed more than one verdict")
	if [ "$send" = yes ]; then
		[ "$sc_rc" = 0 ] || problems+=("s_client exit status $sc_rc, expected 0")
		! has_line "$es_out" "connection ended:" ||
			problems+=("s_client's orderly close was not seen as one")
	fi
	if [ -n "$alert" ] && [[ $sc_out != *"alert $alert"* ]]; then
		problems+=("s_client did not receive the alert '$alert'")
	fi
	if [ ${#problems[@]} -eq 0 ]; then
		pass "$name"
	else
		fail "$name" "${problems[@]}" "echo-server ${ES_BASE[*]} ${ES_EXTRA[*]-}:" "$es_out" \
			"openssl s_client $* (exit $sc_rc):" "$sc_out"
	fi
}

# The s_server every echo-client case talks to: SS_ARGS, one connection, reversing lines.
SS_GOOD=(-cert "$C/server.pem" -cert_chain "$C/int.pem" -key "$C/server.key")
SS_VERIFY=(-Verify 2 -verify_return_error -CAfile "$C/ca.pem")

# ec_case NAME RC EXPECT DETAIL ECHO_CLIENT_ARGS... : start `openssl s_server -naccept 1
# -rev SS_ARGS`, run echo-client against it, check its exit status, that its first line
# starts with EXPECT and (if DETAIL is not empty) that its output contains DETAIL. For RC 0
# also that the (reversed) echo came back and that s_server verified our certificate.
ec_case() {
	local name=$1 want_rc=$2 expect=$3 detail=$4 problems=()
	shift 4
	n=$((n + 1))
	local ss_log=$TMP/ss-$n.log
	start_s_server "$ss_log" -naccept 1 -rev "${SS_ARGS[@]}"
	run "$ECHO_CLIENT" --cert "$C/client-chain.pem" --key "$C/client.key" --ca "$C/ca.pem" \
		--connect "127.0.0.1:$SS_PORT" "$@" $'tls interop\n'
	wait_exit "$SS_PID" 5
	local ss_out
	ss_out=$(cat -- "$ss_log")
	[ "$RC" = "$want_rc" ] || problems+=("echo-client exit status $RC, expected $want_rc")
	[[ $(first_line "$OUT") == "$expect"* ]] || problems+=("first line does not start with '$expect'")
	if [ -n "$detail" ] && [[ "$OUT$ERR" != *"$detail"* ]]; then
		problems+=("output does not mention '$detail'")
	fi
	if [ "$want_rc" = 0 ]; then
		has_line "$OUT" "echo: poretni slt" || problems+=("no reversed echo 'echo: poretni slt'")
		[[ $ss_out == *"CN = app1"* ]] || problems+=("s_server did not see our certificate")
	elif has_line "$OUT" "echo:"; then
		problems+=("a refused connection printed an echo")
	fi
	if [ ${#problems[@]} -eq 0 ]; then
		pass "$name"
	else
		fail "$name" "${problems[@]}" "echo-client $* (exit $RC):" "$OUT" "stderr:" "$ERR" \
			"openssl s_server ${SS_ARGS[*]}:" "$ss_out"
	fi
}

GOOD_CLIENT=(-cert "$C/client.pem" -cert_chain "$C/int.pem" -key "$C/client.key")

for v in 1.2 1.3; do
	V=-tls${v/./_}

	echo "# TLS $v: openssl s_client -> echo-server"
	ES_EXTRA=()
	sc_case "TLS $v: s_client handshake and echo" "client: $APP1 (TLSv$v," "" yes \
		"$V" "${GOOD_CLIENT[@]}"
	# s_client sends its leaf alone (no -cert_chain): its issuer was not sent
	sc_case "TLS $v: s_client, client of another CA" "refused: issuer_not_sent:" "unknown ca" no \
		"$V" -cert "$C/other-client-chain.pem" -key "$C/other-client.key"
	sc_case "TLS $v: s_client, leaf without intermediate" "refused: issuer_not_sent:" "unknown ca" no \
		"$V" -cert "$C/client.pem" -key "$C/client.key"
	no_cert_alert="handshake failure"
	[ "$v" = 1.2 ] || no_cert_alert="certificate required"
	sc_case "TLS $v: s_client, no certificate" "refused: no_certificate:" "$no_cert_alert" no \
		"$V"
	sc_case "TLS $v: s_client, server cert as client" "refused: bad_key_usage:" \
		"unsupported certificate" no "$V" -cert "$C/server.pem" -cert_chain "$C/int.pem" \
		-key "$C/server.key"
	sc_case "TLS $v: s_client, expired client" "refused: expired:" "certificate expired" no \
		"$V" -cert "$C/expired-client-chain.pem" -cert_chain "$C/int.pem" \
		-key "$C/expired-client.key"
	sc_case "TLS $v: s_client, identity not allowed" "refused: identity_not_allowed:" "" no \
		"$V" -cert "$C/client2.pem" -cert_chain "$C/int.pem" -key "$C/client2.key"
	ES_EXTRA=(--crl "$C/crl.pem")
	sc_case "TLS $v: s_client, revoked client" "refused: revoked:" "certificate revoked" no \
		"$V" -cert "$C/revoked-client-chain.pem" -cert_chain "$C/int.pem" \
		-key "$C/revoked-client.key"
	sc_case "TLS $v: s_client with CRL configured, good client" "client: $APP1 (TLSv$v," "" yes \
		"$V" "${GOOD_CLIENT[@]}"
	ES_EXTRA=()

	echo "# TLS $v: echo-client -> openssl s_server"
	SS_ARGS=("${SS_VERIFY[@]}" "${SS_GOOD[@]}" "$V")
	ec_case "TLS $v: echo-client handshake and echo" 0 "server: server.test (TLSv$v," "" \
		--name server.test
	ec_case "TLS $v: echo-client by IP address" 0 "server: server.test (TLSv$v," "" \
		--name 127.0.0.1
	ec_case "TLS $v: echo-client, wrong server name" 1 "refused: name_mismatch:" "wrong.test" \
		--name wrong.test
	SS_ARGS=("${SS_VERIFY[@]}" -cert "$C/other-server-chain.pem" -key "$C/other-server.key" "$V")
	ec_case "TLS $v: echo-client, server of another CA" 1 "refused: issuer_not_sent:" "" \
		--name server.test
	SS_ARGS=("${SS_VERIFY[@]}" -cert "$C/server.pem" -key "$C/server.key" "$V")
	ec_case "TLS $v: echo-client, server sends no intermediate" 1 "refused: issuer_not_sent:" "" \
		--name server.test
	SS_ARGS=("${SS_VERIFY[@]}" -cert "$C/client.pem" -cert_chain "$C/int.pem" -key "$C/client.key" "$V")
	ec_case "TLS $v: echo-client, client cert as server" 1 "refused: bad_key_usage:" "" \
		--name server.test
	SS_ARGS=("${SS_VERIFY[@]}" -cert "$C/expired-server-chain.pem" -cert_chain "$C/int.pem"
		-key "$C/expired-server.key" "$V")
	ec_case "TLS $v: echo-client, expired server" 1 "refused: expired:" "2021-01-01T00:00:00Z" \
		--name server.test
	# s_server trusts another CA: it refuses our certificate with unknown_ca (in TLS 1.3
	# after our side of the handshake is done, so echo-client learns it on its first read)
	SS_ARGS=(-Verify 2 -verify_return_error -CAfile "$C/other-ca.pem" "${SS_GOOD[@]}" "$V")
	ec_case "TLS $v: echo-client refused by s_server" 1 "refused: rejected_by_peer:" "unknown ca" \
		--name server.test
done

echo "# versions and ciphers nobody should negotiate"
ES_EXTRA=()
for old in tls1_1 tls1; do
	sc_case "s_client -$old" "refused: protocol_version:" "protocol version" no \
		"-$old" -cipher 'DEFAULT@SECLEVEL=0' "${GOOD_CLIENT[@]}"
	SS_ARGS=("${SS_VERIFY[@]}" "${SS_GOOD[@]}" "-$old" -cipher 'DEFAULT@SECLEVEL=0')
	ec_case "echo-client -> s_server -$old" 1 "refused: protocol_version:" "" --name server.test
done
# The server side sees that no cipher is shared: handshake_failed.
sc_case "s_client TLS 1.2 with a CBC cipher only" "refused: handshake_failed:" "handshake failure" no \
	-tls1_2 -cipher ECDHE-ECDSA-AES128-SHA256 "${GOOD_CLIENT[@]}"
sc_case "s_client TLS 1.3 with CCM_8 only" "refused: handshake_failed:" "handshake failure" no \
	-tls1_3 -ciphersuites TLS_AES_128_CCM_8_SHA256 "${GOOD_CLIENT[@]}"
# The client side only offers AEAD suites; a server that has none refuses with a
# handshake_failure alert, and that is all the client can know: the peer refused it.
SS_ARGS=("${SS_VERIFY[@]}" "${SS_GOOD[@]}" -tls1_2 -cipher ECDHE-ECDSA-AES128-SHA256)
ec_case "echo-client -> s_server with a CBC cipher only" 1 "refused: rejected_by_peer:" \
	"handshake failure" --name server.test

finish
