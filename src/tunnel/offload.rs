//! TUN offloads, the pure half: the virtio-net header the kernel puts before each packet read
//! from a TUN device opened with `IFF_VNET_HDR`, checksum completion (`NEEDS_CSUM`) and TCP
//! segmentation of the super-packets TSO hands us (up to 64 KiB), the way the kernel's own
//! `tcp_gso_segment` cuts them: sequence numbers advance, the IPv4 ID increments, CWR stays on
//! the first segment only, FIN and PSH on the last only, and every segment gets full IP and TCP
//! checksums. No I/O; the device (send.rs) feeds it what it reads.

use std::fmt;

/// `sizeof(struct virtio_net_hdr)`, the TUN default (`TUNSETVNETHDRSZ` not used).
pub const VNET_HDR_LEN: usize = 10;

pub(crate) const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
pub(crate) const GSO_TCPV4: u8 = 1;
pub(crate) const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_UDP_L4`: UDP segmentation (USO), IPv4 or IPv6.
pub(crate) const GSO_UDP_L4: u8 = 5;
const GSO_ECN: u8 = 0x80;

const TCP_FIN: u8 = 0x01;
pub(crate) const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Why a packet read from the device cannot be passed on (counted as a bad packet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffloadError {
    Short,
    /// A GSO type we never enabled (UFO) or that is not TCP or UDP over IP.
    UnsupportedGso(u8),
    BadHeaders(&'static str),
}

impl fmt::Display for OffloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OffloadError::Short => write!(f, "shorter than its virtio-net header"),
            OffloadError::UnsupportedGso(t) => write!(f, "unsupported GSO type {t:#x}"),
            OffloadError::BadHeaders(why) => write!(f, "bad headers: {why}"),
        }
    }
}

/// `struct virtio_net_hdr` (little-endian fields, as TUN uses them without VNET_LE on x86 and
/// arm64; the device refuses to enable offloads on a big-endian host, see tun.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8]) -> Result<VnetHdr, OffloadError> {
        if b.len() < VNET_HDR_LEN {
            return Err(OffloadError::Short);
        }
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Ok(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    pub fn write(&self, b: &mut [u8]) {
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
    }
}

/// One's-complement sum of `data` as big-endian 16-bit words, added to `sum` (not folded).
///
/// The hot loop adds native-endian 32-bit words and swaps bytes once at the end: a one's-
/// complement sum does not depend on byte order (RFC 1071, 2(B)), and 2^16 = 1 modulo 0xffff,
/// so a 32-bit word counts as its two 16-bit halves. The compiler vectorises it.
pub fn sum16(sum: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(4);
    let mut acc: u64 = 0;
    for w in &mut words {
        acc += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // The folded sum of native-order 16-bit words, byte-swapped back where native is little.
    let mut sum = sum + u64::from(u16::from_be(acc as u16));
    let rest = words.remainder();
    let mut pairs = rest.chunks_exact(2);
    for c in &mut pairs {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = pairs.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// Folds a sum to 16 bits and complements it: the checksum field's value.
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The pseudo-header sum of an IPv4 or IPv6 packet whose transport segment is `len` bytes.
pub(crate) fn pseudo_sum(ip: &[u8], protocol: u8, len: usize) -> u64 {
    let addrs = if ip[0] >> 4 == 4 {
        &ip[12..20]
    } else {
        &ip[8..40]
    };
    sum16(0, addrs) + u64::from(protocol) + len as u64
}

/// Completes a partial checksum (`NEEDS_CSUM`): the field at `start + offset` holds the
/// pseudo-header sum, the rest is summed over `pkt[start..]`. A result of 0 is sent as 0xffff
/// (UDP's "no checksum" would otherwise be claimed; for TCP both mean the same).
pub fn complete_checksum(pkt: &mut [u8], start: usize, offset: usize) -> Result<(), OffloadError> {
    let field = start + offset;
    if start >= pkt.len() || field + 2 > pkt.len() {
        return Err(OffloadError::BadHeaders(
            "checksum offsets outside the packet",
        ));
    }
    let c = fold(sum16(0, &pkt[start..]));
    let c = if c == 0 { 0xffff } else { c };
    pkt[field..field + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// The IP header length and transport protocol of `pkt` (IPv4 with options, or IPv6 without
/// extension headers: TSO only hands us those).
fn ip_header(pkt: &[u8]) -> Result<(usize, u8, bool), OffloadError> {
    match pkt.first().map(|b| b >> 4) {
        Some(4) if pkt.len() >= 20 => {
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            if ihl < 20 || pkt.len() < ihl {
                return Err(OffloadError::BadHeaders("IPv4 header length"));
            }
            Ok((ihl, pkt[9], false))
        }
        Some(6) if pkt.len() >= 40 => Ok((40, pkt[6], true)),
        _ => Err(OffloadError::BadHeaders("not IPv4 or IPv6")),
    }
}

/// Whether a read (virtio-net header first) is a UDP super-packet (USO), for the counters.
pub fn is_udp_super_packet(read: &[u8]) -> bool {
    read.get(1).is_some_and(|t| t & !GSO_ECN == GSO_UDP_L4)
}

/// Hands every packet of one TUN read to `emit`: the packet itself (checksum completed if
/// asked), or the segments of a TCP or UDP super-packet, built one at a time in `scratch` (at
/// least 64 KiB). `read` starts with the virtio-net header. Returns the number of segments a
/// super-packet was cut into (0 for a plain packet).
pub fn split(
    read: &mut [u8],
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    let hdr = VnetHdr::parse(read)?;
    let pkt = &mut read[VNET_HDR_LEN..];
    match hdr.gso_type & !GSO_ECN {
        GSO_NONE => {
            if hdr.flags & F_NEEDS_CSUM != 0 {
                complete_checksum(pkt, hdr.csum_start.into(), hdr.csum_offset.into())?;
            }
            emit(pkt);
            Ok(0)
        }
        GSO_TCPV4 | GSO_TCPV6 => segment_tcp(pkt, usize::from(hdr.gso_size), scratch, emit),
        GSO_UDP_L4 => segment_udp(pkt, usize::from(hdr.gso_size), scratch, emit),
        other => Err(OffloadError::UnsupportedGso(other)),
    }
}

/// Sets the IP header of a segment of `seg_len` bytes: its length and, for IPv4, the ID of
/// segment `i` (the super-packet's ID + i) and the header checksum.
fn fix_ip_header(seg: &mut [u8], ip_len: usize, v6: bool, id0: u16, i: usize) {
    let seg_len = seg.len();
    if v6 {
        seg[4..6].copy_from_slice(&((seg_len - 40) as u16).to_be_bytes());
    } else {
        seg[2..4].copy_from_slice(&(seg_len as u16).to_be_bytes());
        seg[4..6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
        seg[10..12].fill(0);
        let c = fold(sum16(0, &seg[..ip_len]));
        seg[10..12].copy_from_slice(&c.to_be_bytes());
    }
}

/// Cuts a UDP super-packet (USO) into datagrams of at most `size` payload bytes each.
fn segment_udp(
    pkt: &[u8],
    size: usize,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    let (ip_len, protocol, v6) = ip_header(pkt)?;
    if protocol != 17 {
        return Err(OffloadError::BadHeaders("USO of a non-UDP packet"));
    }
    let hdrs = ip_len + 8;
    if pkt.len() < hdrs {
        return Err(OffloadError::BadHeaders("truncated UDP header"));
    }
    if size == 0 || hdrs + size > scratch.len() {
        return Err(OffloadError::BadHeaders("GSO size"));
    }
    let payload = &pkt[hdrs..];
    if payload.is_empty() {
        return Err(OffloadError::BadHeaders("USO without payload"));
    }
    let id0 = u16::from_be_bytes([pkt[4], pkt[5]]);
    let count = payload.len().div_ceil(size);
    for (i, chunk) in payload.chunks(size).enumerate() {
        let seg_len = hdrs + chunk.len();
        let seg = &mut scratch[..seg_len];
        seg[..hdrs].copy_from_slice(&pkt[..hdrs]);
        seg[hdrs..].copy_from_slice(chunk);
        fix_ip_header(seg, ip_len, v6, id0, i);
        let u = ip_len;
        seg[u + 4..u + 6].copy_from_slice(&((8 + chunk.len()) as u16).to_be_bytes());
        seg[u + 6..u + 8].fill(0);
        let sum = sum16(pseudo_sum(seg, 17, seg_len - ip_len), &seg[ip_len..]);
        // 0 means "no checksum" in UDP (and is not allowed over IPv6): sent as 0xffff.
        let c = match fold(sum) {
            0 => 0xffff,
            c => c,
        };
        seg[u + 6..u + 8].copy_from_slice(&c.to_be_bytes());
        emit(seg);
    }
    Ok(count)
}

/// Cuts a TCP super-packet into segments of at most `mss` payload bytes.
fn segment_tcp(
    pkt: &[u8],
    mss: usize,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    let (ip_len, protocol, v6) = ip_header(pkt)?;
    if protocol != 6 {
        return Err(OffloadError::BadHeaders("TSO of a non-TCP packet"));
    }
    if pkt.len() < ip_len + 20 {
        return Err(OffloadError::BadHeaders("truncated TCP header"));
    }
    let tcp_len = usize::from(pkt[ip_len + 12] >> 4) * 4;
    let hdrs = ip_len + tcp_len;
    if tcp_len < 20 || pkt.len() < hdrs {
        return Err(OffloadError::BadHeaders("TCP header length"));
    }
    if mss == 0 || hdrs + mss > scratch.len() {
        return Err(OffloadError::BadHeaders("GSO size"));
    }
    let payload = &pkt[hdrs..];
    let seq0 = u32::from_be_bytes(pkt[ip_len + 4..ip_len + 8].try_into().expect("4 bytes"));
    let id0 = u16::from_be_bytes([pkt[4], pkt[5]]);
    let flags0 = pkt[ip_len + 13];
    let count = payload.len().div_ceil(mss).max(1);
    for (i, chunk) in payload
        .chunks(mss)
        .chain(payload.is_empty().then_some(&[][..]))
        .enumerate()
    {
        let seg_len = hdrs + chunk.len();
        let seg = &mut scratch[..seg_len];
        seg[..hdrs].copy_from_slice(&pkt[..hdrs]);
        seg[hdrs..].copy_from_slice(chunk);
        fix_ip_header(seg, ip_len, v6, id0, i);
        let t = ip_len;
        let seq = seq0.wrapping_add((i * mss) as u32);
        seg[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
        let mut flags = flags0;
        if i > 0 {
            flags &= !TCP_CWR;
        }
        if i + 1 < count {
            flags &= !(TCP_FIN | TCP_PSH);
        }
        seg[t + 13] = flags;
        seg[t + 16..t + 18].fill(0);
        let sum = sum16(pseudo_sum(seg, 6, seg_len - ip_len), &seg[ip_len..]);
        seg[t + 16..t + 18].copy_from_slice(&fold(sum).to_be_bytes());
        emit(seg);
    }
    Ok(count)
}

/// Test packets for the offload and GRO tests: TCP over IPv4 (10.128.0.5 -> 10.132.0.7, DF,
/// TTL 64) or IPv6 (fd00::1 -> fd00::2, hop limit 64), to port 80, with valid checksums.
#[cfg(test)]
pub(crate) mod test_packet {
    use super::{fold, pseudo_sum, sum16};

    pub struct Tcp<'a> {
        pub v6: bool,
        pub ip_id: u16,
        /// IPv4 TOS (with the ECN bits).
        pub tos: u8,
        pub src_port: u16,
        pub seq: u32,
        pub flags: u8,
        /// A multiple of 4 bytes.
        pub options: &'a [u8],
        pub payload: &'a [u8],
    }

    pub fn tcp(spec: &Tcp) -> Vec<u8> {
        let ip_len = if spec.v6 { 40 } else { 20 };
        let tcp_len = 20 + spec.options.len();
        let total = ip_len + tcp_len + spec.payload.len();
        let mut p = vec![0u8; total];
        if spec.v6 {
            p[0] = 0x60;
            p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
            p[6] = 6;
            p[7] = 64;
            p[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            p[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        } else {
            p[0] = 0x45;
            p[1] = spec.tos;
            p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            p[4..6].copy_from_slice(&spec.ip_id.to_be_bytes());
            p[6] = 0x40;
            p[8] = 64;
            p[9] = 6;
            p[12..16].copy_from_slice(&[10, 128, 0, 5]);
            p[16..20].copy_from_slice(&[10, 132, 0, 7]);
            let c = fold(sum16(0, &p[..20]));
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        let t = ip_len;
        p[t..t + 2].copy_from_slice(&spec.src_port.to_be_bytes());
        p[t + 2..t + 4].copy_from_slice(&80u16.to_be_bytes());
        p[t + 4..t + 8].copy_from_slice(&spec.seq.to_be_bytes());
        p[t + 8..t + 12].copy_from_slice(&77u32.to_be_bytes());
        p[t + 12] = ((tcp_len / 4) as u8) << 4;
        p[t + 13] = spec.flags;
        p[t + 14..t + 16].copy_from_slice(&64240u16.to_be_bytes());
        p[t + 20..t + tcp_len].copy_from_slice(spec.options);
        p[t + tcp_len..].copy_from_slice(spec.payload);
        let sum = sum16(pseudo_sum(&p, 6, total - ip_len), &p[ip_len..]);
        p[t + 16..t + 18].copy_from_slice(&fold(sum).to_be_bytes());
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP packet with valid checksums: IPv4 (ID 0x1234, ECT(0)) or IPv6, no TCP options,
    /// `payload` bytes, the given TCP flags, seq 1000.
    fn tcp_packet(v6: bool, payload: &[u8], flags: u8) -> Vec<u8> {
        test_packet::tcp(&test_packet::Tcp {
            v6,
            ip_id: 0x1234,
            tos: 0x02,
            src_port: 40000,
            seq: 1000,
            flags,
            options: &[],
            payload,
        })
    }

    /// Summing a packet with a correct checksum field gives 0 after fold.
    fn checksums_ok(p: &[u8]) -> bool {
        let (ip_len, _, v6) = ip_header(p).unwrap();
        let ip_ok = v6 || fold(sum16(0, &p[..ip_len])) == 0;
        let tcp_ok = fold(sum16(pseudo_sum(p, 6, p.len() - ip_len), &p[ip_len..])) == 0;
        ip_ok && tcp_ok
    }

    fn with_hdr(hdr: VnetHdr, pkt: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; VNET_HDR_LEN];
        hdr.write(&mut v);
        v.extend_from_slice(pkt);
        v
    }

    fn run_split(read: &mut [u8]) -> Result<Vec<Vec<u8>>, OffloadError> {
        let mut scratch = vec![0u8; 65_536];
        let mut out = Vec::new();
        split(read, &mut scratch, |s| out.push(s.to_vec()))?;
        Ok(out)
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 section 3: 0001 f203 f4f5 f6f7 sums to ddf2 (before complement).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum16(0, &data)), !0xddf2);
        // An odd length pads with a zero byte.
        assert_eq!(sum16(0, &[0xab]), 0xab00);
    }

    /// The plain definition, 16-bit big-endian words one by one.
    fn sum16_reference(mut sum: u64, data: &[u8]) -> u64 {
        for c in data.chunks(2) {
            sum += u64::from(c[0]) << 8 | c.get(1).map_or(0, |&b| u64::from(b));
        }
        sum
    }

    #[test]
    fn fast_sum_folds_like_the_definition() {
        let mut x = 0x1234_5678_9abc_def0u64;
        for len in (0..80).chain([1279, 1400, 1401, 65_535]) {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            for start in [0u64, 0x1_2345, 0xffff_ffff] {
                assert_eq!(
                    fold(sum16(start, &data)),
                    fold(sum16_reference(start, &data)),
                    "len {len} start {start:#x}"
                );
            }
        }
        // All ones: the edge of the fold.
        let ff = vec![0xffu8; 1000];
        assert_eq!(fold(sum16(0, &ff)), fold(sum16_reference(0, &ff)));
    }

    #[test]
    fn header_round_trips() {
        let h = VnetHdr {
            flags: 1,
            gso_type: 4,
            hdr_len: 60,
            gso_size: 1380,
            csum_start: 40,
            csum_offset: 16,
        };
        let mut b = [0u8; VNET_HDR_LEN];
        h.write(&mut b);
        assert_eq!(VnetHdr::parse(&b).unwrap(), h);
        assert_eq!(VnetHdr::parse(&b[..9]), Err(OffloadError::Short));
    }

    #[test]
    fn a_plain_packet_passes_unchanged() {
        let p = tcp_packet(false, b"hello", TCP_PSH);
        let mut read = with_hdr(VnetHdr::default(), &p);
        assert_eq!(run_split(&mut read).unwrap(), vec![p]);
    }

    #[test]
    fn needs_csum_is_completed_like_the_kernel_would() {
        for v6 in [false, true] {
            let p = tcp_packet(v6, &[7u8; 333], TCP_PSH);
            let ip_len = if v6 { 40 } else { 20 };
            // What the kernel hands over: the pseudo-header sum, not complemented... i.e. the
            // complement of the folded pseudo sum, in the checksum field.
            let mut partial = p.clone();
            let pseudo = !fold(pseudo_sum(&p, 6, p.len() - ip_len));
            partial[ip_len + 16..ip_len + 18].copy_from_slice(&pseudo.to_be_bytes());
            let hdr = VnetHdr {
                flags: F_NEEDS_CSUM,
                csum_start: ip_len as u16,
                csum_offset: 16,
                ..Default::default()
            };
            let mut read = with_hdr(hdr, &partial);
            let out = run_split(&mut read).unwrap();
            assert_eq!(out, vec![p.clone()], "v6={v6}");
            assert!(checksums_ok(&out[0]));
        }
    }

    #[test]
    fn tso_cuts_like_the_kernel() {
        for v6 in [false, true] {
            let payload: Vec<u8> = (0..3500u32).map(|i| (i % 251) as u8).collect();
            let big = tcp_packet(v6, &payload, TCP_PSH | TCP_FIN | TCP_CWR | 0x10);
            let hdr = VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 },
                gso_size: 1000,
                ..Default::default()
            };
            let mut read = with_hdr(hdr, &big);
            let segs = run_split(&mut read).unwrap();
            assert_eq!(segs.len(), 4, "v6={v6}");
            let ip_len = if v6 { 40 } else { 20 };
            let mut joined = Vec::new();
            for (i, s) in segs.iter().enumerate() {
                assert!(checksums_ok(s), "segment {i} v6={v6}");
                let t = ip_len;
                let seq = u32::from_be_bytes(s[t + 4..t + 8].try_into().unwrap());
                assert_eq!(seq, 1000 + 1000 * i as u32);
                let flags = s[t + 13];
                assert_eq!(flags & TCP_CWR != 0, i == 0, "CWR on the first only");
                assert_eq!(
                    flags & (TCP_FIN | TCP_PSH) != 0,
                    i == 3,
                    "FIN/PSH on the last"
                );
                assert!(flags & 0x10 != 0, "ACK everywhere");
                if v6 {
                    let plen = u16::from_be_bytes([s[4], s[5]]) as usize;
                    assert_eq!(plen, s.len() - 40);
                } else {
                    assert_eq!(u16::from_be_bytes([s[2], s[3]]) as usize, s.len());
                    assert_eq!(u16::from_be_bytes([s[4], s[5]]), 0x1234 + i as u16);
                    assert_eq!(s[1], 0x02, "ECN bits kept");
                }
                joined.extend_from_slice(&s[ip_len + 20..]);
            }
            assert_eq!(joined, payload, "v6={v6}");
            assert_eq!(segs[3].len(), ip_len + 20 + 500);
        }
    }

    #[test]
    fn malformed_offload_packets_are_refused() {
        let p = tcp_packet(false, &[1u8; 100], 0x10);
        let tso = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 10,
            ..Default::default()
        };
        // Truncated inside the TCP header.
        let mut read = with_hdr(tso, &p[..30]);
        assert!(matches!(
            run_split(&mut read),
            Err(OffloadError::BadHeaders(_))
        ));
        // A GSO size of 0.
        let zero = VnetHdr { gso_size: 0, ..tso };
        let mut read = with_hdr(zero, &p);
        assert!(run_split(&mut read).is_err());
        // UDP fragmentation offload was never enabled.
        let ufo = VnetHdr {
            gso_type: 3,
            ..Default::default()
        };
        let mut read = with_hdr(ufo, &p);
        assert_eq!(run_split(&mut read), Err(OffloadError::UnsupportedGso(3)));
        // A checksum offset past the end.
        let bad = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 130,
            csum_offset: 16,
            ..Default::default()
        };
        let mut read = with_hdr(bad, &p);
        assert!(run_split(&mut read).is_err());
        // Not IP at all.
        let mut read = with_hdr(tso, &[0u8; 60]);
        assert!(run_split(&mut read).is_err());
    }

    /// A UDP packet (IPv4 10.128.0.5 -> 10.132.0.7, ID 0x1000, or IPv6 fd00::1 -> fd00::2),
    /// 5353 -> 9999, with `payload` and a valid checksum.
    fn udp_packet(v6: bool, payload: &[u8]) -> Vec<u8> {
        let ip_len = if v6 { 40 } else { 20 };
        let total = ip_len + 8 + payload.len();
        let mut p = vec![0u8; total];
        if v6 {
            p[0] = 0x60;
            p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
            p[6] = 17;
            p[7] = 64;
            p[8] = 0xfd;
            p[23] = 1;
            p[24] = 0xfd;
            p[39] = 2;
        } else {
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            p[4..6].copy_from_slice(&0x1000u16.to_be_bytes());
            p[8] = 64;
            p[9] = 17;
            p[12..16].copy_from_slice(&[10, 128, 0, 5]);
            p[16..20].copy_from_slice(&[10, 132, 0, 7]);
            let c = fold(sum16(0, &p[..20]));
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        let u = ip_len;
        p[u..u + 2].copy_from_slice(&5353u16.to_be_bytes());
        p[u + 2..u + 4].copy_from_slice(&9999u16.to_be_bytes());
        p[u + 4..u + 6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p[ip_len + 8..].copy_from_slice(payload);
        let c = fold(sum16(pseudo_sum(&p, 17, total - ip_len), &p[ip_len..]));
        p[u + 6..u + 8].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn uso_super_packets_are_cut_into_datagrams() {
        let payload: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
        for v6 in [false, true] {
            let ip_len = if v6 { 40 } else { 20 };
            let uso = VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_UDP_L4,
                hdr_len: (ip_len + 8) as u16,
                gso_size: 1200,
                csum_start: ip_len as u16,
                csum_offset: 6,
            };
            let mut read = with_hdr(uso, &udp_packet(v6, &payload));
            assert!(is_udp_super_packet(&read));
            let segs = run_split(&mut read).unwrap();
            assert_eq!(segs.len(), 3, "v6 {v6}");
            let mut joined = Vec::new();
            for (i, seg) in segs.iter().enumerate() {
                let want = [1200, 1200, 600][i];
                assert_eq!(seg.len(), ip_len + 8 + want);
                let u = ip_len;
                assert_eq!(
                    usize::from(u16::from_be_bytes([seg[u + 4], seg[u + 5]])),
                    8 + want,
                    "UDP length"
                );
                assert_eq!(&seg[u..u + 4], &[0x14, 0xe9, 0x27, 0x0f], "ports kept");
                if v6 {
                    assert_eq!(usize::from(u16::from_be_bytes([seg[4], seg[5]])), 8 + want);
                } else {
                    assert_eq!(u16::from_be_bytes([seg[4], seg[5]]), 0x1000 + i as u16);
                    assert_eq!(fold(sum16(0, &seg[..20])), 0, "IPv4 header checksum");
                }
                let sum = sum16(pseudo_sum(seg, 17, seg.len() - ip_len), &seg[ip_len..]);
                assert_eq!(fold(sum), 0, "UDP checksum of segment {i}");
                joined.extend_from_slice(&seg[ip_len + 8..]);
            }
            assert_eq!(joined, payload);
        }
        // USO over a TCP packet, or without payload: refused.
        let tcp = test_packet::tcp(&test_packet::Tcp {
            v6: false,
            ip_id: 1,
            tos: 0,
            src_port: 1,
            seq: 1,
            flags: TCP_PSH,
            options: &[],
            payload: &[1; 100],
        });
        let uso = VnetHdr {
            gso_type: GSO_UDP_L4,
            gso_size: 50,
            ..VnetHdr::default()
        };
        assert!(run_split(&mut with_hdr(uso, &tcp)).is_err());
        assert!(run_split(&mut with_hdr(uso, &udp_packet(false, &[]))).is_err());
        assert!(!is_udp_super_packet(&with_hdr(VnetHdr::default(), &tcp)));
    }
}
