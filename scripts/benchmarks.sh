#!/usr/bin/env bash
# Regenerates docs/benchmarks.md and the files under docs/bench/:
#  (a) per-photo CPU time of each stage (decode, resize, backbone, head, encode at
#      every quality) on one thread, medians of 25 runs, beside the decode + encode
#      floor measured in the same run;
#  (b) eval on the held-out split with the local backend running EfficientNet-Lite2
#      as the "cloud": the shipped agent vs every fixed quality vs the oracle;
#  (c) with LOAD=1 only: the load run, scripts/load_bench.sh (wrk, proxy + local backend,
#      ~6 more minutes; keep other work off the machine while it runs). Without it the
#      last docs/bench/load.md is rendered as it is.
# Release build; takes ~10 minutes on 2 cores (most of it Lite2 answering).
#   scripts/benchmarks.sh          # (a) + (b)
#   LOAD=1 scripts/benchmarks.sh   # (a) + (b) + (c)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/fetch_photos.sh
LITE2=$(bash scripts/lite2.sh)
cargo build --release --locked
BIN=target/release/adacompress
mkdir -p docs/bench
"$BIN" bench data/photos/objects/3.jpg data/photos/street/0.jpg data/photos/indoor/"$(ls data/photos/indoor | head -n 1)" \
  --runs 25 --out docs/bench/timing > /dev/null
"$BIN" eval --photos data/photos --upstream "local:$LITE2" --agent models/agent.json \
  --cache data/answers.sqlite --json docs/bench/eval-lite2.json --out-dir docs/bench | tee docs/bench/eval-lite2.txt
if [ "${LOAD:-0}" = 1 ]; then
  bash scripts/load_bench.sh
fi
python3 scripts/render_benchmarks.py > docs/benchmarks.md
echo "wrote docs/benchmarks.md"
