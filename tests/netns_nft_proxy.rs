//! The nftables proxy backend (`sdn_tunnel::proxy::nft_backend`) against a real kernel, with
//! real TCP and UDP traffic between network namespaces (root only; see
//! `common::require_root`).
//!
//! ```text
//!  pod (client)            node (our table)                   b0, b1, b2 (servers)
//!  eth0 10.200.0.2  ───  vp 10.200.0.1                  vb0 ─── eth0 10.201.0.2 :8080 tcp, :5353 udp
//!       10.200.0.3       svc0 (veth): route to the VIPs  vb1 ─── eth0 10.201.1.2
//!       fd00:200::2           172.31.0.0/24, fd00:31::/64 vb2 ─── eth0 10.201.2.2 (+ fd00:201:i::2)
//! ```
//! Each server answers a connection (or datagram) with its own name, then echoes.
//!
//! Also: `cargo test --release --test netns_nft_proxy -- --ignored --nocapture bench` runs the
//! benchmark (10,000 services x 10 backends; see [`bench_nft_proxy`]).

mod common;

use common::Netns;
use sdn_tunnel::proxy::model::{Backend, BackendState, VirtualService};
use sdn_tunnel::proxy::nft_backend;
use sdn_tunnel::source::Protocol;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const TABLE: &str = "sdn_tunnel_proxy";
const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5353;
const VIP: &str = "172.31.0.10:80";
const TIMEOUT: Duration = Duration::from_secs(2);

/// Servers threads; stopped (and joined) on drop, also when the test panics.
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

struct Lab {
    // Field order = drop order: servers stop before their namespaces go.
    servers: Servers,
    node: Netns,
    pod: Netns,
    backends: Vec<Netns>,
}

impl Lab {
    fn new() -> Lab {
        let node = Netns::new("nftp-node");
        let pod = Netns::new("nftp-pod");
        let backends: Vec<Netns> = (0..3).map(|_| Netns::new("nftp-b")).collect();
        // No duplicate address detection (link-local addresses included): addresses are
        // usable at once.
        for ns in [&node, &pod].into_iter().chain(&backends) {
            ns.exec("sysctl", &["-qw", "net.ipv6.conf.all.accept_dad=0"]);
            ns.exec("sysctl", &["-qw", "net.ipv6.conf.default.accept_dad=0"]);
        }
        node.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        node.exec("sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"]);

        veth(&node, "vp", &pod, "eth0");
        node.ip(&["addr", "add", "10.200.0.1/24", "dev", "vp"]);
        node.ip(&["addr", "add", "fd00:200::1/64", "dev", "vp", "nodad"]);
        pod.ip(&["addr", "add", "10.200.0.2/24", "dev", "eth0"]);
        pod.ip(&["addr", "add", "10.200.0.3/24", "dev", "eth0"]);
        pod.ip(&["addr", "add", "fd00:200::2/64", "dev", "eth0", "nodad"]);
        pod.ip(&["route", "add", "default", "via", "10.200.0.1"]);
        pod.ip(&["-6", "route", "add", "default", "via", "fd00:200::1"]);

        for (i, b) in backends.iter().enumerate() {
            let dev = format!("vb{i}");
            veth(&node, &dev, b, "eth0");
            node.ip(&["addr", "add", &format!("10.201.{i}.1/24"), "dev", &dev]);
            node.ip(&[
                "addr",
                "add",
                &format!("fd00:201:{i}::1/64"),
                "dev",
                &dev,
                "nodad",
            ]);
            b.ip(&["addr", "add", &format!("10.201.{i}.2/24"), "dev", "eth0"]);
            b.ip(&[
                "addr",
                "add",
                &format!("fd00:201:{i}::2/64"),
                "dev",
                "eth0",
                "nodad",
            ]);
            b.ip(&["route", "add", "default", "via", &format!("10.201.{i}.1")]);
            b.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &format!("fd00:201:{i}::1"),
            ]);
        }

        // The VIPs are routed somewhere (in the agent: into the tunnel), so that a connection
        // to a service without backends reaches our filter chains rather than failing with
        // "network unreachable". A veth with its peer up has carrier.
        node.ip(&[
            "link", "add", "svc0", "type", "veth", "peer", "name", "svc0p",
        ]);
        node.ip(&["link", "set", "svc0", "up"]);
        node.ip(&["link", "set", "svc0p", "up"]);
        node.ip(&["route", "add", "172.31.0.0/24", "dev", "svc0"]);
        node.ip(&["-6", "route", "add", "fd00:31::/64", "dev", "svc0"]);

        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (i, b) in backends.iter().enumerate() {
            let name = format!("b{i}");
            let (tcp, udp) = b.run_in(|| {
                // Dual stack (bindv6only is 0 in a new namespace).
                let tcp = TcpListener::bind(("::", TCP_PORT)).expect("bind tcp");
                let udp = UdpSocket::bind(("::", UDP_PORT)).expect("bind udp");
                (tcp, udp)
            });
            threads.push(tcp_server(tcp, name.clone(), stop.clone()));
            threads.push(udp_server(udp, name, stop.clone()));
        }
        Lab {
            servers: Servers { stop, threads },
            node,
            pod,
            backends,
        }
    }

    fn apply(&self, services: &[VirtualService]) {
        self.node
            .run_in(|| nft_backend::apply(TABLE, services))
            .unwrap_or_else(|e| panic!("apply: {e}"));
    }

    /// Backend names answering `n` new TCP connections from `ns` (from `src` if given).
    fn hits(&self, ns: &Netns, vip: &str, src: Option<&str>, n: usize) -> BTreeMap<String, usize> {
        let vip: SocketAddr = vip.parse().unwrap();
        let src: Option<IpAddr> = src.map(|s| s.parse().unwrap());
        let result = ns.run_in(|| {
            let mut hits = BTreeMap::new();
            for _ in 0..n {
                let t = Instant::now();
                let name = hello(connect(vip, src)?);
                if t.elapsed() > Duration::from_millis(300) {
                    eprintln!(
                        "slow connection to {vip} from {}: {:?}",
                        ns.name,
                        t.elapsed()
                    );
                }
                *hits.entry(name).or_insert(0) += 1;
            }
            Ok::<_, std::io::Error>(hits)
        });
        result.unwrap_or_else(|e| {
            panic!(
                "connect {vip} from {}: {e}\nour table in the node:\n{}",
                ns.name,
                self.node.exec("nft", &["list", "table", "inet", TABLE])
            )
        })
    }
}

fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) {
    a.ip(&[
        "link", "add", a_dev, "type", "veth", "peer", "name", b_dev, "netns", &b.name,
    ]);
    a.ip(&["link", "set", a_dev, "up"]);
    b.ip(&["link", "set", b_dev, "up"]);
}

fn tcp_server(l: TcpListener, name: String, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((mut s, _)) => {
                    let name = name.clone();
                    let stop = stop.clone();
                    // Name, then echo until EOF (or the lab stops).
                    std::thread::spawn(move || {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_millis(100)))
                            .unwrap();
                        if writeln!(s, "{name}").is_err() {
                            return;
                        }
                        let mut buf = [0u8; 512];
                        while !stop.load(Ordering::Relaxed) {
                            match s.read(&mut buf) {
                                Ok(0) => return,
                                Ok(n) => {
                                    if s.write_all(&buf[..n]).is_err() {
                                        return;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        ErrorKind::WouldBlock | ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => return,
                            }
                        }
                    });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    })
}

fn udp_server(s: UdpSocket, name: String, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                let reply = format!("{name} {}", String::from_utf8_lossy(&buf[..n]));
                let _ = s.send_to(reply.as_bytes(), from);
            }
        }
    })
}

fn connect(vip: SocketAddr, src: Option<IpAddr>) -> std::io::Result<TcpStream> {
    match src {
        None => TcpStream::connect_timeout(&vip, TIMEOUT),
        Some(src) => {
            let sock = socket2::Socket::new(
                socket2::Domain::for_address(vip),
                socket2::Type::STREAM,
                None,
            )?;
            sock.bind(&SocketAddr::new(src, 0).into())?;
            sock.connect_timeout(&vip.into(), TIMEOUT)?;
            Ok(sock.into())
        }
    }
}

/// The server's first line: its name.
fn hello(s: TcpStream) -> String {
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("read name");
    line.trim().to_string()
}

fn be(addr: &str, state: BackendState) -> Backend {
    Backend {
        addr: addr.parse().unwrap(),
        node: Some("remote-node".into()),
        state,
    }
}

fn backends(idx: &[usize], state: BackendState) -> Vec<Backend> {
    idx.iter()
        .map(|i| be(&format!("10.201.{i}.2:{TCP_PORT}"), state))
        .collect()
}

fn service(
    vip: &str,
    protocol: Protocol,
    affinity: Option<u32>,
    backends: Vec<Backend>,
) -> VirtualService {
    VirtualService {
        remote: "west".into(),
        namespace: "default".into(),
        name: "web".into(),
        port_name: String::new(),
        vip: vip.parse().unwrap(),
        protocol,
        affinity_timeout: affinity,
        backends,
    }
}

fn names(hits: &BTreeMap<String, usize>) -> Vec<&str> {
    hits.keys().map(String::as_str).collect()
}

#[test]
fn nft_proxy_with_real_traffic() {
    if !common::require_root() || !common::require_program("nft") {
        return;
    }
    let started = Instant::now();
    let lab = Lab::new();
    // A table that is not ours must stay as it is.
    lab.node.exec("nft", &["add table inet someone_else"]);
    lab.node.exec(
        "nft",
        &["add chain inet someone_else c { type filter hook forward priority 0; }"],
    );
    let foreign_before = lab
        .node
        .exec("nft", &["list", "table", "inet", "someone_else"]);
    use BackendState::*;

    // 1. Three backends: round robin for pod traffic, and host traffic works too.
    lab.apply(&[service(
        VIP,
        Protocol::Tcp,
        None,
        backends(&[0, 1, 2], Active),
    )]);
    let hits = lab.hits(&lab.pod, VIP, None, 30);
    eprintln!("3 backends, 30 connections from the pod: {hits:?}");
    assert_eq!(names(&hits), ["b0", "b1", "b2"]);
    assert!(hits.values().all(|&n| n >= 5), "{hits:?}");
    let hits = lab.hits(&lab.node, VIP, None, 6);
    eprintln!("from the node itself: {hits:?}");
    assert_eq!(names(&hits), ["b0", "b1", "b2"]);
    // Idempotent.
    lab.apply(&[service(
        VIP,
        Protocol::Tcp,
        None,
        backends(&[0, 1, 2], Active),
    )]);

    // 2. Two backends.
    lab.apply(&[service(VIP, Protocol::Tcp, None, backends(&[1, 2], Active))]);
    let hits = lab.hits(&lab.pod, VIP, None, 12);
    eprintln!("2 backends: {hits:?}");
    assert_eq!(names(&hits), ["b1", "b2"]);

    // 3. Draining: an established connection to b0 keeps working, new ones avoid b0.
    lab.apply(&[service(VIP, Protocol::Tcp, None, backends(&[0], Active))]);
    let vip: SocketAddr = VIP.parse().unwrap();
    let mut established = lab.pod.run_in(|| connect(vip, None).unwrap());
    established.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut reader = BufReader::new(established.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "b0");
    let mut svc = service(VIP, Protocol::Tcp, None, backends(&[0, 1], Active));
    svc.backends[0].state = Draining;
    lab.apply(std::slice::from_ref(&svc));
    let hits = lab.hits(&lab.pod, VIP, None, 6);
    eprintln!("b0 draining: {hits:?}");
    assert_eq!(names(&hits), ["b1"]);
    established.write_all(b"still there?\n").unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert_eq!(
        line, "still there?\n",
        "established connection to a draining backend"
    );
    svc.backends[0].state = PeerDown;
    lab.apply(std::slice::from_ref(&svc));
    assert_eq!(names(&lab.hits(&lab.pod, VIP, None, 4)), ["b1"]);

    // 4. No Active backend: refused at once, from a pod and from the host; the established
    //    connection still drains.
    let empty = service(VIP, Protocol::Tcp, None, backends(&[0, 1], Draining));
    lab.apply(&[empty]);
    for ns in [&lab.pod, &lab.node] {
        let t = Instant::now();
        let err = ns
            .run_in(|| connect(vip, None))
            .expect_err("connect must fail");
        let took = t.elapsed();
        eprintln!("empty service from {}: {err} after {took:?}", ns.name);
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
    established.write_all(b"and now?\n").unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "and now?\n");
    drop((reader, established));
    lab.apply(&[service(VIP, Protocol::Tcp, None, vec![])]);
    let err = lab.pod.run_in(|| connect(vip, None)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);

    // 5. UDP: round robin per flow (new source port = new conntrack entry), and refused
    //    (ICMP port unreachable -> ECONNREFUSED on a connected socket) without backends.
    let udp_vip = "172.31.0.10:53";
    let udp_backends: Vec<Backend> = (0..3)
        .map(|i| be(&format!("10.201.{i}.2:{UDP_PORT}"), Active))
        .collect();
    let udp = service(udp_vip, Protocol::Udp, None, udp_backends);
    lab.apply(&[udp]);
    let answers = lab.pod.run_in(|| {
        (0..6)
            .map(|i| udp_ask(udp_vip, &format!("ping{i}")).expect("udp answer"))
            .collect::<Vec<_>>()
    });
    eprintln!("udp: {answers:?}");
    for (i, a) in answers.iter().enumerate() {
        assert!(a.ends_with(&format!(" ping{i}")), "{a}");
    }
    let mut who: Vec<&str> = answers.iter().map(|a| &a[..2]).collect();
    who.sort();
    who.dedup();
    assert_eq!(who, ["b0", "b1", "b2"]);
    lab.apply(&[service(udp_vip, Protocol::Udp, None, vec![])]);
    let err = lab.pod.run_in(|| udp_ask(udp_vip, "anyone?")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");

    // 6. ClientIP affinity: each client keeps its backend; an unrelated change elsewhere
    //    (which rewrites the whole table in place) does not make it forget.
    let sticky = service(VIP, Protocol::Tcp, Some(60), backends(&[0, 1, 2], Active));
    lab.apply(std::slice::from_ref(&sticky));
    let a = lab.hits(&lab.pod, VIP, Some("10.200.0.2"), 10);
    let b = lab.hits(&lab.pod, VIP, Some("10.200.0.3"), 10);
    eprintln!("affinity: client .2 {a:?}, client .3 {b:?}");
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(b.len(), 1, "{b:?}");
    assert_ne!(
        a, b,
        "the second client should have been given the next backend"
    );
    let other = service(
        "172.31.0.11:80",
        Protocol::Tcp,
        None,
        backends(&[2], Active),
    );
    lab.apply(&[sticky.clone(), other.clone()]);
    // Client .3 first: had its memory been lost, the restarted round robin would give it
    // client .2's backend.
    assert_eq!(
        names(&lab.hits(&lab.pod, VIP, Some("10.200.0.3"), 5)),
        names(&b)
    );
    assert_eq!(
        names(&lab.hits(&lab.pod, VIP, Some("10.200.0.2"), 5)),
        names(&a)
    );
    assert_eq!(
        names(&lab.hits(&lab.pod, "172.31.0.11:80", None, 2)),
        ["b2"]
    );
    // The remembered backend starts draining: its clients move on (and stick again).
    let first = a.keys().next().unwrap().clone();
    let mut moved = sticky.clone();
    let idx: usize = first[1..].parse().unwrap();
    moved.backends[idx].state = Draining;
    lab.apply(&[moved, other]);
    let c = lab.hits(&lab.pod, VIP, Some("10.200.0.2"), 5);
    eprintln!("affinity after {first} drains: {c:?}");
    assert_eq!(c.len(), 1);
    assert!(!c.contains_key(&first));

    // 7. IPv6 VIP.
    let v6_vip = "[fd00:31::10]:80";
    let v6 = service(
        v6_vip,
        Protocol::Tcp,
        None,
        (0..3)
            .map(|i| be(&format!("[fd00:201:{i}::2]:{TCP_PORT}"), Active))
            .collect(),
    );
    let empty_v6 = service("[fd00:31::11]:80", Protocol::Tcp, None, vec![]);
    lab.apply(&[v6, empty_v6]);
    let hits = lab.hits(&lab.pod, v6_vip, None, 9);
    eprintln!("ipv6: {hits:?}");
    assert_eq!(hits.values().collect::<Vec<_>>(), [&3, &3, &3]);
    let hits = lab.hits(&lab.node, v6_vip, None, 3);
    assert_eq!(names(&hits), ["b0", "b1", "b2"]);
    let v6_empty: SocketAddr = "[fd00:31::11]:80".parse().unwrap();
    let err = lab.pod.run_in(|| connect(v6_empty, None)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");

    // 8. Delete: idempotent; the other table is untouched throughout.
    assert!(lab.node.run_in(|| nft_backend::delete(TABLE)).unwrap());
    assert!(!lab.node.run_in(|| nft_backend::delete(TABLE)).unwrap());
    let foreign_after = lab
        .node
        .exec("nft", &["list", "table", "inet", "someone_else"]);
    assert_eq!(foreign_before, foreign_after);
    assert!(!lab.node.exec("nft", &["list", "tables"]).contains(TABLE));
    let _ = &lab.backends;
    let _ = &lab.servers;
    eprintln!("nft proxy lab took {:?}", started.elapsed());
}

/// `nft -j list table inet TABLE`, normalized: handles dropped, set and map elements sorted,
/// objects sorted, rules kept in order per chain. Equal for two tables that behave the same.
fn normalized_table(ns: &Netns) -> String {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("handle");
                if let Some(serde_json::Value::Array(elems)) = m.get_mut("elem") {
                    elems.sort_by_key(|e| e.to_string());
                }
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let text = ns.exec("nft", &["-j", "list", "table", "inet", TABLE]);
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    strip(&mut v);
    let mut objects = Vec::new();
    let mut rules: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for o in v["nftables"].as_array().unwrap() {
        if let Some(rule) = o.get("rule") {
            let chain = rule["chain"].as_str().unwrap().to_string();
            rules.entry(chain).or_default().push(rule.to_string());
        } else if o.get("metainfo").is_none() {
            objects.push(o.to_string());
        }
    }
    objects.sort();
    format!("{}\n{rules:#?}", objects.join("\n"))
}

/// A small deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Many random changes, each applied in place by `render_update` in one namespace and by a
/// full replacement in another: the two tables must always be the same, and the in-place
/// script must load by itself (no fallback).
#[test]
fn in_place_updates_match_full_replacement() {
    if !common::require_root() || !common::require_program("nft") {
        return;
    }
    let started = Instant::now();
    let a = Netns::new("nftp-upd");
    let b = Netns::new("nftp-full");
    let dir = tempfile::tempdir().unwrap();
    let load = |ns: &Netns, name: &str, script: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, script).unwrap();
        ns.exec("nft", &["-f", path.to_str().unwrap()]);
    };
    let mut services = generated(80, 4, 3);
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut in_place = 0;
    for step in 0..20 {
        if step > 0 {
            for _ in 0..1 + rng.below(6) {
                let k = rng.below(services.len() as u64) as usize;
                let s = &mut services[k];
                match rng.below(8) {
                    0 | 1 => {
                        let n = s.backends.len() as u64;
                        if n > 0 {
                            let b = &mut s.backends[rng.below(n) as usize];
                            b.state = match rng.below(3) {
                                0 => BackendState::Active,
                                1 => BackendState::Draining,
                                _ => BackendState::PeerDown,
                            };
                        }
                    }
                    2 => {
                        if let Some(b) = s.backends.last_mut() {
                            b.addr.set_port(b.addr.port() + 1);
                        }
                    }
                    3 => {
                        s.backends.pop();
                    }
                    4 => {
                        s.affinity_timeout = match s.affinity_timeout {
                            None => Some(60 + rng.below(100) as u32),
                            Some(_) if rng.below(2) == 0 => None,
                            Some(t) => Some(t + 1),
                        }
                    }
                    5 => s.name.push('x'),
                    6 => {
                        services.remove(k);
                    }
                    _ => {
                        let mut extra =
                            generated(400, 3, 2).swap_remove(80 + rng.below(320) as usize);
                        extra.remote = format!("step{step}");
                        if !services
                            .iter()
                            .any(|s| s.vip == extra.vip && s.protocol == extra.protocol)
                        {
                            services.push(extra);
                        }
                    }
                }
            }
        }
        let existing = a.run_in(|| nft_backend::existing(TABLE)).unwrap();
        let script = match &existing {
            Some(e) => {
                in_place += 1;
                nft_backend::render_update(TABLE, &services, e)
            }
            None => nft_backend::render(TABLE, &services),
        };
        load(&a, "update.nft", &script);
        load(&b, "full.nft", &nft_backend::render(TABLE, &services));
        let (ta, tb) = (normalized_table(&a), normalized_table(&b));
        if ta != tb {
            std::fs::write("/tmp/nft-proxy-update.txt", &ta).unwrap();
            std::fs::write("/tmp/nft-proxy-full.txt", &tb).unwrap();
            panic!(
                "step {step}: tables differ (diff /tmp/nft-proxy-update.txt /tmp/nft-proxy-full.txt); \
                 script:\n{script}"
            );
        }
    }
    assert_eq!(in_place, 19);
    eprintln!("20 steps, 19 in place, took {:?}", started.elapsed());
}

/// One datagram to `vip` from a new connected socket; the answer.
fn udp_ask(vip: &str, msg: &str) -> std::io::Result<String> {
    let vip: SocketAddr = vip.parse().unwrap();
    let s = UdpSocket::bind(("0.0.0.0", 0))?;
    s.connect(vip)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.send(msg.as_bytes())?;
    let mut buf = [0u8; 512];
    let n = s.recv(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

// ---- Benchmark ----

/// `n` services x `per` backends. VIPs in 172.16.0.0/12; every `affinity_every`-th service
/// has ClientIP affinity (0: none), every 50th is IPv6, every 100th has no Active backend.
fn generated(n: u32, per: u32, affinity_every: u32) -> Vec<VirtualService> {
    (0..n)
        .map(|i| {
            let v6 = i % 50 == 7;
            let vip: SocketAddr = if v6 {
                format!("[fd00:31::{:x}]:443", i + 1).parse().unwrap()
            } else {
                format!("172.{}.{}.{}:80", 16 + i / 65536, (i / 256) % 256, i % 256)
                    .parse()
                    .unwrap()
            };
            let state = if i % 100 == 99 {
                BackendState::Draining
            } else {
                BackendState::Active
            };
            let backends = (0..per)
                .map(|b| Backend {
                    addr: if v6 {
                        format!("[fd00:132::{:x}:{b:x}]:8443", i + 1)
                            .parse()
                            .unwrap()
                    } else {
                        format!("10.{}.{}.{}:8080", 128 + b, (i / 256) % 256, i % 256)
                            .parse()
                            .unwrap()
                    },
                    node: Some(format!("node{b}")),
                    state,
                })
                .collect();
            VirtualService {
                remote: "bench".into(),
                namespace: format!("ns{}", i % 100),
                name: format!("svc{i}"),
                port_name: "http".into(),
                vip,
                protocol: if i % 10 == 3 {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                },
                affinity_timeout: (affinity_every > 0 && i % affinity_every == 1).then_some(10800),
                backends,
            }
        })
        .collect()
}

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Benchmark (ignored by default; run with `--release -- --ignored --nocapture bench`):
/// render + apply of N services x B backends (default 10,000 x 10; NFT_BENCH_SERVICES,
/// NFT_BENCH_BACKENDS, NFT_BENCH_AFFINITY_EVERY=k for affinity on every k-th service, default
/// 0 = none) in a fresh namespace, compared with `nft -f <file>` of the same script (the
/// reference: what nft itself needs), then 50 single-endpoint changes applied one by one
/// (p50/p99 of the whole `apply`, which reads back the table's object names and rewrites it
/// in place).
#[test]
#[ignore]
fn bench_nft_proxy() {
    if !common::require_root() || !common::require_program("nft") {
        return;
    }
    let n = env_u32("NFT_BENCH_SERVICES", 10_000);
    let per = env_u32("NFT_BENCH_BACKENDS", 10);
    let aff = env_u32("NFT_BENCH_AFFINITY_EVERY", 0);
    let ns = Netns::new("nftp-bench");
    let mut services = generated(n, per, aff);

    let t = Instant::now();
    let script = nft_backend::render(TABLE, &services);
    let render = t.elapsed();
    let file = std::env::temp_dir().join(format!("nft-proxy-bench-{}.nft", std::process::id()));
    std::fs::write(&file, &script).unwrap();

    // Reference: nft -f <file> into an empty namespace; ours: the first apply (no table yet:
    // full render + nft -f -). Interleaved, 3 runs each, medians (the kernel frees a
    // deleted table in the background, which would otherwise bias whichever runs second).
    let (mut reference, mut first) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let t = Instant::now();
        ns.exec("nft", &["-f", file.to_str().unwrap()]);
        reference.push(t.elapsed());
        ns.exec("nft", &["delete", "table", "inet", TABLE]);
        std::thread::sleep(Duration::from_secs(1));
        let t = Instant::now();
        ns.run_in(|| nft_backend::apply(TABLE, &services)).unwrap();
        first.push(t.elapsed());
        ns.run_in(|| nft_backend::delete(TABLE)).unwrap();
        std::thread::sleep(Duration::from_secs(1));
    }
    let _ = std::fs::remove_file(&file);
    reference.sort();
    first.sort();
    let (reference, first) = (reference[1], first[1]);
    ns.run_in(|| nft_backend::apply(TABLE, &services)).unwrap();

    // One endpoint change at a time: a backend of service k goes Draining (or back).
    let mut changes = Vec::new();
    let mut listing = Vec::new();
    for c in 0..50u32 {
        let k = ((c * 7919) % n) as usize;
        let b = &mut services[k].backends[(c % per) as usize];
        b.state = if b.state == BackendState::Active {
            BackendState::Draining
        } else {
            BackendState::Active
        };
        let t = Instant::now();
        ns.run_in(|| nft_backend::apply(TABLE, &services)).unwrap();
        changes.push(t.elapsed());
        let t = Instant::now();
        ns.run_in(|| nft_backend::existing(TABLE)).unwrap().unwrap();
        listing.push(t.elapsed());
    }
    changes.sort();
    listing.sort();
    let t = Instant::now();
    let existing = ns.run_in(|| nft_backend::existing(TABLE)).unwrap().unwrap();
    let _ = nft_backend::render_update(TABLE, &services, &existing);
    let render_update = t.elapsed();

    println!(
        "nft proxy bench: {n} services x {per} backends (affinity every {aff}), script {:.1} MB",
        script.len() as f64 / 1e6
    );
    println!("  render                     {render:>10.1?}");
    println!("  reference nft -f <file>    {reference:>10.1?}");
    println!(
        "  apply (first, full)        {first:>10.1?}  = {:.2} x reference",
        first.as_secs_f64() / reference.as_secs_f64()
    );
    println!(
        "  apply one endpoint change  p50 {:>8.1?}  p99 {:>8.1?}  ({:.2} x reference at p50)",
        percentile(&changes, 0.5),
        percentile(&changes, 0.99),
        percentile(&changes, 0.5).as_secs_f64() / reference.as_secs_f64()
    );
    println!(
        "    of which reading back object names p50 {:>8.1?}; list + render_update {:.1?}",
        percentile(&listing, 0.5),
        render_update
    );
}
