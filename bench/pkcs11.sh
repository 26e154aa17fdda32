#!/usr/bin/env bash
# Handshakes/s of mtls server with its key on a PKCS#11 token (SoftHSM 2, through OpenSSL's
# PKCS#11 engine) against the same server with the same kind of key (ECDSA P-256) in a file,
# in one run: full handshakes (each one a signature by the server's key: on the token, a
# PKCS#11 C_Sign through the engine) and resumed ones (no signature: the same for both). One
# worker pinned to CPU 0; the load generator (bench/loadgen, 2 threads) on CPU 1. The median
# of RUNS runs of SECONDS_PER_RUN seconds, with the server's CPU milliseconds per handshake.
#
#   bench/pkcs11.sh [BUILD_DIR]      RUNS=3 SECONDS_PER_RUN=5 by default
#
# SoftHSM is a software token: its figure is the cost of the PKCS#11 path (engine, module,
# session locking), not of a hardware module, which is usually slower per signature.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/common.sh
. "$top/bench/common.sh"
bench_setup "${1:-$top/build}" mtls loadgen echod
RUNS=${RUNS:-3}
SECS=${SECONDS_PER_RUN:-5}
MODULE=${SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
command -v softhsm2-util >/dev/null && [ -r "$MODULE" ] ||
	{ echo "bench: softhsm2 is missing (scripts/install-deps.sh)" >&2; exit 1; }

bench_certs
PIN=$(openssl rand -hex 8)
mkdir -p "$tmp/tokens"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' \
	"$tmp" >"$tmp/softhsm2.conf"
export SOFTHSM2_CONF=$tmp/softhsm2.conf
softhsm2-util --init-token --free --label bench --so-pin "$PIN" --pin "$PIN" >/dev/null
pkcs11-tool --module "$MODULE" --token-label bench --login --pin "$PIN" --keypairgen \
	--key-type EC:prime256v1 --label srv --id 01 >/dev/null 2>&1
openssl req -new -engine pkcs11 -keyform engine \
	-key "pkcs11:token=bench;object=srv;type=private;pin-value=$PIN" -subj /CN=bench.test \
	-out "$tmp/tok.csr" >/dev/null 2>&1
"$bin/mtls" ca issue --dir "$ca" --profile server --dns bench.test --ip 127.0.0.1 \
	--csr "$tmp/tok.csr" --out "$tmp/tok" >/dev/null
printf '%s\n' "$PIN" >"$tmp/pin"
chmod 600 "$tmp/pin" "$tmp/srv.key"
CA=$ca/root.pem
TLS=(--cert "$tmp/cli-chain.pem" --key "$tmp/cli.key" --ca "$CA" --name bench.test)

bench_target echo "$bin/echod" --listen 127.0.0.1:0
ECHO=$target_port

# run NAME KEY_ARGS... : the medians of full and resumed handshakes/s with the server so keyed
declare -A R
run() {
	local name=$1 spid port i t0 t1 out full=() fcpu=() res=()
	shift
	taskset -c 0 "$bin/mtls" server --listen 127.0.0.1:0 --target "127.0.0.1:$ECHO" \
		--ca "$CA" --allow-uri 'spiffe://bench.test/*' --workers 1 --log-level error \
		--max-connections 0 "$@" 2>"$tmp/$name.log" &
	spid=$!
	pids+=("$spid")
	port=$(bench_port "$spid")
	for i in $(seq "$RUNS"); do
		t0=$(awk '{print $14 + $15}' "/proc/$spid/stat")
		out=$(taskset -c 1 "$bin/loadgen" handshakes --connect "127.0.0.1:$port" "${TLS[@]}" \
			--threads 2 --seconds "$SECS")
		t1=$(awk '{print $14 + $15}' "/proc/$spid/stat")
		full+=("$(field rate "$out")")
		fcpu+=("$(echo "($t1 - $t0) / $HZ / $(field ok "$out") * 1000" | bc -l)")
		out=$(taskset -c 1 "$bin/loadgen" handshakes --connect "127.0.0.1:$port" "${TLS[@]}" \
			--threads 2 --resume --seconds "$SECS")
		res+=("$(field rate "$out")")
	done
	R[$name.full]=$(median "${full[@]}")
	R[$name.fcpu]=$(printf '%.3f' "$(median "${fcpu[@]}")")
	R[$name.res]=$(median "${res[@]}")
	[ "$(grep -c handshake_refused "$tmp/$name.log" || true)" = 0 ] ||
		echo "bench: $name refused handshakes: $(head -n 2 "$tmp/$name.log")" >&2
	kill "$spid" 2>/dev/null || true
	wait "$spid" 2>/dev/null || true
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
HZ=$(getconf CLK_TCK)

run file --cert "$tmp/srv-chain.pem" --key "$tmp/srv.key"
run token --cert "$tmp/tok-chain.pem" --key "pkcs11:token=bench;object=srv" \
	--key-passphrase-file "$tmp/pin" --pkcs11-module "$MODULE" --sandbox-allow "$tmp"

printf '| server key (ECDSA P-256) | full handshakes/s | server CPU ms/handshake | resumed/s |\n'
printf '|---|---:|---:|---:|\n'
printf '| file | %s | %s | %s |\n' "${R[file.full]}" "${R[file.fcpu]}" "${R[file.res]}"
printf '| SoftHSM token (PKCS#11 engine) | %s | %s | %s |\n' "${R[token.full]}" "${R[token.fcpu]}" \
	"${R[token.res]}"
printf '\ntoken/file, full handshakes: %s\n' \
	"$(echo "${R[token.full]} / ${R[file.full]}" | bc -l | cut -c1-4)"
