#!/usr/bin/env bash
# What mutual TLS costs: a 3-store playground in the clear and one with --tls,
# alternately, the same workload against each from the same client harness (over TLS
# with the playground's client certificate). Prints every run as JSON lines into the
# results file and, at the end, the median ops/s and p99 of each with TLS's ratio.
#
#   bench/scripts/tls-cost.sh [--rounds 3] [--seconds 20] [--concurrency "64"]
#                             [--workload put] [--keys 100000] [--value-size 100]
set -euo pipefail
cd "$(dirname "$0")/../.."
script=tls-cost.sh
rounds=3 seconds=20 concurrency="64" workload=put keys=100000 value_size=100
options="--rounds:rounds --seconds:seconds --concurrency:concurrency --workload:workload --keys:keys"
options+=" --value-size:value_size"
source bench/scripts/lib.sh
bench_options "$@"
bench_build
bench_workdir tls-cost

# start NAME ARGS...: a playground, waited for until `ready`; sets `pid`, `out` and `pd`.
start() {
  local name="$1"
  shift
  start_process "$name" "$bin/tessera" playground --metrics-port 0 "$@"
  pd="$(playground_pd)"
}

# run LABEL [BENCH FLAGS...]: the workload at every concurrency, rows labelled LABEL.
run() {
  local label="$1" c
  shift
  for c in $concurrency; do
    "$bin/tessera-bench" --target "tessera://$pd" --workload "$workload" --concurrency "$c" \
      --duration "${seconds}s" --keys "$keys" --value-size "$value_size" --json --quiet "$@" |
      sed "s/\"target\":\"[a-z]*\"/\"target\":\"$label\"/" | tee -a "$results"
  done
}

for round in $(seq 1 "$rounds"); do
  echo "--- round $round of $rounds: in the clear" >&2
  start "clear-$round" --dir "$work/clear-$round"
  run clear
  stop_process
  echo "--- round $round of $rounds: mutual TLS" >&2
  dir="$work/tls-$round"
  start "tls-$round" --dir "$dir" --tls
  run tls --tls-ca "$dir/tls/ca.pem" --tls-cert "$dir/tls/root.pem" --tls-key "$dir/tls/root-key.pem"
  stop_process
done

python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
by = {}
for r in rows:
    by.setdefault((r["target"], r["workload"], r["op"], r["concurrency"]), []).append(r)
print(f"{'target':<6} {'workload':<8} {'op':<8} {'in flight':>9} {'runs':>4} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
for key in sorted(by):
    runs = by[key]
    med = lambda f: statistics.median(r[f] for r in runs)
    print(f"{key[0]:<6} {key[1]:<8} {key[2]:<8} {key[3]:>9} {len(runs):>4} {med('ops_per_sec'):>9.0f} "
          f"{med('p50_ms'):>8.2f} {med('p99_ms'):>8.2f} {sum(r['errors'] for r in runs):>6}")
for (target, workload, op, c), runs in sorted(by.items()):
    if target != "tls" or ("clear", workload, op, c) not in by:
        continue
    clear = by[("clear", workload, op, c)]
    t = statistics.median(r["ops_per_sec"] for r in runs) / statistics.median(r["ops_per_sec"] for r in clear)
    p = statistics.median(r["p99_ms"] for r in runs) / statistics.median(r["p99_ms"] for r in clear)
    print(f"tls/clear {workload} {op} at {c}: throughput x{t:.2f} (cost {100 * (1 - t):.1f} %), p99 x{p:.2f}")
PY
echo "results: $results" >&2
