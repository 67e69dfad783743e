#!/usr/bin/env bash
# The one entry point for working on Tessera from a fresh machine.
#
#   ops/dev.sh test          run every test (what CI runs)
#   ops/dev.sh soak ARGS     run the Raft simulator soak, e.g. --seeds 100000 --nodes 5
#   ops/dev.sh store-bench ARGS  one store's throughput, e.g. --regions 1,64,1024 --json
#   ops/dev.sh check         formatting and lints, as CI checks them
#   ops/dev.sh deps [PKG]    only install the system packages the build needs (and PKG)
#   ops/dev.sh playground    start a local cluster: a placement driver and 3 stores (ARGS
#                            go to `tessera playground`, e.g. --stores 5 --dir DIR)
#   ops/dev.sh ctl ARGS      talk to it: `tessera ctl ARGS`, e.g. put hello world
#
# Before calling cargo it installs the system packages the build needs and that are
# missing (apt-get as root, sudo otherwise). Everything builds with the release profile
# so that tests, benchmarks and the binaries share one build of the native dependencies,
# in a target directory outside the clone (CARGO_TARGET_DIR, default
# ~/.cache/tessera-target) that stays warm across clones.
set -euo pipefail
cd "$(dirname "$0")/.."

# libclang: bindgen needs it to generate RocksDB's bindings (librocksdb-sys).
PACKAGES=(libclang-dev)

# Installs the build's packages and the Debian packages named as arguments, those that
# are missing.
ensure_packages() {
  local missing=() package
  for package in "${PACKAGES[@]}" "$@"; do
    if [[ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)" != *"install ok installed"* ]]; then
      missing+=("$package")
    fi
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "ops/dev.sh: install these packages with your system's package manager: ${missing[*]}" >&2
    exit 1
  fi
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "ops/dev.sh: need root or sudo to install: ${missing[*]}" >&2
      exit 1
    fi
    sudo="sudo"
  fi
  echo "ops/dev.sh: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tessera-target}"

# Says what a build is about to do when RocksDB's C++ has not been compiled into this
# target directory yet: that first build is silent for minutes otherwise.
announce_build() {
  if ! ls "$CARGO_TARGET_DIR"/release/build/librocksdb-sys-*/out/librocksdb.a >/dev/null 2>&1; then
    echo "ops/dev.sh: first build in $CARGO_TARGET_DIR: compiling RocksDB's C++ from source" \
      "(about 25-30 minutes on 2 cores, once; later builds take seconds to a minute)" >&2
  fi
}

command="${1:-}"
[ $# -gt 0 ] && shift
case "$command" in
  test)
    ensure_packages
    announce_build
    exec cargo test --release --workspace "$@"
    ;;
  soak | store-bench)
    ensure_packages
    announce_build
    # raft-sim is an example of the simulator's crate (engine/simulation), store-bench
    # one of the engine's.
    example="raft-sim"
    [ "$command" = store-bench ] && example="store-bench"
    # Built for the whole workspace, not with -p: the same feature set as the tests, so
    # RocksDB's C++ is not compiled a second time.
    cargo build --release --workspace --example "$example"
    exec "$CARGO_TARGET_DIR/release/examples/$example" "$@"
    ;;
  check)
    ensure_packages
    announce_build
    cargo fmt --all -- --check
    # --release shares the build scripts' output (RocksDB's C++) with the test build.
    exec cargo clippy --release --workspace --all-targets -- -D warnings
    ;;
  deps)
    ensure_packages "$@"
    ;;
  playground | ctl)
    # Built for the whole workspace (as the tests are), not with `cargo run`: another
    # feature set would compile RocksDB's C++ a second time.
    ensure_packages
    announce_build
    # Cargo's progress bar shows on a terminal; --quiet would hide a long first build.
    cargo build --release --workspace --bin tessera
    exec "$CARGO_TARGET_DIR/release/tessera" "$command" "$@"
    ;;
  *)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    [ -z "$command" ] && exit 0
    echo "ops/dev.sh: unknown command '$command'" >&2
    exit 2
    ;;
esac
