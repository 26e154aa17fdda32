#!/usr/bin/env bash
# `cmake --install` of the build under test into a temporary prefix (cmake/install.cmake):
# every file in its place with its mode, libmtls.so with its SONAME and links, and a program
# outside the tree builds against the installed library with nothing but `pkg-config mtls`
# (shared, and static with --static) or `find_package(mtls)`. The programs so built (the
# examples) then talk mutual TLS to each other with the test certificates.
source "$(dirname "$0")/lib.sh"

# report_rc NAME : report on the last `run`, failed unless it exited 0
report_rc() {
	if [ "$RC" -eq 0 ]; then report "$1"; else report "$1" "exit status $RC"; fi
}

for t in cmake pkg-config readelf; do
	command -v "$t" >/dev/null || { echo "$t not found"; exit 2; }
done
cache=$MTLS_BIN_DIR/CMakeCache.txt
cached() { sed -n "s/^$1:[A-Z]*=//p" "$cache"; }
cc=$(cached CMAKE_C_COMPILER)
libdir=$(cached CMAKE_INSTALL_LIBDIR)
unitdir=$(cached MTLS_SYSTEMD_UNITDIR)
build_type=$(cached CMAKE_BUILD_TYPE)
build_type=${build_type:-RelWithDebInfo} # CMakeLists.txt's default, not in the cache
version=$(sed -n 's/^project(mtls VERSION \([0-9.]*\).*/\1/p' "$MTLS_SOURCE_DIR/CMakeLists.txt")
[ -n "$cc" ] && [ -n "$libdir" ] && [ -n "$unitdir" ] && [ -n "$version" ] ||
	{ echo "cannot read the compiler, libdir, unit dir or version from $cache"; exit 2; }
# a sanitizer build's libmtls needs its runtime in the programs linked against it
san=()
[ "$(cached MTLS_SANITIZE)" = ON ] && san=(-fsanitize=address,undefined)
[ "$(cached MTLS_SANITIZE_THREAD)" = ON ] && san=(-fsanitize=thread)

prefix=$TMP/prefix
src=$MTLS_SOURCE_DIR
RUN_LIMIT=120 run cmake --install "$MTLS_BIN_DIR" --prefix "$prefix"
LAST_CMD="cmake --install $MTLS_BIN_DIR --prefix $prefix" report_rc "cmake --install succeeds"
[ "$RC" -eq 0 ] || { finish; exit 1; }

# ---------------------------------------------------------------------------------------
# The layout: what is expected is read from the source tree, so pages, units and docs that
# land later are expected (and checked) without editing this test.
expected() {
	local f
	echo "bin/mtls 755"
	echo "include/mtls.h 644"
	echo "$libdir/libmtls.so.$version 644"
	echo "$libdir/libmtls.so.0 link"
	echo "$libdir/libmtls.so link"
	echo "$libdir/libmtls.a 644"
	echo "$libdir/pkgconfig/mtls.pc 644"
	for f in mtlsConfig mtlsConfigVersion mtlsTargets "mtlsTargets-${build_type,,}"; do
		echo "$libdir/cmake/mtls/$f.cmake 644"
	done
	for f in "$src"/docs/man/*.1 "$src"/docs/man/*.8; do
		[ -f "$f" ] && echo "share/man/man${f##*.}/${f##*/} 644"
	done
	[ ! -f "$src/docs/man/mtls.1" ] && [ -f "$src/docs/mtls.1" ] && echo "share/man/man1/mtls.1 644"
	# (an absolute unit dir, Debian's /lib/systemd/system, is outside the prefix)
	for f in "$src"/systemd/*.service "$src"/systemd/*.socket "$src"/systemd/*.timer; do
		[ -f "$f" ] && [[ $unitdir != /* ]] && echo "$unitdir/${f##*/} 644"
	done
	[ -f "$src/completion/mtls" ] && echo "share/bash-completion/completions/mtls 644"
	echo "share/doc/mtls/README.md 644"
	for f in "$src"/docs/*.md; do
		echo "share/doc/mtls/${f##*/} 644"
	done
	[ -d "$src/docs/examples" ] && (cd "$src/docs/examples" && find . -type f -printf 'share/doc/mtls/examples/%P 644\n')
	for f in "$src"/examples/echo-server.c "$src"/examples/echo-client.c; do
		echo "share/doc/mtls/examples/${f##*/} 644"
	done
}
expected | sort >"$TMP/expected"
(cd "$prefix" && find . ! -type d -printf '%P %m %y\n') |
	awk '{ print $1, ($3 == "l" ? "link" : $2) }' | sort >"$TMP/installed"
missing=$(comm -23 "$TMP/expected" "$TMP/installed")
extra=$(comm -13 "$TMP/expected" "$TMP/installed")
verdict "every file installed in its place with its mode ($(wc -l <"$TMP/expected") files)" \
	${missing:+"missing or another mode:"} ${missing:+"$missing"} \
	${extra:+"not expected (or another mode):"} ${extra:+"$extra"}
baddirs=$(cd "$prefix" && find . -type d \( ! -perm 755 -o -empty \) -printf '%P %m\n')
vcheck "directories are 0755, none empty" "$baddirs"

lib=$prefix/$libdir
links="$(readlink "$lib/libmtls.so") $(readlink "$lib/libmtls.so.0")"
vcheck "libmtls.so -> libmtls.so.0 -> libmtls.so.$version" \
	"$([ "$links" = "libmtls.so.0 libmtls.so.$version" ] || echo "links: $links")"
dyn=$(readelf -d "$lib/libmtls.so.$version")
vcheck "libmtls.so.$version has SONAME libmtls.so.0 and no RUNPATH" \
	"$(grep -q 'Library soname: \[libmtls.so.0\]' <<<"$dyn" || echo "no SONAME libmtls.so.0")$(
		grep -E 'RPATH|RUNPATH' <<<"$dyn" || true)"
vcheck "bin/mtls has no RPATH into the build tree" "$(readelf -d "$prefix/bin/mtls" | grep -E 'RPATH|RUNPATH' || true)"
run "$prefix/bin/mtls" --version
if [ "$RC" -eq 0 ] && [ "$OUT" = "mtls $version" ]; then
	report "the installed mtls runs"
else
	report "the installed mtls runs" "not 'mtls $version'"
fi

# ---------------------------------------------------------------------------------------
# Programs outside the tree, built from the examples with pkg-config only.
export PKG_CONFIG_PATH=$lib/pkgconfig
trim() { local s=$1; s=${s%"${s##*[![:space:]]}"}; echo "$s"; }
pc_cflags=$(trim "$(pkg-config --cflags mtls)")
pc_libs=$(trim "$(pkg-config --libs mtls)")
pc_static=$(trim "$(pkg-config --static --libs mtls)")
vcheck "pkg-config points at the prefix of the install (${pc_cflags} ${pc_libs})" \
	"$([[ $pc_cflags == "-I$prefix/include" && $pc_libs == "-L$lib -lmtls" ]] ||
		echo "cflags '$pc_cflags' libs '$pc_libs'")"
vcheck "pkg-config --static adds OpenSSL and pthreads ($pc_static)" \
	"$([[ $pc_static == *-lssl* && $pc_static == *-lcrypto* && $pc_static == *-pthread* ]] ||
		echo "static libs: $pc_static")"

mkdir -p "$TMP/pc-shared" "$TMP/pc-static"
ok=1
for p in echo-server echo-client; do
	# shellcheck disable=SC2086 # pkg-config's output is words
	run "$cc" "${san[@]}" $pc_cflags "$src/examples/$p.c" -o "$TMP/pc-shared/$p" $pc_libs
	[ "$RC" -eq 0 ] || { ok=0; LAST_CMD="cc (shared) $p" report "$p builds against libmtls.so with pkg-config only" "exit $RC"; }
	# the archive, and what it needs, linked in; the C library stays shared
	# shellcheck disable=SC2086
	run "$cc" "${san[@]}" $pc_cflags "$src/examples/$p.c" -o "$TMP/pc-static/$p" \
		-Wl,-Bstatic $pc_static -Wl,-Bdynamic
	[ "$RC" -eq 0 ] || { ok=0; LAST_CMD="cc (static) $p" report "$p builds against libmtls.a with pkg-config --static only" "exit $RC"; }
done
if [ "$ok" -eq 1 ]; then
	pass "the examples build with pkg-config --cflags --libs mtls, and with --static"
	needed=$(readelf -d "$TMP/pc-shared/echo-server" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
	vcheck "the shared build needs libmtls.so.0 and not OpenSSL ($needed)" \
		"$([[ " $needed" == *" libmtls.so.0 "* && $needed != *libssl* ]] || echo "NEEDED: $needed")"
	needed=$(readelf -d "$TMP/pc-static/echo-server" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
	vcheck "the static build needs neither libmtls nor OpenSSL at run time ($needed)" \
		"$([[ $needed != *libmtls* && $needed != *libssl* && $needed != *libcrypto* ]] || echo "NEEDED: $needed")"
	resolved=$(LD_LIBRARY_PATH=$lib ldd "$TMP/pc-shared/echo-server" | grep 'libmtls\.so\.0' || true)
	vcheck "with LD_LIBRARY_PATH the shared build loads the installed libmtls.so.0" \
		"$([[ $resolved == *"=> $lib/libmtls.so.0 "* ]] || echo "ldd: $resolved")"
fi

# ... and with CMake: find_package(mtls) and its two targets
cat >"$TMP/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.18)
project(embed C)
find_package(mtls $version REQUIRED)
add_executable(echo-server "$src/examples/echo-server.c")
target_link_libraries(echo-server PRIVATE mtls::mtls)
add_executable(echo-client "$src/examples/echo-client.c")
target_link_libraries(echo-client PRIVATE mtls::mtls_static)
EOF
san_flags="${san[*]}"
RUN_LIMIT=120 run cmake -S "$TMP" -B "$TMP/cm" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_COMPILER="$cc" \
	-DCMAKE_C_FLAGS="$san_flags" -DCMAKE_EXE_LINKER_FLAGS="$san_flags"
[ "$RC" -eq 0 ] && RUN_LIMIT=120 run cmake --build "$TMP/cm"
LAST_CMD="cmake with find_package(mtls)" report_rc "a CMake project builds the examples with find_package(mtls): mtls::mtls, mtls::mtls_static"
if [ "$RC" -eq 0 ]; then
	needed=$(readelf -d "$TMP/cm/echo-server" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
	needed2=$(readelf -d "$TMP/cm/echo-client" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
	vcheck "mtls::mtls links libmtls.so.0, mtls::mtls_static links libmtls.a" \
		"$([[ " $needed" == *" libmtls.so.0 "* && $needed2 != *libmtls* ]] || echo "server NEEDED: $needed; client NEEDED: $needed2")"
fi

# ---------------------------------------------------------------------------------------
# The programs built above talk mutual TLS: each server and each client at least once.
export LD_LIBRARY_PATH=$lib
c=$CERTS
srv_args=(--cert "$c/server-chain.pem" --key "$c/server.key" --ca "$c/ca.pem"
	--allow-uri 'spiffe://test.mtls/ns/prod/sa/*')
cli_args=(--cert "$c/client-chain.pem" --key "$c/client.key" --ca "$c/ca.pem" --name server.test)

# handshake SERVER CLIENT... : SERVER (a directory's echo-server) answers each CLIENT once
handshake() {
	local sdir=$1 cdir problems=() n=0
	shift
	ECHO_SERVER=$TMP/$sdir/echo-server start_echo_server "$TMP/$sdir.log" "${srv_args[@]}" --count $#
	for cdir in "$@"; do
		n=$((n + 1))
		run "$TMP/$cdir/echo-client" "${cli_args[@]}" --connect "127.0.0.1:$ES_PORT" "hello $cdir $n"
		[ "$RC" -eq 0 ] && has_line "$OUT" "echo: hello $cdir $n" ||
			problems+=("$cdir/echo-client: exit $RC: $OUT $ERR")
	done
	wait_exit "$ES_PID" 10
	[ "$EXIT_RC" = 0 ] || problems+=("$sdir/echo-server: exit $EXIT_RC")
	[ "$(count_lines "$(cat "$TMP/$sdir.log")" "client: spiffe://test.mtls/ns/prod/sa/")" -eq $# ] ||
		problems+=("$sdir/echo-server saw: $(cat "$TMP/$sdir.log")")
	verdict "$sdir/echo-server answers $* over mutual TLS" "${problems[@]}"
}
if [ "$ok" -eq 1 ] && [ -x "$TMP/cm/echo-server" ]; then
	handshake pc-shared pc-shared pc-static cm
	handshake pc-static pc-shared
	handshake cm pc-static
else
	fail "the examples talk mutual TLS" "not built (see above)"
fi
finish
