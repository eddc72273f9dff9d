#!/usr/bin/env bash
# Builds the benchmark's userspace WireGuard references that Debian does not package, once,
# into a cache outside the repository, and prints where they are (`sdn-lab bench` calls this
# itself when a binary is missing):
#   wireguard-go-current  wireguard-go from its Go module golang.zx2c4.com/wireguard
#                         (go install, GOFLAGS=-mod=mod, the default GOCACHE/GOMODCACHE)
#   boringtun-cli         boringtun-cli from crates.io (cargo install --locked)
# Output: one line per reference on stdout, `<name> <path>`; build logs go to stderr.
#
#   bash scripts/bench-refs.sh                      # build what is missing, print both paths
#   bash scripts/bench-refs.sh boringtun-cli        # only that one
#   bash scripts/bench-refs.sh --path [NAME...]     # print the paths only; exit 1 if missing
#
# The versions are pinned here (bump them on purpose): golang.zx2c4.com/wireguard has no
# semver tags, so its newest code is a pseudo-version (`go list -m golang.zx2c4.com/wireguard@latest`
# names the newest one); boringtun-cli's newest release is what `cargo info boringtun-cli` shows.
# Cache: ${SDN_BENCH_REFS_DIR:-~/.cache/sdn-tunnel/bench-refs}/<name>-<version>/.
set -euo pipefail

WIREGUARD_GO_VERSION=v0.0.0-20260522210424-ecfc5a8d5446 # wireguard-go's own version: 0.0.20250522
BORINGTUN_CLI_VERSION=0.7.1

CACHE=${SDN_BENCH_REFS_DIR:-${HOME:-/root}/.cache/sdn-tunnel/bench-refs}
ALL=(wireguard-go-current boringtun-cli)

# sudo and CI may start us without the toolchains on PATH.
for d in /usr/local/go/bin "${CARGO_HOME:-${HOME:-/root}/.cargo}/bin"; do
    [[ -d $d && :$PATH: != *:$d:* ]] && PATH="$PATH:$d"
done
export PATH

path_of() {
    case $1 in
    wireguard-go-current) echo "$CACHE/wireguard-go-$WIREGUARD_GO_VERSION/wireguard-go" ;;
    boringtun-cli) echo "$CACHE/boringtun-cli-$BORINGTUN_CLI_VERSION/bin/boringtun-cli" ;;
    *)
        echo "bench-refs.sh: unknown reference $1 (one of: ${ALL[*]})" >&2
        return 2
        ;;
    esac
}

build_wireguard_go() {
    local dest tmp
    dest=$(dirname "$1")
    command -v go >/dev/null || {
        echo "bench-refs.sh: go not found (needed to build wireguard-go)" >&2
        return 1
    }
    echo "bench-refs.sh: building wireguard-go (golang.zx2c4.com/wireguard@$WIREGUARD_GO_VERSION, $(go version)) into $dest" >&2
    mkdir -p "$CACHE"
    tmp=$(mktemp -d "$CACHE/.wireguard-go.XXXXXX")
    chmod 755 "$tmp"
    # The module's main package is its root; `go install` names the binary `wireguard`.
    if ! (cd "$tmp" && GOFLAGS=-mod=mod GOBIN="$tmp" go install "golang.zx2c4.com/wireguard@$WIREGUARD_GO_VERSION" >&2); then
        rm -rf "$tmp"
        return 1
    fi
    mv "$tmp/wireguard" "$tmp/wireguard-go"
    rm -rf "$dest"
    mv "$tmp" "$dest"
}

build_boringtun_cli() {
    local dest tmp
    dest=$(dirname "$(dirname "$1")")
    command -v cargo >/dev/null || {
        echo "bench-refs.sh: cargo not found (needed to build boringtun-cli)" >&2
        return 1
    }
    echo "bench-refs.sh: building boringtun-cli $BORINGTUN_CLI_VERSION (cargo install --locked, $(cargo --version)) into $dest; a few minutes" >&2
    mkdir -p "$CACHE"
    tmp=$(mktemp -d "$CACHE/.boringtun-cli.XXXXXX")
    # Its own target directory (never the repository's, whose lock may be held) and a
    # neutral working directory (no rust-toolchain file of ours applies).
    if ! (cd "$tmp" && env -u CARGO_TARGET_DIR -u RUSTFLAGS cargo install boringtun-cli \
        --version "=$BORINGTUN_CLI_VERSION" --locked --root "$tmp/root" \
        --target-dir "$tmp/target" >&2); then
        rm -rf "$tmp"
        return 1
    fi
    rm -rf "$dest"
    mv "$tmp/root" "$dest"
    rm -rf "$tmp"
}

only_path=0
if [[ ${1:-} == --path ]]; then
    only_path=1
    shift
fi
names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=("${ALL[@]}")

missing=0
for name in "${names[@]}"; do
    bin=$(path_of "$name")
    if [[ ! -x $bin ]]; then
        if ((only_path)); then
            echo "bench-refs.sh: $name not built yet ($bin); run scripts/bench-refs.sh" >&2
            missing=1
            continue
        fi
        case $name in
        wireguard-go-current) build_wireguard_go "$bin" ;;
        boringtun-cli) build_boringtun_cli "$bin" ;;
        esac
        [[ -x $bin ]] || {
            echo "bench-refs.sh: building $name did not produce $bin" >&2
            exit 1
        }
    fi
    echo "$name $bin"
done
exit $missing
