#!/usr/bin/env bash
# Two `mtls ca serve` nodes on one PostgreSQL inventory (issuing nodes are stateless): a host
# enrolls on one node, an admin revokes it on the other, and both nodes then serve a CRL
# that lists it and OCSP answers that say revoked; a token used on one node is used for the
# other too; CRL numbers never repeat across nodes.
set -euo pipefail
BG_LIMIT=${BG_LIMIT:-120}
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/pg_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/pg_lib.sh"
command -v curl >/dev/null || _lib_die "curl not found in PATH"

pg_start "$TMP/postgres.log"
sql postgres -c 'CREATE DATABASE ca'
[ "$RC" = 0 ] || setup_die "$LAST_CMD failed ($RC)" "$OUT" "$ERR"
unset PGHOST PGPORT PGDATABASE PGUSER

W=$TMP/w
mkdir -m 700 -- "$W"
A=$W/node-a
B=$W/node-b
TD=spiffe://example.org
ADMIN=$TD/ns/ops/sa/admin

"$MTLS" ca init --dir "$A" --store "$(url ca)" >/dev/null 2>"$W/init.err" ||
	setup_die "mtls ca init --store failed" "$(cat "$W/init.err")"
cp -a -- "$A" "$B" # a second node: the same keys and certificates, the same database
"$MTLS" ca issue --dir "$A" --profile client --uri "$ADMIN" --out "$W/admin" >/dev/null 2>&1 ||
	setup_die "the admin certificate could not be issued"

# serve NODE LOG : start mtls ca serve on NODE; sets NODE_API, NODE_HTTP, NODE_PID
serve() {
	start_bg "$2" "$MTLS" ca serve --dir "$1" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
		--admin-uri "$ADMIN"
	NODE_PID=$BG_PID
	wait_for_line "$2" '"event":"listening"' "$READY_LIMIT" "$NODE_PID" ||
		setup_die "mtls ca serve on $1 did not start" "$(cat -- "$2")"
	NODE_API=https://127.0.0.1:$(grep -m1 -F '"event":"listening"' "$2" | sed -n 's/.*"address":"[^"]*:\([0-9]*\)".*/\1/p')
	NODE_HTTP=http://127.0.0.1:$(grep -m1 -F '"event":"http_listening"' "$2" | sed -n 's/.*"address":"[^"]*:\([0-9]*\)".*/\1/p')
}
serve "$A" "$W/a.log"
A_API=$NODE_API A_HTTP=$NODE_HTTP
serve "$B" "$W/b.log"
B_API=$NODE_API B_HTTP=$NODE_HTTP

http() {
	local out=$1
	shift
	CODE=$(curl -sS -o "$out" -w '%{http_code}' --max-time 20 "$@" 2>"$W/curl.err" || true)
}
post() { # OUT URL JSONFILE [curl args]
	local out=$1 url=$2 body=$3
	shift 3
	http "$out" --cacert "$A/root.pem" -H 'Content-Type: application/json' \
		--data-binary "@$body" "$@" "$url"
}
field() { sed -n "s/.*\"$2\":\"\\([^\"]*\\)\".*/\\1/p" "$1" | head -n 1; }
enroll_json() { # OUT TOKEN KEY
	openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout "$3" -subj / \
		-out "$3.csr" >/dev/null 2>&1 || setup_die "openssl req"
	printf '{"token":"%s","csr":"%s"}' "$2" "$(awk '{printf "%s\\n", $0}' "$3.csr")" >"$1"
}

TOKEN=$("$MTLS" ca token --dir "$A" --profile client --uri "$TD/ns/prod/sa/app" 2>/dev/null) ||
	setup_die "mtls ca token"
enroll_json "$W/enroll.json" "$TOKEN" "$W/app.key"
post "$W/enroll.out" "$A_API/v1/enroll" "$W/enroll.json"
vcheck "a host enrolls on node A" "$([ "$CODE" = 200 ] || echo "$CODE $(cat "$W/enroll.out")")"
SERIAL=$(field "$W/enroll.out" serial)
printf '%b' "$(sed -n 's/.*"chain":"\([^"]*\)".*/\1/p' "$W/enroll.out")" >"$W/app-chain.pem"

post "$W/replay.out" "$B_API/v1/enroll" "$W/enroll.json"
vcheck "the same token on node B: 401 token_used (one inventory)" \
	"$([ "$CODE" = 401 ] && grep -q token_used "$W/replay.out" || echo "$CODE $(cat "$W/replay.out")")"

printf '{"serial":"%s","reason":"keyCompromise"}' "$SERIAL" >"$W/revoke.json"
post "$W/revoke.out" "$B_API/v1/revoke" "$W/revoke.json" --cert "$W/admin-chain.pem" --key "$W/admin.key"
vcheck "the admin revokes it on node B" "$([ "$CODE" = 200 ] || echo "$CODE $(cat "$W/revoke.out")")"

# both nodes serve a CRL that lists it (node A picks up node B's CRL from the inventory)
for node in A B; do
	h=${node}_HTTP
	listed=""
	for _ in $(seq 1 60); do
		http "$W/crl-$node.der" "${!h}/crl"
		if openssl crl -inform DER -in "$W/crl-$node.der" -noout -text 2>/dev/null | grep -q "Serial Number: $SERIAL"; then
			listed=1
			break
		fi
		sleep 0.1
	done
	vcheck "node $node serves a CRL that lists the revocation" "$([ -n "$listed" ] || echo "not listed after 6 s")"
	o=$(openssl ocsp -issuer "$A/intermediate.pem" -cert "$W/app-chain.pem" -url "${!h}/ocsp" \
		-CAfile "$A/root.pem" -no_nonce 2>&1 | tr '\n' ' ')
	vcheck "node $node answers OCSP: revoked" \
		"$([[ $o == *"Response verify OK"* && $o == *": revoked"* ]] || echo "$o")"
done
na=$(openssl crl -inform DER -in "$W/crl-A.der" -noout -crlnumber | sed 's/.*=//')
nb=$(openssl crl -inform DER -in "$W/crl-B.der" -noout -crlnumber | sed 's/.*=//')
vcheck "both nodes serve the same CRL (number $nb), not two of their own" "$([ "$na" = "$nb" ] || echo "A serves #$na, B serves #$nb")"
stop_bg "$NODE_PID"
finish
