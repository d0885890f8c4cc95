#!/usr/bin/env bash
# Benchmark of the path to traffic on this machine, for four load balancers
# side by side: containers → the agent → etcd → `render` → haproxy, nginx,
# Envoy and Traefik (the shipped examples) → a client on loopback (see
# examples/bench_lb/main.rs).
#
#   bash scripts/bench-lb.sh [--starts N] [--replacements N] [--mode tcp|http]
#                            [--proxies haproxy,nginx,envoy,traefik]
#                            [--debounce-reload MS] [--debounce-in-process MS]
#
# Brings up Docker and the four proxies (scripts/setup.sh), builds the release
# binary and the benchmark, and prints, per proxy, the time from `docker run`
# returning to each stage (record in etcd, file written, first request served
# through the proxy; p50, p90, max over N starts, default 50) and the failed
# requests of a client loop during N rolling replacements (default 20). The
# last line of stdout is one JSON object. The logs of every process are kept
# in target/bench-lb/. It takes a few minutes; everything it starts is removed
# when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
  sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi

bash scripts/setup.sh
cargo build --release --quiet
cargo build --release --quiet --example bench_lb
target/release/examples/bench_lb --agent "$PWD/target/release/docker-etcd-register" "$@"
