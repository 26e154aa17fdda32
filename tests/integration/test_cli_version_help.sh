#!/usr/bin/env bash
# Every command and subcommand of mtls takes --version (the version line of `mtls --version`,
# exit 0) and --help (its usage on stdout, exit 0), even with the options it needs missing.
# The commands are read from `mtls --help` and `mtls ca --help`, so a new one is covered.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

# commands HELP_TEXT : the names listed under "commands:" (up to the next blank line)
commands() {
	printf '%s\n' "$1" | awk '/^commands:$/ { on = 1; next } on && /^$/ { exit }
		on && /^  [a-z]/ { print $1 }'
}

run "$MTLS" --version
VERSION=$OUT
vcheck "mtls --version prints one version line" \
	"$([ "$RC" = 0 ] && [[ $VERSION =~ ^mtls\ [0-9]+\.[0-9]+\.[0-9]+ ]] || echo "exit $RC: $VERSION")"

run "$MTLS" --help
TOP=$(commands "$OUT")
run "$MTLS" ca --help
CA=$(commands "$OUT")
LIST=()
for c in $TOP; do
	[ "$c" = version ] || LIST+=("$c") # `mtls version` is the version itself
done
for c in $CA; do
	LIST+=("ca $c")
done
p=()
[ "${#LIST[@]}" -ge 15 ] || p+=("only ${#LIST[@]} commands found in the help texts: ${LIST[*]}")
for want in server connector ca verify "ca issue" "ca init"; do
	printf '%s\n' "${LIST[@]}" | grep -qx -- "$want" || p+=("$want is not listed")
done
verdict "the commands are read from mtls --help and mtls ca --help (${#LIST[@]})" \
	"${p[@]+"${p[@]}"}" -- "${LIST[*]}"

for c in "${LIST[@]}"; do
	read -ra words <<<"$c"
	LAST_CMD="mtls $c --version"
	run "$MTLS" "${words[@]}" --version
	p=()
	[ "$RC" = 0 ] || p+=("exit status $RC, expected 0")
	[ "$OUT" = "$VERSION" ] || p+=("stdout is not the version line '$VERSION'")
	[ -z "$ERR" ] || p+=("something on stderr")
	report "mtls $c --version" "${p[@]+"${p[@]}"}"

	LAST_CMD="mtls $c --help"
	run "$MTLS" "${words[@]}" --help
	p=()
	[ "$RC" = 0 ] || p+=("exit status $RC, expected 0")
	[[ $OUT == "usage: mtls $c"* ]] || p+=("stdout does not start with 'usage: mtls $c'")
	[ -z "$ERR" ] || p+=("something on stderr")
	report "mtls $c --help" "${p[@]+"${p[@]}"}"
done

# after other options, and before options the command would refuse
run "$MTLS" server --listen 127.0.0.1:0 --version --no-such-option
vcheck "mtls server --listen ... --version --no-such-option: the version" \
	"$([ "$RC" = 0 ] && [ "$OUT" = "$VERSION" ] || echo "exit $RC: $OUT $ERR")"

finish
