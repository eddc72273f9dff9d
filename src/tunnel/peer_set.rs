//! An immutable snapshot of all peers and the crypto-key routing table. The device swaps in a
//! new one on reconfiguration (arc-swap), so the hot path never takes a global lock.

use super::allowed_ips::AllowedIps;
use super::peer::Peer;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Default)]
pub struct PeerSet {
    pub peers: Vec<Arc<Peer>>,
    by_index: HashMap<u32, Arc<Peer>>,
    by_key: HashMap<[u8; 32], Arc<Peer>>,
    table: AllowedIps<Arc<Peer>>,
}

impl PeerSet {
    pub fn new(peers: Vec<Arc<Peer>>) -> PeerSet {
        let mut set = PeerSet::default();
        for p in &peers {
            set.by_index.insert(p.index, p.clone());
            set.by_key.insert(p.public_key, p.clone());
            for net in p.info().allowed_ips {
                set.table.insert(net, p.clone());
            }
        }
        set.peers = peers;
        set
    }

    /// The peer an inner packet to `dst` goes to (longest prefix over AllowedIPs).
    pub fn route(&self, dst: IpAddr) -> Option<&Arc<Peer>> {
        self.table.lookup(dst)
    }

    /// The peer owning a session index (receiver index of an incoming packet).
    pub fn by_session_index(&self, receiver_idx: u32) -> Option<&Arc<Peer>> {
        self.by_index.get(&(receiver_idx >> 8))
    }

    pub fn by_key(&self, key: &[u8; 32]) -> Option<&Arc<Peer>> {
        self.by_key.get(key)
    }

    pub fn contains_index(&self, index: u32) -> bool {
        self.by_index.contains_key(&index)
    }

    /// Crypto-key routing on ingress: a decrypted packet from `peer` must have a source
    /// address that routes back to that same peer.
    pub fn source_allowed(&self, peer: &Arc<Peer>, src: IpAddr) -> bool {
        self.route(src).is_some_and(|p| Arc::ptr_eq(p, peer))
    }
}
