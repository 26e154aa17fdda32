#!/usr/bin/env bash
# A server with a must-staple certificate (`mtls ca init --must-staple`: it staples without
# --ocsp-staple) that renews it (--ca-url, the real `mtls ca serve --leaf-lifetime 60s`): across the renewal every `openssl s_client
# -status` gets a good staple about the very certificate it is served. The renewed
# certificate's answer is fetched before the reload swaps it in (renewal_staple fetched);
# without that, the server staples nothing from the swap until the OCSP thread's fetch
# comes back, and a must-staple client refuses it meanwhile. Also: --must-staple without
# --ocsp-url is refused.
# The CA's responder (/ocsp of the plain port, named by the certificates' AIA through
# `mtls ca init --ocsp-url`) is reached through a small proxy that holds every answer 3 s,
# as a responder far away would: the gap after a swap is then wide enough to be seen.
# No timing thresholds: the probes run until the renewal's reload, then 20 more.
set -euo pipefail
BG_LIMIT=${BG_LIMIT:-200}
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

command -v python3 >/dev/null || _lib_die "python3 not found in PATH (the slow responder proxy)"

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca

# the proxy: POST /ocsp forwarded to the CA's plain port (read from W/target at each
# request), its answer held 3 s
cat >"$W/slow.py" <<'EOF'
import http.server, sys, time, urllib.request
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        time.sleep(3)
        with open(sys.argv[1]) as f:
            target = f.read().strip()
        req = urllib.request.Request(target, data=body,
                                     headers={"Content-Type": "application/ocsp-request"})
        data = urllib.request.urlopen(req, timeout=10).read()
        self.send_response(200)
        self.send_header("Content-Type", "application/ocsp-response")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        sys.stderr.write("POST /ocsp\n")
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print("port %d" % s.server_address[1], flush=True)
s.serve_forever()
EOF
start_bg "$W/slow.log" python3 -u "$W/slow.py" "$W/target"
wait_for_line "$W/slow.log" 'port [0-9]+' "$READY_LIMIT" "$BG_PID" || _lib_die "the proxy did not start"
OP=$(sed -n 's/^port \([0-9][0-9]*\).*/\1/p' "$W/slow.log" | head -n 1)

LAST_CMD="mtls ca init --must-staple (no --ocsp-url)"
run "$MTLS" ca init --dir "$W/nourl" --must-staple
p=()
[ "$RC" != 0 ] || p+=("accepted")
[[ $ERR == *"give --ocsp-url too"* ]] || p+=("message: $ERR")
report "mtls ca init --must-staple without --ocsp-url: refused" "${p[@]+"${p[@]}"}"
"$MTLS" ca init --dir "$D" --ocsp-url "http://127.0.0.1:$OP/ocsp" --must-staple >/dev/null 2>&1 ||
	_lib_die "(setup) mtls ca init failed"
"$MTLS" ca issue --dir "$D" --profile client --uri spiffe://staple.test/app --out "$W/app" \
	>/dev/null 2>&1 || _lib_die "(setup) mtls ca issue failed"
start_bg "$W/serve.log" "$MTLS" ca serve --dir "$D" --listen 127.0.0.1:0 \
	--http-listen 127.0.0.1:0 --leaf-lifetime 60s
wait_for_line "$W/serve.log" '"event":"http_listening"' "$READY_LIMIT" "$BG_PID" || {
	cat -- "$W/serve.log" >&2
	_lib_die "mtls ca serve did not start"
}
AP=$(_daemon_port "$W/serve.log" listening)
HP=$(_daemon_port "$W/serve.log" http_listening)
echo "http://127.0.0.1:$HP/ocsp" >"$W/target"

TOKEN=$("$MTLS" ca token --dir "$D" --profile server --dns localhost 2>/dev/null) ||
	_lib_die "(setup) mtls ca token failed"
LAST_CMD="mtls enroll"
MTLS_TOKEN=$TOKEN run "$MTLS" enroll --dir "$W/srv"
[ "$RC" = 0 ] || _lib_die "(setup) mtls enroll: $ERR"

start_backend "$TMP/be.log" --mode echo
start_tunnel_server "$W/srv.log" --target "127.0.0.1:$BE_PORT" --cert "$W/srv/cert.pem" \
	--key "$W/srv/key.pem" --ca "$W/srv/ca.pem" --ca-url "https://127.0.0.1:$AP" \
	--allow-any-identity --metrics 127.0.0.1:0 --watch-interval 0
SRV_LOG=$W/srv.log

# probe : one s_client -status; sets SERVED (the served leaf's serial) and STAPLED (the
# serial of a good staple, or "")
norm() { tr 'a-f' 'A-F' | sed 's/^0*//'; }
probe() {
	local out
	out=$(timeout 20 openssl s_client -connect "127.0.0.1:$SRV_PORT" -servername localhost \
		-status -CAfile "$W/srv/ca.pem" -cert "$W/app.pem" -cert_chain "$W/app-chain.pem" \
		-key "$W/app.key" </dev/null 2>/dev/null || true)
	# (the OCSP answer printed before it holds the responder's certificate)
	SERVED=$(printf '%s\n' "$out" | sed -n '/^Server certificate/,/END CERTIFICATE/p' |
		openssl x509 -noout -serial 2>/dev/null | sed 's/^serial=//' | norm)
	printf '%s\n' "$out" >"$W/probe.out"
	STAPLED=""
	# (no grep -q or head in a pipe: an early exit is a SIGPIPE, a failure under pipefail)
	if [[ $out =~ Serial\ Number:\ ([0-9A-Fa-f]+)[[:space:]]+Cert\ Status:\ good ]]; then
		STAPLED=$(printf '%s\n' "${BASH_REMATCH[1]}" | norm)
	fi
}

p=()
text=$(openssl x509 -in "$W/srv/cert.pem" -noout -text)
[[ $text == *"TLS Feature:"*status_request* ]] || p+=("the enrolled certificate is not must-staple")
wait_for_line "$SRV_LOG" '"event":"ocsp_staple"' 60 "$SRV_PID" || p+=("no first staple")
probe
FIRST=$SERVED
[ -n "$FIRST" ] && [ "$STAPLED" = "$FIRST" ] || p+=("the first certificate ($FIRST) is served with staple '$STAPLED'")
verdict "mtls ca init --must-staple: the enrolled server certificate is must-staple; mtls server --ca-url staples it unasked"  \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 5 "$SRV_LOG")"

echo "# across the renewal (about 40 s: ⅔ of the 60 s life)"
probes=0 bad=0 after=-1 badlist=""
while [ "$after" -lt 20 ]; do
	probe
	probes=$((probes + 1))
	if [ -z "$SERVED" ] || [ "$STAPLED" != "$SERVED" ]; then
		bad=$((bad + 1))
		[ "$bad" -gt 5 ] || badlist+="served '$SERVED' stapled '$STAPLED'; "
		cp -- "$W/probe.out" "$W/bad.$bad"
	fi
	if [ "$after" -lt 0 ] && [ "$SERVED" != "$FIRST" ] && [ -n "$SERVED" ]; then
		after=0
	elif [ "$after" -ge 0 ]; then
		after=$((after + 1))
	fi
	[ "$probes" -lt 3000 ] || break
	kill -0 "$SRV_PID" 2>/dev/null || break
done
p=()
[ "$after" -ge 20 ] || p+=("no renewal seen in $probes probes")
[ "$bad" = 0 ] || p+=("$bad of $probes handshakes without a good staple for the served certificate: $badlist")
[ "$(log_count "$SRV_LOG" reload '"trigger":"renewal"')" -ge 1 ] || p+=("no reload trigger renewal")
[ "$(log_count "$SRV_LOG" renewal_staple '"result":"fetched"')" -ge 1 ] ||
	p+=("no renewal_staple fetched line")
verdict "across a renewal every s_client -status gets a good staple for the certificate it is served" \
	"${p[@]+"${p[@]}"}" -- "$(grep -E 'renewal|reload|ocsp' "$SRV_LOG" | tail -n 10)"
stop_bg "$SRV_PID"

finish
