//! The WireGuard device loop: TUN -> encrypt -> UDP and UDP -> decrypt -> TUN, plus timers.
//! Each direction works on batches with reused buffers (read until the queue is empty, process,
//! then one sendmmsg), so offloads (IFF_VNET_HDR, UDP GSO/GRO) can slot in later.
//!
//! The two packet directions run on dedicated threads that wait with poll(2) on their own fd;
//! tokio drives everything else (timers, UAPI, control, reconcilers). Measured in the lab, the
//! tokio readiness path (one reactor thread waking another worker per batch) spent more CPU on
//! context switches than on crypto; a thread that sleeps in poll() is woken by the kernel
//! directly.

use super::counters::Counters;
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
/// Buffer size: a full UDP datagram / the largest inner packet plus WireGuard overhead.
const BUF: usize = 65_536;
/// Handshake messages per second before boringtun's rate limiter demands cookies.
const HANDSHAKE_RATE_LIMIT: u64 = 100;
const TIMER_TICK: Duration = Duration::from_millis(250);

pub struct Device {
    pub name: String,
    pub listen_port: u16,
    tun: Tun,
    udp: Udp,
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

#[derive(Default)]
pub struct DeviceBeats {
    pub tx: Beat,
    pub rx: Beat,
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

/// WireGuard message types (the first byte; the next three are zero).
const MSG_HANDSHAKE_RESPONSE: u8 = 2;
const MSG_COOKIE_REPLY: u8 = 3;
const MSG_DATA: u8 = 4;

/// Whether a message that `Tunn::decapsulate` processed proved the sender holds the peer's
/// key: only then may the handshake count as done and the peer's endpoint move. A cookie
/// reply (to a cookie we sent, or ours under load) proves nothing; an initiation is proven by
/// the response it earned; a response by the keepalive that follows it; data by decrypting.
pub(crate) fn authenticated(msg_type: u8, result: Result<Option<u8>, ()>) -> bool {
    match (msg_type, result) {
        (_, Err(())) => false,
        (1, Ok(Some(reply))) => reply == MSG_HANDSHAKE_RESPONSE,
        (1, Ok(None)) => false,
        (2, Ok(Some(reply))) => reply == MSG_DATA,
        (2, Ok(None)) => false,
        (MSG_COOKIE_REPLY, _) => false,
        (MSG_DATA, Ok(_)) => true,
        _ => false,
    }
}

/// What `set_peers` changed, for logs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PeerChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub updated: Vec<String>,
}

impl Device {
    pub fn new(tun: Tun, udp: Udp, private_key: [u8; 32]) -> io::Result<Arc<Device>> {
        let listen_port = udp.local_port()?;
        Ok(Arc::new(Device {
            name: tun.name().to_string(),
            listen_port,
            tun,
            udp,
            stopping: AtomicBool::new(false),
            identity: ArcSwap::from_pointee(Identity::new(private_key)),
            peers: ArcSwap::from_pointee(PeerSet::default()),
            local_cidrs: ArcSwap::from_pointee(Vec::new()),
            counters: Counters::default(),
            beats: DeviceBeats::default(),
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
        self.udp.buffer_sizes()
    }

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

    fn fresh_index(&self, old: &PeerSet, next: &[Arc<Peer>]) -> u32 {
        loop {
            let i = OsRng.next_u32() & 0x00ff_ffff;
            if !old.contains_index(i) && !next.iter().any(|p| p.index == i) {
                return i;
            }
        }
    }

    fn send_one(&self, pkt: &[u8], dst: SocketAddr) {
        match self.udp.send_to(pkt, dst) {
            Ok(_) => Counters::inc(&self.counters.tx_datagrams),
            Err(e) => {
                Counters::inc(&self.counters.dropped_udp_send);
                tracing::debug!(%dst, error = %e, "udp send failed");
            }
        }
    }

    /// Runs the device until an I/O error on the TUN device or socket (or `stop`).
    pub async fn run(self: Arc<Self>) -> io::Result<()> {
        let (tx_done, rx_done) = tokio::sync::oneshot::channel::<io::Result<()>>();
        let tx_done = Arc::new(std::sync::Mutex::new(Some(tx_done)));
        for (name, dir) in [("sdn-tx", Dir::Out), ("sdn-rx", Dir::In)] {
            let dev = self.clone();
            let done = tx_done.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    let res = match dir {
                        Dir::Out => dev.tun_to_udp(),
                        Dir::In => dev.udp_to_tun(),
                    };
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

    /// Waits until `fd` is ready for `events`; false when the device is stopping.
    fn wait(&self, fd: i32, events: libc::c_short, beat: &Beat) -> io::Result<bool> {
        loop {
            beat.tick();
            if self.stopping.load(Ordering::Relaxed) {
                return Ok(false);
            }
            let mut pfd = libc::pollfd {
                fd,
                events,
                revents: 0,
            };
            // SAFETY: one valid pollfd; 1 s timeout so `stop` is noticed.
            let n = unsafe { libc::poll(&mut pfd, 1, 1000) };
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

    /// Outbound: inner packets from the TUN device, encrypted to their peer.
    fn tun_to_udp(&self) -> io::Result<()> {
        let mut inbuf = vec![0u8; BUF];
        let mut out = SendBatch::new(BATCH, BUF);
        let fd = self.tun.as_raw_fd();
        let beat = &self.beats.tx;
        while self.wait(fd, libc::POLLIN, beat)? {
            let peers = self.peers.load();
            // Drain the TUN queue in batches; flush each batch with one sendmmsg.
            loop {
                let n = match self.tun.read(&mut inbuf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                self.encrypt_one(&peers, &inbuf[..n], &mut out);
                if out.is_full() {
                    self.flush(&mut out, beat);
                }
            }
            self.flush(&mut out, beat);
        }
        Ok(())
    }

    fn encrypt_one(&self, peers: &PeerSet, pkt: &[u8], out: &mut SendBatch) {
        let Some(dst) = Tunn::dst_address(pkt) else {
            Counters::inc(&self.counters.dropped_bad_packet);
            return;
        };
        // Only this node's pods (and the host with a source from their range) may send into
        // the tunnel; a remote would drop anything else anyway, after the work of encrypting.
        if !src_address(pkt).is_some_and(|s| contains(&self.local_cidrs.load(), s)) {
            Counters::inc(&self.counters.dropped_bad_source_out);
            return;
        }
        let Some(peer) = peers.route(dst) else {
            Counters::inc(&self.counters.dropped_no_peer);
            return;
        };
        let len = match peer.tunn().encapsulate(pkt, out.slot()) {
            TunnResult::WriteToNetwork(b) => {
                peer.note_sent(b);
                b.len()
            }
            TunnResult::Err(e) => {
                tracing::debug!(peer = %peer.label(), error = ?e, "encapsulate failed");
                Counters::inc(&self.counters.dropped_bad_packet);
                return;
            }
            _ => return, // queued until the handshake completes
        };
        match peer.endpoint() {
            Some(ep) => out.push(len, self.udp.sockaddr(ep)),
            None => Counters::inc(&self.counters.dropped_no_endpoint),
        }
    }

    /// Sends everything queued, waiting for socket space when the send buffer is full.
    fn flush(&self, out: &mut SendBatch, beat: &Beat) {
        while !out.is_empty() {
            match self.udp.send_batch(out) {
                Ok(n) => {
                    self.counters
                        .tx_datagrams
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !matches!(
                        self.wait(self.udp.as_raw_fd(), libc::POLLOUT, beat),
                        Ok(true)
                    ) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        if out.errors > 0 {
            self.counters
                .dropped_udp_send
                .fetch_add(out.errors, Ordering::Relaxed);
            out.errors = 0;
        }
        out.clear();
    }

    /// Inbound: datagrams from the underlay, decrypted and written to the TUN device.
    fn udp_to_tun(&self) -> io::Result<()> {
        let mut batch = RecvBatch::new(BATCH, BUF);
        let mut plain = vec![0u8; BUF];
        let mut out = SendBatch::new(BATCH, BUF);
        let fd = self.udp.as_raw_fd();
        let beat = &self.beats.rx;
        while self.wait(fd, libc::POLLIN, beat)? {
            loop {
                let n = match self.udp.recv_batch(&mut batch) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // ICMP errors surface here as ECONNREFUSED etc.; they are not fatal.
                        tracing::debug!(error = %e, "udp receive error");
                        continue;
                    }
                };
                self.counters
                    .rx_datagrams
                    .fetch_add(n as u64, Ordering::Relaxed);
                let peers = self.peers.load();
                for i in 0..n {
                    let Some(src) = batch.srcs[i] else { continue };
                    let dgram = &batch.bufs[i][..batch.lens[i]];
                    self.decrypt_one(&peers, src, dgram, &mut plain, &mut out);
                    if out.is_full() {
                        self.flush(&mut out, beat);
                    }
                }
                self.flush(&mut out, beat);
            }
        }
        Ok(())
    }

    /// Fuzzing and tests: the receive path for one datagram from `src`, as the rx thread runs
    /// it (counted in `rx_datagrams`, then `decrypt_one`). What it queued for sending back
    /// (handshake responses, cookie replies) is returned instead of sent.
    #[doc(hidden)]
    pub fn receive_datagram(
        &self,
        src: SocketAddr,
        dgram: &[u8],
        scratch: &mut RxScratch,
    ) -> Vec<Vec<u8>> {
        Counters::inc(&self.counters.rx_datagrams);
        let peers = self.peers.load();
        self.decrypt_one(&peers, src, dgram, &mut scratch.plain, &mut scratch.out);
        let queued = scratch.out.queued().map(<[u8]>::to_vec).collect();
        scratch.out.clear();
        queued
    }

    fn decrypt_one(
        &self,
        peers: &PeerSet,
        src: SocketAddr,
        dgram: &[u8],
        plain: &mut [u8],
        out: &mut SendBatch,
    ) {
        let c = &self.counters;
        let packet = match Tunn::parse_incoming_packet(dgram) {
            Ok(p) => p,
            Err(_) => return Counters::inc(&c.dropped_bad_packet),
        };
        // Handshake messages: the cheap MAC check and load shedding, once, before any DH.
        if matches!(
            packet,
            Packet::HandshakeInit(_) | Packet::HandshakeResponse(_)
        ) {
            let mut cookie = [0u8; 64];
            match self.identity.load().rate_limiter.verify_packet(
                Some(src.ip()),
                dgram,
                &mut cookie,
            ) {
                Ok(_) => {}
                Err(TunnResult::WriteToNetwork(reply)) => {
                    Counters::inc(&c.dropped_rate_limited);
                    let len = reply.len();
                    out.slot()[..len].copy_from_slice(reply);
                    out.push(len, self.udp.sockaddr(src));
                    return;
                }
                Err(TunnResult::Err(WireGuardError::UnderLoad)) => {
                    return Counters::inc(&c.dropped_rate_limited)
                }
                Err(_) => return Counters::inc(&c.dropped_bad_packet),
            }
        }
        let msg_type = dgram[0];
        let peer = match &packet {
            Packet::HandshakeInit(init) => {
                let id = self.identity.load();
                match parse_handshake_anon(&id.private, &id.public, init) {
                    Ok(half) => peers.by_key(&half.peer_static_public),
                    Err(_) => return Counters::inc(&c.dropped_bad_packet),
                }
            }
            Packet::HandshakeResponse(p) => peers.by_session_index(p.receiver_idx),
            Packet::PacketCookieReply(p) => peers.by_session_index(p.receiver_idx),
            Packet::PacketData(p) => peers.by_session_index(p.receiver_idx),
        };
        let Some(peer) = peer else {
            return Counters::inc(&c.dropped_unknown_peer);
        };
        let mut tunn = peer.tunn();
        let proven = match tunn.decapsulate(Some(src.ip()), dgram, plain) {
            TunnResult::Done => authenticated(msg_type, Ok(None)),
            TunnResult::Err(e) => {
                drop(tunn);
                return self.count_error(peer, e);
            }
            TunnResult::WriteToNetwork(reply) => {
                let proven = authenticated(msg_type, Ok(reply.first().copied()));
                let len = reply.len();
                out.slot()[..len].copy_from_slice(reply);
                out.push(len, self.udp.sockaddr(src));
                // A completed handshake releases packets queued while it ran.
                while proven && !out.is_full() {
                    match tunn.decapsulate(None, &[], out.slot()) {
                        TunnResult::WriteToNetwork(b) => {
                            let len = b.len();
                            out.push(len, self.udp.sockaddr(src));
                        }
                        _ => break,
                    }
                }
                proven
            }
            TunnResult::WriteToTunnelV4(pkt, addr) => {
                self.deliver(peers, peer, pkt, IpAddr::V4(addr));
                authenticated(msg_type, Ok(None))
            }
            TunnResult::WriteToTunnelV6(pkt, addr) => {
                self.deliver(peers, peer, pkt, IpAddr::V6(addr));
                authenticated(msg_type, Ok(None))
            }
        };
        drop(tunn);
        if !proven {
            return;
        }
        if matches!(
            packet,
            Packet::HandshakeInit(_) | Packet::HandshakeResponse(_)
        ) {
            peer.handshake_completed();
            Counters::inc(&c.handshakes_completed);
        }
        // Authenticated: the peer's endpoint follows it (roaming).
        if peer.set_endpoint(src) {
            tracing::info!(peer = %peer.label(), endpoint = %src, "peer endpoint changed");
        }
    }

    fn deliver(&self, peers: &PeerSet, peer: &Arc<Peer>, pkt: &[u8], src: IpAddr) {
        if !peers.source_allowed(peer, src) {
            return Counters::inc(&self.counters.dropped_bad_source);
        }
        // A peer may reach our pods, nothing else: not this node's own addresses outside the
        // pod range, local ClusterIPs (checked before kube-proxy's DNAT), the underlay, or
        // other nodes' pods. (The node's own address inside the pod range, e.g. the bridge
        // gateway, is left to the nft input guard: only replies to our connections pass.)
        if !Tunn::dst_address(pkt).is_some_and(|d| contains(&self.local_cidrs.load(), d)) {
            return Counters::inc(&self.counters.dropped_bad_destination);
        }
        if let Err(e) = self.tun.write(pkt) {
            tracing::debug!(error = %e, "tun write failed");
            Counters::inc(&self.counters.dropped_tun_write);
        }
    }

    fn count_error(&self, peer: &Peer, e: WireGuardError) {
        let c = &self.counters;
        let counter: &AtomicU64 = match e {
            WireGuardError::DuplicateCounter | WireGuardError::InvalidCounter => &c.dropped_replay,
            WireGuardError::UnderLoad => &c.dropped_rate_limited,
            WireGuardError::WrongIndex | WireGuardError::NoCurrentSession => {
                &c.dropped_unknown_peer
            }
            _ => &c.dropped_bad_packet,
        };
        Counters::inc(counter);
        tracing::trace!(peer = %peer.label(), error = ?e, "datagram dropped");
    }

    /// Handshake retries, rekeying, keepalives; the rate limiter's per-second reset.
    async fn timers(self: Arc<Self>) -> io::Result<()> {
        let mut buf = vec![0u8; BUF];
        let mut tick = tokio::time::interval(TIMER_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        while !self.stopping.load(Ordering::Relaxed) {
            tick.tick().await;
            self.beats.timers.tick();
            n += 1;
            if n % 4 == 0 {
                self.identity.load().rate_limiter.reset_count();
            }
            let peers = self.peers.load();
            for peer in &peers.peers {
                let mut tunn = peer.tunn();
                match tunn.update_timers(&mut buf) {
                    TunnResult::WriteToNetwork(pkt) => {
                        peer.note_sent(pkt);
                        if let Some(ep) = peer.endpoint() {
                            self.send_one(pkt, ep);
                        }
                    }
                    TunnResult::Err(WireGuardError::ConnectionExpired) => {}
                    TunnResult::Err(e) => {
                        tracing::debug!(peer = %peer.label(), error = ?e, "timer")
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// Reusable buffers for [`Device::receive_datagram`].
#[doc(hidden)]
pub struct RxScratch {
    plain: Vec<u8>,
    out: SendBatch,
}

impl Default for RxScratch {
    fn default() -> Self {
        RxScratch {
            plain: vec![0u8; BUF],
            out: SendBatch::new(BATCH, BUF),
        }
    }
}

#[derive(Clone, Copy)]
enum Dir {
    Out,
    In,
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
