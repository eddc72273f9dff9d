//! Metrics and probes end to end in the netns lab (root): every agent serves `/metrics`,
//! `/healthz` and `/readyz` on its node's port 9477 (the default `http.listen`). Scraped over
//! HTTP from inside a node's namespace, the values must move with what happens: bytes grow
//! with traffic, the handshake age grows and resets on a new handshake, drops are counted by
//! reason, DNS responses by rcode; readiness waits for an unreachable remote's first sync
//! only until `http.readyTimeoutSeconds`.

mod common;

use sdn_lab::{metric_value, tcp_transfer, Lab, LabOptions};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// `GET path` on the agent of `node` (127.0.0.1:9477 in its namespace): (status code, body).
fn get(lab: &Lab, node: &str, path: &str) -> (u16, String) {
    lab.agent_http(node, path)
        .unwrap_or_else(|e| panic!("GET {path} on {node}: {e:#}"))
}

fn scrape(lab: &Lab, node: &str) -> String {
    let (code, body) = get(lab, node, "/metrics");
    assert_eq!(code, 200, "/metrics on {node}: {body}");
    body
}

fn must(lab: &Lab, node: &str, series: &str) -> f64 {
    let m = scrape(lab, node);
    metric_value(&m, series).unwrap_or_else(|| panic!("{series} missing on {node}:\n{m}"))
}

fn wait_until(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    sdn_lab::poll::assert_within(what, timeout, Duration::from_millis(250), f)
}

#[test]
fn metrics_move_with_traffic_and_probes_follow_the_agent() {
    if !common::require_root() || !common::require_program("dig") {
        return;
    }
    let lab = Lab::up(LabOptions {
        bin: Some(env!("CARGO_BIN_EXE_sdn-tunnel").into()),
        services: true,
        ..LabOptions::default()
    })
    .expect("lab up");
    lab.wait_connected(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.agent_log("a1")));

    // Probes.
    wait_until("a1 ready", Duration::from_secs(15), || {
        get(&lab, "a1", "/readyz").0 == 200
    });
    assert_eq!(get(&lab, "a1", "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(get(&lab, "a1", "/nope").0, 404);

    // Remotes and peers.
    let peer = r#"{remote="west",peer="b1"}"#;
    assert_eq!(
        must(&lab, "a1", r#"sdn_tunnel_remote_synced{remote="west"}"#),
        1.0
    );
    assert_eq!(must(&lab, "a1", r#"sdn_tunnel_peers{remote="west"}"#), 2.0);
    assert_eq!(
        must(&lab, "a1", r#"sdn_tunnel_peer_up{remote="west",peer="b1"}"#),
        1.0
    );
    assert_eq!(must(&lab, "a1", r#"sdn_tunnel_ready"#), 1.0);
    // One log line per state change: the peer came up (logged by the 2 s peer poll, so it
    // may follow the handshake by a moment).
    let peer_up_logged = || {
        lab.agent_log("a1")
            .lines()
            .any(|l| l.contains("peer up") && l.contains("west/b1"))
    };
    if !sdn_lab::poll::wait_for(peer_up_logged, Duration::from_secs(10)) {
        panic!("no 'peer up' line for west/b1 in:\n{}", lab.agent_log("a1"));
    }

    // Bytes grow with traffic (2 MiB from a pod of a1 to a pod of b1).
    let tx = format!("sdn_tunnel_peer_transmit_bytes_total{peer}");
    let rx = format!("sdn_tunnel_peer_receive_bytes_total{peer}");
    let (tx0, rx0) = (must(&lab, "a1", &tx), must(&lab, "a1", &rx));
    let to = IpAddr::V4(lab.pod_ip("b1", 0));
    tcp_transfer(
        &lab.pod_ns("a1", 0),
        &lab.pod_ns("b1", 0),
        to,
        7401,
        2 << 20,
    )
    .expect("transfer a1 -> b1");
    let (tx1, rx1) = (must(&lab, "a1", &tx), must(&lab, "a1", &rx));
    assert!(tx1 >= tx0 + 2.0 * 1024.0 * 1024.0, "tx {tx0} -> {tx1}");
    assert!(rx1 > rx0, "rx (ACKs) {rx0} -> {rx1}");

    // Drops by reason: an address in west's pod CIDR that no node owns has no peer.
    let west = lab.topology().cluster("west").unwrap().pod_cidr;
    let orphan = west.nth(200 * 256 + 7);
    for n in ["b1", "b2"] {
        let own = lab.node(n).pod_cidr;
        assert!(u32::from(orphan) >> (32 - own.prefix) != u32::from(own.addr) >> (32 - own.prefix));
    }
    let no_peer = r#"sdn_tunnel_dropped_packets_total{reason="no_peer"}"#;
    let d0 = must(&lab, "a1", no_peer);
    let _ = lab.exec(
        &lab.pod_ns("a1", 0),
        &[
            "ping",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "1",
            &orphan.to_string(),
        ],
    );
    let d1 = must(&lab, "a1", no_peer);
    assert!(d1 >= d0 + 2.0, "no_peer drops {d0} -> {d1}");

    // The proxy (nftables backend here) programmed the remote service and timed it.
    assert_eq!(must(&lab, "a1", "sdn_tunnel_proxy_virtual_services"), 1.0);
    assert!(must(&lab, "a1", "sdn_tunnel_proxy_sync_duration_seconds_count") >= 1.0);

    // DNS responses by rcode, with the real dig.
    let noerror = r#"sdn_tunnel_dns_responses_total{rcode="NOERROR"}"#;
    let refused = r#"sdn_tunnel_dns_responses_total{rcode="REFUSED"}"#;
    let (n0, r0) = (must(&lab, "a1", noerror), must(&lab, "a1", refused));
    for name in ["web.default.svc.cluster.west", "example.org"] {
        let out = lab.exec(
            &lab.node_ns("a1"),
            &[
                "dig",
                "@127.0.0.1",
                "-p",
                "10053",
                "+tries=1",
                "+time=2",
                name,
                "A",
            ],
        );
        assert!(out.status.success(), "dig {name}");
    }
    assert_eq!(must(&lab, "a1", noerror), n0 + 1.0);
    assert_eq!(must(&lab, "a1", refused), r0 + 1.0);

    // The handshake age grows, and resets when the peer restarts (a new handshake).
    let age = format!("sdn_tunnel_peer_last_handshake_age_seconds{peer}");
    wait_until("handshake age >= 3 s", Duration::from_secs(20), || {
        must(&lab, "a1", &age) >= 3.0
    });
    let old_age = must(&lab, "a1", &age);
    let hs0 = must(&lab, "a1", "sdn_tunnel_handshakes_total");
    lab.restart_agent("b1").unwrap();
    lab.wait_agent_ready("b1", Duration::from_secs(20)).unwrap();
    wait_until("a new handshake with b1", Duration::from_secs(20), || {
        lab.ping(&lab.pod_ns("a1", 0), to);
        must(&lab, "a1", &age) < old_age
    });
    assert!(must(&lab, "a1", "sdn_tunnel_handshakes_total") > hs0);

    // Readiness waits for a remote that never syncs, but only until the timeout; liveness
    // does not care about remotes at all.
    let kubeconfig = lab.dir().join("ghost.kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: g, cluster: {server: \
         'https://127.0.0.1:1', insecure-skip-tls-verify: true}}]\nusers: [{name: g, user: \
         {token: x}}]\ncontexts: [{name: g, context: {cluster: g, user: g}}]\n\
         current-context: g\n",
    )
    .unwrap();
    let cfg = lab
        .agent_config("a2")
        .add_remote(sdn_lab::agent_config::kube_remote(
            "ghost",
            "10.250.0.0/16",
            "172.250.0.0/16",
            &kubeconfig.to_string_lossy(),
        ))
        .set("http", serde_json::json!({"readyTimeoutSeconds": 10}));
    lab.write_agent_config("a2", &cfg).unwrap();
    lab.restart_agent("a2").unwrap();
    lab.wait_agent_ready("a2", Duration::from_secs(20)).unwrap();
    let started = Instant::now();
    wait_until("a2 serving", Duration::from_secs(10), || {
        lab.agent_http("a2", "/healthz").is_ok()
    });
    let (code, body) = get(&lab, "a2", "/readyz");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "too slow to check"
    );
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("remote ghost: first sync pending"), "{body}");
    assert_eq!(get(&lab, "a2", "/healthz").0, 200);
    assert_eq!(
        must(&lab, "a2", r#"sdn_tunnel_remote_synced{remote="ghost"}"#),
        0.0
    );
    assert_eq!(must(&lab, "a2", "sdn_tunnel_ready"), 0.0);
    wait_until(
        "a2 ready after the first-sync timeout",
        Duration::from_secs(20),
        || get(&lab, "a2", "/readyz").0 == 200,
    );
    let (_, body) = get(&lab, "a2", "/readyz");
    assert!(body.contains("ready anyway"), "{body}");
    lab.down();
}
