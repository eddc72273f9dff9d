#!/usr/bin/env bash
# Benchmark: programming 10,000 services x 10 destinations into kernel IPVS with our backend
# (IpvsBackend::sync, and the pure diff + pipelined apply) against `ipvsadm -R` fed the same
# rules, in one boot of the test VM (../shared/vm/vm-run, stock Debian kernel under TCG), then
# the latency of one endpoint change (200 times). The pure diff of one change is also timed
# natively on the host. Results and caveats: docs/performance.md.
# Targets: ours no slower than `ipvsadm -R`; one change p99 < 20 ms.
# Needs root. Takes 10-20 minutes under TCG.
#
# Knobs (environment): IPVS_BENCH_SERVICES (10000), IPVS_BENCH_DESTS (10),
# IPVS_BENCH_ROUNDS (3), IPVS_BENCH_CHANGES (200), IPVS_BENCH_VM_TIMEOUT (s, 5400),
# SDN_TUNNEL_VM_RUN (path of vm-run).
set -euo pipefail
cd "$(dirname "$0")/.."

[[ $(id -u) -eq 0 ]] || { echo "ipvs.sh: needs root (vm-run)" >&2; exit 1; }
exec cargo test --release --test vm_ipvs_bench -- --ignored --nocapture "$@"
