#!/usr/bin/env bash
# The main job: a local multi-cluster demo in network namespaces (as root).
# Builds the release binaries, brings up two clusters x two nodes with a real sdn-tunnel agent
# per node, shows pod -> pod traffic across clusters, `sdn-tunnel status` and `wg show`, then
# tears everything down. Extra arguments go to `sdn-lab demo` (e.g. --keep, --foreign, --ipv6,
# --clusters 3); see `target/release/sdn-lab demo --help`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo build --release --workspace
exec target/release/sdn-lab demo --bin target/release/sdn-tunnel "$@"
