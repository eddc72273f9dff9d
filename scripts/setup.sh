#!/usr/bin/env bash
# Installs what the demo, the tests and the benchmark need on Debian 12 (run as root).
# Idempotent: does nothing when everything is present already.
#
#   bash scripts/setup.sh          # the network-namespace lab (demo, most tests)
#   bash scripts/setup.sh --kube   # + the real-Kubernetes lab (runc, buildah, debootstrap, ...);
#                                  #   the Kubernetes binaries themselves: scripts/kube-bins.sh
set -euo pipefail

PACKAGES=(iproute2 iputils-ping wireguard-go wireguard-tools iperf3 nftables netcat-openbsd
          procps dnsutils ca-certificates tcpdump)
if [[ "${1:-}" == "--kube" ]]; then
    # runc: the OCI runtime under containerd; buildah + debootstrap: the images, from a Debian
    # base made locally (no registry); busybox-static: the test pods' image; openssl: the
    # clusters' certificates; util-linux: nsenter/unshare for the nodes' mount namespaces.
    # Go itself (1.26+, to build Kubernetes 1.37) is not Debian's: see scripts/kube-bins.sh.
    PACKAGES+=(runc buildah debootstrap busybox-static openssl util-linux conntrack socat)
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "setup.sh: not root; skipping package installation (the lab needs root anyway)." >&2
else
    missing=()
    for p in "${PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$p")
        fi
    done
    if ((${#missing[@]})); then
        echo "setup.sh: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

if ! command -v cargo >/dev/null 2>&1; then
    for d in "${CARGO_HOME:-$HOME/.cargo}/bin" /root/.cargo/bin /usr/local/cargo/bin; do
        if [[ -x "$d/cargo" ]]; then
            echo "setup.sh: cargo is in $d but not on PATH: export PATH=\"$d:\$PATH\"" >&2
            exit 1
        fi
    done
    cat >&2 <<'MSG'
setup.sh: cargo not found. Install Rust with rustup:
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
    . "$HOME/.cargo/env"
MSG
    exit 1
fi
