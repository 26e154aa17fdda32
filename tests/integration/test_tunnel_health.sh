#!/usr/bin/env bash
# /healthz and /readyz of mtls server (issue 11, items 2, 3 and 6):
#
# 1. a healthy server: /healthz 200 "ok", /readyz 200 "ready".
# 2. /healthz is not starved: hundreds of idle connections to the metrics port, from the
#    probe's own address and from other loopback addresses (and more than the per-address
#    limit from one of them), re-opened as soon as the server closes them; a fresh /healthz
#    is still answered in time, and one address cannot hold them all.
# 3. started with an expired CRL: /healthz stays 200 (a restart fixes nothing) but warns,
#    /readyz answers 503 with the reason.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

command -v curl >/dev/null || _lib_die "curl not found in PATH"
command -v perl >/dev/null || _lib_die "perl not found in PATH"

C=$CERTS
SRV=(--target 127.0.0.1:1 --cert "$C/server-chain.pem" --key "$C/server.key" --ca "$C/ca.pem"
	--allow-uri spiffe://test.mtls/ns/prod/sa/app1 --metrics 127.0.0.1:0 --drain-timeout 1s)

# get PORT PATH [curl args] : "STATUS BODY" (the body's lines joined by '|'), within 3 s
get() {
	local port=$1 path=$2 out
	shift 2
	out=$(curl -s --max-time 3 "$@" -w '\n%{http_code}' "http://127.0.0.1:$port$path" \
		2>/dev/null) || true
	local code=${out##*$'\n'} body=${out%$'\n'*}
	[ "$code" != "$out" ] || body=""
	body=${body%$'\n'}
	echo "${code:-000} ${body//$'\n'/|}"
}

# ==========================================================================================
echo "# 1. a healthy server"

start_tunnel_server "$TMP/srv.log" "${SRV[@]}"
p=()
h=$(get "$SRV_METRICS" /healthz)
[ "$h" = "200 ok" ] || p+=("/healthz: '$h', expected '200 ok'")
r=$(get "$SRV_METRICS" /readyz)
[ "$r" = "200 ready" ] || p+=("/readyz: '$r', expected '200 ready'")
verdict "/healthz 200 ok, /readyz 200 ready" "${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# 2. idle connections to the metrics port do not starve /healthz"

# hold.pl ADDR PORT N SECONDS READY : hold N connections from ADDR to 127.0.0.1:PORT, each
# re-opened (at most every 50 ms) when the server closes it; write how many were opened
# first to READY; end after SECONDS.
cat >"$TMP/hold.pl" <<'EOF'
use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time sleep);

my ($addr, $port, $n, $secs, $ready) = @ARGV;
my $end = time + $secs;
my %held;
sub hold {
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
		LocalAddr => $addr, Proto => 'tcp', Timeout => 1);
	$held{fileno($s)} = $s if $s;
}
hold() for 1 .. $n;
open(my $fh, '>', "$ready.tmp") or die;
print $fh scalar(keys %held), "\n";
close $fh;
rename("$ready.tmp", $ready);
my $missing = $n - keys %held;
while (time < $end) {
	my $sel = IO::Select->new(values %held);
	for my $s ($sel->can_read(0.05)) {
		my $buf;
		next if sysread($s, $buf, 4096);
		delete $held{fileno($s)};
		close $s;
		$missing++;
	}
	while ($missing > 0 && time < $end) {
		$missing--;
		hold();
	}
}
EOF

p=()
hold_s=25
holders=()
start_bg "$TMP/hold1.log" perl "$TMP/hold.pl" 127.0.0.1 "$SRV_METRICS" 200 "$hold_s" "$TMP/h1"
holders+=("$BG_PID")
start_bg "$TMP/hold2.log" perl "$TMP/hold.pl" 127.0.0.2 "$SRV_METRICS" 200 "$hold_s" "$TMP/h2"
holders+=("$BG_PID")
start_bg "$TMP/hold3.log" perl "$TMP/hold.pl" 127.0.0.3 "$SRV_METRICS" 300 "$hold_s" "$TMP/h3"
holders+=("$BG_PID")
for _ in $(seq 400); do
	[ -f "$TMP/h1" ] && [ -f "$TMP/h2" ] && [ -f "$TMP/h3" ] && break
	sleep 0.05
done
[ -f "$TMP/h1" ] && [ -f "$TMP/h2" ] && [ -f "$TMP/h3" ] ||
	p+=("the idle connections were not all opened: $(cat -- "$TMP"/hold*.log)")
held="$(cat -- "$TMP/h1" 2>/dev/null), $(cat -- "$TMP/h2" 2>/dev/null), $(cat -- "$TMP/h3" 2>/dev/null)"
# probes from the same address as 200 of them, and from another, over a few seconds: past
# the idle timeout, while the holders re-open what the server closes
bad=0 probes=0 worst=""
for i in 1 2 3 4 5 6; do
	for src in 127.0.0.1 127.0.0.4; do
		probes=$((probes + 1))
		h=$(get "$SRV_METRICS" /healthz --interface "$src")
		[ "$h" = "200 ok" ] || {
			bad=$((bad + 1))
			worst="probe $i from $src: '$h'"
		}
	done
	sleep 0.7
done
[ "$bad" = 0 ] || p+=("$bad of $probes /healthz probes failed (3 s limit); $worst")
# one address cannot hold more than its share: of 300 from 127.0.0.3, some are refused
n3=$(ss -Htn state established "( sport = :$SRV_METRICS )" 2>/dev/null |
	awk '$NF ~ /^127\.0\.0\.3:/ { n++ } END { print n + 0 }')
[ "$n3" -lt 300 ] || p+=("all 300 connections from 127.0.0.3 are held: no per-address limit")
verdict "$probes /healthz probes answered while idle connections are held ($held opened; 127.0.0.3 holds $n3 of 300)" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 5 "$TMP/srv.log")"
for pid in "${holders[@]}"; do
	stop_bg "$pid"
done
stop_bg "$SRV_PID"

# ==========================================================================================
echo "# 3. an expired CRL: /healthz warns, /readyz says not ready"

p=()
start_tunnel_server "$TMP/crl.log" "${SRV[@]}" --crl "$C/crl-expired.pem"
h=$(get "$SRV_METRICS" /healthz)
[[ $h == "200 ok|warning: a CRL expired at 2020-02-01T00:00:00Z (nextUpdate): every client it covers is refused crl_expired; publish a new CRL" ]] ||
	p+=("/healthz: '$h'")
r=$(get "$SRV_METRICS" /readyz)
[[ $r == "503 not ready: a CRL expired at 2020-02-01T00:00:00Z (nextUpdate): "* ]] ||
	p+=("/readyz: '$r'")
verdict "expired CRL: /healthz 200 with a warning, /readyz 503 naming it" "${p[@]+"${p[@]}"}"

finish
