//! Sources: where remote clusters' nodes and services come from. Each remote has exactly one
//! source (`static` in the config file, or a `kubeconfig` for live watches); both produce the
//! same [`RemoteSnapshot`], which `model::plan` confines to the remote's declared CIDRs.
//!
//! Snapshots keep only what the tunnel, the proxy and DNS need (not whole Kubernetes objects),
//! so 10k remote services stay cheap.

pub mod convert;
pub mod kube_client;
pub mod kube_remote;
pub mod kubeconfig_policy;
pub mod message_limit;
pub mod own_node;
pub mod static_source;
pub mod store;
pub mod watch_health;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Node annotations (the `sdn-tunnel.io/` prefix is ours).
pub const ANN_PUBLIC_KEY: &str = "sdn-tunnel.io/public-key";
pub const ANN_ENDPOINT: &str = "sdn-tunnel.io/endpoint";
pub const ANN_ENDPOINT_OVERRIDE: &str = "sdn-tunnel.io/endpoint-override";
pub const ANN_POD_CIDRS: &str = "sdn-tunnel.io/pod-cidrs";
/// Longest annotation value we read; anything longer is a hostile or broken object.
pub const MAX_ANNOTATION_BYTES: usize = 1024;

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
}

impl RemoteService {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// An object a source or `plan()` refused, with the reason.
pub use crate::model::Rejected;

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
    /// namespace/service -> when it last changed (watch events after the first sync only).
    #[serde(skip)]
    pub changed_at: std::collections::BTreeMap<String, std::time::SystemTime>,
}

impl RemoteSnapshot {
    pub fn endpoint_count(&self) -> usize {
        self.services.iter().map(|s| s.endpoints.len()).sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Static,
    Kube,
}

/// How fresh a remote's snapshot is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceHealth {
    pub kind: SourceKind,
    /// A complete snapshot has been received at least once.
    pub synced: bool,
    /// Unix seconds of the last successful list or watch event.
    pub last_sync_unix: Option<u64>,
    /// Set while the source is failing: we serve the last good snapshot since then.
    pub stale_since_unix: Option<u64>,
    pub last_error: Option<String>,
}

impl SourceHealth {
    pub fn new(kind: SourceKind) -> SourceHealth {
        SourceHealth {
            kind,
            synced: false,
            last_sync_unix: None,
            stale_since_unix: None,
            last_error: None,
        }
    }
}

/// What a source publishes: the last good snapshot and its health.
#[derive(Debug, Clone)]
pub struct RemoteView {
    pub remote: String,
    pub snapshot: Arc<RemoteSnapshot>,
    pub health: SourceHealth,
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
