#!/usr/bin/env bash
# The comparison benchmark: mtls server against stunnel, HAProxy (mode tcp, verify
# required), nginx (stream, ssl_verify_client on) and hitch (client-verify required), all
# from Debian, in one run, with the same certificates (ECDSA P-256 from `mtls ca`), the same
# suite (TLS 1.3, TLS_AES_128_GCM_SHA256) and one worker each. The terminator is pinned to
# CPU 0; the load generator (bench/loadgen, plain OpenSSL) and the echo backend
# (bench/echod) to CPU 1. Every loop is bounded in time.
#
#   bench/run.sh [BUILD_DIR]                       results in bench/results/latest.md
#   RUNS=3 SECONDS_PER_RUN=5 IDLE=10000 TERMINATORS="mtls mtls_cold haproxy nginx stunnel hitch" \
#       TWO_HOP="mtls stunnel haproxy nginx" bench/run.sh
#
# mtls_cold is mtls with --verify-cache 0: the figure for clients whose certificate the server
# has not seen (every chain verified in full). The load generator always presents one
# certificate, so plain mtls answers from its verification cache after the first handshake.
#
# Two hops (TWO_HOP; "" to skip): the application's plaintext goes through a client-side
# terminator (mtls connector, stunnel client = yes, HAProxy server ssl crt, nginx proxy_ssl)
# to the same product's server side and on to the backend, both on CPU 0, as a connector and
# server pair would be deployed. Negative check: a client side holding another CA's
# certificate gets no byte through. Figures: new application connections/s (each one an
# mTLS handshake between the hops, resumed where the client side keeps sessions), latency,
# bulk, and the CPU of both processes per connection, request and MB.
#
# For each terminator: a negative check first (a client from another CA must be refused, so
# a faster-because-broken result is caught), then full and resumed handshakes/s (new TCP +
# mutual-TLS handshake + one 64-byte round trip), latency p50/p99/p999 and requests/s with 1
# and 32 persistent connections, bulk MB/s, and KiB of terminator memory per idle connection.
# Idle memory is measured as a fleet of clients costs: each connection a distinct client
# with a certificate of its own (made by the loadgen, --fleet), a full handshake, one request
# and its answer read with whatever the server sent (session tickets), then idle; and again
# with one certificate for every connection (what earlier runs reported: a server may answer
# such a client from its caches and keep less).
# Each figure is the median of RUNS runs; the terminator's CPU seconds per handshake and the
# load generator's CPU use are shown beside each rate, so a saturated client is visible.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$top/build}
RUNS=${RUNS:-3}
SECS=${SECONDS_PER_RUN:-5}
# 10,000 tunnelled connections need over 20,000 descriptors in the terminator (two per
# connection); where the hard limit is 20,000 (as on our 2-core machines) 9,000 is the most.
IDLE=${IDLE:-9000}
TERMINATORS=${TERMINATORS:-"mtls mtls_cold haproxy nginx stunnel hitch"}
TWO_HOP=${TWO_HOP-"mtls stunnel haproxy nginx"}
out_dir=$top/bench/results
mkdir -p "$out_dir"
result=$out_dir/latest.md

for t in mtls loadgen echod; do
	[ -x "$bin/$t" ] || { echo "bench: $bin/$t is missing; build first" >&2; exit 1; }
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
FDLIMIT=$(ulimit -n)

tmp=$(mktemp -d)
pids=()
cleanup() {
	set +e
	for p in "${pids[@]}"; do stop_tree "$p"; done
	wait 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

# --- certificates: one CA for everyone, and a foreign one for the negative check -----------
"$bin/mtls" ca init --dir "$tmp/ca" --key p256 >/dev/null
"$bin/mtls" ca issue --dir "$tmp/ca" --profile server --dns bench.test --ip 127.0.0.1 --out "$tmp/srv" >/dev/null
"$bin/mtls" ca issue --dir "$tmp/ca" --profile client --uri spiffe://bench.test/client --out "$tmp/cli" >/dev/null
"$bin/mtls" ca init --dir "$tmp/other" --key p256 >/dev/null
"$bin/mtls" ca issue --dir "$tmp/other" --profile client --uri spiffe://bench.test/client --out "$tmp/bad" >/dev/null
cat "$tmp/srv-chain.pem" "$tmp/srv.key" >"$tmp/srv-combined.pem"
cat "$tmp/cli-chain.pem" "$tmp/cli.key" >"$tmp/cli-combined.pem"
cat "$tmp/bad-chain.pem" "$tmp/bad.key" >"$tmp/bad-combined.pem"
chmod 644 "$tmp"/*.pem "$tmp"/*.key "$tmp/ca/root.pem"
chmod 755 "$tmp" "$tmp/ca"
CA=$tmp/ca/root.pem
TLS=(--cert "$tmp/cli-chain.pem" --key "$tmp/cli.key" --ca "$CA" --name bench.test)
BAD=(--cert "$tmp/bad-chain.pem" --key "$tmp/bad.key" --ca "$CA" --name bench.test)
# a fleet: every connection with a client certificate of its own, made by the loadgen and
# signed by the issuing CA (see bench/loadgen.c)
chmod 644 "$tmp/ca/intermediate.pem" "$tmp/ca/intermediate.key"
FLEET=(--fleet --cert "$tmp/ca/intermediate.pem" --key "$tmp/ca/intermediate.key" --ca "$CA" --name bench.test)
SUITE=TLS_AES_128_GCM_SHA256

# A port below the kernel's ephemeral range (which thousands of client connections in
# TIME_WAIT occupy after a run) and free in every TCP state.
free_port() {
	local p low
	low=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
	for _ in $(seq 50); do
		p=$((10000 + RANDOM % (low - 10000)))
		ss -Htan "sport = :$p" | grep -c . >/dev/null || { echo "$p"; return; }
	done
	echo "bench: no free port" >&2
	exit 1
}

taskset -c 1 "$bin/echod" >"$tmp/echod.log" &
pids+=($!)
for _ in $(seq 50); do grep -q listening "$tmp/echod.log" && break; sleep 0.1; done
ECHO=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$tmp/echod.log")

# --- the terminators --------------------------------------------------------------------
# start_NAME PORT: start it pinned to CPU 0; sets TPID (the process whose tree we measure)
start_mtls() {
	taskset -c 0 "$bin/mtls" server --listen "127.0.0.1:$1" --target "127.0.0.1:$ECHO" \
		--cert "$tmp/srv-chain.pem" --key "$tmp/srv.key" --ca "$CA" --insecure-key-permissions \
		--allow-uri 'spiffe://bench.test/*' --workers 1 --log-level error \
		--max-connections 0 --handshake-timeout 2m --idle-timeout 0 2>"$tmp/mtls.log" &
	TPID=$!
}

# mtls with its verification cache off: every client chain is verified in full, as for
# certificates never seen before (a cache miss costs one more SHA-256 of the chain)
start_mtls_cold() {
	taskset -c 0 "$bin/mtls" server --listen "127.0.0.1:$1" --target "127.0.0.1:$ECHO" \
		--cert "$tmp/srv-chain.pem" --key "$tmp/srv.key" --ca "$CA" --insecure-key-permissions \
		--allow-uri 'spiffe://bench.test/*' --workers 1 --log-level error --verify-cache 0 \
		--max-connections 0 --handshake-timeout 2m --idle-timeout 0 2>"$tmp/mtls_cold.log" &
	TPID=$!
}

haproxy_head() { # what every HAProxy config here begins with
	cat <<EOF
global
	nbthread 1
	maxconn $(((FDLIMIT - 100) / 2))
	tune.ssl.default-dh-param 2048
defaults
	mode tcp
	timeout connect 5s
	timeout client 120s
	timeout server 120s
EOF
}

nginx_head() { # PREFIX_DIR: what every nginx config here begins with
	cat <<EOF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
daemon off;
master_process off;
pid $1/nginx.pid;
error_log $1/logs/error.log error;
worker_rlimit_nofile 65536;
events { worker_connections 65536; }
EOF
}

start_haproxy() {
	{
		haproxy_head
		cat <<EOF
frontend fe
	bind 127.0.0.1:$1 ssl crt $tmp/srv-combined.pem ca-file $CA verify required ssl-min-ver TLSv1.3 ciphersuites $SUITE
	default_backend be
backend be
	server echo 127.0.0.1:$ECHO
EOF
	} >"$tmp/haproxy.cfg"
	taskset -c 0 haproxy -f "$tmp/haproxy.cfg" -db >"$tmp/haproxy.log" 2>&1 &
	TPID=$!
}

start_nginx() {
	mkdir -p "$tmp/nginx/logs"
	{
		nginx_head "$tmp/nginx"
		cat <<EOF
stream {
	server {
		listen 127.0.0.1:$1 ssl;
		ssl_certificate $tmp/srv-chain.pem;
		ssl_certificate_key $tmp/srv.key;
		ssl_client_certificate $CA;
		ssl_verify_client on;
		ssl_verify_depth 2;
		ssl_protocols TLSv1.3;
		ssl_conf_command Ciphersuites $SUITE;
		ssl_session_tickets on;
		proxy_pass 127.0.0.1:$ECHO;
	}
}
EOF
	} >"$tmp/nginx.conf"
	taskset -c 0 nginx -p "$tmp/nginx" -c "$tmp/nginx.conf" >"$tmp/nginx.log" 2>&1 &
	TPID=$!
}

start_stunnel() {
	cat >"$tmp/stunnel.conf" <<EOF
foreground = yes
pid =
debug = 3
[bench]
accept = 127.0.0.1:$1
connect = 127.0.0.1:$ECHO
cert = $tmp/srv-chain.pem
key = $tmp/srv.key
CAfile = $CA
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.3
ciphersuites = $SUITE
EOF
	taskset -c 0 stunnel "$tmp/stunnel.conf" >"$tmp/stunnel.log" 2>&1 &
	TPID=$!
}

start_hitch() {
	cat >"$tmp/hitch.conf" <<EOF
frontend = "[127.0.0.1]:$1"
backend = "[127.0.0.1]:$ECHO"
pem-file = "$tmp/srv-combined.pem"
workers = 1
daemon = off
user = "nobody"
tls-protos = TLSv1.3
ciphersuites = "$SUITE"
client-verify = required
client-verify-ca = "$CA"
EOF
	taskset -c 0 hitch --config="$tmp/hitch.conf" >"$tmp/hitch.log" 2>&1 &
	TPID=$!
}

# client_NAME PORT SERVER_PORT cli|bad: the client side of a two-hop pair, pinned to CPU 0,
# presenting our client certificate (cli) or another CA's (bad); sets CPID
client_mtls() {
	taskset -c 0 "$bin/mtls" connector --listen "127.0.0.1:$1" --server "127.0.0.1:$2" \
		--server-name bench.test --cert "$tmp/$3-chain.pem" --key "$tmp/$3.key" --ca "$CA" \
		--insecure-key-permissions --workers 1 --log-level error --max-connections 0 \
		--handshake-timeout 2m --idle-timeout 0 2>"$tmp/client_mtls.log" &
	CPID=$!
}

client_stunnel() {
	cat >"$tmp/stunnel-client.conf" <<EOF
foreground = yes
pid =
debug = 3
[client]
client = yes
accept = 127.0.0.1:$1
connect = 127.0.0.1:$2
cert = $tmp/$3-chain.pem
key = $tmp/$3.key
CAfile = $CA
verifyChain = yes
checkHost = bench.test
sni = bench.test
sslVersionMin = TLSv1.3
ciphersuites = $SUITE
EOF
	taskset -c 0 stunnel "$tmp/stunnel-client.conf" >"$tmp/client_stunnel.log" 2>&1 &
	CPID=$!
}

client_haproxy() {
	{
		haproxy_head
		cat <<EOF
frontend fe
	bind 127.0.0.1:$1
	default_backend be
backend be
	server up 127.0.0.1:$2 ssl crt $tmp/$3-combined.pem ca-file $CA verify required verifyhost bench.test sni str(bench.test) ssl-min-ver TLSv1.3 ciphersuites $SUITE
EOF
	} >"$tmp/haproxy-client.cfg"
	taskset -c 0 haproxy -f "$tmp/haproxy-client.cfg" -db >"$tmp/client_haproxy.log" 2>&1 &
	CPID=$!
}

client_nginx() {
	mkdir -p "$tmp/nginx-client/logs"
	{
		nginx_head "$tmp/nginx-client"
		cat <<EOF
stream {
	server {
		listen 127.0.0.1:$1;
		proxy_pass 127.0.0.1:$2;
		proxy_ssl on;
		proxy_ssl_certificate $tmp/$3-chain.pem;
		proxy_ssl_certificate_key $tmp/$3.key;
		proxy_ssl_trusted_certificate $CA;
		proxy_ssl_verify on;
		proxy_ssl_verify_depth 2;
		proxy_ssl_name bench.test;
		proxy_ssl_server_name on;
		proxy_ssl_protocols TLSv1.3;
		proxy_ssl_conf_command Ciphersuites $SUITE;
		proxy_ssl_session_reuse on;
	}
}
EOF
	} >"$tmp/nginx-client.conf"
	taskset -c 0 nginx -p "$tmp/nginx-client" -c "$tmp/nginx-client.conf" >"$tmp/client_nginx.log" 2>&1 &
	CPID=$!
}

# --- measuring ------------------------------------------------------------------------------
stop_tree() { # a terminator and every process it started (hitch and nginx fork workers)
	local p
	for p in $(tree "$1"); do kill "$p" 2>/dev/null || true; done
	wait "$1" 2>/dev/null || true
}
tree() { # a process and its descendants
	local p=$1
	echo "$p"
	for c in $(pgrep -P "$p" 2>/dev/null); do tree "$c"; done
}
tree_ticks() {
	local sum=0 p
	for p in $(tree "$1"); do
		[ -r "/proc/$p/stat" ] && sum=$((sum + $(awk '{print $14 + $15}' "/proc/$p/stat")))
	done
	echo "$sum"
}
tree_rss() {
	local sum=0 p
	for p in $(tree "$1"); do
		[ -r "/proc/$p/status" ] && sum=$((sum + $(awk '/VmRSS/ {print $2}' "/proc/$p/status")))
	done
	echo "$sum"
}
HZ=$(getconf CLK_TCK)
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }

# measure NAME PORT TPID: fills R[NAME.metric]
declare -A R
measure() {
	local name=$1 port=$2 tpid=$3 i t0 t1 out
	local full=() fullcpu=() fullcli=() res=() rescpu=() rescli=()
	local l1p50=() l1p99=() l1p999=() l1rps=() l32p50=() l32p99=() l32p999=() l32rps=() bulk=()
	local l32cpu=() l32cli=() bulkcpu=() bulkcli=()

	out=$(taskset -c 1 "$bin/loadgen" handshakes --connect "127.0.0.1:$port" "${BAD[@]}" --seconds 1 2>&1 || true)
	R[$name.refuses_foreign]=$([ "$(field ok "$out")" = 0 ] && echo yes || echo "NO ($out)")
	for i in $(seq "$RUNS"); do
		t0=$(tree_ticks "$tpid")
		out=$(taskset -c 1 "$bin/loadgen" handshakes --connect "127.0.0.1:$port" "${TLS[@]}" --threads 2 --seconds "$SECS")
		t1=$(tree_ticks "$tpid")
		full+=("$(field rate "$out")")
		fullcli+=("$(field client_cpu "$out")")
		fullcpu+=("$(echo "($t1 - $t0) / $HZ / $(field ok "$out") * 1000" | bc -l)")
		t0=$(tree_ticks "$tpid")
		out=$(taskset -c 1 "$bin/loadgen" handshakes --connect "127.0.0.1:$port" "${TLS[@]}" --threads 2 --resume --seconds "$SECS")
		t1=$(tree_ticks "$tpid")
		res+=("$(field rate "$out")")
		rescli+=("$(field client_cpu "$out")")
		rescpu+=("$(echo "($t1 - $t0) / $HZ / $(field ok "$out") * 1000" | bc -l)")
		out=$(taskset -c 1 "$bin/loadgen" latency --connect "127.0.0.1:$port" "${TLS[@]}" --connections 1 --seconds "$SECS")
		l1p50+=("$(field p50_us "$out")"); l1p99+=("$(field p99_us "$out")")
		l1p999+=("$(field p999_us "$out")"); l1rps+=("$(field rps "$out")")
		t0=$(tree_ticks "$tpid")
		out=$(taskset -c 1 "$bin/loadgen" latency --connect "127.0.0.1:$port" "${TLS[@]}" --connections 32 --seconds "$SECS")
		t1=$(tree_ticks "$tpid")
		l32p50+=("$(field p50_us "$out")"); l32p99+=("$(field p99_us "$out")")
		l32p999+=("$(field p999_us "$out")"); l32rps+=("$(field rps "$out")")
		l32cli+=("$(field client_cpu "$out")")
		l32cpu+=("$(echo "($t1 - $t0) / $HZ / $(field requests "$out") * 1000000" | bc -l)")
		t0=$(tree_ticks "$tpid")
		out=$(taskset -c 1 "$bin/loadgen" bulk --connect "127.0.0.1:$port" "${TLS[@]}" --seconds "$SECS")
		t1=$(tree_ticks "$tpid")
		bulk+=("$(field received_MBps "$out")")
		bulkcli+=("$(field client_cpu "$out")")
		# CPU per MB carried each way (the echo makes every byte cross the terminator twice)
		bulkcpu+=("$(echo "($t1 - $t0) / $HZ / ($(field received_MBps "$out") * $(field seconds "$out")) * 1000" | bc -l)")
	done
	R[$name.full]=$(median "${full[@]}"); R[$name.full_cpu_ms]=$(printf '%.3f' "$(median "${fullcpu[@]}")")
	R[$name.full_client_cpu]=$(median "${fullcli[@]}")
	R[$name.resumed]=$(median "${res[@]}"); R[$name.resumed_cpu_ms]=$(printf '%.3f' "$(median "${rescpu[@]}")")
	R[$name.resumed_client_cpu]=$(median "${rescli[@]}")
	R[$name.l1_p50]=$(median "${l1p50[@]}"); R[$name.l1_p99]=$(median "${l1p99[@]}")
	R[$name.l1_p999]=$(median "${l1p999[@]}"); R[$name.l1_rps]=$(median "${l1rps[@]}")
	R[$name.l32_p50]=$(median "${l32p50[@]}"); R[$name.l32_p99]=$(median "${l32p99[@]}")
	R[$name.l32_p999]=$(median "${l32p999[@]}"); R[$name.l32_rps]=$(median "${l32rps[@]}")
	R[$name.l32_cpu_us]=$(printf '%.2f' "$(median "${l32cpu[@]}")")
	R[$name.l32_client_cpu]=$(median "${l32cli[@]}")
	R[$name.bulk]=$(median "${bulk[@]}")
	R[$name.bulk_cpu_ms]=$(printf '%.3f' "$(median "${bulkcpu[@]}")")
	R[$name.bulk_client_cpu]=$(median "${bulkcli[@]}")
	# memory per idle connection, in a fresh terminator each time: one that just ran
	# thousands of handshakes has free heap that new connections reuse, which would
	# flatter it. First as a fleet costs (every client its own certificate, so nothing is
	# answered from a cache: the figure), then every connection with one certificate.
	stop_tree "$tpid"
	idle_kib "$name" idle "${FLEET[@]}"
	stop_tree "$MEASURED_PID"
	idle_kib "$name" idle_onecert "${TLS[@]}"
	sleep 1
}

# idle_kib NAME KEY LOADGEN_TLS_ARGS...: KiB of a fresh terminator's memory per idle
# established connection (full handshake, one round trip with the answer and the session
# ticket read, then idle); fills R[NAME.KEY_kib], R[NAME.KEY_held]; sets MEASURED_PID.
# RSS is read 3 s after the fleet is held: mtls parks a connection quiet for a whole sweep
# interval (1 s), so within ~2 s of going idle; the loadgen holds them 6 s, past the reading.
idle_kib() {
	local name=$1 key=$2 port tpid before after held ip
	shift 2
	port=$(free_port)
	"start_$name" "$port"
	tpid=$TPID
	pids+=("$tpid")
	for _ in $(seq 300); do ss -Htln "sport = :$port" | grep -c . >/dev/null && break; sleep 0.1; done
	taskset -c 1 "$bin/loadgen" idle --connect "127.0.0.1:$port" "$@" --connections 1 \
		--seconds 0.1 >/dev/null 2>&1 || true # warm up: first-use allocations are not per connection
	sleep 0.5
	before=$(tree_rss "$tpid")
	taskset -c 1 "$bin/loadgen" idle --connect "127.0.0.1:$port" "$@" \
		--connections "$IDLE" --seconds 6 >"$tmp/idle.out" 2>&1 &
	ip=$!
	for _ in $(seq 1200); do grep -q '^held' "$tmp/idle.out" 2>/dev/null && break; sleep 0.1; done
	sleep 3
	after=$(tree_rss "$tpid")
	wait "$ip" || true
	held=$(sed -n 's/^held //p' "$tmp/idle.out")
	R[$name.${key}_held]=${held:-0}
	R[$name.${key}_kib]=$([ "${held:-0}" -gt 0 ] && printf '%.1f' "$(echo "($after - $before) / $held" | bc -l)" || echo nan)
	MEASURED_PID=$tpid
}

wait_listen() { # PORT PID: until PORT listens; false if PID died first
	for _ in $(seq 300); do
		ss -Htln "sport = :$1" | grep -c . >/dev/null && return 0
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

# measure_two_hop NAME: a fresh server side and client side of NAME; fills R[NAME.hop_*]
measure_two_hop() {
	local name=$1 sport cport spid cpid i t0 t1 out
	local rate=() conncpu=() cli=() l1p99=() l32p99=() l32rps=() l32cpu=() bulk=() bulkcpu=()

	sport=$(free_port)
	"start_$name" "$sport"
	spid=$TPID
	pids+=("$spid")
	if ! wait_listen "$sport" "$spid"; then
		R[$name.hop_refuses]="server side did not start"
		stop_tree "$spid"
		return
	fi
	# negative check: a client side with another CA's certificate gets nothing through
	cport=$(free_port)
	"client_$name" "$cport" "$sport" bad
	cpid=$CPID
	pids+=("$cpid")
	if wait_listen "$cport" "$cpid"; then
		out=$(taskset -c 1 "$bin/loadgen" handshakes --connect "127.0.0.1:$cport" --plain --seconds 1 2>&1 || true)
		R[$name.hop_refuses]=$([ "$(field ok "$out")" = 0 ] && echo yes || echo "NO ($out)")
	else
		R[$name.hop_refuses]="client side did not start"
	fi
	stop_tree "$cpid"
	cport=$(free_port)
	"client_$name" "$cport" "$sport" cli
	cpid=$CPID
	pids+=("$cpid")
	if ! wait_listen "$cport" "$cpid"; then
		echo "bench: two-hop client side of $name did not start; its output:" >&2
		cat "$tmp/client_$name.log" >&2 || true
		R[$name.hop_refuses]="client side did not start"
		stop_tree "$cpid"
		stop_tree "$spid"
		return
	fi
	echo "bench: measuring two hops of $name (server pid $spid, client pid $cpid)"
	for i in $(seq "$RUNS"); do
		t0=$(($(tree_ticks "$spid") + $(tree_ticks "$cpid")))
		out=$(taskset -c 1 "$bin/loadgen" handshakes --connect "127.0.0.1:$cport" --plain --threads 2 --seconds "$SECS")
		t1=$(($(tree_ticks "$spid") + $(tree_ticks "$cpid")))
		rate+=("$(field rate "$out")")
		cli+=("$(field client_cpu "$out")")
		conncpu+=("$(echo "($t1 - $t0) / $HZ / $(field ok "$out") * 1000" | bc -l)")
		out=$(taskset -c 1 "$bin/loadgen" latency --connect "127.0.0.1:$cport" --plain --connections 1 --seconds "$SECS")
		l1p99+=("$(field p99_us "$out")")
		t0=$(($(tree_ticks "$spid") + $(tree_ticks "$cpid")))
		out=$(taskset -c 1 "$bin/loadgen" latency --connect "127.0.0.1:$cport" --plain --connections 32 --seconds "$SECS")
		t1=$(($(tree_ticks "$spid") + $(tree_ticks "$cpid")))
		l32p99+=("$(field p99_us "$out")"); l32rps+=("$(field rps "$out")")
		l32cpu+=("$(echo "($t1 - $t0) / $HZ / $(field requests "$out") * 1000000" | bc -l)")
		t0=$(($(tree_ticks "$spid") + $(tree_ticks "$cpid")))
		out=$(taskset -c 1 "$bin/loadgen" bulk --connect "127.0.0.1:$cport" --plain --seconds "$SECS")
		t1=$(($(tree_ticks "$spid") + $(tree_ticks "$cpid")))
		bulk+=("$(field received_MBps "$out")")
		bulkcpu+=("$(echo "($t1 - $t0) / $HZ / ($(field received_MBps "$out") * $(field seconds "$out")) * 1000" | bc -l)")
	done
	R[$name.hop_rate]=$(median "${rate[@]}")
	R[$name.hop_conn_cpu_ms]=$(printf '%.3f' "$(median "${conncpu[@]}")")
	R[$name.hop_client_cpu]=$(median "${cli[@]}")
	R[$name.hop_l1_p99]=$(median "${l1p99[@]}")
	R[$name.hop_l32_p99]=$(median "${l32p99[@]}")
	R[$name.hop_l32_rps]=$(median "${l32rps[@]}")
	R[$name.hop_l32_cpu_us]=$(printf '%.2f' "$(median "${l32cpu[@]}")")
	R[$name.hop_bulk]=$(median "${bulk[@]}")
	R[$name.hop_bulk_cpu_ms]=$(printf '%.3f' "$(median "${bulkcpu[@]}")")
	stop_tree "$cpid"
	stop_tree "$spid"
	sleep 1
}

echo "bench: $RUNS runs of ${SECS}s per figure, $IDLE idle connections; terminators: $TERMINATORS; two hops: ${TWO_HOP:-none}"
out=$(taskset -c 1 "$bin/loadgen" latency --connect "127.0.0.1:$ECHO" --plain --connections 1 --seconds "$SECS")
R[plain.l1_p50]=$(field p50_us "$out"); R[plain.l1_p99]=$(field p99_us "$out"); R[plain.l1_rps]=$(field rps "$out")
out=$(taskset -c 1 "$bin/loadgen" bulk --connect "127.0.0.1:$ECHO" --plain --seconds "$SECS")
R[plain.bulk]=$(field received_MBps "$out")

for t in $TERMINATORS; do
	port=$(free_port)
	"start_$t" "$port"
	pids+=("$TPID")
	for _ in $(seq 300); do ss -Htln "sport = :$port" | grep -c . >/dev/null && break; sleep 0.1; done
	if ! kill -0 "$TPID" 2>/dev/null || ! ss -Htln "sport = :$port" | grep -c . >/dev/null; then
		echo "bench: $t did not start; its output:" >&2
		cat "$tmp/$t.log" >&2 || true
		R[$t.refuses_foreign]="did not start"
		stop_tree "$TPID"
		continue
	fi
	echo "bench: measuring $t (pid $TPID, port $port)"
	measure "$t" "$port" "$TPID"
	stop_tree "$MEASURED_PID"
done

for t in $TWO_HOP; do
	measure_two_hop "$t"
done

# --- report -----------------------------------------------------------------------------
LIST=$TERMINATORS # the columns of row() and the peers best() looks at
row() { # label key fmt
	local line="| $1 |"
	for t in $LIST; do line+=" $(printf "$3" "${R[$t.$2]:-nan}") |"; done
	echo "$line"
}
best() { # key higher|lower: the best peer's value (not mtls)
	local v b=""
	for t in $LIST; do
		case $t in mtls*) continue ;; esac
		v=${R[$t.$1]:-}
		[ -n "$v" ] || continue
		if [ -z "$b" ] || { [ "$2" = higher ] && [ "$(echo "$v > $b" | bc -l)" = 1 ]; } ||
			{ [ "$2" = lower ] && [ "$(echo "$v < $b" | bc -l)" = 1 ]; }; then b=$v; fi
	done
	echo "$b"
}
ratio() { # label key higher|lower goal [terminator]
	local b m
	b=$(best "$2" "$3")
	m=${R[${5:-mtls}.$2]:-}
	if [ -z "$b" ] || [ -z "$m" ]; then echo "| $1 | n/a | | | $4 |"; return; fi
	if [ "$3" = higher ]; then
		printf '| %s | %.2f | %s | %s | %s |\n' "$1" "$(echo "$m / $b" | bc -l)" "$m" "$b" "$4"
	else
		printf '| %s | %.2f | %s | %s | %s |\n' "$1" "$(echo "$b / $m" | bc -l)" "$m" "$b" "$4"
	fi
}
{
	echo "# mtls benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo
	echo "$(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -n 1)); $(openssl version)."
	echo "Terminator pinned to CPU 0, one worker; loadgen (2 threads for handshakes) and echod on"
	echo "CPU 1. Median of $RUNS runs of ${SECS}s. TLS 1.3, $SUITE, ECDSA P-256 client and server."
	echo
	echo "Plaintext direct to the backend (upper bound): p50 ${R[plain.l1_p50]} us, p99 ${R[plain.l1_p99]} us,"
	echo "${R[plain.l1_rps]} req/s on one connection; bulk ${R[plain.bulk]} MB/s."
	echo
	hdr="| |"; sep="|---|"
	for t in $TERMINATORS; do hdr+=" $t |"; sep+="---|"; done
	echo "$hdr"; echo "$sep"
	row "refuses a foreign-CA client" refuses_foreign "%s"
	row "full handshakes/s" full "%.0f"
	row "  terminator CPU ms/handshake" full_cpu_ms "%.3f"
	row "  loadgen CPU (cores)" full_client_cpu "%.2f"
	row "resumed handshakes/s" resumed "%.0f"
	row "  terminator CPU ms/handshake" resumed_cpu_ms "%.3f"
	row "  loadgen CPU (cores)" resumed_client_cpu "%.2f"
	row "1 conn: p50 us" l1_p50 "%.0f"
	row "1 conn: p99 us" l1_p99 "%.0f"
	row "1 conn: p999 us" l1_p999 "%.0f"
	row "1 conn: req/s" l1_rps "%.0f"
	row "32 conns: p50 us" l32_p50 "%.0f"
	row "32 conns: p99 us" l32_p99 "%.0f"
	row "32 conns: p999 us" l32_p999 "%.0f"
	row "32 conns: req/s" l32_rps "%.0f"
	row "  terminator CPU us/request" l32_cpu_us "%.2f"
	row "  loadgen CPU (cores)" l32_client_cpu "%.2f"
	row "bulk MB/s (echoed)" bulk "%.1f"
	row "  terminator CPU ms/MB" bulk_cpu_ms "%.3f"
	row "  loadgen CPU (cores)" bulk_client_cpu "%.2f"
	row "idle connections held (fleet)" idle_held "%s"
	row "KiB per idle connection, fleet" idle_kib "%.1f"
	row "KiB per idle connection, one cert" idle_onecert_kib "%.1f"
	echo
	echo "Ratios: mtls against the best peer (>1 means mtls is better)."
	echo
	echo "| figure | ratio | mtls | best peer | goal |"
	echo "|---|---|---|---|---|"
	ratio "full handshakes/s, seen certs" full higher "≥ 3"
	ratio "CPU per full handshake, seen certs" full_cpu_ms lower "≥ 3"
	ratio "full handshakes/s, never-seen certs" full higher "≥ 1.2" mtls_cold
	ratio "CPU per full handshake, never-seen certs" full_cpu_ms lower "≥ 1.2" mtls_cold
	ratio "resumed handshakes/s" resumed higher "≥ 3"
	ratio "CPU per resumed handshake" resumed_cpu_ms lower ""
	ratio "p99, 1 conn" l1_p99 lower "≥ 1"
	ratio "p99, 32 conns" l32_p99 lower "≥ 1"
	ratio "req/s, 32 conns" l32_rps higher "≥ 1.5"
	ratio "CPU per request, 32 conns" l32_cpu_us lower ""
	ratio "bulk" bulk higher "≥ 1.5"
	ratio "CPU per MB, bulk" bulk_cpu_ms lower ""
	ratio "memory per idle connection, fleet" idle_kib lower "≥ 2"
	ratio "memory per idle connection, one cert" idle_onecert_kib lower ""
	if [ -n "$TWO_HOP" ]; then
		LIST=$TWO_HOP
		echo
		echo "Two hops: application -> client side -> server side -> backend, both sides of the same"
		echo "product on CPU 0 (mtls: connector and server). CPU figures are both processes together."
		echo
		hdr="| |"; sep="|---|"
		for t in $TWO_HOP; do hdr+=" $t |"; sep+="---|"; done
		echo "$hdr"; echo "$sep"
		row "client side with a foreign-CA certificate gets nothing through" hop_refuses "%s"
		row "new connections/s" hop_rate "%.0f"
		row "  CPU ms/connection (both sides)" hop_conn_cpu_ms "%.3f"
		row "  loadgen CPU (cores)" hop_client_cpu "%.2f"
		row "1 conn: p99 us" hop_l1_p99 "%.0f"
		row "32 conns: p99 us" hop_l32_p99 "%.0f"
		row "32 conns: req/s" hop_l32_rps "%.0f"
		row "  CPU us/request (both sides)" hop_l32_cpu_us "%.2f"
		row "bulk MB/s (echoed)" hop_bulk "%.1f"
		row "  CPU ms/MB (both sides)" hop_bulk_cpu_ms "%.3f"
		echo
		echo "| two-hop figure | ratio | mtls | best peer | goal |"
		echo "|---|---|---|---|---|"
		ratio "new connections/s" hop_rate higher ""
		ratio "CPU per connection" hop_conn_cpu_ms lower ""
		ratio "p99, 1 conn" hop_l1_p99 lower ""
		ratio "p99, 32 conns" hop_l32_p99 lower ""
		ratio "CPU per request, 32 conns" hop_l32_cpu_us lower ""
		ratio "bulk" hop_bulk higher ""
		ratio "CPU per MB, bulk" hop_bulk_cpu_ms lower ""
	fi
} >"$result"
cat "$result"
echo "bench: written to $result"
