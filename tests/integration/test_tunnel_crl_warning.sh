#!/usr/bin/env bash
# A daemon started with a CRL past its nextUpdate says so at once (every client it covers is
# refused crl_expired until a new CRL is published), instead of starting silently.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

C=$CERTS
SRV=(--target 127.0.0.1:9 --cert "$C/server-chain.pem" --key "$C/server.key" --ca "$C/ca.pem"
	--allow-any-identity --drain-timeout 100ms)

start_tunnel_server "$TMP/srv.log" "${SRV[@]}" --crl "$C/crl-expired.pem"
# (the CRLs are looked at after "listening", and the log is written by its own thread: the
# lines are read once the daemon has stopped, when all it logged is in the file)
stop_bg "$SRV_PID"
l=$(grep -F '"event":"crl_expired"' "$TMP/srv.log" || true)
p=()
[ "$(count_lines "$l" "{")" = 1 ] || p+=("expected one crl_expired line at start, got $(count_lines "$l" "{")")
[[ $l == *'"level":"error"'* ]] || p+=("not an error line")
[[ $l == *"\"file\":\"$C/crl-expired.pem\""* ]] || p+=("the file is not named")
[[ $l == *'"next_update":"2020-02-01T00:00:00Z"'* ]] || p+=("the nextUpdate is not given")
[[ $l == *"publish a new CRL; until then every client is refused"* ]] || p+=("the action is not given")
verdict "an expired CRL at start: crl_expired (error) naming the file, nextUpdate and what to do" \
	"${p[@]+"${p[@]}"}" -- "$(cat -- "$TMP/srv.log")"

# a current CRL: nothing said
start_tunnel_server "$TMP/srv-ok.log" "${SRV[@]}" --crl "$C/crl.pem"
stop_bg "$SRV_PID" # (the absence is read once the daemon has stopped, as above)
p=()
[ "$(log_count "$TMP/srv-ok.log" crl_expired)" = 0 ] || p+=("crl_expired logged for a current CRL")
verdict "a current CRL: no crl_expired line" "${p[@]+"${p[@]}"}" -- "$(cat -- "$TMP/srv-ok.log")"

finish
