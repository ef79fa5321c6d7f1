#!/usr/bin/env bash
# The stream benchmark of issue 15 (section 4): >= 4,500 distinct uploads in three deployments
# (day-uploads, day-samples, night = a scenery change) go one at a time through a real
# `adacompress serve` (its default agent) to `adacompress backend` running EfficientNet-Lite2,
# through a recording hop that counts every upstream byte, estimation included. The fixed pairs
# in hindsight come from a serve with agent.fixed on every 5th upload of each deployment.
#
#   scripts/stream_bench.sh                 # full: data/stream (1,500 per deployment) -> docs/bench/stream.*
#   scripts/stream_bench.sh --short 40      # CI: the first 40 of each deployment (data/stream-short-40) -> docs/bench/stream-short.*
#   scripts/stream_bench.sh --fixed q85@768 # the stream with serve fixed to one pair (baseline)
#
# Measured on 2 cores (docs/bench/notes.md): --short 40 ~2 min cold (33 s with warm caches),
# --short 250 ~10 min. Answers of the backend asked directly and of the fixed pairs are
# cached in .cache/stream-answers.json (by sha256 of the upload), so reruns skip them; the
# cache is seeded from the committed docs/bench/stream-answers.json.gz (Lite2's answers to
# every original and to the fixed pairs the last runs measured), so a clean clone's full run
# is the traffic build and the stream: 16.5 min in run 39 (4.5 + 12) from an empty cache.
# With --answers '' every answer is asked afresh: 52-75 min. Reseed it after a change to the encoder or the traffic:
#   python3 -c "import gzip,json; json.dump(json.load(open('.cache/stream-answers.json')), gzip.open('docs/bench/stream-answers.json.gz','wt'), sort_keys=True, separators=(',',':'))"
# Extra arguments go to scripts/stream_bench.py (e.g. --subsample 10, --no-pairs, --answers '').
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SHORT=0
FIXED=
ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --short) SHORT=$2; ARGS+=(--short "$2"); shift 2 ;;
    --fixed) FIXED=$2; ARGS+=(--fixed "$2"); shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
bash scripts/fetch_photos.sh
bash scripts/fetch_uploads.sh
LITE2=$(bash scripts/lite2.sh)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release --locked
BIN=$CARGO_TARGET_DIR/release/adacompress
VENV=.cache/venv-stream
if ! "$VENV/bin/python" -c 'import PIL, numpy; assert PIL.__version__ == "11.3.0" and numpy.__version__ == "2.2.6"' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check Pillow==11.3.0 numpy==2.2.6
fi
PER=1500
if [[ "$SHORT" -gt 0 ]]; then PER=$SHORT; fi
TRAFFIC=data/stream
OUT=docs/bench/stream
if [[ "$SHORT" -gt 0 ]]; then TRAFFIC=data/stream-short-$SHORT; OUT=docs/bench/stream-short; fi
if [[ -n "$FIXED" ]]; then OUT="$OUT-fixed-${FIXED//@/-}"; fi
T0=$(date +%s)
if [[ ! -f "$TRAFFIC/manifest.csv" ]] || [[ $(( $(wc -l < "$TRAFFIC/manifest.csv") - 1 )) -ne $(( 3 * PER )) ]]; then
  "$VENV/bin/python" scripts/stream_traffic.py --per-deployment "$PER" --out "$TRAFFIC"
fi
TSECS=$(( $(date +%s) - T0 ))
"$VENV/bin/python" scripts/stream_bench.py --bin "$BIN" --lite2 "$LITE2" --traffic "$TRAFFIC" \
  --out "$OUT" --traffic-seconds "$TSECS" "${ARGS[@]}"
