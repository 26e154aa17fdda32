#!/usr/bin/env bash
# mtls server and mtls connector against peers that try to abuse them: a client whose
# identity is too long for the PROXY v2 header (and which writes a forged header of its own),
# certificate fields that try to forge log lines, unix listen sockets and their mode, and the
# daemons' own certificate running out (or due for renewal); and email SANs as identities.
#
# Certificates are made here with the openssl CLI, signed by the zoo's issuing CA ($CERTS),
# into $TMP: nothing is written next to the zoo.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/integration/tunnel_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/tunnel_lib.sh"

command -v curl >/dev/null || _lib_die "curl not found in PATH"

C=$CERTS
DAEMON=(--drain-timeout 1s --metrics 127.0.0.1:0)
SRV_TLS=(--cert "$C/server-chain.pem" --key "$C/server.key" --ca "$C/ca.pem")

# ------------------------------------------------------------------------------------------
# Helpers

# client_cert NAME SUBJECT SAN [openssl x509 args...] : a client certificate signed by the
# zoo's issuing CA: $TMP/NAME.pem (leaf), $TMP/NAME-chain.pem (leaf + int), $TMP/NAME.key.
# SUBJECT is a -subj argument ("" for the default /CN=NAME), SAN a subjectAltName value ("" for
# none).
client_cert() {
	local name=$1 subj=$2 san=$3
	shift 3
	[ -n "$subj" ] || subj=/CN=$name
	{
		echo "basicConstraints = critical, CA:FALSE"
		echo "keyUsage = critical, digitalSignature"
		echo "extendedKeyUsage = clientAuth"
		echo "subjectKeyIdentifier = hash"
		echo "authorityKeyIdentifier = keyid:always"
		[ -z "$san" ] || echo "subjectAltName = $san"
	} >"$TMP/$name.ext"
	run openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$TMP/$name.key" -subj "$subj" -utf8 -out "$TMP/$name.csr"
	[ "$RC" = 0 ] || _lib_die "openssl req for $name failed: $ERR"
	chmod 600 -- "$TMP/$name.key"
	run openssl x509 -req -in "$TMP/$name.csr" -CA "$C/int.pem" -CAkey "$C/int.key" \
		-set_serial "0x$(openssl rand -hex 12)" -extfile "$TMP/$name.ext" \
		-out "$TMP/$name.pem" "$@"
	[ "$RC" = 0 ] || _lib_die "openssl x509 -req for $name failed: $ERR"
	cat -- "$TMP/$name.pem" "$C/int.pem" >"$TMP/$name-chain.pem"
}

# s_client_send ADDR FILE LOG CERT_PREFIX : openssl s_client with the client certificate
# CERT_PREFIX.pem/.key (and the zoo's intermediate) verifies the server (server.test, the
# zoo's root), sends the bytes of FILE, then closes (close_notify) and ends.
s_client_send() {
	timeout -k 2 "$RUN_LIMIT" openssl s_client -connect "$1" -servername server.test \
		-CAfile "$C/ca.pem" -verify_return_error -cert "$4.pem" -cert_chain "$C/int.pem" \
		-key "$4.key" -quiet -no_ign_eof <"$2" >"$3" 2>&1 || true
}

# ==========================================================================================
echo "# 1. a PROXY v2 header that cannot be built refuses the connection"

# A client whose identity is too long for the header the server gives 16 KiB: its CN (it has
# no SAN, so its CN is its identity) of 17,000 characters. libmtls refuses URI SANs over
# 2048 bytes and DNS SANs over 253, and `openssl req` makes no CN over 64 characters: so
# the certificate is a normal one (openssl x509 -req) whose subject is replaced in its DER,
# and which is signed again by the zoo's issuing CA (openssl dgst -sign). The client then
# sends a PROXY v2 header of its own (TCP4 from 6.6.6.6, an identity TLV of its choice):
# nothing of it may reach the target.
cat >"$TMP/long_cn.pl" <<'EOF'
# long_cn.pl tbs CERT.der CNLEN OUT : OUT is the TBSCertificate of CERT.der with its subject
#   replaced by a single CN of CNLEN times 'a' (DER, to be signed by the same issuer)
# long_cn.pl cert CERT.der TBS SIG OUT : OUT is a certificate of TBS, CERT.der's signature
#   algorithm and the signature SIG (DER)
use strict;
use warnings;

sub len_der {
	my ($n) = @_;
	return pack('C', $n) if $n < 0x80;
	my $b = '';
	while ($n > 0) { $b = pack('C', $n & 0xff) . $b; $n >>= 8; }
	return pack('C', 0x80 | length($b)) . $b;
}
sub tlv { my ($tag, $v) = @_; return pack('C', $tag) . len_der(length $v) . $v; }
sub slurp { open(my $f, '<:raw', $_[0]) or die "$_[0]: $!"; local $/; return <$f>; }
sub spew { open(my $f, '>:raw', $_[0]) or die "$_[0]: $!"; print $f $_[1]; close($f) or die; }
# the elements of a DER value's content: [whole TLV, content] each
sub elements {
	my ($d) = @_;
	my @out;
	for (my $i = 0; $i < length $d;) {
		my ($l, $hl) = (ord(substr($d, $i + 1, 1)), 2);
		if ($l & 0x80) {
			my $k = $l & 0x7f;
			$l = 0;
			$l = ($l << 8) | ord(substr($d, $i + 2 + $_, 1)) for 0 .. $k - 1;
			$hl += $k;
		}
		push @out, [substr($d, $i, $hl + $l), substr($d, $i + $hl, $l)];
		$i += $hl + $l;
	}
	return @out;
}
my $mode = shift @ARGV;
my ($cert) = elements(slurp(shift @ARGV));
my @c = elements($cert->[1]); # tbs, signature algorithm, signature
if ($mode eq 'tbs') {
	my ($n, $out) = @ARGV;
	my @t = elements($c[0][1]); # version, serial, signature, issuer, validity, subject, ...
	$t[5][0] = tlv(0x30, tlv(0x31, tlv(0x30, "\x06\x03\x55\x04\x03" . tlv(0x0c, 'a' x $n))));
	spew($out, tlv(0x30, join('', map { $_->[0] } @t)));
} else {
	my ($tbs, $sig, $out) = @ARGV;
	spew($out, tlv(0x30, slurp($tbs) . $c[1][0] . tlv(0x03, "\0" . slurp($sig))));
}
EOF
LONG=17000
client_cert long "" ""
run openssl x509 -in "$TMP/long.pem" -outform DER -out "$TMP/long.der"
[ "$RC" = 0 ] || _lib_die "openssl x509 -outform DER: $ERR"
perl "$TMP/long_cn.pl" tbs "$TMP/long.der" "$LONG" "$TMP/long.tbs" ||
	_lib_die "long_cn.pl tbs failed"
run openssl dgst -sha256 -sign "$C/int.key" -out "$TMP/long.sig" "$TMP/long.tbs"
[ "$RC" = 0 ] || _lib_die "openssl dgst -sign: $ERR"
perl "$TMP/long_cn.pl" cert "$TMP/long.der" "$TMP/long.tbs" "$TMP/long.sig" "$TMP/long.der" ||
	_lib_die "long_cn.pl cert failed"
run openssl x509 -inform DER -in "$TMP/long.der" -out "$TMP/long.pem"
[ "$RC" = 0 ] || _lib_die "openssl x509 -inform DER: $ERR"
run openssl verify -CAfile "$C/ca.pem" -untrusted "$C/int.pem" "$TMP/long.pem"
[ "$RC" = 0 ] || _lib_die "the certificate with a long CN does not verify: $OUT $ERR"
forged="admin"
{
	# signature, v2 PROXY, TCP over IPv4, length 12 + 3 + 5
	printf '\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x14'
	printf '\x06\x06\x06\x06\x7f\x00\x00\x01\x00\x01\x01\xbb'
	printf '\xe0\x00\x05%s' "$forged"
	printf 'GET / HTTP/1.0\r\n\r\n'
} >"$TMP/forged.bin"

start_backend "$TMP/be1.log" --mode proxy-echo
start_tunnel_server "$TMP/srv1.log" --target "127.0.0.1:$BE_PORT" "${SRV_TLS[@]}" \
	--allow-any-identity --proxy-protocol "${DAEMON[@]}"
p=()
s_client_send "127.0.0.1:$SRV_PORT" "$TMP/forged.bin" "$TMP/sc1.log" "$TMP/long"
if wait_for_line "$TMP/srv1.log" '"event":"conn_close"' 5; then
	l=$(grep -m1 -F '"event":"conn_close"' "$TMP/srv1.log")
	[[ $l == *'"why":"proxy_header"'* ]] || p+=("conn_close does not say why proxy_header: $l")
	[[ $l == *'"bytes_to_target":0,'* ]] || p+=("bytes reached the target: $l")
else
	p+=("no conn_close line for the long client")
fi
l=$(grep -m1 -F '"event":"conn_refused"' "$TMP/srv1.log" || true)
[[ $l == *'"reason":"proxy_header"'* ]] || p+=("no conn_refused line with reason proxy_header")
[[ $l == *'"message":"the client'\''s identity ('"$LONG"' bytes) and common name ('"$LONG"' bytes) '* ]] ||
	p+=("the refusal does not say the identity is too long: $l")
grep -q '^conn open' "$TMP/be1.log" && p+=("the backend was connected to")
grep -q '^proxy ' "$TMP/be1.log" && p+=("the backend decoded a header: $(grep '^proxy ' "$TMP/be1.log")")
v=$(metric "$SRV_METRICS" 'mtls_connections_refused_total{reason="proxy_header"}')
[ "$v" = 1 ] || p+=("mtls_connections_refused_total{reason=\"proxy_header\"} is '$v', expected 1")
verdict "identity of $LONG bytes: refused (conn_refused proxy_header, counted), nothing reaches the target" \
	"${p[@]+"${p[@]}"}" -- "server log:" "$(cut -c1-400 "$TMP/srv1.log")" \
	"backend log:" "$(cut -c1-400 "$TMP/be1.log")"

# the same server still carries a client whose header fits, header first
p=()
printf 'hello\n' >"$TMP/hello.txt"
s_client_send "127.0.0.1:$SRV_PORT" "$TMP/hello.txt" "$TMP/sc1b.log" "$C/client"
wait_for_line "$TMP/be1.log" '^conn close' 5 || p+=("the backend saw no connection of the good client")
l=$(grep '^proxy ' "$TMP/be1.log" | tail -n 1 || true)
[[ $l == 'proxy family=tcp4 src=127.0.0.1:'*' identity=spiffe://test.mtls/ns/prod/sa/app1' ]] ||
	p+=("the backend's header line is not ours: '$l'")
verdict "a client whose header fits: the backend decodes our header, then the bytes" \
	"${p[@]+"${p[@]}"}" -- "backend log:" "$(cat -- "$TMP/be1.log")"
stop_bg "$SRV_PID"
stop_bg "$BE_PID"

# ==========================================================================================
echo "# 2. certificate fields cannot forge log lines or fields (logfmt)"

# A client whose subject is made to forge, in its O: a NEL (a line break to some readers), a
# terminal escape, a newline and a field of its own (OpenSSL escapes the C0 controls of a
# subject, the log the rest). The same in the CN of a client without SANs (so that its CN
# would be its identity) refuses the certificate: the refusal is one clean line too.
EVIL=$'app\xc2\x85\x1b[31mred\n reason=ok'
client_cert evil "/O=$EVIL/CN=app" ""
client_cert evilcn "/CN=$EVIL" ""

# check_logfmt.pl: every line is one whole logfmt event (ts, level, event, then key=value
# pairs, values bare or quoted with backslash escapes) without control bytes, C1 controls,
# line or paragraph separators or bidi controls; prints "bad LINE: WHY" for each that is not,
# and "keys EVENT: KEY..." for each line.
cat >"$TMP/check_logfmt.pl" <<'EOF'
while (my $line = <STDIN>) {
	chomp $line;
	if ($line =~ /[\x00-\x1f\x7f]|\xc2[\x80-\x9f]|\xe2\x80[\xa8-\xae]|\xe2\x81[\xa6-\xa9]/) {
		print "bad $.: a control byte or character\n";
		next;
	}
	if ($line !~ /^ts=\S+ level=[a-z]+ event=([a-z_]+)/) {
		print "bad $.: does not start with ts, level and event\n";
		next;
	}
	my $event = $1;
	my @keys;
	while ($line =~ /\G([a-z_]+)=("(?:[^"\\]|\\.)*"|[^ "]*)(?: |$)/gc) {
		push @keys, $1;
	}
	if ((pos($line) // 0) != length($line)) {
		print "bad $.: not key=value pairs from column ", pos($line) // 0, "\n";
		next;
	}
	print "keys $event: @keys\n";
}
EOF

start_backend "$TMP/be2.log"
start_bg "$TMP/srv2.log" "$MTLS" server --listen 127.0.0.1:0 --target "127.0.0.1:$BE_PORT" \
	"${SRV_TLS[@]}" --allow-any-identity --log-format logfmt --workers 1 --drain-timeout 1s
S2_PID=$BG_PID
wait_for_line "$TMP/srv2.log" 'event=listening' "$READY_LIMIT" "$S2_PID" ||
	_lib_die "the logfmt server did not start: $(cat -- "$TMP/srv2.log")"
S2_PORT=$(sed -n 's/.* event=listening .*address=127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$TMP/srv2.log")
s_client_send "127.0.0.1:$S2_PORT" "$TMP/hello.txt" "$TMP/sc2.log" "$TMP/evil"
s_client_send "127.0.0.1:$S2_PORT" "$TMP/hello.txt" "$TMP/sc2cn.log" "$TMP/evilcn"
p=()
wait_for_line "$TMP/srv2.log" 'event=conn_close' 5 || p+=("no conn_close line")
wait_for_line "$TMP/srv2.log" 'event=handshake_refused .*reason=bad_certificate' 5 ||
	p+=("no handshake_refused line for the CN with control bytes")
stop_bg "$S2_PID"
stop_bg "$BE_PID"
checked=$(perl "$TMP/check_logfmt.pl" <"$TMP/srv2.log")
bad=$(grep '^bad ' <<<"$checked" || true)
[ -z "$bad" ] || p+=("lines that are not one clean event:" "$bad")
keys=$(grep '^keys conn_open:' <<<"$checked" || true)
[ "$keys" = "keys conn_open: ts level event conn peer identity subject serial rule tls cipher resumed" ] ||
	p+=("conn_open does not have exactly its own keys: '$keys'")
want='subject="CN=app,O=app\u0085\\1B[31mred\\0A reason=ok"'
grep -qF -- " $want " "$TMP/srv2.log" || p+=("no conn_open with $want")
[ "$(grep -c 'event=conn_' "$TMP/srv2.log")" = 2 ] || p+=("not exactly two conn_ lines")
verdict "a subject with NEL, ESC, newline and ' reason=ok': one quoted, escaped value on one line; such a CN is refused" \
	"${p[@]+"${p[@]}"}" -- "log (escaped by cat -v):" "$(cat -v "$TMP/srv2.log")"

# ==========================================================================================
echo "# 3. unix listen sockets get --listen-mode (default 0660), whatever the umask"

CON_TLS=(--cert "$C/client-chain.pem" --key "$C/client.key" --ca "$C/ca.pem")

# unix_daemon NAME ROLE ARGS... : `mtls ROLE ARGS` under umask 000, until it listens; then
# MODE is the octal mode of $TMP/NAME.sock, and the daemon is stopped.
unix_daemon() {
	local name=$1 role=$2
	shift 2
	MODE=""
	start_bg "$TMP/$name.log" bash -c 'umask 000 && exec "$@"' umask000 "$MTLS" "$role" \
		--listen "unix:$TMP/$name.sock" --workers 2 --drain-timeout 1s "$@"
	if wait_for_line "$TMP/$name.log" '"event":"listening"' "$READY_LIMIT" "$BG_PID"; then
		MODE=$(stat -c %a -- "$TMP/$name.sock" 2>/dev/null || echo "no socket")
	else
		MODE="did not start: $(cat -- "$TMP/$name.log")"
	fi
	stop_bg "$BG_PID"
}

unix_daemon con-default connector --server 127.0.0.1:1 "${CON_TLS[@]}"
p=()
[ "$MODE" = 660 ] || p+=("mode $MODE, expected 660")
verdict "connector, unix socket under umask 000: mode 0660 by default" "${p[@]+"${p[@]}"}"

unix_daemon con-0600 connector --server 127.0.0.1:1 "${CON_TLS[@]}" --listen-mode 0600
p=()
[ "$MODE" = 600 ] || p+=("mode $MODE, expected 600")
verdict "connector --listen-mode 0600: mode 0600" "${p[@]+"${p[@]}"}"

printf 'listen-mode 0640\nallow-any-identity\n' >"$TMP/mode.conf"
unix_daemon srv-conf server --target 127.0.0.1:1 "${SRV_TLS[@]}" --config "$TMP/mode.conf"
p=()
[ "$MODE" = 640 ] || p+=("mode $MODE, expected 640")
verdict "server, 'listen-mode 0640' in a --config file: mode 0640" "${p[@]+"${p[@]}"}"

# bad_mode NAME WANT ROLE ARGS... : `mtls ROLE ARGS` exits 2 with one line on stderr that
# says WANT, and leaves no socket behind
bad_mode() {
	local name=$1 want=$2 role=$3 p=()
	shift 2
	run "$MTLS" "$@"
	[ "$RC" = 2 ] || p+=("exit status $RC, expected 2")
	[ -n "$ERR" ] && [ "$(printf '%s\n' "$ERR" | wc -l)" = 1 ] || p+=("stderr is not one line")
	[[ $ERR == "mtls $role: "*"$want"* ]] || p+=("stderr does not say '$want'")
	[ ! -e "$TMP/bad.sock" ] || p+=("a socket was made")
	verdict "$name" "${p[@]+"${p[@]}"}" -- "stderr:" "$ERR"
}
CON_BAD=(connector --listen "unix:$TMP/bad.sock" --server 127.0.0.1:1 "${CON_TLS[@]}")
bad_mode "connector --listen-mode 0666: refused (every local user would use its identity)" \
	"--listen-mode 0666 lets every local user connect" "${CON_BAD[@]}" --listen-mode 0666
bad_mode "--listen-mode 999: refused (not octal)" \
	"--listen-mode '999': give the socket's permissions in octal" "${CON_BAD[@]}" \
	--listen-mode 999
bad_mode "--listen-mode 01777: refused (more than 0777)" "--listen-mode '01777': give" \
	"${CON_BAD[@]}" --listen-mode 01777
bad_mode "--listen-mode rw-rw----: refused" "--listen-mode 'rw-rw----': give" \
	"${CON_BAD[@]}" --listen-mode rw-rw----
bad_mode "server --listen-mode with a TCP --listen: refused" \
	"--listen-mode is for a unix:/path --listen address" server --listen 127.0.0.1:0 \
	--target 127.0.0.1:1 "${SRV_TLS[@]}" --allow-any-identity --listen-mode 0600

# ==========================================================================================
echo "# 4. the daemon's own certificate: expired refuses to start or reload; renewal due warns"

# A small `openssl ca` over the zoo's issuing CA, in $TMP, for certificates with any dates.
mkdir -p -- "$TMP/ca/new"
: >"$TMP/ca/index.txt"
echo 1000 >"$TMP/ca/serial"
cat >"$TMP/ca/ca.cnf" <<EOF
[ ca ]
default_ca = tmp_ca
[ tmp_ca ]
dir = $TMP/ca
database = \$dir/index.txt
serial = \$dir/serial
new_certs_dir = \$dir/new
certificate = $C/int.pem
private_key = $C/int.key
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[ any ]
commonName = supplied
[ server_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = DNS:server.test, IP:127.0.0.1
EOF
# dated_server NAME FROM TO : a server certificate valid from FROM to TO (date -d texts):
# $TMP/NAME-chain.pem, $TMP/NAME.key
dated_server() {
	local name=$1 from to
	from=$(date -u -d "$2" +%Y%m%d%H%M%SZ)
	to=$(date -u -d "$3" +%Y%m%d%H%M%SZ)
	run openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$TMP/$name.key" -subj /CN=server.test -out "$TMP/$name.csr"
	[ "$RC" = 0 ] || _lib_die "openssl req for $name failed: $ERR"
	chmod 600 -- "$TMP/$name.key"
	run openssl ca -batch -config "$TMP/ca/ca.cnf" -notext -in "$TMP/$name.csr" \
		-out "$TMP/$name.pem" -extensions server_ext -startdate "$from" -enddate "$to"
	[ "$RC" = 0 ] || _lib_die "openssl ca for $name failed: $ERR"
	cat -- "$TMP/$name.pem" "$C/int.pem" >"$TMP/$name-chain.pem"
}
# 20 of its 25 days gone: less than a third of its lifetime left
dated_server due "-20 days" "+5 days +1 hour"

# refused_start NAME WANT ROLE ARGS... : exit 2, one line on stderr saying WANT
refused_start() {
	local name=$1 want=$2 role=$3 p=()
	shift 2
	run "$MTLS" "$@"
	[ "$RC" = 2 ] || p+=("exit status $RC, expected 2")
	[ -n "$ERR" ] && [ "$(printf '%s\n' "$ERR" | wc -l)" = 1 ] || p+=("stderr is not one line")
	[[ $ERR == "mtls $role: $want" ]] || p+=("stderr is not 'mtls $role: $want'")
	verdict "$name" "${p[@]+"${p[@]}"}" -- "stdout:" "$OUT" "stderr:" "$ERR"
}
refused_start "server with an expired certificate: exit 2, says when it expired" \
	"own certificate $C/expired-server-chain.pem expired at 2021-01-01T00:00:00Z; renew it" \
	server --listen 127.0.0.1:0 --target 127.0.0.1:1 --cert "$C/expired-server-chain.pem" \
	--key "$C/expired-server.key" --ca "$C/ca.pem" --allow-any-identity
refused_start "connector with an expired certificate: exit 2, says when it expired" \
	"own certificate $C/expired-client-chain.pem expired at 2021-01-01T00:00:00Z; renew it" \
	connector --listen 127.0.0.1:0 --server 127.0.0.1:1 --cert "$C/expired-client-chain.pem" \
	--key "$C/expired-client.key" --ca "$C/ca.pem"

p=()
start_tunnel_server "$TMP/srv4due.log" --target 127.0.0.1:1 --cert "$TMP/due-chain.pem" \
	--key "$TMP/due.key" --ca "$C/ca.pem" --allow-any-identity "${DAEMON[@]}"
l=$(grep -F '"event":"cert_expiring"' "$TMP/srv4due.log" || true)
[[ $l == *'"level":"warn"'* ]] || p+=("no cert_expiring warning")
[[ $l == *"\"message\":\"5 days left of its 25 days: own certificate $TMP/due-chain.pem expires at "*"; renew it\""* ]] ||
	p+=("the warning does not say what is due: $l")
verdict "server whose certificate has 5 of its 25 days left: starts, warns cert_expiring" \
	"${p[@]+"${p[@]}"}" -- "server log:" "$(cat -- "$TMP/srv4due.log")"
stop_bg "$SRV_PID"

# reloads: the live certificate is the zoo's (a year, fresh); then an expired one is refused
# and the fresh one stays in service; then the one due for renewal is taken, with a warning
W4=$TMP/case4
mkdir -p -- "$W4"
cp -- "$C/server-chain.pem" "$W4/srv.pem"
cp -- "$C/server.key" "$W4/srv.key"
chmod 600 -- "$W4/srv.key"
start_backend "$TMP/be4.log"
start_tunnel_server "$TMP/srv4.log" --target "127.0.0.1:$BE_PORT" --cert "$W4/srv.pem" \
	--key "$W4/srv.key" --ca "$C/ca.pem" --allow-any-identity --watch-interval 0 "${DAEMON[@]}"
S4_PID=$(daemon_pid "$TMP/srv4.log")
p=()
[ "$(grep -cF '"event":"cert_expiring"' "$TMP/srv4.log")" = 0 ] || p+=("a fresh certificate was warned about")
verdict "server with a fresh certificate: no cert_expiring warning" "${p[@]+"${p[@]}"}" -- \
	"server log:" "$(cat -- "$TMP/srv4.log")"

p=()
cp -- "$C/expired-server.key" "$W4/srv.key"
cp -- "$C/expired-server-chain.pem" "$W4/srv.pem"
kill -HUP "$S4_PID"
if wait_for_line "$TMP/srv4.log" '"event":"reload_failed"' 5; then
	l=$(grep -F '"event":"reload_failed"' "$TMP/srv4.log")
	[[ $l == *'"reason":"expired"'* ]] || p+=("reload_failed does not give reason expired: $l")
	[[ $l == *"\"message\":\"own certificate $W4/srv.pem expired at 2021-01-01T00:00:00Z; renew it\""* ]] ||
		p+=("reload_failed does not say the certificate expired: $l")
else
	p+=("no reload_failed after SIGHUP with an expired certificate")
fi
[ "$(grep -cF '"event":"reload"' "$TMP/srv4.log")" = 0 ] || p+=("the expired certificate was reloaded")
# the fresh certificate still serves: a client that checks the server's dates gets through
s_client_send "127.0.0.1:$SRV_PORT" "$TMP/hello.txt" "$TMP/sc4.log" "$C/client"
wait_for_line "$TMP/be4.log" '^conn close bytes=6$' 5 ||
	p+=("a client could not get through after the refused reload: $(cat -- "$TMP/sc4.log")")
verdict "SIGHUP with an expired certificate: reload_failed expired, the current one stays in service" \
	"${p[@]+"${p[@]}"}" -- "server log:" "$(cat -- "$TMP/srv4.log")"

p=()
cp -- "$TMP/due.key" "$W4/srv.key"
cp -- "$TMP/due-chain.pem" "$W4/srv.pem"
kill -HUP "$S4_PID"
wait_for_line "$TMP/srv4.log" '"event":"reload"' 5 || p+=("no reload of the certificate due for renewal")
wait_for_line "$TMP/srv4.log" '"event":"cert_expiring".*"file":"'"$W4/srv.pem"'"' 5 ||
	p+=("no cert_expiring warning at the reload")
verdict "SIGHUP with a certificate due for renewal: reloaded, with a cert_expiring warning" \
	"${p[@]+"${p[@]}"}" -- "server log:" "$(cat -- "$TMP/srv4.log")"
stop_bg "$SRV_PID"
stop_bg "$BE_PID"

# ==========================================================================================
echo "# 5. --allow-email: a client with an email SAN"

client_cert alice "/CN=alice" "email:alice@example.org"
client_cert mallory "/CN=mallory" "email:mallory@example.com"
printf 'allow-email *@example.org\n' >"$TMP/email.conf"
start_backend "$TMP/be5.log"
start_tunnel_server "$TMP/srv5.log" --target "127.0.0.1:$BE_PORT" "${SRV_TLS[@]}" \
	--config "$TMP/email.conf" --allow-email bob@example.net "${DAEMON[@]}"
p=()
s_client_send "127.0.0.1:$SRV_PORT" "$TMP/hello.txt" "$TMP/sc5a.log" "$TMP/alice"
wait_for_line "$TMP/be5.log" '^conn close bytes=6$' 5 ||
	p+=("alice@example.org did not reach the backend: $(cat -- "$TMP/sc5a.log")")
# (queued before the bytes went on, but the log thread may write it after the backend closed)
wait_for_line "$TMP/srv5.log" '"event":"conn_open".*"rule":"email:\*@example\.org"' 5 ||
	p+=("no conn_open admitted by the rule email:*@example.org")
verdict "allow-email *@example.org (config file): alice@example.org gets through" \
	"${p[@]+"${p[@]}"}" -- "server log:" "$(cat -- "$TMP/srv5.log")"
p=()
s_client_send "127.0.0.1:$SRV_PORT" "$TMP/hello.txt" "$TMP/sc5m.log" "$TMP/mallory"
wait_for_line "$TMP/srv5.log" '"event":"handshake_refused".*"reason":"identity_not_allowed"' 5 ||
	p+=("mallory@example.com was not refused as identity_not_allowed")
[ "$(grep -c '^conn open' "$TMP/be5.log")" = 1 ] || p+=("the backend saw mallory's connection")
verdict "--allow-email bob@example.net, *@example.org: mallory@example.com is refused" \
	"${p[@]+"${p[@]}"}" -- "server log:" "$(cat -- "$TMP/srv5.log")"
stop_bg "$SRV_PID"
stop_bg "$BE_PID"

finish
