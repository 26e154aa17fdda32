#!/usr/bin/env bash
# pgbench through three TLS front doors of one PostgreSQL 15 (issue 16), side by side:
#
#   direct   pgbench --verify-full, client cert--> PostgreSQL's own TLS
#            (hostssl ... cert clientcert=verify-full, the CN is the role)
#   mtls     pgbench --verify-full--> mtls server --protocol postgresql --pg-role ...
#            --unix socket--> PostgreSQL
#   stunnel  pgbench --verify-full--> stunnel [server] protocol = pgsql (verifyChain,
#            requireCert) --unix socket--> PostgreSQL
#
# Each: select-only (-S) and the default TPC-B-like script, -c 8 -j 2 -T SECONDS, on one
# connection per client (the TLS handshakes are not what is measured: pgbench connects once).
# Printed: TPS and the ratio to direct. Every run is bounded. Not part of the test suite.
#
#   bench/pg_native.sh [BUILD_DIR] [SECONDS]        (default build, 10)
#
# stunnel's pgsql protocol: the manual lists it with no "client mode only" note, and in
# server mode stunnel reads the 8-byte SSLRequest, answers 'S' and then does TLS, which is
# what libpq does with sslmode=verify-full; it does not look at the StartupMessage (no role
# check: any certificate the CA signed may use any role). PostgreSQL 17's direct TLS
# (sslnegotiation=direct) is not supported by it. If stunnel's pgsql server side fails on
# this machine, its line says so.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$top/build}
secs=${2:-10}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
# shellcheck source=bench/common.sh
. "$top/bench/common.sh"
bench_setup "$bin" mtls
for t in "$PG_BIN/initdb" "$PG_BIN/postgres"; do
	[ -x "$t" ] || {
		echo "bench: $t missing (apt-get install postgresql-15)" >&2
		exit 1
	}
done
command -v pgbench >/dev/null || {
	echo "bench: pgbench missing (apt-get install postgresql-client)" >&2
	exit 1
}
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSERVICE PGOPTIONS PGPASSWORD PGSSLMODE \
	PGSSLCERT PGSSLKEY PGSSLROOTCERT
export PGCONNECT_TIMEOUT=5 PGGSSENCMODE=disable

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# certificates: the CN of the client is the role (PostgreSQL's cert method), its URI the
# identity (mtls --pg-role)
ID=spiffe://bench.test/ns/prod/sa/billing
ca=$tmp/ca
"$bin/mtls" ca init --dir "$ca" --key p256 >/dev/null
"$bin/mtls" ca issue --dir "$ca" --profile server --dns localhost --ip 127.0.0.1 \
	--out "$tmp/srv" >/dev/null
"$bin/mtls" ca issue --dir "$ca" --profile client --uri "$ID" --cn billing \
	--out "$tmp/cli" >/dev/null

# PostgreSQL: unix socket (trust) and 127.0.0.1 with its own TLS
as_pg=()
pgdir=$tmp/pg
mkdir -p "$pgdir/sock"
cp "$tmp/srv-chain.pem" "$tmp/srv.key" "$ca/root.pem" "$pgdir/"
chmod 600 "$pgdir/srv.key"
if [ "$(id -u)" = 0 ]; then
	as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups)
	chmod 711 "$tmp"
	chown -R postgres: "$pgdir"
fi
"${as_pg[@]+"${as_pg[@]}"}" "$PG_BIN/initdb" -D "$pgdir/data" -U postgres -A trust -E UTF8 \
	--locale=C --no-sync --no-instructions >"$tmp/initdb.log" 2>&1 || {
	cat "$tmp/initdb.log" >&2
	exit 1
}
cat >"$pgdir/data/pg_hba.conf" <<'EOF'
local   all all                trust
hostssl all all 127.0.0.1/32   cert clientcert=verify-full
EOF
pgport=$(free_port)
sock=$pgdir/sock/.s.PGSQL.$pgport
"${as_pg[@]+"${as_pg[@]}"}" "$PG_BIN/postgres" -D "$pgdir/data" -p "$pgport" -k "$pgdir/sock" \
	-c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file="$pgdir/srv-chain.pem" \
	-c ssl_key_file="$pgdir/srv.key" -c ssl_ca_file="$pgdir/root.pem" -c fsync=off \
	-c synchronous_commit=off -c full_page_writes=off -c max_connections=40 \
	-c shared_buffers=64MB -c autovacuum=off -c logging_collector=off >"$tmp/pg.log" 2>&1 &
pids+=($!)
bench_wait "$tmp/pg.log" 'ready to accept connections' || {
	cat "$tmp/pg.log" >&2
	exit 1
}
local_conn="host=$pgdir/sock port=$pgport"
psql -X -q -d "$local_conn user=postgres dbname=postgres" \
	-c 'create role billing login' -c 'create database billingdb owner billing'
timeout 300 pgbench -i -q -s 10 "$local_conn user=billing dbname=billingdb" >"$tmp/init.log" 2>&1 || {
	cat "$tmp/init.log" >&2
	exit 1
}

tls_conn() {
	printf 'host=localhost hostaddr=127.0.0.1 port=%s user=billing dbname=billingdb sslmode=verify-full sslrootcert=%s sslcert=%s sslkey=%s' \
		"$1" "$ca/root.pem" "$tmp/cli-chain.pem" "$tmp/cli.key"
}

# the mtls server
"$bin/mtls" server --protocol postgresql --listen 127.0.0.1:0 --target "unix:$sock" \
	--cert "$tmp/srv-chain.pem" --key "$tmp/srv.key" --ca "$ca/root.pem" \
	--allow-uri "$ID" --pg-role "$ID=billing" --workers 2 --log-format json \
	>"$tmp/mtls.log" 2>&1 &
pids+=($!)
mtls_port=""
if bench_wait "$tmp/mtls.log" '"event":"listening"'; then
	mtls_port=$(sed -n 's/.*"event":"listening".*"address":"[^"]*:\([0-9]*\)".*/\1/p' "$tmp/mtls.log" | head -n 1)
fi

# stunnel, server side of protocol = pgsql
stunnel_port=""
if command -v stunnel >/dev/null; then
	stunnel_port=$(free_port)
	cat >"$tmp/stunnel.conf" <<EOF
foreground = yes
pid =
debug = 5
[pg]
accept = 127.0.0.1:$stunnel_port
connect = $sock
protocol = pgsql
cert = $tmp/srv-chain.pem
key = $tmp/srv.key
CAfile = $ca/root.pem
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.3
EOF
	stunnel "$tmp/stunnel.conf" >"$tmp/stunnel.log" 2>&1 &
	pids+=($!)
	bench_wait "$tmp/stunnel.log" 'Configuration successful' || stunnel_port=""
fi

# tps PORT ARGS... : pgbench's tps (excluding connection time where it says so), "-" if it failed
tps() {
	local port=$1 out
	shift
	out=$(timeout $((secs + 60)) pgbench -n -c 8 -j 2 -T "$secs" "$@" "$(tls_conn "$port")" 2>&1) || {
		printf '%s\n' "$out" | tail -n 3 >>"$tmp/errors.log"
		echo -
		return 0
	}
	sed -n '/^tps = \([0-9.]*\) .*/{s//\1/p;q}' <<<"$out"
}
ratio() {
	if [ "$1" = - ] || [ "$2" = - ]; then echo -; else awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; fi
}

echo "pgbench -c 8 -j 2 -T $secs, scale 10, sslmode=verify-full with a client certificate ($(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) at the start)"
printf '%-44s %12s %8s %12s %8s\n' "path" "select-only" "ratio" "tpcb-like" "ratio"
d_s=$(tps "$pgport" -S)
d_t=$(tps "$pgport")
printf '%-44s %12s %8s %12s %8s\n' "direct (PostgreSQL's own TLS)" "$d_s" 1.00 "$d_t" 1.00
if [ -n "$mtls_port" ]; then
	m_s=$(tps "$mtls_port" -S)
	m_t=$(tps "$mtls_port")
	printf '%-44s %12s %8s %12s %8s\n' "mtls server --protocol postgresql" "$m_s" "$(ratio "$m_s" "$d_s")" \
		"$m_t" "$(ratio "$m_t" "$d_t")"
else
	echo "mtls server --protocol postgresql: did not start: $(head -n 1 "$tmp/mtls.log")"
fi
if [ -n "$stunnel_port" ]; then
	s_s=$(tps "$stunnel_port" -S)
	s_t=$(tps "$stunnel_port")
	printf '%-44s %12s %8s %12s %8s\n' "stunnel protocol = pgsql (server)" "$s_s" "$(ratio "$s_s" "$d_s")" \
		"$s_t" "$(ratio "$s_t" "$d_t")"
else
	echo "stunnel: not installed or did not start (apt-get install stunnel4; $tmp/stunnel.log)"
fi
if [ -s "$tmp/errors.log" ]; then
	echo "failed runs (\"-\"), their last lines:"
	sed 's/^/  /' "$tmp/errors.log"
fi
