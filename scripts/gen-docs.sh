#!/usr/bin/env bash
# Regenerate docs/config.md, docs/man/ and completion/mtls from the commands' option tables
# (mtls __generate-docs, cli/options_doc.c) into the source tree. Commit the result: a test
# (test_docs_generated) fails while they differ from what the tables say.
# Usage: scripts/gen-docs.sh [BUILD_DIR]   (default: build; the mtls binary must be built)
set -euo pipefail
src=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$src/build}
[ -x "$build/mtls" ] || { echo "gen-docs: $build/mtls not found: build first (cmake --build $build)" >&2; exit 1; }
"$build/mtls" __generate-docs "$src"
echo "gen-docs: wrote docs/config.md, docs/man/ and completion/mtls"
