#!/usr/bin/env bash
# Benchmark of the agent on this machine, against the real dockerd and a
# private etcd per run (see examples/bench/main.rs for what is measured).
#
#   bash scripts/bench.sh [--engine docker|podman] [--runs N] [--containers N] [--burst N]
#                         [--workers N] [--idle-secs N]
#
# --engine podman measures the agent on rootful Podman's Docker-compatible API
# (/run/podman/podman.sock) instead of dockerd.
# Brings up the engines (scripts/setup.sh), builds the release binary and the
# benchmark, runs it N times (default 3) and prints the medians as a table and,
# on the last line of stdout, as one JSON object. Progress goes to stderr; the
# agent's log of run i is kept in target/bench/agent-run<i>.log.
# A run takes a few minutes. Everything a run starts is removed when it ends,
# also when the benchmark is interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

LABEL_KEY=docker-etcd-register.bench

usage() {
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
}

runs=3
engine=docker
passed=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --engine) engine="${2:?--engine needs a value}"; shift 2 ;;
    --engine=*) engine="${1#--engine=}"; shift ;;
    --runs) runs="${2:?--runs needs a value}"; shift 2 ;;
    --runs=*) runs="${1#--runs=}"; shift ;;
    -h | --help) usage; exit 0 ;;
    *) passed+=("$1"); shift ;;
  esac
done
case "$engine" in
  docker | podman) ;;
  *) echo "bench: --engine is docker or podman, not $engine" >&2; exit 2 ;;
esac

# Label values of this invocation's containers start with this id.
id="sh$$-$(date +%s)"

# Containers left behind by an interrupted benchmark (its own ones only),
# removed 8-way: removing many at once makes Docker 20.10's networking
# deadlock likelier (moby/moby#42545).
remove_leftovers() {
  local ids
  ids=$(timeout 60 "$engine" ps -a --no-trunc --filter "label=$LABEL_KEY" \
      --format "{{.ID}} {{.Label \"$LABEL_KEY\"}}" 2>/dev/null |
    awk -v id="$id-" 'index($2, id) == 1 { print $1 }') || return 0
  if [ -n "$ids" ]; then
    printf '%s\n' "$ids" |
      xargs -r -n 1 -P 8 timeout 60 "$engine" rm -f >/dev/null 2>&1 || true
  fi
}
trap remove_leftovers EXIT

# A dockerd that runs but does not answer would make everything below wait
# forever (setup.sh included).
if timeout 30 docker info >/dev/null 2>&1; [ "$?" -eq 124 ]; then
  echo "bench: dockerd is running but does not answer \`docker info\` within 30 s;" \
    "it may be deadlocked (Docker 20.10, moby/moby#42545): restart it" >&2
  exit 1
fi

bash scripts/setup.sh
cargo build --release --quiet
cargo build --release --quiet --example bench
target/release/examples/bench --runs "$runs" --id "$id" --engine "$engine" \
  --agent "$PWD/target/release/docker-etcd-register" "${passed[@]}"
