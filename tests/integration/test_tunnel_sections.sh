#!/usr/bin/env bash
# Several tunnels in one process: `mtls server --config FILE` / `mtls connector --config FILE`
# run every [section] of FILE as its own tunnel (docs: the sections spec), black-box:
#   1. two server sections [db] and [api]: one process, each its own listen port, backend
#      and allow rules; a refusal is logged with "tunnel":"<the section>"; the keys before
#      the first section are defaults for both (ca, cert, key, crl-check-chain); a flag
#      after --config overrides every section (--workers)
#   2. each section's own /metrics, counting only its own handshakes
#   3. grammar errors (bad name, a section twice, a process-wide key or an unknown key in a
#      section, a key twice in one section), a section without target, two sections on one
#      listen or metrics port, socket activation: exit 2, one line, nothing started
#   5. list keys: a section's allow-uri replaces the default list as a whole
#   6. SIGHUP: each section reloads by itself; a live connection of the other one keeps
#      working; an error in one section's lines (a quote, an unknown key) fails that
#      section's reload only; a section added is not started (restart_needed), a section
#      removed fails its reload and keeps running
#   7. a connector with two sections: each its own certificate and server, both carry traffic
#   8. SIGTERM: every section drains (its own drain-timeout), the process exits 0 once the
#      last one is done (a live connection holds one section draining)
#   and: a certificate file changed on disk reloads the section that uses it; the logfmt
#   form of the field (tunnel=NAME); SIGUSR1 reopens the one log file once;
#   one READY=1 / STOPPING=1 (NOTIFY_SOCKET) for the process; no "tunnel" field without
#   sections.
set -euo pipefail
BG_LIMIT=${BG_LIMIT:-150} # the backends and the server live through most of the script
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
# three client identities: x (the default list), y ([api] at first), z ([api] after a reload)
for c in x y z; do
	issue --profile client --uri "$TD/$c-svc" --out "$W/$c"
done

start_backend "$W/be-db.log" --mode echo
BE_DB=$BE_PORT
start_backend "$W/be-api.log" --mode echo
BE_API=$BE_PORT

# xverdict ID NAME PROBLEMS... -- DETAILS... : verdict (ID: the review finding the case
# guards, "" for none; test_tunnel_sections_review.sh has the same ids)
xverdict() {
	local id=$1 name=$2
	shift 2
	verdict "$name${id:+ [$id]}" "$@"
}

# ------------------------------------------------------------------------------------------
# Helpers

# sec_line LOG EVENT NAME : the first EVENT line of section NAME ("tunnel" right after
# "event", as the spec writes it)
sec_line() {
	{ grep -m1 -F "\"event\":\"$2\",\"tunnel\":\"$3\"" "$1" 2>/dev/null || true; }
}
# sec_port LOG EVENT NAME : the port in the "address" of that line
sec_port() {
	sec_line "$@" | sed -n 's/.*"address":"[^"]*:\([0-9][0-9]*\)".*/\1/p'
}
# sec_field LOG EVENT NAME FIELD : a number field of that line
sec_field() {
	sec_line "$1" "$2" "$3" | sed -n "s/.*\"$4\":\\([0-9][0-9]*\\).*/\\1/p"
}
# sec_count LOG ERE : how many lines of LOG match ERE
sec_count() {
	local n
	n=$(grep -cE -- "$2" "$1" 2>/dev/null || true)
	echo "${n:-0}"
}
# wait_count LOG ERE N SECONDS : until N lines of LOG match ERE (1 on timeout)
wait_count() {
	local n=$(($4 * 20))
	while [ "$n" -gt 0 ]; do
		[ "$(sec_count "$1" "$2")" -ge "$3" ] && return 0
		sleep 0.05
		n=$((n - 1))
	done
	return 1
}
# be_count LOG : connections that reached a backend (it prints "conn open" before it
# echoes, so once the echo is back the line is in the file)
be_count() { sec_count "$1" '^conn open$'; }

# exchange PORT TEXT : a line through PORT and back on a new connection ("" if refused)
exchange() {
	local fd line=""
	exec {fd}<>"/dev/tcp/127.0.0.1/$1" || return 0
	printf '%s\n' "$2" >&"$fd"
	IFS= read -r -t 10 line <&"$fd" 2>/dev/null || true
	exec {fd}>&-
	printf '%s' "$line"
}

# client NAME ID PORT : a one-tunnel connector presenting ID's certificate to the server
# port PORT; sets CLIENT_PORT
client() {
	start_bg "$W/con-$1.log" "$MTLS" connector --listen 127.0.0.1:0 --log-format json \
		--workers 1 --server "127.0.0.1:$3" --server-name localhost \
		--cert "$W/$2-chain.pem" --key "$W/$2.key" --ca "$D/root.pem"
	wait_for_line "$W/con-$1.log" '"event":"listening"' "$READY_LIMIT" "$BG_PID" ||
		_lib_die "(setup) connector $1 did not start: $(cat -- "$W/con-$1.log")"
	CLIENT_PORT=$(_daemon_port "$W/con-$1.log" listening)
}

# refused_in LOG NAME ID N : wait for the Nth identity_not_allowed refusal of ID's certificate
# in a line of section NAME
refused_in() {
	wait_count "$1" "\"event\":\"handshake_refused\",\"tunnel\":\"$2\".*\"reason\":\"identity_not_allowed\".*$TD/$3-svc" \
		"$4" "$READY_LIMIT"
}

# ------------------------------------------------------------------------------------------
echo "# 3, 4. errors in a sectioned file: exit 2, one line, nothing started"

# two_sections DB-EXTRA API-EXTRA : a two-section server config. Lines 1-5 defaults, 6 [db],
# 7-9 its keys, DB-EXTRA at 10 (then [api] at 11, API-EXTRA at 15), else [api] at 10 and
# API-EXTRA at 14. DB_LISTEN and API_LISTEN (default 127.0.0.1:0) are the listen addresses.
two_sections() {
	printf '%s\n' "log-format json" "ca $D/root.pem" "cert $W/srv-chain.pem" \
		"key $W/srv.key" "crl-check-chain no" \
		"[db]" "listen ${DB_LISTEN:-127.0.0.1:0}" "target 127.0.0.1:$BE_DB" "allow-uri $TD/x-svc"
	[ -z "$1" ] || printf '%s\n' "$1"
	printf '%s\n' "[api]" "listen ${API_LISTEN:-127.0.0.1:0}" "target 127.0.0.1:$BE_API" \
		"allow-uri $TD/y-svc"
	[ -z "$2" ] || printf '%s\n' "$2"
}

# refused NAME FILE PREFIX [TEXT...] : mtls server --config FILE must exit 2 with one line on
# stderr starting with "mtls server: PREFIX" and holding every TEXT, and start nothing (XF:
# the id of the review finding the case guards)
refused() {
	local name=$1 file=$2 prefix=$3 t p=()
	shift 3
	LAST_CMD="mtls server --config $file"
	run "$MTLS" server --config "$file"
	[ "$RC" = 2 ] || p+=("exit status $RC, expected 2")
	[[ $ERR == "mtls server: $prefix"* ]] || p+=("stderr does not start with 'mtls server: $prefix'")
	for t in "$@"; do
		[[ $ERR == *"$t"* ]] || p+=("stderr does not say '$t'")
	done
	[ "$(count_lines "$ERR" "")" = 1 ] || p+=("stderr is not one line")
	[[ $ERR$OUT != *'"event"'* && $ERR$OUT != *'event='* ]] ||
		p+=("a log line was written: the daemon started")
	xverdict "${XF:-}" "$name" "${p[@]+"${p[@]}"}" -- "last command: $LAST_CMD" \
		"exit status: $RC" "stdout:" "$OUT" "stderr:" "$ERR"
}

B=$W/bad.conf
for name in -db .db _db '' 'd b' 'd/b' 'db!' "a23456789012345678901234567890123"; do
	two_sections "" "[$name]" >"$B"
	refused "bad section name [$name]: refused at its line" "$B" "$B:14: " "section name"
done
two_sections "" "[db" >"$B"
refused "a section line without its ']': refused at its line" "$B" "$B:14: "
two_sections "" "[api2] listen 127.0.0.1:0" >"$B"
refused "text (not a comment) after a section's ']': refused at its line" "$B" "$B:14: "

two_sections "" "[db]" >"$B"
refused "a section given twice: refused, naming the first line" "$B" "$B:14: " \
	"section [db] given again (first on line 6)"

for key in "log-level debug" "log-format json" "log-file $W/section.log" "user nobody"; do
	two_sections "" "$key" >"$B"
	refused "'${key%% *}' in a section: a process-wide key, refused" "$B" "$B:14: " \
		"${key%% *} applies to the whole process; set it before the first [section]"
done
[ ! -e "$W/section.log" ] || fail "log-file in a section: the log file was created" \
	"$(cat -- "$W/section.log")"

two_sections "" "no-such-key 1" >"$B"
refused "an unknown key in the last section: refused at its line" "$B" "$B:14: " \
	"unknown key 'no-such-key'"
two_sections "no-such-key 1" "" >"$B"
refused "an unknown key in the first section: refused at its line" "$B" "$B:10: " \
	"unknown key 'no-such-key'"
two_sections "" "listen 127.0.0.1:0" >"$B"
refused "a key twice in one section: refused as without sections" "$B" "$B:14: " \
	"listen given again (first on line 11)"

# a section without target: the one line names the section
cat >"$B" <<EOF
log-format json
ca $D/root.pem
cert $W/srv-chain.pem
key $W/srv.key
[db]
listen 127.0.0.1:0
target 127.0.0.1:$BE_DB
allow-any-identity
[api]
listen 127.0.0.1:0
allow-any-identity
EOF
XF=check-first
refused "a section without target: refused, naming [api]" "$B" "[api] " "target"

# every section is checked before any socket is opened: [db] on a busy port (a backend's)
# comes first, so a daemon that binds [db] before it checks [api] fails on the port instead
sed -i "0,/^listen 127.0.0.1:0\$/s//listen 127.0.0.1:$BE_API/" "$B"
refused "[api]'s error is found before [db] opens a socket (its port is taken)" "$B" "[api] " \
	"target"
XF=

# the longest name, of every kind of character, and a comment after the ']' are accepted:
# the refusal is the [api] check's, past the grammar
L=9a.b_c-D012345678901234567890123
[ ${#L} = 32 ] || _lib_die "(setup) the long name is ${#L} characters"
cat >"$B" <<EOF
log-format json
ca $D/root.pem
cert $W/srv-chain.pem
key $W/srv.key
[$L]   # a comment after the name
listen 127.0.0.1:0
target 127.0.0.1:$BE_DB
allow-any-identity
	[api]	# blanks around
listen 127.0.0.1:0
allow-any-identity
EOF
LAST_CMD="mtls server --config $B (a 32-character name)"
run "$MTLS" server --config "$B"
p=()
[ "$RC" = 2 ] || p+=("exit status $RC, expected 2")
has_line "$ERR" "mtls server: [api] " || p+=("no line 'mtls server: [api] ...'")
[[ $ERR != *"section name"* ]] || p+=("the name or the comment after it is refused")
report "a 32-character name, a comment after ']': accepted (the error is [api]'s target)" \
	"${p[@]+"${p[@]}"}"

# two sections on one port other than 0: the port of a running backend, so that a daemon
# that binds anyway fails with another message
DB_LISTEN=127.0.0.1:$BE_DB API_LISTEN=127.0.0.1:$BE_DB two_sections "" "" >"$B"
refused "two sections listening on one port: refused, naming both" "$B" "sections " \
	"[db]" "[api]" "both" "127.0.0.1:$BE_DB"
two_sections "metrics 127.0.0.1:$BE_API" "metrics 127.0.0.1:$BE_API" >"$B"
refused "two sections with one metrics port: refused, naming both" "$B" "sections " \
	"[db]" "[api]" "both" "127.0.0.1:$BE_API"

# socket activation (systemd passes LISTEN_FDS) with a sectioned file: refused, exit 2
if command -v systemd-socket-activate >/dev/null && command -v python3 >/dev/null; then
	two_sections "" "" >"$B"
	start_bg "$W/act.log" systemd-socket-activate -l "$W/act.sock" \
		"$MTLS" server --config "$B" --workers 1
	ACT_BG=$BG_PID
	wait_for_line "$W/act.log" '^Listening on ' "$READY_LIMIT" "$ACT_BG" ||
		_lib_die "(setup) systemd-socket-activate did not listen: $(cat -- "$W/act.log")"
	# the daemon is started at the first connection
	python3 -c 'import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])' \
		"$W/act.sock" 2>/dev/null || true
	wait_exit "$ACT_BG" 20
	p=()
	[ "$EXIT_RC" = 2 ] || p+=("exit status $EXIT_RC, expected 2")
	line=$(grep '^mtls server: ' "$W/act.log" || true)
	[ "$(count_lines "$line" 'mtls server: ')" = 1 ] || p+=("not one 'mtls server:' line")
	[[ $line == *section* ]] || p+=("the refusal does not say it is about sections: '$line'")
	! grep -qF '"event":"listening"' "$W/act.log" || p+=("it listened anyway")
	verdict "socket activation with a sectioned file: refused, exit 2" "${p[@]+"${p[@]}"}" \
		-- "$(tail -n 5 "$W/act.log")"
else
	echo "skip  socket activation (systemd-socket-activate or python3 missing)"
fi

# ------------------------------------------------------------------------------------------
echo "# 1, 2, 5. one process, two server sections"

# server_conf API-ALLOW [DB-EXTRA] [API-EXTRA] : the server's config file. The default list
# allows x; [db] keeps it, [api] replaces it. cert/key/ca/crl-check-chain are defaults only;
# drain-timeout a default that [db] replaces; workers a default the command line overrides.
server_conf() {
	cat >"$W/server.conf" <<EOF
# two tunnels in one process
log-format json
ca $D/root.pem
cert $W/srv-chain.pem
key = $W/srv.key
crl-check-chain no
allow-uri $TD/x-svc   # the default list
drain-timeout 40s
workers 3

[db]   # the database
listen 127.0.0.1:0
target 127.0.0.1:$BE_DB
metrics 127.0.0.1:0
drain-timeout 50s
${2:-}

[api]
listen 127.0.0.1:0
target 127.0.0.1:$BE_API
metrics = 127.0.0.1:0
allow-uri $1
${3:-}
EOF
}
server_conf "$TD/y-svc"
S=$W/srv.log
start_bg "$S" "$MTLS" server --config "$W/server.conf" --workers 2 --watch-interval 0
SRV_PID=$BG_PID
for s in db api; do
	wait_for_line "$S" "\"event\":\"listening\",\"tunnel\":\"$s\"" "$READY_LIMIT" "$SRV_PID" || {
		echo "mtls server with sections [db] [api] did not log a listening line for [$s]:" >&2
		cat -- "$S" >&2
		exit 1
	}
done
DB_PORT=$(sec_port "$S" listening db)
API_PORT=$(sec_port "$S" listening api)
p=()
pid_db=$(sec_field "$S" listening db pid)
pid_api=$(sec_field "$S" listening api pid)
SRV_REAL=$pid_db
[ -n "$DB_PORT" ] && [ -n "$API_PORT" ] || p+=("no address in a listening line")
[ "$DB_PORT" != "$API_PORT" ] || p+=("both sections report port $DB_PORT")
[ -n "$pid_db" ] && [ "$pid_db" = "$pid_api" ] || p+=("two pids: [db] $pid_db, [api] $pid_api")
kill -0 "$pid_db" 2>/dev/null || p+=("pid $pid_db is not running")
[ "$(sec_count "$S" '"event":"listening"')" = 2 ] || p+=("not two listening lines")
[ "$(sec_field "$S" listening db workers)" = 2 ] && [ "$(sec_field "$S" listening api workers)" = 2 ] ||
	p+=("--workers 2 after --config is not every section's (the file says 3)")
verdict "[db] and [api] listen on their own ports, in one process; a flag after --config applies to both" \
	"${p[@]+"${p[@]}"}" -- "$(grep -F '"event":"listening"' "$S")"

client xdb x "$DB_PORT"
PORT_xdb=$CLIENT_PORT
client ydb y "$DB_PORT"
PORT_ydb=$CLIENT_PORT
client xapi x "$API_PORT"
PORT_xapi=$CLIENT_PORT
client yapi y "$API_PORT"
PORT_yapi=$CLIENT_PORT
client zapi z "$API_PORT"
PORT_zapi=$CLIENT_PORT
client zdb z "$DB_PORT"
PORT_zdb=$CLIENT_PORT

# through PORT, a line must come back from BACKEND-LOG's backend and not OTHER-LOG's
routed() { # PORT TEXT BACKEND-LOG OTHER-LOG : "" if so, else what went wrong
	local b o got
	b=$(be_count "$3")
	o=$(be_count "$4")
	got=$(exchange "$1" "$2")
	[ "$got" = "$2" ] || {
		echo "'$2' came back as '$got'"
		return 0
	}
	[ "$(be_count "$3")" -gt "$b" ] || echo "'$2' did not reach its section's backend"
	[ "$(be_count "$4")" = "$o" ] || echo "'$2' reached the other section's backend"
}

vcheck "[db] (the default allow-uri x) lets x in, to the db backend" \
	"$(routed "$PORT_xdb" x-to-db "$W/be-db.log" "$W/be-api.log")"
vcheck "[api] (its own allow-uri y) lets y in, to the api backend" \
	"$(routed "$PORT_yapi" y-to-api "$W/be-api.log" "$W/be-db.log")"

p=()
[ -z "$(exchange "$PORT_ydb" y-to-db)" ] || p+=("y is let in by [db]")
refused_in "$S" db y 1 || p+=("no identity_not_allowed line with \"tunnel\":\"db\" for y")
verdict "[db] refuses y (identity_not_allowed, logged with \"tunnel\":\"db\")" \
	"${p[@]+"${p[@]}"}" -- "$(grep -F handshake_refused "$S" | tail -n 3)"
p=()
[ -z "$(exchange "$PORT_xapi" x-to-api)" ] || p+=("x is let in by [api]: its allow-uri was merged with the default, not put in its place")
refused_in "$S" api x 1 || p+=("no identity_not_allowed line with \"tunnel\":\"api\" for x")
verdict "[api]'s allow-uri replaces the default list: x refused there" \
	"${p[@]+"${p[@]}"}" -- "$(grep -F handshake_refused "$S" | tail -n 3)"
p=()
[ "$(sec_count "$S" '"event":"handshake_refused","tunnel":"db".*x-svc')" = 0 ] ||
	p+=("[db] refused x")
[ "$(sec_count "$S" '"event":"handshake_refused","tunnel":"api".*y-svc')" = 0 ] ||
	p+=("[api] refused y")
# (one copy of the log for both counts: every refusal is in it, each was waited for)
cp -- "$S" "$W/srv.snap"
[ "$(sec_count "$W/srv.snap" '"event":"handshake_refused",')" = \
	"$(sec_count "$W/srv.snap" '"event":"handshake_refused","tunnel":"(db|api)"')" ] ||
	p+=("a handshake_refused line without \"tunnel\" right after \"event\"")
verdict "each refusal is logged by its own section only" "${p[@]+"${p[@]}"}" \
	-- "$(grep -F handshake_refused "$S")"

# 2. metrics: each section's endpoint counts its own handshakes. Two more through [db]:
# [db] has let in 3 (x three times), [api] 1 (y): one shared counter would show 4 in both.
vcheck "x through [db] again (1)" "$(routed "$PORT_xdb" again1 "$W/be-db.log" "$W/be-api.log")"
vcheck "x through [db] again (2)" "$(routed "$PORT_xdb" again2 "$W/be-db.log" "$W/be-api.log")"
M_DB=$(sec_port "$S" metrics_listening db)
M_API=$(sec_port "$S" metrics_listening api)
ok_series='mtls_handshakes_total{result="ok"}'
no_series='mtls_handshakes_total{result="failed",reason="identity_not_allowed"}'
# wait_metric PORT SERIES VALUE : until it reads VALUE (bounded); prints what it read last
wait_metric() {
	local v="" n=100
	while [ "$n" -gt 0 ]; do
		v=$(metric "$1" "$2")
		[ "$v" = "$3" ] && break
		sleep 0.05
		n=$((n - 1))
	done
	printf '%s' "$v"
}
p=()
if [ -z "$M_DB" ] || [ -z "$M_API" ] || [ "$M_DB" = "$M_API" ]; then
	p+=("no metrics_listening line of its own for each section: [db] '$M_DB', [api] '$M_API'")
else
	v=$(wait_metric "$M_DB" "$ok_series" 3)
	[ "$v" = 3 ] || p+=("[db]'s /metrics: $ok_series $v, expected 3")
	v=$(wait_metric "$M_API" "$ok_series" 1)
	[ "$v" = 1 ] || p+=("[api]'s /metrics: $ok_series $v, expected 1")
	v=$(metric "$M_DB" "$no_series")
	[ "$v" = 1 ] || p+=("[db]'s /metrics: $no_series '$v', expected 1")
	v=$(metric "$M_API" "$no_series")
	[ "$v" = 1 ] || p+=("[api]'s /metrics: $no_series '$v', expected 1")
fi
verdict "each section's own /metrics endpoint counts its own handshakes" "${p[@]+"${p[@]}"}" \
	-- "$(grep -F metrics_listening "$S")"

# ------------------------------------------------------------------------------------------
echo "# 6. SIGHUP: each section reloads by itself"

# reloads NAME : reload and reload_failed lines of section NAME so far
reloads() { sec_count "$S" "\"event\":\"reload(_failed)?\",\"tunnel\":\"$1\""; }
# hup : SIGHUP the server, wait for a reload (or reload_failed) line of both sections
hup() {
	local db api
	db=$(reloads db)
	api=$(reloads api)
	kill -HUP "$SRV_REAL"
	wait_count "$S" "\"event\":\"reload(_failed)?\",\"tunnel\":\"db\"" $((db + 1)) 10 || true
	wait_count "$S" "\"event\":\"reload(_failed)?\",\"tunnel\":\"api\"" $((api + 1)) 10 || true
}
# line_back FD TEXT : TEXT through a live connection and back
line_back() {
	local got=""
	printf '%s\n' "$2" >&"$1" || true
	IFS= read -r -t 10 got <&"$1" 2>/dev/null || true
	printf '%s' "$got"
}

# a live connection of x through [db]
exec {live}<>"/dev/tcp/127.0.0.1/$PORT_xdb"
[ "$(line_back "$live" before)" = before ] ||
	_lib_die "(setup) the live connection through [db] does not echo"

server_conf "$TD/z-svc"
ok_db=$(sec_count "$S" '"event":"reload","tunnel":"db"')
ok_api=$(sec_count "$S" '"event":"reload","tunnel":"api"')
hup
p=()
[ "$(sec_count "$S" '"event":"reload","tunnel":"api".*"trigger":"SIGHUP"')" -gt "$ok_api" ] ||
	p+=("no reload line of [api] with trigger SIGHUP")
[ "$(sec_count "$S" '"event":"reload","tunnel":"db".*"trigger":"SIGHUP"')" -gt "$ok_db" ] ||
	p+=("no reload line of [db] with trigger SIGHUP")
[ "$(exchange "$PORT_zapi" z-to-api)" = z-to-api ] || p+=("z is not let in by [api] after the new rule")
[ -z "$(exchange "$PORT_yapi" y-to-api-2)" ] || p+=("y is still let in by [api]")
refused_in "$S" api y 1 || p+=("no identity_not_allowed line of [api] for y")
got=$(line_back "$live" after)
[ "$got" = after ] || p+=("the live connection through [db] came back '$got', not 'after'")
[ "$(exchange "$PORT_xdb" x-after)" = x-after ] || p+=("x is not let in by [db] any more")
kill -0 "$SRV_PID" 2>/dev/null || p+=("the server died")
verdict "SIGHUP: [api] takes z instead of y; [db]'s live connection and its rules stay" \
	"${p[@]+"${p[@]}"}" -- "$(grep -Ev '"event":"conn_(open|close)"' "$S" | tail -n 8)"

# an error in [api]'s lines only (an unterminated quote), and a change in [db] (x and y)
server_conf "$TD/z-svc" $'allow-uri '"$TD"$'/x-svc\nallow-uri '"$TD"'/y-svc' \
	"allow-uri '$TD/y-svc"
fail_api=$(sec_count "$S" '"event":"reload_failed","tunnel":"api"')
fail_db=$(sec_count "$S" '"event":"reload_failed","tunnel":"db"')
ok_db=$(sec_count "$S" '"event":"reload","tunnel":"db"')
ok_api=$(sec_count "$S" '"event":"reload","tunnel":"api"')
hup
p=()
[ "$(sec_count "$S" '"event":"reload_failed","tunnel":"api"')" -gt "$fail_api" ] ||
	p+=("no reload_failed line with \"tunnel\":\"api\"")
[ "$(sec_count "$S" '"event":"reload","tunnel":"api"')" = "$ok_api" ] ||
	p+=("[api] logged a reload: its broken lines were applied")
[ "$(sec_count "$S" '"event":"reload","tunnel":"db"')" -gt "$ok_db" ] ||
	p+=("no reload line of [db]: the error in [api] stopped [db]'s reload")
[ "$(sec_count "$S" '"event":"reload_failed","tunnel":"db"')" = "$fail_db" ] ||
	p+=("[db] logged reload_failed for [api]'s error")
[ "$(exchange "$PORT_zapi" z-kept)" = z-kept ] || p+=("[api] no longer lets z in: it lost its last rules")
[ -z "$(exchange "$PORT_yapi" y-to-api-3)" ] || p+=("[api] lets y in: its broken lines were half applied")
[ "$(exchange "$PORT_ydb" y-to-db-2)" = y-to-db-2 ] || p+=("[db] does not let y in: its new list is not applied")
[ "$(exchange "$PORT_xdb" x-still)" = x-still ] || p+=("[db] does not let x in any more")
got=$(line_back "$live" still)
[ "$got" = still ] || p+=("the live connection through [db] came back '$got', not 'still'")
kill -0 "$SRV_PID" 2>/dev/null || p+=("the server died")
xverdict reload-isolation "an error in [api]'s lines: [api] reload_failed, keeps its rules; [db] reloads" \
	"${p[@]+"${p[@]}"}" -- "$(grep -E '"event":"reload' "$S" | tail -n 4)"

# an unknown key in [api]'s lines, and [db] now x and z (not y): whatever became of the
# reload above, z gets into [db] only if this one is applied
server_conf "$TD/z-svc" $'allow-uri '"$TD"$'/x-svc\nallow-uri '"$TD"'/z-svc' "no-such-key 1"
fail_api=$(sec_count "$S" '"event":"reload_failed","tunnel":"api"')
fail_db=$(sec_count "$S" '"event":"reload_failed","tunnel":"db"')
ok_db=$(sec_count "$S" '"event":"reload","tunnel":"db"')
ok_api=$(sec_count "$S" '"event":"reload","tunnel":"api"')
hup
p=()
[ "$(sec_count "$S" '"event":"reload_failed","tunnel":"api"')" -gt "$fail_api" ] ||
	p+=("no reload_failed line with \"tunnel\":\"api\"")
[ "$(sec_count "$S" '"event":"reload","tunnel":"api"')" = "$ok_api" ] ||
	p+=("[api] logged a reload despite its unknown key")
[ "$(sec_count "$S" '"event":"reload","tunnel":"db"')" -gt "$ok_db" ] ||
	p+=("no reload line of [db]: the error in [api] stopped [db]'s reload")
[ "$(sec_count "$S" '"event":"reload_failed","tunnel":"db"')" = "$fail_db" ] ||
	p+=("[db] logged reload_failed for [api]'s error")
[ "$(exchange "$PORT_zdb" z-to-db)" = z-to-db ] || p+=("[db] does not let z in: its new list is not applied")
[ -z "$(exchange "$PORT_ydb" y-to-db-3)" ] || p+=("[db] still lets y in: its new list is not applied")
[ "$(exchange "$PORT_zapi" z-kept-2)" = z-kept-2 ] || p+=("[api] no longer lets z in: it lost its last rules")
got=$(line_back "$live" still2)
[ "$got" = still2 ] || p+=("the live connection through [db] came back '$got', not 'still2'")
kill -0 "$SRV_PID" 2>/dev/null || p+=("the server died")
xverdict reload-isolation "an unknown key in [api]'s lines: [api] reload_failed, keeps its rules; [db] reloads" \
	"${p[@]+"${p[@]}"}" -- "$(grep -E '"event":"reload' "$S" | tail -n 4)"

# a section added to the file: not started, a restart_needed warning names it; the running
# ones reload ([api] takes y back beside z: its lines are good again)
server_conf "$TD/z-svc" "" "allow-uri $TD/y-svc
[extra]
listen 127.0.0.1:0
target 127.0.0.1:$BE_API"
ok_api=$(sec_count "$S" '"event":"reload","tunnel":"api"')
hup
p=()
wait_for_line "$S" '"event":"restart_needed".*\[extra\]' "$READY_LIMIT" ||
	p+=("no restart_needed warning naming [extra]")
[ "$(sec_count "$S" '"event":"reload","tunnel":"api"')" -gt "$ok_api" ] || p+=("[api] did not reload")
[ "$(exchange "$PORT_yapi" y-back)" = y-back ] || p+=("[api] does not let y in: its lines were not applied")
! grep -qF '"tunnel":"extra"' "$S" || p+=("[extra] was started: $(grep -F '"tunnel":"extra"' "$S")")
verdict "a section added to the file: restart_needed names it, it is not started; the others reload" \
	"${p[@]+"${p[@]}"}" -- "$(grep -E '"event":"(reload|restart)' "$S" | tail -n 4)"

# [api] removed from the file: its reload fails (restart to remove it), it keeps running
server_conf "$TD/z-svc"
sed -i '/^\[api\]$/,$d' "$W/server.conf"
fail_api=$(sec_count "$S" '"event":"reload_failed","tunnel":"api".*restart')
hup
p=()
[ "$(sec_count "$S" '"event":"reload_failed","tunnel":"api".*restart')" -gt "$fail_api" ] ||
	p+=("no reload_failed line of [api] saying to restart")
[ "$(exchange "$PORT_zapi" z-after-removal)" = z-after-removal ] ||
	p+=("[api] does not let z in any more")
[ "$(exchange "$PORT_xdb" x-after-removal)" = x-after-removal ] ||
	p+=("[db] does not let x in any more")
verdict "[api] removed from the file: its reload fails saying to restart, it keeps running" \
	"${p[@]+"${p[@]}"}" -- "$(grep -E '"event":"reload' "$S" | tail -n 4)"
exec {live}>&-

# ------------------------------------------------------------------------------------------
echo "# 7. a connector with two sections"

cat >"$W/connector.conf" <<EOF
log-format json
ca $D/root.pem
server-name localhost
workers 1

[to-db]
listen 127.0.0.1:0
server 127.0.0.1:$DB_PORT
cert $W/x-chain.pem
key $W/x.key

[to-api]
listen 127.0.0.1:0
server 127.0.0.1:$API_PORT
cert $W/z-chain.pem
key $W/z.key
EOF
C=$W/con.log
start_bg "$C" "$MTLS" connector --config "$W/connector.conf"
CON_PID=$BG_PID
for s in to-db to-api; do
	wait_for_line "$C" "\"event\":\"listening\",\"tunnel\":\"$s\"" "$READY_LIMIT" "$CON_PID" || {
		echo "mtls connector with sections [to-db] [to-api] did not log a listening line for [$s]:" >&2
		cat -- "$C" >&2
		exit 1
	}
done
CP_DB=$(sec_port "$C" listening to-db)
CP_API=$(sec_port "$C" listening to-api)
CON_REAL=$(sec_field "$C" listening to-db pid)
p=()
[ -n "$CON_REAL" ] && [ "$CON_REAL" = "$(sec_field "$C" listening to-api pid)" ] ||
	p+=("the two sections log different pids")
[ -n "$CP_DB" ] && [ -n "$CP_API" ] && [ "$CP_DB" != "$CP_API" ] ||
	p+=("not two listen ports: '$CP_DB' '$CP_API'")
verdict "the connector's two sections listen in one process" "${p[@]+"${p[@]}"}" \
	-- "$(grep -F '"event":"listening"' "$C")"
# [api] lets only z in: [to-api] must present its own certificate, not [to-db]'s x
vcheck "[to-db] (x's certificate) carries a line to [db]'s backend" \
	"$(routed "$CP_DB" via-to-db "$W/be-db.log" "$W/be-api.log")"
vcheck "[to-api] (z's certificate) carries a line to [api]'s backend" \
	"$(routed "$CP_API" via-to-api "$W/be-api.log" "$W/be-db.log")"

# ------------------------------------------------------------------------------------------
echo "# 8. SIGTERM"

# a live connection through [api] holds it draining; [db], with none, stops at once. The
# drain timeouts are long (40s, 50s): the process ends when the connection does.
exec {live2}<>"/dev/tcp/127.0.0.1/$PORT_zapi"
[ "$(line_back "$live2" pre)" = pre ] ||
	_lib_die "(setup) the live connection through [api] does not echo"
kill -TERM "$SRV_REAL"
p=()
wait_for_line "$S" '"event":"stopped","tunnel":"db"' "$READY_LIMIT" || p+=("no stopped line of [db]")
wait_for_line "$S" '"event":"draining","tunnel":"api"' "$READY_LIMIT" ||
	p+=("no draining line of [api]")
got=$(line_back "$live2" during)
[ "$got" = during ] || p+=("[api]'s live connection came back '$got', not 'during': cut when [db] stopped?")
kill -0 "$SRV_REAL" 2>/dev/null || p+=("the process ended with [api] still draining")
! grep -qF '"event":"stopped","tunnel":"api"' "$S" || p+=("[api] stopped with its connection open")
verdict "SIGTERM: [db] stops, the process waits for [api]'s connection" "${p[@]+"${p[@]}"}" \
	-- "$(tail -n 6 "$S")"
exec {live2}>&-
p=()
wait_exit "$SRV_PID" 20
[ "$EXIT_RC" = 0 ] || p+=("the server's exit status is $EXIT_RC, not 0")
grep -qF '"event":"stopped","tunnel":"api"' "$S" || p+=("no stopped line of [api]")
[ "$(sec_field "$S" stopped api connections_cut)" = 0 ] || p+=("[api] cut its connection")
# each its own drain-timeout: [db] 50s (its own key), [api] the default 40s
[ "$(sec_field "$S" draining db timeout_ms)" = 50000 ] ||
	p+=("[db] drains with timeout_ms '$(sec_field "$S" draining db timeout_ms)', not its own 50000")
[ "$(sec_field "$S" draining api timeout_ms)" = 40000 ] ||
	p+=("[api] drains with timeout_ms '$(sec_field "$S" draining api timeout_ms)', not the default 40000")
verdict "SIGTERM: once [api]'s connection ends it stops too; exit 0; each its own drain-timeout" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 6 "$S")"
# every line the sections logged, from whichever thread, names its section
# (but the warning about a section added to the file, which is the process's)
untagged=$(grep -F '"event":' "$S" | grep -vE '"event":"[a-z_]+","tunnel":"(db|api)"' |
	grep -vE '"event":"restart_needed".*\[extra\]' || true)
vcheck "every log line of the sectioned server carries \"tunnel\" after \"event\"" \
	"${untagged:+lines without it: $untagged}"
p=()
kill -TERM "$CON_REAL"
wait_exit "$CON_PID" 20
[ "$EXIT_RC" = 0 ] || p+=("the connector's exit status is $EXIT_RC, not 0")
for s in to-db to-api; do
	grep -qF "\"event\":\"stopped\",\"tunnel\":\"$s\"" "$C" || p+=("no stopped line of [$s]")
done
verdict "SIGTERM: both connector sections stop; exit 0" "${p[@]+"${p[@]}"}" -- "$(tail -n 6 "$C")"

# ------------------------------------------------------------------------------------------
echo "# the field in logfmt; no field without sections"

# a service manager's end of NOTIFY_SOCKET: each datagram one line of $W/notify.msgs
cat >"$W/listen.py" <<'PY'
import socket, sys
path, out = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
with open(out, "a", buffering=1) as f:
    while True:
        f.write(s.recv(65536).decode("utf-8", "replace").replace("\n", "|") + "\n")
PY
: >"$W/notify.msgs"
start_bg "$W/listen.log" python3 "$W/listen.py" "$W/notify.sock" "$W/notify.msgs"
for _ in $(seq 1 $((READY_LIMIT * 20))); do
	[ -S "$W/notify.sock" ] && break
	sleep 0.05
done
[ -S "$W/notify.sock" ] || _lib_die "(setup) the notify listener did not start: $(cat -- "$W/listen.log")"

two_sections "" "" >"$W/two.conf"
LF=$W/logfmt.log
start_bg "$W/logfmt.out" env NOTIFY_SOCKET="$W/notify.sock" "$MTLS" server \
	--config "$W/two.conf" --log-format logfmt --log-file "$LF" --workers 1 --watch-interval 0
LF_PID=$BG_PID
p=()
for s in db api; do
	wait_for_line "$LF" "event=\"?listening\"? tunnel=\"?$s\"?( |\$)" "$READY_LIMIT" "$LF_PID" ||
		p+=("no 'event=listening tunnel=$s' line")
done
verdict "logfmt: each section's lines carry tunnel=NAME after the event" "${p[@]+"${p[@]}"}" \
	-- "$(cat -- "$LF" "$W/logfmt.out")"

# SIGUSR1 (logrotate moved the file away): the process's one log file is opened again, once
# (not once per section), and every section goes on logging into the new one
lf_real=$(sed -n '/event=listening/{s/.* pid=\([0-9][0-9]*\).*/\1/p;q}' "$LF")
mv -- "$LF" "$LF.1"
p=()
if [ -n "$lf_real" ] && kill -USR1 "$lf_real"; then
	wait_for_line "$LF" 'event="?log_reopened' "$READY_LIMIT" "$LF_PID" ||
		p+=("no log_reopened line in a new $LF")
else
	p+=("no pid in the listening line")
fi
stop_bg "$LF_PID" # the files read whole once the server has stopped
n=$(cat -- "$LF" "$LF.1" 2>/dev/null | grep -c 'event="\?log_reopened' || true)
[ "$n" = 1 ] || p+=("$n log_reopened lines, expected 1 (the process's file, reopened once)")
for s in db api; do
	grep -qE "event=\"?stopped\"? tunnel=\"?$s\"?( |\$)" "$LF" 2>/dev/null ||
		p+=("[$s]'s stopped line is not in the new file")
done
! grep -q 'metrics_listening' "$LF.1" || p+=("a metrics endpoint for a section without metrics key")
verdict "SIGUSR1 reopens the log file once; both sections log into the new one; no metrics key, no endpoint" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$LF" "$W/logfmt.out" 2>/dev/null)"
# systemd: one READY=1 for the process (not one per section), one STOPPING=1
p=()
n=$(grep -c '^READY=1' "$W/notify.msgs" || true)
[ "$n" = 1 ] || p+=("$n READY=1 messages, expected 1")
n=$(grep -c '^STOPPING=1' "$W/notify.msgs" || true)
[ "$n" = 1 ] || p+=("$n STOPPING=1 messages, expected 1")
verdict "NOTIFY_SOCKET: one READY=1 and one STOPPING=1 for the sectioned process" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/notify.msgs")"

# the file watcher: [api]'s own certificate replaced on disk is reloaded by [api]
issue --profile server --dns localhost --ip 127.0.0.1 --out "$W/srv2"
two_sections "" "cert $W/srv2-chain.pem
key $W/srv2.key" >"$W/watch.conf"
WL=$W/watch.log
start_bg "$WL" "$MTLS" server --config "$W/watch.conf" --workers 1
WATCH_PID=$BG_PID
for s in db api; do
	wait_for_line "$WL" "\"event\":\"listening\",\"tunnel\":\"$s\"" "$READY_LIMIT" "$WATCH_PID" ||
		_lib_die "(setup) the watching server did not start [$s]: $(cat -- "$WL")"
done
issue --profile server --dns localhost --ip 127.0.0.1 --out "$W/srv2" --force
p=()
wait_for_line "$WL" '"event":"reload","tunnel":"api".*"trigger":"file_change"' "$READY_LIMIT" \
	"$WATCH_PID" || p+=("no reload of [api] with trigger file_change")
stop_bg "$WATCH_PID" # the log read whole once the server has stopped
! grep -q '"event":"reload","tunnel":"db"' "$WL" || p+=("[db] reloaded: none of its files changed")
verdict "a certificate file changed on disk: reloaded by [api], which uses it, not by [db]" \
	"${p[@]+"${p[@]}"}" -- "$(grep -v '"event":"conn_' "$WL" | tail -n 6)"

cat >"$W/one.conf" <<EOF
log-format json
ca $D/root.pem
cert $W/srv-chain.pem
key $W/srv.key
listen 127.0.0.1:0
target 127.0.0.1:$BE_DB
allow-uri $TD/x-svc
EOF
start_bg "$W/one.log" "$MTLS" server --config "$W/one.conf" --workers 1 --watch-interval 0
ONE_PID=$BG_PID
p=()
wait_for_line "$W/one.log" '"event":"listening"' "$READY_LIMIT" "$ONE_PID" || p+=("no listening line")
stop_bg "$ONE_PID" # the log read whole once the server has stopped
! grep -qF '"tunnel"' "$W/one.log" || p+=("a \"tunnel\" field in a file without sections")
verdict "a file without sections is one tunnel, its log without a \"tunnel\" field" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/one.log")"
finish
