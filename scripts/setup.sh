#!/usr/bin/env bash
# Installs what the demo, the tests and the benchmark need on Debian 12 (run as root).
# Idempotent: does nothing when everything is present already.
set -euo pipefail

PACKAGES=(iproute2 iputils-ping wireguard-go wireguard-tools iperf3 nftables netcat-openbsd
          procps dnsutils ca-certificates)

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
