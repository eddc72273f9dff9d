#!/usr/bin/env bash
# The main job: a local multi-cluster demo in network namespaces (as root).
# Builds the release binaries, brings up two clusters x two nodes with a real sdn-tunnel agent
# per node, shows pod -> pod traffic across clusters, `sdn-tunnel status` and `wg show`, then
# tears everything down. Extra arguments go to `sdn-lab demo` (e.g. --keep, --foreign, --ipv6,
# --clusters 3); see `target/release/sdn-lab demo --help`.
#
#   bash scripts/demo.sh --kube [--keep]   the same story on real Kubernetes clusters (the
#                                          DaemonSet applied with kubectl; docs/kube-lab.md);
#                                          the first run builds Kubernetes (~20 minutes, cached)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--kube" ]]; then
    shift
    bash scripts/setup.sh --kube
    bash scripts/kube-bins.sh >/dev/null
    cargo build --release --workspace
    exec target/release/sdn-lab kube demo --bin target/release/sdn-tunnel "$@"
fi
bash scripts/setup.sh
cargo build --release --workspace
exec target/release/sdn-lab demo --bin target/release/sdn-tunnel "$@"
