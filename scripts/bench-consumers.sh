#!/usr/bin/env bash
# Benchmark of the consumers, `list` and `render`, at cluster scale, beside
# etcdctl on the same private etcd (see examples/bench_consumers/main.rs).
#
#   bash scripts/bench-consumers.sh [--records "10000 100000 1000000"] [--runs R]
#                                   [--timeout-secs S] [--changes K] [--hosts H]
#                                   [--bin PATH] [--bin-before PATH]
#                                   [--range-options] [--only-range-options]
#                                   [--range-secs W]
#
# For each record count (default 10,000, 100,000 and 1,000,000, over 1,000
# hosts, 1-3 ports a record) it fills a private etcd with records in the
# agent's format and measures `etcdctl get --prefix -w json`, `list --json`,
# `render --once` (examples/haproxy) and the `render` daemon while K
# containers are added a second apart (default 20): wall time, etcd's CPU
# time, peak RSS; for the daemon also put -> file p50/p90/max and etcd's
# Range requests and CPU per change. --bin measures another build of the
# agent (default: this tree's release binary); --bin-before puts a second
# binary's rows beside its own, on the same fill. A command still running
# after --timeout-secs (default 900) is killed and reported as "timeout".
# R runs (default 1) give medians. Prints a table per count and, on the last
# line of stdout, one JSON object; progress goes to stderr, the commands'
# stderr to target/bench-consumers/. The default counts take about 20
# minutes. Everything it starts is removed when it ends, also when it is
# interrupted.
#
# --range-options (default off) measures, right after each fill, what etcd
# does with each way of reading the whole prefix /registered/: one range
# with no limit (etcdctl's), linearizable and serializable; with keys_only;
# with count_only; pages of 500 keys; pages sized by bytes as the consumers
# size theirs (1, 8 and 32 MiB, src/store/paging.rs), each to the end of the
# prefix and pinned to the first page's revision; pages of 8 MiB whose range
# ends at the next page's first key; single pages of 500 keys by where they
# start. Each way is repeated for at least W seconds (--range-secs, default
# 2); per read: requests, wall time, etcd's CPU time, both also as a
# multiple of the unlimited range's, and the largest response. The table
# follows the count's, and the JSON has it under "range_options".
# --only-range-options measures those and not etcdctl or the consumers.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

usage() {
  sed -n '2,38p' "$0" | sed 's/^# \{0,1\}//'
}

for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
  esac
done

for tool in /usr/bin/etcd etcdctl; do
  if ! command -v "$tool" >/dev/null; then
    echo "bench-consumers: $tool is missing: run \`bash scripts/setup.sh\` (etcd-server, etcd-client)" >&2
    exit 1
  fi
done

cargo build --release --quiet
cargo build --release --quiet --example bench_consumers

# etcd's data and the rendered files (gigabytes at a million records) go to a
# directory of this run, removed however the benchmark ends.
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
# The test rig takes the ports of its etcds by locks in that temporary
# directory (rig/src/ports.rs); the one every other process of the suite
# uses stays the benchmark's too, or a test run at the same time could take
# the benchmark's etcd's ports and write to it.
ports="${TMPDIR:-/tmp}/docker-etcd-register-test-ports"
mkdir -p "$ports"
ln -s "$ports" "$workdir/docker-etcd-register-test-ports"
TMPDIR="$workdir" target/release/examples/bench_consumers "$@"
