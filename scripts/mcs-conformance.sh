#!/usr/bin/env bash
# Runs the Multi-Cluster Services API conformance suite (sigs.k8s.io/mcs-api `conformance`, the
# binary of `scripts/mcs-api.sh conformance-build`) against two clusters of the real-Kubernetes
# lab (`sdn-lab kube`, docs/kube-lab.md) running sdn-tunnel. See docs/mcs-notes.md.
#
#   bash scripts/mcs-conformance.sh all [OUTDIR]         # lab up (--keep), prepare, run the Required
#                                                        # specs, then every spec; lab down
#   bash scripts/mcs-conformance.sh images               # build the suite's two images (below)
#   bash scripts/mcs-conformance.sh prepare LAB.json     # import them on every node, point the pods'
#                                                        # resolver at sdn-tunnel-dns, check both
#   bash scripts/mcs-conformance.sh run LAB.json OUTDIR [SUITE FLAGS...]   # one run, in OUTDIR
#   bash scripts/mcs-conformance.sh summary OUTDIR/report.json              # a run's summary again
#
# LAB.json is what `sdn-lab kube up --keep --json` prints (`all` makes it). A run writes into OUTDIR:
# suite.log (-ginkgo.v), junit.xml, report.json (ginkgo), report.html/report.yaml (the suite's own),
# east.kubeconfig/west.kubeconfig (KUBECONFIG of the run) and summary.txt (one line per spec: state, labels, text; failures with
# the first lines of their message). `all` writes required/ and all/ below OUTDIR (default: a
# new directory under /tmp) and removes the lab and nothing else.
#
# Environment:
#   SDN_LAB          the sdn-lab binary (default target/release/sdn-lab; with CARGO_TARGET_DIR, there)
#   SDN_TUNNEL_BIN   the agent binary for the lab's image (default: next to SDN_LAB)
#   MCS_CONFORMANCE  the suite binary (default: `scripts/mcs-api.sh conformance-build`, which builds
#                    or reuses it; building needs MCS_API_GIT, see that script)
#   MCS_IMAGES       where the images' archives are kept (default ~/.cache/sdn-tunnel/mcs-api/images)
#   MCS_KEEP_LAB     non-empty: `all` leaves the lab up (to look around; `sdn-lab kube down PREFIX`)
#
# Images, without a registry (docs/mcs-notes.md): the suite's pods use `alpine/socat:1.7.4.4` (the
# hello Deployment/StatefulSet: sh, socat, grep -E, tr, awk) and `nicolaka/netshoot:v0.15` (the
# request pod: sh, nc -4/-6 -v -w, nslookup, grep, awk, tail). Stand-ins with those names are built
# on the lab's Debian base (scripts/lab-images.sh makes it): socat (Debian bookworm's is 1.7.4.4)
# and netcat-openbsd + bind9-dnsutils (bind's nslookup, the one netshoot ships). They are imported
# into every node's containerd (k8s.io namespace) like the lab's own images; with a non-latest tag
# the pull policy is IfNotPresent, so nothing is pulled.
#
# DNS: the lab has no cluster DNS; its kubelets hand pods the node's resolv.conf from the lab
# directory (nodes/<node>/resolv.conf, `nameserver 127.0.0.1`), re-read for every new pod.
# `prepare` writes there the ClusterIP of the node's cluster's sdn-tunnel-dns Service (the agents'
# DNS: clusterset.local, cluster.<remote>), so the suite's pods resolve
# `hello.<ns>.svc.clusterset.local` with their default resolver. Nothing answers cluster.local
# (no CoreDNS in the lab): the agent REFUSES it.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

SOCAT_IMAGE=docker.io/alpine/socat:1.7.4.4
NETSHOOT_IMAGE=docker.io/nicolaka/netshoot:v0.15
BASE=localhost/sdn-lab/debian:bookworm-slim
IMAGES=${MCS_IMAGES:-${XDG_CACHE_HOME:-$HOME/.cache}/sdn-tunnel/mcs-api/images}
CONTEXTS=(east west)

log() { echo "mcs-conformance: $*" >&2; }
die() {
    log "$*"
    exit 1
}
for tool in jq ip; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done

# --- images -------------------------------------------------------------------------------------

# Builds image $1 from the Debian base with the packages $3..., checks that the commands of $2
# (space-separated) exist in it, and writes its docker-archive to $IMAGES/<name>.tar.
# Another run of scripts/lab-images.sh removes every buildah working container when it ends
# (`buildah rm --all`), so a build that lost its container is tried again.
build_image() {
    local image=$1 commands=$2 name c id try
    shift 2
    name=${image##*/}
    name=${name%%:*}
    if ! buildah images --quiet "$image" >/dev/null 2>&1; then
        for try in 1 2 3; do
            log "building $image (apt-get install $*; attempt $try)"
            # shellcheck disable=SC2016 # the script runs in the container
            if c=$(buildah from --pull=never "$BASE") &&
                buildah run --isolation chroot --network host "$c" -- sh -ec '
                    commands=$1
                    shift
                    apt-get update -qq
                    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
                    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb
                    for t in $commands; do command -v "$t" >/dev/null || { echo "missing: $t" >&2; exit 1; }; done
                ' sh "$commands" "$@" &&
                buildah config --cmd /bin/sh --label "sdn-tunnel.mcs-conformance=stand-in built on $BASE" "$c" &&
                buildah commit --quiet "$c" "$image" >/dev/null; then
                buildah rm "$c" >/dev/null 2>&1 || true
                break
            fi
            [[ -n ${c:-} ]] && { buildah rm "$c" >/dev/null 2>&1 || true; }
            [[ $try == 3 ]] && die "building $image failed"
        done
    fi
    id=$(buildah images --quiet --no-trunc "$image" | head -n1)
    if [[ -f $IMAGES/$name.tar && "$(cat "$IMAGES/$name.id" 2>/dev/null)" == "$id" ]]; then
        return
    fi
    mkdir -p "$IMAGES"
    rm -f "$IMAGES/$name.tar"
    buildah push --quiet "$image" "docker-archive:$IMAGES/$name.tar:$image" >/dev/null
    echo "$id" >"$IMAGES/$name.id"
    log "wrote $IMAGES/$name.tar"
}

images() {
    command -v buildah >/dev/null 2>&1 || die "buildah not found (scripts/setup.sh --kube)"
    buildah images --quiet "$BASE" >/dev/null 2>&1 ||
        die "$BASE missing: scripts/lab-images.sh (run by sdn-lab kube up) makes it"
    build_image "$SOCAT_IMAGE" "sh socat grep tr awk" socat
    build_image "$NETSHOOT_IMAGE" "sh nc nslookup grep awk tail" netcat-openbsd bind9-dnsutils
}

# --- the lab ------------------------------------------------------------------------------------

# jq over LAB.json ($LAB_JSON).
lab() { jq -r "$@" "$LAB_JSON"; }

# The admin kubeconfig of cluster $1; its nodes.
# shellcheck disable=SC2016 # $c is jq's
kubeconfig_of() { lab --arg c "$1" '.clusters[] | select(.name == $c) | .kubeconfig'; }
# shellcheck disable=SC2016 # $c is jq's
nodes_of() { lab --arg c "$1" '.clusters[] | select(.name == $c) | .nodes[].name'; }

# kubectl in the lab's management namespace, on cluster $1.
kc() {
    local cluster=$1
    shift
    ip netns exec "$(lab .managementNetns)" "$(lab .kubectl)" --kubeconfig "$(kubeconfig_of "$cluster")" "$@"
}

prepare() {
    LAB_JSON=${1:?usage: mcs-conformance.sh prepare LAB.json}
    [[ -f $LAB_JSON ]] || die "$LAB_JSON: no such file"
    local dir ctr cluster node dns tar
    dir=$(lab .dir)
    ctr=$(dirname "$(lab .kubectl)")/ctr
    images
    for cluster in $(lab '.clusters[].name'); do
        dns=$(kc "$cluster" -n sdn-tunnel get svc sdn-tunnel-dns -o 'jsonpath={.spec.clusterIP}')
        [[ -n $dns ]] || die "cluster $cluster: no sdn-tunnel-dns Service"
        for node in $(nodes_of "$cluster"); do
            for tar in "$IMAGES/socat.tar" "$IMAGES/netshoot.tar"; do
                # (ctr's only stderr line here is containerd's cgroup v1 deprecation warning)
                "$ctr" --address "$dir/nodes/$node/fs/run/containerd/containerd.sock" --namespace k8s.io \
                    images import --no-unpack=false "$tar" >/dev/null 2>"$dir/nodes/$node/mcs-import.log" || {
                    cat "$dir/nodes/$node/mcs-import.log" >&2
                    die "importing $tar on $node failed"
                }
            done
            # The kubelet reads this file for every pod it starts (dnsPolicy ClusterFirst falls
            # back to it without a cluster DNS).
            printf 'nameserver %s\noptions ndots:1\n' "$dns" >"$dir/nodes/$node/resolv.conf"
            log "node $node ($cluster): images imported; pods' nameserver $dns (sdn-tunnel-dns)"
        done
    done
    # A pod of the request image on every node: Running in time, and its default resolver
    # answers the clusterset zone's SOA.
    local pod started
    for cluster in $(lab '.clusters[].name'); do
        for node in $(nodes_of "$cluster"); do
            pod=mcs-check-$node
            started=$(date +%s)
            kc "$cluster" -n default run "$pod" --image="$NETSHOOT_IMAGE" --restart=Never \
                --overrides="{\"spec\":{\"nodeName\":\"$node\"}}" -- sleep 600 >/dev/null
            kc "$cluster" -n default wait --for=condition=Ready "pod/$pod" --timeout=60s >/dev/null
            log "node $node: a request pod was Ready in $(($(date +%s) - started)) s"
            kc "$cluster" -n default exec "$pod" -- nslookup -type=SOA clusterset.local. >/dev/null ||
                die "node $node: the pod's resolver does not answer clusterset.local"
            kc "$cluster" -n default delete pod "$pod" --wait=false >/dev/null
        done
    done
    log "prepared lab $(lab .prefix)"
}

# --- the suite ----------------------------------------------------------------------------------

suite_binary() {
    if [[ -n ${MCS_CONFORMANCE:-} ]]; then
        echo "$MCS_CONFORMANCE"
    else
        bash "$REPO/scripts/mcs-api.sh" conformance-build
    fi
}

run() {
    LAB_JSON=${1:?usage: mcs-conformance.sh run LAB.json OUTDIR [SUITE FLAGS...]}
    local out=${2:?usage: mcs-conformance.sh run LAB.json OUTDIR [SUITE FLAGS...]}
    shift 2
    local suite cluster kubeconfigs=() started rc=0 version
    LAB_JSON=$(realpath "$LAB_JSON")
    suite=$(suite_binary)
    mkdir -p "$out"
    out=$(realpath "$out")
    # One kubeconfig per cluster; the lab names every admin user kubernetes-admin, and merged
    # kubeconfigs keep only the first user of a name: each gets its own.
    for cluster in "${CONTEXTS[@]}"; do
        sed "s/kubernetes-admin/admin-$cluster/g" "$(kubeconfig_of "$cluster")" >"$out/$cluster.kubeconfig"
        chmod 600 "$out/$cluster.kubeconfig"
        kubeconfigs+=("$out/$cluster.kubeconfig")
    done
    version=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)
    started=$(date +%s)
    log "running $suite in $out (contexts ${CONTEXTS[*]}) $*"
    (cd "$out" && ip netns exec "$(lab .managementNetns)" env \
        KUBECONFIG="$(
            IFS=:
            echo "${kubeconfigs[*]}"
        )" \
        "$suite" -contexts="$(
            IFS=,
            echo "${CONTEXTS[*]}"
        )" \
        -ginkgo.v -ginkgo.no-color -ginkgo.timeout=3h \
        -ginkgo.junit-report=junit.xml -ginkgo.json-report=report.json \
        -organization=sdn-tunnel -project=sdn-tunnel -version="$version" -url=docs/mcs.md "$@") >"$out/suite.log" 2>&1 || rc=$?
    summary "$out/report.json" >"$out/summary.txt" || true
    cat "$out/summary.txt"
    log "suite exit status $rc after $(($(date +%s) - started)) s; log: $out/suite.log"
}

# One line per spec of a ginkgo JSON report: state, labels, full text; for a failure the first
# lines of its message, indented. Then the counts.
summary() {
    [[ -f $1 ]] || {
        echo "no report ($1)"
        return 1
    }
    jq -r '
        [.[].SpecReports[] | select(.LeafNodeType == "It")] as $specs
        | ($specs | sort_by(.ContainerHierarchyTexts + [.LeafNodeText] | map(select(. != "")) | join(" "))[]
            | "\(.State)\t[\((.ContainerHierarchyLabels // [] | flatten) + (.LeafNodeLabels // []) | unique | join(", "))]\t\(.ContainerHierarchyTexts + [.LeafNodeText] | map(select(. != "")) | join(" "))\t\((.RunTime // 0) / 1e9 | floor) s"
              + (if .State != "passed" and .State != "skipped" and .Failure != null
                 then "\n    " + (.Failure.Message | split("\n") | map(select(. != "")) | .[:10] | join("\n    "))
                   + "\n    at " + .Failure.Location.FileName + ":" + (.Failure.Location.LineNumber | tostring)
                 else "" end)),
          ($specs | group_by(.State) | map("\(.[0].State): \(length)") | join(", ") | "total \($specs | length): " + .)
    ' "$1"
}

all() {
    local out=${1:-} target sdn_lab tunnel prefix
    target=${CARGO_TARGET_DIR:-$REPO/target}
    sdn_lab=${SDN_LAB:-$target/release/sdn-lab}
    tunnel=${SDN_TUNNEL_BIN:-$(dirname "$sdn_lab")/sdn-tunnel}
    [[ -x $sdn_lab ]] || die "no sdn-lab binary at $sdn_lab (cargo build --release -p sdn-lab)"
    [[ -x $tunnel ]] || die "no sdn-tunnel binary at $tunnel (cargo build --release)"
    [[ -n $out ]] || out=$(mktemp -d "${TMPDIR:-/tmp}/mcs-conformance.XXXXXX")
    mkdir -p "$out"
    out=$(realpath "$out")
    suite_binary >/dev/null
    local t0
    t0=$(date +%s)
    log "starting a 2-cluster lab (sdn-lab kube up --keep --json; log $out/lab-up.log)"
    if ! "$sdn_lab" kube up --keep --json --clusters 2 --bin "$tunnel" >"$out/lab.json" 2>"$out/lab-up.log"; then
        tail -20 "$out/lab-up.log" >&2
        # With --keep a failed start leaves what it made; its error names the lab.
        prefix=$(sed -n 's/.*real-Kubernetes lab \(sl[0-9a-z]*\).*/\1/p' "$out/lab-up.log" | head -n1)
        if [[ -n $prefix ]]; then
            "$sdn_lab" kube down "$prefix" >&2 || true
        else
            log "the failed lab's prefix is not in the log: see \`$sdn_lab list\`"
        fi
        die "sdn-lab kube up failed"
    fi
    prefix=$(jq -r .prefix "$out/lab.json")
    if [[ -n ${MCS_KEEP_LAB:-} ]]; then
        log "MCS_KEEP_LAB: lab $prefix stays up (remove it with: $sdn_lab kube down $prefix)"
    else
        # shellcheck disable=SC2064 # expand now
        trap "log 'tearing down lab $prefix'; '$sdn_lab' kube down '$prefix' >&2" EXIT
    fi
    log "lab $prefix up in $(($(date +%s) - t0)) s"
    prepare "$out/lab.json"
    log "--- Required specs"
    run "$out/lab.json" "$out/required" -ginkgo.label-filter=Required
    log "--- every spec"
    run "$out/lab.json" "$out/all"
    log "done in $(($(date +%s) - t0)) s; results in $out"
}

case ${1:-} in
    all) all "${2:-}" ;;
    images) images ;;
    prepare) prepare "${2:-}" ;;
    run)
        shift
        run "$@"
        ;;
    summary) summary "${2:?usage: mcs-conformance.sh summary REPORT.json}" ;;
    *)
        sed -n '2,13p' "$0" >&2
        exit 2
        ;;
esac
