//! Outbound (each queue thread's send bursts): inner packets from the TUN device, checked, encrypted to
//! their peer by AllowedIPs and sent in batches.

use super::*;

/// The outbound half's reused buffers (one per queue thread).
pub(super) struct TxScratch {
    inbuf: Vec<u8>,
    /// One segment of a TSO super-packet at a time.
    segment: Vec<u8>,
    out: SendBatch,
}

impl TxScratch {
    pub(super) fn new() -> TxScratch {
        TxScratch {
            inbuf: vec![0u8; BUF + offload::VNET_HDR_LEN],
            segment: vec![0u8; BUF],
            out: SendBatch::new(BATCH, BUF),
        }
    }
}

impl Device {
    pub(super) fn send_one(&self, pkt: &[u8], dst: SocketAddr) {
        match self.control_udp().send_to(pkt, dst) {
            Ok(_) => Counters::inc(&self.counters.tx_datagrams),
            Err(e) => {
                Counters::inc(&self.counters.dropped_udp_send);
                tracing::debug!(%dst, error = %e, "udp send failed");
            }
        }
    }

    /// Outbound, one burst: up to `max_reads` reads from the queue's TUN fd (packets or TSO
    /// super-packets, cut here), encrypted to their peers and sent from the queue's socket.
    /// Returns how many reads it made (0: nothing was queued).
    pub(super) fn tx_burst(
        &self,
        queue: &Queue,
        tx: &mut TxScratch,
        beat: &Beat,
        max_reads: usize,
    ) -> io::Result<usize> {
        let Queue { tun, udp, .. } = queue;
        let TxScratch {
            inbuf,
            segment,
            out,
        } = tx;
        let peers = self.peers.load();
        let mut reads = 0;
        while reads < max_reads {
            let n = match tun.read(inbuf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            reads += 1;
            if !tun.vnet_hdr() {
                self.encrypt_one(&peers, &inbuf[..n], out);
                if out.is_full() {
                    self.flush(udp, out, beat);
                }
                continue;
            }
            let split = offload::split(&mut inbuf[..n], segment, |pkt| {
                self.encrypt_one(&peers, pkt, out);
                if out.is_full() {
                    self.flush(udp, out, beat);
                }
            });
            match split {
                Ok(0) => {}
                Ok(segments) => {
                    let c = &self.counters;
                    let (supers, segs) = if offload::is_udp_super_packet(inbuf) {
                        (&c.uso_superpackets, &c.uso_segments)
                    } else {
                        (&c.tso_superpackets, &c.tso_segments)
                    };
                    Counters::inc(supers);
                    segs.fetch_add(segments as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "packet from the device dropped");
                    Counters::inc(&self.counters.dropped_bad_packet);
                }
            }
        }
        self.flush(udp, out, beat);
        queue.tun_reads.fetch_add(reads as u64, Ordering::Relaxed);
        Ok(reads)
    }

    pub(super) fn encrypt_one(&self, peers: &PeerSet, pkt: &[u8], out: &mut SendBatch) {
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
            Some(ep) => out.push(len, self.sockaddr(ep)),
            None => Counters::inc(&self.counters.dropped_no_endpoint),
        }
    }

    /// Sends everything queued, waiting for socket space when the send buffer is full.
    pub(super) fn flush(&self, udp: &Udp, out: &mut SendBatch, beat: &Beat) {
        while !out.is_empty() {
            match udp.send_batch(out) {
                Ok(n) => {
                    self.counters
                        .tx_datagrams
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !matches!(self.wait(udp.as_raw_fd(), libc::POLLOUT, beat), Ok(true)) {
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
        if out.gso_messages > 0 {
            self.counters
                .udp_gso_messages
                .fetch_add(out.gso_messages, Ordering::Relaxed);
            out.gso_messages = 0;
        }
        out.clear();
    }
}
