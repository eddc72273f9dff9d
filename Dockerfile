# syntax=docker/dockerfile:1
# Container image of the sdn-tunnel agent (DaemonSet: deploy/base/daemonset.yaml).
#
#   docker build -t sdn-tunnel .                     # runtime image (default, last stage)
#   docker build --target debug -t sdn-tunnel:debug . # + wg, ipvsadm, iproute2 for debugging
#
# Without a Rust builder image (air-gapped builds, the real-Kubernetes lab): put a release
# binary built on a glibc-compatible host at prebuilt/sdn-tunnel in the build context and pass
# --build-arg BINARY_FROM=prebuilt; --build-arg BASE_IMAGE=... names a locally made Debian base
# (the lab's scripts/lab-images.sh does both; see docs/install.md).
#
# Runtime base: debian:bookworm-slim, not gcr.io/distroless/cc-debian12. The agent execs the
# `nft` binary (MSS clamping and host SNAT in src/nft.rs, the nftables proxy backend in
# src/proxy/nft_backend.rs), and distroless has no nftables: copying nft and its eight shared
# libraries into distroless by hand would be fragile. The binary links only glibc and libgcc
# (TLS is rustls), which bookworm-slim has. Nothing in the image needs a shell at run time: the
# entrypoint is the binary itself (exec form), and the DaemonSet's probes exec the binary too.
# Linted by hadolint in scripts/check-manifests.sh.

ARG RUST_VERSION=1
ARG DEBIAN_RELEASE=bookworm
ARG BASE_IMAGE=debian:${DEBIAN_RELEASE}-slim
# Where the binary comes from: "build" (compiled below) or "prebuilt" (prebuilt/sdn-tunnel).
ARG BINARY_FROM=build

# --- build ---------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
# Only what the workspace needs to build (.dockerignore keeps target/, .git/, docs out).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY lab ./lab
COPY fakekube ./fakekube
COPY examples ./examples
# profile.release keeps line tables (debug = 1) for local profiling; the image does not need them.
ENV CARGO_PROFILE_RELEASE_STRIP=debuginfo
RUN cargo build --release --locked --package sdn-tunnel --bin sdn-tunnel \
 && install -D -m 0755 target/release/sdn-tunnel /out/sdn-tunnel

# --- prebuilt: a release binary from the build context instead --------------------------------
FROM scratch AS prebuilt
COPY prebuilt/sdn-tunnel /out/sdn-tunnel

# hadolint ignore=DL3006
FROM ${BINARY_FROM} AS binary

# --- base: the runtime image ---------------------------------------------------------------------
# hadolint ignore=DL3006
FROM ${BASE_IMAGE} AS base
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="sdn-tunnel" \
      org.opencontainers.image.description="Per-node agent connecting Kubernetes clusters over userspace WireGuard" \
      org.opencontainers.image.source="https://github.com/sdn-tunnel/sdn-tunnel" \
      org.opencontainers.image.documentation="https://github.com/sdn-tunnel/sdn-tunnel/blob/main/docs/install.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"
# Unpinned on purpose (DL3008): Debian stable only ships security fixes, and pinning exact
# versions would break the build with each fix. Pin the base image digest for reproducibility.
# nftables: the agent execs `nft` (MSS clamping, host SNAT, the nftables proxy backend);
# netbase: /etc/protocols and /etc/services, which nft reads to print and parse names;
# ca-certificates: the system roots, which the Kubernetes client (rustls) loads when it builds
# a connection, and needs for an API server with a publicly trusted certificate (without them
# every client fails: "No CA certificates were loaded from the system").
# No kmod: the kernel loads ip_vs itself when the agent opens its netlink family (Linux 5.16+).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables netbase ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=binary /out/sdn-tunnel /usr/local/bin/sdn-tunnel
# No USER: the agent runs as root (uid 0) in a privileged container (deploy/base/daemonset.yaml
# says why): it owns network objects of the node and writes its network sysctls.
# Documentation only (the agent runs with hostNetwork): WireGuard, metrics/probes, DNS.
EXPOSE 51830/udp 9477/tcp 10053/udp 10053/tcp
ENTRYPOINT ["/usr/local/bin/sdn-tunnel"]
CMD ["agent", "--config", "/etc/sdn-tunnel/config.yaml"]

# --- debug: the runtime plus wg, ipvsadm and ip, to look at what the agent programmed -----------
FROM base AS debug
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends wireguard-tools ipvsadm iproute2 \
 && rm -rf /var/lib/apt/lists/*

# --- runtime: the default target (a plain `docker build` builds the last stage) ----------------
FROM base AS runtime
