#!/usr/bin/env bash
# Run ON THE GPU MACHINE last in a call whose own commands wrote under $OUT after a script of this folder had ended:
# packs everything under $OUT into $OUT/0-all.tar.gz again (env.sh's exit trap), so that the files beyond the eight
# the device tool brings back come back too (session 33's first call lost its timeline's log that way: written after
# bandwidth_ab.sh had packed).
#
#   device run: AB_KEYS= AB_GRID="32768:8" bash scripts/device/bandwidth_ab.sh; build-x/tests/test_kernels \
#                 --gtest_filter='*Timeline*' > $OUT/timeline.log 2>&1; bash scripts/device/pack.sh
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
