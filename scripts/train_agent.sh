#!/usr/bin/env bash
# Regenerates the calibrated agent, models/agent-calibrated.json (and its .fit.json,
# .threshold.csv/.svg): trained on the train split of the
# sample photos and the uploads workload, except the sources held out for the
# cross-source test (scripts/workloads.sh), against the local backend running
# EfficientNet-Lite2 as the "cloud", for 97 % top-1 agreement with the original's
# answer. Every (photo, action) answer and upload size is cached in
# data/answers.sqlite: a rerun asks the backend nothing new. About 10 minutes on
# 2 cores from an empty cache, 1 minute from a warm one.
#
#   scripts/train_agent.sh [extra `adacompress train` flags]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/workloads.sh
bash scripts/fetch_photos.sh
bash scripts/fetch_uploads.sh
LITE2=$(bash scripts/lite2.sh)
cargo build --release --locked
target/release/adacompress train --photos data --exclude-sources "$CROSS_SOURCES" \
  --upstream "local:$LITE2" --out models/agent-calibrated.json --target-agreement 0.97 --seed 0 "$@"
