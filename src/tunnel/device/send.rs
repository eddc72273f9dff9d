//! Outbound (the `sdn-tx` thread): inner packets from the TUN device, checked, encrypted to
//! their peer by AllowedIPs and sent in batches.

use super::*;

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

    /// Outbound: inner packets from TUN queue `q`, encrypted to their peer, sent from socket `q`.
    pub(super) fn tun_to_udp(&self, q: usize) -> io::Result<()> {
        let Queue {
            tun,
            udp,
            tun_reads,
            ..
        } = &self.queues[q];
        let mut inbuf = vec![0u8; BUF + offload::VNET_HDR_LEN];
        // One segment of a TSO super-packet at a time.
        let mut segment = vec![0u8; BUF];
        let mut out = SendBatch::new(BATCH, BUF);
        let fd = tun.as_raw_fd();
        let beat = &self.beats.tx[q];
        let vnet_hdr = tun.vnet_hdr();
        while self.wait(fd, libc::POLLIN, beat)? {
            let peers = self.peers.load();
            let mut reads = 0;
            // Drain the TUN queue in batches; flush each batch with one sendmmsg.
            loop {
                let n = match tun.read(&mut inbuf) {
                    Ok(n) => {
                        reads += 1;
                        n
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                if !vnet_hdr {
                    self.encrypt_one(&peers, &inbuf[..n], &mut out);
                    if out.is_full() {
                        self.flush(udp, &mut out, beat);
                    }
                    continue;
                }
                let split = offload::split(&mut inbuf[..n], &mut segment, |pkt| {
                    self.encrypt_one(&peers, pkt, &mut out);
                    if out.is_full() {
                        self.flush(udp, &mut out, beat);
                    }
                });
                match split {
                    Ok(0) => {}
                    Ok(segments) => {
                        Counters::inc(&self.counters.tso_superpackets);
                        self.counters
                            .tso_segments
                            .fetch_add(segments as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "packet from the device dropped");
                        Counters::inc(&self.counters.dropped_bad_packet);
                    }
                }
            }
            self.flush(udp, &mut out, beat);
            tun_reads.fetch_add(reads, Ordering::Relaxed);
        }
        Ok(())
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
