//! `plan()`: config -> desired peers and routes, plus the peers it refused and why.
//!
//! Defense in depth: `Config::validate` already refuses everything rejected here, but `plan()`
//! checks again so that nothing outside a remote's declared pod CIDRs is ever programmed, even
//! if a caller skipped validation (or, later, the input came from a remote cluster).

use super::{Desired, DesiredPeer, Rejected};
use crate::cidr;
use crate::config::{Config, RemoteConfig, StaticPeer};
use crate::keys;
use ipnetwork::IpNetwork;
use std::collections::HashMap;

/// Pure: no I/O. Peers in config order; routes = every remote's pod and service CIDRs, in
/// config order, without duplicates.
pub fn plan(cfg: &Config) -> Desired {
    let keepalive = Some(cfg.tunnel.persistent_keepalive).filter(|&s| s != 0);
    let mut desired = Desired::default();
    // public key -> who claimed it first
    let mut claimed: HashMap<[u8; 32], String> = HashMap::new();

    for remote in &cfg.remotes {
        for net in remote.pod_cidrs.iter().chain(&remote.service_cidrs) {
            let net = cidr::network(net);
            if !desired.routes.contains(&net) {
                desired.routes.push(net);
            }
        }
        let peers = remote.static_source.iter().flat_map(|s| &s.peers);
        for p in peers {
            let object = peer_label(p);
            let checked = static_peer(remote, p, keepalive).and_then(|peer| {
                match claimed.get(&peer.public_key) {
                    Some(first) => Err(format!("duplicate publicKey (also {first})")),
                    None => Ok(peer),
                }
            });
            match checked {
                Ok(peer) => {
                    claimed.insert(
                        peer.public_key,
                        format!("{object} of remote {}", remote.name),
                    );
                    desired.peers.push(peer);
                }
                Err(reason) => desired.rejected.push(Rejected {
                    remote: remote.name.clone(),
                    object,
                    reason,
                }),
            }
        }
    }
    desired
}

/// One static peer, confined to its remote's declared pod CIDRs.
fn static_peer(
    remote: &RemoteConfig,
    p: &StaticPeer,
    keepalive: Option<u16>,
) -> Result<DesiredPeer, String> {
    let public_key = keys::parse_key(&p.public_key).map_err(|e| format!("publicKey: {e}"))?;
    let endpoint = p.endpoint_addr().map_err(|e| format!("endpoint: {e}"))?;
    if p.pod_cidrs.is_empty() {
        return Err("no podCIDRs".into());
    }
    if let Some(outside) = p
        .pod_cidrs
        .iter()
        .find(|n| !inside_any(&remote.pod_cidrs, n))
    {
        return Err(format!(
            "podCIDR {outside} is outside remote {} podCIDRs",
            remote.name
        ));
    }
    Ok(DesiredPeer {
        remote: remote.name.clone(),
        name: p.name.clone(),
        public_key,
        endpoint,
        allowed_ips: p.pod_cidrs.iter().map(cidr::network).collect(),
        persistent_keepalive: keepalive,
    })
}

fn inside_any(outers: &[IpNetwork], inner: &IpNetwork) -> bool {
    outers.iter().any(|o| cidr::contains(o, inner))
}

fn peer_label(p: &StaticPeer) -> String {
    format!("peer {}", p.name.as_deref().unwrap_or(&p.public_key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClusterConfig, NodeConfig, ProxyConfig, StaticSource, TunnelConfig};

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
            static_source: Some(StaticSource { peers }),
        }
    }

    /// Built directly, bypassing `validate()`.
    fn config(remotes: Vec<RemoteConfig>) -> Config {
        Config {
            cluster: ClusterConfig {
                name: "east".into(),
                pod_cidrs: vec![n("10.128.0.0/14")],
                service_cidrs: vec![n("10.96.0.0/16")],
            },
            node: NodeConfig {
                name: Some("a1".into()),
                pod_cidrs: vec![n("10.128.1.0/24")],
                source_ip: None,
            },
            tunnel: TunnelConfig::default(),
            proxy: ProxyConfig::default(),
            remotes,
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
        let d = plan(&cfg);
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
        let d = plan(&cfg);
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
        let d = plan(&cfg);
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
        let d = plan(&cfg);
        assert!(d.peers.is_empty());
        let r = &d.rejected;
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].object, "peer not-a-key");
        assert!(r[0].reason.starts_with("publicKey:"), "{:?}", r[0]);
        assert!(r[1].reason.starts_with("endpoint:"), "{:?}", r[1]);
        assert!(r[2].reason.contains("port 0"), "{:?}", r[2]);
    }

    #[test]
    fn duplicate_key_rejected_first_wins() {
        let cfg = config(vec![
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
        ]);
        let d = plan(&cfg);
        assert_eq!(d.peers.len(), 1);
        assert_eq!(d.peers[0].name.as_deref(), Some("b1"));
        assert_eq!(d.rejected.len(), 1);
        assert_eq!(d.rejected[0].remote, "north");
        assert_eq!(
            d.rejected[0].reason,
            "duplicate publicKey (also peer b1 of remote west)"
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
        let d = plan(&cfg);
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
    fn no_remotes_nothing_desired() {
        assert_eq!(plan(&config(vec![])), Desired::default());
    }
}
