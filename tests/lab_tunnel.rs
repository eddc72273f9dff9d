//! The tunnel end to end in the network-namespace lab (root): two clusters x two nodes with real
//! agents, real traffic, Debian's wireguard-go as a foreign peer and the real `wg show`.
//! Labs are heavy on a 2-core machine, so the tests in this binary take turns.

mod common;

use sdn_lab::{tcp_transfer, udp_echo, udp_gso_transfer, Lab, LabOptions};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

const MIB: u64 = 1024 * 1024;

fn lab(opts: LabOptions) -> Lab {
    let opts = LabOptions {
        bin: Some(env!("CARGO_BIN_EXE_sdn-tunnel").into()),
        ..opts
    };
    let lab = Lab::up(opts).expect("lab up");
    lab.wait_connected(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&lab)));
    lab
}

fn logs(lab: &Lab) -> String {
    lab.agent_nodes()
        .iter()
        .map(|n| format!("--- agent {n} ---\n{}", lab.agent_log(n)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `bytes` over TCP from pod 0 of `from` to pod 0 of `to` (IPv4), both ends checksummed;
/// panics with the agents' logs when it fails.
fn pod_transfer(lab: &Lab, from: &str, to: &str, port: u16, bytes: u64) {
    tcp_transfer(
        &lab.pod_ns(from, 0),
        &lab.pod_ns(to, 0),
        IpAddr::V4(lab.pod_ip(to, 0)),
        port,
        bytes,
    )
    .unwrap_or_else(|e| panic!("{from} -> {to}: {e:#}\n{}", logs(lab)));
}

fn guard() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn status_json(lab: &Lab, node: &str) -> serde_json::Value {
    let s = lab.status(node, true);
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("status --json of {node}: {e}: {s}"))
}

fn our_routes(lab: &Lab, node: &str) -> Vec<String> {
    let out = lab.exec(&lab.node_ns(node), &["ip", "route", "show", "proto", "93"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn nft_tables(lab: &Lab, node: &str) -> String {
    let out = lab.exec(&lab.node_ns(node), &["nft", "list", "tables"]);
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn pods_talk_across_clusters_every_node_pair_both_ways() {
    if !common::require_root() {
        return;
    }
    let _g = guard();
    let lab = lab(LabOptions::default());
    let mut port = 7000;
    for (a, b) in [("a1", "b1"), ("a1", "b2"), ("a2", "b1"), ("a2", "b2")] {
        for (from, to) in [(a, b), (b, a)] {
            let (from_ns, to_ns) = (lab.pod_ns(from, 0), lab.pod_ns(to, 0));
            let to_ip = IpAddr::V4(lab.pod_ip(to, 0));
            assert!(lab.ping(&from_ns, to_ip), "ping pod {from} -> pod {to}");
            port += 1;
            let t = tcp_transfer(&from_ns, &to_ns, to_ip, port, 10 * MIB)
                .unwrap_or_else(|e| panic!("tcp {from} -> {to}: {e:#}\n{}", logs(&lab)));
            assert_eq!(t.bytes, 10 * MIB);
            port += 1;
            let echoed = udp_echo(&from_ns, &to_ns, to_ip, port, 50).unwrap();
            assert!(echoed >= 45, "udp {from} -> {to}: {echoed}/50 echoed");
            // Host-originated: the node itself reaches the remote pod (route src in podCIDR).
            assert!(
                lab.ping(&lab.node_ns(from), to_ip),
                "ping node {from} -> pod {to}"
            );
        }
    }
    // Every peer has a handshake and carried traffic.
    for node in ["a1", "a2", "b1", "b2"] {
        let st = status_json(&lab, node);
        let peers = st["agent"]["peers"].as_array().unwrap();
        assert_eq!(peers.len(), 2, "{node}: {st}");
        for p in peers {
            assert!(p["latestHandshakeUnix"].as_u64().is_some(), "{node}: {p}");
            assert!(p["rxBytes"].as_u64().unwrap() > MIB, "{node}: {p}");
        }
        assert_eq!(our_routes(&lab, node).len(), 2, "{node}");
        // Nothing leaked into the tunnel that no peer owns (e.g. IPv6 ND/MLD noise).
        let c = &st["agent"]["counters"];
        assert_eq!(c["droppedNoPeer"], 0, "{node}: {c}");
        assert_eq!(c["droppedBadSource"], 0, "{node}: {c}");
    }
}

fn wg_show(lab: &Lab, node: &str) -> String {
    let out = lab.wg_show(node);
    assert!(out.status.success(), "wg show {node}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn transfer_bytes(wg_show_text: &str) -> u64 {
    // "  transfer: 1.23 MiB received, 4.56 KiB sent": received + sent over all peers
    let unit = |u: &str| match u.trim_end_matches(',') {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("unit {other}"),
    };
    wg_show_text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("transfer: "))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            // [v, unit, "received,", v, unit, "sent"]
            let rx: f64 = w[0].parse::<f64>().unwrap() * unit(w[1]);
            let tx: f64 = w[3].parse::<f64>().unwrap() * unit(w[4]);
            (rx + tx) as u64
        })
        .sum()
}

#[test]
fn wg_show_works_against_the_agent() {
    if !common::require_root() || !common::require_program("wg") {
        return;
    }
    let _g = guard();
    let lab = lab(LabOptions::default());
    let before = wg_show(&lab, "a1");
    assert!(
        before.contains(&format!("public key: {}", lab.public_key("a1"))),
        "{before}"
    );
    assert!(before.contains("private key: (hidden)"), "{before}");
    for peer in ["b1", "b2"] {
        assert!(
            before.contains(&format!("peer: {}", lab.public_key(peer))),
            "{before}"
        );
    }
    assert!(before.contains("latest handshake:"), "{before}");
    assert!(before.contains("allowed ips: 10.132.0.0/24"), "{before}");
    pod_transfer(&lab, "a1", "b1", 7100, 4 * MIB);
    let after = wg_show(&lab, "a1");
    assert!(
        transfer_bytes(&after) > transfer_bytes(&before) + 3 * MIB,
        "transfer did not grow:\n{before}\n{after}"
    );
    // The UAPI socket is private.
    let sock = format!("/var/run/wireguard/{}.sock", lab.device("a1"));
    let mode = std::fs::metadata(&sock).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o077, 0, "{sock} is not 0600");
    // Our own status agrees with wg about the peers.
    let text = lab.status("a1", false);
    assert!(
        text.contains("peer: ") && text.contains("routes (proto 93)"),
        "{text}"
    );
}

/// Our agents and a wireguard-go node (`program`; Debian's when None) reach each other both
/// ways with bulk TCP (offloads on our side), and wireguard-go saw the handshake.
fn interop_with(program: Option<std::path::PathBuf>) {
    let lab = lab(LabOptions {
        foreign_node: true,
        foreign_program: program,
        ..LabOptions::default()
    });
    let n1 = IpAddr::V4(lab.pod_ip("n1", 0));
    let a1 = IpAddr::V4(lab.pod_ip("a1", 0));
    assert!(lab.ping(&lab.pod_ns("a1", 0), n1));
    assert!(lab.ping(&lab.pod_ns("n1", 0), a1));
    for (from, to, port) in [("a1", "n1", 7200), ("n1", "b2", 7201)] {
        pod_transfer(&lab, from, to, port, 10 * MIB);
    }
    // wireguard-go's own view: a handshake with our agent and traffic both ways.
    let out = lab.wg_show("n1");
    let text = String::from_utf8_lossy(&out.stdout);
    let a1_key = lab.public_key("a1");
    let section = text
        .split("peer: ")
        .find(|s| s.starts_with(&a1_key))
        .unwrap_or_else(|| panic!("wireguard-go has no peer a1: {text}"));
    assert!(section.contains("latest handshake"), "{section}");
    assert!(
        section.contains("received") && section.contains("sent"),
        "{section}"
    );
}

#[test]
fn interoperates_with_wireguard_go() {
    if !common::require_root()
        || !common::require_program("wireguard-go")
        || !common::require_program("wg")
    {
        return;
    }
    let _g = guard();
    interop_with(None);
}

/// Current wireguard-go (TUN and UDP offloads of its own), built from its Go module by
/// scripts/bench-refs.sh (cached).
#[test]
fn interoperates_with_current_wireguard_go() {
    // The script finds Go itself (/usr/local/go/bin) and says so when it is missing.
    if !common::require_root() || !common::require_program("wg") {
        return;
    }
    let _g = guard();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("bash")
        .arg(repo.join("scripts/bench-refs.sh"))
        .arg("wireguard-go-current")
        .output()
        .expect("run scripts/bench-refs.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench-refs.sh failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = stdout
        .lines()
        .find_map(|l| l.strip_prefix("wireguard-go-current "))
        .unwrap_or_else(|| panic!("no path in: {stdout}"));
    interop_with(Some(path.trim().into()));
}

#[test]
fn restart_recovers_and_cleanup_leaves_nothing_behind() {
    if !common::require_root() {
        return;
    }
    let _g = guard();
    let lab = lab(LabOptions::default());
    let (a1_pod, b1_pod) = (lab.pod_ns("a1", 0), IpAddr::V4(lab.pod_ip("b1", 0)));

    // SIGTERM right after heavy traffic: exits 0 within 2 s and, outside an uninstall, leaves
    // the persistent device, the routes and the nft table (with its guards) in place: fail
    // closed, the pod's traffic is dropped, not routed elsewhere.
    tcp_transfer(&a1_pod, &lab.pod_ns("b1", 0), b1_pod, 7050, 20 * MIB).unwrap();
    let t0 = Instant::now();
    let st = lab
        .stop_agent("a1", libc::SIGTERM)
        .unwrap()
        .expect("agent a1 was running");
    assert!(
        st.success(),
        "agent exited with {st:?}\n{}",
        lab.agent_log("a1")
    );
    eprintln!("SIGTERM -> exit in {:?}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(
        our_routes(&lab, "a1").len(),
        2,
        "{:?}",
        our_routes(&lab, "a1")
    );
    assert!(
        nft_tables(&lab, "a1").contains("sdn_tunnel"),
        "{}",
        nft_tables(&lab, "a1")
    );
    let link = lab.exec_ok(
        &lab.node_ns("a1"),
        &["ip", "link", "show", &lab.device("a1")],
    );
    assert!(
        link.unwrap().contains("NO-CARRIER"),
        "the device should stay, without carrier"
    );
    assert!(!lab.ping(&a1_pod, b1_pod));

    // Start again: traffic recovers by itself within 5 s.
    lab.start_agent("a1").unwrap();
    let t0 = Instant::now();
    assert!(
        sdn_lab::wait_for(|| lab.ping(&a1_pod, b1_pod), Duration::from_secs(5)),
        "no recovery within 5 s\n{}",
        logs(&lab)
    );
    eprintln!("recovered after restart in {:?}", t0.elapsed());
    // The other direction too (b1 still had the old session).
    assert!(lab.ping(&lab.pod_ns("b1", 0), IpAddr::V4(lab.pod_ip("a1", 0))));

    // SIGKILL leaves the same behind; the next start adopts it without duplicates.
    lab.stop_agent("a1", libc::SIGKILL).unwrap();
    assert!(nft_tables(&lab, "a1").contains("sdn_tunnel"));
    lab.start_agent("a1").unwrap();
    assert!(sdn_lab::wait_for(
        || lab.ping(&a1_pod, b1_pod),
        Duration::from_secs(5)
    ));
    let routes = our_routes(&lab, "a1");
    assert_eq!(routes.len(), 2, "{routes:?}");
    assert_eq!(nft_tables(&lab, "a1").matches("sdn_tunnel").count(), 1);

    // Restarting the agent twice more changes nothing (no duplicates ever).
    lab.restart_agent("a1").unwrap();
    assert!(sdn_lab::wait_for(
        || lab.ping(&a1_pod, b1_pod),
        Duration::from_secs(5)
    ));
    assert_eq!(our_routes(&lab, "a1").len(), 2);

    // `cleanup` removes what is left (device included), and is idempotent.
    lab.stop_agent("a1", libc::SIGKILL).unwrap();
    let cfg = lab.agent_config_path("a1");
    let bin = env!("CARGO_BIN_EXE_sdn-tunnel");
    for _ in 0..2 {
        let out = lab.exec(
            &lab.node_ns("a1"),
            &[bin, "cleanup", "--config", cfg.to_str().unwrap()],
        );
        assert!(out.status.success(), "{out:?}");
    }
    assert!(!nft_tables(&lab, "a1").contains("sdn_tunnel"));
    assert!(our_routes(&lab, "a1").is_empty());
    let link = lab.exec(
        &lab.node_ns("a1"),
        &["ip", "link", "show", &lab.device("a1")],
    );
    assert!(!link.status.success(), "device still there after cleanup");
}

#[test]
fn ipv6_underlay() {
    if !common::require_root() {
        return;
    }
    let _g = guard();
    let lab = lab(LabOptions {
        ipv6_endpoints: true,
        ..LabOptions::default()
    });
    let st = status_json(&lab, "a1");
    let ep = st["agent"]["peers"][0]["endpoint"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ep.starts_with("[fd00:77::"), "{ep}");
    pod_transfer(&lab, "a2", "b2", 7300, 10 * MIB);
}

#[test]
fn mss_clamping_keeps_mtu_1500_pods_working_without_icmp() {
    if !common::require_root() {
        return;
    }
    let _g = guard();
    let lab = lab(LabOptions::default());
    // Pods keep MTU 1500; the tunnel has 1420. Drop every ICMP error on the nodes so PMTU
    // discovery cannot help: only MSS clamping keeps full-size segments out of the tunnel.
    for node in ["a1", "b1"] {
        let rules = "table inet blackhole_icmp {\n\
            chain drop_out { type filter hook output priority 0; icmp type destination-unreachable drop; icmpv6 type packet-too-big drop; }\n\
            chain drop_fwd { type filter hook forward priority 0; icmp type destination-unreachable drop; icmpv6 type packet-too-big drop; }\n\
            }\n";
        let path = lab.dir().join(format!("noicmp-{node}.nft"));
        std::fs::write(&path, rules).unwrap();
        lab.exec_ok(&lab.node_ns(node), &["nft", "-f", path.to_str().unwrap()])
            .unwrap();
    }
    let mtu = lab
        .exec_ok(&lab.pod_ns("a1", 0), &["ip", "-o", "link"])
        .unwrap();
    assert!(mtu.contains("mtu 1500"), "{mtu}");
    // The black hole is real: a full-size DF packet neither passes nor gets an ICMP back.
    let b1 = lab.pod_ip("b1", 0).to_string();
    let big = lab.exec(
        &lab.pod_ns("a1", 0),
        &["ping", "-M", "do", "-s", "1472", "-c", "2", "-W", "1", &b1],
    );
    assert!(!big.status.success(), "1500-byte DF ping passed: {big:?}");
    let small = lab.exec(
        &lab.pod_ns("a1", 0),
        &["ping", "-M", "do", "-s", "1300", "-c", "1", "-W", "1", &b1],
    );
    assert!(small.status.success(), "{small:?}");
    for (from, to, port) in [("a1", "b1", 7400), ("b1", "a1", 7401)] {
        pod_transfer(&lab, from, to, port, 10 * MIB);
    }
    let table = nft_tables(&lab, "a1");
    assert!(table.contains("sdn_tunnel"), "{table}");
}

/// The TCP counters of `node`'s agent: (super-packets, segments, bad packets).
fn tso_counters(lab: &Lab, node: &str) -> (u64, u64, u64) {
    let c = &status_json(lab, node)["agent"]["counters"];
    let n = |k: &str| {
        c[k].as_u64()
            .unwrap_or_else(|| panic!("{node}: no counter {k}: {c}"))
    };
    (
        n("tsoSuperpackets"),
        n("tsoSegments"),
        n("droppedBadPacket"),
    )
}

#[test]
fn tso_super_packets_are_cut_and_arrive_intact_with_offloads_on_and_off() {
    if !common::require_root() {
        return;
    }
    let _g = guard();
    let lab = lab(LabOptions::default());
    let transfer_both_ways = |port: u16| {
        for (from, to, port) in [("a1", "b1", port), ("b1", "a1", port + 1)] {
            pod_transfer(&lab, from, to, port, 32 * MIB);
        }
    };

    // Offloads on (the default) on both nodes: the senders read super-packets and cut them.
    // (Bad packets are counted from here: a handshake race at start-up under load may leave
    // one unexpected handshake message, which has nothing to do with offloads.)
    let bad_before: Vec<u64> = ["a1", "b1"].map(|n| tso_counters(&lab, n).2).to_vec();
    transfer_both_ways(7500);
    for (k, node) in ["a1", "b1"].into_iter().enumerate() {
        let (supers, segments, bad) = tso_counters(&lab, node);
        let bad = bad - bad_before[k];
        assert!(
            supers > 0,
            "{node} read no TSO super-packet\n{}",
            logs(&lab)
        );
        assert!(
            segments > supers,
            "{node}: {segments} segments of {supers} super-packets"
        );
        assert_eq!(bad, 0, "{node} dropped packets as bad");
        // The segments of a super-packet leave as UDP GSO messages and arrive coalesced.
        let c = &status_json(&lab, node)["agent"]["counters"];
        assert!(
            c["udpGsoMessages"].as_u64().unwrap() > 0,
            "{node}: no UDP GSO: {c}"
        );
        assert!(
            c["udpGroMessages"].as_u64().unwrap() > 0,
            "{node}: no UDP GRO: {c}"
        );
        // The receiver joins the decrypted segments again before the device.
        let (gro, gro_segments) = (
            c["groSuperpackets"].as_u64().unwrap(),
            c["groSegments"].as_u64().unwrap(),
        );
        assert!(
            gro > 0 && gro_segments > gro,
            "{node}: GRO {gro}/{gro_segments}: {c}"
        );
    }
    assert!(
        lab.agent_log("a1").contains("TUN offloads on"),
        "{}",
        logs(&lab)
    );

    // b1 restarts with offloads off on the same persistent device: it must switch the
    // device's offloads off (else it would read super-packets without knowing), and both
    // directions keep working against a1 with offloads on.
    let cfg = lab
        .agent_config("b1")
        .set_field("tunnel", "offloads", serde_json::json!(false));
    lab.write_agent_config("b1", &cfg).unwrap();
    lab.restart_agent("b1").unwrap();
    lab.wait_connected(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&lab)));
    let a1_before = tso_counters(&lab, "a1").0;
    let b1_bad_before = tso_counters(&lab, "b1").2;
    transfer_both_ways(7510);
    let (supers, segments, bad) = tso_counters(&lab, "b1");
    assert_eq!(
        (supers, segments, bad - b1_bad_before),
        (0, 0, 0),
        "b1 with offloads off"
    );
    let c = &status_json(&lab, "b1")["agent"]["counters"];
    assert_eq!(
        c["groSuperpackets"], 0,
        "b1 joins nothing without offloads: {c}"
    );
    assert!(
        tso_counters(&lab, "a1").0 > a1_before,
        "a1 kept its offloads"
    );
    assert!(
        lab.agent_log("b1").contains("TUN offloads off"),
        "{}",
        logs(&lab)
    );
}

#[test]
fn icmp_and_ip_fragments_pass_with_offloads_on() {
    if !common::require_root() {
        return;
    }
    let _g = guard();
    let lab = lab(LabOptions::default());
    // Pods have MTU 1500, the tunnel 1420: 3000 and 8000 bytes leave the pod as fragments,
    // which the node fragments again for the tunnel; none of it is TCP, so neither TSO nor
    // GRO may touch it.
    for (from, to) in [("a1", "b1"), ("b1", "a1")] {
        let ip = lab.pod_ip(to, 0).to_string();
        for size in ["56", "1400", "3000", "8000"] {
            let out = lab.exec(
                &lab.pod_ns(from, 0),
                &["ping", "-c", "2", "-i", "0.2", "-W", "2", "-s", size, &ip],
            );
            assert!(
                out.status.success(),
                "{from} -> {to} ping -s {size}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                logs(&lab)
            );
        }
    }
    let c = &status_json(&lab, "a1")["agent"]["counters"];
    assert_eq!(c["droppedBadPacket"], 0, "{c}");
}

#[test]
fn queues_carry_traffic_and_a_device_has_one_agent() {
    if !common::require_root() {
        return;
    }
    let _g = guard();
    let lab = Lab::up(LabOptions {
        bin: Some(env!("CARGO_BIN_EXE_sdn-tunnel").into()),
        start_agents: false,
        ..LabOptions::default()
    })
    .expect("lab up");
    for node in lab.agent_nodes() {
        let cfg = lab
            .agent_config(&node)
            .set_field("tunnel", "queues", serde_json::json!(2));
        lab.write_agent_config(&node, &cfg).unwrap();
        lab.start_agent(&node).unwrap();
    }
    lab.wait_connected(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&lab)));

    // 16 flows each way between a1 and b1 at once, all intact.
    std::thread::scope(|s| {
        for i in 0..16u16 {
            let lab = &lab;
            s.spawn(move || pod_transfer(lab, "a1", "b1", 7600 + i, 2 * MIB));
            s.spawn(move || pod_transfer(lab, "b1", "a1", 7620 + i, 2 * MIB));
        }
    });
    for node in ["a1", "b1"] {
        let a = &status_json(&lab, node)["agent"];
        assert_eq!(a["queues"], 2, "{node}: {a}");
        let sum = |k: &str| -> u64 {
            let v = a[k]
                .as_array()
                .unwrap_or_else(|| panic!("{node}: no {k}: {a}"));
            assert_eq!(v.len(), 2, "{node} {k}: {v:?}");
            v.iter().map(|x| x.as_u64().unwrap()).sum()
        };
        // Every datagram the device counted arrived on one of the queues' sockets (the two
        // counters are bumped one after the other: a keepalive may fall in between).
        let (per_queue, total) = (
            sum("queueUdpDatagrams"),
            a["counters"]["rxDatagrams"].as_u64().unwrap(),
        );
        assert!(
            per_queue <= total && total - per_queue <= 64,
            "{node}: {per_queue} per queue, {total} in all: {a}"
        );
        assert!(sum("queueTunReads") > 0, "{node}: {a}");
        assert!(lab.status(node, false).contains("queues: 2"), "{node}");
    }

    // A second agent for a1's device in a1's namespace is refused and changes nothing.
    let bin = env!("CARGO_BIN_EXE_sdn-tunnel");
    let cfg = lab.agent_config_path("a1").to_string_lossy().into_owned();
    let out = lab.exec(
        &lab.node_ns("a1"),
        &["timeout", "20", bin, "agent", "--config", &cfg],
    );
    let err =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a second agent ran: {err}");
    assert!(
        err.contains("another sdn-tunnel agent already runs tunnel device"),
        "{err}"
    );
    // Nor may `cleanup` pull the device from under it.
    let out = lab.exec(&lab.node_ns("a1"), &[bin, "cleanup", "--config", &cfg]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cleanup refuses to run while an agent runs"),
        "{err}"
    );
    pod_transfer(&lab, "a1", "b1", 7650, 4 * MIB);

    // A device an earlier version made without multi-queue: b1 runs it with one queue and
    // says how to get more.
    lab.stop_agent("b1", libc::SIGTERM).unwrap();
    lab.cleanup_agent("b1").unwrap();
    lab.exec_ok(
        &lab.node_ns("b1"),
        &[
            "ip",
            "tuntap",
            "add",
            "dev",
            &lab.device("b1"),
            "mode",
            "tun",
        ],
    )
    .unwrap();
    lab.start_agent("b1").unwrap();
    lab.wait_connected(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&lab)));
    assert_eq!(status_json(&lab, "b1")["agent"]["queues"], 1);
    assert!(
        lab.agent_log("b1").contains("created without multi-queue"),
        "{}",
        lab.agent_log("b1")
    );
    pod_transfer(&lab, "a1", "b1", 7651, 4 * MIB);
    pod_transfer(&lab, "b1", "a1", 7652, 4 * MIB);
}

#[test]
fn ipv6_pods_and_udp_super_packets_through_the_offloads_both_ways() {
    if !common::require_root() {
        return;
    }
    let _g = guard();
    let lab = lab(LabOptions {
        pods_ipv6: true,
        ..LabOptions::default()
    });
    let before: Vec<(u64, u64, u64)> = ["a1", "b1"].map(|n| tso_counters(&lab, n)).to_vec();
    let gro_before: Vec<u64> = ["a1", "b1"]
        .map(|n| {
            status_json(&lab, n)["agent"]["counters"]["groSuperpackets"]
                .as_u64()
                .unwrap()
        })
        .to_vec();
    for (from, to, port) in [("a1", "b1", 7700u16), ("b1", "a1", 7701)] {
        let (from_ns, to_ns) = (lab.pod_ns(from, 0), lab.pod_ns(to, 0));
        let to_ip = IpAddr::V6(lab.pod_ip6(to, 0));
        // TCP over IPv6 inside (TSO6 on the way out, GRO on the way in), checksummed at both
        // ends by tcp_transfer.
        tcp_transfer(&from_ns, &to_ns, to_ip, port, 32 * MIB)
            .unwrap_or_else(|e| panic!("{from} -> {to} over IPv6: {e:#}\n{}", logs(&lab)));
        // UDP over IPv6 inside: every datagram echoed intact.
        let echoed = udp_echo(&from_ns, &to_ns, to_ip, port + 10, 50).unwrap();
        assert_eq!(echoed, 50, "{from} -> {to}: UDP over IPv6");
        // ICMPv6 and IPv6 fragments (pods have MTU 1500, the tunnel 1420). IPv6 routers do
        // not fragment: the first large packet each way earns a "packet too big" and is lost,
        // so a first ping learns the path MTU, and the second must pass whole.
        let dst = to_ip.to_string();
        for size in ["56", "1400", "3000"] {
            let ping = |count: &str| {
                let args = [
                    "ping", "-6", "-c", count, "-i", "0.2", "-W", "2", "-s", size, &dst,
                ];
                lab.exec(&from_ns, &args)
            };
            let _learn_the_path_mtu = ping("3");
            let out = ping("2");
            assert!(
                out.status.success(),
                "{from} -> {to} ping -6 -s {size}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                logs(&lab)
            );
        }
    }
    // UDP super-packets (senders with UDP_SEGMENT), IPv4 and IPv6 inside, both ways: with
    // USO the device hands them to us whole and we cut them; every datagram arrives intact.
    for (from, to) in [("a1", "b1"), ("b1", "a1")] {
        let (from_ns, to_ns) = (lab.pod_ns(from, 0), lab.pod_ns(to, 0));
        let targets = [
            IpAddr::V4(lab.pod_ip(to, 0)),
            IpAddr::V6(lab.pod_ip6(to, 0)),
        ];
        for (i, to_ip) in targets.into_iter().enumerate() {
            let got = udp_gso_transfer(&from_ns, &to_ns, to_ip, 7720 + i as u16, 20, 20, 1200)
                .unwrap_or_else(|e| panic!("{from} -> {to_ip}: {e:#}\n{}", logs(&lab)));
            assert_eq!(got, 400, "{from} -> {to_ip}: datagrams lost or changed");
        }
    }
    for node in ["a1", "b1"] {
        let c = &status_json(&lab, node)["agent"]["counters"];
        if lab.agent_log(node).contains("TSO, USO") {
            let (supers, segs) = (
                c["usoSuperpackets"].as_u64().unwrap(),
                c["usoSegments"].as_u64().unwrap(),
            );
            assert!(
                supers > 0 && segs > supers,
                "{node}: USO {supers}/{segs}: {c}"
            );
        } else {
            eprintln!("{node}: this kernel refused USO (needs 6.2); the kernel cut the datagrams");
        }
    }
    for (k, node) in ["a1", "b1"].into_iter().enumerate() {
        let (supers, segments, bad) = tso_counters(&lab, node);
        assert!(
            supers > before[k].0 && segments > supers - before[k].0,
            "{node}: no IPv6 TSO ({supers} super-packets, {segments} segments)"
        );
        assert_eq!(bad, before[k].2, "{node} dropped packets as bad");
        let gro = status_json(&lab, node)["agent"]["counters"]["groSuperpackets"]
            .as_u64()
            .unwrap();
        assert!(gro > gro_before[k], "{node} joined no IPv6 segments");
    }
}
