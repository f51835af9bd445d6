#!/usr/bin/env bash
# Run HERE (not on the GPU machine): puts the sources of a commit (default HEAD) into .baseline (ignored), for
# scripts/device/bandwidth_ab.sh to build on the GPU machine beside the working tree, so that a kernel change's
# bandwidth rows are measured side by side with the code before it in one device call. Carry it: [".deps", ".baseline"].
# A second argument names another folder (.baseline-NAME, ignored too) for a further commit that bandwidth_ab.sh
# times beside the two (AB_OTHERS): carry it as well.
#
#   bash scripts/device/make_baseline.sh b801e54
#   bash scripts/device/make_baseline.sh s32-rows-3stage .baseline-stages
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
commit="${1:-HEAD}"
dir="${2:-.baseline}"
if ! git rev-parse --verify --quiet "$commit^{commit}" >/dev/null; then
  echo "make_baseline: no commit '$commit'" >&2
  exit 2
fi
if [[ "$dir" != .baseline && ! "$dir" =~ ^\.baseline-[A-Za-z0-9_-]+$ ]]; then
  echo "make_baseline: the folder must be .baseline or .baseline-NAME (letters, digits, _ and -), got '$dir'" >&2
  exit 2
fi
rm -rf "$dir.part" "$dir"
mkdir "$dir.part"
# (docs and fixtures are not needed to build the kernel test; they would only add to what the call carries)
git archive "$commit" | tar -x -C "$dir.part" --exclude='docs' --exclude='tests/fixtures'
git rev-parse "$commit" > "$dir.part/BASELINE_COMMIT"
mv "$dir.part" "$dir"
echo "make_baseline: $dir holds $(cut -c1-12 "$dir/BASELINE_COMMIT") ($(du -sh "$dir" | cut -f1))"
