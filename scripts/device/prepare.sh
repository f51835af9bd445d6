#!/usr/bin/env bash
# Run HERE (a Debian machine with apt) before using the GPU machine: the GPU machine has CUDA, cmake,
# ninja, g++ and the torch wheel, but no package registry. This unpacks what the build needs from
# Debian's .debs into .deps/prefix (git-ignored), which the device call then carries:
#   - header-only and source packages: CLI11, nlohmann-json, GoogleTest sources, stb;
#   - the tokenizer's libraries, headers, .pc files and shared objects: PCRE2 (8-bit), utf8proc,
#     SentencePiece (libsentencepiece0 bundles its own protobuf-lite: it needs only libc, libstdc++,
#     libgcc_s, glibc <= 2.34);
#   - pkgconf, since the GPU machine may have no pkg-config; scripts/device/pkg-config runs it over
#     .deps/prefix alone.
# Static archives, docs and man pages are dropped to keep .deps small (it travels with every call).
#
#   scripts/device/prepare.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
deps="$root/.deps"
pkgs=(libcli11-dev nlohmann-json3-dev googletest libstb-dev libstb0
      libpcre2-dev libpcre2-8-0 libutf8proc-dev libutf8proc2 libsentencepiece-dev libsentencepiece0
      pkgconf-bin libpkgconf3)
# .deps/ready holds the package list it was made from: a different list (an older .deps) rebuilds it.
stamp="${pkgs[*]}"
lib="$deps/prefix/usr/lib/x86_64-linux-gnu"
if [[ -f "$deps/ready" && "$(cat "$deps/ready")" == "$stamp" &&
      -f "$deps/prefix/usr/include/stb/stb_image.h" && -f "$lib/libsentencepiece.so.0" &&
      -x "$deps/prefix/usr/bin/pkgconf" ]]; then
  exit 0
fi
rm -rf "$deps"
mkdir -p "$deps/debs" "$deps/prefix"
cd "$deps/debs"
apt-get download "${pkgs[@]}" >/dev/null
for f in *.deb; do dpkg -x "$f" "$deps/prefix"; done
rm -rf "$deps/debs"
find "$deps/prefix" -name '*.a' -delete
rm -rf "$deps/prefix/usr/share/doc" "$deps/prefix/usr/share/man" "$deps/prefix/usr/share/lintian"
# Every .so link the -dev packages ship must resolve inside .deps (libpcre2-dev's 16/32-bit and POSIX
# links point to runtimes not taken: drop those).
find "$lib" -xtype l -name '*.so' -print -delete | sed 's|^|dropped dangling link |'
for so in libpcre2-8.so libutf8proc.so libsentencepiece.so libsentencepiece_train.so; do
  test -e "$lib/$so" || { echo "prepare.sh: $lib/$so does not resolve" >&2; exit 1; }
done
echo "$stamp" > "$deps/ready"
du -sh "$deps"
