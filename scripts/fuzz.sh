#!/usr/bin/env bash
# Fuzzes the safetensors header parser: builds fuzz/ standalone with clang (libFuzzer, ASan, UBSan)
# in build-fuzz/ -- no libtorch needed -- and runs it for $1 seconds (default 60) over a seed corpus
# of small valid files written to a temporary directory. Exits non-zero on any finding; the input
# that triggered it is kept in build-fuzz/artifacts/.
#
#   scripts/fuzz.sh [seconds]
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || (( seconds < 1 )); then
  echo "usage: $0 [seconds]  (a positive whole number; got '$seconds')" >&2
  exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-fuzz"
target="fuzz_safetensors_header"

# The top-level project needs libtorch; fuzz/ builds on its own and compiles the parser sources
# directly, which is all the fuzzer needs.
CC=clang CXX=clang++ cmake -S "$root/fuzz" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target "$target"

work="$(mktemp -d "${TMPDIR:-/tmp}/vlm2mla-fuzz-XXXXXX")"
trap 'rm -rf "$work"' EXIT
corpus="$work/corpus"
mkdir -p "$corpus" "$build/artifacts"

# seed NAME JSON DATA_BYTES: u64 little-endian header length | JSON padded with spaces to a
# multiple of 8 (as the Python library writes) | DATA_BYTES zero bytes.
seed() {
  local name="$1" json="$2" data_bytes="$3"
  while (( ${#json} % 8 != 0 )); do json+=" "; done
  local n=${#json} i
  {
    for (( i = 0; i < 8; i++ )); do
      printf "\\x$(printf '%02x' $(( (n >> (8 * i)) & 255 )))"
    done
    printf '%s' "$json"
    head -c "$data_bytes" /dev/zero
  } > "$corpus/$name"
}
seed empty '{}' 0
seed metadata '{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}' 8
seed mixed '{"b":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]},"c":{"dtype":"I64","shape":[],"data_offsets":[8,16]},"e":{"dtype":"U8","shape":[0,3],"data_offsets":[16,16]},"m":{"dtype":"BOOL","shape":[3],"data_offsets":[16,19]}}' 19
seed ints '{"d":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},"h":{"dtype":"F16","shape":[1,1],"data_offsets":[8,10]},"i":{"dtype":"I32","shape":[1],"data_offsets":[12,16]},"j":{"dtype":"I16","shape":[1],"data_offsets":[16,18]},"k":{"dtype":"I8","shape":[2],"data_offsets":[18,20]}}' 24

dict="$work/safetensors.dict"
cat > "$dict" <<'DICT'
"\"__metadata__\""
"\"dtype\""
"\"shape\""
"\"data_offsets\""
"\"F64\""
"\"F32\""
"\"F16\""
"\"BF16\""
"\"I64\""
"\"I32\""
"\"I16\""
"\"I8\""
"\"U8\""
"\"BOOL\""
"18446744073709551615"
"9223372036854775808"
"-1"
"1e400"
"\\u0000"
"\x00\x00\x00\x00\x00\x00\x00"
DICT

set +e
"$build/$target" "$corpus" -dict="$dict" -max_total_time="$seconds" -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$build/artifacts/"
status=$?
set -e
if (( status != 0 )); then
  echo "fuzz: FAILED (exit $status); reproducer in $build/artifacts/" >&2
  exit "$status"
fi
echo "fuzz: no findings in ${seconds}s"
