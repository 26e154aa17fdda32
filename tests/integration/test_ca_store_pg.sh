#!/usr/bin/env bash
# The CA inventory on PostgreSQL, for several CA nodes: a throwaway server started here
# (initdb in $TMP, a unix socket only, no TCP port), then
#   - the store's unit tests (test_ca_store) on it, which run every case on SQLite and on
#     PostgreSQL: two processes taking one enrollment token at once (exactly one wins), a
#     second publisher waiting for the CRL number, four processes publishing CRLs at once,
#     sessions ended by the server (inside a transaction and between two);
#   - `mtls ca init --store` / issue / revoke / list / audit on it, and a second CA node (a
#     copy of the CA directory) sharing the database;
#   - two nodes publishing CRLs at once: every publication succeeds, numbers never repeat
#     and increase in the audit log;
#   - a read-only database and a stopped one: one clear line naming the database, and
#     nothing half-done (no files, no rows, the audit log intact).
#
# PostgreSQL's server binaries are required (CI installs postgresql): without them this
# fails rather than skip. As root, the cluster runs as the `postgres` system user.
set -euo pipefail
BG_LIMIT=${BG_LIMIT:-120} # the server lives through the whole script
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

# shellcheck source=tests/integration/pg_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/pg_lib.sh"
pg_start "$TMP/postgres.log"
UNIT=$MTLS_BIN_DIR/tests/test_ca_store
[ -x "$UNIT" ] || setup_die "$UNIT is missing: build the project first"

sql postgres -c 'CREATE DATABASE ca' -c 'CREATE DATABASE other'
[ "$RC" = 0 ] || setup_die "$LAST_CMD failed ($RC)" "$OUT" "$ERR"
URL=$(url ca)
W=$TMP/w
mkdir -m 700 -- "$W"
CA1=$TMP/node1
CA2=$TMP/node2
NAME='PostgreSQL database ca'

# ==========================================================================================
echo "# the store's unit tests, on SQLite and on this server"

RUN_LIMIT=60 LAST_CMD="MTLS_TEST_PG_URL=$(url postgres) test_ca_store"
RUN_LIMIT=60 run env MTLS_TEST_PG_URL="$(url postgres)" "$UNIT"
p=()
[ "$RC" = 0 ] || p+=("test_ca_store exit status $RC, expected 0")
for t in test_token_race test_crl_number_wait test_crl_race test_tokens test_crl_der; do
	[ "$(count_lines "$OUT" "[       OK ] $t")" = 2 ] || p+=("$t did not pass on both backends")
done
for t in test_triggers_pg test_reconnect_pg test_not_an_inventory_pg; do
	[ "$(count_lines "$OUT" "[       OK ] $t")" = 1 ] || p+=("$t did not pass on PostgreSQL")
done
report "test_ca_store: every case on SQLite and PostgreSQL (token race, CRL number wait, 4 publishers)" \
	"${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# mtls ca on PostgreSQL"

p=()
LAST_CMD="mtls ca init --dir $CA1 --store $URL"
run "$MTLS" ca init --dir "$CA1" --store "$URL"
[ "$RC" = 0 ] || p+=("exit status $RC, expected 0")
[ -f "$CA1/store" ] || p+=("no $CA1/store")
[ ! -e "$CA1/ca.db" ] || p+=("$CA1/ca.db exists: the inventory went to SQLite")
[ "$(cat -- "$CA1/store" 2>/dev/null)" = "$URL" ] || p+=("$CA1/store does not hold the URL")
[ "$(stat -c %a -- "$CA1/store" 2>/dev/null)" = 600 ] || p+=("$CA1/store is not mode 0600")
report "ca init --store: the inventory in the database, DIR/store (0600) names it" "${p[@]+"${p[@]}"}"

p=()
LAST_CMD="mtls ca init --store URL-with-password"
run "$MTLS" ca init --dir "$W/pw" --store "postgresql://postgres:s3cret@/ca?host=$PGSOCK&port=$PGP"
[ "$RC" != 0 ] || p+=("accepted")
has_line "$ERR" "mtls ca init: --store: the URL carries a password" || p+=("no 'carries a password' line")
[[ $ERR == *PGPASSFILE* ]] || p+=("does not say PGPASSFILE")
[[ $ERR != *s3cret* ]] || p+=("the password was printed")
[ ! -e "$W/pw" ] || p+=("$W/pw was created")
report "ca init --store with a password in the URL: refused, pointing to PGPASSFILE/PGPASSWORD" \
	"${p[@]+"${p[@]}"}"

p=()
LAST_CMD="mtls ca init --dir $W/again --store (the same database)"
run "$MTLS" ca init --dir "$W/again" --store "$URL"
[ "$RC" != 0 ] || p+=("accepted")
one_line "$ERR" || p+=("not one line")
[[ $ERR == *"$NAME"*"already holds a CA inventory"* ]] || p+=("does not say the database already holds an inventory")
[ ! -e "$W/again" ] || p+=("$W/again was created")
report "ca init --store on a database that holds an inventory: refused, nothing created" \
	"${p[@]+"${p[@]}"}"

p=()
LAST_CMD="mtls ca issue --dir $CA1 (server a.test)"
run "$MTLS" ca issue --dir "$CA1" --profile server --dns a.test --out "$W/a"
[ "$RC" = 0 ] || p+=("issue: exit status $RC")
SERIAL_A=$(openssl x509 -noout -serial -in "$W/a.pem" 2>/dev/null | sed 's/^serial=//' || true)
[ -n "$SERIAL_A" ] || p+=("no certificate in $W/a.pem")
run "$MTLS" ca list --dir "$CA1"
[[ $OUT == *"$SERIAL_A valid"* ]] || p+=("list does not show $SERIAL_A valid")
sql ca -c "SELECT count(*) FROM certs WHERE serial = '$SERIAL_A'"
[ "$OUT" = 1 ] || p+=("the certs table does not hold $SERIAL_A")
LAST_CMD="mtls ca revoke --dir $CA1 --cert $W/a.pem"
run "$MTLS" ca revoke --dir "$CA1" --cert "$W/a.pem" --reason keyCompromise
[ "$RC" = 0 ] || p+=("revoke: exit status $RC")
run "$MTLS" ca list --dir "$CA1" --revoked
[[ $OUT == *"$SERIAL_A revoked"* ]] || p+=("list --revoked does not show $SERIAL_A")
openssl crl -in "$CA1/crl.pem" -noout -text 2>/dev/null | grep -q "Serial Number: $SERIAL_A" ||
	p+=("$CA1/crl.pem does not list $SERIAL_A")
LAST_CMD="mtls ca audit --dir $CA1"
run "$MTLS" ca audit --dir "$CA1"
[ "$RC" = 0 ] || p+=("audit: exit status $RC")
has_line "$OUT" "audit log intact:" || p+=("audit does not say intact")
report "ca issue / list / revoke / audit on PostgreSQL" "${p[@]+"${p[@]}"}"

# A second node: a copy of the CA directory, pointing at the same database.
p=()
cp -a -- "$CA1" "$CA2"
LAST_CMD="mtls ca issue --dir $CA2 (client b)"
run "$MTLS" ca issue --dir "$CA2" --profile client --uri spiffe://example.org/b --out "$W/b"
[ "$RC" = 0 ] || p+=("issue on node 2: exit status $RC")
SERIAL_B=$(openssl x509 -noout -serial -in "$W/b.pem" 2>/dev/null | sed 's/^serial=//' || true)
run "$MTLS" ca list --dir "$CA1"
[ -n "$SERIAL_B" ] && [[ $OUT == *"$SERIAL_B valid"* ]] || p+=("node 1 does not list what node 2 issued")
LAST_CMD="mtls ca revoke --dir $CA1 --serial $SERIAL_B"
run "$MTLS" ca revoke --dir "$CA1" --serial "$SERIAL_B" --reason superseded
[ "$RC" = 0 ] || p+=("node 1 revoking node 2's certificate: exit status $RC")
run "$MTLS" ca list --dir "$CA2" --revoked
[[ $OUT == *"$SERIAL_B revoked"* ]] || p+=("node 2 does not list the revocation node 1 made")
for d in "$CA1" "$CA2"; do
	run "$MTLS" ca audit --dir "$d"
	[ "$RC" = 0 ] || p+=("audit of $d: exit status $RC: $OUT $ERR")
done
report "a second node (a copy of DIR): issues into the shared inventory, sees node 1's changes" \
	"${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# two nodes publishing CRLs at once"

sql ca -c 'SELECT COALESCE(MAX(number), 0) FROM crls'
BEFORE=$OUT
ROUNDS=8
for n in 1 2; do
	# shellcheck disable=SC2016
	start_bg "$W/crl$n.log" bash -c 'for i in $(seq "$2"); do "$1" ca crl --dir "$3" || echo "FAILED $i"; done' \
		_ "$MTLS" "$ROUNDS" "$TMP/node$n"
	eval "CRL_PID$n=\$BG_PID"
done
p=()
wait_exit "$CRL_PID1" 60
[ "$EXIT_RC" = 0 ] || p+=("node 1's loop: $EXIT_RC")
wait_exit "$CRL_PID2" 60
[ "$EXIT_RC" = 0 ] || p+=("node 2's loop: $EXIT_RC")
for n in 1 2; do
	[ "$(grep -c '^published' "$W/crl$n.log" || true)" = "$ROUNDS" ] ||
		p+=("node $n published $(grep -c '^published' "$W/crl$n.log" || true) of $ROUNDS CRLs: $(grep -v '^published' "$W/crl$n.log" | head -n 3)")
done
sql ca -c 'SELECT count(*), count(DISTINCT number), MAX(number) FROM crls'
[ "$OUT" = "$((BEFORE + 2 * ROUNDS))|$((BEFORE + 2 * ROUNDS))|$((BEFORE + 2 * ROUNDS))" ] ||
	p+=("crls (count, distinct, max): $OUT, expected $((BEFORE + 2 * ROUNDS)) each")
# the numbers in the audit log, in log order: strictly increasing
sql ca -c "SELECT detail FROM audit WHERE action = 'crl' ORDER BY seq"
prev=0
while IFS= read -r line; do
	n=$(sed -n 's/^CRL \([0-9]*\),.*/\1/p' <<<"$line")
	if [ -z "$n" ] || [ "$n" -le "$prev" ]; then
		p+=("the audit log records CRL $n after $prev")
		break
	fi
	prev=$n
done <<<"$OUT"
for d in "$CA1" "$CA2"; do
	run "$MTLS" ca audit --dir "$d"
	[ "$RC" = 0 ] || p+=("audit of $d: exit status $RC: $OUT $ERR")
done
report "2 nodes x $ROUNDS 'mtls ca crl' at once: all published, numbers never repeat, increase in the log" \
	"${p[@]+"${p[@]}"}"

# ==========================================================================================
echo "# a read-only database, a stopped one"

# count_certs : rows of the certs table.
count_certs() {
	sql ca -c 'SELECT count(*) FROM certs'
	echo "$OUT"
}
# a certificate nobody revoked yet, for the revocation refused below
"$MTLS" ca issue --dir "$CA1" --profile client --uri spiffe://example.org/ro-victim \
	--out "$W/victim" >/dev/null 2>&1 || setup_die "the certificate to revoke could not be issued"
CERTS_BEFORE=$(count_certs)

p=()
sql postgres -c 'ALTER DATABASE ca SET default_transaction_read_only = on'
[ "$RC" = 0 ] || p+=("cannot make the database read-only: $ERR")
LAST_CMD="mtls ca issue --dir $CA1 (read-only database)"
run "$MTLS" ca issue --dir "$CA1" --profile server --dns ro.test --out "$W/ro"
[ "$RC" != 0 ] || p+=("issue succeeded on a read-only database")
one_line "$ERR" || p+=("not one line")
[[ $ERR == *"the CA inventory, $NAME"*"is read-only"*"nothing was changed"* ]] ||
	p+=("does not say the database is read-only")
[ ! -e "$W/ro.pem" ] && [ ! -e "$W/ro.key" ] || p+=("files were written")
saved=("$RC" "$OUT" "$ERR")
run "$MTLS" ca revoke --dir "$CA1" --cert "$W/victim.pem" --reason keyCompromise
[ "$RC" != 0 ] || p+=("revoke succeeded on a read-only database")
[[ $ERR == *"is read-only"* ]] || p+=("revoke: $ERR")
run "$MTLS" ca list --dir "$CA1"
[ "$RC" = 0 ] || p+=("list (a read) failed on a read-only database: $ERR")
sql postgres -c 'ALTER DATABASE ca RESET default_transaction_read_only'
[ "$(count_certs)" = "$CERTS_BEFORE" ] || p+=("the certs table changed")
RC=${saved[0]} OUT=${saved[1]} ERR=${saved[2]}
report "a read-only database: one line saying so, nothing written; reads still work" \
	"${p[@]+"${p[@]}"}"

CERTS_BEFORE=$(count_certs)

p=()
stop_bg "$PG_PID"
LAST_CMD="mtls ca issue --dir $CA1 (database stopped)"
run "$MTLS" ca issue --dir "$CA1" --profile server --dns down.test --out "$W/down"
[ "$RC" != 0 ] || p+=("issue succeeded without a database")
one_line "$ERR" || p+=("not one line")
[[ $ERR == *"cannot connect to the CA inventory, $NAME (host $PGSOCK, port $PGP)"* ]] ||
	p+=("does not say it cannot connect to the database, named")
[ ! -e "$W/down.pem" ] && [ ! -e "$W/down.key" ] || p+=("files were written")
run "$MTLS" ca revoke --dir "$CA1" --cert "$W/b.pem" --reason keyCompromise
[ "$RC" != 0 ] || p+=("revoke succeeded without a database")
[[ $ERR == *"cannot connect to the CA inventory, $NAME"* ]] || p+=("revoke: $ERR")
[ -z "$(find "$CA1" -name '*.tmp-*' -o -name 'room*')" ] || p+=("temporary files left in $CA1")
saved=("$RC" "$OUT" "$ERR")
pg_start "$TMP/postgres2.log"
[ "$(count_certs)" = "$CERTS_BEFORE" ] || p+=("the certs table changed")
run "$MTLS" ca audit --dir "$CA1"
[ "$RC" = 0 ] || p+=("audit after the restart: $OUT $ERR")
LAST_CMD="mtls ca issue --dir $CA1 (database stopped)"
RC=${saved[0]} OUT=${saved[1]} ERR=${saved[2]}
report "a stopped database: one line naming it, nothing written; all there after the restart" \
	"${p[@]+"${p[@]}"}"

finish
