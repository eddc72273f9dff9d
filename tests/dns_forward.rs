//! `dns.forwarders` against the real `dig`: an agent responder on 127.0.0.1 relays names
//! outside its zones to an upstream (a second `DnsServer` with other zones, on 127.0.0.1 too)
//! and never its own zones; a dead upstream gives SERVFAIL within the timeout; no forwarders
//! still REFUSED. Loopback only, no root needed.

mod common;

use common::dig::{flags, status};

use sdn_tunnel::dns::forward::FORWARD_TIMEOUT;
use sdn_tunnel::dns::{DnsHandle, DnsServer, Zones, DEFAULT_CLUSTERSET_DOMAIN, DEFAULT_TTL};
use sdn_tunnel::model::{build, DesiredService};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// `default/<name>` with `endpoints` ready endpoints in 10.232.0.0/16.
fn service(remote: &str, name: &str, ips: &[&str], endpoints: usize) -> DesiredService {
    let eps = (0..endpoints)
        .map(|i| build::endpoint(&format!("10.232.{}.{}", i / 100, i % 100 + 1)).with_ports(vec![]))
        .collect();
    common::dns::service(remote, name, ips, eps)
}

struct Running {
    rt: tokio::runtime::Runtime,
    agent: DnsHandle,
    addr: SocketAddr,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn serve(rt: &tokio::runtime::Runtime, handle: DnsHandle) -> SocketAddr {
    let server = rt
        .block_on(DnsServer::bind("127.0.0.1:0".parse().unwrap(), handle))
        .expect("bind");
    let addr = server.local_addr().unwrap();
    rt.spawn(server.run());
    addr
}

/// The agent: zone cluster.b (web = 10.101.0.10) and clusterset.local, forwarding elsewhere.
fn agent(rt: tokio::runtime::Runtime, forwarders: Vec<SocketAddr>) -> Running {
    let zones = Zones::build(
        &[service("b", "web", &["10.101.0.10"], 0)],
        DEFAULT_CLUSTERSET_DOMAIN,
        DEFAULT_TTL,
    );
    let agent = DnsHandle::with_forwarders(zones, forwarders);
    let addr = serve(&rt, agent.clone());
    Running { rt, agent, addr }
}

/// The upstream: zone cluster.up (web, and a headless `big` with 200 endpoints), plus its own,
/// different cluster.b (web = 10.99.99.99, and `only-upstream`): if the agent ever forwarded
/// cluster.b, these would show.
fn upstream(rt: &tokio::runtime::Runtime) -> (DnsHandle, SocketAddr) {
    let zones = Zones::build(
        &[
            service("up", "web", &["10.201.0.7"], 0),
            service("up", "big", &[], 200),
            service("b", "web", &["10.99.99.99"], 0),
            service("b", "only-upstream", &["10.99.99.98"], 0),
        ],
        "",
        DEFAULT_TTL,
    );
    let h = DnsHandle::new(zones);
    let addr = serve(rt, h.clone());
    (h, addr)
}

fn dig(addr: SocketAddr, args: &[&str]) -> String {
    common::dig::dig(addr, 5, args)
}

/// Sorted rdata of the answer section.
fn answers(out: &str) -> Vec<String> {
    let mut lines = out.lines().skip_while(|l| *l != ";; ANSWER SECTION:");
    if lines.next().is_none() {
        return vec![];
    }
    let mut v: Vec<String> = lines
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().skip(4).collect::<Vec<_>>().join(" "))
        .collect();
    v.sort();
    v
}

#[test]
fn forwards_outside_names_only() {
    if !common::require_program("dig") {
        return;
    }
    let rt = runtime();
    let (up, up_addr) = upstream(&rt);
    let r = agent(rt, vec![up_addr]);

    // a name outside our zones: relayed, the upstream's answer passed through (its AA too)
    let out = dig(r.addr, &["web.default.svc.cluster.up", "A"]);
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert_eq!(answers(&out), ["10.201.0.7"], "{out}");
    assert!(flags(&out).contains(&"aa"), "{out}");
    // the upstream's own negative answers pass through as well
    let out = dig(r.addr, &["nope.default.svc.cluster.up", "A"]);
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    let out = dig(r.addr, &["example.com", "A"]);
    assert_eq!(status(&out), "REFUSED", "the upstream's REFUSED: {out}");
    // over TCP: forwarded over TCP
    let out = dig(r.addr, &["+tcp", "web.default.svc.cluster.up", "A"]);
    assert_eq!(answers(&out), ["10.201.0.7"], "{out}");
    assert_eq!(up.counters().tcp_queries, 1);

    // our zones: answered by us, never forwarded (the upstream has other data for them)
    let out = dig(r.addr, &["web.default.svc.cluster.b", "A"]);
    assert_eq!(answers(&out), ["10.101.0.10"], "{out}");
    let out = dig(r.addr, &["only-upstream.default.svc.cluster.b", "A"]);
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    let out = dig(r.addr, &["web.default.svc.clusterset.local", "AAAA"]);
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(answers(&out).is_empty());

    let c = up.counters();
    assert_eq!(c.udp_queries + c.tcp_queries, 4, "upstream saw {c:?}");
    let a = r.agent.counters();
    assert_eq!(
        (a.forwarded, a.forward_failed, a.forward_overload),
        (4, 0, 0),
        "{a:?}"
    );
    assert_eq!((a.noerror, a.nxdomain, a.nodata), (1, 1, 1), "{a:?}");
    assert_eq!(a.refused, 0, "{a:?}");

    // an upstream answer too big for UDP (~8 kB): TC from upstream; the agent's TCP retry
    // does not fit dig's 1232 either, so dig gets the TC answer, retries over TCP, and the
    // agent forwards that over TCP
    let out = dig(r.addr, &["big.default.svc.cluster.up", "A"]);
    assert!(out.contains("Truncated, retrying in TCP mode"), "{out}");
    assert_eq!(answers(&out).len(), 200, "{out}");
    let c = up.counters();
    // UDP from the agent (TC), the agent's TCP retry, then dig's TCP query relayed over TCP
    assert_eq!(
        (c.udp_queries, c.tcp_queries, c.truncated),
        (4, 3, 1),
        "upstream saw {c:?}"
    );
    drop(r.rt);
}

#[test]
fn dead_upstream_servfail_within_timeout() {
    if !common::require_program("dig") {
        return;
    }
    // silent: bound, never answers; closed: nothing bound (port unreachable)
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let closed = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let r = agent(runtime(), vec![closed, silent.local_addr().unwrap()]);

    let start = Instant::now();
    let out = dig(r.addr, &["example.com", "A"]);
    let took = start.elapsed();
    assert_eq!(status(&out), "SERVFAIL", "{out}");
    assert!(
        took >= FORWARD_TIMEOUT && took < FORWARD_TIMEOUT + Duration::from_millis(1500),
        "SERVFAIL after {took:?}"
    );
    // only the closed one: fails at once
    drop(r.rt);
    let r = agent(runtime(), vec![closed]);
    let start = Instant::now();
    let out = dig(r.addr, &["+tcp", "example.com", "A"]);
    assert_eq!(status(&out), "SERVFAIL", "{out}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    // our zones are answered regardless
    let out = dig(r.addr, &["web.default.svc.cluster.b", "A"]);
    assert_eq!(answers(&out), ["10.101.0.10"]);
    let c = r.agent.counters();
    assert_eq!(
        (c.forwarded, c.forward_failed, c.servfail),
        (1, 1, 1),
        "{c:?}"
    );
}

#[test]
fn no_forwarders_still_refused() {
    if !common::require_program("dig") {
        return;
    }
    let rt = runtime();
    let (up, _) = upstream(&rt);
    let r = agent(rt, vec![]);
    assert!(r.agent.forwarders().is_empty());
    for name in [
        "example.com",
        "web.default.svc.cluster.up",
        "kubernetes.default.svc.cluster.local",
    ] {
        let out = dig(r.addr, &[name, "A"]);
        assert_eq!(status(&out), "REFUSED", "{out}");
        assert!(!flags(&out).contains(&"aa"));
    }
    let c = r.agent.counters();
    assert_eq!((c.refused, c.forwarded), (3, 0));
    assert_eq!(up.counters().udp_queries, 0);
}
