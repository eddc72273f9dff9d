//! The WireGuard device loop: TUN -> encrypt -> UDP and UDP -> decrypt -> TUN, plus timers.
//! Each direction works on batches with reused buffers (read until the queue is empty, process,
//! then one sendmmsg), with the offloads on top: TSO super-packets from the device cut by
//! `offload`, UDP GSO/GRO in `udp`, decrypted segments joined again by `gro`.
//!
//! Each queue (a TUN queue and a UDP socket of one `SO_REUSEPORT` group: the kernel keeps a
//! flow on one queue and a sender on one socket, so order within each is kept) has one thread
//! that waits with poll(2) on both fds and serves both directions in bounded bursts; tokio
//! drives everything else (timers, UAPI, control, reconcilers). Measured in the lab, the
//! tokio readiness path (one reactor thread waking another worker per batch) spent more CPU
//! on context switches than on crypto; a thread that sleeps in poll() is woken by the kernel
//! directly. One thread for both directions (not a pair): a packet written to the device is
//! often answered at once (a ping, a TCP ACK), and the answer is then read by the thread that
//! is already awake, where a pair paid a second wake-up per hop (measured: ping RTT).
//!
//! Split as wireguard-go splits its device: this file holds the device's state, start, stop and
//! the queue threads' loop; `send` the outbound bursts, `receive` the inbound ones, `timers` the timer task and
//! `peers` the peer set's updates.

mod peers;
mod receive;
mod send;
mod timers;

use send::TxScratch;

pub use peers::PeerChanges;
#[cfg(test)]
use receive::authenticated;
pub use receive::RxScratch;

use super::counters::Counters;
use super::gro::{Coalescer, Frame};
use super::offload;
use super::peer::{Peer, PeerInfo};
use super::peer_set::PeerSet;
use super::tun::Tun;
use super::udp::{RecvBatch, SendBatch, Udp};
use crate::model::DesiredPeer;
use arc_swap::ArcSwap;
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use ipnetwork::IpNetwork;
use rand_core::{OsRng, RngCore};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::health::Beat;

/// Packets per batch in each direction.
pub const BATCH: usize = 32;
/// A queue thread's bursts before it looks at the other direction: device reads (each up to
/// 64 KiB of TSO super-packet, ~45 segments) and receive batches (each up to 32 messages).
const TX_BURST_READS: usize = 16;
const RX_BURST_BATCHES: usize = 4;
/// Buffer size: a full UDP datagram / the largest inner packet plus WireGuard overhead.
const BUF: usize = 65_536;
/// Handshake messages per second before boringtun's rate limiter demands cookies.
const HANDSHAKE_RATE_LIMIT: u64 = 100;
const TIMER_TICK: Duration = Duration::from_millis(250);

/// One queue: a TUN queue and a UDP socket, served by one thread (out: TUN -> this socket;
/// in: this socket -> this TUN queue).
struct Queue {
    tun: Tun,
    udp: Udp,
    /// Reads from this TUN queue (packets or super-packets) and datagrams from this socket:
    /// how the kernel spread the work.
    tun_reads: AtomicU64,
    udp_datagrams: AtomicU64,
}

pub struct Device {
    pub name: String,
    pub listen_port: u16,
    /// At least one.
    queues: Vec<Queue>,
    stopping: AtomicBool,
    /// Swapped as a whole on key rotation; only handshakes read it.
    identity: ArcSwap<Identity>,
    peers: ArcSwap<PeerSet>,
    /// This node's pod CIDRs: the only destinations a peer's packets may have, and the only
    /// sources packets entering the tunnel may have. Empty (not known yet): nothing passes.
    local_cidrs: ArcSwap<Vec<IpNetwork>>,
    pub counters: Counters,
    /// Heartbeats of the packet threads and the timer loop, for `/healthz`.
    pub beats: DeviceBeats,
}

/// One beat per queue thread (a stuck queue must not hide behind a live one).
#[derive(Default)]
pub struct DeviceBeats {
    pub queues: Vec<Beat>,
    pub timers: Beat,
}

/// Our static key pair and the rate limiter whose cookies are bound to the public key.
struct Identity {
    private: StaticSecret,
    public: PublicKey,
    /// The device's limiter: every handshake message is checked (and counted) here once,
    /// before any per-peer work; under load it answers with a cookie reply.
    rate_limiter: Arc<RateLimiter>,
    /// The limiter each peer's `Tunn` runs again inside `decapsulate`: the same MAC1 check,
    /// but no limit, so one message is counted once (the device's limiter), not twice.
    tunn_limiter: Arc<RateLimiter>,
}

impl Identity {
    fn new(private_key: [u8; 32]) -> Identity {
        let private = StaticSecret::from(private_key);
        let public = PublicKey::from(&private);
        Identity {
            rate_limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
            tunn_limiter: Arc::new(RateLimiter::new(&public, u64::MAX)),
            private,
            public,
        }
    }
}

fn contains(cidrs: &[IpNetwork], ip: IpAddr) -> bool {
    cidrs.iter().any(|c| c.contains(ip))
}

/// The source address of an IPv4 or IPv6 packet.
fn src_address(pkt: &[u8]) -> Option<IpAddr> {
    match pkt.first()? >> 4 {
        4 if pkt.len() >= 20 => {
            let b: [u8; 4] = pkt[12..16].try_into().ok()?;
            Some(IpAddr::from(b))
        }
        6 if pkt.len() >= 40 => {
            let b: [u8; 16] = pkt[8..24].try_into().ok()?;
            Some(IpAddr::from(b))
        }
        _ => None,
    }
}

impl Device {
    /// A device with one queue.
    pub fn new(tun: Tun, udp: Udp, private_key: [u8; 32]) -> io::Result<Arc<Device>> {
        Self::with_queues(vec![(tun, udp)], private_key)
    }

    /// A device over queues of one TUN device, each with its socket of one port.
    pub fn with_queues(queues: Vec<(Tun, Udp)>, private_key: [u8; 32]) -> io::Result<Arc<Device>> {
        let Some((tun, udp)) = queues.first() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no queues"));
        };
        let listen_port = udp.local_port()?;
        let name = tun.name().to_string();
        let n = queues.len();
        Ok(Arc::new(Device {
            name,
            listen_port,
            queues: queues
                .into_iter()
                .map(|(tun, udp)| Queue {
                    tun,
                    udp,
                    tun_reads: AtomicU64::new(0),
                    udp_datagrams: AtomicU64::new(0),
                })
                .collect(),
            stopping: AtomicBool::new(false),
            identity: ArcSwap::from_pointee(Identity::new(private_key)),
            peers: ArcSwap::from_pointee(PeerSet::default()),
            local_cidrs: ArcSwap::from_pointee(Vec::new()),
            counters: Counters::default(),
            beats: DeviceBeats {
                queues: (0..n).map(|_| Beat::default()).collect(),
                timers: Beat::default(),
            },
        }))
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.identity.load().public.to_bytes()
    }

    /// The private key, only for the UAPI `get` (0600 socket, as wg-quick/wireguard-go do).
    pub(crate) fn private_key(&self) -> [u8; 32] {
        self.identity.load().private.to_bytes()
    }

    /// Key rotation: every peer's handshake state switches to the new key (current sessions
    /// are dropped by boringtun and re-established on the next packet or timer tick).
    /// Returns false if the key is unchanged.
    pub fn set_private_key(&self, private_key: [u8; 32]) -> bool {
        if self.private_key() == private_key {
            return false;
        }
        let id = Arc::new(Identity::new(private_key));
        self.identity.store(id.clone());
        for p in &self.peers.load().peers {
            p.tunn().set_static_private(
                id.private.clone(),
                id.public,
                Some(id.tunn_limiter.clone()),
            );
        }
        true
    }

    /// This node's pod CIDRs (see [`Device::local_cidrs`]): a handful, checked linearly.
    pub fn set_local_cidrs(&self, cidrs: Vec<IpNetwork>) {
        self.local_cidrs.store(Arc::new(cidrs));
    }

    /// What [`Device::set_local_cidrs`] last set.
    pub fn local_cidrs(&self) -> Arc<Vec<IpNetwork>> {
        self.local_cidrs.load_full()
    }

    pub fn peers(&self) -> Arc<PeerSet> {
        self.peers.load_full()
    }

    pub fn udp_buffer_sizes(&self) -> (usize, usize) {
        self.queues[0].udp.buffer_sizes()
    }

    /// Whether the UDP sockets send with GSO and receive with GRO.
    pub fn udp_offloads(&self) -> (bool, bool) {
        self.queues[0].udp.offloads()
    }

    /// How many queues (each with its thread) the device runs.
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// Per queue: reads from its TUN queue, datagrams from its socket.
    pub fn queue_counters(&self) -> Vec<(u64, u64)> {
        self.queues
            .iter()
            .map(|q| {
                (
                    q.tun_reads.load(Ordering::Relaxed),
                    q.udp_datagrams.load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// The socket for what is not part of a batch (handshakes from timers, new peers).
    fn control_udp(&self) -> &Udp {
        &self.queues[0].udp
    }

    /// The address to send to (every socket of the group has the same family).
    fn sockaddr(&self, addr: SocketAddr) -> socket2::SockAddr {
        self.control_udp().sockaddr(addr)
    }

    /// Runs the device until an I/O error on the TUN device or socket (or `stop`).
    pub async fn run(self: Arc<Self>) -> io::Result<()> {
        let (tx_done, rx_done) = tokio::sync::oneshot::channel::<io::Result<()>>();
        let tx_done = Arc::new(std::sync::Mutex::new(Some(tx_done)));
        for q in 0..self.queues.len() {
            let dev = self.clone();
            let done = tx_done.clone();
            std::thread::Builder::new()
                .name(format!("sdn-q{q}"))
                .spawn(move || {
                    let res = dev.queue_loop(q);
                    if let Some(tx) = done.lock().unwrap_or_else(|e| e.into_inner()).take() {
                        let _ = tx.send(res);
                    }
                })?;
        }
        let timers = tokio::spawn(self.clone().timers());
        let res = tokio::select! {
            r = rx_done => r.unwrap_or(Ok(())),
            r = timers => r.map_err(io::Error::other).and_then(|r| r),
        };
        self.stop();
        res
    }

    /// Asks the packet threads to finish (they notice within a second).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// One queue's thread: bursts of each direction in turn while either has work, then
    /// sleep until either fd is readable. Returns on an I/O error or `stop`.
    fn queue_loop(&self, q: usize) -> io::Result<()> {
        let queue = &self.queues[q];
        let beat = &self.beats.queues[q];
        let mut tx = TxScratch::new();
        let mut batch = RecvBatch::new(BATCH, BUF);
        let mut rx = RxScratch::new(q, queue.tun.vnet_hdr());
        let fds = [queue.tun.as_raw_fd(), queue.udp.as_raw_fd()];
        loop {
            beat.tick();
            if self.stopping.load(Ordering::Relaxed) {
                return Ok(());
            }
            let out = self.tx_burst(queue, &mut tx, beat, TX_BURST_READS)?;
            let inbound = self.rx_burst(queue, &mut batch, &mut rx, beat, RX_BURST_BATCHES)?;
            if out == 0 && inbound == 0 && !self.wait_any(&fds, libc::POLLIN, beat)? {
                return Ok(());
            }
        }
    }

    /// Waits until `fd` is ready for `events`; false when the device is stopping.
    fn wait(&self, fd: i32, events: libc::c_short, beat: &Beat) -> io::Result<bool> {
        self.wait_any(&[fd], events, beat)
    }

    /// Waits until one of `fds` is ready for `events`; false when the device is stopping.
    fn wait_any(&self, fds: &[i32], events: libc::c_short, beat: &Beat) -> io::Result<bool> {
        let mut pfds: Vec<libc::pollfd> = fds
            .iter()
            .map(|&fd| libc::pollfd {
                fd,
                events,
                revents: 0,
            })
            .collect();
        loop {
            beat.tick();
            if self.stopping.load(Ordering::Relaxed) {
                return Ok(false);
            }
            // SAFETY: valid pollfds; 1 s timeout so `stop` is noticed.
            let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 1000) };
            if n > 0 {
                return Ok(true);
            }
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{authenticated, contains, src_address};
    use std::net::IpAddr;

    #[test]
    fn source_addresses_and_cidrs() {
        let mut v4 = vec![0u8; 20];
        v4[0] = 0x45;
        v4[12..16].copy_from_slice(&[10, 128, 0, 7]);
        assert_eq!(
            src_address(&v4),
            Some("10.128.0.7".parse::<IpAddr>().unwrap())
        );
        let mut v6 = vec![0u8; 40];
        v6[0] = 0x60;
        v6[8] = 0xfd;
        assert_eq!(src_address(&v6), Some("fd00::".parse::<IpAddr>().unwrap()));
        assert_eq!(src_address(&v4[..19]), None);
        assert_eq!(src_address(&[]), None);
        let cidrs = vec!["10.128.0.0/24".parse().unwrap()];
        assert!(contains(&cidrs, "10.128.0.7".parse().unwrap()));
        assert!(!contains(&cidrs, "10.128.1.7".parse().unwrap()));
        assert!(!contains(&[], "10.128.0.7".parse().unwrap()));
    }

    #[test]
    fn only_proofs_of_the_peer_key_count() {
        // An initiation: proven by the response it earned, not by a cookie reply (under load).
        assert!(authenticated(1, Ok(Some(2))));
        assert!(!authenticated(1, Ok(Some(3))));
        assert!(!authenticated(1, Ok(None)));
        // A response: proven by the keepalive that follows it.
        assert!(authenticated(2, Ok(Some(4))));
        assert!(!authenticated(2, Ok(Some(3))));
        // A cookie reply never; data when it decrypted (payload or keepalive).
        assert!(!authenticated(3, Ok(None)));
        assert!(authenticated(4, Ok(None)));
        // Anything that failed never.
        for t in 1..=4 {
            assert!(!authenticated(t, Err(())));
        }
    }
}
