//! The snapshot vocabulary: what one remote cluster offers (nodes that run our agent, services
//! with their endpoints), as the sources produce it and the planner, the proxy and DNS consume
//! it. Only what those need, never whole Kubernetes objects, so 10k remote services stay cheap.
//! Plain data: no I/O, nothing here knows where a snapshot came from.

use super::Rejected;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// A remote cluster node that runs our agent (it advertised a public key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteNode {
    pub name: String,
    #[serde(serialize_with = "crate::model::ser_key")]
    pub public_key: [u8; 32],
    pub endpoint: Option<SocketAddr>,
    pub pod_cidrs: Vec<IpNetwork>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// "" for a single unnamed port.
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// A port of an endpoint, matched to a service port by name (and protocol).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub ip: IpAddr,
    pub node_name: Option<String>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub ports: Arc<[EndpointPort]>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteService {
    pub namespace: String,
    pub name: String,
    /// Empty for a headless service.
    #[serde(rename = "clusterIPs")]
    pub cluster_ips: Vec<IpAddr>,
    pub headless: bool,
    pub ports: Vec<ServicePort>,
    /// ClientIP session affinity timeout in seconds; None = no affinity.
    pub affinity_timeout: Option<u32>,
    pub endpoints: Vec<Endpoint>,
    /// `import: exported`: when its ServiceExport was created (Unix seconds; the MCS API's
    /// conflict resolution prefers the oldest export). None when not gated on exports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exported_since: Option<i64>,
    /// `spec.internalTrafficPolicy` and `spec.trafficDistribution` as written (for the
    /// ServiceImport of an exported service).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_traffic_policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_distribution: Option<String>,
}

impl RemoteService {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A limit of `limits` that a remote reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitHit {
    /// nodes, services or endpointslices.
    pub kind: String,
    pub limit: usize,
    /// Objects ignored so far.
    pub ignored: u64,
    /// Still at the limit (the latest list or event did not fit).
    pub now: bool,
}

/// Everything one remote cluster currently offers. Nodes and services are sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RemoteSnapshot {
    pub nodes: Vec<RemoteNode>,
    pub services: Vec<RemoteService>,
    /// Objects the source could not even parse (malformed key, endpoint, CIDR, oversized
    /// annotation). CIDR confinement is `plan()`'s job and adds its own rejections.
    pub rejected: Vec<Rejected>,
    /// Limits (config `limits`) this remote reached.
    pub limits_hit: Vec<LimitHit>,
    /// What `import` let through (kubeconfig remotes only).
    pub import: Option<ImportReport>,
    /// namespace/service -> when it last changed (watch events after the first sync only).
    #[serde(skip)]
    pub changed_at: std::collections::BTreeMap<String, std::time::SystemTime>,
}

/// How a remote's `import` policy applied to its Services.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportReport {
    /// `exported`, `all` or `selector <selector>`.
    pub policy: String,
    /// `import: exported`: the ServiceExport API the remote serves
    /// ("multicluster.x-k8s.io/v1beta1"); None there means it serves none, so nothing is
    /// imported.
    pub export_api: Option<String>,
    /// ServiceExports seen (`import: exported`).
    pub service_exports: usize,
    /// Services left out because nothing exports them.
    pub not_exported: usize,
}

impl RemoteSnapshot {
    pub fn endpoint_count(&self) -> usize {
        self.services.iter().map(|s| s.endpoints.len()).sum()
    }
}
