#!/usr/bin/env bash
# The rollout modes of mtls server (docs/rollout.md): one server moved by SIGHUP (the --config
# file's "mode" line) from insecure-permissive through insecure-audit to strict, with four
# kinds of clients: plaintext, TLS without a certificate, an allowed mTLS client (a) and an
# mTLS client the rules refuse (b). At each step the metrics the runbook watches: nothing
# refused in permissive and audit, the counts by kind and by identity right, strict refusing
# exactly the expected ones; live connections re-judged under the new mode; /status after a
# reload. Then: a server-speaks-first client in permissive mode (silence means plaintext),
# the PROXY v2 header of unverified clients, and the bound on per-identity series.
set -euo pipefail
BG_LIMIT=${BG_LIMIT:-120}
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"
command -v python3 >/dev/null || {
	echo "SKIP: python3 not found"
	exit 77
}

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca
TD=spiffe://example.org
"$MTLS" ca init --dir "$D" >/dev/null 2>&1 || _lib_die "(setup) mtls ca init"
issue() { "$MTLS" ca issue --dir "$D" "$@" >/dev/null 2>&1 || _lib_die "(setup) mtls ca issue $*"; }
issue --profile server --dns localhost --ip 127.0.0.1 --out "$W/srv"
issue --profile client --uri "$TD/a" --out "$W/a"
issue --profile client --uri "$TD/b" --out "$W/b"

# cli.py KIND PORT [LINE] : one client on a new connection; prints the first line it gets
# back ("" if refused or closed). KIND: plain (plaintext), tls (TLS: CA [CERT KEY]), read
# (plaintext that only listens: a protocol whose server speaks first).
cat >"$W/cli.py" <<'EOF'
import socket, ssl, sys
kind, port = sys.argv[1], int(sys.argv[2])
line = sys.argv[3] if len(sys.argv) > 3 else ""
try:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if kind == "tls":
        ctx = ssl.create_default_context(cafile=sys.argv[4])
        if len(sys.argv) > 6:
            ctx.load_cert_chain(sys.argv[5], sys.argv[6])
        s = ctx.wrap_socket(s, server_hostname="localhost")
    if kind != "read":
        s.sendall((line + "\n").encode())
    print(s.makefile("rb").readline().decode(errors="replace").strip())
except (OSError, ssl.SSLError):
    print("")
EOF
plain() { python3 "$W/cli.py" plain "$SRV_PORT" "$1"; }
nocert() { python3 "$W/cli.py" tls "$SRV_PORT" "$1" "$D/root.pem"; }

start_backend "$W/be.log" --mode echo
config() { # MODE [EXTRA] : the server's config file
	cat >"$W/server.conf" <<EOF
target 127.0.0.1:$BE_PORT
cert $W/srv-chain.pem
key $W/srv.key
ca $D/root.pem
crl $D/crl.pem
allow-uri $TD/a
mode $1
plaintext-wait 0
${2:-}
EOF
}
config insecure-permissive
start_tunnel_server "$W/srv.log" --config "$W/server.conf" --watch-interval 0 \
	--metrics 127.0.0.1:0
M=$SRV_METRICS
# connector NAME : a connector presenting NAME's certificate; sets PORT_<NAME>. Each gets a log
# of its own: an earlier connector of the same name still runs and writes to its file.
CON_N=0
connector() {
	local log=$W/con-$1-$((CON_N += 1)).log
	start_bg "$log" "$MTLS" connector --listen 127.0.0.1:0 --log-format json \
		--server "127.0.0.1:$SRV_PORT" --server-name localhost --cert "$W/$1-chain.pem" \
		--key "$W/$1.key" --ca "$D/root.pem"
	wait_for_line "$log" '"event":"listening"' "$READY_LIMIT" "$BG_PID" ||
		_lib_die "connector $1 did not start"
	printf -v "PORT_$1" '%s' "$(_daemon_port "$log" listening)"
}
connector a
connector b
mtls_client() { python3 "$W/cli.py" plain "$1" "$2"; } # through a connector's port

reloads() { echo $(($(log_count "$W/srv.log" reload) + $(log_count "$W/srv.log" reload_failed))); }
hup() {
	local before
	before=$(reloads)
	kill -HUP "$SRV_REAL"
	for _ in $(seq 1 200); do
		[ "$(reloads)" -gt "$before" ] && return 0
		sleep 0.05
	done
	_lib_die "no reload after SIGHUP"
}
m() { metric "$M" "$1"; }
# zero SERIES : the series is absent or 0
zero() { local v; v=$(m "$1"); [ -z "$v" ] || [ "$v" = 0 ]; }
failed_total() { curl -s "http://127.0.0.1:$M/metrics" | awk '/^mtls_handshakes_total\{result="failed"/ { s += $NF } END { print s + 0 }'; }
# wait_metric SERIES VALUE : counters are updated as connections are forwarded; the client may
# read its echo a moment before a metrics scrape sees the count (another thread)
wait_metric() {
	for _ in $(seq 1 100); do
		[ "$(m "$1")" = "$2" ] && return 0
		sleep 0.05
	done
	return 1
}

# wait_logged FILE EVENT TEXT : wait (bounded) for an EVENT line with TEXT: the daemon queues
# it before the client sees the effect (or before the reload line), but its log thread may
# write it after
wait_logged() {
	for _ in $(seq 1 $((READY_LIMIT * 20))); do
		[ "$(log_count "$1" "$2" "$3")" -ge 1 ] && return 0
		sleep 0.05
	done
	return 1
}

# --- 1. insecure-permissive: every kind of client forwarded, nothing refused ---------------
p=()
grep -q '"event":"insecure_mode".*"mode":"permissive"' "$W/srv.log" || p+=("no insecure_mode warning at start")
[ "$(m 'mtls_mode{mode="permissive"}')" = 1 ] || p+=("mtls_mode permissive is not 1")
[ "$(m 'mtls_mode{mode="strict"}')" = 0 ] || p+=("mtls_mode strict is not 0")
[ "$(plain plaintext-p1)" = plaintext-p1 ] || p+=("a plaintext client is not forwarded")
[ "$(nocert n1)" = n1 ] || p+=("a TLS client without a certificate is not forwarded")
[ "$(mtls_client "$PORT_a" a1)" = a1 ] || p+=("the allowed mTLS client is not forwarded")
[ "$(mtls_client "$PORT_b" b1)" = b1 ] || p+=("the mTLS client the rules refuse is not forwarded")
wait_metric 'mtls_connections_by_kind_total{kind="mtls"}' 2 || p+=("by kind mtls is $(m 'mtls_connections_by_kind_total{kind="mtls"}'), not 2")
[ "$(m 'mtls_connections_by_kind_total{kind="plaintext"}')" = 1 ] || p+=("by kind plaintext is not 1")
[ "$(m 'mtls_connections_by_kind_total{kind="tls_no_cert"}')" = 1 ] || p+=("by kind tls_no_cert is not 1")
[ "$(m 'mtls_would_refuse_total{reason="identity_not_allowed"}')" = 1 ] || p+=("would_refuse identity_not_allowed is not 1")
[ "$(m "mtls_identity_would_refuse_total{identity=\"$TD/b\",reason=\"identity_not_allowed\"}")" = 1 ] || p+=("b's would_refuse is not counted under its identity")
[ "$(m "mtls_identity_connections_total{identity=\"$TD/a\",kind=\"mtls\"}")" = 1 ] || p+=("a's connection is not counted under its identity")
[ "$(m 'mtls_identity_connections_total{identity="none",kind="plaintext"}')" = 1 ] || p+=("the plaintext client is not counted as identity none")
[ "$(m 'mtls_identity_connections_total{identity="none",kind="tls_no_cert"}')" = 1 ] || p+=("the TLS client without a certificate is not counted as identity none")
zero "mtls_identity_would_refuse_total{identity=\"$TD/a\",reason=\"identity_not_allowed\"}" || p+=("a counted would_refuse")
[ "$(failed_total)" = 0 ] || p+=("handshakes failed in permissive mode: $(failed_total)")
wait_logged "$W/srv.log" would_refuse "$TD/b" || p+=("no would_refuse log line for b")
verdict "permissive: plaintext, no-cert TLS, allowed and refused mTLS all forwarded; counted by kind and identity" \
	"${p[@]+"${p[@]}"}" -- "$(curl -s "http://127.0.0.1:$M/metrics" | grep -E 'kind|would|mode' || true)"

# live connections across the switch: a plaintext one and b's
exec {live_plain}<>"/dev/tcp/127.0.0.1/$SRV_PORT"
printf 'lp\n' >&"$live_plain"
IFS= read -r -t 10 got <&"$live_plain" || got=""
[ "$got" = lp ] || _lib_die "(setup) the live plaintext connection does not echo"
exec {live_b}<>"/dev/tcp/127.0.0.1/$PORT_b"
printf 'lb\n' >&"$live_b"
IFS= read -r -t 10 got <&"$live_b" || got=""
[ "$got" = lb ] || _lib_die "(setup) b's live connection does not echo"
wait_metric 'mtls_would_refuse_total{reason="identity_not_allowed"}' 2 || _lib_die "(setup) b's live connection not counted"
# and one that has sent nothing yet (plaintext-wait 0: its first bytes decide)
exec {idle}<>"/dev/tcp/127.0.0.1/$SRV_PORT"

# --- 2. insecure-audit: a certificate required, b still forwarded (would_refuse) -----------
config insecure-audit
hup
p=()
# (the mode is applied, and said, after the reload line)
wait_for_line "$W/srv.log" '"event":"mode_changed".*"from":"permissive".*"to":"audit"' "$READY_LIMIT" ||
	p+=("no mode_changed line")
wait_for_line "$W/srv.log" '"event":"insecure_mode".*"mode":"audit"' "$READY_LIMIT" ||
	p+=("no insecure_mode warning for audit")
[ "$(m 'mtls_mode{mode="audit"}')" = 1 ] || p+=("mtls_mode audit is not 1")
[ "$(m 'mtls_mode{mode="permissive"}')" = 0 ] || p+=("mtls_mode permissive is still 1")
[ -z "$(plain plaintext-p2)" ] || p+=("a plaintext client is forwarded in audit mode")
[ -z "$(nocert n2)" ] || p+=("a TLS client without a certificate is forwarded in audit mode")
[ "$(mtls_client "$PORT_a" a2)" = a2 ] || p+=("the allowed mTLS client is not forwarded")
[ "$(mtls_client "$PORT_b" b2)" = b2 ] || p+=("the mTLS client the rules refuse is not forwarded in audit mode")
# the connection accepted in permissive mode that speaks only now: judged under audit
printf 'plaintext-idle\n' >&"$idle"
IFS= read -r -t 10 got <&"$idle" || got=""
exec {idle}>&-
[ -z "$got" ] || p+=("a plaintext client accepted before the switch and speaking after it was forwarded")
wait_metric 'mtls_would_refuse_total{reason="identity_not_allowed"}' 3 || p+=("would_refuse is $(m 'mtls_would_refuse_total{reason="identity_not_allowed"}'), not 3 (b's live connection counted again, or the new one not counted)")
wait_metric 'mtls_handshakes_total{result="failed",reason="not_tls"}' 2 || p+=("the plaintext clients (new, and idle from before) are not refused not_tls")
# (a refusal is counted after the client saw it)
wait_metric 'mtls_handshakes_total{result="failed",reason="no_certificate"}' 1 || p+=("the TLS client without a certificate is not refused no_certificate")
zero 'mtls_handshakes_total{result="failed",reason="identity_not_allowed"}' || p+=("b refused in audit mode")
# a1, b1, b's live one, a2, b2; p1 and the live plaintext one
[ "$(m 'mtls_connections_by_kind_total{kind="mtls"}')" = 5 ] || p+=("by kind mtls is not 5")
[ "$(m 'mtls_connections_by_kind_total{kind="plaintext"}')" = 2 ] || p+=("by kind plaintext is not 2")
# the live ones: plaintext closed (audit requires TLS), b kept
closed=""
for _ in $(seq 1 100); do
	grep -q '"event":"conn_rejudged".*"reason":"not_tls"' "$W/srv.log" && closed=1 && break
	sleep 0.05
done
[ -n "$closed" ] || p+=("the live plaintext connection was not closed by the switch to audit")
[ "$(m 'mtls_connections_closed_by_recheck_total{reason="not_tls"}')" = 1 ] || p+=("closed_by_recheck not_tls is not 1")
zero 'mtls_connections_closed_by_recheck_total{reason="identity_not_allowed"}' || p+=("b's live connection was closed in audit mode")
printf 'lb2\n' >&"$live_b"
IFS= read -r -t 10 got <&"$live_b" || got=""
[ "$got" = lb2 ] || p+=("b's live connection does not echo after the switch to audit")
verdict "audit: plaintext and no-cert refused, b forwarded as would_refuse, live b kept, live plaintext closed" \
	"${p[@]+"${p[@]}"}" -- "$(grep -v conn_open "$W/srv.log" | tail -n 6)"

# /status after the reload
curl -s "http://127.0.0.1:$M/status" >"$W/status.json"
p=()
python3 - "$W/status.json" "$D/root.pem" <<'EOF' || p+=("status content: $(cat "$W/status.json")")
import json, sys
s = json.load(open(sys.argv[1]))
assert s["mode"] == "audit", s["mode"]
r = s["last_reload"]
assert r["result"] == "ok" and r["trigger"] == "SIGHUP", r
c = s["certificate"]
assert c["serial"] and c["not_after"].endswith("Z") and "localhost" not in c["issuer"], c
assert c["file"].endswith("srv-chain.pem"), c
assert len(s["ca"]) == 1 and s["ca"][0]["not_after"], s["ca"]
assert len(s["crl"]) == 1, s["crl"]
l = s["crl"][0]
assert l["file"].endswith("crl.pem") and l["url"] is None and l["number"], l
assert 0 <= l["age_seconds"] < 3600 and l["next_update"].endswith("Z"), l
k = s["connections"]
assert k["open"] >= 1 and k["total"] >= 8 and k["by_kind"]["mtls"] == 5, k
assert k["would_refuse"] == 3, k
EOF
verdict "/status after the reload: mode, last reload, certificate, CA, connections" "${p[@]+"${p[@]}"}"

# --- 3. strict: b refused, its live connection closed --------------------------------------
config strict
hup
p=()
# (the mode is applied after the reload line)
wait_metric 'mtls_mode{mode="strict"}' 1 || p+=("mtls_mode strict is not 1")
[ -z "$(plain plaintext-p3)" ] || p+=("a plaintext client is forwarded in strict mode")
[ -z "$(nocert n3)" ] || p+=("a TLS client without a certificate is forwarded in strict mode")
[ "$(mtls_client "$PORT_a" a3)" = a3 ] || p+=("the allowed mTLS client is not forwarded")
[ -z "$(mtls_client "$PORT_b" b3)" ] || p+=("b is forwarded in strict mode")
wait_metric 'mtls_handshakes_total{result="failed",reason="identity_not_allowed"}' 1 || p+=("b is not refused identity_not_allowed")
wait_metric 'mtls_handshakes_total{result="failed",reason="not_tls"}' 3 || p+=("not_tls refusals are not 3")
wait_metric 'mtls_handshakes_total{result="failed",reason="no_certificate"}' 2 || p+=("no_certificate refusals are not 2")
[ "$(failed_total)" = 6 ] || p+=("refusals are $(failed_total), not exactly the 6 expected")
[ "$(m 'mtls_would_refuse_total{reason="identity_not_allowed"}')" = 3 ] || p+=("would_refuse moved in strict mode")
[ "$(m 'mtls_connections_by_kind_total{kind="mtls"}')" = 6 ] || p+=("by kind mtls is not 6")
closed=""
for _ in $(seq 1 100); do
	if ! IFS= read -r -t 0.1 got <&"$live_b"; then
		grep -q '"why":"no_longer_allowed"' "$W/srv.log" && closed=1 && break
	fi
done
[ -n "$closed" ] || p+=("b's live connection was not closed by the switch to strict")
[ "$(m 'mtls_connections_closed_by_recheck_total{reason="identity_not_allowed"}')" = 1 ] || p+=("closed_by_recheck identity_not_allowed is not 1")
verdict "strict: exactly plaintext, no-cert and b refused; b's live connection closed" \
	"${p[@]+"${p[@]}"}" -- "$(grep -v conn_open "$W/srv.log" | tail -n 6)"
exec {live_plain}>&- {live_b}>&-

# a config whose mode is unknown: the reload is refused, strict stays
config insecure-sometimes
hup
p=()
grep -q '"event":"reload_failed".*--mode' "$W/srv.log" || p+=("no reload_failed naming --mode")
[ "$(m 'mtls_mode{mode="strict"}')" = 1 ] || p+=("the mode changed")
[ -z "$(plain plaintext-p4)" ] || p+=("a plaintext client is forwarded")
# (/status is updated after the reload_failed line is queued)
st=""
for _ in $(seq 1 $((READY_LIMIT * 20))); do
	st=$(curl -s "http://127.0.0.1:$M/status" || true)
	grep -q '"result": "failed"' <<<"$st" && break
	sleep 0.05
done
grep -q '"result": "failed"' <<<"$st" || p+=("/status does not show the failed reload")
verdict "an unknown --mode in the config: reload refused, strict stays" "${p[@]+"${p[@]}"}"

# --- a server that speaks first, behind a permissive tunnel; PROXY v2 of unverified clients -
stop_bg "$SRV_PID"
start_backend "$W/greet.log" --mode greet
GREET=$BE_PORT
start_tunnel_server "$W/srv2.log" --target "127.0.0.1:$GREET" --cert "$W/srv-chain.pem" \
	--key "$W/srv.key" --ca "$D/root.pem" --allow-uri "$TD/a" --mode insecure-permissive \
	--plaintext-wait 300ms --metrics 127.0.0.1:0
p=()
got=$(python3 "$W/cli.py" read "$SRV_PORT")
[ "$got" = greetings ] || p+=("a client that waits for the server's greeting got '$got'")
wait_for_line "$W/srv2.log" '"kind":"plaintext".*"detected":"silence"' "$READY_LIMIT" ||
	p+=("no plaintext conn_open detected by silence")
got=$(python3 "$W/cli.py" tls "$SRV_PORT" x "$D/root.pem")
[ "$got" = greetings ] || p+=("a TLS client without a certificate got '$got' from the greeting server")
verdict "permissive: silence past --plaintext-wait is a plaintext client whose server speaks first; TLS still detected" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 4 "$W/srv2.log")"
stop_bg "$SRV_PID"

# --- permissive: the wait for the first bytes is part of the handshake timeout -------------
# (a client that sends one TLS byte late and then nothing is closed when the timeout counted
# from its accept runs out, not a whole timeout after that byte: 3 s here, not 5 s)
start_tunnel_server "$W/srv5.log" --target "127.0.0.1:$GREET" --cert "$W/srv-chain.pem" \
	--key "$W/srv.key" --ca "$D/root.pem" --allow-uri "$TD/a" --mode insecure-permissive \
	--plaintext-wait 0 --handshake-timeout 3s
took=$(python3 - "$SRV_PORT" <<'PY'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
t0 = time.monotonic()
time.sleep(2.0)
s.sendall(b"\x16")
s.settimeout(30)
try:
    while s.recv(100):
        pass
except OSError:
    pass
print(int((time.monotonic() - t0) * 1000))
PY
)
p=()
[ "${took:-99999}" -lt 4500 ] || p+=("closed after ${took:-?} ms, past the 3000 ms timeout counted from the accept")
verdict "permissive: a late first byte does not restart the handshake timeout (closed after ${took} ms of 3000)" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 3 "$W/srv5.log")"
stop_bg "$SRV_PID"

start_backend "$W/pe.log" --mode proxy-echo
start_tunnel_server "$W/srv3.log" --target "127.0.0.1:$BE_PORT" --cert "$W/srv-chain.pem" \
	--key "$W/srv.key" --ca "$D/root.pem" --allow-uri "$TD/a" --mode insecure-permissive \
	--proxy-protocol
connector a
connector b
p=()
[ "$(plain plaintext-q1)" = plaintext-q1 ] || p+=("plaintext not forwarded with --proxy-protocol")
[ "$(nocert q2)" = q2 ] || p+=("no-cert TLS not forwarded with --proxy-protocol")
[ "$(mtls_client "$PORT_b" q3)" = q3 ] || p+=("b not forwarded with --proxy-protocol")
[ "$(mtls_client "$PORT_a" q4)" = q4 ] || p+=("a not forwarded with --proxy-protocol")
mapfile -t hdr < <(grep '^proxy ' "$W/pe.log")
[ "${#hdr[@]}" = 4 ] || p+=("${#hdr[@]} PROXY headers, not 4")
case ${hdr[0]:-} in *ssl_*|*identity=*) p+=("plaintext client's header: ${hdr[0]:-}") ;; esac
case ${hdr[1]:-} in *"ssl_verify=1"*identity=*|*cn=*) p+=("no-cert header: ${hdr[1]:-}") ;; *"ssl_client=1 ssl_verify=1"*) ;; *) p+=("no-cert header: ${hdr[1]:-}") ;; esac
case ${hdr[2]:-} in *identity=*|*cn=*) p+=("b's header names an identity: ${hdr[2]:-}") ;; *"ssl_verify=1"*) ;; *) p+=("b's header: ${hdr[2]:-}") ;; esac
case ${hdr[3]:-} in *"ssl_verify=0"*"identity=$TD/a"*) ;; *) p+=("a's header: ${hdr[3]:-}") ;; esac
verdict "PROXY v2: no SSL TLV for plaintext, verify=1 and no identity for no-cert and would_refuse, a's identity" \
	"${p[@]+"${p[@]}"}" -- "${hdr[@]+"${hdr[@]}"}"
stop_bg "$SRV_PID"

# --- the bound on per-identity series: 6 identities, 3 slots --------------------------------
# first two clients of a foreign CA (whatever names they carry: one identity, untrusted),
# then six of ours
for i in 1 2 3 4 5 6; do issue --profile client --uri "$TD/scan$i" --out "$W/s$i"; done
"$MTLS" ca init --dir "$W/foreign" >/dev/null 2>&1 || _lib_die "(setup) foreign CA"
for i in 1 2; do
	"$MTLS" ca issue --dir "$W/foreign" --profile client --uri "$TD/forged$i" --out "$W/f$i" \
		>/dev/null 2>&1 || _lib_die "(setup) foreign client"
done
start_backend "$W/be4.log" --mode echo
start_tunnel_server "$W/srv4.log" --target "127.0.0.1:$BE_PORT" --cert "$W/srv-chain.pem" \
	--key "$W/srv.key" --ca "$D/root.pem" --allow-uri "$TD/a" --mode insecure-audit \
	--metrics-identities 3 --metrics 127.0.0.1:0
M=$SRV_METRICS
for i in 1 2; do
	got=$(python3 "$W/cli.py" tls "$SRV_PORT" x "$D/root.pem" "$W/f$i-chain.pem" "$W/f$i.key")
	[ "$got" = x ] || _lib_die "(setup) foreign client $i not forwarded in audit mode: '$got'"
done
for i in 1 2 3 4 5 6; do
	got=$(python3 "$W/cli.py" tls "$SRV_PORT" x "$D/root.pem" "$W/s$i-chain.pem" "$W/s$i.key")
	[ "$got" = x ] || _lib_die "(setup) scan client $i not forwarded: '$got'"
done
wait_metric 'mtls_would_refuse_total{reason="identity_not_allowed"}' 6 || _lib_die "(setup) would_refuse not 6"
series=$(curl -s "http://127.0.0.1:$M/metrics" | grep -c '^mtls_identity_connections_total{' || true)
p=()
[ "$series" = 4 ] || p+=("$series identity series, not 3 + other")
[ "$(m 'mtls_identity_connections_total{identity="untrusted",kind="mtls"}')" = 2 ] || p+=("the foreign CA's clients are not one identity, untrusted")
[ "$(m 'mtls_identity_would_refuse_total{identity="untrusted",reason="unknown_ca"}')" = 2 ] || p+=("untrusted's would_refuse unknown_ca is not 2")
[ "$(m "mtls_identity_connections_total{identity=\"$TD/scan2\",kind=\"mtls\"}")" = 1 ] || p+=("scan2 has no slot of its own")
[ "$(m 'mtls_identity_connections_total{identity="other",kind="mtls"}')" = 4 ] || p+=("other is not 4")
[ "$(m 'mtls_identity_would_refuse_total{identity="other",reason="identity_not_allowed"}')" = 4 ] || p+=("other's would_refuse is not 4")
verdict "per-identity metrics are bounded: --metrics-identities 3, foreign-CA names as one (untrusted), the rest as other" "${p[@]+"${p[@]}"}" \
	-- "$(curl -s "http://127.0.0.1:$M/metrics" | grep '^mtls_identity' || true)"

# /healthz?target=1: the target up, then down
p=()
code=$(curl -s -o "$W/h1" -w '%{http_code}' "http://127.0.0.1:$M/healthz?target=1")
[ "$code" = 200 ] && grep -q '^target: ok' "$W/h1" || p+=("target up: $code $(cat "$W/h1")")
stop_bg "$BE_PID"
code=$(curl -s -o "$W/h2" -w '%{http_code}' "http://127.0.0.1:$M/healthz?target=1")
[ "$code" = 503 ] && grep -q '^target: unreachable' "$W/h2" || p+=("target down: $code $(cat "$W/h2")")
code=$(curl -s -o "$W/h3" -w '%{http_code}' "http://127.0.0.1:$M/healthz")
[ "$code" = 200 ] || p+=("plain /healthz with the target down: $code (liveness must not follow the target)")
verdict "/healthz?target=1 checks that the target accepts a connection" "${p[@]+"${p[@]}"}"
stop_bg "$SRV_PID"

# /status names a fetched CRL's source: --crl-url, kept in --crl-cache, beside a plain --crl
start_bg "$W/serve.log" "$MTLS" ca serve --dir "$D" --listen 127.0.0.1:0 \
	--http-listen 127.0.0.1:0 --admin-uri "$TD/admin"
wait_for_line "$W/serve.log" '"event":"http_listening"' "$READY_LIMIT" "$BG_PID" ||
	_lib_die "(setup) mtls ca serve did not start: $(cat "$W/serve.log")"
HP=$(_daemon_port "$W/serve.log" http_listening)
start_backend "$W/be6.log" --mode echo
start_tunnel_server "$W/srv6.log" --target "127.0.0.1:$BE_PORT" --cert "$W/srv-chain.pem" \
	--key "$W/srv.key" --ca "$D/root.pem" --allow-uri "$TD/a" --crl "$D/crl.pem" \
	--crl-url "http://127.0.0.1:$HP/crl" --crl-cache "$W/cache-crl.pem" --metrics 127.0.0.1:0
p=()
# (a failed request is a finding with the daemon's log, not a silent end of the script)
rc=1
for try in 1 2 3; do
	curl -s --max-time 30 "http://127.0.0.1:$SRV_METRICS/status" >"$W/status5.json" && rc=0 && break
	rc=$?
	echo "# GET /status, try $try: curl exit $rc; server alive: $(kill -0 "$SRV_PID" 2>/dev/null && echo yes || echo no)"
	sleep 1
done
[ "$rc" = 0 ] ||
	p+=("GET /status failed (curl exit $rc); the server's log ends: $(tail -n 20 "$W/srv6.log")")
python3 - "$W/status5.json" "$HP" <<'EOF' || p+=("status content: $(cat "$W/status5.json")")
import json, sys
s = json.load(open(sys.argv[1]))
crl = s["crl"]
assert len(crl) == 2, crl
assert crl[0]["file"].endswith("/ca/crl.pem") and crl[0]["url"] is None, crl[0]
assert crl[1]["file"].endswith("cache-crl.pem"), crl[1]
assert crl[1]["url"] == "http://127.0.0.1:%s/crl" % sys.argv[2], crl[1]
assert crl[1]["number"] and crl[1]["age_seconds"] >= 0, crl[1]
assert s["mode"] == "strict" and s["last_reload"]["trigger"] == "start", s
EOF
verdict "/status: each CRL with its file, its URL when fetched, its number and age" "${p[@]+"${p[@]}"}"
finish
