#!/usr/bin/env bash
# The Debian packages (debian/, scripts/package.sh): built from this tree, they hold what
# they should (dpkg-deb -c), depend on Debian's library packages (dpkg-deb -I), pass lintian
# (every remaining finding explained in debian/*.lintian-overrides), and really install:
# dpkg -i and dpkg --purge run in a throwaway copy of this machine's root (a private mount
# namespace with an overlay of / on a tmpfs, then chroot), where the postinst makes the mtls
# user and the /etc/mtls directories and the purge takes them away again. Nothing of the real
# system is touched.
#
# The package is built from the source tree, not from the build directory under test, so the
# sanitizer builds skip it (exit 77): one build per suite run is enough. It takes minutes
# (tests/CMakeLists.txt starts it early, with a high COST).
source "$(dirname "$0")/lib.sh"

# report_rc NAME : report on the last `run`, failed unless it exited 0
report_rc() {
	if [ "$RC" -eq 0 ]; then report "$1"; else report "$1" "exit status $RC"; fi
}

cached() { sed -n "s/^$1:[A-Z]*=//p" "$MTLS_BIN_DIR/CMakeCache.txt"; }
if [ "$(cached MTLS_SANITIZE)" = ON ] || [ "$(cached MTLS_SANITIZE_THREAD)" = ON ]; then
	echo "skipped: a sanitizer build (the package is built from the source tree; the plain build's run checks it)"
	exit 77
fi
for t in dpkg-buildpackage dpkg-deb dh lintian unshare chroot; do
	command -v "$t" >/dev/null || { echo "$t not found: run scripts/install-deps.sh"; exit 2; }
done
src=$MTLS_SOURCE_DIR
version=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Version)
upstream=$(sed -n 's/^project(mtls VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)

# ---------------------------------------------------------------------------------------
# Build (scripts/package.sh: out of tree, then lintian)
out=$TMP/deb
start=$(date +%s)
RUN_LIMIT=1200 run bash "$src/scripts/package.sh" "$out"
took=$(($(date +%s) - start))
echo "package build and lintian: $took s"
LAST_CMD="scripts/package.sh $out" report_rc "scripts/package.sh builds the packages and lintian passes ($took s)"
deb_mtls=$out/mtls_${version}_$arch.deb
deb_lib=$out/libmtls0_${version}_$arch.deb
deb_dev=$out/libmtls-dev_${version}_$arch.deb
for f in "$deb_mtls" "$deb_lib" "$deb_dev"; do
	[ -f "$f" ] || { fail "${f##*/} was built" "not in $out: $(ls "$out" 2>&1)"; finish; exit 1; }
done
vcheck "the package version follows CMakeLists.txt ($version, $upstream)" \
	"$([ "${version%%-*}" = "$upstream" ] || echo "changelog $version, project $upstream")"

# lintian: no error or warning left, and each override says why
lint=$(grep -E '^[EW]: ' "$out/lintian.txt" || true)
grep -E '^[EWI]: ' "$out/lintian.txt" | sed 's/^/lintian: /' || true
vcheck "lintian: no error or warning ($(grep -c '^I: ' "$out/lintian.txt" || true) info findings)" "$lint"
unexplained=""
for o in "$src"/debian/*.lintian-overrides; do
	[ -f "$o" ] || continue
	# every override line follows a comment line
	unexplained+=$(awk -v f="${o##*/}" '/^[^#[:space:]]/ && prev !~ /^#/ { print f ": " $0 } { prev = $0 }' "$o")
done
vcheck "every lintian override has a comment that explains it" "$unexplained"

# ---------------------------------------------------------------------------------------
# Contents
# contents DEB : "MODE OWNER PATH" per entry (a link as PATH -> TARGET)
contents() { dpkg-deb -c "$1" | awk '{ p = $6; for (i = 7; i <= NF; i++) p = p " " $i; print $1, $2, p }'; }
# expect DEB MODE PATH... : each PATH is in DEB with MODE (owned by root)
expect() {
	local deb=$1 mode=$2 list problems=() p
	shift 2
	list=$(contents "$deb")
	for p in "$@"; do
		grep -qxF -- "$mode root/root ./$p" <<<"$list" || problems+=("missing: $mode ./$p")
	done
	printf '%s\n' "${problems[@]+"${problems[@]}"}"
}
ml=usr/lib/$multiarch
pages=()
for f in "$src"/docs/man/*.1 "$src"/docs/man/*.8; do
	[ -f "$f" ] && pages+=("usr/share/man/man${f##*.}/${f##*/}.gz")
done
[ ${#pages[@]} -gt 0 ] || pages=(usr/share/man/man1/mtls.1.gz) # docs/mtls.1, until docs/man lands
units=()
for f in "$src"/systemd/*.service "$src"/systemd/*.socket "$src"/systemd/*.timer; do
	[ -f "$f" ] && units+=("lib/systemd/system/${f##*/}")
done
completion=()
[ -f "$src/completion/mtls" ] && completion=(usr/share/bash-completion/completions/mtls)
problems=$(expect "$deb_mtls" -rwxr-xr-x usr/bin/mtls
	expect "$deb_mtls" -rw-r--r-- "${pages[@]}" ${units[@]+"${units[@]}"} \
		${completion[@]+"${completion[@]}"} usr/share/doc/mtls/copyright)
vcheck "mtls holds bin/mtls, ${#pages[@]} man pages, ${#units[@]} units${completion:+, completion}, copyright" \
	"$(grep . <<<"$problems" || true)"
problems=$(expect "$deb_lib" -rw-r--r-- "$ml/libmtls.so.$upstream"
	expect "$deb_lib" lrwxrwxrwx "$ml/libmtls.so.0 -> libmtls.so.$upstream")
vcheck "libmtls0 holds libmtls.so.$upstream and the libmtls.so.0 link" "$(grep . <<<"$problems" || true)"
problems=$(expect "$deb_dev" -rw-r--r-- usr/include/mtls.h "$ml/libmtls.a" "$ml/pkgconfig/mtls.pc" \
	"$ml/cmake/mtls/mtlsConfig.cmake" "$ml/cmake/mtls/mtlsConfigVersion.cmake"
	expect "$deb_dev" lrwxrwxrwx "$ml/libmtls.so -> libmtls.so.0")
vcheck "libmtls-dev holds mtls.h, libmtls.a, libmtls.so, mtls.pc, the CMake package" \
	"$(grep . <<<"$problems" || true)"
# a file in two packages could not be installed together
dups=$(for d in "$deb_mtls" "$deb_lib" "$deb_dev"; do contents "$d" | awk '$1 !~ /^d/ { print $3 }'; done | sort | uniq -d)
vcheck "no file is in two packages" "$dups"

# ---------------------------------------------------------------------------------------
# Dependencies: Debian's library packages, found by dpkg-shlibdeps from what is linked
depends() { dpkg-deb -f "$1" Depends | tr ',' '\n' | sed 's/^ *//; s/ .*//'; }
want=(adduser procps libc6 libssl3 libev4 libmicrohttpd12 libjansson4 libcurl4 libsqlite3-0 libpq5)
grep -q 'libsystemd' "$src/CMakeLists.txt" && want+=(libsystemd0)
have=$(depends "$deb_mtls")
missing=""
for p in "${want[@]}"; do
	grep -qx "$p" <<<"$have" || missing+="$p "
done
vcheck "mtls depends on ${want[*]}" "${missing:+missing: $missing(has: $(tr '\n' ' ' <<<"$have"))}"
vcheck "libmtls0 depends on libssl3 and libc6" \
	"$(have=$(depends "$deb_lib"); grep -qx libssl3 <<<"$have" && grep -qx libc6 <<<"$have" || echo "has: $have")"
dev_dep=$(dpkg-deb -f "$deb_dev" Depends)
vcheck "libmtls-dev depends on libmtls0 (= $version) and libssl-dev" \
	"$([[ $dev_dep == *"libmtls0 (= $version)"* && $dev_dep == *libssl-dev* ]] || echo "Depends: $dev_dep")"
shlibs=$(dpkg-deb --ctrl-tarfile "$deb_lib" | tar -xOf - ./shlibs 2>/dev/null || true)
vcheck "libmtls0's shlibs: libmtls 0 libmtls0 (>= $upstream)" \
	"$([ "$shlibs" = "libmtls 0 libmtls0 (>= $upstream)" ] || echo "shlibs: $shlibs")"

# ---------------------------------------------------------------------------------------
# Maintainer scripts: the text, then a real install and purge in a throwaway root
mkdir -p "$TMP/ctrl"
dpkg-deb -e "$deb_mtls" "$TMP/ctrl"
post=$TMP/ctrl/postinst
problems=()
sh -n "$post" || problems+=("sh -n postinst fails")
sh -n "$TMP/ctrl/postrm" || problems+=("sh -n postrm fails")
grep -q 'adduser --system' "$post" || problems+=("no adduser --system")
grep -q -- '--home /var/lib/mtls' "$post" || problems+=("no --home /var/lib/mtls")
grep -q -- '--shell /usr/sbin/nologin' "$post" || problems+=("no --shell /usr/sbin/nologin")
# (whether a unit gets enabled is seen below, in the throwaway root: debhelper's snippet
# names "enable" for units an administrator enabled before an upgrade)
verdict "postinst and postrm: valid sh, adduser --system with home /var/lib/mtls and no login shell" \
	"${problems[@]+"${problems[@]}"}"

# The sandbox: a new mount namespace (nothing mounted in it is seen outside), a tmpfs that
# takes every write, / as the read-only lower layer of an overlay, chroot into it. The script
# refuses to go on unless the root it is about to use is that overlay.
cat >"$TMP/sandbox.sh" <<'EOF'
set -euo pipefail
box=$1
mount -t tmpfs -o size=512m mtls-test "$box"
mkdir "$box/upper" "$box/work" "$box/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$box/upper,workdir=$box/work" "$box/root"
[ "$(findmnt -n -o FSTYPE --target "$box/root")" = overlay ] || { echo "no overlay at $box/root"; exit 3; }
r=$box/root
mount -t proc proc "$r/proc"
mount --rbind /dev "$r/dev"
mount -t tmpfs tmpfs "$r/run"
mount -t tmpfs tmpfs "$r/tmp"
mkdir "$r/tmp/debs"
cp -- "${@:2}" "$r/tmp/debs/"
exec chroot "$r" /bin/bash -s
EOF
cat >"$TMP/inside.sh" <<'EOF'
# runs as root in the throwaway root: KEY: VALUE lines for the test to judge
set -u
export DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin
say() { printf '%s: %s\n' "$1" "$2"; }
state() {
	say "$1.passwd" "$(getent passwd mtls | cut -d: -f6,7)"
	say "$1.group" "$(getent group mtls | cut -d: -f1)"
	for d in /etc/mtls /etc/mtls/server /etc/mtls/connector /etc/mtls/agent /var/lib/mtls; do
		say "$1.dir $d" "$(stat -c '%a %U:%G' "$d" 2>/dev/null || echo absent)"
	done
}
state before
dpkg -i /tmp/debs/*.deb >/tmp/dpkg-i.log 2>&1; say install "$?"
state installed
say id "$(id mtls 2>&1)"
say version "$(mtls --version 2>&1)"
say modversion "$(pkg-config --modversion mtls 2>&1)"
say enabled "$(find /etc/systemd/system -name 'mtls*' 2>/dev/null | tr '\n' ' ')"
say units "$(ls /lib/systemd/system/ | grep '^mtls' | tr '\n' ' ')"
say nologin "$(su mtls -c true 2>&1 | head -n 1)"
# the daemons' group reads the instances' directories
say readable "$(setpriv --reuid=mtls --regid=mtls --init-groups ls /etc/mtls/server >/dev/null 2>&1 && echo yes || echo no)"
dpkg -i /tmp/debs/*.deb >/tmp/dpkg-i2.log 2>&1; say reinstall "$?"
dpkg --purge mtls libmtls-dev libmtls0 >/tmp/dpkg-purge.log 2>&1; say purge "$?"
state purged
say left "$(ls /usr/bin/mtls /usr/lib/*/libmtls* /usr/include/mtls.h 2>/dev/null | tr '\n' ' ')"
# a purge keeps what an administrator left, and says so
dpkg -i /tmp/debs/mtls_*.deb >/dev/null 2>&1
echo 'listen 0.0.0.0:5433' >/etc/mtls/server/db.conf
dpkg --purge mtls >/tmp/dpkg-purge2.log 2>&1; say purge-kept "$?"
say kept-file "$(cat /etc/mtls/server/db.conf 2>&1)"
say kept-user "$(getent passwd mtls | cut -d: -f1)"
say kept-note "$(grep '^mtls: kept' /tmp/dpkg-purge2.log)"
for f in /tmp/dpkg-i.log /tmp/dpkg-purge.log; do sed "s|^|log ${f##*/}: |" "$f"; done
EOF
mkdir -p "$TMP/box"
RUN_LIMIT=120 run unshare --mount --propagation private \
	bash -c 'bash "$1" "${@:2}" <"$0"' "$TMP/inside.sh" "$TMP/sandbox.sh" "$TMP/box" \
	"$deb_mtls" "$deb_lib" "$deb_dev"
sb_out=$OUT
val() { sed -n "s|^$1: ||p" <<<"$sb_out" | head -n 1; }
if [ "$RC" -ne 0 ] || [ -z "$(val install)" ]; then
	LAST_CMD="the sandbox (unshare, overlay, chroot)" report "dpkg -i and dpkg --purge in a throwaway root" "exit $RC"
	finish
	exit 1
fi
# (if the machine has the packages installed for real, the sandbox starts from that)
vcheck "the throwaway root starts without the mtls user" "$([ -z "$(val before.passwd)" ] || echo "mtls user already there: $(val before.passwd)")"
vcheck "dpkg -i installs the three packages" \
	"$([ "$(val install)" = 0 ] || echo "dpkg -i: $(val install); $(grep '^log dpkg-i' <<<"$sb_out")")"
vcheck "postinst: the system user mtls, home /var/lib/mtls, no login shell ($(val id))" \
	"$([ "$(val installed.passwd)" = /var/lib/mtls:/usr/sbin/nologin ] && [ "$(val installed.group)" = mtls ] ||
		echo "passwd: $(val installed.passwd) group: $(val installed.group)")"
vcheck "the user cannot log in (su mtls: $(val nologin))" \
	"$(grep -q 'This account is currently not available' <<<"$(val nologin)" || echo "su mtls: $(val nologin)")"
problems=()
[ "$(val 'installed.dir /etc/mtls')" = "750 root:mtls" ] || problems+=("/etc/mtls: $(val 'installed.dir /etc/mtls')")
for d in server connector agent; do
	[ "$(val "installed.dir /etc/mtls/$d")" = "750 root:mtls" ] || problems+=("/etc/mtls/$d: $(val "installed.dir /etc/mtls/$d")")
done
[ "$(val 'installed.dir /var/lib/mtls')" = "750 mtls:mtls" ] || problems+=("/var/lib/mtls: $(val 'installed.dir /var/lib/mtls')")
[ "$(val readable)" = yes ] || problems+=("user mtls cannot read /etc/mtls/server")
verdict "postinst: /etc/mtls and /etc/mtls/{server,connector,agent} 0750 root:mtls (readable by mtls), /var/lib/mtls 0750 mtls:mtls" \
	"${problems[@]+"${problems[@]}"}"
vcheck "installed: mtls --version, pkg-config --modversion mtls" \
	"$([ "$(val version)" = "mtls $upstream" ] && [ "$(val modversion)" = "$upstream" ] || echo "version: $(val version); modversion: $(val modversion)")"
vcheck "units installed ($(val units)) and none enabled" \
	"$([ -z "$(val enabled)" ] || echo "enabled: $(val enabled)")"
vcheck "installing again (the upgrade path) works" "$([ "$(val reinstall)" = 0 ] || echo "exit $(val reinstall)")"
problems=()
[ "$(val purge)" = 0 ] || problems+=("dpkg --purge: $(val purge)")
[ -z "$(val purged.passwd)$(val purged.group)" ] || problems+=("user/group left: $(val purged.passwd) $(val purged.group)")
for d in /etc/mtls /etc/mtls/server /etc/mtls/connector /etc/mtls/agent /var/lib/mtls; do
	[ "$(val "purged.dir $d")" = absent ] || problems+=("$d left: $(val "purged.dir $d")")
done
[ -z "$(val left)" ] || problems+=("files left: $(val left)")
verdict "dpkg --purge takes the files, directories, user and group away" \
	"${problems[@]+"${problems[@]}"}" -- "$(grep '^log dpkg-purge' <<<"$sb_out")"
vcheck "a purge keeps a config an administrator wrote, the user owning it, and says so" \
	"$([ "$(val purge-kept)" = 0 ] && [ "$(val kept-file)" = "listen 0.0.0.0:5433" ] &&
		[ "$(val kept-user)" = mtls ] && [ -n "$(val kept-note)" ] ||
		echo "purge: $(val purge-kept) file: $(val kept-file) user: $(val kept-user) note: $(val kept-note)")"
finish
