#!/usr/bin/env bash
# Builds the real Kubernetes components the lab runs (sdn-lab kube up), from the official Go
# modules at pinned versions, into a cache outside the repository, and prints that directory.
#
#   bash scripts/kube-bins.sh            # build (or reuse) and print the bin directory
#   bash scripts/kube-bins.sh --check    # print the directory if complete, exit 1 otherwise
#
# What and why (see docs/kube-lab.md):
# - Kubernetes v1.37.2: the newest release served whose kubelet still runs on a cgroup v1 host
#   (this machine: cgroup v1, v2 only as an empty hybrid hierarchy). Since v1.35 the kubelet
#   refuses cgroup v1 unless its config says failCgroupV1: false; v1.37 still honours that.
#   v1.36 and later require containerd 2.x (v1.35 was the last to support containerd 1.x), so
#   Debian 12's containerd 1.6 is not an option.
# - containerd v2.4.2 (cgroup v1 is deprecated there but maintained until 2029); Debian's runc.
# - etcd v3.7.3 (Kubernetes v1.37 is built against the etcd 3.7 client).
# - crictl v1.37.0 and the CNI plugins v1.10.0 (bridge, host-local, loopback, portmap).
#
# The Go build cache (GOCACHE) and module cache are Go's defaults (~/.cache/go-build,
# ~/go/pkg/mod): both outside the repository and reused by every run. A cold build on the 2-core
# reference machine is printed at the end ("cold build took ...").
set -euo pipefail

KUBE_VERSION=v1.37.2
ETCD_VERSION=v3.7.3
CONTAINERD_VERSION=v2.4.2
CRI_TOOLS_VERSION=v1.37.0
CNI_PLUGINS_VERSION=v1.10.0
# Bumped when the recipe below changes, so an old cache is not mistaken for a new one.
RECIPE=1

CACHE_ROOT=${SDN_KUBE_BINS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sdn-tunnel/kube-bins}
KEY="k8s-${KUBE_VERSION}_etcd-${ETCD_VERSION}_ctrd-${CONTAINERD_VERSION}_cri-${CRI_TOOLS_VERSION}_cni-${CNI_PLUGINS_VERSION}_r${RECIPE}"
OUT="$CACHE_ROOT/$KEY"
BIN="$OUT/bin"

log() { echo "kube-bins: $*" >&2; }

if [[ -f "$OUT/.complete" ]]; then
    echo "$BIN"
    exit 0
fi
if [[ "${1:-}" == "--check" ]]; then
    log "not built yet: $BIN (run bash scripts/kube-bins.sh)"
    exit 1
fi
command -v go >/dev/null || { log "go not found on PATH: Kubernetes $KUBE_VERSION needs Go 1.26+ (https://go.dev/dl)"; exit 1; }
go_minor=$(go env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
if [[ -z "$go_minor" || "$go_minor" -lt 26 ]]; then
    log "$(go env GOVERSION) is too old: Kubernetes $KUBE_VERSION needs Go 1.26+ (Debian's golang-go is 1.19)"
    exit 1
fi

start=$(date +%s)
SRC="$OUT/src"
mkdir -p "$BIN" "$BIN/cni" "$SRC"
export GOFLAGS="-trimpath -buildvcs=false"
export CGO_ENABLED=0

# A throwaway module that requires $1@$2 (plus replaces in $4), then builds the packages in $3.
build_module() {
    local name=$1 module=$2 version=$3 replaces=$4 outdir=$5 ldflags=$6 tags=$7
    shift 7
    local dir="$SRC/$name"
    mkdir -p "$dir"
    {
        echo "module sdn-tunnel.local/kube-bins/$name"
        echo
        echo "go 1.26.0"
        echo
        echo "require $module $version"
        if [[ -n "$replaces" ]]; then echo "$replaces"; fi
    } >"$dir/go.mod"
    log "building $name $version: $*"
    (cd "$dir" && go mod download "$module@$version" \
        && go build -mod=mod -tags "$tags" -ldflags "-s -w $ldflags" -o "$outdir/" "$@")
}

# --- Kubernetes: every k8s.io/* staging module pinned to the matching v0.x ---------------------
kube_mod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
staging_minor=${KUBE_VERSION#v1.}
replaces="replace ("
while read -r m; do
    replaces+=$'\n'"    $m => $m v0.$staging_minor"
done < <(awk '$2 == "v0.0.0" && $1 ~ /^k8s.io\// { print $1 }' "$kube_mod" | sort -u)
replaces+=$'\n'")"
minor=${staging_minor%%.*}
vpkgs="k8s.io/component-base/version k8s.io/client-go/pkg/version"
kube_ldflags=""
for p in $vpkgs; do
    kube_ldflags+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    kube_ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done
build_module kubernetes k8s.io/kubernetes "$KUBE_VERSION" "$replaces" "$BIN" "$kube_ldflags" "" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubectl

# --- etcd ------------------------------------------------------------------------------------------
build_module etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "" "$SRC/etcd/out" "" "" \
    go.etcd.io/etcd/server/v3
# The binary is named after the module path ("server"); install it as etcd.
install -m 0755 "$SRC"/etcd/out/* "$BIN/etcd"

# --- containerd (no btrfs/devmapper/zfs snapshotters: they need C headers and are not used) ----
build_module containerd github.com/containerd/containerd/v2 "$CONTAINERD_VERSION" "" "$BIN" \
    "-X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
    "no_btrfs no_devmapper no_zfs" \
    github.com/containerd/containerd/v2/cmd/containerd \
    github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
    github.com/containerd/containerd/v2/cmd/ctr

# --- crictl ----------------------------------------------------------------------------------------
build_module cri-tools sigs.k8s.io/cri-tools "$CRI_TOOLS_VERSION" "" "$BIN" \
    "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRI_TOOLS_VERSION" "" \
    sigs.k8s.io/cri-tools/cmd/crictl

# --- CNI plugins -----------------------------------------------------------------------------------
cni=github.com/containernetworking/plugins
build_module cni-plugins "$cni" "$CNI_PLUGINS_VERSION" "" "$BIN/cni" "" "" \
    "$cni/plugins/main/bridge" "$cni/plugins/main/loopback" \
    "$cni/plugins/ipam/host-local" "$cni/plugins/meta/portmap"

for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl etcd \
         containerd containerd-shim-runc-v2 ctr crictl cni/bridge cni/loopback cni/host-local \
         cni/portmap; do
    [[ -x "$BIN/$b" ]] || { log "missing after build: $BIN/$b"; exit 1; }
done
rm -rf "$SRC"
date -u +%FT%TZ >"$OUT/.complete"
log "cold build took $(( $(date +%s) - start )) s"
echo "$BIN"
