#!/usr/bin/env bash
# Run HERE (not on the GPU machine): puts the sources of a commit (default HEAD) into .baseline (ignored), for
# scripts/device/bandwidth_ab.sh to build on the GPU machine beside the working tree, so that a kernel change's
# bandwidth rows are measured side by side with the code before it in one device call. Carry it: [".deps", ".baseline"].
#
#   bash scripts/device/make_baseline.sh b801e54
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
commit="${1:-HEAD}"
if ! git rev-parse --verify --quiet "$commit^{commit}" >/dev/null; then
  echo "make_baseline: no commit '$commit'" >&2
  exit 2
fi
rm -rf .baseline.part .baseline
mkdir .baseline.part
# (docs and fixtures are not needed to build the kernel test; they would only add to what the call carries)
git archive "$commit" | tar -x -C .baseline.part --exclude='docs' --exclude='tests/fixtures'
git rev-parse "$commit" > .baseline.part/BASELINE_COMMIT
mv .baseline.part .baseline
echo "make_baseline: .baseline holds $(cut -c1-12 .baseline/BASELINE_COMMIT) ($(du -sh .baseline | cut -f1))"
