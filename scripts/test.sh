#!/usr/bin/env bash
# The whole test suite: formatting, lints, manifest checks, unit tests and (as root) the
# network-namespace lab tests with real agents and real traffic, the VM tests (real IPVS), and
# the real-Kubernetes tests (clusters built from the official components, our DaemonSet and
# playbook applied as users do); last, a smoke run of every fuzz target.
#
# As root it first builds the Kubernetes binaries (scripts/kube-bins.sh; cached outside the
# repository, about 20 minutes the first time) in the background while cargo builds.
set -euo pipefail
cd "$(dirname "$0")/.."

t0=$(date +%s)
stamp() { echo "test.sh: $* ($(($(date +%s) - t0)) s)" >&2; }

root=0
[[ $(id -u) -eq 0 ]] && root=1

# A cold run writes about 20 GiB (cargo targets, fuzz builds, Go cache, the Kubernetes labs'
# images on every node); a full disk otherwise surfaces much later as an odd error on some node.
for d in . /tmp; do
    free_gib=$(($(df -Pk "$d" | awk 'NR == 2 { print $4 }') / 1048576))
    stamp "disk: ${free_gib} GiB free under $(cd "$d" && pwd)"
    if ((free_gib < 15)); then
        echo "test.sh: WARNING: less than 15 GiB free under $d; the suite may fail with 'no space left on device'" >&2
    fi
done
if ((root)); then
    bash scripts/setup.sh --kube
else
    bash scripts/setup.sh
fi

kube_log=$(mktemp)
kube_pid=""
if ((root)); then
    stamp "building the Kubernetes binaries in the background (log: $kube_log)"
    bash scripts/kube-bins.sh >"$kube_log" 2>&1 &
    kube_pid=$!
fi

bash scripts/check-manifests.sh
stamp "manifests checked"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --tests
stamp "built"

if ((root)); then
    # The VM's one-time setup (kernel, initramfs) outside the tests' timings.
    vm_run=../shared/vm/vm-run
    [[ -x $vm_run ]] || vm_run=/work/shared/vm/vm-run
    if [[ -x $vm_run ]]; then "$vm_run" --setup >/dev/null; fi
    if ! wait "$kube_pid"; then
        cat "$kube_log" >&2
        echo "test.sh: scripts/kube-bins.sh failed" >&2
        exit 1
    fi
    grep -h "cold build took" "$kube_log" >&2 || true
    stamp "Kubernetes binaries ready: $(tail -n1 "$kube_log")"
    # Root: privileged tests must run; one that would skip fails instead.
    SDN_TUNNEL_REQUIRE_PRIVILEGED=1 cargo test --workspace
else
    echo "NOTE: not root: the network-namespace, VM and real-Kubernetes tests will be SKIPPED (run as root for the full suite)." >&2
    cargo test --workspace
fi
rm -f "$kube_log"
stamp "cargo tests passed"
# Fuzzing smoke: every cargo-fuzz target over its seeds, bounded (docs/fuzzing.md); installs
# the nightly toolchain and cargo-fuzz if missing.
bash scripts/fuzz.sh --smoke
stamp "all tests passed"
