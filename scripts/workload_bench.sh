#!/usr/bin/env bash
# Issue 7's measurement: the calibrated agent (models/agent-calibrated.json, or AGENT=path) against
# every fixed (max side, quality) pair and the per-photo oracle, with the local backend
# running EfficientNet-Lite2 as the "cloud", on three workloads:
#   samples       the test split of the ai-benchmark sample photos (data/photos)
#   uploads       the test split of the uploads workload, minus the cross-source sources
#   cross-source  every photo of the sources never trained on (scripts/workloads.sh)
# Writes docs/bench/workloads/<workload>.{json,svg}, -summary.csv, -photos.csv,
# -table.csv (every photo × action), the CPU comparison paths.{md,csv,json}, and renders
# docs/bench/workloads.md.
# Answers are cached in data/answers.sqlite: ~15 minutes from an empty cache on
# 2 cores, ~2 minutes warm.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/workloads.sh
bash scripts/fetch_photos.sh
bash scripts/fetch_uploads.sh
LITE2=$(bash scripts/lite2.sh)
cargo build --release --locked
BIN=target/release/adacompress
AGENT=${AGENT:-models/agent-calibrated.json}
OUT=docs/bench/workloads
mkdir -p "$OUT"
run() {
  local name=$1; shift
  echo "workload_bench: $name"
  "$BIN" eval --agent "$AGENT" --upstream "local:$LITE2" --workload "$name" \
    --json "$OUT/$name.json" --out-dir "$OUT" "$@" | tee "$OUT/$name.txt"
}
run samples --photos data/photos --split test
run uploads --photos data/uploads --split test --exclude-sources "$CROSS_SOURCES"
run cross-source --photos data/uploads --split all --sources "$CROSS_SOURCES"
rm -f "$OUT"/*-table.json  # large; the CSV holds the same cells
# CPU of the agent's whole request path against a proxy fixed to the uploads workload's
# best pair (one thread, medians of 3 runs per photo, same run). Keep the machine quiet.
BEST=$(python3 -c 'import json,sys; b=json.load(open(sys.argv[1]))["best_fixed"]; print(b["policy"] if b and b["policy"]!="keep" else "q85@768")' "$OUT/uploads.json")
"$BIN" bench data/uploads --agent "$AGENT" --fixed "$BEST" --runs 3 --out "$OUT/paths" > /dev/null
python3 scripts/render_workloads.py "$OUT" "$AGENT" > docs/bench/workloads.md
echo "wrote docs/bench/workloads.md"
