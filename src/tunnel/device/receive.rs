//! Inbound (each queue thread's receive bursts): datagrams from the socket, decrypted, checked (the sender's
//! AllowedIPs, this node's pod CIDRs) and written to the TUN device; handshake replies sent.

use super::*;

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

/// One receive thread's reused buffers and its queue (also for [`Device::receive_datagram`]).
#[doc(hidden)]
pub struct RxScratch {
    /// The queue whose TUN fd gets the decrypted packets.
    queue: usize,
    plain: Vec<u8>,
    /// Replies (handshake responses, cookie replies, released packets) to send.
    out: SendBatch,
    gro: Coalescer,
}

impl RxScratch {
    pub(super) fn new(queue: usize, gro: bool) -> RxScratch {
        RxScratch {
            queue,
            plain: vec![0u8; BUF],
            out: SendBatch::new(BATCH, BUF),
            gro: Coalescer::new(gro),
        }
    }
}

impl Default for RxScratch {
    /// Queue 0; tests and fuzzing write every packet as it is (no GRO).
    fn default() -> Self {
        RxScratch::new(0, false)
    }
}

impl Device {
    /// Inbound, one burst: up to `max_batches` recvmmsg batches from the queue's socket,
    /// decrypted, checked and written to the queue's TUN fd (joined by GRO where they can be);
    /// replies sent. Returns how many batches had datagrams (0: nothing was queued).
    pub(super) fn rx_burst(
        &self,
        queue: &Queue,
        batch: &mut RecvBatch,
        rx: &mut RxScratch,
        beat: &Beat,
        max_batches: usize,
    ) -> io::Result<usize> {
        let udp = &queue.udp;
        let mut batches = 0;
        while batches < max_batches {
            let n = match udp.recv_batch(batch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The socket itself is gone or broken: end the thread (the device stops).
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EBADF | libc::ENOTSOCK | libc::EFAULT | libc::EINVAL)
                    ) =>
                {
                    return Err(e)
                }
                Err(e) => {
                    // Anything else (e.g. ENOMEM) is counted as a batch, so that an error
                    // that persists cannot keep the thread here and starve the other side.
                    tracing::debug!(error = %e, "udp receive error");
                    batches += 1;
                    continue;
                }
            };
            batches += 1;
            let datagrams: usize = (0..n).map(|i| batch.datagrams(i).len()).sum();
            self.counters
                .rx_datagrams
                .fetch_add(datagrams as u64, Ordering::Relaxed);
            queue
                .udp_datagrams
                .fetch_add(datagrams as u64, Ordering::Relaxed);
            let peers = self.peers.load();
            for i in 0..n {
                let Some(src) = batch.srcs[i] else { continue };
                if batch.segment[i].is_some_and(|s| s < batch.lens[i]) {
                    Counters::inc(&self.counters.udp_gro_messages);
                }
                for dgram in batch.datagrams(i) {
                    self.decrypt_one(&peers, src, dgram, rx);
                    if rx.out.is_full() {
                        self.flush(udp, &mut rx.out, beat);
                    }
                }
            }
            self.flush_gro(rx);
            self.flush(udp, &mut rx.out, beat);
        }
        Ok(batches)
    }

    /// Fuzzing and tests: the receive path for one datagram from `src`, as a queue thread runs
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
        self.decrypt_one(&peers, src, dgram, scratch);
        let queued = scratch.out.queued().map(<[u8]>::to_vec).collect();
        scratch.out.clear();
        queued
    }

    pub(super) fn decrypt_one(
        &self,
        peers: &PeerSet,
        src: SocketAddr,
        dgram: &[u8],
        rx: &mut RxScratch,
    ) {
        let packet = match Tunn::parse_incoming_packet(dgram) {
            Ok(p) => p,
            Err(_) => return Counters::inc(&self.counters.dropped_bad_packet),
        };
        let handshake = matches!(
            packet,
            Packet::HandshakeInit(_) | Packet::HandshakeResponse(_)
        );
        // Handshake messages: the cheap MAC check and load shedding, once, before any DH.
        if handshake && !self.admit_handshake(src, dgram, &mut rx.out) {
            return;
        }
        let Some(peer) = self.peer_of(peers, &packet) else {
            return;
        };
        if !self.decapsulate(peers, peer, src, dgram, rx) {
            return;
        }
        if handshake {
            peer.handshake_completed();
            Counters::inc(&self.counters.handshakes_completed);
        }
        // Authenticated: the peer's endpoint follows it (roaming).
        if peer.set_endpoint(src) {
            tracing::info!(peer = %peer.label(), endpoint = %src, "peer endpoint changed");
        }
    }

    /// The device's rate limiter (MAC1; under load a cookie reply instead of the message):
    /// false when the message goes no further.
    fn admit_handshake(&self, src: SocketAddr, dgram: &[u8], out: &mut SendBatch) -> bool {
        let c = &self.counters;
        let mut cookie = [0u8; 64];
        match self
            .identity
            .load()
            .rate_limiter
            .verify_packet(Some(src.ip()), dgram, &mut cookie)
        {
            Ok(_) => true,
            Err(TunnResult::WriteToNetwork(reply)) => {
                Counters::inc(&c.dropped_rate_limited);
                let len = reply.len();
                out.slot()[..len].copy_from_slice(reply);
                out.push(len, self.sockaddr(src));
                false
            }
            Err(TunnResult::Err(WireGuardError::UnderLoad)) => {
                Counters::inc(&c.dropped_rate_limited);
                false
            }
            Err(_) => {
                Counters::inc(&c.dropped_bad_packet);
                false
            }
        }
    }

    /// The peer a message is for: an initiation names its sender's static key (after one DH),
    /// the other messages our session index. Counts what has none.
    fn peer_of<'p>(&self, peers: &'p PeerSet, packet: &Packet) -> Option<&'p Arc<Peer>> {
        let c = &self.counters;
        let peer = match packet {
            Packet::HandshakeInit(init) => {
                let id = self.identity.load();
                match parse_handshake_anon(&id.private, &id.public, init) {
                    Ok(half) => peers.by_key(&half.peer_static_public),
                    Err(_) => {
                        Counters::inc(&c.dropped_bad_packet);
                        return None;
                    }
                }
            }
            Packet::HandshakeResponse(p) => peers.by_session_index(p.receiver_idx),
            Packet::PacketCookieReply(p) => peers.by_session_index(p.receiver_idx),
            Packet::PacketData(p) => peers.by_session_index(p.receiver_idx),
        };
        if peer.is_none() {
            Counters::inc(&c.dropped_unknown_peer);
        }
        peer
    }

    /// Runs the message through the peer's session: replies and released packets go to `out`,
    /// data to the device (through `gro`). True when the message proved the peer's key.
    fn decapsulate(
        &self,
        peers: &PeerSet,
        peer: &Arc<Peer>,
        src: SocketAddr,
        dgram: &[u8],
        rx: &mut RxScratch,
    ) -> bool {
        let msg_type = dgram[0];
        let RxScratch {
            queue,
            plain,
            out,
            gro,
        } = rx;
        let mut tunn = peer.tunn();
        match tunn.decapsulate(Some(src.ip()), dgram, plain) {
            TunnResult::Done => authenticated(msg_type, Ok(None)),
            TunnResult::Err(e) => {
                drop(tunn);
                self.count_error(peer, e);
                false
            }
            TunnResult::WriteToNetwork(reply) => {
                let proven = authenticated(msg_type, Ok(reply.first().copied()));
                let len = reply.len();
                out.slot()[..len].copy_from_slice(reply);
                out.push(len, self.sockaddr(src));
                // A completed handshake releases packets queued while it ran.
                while proven && !out.is_full() {
                    match tunn.decapsulate(None, &[], out.slot()) {
                        TunnResult::WriteToNetwork(b) => {
                            let len = b.len();
                            out.push(len, self.sockaddr(src));
                        }
                        _ => break,
                    }
                }
                proven
            }
            TunnResult::WriteToTunnelV4(pkt, addr) => {
                self.deliver(peers, peer, pkt, IpAddr::V4(addr), *queue, gro);
                authenticated(msg_type, Ok(None))
            }
            TunnResult::WriteToTunnelV6(pkt, addr) => {
                self.deliver(peers, peer, pkt, IpAddr::V6(addr), *queue, gro);
                authenticated(msg_type, Ok(None))
            }
        }
    }

    pub(super) fn deliver(
        &self,
        peers: &PeerSet,
        peer: &Arc<Peer>,
        pkt: &[u8],
        src: IpAddr,
        queue: usize,
        gro: &mut Coalescer,
    ) {
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
        // Checked one by one above; only then may segments be joined.
        let tun = &self.queues[queue].tun;
        gro.push(pkt, &mut |f| self.write_frame(tun, f));
    }

    /// Writes what the coalescer still holds (end of a receive batch) and counts what it joined.
    fn flush_gro(&self, rx: &mut RxScratch) {
        let tun = &self.queues[rx.queue].tun;
        let gro = &mut rx.gro;
        gro.flush(&mut |f| self.write_frame(tun, f));
        if gro.joined > 0 {
            let c = &self.counters;
            c.gro_superpackets.fetch_add(gro.joined, Ordering::Relaxed);
            c.gro_segments
                .fetch_add(gro.joined_segments, Ordering::Relaxed);
            (gro.joined, gro.joined_segments) = (0, 0);
        }
    }

    fn write_frame(&self, tun: &Tun, frame: Frame) {
        let r = match frame {
            Frame::Plain(pkt) => tun.write(pkt),
            Frame::Super(frame) => tun.write_with_header(frame),
        };
        if let Err(e) = r {
            tracing::debug!(error = %e, "tun write failed");
            Counters::inc(&self.counters.dropped_tun_write);
        }
    }

    pub(super) fn count_error(&self, peer: &Peer, e: WireGuardError) {
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
}
