#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what the build needs, fetches
# the sample photos, then runs every test (unit, integration, doc).
#
#   scripts/test.sh            # what CI runs (.ci/run)
#   scripts/test.sh codec      # extra arguments go to `cargo test` (a name filter)
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
