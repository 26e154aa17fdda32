# A throwaway PostgreSQL server on a unix socket only, for the tests of the CA store on
# PostgreSQL and of the tunnel in front of PostgreSQL. Sourced after lib.sh (set BG_LIMIT
# before lib.sh where the server lives through a long script).
#
#   PG_BIN PGP PGSOCK PGDATA   the server's binaries, port (a socket name), socket dir, data
#   pg_start LOG [OPTION...]    start it (initdb is done at source time), with more server
#                               options (-c name=value): sets PG_PID
#   url DB                      the URL of database DB
#   sql DB SQL...               psql on DB (RC, OUT, ERR)
#   setup_die MSG [DETAIL...]   fail the script in setup
#
# PostgreSQL's server binaries are required (CI installs postgresql): without them the
# script fails, unless it checked them first to skip (test_tunnel_postgres.sh). As root, the
# cluster runs as the `postgres` system user (initdb refuses root).

setup_die() {
	echo "${0##*/}: setup: $1" >&2
	shift
	[ $# -eq 0 ] || printf '%s\n' "$@" | sed 's/^/    | /' >&2
	exit 1
}

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
for p in "$PG_BIN/initdb" "$PG_BIN/postgres"; do
	[ -x "$p" ] || setup_die "$p not found: install postgresql (scripts/install-deps.sh)"
done
command -v psql >/dev/null || setup_die "psql not found: install postgresql-client"

# setpriv execs (no process in between), so lib.sh's SIGTERM at exit reaches the postmaster
AS_PG=()
if [ "$(id -u)" = 0 ]; then
	id postgres >/dev/null 2>&1 || setup_die "running as root and there is no postgres user"
	if command -v setpriv >/dev/null; then
		AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups)
	else
		AS_PG=(runuser -u postgres --)
	fi
fi

# libpq: nothing from the environment but what is set here (no TLS or GSS of its own)
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSERVICE PGSERVICEFILE PGOPTIONS PGPASSWORD \
	PGSSLMODE PGREQUIRESSL PGSSLCERT PGSSLKEY PGSSLROOTCERT PGCONNECT_TIMEOUT \
	PGTARGETSESSIONATTRS
export PGSSLMODE=disable PGGSSENCMODE=disable

cd -- "$TMP" # the postgres user may not be able to enter the directory ctest runs us in
PGP=$((20000 + RANDOM % 20000)) # only the name of the socket file, in a private directory
PGDIR=$TMP/pg
PGDATA=$PGDIR/data
PGSOCK=$PGDIR/sock
mkdir -p -- "$PGDIR" "$PGSOCK"
if [ ${#AS_PG[@]} -gt 0 ]; then
	chmod 711 -- "$TMP"
	chown postgres: -- "$PGDIR" "$PGSOCK"
fi
chmod 700 -- "$PGSOCK"
LAST_CMD="initdb -D $PGDATA"
run "${AS_PG[@]+"${AS_PG[@]}"}" "$PG_BIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 \
	--locale=C --no-sync --no-instructions
[ "$RC" = 0 ] || setup_die "$LAST_CMD failed ($RC)" "$OUT" "$ERR"

# pg_start LOG [OPTION...] : the server, in the foreground under start_bg (lib.sh stops it at
# exit), with more options after the common ones.
pg_start() {
	local log=$1
	shift
	start_bg "$log" "${AS_PG[@]+"${AS_PG[@]}"}" "$PG_BIN/postgres" -D "$PGDATA" -p "$PGP" \
		-k "$PGSOCK" -c listen_addresses= -c logging_collector=off -c fsync=off \
		-c synchronous_commit=off -c full_page_writes=off -c max_connections=40 \
		-c shared_buffers=16MB -c autovacuum=off "$@"
	PG_PID=$BG_PID
	wait_for_line "$log" 'database system is ready to accept connections' 20 "$PG_PID" ||
		setup_die "PostgreSQL did not start" "$(cat -- "$log")"
}

# url DB : the URL of database DB on the test server.
url() { printf 'postgresql://postgres@/%s?host=%s&port=%s' "$1" "$PGSOCK" "$PGP"; }
# sql DB SQL... : psql on database DB (RC, OUT, ERR).
sql() {
	local db=$1
	shift
	LAST_CMD="psql -d $db $*"
	run psql -X -q -At -v ON_ERROR_STOP=1 -d "$(url "$db")" "$@"
}
# one_line TEXT : is TEXT exactly one line?
one_line() { [ -n "$1" ] && [ "$(printf '%s\n' "$1" | wc -l)" = 1 ]; }

