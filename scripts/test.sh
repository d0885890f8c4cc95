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
cargo test --test dockerd_restart --test dockerd_freeze --test podman_restart "$@"
