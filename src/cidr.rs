//! Small CIDR helpers shared by config validation and `plan()`. All comparisons use the
//! network address (host bits masked off), so `10.128.0.1/14` behaves like `10.128.0.0/14`.
//! An IPv4 and an IPv6 network never contain or overlap each other.

use ipnetwork::IpNetwork;

/// `n` with its host bits cleared (`10.128.0.1/14` -> `10.128.0.0/14`).
pub fn network(n: &IpNetwork) -> IpNetwork {
    IpNetwork::new(n.network(), n.prefix()).expect("prefix of a valid network stays valid")
}

/// True if `n` has host bits set (its address is not its network address).
pub fn has_host_bits(n: &IpNetwork) -> bool {
    n.ip() != n.network()
}

/// True if every address of `inner` lies inside `outer`.
pub fn contains(outer: &IpNetwork, inner: &IpNetwork) -> bool {
    outer.is_ipv4() == inner.is_ipv4()
        && outer.prefix() <= inner.prefix()
        && outer.contains(inner.network())
}

/// True if `a` and `b` share at least one address. (CIDRs either nest or are disjoint.)
pub fn overlaps(a: &IpNetwork, b: &IpNetwork) -> bool {
    contains(a, b) || contains(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn contains_nested_and_equal() {
        assert!(contains(&n("10.128.0.0/14"), &n("10.128.3.0/24")));
        assert!(contains(&n("10.128.0.0/14"), &n("10.128.0.0/14")));
        assert!(contains(&n("10.128.0.0/14"), &n("10.131.255.255/32")));
        assert!(!contains(&n("10.128.0.0/14"), &n("10.132.0.0/24")));
        // a wider network is not inside a narrower one
        assert!(!contains(&n("10.128.0.0/16"), &n("10.128.0.0/14")));
        assert!(contains(&n("fd00::/48"), &n("fd00:0:0:1::/64")));
        assert!(!contains(&n("fd00::/48"), &n("fd00:1::/64")));
    }

    #[test]
    fn host_bits_are_ignored() {
        assert!(contains(&n("10.128.0.1/14"), &n("10.129.0.0/16")));
        assert!(overlaps(&n("10.128.0.0/16"), &n("10.129.0.1/14")));
        assert!(has_host_bits(&n("10.128.0.1/14")));
        assert!(!has_host_bits(&n("10.128.0.0/14")));
        assert_eq!(network(&n("10.128.0.1/14")), n("10.128.0.0/14"));
        assert_eq!(network(&n("fd00::1/64")), n("fd00::/64"));
    }

    #[test]
    fn overlaps_is_symmetric() {
        assert!(overlaps(&n("10.128.0.0/14"), &n("10.128.0.0/16")));
        assert!(overlaps(&n("10.128.0.0/16"), &n("10.128.0.0/14")));
        assert!(!overlaps(&n("10.128.0.0/14"), &n("10.132.0.0/14")));
        assert!(overlaps(&n("0.0.0.0/0"), &n("192.0.2.0/24")));
    }

    #[test]
    fn families_never_mix() {
        assert!(!overlaps(&n("0.0.0.0/0"), &n("::/0")));
        assert!(!contains(&n("::/0"), &n("10.0.0.0/8")));
        assert!(!contains(&n("0.0.0.0/0"), &n("::ffff:10.0.0.0/104")));
    }
}
