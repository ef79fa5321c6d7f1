#!/usr/bin/env bash
# Regenerates the shipped agent, models/agent.json: trained on the train split of
# the sample photos against the local backend running EfficientNet-Lite2 (a
# different, larger model than the agent's own Lite0 backbone, as a cloud would be),
# aiming at 97 % top-1 agreement with the original's answer. Every (photo, action)
# answer is cached in data/answers.sqlite: a rerun asks the backend nothing new.
# About 10 minutes on 2 cores from an empty cache, 2 minutes from a warm one.
#
#   scripts/train_agent.sh [extra `adacompress train` flags]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/fetch_photos.sh
LITE2=$(bash scripts/lite2.sh)
cargo build --release --locked
target/release/adacompress train --photos data/photos --upstream "local:$LITE2" \
  --out models/agent.json --target-agreement 0.97 --feedback full --augment 4 --epochs 8 \
  --seed 0 "$@"
