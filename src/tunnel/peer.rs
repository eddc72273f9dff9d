//! One WireGuard peer: its boringtun session state (`Tunn`), its endpoint (which roams to the
//! source of its authenticated packets) and labels for status.

use boringtun::noise::Tunn;
use ipnetwork::IpNetwork;
use parking_lot::{Mutex, MutexGuard};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime};

pub struct Peer {
    pub public_key: [u8; 32],
    /// Our 24-bit local index; boringtun puts it in the top bits of every session index, so an
    /// incoming data packet's receiver index leads straight here.
    pub index: u32,
    tunn: Mutex<Tunn>,
    endpoint: RwLock<Option<SocketAddr>>,
    /// Wall-clock time of the last completed handshake (boringtun's own figure counts from
    /// its timer ticks, which lag a handshake that completes between them).
    /// When the last handshake completed: monotonic (liveness) and wall clock (display).
    last_handshake: RwLock<Option<(Instant, SystemTime)>>,
    pub info: RwLock<PeerInfo>,
    pub created_at: std::time::Instant,
    /// Handshake initiations we sent, and those that got no response before the next one
    /// (boringtun retries every 5 s): the per-peer failure count of the metrics.
    handshake_attempts: AtomicU64,
    handshake_failures: AtomicU64,
    awaiting_response: AtomicBool,
}

/// A WireGuard handshake initiation: message type 1, 148 bytes.
fn is_handshake_initiation(pkt: &[u8]) -> bool {
    pkt.len() == 148 && pkt[0] == 1
}

/// Mutable labels and config; the crypto-key routing itself lives in the PeerSet's table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerInfo {
    pub remote: String,
    pub name: Option<String>,
    pub allowed_ips: Vec<IpNetwork>,
    pub persistent_keepalive: Option<u16>,
    /// Endpoint from config, to tell config changes from roaming.
    pub configured_endpoint: Option<SocketAddr>,
}

/// A point-in-time view for status and the UAPI.
#[derive(Debug, Clone)]
pub struct PeerStats {
    /// Wall-clock time, for display only.
    pub last_handshake: Option<SystemTime>,
    /// Monotonic age of the last handshake: what liveness is judged by (a wall-clock step
    /// must not mark every peer down).
    pub handshake_age: Option<Duration>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub handshake_attempts: u64,
    pub handshake_failures: u64,
}

impl Peer {
    pub fn new(public_key: [u8; 32], index: u32, tunn: Tunn, info: PeerInfo) -> Peer {
        let endpoint = info.configured_endpoint;
        Peer {
            public_key,
            index,
            tunn: Mutex::new(tunn),
            endpoint: RwLock::new(endpoint),
            last_handshake: RwLock::new(None),
            info: RwLock::new(info),
            created_at: std::time::Instant::now(),
            handshake_attempts: AtomicU64::new(0),
            handshake_failures: AtomicU64::new(0),
            awaiting_response: AtomicBool::new(false),
        }
    }

    /// The session state. parking_lot's mutex spins briefly before sleeping: both packet
    /// threads take it for ~1 µs per packet, and a futex sleep per collision cost more than the
    /// crypto (measured).
    pub fn tunn(&self) -> MutexGuard<'_, Tunn> {
        self.tunn.lock()
    }

    pub fn endpoint(&self) -> Option<SocketAddr> {
        *self.endpoint.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Roaming: follow the source of an authenticated packet. Returns true if it changed.
    pub fn set_endpoint(&self, addr: SocketAddr) -> bool {
        if self.endpoint() == Some(addr) {
            return false;
        }
        *self.endpoint.write().unwrap_or_else(|p| p.into_inner()) = Some(addr);
        true
    }

    /// Called with every datagram we send to this peer; counts handshake initiations.
    pub fn note_sent(&self, pkt: &[u8]) {
        if is_handshake_initiation(pkt) {
            self.handshake_attempts.fetch_add(1, Relaxed);
            if self.awaiting_response.swap(true, Relaxed) {
                self.handshake_failures.fetch_add(1, Relaxed);
            }
        }
    }

    pub fn handshake_completed(&self) {
        self.awaiting_response.store(false, Relaxed);
        *self
            .last_handshake
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), SystemTime::now()));
    }

    pub fn info(&self) -> PeerInfo {
        self.info.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn stats(&self) -> PeerStats {
        let (since, tx, rx, _, _) = self.tunn().stats();
        // No current session (expired): report no handshake, as `wg show` would after reset.
        let last = since.and(
            *self
                .last_handshake
                .read()
                .unwrap_or_else(|p| p.into_inner()),
        );
        PeerStats {
            last_handshake: last.map(|(_, wall)| wall),
            handshake_age: last.map(|(mono, _)| mono.elapsed()),
            tx_bytes: tx as u64,
            rx_bytes: rx as u64,
            handshake_attempts: self.handshake_attempts.load(Relaxed),
            handshake_failures: self.handshake_failures.load(Relaxed),
        }
    }

    /// No handshake within `threshold` (counted from the peer's creation if there never was
    /// one): the proxy sends no new connections to backends behind it.
    pub fn is_down(&self, threshold: Duration) -> bool {
        self.is_down_with(self.stats().handshake_age, threshold)
    }

    /// [`Peer::is_down`] for a `handshake_age` already read from [`Peer::stats`]. Monotonic
    /// clocks only.
    pub fn is_down_with(&self, handshake_age: Option<Duration>, threshold: Duration) -> bool {
        match handshake_age {
            Some(age) => age > threshold,
            None => self.created_at.elapsed() > threshold,
        }
    }

    pub fn label(&self) -> String {
        let info = self.info();
        let key = crate::keys::encode_key(&self.public_key);
        match info.name {
            Some(n) => format!("{}/{} ({}…)", info.remote, n, &key[..8]),
            None => format!("{}/{}…", info.remote, &key[..8]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boringtun::x25519::{PublicKey, StaticSecret};

    fn peer() -> Peer {
        let a = StaticSecret::random_from_rng(rand_core::OsRng);
        let b = StaticSecret::random_from_rng(rand_core::OsRng);
        let tunn = Tunn::new(a, PublicKey::from(&b), None, None, 1, None);
        Peer::new(PublicKey::from(&b).to_bytes(), 1, tunn, PeerInfo::default())
    }

    #[test]
    fn unanswered_initiations_count_as_failures() {
        let p = peer();
        let mut init = vec![0u8; 148];
        init[0] = 1;
        p.note_sent(&init);
        p.note_sent(&[4u8; 96]); // data: ignored
        let s = p.stats();
        assert_eq!((s.handshake_attempts, s.handshake_failures), (1, 0));
        p.note_sent(&init); // retry: the first one went unanswered
        p.note_sent(&init);
        let s = p.stats();
        assert_eq!((s.handshake_attempts, s.handshake_failures), (3, 2));
        p.handshake_completed();
        p.note_sent(&init); // rekey after a completed handshake is no failure
        let s = p.stats();
        assert_eq!((s.handshake_attempts, s.handshake_failures), (4, 2));
    }
}
