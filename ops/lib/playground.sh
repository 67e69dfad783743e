# A local playground for the checks under ops/ (sourced, not run): started in a process
# group of its own, waited for until it prints `ready`, and stopped with everything it
# started (SIGTERM to the group, SIGKILL after 15 s).
#
#   source ops/lib/playground.sh
#   playground_start DIR COMMAND...   # COMMAND's output in DIR/playground.out and .err
#   playground_wait_ready SECONDS || fail "$playground_problem"
#   playground_stop                   # from the caller's EXIT trap
#   playground_pd_address [OUT]       # the driver's address it printed
#
# Sets `playground_pid` (empty when none runs) and, when waiting fails,
# `playground_problem` (what went wrong, one line).

playground_pid=""
playground_out=""
playground_problem=""

# playground_start DIR COMMAND...: starts COMMAND in a process group of its own.
playground_start() {
  local dir="$1"
  shift
  playground_out="$dir/playground.out"
  : >"$playground_out"
  set -m
  "$@" >"$playground_out" 2>"$dir/playground.err" </dev/null &
  playground_pid=$!
  set +m
}

# playground_wait_ready SECONDS: waits for the playground's `ready` line; fails (with
# `playground_problem` set) if it exits first or SECONDS pass. Says every minute what
# it is waiting on (a first build compiles RocksDB for tens of minutes).
playground_wait_ready() {
  local timeout_seconds="$1" start=$SECONDS last_note=$SECONDS status
  until grep -qx ready "$playground_out"; do
    if ! kill -0 "$playground_pid" 2>/dev/null; then
      status=0
      wait "$playground_pid" || status=$?
      playground_problem="the playground exited (status $status) before printing ready"
      return 1
    fi
    if ((SECONDS - start >= timeout_seconds)); then
      playground_problem="the playground did not print ready within ${timeout_seconds}s"
      return 1
    fi
    if ((SECONDS - last_note >= 60)); then
      echo "waiting for the playground ($((SECONDS - start))s): $(tail -n 1 "${playground_out%.out}.err")" >&2
      last_note=$SECONDS
    fi
    sleep 0.2
  done
}

# playground_pd_address [OUT]: the first driver address in a playground's output (OUT,
# else the one started last), from its `pd id=N pid=P addr=ADDRESS ...` line.
playground_pd_address() {
  sed -n 's/^pd id=[0-9]* pid=[0-9]* addr=\([^ ]*\).*/\1/p' "${1:-$playground_out}" | sed -n 1p
}

# playground_stop: stops the playground's process group, if one runs.
playground_stop() {
  local i
  [ -n "$playground_pid" ] || return 0
  if kill -TERM -- "-$playground_pid" 2>/dev/null; then
    for ((i = 0; i < 150; i++)); do
      kill -0 -- "-$playground_pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 -- "-$playground_pid" 2>/dev/null; then
      echo "the playground did not stop within 15 s; killing it" >&2
      kill -KILL -- "-$playground_pid" 2>/dev/null
      for ((i = 0; i < 50; i++)); do
        kill -0 -- "-$playground_pid" 2>/dev/null || break
        sleep 0.1
      done
    fi
  fi
  # The playground's exit status (143 after SIGTERM) is not this function's.
  wait "$playground_pid" 2>/dev/null || true
  playground_pid=""
}
