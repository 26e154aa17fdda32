#!/usr/bin/env bash
# completion/mtls (generated from the option tables) in a real bash: _mtls driven through
# COMP_WORDS/COMP_CWORD as bash's programmable completion calls it. Subcommands, the ca
# subcommands, each command's options, files for FILE arguments, directories for DIR, the
# words of enum-like options (--mode, --log-format, --ocsp), nothing for a free value.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

COMPLETION=$MTLS_SOURCE_DIR/completion/mtls
W=$TMP/w
mkdir -p -- "$W/certs.d" "$W/cadir"
: >"$W/cert.pem"
: >"$W/ca.pem"

# complete WORDS... : what _mtls offers for the last word (sorted, one line, blank-separated),
# in a fresh bash that sourced the completion file.
complete_words() {
	bash --norc --noprofile -c '
		set -u
		. "$1"; shift
		COMP_WORDS=("$@")
		COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
		COMP_LINE="${COMP_WORDS[*]}"
		COMP_POINT=${#COMP_LINE}
		_mtls mtls "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
		printf "%s\n" "${COMPREPLY[@]}" | sort | tr "\n" " "
	' complete "$COMPLETION" "$@"
}

# case NAME EXPECT WORDS... : the offer must be EXPECT exactly (sorted, blank-separated)
case_is() {
	local name=$1 want=$2 got
	shift 2
	got=$(cd "$W" && complete_words "$@" 2>&1) || true
	got=${got% }
	vcheck "$name" "$([ "$got" = "$want" ] || echo "completing '$*': got '$got', expected '$want'")"
}
# case_has NAME WORD WORDS... : the offer must include WORD
case_has() {
	local name=$1 want=$2 got
	shift 2
	got=" $(cd "$W" && complete_words "$@" 2>&1) " || true
	vcheck "$name" "$([[ $got == *" $want "* ]] || echo "completing '$*': '$want' not offered in '$got'")"
}

case_is "subcommands: mtls s" "server" mtls s
case_has "subcommands: mtls (all)" connector mtls ""
case_has "subcommands include ca" ca mtls ""
case_is "ca subcommands: mtls ca i" "init inspect issue" mtls ca i
case_is "ca subcommand options: mtls ca issue --pro" "--profile" mtls ca issue --pro
case_is "server options: mtls server --allow-u" "--allow-uri" mtls server --allow-u
case_is "connector options: mtls connector --server-" "--server-name" mtls connector --server-
case_has "every command takes --help" --help mtls renew --
case_is "a FILE argument completes files: --cert ce" "cert.pem certs.d" mtls server --cert ce
case_is "a FILE argument of a ca subcommand: --csr ca" "ca.pem cadir" mtls ca issue --csr ca
case_is "a DIR argument completes directories only: --dir ca" "cadir" mtls ca init --dir ca
case_is "--mode offers the rollout modes" "insecure-audit insecure-permissive strict" mtls server --mode ""
case_is "--mode i" "insecure-audit insecure-permissive" mtls server --mode i
case_is "--log-format offers json and logfmt" "json logfmt" mtls connector --log-format ""
case_is "--ocsp offers its three words" "hard-fail off soft-fail" mtls server --ocsp ""
case_is "a free value (--listen ADDR) offers nothing" "" mtls server --listen ""
case_is "after a flag, options again: --reuse-port --tar" "--target" mtls server --reuse-port --tar
case_is "mtls ca rollover offers its steps" "begin finish status switch" mtls ca rollover ""
case_is "mtls ca rollover s" "status switch" mtls ca rollover s
case_is "after the step, options: mtls ca rollover begin --ro" "--root-key" mtls ca rollover begin --ro
case_is "a command without steps: mtls server's first word is a file" "cert.pem certs.d" mtls server ce
case_is "mtls verify's positional CERT is a file" "cert.pem certs.d" mtls verify --ca ca.pem ce
finish
