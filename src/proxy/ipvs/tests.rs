//! Unit tests (no root): requests are compared byte for byte with layouts written out by hand
//! from include/uapi/linux/ip_vs.h; replies are hand-built as the kernel's ip_vs_ctl.c fills
//! them (nests without NLA_F_NESTED, u64 counters, padding) and decoded; malformed input must
//! give errors, never panics. The client's pipelining runs against a scripted fake kernel.
//!
//! The literals spell host-order fields little endian, so the module is for little-endian
//! targets (x86_64, aarch64), like netlink-packet-core's own tests.
#![cfg(target_endian = "little")]

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::client::{IpvsClient, Request, Transport, PIPELINE_DEPTH};
use super::codec::*;
use super::consts::*;
use super::error::{CodecError, IpvsError, OpKind};
use super::netlink::*;
use super::types::*;

const FAMILY: u16 = 0x1c;

// ---- hand-built wire helpers (independent of the codec) ------------------------------------

/// One netlink attribute: u16 len (header + value, without padding), u16 type, value, zero
/// padding to 4 bytes.
fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((4 + value.len()) as u16).to_le_bytes());
    v.extend_from_slice(&kind.to_le_bytes());
    v.extend_from_slice(value);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// nlmsghdr { len, type, flags, seq, pid=0 } + payload (already 4-aligned here).
fn nlmsg(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((16 + payload.len()) as u32).to_le_bytes());
    v.extend_from_slice(&ty.to_le_bytes());
    v.extend_from_slice(&flags.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(payload);
    v
}

/// genlmsghdr { cmd, version, reserved=0 } + attributes.
fn genl(cmd: u8, attrs: &[u8]) -> Vec<u8> {
    cat(&[&[cmd, 1, 0, 0], attrs])
}

fn ack(seq: u32, code: i32) -> Vec<u8> {
    // struct nlmsgerr: error, then the request's nlmsghdr (CAP_ACK: payload not echoed).
    let orig = [0u8; 16];
    nlmsg(
        NLMSG_ERROR_T,
        0x100,
        seq,
        &cat(&[&code.to_le_bytes(), &orig]),
    )
}

const NLMSG_ERROR_T: u16 = 2;
const NLMSG_DONE_T: u16 = 3;
const NLM_F_MULTI: u16 = 2;

fn done(seq: u32) -> Vec<u8> {
    nlmsg(NLMSG_DONE_T, NLM_F_MULTI, seq, &0i32.to_le_bytes())
}

fn encode(family: u16, flags: u16, seq: u32, msg: IpvsMessage) -> Vec<u8> {
    let mut buf = Vec::new();
    let n = push_request(&mut buf, family, flags, seq, msg);
    assert_eq!(n, buf.len());
    buf
}

fn tcp_svc() -> Service {
    Service::new(
        ServiceKey::tcp("10.0.0.1:80".parse().unwrap()),
        Scheduler::RoundRobin,
    )
}

fn udp6_svc() -> Service {
    Service::new(
        ServiceKey::udp("[fd00::1]:53".parse().unwrap()),
        Scheduler::SourceHashing,
    )
    .with_persistence(300)
}

// ---- encoding: byte-for-byte ----------------------------------------------------------------

#[rustfmt::skip]
const NEW_SERVICE_TCP_V4: [u8; 104] = [
    // nlmsghdr: len 104, type 0x1c (IPVS family id), flags REQUEST|ACK, seq 7, pid 0
    104, 0, 0, 0,  0x1c, 0,  0x05, 0,  7, 0, 0, 0,  0, 0, 0, 0,
    // genlmsghdr: cmd IPVS_CMD_NEW_SERVICE, version 1, reserved
    1, 1, 0, 0,
    // IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED, len 84
    84, 0, 0x01, 0x80,
    //   IPVS_SVC_ATTR_AF = AF_INET (u16) + 2 pad
    6, 0, 1, 0,   2, 0, 0, 0,
    //   IPVS_SVC_ATTR_PROTOCOL = IPPROTO_TCP (u16) + 2 pad
    6, 0, 2, 0,   6, 0, 0, 0,
    //   IPVS_SVC_ATTR_ADDR: 16 bytes, 10.0.0.1 in the first 4
    20, 0, 3, 0,  10, 0, 0, 1,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,
    //   IPVS_SVC_ATTR_PORT = 80, network byte order, + 2 pad
    6, 0, 4, 0,   0, 80, 0, 0,
    //   IPVS_SVC_ATTR_SCHED_NAME = "rr\0" + 1 pad
    7, 0, 6, 0,   b'r', b'r', 0, 0,
    //   IPVS_SVC_ATTR_FLAGS = struct ip_vs_flags { flags 0, mask ~0 }
    12, 0, 7, 0,  0, 0, 0, 0,  0xff, 0xff, 0xff, 0xff,
    //   IPVS_SVC_ATTR_TIMEOUT = 0
    8, 0, 8, 0,   0, 0, 0, 0,
    //   IPVS_SVC_ATTR_NETMASK = 255.255.255.255 (be32)
    8, 0, 9, 0,   0xff, 0xff, 0xff, 0xff,
];

#[test]
fn encode_new_service_tcp_v4_matches_ip_vs_h_layout() {
    let msg = IpvsMessage::new_service(&tcp_svc()).unwrap();
    let got = encode(FAMILY, 0x05, 7, msg);
    assert_eq!(got, NEW_SERVICE_TCP_V4);
}

#[rustfmt::skip]
#[test]
fn encode_set_service_udp_v6_persistent() {
    let mut svc = udp6_svc();
    svc.flags |= ServiceFlags::SH_PORT;
    let got = encode(FAMILY, 0x05, 0x01020304, IpvsMessage::set_service(&svc).unwrap());
    let want: Vec<u8> = vec![
        104, 0, 0, 0,  0x1c, 0,  0x05, 0,  4, 3, 2, 1,  0, 0, 0, 0,
        2, 1, 0, 0,                                   // IPVS_CMD_SET_SERVICE, v1
        84, 0, 0x01, 0x80,                            // service nest
        6, 0, 1, 0,   10, 0, 0, 0,                    // AF_INET6 = 10
        6, 0, 2, 0,   17, 0, 0, 0,                    // IPPROTO_UDP
        20, 0, 3, 0,  0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
        6, 0, 4, 0,   0, 53, 0, 0,                    // port 53 big endian
        7, 0, 6, 0,   b's', b'h', 0, 0,               // "sh"
        12, 0, 7, 0,  0x11, 0, 0, 0,  0xff, 0xff, 0xff, 0xff, // PERSISTENT|SCHED2, mask ~0
        8, 0, 8, 0,   0x2c, 0x01, 0, 0,               // timeout 300 s
        8, 0, 9, 0,   128, 0, 0, 0,                   // IPv6: prefix length 128, host order
    ];
    assert_eq!(got, want);
}

#[rustfmt::skip]
#[test]
fn encode_new_dest_nests_service_then_dest() {
    let key = tcp_svc().key;
    let dest = Destination::new("10.1.0.7:8080".parse().unwrap(), 3);
    let got = encode(FAMILY, 0x05, 1, IpvsMessage::new_dest(&key, &dest).unwrap());
    let want: Vec<u8> = vec![
        140, 0, 0, 0,  0x1c, 0,  0x05, 0,  1, 0, 0, 0,  0, 0, 0, 0,
        5, 1, 0, 0,                                   // IPVS_CMD_NEW_DEST
        48, 0, 0x01, 0x80,                            // IPVS_CMD_ATTR_SERVICE: key only
        6, 0, 1, 0,   2, 0, 0, 0,
        6, 0, 2, 0,   6, 0, 0, 0,
        20, 0, 3, 0,  10, 0, 0, 1,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,
        6, 0, 4, 0,   0, 80, 0, 0,
        72, 0, 0x02, 0x80,                            // IPVS_CMD_ATTR_DEST
        6, 0, 11, 0,  2, 0, 0, 0,                     // ADDR_FAMILY AF_INET
        20, 0, 1, 0,  10, 1, 0, 7,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,
        6, 0, 2, 0,   0x1f, 0x90, 0, 0,               // port 8080 big endian
        8, 0, 3, 0,   0, 0, 0, 0,                     // FWD_METHOD masq
        8, 0, 4, 0,   3, 0, 0, 0,                     // WEIGHT 3
        8, 0, 5, 0,   0, 0, 0, 0,                     // U_THRESH
        8, 0, 6, 0,   0, 0, 0, 0,                     // L_THRESH
    ];
    assert_eq!(got, want);
}

#[rustfmt::skip]
#[test]
fn encode_del_dest_v6_and_tunnel_dest() {
    let key = udp6_svc().key;
    let got = encode(FAMILY, 0x05, 2, IpvsMessage::del_dest(&key, "[fd01::7]:5353".parse().unwrap()));
    let want: Vec<u8> = vec![
        108, 0, 0, 0,  0x1c, 0,  0x05, 0,  2, 0, 0, 0,  0, 0, 0, 0,
        7, 1, 0, 0,                                   // IPVS_CMD_DEL_DEST
        48, 0, 0x01, 0x80,
        6, 0, 1, 0,   10, 0, 0, 0,
        6, 0, 2, 0,   17, 0, 0, 0,
        20, 0, 3, 0,  0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
        6, 0, 4, 0,   0, 53, 0, 0,
        40, 0, 0x02, 0x80,                            // dest key: family, addr, port
        6, 0, 11, 0,  10, 0, 0, 0,
        20, 0, 1, 0,  0xfd, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7,
        6, 0, 2, 0,   0x14, 0xe9, 0, 0,               // 5353
    ];
    assert_eq!(got, want);

    // A GUE tunnel destination carries TUN_TYPE (u8), TUN_PORT (be16), TUN_FLAGS (u16).
    let mut d = Destination::new("10.1.0.7:0".parse().unwrap(), 1);
    d.forward = ForwardMethod::Tunnel;
    d.tunnel = TunnelConfig { kind: IP_VS_CONN_F_TUNNEL_TYPE_GUE, port: 6080, flags: 1 };
    let attrs = dest_attrs(&d).unwrap();
    let mut buf = vec![0; attrs.as_slice().buffer_len()];
    attrs.as_slice().emit(&mut buf);
    let tail: Vec<u8> = vec![
        8, 0, 3, 0,   2, 0, 0, 0,                     // FWD_METHOD tunnel
        8, 0, 4, 0,   1, 0, 0, 0,
        8, 0, 5, 0,   0, 0, 0, 0,
        8, 0, 6, 0,   0, 0, 0, 0,
        5, 0, 13, 0,  1, 0, 0, 0,                     // TUN_TYPE GUE, 3 pad
        6, 0, 14, 0,  0x17, 0xc0, 0, 0,               // TUN_PORT 6080 big endian
        6, 0, 15, 0,  1, 0, 0, 0,                     // TUN_FLAGS
    ];
    assert!(buf.ends_with(&tail), "{buf:?}");
}

use netlink_packet_core::Emitable;

#[rustfmt::skip]
#[test]
fn encode_fwmark_service_dump_flush_config_and_family_lookup() {
    // fwmark service: AF + FWMARK instead of protocol/addr/port.
    let fwm = ServiceKey::Fwmark { ipv6: false, mark: 0x42 };
    let got = encode(FAMILY, 0x05, 3, IpvsMessage::del_service(&fwm));
    assert_eq!(got, vec![
        40, 0, 0, 0,  0x1c, 0,  0x05, 0,  3, 0, 0, 0,  0, 0, 0, 0,
        3, 1, 0, 0,                                   // IPVS_CMD_DEL_SERVICE
        20, 0, 0x01, 0x80,
        6, 0, 1, 0,   2, 0, 0, 0,
        8, 0, 5, 0,   0x42, 0, 0, 0,                  // IPVS_SVC_ATTR_FWMARK
    ]);

    // Service dump: no attributes, NLM_F_REQUEST|NLM_F_DUMP (0x301).
    let got = encode(FAMILY, 0x301, 4, IpvsMessage::get_services());
    assert_eq!(got, vec![
        20, 0, 0, 0,  0x1c, 0,  0x01, 0x03,  4, 0, 0, 0,  0, 0, 0, 0,
        4, 1, 0, 0,
    ]);

    let got = encode(FAMILY, 0x05, 5, IpvsMessage::flush());
    assert_eq!(got[16..], [17, 1, 0, 0]);
    let got = encode(FAMILY, 0x05, 5, IpvsMessage::get_info());
    assert_eq!(got[16..], [15, 1, 0, 0]);

    // SET_CONFIG sends only the non-zero timeouts.
    let t = Timeouts { tcp: 900, tcp_fin: 0, udp: 300 };
    let got = encode(FAMILY, 0x05, 6, IpvsMessage::set_config(&t));
    assert_eq!(got[16..], [
        12, 1, 0, 0,
        8, 0, 4, 0,   0x84, 0x03, 0, 0,               // TIMEOUT_TCP 900
        8, 0, 6, 0,   0x2c, 0x01, 0, 0,               // TIMEOUT_UDP 300
    ]);

    // CTRL_CMD_GETFAMILY "IPVS" to nlctrl (GENL_ID_CTRL = 0x10), version 2.
    let mut buf = Vec::new();
    push_get_family(&mut buf, 0x05, 9, "IPVS");
    assert_eq!(buf, vec![
        32, 0, 0, 0,  0x10, 0,  0x05, 0,  9, 0, 0, 0,  0, 0, 0, 0,
        3, 2, 0, 0,
        9, 0, 2, 0,   b'I', b'P', b'V', b'S', 0, 0, 0, 0, // CTRL_ATTR_FAMILY_NAME
    ]);
}

#[test]
fn pipelined_requests_are_packed_at_4_byte_boundaries() {
    let mut buf = Vec::new();
    let a = push_request(&mut buf, FAMILY, 5, 1, IpvsMessage::flush());
    let b = push_request(
        &mut buf,
        FAMILY,
        5,
        2,
        IpvsMessage::new_service(&tcp_svc()).unwrap(),
    );
    assert_eq!((a, b), (20, 104));
    assert_eq!(buf.len(), 124);
    assert_eq!(
        buf[20..],
        NEW_SERVICE_TCP_V4[..8]
            .iter()
            .chain(&[2, 0, 0, 0])
            .chain(&NEW_SERVICE_TCP_V4[12..])
            .copied()
            .collect::<Vec<_>>()[..]
    );
    let seqs: Vec<u32> = Messages::new(&buf).map(|m| m.unwrap().seq).collect();
    assert_eq!(seqs, [1, 2]);
}

#[test]
fn replies_are_walked_at_4_byte_boundaries() {
    // A message whose length is not a multiple of 4 (21 bytes), 3 padding bytes, then an ACK.
    let mut buf = nlmsg(FAMILY, 0, 1, &[4, 1, 0, 0, 0xaa]);
    assert_eq!(buf.len(), 21);
    buf.extend([0, 0, 0]);
    buf.extend(ack(2, 0));
    let msgs: Vec<_> = Messages::new(&buf).collect::<Result<_, _>>().unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(
        msgs[0].reply,
        Reply::Data {
            msg_type: FAMILY,
            payload: &[4, 1, 0, 0, 0xaa]
        }
    );
    assert_eq!((msgs[1].seq, &msgs[1].reply), (2, &Reply::Ack));
}

#[test]
fn encoder_rejects_what_the_kernel_would() {
    let mut svc = tcp_svc();
    svc.scheduler = Scheduler::Other("a-very-long-scheduler".into());
    assert!(matches!(
        IpvsMessage::new_service(&svc),
        Err(CodecError::Invalid { .. })
    ));
    svc.scheduler = Scheduler::Other(String::new());
    assert!(IpvsMessage::new_service(&svc).is_err());
    svc.scheduler = Scheduler::Other("r\0r".into());
    assert!(IpvsMessage::new_service(&svc).is_err());
    let mut svc = tcp_svc();
    svc.pe_name = Some("x".repeat(16));
    assert!(IpvsMessage::new_service(&svc).is_err());
    svc.pe_name = Some("sip".into());
    assert!(IpvsMessage::new_service(&svc).is_ok());
    let d = Destination::new("10.1.0.7:80".parse().unwrap(), u32::MAX);
    assert!(IpvsMessage::new_dest(&svc.key, &d).is_err());
}

// ---- decoding: hand-built kernel replies ----------------------------------------------------

fn u16le(v: u16) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}
fn u32le(v: u32) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}
fn u64le(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}
fn addr16(ip: &[u8]) -> Vec<u8> {
    let mut a = ip.to_vec();
    a.resize(16, 0);
    a
}

/// ip_vs_genl_fill_stats: u32 counters, u64 byte counts; here with a PAD attribute as
/// nla_put_u64_64bit adds on architectures that need 8-byte alignment.
fn stats32(base: u32) -> Vec<u8> {
    cat(&[
        &nla(IPVS_STATS_ATTR_CONNS, &u32le(base + 1)),
        &nla(IPVS_STATS_ATTR_INPKTS, &u32le(base + 2)),
        &nla(IPVS_STATS_ATTR_OUTPKTS, &u32le(base + 3)),
        &nla(IPVS_STATS_ATTR_PAD, &[]),
        &nla(IPVS_STATS_ATTR_INBYTES, &u64le(u64::from(base) + 4)),
        &nla(IPVS_STATS_ATTR_OUTBYTES, &u64le(u64::from(base) + 5)),
        &nla(IPVS_STATS_ATTR_CPS, &u32le(base + 6)),
        &nla(IPVS_STATS_ATTR_INPPS, &u32le(base + 7)),
        &nla(IPVS_STATS_ATTR_OUTPPS, &u32le(base + 8)),
        &nla(IPVS_STATS_ATTR_INBPS, &u32le(base + 9)),
        &nla(IPVS_STATS_ATTR_OUTBPS, &u32le(base + 10)),
    ])
}

/// ip_vs_genl_fill_stats64: every counter u64.
fn stats64(base: u64) -> Vec<u8> {
    let kinds = [
        IPVS_STATS_ATTR_CONNS,
        IPVS_STATS_ATTR_INPKTS,
        IPVS_STATS_ATTR_OUTPKTS,
        IPVS_STATS_ATTR_INBYTES,
        IPVS_STATS_ATTR_OUTBYTES,
        IPVS_STATS_ATTR_CPS,
        IPVS_STATS_ATTR_INPPS,
        IPVS_STATS_ATTR_OUTPPS,
        IPVS_STATS_ATTR_INBPS,
        IPVS_STATS_ATTR_OUTBPS,
    ];
    kinds
        .iter()
        .enumerate()
        .flat_map(|(i, k)| nla(*k, &u64le(base + i as u64 + 1)))
        .collect()
}

fn expected_stats(base: u64) -> Stats {
    Stats {
        conns: base + 1,
        inpkts: base + 2,
        outpkts: base + 3,
        inbytes: base + 4,
        outbytes: base + 5,
        cps: base + 6,
        inpps: base + 7,
        outpps: base + 8,
        inbps: base + 9,
        outbps: base + 10,
    }
}

/// The service nest as ip_vs_genl_fill_service writes it for TCP 10.0.0.1:80 rr.
fn kernel_service_attrs(with_stats64: bool) -> Vec<u8> {
    let mut v = cat(&[
        &nla(IPVS_SVC_ATTR_AF, &u16le(2)),
        &nla(IPVS_SVC_ATTR_PROTOCOL, &u16le(6)),
        &nla(IPVS_SVC_ATTR_ADDR, &addr16(&[10, 0, 0, 1])),
        &nla(IPVS_SVC_ATTR_PORT, &[0, 80]),
        &nla(IPVS_SVC_ATTR_SCHED_NAME, b"rr\0"),
        // flags: HASHED (the kernel sets it on every live service), mask ~0
        &nla(IPVS_SVC_ATTR_FLAGS, &cat(&[&u32le(0x2), &u32le(!0)])),
        &nla(IPVS_SVC_ATTR_TIMEOUT, &u32le(0)),
        &nla(IPVS_SVC_ATTR_NETMASK, &[0xff, 0xff, 0xff, 0xff]),
        &nla(IPVS_SVC_ATTR_STATS, &stats32(100)),
        // an attribute from a future kernel: skipped
        &nla(99, &[1, 2, 3, 4, 5]),
    ]);
    if with_stats64 {
        v.extend(nla(IPVS_SVC_ATTR_STATS64, &stats64(5_000_000_000)));
    }
    v
}

#[test]
fn decode_service_dump_entry_with_stats() {
    let payload = genl(
        IPVS_CMD_NEW_SERVICE,
        &nla(IPVS_CMD_ATTR_SERVICE, &kernel_service_attrs(true)),
    );
    let datagram = cat(&[&nlmsg(FAMILY, NLM_F_MULTI, 42, &payload), &done(42)]);

    let msgs: Vec<_> = Messages::new(&datagram).collect::<Result<_, _>>().unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!((msgs[0].seq, msgs[0].flags), (42, NLM_F_MULTI));
    let Reply::Data {
        msg_type,
        payload: p,
    } = msgs[0].reply
    else {
        panic!("{:?}", msgs[0]);
    };
    assert_eq!(msg_type, FAMILY);
    assert_eq!(msgs[1].reply, Reply::Done { code: 0 });

    let msg = IpvsMessage::parse_genl(p).unwrap();
    let svc = msg.to_service().unwrap();
    let mut want = tcp_svc();
    want.stats = Some(expected_stats(5_000_000_000)); // STATS64 wins over STATS
    assert_eq!(svc, want);
    assert_eq!(svc.flags, ServiceFlags::NONE, "HASHED is stripped");

    // The raw attribute layer keeps what was sent, the unknown one included.
    let IpvsAttr::Service(attrs) = &msg.attrs[0] else {
        panic!()
    };
    assert!(attrs.contains(&ServiceAttr::Flags { flags: 2, mask: !0 }));
    assert!(attrs.iter().any(|a| matches!(a, ServiceAttr::Other(_))));
    assert!(attrs.contains(&ServiceAttr::Stats(Stats {
        conns: 101,
        inpkts: 102,
        outpkts: 103,
        inbytes: 104,
        outbytes: 105,
        cps: 106,
        inpps: 107,
        outpps: 108,
        inbps: 109,
        outbps: 110,
    })));
}

#[test]
fn decode_service_from_old_kernel_without_stats64_and_with_nested_flag() {
    // Older kernels have no STATS64; accept the NLA_F_NESTED bit as well.
    let payload = genl(
        IPVS_CMD_NEW_SERVICE,
        &nla(IPVS_CMD_ATTR_SERVICE | 0x8000, &kernel_service_attrs(false)),
    );
    let svc = IpvsMessage::parse_genl(&payload)
        .unwrap()
        .to_service()
        .unwrap();
    assert_eq!(
        svc.stats,
        Some(Stats {
            conns: 101,
            inpkts: 102,
            outpkts: 103,
            inbytes: 104,
            outbytes: 105,
            cps: 106,
            inpps: 107,
            outpps: 108,
            inbps: 109,
            outbps: 110,
        })
    );
}

#[test]
fn decode_v6_persistent_and_fwmark_services() {
    let v6 = cat(&[
        &nla(IPVS_SVC_ATTR_AF, &u16le(10)),
        &nla(IPVS_SVC_ATTR_PROTOCOL, &u16le(17)),
        &nla(
            IPVS_SVC_ATTR_ADDR,
            &[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        ),
        &nla(IPVS_SVC_ATTR_PORT, &[0, 53]),
        &nla(IPVS_SVC_ATTR_SCHED_NAME, b"sh\0"),
        &nla(IPVS_SVC_ATTR_PE_NAME, b"sip\0"),
        &nla(IPVS_SVC_ATTR_FLAGS, &cat(&[&u32le(0x3), &u32le(!0)])),
        &nla(IPVS_SVC_ATTR_TIMEOUT, &u32le(300)),
        &nla(IPVS_SVC_ATTR_NETMASK, &u32le(64)),
    ]);
    let svc = IpvsMessage::parse_genl(&genl(1, &nla(1, &v6)))
        .unwrap()
        .to_service()
        .unwrap();
    let mut want = udp6_svc();
    want.netmask = 64;
    want.pe_name = Some("sip".into());
    assert_eq!(svc, want);

    let fwm = cat(&[
        &nla(IPVS_SVC_ATTR_AF, &u16le(2)),
        &nla(IPVS_SVC_ATTR_FWMARK, &u32le(7)),
        &nla(IPVS_SVC_ATTR_SCHED_NAME, b"wlc\0"),
        &nla(IPVS_SVC_ATTR_FLAGS, &cat(&[&u32le(0x2), &u32le(!0)])),
        &nla(IPVS_SVC_ATTR_TIMEOUT, &u32le(0)),
        &nla(IPVS_SVC_ATTR_NETMASK, &[255, 255, 255, 0]),
    ]);
    let svc = IpvsMessage::parse_genl(&genl(1, &nla(1, &fwm)))
        .unwrap()
        .to_service()
        .unwrap();
    assert_eq!(
        svc.key,
        ServiceKey::Fwmark {
            ipv6: false,
            mark: 7
        }
    );
    assert_eq!(svc.scheduler, Scheduler::WeightedLeastConnection);
    assert_eq!(svc.netmask, 0xffff_ff00);
}

/// A destination as ip_vs_genl_fill_dest writes it.
fn kernel_dest_attrs() -> Vec<u8> {
    cat(&[
        &nla(IPVS_DEST_ATTR_ADDR, &addr16(&[10, 1, 0, 7])),
        &nla(IPVS_DEST_ATTR_PORT, &[0x1f, 0x90]),
        &nla(IPVS_DEST_ATTR_FWD_METHOD, &u32le(0)),
        &nla(IPVS_DEST_ATTR_WEIGHT, &u32le(2)),
        &nla(IPVS_DEST_ATTR_TUN_TYPE, &[0]),
        &nla(IPVS_DEST_ATTR_TUN_PORT, &[0, 0]),
        &nla(IPVS_DEST_ATTR_TUN_FLAGS, &u16le(0)),
        &nla(IPVS_DEST_ATTR_U_THRESH, &u32le(100)),
        &nla(IPVS_DEST_ATTR_L_THRESH, &u32le(10)),
        &nla(IPVS_DEST_ATTR_ACTIVE_CONNS, &u32le(3)),
        &nla(IPVS_DEST_ATTR_INACT_CONNS, &u32le(4)),
        &nla(IPVS_DEST_ATTR_PERSIST_CONNS, &u32le(5)),
        &nla(IPVS_DEST_ATTR_ADDR_FAMILY, &u16le(2)),
        &nla(IPVS_DEST_ATTR_STATS, &stats32(0)),
        &nla(IPVS_DEST_ATTR_STATS64, &stats64(1 << 40)),
        &nla(200, b"future"),
    ])
}

#[test]
fn decode_destination_entry() {
    let payload = genl(
        IPVS_CMD_NEW_DEST,
        &nla(IPVS_CMD_ATTR_DEST, &kernel_dest_attrs()),
    );
    let d = IpvsMessage::parse_genl(&payload)
        .unwrap()
        .to_destination(false)
        .unwrap();
    assert_eq!(
        d,
        Destination {
            addr: "10.1.0.7:8080".parse().unwrap(),
            forward: ForwardMethod::Masquerade,
            weight: 2,
            upper_threshold: 100,
            lower_threshold: 10,
            tunnel: TunnelConfig::default(),
            active_conns: 3,
            inactive_conns: 4,
            persist_conns: 5,
            stats: Some(expected_stats(1 << 40)),
        }
    );
}

#[test]
fn decode_destination_family_defaults_to_service_and_mixed_family() {
    // Pre-4.3 kernels send no ADDR_FAMILY: the service's family applies.
    let v6 = cat(&[
        &nla(
            IPVS_DEST_ATTR_ADDR,
            &[0xfd, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7],
        ),
        &nla(IPVS_DEST_ATTR_PORT, &[0, 53]),
        &nla(IPVS_DEST_ATTR_FWD_METHOD, &u32le(3)),
        &nla(IPVS_DEST_ATTR_WEIGHT, &u32le(1)),
        &nla(IPVS_DEST_ATTR_U_THRESH, &u32le(0)),
        &nla(IPVS_DEST_ATTR_L_THRESH, &u32le(0)),
        &nla(IPVS_DEST_ATTR_ACTIVE_CONNS, &u32le(0)),
        &nla(IPVS_DEST_ATTR_INACT_CONNS, &u32le(0)),
        &nla(IPVS_DEST_ATTR_PERSIST_CONNS, &u32le(0)),
    ]);
    let msg = IpvsMessage::parse_genl(&genl(IPVS_CMD_NEW_DEST, &nla(2, &v6))).unwrap();
    let d = msg.to_destination(true).unwrap();
    assert_eq!(d.addr, "[fd01::7]:53".parse::<SocketAddr>().unwrap());
    assert_eq!(d.forward, ForwardMethod::Route);
    assert_eq!(d.stats, None);
    // The same bytes under an IPv4 service read the first 4 bytes only.
    assert_eq!(
        msg.to_destination(false).unwrap().addr,
        "253.1.0.0:53".parse::<SocketAddr>().unwrap()
    );

    // Mixed family: an IPv4 tunnel destination under an IPv6 service (GUE, port 6080).
    let mixed = cat(&[&v6[..], &nla(IPVS_DEST_ATTR_ADDR_FAMILY, &u16le(2))]);
    let mut mixed = mixed.clone();
    mixed.extend(nla(IPVS_DEST_ATTR_ADDR, &addr16(&[10, 2, 0, 1])));
    mixed.extend(nla(IPVS_DEST_ATTR_TUN_TYPE, &[1]));
    mixed.extend(nla(IPVS_DEST_ATTR_TUN_PORT, &[0x17, 0xc0]));
    let d = IpvsMessage::parse_genl(&genl(IPVS_CMD_NEW_DEST, &nla(2, &mixed)))
        .unwrap()
        .to_destination(true)
        .unwrap();
    assert_eq!(d.addr, "10.2.0.1:53".parse::<SocketAddr>().unwrap());
    assert_eq!(
        d.tunnel,
        TunnelConfig {
            kind: 1,
            port: 6080,
            flags: 0
        }
    );
}

#[test]
fn decode_get_info_and_get_config_replies() {
    // GET_INFO is answered with IPVS_CMD_SET_INFO; its attribute numbers 1 and 2 are the
    // INFO ones, not IPVS_CMD_ATTR_SERVICE/DEST.
    let payload = genl(
        IPVS_CMD_SET_INFO,
        &cat(&[
            &nla(IPVS_INFO_ATTR_VERSION, &u32le(0x010201)),
            &nla(IPVS_INFO_ATTR_CONN_TAB_SIZE, &u32le(4096)),
        ]),
    );
    let info = IpvsMessage::parse_genl(&payload)
        .unwrap()
        .to_info()
        .unwrap();
    assert_eq!(
        info,
        Info {
            version: 0x010201,
            conn_tab_size: 4096
        }
    );
    assert_eq!(
        info.to_string(),
        "IP Virtual Server version 1.2.1 (size=4096)"
    );

    let payload = genl(
        IPVS_CMD_SET_CONFIG,
        &cat(&[
            &nla(IPVS_CMD_ATTR_TIMEOUT_TCP, &u32le(900)),
            &nla(IPVS_CMD_ATTR_TIMEOUT_TCP_FIN, &u32le(120)),
            &nla(IPVS_CMD_ATTR_TIMEOUT_UDP, &u32le(300)),
        ]),
    );
    let t = IpvsMessage::parse_genl(&payload)
        .unwrap()
        .to_timeouts()
        .unwrap();
    assert_eq!(
        t,
        Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300
        }
    );
}

#[test]
fn decode_acks_errors_with_extack_and_family_reply() {
    let ok = ack(5, 0);
    let m = Messages::new(&ok).next().unwrap().unwrap();
    assert_eq!((m.seq, m.reply), (5, Reply::Ack));

    // ESRCH with CAPPED|ACK_TLVS and an NLMSGERR_ATTR_MSG.
    let err = nlmsg(
        NLMSG_ERROR_T,
        0x300,
        6,
        &cat(&[
            &(-3i32).to_le_bytes(),
            &[0u8; 16],
            &nla(NLMSGERR_ATTR_MSG, b"no such service\0"),
        ]),
    );
    let m = Messages::new(&err).next().unwrap().unwrap();
    assert_eq!(
        m.reply,
        Reply::Error {
            errno: libc::ESRCH,
            extack: Some("no such service".into())
        }
    );

    // Uncapped: the whole request is echoed before the TLVs.
    let req = encode(FAMILY, 5, 7, IpvsMessage::del_service(&tcp_svc().key));
    let err = nlmsg(
        NLMSG_ERROR_T,
        0x200,
        7,
        &cat(&[
            &(-22i32).to_le_bytes(),
            &req,
            &nla(NLMSGERR_ATTR_MSG, b"bad attr\0"),
        ]),
    );
    let m = Messages::new(&err).next().unwrap().unwrap();
    assert_eq!(
        m.reply,
        Reply::Error {
            errno: libc::EINVAL,
            extack: Some("bad attr".into())
        }
    );

    // A malformed positive code, and the most negative one: errno stays positive, no
    // overflow (found by reading the code beside the fuzzer).
    for (code, want) in [(5i32, 5), (i32::MIN, i32::MAX)] {
        let err = nlmsg(
            NLMSG_ERROR_T,
            0x100,
            8,
            &cat(&[&code.to_le_bytes(), &[0u8; 16]]),
        );
        let m = Messages::new(&err).next().unwrap().unwrap();
        assert!(
            matches!(m.reply, Reply::Error { errno, .. } if errno == want),
            "{code}"
        );
    }

    // nlctrl's NEWFAMILY reply, with attributes our parser does not know about.
    let fam = nlmsg(
        GENL_ID_CTRL,
        0,
        1,
        &cat(&[
            &[1, 2, 0, 0],
            &nla(CTRL_ATTR_FAMILY_NAME, b"IPVS\0"),
            &nla(CTRL_ATTR_FAMILY_ID, &u16le(0x23)),
            &nla(CTRL_ATTR_VERSION, &u32le(1)),
            &nla(CTRL_ATTR_MAXATTR, &u32le(6)),
            &nla(6 | 0x8000, &nla(1, &nla(1, &u32le(1)))), // CTRL_ATTR_OPS
            &nla(250, b"?"),
        ]),
    );
    let m = Messages::new(&fam).next().unwrap().unwrap();
    let Reply::Data { msg_type, payload } = m.reply else {
        panic!()
    };
    assert_eq!(msg_type, GENL_ID_CTRL);
    assert_eq!(parse_family_id(payload).unwrap(), 0x23);
}

#[test]
fn service_and_destination_round_trip_through_the_attribute_layer() {
    for svc in [
        tcp_svc(),
        udp6_svc(),
        Service::new(
            ServiceKey::Fwmark {
                ipv6: true,
                mark: 9,
            },
            Scheduler::MaglevHashing,
        ),
    ] {
        let mut with_stats = service_attrs(&svc).unwrap();
        with_stats.push(ServiceAttr::Stats64(expected_stats(7)));
        let msg = IpvsMessage::new(IPVS_CMD_NEW_SERVICE, vec![IpvsAttr::Service(with_stats)]);
        let mut buf = vec![0; msg.buffer_len()];
        msg.emit(&mut buf);
        let back = IpvsMessage::parse(IPVS_CMD_NEW_SERVICE, &buf)
            .unwrap()
            .to_service()
            .unwrap();
        let mut want = svc.clone();
        want.stats = Some(expected_stats(7));
        assert_eq!(back, want);
    }
    let mut d = Destination::new("[fd01::7]:80".parse().unwrap(), 5);
    d.upper_threshold = 10;
    let msg = IpvsMessage::new(
        IPVS_CMD_NEW_DEST,
        vec![IpvsAttr::Dest(dest_attrs(&d).unwrap())],
    );
    let mut buf = vec![0; msg.buffer_len()];
    msg.emit(&mut buf);
    let parsed = IpvsMessage::parse(IPVS_CMD_NEW_DEST, &buf).unwrap();
    let IpvsAttr::Dest(attrs) = &parsed.attrs[0] else {
        panic!()
    };
    let mut attrs = attrs.clone();
    attrs.extend([
        DestAttr::ActiveConns(0),
        DestAttr::InactConns(0),
        DestAttr::PersistConns(0),
    ]);
    assert_eq!(dest_from_attrs(&attrs, false).unwrap(), d);
}

// ---- malformed input -----------------------------------------------------------------------

fn svc_payload(service_attrs: &[u8]) -> Vec<u8> {
    genl(
        IPVS_CMD_NEW_SERVICE,
        &nla(IPVS_CMD_ATTR_SERVICE, service_attrs),
    )
}

fn decode_service(payload: &[u8]) -> Result<Service, CodecError> {
    IpvsMessage::parse_genl(payload)?.to_service()
}

#[test]
fn malformed_netlink_framing_is_an_error() {
    let good = nlmsg(FAMILY, 0, 1, &svc_payload(&kernel_service_attrs(true)));
    // Every truncation of the datagram cuts the message short of its length field.
    for cut in 1..good.len() {
        let res: Result<Vec<_>, _> = Messages::new(&good[..cut]).collect();
        assert!(res.is_err(), "cut at {cut} accepted");
    }
    // Length field smaller than the header.
    let mut bad = good.clone();
    bad[..4].copy_from_slice(&8u32.to_le_bytes());
    assert!(Messages::new(&bad).next().unwrap().is_err());
    // Length field beyond the buffer.
    let mut bad = good.clone();
    bad[..4].copy_from_slice(&((good.len() + 4) as u32).to_le_bytes());
    assert!(Messages::new(&bad).next().unwrap().is_err());
    // After an error the walk stops.
    let mut it = Messages::new(&bad);
    it.next();
    assert!(it.next().is_none());
    // NLMSG_ERROR too short for its error code / the echoed header; NLMSG_DONE with 2 bytes.
    let short = nlmsg(NLMSG_ERROR_T, 0, 1, &[0xfe, 0xff]);
    assert!(matches!(
        Messages::new(&short).next().unwrap(),
        Err(CodecError::Truncated { .. })
    ));
    let short = nlmsg(
        NLMSG_ERROR_T,
        0,
        1,
        &cat(&[&(-2i32).to_le_bytes(), &[0u8; 8]]),
    );
    assert!(matches!(
        Messages::new(&short).next().unwrap(),
        Err(CodecError::Truncated { .. })
    ));
    let short = nlmsg(NLMSG_DONE_T, 0, 1, &[0, 0]);
    assert!(matches!(
        Messages::new(&short).next().unwrap(),
        Err(CodecError::Truncated { .. })
    ));
    // Extack offset beyond the payload (uncapped, echoed length lies).
    let mut orig = [0u8; 16];
    orig[..4].copy_from_slice(&200u32.to_le_bytes());
    let lying = nlmsg(
        NLMSG_ERROR_T,
        0x200,
        1,
        &cat(&[&(-22i32).to_le_bytes(), &orig]),
    );
    assert!(Messages::new(&lying).next().unwrap().is_err());
}

#[test]
fn malformed_attributes_are_errors() {
    // genl header cut short
    assert!(IpvsMessage::parse_genl(&[1, 1]).is_err());
    // attribute length larger than what is left
    let mut nest = kernel_service_attrs(false);
    nest[0] = 200;
    assert!(decode_service(&svc_payload(&nest)).is_err());
    // attribute length below the 4-byte header
    let mut nest = kernel_service_attrs(false);
    nest[0] = 2;
    assert!(decode_service(&svc_payload(&nest)).is_err());
    // outer nest truncated inside an inner attribute
    let payload = svc_payload(&kernel_service_attrs(false));
    assert!(IpvsMessage::parse_genl(&payload[..payload.len() - 40]).is_err());

    let with = |replace: u16, value: &[u8]| -> Vec<u8> {
        let base = [
            (IPVS_SVC_ATTR_AF, u16le(2)),
            (IPVS_SVC_ATTR_PROTOCOL, u16le(6)),
            (IPVS_SVC_ATTR_ADDR, addr16(&[10, 0, 0, 1])),
            (IPVS_SVC_ATTR_PORT, vec![0, 80]),
            (IPVS_SVC_ATTR_SCHED_NAME, b"rr\0".to_vec()),
            (IPVS_SVC_ATTR_FLAGS, cat(&[&u32le(2), &u32le(!0)])),
            (IPVS_SVC_ATTR_TIMEOUT, u32le(0)),
            (IPVS_SVC_ATTR_NETMASK, u32le(!0)),
        ];
        base.iter()
            .filter_map(|(k, v)| {
                if *k == replace {
                    (!value.is_empty()).then(|| nla(*k, value))
                } else {
                    Some(nla(*k, v))
                }
            })
            .flatten()
            .collect()
    };
    // sanity: the base decodes
    assert!(decode_service(&svc_payload(&with(0, &[]))).is_ok());
    let bad_len = |k, v: &[u8]| decode_service(&svc_payload(&with(k, v)));
    assert!(matches!(
        bad_len(IPVS_SVC_ATTR_PORT, &[0, 0, 80]),
        Err(CodecError::BadLength { .. })
    ));
    assert!(matches!(
        bad_len(IPVS_SVC_ATTR_ADDR, &[10, 0, 0, 1]),
        Err(CodecError::BadLength { .. })
    ));
    assert!(matches!(
        bad_len(IPVS_SVC_ATTR_AF, &[2, 0, 0, 0]),
        Err(CodecError::BadLength { .. })
    ));
    assert!(matches!(
        bad_len(IPVS_SVC_ATTR_FLAGS, &[0; 4]),
        Err(CodecError::BadLength { .. })
    ));
    assert!(matches!(
        bad_len(IPVS_SVC_ATTR_SCHED_NAME, b"rr"),
        Err(CodecError::Invalid { .. })
    ));
    assert!(matches!(
        bad_len(IPVS_SVC_ATTR_SCHED_NAME, b"0123456789abcdefgh\0"),
        Err(CodecError::BadLength { .. })
    ));
    assert!(matches!(
        bad_len(IPVS_SVC_ATTR_SCHED_NAME, b"\xff\xfe\0"),
        Err(CodecError::Invalid { .. })
    ));
    assert!(matches!(
        bad_len(IPVS_SVC_ATTR_AF, &u16le(7)),
        Err(CodecError::Invalid { .. })
    ));
    // missing mandatory attributes (an empty value drops the attribute)
    for k in [
        IPVS_SVC_ATTR_AF,
        IPVS_SVC_ATTR_PROTOCOL,
        IPVS_SVC_ATTR_ADDR,
        IPVS_SVC_ATTR_PORT,
        IPVS_SVC_ATTR_SCHED_NAME,
        IPVS_SVC_ATTR_FLAGS,
        IPVS_SVC_ATTR_TIMEOUT,
        IPVS_SVC_ATTR_NETMASK,
    ] {
        assert!(
            matches!(bad_len(k, &[]), Err(CodecError::Missing { .. })),
            "attribute {k} not required"
        );
    }
    // stats counter of 3 bytes
    let mut nest = with(0, &[]);
    nest.extend(nla(
        IPVS_SVC_ATTR_STATS,
        &nla(IPVS_STATS_ATTR_CONNS, &[1, 2, 3]),
    ));
    assert!(matches!(
        decode_service(&svc_payload(&nest)),
        Err(CodecError::BadLength { .. })
    ));
    // no service nest at all / wrong command
    assert!(matches!(
        IpvsMessage::parse_genl(&genl(IPVS_CMD_NEW_SERVICE, &[]))
            .unwrap()
            .to_service(),
        Err(CodecError::Missing { .. })
    ));
    let payload = genl(
        IPVS_CMD_NEW_DEST,
        &nla(IPVS_CMD_ATTR_SERVICE, &with(0, &[])),
    );
    assert!(matches!(
        decode_service(&payload),
        Err(CodecError::Invalid { .. })
    ));
}

#[test]
fn malformed_destination_and_info_are_errors() {
    let decode = |attrs: &[u8]| {
        IpvsMessage::parse_genl(&genl(IPVS_CMD_NEW_DEST, &nla(IPVS_CMD_ATTR_DEST, attrs)))
            .and_then(|m| m.to_destination(false))
    };
    assert!(decode(&kernel_dest_attrs()).is_ok());
    let mut bad = kernel_dest_attrs();
    bad.extend(nla(IPVS_DEST_ATTR_FWD_METHOD, &u32le(7)));
    assert!(matches!(decode(&bad), Err(CodecError::Invalid { .. })));
    let mut bad = kernel_dest_attrs();
    bad.extend(nla(IPVS_DEST_ATTR_TUN_TYPE, &[1, 0]));
    assert!(matches!(decode(&bad), Err(CodecError::BadLength { .. })));
    // drop WEIGHT (4th attribute, 8 bytes at offset 8+20+8... find it by walking)
    let attrs = kernel_dest_attrs();
    let mut without_weight = Vec::new();
    let mut pos = 0;
    while pos < attrs.len() {
        let len = u16::from_le_bytes([attrs[pos], attrs[pos + 1]]) as usize;
        let kind = u16::from_le_bytes([attrs[pos + 2], attrs[pos + 3]]);
        let padded = (len + 3) & !3;
        if kind != IPVS_DEST_ATTR_WEIGHT {
            without_weight.extend_from_slice(&attrs[pos..pos + padded]);
        }
        pos += padded;
    }
    assert!(matches!(
        decode(&without_weight),
        Err(CodecError::Missing {
            attr: "IPVS_DEST_ATTR_WEIGHT",
            ..
        })
    ));

    let info = genl(
        IPVS_CMD_SET_INFO,
        &nla(IPVS_INFO_ATTR_VERSION, &u32le(0x010201)),
    );
    assert!(matches!(
        IpvsMessage::parse_genl(&info).unwrap().to_info(),
        Err(CodecError::Missing { .. })
    ));
    let info = genl(IPVS_CMD_SET_INFO, &nla(IPVS_INFO_ATTR_VERSION, &u16le(1)));
    assert!(IpvsMessage::parse_genl(&info).is_err());
}

#[test]
fn corrupting_any_byte_never_panics() {
    let base = cat(&[
        &nlmsg(
            FAMILY,
            NLM_F_MULTI,
            1,
            &svc_payload(&kernel_service_attrs(true)),
        ),
        &nlmsg(
            FAMILY,
            NLM_F_MULTI,
            1,
            &genl(
                IPVS_CMD_NEW_DEST,
                &nla(IPVS_CMD_ATTR_DEST, &kernel_dest_attrs()),
            ),
        ),
        &ack(1, -2),
        &done(1),
    ]);
    let mut decoded_ok = 0;
    for i in 0..base.len() {
        for v in [0x00, 0xff, 0x03, 0x80] {
            let mut buf = base.clone();
            buf[i] = v;
            for m in Messages::new(&buf) {
                let Ok(m) = m else { break };
                if let Reply::Data { payload, .. } = m.reply {
                    if let Ok(msg) = IpvsMessage::parse_genl(payload) {
                        let _ = msg.to_service();
                        if msg.to_destination(false).is_ok() {
                            decoded_ok += 1;
                        }
                    }
                }
            }
        }
    }
    // Some corruptions (counter values) are still valid messages; the point is no panic.
    assert!(decoded_ok > 0);
}

// ---- errors ---------------------------------------------------------------------------------

#[test]
fn kernel_errors_read_like_ipvsadm() {
    let e = IpvsError::kernel(
        OpKind::DeleteService,
        "TCP  10.0.0.1:80".into(),
        libc::ESRCH,
        None,
    );
    assert!(e.is_not_found());
    assert_eq!(e.errno(), Some(libc::ESRCH));
    let text = e.to_string();
    assert!(
        text.starts_with("delete service TCP  10.0.0.1:80: no such service (errno 3"),
        "{text}"
    );
    let e = IpvsError::kernel(
        OpKind::DeleteDestination,
        "x".into(),
        libc::ENOENT,
        Some("hint".into()),
    );
    assert!(e.is_not_found());
    assert!(
        e.to_string().contains("no such destination")
            && e.to_string().ends_with("kernel says: hint")
    );
    let e = IpvsError::kernel(OpKind::AddService, "x".into(), libc::ENOENT, None);
    assert!(!e.is_not_found(), "ENOENT on add is an unknown scheduler");
    assert!(e.to_string().contains("scheduler"));
    let e = IpvsError::kernel(OpKind::AddDestination, "x".into(), libc::EEXIST, None);
    assert!(e.is_already_exists());
    let e = IpvsError::NotAvailable(io::Error::from_raw_os_error(libc::ENOENT));
    assert!(e
        .to_string()
        .starts_with("IPVS is not available in this kernel"));
    assert!(e.to_string().contains("modprobe ip_vs") && e.to_string().contains("5.16"));
}

// ---- client against a scripted fake kernel --------------------------------------------------

type Script = Box<dyn FnMut(u16, u32, &[u8]) -> Vec<Vec<u8>> + Send>;

/// Answers each request in a sent buffer via `script(msg_type, seq, genl payload)`, which
/// returns the reply messages; replies are delivered `per_datagram` messages at a time.
struct FakeKernel {
    script: Script,
    queue: VecDeque<Vec<u8>>,
    per_datagram: usize,
    log: Arc<Mutex<Vec<usize>>>, // requests per send
}

impl Transport for FakeKernel {
    fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut replies = Vec::new();
        let mut count = 0;
        for m in Messages::new(buf) {
            let m = m.map_err(|e| io::Error::other(e.to_string()))?;
            let Reply::Data { msg_type, payload } = m.reply else {
                return Err(io::Error::other("not a request"));
            };
            count += 1;
            replies.extend((self.script)(msg_type, m.seq, payload));
        }
        self.log.lock().unwrap().push(count);
        for chunk in replies.chunks(self.per_datagram.max(1)) {
            self.queue.push_back(chunk.concat());
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let d = self
            .queue
            .pop_front()
            .ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))?;
        let n = d.len().min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        Ok(d.len())
    }
}

fn family_reply(seq: u32) -> Vec<Vec<u8>> {
    vec![
        nlmsg(
            GENL_ID_CTRL,
            0,
            seq,
            &cat(&[&[1, 2, 0, 0], &nla(CTRL_ATTR_FAMILY_ID, &u16le(FAMILY))]),
        ),
        ack(seq, 0),
    ]
}

fn fake(
    per_datagram: usize,
    mut script: impl FnMut(u8, u32, &[u8]) -> Vec<Vec<u8>> + Send + 'static,
) -> (IpvsClient, Arc<Mutex<Vec<usize>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let kernel = FakeKernel {
        script: Box::new(move |ty, seq, payload| {
            if ty == GENL_ID_CTRL {
                return family_reply(seq);
            }
            assert_eq!(ty, FAMILY, "request to the resolved family id");
            script(payload[0], seq, payload)
        }),
        queue: VecDeque::new(),
        per_datagram,
        log: Arc::clone(&log),
    };
    let client = IpvsClient::with_transport(Box::new(kernel)).unwrap();
    (client, log)
}

#[test]
fn client_resolves_family_and_reports_missing_ipvs() {
    let (client, log) = fake(8, |_, _, _| vec![]);
    assert_eq!(client.family_id(), FAMILY);
    assert_eq!(*log.lock().unwrap(), [1]);

    let kernel = FakeKernel {
        script: Box::new(|_, seq, _| vec![ack(seq, -libc::ENOENT)]),
        queue: VecDeque::new(),
        per_datagram: 1,
        log: Arc::default(),
    };
    let err = IpvsClient::with_transport(Box::new(kernel)).unwrap_err();
    assert!(matches!(err, IpvsError::NotAvailable(_)), "{err}");
    assert!(err.to_string().contains("modprobe ip_vs"));
}

#[test]
fn client_pipelines_a_batch_and_matches_acks_by_sequence() {
    // The kernel: a stale ACK first, then one reply per request; the DEL_DEST fails (ESRCH).
    let mut first = true;
    let (mut client, log) = fake(2, move |cmd, seq, _| {
        let mut out = Vec::new();
        if std::mem::take(&mut first) {
            out.push(ack(seq.wrapping_sub(100), -libc::EPERM));
        }
        out.push(match cmd {
            IPVS_CMD_DEL_DEST => ack(seq, -libc::ESRCH),
            _ => ack(seq, 0),
        });
        out
    });
    let svc = tcp_svc();
    let d = Destination::new("10.1.0.7:8080".parse().unwrap(), 1);
    let mut bad = tcp_svc();
    bad.scheduler = Scheduler::Other("x".repeat(40));
    let reqs = vec![
        Request::AddService(svc.clone()),
        Request::AddService(bad), // invalid: never sent
        Request::AddDestination(svc.key, d.clone()),
        Request::DeleteDestination(svc.key, "10.9.9.9:1".parse().unwrap()),
        Request::Flush,
    ];
    let res = client.apply(&reqs);
    assert_eq!(res.len(), 5);
    assert!(res[0].is_ok());
    assert!(matches!(res[1], Err(IpvsError::Invalid(_))));
    assert!(res[2].is_ok());
    let err = res[3].as_ref().unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(
        err.to_string().contains("TCP  10.0.0.1:80 -> 10.9.9.9:1"),
        "{err}"
    );
    assert!(res[4].is_ok());
    // family lookup, then the 4 valid requests in ONE send
    assert_eq!(*log.lock().unwrap(), [1, 4]);

    // More than PIPELINE_DEPTH requests: ceil(n / depth) sends.
    let many: Vec<Request> = (0..(2 * PIPELINE_DEPTH + 3))
        .map(|i| {
            Request::DeleteService(ServiceKey::tcp(SocketAddr::from(([10, 0, 0, 1], i as u16))))
        })
        .collect();
    let res = client.apply(&many);
    assert!(res.iter().all(|r| r.is_ok()));
    assert_eq!(
        log.lock().unwrap()[2..],
        [PIPELINE_DEPTH, PIPELINE_DEPTH, 3]
    );

    // single-op helpers
    client.add_service(&svc).unwrap();
    let err = client
        .delete_destination(&svc, "10.1.0.1:1".parse().unwrap())
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::ESRCH));
}

#[test]
fn client_reads_dumps_across_datagrams_and_drains_after_a_bad_entry() {
    let entry = |seq: u32, port: u8| {
        let mut attrs = kernel_service_attrs(false);
        attrs[36 + 4 + 1] = port; // PORT value, low byte (AF 8 + PROTO 8 + ADDR 20, header 4)
        nlmsg(FAMILY, NLM_F_MULTI, seq, &svc_payload(&attrs))
    };
    let mut round = 0;
    let (mut client, _) = fake(2, move |cmd, seq, _| {
        round += 1;
        match (cmd, round) {
            (IPVS_CMD_GET_SERVICE, 1) => {
                vec![entry(seq, 80), entry(seq, 81), entry(seq, 82), done(seq)]
            }
            (IPVS_CMD_GET_SERVICE, 2) => vec![
                nlmsg(
                    FAMILY,
                    NLM_F_MULTI,
                    seq,
                    &svc_payload(&nla(IPVS_SVC_ATTR_AF, &[1])),
                ),
                entry(seq, 83),
                done(seq),
            ],
            (IPVS_CMD_GET_INFO, _) => vec![
                nlmsg(
                    FAMILY,
                    0,
                    seq,
                    &genl(
                        IPVS_CMD_SET_INFO,
                        &cat(&[
                            &nla(IPVS_INFO_ATTR_VERSION, &u32le(0x010201)),
                            &nla(IPVS_INFO_ATTR_CONN_TAB_SIZE, &u32le(4096)),
                        ]),
                    ),
                ),
                ack(seq, 0),
            ],
            (IPVS_CMD_GET_DEST, _) => vec![
                nlmsg(
                    FAMILY,
                    NLM_F_MULTI,
                    seq,
                    &genl(
                        IPVS_CMD_NEW_DEST,
                        &nla(IPVS_CMD_ATTR_DEST, &kernel_dest_attrs()),
                    ),
                ),
                done(seq),
            ],
            _ => vec![ack(seq, -libc::EPERM)],
        }
    });
    let services = client.services().unwrap();
    let ports: Vec<u16> = services
        .iter()
        .map(|s| match s.key {
            ServiceKey::Addr { addr, .. } => addr.port(),
            _ => 0,
        })
        .collect();
    assert_eq!(ports, [80, 81, 82]);

    let err = client.services().unwrap_err();
    assert!(
        matches!(err, IpvsError::Codec(CodecError::BadLength { .. })),
        "{err}"
    );
    // Nothing left over: the next request gets its own reply.
    assert_eq!(client.info().unwrap().conn_tab_size, 4096);
    let dests = client.destinations(&services[0]).unwrap();
    assert_eq!(dests.len(), 1);
    assert_eq!(
        dests[0].addr,
        "10.1.0.7:8080".parse::<SocketAddr>().unwrap()
    );
    let err = client.timeouts().unwrap_err();
    assert_eq!(err.errno(), Some(libc::EPERM));
    assert!(err.to_string().contains("permission denied"), "{err}");
}
