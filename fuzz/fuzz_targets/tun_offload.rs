//! The TUN offloads: `tunnel::offload::split` over arbitrary reads from the device (a
//! virtio-net header and a packet, as the kernel hands them over) and `tunnel::gro::Coalescer`
//! over arbitrary decrypted packets (what a peer sends).
//!
//! Input: a mode byte, then for `split` the read itself, for the coalescer a sequence of
//! packets, each with a 2-byte big-endian length prefix.
//! Properties: never a panic; the segments `split` cuts from a TSO or USO super-packet are
//! TCP/IP or UDP/IP packets whose IP and TCP or UDP checksums hold; the coalescer writes every packet pushed, in order,
//! and each super-packet it builds cuts back (through `split`) into exactly the packets joined.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sdn_tunnel::tunnel::gro::{Coalescer, Frame};
use sdn_tunnel::tunnel::offload::{fold, split, sum16};

/// Whether a segment's IPv4 header checksum and TCP or UDP checksum hold.
fn checksums_hold(p: &[u8]) -> bool {
    let (ip_len, addrs, protocol) = match p[0] >> 4 {
        4 => (usize::from(p[0] & 0x0f) * 4, &p[12..20], p[9]),
        6 => (40, &p[8..40], p[6]),
        _ => return false,
    };
    if protocol != 6 && protocol != 17 {
        return false;
    }
    let ip_ok = p[0] >> 4 == 6 || fold(sum16(0, &p[..ip_len])) == 0;
    let pseudo = sum16(0, addrs) + u64::from(protocol) + (p.len() - ip_len) as u64;
    ip_ok && fold(sum16(pseudo, &p[ip_len..])) == 0
}

fn packets(mut data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while data.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([data[0], data[1]])).min(data.len() - 2);
        out.push(data[2..2 + len].to_vec());
        data = &data[2 + len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut scratch = vec![0u8; 65_536];
    if mode & 1 == 0 {
        let mut read = rest.to_vec();
        let mut segments = Vec::new();
        if let Ok(n) = split(&mut read, &mut scratch, |s| segments.push(s.to_vec())) {
            if n > 0 {
                assert_eq!(segments.len(), n);
                for s in &segments {
                    assert!(checksums_hold(s), "a cut segment with a bad checksum: {s:02x?}");
                }
            }
        }
        return;
    }
    let input = packets(rest);
    let mut coalescer = Coalescer::new(true);
    let mut written = Vec::new();
    let mut write = |f: Frame| match f {
        Frame::Plain(p) => written.push(p.to_vec()),
        Frame::Super(frame) => {
            let mut read = frame.to_vec();
            let mut scratch = vec![0u8; 65_536];
            split(&mut read, &mut scratch, |s| written.push(s.to_vec()))
                .expect("a super-packet we built cuts again");
        }
    };
    for p in &input {
        coalescer.push(p, &mut write);
    }
    coalescer.flush(&mut write);
    assert_eq!(written, input, "the coalescer changed what it was given");
});
