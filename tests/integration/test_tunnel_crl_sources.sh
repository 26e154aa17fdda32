#!/usr/bin/env bash
# Where a daemon's CRL comes from, with no hand work:
#   - an https --crl-url (the CA service's API serves /crl too) is verified by --ca, not by
#     the system's trust store
#   - --crl-url auto: the URL of the own certificate's CRL distribution point; refused with
#     a clear message when the certificate names none
#   - several --crl-url, one --crl-cache each (one per CA): each CA's revocations reach the
#     server; a count that does not pair, or a cache file given twice, refused at start
#   - mtls enroll writes crl-url and crl-cache into mtls.conf: the distribution point of the
#     issued certificate (the CA service's plain port: push), else the CA service's API
#   - with --user (as root), the first CRL cache is written for the user: after the drop the
#     daemon replaces it, even in a sticky directory
# Two CAs: CA1 names no distribution point; CA2's certificates name the plain port of its
# own `mtls ca serve` (a port reserved before `mtls ca init`, then given to the service).
set -euo pipefail
BG_LIMIT=${BG_LIMIT:-200}
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

command -v curl >/dev/null || _lib_die "curl not found in PATH"
command -v python3 >/dev/null || _lib_die "python3 not found in PATH"

W=$TMP/w
mkdir -m 700 -- "$W"
TD=spiffe://sources.test
ca() {
	run "$MTLS" ca "$@"
	[ "$RC" = 0 ] || _lib_die "(setup) mtls ca $*: exit $RC: $ERR"
}
serial() { openssl x509 -in "$W/$1.pem" -noout -serial | sed 's/^serial=//'; }

# a free port for CA2's plain HTTP: bound by the kernel (port 0), read, released
HP2=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
D1=$W/ca1
D2=$W/ca2
ca init --dir "$D1" --name "Sources CA one"
ca init --dir "$D2" --name "Sources CA two" --crl-url "http://127.0.0.1:$HP2/crl"
for d in 1 2; do
	ca issue --dir "$W/ca$d" --profile server --dns localhost --ip 127.0.0.1 --out "$W/S$d"
	for c in A B C; do
		ca issue --dir "$W/ca$d" --profile client --uri "$TD/$c$d" --out "$W/$c$d"
	done
done

# serve N HTTP_PORT : mtls ca serve for CA N; sets AP<N>, HP<N>, SERVE<N>_PID
serve() {
	start_bg "$W/serve$1.log" "$MTLS" ca serve --dir "$W/ca$1" --listen 127.0.0.1:0 \
		--http-listen "127.0.0.1:$2"
	printf -v "SERVE$1_PID" '%s' "$BG_PID"
	wait_for_line "$W/serve$1.log" '"event":"listening"' "$READY_LIMIT" "$BG_PID" || {
		cat -- "$W/serve$1.log" >&2
		_lib_die "mtls ca serve (CA $1) did not start"
	}
	printf -v "AP$1" '%s' "$(_daemon_port "$W/serve$1.log" listening)"
	printf -v "HP$1" '%s' "$(_daemon_port "$W/serve$1.log" http_listening)"
}
serve 1 0
serve 2 "$HP2"
start_backend "$TMP/be.log"

wait_until() {
	local n=$(($1 * 10))
	shift
	while [ "$n" -gt 0 ]; do
		"$@" && return 0
		sleep 0.1
		n=$((n - 1))
	done
	return 1
}
metric_is() { [ "$(metric "$1" "$2")" = "$3" ]; }
metric_ge() {
	local v
	v=$(metric "$1" "$2")
	[ -n "$v" ] && [ "${v%.*}" -ge "$3" ]
}
# hello PORT METRICS CLIENT : one connection as CLIENT; HELLO=accepted, revoked or other
hello() {
	local ok rev pid n=400 v
	ok=$(metric "$2" 'mtls_handshakes_total{result="ok"}')
	rev=$(metric "$2" 'mtls_handshakes_total{result="failed",reason="revoked"}')
	printf 'hello\n' >"$W/hello.in"
	timeout 20 openssl s_client -connect "127.0.0.1:$1" -quiet -cert "$W/$3.pem" \
		-cert_chain "$W/$3-chain.pem" -key "$W/$3.key" -CAfile "$D1/root.pem" \
		<"$W/hello.in" >"$W/hello.out" 2>&1 &
	pid=$!
	HELLO=other
	while [ "$n" -gt 0 ]; do
		v=$(metric "$2" 'mtls_handshakes_total{result="ok"}')
		if [ "${v:-0}" -gt "${ok:-0}" ] && grep -q '^hello$' "$W/hello.out"; then
			HELLO=accepted
			break
		fi
		v=$(metric "$2" 'mtls_handshakes_total{result="failed",reason="revoked"}')
		if [ "${v:-0}" -gt "${rev:-0}" ]; then
			HELLO=revoked
			break
		fi
		sleep 0.05
		n=$((n - 1))
	done
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}
revoked_soon() {
	hello "$@"
	[ "$HELLO" = revoked ]
}
srv() {
	local d=$1 log=$2
	shift 2
	start_tunnel_server "$log" --target "127.0.0.1:$BE_PORT" --cert "$W/S$d-chain.pem" \
		--key "$W/S$d.key" --allow-any-identity --metrics 127.0.0.1:0 --watch-interval 0 "$@"
}
cat -- "$D1/root.pem" "$D2/root.pem" "$D2/intermediate.pem" >"$W/bundle.pem"

echo "# an https --crl-url: the CA service's API, verified by --ca"
ca revoke --dir "$D1" --serial "$(serial B1)" --reason keyCompromise
srv 1 "$W/https.log" --ca "$D1/root.pem" --crl-url "https://127.0.0.1:$AP1/crl" \
	--crl-cache "$W/https-crl.pem" --crl-refresh 1s
p=()
[ -s "$W/https-crl.pem" ] || p+=("no CRL in the cache")
hello "$SRV_PORT" "$SRV_METRICS" A1
[ "$HELLO" = accepted ] || p+=("A1 is '$HELLO', not accepted")
hello "$SRV_PORT" "$SRV_METRICS" B1
[ "$HELLO" = revoked ] || p+=("B1 (revoked) is '$HELLO', not refused revoked")
ca revoke --dir "$D1" --serial "$(serial A1)" --reason keyCompromise
wait_until 30 revoked_soon "$SRV_PORT" "$SRV_METRICS" A1 || p+=("A1, revoked next, is still let in")
stop_bg "$SRV_PID" # first: a failure is logged by the log thread, maybe after it is looked for
[ "$(log_count "$W/https.log" crl_fetch_failed)" = 0 ] || p+=("a fetch failed")
verdict "--crl-url https://CA-API/crl: fetched over TLS verified by --ca (no system trust), refreshed" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 5 "$W/https.log")"

LAST_CMD="mtls server --crl-url https://... --ca (another CA)"
run "$MTLS" server --listen 127.0.0.1:0 --target "127.0.0.1:$BE_PORT" --cert "$W/S2-chain.pem" \
	--key "$W/S2.key" --ca "$D2/root.pem" --allow-any-identity \
	--crl-url "https://127.0.0.1:$AP1/crl" --crl-cache "$W/none.pem"
p=()
[ "$RC" = 2 ] || p+=("exit status $RC, not 2")
[[ $ERR == *"no CRL yet"*"SSL certificate"* ]] || p+=("the message does not say the server's certificate failed")
report "an https --crl-url whose server --ca does not vouch for: the fetch fails (certificate)" "${p[@]+"${p[@]}"}"

echo "# --crl-url auto"
srv 2 "$W/auto.log" --ca "$D2/root.pem" --crl-url auto --crl-cache "$W/auto-crl.pem" --crl-refresh 10m
p=()
[ "$(log_count "$W/auto.log" crl_url_auto "\"url\":\"http://127.0.0.1:$HP2/crl\"")" = 1 ] ||
	p+=("no crl_url_auto line naming http://127.0.0.1:$HP2/crl")
wait_until 30 metric_is "$SRV_METRICS" mtls_crl_push_active 1 || p+=("no push from CA2's service")
hello "$SRV_PORT" "$SRV_METRICS" A2
[ "$HELLO" = accepted ] || p+=("A2 is '$HELLO', not accepted")
ca revoke --dir "$D2" --serial "$(serial A2)" --reason keyCompromise
wait_until 30 revoked_soon "$SRV_PORT" "$SRV_METRICS" A2 || p+=("A2, revoked, is still let in")
stop_bg "$SRV_PID"
verdict "--crl-url auto: the own certificate's distribution point (CA2's service), pushed" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 5 "$W/auto.log")"

# the own certificate names none: a --ca certificate's (an ldap:// one skipped)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/cdp.key" \
	-subj "/CN=distribution point holder" -days 1 -out "$W/cdp.pem" \
	-addext "crlDistributionPoints=URI:ldap://ldap.example/cn=crl,URI:http://127.0.0.1:$HP1/crl" \
	2>/dev/null || _lib_die "(setup) openssl req"
cat -- "$D1/root.pem" "$W/cdp.pem" >"$W/cdp-bundle.pem"
srv 1 "$W/auto-ca.log" --ca "$W/cdp-bundle.pem" --crl-url auto --crl-cache "$W/auto-ca-crl.pem" \
	--crl-refresh 10m
p=()
[ "$(log_count "$W/auto-ca.log" crl_url_auto "\"url\":\"http://127.0.0.1:$HP1/crl\"")" = 1 ] ||
	p+=("no crl_url_auto line naming http://127.0.0.1:$HP1/crl")
hello "$SRV_PORT" "$SRV_METRICS" B1
[ "$HELLO" = revoked ] || p+=("B1 (revoked in CA1) is '$HELLO'")
stop_bg "$SRV_PID"
verdict "--crl-url auto, the own certificate naming none: the first http(s) one of a --ca certificate" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 5 "$W/auto-ca.log")"

LAST_CMD="mtls server --crl-url auto (a certificate without a distribution point)"
run "$MTLS" server --listen 127.0.0.1:0 --target "127.0.0.1:$BE_PORT" --cert "$W/S1-chain.pem" \
	--key "$W/S1.key" --ca "$D1/root.pem" --allow-any-identity --crl-url auto \
	--crl-cache "$W/none.pem"
p=()
[ "$RC" = 2 ] || p+=("exit status $RC, not 2")
[[ $ERR == *"--crl-url auto: neither the own certificate"*"carries an http(s) CRL distribution point"*"give the CRL's URL"* ]] ||
	p+=("the message does not say what is missing and what to do")
report "--crl-url auto with no distribution point anywhere: refused, saying what to do" "${p[@]+"${p[@]}"}"

echo "# several --crl-url, one per CA"
srv 1 "$W/two.log" --ca "$W/bundle.pem" --crl-refresh 10m \
	--crl-url "http://127.0.0.1:$HP1/crl" --crl-cache "$W/two-1.pem" \
	--crl-url "http://127.0.0.1:$HP2/crl" --crl-cache "$W/two-2.pem"
p=()
[ -s "$W/two-1.pem" ] && [ -s "$W/two-2.pem" ] || p+=("not both caches written")
wait_until 30 metric_is "$SRV_METRICS" mtls_crl_push_active 2 || p+=("mtls_crl_push_active is not 2")
hello "$SRV_PORT" "$SRV_METRICS" B2
[ "$HELLO" = accepted ] || p+=("B2 is '$HELLO', not accepted")
ca revoke --dir "$D2" --serial "$(serial B2)" --reason keyCompromise
wait_until 30 revoked_soon "$SRV_PORT" "$SRV_METRICS" B2 || p+=("B2 (CA2), revoked, is still let in")
hello "$SRV_PORT" "$SRV_METRICS" A1
[ "$HELLO" = revoked ] || p+=("A1 (CA1, revoked before) is '$HELLO'")
stop_bg "$SRV_PID"
verdict "two CAs, two --crl-url: both CRLs fetched (push from both), each CA's revocation applies" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 8 "$W/two.log")"

# refused ARGS... TEXT : mtls server with ARGS exits 2 saying TEXT
refused() {
	local text=${*: -1}
	LAST_CMD="mtls server ${*:1:$#-1}"
	run "$MTLS" server --listen 127.0.0.1:0 --target "127.0.0.1:$BE_PORT" \
		--cert "$W/S1-chain.pem" --key "$W/S1.key" --ca "$W/bundle.pem" --allow-any-identity \
		"${@:1:$#-1}"
	p=()
	[ "$RC" = 2 ] || p+=("exit status $RC, not 2")
	[[ $ERR == *"$text"* ]] || p+=("the message does not say '$text'")
	report "refused: ${*:1:$#-1}" "${p[@]+"${p[@]}"}"
}
refused --crl-url "http://127.0.0.1:$HP1/crl" --crl-url "http://127.0.0.1:$HP2/crl" \
	--crl-cache "$W/x.pem" "give one --crl-cache per --crl-url, in the same order"
refused --crl-url "http://127.0.0.1:$HP1/crl" --crl-cache "$W/x.pem" \
	--crl-url "http://127.0.0.1:$HP2/crl" --crl-cache "$W/x.pem" "is given twice"
refused --crl-url "http://127.0.0.1:$HP1/crl" --crl-cache "$W/x.pem" --crl-push maybe "--crl-push maybe: give on or off"

echo "# mtls enroll writes crl-url and crl-cache"
for d in 1 2; do
	tok=$("$MTLS" ca token --dir "$W/ca$d" --profile client --uri "$TD/enrolled$d" 2>/dev/null) ||
		_lib_die "(setup) mtls ca token (CA $d)"
	LAST_CMD="mtls enroll --dir $W/e$d"
	MTLS_TOKEN=$tok run "$MTLS" enroll --dir "$W/e$d"
	[ "$RC" = 0 ] || _lib_die "(setup) mtls enroll (CA $d): $ERR"
done
p=()
grep -qxF "crl-url https://127.0.0.1:$AP1/crl" "$W/e1/mtls.conf" || p+=("CA1 (no distribution point): not the API's /crl")
grep -qxF "crl-url http://127.0.0.1:$HP2/crl" "$W/e2/mtls.conf" || p+=("CA2: not the certificate's distribution point")
grep -qxF "crl-cache $W/e2/crl.pem" "$W/e2/mtls.conf" || p+=("no crl-cache line in the enrollment directory")
verdict "mtls.conf names the CRL: the distribution point, else the CA service's API" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$W/e1/mtls.conf" "$W/e2/mtls.conf")"
p=()
for d in 1 2; do
	start_tunnel_connector "$W/enrolled$d.log" --config "$W/e$d/mtls.conf" \
		--server 127.0.0.1:9 --server-name localhost --metrics 127.0.0.1:0
	[ -s "$W/e$d/crl.pem" ] || p+=("CA$d: no CRL fetched into the enrollment directory")
	[ "$(metric "$CON_METRICS" mtls_crl_configured)" = 1 ] || p+=("CA$d: mtls_crl_configured is not 1")
	if [ "$d" = 2 ]; then
		wait_until 30 metric_is "$CON_METRICS" mtls_crl_push_active 1 || p+=("CA2: no push")
	fi
	stop_bg "$CON_PID"
done
verdict "a daemon started with the enrolled mtls.conf checks revocation (CA2: by push)" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 5 "$W/enrolled2.log")"

# enrolled again over it, with CA2: CA1's cached CRL would be in the way of CA2's
tok=$("$MTLS" ca token --dir "$D2" --profile client --uri "$TD/again" 2>/dev/null) || _lib_die "(setup) mtls ca token"
[ -s "$W/e1/crl.pem" ] || _lib_die "(setup) no crl.pem in $W/e1"
LAST_CMD="mtls enroll --force --dir $W/e1 (another CA)"
MTLS_TOKEN=$tok run "$MTLS" enroll --dir "$W/e1" --force
p=()
[ "$RC" = 0 ] || p+=("exit $RC")
[ ! -e "$W/e1/crl.pem" ] || p+=("the CRL cached for the earlier enrollment is still there")
grep -qxF "crl-url http://127.0.0.1:$HP2/crl" "$W/e1/mtls.conf" || p+=("mtls.conf does not name CA2's CRL")
start_tunnel_connector "$W/again.log" --config "$W/e1/mtls.conf" --server 127.0.0.1:9 \
	--server-name localhost
[ -s "$W/e1/crl.pem" ] || p+=("no CRL of the new CA fetched")
stop_bg "$CON_PID"
report "enroll --force over an enrollment: its cached CRL dropped, the new CA's fetched" "${p[@]+"${p[@]}"}"

if [ "$(id -u)" = 0 ] && id nobody >/dev/null 2>&1; then
	echo "# --user: the first cache is the user's"
	U=$TMP/u
	mkdir -m 755 "$U"
	chmod 711 "$TMP"
	mkdir -m 1777 "$U/crl" # sticky: only a file's owner may replace it
	cp -- "$W/S1-chain.pem" "$D1/root.pem" "$U/"
	install -m 600 -o nobody -- "$W/S1.key" "$U/S1.key"
	start_tunnel_server "$W/user.log" --target "127.0.0.1:$BE_PORT" --cert "$U/S1-chain.pem" \
		--key "$U/S1.key" --ca "$U/root.pem" --allow-any-identity --metrics 127.0.0.1:0 \
		--watch-interval 0 --user nobody --crl-url "http://127.0.0.1:$HP1/crl" \
		--crl-cache "$U/crl/crl.pem" --crl-refresh 10m
	p=()
	[ "$(stat -c %U "$U/crl/crl.pem" 2>/dev/null)" = nobody ] ||
		p+=("the first cache is owned by '$(stat -c %U "$U/crl/crl.pem" 2>/dev/null)', not nobody")
	wait_until 30 metric_is "$SRV_METRICS" mtls_crl_push_active 1 || p+=("no push")
	reloads=$(metric "$SRV_METRICS" 'mtls_reloads_total{result="ok"}')
	ca revoke --dir "$D1" --serial "$(serial C1)" --reason superseded
	wait_until 30 metric_ge "$SRV_METRICS" 'mtls_reloads_total{result="ok"}' $((reloads + 1)) ||
		p+=("the new CRL was not loaded")
	stop_bg "$SRV_PID" # first: a failure is logged by the log thread, maybe after it is looked for
	[ "$(log_count "$W/user.log" crl_fetch_failed)" = 0 ] ||
		p+=("a fetch failed: $(grep -F crl_fetch_failed "$W/user.log" | head -n 1)")
	grep -q "$(serial C1)" <(openssl crl -in "$U/crl/crl.pem" -noout -text 2>/dev/null) ||
		p+=("the cache was not replaced by the new CRL")
	verdict "--user nobody: the cache written at start is nobody's; after the drop it is replaced (sticky directory)" \
		"${p[@]+"${p[@]}"}" -- "$(tail -n 6 "$W/user.log")"
else
	echo "skip  --user: needs root and the user nobody"
fi

finish
