//! Self-test of the lab itself (no sdn-tunnel agent involved): the topology comes up with the
//! documented addresses, pods and nodes reach what they should (and nothing across clusters
//! without a tunnel), the wireguard-go foreign node and the benchmark's plain/wireguard-go
//! modes work, and teardown leaves nothing behind. Needs root: skipped with a note otherwise,
//! unless SDN_TUNNEL_REQUIRE_PRIVILEGED=1 (then it fails).

use sdn_lab::bench::{self, Mode};
use sdn_lab::{Lab, LabOptions};
use std::path::Path;

fn privileged(test: &str) -> bool {
    if sdn_lab::is_root() {
        return true;
    }
    if std::env::var("SDN_TUNNEL_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{test}: needs root (SDN_TUNNEL_REQUIRE_PRIVILEGED=1)");
    }
    eprintln!("SKIPPED {test}: needs root (network namespaces)");
    false
}

fn have(tool: &str) -> bool {
    let found = sdn_lab::exec("", &["sh", "-c", &format!("command -v {tool}")])
        .status
        .success();
    if !found && std::env::var("SDN_TUNNEL_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{tool} is not installed (bash scripts/setup.sh)");
    }
    found
}

fn assert_gone(prefix: &str, dir: &Path) {
    let left: Vec<_> = sdn_lab::netns::list_netns()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(!dir.exists(), "{} left behind", dir.display());
    for d in ["/var/run/wireguard", "/var/run/sdn-tunnel"] {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                assert!(
                    !name.starts_with(&format!("{prefix}-")),
                    "{d}/{name} left behind"
                );
            }
        }
    }
}

#[test]
fn topology_comes_up_and_is_torn_down() {
    if !privileged("topology_comes_up_and_is_torn_down") {
        return;
    }
    let foreign = have("wireguard-go") && have("wg");
    let lab = Lab::up(LabOptions {
        start_agents: false,
        bin: None,
        pods_per_node: 2,
        foreign_node: foreign,
        ..LabOptions::default()
    })
    .expect("lab up");
    let (prefix, dir) = (lab.prefix().to_string(), lab.dir().to_path_buf());
    assert!(sdn_lab::is_lab_prefix(&prefix), "{prefix}");
    assert!(sdn_lab::list_labs().contains(&prefix));
    eprintln!("{}", lab.describe());

    // Addresses as documented.
    assert_eq!(lab.pod_ip("a1", 0).to_string(), "10.128.0.10");
    assert_eq!(lab.pod_ip("a2", 1).to_string(), "10.128.1.11");
    assert_eq!(lab.pod_ip("b2", 0).to_string(), "10.132.1.10");
    assert_eq!(lab.node_underlay_ip("b1").to_string(), "192.168.77.21");
    assert_eq!(lab.endpoint("b1"), "192.168.77.21:51820");
    let nodes: Vec<String> = lab
        .topology()
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .collect();
    assert_eq!(lab.agent_nodes(), ["a1", "a2", "b1", "b2"]);

    // Configs and keys are written; keys are 0600.
    let text = std::fs::read_to_string(lab.agent_config_path("a1")).unwrap();
    let (comment, body) = text.split_once('\n').unwrap();
    assert!(comment.starts_with("# sdn-lab "), "{text}");
    let cfg: serde_json::Value = serde_json::from_str(body).unwrap();
    let west = &cfg["remotes"][0];
    assert_eq!(west["name"], "west", "{text}");
    let b2 = &west["static"]["peers"][1];
    assert_eq!(b2["publicKey"], lab.public_key("b2"), "{text}");
    assert_eq!(b2["endpoint"], "192.168.77.22:51820", "{text}");
    assert_eq!(cfg["tunnel"]["device"], lab.device("a1"), "{text}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(lab.private_key_file("a1"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    for node in &nodes {
        let n = lab.node(node);
        for (i, pod_ns) in n.pod_ns.iter().enumerate() {
            assert!(
                lab.ping(pod_ns, n.gateway),
                "{pod_ns} -> gateway {}",
                n.gateway
            );
            let other = n.pods[(i + 1) % n.pods.len()];
            assert!(lab.ping(pod_ns, other), "{pod_ns} -> same-node pod {other}");
        }
    }
    // Underlay between nodes, IPv4 and IPv6, across clusters.
    assert!(lab.ping(&lab.node_ns("a1"), lab.node_underlay_ip("b2")));
    assert!(lab.ping(&lab.node_ns("b2"), lab.node_underlay_ip6("a1")));
    // Inside a cluster, pods reach each other across nodes (routes like a flat CNI).
    assert!(lab.ping(&lab.pod_ns("a1", 0), lab.pod_ip("a2", 1)));
    // Across clusters nothing goes without a tunnel.
    assert!(!lab.ping(&lab.pod_ns("a1", 0), lab.pod_ip("b1", 0)));

    // In-process traffic helpers.
    let t = sdn_lab::tcp_transfer(
        &lab.pod_ns("a1", 0),
        &lab.pod_ns("a2", 1),
        lab.pod_ip("a2", 1).into(),
        5001,
        4 << 20,
    )
    .expect("tcp transfer");
    assert_eq!(t.bytes, 4 << 20);
    let echoed = sdn_lab::udp_echo(
        &lab.pod_ns("b1", 0),
        &lab.pod_ns("b2", 0),
        lab.pod_ip("b2", 0).into(),
        5002,
        20,
    )
    .unwrap();
    assert_eq!(echoed, 20);

    // The benchmark's plain-routing mode connects the clusters (a1 <-> b1) and undoes it.
    let guard = bench::setup_mode(&lab, Mode::Plain).expect("plain mode");
    assert!(lab.ping(&lab.pod_ns("b1", 1), lab.pod_ip("a1", 1)));
    bench::teardown_mode(&lab, &guard);
    assert!(!lab.ping(&lab.pod_ns("a1", 0), lab.pod_ip("b1", 0)));

    if foreign {
        let n1 = lab.node("n1").clone();
        assert!(lab
            .process_pid(&format!("wireguard-go:{}", n1.device))
            .is_some());
        let out = lab.wg_show("n1");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "wg show: {out:?}");
        assert!(text.contains("listening port: 51820"), "{text}");
        assert_eq!(text.matches("peer: ").count(), 4, "{text}");
        assert!(text.contains(&lab.public_key("a1")), "{text}");
        let routes = lab
            .exec_ok(&n1.ns, &["ip", "route", "show", "dev", &n1.device])
            .unwrap();
        assert!(
            routes.contains("10.128.0.0/14") && routes.contains("172.31.0.0/16"),
            "{routes}"
        );
    } else {
        eprintln!("NOTE: wireguard-go/wg not installed, foreign node not tested");
    }

    drop(lab);
    assert_gone(&prefix, &dir);
}

#[test]
fn wireguard_go_bench_mode_and_concurrent_labs() {
    if !privileged("wireguard_go_bench_mode_and_concurrent_labs") || !have("wireguard-go") {
        return;
    }
    // Two labs at once must not collide (names, devices, sockets).
    let lab = Lab::up(bench::lab_options(None, false)).expect("bench lab");
    let other = Lab::up(bench::lab_options(None, false)).expect("second lab");
    assert_ne!(lab.prefix(), other.prefix());

    let guard = bench::setup_mode(&lab, Mode::WireguardGo).expect("wireguard-go mode");
    assert_eq!(guard.pids.len(), 2);
    let t = sdn_lab::tcp_transfer(
        &lab.pod_ns("a1", 0),
        &lab.pod_ns("b1", 0),
        lab.pod_ip("b1", 0).into(),
        5001,
        2 << 20,
    )
    .expect("tcp through wireguard-go");
    assert_eq!(t.bytes, 2 << 20);
    if have("iperf3") {
        let s = bench::measure(&lab, &guard, 1).expect("measure");
        assert!(
            s.tcp1_gbps > 0.0 && s.tcp4_gbps > 0.0 && s.rtt_ms > 0.0,
            "{s:?}"
        );
        assert!(s.cpu1_s_per_gb.unwrap() > 0.0, "{s:?}");
    }
    bench::teardown_mode(&lab, &guard);
    assert!(!lab.ping(&lab.pod_ns("a1", 0), lab.pod_ip("b1", 0)));
    // The second lab is untouched by the first one's tunnel.
    assert!(!other.ping(&other.pod_ns("a1", 0), other.pod_ip("b1", 0)));

    let (p1, d1, p2, d2) = (
        lab.prefix().to_string(),
        lab.dir().to_path_buf(),
        other.prefix().to_string(),
        other.dir().to_path_buf(),
    );
    drop(lab);
    assert_gone(&p1, &d1);
    drop(other);
    assert_gone(&p2, &d2);

    // A kept lab survives its Lab value; `down` by prefix (what `sdn-lab down` does) removes it.
    let kept = Lab::up(LabOptions {
        keep: true,
        ..bench::lab_options(None, false)
    })
    .unwrap();
    let (p3, d3) = (kept.prefix().to_string(), kept.dir().to_path_buf());
    drop(kept);
    assert!(d3.exists());
    assert!(sdn_lab::netns::list_netns().contains(&format!("{p3}-a1")));
    sdn_lab::down(&p3).unwrap();
    assert_gone(&p3, &d3);
}
