#!/usr/bin/env bash
# `mtls ca issue --force` into a --out directory someone else can write: what PREFIX.pem held
# was chosen by them. The output names the replaced serial with its revoke command only
# when that certificate named the same holder as the new one; a certificate of another
# holder planted there (here: of another service, issued by this CA and valid) is named, but
# not offered for revocation: the operator would have cut that service off.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

W=$TMP/w
mkdir -m 700 -- "$W"
D=$W/ca
TD=spiffe://example.org

ca() {
	LAST_CMD="mtls ca $*"
	run "$MTLS" ca "$@"
}
serial() { openssl x509 -in "$1" -noout -serial 2>/dev/null | sed 's/^serial=//'; }

"$MTLS" ca init --dir "$D" >/dev/null 2>&1 || _lib_die "(setup) mtls ca init"
O=$W/shared
mkdir -m 1777 -- "$O"
mkdir -- "$W/db"
ca issue --dir "$D" --profile client --uri "$TD/app" --out "$O/app"
[ "$RC" = 0 ] || _lib_die "(setup) the app's first issue: $ERR"
ca issue --dir "$D" --profile client --uri "$TD/db" --out "$W/db/db"
[ "$RC" = 0 ] || _lib_die "(setup) the db's certificate: $ERR"
victim=$(serial "$W/db/db.pem")

# the same holder: offered for revocation, as before
first=$(serial "$O/app.pem")
ca issue --dir "$D" --profile client --uri "$TD/app" --out "$O/app" --force
p=()
[ "$RC" = 0 ] || p+=("exit $RC: $ERR")
[[ $OUT == *"mtls ca revoke --serial $first --reason superseded"* ]] ||
	p+=("the replaced serial $first of the same holder is not offered for revocation")
report "--force over the same holder's certificate: its revoke command shown" "${p[@]+"${p[@]}"}"

# the db's certificate planted as app.pem
cp -- "$W/db/db.pem" "$O/app.pem"
ca issue --dir "$D" --profile client --uri "$TD/app" --out "$O/app" --force
p=()
[ "$RC" = 0 ] || p+=("exit $RC: $ERR")
[[ $OUT != *"mtls ca revoke --serial $victim"* ]] ||
	p+=("the output offers to revoke $victim, the db's certificate")
[[ $OUT == *"$victim"*"other names"* ]] || p+=("the output does not say $victim names others")
report "--force over a planted certificate of another holder: named, no revoke command" "${p[@]+"${p[@]}"}"
finish
