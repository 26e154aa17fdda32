#!/usr/bin/env bash
# The README's second command: the whole test suite.
#   1. build with -Werror and run every test (unit, integration with real peers)
#   2. build with AddressSanitizer + UndefinedBehaviorSanitizer and run every test again
#   3. build with ThreadSanitizer and run the tests where threads share state: handshakes on
#      one endpoint from several threads, and the daemons (one loop per worker) end to end
#   4. build the libFuzzer targets with clang and run each over its corpus, bounded
#   5. check formatting with clang-format
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
# Two more jobs than cores: the lifecycle tests (renewal, the fleet, the agent) spend most of
# their minutes asleep, waiting for certificates to come due (on 2 cores: 4 jobs; the suite's
# test time is about three times its wall time at 3 jobs).
jobs=$(($(nproc) + 2))
status=0
step() { printf '\n==== %s\n' "$*"; }

step "build (warnings are errors)"
bash "$top/scripts/build.sh" "$top/build" -DMTLS_TEST_HOOKS=ON
step "tests"
(cd "$top/build" && ctest -j"$jobs" --output-on-failure) || status=1

step "build with ASan + UBSan"
bash "$top/scripts/build.sh" "$top/build-asan" -DMTLS_TEST_HOOKS=ON -DMTLS_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
step "tests under ASan + UBSan"
# not again under the sanitizers: the checks of files and tools, which run no code of ours
# that the other tests do not run (generated docs, completion, unit files, the install
# layout, the Java and Go guides' peers; the Debian packages skip themselves)
(cd "$top/build-asan" && ctest -j"$jobs" --output-on-failure \
	-E '^integration_test_(docs_generated|completion|systemd_units|install|java_client|go_client)$') ||
	status=1

step "build with ThreadSanitizer"
bash "$top/scripts/build.sh" "$top/build-tsan" -DMTLS_TEST_HOOKS=ON -DMTLS_SANITIZE_THREAD=ON -DCMAKE_BUILD_TYPE=Debug
step "threaded tests under ThreadSanitizer"
(cd "$top/build-tsan" && ctest -j"$jobs" --output-on-failure \
	-R '^(gen_certs|unit_test_(handshake|verify|endpoint|ocsp_handshake|ocsp_store|tunnel_resolver|pkcs11)|integration_test_tunnel_(interop|hardening|threads|recheck|park|crl_url|crl_push|crl_sources|sighup_config|ocsp|failover|failover_chaos|sections)|integration_test_ca_serve|integration_test_pkcs11)$') ||
	status=1

if command -v clang >/dev/null; then
	step "fuzz targets (clang, libFuzzer, bounded runs)"
	CC=clang bash "$top/scripts/build.sh" "$top/build-fuzz" -DMTLS_FUZZ=ON -DMTLS_TESTS=OFF
	(cd "$top/build-fuzz" && ctest -j"$jobs" --output-on-failure) || status=1
else
	echo "clang not installed: skipping fuzz targets (run scripts/install-deps.sh)"
	status=1
fi

step "format (clang-format)"
files=$(cd "$top" && git ls-files '*.c' '*.h' 2>/dev/null || find include lib cli tests examples -name '*.[ch]')
if (cd "$top" && clang-format --dry-run --Werror $files); then
	echo "format ok"
else
	echo "format: run clang-format -i on the files above"
	status=1
fi

step "result"
if [ $status -eq 0 ]; then echo "all test steps passed"; else echo "some test steps FAILED"; fi
exit $status
