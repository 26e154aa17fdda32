#!/usr/bin/env bash
# The README's first command (scripts/setup.sh = install-deps.sh, build.sh, demo.sh), part by
# part on the tree under test:
#   - install-deps.sh as a user who is not root and has no sudo, on a machine where every
#     package is present: nothing to install, so nothing to refuse (it used to ask for root
#     before looking); with a package missing: one line naming it and what to do, exit 1;
#   - demo.sh: the main job (a CA by mtls ca, mtls server + connector carrying curl's traffic
#     to a real HTTP service, a refusal with its reason, the metrics) and the library's
#     examples, ending "demo ok" with nothing left running.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

SRC=${MTLS_SOURCE_DIR:?}

# A PATH holding only what install-deps.sh needs besides bash's builtins: no sudo, no apt-get.
chmod 711 "$TMP"
mkdir -m 755 "$TMP/path"
for tool in dpkg-query grep id; do
	ln -s "$(command -v "$tool")" "$TMP/path/$tool"
done
REAL_DPKG_QUERY=$(command -v dpkg-query)
REAL_SUM=$(sha256sum <"$REAL_DPKG_QUERY")
# as_user CMD... : CMD as nobody when the test runs as root, else as the user running it
as_user() {
	if [ "$(id -u)" -eq 0 ]; then
		setpriv --reuid=65534 --regid=65534 --clear-groups "$@"
	else
		"$@"
	fi
}

# (not `run`: it reads stdin from /dev/null, and the script comes on stdin, so that a user
# who cannot read this test's private directory can run it)
RC=0
as_user env -i PATH="$TMP/path" /bin/bash -s <"$SRC/scripts/install-deps.sh" \
	>"$TMP/deps.out" 2>"$TMP/deps.err" || RC=$?
OUT=$(cat "$TMP/deps.out")
ERR=$(cat "$TMP/deps.err")
LAST_CMD="install-deps.sh as $(as_user id -un 2>/dev/null || echo '?'), PATH without sudo"
p=()
if [ "$(dpkg-query -W -f='${Status}\n' curl 2>/dev/null)" != "install ok installed" ]; then
	p+=("this machine lacks packages install-deps.sh lists: run scripts/install-deps.sh first")
fi
[ "$RC" = 0 ] || p+=("exit $RC, expected 0")
[[ $OUT == *"all packages present"* ]] || p+=("it does not say that every package is present")
report "install-deps.sh without root or sudo, every package present: exit 0, nothing to do" \
	"${p[@]+"${p[@]}"}"

# A dpkg-query that reports curl as not installed. The link goes first: writing through it
# would overwrite the system's dpkg-query.
rm -f -- "$TMP/path/dpkg-query"
cat >"$TMP/path/dpkg-query" <<'EOF'
#!/bin/sh
for a; do last=$a; done
[ "$last" = curl ] && { echo "deinstall ok config-files"; exit 0; }
echo "install ok installed"
EOF
chmod 755 "$TMP/path/dpkg-query"
RC=0
as_user env -i PATH="$TMP/path" /bin/bash -s <"$SRC/scripts/install-deps.sh" \
	>"$TMP/deps.out" 2>"$TMP/deps.err" || RC=$?
OUT=$(cat "$TMP/deps.out")
ERR=$(cat "$TMP/deps.err")
LAST_CMD="install-deps.sh as a user without sudo, curl missing"
p=()
[ "$RC" = 1 ] || p+=("exit $RC, expected 1")
[ "$(printf '%s\n' "$ERR" | grep -c .)" = 1 ] || p+=("not one line on stderr")
[[ $ERR == *"missing curl"* ]] || p+=("the message does not name the missing package")
[[ $ERR == *"apt-get"* && $ERR == *root* ]] || p+=("the message does not say what to do")
report "install-deps.sh without root or sudo, a package missing: one line naming it, exit 1" \
	"${p[@]+"${p[@]}"}"

[ "$(sha256sum <"$REAL_DPKG_QUERY")" = "$REAL_SUM" ] ||
	_lib_die "$REAL_DPKG_QUERY was changed by this test: reinstall the dpkg package"

# The demo, on the binaries under test.
RC=0
MTLS_BIN_DIR=$MTLS_BIN_DIR timeout -k 2 120 bash "$SRC/scripts/demo.sh" \
	>"$TMP/demo.out" 2>"$TMP/demo.err" </dev/null || RC=$?
OUT=$(cat "$TMP/demo.out")
ERR=$(cat "$TMP/demo.err")
LAST_CMD="scripts/demo.sh"
p=()
[ "$RC" = 0 ] || p+=("exit $RC")
[ "$(printf '%s\n' "$OUT" | tail -n 1)" = "== demo ok" ] || p+=("it does not end with '== demo ok'")
[[ $OUT == *"hello from the service behind mtls"* ]] ||
	p+=("the HTTP service's page did not come back through connector and server")
[[ $OUT == *'"reason":"identity_not_allowed"'* ]] ||
	p+=("the refusal of the intruder's identity is not shown with its reason")
[[ $OUT == *"/metrics"* && $OUT == *'mtls_handshakes_total{result="ok"} 1'* ]] ||
	p+=("the metrics URL and a handshake counter are not shown")
[[ $OUT == *"echo: hello over mutual TLS"* && $OUT == *"refused: revoked:"* ]] ||
	p+=("the library's echo examples did not run")
dir=$(printf '%s\n' "$OUT" | sed -n 's/.*certificates (mtls ca issue), in \(.*\)$/\1/p')
[ -n "$dir" ] && [ ! -e "$dir" ] || p+=("its temporary directory '$dir' is left behind")
left=$(pgrep -f -- "$dir/" 2>/dev/null || true)
[ -z "$dir" ] || [ -z "$left" ] || p+=("processes left running: $left")
report "demo.sh: CA, server and connector carry curl to an HTTP service; a refusal and its reason" \
	"${p[@]+"${p[@]}"}"

finish
