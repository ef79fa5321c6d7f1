#!/usr/bin/env bash
# A new user's first photos (issue 15's "Why"): a fresh `serve` (empty state dir, the shipped
# prior) gets the cross-source photos (the sources no agent trained on, scripts/workloads.sh)
# twice, pass-1 then pass-2 in the same order, through the stream benchmark's recording hop
# to the local backend running Lite2. Every upstream byte is counted, estimation included, and
# every photo is also run through each of the 41 fixed pairs (--subsample 1), so the table
# says what the live pair costs on a short stream against the best pair in hindsight.
#
#   scripts/first_photos.sh                # -> docs/bench/first-photos.{md,csv,json,svg}
#
# About 4 min on 2 cores with warm answer caches. Extra arguments go to scripts/stream_bench.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/workloads.sh
bash scripts/fetch_uploads.sh
LITE2=$(bash scripts/lite2.sh)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release --locked
VENV=.cache/venv-stream
if ! "$VENV/bin/python" -c 'import PIL, numpy; assert PIL.__version__ == "11.3.0" and numpy.__version__ == "2.2.6"' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check Pillow==11.3.0 numpy==2.2.6
fi
TRAFFIC=data/first-photos
mkdir -p "$TRAFFIC"
"$VENV/bin/python" - "$TRAFFIC" "$CROSS_SOURCES" <<'PY'
import csv, hashlib, os, sys
from PIL import Image
out, sources = sys.argv[1], sys.argv[2].split(",")
photos = []
for src in sources:
    d = os.path.join("data/uploads", src)
    for name in sorted(os.listdir(d)):
        if not name.lower().endswith((".jpg", ".jpeg")):
            continue
        path = os.path.join(d, name)
        data = open(path, "rb").read()
        with Image.open(path) as im:
            w, h = im.size
        photos.append(dict(file=os.path.relpath(path, out), source=src, width=w, height=h,
                           bytes=len(data), sha256=hashlib.sha256(data).hexdigest()))
photos.sort(key=lambda p: p["sha256"])  # sources mixed, the same order on every machine
with open(os.path.join(out, "manifest.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=["order", "deployment", "index", "file", "source", "transform",
                                      "width", "height", "quality", "bytes", "sha256"])
    w.writeheader()
    order = 0
    for dep in ("pass-1", "pass-2"):
        for i, p in enumerate(photos):
            w.writerow(dict(order=order, deployment=dep, index=i, transform="{}", quality="", **p))
            order += 1
print(f"{len(photos)} photos from {','.join(sources)}, 2 passes -> {out}/manifest.csv")
PY
"$VENV/bin/python" scripts/stream_bench.py --bin "$CARGO_TARGET_DIR/release/adacompress" --lite2 "$LITE2" \
  --traffic "$TRAFFIC" --out docs/bench/first-photos --subsample 1 \
  --command scripts/first_photos.sh --title "A new user's first photos (issue 15): the cross-source photos twice, from a fresh state" "$@"
