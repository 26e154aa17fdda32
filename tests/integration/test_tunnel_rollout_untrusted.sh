#!/usr/bin/env bash
# Per-identity metrics of an auditing server: a certificate that does not lead to the CA
# names whatever its maker chose, so it must count as the one identity "untrusted", whatever
# reason the refusal gives: not only unknown_ca, but a foreign leaf sent without its issuer
# (issuer_not_sent), a self-made CA certificate as the client's own (leaf_is_ca or
# nonconforming), a foreign chain longer than the verify depth. Otherwise a scan takes the
# --metrics-identities slots meant for the CA's own clients (first seen keeps a slot), and
# the runbook's per-identity view of who is not ready loses them to "other". Two slots here:
# one for untrusted (the whole scan), one for the CA's client.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"
command -v python3 >/dev/null || {
	echo "SKIP: python3 not found"
	exit 77
}

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca
TD=spiffe://example.org
"$MTLS" ca init --dir "$D" >/dev/null 2>&1 || _lib_die "(setup) mtls ca init"
"$MTLS" ca init --dir "$W/foreign" >/dev/null 2>&1 || _lib_die "(setup) foreign CA"
issue() { "$MTLS" ca issue --dir "$D" "$@" >/dev/null 2>&1 || _lib_die "(setup) mtls ca issue $*"; }
issue --profile server --dns localhost --ip 127.0.0.1 --out "$W/srv"
issue --profile client --uri "$TD/b" --out "$W/b"
for i in 1 2; do
	"$MTLS" ca issue --dir "$W/foreign" --profile client --uri "$TD/forged$i" --out "$W/f$i" \
		>/dev/null 2>&1 || _lib_die "(setup) foreign client"
done
# a self-made CA certificate presented as the client's own
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
	-subj "/CN=forged-ca" -addext "subjectAltName=URI:$TD/forged-ca" \
	-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
	-keyout "$W/sc.key" -out "$W/sc.pem" >/dev/null 2>&1 || _lib_die "(setup) self-made CA"

cat >"$W/cli.py" <<'EOF'
import socket, ssl, sys
port, ca, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
try:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)
    s = ctx.wrap_socket(s, server_hostname="localhost")
    s.sendall(b"x\n")
    print(s.makefile("rb").readline().decode(errors="replace").strip())
except (OSError, ssl.SSLError):
    print("")
EOF

start_backend "$W/be.log" --mode echo
start_tunnel_server "$W/srv.log" --target "127.0.0.1:$BE_PORT" --cert "$W/srv-chain.pem" \
	--key "$W/srv.key" --ca "$D/root.pem" --allow-uri "$TD/a" --mode insecure-audit \
	--metrics-identities 2 --metrics 127.0.0.1:0
M=$SRV_METRICS
m() { metric "$M" "$1"; }
client() { python3 "$W/cli.py" "$SRV_PORT" "$D/root.pem" "$1" "$2"; }

# the scan first: two foreign leaves sent alone, a self-made CA certificate
for c in f1 f2 sc; do
	[ "$(client "$W/$c.pem" "$W/$c.key")" = x ] || _lib_die "(setup) $c not forwarded in audit mode"
done
# then the CA's own client the rules refuse: it must get the one slot
[ "$(client "$W/b-chain.pem" "$W/b.key")" = x ] || _lib_die "(setup) b not forwarded in audit mode"
for _ in $(seq 1 100); do
	[ "$(m 'mtls_connections_by_kind_total{kind="mtls"}')" = 4 ] && break
	sleep 0.05
done
p=()
[ "$(m "mtls_identity_would_refuse_total{identity=\"$TD/b\",reason=\"identity_not_allowed\"}")" = 1 ] ||
	p+=("the CA's client b has no slot of its own: a scan of foreign certificates took it")
[ "$(m 'mtls_identity_connections_total{identity="untrusted",kind="mtls"}')" = 3 ] ||
	p+=("the three foreign certificates are not counted as untrusted")
for n in forged1 forged2 forged-ca; do
	[ -z "$(m "mtls_identity_connections_total{identity=\"$TD/$n\",kind=\"mtls\"}")" ] ||
		p+=("a foreign certificate's name $TD/$n is a metrics identity")
done
verdict "audit: foreign certificates count as untrusted whatever their reason; the CA's client keeps its slot" \
	"${p[@]+"${p[@]}"}" -- "$(curl -s "http://127.0.0.1:$M/metrics" | grep '^mtls_identity\|^mtls_would' || true)" \
	"$(grep would_refuse "$W/srv.log" | head -n 4)"
stop_bg "$SRV_PID"
finish
