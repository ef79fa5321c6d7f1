#!/usr/bin/env bash
# The main job on embedded defaults: no cloud account, no external server.
# Fetches the sample photos, builds in release, and evaluates the shipped agent
# (models/agent.json) against every fixed JPEG quality and the per-photo oracle on
# the held-out photos, with the built-in local vision backend (EfficientNet-Lite0
# behind the Google Vision wire format) started in-process on loopback.
# Output: a table on stdout; eval-out/eval.json, CSV files and eval.svg.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/fetch_photos.sh
cargo run --release --locked -- eval --photos data/photos --agent models/agent.json \
  --upstream local --json eval-out/eval.json "$@"
