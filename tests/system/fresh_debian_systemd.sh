#!/usr/bin/env bash
# docs/install.md on a fresh Debian 12 under a real systemd: not part of the test suite (it
# downloads a Debian system, ~2 minutes, and needs root, debootstrap and systemd-nspawn from
# Debian's systemd-container); run by hand, its transcript goes in the notes.
#
#   tests/system/fresh_debian_systemd.sh [WORKDIR]     (default /var/tmp/mtls-fresh)
#
# 1. debootstrap a minimal bookworm with systemd (nothing of mtls's build dependencies) into
#    WORKDIR/root, once (reused while WORKDIR stays; delete it for a fresh one);
# 2. build the packages (scripts/package.sh) and boot the system with systemd-nspawn -b
#    (the host's network: the container's loopback is the host's);
# 3. in it, the steps of docs/install.md: apt install ./mtls_*.deb, the CA, the server's
#    certificate, /etc/mtls/server/db.conf, mtls doctor --config --user mtls, systemctl enable
#    --now mtls-server@db, systemctl status, a client from the host through it (mtls
#    connector of this tree + curl to a plain HTTP server on the host), a refused client, the
#    refusal inside journalctl, systemctl reload, systemctl stop;
# 4. power the container off. Exit 0 when every step did what the guide says.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-/var/tmp/mtls-fresh}
root=$work/root
bin=${MTLS_BIN_DIR:-$top/build}
[ "$(id -u)" -eq 0 ] || { echo "fresh_debian_systemd: run as root" >&2; exit 2; }
for t in debootstrap systemd-nspawn nsenter python3 curl; do
	command -v "$t" >/dev/null || { echo "fresh_debian_systemd: $t is missing" >&2; exit 2; }
done
[ -x "$bin/mtls" ] || { echo "fresh_debian_systemd: build first ($bin/mtls)" >&2; exit 2; }

step() { printf '\n==== %s\n' "$*"; }
die() {
	echo "fresh_debian_systemd: $*" >&2
	exit 1
}
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

mkdir -p "$work"
if [ ! -e "$root/etc/debian_version" ]; then
	step "debootstrap: a minimal Debian 12 with systemd in $root"
	debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,ca-certificates \
		bookworm "$root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
		die "debootstrap failed: $work/debootstrap.log"
	cp /etc/resolv.conf "$root/etc/resolv.conf"
fi
echo "Debian $(cat "$root/etc/debian_version"); mtls installed there before: $(
	[ -e "$root/usr/bin/mtls" ] && echo yes || echo no)"

step "the packages (scripts/package.sh)"
debs=$work/debs
rm -rf "$debs"
bash "$top/scripts/package.sh" "$debs" >"$work/package.log" 2>&1 || die "package.sh failed: $work/package.log"
ls "$debs"/*.deb
rm -rf "$root/root/debs"
mkdir -p "$root/root/debs"
cp "$debs"/*.deb "$root/root/debs/"

nspawn_pid=
http_pid=
con_pids=()
cleanup() {
	local p
	for p in "${con_pids[@]+"${con_pids[@]}"}" $http_pid; do
		kill "$p" 2>/dev/null || true
	done
	if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
		kill "$nspawn_pid" 2>/dev/null || true
		for _ in $(seq 60); do
			kill -0 "$nspawn_pid" 2>/dev/null || break
			sleep 0.5
		done
		kill -9 "$nspawn_pid" 2>/dev/null || true
	fi
}
trap cleanup EXIT

step "boot it: systemd-nspawn -b"
systemd-nspawn -D "$root" -b --register=no --console=pipe --keep-unit >"$work/console.log" 2>&1 &
nspawn_pid=$!
init=
for _ in $(seq 120); do
	init=$(pgrep -P "$nspawn_pid" | head -1 || true)
	[ -n "$init" ] && break
	sleep 0.5
done
[ -n "$init" ] || die "the container did not start: $work/console.log"
# in CMD... : a command in the container (as root, its namespaces and root)
inside() { nsenter -t "$init" -m -u -i -n -p -- "$@"; }
state=
for _ in $(seq 120); do
	state=$(inside systemctl is-system-running 2>/dev/null || true)
	case $state in running | degraded) break ;; esac
	sleep 0.5
done
echo "systemctl is-system-running: $state"
case $state in running | degraded) ;; *) die "systemd did not come up ($state)" ;; esac

step "install (docs/install.md: apt install ./mtls_*.deb)"
deb=$(cd "$root/root/debs" && ls mtls_*.deb)
inside env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "/root/debs/$deb" \
	>"$work/apt.log" 2>&1 || die "apt install failed: $work/apt.log"
tail -n 3 "$work/apt.log"
inside id mtls
inside mtls --version
inside systemctl list-unit-files 'mtls*' --no-pager | sed 's/^/  /'

step "a CA, the server's certificate, its config (docs/install.md)"
SRV_PORT=$(free_port)
MET_PORT=$(free_port)
HTTP_PORT=$(free_port)
inside bash -euc "
mtls ca init --dir /root/mtls-ca --name example >/dev/null
mtls ca issue --dir /root/mtls-ca --profile server --dns localhost --ip 127.0.0.1 \
    --out /etc/mtls/server/db >/dev/null
cp /root/mtls-ca/root.pem /etc/mtls/server/db-ca.pem
chgrp mtls /etc/mtls/server/db.key && chmod 0640 /etc/mtls/server/db.key
mtls ca issue --dir /root/mtls-ca --profile client --uri spiffe://example.org/ns/prod/sa/api \
    --out /root/api >/dev/null
mtls ca issue --dir /root/mtls-ca --profile client --uri spiffe://example.org/ns/dev/sa/other \
    --out /root/other >/dev/null
cat >/etc/mtls/server/db.conf <<EOF
# mutual TLS on $SRV_PORT, plaintext to the service (an HTTP server on the host here)
listen 127.0.0.1:$SRV_PORT
target 127.0.0.1:$HTTP_PORT
cert /etc/mtls/server/db-chain.pem
key /etc/mtls/server/db.key
ca /etc/mtls/server/db-ca.pem
allow-uri 'spiffe://example.org/ns/prod/sa/*'   # quoted: the quotes are not part of it
metrics 127.0.0.1:$MET_PORT
EOF
chgrp mtls /etc/mtls/server/db.conf && chmod 0640 /etc/mtls/server/db.conf
"
cat "$root/etc/mtls/server/db.conf"
step "mtls doctor --config /etc/mtls/server/db.conf --user mtls"
inside mtls doctor --config /etc/mtls/server/db.conf --user mtls || die "mtls doctor --config found a problem"

step "systemctl enable --now mtls-server@db"
mkdir -p "$work/site"
echo "hello from the host's service" >"$work/site/index.html"
python3 -m http.server "$HTTP_PORT" --bind 127.0.0.1 --directory "$work/site" >"$work/http.log" 2>&1 &
http_pid=$!
inside systemctl enable --now mtls-server@db
inside systemctl status mtls-server@db --no-pager -n 5 | sed 's/^/  /' || true
[ "$(inside systemctl is-active mtls-server@db)" = active ] || die "mtls-server@db is not active"
inside systemctl show mtls-server@db -p Type -p StatusText -p WatchdogUSec -p User | sed 's/^/  /'

step "a client from the host: mtls connector (this tree) + curl, through mtls-server@db"
cp "$root/root/api-chain.pem" "$root/root/api.key" "$root/root/other-chain.pem" \
	"$root/root/other.key" "$work/"
cp "$root/etc/mtls/server/db-ca.pem" "$work/ca.pem"
start_connector() { # NAME: sets CON_PORT
	"$bin/mtls" connector --listen 127.0.0.1:0 --server "127.0.0.1:$SRV_PORT" \
		--server-name localhost --cert "$work/$1-chain.pem" --key "$work/$1.key" \
		--ca "$work/ca.pem" --log-format json --workers 1 >"$work/con-$1.log" 2>&1 &
	con_pids+=($!)
	for _ in $(seq 100); do
		grep -q '"event":"listening"' "$work/con-$1.log" && break
		sleep 0.05
	done
	CON_PORT=$(grep -m1 -F '"event":"listening"' "$work/con-$1.log" |
		sed -n 's/.*"address":"[^"]*:\([0-9][0-9]*\)".*/\1/p')
	[ -n "$CON_PORT" ] || die "connector $1 did not start: $(cat "$work/con-$1.log")"
}
start_connector api
body=$(curl -sS --max-time 10 "http://127.0.0.1:$CON_PORT/")
echo "curl (spiffe://example.org/ns/prod/sa/api): $body"
[ "$body" = "hello from the host's service" ] || die "the page did not come through"
start_connector other
if curl -sS --max-time 10 "http://127.0.0.1:$CON_PORT/" >/dev/null 2>&1; then
	die "the client spiffe://example.org/ns/dev/sa/other got through"
fi
echo "curl (spiffe://example.org/ns/dev/sa/other): refused"
sleep 1
step "journalctl -u mtls-server@db -g refused"
inside journalctl -u mtls-server@db --no-pager -g refused | tail -n 2 | sed 's/^/  /'
inside journalctl -u mtls-server@db --no-pager -g refused | grep -q identity_not_allowed ||
	die "the refusal is not in the journal with its reason"
step "curl http://127.0.0.1:$MET_PORT/metrics (handshakes)"
curl -sS --max-time 5 "http://127.0.0.1:$MET_PORT/metrics" | grep '^mtls_handshakes_total' |
	grep -v ' 0$' | sed 's/^/  /'

step "systemctl reload mtls-server@db"
inside systemctl reload mtls-server@db
inside systemctl show mtls-server@db -p StatusText -p ActiveState | sed 's/^/  /'
[ "$(inside systemctl is-active mtls-server@db)" = active ] || die "not active after a reload"
body=$(curl -sS --max-time 10 "http://127.0.0.1:$(grep -m1 -F '"event":"listening"' \
	"$work/con-api.log" | sed -n 's/.*"address":"[^"]*:\([0-9][0-9]*\)".*/\1/p')/")
[ "$body" = "hello from the host's service" ] || die "nothing came through after the reload"
echo "after the reload, curl: $body"

step "systemctl stop mtls-server@db"
inside systemctl stop mtls-server@db
echo "is-active: $(inside systemctl is-active mtls-server@db || true)"
inside journalctl -u mtls-server@db --no-pager -n 3 | sed 's/^/  /'

step "power off"
inside systemctl poweroff || true
for _ in $(seq 60); do
	kill -0 "$nspawn_pid" 2>/dev/null || break
	sleep 0.5
done
nspawn_pid=
echo "fresh_debian_systemd: ok"
