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
    } else if has("duplicate publicKey") {
        "duplicate_key"
    } else if has("too long") || has("(limit ") {
        "oversized"
    } else if has(crate::source::ANN_PUBLIC_KEY) || has("publicKey") || has("malformed key") {
        "invalid_key"
    } else if has(crate::source::ANN_ENDPOINT) || (has("endpoint") && has("port 0")) {
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
