#!/usr/bin/env bash
# Certificates that renew themselves (mtls server/connector --ca-url, tunnel/renewer.c),
# against the real CA service (mtls ca serve --leaf-lifetime 60s) with hosts enrolled by
# `mtls enroll`, whose mtls.conf names the CA (ca-url): while exchanges run through
# connector and server without a pause,
#   - both renew several times (new serials presented, new keys, reload trigger renewal,
#     metrics counted) and not one exchange fails; a connection open across a renewal
#     carries on;
#   - the CA stopped in the renewal window: the daemon keeps serving, logs and counts
#     renewal_failed, and renews once the CA is back on its port;
#   - the CA's roots change (a second root served beside the first, then removed): each
#     daemon's --ca follows without a hand (reload trigger roots_refresh); roots that do
#     not verify the daemon's own certificate are refused, and an --ca file that holds a CA
#     the service does not serve is left alone;
#   - the CA refuses the renewal (the certificate revoked): logged with the CA's message,
#     retried with backoff, cert_expiring at error level before the expiry, and the daemon
#     serves on with the certificate it has (the server, which fetches the CA's CRL as
#     mtls enroll configured it, refuses that certificate now: revocation at work).
# The server is enrolled with the CA's 'server' profile (serverAuth alone): the CA's API takes
# it as the credential of its renewal.
#
# No timing thresholds: every wait is for an event, bounded generously; the certificates'
# 60 s lifetime makes the renewals come.
set -euo pipefail
BG_LIMIT=${BG_LIMIT:-560} # the CA service, the daemons and the traffic live through it all
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"
command -v curl >/dev/null || _lib_die "curl not found in PATH"

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca
APP=spiffe://renewal.test/app
LIFE=60s

"$MTLS" ca init --dir "$D" >/dev/null 2>&1 || _lib_die "(setup) mtls ca init failed"
cp -- "$D/root.pem" "$W/root-A.pem"

# serve_ca PORT : mtls ca serve on 127.0.0.1:PORT (0: any); sets CA_PID and CA_PORT. The same
# port again after a stop: retried while the port is not free yet.
SERVES=0
serve_ca() {
	local tries=20 log
	while :; do
		SERVES=$((SERVES + 1))
		log=$W/serve.$SERVES.log
		start_bg "$log" "$MTLS" ca serve --dir "$D" --listen "127.0.0.1:$1" --http-listen none \
			--leaf-lifetime "$LIFE"
		CA_PID=$BG_PID
		if wait_for_line "$log" '"event":"listening"' "$READY_LIMIT" "$CA_PID"; then
			CA_PORT=$(_daemon_port "$log" listening)
			return 0
		fi
		stop_bg "$CA_PID"
		tries=$((tries - 1))
		[ "$tries" -gt 0 ] && [ "$1" != 0 ] || {
			cat -- "$log" >&2
			_lib_die "mtls ca serve did not start on port $1"
		}
		sleep 0.5
	done
}
serve_ca 0

token() { "$MTLS" ca token --dir "$D" "$@" 2>/dev/null || _lib_die "(setup) mtls ca token $*"; }
enroll() {
	LAST_CMD="mtls enroll --dir $W/$1"
	MTLS_TOKEN=$2 run "$MTLS" enroll --dir "$W/$1"
	[ "$RC" = 0 ] || _lib_die "(setup) mtls enroll --dir $W/$1: $ERR"
}

# --- the pair, enrolled, with traffic -----------------------------------------------------
enroll srv "$(token --profile server --dns localhost)"
enroll app "$(token --profile client --uri "$APP")"
for f in srv app; do
	grep -qx "ca-url https://127.0.0.1:$CA_PORT" "$W/$f/mtls.conf" ||
		_lib_die "(setup) mtls enroll wrote no ca-url line: $(cat "$W/$f/mtls.conf")"
done
SRV_SERIAL0=$(openssl x509 -in "$W/srv/cert.pem" -noout -serial | sed 's/^serial=//')
APP_SERIAL0=$(openssl x509 -in "$W/app/cert.pem" -noout -serial | sed 's/^serial=//')
APP_KEY0=$(sha256sum <"$W/app/key.pem")

# --user: the renewed files are written as that user, whose directory it must be
AS_USER=()
if [ "$(id -u)" = 0 ] && id nobody >/dev/null 2>&1; then
	chmod 711 "$TMP" "$W"
	mkdir -m 755 "$W/srv-ro"
	cp -- "$W/srv/cert.pem" "$W/srv/ca.pem" "$W/srv-ro/"
	install -m 600 -o nobody -- "$W/srv/key.pem" "$W/srv-ro/key.pem"
	LAST_CMD="mtls server --user nobody --ca-url (files in a directory nobody cannot write)"
	run "$MTLS" server --user nobody --cert "$W/srv-ro/cert.pem" --key "$W/srv-ro/key.pem" \
		--ca "$W/srv-ro/ca.pem" --ca-url "https://127.0.0.1:$CA_PORT" --listen 127.0.0.1:0 \
		--target 127.0.0.1:1 --allow-uri "$APP"
	p=()
	[ "$RC" != 0 ] || p+=("started")
	[[ $ERR == *"cannot write its directory"*"writable by nobody"* ]] || p+=("the refusal does not say why")
	report "--ca-url with --user nobody and files in a directory nobody cannot write: refused at start" \
		"${p[@]+"${p[@]}"}"
	chown -R nobody: "$W/srv"
	AS_USER=(--user nobody)
else
	echo "skip  --user cases: need root and user nobody"
fi

start_backend "$W/be.log" --mode echo
start_tunnel_server "$W/srv.log" --config "$W/srv/mtls.conf" --target "127.0.0.1:$BE_PORT" \
	--allow-uri "$APP" --metrics 127.0.0.1:0 --ca-refresh 2s "${AS_USER[@]+"${AS_USER[@]}"}"
start_tunnel_connector "$W/con.log" --config "$W/app/mtls.conf" --server "127.0.0.1:$SRV_PORT" \
	--server-name localhost --metrics 127.0.0.1:0 --ca-refresh 2s
SRV_M=$SRV_METRICS
CON_M=$CON_METRICS

# exchanges through the connector, one new connection each, until $W/stop exists: "ok N",
# or "FAIL N why", one line each
cat >"$W/traffic.sh" <<'EOF'
port=$1 stop=$2 i=0
while [ ! -e "$stop" ]; do
	i=$((i + 1))
	if exec 7<>"/dev/tcp/127.0.0.1/$port"; then
		line=""
		if printf 'x%d\n' "$i" >&7 && read -r -t 10 -u 7 line && [ "$line" = "x$i" ]; then
			echo "ok $i $EPOCHREALTIME"
		else
			echo "FAIL $i got '$line' $EPOCHREALTIME"
		fi
		exec 7>&-
	else
		echo "FAIL $i connect"
	fi
	sleep 0.1
done
EOF
start_bg "$W/traffic.log" bash "$W/traffic.sh" "$CON_PORT" "$W/stop"
TRAFFIC_PID=$BG_PID

# a connection kept open across the first renewals
exec 5<>"/dev/tcp/127.0.0.1/$CON_PORT"
ping5() {
	local line=""
	printf '%s\n' "$1" >&5 2>/dev/null || return 1
	read -r -t 10 -u 5 line 2>/dev/null || return 1
	[ "$line" = "$1" ]
}
ping5 first || _lib_die "(setup) no exchange through connector and server"

# wait_count FILE EVENT N [TEXT] [SECONDS] : until FILE has N lines of EVENT (with TEXT)
wait_count() {
	local n=$((${5:-150} * 10))
	while [ "$n" -gt 0 ]; do
		[ "$(log_count "$1" "$2" "${4:-}")" -ge "$3" ] && return 0
		sleep 0.1
		n=$((n - 1))
	done
	return 1
}
# last_serial FILE : the serial of the last renewal_ok line
last_serial() {
	grep -F '"event":"renewal_ok"' "$1" | tail -n 1 | sed -n 's/.*"serial":"\([0-9A-F]*\)".*/\1/p'
}
# has FILE ERE : a line of FILE matches (one grep on the file: no pipe for pipefail to fail)
has() { grep -Eq -- "$2" "$1"; }
fails() { grep -c '^FAIL' "$W/traffic.log" || true; }
oks() { grep -c '^ok' "$W/traffic.log" || true; }
certs_in() { grep -c 'BEGIN CERTIFICATE' "$1" || true; }
logs() { echo "server log:"; grep -v '"conn_' "$W/srv.log" | tail -n 12; echo "connector log:"; grep -v '"conn_' "$W/con.log" | tail -n 12; }

# --- several renewals under traffic ----------------------------------------------------------
p=()
wait_count "$W/srv.log" reload 1 '"trigger":"renewal"' || p+=("the server did not renew and reload")
wait_count "$W/con.log" reload 1 '"trigger":"renewal"' || p+=("the connector did not renew and reload")
ping5 second || p+=("the connection open across the renewals broke")
exec 5>&-
verdict "a connection open across the renewal of both sides carries on" "${p[@]+"${p[@]}"}" -- "$(logs)"

p=()
wait_count "$W/srv.log" renewal_ok 2 || p+=("the server renewed fewer than 2 times")
wait_count "$W/con.log" renewal_ok 2 || p+=("the connector renewed fewer than 2 times")
for f in srv con; do
	# the reload follows the renewal_ok line by a moment (more under ASan): waited for
	wait_count "$W/$f.log" reload 2 '"trigger":"renewal"' ||
		p+=("$f: fewer than 2 reloads with trigger renewal")
	[ "$(log_count "$W/$f.log" renewal_failed)" = 0 ] || p+=("$f: a renewal failed")
	[ "$(log_count "$W/$f.log" reload_failed)" = 0 ] || p+=("$f: a reload failed")
done
S=$(last_serial "$W/srv.log")
A=$(last_serial "$W/con.log")
[ -n "$S" ] && [ "$S" != "$SRV_SERIAL0" ] || p+=("the server's last renewal has no new serial ($S)")
[ -n "$A" ] && [ "$A" != "$APP_SERIAL0" ] || p+=("the connector's last renewal has no new serial ($A)")
# each side presents the other's renewed certificate (the serials in the conn_open lines):
# the server sees the connector's newest at once (a reload leaves the connector no ticket to
# resume, so it makes a full handshake); the connector sees a renewed server certificate at
# its own reloads' full handshakes (in between it resumes sessions that carry the server
# certificate they began with, until that one nears its expiry)
renewed_seen() { # LOG-OF-RENEWALS LOG-OF-PEER : how many of the renewed serials the peer saw
	local s k=0
	for s in $(sed -n 's/.*"event":"renewal_ok".*"serial":"\([0-9A-F]*\)".*/\1/p' "$1"); do
		has "$2" "\"event\":\"conn_open\".*\"serial\":\"$s\"" && k=$((k + 1))
	done
	echo "$k"
}
n=100
until has "$W/srv.log" "\"event\":\"conn_open\".*\"serial\":\"$A\"" || [ "$n" = 0 ]; do
	sleep 0.1
	n=$((n - 1))
done
has "$W/srv.log" "\"event\":\"conn_open\".*\"serial\":\"$A\"" ||
	p+=("the server never saw the connector's renewed certificate $A")
[ "$(renewed_seen "$W/con.log" "$W/srv.log")" -ge 2 ] ||
	p+=("the server saw $(renewed_seen "$W/con.log" "$W/srv.log") of the connector's renewed certificates, not both")
[ "$(renewed_seen "$W/srv.log" "$W/con.log")" -ge 1 ] ||
	p+=("the connector never saw a renewed server certificate")
# and openssl, independently: the server presents a renewed certificate, verified by ca.pem
out=$(timeout -k 2 "$RUN_LIMIT" openssl s_client -connect "127.0.0.1:$SRV_PORT" -servername localhost \
	-CAfile "$W/srv/ca.pem" -verify_return_error -cert "$W/app/cert.pem" -key "$W/app/key.pem" \
	</dev/null 2>&1 || true)
printf '%s\n' "$out" >"$W/served.txt"
got=$(openssl x509 -in "$W/served.txt" -noout -serial 2>/dev/null | sed 's/^serial=//' || true)
[[ $out == *"Verify return code: 0 (ok)"* ]] || p+=("openssl s_client: the served chain does not verify")
{ [ -n "$got" ] && [ "$got" != "$SRV_SERIAL0" ] && has "$W/srv.log" "\"event\":\"renewal_ok\".*\"serial\":\"$got\""; } ||
	p+=("openssl s_client sees serial '$got', not one of the server's renewals")
[ "$(sha256sum <"$W/app/key.pem")" != "$APP_KEY0" ] || p+=("the connector's key did not change")
[ "$(stat -c %a "$W/app/key.pem")" = 600 ] || p+=("key.pem is mode $(stat -c %a "$W/app/key.pem"), not 600")
if [ ${#AS_USER[@]} -gt 0 ]; then
	[ "$(stat -c %U:%a "$W/srv/key.pem")" = nobody:600 ] ||
		p+=("the server's renewed key is $(stat -c %U:%a "$W/srv/key.pem"), not nobody:600 (--user nobody)")
	[ "$(stat -c %U "$W/srv/cert.pem")" = nobody ] || p+=("the server's renewed chain is not nobody's")
fi
openssl x509 -in "$W/app/cert.pem" -noout -checkend 30 >/dev/null || p+=("cert.pem is not a fresh certificate")
[ "$(ls -A "$W/app" | grep -c tmp)" = 0 ] || p+=("temporary files left in the enrollment directory: $(ls -A "$W/app")")
for m in "$SRV_M" "$CON_M"; do
	v=$(metric "$m" 'mtls_cert_renewals_total{result="ok"}')
	[ "${v:-0}" -ge 2 ] || p+=("mtls_cert_renewals_total{result=\"ok\"} is '$v'")
	v=$(metric "$m" 'mtls_cert_renewals_total{result="failed"}')
	[ "$v" = 0 ] || p+=("mtls_cert_renewals_total{result=\"failed\"} is '$v'")
	v=$(metric "$m" mtls_cert_renewal_configured)
	[ "$v" = 1 ] || p+=("mtls_cert_renewal_configured is '$v'")
	v=$(metric "$m" mtls_cert_renew_at_seconds)
	[ "${v:-0}" -gt "$(date +%s)" ] || p+=("mtls_cert_renew_at_seconds '$v' is not in the future")
	v=$(metric "$m" mtls_cert_not_after_seconds)
	[ "${v:-0}" -gt "$(date +%s)" ] || p+=("mtls_cert_not_after_seconds '$v' is not in the future")
done
[ "$(fails)" = 0 ] || p+=("$(fails) exchanges failed: $(grep -m 3 '^FAIL' "$W/traffic.log")")
[ "$(oks)" -gt 100 ] || p+=("only $(oks) exchanges")
verdict "two renewals each under traffic: new serials seen by the peer and openssl, new keys (0600), reloads, metrics, 0 failed of $(oks) exchanges" \
	"${p[@]+"${p[@]}"}" -- "$(logs)"

# --- the CA down in the renewal window; a second root served when it is back ----------------
SRV_OK=$(log_count "$W/srv.log" renewal_ok)
CON_OK=$(log_count "$W/con.log" renewal_ok)
stop_bg "$CA_PID"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/root-B.key" \
	-out "$W/root-B.pem" -subj "/O=renewal test/CN=root B" -days 2 \
	-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
	>/dev/null 2>&1 || _lib_die "(setup) openssl: root B"
# the link certificate: root B's subject and key, certified by root A (RFC 4210 newWithOld)
printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n' >"$W/link.ext"
openssl req -new -key "$W/root-B.key" -subj "/O=renewal test/CN=root B" 2>/dev/null |
	openssl x509 -req -CA "$W/root-A.pem" -CAkey "$D/root.key" -days 2 -extfile "$W/link.ext" \
		-out "$W/link-B.pem" >/dev/null 2>&1 || _lib_die "(setup) openssl: link certificate for root B"
# first without the link: a new root nobody trusted vouches for is not taken
cat -- "$W/root-A.pem" "$W/root-B.pem" >"$D/root.pem"
p=()
n=900
while [ "$(log_count "$W/srv.log" renewal_failed)" = 0 ] && [ "$(log_count "$W/con.log" renewal_failed)" = 0 ] && [ "$n" -gt 0 ]; do
	sleep 0.1
	n=$((n - 1))
done
if [ "$(log_count "$W/srv.log" renewal_failed)" != 0 ]; then F=srv FM=$SRV_M FOK=$SRV_OK; else F=con FM=$CON_M FOK=$CON_OK; fi
[ "$(log_count "$W/$F.log" renewal_failed 'cannot reach the CA')" -ge 1 ] || p+=("no renewal_failed line saying the CA cannot be reached")
has "$W/$F.log" '"level":"warn".*"event":"renewal_failed".*"next_attempt":"' ||
	p+=("renewal_failed is not a warning with the next attempt")
v=$(metric "$FM" 'mtls_cert_renewals_total{result="failed"}')
[ "${v:-0}" -ge 1 ] || p+=("mtls_cert_renewals_total{result=\"failed\"} is '$v'")
v=$(metric "$FM" mtls_cert_renewal_failures)
[ "${v:-0}" -ge 1 ] || p+=("mtls_cert_renewal_failures is '$v'")
FAILS_DOWN=$(fails)
OKS_DOWN=$(oks)
serve_ca "$CA_PORT"
wait_count "$W/$F.log" renewal_ok $((FOK + 1)) || p+=("$F did not renew once the CA was back")
wait_count "$W/con.log" roots_refresh_failed 1 'no root of' 60 ||
	p+=("no roots_refresh_failed line for a new root without a link certificate")
[ "$(certs_in "$W/app/ca.pem")" = 1 ] || p+=("app/ca.pem took a new root that no trusted root certifies")
sleep 1
[ "$(oks)" -gt "$OKS_DOWN" ] || p+=("no exchange while the CA was down and after")
[ "$FAILS_DOWN" = 0 ] && [ "$(fails)" = 0 ] || p+=("$(fails) exchanges failed")
verdict "the CA down in the renewal window: $F keeps serving, logs and counts renewal_failed, renews once the CA is back" \
	"${p[@]+"${p[@]}"}" -- "$(logs)"

# wait_certs FILE N : until FILE holds N certificates
wait_certs() {
	local n=600
	until [ "$(certs_in "$1")" = "$2" ] || [ "$n" = 0 ]; do
		sleep 0.1
		n=$((n - 1))
	done
	[ "$(certs_in "$1")" = "$2" ]
}
p=()
stop_bg "$CA_PID"
cat -- "$W/root-A.pem" "$W/root-B.pem" "$W/link-B.pem" >"$D/root.pem"
serve_ca "$CA_PORT"
for f in srv app; do
	wait_certs "$W/$f/ca.pem" 2 || p+=("$f/ca.pem holds $(certs_in "$W/$f/ca.pem") certificates, not the CA's 2 roots")
done
cat -- "$W/root-A.pem" "$W/root-B.pem" >"$W/roots-AB.pem"
cmp -s "$W/srv/ca.pem" "$W/roots-AB.pem" || p+=("srv/ca.pem is not the CA's two roots")
wait_count "$W/srv.log" reload 1 '"trigger":"roots_refresh"' 30 || p+=("no server reload with trigger roots_refresh")
wait_count "$W/con.log" reload 1 '"trigger":"roots_refresh"' 30 || p+=("no connector reload with trigger roots_refresh")
[ "$(stat -c %a "$W/app/ca.pem")" = 644 ] || p+=("ca.pem's mode changed to $(stat -c %a "$W/app/ca.pem")")
verdict "a second root served beside the first: refused without a link certificate; with one, both daemons take both roots (reload trigger roots_refresh)" \
	"${p[@]+"${p[@]}"}" -- "$(logs)"

# the new root gone again: it was the CA's, so it goes
p=()
stop_bg "$CA_PID"
cp -- "$W/root-A.pem" "$D/root.pem"
serve_ca "$CA_PORT"
for f in srv app; do
	wait_certs "$W/$f/ca.pem" 1 || p+=("$f/ca.pem holds $(certs_in "$W/$f/ca.pem") certificates, not the CA's 1 root")
done
cmp -s "$W/app/ca.pem" "$W/root-A.pem" || p+=("app/ca.pem is not root A alone")
verdict "a root the CA no longer serves leaves both daemons' --ca" "${p[@]+"${p[@]}"}" -- "$(logs)"

# roots that would lock the daemon out of its own certificate are refused
p=()
stop_bg "$CA_PID"
cat -- "$W/root-B.pem" "$W/link-B.pem" >"$D/root.pem" # vouched for, but A is gone
serve_ca "$CA_PORT"
wait_count "$W/con.log" roots_refresh_failed 1 'do not verify this daemon' 30 ||
	p+=("no roots_refresh_failed line for roots that do not verify the own certificate")
cmp -s "$W/app/ca.pem" "$W/root-A.pem" || p+=("app/ca.pem changed to roots that do not verify its own certificate")
verdict "roots that do not verify the daemon's own certificate are not taken" "${p[@]+"${p[@]}"}" -- "$(logs)"

# a bundle with a certificate that is not a root (the issuing CA) is refused whole
p=()
stop_bg "$CA_PID"
cat -- "$W/root-A.pem" "$D/intermediate.pem" >"$D/root.pem"
serve_ca "$CA_PORT"
wait_count "$W/con.log" roots_refresh_failed 1 'not a root' 30 ||
	p+=("no roots_refresh_failed line for a bundle holding a certificate that is not a root")
cmp -s "$W/app/ca.pem" "$W/root-A.pem" || p+=("app/ca.pem took a bundle with a certificate that is not a root")
verdict "a bundle holding a certificate that is not a root (self-signed, CA:TRUE) is not taken" \
	"${p[@]+"${p[@]}"}" -- "$(logs)"

# an --ca file that holds a CA the service does not serve is the operator's: left alone
p=()
stop_bg "$CA_PID"
cat -- "$W/root-A.pem" "$W/root-B.pem" "$W/link-B.pem" >"$D/root.pem"
cat -- "$W/root-A.pem" "$CERTS/other-ca.pem" >"$W/srv/ca.pem"
cp -- "$W/srv/ca.pem" "$W/srv-ca.mine"
serve_ca "$CA_PORT"
wait_count "$W/srv.log" roots_left_alone 1 'does not serve' 30 || p+=("no roots_left_alone line")
wait_certs "$W/app/ca.pem" 2 || p+=("the connector did not take the 2 roots meanwhile")
cmp -s "$W/srv/ca.pem" "$W/srv-ca.mine" || p+=("the operator's --ca file was changed")
[ "$(log_count "$W/srv.log" roots_left_alone)" = 1 ] || p+=("roots_left_alone logged $(log_count "$W/srv.log" roots_left_alone) times, not once")
verdict "an --ca file holding a CA the service does not serve is left alone (said once)" "${p[@]+"${p[@]}"}" -- "$(logs)"
cp -- "$W/root-A.pem" "$W/srv/ca.pem"

# --- the CA refuses: the connector's certificate revoked ------------------------------------
p=()
CON_OK=$(log_count "$W/con.log" renewal_ok)
wait_count "$W/con.log" renewal_ok $((CON_OK + 1)) || p+=("the connector did not renew")
A=$(last_serial "$W/con.log")
"$MTLS" ca revoke --dir "$D" --serial "$A" --reason keyCompromise >/dev/null 2>&1 || p+=("mtls ca revoke $A failed")
# the traffic ends here: the server fetches the CA's CRL (mtls enroll put crl-url in its
# mtls.conf) and refuses the revoked connector from now on, which is revocation at work
touch "$W/stop"
wait_exit "$TRAFFIC_PID" 30
FAILS_END=$(fails)
REFUSED0=$(log_count "$W/con.log" renewal_failed)
wait_count "$W/con.log" renewal_failed $((REFUSED0 + 2)) 'revoked' || p+=("no two renewal_failed lines naming the revocation")
wait_count "$W/con.log" cert_expiring 1 "$A" 60 || p+=("no cert_expiring line before the expiry")
line=$(grep -m 1 -E "\"event\":\"cert_expiring\".*$A" "$W/con.log" || true)
[[ $line == *'"level":"error"'* ]] || p+=("cert_expiring is not at error level: $line")
left=$(printf '%s' "$line" | sed -n 's/.*"seconds_left":\(-\{0,1\}[0-9]*\).*/\1/p')
[ "${left:-0}" -gt 0 ] || p+=("cert_expiring came at seconds_left '$left', not before the expiry")
has "$W/con.log" '"event":"renewal_failed".*revoked.*"failures":2' ||
	p+=("the refused renewal was not retried (no second failure in a row)")
v=$(metric "$CON_M" mtls_cert_renewal_failures)
[ "${v:-0}" -ge 2 ] || p+=("mtls_cert_renewal_failures is '$v'")
# the daemon serves on with the certificate it has: running, accepting, the same certificate
kill -0 "$CON_REAL" 2>/dev/null || p+=("the connector is no longer running")
(exec 8<>"/dev/tcp/127.0.0.1/$CON_PORT") 2>/dev/null || p+=("the connector no longer accepts")
[ "$(openssl x509 -in "$W/app/cert.pem" -noout -serial | sed 's/^serial=//')" = "$A" ] ||
	p+=("app/cert.pem is no longer the revoked certificate $A")
[ "$(log_count "$W/con.log" reload_failed)" = 0 ] || p+=("a reload failed")
[ "$FAILS_END" = 0 ] || p+=("$FAILS_END exchanges failed: $(grep -m 3 '^FAIL' "$W/traffic.log")")
has "$W/con.log" '"event":"(renewal|roots)_.*(BEGIN|PRIVATE)' && p+=("key material in the log")
verdict "the CA refuses (certificate revoked): logged with its message, retried with backoff, cert_expiring before the expiry, the daemon serving on; 0 of $(oks) exchanges failed before" \
	"${p[@]+"${p[@]}"}" -- "$(logs)"

finish
