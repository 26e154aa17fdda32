#!/usr/bin/env bash
# Install the Debian 12 packages mtls needs to build and test. Idempotent.
set -euo pipefail

packages=(
	build-essential cmake pkg-config    # toolchain
	libssl-dev openssl                  # OpenSSL 3: the library and the independent CLI peer
	libcmocka-dev                       # unit tests
	libsqlite3-dev sqlite3              # the CA inventory (and its CLI, for tests)
	libpq-dev                           # the CA inventory on PostgreSQL (several CA nodes)
	libev-dev libmicrohttpd-dev libjansson-dev  # the daemons: event loop, metrics HTTP, JSON logs
	libcurl4-openssl-dev                # mtls enroll/renew: the CA service's client
	libsystemd-dev                      # sd_notify, the watchdog, socket activation
	libseccomp-dev                      # the daemons' system call allowlist (common/sandbox.c)
	clang libclang-rt-14-dev            # libFuzzer targets
	clang-format                        # style check
	curl stunnel4 postgresql iproute2   # real peers and tools of the integration tests
	bc                                  # bench/ arithmetic
	strace                              # fault injection in the tests (kill at each fsync, ENOSPC)
	python3                             # a plain HTTP server serving bad CRLs (test_tunnel_crl_url)
	groff-base man-db                   # the generated man pages checked (test_docs_generated)
	dpkg-dev debhelper lintian fakeroot # scripts/package.sh: the Debian packages, checked
	openjdk-17-jdk-headless             # javac, keytool: the Java guide's test (test_java_client)
	systemd                             # systemd-analyze, systemd-socket-activate (test_systemd_*; not run)
	python3-psycopg2                    # a second PostgreSQL client library (test_pg_native)
	libp11-kit-dev                      # PKCS#11's header, for common/pkcs11.c's login
	libengine-pkcs11-openssl softhsm2 opensc  # PKCS#11 keys: OpenSSL's engine, a token, pkcs11-tool (test_pkcs11, test_ca_pkcs11)
	gdb                                 # gcore: the secrets test searches the daemons' cores
)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "install-deps: all packages present"
	exit 0
fi
# root (or sudo) only when something is missing: a user whose machine has every package
# builds and tests without either
sudo=""
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || {
		echo "install-deps: missing ${missing[*]}: run as root, install sudo, or install them with apt-get" >&2
		exit 1
	}
	sudo=sudo
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
