# Sourced by the scripts beside it: moves to the repository root ($root) and makes $out, where logs and
# results go ($OUT on the GPU machine, whose files come back; else ./device-out).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
out="${OUT:-$root/device-out}"
mkdir -p "$out"
# At exit, everything under $out packed into one archive, $out/0-all.tar.gz: the device tool brings back 8
# files at most (the first by name, this one among them), so logs that do not come back alone still do.
# Scripts run one after another in a call each repack it.
trap 'tar -C "$out" --exclude="./0-all.tar.gz*" -czf "$out/0-all.tar.gz.part" . 2>/dev/null &&
      mv -f "$out/0-all.tar.gz.part" "$out/0-all.tar.gz"' EXIT
