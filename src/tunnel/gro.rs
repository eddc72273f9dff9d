//! GRO in userspace, the way in: consecutive decrypted TCP segments of one flow are joined into
//! one super-packet and written to the TUN device once, with a virtio-net header that tells the
//! kernel how to cut it again (TSO type, segment size, checksum to complete), so the node's
//! and the pod's stacks handle one packet instead of dozens. The rules are the kernel's
//! `tcp_gro_receive`: same addresses, ports, IP fields, ACK number, window and TCP options; the
//! next sequence number; every segment but the last of the same size; only ACK (and PSH on the
//! last); no IPv4 options or fragments, no IPv6 extension headers. A segment whose TCP
//! checksum is wrong is never joined (written as it is, for the kernel to drop), so a pod
//! still only gets data whose checksum held end to end. Pure: the caller writes the frames.

use super::offload::{
    fold, pseudo_sum, sum16, VnetHdr, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, TCP_PSH, VNET_HDR_LEN,
};

const TCP_ACK: u8 = 0x10;
/// Segments per super-packet (the kernel's GSO limit is larger; this bounds the buffer walk).
const MAX_SEGMENTS: usize = 64;
/// Largest IP packet.
const MAX_LEN: usize = 65_535;

/// What to write to the device.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// One packet, as it is (the device adds a "no offload" header when it uses headers).
    Plain(&'a [u8]),
    /// A virtio-net header followed by a TCP super-packet.
    Super(&'a [u8]),
}

/// The TCP/IP fields of one segment that decide whether it can be joined.
#[derive(Debug, Clone, Copy)]
struct Seg {
    v6: bool,
    ip_len: usize,
    hdrs: usize,
    seq: u32,
    flags: u8,
    payload: usize,
}

/// A segment that may be joined: TCP, flags ACK or ACK|PSH, with payload, no IPv4 options or
/// fragments, no IPv6 extension headers, and a valid TCP checksum.
fn candidate(pkt: &[u8]) -> Option<Seg> {
    let (v6, ip_len) = match pkt.first()? >> 4 {
        4 if pkt.len() >= 40 && pkt[0] == 0x45 && pkt[9] == 6 => {
            let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
            // MF or a fragment offset: never; nor a header whose checksum is wrong (joining
            // would rewrite it as a good one).
            if total != pkt.len()
                || u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff != 0
                || !checksum_is_canonical(sum16(0, &pkt[..20]), &pkt[10..12])
            {
                return None;
            }
            (false, 20)
        }
        6 if pkt.len() >= 60 && pkt[6] == 6 => {
            let payload_len = usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
            if payload_len + 40 != pkt.len() {
                return None;
            }
            (true, 40)
        }
        _ => return None,
    };
    let t = ip_len;
    let tcp_len = usize::from(pkt[t + 12] >> 4) * 4;
    let hdrs = ip_len + tcp_len;
    let flags = pkt[t + 13];
    if tcp_len < 20 || pkt.len() <= hdrs || (flags != TCP_ACK && flags != TCP_ACK | TCP_PSH) {
        return None;
    }
    let all = sum16(pseudo_sum(pkt, 6, pkt.len() - ip_len), &pkt[ip_len..]);
    if !checksum_is_canonical(all, &pkt[t + 16..t + 18]) {
        return None;
    }
    Some(Seg {
        v6,
        ip_len,
        hdrs,
        seq: u32::from_be_bytes(pkt[t + 4..t + 8].try_into().ok()?),
        flags,
        payload: pkt.len() - hdrs,
    })
}

/// Whether `field` holds the checksum of data whose sum (field included) is `sum_with_field`,
/// written the way we write it when cutting (`offload.rs`): valid, and in the same one of its
/// two representations, so that joining and cutting again gives back the same bytes.
fn checksum_is_canonical(sum_with_field: u64, field: &[u8]) -> bool {
    let f = u16::from_be_bytes([field[0], field[1]]);
    // The sum with the field zeroed: take f out (one's complement: add its complement).
    fold(sum_with_field + u64::from(!f)) == f
}

pub struct Coalescer {
    enabled: bool,
    /// Virtio-net header room, then the super-packet being built.
    buf: Vec<u8>,
    /// Bytes of the packet in `buf` (after the header room); 0 = nothing pending.
    len: usize,
    first: Option<Seg>,
    segments: usize,
    next_seq: u32,
    /// The last segment was shorter or had PSH: nothing may follow.
    closed: bool,
    /// Super-packets written and the segments they held (for the counters).
    pub joined: u64,
    pub joined_segments: u64,
}

impl Coalescer {
    /// `enabled`: the device takes virtio-net headers; otherwise every packet is written as is.
    pub fn new(enabled: bool) -> Coalescer {
        Coalescer {
            enabled,
            buf: vec![0u8; if enabled { VNET_HDR_LEN + MAX_LEN } else { 0 }],
            len: 0,
            first: None,
            segments: 0,
            next_seq: 0,
            closed: false,
            joined: 0,
            joined_segments: 0,
        }
    }

    /// Adds one decrypted packet (already checked); writes through `out` whatever can no longer
    /// grow.
    pub fn push(&mut self, pkt: &[u8], out: &mut impl FnMut(Frame)) {
        if !self.enabled {
            return out(Frame::Plain(pkt));
        }
        let Some(seg) = candidate(pkt) else {
            self.flush(out);
            return out(Frame::Plain(pkt));
        };
        if self.len > 0 && !self.joins(pkt, &seg) {
            self.flush(out);
        }
        let at = VNET_HDR_LEN + self.len;
        if self.len == 0 {
            self.buf[at..at + pkt.len()].copy_from_slice(pkt);
            self.len = pkt.len();
            self.first = Some(seg);
            self.segments = 1;
        } else {
            self.buf[at..at + seg.payload].copy_from_slice(&pkt[seg.hdrs..]);
            self.len += seg.payload;
            self.segments += 1;
            let first = self.first.expect("pending");
            if seg.flags & TCP_PSH != 0 {
                self.buf[VNET_HDR_LEN + first.ip_len + 13] |= TCP_PSH;
            }
        }
        self.next_seq = seg.seq.wrapping_add(seg.payload as u32);
        let first = self.first.expect("pending");
        self.closed = seg.flags & TCP_PSH != 0 || seg.payload < first.payload;
        if self.closed || self.segments == MAX_SEGMENTS {
            self.flush(out);
        }
    }

    /// Whether `pkt` continues the pending super-packet.
    fn joins(&self, pkt: &[u8], seg: &Seg) -> bool {
        let Some(first) = self.first else {
            return false;
        };
        let head = &self.buf[VNET_HDR_LEN..VNET_HDR_LEN + first.hdrs];
        if self.closed
            || seg.v6 != first.v6
            || seg.hdrs != first.hdrs
            || seg.seq != self.next_seq
            || seg.payload > first.payload
            || self.len + seg.payload > MAX_LEN
        {
            return false;
        }
        let same = |r: std::ops::Range<usize>| head[r.clone()] == pkt[r];
        let ip_same = if first.v6 {
            // Version, traffic class and flow label; hop limit; addresses.
            same(0..4) && same(7..40)
        } else {
            // TOS (with ECN), DF, TTL, protocol, addresses; the IP ID one more per segment
            // (as senders number them and as the segmentation will again).
            let id = |p: &[u8]| u16::from_be_bytes([p[4], p[5]]);
            same(1..2)
                && head[6] & 0x40 == pkt[6] & 0x40
                && same(8..10)
                && same(12..20)
                && id(pkt) == id(head).wrapping_add(self.segments as u16)
        };
        let t = first.ip_len;
        // Ports; ACK number; data offset; window; urgent pointer (meaningless without URG,
        // but it is cut back from the first header); options.
        ip_same
            && same(t..t + 4)
            && same(t + 8..t + 13)
            && same(t + 14..t + 16)
            && same(t + 18..first.hdrs)
    }

    /// Writes what is pending: a lone segment as it is, several as one super-packet.
    pub fn flush(&mut self, out: &mut impl FnMut(Frame)) {
        if self.len == 0 {
            return;
        }
        let first = self.first.take().expect("pending");
        let (len, segments) = (self.len, self.segments);
        self.len = 0;
        self.closed = false;
        let pkt_end = VNET_HDR_LEN + len;
        if segments == 1 {
            return out(Frame::Plain(&self.buf[VNET_HDR_LEN..pkt_end]));
        }
        let p = &mut self.buf[VNET_HDR_LEN..pkt_end];
        if first.v6 {
            p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        } else {
            p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            p[10..12].fill(0);
            let c = fold(sum16(0, &p[..20]));
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        // NEEDS_CSUM: the field holds the pseudo-header sum; the kernel completes it when a
        // segment leaves, or trusts it for local delivery (the data was authenticated).
        let t = first.ip_len;
        let pseudo = !fold(pseudo_sum(p, 6, len - first.ip_len));
        p[t + 16..t + 18].copy_from_slice(&pseudo.to_be_bytes());
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if first.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: first.hdrs as u16,
            gso_size: first.payload as u16,
            csum_start: first.ip_len as u16,
            csum_offset: 16,
        }
        .write(&mut self.buf[..VNET_HDR_LEN]);
        self.joined += 1;
        self.joined_segments += segments as u64;
        out(Frame::Super(&self.buf[..pkt_end]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::offload;

    /// Segment `i` of a stream: `size` payload bytes at seq 1000 + offset, IPv4 ID 0x100 + i,
    /// 12 bytes of TCP options (timestamps), valid checksums. `port` tells flows apart.
    fn segment(v6: bool, port: u16, i: usize, offset: usize, size: usize, flags: u8) -> Vec<u8> {
        let payload: Vec<u8> = (0..size).map(|k| (offset + k) as u8).collect();
        offload::test_packet::tcp(&offload::test_packet::Tcp {
            v6,
            ip_id: 0x100 + i as u16,
            tos: 0,
            src_port: port,
            seq: 1000 + offset as u32,
            flags,
            options: &[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3],
            payload: &payload,
        })
    }

    /// A stream of `sizes` segments (PSH on the last when `psh`).
    fn stream(v6: bool, port: u16, sizes: &[usize], psh: bool) -> Vec<Vec<u8>> {
        let mut offset = 0;
        sizes
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                let last = i + 1 == sizes.len();
                let flags = if psh && last {
                    TCP_ACK | TCP_PSH
                } else {
                    TCP_ACK
                };
                let seg = segment(v6, port, i, offset, s, flags);
                offset += s;
                seg
            })
            .collect()
    }

    #[derive(Debug, PartialEq)]
    enum Out {
        Plain(Vec<u8>),
        Super(Vec<u8>),
    }

    fn run(packets: &[Vec<u8>]) -> Vec<Out> {
        let mut c = Coalescer::new(true);
        let mut got = Vec::new();
        let mut out = |f: Frame| {
            got.push(match f {
                Frame::Plain(p) => Out::Plain(p.to_vec()),
                Frame::Super(p) => Out::Super(p.to_vec()),
            })
        };
        for p in packets {
            c.push(p, &mut out);
        }
        c.flush(&mut out);
        got
    }

    /// What the kernel would make of a super-packet: our own TSO segmenter cuts like it.
    fn resegment(frame: &[u8]) -> Vec<Vec<u8>> {
        let mut read = frame.to_vec();
        let mut scratch = vec![0u8; 65_536];
        let mut segs = Vec::new();
        offload::split(&mut read, &mut scratch, |s| segs.push(s.to_vec())).unwrap();
        segs
    }

    #[test]
    fn a_stream_is_joined_and_cuts_back_into_the_same_segments() {
        for v6 in [false, true] {
            let segs = stream(v6, 80, &[1000, 1000, 1000, 400], true);
            let out = run(&segs);
            assert_eq!(out.len(), 1, "v6={v6}: {out:?}");
            let Out::Super(frame) = &out[0] else {
                panic!("not joined")
            };
            let hdr = VnetHdr::parse(frame).unwrap();
            assert_eq!(hdr.gso_size, 1000);
            assert_eq!(hdr.flags, F_NEEDS_CSUM);
            assert_eq!(resegment(frame), segs, "v6={v6}");
        }
    }

    #[test]
    fn what_cannot_join_is_written_as_it_is_in_order() {
        let a = stream(false, 80, &[1000, 1000], false);
        let b = stream(false, 81, &[1000], false);
        // Interleaved flows: each change of flow flushes.
        let out = run(&[a[0].clone(), b[0].clone(), a[1].clone()]);
        assert_eq!(
            out,
            vec![
                Out::Plain(a[0].clone()),
                Out::Plain(b[0].clone()),
                Out::Plain(a[1].clone())
            ]
        );
        // A gap in sequence numbers.
        let s = stream(false, 80, &[1000, 1000, 1000], false);
        let out = run(&[s[0].clone(), s[2].clone()]);
        assert_eq!(
            out,
            vec![Out::Plain(s[0].clone()), Out::Plain(s[2].clone())]
        );
        // A larger segment after a shorter one: the shorter one closed the run.
        let s = stream(false, 80, &[500, 1000], false);
        assert_eq!(
            run(&s),
            vec![Out::Plain(s[0].clone()), Out::Plain(s[1].clone())]
        );
        // A wrong TCP checksum is never joined.
        let mut s = stream(false, 80, &[1000, 1000, 1000], false);
        s[1][60] ^= 0xff;
        let out = run(&s);
        assert_eq!(out[1], Out::Plain(s[1].clone()), "{out:?}");
        // An IPv4 ID that does not follow, an IPv4 header checksum that is wrong.
        let mut s = stream(false, 80, &[1000, 1000], false);
        s[1][5] ^= 0x10;
        let c = fold(sum16(0, &{
            let mut h = s[1][..20].to_vec();
            h[10..12].fill(0);
            h
        }));
        s[1][10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(
            run(&s),
            vec![Out::Plain(s[0].clone()), Out::Plain(s[1].clone())]
        );
        let mut s = stream(false, 80, &[1000, 1000], false);
        s[1][10] ^= 0x01;
        assert_eq!(
            run(&s),
            vec![Out::Plain(s[0].clone()), Out::Plain(s[1].clone())]
        );
        // A different urgent pointer (found by fuzzing: it was not compared, and the joined
        // super-packet cut back with the first segment's).
        let mut s = stream(false, 80, &[1000, 1000], false);
        s[1][39] = 0xff;
        let c = fold(sum16(pseudo_sum(&s[1], 6, s[1].len() - 20), &{
            let mut t = s[1][20..].to_vec();
            t[16..18].fill(0);
            t
        }));
        s[1][36..38].copy_from_slice(&c.to_be_bytes());
        assert_eq!(
            run(&s),
            vec![Out::Plain(s[0].clone()), Out::Plain(s[1].clone())]
        );
        // Not TCP, a SYN, a different ACK number.
        let mut udp = s[0].clone();
        udp[9] = 17;
        let mut syn = s[0].clone();
        syn[33] = 0x02;
        for p in [udp, syn] {
            assert_eq!(run(std::slice::from_ref(&p)), vec![Out::Plain(p)]);
        }
    }

    #[test]
    fn psh_ends_a_super_packet_and_disabled_passes_everything() {
        let s = stream(false, 80, &[1000, 1000], true);
        let t = stream(false, 80, &[1000, 1000], false);
        let out = run(&[s[0].clone(), s[1].clone()]);
        assert!(matches!(out.as_slice(), [Out::Super(_)]), "{out:?}");
        let mut c = Coalescer::new(false);
        let mut n = 0;
        for p in &t {
            c.push(p, &mut |f| {
                assert!(matches!(f, Frame::Plain(_)));
                n += 1;
            });
        }
        assert_eq!(n, 2);
    }
}
