//! Rejection reasons are free text for people ("podCIDR 10.1.0.0/24 overlaps ..."); metrics
//! need a small fixed set of label values, so this maps each reason to a class.

/// Every class [`classify`] can return (the label's complete value set).
pub const CLASSES: &[&str] = &[
    "cidr_overlap",
    "outside_cidrs",
    "no_pod_cidrs",
    "duplicate_key",
    "invalid_key",
    "invalid_endpoint",
    "invalid_pod_cidrs",
    "invalid_ports",
    "invalid_address",
    "invalid_name",
    "oversized",
    "invalid",
];

/// The class of one rejection reason (see `source::convert` and `model::plan` for the texts).
pub fn classify(reason: &str) -> &'static str {
    let has = |s: &str| reason.contains(s);
    if has("overlaps") {
        "cidr_overlap"
    } else if has("outside") {
        "outside_cidrs"
    } else if has("no podCIDRs") {
        "no_pod_cidrs"
    } else if has("duplicate publicKey")
        || has("publicKey belongs to")
        || has("publicKey claimed by")
    {
        // the same key on two nodes, or claimed by nodes of several remotes
        "duplicate_key"
    } else if has("too long") || has("(limit ") {
        "oversized"
    } else if has("is not a DNS") || has("is not a namespace/name") {
        "invalid_name"
    } else if has(crate::source::ANN_PUBLIC_KEY) || has("publicKey") || has("malformed key") {
        "invalid_key"
    } else if has(crate::source::ANN_ENDPOINT)
        || (has("endpoint") && has("port 0"))
        // the plan's endpoint checks: "endpoint <addr> is a loopback address", "... is inside"
        || (reason.starts_with("endpoint ") && (has(" address") || has(" is inside ")))
    {
        "invalid_endpoint"
    } else if has(crate::source::ANN_POD_CIDRS) || has("not a CIDR") {
        "invalid_pod_cidrs"
    } else if has("port") || has("protocol") {
        "invalid_ports"
    } else if has("not an IP address") || has("not an address") || has("unicast") {
        "invalid_address"
    } else {
        "invalid"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_reasons_map_to_their_class() {
        for (reason, class) in [
            (
                "podCIDR 10.1.0.0/24 overlaps 10.1.0.0/16 of cluster.podCIDRs",
                "cidr_overlap",
            ),
            (
                "podCIDRs 10.128.1.0/24 outside remote west podCIDRs",
                "outside_cidrs",
            ),
            ("outside remote west podCIDRs", "outside_cidrs"),
            ("no podCIDRs", "no_pod_cidrs"),
            (
                "duplicate publicKey (also node b1 of remote west)",
                "duplicate_key",
            ),
            (
                "annotation sdn-tunnel.io/public-key: malformed key: bad length",
                "invalid_key",
            ),
            (
                "annotation sdn-tunnel.io/endpoint: 'x' is not an address:port",
                "invalid_endpoint",
            ),
            (
                "annotation sdn-tunnel.io/endpoint-override: '1.2.3.4:0': port 0",
                "invalid_endpoint",
            ),
            (
                "annotation sdn-tunnel.io/pod-cidrs is too long",
                "oversized",
            ),
            (
                "annotation sdn-tunnel.io/pod-cidrs: 'x' is not a CIDR: e",
                "invalid_pod_cidrs",
            ),
            ("spec.podCIDRs: 'x' is not a CIDR: e", "invalid_pod_cidrs"),
            ("300 ports (limit 100)", "oversized"),
            ("spec.ports: port 70000 out of range", "invalid_ports"),
            ("unknown protocol 'XTP'", "invalid_ports"),
            (
                "spec.clusterIPs: 'x' is not an IP address",
                "invalid_address",
            ),
            ("no spec", "invalid"),
            (
                "publicKey belongs to a node of remote west; refused here",
                "duplicate_key",
            ),
            (
                "publicKey claimed by nodes of several remotes (north, west): refused in all of them",
                "duplicate_key",
            ),
            ("endpoint 127.0.0.1:51820 is a loopback address", "invalid_endpoint"),
            ("endpoint [fe80::1]:51820 is a link-local address", "invalid_endpoint"),
            (
                "endpoint 10.128.0.5:51820 is inside 10.128.0.0/14, a pod or service range of the config",
                "invalid_endpoint",
            ),
            ("name 'a\\x1b' is not a DNS subdomain", "invalid_name"),
            ("port name 'HTTP_' is not a DNS label", "invalid_name"),
            (
                "name 'Bad/x' is not a namespace/name of DNS labels",
                "invalid_name",
            ),
        ] {
            assert_eq!(classify(reason), class, "{reason}");
        }
    }

    #[test]
    fn every_class_is_declared() {
        for r in ["overlaps", "outside", "", "port", "too long", "publicKey"] {
            assert!(CLASSES.contains(&classify(r)));
        }
    }
}
