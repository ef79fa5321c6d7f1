#!/usr/bin/env bash
# The long fuzz run (issue 8's reliability suite): the seeded mutation fuzzer of
# tests/fuzz.rs over the seven protocol adapters, the answer parsers, the multipart and
# form parsers and the codec, plus the hostile-image corpus at full strength, in a release
# build. CI runs the same test with its default of 60,000 inputs (scripts/test.sh).
#
#   scripts/fuzz.sh              # 1,000,000 inputs, writes docs/fuzz.{md,json}
#   scripts/fuzz.sh 10000000     # more inputs
#   ADACOMPRESS_FUZZ_SEED=0x1234 scripts/fuzz.sh   # another seed
#
# A failing input is saved under target/fuzz-failures/ with a .txt saying how to replay
# it alone (ADACOMPRESS_FUZZ_REPLAY=target:n). Progress is printed every 50,000 inputs
# per target.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
iters=${1:-1000000}
export ADACOMPRESS_FUZZ_ITERS=$iters
export ADACOMPRESS_FUZZ_SUMMARY=docs/fuzz
export ADACOMPRESS_FUZZ_PROGRESS=${ADACOMPRESS_FUZZ_PROGRESS:-50000}
export ADACOMPRESS_FUZZ_JOURNAL=1
export ADACOMPRESS_HOSTILE_HEAVY=1
export ADACOMPRESS_HOSTILE_REPORT=docs/hostile-corpus
export ADACOMPRESS_FUZZ_COMMIT
ADACOMPRESS_FUZZ_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
bash scripts/fetch_photos.sh >/dev/null
echo "fuzz: $iters inputs, release build (tests/fuzz.rs)"
cargo test --release --locked --test fuzz -- --nocapture --test-threads 1
echo "fuzz: wrote docs/fuzz.md, docs/fuzz.json, docs/hostile-corpus.md, docs/hostile-corpus.json"
