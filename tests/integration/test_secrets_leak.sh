#!/usr/bin/env bash
# No secret of the daemons leaks (issue 17): mtls server and mtls connector run with an
# encrypted key (its passphrase from an environment variable) and a key on a PKCS#11 token
# (its PIN from a file, then, in a second run, from an environment variable), carry traffic
# and reload; then the passphrase and the PIN are searched for in every place a secret could
# be seen from outside: /proc/PID/cmdline, /proc/PID/environ, the logs, /metrics and /status,
# and a core of each daemon taken with gcore (as root: the daemons are not dumpable, and
# gcore honours MADV_DONTDUMP as the kernel does; not in a sanitizer build, whose core would
# hold terabytes of shadow memory). Neither may be found anywhere. The secrets are random for
# each run, so nothing else holds them by chance.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"
# shellcheck source=tests/integration/p11_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/p11_lib.sh"

p11_have || _lib_die "softhsm2, opensc or libengine-pkcs11-openssl missing: run scripts/install-deps.sh"
command -v gcore >/dev/null || _lib_die "gcore (gdb) missing: run scripts/install-deps.sh"
if [ "$(id -u)" != 0 ]; then
	echo "skip  all cases: gcore of a daemon that is not dumpable needs root"
	exit 77
fi

# AddressSanitizer maps terabytes of shadow memory: gcore would write them (sparse, but
# read back in full by the search); the sanitizer build skips the core, the normal build
# searches it
ASAN=0
syms=$(nm -D --undefined-only "$MTLS" 2>/dev/null || true)$(nm "$MTLS" 2>/dev/null || true)
[[ $syms != *__asan_init* ]] || ASAN=1

C=$CERTS
PASS="pp-$(openssl rand -hex 12)"
PIN="$(od -An -N8 -tu8 /dev/urandom | tr -dc 0-9 | cut -c1-14)"
[ "${#PIN}" -ge 8 ] || _lib_die "(setup) no random PIN"
H=$TMP/hsm
p11_token "$H" t1 "$PIN" || _lib_die "(setup) softhsm2-util --init-token"
p11_keygen t1 "$PIN" srv 01 || _lib_die "(setup) keygen srv"
p11_keygen t1 "$PIN" cli 02 || _lib_die "(setup) keygen cli"
p11_cert t1 "$PIN" srv server "$TMP/srv-tok.pem" || _lib_die "(setup) certificate for srv"
p11_cert t1 "$PIN" cli client "$TMP/cli-tok.pem" || _lib_die "(setup) certificate for cli"
printf '%s\n' "$PIN" >"$TMP/pin"
chmod 600 "$TMP/pin"
# the zoo's keys, encrypted with this run's passphrase
for k in server client; do
	openssl pkey -in "$C/$k.key" -aes256 -passout "pass:$PASS" -out "$TMP/$k-enc.key" ||
		_lib_die "(setup) encrypting $k.key"
	chmod 600 "$TMP/$k-enc.key"
done
# what the test's own shell knows is not what is searched: the cases look at the daemons

start_backend "$TMP/be.log" --mode echo

exchange() { # PORT TEXT : a line through PORT and back on a new connection
	local fd line=""
	exec {fd}<>"/dev/tcp/127.0.0.1/$1" || return 0
	printf '%s\n' "$2" >&"$fd"
	IFS= read -r -t 10 line <&"$fd" || true
	exec {fd}>&-
	printf '%s' "$line"
}

# search NAME PID LOG METRICS_PORT : the passphrase and the PIN in everything of one daemon;
# appends to p
search() {
	local name=$1 pid=$2 log=$3 mport=$4 where secret label
	curl -s --max-time 5 "http://127.0.0.1:$mport/metrics" >"$TMP/$name.metrics" || true
	curl -s --max-time 5 "http://127.0.0.1:$mport/status" >"$TMP/$name.status" || true
	[ -s "$TMP/$name.metrics" ] || p+=("$name: /metrics gave nothing (the search would prove nothing)")
	[ -s "$TMP/$name.status" ] || p+=("$name: /status gave nothing")
	tr '\0' '\n' <"/proc/$pid/cmdline" >"$TMP/$name.cmdline"
	tr '\0' '\n' <"/proc/$pid/environ" >"$TMP/$name.environ"
	rm -f -- "$TMP/$name.core".*
	if [ "$ASAN" = 1 ]; then
		echo "skip  $name's core: a sanitizer build's core holds terabytes of shadow memory"
	else
		timeout -k 5 120 gcore -o "$TMP/$name.core" "$pid" >"$TMP/$name.gcore.log" 2>&1 || true
	fi
	if [ "$ASAN" = 0 ] && [ ! -s "$TMP/$name.core.$pid" ]; then
		p+=("$name: gcore took no core: $(tail -n 3 "$TMP/$name.gcore.log")")
	fi
	for secret in "$PASS" "$PIN"; do
		[ "$secret" = "$PASS" ] && label=passphrase || label=PIN
		for where in cmdline environ metrics status; do
			if grep -q -a -F -- "$secret" "$TMP/$name.$where"; then
				p+=("$name: the $label is in /proc/PID/$where or /$where")
			fi
		done
		if grep -q -a -F -- "$secret" "$log"; then p+=("$name: the $label is in its log"); fi
		if [ -s "$TMP/$name.core.$pid" ] && grep -q -a -F -- "$secret" "$TMP/$name.core.$pid"; then
			p+=("$name: the $label is in its core ($(grep -c -a -F -- "$secret" "$TMP/$name.core.$pid") lines)")
		fi
	done
	rm -f -- "$TMP/$name.core.$pid"
}

# run_case TITLE SERVER_ENV SERVER_KEY_ARGS... -- CONNECTOR_ENV CONNECTOR_KEY_ARGS... : each
# daemon started with only its own secret in its environment (ENV: NAME=VALUE)
run_case() {
	local title=$1 srv_env=$2 con_env srv=() con=()
	shift 2
	while [ "$1" != -- ]; do
		srv+=("$1")
		shift
	done
	shift
	con_env=$1
	shift
	con=("$@")
	export "${srv_env?}"
	start_tunnel_server "$TMP/srv.log" --target "127.0.0.1:$BE_PORT" --ca "$C/ca.pem" \
		--allow-uri spiffe://test.mtls/ns/prod/sa/app1 --metrics 127.0.0.1:0 \
		--drain-timeout 100ms "${P11_ALLOW[@]}" "${srv[@]}"
	unset "${srv_env%%=*}"
	export "${con_env?}"
	start_tunnel_connector "$TMP/con.log" --server "127.0.0.1:$SRV_PORT" \
		--server-name server.test --ca "$C/ca.pem" --metrics 127.0.0.1:0 \
		--drain-timeout 100ms "${P11_ALLOW[@]}" "${con[@]}"
	unset "${con_env%%=*}"
	p=()
	[ "$(exchange "$CON_PORT" one)" = one ] || p+=("no traffic through the tunnel")
	# a reload: the key and its secret are used again (and must be gone again after)
	kill -HUP "$SRV_REAL" "$CON_REAL"
	for _ in $(seq 1 200); do
		[ "$(log_count "$TMP/srv.log" reload)" -ge 1 ] &&
			[ "$(log_count "$TMP/con.log" reload)" -ge 1 ] && break
		sleep 0.05
	done
	[ "$(log_count "$TMP/srv.log" reload)" -ge 1 ] || p+=("the server did not reload")
	[ "$(log_count "$TMP/con.log" reload)" -ge 1 ] || p+=("the connector did not reload")
	[ "$(exchange "$CON_PORT" two)" = two ] || p+=("no traffic after the reload")
	search server "$SRV_REAL" "$TMP/srv.log" "$SRV_METRICS"
	search connector "$CON_REAL" "$TMP/con.log" "$CON_METRICS"
	verdict "$title" "${p[@]+"${p[@]}"}" -- "$(tail -n 3 "$TMP/srv.log")" "$(tail -n 3 "$TMP/con.log")"
	stop_bg "$CON_PID"
	stop_bg "$SRV_PID"
	rm -f -- "$TMP/srv.log" "$TMP/con.log"
}

echo "# 1. server: encrypted key, passphrase from the environment; connector: token key, PIN from a file"
run_case "no passphrase or PIN in argv, environ, logs, /metrics, /status or a core (PIN from a file)" \
	"MTLS_TEST_PASS=$PASS" --cert "$C/server-chain.pem" --key "$TMP/server-enc.key" --key-passphrase-env MTLS_TEST_PASS -- \
	MTLS_TEST_UNUSED=x --cert "$TMP/cli-tok.pem" --key "pkcs11:token=t1;object=cli" --key-passphrase-file "$TMP/pin"

echo "# 2. server: token key, PIN from the environment; connector: encrypted key, passphrase from the environment"
run_case "no passphrase or PIN in argv, environ, logs, /metrics, /status or a core (PIN from the environment)" \
	"MTLS_TEST_PIN=$PIN" --cert "$TMP/srv-tok.pem" --key "pkcs11:token=t1;object=srv" --key-passphrase-env MTLS_TEST_PIN -- \
	"MTLS_TEST_PASS=$PASS" --cert "$C/client-chain.pem" --key "$TMP/client-enc.key" --key-passphrase-env MTLS_TEST_PASS

finish
