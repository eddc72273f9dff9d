//! The proxy's desired state, backend-neutral and pure: one [`VirtualService`] per remote
//! ClusterIP x service port, with its backends (remote pod IP : target port) and each backend's
//! state. The IPVS and nftables backends both program exactly this.

use crate::mcs::clusterset::{self, ClusterSetService};
use crate::mcs::conflict::MergedPort;
use crate::model::DesiredService;
use crate::model::{Endpoint, Protocol, RemoteService, ServicePort};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

/// What a backend may receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BackendState {
    /// Ready: takes new connections.
    Active,
    /// Terminating (or no longer ready): existing connections drain, no new ones.
    Draining,
    /// Its node's tunnel peer has had no handshake for too long: no new connections until
    /// the peer is back.
    PeerDown,
    /// A ClusterSetIP's endpoint in a cluster of a later failover tier while a closer one
    /// (the local cluster first) has a ready endpoint: no new connections, existing ones stay.
    Standby,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    pub addr: SocketAddr,
    pub node: Option<String>,
    pub state: BackendState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualService {
    pub remote: String,
    pub namespace: String,
    pub name: String,
    /// The service port's name ("" for a single unnamed port).
    pub port_name: String,
    pub vip: SocketAddr,
    pub protocol: Protocol,
    /// ClientIP session affinity timeout (seconds).
    pub affinity_timeout: Option<u32>,
    /// Sorted by address. May be empty: the service then refuses new connections at once.
    pub backends: Vec<Backend>,
}

impl VirtualService {
    /// `remote/namespace/name:port` for logs and status.
    pub fn label(&self) -> String {
        if self.port_name.is_empty() {
            format!("{}/{}/{}", self.remote, self.namespace, self.name)
        } else {
            format!(
                "{}/{}/{}:{}",
                self.remote, self.namespace, self.name, self.port_name
            )
        }
    }

    pub fn active_backends(&self) -> impl Iterator<Item = &Backend> {
        self.backends
            .iter()
            .filter(|b| b.state == BackendState::Active)
    }
}

/// Pure: every remote ClusterIP x port of the (already confined) services. Headless services
/// have no VIP and are skipped (DNS answers them). `peer_down(remote, node)` says whether the
/// tunnel to that remote node is down. Sorted by (vip, protocol).
pub fn virtual_services(
    services: &[DesiredService],
    peer_down: &dyn Fn(&str, &str) -> bool,
) -> Vec<VirtualService> {
    let mut out = Vec::new();
    for ds in services {
        let s = &ds.service;
        for &ip in &s.cluster_ips {
            for port in &s.ports {
                out.push(virtual_service(&ds.remote, s, ip, port, peer_down));
            }
        }
    }
    out.sort_by_key(|v| (v.vip, v.protocol));
    // Two remote services can't share a VIP (serviceCIDRs don't overlap), but one service
    // listing a port twice could: keep the first.
    out.dedup_by(|b, a| a.vip == b.vip && a.protocol == b.protocol);
    out
}

fn virtual_service(
    remote: &str,
    s: &RemoteService,
    ip: IpAddr,
    port: &ServicePort,
    peer_down: &dyn Fn(&str, &str) -> bool,
) -> VirtualService {
    let mut backends: Vec<Backend> = s
        .endpoints
        .iter()
        .filter(|e| e.ip.is_ipv4() == ip.is_ipv4())
        .filter_map(|e| {
            let target = target_port(e, port)?;
            Some(Backend {
                addr: SocketAddr::new(e.ip, target),
                node: e.node_name.clone(),
                state: state(remote, e, peer_down),
            })
        })
        .collect();
    backends.sort_by_key(|b| b.addr);
    backends.dedup_by_key(|b| b.addr);
    VirtualService {
        remote: remote.to_string(),
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        port_name: port.name.clone(),
        vip: SocketAddr::new(ip, port.port),
        protocol: port.protocol,
        affinity_timeout: s.affinity_timeout,
        backends,
    }
}

/// Pure: every ClusterSetIP x merged port of the clusterset's services. A port's backends are
/// the endpoints of the clusters that serve exactly that port (a port conflict keeps each
/// port to its clusters); new connections go only to the lowest failover tier with an
/// Active backend, the other tiers' Active backends are Standby. Sorted by (vip, protocol).
pub fn clusterset_virtual_services(
    services: &[ClusterSetService],
    peer_down: &dyn Fn(&str, &str) -> bool,
) -> Vec<VirtualService> {
    let mut out = Vec::new();
    for s in services {
        for &ip in &s.ips {
            for mp in &s.ports {
                out.push(clusterset_virtual_service(s, ip, mp, peer_down));
            }
        }
    }
    out.sort_by_key(|v| (v.vip, v.protocol));
    out.dedup_by(|b, a| a.vip == b.vip && a.protocol == b.protocol);
    out
}

fn clusterset_virtual_service(
    s: &ClusterSetService,
    ip: IpAddr,
    mp: &MergedPort,
    peer_down: &dyn Fn(&str, &str) -> bool,
) -> VirtualService {
    let protocol = clusterset::protocol(&mp.port);
    let mut tiered: Vec<(u32, Backend)> = Vec::new();
    for m in s
        .members
        .iter()
        .filter(|m| mp.clusters.contains(&m.cluster))
    {
        // The member's own port of that name and protocol, for endpoints to be matched to.
        let Some(port) = m
            .ports
            .iter()
            .find(|p| p.name == mp.port.name && p.protocol == protocol)
        else {
            continue;
        };
        // Our own cluster's nodes are no tunnel peers: never PeerDown.
        let down = |remote: &str, node: &str| !m.local && peer_down(remote, node);
        for e in m
            .endpoints
            .iter()
            .filter(|e| e.ip.is_ipv4() == ip.is_ipv4())
        {
            if let Some(target) = target_port(e, port) {
                tiered.push((
                    m.tier,
                    Backend {
                        addr: SocketAddr::new(e.ip, target),
                        node: e.node_name.clone(),
                        state: state(&m.cluster, e, &down),
                    },
                ));
            }
        }
    }
    let serving_tier = tiered
        .iter()
        .filter(|(_, b)| b.state == BackendState::Active)
        .map(|(t, _)| *t)
        .min();
    let mut backends: Vec<Backend> = tiered
        .into_iter()
        .map(|(t, mut b)| {
            if b.state == BackendState::Active && Some(t) != serving_tier {
                b.state = BackendState::Standby;
            }
            b
        })
        .collect();
    backends.sort_by_key(|b| b.addr);
    backends.dedup_by_key(|b| b.addr);
    VirtualService {
        remote: CLUSTERSET.to_string(),
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        port_name: mp.port.name.clone(),
        vip: SocketAddr::new(ip, mp.port.port),
        protocol,
        affinity_timeout: s.affinity_timeout,
        backends,
    }
}

/// The `remote` of a ClusterSetIP's virtual service.
pub const CLUSTERSET: &str = "clusterset";

/// The endpoint's port with the service port's name and protocol.
fn target_port(e: &Endpoint, port: &ServicePort) -> Option<u16> {
    e.ports
        .iter()
        .find(|p| p.name == port.name && p.protocol == port.protocol)
        .map(|p| p.port)
}

fn state(remote: &str, e: &Endpoint, peer_down: &dyn Fn(&str, &str) -> bool) -> BackendState {
    if !e.ready || e.terminating {
        return BackendState::Draining;
    }
    match &e.node_name {
        Some(n) if peer_down(remote, n) => BackendState::PeerDown,
        _ => BackendState::Active,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EndpointPort;
    use std::sync::Arc;

    fn ep(ip: &str, node: &str, ready: bool, terminating: bool, ports: &[(&str, u16)]) -> Endpoint {
        let ports: Vec<EndpointPort> = ports
            .iter()
            .map(|(n, p)| EndpointPort {
                name: n.to_string(),
                port: *p,
                protocol: Protocol::Tcp,
            })
            .collect();
        Endpoint {
            ip: ip.parse().unwrap(),
            node_name: Some(node.into()),
            ready,
            serving: ready || terminating,
            terminating,
            ports: Arc::from(ports),
        }
    }

    fn svc(ips: &[&str], ports: &[(&str, u16)], endpoints: Vec<Endpoint>) -> DesiredService {
        DesiredService {
            remote: "west".into(),
            service: RemoteService {
                namespace: "default".into(),
                name: "web".into(),
                cluster_ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
                headless: ips.is_empty(),
                ports: ports
                    .iter()
                    .map(|(n, p)| ServicePort {
                        name: n.to_string(),
                        port: *p,
                        protocol: Protocol::Tcp,
                    })
                    .collect(),
                affinity_timeout: Some(60),
                endpoints,
                exported_since: None,
                internal_traffic_policy: None,
                traffic_distribution: None,
            },
        }
    }

    #[test]
    fn one_virtual_service_per_ip_and_port_with_named_target_ports() {
        let s = svc(
            &["172.31.0.10", "fd00:31::10"],
            &[("http", 80), ("metrics", 9090)],
            vec![
                ep(
                    "10.132.1.5",
                    "b1",
                    true,
                    false,
                    &[("http", 8080), ("metrics", 9100)],
                ),
                ep("10.132.2.5", "b2", true, false, &[("http", 8080)]),
                ep("fd00:132::5", "b1", true, false, &[("http", 8080)]),
            ],
        );
        let v = virtual_services(&[s], &|_, _| false);
        let vips: Vec<String> = v.iter().map(|v| v.vip.to_string()).collect();
        assert_eq!(
            vips,
            [
                "172.31.0.10:80",
                "172.31.0.10:9090",
                "[fd00:31::10]:80",
                "[fd00:31::10]:9090"
            ]
        );
        let addrs = |i: usize| -> Vec<String> {
            v[i].backends.iter().map(|b| b.addr.to_string()).collect()
        };
        assert_eq!(addrs(0), ["10.132.1.5:8080", "10.132.2.5:8080"]);
        // Only b1's endpoint exposes "metrics".
        assert_eq!(addrs(1), ["10.132.1.5:9100"]);
        // Families don't mix.
        assert_eq!(addrs(2), ["[fd00:132::5]:8080"]);
        assert!(v[3].backends.is_empty());
        assert_eq!(v[0].affinity_timeout, Some(60));
        assert_eq!(v[0].label(), "west/default/web:http");
    }

    #[test]
    fn backend_states() {
        let s = svc(
            &["172.31.0.10"],
            &[("", 80)],
            vec![
                ep("10.132.1.5", "b1", true, false, &[("", 8080)]),
                ep("10.132.1.6", "b1", false, true, &[("", 8080)]),
                ep("10.132.1.7", "b1", false, false, &[("", 8080)]),
                ep("10.132.2.5", "b2", true, false, &[("", 8080)]),
            ],
        );
        let v = virtual_services(&[s], &|remote, node| remote == "west" && node == "b2");
        let states: Vec<BackendState> = v[0].backends.iter().map(|b| b.state).collect();
        use BackendState::*;
        assert_eq!(states, [Active, Draining, Draining, PeerDown]);
        assert_eq!(v[0].active_backends().count(), 1);
        assert_eq!(v[0].label(), "west/default/web");
    }

    #[test]
    fn headless_services_have_no_virtual_service() {
        let s = svc(
            &[],
            &[("", 80)],
            vec![ep("10.132.1.5", "b1", true, false, &[("", 80)])],
        );
        assert!(virtual_services(&[s], &|_, _| false).is_empty());
    }

    fn member(
        cluster: &str,
        local: bool,
        tier: u32,
        eps: Vec<Endpoint>,
    ) -> crate::mcs::clusterset::Member {
        crate::mcs::clusterset::Member {
            cluster: cluster.into(),
            local,
            tier,
            ports: vec![ServicePort {
                name: "http".into(),
                port: 80,
                protocol: Protocol::Tcp,
            }],
            endpoints: eps,
        }
    }

    fn clusterset_svc(members: Vec<crate::mcs::clusterset::Member>) -> ClusterSetService {
        use crate::mcs::conflict::{self, Port};
        ClusterSetService {
            namespace: "default".into(),
            name: "web".into(),
            headless: false,
            ips: vec!["10.250.0.7".parse().unwrap()],
            ports: vec![MergedPort {
                port: Port {
                    name: "http".into(),
                    protocol: conflict::Protocol::Tcp,
                    port: 80,
                    app_protocol: None,
                },
                clusters: members.iter().map(|m| m.cluster.clone()).collect(),
            }],
            affinity_timeout: None,
            members,
            conflicts: vec![],
            exported_by: vec![],
            conditions: vec![],
            session_affinity: crate::mcs::conflict::SessionAffinity::None,
            internal_traffic_policy: None,
            traffic_distribution: None,
        }
    }

    fn states(v: &VirtualService) -> Vec<(String, BackendState)> {
        v.backends
            .iter()
            .map(|b| (b.addr.to_string(), b.state))
            .collect()
    }

    #[test]
    fn clusterset_ip_prefers_local_then_fails_over_by_tier() {
        use BackendState::*;
        let local_ready = ep("10.1.0.5", "a1", true, false, &[("http", 8080)]);
        let local_gone = ep("10.1.0.5", "a1", false, true, &[("http", 8080)]);
        let west = ep("10.2.0.5", "w1", true, false, &[("http", 8080)]);
        let north = ep("10.3.0.5", "n1", true, false, &[("http", 8080)]);
        let build = |local: Endpoint, down: &dyn Fn(&str, &str) -> bool| {
            let s = clusterset_svc(vec![
                member("east", true, 0, vec![local]),
                member("west", false, 1, vec![west.clone()]),
                member("north", false, 2, vec![north.clone()]),
            ]);
            let v = clusterset_virtual_services(&[s], down);
            assert_eq!(v.len(), 1);
            assert_eq!(v[0].vip.to_string(), "10.250.0.7:80");
            assert_eq!(v[0].label(), "clusterset/default/web:http");
            states(&v[0])
        };
        let up = |_: &str, _: &str| false;
        assert_eq!(
            build(local_ready.clone(), &up),
            [
                ("10.1.0.5:8080".into(), Active),
                ("10.2.0.5:8080".into(), Standby),
                ("10.3.0.5:8080".into(), Standby)
            ]
        );
        // The local pod terminates: it drains and the first remote tier takes new connections.
        assert_eq!(
            build(local_gone.clone(), &up),
            [
                ("10.1.0.5:8080".into(), Draining),
                ("10.2.0.5:8080".into(), Active),
                ("10.3.0.5:8080".into(), Standby)
            ]
        );
        // The first tier's peer is down as well: the next tier.
        let west_down = |remote: &str, node: &str| remote == "west" && node == "w1";
        assert_eq!(
            build(local_gone, &west_down),
            [
                ("10.1.0.5:8080".into(), Draining),
                ("10.2.0.5:8080".into(), PeerDown),
                ("10.3.0.5:8080".into(), Active)
            ]
        );
        // Local endpoints are never judged by tunnel peers (a remote may name a node alike).
        let all_down = |_: &str, _: &str| true;
        assert_eq!(build(local_ready, &all_down)[0].1, Active);
    }

    #[test]
    fn clusterset_port_goes_only_to_the_clusters_that_serve_it() {
        let mut s = clusterset_svc(vec![
            member(
                "east",
                true,
                0,
                vec![ep("10.1.0.5", "a1", true, false, &[("http", 8080)])],
            ),
            member(
                "west",
                false,
                1,
                vec![ep("10.2.0.5", "w1", true, false, &[("http", 8080)])],
            ),
        ]);
        s.ports[0].clusters = vec!["west".into()];
        let v = clusterset_virtual_services(&[s], &|_, _| false);
        assert_eq!(
            states(&v[0]),
            [("10.2.0.5:8080".to_string(), BackendState::Active)]
        );
    }
}
