#!/usr/bin/env bash
# Brings up Docker, Podman and a local etcd (if none answers on 127.0.0.1:2379),
# builds the daemon and runs it in the foreground against them.
# Extra arguments go to the daemon; HOST_IP defaults to this host's first address.
# ENGINE=podman follows Podman's rootful socket instead of dockerd.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/setup.sh

etcd_endpoint=http://127.0.0.1:2379
if ! ETCDCTL_API=3 etcdctl --endpoints "$etcd_endpoint" --dial-timeout 1s endpoint health >/dev/null 2>&1; then
  data_dir=/var/lib/docker-etcd-register/dev-etcd
  mkdir -p "$data_dir"
  echo "run: starting etcd on $etcd_endpoint (data: $data_dir, log: /var/log/docker-etcd-register-etcd.log)" >&2
  setsid etcd --name dev --data-dir "$data_dir" \
    --listen-client-urls "$etcd_endpoint" --advertise-client-urls "$etcd_endpoint" \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster dev=http://127.0.0.1:2380 \
    >/var/log/docker-etcd-register-etcd.log 2>&1 </dev/null &
  for _ in $(seq 1 100); do
    ETCDCTL_API=3 etcdctl --endpoints "$etcd_endpoint" --dial-timeout 1s endpoint health >/dev/null 2>&1 && break
    sleep 0.1
  done
fi

# Cargo's own progress (crate by crate, then the binary): the first build
# compiles about 300 crates, which takes a few minutes on two cores.
echo "run: building the release binary (the first build takes a few minutes)" >&2
cargo build --release
case "${ENGINE:-docker}" in
  docker) ;;
  podman) export DOCKER_HOST=unix:///run/podman/podman.sock ;;
  *) echo "run: ENGINE must be docker or podman, not ${ENGINE}" >&2; exit 2 ;;
esac
host_ip=${HOST_IP:-$(hostname -I 2>/dev/null | awk '{print $1}')}
export HOST_IP=${host_ip:-127.0.0.1}
export ETCD_ENDPOINT=${ETCD_ENDPOINT:-$etcd_endpoint}
exec ./target/release/docker-etcd-register "$@"
