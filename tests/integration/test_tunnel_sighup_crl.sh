#!/usr/bin/env bash
# SIGHUP with --crl and --crl-url in the --config file: the re-read options' --crl list is
# pointed at the daemon's list of CRL files (--crl and the fetched --crl-cache); it was
# freed as it stood, so the next SIGHUP, or the stop after one, ended the daemon in
# free(): invalid pointer. Two SIGHUPs reload, and the daemon stops with status 0.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

command -v python3 >/dev/null || _lib_die "python3 not found in PATH (a free port)"

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca
"$MTLS" ca init --dir "$D" >/dev/null 2>&1 || _lib_die "(setup) mtls ca init"
"$MTLS" ca issue --dir "$D" --profile server --dns localhost --ip 127.0.0.1 --out "$W/srv" \
	>/dev/null 2>&1 || _lib_die "(setup) the server certificate"
cp -- "$D/crl.pem" "$W/cache.pem"
# a port nobody listens on: the fetches fail, the cached CRL stays in use
FREE=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

start_backend "$W/be.log" --mode echo
cat >"$W/server.conf" <<EOF
target 127.0.0.1:$BE_PORT
cert $W/srv-chain.pem
key $W/srv.key
ca $D/root.pem
allow-any-identity
crl $D/crl.pem
crl-url http://127.0.0.1:$FREE/crl
crl-cache $W/cache.pem
EOF
start_tunnel_server "$W/srv.log" --config "$W/server.conf" --watch-interval 0

# hup : SIGHUP the server and wait for its reload (or reload_failed) line
reloads() { echo $(($(log_count "$W/srv.log" reload) + $(log_count "$W/srv.log" reload_failed))); }
hup() {
	local before
	before=$(reloads)
	kill -HUP "$SRV_REAL" 2>/dev/null || return 0
	for _ in $(seq 1 200); do
		[ "$(reloads)" -gt "$before" ] && return 0
		kill -0 "$SRV_REAL" 2>/dev/null || return 0
		sleep 0.05
	done
}

hup
hup
p=()
[ "$(log_count "$W/srv.log" reload '"trigger":"SIGHUP"')" -eq 2 ] ||
	p+=("not two reloads after two SIGHUPs")
kill -0 "$SRV_REAL" 2>/dev/null || p+=("the server died")
kill -TERM "$SRV_REAL" 2>/dev/null || true
wait_exit "$SRV_PID" 20
[ "$EXIT_RC" = 0 ] || p+=("the server's exit status is $EXIT_RC, not 0")
verdict "--crl and --crl-url in the config: two SIGHUPs reload, the server stops cleanly" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 3 "$W/srv.log")"
finish
