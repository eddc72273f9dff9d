#!/usr/bin/env bash
# Writes the kubeconfig that *other* clusters' agents use to watch *this* cluster, read-only,
# as ServiceAccount sdn-tunnel/sdn-tunnel-remote-reader (deploy/base/remote-reader.yaml).
# See docs/remote-clusters.md for the whole procedure and the manual equivalent.
set -euo pipefail

NAMESPACE=sdn-tunnel
SECRET=sdn-tunnel-remote-reader-token
SERVICE_ACCOUNT=sdn-tunnel-remote-reader

usage() {
    cat <<EOF
Usage: $(basename "$0") --cluster-name NAME --out FILE [--context CTX] [--server URL]
           [--secret NAME] [--timeout SEC]

Mints the kubeconfig of this cluster's read-only remote-reader identity:
ServiceAccount $NAMESPACE/$SERVICE_ACCOUNT with token Secret
$NAMESPACE/$SECRET, both created by \`kubectl apply -k deploy/base\`.
Waits until the token controller has filled the Secret. Hand the file to the *other*
clusters as a Secret and reference it from their agents' remotes[].kubeconfig
(docs/remote-clusters.md).

  --context CTX        kubeconfig context of the cluster to read from (default: current context)
  --cluster-name NAME  this cluster's sdn-tunnel name, as the other clusters' remotes[].name
                       (a DNS label); names the cluster, user and context in the file
  --server URL         API server URL as reachable from the *other* clusters' nodes
                       (default: the server of the context in your kubeconfig)
  --out FILE           where to write the kubeconfig (created with mode 0600; replaced if present)
  --secret NAME        the token Secret to read (default $SECRET); a second
                       Secret of the same ServiceAccount allows rotation without a gap
  --timeout SEC        how long to wait for the token controller to fill the Secret (default 60)
  -h, --help           this help

Needs kubectl and read access to that Secret. The token is never put on a command line;
it goes only into FILE.
EOF
}

die() {
    echo "mint-remote-kubeconfig: $*" >&2
    exit 1
}

context="" cluster_name="" server="" out="" timeout=60
while (($#)); do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --context | --cluster-name | --server | --out | --secret | --timeout)
            (($# >= 2)) || die "$1 needs a value (see --help)"
            case "$1" in
                --context) context=$2 ;;
                --cluster-name) cluster_name=$2 ;;
                --server) server=$2 ;;
                --out) out=$2 ;;
                --secret) SECRET=$2 ;;
                --timeout) timeout=$2 ;;
            esac
            shift 2
            ;;
        --context=* | --cluster-name=* | --server=* | --out=* | --secret=* | --timeout=*)
            value=${1#*=}
            case "$1" in
                --context=*) context=$value ;;
                --cluster-name=*) cluster_name=$value ;;
                --server=*) server=$value ;;
                --out=*) out=$value ;;
                --secret=*) SECRET=$value ;;
                --timeout=*) timeout=$value ;;
            esac
            shift
            ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

[[ -n $cluster_name ]] || die "--cluster-name is required (see --help)"
[[ -n $out ]] || die "--out is required (see --help)"
# Same rule as remotes[].name in the agent config: a DNS label.
[[ ${#cluster_name} -le 63 && $cluster_name =~ ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$ ]] ||
    die "--cluster-name '$cluster_name' is not a DNS label (1-63 of a-z, 0-9, '-'; no leading/trailing '-')"
[[ $timeout =~ ^[0-9]+$ ]] || die "--timeout '$timeout' is not a number of seconds"
[[ $SECRET =~ ^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$ ]] || die "--secret '$SECRET' is not a Secret name"
command -v kubectl >/dev/null 2>&1 || die "kubectl not found on PATH"

kube=(kubectl)
if [[ -n $context ]]; then
    kube+=(--context "$context")
fi

if [[ -z $server ]]; then
    server=$("${kube[@]}" config view --minify -o 'jsonpath={.clusters[0].cluster.server}' 2>/dev/null) ||
        die "cannot read the server URL of context '${context:-<current>}' from your kubeconfig; pass --server"
    [[ -n $server ]] || die "no server URL in context '${context:-<current>}' of your kubeconfig; pass --server"
fi
[[ $server == https://* ]] || die "--server '$server' is not an https:// URL"
case "$server" in
    https://localhost[:/]* | https://localhost | https://127.* | https://\[::1\]*)
        echo "mint-remote-kubeconfig: WARNING: server $server is a loopback address; the other" \
            "clusters' nodes cannot reach it. Pass --server with an address they can reach." >&2
        ;;
esac

# The token controller fills data.token (and data.ca.crt) shortly after the Secret is created.
secret_field() {
    # $1: a key of the Secret's data, with dots escaped for jsonpath. Prints its base64 value.
    "${kube[@]}" -n "$NAMESPACE" get secret "$SECRET" -o "jsonpath={.data.$1}"
}
if ! err=$("${kube[@]}" -n "$NAMESPACE" get secret "$SECRET" -o name 2>&1 >/dev/null); then
    die "cannot read Secret $NAMESPACE/$SECRET (context '${context:-<current>}'): $err
Create it with: kubectl apply -k deploy/base"
fi
# Never hand out another identity's token by mistake (e.g. a --secret of a wider account).
owner=$("${kube[@]}" -n "$NAMESPACE" get secret "$SECRET" \
    -o 'jsonpath={.type} {.metadata.annotations.kubernetes\.io/service-account\.name}') ||
    die "reading Secret $NAMESPACE/$SECRET failed"
[[ $owner == "kubernetes.io/service-account-token $SERVICE_ACCOUNT" ]] ||
    die "Secret $NAMESPACE/$SECRET is not a token of ServiceAccount $SERVICE_ACCOUNT (type and owner: '$owner')"
deadline=$((SECONDS + timeout))
token_b64=""
while :; do
    token_b64=$(secret_field token) || die "reading Secret $NAMESPACE/$SECRET failed"
    [[ -z $token_b64 ]] || break
    ((SECONDS < deadline)) || die "Secret $NAMESPACE/$SECRET has no token after ${timeout}s.
Is ServiceAccount $NAMESPACE/$SERVICE_ACCOUNT present, and the Secret annotated with
kubernetes.io/service-account.name: $SERVICE_ACCOUNT? (kubectl -n $NAMESPACE describe secret $SECRET)"
    echo "mint-remote-kubeconfig: waiting for the token controller to fill Secret $NAMESPACE/$SECRET ..." >&2
    sleep 2
done
ca_b64=$(secret_field 'ca\.crt') || die "reading Secret $NAMESPACE/$SECRET failed"
[[ -n $ca_b64 ]] || die "Secret $NAMESPACE/$SECRET has a token but no ca.crt"

token=$(base64 -d <<<"$token_b64" 2>/dev/null) || die "data.token of Secret $NAMESPACE/$SECRET is not base64"
[[ -n $token && $token != *[[:space:]]* ]] || die "data.token of Secret $NAMESPACE/$SECRET is not a token"
base64 -d <<<"$ca_b64" 2>/dev/null | grep -q -- '-----BEGIN CERTIFICATE-----' ||
    die "data.ca.crt of Secret $NAMESPACE/$SECRET is not a PEM certificate"

# Write to a 0600 temporary file next to FILE, then rename it into place: the token is never
# readable by others, and FILE is never half-written. printf is a builtin: no argv exposure.
out_dir=$(dirname -- "$out")
[[ -d $out_dir ]] || die "directory $out_dir does not exist"
tmp=$(umask 077 && mktemp "$out_dir/.$(basename -- "$out").XXXXXX") || die "cannot create a file in $out_dir"
trap 'rm -f -- "$tmp"' EXIT
user="$SERVICE_ACCOUNT@$cluster_name"
printf '%s\n' \
    "# sdn-tunnel: read-only access to cluster '$cluster_name' (list/watch nodes, services," \
    "# endpointslices) as ServiceAccount $NAMESPACE/$SERVICE_ACCOUNT. Contains a bearer token:" \
    "# keep it in a Secret. Revoke: delete Secret $NAMESPACE/$SECRET in '$cluster_name'." \
    "apiVersion: v1" \
    "kind: Config" \
    "clusters:" \
    "  - name: $cluster_name" \
    "    cluster:" \
    "      server: $server" \
    "      certificate-authority-data: $ca_b64" \
    "users:" \
    "  - name: $user" \
    "    user:" \
    "      token: $token" \
    "contexts:" \
    "  - name: $cluster_name" \
    "    context:" \
    "      cluster: $cluster_name" \
    "      user: $user" \
    "current-context: $cluster_name" >"$tmp"
chmod 600 "$tmp"
mv -f -- "$tmp" "$out"
trap - EXIT

echo "mint-remote-kubeconfig: wrote $out (mode 0600) for cluster '$cluster_name' at $server" >&2
echo "Check it:  kubectl --kubeconfig $out get nodes" >&2
echo "Hand over: add it as key '$cluster_name' of Secret sdn-tunnel/sdn-tunnel-remotes in each *other*" \
    "cluster (docs/install.md: kubectl -n sdn-tunnel create secret generic sdn-tunnel-remotes" \
    "--from-file=$cluster_name=$out ... --dry-run=client -o yaml | kubectl apply --server-side -f -)" >&2
