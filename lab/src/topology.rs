//! The lab's addressing plan: pure data, no I/O.
//!
//! | cluster | node letter | pods           | services       | underlay (node j = 1, 2, ...)  |
//! |---------|-------------|----------------|----------------|--------------------------------|
//! | east    | a           | 10.128.0.0/14  | 172.30.0.0/16  | 192.168.77.1j, fd00:77::1j     |
//! | west    | b           | 10.132.0.0/14  | 172.31.0.0/16  | 192.168.77.2j, fd00:77::2j     |
//! | south   | c           | 10.140.0.0/14  | 172.28.0.0/16  | 192.168.77.3j, fd00:77::3j     |
//! | north   | n (foreign) | 10.136.0.0/14  | 172.29.0.0/16  | 192.168.77.41, fd00:77::41     |
//!
//! Node j (0-based) of a cluster owns the /24 `10.<o>.<j>.0/24` of the cluster's /14; its pod
//! gateway (on bridge `cbr0`) is `.1`, its pods are `.10`, `.11`, ...

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Underlay IPv4 network shared by all nodes (one bridge in the underlay namespace).
pub const UNDERLAY_V4_PREFIX: u8 = 24;
/// Underlay IPv6 network shared by all nodes.
pub const UNDERLAY_V6_PREFIX: u8 = 64;
/// UDP port every tunnel (ours and wireguard-go) listens on, each in its own namespace.
pub const LISTEN_PORT: u16 = 51820;

/// An IPv4 network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    pub const fn new(addr: Ipv4Addr, prefix: u8) -> Self {
        Ipv4Net { addr, prefix }
    }
    /// The address `offset` hosts into the network (`nth(1)` = the first host address).
    pub fn nth(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + offset)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The IPv6 twin of a lab IPv4 pod network (`pods_ipv6`): `10.O.J.H` -> `fd10:0:O:J::H`, so
/// a cluster's `10.O.0.0/14` -> `fd10:0:O::/48` and a node's `10.O.J.0/24` -> `fd10:0:O:J::/64`
/// (the decimal octets written as hex digits, so 10.132.0.10 reads fd10:0:132::10).
pub fn v6_twin(ip: Ipv4Addr) -> Ipv6Addr {
    let hex = |b: u8| u16::from_str_radix(&b.to_string(), 16).expect("decimal digits are hex");
    let [_, o, j, h] = ip.octets();
    Ipv6Addr::new(0xfd10, 0, hex(o), hex(j), 0, 0, 0, hex(h))
}

/// The IPv6 twin of a cluster (/14 -> /48) or node (/24 -> /64) pod network.
pub fn v6_twin_net(net: &Ipv4Net) -> String {
    let prefix = if net.prefix <= 16 { 48 } else { 64 };
    format!("{}/{prefix}", v6_twin(net.addr))
}

/// One cluster of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    pub name: String,
    /// First letter of its node names (`a` -> a1, a2, ...).
    pub letter: char,
    pub pod_cidr: Ipv4Net,
    pub service_cidr: Ipv4Net,
    /// Nodes run Debian's wireguard-go instead of sdn-tunnel.
    pub foreign: bool,
    /// Node names, in order.
    pub nodes: Vec<String>,
}

/// One node of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// e.g. `a1`.
    pub name: String,
    pub cluster: String,
    /// Network namespace name (`<prefix>-a1`).
    pub ns: String,
    /// Tunnel device name inside the node namespace (`<prefix>-a1`, <= 15 chars).
    pub device: String,
    pub underlay_v4: Ipv4Addr,
    pub underlay_v6: Ipv6Addr,
    /// This node's pod CIDR (a /24 of the cluster's pod CIDR).
    pub pod_cidr: Ipv4Net,
    /// The pod gateway, first address of `pod_cidr`, on bridge `cbr0`.
    pub gateway: Ipv4Addr,
    /// Pod addresses (`.10`, `.11`, ...), one per pod namespace.
    pub pods: Vec<Ipv4Addr>,
    /// Pod namespace names (`<prefix>-a1-p0`, ...).
    pub pod_ns: Vec<String>,
    pub listen_port: u16,
    /// Runs wireguard-go (the interop node) rather than sdn-tunnel.
    pub foreign: bool,
}

struct ClusterTemplate {
    name: &'static str,
    letter: char,
    pod_octet: u8,
    service_octet: u8,
    underlay_base: u8,
}

const CLUSTERS: [ClusterTemplate; 3] = [
    ClusterTemplate {
        name: "east",
        letter: 'a',
        pod_octet: 128,
        service_octet: 30,
        underlay_base: 10,
    },
    ClusterTemplate {
        name: "west",
        letter: 'b',
        pod_octet: 132,
        service_octet: 31,
        underlay_base: 20,
    },
    ClusterTemplate {
        name: "south",
        letter: 'c',
        pod_octet: 140,
        service_octet: 28,
        underlay_base: 30,
    },
];

const FOREIGN: ClusterTemplate = ClusterTemplate {
    name: "north",
    letter: 'n',
    pod_octet: 136,
    service_octet: 29,
    underlay_base: 40,
};

/// The whole addressing plan of one lab instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub prefix: String,
    pub underlay_ns: String,
    pub clusters: Vec<ClusterSpec>,
    pub nodes: Vec<NodeSpec>,
}

impl Topology {
    /// `clusters` sdn-tunnel clusters (1..=3) of `nodes_per_cluster` nodes (1..=9) with
    /// `pods_per_node` pods (0..=200) each, plus the foreign wireguard-go cluster "north" (one
    /// node) when `foreign` is set.
    pub fn plan(
        prefix: &str,
        clusters: usize,
        nodes_per_cluster: usize,
        pods_per_node: usize,
        foreign: bool,
    ) -> anyhow::Result<Topology> {
        anyhow::ensure!(
            (1..=3).contains(&clusters),
            "clusters must be 1..=3, got {clusters}"
        );
        anyhow::ensure!(
            (1..=9).contains(&nodes_per_cluster),
            "nodes per cluster must be 1..=9, got {nodes_per_cluster}"
        );
        anyhow::ensure!(
            pods_per_node <= 200,
            "pods per node must be <= 200, got {pods_per_node}"
        );
        // Device names are `<prefix>-<node>` and must fit IFNAMSIZ (15 chars).
        anyhow::ensure!(
            !prefix.is_empty()
                && prefix.len() <= 10
                && prefix.bytes().all(|b| b.is_ascii_alphanumeric()),
            "lab prefix must be 1..=10 ASCII alphanumerics, got {prefix:?}"
        );
        let mut topo = Topology {
            prefix: prefix.to_string(),
            underlay_ns: format!("{prefix}-u"),
            clusters: Vec::new(),
            nodes: Vec::new(),
        };
        let mut templates: Vec<(&ClusterTemplate, usize, bool)> = CLUSTERS[..clusters]
            .iter()
            .map(|t| (t, nodes_per_cluster, false))
            .collect();
        if foreign {
            templates.push((&FOREIGN, 1, true));
        }
        for (t, n_nodes, is_foreign) in templates {
            let mut cluster = ClusterSpec {
                name: t.name.to_string(),
                letter: t.letter,
                pod_cidr: Ipv4Net::new(Ipv4Addr::new(10, t.pod_octet, 0, 0), 14),
                service_cidr: Ipv4Net::new(Ipv4Addr::new(172, t.service_octet, 0, 0), 16),
                foreign: is_foreign,
                nodes: Vec::new(),
            };
            for j in 0..n_nodes {
                let name = format!("{}{}", t.letter, j + 1);
                let host = t.underlay_base + j as u8 + 1;
                let pod_cidr = Ipv4Net::new(Ipv4Addr::new(10, t.pod_octet, j as u8, 0), 24);
                let ns = format!("{prefix}-{name}");
                topo.nodes.push(NodeSpec {
                    device: ns.clone(),
                    underlay_v4: Ipv4Addr::new(192, 168, 77, host),
                    underlay_v6: Ipv6Addr::new(
                        0xfd00,
                        0x77,
                        0,
                        0,
                        0,
                        0,
                        0,
                        // fd00:77::11 reads like 192.168.77.11.
                        u16::from_str_radix(&host.to_string(), 16).expect("decimal digits"),
                    ),
                    gateway: pod_cidr.nth(1),
                    pods: (0..pods_per_node)
                        .map(|i| pod_cidr.nth(10 + i as u32))
                        .collect(),
                    pod_ns: (0..pods_per_node).map(|i| format!("{ns}-p{i}")).collect(),
                    pod_cidr,
                    ns,
                    cluster: t.name.to_string(),
                    listen_port: LISTEN_PORT,
                    foreign: is_foreign,
                    name: name.clone(),
                });
                cluster.nodes.push(name);
            }
            topo.clusters.push(cluster);
        }
        Ok(topo)
    }

    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn cluster(&self, name: &str) -> Option<&ClusterSpec> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// Every namespace of the lab, underlay first, then each node followed by its pods.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v = vec![self.underlay_ns.clone()];
        for n in &self.nodes {
            v.push(n.ns.clone());
            v.extend(n.pod_ns.iter().cloned());
        }
        v
    }

    /// Nodes of every cluster other than `node`'s (its tunnel peers).
    pub fn remote_nodes<'a>(&'a self, node: &'a NodeSpec) -> impl Iterator<Item = &'a NodeSpec> {
        self.nodes.iter().filter(move |n| n.cluster != node.cluster)
    }

    /// Pairs (a, b) of nodes in different clusters, a before b in lab order.
    pub fn cross_cluster_pairs(&self) -> Vec<(&NodeSpec, &NodeSpec)> {
        let mut v = Vec::new();
        for (i, a) in self.nodes.iter().enumerate() {
            for b in &self.nodes[i + 1..] {
                if a.cluster != b.cluster {
                    v.push((a, b));
                }
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plan_matches_the_documented_addresses() {
        let t = Topology::plan("sl0001", 2, 2, 1, true).unwrap();
        let names: Vec<_> = t.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a1", "a2", "b1", "b2", "n1"]);
        let b1 = t.node("b1").unwrap();
        assert_eq!(b1.underlay_v4, Ipv4Addr::new(192, 168, 77, 21));
        assert_eq!(b1.underlay_v6.to_string(), "fd00:77::21");
        assert_eq!(b1.pod_cidr.to_string(), "10.132.0.0/24");
        assert_eq!(v6_twin_net(&b1.pod_cidr), "fd10:0:132::/64");
        assert_eq!(v6_twin(b1.pods[0]).to_string(), "fd10:0:132::10");
        assert_eq!(
            v6_twin_net(&t.cluster("west").unwrap().pod_cidr),
            "fd10:0:132::/48"
        );
        assert_eq!(b1.gateway, Ipv4Addr::new(10, 132, 0, 1));
        assert_eq!(b1.pods, [Ipv4Addr::new(10, 132, 0, 10)]);
        assert_eq!(b1.ns, "sl0001-b1");
        assert_eq!(b1.pod_ns, ["sl0001-b1-p0"]);
        let a2 = t.node("a2").unwrap();
        assert_eq!(a2.pod_cidr.to_string(), "10.128.1.0/24");
        let n1 = t.node("n1").unwrap();
        assert!(n1.foreign);
        assert_eq!(n1.pod_cidr.to_string(), "10.136.0.0/24");
        assert_eq!(
            t.cluster("north").unwrap().service_cidr.to_string(),
            "172.29.0.0/16"
        );
        assert_eq!(
            t.cluster("east").unwrap().pod_cidr.to_string(),
            "10.128.0.0/14"
        );
        assert!(t.nodes.iter().all(|n| n.device.len() <= 15));
        // a1-b1, a1-b2, a1-n1, a2-b1, a2-b2, a2-n1, b1-n1, b2-n1
        assert_eq!(t.cross_cluster_pairs().len(), 8);
        assert_eq!(t.namespaces().len(), 1 + 5 * 2);
    }

    #[test]
    fn rejects_bad_sizes_and_prefixes() {
        assert!(Topology::plan("sl0001", 4, 2, 1, false).is_err());
        assert!(Topology::plan("sl0001", 2, 0, 1, false).is_err());
        assert!(Topology::plan("much-too-long-prefix", 2, 2, 1, false).is_err());
        assert!(Topology::plan("", 2, 2, 1, false).is_err());
    }
}
