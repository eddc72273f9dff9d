#!/usr/bin/env bash
# Benchmark (not a test), as root: on the same lab topology, in one go, pod -> pod across two
# clusters through plain routing, Debian's wireguard-go, current wireguard-go (built from its
# Go module), boringtun-cli (default threads and one thread; crates.io) and the sdn-tunnel agent:
# iperf3 TCP 1 and 4 streams, ping RTT, CPU seconds per GB; medians of interleaved rounds and
# the ratios, printed as a markdown table for docs/performance.md. About 6 minutes with the
# defaults, plus about 3 minutes the first time to build the references
# (scripts/bench-refs.sh). Extra arguments go to `sdn-lab bench` (--rounds N, --duration S,
# --modes plain,wireguard-go-current,sdn-tunnel).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo build --release --workspace
exec target/release/sdn-lab bench --bin target/release/sdn-tunnel "$@"
