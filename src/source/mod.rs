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

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Node annotations (the `sdn-tunnel.io/` prefix is ours).
pub const ANN_PUBLIC_KEY: &str = "sdn-tunnel.io/public-key";
pub const ANN_ENDPOINT: &str = "sdn-tunnel.io/endpoint";
pub const ANN_ENDPOINT_OVERRIDE: &str = "sdn-tunnel.io/endpoint-override";
pub const ANN_POD_CIDRS: &str = "sdn-tunnel.io/pod-cidrs";
/// Longest annotation value we read; anything longer is a hostile or broken object.
pub const MAX_ANNOTATION_BYTES: usize = 1024;

// The vocabulary the sources produce lives with the model that consumes it.
pub use crate::model::types::{
    Endpoint, EndpointPort, ImportReport, LimitHit, Protocol, RemoteNode, RemoteService,
    RemoteSnapshot, ServicePort,
};
/// An object a source or `plan()` refused, with the reason.
pub use crate::model::Rejected;

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
