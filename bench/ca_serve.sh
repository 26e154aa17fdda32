#!/usr/bin/env bash
# The CA service on one core: `mtls ca serve` pinned to CPU 0, bench/caload (libcurl, N
# requests in flight, connections kept alive) on CPU 1. Measures:
#   - tokens made by `mtls ca token` (one process each, as an operator makes them)
#   - enrollments/s: POST /v1/enroll, each token once, one pre-made CSR (one P-256 key for
#     every request: the client's key generation is not what is measured)
#   - renewals/s: POST /v1/renew {"same_key": true} over mutual TLS with one client
#     certificate, repeated (the server still checks, signs, records and audits each one)
#   - OCSP responses/s on the plain-HTTP port, POST and GET (RFC 5019), for LEAVES
#     certificates round robin (answers after the first per certificate come from the
#     responder's cache of signed answers), and once for UNCACHED certificates never asked
#     about before (each answer signed)
#   - the same OCSP requests against `openssl ocsp` as a responder on the same CPU, on an
#     index.txt made from the inventory (ca.db), signing with the issuing CA's own
#     certificate and key (mtls ca issue has no OCSP-signing profile), in one process and
#     with -multi (forked responders), the better of the two in the table
# p50/p99 of each, the service's CPU per request and its RSS before and after. Each figure is
# one run of SECS seconds (the machine is shared: look at the CPU per request too); the
# enrollment run ends early when the TOKENS run out (making them takes 20-40 ms each).
#
#   bench/ca_serve.sh [BUILD_DIR]
#   SECS=10 CONNECTIONS=8 LEAVES=20 TOKENS=1500 UNCACHED=1000 MULTI=4 bench/ca_serve.sh build
#
# Every request must be answered 200 with a valid body; caload says FAILED otherwise and the
# table marks the figure. Not a test: nothing here has a threshold.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$top/build}
SECS=${SECS:-10}
CONNS=${CONNECTIONS:-8}
LEAVES=${LEAVES:-20}
TOKENS=${TOKENS:-1500}
UNCACHED=${UNCACHED:-1000}
MULTI=${MULTI:-4}
# shellcheck source=bench/common.sh
. "$top/bench/common.sh"
bench_setup "$bin" mtls caload
for t in openssl sqlite3 taskset; do
	command -v "$t" >/dev/null || { echo "bench: $t is needed" >&2; exit 1; }
done

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }
HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
children_ticks() { # a process and its children (openssl ocsp -multi forks)
	local sum=0 p
	for p in $1 $(pgrep -P "$1" 2>/dev/null); do
		[ -r "/proc/$p/stat" ] && sum=$((sum + $(ticks "$p")))
	done
	echo "$sum"
}
declare -A R
failures=0

# run KEY PID CAL_ARGS...: caload on CPU 1; fills R[KEY.rps|p50|p99|max|cpu_ms|ok|failed]
run() {
	local key=$1 pid=$2 t0 t1 out rc=0
	shift 2
	t0=$(children_ticks "$pid")
	out=$(taskset -c 1 "$bin/caload" "$@" --connections "$CONNS" 2>"$tmp/caload.err") || rc=$?
	t1=$(children_ticks "$pid")
	echo "  $key: $out"
	if [ "$rc" -ne 0 ] || [ -s "$tmp/caload.err" ]; then
		sed 's/^/  /' "$tmp/caload.err" >&2
	fi
	R[$key.rps]=$(field rps "$out")
	R[$key.p50]=$(field p50_ms "$out")
	R[$key.p99]=$(field p99_ms "$out")
	R[$key.max]=$(field max_ms "$out")
	R[$key.ok]=$(field ok "$out")
	R[$key.failed]=$(field failed "$out")
	R[$key.conns]=$(field new_connections "$out")
	R[$key.cpu_ms]=$(awk -v t=$((t1 - t0)) -v hz="$HZ" -v n="${R[$key.ok]:-0}" \
		'BEGIN { if (n > 0) printf "%.3f", t / hz / n * 1000; else print "nan" }')
	if [ "$rc" -ne 0 ] || [ "${R[$key.failed]:-1}" != 0 ]; then
		echo "bench: FAILED: $key had failed requests (${R[$key.failed]:-?}): $(cat "$tmp/caload.err")" >&2
		R[$key.rps]="${R[$key.rps]:-0} FAILED"
		failures=$((failures + 1))
	fi
}

# --- a throwaway CA, leaves, the requests ---------------------------------------------------
ca=$tmp/ca
"$bin/mtls" ca init --dir "$ca" --key p256 >/dev/null
for i in $(seq "$LEAVES"); do
	"$bin/mtls" ca issue --dir "$ca" --profile client --uri "spiffe://bench.test/leaf-$i" \
		--out "$tmp/leaf$i" >/dev/null
	# SHA-1 CertIDs and no nonce, as `openssl ocsp -no_nonce` and browsers send them
	openssl ocsp -issuer "$ca/intermediate.pem" -cert "$tmp/leaf$i.pem" -no_nonce \
		-reqout "$tmp/req$i.der" >/dev/null
done
reqs=()
for i in $(seq "$LEAVES"); do reqs+=(--req "$tmp/req$i.der"); done
# renewal: one client certificate, a CSR for its own key
"$bin/mtls" ca issue --dir "$ca" --profile client --uri spiffe://bench.test/renewer \
	--out "$tmp/renewer" >/dev/null
openssl req -new -key "$tmp/renewer.key" -subj / -out "$tmp/renew.csr" 2>/dev/null
# enrollment: one key and CSR for every request
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout "$tmp/enroll.key" \
	-subj / -out "$tmp/enroll.csr" 2>/dev/null

# --- mtls ca serve ----------------------------------------------------------------------------
taskset -c 0 "$bin/mtls" ca serve --dir "$ca" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
	--leaf-lifetime 24h 2>"$tmp/serve.log" &
spid=$!
pids+=("$spid")
bench_wait "$tmp/serve.log" '"event":"listening"' || {
	cat "$tmp/serve.log" >&2
	echo "bench: mtls ca serve did not start" >&2
	exit 1
}
port_of() { grep -m1 -F "\"event\":\"$1\"" "$tmp/serve.log" | sed -n 's/.*"address":"[^"]*:\([0-9][0-9]*\)".*/\1/p'; }
API=https://127.0.0.1:$(port_of listening)
HTTP=http://127.0.0.1:$(port_of http_listening)
echo "bench: mtls ca serve pid $spid, API $API, plain $HTTP; $CONNS requests in flight, ${SECS}s per figure"

# tokens, one `mtls ca token` each (on CPU 1, while the service idles)
t0=$(date +%s.%N)
for i in $(seq "$TOKENS"); do
	taskset -c 1 "$bin/mtls" ca token --dir "$ca" --profile client \
		--uri "spiffe://bench.test/enrolled" --ttl 1h 2>/dev/null
done >"$tmp/tokens.txt"
t1=$(date +%s.%N)
R[token.rate]=$(awk -v a="$t0" -v b="$t1" -v n="$TOKENS" 'BEGIN { printf "%.0f", n / (b - a) }')
R[token.ms]=$(awk -v a="$t0" -v b="$t1" -v n="$TOKENS" 'BEGIN { printf "%.2f", (b - a) / n * 1000 }')
echo "  tokens: $TOKENS in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s"

# warm up (first connections, first OCSP answers signed), then the figures
taskset -c 1 "$bin/caload" ocsp --url "$HTTP/ocsp" "${reqs[@]}" --seconds 0.5 >/dev/null 2>&1 || true
R[rss.start]=$(rss "$spid")
run enroll "$spid" enroll --url "$API/v1/enroll" --cacert "$ca/root.pem" --tokens "$tmp/tokens.txt" \
	--csr "$tmp/enroll.csr" --seconds "$SECS"
R[rss.enroll]=$(rss "$spid")
run renew "$spid" renew --url "$API/v1/renew" --cacert "$ca/root.pem" --cert "$tmp/renewer-chain.pem" \
	--key "$tmp/renewer.key" --csr "$tmp/renew.csr" --seconds "$SECS"
R[rss.renew]=$(rss "$spid")
run mtls_post "$spid" ocsp --url "$HTTP/ocsp" "${reqs[@]}" --seconds "$SECS"
run mtls_get "$spid" ocsp --url "$HTTP/ocsp" "${reqs[@]}" --get --seconds "$SECS"
R[rss.ocsp]=$(rss "$spid")

# OCSP for certificates never asked about: the enrolled ones, each once (every answer signed)
sqlite3 "$ca/ca.db" "select serial from certs where profile = 'client' and sans like '%/enrolled' limit $UNCACHED" >"$tmp/uncached.txt"
ureqs=()
n=0
while read -r serial; do
	n=$((n + 1))
	openssl ocsp -issuer "$ca/intermediate.pem" -serial "0x$serial" -no_nonce \
		-reqout "$tmp/u$n.der" >/dev/null
	ureqs+=(--req "$tmp/u$n.der")
done <"$tmp/uncached.txt"
if [ "$n" -gt 0 ]; then
	run mtls_uncached "$spid" ocsp --url "$HTTP/ocsp" "${ureqs[@]}" --requests "$n" --seconds "$SECS"
fi
R[rss.end]=$(rss "$spid")
kill "$spid"
wait "$spid" 2>/dev/null || true
grep -v '"level":"info"' "$tmp/serve.log" | head -n 5 >"$tmp/serve.warn" || true

# --- openssl ocsp on the same index, same CPU -------------------------------------------------
# OpenSSL's CA database: status, expiry, revocation, serial, file, subject (subjects repeat:
# every enrollment has the same names, hence unique_subject = no)
sqlite3 -separator $'\t' "$ca/ca.db" "select case status when 'revoked' then 'R' else 'V' end,
	substr(strftime('%Y%m%d%H%M%S', not_after, 'unixepoch'), 3) || 'Z',
	case when revoked_at is null then '' else substr(strftime('%Y%m%d%H%M%S', revoked_at, 'unixepoch'), 3) || 'Z' end,
	serial, 'unknown', '/CN=' || serial from certs where profile not in ('root', 'intermediate')" \
	>"$tmp/index.txt"
echo 'unique_subject = no' >"$tmp/index.txt.attr"
R[index.rows]=$(wc -l <"$tmp/index.txt")

# start_openssl LOG [-multi N]: sets opid and oport
start_openssl() {
	local log=$1
	shift
	taskset -c 0 openssl ocsp -port 0 -index "$tmp/index.txt" -CA "$ca/intermediate.pem" \
		-rsigner "$ca/intermediate.pem" -rkey "$ca/intermediate.key" -nmin 60 "$@" \
		>"$log" 2>&1 &
	opid=$!
	pids+=("$opid")
	bench_wait "$log" '^ACCEPT' || { cat "$log" >&2; echo "bench: openssl ocsp did not start" >&2; exit 1; }
	oport=$(sed -n 's/^ACCEPT .*:\([0-9]*\) .*/\1/p' "$log" | head -n 1)
	sleep 0.5 # -multi: its children
}
stop_openssl() {
	local c
	for c in $(pgrep -P "$opid" 2>/dev/null); do kill "$c" 2>/dev/null || true; done
	kill "$opid" 2>/dev/null || true
	wait "$opid" 2>/dev/null || true
}
for variant in one multi; do
	if [ "$variant" = one ]; then start_openssl "$tmp/openssl-one.log"; else
		start_openssl "$tmp/openssl-multi.log" -multi "$MULTI"; fi
	echo "bench: openssl ocsp ($variant) pid $opid, port $oport"
	taskset -c 1 "$bin/caload" ocsp --url "http://127.0.0.1:$oport" "${reqs[@]}" --seconds 0.5 >/dev/null 2>&1 || true
	run "openssl_${variant}_post" "$opid" ocsp --url "http://127.0.0.1:$oport" "${reqs[@]}" --seconds "$SECS"
	run "openssl_${variant}_get" "$opid" ocsp --url "http://127.0.0.1:$oport" "${reqs[@]}" --get --seconds "$SECS"
	if [ "$n" -gt 0 ]; then
		run "openssl_${variant}_uncached" "$opid" ocsp --url "http://127.0.0.1:$oport" "${ureqs[@]}" \
			--requests "$n" --seconds "$SECS"
	fi
	stop_openssl
done
# the better openssl variant per figure
for f in post get uncached; do
	a=${R[openssl_one_$f.rps]:-0} b=${R[openssl_multi_$f.rps]:-0}
	if awk -v a="${a%% *}" -v b="${b%% *}" 'BEGIN { exit !(b > a) }'; then v=multi; else v=one; fi
	for m in rps p50 p99 max cpu_ms conns; do R[openssl_$f.$m]=${R[openssl_${v}_$f.$m]:-}; done
	R[openssl_$f.variant]=$([ "$v" = multi ] && echo "-multi $MULTI" || echo "one process")
done

# --- report -------------------------------------------------------------------------------------
ratio() { awk -v a="${1%% *}" -v b="${2%% *}" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "n/a" }'; }
cells() { # KEY: req/s | p50 / p99 / max | CPU ms/req | connections opened
	printf '%s | %s / %s / %s | %s | %s' "${R[$1.rps]:-}" "${R[$1.p50]:-}" "${R[$1.p99]:-}" \
		"${R[$1.max]:-}" "${R[$1.cpu_ms]:-}" "${R[$1.conns]:-}"
}
line() { # LABEL KEY [OPENSSL_KEY]
	if [ -n "${3:-}" ]; then
		printf '| %s | %s | %s | %s (rps), %s (p99) |\n' "$1" "$(cells "$2")" "$(cells "$3")" \
			"$(ratio "${R[$2.rps]:-0}" "${R[$3.rps]:-0}")" "$(ratio "${R[$3.p99]:-0}" "${R[$2.p99]:-0}")"
	else
		printf '| %s | %s | | | | | |\n' "$1" "$(cells "$2")"
	fi
}
echo
echo "# mtls ca serve on one core, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo
echo "$(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -n 1)); $(openssl version)."
echo "Service pinned to CPU 0, caload on CPU 1 with $CONNS requests in flight, one run of ${SECS}s"
echo "per figure. P-256 CA. OCSP: $LEAVES certificates round robin; 'first ask': $n certificates once each."
echo "openssl ocsp signs with the issuing CA's key (-rsigner intermediate.pem), index of ${R[index.rows]} rows."
echo
echo "| figure | mtls req/s | p50 / p99 / max ms | CPU ms/req | conns | openssl req/s | p50 / p99 / max ms | CPU ms/req | conns | mtls / openssl |"
echo "|---|---|---|---|---|---|---|---|---|---|"
line "enrollments" enroll
line "renewals (same key)" renew
line "OCSP POST" mtls_post openssl_post
line "OCSP GET" mtls_get openssl_get
line "OCSP POST, first ask (signed)" mtls_uncached openssl_uncached
echo
echo "Ratios: req/s mtls over openssl; p99 openssl over mtls (>1: mtls better). CPU ms/req: the"
echo "server's own CPU time (user + system) per answered request, steadier than req/s on a shared"
echo "machine. conns: TCP connections the client opened."
echo "openssl variant used (the better of one process and -multi $MULTI): POST ${R[openssl_post.variant]},"
echo "GET ${R[openssl_get.variant]}, first ask ${R[openssl_uncached.variant]}. openssl ocsp answers HTTP/1.0"
echo "and closes: each of its requests is a new TCP connection; mtls keeps them alive."
echo "Tokens: ${R[token.rate]}/s by \`mtls ca token\` (${R[token.ms]} ms each, a process per token)."
echo "Service RSS KiB: ${R[rss.start]} after warm-up, ${R[rss.enroll]} after enrollments, ${R[rss.renew]}"
echo "after renewals, ${R[rss.ocsp]} after OCSP, ${R[rss.end]} at the end."
if [ -s "$tmp/serve.warn" ]; then
	echo "Service log lines above info (first 5):"
	sed 's/^/    /' "$tmp/serve.warn"
fi
if [ "$failures" -gt 0 ]; then
	echo
	echo "FAILED: $failures figure(s) had failed requests; see above."
	exit 1
fi
