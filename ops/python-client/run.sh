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

source ops/lib/playground.sh
tmp="$(mktemp -d)"
cleanup() {
  local status=$?
  set +e
  trap - EXIT INT TERM
  playground_stop
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
playground_start "$tmp" "$CARGO_TARGET_DIR/release/tessera" playground --stores 3 --dir "$tmp/cluster" \
  --metrics-port 0
playground_wait_ready "$READY_TIMEOUT" || { echo "FAIL: $playground_problem"; exit 1; }
pd_address="$(playground_pd_address)"
[ -n "$pd_address" ] || { echo "FAIL: the playground printed no driver address"; exit 1; }

PYTHONPATH="$tmp/generated" "$venv/bin/python" "$repo/ops/python-client/check_failures.py" "$pd_address"
