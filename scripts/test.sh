#!/usr/bin/env bash
# The whole test suite: brings up Docker (tests start their own etcd), checks
# formatting and lints, then runs unit and integration tests. The test that
# restarts dockerd runs last, alone, so that it disturbs no other test.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets "$@" -- --skip dockerd_restart
cargo test --test dockerd_restart "$@"
