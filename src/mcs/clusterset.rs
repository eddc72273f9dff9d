//! The clusterset's services as this node serves them (issue 17, items 4 and 5): every
//! exported (namespace, name) of the local cluster and of the remotes, merged by the MCS API's
//! conflict resolution ([`super::conflict::derive`]), with one ClusterSetIP per configured IP
//! family ([`super::clusterset_ip::allocate`]) and each exporting cluster's endpoints in a
//! failover tier (local first). Pure: the proxy and DNS consume the result.
//!
//! Every node of every cluster computes the same ClusterSetIPs as long as they see the same
//! exported keys and use the same `mcs.clusterSetCIDRs`: nothing is agreed over the network.

use super::clusterset_ip::{self, AllocError};
use super::conflict::{self, Condition, Export, ImportType, MergedPort, Port, SessionAffinity};
use super::ServiceKey;
use crate::config::McsConfig;
use crate::model::{Endpoint, Protocol, RemoteService, ServicePort};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// One exporting cluster of a clusterset service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub cluster: String,
    /// This agent's own cluster.
    pub local: bool,
    /// Failover tier: 0 is the local cluster; remotes from 1, in `mcs.failoverOrder`. New
    /// connections go to the lowest tier with a ready endpoint.
    pub tier: u32,
    /// This cluster's own service ports (endpoint ports are matched to them by name).
    pub ports: Vec<ServicePort>,
    pub endpoints: Vec<Endpoint>,
}

/// One exported (namespace, name) of the clusterset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSetService {
    pub namespace: String,
    pub name: String,
    pub headless: bool,
    /// One per configured family; empty for a headless service.
    pub ips: Vec<IpAddr>,
    /// The merged ports, each with the clusters that serve exactly it.
    #[serde(skip)]
    pub ports: Vec<MergedPort>,
    /// ClientIP affinity timeout of the oldest export.
    pub affinity_timeout: Option<u32>,
    /// Exporting clusters of the derived type, by tier then name.
    pub members: Vec<Member>,
    /// KEP-1645 conflict reasons (`PortConflict`, ...); empty without one.
    pub conflicts: Vec<&'static str>,
    /// Every cluster that exports it, of either type, sorted.
    pub exported_by: Vec<String>,
    /// The `Valid` and `Conflict` conditions each of its ServiceExports gets.
    #[serde(skip)]
    pub conditions: Vec<Condition>,
    /// `sessionAffinity` as the ServiceImport carries it.
    #[serde(skip)]
    pub session_affinity: SessionAffinity,
    /// `internalTrafficPolicy` and `trafficDistribution` of the oldest export's Service (the
    /// ServiceImport carries them; not merged).
    #[serde(skip)]
    pub internal_traffic_policy: Option<String>,
    #[serde(skip)]
    pub traffic_distribution: Option<String>,
}

impl ClusterSetService {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What one cluster exports: its name, whether it is ours, and its exported services.
pub struct ClusterExports<'a> {
    pub cluster: &'a str,
    pub local: bool,
    pub services: Vec<&'a RemoteService>,
}

/// Pure: the clusterset's services, sorted by (namespace, name), and the problems that kept
/// ClusterSetIPs from being allocated (a CIDR too small), one line each.
pub fn build(
    cfg: &McsConfig,
    clusters: &[ClusterExports<'_>],
) -> (Vec<ClusterSetService>, Vec<String>) {
    let mut by_key: BTreeMap<ServiceKey, Vec<(&ClusterExports<'_>, &RemoteService)>> =
        BTreeMap::new();
    for c in clusters {
        for s in &c.services {
            by_key
                .entry(ServiceKey::new(&s.namespace, &s.name))
                .or_default()
                .push((c, s));
        }
    }
    let mut out = Vec::new();
    for (key, exports) in &by_key {
        let merged: Vec<Export> = exports
            .iter()
            .map(|(c, s)| export_of(c.cluster, s))
            .collect();
        let Some(d) = conflict::derive(&merged) else {
            continue;
        };
        let order = cfg.failover_order.get(&key.to_string());
        let mut members: Vec<Member> = exports
            .iter()
            .filter(|(c, _)| d.clusters.iter().any(|n| n == c.cluster))
            .map(|(c, s)| Member {
                cluster: c.cluster.to_string(),
                local: c.local,
                tier: tier(c, order),
                ports: s.ports.clone(),
                endpoints: s.endpoints.clone(),
            })
            .collect();
        members.sort_by(|a, b| (a.tier, &a.cluster).cmp(&(b.tier, &b.cluster)));
        let mut exported_by: Vec<String> =
            exports.iter().map(|(c, _)| c.cluster.to_string()).collect();
        exported_by.sort();
        let conditions = d.conditions.values().next().cloned().unwrap_or_default();
        // KEP-1645: the oldest export's Service decides what is not merged.
        let oldest = exports
            .iter()
            .min_by(|(a, x), (b, y)| {
                (x.exported_since.unwrap_or(0), a.cluster)
                    .cmp(&(y.exported_since.unwrap_or(0), b.cluster))
            })
            .map(|(_, s)| *s);
        out.push(ClusterSetService {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            headless: d.import_type == ImportType::Headless,
            ips: Vec::new(),
            ports: d.ports,
            affinity_timeout: match d.session_affinity {
                SessionAffinity::ClientIp { timeout_seconds } => {
                    Some(u32::try_from(timeout_seconds).unwrap_or(10800))
                }
                SessionAffinity::None => None,
            },
            members,
            conflicts: d.conflicts,
            exported_by,
            conditions,
            session_affinity: d.session_affinity,
            internal_traffic_policy: oldest.and_then(|s| s.internal_traffic_policy.clone()),
            traffic_distribution: oldest.and_then(|s| s.traffic_distribution.clone()),
        });
    }
    let problems = assign_ips(cfg, &mut out);
    (out, problems)
}

/// ClusterSetIPs for the services of type ClusterSetIP, one per configured CIDR.
fn assign_ips(cfg: &McsConfig, services: &mut [ClusterSetService]) -> Vec<String> {
    let keys: Vec<ServiceKey> = services
        .iter()
        .filter(|s| !s.headless)
        .map(|s| ServiceKey::new(&s.namespace, &s.name))
        .collect();
    let mut problems = Vec::new();
    for &cidr in &cfg.cluster_set_cidrs {
        match clusterset_ip::allocate(cidr, &keys) {
            Ok(ips) => {
                for s in services.iter_mut().filter(|s| !s.headless) {
                    if let Some(ip) = ips.get(&ServiceKey::new(&s.namespace, &s.name)) {
                        s.ips.push(*ip);
                    }
                }
            }
            Err(e @ AllocError::TooSmall { .. }) => problems.push(format!(
                "mcs.clusterSetCIDRs: {e}; no ClusterSetIPs from {cidr}"
            )),
        }
    }
    problems
}

fn tier(c: &ClusterExports<'_>, order: Option<&Vec<String>>) -> u32 {
    if c.local {
        return 0;
    }
    match order {
        Some(order) => {
            let at = order
                .iter()
                .position(|n| n == c.cluster)
                .unwrap_or(order.len());
            1 + at as u32
        }
        None => 1,
    }
}

fn export_of(cluster: &str, s: &RemoteService) -> Export {
    Export {
        cluster: cluster.to_string(),
        created: s.exported_since.unwrap_or(0),
        import_type: if s.headless {
            ImportType::Headless
        } else {
            ImportType::ClusterSetIp
        },
        ports: s
            .ports
            .iter()
            .map(|p| Port {
                name: p.name.clone(),
                protocol: match p.protocol {
                    Protocol::Tcp => conflict::Protocol::Tcp,
                    Protocol::Udp => conflict::Protocol::Udp,
                    Protocol::Sctp => conflict::Protocol::Sctp,
                },
                port: p.port,
                app_protocol: None,
            })
            .collect(),
        session_affinity: match s.affinity_timeout {
            Some(t) => SessionAffinity::ClientIp {
                timeout_seconds: i32::try_from(t).unwrap_or(i32::MAX),
            },
            None => SessionAffinity::None,
        },
    }
}

/// The model's protocol of a merged port.
pub fn protocol(p: &Port) -> Protocol {
    match p.protocol {
        conflict::Protocol::Tcp => Protocol::Tcp,
        conflict::Protocol::Udp => Protocol::Udp,
        conflict::Protocol::Sctp => Protocol::Sctp,
    }
}

#[cfg(test)]
mod tests;
