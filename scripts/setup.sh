#!/usr/bin/env bash
# Brings up everything the daemon and its tests need on a Debian machine, as
# root: a block of ports only the tests use, Debian's docker.io, etcd, protoc,
# busybox-static, haproxy and nginx (the load balancers of tests/render.rs,
# never left running as services), prometheus (for promtool, which tests the
# alerting rules; its server is never left running either), a running
# dockerd, and a local
# `busybox:latest` image built FROM scratch (no registry is needed).
# Idempotent: whatever is already installed or running is left as it is.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

install_missing_packages() {
  local wanted=(docker.io etcd-server etcd-client protobuf-compiler libprotobuf-dev busybox-static iptables systemd haproxy nginx prometheus)
  without_service_starts install_missing "${wanted[@]}"
  stop_load_balancer_services
}

# Runs "$@" with a policy-rc.d that forbids starting services (exit 101), so
# that installing haproxy or nginx does not start them on port 80; a
# policy-rc.d that was already there (Docker images ship one) is left as it is.
without_service_starts() {
  local policy=/usr/sbin/policy-rc.d
  if [ -e "$policy" ]; then
    "$@"
    return
  fi
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  local status=0
  "$@" || status=$?
  rm -f "$policy"
  return "$status"
}

# The tests run haproxy and nginx as their own processes on their own ports,
# and need only prometheus's promtool: a service started by a package (before
# this script, or by systemd) is stopped and disabled so that it holds no port.
stop_load_balancer_services() {
  local service
  for service in haproxy nginx prometheus prometheus-node-exporter; do
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
      systemctl disable --now "$service" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$service" ]; then
      "/etc/init.d/$service" stop >/dev/null 2>&1 || true
    fi
  done
}

# The tests' own ports (rig/src/ports.rs): no engine, no test and not the
# kernel may hand one of them out by itself. They are below Linux's default
# ephemeral range; reserving them keeps the kernel off them on a machine
# whose ip_local_port_range reaches down there too.
readonly test_ports=20000-32767

reserve_test_ports() {
  local reserved
  reserved=$(cat /proc/sys/net/ipv4/ip_local_reserved_ports)
  case ",$reserved," in
  *",$test_ports,"*) return ;;
  esac
  log "reserving ports $test_ports for the tests (net.ipv4.ip_local_reserved_ports)"
  printf '%s\n' "${reserved:+$reserved,}$test_ports" >/proc/sys/net/ipv4/ip_local_reserved_ports
}

start_dockerd() {
  if docker info >/dev/null 2>&1; then
    return
  fi
  log "starting dockerd (log: /var/log/docker-etcd-register-dockerd.log)"
  # setsid: dockerd must outlive this script and the shell that ran it.
  # No userland proxy: published ports are plain iptables rules, so a container
  # publishing hundreds of ports does not start hundreds of proxy processes.
  setsid dockerd --userland-proxy=false >/var/log/docker-etcd-register-dockerd.log 2>&1 </dev/null &
  for _ in $(seq 1 150); do
    docker info >/dev/null 2>&1 && return
    sleep 0.2
  done
  log "dockerd did not come up; last lines of its log:"
  tail -n 20 /var/log/docker-etcd-register-dockerd.log >&2
  exit 1
}

build_busybox_image() {
  if docker image inspect busybox:latest >/dev/null 2>&1; then
    return
  fi
  log "building busybox:latest FROM scratch with Debian's busybox-static"
  local context
  context=$(make_busybox_context)
  local output
  local status=0
  output=$(DOCKER_BUILDKIT=0 docker build -q -t busybox:latest "$context" 2>&1) || status=$?
  rm -rf "$context"
  if [ "$status" -ne 0 ]; then
    printf '%s\n' "$output" >&2
    exit 1
  fi
}

install_missing_packages
reserve_test_ports
start_dockerd
build_busybox_image
log "ready: $(docker version --format 'engine {{.Server.Version}}, API {{.Server.APIVersion}}')"
bash "$(dirname "${BASH_SOURCE[0]}")/setup-podman.sh"
bash "$(dirname "${BASH_SOURCE[0]}")/setup-proxies.sh"
bash "$(dirname "${BASH_SOURCE[0]}")/setup-etcd35.sh"
