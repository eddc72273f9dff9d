//! The pure middle of the pipeline: the snapshot vocabulary ([`types`]: what sources produce),
//! `plan()` (config + snapshots -> what the reconcilers should program, plus the inputs it
//! rejected and why) and the desired state's plain types. No I/O here, and nothing from
//! `source`: sources depend on the model, never the other way round.

use ipnetwork::IpNetwork;
use serde::Serialize;
use std::net::SocketAddr;

/// A WireGuard peer we should have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredPeer {
    /// Remote cluster this peer belongs to.
    pub remote: String,
    /// Label for logs/status (node name), if known.
    pub name: Option<String>,
    #[serde(serialize_with = "crate::model::ser_key")]
    pub public_key: [u8; 32],
    pub endpoint: Option<SocketAddr>,
    /// The peer's pod CIDRs (already confined to its remote's podCIDRs).
    pub allowed_ips: Vec<IpNetwork>,
    /// Seconds; None disables.
    pub persistent_keepalive: Option<u16>,
}

/// An input that `plan()` refused to program.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct Rejected {
    pub remote: String,
    /// e.g. "peer <key>" or "node b1".
    pub object: String,
    pub reason: String,
}

/// A remote service, confined: ClusterIPs inside the remote's serviceCIDRs, endpoints inside
/// its podCIDRs. Consumed by the proxy and DNS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredService {
    pub remote: String,
    pub service: RemoteService,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Desired {
    pub peers: Vec<DesiredPeer>,
    /// Destinations routed into the tunnel device: every remote's pod and service CIDRs.
    pub routes: Vec<IpNetwork>,
    pub services: Vec<DesiredService>,
    pub rejected: Vec<Rejected>,
}

pub fn ser_key<S: serde::Serializer>(k: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::keys::encode_key(k))
}

pub mod build;
mod plan;
pub mod types;
pub use plan::{key_owners, plan, plan_with, routes, KeyOwners, Snapshots};
pub use types::{
    Endpoint, EndpointPort, ImportReport, LimitHit, Protocol, RemoteNode, RemoteService,
    RemoteSnapshot, ServicePort,
};
