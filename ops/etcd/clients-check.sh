#!/usr/bin/env bash
# etcd's clients against Tessera's etcd API, unchanged (CI): Debian's etcdctl (package
# etcd-client, installed if missing), then Python's etcd3 client from PyPI through a
# pytest suite (python/test_etcd3.py), talk to a local playground of 3 stores as they
# would to a 3-member etcd cluster.
#
#   ops/etcd/clients-check.sh
#
# etcdctl's checks, each printing PASS or FAIL (the first FAIL prints the playground's log tail
# and exits 1): put / get / del with prefixes and ranges; a txn with a compare; a watch
# from a revision; lease grant, keep-alive, time-to-live with keys, list and revoke
# (the attached key goes with it); compaction (an older revision is then refused);
# member list (every store, at its etcd address); endpoint status and health on every
# member; users and roles: auth enable, a role on a prefix, a user signing in through
# another store, refused outside its prefix and after a revocation, auth disable. Then,
# on a playground with --tls: etcdctl with a client certificate, refused
# without one, and tessera ctl's split allowed with the admin's certificate only.
#
# The pytest suite: keys, ranges and prefixes, compare-and-swap, watches from a revision
# and across stores, leases refreshed, revoked and expired, etcd3's locks (mutual
# exclusion of workers on different stores; a lock freed by its lapsed lease),
# compaction, members and status. Its virtual environment (etcd3 0.12 with the
# protobuf and tenacity it was written for) is kept in ~/.cache/tessera-etcd3-python.
#
# The playground runs in a process group of its own and is stopped on exit (SIGTERM
# to the group, SIGKILL after 15 s). Knobs: CARGO_TARGET_DIR (default
# ~/.cache/tessera-target), READY_TIMEOUT (seconds until `ready`, default 1200).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tessera-target}"
READY_TIMEOUT="${READY_TIMEOUT:-1200}"
export ETCDCTL_API=3

source ops/lib/playground.sh
tmp="$(mktemp -d)"
cleanup() {
  local status=$?
  set +e
  trap - EXIT INT TERM
  playground_stop
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT INT TERM

pass() { echo "PASS: $*"; }
fail() {
  echo "FAIL: $*"
  if [ -s "$tmp/playground.err" ]; then
    echo "--- last 40 lines of the playground's standard error ---"
    tail -n 40 "$tmp/playground.err"
  fi
  exit 1
}

# expect NAME WANTED COMMAND...: runs etcdctl COMMAND; its output must be WANTED.
expect() {
  local name="$1" wanted="$2" got
  shift 2
  got="$(ctl "$@" 2>&1)" || fail "$name: etcdctl $* failed: $got"
  [ "$got" = "$wanted" ] || fail "$name: etcdctl $* printed [$got], wanted [$wanted]"
  pass "$name"
}

# contains NAME PATTERN COMMAND...: runs etcdctl COMMAND; its output must match the
# extended regular expression PATTERN.
contains() {
  local name="$1" pattern="$2" got
  shift 2
  got="$(ctl "$@" 2>&1)" || fail "$name: etcdctl $* failed: $got"
  grep -Eq -- "$pattern" <<<"$got" || fail "$name: etcdctl $* printed [$got], wanted /$pattern/"
  pass "$name"
}

# refused NAME PATTERN COMMAND...: etcdctl COMMAND must fail with a message matching
# PATTERN.
refused() {
  local name="$1" pattern="$2" got
  shift 2
  if got="$(ctl "$@" 2>&1)"; then
    fail "$name: etcdctl $* succeeded: $got"
  fi
  grep -Eq -- "$pattern" <<<"$got" || fail "$name: etcdctl $* failed with [$got], wanted /$pattern/"
  pass "$name"
}

# revision_of COMMAND...: the header revision of etcdctl COMMAND's JSON answer.
revision_of() {
  ctl "$@" -w json | python3 -c 'import json, sys; print(json.load(sys.stdin)["header"]["revision"])'
}

ops/dev.sh deps etcd-client >/dev/null
etcdctl version | sed -n 1p  # sed reads it all: head could close the pipe early (SIGPIPE under pipefail)
cargo build --release --workspace --bin tessera
playground_start "$tmp" "$CARGO_TARGET_DIR/release/tessera" playground --stores 3 --dir "$tmp/cluster" \
  --metrics-port 0
playground_wait_ready "$READY_TIMEOUT" || fail "$playground_problem"
mapfile -t endpoints < <(sed -n 's/^store .* etcd=\([^ ]*\).*/\1/p' "$tmp/playground.out")
[ "${#endpoints[@]}" -eq 3 ] || fail "the playground printed ${#endpoints[@]} etcd addresses, wanted 3"
ctl() { etcdctl --endpoints="${endpoints[0]}" --command-timeout=20s "$@"; }

# --- Keys ------------------------------------------------------------------------------
expect "put" "OK" put foo bar
expect "get" $'foo\nbar' get foo
for key in /app/a /app/b /app/c /other; do ctl put "$key" "v$key" >/dev/null; done
# --keys-only prints each key and an empty value.
expect "get --prefix" $'/app/a\n\n/app/b\n\n/app/c' get --prefix --keys-only /app/
expect "get a range" $'/app/b\nv/app/b\n/app/c\nv/app/c' get /app/b /other
expect "get --limit" $'/app/a\nv/app/a' get --prefix /app/ --limit=1
count="$(ctl get --from-key /app/a --keys-only -w json | python3 -c 'import json, sys; print(json.load(sys.stdin)["count"])')"
[ "$count" = 5 ] || fail "get --from-key counted $count keys, wanted 5"
pass "get --from-key: the count"
expect "del --prefix" "3" del --prefix /app/
expect "get after del" "" get --prefix /app/

# --- Txn --------------------------------------------------------------------------------
expect "txn: the compare holds" $'SUCCESS\n\nOK' txn <<<$'value("foo") = "bar"\n\nput foo baz\n\nput foo other\n'
expect "txn: the compare fails" $'FAILURE\n\nOK' txn <<<$'value("foo") = "bar"\n\nput foo never\n\nput foo other\n'
expect "txn's writes" $'foo\nother' get foo

# --- Watch from a revision ------------------------------------------------------------------
from="$(revision_of put watched 1)"
ctl put watched 2 >/dev/null
ctl del watched >/dev/null
watched="$(timeout 5 etcdctl --endpoints="${endpoints[1]}" watch watched --rev="$from" || true)"
[ "$watched" = $'PUT\nwatched\n1\nPUT\nwatched\n2\nDELETE\nwatched' ] ||
  fail "watch --rev printed [$watched]"
pass "watch from a revision, through another store"

# --- Leases ---------------------------------------------------------------------------------
granted="$(ctl lease grant 60)" || fail "lease grant: $granted"
lease="$(sed -n 's/^lease \([0-9a-f]*\) granted with TTL(60s)$/\1/p' <<<"$granted")"
[ -n "$lease" ] || fail "lease grant printed [$granted]"
pass "lease grant"
expect "put --lease" "OK" put --lease="$lease" leased yes
contains "lease keep-alive" "lease $lease keepalived with TTL\\(60\\)" lease keep-alive --once "$lease"
contains "lease timetolive --keys" "remaining\\((59|60)s\\), attached keys\\(\\[leased\\]\\)" \
  lease timetolive "$lease" --keys
contains "lease list" "^$lease$" lease list
contains "lease revoke" "lease $lease revoked" lease revoke "$lease"
expect "the leased key went with the lease" "" get leased
refused "put with a revoked lease" "requested lease not found" put --lease="$lease" leased again

# --- Compaction -------------------------------------------------------------------------
old="$(revision_of put compacted 1)"
now="$(revision_of put compacted 2)"
expect "compaction" "compacted revision $now" compaction "$now"
refused "a read below the compaction" "required revision has been compacted" get compacted --rev="$old"
expect "a read at the compaction" $'compacted\n2' get compacted --rev="$now"

# --- Cluster and maintenance ------------------------------------------------------------
members="$(ctl member list)" || fail "member list: $members"
for endpoint in "${endpoints[@]}"; do
  grep -q "http://$endpoint" <<<"$members" || fail "member list has no member at $endpoint: [$members]"
done
[ "$(wc -l <<<"$members")" -eq 3 ] || fail "member list printed [$members], wanted 3 members"
pass "member list"
# Every member by address, not with --cluster: etcdctl 3.4 dials a member's client URL
# (http://HOST:PORT) with that whole URL as HTTP/2's :authority, which is not an
# authority; etcd's Go server lets it through, Tessera's HTTP/2 server (Rust's h2)
# refuses the stream. Endpoints given as HOST:PORT, as here, work; etcd 3.5.1's
# clients and later send a valid authority for URLs as well.
all="$(IFS=,; echo "${endpoints[*]}")"
status="$(etcdctl --endpoints="$all" endpoint status)" || fail "endpoint status: $status"
[ "$(grep -c ", 3.5.0," <<<"$status")" -eq 3 ] || fail "endpoint status printed [$status]"
pass "endpoint status on every member"
health="$(etcdctl --endpoints="$all" endpoint health 2>&1)" || fail "endpoint health: $health"
[ "$(grep -c "is healthy" <<<"$health")" -eq 3 ] || fail "endpoint health printed [$health]"
pass "endpoint health on every member"

# --- Python's etcd3 -------------------------------------------------------------------------
venv="$HOME/.cache/tessera-etcd3-python"
# etcd3 0.12 (its latest) predates protobuf 4 and tenacity 7's retry API: pinned.
if ! "$venv/bin/python" -c 'import etcd3, pytest' 2>/dev/null; then
  python3 -m venv "$venv" 2>/dev/null || { ops/dev.sh deps python3-venv >/dev/null && python3 -m venv "$venv"; }
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    etcd3==0.12.0 "protobuf==3.20.3" "tenacity==6.3.1" "grpcio==1.85.3" "pytest<10"
fi
TESSERA_ETCD="$all" "$venv/bin/python" -m pytest -q -p no:cacheprovider -W ignore \
  ops/etcd/python/test_etcd3.py || fail "python etcd3's suite"
pass "python etcd3's suite"

# --- Users, roles and permissions -------------------------------------------------------
# As an operator sets etcd's authentication up: root, `auth enable` (etcdctl adds the
# root role itself when the server says it is missing), a role on a prefix, a user
# holding it, signing in through another store than the one that made it.
as_user="" at=0
ctl() { etcdctl --endpoints="${endpoints[$at]}" --command-timeout=20s ${as_user:+--user="$as_user"} "$@"; }
contains "user add root" "User root created" user add root:rootpw
contains "auth enable" "Authentication Enabled" auth enable
refused "no user once enabled" "user name is empty" get foo
refused "a wrong password" "authentication failed" --user=root:wrong get foo
as_user=root:rootpw
contains "role add" "Role app created" role add app
contains "role grant-permission --prefix" "Role app updated" role grant-permission app readwrite /app/ --prefix=true
contains "user add" "User alice created" user add alice:alicepw
contains "user grant-role" "Role app is granted to user alice" user grant-role alice app
as_user=alice:alicepw at=1
expect "a user writes its prefix" "OK" put /app/mine 1
expect "a user reads its prefix" $'/app/mine\n1' get --prefix /app/
refused "a user outside its prefix" "permission denied" put foo stolen
refused "a user reads outside its prefix" "permission denied" get foo
refused "a user manages users" "permission denied" user list
as_user=root:rootpw at=0
contains "role revoke-permission" "revoked" role revoke-permission app /app/ --prefix=true
sleep 2 # the stores' refresh of the auth state: one second
as_user=alice:alicepw at=1
refused "a revoked permission, at another store" "permission denied" put /app/mine 2
as_user=root:rootpw at=0
contains "auth disable" "Authentication Disabled" auth disable
as_user=""
expect "no user once disabled" $'foo\nother' get foo

# --- Mutual TLS -------------------------------------------------------------------------
# A playground with --tls: etcdctl (Go's gRPC and TLS) with the playground's client
# certificate, refused without one; tessera ctl's placement by hand needs the admin's.
playground_stop
playground_start "$tmp" "$CARGO_TARGET_DIR/release/tessera" playground --stores 3 --dir "$tmp/tls-cluster" \
  --metrics-port 0 --tls
playground_wait_ready "$READY_TIMEOUT" || fail "$playground_problem"
mapfile -t endpoints < <(sed -n 's/^store .* etcd=\([^ ]*\).*/\1/p' "$tmp/playground.out")
pd="$(playground_pd_address)"
tls="$tmp/tls-cluster/tls"
ctl() {
  etcdctl --endpoints="${endpoints[0]}" --command-timeout=20s --cacert "$tls/ca.pem" --cert "$tls/root.pem" \
    --key "$tls/root-key.pem" "$@"
}
expect "put over TLS" "OK" put secure yes
expect "get over TLS" $'secure\nyes' get secure
if got="$(etcdctl --endpoints="${endpoints[0]}" --command-timeout=3s --dial-timeout=3s get secure 2>&1)"; then
  fail "etcdctl without TLS was answered: $got"
fi
pass "etcdctl without TLS is refused"
tessera_ctl() { "$CARGO_TARGET_DIR/release/tessera" ctl --pd "$pd" --tls-ca "$tls/ca.pem" "$@"; }
got="$(tessera_ctl --tls-cert "$tls/admin.pem" --tls-key "$tls/admin-key.pem" split m 2>&1)" ||
  fail "ctl split with the admin's certificate: $got"
pass "ctl split with the admin's certificate"
if got="$(tessera_ctl --tls-cert "$tls/root.pem" --tls-key "$tls/root-key.pem" --timeout 5 split n 2>&1)"; then
  fail "ctl split with a client's certificate succeeded: $got"
fi
grep -q "needs an admin certificate" <<<"$got" || fail "ctl split with a client's certificate: [$got]"
pass "ctl split with a client's certificate is refused"
echo "clients-check: every check passed"
