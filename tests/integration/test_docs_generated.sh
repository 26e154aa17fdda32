#!/usr/bin/env bash
# The generated documentation is what the option tables say, so it never goes stale:
#   - mtls __generate-docs into a temporary directory gives exactly the committed
#     docs/config.md, docs/man/ and completion/mtls (else: run scripts/gen-docs.sh);
#   - every page is clean man(7) roff: groff -ww -man -z prints no warning and man -l
#     renders it with its NAME, SYNOPSIS, DESCRIPTION and OPTIONS;
#   - the pages of the conventions exist, and every option of mtls server --help is in its
#     page, in docs/config.md and in the completion.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

command -v groff >/dev/null || _lib_die "groff not found in PATH (install groff-base)"
command -v man >/dev/null || _lib_die "man not found in PATH (install man-db)"
S=$MTLS_SOURCE_DIR
G=$TMP/gen
mkdir -- "$G"

LAST_CMD="mtls __generate-docs $G"
run "$MTLS" __generate-docs "$G"
p=()
[ "$RC" = 0 ] || p+=("exit status $RC")
report "mtls __generate-docs writes the docs" "${p[@]+"${p[@]}"}"

p=()
for f in docs/config.md completion/mtls; do
	cmp -s -- "$G/$f" "$S/$f" ||
		p+=("$f differs from what the option tables say: run scripts/gen-docs.sh to regenerate, and commit it" "$(diff -u -- "$S/$f" "$G/$f" | head -n 20 || true)")
done
d=$(diff -r -- "$S/docs/man" "$G/docs/man" 2>&1 | head -n 20 || true)
[ -z "$d" ] || p+=("docs/man differs from what the option tables say: run scripts/gen-docs.sh to regenerate, and commit it" "$d")
verdict "the committed docs are those the tables generate" "${p[@]+"${p[@]}"}"

p=()
for page in mtls.1 mtls-server.8 mtls-connector.8 mtls-agent.8 mtls-ca.1 mtls-enroll.1 \
	mtls-renew.1 mtls-verify.1 mtls-doctor.1; do
	f=$G/docs/man/$page
	[ -f "$f" ] || {
		p+=("no page $page")
		continue
	}
	w=$(groff -ww -man -z -- "$f" 2>&1 || echo "groff failed")
	[ -z "$w" ] || p+=("$page: groff -ww: $w")
	out=$(MANWIDTH=80 man -l -- "$f" 2>"$TMP/man.err" || echo "man -l failed")
	# troff's and man's complaints (not notes about a cache man cannot write)
	if grep -qiE 'warning|error' "$TMP/man.err"; then
		p+=("$page: man -l: $(head -n 3 "$TMP/man.err")")
	fi
	for sec in NAME SYNOPSIS DESCRIPTION; do
		grep -q "^$sec" <<<"$out" || p+=("$page: no $sec section")
	done
	case $page in
	mtls.1 | mtls-ca.1) ;;
	*) grep -q '^OPTIONS' <<<"$out" || p+=("$page: no OPTIONS section") ;;
	esac
done
for page in mtls-server.8 mtls-connector.8; do
	out=$(MANWIDTH=80 man -l -- "$G/docs/man/$page" 2>/dev/null || true)
	for w in SIGHUP SIGUSR1 SIGTERM 'EXIT STATUS' FILES 'SEE ALSO' CONFIGURATION; do
		grep -q "$w" <<<"$out" || p+=("$page: does not say $w")
	done
done
verdict "each page of the conventions is clean roff with its sections (groff -ww, man -l)" "${p[@]+"${p[@]}"}"

# every option --help lists, in the page, the reference and the completion
p=()
run "$MTLS" server --help
opts=$(grep -o '^  --[a-z0-9-]*' <<<"$OUT" | tr -d ' ')
[ -n "$opts" ] || p+=("no option in mtls server --help")
page=$(MANWIDTH=200 man -l -- "$G/docs/man/mtls-server.8" 2>/dev/null || true)
for o in $opts; do
	grep -q -- "^ *$o\\b" <<<"$page" || p+=("$o is not in mtls-server(8)")
	case $o in --help | --version | --config) continue ;; esac
	grep -q -- "^| \`${o#--}\` |" "$G/docs/config.md" || p+=("${o#--} is not a key in docs/config.md")
	grep -q -- "'server') echo '.* $o \\|'server') echo '$o " "$G/completion/mtls" ||
		p+=("$o is not completed for mtls server")
done
verdict "every option of mtls server --help is in its page, docs/config.md and the completion" "${p[@]+"${p[@]}"}"
finish
