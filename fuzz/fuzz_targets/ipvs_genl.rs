//! The IPVS generic-netlink codec (`proxy::ipvs`): what the client does with a datagram the
//! kernel sent. The netlink walk (`netlink::Messages`: nlmsghdr framing, ACK/NACK with
//! extended-ACK TLVs, DONE), then for every family message the generic-netlink decode
//! (`IpvsMessage::parse_genl`) and the typed views (`to_service`, `to_destination`, `to_info`,
//! `to_timeouts`, `parse_family_id`). The input is also decoded as a bare genl payload, so
//! mutations reach the attribute parser without having to keep an nlmsghdr consistent.
//!
//! Asserts:
//! - the walk ends, yields at most one message per 16 bytes, nothing after an error, no
//!   NOOP/ERROR/DONE/OVERRUN as data, a payload
//!   inside the datagram; an ACK is code 0 and an error never has errno 0;
//! - attribute round trip: a decoded message, encoded again (`Emitable`, inside a full request
//!   made by `netlink::push_request`) and walked and decoded again, is the same message (the
//!   32-bit `*_ATTR_STATS` counters compared modulo 2^32, as that layout carries them, and
//!   unknown attributes without their NLA_F_* flags, which netlink-packet-core 0.9 does not
//!   re-emit faithfully when both are set);
//! - typed round trip: a decoded service (scheduler and PE names the kernel accepts) re-encoded
//!   as NEW_SERVICE decodes to the same service (without counters); a destination (weight up to
//!   i32::MAX) re-encoded decodes to the same destination (tunnel settings only where the
//!   encoder sends them); timeouts through SET_CONFIG likewise;
//! - decoded services never carry the kernel's HASHED flag, and a fwmark key is never mark 0.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netlink_packet_core::{DefaultNla, Emitable, Nla, NLA_TYPE_MASK};
use sdn_tunnel::proxy::ipvs::codec::{dest_attrs, DestAttr, IpvsAttr, IpvsMessage, ServiceAttr};
use sdn_tunnel::proxy::ipvs::consts::IPVS_CMD_NEW_DEST;
use sdn_tunnel::proxy::ipvs::netlink::{parse_family_id, push_request, Messages, Reply};
use sdn_tunnel::proxy::ipvs::{ForwardMethod, ServiceFlags, ServiceKey, Stats, TunnelConfig};

const FAMILY: u16 = 0x1c;

/// `*_ATTR_STATS` carries the counters as u32 (the byte counts as u64).
fn stats32(s: &Stats) -> Stats {
    let t = |v: u64| v & 0xffff_ffff;
    Stats {
        conns: t(s.conns),
        inpkts: t(s.inpkts),
        outpkts: t(s.outpkts),
        inbytes: s.inbytes,
        outbytes: s.outbytes,
        cps: t(s.cps),
        inpps: t(s.inpps),
        outpps: t(s.outpps),
        inbps: t(s.inbps),
        outbps: t(s.outbps),
    }
}

/// netlink-packet-core 0.9 re-emits an attribute carrying both NLA_F_NESTED and
/// NLA_F_NET_BYTEORDER without the latter; unknown attributes are compared without flags.
fn plain(nla: &DefaultNla) -> DefaultNla {
    let mut value = vec![0u8; nla.value_len()];
    nla.emit_value(&mut value);
    DefaultNla::new(nla.kind() & NLA_TYPE_MASK, value)
}

fn normalized(msg: &IpvsMessage) -> IpvsMessage {
    let attrs = msg
        .attrs
        .iter()
        .map(|a| match a {
            IpvsAttr::Service(list) => IpvsAttr::Service(
                list.iter()
                    .map(|s| match s {
                        ServiceAttr::Stats(st) => ServiceAttr::Stats(stats32(st)),
                        ServiceAttr::Other(n) => ServiceAttr::Other(plain(n)),
                        other => other.clone(),
                    })
                    .collect(),
            ),
            IpvsAttr::Dest(list) => IpvsAttr::Dest(
                list.iter()
                    .map(|d| match d {
                        DestAttr::Stats(st) => DestAttr::Stats(stats32(st)),
                        DestAttr::Other(n) => DestAttr::Other(plain(n)),
                        other => other.clone(),
                    })
                    .collect(),
            ),
            IpvsAttr::Other(n) => IpvsAttr::Other(plain(n)),
            other => other.clone(),
        })
        .collect();
    IpvsMessage::new(msg.cmd, attrs)
}

/// A full request (nlmsghdr + genl header + attributes), walked and decoded again.
fn through_the_wire(msg: IpvsMessage) -> IpvsMessage {
    let mut buf = Vec::new();
    let n = push_request(&mut buf, FAMILY, 0x5, 77, msg);
    assert_eq!(n, buf.len());
    let mut walk = Messages::new(&buf);
    let m = walk
        .next()
        .expect("one message")
        .expect("our framing walks");
    assert!(walk.next().is_none());
    assert_eq!(m.seq, 77);
    let Reply::Data { msg_type, payload } = m.reply else {
        panic!("{m:?}");
    };
    assert_eq!(msg_type, FAMILY);
    IpvsMessage::parse_genl(payload).expect("our encoding decodes")
}

fn check_message(msg: &IpvsMessage) {
    // Re-encoding a hostile message can make a nest longer than its u16 length field (e.g.
    // empty STATS nests re-emitted with all ten counters); the agent never encodes what it
    // decoded, so only messages whose attributes fit are round-tripped.
    if msg.attrs.iter().all(|a| a.value_len() <= 60_000) {
        let want = normalized(msg);
        assert_eq!(
            normalized(&through_the_wire(msg.clone())),
            want,
            "attribute round trip"
        );
        // Emitable on its own: the same bytes as inside the request.
        let mut bytes = vec![0u8; msg.buffer_len()];
        msg.emit(&mut bytes);
        assert_eq!(
            normalized(&IpvsMessage::parse(msg.cmd, &bytes).unwrap()),
            want
        );
    }

    if let Ok(svc) = msg.to_service() {
        assert_eq!(svc.flags.bits() & ServiceFlags::HASHED.bits(), 0);
        if let ServiceKey::Fwmark { mark, .. } = svc.key {
            assert_ne!(mark, 0);
        }
        if let Ok(m) = IpvsMessage::new_service(&svc) {
            let back = through_the_wire(m)
                .to_service()
                .expect("our service decodes");
            let mut want = svc.clone();
            want.stats = None;
            assert_eq!(back, want, "service round trip");
        } else {
            // Only names the kernel would refuse make the encoder fail.
            let bad = |s: &str| s.is_empty() || s.len() > 15 || s.contains('\0');
            assert!(
                bad(svc.scheduler.name()) || svc.pe_name.as_deref().is_some_and(bad),
                "{svc:?} not encodable"
            );
        }
    }
    for v6 in [false, true] {
        let Ok(d) = msg.to_destination(v6) else {
            continue;
        };
        assert_eq!(d.addr.is_ipv6(), d.ip().is_ipv6());
        match dest_attrs(&d) {
            Ok(mut attrs) => {
                // Read-only counters are not sent, but mandatory in a reply.
                attrs.extend([
                    DestAttr::ActiveConns(d.active_conns),
                    DestAttr::InactConns(d.inactive_conns),
                    DestAttr::PersistConns(d.persist_conns),
                ]);
                let m = IpvsMessage::new(IPVS_CMD_NEW_DEST, vec![IpvsAttr::Dest(attrs)]);
                let back = through_the_wire(m)
                    .to_destination(v6)
                    .expect("our destination decodes");
                let mut want = d.clone();
                want.stats = None;
                if want.forward != ForwardMethod::Tunnel {
                    want.tunnel = TunnelConfig::default();
                }
                assert_eq!(back, want, "destination round trip");
            }
            Err(_) => assert!(d.weight > i32::MAX as u32, "{d:?} not encodable"),
        }
    }
    if let Ok(info) = msg.to_info() {
        let _ = info.to_string();
        let _ = info.version_triple();
    }
    if let Ok(t) = msg.to_timeouts() {
        let back = through_the_wire(IpvsMessage::set_config(&t))
            .to_timeouts()
            .unwrap();
        assert_eq!(back, t, "timeouts round trip");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut n = 0;
    let mut errored = false;
    for m in Messages::new(data) {
        assert!(!errored, "a message after a framing error");
        n += 1;
        assert!(n <= data.len() / 16 + 1, "more messages than headers fit");
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                let _ = e.to_string();
                errored = true;
                continue;
            }
        };
        match m.reply {
            Reply::Error { errno, extack } => {
                assert_ne!(errno, 0, "an ACK reported as an error");
                if let Some(x) = extack {
                    assert!(!x.contains('\0'));
                }
            }
            Reply::Data { msg_type, payload } => {
                assert!(
                    !(1..=4).contains(&msg_type),
                    "control message {msg_type} as data"
                );
                assert!(payload.len() + 16 <= data.len());
                let _ = parse_family_id(payload);
                match IpvsMessage::parse_genl(payload) {
                    Ok(msg) => check_message(&msg),
                    Err(e) => {
                        let _ = e.to_string();
                    }
                }
            }
            Reply::Ack | Reply::Done { .. } | Reply::Noop | Reply::Overrun => {}
        }
    }
    if let Ok(msg) = IpvsMessage::parse_genl(data) {
        check_message(&msg);
    }
});
