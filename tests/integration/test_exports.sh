#!/usr/bin/env bash
# libmtls as installed (libmtls.a and libmtls.so) exports the public API and nothing else:
# an internal name such as error_set or policy_new must not be able to clash with a symbol
# of the program that embeds the library. The examples are linked against libmtls.a, so
# they also show that the public API alone is enough to use it.
source "$(dirname "$0")/lib.sh"

command -v nm >/dev/null || { echo "nm not found (binutils)"; exit 2; }
archive=$MTLS_BIN_DIR/libmtls.a
shared=$MTLS_BIN_DIR/libmtls.so
header=$MTLS_SOURCE_DIR/include/mtls.h

# defined global symbols of a file (nm's three-column lines)
globals() { nm "$@" --defined-only 2>/dev/null | awk 'NF == 3 && $2 ~ /[A-Z]/ { print $3 }' | sort -u; }

for lib in "$archive" "$shared"; do
	name=${lib##*/}
	if [ ! -f "$lib" ]; then
		fail "$name exists" "$lib was not built"
		continue
	fi
	if [ "$lib" = "$shared" ]; then syms=$(globals -D "$lib"); else syms=$(globals -g "$lib"); fi
	extra=$(grep -v '^mtls_' <<<"$syms" || true)
	if [ -z "$extra" ]; then
		pass "$name exports only mtls_* names ($(wc -l <<<"$syms") of them)"
	else
		fail "$name exports only mtls_* names" "also exports:" "$extra"
	fi
	# every function the header declares is there
	missing=""
	for f in $(grep -oE '\bmtls_[a-z0-9_]+\(' "$header" | tr -d '(' | sort -u); do
		grep -qx "$f" <<<"$syms" || missing+="$f "
	done
	if [ -z "$missing" ]; then
		pass "$name defines every function of mtls.h"
	else
		fail "$name defines every function of mtls.h" "missing: $missing"
	fi
done

# the internal archive still has the internal names (the unit tests need them), so the check
# above is not passing because nm found nothing
if grep -qx 'error_set' <<<"$(globals -g "$MTLS_BIN_DIR/libmtls_internal.a")"; then
	pass "libmtls_internal.a keeps the internal names for the tests"
else
	fail "libmtls_internal.a keeps the internal names for the tests" "error_set not found"
fi

# the examples link the public archive only
# (nm's output is kept first: grep -q closing the pipe early would fail the pipeline)
example_syms=$(nm "$ECHO_SERVER")
if grep -q ' T mtls_configure$' <<<"$example_syms" && ! grep -q ' T error_set$' <<<"$example_syms"; then
	pass "echo-server is linked against the public libmtls.a"
else
	fail "echo-server is linked against the public libmtls.a" "$(grep -E ' T (mtls_configure|error_set)$' <<<"$example_syms")"
fi
finish
