#!/usr/bin/env bash
# Configure and build into build/ (or $1) with warnings as errors. Extra args go to cmake.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$top/build}
shift || true
cmake -S "$top" -B "$dir" -DMTLS_WERROR=ON "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)"
