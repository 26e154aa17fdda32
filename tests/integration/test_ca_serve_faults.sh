#!/usr/bin/env bash
# mtls ca serve when its disk fills up: an enrollment gets a status that fits (507
# disk_full) with a one-line reason, nothing is issued, the
# token stays unused, and the service keeps serving what it can (roots, CRL, OCSP); once the
# disk has room again, the same token enrolls.
#
# The CA directory lives on a small tmpfs mounted in a private mount namespace (unshare -m),
# where the service runs; a shell in that namespace fills the disk and frees it when told to
# through marker files outside it.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

command -v curl >/dev/null || _lib_die "curl not found in PATH"
command -v unshare >/dev/null || _lib_die "unshare (util-linux) not found in PATH"
if ! unshare -m --propagation private true 2>/dev/null; then
	echo "skip  no mount namespace can be made here (unshare -m needs CAP_SYS_ADMIN)"
	exit 0
fi

W=$TMP/w
mkdir -m 700 -- "$W" "$W/fs"
D=$W/fs/ca
TD=spiffe://example.org

"$MTLS" ca init --dir "$W/ca" >/dev/null 2>&1 || _lib_die "(setup) mtls ca init failed"
# tokens are rows of the inventory: made before the copy the service runs on (the URL in a
# token is for the client; the service does not check it)
TOKEN=$("$MTLS" ca token --dir "$W/ca" --profile client --uri "$TD/x" \
	--ca-url https://127.0.0.1:1 2>/dev/null) || _lib_die "(setup) mtls ca token"

# The namespace: mount, copy the CA in, start the service, then obey the markers.
cat >"$W/ns.sh" <<EOF
set -eu
mount -t tmpfs -o size=8m,mode=0700 tmpfs "$W/fs"
cp -a "$W/ca" "$D"
"$MTLS" ca serve --dir "$D" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 &
serve=\$!
trap 'kill \$serve 2>/dev/null; wait \$serve 2>/dev/null' EXIT
step() { while [ ! -e "$W/\$1" ]; do kill -0 \$serve || exit 1; sleep 0.05; done; }
step fill
dd if=/dev/zero of="$W/fs/filler" bs=4k 2>/dev/null || true
touch "$W/filled"
step free
rm -f "$W/fs/filler"
touch "$W/freed"
step end
EOF
start_bg "$W/serve.log" unshare -m --propagation private bash "$W/ns.sh"
NS_PID=$BG_PID
wait_for_line "$W/serve.log" '"event":"listening"' "$READY_LIMIT" "$NS_PID" || {
	cat -- "$W/serve.log" >&2
	_lib_die "mtls ca serve did not start in its namespace"
}
port_of() { grep -m1 -F "\"event\":\"$1\"" "$W/serve.log" | sed -n 's/.*"address":"[^"]*:\([0-9][0-9]*\)".*/\1/p'; }
API=https://127.0.0.1:$(port_of listening)
HTTP=http://127.0.0.1:$(port_of http_listening)

http() {
	local out=$1
	shift
	CODE=$(curl -sS -o "$out" -w '%{http_code}' --max-time 60 "$@" 2>"$W/curl.err" || true)
}
await() {
	local n=400
	while [ ! -e "$W/$1" ] && [ "$n" -gt 0 ]; do
		sleep 0.05
		n=$((n - 1))
	done
	[ -e "$W/$1" ] || _lib_die "the namespace never reached '$1'"
}
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout "$W/k.pem" \
	-subj / -out "$W/k.csr" >/dev/null 2>&1 || _lib_die "(setup) openssl req"
printf '{"token":"%s","csr":"%s"}' "$TOKEN" "$(awk '{printf "%s\\n", $0}' "$W/k.csr")" >"$W/enroll.json"
enroll() {
	http "$1" --cacert "$D/root.pem" -H 'Content-Type: application/json' \
		--data-binary "@$W/enroll.json" "$API/v1/enroll"
}
served() { # the public data still answers
	local p=()
	http "$W/roots.pem" "$HTTP/roots.pem"
	[ "$CODE" = 200 ] || p+=("GET /roots.pem: $CODE")
	http "$W/crl.der" "$HTTP/crl"
	[ "$CODE" = 200 ] || p+=("GET /crl: $CODE")
	printf '%s\n' "${p[@]+"${p[@]}"}"
}
# D is inside the namespace: root.pem is the same file as in the original CA
D=$W/ca

touch "$W/fill"
await filled
enroll "$W/full.out"
p=()
[ "$CODE" = 507 ] || p+=("status $CODE, expected 507: $(cat "$W/full.out" "$W/curl.err")")
grep -q '"error":"disk_full"' "$W/full.out" || p+=("not disk_full")
s=$(served)
[ -z "$s" ] || p+=("$s")
kill -0 "$NS_PID" 2>/dev/null || p+=("the service died")
verdict "a full disk: enroll gets 507 disk_full; roots and CRL still served" "${p[@]+"${p[@]}"}" \
	-- "$(tail -n 5 "$W/serve.log")"

touch "$W/free"
await freed
enroll "$W/after.out"
vcheck "room again: the same token enrolls (the refusal did not use it up)" \
	"$([ "$CODE" = 200 ] || echo "status $CODE: $(cat "$W/after.out")")"

touch "$W/end"
wait_exit "$NS_PID" 10
finish
