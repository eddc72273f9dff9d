# Container image for the sdn-tunnel agent.
# Minimal placeholder: builds the binary and ships it on Debian with nftables. The full image
# (DaemonSet use, non-root capabilities, labels, multi-arch, ...) is issue #6.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin sdn-tunnel

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/sdn-tunnel /usr/local/bin/sdn-tunnel
ENTRYPOINT ["/usr/local/bin/sdn-tunnel"]
CMD ["agent", "--config", "/etc/sdn-tunnel/config.yaml"]
