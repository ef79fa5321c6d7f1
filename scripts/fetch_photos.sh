#!/usr/bin/env bash
# Fetch the test/evaluation photos used by adacompress.
#
# The photos come from the PyPI wheel `ai-benchmark==0.1.2` (Apache-2.0,
# Copyright 2019-2020 Andrey Ignatov). They are not committed to the repo;
# run this script (idempotent) before tests or experiments that need them:
#
#   bash scripts/fetch_photos.sh
#
# Result (relative to the repository root):
#   data/photos/objects/  100 ImageNet-like object/animal photos (512x512)
#                         from ai_benchmark/data/classification/*.jpg
#   data/photos/street/   100 phone street scenes (1024x682)
#                         from ai_benchmark/data/enhancement/*.jpg
#   data/photos/indoor/   30 indoor/cat photos
#                         from ai_benchmark/data/segmentation/*.jpg
#                         (the *_segmented.jpg masks are skipped)
#
# The wheel is cached in .cache/wheels/ (git-ignored). Needs only python3
# and pip (the zip is unpacked with python3's zipfile; unzip is not needed).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEEL_DIR="$ROOT/.cache/wheels"
PHOTO_DIR="$ROOT/data/photos"
PKG="ai-benchmark==0.1.2"
WHEEL_NAME="ai_benchmark-0.1.2-py3-none-any.whl"

# destination-subdir : directory inside the wheel : expected photo count
SETS=(
  "objects:ai_benchmark/data/classification:100"
  "street:ai_benchmark/data/enhancement:100"
  "indoor:ai_benchmark/data/segmentation:30"
)

# Count the *.jpg files in a directory (0 when it does not exist).
count_jpgs() {
  if [[ -d "$1" ]]; then
    find "$1" -maxdepth 1 -type f -name '*.jpg' | wc -l
  else
    echo 0
  fi
}

# Is every set already complete? Then there is nothing to do (not even pip).
all_present=1
for set in "${SETS[@]}"; do
  IFS=: read -r dest _src want <<<"$set"
  have=$(count_jpgs "$PHOTO_DIR/$dest")
  if [[ "$have" -ne "$want" ]]; then
    all_present=0
  fi
done
if [[ "$all_present" -eq 1 ]]; then
  echo "fetch_photos: all photos already present in data/photos/ (objects 100, street 100, indoor 30)"
  exit 0
fi

# Download the wheel once (pip reuses the file if it is already in the cache dir).
mkdir -p "$WHEEL_DIR"
if [[ ! -f "$WHEEL_DIR/$WHEEL_NAME" ]]; then
  echo "fetch_photos: downloading $PKG into .cache/wheels/ ..."
  python3 -m pip download --quiet --no-deps --disable-pip-version-check \
    -d "$WHEEL_DIR" "$PKG"
fi
if [[ ! -f "$WHEEL_DIR/$WHEEL_NAME" ]]; then
  echo "fetch_photos: error: $WHEEL_NAME not found in $WHEEL_DIR after pip download" >&2
  exit 1
fi

# Extract each incomplete set. Files are written to a temporary directory and
# moved into place only when the count is right, so an interrupted run never
# leaves a half-filled set that looks complete.
for set in "${SETS[@]}"; do
  IFS=: read -r dest src want <<<"$set"
  out="$PHOTO_DIR/$dest"
  have=$(count_jpgs "$out")
  if [[ "$have" -eq "$want" ]]; then
    echo "fetch_photos: $dest: $have photos already present"
    continue
  fi
  echo "fetch_photos: $dest: extracting $want photos from $src ..."
  python3 - "$WHEEL_DIR/$WHEEL_NAME" "$src" "$out" "$want" <<'PY'
import os, shutil, sys, tempfile, zipfile

wheel, src, out, want = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
prefix = src.rstrip("/") + "/"
with zipfile.ZipFile(wheel) as zf:
    names = [
        n for n in zf.namelist()
        if n.startswith(prefix)
        and "/" not in n[len(prefix):]          # only this directory, no subdirs
        and n.endswith(".jpg")
        and not n.endswith("_segmented.jpg")    # segmentation masks, not photos
    ]
    if len(names) != want:
        sys.exit(f"expected {want} photos under {src}, the wheel has {len(names)}")
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    try:
        for n in names:
            with zf.open(n) as f_in, open(os.path.join(tmp, os.path.basename(n)), "wb") as f_out:
                shutil.copyfileobj(f_in, f_out)
        if os.path.isdir(out):
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
PY
  echo "fetch_photos: $dest: $(count_jpgs "$out") photos in data/photos/$dest/"
done
echo "fetch_photos: done"
