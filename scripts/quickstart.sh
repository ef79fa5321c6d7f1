#!/usr/bin/env bash
# The main job on embedded defaults: no cloud account, no external server.
# Fetches the sample photos, builds in release (the same command as the Dockerfile), and
# runs `adacompress demo`: the built-in vision backend (EfficientNet-Lite0 behind the Google
# Vision wire format) and the proxy start in-process on loopback, the sample photos go
# through the proxy as a client would send them, then a scenery change (night shots), and
# the live pair audits, steps up and learns again, live.
# Output: a table on stdout; eval-out/demo.json, demo.csv and demo.svg.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/fetch_photos.sh
cargo build --release --locked
./target/release/adacompress demo --json eval-out/demo.json "$@"
