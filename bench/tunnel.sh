#!/usr/bin/env bash
# Benchmark (not a test), as root: on the same lab topology, in one go, pod -> pod across two
# clusters through (a) plain routing, (b) Debian's wireguard-go, (c) the sdn-tunnel agent:
# iperf3 TCP 1 and 4 streams, ping RTT, CPU seconds per GB; medians of interleaved rounds and
# the ratios, printed as a markdown table for docs/performance.md. ~2-3 minutes.
# Extra arguments go to `sdn-lab bench` (--rounds N, --duration S, --modes plain,wireguard-go).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo build --release --workspace
exec target/release/sdn-lab bench --bin target/release/sdn-tunnel "$@"
