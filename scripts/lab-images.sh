#!/usr/bin/env bash
# Builds the container images of the real-Kubernetes lab (sdn-lab kube) with buildah, without
# any registry (none is reachable): every base is made locally.
#
#   bash scripts/lab-images.sh OUTDIR [SDN_TUNNEL_BINARY]
#
# Writes to OUTDIR one docker-archive per image, ready for `ctr images import`:
#   pause.tar    localhost/sdn-lab/pause:1         the pods' sandbox image (lab/images/pause)
#   busybox.tar  localhost/sdn-lab/busybox:1       test pods: Debian's static busybox
#   agent.tar    localhost/sdn-tunnel:lab          the Dockerfile's runtime stage (below)
#
# The agent image is the Dockerfile's `runtime` target, built by `buildah bud` on a Debian
# bookworm base made here with debootstrap (--build-arg BASE_IMAGE), with the host's release
# binary instead of the Rust builder stage (--build-arg BINARY_FROM=prebuilt): no Rust builder
# image can be had without a registry. The base and the pause image are cached in buildah's
# storage (/var/lib/containers) and rebuilt only when missing; the agent image is rebuilt every
# time (the binary changes).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:?usage: lab-images.sh OUTDIR [SDN_TUNNEL_BINARY]}
BIN=${2:-target/release/sdn-tunnel}
BASE=localhost/sdn-lab/debian:bookworm-slim
PAUSE=localhost/sdn-lab/pause:1
BUSYBOX=localhost/sdn-lab/busybox:1
AGENT=localhost/sdn-tunnel:lab
MIRROR=${SDN_LAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { echo "lab-images: $*" >&2; }
have() { buildah images --quiet "$1" >/dev/null 2>&1; }

for tool in buildah debootstrap go; do
    command -v "$tool" >/dev/null || { log "$tool not found (scripts/setup.sh --kube installs it)"; exit 1; }
done
[[ -x "$BIN" ]] || { log "no sdn-tunnel binary at $BIN (cargo build --release)"; exit 1; }
mkdir -p "$OUT"
work=$(mktemp -d)
cleanup() {
    buildah rm --all >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# A container from scratch whose root is the directory $2, committed as image $1.
commit_rootfs() {
    local image=$1 rootfs=$2 c mnt
    shift 2
    c=$(buildah from scratch)
    mnt=$(buildah mount "$c")
    cp -a "$rootfs"/. "$mnt"/
    buildah umount "$c" >/dev/null
    buildah config "$@" "$c"
    buildah commit --quiet "$c" "$image" >/dev/null
    buildah rm "$c" >/dev/null
}

# --- Debian base: like debian:bookworm-slim (minbase, no docs, locales or apt lists) ----------
if ! have "$BASE"; then
    log "making $BASE with debootstrap (about 2 minutes)"
    rootfs="$work/debian"
    debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
        || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
           "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
           "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log
    commit_rootfs "$BASE" "$rootfs" --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --cmd /bin/bash
fi

# --- pause: the sandbox image --------------------------------------------------------------------
if ! have "$PAUSE"; then
    log "making $PAUSE"
    mkdir -p "$work/pause"
    (cd lab/images/pause && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/pause/pause" .)
    commit_rootfs "$PAUSE" "$work/pause" --entrypoint '["/pause"]'
fi

# --- busybox: the test pods' image ---------------------------------------------------------------
if ! have "$BUSYBOX"; then
    log "making $BUSYBOX"
    [[ -x /bin/busybox ]] || { log "/bin/busybox missing (apt-get install busybox-static)"; exit 1; }
    rootfs="$work/busybox"
    mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/etc" "$rootfs/www"
    cp /bin/busybox "$rootfs/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [[ "$applet" == busybox ]] || ln -s busybox "$rootfs/bin/$applet"
    done
    echo "root:x:0:0:root:/root:/bin/sh" >"$rootfs/etc/passwd"
    echo "root:x:0:" >"$rootfs/etc/group"
    commit_rootfs "$BUSYBOX" "$rootfs" --env PATH=/bin --cmd /bin/sh
fi

# --- the agent: the Dockerfile's runtime stage ---------------------------------------------------
# Rebuilt when the binary or the Dockerfile changed (their hash is a label of the image).
inputs=$(cat "$BIN" Dockerfile | sha256sum | cut -c1-32)
have_inputs=$(buildah inspect --type image --format '{{index .OCIv1.Config.Labels "sdn-lab.inputs"}}' \
    "$AGENT" 2>/dev/null || true)
if [[ "$have_inputs" != "$inputs" ]]; then
    log "building $AGENT from the Dockerfile (runtime stage, prebuilt binary $BIN)"
    ctx="$work/context"
    mkdir -p "$ctx/prebuilt"
    install -m 0755 "$BIN" "$ctx/prebuilt/sdn-tunnel"
    # Strip the line tables that profile.release keeps for profiling (as the build stage does).
    strip --strip-debug "$ctx/prebuilt/sdn-tunnel" 2>/dev/null || true
    buildah bud --quiet --isolation chroot --network host --pull=never \
        --build-arg BASE_IMAGE="$BASE" --build-arg BINARY_FROM=prebuilt \
        --build-arg REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
        --label "sdn-lab.inputs=$inputs" \
        --target runtime -f "$PWD/Dockerfile" -t "$AGENT" "$ctx" >"$work/bud.log" 2>&1 \
        || { cat "$work/bud.log" >&2; exit 1; }
else
    log "$AGENT is up to date (same binary and Dockerfile)"
fi

for pair in "pause:$PAUSE" "busybox:$BUSYBOX" "agent:$AGENT"; do
    name=${pair%%:*} image=${pair#*:}
    id=$(buildah images --quiet --no-trunc "$image" | head -n1)
    # An archive of this very image is there already: keep it.
    [[ -f "$OUT/$name.tar" && "$(cat "$OUT/$name.id" 2>/dev/null)" == "$id" ]] && continue
    rm -f "$OUT/$name.tar"
    buildah push --quiet "$image" "docker-archive:$OUT/$name.tar:$image" >/dev/null
    echo "$id" >"$OUT/$name.id"
done
log "images in $OUT: pause.tar busybox.tar agent.tar"
