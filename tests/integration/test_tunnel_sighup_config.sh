#!/usr/bin/env bash
# SIGHUP re-reads the --config file as well as the files: new allow rules take effect for new
# handshakes and re-judge live connections (a client no longer allowed is closed); options
# only a restart applies are kept and named in a warning; a config file that no longer
# parses keeps everything in service.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca
TD=spiffe://example.org
"$MTLS" ca init --dir "$D" >/dev/null 2>&1 || _lib_die "(setup) mtls ca init"
issue() { "$MTLS" ca issue --dir "$D" "$@" >/dev/null 2>&1 || _lib_die "(setup) mtls ca issue $*"; }
issue --profile server --dns localhost --ip 127.0.0.1 --out "$W/srv"
issue --profile client --uri "$TD/a" --out "$W/a"
issue --profile client --uri "$TD/b" --out "$W/b"

start_backend "$W/be.log" --mode echo
# config URI : the server's config file, allowing URI
config() {
	cat >"$W/server.conf" <<EOF
target 127.0.0.1:$BE_PORT
cert $W/srv-chain.pem
key $W/srv.key
ca $D/root.pem
allow-uri $1
${2:-}
EOF
}
config "$TD/a"
start_tunnel_server "$W/srv.log" --config "$W/server.conf" --watch-interval 0
connector() { # NAME : a connector presenting NAME's certificate; sets PORT_<NAME>
	start_bg "$W/con-$1.log" "$MTLS" connector --listen 127.0.0.1:0 --log-format json \
		--server "127.0.0.1:$SRV_PORT" --server-name localhost --cert "$W/$1-chain.pem" \
		--key "$W/$1.key" --ca "$D/root.pem"
	wait_for_line "$W/con-$1.log" '"event":"listening"' "$READY_LIMIT" "$BG_PID" ||
		_lib_die "connector $1 did not start"
	printf -v "PORT_$1" '%s' "$(_daemon_port "$W/con-$1.log" listening)"
}
connector a
connector b

# exchange PORT TEXT : a line through PORT and back on a new connection ("" if refused)
exchange() {
	local fd line=""
	exec {fd}<>"/dev/tcp/127.0.0.1/$1" || return 0
	printf '%s\n' "$2" >&"$fd"
	IFS= read -r -t 10 line <&"$fd" || true
	exec {fd}>&-
	printf '%s' "$line"
}
# hup : SIGHUP the server and wait for its reload (or reload_failed) line
reloads() { echo $(($(log_count "$W/srv.log" reload) + $(log_count "$W/srv.log" reload_failed))); }
hup() {
	local before
	before=$(reloads)
	kill -HUP "$SRV_REAL"
	for _ in $(seq 1 200); do
		[ "$(reloads)" -gt "$before" ] && return 0
		sleep 0.05
	done
}

p=()
[ "$(exchange "$PORT_a" one)" = one ] || p+=("a is not let in")
[ -z "$(exchange "$PORT_b" two)" ] || p+=("b is let in")
verdict "the config file's allow rule: a in, b out" "${p[@]+"${p[@]}"}"

# a live connection of a, then the rule changes to b
exec {live}<>"/dev/tcp/127.0.0.1/$PORT_a"
printf 'before\n' >&"$live"
IFS= read -r -t 10 got <&"$live" || got=""
[ "$got" = before ] || _lib_die "(setup) the live connection of a does not echo"
config "$TD/b"
hup
p=()
[ "$(log_count "$W/srv.log" reload '"trigger":"SIGHUP"')" -ge 1 ] || p+=("no reload after SIGHUP: $(tail -n 2 "$W/srv.log")")
[ "$(exchange "$PORT_b" three)" = three ] || p+=("b is not let in after the new rule")
[ -z "$(exchange "$PORT_a" four)" ] || p+=("a is still let in")
closed=""
for _ in $(seq 1 100); do
	if ! IFS= read -r -t 0.1 got <&"$live"; then
		# EOF (or nothing yet): tell them apart by the log
		grep -q '"why":"no_longer_allowed"' "$W/srv.log" && closed=1 && break
	fi
done
exec {live}>&-
[ -n "$closed" ] || p+=("a's live connection was not closed as no_longer_allowed")
verdict "SIGHUP re-reads the config file: b in, a out, a's live connection closed" "${p[@]+"${p[@]}"}" \
	-- "$(grep -v conn_open "$W/srv.log" | tail -n 5)"

# an option only a restart applies: kept, and named
config "$TD/b" "workers 7"
hup
p=()
grep -q '"event":"restart_needed".*--workers' "$W/srv.log" || p+=("no restart_needed warning naming --workers")
[ "$(exchange "$PORT_b" five)" = five ] || p+=("b is not let in any more")
verdict "an option that needs a restart is kept and named in a warning; the rest reloads" "${p[@]+"${p[@]}"}"

# a config file that no longer parses: everything stays
printf 'allow-uri %s\nno-such-option 1\n' "$TD/a" >"$W/server.conf"
hup
p=()
grep -q '"event":"reload_failed".*"reason":"config"' "$W/srv.log" || p+=("no reload_failed with reason config")
[ "$(exchange "$PORT_b" six)" = six ] || p+=("b is not let in any more")
[ -z "$(exchange "$PORT_a" seven)" ] || p+=("a is let in: the broken file was half applied")
kill -0 "$SRV_PID" 2>/dev/null || p+=("the server died")
verdict "a config file that does not parse: reload refused, the old rules stay" "${p[@]+"${p[@]}"}"
finish
