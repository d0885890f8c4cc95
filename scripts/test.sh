#!/usr/bin/env bash
# The whole test suite: brings up Docker (tests start their own etcd), checks
# formatting and lints, then runs unit and integration tests on both engines.
# The tests that restart and freeze dockerd, and the one that restarts
# Podman's API service, run last, alone, so that they disturb no other test.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace --all-targets "$@" -- --skip dockerd_restart --skip dockerd_freeze --skip podman_service_restart
# The suites whose subject is etcd's own behaviour (leases, the election
# API, paging, the space quota, auth and TLS, a cluster) once more against
# etcd 3.5 (scripts/setup-etcd35.sh); docs/etcd-versions.md.
RIG_ETCD_BIN=/usr/local/lib/etcd-3.5/bin/etcd cargo test "$@" \
  --test faults_etcd --test tenure --test host_lock --test own_writes --test large_prefix \
  --test list --test informer --test etcd_refusing --test security --test cluster
cargo test --test dockerd_restart --test dockerd_freeze --test podman_restart "$@"
