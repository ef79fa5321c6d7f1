#!/usr/bin/env bash
# Makes sure EfficientNet-Lite2 (the "cloud" of the benchmarks) is converted into
# .cache/models/ and prints its path. Conversion output goes to stderr.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LITE2=.cache/models/efficientnet-lite2.onnx
if [ ! -f "$LITE2" ]; then
  python3 scripts/convert_efficientnet.py --variant lite2 --out "$LITE2" --venv >&2
fi
echo "$LITE2"
