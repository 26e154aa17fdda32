#!/usr/bin/env bash
# mtls doctor --config FILE [--user NAME], offline on a server host: a daemon's config parsed
# with the daemons' own option table and checked without starting anything. Each case
# asserts the finding line and the exit status (0 the daemon would start and serve, 1 not):
#   - a good server config and a good connector config: exit 0
#   - an allow rule quoted (fine) and quoted twice, a URI rule without a scheme, a DNS rule
#     that is a URL, a comment inside quotes (and one after a value: fine)
#   - a missing key file, a key that does not match the certificate, an expired certificate
#   - a key the daemon's user cannot read (root: --user nobody; others: chmod 000), a
#     directory it cannot search (root only)
#   - a CRL of another CA, a config with an unknown key, --ca-url's renewal window
#   - the rollout mode: insecure-audit and insecure-permissive warn (exit 0) with the next
#     step of docs/rollout.md; a value that is not a mode fails
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

W=$TMP/w
mkdir -m 755 -- "$W"
D=$W/ca
TD=spiffe://example.org
"$MTLS" ca init --dir "$D" >/dev/null 2>&1 || _lib_die "(setup) mtls ca init failed"
"$MTLS" ca init --dir "$W/other-ca" --name other >/dev/null 2>&1 || _lib_die "(setup) the other CA"
"$MTLS" ca issue --dir "$D" --profile server --dns localhost --out "$W/srv" >/dev/null 2>&1 ||
	_lib_die "(setup) server certificate"
"$MTLS" ca issue --dir "$D" --profile client --uri "$TD/ns/dev/sa/app" --out "$W/app" \
	>/dev/null 2>&1 || _lib_die "(setup) client certificate"
chmod 644 "$W"/*.pem

# conf NAME LINES... : write a config $W/NAME.conf from a good server config, with LINES
# (sed expressions, applied in order) changing it.
conf() {
	local name=$1
	shift
	cat >"$W/$name.conf" <<-CONF
		listen 127.0.0.1:8443
		target 127.0.0.1:5432
		cert $W/srv-chain.pem
		key $W/srv.key
		ca $D/root.pem
		crl $D/crl.pem
		allow-uri $TD/ns/dev/sa/app
	CONF
	for e in "$@"; do
		sed -i -e "$e" "$W/$name.conf"
	done
}

# doctor NAME EXPECTED_RC ERE [args] : run mtls doctor, expect the exit status and a line
# matching ERE in its output.
doctor() {
	local name=$1 want=$2 re=$3 p=()
	shift 3
	LAST_CMD="mtls doctor $*"
	run "$MTLS" doctor "$@"
	[ "$RC" = "$want" ] || p+=("exit status $RC, expected $want")
	[ -z "$re" ] || grep -Eq -- "$re" <<<"$OUT" || p+=("no line matching: $re")
	report "$name" "${p[@]+"${p[@]}"}"
}

conf good
doctor "good server config: exit 0" 0 '^result: no problem found' --config "$W/good.conf"
doctor "good server config: loads as the daemon does" 0 '^ok   load: the TLS configuration loads' --config "$W/good.conf"
doctor "good server config: the CRL's issuer is known" 0 '^ok   crl: .*crl\.pem: signed by CN=mtls Issuing CA,O=mtls' \
	--config "$W/good.conf"
doctor "good server config: --json" 0 '"ok": true' --config "$W/good.conf" --json

cat >"$W/connector.conf" <<CONF
listen 127.0.0.1:15432
server db.internal:8443
cert $W/app-chain.pem
key $W/app.key
ca $D/root.pem
CONF
doctor "good connector config: exit 0" 0 '^ok   config: .*connector\.conf: a config of mtls connector' \
	--config "$W/connector.conf"

conf quoted "s|^allow-uri .*|allow-uri '$TD/ns/*/sa/app'  # quoted, as the grammar allows|"
doctor "allow-uri in quotes, with a comment: one rule that can match" 0 \
	'^ok   allow: 1 allow rule, each can match' --config "$W/quoted.conf"
conf quoted2 "s|^allow-uri .*|allow-uri \"'$TD/ns/*/sa/app'\"|"
doctor "allow-uri quoted twice" 1 \
	"^fail allow: allow-uri '$TD/ns/\\*/sa/app': these quotes are part of the value \\(quoted twice\\).*never matches; fix: write 'allow-uri $TD/ns/\\*/sa/app' with one pair of quotes or none" \
	--config "$W/quoted2.conf"
conf emptyq "s|^allow-uri .*|allow-cn \"''\"|"
doctor "an empty quoted allow value" 1 "^fail allow: allow-cn '': an empty value in quotes; the rule never matches" \
	--config "$W/emptyq.conf"
conf noscheme "s|^allow-uri .*|allow-uri example.org/ns/dev/sa/app|"
doctor "allow-uri without a scheme" 1 '^fail allow: allow-uri example\.org/ns/dev/sa/app: a URI rule without a scheme never matches' \
	--config "$W/noscheme.conf"
conf dnsurl "s|^allow-uri .*|allow-dns https://api.example.org|"
doctor "allow-dns with a scheme" 1 '^fail allow: allow-dns https://api\.example\.org: a DNS rule is a host name, not a URL' \
	--config "$W/dnsurl.conf"
conf comment "s|^allow-uri .*|allow-uri '$TD/ns/dev/sa/app # the app'|"
doctor "a comment inside quotes" 1 '^fail allow: allow-uri .*# the app: a comment inside quotes is part of the value' \
	--config "$W/comment.conf"
conf comment2 "s|^allow-uri .*|allow-uri $TD/ns/dev/sa/app # the app|"
doctor "a comment after an unquoted value is a comment" 0 '^ok   allow: 1 allow rule, each can match' \
	--config "$W/comment2.conf"

conf nokey "s|^key .*|key $W/missing.key|"
doctor "missing key file" 1 "^fail file: $W/missing\\.key: No such file or directory; fix: put the file there" \
	--config "$W/nokey.conf"
conf mismatch "s|^key .*|key $W/app.key|"
doctor "key does not match the certificate" 1 "^fail key: $W/app\\.key does not match the certificate in $W/srv-chain\\.pem" \
	--config "$W/mismatch.conf"
doctor "key mismatch: the daemon would not start" 1 '^fail load: the daemon would not start: private key .* does not match' \
	--config "$W/mismatch.conf"

install -m 600 "$CERTS/expired-server.key" "$W/exp.key"
conf expired "s|^cert .*|cert $CERTS/expired-server-chain.pem|" "s|^key .*|key $W/exp.key|" \
	"s|^ca .*|ca $CERTS/ca.pem|" "s|^crl .*|crl $CERTS/crl.pem|"
doctor "expired own certificate" 1 '^fail cert-time: .*expired-server-chain\.pem expired at 2021-01-01T00:00:00Z' \
	--config "$W/expired.conf"

conf othercrl "s|^crl .*|crl $W/other-ca/crl.pem|"
doctor "a CRL of another CA" 1 '^fail crl: .*other-ca/crl\.pem: issued by CN=other Issuing CA.*neither in --ca nor in the own chain' \
	--config "$W/othercrl.conf"

conf badkey 's|^allow-uri|allow-urii|'
doctor "an unknown key: the daemon would not start" 1 "^fail config: mtls server would not start: .*unknown key 'allow-urii'" \
	--config "$W/badkey.conf"

sed 's|^ca |caa |' "$W/connector.conf" >"$W/badconnector.conf"
doctor "a connector's config with an unknown key" 1 "^fail config: mtls connector would not start: .*unknown key 'caa'" \
	--config "$W/badconnector.conf"

conf renew "\$a ca-url https://127.0.0.1:1"
doctor "--ca-url: the renewal window" 0 '^ok   renewal: --ca-url renews .*srv-chain\.pem between 20[0-9-]+T[0-9:]+Z and 20' \
	--config "$W/renew.conf"

# the rollout mode: a weak one is a warning (the daemon starts: exit 0), with the next step
doctor "good server config: mode strict" 0 '^ok   mode: strict: only clients with a verified certificate' \
	--config "$W/good.conf"
conf audit "\$a mode insecure-audit"
doctor "mode insecure-audit: a warning, with the step to strict" 0 \
	'^warn mode: mode insecure-audit: clients strict mode would refuse .* are forwarded to the target.*; fix: once mtls_would_refuse_total stops growing .*set mode strict and SIGHUP' \
	--config "$W/audit.conf"
doctor "mode insecure-audit: no problem, 1 warning" 0 '^result: no problem found \(1 warning\)' \
	--config "$W/audit.conf"
conf permissive "\$a mode insecure-permissive"
doctor "mode insecure-permissive: a warning, with the next steps" 0 \
	'^warn mode: mode insecure-permissive: plaintext clients, clients without a certificate and clients strict mode would refuse .* are all forwarded to the target.*; fix: move the clients to mutual TLS.*set mode insecure-audit, then mode strict once mtls_would_refuse_total stops growing' \
	--config "$W/permissive.conf"
doctor "mode insecure-permissive: --json" 0 '"finding": "mode insecure-permissive: plaintext clients' \
	--config "$W/permissive.conf" --json
conf badmode "\$a mode audit"
doctor "mode audit (not a mode): the daemon would not start" 1 \
	"^fail mode: mode 'audit': not a mode; the daemon would not start; fix: give strict, insecure-permissive or insecure-audit" \
	--config "$W/badmode.conf"

# a key the daemon's user cannot read
mkdir -m 755 -- "$W/k"
install -m 600 "$W/srv.key" "$W/k/srv.key"
conf unreadable "s|^key .*|key $W/k/srv.key|"
if [ "$(id -u)" = 0 ]; then
	if id nobody >/dev/null 2>&1; then
		chmod 711 "$TMP" # the directories above the files: searchable by nobody
		doctor "root's key, --user nobody: cannot read" 1 \
			"^fail file: user nobody cannot read $W/k/srv\\.key \\(mode 0600, owner uid 0" \
			--config "$W/unreadable.conf" --user nobody
		printf 'user nobody\n' >>"$W/unreadable.conf"
		doctor "--user from the config" 1 "^fail file: user nobody cannot read $W/k/srv\\.key" \
			--config "$W/unreadable.conf"
		chown nobody "$W/k/srv.key"
		chmod 700 "$W/k"
		doctor "a directory --user cannot search" 1 \
			"^fail file: user nobody cannot search the directory $W/k \\(mode 0700\\); fix: chmod o\\+x" \
			--config "$W/unreadable.conf"
		chmod 755 "$W/k"
		chown root "$W/k/srv.key"
		doctor "root itself reads it" 0 '^ok   file: user root can read all' \
			--config "$W/unreadable.conf" --user root
		# root's key with the daemon user's own group, 0640 (docs/install.md): the daemon
		# reads it as that user and takes it; the doctor, run as root, loads it as that
		# user too (it said "the daemon would not start": root's group is not the user's)
		own=
		for u in postgres mtls; do
			g=$(id -gn "$u" 2>/dev/null) || continue
			[ "$g" = "$u" ] && [ -z "$(getent group "$g" | cut -d: -f4)" ] && own=$u && break
		done
		if [ -n "$own" ]; then
			chgrp "$own" "$W/k/srv.key"
			chmod 640 "$W/k/srv.key"
			chmod 711 "$D"
			chmod 644 "$D/root.pem" "$D/crl.pem"
			sed -i '/^user /d' "$W/unreadable.conf"
			doctor "root:$own 0640 key, --user $own: loads as $own, no key warning" 0 \
				"^ok   load: the TLS configuration loads" \
				--config "$W/unreadable.conf" --user "$own"
			grep -q '^warn key' <<<"$OUT" && fail "no key warning for root:$own 0640" "$OUT"
			doctor "the same key for --user nobody: refused" 1 "^fail file: user nobody cannot read" \
				--config "$W/unreadable.conf" --user nobody
			chgrp root "$W/k/srv.key"
			chmod 600 "$W/k/srv.key"
			chmod 700 "$D"
		else
			printf 'skip  a key of the daemon user'"'"'s own group: no such user here\n'
		fi
	else
		printf 'skip  unreadable key: no user nobody\n'
	fi
else
	chmod 000 "$W/k/srv.key"
	doctor "a key the current user cannot read (mode 000)" 1 \
		"^fail file: user $(id -un) cannot read $W/k/srv\\.key \\(mode 0000" \
		--config "$W/unreadable.conf"
	chmod 600 "$W/k/srv.key"
	printf 'skip  other users and directories: needs root\n'
fi

doctor "usage: --config with --cert" 2 '' --config "$W/good.conf" --cert "$W/srv-chain.pem"
doctor "usage: a missing config file" 2 '' --config "$W/nothere.conf"

finish
