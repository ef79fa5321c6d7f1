#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what the build needs, fetches
# the sample photos, then runs every test (unit, integration, doc).
#
#   scripts/test.sh            # what CI runs (.ci/run)
#   scripts/test.sh codec      # extra arguments go to `cargo test` (a name filter)
#
# Without extra arguments it ends with the SDK compatibility suite (scripts/compat.sh:
# the vendors' clients in a venv, through the proxy and direct; ~1.5 min cold, ~40 s warm,
# against the debug binary cargo test built; results in eval-out/compatibility.md).
# COMPAT=0 skips it; COMPAT=1 runs it after a filtered `cargo test` too.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# nasm gives mozjpeg its SIMD code (2–7× faster JPEG); without it the build still
# works, only slower. Install it where we can (root with apt), else carry on.
if ! command -v nasm >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test: installing nasm (SIMD JPEG) with apt-get"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nasm >/dev/null) \
      || echo "test: could not install nasm; mozjpeg builds without SIMD"
  else
    echo "test: nasm not found; mozjpeg builds without SIMD (install nasm for speed)"
  fi
fi

bash scripts/fetch_photos.sh

if cargo fmt --version >/dev/null 2>&1; then
  echo "test: cargo fmt --check"
  cargo fmt --all -- --check
fi

echo "test: cargo test (dependencies are built optimised: tests run real models)"
cargo test --locked "$@"

if [ "${COMPAT:-}" = 0 ] || { [ $# -gt 0 ] && [ "${COMPAT:-}" != 1 ]; }; then
  echo "test: SDK compatibility suite skipped (COMPAT=${COMPAT:-unset}, cargo test arguments: $#)"
  exit 0
fi
# The suite needs python3's venv and ensurepip (Debian: python3-venv).
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test: installing python3-venv with apt-get (for the SDK compatibility suite)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  fi
fi
BIN="${CARGO_TARGET_DIR:-target}/debug/adacompress"
case "$BIN" in /*) ;; *) BIN="$PWD/$BIN" ;; esac
if [ ! -x "$BIN" ]; then
  echo "test: $BIN missing after cargo test; building it"
  cargo build --locked --bin adacompress
fi
echo "test: SDK compatibility suite (scripts/compat.sh, $BIN)"
mkdir -p eval-out
ADACOMPRESS_BIN="$BIN" COMPAT_PHOTOS="$PWD/data/photos" \
  COMPAT_OUT_MD="$PWD/eval-out/compatibility.md" COMPAT_OUT_JSON="$PWD/eval-out/compatibility.json" \
  bash scripts/compat.sh
