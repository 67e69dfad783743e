# Shared by the benchmark scripts (sourced, never run): their options, building the
# binaries, a work directory, and processes started in a process group of their own
# and waited for until they print `ready`. A sourcing script sets `script` (its name,
# for messages), `options` and their defaults first.

# Parsing a playground's output is ops/lib/playground.sh's.
source ops/lib/playground.sh

# bench_options ARGS...: reads the options the script names in `options`, each as
# OPTION:VARIABLE (the option's value into the variable) or OPTION:VARIABLE=VALUE (a flag
# setting it), e.g. "--rounds:rounds --etcd-api:etcd_api=1"; anything else is refused.
bench_options() {
  local option target spec
  while [ $# -gt 0 ]; do
    option="$1"
    target=""
    for spec in $options; do
      if [ "${spec%%:*}" = "$option" ]; then
        target="${spec#*:}"
      fi
    done
    case "$target" in
      "")
        echo "$script: unknown option $option" >&2
        exit 2
        ;;
      *=*)
        printf -v "${target%%=*}" '%s' "${target#*=}"
        shift
        ;;
      *)
        [ $# -ge 2 ] || { echo "$script: $option needs a value" >&2; exit 2; }
        printf -v "$target" '%s' "$2"
        shift 2
        ;;
    esac
  done
}

# Builds the binaries the scripts run; sets `bin`.
bench_build() {
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tessera-target}"
  ops/dev.sh deps
  cargo build --release --workspace --bin tessera --bin tessera-bench
  bin="$CARGO_TARGET_DIR/release"
}

# bench_workdir NAME: a fresh work directory; sets `work` and `results`. When the
# script exits, the process still running is stopped and the nodes' data directories
# (`$work/*/` that the script made) are removed; the outputs and results stay.
bench_workdir() {
  work="$(mktemp -d "/tmp/tessera-$1.XXXXXX")"
  results="$work/results.jsonl"
  pid=""
  trap 'stop_process; rm -rf "$work"/*/' EXIT
}

# start_process NAME COMMAND...: starts COMMAND in a process group of its own, its
# output in $work/NAME.out, and waits for its `ready` line; sets `pid` and `out`.
start_process() {
  out="$work/$1.out"
  shift
  setsid "$@" >"$out" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do
    grep -qx ready "$out" && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$out" >&2; exit 1; }
    sleep 0.2
  done
  echo "$script: $* did not get ready" >&2
  cat "$out" >&2
  exit 1
}

# The placement driver's address, from the output of the playground started last.
playground_pd() {
  playground_pd_address "$out"
}

# Splits the region holding KEY at KEY through the playground's driver `$pd`, trying
# for 30 seconds: the region may be busy with a split of the driver's own (the size
# checks of a run that just wrote it). Exits with the last error if it never takes.
split_at() {
  local key="$1" try
  for ((try = 1; ; try++)); do
    "$bin/tessera" ctl --pd "$pd" split "$key" >/dev/null 2>"$work/split.err" && return 0
    [ "$try" -lt 30 ] || { cat "$work/split.err" >&2; exit 1; }
    sleep 1
  done
}

# Stops the process started last, then anything left in its process group: a
# playground stops its stores, then its driver, when told itself.
stop_process() {
  if [ -n "${pid:-}" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    kill -TERM -- "-$pid" 2>/dev/null || true
    pid=""
  fi
}
