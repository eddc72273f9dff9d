//! Hostile input at the agent's UDP port (root): >= 100k random, truncated, replayed and
//! handshake-flood datagrams. The agent must not crash, its memory must stay flat, replays must
//! be rejected and counted, and the tunnel must keep working. The attacker is an in-process
//! WireGuard peer (boringtun) that the agent knows, so replays are of real, valid packets.

mod common;

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use rand_core::{OsRng, RngCore};
use sdn_lab::{in_netns, Lab, LabOptions};
use sdn_tunnel::keys;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

const PROBE_CIDR: &str = "10.140.0.0/24";
const PROBE_IP: Ipv4Addr = Ipv4Addr::new(10, 140, 0, 5);
const SINK_PORT: u16 = 9999;

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn counters(lab: &Lab) -> serde_json::Value {
    let s = lab.status("a1", true);
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    v["agent"]["counters"].clone()
}

fn count(c: &serde_json::Value, name: &str) -> u64 {
    c[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name}: {c}"))
}

/// Receives on the pod's sink until `n` datagrams arrived or 2 s of silence.
fn drain(sink: &UdpSocket, n: usize) -> usize {
    let mut got = 0;
    let mut buf = [0u8; 2048];
    while got < n && sink.recv(&mut buf).is_ok() {
        got += 1;
    }
    got
}

/// Completes a handshake as initiator, answering a cookie reply (rate limiter) if one comes.
fn handshake(tunn: &mut Tunn, sock: &UdpSocket, ep: SocketAddr) {
    let (mut out, mut inb) = (vec![0u8; 4096], vec![0u8; 4096]);
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    for _ in 0..10 {
        if let TunnResult::WriteToNetwork(init) = tunn.format_handshake_initiation(&mut out, true) {
            sock.send_to(init, ep).unwrap();
        }
        let Ok((n, from)) = sock.recv_from(&mut inb) else {
            continue;
        };
        match tunn.decapsulate(Some(from.ip()), &inb[..n], &mut out) {
            TunnResult::WriteToNetwork(keepalive) => {
                sock.send_to(keepalive, ep).unwrap();
                return;
            }
            // A cookie reply: the next initiation carries mac2.
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    panic!("no handshake with the agent");
}

#[test]
fn hostile_datagrams_are_dropped_counted_and_harmless() {
    if !common::require_root() {
        return;
    }
    let lab = Lab::up(LabOptions {
        bin: Some(env!("CARGO_BIN_EXE_sdn-tunnel").into()),
        ..LabOptions::default()
    })
    .unwrap();
    lab.wait_connected(Duration::from_secs(20)).unwrap();

    // Make agent a1 know the probe as a peer of an extra remote cluster.
    let probe_private = keys::generate_private();
    let probe_public = keys::public_from_private(&probe_private);
    let cfg = lab.agent_config("a1").add_remote(serde_json::json!({
        "name": "probe",
        "podCIDRs": ["10.140.0.0/14"],
        "static": {"peers": [{
            "name": "x1",
            "publicKey": keys::encode_key(&probe_public),
            "podCIDRs": [PROBE_CIDR],
        }]},
    }));
    lab.write_agent_config("a1", &cfg).unwrap();
    lab.restart_agent("a1").unwrap();
    lab.wait_connected(Duration::from_secs(10)).unwrap();
    let pid = lab.agent_pid("a1").unwrap();

    let a1_pub = keys::parse_key(&lab.public_key("a1")).unwrap();
    let a1_ep: SocketAddr = lab.endpoint("a1").parse().unwrap();
    let pod_ip = lab.pod_ip("a1", 0);
    // The attacker lives on node b2's underlay address; the sink in pod a1.
    let sock = in_netns(&lab.node_ns("b2"), || UdpSocket::bind("0.0.0.0:0").unwrap()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let sink = in_netns(&lab.pod_ns("a1", 0), || {
        UdpSocket::bind(("0.0.0.0", SINK_PORT)).unwrap()
    })
    .unwrap();
    sink.set_read_timeout(Some(Duration::from_secs(2))).unwrap();

    // Handshake as a legitimate peer.
    let new_tunn = || {
        Tunn::new(
            StaticSecret::from(probe_private),
            PublicKey::from(a1_pub),
            None,
            None,
            7,
            None,
        )
    };
    let mut tunn = new_tunn();
    handshake(&mut tunn, &sock, a1_ep);
    let mut out = vec![0u8; 4096];
    let mut inb = vec![0u8; 4096];

    // Genuine data reaches the pod; keep copies to replay.
    let mut captured = Vec::new();
    for i in 0..200u32 {
        let pkt = common::packet::ipv4_udp(PROBE_IP, 40000, pod_ip, SINK_PORT, &i.to_be_bytes());
        let TunnResult::WriteToNetwork(d) = tunn.encapsulate(&pkt, &mut out) else {
            panic!("encapsulate")
        };
        sock.send_to(d, a1_ep).unwrap();
        captured.push(d.to_vec());
    }
    assert!(drain(&sink, 200) >= 190, "genuine packets did not arrive");
    // A packet claiming a source outside the probe's AllowedIPs is refused.
    let spoof = common::packet::ipv4_udp(
        Ipv4Addr::new(10, 132, 0, 10),
        40000,
        pod_ip,
        SINK_PORT,
        b"spoof",
    );
    if let TunnResult::WriteToNetwork(d) = tunn.encapsulate(&spoof, &mut out) {
        sock.send_to(d, a1_ep).unwrap();
    }

    std::thread::sleep(Duration::from_millis(500));
    let before = counters(&lab);
    let rss_before = rss_kib(pid);

    let mut sent = 0u64;
    let pace = |sent: &mut u64| {
        *sent += 1;
        // Keep below what one receive buffer absorbs, so drops are the agent's, not the kernel's.
        if *sent % 2000 == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    // 1) Replays of valid data packets: 200 x 50.
    for _ in 0..50 {
        for d in &captured {
            sock.send_to(d, a1_ep).unwrap();
            pace(&mut sent);
        }
    }
    // 2) Random garbage, 60k, shaped like each message type and fully random.
    let mut rnd = vec![0u8; 2048];
    for i in 0..60_000u32 {
        let len = match i % 5 {
            0 => 148,
            1 => 92,
            2 => 64,
            3 => 32 + (OsRng.next_u32() % 1400) as usize,
            _ => (OsRng.next_u32() % 1500) as usize,
        };
        OsRng.fill_bytes(&mut rnd[..len]);
        if i % 5 != 4 && len >= 4 {
            let ty = [1u32, 2, 3, 4][(i % 5) as usize];
            rnd[..4].copy_from_slice(&ty.to_le_bytes());
        }
        sock.send_to(&rnd[..len], a1_ep).unwrap();
        pace(&mut sent);
    }
    // 3) Truncated copies of valid packets, 30k.
    for i in 0..30_000usize {
        let d = &captured[i % captured.len()];
        let cut = (OsRng.next_u32() as usize) % d.len();
        sock.send_to(&d[..cut], a1_ep).unwrap();
        pace(&mut sent);
    }
    // 4) A handshake-initiation flood from a real peer: the rate limiter (100 handshake
    // messages per second) must demand cookies. Sent as one burst, then the replies are read:
    // a flood interleaved with waits for replies may stay under the limit on a busy machine.
    let mut cookies = 0;
    for _ in 0..400 {
        if let TunnResult::WriteToNetwork(init) = tunn.format_handshake_initiation(&mut out, true) {
            sock.send_to(init, a1_ep).unwrap();
            pace(&mut sent);
        }
    }
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    while let Ok((n, _)) = sock.recv_from(&mut inb) {
        if n == 64 && inb[0] == 3 {
            cookies += 1;
        }
    }
    assert!(sent >= 100_000, "sent only {sent}");
    std::thread::sleep(Duration::from_secs(1));
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while sock.recv_from(&mut inb).is_ok() {}

    // The agent is alive, its memory flat, and every class of junk was counted.
    assert!(
        lab.agent_running("a1"),
        "agent died:\n{}",
        lab.agent_log("a1")
    );
    let rss_after = rss_kib(pid);
    let after = counters(&lab);
    eprintln!("sent {sent}; rss {rss_before} KiB -> {rss_after} KiB; cookies {cookies}");
    eprintln!("counters before {before}\ncounters after {after}");
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    let delta = |name: &str| count(&after, name) - count(&before, name);
    assert!(
        delta("droppedReplay") >= 9_000,
        "replays counted: {}",
        delta("droppedReplay")
    );
    // 10k replays + 90k junk (truncated data packets with a seen counter count as replays).
    let junk = delta("droppedBadPacket") + delta("droppedUnknownPeer") + delta("droppedReplay");
    assert!(
        junk >= 95_000,
        "only {junk} of 100k hostile datagrams counted as dropped"
    );
    assert!(
        delta("droppedRateLimited") > 0,
        "rate limiter never engaged"
    );
    assert!(cookies > 0, "no cookie reply under handshake load");
    assert!(
        count(&after, "droppedBadSource") >= 1,
        "spoofed source not refused"
    );
    // Nothing replayed reached the pod.
    assert_eq!(drain(&sink, 1), 0, "a replayed packet was delivered");

    // The tunnel keeps working: pod traffic across clusters, and the probe's fresh packets
    // (after a new handshake with a cookie if the limiter is still hot).
    assert!(lab.ping(&lab.pod_ns("a1", 0), lab.pod_ip("b1", 0)));
    assert!(lab.ping(&lab.pod_ns("b2", 0), IpAddr::V4(pod_ip)));
    // The flood's hundreds of half-finished handshakes evicted the probe's old session (as
    // they would for any peer that never reads the responses): a fresh one works.
    let mut tunn = new_tunn();
    handshake(&mut tunn, &sock, a1_ep);
    for i in 0..20u32 {
        let pkt = common::packet::ipv4_udp(PROBE_IP, 40000, pod_ip, SINK_PORT, &i.to_be_bytes());
        if let TunnResult::WriteToNetwork(d) = tunn.encapsulate(&pkt, &mut out) {
            sock.send_to(d, a1_ep).unwrap();
        }
    }
    assert!(
        drain(&sink, 20) >= 19,
        "fresh probe packets no longer delivered"
    );

    // Roaming: the same peer now sends from another port; its endpoint follows.
    let sock2 = in_netns(&lab.node_ns("b2"), || UdpSocket::bind("0.0.0.0:0").unwrap()).unwrap();
    let pkt = common::packet::ipv4_udp(PROBE_IP, 40000, pod_ip, SINK_PORT, b"roamed");
    if let TunnResult::WriteToNetwork(d) = tunn.encapsulate(&pkt, &mut out) {
        sock2.send_to(d, a1_ep).unwrap();
    }
    assert_eq!(
        drain(&sink, 1),
        1,
        "packet from the new address not delivered"
    );
    let want = format!(
        "{}:{}",
        lab.node_underlay_ip("b2"),
        sock2.local_addr().unwrap().port()
    );
    let st: serde_json::Value = serde_json::from_str(&lab.status("a1", true)).unwrap();
    let probe = st["agent"]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "x1")
        .cloned()
        .unwrap();
    assert_eq!(
        probe["endpoint"],
        want.as_str(),
        "endpoint did not roam: {probe}"
    );
    assert!(lab.agent_running("a1"));
}
