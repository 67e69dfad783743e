#!/usr/bin/env bash
# A third-party client's view (CI): a Python client generated from Tessera's own .proto
# files with grpcio-tools decodes every failure with grpcio-status, gRPC's stock helper
# for the rich error model (check_failures.py says what is checked).
#
#   ops/python-client/run.sh
#
# Installs grpcio, grpcio-tools and grpcio-status into a virtual environment under
# ~/.cache/tessera-python (once), generates the Python modules into a temporary
# directory, starts `tessera playground` with 3 stores in a process group of its own,
# runs the check against its driver, and stops the playground (SIGTERM to the group,
# SIGKILL after 15 s). Knobs: CARGO_TARGET_DIR (default ~/.cache/tessera-target),
# READY_TIMEOUT (seconds until the playground's `ready`, default 1200).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo="$PWD"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tessera-target}"
READY_TIMEOUT="${READY_TIMEOUT:-1200}"
venv="$HOME/.cache/tessera-python"

tmp="$(mktemp -d)"
playground_pid=""
cleanup() {
  local status=$? i
  set +e
  trap - EXIT INT TERM
  if [ -n "$playground_pid" ] && kill -0 "$playground_pid" 2>/dev/null; then
    kill -TERM -- "-$playground_pid"
    for ((i = 0; i < 150; i++)); do
      kill -0 "$playground_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL -- "-$playground_pid" 2>/dev/null
    wait "$playground_pid" 2>/dev/null
  fi
  if [ "$status" -ne 0 ] && [ -s "$tmp/playground.err" ]; then
    echo "--- last 40 lines of the playground's standard error ---"
    tail -n 40 "$tmp/playground.err"
  fi
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT INT TERM

if ! "$venv/bin/python" -c 'import grpc, grpc_tools, grpc_status' 2>/dev/null; then
  python3 -m venv "$venv" 2>/dev/null || { ops/dev.sh deps python3-venv && python3 -m venv "$venv"; }
  "$venv/bin/pip" install --quiet --disable-pip-version-check grpcio grpcio-tools grpcio-status
fi

mkdir -p "$tmp/generated"
"$venv/bin/python" -m grpc_tools.protoc \
  -I server/proto -I engine/proto -I placement/proto \
  --python_out="$tmp/generated" --grpc_python_out="$tmp/generated" \
  server/proto/service.proto engine/proto/*.proto placement/proto/pd.proto

ops/dev.sh deps >/dev/null
cargo build --release --workspace --bin tessera
set -m
"$CARGO_TARGET_DIR/release/tessera" playground --stores 3 --dir "$tmp/cluster" --metrics-port 0 \
  >"$tmp/playground.out" 2>"$tmp/playground.err" &
playground_pid=$!
set +m
for ((waited = 0; waited < READY_TIMEOUT * 10; waited++)); do
  grep -qx ready "$tmp/playground.out" && break
  kill -0 "$playground_pid" 2>/dev/null || { echo "FAIL: the playground exited before ready"; exit 1; }
  sleep 0.1
done
grep -qx ready "$tmp/playground.out" || { echo "FAIL: no ready within $READY_TIMEOUT s"; exit 1; }
pd_address="$(sed -n 's/^pd id=1 .*addr=\([^ ]*\).*/\1/p' "$tmp/playground.out")"
[ -n "$pd_address" ] || { echo "FAIL: the playground printed no driver address"; exit 1; }

PYTHONPATH="$tmp/generated" "$venv/bin/python" "$repo/ops/python-client/check_failures.py" "$pd_address"
