//! The peer set: desired peers in, sessions kept where the key and keepalive are unchanged.

use super::*;

/// What `set_peers` changed, for logs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PeerChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub updated: Vec<String>,
}

impl Device {
    /// Makes the peer set equal `desired`. Existing peers (same key, same keepalive) keep their
    /// sessions; a changed configured endpoint or AllowedIPs is applied in place.
    pub fn set_peers(&self, desired: &[DesiredPeer]) -> PeerChanges {
        let old = self.peers.load_full();
        let mut changes = PeerChanges::default();
        let mut next: Vec<Arc<Peer>> = Vec::with_capacity(desired.len());
        let mut new_peers = Vec::new();
        for d in desired {
            let info = PeerInfo {
                remote: d.remote.clone(),
                name: d.name.clone(),
                allowed_ips: d.allowed_ips.clone(),
                persistent_keepalive: d.persistent_keepalive,
                configured_endpoint: d.endpoint,
            };
            if let Some(p) = old.by_key(&d.public_key) {
                let prev = p.info();
                if prev.persistent_keepalive == info.persistent_keepalive {
                    if prev != info {
                        if prev.configured_endpoint != info.configured_endpoint {
                            if let Some(ep) = info.configured_endpoint {
                                p.set_endpoint(ep);
                            }
                        }
                        *p.info.write().unwrap_or_else(|e| e.into_inner()) = info;
                        changes.updated.push(p.label());
                    }
                    next.push(p.clone());
                    continue;
                }
            }
            let index = self.fresh_index(&old, &next);
            let id = self.identity.load();
            let tunn = Tunn::new(
                id.private.clone(),
                PublicKey::from(d.public_key),
                None,
                d.persistent_keepalive,
                index,
                Some(id.tunn_limiter.clone()),
            );
            let peer = Arc::new(Peer::new(d.public_key, index, tunn, info));
            changes.added.push(peer.label());
            new_peers.push(peer.clone());
            next.push(peer);
        }
        for p in &old.peers {
            if !next.iter().any(|n| Arc::ptr_eq(n, p)) {
                changes.removed.push(p.label());
            }
        }
        self.peers.store(Arc::new(PeerSet::new(next)));
        // Handshake right away with peers we can reach, instead of waiting for traffic.
        let mut buf = vec![0u8; 256];
        for p in new_peers {
            if let Some(ep) = p.endpoint() {
                let res = p.tunn().format_handshake_initiation(&mut buf, false);
                if let TunnResult::WriteToNetwork(pkt) = res {
                    p.note_sent(pkt);
                    self.send_one(pkt, ep);
                }
            }
        }
        changes
    }

    pub(super) fn fresh_index(&self, old: &PeerSet, next: &[Arc<Peer>]) -> u32 {
        loop {
            let i = OsRng.next_u32() & 0x00ff_ffff;
            if !old.contains_index(i) && !next.iter().any(|p| p.index == i) {
                return i;
            }
        }
    }
}
