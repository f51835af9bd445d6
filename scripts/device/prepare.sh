#!/usr/bin/env bash
# Run HERE (a Debian machine with apt) before using the GPU machine: the GPU machine has CUDA, cmake,
# ninja, g++ and the torch wheel, but no package registry. This unpacks the header-only and source
# packages the build needs (CLI11, nlohmann-json, GoogleTest sources, stb) from Debian's .debs into
# .deps/ (git-ignored), which the device call then carries.
#
#   scripts/device/prepare.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
deps="$root/.deps"
if [[ -f "$deps/ready" && -f "$deps/prefix/usr/include/stb/stb_image.h" ]]; then exit 0; fi
rm -rf "$deps"
mkdir -p "$deps/debs" "$deps/prefix"
cd "$deps/debs"
apt-get download libcli11-dev nlohmann-json3-dev googletest libstb-dev libstb0 >/dev/null
for f in *.deb; do dpkg -x "$f" "$deps/prefix"; done
rm -rf "$deps/debs"
touch "$deps/ready"
du -sh "$deps"
