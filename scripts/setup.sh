#!/usr/bin/env bash
# The README's first command: install what is needed (root or sudo only when something is
# missing), build, run the demo (scripts/demo.sh: the main job, then the library examples).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bash "$top/scripts/install-deps.sh"
bash "$top/scripts/build.sh" "$top/build"
bash "$top/scripts/demo.sh"
