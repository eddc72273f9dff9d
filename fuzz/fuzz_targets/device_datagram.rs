//! The device's receive path (`tunnel::device::Device::receive_datagram`: parse, rate limit,
//! handshake, decrypt, crypto-key routing, delivery to the TUN fd) with real peers talking to
//! it. Each input gets a fresh `Device` (TUN = one end of a datagram socketpair, a UDP socket on
//! an ephemeral port that is never read) with two configured peers, and two boringtun `Tunn`s
//! holding those peers' keys. Operations:
//! - a peer initiates a handshake, sends an inner packet (IPv4/IPv6 with chosen addresses,
//!   lengths and payload, or arbitrary bytes), or runs its timers; whatever the device
//!   answers goes back to that peer, and what the peer answers in turn goes to the device;
//! - anything a peer ever sent is replayed from another address (optionally relaying the
//!   answers), or replayed with one byte changed, or replayed up to 120 times in a row (the
//!   handshake rate limit and cookie replies);
//! - a forger (its own addresses) sends arbitrary bytes shaped like each message type, or
//!   data messages aimed at a live session index of the device;
//! - the device is reconfigured (allowed IPs changed, a peer removed and re-added, order
//!   changed).
//!
//! Asserts:
//! - everything written to the TUN fd has a destination inside this node's pod CIDRs and is
//!   a packet that the peer owning its source address (longest prefix over the current
//!   configuration) encrypted, each such packet delivered at most once (no replay, no forgery,
//!   no packet of one peer accepted with another's source);
//! - a peer's endpoint only ever moves to an address that sent that peer's own (unmodified, or
//!   modified only in MAC2, which WireGuard leaves unauthenticated outside load) messages:
//!   never to the forger, never because of a corrupted message;
//! - the device answers only with well-formed handshake responses (92 bytes), cookie replies
//!   (64) or data (32 + 16n), and the forger gets nothing but cookie replies;
//! - `rx_datagrams` counts every datagram, no TUN write fails, and completed handshakes never
//!   outnumber the genuine handshake messages received.
#![no_main]

use arbitrary::Arbitrary;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use ipnetwork::IpNetwork;
use libfuzzer_sys::fuzz_target;
use sdn_tunnel::model::DesiredPeer;
use sdn_tunnel::tunnel::device::{Device, RxScratch};
use sdn_tunnel::tunnel::tun::Tun;
use sdn_tunnel::tunnel::udp::Udp;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, OnceLock};

const DEVICE_KEY: [u8; 32] = [0x11; 32];
const PEER_KEYS: [[u8; 32]; 2] = [[0x21; 32], [0x22; 32]];
const LOCAL: [&str; 2] = ["10.128.1.0/24", "fd00:128:1::/64"];

fn publics() -> &'static ([u8; 32], [[u8; 32]; 2]) {
    static K: OnceLock<([u8; 32], [[u8; 32]; 2])> = OnceLock::new();
    K.get_or_init(|| {
        let p = |k: [u8; 32]| PublicKey::from(&StaticSecret::from(k)).to_bytes();
        (p(DEVICE_KEY), [p(PEER_KEYS[0]), p(PEER_KEYS[1])])
    })
}

fn nets(list: &[&str]) -> Vec<IpNetwork> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

/// Peer configurations the device is switched between: (peer, allowed IPs, keepalive).
fn variant(v: u8) -> Vec<(usize, Vec<IpNetwork>, Option<u16>)> {
    match v % 4 {
        0 => vec![
            (0, nets(&["10.132.1.0/24", "fd00:132:1::/64"]), Some(25)),
            (1, nets(&["10.132.2.0/24"]), Some(25)),
        ],
        // A's range narrowed, B takes its other half (longest prefix decides).
        1 => vec![
            (0, nets(&["10.132.1.0/25", "fd00:132:1::/64"]), Some(25)),
            (1, nets(&["10.132.2.0/24", "10.132.1.128/25"]), Some(25)),
        ],
        // B removed; A wider.
        2 => vec![(0, nets(&["10.132.0.0/16"]), Some(25))],
        // Order changed, A's keepalive changed: A is a new peer (its sessions dropped).
        _ => vec![
            (1, nets(&["10.132.2.0/24"]), Some(25)),
            (0, nets(&["10.132.1.0/24", "fd00:132:1::/64"]), None),
        ],
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Host {
    PeerA(u16),
    PeerB(u16),
    Local(u16),
    /// In the cluster's pod range, not this node's.
    OtherNode(u16),
    Any(u128),
}

impl Host {
    fn v4(self) -> Ipv4Addr {
        let h = |base: u32, x: u16| Ipv4Addr::from(base | u32::from(x & 0xff));
        match self {
            Host::PeerA(x) => h(0x0a84_0100, x),
            Host::PeerB(x) => h(0x0a84_0200, x),
            Host::Local(x) => h(0x0a80_0100, x),
            Host::OtherNode(x) => h(0x0a80_0900, x),
            Host::Any(x) => Ipv4Addr::from(x as u32),
        }
    }
    fn v6(self) -> Ipv6Addr {
        let h = |base: u128, x: u16| Ipv6Addr::from(base | u128::from(x));
        match self {
            Host::PeerA(x) => h(0xfd00_0132_0001u128 << 80, x),
            Host::PeerB(x) => h(0xfd00_0132_0002u128 << 80, x),
            Host::Local(x) => h(0xfd00_0128_0001u128 << 80, x),
            Host::OtherNode(x) => h(0xfd00_0128_0009u128 << 80, x),
            Host::Any(x) => Ipv6Addr::from(x),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Inner {
    V4 {
        src: Host,
        dst: Host,
        proto: u8,
        len_delta: i8,
        payload: Vec<u8>,
    },
    V6 {
        src: Host,
        dst: Host,
        next: u8,
        len_delta: i8,
        payload: Vec<u8>,
    },
    Raw(Vec<u8>),
}

impl Inner {
    fn bytes(&self) -> Vec<u8> {
        let fix = |n: usize, d: i8| (n as i64 + i64::from(d)).clamp(0, 65535) as u16;
        match self {
            Inner::V4 {
                src,
                dst,
                proto,
                len_delta,
                payload,
            } => {
                let payload = &payload[..payload.len().min(256)];
                let mut p = vec![0x45, 0];
                p.extend(fix(20 + payload.len(), *len_delta).to_be_bytes());
                p.extend([0, 1, 0x40, 0, 64, *proto, 0, 0]);
                p.extend(src.v4().octets());
                p.extend(dst.v4().octets());
                p.extend(payload);
                p
            }
            Inner::V6 {
                src,
                dst,
                next,
                len_delta,
                payload,
            } => {
                let payload = &payload[..payload.len().min(256)];
                let mut p = vec![0x60, 0, 0, 0];
                p.extend(fix(payload.len(), *len_delta).to_be_bytes());
                p.extend([*next, 64]);
                p.extend(src.v6().octets());
                p.extend(dst.v6().octets());
                p.extend(payload);
                p
            }
            Inner::Raw(b) => b[..b.len().min(256)].to_vec(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Init {
        peer: bool,
        src: u8,
    },
    Data {
        peer: bool,
        src: u8,
        inner: Inner,
    },
    Timers {
        peer: bool,
        src: u8,
    },
    Replay {
        idx: u8,
        src: u8,
        relay_answers: bool,
    },
    Mutate {
        idx: u8,
        pos: u16,
        xor: u8,
        src: u8,
        relay_answers: bool,
    },
    Burst {
        idx: u8,
        n: u8,
    },
    Forge {
        src: u8,
        kind: u8,
        body: Vec<u8>,
    },
    ForgeData {
        src: u8,
        counter: u64,
        body: Vec<u8>,
    },
    Reconfigure(u8),
}

/// Addresses: each peer's own, relays (carrier-grade NAT range), the forger's.
fn legit_src(peer: usize, i: u8) -> SocketAddr {
    match (peer, i % 3) {
        (0, 2) => "[2001:db8:a::1]:5000".parse().unwrap(),
        (1, 2) => "[2001:db8:b::1]:5000".parse().unwrap(),
        (0, k) => SocketAddr::from(([198, 51, 100, 1 + k], 5000)),
        (_, k) => SocketAddr::from(([203, 0, 113, 1 + k], 5000)),
    }
}
fn relay_src(i: u8) -> SocketAddr {
    SocketAddr::from(([100, 64, 0, 1 + i % 4], 7777))
}
fn forger_src(i: u8) -> SocketAddr {
    match i % 3 {
        2 => "[2001:db8:f::66]:6666".parse().unwrap(),
        k => SocketAddr::from(([192, 0, 2, 1 + k], 6666)),
    }
}
fn is_forger(a: SocketAddr) -> bool {
    (0..3).any(|i| forger_src(i) == a)
}

struct PeerSide {
    tunn: Tunn,
    /// Inner packets this peer encrypted (or queued), each deliverable once.
    sent: Vec<Vec<u8>>,
    /// Addresses that sent this peer's genuine messages: where its endpoint may go.
    genuine_srcs: HashSet<SocketAddr>,
}

struct World {
    dev: Arc<Device>,
    tun_other: OwnedFd,
    tun_buf: Vec<u8>,
    peers: [PeerSide; 2],
    config: Vec<(usize, Vec<IpNetwork>, Option<u16>)>,
    local: Vec<IpNetwork>,
    /// Datagrams the peers sent: (peer, bytes).
    history: Vec<(usize, Vec<u8>)>,
    /// The device's sender index in its latest handshake response.
    device_index: Option<u32>,
    received: u64,
    genuine_handshakes: u64,
}

fn socketpair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: socketpair fills two fresh fds we then own.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "socketpair");
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn contains(list: &[IpNetwork], ip: IpAddr) -> bool {
    list.iter().any(|n| n.contains(ip))
}

fn addrs(pkt: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match pkt.first()? >> 4 {
        4 if pkt.len() >= 20 => Some((
            IpAddr::from(<[u8; 4]>::try_from(&pkt[12..16]).ok()?),
            IpAddr::from(<[u8; 4]>::try_from(&pkt[16..20]).ok()?),
        )),
        6 if pkt.len() >= 40 => Some((
            IpAddr::from(<[u8; 16]>::try_from(&pkt[8..24]).ok()?),
            IpAddr::from(<[u8; 16]>::try_from(&pkt[24..40]).ok()?),
        )),
        _ => None,
    }
}

impl World {
    fn new() -> World {
        let (dev_end, other) = socketpair();
        let udp = Udp::bind(0, 1 << 16).expect("bind udp");
        let dev = Device::new(Tun::from_fd(dev_end, "fuzz0"), udp, DEVICE_KEY).expect("device");
        let local = nets(&LOCAL);
        dev.set_local_cidrs(local.clone());
        let dev_pub = PublicKey::from(publics().0);
        let peer = |i: usize| PeerSide {
            tunn: Tunn::new(
                StaticSecret::from(PEER_KEYS[i]),
                dev_pub,
                None,
                None,
                i as u32 + 1,
                None,
            ),
            sent: Vec::new(),
            genuine_srcs: HashSet::new(),
        };
        let mut w = World {
            dev,
            tun_other: other,
            tun_buf: vec![0u8; 70_000],
            peers: [peer(0), peer(1)],
            config: Vec::new(),
            local,
            history: Vec::new(),
            device_index: None,
            received: 0,
            genuine_handshakes: 0,
        };
        w.configure(0);
        w
    }

    fn configure(&mut self, v: u8) {
        self.config = variant(v);
        let desired: Vec<DesiredPeer> = self
            .config
            .iter()
            .map(|(i, nets, keepalive)| DesiredPeer {
                remote: "west".into(),
                name: Some(format!("peer{i}")),
                public_key: publics().1[*i],
                endpoint: None,
                allowed_ips: nets.clone(),
                persistent_keepalive: *keepalive,
            })
            .collect();
        self.dev.set_peers(&desired);
    }

    /// The configured peer whose allowed IPs hold `ip` (longest prefix).
    fn owner(&self, ip: IpAddr) -> Option<usize> {
        self.config
            .iter()
            .flat_map(|(i, nets, _)| nets.iter().map(move |n| (i, n)))
            .filter(|(_, n)| n.contains(ip))
            .max_by_key(|(_, n)| n.prefix())
            .map(|(i, _)| *i)
    }

    /// One datagram to the device; checks what it did; returns its answers.
    fn deliver(&mut self, src: SocketAddr, dgram: &[u8]) -> Vec<Vec<u8>> {
        // The scratch buffers (2 MiB) are reused across inputs; they hold no state.
        thread_local! {
            static SCRATCH: std::cell::RefCell<RxScratch> = std::cell::RefCell::new(RxScratch::default());
        }
        let replies = SCRATCH.with(|s| self.dev.receive_datagram(src, dgram, &mut s.borrow_mut()));
        self.received += 1;
        for r in &replies {
            assert!(
                r.len() >= 4 && r[1..4] == [0, 0, 0],
                "malformed answer {r:?}"
            );
            match r[0] {
                2 => {
                    assert_eq!(r.len(), 92, "handshake response size");
                    self.device_index = Some(u32::from_le_bytes(r[4..8].try_into().unwrap()));
                }
                3 => assert_eq!(r.len(), 64, "cookie reply size"),
                4 => assert!(r.len() >= 32 && (r.len() - 32) % 16 == 0, "data size"),
                t => panic!("the device answered with message type {t}"),
            }
            if is_forger(src) {
                assert_eq!(r[0], 3, "the forger got more than a cookie reply");
            }
        }
        self.check_tun();
        self.check_endpoints();
        let c = self.dev.counters.snapshot();
        assert_eq!(c.rx_datagrams, self.received);
        assert_eq!(c.dropped_tun_write, 0);
        assert!(c.handshakes_completed <= self.genuine_handshakes);
        replies
    }

    fn check_tun(&mut self) {
        loop {
            let buf = &mut self.tun_buf;
            // SAFETY: buf is valid for its length.
            let n = unsafe {
                libc::read(
                    self.tun_other.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n < 0 {
                return;
            }
            let pkt = &buf[..n as usize].to_vec();
            let (src, dst) =
                addrs(pkt).unwrap_or_else(|| panic!("delivered a non-IP packet {pkt:?}"));
            assert!(
                contains(&self.local, dst),
                "delivered to {dst}, not this node's pods"
            );
            let owner = self
                .owner(src)
                .unwrap_or_else(|| panic!("delivered from {src}, which no peer owns"));
            let sent = &mut self.peers[owner].sent;
            let pos = sent
                .iter()
                .position(|s| s.len() >= pkt.len() && s[..pkt.len()] == *pkt)
                .unwrap_or_else(|| panic!("delivered {pkt:?} from {src}, never sent by its owner peer{owner} (or delivered twice)"));
            sent.swap_remove(pos);
        }
    }

    fn check_endpoints(&self) {
        for p in &self.dev.peers().peers {
            let i = publics().1.iter().position(|k| *k == p.public_key).unwrap();
            if let Some(ep) = p.endpoint() {
                assert!(
                    self.peers[i].genuine_srcs.contains(&ep),
                    "peer{i}'s endpoint moved to {ep}, which never sent its messages"
                );
            }
        }
    }

    /// A message of peer `who` from `src`; the answers go back to the peer if `answer`.
    fn genuine(&mut self, who: usize, src: SocketAddr, dgram: Vec<u8>, answer: bool, depth: u8) {
        self.peers[who].genuine_srcs.insert(src);
        if matches!(dgram.first(), Some(1 | 2)) {
            self.genuine_handshakes += 1;
        }
        if self.history.len() < 64 {
            self.history.push((who, dgram.clone()));
        }
        let replies = self.deliver(src, &dgram);
        if answer && depth < 4 {
            for r in replies {
                self.to_peer(who, src, &r, depth + 1);
            }
        }
    }

    /// The device's answer reaches the peer; what the peer sends in turn goes to the device.
    fn to_peer(&mut self, who: usize, src: SocketAddr, dgram: &[u8], depth: u8) {
        let mut buf = vec![0u8; 4096];
        let mut out = Vec::new();
        match self.peers[who]
            .tunn
            .decapsulate(Some(IpAddr::from([10, 0, 0, 1])), dgram, &mut buf)
        {
            TunnResult::WriteToNetwork(p) => {
                out.push(p.to_vec());
                loop {
                    match self.peers[who].tunn.decapsulate(None, &[], &mut buf) {
                        TunnResult::WriteToNetwork(p) => out.push(p.to_vec()),
                        _ => break,
                    }
                }
            }
            _ => return,
        }
        for p in out {
            self.genuine(who, src, p, true, depth);
        }
    }

    fn run(&mut self, op: &Op) {
        let mut buf = vec![0u8; 4096];
        match op {
            Op::Init { peer, src } => {
                let who = usize::from(*peer);
                let pkt = match self.peers[who]
                    .tunn
                    .format_handshake_initiation(&mut buf, true)
                {
                    TunnResult::WriteToNetwork(p) => p.to_vec(),
                    _ => return,
                };
                self.genuine(who, legit_src(who, *src), pkt, true, 0);
            }
            Op::Data { peer, src, inner } => {
                let who = usize::from(*peer);
                let inner = inner.bytes();
                self.peers[who].sent.push(inner.clone());
                let pkt = match self.peers[who].tunn.encapsulate(&inner, &mut buf) {
                    TunnResult::WriteToNetwork(p) => p.to_vec(),
                    _ => return,
                };
                self.genuine(who, legit_src(who, *src), pkt, true, 0);
            }
            Op::Timers { peer, src } => {
                let who = usize::from(*peer);
                if let TunnResult::WriteToNetwork(p) = self.peers[who].tunn.update_timers(&mut buf)
                {
                    let p = p.to_vec();
                    self.genuine(who, legit_src(who, *src), p, true, 0);
                }
            }
            Op::Replay {
                idx,
                src,
                relay_answers,
            } => {
                let Some((who, pkt)) = self.pick(*idx) else {
                    return;
                };
                self.genuine(who, relay_src(*src), pkt, *relay_answers, 0);
            }
            Op::Mutate {
                idx,
                pos,
                xor,
                src,
                relay_answers,
            } => {
                let Some((who, mut pkt)) = self.pick(*idx) else {
                    return;
                };
                let pos = usize::from(*pos) % pkt.len();
                pkt[pos] ^= if *xor == 0 { 1 } else { *xor };
                // MAC2 (the last 16 bytes of a handshake message) is only checked under load.
                let mac2 = match (pkt[0], pkt.len()) {
                    (1, 148) => pos >= 132,
                    (2, 92) => pos >= 76,
                    _ => false,
                };
                let src = relay_src(*src);
                if mac2 {
                    self.genuine(who, src, pkt, *relay_answers, 0);
                } else {
                    self.deliver(src, &pkt);
                }
            }
            Op::Burst { idx, n } => {
                let Some((who, pkt)) = self.pick(*idx) else {
                    return;
                };
                for _ in 0..(n % 121) {
                    self.genuine(who, relay_src(0), pkt.clone(), false, 0);
                }
            }
            Op::Forge { src, kind, body } => {
                let kind = kind % 6;
                let len = match kind {
                    1 => 148,
                    2 => 92,
                    3 => 64,
                    4 => 32 + body.len().min(512) / 16 * 16,
                    _ => 4 + body.len().min(512),
                };
                let mut pkt = vec![kind, 0, 0, 0];
                pkt.extend(body.iter().copied().cycle().take(len - 4));
                pkt.resize(len, 0);
                self.deliver(forger_src(*src), &pkt);
            }
            Op::ForgeData { src, counter, body } => {
                let Some(index) = self.device_index else {
                    return;
                };
                let mut pkt = vec![4, 0, 0, 0];
                pkt.extend(index.to_le_bytes());
                pkt.extend(counter.to_le_bytes());
                pkt.extend(body.iter().take(512));
                pkt.resize(pkt.len().max(32), 0);
                self.deliver(forger_src(*src), &pkt);
            }
            Op::Reconfigure(v) => {
                self.configure(*v);
                self.check_endpoints();
            }
        }
    }

    fn pick(&self, idx: u8) -> Option<(usize, Vec<u8>)> {
        if self.history.is_empty() {
            return None;
        }
        Some(self.history[usize::from(idx) % self.history.len()].clone())
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut w = World::new();
    for op in ops.iter().take(48) {
        w.run(op);
    }
});
