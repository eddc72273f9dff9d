#!/usr/bin/env bash
# DNS responder benchmark (issue #5): dnsperf against the in-process responder on 127.0.0.1
# with 1,000 remote services (tests/dns_bench.rs, an #[ignore]d test). The server runs on a
# current_thread runtime pinned to one CPU; dnsperf is pinned to another with taskset.
#
#   bash bench/dns.sh
#   DNS_BENCH_SECONDS=30 DNS_BENCH_CLIENTS=8 bash bench/dns.sh
#
# Knobs (environment): DNS_BENCH_SECONDS (10), DNS_BENCH_CLIENTS (4), DNS_BENCH_MAX_QPS
# (200000), DNS_BENCH_OUTSTANDING (100), DNS_BENCH_SERVER_CPU (0), DNS_BENCH_CLIENT_CPU (1).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v dnsperf >/dev/null; then
    echo "== installing dnsperf (apt)"
    if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dnsperf
fi

echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "== dnsperf: $(dnsperf -h 2>&1 | grep -m1 -i 'version' || dpkg-query -W -f='${Version}' dnsperf)"
cargo test --release --test dns_bench -- --ignored --nocapture --test-threads 1
