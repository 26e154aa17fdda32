#!/usr/bin/env bash
# `mtls ca issue` asked for a lifetime past the issuing CA's end: refused with what to do
# that exists (at most N days; a new CA with mtls ca init, since mtls ca rollover keeps the
# issuing CA's end), never "renew the CA", which no command does.
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
[[ $ERR == *"make a new CA with mtls ca init"* ]] || p+=("does not point at mtls ca init")
[[ $ERR != *"renew the CA"* ]] || p+=("suggests 'renew the CA', which no command does")
[ ! -e "$TMP/a.pem" ] || p+=("a certificate was written")
report "a lifetime past the issuing CA: what to do that exists" "${p[@]+"${p[@]}"}"
finish
