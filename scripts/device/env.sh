# Sourced by the scripts beside it: moves to the repository root ($root) and makes $out, where logs and
# results go ($OUT on the GPU machine, whose files come back; else ./device-out).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
out="${OUT:-$root/device-out}"
mkdir -p "$out"
