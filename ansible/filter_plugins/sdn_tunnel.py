"""Filters of the sdn-tunnel playbook (no collection needed: Ansible loads filter_plugins/
next to the playbook).

cidr_overlaps: every overlap between the CIDRs of all clusters, as readable messages.
agent_manifests: the rendered deploy/base objects, adapted to one cluster (its config, the
    image, a config hash that rolls the pods when the config changes).
"""

import hashlib
import ipaddress
import json

from ansible.errors import AnsibleFilterError


def cidr_overlaps(hosts):
    """hosts: the hostvars of the cluster hosts (inventory_hostname, sdn_tunnel_pod_cidrs,
    sdn_tunnel_service_cidrs) -> ["east podCIDRs 10.128.0.0/14 overlaps west ...", ...].

    Checks what the agents' own validation checks across a pair of clusters, for every pair at
    once: pod and service CIDRs of different clusters, and a cluster's pod CIDRs against its own
    service CIDRs. Malformed CIDRs (or host bits set) are reported too.
    """
    nets = []
    problems = []
    for h in hosts:
        name = h["inventory_hostname"]
        for field, var in (("podCIDRs", "sdn_tunnel_pod_cidrs"),
                           ("serviceCIDRs", "sdn_tunnel_service_cidrs")):
            for text in h.get(var) or []:
                try:
                    nets.append((name, field, ipaddress.ip_network(str(text), strict=True)))
                except ValueError as e:
                    problems.append(f"{name} {field}: {text} is not a network address ({e})")
    for i, (ca, fa, na) in enumerate(nets):
        for cb, fb, nb in nets[i + 1:]:
            if ca == cb and fa == fb:
                continue  # entries of one list may nest (redundant, harmless)
            if na.version == nb.version and na.overlaps(nb):
                problems.append(f"{ca} {fa} {na} overlaps {cb} {fb} {nb}")
    return problems


def agent_manifests(objects, cluster, config_text, image=None):
    """objects: the documents of `kubectl kustomize deploy/base` (or an overlay); image:
    replaces every container's image if given. Returns new objects with this cluster's config
    in the ConfigMap and its hash on the DaemonSet's pod template (a changed config rolls the
    agents); the input is not changed. The remotes' kubeconfigs are not here: they are the
    Secret sdn-tunnel-remotes (the distribute role), which the DaemonSet mounts as a whole."""
    out = []
    seen = set()
    for o in objects:
        if not o:
            continue
        # A plain copy: Ansible passes lazily templated containers, whose elements may be
        # fresh copies on each access (changes to them would be lost).
        o = json.loads(json.dumps(o))
        kind = o.get("kind")
        name = (o.get("metadata") or {}).get("name")
        if kind == "ConfigMap" and name == "sdn-tunnel-config":
            o["data"] = {"config.yaml": config_text}
        elif kind == "DaemonSet" and name == "sdn-tunnel":
            spec = o["spec"]["template"]["spec"]
            tmeta = o["spec"]["template"].setdefault("metadata", {})
            tmeta.setdefault("annotations", {})["sdn-tunnel.io/config-sha256"] = (
                hashlib.sha256(config_text.encode()).hexdigest())
            if image:
                for c in spec.get("initContainers", []) + spec["containers"]:
                    c["image"] = image
        seen.add((kind, name))
        out.append(o)
    for needed in (("ConfigMap", "sdn-tunnel-config"), ("DaemonSet", "sdn-tunnel")):
        if needed not in seen:
            raise AnsibleFilterError(f"agent_manifests: deploy/base has no {needed[0]} {needed[1]} "
                                     f"(cluster {cluster})")
    return out


class FilterModule:
    def filters(self):
        return {"cidr_overlaps": cidr_overlaps, "agent_manifests": agent_manifests}
