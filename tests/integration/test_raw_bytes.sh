#!/usr/bin/env bash
# Bytes that are not (or not yet) a TLS handshake, sent to echo-server over a real socket
# (bash's /dev/tcp): each must be refused with the right reason, and the server must keep
# serving afterwards. Then peers that misbehave at the TCP level: a reset after the
# handshake, and a peer that connects and says nothing.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

C=$CERTS
ES_ARGS=(--cert "$C/server-chain.pem" --key "$C/server.key" --ca "$C/ca.pem"
	--allow-uri 'spiffe://test.mtls/ns/prod/sa/*')

# hex_to_file FILE HEX... : write the bytes given as hex pairs ("16 03 01") to FILE.
hex_to_file() {
	local file=$1 esc="" b
	shift
	for b in "$@"; do
		esc+="\\x$b"
	done
	printf '%b' "$esc" >"$file"
}

# random_blob FILE : 512 random bytes that do not start like a TLS record header (second
# byte 0x03, the major version) nor like an SSLv2-compatible ClientHello (high bit, then
# type 1 in the third byte): for those, OpenSSL waits for the rest of the record, and the
# right verdict depends on what follows (see the header cases below).
random_blob() {
	local b _
	for _ in $(seq 100); do
		head -c 512 /dev/urandom >"$1"
		read -r -a b <<<"$(od -An -tu1 -N3 -- "$1")"
		if [ "${b[1]}" -ne 3 ] && ! { [ "${b[0]}" -ge 128 ] && [ "${b[2]}" -eq 1 ]; }; then
			return 0
		fi
	done
	echo "could not make a random blob" >&2
	exit 1
}

# A real ClientHello, as OpenSSL's s_client sends it, captured with -msg against a
# throwaway s_server (the bytes differ per run; their layout does not).
start_s_server "$TMP/sink.log" -naccept 1 -cert "$C/server.pem" -cert_chain "$C/int.pem" \
	-key "$C/server.key"
run openssl s_client -connect "127.0.0.1:$SS_PORT" -msg -noservername
stop_bg "$SS_PID"
hello_hex=$(printf '%s\n' "$OUT" | awk '
	/^>>> .*RecordHeader/ && !header { grab = 1; header = 1; next }
	/^>>> .*ClientHello/ && !hello { grab = 1; hello = 1; next }
	/^[^ ]/ { grab = 0 }
	grab && /^ +[0-9a-f][0-9a-f]( |$)/ { print }' | tr -s ' \n' ' ')
read -r -a hello <<<"$hello_hex"
hello_len=-1
if [ "${#hello[@]}" -ge 5 ]; then
	hello_len=$((16#${hello[3]}${hello[4]}))
fi
if [ "${hello[0]:-}" != 16 ] || [ "${hello[1]:-}" != 03 ] || [ "${hello[5]:-}" != 01 ] ||
	[ "${#hello[@]}" -ne $((5 + hello_len)) ]; then
	echo "could not capture a ClientHello with openssl s_client -msg; it printed:" >&2
	printf '%s\n' "$OUT" >&2
	exit 1
fi
hex_to_file "$TMP/hello-5" "${hello[@]:0:5}"
hex_to_file "$TMP/hello-20" "${hello[@]:0:20}"
hex_to_file "$TMP/hello-full" "${hello[@]}"
random_blob "$TMP/random-1"
random_blob "$TMP/random-2"
printf 'GET / HTTP/1.1\r\nHost: localhost\r\n\r\n' >"$TMP/http"
printf 'CONNECT localhost:443 HTTP/1.1\r\n\r\n' >"$TMP/connect"
printf 'SSH-2.0-OpenSSH_9.2p1\r\n' >"$TMP/ssh"
# A record header whose content type (0xc4) is no TLS content type, claiming 16 KiB, then
# random bytes: not TLS, whatever the length field says.
hex_to_file "$TMP/badtype-head" c4 03 03 40 00
cat -- "$TMP/badtype-head" "$TMP/random-1" >"$TMP/badtype"
# A well-formed handshake record header with an over-long length.
hex_to_file "$TMP/toolong" 16 03 01 ff ff 01 00 ff fb

# One case per connection to the main echo-server, in order: names[i] must make it print a
# line starting with expects[i].
names=()
expects=()
# send_then_close NAME FILE EXPECT : connect, send FILE, wait (bounded) for the server to
# close, close. (The server's refusal line is printed only when it exits: its stdout is a
# file, fully buffered, so the verdicts are read once it has ended, in connection order.)
send_then_close() {
	local fd
	names+=("$1")
	expects+=("$3")
	exec {fd}<>"/dev/tcp/127.0.0.1/$ES_PORT"
	cat -- "$2" >&"$fd"
	timeout 3 cat <&"$fd" >/dev/null 2>&1 || true
	exec {fd}>&-
}
# send_and_hang_up NAME FILE EXPECT : connect, send FILE (may be empty) and close at once.
send_and_hang_up() {
	local fd
	names+=("$1")
	expects+=("$3")
	exec {fd}<>"/dev/tcp/127.0.0.1/$ES_PORT"
	[ ! -s "$2" ] || cat -- "$2" >&"$fd"
	exec {fd}>&-
}

# send_read_and_hang_up NAME FILE EXPECT : connect, send FILE, wait (bounded) for the first
# byte of the server's answer and close without reading the rest: the close is then a reset
# (unread data), which the server sees in its next read, whatever the timing.
send_read_and_hang_up() {
	local fd
	names+=("$1")
	expects+=("$3")
	exec {fd}<>"/dev/tcp/127.0.0.1/$ES_PORT"
	cat -- "$2" >&"$fd"
	timeout 5 dd bs=1 count=1 status=none <&"$fd" >/dev/null 2>&1 || true
	exec {fd}>&-
}

ncases=12
start_echo_server "$TMP/es.log" "${ES_ARGS[@]}" --count "$ncases"
es_main=$ES_PID

# A second server, for the silent peer: echo-server gives a handshake 10 s. Started now so
# that its wait overlaps the other cases.
start_echo_server "$TMP/es-silent.log" "${ES_ARGS[@]}" --count 1
es_silent=$ES_PID
exec {silent_fd}<>"/dev/tcp/127.0.0.1/$ES_PORT"
silent_since=$SECONDS
ES_PORT=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$TMP/es.log")

: >"$TMP/empty"
send_then_close "HTTP request" "$TMP/http" "refused: not_tls:"
send_then_close "HTTPS proxy request" "$TMP/connect" "refused: not_tls:"
send_then_close "SSH banner" "$TMP/ssh" "refused: not_tls:"
send_then_close "random bytes (1)" "$TMP/random-1" "refused: not_tls:"
send_then_close "random bytes (2)" "$TMP/random-2" "refused: not_tls:"
send_then_close "record header with a non-TLS content type" "$TMP/badtype" "refused: not_tls:"
send_then_close "handshake record longer than TLS allows" "$TMP/toolong" "refused: malformed:"
send_and_hang_up "connect and close at once" "$TMP/empty" "refused: truncated:"
send_and_hang_up "first 20 bytes of a ClientHello, then close" "$TMP/hello-20" "refused: truncated:"
send_and_hang_up "ClientHello record header only, then close" "$TMP/hello-5" "refused: truncated:"
send_read_and_hang_up "a whole ClientHello, then reset" "$TMP/hello-full" "refused: truncated:"
# and the server still serves a real client
names+=("a real client after all that")
expects+=("client: spiffe://test.mtls/ns/prod/sa/app1 (TLSv1.3,")
run "$ECHO_CLIENT" --cert "$C/client-chain.pem" --key "$C/client.key" --ca "$C/ca.pem" \
	--connect "127.0.0.1:$ES_PORT" --name server.test "still there?"
client_rc=$RC client_out=$OUT
[ "${#names[@]}" -eq "$ncases" ] || {
	echo "internal: ${#names[@]} cases for --count $ncases" >&2
	exit 1
}

wait_exit "$es_main" "$RUN_LIMIT"
es_rc=$EXIT_RC
es_out=$(cat -- "$TMP/es.log")
mapfile -t verdicts < <(grep -E '^(client|refused):' "$TMP/es.log" || true)

echo "# echo-server --count $ncases, one connection per case"
for i in "${!names[@]}"; do
	got=${verdicts[$i]:-"(no verdict line)"}
	if [[ $got == "${expects[$i]}"* ]]; then
		pass "${names[$i]}"
	else
		fail "${names[$i]}" "expected a line starting with '${expects[$i]}'," "got: $got" \
			"echo-server output:" "$es_out"
	fi
done
if [ "$client_rc" = 0 ] && has_line "$client_out" "echo: still there?"; then
	pass "the real client got its echo"
else
	fail "the real client got its echo" "echo-client exit status $client_rc:" "$client_out"
fi
if [ "$es_rc" = 0 ] && [ "${#verdicts[@]}" -eq "$ncases" ]; then
	pass "echo-server ended by itself after $ncases connections"
else
	fail "echo-server ended by itself after $ncases connections" \
		"exit status $es_rc, ${#verdicts[@]} verdict lines:" "$es_out"
fi

echo "# a client that resets the connection after the handshake"
# A real TLS client (s_client) is made to leave the server's echo unread: its stdout is a
# FIFO nobody reads, and it is sent 1 MB to echo. Once plenty of unread data waits in its
# socket, it is terminated: the kernel resets the connection. echo-server must survive (no
# SIGPIPE), report the reset as io and go on serving.
# rx_queue_to PORT : unread bytes in the established socket connected to 127.0.0.1:PORT.
# ss filters in the kernel: reading /proc/net/tcp in bash takes seconds on a machine with
# many sockets in TIME_WAIT (after a benchmark, say).
rx_queue_to() {
	local q
	q=$(ss -Htn state established "( dst = 127.0.0.1:$1 )" 2>/dev/null | awk 'NR == 1 {print $1}')
	echo "${q:--1}"
}
if ! command -v ss >/dev/null; then
	printf 'skip  client reset after the handshake (no ss from iproute2)\n'
else
	start_echo_server "$TMP/es-reset.log" "${ES_ARGS[@]}" --count 2
	es_reset=$ES_PID
	open_fifo "$TMP/reset.in"
	reset_in_fd=$FIFO_FD
	open_fifo "$TMP/reset.out"
	reset_out_fd=$FIFO_FD
	start_bg_stdin "$TMP/reset.in" "$TMP/reset.out" openssl s_client \
		-connect "127.0.0.1:$ES_PORT" -quiet -CAfile "$C/ca.pem" -cert "$C/client.pem" \
		-cert_chain "$C/int.pem" -key "$C/client.key"
	sc_reset=$BG_PID
	reset_problems=()
	if wait_for_line "$TMP/es-reset.log" '^client:' "$READY_LIMIT" "$es_reset"; then
		head -c 1000000 /dev/zero | tr '\0' 'a' | fold -w 1000 >"$TMP/big"
		start_bg_stdin "$TMP/big" "$TMP/reset.in" cat
		feeder=$BG_PID
		unread=-1
		for _ in $(seq 200); do
			unread=$(rx_queue_to "$ES_PORT")
			[ "$unread" -le 32768 ] || break
			sleep 0.05
		done
		[ "$unread" -gt 32768 ] || reset_problems+=("s_client never had unread data ($unread bytes)")
		stop_bg "$sc_reset"
		stop_bg "$feeder"
	else
		reset_problems+=("the s_client handshake did not complete")
		stop_bg "$sc_reset"
	fi
	close_fifo "$reset_out_fd"
	close_fifo "$reset_in_fd"
	run "$ECHO_CLIENT" --cert "$C/client-chain.pem" --key "$C/client.key" --ca "$C/ca.pem" \
		--connect "127.0.0.1:$ES_PORT" --name server.test "after the reset"
	wait_exit "$es_reset" "$RUN_LIMIT"
	reset_out=$(cat -- "$TMP/es-reset.log")
	[ "$EXIT_RC" = 0 ] || reset_problems+=("echo-server exit status $EXIT_RC, expected 0 (141: SIGPIPE)")
	[ "$(count_lines "$reset_out" "connection ended: io:")" = 1 ] ||
		reset_problems+=("echo-server did not report the reset as 'connection ended: io:'")
	[ "$RC" = 0 ] && has_line "$OUT" "echo: after the reset" ||
		reset_problems+=("the next client got no echo (exit $RC): $OUT $ERR")
	if [ ${#reset_problems[@]} -eq 0 ]; then
		pass "client reset after the handshake: echo-server survives, reports io"
	else
		fail "client reset after the handshake: echo-server survives, reports io" \
			"${reset_problems[@]}" "echo-server output:" "$reset_out"
	fi
fi

echo "# a peer that connects and says nothing"
# echo-server waits 10 s for a handshake (mtls_handshake_wait(conn, 10000)), on the blocking
# socket accept() gave it, which mtls.h says the blocking helpers handle as well.
silent_left=$((16 - (SECONDS - silent_since)))
wait_exit "$es_silent" $((silent_left > 1 ? silent_left : 1))
exec {silent_fd}>&-
silent_out=$(cat -- "$TMP/es-silent.log")
if [ "$EXIT_RC" = 0 ] && [ "$(count_lines "$silent_out" "refused: timeout:")" = 1 ]; then
	pass "silent peer: refused: timeout"
else
	fail "silent peer: refused: timeout" "echo-server exit status $EXIT_RC:" "$silent_out"
fi

finish
