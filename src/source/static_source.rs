//! The static source: peers written in the config file become a snapshot of the same type the
//! kube source produces. Peers the source cannot parse are rejected here (the config validator
//! refuses them too; this is defense in depth for callers that skip validation).

use super::{Rejected, RemoteNode, RemoteSnapshot, SourceHealth, SourceKind};
use crate::config::{RemoteConfig, StaticPeer};
use crate::{cidr, keys};

pub fn snapshot(remote: &RemoteConfig) -> RemoteSnapshot {
    let mut snap = RemoteSnapshot::default();
    for p in remote.static_source.iter().flat_map(|s| &s.peers) {
        match node(p) {
            Ok(n) => snap.nodes.push(n),
            Err(reason) => snap.rejected.push(Rejected {
                remote: remote.name.clone(),
                object: label(p),
                reason,
            }),
        }
    }
    snap
}

/// A static remote is always synced and never stale.
pub fn health() -> SourceHealth {
    SourceHealth {
        synced: true,
        last_sync_unix: Some(super::now_unix()),
        ..SourceHealth::new(SourceKind::Static)
    }
}

fn node(p: &StaticPeer) -> Result<RemoteNode, String> {
    let public_key = keys::parse_key(&p.public_key).map_err(|e| format!("publicKey: {e}"))?;
    let endpoint = p.endpoint_addr().map_err(|e| format!("endpoint: {e}"))?;
    Ok(RemoteNode {
        name: p.name.clone().unwrap_or_default(),
        public_key,
        endpoint,
        pod_cidrs: p.pod_cidrs.iter().map(cidr::network).collect(),
    })
}

/// Static peers are labelled by name, else by key ("peer b1", as in earlier releases).
fn label(p: &StaticPeer) -> String {
    format!("peer {}", p.name.as_deref().unwrap_or(&p.public_key))
}
