#!/usr/bin/env bash
# The compatibility suite (issue 9, item 5): the vendors' own clients, at pinned versions,
# through `adacompress serve` and directly against the built-in backend, on loopback.
# Writes docs/compatibility.md and docs/compatibility.json.
#
#   scripts/compat.sh                                         # builds release, then runs
#   ADACOMPRESS_BIN=target/debug/adacompress scripts/compat.sh  # any other binary
#
# Steps: a venv in .cache/venv-compat (python3 -m venv; reinstalled only when
# scripts/compat-requirements.txt or compat-constraints.txt change), the sample photos
# (scripts/fetch_photos.sh, or COMPAT_PHOTOS=DIR), `npm ci` of the pinned JavaScript
# clients in .cache/npm-compat (scripts/compat-node; skipped without node/npm or with
# COMPAT_NODE=0), then `adacompress backend --aws-verify` and two `adacompress serve`
# (aws.resign = "any" and "verified") on free loopback ports, then scripts/compat.py. The processes are stopped on exit. Exit status: non-zero when a
# row that should be green is red (a row expected known-missing is not a failure; none is
# at present).
#
# The AWS keys below are throwaway test values that exist only in this script's processes;
# no real account is involved and no request leaves loopback.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
say() { echo "compat: $*" >&2; }
T0=$(date +%s)

if [[ -z "${ADACOMPRESS_BIN:-}" ]]; then
  say "ADACOMPRESS_BIN not set: cargo build --release --locked"
  cargo build --release --locked --bin adacompress
  export ADACOMPRESS_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/adacompress"
fi
case "$ADACOMPRESS_BIN" in /*) ;; *) export ADACOMPRESS_BIN="$ROOT/$ADACOMPRESS_BIN" ;; esac
[[ -x "$ADACOMPRESS_BIN" ]] || { say "no executable at ADACOMPRESS_BIN=$ADACOMPRESS_BIN"; exit 2; }

# --- the venv -------------------------------------------------------------------------
VENV="${COMPAT_VENV:-$ROOT/.cache/venv-compat}"
REQ="$ROOT/scripts/compat-requirements.txt"
CON="$ROOT/scripts/compat-constraints.txt"
STAMP="$VENV/.compat-stamp"
WANT="$(cat "$REQ" "$CON" | sha256sum | cut -c1-16) $(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [[ ! -x "$VENV/bin/python" || "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]]; then
  say "creating $VENV and installing the pinned clients (about 40 s cold)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off -q \
    -r "$REQ" -c "$CON"
  echo "$WANT" > "$STAMP"
  export COMPAT_VENV_NOTE="venv created and installed in $(( $(date +%s) - T0 )) s"
else
  say "venv $VENV is up to date"
  export COMPAT_VENV_NOTE="venv reused"
fi
say "venv ready after $(( $(date +%s) - T0 )) s"

# --- the JavaScript clients (npm ci of scripts/compat-node; skipped without node/npm) ----
NODE_DIR="${COMPAT_NODE_DIR:-$ROOT/.cache/npm-compat}"
if [[ "${COMPAT_NODE:-1}" != 0 ]] && command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  NWANT="$(cat "$ROOT"/scripts/compat-node/package.json "$ROOT"/scripts/compat-node/package-lock.json | sha256sum | cut -c1-16) $(node --version)"
  mkdir -p "$NODE_DIR"
  cp "$ROOT"/scripts/compat-node/{package.json,package-lock.json,compat.mjs} "$NODE_DIR/"
  if [[ ! -d "$NODE_DIR/node_modules" || "$(cat "$NODE_DIR/.compat-stamp" 2>/dev/null)" != "$NWANT" ]]; then
    say "npm ci of the pinned JavaScript clients in $NODE_DIR (about 15 s cold)"
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error >&2)
    echo "$NWANT" > "$NODE_DIR/.compat-stamp"
  else
    say "npm packages in $NODE_DIR are up to date"
  fi
  export COMPAT_NODE_DIR="$NODE_DIR"
else
  say "node/npm not found (or COMPAT_NODE=0): the JavaScript rows are skipped"
  unset COMPAT_NODE_DIR
fi
say "clients ready after $(( $(date +%s) - T0 )) s"

# --- photos ---------------------------------------------------------------------------
if [[ -z "${COMPAT_PHOTOS:-}" ]]; then
  bash "$ROOT/scripts/fetch_photos.sh" >&2
  export COMPAT_PHOTOS="$ROOT/data/photos"
fi
if ! compgen -G "$COMPAT_PHOTOS/*/*.jpg" >/dev/null; then
  say "no photos under COMPAT_PHOTOS=$COMPAT_PHOTOS (scripts/fetch_photos.sh fetches them)"; exit 2
fi

# --- processes ------------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/adacompress-compat.XXXXXX")"
PIDS=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [[ $rc -ne 0 && -n "${WORK:-}" ]]; then
    for f in "$WORK"/*.log; do [[ -f "$f" ]] && { say "last lines of $f:"; tail -n 15 "$f" >&2; }; done
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT INT TERM

free_ports() {  # N free loopback ports
  python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks: s.close()
PY
}
read -r BACKEND PROXY ADMIN VPROXY VADMIN < <(free_ports 5)

# Throwaway test identity, AWS-documentation style (not a real key). The backend verifies
# SigV4 against it; the proxies re-sign with it (their own identity).
export AWS_ACCESS_KEY_ID="AKIDEXAMPLECOMPATPROXY"
export AWS_SECRET_ACCESS_KEY="compat-proxy-fake-secret-EXAMPLEKEY"
export AWS_REGION="us-east-1"
unset AWS_SESSION_TOKEN AWS_PROFILE || true
# The app's key under aws.resign = "verified" ([[aws.clients]]); equally fake.
export COMPAT_CLIENT_KEY_ID="AKIDEXAMPLECOMPATAPP1"
export COMPAT_CLIENT_SECRET="compat-app-fake-secret-EXAMPLEKEY"

write_config() {  # file listen admin resign
  local up="http://127.0.0.1:$BACKEND"
  cat > "$1" <<EOF
[proxy]
listen = "127.0.0.1:$2"
admin_listen = "127.0.0.1:$3"
[upstreams]
google = "$up"
rekognition = "$up"
baidu = "$up"
facepp = "$up"
azure = "$up"
kserve = "$up"
torchserve = "$up"
[agent]
checkpoint = "$ROOT/models/agent-calibrated.json"
[pair]
# No audits, no margin alarm and no re-asks: the live pair cannot move during the run and
# whether an answer is re-asked cannot depend on the margins earlier rows left in the
# window, so every row sees the same pair (the shipped prior) and the same answers, and
# the rows can be compared with each other. (With re-asks from the 10th answer, the first
# three rows got the original's answer for indoor/1.jpg and the rest the re-encode's.)
max_audit_rate = 0.0
margin_alarm_sigmas = 0.0
reask_rate = 0.0
[state]
dir = "$WORK/state-$4"
[aws]
region = "us-east-1"
resign = "$4"
EOF
  if [[ "$4" == verified ]]; then
    cat >> "$1" <<EOF
[[aws.clients]]
access_key_id = "$COMPAT_CLIENT_KEY_ID"
secret_access_key = "$COMPAT_CLIENT_SECRET"
EOF
  fi
  cat >> "$1" <<EOF
[log]
level = "warn"
EOF
}
write_config "$WORK/any.toml" "$PROXY" "$ADMIN" any
write_config "$WORK/verified.toml" "$VPROXY" "$VADMIN" verified

say "starting backend --aws-verify on 127.0.0.1:$BACKEND"
"$ADACOMPRESS_BIN" backend --model "$ROOT/models/efficientnet-lite0.onnx" \
  --listen "127.0.0.1:$BACKEND" --aws-verify >"$WORK/backend.log" 2>&1 &
PIDS+=($!)
say "starting serve (aws.resign = \"any\") on 127.0.0.1:$PROXY, admin $ADMIN"
"$ADACOMPRESS_BIN" serve --config "$WORK/any.toml" >"$WORK/serve-any.log" 2>&1 &
PIDS+=($!)
say "starting serve (aws.resign = \"verified\") on 127.0.0.1:$VPROXY, admin $VADMIN"
"$ADACOMPRESS_BIN" serve --config "$WORK/verified.toml" >"$WORK/serve-verified.log" 2>&1 &
PIDS+=($!)

wait_http() {  # url name: up to 120 s for a 200
  python3 - "$1" "$2" <<'PY'
import sys, time, urllib.request
url, name = sys.argv[1], sys.argv[2]
t0 = time.time()
while time.time() - t0 < 120:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                print(f"compat: {name} ready after {time.time() - t0:.1f} s", file=sys.stderr)
                sys.exit(0)
    except Exception:
        pass
    time.sleep(0.25)
print(f"compat: {name} not ready after 120 s ({url})", file=sys.stderr)
sys.exit(1)
PY
}
wait_http "http://127.0.0.1:$BACKEND/healthz" backend
wait_http "http://127.0.0.1:$ADMIN/readyz" "serve (any)"
wait_http "http://127.0.0.1:$VADMIN/readyz" "serve (verified)"

export COMPAT_BACKEND="http://127.0.0.1:$BACKEND"
export COMPAT_PROXY="http://127.0.0.1:$PROXY"
export COMPAT_ADMIN="http://127.0.0.1:$ADMIN"
export COMPAT_VPROXY="http://127.0.0.1:$VPROXY"
export COMPAT_VADMIN="http://127.0.0.1:$VADMIN"
export COMPAT_STARTED="$T0"
set +e
"$VENV/bin/python" "$ROOT/scripts/compat.py" "$@"
rc=$?
set -e
say "done in $(( $(date +%s) - T0 )) s (exit $rc)"
exit $rc
