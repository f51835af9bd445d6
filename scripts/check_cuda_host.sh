#!/usr/bin/env bash
# The host code that only a libtorch with CUDA compiles (the `#ifdef VLM2MLA_WITH_CUDA` / `VLM2MLA_WITH_CUDA_KERNELS`
# branches: the kernels' dispatch in ops.cpp, the CUDA graphs, the CUDA tests), syntax-checked on a CPU machine, so
# that a typo there shows here and in CI instead of costing a device call. Each such translation unit of
# build/compile_commands.json (scripts/build.sh makes it) is compiled with -fsyntax-only, both defines and the CUDA
# toolkit's headers, against the local libtorch's headers (Debian's ship c10/cuda and ATen/cuda; the one header
# their CMake would have generated, c10/cuda/impl/cuda_cmake_macros.h, is written empty into a temporary folder).
# Skips, saying why, where nvcc's headers or c10/cuda are missing. Exit status: the number of units that failed.
#
#   bash scripts/check_cuda_host.sh            (after scripts/build.sh)
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
db="$root/build/compile_commands.json"
[[ -f "$db" ]] || { echo "check_cuda_host: $db missing (run scripts/build.sh first)" >&2; exit 1; }
nvcc_bin="$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)"
cuda_inc="${CUDA_INCLUDE_DIR:-${nvcc_bin:+$(dirname "$(dirname "$nvcc_bin")")/include}}"
if [[ -z "$cuda_inc" || ! -f "$cuda_inc/cuda_runtime_api.h" ]]; then
  echo "check_cuda_host: skipped (no CUDA toolkit headers: nvcc not found)"
  exit 0
fi
torch_inc="$(python3 - "$db" <<'PY'
import json, os, re, sys
dirs = [inc for e in json.load(open(sys.argv[1])) for inc in re.findall(r"(?:-isystem\s+|-I)(\S+)", e["command"])]
for inc in dirs + ["/usr/include", "/usr/local/include"]:
    if os.path.isfile(os.path.join(inc, "c10", "cuda", "CUDAGuard.h")):
        print(inc)
        break
PY
)"
if [[ -z "$torch_inc" ]]; then
  echo "check_cuda_host: skipped (this libtorch's headers have no c10/cuda)"
  exit 0
fi
stub="$(mktemp -d)"
trap 'rm -rf "$stub"' EXIT
mkdir -p "$stub/c10/cuda/impl"
echo '#pragma once' > "$stub/c10/cuda/impl/cuda_cmake_macros.h"
python3 - "$db" "$root" "$stub" "$cuda_inc" <<'PY'
import json, os, shlex, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
db, root, stub, cuda_inc = sys.argv[1:5]
units = {}
for e in json.load(open(db)):
    f = e["file"]
    if not f.endswith(".cpp") or "/build" in f[len(root):] or not os.path.isfile(f):
        continue
    text = open(f, errors="replace").read()
    if "VLM2MLA_WITH_CUDA" not in text and "c10/cuda" not in text and "ATen/cuda" not in text:
        continue
    args = shlex.split(e["command"])
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a == "-o":
            skip = True
            continue
        if a in ("-c", f):
            continue
        out.append(a)
    out += ["-DVLM2MLA_WITH_CUDA=1", "-DVLM2MLA_WITH_CUDA_KERNELS=1", "-I" + stub, "-isystem", cuda_inc,
            "-fsyntax-only", f]
    units[os.path.relpath(f, root)] = (out, e["directory"])
def check(name):
    cmd, cwd = units[name]
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    return name, r.returncode, r.stderr
failed = 0
with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
    for name, rc, err in pool.map(check, sorted(units)):
        print(f"check_cuda_host: {name}: {'ok' if rc == 0 else 'FAILED'}")
        if rc != 0:
            failed += 1
            sys.stdout.write(err[-6000:])
sys.exit(failed)
PY
