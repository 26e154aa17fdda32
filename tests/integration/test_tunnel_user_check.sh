#!/usr/bin/env bash
# --user NAME naming no user is refused with the rest of the options, before the daemon opens
# any socket: no CRL fetch (--crl-url with no cache yet fetches at start), no metrics or
# listen socket. The witness is a plaintext listener given as --crl-url: the daemon must
# never connect to it.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

C=$CERTS
NOUSER=mtls-test-no-such-user-$$
if getent passwd "$NOUSER" >/dev/null; then
	_lib_die "user $NOUSER exists"
fi
start_backend "$TMP/witness.log" --mode http
WITNESS=$BE_PORT

# user_refused NAME ROLE ARGS... : the daemon exits 2 with one line naming --user, and the
# witness saw no connection
user_refused() {
	local name=$1 role=$2 problems=()
	shift 2
	local before
	before=$(grep -c '^conn open' "$TMP/witness.log" || true)
	LAST_CMD="mtls $role ... --user $NOUSER"
	run "$MTLS" "$role" --listen 127.0.0.1:0 --metrics 127.0.0.1:0 --user "$NOUSER" \
		--crl-url "http://127.0.0.1:$WITNESS/crl" --crl-cache "$TMP/$role-crl-cache.pem" \
		--log-format json "$@"
	[ "$RC" = 2 ] || problems+=("exit status $RC, want 2")
	[[ $ERR == *"--user $NOUSER: no such user"* ]] || problems+=("no line naming --user")
	[ "$(grep -c '^mtls ' <<<"$ERR" || true)" = 1 ] || problems+=("not one error line")
	[ "$(grep -c '^conn open' "$TMP/witness.log" || true)" = "$before" ] ||
		problems+=("the daemon connected to the --crl-url witness before refusing --user")
	grep -q '"event":"listening"\|"event":"metrics_listening"' <<<"$ERR$OUT" &&
		problems+=("the daemon listened")
	[ -e "$TMP/$role-crl-cache.pem" ] && problems+=("the CRL cache was written")
	report "$name" "${problems[@]+"${problems[@]}"}"
}

user_refused "server: an unknown --user is refused before any socket" server \
	--target 127.0.0.1:1 --cert "$C/server-chain.pem" --key "$C/server.key" --ca "$C/ca.pem" \
	--allow-any-identity
user_refused "connector: an unknown --user is refused before any socket" connector \
	--server 127.0.0.1:1 --cert "$C/client-chain.pem" --key "$C/client.key" --ca "$C/ca.pem"

finish
