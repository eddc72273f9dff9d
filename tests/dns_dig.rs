//! The DNS responder against the real `dig` (dnsutils): answers, negative answers, truncation
//! and TCP fallback, zone swaps, and hostile input on a raw UDP socket. Runs the server
//! in-process on 127.0.0.1 (no root needed).

mod common;

use common::dig::{flags, status};
use common::dns::service;

use sdn_tunnel::dns::{DnsHandle, DnsServer, Zones, DEFAULT_CLUSTERSET_DOMAIN, DEFAULT_TTL};
use sdn_tunnel::model::{build, DesiredService};
use sdn_tunnel::source::Endpoint;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

fn endpoint(ip: String, ready: bool) -> Endpoint {
    let ep = build::endpoint(&ip).on_node("n1");
    if ready {
        ep
    } else {
        ep.not_ready()
    }
}

fn services(web_ip: &str) -> Vec<DesiredService> {
    vec![
        service(
            "b",
            "web",
            &[web_ip],
            vec![endpoint("10.132.0.5".into(), true)],
        ),
        service("b", "dual", &["10.101.0.11", "fd00:101::11"], vec![]),
        service(
            "b",
            "db",
            &[],
            vec![
                endpoint("10.132.1.1".into(), true),
                endpoint("10.132.1.2".into(), true),
                endpoint("10.132.1.3".into(), false),
            ],
        ),
        service(
            "b",
            "big",
            &[],
            (0..200)
                .map(|i| endpoint(format!("10.132.{}.{}", 10 + i / 100, i % 100 + 1), true))
                .collect(),
        ),
        service("c", "web", &["10.201.0.10"], vec![]),
    ]
}

fn zones(web_ip: &str) -> Zones {
    Zones::build(&services(web_ip), DEFAULT_CLUSTERSET_DOMAIN, DEFAULT_TTL)
}

struct Running {
    _rt: tokio::runtime::Runtime,
    handle: DnsHandle,
    addr: SocketAddr,
}

fn start() -> Running {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let handle = DnsHandle::new(zones("10.101.0.10"));
    let server = rt
        .block_on(DnsServer::bind(
            "127.0.0.1:0".parse().unwrap(),
            handle.clone(),
        ))
        .expect("bind");
    let addr = server.local_addr().unwrap();
    rt.spawn(server.run());
    Running {
        _rt: rt,
        handle,
        addr,
    }
}

/// `dig @127.0.0.1 -p PORT <args>`; returns stdout.
fn dig(r: &Running, args: &[&str]) -> String {
    common::dig::dig(r.addr, 2, args)
}

/// Record lines of a section ("ANSWER", "AUTHORITY", "ADDITIONAL"): (name, ttl, type, rdata).
fn section(out: &str, name: &str) -> Vec<(String, u32, String, String)> {
    let header = format!(";; {name} SECTION:");
    let mut lines = out.lines().skip_while(|l| *l != header);
    if lines.next().is_none() {
        return vec![];
    }
    lines
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].to_string(),
                f[1].parse().unwrap(),
                f[3].to_string(),
                f[4..].join(" "),
            )
        })
        .collect()
}

fn rdata(out: &str, sec: &str) -> Vec<String> {
    let mut v: Vec<String> = section(out, sec).into_iter().map(|r| r.3).collect();
    v.sort();
    v
}

#[test]
fn dig_answers() {
    if !common::require_program("dig") {
        return;
    }
    let r = start();

    // A of a ClusterIP service, case-insensitive, authoritative, TTL 5
    let out = dig(&r, &["WEB.default.svc.cluster.B", "A"]);
    assert_eq!(status(&out), "NOERROR");
    assert!(flags(&out).contains(&"aa"), "{out}");
    let ans = section(&out, "ANSWER");
    assert_eq!(ans.len(), 1, "{out}");
    assert_eq!(
        (ans[0].1, ans[0].2.as_str(), ans[0].3.as_str()),
        (5, "A", "10.101.0.10")
    );

    // dual-stack
    let out = dig(&r, &["dual.default.svc.cluster.b", "AAAA"]);
    assert_eq!(rdata(&out, "ANSWER"), ["fd00:101::11"]);
    let out = dig(&r, &["dual.default.svc.cluster.b", "A"]);
    assert_eq!(rdata(&out, "ANSWER"), ["10.101.0.11"]);

    // SRV with the target's address as additional
    let out = dig(&r, &["_http._tcp.web.default.svc.cluster.b", "SRV"]);
    assert_eq!(
        rdata(&out, "ANSWER"),
        ["0 100 80 web.default.svc.cluster.b."]
    );
    assert_eq!(rdata(&out, "ADDITIONAL"), ["10.101.0.10"], "{out}");

    // headless: ready endpoints only; per-endpoint names; SRV per endpoint with its port
    let out = dig(&r, &["db.default.svc.cluster.b", "A"]);
    assert_eq!(rdata(&out, "ANSWER"), ["10.132.1.1", "10.132.1.2"]);
    let out = dig(&r, &["10-132-1-2.db.default.svc.cluster.b", "A"]);
    assert_eq!(rdata(&out, "ANSWER"), ["10.132.1.2"]);
    let out = dig(&r, &["_http._tcp.db.default.svc.cluster.b", "SRV"]);
    assert_eq!(
        rdata(&out, "ANSWER"),
        [
            "0 100 8080 10-132-1-1.db.default.svc.cluster.b.",
            "0 100 8080 10-132-1-2.db.default.svc.cluster.b."
        ]
    );

    // clusterset: merged over b and c
    let out = dig(&r, &["web.default.svc.clusterset.local", "A"]);
    assert_eq!(rdata(&out, "ANSWER"), ["10.101.0.10", "10.201.0.10"]);
    let out = dig(&r, &["_http._tcp.web.default.svc.clusterset.local", "SRV"]);
    assert_eq!(
        rdata(&out, "ANSWER"),
        ["0 100 80 web.default.svc.clusterset.local."]
    );
    let out = dig(&r, &["db.default.svc.clusterset.local", "A"]);
    assert_eq!(rdata(&out, "ANSWER"), ["10.132.1.1", "10.132.1.2"]);

    // over TCP too
    let out = dig(&r, &["+tcp", "web.default.svc.cluster.c", "A"]);
    assert_eq!(rdata(&out, "ANSWER"), ["10.201.0.10"]);

    let c = r.handle.counters();
    assert_eq!(
        (c.udp_queries, c.tcp_queries, c.noerror),
        (10, 1, 11),
        "{c:?}"
    );
    assert_eq!(c.panics, 0);
}

#[test]
fn dig_negative_answers() {
    if !common::require_program("dig") {
        return;
    }
    let r = start();
    // NXDOMAIN with the zone's SOA
    let out = dig(&r, &["nope.default.svc.cluster.b", "A"]);
    assert_eq!(status(&out), "NXDOMAIN");
    assert!(flags(&out).contains(&"aa"));
    let auth = section(&out, "AUTHORITY");
    assert_eq!(auth.len(), 1, "{out}");
    assert_eq!(
        (auth[0].0.as_str(), auth[0].2.as_str()),
        ("cluster.b.", "SOA")
    );
    assert!(auth[0].3.ends_with(" 5"), "SOA minimum is the TTL: {out}");

    // NODATA: existing name, no record of that type; and an empty non-terminal
    for (name, qtype, zone) in [
        ("web.default.svc.cluster.b", "AAAA", "cluster.b."),
        ("default.svc.cluster.b", "A", "cluster.b."),
        (
            "web.default.svc.clusterset.local",
            "AAAA",
            "clusterset.local.",
        ),
    ] {
        let out = dig(&r, &[name, qtype]);
        assert_eq!(status(&out), "NOERROR", "{out}");
        assert!(section(&out, "ANSWER").is_empty(), "{out}");
        let auth = section(&out, "AUTHORITY");
        assert_eq!(
            (auth[0].0.as_str(), auth[0].2.as_str()),
            (zone, "SOA"),
            "{out}"
        );
    }
    let out = dig(&r, &["nope.default.svc.clusterset.local", "A"]);
    assert_eq!(status(&out), "NXDOMAIN");

    // not our zone: REFUSED, not authoritative, no recursion
    let out = dig(&r, &["example.com", "A"]);
    assert_eq!(status(&out), "REFUSED");
    assert!(!flags(&out).contains(&"aa") && !flags(&out).contains(&"ra"));

    let c = r.handle.counters();
    assert_eq!((c.nxdomain, c.nodata, c.refused), (2, 3, 1), "{c:?}");
}

#[test]
fn dig_truncation_and_tcp_fallback() {
    if !common::require_program("dig") {
        return;
    }
    let r = start();
    // dig advertises EDNS 1232: 200 A records do not fit, dig retries over TCP by itself
    let out = dig(&r, &["big.default.svc.cluster.b", "A"]);
    assert!(out.contains("Truncated, retrying in TCP mode"), "{out}");
    assert_eq!(section(&out, "ANSWER").len(), 200, "{out}");
    assert!(!flags(&out).contains(&"tc"));
    // without EDNS (512) as well
    let out = dig(&r, &["+noedns", "big.default.svc.clusterset.local", "A"]);
    assert_eq!(section(&out, "ANSWER").len(), 200);
    // +ignore shows the TC flag on the UDP answer
    let out = dig(&r, &["+ignore", "big.default.svc.cluster.b", "A"]);
    assert!(flags(&out).contains(&"tc"), "{out}");
    assert!(section(&out, "ANSWER").is_empty());
    // SRV with 200 endpoint targets over TCP
    let out = dig(&r, &["+tcp", "_http._tcp.big.default.svc.cluster.b", "SRV"]);
    assert_eq!(section(&out, "ANSWER").len(), 200);
    let c = r.handle.counters();
    assert!(c.truncated >= 3, "{c:?}");
}

#[test]
fn dig_sees_zone_swap() {
    if !common::require_program("dig") {
        return;
    }
    let r = start();
    let out = dig(&r, &["web.default.svc.cluster.b", "A"]);
    assert_eq!(rdata(&out, "ANSWER"), ["10.101.0.10"]);
    r.handle.set_zones(zones("10.101.0.99"));
    let out = dig(&r, &["web.default.svc.cluster.b", "A"]);
    assert_eq!(rdata(&out, "ANSWER"), ["10.101.0.99"]);
    let out = dig(&r, &["web.default.svc.clusterset.local", "A"]);
    assert_eq!(rdata(&out, "ANSWER"), ["10.101.0.99", "10.201.0.10"]);
    // a remote's service disappears
    let fewer: Vec<_> = services("10.101.0.99")
        .into_iter()
        .filter(|s| s.remote != "c")
        .collect();
    r.handle
        .set_zones(Zones::build(&fewer, DEFAULT_CLUSTERSET_DOMAIN, DEFAULT_TTL));
    let out = dig(&r, &["web.default.svc.cluster.c", "A"]);
    assert_eq!(status(&out), "REFUSED");
    let out = dig(&r, &["web.default.svc.clusterset.local", "A"]);
    assert_eq!(rdata(&out, "ANSWER"), ["10.101.0.99"]);
}

/// A query in wire format: id, RD, one question (name given as raw label bytes), A/IN.
fn raw_query(id: u16, labels: &[&[u8]]) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in labels {
        q.push(l.len() as u8);
        q.extend_from_slice(l);
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

#[test]
fn hostile_udp_input() {
    if !common::require_program("dig") {
        return;
    }
    let r = start();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(r.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 4096];

    // pseudo-random garbage of all lengths
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in 0..1500 {
        let pkt: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        sock.send(&pkt).unwrap();
        if len % 100 == 99 {
            // drain replies (FORMERRs) so socket buffers never overflow
            sock.set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            while sock.recv(&mut buf).is_ok() {}
        }
    }
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();

    // a compression loop: the question name points at itself
    let mut looped = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    // two pointers pointing at each other
    let mut pingpong = vec![0x12, 0x35, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    pingpong.extend_from_slice(&[1, b'a', 0xc0, 16, 0xc0, 12, 0, 1, 0, 1]);
    // 300+ bytes of labels (a name longer than 255)
    let label = [b'a'; 60];
    let long = raw_query(0x1236, &[&label, &label, &label, &label, &label]);
    // a label longer than 63 (length byte 0x7f is not a pointer, not a valid length)
    let mut bad_label = vec![0x12, 0x37, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x7f];
    bad_label.extend_from_slice(&[b'x'; 127]);
    bad_label.extend_from_slice(&[0, 0, 1, 0, 1]);
    for (pkt, id) in [
        (&looped, 0x1234u16),
        (&pingpong, 0x1235),
        (&long, 0x1236),
        (&bad_label, 0x1237),
    ] {
        // drain until our FORMERR arrives; resend if the datagram was lost
        let mut found = false;
        for _ in 0..3 {
            sock.send(pkt).unwrap();
            while let Ok(n) = sock.recv(&mut buf) {
                if n >= 12 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                    assert_eq!(buf[3] & 0x0f, 1, "FORMERR for {id:#x}");
                    found = true;
                    break;
                }
            }
            if found {
                break;
            }
        }
        assert!(found, "no FORMERR for {id:#x}");
    }

    // a burst of 10k valid queries: 100 at a time without waiting, then collect the replies
    // (batches keep the kernel's socket buffers, not the server, the limit)
    let q = raw_query(7, &[b"web", b"default", b"svc", b"cluster", b"b"]);
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while sock.recv(&mut buf).is_ok() {} // drain replies to the garbage
    let started = std::time::Instant::now();
    let mut answered = 0;
    for _ in 0..100 {
        for _ in 0..100 {
            sock.send(&q).unwrap();
        }
        let mut got = 0;
        while got < 100 {
            match sock.recv(&mut buf) {
                Ok(n) if n > 12 && buf[..2] == [0, 7] && buf[3] & 0x0f == 0 => got += 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        answered += got;
    }
    eprintln!(
        "burst: {answered}/10000 answered in {:?}",
        started.elapsed()
    );
    assert!(
        answered >= 9_000,
        "only {answered} of 10000 burst queries answered"
    );
    let c = r.handle.counters();
    assert_eq!(c.panics, 0);
    assert!(c.formerr >= 4, "{c:?}");

    // still answering
    let out = dig(&r, &["web.default.svc.cluster.b", "A"]);
    assert_eq!(rdata(&out, "ANSWER"), ["10.101.0.10"]);
    let out = dig(&r, &["+tcp", "db.default.svc.cluster.b", "A"]);
    assert_eq!(rdata(&out, "ANSWER"), ["10.132.1.1", "10.132.1.2"]);
    eprintln!("counters after hostile input: {:?}", r.handle.counters());
}
