#!/usr/bin/env bash
# A root rollover of the real CA service, followed by real daemons with no hand work:
# `mtls ca init`, `mtls ca serve --leaf-lifetime 60s`, a server and a connector enrolled with
# tokens (`mtls ca token`, `mtls enroll`) and renewing themselves (--ca-refresh 1s), with
# traffic running through them the whole time and one connection held open across it all.
#   begin   both daemons take the new root (their --ca holds old and new: roots_refreshed);
#           an enrollment works (its token pins the old root);
#   switch  the next renewals give chains through the new root (leaf and new intermediate,
#           which the daemons load as a rotation); an enrollment with a token made after
#           the switch works (it pins the new root), one made before is refused; that host
#           (the new root alone in its ca.pem) refreshes its roots without a failure, the
#           old root left out (mtls agent --once); finish is
#           refused while a certificate issued before the switch is unexpired and not
#           renewed (one enrolled and left alone), and allowed once it is revoked and the
#           daemons renewed;
#   finish  both daemons drop the old root (--ca holds the new one alone); their chains
#           verify under the new root alone (openssl verify), a renewal after it too; an
#           enrollment works.
# No exchange fails, and the connection opened before begin still works at the end (re-judged
# at finish through the daemons' own new intermediate certificate: no conn_rejudged).
# No timing thresholds: every wait is for an event, bounded generously.
set -euo pipefail
BG_LIMIT=${BG_LIMIT:-400}
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca
APP=spiffe://rollover.test/app

"$MTLS" ca init --dir "$D" >/dev/null 2>&1 || _lib_die "(setup) mtls ca init failed"
cp -- "$D/root.pem" "$W/old-root.pem"

start_bg "$W/serve.log" "$MTLS" ca serve --dir "$D" --listen 127.0.0.1:0 --http-listen none \
	--leaf-lifetime 60s
CA_PID=$BG_PID
wait_for_line "$W/serve.log" '"event":"listening"' "$READY_LIMIT" "$CA_PID" ||
	_lib_die "(setup) mtls ca serve did not start: $(cat -- "$W/serve.log")"
CA_PORT=$(_daemon_port "$W/serve.log" listening)

token() { "$MTLS" ca token --dir "$D" "$@" 2>/dev/null || _lib_die "(setup) mtls ca token $*"; }
# enroll NAME TOKEN : mtls enroll --dir $W/NAME; RC, OUT, ERR as run sets them
enroll() {
	LAST_CMD="mtls enroll --dir $W/$1"
	MTLS_TOKEN=$2 run "$MTLS" enroll --dir "$W/$1"
}
certs_in() { grep -c 'BEGIN CERTIFICATE' "$1" || true; }
WAIT_LIMIT=${WAIT_LIMIT:-150} # seconds one wait for an event may take at most
# wait_count FILE EVENT N [TEXT] : until FILE has N lines of EVENT (with TEXT)
wait_count() {
	local n=$((WAIT_LIMIT * 10))
	while [ "$n" -gt 0 ]; do
		[ "$(log_count "$1" "$2" "${4:-}")" -ge "$3" ] && return 0
		sleep 0.1
		n=$((n - 1))
	done
	return 1
}
# wait_file_certs FILE N : until FILE holds N certificates
wait_file_certs() {
	local n=$((WAIT_LIMIT * 10))
	while [ "$n" -gt 0 ]; do
		[ "$(certs_in "$1")" = "$2" ] && return 0
		sleep 0.1
		n=$((n - 1))
	done
	return 1
}
# issuer_of FILE : the issuer of the second certificate of a chain file
issuer_of() { awk '/BEGIN CERT/{n++} n==2' "$1" | openssl x509 -noout -issuer 2>/dev/null || true; }
logs() {
	echo "server log:"
	grep -v '"conn_' "$W/srv.log" | tail -n 15
	echo "connector log:"
	grep -v '"conn_' "$W/con.log" | tail -n 15
	echo "ca serve log:"
	tail -n 15 "$W/serve.log"
}

# --- the pair, enrolled, with traffic -----------------------------------------------------
enroll srv "$(token --profile server --dns localhost)"
[ "$RC" = 0 ] || _lib_die "(setup) enroll srv: $ERR"
enroll app "$(token --profile client --uri "$APP")"
[ "$RC" = 0 ] || _lib_die "(setup) enroll app: $ERR"

start_backend "$W/be.log" --mode echo
start_tunnel_server "$W/srv.log" --config "$W/srv/mtls.conf" --target "127.0.0.1:$BE_PORT" \
	--allow-uri "$APP" --ca-refresh 1s
start_tunnel_connector "$W/con.log" --config "$W/app/mtls.conf" --server "127.0.0.1:$SRV_PORT" \
	--server-name localhost --ca-refresh 1s

cat >"$W/traffic.sh" <<'EOF'
port=$1 stop=$2 i=0
while [ ! -e "$stop" ]; do
	i=$((i + 1))
	if exec 7<>"/dev/tcp/127.0.0.1/$port"; then
		line=""
		if printf 'x%d\n' "$i" >&7 && read -r -t 10 -u 7 line && [ "$line" = "x$i" ]; then
			echo "ok $i"
		else
			echo "FAIL $i got '$line'"
		fi
		exec 7>&-
	else
		echo "FAIL $i connect"
	fi
	sleep 0.2
done
EOF
start_bg "$W/traffic.log" bash "$W/traffic.sh" "$CON_PORT" "$W/stop"
fails() { grep -c '^FAIL' "$W/traffic.log" || true; }
oks() { grep -c '^ok' "$W/traffic.log" || true; }

exec 5<>"/dev/tcp/127.0.0.1/$CON_PORT"
ping5() {
	local line=""
	printf '%s\n' "$1" >&5 2>/dev/null || return 1
	read -r -t 10 -u 5 line 2>/dev/null || return 1
	[ "$line" = "$1" ]
}
ping5 first || _lib_die "(setup) no exchange through connector and server"

# --- begin ----------------------------------------------------------------------------------
LAST_CMD="mtls ca rollover begin"
run "$MTLS" ca rollover begin --dir "$D"
p=()
[ "$RC" = 0 ] || p+=("begin failed")
[ "$(certs_in "$D/root.pem")" = 3 ] || p+=("root.pem does not hold old root, new root and link")
report "rollover begin: root.pem serves old root, new root and the link" "${p[@]+"${p[@]}"}"
awk '/BEGIN CERT/{n++} n==2' "$D/root.pem" >"$W/new-root.pem"

p=()
for f in srv app; do
	wait_file_certs "$W/$f/ca.pem" 2 || p+=("$f: its ca.pem did not take the new root")
done
wait_count "$W/srv.log" reload 1 '"trigger":"roots_refresh"' || p+=("the server did not reload the roots")
wait_count "$W/con.log" reload 1 '"trigger":"roots_refresh"' || p+=("the connector did not reload the roots")
[ "$(log_count "$W/srv.log" roots_refresh_failed)" = 0 ] || p+=("the server refused the roots")
[ "$(log_count "$W/con.log" roots_refresh_failed)" = 0 ] || p+=("the connector refused the roots")
verdict "begin: both daemons take the new root by the link certificate (roots_refreshed)" \
	"${p[@]+"${p[@]}"}" -- "$(logs)"

enroll e1 "$(token --profile client --uri spiffe://rollover.test/e1)"
p=()
[ "$RC" = 0 ] || p+=("enroll failed: $ERR")
[ "$RC" != 0 ] || cmp -s "$W/e1/ca.pem" "$W/old-root.pem" || p+=("ca.pem is not the old root")
report "begin: an enrollment works (its token pins the old root)" "${p[@]+"${p[@]}"}"

# --- switch ---------------------------------------------------------------------------------
SRV_R0=$(log_count "$W/srv.log" renewal_ok)
CON_R0=$(log_count "$W/con.log" renewal_ok)
# a token made before the switch: it pins the old root
OLD_TOKEN=$(token --profile client --uri spiffe://rollover.test/late --ttl 1h)
LAST_CMD="mtls ca rollover switch"
run "$MTLS" ca rollover switch --dir "$D"
p=()
[ "$RC" = 0 ] || p+=("switch failed")
[[ $(openssl x509 -in "$D/intermediate.pem" -noout -issuer) == *"Root CA G2"* ]] ||
	p+=("intermediate.pem is not issued by the new root")
report "rollover switch: the intermediate's key certified by the new root" "${p[@]+"${p[@]}"}"
# the service takes the switch up within a second: its API's own certificate is issued again
wait_count "$W/serve.log" ca_certs_loaded 1 '"api_cert_renewed":1' ||
	_lib_die "mtls ca serve did not take the switch up: $(tail -n 5 "$W/serve.log")"

LAST_CMD="mtls ca rollover finish (right after switch)"
run "$MTLS" ca rollover finish --dir "$D"
p=()
[ "$RC" = 1 ] || p+=("finish was not refused (exit $RC)")
[[ $ERR == *"issued before the switch"* ]] || p+=("the refusal does not say why")
[ "$(certs_in "$D/root.pem")" = 3 ] || p+=("root.pem changed")
report "finish is refused while certificates issued before the switch are unexpired and not renewed" \
	"${p[@]+"${p[@]}"}"

enroll e2 "$(token --profile client --uri spiffe://rollover.test/e2)"
p=()
[ "$RC" = 0 ] || p+=("enroll failed: $ERR")
if [ "$RC" = 0 ]; then
	cmp -s "$W/e2/ca.pem" "$W/new-root.pem" || p+=("ca.pem is not the new root")
	[ "$(certs_in "$W/e2/cert.pem")" = 2 ] || p+=("the chain is not leaf and intermediate")
	openssl verify -CAfile "$W/new-root.pem" -untrusted "$W/e2/cert.pem" "$W/e2/cert.pem" \
		>/dev/null 2>&1 || p+=("the chain does not verify under the new root")
fi
report "switch: an enrollment works (its token pins the new root)" "${p[@]+"${p[@]}"}"

# a host enrolled after the switch trusts the new root alone, and the CA still serves the old
# root with the link it signed for the new one: its refresh leaves the old root out (not on
# the CA service's word) and goes on, without a failure
if [ -s "$W/e2/cert.pem" ]; then
	LAST_CMD="mtls agent --dir $W/e2 --once --force"
	run "$MTLS" agent --dir "$W/e2" --once --force --log-format json --log-level debug
	p=()
	[ "$RC" = 0 ] || p+=("the agent failed (exit $RC): $ERR")
	[[ $OUT$ERR == *roots_refresh_failed* ]] &&
		p+=("$(first_line "$(printf '%s\n%s\n' "$OUT" "$ERR" | grep roots_refresh_failed)")")
	cmp -s "$W/e2/ca.pem" "$W/new-root.pem" || p+=("its ca.pem is not the new root alone")
	report "switch: a host enrolled after it refreshes its roots: the old root is left out, no failure" \
		"${p[@]+"${p[@]}"}"
fi

enroll late "$OLD_TOKEN"
p=()
[ "$RC" != 0 ] || p+=("a token pinning the old root enrolled after the switch")
[ -e "$W/late/cert.pem" ] && p+=("files were written")
report "switch: a token made before the switch (pinning the old root) is refused" "${p[@]+"${p[@]}"}"

p=()
wait_count "$W/srv.log" renewal_ok $((SRV_R0 + 1)) || p+=("the server did not renew after the switch")
wait_count "$W/con.log" renewal_ok $((CON_R0 + 1)) || p+=("the connector did not renew after the switch")
wait_count "$W/srv.log" reload $((SRV_R0 + 1)) '"trigger":"renewal"' || p+=("the server did not reload its renewal")
wait_count "$W/con.log" reload $((CON_R0 + 1)) '"trigger":"renewal"' || p+=("the connector did not reload its renewal")
for f in srv app; do
	[ "$(log_count "$W/$f.log" reload_failed)" = 0 ] || p+=("$f: a reload failed")
	[[ $(issuer_of "$W/$f/cert.pem") == *"Root CA G2"* ]] ||
		p+=("$f: its renewed chain's intermediate is not the new root's")
	[ "$(certs_in "$W/$f/cert.pem")" = 2 ] || p+=("$f: its chain is not leaf and intermediate")
	openssl verify -CAfile "$W/new-root.pem" -untrusted "$W/$f/cert.pem" "$W/$f/cert.pem" \
		>/dev/null 2>&1 || p+=("$f: its renewed chain does not verify under the new root")
done
ping5 switched || p+=("the connection opened before begin broke")
verdict "switch: the renewals give chains through the new root" "${p[@]+"${p[@]}"}" -- "$(logs)"

# a connection opened on the new chains: both daemons renewed; the connector reloaded once
# more (SIGHUP), so that it holds no session ticket from a handshake with the server's
# earlier chain, and makes a full handshake
kill -HUP "$CON_REAL"
wait_count "$W/con.log" reload 1 '"trigger":"SIGHUP"' || _lib_die "(setup) the connector did not reload at SIGHUP"
exec 6<>"/dev/tcp/127.0.0.1/$CON_PORT"
ping6() {
	local line=""
	printf '%s\n' "$1" >&6 2>/dev/null || return 1
	read -r -t 10 -u 6 line 2>/dev/null || return 1
	[ "$line" = "$1" ]
}
ping6 opened || _lib_die "(setup) no exchange on a new connection after the switch"

# the one left alone (enrolled at begin, never renewed) still holds finish back
LAST_CMD="mtls ca rollover finish (e1 left)"
run "$MTLS" ca rollover finish --dir "$D"
p=()
[ "$RC" = 1 ] || p+=("finish was not refused (exit $RC)")
[[ $ERR == *"1 unexpired certificate"*"spiffe://rollover.test/e1"* ]] ||
	p+=("the refusal does not name the one left")
[ ${#p[@]} = 0 ] || p+=("the inventory: $("$MTLS" ca list --dir "$D" --valid 2>&1)")
report "finish is refused for the one certificate issued before the switch and not renewed" \
	"${p[@]+"${p[@]}"}"
E1=$(openssl x509 -in "$W/e1/cert.pem" -noout -serial | sed 's/^serial=//')
"$MTLS" ca revoke --dir "$D" --serial "$E1" --reason superseded >/dev/null 2>&1 ||
	_lib_die "(setup) mtls ca revoke $E1 failed"

# --- finish ---------------------------------------------------------------------------------
LAST_CMD="mtls ca rollover finish"
run "$MTLS" ca rollover finish --dir "$D"
p=()
[ "$RC" = 0 ] || p+=("finish failed")
[ "$(certs_in "$D/root.pem")" = 1 ] && cmp -s "$D/root.pem" "$W/new-root.pem" ||
	p+=("root.pem is not the new root alone")
report "rollover finish: root.pem holds the new root alone" "${p[@]+"${p[@]}"}"

p=()
for f in srv app; do
	wait_file_certs "$W/$f/ca.pem" 1 || p+=("$f: its ca.pem still holds the old root")
	cmp -s "$W/$f/ca.pem" "$W/new-root.pem" || p+=("$f: its ca.pem is not the new root")
	openssl verify -CAfile "$W/new-root.pem" -untrusted "$W/$f/cert.pem" "$W/$f/cert.pem" \
		>/dev/null 2>&1 || p+=("$f: its chain does not verify under the new root alone")
done
verdict "finish: both daemons drop the old root; their chains verify under the new root alone" \
	"${p[@]+"${p[@]}"}" -- "$(logs)"

SRV_R1=$(log_count "$W/srv.log" renewal_ok)
CON_R1=$(log_count "$W/con.log" renewal_ok)
p=()
wait_count "$W/srv.log" renewal_ok $((SRV_R1 + 1)) || p+=("the server did not renew after finish")
wait_count "$W/con.log" renewal_ok $((CON_R1 + 1)) || p+=("the connector did not renew after finish")
wait_count "$W/srv.log" reload $((SRV_R1 + 1)) '"trigger":"renewal"' || p+=("the server did not reload")
wait_count "$W/con.log" reload $((CON_R1 + 1)) '"trigger":"renewal"' || p+=("the connector did not reload")
for f in srv app; do
	[ "$(log_count "$W/$f.log" reload_failed)" = 0 ] || p+=("$f: a reload failed")
	[ "$(certs_in "$W/$f/cert.pem")" = 2 ] || p+=("$f: its chain is not leaf and intermediate")
	openssl verify -CAfile "$W/new-root.pem" -untrusted "$W/$f/cert.pem" "$W/$f/cert.pem" \
		>/dev/null 2>&1 || p+=("$f: its chain does not verify under the new root alone")
	openssl verify -CAfile "$W/old-root.pem" -untrusted "$W/$f/cert.pem" "$W/$f/cert.pem" \
		>/dev/null 2>&1 && p+=("$f: its chain still verifies under the old root")
done
verdict "finish: renewals go on, their chains verified by the new root alone" \
	"${p[@]+"${p[@]}"}" -- "$(logs)"

enroll e3 "$(token --profile client --uri spiffe://rollover.test/e3)"
p=()
[ "$RC" = 0 ] || p+=("enroll failed: $ERR")
[ "$RC" != 0 ] || cmp -s "$W/e3/ca.pem" "$W/new-root.pem" || p+=("ca.pem is not the new root")
report "finish: an enrollment with a new token works (it pins the new root)" "${p[@]+"${p[@]}"}"

# --- the traffic ----------------------------------------------------------------------------
: >"$W/stop"
p=()
ping6 last || p+=("the connection opened after the switch broke")
exec 6>&-
sleep 0.5
[ "$(fails)" = 0 ] || p+=("$(fails) exchanges failed: $(grep '^FAIL' "$W/traffic.log" | head -n 3)")
[ "$(oks)" -gt 0 ] || p+=("no exchange went through")
verdict "traffic: no exchange failed ($(oks) new connections); a connection opened after the switch lives on" \
	"${p[@]+"${p[@]}"}" -- "$(logs)"
# The connection opened before begin lived through begin, switch and the renewals (checked
# above). At finish the daemons re-judge live connections against the new root alone; the
# chain each peer presented at its handshake goes through the old intermediate certificate,
# which leads to the old root only: libmtls rebuilds the path through the daemon's own
# (renewed) chain's certificate of the same intermediate key, so the connection stays.
p=()
ping5 last || p+=("the connection opened before begin was closed at finish")
for f in srv con; do
	[ "$(log_count "$W/$f.log" conn_rejudged)" = 0 ] ||
		p+=("$f: conn_rejudged: $(grep conn_rejudged "$W/$f.log" | head -n 2)")
done
verdict "finish: the connection opened before begin lives on (re-judged through the new intermediate)" \
	"${p[@]+"${p[@]}"}" -- "$(logs)"
exec 5>&-

LAST_CMD="mtls ca audit"
run "$MTLS" ca audit --dir "$D"
vcheck "the audit log is intact after the rollover" "$([ "$RC" = 0 ] || echo "audit failed: $OUT $ERR")"

finish
