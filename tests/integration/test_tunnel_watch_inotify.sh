#!/usr/bin/env bash
# The file watcher is libev's ev_stat (inotify), not a polling loop: with --watch-interval 1h
# (the fallback stat interval only) a certificate chain replaced by rename, and one behind a
# symbolic link swapped to another directory (as Kubernetes secret volumes update), and one
# under a directory link swapped to a new release (the old one kept), are each
# reloaded well before any poll could have seen them. No timing threshold: the reload line
# is awaited with a generous bound that is still far below the hour.
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

# a renewed server certificate for the same key, from the same intermediate
cat >"$TMP/srv.ext" <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:server.test, DNS:localhost, IP:127.0.0.1
EOF
run openssl req -new -key "$W/srv.key" -subj /CN=server.test -out "$TMP/new.csr"
[ "$RC" = 0 ] || _lib_die "openssl req failed: $ERR"
# new_chain FILE : a new leaf (its own serial) followed by the intermediate; prints the serial
new_chain() {
	local serial
	serial=$(openssl rand -hex 12 | tr 'a-f' 'A-F')
	serial=1${serial:1}
	openssl x509 -req -in "$TMP/new.csr" -CA "$C/int.pem" -CAkey "$C/int.key" \
		-set_serial "0x$serial" -days 30 -extfile "$TMP/srv.ext" -out "$1.leaf" 2>/dev/null ||
		_lib_die "openssl x509 -req failed"
	cat -- "$1.leaf" "$C/int.pem" >"$1"
	echo "$serial"
}

# served PORT : the serial of the certificate the server presents, if its chain verifies
served() {
	local out
	out=$(timeout -k 2 "$RUN_LIMIT" openssl s_client -connect "127.0.0.1:$1" \
		-servername server.test -CAfile "$C/ca.pem" -verify_return_error \
		-cert "$C/client-chain.pem" -cert_chain "$C/int.pem" -key "$C/client.key" \
		</dev/null 2>&1 || true)
	if [[ $out == *"Verify return code: 0 (ok)"* ]]; then
		printf '%s\n' "$out" >"$TMP/served.txt"
		out=$(openssl x509 -in "$TMP/served.txt" -noout -serial 2>/dev/null || true)
		echo "${out#serial=}"
	else
		echo FAILED
	fi
}

# wait_reload LOG SECONDS : until LOG has a reload line of the file watcher
wait_reload() {
	local n=$(($2 * 10))
	while [ "$n" -gt 0 ]; do
		[ "$(log_count "$1" reload '"trigger":"file_change"')" -ge 1 ] && return 0
		sleep 0.1
		n=$((n - 1))
	done
	return 1
}

start_backend "$TMP/be.log" --mode echo

echo "# 1. the chain replaced by rename (a new inode at the path)"
start_tunnel_server "$TMP/srv.log" --target "127.0.0.1:$BE_PORT" --cert "$W/chain.pem" \
	--key "$W/srv.key" --ca "$C/ca.pem" --allow-any-identity --watch-interval 1h \
	--drain-timeout 100ms
NEW=$(new_chain "$W/chain.next")
mv -f -- "$W/chain.next" "$W/chain.pem"
p=()
wait_reload "$TMP/srv.log" 30 || p+=("no reload within 30 s of the rename (--watch-interval 1h)")
s=$(served "$SRV_PORT")
[ "$s" = "$NEW" ] || p+=("the server presents '$s', expected the new $NEW")
verdict "a chain replaced by rename is reloaded at once, with --watch-interval 1h" \
	"${p[@]+"${p[@]}"}" -- "$(grep -F '"event":"reload' "$TMP/srv.log" || true)"
stop_bg "$SRV_PID"

echo "# 2. the chain behind a symbolic link swapped to another directory"
L=$TMP/secret
mkdir -p "$L/v1" "$L/v2"
cp -- "$C/server-chain.pem" "$L/v1/chain.pem"
ln -s v1 "$L/..data"
ln -s ..data/chain.pem "$L/chain.pem"
start_tunnel_server "$TMP/srv2.log" --target "127.0.0.1:$BE_PORT" --cert "$L/chain.pem" \
	--key "$W/srv.key" --ca "$C/ca.pem" --allow-any-identity --watch-interval 1h \
	--drain-timeout 100ms
NEW=$(new_chain "$L/v2/chain.pem")
ln -s v2 "$L/..data_tmp"
mv -T -- "$L/..data_tmp" "$L/..data"
rm -rf -- "$L/v1"
p=()
wait_reload "$TMP/srv2.log" 30 || p+=("no reload within 30 s of the link swap (--watch-interval 1h)")
s=$(served "$SRV_PORT")
[ "$s" = "$NEW" ] || p+=("the server presents '$s', expected the new $NEW")
verdict "a chain behind a swapped symbolic link is reloaded at once, with --watch-interval 1h" \
	"${p[@]+"${p[@]}"}" -- "$(grep -F '"event":"reload' "$TMP/srv2.log" || true)"
stop_bg "$SRV_PID"

echo "# 3. a directory link swapped to a new release, the old one kept"
# /etc/x/current -> releases/1, the daemon given current/chain.pem: the deploy points current
# at releases/2 and keeps releases/1 for a rollback (nothing changes in the old files)
R=$TMP/rel
mkdir -p "$R/releases/1" "$R/releases/2"
cp -- "$C/server-chain.pem" "$R/releases/1/chain.pem"
ln -s releases/1 "$R/current"
start_tunnel_server "$TMP/srv3.log" --target "127.0.0.1:$BE_PORT" --cert "$R/current/chain.pem" \
	--key "$W/srv.key" --ca "$C/ca.pem" --allow-any-identity --watch-interval 1h \
	--drain-timeout 100ms
NEW=$(new_chain "$R/releases/2/chain.pem")
ln -s releases/2 "$R/current.tmp"
mv -T -- "$R/current.tmp" "$R/current"
p=()
wait_reload "$TMP/srv3.log" 30 || p+=("no reload within 30 s of the directory link swap (--watch-interval 1h)")
s=$(served "$SRV_PORT")
[ "$s" = "$NEW" ] || p+=("the server presents '$s', expected the new $NEW")
verdict "a directory link swapped to a new release (the old one kept) is reloaded at once" \
	"${p[@]+"${p[@]}"}" -- "$(grep -F '"event":"reload' "$TMP/srv3.log" || true)"
stop_bg "$SRV_PID"

echo "# 4. SIGHUP re-reads --config, which names another chain file: that one is watched"
mkdir -p "$TMP/c4"
cp -- "$C/server-chain.pem" "$TMP/c4/a.pem"
cp -- "$C/server-chain.pem" "$TMP/c4/b.pem"
conf4() {
	printf 'target 127.0.0.1:%s\ncert %s\nkey %s\nca %s\nallow-any-identity\n' \
		"$BE_PORT" "$1" "$W/srv.key" "$C/ca.pem" >"$TMP/c4/server.conf"
}
conf4 "$TMP/c4/a.pem"
start_tunnel_server "$TMP/srv4.log" --config "$TMP/c4/server.conf" --watch-interval 1h \
	--drain-timeout 100ms
conf4 "$TMP/c4/b.pem"
kill -HUP "$SRV_REAL"
wait_for_line "$TMP/srv4.log" '"event":"reload".*"trigger":"SIGHUP"' 20 ||
	_lib_die "no SIGHUP reload: $(cat -- "$TMP/srv4.log")"
NEW=$(new_chain "$TMP/c4/b.next")
mv -f -- "$TMP/c4/b.next" "$TMP/c4/b.pem"
p=()
wait_reload "$TMP/srv4.log" 30 || p+=("no reload within 30 s of replacing the chain --config names now")
s=$(served "$SRV_PORT")
[ "$s" = "$NEW" ] || p+=("the server presents '$s', expected the new $NEW")
verdict "after SIGHUP, the chain file the new --config names is watched" \
	"${p[@]+"${p[@]}"}" -- "$(grep -F '"event":"reload' "$TMP/srv4.log" || true)"
stop_bg "$SRV_PID"

echo "# 5. the chain removed, then (a moment later) written anew at the same path"
mkdir -p "$TMP/c5"
cp -- "$C/server-chain.pem" "$TMP/c5/chain.pem"
start_tunnel_server "$TMP/srv5.log" --target "127.0.0.1:$BE_PORT" --cert "$TMP/c5/chain.pem" \
	--key "$W/srv.key" --ca "$C/ca.pem" --allow-any-identity --watch-interval 1h \
	--drain-timeout 100ms
NEW=$(new_chain "$TMP/c5/next.pem")
rm -f -- "$TMP/c5/chain.pem"
sleep 1.5 # longer than the settle time: the reload without the file fails (the old stays)
cp -- "$TMP/c5/next.pem" "$TMP/c5/chain.pem"
p=()
n=0
while [ "$(log_count "$TMP/srv5.log" reload '"trigger":"file_change"')" -lt 1 ] && [ "$n" -lt 300 ]; do
	sleep 0.1
	n=$((n + 1))
done
s=$(served "$SRV_PORT")
[ "$s" = "$NEW" ] || p+=("the server presents '$s', expected the new $NEW")
kill -0 "$SRV_PID" 2>/dev/null || p+=("the server exited")
verdict "a chain removed, then written anew at its path, is loaded (the server kept serving)" \
	"${p[@]+"${p[@]}"}" -- "$(grep -F '"event":"reload' "$TMP/srv5.log" || true)"
stop_bg "$SRV_PID"

echo "# 6. rewritten in place at the same size within the second the watchers started"
# libev compares stat data in whole seconds: such a change is invisible to ev_stat, and only
# a look of the daemon's own (nanoseconds) after it starts finds it (seen as a rotation right
# after start missed under ASan in a CI rehearsal: test_tunnel_secrets).
mkdir -p "$TMP/c6"
new_chain "$TMP/c6/first.pem" >/dev/null
size=$(stat -c %s "$TMP/c6/first.pem")
NEW=
for _ in $(seq 1 40); do
	NEW=$(new_chain "$TMP/c6/next.pem")
	[ "$(stat -c %s "$TMP/c6/next.pem")" = "$size" ] && break
	NEW=
done
[ -n "$NEW" ] || _lib_die "(setup) no new chain of the same size in 40 tries"
same_second=0
for try in 1 2 3; do
	cp -- "$TMP/c6/first.pem" "$TMP/c6/chain.pem"
	# start at the beginning of a second, rewrite 0.3 s after "listening": one second
	while [ "$((10#$(date +%N) / 100000000))" -ne 0 ]; do sleep 0.01; done
	s0=$(date +%s)
	start_tunnel_server "$TMP/srv6.log" --target "127.0.0.1:$BE_PORT" --cert "$TMP/c6/chain.pem" \
		--key "$W/srv.key" --ca "$C/ca.pem" --allow-any-identity --watch-interval 1h \
		--drain-timeout 100ms
	sleep 0.3
	cat -- "$TMP/c6/next.pem" >"$TMP/c6/chain.pem"
	[ "$(date +%s)" = "$s0" ] && same_second=1 && break
	stop_bg "$SRV_PID" # the start took the rest of the second: again
done
p=()
wait_reload "$TMP/srv6.log" 30 || p+=("no reload within 30 s of the rewrite (--watch-interval 1h)")
s=$(served "$SRV_PORT")
[ "$s" = "$NEW" ] || p+=("the server presents '$s', expected the new $NEW")
[ "$same_second" = 1 ] || printf 'note  the start never fitted in one second (3 tries): case 6 proves less\n'
verdict "a same-size rewrite in the second the watchers started is loaded" \
	"${p[@]+"${p[@]}"}" -- "$(grep -F '"event":"reload' "$TMP/srv6.log" || true)"
stop_bg "$SRV_PID"

finish
