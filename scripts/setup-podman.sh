#!/usr/bin/env bash
# Brings up rootful Podman beside dockerd on a Debian machine, as root: Debian's
# podman, a containers.conf drop-in with rlimits this kernel accepts, Podman's
# Docker-compatible API on /run/podman/podman.sock, and a local
# `localhost/busybox:latest` built FROM scratch like setup.sh's busybox.
# Idempotent: whatever is already installed or running is left as it is.
set -euo pipefail

log() { printf 'setup-podman: %s\n' "$*" >&2; }

readonly podman_socket=/run/podman/podman.sock
readonly podman_log=/var/log/docker-etcd-register-podman.log
readonly containers_conf=/etc/containers/containers.conf.d/docker-etcd-register.conf

install_missing_packages() {
  # catatonit: the init of the infra container of pods (Podman builds its pause
  # image from it); uidmap and slirp4netns: rootless Podman.
  local wanted=(podman catatonit uidmap slirp4netns busybox-static)
  local missing=()
  for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

install_containers_conf() {
  # Podman's default rlimits (nofile and nproc raised to the hard maximum) are
  # refused by some kernels: "error setting rlimit type 7". These are accepted.
  local wanted='[containers]
default_ulimits = ["nofile=1024:20000", "nproc=1024:1024"]'
  if [ -f "$containers_conf" ] && [ "$(cat "$containers_conf")" = "$wanted" ]; then
    return
  fi
  log "writing $containers_conf"
  mkdir -p "$(dirname "$containers_conf")"
  printf '%s\n' "$wanted" >"$containers_conf"
}

podman_answers() {
  curl -sf --max-time 2 --unix-socket "$podman_socket" http://d/_ping >/dev/null 2>&1
}

start_podman_service() {
  if podman_answers; then
    return
  fi
  log "starting podman system service on $podman_socket (log: $podman_log)"
  mkdir -p "$(dirname "$podman_socket")"
  # setsid: the service must outlive this script; --time=0: never exit when idle.
  setsid podman system service --time=0 "unix://$podman_socket" >>"$podman_log" 2>&1 </dev/null &
  for _ in $(seq 1 150); do
    podman_answers && return
    sleep 0.2
  done
  log "podman system service did not come up; last lines of its log:"
  tail -n 20 "$podman_log" >&2
  exit 1
}

build_busybox_image() {
  if podman image exists localhost/busybox:latest; then
    return
  fi
  log "building localhost/busybox:latest FROM scratch with Debian's busybox-static"
  local context
  context=$(mktemp -d)
  mkdir -p "$context/bin"
  cp /bin/busybox "$context/bin/busybox"
  # Applet links, so that `sh`, `sleep`, `test` and shell-form HEALTHCHECKs work.
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$context/bin/$applet"
  done
  mkdir -p "$context/tmp"
  cat >"$context/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY bin /bin
COPY tmp /tmp
ENV PATH=/bin
CMD ["sh"]
DOCKERFILE
  local output
  local status=0
  # --format docker: keeps HEALTHCHECK instructions of images built on top.
  output=$(podman build -q --format docker -t localhost/busybox:latest "$context" 2>&1) || status=$?
  rm -rf "$context"
  if [ "$status" -ne 0 ]; then
    printf '%s\n' "$output" >&2
    exit 1
  fi
}

install_missing_packages
install_containers_conf
start_podman_service
build_busybox_image
log "ready: $(podman --version), API socket $podman_socket"
