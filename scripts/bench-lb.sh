#!/usr/bin/env bash
# Benchmark of the path to traffic on this machine: containers → the agent →
# etcd → `render` → haproxy → a client on loopback (see examples/bench_lb.rs).
#
#   bash scripts/bench-lb.sh [--starts N] [--replacements N] [--mode tcp|http]
#
# Brings up Docker, haproxy and nginx (scripts/setup.sh), builds the release
# binary and the benchmark, and prints the time from `docker run` returning to
# the first request served through haproxy (p50, p90, max over N starts,
# default 50) and the failed requests during N rolling replacements (default
# 20) with the example in haproxy's `tcp` (default) or `http` mode; the last line of stdout is one JSON object. The logs of the agent and
# of `render` are kept in target/bench-lb/. It takes a few minutes; everything
# it starts is removed when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi

bash scripts/setup.sh
cargo build --release --quiet
cargo build --release --quiet --example bench_lb
target/release/examples/bench_lb --agent "$PWD/target/release/docker-etcd-register" "$@"
