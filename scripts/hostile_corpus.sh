#!/usr/bin/env bash
# Writes the generated hostile-image corpus (tests/common/hostile.rs: thin PNGs and JPEGs,
# progressive scan bombs, header and deflate bombs, CMYK, grayscale, 16-bit, EXIF-rotated,
# truncated, marker floods) to a folder, and runs each through the codec as the fuzz test
# does (docs/hostile-corpus.md is that table). Nothing is downloaded.
#
#   scripts/hostile_corpus.sh               # light corpus (what CI runs) into data/hostile
#   HEAVY=1 scripts/hostile_corpus.sh out/  # with the full-strength bombs
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir=${1:-data/hostile}
export ADACOMPRESS_HOSTILE_WRITE=$dir
if [ -n "${HEAVY:-}" ]; then export ADACOMPRESS_HOSTILE_HEAVY=1; fi
bash scripts/fetch_photos.sh >/dev/null
cargo test --release --locked --test fuzz hostile_corpus_through_the_codec -- --nocapture
echo "hostile_corpus: images in $dir"
