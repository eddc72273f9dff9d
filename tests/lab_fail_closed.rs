//! Fail closed, and peers confined (root, netns lab).
//!
//! 1. Node a1 has a default route into the underlay, so a packet for a remote pod that missed
//!    the tunnel would leave in plaintext. While a1's agent is SIGKILLed (and while it is
//!    stopped with SIGTERM), a pod on a1 keeps sending to a pod on b1: a capture on the
//!    underlay must show nothing from a1 but WireGuard (UDP to the tunnel port). After a
//!    restart the stream that was running comes back; the time from the restart to the first
//!    data is reported (goal: under a second).
//! 2. A peer that holds a valid key (a compromised remote node) sends, through the tunnel,
//!    packets to a1's underlay address and to a1's own address on the pod bridge: the first are
//!    dropped by the device (counted as bad-destination), the second by the nft input guard;
//!    nothing reaches the listeners. Traffic into the tunnel with a source that is not a1's
//!    pods is dropped too (bad-source-out).

mod common;

use sdn_lab::stream::Stream;
use sdn_lab::{in_netns, Lab, LabOptions};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sdn-tunnel");

fn lab() -> Lab {
    let lab = Lab::up(LabOptions {
        bin: Some(BIN.into()),
        ..LabOptions::default()
    })
    .expect("lab up");
    lab.wait_connected(Duration::from_secs(30))
        .expect("connected");
    lab
}

/// tcpdump on the underlay bridge for what a1 sends that is not WireGuard.
fn capture(lab: &Lab) -> Child {
    let a1 = lab.node_underlay_ip("a1").to_string();
    let pods = lab.node("a1").pod_cidr.to_string();
    let port = lab.node("a1").listen_port.to_string();
    let filter = format!("ip and not (udp port {port}) and (src host {a1} or src net {pods})");
    let child = sdn_lab::netns::command(
        lab.underlay_ns(),
        &["tcpdump", "-i", "br0", "-n", "-l", "-U", filter.as_str()],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("tcpdump");
    std::thread::sleep(Duration::from_millis(500));
    child
}

fn captured(c: Child) -> String {
    sdn_lab::kill(c.id(), libc::SIGINT);
    let out = c.wait_with_output().expect("tcpdump output");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status(lab: &Lab, node: &str) -> serde_json::Value {
    serde_json::from_str(&lab.status(node, true)).expect("status --json")
}

#[test]
fn nothing_leaves_in_plaintext_while_the_agent_is_down() {
    if !common::require_root() || !common::require_program("tcpdump") {
        return;
    }
    let lab = lab();
    // A gateway that would take the plaintext: the underlay namespace, which routes nowhere.
    lab.exec_ok(
        lab.underlay_ns(),
        &["ip", "addr", "add", "192.168.77.254/24", "dev", "br0"],
    )
    .unwrap();
    lab.exec_ok(
        &lab.node_ns("a1"),
        &["ip", "route", "add", "default", "via", "192.168.77.254"],
    )
    .unwrap();
    let (a1_pod, b1_pod) = (lab.pod_ns("a1", 0), lab.pod_ns("b1", 0));
    let b1_ip = IpAddr::V4(lab.pod_ip("b1", 0));
    let stream = Stream::start(&a1_pod, &b1_pod, SocketAddr::new(b1_ip, 7100)).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let cap = capture(&lab);

    let mut restarts = Vec::new();
    let mut pings = Vec::new();
    for signal in [libc::SIGKILL, libc::SIGTERM] {
        lab.stop_agent("a1", signal).unwrap();
        // Down: the device (persistent, no carrier now) and the routes are still there, and
        // what the pod sends is dropped.
        let routes = lab
            .exec_ok(&lab.node_ns("a1"), &["ip", "route", "show", "proto", "93"])
            .unwrap();
        assert!(
            routes.contains(&lab.device("a1")),
            "routes gone after {signal}: {routes}"
        );
        assert!(
            !lab.ping(&a1_pod, b1_ip),
            "a ping got through with the agent down"
        );
        for _ in 0..20 {
            let _ = lab.exec(
                &a1_pod,
                &["ping", "-c", "1", "-W", "0.05", &b1_ip.to_string()],
            );
        }
        std::thread::sleep(Duration::from_secs(2));
        let t0 = Instant::now();
        lab.start_agent("a1").unwrap();
        restarts.push(t0);
        // The tunnel is back when a ping is answered (100 ms tries).
        let b1 = b1_ip.to_string();
        let back = sdn_lab::wait_for(
            || {
                lab.exec(
                    &a1_pod,
                    &["ping", "-n", "-c", "1", "-W", "0.1", b1.as_str()],
                )
                .status
                .success()
            },
            Duration::from_secs(10),
        );
        assert!(
            back,
            "no recovery after a restart following {signal}\n{}",
            lab.agent_log("a1")
        );
        pings.push(t0.elapsed());
        std::thread::sleep(Duration::from_secs(2));
    }
    let report = stream.stop();
    let leaked = captured(cap);
    assert!(
        leaked.trim().is_empty(),
        "plaintext on the underlay:\n{leaked}"
    );
    assert!(
        report.error.is_none(),
        "the stream broke: {:?}",
        report.error
    );
    let gaps: Vec<String> = restarts
        .iter()
        .map(|&t| match report.resumed_after(t) {
            Some(d) => format!("{:.0} ms", d.as_secs_f64() * 1000.0),
            None => "never".into(),
        })
        .collect();
    let pings: Vec<String> = pings
        .iter()
        .map(|d| format!("{:.0} ms", d.as_secs_f64() * 1000.0))
        .collect();
    eprintln!(
        "fail closed: nothing but WireGuard left a1 while its agent was down; after a restart \
         (following SIGKILL, SIGTERM) pods pinged across again in {}, and the TCP stream \
         resumed in {} (its retransmission timer had backed off); {} KiB",
        pings.join(", "),
        gaps.join(", "),
        report.bytes / 1024
    );
    for &t in &restarts {
        assert!(
            report.resumed_after(t).is_some(),
            "the stream never resumed"
        );
    }
    // The agent's own log says why it left everything in place.
    assert!(
        lab.agent_log("a1").contains("fail closed"),
        "{}",
        lab.agent_log("a1")
    );
    // cleanup removes it all, and the guard with it (so pings now go out the default route).
    lab.stop_agent("a1", libc::SIGKILL).unwrap();
    let cfg = lab.agent_config_path("a1");
    let out = lab.exec(
        &lab.node_ns("a1"),
        &[BIN, "cleanup", "--config", cfg.to_str().unwrap()],
    );
    assert!(out.status.success(), "{out:?}");
    let link = lab.exec(
        &lab.node_ns("a1"),
        &["ip", "link", "show", &lab.device("a1")],
    );
    assert!(!link.status.success(), "device still there after cleanup");
}

/// A raw packet to `dst:port` from the remote side, inside the tunnel: b1's agent would never
/// send it (its routes for a1 cover a1's pods only), so the test plays a compromised b1 with
/// b1's own key, from b1's address, after stopping b1's agent.
#[test]
fn a_peer_reaches_pods_only() {
    use boringtun::noise::{Tunn, TunnResult};
    use boringtun::x25519::{PublicKey, StaticSecret};
    if !common::require_root() {
        return;
    }
    let lab = lab();
    let before = status(&lab, "a1")["agent"]["counters"].clone();
    lab.stop_agent("b1", libc::SIGKILL).unwrap();
    let b1_key = sdn_tunnel::keys::read_private_key_file(&lab.private_key_file("b1")).unwrap();
    let a1_pub = sdn_tunnel::keys::parse_key(&lab.public_key("a1")).unwrap();
    let mut tunn = Tunn::new(
        StaticSecret::from(b1_key),
        PublicKey::from(a1_pub),
        None,
        None,
        9,
        None,
    );
    let a1_ep: SocketAddr = lab.endpoint("a1").parse().unwrap();
    let port = lab.node("b1").listen_port;
    let b1_ns = lab.node_ns("b1");
    // b1's address and port, as a compromised b1 would use them.
    let sock = in_netns(&b1_ns, || std::net::UdpSocket::bind(("0.0.0.0", port)))
        .unwrap()
        .unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let (mut out, mut inb) = (vec![0u8; 4096], vec![0u8; 4096]);
    match tunn.format_handshake_initiation(&mut out, false) {
        TunnResult::WriteToNetwork(p) => {
            sock.send_to(p, a1_ep).unwrap();
        }
        _ => panic!("no initiation"),
    }
    let (n, _) = sock.recv_from(&mut inb).expect("a1 answers the handshake");
    match tunn.decapsulate(None, &inb[..n], &mut out) {
        TunnResult::WriteToNetwork(p) => {
            sock.send_to(p, a1_ep).unwrap();
        }
        r => panic!("handshake: {r:?}"),
    }
    // Listeners that must hear nothing: a1's underlay address and its pod gateway.
    let a1_underlay = lab.node_underlay_ip("a1");
    let gw = lab.gateway_ip("a1");
    let a1_ns = lab.node_ns("a1");
    let listeners: Vec<std::net::UdpSocket> = [a1_underlay, gw]
        .iter()
        .map(|ip| {
            let s = in_netns(&a1_ns, || std::net::UdpSocket::bind((*ip, 7777)))
                .unwrap()
                .unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            s
        })
        .collect();
    let b1_pod = lab.pod_ip("b1", 0);
    for dst in [a1_underlay, gw] {
        for _ in 0..5 {
            let pkt = common::packet::ipv4_udp(b1_pod, 40000, dst, 7777, b"sneaking in");
            if let TunnResult::WriteToNetwork(p) = tunn.encapsulate(&pkt, &mut out) {
                sock.send_to(p, a1_ep).unwrap();
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    for (s, what) in listeners
        .iter()
        .zip(["the underlay address", "the pod gateway"])
    {
        let mut buf = [0u8; 64];
        assert!(
            s.recv_from(&mut buf).is_err(),
            "a peer's packet reached {what}"
        );
    }
    let after = status(&lab, "a1")["agent"]["counters"].clone();
    let delta = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap_or(0);
    assert!(delta("droppedBadDestination") >= 5, "{after}");
    // The gateway is in a1's pod CIDR: the device delivers it, the nft input guard drops it.
    let nft = lab.exec_ok(
        &a1_ns,
        &[
            "nft",
            "list",
            "chain",
            "inet",
            &format!("sdn_tunnel_{}", lab.device("a1").replace('-', "_")),
            "guard_input",
        ],
    );
    let nft = nft.unwrap_or_else(|e| format!("{e:#}"));
    assert!(
        nft.lines().any(|l| l.contains("counter packets")
            && l.contains("drop")
            && !l.contains("packets 0 ")),
        "the input guard dropped nothing:\n{nft}"
    );
    // Into the tunnel with a foreign source: a1's host sends from its underlay address.
    let b1_pod_ip = lab.pod_ip("b1", 0).to_string();
    let _ = lab.exec(
        &a1_ns,
        &[
            "ping",
            "-c",
            "2",
            "-W",
            "1",
            "-I",
            &a1_underlay.to_string(),
            &b1_pod_ip,
        ],
    );
    let after = status(&lab, "a1")["agent"]["counters"].clone();
    assert!(
        after["droppedBadSourceOut"].as_u64().unwrap() >= 2,
        "{after}"
    );
}
