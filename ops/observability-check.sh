#!/usr/bin/env bash
# The observability check (CI): Tessera's metrics, alert rules and dashboard against a
# real local cluster, scraped by a real Prometheus.
#
#   ops/observability-check.sh
#
# 1. Statically: `promtool check config` on ops/prometheus/playground.yml and
#    cluster.yml, `promtool check rules` on alerts.yml, `promtool test rules` on
#    alerts_test.yml (Prometheus comes from Debian's package if missing).
# 2. Starts `ops/dev.sh playground` (which builds the binary: the first build can take
#    20 minutes) in a temporary directory, in a process group of its own, and a
#    Prometheus on a free port scraping the `metrics=` addresses the playground printed
#    every second, with the rules of alerts.yml.
# 3. Checks: /health answers 200 on every node; every target is up; tessera_build_info
#    for every target with the right role; exactly one driver leader; every store holds
#    regions; after a short bounded load through `tessera ctl` (puts, gets, a scan), the
#    Raft proposal count went up and the commit, gRPC and log sync histograms have
#    samples; no rule fails to evaluate and no alert fires; every query of
#    ops/grafana/tessera.json is valid and every metric name it uses is exported.
#
# Each check prints PASS or FAIL; the first FAIL prints the playground's and Prometheus's
# log tails and exits 1. Everything started is stopped on exit (SIGTERM to the
# playground's process group, SIGKILL after 15 s) and the temporary directory removed.
# Knobs (environment): CARGO_TARGET_DIR (default ~/.cache/tessera-target),
# READY_TIMEOUT (seconds until the playground's `ready`, default 1200), LOAD_KEYS (300),
# LOAD_TIMEOUT (seconds for each phase of the load, default 180).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tessera-target}"
tessera="$CARGO_TARGET_DIR/release/tessera"
READY_TIMEOUT="${READY_TIMEOUT:-1200}"
LOAD_KEYS="${LOAD_KEYS:-300}"
LOAD_TIMEOUT="${LOAD_TIMEOUT:-180}"
dashboard="$repo/ops/grafana/tessera.json"

# --- Output and failure ---------------------------------------------------------------

source ops/lib/playground.sh
tmp=""
prometheus_pid=""

step() { printf '\n=== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
pass() { echo "PASS: $*"; }

show_logs() {
  [ -n "$tmp" ] || return 0
  local file
  for file in playground.out playground.err prometheus.log; do
    if [ -s "$tmp/$file" ]; then
      echo "--- last 60 lines of $file ---"
      tail -n 60 "$tmp/$file"
    fi
  done
}

fail() {
  echo "FAIL: $*"
  show_logs
  exit 1
}

# --- Cleanup ------------------------------------------------------------------------

cleanup() {
  local status=$? i
  set +e
  trap - EXIT INT TERM
  if [ -n "$prometheus_pid" ] && kill -0 "$prometheus_pid" 2>/dev/null; then
    kill -TERM "$prometheus_pid"
    for ((i = 0; i < 100; i++)); do
      kill -0 "$prometheus_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$prometheus_pid" 2>/dev/null
    wait "$prometheus_pid" 2>/dev/null
  fi
  playground_stop
  [ -n "$tmp" ] && rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- Tools --------------------------------------------------------------------------

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# prom COMMAND ARGS...: Prometheus's HTTP API through the helper written below.
prom() { python3 "$tmp/prom.py" "$prometheus_url" "$@"; }

# field NAME LINE: the value of NAME=VALUE among LINE's words.
field() {
  local word words
  read -ra words <<<"$2"
  for word in "${words[@]}"; do
    if [ "${word%%=*}" = "$1" ]; then
      echo "${word#*=}"
      return 0
    fi
  done
  return 1
}

# greater A B: whether the number A is greater than the number B.
greater() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 > b + 0) }'; }

# --- 1. Static checks ------------------------------------------------------------------

step "tools"
# The build's packages too: the playground step builds the binary.
"$repo/ops/dev.sh" deps prometheus curl python3
promtool --version 2>&1 | sed -n 1p

step "static checks"
for config in ops/prometheus/playground.yml ops/prometheus/cluster.yml; do
  promtool check config "$config" >/dev/null 2>&1 || {
    promtool check config "$config" || true
    fail "promtool check config $config"
  }
  pass "promtool check config $config"
done
promtool check rules ops/prometheus/alerts.yml >/dev/null 2>&1 || {
  promtool check rules ops/prometheus/alerts.yml || true
  fail "promtool check rules ops/prometheus/alerts.yml"
}
pass "promtool check rules ops/prometheus/alerts.yml"
promtool test rules ops/prometheus/alerts_test.yml >/dev/null 2>&1 || {
  promtool test rules ops/prometheus/alerts_test.yml || true
  fail "promtool test rules ops/prometheus/alerts_test.yml"
}
pass "promtool test rules ops/prometheus/alerts_test.yml"
python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$dashboard" || fail "$dashboard is not valid JSON"
pass "ops/grafana/tessera.json is valid JSON"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/tessera-observability.XXXXXX")"

# The Prometheus API helper: value EXPR (one number: the only sample, "none" if the result
# is empty), samples EXPR (one "INSTANCE VALUE" line per sample, labels as JSON with
# --labels), targets (one "JOB INSTANCE HEALTH LAST-ERROR" line per target), names
# (every metric name), rules (one "GROUP RULE HEALTH LAST-ERROR" line per rule), firing
# (one line per firing alert), check-queries FILE (runs every query of the dashboard,
# Grafana's variables replaced; prints how many, or the rejected ones and exits 1),
# dashboard FILE (one "NAME<TAB>PANEL" line per metric name the dashboard's queries use).
cat >"$tmp/prom.py" <<'PYTHON'
import json, re, sys, urllib.error, urllib.parse, urllib.request

def api(base, path, **params):
    url = base + path + ("?" + urllib.parse.urlencode(params) if params else "")
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
    except urllib.error.HTTPError as error:
        body = json.load(error)
    if body.get("status") != "success":
        raise SystemExit("prometheus: %s: %s" % (body.get("errorType"), body.get("error")))
    return body["data"]

def query(base, expr):
    data = api(base, "/api/v1/query", query=expr)
    if data["resultType"] == "scalar":
        return [({}, float(data["result"][1]))]
    return [(s["metric"], float(s["value"][1])) for s in data["result"]]

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
            "unless", "bool", "offset", "inf", "nan"}

def dashboard_queries(path):
    """(query, panel title) for every query of the dashboard, variables included."""
    found = []
    def walk(node, title):
        if isinstance(node, dict):
            title = node.get("title", title) if node.get("type") != "row" else title
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    found.append((value, title))
                elif key in ("definition", "query") and isinstance(value, str) and "(" in value:
                    found.append((value, "variable " + node.get("name", "?")))
                else:
                    walk(value, title)
        elif isinstance(node, list):
            for item in node:
                walk(item, title)
    walk(json.load(open(path)), "?")
    return found

def runnable(expr):
    """A dashboard query with Grafana's variables replaced, as Prometheus can run it."""
    return (expr.replace("$__rate_interval", "1m").replace("$__interval", "1m")
            .replace("${instance}", ".*").replace("$instance", ".*"))

def metric_names(expr):
    """Metric names in a PromQL expression: identifiers left once strings, label
    matchers, ranges, grouping clauses, numbers and function calls are taken out."""
    label_values = re.fullmatch(r"\s*label_values\(\s*([a-zA-Z_:][\w:]*)\s*,.*\)\s*", expr, re.S)
    if label_values:
        return {label_values.group(1)}
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', " ", expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{[^}]*\}|\$\w+", " ", text)
    text = re.sub(r"\b\d+(\.\d+)?([eE][+-]?\d+)?(ms|s|m|h|d|w|y)?\b", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(?![\w:]|\s*\()", text):
        if match.group(1).lower() not in KEYWORDS:
            names.add(match.group(1))
    return names

def main():
    base, command, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    if command == "value":
        result = query(base, args[0])
        if len(result) > 1:
            raise SystemExit("expected at most one sample from %s, got %d" % (args[0], len(result)))
        print("none" if not result else "%g" % result[0][1])
    elif command == "samples":
        for metric, value in query(base, args[0]):
            print(metric.get("instance", "-"), "%g" % value,
                  json.dumps(metric, sort_keys=True) if "--labels" in args else "")
    elif command == "targets":
        for target in api(base, "/api/v1/targets", state="active")["activeTargets"]:
            print(target["labels"].get("job"), target["labels"].get("instance"), target["health"],
                  target.get("lastError") or "-")
    elif command == "names":
        print("\n".join(api(base, "/api/v1/label/__name__/values")))
    elif command == "check-queries":
        checked, bad = 0, 0
        for expr, title in dashboard_queries(args[0]):
            if expr.lstrip().startswith("label_values("):
                continue
            checked += 1
            try:
                api(base, "/api/v1/query", query=runnable(expr))
            except SystemExit as error:
                bad += 1
                print("  panel %r: %s\n    %s" % (title, error, expr.replace("\n", " ")), file=sys.stderr)
        if bad:
            raise SystemExit(1)
        print(checked)
    elif command == "rules":
        for group in api(base, "/api/v1/rules")["groups"]:
            for rule in group["rules"]:
                print(group["name"], rule["name"], rule.get("health"), rule.get("lastError") or "-")
    elif command == "firing":
        for group in api(base, "/api/v1/rules", type="alert")["groups"]:
            for rule in group["rules"]:
                for alert in rule.get("alerts", []):
                    if alert["state"] == "firing":
                        print(rule["name"], json.dumps(alert["labels"], sort_keys=True))
    elif command == "dashboard":
        for expr, title in dashboard_queries(args[0]):
            for name in sorted(metric_names(expr)):
                print("%s\t%s" % (name, title))
    else:
        raise SystemExit("unknown command " + command)

main()
PYTHON

# --- 2. The playground and Prometheus -------------------------------------------------

step "playground (builds the binary first; up to ${READY_TIMEOUT}s)"
mkdir -p "$tmp/cluster"
start=$SECONDS
playground_start "$tmp" ops/dev.sh playground --dir "$tmp/cluster"
playground_wait_ready "$READY_TIMEOUT" || fail "$playground_problem"
pass "playground ready after $((SECONDS - start))s"
sed -n '/^ready$/q;p' "$tmp/playground.out"

pd_addr=""
pd_metrics=()
store_metrics=()
declare -A role_of=()
while IFS= read -r line; do
  [ "$line" = ready ] && break
  role="${line%% *}"
  case "$role" in
    pd | store) ;;
    *) continue ;;
  esac
  metrics="$(field metrics "$line")" || fail "the playground printed no metrics= address for: $line"
  addr="$(field addr "$line")" || fail "the playground printed no addr= for: $line"
  field pid "$line" >/dev/null || fail "the playground printed no pid= for: $line"
  role_of["$metrics"]="$role"
  if [ "$role" = pd ]; then
    pd_metrics+=("$metrics")
    [ -n "$pd_addr" ] || pd_addr="$addr"
  else
    store_metrics+=("$metrics")
  fi
done <"$tmp/playground.out"
[ "${#pd_metrics[@]}" -ge 1 ] || fail "the playground printed no pd line"
[ "${#store_metrics[@]}" -ge 1 ] || fail "the playground printed no store line"
all_metrics=("${pd_metrics[@]}" "${store_metrics[@]}")
pass "parsed ${#pd_metrics[@]} pd and ${#store_metrics[@]} store lines (pd at $pd_addr)"
[ -x "$tessera" ] || fail "no tessera binary at $tessera after the playground's build"

step "Prometheus"
# A copy of playground.yml scraping the printed addresses every second, with the rules
# by absolute path. Every rewrite must apply exactly once, so that a change to
# playground.yml that this script no longer understands fails here, not silently.
python3 - "$repo/ops/prometheus/playground.yml" "$tmp/prometheus.yml" "$repo/ops/prometheus/alerts.yml" \
  "$(IFS=,; echo "${pd_metrics[*]}")" "$(IFS=,; echo "${store_metrics[*]}")" <<'PYTHON' || fail "rewriting playground.yml for the playground's addresses"
import json, re, sys
source, target, rules, pd, stores = sys.argv[1:]
targets = {"tessera-pd": pd.split(","), "tessera-store": stores.split(",")}
counts = {"scrape_interval": 0, "evaluation_interval": 0, "rule_files": 0, "tessera-pd": 0, "tessera-store": 0}
out, job = [], None
for line in open(source):
    m = re.match(r"^(\s*)(scrape_interval|evaluation_interval):\s*\S+\s*$", line)
    if m:
        counts[m.group(2)] += 1
        line = "%s%s: 1s\n" % (m.group(1), m.group(2))
    elif re.match(r"^\s*-\s*alerts\.yml\s*$", line):
        counts["rule_files"] += 1
        line = re.sub(r"alerts\.yml", json.dumps(rules), line)
    m = re.match(r"^\s*-\s*job_name:\s*(\S+)\s*$", line)
    if m:
        job = m.group(1).strip("\"'")
    m = re.match(r"^(\s*)-\s*targets:\s*\[.*\]\s*$", line)
    if m and job in targets:
        counts[job] += 1
        line = "%s- targets: %s\n" % (m.group(1), json.dumps(targets[job]))
    out.append(line)
wrong = {key: n for key, n in counts.items() if n != 1}
if wrong:
    raise SystemExit("playground.yml: expected each of these once, found: %s" % wrong)
open(target, "w").write("".join(out))
PYTHON
promtool check config "$tmp/prometheus.yml" >/dev/null 2>&1 || {
  cat "$tmp/prometheus.yml"
  promtool check config "$tmp/prometheus.yml" || true
  fail "the rewritten Prometheus configuration does not check"
}
prometheus_port="$(free_port)"
prometheus_url="http://127.0.0.1:$prometheus_port"
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/prom" \
  --web.listen-address="127.0.0.1:$prometheus_port" >"$tmp/prometheus.log" 2>&1 </dev/null &
prometheus_pid=$!
for ((i = 0; ; i++)); do
  curl -fsS --max-time 2 "$prometheus_url/-/ready" >/dev/null 2>&1 && break
  kill -0 "$prometheus_pid" 2>/dev/null || fail "Prometheus exited at start"
  ((i < 60)) || fail "Prometheus not ready within 30s at $prometheus_url"
  sleep 0.5
done
pass "Prometheus ready at $prometheus_url, scraping ${all_metrics[*]}"

# --- 3. Checks --------------------------------------------------------------------------

step "health endpoints"
for address in "${all_metrics[@]}"; do
  code="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 "http://$address/health" || true)"
  [ "$code" = 200 ] || fail "GET http://$address/health (${role_of[$address]}) answered ${code:-nothing}, not 200"
  pass "GET http://$address/health (${role_of[$address]}) answered 200"
done

step "targets"
# Three scrapes at 1s, so that every target has been scraped at least once.
for ((i = 0; ; i++)); do
  prom targets >"$tmp/targets" || fail "listing Prometheus's targets"
  up="$(awk '$3 == "up"' "$tmp/targets" | wc -l)"
  [ "$up" -eq "${#all_metrics[@]}" ] && [ "$(wc -l <"$tmp/targets")" -eq "${#all_metrics[@]}" ] && break
  if ((i >= 30)); then
    cat "$tmp/targets"
    fail "expected ${#all_metrics[@]} targets all up; see above (job instance health last-error)"
  fi
  sleep 1
done
for address in "${all_metrics[@]}"; do
  job="tessera-${role_of[$address]}"
  grep -qx "$job $address up -" "$tmp/targets" || {
    cat "$tmp/targets"
    fail "target $address not up in job $job"
  }
done
pass "all ${#all_metrics[@]} targets up ($(awk '{print $1 "/" $2}' "$tmp/targets" | tr '\n' ' '))"

step "cluster state"
prom samples 'tessera_build_info' --labels >"$tmp/build_info" || fail "querying tessera_build_info"
for address in "${all_metrics[@]}"; do
  role="${role_of[$address]}"
  grep -q "^$address 1 .*\"role\": \"$role\"" "$tmp/build_info" || {
    cat "$tmp/build_info"
    fail "tessera_build_info{role=\"$role\"} == 1 missing for $address"
  }
done
pass "tessera_build_info present with the right role for every target"

leaders="$(prom value 'sum(tessera_pd_is_leader)')" || fail "querying tessera_pd_is_leader"
[ "$leaders" = 1 ] || fail "sum(tessera_pd_is_leader) is $leaders, not 1"
pass "sum(tessera_pd_is_leader) == 1"

prom samples 'tessera_store_regions{job="tessera-store"}' >"$tmp/regions" || fail "querying tessera_store_regions"
for address in "${store_metrics[@]}"; do
  count="$(awk -v a="$address" '$1 == a {print $2}' "$tmp/regions")"
  if [ -z "$count" ] || ! greater "$count" 0; then
    fail "store $address reports tessera_store_regions = ${count:-nothing}, not > 0"
  fi
  pass "store $address reports tessera_store_regions = $count"
done

step "load: $LOAD_KEYS puts, $LOAD_KEYS gets and a scan through tessera ctl"
before="$(prom value 'sum(tessera_raft_proposals_total)')" || fail "querying tessera_raft_proposals_total"
[ "$before" != none ] || fail "no tessera_raft_proposals_total series before the load"
echo "sum(tessera_raft_proposals_total) before the load: $before"
load_start=$SECONDS
# Four clients at a time; each command bounded to 20 s, each phase to LOAD_TIMEOUT.
# shellcheck disable=SC2016 # the single-quoted scripts expand in the child shells
seq -w 1 "$LOAD_KEYS" | timeout "$LOAD_TIMEOUT" xargs -P 4 -I{} bash -c '
  out="$(timeout 20 "$0" ctl --pd "$1" put "observability-$2" "value-$2" 2>&1)" ||
    { echo "put observability-$2 failed: $out" >&2; exit 1; }' "$tessera" "$pd_addr" {} ||
  fail "puts through tessera ctl (exit status $?: a put failed or $LOAD_TIMEOUT s passed)"
pass "$LOAD_KEYS puts in $((SECONDS - load_start))s"
load_start=$SECONDS
# shellcheck disable=SC2016
seq -w 1 "$LOAD_KEYS" | timeout "$LOAD_TIMEOUT" xargs -P 4 -I{} bash -c '
  out="$(timeout 20 "$0" ctl --pd "$1" get "observability-$2" 2>&1)" && [ "$out" = "value-$2" ] ||
    { echo "get observability-$2 answered: $out" >&2; exit 1; }' "$tessera" "$pd_addr" {} ||
  fail "gets through tessera ctl (exit status $?: a get failed or answered wrongly, or $LOAD_TIMEOUT s passed)"
pass "$LOAD_KEYS gets in $((SECONDS - load_start))s, every value as written"
scanned="$(timeout 60 "$tessera" ctl --pd "$pd_addr" scan observability- observability. | wc -l)" ||
  fail "scan through tessera ctl"
[ "$scanned" -eq "$LOAD_KEYS" ] || fail "scan [observability-, observability.) returned $scanned pairs, not $LOAD_KEYS"
pass "scan returned all $LOAD_KEYS pairs"

step "metrics after the load"
after="$before"
for ((i = 0; i < 30; i++)); do
  sleep 1
  after="$(prom value 'sum(tessera_raft_proposals_total)')" || fail "querying tessera_raft_proposals_total"
  # At least three scrapes (1s apart) after the load, and then as soon as it rose.
  if ((i >= 2)) && [ "$after" != none ] && greater "$after" "$before"; then
    break
  fi
done
if [ "$after" = none ] || ! greater "$after" "$before"; then
  fail "sum(tessera_raft_proposals_total) did not increase with the load: $before before, $after after"
fi
pass "sum(tessera_raft_proposals_total) rose from $before to $after"
for metric in tessera_raft_commit_duration_seconds_count tessera_grpc_request_duration_seconds_count \
  tessera_raft_log_sync_duration_seconds_count; do
  value="$(prom value "sum($metric)")" || fail "querying $metric"
  if [ "$value" = none ] || ! greater "$value" 0; then
    fail "sum($metric) is $value, not > 0"
  fi
  pass "sum($metric) = $value"
done

step "alert rules"
prom rules >"$tmp/rules" || fail "listing the rules"
rules="$(wc -l <"$tmp/rules")"
[ "$rules" -gt 0 ] || fail "Prometheus loaded no rules from ops/prometheus/alerts.yml"
# awk's own exit status: `| grep -q .` could close the pipe first and, under pipefail,
# turn a found failure into "none".
if awk '$3 != "ok" && $3 != "unknown" { found = 1 } END { exit !found }' "$tmp/rules"; then
  cat "$tmp/rules"
  fail "rules that fail to evaluate (group rule health error above)"
fi
pass "$rules rules loaded, none failing to evaluate"
prom firing >"$tmp/firing" || fail "listing the alerts"
if [ -s "$tmp/firing" ]; then
  cat "$tmp/firing"
  fail "alerts firing on a healthy playground (above)"
fi
pass "no alert firing"

step "dashboard ops/grafana/tessera.json"
queries="$(prom check-queries "$dashboard")" || fail "dashboard queries that Prometheus rejects (above)"
pass "all $queries dashboard queries are valid PromQL"
prom names >"$tmp/names" || fail "listing the exported metric names"
prom dashboard "$dashboard" >"$tmp/dashboard_names" || fail "extracting the dashboard's metric names"
missing=()
while IFS=$'\t' read -r name title; do
  grep -qx "$name" "$tmp/names" || missing+=("$name (panel \"$title\")")
done < <(sort -u "$tmp/dashboard_names")
if [ "${#missing[@]}" -gt 0 ]; then
  printf '  not exported: %s\n' "${missing[@]}"
  fail "${#missing[@]} metric name(s) used by the dashboard are not exported by the playground (above)"
fi
pass "all $(cut -f1 "$tmp/dashboard_names" | sort -u | wc -l) metric names used by the dashboard are exported"

step "done"
echo "PASS: observability check"
