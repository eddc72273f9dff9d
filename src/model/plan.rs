//! `plan()`: (config, remote snapshots) -> desired peers, routes and services, plus every
//! input it refused and why.
//!
//! This is where the confinement invariant lives: whatever a remote offers (a node's pod
//! CIDRs, a ClusterIP, an endpoint IP) must lie inside that remote's CIDRs declared in *our*
//! config, or it is rejected and never programmed. The config validator refuses bad static
//! peers too; `plan()` checks again because snapshots may come from a remote cluster's API.

use super::types::{RemoteNode, RemoteService, RemoteSnapshot};
use super::{Desired, DesiredPeer, DesiredService, Rejected};
use crate::cidr;
use crate::config::{Config, RemoteConfig};
use ipnetwork::IpNetwork;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Remote name -> its latest snapshot. A remote missing here (not synced yet) contributes its
/// routes but no peers or services.
pub type Snapshots = HashMap<String, Arc<RemoteSnapshot>>;

/// Which remote owns a public key (from the previous plan): in a conflict the owner keeps it.
pub type KeyOwners = HashMap<[u8; 32], String>;

/// Every remote's pod and service CIDRs, in config order, without duplicates: routes depend on
/// the config alone (a remote not synced yet keeps its routes, so its traffic stays in the
/// tunnel, fail closed).
pub fn routes(cfg: &Config) -> Vec<IpNetwork> {
    let mut routes = Vec::new();
    for remote in &cfg.remotes {
        for net in remote.pod_cidrs.iter().chain(&remote.service_cidrs) {
            let net = cidr::network(net);
            if !routes.contains(&net) {
                routes.push(net);
            }
        }
    }
    routes
}

/// [`plan_with`] without key owners (a first plan).
pub fn plan(cfg: &Config, snapshots: &Snapshots) -> Desired {
    plan_with(cfg, snapshots, &KeyOwners::new())
}

/// Pure: no I/O. Peers and services in config (remote) order, then snapshot order; routes =
/// every remote's pod and service CIDRs, in config order, without duplicates.
///
/// A public key claimed by nodes of two remotes stays with the remote that had it in the
/// previous plan (`owners`); without one, every claim is refused: a remote that copies
/// another's (public) key can then not take over that node's traffic, only fail to add its
/// own. An endpoint must be a unicast address outside every CIDR of the config (ours and the
/// remotes'): no loopback, link-local or multicast, and no reflection off our own pods or
/// services.
///
/// Cost: O(n log n) in the number of nodes (key counts in a hash map, each node's pod CIDRs
/// against the remote's accepted ones in an ordered map) plus O(e) in endpoints; the CIDR
/// lists of the config are short and scanned linearly.
pub fn plan_with(cfg: &Config, snapshots: &Snapshots, owners: &KeyOwners) -> Desired {
    let keepalive = Some(cfg.tunnel.persistent_keepalive).filter(|&s| s != 0);
    let mut desired = Desired::default();
    let all_cidrs: Vec<IpNetwork> = cfg.all_cidrs().copied().collect();
    let claims = key_claims(cfg, snapshots);
    // public key -> who took it in this plan (within one remote, the first node)
    let mut claimed: HashMap<[u8; 32], String> = HashMap::new();

    desired.routes = routes(cfg);
    for remote in &cfg.remotes {
        let Some(snap) = snapshots.get(&remote.name) else {
            continue;
        };
        desired.rejected.extend(snap.rejected.iter().cloned());
        let kind = if remote.static_source.is_some() {
            "peer"
        } else {
            "node"
        };
        let mut reject = |object: String, reason: String| {
            desired.rejected.push(Rejected {
                remote: remote.name.clone(),
                object,
                reason,
            })
        };
        // Pod CIDRs taken by this remote's accepted nodes: an overlapping claim would steal
        // another node's traffic (longest prefix wins), so the later claim is refused.
        let mut taken = Taken::default();
        for n in &snap.nodes {
            let label = if n.name.is_empty() {
                crate::keys::encode_key(&n.public_key)
            } else {
                n.name.clone()
            };
            let object = format!("{kind} {label}");
            let checked = confine_node(remote, n)
                .and_then(|()| check_endpoint(n, &all_cidrs))
                .and_then(|()| key_conflict(&remote.name, &n.public_key, &claims, owners))
                .and_then(|()| match claimed.get(&n.public_key) {
                    Some(first) => Err(format!("duplicate publicKey (also {first})")),
                    None => Ok(()),
                })
                .and_then(|()| taken.check(n));
            match checked {
                Ok(()) => {
                    taken.insert(n, &object);
                    claimed.insert(n.public_key, format!("{object} of remote {}", remote.name));
                    desired.peers.push(DesiredPeer {
                        remote: remote.name.clone(),
                        name: Some(n.name.clone()).filter(|s| !s.is_empty()),
                        public_key: n.public_key,
                        endpoint: n.endpoint,
                        allowed_ips: n.pod_cidrs.iter().map(cidr::network).collect(),
                        persistent_keepalive: keepalive,
                    });
                }
                Err(reason) => reject(object, reason),
            }
        }
        plan_services(remote, snap, &mut desired);
    }
    desired
}

/// Public key -> the remotes whose snapshots claim it.
fn key_claims<'a>(cfg: &'a Config, snapshots: &Snapshots) -> HashMap<[u8; 32], Vec<&'a str>> {
    let mut claims: HashMap<[u8; 32], Vec<&str>> = HashMap::new();
    for remote in &cfg.remotes {
        if let Some(snap) = snapshots.get(&remote.name) {
            for n in &snap.nodes {
                let c = claims.entry(n.public_key).or_default();
                if !c.contains(&remote.name.as_str()) {
                    c.push(&remote.name);
                }
            }
        }
    }
    claims
}

/// The remote's services, confined (a service outside the remote's ranges, or an endpoint,
/// becomes a rejection).
fn plan_services(remote: &RemoteConfig, snap: &RemoteSnapshot, desired: &mut Desired) {
    for s in &snap.services {
        let object = format!("service {}", s.key());
        match confine_service(remote, s) {
            Ok((service, dropped)) => {
                for (ip, why) in dropped {
                    desired.rejected.push(Rejected {
                        remote: remote.name.clone(),
                        object: format!("endpoint {ip} of {object}"),
                        reason: why,
                    });
                }
                desired.services.push(DesiredService {
                    remote: remote.name.clone(),
                    service,
                });
            }
            Err(reason) => desired.rejected.push(Rejected {
                remote: remote.name.clone(),
                object,
                reason,
            }),
        }
    }
}

/// The key owners of a plan's result, for the next plan.
pub fn key_owners(d: &Desired) -> KeyOwners {
    d.peers
        .iter()
        .map(|p| (p.public_key, p.remote.clone()))
        .collect()
}

/// A key claimed by several remotes: the previous owner keeps it, or nobody does.
fn key_conflict(
    remote: &str,
    key: &[u8; 32],
    claims: &HashMap<[u8; 32], Vec<&str>>,
    owners: &KeyOwners,
) -> Result<(), String> {
    let Some(all) = claims.get(key).filter(|c| c.len() > 1) else {
        return Ok(());
    };
    match owners.get(key) {
        Some(owner) if owner == remote => Ok(()),
        Some(owner) if all.contains(&owner.as_str()) => Err(format!(
            "publicKey belongs to a node of remote {owner}; refused here"
        )),
        _ => Err(format!(
            "publicKey claimed by nodes of several remotes ({}): refused in all of them",
            all.join(", ")
        )),
    }
}

/// An endpoint must be a plain unicast address, and none of ours or the remotes' CIDRs: a
/// remote must not make us send handshakes to ourselves, our pods or services, or another
/// cluster's (a reflector).
fn check_endpoint(n: &RemoteNode, all_cidrs: &[IpNetwork]) -> Result<(), String> {
    let Some(ep) = n.endpoint else { return Ok(()) };
    let ip = ep.ip().to_canonical();
    let why = match ip {
        _ if ip.is_unspecified() => Some("unspecified"),
        _ if ip.is_loopback() => Some("loopback"),
        _ if ip.is_multicast() => Some("multicast"),
        IpAddr::V4(a) if a.is_link_local() => Some("link-local"),
        IpAddr::V4(a) if a.is_broadcast() => Some("broadcast"),
        IpAddr::V6(a) if (a.segments()[0] & 0xffc0) == 0xfe80 => Some("link-local"),
        _ => None,
    };
    if let Some(why) = why {
        return Err(format!("endpoint {ep} is a {why} address"));
    }
    match all_cidrs.iter().find(|c| c.contains(ip)) {
        Some(c) => Err(format!(
            "endpoint {ep} is inside {c}, a pod or service range of the config"
        )),
        None => Ok(()),
    }
}

/// Pod CIDRs of one remote's accepted nodes, disjoint, by family and first address.
#[derive(Default)]
struct Taken {
    by_start: std::collections::BTreeMap<(bool, u128), (IpNetwork, String)>,
}

impl Taken {
    /// (family, first address) of a CIDR.
    fn key(c: &IpNetwork) -> (bool, u128) {
        match cidr::network(c) {
            IpNetwork::V4(n) => (false, u32::from(n.network()) as u128),
            IpNetwork::V6(n) => (true, u128::from(n.network())),
        }
    }

    /// The stored CIDRs are disjoint, so a new one overlaps one of them only if it overlaps
    /// the last one starting at or before it, or the first one starting inside it: O(log n).
    fn check(&self, n: &RemoteNode) -> Result<(), String> {
        for c in &n.pod_cidrs {
            let k = Self::key(c);
            let before = self.by_start.range(..=k).next_back();
            let after = self.by_start.range(k..).next();
            for (_, (t, who)) in before.into_iter().chain(after) {
                if cidr::overlaps(t, c) {
                    return Err(format!("podCIDR {c} overlaps {t} of {who}"));
                }
            }
        }
        Ok(())
    }

    fn insert(&mut self, n: &RemoteNode, object: &str) {
        for c in &n.pod_cidrs {
            self.by_start
                .insert(Self::key(c), (cidr::network(c), object.to_string()));
        }
    }
}

fn confine_node(remote: &RemoteConfig, n: &RemoteNode) -> Result<(), String> {
    if n.pod_cidrs.is_empty() {
        return Err("no podCIDRs".into());
    }
    match n
        .pod_cidrs
        .iter()
        .find(|c| !inside_any(&remote.pod_cidrs, c))
    {
        Some(outside) => Err(format!(
            "podCIDR {outside} is outside remote {} podCIDRs",
            remote.name
        )),
        None => Ok(()),
    }
}

/// A ClusterIP outside the remote's serviceCIDRs rejects the whole service; an endpoint outside
/// its podCIDRs is dropped (and reported) while the rest of the service stays.
fn confine_service(
    remote: &RemoteConfig,
    s: &RemoteService,
) -> Result<(RemoteService, Vec<(IpAddr, String)>), String> {
    if let Some(ip) = s
        .cluster_ips
        .iter()
        .find(|ip| !remote.service_cidrs.iter().any(|n| n.contains(**ip)))
    {
        return Err(format!(
            "clusterIP {ip} is outside remote {} serviceCIDRs",
            remote.name
        ));
    }
    let mut dropped = Vec::new();
    let outside = |ip: &IpAddr| !remote.pod_cidrs.iter().any(|n| n.contains(*ip));
    if !s.endpoints.iter().any(|e| outside(&e.ip)) {
        return Ok((s.clone(), dropped));
    }
    let mut service = s.clone();
    service.endpoints.retain(|e| {
        if outside(&e.ip) {
            dropped.push((e.ip, format!("outside remote {} podCIDRs", remote.name)));
            false
        } else {
            true
        }
    });
    Ok((service, dropped))
}

fn inside_any(outers: &[IpNetwork], inner: &IpNetwork) -> bool {
    outers.iter().any(|o| cidr::contains(o, inner))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        ClusterConfig, NodeConfig, ProxyConfig, StaticPeer, StaticSource, TunnelConfig,
    };
    use crate::keys;
    use crate::source::static_source::snapshots as static_snapshots;

    const K1: &str = "4ONiAEenjiGp0lgFD1UTkoqxnIHcISSKx9IX8357aW0=";
    const K2: &str = "2S1OsDzbX+zWb+gIOdFvMM+B0nryXhbDOJut0zweQh0=";
    const K3: &str = "N+nJ8cAwoDkFtVqqx8HI4nAKkHo8GbRf8c/leX+HEAY=";

    fn n(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn peer(name: &str, key: &str, endpoint: Option<&str>, cidrs: &[&str]) -> StaticPeer {
        StaticPeer {
            name: Some(name.into()),
            public_key: key.into(),
            endpoint: endpoint.map(str::to_string),
            pod_cidrs: cidrs.iter().map(|c| n(c)).collect(),
        }
    }

    fn remote(name: &str, pods: &[&str], svcs: &[&str], peers: Vec<StaticPeer>) -> RemoteConfig {
        RemoteConfig {
            name: name.into(),
            pod_cidrs: pods.iter().map(|c| n(c)).collect(),
            service_cidrs: svcs.iter().map(|c| n(c)).collect(),
            static_source: Some(StaticSource {
                peers,
                services: vec![],
            }),
            kubeconfig: None,
            context: None,
            import: Default::default(),
        }
    }

    /// Built directly, bypassing `validate()`.
    fn config(remotes: Vec<RemoteConfig>) -> Config {
        Config {
            cluster: ClusterConfig {
                name: "east".into(),
                pod_cidrs: vec![n("10.128.0.0/14")],
                service_cidrs: vec![n("10.96.0.0/16")],
                kubeconfig: None,
            },
            node: NodeConfig {
                name: Some("a1".into()),
                pod_cidrs: vec![n("10.128.1.0/24")],
                source_ip: None,
                advertise: Default::default(),
            },
            tunnel: TunnelConfig::default(),
            proxy: ProxyConfig::default(),
            http: Default::default(),
            limits: Default::default(),
            mcs: Default::default(),
            remotes,
            dns: Default::default(),
        }
    }

    #[test]
    fn static_peers_become_desired_peers() {
        let cfg = config(vec![remote(
            "west",
            &["10.132.0.0/14"],
            &["10.101.0.0/16"],
            vec![
                peer("b1", K1, Some("192.0.2.11:51820"), &["10.132.1.0/24"]),
                peer("b2", K2, None, &["10.132.2.0/24", "10.133.0.0/24"]),
            ],
        )]);
        let d = plan(&cfg, &static_snapshots(&cfg));
        assert!(d.rejected.is_empty(), "{:?}", d.rejected);
        assert_eq!(
            d.peers[0],
            DesiredPeer {
                remote: "west".into(),
                name: Some("b1".into()),
                public_key: keys::parse_key(K1).unwrap(),
                endpoint: Some("192.0.2.11:51820".parse().unwrap()),
                allowed_ips: vec![n("10.132.1.0/24")],
                persistent_keepalive: Some(25),
            }
        );
        assert_eq!(d.peers[1].endpoint, None);
        assert_eq!(
            d.peers[1].allowed_ips,
            vec![n("10.132.2.0/24"), n("10.133.0.0/24")]
        );
        assert_eq!(d.routes, vec![n("10.132.0.0/14"), n("10.101.0.0/16")]);
    }

    #[test]
    fn keepalive_zero_disables() {
        let mut cfg = config(vec![remote(
            "west",
            &["10.132.0.0/14"],
            &[],
            vec![peer("b1", K1, Some("[fd00::1]:51820"), &["10.132.1.0/24"])],
        )]);
        cfg.tunnel.persistent_keepalive = 0;
        let d = plan(&cfg, &static_snapshots(&cfg));
        assert_eq!(d.peers[0].persistent_keepalive, None);
        assert_eq!(
            d.peers[0].endpoint,
            Some("[fd00::1]:51820".parse().unwrap())
        );
    }

    #[test]
    fn peer_outside_its_remote_is_rejected_not_programmed() {
        let cfg = config(vec![remote(
            "west",
            &["10.132.0.0/14"],
            &[],
            vec![
                // claims part of the local cluster's pod range
                peer("evil", K1, None, &["10.132.1.0/24", "10.128.1.0/24"]),
                // wider than the whole remote range
                peer("wide", K2, None, &["10.128.0.0/8"]),
                peer("empty", K3, None, &[]),
            ],
        )]);
        let d = plan(&cfg, &static_snapshots(&cfg));
        assert!(d.peers.is_empty(), "{:?}", d.peers);
        assert_eq!(d.rejected.len(), 3);
        assert_eq!(d.rejected[0].remote, "west");
        assert_eq!(d.rejected[0].object, "peer evil");
        assert!(
            d.rejected[0].reason.contains("10.128.1.0/24"),
            "{:?}",
            d.rejected[0]
        );
        assert!(d.rejected[0].reason.contains("outside remote west"));
        assert!(d.rejected[1].reason.contains("outside"));
        assert!(d.rejected[2].reason.contains("no podCIDRs"));
        // the remote's own routes are still desired
        assert_eq!(d.routes, vec![n("10.132.0.0/14")]);
    }

    #[test]
    fn malformed_key_and_endpoint_rejected() {
        let mut bad_key = peer("b1", "not-a-key", None, &["10.132.1.0/24"]);
        bad_key.name = None;
        let cfg = config(vec![remote(
            "west",
            &["10.132.0.0/14"],
            &[],
            vec![
                bad_key,
                peer("b2", K2, Some("west-b2.example:51820"), &["10.132.2.0/24"]),
                peer("b3", K3, Some("192.0.2.3:0"), &["10.132.3.0/24"]),
            ],
        )]);
        let d = plan(&cfg, &static_snapshots(&cfg));
        assert!(d.peers.is_empty());
        let r = &d.rejected;
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].object, "peer not-a-key");
        assert!(r[0].reason.starts_with("publicKey:"), "{:?}", r[0]);
        assert!(r[1].reason.starts_with("endpoint:"), "{:?}", r[1]);
        assert!(r[2].reason.contains("port 0"), "{:?}", r[2]);
    }

    fn two_remotes_claiming_k1() -> Config {
        config(vec![
            remote(
                "west",
                &["10.132.0.0/14"],
                &[],
                vec![peer("b1", K1, None, &["10.132.1.0/24"])],
            ),
            remote(
                "north",
                &["10.136.0.0/14"],
                &[],
                vec![peer("c1", K1, None, &["10.136.1.0/24"])],
            ),
        ])
    }

    #[test]
    fn a_key_claimed_by_two_remotes_goes_to_neither_without_an_owner() {
        let cfg = two_remotes_claiming_k1();
        let d = plan(&cfg, &static_snapshots(&cfg));
        assert!(d.peers.is_empty(), "{:?}", d.peers);
        assert_eq!(d.rejected.len(), 2);
        for r in &d.rejected {
            assert_eq!(
                r.reason,
                "publicKey claimed by nodes of several remotes (west, north): refused in all of them"
            );
        }
    }

    #[test]
    fn a_key_stays_with_the_remote_that_had_it() {
        let cfg = two_remotes_claiming_k1();
        let mut owners = KeyOwners::new();
        owners.insert(keys::parse_key(K1).unwrap(), "west".into());
        let d = plan_with(&cfg, &static_snapshots(&cfg), &owners);
        assert_eq!(d.peers.len(), 1);
        assert_eq!(d.peers[0].name.as_deref(), Some("b1"));
        assert_eq!(d.rejected.len(), 1);
        assert_eq!(d.rejected[0].remote, "north");
        assert_eq!(
            d.rejected[0].reason,
            "publicKey belongs to a node of remote west; refused here"
        );
        assert_eq!(key_owners(&d), owners);
    }

    #[test]
    fn duplicate_key_within_one_remote_first_wins() {
        let cfg = config(vec![remote(
            "west",
            &["10.132.0.0/14"],
            &[],
            vec![
                peer("b1", K1, None, &["10.132.1.0/24"]),
                peer("b2", K1, None, &["10.132.2.0/24"]),
            ],
        )]);
        let d = plan(&cfg, &static_snapshots(&cfg));
        assert_eq!(d.peers.len(), 1);
        assert_eq!(
            d.rejected[0].reason,
            "duplicate publicKey (also peer b1 of remote west)"
        );
    }

    #[test]
    fn endpoints_must_be_unicast_and_outside_every_range() {
        use crate::model::types::{RemoteNode, RemoteSnapshot};
        let mut west = remote("west", &["10.132.0.0/14"], &["10.101.0.0/16"], vec![]);
        west.static_source = None;
        west.kubeconfig = Some("/k".into());
        let cfg = config(vec![west]);
        let keys_: Vec<[u8; 32]> = (0..8)
            .map(|_| keys::public_from_private(&keys::generate_private()))
            .collect();
        let eps = [
            ("127.0.0.1:51830", "loopback"),
            ("169.254.1.1:51830", "link-local"),
            ("[fe80::1]:51830", "link-local"),
            ("224.0.0.1:51830", "multicast"),
            ("0.0.0.0:51830", "unspecified"),
            ("10.128.0.5:51830", "inside 10.128.0.0/14"),
            ("10.101.0.10:51830", "inside 10.101.0.0/16"),
            ("192.0.2.11:51830", ""),
        ];
        let nodes = eps
            .iter()
            .enumerate()
            .map(|(i, (ep, _))| RemoteNode {
                name: format!("b{i}"),
                public_key: keys_[i],
                endpoint: Some(ep.parse().unwrap()),
                pod_cidrs: vec![n(&format!("10.132.{i}.0/24"))],
            })
            .collect();
        let mut snaps = Snapshots::new();
        snaps.insert(
            "west".into(),
            std::sync::Arc::new(RemoteSnapshot {
                nodes,
                ..Default::default()
            }),
        );
        let d = plan(&cfg, &snaps);
        assert_eq!(d.peers.len(), 1, "{:?}", d.rejected);
        assert_eq!(d.peers[0].name.as_deref(), Some("b7"));
        for (i, (_, why)) in eps.iter().enumerate().take(7) {
            let r = d
                .rejected
                .iter()
                .find(|r| r.object == format!("node b{i}"))
                .unwrap();
            assert!(r.reason.contains(why), "b{i}: {}", r.reason);
        }
    }

    #[test]
    fn a_wider_claim_overlapping_earlier_narrow_ones_is_refused() {
        use crate::model::types::{RemoteNode, RemoteSnapshot};
        let mut west = remote("west", &["10.132.0.0/14"], &[], vec![]);
        west.static_source = None;
        west.kubeconfig = Some("/k".into());
        let cfg = config(vec![west]);
        let node = |name: &str, cidr: &str| RemoteNode {
            name: name.into(),
            public_key: keys::public_from_private(&keys::generate_private()),
            endpoint: None,
            pod_cidrs: vec![n(cidr)],
        };
        let mut snaps = Snapshots::new();
        snaps.insert(
            "west".into(),
            std::sync::Arc::new(RemoteSnapshot {
                nodes: vec![
                    node("b1", "10.132.5.0/24"),
                    node("b2", "10.132.9.0/24"),
                    node("wide", "10.132.0.0/16"),
                    node("b3", "10.133.0.0/24"),
                ],
                ..Default::default()
            }),
        );
        let d = plan(&cfg, &snaps);
        let names: Vec<_> = d.peers.iter().filter_map(|p| p.name.clone()).collect();
        assert_eq!(names, ["b1", "b2", "b3"]);
        assert_eq!(d.rejected.len(), 1);
        assert!(
            d.rejected[0]
                .reason
                .contains("overlaps 10.132.5.0/24 of node b1"),
            "{:?}",
            d.rejected
        );
    }

    #[test]
    fn routes_in_order_deduplicated_and_normalized() {
        let mut no_source = remote("north", &["10.136.0.0/14"], &["10.101.0.0/16"], vec![]);
        no_source.static_source = None;
        let cfg = config(vec![
            remote(
                "west",
                &["10.132.0.0/14", "fd00:132::/48"],
                &["10.101.0.0/16", "10.132.0.0/14"],
                vec![],
            ),
            no_source,
            remote("south", &["10.140.0.1/14"], &[], vec![]),
        ]);
        let d = plan(&cfg, &static_snapshots(&cfg));
        assert_eq!(
            d.routes,
            vec![
                n("10.132.0.0/14"),
                n("fd00:132::/48"),
                n("10.101.0.0/16"),
                n("10.136.0.0/14"),
                n("10.140.0.0/14"),
            ]
        );
        assert!(d.peers.is_empty() && d.rejected.is_empty());
    }

    #[test]
    fn kube_snapshot_confined_and_overlaps_refused() {
        use crate::model::types::{RemoteNode, RemoteSnapshot};
        let mut west = remote("west", &["10.132.0.0/14"], &["10.101.0.0/16"], vec![]);
        west.static_source = None;
        west.kubeconfig = Some("/k".into());
        let cfg = config(vec![west]);
        let node = |name: &str, key: &str, cidr: &str| RemoteNode {
            name: name.into(),
            public_key: keys::parse_key(key).unwrap(),
            endpoint: None,
            pod_cidrs: vec![n(cidr)],
        };
        let snap = RemoteSnapshot {
            nodes: vec![
                node("b1", K1, "10.132.1.0/24"),
                // Inside west's range, but on top of b1's pod CIDR.
                node("b2", K2, "10.132.1.128/25"),
                node("b3", K3, "10.128.9.0/24"),
            ],
            ..Default::default()
        };
        let mut snaps = Snapshots::new();
        snaps.insert("west".into(), std::sync::Arc::new(snap));
        let d = plan(&cfg, &snaps);
        assert_eq!(d.peers.len(), 1);
        assert_eq!(d.peers[0].name.as_deref(), Some("b1"));
        assert_eq!(d.rejected[0].object, "node b2");
        assert_eq!(
            d.rejected[0].reason,
            "podCIDR 10.132.1.128/25 overlaps 10.132.1.0/24 of node b1"
        );
        assert_eq!(d.rejected[1].object, "node b3");
        assert!(d.rejected[1]
            .reason
            .contains("outside remote west podCIDRs"));
    }

    #[test]
    fn no_remotes_nothing_desired() {
        assert_eq!(plan(&config(vec![]), &Snapshots::new()), Desired::default());
    }
}
