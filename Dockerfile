# Image of the docker-etcd-register agent. Needs BuildKit (Docker 20.10's own
# `DOCKER_BUILDKIT=1 docker build`, or buildx): it builds only the stages the
# image needs, so the Rust stage is skipped when the binary is prebuilt.
#
# From source (pulls the Rust and the runtime base images):
#   DOCKER_BUILDKIT=1 docker build -t docker-etcd-register .
# With a binary cargo already built (see scripts/build-image.sh --prebuilt),
# from a context holding this file and the binary `docker-etcd-register`:
#   DOCKER_BUILDKIT=1 docker build --build-arg BINARY_SOURCE=prebuilt \
#     --build-arg RUNTIME_BASE=<local base image> -t docker-etcd-register <context>
#
# The agent must run as root (or in the `docker` group) to use the Docker
# socket, so the image keeps the base's root user.

# The Rust toolchain image; its Debian release must match the runtime base's
# glibc (bookworm ↔ distroless/cc-debian12). The lock file needs Rust 1.88.
ARG RUST_IMAGE=rust:1.88-slim-bookworm
# Any base that holds glibc's loader, libc, libm and libgcc_s.
ARG RUNTIME_BASE=gcr.io/distroless/cc-debian12
# `build` compiles from source; `prebuilt` copies ./docker-etcd-register.
ARG BINARY_SOURCE=build

FROM ${RUST_IMAGE} AS build
# protoc and the well-known .proto files (google/protobuf/*.proto), which
# etcd-client's build script compiles.
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin docker-etcd-register \
 && install -D -m 0755 target/release/docker-etcd-register /out/docker-etcd-register

FROM scratch AS prebuilt
COPY docker-etcd-register /out/docker-etcd-register

FROM ${BINARY_SOURCE} AS binary

FROM ${RUNTIME_BASE}
LABEL org.opencontainers.image.title="docker-etcd-register" \
      org.opencontainers.image.description="Keeps etcd v3 equal to the published ports of the containers running on a Docker host" \
      org.opencontainers.image.licenses="MIT"
COPY --from=binary /out/docker-etcd-register /usr/local/bin/docker-etcd-register
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/docker-etcd-register"]
