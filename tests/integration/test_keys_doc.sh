#!/usr/bin/env bash
# docs/keys.md's SoftHSM walk-through, run as the document writes it: its shell blocks
# (marked <!-- keys-walkthrough -->) from an empty directory, then its `mtls server` block
# (<!-- keys-walkthrough-server -->) with the listen and target addresses swapped for a free
# port and this test's echo backend; then a connector with the walk-through's client
# certificate carries a line through the server, whose key is on the token. And the PIN is
# not on the server's command line.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"
# shellcheck source=tests/integration/p11_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/p11_lib.sh"

p11_have || _lib_die "softhsm2, opensc or libengine-pkcs11-openssl missing: run scripts/install-deps.sh"
DOC=$MTLS_SOURCE_DIR/docs/keys.md

# blocks TAG : the ```sh blocks of the document that follow a <!-- TAG --> line
blocks() {
	awk -v tag="<!-- $1 -->" '
		$0 == tag { want = 1; next }
		want && /^```sh$/ { inside = 1; next }
		inside && /^```$/ { inside = 0; want = 0; next }
		inside { print }' "$DOC"
}
setup=$(blocks keys-walkthrough)
server=$(blocks keys-walkthrough-server)
p=()
[ "$(grep -c '' <<<"$setup")" -ge 8 ] || p+=("the walk-through's setup blocks were not found")
[[ $server == *"mtls server --listen 127.0.0.1:8443 --target 127.0.0.1:8080"* ]] ||
	p+=("the walk-through's server block was not found, or its addresses changed")
verdict "docs/keys.md holds the walk-through" "${p[@]+"${p[@]}"}" -- "$setup" "$server"

start_backend "$TMP/be.log" --mode echo
server=${server/--listen 127.0.0.1:8443/--listen 127.0.0.1:0 --log-format json}
server=${server/--target 127.0.0.1:8080/--target 127.0.0.1:$BE_PORT}
{
	echo 'set -euo pipefail'
	echo "export PATH=$MTLS_BIN_DIR:\$PATH"
	echo "cd $TMP/walk"
	printf '%s\n' "$setup"
	printf 'exec %s\n' "$server"
} >"$TMP/walk.sh"
mkdir -- "$TMP/walk"
start_bg "$TMP/walk.log" bash "$TMP/walk.sh"
WALK_PID=$BG_PID
p=()
if wait_for_line "$TMP/walk.log" '"event":"listening"' "$READY_LIMIT" "$WALK_PID"; then
	SRV_PORT=$(_daemon_port "$TMP/walk.log" listening)
	SRV_REAL=$(daemon_pid "$TMP/walk.log")
	D=$TMP/walk/demo
	start_tunnel_connector "$TMP/con.log" --server "127.0.0.1:$SRV_PORT" --server-name localhost \
		--cert "$D/app-chain.pem" --key "$D/app.key" --ca "$D/ca/root.pem" --drain-timeout 100ms
	exec {fd}<>"/dev/tcp/127.0.0.1/$CON_PORT"
	printf 'through the token\n' >&"$fd"
	IFS= read -r -t 10 line <&"$fd" || line=""
	exec {fd}>&-
	[ "$line" = "through the token" ] || p+=("no echo through the walk-through's server")
	[[ $(tr '\0' ' ' <"/proc/$SRV_REAL/cmdline") != *1234* ]] || p+=("the PIN is on the server's command line")
	grep -q 'pkcs11:token=web;object=server-key' "/proc/$SRV_REAL/cmdline" ||
		p+=("the server does not run with the token key")
	stop_bg "$CON_PID"
else
	p+=("the walk-through did not bring the server up")
fi
verdict "the walk-through's commands, run as written: mtls server serves with the token key" \
	"${p[@]+"${p[@]}"}" -- "$(tail -n 20 "$TMP/walk.log")"
stop_bg "$WALK_PID"

finish
