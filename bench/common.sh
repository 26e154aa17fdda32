# Shared by the bench scripts of issue 11 (fairness.sh, fd_exhaustion.sh, pending_memory.sh,
# trim_stall.sh). Sourced, not run.
#
#   bench_setup BIN TOOL...   $tmp (removed at exit), $pids (killed at exit), each
#                             $BIN/TOOL checked to be built
#   bench_certs               a throwaway CA in $ca; $tmp/srv{.key,-chain.pem} for
#                             bench.test / 127.0.0.1, $tmp/cli{...} for
#                             spiffe://bench.test/client
#   bench_wait LOG PATTERN    until a line of LOG matches PATTERN (at most 5 s)
#   bench_target NAME CMD...  start a plaintext target that prints "listening on ADDR"
#                             (log $tmp/NAME.log); sets target_port
#   bench_port PID            the TCP port PID listens on (at most 5 s), or exit

# shellcheck shell=bash
# Variables set here are for the scripts that source this file.
# shellcheck disable=SC2034

bench_setup() {
	local t
	bin=$1
	shift
	tmp=$(mktemp -d)
	pids=()
	trap _bench_cleanup EXIT
	for t in "$@"; do
		[ -x "$bin/$t" ] || {
			echo "bench: $bin/$t missing; build first" >&2
			exit 1
		}
	done
}

_bench_cleanup() {
	local p
	for p in "${pids[@]+"${pids[@]}"}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}

bench_certs() {
	ca=$tmp/ca
	"$bin/mtls" ca init --dir "$ca" --key p256 >/dev/null
	"$bin/mtls" ca issue --dir "$ca" --profile server --dns bench.test --ip 127.0.0.1 \
		--out "$tmp/srv" >/dev/null
	"$bin/mtls" ca issue --dir "$ca" --profile client --uri spiffe://bench.test/client \
		--out "$tmp/cli" >/dev/null
}

bench_wait() {
	local _
	for _ in $(seq 50); do
		grep -q -- "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

bench_target() {
	local name=$1
	shift
	"$@" >"$tmp/$name.log" &
	pids+=($!)
	bench_wait "$tmp/$name.log" listening || true
	target_port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$tmp/$name.log")
}

bench_port() {
	local _ port=
	for _ in $(seq 50); do
		port=$(ss -Hltnp 2>/dev/null |
			awk -v p="pid=$1," 'index($0, p) { sub(/.*:/, "", $4); print $4; exit }')
		[ -n "$port" ] && break
		sleep 0.1
	done
	[ -n "$port" ] || {
		cat "$tmp/server.log" >&2 2>/dev/null
		echo "bench: the server did not start" >&2
		exit 1
	}
	echo "$port"
}
