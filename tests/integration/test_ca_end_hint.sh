#!/usr/bin/env bash
# `mtls ca issue` asked for a lifetime past the issuing CA's end: refused with what to do
# that exists (at most N days; mtls ca renew-issuer, which gives the issuing CA a new end),
# never "renew the CA", which no command does; and the command it names works.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

"$MTLS" ca init --dir "$TMP/ca" >/dev/null 2>&1 || _lib_die "(setup) mtls ca init failed"
LAST_CMD="mtls ca issue --days 100000"
run "$MTLS" ca issue --dir "$TMP/ca" --profile client --uri spiffe://example.org/a \
	--days 100000 --out "$TMP/a"
p=()
[ "$RC" = 2 ] || p+=("exit $RC, expected 2")
[[ $ERR == *"ends after the issuing CA"*"ask for at most"*"days"* ]] || p+=("no 'ask for at most N days'")
[[ $ERR == *"mtls ca renew-issuer"* ]] || p+=("does not point at mtls ca renew-issuer")
[[ $ERR != *"renew the CA"* ]] || p+=("suggests 'renew the CA', which no command does")
[ ! -e "$TMP/a.pem" ] || p+=("a certificate was written")
report "a lifetime past the issuing CA: what to do that exists" "${p[@]+"${p[@]}"}"
LAST_CMD="mtls ca renew-issuer"
run "$MTLS" ca renew-issuer --dir "$TMP/ca"
p=()
[ "$RC" = 0 ] || p+=("exit $RC")
report "the command the hint names runs" "${p[@]+"${p[@]}"}"
finish
