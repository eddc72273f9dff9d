#!/usr/bin/env bash
# Checks the Ansible playbook in ansible/ (issue #6); called by scripts/check-manifests.sh.
#   1. ansible-playbook --syntax-check on site.yml (example inventory);
#   2. ansible-lint --profile production;
#   3. yamllint --strict (config: .yamllint) on ansible/;
#   4. renders the example inventory's agent configs and manifests on localhost, without any
#      cluster (site.yml --tags config), then checks every config with
#      `sdn-tunnel agent --config FILE --check-config` (as in a pod: NODE_NAME and
#      KUBERNETES_SERVICE_HOST set) and every manifest with kubernetes-validate --strict.
# Installs what it lacks into its own venv (next to check-manifests.sh's: /opt as root, else
# ~/.cache): ansible (the community package: ansible-core plus the kubernetes.core and
# ansible.utils collections; Ansible Galaxy is not reachable from every CI machine, PyPI is),
# ansible-lint, the kubernetes client that kubernetes.core needs, yamllint and
# kubernetes-validate, all pinned. Needs target/debug/sdn-tunnel (cargo build) and kubectl (for
# kustomize). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

ANSIBLE_VERSION=12.3.0 # ansible-core 2.19, kubernetes.core 6.2, ansible.utils 6.0
ANSIBLE_LINT_VERSION=26.10.1
KUBERNETES_CLIENT_VERSION=37.0.2
YAMLLINT_VERSION=1.38.0
KUBERNETES_VALIDATE_VERSION=1.37.0
OLDEST_KUBERNETES=1.33
if [[ $(id -u) -eq 0 ]]; then
    VENV=${SDN_TUNNEL_ANSIBLE_VENV:-/opt/sdn-tunnel-ansible}
else
    VENV=${SDN_TUNNEL_ANSIBLE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sdn-tunnel-ansible}
fi
SDN_TUNNEL=${SDN_TUNNEL_BIN:-target/debug/sdn-tunnel}

log() { echo "check-ansible: $*" >&2; }
failures=()
fail() {
    failures+=("$1")
    log "FAIL: $1"
}

# --- tools -------------------------------------------------------------------------------------
pins=("ansible==$ANSIBLE_VERSION" "ansible-lint==$ANSIBLE_LINT_VERSION"
    "kubernetes==$KUBERNETES_CLIENT_VERSION" "yamllint==$YAMLLINT_VERSION"
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION")
tools_ok() {
    [[ -x $VENV/bin/python ]] && "$VENV/bin/python" - "${pins[@]}" 2>/dev/null <<'PY'
import sys
from importlib.metadata import version
sys.exit(0 if all(version(n) == v for n, v in (p.split("==") for p in sys.argv[1:])) else 1)
PY
}
if ! tools_ok; then
    log "installing ${pins[*]} into $VENV"
    if [[ ! -x $VENV/bin/pip ]]; then
        if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
            if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
                rm -rf "$VENV"
                export DEBIAN_FRONTEND=noninteractive
                apt-get install -y -qq --no-install-recommends python3-venv >/dev/null 2>&1 ||
                    { apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null; }
                python3 -m venv "$VENV"
            else
                log "cannot create a Python venv at $VENV; install python3-venv"
                exit 1
            fi
        fi
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}"
    tools_ok || { log "the tools are not usable in $VENV after pip install"; exit 1; }
fi
export PATH=$VENV/bin:$PATH
# No ~/.ansible state, no collections from elsewhere: only what the venv's ansible package has.
ANSIBLE_HOME=$(mktemp -d)
export ANSIBLE_HOME ANSIBLE_COLLECTIONS_PATH=$ANSIBLE_HOME/collections ANSIBLE_NOCOLOR=1
work=$(mktemp -d)
trap 'rm -rf -- "$work" "$ANSIBLE_HOME"' EXIT
for c in kubernetes.core ansible.utils; do
    ansible-galaxy collection list "$c" 2>/dev/null | grep "^$c " >/dev/null ||
        { log "collection $c missing from the ansible package in $VENV"; exit 1; }
done
command -v kubectl >/dev/null 2>&1 ||
    { log "kubectl not found (the playbook renders deploy/base with kubectl kustomize)"; exit 1; }
if [[ ! -x $SDN_TUNNEL ]]; then
    log "building $SDN_TUNNEL"
    cargo build --quiet --bin sdn-tunnel
fi

cd ansible
# --- 1. syntax ---------------------------------------------------------------------------------
ansible_version=$(ansible --version)
log "${ansible_version%%$'\n'*} --syntax-check site.yml"
ansible-playbook -i inventories/example site.yml --syntax-check >"$work/syntax" 2>&1 ||
    { cat "$work/syntax" >&2; fail "ansible-playbook --syntax-check site.yml"; }

# --- 2. ansible-lint ---------------------------------------------------------------------------
log "ansible-lint $ANSIBLE_LINT_VERSION --profile production"
ansible-lint --offline --profile production -q site.yml roles inventories >"$work/lint" 2>&1 ||
    { cat "$work/lint" >&2; fail "ansible-lint --profile production"; }

# --- 3. yamllint -------------------------------------------------------------------------------
log "yamllint $YAMLLINT_VERSION --strict on ansible/"
yamllint --strict -c ../.yamllint . >&2 || fail "yamllint ansible/"

# --- 4. render on localhost, check the configs and the manifests -------------------------------
log "site.yml --tags config on inventories/example (localhost, no cluster)"
mkdir -p "$work/render"
if ansible-playbook -i inventories/example site.yml --tags config \
    -e sdn_tunnel_render_dir="$work/render" >"$work/render.log" 2>&1 </dev/null; then
    mapfile -t hosts < <(ansible-inventory -i inventories/example --list 2>/dev/null |
        python3 -c 'import json,sys; print("\n".join(json.load(sys.stdin)["sdn_tunnel_clusters"]["hosts"]))')
    ((${#hosts[@]})) || fail "no hosts in group sdn_tunnel_clusters of inventories/example"
    k_versions=(--kubernetes-version "$OLDEST_KUBERNETES")
    for h in "${hosts[@]}"; do
        cfg=$work/render/$h.yaml
        [[ -s $cfg ]] || { fail "$h: no rendered config"; continue; }
        # The key file: a path of our own, so that no key of this machine is read or needed
        # (the agent would create it, as it advertises). Everything else is checked as rendered.
        sed "s|privateKeyFile: .*|privateKeyFile: $work/key-$h/private.key|" "$cfg" >"$work/check-$h.yaml"
        if out=$(cd .. && env -u KUBECONFIG NODE_NAME=node-1 KUBERNETES_SERVICE_HOST=10.96.0.1 \
            KUBERNETES_SERVICE_PORT=443 "$SDN_TUNNEL" agent --config "$work/check-$h.yaml" --check-config 2>&1); then
            log "  $h: config: ${out##*: }"
        else
            echo "$out" >&2
            fail "$h: sdn-tunnel agent --check-config"
        fi
        mf=$work/render/$h-manifests.yaml
        [[ -s $mf ]] || { fail "$h: no rendered manifests"; continue; }
        # OpenShift's SecurityContextConstraints is no Kubernetes type (no schema); the SCC
        # itself is checked by check-manifests.sh. Validate the rest.
        python3 - "$mf" "$work/k8s-$h.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get("kind") != "SecurityContextConstraints"]
yaml.safe_dump_all(docs, open(sys.argv[2], "w"), sort_keys=False)
PY
        if out=$(kubernetes-validate --strict --quiet "${k_versions[@]}" "$work/k8s-$h.yaml" 2>&1) && [[ -z $out ]]; then
            log "  $h: manifests: kubernetes-validate $OLDEST_KUBERNETES ok"
        else
            echo "$out" >&2
            fail "$h: kubernetes-validate of the rendered manifests"
        fi
    done
else
    cat "$work/render.log" >&2
    fail "ansible-playbook site.yml --tags config"
fi

if ((${#failures[@]})); then
    log "${#failures[@]} problem(s):"
    printf '  %s\n' "${failures[@]}" >&2
    exit 1
fi
log "OK: syntax-check, ansible-lint (production), yamllint, rendered configs (--check-config) and manifests (kubernetes-validate)"
