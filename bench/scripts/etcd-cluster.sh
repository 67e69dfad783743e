#!/usr/bin/env bash
# A 3-member etcd cluster on loopback for comparisons with tessera-bench: etcd from
# Debian's package (installed if missing), default settings (fsync on every commit),
# data in a temporary directory. Prints the client endpoints, then `ready`; stops the
# members and removes the data on Ctrl-C or SIGTERM.
#
#   bench/scripts/etcd-cluster.sh [BASE_PORT]   (default 12379: clients on 12379, 12381,
#                                                12383; peers one above each)
set -euo pipefail
base="${1:-12379}"

"$(dirname "$0")/../../ops/dev.sh" deps etcd-server curl

dir="$(mktemp -d /tmp/tessera-etcd.XXXXXX)"
pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap stop EXIT
trap 'exit 0' INT TERM

cluster=""
for i in 0 1 2; do
  peer=$((base + 2 * i + 1))
  cluster+="${cluster:+,}m$i=http://127.0.0.1:$peer"
done
endpoints=""
for i in 0 1 2; do
  client=$((base + 2 * i))
  peer=$((client + 1))
  etcd --name "m$i" --data-dir "$dir/m$i" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token tessera-bench \
    >"$dir/m$i.log" 2>&1 &
  pids+=("$!")
  endpoints+="${endpoints:+,}127.0.0.1:$client"
done
for _ in $(seq 1 100); do
  if [[ "$(curl -fsS "http://127.0.0.1:$base/health" 2>/dev/null)" == *'"health":"true"'* ]]; then
    echo "etcd endpoints=$endpoints data=$dir"
    echo "ready"
    wait "${pids[@]}"
    exit 0
  fi
  sleep 0.2
done
echo "etcd did not become healthy; logs in $dir" >&2
tail -n 20 "$dir"/m*.log >&2
exit 1
