# Sourced by the scripts beside it: moves to the repository root ($root) and makes $out, where logs and
# results go ($OUT on the GPU machine, whose files come back; else ./device-out).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
out="${OUT:-$root/device-out}"
mkdir -p "$out"
# At exit, everything under $out packed into one archive, $out/0-all.tar.gz: the device tool brings back 8
# files at most (the first by name, this one among them), so logs that do not come back alone still do.
# Scripts run one after another in a call each repack it. The archive is written outside $out, then moved
# in: written inside, it changed the directory tar was reading, tar exited 1 ("file changed as we read it")
# and a stale archive came back beside a complete .part (2026-11-29).
trap 'part="$(mktemp "${TMPDIR:-/tmp}/vlm2mla-out.XXXXXX")" &&
      tar -C "$out" --exclude="./0-all.tar.gz*" -czf "$part" . 2>/dev/null &&
      mv -f "$part" "$out/0-all.tar.gz"; rm -f "$out/0-all.tar.gz.part" "${part:-}"' EXIT

# A profiling case "variant:context:batch[:decode]" (variant gqa, or mla:D:CACHE) as bench arguments: sets the array
# `case_args` (Qwen2.5-VL-7B's config with random weights, a synthetic cache, `tokens` new tokens, no warm-up; the
# decode mode the case names, else static). Shared by profile_decode.sh and ncu_step.sh.
bench_case_args() {
  local c="$1" tokens="$2" f
  IFS=: read -r -a f <<< "$c"
  case_args=(--random-weights configs/qwen2.5-vl-7b.json --new-tokens "$tokens" --warmup 0 --synthetic-cache
             --device cuda --dtype bfloat16)
  if [[ "${f[0]}" == mla ]]; then
    case_args+=(--mla-kv-rank "${f[1]}" --mla-rope-dims 32 --kv-cache "${f[2]}" --kv-group 32 --kv-window 128)
    f=("${f[@]:3}")
  else
    f=("${f[@]:1}")
  fi
  case_args+=(--context "${f[0]}" --batch "${f[1]}" --decode "${f[2]:-static}")
}
