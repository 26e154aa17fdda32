#!/usr/bin/env bash
# Build the Debian packages (debian/: mtls, libmtls0, libmtls-dev) from this tree, out of
# tree, then check them with lintian.
#
#   scripts/package.sh [OUTDIR]      (default: build-deb/ in the tree)
#
# The tree's files (those git knows, plus new ones it does not ignore: no build directories)
# are copied to a temporary directory, where `dpkg-buildpackage -b -us -uc` builds them
# (unsigned); the .deb files, .changes, .buildinfo, the build log (build.log) and lintian's
# findings (lintian.txt) land in OUTDIR. Exit status 1 if the build fails or lintian finds
# an error or a warning that debian/*.lintian-overrides does not explain.
# Needs: dpkg-dev, debhelper, lintian (scripts/install-deps.sh) and the Build-Depends of
# debian/control.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$top/build-deb}
die() {
	echo "package.sh: $*" >&2
	exit 1
}
for t in dpkg-buildpackage dpkg-parsechangelog dh lintian; do
	command -v "$t" >/dev/null || die "$t not found: run scripts/install-deps.sh"
done

version=$(dpkg-parsechangelog -l "$top/debian/changelog" -S Version)
upstream=$(sed -n 's/^project(mtls VERSION \([0-9.]*\).*/\1/p' "$top/CMakeLists.txt")
[ "${version%%-*}" = "$upstream" ] ||
	die "debian/changelog is at $version, CMakeLists.txt at $upstream: add a changelog entry for $upstream (dch -v $upstream)"

mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/mtls-package.XXXXXX")
trap 'rm -rf -- "$work"' EXIT
src=$work/mtls-$version
mkdir "$src"

# the tree without build directories, caches or .git
if git -C "$top" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	(cd "$top" && git ls-files -z --cached --others --exclude-standard) |
		(cd "$top" && while IFS= read -r -d '' f; do
			[ -e "$f" ] && printf '%s\0' "$f" # not a file deleted but not yet committed
		done) |
		(cd "$top" && tar --null -T - -cf -) | tar -xf - -C "$src"
else
	tar -C "$top" --exclude='./build*' --exclude=./.git --exclude=./.cache -cf - . | tar -xf - -C "$src"
fi

jobs=$(nproc)
echo "package.sh: building mtls $version in $src (dpkg-buildpackage -b, $jobs jobs)"
start=$(date +%s)
if ! (cd "$src" && dpkg-buildpackage -b -us -uc -j"$jobs") >"$work/build.log" 2>&1; then
	cp -- "$work/build.log" "$out/build.log"
	tail -n 60 "$work/build.log" >&2
	die "dpkg-buildpackage failed (whole log: $out/build.log)"
fi
echo "package.sh: built in $(($(date +%s) - start)) s"

# this build's artifacts replace the last ones
for p in mtls libmtls0 libmtls-dev mtls-dbgsym libmtls0-dbgsym; do
	rm -f -- "$out/${p}_"*.deb "$out/${p}_"*.ddeb
done
rm -f -- "$out"/mtls_*.changes "$out"/mtls_*.buildinfo
mv -- "$work"/*.deb "$work"/*.changes "$work"/*.buildinfo "$out"/
mv -- "$work"/*.ddeb "$out"/ 2>/dev/null || true
cp -- "$work/build.log" "$out/build.log"
changes=$(ls "$out"/mtls_"${version}"_*.changes)

# lintian: every finding but the overridden ones; errors and warnings fail
lintian --info --display-info --fail-on error,warning "$changes" >"$out/lintian.txt" 2>&1 && lrc=0 || lrc=$?
echo "package.sh: lintian ($(grep -c '^[EWIP]: ' "$out/lintian.txt" || true) findings, exit $lrc):"
grep '^[EWIP]: ' "$out/lintian.txt" | sed 's/^/  /' || true
(cd "$out" && ls -1 -- *.deb)
echo "package.sh: packages in $out"
[ "$lrc" -eq 0 ] || die "lintian found errors or warnings (see $out/lintian.txt); fix them or explain each in debian/*.lintian-overrides"
