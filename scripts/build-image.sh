#!/usr/bin/env bash
# Builds the agent's Docker image with the top-level Dockerfile.
#
#   scripts/build-image.sh [--tag TAG] [--base IMAGE] [-- DOCKER-BUILD-ARGS...]
#       From source: the Dockerfile's Rust stage compiles the agent; needs the
#       Rust and runtime base images from their registries.
#   scripts/build-image.sh --prebuilt BINARY [--tag TAG] [--base IMAGE] [-- ...]
#       With a binary cargo already built: the Rust stage is skipped and the
#       binary is copied in; nothing is pulled. Unless --base is given, the
#       runtime base is a local image made FROM scratch that holds exactly the
#       shared libraries BINARY needs (per ldd) and the CA bundle, tagged
#       docker-etcd-register-base:<hash of those files>: built once, shared by
#       every later build that needs the same files, never removed here.
#
# --tag defaults to docker-etcd-register:latest; the tag is printed on stdout
# when the image is built, the build's progress goes to stderr.
#
# The Docker client must build with BuildKit when DOCKER_BUILDKIT=1 (the
# Dockerfile relies on BuildKit skipping the stages an image does not need).
# DOCKER overrides the client; its default is /usr/bin/docker, Debian's
# docker.io client, which does so without buildx.
set -euo pipefail

DOCKER=${DOCKER:-/usr/bin/docker}
export DOCKER_BUILDKIT=1
LOCAL_BASE_REPOSITORY=docker-etcd-register-base

log() { printf 'build-image: %s\n' "$*" >&2; }
die() {
  log "$*"
  exit 2
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

tag=docker-etcd-register:latest
prebuilt=
base=
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) [ $# -ge 2 ] || usage; tag=$2; shift 2 ;;
    --prebuilt) [ $# -ge 2 ] || usage; prebuilt=$2; shift 2 ;;
    --base) [ $# -ge 2 ] || usage; base=$2; shift 2 ;;
    --) shift; break ;;
    -h | --help) usage ;;
    *) log "unknown argument: $1"; usage ;;
  esac
done

[ -x "$DOCKER" ] || die "no Docker client at $DOCKER (set DOCKER)"
if [ -n "$prebuilt" ]; then
  if [ ! -f "$prebuilt" ] || [ ! -x "$prebuilt" ]; then
    die "--prebuilt $prebuilt is not an executable file"
  fi
  prebuilt=$(realpath -- "$prebuilt")
fi
cd "$(dirname "$0")/.."

tmp_dirs=()
cleanup() { [ "${#tmp_dirs[@]}" -eq 0 ] || rm -rf "${tmp_dirs[@]}"; }
trap cleanup EXIT

# The absolute paths of the shared objects BINARY loads, the loader included
# (not the kernel's vDSO); nothing for a static binary.
shared_libraries() {
  local binary=$1 output
  if ! output=$(ldd "$binary" 2>&1); then
    case "$output" in
      *"not a dynamic executable"* | *"statically linked"*) return 0 ;;
      *) die "ldd $binary failed: $output" ;;
    esac
  fi
  if grep -q 'not found' <<<"$output"; then
    die "$binary needs libraries this host lacks: $output"
  fi
  # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and
  # "/lib64/ld-linux-x86-64.so.2 (0x...)"
  awk '$2 == "=>" && $3 ~ /^\// { print $3; next } $1 ~ /^\// { print $1 }' <<<"$output" | sort -u
}

# Sets `base` to the local FROM-scratch runtime base for BINARY, building it
# unless an image with the same files exists.
ensure_local_base() {
  local binary=$1 libraries files=() path
  libraries=$(shared_libraries "$binary")
  [ -z "$libraries" ] || mapfile -t files <<<"$libraries"
  [ -f /etc/ssl/certs/ca-certificates.crt ] && files+=(/etc/ssl/certs/ca-certificates.crt)
  local fingerprint
  fingerprint=$(
    for path in "${files[@]}"; do
      printf '%s %s\n' "$path" "$(sha256sum <"$path" | cut -d' ' -f1)"
    done | sha256sum | cut -c1-16
  )
  base=$LOCAL_BASE_REPOSITORY:$fingerprint
  if "$DOCKER" image inspect "$base" >/dev/null 2>&1; then
    return
  fi
  log "building $base FROM scratch with ${files[*]}"
  local context
  context=$(mktemp -d)
  tmp_dirs+=("$context")
  mkdir -p "$context/rootfs"
  for path in "${files[@]}"; do
    mkdir -p "$context/rootfs$(dirname "$path")"
    cp -L "$path" "$context/rootfs$path"
  done
  printf 'FROM scratch\nCOPY rootfs/ /\n' >"$context/Dockerfile"
  "$DOCKER" build --tag "$base" "$context" >&2
}

if [ -n "$prebuilt" ]; then
  if [ -z "$base" ]; then
    ensure_local_base "$prebuilt"
  fi
  # A context of just the Dockerfile and the binary: nothing else is sent.
  context=$(mktemp -d)
  tmp_dirs+=("$context")
  cp Dockerfile "$context/Dockerfile"
  ln "$prebuilt" "$context/docker-etcd-register" 2>/dev/null || cp "$prebuilt" "$context/docker-etcd-register"
  log "building $tag from $prebuilt on $base"
  "$DOCKER" build --tag "$tag" \
    --build-arg BINARY_SOURCE=prebuilt \
    --build-arg "RUNTIME_BASE=$base" \
    "$@" "$context" >&2
else
  base_args=()
  [ -z "$base" ] || base_args=(--build-arg "RUNTIME_BASE=$base")
  log "building $tag from source"
  "$DOCKER" build --tag "$tag" "${base_args[@]}" "$@" . >&2
fi
printf '%s\n' "$tag"
