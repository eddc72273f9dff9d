//! With the IPVS proxy: source NAT of host-originated connections to remote ClusterIPs, pure
//! text added to the tunnel's table.

/// Adds to a [`mss_clamp_ruleset`] a source NAT for host-originated connections to remote
/// ClusterIPs through IPVS: the host picks the VIP itself (bound locally) as source, which the
/// remote cluster would route to its own service range, so such packets leaving through the
/// tunnel get `src` (an address in this node's pod CIDR, like the tunnel routes' src) instead.
pub fn with_host_snat(
    ruleset: &str,
    device: &str,
    remote_service_cidrs: &[ipnetwork::IpNetwork],
    src4: Option<std::net::Ipv4Addr>,
    src6: Option<std::net::Ipv6Addr>,
) -> String {
    let v4: Vec<String> = remote_service_cidrs
        .iter()
        .filter(|n| n.is_ipv4())
        .map(|n| n.to_string())
        .collect();
    let v6: Vec<String> = remote_service_cidrs
        .iter()
        .filter(|n| n.is_ipv6())
        .map(|n| n.to_string())
        .collect();
    let mut chain = String::new();
    if let (Some(src), false) = (src4, v4.is_empty()) {
        chain += &format!(
            "		oifname \"{device}\" ip saddr {{ {} }} snat ip to {src}\n",
            v4.join(", ")
        );
    }
    if let (Some(src), false) = (src6, v6.is_empty()) {
        chain += &format!(
            "		oifname \"{device}\" ip6 saddr {{ {} }} snat ip6 to {src}\n",
            v6.join(", ")
        );
    }
    if chain.is_empty() || !ruleset.ends_with("}\n") {
        return ruleset.to_string();
    }
    let body = &ruleset[..ruleset.len() - 2];
    format!(
        "{body}\tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n{chain}\t}}\n}}\n"
    )
}
