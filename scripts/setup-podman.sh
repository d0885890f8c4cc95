#!/usr/bin/env bash
# Brings up rootful Podman beside dockerd on a Debian machine, as root: Debian's
# podman, a containers.conf drop-in with rlimits this kernel accepts, Podman's
# Docker-compatible API on /run/podman/podman.sock, and a local
# `localhost/busybox:latest` built FROM scratch like setup.sh's busybox.
# Then the same for rootless Podman: a dedicated unprivileged user
# (der-rootless) whose own API service listens on
# /run/user/<uid>/podman/podman.sock, with its own copy of the image.
# Idempotent: whatever is already installed or running is left as it is.
set -euo pipefail

log() { printf 'setup-podman: %s\n' "$*" >&2; }

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly podman_socket=/run/podman/podman.sock
readonly podman_log=/var/log/docker-etcd-register-podman.log
readonly containers_conf=/etc/containers/containers.conf.d/docker-etcd-register.conf
readonly rootless_user=der-rootless
# A range of subordinate ids no other user of this machine has (useradd gives
# interactive users 100000-…; this stays clear of them).
readonly rootless_subids=2000000-2065535
readonly rootless_log=/var/log/docker-etcd-register-podman-rootless.log

install_missing_packages() {
  # catatonit: the init of the infra container of pods (Podman builds its pause
  # image from it); uidmap and slirp4netns: rootless Podman.
  local wanted=(podman catatonit uidmap slirp4netns busybox-static)
  install_missing "${wanted[@]}"
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

# socket_answers SOCKET: whether a Podman API answers _ping on SOCKET.
socket_answers() {
  curl -sf --max-time 2 --unix-socket "$1" http://d/_ping >/dev/null 2>&1
}

podman_answers() {
  socket_answers "$podman_socket"
}

start_podman_service() {
  if podman_answers; then
    return
  fi
  log "starting podman system service on $podman_socket (log: $podman_log)"
  mkdir -p "$(dirname "$podman_socket")"
  # setsid: the service must outlive this script; --time=0: never exit when idle.
  # Started in /: its containers' conmon runs in its working directory, which
  # must outlive the checkout this script runs from.
  (cd / && exec setsid podman system service --time=0 "unix://$podman_socket" \
    >>"$podman_log" 2>&1 </dev/null) &
  for _ in $(seq 1 150); do
    podman_answers && return
    sleep 0.2
  done
  log "podman system service did not come up; last lines of its log:"
  tail -n 20 "$podman_log" >&2
  exit 1
}

# build_busybox_image [RUNNER]: builds the image into the storage of the
# user RUNNER runs podman as (`as_rootless`; root's without).
build_busybox_image() {
  if "$@" podman image exists localhost/busybox:latest; then
    return
  fi
  log "building localhost/busybox:latest FROM scratch with Debian's busybox-static ${*:+($*)}"
  local context
  context=$(make_busybox_context)
  local output
  local status=0
  # --format docker: keeps HEALTHCHECK instructions of images built on top.
  output=$("$@" podman build -q --format docker -t localhost/busybox:latest "$context" 2>&1) || status=$?
  rm -rf "$context"
  if [ "$status" -ne 0 ]; then
    printf '%s\n' "$output" >&2
    exit 1
  fi
}

# --- Rootless Podman ---------------------------------------------------------

rootless_uid() {
  id -u "$rootless_user"
}

rootless_socket() {
  printf '/run/user/%s/podman/podman.sock' "$(rootless_uid)"
}

# as_rootless CMD...: CMD as the rootless user, in its own environment (there
# is no logind here to set XDG_RUNTIME_DIR or create /run/user/<uid>).
as_rootless() {
  runuser -u "$rootless_user" -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    HOME="$(getent passwd "$rootless_user" | cut -d: -f6)" \
    XDG_RUNTIME_DIR="/run/user/$(rootless_uid)" "$@"
}

set_up_rootless_user() {
  if ! id "$rootless_user" >/dev/null 2>&1; then
    log "creating user $rootless_user"
    useradd --system --create-home --home-dir "/var/lib/$rootless_user" \
      --shell /usr/sbin/nologin "$rootless_user"
  fi
  # Rootless Podman maps the container's users onto these subordinate ids.
  grep -q "^$rootless_user:" /etc/subuid || usermod --add-subuids "$rootless_subids" "$rootless_user"
  grep -q "^$rootless_user:" /etc/subgid || usermod --add-subgids "$rootless_subids" "$rootless_user"
  # What logind does at login: a runtime directory only the user can enter.
  local runtime_dir
  runtime_dir="/run/user/$(rootless_uid)"
  install -d -m 0700 -o "$rootless_user" -g "$rootless_user" "$runtime_dir" "$runtime_dir/podman"
}

make_tun_usable() {
  # Rootless Podman publishes ports through slirp4netns, which needs a tap
  # device from /dev/net/tun. Debian's udev creates it 0666 (the kernel lets
  # a process create taps only in a network namespace it owns); some VM
  # images leave it 0600 root, and every published port then fails with
  # `slirp4netns failed: "open(\"/dev/net/tun\"): Permission denied"`.
  if [ -c /dev/net/tun ] && [ "$(stat -c %a /dev/net/tun)" != 666 ]; then
    log "chmod 0666 /dev/net/tun (Debian's default; rootless publishing needs it)"
    chmod 0666 /dev/net/tun
  fi
}

write_rootless_storage_conf() {
  # vfs: needs neither fuse-overlayfs nor /dev/fuse, and the busybox image
  # is 2 MB, so a full copy per container costs little.
  local conf
  conf="$(getent passwd "$rootless_user" | cut -d: -f6)/.config/containers/storage.conf"
  local wanted='[storage]
driver = "vfs"'
  if [ -f "$conf" ] && [ "$(cat "$conf")" = "$wanted" ]; then
    return
  fi
  log "writing $conf"
  as_rootless mkdir -p "$(dirname "$conf")"
  printf '%s\n' "$wanted" | as_rootless tee "$conf" >/dev/null
}

start_rootless_service() {
  local socket
  socket=$(rootless_socket)
  if socket_answers "$socket"; then
    return
  fi
  log "starting $rootless_user's podman system service on $socket (log: $rootless_log)"
  # setsid: the service must outlive this script; --time=0: never exit when
  # idle. The system containers.conf.d drop-in (rlimits) applies here too.
  # Started in the user's home: conmon, which the service starts for every
  # container, fails ("Failed to get working directory") in a directory the
  # user cannot enter, such as root's checkout of this project.
  local home
  home=$(getent passwd "$rootless_user" | cut -d: -f6)
  local runtime_dir
  runtime_dir="/run/user/$(rootless_uid)"
  (cd "$home" && exec setsid runuser -u "$rootless_user" -- env -i \
    PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$home" XDG_RUNTIME_DIR="$runtime_dir" \
    podman system service --time=0 "unix://$socket" >>"$rootless_log" 2>&1 </dev/null) &
  for _ in $(seq 1 150); do
    socket_answers "$socket" && return
    sleep 0.2
  done
  log "the rootless podman system service did not come up; last lines of its log:"
  tail -n 20 "$rootless_log" >&2
  exit 1
}

# --- Main ----------------------------------------------------------------------

install_missing_packages
install_containers_conf
start_podman_service
build_busybox_image
log "ready: $(podman --version), API socket $podman_socket"
set_up_rootless_user
make_tun_usable
write_rootless_storage_conf
start_rootless_service
# Built by the user's own podman: Podman 4.3's remote build (`podman --url`)
# fails on FROM scratch ("short-name \"build\" did not resolve").
build_busybox_image as_rootless
log "ready: rootless Podman of $rootless_user, API socket $(rootless_socket)"
