#!/usr/bin/env bash
# Tessera against etcd on this machine, alternately, with the same client harness:
# each round starts a 3-member etcd (etcd-cluster.sh), runs the workload at every
# concurrency, stops it, then does the same with a 3-store playground. Prints every
# run as JSON lines into the results file and, at the end, the median ops/s and p99 of
# each target and concurrency with Tessera's ratio to etcd.
#
# With --etcd-api, the playground is also measured through its etcd API (the same
# etcd client on both sides, target "tessera-etcd"), its etcd key space split into
# --regions regions first (default 32) at the bench's keys.
#
#   bench/scripts/compare.sh [--rounds 3] [--seconds 20] [--concurrency "64 256"]
#                            [--workload put] [--keys 100000] [--value-size 100]
#                            [--etcd-api] [--regions 32]
set -euo pipefail
cd "$(dirname "$0")/../.."
script=compare.sh
rounds=3 seconds=20 concurrency="64 256" workload=put keys=100000 value_size=100 etcd_api=0 regions=32
options="--rounds:rounds --seconds:seconds --concurrency:concurrency --workload:workload --keys:keys"
options+=" --value-size:value_size --etcd-api:etcd_api=1 --regions:regions"
source bench/scripts/lib.sh
bench_options "$@"
bench_build
bench_workdir compare

# run URL [LABEL]: the workload at every concurrency against URL, its rows labelled
# LABEL (default: the target the bench names).
run() {
  local url="$1" label="${2:-}" c
  for c in $concurrency; do
    "$bin/tessera-bench" --target "$url" --workload "$workload" --concurrency "$c" \
      --duration "${seconds}s" --keys "$keys" --value-size "$value_size" --json --quiet |
      if [ -n "$label" ]; then sed "s/\"target\":\"[a-z]*\"/\"target\":\"$label\"/"; else cat; fi |
      tee -a "$results"
  done
}

# Splits the playground's etcd key space into `regions` regions at the bench's keys
# (user%012d, 0 to keys), stored under etcd's prefix.
split_etcd_keys() {
  local region
  for ((region = 1; region < regions; region++)); do
    split_at "$(printf '\xfeetcd/k/user%012d' $((region * keys / regions)))"
  done
}

for round in $(seq 1 "$rounds"); do
  echo "--- round $round of $rounds: etcd" >&2
  start_process "etcd-$round" bench/scripts/etcd-cluster.sh
  endpoints="$(sed -n 's/^etcd endpoints=\([^ ]*\).*/\1/p' "$out")"
  run "etcd://$endpoints"
  stop_process
  echo "--- round $round of $rounds: tessera" >&2
  start_process "tessera-$round" "$bin/tessera" playground --metrics-port 0 --dir "$work/playground-$round"
  pd="$(playground_pd)"
  run "tessera://$pd"
  if [ "$etcd_api" = 1 ]; then
    split_etcd_keys
    etcd_api_endpoints="$(sed -n 's/^store .* etcd=\([^ ]*\).*/\1/p' "$out" | paste -sd,)"
    run "etcd://$etcd_api_endpoints" tessera-etcd
  fi
  stop_process
done

python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
by = {}
for r in rows:
    by.setdefault((r["target"], r["workload"], r["op"], r["concurrency"]), []).append(r)
print(f"{'target':<8} {'workload':<8} {'op':<8} {'in flight':>9} {'runs':>4} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
for key in sorted(by):
    runs = by[key]
    med = lambda f: statistics.median(r[f] for r in runs)
    print(f"{key[0]:<8} {key[1]:<8} {key[2]:<8} {key[3]:>9} {len(runs):>4} {med('ops_per_sec'):>9.0f} "
          f"{med('p50_ms'):>8.2f} {med('p99_ms'):>8.2f} {sum(r['errors'] for r in runs):>6}")
for (target, workload, op, c), runs in sorted(by.items()):
    if not target.startswith("tessera") or ("etcd", workload, op, c) not in by:
        continue
    etcd = by[("etcd", workload, op, c)]
    t = statistics.median(r["ops_per_sec"] for r in runs) / statistics.median(r["ops_per_sec"] for r in etcd)
    p = statistics.median(r["p99_ms"] for r in runs) / statistics.median(r["p99_ms"] for r in etcd)
    print(f"{target}/etcd {workload} {op} at {c}: throughput x{t:.2f}, p99 x{p:.2f}")
PY
echo "results: $results" >&2
