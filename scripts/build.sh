#!/usr/bin/env bash
# Configures and builds vlm2mla (Release) in build/. Installs missing system packages first.
#
#   scripts/build.sh [extra cmake args...]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/install-deps.sh
# ccache hits across clones and worktrees: paths below the checkout are hashed relative to it.
export CCACHE_BASEDIR="$root"
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
if [[ ! -f build/CMakeCache.txt ]]; then
  cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "$@"
elif (( $# > 0 )); then
  cmake -S . -B build "$@"
fi
cmake --build build -j"$(nproc)"
