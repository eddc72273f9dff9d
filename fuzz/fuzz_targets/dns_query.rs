//! The DNS responder's query handling (`dns::DnsHandle::answer`, what the UDP and TCP
//! listeners call for every message) over a fixed set of zones: per-cluster zones with
//! ClusterIP, headless (v4 and v6) and SRV names, a service too large for any UDP answer, the
//! merged clusterset zone, an empty remote and a stale remote (SERVFAIL).
//!
//! Input: one wire-format DNS message, answered once as if over UDP and once over TCP.
//!
//! Asserts, besides "no panic" (`counters().panics` stays 0: `answer` catches panics):
//! - nothing is sent for a message shorter than a header or with QR set; everything else is
//!   answered, and the answer decodes, has the query's id, QR set and no more than the limit
//!   (UDP: 512 without EDNS, else the advertised size clamped to 512..=4096; TCP: 65535);
//! - undecodable -> bare FORMERR header; other opcodes NOTIMP; not exactly one question
//!   FORMERR; EDNS version != 0 BADVERS; classes other than IN/ANY REFUSED;
//! - otherwise the answer is the zone's (`Zones::lookup`): same rcode and AA bit, the question
//!   echoed, every answer record owned by the query name and of the asked type (ANY: one
//!   of A/AAAA/SRV/SOA), all answers or (UDP only) none with TC set, additionals all or none,
//!   the SOA in the authority section exactly for negative answers, an OPT record exactly
//!   when the query had one;
//! - the same query gets the same bytes again.
#![no_main]

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};
use libfuzzer_sys::fuzz_target;
use sdn_tunnel::dns::server::Transport;
use sdn_tunnel::dns::{DnsHandle, Zones};
use sdn_tunnel::model::DesiredService;
use sdn_tunnel::source::{Endpoint, EndpointPort, Protocol, RemoteService, ServicePort};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

const TTL: u32 = 5;

fn port(name: &str, port: u16, protocol: Protocol) -> ServicePort {
    ServicePort {
        name: name.into(),
        port,
        protocol,
    }
}

fn endpoints(ips: impl Iterator<Item = IpAddr>, ports: &[ServicePort]) -> Vec<Endpoint> {
    ips.enumerate()
        .map(|(i, ip)| Endpoint {
            ip,
            node_name: Some(format!("node{}", i % 3)),
            ready: i % 7 != 6,
            serving: true,
            terminating: i % 7 == 6,
            ports: ports
                .iter()
                .map(|p| EndpointPort {
                    name: p.name.clone(),
                    port: p.port + 8000,
                    protocol: p.protocol,
                })
                .collect::<Vec<_>>()
                .into(),
        })
        .collect()
}

fn svc(remote: &str, ns: &str, name: &str, ips: &[&str], eps: Vec<Endpoint>) -> DesiredService {
    let ports = vec![
        port("http", 80, Protocol::Tcp),
        port("dns", 53, Protocol::Udp),
        port("", 9090, Protocol::Tcp),
    ];
    DesiredService {
        remote: remote.into(),
        service: RemoteService {
            namespace: ns.into(),
            name: name.into(),
            cluster_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            headless: ips.is_empty(),
            ports,
            affinity_timeout: None,
            endpoints: eps,
            exported_since: None,
            internal_traffic_policy: None,
            traffic_distribution: None,
        },
    }
}

fn handle() -> &'static DnsHandle {
    static H: OnceLock<DnsHandle> = OnceLock::new();
    H.get_or_init(|| {
        let ports = [
            port("http", 80, Protocol::Tcp),
            port("dns", 53, Protocol::Udp),
        ];
        let v4 =
            |n: u32| (0..n).map(|i| IpAddr::from([10, 132, (i / 250) as u8, (i % 250) as u8 + 1]));
        let v6 = |n: u32| {
            (0..n).map(|i| {
                IpAddr::from(std::net::Ipv6Addr::from(
                    (0xfd00_0132u128 << 96) | u128::from(i + 1),
                ))
            })
        };
        let services = vec![
            svc(
                "b",
                "ns",
                "web",
                &["10.101.0.10", "fd00:101::10"],
                endpoints(v4(3), &ports),
            ),
            svc("b", "ns", "big", &[], endpoints(v4(40), &ports)),
            svc("b", "ns", "huge", &[], endpoints(v4(300), &ports)),
            svc("b", "ns", "six", &[], endpoints(v6(5), &ports)),
            svc("b", "Other-NS", "Mixed-Case", &["10.101.0.11"], vec![]),
            svc("c", "ns", "web", &["10.102.0.10"], endpoints(v4(2), &ports)),
            svc("c", "db", "pg", &[], endpoints(v6(3).chain(v4(2)), &ports)),
            svc("stale", "ns", "web", &["10.103.0.10"], vec![]),
            // not a DNS name: skipped by the index
            svc("b", "ns", "bad name", &["10.101.0.12"], vec![]),
        ];
        let zones = Zones::build_with_stale(
            &["b", "c", "empty"],
            &["stale"],
            &services,
            "clusterset.local",
            TTL,
        );
        DnsHandle::new(zones)
    })
}

fn check(h: &DnsHandle, query: &[u8], transport: Transport) {
    let mut out = Vec::new();
    let sent = h.answer(query, transport, &mut out);
    assert_eq!(h.counters().panics, 0);
    if query.len() < 12 || query[2] & 0x80 != 0 {
        assert!(!sent, "answered a response or a runt");
        return;
    }
    assert!(sent, "no answer to a query");
    let limit = match transport {
        Transport::Tcp => 65535,
        Transport::Udp => 512,
    };
    assert!(out.len() <= 65535);
    let r = Message::from_vec(&out).expect("our answer decodes");
    let m = &r.metadata;
    assert_eq!(m.id, u16::from_be_bytes([query[0], query[1]]));
    assert_eq!(m.message_type, MessageType::Response);
    assert_eq!(m.recursion_desired, query[2] & 1 != 0);
    let header_only = |rcode: ResponseCode| {
        assert_eq!(out.len(), 12, "{rcode}: header only");
        assert_eq!(m.response_code, rcode);
    };
    let Ok(q) = Message::from_vec(query) else {
        return header_only(ResponseCode::FormErr);
    };
    if q.metadata.op_code != OpCode::Query {
        return header_only(ResponseCode::NotImp);
    }
    if q.queries.len() != 1 {
        return header_only(ResponseCode::FormErr);
    }
    let question = &q.queries[0];
    let limit = match (&transport, &q.edns) {
        (Transport::Udp, Some(e)) => usize::from(e.max_payload().clamp(512, 4096)),
        _ => limit,
    };
    assert!(
        out.len() <= limit,
        "{} bytes over {transport:?} with a limit of {limit}",
        out.len()
    );
    assert_eq!(r.queries.len(), 1);
    assert_eq!(r.queries[0], *question);
    assert_eq!(r.queries[0].name().to_string(), question.name().to_string());
    assert_eq!(r.edns.is_some(), q.edns.is_some());
    if let Some(e) = &r.edns {
        assert_eq!(e.max_payload(), 1232);
    }
    let no_records = |r: &Message| {
        assert!(r.answers.is_empty() && r.authorities.is_empty() && r.additionals.is_empty());
    };
    if q.edns.as_ref().is_some_and(|e| e.version() != 0) {
        // 16 is both BADVERS and BADSIG; hickory decodes it as BADSIG.
        assert_eq!(u16::from(m.response_code), u16::from(ResponseCode::BADVERS));
        return no_records(&r);
    }
    let class = question.query_class();
    let zones = h.zones();
    let ans = zones.lookup(question.name(), question.query_type());
    if class != DNSClass::IN && class != DNSClass::ANY {
        assert_eq!(m.response_code, ResponseCode::Refused);
        return no_records(&r);
    }
    assert_eq!(m.response_code, ans.rcode);
    assert_eq!(m.authoritative, ans.authoritative);
    if m.truncation {
        assert_eq!(transport, Transport::Udp, "TC over TCP for our small zones");
        assert!(!ans.answers.is_empty(), "TC on an answer without records");
        return no_records(&r);
    }
    assert_eq!(r.answers.len(), ans.answers.len());
    assert!(r.additionals.is_empty() || r.additionals.len() == ans.additionals.len());
    assert_eq!(r.authorities.len(), usize::from(ans.authority.is_some()));
    if !r.answers.is_empty() {
        assert_eq!(m.response_code, ResponseCode::NoError);
        assert!(m.authoritative);
    }
    let qtype = question.query_type();
    for rec in &r.answers {
        assert_eq!(rec.name, *question.name(), "answer owned by another name");
        assert_eq!(rec.ttl, TTL);
        let t = rec.record_type();
        match qtype {
            RecordType::ANY => assert!(matches!(
                t,
                RecordType::A | RecordType::AAAA | RecordType::SRV | RecordType::SOA
            )),
            _ => assert_eq!(t, qtype),
        }
    }
    for rec in &r.additionals {
        assert!(matches!(
            rec.record_type(),
            RecordType::A | RecordType::AAAA
        ));
    }
    for rec in &r.authorities {
        assert_eq!(rec.record_type(), RecordType::SOA);
        assert!(r.answers.is_empty());
    }
}

fuzz_target!(|query: &[u8]| {
    let h = handle();
    check(h, query, Transport::Udp);
    check(h, query, Transport::Tcp);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let sa = h.answer(query, Transport::Udp, &mut a);
    let sb = h.answer(query, Transport::Udp, &mut b);
    assert_eq!((sa, &a), (sb, &b), "same query, different answers");
    let _: Arc<Zones> = h.zones();
});
