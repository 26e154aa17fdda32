#!/usr/bin/env bash
# The README's CA and verify examples, run as written (every block marked
# "<!-- readme-test: NAME -->", in order), so that the README cannot drift from what the
# commands do: each command must succeed, except one followed by a "# refused: REASON: ..."
# comment, which must be refused (exit 1) with that reason. They run with HOME and the
# working directory in a temporary place, and must write nothing into the working directory
# (before: the CA landed in the source tree's ca/ folder, and `mtls verify` named files no
# command had made). Also: `mtls ca init` refuses a directory that holds other files.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

README=$MTLS_SOURCE_DIR/README.md
[ -f "$README" ] || _lib_die "$README is missing"

# The marked blocks: the fenced block after each marker, joined backslash continuations.
awk '
	/^<!-- readme-test: / { want = 1; next }
	want && /^```/ { want = 0; inblock = 1; next }
	inblock && /^```/ { inblock = 0; next }
	inblock {
		if (sub(/\\$/, "")) { cont = cont $0; next }
		print cont $0; cont = ""
	}
' "$README" >"$TMP/steps"
N=$(grep -c . "$TMP/steps" || true)
[ "$N" -ge 8 ] || _lib_die "found $N lines in README.md's readme-test blocks: the markers are gone?"

mkdir -m 700 "$TMP/home" "$TMP/cwd"
export HOME=$TMP/home
cd "$TMP/cwd"
prev=""
prev_rc=0
prev_out=""
while IFS= read -r line; do
	case $line in
	"# refused: "*)
		reason=${line#"# refused: "}
		reason=${reason%%:*}
		if [ "$prev_rc" = 1 ] && [[ $prev_out == *"refused: $reason:"* ]]; then
			pass "refused as the README says: $prev"
		else
			fail "refused as the README says: $prev" "exit $prev_rc, expected 1 with 'refused: $reason:'" "$prev_out"
		fi
		prev=""
		continue
		;;
	"#"* | "") continue ;;
	esac
	# the previous command was not followed by "# refused": it had to succeed
	if [ -n "$prev" ]; then
		if [ "$prev_rc" = 0 ]; then pass "$prev"; else fail "$prev" "exit $prev_rc" "$prev_out"; fi
	fi
	prev=$line
	cmd=${line//build\/mtls/\"\$MTLS\"}
	prev_rc=0
	# in this shell, not a subshell: the README's variables (D=...) hold for what follows
	eval "$cmd" >"$TMP/step.out" 2>&1 </dev/null || prev_rc=$?
	prev_out=$(cat -- "$TMP/step.out")
done <"$TMP/steps"
if [ -n "$prev" ]; then
	if [ "$prev_rc" = 0 ]; then pass "$prev"; else fail "$prev" "exit $prev_rc" "$prev_out"; fi
fi
vcheck "nothing written into the working directory" \
	"$([ -z "$(ls -A)" ] || { echo "left there:"; ls -A; })"

echo "# mtls ca init refuses a directory that holds other files"
mkdir -m 700 "$TMP/tree" && : >"$TMP/tree/issue.c"
LAST_CMD="mtls ca init --dir $TMP/tree (holds issue.c)"
run "$MTLS" ca init --dir "$TMP/tree"
p=()
[ "$RC" = 1 ] || p+=("exit $RC, expected 1")
[[ $ERR == *"$TMP/tree is not empty"*"give a directory that does not exist yet"* ]] ||
	p+=("the message does not say what to do")
[ "$(ls -A "$TMP/tree")" = issue.c ] || p+=("something was written: $(ls -A "$TMP/tree")")
report "a non-empty directory refused" "${p[@]+"${p[@]}"}"
if [ "$(id -u)" = 0 ] && id nobody >/dev/null 2>&1; then
	mkdir -m 700 "$TMP/theirs" && chown nobody "$TMP/theirs"
	LAST_CMD="mtls ca init --dir $TMP/theirs (empty, owned by nobody)"
	run "$MTLS" ca init --dir "$TMP/theirs"
	p=()
	[ "$RC" = 1 ] || p+=("exit $RC, expected 1")
	[[ $ERR == *"belongs to uid"*"not to this user"* ]] || p+=("no 'belongs to uid ... not to this user'")
	[ -z "$(ls -A "$TMP/theirs")" ] || p+=("something was written")
	report "an empty directory of another user refused" "${p[@]+"${p[@]}"}"
else
	echo "skip  an empty directory of another user (not root, or no user nobody)"
fi
finish
