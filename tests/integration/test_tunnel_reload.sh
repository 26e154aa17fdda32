#!/usr/bin/env bash
# The file watcher loads only what has settled and is whole: a certificate chain being
# written in place (for a moment only the leaf) is not served; a file set still changing is
# not reloaded until it has been still for a second; the whole new chain is served once
# written.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

C=$CERTS
W=$TMP/w
mkdir -p "$W"
cp -- "$C/server-chain.pem" "$W/chain.pem"
cp -- "$C/server.key" "$W/srv.key"
chmod 600 "$W/srv.key"

# A renewed server certificate for the same key, from the same intermediate: the rotation
# the test performs. new-leaf.pem alone is what a half-written chain file holds.
cat >"$TMP/srv.ext" <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:server.test, DNS:localhost, IP:127.0.0.1
EOF
run openssl req -new -key "$W/srv.key" -subj /CN=server.test -out "$TMP/new.csr"
[ "$RC" = 0 ] || _lib_die "openssl req failed: $ERR"
NEW_SERIAL=$(openssl rand -hex 12 | tr 'a-f' 'A-F')
NEW_SERIAL=1${NEW_SERIAL:1}
run openssl x509 -req -in "$TMP/new.csr" -CA "$C/int.pem" -CAkey "$C/int.key" \
	-set_serial "0x$NEW_SERIAL" -days 30 -extfile "$TMP/srv.ext" -out "$TMP/new-leaf.pem"
[ "$RC" = 0 ] || _lib_die "openssl x509 -req failed: $ERR"
OLD_SERIAL=$(openssl x509 -in "$C/server-chain.pem" -noout -serial | sed 's/^serial=//')

# served : the serial of the certificate the server presents, if the chain it sends
# verifies to the zoo's root (as a client with only the root would check it); else FAILED.
served() {
	local out
	out=$(timeout -k 2 "$RUN_LIMIT" openssl s_client -connect "127.0.0.1:$SRV_PORT" \
		-servername server.test -CAfile "$C/ca.pem" -verify_return_error \
		-cert "$C/client-chain.pem" -cert_chain "$C/int.pem" -key "$C/client.key" \
		</dev/null 2>&1 || true)
	if [[ $out == *"Verify return code: 0 (ok)"* ]]; then
		# from a file: openssl x509 stops reading after one certificate (no SIGPIPE)
		printf '%s\n' "$out" >"$TMP/served.txt"
		out=$(openssl x509 -in "$TMP/served.txt" -noout -serial 2>/dev/null || true)
		echo "${out#serial=}"
	else
		echo FAILED
	fi
}

# wait_count SECONDS EVENT N [TEXT] : until the server log has N or more EVENT lines.
wait_count() {
	local n=$(($1 * 10))
	while [ "$n" -gt 0 ]; do
		[ "$(log_count "$TMP/srv.log" "$2" "${4:-}")" -ge "$3" ] && return 0
		sleep 0.1
		n=$((n - 1))
	done
	return 1
}

start_backend "$TMP/be.log" --mode echo
start_tunnel_server "$TMP/srv.log" --target "127.0.0.1:$BE_PORT" --cert "$W/chain.pem" \
	--key "$W/srv.key" --ca "$C/ca.pem" --allow-any-identity --watch-interval 200ms \
	--drain-timeout 100ms
# the daemon itself (SRV_PID is its timeout wrapper, which would end it after a SIGHUP)
MTLS_PID=$(daemon_pid "$TMP/srv.log")

p=()
s=$(served)
[ "$s" = "$OLD_SERIAL" ] || p+=("at start the server presents '$s', expected $OLD_SERIAL")
verdict "at start the whole chain is served" "${p[@]+"${p[@]}"}" -- "$(cat -- "$TMP/srv.log")"

echo "# 1. the chain file written in place: for a while it holds only the new leaf"
# in place (same inode, truncated then written), as 'cat new > chain.pem' does
cat -- "$TMP/new-leaf.pem" >"$W/chain.pem"
# well past the watch interval (200 ms) and the settling (1 s)
sleep 2.5
p=()
fails=0
for _ in 1 2 3; do
	s=$(served)
	[ "$s" = "$OLD_SERIAL" ] || fails=$((fails + 1))
done
[ "$fails" = 0 ] || p+=("$fails of 3 clients did not get the old, whole chain (last: '$s'): the half-written file was served")
wait_count 5 reload_failed 1 || p+=("no reload_failed line for the leaf-only chain file")
l=$(grep -F '"event":"reload_failed"' "$TMP/srv.log" | head -n 1 || true)
[[ $l == *'"reason":"incomplete_chain"'* && $l == *"$W/chain.pem"* ]] ||
	p+=("the reload_failed line does not say incomplete_chain and name the file: $l")
[ "$(log_count "$TMP/srv.log" reload '"trigger":"file_change"')" = 0 ] ||
	p+=("a reload happened with the leaf-only chain file")
verdict "a chain file holding only the new leaf is refused (reload_failed incomplete_chain); clients keep the old chain" \
	"${p[@]+"${p[@]}"}" -- "$(grep -F '"event":"reload' "$TMP/srv.log" || true)"

# the explicit SIGHUP does not load it either: the chain no longer leads to the CA
kill -HUP "$MTLS_PID"
p=()
wait_count 5 reload_failed 1 '"trigger":"SIGHUP"' || p+=("SIGHUP loaded the leaf-only chain (no reload_failed)")
s=$(served)
[ "$s" = "$OLD_SERIAL" ] || p+=("after SIGHUP the server presents '$s', expected the old $OLD_SERIAL")
verdict "SIGHUP with the leaf-only chain file is refused too" "${p[@]+"${p[@]}"}" -- \
	"$(grep -F '"event":"reload' "$TMP/srv.log" || true)"

echo "# 2. the write completes: the new whole chain is served after settling"
cat -- "$C/int.pem" >>"$W/chain.pem"
p=()
wait_count 10 reload 1 '"trigger":"file_change"' || p+=("no reload after the chain was completed")
s=$(served)
[ "$s" = "$NEW_SERIAL" ] || p+=("after the reload the server presents '$s', expected the new $NEW_SERIAL")
verdict "the completed chain is loaded and served" "${p[@]+"${p[@]}"}" -- \
	"$(grep -F '"event":"reload' "$TMP/srv.log" || true)"

echo "# 3. files still changing are not reloaded until they settle"
before=$(log_count "$TMP/srv.log" reload)
# a change every 200 ms for 7 s (the watcher looks every 200 ms): never still for 1 s
for _ in $(seq 1 35); do
	touch -- "$W/chain.pem"
	sleep 0.2
done
during=$(($(log_count "$TMP/srv.log" reload) - before))
p=()
[ "$during" -le 1 ] || p+=("$during reloads while the file kept changing (expected none, 1 at most on a slow machine)")
wait_count 10 reload $((before + during + 1)) || p+=("no reload once the file settled")
verdict "a file changing every 200 ms for 7 s: $during reloads meanwhile, one once it settled" \
	"${p[@]+"${p[@]}"}" -- "$(grep -F '"event":"reload' "$TMP/srv.log" || true)"
# a reload that waits on files that keep changing is said, once, naming the file
l=$(grep -F '"event":"reload_waiting"' "$TMP/srv.log" || true)
p=()
[ "$(count_lines "$l" "{")" = 1 ] || p+=("$(count_lines "$l" "{") reload_waiting lines, expected 1 (after 5 s of changes)")
[[ $l == *"\"file\":\"$W/chain.pem\""* && $l == *"kept changing"* ]] ||
	p+=("the reload_waiting line does not name $W/chain.pem")
verdict "files changing for 7 s: one reload_waiting warning naming the file" \
	"${p[@]+"${p[@]}"}" -- "$(grep -F '"event":"reload' "$TMP/srv.log" || true)"

stop_bg "$SRV_PID"

echo "# 4. a whole new chain under another root the CA bundle trusts: loaded by the watcher"
# The issuing CA re-signed by a second root (same name and key: a cross-signed or re-parented
# intermediate, as in a root migration); the --ca bundle holds both roots. The new chain is
# as long as the old, ends at another issuer and verifies: a rotation, not a half-written file.
cat >"$TMP/ca.ext" <<'EOF2'
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF2
cat >"$TMP/root.ext" <<'EOF2'
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF2
run openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	-keyout "$TMP/root2.key" -subj "/CN=mtls test root 2" -days 30 \
	-extensions v3 -config <(printf '[req]\ndistinguished_name=dn\n[dn]\n[v3]\n%s\n' \
		"$(cat -- "$TMP/root.ext")") -out "$TMP/root2.pem"
[ "$RC" = 0 ] || _lib_die "openssl req -x509 (root 2) failed: $ERR"
run openssl x509 -x509toreq -in "$C/int.pem" -signkey "$C/int.key" -out "$TMP/int.csr"
[ "$RC" = 0 ] || _lib_die "openssl x509 -x509toreq failed: $ERR"
run openssl x509 -req -in "$TMP/int.csr" -CA "$TMP/root2.pem" -CAkey "$TMP/root2.key" \
	-set_serial 0x4242 -days 30 -extfile "$TMP/ca.ext" -out "$TMP/int2.pem"
[ "$RC" = 0 ] || _lib_die "openssl x509 -req (int under root 2) failed: $ERR"
# the bundle holds the issuing CA too: a leaf alone verifies against it
cat -- "$C/ca.pem" "$TMP/root2.pem" "$C/int.pem" >"$W/ca-bundle.pem"
cp -- "$C/server-chain.pem" "$W/chain.pem"
start_tunnel_server "$TMP/srv.log" --target "127.0.0.1:$BE_PORT" --cert "$W/chain.pem" \
	--key "$W/srv.key" --ca "$W/ca-bundle.pem" --allow-any-identity --watch-interval 200ms \
	--drain-timeout 100ms
cat -- "$TMP/new-leaf.pem" "$TMP/int2.pem" >"$W/chain.tmp"
mv -- "$W/chain.tmp" "$W/chain.pem"
p=()
wait_count 10 reload 1 '"trigger":"file_change"' ||
	p+=("the new chain was not loaded: $(grep -F '"event":"reload_failed"' "$TMP/srv.log" || true)")
out=$(timeout -k 2 "$RUN_LIMIT" openssl s_client -connect "127.0.0.1:$SRV_PORT" \
	-servername server.test -CAfile "$TMP/root2.pem" -verify_return_error \
	-cert "$C/client-chain.pem" -cert_chain "$C/int.pem" -key "$C/client.key" </dev/null 2>&1 || true)
[[ $out == *"Verify return code: 0 (ok)"* ]] || p+=("the chain served does not verify to root 2")
verdict "a chain re-parented under a second trusted root is loaded from the watcher" \
	"${p[@]+"${p[@]}"}" -- "$(grep -F '"event":"reload' "$TMP/srv.log" || true)" \
	"openssl s_client said (the chain part and its end):" \
	"$(printf '%s\n' "$out" | grep -E 'depth=|s:|i:|verify|Verify|error|errno' | head -n 20)"

# and a leaf alone, shorter than the chain in service, is still refused though it verifies
# against this bundle (which holds the issuing CA)
cat -- "$C/server.pem" >"$W/chain.pem"
p=()
wait_count 10 reload_failed 1 '"reason":"incomplete_chain"' ||
	p+=("the leaf-only chain file was not refused as incomplete_chain")
[ "$(log_count "$TMP/srv.log" reload '"trigger":"file_change"')" = 1 ] ||
	p+=("the leaf-only chain file was loaded")
stop_bg "$SRV_PID"
verdict "a leaf-only chain file is refused even where the bundle lets the leaf verify" \
	"${p[@]+"${p[@]}"}" -- "$(grep -F '"event":"reload' "$TMP/srv.log" || true)"

finish
