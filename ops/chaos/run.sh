#!/usr/bin/env bash
# Fault-injection rounds against real Tessera clusters, checked for linearizability.
#
#   ops/chaos/run.sh --rounds N --seconds S [tessera-chaos run flags...]
#
# Each round starts a fresh cluster of 5 nodes (network namespaces on a private bridge,
# each running a store; 3 also run a placement driver replica), runs clients for S
# seconds while faults come and go, restores everything, reads every key, and checks
# the history. The last line is `chaos: N rounds, V violations, L lost writes` (and the
# evidence's directory when something failed); the exit status is non-zero if any round
# failed. Needs root: namespaces and iptables. See ops/chaos/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" -ne 0 ]; then
  echo "ops/chaos/run.sh: needs root (network namespaces, iptables); try sudo" >&2
  exit 1
fi
# iproute2 and iptables run the namespaces and the partitions.
ops/dev.sh deps iproute2 iptables
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tessera-target}"
# The whole workspace, as the tests build it: one build of RocksDB's C++.
cargo build --quiet --release --workspace --bins
exec "$CARGO_TARGET_DIR/release/tessera-chaos" run --out "${CHAOS_OUT:-$CARGO_TARGET_DIR/chaos}" "$@"
