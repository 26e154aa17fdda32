#!/usr/bin/env bash
# The config-file grammar (cli/options.h, docs/config.md) as mtls server really reads it:
#   - a single-quoted allow-uri pattern with a comment after it admits the client it names,
#     and refuses another (a value once kept its quotes, so the rule never matched);
#   - double-quoted paths with a blank and a '#' in them are read as paths;
#   - an unterminated quote, text after a closing quote, a key given twice, a bad [section]
#     name, a process-wide key in a section and a flag with a value it does not take: exit
#     2, one line "FILE:LINE: ...", nothing started (several tunnels in one file:
#     test_tunnel_sections.sh).
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca
F="$W/my certs #1" # a blank and a '#': the file names must be quoted
mkdir -m 700 -- "$F"
TD=spiffe://example.org
"$MTLS" ca init --dir "$D" >/dev/null 2>&1 || _lib_die "(setup) mtls ca init"
issue() { "$MTLS" ca issue --dir "$D" "$@" >/dev/null 2>&1 || _lib_die "(setup) mtls ca issue $*"; }
issue --profile server --dns localhost --ip 127.0.0.1 --out "$F/srv"
issue --profile client --uri "$TD/ns/prod/sa/app" --out "$W/app"
issue --profile client --uri "$TD/ns/dev/sa/app" --out "$W/dev"

start_backend "$W/be.log" --mode echo
cat >"$W/server.conf" <<EOF
# mtls server, written as an operator would
target = 127.0.0.1:$BE_PORT
cert "$F/srv-chain.pem"    # a blank and a '#' in the path
key  = "$F/srv.key"
ca   $D/root.pem
allow-uri 'spiffe://example.org/ns/prod/sa/*'   # every prod service
crl-check-chain no
EOF
start_tunnel_server "$W/srv.log" --config "$W/server.conf" --watch-interval 0

connector() { # NAME : a connector presenting NAME's certificate; sets PORT_<NAME>
	start_bg "$W/con-$1.log" "$MTLS" connector --listen 127.0.0.1:0 --log-format json \
		--server "127.0.0.1:$SRV_PORT" --server-name localhost --cert "$W/$1-chain.pem" \
		--key "$W/$1.key" --ca "$D/root.pem"
	wait_for_line "$W/con-$1.log" '"event":"listening"' "$READY_LIMIT" "$BG_PID" ||
		_lib_die "connector $1 did not start"
	printf -v "PORT_$1" '%s' "$(_daemon_port "$W/con-$1.log" listening)"
}
connector app
connector dev

# exchange PORT TEXT : a line through PORT and back on a new connection ("" if refused)
exchange() {
	local fd line=""
	exec {fd}<>"/dev/tcp/127.0.0.1/$1" || return 0
	printf '%s\n' "$2" >&"$fd"
	IFS= read -r -t 10 line <&"$fd" || true
	exec {fd}>&-
	printf '%s' "$line"
}

p=()
[ "$(exchange "$PORT_app" hello)" = hello ] || p+=("the prod client is not let in: the quotes were kept in the pattern?")
verdict "allow-uri 'spiffe://example.org/ns/prod/sa/*' # comment: the prod client gets through" \
	"${p[@]+"${p[@]}"}" -- "$(grep -v conn_open "$W/srv.log" | tail -n 5)"
p=()
[ -z "$(exchange "$PORT_dev" hello)" ] || p+=("the dev client is let in")
# (the log is written by its own thread: the line may land after the client saw the close)
wait_for_line "$W/srv.log" '"reason":"identity_not_allowed"' "$READY_LIMIT" ||
	p+=("no identity_not_allowed refusal in the log")
verdict "the same rule refuses a client it does not name" "${p[@]+"${p[@]}"}" \
	-- "$(tail -n 5 "$W/srv.log")"

# bad NAME LINE EXPECT CONFIG-LINES : a config of the good one's first 5 lines and
# CONFIG-LINES; mtls server must exit 2 with one line "FILE:LINE: ..." holding EXPECT.
bad() {
	local name=$1 line=$2 expect=$3 p=()
	shift 3
	{
		head -n 5 "$W/server.conf"
		printf '%s\n' "$@"
	} >"$W/bad.conf"
	LAST_CMD="mtls server --config bad.conf ($*)"
	run "$MTLS" server --listen 127.0.0.1:0 --log-format json --config "$W/bad.conf"
	[ "$RC" = 2 ] || p+=("exit status $RC, expected 2")
	[[ $ERR == "mtls server: $W/bad.conf:$line: "*"$expect"* ]] ||
		p+=("stderr is not 'mtls server: $W/bad.conf:$line: ...$expect...'")
	[ "$(count_lines "$ERR" "")" = 1 ] || p+=("stderr is not one line")
	[[ $ERR$OUT != *'"event"'* ]] || p+=("a log line was written: the daemon started")
	report "$name" "${p[@]+"${p[@]}"}"
}
bad "unterminated quote" 6 "unterminated single quote; close it on the same line" \
	"allow-uri 'spiffe://example.org/ns/prod/sa/*"
bad "text after a closing quote" 7 "text after the closing quote; quote the whole value" \
	"# x" "allow-uri \"spiffe://example.org/a\"/b"
bad "a key given twice" 6 "ca given again (first on line 5); give it once" "ca $D/root.pem"
bad "a [section] line with a bad name" 6 "a section name is 1 to 32 letters" \
	"[d b]" "allow-any-identity"
bad "log-level inside a section" 7 "log-level applies to the whole process; set it before the first [section]" \
	"[db]" "log-level debug"
bad "a flag with another value" 6 "allow-any-identity takes true or false" \
	"allow-any-identity maybe"
bad "an unknown escape" 6 "unknown escape '\\d' in double quotes" \
	"allow-uri \"spiffe://example.org/\\d\""

# a FIFO given for the config file: refused at once (open() blocked until a writer came)
mkfifo "$W/fifo.conf"
LAST_CMD="mtls server --config (a FIFO)"
run "$MTLS" server --config "$W/fifo.conf"
p=()
[ "$RC" = 2 ] || p+=("exit status $RC, expected 2 (124: it waited for a writer)")
[[ $ERR == *"not a regular file"* ]] || p+=("the message does not say it is not a regular file")
report "a FIFO for --config: refused at once, not waited on" "${p[@]+"${p[@]}"}"
finish
