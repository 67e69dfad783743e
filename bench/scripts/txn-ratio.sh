#!/usr/bin/env bash
# Transactions against raw puts on this machine (issue 17's performance targets): each
# round starts a fresh 3-store playground, splits it at the middle of the bench's key
# space (so that every `txn-two-keys` transaction spans two regions), and runs raw
# `put`, `txn-put` (one key: the one-phase path) and `txn-two-keys` (two-phase commit
# over two regions) back to back at the same concurrency, in an order that rotates
# from round to round (a later run meets a fuller store). Prints every run as JSON
# lines into the results file and, at the end, the medians, each round's ratio of a
# transactional workload to the raw puts of the same round, and the p50 of a
# two-region commit against a one-region one.
#
#   bench/scripts/txn-ratio.sh [--rounds 3] [--seconds 10] [--concurrency 64]
#                              [--keys 20000] [--value-size 100]
set -euo pipefail
cd "$(dirname "$0")/../.."
script=txn-ratio.sh
rounds=3 seconds=10 concurrency=64 keys=20000 value_size=100
options="--rounds:rounds --seconds:seconds --concurrency:concurrency --keys:keys --value-size:value_size"
source bench/scripts/lib.sh
bench_options "$@"
bench_build
bench_workdir txn-ratio

for round in $(seq 1 "$rounds"); do
  echo "--- round $round of $rounds" >&2
  start_process "playground-$round" "$bin/tessera" playground --metrics-port 0 --dir "$work/playground-$round"
  pd="$(playground_pd)"
  split_at "$(printf 'user%012d' $((keys / 2)))"
  workloads=(put txn-put txn-two-keys)
  first=$(((round - 1) % 3))
  for workload in "${workloads[@]:first}" "${workloads[@]:0:first}"; do
    "$bin/tessera-bench" --target "tessera://$pd" --workload "$workload" --concurrency "$concurrency" \
      --duration "${seconds}s" --warmup 2s --keys "$keys" --value-size "$value_size" --json --quiet |
      sed "s/^{/{\"round\":$round,/" | tee -a "$results"
  done
  stop_process
  rm -rf "$work/playground-$round"
done

python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
by = {}
for r in rows:
    by.setdefault(r["workload"], []).append(r)
med = lambda runs, f: statistics.median(r[f] for r in runs)
if any(r["errors"] for r in rows):
    print("some runs had errors: their figures count only what succeeded")
print(f"{'workload':<14} {'runs':>4} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
for workload in ("put", "txn-put", "txn-two-keys"):
    runs = by.get(workload, [])
    if runs:
        print(f"{workload:<14} {len(runs):>4} {med(runs, 'ops_per_sec'):>9.0f} {med(runs, 'p50_ms'):>8.2f} "
              f"{med(runs, 'p99_ms'):>8.2f} {sum(r['errors'] for r in runs):>6}")
put = {r["round"]: r for r in by.get("put", []) if r["ops_per_sec"] > 0}
for workload in ("txn-put", "txn-two-keys"):
    ratios = [r["ops_per_sec"] / put[r["round"]]["ops_per_sec"] for r in by.get(workload, []) if r["round"] in put]
    if ratios:
        rounds = " / ".join(f"{100 * x:.0f}" for x in ratios)
        print(f"{workload} / put: median {100 * statistics.median(ratios):.0f} % (per round: {rounds})")
if by.get("txn-put") and by.get("txn-two-keys"):
    print(f"p50 two-region / one-region commit: x{med(by['txn-two-keys'], 'p50_ms') / med(by['txn-put'], 'p50_ms'):.2f}")
PY
echo "results: $results" >&2
