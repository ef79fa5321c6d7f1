#!/usr/bin/env bash
# Regenerates docs/reliability.md and docs/reliability.json: hostile inputs, slow clients,
# a connection flood and kill -9 against `adacompress serve` on loopback (issue 8).
#
#   scripts/reliability.sh                                   # builds release, then runs
#   ADACOMPRESS_BIN=target/debug/adacompress scripts/reliability.sh   # any other binary
#
# Needs only python3 (standard library). About 3-5 minutes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [[ -z "${ADACOMPRESS_BIN:-}" ]]; then
  cargo build --release --locked --bin adacompress
  export ADACOMPRESS_BIN="$ROOT/target/release/adacompress"
fi
case "$ADACOMPRESS_BIN" in
  /*) ;;
  *) export ADACOMPRESS_BIN="$ROOT/$ADACOMPRESS_BIN" ;;
esac
exec python3 "$ROOT/scripts/reliability.py" "$@"
