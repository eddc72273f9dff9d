//! The pure planner `model::plan_with` (confinement of what remote clusters offer) over
//! arbitrary remote snapshots: nodes (names, public keys, endpoints, pod CIDRs), services
//! (ClusterIPs, endpoints) and source rejections, for remotes of the config and one that is
//! not in it, with arbitrary previous key owners. Two valid configs (dual-stack kubeconfig
//! remotes with nested CIDR lists; static remotes with keepalive 0). Addresses are drawn
//! inside and around the configured ranges, from the special ranges (loopback, link-local,
//! multicast, broadcast, unspecified, their v4-mapped forms) or at random.
//!
//! Asserts (common/plan_check.rs): no panic; deterministic; routes = the remotes' CIDRs; no
//! planned peer allowed-IP outside its remote's podCIDRs, overlapping our own ranges or
//! another peer's; no endpoint that is loopback/link-local/multicast/broadcast/unspecified
//! (v4-mapped too) or inside any configured range; no key given to two peers, and a key
//! claimed by several remotes only to its previous owner; every peer is a node of its
//! snapshot; services exactly as confined (refused on a ClusterIP outside serviceCIDRs,
//! endpoints outside podCIDRs dropped); every refused object and dropped endpoint reported;
//! re-planning with the plan's own key owners keeps the same peers. And every planned service
//! resolves in the DNS zones built from the plan.
#![no_main]

#[path = "common/plan_check.rs"]
mod plan_check;

use arbitrary::Arbitrary;
use ipnetwork::IpNetwork;
use libfuzzer_sys::fuzz_target;
use sdn_tunnel::config::Config;
use sdn_tunnel::dns::Zones;
use sdn_tunnel::model::{KeyOwners, Rejected, Snapshots};
use sdn_tunnel::source::{
    Endpoint, EndpointPort, Protocol, RemoteNode, RemoteService, RemoteSnapshot, ServicePort,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

const KUBE: &str = r#"
cluster:
  name: east
  podCIDRs: [10.128.0.0/14, "fd00:128::/48"]
  serviceCIDRs: [10.96.0.0/16, "fd00:96::/112"]
node:
  name: a1
  podCIDRs: [10.128.1.0/24]
remotes:
  - name: west
    podCIDRs: [10.132.0.0/14, "fd00:132::/48"]
    serviceCIDRs: [10.101.0.0/16, "fd00:101::/112"]
    kubeconfig: /k/west
  - name: north
    podCIDRs: [10.136.0.0/16, 10.136.0.0/20, 10.137.0.0/24]
    serviceCIDRs: [10.102.0.0/16]
    kubeconfig: /k/north
  - name: south
    podCIDRs: [10.140.0.0/14]
    kubeconfig: /k/south
"#;

const STATIC: &str = r#"
cluster:
  name: east
  podCIDRs: [10.128.0.0/14]
  serviceCIDRs: [10.96.0.0/16]
node:
  name: a1
tunnel:
  persistentKeepalive: 0
remotes:
  - name: west
    podCIDRs: [10.132.0.0/14]
    serviceCIDRs: [10.101.0.0/16]
    static: {}
  - name: north
    podCIDRs: ["fd00:136::/48"]
    serviceCIDRs: ["fd00:102::/112"]
    static: {}
"#;

const REMOTES: [&str; 4] = ["west", "north", "south", "ghost"];

fn configs() -> &'static [Config; 2] {
    static C: OnceLock<[Config; 2]> = OnceLock::new();
    C.get_or_init(|| {
        [
            Config::parse(KUBE, None).expect("KUBE is valid"),
            Config::parse(STATIC, None).expect("STATIC is valid"),
        ]
    })
}

#[derive(Arbitrary, Debug)]
enum Addr {
    RemotePod { r: u8, k: u8, off: u128 },
    RemoteSvc { r: u8, k: u8, off: u128 },
    LocalPod { k: u8, off: u128 },
    LocalSvc { k: u8, off: u128 },
    Special(u8),
    V4(u32),
    V6(u128),
    Mapped(u32),
}

const SPECIAL: &[&str] = &[
    "127.0.0.1",
    "127.9.9.9",
    "::1",
    "169.254.1.1",
    "fe80::1",
    "febf:ffff::1",
    "fec0::1",
    "224.0.0.1",
    "239.255.255.250",
    "ff02::1",
    "255.255.255.255",
    "0.0.0.0",
    "::",
    "::ffff:127.0.0.1",
    "::ffff:169.254.3.3",
    "::ffff:10.128.1.5",
    "::ffff:10.132.0.9",
    "::ffff:255.255.255.255",
    "::ffff:0.0.0.0",
    "::ffff:224.1.1.1",
    "192.0.2.7",
    "2001:db8::7",
    "10.128.1.1",
    "10.96.0.1",
];

/// An address inside `nets[k]` (host bits from `off`), or None for an empty list.
fn inside(nets: &[IpNetwork], k: u8, off: u128) -> Option<IpAddr> {
    let n = nets.get(usize::from(k) % nets.len().max(1))?;
    Some(match n {
        IpNetwork::V4(n) => {
            let host = if n.prefix() == 0 {
                u32::MAX
            } else {
                (1u32 << (32 - n.prefix())).wrapping_sub(1)
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) | (off as u32 & host)))
        }
        IpNetwork::V6(n) => {
            let host = if n.prefix() == 0 {
                u128::MAX
            } else {
                (1u128 << (128 - n.prefix())).wrapping_sub(1)
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | (off & host)))
        }
    })
}

impl Addr {
    fn ip(&self, cfg: &Config) -> IpAddr {
        let remote = |r: u8| &cfg.remotes[usize::from(r) % cfg.remotes.len()];
        let fallback = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
        match *self {
            Addr::RemotePod { r, k, off } => inside(&remote(r).pod_cidrs, k, off),
            Addr::RemoteSvc { r, k, off } => inside(&remote(r).service_cidrs, k, off),
            Addr::LocalPod { k, off } => inside(&cfg.cluster.pod_cidrs, k, off),
            Addr::LocalSvc { k, off } => inside(&cfg.cluster.service_cidrs, k, off),
            Addr::Special(i) => Some(SPECIAL[usize::from(i) % SPECIAL.len()].parse().unwrap()),
            Addr::V4(x) => Some(IpAddr::V4(x.into())),
            Addr::V6(x) => Some(IpAddr::V6(x.into())),
            Addr::Mapped(x) => Some(IpAddr::V6(Ipv4Addr::from(x).to_ipv6_mapped())),
        }
        .unwrap_or(fallback)
    }
}

#[derive(Arbitrary, Debug)]
struct Cidr {
    addr: Addr,
    prefix: u8,
}

impl Cidr {
    fn net(&self, cfg: &Config) -> IpNetwork {
        let ip = self.addr.ip(cfg);
        let max = if ip.is_ipv4() { 32 } else { 128 };
        // Host bits stay: plan must normalise them.
        IpNetwork::new(ip, self.prefix % (max + 1)).unwrap()
    }
}

#[derive(Arbitrary, Debug)]
enum Key {
    /// One of a few keys, so that claims collide.
    Small(u8),
    Any([u8; 32]),
}

impl Key {
    fn bytes(&self) -> [u8; 32] {
        match self {
            Key::Small(i) => [i % 6 + 1; 32],
            Key::Any(k) => *k,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Node {
    name: u8,
    key: Key,
    endpoint: Option<(Addr, u16)>,
    cidrs: Vec<Cidr>,
}

#[derive(Arbitrary, Debug)]
struct Service {
    ns: u8,
    name: u8,
    cluster_ips: Vec<Addr>,
    endpoints: Vec<(Addr, bool)>,
}

#[derive(Arbitrary, Debug)]
struct Snap {
    remote: u8,
    nodes: Vec<Node>,
    services: Vec<Service>,
    source_rejected: u8,
}

#[derive(Arbitrary, Debug)]
struct Input {
    static_config: bool,
    snaps: Vec<Snap>,
    owners: Vec<(Key, u8)>,
}

fn snapshot(s: &Snap, cfg: &Config, remote: &str) -> RemoteSnapshot {
    let ports = vec![ServicePort {
        name: "http".into(),
        port: 80,
        protocol: Protocol::Tcp,
    }];
    RemoteSnapshot {
        nodes: s
            .nodes
            .iter()
            .take(32)
            .map(|n| RemoteNode {
                name: if n.name == 0 {
                    String::new()
                } else {
                    format!("n{}", n.name)
                },
                public_key: n.key.bytes(),
                endpoint: n
                    .endpoint
                    .as_ref()
                    .map(|(a, p)| SocketAddr::new(a.ip(cfg), *p)),
                pod_cidrs: n.cidrs.iter().take(4).map(|c| c.net(cfg)).collect(),
            })
            .collect(),
        services: s
            .services
            .iter()
            .take(16)
            .map(|v| {
                let cluster_ips: Vec<IpAddr> =
                    v.cluster_ips.iter().take(3).map(|a| a.ip(cfg)).collect();
                RemoteService {
                    namespace: format!("ns{}", v.ns % 4),
                    name: format!("s{}", v.name % 8),
                    headless: cluster_ips.is_empty(),
                    cluster_ips,
                    ports: ports.clone(),
                    affinity_timeout: None,
                    endpoints: v
                        .endpoints
                        .iter()
                        .take(8)
                        .map(|(a, ready)| Endpoint {
                            ip: a.ip(cfg),
                            node_name: None,
                            ready: *ready,
                            serving: *ready,
                            terminating: false,
                            ports: Arc::from(vec![EndpointPort {
                                name: "http".into(),
                                port: 8080,
                                protocol: Protocol::Tcp,
                            }]),
                        })
                        .collect(),
                    exported_since: None,
                    internal_traffic_policy: None,
                    traffic_distribution: None,
                }
            })
            .collect(),
        rejected: (0..s.source_rejected % 3)
            .map(|i| Rejected {
                remote: remote.into(),
                object: format!("node bad{i}"),
                reason: "unparseable".into(),
            })
            .collect(),
        ..Default::default()
    }
}

fuzz_target!(|input: Input| {
    let cfg = &configs()[usize::from(input.static_config)];
    let mut snaps = Snapshots::new();
    for s in input.snaps.iter().take(4) {
        let remote = REMOTES[usize::from(s.remote) % REMOTES.len()];
        snaps.insert(remote.into(), Arc::new(snapshot(s, cfg, remote)));
    }
    let owners: KeyOwners = input
        .owners
        .iter()
        .take(8)
        .map(|(k, r)| {
            (
                k.bytes(),
                REMOTES[usize::from(*r) % REMOTES.len()].to_string(),
            )
        })
        .collect();
    let d = plan_check::check_plan(cfg, &snaps, &owners);

    // Every planned service resolves in the zones built from the plan.
    let remotes: Vec<&str> = cfg.remotes.iter().map(|r| r.name.as_str()).collect();
    let zones = Zones::build_for(&remotes, &d.services, "clusterset.local", 5);
    for s in &d.services {
        let name = format!(
            "{}.{}.svc.cluster.{}.",
            s.service.name, s.service.namespace, s.remote
        );
        let ans = zones.lookup_str(&name, hickory_proto::rr::RecordType::A);
        assert_eq!(
            ans.rcode,
            hickory_proto::op::ResponseCode::NoError,
            "{name} does not resolve"
        );
    }
});
