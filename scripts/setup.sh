#!/usr/bin/env bash
# The README's first command: install what is needed, build, run the demo.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bash "$top/scripts/install-deps.sh"
bash "$top/scripts/build.sh" "$top/build"
bash "$top/scripts/demo.sh"
